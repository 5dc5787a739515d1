/**
 * The `rbd` image store (glance_store's RBD store): image data is an RBD
 * image named by the image id in `rbd_store_pool`, with a protected snapshot
 * `snap` taken when the upload completes; volumes clone that snapshot. The
 * location is `rbd://<fsid>/<pool>/<image id>/snap`.
 *
 * Upload streams through librbd (no local copy of the data): the body is cut
 * into blocks, all-zero blocks are skipped (the image stays thin) and at most
 * `writesInFlightMax` writes run at once. The image is created with the
 * announced size, or grown as data arrives when no size is known. Only the
 * first MiB is kept on local disk, for the qemu-img format probe.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { CephConfigProblem, resolveCephClient, type CephClientSettings } from '../../ceph/conf.ts';
import { RadosCluster, RbdError, type IoCtx, type RbdImage } from '../../ceph/rbd.ts';
import { errors, PumiceError } from '../../errors.ts';
import { readChunks, StreamHasher } from '../hashing.ts';
import { nonZeroRuns } from '../zero-runs.ts';
import { SizeLimitExceeded, SizeMismatch, StoreWriteError, type PendingWrite } from './file.ts';

export interface RbdStoreOptions {
  /** The store id: 'rbd' in the single-store form, else the NAME of enabled_backends NAME:rbd. */
  id?: string;
  /** The section configuring it ([NAME] or [glance_store]), named in the fixes messages give. */
  section?: string;
  description?: string | null;
  pool: string;
  user: string;
  confPath: string;
  /** Object size in MiB (rbd_store_chunk_size). */
  chunkSizeMiB: number;
  /** Where the format probe (the first MiB of each upload) is written. */
  probeDirectory?: string;
  connectTimeoutSeconds?: number;
  log?: (message: string) => void;
}

/** An upload written to RBD; `tempPath` is the local probe file (first MiB) for qemu-img. */
export interface RbdPendingWrite extends PendingWrite {
  imageName: string;
}

export const snapName = 'snap';
/** Names of image data in the pool: image ids. Anything else in the pool is not ours to sweep. */
const imageIdPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const probeBytes = 1 << 20;
const readChunkBytes = 4 << 20;
/** As `rbd import` (rbd_concurrent_management_ops = 10): fewer left the OSDs idle between writes. */
const writesInFlightMax = 10;
/** Batches beyond the writes in flight: the hash workers may still be reading a batch whose write is done. */
const batchesHashingMax = 4;
/** Layering (clones) + exclusive-lock + object-map + fast-diff + deep-flatten, as Glance's rbd store asks for. */
const imageFeatures = 1 | 4 | 8 | 16 | 32;
export class RbdStore {
  readonly type = 'rbd';
  readonly id: string;
  readonly section: string;
  /** Volumes boot from clones of the stored bytes: non-raw images are converted (or refused) on import. */
  readonly rawOnly = true;
  readonly description: string;
  readonly directory: string;
  private readonly probeDirectory: string;
  private connecting: Promise<IoCtx> | null = null;
  private cluster: RadosCluster | null = null;
  private client: CephClientSettings | null = null;
  private fsid: string | null = null;

  constructor(private readonly options: RbdStoreOptions) {
    this.id = options.id ?? 'rbd';
    this.section = options.section ?? 'glance_store';
    this.directory = `rbd:${options.pool}`;
    this.description = options.description ?? `Ceph RBD store (pool ${options.pool}, client.${options.user})`;
    this.probeDirectory = options.probeDirectory ?? join(tmpdir(), 'pumice-rbd-probe');
    mkdirSync(this.probeDirectory, { recursive: true, mode: 0o700 });
  }

  private get objectSizeBytes(): number {
    return this.options.chunkSizeMiB * 1024 * 1024;
  }

  private get orderBits(): number {
    return Math.round(Math.log2(this.objectSizeBytes));
  }

  /** Connects now (at start-up) so the fsid is known for locations; failures are logged, and retried on use. */
  async start(): Promise<void> {
    try {
      await this.io();
    } catch (error) {
      this.options.log?.(`images: rbd store '${this.id}' not connected yet: ${(error as Error).message}`);
    }
  }

