/**
 * The web-download image import (Glance's import method that fetches the
 * data from a URL), against a real Pumice and a real HTTP server of the
 * test's own on 127.0.0.1: openstacksdk's `import_image(method=
 * 'web-download')` makes an active image whose bytes and checksums are the
 * served file's; a redirect within the allowed hosts is followed; a URL the
 * [import_filtering_opts] refuse is a 400 naming the rule, at the request
 * and at a redirect; a download that fails leaves the image queued with the
 * reason in the task's failure. Glance's older import API, POST /v2/tasks
 * (type import, openstacksdk's create_task/wait_for_task), runs the same
 * download under the same allow-list: the task goes pending → processing →
 * success with the new image's id, or failure with the reason.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { ApiClient, cliEnv, readEvents, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;

/** 4 MiB of random bytes, 4 MiB of zeros (a hole in the store), 1 MiB random: a raw disk of 9 MiB. */
const disk = Buffer.concat([randomBytes(4 * MiB), Buffer.alloc(4 * MiB), randomBytes(MiB)]);
const md5 = createHash('md5').update(disk).digest('hex');
const sha512 = createHash('sha512').update(disk).digest('hex');

let files: http.Server;
let port = 0;
let pumice: PumiceProcess;
let api: ApiClient;

/** What the test's HTTP server answers: the disk, redirects (allowed and not), a 404, a body cut short. */
function serve(req: http.IncomingMessage, res: http.ServerResponse): void {
  switch (req.url) {
    case '/disk.raw':
      res.writeHead(200, { 'Content-Length': String(disk.length), 'Content-Type': 'application/octet-stream' });
      res.end(disk);
      return;
    case '/moved':
      res.writeHead(302, { Location: '/disk.raw' });
      res.end();
      return;
    case '/elsewhere':
      // "localhost" is the same machine, but not a host the operator listed.
      res.writeHead(302, { Location: `http://localhost:${port}/disk.raw` });
      res.end();
      return;
    case '/cut':
      res.writeHead(200, { 'Content-Length': String(disk.length) });
      res.write(disk.subarray(0, MiB), () => res.destroy());
      return;
    default:
      res.writeHead(404);
      res.end('not here');
  }
}

async function newImage(name: string): Promise<string> {
  const r = await api.request('POST', '/image/v2/images', { name, disk_format: 'raw', container_format: 'bare' });
  assert.equal(r.status, 201, r.text);
  return r.body.id as string;
}

async function importFrom(imageId: string, uri: string): Promise<{ status: number; body: any; text: string }> {
  return api.request('POST', `/image/v2/images/${imageId}/import`, { method: { name: 'web-download', uri } });
}

