/**
 * Volume service domain logic on the API side: checks requests against
 * states, quotas and ownership, writes the resource in its first state and
 * enqueues its task in the same transaction. Drivers are only reached through
 * tasks, except for the synchronous connection calls of the attach flow.
 */
import { randomUUID } from 'node:crypto';
import type { PumiceConfig } from '../config/config.ts';
import { nowIso, type Db, type SqlValue } from '../db/db.ts';
import { errors, PumiceError } from '../errors.ts';
import { emitEvent } from '../events.ts';
import type { AuthContext } from '../http/router.ts';
import type { TaskQueue } from '../tasks/queue.ts';
import { hasManageExisting, hasManageExistingSnapshots, hasSnapshots, type Connector, type ConnectionInfo } from './drivers/driver.ts';
import { resourceStates } from '../state/owner.ts';
import { volumeImageMetadata, type ImageRecord } from './images.ts';
import { isLocalDriver, type BackendState, type CreatePayload, type SnapshotCreatePayload, type VolumeManager } from './manager.ts';
import type { MigratePayload } from './migration.ts';
import { volumeQos } from './qos.ts';
import type { Quotas } from './quotas.ts';
import type { AttachmentRow, SnapshotRow, VolumeRow, VolumeTypeRow } from './records.ts';
import { schedule, schedulingFailureTexts } from './scheduler/scheduler.ts';
import {
  requireStatus,
  snapshotDeletableStatuses,
  volumeDeletableStatuses,
  volumeExtendableStatuses,
  volumeStatuses,
  snapshotStatuses,
  type SnapshotStatus,
  type VolumeStatus,
} from './states.ts';

export const defaultTypeName = '__DEFAULT__';

export interface CreateVolumeInput {
  size?: number | null;
  name?: string | null;
  description?: string | null;
  volumeType?: string | null;
  availabilityZone?: string | null;
  metadata?: Record<string, string>;
  sourceVolumeId?: string | null;
  snapshotId?: string | null;
  bootable?: boolean;
  /** The backup to restore into the new volume (volume create with backup_id). */
  backupId?: string | null;
  /** The image to fill the volume from, as the image service showed it to the caller. */
  image?: ImageRecord | null;
  /** The volume cannot be made (e.g. the image service is unreachable): it is recorded in error with this reason. */
  failure?: string | null;
}

export interface Page<T> {
  rows: T[];
  hasMore: boolean;
  count?: number;
}

export interface ListQuery {
  conditions: string[];
  params: SqlValue[];
  sort: { key: string; dir: 'asc' | 'desc' }[];
  limit: number;
  marker: string | null;
  withCount: boolean;
}

export class VolumeService {
  constructor(
    private readonly db: Db,
    /** The configuration (the API reads its policy file and response-validation flag from it). */
    readonly config: PumiceConfig,
    readonly queue: TaskQueue,
    readonly manager: VolumeManager,
    readonly quotas: Quotas,
  ) {}

  // ---- access ----
  // Who may call what is the route's rule in the Block Storage policy table (api/policy.ts), checked
  // before these methods run; they only scope lookups to the caller's project (another's is a 404).

  projectOf(auth: AuthContext): string {
    if (!auth.projectId) throw errors.forbidden('block storage calls with a token that is not scoped to a project');
    return auth.projectId;
  }

  /** Finds a volume the caller may see; another project's volume is a 404, never a 403. */
  volume(auth: AuthContext, id: string): VolumeRow {
    const row = this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', id);
    if (!row || (!auth.isAdmin && row.project_id !== auth.projectId)) throw errors.notFound('Volume', id);
    return row;
  }

  /**
   * Where a volume's data lives: its backend, the volume service's host, whether other hosts
   * share the storage (RBD) or it sits on one host's disk (local), and whether that backend is
   * up now. Null for a volume never placed, or on a backend this process does not serve.
   */
  backendOf(volumeId: string): { name: string; host: string; shared: boolean; up: boolean; downReason: string | null } | null {
    const row = this.db.get<{ backend: string | null }>('SELECT backend FROM volumes WHERE id = ?', volumeId);
    const state = row?.backend ? this.manager.backends.get(row.backend) : undefined;
    if (!state) return null;
    return { name: state.config.section, host: state.host, shared: !isLocalDriver(state.config.volume_driver), up: state.up, downReason: state.downReason };
  }

  snapshot(auth: AuthContext, id: string): SnapshotRow {
    const row = this.db.get<SnapshotRow>('SELECT * FROM snapshots WHERE id = ?', id);
    if (!row || (!auth.isAdmin && row.project_id !== auth.projectId)) throw errors.notFound('Snapshot', id);
    return row;
  }

  attachments(volumeId: string): AttachmentRow[] {
    return this.db.all<AttachmentRow>('SELECT * FROM volume_attachments WHERE volume_id = ? ORDER BY attach_time', volumeId);
  }

  // ---- volume types ----
  typesById(): Map<string, VolumeTypeRow> {
    return new Map(this.db.all<VolumeTypeRow>('SELECT * FROM volume_types').map((t) => [t.id, t]));
  }

  /** Names of the types `ids` by id: one lookup when they are one type (a volume shown or created), every type otherwise. */
  typeNames(ids: readonly (string | null)[]): Map<string, string> {
    const wanted = new Set(ids.filter((id): id is string => id !== null));
    if (wanted.size === 1) {
      const [id] = wanted;
      const row = this.db.get<{ name: string }>('SELECT name FROM volume_types WHERE id = ?', id!);
      return new Map(row ? [[id!, row.name]] : []);
    }
    if (wanted.size === 0) return new Map();
    return new Map(this.db.all<{ id: string; name: string }>('SELECT id, name FROM volume_types').map((t) => [t.id, t.name]));
  }

  extraSpecs(typeId: string): Record<string, string> {
    const specs: Record<string, string> = {};
    for (const row of this.db.all<{ key: string; value: string }>('SELECT key, value FROM volume_type_extra_specs WHERE volume_type_id = ? ORDER BY key', typeId)) {
      specs[row.key] = row.value;
    }
    return specs;
  }

  typeAccessible(auth: AuthContext, type: VolumeTypeRow): boolean {
    if (type.is_public || auth.isAdmin) return true;
    return !!this.db.get('SELECT 1 FROM volume_type_projects WHERE volume_type_id = ? AND project_id = ?', type.id, auth.projectId ?? '');
  }

  /** Finds a type by id or name that the caller may use; a 404 otherwise. */
  volumeType(auth: AuthContext, idOrName: string): VolumeTypeRow {
    const row =
      this.db.get<VolumeTypeRow>('SELECT * FROM volume_types WHERE id = ?', idOrName) ??
      this.db.get<VolumeTypeRow>('SELECT * FROM volume_types WHERE name = ?', idOrName);
    if (!row || !this.typeAccessible(auth, row)) throw errors.notFound('Volume type', idOrName);
    return row;
  }

  /** The project's default type (default-types, 3.62) when an administrator set one, else the configured default. */
  defaultTypeFor(projectId: string): VolumeTypeRow {
    return this.db.get<VolumeTypeRow>('SELECT t.* FROM volume_types t JOIN default_volume_types d ON d.volume_type_id = t.id WHERE d.project_id = ?', projectId) ?? this.defaultType();
  }

  defaultType(): VolumeTypeRow {
    const name = this.config.DEFAULT.default_volume_type;
    const row = this.db.get<VolumeTypeRow>('SELECT * FROM volume_types WHERE name = ?', name) ?? this.db.get<VolumeTypeRow>('SELECT * FROM volume_types WHERE name = ?', defaultTypeName);
    if (!row) throw errors.badRequest(`The default volume type '${name}' does not exist: create it (openstack volume type create ${name}) or set default_volume_type.`);
    return row;
  }

