/**
 * The directory (POSIX) backup driver, Pumice's embedded default
 * (`backup_driver = posix`, `backup_posix_path`, `backup_file_size`).
 *
 * A backup is a directory `ROOT/CONTAINER/BACKUP_ID/` holding compressed
 * chunk files, a block digest file and a `manifest.json` written last.
 *
 * Each chunk (`backup_file_size`, 32 MiB by default) is cut into blocks
 * (4 KiB); the digest file holds every block's digest (the first 16 bytes of
 * its sha256), and the manifest records for each chunk the sha256 of its
 * blocks' digests, so one hash covers the chunk and any changed block changes
 * it. A chunk is either `zero` (only recorded), or a list of source files
 * with `runs` saying which file supplies each block: a full backup writes
 * one file per chunk; an incremental compares block digests with its
 * parent's digest file and writes only the changed blocks of a chunk (a
 * delta file), pointing at the parent's files for the rest. Runs are
 * flattened, never chained, so a restore is a straight read of the listed
 * files, and the assembled chunk is checked against its sha256.
 *
 * Version-1 manifests (one file per chunk with the sha256 of its bytes) still
 * restore; an incremental on a version-1 parent stores whole changed chunks.
 *
 * Every file is written to a temporary name, synced and renamed: a crash
 * leaves no file under a final name with partial content, and a backup
 * without a manifest is not a backup.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import { brotliCompress, brotliDecompress, constants as zlibConstants } from 'node:zlib';
import { allocShared, BlockHasher, blockDigestBytes } from './block-hasher.ts';
import { writeFully, zeroFileRange } from './file-ranges.ts';

const brotliCompressAsync = promisify(brotliCompress);
const brotliDecompressAsync = promisify(brotliDecompress);

export type ChunkCodec = 'brotli' | 'none';
export const chunkCodecs: readonly ChunkCodec[] = ['brotli', 'none'];

/** Block size of the digests: 1% of a volume changed in scattered 4 KiB writes stores ~1% of it. */
export const defaultBlockBytes = 4096;
/** Files one chunk may be read from; past it an incremental stores the whole chunk again, bounding restore reads. */
export const sourcesPerChunkMax = 16;

/** A chunk of a version-1 manifest: one file holding the whole chunk, with the sha256 of its bytes. */
export type ManifestChunkV1 =
  | { index: number; zero: true }
  | { index: number; zero?: false; sha256: string; file: string; storedBytes: number; /** Set when the chunk is stored uncompressed under a compressing codec. */ raw?: true };

/** A file (relative to the root) that supplies blocks of a chunk. */
export interface ChunkSource {
  file: string;
  /** The chunk's blocks the file holds, in order, as [first, count] runs; absent: every block of the chunk. */
  blocks?: [number, number][];
  /** Stored uncompressed under a compressing codec. */
  raw?: true;
  storedBytes: number;
}

export type ManifestChunk =
  | { index: number; zero: true }
  | {
      index: number;
      zero?: false;
      /** sha256 (hex) of the concatenated digests of the chunk's blocks. */
      sha256: string;
      sources: ChunkSource[];
      /** The chunk's blocks in order: [index into sources, or -1 for zeros, block count]. */
      runs: [number, number][];
    };

interface ManifestCommon {
  format: 'pumice-posix-backup';
  backupId: string;
  volumeId: string;
  parentId: string | null;
  sizeBytes: number;
  chunkBytes: number;
  codec: ChunkCodec;
  createdAt: string;
  /** Chunk files this backup wrote itself (Cinder's object_count). */
  objectCount: number;
  /** Bytes of the files this backup wrote itself (chunks and digests). */
  storedBytes: number;
}

export interface BackupManifestV1 extends ManifestCommon {
  version: 1;
  chunks: ManifestChunkV1[];
}

export interface BackupManifestV2 extends ManifestCommon {
  version: 2;
  blockBytes: number;
  digestBytes: number;
  /** The block digest file (relative to the root): digestBytes per block, ceil(chunkBytes / blockBytes) blocks per chunk; a hole for zero chunks. */
  digestsFile: string;
  chunks: ManifestChunk[];
}

export type BackupManifest = BackupManifestV1 | BackupManifestV2;

