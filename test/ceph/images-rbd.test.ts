/**
 * The `rbd` image store on a real Ceph cluster, driven with the Debian
 * `openstack` CLI and checked with the `rbd` CLI as client.admin: upload of
 * a sparse raw image into pool `images` (8 MiB objects, thin, protected
 * snapshot `snap`), direct_url, download byte for byte, 409 while a clone
 * exists, delete; non-raw uploads and glance-direct imports converted to
 * raw (asynchronously: a long conversion answers 202 at once); conversion
 * switched off refuses them; the start-up orphan sweep.
 * Also: an unusable ceph.conf answers 503 naming the fix.
 * Uses the lab in $PUMICE_CEPH_LAB when set, else brings one up and purges it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { labPurge, labUp, readLab, type CephLab } from '../../src/ceph/lab.ts';
import { ApiClient, memberProject, openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const shared = process.env['PUMICE_CEPH_LAB'];
const MiB = 1024 * 1024;
const imageBytes = 64 * MiB;
/** Known bytes at several offsets; everything else is a hole. */
const marks: [number, number][] = [[0, 1], [8 * MiB + 123, 2], [33 * MiB, 3], [imageBytes - 4096, 4]];

let lab: CephLab;
let privateDir = '';
let work = '';
let pumice: PumiceProcess;
let env: Record<string, string>;
let config = '';

async function rbd(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('rbd', ['--conf', lab.confPath, '--id', 'admin', ...args], { timeout: 60_000 });
  return stdout;
}

async function poolImages(pool: string): Promise<string[]> {
  return JSON.parse(await rbd(['ls', '--format', 'json', pool])) as string[];
}

/** Files left in the image scratch directory (spooled uploads, conversions, staged data). */
async function scratchFiles(dataDir: string): Promise<string[]> {
  return readdir(path.join(dataDir, 'image-staging')).catch(() => []);
}

/** Polls an image until it leaves `importing`; returns its last view. */
async function importEnded(api: ApiClient, imageId: string, timeoutMs = 120_000): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const image = (await api.request('GET', `/image/v2/images/${imageId}`)).body;
    if (image.status !== 'importing' || Date.now() > deadline) return image;
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function fileMd5(file: string): Promise<string> {
  const hash = createHash('md5');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * A non-raw upload stored converted: raw, bare, original_disk_format, sizes of
 * the raw data, checksum of the raw bytes (qemu-img convert here gives the
 * same bytes), an RBD image of that size with snap, and the download equals
 * the source by qemu-img compare.
 */
async function checkConverted(api: ApiClient, imageId: string, shown: Record<string, any>, sourcePath: string, sourceFormat: string, virtualBytes: number): Promise<void> {
  assert.equal(shown['status'], 'active');
  assert.equal(shown['disk_format'], 'raw');
  assert.equal(shown['container_format'], 'bare');
  assert.equal(shown['original_disk_format'], sourceFormat);
  assert.equal(shown['size'], virtualBytes);
  assert.equal(shown['virtual_size'], virtualBytes);
  const expectedRaw = path.join(work, `${imageId}.expected.raw`);
  const saved = path.join(work, `${imageId}.saved.raw`);
  try {
    await execFileAsync('qemu-img', ['convert', '-f', sourceFormat === 'vhd' ? 'vpc' : sourceFormat, '-O', 'raw', sourcePath, expectedRaw]);
    assert.equal(shown['checksum'], await fileMd5(expectedRaw), 'the checksum is that of the stored raw bytes');
    const info = JSON.parse(await rbd(['info', '--format', 'json', `images/${imageId}`])) as { size: number };
    assert.equal(info.size, virtualBytes);
    const res = await fetch(`${pumice.url}/image/v2/images/${imageId}/file`, { headers: { 'X-Auth-Token': api.token } });
    assert.equal(res.status, 200);
    const handle = await open(saved, 'w');
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) await handle.write(chunk);
    await handle.close();
    await execFileAsync('qemu-img', ['compare', '-f', 'raw', '-F', sourceFormat === 'vhd' ? 'vpc' : sourceFormat, saved, sourcePath]);
  } finally {
    await rm(expectedRaw, { force: true });
    await rm(saved, { force: true });
  }
}

