/**
 * Generic volume groups (Cinder's groups API, 3.11-3.20): group types with
 * their specs, groups of volumes, and group snapshots.
 *
 * A group is a database record over volumes of one backend (the backend of
 * its first member; a group snapshot of volumes on two backends could never
 * be taken at one moment). Members are added and removed in one
 * transaction. A group snapshot takes one snapshot of every member through
 * the ordinary snapshot task of its backend, all enqueued in the transaction
 * that writes the group snapshot. On a backend that takes group snapshots at
 * one moment (GroupSnapshots: RBD, one librbd group snapshot that every
 * member's task shares) members may be attached (in-use): the snapshot is
 * crash-consistent across them. Elsewhere (local) every member must be
 * `available`, i.e. with no attached writer, so the member snapshots hold the
 * bytes of one moment. A member snapshot is deleted only with its group
 * snapshot.
 *
 * Statuses change through the state owner (src/state: `groups`,
 * `groupSnapshots`), on the write path only: a group made from a source and
 * a group snapshot being taken or deleted follow their member volumes and
 * snapshots, moved by `followMembers` in the transaction that changes a
 * member (the member task's completion or failure, on whichever host ran
 * it). Reads never write.
 *
 * Operation locks (src/tasks): every member task of a group snapshot writes
 * the group's work lock (`groupWorkLock`) and reads all its volumes, so two
 * group snapshots of one group run one after the other, and a delete,
 * extend or revert of a member waits
 * for a group snapshot in progress (and it for them). Adding or removing
 * volumes queues `group.sync`, which writes that lock too: on a backend with
 * its own groups (RBD) it makes the backend's group hold the group's
 * volumes, from the database as it is when the task runs (a re-run after a
 * crash syncs again).
 */
import { randomUUID } from 'node:crypto';
import { nowIso, type Db } from '../db/db.ts';
import { errors, PumiceError } from '../errors.ts';
import type { AuthContext } from '../http/router.ts';
import type { Task, TaskQueue } from '../tasks/queue.ts';
import { resourceStates, type ResourceStates } from '../state/owner.ts';
import type { GroupSnapshotStatus, GroupStatus } from '../state/tables.ts';
import type { SnapshotRow, VolumeRow } from './records.ts';
import { hasGroupSnapshots, type VolumeBackend } from './drivers/driver.ts';
import { requireStatus } from './states.ts';
import type { VolumeService } from './volumes.ts';

export interface GroupTypeRow {
  id: string;
  name: string;
  description: string | null;
  is_public: number;
  created_at: string;
  updated_at: string | null;
}

export interface GroupRow {
  id: string;
  project_id: string;
  user_id: string | null;
  name: string | null;
  description: string | null;
  status: string;
  group_type_id: string;
  /** JSON list of volume type ids. */
  volume_type_ids: string;
  availability_zone: string;
  group_snapshot_id: string | null;
  source_group_id: string | null;
  status_reason: string | null;
  created_at: string;
  updated_at: string | null;
}

export interface GroupSnapshotRow {
  id: string;
  project_id: string;
  user_id: string | null;
  group_id: string;
  group_type_id: string;
  name: string | null;
  description: string | null;
  status: string;
  status_reason: string | null;
  created_at: string;
  updated_at: string | null;
}

export const groupStatuses: readonly GroupStatus[] = ['creating', 'available', 'updating', 'deleting', 'error', 'error_deleting', 'in-use'];
export const groupSnapshotStatuses: readonly GroupSnapshotStatus[] = ['creating', 'available', 'deleting', 'error', 'error_deleting'];

/**
 * The lock that orders a group's backend work (its group snapshots' member tasks, group.sync): not
 * the group's own id, which os-reset_status of the group fences, cancelling a group snapshot's
 * member tasks with it (those would leave member snapshots 'creating' until the next clean-up).
 */
export function groupWorkLock(groupId: string): string {
  return `group-work:${groupId}`;
}

/** Volumes one group may hold (a bound on one update's and one group snapshot's work). */
export const groupVolumesMax = 64;
/** Volume types one group may name. */
export const groupVolumeTypesMax = 16;

const uuidLike = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

/** Group types and their group specs (administrators write them; everyone reads the public ones). */
export class GroupTypes {
  constructor(
    private readonly db: Db,
    /** `[DEFAULT] default_group_type`: the group type GET /group_types/default answers, or null. */
    private readonly defaultName: () => string | null,
  ) {}

