/**
 * The backup role (cinder-backup): owns the backup driver `[DEFAULT]
 * backup_driver` names (posix or ceph, behind drivers/driver.ts), tells it
 * where each volume's bytes are (a local file, or an RBD image reached as the
 * backend's rbd_user), runs backup, restore and delete tasks from the
 * `backup` queue, heartbeats its service row (down at once, with the reason,
 * when the driver cannot work), and reconciles at start: a backup or restore
 * cut short by a crash is not resumed but failed with a reason, what it wrote
 * is removed, and the volumes and snapshots it held go back to the state they had.
 */
import { emitEvent } from '../events.ts';
import { randomUUID } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import type { PumiceConfig } from '../config/config.ts';
import { nowIso, type Db } from '../db/db.ts';
import type { Task, TaskQueue, TaskRow } from '../tasks/queue.ts';
import { resourceStates, type ResourceStateOwners } from '../state/owner.ts';
import { DriverError, gib, hasFileAccess } from '../volume/drivers/driver.ts';
import { volumeImage } from '../volume/drivers/rbd.ts';
import type { VolumeManager } from '../volume/manager.ts';
import type { VolumeRow } from '../volume/records.ts';
import { CephBackupDriver } from './drivers/ceph.ts';
import { backupDriverKind, type BackupDriver, type BackupRef, type ParentRef, type VolumeSource } from './drivers/driver.ts';
import { PosixBackupDriver, type ChunkCodec, chunkCodecs } from './drivers/posix.ts';
import { PosixBackupAdapter } from './drivers/posix-adapter.ts';
import { classifyError } from '../tasks/errors.ts';
import type { BackupRow } from './records.ts';

export const backupBinary = 'cinder-backup';
/** Queue name of backup tasks in the task table. */
export const backupQueue = 'backup';
/** Fewest milliseconds between two progress writes of one backup. */
const progressIntervalMs = 1000;
/** How long the start waits for the clean-up of interrupted backups before it goes on (the rest runs in the background). */
const reconcileWaitMs = 10_000;
/** A chain longer than this is a loop in the parent links, not a chain. */
const chainDepthMax = 10_000;
/** Seconds the backup driver waits for the monitors when it connects (Cinder's backup driver has no option for it). */
const cephConnectTimeoutSeconds = 15;

export interface RestorePayload {
  volumeId: string;
  /** The volume was created for this restore and holds only zeros. */
  targetIsZeroed: boolean;
}

/** The driver `[DEFAULT] backup_driver` names (Cinder's class paths or the short names); throws naming the choices. */
export function createBackupDriver(config: PumiceConfig, log: (message: string) => void): BackupDriver {
  const d = config.DEFAULT;
  const kind = backupDriverKind(d.backup_driver);
  if (kind === 'ceph') {
    const confPath = d.backup_ceph_conf;
    return new CephBackupDriver({
      client: {
        confPath,
        user: d.backup_ceph_user.replace(/^client\./, ''),
        clusterName: basename(confPath).replace(/\.conf$/, '') || 'ceph',
        keyringPath: null,
        connectTimeoutSeconds: cephConnectTimeoutSeconds,
      },
      pool: d.backup_ceph_pool,
      chunkBytes: d.backup_ceph_chunk_size,
      stripeUnit: d.backup_ceph_stripe_unit,
      stripeCount: d.backup_ceph_stripe_count,
      log,
    });
  }
  if (kind === 'posix') {
    if (!chunkCodecs.includes(d.backup_compression_algorithm as ChunkCodec)) {
      throw new Error(`[DEFAULT] backup_compression_algorithm = ${d.backup_compression_algorithm} is unknown; use ${chunkCodecs.join(' or ')}`);
    }
    return new PosixBackupAdapter(
      new PosixBackupDriver({
        root: d.backup_posix_path ?? join(config.dataDir, 'backups'),
        chunkBytes: d.backup_file_size,
        codec: d.backup_compression_algorithm as ChunkCodec,
        concurrencyMax: 4,
      }),
    );
  }
  throw new Error(
    `[DEFAULT] backup_driver = ${d.backup_driver} is unknown; use 'posix' (chunks in backup_posix_path; cinder.backup.drivers.posix.PosixBackupDriver) or 'ceph' (RBD images in backup_ceph_pool; cinder.backup.drivers.ceph.CephBackupDriver)`,
  );
}

