/**
 * The Ceph backup driver (`backup_driver = ceph`, Cinder's
 * cinder.backup.drivers.ceph.CephBackupDriver options).
 *
 * Layout in `backup_ceph_pool`: one RBD image per chain,
 * `volume-<volume id>.backup.<id of the chain's full backup>`, and one
 * snapshot `backup.<backup id>.snap` on it per backup of the chain. A backup
 * is valid once its snapshot exists: a crash before leaves at most a dirty
 * image head, which the next incremental rolls back to its parent's
 * snapshot, and a full backup's half-written image, which `delete` removes.
 * (Cinder keeps one `volume-<id>.backup.base` per volume; an image per chain
 * lets a new full backup start clean while older chains stay restorable.)
 *
 * From an RBD volume the driver snapshots the source (`backup.<id>.snap`,
 * written as the volume backend's user, which may write pool `volumes`),
 * then copies the allocated extents (diff from nothing) for a full backup,
 * or the extents changed since the parent's source snapshot for an
 * incremental (rbd_diff_iterate2, whole_object = false). Extents are read
 * and split at 4 KiB: data runs are written, zero runs become
 * rbd_write_zeroes (never written as data), so a 4 KiB change moves 4 KiB
 * even inside an object that did not exist before. After success only the
 * newest source snapshot is kept (Cinder does the same).
 *
 * From a file (local backend), or when the parent's source snapshot is gone,
 * the driver reads the source and the parent's backup snapshot side by side
 * and writes only the 4 KiB blocks that differ.
 *
 * The backup image is written as `backup_ceph_user` (the scenario's
 * client.cinder-backup may only touch pool `backups`); the source and restore
 * targets are read and written as the volume backend's rbd_user.
 */
import { open, stat, type FileHandle } from 'node:fs/promises';
import { CephConfigProblem, resolveCephClient } from '../../ceph/conf.ts';
import { writeFully, zeroFileRange } from './file-ranges.ts';
import {
  RadosCluster,
  RbdError,
  RBD_FEATURE_JOURNALING,
  RBD_FEATURE_LAYERING,
  RBD_FEATURE_OBJECT_MAP,
  RBD_FEATURE_STRIPINGV2,
  type Extent,
  type ObjectWrite,
  type IoCtx,
  type RbdImage,
} from '../../ceph/rbd.ts';
import { DriverError } from '../../volume/drivers/driver.ts';
import { crashPoint } from '../../tasks/crash.ts';
import { Phases, type PhaseTiming } from './phases.ts';
import { cephServiceName, type BackupDriver, type BackupJob, type BackupRef, type BackupResult, type CephClientRef, type RestoreJob, type VolumeSource } from './driver.ts';


export interface CephBackupOptions {
  /** The backup user's cluster (backup_ceph_conf, backup_ceph_user). */
  client: CephClientRef;
  pool: string;
  /** Bytes in flight at once per backup or restore (backup_ceph_chunk_size). */
  chunkBytes: number;
  /** backup_ceph_stripe_unit / backup_ceph_stripe_count; 0 keeps RBD's default striping. */
  stripeUnit: number;
  stripeCount: number;
  log: (message: string) => void;
}

/** Unit of one read and one write: an RBD object of the scenario's volumes (rbd_store_chunk_size = 4 MiB). */
const pieceBytes = 4 * 1024 * 1024;
/** Granularity of the zero and change checks: a guest's block. */
const blockBytes = 4096;
/**
 * Operations in flight at once. Small extents (scattered 4 KiB changes) are bound by round trips,
 * not bandwidth, so many run at once; the bytes in flight stay within backup_ceph_chunk_size.
 */
const operationsMax = 128;
/**
 * Backup images: 4 MiB objects and layering only, as Cinder makes them. No exclusive lock (so no
 * object map): a backup process killed mid-write would leave a lock that only a user allowed to
 * blocklist could break, and the scenario's client.cinder-backup has mon 'allow r'.
 */
const backupImageOrder = 22;
const backupImageFeatures = RBD_FEATURE_LAYERING;
/** A killed client's watch on an image lasts until osd_client_watch_timeout (30 s by default); removals retry that long. */
const busyRetryMs = 45_000;
/** Each OSD operation of a long copy may take this long before it fails (the connect itself uses client.connectTimeoutSeconds). */
const opTimeoutSeconds = 300;
const zeroBlock = Buffer.alloc(pieceBytes);

export function backupImageName(volumeId: string, chainRootId: string): string {
  return `volume-${volumeId}.backup.${chainRootId}`;
}

export function backupSnapName(backupId: string): string {
  return `backup.${backupId}.snap`;
}

const backupSnapPattern = /^backup\.[0-9a-f-]{36}\.snap$/;

interface Connection {
  cluster: RadosCluster;
  pools: Map<string, IoCtx>;
  keyringPath: string;
}

/** Block I/O on a volume or backup, whatever holds it. */
interface BlockIo {
  readonly sizeBytes: number;
  read(offset: number, target: Buffer): Promise<void>;
  write(offset: number, data: Buffer): Promise<void>;
  zero(offset: number, length: number): Promise<void>;
  /** Extents holding data (all of it when unknown), or those changed since `fromSnap` (RBD only). */
  extents(fromSnap?: string): AsyncGenerator<Extent[]>;
  close(): Promise<void>;
}

export class CephBackupDriver implements BackupDriver {
  readonly serviceName = cephServiceName;
  private backupConnection: Connection | null = null;
  private readonly sourceConnections = new Map<string, Promise<Connection>>();

  constructor(private readonly options: CephBackupOptions) {
    if (options.chunkBytes < pieceBytes) throw new Error(`backup_ceph_chunk_size ${options.chunkBytes} must be at least ${pieceBytes} (4 MiB)`);
  }

  private get limits(): PieceLimits {
    return { operationsMax, bytesMax: this.options.chunkBytes };
  }

  private get who(): string {
    return `client.${this.options.client.user}`;
  }

  /** Reads and writes both: RBD images through librbd, local files directly. */
  unsupported(_kind: VolumeSource['kind']): string | null {
    return null;
  }

