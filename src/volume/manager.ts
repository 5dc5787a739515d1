/**
 * The volume role: loads the configured backends, keeps their capacity
 * reports and service heartbeats, runs volume and snapshot tasks against the
 * drivers, and reconciles the database with the storage at start.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { BackendConfig, PumiceConfig } from '../config/config.ts';
import { nowIso, type Db } from '../db/db.ts';
import type { Task, TaskQueue } from '../tasks/queue.ts';
import { markTransient } from '../tasks/errors.ts';
import { resourceStates, type ResourceStateOwners } from '../state/owner.ts';
import { backupQueue, type RestorePayload } from '../backup/manager.ts';
import { DriverError, hasClones, hasGroupSnapshots, hasManageExisting, hasManageExistingSnapshots, hasSnapshots, type CapacityReport, type SnapshotRef, type VolumeBackend } from './drivers/driver.ts';
import { LocalBackend, type BlockExporter } from './drivers/local.ts';
import { RbdBackend } from './drivers/rbd.ts';
import { fillVolumeFromImage, uploadVolumeToImage, type UploadPayload } from './image-tasks.ts';
import { registerMigrationTasks } from './migration.ts';
import type { ImageServiceDeps } from './images.ts';
import type { SnapshotRow, VolumeRow } from './records.ts';
import type { PoolState } from './scheduler/scheduler.ts';
import type { SnapshotStatus, VolumeStatus } from './states.ts';
import { withoutDirectories } from '../redact.ts';
import { followMembers, registerGroupTasks } from './groups.ts';

export interface BackendState {
  config: BackendConfig;
  driver: VolumeBackend;
  host: string;
  up: boolean;
  downReason: string | null;
  capacity: CapacityReport | null;
}

export interface CreatePayload {
  /** `existing`: os-volume-manage adopts the backend object named `id` (source-name) without copying. */
  source?: { kind: 'snapshot' | 'volume' | 'image' | 'backup' | 'existing'; id: string };
}

export interface SnapshotCreatePayload {
  /** os-snapshot-manage adopts the backend's snapshot `name` of the volume (renamed, no copy). */
  source?: { kind: 'existing'; name: string };
}

export const schedulerBinary = 'cinder-scheduler';
export const volumeBinary = 'cinder-volume';

export class VolumeManager {
  readonly backends = new Map<string, BackendState>();
  /** How to reach the image service; set by the app before start(). */
  images: ImageServiceDeps | null = null;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private readonly states: ResourceStateOwners;
  /**
   * False in a process without the volume role (a controller running api and scheduler): it
   * starts no driver and runs no task; the scheduler sees each backend through the heartbeats
   * and capacity reports the volume hosts write to the services table.
   */
  private runsVolumes = true;
  /** False in a process without the scheduler role: it keeps no cinder-scheduler service row. */
  private runsScheduler = true;

  constructor(
    private readonly db: Db,
    private readonly config: PumiceConfig,
    private readonly queue: TaskQueue,
    exporter: BlockExporter,
    /** The process log (the scheduler writes what it tells administrators only). */
    readonly log: (message: string) => void,
    /** Builds a backend's driver; tests pass a fake that implements the same interfaces. */
    driverFactory: (backend: BackendConfig) => VolumeBackend = (backend) => createDriver(backend, exporter, log),
  ) {
    this.states = resourceStates(db, { log });
    for (const backend of config.backends) {
      this.backends.set(backend.section, {
        config: backend,
        driver: driverFactory(backend),
        host: `${config.DEFAULT.host}@${backend.section}`,
        up: false,
        downReason: 'not started yet',
        capacity: null,
      });
    }
  }

  /** For a process without the volume role: pools are read from the volume hosts' service rows (see runsVolumes). */
  startWithoutVolumes(withScheduler: boolean): void {
    this.runsVolumes = false;
    this.runsScheduler = withScheduler;
    this.registerServices();
    void this.heartbeat();
    this.heartbeatTimer = setInterval(() => {
      this.heartbeat().catch((error: unknown) => this.log(`heartbeat failed: ${(error as Error).message}`));
    }, this.config.DEFAULT.report_interval * 1000);
    this.heartbeatTimer.unref();
  }

  /** Starts the volume role; `withScheduler` false on a volume host without the scheduler role. */
  async start(withScheduler = true): Promise<void> {
    this.runsScheduler = withScheduler;
    this.registerServices();
    this.registerTasks();
    await Promise.all([...this.backends.values()].map((state) => this.startBackend(state)));
    await this.reconcile();
    this.queue.start([...this.backends.keys()]);
    await this.heartbeat();
    this.heartbeatTimer = setInterval(() => {
      this.heartbeat().catch((error: unknown) => this.log(`heartbeat failed: ${(error as Error).message}`));
    }, this.config.DEFAULT.report_interval * 1000);
    this.heartbeatTimer.unref();
  }

  async stop(): Promise<void> {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    await this.queue.stop();
    await Promise.all([...this.backends.values()].map((s) => s.driver.stop().catch(() => undefined)));
  }