  /** The type by id or name; a private one only for an administrator. 404 otherwise. */
  get(auth: AuthContext, idOrName: string): GroupTypeRow {
    const row = this.db.get<GroupTypeRow>('SELECT * FROM group_types WHERE id = ?', idOrName)
      ?? this.db.get<GroupTypeRow>('SELECT * FROM group_types WHERE name = ?', idOrName);
    if (!row || (!row.is_public && !auth.isAdmin)) throw errors.notFound('Group type', idOrName);
    return row;
  }

  /** Public types, and for an administrator the private ones too (`isPublic` narrows, as Cinder's is_public filter). */
  list(auth: AuthContext, isPublic: boolean | null): GroupTypeRow[] {
    if (!auth.isAdmin) return this.db.all<GroupTypeRow>('SELECT * FROM group_types WHERE is_public = 1 ORDER BY created_at, id');
    if (isPublic === null) return this.db.all<GroupTypeRow>('SELECT * FROM group_types ORDER BY created_at, id');
    return this.db.all<GroupTypeRow>('SELECT * FROM group_types WHERE is_public = ? ORDER BY created_at, id', isPublic ? 1 : 0);
  }

  /** The configured default group type; 404 naming the option when none is set or it names no type. */
  defaultType(auth: AuthContext): GroupTypeRow {
    const name = this.defaultName();
    const fix = "set [DEFAULT] default_group_type in pumice.conf to a group type's name";
    if (!name) throw errors.notFound('Default group type', `(none: ${fix})`);
    try {
      return this.get(auth, name);
    } catch {
      throw errors.notFound('Default group type', `'${name}' ([DEFAULT] default_group_type names no group type you can see: create it, or ${fix})`);
    }
  }

  specs(typeId: string): Record<string, string> {
    return Object.fromEntries(this.db.all<{ key: string; value: string }>('SELECT key, value FROM group_type_specs WHERE group_type_id = ? ORDER BY key', typeId).map((r) => [r.key, r.value]));
  }

  /** Creates a type; 409 when the name is taken. */
  create(input: { name: string; description: string | null; isPublic: boolean; specs: Record<string, string> }): GroupTypeRow {
    return this.db.transaction(() => {
      if (this.db.get('SELECT 1 AS x FROM group_types WHERE name = ?', input.name)) {
        throw errors.conflict(`Group type with name ${input.name} already exists. Choose another name, or use the existing type.`);
      }
      const id = randomUUID();
      this.db.run('INSERT INTO group_types (id, name, description, is_public, created_at) VALUES (?, ?, ?, ?, ?)', id, input.name, input.description, input.isPublic ? 1 : 0, nowIso());
      this.setSpecs(id, input.specs);
      return this.db.get<GroupTypeRow>('SELECT * FROM group_types WHERE id = ?', id)!;
    });
  }

  /** Renames, re-describes or changes visibility; 409 when the new name is taken. */
  update(type: GroupTypeRow, changes: { name?: string; description?: string | null; isPublic?: boolean }): GroupTypeRow {
    return this.db.transaction(() => {
      if (changes.name !== undefined && changes.name !== type.name && this.db.get('SELECT 1 AS x FROM group_types WHERE name = ?', changes.name)) {
        throw errors.conflict(`Group type with name ${changes.name} already exists. Choose another name.`);
      }
      this.db.run(
        'UPDATE group_types SET name = ?, description = ?, is_public = ?, updated_at = ? WHERE id = ?',
        changes.name ?? type.name, changes.description === undefined ? type.description : changes.description,
        changes.isPublic === undefined ? type.is_public : changes.isPublic ? 1 : 0, nowIso(), type.id,
      );
      return this.db.get<GroupTypeRow>('SELECT * FROM group_types WHERE id = ?', type.id)!;
    });
  }

  /** Deletes a type no group uses (400 naming the groups otherwise), with its specs. */
  delete(type: GroupTypeRow): void {
    this.db.transaction(() => {
      const users = this.db.all<{ id: string }>('SELECT id FROM volume_groups WHERE group_type_id = ? ORDER BY id LIMIT 5', type.id);
      if (users.length > 0) {
        throw new PumiceError('BadRequest', `Target group type is still in use: group type ${type.id} is used by group(s) ${users.map((u) => u.id).join(', ')}. Delete those groups first.`);
      }
      this.db.run('DELETE FROM group_types WHERE id = ?', type.id);
    });
  }

