/**
 * Ceph test fixtures: the lab a test file uses (the run's shared lab in
 * $PUMICE_CEPH_LAB, else a private one it brings up and purges) and the
 * scenario's configuration sections pointed at it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { labPurge, labUp, readLab, type CephLab } from '../../src/ceph/lab.ts';

export interface TestLab {
  lab: CephLab;
  /** Purges a private lab; leaves the shared one alone. */
  release(): Promise<void>;
}

export async function labForTest(prefix: string): Promise<TestLab> {
  const shared = process.env['PUMICE_CEPH_LAB'];
  if (shared) return { lab: readLab(shared), release: async () => undefined };
  const dir = path.join(await mkdtemp(path.join(tmpdir(), `${prefix}-`)), 'lab');
  const lab = await labUp(dir);
  return {
    lab,
    async release() {
      await labPurge(dir);
      await rm(path.dirname(dir), { recursive: true, force: true });
    },
  };
}

/** The scenario's RBD backend section (§4): pool volumes as client.cinder. */
export function rbdBackendSection(lab: CephLab, options: { section?: string; secretUuid?: string | null } = {}): string {
  return `[${options.section ?? 'ceph'}]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = ${options.section ?? 'ceph'}
rbd_pool = volumes
rbd_user = cinder
rbd_ceph_conf = ${lab.confPath}
${options.secretUuid ? `rbd_secret_uuid = ${options.secretUuid}\n` : ''}rados_connect_timeout = 5
`;
}

/**
 * The scenario's image store (§5): pool images as client.glance, 8 MiB objects; `stores` and
 * `defaultStore` enable the file store beside it (multi-store tests).
 */
export function rbdImageStoreSection(lab: CephLab, options: { stores?: string[]; defaultStore?: string } = {}): string {
  return `[glance_store]
stores = ${(options.stores ?? ['rbd']).join(',')}
default_store = ${options.defaultStore ?? 'rbd'}
rbd_store_pool = images
rbd_store_user = glance
rbd_store_ceph_conf = ${lab.confPath}
rbd_store_chunk_size = 8
`;
}

/** The scenario's compute options (§6): root disks cloned into pool vms as client.cinder, TCG guests. */
export function computeRbdSection(lab: CephLab, options: { secretUuid: string; keyring?: string }): string {
  return `[libvirt]
virt_type = qemu
images_type = rbd
images_rbd_pool = vms
images_rbd_ceph_conf = ${lab.confPath}
rbd_user = cinder
rbd_secret_uuid = ${options.secretUuid}
disk_cachemodes = network=writeback
hw_disk_discard = unmap
${options.keyring ? `rbd_keyring = ${options.keyring}\n` : ''}`;
}
