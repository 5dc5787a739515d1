/**
 * The backup role (cinder-backup): owns the backup driver, runs backup,
 * restore and delete tasks from the `backup` queue, heartbeats its service
 * row, and reconciles at start: a backup or restore cut short by a crash is
 * not resumed but failed with a reason, its partial chunks are removed, and
 * the volumes it held go back to the state they had.
 */
import { randomUUID } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { PumiceConfig } from '../config/config.ts';
import { nowIso, type Db } from '../db/db.ts';
import type { Task, TaskQueue } from '../tasks/queue.ts';
import { DriverError, gib, hasFileAccess, type FileAccess, type VolumeBackend } from '../volume/drivers/driver.ts';
import type { VolumeManager } from '../volume/manager.ts';
import type { VolumeRow } from '../volume/records.ts';
import { PosixBackupDriver, validContainer, type ChunkCodec, chunkCodecs } from './drivers/posix.ts';
import type { BackupRow } from './records.ts';

export const backupBinary = 'cinder-backup';
/** Queue name of backup tasks in the task table. */
export const backupQueue = 'backup';
export const posixDriverName = 'cinder.backup.drivers.posix.PosixBackupDriver';
/** How long a restore waits for the volume made for it to become available. */
const restoreTargetWaitMs = 10 * 60_000;
/** Fewest milliseconds between two progress writes of one backup. */
const progressIntervalMs = 1000;
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface RestorePayload {
  volumeId: string;
  /** The volume was created for this restore and holds only zeros. */
  targetIsZeroed: boolean;
}

