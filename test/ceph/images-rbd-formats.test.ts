/**
 * vmdk, vdi, vhd (vpc) and vhdx uploads into the rbd store of the lab
 * cluster: each is converted to raw (disk_format raw, original_disk_format
 * kept, size and checksums of the raw bytes), and `qemu-img compare` of the
 * downloaded raw with the uploaded file passes. A wrongly declared format is
 * a 400 that leaves no RBD image. Uses the lab in $PUMICE_CEPH_LAB.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { readLab, type CephLab } from '../../src/ceph/lab.ts';
import { formats, makeFormatImages } from '../helpers/image-formats.ts';
import { ApiClient, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const shared = process.env['PUMICE_CEPH_LAB'];

let lab: CephLab;
let work = '';
let pumice: PumiceProcess;
let api: ApiClient;
let made: Awaited<ReturnType<typeof makeFormatImages>>;

async function poolImages(): Promise<string[]> {
  const { stdout } = await execFileAsync('rbd', ['--conf', lab.confPath, '--id', 'admin', 'ls', '--format', 'json', 'images'], { timeout: 60_000 });
  return JSON.parse(stdout) as string[];
}

async function fileMd5(file: string): Promise<string> {
  const hash = createHash('md5');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function createAndUpload(name: string, diskFormat: string, file: string): Promise<{ id: string; status: number; text: string }> {
  const created = await api.request('POST', '/image/v2/images', { name, disk_format: diskFormat, container_format: 'bare' });
  assert.equal(created.status, 201, created.text);
  const res = await fetch(`${pumice.url}/image/v2/images/${created.body.id}/file`, {
    method: 'PUT', headers: { 'X-Auth-Token': api.token, 'Content-Type': 'application/octet-stream' }, body: await readFile(file),
  });
  return { id: created.body.id as string, status: res.status, text: await res.text() };
}

before(async () => {
  if (!shared) throw new Error('set PUMICE_CEPH_LAB to a running lab (this test does not bring one up)');
  lab = readLab(shared);
  work = await mkdtemp(path.join(tmpdir(), 'pumice-images-rbd-formats-'));
  made = await makeFormatImages(work);
  pumice = await startPumice({
    config: `[glance_store]
stores = rbd
default_store = rbd
rbd_store_pool = images
rbd_store_user = glance
rbd_store_ceph_conf = ${lab.confPath}
`,
  });
  api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
}, { timeout: 120_000 });

after(async () => {
  if (pumice) {
    await pumice.stop();
    pumice.cleanup();
  }
  if (work) await rm(work, { recursive: true, force: true });
});

describe('vmdk, vdi, vhd and vhdx into the rbd store: converted to raw', { timeout: 300_000 }, () => {
  for (const [diskFormat, qemuFormat] of formats) {
    test(`${diskFormat}: stored as raw, original_disk_format ${diskFormat}, qemu-img compare with the source passes`, async () => {
      const file = made.paths[diskFormat]!;
      const up = await createAndUpload(`rbd-fmt-${diskFormat}`, diskFormat, file);
      assert.equal(up.status, 204, up.text);
      const shown = (await api.request('GET', `/image/v2/images/${up.id}`)).body;
      assert.equal(shown.status, 'active');
      assert.equal(shown.disk_format, 'raw');
      assert.equal(shown.container_format, 'bare');
      assert.equal(shown.original_disk_format, diskFormat);
      assert.equal(shown.size, made.virtualSizes[diskFormat], 'size is that of the raw data');
      assert.equal(shown.virtual_size, made.virtualSizes[diskFormat]);
      const saved = path.join(work, `saved-${diskFormat}.raw`);
      const res = await fetch(`${pumice.url}/image/v2/images/${up.id}/file`, { headers: { 'X-Auth-Token': api.token } });
      assert.equal(res.status, 200);
      const handle = await open(saved, 'w');
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) await handle.write(chunk);
      await handle.close();
      assert.equal(shown.checksum, await fileMd5(saved), 'checksum describes the stored raw bytes');
      await execFileAsync('qemu-img', ['compare', '-f', 'raw', '-F', qemuFormat, saved, file]);
      await execFileAsync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', saved, made.rawPath]);
      await rm(saved, { force: true });
      assert.equal((await api.request('DELETE', `/image/v2/images/${up.id}`)).status, 204);
      assert.ok(!(await poolImages()).includes(up.id));
    });
  }

  test('vdi declared vmdk: 400 naming vdi; no RBD image and no temp file left; the image stays queued', async () => {
    const up = await createAndUpload('rbd-wrong', 'vmdk', made.paths['vdi']!);
    assert.equal(up.status, 400, up.text);
    assert.match(up.text, /in vdi format but disk_format is 'vmdk'/);
    assert.equal((await api.request('GET', `/image/v2/images/${up.id}`)).body.status, 'queued');
    assert.ok(!(await poolImages()).includes(up.id));
    assert.deepEqual(await readdir(path.join(pumice.dataDir, 'image-staging')), []);
    assert.equal((await api.request('DELETE', `/image/v2/images/${up.id}`)).status, 204);
  });
});