  async stop(): Promise<void> {
    // A connection still being made is waited for, so its cluster handle is shut down too.
    await this.connecting?.catch(() => undefined);
    const cluster = this.cluster;
    this.cluster = null;
    this.connecting = null;
    if (cluster) await cluster.shutdown().catch(() => undefined);
  }

  /** The Ceph pool of the store (consumers clone from it when they reach the same cluster). */
  get pool(): string {
    return this.options.pool;
  }

  /** GET /v2/info/stores/detail's `properties` of this store, as Glance's rbd store. */
  properties(): Record<string, unknown> {
    return { pool: this.options.pool, chunk_size: this.objectSizeBytes, thin_provisioning: true };
  }

  /** `rbd://<fsid>/<pool>/<image>/snap`, or null while the cluster's fsid is unknown. */
  location(imageId: string): string | null {
    return this.fsid ? `rbd://${this.fsid}/${this.options.pool}/${imageId}/${snapName}` : null;
  }

  /** The pool's I/O context, connecting on first use; a failure is a 503 that names the cause and the fix. */
  private io(): Promise<IoCtx> {
    if (!this.connecting) {
      this.connecting = this.connect();
      this.connecting.catch(() => {
        this.connecting = null;
      });
    }
    return this.connecting;
  }

  private async connect(): Promise<IoCtx> {
    try {
      this.client = resolveCephClient({ confPath: this.options.confPath, user: this.options.user });
    } catch (error) {
      if (error instanceof CephConfigProblem) {
        throw errors.backendUnavailable(`Image store '${this.id}' cannot connect to the Ceph cluster: ${error.message.replace(/rbd_ceph_conf/g, `rbd_store_ceph_conf in [${this.section}]`)}`);
      }
      throw error;
    }
    let cluster: RadosCluster;
    try {
      cluster = await RadosCluster.connect({
        confPath: this.client.confPath,
        user: this.options.user,
        keyringPath: this.client.keyringPath,
        connectTimeoutSeconds: this.options.connectTimeoutSeconds ?? 15,
      });
    } catch (error) {
      throw this.explain(error, 'connect');
    }
    try {
      this.fsid = await cluster.fsid();
      const ioctx = await cluster.openIoctx(this.options.pool);
      this.cluster = cluster;
      return ioctx;
    } catch (error) {
      await cluster.shutdown().catch(() => undefined);
      throw this.explain(error, 'open pool');
    }
  }

  /** librados/librbd errors as messages saying what is wrong and how to fix it. */
  private explain(error: unknown, action: string): PumiceError {
    if (error instanceof PumiceError) return error;
    const target = `pool '${this.options.pool}' as client.${this.options.user}`;
    if (error instanceof RbdError) {
      switch (error.code) {
        case 'ENOENT':
          if (action === 'open pool') {
            return errors.backendUnavailable(`Image store '${this.id}': Ceph pool '${this.options.pool}' does not exist: create it (ceph osd pool create ${this.options.pool}; rbd pool init ${this.options.pool}) or fix rbd_store_pool in [${this.section}].`);
          }
          break;
        case 'EPERM':
        case 'EACCES':
          return errors.backendUnavailable(
            `Image store '${this.id}': permission denied for ${target} during ${action} (${error.operation}): give the user the caps Glance needs, e.g. ceph auth caps client.${this.options.user} mon 'profile rbd' osd 'profile rbd pool=${this.options.pool}'.`,
          );
        case 'ETIMEDOUT':
        case 'EINTR':
          return errors.backendUnavailable(
            `Image store '${this.id}' cannot connect to the Ceph cluster: no answer from the monitors (${this.client?.monHost ?? 'mon host'}) during ${action}. Check that the monitors run and that this host reaches them on ports 3300/6789.`,
          );
        case 'ENOSPC':
        case 'EDQUOT':
          return errors.backendUnavailable(`Image store '${this.id}': Ceph ${target} is full or over quota during ${action}: add OSDs or raise the pool quota.`);
        default:
          if (action === 'connect') {
            return errors.backendUnavailable(
              `Image store '${this.id}' cannot connect to the Ceph cluster as client.${this.options.user} with keyring ${this.client?.keyringPath}: ${error.message}. Check the keyring matches 'ceph auth get client.${this.options.user}'.`,
            );
          }
      }
    }
    return errors.backendUnavailable(`Image store '${this.id}': ${action} in ${target} failed: ${(error as Error).message}`);
  }