export class BackupManager {
  readonly driver: BackupDriver;
  readonly host: string;
  readonly zone: string;
  up = false;
  downReason: string | null = 'not started yet';
  private heartbeatTimer: NodeJS.Timeout | undefined;
  /** Leftovers of backups cut short by a crash, removed in the background and retried on heartbeats until gone. */
  private readonly cleanups = new Map<string, BackupRef>();
  private cleaning: Promise<void> | null = null;
  private readonly states: ResourceStateOwners;

  constructor(
    private readonly db: Db,
    private readonly config: PumiceConfig,
    private readonly queue: TaskQueue,
    private readonly volumes: VolumeManager,
    private readonly log: (message: string) => void,
  ) {
    const d = config.DEFAULT;
    this.driver = createBackupDriver(config, log);
    this.states = resourceStates(db, { log });
    this.host = d.host;
    this.zone = d.storage_availability_zone;
  }

  async start(): Promise<void> {
    const now = nowIso();
    this.db.run(
      'INSERT INTO services (binary, host, zone, created_at, updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (binary, host) DO UPDATE SET zone = excluded.zone',
      backupBinary, this.host, this.zone, now, now,
    );
    this.registerTasks();
    await this.heartbeat();
    await this.reconcile();
    this.queue.start([backupQueue]);
    this.heartbeatTimer = setInterval(() => {
      this.heartbeat().catch((error: unknown) => this.log(`backup heartbeat failed: ${(error as Error).message}`));
    }, this.config.DEFAULT.report_interval * 1000);
    this.heartbeatTimer.unref();
  }

  async stop(): Promise<void> {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    await this.queue.stop();
    await this.driver.stop();
  }

  /**
   * For a process without the backup role (a controller): no driver and no tasks here. The
   * service counts as up while any backup host's cinder-backup service beat within
   * service_down_time, so the API accepts backups that those hosts' runners will take.
   */
  startWithoutBackups(): void {
    const refresh = () => {
      const rows = this.db.all<{ host: string; heartbeat_at: string | null; state_reason: string | null }>(
        'SELECT host, heartbeat_at, state_reason FROM services WHERE binary = ?', backupBinary,
      );
      const downAfterMs = this.config.DEFAULT.service_down_time * 1000;
      this.up = rows.some((r) => r.heartbeat_at !== null && Date.now() - Date.parse(r.heartbeat_at) <= downAfterMs);
      this.downReason = this.up
        ? null
        : rows.length === 0
          ? 'no host runs the backup role yet (pumice serve --roles backup)'
          : `no backup host sent a heartbeat in the last ${this.config.DEFAULT.service_down_time} s (${rows.map((r) => (r.state_reason ? `${r.host}: ${r.state_reason}` : r.host)).join('; ')})`;
    };
    refresh();
    this.heartbeatTimer = setInterval(() => {
      try {
        refresh();
      } catch (error) {
        this.log(`backup service state: ${(error as Error).message}`);
      }
    }, this.config.DEFAULT.report_interval * 1000);
    this.heartbeatTimer.unref();
  }

  /**
   * Checks the driver can work (backup directory writable; Ceph reachable as backup_ceph_user with its
   * keyring and caps). When it cannot, the service is down at once, with the reason, not only after
   * service_down_time without heartbeats: it would fail every backup until fixed.
   */
  async heartbeat(): Promise<void> {
    try {
      await this.driver.start();
      if (!this.up && this.downReason !== 'not started yet') this.log('backup service is up again');
      this.up = true;
      this.downReason = null;
      this.db.run('UPDATE services SET heartbeat_at = ?, state_reason = NULL WHERE binary = ? AND host = ?', nowIso(), backupBinary, this.host);
      if (this.cleanups.size > 0) void this.runCleanups();
    } catch (error) {
      if (this.up || this.downReason === 'not started yet') this.log(`backup service is down: ${(error as Error).message}`);
      this.up = false;
      this.downReason = (error as Error).message;
      this.db.run('UPDATE services SET heartbeat_at = NULL, state_reason = ? WHERE binary = ? AND host = ?', this.downReason, backupBinary, this.host);
    }
  }