  private async startBackend(state: BackendState): Promise<void> {
    try {
      await state.driver.start();
      state.capacity = await state.driver.reportCapacity();
      state.up = true;
      state.downReason = null;
    } catch (error) {
      state.up = false;
      state.downReason = (error as Error).message;
      this.log(`backend [${state.config.section}] is down: ${state.downReason}`);
      this.queue.pauseClaims(state.config.section, true);
    }
  }

  private registerServices(): void {
    const now = nowIso();
    const upsert = (binary: string, host: string, zone: string, cluster: string | null) =>
      this.db.run(
        'INSERT INTO services (binary, host, zone, cluster, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (binary, host) DO UPDATE SET zone = excluded.zone, cluster = excluded.cluster',
        binary, host, zone, cluster, now, now,
      );
    if (this.runsScheduler) upsert(schedulerBinary, this.config.DEFAULT.host, this.config.DEFAULT.storage_availability_zone, null);
    if (!this.runsVolumes) return;
    for (const state of this.backends.values()) upsert(volumeBinary, state.host, state.config.backend_availability_zone!, this.clusterOf(state));
  }

  /** Refreshes capacity reports and writes heartbeats; a backend whose report fails stops heartbeating (shows down). */
  async heartbeat(): Promise<void> {
    if (this.runsScheduler) this.db.run('UPDATE services SET heartbeat_at = ?, state_reason = NULL WHERE binary = ? AND host = ?', nowIso(), schedulerBinary, this.config.DEFAULT.host);
    if (!this.runsVolumes) {
      // The API's checks (backend up?) read BackendState: keep it as the volume hosts report it.
      for (const state of this.backends.values()) {
        const pool = this.remotePoolState(state);
        state.up = pool.up;
        state.downReason = pool.downReason;
      }
      return;
    }
    // Backends beat independently: a cluster that times out must not make the others look down.
    await Promise.all([...this.backends.values()].map((state) => this.heartbeatBackend(state)));
  }

  private readonly heartbeatsRunning = new Set<string>();

  private async heartbeatBackend(state: BackendState): Promise<void> {
    const section = state.config.section;
    if (this.heartbeatsRunning.has(section)) return;
    this.heartbeatsRunning.add(section);
    try {
      if (!state.up) await state.driver.start();
      state.capacity = await state.driver.reportCapacity();
      await state.driver.maintain?.();
      if (!state.up) this.log(`backend [${section}] is up again`);
      this.queue.pauseClaims(section, false);
      state.up = true;
      state.downReason = null;
      this.db.run(
        'UPDATE services SET heartbeat_at = ?, state_reason = NULL, capacity_report = ? WHERE binary = ? AND host = ?',
        nowIso(), JSON.stringify(this.localPoolState(state)), volumeBinary, state.host,
      );
    } catch (error) {
      if (state.up) this.log(`WARNING: backend [${section}] is down: ${(error as Error).message}`);
      state.up = false;
      state.downReason = (error as Error).message;
      this.db.run('UPDATE services SET state_reason = ? WHERE binary = ? AND host = ?', state.downReason, volumeBinary, state.host);
      this.holdTasks(state);
    } finally {
      this.heartbeatsRunning.delete(section);
    }
  }

  /** `cluster@backend` when [DEFAULT] cluster is set: the host string of the backend's volumes (Cinder's cluster_name). */
  private clusterOf(state: BackendState): string | null {
    return this.config.DEFAULT.cluster ? `${this.config.DEFAULT.cluster}@${state.config.section}` : null;
  }

  /** The scheduler's view of every backend, with provisioned capacity counted from the database. */
  poolStates(): PoolState[] {
    if (!this.runsVolumes) return [...this.backends.values()].map((state) => this.remotePoolState(state));
    return [...this.backends.values()].map((state) => this.localPoolState(state));
  }

  /**
   * A backend as its volume hosts report it: up when any cinder-volume service of the backend
   * (`HOST@section`) beat within service_down_time and is enabled; its capacity from the most recent report.
   */
  private remotePoolState(state: BackendState): PoolState {
    const section = state.config.section;
    const pattern = `%@${section.replace(/[\\%_]/g, (c) => `\\${c}`)}`;
    const rows = this.db.all<{ host: string; heartbeat_at: string | null; disabled: number; state_reason: string | null; capacity_report: string | null }>(
      "SELECT host, heartbeat_at, disabled, state_reason, capacity_report FROM services WHERE binary = ? AND host LIKE ? ESCAPE '\\' ORDER BY heartbeat_at DESC",
      volumeBinary, pattern,
    );
    const downAfterMs = this.config.DEFAULT.service_down_time * 1000;
    const live = rows.filter((r) => r.heartbeat_at !== null && Date.now() - Date.parse(r.heartbeat_at) <= downAfterMs && r.capacity_report);
    const report = live.find((r) => !r.disabled) ?? live[0];
    if (!report) {
      const reason = rows.length === 0
        ? `no volume host has started backend [${section}] yet (pumice serve --roles volume on a host whose enabled_backends has it)`
        : `no volume host of backend [${section}] sent a heartbeat in the last ${this.config.DEFAULT.service_down_time} s (${rows.map((r) => r.state_reason ? `${r.host}: ${r.state_reason}` : r.host).join('; ')})`;
      return { ...this.localPoolState(state), up: false, downReason: reason };
    }
    const pool = JSON.parse(report.capacity_report!) as PoolState;
    return { ...pool, up: true, downReason: null, disabled: live.every((r) => r.disabled === 1) };
  }