  setSpecs(typeId: string, specs: Record<string, string>): void {
    for (const [key, value] of Object.entries(specs)) {
      this.db.run('INSERT INTO group_type_specs (group_type_id, key, value) VALUES (?, ?, ?) ON CONFLICT (group_type_id, key) DO UPDATE SET value = excluded.value', typeId, key, value);
    }
    this.db.run('UPDATE group_types SET updated_at = ? WHERE id = ?', nowIso(), typeId);
  }

  /** Removes one spec; 404 naming the key when the type lacks it. */
  deleteSpec(typeId: string, key: string): void {
    if (this.db.run('DELETE FROM group_type_specs WHERE group_type_id = ? AND key = ?', typeId, key).changes === 0) {
      throw errors.notFound('Group type spec', `'${key}' of group type ${typeId}`);
    }
  }
}

export interface GroupListFilter {
  allProjects: boolean;
  projectId: string | null;
  name: string | null;
  status: string | null;
  limit: number;
  marker: string | null;
}

/** Groups and group snapshots of a project, over the volume service's volumes and snapshots. */
export class VolumeGroups {
  constructor(
    private readonly db: Db,
    private readonly volumes: VolumeService,
    readonly types: GroupTypes,
  ) {}

  private get states() {
    return resourceStates(this.db);
  }

  private row(id: string): GroupRow | undefined {
    return this.db.get<GroupRow>('SELECT * FROM volume_groups WHERE id = ?', id);
  }

  /** The group if it is the caller's project's (any for an administrator); 404 otherwise. */
  group(auth: AuthContext, id: string): GroupRow {
    const row = this.row(id);
    if (!row || (!auth.isAdmin && row.project_id !== this.volumes.projectOf(auth))) throw errors.notFound('Group', id);
    return row;
  }

  /** Ids of the group's volumes, oldest first. */
  memberIds(groupId: string): string[] {
    return this.db.all<{ id: string }>('SELECT id FROM volumes WHERE group_id = ? ORDER BY created_at, id', groupId).map((r) => r.id);
  }

  volumeTypeIds(row: GroupRow): string[] {
    return JSON.parse(row.volume_type_ids) as string[];
  }

  list(auth: AuthContext, filter: GroupListFilter): GroupRow[] {
    return this.listRows<GroupRow>('volume_groups', auth, filter);
  }

  private listRows<T extends { id: string }>(table: 'volume_groups' | 'group_snapshots', auth: AuthContext, filter: GroupListFilter & { groupId?: string | null }): T[] {
    const conditions: string[] = [];
    const params: (string | number)[] = [];
    if (!(auth.isAdmin && filter.allProjects)) {
      conditions.push('project_id = ?');
      params.push(this.volumes.projectOf(auth));
    } else if (filter.projectId !== null) {
      conditions.push('project_id = ?');
      params.push(filter.projectId);
    }
    for (const [column, value] of [['name', filter.name], ['status', filter.status], ['group_id', filter.groupId ?? null]] as const) {
      if (value !== null) {
        conditions.push(`${column} = ?`);
        params.push(value);
      }
    }
    if (filter.marker !== null) {
      const marker = this.db.get<{ created_at: string; id: string }>(`SELECT created_at, id FROM ${table} WHERE id = ?`, filter.marker);
      if (!marker) throw errors.notFound('Marker', filter.marker);
      conditions.push('(created_at < ? OR (created_at = ? AND id < ?))');
      params.push(marker.created_at, marker.created_at, marker.id);
    }
    const where = conditions.length ? `WHERE ${conditions.join(' AND ')}` : '';
    return this.db.all<T>(`SELECT * FROM ${table} ${where} ORDER BY created_at DESC, id DESC LIMIT ?`, ...params, filter.limit);
  }

