/**
 * Issue 12, resource exhaustion by a member: a list call with hundreds of sort keys (or the
 * same one repeated) and a marker is refused at once with a 400 that names the limit, never a
 * 500 or a blocked event loop; repeated query parameters are refused; the prepared-statement
 * cache stays bounded however many distinct SQL texts are run.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Db, statementCacheMax } from '../../src/db/db.ts';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { createHttpServer } from '../../src/http/server.ts';
import { Router } from '../../src/http/router.ts';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ApiClient, cliEnv, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);

/** Polls an image until it leaves `importing` (60 s at most); returns its last view. */
async function importEnded(api: ApiClient, imageId: string): Promise<any> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const image = (await api.request('GET', `/image/v2/images/${imageId}`)).body;
    if (image.status !== 'importing' || Date.now() > deadline) return image;
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('the prepared-statement cache is bounded (LRU)', () => {
  const db = new Db(':memory:');
  try {
    for (let i = 0; i < statementCacheMax * 4; i++) db.get(`SELECT ${i} AS n`);
    assert.ok(db.cachedStatementCount <= statementCacheMax, `${db.cachedStatementCount} statements cached`);
    // A statement in use stays cached while others come and go.
    for (let i = 0; i < statementCacheMax * 2; i++) {
      db.get('SELECT 1 AS hot');
      db.get(`SELECT ${i} AS cold`);
    }
    assert.equal(db.get<{ hot: number }>('SELECT 1 AS hot')?.hot, 1);
  } finally {
    db.close();
  }
});

describe('list limits over the API', () => {
  let pumice: PumiceProcess;
  let api: ApiClient;
  let marker: string;

  before(async () => {
    pumice = await startPumice();
    api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const r = await api.request('POST', `/volume/v3/${api.projectId}/volumes`, { volume: { size: 1, name: 'limits' } });
    assert.equal(r.status, 202, r.text);
    marker = r.body.volume.id;
  });

  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
  });

  test('hundreds of sort keys with a marker: a fast 400 naming the limit, never a 500', async () => {
    for (const count of [250, 1000]) {
      const started = performance.now();
      const r = await api.request('GET', `/volume/v3/${api.projectId}/volumes/detail?sort=${Array(count).fill('name').join(',')}&marker=${marker}`);
      const ms = performance.now() - started;
      assert.equal(r.status, 400, `${count} keys: ${r.status} ${r.text.slice(0, 200)}`);
      assert.match(r.text, /at most 8/);
      assert.ok(ms < 1000, `${count} keys took ${ms.toFixed(0)} ms`);
    }
  });

  test('a deeply nested JSON body is a 400 on every service, never a 500', async () => {
    const img = await api.request('POST', '/image/v2/images', { name: 'nested', disk_format: 'raw', container_format: 'bare' });
    assert.equal(img.status, 201, img.text);
    const deep = '['.repeat(20_000) + ']'.repeat(20_000);
    const cases: [string, string, string, string][] = [
      ['PATCH', `/image/v2/images/${img.body.id}`, 'application/json', `{"image": ${deep}}`],
      ['PATCH', `/image/v2/images/${img.body.id}`, 'application/openstack-images-v2.1-json-patch', `[{"op":"add","path":"/x","value":${deep}}]`],
      ['POST', `/volume/v3/${api.projectId}/volumes`, 'application/json', `{"volume": {"size": 1, "metadata": ${deep}}}`],
      ['POST', '/identity/v3/auth/tokens', 'application/json', `{"auth": ${deep}}`],
    ];
    for (const [method, path, type, body] of cases) {
      const r = await fetch(`${pumice.url}${path}`, { method, headers: { 'X-Auth-Token': api.token, 'Content-Type': type }, body });
      const text = await r.text();
      assert.equal(r.status, 400, `${method} ${path} (${type}): ${r.status} ${text.slice(0, 200)}`);
      assert.match(text, /nested more than 32 levels/);
    }
  });

  test('a sort key given twice, or a filter given twice, is a 400', async () => {
    const twice = await api.request('GET', `/volume/v3/${api.projectId}/volumes?sort=name:asc,name:desc`);
    assert.equal(twice.status, 400, twice.text);
    assert.match(twice.text, /more than once/);
    const filter = await api.request('GET', `/volume/v3/${api.projectId}/volumes?name=a&name=b`);
    assert.equal(filter.status, 400, filter.text);
    assert.match(filter.text, /more than once/);
    const ok = await api.request('GET', `/volume/v3/${api.projectId}/volumes?sort=name:asc,created_at:desc&marker=${marker}`);
    assert.equal(ok.status, 200, ok.text);
  });
});

