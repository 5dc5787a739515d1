/**
 * The Ceph RBD backend. Volumes are RBD images `volume-<id>` in `rbd_pool`,
 * snapshots are RBD snapshots `snapshot-<id>` on them, and every copy is a
 * copy-on-write clone: volume from snapshot clones the protected snapshot,
 * volume from volume clones a temporary `<child>.clone_snap` snapshot.
 * Chains longer than `rbd_max_clone_depth` are flattened in the background,
 * with bounded concurrency, while the volume is already usable.
 *
 * A parent that still has clones cannot be removed. Deleting it hides it
 * instead (`volume-<id>.deleted`, `snapshot-<id>.deleted`); the collector
 * removes hidden images and snapshots as soon as their last child is gone or
 * flattened, so nothing is left behind and no user has to care.
 *
 * A Block Storage group snapshot is one librbd group snapshot
 * (`rbd_group_snap_create2`) of the RBD group `group-<group id>`, named
 * `snapshot-<group snapshot id>`: crash-consistent across the members, so
 * they may be attached meanwhile. The RBD group's members follow the Block
 * Storage group's when volumes are added or removed (`syncGroupMembers`, a
 * task of the volume role), and are synced again with the group snapshot's
 * volumes right before it is taken (every step idempotent, re-run after a
 * crash); a volume leaves its RBD group when it is deleted, and the
 * collector removes RBD groups that hold nothing.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { BackendConfig } from '../../config/config.ts';
import { CephConfigProblem, monitorAddresses, resolveCephClient, type CephClientSettings } from '../../ceph/conf.ts';
import { RadosCluster, RBD_SNAP_CREATE_SKIP_QUIESCE, RbdError, type IoCtx, type RbdImage } from '../../ceph/rbd.ts';
import { KeyedQueue } from '../../util/keyed-queue.ts';
import { crashPoint } from '../../tasks/crash.ts';
import { markTransient } from '../../tasks/errors.ts';
import { qosLimitKeys, type QosLimitKey, type QosLimits } from '../qos.ts';
import {
  DriverError,
  gib,
  type CapacityReport,
  type Clones,
  type ConnectionInfo,
  type Connector,
  type DataAccess,
  type GroupSnapshotRef,
  type GroupSnapshots,
  type ImageCloning,
  type ManageableObject,
  type ManageExisting,
  type ManageExistingSnapshots,
  type ManageableSnapshot,
  type RbdLocation,
  type SnapshotRef,
  type Snapshots,
  type VolumeBackend,
  type VolumeData,
  type VolumeRef,
} from './driver.ts';

const execFileAsync = promisify(execFile);
const featureLayering = 1;
const featureExclusiveLock = 4;
const featureObjectMap = 8;
const featureFastDiff = 16;
const featureDeepFlatten = 32;
/** Cinder's default feature set for new RBD volumes. */
const volumeFeatures = featureLayering | featureExclusiveLock | featureObjectMap | featureFastDiff | featureDeepFlatten;
const hiddenSuffix = '.deleted';
const cloneSnapSuffix = '.clone_snap';
/** librbd names a member image's snapshot of a group snapshot `.group.<pool>_<group id>_<snap id>`. */
const groupSnapPrefix = '.group.';
/** Bytes copied per read/write when a volume is made from a group snapshot's member. */
const groupCopyChunkBytes = 4 * 1024 * 1024;
/** Tries of one group snapshot whose RBD group vanished under it (removed empty by another process's collector). */
const groupSnapshotAttemptsMax = 3;
const flattenConcurrencyMax = 2;
const removeAttemptsMax = 5;
const purgeConcurrencyMax = 2;
/**
 * A delete's own purge starts within milliseconds of its trash move, in
 * whichever process (this one or another member of the backend's cluster)
 * deleted it. An entry older than this had its purge cut short and any member
 * may take it; a younger one is left alone, because two clients purging one
 * image make librbd abort the process (TrimRequest asserts it owns the lock).
 */
const abandonedTrashSeconds = 15;
/** Used when rados_connect_timeout is -1 (wait forever), so a dead cluster still shows as down. */
const connectTimeoutDefaultSeconds = 15;

export interface RbdBackendOptions {
  config: BackendConfig;
  log: (message: string) => void;
}

export class RbdBackend implements VolumeBackend, Snapshots, GroupSnapshots, Clones, DataAccess, ImageCloning, ManageExisting, ManageExistingSnapshots {
  readonly driverName = 'rbd';
  readonly consistentGroupSnapshots = true;
  readonly driverVersion = '1.0.0';
  readonly section: string;
  private cluster: RadosCluster | null = null;
  private ioctx: IoCtx | null = null;
  private client: CephClientSettings | null = null;
  private fsid = '';
  private readonly flattenQueue: string[] = [];
  private flattensRunning = 0;
  private readonly config: BackendConfig;

  constructor(private readonly options: RbdBackendOptions) {
    this.config = options.config;
    this.section = options.config.section;
  }

  private get user(): string {
    return this.config.rbd_user ?? 'admin';
  }

  private get pool(): string {
    return this.config.rbd_pool;
  }

  private get timeoutSeconds(): number {
    const t = this.config.rados_connect_timeout;
    return t > 0 ? t : connectTimeoutDefaultSeconds;
  }

  /** Connects to the cluster and opens the pool; every failure becomes a DriverError that names the fix. */
  async start(): Promise<void> {
    if (this.ioctx) return;
    this.client = this.checkClientFiles();
    let cluster: RadosCluster;
    try {
      cluster = await RadosCluster.connect({
        confPath: this.client.confPath,
        user: this.user,
        keyringPath: this.client.keyringPath,
        connectTimeoutSeconds: this.timeoutSeconds,
      });
    } catch (error) {
      throw this.explain(error, 'connect');
    }
    try {
      this.fsid = await cluster.fsid();
      this.ioctx = await cluster.openIoctx(this.pool);
      // Listing proves the capabilities reach the pool (a missing 'rwx pool=...' shows here as EPERM).
      await this.ioctx.listImages();
      this.cluster = cluster;
    } catch (error) {
      this.ioctx = null;
      await cluster.shutdown().catch(() => undefined);
      throw this.explain(error, 'open pool');
    }
  }

