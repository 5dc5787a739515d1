/**
 * What `pumice ceph setup` would create for a configuration: the RBD
 * backends' users (their pools rwx, the image pool rx so volumes can be
 * clones of images), the rbd image store's user and the backup user.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/config.ts';
import { capsFor, setupPlan } from '../../src/ceph/setup.ts';

function plan(ini: string) {
  const dir = mkdtempSync(join(tmpdir(), 'pumice-setup-plan-'));
  try {
    writeFileSync(join(dir, 'pumice.conf'), ini);
    return setupPlan(loadConfig(join(dir, 'pumice.conf'), dir));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('the scenario: cinder on volumes and vms with images readable, glance on images, cinder-backup on backups', () => {
  const users = plan(`[DEFAULT]
enabled_backends = ceph,ceph-vms
backup_driver = cinder.backup.drivers.ceph.CephBackupDriver
backup_ceph_conf = /etc/ceph/ceph.conf
[ceph]
volume_driver = rbd
rbd_pool = volumes
rbd_user = cinder
rbd_ceph_conf = /etc/ceph/ceph.conf
[ceph-vms]
volume_driver = rbd
rbd_pool = vms
rbd_user = cinder
rbd_ceph_conf = /etc/ceph/ceph.conf
[glance_store]
stores = file,rbd
default_store = rbd
`);
  const byUser = Object.fromEntries(users.map((u) => [u.user, { pools: [...u.pools].sort(), readPools: [...u.readPools].sort() }]));
  assert.deepEqual(byUser, {
    cinder: { pools: ['vms', 'volumes'], readPools: ['images'] },
    glance: { pools: ['images'], readPools: [] },
    'cinder-backup': { pools: ['backups'], readPools: [] },
  });
  const cinder = users.find((u) => u.user === 'cinder')!;
  assert.equal(capsFor(cinder.pools, cinder.readPools).osd, 'allow class-read object_prefix rbd_children, allow rwx pool=vms, allow rwx pool=volumes, allow rx pool=images');
});

test('without the rbd image store or the Ceph backup driver, only the backend users', () => {
  const users = plan(`[DEFAULT]
enabled_backends = ceph
[ceph]
volume_driver = rbd
rbd_pool = volumes
rbd_user = cinder
`);
  assert.deepEqual(users.map((u) => [u.user, [...u.pools], [...u.readPools]]), [['cinder', ['volumes'], []]]);
});

test('a configuration without Ceph plans nothing', () => {
  assert.deepEqual(plan('[DEFAULT]\nenabled_backends = local\n[local]\nvolume_driver = local\n'), []);
});