/** An expected failure of a backup or restore; `message` names the cause and the fix. */
export class BackupDriverError extends Error {
  constructor(
    readonly reason: 'NotFound' | 'Corrupt' | 'Invalid' | 'Unreachable',
    message: string,
  ) {
    super(message);
  }
}

export interface PosixDriverOptions {
  root: string;
  chunkBytes: number;
  codec: ChunkCodec;
  /** Chunks read, hashed and compressed at once (each holds one chunk buffer). */
  concurrencyMax: number;
  /** Block size of the change detection (default 4096). */
  blockBytes?: number;
}

export interface BackupLocation {
  backupId: string;
  container: string;
}

export type ProgressCallback = (doneBytes: number, totalBytes: number) => void;

export interface BackupInput extends BackupLocation {
  volumeId: string;
  sourcePath: string;
  sizeBytes: number;
  parent: BackupLocation | null;
  onProgress?: ProgressCallback;
}

export interface RestoreInput extends BackupLocation {
  targetPath: string;
  /** The target holds only zeros (a volume created for this restore): zero chunks need no write. */
  targetIsZeroed: boolean;
  /** Zero the bytes beyond the backup's size (restore_discard_excess_bytes). */
  discardExcess: boolean;
  onProgress?: ProgressCallback;
}

const manifestName = 'manifest.json';
const digestsName = 'block-digests.bin';
/** A container names a directory under the root: one path segment of safe characters. */
const containerPattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$/;

export function validContainer(name: string): boolean {
  return containerPattern.test(name) && name !== '.' && name !== '..';
}

const sha256Hex = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

/** A decoded source of a chunk and where each of its blocks sits in it. */
interface DecodedSource {
  data: Buffer;
  /** Byte position of block b in `data`, -1 when the file does not hold it; null: block b is at b * blockBytes. */
  positions: Int32Array | null;
}

export class PosixBackupDriver {
  readonly driverName = 'posix';
  readonly blockBytes: number;
  private readonly hasher = new BlockHasher();
  private readonly zeroDigestCache = new Map<number, Buffer>();
  /** Chunk buffers kept between runs: shared memory is freed late by the GC, so fresh ones per backup grew the RSS. */
  private readonly freeBuffers: Buffer[] = [];

  constructor(readonly options: PosixDriverOptions) {
    if (!Number.isInteger(options.chunkBytes) || options.chunkBytes < 4096) throw new Error(`chunkBytes ${options.chunkBytes} must be an integer >= 4096`);
    this.blockBytes = Math.min(options.blockBytes ?? defaultBlockBytes, options.chunkBytes);
    if (!Number.isInteger(this.blockBytes) || this.blockBytes < 512) throw new Error(`blockBytes ${this.blockBytes} must be an integer >= 512`);
  }

  /** Creates the root directory and checks it can be written; throws naming the fix when not. */
  async start(): Promise<void> {
    try {
      await mkdir(this.options.root, { recursive: true, mode: 0o700 });
      const probe = join(this.options.root, `.probe-${process.pid}`);
      const fh = await open(probe, 'w');
      await fh.close();
      await rm(probe, { force: true });
    } catch (error) {
      throw new BackupDriverError('Unreachable', `backup directory ${this.options.root} cannot be written: ${(error as Error).message}. Check backup_posix_path and its permissions.`);
    }
  }

  /** Stops the hashing threads (they also stop on their own with the process). */
  async stop(): Promise<void> {
    await this.hasher.close();
  }

  /**
   * A file a manifest names (relative to the root), checked to stay inside the root: manifests
   * come back through backup-record imports, so a crafted `../` path must not read, restore from,
   * or delete a file elsewhere on the host.
   */
  private inRoot(file: string): string {
    const root = resolve(this.options.root);
    const path = resolve(root, file);
    const rel = relative(root, path);
    if (typeof file !== 'string' || file.length === 0 || isAbsolute(file) || rel === '' || rel.startsWith('..') || isAbsolute(rel)) {
      throw new BackupDriverError('Corrupt', `backup is corrupt: its manifest names a file outside the backup directory (${JSON.stringify(String(file).slice(0, 100))})`);
    }
    return path;
  }

  backupDir(location: BackupLocation): string {
    if (!validContainer(location.container)) throw new BackupDriverError('Invalid', `container '${location.container}' is not a valid directory name`);
    return join(this.options.root, location.container, location.backupId);
  }

