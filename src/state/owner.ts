/**
 * The one owner of resource status. Every status change of a volume,
 * snapshot, backup, image, attachment, block device mapping or server row
 * goes through `resourceStates(db)` (servers: ./servers.ts, two columns):
 *
 *   const states = resourceStates(db);
 *   states.volumes.transition(volumeId, ['available'], 'attaching');            // CAS: true if moved
 *   states.volumes.transition(volumeId, ['attaching'], 'in-use', { attach_status: 'attached' });
 *   states.volumes.force(volumeId, 'available', {}, 'os-reset_status');          // admin reset
 *
 * `transition(id, from, to, changes)` is a compare-and-set: it moves the row
 * to `to` (setting the other `changes` columns and updated_at) only when its
 * status is one of `from`, and returns whether it did. A CAS miss (the row
 * moved meanwhile, or is gone) is an expected outcome: the caller decides
 * (a 409 in the API, nothing in a task whose resource was reset). Every
 * `from → to` pair must be in the kind's transition table (./tables.ts); an
 * illegal pair is a bug: it throws under tests (node --test, or
 * PUMICE_STRICT_STATES=1) and in production is refused with a logged error,
 * the row left alone.
 *
 * `force(id, to, changes, reason)` is os-reset_status and force-delete: it
 * sets any status, and fences the tasks that write the resource (queued ones
 * are cancelled, running ones stop at their next checkpoint without writing).
 *
 * Attachments (reserved / attaching / in-use / detaching) call
 * `states.volumes.transition` with the pairs the volume table allows:
 * available → reserved | attaching | in-use; reserved → attaching | in-use | available | reserved;
 * attaching → in-use | available | error | attaching | reserved;
 * in-use → detaching | in-use | available | attaching | reserved; detaching → available | in-use | error.
 * (A helper like attachments.ts's moveVolume becomes
 * `resourceStates(db).volumes.transition(volumeId, from, to, changes)`.)
 *
 * Glance's task records (`states.imageTasks`, image_tasks) and image
 * members (`states.imageMembers`, keyed by [imageId, memberId]) move the same
 * way; they have no tasks of their own to fence.
 *
 * Why one folder for all kinds: the engine (CAS, strictness, fencing) is the
 * same for every kind and some operations move two kinds at once (a backup
 * holds its volume), so the tables sit side by side where one reader sees them.
 */
import { nowIso, type Db, type SqlValue } from '../db/db.ts';
import { emitEvent } from '../events.ts';
import { SqliteTaskStore, type TaskStore } from '../tasks/store.ts';
import { noteLocalFence } from '../tasks/queue.ts';
import { attachmentTransitions, backupTransitions, bdmTransitions, groupSnapshotTransitions, groupTransitions, imageMemberTransitions, imageTaskTransitions, imageTransitions, snapshotTransitions, volumeTransitions, type AttachmentStatus, type BackupStatus, type BdmStatus, type GroupSnapshotStatus, type GroupStatus, type ImageMemberStatus, type ImageStatus, type ImageTaskStatus, type SnapshotStatus, type VolumeStatus } from './tables.ts';
import { ServerStates } from './servers.ts';

/** Columns a transition may set besides status (names are code, never input; checked anyway). */
export type StatusChanges = Record<string, SqlValue>;

const columnName = /^[a-z_][a-z0-9_]*$/;

/** Illegal transitions throw under tests (node --test children carry NODE_TEST_CONTEXT) or with PUMICE_STRICT_STATES=1. */
function strictFromEnv(): boolean {
  const flag = process.env['PUMICE_STRICT_STATES'];
  if (flag === '1') return true;
  if (flag === '0') return false;
  return process.env['NODE_TEST_CONTEXT'] !== undefined;
}

export class IllegalTransitionError extends Error {}

export interface StateOwnerOptions {
  log: (message: string) => void;
  strict: boolean;
  tasks: Pick<TaskStore, 'fenceResource'>;
}

/** A row's key: its id, or the values of the key columns in order (image members: [imageId, memberId]). */
export type RowKey = string | readonly [string, string];

export class ResourceStates<S extends string, K extends RowKey = string> {
  constructor(
    private readonly db: Db,
    readonly kind: 'volume' | 'snapshot' | 'backup' | 'image' | 'attachment' | 'block device mapping' | 'group' | 'group snapshot' | 'image task' | 'image member',
    private readonly table: 'volumes' | 'snapshots' | 'backups' | 'images' | 'volume_attachments' | 'block_device_mappings' | 'volume_groups' | 'group_snapshots' | 'image_tasks' | 'image_members',
    private readonly transitions: Readonly<Record<S, readonly S[]>>,
    private readonly options: StateOwnerOptions,
    /** The status column: attachments keep theirs in attach_status. */
    private readonly column: 'status' | 'attach_status' = 'status',
    /** The key columns, in the order of a key's values. */
    private readonly keyColumns: readonly string[] = ['id'],
  ) {}

  private where(key: K): { sql: string; params: string[]; label: string } {
    const params: string[] = typeof key === 'string' ? [key] : [...key];
    if (params.length !== this.keyColumns.length) throw new Error(`a ${this.kind} is keyed by ${this.keyColumns.join(', ')}`);
    return { sql: this.keyColumns.map((c) => `${c} = ?`).join(' AND '), params, label: params.join('/') };
  }

  /** True when the table allows `from → to`. */
  allowed(from: S, to: S): boolean {
    return this.transitions[from]?.includes(to) ?? false;
  }

