/**
 * Backup service domain logic on the API side (Cinder's backup API): checks
 * requests against states, quotas and ownership, writes the backup in its
 * first state, moves the volume it holds, and enqueues the task in the same
 * transaction. The state machine:
 *
 *   creating → available | error          (source volume: backing-up → its previous status)
 *   available → restoring → available     (target volume: restoring-backup → available | error_restoring)
 *   available | error → deleting → (gone) | error_deleting
 *
 * A backup some later incremental depends on cannot be deleted (409).
 */
import { randomUUID } from 'node:crypto';
import { nowIso, type Db } from '../db/db.ts';
import { errors, PumiceError } from '../errors.ts';
import type { AuthContext } from '../http/router.ts';
import type { TaskQueue } from '../tasks/queue.ts';
import type { VolumeManager } from '../volume/manager.ts';
import type { VolumeRow } from '../volume/records.ts';
import { requireStatus, type VolumeStatus } from '../volume/states.ts';
import { resourceStates } from '../state/owner.ts';
import type { ListQuery, Page, VolumeService } from '../volume/volumes.ts';
import { backupDriverKind } from './drivers/driver.ts';
import { BackupDriverError, PosixBackupDriver, validContainer } from './drivers/posix.ts';
import { decodeBackupRecord, encodeBackupRecord } from './record-transfer.ts';
import { backupQueue, type BackupManager, type RestorePayload } from './manager.ts';
import type { BackupRow } from './records.ts';

export type BackupStatus = 'creating' | 'available' | 'deleting' | 'error' | 'error_deleting' | 'restoring';
export const backupStatuses: readonly BackupStatus[] = ['creating', 'available', 'deleting', 'error', 'error_deleting', 'restoring'];
export const backupDeletableStatuses: readonly BackupStatus[] = ['available', 'error'];
/** Statuses an admin may set with os-reset_status (Cinder's list). */
export const backupResettableStatuses: readonly BackupStatus[] = ['available', 'error'];
export const defaultContainer = 'volumebackups';

export interface CreateBackupInput {
  volumeId: string;
  name?: string | null;
  description?: string | null;
  incremental?: boolean;
  force?: boolean;
  snapshotId?: string | null;
  container?: string | null;
  metadata?: Record<string, string>;
  availabilityZone?: string | null;
}

export interface RestoreResult {
  backupId: string;
  volumeId: string;
  volumeName: string | null;
}

export class BackupService {
  constructor(
    private readonly db: Db,
    private readonly queue: TaskQueue,
    private readonly volumes: VolumeService,
    private readonly volumeManager: VolumeManager,
    private readonly manager: BackupManager,
  ) {}

  /** Finds a backup the caller may see; another project's backup is a 404. */
  backup(auth: AuthContext, id: string): BackupRow {
    const row = this.db.get<BackupRow>('SELECT * FROM backups WHERE id = ?', id);
    if (!row || (!auth.isAdmin && row.project_id !== auth.projectId)) throw errors.notFound('Backup', id);
    return row;
  }

  /** Ids among `ids` that some other backup names as its parent. */
  withDependents(ids: string[]): Set<string> {
    if (ids.length === 0) return new Set();
    return new Set(
      this.db.all<{ parent_id: string }>(`SELECT DISTINCT parent_id FROM backups WHERE parent_id IN (${ids.map(() => '?').join(',')})`, ...ids).map((r) => r.parent_id),
    );
  }

  list(query: ListQuery, sortColumns: Record<string, string>): Page<BackupRow> {
    return this.volumes.listPage<BackupRow>('backups', query, sortColumns);
  }