  /**
   * Where the bytes of a volume (or of its snapshot `snapshotId`) are: a file of the local backend,
   * or an RBD image reached as the backend's rbd_user (who may read and snapshot it).
   */
  volumeSource(volume: VolumeRow, snapshotId: string | null = null): VolumeSource {
    if (!volume.backend) throw new DriverError('Invalid', `volume ${volume.id} is not on any backend`);
    const state = this.volumes.backends.get(volume.backend);
    if (!state) throw new DriverError('Invalid', `volume ${volume.id} is on backend [${volume.backend}], which is not configured here`);
    const sizeBytes = volume.size_gib * gib;
    if (hasFileAccess(state.driver)) {
      const path = state.driver.volumeFilePath({ id: volume.id, sizeGiB: volume.size_gib });
      // The local backend keeps a snapshot as `snapshot-<id>` beside its volume's file.
      return { kind: 'file', path: snapshotId ? join(dirname(path), `snapshot-${snapshotId}`) : path, sizeBytes };
    }
    if (state.driver.driverName === 'rbd') {
      const c = state.config;
      return {
        kind: 'rbd',
        client: {
          confPath: c.rbd_ceph_conf || `/etc/ceph/${c.rbd_cluster_name}.conf`,
          user: c.rbd_user ?? 'admin',
          clusterName: c.rbd_cluster_name,
          keyringPath: c.rbd_keyring_conf,
          connectTimeoutSeconds: c.rados_connect_timeout > 0 ? c.rados_connect_timeout : cephConnectTimeoutSeconds,
        },
        pool: c.rbd_pool,
        image: volumeImage(volume.id),
        snapshot: snapshotId ? `snapshot-${snapshotId}` : null,
        sizeBytes,
      };
    }
    throw new DriverError('Invalid', `volume ${volume.id} is on backend [${volume.backend}] (${state.driver.driverName}), whose volumes the backup service cannot read`);
  }

  /** Null when the configured driver can back up and restore `volume`, else why not (the API answers 400). */
  unsupportedVolume(volume: VolumeRow): string | null {
    let source: VolumeSource;
    try {
      source = this.volumeSource(volume);
    } catch (error) {
      return (error as Error).message;
    }
    const reason = this.driver.unsupported(source.kind);
    return reason ? `volume ${volume.id} is on backend '${volume.backend}': ${reason}` : null;
  }

  private liveSource(volume: VolumeRow): VolumeSource {
    if (!volume.backend) throw new DriverError('Invalid', `volume ${volume.id} is not on any backend`);
    const state = this.volumes.backend(volume.backend);
    if (!state.up) throw new DriverError('Unreachable', `backend [${volume.backend}] is down: ${state.downReason}`);
    const source = this.volumeSource(volume);
    const reason = this.driver.unsupported(source.kind);
    if (reason) throw new DriverError('Invalid', reason);
    return source;
  }

  /** The source volume's image for clean-ups, when the volume still exists and its backend answers. */
  private sourceForCleanup(volumeId: string): VolumeSource | null {
    const volume = this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', volumeId);
    if (!volume) return null;
    try {
      return this.volumeSource(volume);
    } catch {
      return null;
    }
  }

  /** The backup's place: container, volume, and the full backup its chain starts from. */
  private ref(row: BackupRow): BackupRef {
    let root = row;
    for (let depth = 0; root.parent_id && depth < chainDepthMax; depth++) {
      const parent = this.backupRow(root.parent_id);
      if (!parent) break;
      root = parent;
    }
    return { backupId: row.id, container: row.container ?? 'volumebackups', volumeId: row.volume_id, chainRootId: root.id };
  }

  private parentRef(row: BackupRow): ParentRef {
    return { ...this.ref(row), snapshotId: row.snapshot_id };
  }

  private backupRow(id: string): BackupRow | undefined {
    return this.db.get<BackupRow>('SELECT * FROM backups WHERE id = ?', id);
  }

