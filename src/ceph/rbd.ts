/**
 * Ceph RBD through librados/librbd: the TypeScript face of the native addon in
 * native/ (built by `npm run build:native` into native/build/Release/pumice_rbd.node).
 *
 * Every call that can block runs off the event loop: metadata calls on the
 * libuv thread pool, reads and writes as librbd aio (so many I/Os can be in
 * flight on one image). Every method returns a Promise. Failures are RbdError
 * with `code` (errno name such as 'ENOENT'), `errno` (positive) and
 * `operation` (the librados/librbd call, e.g. 'rbd_clone3').
 *
 * Lifetimes: an image does not depend on the IoCtx it was opened from (librbd
 * keeps its own copy), but both depend on their RadosCluster.
 * `RadosCluster.shutdown()` closes what is still open (waiting for I/O in
 * flight) and then frees the cluster handle. `RbdImage.close()` waits for the
 * image's operations in flight; calls made after close() are refused (EBADF).
 *
 * The addon is loaded lazily, so importing this module never needs Ceph.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

// ------------------------------------------------------------- features --

export const RBD_FEATURE_LAYERING = 1;
export const RBD_FEATURE_STRIPINGV2 = 2;
export const RBD_FEATURE_EXCLUSIVE_LOCK = 4;
export const RBD_FEATURE_OBJECT_MAP = 8;
export const RBD_FEATURE_FAST_DIFF = 16;
export const RBD_FEATURE_DEEP_FLATTEN = 32;
export const RBD_FEATURE_JOURNALING = 64;
export const RBD_FEATURE_DATA_POOL = 128;
/** Ceph's default feature set (`rbd default features = 61`). */
export const RBD_FEATURES_DEFAULT =
  RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_OBJECT_MAP | RBD_FEATURE_FAST_DIFF | RBD_FEATURE_DEEP_FLATTEN;

/** Names of the feature bits set in `features`, as `rbd info` prints them. */
export function featureNames(features: number): string[] {
  const names: [number, string][] = [
    [RBD_FEATURE_LAYERING, 'layering'],
    [RBD_FEATURE_STRIPINGV2, 'striping'],
    [RBD_FEATURE_EXCLUSIVE_LOCK, 'exclusive-lock'],
    [RBD_FEATURE_OBJECT_MAP, 'object-map'],
    [RBD_FEATURE_FAST_DIFF, 'fast-diff'],
    [RBD_FEATURE_DEEP_FLATTEN, 'deep-flatten'],
    [RBD_FEATURE_JOURNALING, 'journaling'],
    [RBD_FEATURE_DATA_POOL, 'data-pool'],
  ];
  return names.filter(([bit]) => (features & bit) !== 0).map(([, n]) => n);
}

// ---------------------------------------------------------------- errors --

export class RbdError extends Error {
  override name = 'RbdError';
  /** errno name: 'ENOENT', 'EPERM', 'EBUSY', 'ETIMEDOUT', ... */
  readonly code: string;
  /** positive errno */
  readonly errno: number;
  /** the librados/librbd call that failed, e.g. 'rbd_open' */
  readonly operation: string;
  /** what it was called on, e.g. 'volumes/volume-1' */
  readonly subject: string | undefined;
  /** extra detail, e.g. a monitor's status string */
  readonly detail: string | undefined;

  constructor(message: string, fields: { code: string; errno: number; operation: string; subject?: string; detail?: string }) {
    super(message);
    this.code = fields.code;
    this.errno = fields.errno;
    this.operation = fields.operation;
    this.subject = fields.subject;
    this.detail = fields.detail;
  }
}

/** Thrown when native/build/Release/pumice_rbd.node is absent or cannot load. */
export class CephBindingMissingError extends Error {
  override name = 'CephBindingMissingError';
  readonly code = 'CEPH_BINDING_MISSING';
}

function isNativeError(e: unknown): e is Error & { code: string; errno: number; operation: string; subject?: string; detail?: string } {
  return e instanceof Error && typeof (e as { operation?: unknown }).operation === 'string' && typeof (e as { errno?: unknown }).errno === 'number';
}

/** Awaits a native promise; turns its errors into RbdError. */
async function call<T>(p: () => Promise<T>): Promise<T> {
  try {
    return await p();
  } catch (e) {
    if (isNativeError(e)) {
      throw new RbdError(e.message, { code: e.code, errno: e.errno, operation: e.operation, subject: e.subject, detail: e.detail });
    }
    throw e;
  }
}

// ------------------------------------------------------- native surface --

