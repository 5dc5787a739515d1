/**
 * md5 + sha512 of an upload, computed off the event loop: two worker threads
 * (one per algorithm, so the two hashes run in parallel) shared by every
 * upload. Hashing every byte in the main thread capped uploads at about
 * 143 MB/s; here the main thread only copies bytes into batches.
 *
 * Bytes are copied once, into batches of `batchBytes` in shared memory
 * (SharedArrayBuffer) that both workers read without a copy. A store passes
 * a `sink`: each full batch is also handed to it (the file or RBD write
 * reads the same memory), so the bytes are copied once between the socket
 * and the disk, and the write runs beside the hashing, not after it. A batch
 * is reused when both workers and the sink are done with it. At most
 * `slotsMax` batches exist per upload: when all are busy, `update` returns a
 * promise to await, so a fast client cannot fill memory and no garbage
 * builds up; the number of batches is also the number of writes in flight.
 */
import { finished } from 'node:stream';
import type { Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';

const batchBytesDefault = 4 << 20;
const slotsMaxDefault = 8;
const algorithms = ['md5', 'sha512'] as const;
type Algorithm = (typeof algorithms)[number];

/** CommonJS source so the worker needs no TypeScript loader. */
const workerSource = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const sessions = new Map();
parentPort.on('message', (m) => {
  if (m.type === 'update') {
    let hash = sessions.get(m.id);
    if (!hash) { hash = createHash(m.algorithm); sessions.set(m.id, hash); }
    hash.update(m.data.subarray(0, m.length));
    parentPort.postMessage({ type: 'ack', id: m.id, slot: m.slot });
  } else if (m.type === 'digest') {
    const hash = sessions.get(m.id) || createHash(m.algorithm);
    sessions.delete(m.id);
    parentPort.postMessage({ type: 'digest', id: m.id, hex: hash.digest('hex') });
  } else if (m.type === 'abort') {
    sessions.delete(m.id);
  }
});
`;

interface Session {
  onAck(slot: number): void;
  onDigest(hex: string): void;
  onError(error: Error): void;
}

/** One worker thread hashing with one algorithm for many sessions, in message order. */
class HashWorker {
  private worker: Worker | null = null;
  private readonly sessions = new Map<number, Session>();

  constructor(readonly algorithm: Algorithm) {}

  private get thread(): Worker {
    if (!this.worker) {
      // No execArgv: the worker is plain CommonJS and needs no TypeScript loader.
      const worker = new Worker(workerSource, { eval: true, execArgv: [] });
      worker.on('message', (m: { type: string; id: number; slot?: number; hex?: string }) => {
        const session = this.sessions.get(m.id);
        if (!session) return;
        if (m.type === 'ack') session.onAck(m.slot!);
        else if (m.type === 'digest') {
          this.sessions.delete(m.id);
          this.updateRef();
          session.onDigest(m.hex!);
        }
      });
      const fail = (error: Error) => {
        if (this.worker === worker) this.worker = null;
        for (const session of this.sessions.values()) session.onError(error);
        this.sessions.clear();
      };
      worker.on('error', fail);
      worker.on('exit', (code) => fail(new Error(`hash worker (${this.algorithm}) exited with code ${code}`)));
      this.worker = worker;
      this.updateRef();
    }
    return this.worker;
  }

  /** The worker keeps the process alive only while a session waits on it (set after the listeners, which ref it). */
  private updateRef(): void {
    if (this.sessions.size > 0) this.worker?.ref();
    else this.worker?.unref();
  }

  open(id: number, session: Session): void {
    this.sessions.set(id, session);
    this.updateRef();
  }

  /** `data` views shared memory: the worker reads it in place. */
  update(id: number, slot: number, data: Uint8Array, length: number): void {
    this.thread.postMessage({ type: 'update', id, algorithm: this.algorithm, slot, data, length });
  }

  digest(id: number): void {
    this.thread.postMessage({ type: 'digest', id, algorithm: this.algorithm });
  }

  abort(id: number): void {
    this.sessions.delete(id);
    this.worker?.postMessage({ type: 'abort', id });
    this.updateRef();
  }
}

const workers: Record<Algorithm, HashWorker> = { md5: new HashWorker('md5'), sha512: new HashWorker('sha512') };
let nextSessionId = 1;

/**
 * Batches no upload is using, by size, for the next uploads. A SharedArrayBuffer
 * is freed only once every thread that received it has collected its garbage,
 * and a hash worker allocates so little that it seldom does: before this pool, a
 * server that took upload after upload grew by its batches each time (about
 * 100 MiB per rbd upload). Reused, the memory stays bounded by the uploads running
 * at once. A batch is given back only when no worker or write still reads it.
 */
const freeBatches = new Map<string, Buffer[]>();
const freeBatchesPerSizeMax = 32;

/**
 * Makes a store's batches: `plainBatches` for any sink, or a store's own kind (the file store's
 * direct I/O needs batches at a block-aligned address). Batches are pooled per kind and size.
 */
export interface BatchAllocator {
  /** Names the kind in the pool: batches of one kind and size are interchangeable. */
  readonly kind: string;
  /** A batch of `bytes` in shared memory (a view: its SharedArrayBuffer may be larger). */
  allocate(bytes: number): Buffer;
}

export const plainBatches: BatchAllocator = { kind: 'plain', allocate: (bytes) => Buffer.from(new SharedArrayBuffer(bytes)) };

/** Free batches of `bytes` in the pool (for tests). */
export function pooledBatches(bytes: number, kind = plainBatches.kind): number {
  return freeBatches.get(`${kind}:${bytes}`)?.length ?? 0;
}

function takeBatch(bytes: number, allocator: BatchAllocator): Buffer {
  return freeBatches.get(`${allocator.kind}:${bytes}`)?.pop() ?? allocator.allocate(bytes);
}

function giveBackBatch(batch: Buffer, allocator: BatchAllocator): void {
  const key = `${allocator.kind}:${batch.length}`;
  let list = freeBatches.get(key);
  if (!list) freeBatches.set(key, (list = []));
  if (list.length < freeBatchesPerSizeMax) list.push(batch);
}

/**
 * Copies `source` (not empty) to `target` at `at`, with one memcpy. `Buffer.copy` into a batch is a
 * TypedArray `set`, which V8 does word by word (relaxed atomics) when the target is shared memory:
 * 0.2 s per GiB of an upload's main thread here, about twice this. `fill` with a buffer as the value
 * is a plain memcpy when the value is as long as the range.
 */
export function copyInto(target: Buffer, at: number, source: Uint8Array): void {
  target.fill(source, at, at + source.length);
}

/**
 * Reads `source` to its end, handing each chunk to `onChunk` in order. When `onChunk` returns a
 * promise (every batch busy), the source is paused until it settles: the chunks a fast client
 * sends meanwhile wait in the socket, not in memory. Resolves once the source has ended and the
 * last promise has settled. When `onChunk` throws or its promise rejects, or the source fails or
 * closes early, the source is destroyed (as `pipeline` does) and the promise rejects with that error.
 *
 * A 'data' listener instead of `pipeline` into a Writable: an upload is 16,384 chunks per GiB, and
 * a Writable kept up to a megabyte of them while waiting, long enough to survive young-generation
 * collections; promoted to the old generation they made V8 run full collections every 100 ms.
 */
export function readChunks(source: Readable, onChunk: (chunk: Buffer) => Promise<void> | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let failed = false;
    let ended = false;
    let waiting: Promise<void> | null = null;
    const fail = (error: Error) => {
      if (failed) return;
      failed = true;
      source.off('data', onData);
      stopWatching();
      // Later errors of the source (a socket reset by the destroy) are echoes of this failure.
      source.on('error', () => undefined);
      if (!source.destroyed) source.destroy();
      reject(error);
    };
    const onData = (chunk: Buffer) => {
      if (failed) return;
      let busy: Promise<void> | undefined;
      try {
        busy = onChunk(chunk);
      } catch (error) {
        return fail(error as Error);
      }
      if (!busy) return;
      source.pause();
      waiting = busy.then(
        () => {
          waiting = null;
          if (failed) return;
          if (ended) resolve();
          else source.resume();
        },
        (error: Error) => fail(error),
      );
    };
    // 'end' can come while the last chunk still waits for a batch: resolve only when both are done.
    const stopWatching = finished(source, { writable: false }, (error) => {
      if (error) return fail(error);
      ended = true;
      if (!waiting && !failed) resolve();
    });
    source.on('data', onData);
    // A source paused before (flowing false) would not start on a new 'data' listener alone.
    source.resume();
  });
}

export interface Digests {
  md5Hex: string;
  sha512Hex: string;
}

/** Writes `data` (a view of a shared batch: do not keep it) at byte `offset` of the stream. */
export type BatchSink = (data: Buffer, offset: number) => Promise<void>;

export interface StreamHasherOptions {
  /** false: no hashing, batches only go to `sink` (data converted before it is stored). */
  hash?: boolean;
  sink?: BatchSink;
  batchBytes?: number;
  slotsMax?: number;
  /** Where batches come from (default: plain shared memory). */
  allocator?: BatchAllocator;
}

/**
 * The md5 and sha512 of a byte stream fed by `update`, and with a `sink`,
 * the stream written in batches. Call `digest` once at the end (it also
 * waits for every write), or `abort` then `drain` when the stream is
 * abandoned. A worker that dies, or a write that fails, makes
 * `update`/`digest` reject.
 */
export class StreamHasher {
  private readonly id = nextSessionId++;
  private readonly algorithms: readonly Algorithm[];
  private readonly sink: BatchSink | null;
  private readonly batchBytes: number;
  private readonly slotsMax: number;
  private readonly allocator: BatchAllocator;
  /** Bytes handed to the workers and the sink so far: the stream offset of the next batch. */
  private postedBytes = 0;
  private sinkWrites = 0;
  /** Shared-memory batches; `pending[i]` counts the workers still hashing slot i. */
  private readonly slots: Buffer[] = [];
  private readonly pending: number[] = [];
  private current = -1;
  private fill = 0;
  private readonly digests: Partial<Record<Algorithm, string>> = {};
  private failure: Error | null = null;
  /** Waiters for a slot to free or a write to finish (an update, `drain`). */
  private waiters: (() => void)[] = [];
  private finished: { resolve: (d: Digests) => void; reject: (e: Error) => void } | null = null;

  constructor(options: StreamHasherOptions = {}) {
    this.algorithms = options.hash === false ? [] : algorithms;
    this.sink = options.sink ?? null;
    this.batchBytes = options.batchBytes ?? batchBytesDefault;
    this.slotsMax = options.slotsMax ?? slotsMaxDefault;
    this.allocator = options.allocator ?? plainBatches;
    if (this.algorithms.length === 0 && !this.sink) throw new Error('StreamHasher: nothing to do (no hashing and no sink)');
    for (const algorithm of this.algorithms) {
      workers[algorithm].open(this.id, {
        onAck: (slot) => {
          this.unpend(slot);
          this.notify();
        },
        onDigest: (hex) => {
          this.digests[algorithm] = hex;
          this.settle();
        },
        onError: (error) => {
          this.failure ??= error;
          this.notify();
          this.settle();
        },
      });
    }
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  private changed(): Promise<void> {
    return new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  private settle(): void {
    if (!this.finished) return;
    if (this.failure) {
      this.releaseIdleSlots();
      this.finished.reject(this.failure);
    } else if (this.algorithms.length === 0) {
      this.releaseIdleSlots();
      this.finished.resolve({ md5Hex: '', sha512Hex: '' });
    } else if (this.digests.md5 !== undefined && this.digests.sha512 !== undefined) {
      // Each worker acknowledges every batch before it answers the digest: no slot is read any more.
      this.releaseIdleSlots();
      this.finished.resolve({ md5Hex: this.digests.md5, sha512Hex: this.digests.sha512 });
    }
  }

  /** One reader (a worker or the write) is done with `slot`; nothing once the slots were released. */
  private unpend(slot: number): void {
    if (slot < this.pending.length) this.pending[slot]! -= 1;
  }

  /** Gives the slots no worker and no write still reads back to the pool (once); a busy one is left to the garbage collector. */
  private releaseIdleSlots(): void {
    for (let i = 0; i < this.slots.length; i++) {
      if (this.pending[i] === 0) giveBackBatch(this.slots[i]!, this.allocator);
    }
    this.slots.length = 0;
    this.pending.length = 0;
  }

  /** A slot both workers are done with, a new one while fewer than `slotsMax` exist, else -1. */
  private freeSlot(): number {
    const free = this.pending.indexOf(0);
    if (free >= 0) return free;
    if (this.slots.length >= this.slotsMax) return -1;
    this.slots.push(takeBatch(this.batchBytes, this.allocator));
    this.pending.push(0);
    return this.slots.length - 1;
  }

  private post(): void {
    if (this.current < 0 || this.fill === 0 || this.failure) return;
    const slot = this.current;
    const length = this.fill;
    for (const algorithm of this.algorithms) workers[algorithm].update(this.id, slot, this.slots[slot]!, length);
    this.pending[slot] = this.algorithms.length + (this.sink ? 1 : 0);
    if (this.sink) {
      this.sinkWrites += 1;
      const done = () => {
        this.sinkWrites -= 1;
        this.unpend(slot);
        this.notify();
      };
      this.sink(this.slots[slot]!.subarray(0, length), this.postedBytes).then(done, (error: Error) => {
        this.failure ??= error;
        done();
        this.settle();
      });
    }
    this.postedBytes += length;
    this.current = -1;
    this.fill = 0;
  }

  /** Adds bytes; returns a promise when every batch is still being hashed (await it before adding more). */
  update(chunk: Buffer): Promise<void> | undefined {
    if (this.failure) return Promise.reject(this.failure);
    let offset = 0;
    while (offset < chunk.length) {
      if (this.current < 0) {
        this.current = this.freeSlot();
        if (this.current < 0) return this.waitThenUpdate(chunk.subarray(offset));
      }
      const n = Math.min(chunk.length - offset, this.batchBytes - this.fill);
      copyInto(this.slots[this.current]!, this.fill, n === chunk.length ? chunk : chunk.subarray(offset, offset + n));
      this.fill += n;
      offset += n;
      if (this.fill === this.batchBytes) this.post();
    }
    return undefined;
  }

  private async waitThenUpdate(rest: Buffer): Promise<void> {
    while (!this.failure && this.pending.indexOf(0) < 0) await this.changed();
    if (this.failure) throw this.failure;
    await this.update(rest);
  }

  /**
   * The digests of every byte passed to `update` (each awaited when it returned
   * a promise), once every batch is written by the sink; empty strings when not hashing.
   */
  async digest(): Promise<Digests> {
    this.post();
    await this.drain();
    if (this.failure) throw this.failure;
    const done = new Promise<Digests>((resolve, reject) => (this.finished = { resolve, reject }));
    for (const algorithm of this.algorithms) workers[algorithm].digest(this.id);
    this.settle();
    return done;
  }

  /** Resolves when no sink write is in flight (before the target is closed or removed); never rejects. */
  async drain(): Promise<void> {
    while (this.sinkWrites > 0) await this.changed();
  }

  /** Forgets the session (the upload failed); safe to call more than once. Await `drain` before closing the sink's target. */
  abort(): void {
    for (const algorithm of this.algorithms) workers[algorithm].abort(this.id);
    this.failure ??= new Error('upload abandoned');
    // Slots a worker or a write still reads stay out of the pool: their acknowledgements no longer come.
    this.releaseIdleSlots();
    this.notify();
  }
}
