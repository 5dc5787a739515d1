/**
 * What an operator watches, on a real Pumice: `/healthcheck` (oslo.middleware's
 * format: 200/503, text or JSON, detail only for an admin), `/metrics` (admin
 * only; parsed with a strict Prometheus text-format parser; requests counted
 * by declared route, not raw path; backend, task and backup figures), a local
 * backend taken away (its directory replaced by a dangling link, as in
 * evacuate.test.ts) shows 503 and `pumice_backend_up 0`, and the log lines in
 * oslo.log's text format and in JSON (`[DEFAULT] log_format = json`,
 * `log_file`), checked against the structured events they come with.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, renameSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { ApiClient, readEvents, startPumice, type PumiceProcess } from '../helpers/pumice.ts';
import { parsePrometheusText, promValue, type PromFamily } from '../helpers/prometheus.ts';

const uuid = /[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}/;
let pumice: PumiceProcess;
let admin: ApiClient;

before(async () => {
  pumice = await startPumice({ config: '[DEFAULT]\nreport_interval = 1\nservice_down_time = 4\nquota_gigabytes = -1\n' });
  admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
});

after(async () => {
  if (!pumice) return;
  await pumice.stop();
  pumice.cleanup();
});

async function get(path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number; type: string; text: string }> {
  const res = await fetch(`${pumice.url}${path}`, { method, headers });
  return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() };
}

async function scrape(): Promise<Map<string, PromFamily>> {
  const res = await get('/metrics', { 'X-Auth-Token': admin.token });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.type, 'text/plain; version=0.0.4; charset=utf-8');
  return parsePrometheusText(res.text);
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; ;) {
    const value = await fn();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A member of a new project (not admin), through the Identity API. */
async function memberClient(): Promise<ApiClient> {
  const id = `/identity/v3`;
  const project = await admin.request('POST', `${id}/projects`, { project: { name: 'obs-project', domain_id: 'default' } });
  assert.equal(project.status, 201, project.text);
  const user = await admin.request('POST', `${id}/users`, { user: { name: 'obs-member', password: 'pw-obs-member', domain_id: 'default' } });
  assert.equal(user.status, 201, user.text);
  const roles = await admin.request('GET', `${id}/roles?name=member`);
  const roleId = roles.body.roles[0].id as string;
  const grant = await admin.request('PUT', `${id}/projects/${project.body.project.id}/users/${user.body.user.id}/roles/${roleId}`);
  assert.equal(grant.status, 204, grant.text);
  return ApiClient.login(pumice.url, 'obs-member', 'pw-obs-member', 'obs-project');
}

test('/healthcheck: 200 OK for a load balancer (text, JSON, HEAD 204), every check with its detail for an admin', async () => {
  const plain = await get('/healthcheck');
  assert.equal(plain.status, 200);
  assert.equal(plain.type, 'text/plain; charset=UTF-8');
  assert.equal(plain.text, 'OK\n');
  const json = await get('/healthcheck', { Accept: 'application/json' });
  assert.equal(json.type, 'application/json');
  assert.deepEqual(JSON.parse(json.text), { detailed: false, reasons: ['OK'] });
  const head = await get('/healthcheck', {}, 'HEAD');
  assert.equal(head.status, 204);
  const detailed = JSON.parse((await get('/healthcheck', { Accept: 'application/json', 'X-Auth-Token': admin.token })).text);
  assert.equal(detailed.detailed, true);
  assert.deepEqual(detailed.reasons.map((r: { class: string; reason: string }) => `${r.class}=${r.reason}`), ['database=OK', 'backend local=OK', 'task queue=OK']);
  // A member's token is no admin's: the anonymous answer.
  const member = await memberClient();
  assert.deepEqual(JSON.parse((await get('/healthcheck', { Accept: 'application/json', 'X-Auth-Token': member.token })).text), { detailed: false, reasons: ['OK'] });
  const refused = await get('/metrics', { 'X-Auth-Token': member.token });
  assert.equal(refused.status, 403, refused.text);
  assert.match(refused.text, /metrics:read/);
  const anonymous = await get('/metrics');
  assert.equal(anonymous.status, 401, anonymous.text);
  assert.match(anonymous.text, /admin token .* allow_anonymous/);
});