interface NativePoolStat {
  numBytes: number; numKb: number; numObjects: number; numObjectClones: number; numObjectCopies: number;
  numObjectsMissingOnPrimary: number; numObjectsUnfound: number; numObjectsDegraded: number;
  numRd: number; numRdKb: number; numWr: number; numWrKb: number; numUserBytes: number;
  compressedBytesOrig: number; compressedBytes: number; compressedBytesAlloc: number;
}
interface NativeLinked { poolId: number; pool: string; namespace: string; imageId: string; image: string; trash: boolean }
interface NativeCluster {
  fsid(): Promise<string>;
  clusterStat(): Promise<{ kb: number; kbUsed: number; kbAvail: number; numObjects: number }>;
  monCommand(cmd: string, inbuf?: Buffer): Promise<{ outbuf: Buffer; outs: string }>;
  poolStat(pool: string): Promise<NativePoolStat>;
  openIoctx(pool: string): Promise<NativeIoctx>;
  getAddrs(): Promise<string>;
  instanceId(): Promise<number>;
  openHandles(): number;
  shutdown(): Promise<void>;
}
interface NativeIoctx {
  poolName(): string;
  poolId(): number;
  createImage(name: string, size: number, features: number | null, order: number | null, stripeUnit: number | null, stripeCount: number | null, dataPool: string | null): Promise<void>;
  removeImage(name: string): Promise<void>;
  renameImage(from: string, to: string): Promise<void>;
  listImages(): Promise<{ id: string; name: string }[]>;
  openImage(name: string, snapshot: string | null, readOnly: boolean): Promise<NativeImage>;
  clone(parent: NativeIoctx, parentImage: string, parentSnap: string, childName: string, features: number | null, order: number | null, cloneFormat: number | null): Promise<void>;
  trashMove(name: string, delaySeconds: number): Promise<void>;
  trashList(): Promise<TrashEntry[]>;
  trashRemove(id: string, force: boolean): Promise<void>;
  trashRestore(id: string, newName: string): Promise<void>;
  groupCreate(group: string): Promise<void>;
  groupRemove(group: string): Promise<void>;
  groupList(): Promise<string[]>;
  groupImageAdd(group: string, image: string): Promise<void>;
  groupImageRemove(group: string, image: string): Promise<void>;
  groupImageList(group: string): Promise<GroupImage[]>;
  groupSnapCreate(group: string, snap: string, flags: number): Promise<void>;
  groupSnapRemove(group: string, snap: string): Promise<void>;
  groupSnapList(group: string): Promise<GroupSnap[]>;
  readObjects(snapId: number | null, oids: string[], extents: number[][], target: Buffer): Promise<number[]>;
  writeObjects(snapSeq: number, snapIds: number[], oids: string[], extents: number[][], data: Buffer): Promise<void>;
  copyObjects(source: NativeIoctx, readSnapId: number, snapSeq: number, snapIds: number[], srcOids: string[], dstOids: string[], extents: number[][], blockBytes: number, inFlightMax: number, bytesInFlightMax: number): Promise<number[]>;
  close(): Promise<void>;
}
interface NativeImage {
  spec(): string;
  inFlight(): number;
  stat(): Promise<{ size: number; objSize: number; numObjs: number; order: number; blockNamePrefix: string; id: string; dataPoolId: number; stripeUnit: number; stripeCount: number }>;
  features(): Promise<number>;
  resize(size: number): Promise<void>;
  snapCreate(name: string): Promise<void>;
  snapRemove(name: string): Promise<void>;
  snapProtect(name: string): Promise<void>;
  snapUnprotect(name: string): Promise<void>;
  snapIsProtected(name: string): Promise<boolean>;
  snapList(): Promise<{ id: number; name: string; size: number }[]>;
  snapRollback(name: string): Promise<void>;
  snapRename(from: string, to: string): Promise<void>;
  flatten(onProgress?: (offset: number, total: number) => void): Promise<void>;
  listChildren(): Promise<NativeLinked[]>;
  parentInfo(): Promise<(NativeLinked & { snapshotId: number; snapshot: string }) | null>;
  diffIterate(fromSnap: string | null, offset: number, length: number, includeParent: boolean, wholeObject: boolean, maxExtents: number): Promise<{ extents: Extent[]; more: boolean; nextOffset: number }>;
  read(offset: number, length: number, target?: Uint8Array): Promise<Buffer | number>;
  write(offset: number, data: Uint8Array): Promise<void>;
  discard(offset: number, length: number): Promise<void>;
  writeZeroes(offset: number, length: number): Promise<void>;
  flush(): Promise<void>;
  lockOwners(): Promise<{ mode: LockMode; owners: string[] }>;
  lockBreak(mode: LockMode, owner: string): Promise<void>;
  lockAcquire(mode: LockMode): Promise<void>;
  lockRelease(): Promise<void>;
  isExclusiveLockOwner(): Promise<boolean>;
  getGroup(): Promise<{ poolId: number; name: string } | null>;
  snapGroupNamespace(snapId: number): Promise<SnapGroupNamespace | null>;
  snapSetById(snapId: number | null): Promise<void>;
  close(): Promise<void>;
}
interface NativeAddon {
  connect(opts: { confPath: string; name: string; keyringPath?: string; config?: Record<string, string> }): Promise<NativeCluster>;
  errnoName(errno: number): string;
  versions(): { librbd: string; librados: string };
}

// --------------------------------------------------------------- loading --

/** Where `npm run build:native` puts the addon. */
export const BINDING_PATH = fileURLToPath(new URL('../../native/build/Release/pumice_rbd.node', import.meta.url));
const BUILD_HINT = 'install the Debian packages `librbd-dev librados-dev` and run `npm run build:native`';

let addon: NativeAddon | undefined;

/** The native addon; throws CephBindingMissingError when it is not built. */
export function loadBinding(): NativeAddon {
  if (addon) return addon;
  if (!existsSync(BINDING_PATH)) {
    throw new CephBindingMissingError(`the Ceph binding is not built (${BINDING_PATH} is missing): ${BUILD_HINT}`);
  }
  try {
    addon = createRequire(import.meta.url)(BINDING_PATH) as NativeAddon;
  } catch (e) {
    throw new CephBindingMissingError(`the Ceph binding is not built or cannot load (${(e as Error).message}): ${BUILD_HINT}`);
  }
  return addon;
}

/** True when the addon is built and loads (librbd/librados present). */
export function bindingAvailable(): boolean {
  try {
    loadBinding();
    return true;
  } catch {
    return false;
  }
}