  /**
   * Checks the keyring is still there (a connected client goes on working without it, a restart
   * would not), connects as backup_ceph_user and proves it may write pool backup_ceph_pool.
   */
  async start(): Promise<void> {
    const keyringPath = this.resolveKeyring();
    if (this.backupConnection && this.backupConnection.keyringPath === keyringPath) {
      const io = this.backupConnection.pools.get(this.options.pool)!;
      await this.explain(() => io.listImages(), 'list images');
      return;
    }
    await this.dropBackupConnection();
    const connection = await this.connect(this.options.client, keyringPath);
    try {
      const io = await this.explain(() => connection.cluster.openIoctx(this.options.pool), 'open pool');
      connection.pools.set(this.options.pool, io);
      await this.explain(() => io.listImages(), 'list images');
      // Reading is not enough: 'allow r' lists images but cannot write backups. Create and remove a probe image.
      const probe = `pumice-backup-probe.${process.pid}`;
      await this.explain(async () => {
        await io.createImage(probe, pieceBytes, { orderBits: backupImageOrder, features: RBD_FEATURE_LAYERING });
        await io.removeImage(probe);
      }, 'write a probe image');
      this.backupConnection = connection;
    } catch (error) {
      await connection.cluster.shutdown().catch(() => undefined);
      throw error;
    }
  }

  async stop(): Promise<void> {
    await this.dropBackupConnection();
    const sources = [...this.sourceConnections.values()];
    this.sourceConnections.clear();
    await Promise.allSettled(sources.map(async (p) => (await p).cluster.shutdown()));
  }

  private async dropBackupConnection(): Promise<void> {
    const connection = this.backupConnection;
    this.backupConnection = null;
    if (connection) await connection.cluster.shutdown().catch(() => undefined);
  }

  private resolveKeyring(): string {
    const c = this.options.client;
    try {
      return resolveCephClient({ confPath: c.confPath, user: c.user, clusterName: c.clusterName, keyringPath: c.keyringPath }).keyringPath;
    } catch (error) {
      if (error instanceof CephConfigProblem) {
        const tried = c.keyringPath
          ? `the configured keyring ${c.keyringPath}`
          : `the 'keyring' setting of ${c.confPath}, else /etc/ceph/${c.clusterName}.client.${c.user}.keyring`;
        throw new DriverError('Unreachable', `Ceph backup driver cannot reach the cluster as ${this.who} (backup_ceph_user): ${error.message} Looked at ${tried}.`);
      }
      throw error;
    }
  }

  private async connect(client: CephClientRef, keyringPath: string): Promise<Connection> {
    try {
      const cluster = await RadosCluster.connect({
        confPath: client.confPath,
        user: client.user,
        keyringPath,
        connectTimeoutSeconds: client.connectTimeoutSeconds,
        opTimeoutSeconds,
      });
      return { cluster, pools: new Map(), keyringPath };
    } catch (error) {
      const detail = error instanceof RbdError ? `${error.message}` : (error as Error).message;
      throw new DriverError(
        'Unreachable',
        `Error connecting to ceph cluster as client.${client.user} with keyring ${keyringPath}: ${detail}. Check the monitors are reachable and that the keyring matches 'ceph auth get client.${client.user}'.`,
      );
    }
  }

  /** The backup pool, connecting first when needed. */
  private async backupPool(): Promise<IoCtx> {
    this.resolveKeyring();
    if (!this.backupConnection) await this.start();
    return this.backupConnection!.pools.get(this.options.pool)!;
  }

  /** A volume backend's pool, as that backend's user (connections are kept per user). */
  private async sourcePool(client: CephClientRef, pool: string): Promise<IoCtx> {
    const key = `${client.confPath}|${client.user}|${client.keyringPath ?? ''}`;
    let pending = this.sourceConnections.get(key);
    if (!pending) {
      pending = (async () => {
        let keyringPath: string;
        try {
          keyringPath = resolveCephClient({ confPath: client.confPath, user: client.user, clusterName: client.clusterName, keyringPath: client.keyringPath }).keyringPath;
        } catch (error) {
          if (error instanceof CephConfigProblem) throw new DriverError('Unreachable', `cannot read the volume as client.${client.user}: ${error.message}`);
          throw error;
        }
        return this.connect(client, keyringPath);
      })();
      this.sourceConnections.set(key, pending);
      pending.catch(() => this.sourceConnections.delete(key));
    }
    const connection = await pending;
    let io = connection.pools.get(pool);
    if (!io) {
      io = await connection.cluster.openIoctx(pool);
      connection.pools.set(pool, io);
    }
    return io;
  }

