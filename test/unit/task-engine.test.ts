/**
 * Task engine v2: operation locks between conflicting operations, leases
 * between runners, typed retries with backoff, failure handlers that cannot
 * half-apply, chains.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Db } from '../../src/db/db.ts';
import { parseConfigText } from '../../src/config/config.ts';
import { RbdError } from '../../src/ceph/rbd.ts';
import { ManualClock } from '../../src/tasks/crash.ts';
import { TransientError, classifyError } from '../../src/tasks/errors.ts';
import { TaskQueue } from '../../src/tasks/queue.ts';
import { purgeExpired } from '../../src/tasks/retention.ts';
import { runCli as runTasksCli } from '../../src/tasks/cli.ts';
import { VolumeManager } from '../../src/volume/manager.ts';
import { Quotas } from '../../src/volume/quotas.ts';
import { VolumeService } from '../../src/volume/volumes.ts';
import type { AuthContext } from '../../src/http/router.ts';
import { FakeBackend } from '../helpers/fake-backend.ts';

const member: AuthContext = {
  tokenId: 't', userId: 'u', userName: 'u', userDomainId: 'default', projectId: 'p1', projectName: 'p1', projectDomainId: 'default',
  domainId: null, roles: ['member', 'reader'], isAdmin: false, expiresAt: '9999', issuedAt: '0', methods: ['password'], auditId: 'a',
};
const admin: AuthContext = { ...member, roles: ['admin', 'member', 'reader'], isAdmin: true };

/** Waits until `condition` holds (polling; the machine may be busy), failing after timeoutMs. */
async function until(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
const taskRunning = (db: Db, kind: string) => () => db.get('SELECT 1 FROM tasks WHERE kind = ? AND state = ?', kind, 'running') !== undefined;

async function setup() {
  const db = new Db(':memory:');
  const config = parseConfigText('[DEFAULT]\nenabled_backends = a\n[a]\nvolume_driver = local\nvolume_backend_name = a\n', '/nonexistent');
  const logs: string[] = [];
  const queue = new TaskQueue({ db, log: (m) => logs.push(m), concurrencyPerQueue: 8, attemptsMax: 5, pollIntervalMs: 50, retry: { baseMs: 5, capMs: 20 } });
  const fake = new FakeBackend('a');
// The fake backend never exports over NBD: no exporter is needed.
  const manager = new VolumeManager(db, config, queue, null as never, () => undefined, () => fake);
  const service = new VolumeService(db, config, queue, manager, new Quotas(db, config.DEFAULT));
  service.ensureDefaultType();
  await manager.start();
  const settle = async () => {
    await new Promise((r) => setTimeout(r, 5));
    await queue.whenIdle();
  };
  /** Holds the given operations (all when none given) until the returned function is called. */
  const gated = (...ops: string[]) => {
    let open!: () => void;
    fake.gate = new Promise<void>((r) => (open = r));
    fake.gateOnly = ops.length ? new Set(ops) : null;
    return () => {
      fake.gate = null;
      fake.gateOnly = null;
      open();
    };
  };
  const tick = () => new Promise((r) => setTimeout(r, 30));
  return { db, service, manager, queue, fake, settle, gated, tick, logs };
}

test('clone vs delete of the source: the delete waits for the clone', async () => {
  const { service, fake, settle, gated, tick, manager, db } = await setup();
  const source = service.createVolume(member, { size: 1 }, 'r');
  await settle();
  const open = gated('clone');
  const clone = service.createVolume(member, { sourceVolumeId: source.id }, 'r');
  await until(taskRunning(db, 'volume.create'), 'the clone to start');
  service.deleteVolume(member, source.id, { cascade: false, force: false });
  await tick();
  assert.ok(fake.volumes.has(source.id), 'the source is still there while the clone runs');
  open();
  await settle();
  assert.deepEqual(fake.calls.slice(-2), [`clone ${clone.id}`, `delete ${source.id}`]);
  assert.equal(service.volume(member, clone.id).status, 'available');
  assert.ok(!fake.volumes.has(source.id));
  await manager.stop();
});

test('snapshot vs extend sent together: the snapshot is taken before the resize and records the size it has', async () => {
  const { service, fake, settle, gated, tick, manager, db } = await setup();
  const volume = service.createVolume(member, { size: 1 }, 'r');
  await settle();
  const open = gated('snapshot');
  const snap = service.createSnapshot(member, { volumeId: volume.id, force: false });
  service.extendVolume(member, volume.id, 2, 42);
  await until(taskRunning(db, 'snapshot.create'), 'the snapshot to start');
  await tick();
  open();
  await settle();
  assert.deepEqual(fake.calls.slice(-2), [`snapshot ${snap.id}`, `extend ${volume.id}`]);
  const taken = service.snapshot(member, snap.id);
  assert.equal(taken.status, 'available');
  assert.equal(taken.size_gib, 1);
  assert.equal(fake.snapshots.get(snap.id)!.sizeGiB, 1);
  assert.equal(service.volume(member, volume.id).size_gib, 2);
  const fromSnap = service.createVolume(member, { snapshotId: snap.id }, 'r');
  await settle();
  assert.equal(service.volume(member, fromSnap.id).status, 'available');
  await manager.stop();
});

test('volume from a snapshot vs delete of the snapshot: the delete waits', async () => {
  const { service, fake, settle, gated, tick, manager, db } = await setup();
  const volume = service.createVolume(member, { size: 1 }, 'r');
  await settle();
  const snap = service.createSnapshot(member, { volumeId: volume.id, force: false });
  await settle();
  const open = gated('from-snapshot');
  const made = service.createVolume(member, { snapshotId: snap.id }, 'r');
  await until(taskRunning(db, 'volume.create'), 'the volume from the snapshot to start');
  service.deleteSnapshot(member, snap.id, false);
  await tick();
  open();
  await settle();
  assert.deepEqual(fake.calls.slice(-2), [`from-snapshot ${made.id}`, `delete-snapshot ${snap.id}`]);
  assert.equal(service.volume(member, made.id).status, 'available');
  await manager.stop();
});

test('restore vs delete: a force-delete fences the restore, and the delete runs after it stopped', async () => {
  const db = new Db(':memory:');
  const queue = new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 4, attemptsMax: 3, pollIntervalMs: 50 });
  const events: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  queue.register('backup.restore', async (task) => {
    events.push('restore start');
    await gate;
    task.checkpoint('restore.written');
    events.push('restore wrote');
  }, () => events.push('restore failed'));
  queue.register('volume.delete', async () => void events.push('delete'), () => undefined);
  queue.start(['backup', 'vol']);
  queue.enqueue('backup.restore', 'b1', 'backup', {}, { locks: { write: ['v1'] } });
  await until(() => events.includes('restore start'), 'the restore to start');
  assert.deepEqual(queue.fence('v1', 'force-delete of volume v1'), { cancelled: 0, fenced: 1 });
  queue.enqueue('volume.delete', 'v1', 'vol');
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(events, ['restore start'], 'the delete waits for the fenced restore to stop');
  release();
  await until(() => events.length === 2, 'the delete');
  await queue.whenIdle();
  assert.deepEqual(events, ['restore start', 'delete']);
  await queue.stop();
});