  /**
   * Creates an empty group of `volumeTypes` (ids or names, each accessible to
   * the caller) and `groupType`. It is available at once: it holds nothing yet.
   */
  create(auth: AuthContext, input: { name: string | null; description: string | null; groupType: string; volumeTypes: string[]; availabilityZone: string | null }): GroupRow {
    const projectId = this.volumes.projectOf(auth);
    const groupType = this.types.get(auth, input.groupType);
    if (input.volumeTypes.length === 0) throw errors.badRequest("Invalid input: 'volume_types' is empty; name at least one volume type the group's volumes will have.");
    const typeIds = [...new Set(input.volumeTypes.map((t) => this.volumes.volumeType(auth, t).id))];
    const zones = this.volumes.availabilityZones();
    const zone = input.availabilityZone ?? this.volumes.config.DEFAULT.default_availability_zone ?? this.volumes.config.DEFAULT.storage_availability_zone;
    if (!zones.includes(zone)) throw errors.badRequest(`Availability zone '${zone}' is invalid. Valid zones: ${zones.join(', ')}.`);
    const id = randomUUID();
    const now = nowIso();
    this.db.transaction(() => {
      this.checkQuota(projectId);
      this.db.run(
        `INSERT INTO volume_groups (id, project_id, user_id, name, description, status, group_type_id, volume_type_ids, availability_zone, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, 'available', ?, ?, ?, ?, ?)`,
        id, projectId, auth.userId, input.name, input.description, groupType.id, JSON.stringify(typeIds), zone, now, now,
      );
    });
    return this.row(id)!;
  }

  /** Cinder's groups quota: groups per project ([DEFAULT] quota of `groups`, -1 unlimited). */
  private checkQuota(projectId: string): void {
    const limit = this.volumes.quotas.limits(projectId).groups;
    const used = this.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM volume_groups WHERE project_id = ?', projectId)!.n;
    if (limit >= 0 && used + 1 > limit) {
      throw errors.quotaExceeded(`GroupLimitExceeded: Maximum number of groups allowed (${limit}) exceeded for quota 'groups'. Delete groups you no longer need, or ask an administrator to raise the quota (cinder quota-update --groups).`);
    }
  }

  /**
   * Creates a group from a group snapshot (one volume from each member
   * snapshot) or from another group (a clone of each member), all on the
   * source's backend, in one transaction. The group is `creating` until every
   * new volume is available (error if one fails).
   */
  createFromSource(auth: AuthContext, input: { name: string | null; description: string | null; groupSnapshotId: string | null; sourceGroupId: string | null }, requestId: string): GroupRow {
    if ((input.groupSnapshotId === null) === (input.sourceGroupId === null)) {
      throw errors.badRequest("Invalid input: give exactly one of 'group_snapshot_id' and 'source_group_id'.");
    }
    const projectId = this.volumes.projectOf(auth);
    return this.db.transaction(() => {
      let source: GroupRow;
      let members: { snapshotId?: string; sourceVolumeId?: string }[];
      if (input.groupSnapshotId !== null) {
        const groupSnapshot = this.groupSnapshot(auth, input.groupSnapshotId);
        requireStatus('group snapshot', groupSnapshot.id, groupSnapshot.status, 'creating a group from it', ['available']);
        source = this.row(groupSnapshot.group_id)!;
        members = this.db.all<SnapshotRow>(
          'SELECT * FROM snapshots WHERE group_snapshot_id = ? ORDER BY created_at, id',
          groupSnapshot.id,
        ).map((s) => ({ snapshotId: s.id }));
      } else {
        source = this.group(auth, input.sourceGroupId!);
        requireStatus('group', source.id, source.status, 'creating a group from it', ['available']);
        members = this.db.all<VolumeRow>('SELECT * FROM volumes WHERE group_id = ? ORDER BY created_at, id', source.id).map((v) => ({ sourceVolumeId: v.id }));
      }
      if (members.length === 0) throw errors.badRequest(`Invalid input: the source ${input.groupSnapshotId ? `group snapshot ${input.groupSnapshotId}` : `group ${source.id}`} has no volumes; create an empty group instead.`);
      this.checkQuota(projectId);
      const id = randomUUID();
      const now = nowIso();
      this.db.run(
        `INSERT INTO volume_groups (id, project_id, user_id, name, description, status, group_type_id, volume_type_ids, availability_zone, group_snapshot_id, source_group_id, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, 'creating', ?, ?, ?, ?, ?, ?, ?)`,
        id, projectId, auth.userId, input.name, input.description, source.group_type_id, source.volume_type_ids, source.availability_zone,
        input.groupSnapshotId, input.sourceGroupId, now, now,
      );
      for (const member of members) {
        const volume = this.volumes.createVolume(auth, { snapshotId: member.snapshotId ?? null, sourceVolumeId: member.sourceVolumeId ?? null, metadata: {} }, requestId);
        if (volume.status === 'error') throw errors.backendUnavailable(`A volume of the new group could not be placed: ${volume.status_reason ?? 'no backend'}. Nothing was created.`);
        this.db.run('UPDATE volumes SET group_id = ? WHERE id = ?', id, volume.id);
      }
      // Runs once the new volumes are made (their create tasks write them; this one reads them).
      this.queueSync(id, []);
      return this.row(id)!;
    });
  }