  /**
   * Streams `source` into a new RBD image `<imageId>`, hashing on the way.
   * Rejects (and removes the image) when the source fails, exceeds
   * `sizeBytesMax`, or ends with another length than `expectedBytes`.
   */
  async write(imageId: string, source: Readable, options: { expectedBytes: number | null; sizeBytesMax: number }): Promise<RbdPendingWrite> {
    const io = await this.io();
    const initialSize = options.expectedBytes ?? 0;
    try {
      await io.createImage(imageId, initialSize, { orderBits: this.orderBits, features: imageFeatures });
    } catch (error) {
      if (error instanceof RbdError && error.code === 'EEXIST') {
        // Left by an upload a crash interrupted (the image is queued again): start over.
        await this.removeImage(io, imageId);
        await io.createImage(imageId, initialSize, { orderBits: this.orderBits, features: imageFeatures }).catch((e: unknown) => {
          throw this.explain(e, `create ${imageId}`);
        });
      } else {
        throw this.explain(error, `create ${imageId}`);
      }
    }
    let image: RbdImage;
    try {
      image = await io.openImage(imageId);
    } catch (error) {
      await io.removeImage(imageId).catch(() => undefined);
      throw this.explain(error, `open ${imageId}`);
    }
    const blockBytes = Math.min(this.objectSizeBytes, 8 << 20);
    const probe: Buffer[] = [];
    let probeLength = 0;
    let position = 0;
    let imageSize = initialSize;
    // Resizes run one at a time, in the order the batches ask for them.
    let sizing: Promise<void> = Promise.resolve();
    const ensureSize = (end: number): Promise<void> => {
      sizing = sizing.then(async () => {
        if (end <= imageSize) return;
        // Grow ahead (doubling, capped at 1 GiB steps) so a long stream resizes rarely; trimmed at the end.
        const target = Math.max(end, Math.min(imageSize * 2, imageSize + (1 << 30)));
        await image.resize(target);
        imageSize = target;
      });
      return sizing;
    };
    // The body is copied once, into shared batches that the hash workers and librbd (aio, in place) read;
    // each batch is one object-sized write, or its non-zero runs: objects hold no zeros they need not.
    const batches = new StreamHasher({
      batchBytes: blockBytes,
      slotsMax: writesInFlightMax + batchesHashingMax,
      sink: async (data, at) => {
        const runs = nonZeroRuns(data);
        if (runs.length === 0) return;
        try {
          await ensureSize(at + data.length);
          await Promise.all(runs.map(([start, end]) => image.write(at + start, data.subarray(start, end))));
        } catch (error) {
          throw new StoreWriteError(error as Error);
        }
      },
    });

    const tempPath = join(this.probeDirectory, `${imageId}.${randomBytes(6).toString('hex')}.probe`);
    let digests;
    try {
      await readChunks(source, (chunk) => {
        position += chunk.length;
        if (position > options.sizeBytesMax) throw new SizeLimitExceeded(options.sizeBytesMax);
        if (probeLength < probeBytes) {
          const part = chunk.subarray(0, probeBytes - probeLength);
          probe.push(Buffer.from(part));
          probeLength += part.length;
        }
        return batches.update(chunk);
      });
      digests = await batches.digest();
      if (options.expectedBytes !== null && position !== options.expectedBytes) throw new SizeMismatch(options.expectedBytes, position);
      try {
        if (imageSize !== position) await image.resize(position);
        await image.flush();
        await image.close();
      } catch (error) {
        throw new StoreWriteError(error as Error);
      }
      await writeFile(tempPath, Buffer.concat(probe), { mode: 0o600 });
    } catch (error) {
      batches.abort();
      await batches.drain();
      await image.close().catch(() => undefined);
      await io.removeImage(imageId).catch(() => undefined);
      await rm(tempPath, { force: true });
      throw error;
    }
    return { tempPath, imageName: imageId, sizeBytes: position, ...digests };
  }

