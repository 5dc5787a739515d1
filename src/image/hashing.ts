/**
 * md5 + sha512 of an upload, computed off the event loop: two worker threads
 * (one per algorithm, so the two hashes run in parallel) shared by every
 * upload. Hashing every byte in the main thread capped uploads at about
 * 143 MB/s; here the main thread only copies bytes into batches.
 *
 * Bytes are copied once, into batches of `batchBytes` in shared memory
 * (SharedArrayBuffer) that both workers read without a copy; a batch is
 * reused when both have hashed it. At most `slotsMax` batches exist per
 * upload: when all wait in the workers, `update` returns a promise to await,
 * so a fast client cannot fill memory and no garbage builds up.
 */
import { Worker } from 'node:worker_threads';

const batchBytes = 4 << 20;
const slotsMax = 8;
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

export interface Digests {
  md5Hex: string;
  sha512Hex: string;
}

/**
 * The md5 and sha512 of a byte stream fed by `update`. Call `digest` once at
 * the end, or `abort` when the stream is abandoned. A worker that dies makes
 * `update`/`digest` reject.
 */
export class StreamHasher {
  private readonly id = nextSessionId++;
  /** Shared-memory batches; `pending[i]` counts the workers still hashing slot i. */
  private readonly slots: Buffer[] = [];
  private readonly pending: number[] = [];
  private current = -1;
  private fill = 0;
  private readonly digests: Partial<Record<Algorithm, string>> = {};
  private failure: Error | null = null;
  private wake: (() => void) | null = null;
  private finished: { resolve: (d: Digests) => void; reject: (e: Error) => void } | null = null;

  constructor() {
    for (const algorithm of algorithms) {
      workers[algorithm].open(this.id, {
        onAck: (slot) => {
          this.pending[slot]! -= 1;
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
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  private settle(): void {
    if (!this.finished) return;
    if (this.failure) this.finished.reject(this.failure);
    else if (this.digests.md5 !== undefined && this.digests.sha512 !== undefined) this.finished.resolve({ md5Hex: this.digests.md5, sha512Hex: this.digests.sha512 });
  }

  /** A slot both workers are done with, a new one while fewer than `slotsMax` exist, else -1. */
  private freeSlot(): number {
    const free = this.pending.indexOf(0);
    if (free >= 0) return free;
    if (this.slots.length >= slotsMax) return -1;
    this.slots.push(Buffer.from(new SharedArrayBuffer(batchBytes)));
    this.pending.push(0);
    return this.slots.length - 1;
  }

  private post(): void {
    if (this.current < 0 || this.fill === 0) return;
    const slot = this.current;
    for (const algorithm of algorithms) workers[algorithm].update(this.id, slot, this.slots[slot]!, this.fill);
    this.pending[slot] = algorithms.length;
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
      const n = Math.min(chunk.length - offset, batchBytes - this.fill);
      chunk.copy(this.slots[this.current]!, this.fill, offset, offset + n);
      this.fill += n;
      offset += n;
      if (this.fill === batchBytes) this.post();
    }
    return undefined;
  }

  private async waitThenUpdate(rest: Buffer): Promise<void> {
    while (!this.failure && this.pending.indexOf(0) < 0) await new Promise<void>((resolve) => (this.wake = resolve));
    if (this.failure) throw this.failure;
    await this.update(rest);
  }

  /** The digests of every byte passed to `update` (each awaited when it returned a promise). */
  digest(): Promise<Digests> {
    this.post();
    const done = new Promise<Digests>((resolve, reject) => (this.finished = { resolve, reject }));
    for (const algorithm of algorithms) workers[algorithm].digest(this.id);
    this.settle();
    return done;
  }

  /** Forgets the session (the upload failed); safe to call more than once. */
  abort(): void {
    for (const algorithm of algorithms) workers[algorithm].abort(this.id);
  }
}