  /** Creates the `__DEFAULT__` type on first start, as Cinder does. */
  ensureDefaultType(): void {
    if (this.db.get('SELECT 1 FROM volume_types WHERE name = ?', defaultTypeName)) return;
    this.db.run('INSERT INTO volume_types (id, name, description, is_public, created_at) VALUES (?, ?, ?, 1, ?)', randomUUID(), defaultTypeName, 'Default Volume Type', nowIso());
  }

  availabilityZones(): string[] {
    return [...new Set([...this.manager.backends.values()].map((b) => b.config.backend_availability_zone!))];
  }

  // ---- volumes ----
  createVolume(auth: AuthContext, input: CreateVolumeInput, requestId: string): VolumeRow {
    const projectId = this.projectOf(auth);
    let source: CreatePayload['source'];
    let forcedBackend: string | null = null;
    let size = input.size ?? null;
    let typeRow: VolumeTypeRow | undefined;
    let availabilityZone = input.availabilityZone ?? null;
    let bootable = input.bootable ?? false;

    if (input.snapshotId) {
      const snap = this.snapshot(auth, input.snapshotId);
      requireStatus('snapshot', snap.id, snap.status, 'creating a volume from it', ['available']);
      const parent = this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', snap.volume_id);
      if (!parent) throw errors.notFound('Volume', snap.volume_id);
      size ??= snap.size_gib;
      if (size < snap.size_gib) throw errors.invalidInput(`Invalid input: volume size ${size} GiB is smaller than the snapshot's ${snap.size_gib} GiB; ask for at least ${snap.size_gib}.`);
      source = { kind: 'snapshot', id: snap.id };
      forcedBackend = parent.backend;
      typeRow = parent.volume_type_id ? this.typesById().get(parent.volume_type_id) : undefined;
      availabilityZone ??= parent.availability_zone;
      bootable = bootable || !!parent.bootable;
    } else if (input.sourceVolumeId) {
      const src = this.volume(auth, input.sourceVolumeId);
      requireStatus('volume', src.id, src.status, 'cloning it', ['available', 'in-use']);
      size ??= src.size_gib;
      if (size < src.size_gib) throw errors.invalidInput(`Invalid input: volume size ${size} GiB is smaller than the source volume's ${src.size_gib} GiB; ask for at least ${src.size_gib}.`);
      source = { kind: 'volume', id: src.id };
      forcedBackend = src.backend;
      typeRow = src.volume_type_id ? this.typesById().get(src.volume_type_id) : undefined;
      availabilityZone ??= src.availability_zone;
      bootable = bootable || !!src.bootable;
    }
    if (input.backupId) {
      const backup = this.db.get<{ id: string; project_id: string; status: string; size_gib: number }>('SELECT id, project_id, status, size_gib FROM backups WHERE id = ?', input.backupId);
      if (!backup || (!auth.isAdmin && backup.project_id !== auth.projectId)) throw errors.notFound('Backup', input.backupId);
      requireStatus('backup', backup.id, backup.status, 'creating a volume from it', ['available']);
      size ??= backup.size_gib;
      if (size < backup.size_gib) throw errors.invalidInput(`Invalid input: volume size ${size} GiB is smaller than backup ${backup.id}'s ${backup.size_gib} GiB; ask for at least ${backup.size_gib}.`);
      source = { kind: 'backup', id: backup.id };
    }
    const image = input.image ?? null;
    if (image) {
      const gibCeil = (bytes: number) => Math.ceil(bytes / 1024 ** 3);
      const imageBytes = image.virtualSize ?? image.size ?? 0;
      size ??= Math.max(gibCeil(imageBytes), image.minDisk, 1);
      if (size * 1024 ** 3 < imageBytes) {
        throw errors.invalidInput(
          `Invalid input: volume size ${size} GiB is smaller than image ${image.id}'s ${image.virtualSize !== null ? 'virtual size' : 'size'} of ${imageBytes} bytes (${gibCeil(imageBytes)} GiB); ask for at least ${gibCeil(imageBytes)} GiB.`,
        );
      }
      if (size < image.minDisk) throw errors.invalidInput(`Invalid input: image ${image.id} has min_disk ${image.minDisk} GiB, larger than the volume size ${size} GiB; ask for at least ${image.minDisk} GiB.`);
      source = { kind: 'image', id: image.id };
      bootable = true;
    }
    if (input.failure) size ??= 1;
    if (size === null) throw errors.invalidInput("Invalid input: 'size' is required unless the volume is made from a snapshot, another volume or an image.");
    if (input.volumeType) {
      const requested = this.volumeType(auth, input.volumeType);
      if (typeRow && requested.id !== typeRow.id && forcedBackend) {
        const specs = this.extraSpecs(requested.id);
        const backendName = this.manager.backends.get(forcedBackend)?.config.volume_backend_name;
        if (specs['volume_backend_name'] && specs['volume_backend_name'] !== backendName) {
          throw errors.badRequest(`Invalid volume type: the source lives on backend '${backendName}' and volume type '${requested.name}' asks for '${specs['volume_backend_name']}'; create the volume with the source's type and retype it later.`);
        }
      }
      typeRow = requested;
    }
    typeRow ??= this.defaultTypeFor(projectId);
    const zones = this.availabilityZones();
    if (availabilityZone !== null && !zones.includes(availabilityZone)) {
      throw errors.badRequest(`Availability zone '${availabilityZone}' is invalid. Valid zones: ${zones.join(', ')}.`);
    }
    this.quotas.checkVolumeSize(projectId, size);
    const extraSpecs = this.extraSpecs(typeRow.id);
    // Cinder: a volume is multiattach when its type says multiattach='<is> True' (the scheduler needs a backend that can).
    const multiattach = /^<is>\s*true$/i.test((extraSpecs['multiattach'] ?? '').trim());
    const id = randomUUID();
    const now = nowIso();
    const sizeGiB = size;
    const type = typeRow;
    return this.db.transaction(() => {
      this.quotas.check(projectId, { volumes: 1, gigabytes: sizeGiB });
      const pools = this.manager.poolStates().filter((p) => forcedBackend === null || p.backend === forcedBackend);
      const result: ReturnType<typeof schedule> = input.failure ? { ok: false, reasons: [input.failure] } : schedule(
        pools,
        { sizeGiB, availabilityZone: forcedBackend ? null : availabilityZone ?? this.config.DEFAULT.default_availability_zone, extraSpecs },
        this.config.DEFAULT.scheduler_default_filters,
        this.config.DEFAULT.scheduler_default_weighers,
      );
      const zone = result.ok ? result.pool.availabilityZone : availabilityZone ?? this.config.DEFAULT.default_availability_zone ?? this.config.DEFAULT.storage_availability_zone;
      // The project reads a reason without backend names or figures; the detail goes to the log (issue 12).
      const failure = result.ok || input.failure ? null : schedulingFailureTexts(result);
      if (failure) {
        this.manager.log(`WARNING: scheduler: volume ${id} of project ${projectId} (${sizeGiB} GiB) not placed: ${failure.detail}`);
        emitEvent('scheduler.rejected', { resource: 'volume', id, project_id: projectId, size_gib: sizeGiB, reason: failure.detail });
      }
      const reason = result.ok ? null : input.failure ?? failure?.member ?? null;
      this.db.run(
        `INSERT INTO volumes (id, project_id, user_id, name, description, size_gib, status, availability_zone, volume_type_id, host, backend,
           bootable, source_volid, snapshot_id, metadata, status_reason, image_metadata, created_at, updated_at, multiattach)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        id, projectId, auth.userId, input.name ?? null, input.description ?? null, sizeGiB, result.ok ? 'creating' : 'error', zone, type.id,
        result.ok ? result.pool.host : null, result.ok ? result.pool.backend : null, bootable ? 1 : 0,
        input.sourceVolumeId ?? null, input.snapshotId ?? null, JSON.stringify(input.metadata ?? {}), reason,
        image ? JSON.stringify(volumeImageMetadata(image)) : null, now, now, multiattach ? 1 : 0,
      );
      if (result.ok) {
        // The task reads its source (a clone waits for a delete of the source volume, and the other way round).
        this.queue.enqueue('volume.create', id, result.pool.backend, { source } satisfies CreatePayload, {
          locks: { read: source && source.kind !== 'image' ? [source.id] : [] },
        });
        if (source?.kind === 'backup') {
          // The backup is held meanwhile; the volume's task queues the restore when the volume exists (a chain).
          const held = resourceStates(this.db).backups.transition(source.id, ['available'], 'restoring', { restore_volume_id: id, fail_reason: null });
          if (!held) throw errors.invalidState('backup', source.id, 'busy', 'creating a volume from it', ['available']);
        }
      } else {
        this.manager.userMessage(id, 'VOLUME', input.failure ? 'VOLUME_VOLUME_001_003' : 'VOLUME_VOLUME_001_002', `${input.failure ? 'create volume' : 'schedule allocate volume'}: ${reason}`, requestId);
      }
      return this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', id)!;
    }, { deferCommit: true }); // nothing leaves the process after it but the reply (its task starts after the commit)
  }

  /** `ofGroup`: the group whose delete-volumes deletes this member; any other delete of a group's member is refused, force or not, as Cinder does. */
  deleteVolume(auth: AuthContext, id: string, options: { cascade: boolean; force: boolean; ofGroup?: string }): void {
    this.db.transaction(() => {
      const row = this.volume(auth, id);
      if (row.status === 'deleting') return;
      if (row.group_id && row.group_id !== options.ofGroup) {
        throw errors.badRequest(
          `Invalid volume: volume ${id} belongs to group ${row.group_id}. Remove it from the group first ` +
            `(cinder --os-volume-api-version 3.13 group-update --remove-volumes ${id} ${row.group_id}), or delete the group with its volumes (openstack volume group delete --force ${row.group_id}).`,
        );
      }
      if (!options.force) {
        if (row.attach_status === 'attached' || row.status === 'in-use') {
          throw errors.invalidState('volume', id, row.status, 'delete (detach it from its server first)', volumeDeletableStatuses);
        }
        requireStatus('volume', id, row.status, 'delete', volumeDeletableStatuses);
      }
      const snapshots = this.db.all<SnapshotRow>('SELECT * FROM snapshots WHERE volume_id = ?', id);
      if (snapshots.length > 0 && !options.cascade) {
        throw new PumiceError(
          'VolumeHasSnapshots',
          `Invalid volume: volume ${id} has ${snapshots.length} dependent snapshot(s) (${snapshots.map((s) => s.id).join(', ')}). Delete them first, or delete with cascade (openstack volume delete --purge / cinder delete --cascade).`,
        );
      }
      const busy = snapshots.find((s) => !snapshotDeletableStatuses.includes(s.status as never));
      if (busy) throw errors.invalidState('snapshot', busy.id, busy.status, 'cascade delete of its volume', snapshotDeletableStatuses);
      if (!row.backend) {
        // Never scheduled: nothing exists on any backend.
        this.db.run('DELETE FROM snapshots WHERE volume_id = ?', id);
        this.db.run('DELETE FROM volumes WHERE id = ?', id);
        return;
      }
      const states = resourceStates(this.db);
      if (options.force && !volumeDeletableStatuses.includes(row.status as never)) {
        // Force-delete from a transitional state: the task working on the volume is fenced first.
        states.volumes.force(id, 'deleting', { status_reason: null }, `force-delete of volume ${id}`);
      } else if (!states.volumes.transition(id, volumeDeletableStatuses, 'deleting', { status_reason: null })) {
        throw errors.conflict(`Invalid volume: volume ${id} changed state while the delete was requested; retry.`);
      }
      for (const snap of snapshots) {
        if (snap.status !== 'deleting') states.snapshots.transition(snap.id, snapshotDeletableStatuses, 'deleting');
      }
      this.queue.enqueue('volume.delete', id, row.backend, { cascade: options.cascade }, { locks: { write: snapshots.map((s) => s.id) } });
      // As createVolume: the reply and the task start follow the turn's COMMIT.
    }, { deferCommit: true });
  }

  // ---- manage / unmanage ----
  /** The backend of a Cinder host string (`host@backend` or `host@backend#pool`) run by this process; 400 naming the known hosts otherwise. */
  backendOfHost(host: string): BackendState {
    const bare = host.split('#')[0]!;
    for (const state of this.manager.backends.values()) {
      if (state.host === bare || `${state.host}#${state.config.volume_backend_name}` === host) return state;
    }
    const known = [...this.manager.backends.values()].map((s) => `${s.host}#${s.config.volume_backend_name}`);
    throw errors.badRequest(`Invalid host '${host.slice(0, 255)}': no backend of this Pumice has that host. Use one of: ${known.join(', ') || '(none on this process)'} (see GET /scheduler-stats/get_pools).`);
  }

  /**
   * os-volume-manage: a volume row in `creating` on the host's backend, whose task adopts the
   * backend object `sourceName` (rename, no copy) and sets the size it finds. 409 when another
   * volume is already being made from that name.
   */
  manageVolume(
    auth: AuthContext,
    input: { host: string; sourceName: string; name: string | null; description: string | null; volumeType: string | null; availabilityZone: string | null; bootable: boolean; metadata: Record<string, string> },
  ): VolumeRow {
    const projectId = this.projectOf(auth);
    const state = this.backendOfHost(input.host);
    if (!hasManageExisting(state.driver)) throw errors.badRequest(`Invalid host '${input.host}': backend [${state.config.section}] cannot manage existing storage.`);
    const type = input.volumeType ? this.volumeType(auth, input.volumeType) : this.defaultTypeFor(projectId);
    const id = randomUUID();
    const now = nowIso();
    return this.db.transaction(() => {
      if (this.db.get("SELECT 1 FROM volumes WHERE backend = ? AND managed_from = ? AND status = 'creating'", state.config.section, input.sourceName)) {
        throw errors.conflict(`Invalid volume: '${input.sourceName}' on ${input.host} is already being managed; wait for that volume.`);
      }
      this.quotas.check(projectId, { volumes: 1 });
      this.db.run(
        `INSERT INTO volumes (id, project_id, user_id, name, description, size_gib, status, availability_zone, volume_type_id, host, backend,
           bootable, metadata, managed_from, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, 0, 'creating', ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        id, projectId, auth.userId, input.name, input.description, input.availabilityZone ?? state.config.backend_availability_zone!, type.id,
        `${state.host}#${state.config.volume_backend_name}`, state.config.section, input.bootable ? 1 : 0, JSON.stringify(input.metadata), input.sourceName, now, now,
      );
      this.queue.enqueue('volume.create', id, state.config.section, { source: { kind: 'existing', id: input.sourceName } } satisfies CreatePayload, {});
      return this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', id)!;
    });
  }

  /**
   * os-unmanage: the volume leaves Pumice and its bytes stay in the backend, under the name it was
   * adopted from (`unmanaged-volume-<id>` for one Pumice made). Refused with snapshots or attachments.
   */
  unmanageVolume(auth: AuthContext, id: string): void {
    this.db.transaction(() => {
      const row = this.volume(auth, id);
      if (row.attach_status === 'attached' || row.status === 'in-use') throw errors.invalidState('volume', id, row.status, 'unmanage (detach it first)', ['available', 'error']);
      requireStatus('volume', id, row.status, 'unmanage', ['available', 'error']);
      const snapshots = this.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM snapshots WHERE volume_id = ?', id)!.n;
      if (snapshots > 0) throw new PumiceError('VolumeHasSnapshots', `Invalid volume: volume ${id} has ${snapshots} snapshot(s); unmanage or delete them first.`);
      if (!row.backend) {
        this.db.run('DELETE FROM volumes WHERE id = ?', id);
        return;
      }
      if (!resourceStates(this.db).volumes.transition(id, ['available', 'error'], 'deleting', { status_reason: null })) {
        throw errors.conflict(`Invalid volume: volume ${id} changed state while the unmanage was requested; retry.`);
      }
      const unmanageAs = (row as VolumeRow & { managed_from?: string | null }).managed_from ?? `unmanaged-volume-${id}`;
      this.queue.enqueue('volume.delete', id, row.backend, { cascade: false, unmanageAs }, {});
    });
  }

  // ---- manage / unmanage snapshots ----
  /**
   * os-snapshot-manage: a snapshot row in `creating` whose task adopts the backend's snapshot
   * `sourceName` of the volume (renamed in place). 404 for a name the backend does not offer.
   */
  async manageSnapshot(auth: AuthContext, input: { volumeId: string; sourceName: string; name: string | null; description: string | null; metadata: Record<string, string> }): Promise<SnapshotRow> {
    const volume = this.volume(auth, input.volumeId);
    requireStatus('volume', volume.id, volume.status, 'manage a snapshot of it', ['available', 'in-use']);
    const state = volume.backend ? this.manager.backends.get(volume.backend) : undefined;
    if (!state || !hasManageExistingSnapshots(state.driver)) {
      throw errors.badRequest(`The backend of volume ${volume.id} cannot manage existing snapshots; create a snapshot instead.`);
    }
    if (!state.up) throw errors.backendUnavailable(`Backend ${state.host} of volume ${volume.id} is down: ${state.downReason}`);
    if (!(await state.driver.canManageSnapshot({ id: volume.id, sizeGiB: volume.size_gib }, input.sourceName))) {
      throw new PumiceError('NotFound', `Manage existing snapshot failed: '${input.sourceName.slice(0, 255)}' is not a manageable snapshot of volume ${volume.id} (not there, already Pumice's, or larger than the volume). List RBD ones with GET /manageable_snapshots?host=${state.host}#${state.config.volume_backend_name} (microversion 3.8+).`);
    }
    const id = randomUUID();
    return this.db.transaction(() => {
      // Two requests for one name: the second's task finds it gone and ends in error, naming it.
      this.quotas.check(volume.project_id, { snapshots: 1, gigabytes: this.config.DEFAULT.no_snapshot_gb_quota ? 0 : volume.size_gib });
      const now = nowIso();
      this.db.run(
        "INSERT INTO snapshots (id, project_id, user_id, volume_id, name, description, size_gib, status, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'creating', ?, ?, ?)",
        id, volume.project_id, auth.userId, volume.id, input.name, input.description, volume.size_gib, JSON.stringify(input.metadata), now, now,
      );
      this.queue.enqueue('snapshot.create', id, volume.backend!, { source: { kind: 'existing', name: input.sourceName } } satisfies SnapshotCreatePayload, { locks: { read: [volume.id] } });
      return this.db.get<SnapshotRow>('SELECT * FROM snapshots WHERE id = ?', id)!;
    });
  }

  /** os-unmanage of a snapshot: it leaves Pumice and stays in the backend as `unmanaged-snapshot-<id>`. */
  unmanageSnapshot(auth: AuthContext, id: string): void {
    this.db.transaction(() => {
      const snap = this.snapshot(auth, id);
      requireStatus('snapshot', id, snap.status, 'unmanage', ['available']);
      const volume = this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', snap.volume_id);
      const state = volume?.backend ? this.manager.backends.get(volume.backend) : undefined;
      if (!state || !hasManageExistingSnapshots(state.driver)) {
        throw errors.badRequest(`The backend of snapshot ${id} cannot unmanage snapshots; delete the snapshot instead.`);
      }
      if (!resourceStates(this.db).snapshots.transition(id, ['available'], 'unmanaging')) {
        throw errors.conflict(`Invalid snapshot: snapshot ${id} changed state while the unmanage was requested; retry.`);
      }
      this.queue.enqueue('snapshot.delete', id, volume!.backend!, { unmanageAs: `unmanaged-snapshot-${id}` }, { locks: { read: [volume!.id] } });
    });
  }

  /** Foreign snapshots of the volumes of `state`'s backend, with the volume each belongs to. */
  async manageableSnapshots(state: BackendState): Promise<{ name: string; volumeId: string; sizeGiB: number }[]> {
    if (!hasManageExistingSnapshots(state.driver)) throw errors.badRequest(`Invalid host '${state.host}': backend [${state.config.section}] cannot manage existing snapshots.`);
    const volumeIds = this.db.all<{ id: string }>('SELECT id FROM volumes WHERE backend = ? ORDER BY id', state.config.section).map((r) => r.id);
    return (await state.driver.listManageableSnapshots(volumeIds)).map((o) => ({ name: o.name, volumeId: o.volumeId, sizeGiB: Math.max(1, Math.ceil(o.sizeBytes / 1024 ** 3)) }));
  }

  // ---- retype and migration between backends ----
  /**
   * os-retype: a type the volume's backend satisfies is set at once; one that needs another
   * backend moves the volume there (migration_policy 'on-demand'), else a 400 naming the policy.
   */
  retypeVolume(auth: AuthContext, id: string, newType: string, policy: 'never' | 'on-demand'): void {
    this.db.transaction(() => {
      const row = this.volume(auth, id);
      const type = this.volumeType(auth, newType);
      if (type.id === row.volume_type_id) throw errors.badRequest(`Invalid volume type: volume ${id} is already of type '${type.name}'; name another type to retype it.`);
      requireStatus('volume', id, row.status, 'retype', ['available', 'in-use']);
      if (row.migration_status === 'starting' || row.migration_status === 'migrating') {
        throw errors.invalidState('volume', id, `migration_status ${row.migration_status}`, 'retype', ['migration_status none, success or error']);
      }
      const current = this.manager.poolStates().find((p) => p.backend === row.backend);
      if (!current) throw errors.badRequest(`Volume ${id} is not on a backend of this Pumice (status ${row.status}); it cannot be retyped.`);
      const extraSpecs = this.extraSpecs(type.id);
      const scheduling = this.config.DEFAULT;
      // Size 0: the volume already occupies its own backend.
      const stays = schedule([current], { sizeGiB: 0, availabilityZone: null, extraSpecs }, scheduling.scheduler_default_filters, scheduling.scheduler_default_weighers);
      if (stays.ok) {
        this.db.run("UPDATE volumes SET volume_type_id = ?, updated_at = ? WHERE id = ? AND status IN ('available','in-use')", type.id, nowIso(), id);
        return;
      }
      if (policy !== 'on-demand') {
        throw errors.badRequest(
          `Invalid volume type: type '${type.name}' cannot stay on the volume's backend ${current.host}, and migration_policy is 'never'. Retype with migration_policy 'on-demand' to move the volume (openstack volume set --type ${type.name} --retype-policy on-demand).`,
        );
      }
      this.refuseMove(row, 'retype with migration');
      const pools = this.manager.poolStates().filter((p) => p.backend !== row.backend);
      const result = schedule(pools, { sizeGiB: row.size_gib, availabilityZone: null, extraSpecs }, scheduling.scheduler_default_filters, scheduling.scheduler_default_weighers);
      if (!result.ok) {
        const texts = schedulingFailureTexts(result);
        this.manager.log(`WARNING: scheduler: retype of volume ${id} to type ${type.name}: no backend: ${texts.detail}`);
        throw errors.badRequest(`Cannot retype volume ${id} to type '${type.name}': ${texts.member} Pick a type whose extra specs a running backend satisfies.`);
      }
      this.startMove(row, result.pool.backend, 'retyping', type.id);
    });
  }

  /** os-migrate_volume (administrators): moves the volume to the backend of `host` (`host@backend#pool`), keeping its type. */
  migrateVolume(auth: AuthContext, id: string, host: string): void {
    this.db.transaction(() => {
      const row = this.volume(auth, id);
      const target = this.backendOfHost(host);
      if (target.config.section === row.backend) throw errors.badRequest(`Invalid host: volume ${id} is already on ${target.host}; name another host (GET /scheduler-stats/get_pools).`);
      if (row.migration_status === 'starting' || row.migration_status === 'migrating') {
        throw errors.invalidState('volume', id, `migration_status ${row.migration_status}`, 'migrate', ['migration_status none, success or error']);
      }
      requireStatus('volume', id, row.status, 'migrate', ['available', 'in-use']);
      this.refuseMove(row, 'migrate');
      this.startMove(row, target.config.section, 'maintenance', null);
    });
  }

  /** The reasons a volume cannot move between backends now, as 400/409 faults. */
  private refuseMove(row: VolumeRow, action: string): void {
    if (row.status === 'in-use' || row.attach_status === 'attached') {
      throw errors.invalidState('volume', row.id, row.status, `${action} (Pumice cannot move an attached volume: the server would have to switch to the copy, Nova's swap-volume, which Pumice does not have yet; detach it first)`, ['available']);
    }
    const snapshots = this.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM snapshots WHERE volume_id = ?', row.id)!.n;
    if (snapshots > 0) {
      throw new PumiceError('VolumeHasSnapshots', `Invalid volume: volume ${row.id} has ${snapshots} snapshot(s), which cannot move with it; delete them (or make volumes of them) first, then ${action}.`);
    }
  }

  /** Puts the volume in `holdStatus` and queues the copy on its current backend, in one transaction. */
  private startMove(row: VolumeRow, toBackend: string, holdStatus: 'retyping' | 'maintenance', newTypeId: string | null): void {
    const source = this.manager.backends.get(row.backend ?? '');
    const target = this.manager.backends.get(toBackend)!;
    if (!source) throw errors.badRequest(`Volume ${row.id} is not on a backend of this Pumice; it cannot move.`);
    for (const state of [source, target]) {
      if (!state.up) throw errors.backendUnavailable(`Backend ${state.host} is down (${state.downReason}); move the volume when it is up.`);
    }
    if (sameStorage(source, target)) {
      throw errors.badRequest(`Invalid host: backends [${source.config.section}] and [${target.config.section}] keep volumes in the same place (same pool or directory), so the volume cannot move between them.`);
    }
    if (!resourceStates(this.db).volumes.transition(row.id, ['available'], holdStatus, { migration_status: 'starting', status_reason: null })) {
      throw errors.conflict(`Invalid volume: volume ${row.id} changed state while the move was requested; retry.`);
    }
    this.queue.enqueue('volume.migrate', row.id, source.config.section, {
      toBackend: target.config.section,
      toHost: `${target.host}#${target.config.volume_backend_name}`,
      toAvailabilityZone: target.config.backend_availability_zone!,
      newTypeId,
      holdStatus,
    } satisfies MigratePayload);
  }

  updateVolume(auth: AuthContext, id: string, changes: { name?: string | null; description?: string | null; metadata?: Record<string, string> }): VolumeRow {
    const row = this.volume(auth, id);
    this.db.run(
      'UPDATE volumes SET name = ?, description = ?, metadata = ?, updated_at = ? WHERE id = ?',
      changes.name === undefined ? row.name : changes.name,
      changes.description === undefined ? row.description : changes.description,
      changes.metadata === undefined ? row.metadata : JSON.stringify(changes.metadata),
      nowIso(), id,
    );
    return this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', id)!;
  }

  extendVolume(auth: AuthContext, id: string, newSizeGiB: number, microversion: number): void {
    this.db.transaction(() => {
      const row = this.volume(auth, id);
      const allowed = microversion >= 42 ? volumeExtendableStatuses : ['available'];
      requireStatus('volume', id, row.status, microversion >= 42 ? 'extend' : 'extend (an in-use volume needs microversion 3.42)', allowed);
      if (newSizeGiB <= row.size_gib) {
        throw errors.invalidInput(`Invalid input: new size ${newSizeGiB} GiB must be greater than the current size ${row.size_gib} GiB.`);
      }
      this.quotas.checkVolumeSize(row.project_id, newSizeGiB);
      this.quotas.check(row.project_id, { gigabytes: newSizeGiB - row.size_gib });
      const pool = this.manager.poolStates().find((p) => p.backend === row.backend);
      if (pool && !pool.up) throw errors.backendUnavailable(`The volume's backend ${pool.host} is down (${pool.downReason}); try again when it is up.`);
      if (!resourceStates(this.db).volumes.transition(id, [row.status as VolumeStatus], 'extending', { previous_status: row.status })) {
        throw errors.conflict(`Invalid volume: volume ${id} changed state while the extend was requested; retry.`);
      }
      this.queue.enqueue('volume.extend', id, row.backend!, { newSizeGiB });
    });
  }

  setBootable(auth: AuthContext, id: string, bootable: boolean): void {
    this.volume(auth, id);
    this.db.run('UPDATE volumes SET bootable = ?, updated_at = ? WHERE id = ?', bootable ? 1 : 0, nowIso(), id);
  }

  /** Checks a volume may be uploaded to an image now (os-volume_upload_image); returns it. */
  uploadableVolume(auth: AuthContext, id: string, force: boolean): VolumeRow {
    const row = this.volume(auth, id);
    if (row.status === 'in-use' && !force) {
      throw errors.invalidState('volume', id, row.status, 'upload to an image (it is attached: detach it, or pass force=true to upload its current bytes)', ['available']);
    }
    requireStatus('volume', id, row.status, 'upload to an image', ['available', 'in-use']);
    if (!row.backend) throw errors.invalidState('volume', id, row.status, 'upload to an image (it is on no backend)', ['available']);
    return row;
  }

  /** Marks the volume `uploading` and queues the copy into the image the API created. */
  startUpload(auth: AuthContext, id: string, force: boolean, payload: { imageId: string; diskFormat: string; storeId?: string }): VolumeRow {
    return this.db.transaction(() => {
      const row = this.uploadableVolume(auth, id, force);
      if (!resourceStates(this.db).volumes.transition(id, [row.status as VolumeStatus], 'uploading', { previous_status: row.status })) {
        throw errors.conflict(`Invalid volume: volume ${id} changed state while the upload was requested; retry.`);
      }
      this.queue.enqueue('volume.upload_image', id, row.backend!, payload);
      return this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', id)!;
    });
  }

  /** os-set_image_metadata / os-unset_image_metadata: edits volume_image_metadata (Cinder keeps image_id etc. read-only only by convention). */
  updateImageMetadata(auth: AuthContext, id: string, set: Record<string, string>, unset: string[]): Record<string, string> {
    return this.db.transaction(() => {
      const row = this.volume(auth, id);
      const metadata = row.image_metadata ? (JSON.parse(row.image_metadata) as Record<string, string>) : {};
      for (const key of unset) {
        if (!Object.hasOwn(metadata, key)) throw new PumiceError('NotFound', `Glance metadata ${key} of volume ${id} could not be found (it has: ${Object.keys(metadata).join(', ') || 'none'}).`);
        delete metadata[key];
      }
      Object.assign(metadata, set);
      this.db.run('UPDATE volumes SET image_metadata = ?, updated_at = ? WHERE id = ?', Object.keys(metadata).length ? JSON.stringify(metadata) : null, nowIso(), id);
      return metadata;
    });
  }

  setReadOnly(auth: AuthContext, id: string, readOnly: boolean): void {
    const row = this.volume(auth, id);
    requireStatus('volume', id, row.status, 'changing the read-only flag', ['available', 'in-use']);
    this.db.run('UPDATE volumes SET read_only = ?, updated_at = ? WHERE id = ?', readOnly ? 1 : 0, nowIso(), id);
  }

  resetVolumeStatus(auth: AuthContext, id: string, changes: { status?: string; attach_status?: string; migration_status?: string | null }): void {
    const row = this.volume(auth, id);
    if (changes.status !== undefined && !volumeStatuses.includes(changes.status as never)) {
      throw errors.invalidInput(`Invalid input: status '${changes.status}' is not a volume status. Valid: ${volumeStatuses.join(', ')}.`);
    }
    // A reset cancels the queued tasks that write the volume and fences the running ones, so none can overwrite the admin's choice.
    resourceStates(this.db).volumes.force(
      id,
      (changes.status ?? row.status) as VolumeStatus,
      {
        attach_status: changes.attach_status ?? row.attach_status,
        migration_status: changes.migration_status === undefined ? row.migration_status : changes.migration_status,
        status_reason: null,
      },
      'cancelled by os-reset_status',
    );
    // A restore into the volume (or the volume's creation before one) was fenced with it: the backup it held is usable again.
    const states = resourceStates(this.db);
    for (const held of this.db.all<{ id: string }>("SELECT id FROM backups WHERE restore_volume_id = ? AND status = 'restoring'", id)) {
      states.backups.force(held.id, 'available', { restore_volume_id: null, fail_reason: `restore into volume ${id} cancelled by os-reset_status of the volume` }, 'cancelled by os-reset_status of its restore target');
    }
  }

  setMetadata(auth: AuthContext, id: string, metadata: Record<string, string>, replace: boolean): Record<string, string> {
    const row = this.volume(auth, id);
    const merged = replace ? metadata : { ...(JSON.parse(row.metadata) as Record<string, string>), ...metadata };
    this.db.run('UPDATE volumes SET metadata = ?, updated_at = ? WHERE id = ?', JSON.stringify(merged), nowIso(), id);
    return merged;
  }

  deleteMetadataKey(auth: AuthContext, id: string, key: string): void {
    const row = this.volume(auth, id);
    const metadata = JSON.parse(row.metadata) as Record<string, string>;
    // hasOwn, not `in`: 'constructor' or 'hasOwnProperty' is not a metadata key.
    if (!Object.hasOwn(metadata, key)) throw errors.notFound('Metadata key', `'${key}' of volume ${id}`);
    delete metadata[key];
    this.db.run('UPDATE volumes SET metadata = ?, updated_at = ? WHERE id = ?', JSON.stringify(metadata), nowIso(), id);
  }

  revertToSnapshot(auth: AuthContext, id: string, snapshotId: string): void {
    this.db.transaction(() => {
      const row = this.volume(auth, id);
      const snap = this.snapshot(auth, snapshotId);
      if (snap.volume_id !== id) throw errors.badRequest(`Snapshot ${snapshotId} belongs to volume ${snap.volume_id}, not to volume ${id}.`);
      // A member of a group snapshot holds the group's moment: reverting one volume alone would break
      // that (and on RBD it lives in librbd's group namespace, which rbd_snap_rollback cannot reach).
      if (snap.group_snapshot_id) {
        throw errors.badRequest(
          `Invalid snapshot: snapshot ${snapshotId} is a member of group snapshot ${snap.group_snapshot_id}, and a volume cannot be reverted to one member of a group snapshot. ` +
          `Create a volume from the member snapshot (openstack volume create --snapshot ${snapshotId}), or a group from the group snapshot (cinder group-create-from-src --group-snapshot ${snap.group_snapshot_id}).`,
        );
      }
      requireStatus('volume', id, row.status, 'revert to a snapshot', ['available']);
      requireStatus('snapshot', snap.id, snap.status, 'revert to it', ['available']);
      const latest = this.db.get<{ id: string }>('SELECT id FROM snapshots WHERE volume_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1', id);
      if (latest?.id !== snapshotId) throw errors.conflict(`Volume ${id} can only be reverted to its latest snapshot (${latest?.id}); ${snapshotId} is older. Delete the newer snapshots first.`);
      if (snap.size_gib !== row.size_gib) throw errors.badRequest(`Volume ${id} was extended after snapshot ${snapshotId} (${row.size_gib} GiB vs ${snap.size_gib} GiB); a revert needs equal sizes.`);
      const states = resourceStates(this.db);
      if (!states.volumes.transition(id, ['available'], 'reverting') || !states.snapshots.transition(snapshotId, ['available'], 'restoring')) {
        throw errors.conflict(`Invalid volume: volume ${id} or snapshot ${snapshotId} changed state while the revert was requested; retry.`);
      }
      this.queue.enqueue('volume.revert', id, row.backend!, { snapshotId }, { locks: { write: [snapshotId] } });
    });
  }

  // ---- attach flow (os-reserve → os-initialize_connection → os-attach; os-begin_detaching → os-terminate_connection → os-detach) ----
  reserve(auth: AuthContext, id: string): void {
    const row = this.volume(auth, id);
    requireStatus('volume', id, row.status, 'reserve', ['available']);
    this.moveAttachState(id, ['available'], 'attaching', 'reserve');
  }

  unreserve(auth: AuthContext, id: string): void {
    const row = this.volume(auth, id);
    if (row.status === 'attaching') {
      const attached = this.attachments(id).some((a) => a.attach_status === 'attached');
      resourceStates(this.db).volumes.transition(id, ['attaching'], attached ? 'in-use' : 'available');
    }
  }

  async initializeConnection(auth: AuthContext, id: string, connector: Connector): Promise<ConnectionInfo> {
    const row = this.volume(auth, id);
    requireStatus('volume', id, row.status, 'initialize a connection', ['available', 'attaching', 'reserved', 'in-use', 'detaching', 'backing-up']);
    const driver = this.driverFor(row);
    const qos = volumeQos(this.db, row.volume_type_id, row.size_gib);
    const info = await driver.initializeConnection({ id: row.id, sizeGiB: row.size_gib, qos: qos.backEnd }, { ...connector, mode: row.read_only ? 'ro' : 'rw' });
    info.data['access_mode'] = row.read_only ? 'ro' : 'rw';
    info.data['qos_specs'] = qos.frontEnd;
    return info;
  }

  async terminateConnection(auth: AuthContext, id: string, connector: Connector | null): Promise<void> {
    const row = this.volume(auth, id);
    await this.driverFor(row).terminateConnection({ id: row.id, sizeGiB: row.size_gib }, connector);
  }

  attach(auth: AuthContext, id: string, input: { instance_uuid?: string | null; host_name?: string | null; mountpoint: string; mode?: string }): void {
    this.db.transaction(() => {
      const row = this.volume(auth, id);
      requireStatus('volume', id, row.status, 'attach', ['available', 'attaching', 'reserved', 'in-use']);
      if (row.status === 'in-use' && !row.multiattach) throw errors.invalidState('volume', id, row.status, 'attach (it is attached already and not multiattach)', ['available', 'attaching']);
      const mode = input.mode ?? 'rw';
      if (row.read_only && mode === 'rw') throw errors.badRequest(`Volume ${id} is read-only: attach it with mode 'ro' or clear the flag (os-update_readonly_flag).`);
      const now = nowIso();
      this.db.run(
        "INSERT INTO volume_attachments (id, volume_id, instance_uuid, attached_host, mountpoint, attach_mode, attach_status, attach_time) VALUES (?, ?, ?, ?, ?, ?, 'attached', ?)",
        randomUUID(), id, input.instance_uuid ?? null, input.host_name ?? null, input.mountpoint, mode, now,
      );
      this.moveAttachState(id, ['available', 'attaching', 'reserved', 'in-use'], 'in-use', 'attach', { attach_status: 'attached' });
    });
  }

  beginDetaching(auth: AuthContext, id: string): void {
    const row = this.volume(auth, id);
    requireStatus('volume', id, row.status, 'begin detaching', ['in-use']);
    this.moveAttachState(id, ['in-use'], 'detaching', 'begin detaching');
  }

  rollDetaching(auth: AuthContext, id: string): void {
    const row = this.volume(auth, id);
    if (row.status === 'detaching') resourceStates(this.db).volumes.transition(id, ['detaching'], 'in-use');
  }

  detach(auth: AuthContext, id: string, attachmentId: string | null): void {
    this.db.transaction(() => {
      const row = this.volume(auth, id);
      requireStatus('volume', id, row.status, 'detach', ['in-use', 'detaching', 'attaching', 'error_deleting', 'maintenance']);
      const attachments = this.attachments(id).filter((a) => a.attach_status === 'attached');
      if (attachments.length > 1 && !attachmentId) {
        throw errors.badRequest(`Volume ${id} has ${attachments.length} attachments: name the one to detach with attachment_id.`);
      }
      const target = attachmentId ? attachments.find((a) => a.id === attachmentId) : attachments[0];
      if (attachmentId && !target) throw errors.notFound('Attachment', attachmentId);
      if (target) this.db.run('DELETE FROM volume_attachments WHERE id = ?', target.id);
      const remaining = attachments.length - (target ? 1 : 0);
      const attachStatus = remaining > 0 ? 'attached' : 'detached';
      if (row.status === 'error_deleting') {
        // A failed delete stays visible: only the attachment goes (a delete can be retried once detached).
        this.db.run('UPDATE volumes SET attach_status = ?, updated_at = ? WHERE id = ?', attachStatus, nowIso(), id);
        return;
      }
      this.moveAttachState(id, ['in-use', 'detaching', 'attaching', 'maintenance'], remaining > 0 ? 'in-use' : 'available', 'detach', { attach_status: attachStatus });
    });
  }

  /** The legacy attach actions' status moves, through the state owner: a miss (another request got there first) is a 409. */
  private moveAttachState(id: string, from: VolumeStatus[], to: VolumeStatus, action: string, changes: Record<string, string> = {}): void {
    if (resourceStates(this.db).volumes.transition(id, from, to, changes)) return;
    const now = this.db.get<{ status: string }>('SELECT status FROM volumes WHERE id = ?', id);
    if (!now) throw errors.notFound('Volume', id);
    throw errors.invalidState('volume', id, now.status, action, from);
  }

  private driverFor(row: VolumeRow) {
    if (!row.backend) throw errors.badRequest(`Volume ${row.id} was never placed on a backend (status ${row.status}): delete it and create it again.`);
    const state = this.manager.backends.get(row.backend);
    if (!state) throw errors.backendUnavailable(`Backend [${row.backend}] of volume ${row.id} is not served by this Pumice; check enabled_backends.`);
    if (!state.up) throw errors.backendUnavailable(`Backend ${state.host} of volume ${row.id} is down: ${state.downReason}`);
    return state.driver;
  }

  // ---- snapshots ----
  /** `locks`: more resources the snapshot task locks (a group snapshot's member: its group and the other members). */
  createSnapshot(auth: AuthContext, input: { volumeId: string; name?: string | null; description?: string | null; force: boolean; metadata?: Record<string, string>; locks?: { read?: string[]; write?: string[] } }): SnapshotRow {
    const id = randomUUID();
    return this.db.transaction(() => {
      const volume = this.volume(auth, input.volumeId);
      const allowed = input.force ? ['available', 'in-use'] : ['available'];
      requireStatus('volume', volume.id, volume.status, input.force ? 'snapshot' : 'snapshot (use force for an in-use volume)', allowed);
      const state = volume.backend ? this.manager.backends.get(volume.backend) : undefined;
      if (!state || !hasSnapshots(state.driver)) throw errors.badRequest(`The backend of volume ${volume.id} does not support snapshots.`);
      if (!state.up) throw errors.backendUnavailable(`Backend ${state.host} of volume ${volume.id} is down: ${state.downReason}`);
      this.quotas.check(volume.project_id, { snapshots: 1, gigabytes: this.config.DEFAULT.no_snapshot_gb_quota ? 0 : volume.size_gib });
      const now = nowIso();
      this.db.run(
        "INSERT INTO snapshots (id, project_id, user_id, volume_id, name, description, size_gib, status, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'creating', ?, ?, ?)",
        id, volume.project_id, auth.userId, volume.id, input.name ?? null, input.description ?? null, volume.size_gib, JSON.stringify(input.metadata ?? {}), now, now,
      );
      // The snapshot reads its volume: an extend or a delete of the volume waits for it (and it for them).
      this.queue.enqueue('snapshot.create', id, volume.backend!, {}, { locks: { read: [volume.id, ...(input.locks?.read ?? [])], write: input.locks?.write ?? [] } });
      return this.db.get<SnapshotRow>('SELECT * FROM snapshots WHERE id = ?', id)!;
    });
  }

  /** `ofGroupSnapshot`: the delete of its group snapshot (a member snapshot is never deleted alone, as in Cinder). */
  deleteSnapshot(auth: AuthContext, id: string, force: boolean, ofGroupSnapshot = false): void {
    this.db.transaction(() => {
      const snap = this.snapshot(auth, id);
      if (snap.status === 'deleting') return;
      if (snap.group_snapshot_id && !ofGroupSnapshot) {
        throw errors.badRequest(`Invalid snapshot: snapshot ${id} is part of group snapshot ${snap.group_snapshot_id} and cannot be deleted alone. Delete the group snapshot (openstack volume group snapshot delete ${snap.group_snapshot_id}).`);
      }
      if (!force) requireStatus('snapshot', id, snap.status, 'delete', snapshotDeletableStatuses);
      const volume = this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', snap.volume_id);
      if (!volume?.backend) {
        this.db.run('DELETE FROM snapshots WHERE id = ?', id);
        return;
      }
      const snapshots = resourceStates(this.db).snapshots;
      if (force && !snapshotDeletableStatuses.includes(snap.status as never)) snapshots.force(id, 'deleting', {}, `force-delete of snapshot ${id}`);
      else if (!snapshots.transition(id, snapshotDeletableStatuses, 'deleting')) {
        throw errors.conflict(`Invalid snapshot: snapshot ${id} changed state while the delete was requested; retry.`);
      }
      this.queue.enqueue('snapshot.delete', id, volume.backend, {}, { locks: { read: [volume.id] } });
    });
  }

  updateSnapshot(auth: AuthContext, id: string, changes: { name?: string | null; description?: string | null }): SnapshotRow {
    const snap = this.snapshot(auth, id);
    this.db.run(
      'UPDATE snapshots SET name = ?, description = ?, updated_at = ? WHERE id = ?',
      changes.name === undefined ? snap.name : changes.name,
      changes.description === undefined ? snap.description : changes.description,
      nowIso(), id,
    );
    return this.db.get<SnapshotRow>('SELECT * FROM snapshots WHERE id = ?', id)!;
  }

  setSnapshotMetadata(auth: AuthContext, id: string, metadata: Record<string, string>, replace: boolean): Record<string, string> {
    const snap = this.snapshot(auth, id);
    const merged = replace ? metadata : { ...(JSON.parse(snap.metadata) as Record<string, string>), ...metadata };
    this.db.run('UPDATE snapshots SET metadata = ?, updated_at = ? WHERE id = ?', JSON.stringify(merged), nowIso(), id);
    return merged;
  }

  deleteSnapshotMetadataKey(auth: AuthContext, id: string, key: string): void {
    const snap = this.snapshot(auth, id);
    const metadata = JSON.parse(snap.metadata) as Record<string, string>;
    if (!Object.hasOwn(metadata, key)) throw errors.notFound('Metadata key', `'${key}' of snapshot ${id}`);
    delete metadata[key];
    this.db.run('UPDATE snapshots SET metadata = ?, updated_at = ? WHERE id = ?', JSON.stringify(metadata), nowIso(), id);
  }

  resetSnapshotStatus(auth: AuthContext, id: string, status: string): void {
    this.snapshot(auth, id);
    if (!snapshotStatuses.includes(status as never)) {
      throw errors.invalidInput(`Invalid input: status '${status}' is not a snapshot status. Valid: ${snapshotStatuses.join(', ')}.`);
    }
    resourceStates(this.db).snapshots.force(id, status as SnapshotStatus, { status_reason: null }, 'cancelled by os-reset_status');
  }

  // ---- listing ----
  /** Attachments of each of `volumeIds` (one query for a whole page of volumes). */
  attachmentsOf(volumeIds: string[]): Map<string, AttachmentRow[]> {
    const byVolume = new Map<string, AttachmentRow[]>();
    if (volumeIds.length === 0) return byVolume;
    for (const a of this.db.all<AttachmentRow>(`SELECT * FROM volume_attachments WHERE volume_id IN (${volumeIds.map(() => '?').join(',')})`, ...volumeIds)) {
      const list = byVolume.get(a.volume_id) ?? [];
      list.push(a);
      byVolume.set(a.volume_id, list);
    }
    return byVolume;
  }

  /**
   * Number and total size of the volumes `query` selects (its conditions only: no paging), and
   * their metadata as Cinder's summary gives it (3.36+): each key with the distinct values it has.
   */
  summary(query: ListQuery): { count: number; sizeGiB: number; metadata: Record<string, string[]> } {
    const where = query.conditions.length ? `WHERE ${query.conditions.join(' AND ')}` : '';
    const row = this.db.get<{ n: number; gb: number | null }>(`SELECT COUNT(*) AS n, SUM(size_gib) AS gb FROM volumes ${where}`, ...query.params)!;
    const metadata: Record<string, string[]> = {};
    for (const m of this.db.all<{ key: string; value: string }>(
      `SELECT DISTINCT m.key AS key, CAST(m.value AS TEXT) AS value FROM volumes, json_each(volumes.metadata) m ${where} ORDER BY m.key, m.value`, ...query.params,
    )) {
      if (!Object.hasOwn(metadata, m.key)) Object.defineProperty(metadata, m.key, { value: [], enumerable: true, writable: true, configurable: true });
      metadata[m.key]!.push(m.value);
    }
    return { count: row.n, sizeGiB: row.gb ?? 0, metadata };
  }

  /** The id of the type a list filter names (id or name), or a value no volume has when there is none. */
  typeIdForFilter(idOrName: string): string {
    return this.db.get<VolumeTypeRow>('SELECT * FROM volume_types WHERE id = ? OR name = ?', idOrName, idOrName)?.id ?? '-';
  }

  /** Keyset pagination over `table` in the given sort order, with the marker row as the start. */
  listPage<T extends { id: string }>(table: 'volumes' | 'snapshots' | 'backups', query: ListQuery, sortColumns: Record<string, string>): Page<T> {
    const conditions = [...query.conditions];
    const params = [...query.params];
    const sort = [...query.sort];
    if (!sort.some((s) => s.key === 'id')) sort.push({ key: 'id', dir: sort[0]?.dir ?? 'desc' });
    const expressions = sort.map((s) => {
      const column = sortColumns[s.key];
      if (!column) throw errors.invalidInput(`Invalid input: sort key '${s.key}' is not supported. Valid keys: ${Object.keys(sortColumns).join(', ')}.`);
      return { column, dir: s.dir };
    });
    let count: number | undefined;
    const where = () => (conditions.length ? `WHERE ${conditions.join(' AND ')}` : '');
    if (query.withCount) count = this.db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM ${table} ${where()}`, ...params)!.n;
    if (query.marker) {
      const markerRow = this.db.get<Record<string, SqlValue>>(
        `SELECT ${expressions.map((e, i) => `${e.column} AS k${i}`).join(', ')} FROM ${table} WHERE id = ? ${conditions.length ? 'AND ' + conditions.join(' AND ') : ''}`,
        query.marker, ...query.params,
      );
      if (!markerRow) throw errors.notFound('Marker', query.marker);
      const ors: string[] = [];
      for (let i = 0; i < expressions.length; i++) {
        const parts: string[] = [];
        for (let j = 0; j < i; j++) {
          parts.push(`${expressions[j]!.column} = ?`);
          params.push(markerRow[`k${j}`]!);
        }
        parts.push(`${expressions[i]!.column} ${expressions[i]!.dir === 'asc' ? '>' : '<'} ?`);
        params.push(markerRow[`k${i}`]!);
        ors.push(`(${parts.join(' AND ')})`);
      }
      conditions.push(`(${ors.join(' OR ')})`);
    }
    const order = expressions.map((e) => `${e.column} ${e.dir.toUpperCase()}`).join(', ');
    // limit=0 asks for no rows (Cinder answers an empty list); reporting hasMore for an empty page
    // made the caller build a next link from a row that does not exist (500).
    if (query.limit === 0) return { rows: [], hasMore: false, count };
    const rows = this.db.all<T>(`SELECT * FROM ${table} ${where()} ORDER BY ${order} LIMIT ?`, ...params, query.limit + 1);
    const hasMore = rows.length > query.limit;
    if (hasMore) rows.pop();
    return { rows, hasMore, count };
  }
}

/** Two backend sections that name the same storage (one pool of one cluster, or one directory): a volume id would clash. */
function sameStorage(a: BackendState, b: BackendState): boolean {
  if (a.config.volume_driver !== b.config.volume_driver) return false;
  if (isLocalDriver(a.config.volume_driver)) return a.config.local_volume_dir === b.config.local_volume_dir;
  return a.config.rbd_pool === b.config.rbd_pool && a.config.rbd_ceph_conf === b.config.rbd_ceph_conf;
}
