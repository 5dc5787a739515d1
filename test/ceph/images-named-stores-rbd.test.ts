/**
 * Named image stores (issue 18) on a real Ceph cluster: two rbd stores on
 * different pools (fast: pool images as client.glance; slow: pool vms as
 * client.cinder) and one file store (local), as
 * `enabled_backends = fast:rbd, slow:rbd, local:file` with one section each.
 * copy-image between the two rbd stores (rbd export of both pools checked),
 * and volumes from images on the RBD volume backend: still copy-on-write
 * clones, of the pool of the store that holds the image (what decides is the
 * store's type and pool, never its name), also for an image uploaded to the
 * file store and copied to an rbd store.
 * Uses the lab in $PUMICE_CEPH_LAB when set, else brings one up and purges it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { CephLab } from '../../src/ceph/lab.ts';
import { labForTest, type TestLab } from '../helpers/ceph-config.ts';
import { ApiClient, cliEnv, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;

let testLab: TestLab;
let lab: CephLab;
let work = '';
let pumice: PumiceProcess;
let admin: ApiClient;
const volumeIds: string[] = [];
const imageIds: string[] = [];

async function rbd(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('rbd', ['--conf', lab.confPath, '--id', 'admin', ...args], { timeout: 60_000, maxBuffer: 64 << 20 });
  return stdout;
}

async function rbdExists(pool: string, name: string): Promise<boolean> {
  return (JSON.parse(await rbd(['ls', '--format', 'json', pool])) as string[]).includes(name);
}

/** md5 of the RBD image's bytes (`rbd export` to a file). */
async function rbdMd5(pool: string, imageId: string): Promise<string> {
  const out = path.join(work, `${pool}-${imageId}.export`);
  try {
    await rbd(['export', '--no-progress', `${pool}/${imageId}`, out]);
    return createHash('md5').update(await readFile(out)).digest('hex');
  } finally {
    await rm(out, { force: true });
  }
}

/** 3 MiB that differ at every position (no all-zero blocks for the stores to skip). */
function imageData(seed: number): Buffer {
  const data = Buffer.alloc(3 * MiB);
  for (let i = 0; i < data.length; i++) data[i] = (seed * 131 + i * 7 + (i >> 12)) & 0xff || 0x5a;
  return data;
}

async function createImage(name: string): Promise<string> {
  const res = await admin.request('POST', '/image/v2/images', { name, disk_format: 'raw', container_format: 'bare' });
  assert.equal(res.status, 201, res.text);
  imageIds.push(res.body.id as string);
  return res.body.id as string;
}

async function upload(imageId: string, data: Buffer, store?: string): Promise<void> {
  const res = await fetch(`${pumice.url}/image/v2/images/${imageId}/file`, {
    method: 'PUT',
    headers: { 'X-Auth-Token': admin.token, 'Content-Type': 'application/octet-stream', ...(store ? { 'X-Image-Meta-Store': store } : {}) },
    body: new Uint8Array(data),
  });
  assert.equal(res.status, 204, await res.text());
}

