import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { Db } from '../../src/db/db.ts';
import { IllegalTransitionError, resourceStates } from '../../src/state/owner.ts';
import { attachmentTransitions, backupTransitions, bdmTransitions, imageMemberTransitions, imageTaskTransitions, imageTransitions, serverTaskStates, serverVmTransitions, snapshotTransitions, volumeTransitions } from '../../src/state/tables.ts';
import { vmStates } from '../../src/compute/model.ts';

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

test('every status write of volumes, snapshots, backups, images, image tasks and members, groups, attachments, block device mappings and servers goes through the state owner', () => {
  // Every source file, not a list: a new module that writes a status by hand is found too.
  const root = new URL('../../src/', import.meta.url);
  const files = (readdirSync(root, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts') && !f.startsWith('state/'));
  // Within the SET clause only: a `WHERE status = 'queued'` guard writes nothing.
  const set = `(?:(?!\\bWHERE\\b)[^;'"\`])*?`;
  const raw = new RegExp(
    `UPDATE\\s+(volumes|snapshots|backups|images|image_tasks|image_members|volume_groups|group_snapshots|block_device_mappings)\\s+SET\\b${set}\\bstatus\\s*=|` +
      `UPDATE\\s+volume_attachments\\s+SET\\b${set}\\battach_status\\s*=|UPDATE\\s+servers\\s+SET\\b${set}\\b(vm_state|task_state)\\s*=`,
    'g',
  );
  const found: string[] = [];
  for (const file of files) {
    const text = readFileSync(new URL(file, root), 'utf8');
    for (const m of text.matchAll(raw)) found.push(`${file}: ${m[0].slice(0, 80)}`);
  }
  assert.deepEqual(found, [], 'status written without the state owner');
});

function insertServer(db: Db, id: string, vmState: string, taskState: string | null): void {
  db.run(
    "INSERT INTO servers (id, name, project_id, user_id, flavor_id, flavor, vm_state, task_state, root_source, created_at) VALUES (?, 'vm', 'p', 'u', 'f', '{}', ?, ?, 'volume', ?)",
    id, vmState, taskState, new Date().toISOString(),
  );
}
const serverState = (db: Db, id: string) => {
  const row = db.get<{ vm_state: string; task_state: string | null; generation: number }>('SELECT vm_state, task_state, generation FROM servers WHERE id = ?', id)!;
  return `${row.vm_state}/${row.task_state ?? '-'}`;
};

test('the server, attachment and block device mapping tables are complete: every state has a row, every target is a state', () => {
  assert.deepEqual(Object.keys(serverVmTransitions).sort(), [...vmStates].sort());
  for (const targets of Object.values(serverVmTransitions)) for (const t of targets) assert.ok((vmStates as readonly string[]).includes(t), t);
  for (const [task, allowed] of Object.entries(serverTaskStates)) for (const vm of allowed) assert.ok((vmStates as readonly string[]).includes(vm), `${task}: ${vm}`);
  for (const table of [attachmentTransitions, bdmTransitions] as Record<string, readonly string[]>[]) {
    for (const targets of Object.values(table)) for (const t of targets) assert.ok(t in table, t);
  }
});

test('a server transition is a compare-and-set on both states, enforces the tables, and keeps a delete a delete', () => {
  const db = new Db(':memory:');
  const { servers } = resourceStates(db);
  insertServer(db, 's1', 'building', 'scheduling');
  assert.equal(servers.transition('s1', ['building'], null, { task_state: 'spawning' }), true);
  assert.equal(servers.transition('s1', ['building'], null, { vm_state: 'active', task_state: null, power_state: 1 }), true);
  assert.equal(serverState(db, 's1'), 'active/-');
  // Compare-and-set: the expected states are gone, nothing changes.
  assert.equal(servers.transition('s1', ['stopped'], [null], { task_state: 'powering-on' }), false);
  assert.equal(servers.transition('s1', ['active'], ['powering-off'], { vm_state: 'stopped', task_state: null }), false);
  assert.equal(serverState(db, 's1'), 'active/-');
  // Illegal under the tables: a task in a vm_state that cannot have it, and a vm_state move not listed.
  assert.throws(() => servers.transition('s1', null, null, { task_state: 'powering-on' }), IllegalTransitionError);
  assert.throws(() => servers.transition('s1', null, null, { vm_state: 'building' }), IllegalTransitionError);
  assert.equal(serverState(db, 's1'), 'active/-');
  // A delete under way is not undone by another writer finishing its own work (a build, a stop).
  assert.equal(servers.transition('s1', null, null, { task_state: 'deleting' }), true);
  assert.equal(servers.transition('s1', ['active'], null, { vm_state: 'active', task_state: null }), false);
  assert.equal(servers.transition('s1', null, null, { vm_state: 'stopped', task_state: null }), false);
  assert.equal(serverState(db, 's1'), 'active/deleting');
  assert.equal(servers.transition('s1', null, null, { vm_state: 'deleted', task_state: null, deleted_at: 'now' }), true);
  assert.equal(serverState(db, 's1'), 'deleted/-');
  assert.throws(() => servers.transition('s1', null, null, { vm_state: 'active' }), IllegalTransitionError);
  // Production: refused with a logged error, the row left alone.
  const prod = new Db(':memory:');
  const logged: string[] = [];
  insertServer(prod, 's2', 'stopped', null);
  assert.equal(resourceStates(prod, { strict: false, log: (m) => logged.push(m) }).servers.transition('s2', null, null, { task_state: 'powering-off' }), false);
  assert.equal(serverState(prod, 's2'), 'stopped/-');
  assert.match(logged[0]!, /^ERROR illegal server transition for server s2 \(stopped\/- → stopped\/powering-off\): task_state powering-off is not allowed in vm_state stopped/);
});

test('os-resetState (force) sets the vm_state, clears the task and fences the server\'s running task', async () => {
  const db = new Db(':memory:');
  const queue = new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 1, attemptsMax: 1, pollIntervalMs: 20 });
  insertServer(db, 's1', 'active', 'rebooting');
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let wrote = false;
  queue.register('server.reboot', async (task) => {
    await gate;
    task.checkpoint('reboot.after-gate');
    // Past the checkpoint a fenced task would write: the flag stands for that write.
    wrote = true;
  }, () => undefined);
  queue.start(['compute']);
  queue.enqueue('server.reboot', 's1', 'compute', {});
  while (db.get<{ n: number }>("SELECT COUNT(*) AS n FROM tasks WHERE state = 'running'")!.n === 0) await new Promise((r) => setTimeout(r, 10));
  assert.equal(resourceStates(db).servers.force('s1', 'error', {}, 'os-resetState'), true);
  assert.equal(serverState(db, 's1'), 'error/-');
  release();
  for (let i = 0; i < 100 && db.get<{ n: number }>("SELECT COUNT(*) AS n FROM tasks WHERE state IN ('running', 'queued')")!.n > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(wrote, false, 'the fenced task stopped at its checkpoint without writing');
  assert.equal(serverState(db, 's1'), 'error/-');
  await queue.stop();
});

test('attachments and block device mappings move through their owners', () => {
  const db = new Db(':memory:');
  const { attachments, blockDeviceMappings } = resourceStates(db);
  insertVolume(db, 'v1', 'reserved');
  db.run("INSERT INTO volume_attachments (id, volume_id, instance_uuid, attach_mode, attach_status, created_at, updated_at) VALUES ('a1', 'v1', 's1', 'rw', 'reserved', 'now', 'now')");
  assert.equal(attachments.transition('a1', ['reserved'], 'attaching', { connector: '{}' }), true);
  assert.equal(attachments.transition('a1', ['reserved'], 'attached'), false);
  assert.equal(attachments.transition('a1', ['attaching'], 'attached'), true);
  assert.equal(db.get<{ attach_status: string }>("SELECT attach_status FROM volume_attachments WHERE id = 'a1'")!.attach_status, 'attached');
  insertServer(db, 's1', 'active', null);
  db.run("INSERT INTO block_device_mappings (id, server_id, source_type, destination_type, volume_id, status, created_at) VALUES ('b1', 's1', 'volume', 'volume', 'v1', 'pending', 'now')");
  assert.equal(blockDeviceMappings.transition('b1', ['pending'], 'attached'), true);
  assert.equal(blockDeviceMappings.transition('b1', ['attached'], 'detaching'), true);
  assert.equal(blockDeviceMappings.transition('b1', ['detaching'], 'detached', { connection_info: null }), true);
  assert.throws(() => blockDeviceMappings.transition('b1', ['detached'], 'attached'), IllegalTransitionError);
});

test('image task records and image members move through their owners: a finished task never moves again, a member decides in any direction', () => {
  const db = new Db(':memory:');
  const { imageTasks, imageMembers } = resourceStates(db);
  assert.deepEqual(Object.keys(imageTaskTransitions).sort(), ['failure', 'pending', 'processing', 'success']);
  for (const targets of Object.values(imageMemberTransitions)) assert.deepEqual([...targets].sort(), ['accepted', 'pending', 'rejected']);
  db.run("INSERT INTO image_tasks (id, type, status, owner, created_at, updated_at) VALUES ('t1', 'api_image_import', 'pending', 'p', 'then', 'then')");
  assert.equal(imageTasks.transition('t1', ['pending', 'processing'], 'processing'), true);
  // A re-run after a crash records processing again.
  assert.equal(imageTasks.transition('t1', ['pending', 'processing'], 'processing'), true);
  assert.equal(imageTasks.transition('t1', ['processing'], 'success', { result: '{}', expires_at: 'later' }), true);
  const task = db.get<{ status: string; expires_at: string; updated_at: string }>("SELECT status, expires_at, updated_at FROM image_tasks WHERE id = 't1'")!;
  assert.deepEqual([task.status, task.expires_at], ['success', 'later']);
  assert.notEqual(task.updated_at, 'then');
  // The engine giving up later finds it finished: a miss, the outcome stands.
  assert.equal(imageTasks.transition('t1', ['pending', 'processing'], 'failure', { message: 'late' }), false);
  assert.throws(() => imageTasks.transition('t1', ['success'], 'failure'), IllegalTransitionError);
  assert.throws(() => imageTasks.transition('t1', ['pending'], 'success'), IllegalTransitionError);
  assert.equal(db.get<{ status: string }>("SELECT status FROM image_tasks WHERE id = 't1'")!.status, 'success');

  db.run("INSERT INTO images (id, name, owner, status, visibility, created_at, updated_at) VALUES ('i1', 'shared', 'p', 'active', 'shared', 'now', 'now')");
  for (const member of ['m1', 'm2']) db.run("INSERT INTO image_members (image_id, member_id, status, created_at, updated_at) VALUES ('i1', ?, 'pending', 'now', 'now')", member);
  const statusOfMember = (member: string) => db.get<{ status: string }>("SELECT status FROM image_members WHERE image_id = 'i1' AND member_id = ?", member)!.status;
  assert.equal(imageMembers.transition(['i1', 'm1'], ['pending'], 'accepted'), true);
  assert.equal(imageMembers.transition(['i1', 'm1'], ['accepted'], 'rejected'), true);
  assert.equal(imageMembers.transition(['i1', 'm1'], ['rejected'], 'pending'), true);
  assert.equal(imageMembers.transition(['i1', 'm1'], ['accepted'], 'rejected'), false, 'compare-and-set on the member, not the image');
  assert.deepEqual([statusOfMember('m1'), statusOfMember('m2')], ['pending', 'pending'], 'the other member of the image is left alone');
  assert.equal(imageMembers.transition(['i1', 'gone'], ['pending'], 'accepted'), false);
});
