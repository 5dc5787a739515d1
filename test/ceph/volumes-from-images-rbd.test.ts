/**
 * Volumes from images on the real Ceph lab, with Debian's `openstack` CLI:
 * images in the rbd store (pool `images`, user glance), volumes on the RBD
 * backend (pool `volumes`, user cinder, the scenario's caps) and on the local
 * backend. A volume from an image in the same cluster is a copy-on-write
 * clone of images/<id>@snap (`rbd info` shows the parent), also for a member
 * of another project using a public image; its bytes equal the image's
 * (qemu-img compare over librbd). On the local backend the bytes are copied.
 * An RBD volume uploaded to an image comes back byte for byte; uploaded as
 * qcow2, its raw bytes go into the rbd store as they are (the store would
 * convert a qcow2 back to raw) and the image is still cloned.
 * Uses the lab in $PUMICE_CEPH_LAB when set, else brings one up and purges it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { closeSync, ftruncateSync, openSync, statSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { labPurge, labUp, readLab, type CephLab } from '../../src/ceph/lab.ts';
import { memberProject, openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const shared = process.env['PUMICE_CEPH_LAB'];
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
type Row = Record<string, any>;

const marks: [number, string][] = [
  [0, 'RBD-BOOT-SECTOR'],
  [9 * MiB + 5, 'nine-mebibytes-and-five'],
  [700 * MiB, 'SEVEN-HUNDRED'],
  [GiB - 6, 'FINIS!'],
];

let lab: CephLab;
let privateDir = '';
let work = '';
let pumice: PumiceProcess;
let admin: Row;
let member: Row;
let rawPath = '';
let imageId = '';

async function rbd(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('rbd', ['--conf', lab.confPath, '--id', 'admin', ...args], { timeout: 120_000 });
  return stdout;
}

/** qemu-img reading an RBD image through librbd as client.admin. */
function rbdTarget(spec: string): string {
  return `rbd:${spec}:id=admin:conf=${lab.confPath}`;
}

async function compare(a: string, b: string): Promise<void> {
  await execFileAsync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', a, b], { timeout: 300_000 });
}