/** Versions of the librbd and librados the addon runs against. */
export function libraryVersions(): { librbd: string; librados: string } {
  return loadBinding().versions();
}

// ------------------------------------------------------------------ types --

export interface ConnectOptions {
  /** ceph.conf path */
  confPath: string;
  /** 'cinder' or 'client.cinder' */
  user: string;
  /** keyring path; otherwise ceph.conf's `keyring` setting */
  keyringPath?: string;
  /**
   * Sets client_mount_timeout, rados_mon_op_timeout and rados_osd_op_timeout:
   * connecting, monitor commands and every OSD operation (I/O included) fail
   * with ETIMEDOUT after this many seconds instead of waiting forever.
   */
  connectTimeoutSeconds?: number;
  /** Overrides rados_mon_op_timeout and rados_osd_op_timeout (0: wait forever). */
  opTimeoutSeconds?: number;
  /** Further Ceph options (`rados_conf_set`), applied last. */
  config?: Record<string, string>;
}

export interface ClusterStats {
  kb: number;
  kbUsed: number;
  kbAvail: number;
  numObjects: number;
  totalBytes: number;
  usedBytes: number;
  availBytes: number;
}

export type PoolStats = NativePoolStat;

export interface MonCommandResult {
  outbuf: Buffer;
  outs: string;
  /** outbuf parsed as JSON when it is JSON, else undefined */
  json: unknown;
}

export interface CreateImageOptions {
  /** object size as a power of two (22 = 4 MiB); 12..26 */
  orderBits?: number;
  /** object size in bytes (a power of two); alternative to orderBits */
  objectSizeBytes?: number;
  /** feature bits (RBD_FEATURE_*); Ceph's `rbd default features` when absent */
  features?: number;
  stripeUnit?: number;
  stripeCount?: number;
  dataPool?: string;
}

export interface OpenImageOptions {
  readOnly?: boolean;
  /** open at this snapshot (read-only view) */
  snapshot?: string;
}

export interface CloneOptions {
  /** the parent's pool; this IoCtx when absent */
  parentIoctx?: IoCtx;
  parentImage: string;
  parentSnap: string;
  childName: string;
  features?: number;
  orderBits?: number;
  /** 1: needs a protected snapshot (default for luminous clusters); 2: does not */
  cloneFormat?: 1 | 2;
}

export interface ImageStat {
  sizeBytes: number;
  objectSizeBytes: number;
  order: number;
  numObjects: number;
  blockNamePrefix: string;
  id: string;
  /** The pool holding the data objects (the image's own pool unless created with a data pool). */
  dataPoolId: number;
  stripeUnit: number;
  stripeCount: number;
}

/** Byte ranges of one RADOS object, read or written in one OSD operation (IoCtx.readObjects/writeObjects). */
export interface ObjectExtents {
  oid: string;
  /** [offset, length] within the object. */
  extents: [number, number][];
}

export interface ObjectWrite {
  oid: string;
  /** `data` is written at offset; a number zeroes that many bytes there. */
  extents: { offset: number; data: Buffer | number }[];
}

/** Extents of one source object copied into one target object (IoCtx.copyObjects). */
export interface ObjectCopy {
  sourceOid: string;
  targetOid: string;
  /** Copies `length` bytes from `sourceOffset` in the source object to `targetOffset` in the target object; `zero` zeroes the target range instead (nothing read). */
  extents: { sourceOffset: number; targetOffset: number; length: number; zero?: boolean }[];
}

export interface CopyObjectsOptions {
  /** Zero detection granularity: runs of whole blocks of zeros are written as zeroes, not data (default 4 KiB). */
  blockBytes?: number;
  /** Objects (read + write) in flight at once (default 64). */
  inFlightMax?: number;
  /** Bytes of read buffers held at once (default 64 MiB; one object is always allowed). */
  bytesInFlightMax?: number;
}

/** The snapshots a write must preserve: seq is the newest snapshot id ever made, ids newest first. */
export interface SnapContext {
  seq: number;
  ids: number[];
}

export interface SnapInfo {
  id: number;
  name: string;
  sizeBytes: number;
}

export interface ImageRef {
  pool: string;
  image: string;
  poolId: number;
  namespace: string;
  imageId: string;
  trash: boolean;
}

export interface ParentInfo extends ImageRef {
  snapshot: string;
  snapshotId: number;
}

export interface Extent {
  offset: number;
  length: number;
  /** false: the extent was discarded/zeroed (hole) since fromSnap */
  exists: boolean;
}

export interface DiffOptions {
  /** changes since this snapshot; everything allocated when absent */
  fromSnap?: string;
  offset?: number;
  /** bytes from offset; to the end of the image when absent */
  length?: number;
  /** also report the parent's data (full history of a clone); default true */
  includeParent?: boolean;
  /** report whole objects (fast with fast-diff); default false */
  wholeObject?: boolean;
  /** extents per native call (bounds memory); default 16384 */
  batchSize?: number;
  /** diffIterate() fails with E2BIG past this many extents; default 1,000,000 */
  maxExtents?: number;
}

export type LockMode = 'exclusive' | 'shared';

/** An image in a pool's RBD trash (rbd_trash_list). */
export interface TrashEntry {
  /** the image id: what trashRemove/trashRestore take */
  id: string;
  /** the image's name when it was moved */
  name: string;
  /**
   * who moved it: 'user' (trashMove), 'mirroring', 'migration', 'removing'
   * (an rbd_remove in progress) or 'user_parent' (a clone parent removed with
   * rbd_move_parent_to_trash_on_remove); 'unknown' otherwise
   */
  source: string;
  /** when it was moved, Unix time in seconds */
  deletionTime: number;
  /** Unix time in seconds before which trashRemove needs force */
  deferredUntil: number;
}