  /** Runs a librbd call on the backup pool and explains permission errors with the scenario's caps. */
  private async explain<T>(fn: () => Promise<T>, action: string): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      if (error instanceof RbdError) {
        if (error.code === 'EPERM' || error.code === 'EACCES') {
          throw new DriverError(
            'Permission',
            `Permission denied for ${this.who} on pool '${this.options.pool}' during ${action} (${error.operation}): give it the scenario's caps: ceph auth caps ${this.who} mon 'allow r' osd 'allow class-read object_prefix rbd_children, allow rwx pool=${this.options.pool}'.`,
          );
        }
        if (error.code === 'ENOENT' && action === 'open pool') {
          throw new DriverError('NotFound', `Ceph pool '${this.options.pool}' (backup_ceph_pool) does not exist: create it (ceph osd pool create ${this.options.pool}; rbd pool init ${this.options.pool}) or fix backup_ceph_pool.`);
        }
        if (error.code === 'ENOSPC' || error.code === 'EDQUOT') {
          throw new DriverError('NoSpace', `Ceph pool '${this.options.pool}' is full or over quota during ${action}: add OSDs or raise the pool quota.`);
        }
        if (error.code === 'ETIMEDOUT') {
          throw new DriverError('Unreachable', `Ceph did not answer ${this.who} during ${action} within the timeout: check the monitors and OSDs are up.`);
        }
      }
      throw error;
    }
  }

  // ------------------------------------------------------------- backup --

  async backup(job: BackupJob): Promise<BackupResult> {
    const phases = new Phases();
    try {
      return await this.backupTimed(job, phases);
    } finally {
      this.lastBackupPhases = phases.report();
    }
  }

  /** Where the last backup's time went, by phase (for the bench and the logs). */
  lastBackupPhases: { totalMs: number; phases: PhaseTiming[] } = { totalMs: 0, phases: [] };

  private async backupTimed(job: BackupJob, phases: Phases): Promise<BackupResult> {
    const pool = await phases.time('connect', () => this.backupPool());
    const imageName = backupImageName(job.volumeId, job.chainRootId);
    if (job.parent === null) {
      // A re-run starts over: whatever a cut-short try left goes first. (Before the source snapshot,
      // as always: a crash here leaves no snapshot and holds no lock on the volume.)
      await this.removeImage(pool, imageName);
      // Striping needs both values; an unset one takes RBD's default (unit = object size, count = 1).
      const { stripeUnit, stripeCount } = this.options;
      const striped = stripeUnit > 0 || stripeCount > 1;
      await this.explain(
        () =>
          pool.createImage(imageName, job.sizeBytes, {
            orderBits: backupImageOrder,
            features: backupImageFeatures | (striped ? RBD_FEATURE_STRIPINGV2 : 0),
            ...(striped ? { stripeUnit: stripeUnit || 2 ** backupImageOrder, stripeCount: Math.max(1, stripeCount) } : {}),
          }),
        `create ${imageName}`,
      );
      crashPoint('ceph-backup.image-created');
    }
    // The source snapshot (a monitor round trip, and the volume's exclusive lock) and the backup
    // image's preparation (open, head check, resize) do not depend on each other: both at once.
    const source = job.source;
    const sourceSnap = source.kind === 'rbd' ? phases.time('source snapshot', () => this.snapshotSource(job, source)) : null;
    sourceSnap?.catch(() => undefined); // awaited below, on every path
    try {
      return await this.backupPrepared(job, phases, pool, imageName, sourceSnap);
    } finally {
      await sourceSnap?.catch(() => undefined);
    }
  }

  /** Snapshots an RBD source (unless the job reads a volume snapshot) and gives the snapshot to read. */
  private async snapshotSource(job: BackupJob, source: Extract<VolumeSource, { kind: 'rbd' }>): Promise<SourceSnapshot> {
    const volumes = await this.sourcePool(source.client, source.pool);
    if (source.snapshot !== null) return { volumes, readSnap: source.snapshot, taken: false };
    const readSnap = backupSnapName(job.backupId);
    await volumes.withImage(source.image, {}, async (image) => {
      if (!(await image.snapList()).some((s) => s.name === readSnap)) await image.snapCreate(readSnap);
    });
    crashPoint('ceph-backup.source-snapshot-taken');
    return { volumes, readSnap, taken: true };
  }

  private async backupPrepared(job: BackupJob, phases: Phases, pool: IoCtx, imageName: string, sourceSnap: Promise<SourceSnapshot> | null): Promise<BackupResult> {
    const target = await phases.time('open backup image', () => this.explain(() => pool.openImage(imageName), `open ${imageName}`)).catch((error: unknown) => {
      if (error instanceof RbdError && error.code === 'ENOENT') {
        throw new DriverError('NotFound', `backup image ${this.options.pool}/${imageName} of the chain of backup ${job.chainRootId} is gone: create a full backup`);
      }
      throw error;
    });
    const stats = { storedBytes: 0, objects: new Set<number>() };
    try {
      const parentSnap = job.parent ? backupSnapName(job.parent.backupId) : null;
      if (parentSnap) await phases.time('check backup head', () => this.resetHead(target, parentSnap, job));
      await phases.time('backup image size', async () => {
        if ((await target.size()) < job.sizeBytes) await target.resize(job.sizeBytes);
      });
      const targetIo = rbdIo(target, job.sizeBytes);
      let taken: SourceSnapshot | null = null;
      if (job.source.kind === 'rbd') {
        taken = await sourceSnap!;
        await this.backupFromRbd(job, job.source, taken, targetIo, target, pool, imageName, parentSnap, stats, phases);
      } else {
        const source = await fileIo(job.source.path, job.sizeBytes, 'r');
        try {
          if (parentSnap) await this.copyChanged(source, targetIo, pool, imageName, parentSnap, job, stats);
          else await this.copyExtents(source, targetIo, source.extents(), job, stats, false);
        } finally {
          await source.close();
        }
      }
      await phases.time('flush backup image', () => target.flush());
      crashPoint('ceph-backup.copied');
      const snap = backupSnapName(job.backupId);
      // The backup's snapshot and the removal of the volume's older backup snapshots are monitor
      // round trips on different images: at once (they may share one monitor proposal).
      const [made, removed] = await Promise.allSettled([
        phases.time('backup snapshot', async () => {
          if (!(await target.snapList()).some((s) => s.name === snap)) await this.explain(() => target.snapCreate(snap), `snapshot ${imageName}@${snap}`);
        }),
        taken?.taken && job.source.kind === 'rbd' ? phases.time('remove older source snapshot', () => removeOlderSourceSnapshots(taken!, job.source as Extract<VolumeSource, { kind: 'rbd' }>)) : null,
      ]);
      if (made.status === 'rejected') throw made.reason;
      if (removed.status === 'rejected') throw removed.reason;
    } finally {
      await phases.time('close backup image', () => target.close());
    }
    return { objectCount: stats.objects.size, storedBytes: stats.storedBytes };
  }

  /** Makes the backup image's head equal the parent's snapshot again (a later backup was deleted, or a try was cut short). */
  private async resetHead(target: RbdImage, parentSnap: string, job: BackupJob): Promise<void> {
    const snaps = await target.snapList();
    if (!snaps.some((s) => s.name === parentSnap)) {
      throw new DriverError('NotFound', `parent backup ${job.parent!.backupId} has no snapshot ${parentSnap} on ${target.spec}: it is incomplete; create a full backup`);
    }
    const parentSize = snaps.find((s) => s.name === parentSnap)!.sizeBytes;
    const headSize = await target.size();
    let dirty = headSize !== parentSize;
    if (!dirty) {
      for await (const batch of target.diffIterateBatches({ fromSnap: parentSnap, batchSize: 1 })) {
        if (batch.length > 0) dirty = true;
        break;
      }
    }
    if (dirty) {
      this.options.log(`backup ${job.backupId}: rolling ${target.spec} back to ${parentSnap} (a later backup was deleted or cut short)`);
      await this.explain(() => target.snapRollback(parentSnap), `roll back ${target.spec} to ${parentSnap}`);
    }
  }

  private async backupFromRbd(
    job: BackupJob,
    source: Extract<VolumeSource, { kind: 'rbd' }>,
    taken: SourceSnapshot,
    target: BlockIo,
    targetImage: RbdImage,
    pool: IoCtx,
    imageName: string,
    parentSnap: string | null,
    stats: { storedBytes: number; objects: Set<number> },
    phases: Phases,
  ): Promise<void> {
    const { volumes, readSnap } = taken;
    const image = await phases.time('open source', () => volumes.openImage(source.image, { snapshot: readSnap }));
    try {
      const snaps = await phases.time('open source', () => image.snapList());
      const readSnapId = snaps.find((s) => s.name === readSnap)?.id ?? Infinity;
      // The parent's point in time on the source: its own snapshot, or the volume snapshot it was made
      // from; only when older than what this backup reads (a diff runs forward in time).
      const fromSnap = !job.parent
        ? null
        : [backupSnapName(job.parent.backupId), job.parent.snapshotId ? `snapshot-${job.parent.snapshotId}` : null].find(
            (name): name is string => !!name && snaps.some((s) => s.name === name && s.id < readSnapId),
          ) ?? null;
      const sourceIo = rbdIo(image, job.sizeBytes);
      if (!job.parent) {
        await this.copyExtents(sourceIo, target, sourceIo.extents(), job, stats, false);
      } else if (fromSnap) {
        const objectIo = await phases.time('layout checks', async () => Number.isFinite(readSnapId) && (await objectLayout(image, volumes)) && (await objectLayout(targetImage, pool)));
        if (objectIo) await this.copyChangedObjects(image, volumes, readSnapId, targetImage, pool, fromSnap, job, stats, phases);
        else await this.copyExtents(sourceIo, target, sourceIo.extents(fromSnap), job, stats, true);
      } else {
        this.options.log(`backup ${job.backupId}: the source snapshot of parent ${job.parent.backupId} is gone; comparing the volume with the parent backup block by block`);
        await this.copyChanged(sourceIo, target, pool, imageName, parentSnap!, job, stats);
      }
    } finally {
      await phases.time('close source', () => image.close());
    }
  }

  /**
   * Copies `extents` of `source` into `target` in 4 MiB pieces: data runs are written, zero runs are
   * written as zeroes only when the target may hold something else there (`zeroRuns`).
   */
  private async copyExtents(
    source: BlockIo,
    target: BlockIo,
    extents: AsyncGenerator<Extent[]>,
    job: { sizeBytes: number; onProgress?: (done: number, total: number) => void },
    stats: { storedBytes: number; objects: Set<number> },
    zeroRuns: boolean,
  ): Promise<void> {
    let doneBytes = 0;
    await runPieces(extents, this.limits, job.sizeBytes, async (piece, buffer) => {
      if (!piece.exists) {
        if (zeroRuns) await target.zero(piece.offset, piece.length);
      } else {
        const data = buffer.subarray(0, piece.length);
        await source.read(piece.offset, data);
        await writeRuns(target, piece.offset, data, null, zeroRuns, stats);
        crashPoint('ceph-backup.piece-written');
      }
      // Extents come in volume order: how far into the volume the copy is says how much is left.
      doneBytes = Math.max(doneBytes, piece.offset + piece.length);
      job.onProgress?.(Math.min(doneBytes, job.sizeBytes), job.sizeBytes);
    });
  }

  /**
   * Incremental from RBD snapshot diffs, object by object. Scattered small changes are bound by
   * round trips, not bandwidth: through librbd each changed extent costs one read and one write.
   * Here each source object's changed extents are read in ONE librados read op (at the backup's
   * source snapshot) and, as soon as that read completes, written into the backup object in ONE
   * write op under the backup image's snapshot context (so the parent backups' snapshots keep their
   * bytes, as librbd would do), zero blocks as zeroes: IoCtx.copyObjects, native, reads of later
   * objects in flight while earlier ones are written, and no round trip through JavaScript in
   * between. Only for images whose objects are plain `<prefix>.<object number>` (no striping, no
   * data pool) and a backup image without an object map (objectLayout); else copyExtents through
   * librbd.
   */
  private async copyChangedObjects(
    source: RbdImage,
    sourcePool: IoCtx,
    readSnapId: number,
    target: RbdImage,
    targetPool: IoCtx,
    fromSnap: string,
    job: BackupJob,
    stats: { storedBytes: number; objects: Set<number> },
    phases: Phases,
  ): Promise<void> {
    const [sourceStat, targetStat] = await phases.time('layout checks', () => Promise.all([source.stat(), target.stat()]));
    const targetSnaps = await phases.time('layout checks', () => target.snapList());
    const ids = targetSnaps.map((snap) => snap.id).sort((a, b) => b - a);
    const snapc = { seq: ids[0] ?? 0, ids };
    const sourceObject = sourceStat.objectSizeBytes;
    const targetObject = targetStat.objectSizeBytes;
    // Pieces never cross an object boundary of either image: a unit is one (source object, target object) pair.
    const unit = Math.min(sourceObject, targetObject);
    const sourceRead = rbdIo(source, job.sizeBytes);
    const bytesPerCallMax = Math.max(pieceBytes, Math.floor(this.options.chunkBytes / callsInFlightMax));
    let doneBytes = 0;
    const inFlight = new Set<Promise<void>>();
    let failed: unknown = null;
    let units = new Map<string, Extent[]>();
    let unitBytes = 0;

    const countWritten = (pieces: Extent[], written: number) => {
      stats.storedBytes += written;
      if (written > 0) for (const p of pieces) if (p.exists) stats.objects.add(Math.floor(p.offset / pieceBytes));
    };
    /** A unit whose source object is not the image's own at that snapshot (a clone's parent holds it): read through librbd. */
    const copyThroughLibrbd = async (pieces: Extent[]) => {
      const extents: ObjectWrite['extents'] = [];
      let written = 0;
      for (const p of pieces) {
        const at = p.offset - Math.floor(p.offset / targetObject) * targetObject;
        if (!p.exists) {
          extents.push({ offset: at, data: p.length });
          continue;
        }
        const bytes = Buffer.allocUnsafe(p.length);
        await phases.time('read through librbd', () => sourceRead.read(p.offset, bytes));
        for (const run of blockRuns(bytes)) {
          extents.push({ offset: at + run.start, data: run.zero ? run.end - run.start : bytes.subarray(run.start, run.end) });
          if (!run.zero) written += run.end - run.start;
        }
      }
      const n = Math.floor(pieces[0]!.offset / targetObject);
      await phases.time('write through librados', () =>
        this.explain(() => targetPool.writeObjects([{ oid: objectName(targetStat.blockNamePrefix, n), extents }], snapc), `write ${target.spec}`),
      );
      countWritten(pieces, written);
    };
    const runCall = async (batch: Extent[][]) => {
      const copies = batch.map((pieces) => {
        const s = Math.floor(pieces[0]!.offset / sourceObject);
        const t = Math.floor(pieces[0]!.offset / targetObject);
        return {
          sourceOid: objectName(sourceStat.blockNamePrefix, s),
          targetOid: objectName(targetStat.blockNamePrefix, t),
          extents: pieces.map((p) => ({ sourceOffset: p.offset - s * sourceObject, targetOffset: p.offset - t * targetObject, length: p.length, zero: !p.exists })),
        };
      });
      const written = await phases.time('copy objects', () =>
        this.explain(
          () => targetPool.copyObjects(sourcePool, readSnapId, copies, snapc, { blockBytes, inFlightMax: objectsInFlightMax, bytesInFlightMax: bytesPerCallMax }),
          `copy into ${target.spec}`,
        ),
      );
      for (let i = 0; i < batch.length; i++) {
        const w = written[i];
        if (w === null || w === undefined) await copyThroughLibrbd(batch[i]!);
        else countWritten(batch[i]!, w);
      }
      for (const pieces of batch) for (const p of pieces) doneBytes = Math.max(doneBytes, p.offset + p.length);
      job.onProgress?.(Math.min(doneBytes, job.sizeBytes), job.sizeBytes);
    };
    const dispatch = async () => {
      const batch = [...units.values()];
      units = new Map();
      unitBytes = 0;
      while (inFlight.size >= callsInFlightMax) await Promise.race(inFlight);
      if (failed !== null) return;
      const running: Promise<void> = runCall(batch)
        .catch((error: unknown) => {
          failed ??= error;
        })
        .finally(() => inFlight.delete(running));
      inFlight.add(running);
    };
    const diff = source.diffIterateBatches({ fromSnap, wholeObject: false, includeParent: true });
    for (;;) {
      const next = await phases.time('diff', () => diff.next());
      if (next.done) break;
      for (const e of next.value) {
        let offset = e.offset;
        const end = Math.min(e.offset + e.length, job.sizeBytes);
        while (offset < end) {
          const length = Math.min(end - offset, unit - (offset % unit));
          const key = `${Math.floor(offset / sourceObject)}:${Math.floor(offset / targetObject)}`;
          let pieces = units.get(key);
          if (!pieces) {
            if (units.size >= objectsPerCallMax || (e.exists && unitBytes + length > bytesPerCallMax)) await dispatch();
            units.set(key, (pieces = []));
          }
          pieces.push({ offset, length, exists: e.exists });
          if (e.exists) unitBytes += length;
          offset += length;
        }
      }
      if (failed !== null) {
        await diff.return(undefined).catch(() => undefined);
        break;
      }
    }
    if (units.size > 0 && failed === null) await dispatch();
    await Promise.all(inFlight);
    if (failed !== null) throw failed;
    crashPoint('ceph-backup.piece-written');
  }

  /** Incremental by comparison: reads the source and the parent backup side by side, writes the 4 KiB blocks that differ. */
  private async copyChanged(
    source: BlockIo,
    target: BlockIo,
    pool: IoCtx,
    imageName: string,
    parentSnap: string,
    job: BackupJob,
    stats: { storedBytes: number; objects: Set<number> },
  ): Promise<void> {
    const parent = await pool.openImage(imageName, { snapshot: parentSnap });
    try {
      const parentIo = rbdIo(parent, await parent.size());
      let doneBytes = 0;
      await runPieces(wholeRange(job.sizeBytes), { ...this.limits, reference: true }, job.sizeBytes, async (piece, buffer, reference) => {
        const data = buffer.subarray(0, piece.length);
        const before = reference.subarray(0, piece.length);
        await Promise.all([source.read(piece.offset, data), readOrZero(parentIo, piece.offset, before)]);
        await writeRuns(target, piece.offset, data, before, true, stats);
        doneBytes += piece.length;
        job.onProgress?.(doneBytes, job.sizeBytes);
      });
    } finally {
      await parent.close();
    }
  }

  // ------------------------------------------------------------ restore --

  async restore(job: RestoreJob): Promise<void> {
    const pool = await this.backupPool();
    const imageName = backupImageName(job.volumeId, job.chainRootId);
    const snap = backupSnapName(job.backupId);
    let backup: RbdImage;
    try {
      backup = await this.explain(() => pool.openImage(imageName, { snapshot: snap }), `open ${imageName}@${snap}`);
    } catch (error) {
      if (error instanceof RbdError && error.code === 'ENOENT') {
        throw new DriverError('NotFound', `backup ${job.backupId} is gone from Ceph: ${this.options.pool}/${imageName}@${snap} does not exist`);
      }
      throw error;
    }
    let target: BlockIo | null = null;
    try {
      const backupIo = rbdIo(backup, job.sizeBytes);
      target = await this.openTarget(job.target);
      if (target.sizeBytes < job.sizeBytes) {
        throw new DriverError('Invalid', `restore target is ${target.sizeBytes} bytes, smaller than backup ${job.backupId} (${job.sizeBytes} bytes)`);
      }
      const zeroGaps = !job.targetIsZeroed;
      const stats = { storedBytes: 0, objects: new Set<number>() };
      const tgt = target;
      const differing = job.target.kind === 'rbd' && !job.targetIsZeroed ? await this.differingSinceBackup(job, pool, imageName) : null;
      if (differing) {
        // Over the volume the chain was taken from: only the extents that can differ, and of
        // those only the 4 KiB blocks that do (compared with what the volume holds now).
        this.options.log(`restore of backup ${job.backupId}: over its own volume, rewriting ${differing.bytes} bytes that may differ`);
        await runPieces(listed(differing.extents), { ...this.limits, reference: true }, job.sizeBytes, async (piece, buffer, reference) => {
          const data = buffer.subarray(0, piece.length);
          const now = reference.subarray(0, piece.length);
          await Promise.all([backupIo.read(piece.offset, data), tgt.read(piece.offset, now)]);
          await writeRuns(tgt, piece.offset, data, now, true, stats);
          job.onProgress?.(Math.min(piece.offset + piece.length, job.sizeBytes), job.sizeBytes);
        });
        this.lastRestoreWrittenBytes = stats.storedBytes;
        return;
      }
      let doneBytes = 0;
      // Allocated extents of the backup, with the holes between them as zero extents when the target is not known zero.
      async function* withGaps(): AsyncGenerator<Extent[]> {
        let cursor = 0;
        for await (const batch of backupIo.extents()) {
          const out: Extent[] = [];
          for (const e of batch) {
            if (zeroGaps && e.offset > cursor) out.push({ offset: cursor, length: e.offset - cursor, exists: false });
            out.push(e);
            cursor = Math.max(cursor, e.offset + e.length);
          }
          yield out;
        }
        if (zeroGaps && cursor < job.sizeBytes) yield [{ offset: cursor, length: job.sizeBytes - cursor, exists: false }];
      }
      await runPieces(withGaps(), this.limits, job.sizeBytes, async (piece, buffer) => {
        if (!piece.exists) {
          await tgt.zero(piece.offset, piece.length);
        } else {
          const data = buffer.subarray(0, piece.length);
          await backupIo.read(piece.offset, data);
          await writeRuns(tgt, piece.offset, data, null, zeroGaps, stats);
        }
        doneBytes = Math.max(doneBytes, piece.offset + piece.length);
        job.onProgress?.(Math.min(doneBytes, job.sizeBytes), job.sizeBytes);
      });
      if (job.discardExcess && !job.targetIsZeroed && target.sizeBytes > job.sizeBytes) {
        await target.zero(job.sizeBytes, target.sizeBytes - job.sizeBytes);
      }
    } finally {
      await target?.close();
      await backup.close();
    }
  }

  /**
   * When the restore target is the RBD volume this backup's chain was taken from, the extents
   * where the volume may differ from the backup, else null (restore everything). The volume keeps
   * the source snapshot `backup.<X>.snap` of the chain head's backup X, and the backup image holds
   * the snapshot of the same name, with the same bytes (X copied them). So the volume now differs
   * from backup K only where it changed since that snapshot (rbd_diff_iterate2 on the volume from
   * it) or where backups K and X differ (rbd_diff_iterate2 between their snapshots on the backup
   * image). Sizes must all match; any doubt returns null.
   */
  private async differingSinceBackup(job: RestoreJob, pool: IoCtx, imageName: string): Promise<{ extents: Extent[]; bytes: number } | null> {
    const target = job.target;
    if (target.kind !== 'rbd' || target.snapshot !== null) return null;
    const volumes = await this.sourcePool(target.client, target.pool);
    return volumes.withImage(target.image, {}, async (volume) => {
      if ((await volume.size()) !== job.sizeBytes) return null;
      const backupSnaps = await pool.withImage(imageName, { readOnly: true }, (image) => image.snapList());
      const wanted = backupSnaps.find((snap) => snap.name === backupSnapName(job.backupId));
      const shared = (await volume.snapList()).find(
        (snap) => backupSnapPattern.test(snap.name) && snap.sizeBytes === job.sizeBytes && backupSnaps.some((b) => b.name === snap.name && b.sizeBytes === job.sizeBytes),
      );
      if (!wanted || wanted.sizeBytes !== job.sizeBytes || !shared) return null;
      const extents: Extent[] = [];
      for await (const batch of volume.diffIterateBatches({ fromSnap: shared.name, wholeObject: false, includeParent: true })) extents.push(...batch);
      const sharedInBackup = backupSnaps.find((b) => b.name === shared.name)!;
      if (sharedInBackup.id !== wanted.id) {
        const [older, newer] = sharedInBackup.id < wanted.id ? [sharedInBackup, wanted] : [wanted, sharedInBackup];
        await pool.withImage(imageName, { snapshot: newer.name }, async (image) => {
          for await (const batch of image.diffIterateBatches({ fromSnap: older.name, wholeObject: false, includeParent: true })) extents.push(...batch);
        });
      }
      const merged = mergeExtents(extents);
      return { extents: merged, bytes: merged.reduce((sum, e) => sum + e.length, 0) };
    });
  }

  /** Data bytes the last restore over its own volume wrote (for tests and the bench). */
  lastRestoreWrittenBytes = 0;

  private async openTarget(target: VolumeSource): Promise<BlockIo> {
    if (target.kind === 'file') return fileIo(target.path, target.sizeBytes, 'r+');
    const volumes = await this.sourcePool(target.client, target.pool);
    const image = await volumes.openImage(target.image);
    return rbdIo(image, await image.size(), true);
  }

  // ------------------------------------------------------------- delete --

  async delete(ref: BackupRef, source: VolumeSource | null): Promise<void> {
    const snap = backupSnapName(ref.backupId);
    if (source?.kind === 'rbd' && source.snapshot === null) {
      try {
        const volumes = await this.sourcePool(source.client, source.pool);
        await volumes.withImage(source.image, {}, async (image) => {
          if ((await image.snapList()).some((s) => s.name === snap)) await image.snapRemove(snap);
        });
      } catch (error) {
        if (!(error instanceof RbdError && error.code === 'ENOENT')) throw error;
      }
    }
    const pool = await this.backupPool();
    const imageName = backupImageName(ref.volumeId, ref.chainRootId);
    let remaining: number;
    try {
      remaining = await pool.withImage(imageName, {}, async (image) => {
        const snaps = await image.snapList();
        if (snaps.some((s) => s.name === snap)) await this.explain(() => image.snapRemove(snap), `remove ${imageName}@${snap}`);
        return snaps.filter((s) => s.name !== snap).length;
      });
    } catch (error) {
      if (error instanceof RbdError && error.code === 'ENOENT') return;
      throw error;
    }
    if (remaining === 0) await this.removeImage(pool, imageName);
  }

  /** Removes an image with its snapshots; succeeds if already gone. */
  private async removeImage(pool: IoCtx, name: string): Promise<void> {
    try {
      await pool.withImage(name, {}, async (image) => {
        for (const s of await image.snapList()) await image.snapRemove(s.name);
      });
      const deadline = Date.now() + busyRetryMs;
      for (;;) {
        try {
          await this.explain(() => pool.removeImage(name), `remove ${name}`);
          break;
        } catch (error) {
          if (!(error instanceof RbdError && error.code === 'EBUSY') || Date.now() > deadline) throw error;
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      }
    } catch (error) {
      if (error instanceof RbdError && error.code === 'ENOENT') return;
      throw error;
    }
  }
}

