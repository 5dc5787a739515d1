/**
 * The `file` image store (glance_store's filesystem store): one file per
 * image in `filesystem_store_datadir`, named by the image id. Writes go to
 * `<id>.<random>.tmp` in the same directory and become visible only by an
 * atomic rename after an fsync, so a crash never leaves a half image under
 * an image's name. Runs of zeros (64 KiB granules) are not written: the
 * file stays sparse. The body is copied once, into shared batches that the
 * hash workers and the file writes read in place.
 */
import { randomBytes } from 'node:crypto';
import { constants, createReadStream, mkdirSync } from 'node:fs';
import { open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { plainBatches, readChunks, StreamHasher } from '../hashing.ts';
import { DirectIo, directIoLength } from './direct-io.ts';
import { nonZeroRuns } from '../zero-runs.ts';

/**
 * Writes go to the file in batches of this size, several at once: one
 * pwrite per 64 KiB socket chunk, each awaited before the next, held uploads
 * to a quarter of `cp`'s speed.
 */
const writeBatchBytes = 8 << 20;
const writesInFlightMax = 6;

export interface StoredData {
  sizeBytes: number;
  md5Hex: string;
  sha512Hex: string;
}

/** A written but not yet committed upload: `commit` publishes it, `discard` removes it. */
export interface PendingWrite extends StoredData {
  tempPath: string;
}

/** Thrown when the body ends with a different byte count than announced; the caller maps it to a 400. */
export class SizeMismatch extends Error {
  constructor(readonly expectedBytes: number, readonly receivedBytes: number) {
    super(`received ${receivedBytes} bytes, expected ${expectedBytes}`);
  }
}

/** A failure of the store itself (disk full, I/O error), as opposed to a bad or aborted source. */
export class StoreWriteError extends Error {
  constructor(override readonly cause: Error) {
    super(cause.message);
  }
}

/** Thrown when the body exceeds `sizeBytesMax`. */
export class SizeLimitExceeded extends Error {
  constructor(readonly limitBytes: number) {
    super(`image data is larger than ${limitBytes} bytes`);
  }
}

/**
 * Writes the non-zero runs of `data` at `at` (all at once: they are disjoint); failures are the store's.
 * With `direct`, a run's end is rounded up to a block (the batch has room: see DirectIo), which only the
 * last batch's last run needs; the final truncate cuts what lies past the data.
 */
async function writeRuns(handle: FileHandle, data: Buffer, at: number, direct: boolean): Promise<void> {
  const memory = direct ? Buffer.from(data.buffer, data.byteOffset, directIoLength(data.length)) : data;
  const writes = nonZeroRuns(data).map(async ([start, runEnd]) => {
    const end = direct ? directIoLength(runEnd) : runEnd;
    // pwrite may write less than asked: loop until the run is written.
    for (let done = start; done < end; ) {
      const { bytesWritten } = await handle.write(memory, done, end - done, at + done);
      done += bytesWritten;
    }
  });
  try {
    await Promise.all(writes);
  } catch (error) {
    throw new StoreWriteError(error as Error);
  }
}

/**
 * Names this store writes: `<image id>`, `<image id>.staged`, `<image id>.<12 hex>.tmp` (and `.raw.tmp`, a conversion in the work directory). The
 * start-up sweep never touches anything else (an operator's file, a directory, a link).
 */
const storeNamePattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(\.staged|\.[0-9a-f]{12}(\.raw)?\.tmp)?$/;

/** Who a file store is among the enabled stores: its id (a named store's NAME), description, and config section. */
export interface FileStoreIdentity {
  id: string;
  description?: string | null;
  /** The section configuring it ([NAME] or [glance_store]), for messages. */
  section?: string;
}

export class FileStore {
  readonly type = 'file';
  /** The store id (GET /v2/info/stores): 'file' in the single-store form, else the NAME of enabled_backends NAME:file. */
  readonly id: string;
  readonly description: string;
  readonly section: string;
  private direct: DirectIo | null | undefined;
  constructor(
    readonly directory: string,
    private readonly log: (message: string) => void = () => undefined,
    identity: FileStoreIdentity = { id: 'file' },
  ) {
    this.id = identity.id;
    this.section = identity.section ?? 'glance_store';
    this.description = identity.description ?? (this.section === 'glance_store' ? 'Local file store (filesystem_store_datadir)' : `Local file store '${this.id}'`);
    mkdirSync(directory, { recursive: true, mode: 0o700 });
  }

  /** Direct I/O when the directory's file system takes it (probed at the first write), else null: buffered writes. */
  private directIo(): DirectIo | null {
    if (this.direct === undefined) {
      const probed = DirectIo.probe(this.directory);
      this.direct = typeof probed === 'string' ? null : probed;
      this.log(`image store ${this.id}: ${typeof probed === 'string' ? `writes through the page cache: ${probed}` : `writes with O_DIRECT in ${this.directory}`}`);
    }
    return this.direct;
  }

  /** GET /v2/info/stores/detail's `properties` of this store, as Glance's filesystem store. */
  properties(): Record<string, unknown> {
    return { data_dir: this.directory, chunk_size: writeBatchBytes, thin_provisioning: true };
  }

  pathOf(imageId: string): string {
    return join(this.directory, imageId);
  }

  /**
   * Streams `source` into a temp file, hashing (md5, sha512) on the way; never
   * buffers more than one chunk. Rejects (and removes the temp file) when the
   * source fails, exceeds `sizeBytesMax`, or ends with another length than
   * `expectedBytes`.
   */
  async write(imageId: string, source: Readable, options: { expectedBytes: number | null; sizeBytesMax: number; hash?: boolean }): Promise<PendingWrite> {
    const tempPath = join(this.directory, `${imageId}.${randomBytes(6).toString('hex')}.tmp`);
    const direct = this.directIo();
    const handle = await open(tempPath, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | (direct?.openFlag ?? 0), 0o600);
    // hash: false for data that is converted before it is stored (its checksums would describe other bytes).
    const pipelineOfBatches = new StreamHasher({
      hash: options.hash !== false,
      batchBytes: writeBatchBytes,
      slotsMax: writesInFlightMax,
      sink: (data, at) => writeRuns(handle, data, at, direct !== null),
      allocator: direct ?? plainBatches,
    });
    let position = 0;
    let digests;
    try {
      await readChunks(source, (chunk) => {
        position += chunk.length;
        if (position > options.sizeBytesMax) throw new SizeLimitExceeded(options.sizeBytesMax);
        return pipelineOfBatches.update(chunk);
      });
      digests = await pipelineOfBatches.digest();
      if (options.expectedBytes !== null && position !== options.expectedBytes) throw new SizeMismatch(options.expectedBytes, position);
      try {
        await handle.truncate(position);
        await handle.sync();
        await handle.close();
      } catch (error) {
        throw new StoreWriteError(error as Error);
      }
    } catch (error) {
      pipelineOfBatches.abort();
      await pipelineOfBatches.drain();
      await handle.close().catch(() => undefined);
      await rm(tempPath, { force: true });
      throw error;
    }
    return { tempPath, sizeBytes: position, ...digests };
  }

  /** Publishes a pending write under the image's name (atomic rename, made durable by a directory fsync). */
  async commit(imageId: string, pending: PendingWrite): Promise<void> {
    await rename(pending.tempPath, this.pathOf(imageId));
    await this.syncDirectory();
  }

  /** A rename survives a power loss only once its directory is synced. */
  private async syncDirectory(): Promise<void> {
    const dir = await open(this.directory, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }

  /** Name of an image's staged data (glance-direct import) in the store directory. */
  stagedName(imageId: string): string {
    return `${imageId}.staged`;
  }

  stagedPath(imageId: string): string {
    return join(this.directory, this.stagedName(imageId));
  }

  /** Keeps a pending write as the image's staged data (atomic rename). */
  async stage(imageId: string, pending: PendingWrite): Promise<void> {
    await rename(pending.tempPath, this.stagedPath(imageId));
    await this.syncDirectory();
  }

  /** Publishes staged data under the image's name (atomic rename). */
  async commitStaged(imageId: string): Promise<void> {
    await rename(this.stagedPath(imageId), this.pathOf(imageId));
    await this.syncDirectory();
  }

  /** Removes staged data; succeeds if it is already gone. */
  async discardStaged(imageId: string): Promise<void> {
    await rm(this.stagedPath(imageId), { force: true });
  }

  async stagedSizeOf(imageId: string): Promise<number | null> {
    try {
      return (await stat(this.stagedPath(imageId))).size;
    } catch {
      return null;
    }
  }

  /** Removes a pending write; succeeds if it is already gone. */
  async discard(pending: PendingWrite): Promise<void> {
    await rm(pending.tempPath, { force: true });
  }

  /** Removes an image's data; succeeds if it is already gone. */
  async delete(imageId: string): Promise<void> {
    await rm(this.pathOf(imageId), { force: true });
  }

  /** Reads bytes `start`..`end` (inclusive) of an image's data. */
  read(imageId: string, range?: { start: number; end: number }): Readable {
    // 1 MiB reads: with the default 64 KiB a download made sixteen times the events and syscalls.
    return createReadStream(this.pathOf(imageId), { highWaterMark: 1 << 20, ...(range ? { start: range.start, end: range.end } : {}) });
  }

  async sizeOf(imageId: string): Promise<number | null> {
    try {
      return (await stat(this.pathOf(imageId))).size;
    } catch {
      return null;
    }
  }

  /**
   * Start-up cleanup: removes temp files (uploads a crash interrupted) and files no image row
   * refers to, among the regular files named as this store names them; logs each. Returns the
   * names removed.
   */
  async removeLeftovers(isKnown: (imageId: string) => boolean): Promise<string[]> {
    const removed: string[] = [];
    for (const entry of await readdir(this.directory, { withFileTypes: true })) {
      const name = entry.name;
      if (!entry.isFile() || !storeNamePattern.test(name)) continue;
      if (name.endsWith('.tmp') || !isKnown(name)) {
        await rm(join(this.directory, name), { force: true, recursive: false });
        this.log(`image store: removed ${join(this.directory, name)} (${name.endsWith('.tmp') ? 'an upload a crash interrupted' : 'no image refers to it'})`);
        removed.push(name);
      }
    }
    return removed;
  }
}