  /**
   * Moves row `id` to `to` if its status is one of `from` (compare-and-set),
   * also setting `changes`. Returns whether the row moved. An illegal pair
   * throws under tests and is refused (logged, false) in production.
   */
  transition(id: K, from: S | readonly S[], to: S, changes: StatusChanges = {}): boolean {
    const sources = (typeof from === 'string' ? [from] : from) as readonly S[];
    const key = this.where(id);
    const illegal = sources.filter((s) => !this.allowed(s, to));
    if (illegal.length > 0 || sources.length === 0) {
      const message = `illegal ${this.kind} transition ${illegal.join('|') || '(none)'} → ${to} for ${this.kind} ${key.label}: not in the transition table (src/state/tables.ts)`;
      if (this.options.strict) throw new IllegalTransitionError(message);
      this.options.log(`ERROR ${message}; refused, the row is left alone`);
      return false;
    }
    const { sql, params } = this.update(changes);
    const marks = sources.map(() => '?').join(',');
    const moved = this.db.run(`${sql} WHERE ${key.sql} AND ${this.column} IN (${marks})`, to, ...params, ...key.params, ...sources).changes === 1;
    emitEvent('state.transition', { resource: this.kind, id: key.label, from: sources, to, moved });
    return moved;
  }

  /**
   * os-reset_status (and force-delete): sets `to` whatever the status is, and
   * fences the tasks that write the resource. Returns false if the row is gone.
   */
  force(id: K, to: S, changes: StatusChanges, reason: string): boolean {
    const key = this.where(id);
    return this.db.transaction(() => {
      const { sql, params } = this.update(changes);
      const moved = this.db.run(`${sql} WHERE ${key.sql}`, to, ...params, ...key.params).changes === 1;
      emitEvent('state.forced', { resource: this.kind, id: key.label, to, moved, reason });
      if (moved) {
        noteLocalFence();
        const { cancelled, fenced } = this.options.tasks.fenceResource(key.label, reason);
        if (cancelled + fenced > 0) this.options.log(`${this.kind} ${key.label} set to ${to} (${reason}): ${cancelled} queued task(s) cancelled, ${fenced} running task(s) fenced`);
      }
      return moved;
    });
  }

  private update(changes: StatusChanges): { sql: string; params: SqlValue[] } {
    const columns = Object.keys(changes);
    for (const c of columns) {
      if (!columnName.test(c) || c === this.column || this.keyColumns.includes(c)) throw new Error(`bad column '${c}' in a ${this.kind} transition`);
    }
    // Block device mappings keep no updated_at (the server's row carries it).
    const stamped = this.table !== 'block_device_mappings';
    const sets = [`${this.column} = ?`, ...columns.map((c) => `${c} = ?`), ...(stamped ? ['updated_at = ?'] : [])];
    return { sql: `UPDATE ${this.table} SET ${sets.join(', ')}`, params: [...columns.map((c) => changes[c]!), ...(stamped ? [nowIso()] : [])] };
  }
}

export interface ResourceStateOwners {
  volumes: ResourceStates<VolumeStatus>;
  snapshots: ResourceStates<SnapshotStatus>;
  backups: ResourceStates<BackupStatus>;
  images: ResourceStates<ImageStatus>;
  attachments: ResourceStates<AttachmentStatus>;
  blockDeviceMappings: ResourceStates<BdmStatus>;
  groups: ResourceStates<GroupStatus>;
  groupSnapshots: ResourceStates<GroupSnapshotStatus>;
  imageTasks: ResourceStates<ImageTaskStatus>;
  imageMembers: ResourceStates<ImageMemberStatus, readonly [imageId: string, memberId: string]>;
  servers: ServerStates;
}

const ownersByDb = new WeakMap<Db, ResourceStateOwners>();

/** The state owners of a database (one set per Db; options apply the first time). */
export function resourceStates(db: Db, options: Partial<StateOwnerOptions> = {}): ResourceStateOwners {
  let owners = ownersByDb.get(db);
  if (!owners) {
    const full: StateOwnerOptions = {
      log: options.log ?? ((message) => console.error(`${new Date().toISOString()} ${message}`)),
      strict: options.strict ?? strictFromEnv(),
      tasks: options.tasks ?? new SqliteTaskStore(db),
    };
    owners = {
      volumes: new ResourceStates(db, 'volume', 'volumes', volumeTransitions, full),
      snapshots: new ResourceStates(db, 'snapshot', 'snapshots', snapshotTransitions, full),
      backups: new ResourceStates(db, 'backup', 'backups', backupTransitions, full),
      images: new ResourceStates(db, 'image', 'images', imageTransitions, full),
      attachments: new ResourceStates(db, 'attachment', 'volume_attachments', attachmentTransitions, full, 'attach_status'),
      blockDeviceMappings: new ResourceStates(db, 'block device mapping', 'block_device_mappings', bdmTransitions, full),
      groups: new ResourceStates(db, 'group', 'volume_groups', groupTransitions, full),
      groupSnapshots: new ResourceStates(db, 'group snapshot', 'group_snapshots', groupSnapshotTransitions, full),
      imageTasks: new ResourceStates(db, 'image task', 'image_tasks', imageTaskTransitions, full),
      imageMembers: new ResourceStates(db, 'image member', 'image_members', imageMemberTransitions, full, 'status', ['image_id', 'member_id']),
      servers: new ServerStates(db, full),
    };
    ownersByDb.set(db, owners);
  }
  return owners;
}