// ------------------------------------------------------------ helpers --

/** The snapshot a backup reads its RBD source at; `taken` when the driver made it (not a volume snapshot). */
interface SourceSnapshot {
  volumes: IoCtx;
  readSnap: string;
  taken: boolean;
}

/** Only the chain head's source snapshot is needed for the next incremental (Cinder keeps just the newest too). */
async function removeOlderSourceSnapshots(taken: SourceSnapshot, source: Extract<VolumeSource, { kind: 'rbd' }>): Promise<void> {
  await taken.volumes.withImage(source.image, {}, async (live) => {
    for (const snap of await live.snapList()) {
      if (backupSnapPattern.test(snap.name) && snap.name !== taken.readSnap) await live.snapRemove(snap.name).catch(() => undefined);
    }
  });
}

/**
 * A batched incremental's native calls: objects per call (the native limit is 1,024), calls at once
 * (each waits on one thread of libuv's pool), objects read or written at once per call.
 */
const objectsPerCallMax = 256;
const callsInFlightMax = 2;
const objectsInFlightMax = 128;

/** The RADOS object holding object number `n` of an image (format 2, no striping). */
function objectName(blockNamePrefix: string, n: number): string {
  return `${blockNamePrefix}.${n.toString(16).padStart(16, '0')}`;
}

