/**
 * A task's owner name carries its boot and pid namespace (issue 16): a runner takes over a
 * task of a dead process of its own host at once only when that process lived in the same pid
 * namespace; a pid of another namespace (a container sharing the hostname) waits for the lease.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { Db } from '../../src/db/db.ts';
import { TaskQueue } from '../../src/tasks/queue.ts';
import { ManualClock } from '../../src/tasks/crash.ts';

async function until(probe: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("a dead pid of the same host is taken over at once only in this pid namespace; another namespace's waits for its lease", async () => {
  const db = new Db(':memory:');
  const clock = new ManualClock(1_000_000);
  const queue = new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 4, attemptsMax: 3, pollIntervalMs: 20, clock });
  const [host, , , space] = queue.runnerId.split(':');
  assert.equal(host, hostname());
  assert.match(space ?? '', /^[0-9a-f]{8}$/, `the owner names its pid namespace: ${queue.runnerId}`);
  const insert = (resourceId: string, owner: string) =>
    db.run(
      "INSERT INTO tasks (kind, resource_id, queue, payload, state, attempts, owner, lease_until, created_at, updated_at) VALUES ('k', ?, 'q', '{}', 'running', 1, ?, ?, 'now', 'now')",
      resourceId, owner, clock.now() + 30_000,
    );
  const otherSpace = space === '00000000' ? '11111111' : '00000000';
  insert('same-namespace', `${hostname()}:999999999:abcd:${space}`);
  insert('other-namespace', `${hostname()}:999999999:abcd:${otherSpace}`);
  const ran: string[] = [];
  queue.register('k', async (t) => void ran.push(t.resourceId), () => undefined);
  queue.start(['q']);
  await until(() => ran.length === 1, 'the dead owner of this namespace to be taken over');
  await new Promise((r) => setTimeout(r, 80));
  assert.deepEqual(ran, ['same-namespace'], 'pid 999999999 of another namespace may be alive: its lease holds');
  clock.advance(30_001);
  await until(() => ran.length === 2, 'the expired lease to be taken over');
  await queue.stop();
});