test('read locks share, write locks exclude; tasks of one resource keep their order across queues', async () => {
  const db = new Db(':memory:');
  const queue = new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 4, attemptsMax: 3, pollIntervalMs: 50 });
  const active = new Set<string>();
  const overlaps: string[] = [];
  const order: string[] = [];
  queue.register('op', async (task) => {
    const { name, ms } = task.payload as { name: string; ms: number };
    order.push(name);
    active.add(name);
    overlaps.push([...active].sort().join('+'));
    await new Promise((r) => setTimeout(r, ms));
    active.delete(name);
  }, () => undefined);
  queue.start(['q1', 'q2']);
  queue.enqueue('op', 'c1', 'q1', { name: 'read1', ms: 30 }, { locks: { read: ['v'] } });
  queue.enqueue('op', 'c2', 'q2', { name: 'read2', ms: 30 }, { locks: { read: ['v'] } });
  queue.enqueue('op', 'v', 'q2', { name: 'write', ms: 5 });
  queue.enqueue('op', 'c3', 'q1', { name: 'read3', ms: 5 }, { locks: { read: ['v'] } });
  await new Promise((r) => setTimeout(r, 10));
  await queue.whenIdle();
  assert.deepEqual(order, ['read1', 'read2', 'write', 'read3']);
  assert.ok(overlaps.includes('read1+read2'), 'two readers ran together');
  assert.ok(!overlaps.some((o) => o.includes('write') && o.includes('+')), `the writer ran alone: ${overlaps.join(', ')}`);
  await queue.stop();
});