export interface LockOwners {
  mode: LockMode;
  owners: string[];
}

function orderFrom(opts: { orderBits?: number; objectSizeBytes?: number }): number | null {
  if (opts.orderBits !== undefined) {
    if (!Number.isInteger(opts.orderBits) || opts.orderBits < 12 || opts.orderBits > 26) {
      throw new RangeError(`orderBits ${opts.orderBits}: use 12 (4 KiB objects) to 26 (64 MiB)`);
    }
    return opts.orderBits;
  }
  if (opts.objectSizeBytes !== undefined) {
    const bits = Math.log2(opts.objectSizeBytes);
    if (!Number.isInteger(bits) || bits < 12 || bits > 26) {
      throw new RangeError(`objectSizeBytes ${opts.objectSizeBytes}: use a power of two from 4 KiB to 64 MiB`);
    }
    return bits;
  }
  return null;
}

function refOf(l: NativeLinked): ImageRef {
  return { pool: l.pool, image: l.image, poolId: l.poolId, namespace: l.namespace, imageId: l.imageId, trash: l.trash };
}

function localError(code: string, errno: number, operation: string, subject: string, message: string): RbdError {
  return new RbdError(`${operation} ${subject}: ${message} (${code})`, { code, errno, operation, subject });
}

// ---------------------------------------------------------------- cluster --

export class RadosCluster {
  readonly user: string;
  readonly confPath: string;
  private readonly native: NativeCluster;
  private readonly ioctxs = new Set<IoCtx>();
  private readonly images = new Set<RbdImage>();
  private shutdownPromise: Promise<void> | undefined;

  private constructor(native: NativeCluster, user: string, confPath: string) {
    this.native = native;
    this.user = user;
    this.confPath = confPath;
  }

  /** Connects as `user` (rados_create2 + conf + rados_connect, off the event loop). */
  static async connect(opts: ConnectOptions): Promise<RadosCluster> {
    const binding = loadBinding();
    const name = opts.user.startsWith('client.') ? opts.user : `client.${opts.user}`;
    const config: Record<string, string> = {};
    if (opts.connectTimeoutSeconds !== undefined) {
      const s = String(opts.connectTimeoutSeconds);
      config.client_mount_timeout = s;
      config.rados_mon_op_timeout = s;
      config.rados_osd_op_timeout = s;
    }
    if (opts.opTimeoutSeconds !== undefined) {
      config.rados_mon_op_timeout = String(opts.opTimeoutSeconds);
      config.rados_osd_op_timeout = String(opts.opTimeoutSeconds);
    }
    Object.assign(config, opts.config ?? {});
    const native = await call(() =>
      binding.connect({ confPath: opts.confPath, name, ...(opts.keyringPath ? { keyringPath: opts.keyringPath } : {}), config }),
    );
    return new RadosCluster(native, name, opts.confPath);
  }

  /** @internal */
  get nativeHandle(): NativeCluster {
    return this.native;
  }

  /** Number of ioctxs and images still open on this connection. */
  get openHandles(): number {
    return this.native.openHandles();
  }

  get isShutdown(): boolean {
    return this.shutdownPromise !== undefined;
  }

  fsid(): Promise<string> {
    return call(() => this.native.fsid());
  }

  async clusterStats(): Promise<ClusterStats> {
    const s = await call(() => this.native.clusterStat());
    return { ...s, totalBytes: s.kb * 1024, usedBytes: s.kbUsed * 1024, availBytes: s.kbAvail * 1024 };
  }

  /**
   * A monitor command, e.g. { prefix: 'osd pool get', pool: 'volumes', var: 'size', format: 'json' },
   * or its JSON text (for arguments JSON.stringify cannot express, such as a float 60.0).
   */
  async monCommand(cmd: object | string, inbuf?: Buffer): Promise<MonCommandResult> {
    const text = typeof cmd === 'string' ? cmd : JSON.stringify(cmd);
    const r = await call(() => this.native.monCommand(text, inbuf));
    let json: unknown;
    if (r.outbuf.length > 0) {
      try {
        json = JSON.parse(r.outbuf.toString('utf8'));
      } catch {
        json = undefined;
      }
    }
    return { outbuf: r.outbuf, outs: r.outs, json };
  }

  poolStats(pool: string): Promise<PoolStats> {
    return call(() => this.native.poolStat(pool));
  }

  /** The pool's replica count (`osd pool get <pool> size`). */
  async poolReplicaSize(pool: string): Promise<number> {
    const r = await this.monCommand({ prefix: 'osd pool get', pool, var: 'size', format: 'json' });
    const size = (r.json as { size?: unknown } | undefined)?.size;
    if (typeof size !== 'number') throw new Error(`osd pool get ${pool} size: unexpected reply ${r.outbuf.toString('utf8')}`);
    return size;
  }

  /**
   * Blocklists a client address (e.g. a crashed exclusive-lock owner) for
   * expireSeconds. Needs `mon 'profile rbd'` or an `osd blocklist` cap; with
   * `mon 'allow r'` it fails with EACCES.
   */
  async blocklistAdd(addr: string, expireSeconds: number): Promise<void> {
    if (!(expireSeconds > 0) || !Number.isFinite(expireSeconds)) throw new RangeError(`expireSeconds ${expireSeconds}: use a positive number`);
    // The monitor wants `expire` as a JSON float: 3600 is refused, 3600.0 accepted.
    const expire = Number.isInteger(expireSeconds) ? expireSeconds.toFixed(1) : String(expireSeconds);
    await this.monCommand(`{"prefix":"osd blocklist","blocklistop":"add","addr":${JSON.stringify(addr)},"expire":${expire}}`);
  }