export class BackupManager {
  readonly driver: PosixBackupDriver;
  readonly host: string;
  readonly zone: string;
  up = false;
  downReason: string | null = 'not started yet';
  private heartbeatTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly db: Db,
    private readonly config: PumiceConfig,
    private readonly queue: TaskQueue,
    private readonly volumes: VolumeManager,
    private readonly log: (message: string) => void,
  ) {
    const d = config.DEFAULT;
    if (!/^(posix|cinder\.backup\.drivers\.posix(\.PosixBackupDriver)?)$/.test(d.backup_driver)) {
      throw new Error(`[DEFAULT] backup_driver = ${d.backup_driver} is unknown; use 'posix' (chunks in backup_posix_path). The Ceph backup driver is not implemented yet.`);
    }
    if (!chunkCodecs.includes(d.backup_compression_algorithm as ChunkCodec)) {
      throw new Error(`[DEFAULT] backup_compression_algorithm = ${d.backup_compression_algorithm} is unknown; use ${chunkCodecs.join(' or ')}`);
    }
    this.driver = new PosixBackupDriver({
      root: d.backup_posix_path ?? join(config.dataDir, 'backups'),
      chunkBytes: d.backup_file_size,
      codec: d.backup_compression_algorithm as ChunkCodec,
      concurrencyMax: 4,
    });
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
  }

  /** Checks the backup directory can be written; the service row shows down with the reason when not. */
  async heartbeat(): Promise<void> {
    try {
      await this.driver.start();
      if (!this.up && this.downReason !== 'not started yet') this.log('backup service is up again');
      this.up = true;
      this.downReason = null;
      this.db.run('UPDATE services SET heartbeat_at = ?, state_reason = NULL WHERE binary = ? AND host = ?', nowIso(), backupBinary, this.host);
    } catch (error) {
      if (this.up || this.downReason === 'not started yet') this.log(`backup service is down: ${(error as Error).message}`);
      this.up = false;
      this.downReason = (error as Error).message;
      this.db.run('UPDATE services SET state_reason = ? WHERE binary = ? AND host = ?', this.downReason, backupBinary, this.host);
    }
  }

  /** The source or target volume's file, when its backend keeps volumes as files on this host. */
  private volumeFile(volume: VolumeRow): { backend: VolumeBackend & FileAccess; path: string } {
    if (!volume.backend) throw new DriverError('Invalid', `volume ${volume.id} is not on any backend`);
    const state = this.volumes.backend(volume.backend);
    if (!state.up) throw new DriverError('Unreachable', `backend [${volume.backend}] is down: ${state.downReason}`);
    if (!hasFileAccess(state.driver)) {
      throw new DriverError('Invalid', `the posix backup driver reads volumes of the local backend only; backend [${volume.backend}] is ${state.driver.driverName} (the Ceph backup driver is not implemented yet)`);
    }
    return { backend: state.driver, path: state.driver.volumeFilePath({ id: volume.id, sizeGiB: volume.size_gib }) };
  }

  private backupRow(id: string): BackupRow | undefined {
    return this.db.get<BackupRow>('SELECT * FROM backups WHERE id = ?', id);
  }

  private location(row: BackupRow) {
    return { backupId: row.id, container: row.container ?? 'volumebackups' };
  }

  /** Puts the source volume back to the status it had before the backup (also after a failure or crash). */
  private releaseSource(row: BackupRow): void {
    this.db.run(
      "UPDATE volumes SET status = ?, previous_status = NULL, updated_at = ? WHERE id = ? AND status = 'backing-up'",
      row.volume_previous_status ?? 'available', nowIso(), row.volume_id,
    );
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
        this.log(`${what} ${id}: ${percent}% (${done}/${total} bytes)`);
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
        const { path } = this.volumeFile(volume);
        const parent = row.parent_id ? this.backupRow(row.parent_id) : undefined;
        if (row.parent_id && (!parent || parent.status !== 'available')) {
          throw new DriverError('NotFound', `parent backup ${row.parent_id} of incremental backup ${row.id} is no longer available`);
        }
        const started = Date.now();
        try {
          const manifest = await this.driver.backup({
            ...this.location(row),
            volumeId: volume.id,
            sourcePath: path,
            sizeBytes: row.size_gib * gib,
            parent: parent ? this.location(parent) : null,
            onProgress: this.progressReporter(row.id, 'backup'),
          });
          const seconds = (Date.now() - started) / 1000;
          this.log(
            `backup ${row.id} of volume ${volume.id}: ${manifest.objectCount} chunk file(s), ${manifest.storedBytes} bytes stored, ` +
              `${((row.size_gib * gib) / 2 ** 20 / Math.max(seconds, 0.001)).toFixed(0)} MiB/s read in ${seconds.toFixed(1)} s`,
          );
          this.db.transaction(() => {
            this.db.run(
              "UPDATE backups SET status = 'available', object_count = ?, stored_bytes = ?, progress = '100%', fail_reason = NULL, updated_at = ? WHERE id = ?",
              manifest.objectCount, manifest.storedBytes, nowIso(), row.id,
            );
            this.releaseSource(row);
          });
        } catch (error) {
          // No partial backup may look valid: its directory goes, manifest and all.
          await this.driver.delete(this.location(row)).catch(() => undefined);
          throw error;
        }
      },
      (task, reason) => {
        const row = this.backupRow(task.resourceId);
        if (!row) return;
        this.db.run("UPDATE backups SET status = 'error', fail_reason = ?, progress = NULL, updated_at = ? WHERE id = ?", reason, nowIso(), row.id);
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
        const volume = await this.waitForTarget(volumeId);
        const { backend, path } = this.volumeFile(volume);
        backend.withdrawExport({ id: volume.id, sizeGiB: volume.size_gib });
        await this.driver.restore({
          ...this.location(row),
          targetPath: path,
          targetIsZeroed,
          discardExcess: this.config.DEFAULT.restore_discard_excess_bytes,
          onProgress: this.progressReporter(row.id, 'restore of backup'),
        });
        this.db.transaction(() => {
          this.db.run("UPDATE volumes SET status = 'available', updated_at = ? WHERE id = ? AND status = 'restoring-backup'", nowIso(), volume.id);
          this.db.run("UPDATE backups SET status = 'available', restore_volume_id = NULL, progress = NULL, updated_at = ? WHERE id = ?", nowIso(), row.id);
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
        await this.driver.delete(this.location(row));
        this.db.run('DELETE FROM backups WHERE id = ?', row.id);
      },
      (task, reason) => {
        this.db.run("UPDATE backups SET status = 'error_deleting', fail_reason = ?, updated_at = ? WHERE id = ?", reason, nowIso(), task.resourceId);
      },
    );
  }

  /** A failed restore leaves the backup usable (`available`, with the reason) and the target volume `error_restoring`. */
  private failRestore(backupId: string, volumeId: string, reason: string): void {
    this.db.run("UPDATE backups SET status = 'available', fail_reason = ?, restore_volume_id = NULL, progress = NULL, updated_at = ? WHERE id = ? AND status = 'restoring'", `restore failed: ${reason}`, nowIso(), backupId);
    this.db.run("UPDATE volumes SET status = 'error_restoring', status_reason = ?, updated_at = ? WHERE id = ? AND status IN ('restoring-backup', 'creating', 'available')", reason, nowIso(), volumeId);
    this.volumes.userMessage(volumeId, 'VOLUME', 'VOLUME_BACKUP_001_002', `restore backup ${backupId}: ${reason}`);
  }

  /** Waits until a volume made for a restore exists on its backend, then holds it in `restoring-backup`. */
  private async waitForTarget(volumeId: string): Promise<VolumeRow> {
    const deadline = Date.now() + restoreTargetWaitMs;
    for (;;) {
      const volume = this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', volumeId);
      if (!volume) throw new DriverError('NotFound', `restore target volume ${volumeId} was deleted`);
      if (volume.status === 'restoring-backup') return volume;
      if (volume.status === 'available') {
        const claimed = this.db.run("UPDATE volumes SET status = 'restoring-backup', updated_at = ? WHERE id = ? AND status = 'available'", nowIso(), volumeId);
        if (claimed.changes === 1) return { ...volume, status: 'restoring-backup' };
      } else if (volume.status !== 'creating') {
        throw new DriverError('Invalid', `restore target volume ${volumeId} is '${volume.status}'; it must be created first`);
      }
      if (Date.now() > deadline) throw new DriverError('Unreachable', `restore target volume ${volumeId} was not created within ${restoreTargetWaitMs / 1000} s`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /**
   * Runs before the backup queue starts, so every `running` backup task
   * belongs to a process that died. Creating → error (partial chunks
   * removed, source volume released); restoring → backup available, target
   * volume error_restoring; deleting re-runs (it is idempotent).
   */
  private async reconcile(): Promise<void> {
    const interrupted = (id: string) =>
      this.db.get<{ id: number }>("SELECT id FROM tasks WHERE resource_id = ? AND queue = ? AND state = 'running'", id, backupQueue);
    const pending = (id: string) =>
      this.db.get<{ id: number }>("SELECT id FROM tasks WHERE resource_id = ? AND queue = ? AND state IN ('queued', 'running')", id, backupQueue);
    const failTask = (taskId: number, reason: string) =>
      this.db.run("UPDATE tasks SET state = 'failed', last_error = ?, updated_at = ? WHERE id = ?", reason, nowIso(), taskId);

    for (const row of this.db.all<BackupRow>("SELECT * FROM backups WHERE status = 'creating'")) {
      const task = interrupted(row.id);
      if (!task && pending(row.id)) continue; // queued: it will run
      const reason = 'the backup was interrupted (the process stopped while it ran); its partial chunks were removed. Delete it and create a new backup.';
      await this.driver.delete(this.location(row)).catch((error: unknown) => this.log(`reconcile: backup ${row.id}: ${(error as Error).message}`));
      this.db.transaction(() => {
        if (task) failTask(task.id, reason);
        this.db.run("UPDATE backups SET status = 'error', fail_reason = ?, progress = NULL, updated_at = ? WHERE id = ?", reason, nowIso(), row.id);
        this.releaseSource(row);
      });
      this.log(`reconcile: backup ${row.id}: ${reason}`);
    }
    for (const row of this.db.all<BackupRow>("SELECT * FROM backups WHERE status = 'restoring'")) {
      const task = interrupted(row.id);
      if (!task && pending(row.id)) continue;
      const payload = task ? (JSON.parse(this.db.get<{ payload: string }>('SELECT payload FROM tasks WHERE id = ?', task.id)!.payload) as RestorePayload) : null;
      const reason = 'the restore was interrupted (the process stopped while it ran); the volume holds partial data';
      this.db.transaction(() => {
        if (task) failTask(task.id, reason);
        this.failRestore(row.id, payload?.volumeId ?? row.restore_volume_id ?? '', reason);
      });
      this.log(`reconcile: restore of backup ${row.id}: ${reason}`);
    }
    for (const row of this.db.all<BackupRow>("SELECT * FROM backups WHERE status = 'deleting'")) {
      if (pending(row.id)) continue;
      this.db.run("UPDATE backups SET status = 'error_deleting', fail_reason = ?, updated_at = ? WHERE id = ?", 'the delete was interrupted and has no pending task; delete it again', nowIso(), row.id);
    }
    // A volume left `backing-up` by a backup row that is gone or finished goes back to available.
    for (const volume of this.db.all<VolumeRow>("SELECT v.* FROM volumes v WHERE v.status = 'backing-up' AND NOT EXISTS (SELECT 1 FROM backups b WHERE b.volume_id = v.id AND b.status = 'creating')")) {
      this.db.run("UPDATE volumes SET status = 'available', updated_at = ? WHERE id = ? AND status = 'backing-up'", nowIso(), volume.id);
      this.log(`reconcile: volume ${volume.id} was left backing-up with no backup running; set to available`);
    }
    await this.removeOrphans();
  }

  /** Removes backup directories and temporary files no database row refers to. */
  private async removeOrphans(): Promise<void> {
    const root = this.driver.options.root;
    let containers: string[];
    try {
      containers = await readdir(root);
    } catch {
      return;
    }
    for (const container of containers) {
      if (!validContainer(container)) continue;
      let entries: string[];
      try {
        entries = await readdir(join(root, container));
      } catch {
        continue;
      }
      for (const entry of entries) {
        if (!uuidPattern.test(entry)) continue; // only what this driver names; never anything else in the directory
        if (this.db.get('SELECT 1 FROM backups WHERE id = ?', entry)) {
          for (const file of await readdir(join(root, container, entry)).catch(() => [] as string[])) {
            if (file.endsWith('.tmp')) await rm(join(root, container, entry, file), { force: true });
          }
          continue;
        }
        this.log(`reconcile: removing orphaned backup directory ${container}/${entry} (no database row)`);
        await rm(join(root, container, entry), { recursive: true, force: true });
      }
    }
  }
}

export function newBackupId(): string {
  return randomUUID();
}
