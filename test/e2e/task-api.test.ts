/**
 * The admin API of the task engine (/pumice/v1/tasks) on a running Pumice:
 * list with filters and paging, show with locks and a masked payload, retry,
 * cancel (queued → cancelled, running → fenced), the 404/409/400 faults, and
 * the policy (a member is refused). Tasks are put in the table by a second
 * connection to the live database, in queues no runner serves, so the test
 * controls their states; every response is validated against its declared
 * schema by the server (PUMICE_VALIDATE_RESPONSES=1).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Db } from '../../src/db/db.ts';
import { ApiClient, memberProject, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

let pumice: PumiceProcess;
let admin: ApiClient;
let member: ApiClient;
let db: Db;
const ids: Record<string, number> = {};
type Sql = string | number | null;

function insertTask(kind: string, resource: string, state: string, payload: unknown, extra: Record<string, Sql> = {}): number {
  const now = new Date().toISOString();
  db.run(
    `INSERT INTO tasks (kind, resource_id, queue, payload, state, attempts, owner, lease_until, last_error, finished_at, created_at, updated_at)
     VALUES (?, ?, 'test:nobody', ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    kind, resource, JSON.stringify(payload), state, extra['attempts'] ?? 0, extra['owner'] ?? null, extra['lease_until'] ?? null,
    extra['last_error'] ?? null, state === 'failed' || state === 'cancelled' ? now : null, now, now,
  );
  const id = db.get<{ id: number }>('SELECT last_insert_rowid() AS id')!.id;
  db.run("INSERT INTO task_locks (task_id, resource_id, mode) VALUES (?, ?, 'write')", id, resource);
  return id;
}

before(async () => {
  pumice = await startPumice();
  admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  await memberProject(pumice.adminEnv, 'tasks-p', 'tasks-member');
  member = await ApiClient.login(pumice.url, 'tasks-member', 'pw-tasks-member', 'tasks-p');
  db = new Db(pumice.database);
  ids['failed'] = insertTask('volume.extend', 'vol-a', 'failed', { newSizeGiB: 2 }, { attempts: 3, last_error: 'librbd: ETIMEDOUT after 3 attempts' });
  ids['queued'] = insertTask('volume.delete', 'vol-b', 'queued', { cascade: true });
  ids['running'] = insertTask('compute.build', 'srv-c', 'running', { adminPass: 'hunter2', flavor: { vcpus: 1 }, nested: { rbd_keyring: 'AQB...' } }, { owner: 'host-x:1234', lease_until: Date.now() + 60_000 });
  db.run("INSERT INTO task_locks (task_id, resource_id, mode) VALUES (?, 'img-d', 'read')", ids['running']);
});

after(async () => {
  db?.close();
  if (!pumice) return;
  await pumice.stop();
  pumice.cleanup();
});

test('list: newest first, filters by state, kind and a locked resource, pages with a next link', async () => {
  const all = await admin.request('GET', '/pumice/v1/tasks');
  assert.equal(all.status, 200, all.text);
  const mine = all.body.tasks.filter((t: { queue: string }) => t.queue === 'test:nobody');
  assert.deepEqual(mine.map((t: { id: number }) => t.id), [ids['running'], ids['queued'], ids['failed']]);
  const failed = mine.find((t: { id: number }) => t.id === ids['failed']);
  assert.equal(failed.state, 'failed');
  assert.equal(failed.attempts, 3);
  assert.match(failed.last_error, /ETIMEDOUT/);
  assert.equal(failed.fenced, false);

  const byState = await admin.request('GET', '/pumice/v1/tasks?state=queued&kind=volume.delete');
  assert.deepEqual(byState.body.tasks.map((t: { id: number }) => t.id), [ids['queued']]);
  // A resource a task only reads finds it too.
  const byResource = await admin.request('GET', '/pumice/v1/tasks?resource=img-d');
  assert.deepEqual(byResource.body.tasks.map((t: { id: number }) => t.id), [ids['running']]);

  const page = await admin.request('GET', '/pumice/v1/tasks?limit=1');
  assert.equal(page.body.tasks.length, 1);
  const next = page.body.tasks_links.find((l: { rel: string }) => l.rel === 'next');
  assert.ok(next, JSON.stringify(page.body));
  const second = await admin.request('GET', next.href);
  assert.equal(second.status, 200, second.text);
  assert.ok(second.body.tasks[0].id < page.body.tasks[0].id);
});

test('show: every column, the locks, and the payload with credentials masked', async () => {
  const r = await admin.request('GET', `/pumice/v1/tasks/${ids['running']}`);
  assert.equal(r.status, 200, r.text);
  const task = r.body.task;
  assert.equal(task.owner, 'host-x:1234');
  assert.ok(Date.parse(task.lease_until) > Date.now());
  assert.deepEqual(task.locks, [{ resource_id: 'srv-c', mode: 'write' }, { resource_id: 'img-d', mode: 'read' }]);
  assert.equal(task.payload.adminPass, '***');
  assert.equal(task.payload.nested.rbd_keyring, '***');
  assert.deepEqual(task.payload.flavor, { vcpus: 1 });
  assert.ok(!r.text.includes('hunter2'));
});

test('retry a failed task; cancel a queued one and fence a running one; the states that cannot are 409s', async () => {
  const retried = await admin.request('POST', `/pumice/v1/tasks/${ids['failed']}/retry`);
  assert.equal(retried.status, 202, retried.text);
  assert.equal(retried.body.task.state, 'queued');
  assert.equal(retried.body.task.attempts, 0);
  const again = await admin.request('POST', `/pumice/v1/tasks/${ids['failed']}/retry`);
  assert.equal(again.status, 409);
  assert.match(again.body.conflictingRequest.message, /is queued: only a failed or cancelled task can be retried/);

  const cancelled = await admin.request('POST', `/pumice/v1/tasks/${ids['queued']}/cancel`, { reason: 'operator: wrong volume' });
  assert.equal(cancelled.status, 202, cancelled.text);
  assert.equal(cancelled.body.effect, 'cancelled');
  assert.equal(cancelled.body.task.state, 'cancelled');
  assert.equal(cancelled.body.task.last_error, 'operator: wrong volume');
  assert.equal(db.get<{ n: number }>('SELECT COUNT(*) AS n FROM task_locks WHERE task_id = ?', ids['queued'])!.n, 0, 'a cancelled task holds no locks');

  const fenced = await admin.request('POST', `/pumice/v1/tasks/${ids['running']}/cancel`);
  assert.equal(fenced.status, 202, fenced.text);
  assert.equal(fenced.body.effect, 'fenced');
  assert.equal(fenced.body.task.state, 'running', 'a running task stops at its next checkpoint, not here');
  assert.equal(fenced.body.task.fenced, true);

  const twice = await admin.request('POST', `/pumice/v1/tasks/${ids['queued']}/cancel`);
  assert.equal(twice.status, 409);
  assert.match(twice.text, /cancelled already/);
});

test('faults: unknown task 404, bad id, bad filter, unknown body key 400; a member is refused', async () => {
  const missing = await admin.request('GET', '/pumice/v1/tasks/999999');
  assert.equal(missing.status, 404);
  assert.match(missing.text, /Task 999999/);
  assert.equal((await admin.request('GET', '/pumice/v1/tasks/abc')).status, 400);
  const badState = await admin.request('GET', '/pumice/v1/tasks?state=exploded');
  assert.equal(badState.status, 400);
  assert.match(badState.text, /one of queued, running, done, failed, cancelled/);
  assert.equal((await admin.request('GET', '/pumice/v1/tasks?limit=0')).status, 400);
  assert.equal((await admin.request('POST', `/pumice/v1/tasks/${ids['failed']}/cancel`, { reason: 'x', force: true })).status, 400);
  for (const [method, path] of [['GET', '/pumice/v1/tasks'], ['GET', `/pumice/v1/tasks/${ids['failed']}`], ['POST', `/pumice/v1/tasks/${ids['failed']}/cancel`], ['POST', `/pumice/v1/tasks/${ids['failed']}/retry`]] as const) {
    const r = await member.request(method, path);
    assert.equal(r.status, 403, `${method} ${path}: ${r.status} ${r.text}`);
  }
  const anonymous = await fetch(`${pumice.url}/pumice/v1/tasks`);
  assert.equal(anonymous.status, 401);
});