test('a task\'s own resource is locked by its row: it excludes named locks on it both ways, and holds no task_locks row', async () => {
  const db = new Db(':memory:');
  const queue = new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 8, attemptsMax: 3, pollIntervalMs: 50 });
  const active = new Set<string>();
  const overlaps = new Set<string>();
  queue.register('op', async (task) => {
    const { name, ms } = task.payload as { name: string; ms: number };
    for (const other of active) overlaps.add([name, other].sort().join('+'));
    active.add(name);
    await new Promise((r) => setTimeout(r, ms));
    active.delete(name);
  }, () => undefined);
  // Queued before the runner starts, so each pair is claimed in one pass and only its locks keep it apart.
  queue.enqueue('op', 'x', 'q1', { name: 'own-x', ms: 40 });
  queue.enqueue('op', 'y', 'q2', { name: 'reads-x', ms: 5 }, { locks: { read: ['x'] } });
  queue.enqueue('op', 'z', 'q1', { name: 'writes-w', ms: 40 }, { locks: { write: ['w'] } });
  queue.enqueue('op', 'w', 'q2', { name: 'own-w', ms: 5 });
  queue.enqueue('op', 'e1', 'q1', { name: 'writes-s-1', ms: 40 }, { locks: { write: ['s'] } });
  queue.enqueue('op', 'e2', 'q2', { name: 'writes-s-2', ms: 5 }, { locks: { write: ['s'] } });
  queue.enqueue('op', 'g1', 'q1', { name: 'reads-r-1', ms: 40 }, { locks: { read: ['r'] } });
  queue.enqueue('op', 'g2', 'q2', { name: 'reads-r-2', ms: 40 }, { locks: { read: ['r'] } });
  queue.enqueue('op', 'o', 'q1', { name: 'own-o-1', ms: 40 });
  queue.enqueue('op', 'o', 'q2', { name: 'own-o-2', ms: 5 });
  assert.deepEqual(
    db.all<{ resource_id: string; mode: string }>('SELECT resource_id, mode FROM task_locks ORDER BY task_id'),
    [{ resource_id: 'x', mode: 'read' }, { resource_id: 'w', mode: 'write' }, { resource_id: 's', mode: 'write' }, { resource_id: 's', mode: 'write' }, { resource_id: 'r', mode: 'read' }, { resource_id: 'r', mode: 'read' }],
    'only named locks have rows',
  );
  queue.start(['q1', 'q2']);
  await new Promise((r) => setTimeout(r, 10));
  await queue.whenIdle();
  for (const pair of ['own-x+reads-x', 'own-w+writes-w', 'writes-s-1+writes-s-2', 'own-o-1+own-o-2']) assert.ok(!overlaps.has(pair), `${pair} ran together: ${[...overlaps].join(', ')}`);
  assert.ok(overlaps.has('reads-r-1+reads-r-2'), `two readers of r ran together: ${[...overlaps].join(', ')}`);
  assert.equal(db.get<{ n: number }>('SELECT COUNT(*) AS n FROM task_locks')!.n, 0);
  await queue.stop();
});