  async blocklistRemove(addr: string): Promise<void> {
    await this.monCommand({ prefix: 'osd blocklist', blocklistop: 'rm', addr });
  }

  /** This client's own address(es), as a lock owner elsewhere would see them. */
  clientAddrs(): Promise<string> {
    return call(() => this.native.getAddrs());
  }

  /** This client's global id (the number in `client.<id>`). */
  instanceId(): Promise<number> {
    return call(() => this.native.instanceId());
  }

  async openIoctx(pool: string): Promise<IoCtx> {
    this.assertOpen('rados_ioctx_create', pool);
    const n = await call(() => this.native.openIoctx(pool));
    const io = new IoCtx(this, n, pool);
    this.ioctxs.add(io);
    return io;
  }

  /**
   * Closes every image and ioctx still open through this connection (waiting
   * for their I/O in flight), then rados_shutdown. Idempotent.
   */
  shutdown(): Promise<void> {
    this.shutdownPromise ??= (async () => {
      await Promise.allSettled([...this.images].map((i) => i.close()));
      await Promise.allSettled([...this.ioctxs].map((i) => i.close()));
      await call(() => this.native.shutdown());
    })();
    return this.shutdownPromise;
  }

  /** @internal */
  assertOpen(operation: string, subject: string): void {
    if (this.shutdownPromise) throw localError('ESHUTDOWN', 108, operation, subject, 'the cluster connection is shut down');
  }
  /** @internal */
  track(image: RbdImage): void {
    this.images.add(image);
  }
  /** @internal */
  untrack(x: RbdImage | IoCtx): void {
    if (x instanceof RbdImage) this.images.delete(x);
    else this.ioctxs.delete(x);
  }
}

// ----------------------------------------------------------------- groups --

/** RBD_SNAP_CREATE_SKIP_QUIESCE: take a group snapshot without asking writers to quiesce (QEMU registers no quiesce watcher). */
export const RBD_SNAP_CREATE_SKIP_QUIESCE = 1;

/** A member of an RBD group (rbd_group_image_list); `complete` false while an add or remove was cut short. */
export interface GroupImage {
  name: string;
  poolId: number;
  complete: boolean;
}

/** A group snapshot (rbd_group_snap_list); `complete` false when its creation was cut short. */
export interface GroupSnap {
  name: string;
  complete: boolean;
}

/** Where a member's snapshot in the group namespace comes from (rbd_snap_get_group_namespace). */
export interface SnapGroupNamespace {
  groupPoolId: number;
  group: string;
  groupSnap: string;
}

// ------------------------------------------------------------------ ioctx --

export class IoCtx {
  readonly cluster: RadosCluster;
  readonly pool: string;
  private readonly native: NativeIoctx;
  private closePromise: Promise<void> | undefined;

  /** @internal use RadosCluster.openIoctx */
  constructor(cluster: RadosCluster, native: NativeIoctx, pool: string) {
    this.cluster = cluster;
    this.native = native;
    this.pool = pool;
  }

  /** @internal */
  get nativeHandle(): NativeIoctx {
    return this.native;
  }

  get poolId(): number {
    return this.native.poolId();
  }

  /** rbd_create4 (format 2) with explicit features and object size. */
  createImage(name: string, sizeBytes: number, opts: CreateImageOptions = {}): Promise<void> {
    const order = orderFrom(opts);
    return call(() =>
      this.native.createImage(name, sizeBytes, opts.features ?? null, order, opts.stripeUnit ?? null, opts.stripeCount ?? null, opts.dataPool ?? null),
    );
  }

  removeImage(name: string): Promise<void> {
    return call(() => this.native.removeImage(name));
  }

  /** rbd_rename within this pool. */
  renameImage(from: string, to: string): Promise<void> {
    return call(() => this.native.renameImage(from, to));
  }

  async listImages(): Promise<string[]> {
    return (await this.listImageSpecs()).map((s) => s.name);
  }

  listImageSpecs(): Promise<{ id: string; name: string }[]> {
    return call(() => this.native.listImages());
  }

  async openImage(name: string, opts: OpenImageOptions = {}): Promise<RbdImage> {
    this.cluster.assertOpen('rbd_open', `${this.pool}/${name}`);
    const n = await call(() => this.native.openImage(name, opts.snapshot ?? null, opts.readOnly ?? false));
    const img = new RbdImage(this, n, name, opts.snapshot ?? null, (opts.readOnly ?? false) || opts.snapshot !== undefined);
    this.cluster.track(img);
    return img;
  }

  /** Runs fn on the opened image and closes it whatever happens. */
  async withImage<T>(name: string, opts: OpenImageOptions, fn: (img: RbdImage) => Promise<T>): Promise<T> {
    const img = await this.openImage(name, opts);
    try {
      return await fn(img);
    } finally {
      await img.close();
    }
  }

  /** Clones parentIoctx/parentImage@parentSnap into this pool as childName (rbd_clone3). */
  clone(opts: CloneOptions): Promise<void> {
    const parent = opts.parentIoctx ?? this;
    return call(() =>
      this.native.clone(parent.native, opts.parentImage, opts.parentSnap, opts.childName, opts.features ?? null, orderFrom(opts), opts.cloneFormat ?? null),
    );
  }