  /**
   * Renames, re-describes, adds and removes volumes in one transaction.
   * Added volumes must be the project's, available or in-use, of one of the
   * group's volume types, in no other group, and on the backend of the
   * group's other volumes; removed ones must be members. 400 naming the
   * volume otherwise, nothing changed.
   */
  update(auth: AuthContext, id: string, changes: { name?: string | null; description?: string | null; addVolumes: string[]; removeVolumes: string[] }): void {
    this.db.transaction(() => {
      const row = this.group(auth, id);
      if (changes.addVolumes.length > 0 || changes.removeVolumes.length > 0) {
        requireStatus('group', id, row.status, 'adding or removing volumes', ['available', 'in-use']);
      }
      const both = changes.addVolumes.find((v) => changes.removeVolumes.includes(v));
      if (both) throw errors.badRequest(`Invalid input: volume ${both} is in both add_volumes and remove_volumes; name it in one.`);
      for (const volumeId of changes.removeVolumes) {
        const volume = this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', volumeId);
        if (!volume || volume.group_id !== id) throw errors.badRequest(`Invalid volume: volume ${volumeId} is not in group ${id}, so it cannot be removed from it.`);
        requireStatus('volume', volumeId, volume.status, 'removing it from a group', ['available', 'in-use', 'error', 'error_deleting']);
        this.db.run('UPDATE volumes SET group_id = NULL, updated_at = ? WHERE id = ?', nowIso(), volumeId);
      }
      const typeIds = this.volumeTypeIds(row);
      for (const volumeId of changes.addVolumes) {
        if (!uuidLike.test(volumeId)) throw errors.badRequest(`Invalid input: '${volumeId.slice(0, 60)}' in add_volumes is not a volume id.`);
        let volume: VolumeRow;
        try {
          volume = this.volumes.volume(auth, volumeId);
        } catch {
          throw errors.badRequest(`Invalid volume: volume ${volumeId} is not found in your project, so it cannot be added to group ${id}.`);
        }
        if (volume.project_id !== row.project_id) throw errors.badRequest(`Invalid volume: volume ${volumeId} belongs to another project than group ${id}.`);
        if (volume.group_id === id) throw errors.badRequest(`Invalid volume: volume ${volumeId} is already in group ${id}.`);
        if (volume.group_id) throw errors.badRequest(`Invalid volume: volume ${volumeId} is already in group ${volume.group_id}; remove it from there first.`);
        requireStatus('volume', volumeId, volume.status, 'adding it to a group', ['available', 'in-use']);
        if (!volume.volume_type_id || !typeIds.includes(volume.volume_type_id)) {
          throw errors.badRequest(`Invalid volume: volume ${volumeId} has volume type ${volume.volume_type_id ?? '(none)'}, which group ${id} does not support (its volume types: ${typeIds.join(', ')}).`);
        }
        const peer = this.db.get<{ id: string; backend: string | null }>('SELECT id, backend FROM volumes WHERE group_id = ? LIMIT 1', id);
        if (peer && peer.backend !== volume.backend) {
          throw errors.badRequest(`Invalid volume: volume ${volumeId} is on backend ${volume.backend ?? '(none)'} and group ${id}'s volumes are on ${peer.backend ?? '(none)'}; a group's volumes share one backend so that a group snapshot is taken at one moment.`);
        }
        if (this.memberIds(id).length >= groupVolumesMax) throw errors.badRequest(`Invalid input: group ${id} already holds ${groupVolumesMax} volumes, the most one group may hold.`);
        this.db.run('UPDATE volumes SET group_id = ?, updated_at = ? WHERE id = ?', id, nowIso(), volumeId);
      }
      this.db.run(
        'UPDATE volume_groups SET name = ?, description = ?, updated_at = ? WHERE id = ?',
        changes.name === undefined ? row.name : changes.name, changes.description === undefined ? row.description : changes.description, nowIso(), id,
      );
      if (changes.addVolumes.length > 0 || changes.removeVolumes.length > 0) this.queueSync(id, changes.removeVolumes);
    });
  }