/**
 * True when object `n` of the image is `<prefix>.<n>` in `pool` itself and writing its objects
 * directly leaves librbd's metadata right: no striping, no separate data pool, no object map
 * (which librbd would have to update for each new object), no journaling.
 */
async function objectLayout(image: RbdImage, pool: IoCtx): Promise<boolean> {
  const [stat, features] = await Promise.all([image.stat(), image.features()]);
  const plain = (stat.stripeCount === 1 && stat.stripeUnit === stat.objectSizeBytes) && stat.dataPoolId === pool.poolId;
  const metadataFree = image.snapshot !== null || (features & (RBD_FEATURE_OBJECT_MAP | RBD_FEATURE_JOURNALING)) === 0;
  return plain && metadataFree;
}

/** Splits `data` into runs of 4 KiB blocks that are all zero or all not. */
function blockRuns(data: Buffer): { start: number; end: number; zero: boolean }[] {
  const runs: { start: number; end: number; zero: boolean }[] = [];
  for (let start = 0; start < data.length; start += blockBytes) {
    const end = Math.min(data.length, start + blockBytes);
    const zero = data.compare(zeroBlock, 0, end - start, start, end) === 0;
    const last = runs[runs.length - 1];
    if (last && last.zero === zero) last.end = end;
    else runs.push({ start, end, zero });
  }
  return runs;
}