  /** Puts the source volume back to the status it had before the backup (also after a failure or crash). */
  private releaseSource(row: BackupRow): void {
    this.states.volumes.transition(row.volume_id, ['backing-up'], row.volume_previous_status === 'in-use' ? 'in-use' : 'available', { previous_status: null });
    if (row.snapshot_id) this.states.snapshots.transition(row.snapshot_id, ['backing-up'], 'available');
  }

  private progressReporter(id: string, what: string): (done: number, total: number) => void {
    let lastWriteMs = 0;
    let lastDecile = -1;
    return (done, total) => {
      const percent = total > 0 ? Math.floor((done / total) * 100) : 100;
      const now = Date.now();
      if (now - lastWriteMs >= progressIntervalMs || done === total) {
        lastWriteMs = now;
        this.db.run('UPDATE backups SET progress = ?, updated_at = ? WHERE id = ?', `${percent}% (${done}/${total} bytes)`, nowIso(), id);
      }
      const decile = Math.floor(percent / 10);
      if (decile !== lastDecile) {
        lastDecile = decile;
        this.log(`DEBUG: ${what} ${id}: ${percent}% (${done}/${total} bytes)`);
      }
    };
  }

  private registerTasks(): void {
    this.queue.register(
      'backup.create',
      async (task: Task) => {
        const row = this.backupRow(task.resourceId);
        if (!row || row.status !== 'creating') return;
        const volume = this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', row.volume_id);
        if (!volume) throw new DriverError('NotFound', `volume ${row.volume_id} was deleted before its backup was made`);
        const live = this.liveSource(volume);
        const source = row.snapshot_id ? this.volumeSource(volume, row.snapshot_id) : live;
        const parent = row.parent_id ? this.backupRow(row.parent_id) : undefined;
        if (row.parent_id && (!parent || parent.status !== 'available')) {
          throw new DriverError('NotFound', `parent backup ${row.parent_id} of incremental backup ${row.id} is no longer available`);
        }
        const ref = this.ref(row);
        const started = Date.now();
        try {
          task.checkpoint(parent ? 'backup.create.incremental.before' : 'backup.create.full.before');
          const result = await this.driver.backup({
            ...ref,
            source,
            sizeBytes: row.size_gib * gib,
            parent: parent ? this.parentRef(parent) : null,
            onProgress: this.progressReporter(row.id, 'backup'),
          });
          const seconds = (Date.now() - started) / 1000;
          this.log(
            `backup ${row.id} of volume ${volume.id}${row.snapshot_id ? ` (snapshot ${row.snapshot_id})` : ''}: ${result.objectCount} object(s), ${result.storedBytes} bytes stored, ` +
              `${((row.size_gib * gib) / 2 ** 20 / Math.max(seconds, 0.001)).toFixed(0)} MiB/s of volume in ${seconds.toFixed(1)} s`,
          );
          emitEvent('backup.written', {
            backup_id: row.id, volume_id: volume.id, snapshot_id: row.snapshot_id, incremental: parent !== null,
            object_count: result.objectCount, stored_bytes: result.storedBytes, duration_s: Math.round(seconds * 10) / 10,
          });
          task.checkpoint(parent ? 'backup.create.incremental.written' : 'backup.create.full.written');
          task.complete(() => {
            this.states.backups.transition(row.id, ['creating'], 'available', {
              object_count: result.objectCount, stored_bytes: result.storedBytes, progress: '100%', fail_reason: null,
            });
            this.releaseSource(row);
          });
        } catch (error) {
          if (classifyError(error) === 'fenced') throw error;
          // No partial backup may look valid: what it wrote goes, and what it left on the source.
          await this.driver.delete(ref, live).catch((cleanup: unknown) => this.log(`backup ${row.id}: clean-up after failure: ${(cleanup as Error).message}`));
          // A keyring or caps problem fails every backup: show the service down with the reason now.
          if (error instanceof DriverError && (error.reason === 'Unreachable' || error.reason === 'Permission')) await this.heartbeat();
          throw error;
        }
      },
      (task, reason) => {
        const row = this.backupRow(task.resourceId);
        if (!row) return;
        this.states.backups.transition(row.id, ['creating'], 'error', { fail_reason: reason, progress: null });
        this.releaseSource(row);
        this.volumes.userMessage(row.volume_id, 'VOLUME', 'VOLUME_BACKUP_001_001', `create backup ${row.id}: ${reason}`);
      },
    );

    this.queue.register(
      'backup.restore',
      async (task: Task) => {
        const row = this.backupRow(task.resourceId);
        if (!row || row.status !== 'restoring') return;
        const { volumeId, targetIsZeroed } = task.payload as RestorePayload;
        // The volume was made (and held in restoring-backup) before this task was queued: by the
        // volume's own task (a chain) or by the restore request into an existing volume.
        const volume = this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', volumeId);
        if (!volume) throw new DriverError('NotFound', `restore target volume ${volumeId} was deleted`);
        if (volume.status !== 'restoring-backup') throw new DriverError('Invalid', `restore target volume ${volumeId} is '${volume.status}', not restoring-backup (reset by an operator?)`);
        const target = this.liveSource(volume);
        const backend = this.volumes.backend(volume.backend!).driver;
        if (hasFileAccess(backend)) backend.withdrawExport({ id: volume.id, sizeGiB: volume.size_gib });
        task.checkpoint('backup.restore.before');
        await this.driver.restore({
          ...this.ref(row),
          target,
          sizeBytes: row.size_gib * gib,
          targetIsZeroed,
          discardExcess: this.config.DEFAULT.restore_discard_excess_bytes,
          onProgress: this.progressReporter(row.id, 'restore of backup'),
        });
        task.checkpoint('backup.restore.written');
        task.complete(() => {
          this.states.volumes.transition(volume.id, ['restoring-backup'], 'available');
          this.states.backups.transition(row.id, ['restoring'], 'available', { restore_volume_id: null, progress: null });
        });
        this.log(`restore of backup ${row.id} into volume ${volume.id}: done`);
      },
      (task, reason) => this.failRestore(task.resourceId, (task.payload as RestorePayload).volumeId, reason),
    );

    this.queue.register(
      'backup.delete',
      async (task: Task) => {
        const row = this.backupRow(task.resourceId);
        if (!row) return;
        task.checkpoint('backup.delete.before');
        await this.driver.delete(this.ref(row), this.sourceForCleanup(row.volume_id));
        task.checkpoint('backup.delete.deleted');
        task.complete(() => this.db.run('DELETE FROM backups WHERE id = ?', row.id));
      },
      (task, reason) => {
        this.states.backups.transition(task.resourceId, ['deleting'], 'error_deleting', { fail_reason: reason });
      },
    );
  }