  /**
   * Moves an image to the pool's trash (rbd_trash_move): it leaves listImages()
   * at once (no data is deleted), and trashRemove() refuses it (EPERM) for
   * delaySeconds unless forced. Snapshots and clone children do not stop it:
   * a clone parent moves too, its children keep reading it (their
   * parentInfo().trash is true), and trashRemove() refuses it (ENOTEMPTY)
   * until its snapshots are gone. Fails with ENOENT for an unknown name,
   * EBUSY when its exclusive lock cannot be taken or it is migrating, EMLINK
   * for a group member.
   */
  async trashMove(name: string, delaySeconds: number): Promise<void> {
    if (!Number.isSafeInteger(delaySeconds) || delaySeconds < 0) {
      throw new RangeError(`delaySeconds ${delaySeconds}: use a non-negative integer`);
    }
    return call(() => this.native.trashMove(name, delaySeconds));
  }

  /** The pool's trash (rbd_trash_list + rbd_trash_list_cleanup). */
  trashList(): Promise<TrashEntry[]> {
    return call(() => this.native.trashList());
  }

  /**
   * Deletes a trashed image's data and its trash entry (rbd_trash_remove);
   * it does the data deletion removeImage() does. ENOENT for an unknown id;
   * EPERM before the entry's deferredUntil unless force; ENOTEMPTY while it
   * has snapshots (the entry stays, restorable).
   */
  trashRemove(id: string, force = false): Promise<void> {
    return call(() => this.native.trashRemove(id, force));
  }

  /** Puts a trashed image back under newName (rbd_trash_restore); EEXIST when the name is taken. */
  trashRestore(id: string, newName: string): Promise<void> {
    return call(() => this.native.trashRestore(id, newName));
  }

  /** rbd_group_create: an empty group in this pool; EEXIST when the name is taken. */
  groupCreate(group: string): Promise<void> {
    return call(() => this.native.groupCreate(group));
  }

  /** rbd_group_remove: the group and its group snapshots (with every member's snapshot of them); the images stay. ENOENT when unknown. */
  groupRemove(group: string): Promise<void> {
    return call(() => this.native.groupRemove(group));
  }

  /** Names of the pool's groups (rbd_group_list). */
  groupList(): Promise<string[]> {
    return call(() => this.native.groupList());
  }

  /** rbd_group_image_add of an image of this pool; EEXIST when it is in a group already. */
  groupImageAdd(group: string, image: string): Promise<void> {
    return call(() => this.native.groupImageAdd(group, image));
  }

  /** rbd_group_image_remove of an image of this pool; ENOENT when it is not in the group. */
  groupImageRemove(group: string, image: string): Promise<void> {
    return call(() => this.native.groupImageRemove(group, image));
  }

  groupImageList(group: string): Promise<GroupImage[]> {
    return call(() => this.native.groupImageList(group));
  }

  /**
   * rbd_group_snap_create2: one snapshot of every member at one moment (each member's
   * snapshot is in the group namespace). `flags`: RBD_SNAP_CREATE_SKIP_QUIESCE or 0. EEXIST when the name is taken.
   */
  groupSnapCreate(group: string, snap: string, flags: number): Promise<void> {
    return call(() => this.native.groupSnapCreate(group, snap, flags));
  }

  /** rbd_group_snap_remove: the group snapshot and every member's snapshot of it; ENOENT when unknown. */
  groupSnapRemove(group: string, snap: string): Promise<void> {
    return call(() => this.native.groupSnapRemove(group, snap));
  }

  groupSnapList(group: string): Promise<GroupSnap[]> {
    return call(() => this.native.groupSnapList(group));
  }

  /**
   * Reads several ranges of each object with one OSD read operation per object, every object in
   * flight at once (rados_read_op_read, rados_aio_read_op_operate), at snapshot `snapId` when given
   * (a self-managed snapshot id, as RbdImage.snapList() gives). Returns one Buffer per object with
   * its ranges one after the other, or null for an object that does not exist (at that snapshot).
   * Bytes past the end of an object read as zeros. Other errors reject. At most 1,024 objects per call.
   */
  async readObjects(objects: ObjectExtents[], snapId: number | null = null): Promise<(Buffer | null)[]> {
    const lengths = objects.map((o) => o.extents.reduce((sum, [, length]) => sum + length, 0));
    const target = Buffer.allocUnsafe(lengths.reduce((a, b) => a + b, 0));
    const results = await call(() => this.native.readObjects(snapId, objects.map((o) => o.oid), objects.map((o) => o.extents.flat()), target));
    let at = 0;
    return results.map((rc, i) => {
      const slice = target.subarray(at, at + lengths[i]!);
      at += lengths[i]!;
      if (rc === -2) return null;
      if (rc < 0) {
        const name = loadBinding().errnoName(-rc);
        throw new RbdError(`rados_read_op_operate ${this.pool}/${objects[i]!.oid}: ${name}`, { code: name, errno: -rc, operation: 'rados_read_op_operate', subject: `${this.pool}/${objects[i]!.oid}` });
      }
      return slice;
    });
  }