  /** Publishes an upload: snapshot `snap`, protected so volumes can clone it. */
  async commit(imageId: string, pending: PendingWrite): Promise<void> {
    await rm(pending.tempPath, { force: true });
    const io = await this.io();
    try {
      await io.withImage(imageId, {}, async (image) => {
        await image.snapCreate(snapName);
        await image.snapProtect(snapName);
      });
    } catch (error) {
      throw this.explain(error, `snapshot ${imageId}@${snapName}`);
    }
  }

  /** Removes an unpublished upload (its probe file and its RBD image). */
  async discard(pending: PendingWrite): Promise<void> {
    await rm(pending.tempPath, { force: true });
    const name = (pending as Partial<RbdPendingWrite>).imageName;
    if (name) await this.removeImage(await this.io(), name);
  }

  /** 409 when the image's snapshot has clones (volumes made from it), as Glance's rbd store answers. */
  async assertDeletable(imageId: string): Promise<void> {
    const io = await this.io();
    try {
      await io.withImage(imageId, { readOnly: true }, async (image) => {
        if (!(await image.snapList()).some((s) => s.name === snapName)) return;
        let children;
        try {
          children = await image.listChildren(snapName);
        } catch (error) {
          // Naming children needs read access to their pools (volumes), which client.glance
          // lacks; then ask as Glance does: unprotecting a snapshot with clones fails EBUSY.
          if (!(error instanceof RbdError && (error.code === 'EPERM' || error.code === 'EACCES'))) throw error;
          if (!(await image.snapIsProtected(snapName))) return;
          try {
            await io.withImage(imageId, {}, (writable) => writable.snapUnprotect(snapName));
          } catch (unprotectError) {
            if (unprotectError instanceof RbdError && unprotectError.code === 'EBUSY') {
              throw errors.conflict(`Image ${imageId} is in use: its RBD snapshot ${this.options.pool}/${imageId}@${snapName} has clones (volumes created from it); delete or flatten those volumes first.`);
            }
            throw unprotectError;
          }
          await io.withImage(imageId, {}, (writable) => writable.snapProtect(snapName));
          return;
        }
        if (children.length > 0) {
          const names = children.slice(0, 5).map((c) => `${c.pool}/${c.image}`).join(', ');
          throw errors.conflict(`Image ${imageId} is in use: its RBD snapshot ${this.options.pool}/${imageId}@${snapName} has ${children.length} clone(s) (${names}); delete or flatten those volumes first.`);
        }
      });
    } catch (error) {
      if (error instanceof RbdError && error.code === 'ENOENT') return;
      throw this.explain(error, `check ${imageId}`);
    }
  }

  /** Unprotects and removes `snap`, then the image; succeeds if it is already gone. */
  async delete(imageId: string): Promise<void> {
    await this.assertDeletable(imageId);
    await this.removeImage(await this.io(), imageId);
  }

  private async removeImage(io: IoCtx, imageId: string): Promise<void> {
    try {
      await io.withImage(imageId, {}, async (image) => {
        for (const snap of await image.snapList()) {
          if (await image.snapIsProtected(snap.name)) await image.snapUnprotect(snap.name);
          await image.snapRemove(snap.name);
        }
      });
      await io.removeImage(imageId);
    } catch (error) {
      if (error instanceof RbdError && error.code === 'ENOENT') return;
      if (error instanceof RbdError && error.code === 'EBUSY') {
        throw errors.conflict(`Image ${imageId} is in use: its RBD image is still open or cloned (${error.message}).`);
      }
      throw this.explain(error, `delete ${imageId}`);
    }
  }

  /** Reads bytes `start`..`end` (inclusive) of the image's snapshot, in chunks. */
  read(imageId: string, range?: { start: number; end: number }): Readable {
    const self = this;
    return Readable.from((async function* () {
      const io = await self.io();
      const image = await io.openImage(imageId, { snapshot: snapName, readOnly: true }).catch((e: unknown) => {
        throw self.explain(e, `open ${imageId}@${snapName}`);
      });
      try {
        const size = await image.size();
        const end = range ? Math.min(range.end + 1, size) : size;
        for (let offset = range?.start ?? 0; offset < end; offset += readChunkBytes) {
          yield await image.read(offset, Math.min(readChunkBytes, end - offset));
        }
      } finally {
        await image.close();
      }
    })(), { objectMode: false });
  }