test('a transient librbd error (ETIMEDOUT) is retried with backoff; past the bound the volume fails with the reason and the attempts', async () => {
  const { service, fake, settle, db, manager, logs } = await setup();
  const timeout = () => new RbdError('rbd_create4: Connection timed out', { code: 'ETIMEDOUT', errno: 110, operation: 'rbd_create4' });
  assert.equal(classifyError(timeout()), 'transient');
  fake.failWith = { op: 'create', error: timeout(), times: 2 };
  const ok = service.createVolume(member, { size: 1 }, 'r');
  await settle();
  assert.equal(service.volume(member, ok.id).status, 'available');
  assert.equal(logs.filter((l) => l.includes(ok.id) && /retrying in \d+ ms/.test(l)).length, 2);

  fake.failWith = { op: 'create', error: timeout(), times: 100 };
  const bad = service.createVolume(member, { size: 1 }, 'r');
  await settle();
  const row = service.volume(member, bad.id);
  assert.equal(row.status, 'error');
  assert.match(row.status_reason!, /Connection timed out \(gave up after 5 attempts\)/);
  const message = db.get<{ user_message: string }>('SELECT user_message FROM messages WHERE resource_uuid = ?', bad.id)!;
  assert.match(message.user_message, /gave up after 5 attempts/);
  await manager.stop();
});

test('backoff is exponential with jitter, capped', () => {
  const db = new Db(':memory:');
  const queue = new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 1, attemptsMax: 9, pollIntervalMs: 50, retry: { baseMs: 100, capMs: 1000 }, random: () => 1 });
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((n) => queue.backoffMs(n)), [100, 200, 400, 800, 1000, 1000]);
  const low = new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 1, attemptsMax: 9, pollIntervalMs: 50, retry: { baseMs: 100, capMs: 1000 }, random: () => 0 });
  assert.equal(low.backoffMs(3), 200);
});

test('leases: a live owner keeps its task; an expired lease or a dead local process is taken over', async () => {
  const db = new Db(':memory:');
  const clock = new ManualClock(1_000_000);
  const insert = (resourceId: string, owner: string, leaseUntil: number) =>
    db.run(
      "INSERT INTO tasks (kind, resource_id, queue, payload, state, attempts, owner, lease_until, created_at, updated_at) VALUES ('k', ?, 'q', '{}', 'running', 1, ?, ?, 'now', 'now')",
      resourceId, owner, leaseUntil,
    );
  insert('remote', 'otherhost:4242:abcd', clock.now() + 30_000);
  insert('dead-local', `${hostname()}:999999999:abcd`, clock.now() + 30_000);
  const ran: string[] = [];
  const queue = new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 4, attemptsMax: 3, pollIntervalMs: 20, clock });
  queue.register('k', async (t) => void ran.push(t.resourceId), () => undefined);
  queue.start(['q']);
  await until(() => ran.length === 1, 'the dead local owner\'s task to be taken over');
  await new Promise((r) => setTimeout(r, 60));
  assert.deepEqual(ran, ['dead-local'], 'a live lease is left alone');
  clock.advance(30_001);
  await until(() => ran.length === 2, 'the expired lease to be taken over');
  assert.deepEqual(ran, ['dead-local', 'remote']);
  await queue.stop();
});

test('two runners on one database never run a task twice', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'pumice-tasks-')), 'db.sqlite');
  const dbA = new Db(path);
  const dbB = new Db(path);
  const runs = new Map<string, number>();
  const make = (db: Db) => {
    const q = new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 4, attemptsMax: 3, pollIntervalMs: 10 });
    q.register('k', async (t) => {
      runs.set(t.resourceId, (runs.get(t.resourceId) ?? 0) + 1);
      await new Promise((r) => setTimeout(r, 2));
    }, () => undefined);
    return q;
  };
  const a = make(dbA);
  const b = make(dbB);
  a.start(['q']);
  b.start(['q']);
  for (let i = 0; i < 60; i++) (i % 2 ? a : b).enqueue('k', `r${i}`, 'q');
  await new Promise((r) => setTimeout(r, 50));
  await Promise.all([a.whenIdle(), b.whenIdle()]);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(runs.size, 60);
  assert.deepEqual([...new Set(runs.values())], [1]);
  await Promise.all([a.stop(), b.stop()]);
});