function rbdIo(image: RbdImage, sizeBytes: number, owned = false): BlockIo {
  return {
    sizeBytes,
    async read(offset, target) {
      const got = await image.readInto(offset, target);
      if (got < target.length) target.fill(0, got);
    },
    write: (offset, data) => image.write(offset, data),
    zero: (offset, length) => image.writeZeroes(offset, length),
    extents: (fromSnap) => image.diffIterateBatches({ ...(fromSnap ? { fromSnap } : {}), wholeObject: false, includeParent: true }),
    close: async () => {
      if (owned) {
        await image.flush();
        await image.close();
      }
    },
  };
}

async function fileIo(path: string, sizeBytes: number, mode: 'r' | 'r+'): Promise<BlockIo> {
  const fh = await open(path, mode);
  const fileSize = (await stat(path)).size;
  const size = mode === 'r' ? sizeBytes : fileSize;
  return {
    sizeBytes: size,
    read: (offset, target) => readFully(fh, target, offset),
    write: (offset, data) => writeFully(fh, data, offset),
    zero: (offset, length) => zeroFileRange(fh, path, offset, length, pieceBytes),
    extents: () => wholeRange(size),
    close: async () => {
      if (mode === 'r+') await fh.sync();
      await fh.close();
    },
  };
}

async function* listed(extents: Extent[]): AsyncGenerator<Extent[]> {
  if (extents.length > 0) yield extents;
}

