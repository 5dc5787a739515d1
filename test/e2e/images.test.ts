/**
 * Image API v2 on the file store, end to end with Debian's `openstack` CLI
 * against a real `pumice serve`: upload of a 64 MiB sparse raw image with
 * known bytes, show (checksums, sizes), list filters, save (byte for byte),
 * set property/tag, qcow2 virtual size, a format mismatch refused, project
 * isolation, sharing with accept, protection, deactivation, range
 * downloads, glance-direct import, delete; a table of bad requests that must
 * get OpenStack faults and change nothing; recovery after kill -9 mid-upload.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, openSync, closeSync, writeSync, writeFileSync, ftruncateSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { ApiClient, memberProject, openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
type Row = Record<string, unknown>;
type Env = Record<string, string>;

const MiB = 1024 * 1024;
const rawSizeBytes = 64 * MiB;
/** Known bytes at several offsets of the otherwise sparse (zero) raw image. */
const marks: [number, string][] = [
  [0, 'PUMICE-IMAGE-START'],
  [MiB + 3, 'one-mebibyte-and-three'],
  [32 * MiB + 7, 'MIDDLE'],
  [rawSizeBytes - 4, 'END!'],
];

let pumice: PumiceProcess;
let work: string;
let admin: Env;
let userA: Env;
let userB: Env;
let projectA = '';
let projectB = '';
let rawPath = '';
let qcow2Path = '';
let img1Id = '';

async function fails(env: Env, args: string[]): Promise<string> {
  try {
    await openstack(env, args);
  } catch (error) {
    return (error as Error).message;
  }
  assert.fail(`openstack ${args.join(' ')} succeeded but was expected to fail`);
}

/** PUTs raw bytes as image data. */
async function putData(api: ApiClient, imageId: string, data: Buffer, target: 'file' | 'stage' = 'file'): Promise<{ status: number; body: any; text: string }> {
  const res = await fetch(`${pumice.url}/image/v2/images/${imageId}/${target}`, {
    method: 'PUT',
    headers: { 'X-Auth-Token': api.token, 'Content-Type': 'application/octet-stream' },
    body: new Uint8Array(data),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined, text };
}

function fileHashes(path: string): { md5: string; sha512: string } {
  const data = readFileSync(path);
  return { md5: createHash('md5').update(data).digest('hex'), sha512: createHash('sha512').update(data).digest('hex') };
}

/** Polls an image until `done` says so (60 s at most); returns the last view. */
async function waitForImage(api: ApiClient, imageId: string, done: (image: any) => boolean): Promise<any> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const image = (await api.request('GET', `/image/v2/images/${imageId}`)).body;
    if (done(image) || Date.now() > deadline) return image;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** OSC 6 prints os_hash_* under properties; either place is accepted. */
function attr(image: Row, key: string): unknown {
  return image[key] ?? (image['properties'] as Row | undefined)?.[key];
}

const storeDir = () => join(pumice.dataDir, 'images');
const storeFiles = () => readdirSync(storeDir()).sort();

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'pumice-images-'));
  pumice = await startPumice();
  admin = pumice.adminEnv;
  rawPath = join(work, 'disk.raw');
  const fd = openSync(rawPath, 'w');
  ftruncateSync(fd, rawSizeBytes);
  for (const [offset, text] of marks) writeSync(fd, Buffer.from(text), 0, text.length, offset);
  closeSync(fd);
  qcow2Path = join(work, 'disk.qcow2');
  await execFileAsync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rawPath, qcow2Path]);
});

