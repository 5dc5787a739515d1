/**
 * Tasks queued by another host are claimed when their transaction commits (run under
 * scripts/with-postgres.sh): PostgreSQL NOTIFYs every host that LISTENs, and a runner serving the
 * task's queue claims it at once, not at its next poll. Before, a volume host found an API host's
 * task only at its poll (2 s): stop 26's lone-API-host figure, 12.3 create/delete cycles per second
 * at c32, each waiting for polls.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Db } from '../../src/db/db.ts';
import { TaskQueue } from '../../src/tasks/queue.ts';
import { testDatabaseUrl } from '../helpers/pumice.ts';

const server = process.env['PUMICE_TEST_DATABASE'];
const scratch = mkdtempSync(join(tmpdir(), 'pumice-pgnotify-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

test("a task queued on one host's connection is run by a runner on another at once, with a poll of a minute", { skip: server ? false : 'needs PostgreSQL: run under scripts/with-postgres.sh' }, async () => {
  const url = (await testDatabaseUrl(scratch))!;
  // Two connections, as two hosts have: the API host queues, the volume host runs.
  const apiDb = new Db(url);
  const volumeDb = new Db(url);
  const quiet = () => undefined;
  const apiHost = new TaskQueue({ db: apiDb, log: quiet, concurrencyPerQueue: 1, attemptsMax: 1, pollIntervalMs: 60_000 });
  const volumeHost = new TaskQueue({ db: volumeDb, log: quiet, concurrencyPerQueue: 4, attemptsMax: 1, pollIntervalMs: 60_000 });
  const ran: { id: string; afterMs: number }[] = [];
  let queuedAt = 0;
  let allRan!: () => void;
  const done = new Promise<void>((resolve) => (allRan = resolve));
  volumeHost.register('unit.work', async (task) => {
    ran.push({ id: task.resourceId, afterMs: Date.now() - queuedAt });
    if (ran.length === 3) allRan();
  }, quiet);
  try {
    // The volume host's start runs its first claim pass; what is queued after waits for a NOTIFY (or a minute).
    volumeHost.start(['backend-a']);
    await volumeHost.whenIdle();
    await new Promise((r) => setTimeout(r, 200));
    queuedAt = Date.now();
    apiDb.transaction(() => {
      apiHost.enqueue('unit.work', 'r1', 'backend-a');
      apiHost.enqueue('unit.work', 'r2', 'backend-a');
    });
    apiHost.enqueue('unit.work', 'r3', 'backend-a');
    await Promise.race([done, new Promise((_, reject) => setTimeout(() => reject(new Error(`ran ${JSON.stringify(ran)} of 3 within 10 s: no NOTIFY woke the runner`)), 10_000))]);
    assert.deepEqual(ran.map((r) => r.id).sort(), ['r1', 'r2', 'r3']);
    // A queue the runner does not serve wakes nothing of it (and its task stays queued).
    apiHost.enqueue('unit.work', 'other', 'backend-b');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(ran.length, 3);
    assert.equal(volumeDb.get<{ state: string }>('SELECT state FROM tasks WHERE resource_id = ?', 'other')!.state, 'queued');
  } finally {
    await volumeHost.stop();
    await apiHost.stop();
    apiDb.close();
    volumeDb.close();
  }
});