/** openstacksdk: conn.image.import_image(image, method='copy-image', stores=[...]), then waits for the copy to end. */
async function sdkCopy(imageId: string, stores: string[]): Promise<any> {
  const script = `
import sys, openstack
conn = openstack.connect()
conn.image.import_image(conn.image.get_image(sys.argv[1]), method='copy-image', stores=sys.argv[2].split(','))
`;
  await execFileAsync('/usr/bin/python3', ['-c', script, imageId, stores.join(',')], { env: cliEnv(pumice.adminEnv), timeout: 60_000 });
  const deadline = Date.now() + 90_000;
  for (;;) {
    const image = (await admin.request('GET', `/image/v2/images/${imageId}`)).body;
    if (image.os_glance_import_task === undefined || Date.now() > deadline) return image;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A 1 GiB volume from the image on the RBD backend; returns `rbd info` of its RBD image. */
async function volumeFromImage(imageId: string): Promise<{ parent?: { pool: string; image: string; snapshot: string } }> {
  const created = await admin.request('POST', `/volume/v3/${admin.projectId}/volumes`, { volume: { size: 1, imageRef: imageId, volume_type: 'ceph', name: `from-${imageId.slice(0, 8)}` } });
  assert.equal(created.status, 202, created.text);
  const volumeId = created.body.volume.id as string;
  volumeIds.push(volumeId);
  const deadline = Date.now() + 120_000;
  for (;;) {
    const volume = (await admin.request('GET', `/volume/v3/${admin.projectId}/volumes/${volumeId}`)).body.volume;
    if (volume.status === 'available') break;
    assert.notEqual(volume.status, 'error', `volume from image ${imageId} failed`);
    assert.ok(Date.now() < deadline, `volume ${volumeId} stayed ${volume.status}`);
    await new Promise((r) => setTimeout(r, 300));
  }
  assert.match(pumice.output(), new RegExp(`volume ${volumeId}: copy-on-write clone of image ${imageId}`));
  return JSON.parse(await rbd(['info', '--format', 'json', `volumes/volume-${volumeId}`]));
}

before(async () => {
  testLab = await labForTest('pumice-named-stores');
  lab = testLab.lab;
  work = await mkdtemp(path.join(tmpdir(), 'pumice-named-stores-rbd-'));
  pumice = await startPumice({
    config: `[DEFAULT]
enabled_backends = ceph, fast:rbd, slow:rbd, local:file
show_image_direct_url = true
show_multiple_locations = true

[ceph]
volume_driver = rbd
volume_backend_name = ceph
rbd_pool = volumes
rbd_user = cinder
rbd_ceph_conf = ${lab.confPath}
rados_connect_timeout = 5

[fast]
rbd_store_pool = images
rbd_store_user = glance
rbd_store_ceph_conf = ${lab.confPath}
store_description = Ceph, pool images

[slow]
rbd_store_pool = vms
rbd_store_user = cinder
rbd_store_ceph_conf = ${lab.confPath}
rbd_store_chunk_size = 4

[local]
filesystem_store_datadir = ${path.join(work, 'local-images')}

[glance_store]
default_backend = fast
`,
  });
  admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  const type = await admin.request('POST', `/volume/v3/${admin.projectId}/types`, { volume_type: { name: 'ceph', extra_specs: { volume_backend_name: 'ceph' } } });
  assert.equal(type.status, 200, type.text);
}, { timeout: 180_000 });

after(async () => {
  if (pumice) {
    // Volumes first (clones), then images, so the lab is left as found.
    for (const id of volumeIds) await admin.request('DELETE', `/volume/v3/${admin.projectId}/volumes/${id}`).catch(() => undefined);
    const deadline = Date.now() + 90_000;
    for (const id of imageIds) {
      for (;;) {
        const res = await admin.request('DELETE', `/image/v2/images/${id}`).catch(() => ({ status: 0 }));
        if (res.status === 204 || res.status === 404 || Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    await pumice.stop();
    pumice.cleanup();
  }
  if (work) await rm(work, { recursive: true, force: true });
  await testLab?.release();
}, { timeout: 180_000 });

describe('named image stores: two rbd pools and a file store', { timeout: 600_000 }, () => {
  const data = imageData(5);
  const md5 = createHash('md5').update(data).digest('hex');
  let imageId = '';

  test('/v2/info/stores/detail: the named stores with their types and pools; an upload goes to the default store', async () => {
    const detail = (await admin.request('GET', '/image/v2/info/stores/detail')).body.stores;
    assert.deepEqual(detail.map((s: any) => [s.id, s.type, s.properties.pool ?? null, s.default ?? false]), [
      ['fast', 'rbd', 'images', true], ['slow', 'rbd', 'vms', false], ['local', 'file', null, false],
    ]);
    assert.equal(detail[1].properties.chunk_size, 4 * MiB);
    imageId = await createImage('named-fast');
    await upload(imageId, data);
    const shown = (await admin.request('GET', `/image/v2/images/${imageId}`)).body;
    assert.equal(shown.stores, 'fast');
    assert.deepEqual(shown.locations, [{ url: `rbd://${lab.fsid}/images/${imageId}/snap`, metadata: { store: 'fast' } }]);
    assert.equal(await rbdMd5('images', imageId), md5);
    assert.equal(await rbdExists('vms', imageId), false);
  });

  test('copy-image from one rbd store to the other (pool images -> pool vms): identical bytes, a protected snapshot, both locations', async () => {
    const shown = await sdkCopy(imageId, ['slow']);
    assert.equal(shown.status, 'active');
    assert.equal(shown.stores, 'fast,slow');
    assert.equal(shown.os_glance_failed_import, '');
    assert.equal(await rbdMd5('vms', imageId), md5, 'bytes in pool vms');
    const snaps = JSON.parse(await rbd(['snap', 'ls', '--format', 'json', `vms/${imageId}`])) as { name: string; protected: string | boolean }[];
    assert.deepEqual(snaps.map((s) => [s.name, String(s.protected)]), [['snap', 'true']]);
    const info = JSON.parse(await rbd(['info', '--format', 'json', `vms/${imageId}`])) as { order: number };
    assert.equal(info.order, 22, "slow's rbd_store_chunk_size = 4 (MiB objects)");
    assert.deepEqual(shown.locations.map((l: any) => l.metadata.store), ['fast', 'slow']);
  });

  test('a volume from an image held only by the slow store is a copy-on-write clone of vms/<image>@snap', async () => {
    const removed = await admin.request('DELETE', `/image/v2/stores/fast/${imageId}`);
    assert.equal(removed.status, 204, removed.text);
    assert.equal(await rbdExists('images', imageId), false);
    const shown = (await admin.request('GET', `/image/v2/images/${imageId}`)).body;
    assert.equal(shown.stores, 'slow');
    assert.equal(shown.direct_url, `rbd://${lab.fsid}/vms/${imageId}/snap`);
    const info = await volumeFromImage(imageId);
    assert.deepEqual(info.parent && { pool: info.parent.pool, image: info.parent.image, snapshot: info.parent.snapshot }, { pool: 'vms', image: imageId, snapshot: 'snap' });
  });

  test('an image uploaded to the file store and copied to an rbd store: volumes clone it from the rbd copy', async () => {
    const fileImage = await createImage('named-local');
    await upload(fileImage, imageData(6), 'local');
    const copied = await sdkCopy(fileImage, ['fast']);
    assert.equal(copied.stores, 'local,fast');
    assert.equal(copied.direct_url, `rbd://${lab.fsid}/images/${fileImage}/snap`, 'the file store has no URL: direct_url is the rbd copy');
    const info = await volumeFromImage(fileImage);
    assert.equal(info.parent?.pool, 'images');
    assert.equal(info.parent?.image, fileImage);
  });
});