  /**
   * Queues `group.sync` on the backend of the group's volumes (or of `leftIds`, the volumes that
   * just left it) when that backend keeps groups of its own; nothing otherwise. Call it in the
   * transaction that changes the membership. The task reads every volume it may touch: a delete,
   * extend or create of one of them runs before or after it, never during.
   */
  private queueSync(groupId: string, leftIds: readonly string[]): void {
    const memberIds = this.memberIds(groupId);
    const placed = this.db.get<{ backend: string }>(
      `SELECT backend FROM volumes WHERE id IN (${[...memberIds, ...leftIds].map(() => '?').join(',') || 'NULL'}) AND backend IS NOT NULL LIMIT 1`,
      ...memberIds, ...leftIds,
    );
    const backend = placed ? this.volumes.manager.backends.get(placed.backend) : undefined;
    if (!backend || !hasGroupSnapshots(backend.driver)) return;
    this.volumes.queue.enqueue('group.sync', groupId, placed!.backend, {}, { locks: { write: [groupWorkLock(groupId)], read: [...memberIds, ...leftIds] } });
  }

  /**
   * Deletes a group. With `deleteVolumes` its volumes are deleted too (each
   * must be deletable; nothing happens if one is not) and the group is
   * `deleting` until they are gone; without it, a group that holds volumes
   * is refused. A group with group snapshots is refused either way.
   */
  delete(auth: AuthContext, id: string, deleteVolumes: boolean): void {
    this.db.transaction(() => {
      const row = this.group(auth, id);
      if (row.status === 'deleting') return;
      requireStatus('group', id, row.status, 'delete', ['available', 'error', 'error_deleting', 'in-use']);
      const snapshots = this.db.all<{ id: string }>('SELECT id FROM group_snapshots WHERE group_id = ? ORDER BY id LIMIT 5', id);
      if (snapshots.length > 0) throw errors.badRequest(`Invalid group: group ${id} has group snapshot(s) ${snapshots.map((s) => s.id).join(', ')}. Delete them first.`);
      const members = this.memberIds(id);
      if (members.length > 0 && !deleteVolumes) {
        throw errors.badRequest(`Invalid group: group ${id} still holds ${members.length} volume(s). Delete it with delete-volumes (openstack volume group delete --force), or remove the volumes from it first.`);
      }
      if (members.length === 0) {
        this.db.run('DELETE FROM volume_groups WHERE id = ?', id);
        return;
      }
      if (!this.states.groups.transition(id, ['available', 'error', 'error_deleting', 'in-use'], 'deleting', { status_reason: null })) {
        throw errors.conflict(`Invalid group: group ${id} changed state while the delete was requested; retry.`);
      }
      for (const volumeId of members) this.volumes.deleteVolume(auth, volumeId, { cascade: false, force: false, ofGroup: id });
      // A volume never placed on a backend is deleted at once: its group may be done already.
      followMembers(this.db, 'group', id);
    });
  }

  /** os-reset_status of a group (administrators): any group status, nothing else touched. */
  resetStatus(auth: AuthContext, id: string, status: string): void {
    this.group(auth, id);
    if (!groupStatuses.includes(status as GroupStatus)) {
      throw errors.invalidInput(`Invalid input: status '${status}' is not a group status. Valid: ${groupStatuses.join(', ')}.`);
    }
    this.states.groups.force(id, status as GroupStatus, { status_reason: null }, 'group reset_status');
  }

  // ---- group snapshots ----

  /** The group snapshot if the caller's project's (any for an administrator); 404 otherwise. */
  groupSnapshot(auth: AuthContext, id: string): GroupSnapshotRow {
    const row = this.db.get<GroupSnapshotRow>('SELECT * FROM group_snapshots WHERE id = ?', id);
    if (!row || (!auth.isAdmin && row.project_id !== this.volumes.projectOf(auth))) throw errors.notFound('Group snapshot', id);
    return row;
  }