  async readManifest(location: BackupLocation): Promise<BackupManifest> {
    const path = join(this.backupDir(location), manifestName);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new BackupDriverError('NotFound', `backup ${location.backupId} has no manifest at ${path}: the backup is incomplete or was removed`);
      }
      throw error;
    }
    let manifest: BackupManifest;
    try {
      manifest = JSON.parse(text) as BackupManifest;
    } catch (error) {
      throw new BackupDriverError('Corrupt', `manifest ${path} of backup ${location.backupId} is not JSON (${(error as Error).message}): the backup is corrupt`);
    }
    if (manifest.format !== 'pumice-posix-backup' || (manifest.version !== 1 && manifest.version !== 2) || manifest.backupId !== location.backupId) {
      throw new BackupDriverError('Corrupt', `manifest ${path} is not a version-1 or -2 Pumice posix manifest of backup ${location.backupId}`);
    }
    return manifest;
  }

  /**
   * Every file a backup's restore reads (its own and its ancestors'), relative
   * to the root, with the manifest's own path first. Throws NotFound/Corrupt as readManifest.
   */
  async referencedFiles(location: BackupLocation): Promise<string[]> {
    const manifest = await this.readManifest(location);
    const files = new Set<string>([`${location.container}/${location.backupId}/${manifestName}`]);
    for (const chunk of manifest.chunks) {
      if (chunk.zero) continue;
      if ('file' in chunk) files.add(chunk.file);
      else for (const source of chunk.sources) files.add(source.file);
    }
    return [...files];
  }

  /** The first of `files` (relative to the root) that is missing, or null when all exist. */
  async firstMissing(files: string[]): Promise<string | null> {
    for (const file of files) {
      try {
        await stat(this.inRoot(file));
      } catch {
        return file;
      }
    }
    return null;
  }

  /**
   * Backs up `sourcePath` (`sizeBytes` long). Idempotent: a re-run starts
   * over from an empty directory. With `parent`, blocks whose digest equals
   * the parent's are referenced, not stored. Returns the manifest written.
   */
  async backup(input: BackupInput): Promise<BackupManifestV2> {
    const { chunkBytes, codec } = this.options;
    const blockBytes = this.blockBytes;
    const blocksPerChunk = Math.ceil(chunkBytes / blockBytes);
    const dir = this.backupDir(input);
    const parentManifest = input.parent ? await this.readManifest(input.parent) : null;
    // Blocks compare only at the same geometry; otherwise the incremental stores every changed chunk whole.
    const parent =
      parentManifest && parentManifest.version === 2 && parentManifest.chunkBytes === chunkBytes && parentManifest.blockBytes === blockBytes && parentManifest.digestBytes === blockDigestBytes
        ? parentManifest
        : null;
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const chunkCount = Math.ceil(input.sizeBytes / chunkBytes);
    const chunks: ManifestChunk[] = new Array(chunkCount);
    let objectCount = 0;
    let storedBytes = 0;
    let doneBytes = 0;
    const ownPrefix = `${input.container}/${input.backupId}/`;
    const digestsPath = join(dir, digestsName);
    const source = await open(input.sourcePath, 'r');
    let digestsOut: FileHandle | null = null;
    let parentDigests: FileHandle | null = null;
    try {
      const digests = (digestsOut = await open(`${digestsPath}.tmp`, 'w', 0o600));
      if (parent) parentDigests = await open(this.inRoot(parent.digestsFile), 'r').catch(() => null);
      const writeChunkFile = async (index: number, data: Buffer, suffix: string): Promise<ChunkSource> => {
        const encoded = await encode(data, codec);
        const raw = codec !== 'none' && encoded === data;
        const name = chunkFileName(index, raw ? 'none' : codec, suffix);
        // Not synced one by one: every file is synced below, before the manifest makes the backup valid.
        await writeAtomically(join(dir, name), encoded, false);
        objectCount += 1;
        storedBytes += encoded.length;
        return { file: `${ownPrefix}${name}`, storedBytes: encoded.length, ...(raw ? { raw: true as const } : {}) };
      };
      await runPool(chunkCount, this.options.concurrencyMax, () => this.takeBuffer(chunkBytes), async (index, buffer) => {
        const offset = index * chunkBytes;
        const length = Math.min(chunkBytes, input.sizeBytes - offset);
        const data = await readFully(source, buffer, length, offset);
        const digestsAt = index * blocksPerChunk * blockDigestBytes;
        if (isZero(data)) {
          // No digests written: a zero chunk's are known (zeroDigests), and the hole keeps the file small for sparse volumes.
          chunks[index] = { index, zero: true };
        } else {
          const blockDigests = await this.hasher.digest(data, blockBytes);
          await writeFully(digests, blockDigests, digestsAt);
          storedBytes += blockDigests.length;
          const sha256 = sha256Hex(blockDigests);
          const previous = parent?.chunks[index];
          if (previous && !previous.zero && previous.sha256 === sha256) {
            chunks[index] = { ...previous, index };
          } else {
            const previousDigests = previous ? await this.verifiedDigests(parentDigests, previous, length, digestsAt) : null;
            const delta = previous && previousDigests ? this.planDelta(previous, previousDigests, blockDigests, data) : null;
            if (delta) {
              const sources = delta.sources;
              if (delta.blocks.length > 0) sources.push({ ...(await writeChunkFile(index, gatherBlocks(data, delta.blocks, blockBytes), '.delta')), blocks: toRuns(delta.blocks) });
              chunks[index] = { index, sha256, sources, runs: delta.runs };
            } else {
              chunks[index] = { index, sha256, sources: [await writeChunkFile(index, data, '')], runs: [[0, Math.ceil(length / blockBytes)]] };
            }
          }
        }
        doneBytes += length;
        input.onProgress?.(doneBytes, input.sizeBytes);
      }, (buffer) => this.giveBuffer(buffer));
      await digests.sync();
    } finally {
      await source.close();
      await digestsOut?.close();
      await parentDigests?.close();
    }
    await rename(`${digestsPath}.tmp`, digestsPath);
    // Syncing after all writes lets the kernel write chunks back while later ones are read (one fsync per
    // chunk as it was written halved throughput with 1 MiB chunks); a crash before the manifest leaves no valid backup.
    const ownFiles = [...new Set(chunks.flatMap((c) => (c.zero ? [] : c.sources.map((s) => s.file))).filter((f) => f.startsWith(ownPrefix)))].map((f) => this.inRoot(f));
    await runPool(ownFiles.length, this.options.concurrencyMax, () => null, async (index) => {
      const fh = await open(ownFiles[index]!, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    });
    const manifest: BackupManifestV2 = {
      format: 'pumice-posix-backup',
      version: 2,
      backupId: input.backupId,
      volumeId: input.volumeId,
      parentId: input.parent?.backupId ?? null,
      sizeBytes: input.sizeBytes,
      chunkBytes,
      blockBytes,
      digestBytes: blockDigestBytes,
      digestsFile: `${ownPrefix}${digestsName}`,
      codec,
      createdAt: new Date().toISOString(),
      objectCount,
      storedBytes,
      chunks,
    };
    await writeAtomically(join(dir, manifestName), Buffer.from(JSON.stringify(manifest)));
    await syncDirectory(dir);
    return manifest;
  }

  private takeBuffer(bytes: number): Buffer {
    const index = this.freeBuffers.findIndex((b) => b.length === bytes);
    return index >= 0 ? this.freeBuffers.splice(index, 1)[0]! : allocShared(bytes);
  }

  private giveBuffer(buffer: Buffer): void {
    // Two runs' worth (a backup and a restore at once) at most.
    if (this.freeBuffers.length < 2 * this.options.concurrencyMax) this.freeBuffers.push(buffer);
  }

  /** Digests of an all-zero chunk of `length` bytes. */
  private zeroDigests(length: number): Buffer {
    let digests = this.zeroDigestCache.get(length);
    if (!digests) {
      const blocks = Math.ceil(length / this.blockBytes);
      digests = Buffer.alloc(blocks * blockDigestBytes);
      const full = createHash('sha256').update(Buffer.alloc(this.blockBytes)).digest().subarray(0, blockDigestBytes);
      for (let b = 0; b < blocks; b++) full.copy(digests, b * blockDigestBytes);
      const tail = length - (blocks - 1) * this.blockBytes;
      createHash('sha256').update(Buffer.alloc(tail)).digest().copy(digests, (blocks - 1) * blockDigestBytes, 0, blockDigestBytes);
      this.zeroDigestCache.set(length, digests);
    }
    return digests;
  }

  /** The parent's digests of a chunk, or null when its digest file does not match the manifest (then the chunk is stored whole). */
  private async verifiedDigests(parentDigests: FileHandle | null, previous: ManifestChunk, length: number, position: number): Promise<Buffer | null> {
    if (previous.zero) return this.zeroDigests(length);
    if (!parentDigests) return null;
    const digests = Buffer.alloc(Math.ceil(length / this.blockBytes) * blockDigestBytes);
    const { bytesRead } = await parentDigests.read(digests, 0, digests.length, position);
    if (bytesRead !== digests.length || sha256Hex(digests) !== previous.sha256) return null;
    return digests;
  }

  /**
   * What an incremental stores of a changed chunk: the blocks whose digest
   * differs from the parent's (all-zero ones become zero runs), and runs
   * pointing at the parent's sources for the rest. Null when storing the
   * whole chunk is better: half of it changed, or it would need more than sourcesPerChunkMax files.
   */
  private planDelta(previous: ManifestChunk, previousDigests: Buffer, digests: Buffer, data: Buffer): { blocks: number[]; sources: ChunkSource[]; runs: [number, number][] } | null {
    const blockBytes = this.blockBytes;
    const blockCount = Math.ceil(data.length / blockBytes);
    const deltaMark = -2;
    const map = previous.zero ? new Int32Array(blockCount).fill(-1) : expandRuns(previous.runs, blockCount);
    if (!map) return null;
    const blocks: number[] = [];
    for (let b = 0; b < blockCount; b++) {
      const at = b * blockDigestBytes;
      if (digests.compare(previousDigests, at, at + blockDigestBytes, at, at + blockDigestBytes) === 0) continue;
      if (isZero(data.subarray(b * blockBytes, Math.min((b + 1) * blockBytes, data.length)))) {
        map[b] = -1;
      } else {
        map[b] = deltaMark;
        blocks.push(b);
      }
    }
    if (blocks.length * blockBytes * 2 > data.length) return null;
    // Keep only the parent's sources still read, renumbered in their order; the delta file comes last.
    const oldSources = previous.zero ? [] : previous.sources;
    const renumber = new Map<number, number>();
    for (const s of map) if (s >= 0 && !renumber.has(s)) renumber.set(s, -1);
    const sources: ChunkSource[] = [];
    for (const s of [...renumber.keys()].sort((a, b) => a - b)) {
      renumber.set(s, sources.length);
      sources.push(oldSources[s]!);
    }
    const deltaIndex = sources.length;
    if (sources.length + (blocks.length > 0 ? 1 : 0) > sourcesPerChunkMax) return null;
    const runs: [number, number][] = [];
    for (let b = 0; b < blockCount; b++) {
      const s = map[b]!;
      const source = s === deltaMark ? deltaIndex : s >= 0 ? renumber.get(s)! : -1;
      const last = runs[runs.length - 1];
      if (last && last[0] === source) last[1] += 1;
      else runs.push([source, 1]);
    }
    return { blocks, sources, runs };
  }

  /**
   * Writes the backup's bytes into `targetPath`, verifying every chunk's
   * sha256 first; a chunk that is missing, undecodable or whose hash differs
   * fails the restore with a message naming the chunk and its file.
   */
  async restore(input: RestoreInput): Promise<BackupManifest> {
    const manifest = await this.readManifest(input);
    const targetSize = (await stat(input.targetPath)).size;
    if (targetSize < manifest.sizeBytes) {
      throw new BackupDriverError('Invalid', `restore target is ${targetSize} bytes, smaller than backup ${input.backupId} (${manifest.sizeBytes} bytes)`);
    }
    const target = await open(input.targetPath, 'r+');
    let doneBytes = 0;
    try {
      await runPool(manifest.chunks.length, this.options.concurrencyMax, () => (manifest.version === 2 ? this.takeBuffer(manifest.chunkBytes) : null), async (index, buffer) => {
        const offset = index * manifest.chunkBytes;
        const length = Math.min(manifest.chunkBytes, manifest.sizeBytes - offset);
        const chunk = manifest.chunks[index]!;
        if (chunk.index !== index) throw new BackupDriverError('Corrupt', `backup is corrupt: manifest of backup ${manifest.backupId} lists chunk ${chunk.index} at position ${index}`);
        if (chunk.zero) {
          if (!input.targetIsZeroed) await zeroFileRange(target, input.targetPath, offset, length);
        } else {
          const data = manifest.version === 2 ? await this.assembleChunk(manifest, chunk as Extract<ManifestChunk, { sources: unknown }>, buffer!, length) : await this.readChunkV1(manifest, chunk as Extract<ManifestChunkV1, { file: string }>, length);
          await writeFully(target, data, offset);
        }
        doneBytes += length;
        input.onProgress?.(doneBytes, manifest.sizeBytes);
      }, (buffer) => buffer && this.giveBuffer(buffer));
      if (input.discardExcess && targetSize > manifest.sizeBytes && !input.targetIsZeroed) {
        await zeroFileRange(target, input.targetPath, manifest.sizeBytes, targetSize - manifest.sizeBytes);
      }
      await target.sync();
    } finally {
      await target.close();
    }
    return manifest;
  }

  /** Reads a version-2 chunk from its sources into `buffer` and checks its blocks against the chunk's sha256. */
  private async assembleChunk(manifest: BackupManifestV2, chunk: Extract<ManifestChunk, { sources: unknown }>, buffer: Buffer, length: number): Promise<Buffer> {
    const { blockBytes } = manifest;
    const blockCount = Math.ceil(length / blockBytes);
    const data = buffer.subarray(0, length);
    const decoded = new Map<number, DecodedSource>();
    let block = 0;
    for (const [sourceIndex, count] of chunk.runs) {
      if (block + count > blockCount) break;
      const start = block * blockBytes;
      const end = Math.min((block + count) * blockBytes, length);
      if (sourceIndex === -1) {
        data.fill(0, start, end);
      } else {
        let source = decoded.get(sourceIndex);
        if (!source) {
          source = await this.readSource(manifest, chunk, sourceIndex, length);
          decoded.set(sourceIndex, source);
        }
        if (!source.positions) {
          source.data.copy(data, start, start, end);
        } else {
          for (let b = block; b < block + count; b++) {
            const at = source.positions[b] ?? -1;
            const blockEnd = Math.min((b + 1) * blockBytes, length);
            if (at < 0) throw this.corrupt(manifest, chunk, `its runs read block ${b} from ${chunk.sources[sourceIndex]!.file}, which does not hold it`);
            source.data.copy(data, b * blockBytes, at, at + blockEnd - b * blockBytes);
          }
        }
      }
      block += count;
    }
    if (block !== blockCount) throw this.corrupt(manifest, chunk, `its runs cover ${block} blocks, the chunk has ${blockCount}`);
    const digests = await this.hasher.digest(data, blockBytes);
    if (sha256Hex(digests) !== chunk.sha256) throw await this.blame(manifest, chunk, digests, length);
    return data;
  }

  private corrupt(manifest: BackupManifest, chunk: { index: number; sources: ChunkSource[] }, detail: string): BackupDriverError {
    return new BackupDriverError('Corrupt', `backup is corrupt: chunk ${chunk.index} (${chunk.sources.map((s) => s.file).join(', ')}) of backup ${manifest.backupId}: ${detail}`);
  }

  /** Reads and decodes one source file of a chunk and maps its blocks. */
  private async readSource(manifest: BackupManifestV2, chunk: Extract<ManifestChunk, { sources: unknown }>, sourceIndex: number, length: number): Promise<DecodedSource> {
    const source = chunk.sources[sourceIndex];
    if (!source) throw this.corrupt(manifest, chunk, `its runs name source ${sourceIndex}, which is not listed`);
    const what = `chunk ${chunk.index} (${source.file}) of backup ${manifest.backupId}`;
    let body: Buffer;
    try {
      body = await readFile(this.inRoot(source.file));
    } catch (error) {
      throw new BackupDriverError('Corrupt', `backup is corrupt: ${what} cannot be read: ${(error as Error).message}`);
    }
    let data: Buffer;
    try {
      data = await decode(body, source.raw ? 'none' : manifest.codec);
    } catch (error) {
      throw new BackupDriverError('Corrupt', `backup is corrupt: ${what} cannot be decompressed (${(error as Error).message})`);
    }
    const { blockBytes } = manifest;
    const blockCount = Math.ceil(length / blockBytes);
    let expected = length;
    let positions: Int32Array | null = null;
    if (source.blocks) {
      positions = new Int32Array(blockCount).fill(-1);
      expected = 0;
      for (const [first, count] of source.blocks) {
        for (let b = first; b < first + count && b < blockCount; b++) {
          positions[b] = expected;
          expected += Math.min(blockBytes, length - b * blockBytes);
        }
      }
    }
    if (data.length !== expected) throw new BackupDriverError('Corrupt', `backup is corrupt: ${what} holds ${data.length} bytes, the manifest records ${expected}`);
    return { data, positions };
  }

  /** The error for a chunk whose blocks do not match its sha256, naming the files of the blocks that differ when the digest file tells. */
  private async blame(manifest: BackupManifestV2, chunk: Extract<ManifestChunk, { sources: unknown }>, digests: Buffer, length: number): Promise<BackupDriverError> {
    const recorded = Buffer.alloc(digests.length);
    const position = chunk.index * Math.ceil(manifest.chunkBytes / manifest.blockBytes) * manifest.digestBytes;
    let known = false;
    try {
      const fh = await open(this.inRoot(manifest.digestsFile), 'r');
      try {
        known = (await fh.read(recorded, 0, recorded.length, position)).bytesRead === recorded.length && sha256Hex(recorded) === chunk.sha256;
      } finally {
        await fh.close();
      }
    } catch {
      // no digest file: name every file of the chunk
    }
    if (!known) return this.corrupt(manifest, chunk, `its blocks have sha256 ${sha256Hex(digests)}, the manifest records ${chunk.sha256}`);
    const blockCount = Math.ceil(length / manifest.blockBytes);
    const sourceOf = expandRuns(chunk.runs, blockCount);
    const badBlocks: number[] = [];
    const badFiles = new Set<string>();
    for (let b = 0; b < blockCount; b++) {
      const at = b * manifest.digestBytes;
      if (digests.compare(recorded, at, at + manifest.digestBytes, at, at + manifest.digestBytes) === 0) continue;
      badBlocks.push(b);
      const s = sourceOf?.[b] ?? -1;
      badFiles.add(s >= 0 ? chunk.sources[s]!.file : 'zero run');
    }
    return new BackupDriverError(
      'Corrupt',
      `backup is corrupt: chunk ${chunk.index} (${[...badFiles].join(', ')}) of backup ${manifest.backupId}: ${badBlocks.length} block(s) of ${manifest.blockBytes} bytes ` +
        `(first: block ${badBlocks[0]}) do not match their recorded sha256`,
    );
  }

  /** Reads, decodes and verifies one chunk of a version-1 manifest. */
  private async readChunkV1(manifest: BackupManifest, chunk: Extract<ManifestChunkV1, { file: string }>, length: number): Promise<Buffer> {
    const path = this.inRoot(chunk.file);
    const what = `chunk ${chunk.index} (${chunk.file}) of backup ${manifest.backupId}`;
    let body: Buffer;
    try {
      body = await readFile(path);
    } catch (error) {
      throw new BackupDriverError('Corrupt', `backup is corrupt: ${what} cannot be read: ${(error as Error).message}`);
    }
    let data: Buffer;
    try {
      data = await decode(body, chunk.raw ? 'none' : manifest.codec);
    } catch (error) {
      throw new BackupDriverError('Corrupt', `backup is corrupt: ${what} cannot be decompressed (${(error as Error).message})`);
    }
    const sha256 = sha256Hex(data);
    if (data.length !== length || sha256 !== chunk.sha256) {
      throw new BackupDriverError('Corrupt', `backup is corrupt: ${what} has sha256 ${sha256} (${data.length} bytes), the manifest records ${chunk.sha256} (${length} bytes)`);
    }
    return data;
  }

  /** Removes the backup's directory. Succeeds if it is already gone. */
  async delete(location: BackupLocation): Promise<void> {
    await rm(this.backupDir(location), { recursive: true, force: true });
  }

  /** Sum of the sizes of the files this backup stored (for tests and reports). */
  async storedBytes(location: BackupLocation): Promise<number> {
    return (await this.readManifest(location)).storedBytes;
  }
}