  async sizeOf(imageId: string): Promise<number | null> {
    const io = await this.io();
    try {
      return await io.withImage(imageId, { snapshot: snapName, readOnly: true }, (image) => image.size());
    } catch (error) {
      if (error instanceof RbdError && error.code === 'ENOENT') return null;
      throw this.explain(error, `stat ${imageId}`);
    }
  }

  /**
   * Start-up sweep: probe files, and RBD images named like an image id that
   * no usable image refers to: no record, or a record that is not active or
   * deactivated (an upload or import a crash interrupted). Each is removed
   * (snapshots unprotected and removed, then the image), and logged.
   *
   * The pool may be shared with another deployment (a lab, a second cloud),
   * whose records this one cannot see, so an image is left alone (and logged)
   * when a client holds its exclusive lock (a live writer), or when it has
   * no record here but has snapshots (published data, perhaps not ours).
   *
   * The pool sweep runs in the background (this returns at once with the
   * probe files removed): a cluster that is down or slow must not hold up the
   * start. `isKnown` is asked again right before each removal, so an upload
   * that started meanwhile is left alone. A cluster that cannot be reached
   * skips the sweep (logged); it runs at the next start.
   */
  async removeLeftovers(isKnown: (imageId: string) => boolean, statusOf: (imageId: string) => string | null): Promise<string[]> {
    await rm(this.probeDirectory, { recursive: true, force: true });
    mkdirSync(this.probeDirectory, { recursive: true, mode: 0o700 });
    const log = this.options.log ?? (() => undefined);
    this.sweeping = this.sweepPool(isKnown, statusOf).catch((error: Error) => {
      log(`images: sweep of rbd pool '${this.options.pool}' failed: ${error.message}`);
      return [];
    });
    return [];
  }

  /** The background pool sweep of `removeLeftovers`; resolves to the names removed. */
  sweeping: Promise<string[]> = Promise.resolve([]);

  private async sweepPool(isKnown: (imageId: string) => boolean, statusOf: (imageId: string) => string | null): Promise<string[]> {
    const log = this.options.log ?? (() => undefined);
    let io: IoCtx;
    let names: string[];
    try {
      io = await this.io();
      names = await io.listImages();
    } catch (error) {
      log(`images: sweep of rbd pool '${this.options.pool}' skipped: ${(error as Error).message}`);
      return [];
    }
    const removed: string[] = [];
    for (const name of names) {
      if (!imageIdPattern.test(name) || isKnown(name)) continue;
      const status = statusOf(name);
      const spec = `${this.options.pool}/${name}`;
      try {
        // Opened writable (lock owners are not readable read-only); opening takes no lock, a write would.
        const verdict = await io.withImage(name, {}, async (image) => {
          const owners = await image.lockOwners().catch((error: unknown) => {
            // EINVAL: the image has no exclusive-lock feature, so there is no owner to ask about.
            if (error instanceof RbdError && error.code === 'EINVAL') return { owners: [] };
            throw error;
          });
          if (owners.owners.length > 0) return 'a client holds its exclusive lock (a live writer)';
          if (status === null && (await image.snapList()).length > 0) {
            return `it has snapshots but no image record here (it may belong to another deployment sharing the pool; if not, remove it: rbd snap unprotect ${spec}@${snapName}; rbd snap purge ${spec}; rbd rm ${spec})`;
          }
          return null;
        });
        if (verdict !== null) {
          log(`images: rbd image ${spec} left in place: ${verdict}`);
          continue;
        }
        if (isKnown(name) || statusOf(name) !== status) continue;
        await this.removeImage(io, name);
        removed.push(name);
        log(`images: removed orphan rbd image ${spec} (${status === null ? 'no image record' : `image is '${status}'`})`);
      } catch (error) {
        if (error instanceof RbdError && error.code === 'ENOENT') continue;
        log(`images: removing orphan rbd image ${spec} failed: ${(error as Error).message}`);
      }
    }
    log(`images: sweep of rbd pool '${this.options.pool}' done: ${removed.length} orphan image(s) removed`);
    return removed;
  }
}