after(async () => {
  await pumice?.stop();
  pumice?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('images with the openstack CLI on the file store', { timeout: 300_000 }, () => {
  test('projects A and B with a member user each', async () => {
    ({ projectId: projectA, env: userA } = await memberProject(admin, 'proj-a', 'user-a'));
    ({ projectId: projectB, env: userB } = await memberProject(admin, 'proj-b', 'user-b'));
  });

  test('image create --file of a 64 MiB sparse raw image, then show', async () => {
    const created = await openstackJson(admin, ['image', 'create', '--file', rawPath, '--disk-format', 'raw', '--container-format', 'bare', '--public', 'img1']);
    img1Id = created['id'] as string;
    assert.match(img1Id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const shown = await openstackJson(admin, ['image', 'show', 'img1']);
    const { md5, sha512 } = fileHashes(rawPath);
    assert.equal(shown['status'], 'active');
    assert.equal(shown['checksum'], md5);
    assert.equal(attr(shown, 'os_hash_algo'), 'sha512');
    assert.equal(attr(shown, 'os_hash_value'), sha512);
    assert.equal(shown['size'], rawSizeBytes);
    assert.equal(shown['virtual_size'], rawSizeBytes);
    assert.equal(shown['visibility'], 'public');
    assert.equal(shown['disk_format'], 'raw');
    assert.equal(shown['container_format'], 'bare');
    assert.equal(shown['protected'], false);
    assert.match(shown['created_at'] as string, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    // Stored sparse: the zero runs were not written.
    const { stdout } = await execFileAsync('du', ['-k', join(storeDir(), img1Id)]);
    assert.ok(Number(stdout.split('\t')[0]) < 8 * 1024, `stored file is not sparse: ${stdout}`);
  });

  test('image save returns the uploaded bytes; range requests and Content-MD5', async () => {
    const out = join(work, 'out.raw');
    await openstack(admin, ['image', 'save', '--file', out, 'img1']);
    assert.ok(readFileSync(out).equals(readFileSync(rawPath)), 'downloaded image differs from the upload');

    const api = await ApiClient.login(pumice.url, 'user-a', 'pw-user-a', 'proj-a');
    const full = await fetch(`${pumice.url}/image/v2/images/${img1Id}/file`, { method: 'HEAD', headers: { 'X-Auth-Token': api.token } });
    assert.equal(full.status, 200);
    assert.equal(full.headers.get('content-md5'), fileHashes(rawPath).md5);
    assert.equal(full.headers.get('content-length'), String(rawSizeBytes));
    for (const [offset, text] of marks) {
      const res = await fetch(`${pumice.url}/image/v2/images/${img1Id}/file`, { headers: { 'X-Auth-Token': api.token, Range: `bytes=${offset}-${offset + text.length - 1}` } });
      assert.equal(res.status, 206);
      assert.equal(res.headers.get('content-range'), `bytes ${offset}-${offset + text.length - 1}/${rawSizeBytes}`);
      assert.equal(await res.text(), text);
    }
    const suffix = await fetch(`${pumice.url}/image/v2/images/${img1Id}/file`, { headers: { 'X-Auth-Token': api.token, Range: 'bytes=-4' } });
    assert.equal(suffix.status, 206);
    assert.equal(await suffix.text(), 'END!');
    const beyond = await api.request('GET', `/image/v2/images/${img1Id}/file`, undefined, { Range: `bytes=${rawSizeBytes}-` });
    assert.equal(beyond.status, 416, beyond.text);
    assert.equal(beyond.body.requestRangeNotSatisfiable.code, 416);
  });

  test('image set --property --tag, and list filters', async () => {
    await openstack(admin, ['image', 'set', '--property', 'hw_disk_bus=scsi', '--property', 'hw_scsi_model=virtio-scsi', '--tag', 't1', 'img1']);
    const shown = await openstackJson(admin, ['image', 'show', 'img1']);
    assert.equal(attr(shown, 'hw_disk_bus'), 'scsi');
    assert.equal(attr(shown, 'hw_scsi_model'), 'virtio-scsi');
    assert.deepEqual(shown['tags'], ['t1']);

    // Without --file the CLI reads image data from stdin, so this data-less image is made over the API.
    const apiA = await ApiClient.login(pumice.url, 'user-a', 'pw-user-a', 'proj-a');
    const made = await apiA.request('POST', '/image/v2/images', { name: 'a-private', disk_format: 'raw', container_format: 'bare', visibility: 'private', os_require_quiesce: 'true' });
    assert.equal(made.status, 201, made.text);
    const names = (rows: Row[]) => rows.map((r) => r['Name']).sort();
    assert.deepEqual(names(await openstackJson<Row[]>(userA, ['image', 'list', '--public'])), ['img1']);
    assert.deepEqual(names(await openstackJson<Row[]>(userA, ['image', 'list', '--private'])), ['a-private']);
    assert.deepEqual(names(await openstackJson<Row[]>(userA, ['image', 'list'])), ['a-private', 'img1']);
    assert.deepEqual(names(await openstackJson<Row[]>(userA, ['image', 'list', '--property', 'hw_disk_bus=scsi'])), ['img1']);
    assert.deepEqual(names(await openstackJson<Row[]>(userA, ['image', 'list', '--tag', 't1'])), ['img1']);
    assert.deepEqual(names(await openstackJson<Row[]>(userA, ['image', 'list', '--tag', 'nope'])), []);
    assert.deepEqual(names(await openstackJson<Row[]>(userA, ['image', 'list', '--name', 'a-private'])), ['a-private']);
    assert.deepEqual(names(await openstackJson<Row[]>(userA, ['image', 'list', '--status', 'queued'])), ['a-private']);
    // Paging: limit 1 gives a next link the CLI follows with --marker.
    const api = await ApiClient.login(pumice.url, 'user-a', 'pw-user-a', 'proj-a');
    const page1 = await api.request('GET', '/image/v2/images?limit=1&sort_key=name&sort_dir=asc');
    assert.equal(page1.status, 200, page1.text);
    assert.deepEqual(page1.body.images.map((i: Row) => i['name']), ['a-private']);
    assert.equal(page1.body.first, '/v2/images');
    assert.equal(page1.body.schema, '/v2/schemas/images');
    assert.match(page1.body.next, /^\/v2\/images\?.*marker=/);
    const page2 = await api.request('GET', `/image${page1.body.next}`);
    assert.deepEqual(page2.body.images.map((i: Row) => i['name']), ['img1']);
    const sized = await api.request('GET', `/image/v2/images?size_min=${rawSizeBytes}&size_max=${rawSizeBytes}`);
    assert.deepEqual(sized.body.images.map((i: Row) => i['name']), ['img1']);
  });

  test('a qcow2 upload gets its virtual size; qcow2 declared raw is refused', async () => {
    await openstack(userA, ['image', 'create', '--file', qcow2Path, '--disk-format', 'qcow2', '--container-format', 'bare', '--private', 'q1']);
    const q1 = await openstackJson(userA, ['image', 'show', 'q1']);
    assert.equal(q1['status'], 'active');
    assert.equal(q1['virtual_size'], rawSizeBytes);
    assert.equal(q1['size'], readFileSync(qcow2Path).length);
    assert.equal(q1['checksum'], fileHashes(qcow2Path).md5);
    const apiA = await ApiClient.login(pumice.url, 'user-a', 'pw-user-a', 'proj-a');
    const again = await putData(apiA, q1['id'] as string, Buffer.from('more data'));
    assert.equal(again.status, 409, again.text);
    assert.match(again.body.conflictingRequest.message, /'active'/);

    const filesBefore = storeFiles();
    const message = await fails(userA, ['image', 'create', '--file', qcow2Path, '--disk-format', 'raw', '--container-format', 'bare', 'mismatch']);
    assert.match(message, /400/);
    assert.match(message, /qcow2 format but disk_format is 'raw'/);
    assert.deepEqual(storeFiles(), filesBefore, 'a refused upload left a file in the store');
    // The SDK deletes the image after the failed upload; over the API the image stays queued without data.
    const api = await ApiClient.login(pumice.url, 'user-a', 'pw-user-a', 'proj-a');
    const created = await api.request('POST', '/image/v2/images', { name: 'mismatch-api', disk_format: 'raw', container_format: 'bare' });
    assert.equal(created.status, 201, created.text);
    const put = await putData(api, created.body.id, readFileSync(qcow2Path));
    assert.equal(put.status, 400, put.text);
    assert.match(put.body.badRequest.message, /qcow2.*'raw'/);
    const after = await api.request('GET', `/image/v2/images/${created.body.id}`);
    assert.equal(after.body.status, 'queued');
    assert.equal(after.body.size, null);
    assert.equal(after.body.checksum, null);
    assert.deepEqual(storeFiles(), filesBefore);
    assert.equal((await api.request('GET', `/image/v2/images/${created.body.id}/file`)).status, 204);
    // A body shorter than its Content-Length (client gone mid-upload) leaves the image queued, without data or temp file.
    await new Promise<void>((resolveSent, reject) => {
      const url = new URL(pumice.url);
      const socket = connect(Number(url.port), url.hostname, () => {
        socket.write(`PUT /image/v2/images/${created.body.id}/file HTTP/1.1\r\nHost: ${url.host}\r\nX-Auth-Token: ${api.token}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\n`);
        socket.write(Buffer.alloc(4096, 1), () => setTimeout(() => socket.destroy(), 200));
      });
      socket.on('close', () => resolveSent());
      socket.on('error', reject);
    });
    let status = '';
    for (let i = 0; i < 50 && status !== 'queued'; i++) {
      status = (await api.request('GET', `/image/v2/images/${created.body.id}`)).body.status;
      if (status !== 'queued') await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(status, 'queued');
    assert.deepEqual(storeFiles(), filesBefore, 'an aborted upload left a file in the store');
    // glance-direct: staging the qcow2 data and importing it as raw is refused the same way; the staged data goes.
    const stage = await putData(api, created.body.id, readFileSync(qcow2Path), 'stage');
    assert.equal(stage.status, 204, stage.text);
    assert.equal((await api.request('GET', `/image/v2/images/${created.body.id}`)).body.status, 'uploading');
    // The import answers 202 at once (Glance); the task refuses the data: the image goes back to queued and records the failed store.
    const imported = await api.request('POST', `/image/v2/images/${created.body.id}/import`, { method: { name: 'glance-direct' } });
    assert.equal(imported.status, 202, imported.text);
    const refused = await waitForImage(api, created.body.id, (image) => image.status !== 'importing');
    assert.equal(refused.status, 'queued', JSON.stringify(refused));
    assert.equal(refused.os_glance_failed_import, 'file');
    assert.equal(refused.os_glance_importing_to_stores, '');
    assert.equal(refused.os_glance_import_task, undefined);
    assert.match(pumice.output(), new RegExp(`import of ${created.body.id} into store 'file' failed; the image is 'queued': .*qcow2.*'raw'`));
    assert.deepEqual(storeFiles(), filesBefore, 'a refused import left staged data');
    assert.equal((await api.request('DELETE', `/image/v2/images/${created.body.id}`)).status, 204);
  });

  test('image create --import (glance-direct stage + import)', async () => {
    await openstack(userA, ['image', 'create', '--import', '--file', qcow2Path, '--disk-format', 'qcow2', '--container-format', 'bare', '--private', 'q-imported']);
    // The import is asynchronous: the client polls the image until it leaves 'importing'.
    let shown = await openstackJson(userA, ['image', 'show', 'q-imported']);
    for (const deadline = Date.now() + 60_000; shown['status'] === 'importing' && Date.now() < deadline;) {
      await new Promise((r) => setTimeout(r, 200));
      shown = await openstackJson(userA, ['image', 'show', 'q-imported']);
    }
    assert.equal(shown['status'], 'active');
    assert.equal(attr(shown, 'os_glance_failed_import'), '');
    assert.equal(attr(shown, 'os_glance_importing_to_stores'), '');
    assert.equal(shown['virtual_size'], rawSizeBytes);
    assert.equal(shown['checksum'], fileHashes(qcow2Path).md5);
    const out = join(work, 'imported.qcow2');
    await openstack(userA, ['image', 'save', '--file', out, 'q-imported']);
    assert.ok(readFileSync(out).equals(readFileSync(qcow2Path)));
    await openstack(userA, ['image', 'delete', 'q-imported']);
  });

  test('a private image of project A is invisible to project B', async () => {
    const names = (await openstackJson<Row[]>(userB, ['image', 'list'])).map((r) => r['Name']);
    assert.deepEqual(names, ['img1']);
    const privateImage = await openstackJson(userA, ['image', 'show', 'a-private']);
    assert.equal(privateImage['owner'], projectA);
    assert.equal(privateImage['visibility'], 'private');
    assert.ok([true, 'true'].includes(attr(privateImage, 'os_require_quiesce') as string), JSON.stringify(privateImage));
    const privateId = privateImage['id'] as string;
    assert.match(await fails(userB, ['image', 'show', privateId]), /No Image found|could not be found|404/);
    const api = await ApiClient.login(pumice.url, 'user-b', 'pw-user-b', 'proj-b');
    const direct = await api.request('GET', `/image/v2/images/${privateId}`);
    assert.equal(direct.status, 404);
    assert.equal(direct.body.itemNotFound.code, 404);
    const patch = await api.request('PATCH', `/image/v2/images/${privateId}`, [{ op: 'replace', path: '/name', value: 'stolen' }], { 'Content-Type': 'application/openstack-images-v2.1-json-patch' });
    assert.equal(patch.status, 404);
    // Only admin may publicize.
    assert.match(await fails(userA, ['image', 'set', '--public', 'a-private']), /403|publicize/);
  });

  test('a shared image becomes visible to B after B accepts', async () => {
    const created = await openstackJson(userA, ['image', 'create', '--file', rawPath, '--disk-format', 'raw', '--container-format', 'bare', '--shared', 'a-shared']);
    const sharedId = created['id'] as string;
    await openstack(userA, ['image', 'add', 'project', 'a-shared', projectB]);
    const members = await openstackJson<Row[]>(userA, ['image', 'member', 'list', 'a-shared']);
    assert.deepEqual(members.map((m) => [m['Member ID'], m['Status']]), [[projectB, 'pending']]);
    assert.ok(!(await openstackJson<Row[]>(userB, ['image', 'list'])).some((r) => r['ID'] === sharedId), 'pending shared image listed by default');
    const pending = await openstackJson<Row[]>(userB, ['image', 'list', '--member-status', 'pending', '--shared']);
    assert.deepEqual(pending.map((r) => r['ID']), [sharedId]);

    await openstack(userB, ['image', 'set', '--accept', sharedId]);
    const listed = await openstackJson<Row[]>(userB, ['image', 'list']);
    assert.ok(listed.some((r) => r['ID'] === sharedId), JSON.stringify(listed));
    const out = join(work, 'shared.raw');
    await openstack(userB, ['image', 'save', '--file', out, sharedId]);
    assert.ok(readFileSync(out).equals(readFileSync(rawPath)));
    // B may not change A's image; A may not accept for B.
    assert.match(await fails(userB, ['image', 'set', '--name', 'taken', sharedId]), /403/);
    const api = await ApiClient.login(pumice.url, 'user-a', 'pw-user-a', 'proj-a');
    const forged = await api.request('PUT', `/image/v2/images/${sharedId}/members/${projectB}`, { status: 'rejected' });
    assert.equal(forged.status, 403, forged.text);
    // The member is no longer listed by the owner after removal, and B loses sight of the image.
    // OSC's `image remove project` looks the project up in Keystone, which a member may not do: the admin removes it.
    await openstack(admin, ['image', 'remove', 'project', sharedId, 'proj-b']);
    assert.deepEqual(await openstackJson<Row[]>(userA, ['image', 'member', 'list', 'a-shared']), []);
    assert.match(await fails(userB, ['image', 'show', sharedId]), /404|No Image found|could not be found/);
  });

  test('protected images, deactivation, delete', async () => {
    await openstack(userA, ['image', 'set', '--protected', 'q1']);
    assert.match(await fails(userA, ['image', 'delete', 'q1']), /protected|403|Failed to delete/);
    await openstack(userA, ['image', 'set', '--unprotected', 'q1']);

    await openstack(admin, ['image', 'set', '--deactivate', 'img1']);
    assert.equal((await openstackJson(admin, ['image', 'show', 'img1']))['status'], 'deactivated');
    const api = await ApiClient.login(pumice.url, 'user-a', 'pw-user-a', 'proj-a');
    const blocked = await api.request('GET', `/image/v2/images/${img1Id}/file`);
    assert.equal(blocked.status, 403, blocked.text);
    // The SDK does not raise on a refused action, so the member's reactivate is checked over the API.
    const reactivate = await api.request('POST', `/image/v2/images/${img1Id}/actions/reactivate`);
    assert.equal(reactivate.status, 403, reactivate.text);
    await openstack(admin, ['image', 'set', '--activate', 'img1']);
    assert.equal((await openstackJson(admin, ['image', 'show', 'img1']))['status'], 'active');

    for (const [env, name] of [[userA, 'q1'], [userA, 'a-private'], [userA, 'a-shared'], [admin, 'img1']] as const) {
      await openstack(env, ['image', 'delete', name]);
    }
    assert.deepEqual(await openstackJson<Row[]>(admin, ['image', 'list']), []);
    assert.deepEqual(storeFiles(), []);
  });

  test('discovery: schemas, stores, import methods', async () => {
    const api = await ApiClient.login(pumice.url, 'user-a', 'pw-user-a', 'proj-a');
    const schema = await api.request('GET', '/image/v2/schemas/image');
    assert.equal(schema.body.name, 'image');
    assert.ok(schema.body.properties.os_hash_value);
    for (const name of ['images', 'member', 'members']) assert.equal((await api.request('GET', `/image/v2/schemas/${name}`)).body.name, name);
    assert.deepEqual((await api.request('GET', '/image/v2/info/stores')).body.stores, [{ id: 'file', description: 'Local file store (filesystem_store_datadir)', default: true }]);
    assert.ok((await api.request('GET', '/image/v2/info/import')).body['import-methods'].value.includes('glance-direct'));
  });

  test('bad input gets an OpenStack fault and changes nothing', async () => {
    const api = await ApiClient.login(pumice.url, 'user-a', 'pw-user-a', 'proj-a');
    const reader = await api.request('POST', '/image/v2/images', { name: 'target', disk_format: 'raw', container_format: 'bare', visibility: 'private' });
    const id = reader.body.id as string;
    const db = new Database(join(pumice.dataDir, 'pumice.db'), { readonly: true });
    const snapshot = () => JSON.stringify([db.prepare('SELECT * FROM images ORDER BY id').all(), db.prepare('SELECT * FROM image_members').all(), storeFiles()]);
    const patchType = { 'Content-Type': 'application/openstack-images-v2.1-json-patch' };
    const long = (n: number) => 'x'.repeat(n);
    const cases: { name: string; method: string; path: string; body?: unknown; headers?: Record<string, string>; expect: number }[] = [
      { name: 'show: not a UUID', method: 'GET', path: '/v2/images/not-a-uuid', expect: 404 },
      { name: 'show: unknown UUID', method: 'GET', path: '/v2/images/00000000-0000-4000-8000-000000000000', expect: 404 },
      { name: 'delete: not a UUID', method: 'DELETE', path: '/v2/images/not-a-uuid', expect: 404 },
      { name: 'upload: unknown image', method: 'PUT', path: '/v2/images/00000000-0000-4000-8000-000000000000/file', body: 'abc', headers: { 'Content-Type': 'application/octet-stream' }, expect: 404 },
      { name: 'create: id not a UUID', method: 'POST', path: '/v2/images', body: { id: 'nope', name: 'x' }, expect: 400 },
      { name: 'create: duplicate id', method: 'POST', path: '/v2/images', body: { id, name: 'x' }, expect: 409 },
      { name: 'create: unknown disk_format', method: 'POST', path: '/v2/images', body: { name: 'x', disk_format: 'qcow3' }, expect: 400 },
      { name: 'create: unknown container_format', method: 'POST', path: '/v2/images', body: { name: 'x', container_format: 'zip' }, expect: 400 },
      { name: 'create: bad visibility', method: 'POST', path: '/v2/images', body: { name: 'x', visibility: 'everyone' }, expect: 400 },
      { name: 'create: public as a member', method: 'POST', path: '/v2/images', body: { name: 'x', visibility: 'public' }, expect: 403 },
      { name: 'create: name of 256 characters', method: 'POST', path: '/v2/images', body: { name: long(256) }, expect: 400 },
      { name: 'create: property value of 256 characters', method: 'POST', path: '/v2/images', body: { name: 'x', hw_disk_bus: long(256) }, expect: 400 },
      { name: 'create: property name of 256 characters', method: 'POST', path: '/v2/images', body: { name: 'x', [long(256)]: 'v' }, expect: 400 },
      { name: 'create: property that is a number', method: 'POST', path: '/v2/images', body: { name: 'x', hw_cpu_cores: 4 }, expect: 400 },
      { name: 'create: tag of 256 characters', method: 'POST', path: '/v2/images', body: { name: 'x', tags: [long(256)] }, expect: 400 },
      { name: 'create: min_disk negative', method: 'POST', path: '/v2/images', body: { name: 'x', min_disk: -1 }, expect: 400 },
      { name: 'create: read-only size', method: 'POST', path: '/v2/images', body: { name: 'x', size: 5 }, expect: 403 },
      { name: 'create: reserved deleted', method: 'POST', path: '/v2/images', body: { name: 'x', deleted: 'true' }, expect: 403 },
      { name: 'create: array body', method: 'POST', path: '/v2/images', body: [], expect: 400 },
      { name: 'patch: not an array', method: 'PATCH', path: `/v2/images/${id}`, body: { op: 'replace' }, headers: patchType, expect: 400 },
      { name: 'patch: unknown op', method: 'PATCH', path: `/v2/images/${id}`, body: [{ op: 'move', path: '/name', value: 'y' }], headers: patchType, expect: 400 },
      { name: 'patch: nested path', method: 'PATCH', path: `/v2/images/${id}`, body: [{ op: 'add', path: '/tags/0', value: 'y' }], headers: patchType, expect: 400 },
      { name: 'patch: missing value', method: 'PATCH', path: `/v2/images/${id}`, body: [{ op: 'replace', path: '/name' }], headers: patchType, expect: 400 },
      { name: 'patch: read-only status', method: 'PATCH', path: `/v2/images/${id}`, body: [{ op: 'replace', path: '/status', value: 'active' }], headers: patchType, expect: 403 },
      { name: 'patch: read-only checksum', method: 'PATCH', path: `/v2/images/${id}`, body: [{ op: 'replace', path: '/checksum', value: 'x' }], headers: patchType, expect: 403 },
      { name: 'patch: remove core attribute', method: 'PATCH', path: `/v2/images/${id}`, body: [{ op: 'remove', path: '/name' }], headers: patchType, expect: 403 },
      { name: 'patch: remove missing property', method: 'PATCH', path: `/v2/images/${id}`, body: [{ op: 'remove', path: '/nope' }], headers: patchType, expect: 409 },
      { name: 'patch: second op bad, first not applied', method: 'PATCH', path: `/v2/images/${id}`, body: [{ op: 'replace', path: '/name', value: 'renamed' }, { op: 'replace', path: '/size', value: 1 }], headers: patchType, expect: 403 },
      { name: 'patch: unknown disk_format', method: 'PATCH', path: `/v2/images/${id}`, body: [{ op: 'replace', path: '/disk_format', value: 'qcow3' }], headers: patchType, expect: 400 },
      { name: 'patch: oversize name', method: 'PATCH', path: `/v2/images/${id}`, body: [{ op: 'replace', path: '/name', value: long(256) }], headers: patchType, expect: 400 },
      { name: 'patch: plain JSON content type', method: 'PATCH', path: `/v2/images/${id}`, body: [{ op: 'replace', path: '/name', value: 'y' }], expect: 415 },
      { name: 'patch: truncated JSON', method: 'PATCH', path: `/v2/images/${id}`, body: '[{"op": "replace"', headers: patchType, expect: 400 },
      { name: 'upload: text/plain', method: 'PUT', path: `/v2/images/${id}/file`, body: 'abc', headers: { 'Content-Type': 'text/plain' }, expect: 415 },
      { name: 'members: not shared', method: 'POST', path: `/v2/images/${id}/members`, body: { member: 'x' }, expect: 403 },
      { name: 'members: missing member', method: 'POST', path: `/v2/images/${id}/members`, body: {}, expect: 400 },
      { name: 'list: limit=-1', method: 'GET', path: '/v2/images?limit=-1', expect: 400 },
      { name: 'list: bad sort_key', method: 'GET', path: '/v2/images?sort_key=password', expect: 400 },
      { name: 'list: bad sort_dir', method: 'GET', path: '/v2/images?sort_dir=sideways', expect: 400 },
      { name: 'list: bad visibility', method: 'GET', path: '/v2/images?visibility=everyone', expect: 400 },
      { name: 'list: size_min not a number', method: 'GET', path: '/v2/images?size_min=big', expect: 400 },
      { name: 'list: unknown marker', method: 'GET', path: '/v2/images?marker=00000000-0000-4000-8000-000000000000', expect: 400 },
      { name: 'tags: remove missing tag', method: 'DELETE', path: `/v2/images/${id}/tags/nope`, expect: 404 },
      { name: 'tags: tag of 256 characters', method: 'PUT', path: `/v2/images/${id}/tags/${long(256)}`, expect: 400 },
      { name: 'download: range on queued image gives no data', method: 'GET', path: `/v2/images/${id}/file`, expect: 204 },
      { name: 'deactivate as member', method: 'POST', path: `/v2/images/${id}/actions/deactivate`, expect: 403 },
    ];
    const before = snapshot();
    const problems: string[] = [];
    for (const c of cases) {
      const r = await api.request(c.method, `/image${c.path}`, c.body, c.headers);
      if (r.status !== c.expect) problems.push(`${c.name}: expected ${c.expect}, got ${r.status} ${r.text.slice(0, 200)}`);
      if (c.expect >= 400) {
        const fault = r.body && typeof r.body === 'object' ? Object.values(r.body as Record<string, { code?: number; message?: string }>)[0] : undefined;
        if (!fault || fault.code !== r.status || typeof fault.message !== 'string' || fault.message.length === 0) problems.push(`${c.name}: not an OpenStack fault: ${r.text.slice(0, 200)}`);
      }
      if (snapshot() !== before) problems.push(`${c.name}: changed stored state`);
    }
    db.close();
    assert.deepEqual(problems, []);
    assert.doesNotMatch(pumice.output(), /internal error|response failed/);
    await api.request('DELETE', `/image/v2/images/${id}`);
  });

  test('restart after a crash mid-upload: the image is queued again, temp and orphan files are removed', async () => {
    let api = await ApiClient.login(pumice.url, 'user-a', 'pw-user-a', 'proj-a');
    const created = await api.request('POST', '/image/v2/images', { name: 'crashed', disk_format: 'raw', container_format: 'bare' });
    const id = created.body.id as string;
    const kept = await api.request('POST', '/image/v2/images', { name: 'kept', disk_format: 'raw', container_format: 'bare' });
    assert.equal((await putData(api, kept.body.id, Buffer.from('kept data'))).status, 204);
    await pumice.kill9();
    const db = new Database(join(pumice.dataDir, 'pumice.db'));
    db.prepare("UPDATE images SET status = 'saving' WHERE id = ?").run(id);
    db.close();
    writeFileSync(join(storeDir(), `${id}.0123456789ab.tmp`), 'half an upload');
    writeFileSync(join(storeDir(), '00000000-0000-4000-8000-00000000dead'), 'no row refers to this');
    pumice = await startPumice({ dataDir: pumice.dataDir });
    api = await ApiClient.login(pumice.url, 'user-a', 'pw-user-a', 'proj-a');
    assert.equal((await api.request('GET', `/image/v2/images/${id}`)).body.status, 'queued');
    assert.deepEqual(storeFiles(), [kept.body.id]);
    const data = await fetch(`${pumice.url}/image/v2/images/${kept.body.id}/file`, { headers: { 'X-Auth-Token': api.token } });
    assert.equal(await data.text(), 'kept data');
    assert.equal((await putData(api, id, Buffer.from('second try'))).status, 204);
    assert.equal((await api.request('GET', `/image/v2/images/${id}`)).body.status, 'active');
  });
});