  async stop(): Promise<void> {
    const { cluster, ioctx } = this;
    this.cluster = null;
    this.ioctx = null;
    for (const pool of this.foreignPools.values()) await pool.then((p) => p.close()).catch(() => undefined);
    this.foreignPools.clear();
    if (ioctx) await ioctx.close().catch(() => undefined);
    if (cluster) await cluster.shutdown().catch(() => undefined);
  }

  /**
   * Checks ceph.conf and the keyring (cheap stats). Run at start and on every
   * heartbeat: a connected client would go on working without its keyring,
   * but the next restart or reconnect would not, so the operator learns now.
   */
  private checkClientFiles(): CephClientSettings {
    try {
      return resolveCephClient({
        confPath: this.config.rbd_ceph_conf || `/etc/ceph/${this.config.rbd_cluster_name}.conf`,
        user: this.user,
        clusterName: this.config.rbd_cluster_name,
        keyringPath: this.config.rbd_keyring_conf,
      });
    } catch (error) {
      if (error instanceof CephConfigProblem) throw new DriverError('Unreachable', `Error connecting to ceph cluster: ${error.message}`);
      throw error;
    }
  }

  /** Turns librados/librbd errors into messages that say what is wrong and how to fix it (scenario §8). */
  private explain(error: unknown, action: string): DriverError {
    const target = `pool '${this.pool}' as client.${this.user}`;
    if (error instanceof RbdError) {
      switch (error.code) {
        case 'ENOENT':
          if (action === 'open pool') {
            return new DriverError('NotFound', `Ceph pool '${this.pool}' does not exist: create it (ceph osd pool create ${this.pool}; rbd pool init ${this.pool}) or run 'pumice ceph setup', or fix rbd_pool.`);
          }
          return new DriverError('NotFound', `${action}: not found in ${target} (${error.message})`);
        case 'EPERM':
        case 'EACCES':
          return new DriverError(
            'Permission',
            `Permission denied for ${target} during ${action} (${error.operation}): give the user the scenario's caps, e.g. ceph auth caps client.${this.user} mon 'allow r' osd 'allow class-read object_prefix rbd_children, allow rwx pool=${this.pool}, allow rwx pool=vms, allow rx pool=images'.`,
          );
        case 'ETIMEDOUT':
        case 'EINTR':
          // Worth another try: the task runner retries it with backoff (src/tasks/errors.ts).
          return markTransient(new DriverError(
            'Unreachable',
            `Error connecting to ceph cluster: no answer from the monitors (${this.client?.monHost ?? 'mon host'}) within ${this.timeoutSeconds} s (rados_connect_timeout). Check that the monitors run and that this host reaches them on ports 3300/6789.`,
          ));
        case 'EBUSY':
          return new DriverError('Invalid', `${action}: the image is still open by another client (a VM, qemu-img or rbd map?): detach or stop it, then try again (${error.message})`);
        case 'ENOSPC':
        case 'EDQUOT':
          return new DriverError('NoSpace', `Ceph ${target} is full or over quota during ${action}: add OSDs or raise the pool quota.`);
        default:
          if (action === 'connect') {
            return new DriverError('Unreachable', `Error connecting to ceph cluster as client.${this.user} with keyring ${this.client?.keyringPath}: ${error.message}. Check the keyring matches 'ceph auth get client.${this.user}'.`);
          }
          return new DriverError('Invalid', `${action} in ${target} failed: ${error.message}`);
      }
    }
    return new DriverError('Invalid', `${action} in ${target} failed: ${(error as Error).message}`);
  }

  private io(): IoCtx {
    if (!this.ioctx) throw new DriverError('Unreachable', `backend [${this.section}] is not connected to Ceph`);
    return this.ioctx;
  }

  private async withImage<T>(name: string, fn: (image: RbdImage) => Promise<T>, options: { snapshot?: string; readOnly?: boolean } = {}): Promise<T> {
    const image = await this.io().openImage(name, options);
    try {
      return await fn(image);
    } finally {
      await image.close();
    }
  }