  private localPoolState(state: BackendState): PoolState {
    const provisioned = new Map<string, number>();
    for (const row of this.db.all<{ backend: string; gb: number }>('SELECT backend, SUM(size_gib) AS gb FROM volumes WHERE backend IS NOT NULL GROUP BY backend')) {
      provisioned.set(row.backend, row.gb);
    }
    const disabled = new Set(
      this.db.all<{ host: string }>('SELECT host FROM services WHERE binary = ? AND disabled = 1', volumeBinary).map((r) => r.host),
    );
    return {
      backend: state.config.section,
      host: `${this.clusterOf(state) ?? state.host}#${state.config.volume_backend_name}`,
      volumeBackendName: state.config.volume_backend_name,
      availabilityZone: state.config.backend_availability_zone!,
      up: state.up,
      disabled: disabled.has(state.host),
      downReason: state.downReason,
      totalCapacityGiB: state.capacity?.totalCapacityGiB ?? 0,
      freeCapacityGiB: state.capacity?.freeCapacityGiB ?? 0,
      provisionedCapacityGiB: state.capacity?.provisionedCapacityGiB ?? provisioned.get(state.config.section) ?? 0,
      maxOverSubscriptionRatio: state.config.max_over_subscription_ratio,
      reservedPercentage: state.config.reserved_percentage,
      thinProvisioningSupport: state.capacity?.thinProvisioningSupport ?? true,
      thickProvisioningSupport: state.capacity?.thickProvisioningSupport ?? false,
      capabilities: {
        storage_protocol: state.capacity?.storageProtocol ?? 'unknown',
        driver_version: state.driver.driverVersion,
        vendor_name: 'Pumice',
        // Several NBD clients may open one local volume; RBD volumes would need exclusive-lock off first.
        multiattach: state.driver instanceof LocalBackend,
        snapshot_support: hasSnapshots(state.driver),
        clone_support: hasClones(state.driver),
      },
    };
  }

  backend(section: string): BackendState {
    const state = this.backends.get(section);
    if (!state) throw new DriverError('Unreachable', `backend [${section}] is not configured on this host (enabled_backends)`);
    return state;
  }

  private ready(section: string): VolumeBackend {
    const state = this.backend(section);
    if (!state.up) {
      // Claimed before the heartbeat saw the backend down: back to the queue, for a member that reaches it.
      this.queue.pauseClaims(section, true);
      throw markTransient(new DriverError('Unreachable', `backend [${section}] is down: ${state.downReason}`));
    }
    return state.driver;
  }

  /**
   * A backend of this host is down: this host claims none of its tasks, which stay queued for a
   * member of the cluster that reaches the storage. When no member does, the owners of the tasks
   * left waiting read why in /messages (once per resource).
   */
  private holdTasks(state: BackendState): void {
    const section = state.config.section;
    this.queue.pauseClaims(section, true);
    if (this.remotePoolState(state).up) return;
    const waiting = this.db.all<{ kind: string; resource_id: string }>(
      "SELECT kind, resource_id FROM tasks WHERE queue = ? AND state = 'queued' AND NOT EXISTS (SELECT 1 FROM messages WHERE resource_uuid = tasks.resource_id AND event_id IN ('VOLUME_VOLUME_001_009', 'VOLUME_SNAPSHOT_001_004'))",
      section,
    );
    for (const task of waiting) {
      const snapshot = task.kind.startsWith('snapshot.');
      this.userMessage(task.resource_id, snapshot ? 'SNAPSHOT' : 'VOLUME', snapshot ? 'VOLUME_SNAPSHOT_001_004' : 'VOLUME_VOLUME_001_009',
        `${task.kind}: backend [${section}] is down (${state.downReason}); the request waits until a volume host reaches the backend again`);
    }
  }