  listSnapshots(auth: AuthContext, filter: GroupListFilter & { groupId: string | null }): GroupSnapshotRow[] {
    return this.listRows<GroupSnapshotRow>('group_snapshots', auth, filter);
  }

  /**
   * Takes a snapshot of every volume of an available group, in one
   * transaction: every member must be `available` (no attached writer, so the
   * set is of one moment) and the group must hold at least one volume.
   */
  createSnapshot(auth: AuthContext, input: { groupId: string; name: string | null; description: string | null }): GroupSnapshotRow {
    return this.db.transaction(() => {
      const group = this.group(auth, input.groupId);
      requireStatus('group', group.id, group.status, 'taking a group snapshot', ['available', 'in-use']);
      const members = this.db.all<VolumeRow>('SELECT * FROM volumes WHERE group_id = ? ORDER BY created_at, id', group.id);
      if (members.length === 0) throw errors.badRequest(`Invalid group: group ${group.id} holds no volumes; add volumes (openstack volume group update --add-volume) before taking a group snapshot.`);
      const backend = members[0]!.backend ? this.volumes.manager.backends.get(members[0]!.backend) : undefined;
      const atOneMoment = backend !== undefined && hasGroupSnapshots(backend.driver);
      const busy = members.find((m) => m.status !== 'available' && !(atOneMoment && m.status === 'in-use'));
      if (busy) {
        if (atOneMoment) throw errors.badRequest(`Invalid volume: volume ${busy.id} of group ${group.id} is '${busy.status}'. A group snapshot needs every volume of the group 'available' or 'in-use'; wait until it is.`);
        throw errors.badRequest(`Invalid volume: volume ${busy.id} of group ${group.id} is '${busy.status}'. A group snapshot needs every volume of the group 'available' (detached) on backend ${members[0]!.backend ?? '(none)'}, which cannot snapshot several volumes at one moment (an RBD backend can), so that all the snapshots hold the bytes of one moment; detach it first.`);
      }
      const id = randomUUID();
      const now = nowIso();
      this.db.run(
        `INSERT INTO group_snapshots (id, project_id, user_id, group_id, group_type_id, name, description, status, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, 'creating', ?, ?)`,
        id, group.project_id, auth.userId, group.id, group.group_type_id, input.name, input.description, now, now,
      );
      for (const member of members) {
        const snapshot = this.volumes.createSnapshot(auth, {
          volumeId: member.id, name: `group-snapshot-${id}`, description: input.description, force: atOneMoment, metadata: {},
          // Any member's task may take the one group snapshot of them all: each locks the group and every member.
          locks: { write: [groupWorkLock(group.id)], read: members.map((m) => m.id) },
        });
        this.db.run('UPDATE snapshots SET group_snapshot_id = ? WHERE id = ?', id, snapshot.id);
      }
      return this.db.get<GroupSnapshotRow>('SELECT * FROM group_snapshots WHERE id = ?', id)!;
    });
  }

  /** Deletes a group snapshot and its member snapshots (each must be deletable; nothing happens otherwise). */
  deleteSnapshot(auth: AuthContext, id: string): void {
    this.db.transaction(() => {
      const row = this.groupSnapshot(auth, id);
      if (row.status === 'deleting') return;
      requireStatus('group snapshot', id, row.status, 'delete', ['available', 'error', 'error_deleting']);
      const fromIt = this.db.all<{ id: string }>('SELECT id FROM volume_groups WHERE group_snapshot_id = ? AND status = ? ORDER BY id LIMIT 5', id, 'creating');
      if (fromIt.length > 0) throw errors.badRequest(`Invalid group snapshot: group(s) ${fromIt.map((g) => g.id).join(', ')} are being created from group snapshot ${id}; wait until they are available.`);
      const members = this.db.all<{ id: string }>('SELECT id FROM snapshots WHERE group_snapshot_id = ? ORDER BY id', id);
      if (members.length === 0) {
        this.db.run('DELETE FROM group_snapshots WHERE id = ?', id);
        return;
      }
      if (!this.states.groupSnapshots.transition(id, ['available', 'error', 'error_deleting'], 'deleting', { status_reason: null })) {
        throw errors.conflict(`Invalid group snapshot: group snapshot ${id} changed state while the delete was requested; retry.`);
      }
      for (const member of members) this.volumes.deleteSnapshot(auth, member.id, false, true);
      followMembers(this.db, 'group snapshot', id);
    });
  }