function pattern(seed: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  for (let i = 0; i < length; i++) buffer[i] = (seed * 31 + i * 7 + 1) & 0xff || 0x5a;
  return buffer;
}

before(async () => {
  if (shared) {
    lab = readLab(shared);
  } else {
    privateDir = path.join(await mkdtemp(path.join(tmpdir(), 'pumice-images-rbd-test-')), 'lab');
    lab = await labUp(privateDir);
  }
  work = await mkdtemp(path.join(tmpdir(), 'pumice-images-rbd-'));
  config = `[DEFAULT]
show_image_direct_url = true
show_multiple_locations = true

[glance_store]
stores = file,rbd
default_store = rbd
rbd_store_pool = images
rbd_store_user = glance
rbd_store_ceph_conf = ${lab.confPath}
rbd_store_chunk_size = 8
`;
  pumice = await startPumice({ config });
  env = pumice.adminEnv;
}, { timeout: 180_000 });

after(async () => {
  if (pumice) {
    await pumice.stop();
    pumice.cleanup();
  }
  if (work) await rm(work, { recursive: true, force: true });
  if (privateDir) {
    await labPurge(privateDir);
    await rm(path.dirname(privateDir), { recursive: true, force: true });
  }
}, { timeout: 60_000 });

describe('images on the rbd store with the openstack CLI', { timeout: 300_000 }, () => {
  let id = '';
  let diskPath = '';

  test('image create --file of a 64 MiB sparse raw image: active, direct_url rbd://fsid/images/id/snap, checksums', async () => {
    diskPath = path.join(work, 'disk.raw');
    const handle = await open(diskPath, 'w');
    for (const [offset, seed] of marks) await handle.write(pattern(seed, 4096), 0, 4096, offset);
    await handle.truncate(imageBytes);
    await handle.close();
    const data = await readFile(diskPath);
    const created = await openstackJson(env, ['image', 'create', '--file', diskPath, '--disk-format', 'raw', '--container-format', 'bare', '--public', 'rbd-raw']);
    id = created['id'] as string;
    const shown = await openstackJson(env, ['image', 'show', id]);
    assert.equal(shown['status'], 'active');
    assert.equal(shown['size'], imageBytes);
    assert.equal(shown['checksum'], createHash('md5').update(data).digest('hex'));
    const properties = (shown['properties'] ?? {}) as Record<string, unknown>;
    assert.equal(shown['os_hash_value'] ?? properties['os_hash_value'], createHash('sha512').update(data).digest('hex'));
    assert.equal(shown['direct_url'] ?? properties['direct_url'], `rbd://${lab.fsid}/images/${id}/snap`);
  });

  test('rbd: 8 MiB objects (order 23), thin, protected snapshot snap', async () => {
    const info = JSON.parse(await rbd(['info', '--format', 'json', `images/${id}`])) as { size: number; order: number };
    assert.equal(info.size, imageBytes);
    assert.equal(info.order, 23);
    const snaps = JSON.parse(await rbd(['snap', 'ls', '--format', 'json', `images/${id}`])) as { name: string; protected: string | boolean }[];
    assert.deepEqual(snaps.map((s) => [s.name, String(s.protected)]), [['snap', 'true']]);
    const du = JSON.parse(await rbd(['du', '--format', 'json', `images/${id}`])) as { images: { name: string; snapshot?: string; used_size: number }[] };
    const head = du.images.find((i) => i.name === id && !i.snapshot) ?? du.images.find((i) => i.name === id)!;
    const snapUsage = du.images.filter((i) => i.name === id).reduce((n, i) => n + i.used_size, 0);
    assert.ok(snapUsage <= 4 * 8 * MiB, `only the 4 objects with data are allocated (${snapUsage} bytes used, head ${head.used_size})`);
  });

  test('image save equals the upload byte for byte; a range request reads the right bytes', async () => {
    const savedPath = path.join(work, 'saved.raw');
    await openstack(env, ['image', 'save', '--file', savedPath, id]);
    assert.ok((await readFile(savedPath)).equals(await readFile(diskPath)), 'download equals upload');
    const api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const [offset, seed] = marks[1]!;
    const res = await fetch(`${pumice.url}/image/v2/images/${id}/file`, { headers: { 'X-Auth-Token': api.token, Range: `bytes=${offset}-${offset + 4095}` } });
    assert.equal(res.status, 206);
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(pattern(seed, 4096)));
  });

  test('direct_url and locations are shown to admin (and owner), not to another project', async () => {
    const api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const url = `rbd://${lab.fsid}/images/${id}/snap`;
    const asAdmin = (await api.request('GET', `/image/v2/images/${id}`)).body;
    assert.equal(asAdmin.direct_url, url);
    assert.deepEqual(asAdmin.locations, [{ url, metadata: {} }]);
    await memberProject(env, 'other', 'other-user');
    const other = await ApiClient.login(pumice.url, 'other-user', 'pw-other-user', 'other');
    const asOther = (await other.request('GET', `/image/v2/images/${id}`)).body;
    assert.equal(asOther.status, 'active', 'the public image is visible');
    assert.equal(asOther.direct_url, undefined);
    assert.equal(asOther.locations, undefined);
  });

  test('stores discovery lists rbd (default) and file', async () => {
    const api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const stores = (await api.request('GET', '/image/v2/info/stores')).body.stores as { id: string; default?: boolean }[];
    assert.deepEqual(stores.map((s) => [s.id, s.default ?? false]), [['rbd', true], ['file', false]]);
  });

  test('chunked upload (no Content-Length): qcow2 declared raw is a 400 leaving no RBD image; qcow2 is converted to raw', async () => {
    const qcow2Path = path.join(work, 'disk.qcow2');
    await execFileAsync('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2Path, '256M']);
    await execFileAsync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x61 10M 3M', '-c', 'write -P 0x62 200M 64k', qcow2Path]);
    const bytes = await readFile(qcow2Path);
    const api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const upload = async (diskFormat: string) => {
      const created = await api.request('POST', '/image/v2/images', { name: `chunked-${diskFormat}`, disk_format: diskFormat, container_format: 'bare', hw_disk_bus: 'scsi' });
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          for (let offset = 0; offset < bytes.length; offset += 256 * 1024) controller.enqueue(bytes.subarray(offset, offset + 256 * 1024));
          controller.close();
        },
      });
      const res = await fetch(`${pumice.url}/image/v2/images/${created.body.id}/file`, {
        method: 'PUT', headers: { 'X-Auth-Token': api.token, 'Content-Type': 'application/octet-stream' }, body, duplex: 'half',
      } as RequestInit);
      return { id: created.body.id as string, status: res.status, text: await res.text() };
    };
    const wrong = await upload('raw');
    assert.equal(wrong.status, 400, wrong.text);
    assert.match(wrong.text, /qcow2/);
    assert.ok(!(await poolImages('images')).includes(wrong.id), 'the refused upload left no RBD image');
    assert.equal((await api.request('GET', `/image/v2/images/${wrong.id}`)).body.status, 'queued');
    const right = await upload('qcow2');
    assert.equal(right.status, 204, right.text);
    const shown = (await api.request('GET', `/image/v2/images/${right.id}`)).body;
    await checkConverted(api, right.id, shown, qcow2Path, 'qcow2', 256 * MiB);
    assert.equal(shown.hw_disk_bus, 'scsi', 'other properties are kept');
    assert.equal((await api.request('DELETE', `/image/v2/images/${right.id}`)).status, 204);
    assert.equal((await api.request('DELETE', `/image/v2/images/${wrong.id}`)).status, 204);
    assert.ok(!(await poolImages('images')).includes(right.id));
    assert.deepEqual(await scratchFiles(pumice.dataDir), [], 'no spooled or converted temp file is left');
  });

  test('openstack image create --file of a qcow2: converted to raw, qemu-img compare of the download with the source passes', async () => {
    const qcow2Path = path.join(work, 'cli.qcow2');
    await execFileAsync('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2Path, '128M']);
    await execFileAsync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 1M 1M', '-c', 'write -P 0x44 127M 4k', qcow2Path]);
    const created = await openstackJson(env, ['image', 'create', '--file', qcow2Path, '--disk-format', 'qcow2', '--container-format', 'bare', 'rbd-cli-qcow2']);
    const id = created['id'] as string;
    const shown = await openstackJson(env, ['image', 'show', id]);
    assert.equal(shown['status'], 'active');
    assert.equal(shown['disk_format'], 'raw');
    const saved = path.join(work, 'cli-saved.raw');
    await openstack(env, ['image', 'save', '--file', saved, id]);
    await execFileAsync('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', saved, qcow2Path]);
    await openstack(env, ['image', 'delete', id]);
  });

  test('glance-direct on the rbd store: stage + import of a qcow2 (converted) and of a raw image', async () => {
    const qcow2Path = path.join(work, 'staged.qcow2');
    await execFileAsync('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2Path, '64M']);
    await execFileAsync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x71 5M 1M', qcow2Path]);
    await openstack(env, ['image', 'create', '--import', '--file', qcow2Path, '--disk-format', 'qcow2', '--container-format', 'bare', 'rbd-imported-qcow2']);
    const api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const shown = await openstackJson(env, ['image', 'show', 'rbd-imported-qcow2']);
    // The import is asynchronous (Glance): the client polls until the image leaves 'importing'.
    const full = await importEnded(api, shown['id'] as string);
    await checkConverted(api, full.id, full, qcow2Path, 'qcow2', 64 * MiB);
    await openstack(env, ['image', 'create', '--import', '--file', diskPath, '--disk-format', 'raw', '--container-format', 'bare', 'rbd-imported-raw']);
    const raw = await openstackJson(env, ['image', 'show', 'rbd-imported-raw']);
    assert.equal((await importEnded(api, raw['id'] as string)).status, 'active');
    assert.equal(raw['checksum'], createHash('md5').update(await readFile(diskPath)).digest('hex'));
    const snaps = JSON.parse(await rbd(['snap', 'ls', '--format', 'json', `images/${raw['id']}`])) as { name: string }[];
    assert.deepEqual(snaps.map((x) => x.name), ['snap']);
    const saved = path.join(work, 'imported-saved.raw');
    await openstack(env, ['image', 'save', '--file', saved, raw['id'] as string]);
    assert.ok((await readFile(saved)).equals(await readFile(diskPath)));
    await openstack(env, ['image', 'delete', 'rbd-imported-qcow2', 'rbd-imported-raw']);
    assert.deepEqual(await scratchFiles(pumice.dataDir), [], 'staged data is removed after the import');
  });

  test('a glance-direct import with a long conversion answers 202 at once; clients poll importing -> active', async () => {
    // 512 MiB of non-zero data: converting it and writing it into the pool takes seconds, not milliseconds.
    const qcow2Path = path.join(work, 'long.qcow2');
    await execFileAsync('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2Path, '512M']);
    await execFileAsync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 512M', qcow2Path], { timeout: 120_000 });
    const api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const created = await api.request('POST', '/image/v2/images', { name: 'long-import', disk_format: 'qcow2', container_format: 'bare' });
    assert.equal(created.status, 201, created.text);
    const imageId = created.body.id as string;
    await execFileAsync('curl', ['-sS', '--fail-with-body', '-T', qcow2Path, '-H', `X-Auth-Token: ${api.token}`, '-H', 'Content-Type: application/octet-stream', `${pumice.url}/image/v2/images/${imageId}/stage`], { timeout: 300_000 });
    assert.equal((await api.request('GET', `/image/v2/images/${imageId}`)).body.status, 'uploading');
    const started = performance.now();
    const imported = await api.request('POST', `/image/v2/images/${imageId}/import`, { method: { name: 'glance-direct' } });
    const answeredMs = performance.now() - started;
    assert.equal(imported.status, 202, imported.text);
    // The answer came before the work: the image is still being imported, with Glance's bookkeeping.
    const during = (await api.request('GET', `/image/v2/images/${imageId}`)).body;
    assert.equal(during.status, 'importing', JSON.stringify(during));
    assert.equal(during.os_glance_importing_to_stores, 'rbd');
    assert.match(during.os_glance_import_task, /^[0-9a-f-]{36}$/);
    const done = await importEnded(api, imageId, 300_000);
    const doneMs = performance.now() - started;
    assert.equal(done.status, 'active', JSON.stringify(done));
    assert.ok(answeredMs < doneMs, `202 after ${answeredMs.toFixed(0)} ms, active after ${doneMs.toFixed(0)} ms`);
    console.log(`long import: 202 after ${answeredMs.toFixed(0)} ms, active after ${(doneMs / 1000).toFixed(1)} s`);
    assert.equal(done.disk_format, 'raw');
    assert.equal(done.size, 512 * MiB);
    assert.equal(done.os_glance_importing_to_stores, '');
    assert.equal(done.os_glance_failed_import, '');
    assert.equal((await api.request('DELETE', `/image/v2/images/${imageId}`)).status, 204);
    await rm(qcow2Path, { force: true });
    assert.deepEqual(await scratchFiles(pumice.dataDir), [], 'staged data and conversion files are removed after the import');
  });

  test('restart: temp files of conversions are swept; orphan RBD images (no record, or a record left queued) are removed; images with records and others\' published images stay', async () => {
    const api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const orphan = randomUUID();
    const queued = (await api.request('POST', '/image/v2/images', { name: 'sweep-queued', disk_format: 'raw', container_format: 'bare' })).body.id as string;
    const foreign = randomUUID();
    const notAnId = `images-rbd-test-${randomUUID().slice(0, 8)}`;
    await rbd(['create', '--size', '16M', `images/${orphan}`]);
    await rbd(['create', '--size', '16M', `images/${queued}`]);
    await rbd(['create', '--size', '16M', `images/${foreign}`]);
    await rbd(['snap', 'create', `images/${foreign}@snap`]);
    await rbd(['create', '--size', '16M', `images/${notAnId}`]);
    try {
      await pumice.stop();
      // What a crash mid-conversion leaves: the spooled upload and the half-converted raw file.
      await writeFile(path.join(pumice.dataDir, 'image-staging', `${queued}.0a1b2c3d4e5f.tmp`), 'spooled');
      await writeFile(path.join(pumice.dataDir, 'image-staging', `${queued}.3d4e5f6a7b8c.raw.tmp`), 'converted');
      pumice = await startPumice({ config, dataDir: pumice.dataDir });
      assert.deepEqual(await scratchFiles(pumice.dataDir), [], 'spooled and converted temp files are swept at start');
      env = pumice.adminEnv;
      // The pool sweep runs in the background after the start (a slow cluster must not hold it up).
      const deadline = Date.now() + 60_000;
      while (!/sweep of rbd pool 'images' done/.test(pumice.output()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      const left = await poolImages('images');
      assert.ok(!left.includes(orphan), `the image with no record is removed:\n${pumice.output()}`);
      assert.ok(!left.includes(queued), 'the image whose record is queued is removed');
      assert.ok(left.includes(id), 'the active image is untouched');
      assert.ok(left.includes(foreign), 'a published image (with snapshots) of no record here is left alone');
      assert.ok(left.includes(notAnId), 'an image not named like an image id is left alone');
      assert.match(pumice.output(), new RegExp(`removed orphan rbd image images/${orphan}`));
      assert.match(pumice.output(), new RegExp(`rbd image images/${foreign} left in place`));
      assert.equal((await openstackJson(env, ['image', 'show', id]))['status'], 'active');
    } finally {
      await rbd(['snap', 'rm', `images/${foreign}@snap`]).catch(() => undefined);
      for (const name of [orphan, queued, foreign, notAnId]) await rbd(['rm', `images/${name}`]).catch(() => undefined);
    }
  });

  test('delete while a clone of snap exists: 409 image in use; after the clone is gone the RBD image is removed', async () => {
    await rbd(['clone', `images/${id}@snap`, `volumes/images-rbd-test-clone`]);
    try {
      await assert.rejects(openstack(env, ['image', 'delete', id]), /in use|409|Conflict/i);
      assert.equal((await openstackJson(env, ['image', 'show', id]))['status'], 'active');
    } finally {
      await rbd(['rm', 'volumes/images-rbd-test-clone']);
    }
    await openstack(env, ['image', 'delete', id]);
    assert.ok(!(await poolImages('images')).includes(id), 'the RBD image is gone');
  });
});

describe('rbd store without a usable Ceph configuration', { timeout: 120_000 }, () => {
  test('upload answers 503 naming the missing ceph.conf and the fix; the image stays queued', async () => {
    const broken = await startPumice({
      config: `[glance_store]
stores = rbd
default_store = rbd
rbd_store_ceph_conf = /nonexistent/ceph.conf
`,
    });
    try {
      const api = await ApiClient.login(broken.url, 'admin', broken.adminPassword, 'admin');
      const created = await api.request('POST', '/image/v2/images', { name: 'x', disk_format: 'raw', container_format: 'bare' });
      assert.equal(created.status, 201);
      const up = await api.request('PUT', `/image/v2/images/${created.body.id}/file`, 'hello', { 'Content-Type': 'application/octet-stream' });
      assert.equal(up.status, 503, up.text);
      assert.match(up.text, /\/nonexistent\/ceph\.conf/);
      assert.match(up.text, /rbd_store_ceph_conf/);
      assert.equal((await api.request('GET', `/image/v2/images/${created.body.id}`)).body.status, 'queued');
    } finally {
      await broken.stop();
      broken.cleanup();
    }
  });
});

describe('rbd store with image conversion switched off', { timeout: 180_000 }, () => {
  test('a qcow2 upload or stage is a 400 saying why (RBD boot needs raw) and how; nothing reaches the pool; raw still works', async () => {
    const off = await startPumice({
      config: `[glance_store]
stores = rbd
default_store = rbd
rbd_store_ceph_conf = ${lab.confPath}

[image_import_opts]
image_import_plugins =
`,
    });
    try {
      const api = await ApiClient.login(off.url, 'admin', off.adminPassword, 'admin');
      const qcow2Path = path.join(work, 'off.qcow2');
      await execFileAsync('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2Path, '16M']);
      const bytes = await readFile(qcow2Path);
      const created = await api.request('POST', '/image/v2/images', { name: 'off-qcow2', disk_format: 'qcow2', container_format: 'bare' });
      const id = created.body.id as string;
      for (const route of ['file', 'stage']) {
        const res = await fetch(`${off.url}/image/v2/images/${id}/${route}`, { method: 'PUT', headers: { 'X-Auth-Token': api.token, 'Content-Type': 'application/octet-stream' }, body: bytes });
        const text = await res.text();
        assert.equal(res.status, 400, text);
        const fault = JSON.parse(text) as { badRequest?: { message: string } };
        assert.ok(fault.badRequest, text);
        assert.match(fault.badRequest.message, /raw/);
        assert.match(fault.badRequest.message, /boot/);
        assert.match(fault.badRequest.message, /qemu-img convert -f qcow2 -O raw/);
        assert.match(fault.badRequest.message, /image_conversion/);
      }
      assert.equal((await api.request('GET', `/image/v2/images/${id}`)).body.status, 'queued');
      assert.ok(!(await poolImages('images')).includes(id));
      const raw = await api.request('POST', '/image/v2/images', { name: 'off-raw', disk_format: 'raw', container_format: 'bare' });
      const up = await api.request('PUT', `/image/v2/images/${raw.body.id}/file`, 'x'.repeat(4096), { 'Content-Type': 'application/octet-stream' });
      assert.equal(up.status, 204, up.text);
      assert.equal((await api.request('GET', `/image/v2/images/${raw.body.id}`)).body.status, 'active');
      assert.equal((await api.request('DELETE', `/image/v2/images/${raw.body.id}`)).status, 204);
      assert.equal((await api.request('DELETE', `/image/v2/images/${id}`)).status, 204);
    } finally {
      await off.stop();
      off.cleanup();
    }
  });
});