test('/metrics: requests by declared route and status with latency histograms, tasks, backends, backup and image bytes; strict text format', async () => {
  const created = await admin.request('POST', `${admin.volumeUrl}/volumes`, { volume: { size: 1, name: 'obs-volume' } });
  assert.equal(created.status, 202, created.text);
  const volumeId = created.body.volume.id as string;
  await admin.waitVolume(volumeId, ['available']);
  const backup = await admin.request('POST', `${admin.volumeUrl}/backups`, { backup: { volume_id: volumeId, name: 'obs-backup' } });
  assert.equal(backup.status, 202, backup.text);
  const backupId = backup.body.backup.id as string;
  await until('the backup', async () => (await admin.request('GET', `${admin.volumeUrl}/backups/${backupId}`)).body.backup.status === 'available');
  await admin.request('GET', `${admin.volumeUrl}/volumes/${volumeId}`);
  const image = await admin.request('POST', '/image/v2/images', { name: 'obs-image', disk_format: 'raw', container_format: 'bare' });
  assert.equal(image.status, 201, image.text);
  const imageBytes = Buffer.alloc(1 << 20, 7);
  const uploaded = await fetch(`${pumice.url}/image/v2/images/${image.body.id as string}/file`, { method: 'PUT', headers: { 'X-Auth-Token': admin.token, 'Content-Type': 'application/octet-stream' }, body: imageBytes });
  assert.equal(uploaded.status, 204, await uploaded.text());
  const downloaded = await fetch(`${pumice.url}/image/v2/images/${image.body.id as string}/file`, { headers: { 'X-Auth-Token': admin.token } });
  assert.equal((await downloaded.arrayBuffer()).byteLength, imageBytes.length);

  const m = await until('the download counted', async () => {
    const scraped = await scrape();
    return promValue(scraped, 'pumice_image_transfer_bytes_total', { direction: 'download' }) ? scraped : undefined;
  }, 5000);
  const requests = m.get('pumice_http_requests_total')!;
  assert.equal(requests.type, 'counter');
  for (const s of requests.samples) assert.doesNotMatch(s.labels['route']!, uuid, `a raw path became a label: ${JSON.stringify(s.labels)}`);
  const volumesRoute = requests.samples.find((s) => s.labels['method'] === 'POST' && /^\/volume\/v3\/volumes$/.test(s.labels['route']!));
  assert.ok(volumesRoute, JSON.stringify(requests.samples.map((s) => s.labels)));
  assert.equal(volumesRoute.labels['status'], '202');
  assert.equal(volumesRoute.value, 1);
  const showRoute = requests.samples.find((s) => s.labels['method'] === 'GET' && /^\/volume\/v3\/volumes\/:\w+$/.test(s.labels['route']!) && s.labels['status'] === '200');
  assert.ok(showRoute && showRoute.value >= 2, 'waitVolume and the last GET are one route');
  const histogram = m.get('pumice_http_request_duration_seconds')!;
  assert.equal(histogram.type, 'histogram');
  assert.equal(promValue(m, 'pumice_http_request_duration_seconds_count', { method: 'POST', route: volumesRoute.labels['route']! }), 1);
  assert.ok(promValue(m, 'pumice_http_request_duration_seconds_sum', { method: 'POST', route: volumesRoute.labels['route']! })! > 0);

  assert.equal(promValue(m, 'pumice_backend_up', { backend: 'local' }), 1);
  assert.ok(promValue(m, 'pumice_backend_capacity_total_bytes', { backend: 'local' })! > 0);
  assert.ok(promValue(m, 'pumice_backend_capacity_free_bytes', { backend: 'local' })! > 0);
  assert.equal(promValue(m, 'pumice_backend_provisioned_bytes', { backend: 'local' }), 1024 ** 3);
  assert.equal(promValue(m, 'pumice_task_queue_depth', { kind: 'volume.create' }), 0);
  assert.equal(promValue(m, 'pumice_task_oldest_queued_age_seconds', { kind: 'volume.create' }), 0);
  assert.equal(promValue(m, 'pumice_tasks_finished_total', { kind: 'volume.create', outcome: 'done' }), 1);
  const stored = readEvents(pumice.dataDir, 'backup.written').find((e) => e['backup_id'] === backupId)?.['stored_bytes'];
  assert.equal(typeof stored, 'number');
  assert.equal(promValue(m, 'pumice_backup_bytes_total'), stored);
  assert.equal(promValue(m, 'pumice_image_transfer_bytes_total', { direction: 'upload' }), imageBytes.length);
  assert.equal(promValue(m, 'pumice_image_transfer_bytes_total', { direction: 'download' }), imageBytes.length);
  assert.equal(promValue(m, 'pumice_nbd_connections'), 0);
  assert.equal(m.get('pumice_compute_instances')!.type, 'gauge');
  for (const f of m.values()) assert.ok(f.help, `${f.name} has HELP`);
});