/** Sorted, overlapping and touching extents joined; all marked as existing (what they hold is read from the backup). */
function mergeExtents(extents: Extent[]): Extent[] {
  const sorted = [...extents].sort((a, b) => a.offset - b.offset);
  const out: Extent[] = [];
  for (const e of sorted) {
    const last = out[out.length - 1];
    if (last && e.offset <= last.offset + last.length) last.length = Math.max(last.length, e.offset + e.length - last.offset);
    else out.push({ offset: e.offset, length: e.length, exists: true });
  }
  return out;
}

async function* wholeRange(sizeBytes: number): AsyncGenerator<Extent[]> {
  yield [{ offset: 0, length: sizeBytes, exists: true }];
}

async function readOrZero(io: BlockIo, offset: number, target: Buffer): Promise<void> {
  if (offset >= io.sizeBytes) {
    target.fill(0);
    return;
  }
  const inside = Math.min(target.length, io.sizeBytes - offset);
  await io.read(offset, target.subarray(0, inside));
  if (inside < target.length) target.fill(0, inside);
}

interface Piece extends Extent {}

interface PieceLimits {
  operationsMax: number;
  /** The task compares with what the target holds: it gets a second buffer. */
  reference?: boolean;
  /** Bytes of piece buffers held at once. */
  bytesMax: number;
}