test('a failure handler that throws leaves none of its writes; the task fails with both reasons', async () => {
  const db = new Db(':memory:');
  const queue = new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 1, attemptsMax: 1, pollIntervalMs: 50 });
  db.run("INSERT INTO volumes (id, project_id, user_id, size_gib, status, availability_zone, created_at) VALUES ('v1', 'p', 'u', 1, 'creating', 'nova', 'now')");
  queue.register('k', async () => {
    throw new TransientError('cluster busy');
  }, () => {
    db.run("UPDATE volumes SET name = 'half-applied' WHERE id = 'v1'");
    throw new Error('handler bug');
  });
  queue.start(['q']);
  queue.enqueue('k', 'v1', 'q');
  await new Promise((r) => setTimeout(r, 10));
  await queue.whenIdle();
  assert.equal(db.get<{ name: string | null }>("SELECT name FROM volumes WHERE id = 'v1'")!.name, null);
  const task = db.get<{ state: string; last_error: string }>('SELECT state, last_error FROM tasks')!;
  assert.equal(task.state, 'failed');
  assert.match(task.last_error, /cluster busy \(gave up after 1 attempt\); then the failure handler failed: handler bug/);
  await queue.stop();
});

test('an admin reset of a volume being created fences its task: no write after the reset', async () => {
  const { service, settle, gated, manager, db } = await setup();
  const open = gated('create');
  const volume = service.createVolume(member, { size: 1 }, 'r');
  await until(taskRunning(db, 'volume.create'), 'the create to start');
  service.resetVolumeStatus(admin, volume.id, { status: 'error' });
  open();
  await settle();
  assert.equal(service.volume(member, volume.id).status, 'error');
  await manager.stop();
});

test('retention: failed and cancelled tasks go after N days, queued and running ones stay, expired messages are purged', () => {
  const db = new Db(':memory:');
  const clock = new ManualClock(Date.parse('2026-01-10T00:00:00Z'));
  const insert = (state: string, finishedAt: string | null) =>
    db.run("INSERT INTO tasks (kind, resource_id, queue, state, finished_at, created_at, updated_at) VALUES ('k', 'r', 'q', ?, ?, 'x', 'x')", state, finishedAt);
  insert('failed', '2026-01-01T00:00:00Z');
  insert('cancelled', '2026-01-02T00:00:00Z');
  insert('failed', '2026-01-09T00:00:00Z');
  insert('queued', null);
  insert('running', null);
  const message = (expiresAt: string) =>
    db.run("INSERT INTO messages (id, project_id, event_id, message_level, user_message, created_at, expires_at) VALUES (?, 'p', 'e', 'ERROR', 'm', 'x', ?)", expiresAt, expiresAt);
  message('2026-01-09T00:00:00Z');
  message('2026-02-09T00:00:00Z');
  assert.deepEqual(purgeExpired({ db, failedRetentionDays: 7, log: () => undefined, clock }), { tasks: 2, messages: 1 });
  assert.deepEqual(db.all<{ state: string }>('SELECT state FROM tasks ORDER BY id').map((r) => r.state), ['failed', 'queued', 'running']);
});

test('pumice tasks list|show|retry|cancel on a data directory', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'pumice-tasks-cli-'));
  const db = new Db(join(dataDir, 'pumice.db'));
  const queue = new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 1, attemptsMax: 1, pollIntervalMs: 50 });
  const failedId = queue.enqueue('volume.extend', 'v1', 'q', { newSizeGiB: 2 }, { locks: { read: ['s1'] } });
  const queuedId = queue.enqueue('volume.delete', 'v2', 'q');
  db.run("UPDATE tasks SET state = 'failed', last_error = 'disk on fire', finished_at = 'x' WHERE id = ?", failedId);
  db.run('DELETE FROM task_locks WHERE task_id = ?', failedId);
  db.close();
  let text = '';
  const out = (t: string) => void (text += t);
  assert.equal(await runTasksCli(['list', '--data-dir', dataDir], out), 0);
  assert.match(text, new RegExp(`${failedId}\\s+failed\\s+volume.extend\\s+q\\s+0\\s+v1  disk on fire`));
  text = '';
  assert.equal(await runTasksCli(['show', String(queuedId), '--data-dir', dataDir, '--json'], out), 0);
  assert.deepEqual(JSON.parse(text).locks, [{ resource_id: 'v2', mode: 'write' }]);
  assert.equal(await runTasksCli(['retry', String(failedId), '--data-dir', dataDir], out), 0);
  assert.equal(await runTasksCli(['cancel', String(queuedId), '--data-dir', dataDir], out), 0);
  const check = new Db(join(dataDir, 'pumice.db'));
  assert.deepEqual(check.all<{ id: number; state: string }>('SELECT id, state FROM tasks ORDER BY id'), [{ id: failedId, state: 'queued' }, { id: queuedId, state: 'cancelled' }]);
  check.close();
});

