import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { Db } from '../../src/db/db.ts';
import { IllegalTransitionError, resourceStates } from '../../src/state/owner.ts';
import { backupTransitions, imageTransitions, snapshotTransitions, volumeTransitions } from '../../src/state/tables.ts';

/** Glance's image statuses (api-ref: queued, saving, uploading, importing, active, deactivated, killed, deleted, pending_delete; Pumice never soft-deletes, so no pending_delete). */
const imageStatuses = ['queued', 'saving', 'uploading', 'importing', 'active', 'killed', 'deactivated', 'deleted'] as const;
import { snapshotStatuses, volumeStatuses } from '../../src/volume/states.ts';
import { backupStatuses } from '../../src/backup/backups.ts';
import { TaskQueue } from '../../src/tasks/queue.ts';

function insertVolume(db: Db, id: string, status: string): void {
  db.run(
    "INSERT INTO volumes (id, project_id, user_id, size_gib, status, availability_zone, created_at) VALUES (?, 'p', 'u', 1, ?, 'nova', ?)",
    id, status, new Date().toISOString(),
  );
}
const statusOf = (db: Db, id: string) => db.get<{ status: string }>('SELECT status FROM volumes WHERE id = ?', id)?.status;

test('the transition tables are complete: every status has a row, every target is a status', () => {
  for (const [table, statuses] of [[volumeTransitions, volumeStatuses], [snapshotTransitions, snapshotStatuses], [backupTransitions, backupStatuses], [imageTransitions, imageStatuses]] as const) {
    assert.deepEqual(Object.keys(table).sort(), [...statuses].sort());
    for (const targets of Object.values(table) as string[][]) for (const t of targets) assert.ok((statuses as readonly string[]).includes(t), t);
  }
});

test('transition is a compare-and-set; a miss changes nothing and says so', () => {
  const db = new Db(':memory:');
  const { volumes } = resourceStates(db);
  insertVolume(db, 'v1', 'creating');
  assert.equal(volumes.transition('v1', ['creating'], 'available', { launched_at: 'now' }), true);
  assert.equal(statusOf(db, 'v1'), 'available');
  assert.equal(db.get<{ launched_at: string }>('SELECT launched_at FROM volumes WHERE id = ?', 'v1')!.launched_at, 'now');
  // Another writer moved it first: the second CAS misses.
  assert.equal(volumes.transition('v1', ['creating'], 'error'), false);
  assert.equal(statusOf(db, 'v1'), 'available');
  assert.equal(volumes.transition('gone', ['available'], 'deleting'), false);
});

test('an illegal transition throws under tests, and in production is refused with a logged error, the row left alone', () => {
  const strictDb = new Db(':memory:');
  insertVolume(strictDb, 'v1', 'deleting');
  // Tests run strict by default (node --test sets NODE_TEST_CONTEXT).
  assert.throws(() => resourceStates(strictDb).volumes.transition('v1', ['deleting'], 'available'), IllegalTransitionError);
  assert.equal(statusOf(strictDb, 'v1'), 'deleting');

  const db = new Db(':memory:');
  const logged: string[] = [];
  const { volumes } = resourceStates(db, { strict: false, log: (m) => logged.push(m) });
  insertVolume(db, 'v1', 'deleting');
  assert.equal(volumes.transition('v1', ['deleting'], 'available'), false);
  assert.equal(statusOf(db, 'v1'), 'deleting');
  assert.match(logged[0]!, /^ERROR illegal volume transition deleting → available for volume v1/);
});

test('os-reset_status (force) sets any status, cancels queued tasks and fences the running one, which stops without writing', async () => {
  const db = new Db(':memory:');
  const queue = new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 4, attemptsMax: 3, pollIntervalMs: 50 });
  const { volumes } = resourceStates(db);
  insertVolume(db, 'v1', 'available');
  volumes.transition('v1', ['available'], 'extending');
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const failures: string[] = [];
  let started!: () => void;
  const running = new Promise<void>((r) => (started = r));
  queue.register('volume.extend', async (task) => {
    started();
    await gate;
    task.checkpoint('extend.done');
    task.complete(() => volumes.transition('v1', ['extending'], 'available'));
  }, (_t, reason) => failures.push(reason));
  queue.register('later', async () => assert.fail('a cancelled task ran'), (_t, reason) => failures.push(reason));
  queue.start(['q']);
  queue.enqueue('volume.extend', 'v1', 'q');
  await running;
  queue.enqueue('later', 'other', 'q', {}, { locks: { write: ['v1'] } });
  assert.equal(volumes.force('v1', 'error', {}, 'cancelled by os-reset_status'), true);
  release();
  await new Promise((r) => setTimeout(r, 20));
  await queue.whenIdle();
  assert.equal(statusOf(db, 'v1'), 'error', "the admin's choice stands");
  assert.deepEqual(failures, [], 'no failure handler runs for a fenced or cancelled task');
  const tasks = db.all<{ kind: string; state: string; last_error: string }>('SELECT kind, state, last_error FROM tasks ORDER BY id');
  assert.deepEqual(tasks.map((t) => [t.kind, t.state]), [['volume.extend', 'cancelled'], ['later', 'cancelled']]);
  assert.equal(db.get<{ n: number }>('SELECT COUNT(*) AS n FROM task_locks')!.n, 0);
  await queue.stop();
});

test('every status write of volumes, snapshots, backups and images goes through the state owner', () => {
  // Every source file, not a list: a new module that writes a status by hand is found too.
  const root = new URL('../../src/', import.meta.url);
  const files = (readdirSync(root, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts') && !f.startsWith('state/'));
  const raw = /UPDATE\s+(volumes|snapshots|backups|images)\s+SET\b[^;'"`]*?\bstatus\s*=/g;
  const found: string[] = [];
  for (const file of files) {
    const text = readFileSync(new URL(file, root), 'utf8');
    for (const m of text.matchAll(raw)) found.push(`${file}: ${m[0].slice(0, 80)}`);
  }
  assert.deepEqual(found, [], 'status written without the state owner');
});