  /**
   * Writes and zeroes several ranges of each object with one OSD write operation per object, every
   * object in flight at once (rados_write_op_write / rados_write_op_zero, rados_aio_write_op_operate),
   * under the snapshot context `snapc`, so the objects' snapshots keep their bytes. Bypasses librbd:
   * only for images without an object map (librbd would not learn of the new objects). Rejects with
   * the first failing object's error. At most 1,024 objects per call.
   */
  writeObjects(objects: ObjectWrite[], snapc: SnapContext): Promise<void> {
    const chunks: Buffer[] = [];
    const extents = objects.map((o) =>
      o.extents.flatMap((e) => {
        if (typeof e.data === 'number') return [e.offset, e.data, 1];
        chunks.push(e.data);
        return [e.offset, e.data.length, 0];
      }),
    );
    const data = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    return call(() => this.native.writeObjects(snapc.seq, snapc.ids, objects.map((o) => o.oid), extents, data));
  }

  /**
   * Copies extents from objects of `source` (read at self-managed snapshot `readSnapId`) into objects of
   * this pool, pipelined per object: each object's extents are read in ONE read op and, as soon as
   * that completes, written in ONE write op under the snapshot context `snapc` (so the target
   * objects' snapshots keep their bytes), reads of later objects in flight while earlier ones are
   * written. Whole zero blocks of the read bytes are written as zeroes, never as data. Returns per
   * entry the data bytes written, or null when the source object does not exist at that snapshot
   * (nothing of that entry is written: the caller copies it another way, e.g. a clone's parent data
   * through librbd). Bypasses librbd on both sides: only for images whose objects are plain
   * `<prefix>.<object number>` and a target without an object map. Rejects with the first failing
   * object's error (objects in flight are waited for, no new ones started). At most 1,024 per call.
   */
  async copyObjects(source: IoCtx, readSnapId: number, objects: ObjectCopy[], snapc: SnapContext, opts: CopyObjectsOptions = {}): Promise<(number | null)[]> {
    const extents = objects.map((o) => o.extents.flatMap((e) => [e.sourceOffset, e.targetOffset, e.length, e.zero ? 1 : 0]));
    const results = await call(() =>
      this.native.copyObjects(
        source.native,
        readSnapId,
        snapc.seq,
        snapc.ids,
        objects.map((o) => o.sourceOid),
        objects.map((o) => o.targetOid),
        extents,
        opts.blockBytes ?? 4096,
        opts.inFlightMax ?? 64,
        opts.bytesInFlightMax ?? 64 * 1024 * 1024,
      ),
    );
    return results.map((n) => (n < 0 ? null : n));
  }

  /** Waits for this ioctx's calls in flight, then destroys it. Images opened from it stay usable. */
  close(): Promise<void> {
    this.closePromise ??= call(() => this.native.close()).finally(() => this.cluster.untrack(this));
    return this.closePromise;
  }
}

// ------------------------------------------------------------------ image --

export class RbdImage {
  readonly ioctx: IoCtx;
  readonly name: string;
  readonly snapshot: string | null;
  readonly readOnly: boolean;
  private readonly native: NativeImage;
  private closePromise: Promise<void> | undefined;

  /** @internal use IoCtx.openImage */
  constructor(ioctx: IoCtx, native: NativeImage, name: string, snapshot: string | null, readOnly: boolean) {
    this.ioctx = ioctx;
    this.native = native;
    this.name = name;
    this.snapshot = snapshot;
    this.readOnly = readOnly;
  }

  get pool(): string {
    return this.ioctx.pool;
  }

  /** 'pool/name' or 'pool/name@snap' */
  get spec(): string {
    return this.native.spec();
  }

  /** Operations in flight on this handle (I/O and metadata calls). */
  get inFlight(): number {
    return this.native.inFlight();
  }

  get closed(): boolean {
    return this.closePromise !== undefined;
  }

  async stat(): Promise<ImageStat> {
    const s = await call(() => this.native.stat());
    return {
      sizeBytes: s.size,
      objectSizeBytes: s.objSize,
      order: s.order,
      numObjects: s.numObjs,
      blockNamePrefix: s.blockNamePrefix,
      id: s.id,
      dataPoolId: s.dataPoolId,
      stripeUnit: s.stripeUnit,
      stripeCount: s.stripeCount,
    };
  }

  async size(): Promise<number> {
    return (await this.stat()).sizeBytes;
  }

  features(): Promise<number> {
    return call(() => this.native.features());
  }

  resize(sizeBytes: number): Promise<void> {
    return call(() => this.native.resize(sizeBytes));
  }

  snapCreate(name: string): Promise<void> {
    return call(() => this.native.snapCreate(name));
  }

  snapRemove(name: string): Promise<void> {
    return call(() => this.native.snapRemove(name));
  }

  snapProtect(name: string): Promise<void> {
    return call(() => this.native.snapProtect(name));
  }

  snapUnprotect(name: string): Promise<void> {
    return call(() => this.native.snapUnprotect(name));
  }

  snapIsProtected(name: string): Promise<boolean> {
    return call(() => this.native.snapIsProtected(name));
  }

  /** The group the image is a member of (rbd_get_group), or null. */
  getGroup(): Promise<{ poolId: number; name: string } | null> {
    return call(() => this.native.getGroup());
  }

  /** The group snapshot a snapshot id belongs to, or null for a snapshot of another namespace (a user's). */
  snapGroupNamespace(snapId: number): Promise<SnapGroupNamespace | null> {
    return call(() => this.native.snapGroupNamespace(snapId));
  }

  /**
   * rbd_snap_set_by_id: reads and diffIterate then see the image at that snapshot,
   * whatever its namespace (a group snapshot's member has no user name); null: the head again.
   */
  snapSetById(snapId: number | null): Promise<void> {
    return call(() => this.native.snapSetById(snapId));
  }