test('a local backend taken away: /healthcheck 503 naming it (the reason only for an admin), pumice_backend_up 0; back: 200', async () => {
  const volumeDir = join(pumice.dataDir, 'volumes', 'local');
  renameSync(volumeDir, `${volumeDir}.away`);
  symlinkSync('/nonexistent-pumice-obs-directory', volumeDir);
  try {
    const down = await until('a 503', async () => {
      const r = await get('/healthcheck');
      return r.status === 503 ? r : undefined;
    });
    assert.equal(down.text, 'backend local: FAILED\n', 'a load balancer learns which check failed, not where files are');
    const detail = JSON.parse((await get('/healthcheck', { Accept: 'application/json', 'X-Auth-Token': admin.token })).text);
    const local = detail.reasons.find((r: { class: string }) => r.class === 'backend local');
    assert.equal(local.reason, 'FAILED');
    assert.match(local.details, /^down: .*(nonexistent-pumice-obs-directory|ENOENT)/);
    assert.equal((await get('/healthcheck', {}, 'HEAD')).status, 503);
    assert.equal(promValue(await scrape(), 'pumice_backend_up', { backend: 'local' }), 0);
    assert.match(pumice.output(), /^\S+ \S+ \d+ WARNING pumice \[-\] backend \[local\] is down: /m);
  } finally {
    rmSync(volumeDir);
    renameSync(`${volumeDir}.away`, volumeDir);
  }
  await until('200 again', async () => (await get('/healthcheck')).status === 200);
  assert.equal(promValue(await scrape(), 'pumice_backend_up', { backend: 'local' }), 1);
});

