import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Db } from '../../src/db/db.ts';
import { TaskQueue } from '../../src/tasks/queue.ts';

function makeQueue(db: Db, attemptsMax = 3) {
  return new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 2, attemptsMax, pollIntervalMs: 50 });
}

test('tasks run, finished tasks leave the table, failures call the failure handler once', async () => {
  const db = new Db(':memory:');
  const queue = makeQueue(db);
  const ran: string[] = [];
  const failed: string[] = [];
  queue.register('ok', async (t) => void ran.push(t.resourceId), () => failed.push('ok?'));
  queue.register('bad', async () => { throw new Error('disk on fire'); }, (t, reason) => failed.push(`${t.resourceId}: ${reason}`));
  queue.start(['q']);
  queue.enqueue('ok', 'a', 'q');
  queue.enqueue('bad', 'b', 'q');
  queue.enqueue('ok', 'c', 'other-queue');
  await new Promise((r) => setTimeout(r, 50));
  await queue.whenIdle();
  assert.deepEqual(ran, ['a']);
  assert.deepEqual(failed, ['b: disk on fire']);
  const rows = db.all<{ resource_id: string; state: string }>('SELECT resource_id, state FROM tasks ORDER BY id');
  assert.deepEqual(rows, [{ resource_id: 'b', state: 'failed' }, { resource_id: 'c', state: 'queued' }]);
  await queue.stop();
});

test('tasks of one resource run in order, never two at once', async () => {
  const db = new Db(':memory:');
  const queue = makeQueue(db);
  const events: string[] = [];
  queue.register('step', async (t) => {
    events.push(`start ${(t.payload as { n: number }).n}`);
    await new Promise((r) => setTimeout(r, 10));
    events.push(`end ${(t.payload as { n: number }).n}`);
  }, () => undefined);
  queue.start(['q']);
  for (let n = 0; n < 3; n++) queue.enqueue('step', 'same', 'q', { n });
  await new Promise((r) => setTimeout(r, 20));
  await queue.whenIdle();
  assert.deepEqual(events, ['start 0', 'end 0', 'start 1', 'end 1', 'start 2', 'end 2']);
  await queue.stop();
});

test('a task left running by a dead process is re-run; after attemptsMax it fails with a reason', async () => {
  const db = new Db(':memory:');
  const now = new Date().toISOString();
  db.run("INSERT INTO tasks (kind, resource_id, queue, payload, state, attempts, owner, created_at, updated_at) VALUES ('k', 'r1', 'q', '{}', 'running', 1, 'dead', ?, ?)", now, now);
  db.run("INSERT INTO tasks (kind, resource_id, queue, payload, state, attempts, owner, created_at, updated_at) VALUES ('k', 'r2', 'q', '{}', 'running', 3, 'dead', ?, ?)", now, now);
  const queue = makeQueue(db, 3);
  const ran: string[] = [];
  const failed: string[] = [];
  queue.register('k', async (t) => void ran.push(t.resourceId), (t, reason) => failed.push(`${t.resourceId}: ${reason}`));
  queue.start(['q']);
  await new Promise((r) => setTimeout(r, 20));
  await queue.whenIdle();
  assert.deepEqual(ran, ['r1']);
  assert.equal(failed.length, 1);
  assert.match(failed[0]!, /^r2: the task was interrupted 3 times/);
  await queue.stop();
});