  // ---- tasks ----
  private registerTasks(): void {
    const volume = (id: string) => this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', id);
    const snapshot = (id: string) => this.db.get<SnapshotRow>('SELECT * FROM snapshots WHERE id = ?', id);
    const { volumes, snapshots } = this.states;
    registerMigrationTasks({
      db: this.db,
      queue: this.queue,
      volumes,
      ready: (section) => this.ready(section),
      log: this.log,
      userMessage: (volumeId, reason) => this.userMessage(volumeId, 'VOLUME', 'VOLUME_VOLUME_001_008', reason),
    });
    registerGroupTasks({ db: this.db, queue: this.queue, ready: (section) => this.ready(section), log: this.log });

    this.queue.register(
      'volume.create',
      async (task: Task) => {
        const row = volume(task.resourceId);
        // 'downloading' when a copy from an image was cut short: the re-run copies again.
        if (!row || (row.status !== 'creating' && row.status !== 'downloading')) return;
        const driver = this.ready(task.queue);
        const ref = { id: row.id, sizeGiB: row.size_gib };
        const { source } = task.payload as CreatePayload;
        if (source?.kind === 'image') {
          if (!this.images) throw new DriverError('Unreachable', 'this process has no image service client');
          const started = Date.now();
          task.checkpoint('volume.create.image.before');
          const result = await fillVolumeFromImage(this.images, driver, ref, source.id, () => {
            task.checkpoint('volume.create.image.copy-start');
            volumes.transition(row.id, ['creating'], 'downloading');
          });
          task.checkpoint('volume.create.image.filled');
          const seconds = (Date.now() - started) / 1000;
          this.log(
            result.method === 'clone'
              ? `volume ${row.id}: copy-on-write clone of image ${source.id} in ${seconds.toFixed(2)} s`
              : `volume ${row.id}: copied ${result.bytes} bytes of image ${source.id}${result.method === 'file-copy' ? ' from its file in this process\'s image store' : ''} (${result.writtenBytes} written, the rest zero runs) in ${seconds.toFixed(1)} s`,
          );
          task.complete(() => volumes.transition(row.id, ['creating', 'downloading'], 'available', { launched_at: nowIso() }));
          return;
        }
        if (source?.kind === 'existing') {
          if (!hasManageExisting(driver)) throw new DriverError('Invalid', `backend [${task.queue}] cannot manage existing storage`);
          task.checkpoint('volume.manage.before');
          const { sizeGiB } = await driver.manageExisting(ref, source.id);
          task.checkpoint('volume.manage.adopted');
          task.complete(() => volumes.transition(row.id, ['creating'], 'available', { size_gib: sizeGiB, launched_at: nowIso() }));
          return;
        }
        if (source?.kind === 'snapshot') {
          const snap = snapshot(source.id);
          if (!snap) throw new DriverError('NotFound', `source snapshot ${source.id} was deleted before the volume was made`);
          if (!hasSnapshots(driver)) throw new DriverError('Invalid', `backend [${task.queue}] cannot create volumes from snapshots`);
          task.checkpoint('volume.create.snapshot.before');
          await driver.createVolumeFromSnapshot(ref, this.snapshotRef(snap, snap.size_gib));
        } else if (source?.kind === 'volume') {
          const src = volume(source.id);
          if (!src) throw new DriverError('NotFound', `source volume ${source.id} was deleted before the clone was made`);
          if (!hasClones(driver)) throw new DriverError('Invalid', `backend [${task.queue}] cannot clone volumes`);
          task.checkpoint('volume.create.clone.before');
          await driver.cloneVolume(ref, { id: src.id, sizeGiB: src.size_gib });
        } else {
          task.checkpoint('volume.create.before');
          await driver.createVolume(ref);
        }
        task.checkpoint('volume.create.made');
        task.complete(() => {
          if (source?.kind !== 'backup') {
            volumes.transition(row.id, ['creating'], 'available', { launched_at: nowIso() });
            this.followGroupOf(row.id);
            return;
          }
          // Chain: the volume is held in restoring-backup and its restore is queued in the same
          // transaction, so the restore exists exactly when the volume does (no polling).
          if (volumes.transition(row.id, ['creating'], 'restoring-backup', { launched_at: nowIso() })) {
            this.queue.enqueue('backup.restore', source.id, backupQueue, { volumeId: row.id, targetIsZeroed: true } satisfies RestorePayload, {
              locks: { write: [row.id] },
            });
          }
        }, { deferCommit: true });
      },
      (task, reason) => {
        volumes.transition(task.resourceId, ['creating', 'downloading'], 'error', { status_reason: reason });
        this.followGroupOf(task.resourceId);
        const { source } = task.payload as CreatePayload;
        // The backup held for this volume's restore is released: the restore will never run.
        if (source?.kind === 'backup') {
          this.states.backups.transition(source.id, ['restoring'], 'available', { restore_volume_id: null, fail_reason: `restore into volume ${task.resourceId} failed: ${reason}` });
        }
        this.userMessage(task.resourceId, 'VOLUME', 'VOLUME_VOLUME_001_003', `create volume: ${reason}`);
      },
    );

    this.queue.register(
      'volume.upload_image',
      async (task: Task) => {
        const row = volume(task.resourceId);
        if (!row || row.status !== 'uploading') return;
        if (!this.images) throw new DriverError('Unreachable', 'this process has no image service client');
        const payload = task.payload as UploadPayload;
        const started = Date.now();
        task.checkpoint('volume.upload.before');
        const bytes = await uploadVolumeToImage(this.images, this.ready(task.queue), { id: row.id, sizeGiB: row.size_gib }, payload);
        task.checkpoint('volume.upload.uploaded');
        this.log(`volume ${row.id}: uploaded ${bytes} bytes into image ${payload.imageId} (${payload.diskFormat}) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
        task.complete(() => this.releaseUpload(row.id));
      },
      (task, reason) => {
        this.releaseUpload(task.resourceId);
        const payload = task.payload as UploadPayload;
        this.userMessage(task.resourceId, 'VOLUME', 'VOLUME_VOLUME_002_004', `upload volume to image ${payload.imageId}: ${reason}`);
        // The image has no data and never will: remove it rather than leave a queued image behind.
        if (this.images) void this.images.client.remove(this.images.serviceToken(), payload.imageId);
      },
    );

    this.queue.register(
      'volume.delete',
      async (task: Task) => {
        const row = volume(task.resourceId);
        if (!row) return;
        const driver = this.ready(task.queue);
        const { cascade } = task.payload as { cascade?: boolean };
        if (cascade && hasSnapshots(driver)) {
          for (const snap of this.db.all<SnapshotRow>('SELECT * FROM snapshots WHERE volume_id = ?', row.id)) {
            task.checkpoint('volume.delete.snapshot.before');
            await driver.deleteSnapshot(this.snapshotRef(snap, snap.size_gib));
            task.checkpoint('volume.delete.snapshot.deleted');
            this.db.run('DELETE FROM snapshots WHERE id = ?', snap.id);
          }
        }
        task.checkpoint('volume.delete.before');
        const { unmanageAs } = task.payload as { unmanageAs?: string };
        if (unmanageAs !== undefined) {
          // os-unmanage: the bytes stay in the backend, under the name the volume was adopted from.
          if (!hasManageExisting(driver)) throw new DriverError('Invalid', `backend [${task.queue}] cannot unmanage volumes`);
          await driver.unmanage({ id: row.id, sizeGiB: row.size_gib }, unmanageAs);
        } else {
          await driver.deleteVolume({ id: row.id, sizeGiB: row.size_gib });
        }
        task.checkpoint('volume.delete.deleted');
        task.complete(() => {
          this.db.run('DELETE FROM volumes WHERE id = ?', row.id);
          // A deleting volume cannot leave its group: the row read at the start names it.
          followMembers(this.db, 'group', row.group_id);
          // A backup held for a restore into this volume (force-deleted before the restore ran) is usable again.
          for (const held of this.db.all<{ id: string }>("SELECT id FROM backups WHERE restore_volume_id = ? AND status = 'restoring'", row.id)) {
            this.states.backups.transition(held.id, ['restoring'], 'available', { restore_volume_id: null, fail_reason: `restore target volume ${row.id} was deleted` });
          }
        }, { deferCommit: true });
      },
      (task, reason) => {
        volumes.transition(task.resourceId, ['deleting'], 'error_deleting', { status_reason: reason });
        this.followGroupOf(task.resourceId);
        this.userMessage(task.resourceId, 'VOLUME', 'VOLUME_VOLUME_001_004', `delete volume: ${reason}`);
        // A cascade delete put the volume's snapshots in 'deleting'; left there, nothing could ever delete them again.
        for (const snap of this.db.all<{ id: string }>("SELECT id FROM snapshots WHERE volume_id = ? AND status = 'deleting'", task.resourceId)) {
          snapshots.transition(snap.id, ['deleting'], 'error_deleting', { status_reason: `delete of volume ${task.resourceId}: ${reason}` });
          this.userMessage(snap.id, 'SNAPSHOT', 'VOLUME_SNAPSHOT_001_002', `delete snapshot (cascade delete of volume ${task.resourceId}): ${reason}`);
        }
      },
    );

    this.queue.register(
      'volume.extend',
      async (task: Task) => {
        const row = volume(task.resourceId);
        if (!row || row.status !== 'extending') return;
        const { newSizeGiB } = task.payload as { newSizeGiB: number };
        task.checkpoint('volume.extend.before');
        await this.ready(task.queue).extendVolume({ id: row.id, sizeGiB: row.size_gib }, newSizeGiB);
        task.checkpoint('volume.extend.extended');
        const back = row.previous_status === 'in-use' ? 'in-use' : 'available';
        task.complete(() => volumes.transition(row.id, ['extending'], back, { size_gib: newSizeGiB, previous_status: null }));
      },
      (task, reason) => {
        volumes.transition(task.resourceId, ['extending'], 'error_extending', { status_reason: reason });
        this.userMessage(task.resourceId, 'VOLUME', 'VOLUME_VOLUME_001_005', `extend volume: ${reason}`);
      },
    );

    this.queue.register(
      'volume.revert',
      async (task: Task) => {
        const row = volume(task.resourceId);
        if (!row || row.status !== 'reverting') return;
        const { snapshotId } = task.payload as { snapshotId: string };
        const snap = snapshot(snapshotId);
        if (!snap) throw new DriverError('NotFound', `snapshot ${snapshotId} was deleted before the revert`);
        const driver = this.ready(task.queue);
        if (!hasSnapshots(driver)) throw new DriverError('Invalid', `backend [${task.queue}] has no snapshots`);
        task.checkpoint('volume.revert.before');
        await driver.revertToSnapshot({ id: row.id, sizeGiB: row.size_gib }, { id: snap.id, volumeId: snap.volume_id, sizeGiB: snap.size_gib });
        task.checkpoint('volume.revert.reverted');
        task.complete(() => {
          volumes.transition(row.id, ['reverting'], 'available', { status_reason: null });
          snapshots.transition(snap.id, ['restoring'], 'available');
        });
      },
      (task, reason) => {
        volumes.transition(task.resourceId, ['reverting'], 'error', { status_reason: reason });
        const { snapshotId } = task.payload as { snapshotId?: string };
        if (snapshotId) snapshots.transition(snapshotId, ['restoring'], 'available');
        this.userMessage(task.resourceId, 'VOLUME', 'VOLUME_VOLUME_001_006', `revert volume to snapshot: ${reason}`);
      },
    );

    this.queue.register(
      'snapshot.create',
      async (task: Task) => {
        const snap = snapshot(task.resourceId);
        if (!snap || snap.status !== 'creating') return;
        const driver = this.ready(task.queue);
        if (!hasSnapshots(driver)) throw new DriverError('Invalid', `backend [${task.queue}] has no snapshots`);
        // The snapshot holds the volume's bytes as they are now (the read lock keeps an extend out): record its size now.
        const parent = volume(snap.volume_id);
        if (!parent) throw new DriverError('NotFound', `volume ${snap.volume_id} was deleted before its snapshot was taken`);
        const { source } = task.payload as SnapshotCreatePayload;
        if (source) {
          // os-snapshot-manage: the backend's own snapshot of the volume is renamed, not copied.
          if (!hasManageExistingSnapshots(driver)) throw new DriverError('Invalid', `backend [${task.queue}] cannot manage existing snapshots`);
          task.checkpoint('snapshot.manage.before');
          const { sizeGiB } = await driver.manageExistingSnapshot({ id: snap.id, volumeId: snap.volume_id, sizeGiB: parent.size_gib }, source.name);
          task.checkpoint('snapshot.manage.adopted');
          task.complete(() => snapshots.transition(snap.id, ['creating'], 'available', { progress: '100%', size_gib: sizeGiB }));
          return;
        }
        task.checkpoint('snapshot.create.before');
        await driver.createSnapshot(this.snapshotRef(snap, parent.size_gib));
        task.checkpoint('snapshot.create.taken');
        task.complete(() => {
          snapshots.transition(snap.id, ['creating'], 'available', { progress: '100%', size_gib: parent.size_gib });
          followMembers(this.db, 'group snapshot', snap.group_snapshot_id);
        });
      },
      (task, reason) => {
        snapshots.transition(task.resourceId, ['creating'], 'error', { status_reason: reason });
        followMembers(this.db, 'group snapshot', snapshot(task.resourceId)?.group_snapshot_id);
        this.userMessage(task.resourceId, 'SNAPSHOT', 'VOLUME_SNAPSHOT_001_001', `create snapshot: ${reason}`);
      },
    );

    this.queue.register(
      'snapshot.delete',
      async (task: Task) => {
        const snap = snapshot(task.resourceId);
        if (!snap) return;
        const driver = this.ready(task.queue);
        task.checkpoint('snapshot.delete.before');
        const { unmanageAs } = task.payload as { unmanageAs?: string };
        if (unmanageAs !== undefined) {
          // os-unmanage: the snapshot stays in the backend, renamed.
          if (!hasManageExistingSnapshots(driver)) throw new DriverError('Invalid', `backend [${task.queue}] cannot unmanage snapshots`);
          await driver.unmanageSnapshot({ id: snap.id, volumeId: snap.volume_id, sizeGiB: snap.size_gib }, unmanageAs);
        } else if (hasSnapshots(driver)) await driver.deleteSnapshot(this.snapshotRef(snap, snap.size_gib));
        task.checkpoint('snapshot.delete.deleted');
        task.complete(() => {
          this.db.run('DELETE FROM snapshots WHERE id = ?', snap.id);
          followMembers(this.db, 'group snapshot', snap.group_snapshot_id);
        });
      },
      (task, reason) => {
        // An unmanage that failed leaves the snapshot managed, in error (Cinder's unmanaging → error).
        snapshots.transition(task.resourceId, ['unmanaging'], 'error', { status_reason: reason });
        snapshots.transition(task.resourceId, ['deleting'], 'error_deleting', { status_reason: reason });
        followMembers(this.db, 'group snapshot', snapshot(task.resourceId)?.group_snapshot_id);
        this.userMessage(task.resourceId, 'SNAPSHOT', 'VOLUME_SNAPSHOT_001_002', `delete snapshot: ${reason}`);
      },
    );
  }

  /**
   * The driver's view of a snapshot; a member of a group snapshot on a backend that takes group
   * snapshots at one moment (GroupSnapshots) carries its group snapshot and that one's volumes.
   */
  private snapshotRef(snap: SnapshotRow, sizeGiB: number): SnapshotRef {
    const ref: SnapshotRef = { id: snap.id, volumeId: snap.volume_id, sizeGiB };
    const groupSnapshotId = snap.group_snapshot_id ?? null;
    const volume = this.db.get<{ backend: string | null }>('SELECT backend FROM volumes WHERE id = ?', snap.volume_id);
    if (!groupSnapshotId || !volume?.backend || !this.backends.has(volume.backend) || !hasGroupSnapshots(this.backend(volume.backend).driver)) return ref;
    const groupSnapshot = this.db.get<{ group_id: string }>('SELECT group_id FROM group_snapshots WHERE id = ?', groupSnapshotId);
    if (!groupSnapshot) return ref;
    const volumeIds = this.db.all<{ volume_id: string }>('SELECT volume_id FROM snapshots WHERE group_snapshot_id = ? ORDER BY volume_id', groupSnapshotId).map((r) => r.volume_id);
    return { ...ref, groupSnapshot: { groupId: groupSnapshot.group_id, groupSnapshotId, volumeIds } };
  }

  /** The volume's group, if it follows its members (made from a source, or being deleted), moves after it. */
  private followGroupOf(volumeId: string): void {
    followMembers(this.db, 'group', this.db.get<{ group_id: string | null }>('SELECT group_id FROM volumes WHERE id = ?', volumeId)?.group_id);
  }

  /** An upload is over (done or failed): the volume goes back to the status it had. */
  private releaseUpload(volumeId: string): void {
    const row = this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', volumeId);
    if (!row) return;
    this.states.volumes.transition(volumeId, ['uploading'], row.previous_status === 'in-use' ? 'in-use' : 'available', { previous_status: null });
  }

  /**
   * Records a user-visible message (GET /messages) about a failed operation on a resource. The
   * text is the project's to read: the data, volume and conversion directories are cut from the
   * paths a driver's error names (issue 12); the log keeps the full reason.
   */
  userMessage(resourceId: string, resourceType: 'VOLUME' | 'SNAPSHOT', eventId: string, reason: string, requestId: string | null = null): void {
    const text = withoutDirectories(reason, [
      this.config.dataDir, this.config.DEFAULT.image_conversion_dir, ...[...this.backends.values()].map((b) => b.config.local_volume_dir),
    ], '<data directory>');
    const table = resourceType === 'VOLUME' ? 'volumes' : 'snapshots';
    const owner = this.db.get<{ project_id: string }>(`SELECT project_id FROM ${table} WHERE id = ?`, resourceId);
    if (!owner) return;
    const now = new Date();
    this.db.run(
      "INSERT INTO messages (id, project_id, request_id, resource_type, resource_uuid, event_id, message_level, user_message, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, 'ERROR', ?, ?, ?)",
      randomUUID(), owner.project_id, requestId, resourceType, resourceId, eventId, text, now.toISOString(),
      new Date(now.getTime() + 30 * 86400_000).toISOString(),
    );
  }

  /**
   * Volumes and snapshots (of `backendSections`, or all when null) stuck in a transitional state
   * with no pending task: a finished-or-never operation goes to its error state with a reason, a
   * cut upload or move puts the volume back. Run at start and by POST /workers/cleanup (3.24).
   * Returns how many resources it moved.
   */
  cleanStuckResources(backendSections: readonly string[] | null): number {
    const params = backendSections ?? [];
    const onBackends = (column: string) => (backendSections === null ? '' : ` AND ${column} IN (${backendSections.map(() => '?').join(',') || 'NULL'})`);
    let cleaned = 0;
    const stuckVolumes = this.db.all<VolumeRow>(
      `SELECT v.* FROM volumes v WHERE v.status IN ('creating','downloading','uploading','deleting','extending','reverting') AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.resource_id = v.id AND t.state IN ('queued','running'))${onBackends('v.backend')}`,
      ...params,
    );
    for (const row of stuckVolumes) {
      if (row.status === 'uploading') {
        // The volume's bytes are intact: only the upload is lost.
        this.releaseUpload(row.id);
        this.userMessage(row.id, 'VOLUME', 'VOLUME_VOLUME_002_004', 'upload volume to image: interrupted by a restart and not resumed; upload again');
        this.log(`reconcile: volume ${row.id}: upload to image interrupted; volume back to ${row.previous_status ?? 'available'}`);
        cleaned++;
        continue;
      }
      const errorStatus = row.status === 'deleting' ? 'error_deleting' : row.status === 'extending' ? 'error_extending' : 'error';
      const reason = `the operation '${row.status}' was interrupted and has no pending task; the volume was set to ${errorStatus}`;
      if (!this.states.volumes.transition(row.id, [row.status as VolumeStatus], errorStatus, { status_reason: reason })) continue;
      followMembers(this.db, 'group', row.group_id);
      // status_reason is not in the API: the user message is where the reason shows.
      this.userMessage(row.id, 'VOLUME', 'VOLUME_VOLUME_001_007', `${row.status} volume: ${reason}`);
      this.log(`reconcile: volume ${row.id}: ${reason}`);
      cleaned++;
    }
    // A move whose task is gone (cancelled by an operator): the row still names the source, whose copy was never written.
    const stuckMoves = this.db.all<VolumeRow>(
      `SELECT v.* FROM volumes v WHERE v.status IN ('retyping','maintenance') AND v.migration_status IN ('starting','migrating') AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.resource_id = v.id AND t.state IN ('queued','running'))${onBackends('v.backend')}`,
      ...params,
    );
    for (const row of stuckMoves) {
      const reason = 'the move to another backend was interrupted and has no pending task; the volume stays on its backend';
      if (!this.states.volumes.transition(row.id, [row.status as VolumeStatus], 'available', { migration_status: 'error', status_reason: reason })) continue;
      this.userMessage(row.id, 'VOLUME', 'VOLUME_VOLUME_001_008', `migrate volume: ${reason}`);
      this.log(`reconcile: volume ${row.id}: ${reason}`);
      cleaned++;
    }
    const stuckSnapshots = this.db.all<SnapshotRow>(
      `SELECT s.* FROM snapshots s WHERE s.status IN ('creating','deleting','restoring') AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.state IN ('queued','running') AND (t.resource_id = s.id OR t.resource_id = s.volume_id))${onBackends('(SELECT backend FROM volumes WHERE id = s.volume_id)')}`,
      ...params,
    );
    for (const row of stuckSnapshots) {
      // A snapshot being restored from is intact: only the revert of its volume was cut short.
      const next = row.status === 'deleting' ? 'error_deleting' : row.status === 'restoring' ? 'available' : 'error';
      const reason = `the operation '${row.status}' was interrupted and has no pending task; the snapshot was set to ${next}`;
      if (!this.states.snapshots.transition(row.id, [row.status as SnapshotStatus], next, { status_reason: reason })) continue;
      followMembers(this.db, 'group snapshot', row.group_snapshot_id);
      if (next !== 'available') this.userMessage(row.id, 'SNAPSHOT', 'VOLUME_SNAPSHOT_001_003', `${row.status} snapshot: ${reason}`);
      this.log(`reconcile: snapshot ${row.id}: ${reason}`);
      cleaned++;
    }
    return cleaned;
  }

  /**
   * Compares the database with the storage after a restart: volumes and
   * snapshots stuck in a transitional state without a task go to error with a
   * reason, and files no database row refers to are removed.
   */
  private async reconcile(): Promise<void> {
    this.cleanStuckResources(null);
    for (const state of this.backends.values()) {
      if (!state.up) continue;
      let listed: { volumeIds: string[]; snapshotIds: string[] };
      try {
        listed = await state.driver.listResources();
      } catch (error) {
        this.log(`reconcile: cannot list backend [${state.config.section}]: ${(error as Error).message}`);
        continue;
      }
      // A Ceph pool may be shared (another Pumice, a Cinder being migrated): its unknown images are
      // reported, never removed. So is a local_volume_dir set by the operator (another instance may
      // use it); only the default one inside this data directory is this process's own.
      const shared = state.driver.driverName === 'rbd' || state.config.local_volume_dir !== join(this.config.dataDir, 'volumes', state.config.section);
      for (const id of listed.volumeIds) {
        if (this.db.get('SELECT 1 FROM volumes WHERE id = ?', id)) continue;
        if (shared) {
          this.log(`reconcile: volume-${id} in backend [${state.config.section}] has no database row here; left alone (a shared pool)`);
          continue;
        }
        this.log(`reconcile: removing orphaned volume-${id} from backend [${state.config.section}] (no database row)`);
        await state.driver.deleteVolume({ id, sizeGiB: 0 });
      }
      if (hasSnapshots(state.driver) && !shared) {
        for (const id of listed.snapshotIds) {
          if (this.db.get('SELECT 1 FROM snapshots WHERE id = ?', id)) continue;
          this.log(`reconcile: removing orphaned snapshot-${id} from backend [${state.config.section}] (no database row)`);
          await state.driver.deleteSnapshot({ id, volumeId: '', sizeGiB: 0 });
        }
      }
    }
  }
}

/** A backend whose volumes live on one host's disk (sparse files served over NBD): not shared storage. */
export function isLocalDriver(driver: string): boolean {
  return driver === 'local' || /LocalDriver$|LVMVolumeDriver$/.test(driver);
}

function createDriver(backend: BackendConfig, exporter: BlockExporter, log: (message: string) => void): VolumeBackend {
  const driver = backend.volume_driver;
  if (isLocalDriver(driver)) {
    return new LocalBackend({ section: backend.section, directory: backend.local_volume_dir!, exporter, reportDiscard: backend.report_discard_supported, log });
  }
  if (driver === 'rbd' || /RBDDriver$/.test(driver)) {
    return new RbdBackend({ config: backend, log });
  }
  throw new Error(`[${backend.section}] volume_driver = ${driver} is unknown; use 'local' (sparse files) or 'rbd' (Ceph)`);
}