async function waitStatus(env: Row, kind: 'volume' | 'image', name: string, statuses: string[], timeoutMs = 180_000): Promise<Row> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const row = await openstackJson<Row>(env, [kind, 'show', name]);
    if (statuses.includes(row['status'])) return row;
    if (Date.now() > deadline) throw new Error(`${kind} ${name} stayed ${row['status']}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

before(async () => {
  if (shared) {
    lab = readLab(shared);
  } else {
    privateDir = path.join(await mkdtemp(path.join(tmpdir(), 'pumice-vol-img-rbd-test-')), 'lab');
    lab = await labUp(privateDir);
  }
  work = await mkdtemp(path.join(tmpdir(), 'pumice-vol-img-rbd-'));
  rawPath = path.join(work, 'disk.raw');
  const fd = openSync(rawPath, 'w');
  ftruncateSync(fd, GiB);
  for (const [offset, text] of marks) writeSync(fd, Buffer.from(text), 0, text.length, offset);
  closeSync(fd);
  pumice = await startPumice({
    config: `[DEFAULT]
enabled_backends = ceph,ceph-flat,local
show_image_direct_url = true

[ceph]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = ceph
rbd_pool = volumes
rbd_user = cinder
rbd_ceph_conf = ${lab.confPath}
rbd_max_clone_depth = 5
rados_connect_timeout = 5

[ceph-flat]
volume_driver = rbd
volume_backend_name = ceph-flat
rbd_pool = vms
rbd_user = cinder
rbd_ceph_conf = ${lab.confPath}
rbd_max_clone_depth = 0

[local]
volume_driver = local
volume_backend_name = local

[glance_store]
stores = rbd
default_store = rbd
rbd_store_pool = images
rbd_store_user = glance
rbd_store_ceph_conf = ${lab.confPath}
rbd_store_chunk_size = 8
`,
  });
  admin = pumice.adminEnv;
  member = (await memberProject(admin, 'proj-m', 'user-m')).env;
  for (const [type, backend] of [['ceph', 'ceph'], ['ceph-flat', 'ceph-flat'], ['local', 'local']]) {
    await openstack(admin, ['volume', 'type', 'create', '--public', '--property', `volume_backend_name=${backend}`, type!]);
  }
}, { timeout: 180_000 });

after(async () => {
  if (pumice) {
    // Volumes first (clones), then images, so the lab is left as found.
    for (const v of await openstackJson<Row[]>(admin, ['volume', 'list', '--all-projects']).catch(() => [])) {
      await openstack(admin, ['volume', 'delete', '--force', v['ID']]).catch(() => undefined);
    }
    // The image can go once the clones are purged from the trash (in the background, seconds).
    const deadline = Date.now() + 60_000;
    for (const image of await openstackJson<Row[]>(admin, ['image', 'list']).catch(() => [])) {
      while (await openstack(admin, ['image', 'delete', image['ID']]).then(() => false, () => Date.now() < deadline)) await new Promise((r) => setTimeout(r, 1000));
    }
    await pumice.stop();
    pumice.cleanup();
  }
  if (work) await rm(work, { recursive: true, force: true });
  if (privateDir) {
    await labPurge(privateDir);
    await rm(path.dirname(privateDir), { recursive: true, force: true });
  }
}, { timeout: 120_000 });

describe('volumes from images in the same Ceph cluster', { timeout: 600_000 }, () => {
  test('a public 1 GiB raw image in the rbd store', async () => {
    const created = await openstackJson<Row>(admin, ['image', 'create', '--file', rawPath, '--disk-format', 'raw', '--container-format', 'bare', '--public', '--property', 'hw_disk_bus=scsi', 'rbd-img']);
    imageId = created['id'];
    const shown = await waitStatus(admin, 'image', 'rbd-img', ['active']);
    assert.match(shown['direct_url'] ?? shown['properties']?.['direct_url'] ?? '', new RegExp(`^rbd://${lab.fsid}/images/${imageId}/snap$`));
  });

  test('volume create --image on the RBD backend is a copy-on-write clone of images/<id>@snap, grown to the size asked', async () => {
    await openstack(member, ['volume', 'create', '--image', 'rbd-img', '--size', '2', '--type', 'ceph', '--bootable', 'cow']);
    const volume = await waitStatus(member, 'volume', 'cow', ['available', 'error']);
    assert.equal(volume['status'], 'available', `${JSON.stringify(volume)}\n${pumice.output().slice(-3000)}`);
    assert.equal(String(volume['bootable']), 'true');
    assert.equal(volume['volume_image_metadata']['image_id'], imageId);
    assert.equal(volume['volume_image_metadata']['hw_disk_bus'], 'scsi');
    const info = JSON.parse(await rbd(['info', '--format', 'json', `volumes/volume-${volume['id']}`]));
    assert.equal(info.size, 2 * GiB);
    assert.deepEqual({ pool: info.parent?.pool, image: info.parent?.image, snapshot: info.parent?.snapshot }, { pool: 'images', image: imageId, snapshot: 'snap' });
    // No data was copied: the clone itself holds nothing yet.
    const du = JSON.parse(await rbd(['du', '--format', 'json', `volumes/volume-${volume['id']}`]));
    assert.equal(du.images[0].used_size, 0);
    await compare(rawPath, rbdTarget(`volumes/volume-${volume['id']}`));
  });

  test('the image parent counts towards rbd_max_clone_depth: with 0, the clone is flattened in the background', async () => {
    await openstack(member, ['volume', 'create', '--image', 'rbd-img', '--size', '1', '--type', 'ceph-flat', 'flat']);
    const volume = await waitStatus(member, 'volume', 'flat', ['available', 'error']);
    assert.equal(volume['status'], 'available', JSON.stringify(volume));
    // Made as a clone (not a copy), then flattened.
    assert.match(pumice.output(), new RegExp(`volume ${volume['id']}: copy-on-write clone of image ${imageId}`));
    const image = `vms/volume-${volume['id']}`;
    const deadline = Date.now() + 120_000;
    let info = JSON.parse(await rbd(['info', '--format', 'json', image]));
    while (info.parent && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      info = JSON.parse(await rbd(['info', '--format', 'json', image]));
    }
    assert.equal(info.parent, undefined, `still a clone: ${JSON.stringify(info.parent)}`);
    await compare(rawPath, rbdTarget(image));
    await openstack(member, ['volume', 'delete', 'flat']);
  });

  test('the image cannot be deleted while the clone exists (409)', async () => {
    await assert.rejects(openstack(admin, ['image', 'delete', 'rbd-img']), /409|in use|clone/i);
  });

  test('on the local backend the bytes are copied (sparse)', async () => {
    await openstack(member, ['volume', 'create', '--image', 'rbd-img', '--size', '1', '--type', 'local', 'copied']);
    const volume = await waitStatus(member, 'volume', 'copied', ['available', 'error']);
    assert.equal(volume['status'], 'available', JSON.stringify(volume));
    const file = path.join(pumice.dataDir, 'volumes', 'local', `volume-${volume['id']}`);
    await compare(rawPath, file);
    assert.ok(statSync(file).blocks * 512 < 4 * MiB, 'the copy is not sparse');
  });

  test('an RBD volume uploaded to an image (rbd store) comes back byte for byte', async () => {
    // Give the clone bytes of its own first, through librbd.
    await execFileAsync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5c 1536M 1M', rbdTarget(`volumes/volume-${(await openstackJson(member, ['volume', 'show', 'cow']))['id']}`)], { timeout: 120_000 });
    await openstack(member, ['image', 'create', '--volume', 'cow', '--disk-format', 'raw', '--container-format', 'bare', 'from-cow']);
    const image = await waitStatus(member, 'image', 'from-cow', ['active', 'killed', 'deleted']);
    assert.equal(image['status'], 'active');
    assert.equal(image['size'], 2 * GiB);
    assert.equal((await waitStatus(member, 'volume', 'cow', ['available']))['status'], 'available');
    const volumeId = (await openstackJson(member, ['volume', 'show', 'cow']))['id'];
    await compare(rbdTarget(`images/${image['id']}`), rbdTarget(`volumes/volume-${volumeId}`));
    // Stored thin: the zero runs of the 2 GiB volume were not written into the images pool.
    const du = JSON.parse(await rbd(['du', '--format', 'json', `images/${image['id']}`]));
    assert.ok(du.images.some((i: Row) => i.used_size < 64 * MiB), `upload is not thin: ${JSON.stringify(du)}`);
    await openstack(member, ['image', 'delete', 'from-cow']);
  });

  test('a volume uploaded as qcow2 into the rbd store goes in raw, once (no qcow2 round trip), and a volume from it is a clone with the same bytes', async () => {
    const cowId = (await openstackJson(member, ['volume', 'show', 'cow']))['id'];
    await openstack(member, ['image', 'create', '--volume', 'cow', '--disk-format', 'qcow2', '--container-format', 'bare', 'from-cow-qcow2']);
    const image = await waitStatus(member, 'image', 'from-cow-qcow2', ['active', 'killed', 'deleted']);
    assert.equal(image['status'], 'active', pumice.output().slice(-3000));
    // As the rbd store's conversion (Glance's image_conversion, output_format raw) leaves it.
    assert.equal(image['disk_format'], 'raw');
    assert.equal(image['container_format'], 'bare');
    assert.equal(image['original_disk_format'] ?? image['properties']?.['original_disk_format'], 'qcow2');
    assert.equal(image['size'], 2 * GiB);
    assert.equal(image['virtual_size'], 2 * GiB);
    // The image service converted nothing: the bytes came raw, not as a qcow2 made from them.
    assert.doesNotMatch(pumice.output(), new RegExp(`images: converted ${image['id']} from`));
    assert.match(pumice.output(), new RegExp(`volume ${cowId}: uploaded ${2 * GiB} bytes into image ${image['id']} \\(raw\\)`));
    assert.equal((await waitStatus(member, 'volume', 'cow', ['available']))['status'], 'available');
    await compare(rbdTarget(`images/${image['id']}`), rbdTarget(`volumes/volume-${cowId}`));
    const du = JSON.parse(await rbd(['du', '--format', 'json', `images/${image['id']}`]));
    assert.ok(du.images.some((i: Row) => i.used_size < 64 * MiB), `upload is not thin: ${JSON.stringify(du)}`);
    // Still cloned, as from any raw image of the store.
    await openstack(member, ['volume', 'create', '--image', 'from-cow-qcow2', '--size', '2', '--type', 'ceph', 'from-qcow2-upload']);
    const volume = await waitStatus(member, 'volume', 'from-qcow2-upload', ['available', 'error']);
    assert.equal(volume['status'], 'available', JSON.stringify(volume));
    const info = JSON.parse(await rbd(['info', '--format', 'json', `volumes/volume-${volume['id']}`]));
    assert.deepEqual({ pool: info.parent?.pool, image: info.parent?.image, snapshot: info.parent?.snapshot }, { pool: 'images', image: image['id'], snapshot: 'snap' });
    await compare(rbdTarget(`volumes/volume-${cowId}`), rbdTarget(`volumes/volume-${volume['id']}`));
    await openstack(member, ['volume', 'delete', 'from-qcow2-upload']);
  });
});
