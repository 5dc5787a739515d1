/**
 * The backup role picks its driver from `[DEFAULT] backup_driver` (Cinder's
 * class paths or Pumice's short names) and reads the Ceph driver's options
 * under Cinder's names; an unknown driver stops the start naming the choices.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/config.ts';
import { CephBackupDriver } from '../../src/backup/drivers/ceph.ts';
import { backupDriverKind, cephServiceName, posixServiceName } from '../../src/backup/drivers/driver.ts';
import { PosixBackupAdapter } from '../../src/backup/drivers/posix-adapter.ts';
import { createBackupDriver } from '../../src/backup/manager.ts';

function withConfig<T>(text: string, fn: (path: string, dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'pumice-backup-select-'));
  try {
    writeFileSync(join(dir, 'pumice.conf'), text);
    return fn(join(dir, 'pumice.conf'), dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("backup_driver accepts Cinder's names and the short ones", () => {
  for (const name of ['ceph', 'cinder.backup.drivers.ceph', 'cinder.backup.drivers.ceph.CephBackupDriver']) assert.equal(backupDriverKind(name), 'ceph', name);
  for (const name of ['posix', 'cinder.backup.drivers.posix', 'cinder.backup.drivers.posix.PosixBackupDriver']) assert.equal(backupDriverKind(name), 'posix', name);
  for (const name of ['swift', 'cinder.backup.drivers.ceph.Other', 'Ceph']) assert.equal(backupDriverKind(name), null, name);
});

test('the Ceph driver is built from the backup_ceph_* options; backups record its class path', () => {
  withConfig('[DEFAULT]\nbackup_driver = cinder.backup.drivers.ceph.CephBackupDriver\nbackup_ceph_conf = /etc/ceph/ceph.conf\nbackup_ceph_chunk_size = 8388608\n', (path, dir) => {
    const config = loadConfig(path, dir);
    assert.equal(config.DEFAULT.backup_ceph_user, 'cinder-backup');
    assert.equal(config.DEFAULT.backup_ceph_pool, 'backups');
    assert.equal(config.DEFAULT.backup_ceph_stripe_unit, 0);
    const driver = createBackupDriver(config, () => undefined);
    assert.ok(driver instanceof CephBackupDriver);
    assert.equal(driver.serviceName, cephServiceName);
    assert.equal(driver.unsupported('file'), null);
    assert.equal(driver.unsupported('rbd'), null);
  });
});

test('the posix driver stays the default and refuses RBD volumes with the fix', () => {
  withConfig('[DEFAULT]\n', (path, dir) => {
    const driver = createBackupDriver(loadConfig(path, dir), () => undefined);
    assert.ok(driver instanceof PosixBackupAdapter);
    assert.equal(driver.serviceName, posixServiceName);
    assert.equal(driver.unsupported('file'), null);
    assert.match(driver.unsupported('rbd') ?? '', /backup_driver = ceph/);
  });
});

test('an unknown backup_driver or a too small chunk size stops the start naming the choices', () => {
  withConfig('[DEFAULT]\nbackup_driver = swift\n', (path, dir) => {
    assert.throws(() => createBackupDriver(loadConfig(path, dir), () => undefined), /backup_driver = swift is unknown; use 'posix' .* or 'ceph'/);
  });
  withConfig('[DEFAULT]\nbackup_driver = ceph\nbackup_ceph_chunk_size = 4096\n', (path, dir) => {
    assert.throws(() => loadConfig(path, dir), /backup_ceph_chunk_size/);
  });
});