  create(auth: AuthContext, input: CreateBackupInput): BackupRow {
    const projectId = this.volumes.projectOf(auth);
    const container = input.container ?? defaultContainer;
    if (!validContainer(container)) {
      throw errors.invalidInput(`Invalid input: container '${container}' must be one directory name of letters, digits, '.', '_' or '-' (at most 255 characters).`);
    }
    if (input.availabilityZone && input.availabilityZone !== this.manager.zone) {
      throw errors.badRequest(`Availability zone '${input.availabilityZone}' is invalid for backups. Valid zones: ${this.manager.zone}.`);
    }
    if (!this.manager.up) throw errors.backendUnavailable(`The backup service is down: ${this.manager.downReason}`);
    const id = randomUUID();
    return this.db.transaction(() => {
      const volume = this.volumes.volume(auth, input.volumeId);
      // A snapshot's bytes do not change while the volume is attached, so no force is needed (as in Cinder).
      const snapshot = input.snapshotId ? this.volumes.snapshot(auth, input.snapshotId) : null;
      if (snapshot && snapshot.volume_id !== volume.id) {
        throw errors.badRequest(`Invalid input: snapshot ${snapshot.id} is a snapshot of volume ${snapshot.volume_id}, not of volume ${volume.id}; pass its own volume_id.`);
      }
      if (snapshot) requireStatus('snapshot', snapshot.id, snapshot.status, 'a backup', ['available']);
      const allowed = input.force || snapshot ? ['available', 'in-use'] : ['available'];
      if (volume.status === 'in-use' && !input.force && !snapshot) {
        throw errors.invalidState('volume', volume.id, volume.status, 'a backup (pass force to back up an attached volume)', ['available']);
      }
      requireStatus('volume', volume.id, volume.status, 'a backup', allowed);
      const unsupported = this.manager.unsupportedVolume(volume);
      if (unsupported) throw errors.badRequest(`Invalid volume: ${unsupported}.`);
      let parent: BackupRow | undefined;
      if (input.incremental) {
        parent = this.db.get<BackupRow>(
          "SELECT * FROM backups WHERE volume_id = ? AND status = 'available' ORDER BY data_timestamp DESC, created_at DESC LIMIT 1",
          volume.id,
        );
        if (!parent) {
          throw errors.badRequest(`Invalid backup: no backups available to do an incremental backup of volume ${volume.id}; create a full backup first.`);
        }
      }
      this.volumes.quotas.check(projectId, { backups: 1, backupGigabytes: volume.size_gib });
      const now = nowIso();
      this.db.run(
        `INSERT INTO backups (id, project_id, user_id, volume_id, snapshot_id, name, description, status, size_gib, availability_zone, container,
           parent_id, is_incremental, metadata, volume_previous_status, host, service, data_timestamp, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, 'creating', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        id, projectId, auth.userId, volume.id, snapshot?.id ?? null, input.name ?? null, input.description ?? null, volume.size_gib, this.manager.zone, container,
        parent?.id ?? null, parent ? 1 : 0, JSON.stringify(input.metadata ?? {}), volume.status, this.manager.host, this.manager.driver.serviceName, now, now, now,
      );
      const states = resourceStates(this.db);
      if (!states.volumes.transition(volume.id, [volume.status as VolumeStatus], 'backing-up', { previous_status: volume.status })) {
        throw errors.conflict(`Invalid volume: volume ${volume.id} changed state while the backup was requested; retry.`);
      }
      if (snapshot && !states.snapshots.transition(snapshot.id, ['available'], 'backing-up')) {
        throw errors.conflict(`Invalid snapshot: snapshot ${snapshot.id} changed state while the backup was requested; retry.`);
      }
      // The backup reads its volume (or snapshot) and its parent: none may be changed or deleted meanwhile.
      const reads = [volume.id, ...(snapshot ? [snapshot.id] : []), ...(parent ? [parent.id] : [])];
      this.queue.enqueue('backup.create', id, backupQueue, {}, { locks: { read: reads } });
      return this.db.get<BackupRow>('SELECT * FROM backups WHERE id = ?', id)!;
    });
  }

  delete(auth: AuthContext, id: string, force: boolean): void {
    this.db.transaction(() => {
      const row = this.backup(auth, id);
      if (row.status === 'deleting') return;
      const allowed: readonly string[] = force ? [...backupDeletableStatuses, 'error_deleting', 'creating', 'restoring'] : backupDeletableStatuses;
      requireStatus('backup', id, row.status, 'delete', allowed);
      const dependents = this.db.all<{ id: string }>('SELECT id FROM backups WHERE parent_id = ?', id);
      if (dependents.length > 0) {
        throw new PumiceError(
          'InvalidState',
          `Invalid backup: incremental backups exist for this backup: ${dependents.map((d) => d.id).join(', ')} depend on backup ${id}. Delete them first (newest first).`,
        );
      }
      const backups = resourceStates(this.db).backups;
      if (force && !backupDeletableStatuses.includes(row.status as BackupStatus)) backups.force(id, 'deleting', {}, `force-delete of backup ${id}`);
      else if (!backups.transition(id, backupDeletableStatuses, 'deleting')) {
        throw errors.conflict(`Invalid backup: backup ${id} changed state while the delete was requested; retry.`);
      }
      this.queue.enqueue('backup.delete', id, backupQueue, {});
    });
  }

  /**
   * Restores into `volumeId` (an available volume at least as large as the
   * backup) or into a new volume of the backup's size named `name`.
   */
  restore(auth: AuthContext, id: string, input: { volumeId?: string | null; name?: string | null }, requestId: string): RestoreResult {
    if (input.volumeId) {
      return this.db.transaction(() => {
        const row = this.backup(auth, id);
        requireStatus('backup', id, row.status, 'restore', ['available']);
        const volume = this.volumes.volume(auth, input.volumeId!);
        requireStatus('volume', volume.id, volume.status, 'restoring a backup into it', ['available']);
        if (volume.size_gib < row.size_gib) {
          throw errors.badRequest(`Invalid volume: volume ${volume.id} is ${volume.size_gib} GiB, smaller than backup ${id} (${row.size_gib} GiB); restore into a larger volume or a new one.`);
        }
        this.requireFileBackend(volume);
        const states = resourceStates(this.db);
        if (!states.volumes.transition(volume.id, ['available'], 'restoring-backup') || !states.backups.transition(id, ['available'], 'restoring', { restore_volume_id: volume.id, fail_reason: null })) {
          throw errors.conflict(`Invalid backup: backup ${id} or volume ${volume.id} changed state while the restore was requested; retry.`);
        }
        this.queue.enqueue('backup.restore', id, backupQueue, { volumeId: volume.id, targetIsZeroed: false } satisfies RestorePayload, { locks: { write: [volume.id] } });
        return { backupId: id, volumeId: volume.id, volumeName: volume.name };
      });
    }
    // New volume: made with backup_id, which holds the backup and chains the restore after the volume's creation.
    // One transaction: a volume that cannot be scheduled, or whose backend the backup service cannot write, leaves nothing behind.
    const volume: VolumeRow = this.db.transaction(() => {
      const row = this.backup(auth, id);
      requireStatus('backup', id, row.status, 'restore', ['available']);
      const made = this.volumes.createVolume(
        auth,
        { size: row.size_gib, backupId: id, name: input.name ?? `restore_backup_${id}`, description: `auto-created volume for restore of backup ${id}` },
        requestId,
      );
      if (made.status === 'error') throw errors.badRequest(`Invalid volume: the volume for the restore could not be scheduled: ${made.status_reason ?? 'no valid backend'}`);
      this.requireFileBackend(made);
      return made;
    });
    return { backupId: id, volumeId: volume.id, volumeName: volume.name };
  }

  private requireFileBackend(volume: VolumeRow): void {
    const unsupported = this.manager.unsupportedVolume(volume);
    if (unsupported) throw errors.badRequest(`Invalid volume: cannot restore into it: ${unsupported}.`);
  }

  /** Changes name, description or metadata (3.9 / 3.43); metadata replaces the whole set, as in Cinder. */
  update(auth: AuthContext, id: string, changes: { name?: string | null; description?: string | null; metadata?: Record<string, string> }): BackupRow {
    const row = this.backup(auth, id);
    this.db.run(
      'UPDATE backups SET name = ?, description = ?, metadata = ?, updated_at = ? WHERE id = ?',
      changes.name === undefined ? row.name : changes.name,
      changes.description === undefined ? row.description : changes.description,
      changes.metadata === undefined ? row.metadata : JSON.stringify(changes.metadata),
      nowIso(), id,
    );
    return this.db.get<BackupRow>('SELECT * FROM backups WHERE id = ?', id)!;
  }

  /** export_record (admin): the backup's record as Cinder's opaque backup_url, for import_record on another Pumice. */
  exportRecord(auth: AuthContext, id: string): { backup_service: string; backup_url: string } {
    const row = this.backup(auth, id);
    requireStatus('backup', id, row.status, 'export_record', ['available']);
    return { backup_service: row.service ?? this.manager.driver.serviceName, backup_url: encodeBackupRecord(row) };
  }

  /**
   * import_record (admin): takes a backup exported by a Pumice that shares
   * this one's backup storage into the caller's project. The row is
   * `available` when the data its restore reads is all there, else `error`
   * with the missing or corrupt file as its reason. The parent link is kept
   * when the parent was imported first. A backup id already known is a 409.
   */
  async importRecord(auth: AuthContext, backupService: string, backupUrl: string): Promise<BackupRow> {
    const ours = this.manager.driver.serviceName;
    const kind = backupDriverKind(backupService);
    if (!kind || kind !== backupDriverKind(ours)) {
      throw errors.badRequest(`Invalid input: backup_service '${backupService}' is not the backup service of this Pumice (${ours}); import the record on a Pumice whose backup_driver made the backup.`);
    }
    const record = decodeBackupRecord(backupUrl);
    if (backupDriverKind(record.service) !== kind) {
      throw errors.badRequest(`Invalid input: the backup record was made by ${record.service || 'an unknown service'}, not by backup_service '${backupService}'.`);
    }
    const duplicate = () => errors.conflict(`Invalid backup: backup ${record.id} already exists here; delete it first if you mean to import its record again.`);
    if (this.db.get('SELECT 1 FROM backups WHERE id = ?', record.id)) throw duplicate();
    let failReason: string | null = null;
    const posix = posixDriverOf(this.manager.driver);
    if (posix) {
      const root = posix.options.root;
      try {
        const manifest = await posix.readManifest(record.location);
        const missing = await posix.firstMissing(await posix.referencedFiles(record.location));
        if (missing) failReason = `the backup's data is incomplete: ${missing} is missing under ${root}; check that backup_posix_path is the exporting Pumice's, and that the backups it depends on still exist`;
        else if (manifest.sizeBytes !== record.sizeGiB * 1024 ** 3) failReason = `the manifest in ${root} records ${manifest.sizeBytes} bytes, the record ${record.sizeGiB} GiB: they are not the same backup`;
      } catch (error) {
        if (!(error instanceof BackupDriverError)) throw error;
        failReason = `the backup's data is not usable in ${root}: ${error.message}; check that backup_posix_path is the exporting Pumice's`;
      }
    }
    const projectId = this.volumes.projectOf(auth);
    return this.db.transaction(() => {
      if (this.db.get('SELECT 1 FROM backups WHERE id = ?', record.id)) throw duplicate();
      this.volumes.quotas.check(projectId, { backups: 1, backupGigabytes: record.sizeGiB });
      const parentId = record.parentId && this.db.get('SELECT 1 FROM backups WHERE id = ?', record.parentId) ? record.parentId : null;
      this.db.run(
        `INSERT INTO backups (id, project_id, user_id, volume_id, snapshot_id, name, description, status, size_gib, object_count, availability_zone, container,
           parent_id, is_incremental, fail_reason, metadata, host, service, stored_bytes, data_timestamp, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        record.id, projectId, auth.userId, record.volumeId, record.snapshotId, record.name, record.description, failReason ? 'error' : 'available',
        record.sizeGiB, record.objectCount, this.manager.zone, record.location.container, parentId, record.isIncremental ? 1 : 0, failReason,
        JSON.stringify(record.metadata), this.manager.host, ours, record.storedBytes, record.dataTimestamp, record.createdAt, nowIso(),
      );
      return this.db.get<BackupRow>('SELECT * FROM backups WHERE id = ?', record.id)!;
    });
  }

  resetStatus(auth: AuthContext, id: string, status: string): void {
    const row = this.backup(auth, id);
    if (!backupResettableStatuses.includes(status as BackupStatus)) {
      throw errors.invalidInput(`Invalid input: status '${status}' cannot be set on a backup. Valid: ${backupResettableStatuses.join(', ')}.`);
    }
    // Cancels the queued tasks that write the backup and fences the running ones.
    resourceStates(this.db).backups.force(row.id, status as BackupStatus, {}, 'cancelled by os-reset_status');
  }

}

/** The directory driver behind the manager's driver (itself, or the adapter holding it); null for another driver. */
function posixDriverOf(driver: unknown): PosixBackupDriver | null {
  if (driver instanceof PosixBackupDriver) return driver;
  const inner = (driver as { posix?: unknown } | null)?.posix;
  return inner instanceof PosixBackupDriver ? inner : null;
}
