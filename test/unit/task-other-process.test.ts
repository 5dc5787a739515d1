/**
 * SQLite, two processes on one database file: a task that another process queues (`pumice tasks
 * retry`, a CLI) is claimed within moments, not at the server's next poll (2 s in a server; a
 * minute here). Two connections in one test process stand for the two processes: SQLite tells a
 * connection about commits of the others only (PRAGMA data_version).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Db } from '../../src/db/db.ts';
import { TaskQueue } from '../../src/tasks/queue.ts';

test('a task queued through another connection to the file runs at once, though the poll is a minute', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pumice-other-process-'));
  const serverDb = new Db(join(dir, 'pumice.db'));
  const cliDb = new Db(join(dir, 'pumice.db'));
  const quiet = () => undefined;
  const server = new TaskQueue({ db: serverDb, log: quiet, concurrencyPerQueue: 2, attemptsMax: 1, pollIntervalMs: 60_000 });
  const cli = new TaskQueue({ db: cliDb, log: quiet, concurrencyPerQueue: 2, attemptsMax: 1, pollIntervalMs: 60_000 });
  t.after(async () => {
    await server.stop();
    serverDb.close();
    cliDb.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const ran: { id: string; afterMs: number }[] = [];
  let queuedAt = 0;
  let ranAll!: () => void;
  const done = new Promise<void>((resolve) => (ranAll = resolve));
  server.register('unit.work', async (task) => {
    ran.push({ id: task.resourceId, afterMs: Date.now() - queuedAt });
    if (ran.length === 2) ranAll();
  }, quiet);
  server.start(['q']);
  await server.whenIdle();
  // Past the start's claim pass: only a wake (or the minute's poll) finds what is queued now.
  await new Promise((r) => setTimeout(r, 300));
  queuedAt = Date.now();
  cli.enqueue('unit.work', 'r1', 'q');
  cli.enqueue('unit.work', 'r2', 'q');
  await Promise.race([done, new Promise((_, reject) => setTimeout(() => reject(new Error(`ran ${JSON.stringify(ran)} of 2 within 10 s: nothing woke the runner`)), 10_000))]);
  assert.deepEqual(ran.map((r) => r.id).sort(), ['r1', 'r2']);
  t.diagnostic(`claimed after ${ran.map((r) => r.afterMs).join(', ')} ms`);
});
