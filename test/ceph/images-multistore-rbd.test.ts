/**
 * Multi-store images (issue 18) on the file store and the rbd store of a
 * real Ceph cluster: uploads to a chosen store (X-Image-Meta-Store), the
 * `stores` property, copy-image between the stores through openstacksdk's
 * `import_image` (bytes checked in both stores: the file on disk and
 * `rbd export`), a copy from damaged data failing with the reason in the
 * task and the image left active where it was, Glance's task records
 * (/v2/tasks, /v2/images/{id}/tasks) and DELETE /v2/stores/{store}/{image}.
 * Uses the lab in $PUMICE_CEPH_LAB when set, else brings one up and purges it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { CephLab } from '../../src/ceph/lab.ts';
import { labForTest, rbdImageStoreSection, type TestLab } from '../helpers/ceph-config.ts';
import { ApiClient, cliEnv, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;

let testLab: TestLab;
let lab: CephLab;
let work = '';
let pumice: PumiceProcess;
let admin: ApiClient;

async function rbd(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('rbd', ['--conf', lab.confPath, '--id', 'admin', ...args], { timeout: 60_000, maxBuffer: 64 << 20 });
  return stdout;
}

async function rbdExists(imageId: string): Promise<boolean> {
  return (JSON.parse(await rbd(['ls', '--format', 'json', 'images'])) as string[]).includes(imageId);
}

/** md5 of the RBD image's bytes (`rbd export` to a file). */
async function rbdMd5(imageId: string): Promise<string> {
  const out = path.join(work, `${imageId}.export`);
  try {
    await rbd(['export', `images/${imageId}`, out]);
    return createHash('md5').update(await readFile(out)).digest('hex');
  } finally {
    await rm(out, { force: true });
  }
}

function fileStorePath(imageId: string): string {
  return path.join(pumice.dataDir, 'images', imageId);
}

/** 3 MiB of data that differs at every position (no all-zero blocks for the stores to skip). */
function imageData(seed: number): Buffer {
  const data = Buffer.alloc(3 * MiB);
  for (let i = 0; i < data.length; i++) data[i] = (seed * 131 + i * 7 + (i >> 12)) & 0xff || 0x5a;
  return data;
}

async function createImage(name: string): Promise<string> {
  const res = await admin.request('POST', '/image/v2/images', { name, disk_format: 'raw', container_format: 'bare' });
  assert.equal(res.status, 201, res.text);
  return res.body.id as string;
}

async function upload(imageId: string, data: Buffer, store?: string): Promise<{ status: number; text: string }> {
  const res = await fetch(`${pumice.url}/image/v2/images/${imageId}/file`, {
    method: 'PUT',
    headers: { 'X-Auth-Token': admin.token, 'Content-Type': 'application/octet-stream', ...(store ? { 'X-Image-Meta-Store': store } : {}) },
    body: new Uint8Array(data),
  });
  return { status: res.status, text: await res.text() };
}

async function download(imageId: string): Promise<Buffer> {
  const res = await fetch(`${pumice.url}/image/v2/images/${imageId}/file`, { headers: { 'X-Auth-Token': admin.token } });
  assert.equal(res.status, 200);
  return Buffer.from(await res.arrayBuffer());
}

/** Polls the image until no copy or import task is running on it. */
async function copyEnded(imageId: string, timeoutMs = 90_000): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const image = (await admin.request('GET', `/image/v2/images/${imageId}`)).body;
    if (image.os_glance_import_task === undefined || Date.now() > deadline) return image;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A project with a user holding its member role, made through the Identity API (cheaper than three CLI runs). */
async function memberClient(project: string, user: string): Promise<ApiClient> {
  const projectId = (await admin.request('POST', '/identity/v3/projects', { project: { name: project, domain_id: 'default' } })).body.project.id as string;
  const userId = (await admin.request('POST', '/identity/v3/users', { user: { name: user, domain_id: 'default', password: `pw-${user}` } })).body.user.id as string;
  const roleId = (await admin.request('GET', '/identity/v3/roles?name=member')).body.roles[0].id as string;
  assert.equal((await admin.request('PUT', `/identity/v3/projects/${projectId}/users/${userId}/roles/${roleId}`)).status, 204);
  return ApiClient.login(pumice.url, user, `pw-${user}`, project);
}