/** The source index of each block from [source, count] runs; null when the runs do not cover exactly `blockCount` blocks. */
function expandRuns(runs: [number, number][], blockCount: number): Int32Array | null {
  const map = new Int32Array(blockCount);
  let block = 0;
  for (const [source, count] of runs) {
    if (block + count > blockCount) return null;
    map.fill(source, block, block + count);
    block += count;
  }
  return block === blockCount ? map : null;
}

/** Sorted block numbers as [first, count] runs. */
function toRuns(blocks: number[]): [number, number][] {
  const runs: [number, number][] = [];
  for (const b of blocks) {
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === b) last[1] += 1;
    else runs.push([b, 1]);
  }
  return runs;
}

/** The listed blocks of `data`, concatenated (the last block of the chunk may be short). */
function gatherBlocks(data: Buffer, blocks: number[], blockBytes: number): Buffer {
  const size = blocks.reduce((sum, b) => sum + Math.min(blockBytes, data.length - b * blockBytes), 0);
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const b of blocks) at += data.copy(out, at, b * blockBytes, Math.min((b + 1) * blockBytes, data.length));
  return out;
}

/** Runs `task(i)` for i in [0, count) with at most `workers` at once; each worker owns one `state`, handed to `release` at its end. */
async function runPool<S>(count: number, workers: number, makeState: () => S, task: (index: number, state: S) => Promise<void>, release?: (state: S) => void): Promise<void> {
  let next = 0;
  let failed: unknown = null;
  const worker = async () => {
    const state = makeState();
    while (failed === null && next < count) {
      const index = next++;
      try {
        await task(index, state);
      } catch (error) {
        failed ??= error;
      }
    }
    release?.(state);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(workers, count)) }, worker));
  if (failed !== null) throw failed;
}