async function waitImage(imageId: string, statuses: string[], timeoutMs = 30_000): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await api.request('GET', `/image/v2/images/${imageId}`);
    assert.equal(r.status, 200, r.text);
    if (statuses.includes(r.body.status)) return r.body;
    if (Date.now() > deadline) throw new Error(`image ${imageId} did not reach ${statuses.join('/')}: ${r.text}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The failure reason of the newest failed import task of an image (from the events file). */
function failureOf(imageId: string): string {
  const failed = readEvents(pumice.dataDir, 'task.failed').filter((e) => e['resource_id'] === imageId);
  assert.ok(failed.length > 0, `no task.failed event for image ${imageId}`);
  return String(failed.at(-1)!['reason']);
}

describe('web-download image import', { timeout: 120_000 }, () => {
  before(async () => {
    files = http.createServer(serve);
    await new Promise<void>((resolve) => files.listen(0, '127.0.0.1', resolve));
    port = (files.address() as AddressInfo).port;
    pumice = await startPumice({ config: `[import_filtering_opts]\nallowed_hosts = 127.0.0.1\nallowed_ports = ${port}\n` });
    api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  });

  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
    await new Promise((resolve) => files?.close(resolve));
  });

  test('web-download is offered once allowed_hosts names a host', async () => {
    const info = await api.request('GET', '/image/v2/info/import');
    assert.equal(info.status, 200, info.text);
    assert.deepEqual(info.body['import-methods'].value, ['glance-direct', 'web-download']);
    const created = await api.request('POST', '/image/v2/images', { name: 'header', disk_format: 'raw', container_format: 'bare' });
    assert.equal(created.headers.get('openstack-image-import-methods'), 'glance-direct,web-download');
  });

  test('openstacksdk import_image(web-download): active, with the served bytes and checksums', async () => {
    const script = `
import json, sys, openstack
conn = openstack.connect(cloud='envvars')
image = conn.image.create_image(name='from-the-web', disk_format='raw', container_format='bare')
conn.image.import_image(image, method='web-download', uri=sys.argv[1])
image = openstack.resource.wait_for_status(conn.image, conn.image.get_image(image), 'active', ['killed', 'queued'], 0.2, 60)
print(json.dumps({'id': image.id, 'status': image.status, 'size': image.size, 'checksum': image.checksum,
                  'hash_algo': image.hash_algo, 'hash_value': image.hash_value}))
`;
    const { stdout } = await execFileAsync('/usr/bin/python3', ['-c', script, `http://127.0.0.1:${port}/disk.raw`], { env: cliEnv(pumice.adminEnv), timeout: 90_000 });
    const image = JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>;
    assert.equal(image['status'], 'active');
    assert.equal(image['size'], disk.length);
    assert.equal(image['checksum'], md5);
    assert.equal(image['hash_algo'], 'sha512');
    assert.equal(image['hash_value'], sha512);
    const data = await fetch(`${pumice.url}/image/v2/images/${image['id']}/file`, { headers: { 'X-Auth-Token': api.token } });
    assert.equal(data.status, 200);
    assert.equal(createHash('md5').update(Buffer.from(await data.arrayBuffer())).digest('hex'), md5);
  });

  test('a redirect to an allowed host is followed', async () => {
    const id = await newImage('redirected');
    const r = await importFrom(id, `http://127.0.0.1:${port}/moved`);
    assert.equal(r.status, 202, r.text);
    const image = await waitImage(id, ['active', 'queued']);
    assert.equal(image.status, 'active');
    assert.equal(image.checksum, md5);
  });

  test('URLs outside [import_filtering_opts] are refused at the request, and the image stays queued', async () => {
    const id = await newImage('refused');
    const cases: [string, RegExp][] = [
      [`http://localhost:${port}/disk.raw`, /host 'localhost' is not in \[import_filtering_opts\] allowed_hosts \(127\.0\.0\.1\)/],
      [`http://127.0.0.1:${port + 1}/disk.raw`, new RegExp(`port ${port + 1} is not allowed`)],
      [`ftp://127.0.0.1:${port}/disk.raw`, /scheme 'ftp' is not supported/],
      [`http://user:secret@127.0.0.1:${port}/disk.raw`, /credentials in the URL are not accepted/],
      ['not a url', /is not a URL/],
    ];
    for (const [uri, message] of cases) {
      const r = await importFrom(id, uri);
      assert.equal(r.status, 400, `${uri}: ${r.text}`);
      assert.match(r.body.badRequest?.message ?? r.body.message ?? r.text, message, uri);
    }
    const missingUri = await api.request('POST', `/image/v2/images/${id}/import`, { method: { name: 'web-download' } });
    assert.equal(missingUri.status, 400, missingUri.text);
    assert.match(missingUri.text, /needs the image's address/);
    assert.equal((await waitImage(id, ['queued'])).status, 'queued');
  });

  test('a redirect to a host not allowed, a 404 and a cut download leave the image queued, with the reason', async () => {
    for (const [path, reason] of [
      ['/elsewhere', /redirected to localhost:\d+, which is refused: host 'localhost' is not in/],
      ['/nothing-here', /answered 404/],
      ['/cut', /ended after|aborted|socket hang up|ECONNRESET|terminated/],
    ] as const) {
      const id = await newImage(`fails${path}`);
      const r = await importFrom(id, `http://127.0.0.1:${port}${path}`);
      assert.equal(r.status, 202, r.text);
      const image = await waitImage(id, ['queued', 'active']);
      assert.equal(image.status, 'queued', path);
      assert.equal(image.size ?? null, null, `${path}: a queued image holds no data`);
      assert.equal(image.os_glance_failed_import, 'file', path);
      assert.match(failureOf(id), reason, path);
      // Queued again: the same image can be imported once the address is fixed.
      const again = await importFrom(id, `http://127.0.0.1:${port}/disk.raw`);
      assert.equal(again.status, 202, again.text);
      assert.equal((await waitImage(id, ['active', 'queued'])).status, 'active', `${path}: second import`);
    }
  });

  test('POST /v2/tasks (type import) through openstacksdk: the task succeeds and its image holds the served bytes', async () => {
    const script = `
import json, sys, openstack
conn = openstack.connect(cloud='envvars')
task = conn.image.create_task(type='import', input={'import_from': sys.argv[1], 'import_from_format': 'raw',
    'image_properties': {'name': 'from-a-task', 'container_format': 'bare'}})
first = task.status
task = conn.image.wait_for_task(task, status='success', failures=['failure'], interval=0.2, wait=60)
image = conn.image.get_image(task.result['image_id'])
print(json.dumps({'first': first, 'status': task.status, 'type': task.type, 'input': task.input, 'image': image.id,
                  'image_status': image.status, 'name': image.name, 'checksum': image.checksum, 'hash_value': image.hash_value}))
`;
    const { stdout } = await execFileAsync('/usr/bin/python3', ['-c', script, `http://127.0.0.1:${port}/disk.raw`], { env: cliEnv(pumice.adminEnv), timeout: 90_000 });
    const out = JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, any>;
    assert.ok(['pending', 'processing'].includes(out['first']), `created ${out['first']}`);
    assert.deepEqual({ status: out['status'], type: out['type'], image_status: out['image_status'], name: out['name'], checksum: out['checksum'], hash_value: out['hash_value'] },
      { status: 'success', type: 'import', image_status: 'active', name: 'from-a-task', checksum: md5, hash_value: sha512 });
    assert.equal(out['input'].import_from, `http://127.0.0.1:${port}/disk.raw`);
    const tasks = await api.request('GET', `/image/v2/images/${out['image']}/tasks`);
    assert.equal(tasks.body.tasks.length, 1, tasks.text);
    assert.equal(tasks.body.tasks[0].type, 'import');
  });

  test('POST /v2/tasks: a failed download fails the task with the reason; a refused host or a bad input is a 400 that leaves nothing', async () => {
    const body = (importFrom: string, extra: Record<string, unknown> = {}) => ({
      type: 'import', input: { import_from: importFrom, import_from_format: 'raw', image_properties: { name: 'task-fails', container_format: 'bare' }, ...extra },
    });
    const created = await api.request('POST', '/image/v2/tasks', body(`http://127.0.0.1:${port}/nothing-here`));
    assert.equal(created.status, 201, created.text);
    assert.equal(created.body.status, 'pending');
    const deadline = Date.now() + 30_000;
    let task = created.body;
    while (task.status === 'pending' || task.status === 'processing') {
      assert.ok(Date.now() < deadline, `task still ${task.status}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
      task = (await api.request('GET', `/image/v2/tasks/${created.body.id}`)).body;
    }
    assert.equal(task.status, 'failure');
    assert.match(task.message, /answered 404/);
    const imagesBefore = (await api.request('GET', '/image/v2/images')).body.images.length;
    const tasksBefore = (await api.request('GET', '/image/v2/tasks')).body.tasks.length;
    for (const [bad, message, status] of [
      [body(`http://localhost:${port}/disk.raw`), /host 'localhost' is not in \[import_filtering_opts\] allowed_hosts/],
      [{ ...body(`http://127.0.0.1:${port}/disk.raw`), type: 'export' }, /only task type is 'import'/],
      [body(`http://127.0.0.1:${port}/disk.raw`, { import_from_format: 'qcow2', image_properties: { container_format: 'bare', disk_format: 'raw' } }), /differs from image_properties.disk_format/],
      [body(`http://127.0.0.1:${port}/disk.raw`, { image_properties: { name: 'x' } }), /container_format is required/],
      // A read-only attribute is refused as POST /v2/images refuses it (Glance: 403).
      [body(`http://127.0.0.1:${port}/disk.raw`, { image_properties: { container_format: 'bare', disk_format: 'raw', size: 5 } }), /size/, 403],
    ] as const) {
      const r = await api.request('POST', '/image/v2/tasks', bad);
      assert.equal(r.status, status ?? 400, r.text);
      assert.match(r.text, message);
    }
    assert.equal((await api.request('GET', '/image/v2/images')).body.images.length, imagesBefore, 'no image left behind');
    assert.equal((await api.request('GET', '/image/v2/tasks')).body.tasks.length, tasksBefore, 'no task left behind');
  });

  test('web-download into an image that has data is a 409', async () => {
    const id = await newImage('twice');
    assert.equal((await importFrom(id, `http://127.0.0.1:${port}/disk.raw`)).status, 202);
    await waitImage(id, ['active']);
    const r = await importFrom(id, `http://127.0.0.1:${port}/disk.raw`);
    assert.equal(r.status, 409, r.text);
    assert.match(r.text, /web-download imports into a queued image/);
  });
});