describe('long transfers (issue 12 #8)', () => {
  let pumice: PumiceProcess;
  let api: ApiClient;

  before(async () => {
    // A 2 s glance_request_timeout: the upload below takes longer, and must not be cut for it.
    pumice = await startPumice({ config: '[DEFAULT]\nglance_request_timeout = 2\n' });
    api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  });

  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
  });

  test('a volume upload to an image that takes longer than glance_request_timeout completes', async () => {
    const r = await api.request('POST', `/volume/v3/${api.projectId}/volumes`, { volume: { size: 3, name: 'long-upload' } });
    assert.equal(r.status, 202, r.text);
    const volumeId = r.body.volume.id as string;
    await api.waitVolume(volumeId, ['available']);
    const started = performance.now();
    const up = await api.request('POST', `/volume/v3/${api.projectId}/volumes/${volumeId}/action`, { 'os-volume_upload_image': { image_name: 'long-upload', disk_format: 'raw', container_format: 'bare' } });
    assert.equal(up.status, 202, up.text);
    const imageId = up.body['os-volume_upload_image'].image_id as string;
    let status = '';
    for (let i = 0; i < 600 && status !== 'active' && status !== 'killed' && status !== 'deleted'; i++) {
      const img = await api.request('GET', `/image/v2/images/${imageId}`);
      status = img.status === 200 ? img.body.status : `http ${img.status}`;
      if (img.status === 404) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    const seconds = (performance.now() - started) / 1000;
    assert.equal(status, 'active', `image ${status} after ${seconds.toFixed(1)} s\n${pumice.output().split('\n').filter((l) => /upload|image/i.test(l)).slice(-10).join('\n')}`);
    const vol = await api.waitVolume(volumeId, ['available', 'error']);
    assert.equal(vol.status, 'available');
    if (seconds <= 2) console.log(`note: the upload took only ${seconds.toFixed(1)} s; the timeout was not exercised`);
  });

  test('glanceclient image-create-via-import: the import runs as a task, the image goes importing -> active', async () => {
    const work = mkdtempSync(join(tmpdir(), 'pumice-import-'));
    try {
      const qcow2 = join(work, 'disk.qcow2');
      await execFileAsync('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2, '64M']);
      const env = cliEnv({ ...pumice.adminEnv, OS_IMAGE_API_VERSION: '2' });
      // stdin closed (<&-): glanceclient takes an open stdin for image data besides --file.
      const { stdout } = await execFileAsync('/bin/sh', ['-c', 'exec /usr/bin/glance "$@" <&-', 'glance',
        'image-create-via-import', '--import-method', 'glance-direct', '--file', qcow2,
        '--disk-format', 'qcow2', '--container-format', 'bare', '--name', 'via-import',
      ], { env, timeout: 120_000 });
      const id = /\|\s*id\s*\|\s*([0-9a-f-]{36})/.exec(stdout)?.[1];
      assert.ok(id, stdout);
      const image = await importEnded(api, id);
      assert.equal(image.status, 'active', JSON.stringify(image));
      assert.equal(image.virtual_size, 64 * 1024 * 1024);
      assert.equal(image.os_glance_importing_to_stores, '');
      assert.equal(image.os_glance_failed_import, '');
      assert.equal(image.os_glance_import_task, undefined, 'the task property is dropped when the import ends');
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});

describe('an import cut by a crash (issue 12 #8)', () => {
  let pumice: PumiceProcess | undefined;

  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
  });

  test('the 202 comes before the work; a crash mid-import runs the task again after the restart', async () => {
    // The server dies (as after kill -9) once the import task has checked the staged data.
    const first = await startPumice({ env: { PUMICE_CRASH_POINT: 'image.import.checked:1' } });
    pumice = first;
    const api = await ApiClient.login(first.url, 'admin', first.adminPassword, 'admin');
    const created = await api.request('POST', '/image/v2/images', { name: 'crashy', disk_format: 'qcow2', container_format: 'bare' });
    assert.equal(created.status, 201, created.text);
    const imageId = created.body.id as string;
    const qcow2Path = join(first.dataDir, 'disk.qcow2');
    await execFileAsync('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2Path, '32M']);
    const staged = await fetch(`${first.url}/image/v2/images/${imageId}/stage`, {
      method: 'PUT', headers: { 'X-Auth-Token': api.token, 'Content-Type': 'application/octet-stream' }, body: new Uint8Array(readFileSync(qcow2Path)),
    });
    assert.equal(staged.status, 204, await staged.text());
    const exited = new Promise<void>((r) => (first.proc.exitCode !== null || first.proc.signalCode !== null ? r() : first.proc.once('exit', () => r())));
    const imported = await api.request('POST', `/image/v2/images/${imageId}/import`, { method: { name: 'glance-direct' } });
    // The answer came from a server that had not yet done the work: the task crashed it afterwards.
    assert.equal(imported.status, 202, imported.text);
    await exited;
    assert.equal(first.proc.signalCode, 'SIGKILL', first.output());
    const second = await startPumice({ dataDir: first.dataDir, adminPassword: first.adminPassword });
    pumice = second;
    const api2 = await ApiClient.login(second.url, 'admin', second.adminPassword, 'admin');
    const image = await importEnded(api2, imageId);
    assert.equal(image.status, 'active', `${JSON.stringify(image)}\n${second.output()}`);
    assert.equal(image.virtual_size, 32 * 1024 * 1024);
    assert.equal(image.os_glance_failed_import, '');
    assert.match(second.output(), /image\.import .*running it again|task \d+ image\.import/);
  });
});

test('the HTTP idle timeout cuts a stalled client but not one waiting for a slow answer', async () => {
  const router = new Router();
  // A handler that reads its JSON body, then works longer than the idle timeout (a conversion, an import).
  router.post('/slow', async () => {
    await new Promise((r) => setTimeout(r, 1200));
    return { status: 200, body: { done: true } };
  }, { public: true });
  const server = createHttpServer({
    apps: [{ prefix: '/t', router, faultStyle: 'openstack' }],
    tokens: { validateToken: () => { throw new Error('no tokens here'); } },
    requestBodyBytesMax: 1 << 20,
    publicEndpoint: null,
    log: () => undefined,
    debug: false,
    rootDocument: () => ({}),
    idleTimeoutMs: 400,
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  try {
    for (let i = 0; i < 2; i++) {
      const r = await fetch(`http://127.0.0.1:${port}/t/slow`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ x: 'y'.repeat(1000) }) });
      assert.equal(r.status, 200, await r.text());
    }
    // A client that stops halfway through its body is still cut after the idle timeout.
    const started = Date.now();
    await new Promise<void>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.write('POST /t/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"x"'));
      s.on('error', () => undefined);
      s.on('close', () => resolve());
    });
    assert.ok(Date.now() - started < 3000, `a stalled body held the socket ${Date.now() - started} ms`);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
});