  /** Every snapshot of the image, group-namespace ones (named `.group.*` by librbd) included. */
  async snapList(): Promise<SnapInfo[]> {
    return (await call(() => this.native.snapList())).map((s) => ({ id: s.id, name: s.name, sizeBytes: s.size }));
  }

  snapRollback(name: string): Promise<void> {
    return call(() => this.native.snapRollback(name));
  }

  snapRename(from: string, to: string): Promise<void> {
    return call(() => this.native.snapRename(from, to));
  }

  /**
   * Copies the parent's data into this clone and drops the parent link
   * (rbd_flatten_with_progress). onProgress(done, total) is throttled to about
   * 20 calls a second; every call happens before the promise settles.
   */
  flatten(onProgress?: (done: number, total: number) => void): Promise<void> {
    return call(() => this.native.flatten(onProgress));
  }

  /**
   * Clones of this image (rbd_list_children3): of the snapshot the handle is
   * opened at, or of every snapshot for a handle on the head. With `snapshot`,
   * of that snapshot only (opens a read-only handle at it).
   */
  async listChildren(snapshot?: string): Promise<ImageRef[]> {
    if (snapshot !== undefined && snapshot !== this.snapshot) {
      return this.ioctx.withImage(this.name, { snapshot, readOnly: true }, (img) => img.listChildren());
    }
    return (await call(() => this.native.listChildren())).map(refOf);
  }

  /** The parent of a clone (rbd_get_parent), or null. */
  async parentInfo(): Promise<ParentInfo | null> {
    const p = await call(() => this.native.parentInfo());
    return p ? { ...refOf(p), snapshot: p.snapshot, snapshotId: p.snapshotId } : null;
  }

  /**
   * Extents changed since opts.fromSnap (rbd_diff_iterate2) up to the state
   * this handle sees (open the image at a snapshot to diff two snapshots), in
   * batches of opts.batchSize extents per native call.
   */
  async *diffIterateBatches(opts: DiffOptions = {}): AsyncGenerator<Extent[]> {
    let offset = opts.offset ?? 0;
    const end = opts.length !== undefined ? offset + opts.length : await this.size();
    const batch = opts.batchSize ?? 16384;
    while (offset < end) {
      const r = await call(() =>
        this.native.diffIterate(opts.fromSnap ?? null, offset, end - offset, opts.includeParent ?? true, opts.wholeObject ?? false, batch),
      );
      if (r.extents.length > 0) yield r.extents;
      if (!r.more || r.nextOffset <= offset) break;
      offset = r.nextOffset;
    }
  }

  /** All changed extents; fails with E2BIG beyond opts.maxExtents (default 1,000,000). */
  async diffIterate(opts: DiffOptions = {}): Promise<Extent[]> {
    const max = opts.maxExtents ?? 1_000_000;
    const all: Extent[] = [];
    for await (const batch of this.diffIterateBatches(opts)) {
      for (const e of batch) all.push(e);
      if (all.length > max) {
        throw localError('E2BIG', 7, 'rbd_diff_iterate2', this.spec, `more than ${max} changed extents; use diffIterateBatches()`);
      }
    }
    return all;
  }

  /** Reads length bytes at offset (rbd_aio_read) into a new Buffer. */
  async read(offset: number, length: number): Promise<Buffer> {
    return (await call(() => this.native.read(offset, length))) as Buffer;
  }

  /** Reads target.length bytes at offset into target; returns the bytes read. */
  async readInto(offset: number, target: Buffer): Promise<number> {
    return (await call(() => this.native.read(offset, target.length, target))) as number;
  }

  /**
   * Writes data at offset (rbd_aio_write). The buffer is used in place (no
   * copy) and stays referenced until librbd is done with it: do not modify it
   * before the promise settles.
   */
  write(offset: number, data: Uint8Array): Promise<void> {
    return call(() => this.native.write(offset, data));
  }

  /**
   * Deallocates a range (rbd_aio_discard). librbd skips the parts of a discard
   * that do not cover whole 64 KiB granules (`rbd_skip_partial_discard`), so
   * only aligned ranges are guaranteed to read back as zeros; use
   * writeZeroes() for exact zeroing.
   */
  discard(offset: number, length: number): Promise<void> {
    return call(() => this.native.discard(offset, length));
  }

  /** Zeroes a range exactly (rbd_aio_write_zeroes), deallocating whole objects where it can. */
  writeZeroes(offset: number, length: number): Promise<void> {
    return call(() => this.native.writeZeroes(offset, length));
  }

  flush(): Promise<void> {
    return call(() => this.native.flush());
  }

  lockOwners(): Promise<LockOwners> {
    return call(() => this.native.lockOwners());
  }

  /** Breaks another client's lock (rbd_lock_break); blocklisting it needs mon caps beyond 'allow r'. */
  lockBreak(mode: LockMode, owner: string): Promise<void> {
    return call(() => this.native.lockBreak(mode, owner));
  }

  lockAcquire(mode: LockMode = 'exclusive'): Promise<void> {
    return call(() => this.native.lockAcquire(mode));
  }

  lockRelease(): Promise<void> {
    return call(() => this.native.lockRelease());
  }

  isExclusiveLockOwner(): Promise<boolean> {
    return call(() => this.native.isExclusiveLockOwner());
  }

  /** Waits for every operation in flight, then rbd_close. Idempotent. */
  close(): Promise<void> {
    this.closePromise ??= call(() => this.native.close()).finally(() => this.ioctx.cluster.untrack(this));
    return this.closePromise;
  }
}
