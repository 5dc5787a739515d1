/**
 * Group and group snapshot statuses move on the write path (issue 18): `followMembers` moves a
 * group made from a source, or a group snapshot being taken or deleted, after its members, and
 * reading them (VolumeGroups.group / groupSnapshot / list) writes nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Db } from '../../src/db/db.ts';
import type { AuthContext } from '../../src/http/router.ts';
import { resourceStates } from '../../src/state/owner.ts';
import { followMembers, GroupTypes, VolumeGroups } from '../../src/volume/groups.ts';
import type { VolumeService } from '../../src/volume/volumes.ts';

const now = () => new Date().toISOString();

function setUp(): Db {
  const db = new Db(':memory:');
  db.run("INSERT INTO group_types (id, name, is_public, created_at) VALUES ('gt', 'gt', 1, ?)", now());
  return db;
}

function insertGroup(db: Db, id: string, status: string): void {
  db.run(
    "INSERT INTO volume_groups (id, project_id, status, group_type_id, volume_type_ids, availability_zone, created_at) VALUES (?, 'p', ?, 'gt', '[]', 'nova', ?)",
    id, status, now(),
  );
}

function insertVolume(db: Db, id: string, status: string, groupId: string | null): void {
  db.run(
    "INSERT INTO volumes (id, project_id, user_id, size_gib, status, availability_zone, group_id, created_at) VALUES (?, 'p', 'u', 1, ?, 'nova', ?, ?)",
    id, status, groupId, now(),
  );
}

function insertGroupSnapshot(db: Db, id: string, groupId: string, status: string): void {
  db.run("INSERT INTO group_snapshots (id, project_id, group_id, group_type_id, status, created_at) VALUES (?, 'p', ?, 'gt', ?, ?)", id, groupId, status, now());
}

function insertSnapshot(db: Db, id: string, volumeId: string, status: string, groupSnapshotId: string): void {
  db.run(
    "INSERT INTO snapshots (id, project_id, user_id, volume_id, size_gib, status, group_snapshot_id, created_at) VALUES (?, 'p', 'u', ?, 1, ?, ?, ?)",
    id, volumeId, status, groupSnapshotId, now(),
  );
}

const groupOf = (db: Db, id: string) => db.get<{ status: string; status_reason: string | null }>('SELECT status, status_reason FROM volume_groups WHERE id = ?', id);
const groupSnapshotOf = (db: Db, id: string) => db.get<{ status: string; status_reason: string | null }>('SELECT status, status_reason FROM group_snapshots WHERE id = ?', id);

test('a group made from a source is available when its last volume is, in error when one failed', () => {
  const db = setUp();
  const { volumes } = resourceStates(db);
  insertGroup(db, 'g', 'creating');
  insertVolume(db, 'v1', 'creating', 'g');
  insertVolume(db, 'v2', 'creating', 'g');
  volumes.transition('v1', ['creating'], 'available');
  followMembers(db, 'group', 'g');
  assert.equal(groupOf(db, 'g')!.status, 'creating', 'one volume is still being made');
  volumes.transition('v2', ['creating'], 'available');
  followMembers(db, 'group', 'g');
  assert.equal(groupOf(db, 'g')!.status, 'available');
  followMembers(db, 'group', 'g');
  assert.equal(groupOf(db, 'g')!.status, 'available', 'again: nothing changes');

  insertGroup(db, 'h', 'creating');
  insertVolume(db, 'w1', 'available', 'h');
  insertVolume(db, 'w2', 'creating', 'h');
  volumes.transition('w2', ['creating'], 'error', { status_reason: 'no space left' });
  followMembers(db, 'group', 'h');
  assert.deepEqual(groupOf(db, 'h'), { status: 'error', status_reason: 'a volume of the group failed: no space left' });
});

test('a deleting group goes with its last volume, or is error_deleting when one could not be deleted; other statuses are left alone', () => {
  const db = setUp();
  insertGroup(db, 'g', 'deleting');
  insertVolume(db, 'v1', 'deleting', 'g');
  followMembers(db, 'group', 'g');
  assert.equal(groupOf(db, 'g')!.status, 'deleting');
  db.run("DELETE FROM volumes WHERE id = 'v1'");
  followMembers(db, 'group', 'g');
  assert.equal(groupOf(db, 'g'), undefined, 'the row is gone with its last volume');

  insertGroup(db, 'h', 'deleting');
  insertVolume(db, 'w1', 'error_deleting', 'h');
  followMembers(db, 'group', 'h');
  assert.equal(groupOf(db, 'h')!.status, 'error_deleting');

  insertGroup(db, 'k', 'available');
  followMembers(db, 'group', 'k');
  assert.equal(groupOf(db, 'k')!.status, 'available', 'an available group without volumes stays');
  followMembers(db, 'group', null);
  followMembers(db, 'group', 'gone');
});

test('a group snapshot follows its member snapshots the same way', () => {
  const db = setUp();
  const { snapshots } = resourceStates(db);
  insertGroup(db, 'g', 'available');
  insertVolume(db, 'v1', 'available', 'g');
  insertVolume(db, 'v2', 'available', 'g');
  insertGroupSnapshot(db, 'gs', 'g', 'creating');
  insertSnapshot(db, 's1', 'v1', 'creating', 'gs');
  insertSnapshot(db, 's2', 'v2', 'creating', 'gs');
  snapshots.transition('s1', ['creating'], 'available');
  followMembers(db, 'group snapshot', 'gs');
  assert.equal(groupSnapshotOf(db, 'gs')!.status, 'creating');
  snapshots.transition('s2', ['creating'], 'error', { status_reason: 'backend down' });
  followMembers(db, 'group snapshot', 'gs');
  assert.deepEqual(groupSnapshotOf(db, 'gs'), { status: 'error', status_reason: 'a member snapshot failed: backend down' });

  resourceStates(db).groupSnapshots.transition('gs', ['error'], 'deleting');
  snapshots.transition('s2', ['error'], 'deleting');
  snapshots.transition('s2', ['deleting'], 'error_deleting');
  followMembers(db, 'group snapshot', 'gs');
  assert.equal(groupSnapshotOf(db, 'gs')!.status, 'error_deleting');
  resourceStates(db).groupSnapshots.transition('gs', ['error_deleting'], 'deleting');
  db.run("DELETE FROM snapshots WHERE group_snapshot_id = 'gs'");
  followMembers(db, 'group snapshot', 'gs');
  assert.equal(groupSnapshotOf(db, 'gs'), undefined);
});

test('reading groups and group snapshots writes nothing, even when their members are done', () => {
  const db = setUp();
  insertGroup(db, 'g', 'creating');
  insertVolume(db, 'v1', 'available', 'g');
  insertGroup(db, 'h', 'available');
  insertVolume(db, 'w1', 'available', 'h');
  insertGroupSnapshot(db, 'gs', 'h', 'creating');
  insertSnapshot(db, 's1', 'w1', 'available', 'gs');
  const admin = { isAdmin: true } as AuthContext;
  const groups = new VolumeGroups(db, {} as VolumeService, new GroupTypes(db, () => null));
  const before = JSON.stringify([db.all('SELECT * FROM volume_groups ORDER BY id'), db.all('SELECT * FROM group_snapshots ORDER BY id')]);
  assert.equal(groups.group(admin, 'g').status, 'creating');
  assert.equal(groups.groupSnapshot(admin, 'gs').status, 'creating');
  const filter = { allProjects: true, projectId: null, name: null, status: null, limit: 10, marker: null };
  assert.deepEqual(groups.list(admin, filter).map((g) => [g.id, g.status]).sort(), [['g', 'creating'], ['h', 'available']]);
  assert.deepEqual(groups.listSnapshots(admin, { ...filter, groupId: null }).map((s) => s.status), ['creating']);
  assert.equal(JSON.stringify([db.all('SELECT * FROM volume_groups ORDER BY id'), db.all('SELECT * FROM group_snapshots ORDER BY id')]), before, 'GET and list are read-only');
});