  /** Runs a librbd call and maps its errors; ENOENT is returned as null when `missingOk`. */
  private async call<T>(action: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      throw this.explain(error, action);
    }
  }

  private orderBits(): number {
    return Math.round(Math.log2(this.config.rbd_store_chunk_size * 1024 * 1024));
  }

  async createVolume(volume: VolumeRef): Promise<void> {
    const name = volumeImage(volume.id);
    await this.call(`create ${name}`, async () => {
      try {
        await this.io().createImage(name, volume.sizeGiB * gib, { orderBits: this.orderBits(), features: volumeFeatures });
      } catch (error) {
        // Re-run after a crash: the image exists already.
        if (!(error instanceof RbdError && error.code === 'EEXIST')) throw error;
      }
    });
  }

  async deleteVolume(volume: VolumeRef): Promise<void> {
    await this.call(`delete ${volumeImage(volume.id)}`, () => this.removeOrHide(volumeImage(volume.id)));
  }

  /**
   * Removes an image, or hides it while clones depend on one of its snapshots.
   * Succeeds if already gone. `collectLockHeld` when called from a clean-up.
   */
  private removeOrHide(name: string, collectLockHeld = false): Promise<void> {
    return this.withImageQueue(name, () => this.removeOrHideQueued(name, collectLockHeld));
  }

  private async removeOrHideQueued(name: string, collectLockHeld: boolean): Promise<void> {
    let parent: ParentRef | null = null;
    let keep = false;
    let imageId = '';
    let image: RbdImage;
    try {
      image = await this.io().openImage(name);
    } catch (error) {
      // Gone already. Only the image's own absence counts: a snapshot found gone inside (removed by a
      // clean-up a moment before) once ended the delete here and left the image behind.
      if (error instanceof RbdError && error.code === 'ENOENT') return;
      throw error;
    }
    try {
      parent = await image.parentInfo();
      imageId = (await image.stat()).id;
      // A member of an RBD group can be neither trashed nor removed (EMLINK).
      const group = await image.getGroup();
      if (group) {
        await this.io().groupImageRemove(group.name, name).catch(ignoreMissing);
        await this.removeGroupIfEmpty(group.name);
      }
      for (const snap of await image.snapList()) {
        // A group snapshot's member goes with its group snapshot (deleteSnapshot), never alone.
        if (snap.name.startsWith(groupSnapPrefix)) continue;
        const removed = await this.removeSnapshotIfChildless(image, snap.name);
        if (!removed) {
          keep = true;
          if (!snap.name.endsWith(hiddenSuffix) && !snap.name.endsWith(cloneSnapSuffix)) await image.snapRename(snap.name, snap.name + hiddenSuffix);
        }
      }
    } finally {
      await image.close();
    }
    crashPoint('rbd.delete.snapshots-removed');
    if (keep) {
      if (!name.endsWith(hiddenSuffix)) await this.io().renameImage(name, name + hiddenSuffix);
      this.options.log(`[${this.section}] ${name} still has clones: kept hidden as ${name}${name.endsWith(hiddenSuffix) ? '' : hiddenSuffix} until they are gone`);
      return;
    }
    if (!collectLockHeld) {
      // A user's delete answers once the image is in the trash (~20 ms against ~70 ms for
      // rbd_remove); the purge and the parent's clean-up follow in the background.
      await this.trashMoveRetrying(name);
      crashPoint('rbd.delete.trashed');
      this.schedulePurge({ id: imageId, name, parent });
      return;
    }
    await this.removeImageRetrying(name);
    if (parent) await this.collectParentLocked(parent);
  }

  private readonly purgeQueue: { id: string; name: string; parent: ParentRef | null }[] = [];
  private purgesRunning = 0;

  private schedulePurge(entry: { id: string; name: string; parent: ParentRef | null }): void {
    this.purgeQueue.push(entry);
    while (this.purgesRunning < purgeConcurrencyMax && this.purgeQueue.length > 0) {
      const next = this.purgeQueue.shift()!;
      this.purgesRunning++;
      this.purge(next)
        .catch((error: unknown) => this.options.log(`[${this.section}] purge of ${next.name} from the trash deferred to the collector: ${(error as Error).message}`))
        .finally(() => {
          this.purgesRunning--;
          if (this.purgeQueue.length > 0) this.schedulePurge(this.purgeQueue.shift()!);
        });
    }
  }

  /** Removes a trashed image for good, then its parent if that was only kept for it. */
  private async purge(entry: { id: string; name: string; parent: ParentRef | null }): Promise<void> {
    await this.withImageQueue(entry.name, () => retryWhileBusy(() => this.io().trashRemove(entry.id, false)));
    if (entry.parent) await this.collectParent(entry.parent);
  }

  private trashMoveRetrying(name: string): Promise<void> {
    return retryWhileBusy(() => this.io().trashMove(name, 0));
  }


  /**
   * rbd_remove refuses (EBUSY) while another client has the image open, e.g.
   * a consumer that is just closing it: a few tries before giving up.
   */
  private removeImageRetrying(name: string): Promise<void> {
    return retryWhileBusy(() => this.io().removeImage(name));
  }

  /** Unprotects and removes a snapshot unless clones depend on it; returns whether it is gone. */
  private async removeSnapshotIfChildless(image: RbdImage, snapName: string): Promise<boolean> {
    try {
      if ((await image.listChildren(snapName)).length > 0) return false;
      if (await image.snapIsProtected(snapName)) await image.snapUnprotect(snapName);
      await image.snapRemove(snapName);
    } catch (error) {
      // Removed by another host's clean-up in the meantime (this process's own are queued per image).
      if (error instanceof RbdError && error.code === 'ENOENT') return true;
      throw error;
    }
    return true;
  }

  /** Parent clean-ups (tasks and the periodic collector) run one at a time, so two never race on one image. */
  private collecting: Promise<void> = Promise.resolve();

  private withCollectLock(fn: () => Promise<void>): Promise<void> {
    const run = this.collecting.then(fn, fn);
    this.collecting = run.catch(() => undefined);
    return run;
  }

  /** Each image's queue of changes, by image name without the hidden suffix (a rename keeps its place). */
  private readonly imageQueues = new KeyedQueue();

  /**
   * Runs `fn` when no other change of this process to image `name` runs: its removal, a snapshot's
   * removal, its flatten, its purge from the trash. Two handles of one process changing one image
   * race on its exclusive lock (a trim asserts it holds the lock: the suspect in CI's server death
   * at 7078540, a delete right after a background flatten); and a snapshot removed by both was
   * taken, in the delete, for the image being gone, so the image was left behind.
   * Locks are taken child before parent, the way chains go, so two never wait on each other.
   */
  private withImageQueue<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.imageQueues.run(name.endsWith(hiddenSuffix) ? name.slice(0, -hiddenSuffix.length) : name, fn);
  }

  /**
   * After a child went away or was flattened: remove its parent's snapshot and
   * image if they were only kept for it. Best effort: the child's own
   * operation has succeeded, and whatever fails here the collector retries.
   */
  private async collectParent(parent: ParentRef): Promise<void> {
    if (!this.needsCollect(parent)) return;
    await this.withCollectLock(() => this.collectParentLocked(parent));
  }

  private needsCollect(parent: ParentRef): boolean {
    if (parent.pool !== this.pool) return false;
    return parent.image.endsWith(hiddenSuffix) || parent.snapshot.endsWith(hiddenSuffix) || parent.snapshot.endsWith(cloneSnapSuffix);
  }

  /** The clean-up itself; the caller holds the collect lock. */
  private async collectParentLocked(parent: ParentRef): Promise<void> {
    if (!this.needsCollect(parent)) return;
    try {
      if (parent.image.endsWith(hiddenSuffix)) {
        await this.removeOrHide(parent.image, true);
      } else {
        await this.withImageQueue(parent.image, () => this.withImage(parent.image, (image) => this.removeSnapshotIfChildless(image, parent.snapshot)));
      }
    } catch (error) {
      if (!(error instanceof RbdError && error.code === 'ENOENT')) {
        this.options.log(`[${this.section}] clean-up of ${parent.image}@${parent.snapshot} deferred to the collector: ${(error as Error).message}`);
      }
    }
  }

  /** Removes hidden images and snapshots whose clones are all gone (after crashes or out-of-band flattens). */
  async maintain(): Promise<void> {
    // Volumes moved to the trash whose purge was cut short (a crash, a busy image): purge them now.
    if (this.purgesRunning === 0 && this.purgeQueue.length === 0) {
      for (const entry of await this.io().trashList()) {
        const nowSeconds = Date.now() / 1000;
        if (entry.source !== 'user' || !entry.name.startsWith('volume-') || entry.deferredUntil > nowSeconds) continue;
        if (entry.deletionTime > nowSeconds - abandonedTrashSeconds) continue;
        await this.io().trashRemove(entry.id, false).catch((error: unknown) => this.options.log(`[${this.section}] purging ${entry.name} from the trash: ${(error as Error).message}`));
      }
    }
    await this.collectEmptyGroups();
    await this.withCollectLock(async () => {
      const names = await this.io().listImages();
      for (const name of names.filter((n) => n.endsWith(hiddenSuffix))) {
        await this.removeOrHide(name, true).catch((error: unknown) => this.options.log(`[${this.section}] collecting ${name}: ${(error as Error).message}`));
      }
    });
  }

  async extendVolume(volume: VolumeRef, newSizeGiB: number): Promise<void> {
    const name = volumeImage(volume.id);
    await this.call(`extend ${name}`, () =>
      this.withImage(name, async (image) => {
        const { sizeBytes } = await image.stat();
        if (sizeBytes < newSizeGiB * gib) await image.resize(newSizeGiB * gib);
      }),
    );
  }

  async reportCapacity(): Promise<CapacityReport> {
    if (!this.cluster) throw new DriverError('Unreachable', `backend [${this.section}] is not connected to Ceph`);
    this.client = this.checkClientFiles();
    const cluster = this.cluster;
    const df = await this.call('capacity report', () => withTimeout(cluster.monCommand({ prefix: 'df', format: 'json' }), this.timeoutSeconds * 1000));
    const parsed = JSON.parse(df.outbuf.toString()) as {
      stats: { total_bytes: number; total_avail_bytes: number };
      pools: { name: string; stats: { stored?: number; bytes_used: number; max_avail: number } }[];
    };
    const pool = parsed.pools.find((p) => p.name === this.pool);
    if (!pool) {
      // `df` shows a pool once the manager has reported its statistics, seconds after it is made: a pool of
      // the osdmap without them is reported with the cluster's raw figures until then.
      const listed = await this.call('capacity report', () => withTimeout(cluster.monCommand({ prefix: 'osd pool ls', format: 'json' }), this.timeoutSeconds * 1000));
      if (!(JSON.parse(listed.outbuf.toString()) as string[]).includes(this.pool)) {
        throw new DriverError('NotFound', `Ceph pool '${this.pool}' does not exist any more: recreate it or fix rbd_pool.`);
      }
      return { totalCapacityGiB: parsed.stats.total_bytes / gib, freeCapacityGiB: parsed.stats.total_avail_bytes / gib, thinProvisioningSupport: true, thickProvisioningSupport: false, storageProtocol: 'ceph' };
    }
    // max_avail already accounts for replication: the scenario's 3.5 TB raw with 2 replicas gives ~1.7 TB here.
    const storedBytes = pool.stats.stored ?? pool.stats.bytes_used;
    return {
      totalCapacityGiB: (storedBytes + pool.stats.max_avail) / gib,
      freeCapacityGiB: pool.stats.max_avail / gib,
      thinProvisioningSupport: true,
      thickProvisioningSupport: false,
      storageProtocol: 'ceph',
    };
  }

  async initializeConnection(volume: VolumeRef, connector: Connector): Promise<ConnectionInfo> {
    const name = volumeImage(volume.id);
    await this.call(`initialize connection of ${name}`, () => this.withImage(name, async () => undefined));
    if (volume.qos) await this.applyQos(name, volume.qos);
    const monitors = monitorAddresses(this.client?.monHost ?? '');
    return {
      driver_volume_type: 'rbd',
      data: {
        name: `${this.pool}/${name}`,
        hosts: monitors.map((m) => m.host),
        ports: monitors.map((m) => String(m.port)),
        cluster_name: this.config.rbd_cluster_name,
        auth_enabled: true,
        auth_username: this.user,
        secret_type: 'ceph',
        secret_uuid: this.config.rbd_secret_uuid,
        volume_id: volume.id,
        // Cinder's RBD driver always reports discard: RBD images unmap freed blocks.
        discard: true,
        qos_specs: null,
        access_mode: connector['mode'] === 'ro' ? 'ro' : 'rw',
        encrypted: false,
      },
    };
  }

  async terminateConnection(): Promise<void> {}

  /**
   * Back-end QoS as librbd's per-image options (`rbd config image set`, image metadata
   * `conf_rbd_qos_*`): every client that opens the image, QEMU included, is throttled. A key the
   * spec does not name is set to 0 (unlimited), so a changed spec replaces the old limits.
   * Idempotent; the binding has no metadata call, so this runs the rbd CLI with the backend's client.
   */
  /** The rbd CLI as this backend's client (for what the binding lacks: image metadata, rename). */
  private rbdCli(client: CephClientSettings, args: string[]): Promise<{ stdout: string; stderr: string }> {
    return execFileAsync('rbd', ['--id', this.user, '-c', client.confPath, '--keyring', client.keyringPath, `--client_mount_timeout=${this.timeoutSeconds}`, ...args], { timeout: this.timeoutSeconds * 2000 });
  }

  async listManageable(): Promise<ManageableObject[]> {
    const names = await this.call('list images', () => this.io().listImages());
    const out: ManageableObject[] = [];
    for (const name of names) {
      if (name.startsWith('volume-') || name.startsWith('snapshot-') || name.endsWith(hiddenSuffix)) continue;
      try {
        out.push({ name, sizeBytes: await this.withImage(name, (image) => image.size()) });
      } catch {
        // Removed while listing, or not openable: not offered.
      }
    }
    return out;
  }

  private async imageSize(name: string): Promise<number | null> {
    try {
      return await this.withImage(name, (image) => image.size());
    } catch (error) {
      if (error instanceof RbdError && error.code === 'ENOENT') return null;
      throw error;
    }
  }

  /** Renames `from` to `to` in the pool; the image's data, snapshots and children stay as they are. */
  private async renameImage(from: string, to: string): Promise<void> {
    const client = this.client ?? this.checkClientFiles();
    try {
      await this.rbdCli(client, ['rename', `${this.pool}/${from}`, `${this.pool}/${to}`]);
    } catch (error) {
      throw new DriverError('Invalid', `could not rename ${this.pool}/${from} to ${to}: ${((error as { stderr?: string }).stderr || (error as Error).message).trim().slice(0, 300)}`);
    }
  }

  async manageExisting(volume: VolumeRef, sourceName: string): Promise<{ sizeGiB: number }> {
    const target = volumeImage(volume.id);
    let size = await this.call(`manage ${sourceName}`, () => this.imageSize(sourceName));
    if (size === null) {
      // A re-run after the rename: the volume already holds it.
      size = await this.call(`manage ${sourceName}`, () => this.imageSize(target));
      if (size === null) throw new DriverError('NotFound', `image ${this.pool}/${sourceName} does not exist; list what can be managed with GET /manageable_volumes?host=...`);
      return { sizeGiB: Math.max(1, Math.ceil(size / gib)) };
    }
    await this.renameImage(sourceName, target);
    return { sizeGiB: Math.max(1, Math.ceil(size / gib)) };
  }

  async unmanage(volume: VolumeRef, name: string): Promise<void> {
    const source = volumeImage(volume.id);
    if ((await this.call(`unmanage ${source}`, () => this.imageSize(source))) === null) return;
    await this.renameImage(source, name);
  }

  /** Snapshots of the volumes' images that Pumice did not make (not snapshot-*, nor its hidden or clone snapshots). */
  async listManageableSnapshots(volumeIds: readonly string[]): Promise<ManageableSnapshot[]> {
    const out: ManageableSnapshot[] = [];
    for (const volumeId of volumeIds) {
      try {
        const snaps = await this.withImage(volumeImage(volumeId), (image) => image.snapList());
        for (const snap of snaps) {
          if (snap.name.startsWith('snapshot-') || snap.name.endsWith(hiddenSuffix) || snap.name.endsWith(cloneSnapSuffix)) continue;
          out.push({ name: snap.name, volumeId, sizeBytes: snap.sizeBytes });
        }
      } catch {
        // A volume whose image is gone or not openable offers nothing.
      }
    }
    return out;
  }

  async canManageSnapshot(volume: VolumeRef, sourceName: string): Promise<boolean> {
    return (await this.listManageableSnapshots([volume.id])).some((o) => o.name === sourceName);
  }

  async manageExistingSnapshot(snapshot: SnapshotRef, sourceName: string): Promise<{ sizeGiB: number }> {
    const imageName = volumeImage(snapshot.volumeId);
    const target = snapshotName(snapshot.id);
    return this.call(`manage snapshot ${imageName}@${sourceName}`, () =>
      this.withImage(imageName, async (image) => {
        const snaps = await image.snapList();
        const source = snaps.find((s) => s.name === sourceName);
        const adopted = snaps.find((s) => s.name === target);
        // A re-run after the rename: the snapshot already holds it.
        if (!source && adopted) return { sizeGiB: Math.max(1, Math.ceil(adopted.sizeBytes / gib)) };
        if (!source) throw new DriverError('NotFound', `snapshot ${this.pool}/${imageName}@${sourceName} does not exist; list what can be managed with GET /manageable_snapshots?host=...`);
        await image.snapRename(sourceName, target);
        return { sizeGiB: Math.max(1, Math.ceil(source.sizeBytes / gib)) };
      }),
    );
  }

  async unmanageSnapshot(snapshot: SnapshotRef, name: string): Promise<void> {
    const imageName = volumeImage(snapshot.volumeId);
    const source = snapshotName(snapshot.id);
    await this.call(`unmanage snapshot ${imageName}@${source}`, () =>
      this.withImage(imageName, async (image) => {
        if (!(await image.snapList()).some((s) => s.name === source)) return;
        await image.snapRename(source, name);
      }),
    );
  }

  private async applyQos(name: string, limits: QosLimits): Promise<void> {
    const client = this.client ?? this.checkClientFiles();
    const options: Record<QosLimitKey, string> = {
      total_iops_sec: 'rbd_qos_iops_limit', read_iops_sec: 'rbd_qos_read_iops_limit', write_iops_sec: 'rbd_qos_write_iops_limit',
      total_bytes_sec: 'rbd_qos_bps_limit', read_bytes_sec: 'rbd_qos_read_bps_limit', write_bytes_sec: 'rbd_qos_write_bps_limit',
    };
    try {
      await Promise.all(qosLimitKeys.map((key) => this.rbdCli(client, ['config', 'image', 'set', `${this.pool}/${name}`, options[key], String(limits[key] ?? 0)])));
    } catch (error) {
      throw new DriverError('Unreachable', `could not set the QoS limits of ${this.pool}/${name} (rbd config image set): ${((error as { stderr?: string }).stderr || (error as Error).message).trim().slice(0, 300)}. Check that the rbd CLI is installed and that client.${this.user} may write image metadata.`);
    }
  }

  async listResources(): Promise<{ volumeIds: string[]; snapshotIds: string[] }> {
    const names = await this.io().listImages();
    return {
      volumeIds: names.filter((n) => n.startsWith('volume-') && !n.endsWith(hiddenSuffix)).map((n) => n.slice('volume-'.length)),
      // Snapshots live inside images; orphans among them are handled by deleteVolume and the collector.
      snapshotIds: [],
    };
  }

  async createSnapshot(snapshot: SnapshotRef): Promise<void> {
    if (snapshot.groupSnapshot) return this.call(`group snapshot ${snapshot.groupSnapshot.groupSnapshotId}`, () => this.takeGroupSnapshot(snapshot.groupSnapshot!));
    const name = volumeImage(snapshot.volumeId);
    await this.call(`snapshot ${name}`, () =>
      this.withImage(name, async (image) => {
        const snaps = await image.snapList();
        if (!snaps.some((s) => s.name === snapshotName(snapshot.id))) await image.snapCreate(snapshotName(snapshot.id));
      }),
    );
  }

  async deleteSnapshot(snapshot: SnapshotRef): Promise<void> {
    if (snapshot.groupSnapshot) {
      const { groupId, groupSnapshotId } = snapshot.groupSnapshot;
      // Removes every member's snapshot of it; the other members' deletes find it gone.
      await this.call(`delete group snapshot ${groupSnapshotId}`, () => this.io().groupSnapRemove(groupImage(groupId), snapshotName(groupSnapshotId)).catch(ignoreMissing));
      return;
    }
    const imageName = await this.findImage(snapshot.volumeId);
    if (!imageName) return;
    const snap = snapshotName(snapshot.id);
    await this.call(`delete snapshot ${snap}`, () =>
      this.withImageQueue(imageName, () =>
        this.withImage(imageName, async (image) => {
          if (!(await image.snapList()).some((s) => s.name === snap)) return;
          if (!(await this.removeSnapshotIfChildless(image, snap))) {
            await image.snapRename(snap, snap + hiddenSuffix);
            this.options.log(`[${this.section}] ${imageName}@${snap} has clones: kept hidden until they are gone`);
          }
        }),
      ),
    );
  }

  /** Group snapshots being taken by this process, by group snapshot id: the members' tasks share one. */
  private readonly groupSnapshotsTaking = new Map<string, Promise<void>>();

  private takeGroupSnapshot(ref: GroupSnapshotRef): Promise<void> {
    let taking = this.groupSnapshotsTaking.get(ref.groupSnapshotId);
    if (!taking) {
      taking = this.takeGroupSnapshotOnce(ref).finally(() => this.groupSnapshotsTaking.delete(ref.groupSnapshotId));
      this.groupSnapshotsTaking.set(ref.groupSnapshotId, taking);
    }
    return taking;
  }

  /**
   * Makes the RBD group (if new), syncs its members with the group snapshot's volumes and takes
   * the group snapshot. Each step is idempotent: a re-run after a crash continues, and a group
   * snapshot left incomplete by a crash in rbd_group_snap_create2 is removed and taken again.
   */
  private async takeGroupSnapshotOnce(ref: GroupSnapshotRef): Promise<void> {
    const group = groupImage(ref.groupId);
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.syncGroupAndSnapshot(ref);
      } catch (error) {
        // Another process's collector may remove the group while it is still empty (just made): make it again.
        if (attempt >= groupSnapshotAttemptsMax || !(error instanceof RbdError && error.code === 'ENOENT') || (await this.io().groupList()).includes(group)) throw error;
      }
    }
  }

  private async syncGroupAndSnapshot(ref: GroupSnapshotRef): Promise<void> {
    const io = this.io();
    const group = groupImage(ref.groupId);
    const snap = snapshotName(ref.groupSnapshotId);
    await io.groupCreate(group).catch(ignoreExisting);
    const existing = (await io.groupSnapList(group)).find((s) => s.name === snap);
    if (existing?.complete) return;
    if (existing) await io.groupSnapRemove(group, snap).catch(ignoreMissing);
    await this.syncMembers(group, ref.volumeIds, { skipMissing: false });
    crashPoint('rbd.group-snapshot.members-synced');
    // QEMU registers no quiesce watcher: without SKIP_QUIESCE librbd would wait on attached images for nothing.
    await io.groupSnapCreate(group, snap, RBD_SNAP_CREATE_SKIP_QUIESCE).catch(ignoreExisting);
    crashPoint('rbd.group-snapshot.taken');
  }

  /** Syncs of RBD groups running in this process: while one runs, this process's collector removes no empty group. */
  private groupSyncsRunning = 0;

  async syncGroupMembers(groupId: string, volumeIds: readonly string[]): Promise<void> {
    const group = groupImage(groupId);
    this.groupSyncsRunning++;
    try {
      await this.call(`sync RBD group ${group}`, async () => {
        if (volumeIds.length === 0) {
          // Nothing to hold: the members leave; the group goes once no group snapshot needs it.
          if (!(await this.io().groupList()).includes(group)) return;
          await this.syncMembers(group, [], { skipMissing: true });
          await this.removeGroupIfEmpty(group, { ownSync: true });
          return;
        }
        for (let attempt = 1; ; attempt++) {
          try {
            await this.io().groupCreate(group).catch(ignoreExisting);
            await this.syncMembers(group, volumeIds, { skipMissing: true });
            break;
          } catch (error) {
            // Another process's collector may remove the group while it is still empty (just made): make it again.
            if (attempt >= groupSnapshotAttemptsMax || !(error instanceof RbdError && error.code === 'ENOENT') || (await this.io().groupList()).includes(group)) throw error;
          }
        }
        crashPoint('rbd.group.members-synced');
      });
    } finally {
      this.groupSyncsRunning--;
    }
  }

  /**
   * Makes RBD group `group` hold exactly the images of `volumeIds` in this pool. An image in
   * another RBD group (the volume moved between Block Storage groups) leaves it first: an image
   * is in one group at most. `skipMissing`: an image not there (not made yet, or deleted) is
   * skipped, else its ENOENT is thrown (a group snapshot of a volume without an image is wrong).
   */
  private async syncMembers(group: string, volumeIds: readonly string[], options: { skipMissing: boolean }): Promise<void> {
    const io = this.io();
    const wanted = volumeIds.map(volumeImage);
    const members = await io.groupImageList(group);
    for (const member of members) {
      if (member.poolId === io.poolId && !wanted.includes(member.name)) await io.groupImageRemove(group, member.name).catch(ignoreMissing);
    }
    for (const name of wanted) {
      if (members.some((m) => m.complete && m.poolId === io.poolId && m.name === name)) continue;
      try {
        await this.withImage(name, async (image) => {
          const current = await image.getGroup();
          if (current && current.name === group) return;
          if (current) await io.groupImageRemove(current.name, name).catch(ignoreMissing);
          await io.groupImageAdd(group, name);
        });
      } catch (error) {
        if (options.skipMissing && error instanceof RbdError && error.code === 'ENOENT' && !(await io.listImages()).includes(name)) continue;
        throw error;
      }
    }
  }

  /** The id of `imageName`'s snapshot of the group snapshot (it has no user name); NotFound when absent. */
  private async groupMemberSnapId(image: RbdImage, ref: GroupSnapshotRef): Promise<number> {
    for (const snap of await image.snapList()) {
      if (!snap.name.startsWith(groupSnapPrefix)) continue;
      const ns = await image.snapGroupNamespace(snap.id);
      if (ns && ns.group === groupImage(ref.groupId) && ns.groupSnap === snapshotName(ref.groupSnapshotId)) return snap.id;
    }
    throw new DriverError('NotFound', `${image.name} has no snapshot of group snapshot ${ref.groupSnapshotId} (RBD group ${groupImage(ref.groupId)}); it was removed outside Pumice`);
  }

  /**
   * A new volume with the bytes of a group snapshot's member. Ceph Pacific can clone only from a
   * snapshot in the user namespace (rbd_clone4, by snapshot id, is Reef's), so the bytes are
   * copied: only the extents allocated at the snapshot, holes stay holes. A re-run copies again.
   */
  private async copyGroupMember(volume: VolumeRef, parentImage: string, ref: GroupSnapshotRef): Promise<void> {
    const child = volumeImage(volume.id);
    await this.io().createImage(child, volume.sizeGiB * gib, { orderBits: this.orderBits(), features: volumeFeatures }).catch(ignoreExisting);
    await this.withImage(parentImage, async (source) => {
      await source.snapSetById(await this.groupMemberSnapId(source, ref));
      const { sizeBytes } = await source.stat();
      await this.withImage(child, async (target) => {
        const buffer = Buffer.alloc(groupCopyChunkBytes);
        for await (const batch of source.diffIterateBatches({ includeParent: true })) {
          for (const extent of batch) {
            if (!extent.exists) continue;
            const end = Math.min(extent.offset + extent.length, sizeBytes);
            for (let at = extent.offset; at < end; at += groupCopyChunkBytes) {
              const length = Math.min(groupCopyChunkBytes, end - at);
              const chunk = buffer.subarray(0, length);
              await source.readInto(at, chunk);
              await target.write(at, chunk);
            }
          }
        }
        await target.flush();
      });
    }, { readOnly: true });
  }

  /**
   * RBD groups `group-*` with no member and no group snapshot hold nothing (a group snapshot makes
   * its group again): the collector removes them, e.g. after a crash between a group's last
   * member leaving it and its removal.
   */
  private async collectEmptyGroups(): Promise<void> {
    for (const group of (await this.io().groupList()).filter((g) => g.startsWith('group-'))) {
      await this.removeGroupIfEmpty(group).catch((error: unknown) => this.options.log(`[${this.section}] collecting RBD group ${group}: ${(error as Error).message}`));
    }
  }

  private async removeGroupIfEmpty(group: string, options: { ownSync: boolean } = { ownSync: false }): Promise<void> {
    const io = this.io();
    // A group snapshot being taken, or a group being synced, by this process may have just made it
    // (another process's re-creates it: takeGroupSnapshotOnce and syncGroupMembers make the group
    // again when a step finds it gone).
    if (this.groupSnapshotsTaking.size > 0 || this.groupSyncsRunning > (options.ownSync ? 1 : 0)) return;
    if ((await io.groupImageList(group).catch(() => [{}])).length > 0) return;
    if ((await io.groupSnapList(group).catch(() => [{}])).length > 0) return;
    await io.groupRemove(group).catch(ignoreMissing);
  }

  /** The image of a volume, also when it is hidden (deleted with clones left). */
  private async findImage(volumeId: string): Promise<string | null> {
    const names = await this.io().listImages();
    const name = volumeImage(volumeId);
    if (names.includes(name)) return name;
    if (names.includes(name + hiddenSuffix)) return name + hiddenSuffix;
    return null;
  }

  async createVolumeFromSnapshot(volume: VolumeRef, snapshot: SnapshotRef): Promise<void> {
    const parentImage = await this.findImage(snapshot.volumeId);
    if (!parentImage) throw new DriverError('NotFound', `the image of volume ${snapshot.volumeId} is gone from pool '${this.pool}'`);
    if (snapshot.groupSnapshot) {
      await this.call(`copy group snapshot ${snapshot.groupSnapshot.groupSnapshotId} of ${parentImage}`, () => this.copyGroupMember(volume, parentImage, snapshot.groupSnapshot!));
      return;
    }
    await this.cloneFrom(volume, parentImage, snapshotName(snapshot.id), this.config.rbd_flatten_volume_from_snapshot);
  }

  async cloneVolume(volume: VolumeRef, source: VolumeRef): Promise<void> {
    const parentImage = volumeImage(source.id);
    const snap = volumeImage(volume.id) + cloneSnapSuffix;
    await this.call(`clone ${parentImage}`, () =>
      this.withImage(parentImage, async (image) => {
        if (!(await image.snapList()).some((s) => s.name === snap)) await image.snapCreate(snap);
      }),
    );
    crashPoint('rbd.clone.snapshot-taken');
    await this.cloneFrom(volume, parentImage, snap, false);
  }

  /** Copy-on-write clone of `parent@snap`; flattened in the background when asked or when the chain is too deep. */
  private async cloneFrom(volume: VolumeRef, parentImage: string, snap: string, flatten: boolean): Promise<void> {
    const child = volumeImage(volume.id);
    await this.call(`clone ${parentImage}@${snap} to ${child}`, async () => {
      const exists = (await this.io().listImages()).includes(child);
      if (!exists) {
        await this.withImage(parentImage, async (image) => {
          if (!(await image.snapIsProtected(snap))) await image.snapProtect(snap);
        });
        crashPoint('rbd.clone.protected');
        await this.io().clone({ parentImage, parentSnap: snap, childName: child, features: volumeFeatures, orderBits: this.orderBits() });
        crashPoint('rbd.clone.cloned');
      }
      await this.withImage(child, async (image) => {
        const { sizeBytes } = await image.stat();
        if (sizeBytes < volume.sizeGiB * gib) await image.resize(volume.sizeGiB * gib);
      });
    });
    const depth = await this.cloneDepth(child);
    if (flatten || depth > this.config.rbd_max_clone_depth) this.scheduleFlatten(child);
  }

  private async cloneDepth(name: string): Promise<number> {
    let depth = 0;
    let current: string | null = name;
    while (current && depth < 64) {
      const info: { pool: string; image: string } | null = await this.withImage(current, (image) => image.parentInfo());
      if (!info) break;
      depth++;
      // A parent in another pool is an image of the image store: the root of the chain.
      if (info.pool !== this.pool) break;
      current = info.image;
    }
    return depth;
  }

  /** Flattens in the background, at most `flattenConcurrencyMax` at once, then collects the parent. */
  private scheduleFlatten(name: string): void {
    if (!this.flattenQueue.includes(name)) this.flattenQueue.push(name);
    this.pumpFlattens();
  }

  private pumpFlattens(): void {
    while (this.flattensRunning < flattenConcurrencyMax && this.flattenQueue.length > 0) {
      const name = this.flattenQueue.shift()!;
      this.flattensRunning++;
      this.flatten(name)
        .catch((error: unknown) => {
          // A volume deleted before its turn came has nothing left to flatten.
          if (error instanceof RbdError && error.code === 'ENOENT') return;
          this.options.log(`[${this.section}] flatten of ${name} failed: ${(error as Error).message}`);
        })
        .finally(() => {
          this.flattensRunning--;
          this.pumpFlattens();
        });
    }
  }

  /** Flattens an image now (resolves when done); used by the background queue and by tests. */
  async flatten(name: string): Promise<void> {
    const parent = await this.withImageQueue(name, () =>
      this.withImage(name, async (image) => {
        const info = await image.parentInfo();
        if (info) await image.flatten();
        return info;
      }),
    );
    if (parent) await this.collectParent(parent);
  }

  async revertToSnapshot(volume: VolumeRef, snapshot: SnapshotRef): Promise<void> {
    const name = volumeImage(volume.id);
    await this.call(`revert ${name} to ${snapshotName(snapshot.id)}`, () => this.withImage(name, (image) => image.snapRollback(snapshotName(snapshot.id))));
  }

  /**
   * Whether this user may blocklist a client, which taking over the exclusive
   * lock of a dead client needs (fencing, evacuation). The scenario's
   * `mon 'allow r'` may not; `mon 'profile rbd'` may. Returns null when it
   * can, else the explanation with the fix. Tries a harmless entry that
   * expires in a second on an address no client has.
   */
  async fencingProblem(): Promise<string | null> {
    if (!this.cluster) return 'not connected';
    try {
      await this.cluster.blocklistAdd('127.0.0.254:0/1', 1);
      return null;
    } catch (error) {
      if (error instanceof RbdError && (error.code === 'EACCES' || error.code === 'EPERM')) {
        return `client.${this.user} may not blocklist clients, so it cannot take over the exclusive lock of a crashed client (fencing, evacuation): give it mon 'profile rbd' (ceph auth caps client.${this.user} mon 'profile rbd' osd '...' with its current osd caps)`;
      }
      return `blocklist check failed: ${(error as Error).message}`;
    }
  }

  /** Other pools of the cluster (the image store's), opened on first use and kept until stop. */
  private readonly foreignPools = new Map<string, Promise<IoCtx>>();

  private foreignPool(pool: string): Promise<IoCtx> {
    if (pool === this.pool) return Promise.resolve(this.io());
    let ioctx = this.foreignPools.get(pool);
    if (!ioctx) {
      if (!this.cluster) throw new DriverError('Unreachable', `backend [${this.section}] is not connected to Ceph`);
      ioctx = this.cluster.openIoctx(pool);
      ioctx.catch(() => this.foreignPools.delete(pool));
      this.foreignPools.set(pool, ioctx);
    }
    return ioctx;
  }

  async cloneImageLocation(volume: VolumeRef, location: RbdLocation): Promise<boolean> {
    if (!this.fsid || location.fsid !== this.fsid) return false;
    const child = volumeImage(volume.id);
    const parent = `${location.pool}/${location.image}@${location.snapshot}`;
    try {
      const parentIoctx = await this.foreignPool(location.pool);
      const exists = (await this.io().listImages()).includes(child);
      if (!exists) {
        // Glance protects its snapshots, so a format 1 clone works with read-only caps on the image pool.
        // The clone keeps the image's object size: a smaller one than the parent's stripe unit is EINVAL.
        await this.io().clone({ parentIoctx, parentImage: location.image, parentSnap: location.snapshot, childName: child, features: volumeFeatures, cloneFormat: 1 });
      }
      await this.withImage(child, async (image) => {
        const { sizeBytes } = await image.stat();
        if (sizeBytes < volume.sizeGiB * gib) await image.resize(volume.sizeGiB * gib);
      });
    } catch (error) {
      if (error instanceof RbdError && (error.code === 'EPERM' || error.code === 'EACCES')) {
        throw new DriverError(
          'Permission',
          `Permission denied cloning image ${parent} into pool '${this.pool}' as client.${this.user}: give it read access to pool '${location.pool}' (osd 'profile rbd-read-only pool=${location.pool}', as in the scenario's caps; 'pumice ceph setup' sets them).`,
        );
      }
      throw this.explain(error, `clone image ${parent} to ${child}`);
    }
    // The image is generation 0; a clone of it counts 1 towards rbd_max_clone_depth.
    if (this.config.rbd_max_clone_depth < 1) this.scheduleFlatten(child);
    return true;
  }

  async openVolumeData(volume: VolumeRef, writable: boolean): Promise<VolumeData> {
    const name = volumeImage(volume.id);
    const image = await this.call(`open ${name}`, () => this.io().openImage(name, { readOnly: !writable }));
    const { sizeBytes } = await image.stat();
    const explain = (error: unknown, action: string) => this.explain(error, `${action} ${name}`);
    return {
      sizeBytes,
      readInto: (offset, target) => image.readInto(offset, target).catch((error: unknown) => Promise.reject(explain(error, 'read'))),
      write: (offset, data) => image.write(offset, data).catch((error: unknown) => Promise.reject(explain(error, 'write'))),
      async close() {
        try {
          if (writable) await image.flush();
        } finally {
          await image.close();
        }
      },
    };
  }

  /** The cluster fsid (image locations `rbd://<fsid>/...`). */
  clusterFsid(): string {
    return this.fsid;
  }
}