test('a reset of a restore target releases the backup it held and fences the restore', async () => {
  const { service, db, manager, queue } = await setup();
  const volume = service.createVolume(member, { size: 1 }, 'r');
  await new Promise((r) => setTimeout(r, 5));
  await queue.whenIdle();
  db.run(
    `INSERT INTO backups (id, project_id, user_id, volume_id, status, size_gib, restore_volume_id, data_timestamp, created_at) VALUES ('b1', 'p1', 'u', ?, 'restoring', 1, ?, 'x', 'x')`,
    volume.id, volume.id,
  );
  db.run("UPDATE volumes SET status = 'restoring-backup' WHERE id = ?", volume.id);
  queue.enqueue('backup.restore', 'b1', 'backup', { volumeId: volume.id }, { locks: { write: [volume.id] } });
  service.resetVolumeStatus(admin, volume.id, { status: 'error' });
  const backup = db.get<{ status: string; fail_reason: string }>("SELECT status, fail_reason FROM backups WHERE id = 'b1'")!;
  assert.equal(backup.status, 'available');
  assert.match(backup.fail_reason, /cancelled by os-reset_status/);
  assert.equal(db.get<{ state: string }>("SELECT state FROM tasks WHERE kind = 'backup.restore'")!.state, 'cancelled');
  await manager.stop();
});

test('a task queued in a transaction is claimed in it: launched once it commits, never when it (or its savepoint) rolls back', async () => {
  const db = new Db(':memory:');
  // No poll during the test: only claims in the queuing transaction and the kicks run tasks.
  const queue = new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 2, attemptsMax: 3, pollIntervalMs: 60_000 });
  const started: string[] = [];
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  queue.register('op', async (task) => {
    started.push(task.resourceId);
    await gate;
  }, () => undefined);
  queue.start(['q']);
  await new Promise((r) => setImmediate(r));
  const state = (resourceId: string) => db.get<{ state: string }>('SELECT state FROM tasks WHERE resource_id = ?', resourceId)?.state ?? 'gone';

  // Rolled back: the claim goes with the task, and its slot is free again.
  assert.throws(() => db.transaction(() => {
    queue.enqueue('op', 'undone', 'q');
    assert.equal(state('undone'), 'running', 'claimed in the queuing transaction');
    throw new Error('the request failed');
  }), /the request failed/);
  // A savepoint rolled back inside a transaction that commits: the same.
  db.transaction(() => {
    assert.throws(() => db.transaction(() => {
      queue.enqueue('op', 'undone-inner', 'q');
      throw new Error('the inner step failed');
    }));
    queue.enqueue('op', 'a', 'q');
    queue.enqueue('op', 'b', 'q');
    queue.enqueue('op', 'c', 'q');
    // Two slots: a and b claimed here (none lost to the rolled-back claims), c waits for one.
    assert.deepEqual(['a', 'b', 'c'].map(state), ['running', 'running', 'queued']);
    assert.deepEqual(started, [], 'nothing runs before the transaction commits');
  });
  assert.deepEqual(started, [], 'nor inside the caller that committed it');
  await until(() => started.length === 2, 'a and b to start');
  assert.deepEqual(started.sort(), ['a', 'b']);
  open();
  await new Promise((r) => setTimeout(r, 5));
  await queue.whenIdle();
  assert.deepEqual(started.sort(), ['a', 'b', 'c']);
  assert.deepEqual(['undone', 'undone-inner', 'a', 'b', 'c'].map(state), ['gone', 'gone', 'gone', 'gone', 'gone']);
  await queue.stop();
});
