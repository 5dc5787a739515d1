/**
 * vmdk, vdi, vhd (qemu's vpc) and vhdx uploads on the file store: images
 * made with qemu-img from a raw disk with known bytes. Declared right: the
 * image is active, stored as uploaded (byte for byte), with the virtual size
 * qemu-img reports. Declared wrong: a 400 naming the real format, and the
 * image stays queued without data. Also: a VMDK descriptor (monolithicFlat)
 * and a qcow2 with a backing file are refused.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { formats, makeFormatImages } from '../helpers/image-formats.ts';
import { ApiClient, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);

let work = '';
let pumice: PumiceProcess;
let api: ApiClient;
let made: Awaited<ReturnType<typeof makeFormatImages>>;

async function createAndUpload(name: string, diskFormat: string, file: string): Promise<{ id: string; status: number; text: string }> {
  const created = await api.request('POST', '/image/v2/images', { name, disk_format: diskFormat, container_format: 'bare' });
  assert.equal(created.status, 201, created.text);
  const res = await fetch(`${pumice.url}/image/v2/images/${created.body.id}/file`, {
    method: 'PUT', headers: { 'X-Auth-Token': api.token, 'Content-Type': 'application/octet-stream' }, body: await readFile(file),
  });
  return { id: created.body.id as string, status: res.status, text: await res.text() };
}

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'pumice-image-formats-'));
  made = await makeFormatImages(work);
  pumice = await startPumice();
  api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
}, { timeout: 120_000 });

after(async () => {
  if (pumice) {
    await pumice.stop();
    pumice.cleanup();
  }
  if (work) await rm(work, { recursive: true, force: true });
});

describe('vmdk, vdi, vhd and vhdx on the file store', { timeout: 180_000 }, () => {
  for (const [diskFormat] of formats) {
    test(`${diskFormat} declared ${diskFormat}: active, stored as uploaded, virtual_size from qemu-img`, async () => {
      const file = made.paths[diskFormat]!;
      const bytes = await readFile(file);
      const up = await createAndUpload(`fmt-${diskFormat}`, diskFormat, file);
      assert.equal(up.status, 204, up.text);
      const shown = (await api.request('GET', `/image/v2/images/${up.id}`)).body;
      assert.equal(shown.status, 'active');
      assert.equal(shown.disk_format, diskFormat, 'the file store keeps the format');
      assert.equal(shown.size, bytes.length);
      assert.equal(shown.virtual_size, made.virtualSizes[diskFormat]);
      assert.equal(shown.checksum, createHash('md5').update(bytes).digest('hex'));
      assert.equal(shown.original_disk_format, undefined, 'nothing was converted');
      const saved = await fetch(`${pumice.url}/image/v2/images/${up.id}/file`, { headers: { 'X-Auth-Token': api.token } });
      assert.ok(Buffer.from(await saved.arrayBuffer()).equals(bytes), 'download equals upload');
      assert.equal((await api.request('DELETE', `/image/v2/images/${up.id}`)).status, 204);
    });
  }

  test('each format declared as another one (and as raw): 400 naming the real format and the fix; the image stays queued without data', async () => {
    const wrong: [string, string][] = [['vmdk', 'vdi'], ['vdi', 'vhdx'], ['vhd', 'vmdk'], ['vhdx', 'raw'], ['vmdk', 'qcow2']];
    for (const [real, declared] of wrong) {
      const up = await createAndUpload(`wrong-${real}-as-${declared}`, declared, made.paths[real]!);
      assert.equal(up.status, 400, `${real} declared ${declared}: ${up.text}`);
      const message = (JSON.parse(up.text) as { badRequest: { message: string } }).badRequest.message;
      assert.match(message, new RegExp(`in ${real} format but disk_format is '${declared}'`));
      assert.match(message, new RegExp(`--disk-format ${real}`));
      assert.match(message, /qemu-img convert/);
      const shown = (await api.request('GET', `/image/v2/images/${up.id}`)).body;
      assert.equal(shown.status, 'queued');
      assert.equal(shown.size, null);
      assert.equal((await api.request('DELETE', `/image/v2/images/${up.id}`)).status, 204);
    }
    const left = (await readdir(path.join(pumice.dataDir, 'images'))).filter((n) => !n.startsWith('.'));
    assert.deepEqual(left, [], 'no data or temp file is left in the store');
  });

  test('a VMDK descriptor with a separate extent (monolithicFlat) and a qcow2 with a backing file are refused', async () => {
    const flat = path.join(work, 'flat.vmdk');
    await execFileAsync('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', flat, '16M']);
    const upFlat = await createAndUpload('flat-vmdk', 'vmdk', flat);
    assert.equal(upFlat.status, 400, upFlat.text);
    assert.match(upFlat.text, /vmdk|VMDK/);
    const backed = path.join(work, 'backed.qcow2');
    await execFileAsync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', made.rawPath, '-F', 'raw', backed]);
    const upBacked = await createAndUpload('backed-qcow2', 'qcow2', backed);
    assert.equal(upBacked.status, 400, upBacked.text);
    assert.match(upBacked.text, /backing file/);
    for (const id of [upFlat.id, upBacked.id]) assert.equal((await api.request('GET', `/image/v2/images/${id}`)).body.status, 'queued');
  });
});