/**
 * Splits the data extents into pieces of at most 4 MiB that do not cross a 4 MiB boundary and runs
 * `task` on them, at most `operationsMax` at once and with at most `bytesMax` bytes of buffers
 * (`buffer`, and `reference` for comparisons, each the piece's length).
 */
async function runPieces(
  extents: AsyncGenerator<Extent[]>,
  limits: PieceLimits,
  limitBytes: number,
  task: (piece: Piece, buffer: Buffer, reference: Buffer) => Promise<void>,
): Promise<void> {
  const pending: Piece[] = [];
  let exhausted = false;
  let failed: unknown = null;
  let refilling: Promise<void> | null = null;
  let bytesHeld = 0;
  let wake: (() => void)[] = [];
  const refill = async () => {
    const next = await extents.next();
    if (next.done) {
      exhausted = true;
      return;
    }
    for (const e of next.value) {
      let offset = e.offset;
      const end = Math.min(e.offset + e.length, limitBytes);
      // A zero extent is one call however long (rbd_write_zeroes, or one punched hole in a file).
      if (!e.exists && end > offset) {
        pending.push({ offset, length: end - offset, exists: false });
        continue;
      }
      while (offset < end) {
        const length = Math.min(end - offset, pieceBytes - (offset % pieceBytes));
        pending.push({ offset, length, exists: e.exists });
        offset += length;
      }
    }
  };
  const take = async (): Promise<Piece | null> => {
    while (pending.length === 0 && !exhausted) {
      refilling ??= refill().finally(() => (refilling = null));
      await refilling;
    }
    return pending.shift() ?? null;
  };
  const worker = async () => {
    while (failed === null) {
      const piece = await take();
      if (!piece) return;
      const bytes = piece.exists ? (limits.reference ? 2 : 1) * piece.length : 0;
      while (bytesHeld > 0 && bytesHeld + bytes > limits.bytesMax) await new Promise<void>((resolve) => wake.push(resolve));
      bytesHeld += bytes;
      try {
        const buffer = piece.exists ? Buffer.allocUnsafe(piece.length) : emptyBuffer;
        await task(piece, buffer, piece.exists && limits.reference ? Buffer.allocUnsafe(piece.length) : emptyBuffer);
      } catch (error) {
        failed ??= error;
      } finally {
        bytesHeld -= bytes;
        const waiting = wake;
        wake = [];
        for (const resolve of waiting) resolve();
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: limits.operationsMax }, worker));
  } catch (error) {
    failed ??= error;
  }
  if (failed !== null) {
    await extents.return(undefined).catch(() => undefined);
    throw failed;
  }
}

const emptyBuffer = Buffer.alloc(0);

/**
 * Writes `data` (at `offset`) into `target` in runs of 4 KiB blocks: blocks equal to `reference`
 * (what the target already holds, when known) are skipped; zero blocks are written as zeroes only
 * when `zeroRuns`; the rest is written as data. Counts data bytes and the 4 MiB objects touched.
 */
async function writeRuns(
  target: BlockIo,
  offset: number,
  data: Buffer,
  reference: Buffer | null,
  zeroRuns: boolean,
  stats: { storedBytes: number; objects: Set<number> },
): Promise<void> {
  type Kind = 'skip' | 'zero' | 'data';
  const writes: Promise<void>[] = [];
  let runKind: Kind = 'skip';
  let runStart = 0;
  const flush = (end: number) => {
    if (end <= runStart) return;
    const at = offset + runStart;
    const length = end - runStart;
    if (runKind === 'data') {
      writes.push(target.write(at, data.subarray(runStart, end)));
      stats.storedBytes += length;
      for (let o = Math.floor(at / pieceBytes); o <= Math.floor((at + length - 1) / pieceBytes); o++) stats.objects.add(o);
    } else if (runKind === 'zero') {
      writes.push(target.zero(at, length));
    }
  };
  for (let start = 0; start < data.length; start += blockBytes) {
    const end = Math.min(data.length, start + blockBytes);
    let kind: Kind;
    if (reference && data.compare(reference, start, end, start, end) === 0) kind = 'skip';
    else if (data.compare(zeroBlock, 0, end - start, start, end) === 0) kind = zeroRuns ? 'zero' : 'skip';
    else kind = 'data';
    if (kind !== runKind) {
      flush(start);
      runKind = kind;
      runStart = start;
    }
  }
  flush(data.length);
  await Promise.all(writes);
}

async function readFully(fh: FileHandle, target: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < target.length) {
    const { bytesRead } = await fh.read(target, done, target.length - done, position + done);
    if (bytesRead === 0) {
      target.fill(0, done); // past the end of a file shorter than the volume: zeros, as the volume reads
      return;
    }
    done += bytesRead;
  }
}