/** `chunk-00000003.br`; `suffix` ('.delta') marks a file holding only some blocks of the chunk. */
export function chunkFileName(index: number, codec: ChunkCodec, suffix = ''): string {
  return `chunk-${String(index).padStart(8, '0')}${suffix}${codec === 'brotli' ? '.br' : '.raw'}`;
}

const zeroBlock = Buffer.alloc(1 << 20);

export function isZero(data: Buffer): boolean {
  for (let offset = 0; offset < data.length; offset += zeroBlock.length) {
    const piece = data.subarray(offset, Math.min(data.length, offset + zeroBlock.length));
    if (!piece.equals(zeroBlock.subarray(0, piece.length))) return false;
  }
  return true;
}

/** Bytes compressed first to tell whether a chunk is worth compressing. */
const sampleBytes = 128 * 1024;
/** A sample that does not shrink below this ratio marks the chunk incompressible (stored raw). */
const incompressibleRatio = 0.97;

/**
 * Compresses a chunk, or returns `data` itself (the caller stores it raw) when a sample shows it does
 * not compress (encrypted or already-compressed data) or the result is no smaller: compressing random
 * data costs more time than any other step and saves nothing.
 */
async function encode(data: Buffer, codec: ChunkCodec): Promise<Buffer> {
  if (codec === 'none') return data;
  // Measured per core on a 32 MiB chunk of system files here: brotli quality 0 262 MiB/s (ratio 0.39),
  // quality 1 205 MiB/s (0.36), deflate level 1 112 MiB/s (0.37); on random data deflate 1 ran at 91 MiB/s.
  const params = { [zlibConstants.BROTLI_PARAM_QUALITY]: 0, [zlibConstants.BROTLI_PARAM_SIZE_HINT]: data.length };
  if (data.length > 4 * sampleBytes) {
    const sample = await brotliCompressAsync(data.subarray(0, sampleBytes), { params });
    if (sample.length >= sampleBytes * incompressibleRatio) return data;
  }
  const compressed = await brotliCompressAsync(data, { params });
  return compressed.length < data.length ? compressed : data;
}

async function decode(body: Buffer, codec: ChunkCodec): Promise<Buffer> {
  if (codec === 'none') return body;
  return brotliDecompressAsync(body);
}

async function readFully(fh: FileHandle, buffer: Buffer, length: number, position: number): Promise<Buffer> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buffer, done, length - done, position + done);
    if (bytesRead === 0) {
      buffer.fill(0, done, length); // past the end of a file shorter than the volume: zeros, as the volume reads
      break;
    }
    done += bytesRead;
  }
  return buffer.subarray(0, length);
}


/** Writes `data` to `path` through a temporary name, synced before the rename unless the caller syncs later. */
async function writeAtomically(path: string, data: Buffer, sync = true): Promise<void> {
  const temp = `${path}.tmp`;
  const fh = await open(temp, 'w', 0o600);
  try {
    await writeFully(fh, data, 0);
    if (sync) await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(temp, path);
}

async function syncDirectory(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