  /** reset_status of a group snapshot (administrators). */
  resetSnapshotStatus(auth: AuthContext, id: string, status: string): void {
    this.groupSnapshot(auth, id);
    if (!groupSnapshotStatuses.includes(status as GroupSnapshotStatus)) {
      throw errors.invalidInput(`Invalid input: status '${status}' is not a group snapshot status. Valid: ${groupSnapshotStatuses.join(', ')}.`);
    }
    this.states.groupSnapshots.force(id, status as GroupSnapshotStatus, { status_reason: null }, 'group snapshot reset_status');
  }
}

/** What a group or group snapshot follows: its member rows, and the words of its reasons. */
const followed = {
  group: { table: 'volume_groups', members: 'SELECT status, status_reason FROM volumes WHERE group_id = ?', member: 'a volume of the group' },
  'group snapshot': { table: 'group_snapshots', members: 'SELECT status, status_reason FROM snapshots WHERE group_snapshot_id = ?', member: 'a member snapshot' },
} as const;

/** The statuses a group and a group snapshot share: the ones that follow their members. */
type FollowingStatus = GroupStatus & GroupSnapshotStatus;

/**
 * Moves a group or group snapshot that follows its members after one of them
 * changed: `creating` becomes `available` when every member is (`error`, with
 * the member's reason, when one failed); `deleting` goes (the row is removed)
 * when no member is left, or becomes `error_deleting` when a member could not
 * be deleted. Any other status, or a null / gone id, is left alone. Call it in
 * the transaction that changed the member, so that the two are one write
 * (a crash leaves both or neither); calling it again changes nothing.
 */
export function followMembers(db: Db, kind: 'group' | 'group snapshot', id: string | null | undefined): void {
  if (!id) return;
  const { table, members: membersSql, member } = followed[kind];
  const row = db.get<{ status: string }>(`SELECT status FROM ${table} WHERE id = ?`, id);
  if (!row || (row.status !== 'creating' && row.status !== 'deleting')) return;
  const states = resourceStates(db);
  const owner = (kind === 'group' ? states.groups : states.groupSnapshots) as ResourceStates<FollowingStatus>;
  const members = db.all<{ status: string; status_reason: string | null }>(membersSql, id);
  if (row.status === 'creating') {
    const failed = members.find((m) => m.status === 'error');
    if (failed) owner.transition(id, ['creating'], 'error', { status_reason: `${member} failed: ${failed.status_reason ?? 'error'}` });
    else if (members.every((m) => m.status === 'available')) owner.transition(id, ['creating'], 'available');
  } else if (members.length === 0) {
    db.run(`DELETE FROM ${table} WHERE id = ? AND status = 'deleting'`, id);
  } else if (members.some((m) => m.status === 'error_deleting')) {
    owner.transition(id, ['deleting'], 'error_deleting', { status_reason: `${member} could not be deleted` });
  }
}

/**
 * Registers the volume role's group task: `group.sync` (resource: the group; queue: the backend)
 * makes the backend's group hold the group's volumes on that backend as the database has them
 * when it runs. A failure is logged only: the next group snapshot syncs the members anyway.
 */
export function registerGroupTasks(deps: { db: Db; queue: TaskQueue; ready(section: string): VolumeBackend; log(message: string): void }): void {
  deps.queue.register(
    'group.sync',
    async (task: Task) => {
      const driver = deps.ready(task.queue);
      if (!hasGroupSnapshots(driver)) return;
      // A deleting volume leaves its backend group in its own delete task.
      const volumeIds = deps.db.all<{ id: string }>(
        "SELECT id FROM volumes WHERE group_id = ? AND backend = ? AND status NOT IN ('deleting', 'error_deleting') ORDER BY created_at, id",
        task.resourceId, task.queue,
      ).map((r) => r.id);
      task.checkpoint('group.sync.before');
      await driver.syncGroupMembers(task.resourceId, volumeIds);
      task.checkpoint('group.sync.synced');
    },
    (task, reason) => deps.log(`group ${task.resourceId}: its backend group could not be synced with its volumes (the next group snapshot syncs them): ${reason}`),
  );
}