  /** A failed restore leaves the backup usable (`available`, with the reason) and the target volume `error_restoring`. */
  private failRestore(backupId: string, volumeId: string, reason: string): void {
    this.states.backups.transition(backupId, ['restoring'], 'available', { fail_reason: `restore failed: ${reason}`, restore_volume_id: null, progress: null });
    this.states.volumes.transition(volumeId, ['restoring-backup'], 'error_restoring', { status_reason: reason });
    this.volumes.userMessage(volumeId, 'VOLUME', 'VOLUME_BACKUP_001_002', `restore backup ${backupId}: ${reason}`);
  }

  /** Removes what interrupted backups left (images, snapshots, chunk directories); what fails stays queued for the next heartbeat. */
  runCleanups(): Promise<void> {
    this.cleaning ??= (async () => {
      for (const [backupId, ref] of [...this.cleanups]) {
        try {
          await this.driver.delete(ref, this.sourceForCleanup(ref.volumeId));
          this.cleanups.delete(backupId);
          this.log(`reconcile: removed what interrupted backup ${backupId} had written`);
        } catch (error) {
          this.log(`reconcile: backup ${backupId}: clean-up deferred to the next heartbeat: ${(error as Error).message}`);
        }
      }
    })().finally(() => (this.cleaning = null));
    return this.cleaning;
  }