/**
 * Runs a removal, succeeding if the target is already gone (ENOENT) and
 * retrying while librbd answers EBUSY: another client (a consumer just
 * closing the image) still has it open.
 */
async function retryWhileBusy(operation: () => Promise<void>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await operation();
      return;
    } catch (error) {
      if (error instanceof RbdError && error.code === 'ENOENT') return;
      if (!(error instanceof RbdError && error.code === 'EBUSY') || attempt >= removeAttemptsMax) throw error;
      await new Promise((resolve) => setTimeout(resolve, 250 * attempt));
    }
  }
}

interface ParentRef {
  pool: string;
  image: string;
  snapshot: string;
}

export function volumeImage(volumeId: string): string {
  return `volume-${volumeId}`;
}

/** The RBD group of a Block Storage group (the name librbd's groups have in the pool). */
export function groupImage(groupId: string): string {
  return `group-${groupId}`;
}

function ignoreMissing(error: unknown): void {
  if (!(error instanceof RbdError && error.code === 'ENOENT')) throw error;
}

function ignoreExisting(error: unknown): void {
  if (!(error instanceof RbdError && error.code === 'EEXIST')) throw error;
}

export function snapshotName(snapshotId: string): string {
  return `snapshot-${snapshotId}`;
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new RbdError('timed out waiting for the cluster', { code: 'ETIMEDOUT', errno: 110, operation: 'rados_mon_command' })), timeoutMs);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