test('text log lines: TIMESTAMP PID LEVEL module [req-id user project] message; a task\'s state change carries the request that queued it; a scheduler rejection is a WARNING', async () => {
  const created = await admin.request('POST', `${admin.volumeUrl}/volumes`, { volume: { size: 1, name: 'obs-logged' } });
  const requestId = created.headers.get('x-openstack-request-id')!;
  const volumeId = created.body.volume.id as string;
  await admin.waitVolume(volumeId, ['available']);
  const event = readEvents(pumice.dataDir, 'state.transition').find((e) => e['id'] === volumeId && e['to'] === 'available');
  assert.equal(event?.request_id, requestId, 'the structured event');
  const line = pumice.output().split('\n').find((l) => l.includes(`volume ${volumeId}: creating -> available`));
  assert.ok(line, 'the state change is logged');
  const m = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (\d+) (INFO) (pumice\.state) \[(\S+) (\S+) (\S+)\] (.*)$/.exec(line);
  assert.ok(m, line);
  assert.equal(m[2], String(pumice.proc.pid));
  assert.deepEqual([m[5], m[6], m[7]], [requestId, admin.userId, admin.projectId], 'the request, user and project that queued the task');

  const huge = await admin.request('POST', `${admin.volumeUrl}/volumes`, { volume: { size: 900000, name: 'obs-too-big' } });
  assert.equal(huge.status, 202, huge.text);
  const rejected = readEvents(pumice.dataDir, 'scheduler.rejected').find((e) => e['id'] === huge.body.volume.id);
  assert.ok(rejected, 'the structured event');
  assert.equal(rejected.request_id, huge.headers.get('x-openstack-request-id'));
  assert.match(String(rejected['reason']), /CapacityFilter rejected backend/);
  const warning = pumice.output().split('\n').find((l) => l.includes(`volume ${huge.body.volume.id as string} of project`));
  assert.match(warning ?? '', new RegExp(`^\\S+ \\S+ \\d+ WARNING pumice \\[${huge.headers.get('x-openstack-request-id')} ${admin.userId} ${admin.projectId}\\] scheduler: .* not placed: .*CapacityFilter`));
  // DEBUG lines (the access log, a backup's progress) only with [DEFAULT] debug = true.
  assert.doesNotMatch(pumice.output(), / DEBUG /);
  assert.doesNotMatch(pumice.output(), /backup [0-9a-f-]{36}: \d+% \(/, 'progress is DEBUG');
});

test('[DEFAULT] log_format = json, log_file and debug: one JSON object per line in a 0600 file, DEBUG included; SIGHUP reopens it', async () => {
  const json = await startPumice({ config: '[DEFAULT]\nlog_format = json\nlog_file = LOGFILE\ndebug = true\n'.replace('LOGFILE', join(pumice.dataDir, '..', `obs-json-${process.pid}.log`)) });
  const logFile = join(pumice.dataDir, '..', `obs-json-${process.pid}.log`);
  try {
    const client = await ApiClient.login(json.url, 'admin', json.adminPassword, 'admin');
    const created = await client.request('POST', `${client.volumeUrl}/volumes`, { volume: { size: 1, name: 'obs-json' } });
    const requestId = created.headers.get('x-openstack-request-id')!;
    await client.waitVolume(created.body.volume.id as string, ['available']);
    assert.equal(statSync(logFile).mode & 0o777, 0o600);
    const lines = readFileSync(logFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const l of lines) assert.deepEqual(Object.keys(l).slice(0, 8), ['timestamp', 'pid', 'level', 'module', 'request_id', 'user_id', 'project_id', 'message'], JSON.stringify(l));
    const change = lines.find((l) => l['message'] === `volume ${created.body.volume.id as string}: creating -> available`);
    assert.ok(change, 'the state change');
    assert.deepEqual([change['level'], change['module'], change['request_id'], change['pid']], ['INFO', 'pumice.state', requestId, json.proc.pid]);
    assert.ok(lines.some((l) => l['level'] === 'DEBUG' && l['module'] === 'pumice.http' && l['request_id'] === requestId), 'the access line at DEBUG');
    assert.doesNotMatch(json.output(), /"level"|pumice\.state/, 'nothing of the log on stderr');
    renameSync(logFile, `${logFile}.1`);
    json.proc.kill('SIGHUP');
    await until('SIGHUP handled', async () => /SIGHUP: events file reopened/.test(json.output()));
    await client.request('GET', `${client.volumeUrl}/volumes`);
    await until('the new file', async () => {
      try {
        return readFileSync(logFile, 'utf8').includes('pumice.http');
      } catch {
        return false;
      }
    });
  } finally {
    await json.stop();
    json.cleanup();
    rmSync(logFile, { force: true });
    rmSync(`${logFile}.1`, { force: true });
  }
});
