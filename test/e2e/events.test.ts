/**
 * Structured events (src/events.ts) on a running Pumice: every API request is
 * one `http.request` line with its request id (the `x-openstack-request-id`
 * the client got), status, duration and caller; the state changes a request
 * makes carry its request id; a task's life (queued, claimed, done; retried or
 * failed elsewhere) is recorded with its id, kind, resource and the request id
 * of the call that queued it; the file is 0600 in
 * a 0700 directory; and a kill -9 loses no event written before a reply left
 * (events are buffered, and flushed before each reply).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ApiClient, readEvents, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

let pumice: PumiceProcess;
let api: ApiClient;

before(async () => {
  pumice = await startPumice();
  api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
});

after(async () => {
  if (!pumice) return;
  await pumice.stop();
  pumice.cleanup();
});

test('a volume create: the request, the state changes it made and its task, joined by the request id and the task id', async () => {
  const created = await api.request('POST', `${api.volumeUrl}/volumes`, { volume: { size: 1, name: 'evented' } });
  assert.equal(created.status, 202, created.text);
  const requestId = created.headers.get('x-openstack-request-id');
  assert.match(requestId ?? '', /^req-[0-9a-f-]{36}$/);
  const volumeId = created.body.volume.id as string;
  await api.waitVolume(volumeId, ['available']);

  const request = readEvents(pumice.dataDir, 'http.request').find((e) => e.request_id === requestId);
  assert.ok(request, 'the request is recorded');
  assert.equal(request['method'], 'POST');
  assert.match(String(request['path']), /\/volume\/v3\/[0-9a-f]{32}\/volumes$/);
  assert.equal(request['status'], 202);
  assert.equal(request['user_id'], api.userId);
  assert.equal(request['project_id'], api.projectId);
  assert.equal(typeof request['duration_ms'], 'number');

  // task.done is written just after the transaction that made the volume available: it may trail the status by a moment.
  const taskEvents = () => readEvents(pumice.dataDir).filter((e) => e.event.startsWith('task.') && e['resource_id'] === volumeId);
  for (const deadline = Date.now() + 10_000; !taskEvents().some((e) => e.event === 'task.done') && Date.now() < deadline;) await new Promise((r) => setTimeout(r, 50));
  const tasks = taskEvents();
  assert.deepEqual(tasks.map((e) => e.event), ['task.queued', 'task.claimed', 'task.done'], JSON.stringify(tasks));
  assert.equal(new Set(tasks.map((e) => e['task_id'])).size, 1, 'one task');
  assert.equal(tasks[0]!['kind'], 'volume.create');
  // The task runs later, outside the request, and still carries the request id of the call that queued it.
  assert.deepEqual(tasks.map((e) => e.request_id), [requestId, requestId, requestId]);
  const toAvailable = readEvents(pumice.dataDir, 'state.transition').find((e) => e['id'] === volumeId && e['to'] === 'available');
  assert.ok(toAvailable, 'the task moved the volume to available');
  assert.equal(toAvailable['moved'], true);
  assert.deepEqual(toAvailable['from'], ['creating']);

  // A request that changes a status directly carries its request id into the state event.
  const reset = await api.request('POST', `${api.volumeUrl}/volumes/${volumeId}/action`, { 'os-reset_status': { status: 'error' } });
  assert.equal(reset.status, 202, reset.text);
  const forced = readEvents(pumice.dataDir, 'state.forced').find((e) => e['id'] === volumeId);
  assert.ok(forced, 'the reset is recorded');
  assert.equal(forced.request_id, reset.headers.get('x-openstack-request-id'));
  assert.equal(forced['to'], 'error');

  const refused = await api.request('GET', `${api.volumeUrl}/volumes/00000000-0000-4000-8000-000000000000`);
  assert.equal(refused.status, 404);
  assert.equal(readEvents(pumice.dataDir, 'http.request').find((e) => e.request_id === refused.headers.get('x-openstack-request-id'))?.['status'], 404);
});

test('the events file is 0600 in a 0700 directory, and a kill -9 loses no event already written', async () => {
  const file = join(pumice.dataDir, 'log', 'events.jsonl');
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.equal(statSync(join(pumice.dataDir, 'log')).mode & 0o777, 0o700);
  const last = await api.request('GET', `${api.volumeUrl}/volumes`);
  const requestId = last.headers.get('x-openstack-request-id');
  await pumice.kill9();
  assert.ok(readEvents(pumice.dataDir, 'http.request').some((e) => e.request_id === requestId), 'the last answered request is on disk after kill -9');
  pumice = await startPumice({ dataDir: pumice.dataDir, adminPassword: pumice.adminPassword });
  api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  const again = await api.request('GET', `${api.volumeUrl}/volumes`);
  const seen = readEvents(pumice.dataDir, 'http.request');
  assert.ok(seen.some((e) => e.request_id === again.headers.get('x-openstack-request-id')), `the restarted Pumice appends to the same file: ${again.status} ${again.headers.get('x-openstack-request-id')} not in ${JSON.stringify(seen.slice(-2))}`);
});

test('SIGHUP (a log rotation) reopens the events file by name, 0600 again, and the server keeps serving', async () => {
  const file = join(pumice.dataDir, 'log', 'events.jsonl');
  renameSync(file, `${file}.1`);
  pumice.proc.kill('SIGHUP');
  for (const deadline = Date.now() + 10_000; !/SIGHUP: events file reopened/.test(pumice.output()) && Date.now() < deadline;) await new Promise((r) => setTimeout(r, 50));
  assert.match(pumice.output(), /SIGHUP: events file reopened; configuration changes .* take effect at the next restart/);
  const after = await api.request('GET', `${api.volumeUrl}/volumes`);
  assert.equal(after.status, 200, 'still serving after SIGHUP');
  assert.equal(pumice.proc.exitCode, null);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(readEvents(pumice.dataDir, 'http.request').map((e) => e.request_id), [after.headers.get('x-openstack-request-id')], 'the new file starts with the next event');
});