  /**
   * Runs before the backup queue starts. A `running` backup task whose
   * runner is gone (lease expired, or a dead process of this host) was
   * interrupted: creating → error (partial chunks removed, source volume
   * released); restoring → backup available, target volume error_restoring;
   * deleting re-runs (it is idempotent). A task another live process runs
   * (same data directory) is left to it.
   */
  private async reconcile(): Promise<void> {
    const interrupted = (id: string) => {
      const task = this.db.get<TaskRow>("SELECT * FROM tasks WHERE resource_id = ? AND queue = ? AND state = 'running'", id, backupQueue);
      return task && this.queue.abandoned(task) ? task : undefined;
    };
    const pending = (id: string) =>
      this.db.get<{ id: number }>("SELECT id FROM tasks WHERE resource_id = ? AND state IN ('queued', 'running')", id);
    const failTask = (task: TaskRow, reason: string) => this.queue.store.fail(task.id, task.owner, reason, () => undefined);

    for (const row of this.db.all<BackupRow>("SELECT * FROM backups WHERE status = 'creating'")) {
      const task = interrupted(row.id);
      if (!task && pending(row.id)) continue; // queued: it will run
      const reason = 'the backup was interrupted (the process stopped while it ran); what it had written was removed. Delete it and create a new backup.';
      // Removed in the background: a killed process's watch on an image may hold its removal for up to 30 s.
      this.cleanups.set(row.id, this.ref(row));
      this.db.transaction(() => {
        if (task) failTask(task, reason);
        this.states.backups.transition(row.id, ['creating'], 'error', { fail_reason: reason, progress: null });
        this.releaseSource(row);
      });
      this.log(`reconcile: backup ${row.id}: ${reason}`);
    }
    for (const row of this.db.all<BackupRow>("SELECT * FROM backups WHERE status = 'restoring'")) {
      const task = interrupted(row.id);
      if (!task && pending(row.id)) continue;
      // A volume made for the restore is still being created: its task queues the restore when done.
      if (!task && row.restore_volume_id && pending(row.restore_volume_id)) continue;
      const payload = task ? (JSON.parse(task.payload) as RestorePayload) : null;
      const reason = 'the restore was interrupted (the process stopped while it ran); the volume holds partial data';
      this.db.transaction(() => {
        if (task) failTask(task, reason);
        this.failRestore(row.id, payload?.volumeId ?? row.restore_volume_id ?? '', reason);
      });
      this.log(`reconcile: restore of backup ${row.id}: ${reason}`);
    }
    for (const row of this.db.all<BackupRow>("SELECT * FROM backups WHERE status = 'deleting'")) {
      if (pending(row.id)) continue;
      this.states.backups.transition(row.id, ['deleting'], 'error_deleting', { fail_reason: 'the delete was interrupted and has no pending task; delete it again' });
    }
    // A volume left `backing-up` by a backup row that is gone or finished goes back to available.
    for (const volume of this.db.all<VolumeRow>("SELECT v.* FROM volumes v WHERE v.status = 'backing-up' AND NOT EXISTS (SELECT 1 FROM backups b WHERE b.volume_id = v.id AND b.status = 'creating')")) {
      this.states.volumes.transition(volume.id, ['backing-up'], volume.previous_status === 'in-use' ? 'in-use' : 'available', { previous_status: null });
      this.log(`reconcile: volume ${volume.id} was left backing-up with no backup running; set to available`);
    }
    for (const snapshot of this.db.all<{ id: string }>("SELECT s.id FROM snapshots s WHERE s.status = 'backing-up' AND NOT EXISTS (SELECT 1 FROM backups b WHERE b.snapshot_id = s.id AND b.status = 'creating')")) {
      this.states.snapshots.transition(snapshot.id, ['backing-up'], 'available');
      this.log(`reconcile: snapshot ${snapshot.id} was left backing-up with no backup running; set to available`);
    }
    // Waited for a while (a directory goes at once); what takes longer finishes in the background.
    if (this.cleanups.size > 0) await Promise.race([this.runCleanups(), new Promise((resolve) => setTimeout(resolve, reconcileWaitMs).unref())]);
    await this.driver.removeOrphans?.((id) => this.db.get('SELECT 1 FROM backups WHERE id = ?', id) !== undefined, this.log);
  }
}

export function newBackupId(): string {
  return randomUUID();
}