/** openstacksdk (Debian's, through /usr/bin/python3): conn.image.import_image(image, method='copy-image', stores=[...]). */
async function sdkCopy(imageId: string, stores: string[]): Promise<void> {
  const script = `
import sys, openstack
conn = openstack.connect()
image = conn.image.get_image(sys.argv[1])
conn.image.import_image(image, method='copy-image', stores=sys.argv[2].split(','))
`;
  await execFileAsync('/usr/bin/python3', ['-c', script, imageId, stores.join(',')], { env: cliEnv(pumice.adminEnv), timeout: 60_000 });
}

before(async () => {
  testLab = await labForTest('pumice-multistore');
  lab = testLab.lab;
  work = await mkdtemp(path.join(tmpdir(), 'pumice-multistore-'));
  pumice = await startPumice({ config: rbdImageStoreSection(lab, { stores: ['file', 'rbd'], defaultStore: 'file' }) });
  admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
}, { timeout: 180_000 });

after(async () => {
  if (pumice) {
    await pumice.stop();
    pumice.cleanup();
  }
  if (work) await rm(work, { recursive: true, force: true });
  await testLab?.release();
}, { timeout: 60_000 });

describe('images in several stores (file and rbd)', { timeout: 300_000 }, () => {
  const data = imageData(1);
  const md5 = createHash('md5').update(data).digest('hex');
  let imageId = '';

  test('/v2/info/stores lists both; an upload goes to the default store, or to the one X-Image-Meta-Store names', async () => {
    const stores = (await admin.request('GET', '/image/v2/info/stores')).body.stores;
    assert.deepEqual(stores.map((s: { id: string }) => s.id), ['file', 'rbd']);
    assert.deepEqual((await admin.request('GET', '/image/v2/info/import')).body['import-methods'].value, ['glance-direct', 'copy-image']);
    imageId = await createImage('multistore-a');
    assert.equal((await upload(imageId, data)).status, 204);
    const shown = (await admin.request('GET', `/image/v2/images/${imageId}`)).body;
    assert.equal(shown.status, 'active');
    assert.equal(shown.stores, 'file');
    assert.equal(await rbdExists(imageId), false);

    const onRbd = await createImage('multistore-rbd');
    assert.equal((await upload(onRbd, imageData(2), 'rbd')).status, 204);
    assert.equal((await admin.request('GET', `/image/v2/images/${onRbd}`)).body.stores, 'rbd');
    assert.ok(await rbdExists(onRbd));
    assert.ok((await download(onRbd)).equals(imageData(2)));
    const unknown = await createImage('multistore-unknown');
    const refused = await upload(unknown, data, 'swift');
    assert.equal(refused.status, 400);
    assert.match(refused.text, /Unknown store 'swift'.*file, rbd/);
    assert.equal((await admin.request('GET', `/image/v2/images/${unknown}`)).body.status, 'queued', 'a refused store changes nothing');
    assert.equal((await admin.request('DELETE', `/image/v2/images/${onRbd}`)).status, 204);
    assert.equal(await rbdExists(onRbd), false, 'deleting the image removes its RBD data');
    await admin.request('DELETE', `/image/v2/images/${unknown}`);
  });

  test('copy-image with openstacksdk: the image stays active, then lives in both stores with identical bytes', async () => {
    await sdkCopy(imageId, ['rbd']);
    const shown = await copyEnded(imageId);
    assert.equal(shown.status, 'active');
    assert.equal(shown.stores, 'file,rbd');
    assert.equal(shown.os_glance_failed_import, '');
    assert.equal(shown.os_glance_importing_to_stores, '');
    assert.equal(createHash('md5').update(await readFile(fileStorePath(imageId))).digest('hex'), md5, 'file store bytes');
    assert.equal(await rbdMd5(imageId), md5, 'rbd store bytes');
    const snaps = JSON.parse(await rbd(['snap', 'ls', '--format', 'json', `images/${imageId}`])) as { name: string; protected: string | boolean }[];
    assert.deepEqual(snaps.map((s) => [s.name, String(s.protected)]), [['snap', 'true']], 'the copy is cloneable like an upload');
  });

  test('the copy is a Glance task: /v2/images/{id}/tasks, /v2/tasks and /v2/tasks/{id} (admins only)', async () => {
    const ofImage = (await admin.request('GET', `/image/v2/images/${imageId}/tasks`)).body.tasks;
    assert.equal(ofImage.length, 1);
    const task = ofImage[0];
    assert.equal(task.type, 'api_image_import');
    assert.equal(task.status, 'success');
    assert.equal(task.image_id, imageId);
    assert.deepEqual(task.input.import_req, { method: { name: 'copy-image' }, stores: ['rbd'] });
    assert.ok(task.expires_at, 'a finished task expires');
    const listed = (await admin.request('GET', '/image/v2/tasks?status=success')).body;
    assert.ok(listed.tasks.some((t: { id: string }) => t.id === task.id));
    assert.equal(listed.tasks[0].input, undefined, 'the list leaves out input, as Glance does');
    const one = await admin.request('GET', `/image/v2/tasks/${task.id}`);
    assert.equal(one.status, 200);
    assert.deepEqual(one.body.result, { image_id: imageId });
    assert.equal((await admin.request('GET', '/image/v2/tasks/00000000-0000-4000-8000-000000000000')).status, 404);
    assert.equal((await admin.request('GET', '/image/v2/tasks?status=done')).status, 400);

    const member = await memberClient('ms-other', 'ms-user');
    const denied = await member.request('GET', '/image/v2/tasks');
    assert.equal(denied.status, 403);
    assert.match(denied.text, /get_tasks/);
    const copy = await member.request('POST', `/image/v2/images/${imageId}/import`, { method: { name: 'copy-image' }, stores: ['rbd'] });
    assert.equal(copy.status, 404, 'a private image of another project is not found');
  });

  test('copy-image refusals: a store that has it (409), an unknown store, no store (400), a queued image (409)', async () => {
    const twice = await admin.request('POST', `/image/v2/images/${imageId}/import`, { method: { name: 'copy-image' }, stores: ['rbd'] });
    assert.equal(twice.status, 409);
    assert.match(twice.text, /already in store 'rbd'/);
    const all = await admin.request('POST', `/image/v2/images/${imageId}/import`, { method: { name: 'copy-image' }, all_stores: true });
    assert.equal(all.status, 409);
    assert.match(all.text, /every enabled store/);
    const unknown = await admin.request('POST', `/image/v2/images/${imageId}/import`, { method: { name: 'copy-image' }, stores: ['swift'] });
    assert.equal(unknown.status, 400);
    assert.match(unknown.text, /Unknown store 'swift'/);
    const none = await admin.request('POST', `/image/v2/images/${imageId}/import`, { method: { name: 'copy-image' } });
    assert.equal(none.status, 400);
    assert.match(none.text, /needs the stores to copy into/);
    const queued = await createImage('multistore-queued');
    const notActive = await admin.request('POST', `/image/v2/images/${queued}/import`, { method: { name: 'copy-image' }, stores: ['rbd'] });
    assert.equal(notActive.status, 409);
    assert.match(notActive.text, /'queued'.*active image/);
    await admin.request('DELETE', `/image/v2/images/${queued}`);
    const tasks = (await admin.request('GET', `/image/v2/images/${imageId}/tasks`)).body.tasks;
    assert.equal(tasks.length, 1, 'a refused copy leaves no task behind');
  });

  test('DELETE /v2/stores/{store}/{image}: data leaves one store, downloads read the other; the last store is refused', async () => {
    const removed = await admin.request('DELETE', `/image/v2/stores/file/${imageId}`);
    assert.equal(removed.status, 204, removed.text);
    const shown = (await admin.request('GET', `/image/v2/images/${imageId}`)).body;
    assert.equal(shown.stores, 'rbd');
    await assert.rejects(readFile(fileStorePath(imageId)), /ENOENT/);
    assert.equal(createHash('md5').update(await download(imageId)).digest('hex'), md5, 'the download now reads rbd');
    const last = await admin.request('DELETE', `/image/v2/stores/rbd/${imageId}`);
    assert.equal(last.status, 403);
    assert.match(last.text, /only store containing it/);
    const absent = await admin.request('DELETE', `/image/v2/stores/file/${imageId}`);
    assert.equal(absent.status, 404);
    assert.equal((await admin.request('DELETE', `/image/v2/stores/swift/${imageId}`)).status, 404);
    assert.equal((await admin.request('DELETE', `/image/v2/images/${imageId}`)).status, 204);
    assert.equal(await rbdExists(imageId), false);
  });

  test('a copy from damaged data fails: the image stays active in its store, the reason is in the task, nothing is left in rbd', async () => {
    const damaged = await createImage('multistore-damaged');
    assert.equal((await upload(damaged, imageData(3))).status, 204);
    // One byte changed on disk, same size: only the checksum check can tell.
    const handle = await open(fileStorePath(damaged), 'r+');
    await handle.write(Buffer.from([0x00]), 0, 1, MiB + 17);
    await handle.close();
    const started = await admin.request('POST', `/image/v2/images/${damaged}/import`, { method: { name: 'copy-image' }, stores: ['rbd'] });
    assert.equal(started.status, 202, started.text);
    const shown = await copyEnded(damaged);
    assert.equal(shown.status, 'active');
    assert.equal(shown.stores, 'file');
    assert.equal(shown.os_glance_failed_import, 'rbd');
    const [task] = (await admin.request('GET', `/image/v2/images/${damaged}/tasks`)).body.tasks;
    assert.equal(task.status, 'failure');
    assert.match(task.message, /does not match the image's checksums.*stays active in file/);
    assert.equal(await rbdExists(damaged), false, 'no half copy is left in the rbd store');
    assert.equal((await admin.request('DELETE', `/image/v2/images/${damaged}`)).status, 204);
  });

  test('glance-direct into a chosen store; two stores in one import are refused with the way to do it', async () => {
    const staged = await createImage('multistore-direct');
    const res = await fetch(`${pumice.url}/image/v2/images/${staged}/stage`, {
      method: 'PUT', headers: { 'X-Auth-Token': admin.token, 'Content-Type': 'application/octet-stream' }, body: new Uint8Array(imageData(4)),
    });
    assert.equal(res.status, 204);
    const both = await admin.request('POST', `/image/v2/images/${staged}/import`, { method: { name: 'glance-direct' }, stores: ['file', 'rbd'] });
    assert.equal(both.status, 400);
    assert.match(both.text, /one store at a time.*copy-image/);
    const started = await admin.request('POST', `/image/v2/images/${staged}/import`, { method: { name: 'glance-direct' } }, { 'X-Image-Meta-Store': 'rbd' });
    assert.equal(started.status, 202, started.text);
    const shown = await copyEnded(staged);
    assert.equal(shown.status, 'active');
    assert.equal(shown.stores, 'rbd');
    assert.equal(await rbdMd5(staged), createHash('md5').update(imageData(4)).digest('hex'));
    const [task] = (await admin.request('GET', `/image/v2/images/${staged}/tasks`)).body.tasks;
    assert.equal(task.status, 'success');
    assert.deepEqual(task.input.backend, ['rbd']);
    assert.equal((await admin.request('DELETE', `/image/v2/images/${staged}`)).status, 204);
    assert.equal(await rbdExists(staged), false);
  });
});

