/**
 * Block digests for the posix backup driver, computed on worker threads so
 * hashing a 32 MiB chunk in 4 KiB blocks (8,192 sha256 calls, ~30 ms of CPU)
 * neither blocks the API's event loop nor waits for it. Chunk buffers live in
 * SharedArrayBuffers, so a job sends no bytes: only the buffer's handle goes
 * to the worker and the digests come back.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** Bytes kept of each block's sha256: 128 bits detect any change; the chunk's full sha256 over them is checked too. */
export const blockDigestBytes = 16;

// Plain CommonJS evaluated in the worker: no TypeScript loader is needed there.
const workerSource = `
const { parentPort } = require('node:worker_threads');
const crypto = require('node:crypto');
const sha256 = crypto.hash ? (data) => crypto.hash('sha256', data, 'buffer') : (data) => crypto.createHash('sha256').update(data).digest();
parentPort.on('message', (job) => {
  try {
    const data = new Uint8Array(job.buffer, job.byteOffset, job.length);
    const blocks = Math.ceil(job.length / job.blockBytes);
    const out = new Uint8Array(blocks * job.digestBytes);
    for (let b = 0; b < blocks; b++) {
      const start = b * job.blockBytes;
      const digest = sha256(data.subarray(start, Math.min(start + job.blockBytes, job.length)));
      out.set(digest.subarray(0, job.digestBytes), b * job.digestBytes);
    }
    parentPort.postMessage({ id: job.id, digests: out.buffer }, [out.buffer]);
  } catch (error) {
    parentPort.postMessage({ id: job.id, error: String(error && error.message || error) });
  }
});
`;

interface Pending {
  resolve: (digests: Buffer) => void;
  reject: (error: Error) => void;
}

interface HashWorker {
  worker: Worker;
  pending: Map<number, Pending>;
}

/** Allocates a chunk buffer the hasher can read without a copy. */
export function allocShared(bytes: number): Buffer {
  return Buffer.from(new SharedArrayBuffer(bytes));
}

export class BlockHasher {
  private workers: HashWorker[] = [];
  private nextJob = 0;

  /** `threadsMax` bounds the worker threads (default: the cores, at most 4). */
  constructor(private readonly threadsMax = Math.max(1, Math.min(4, availableParallelism()))) {}

  /**
   * The digests (blockDigestBytes each, block order) of `data` cut into
   * `blockBytes` blocks, the last one possibly short. `data` must be a view
   * of a SharedArrayBuffer (see allocShared) and must not change until this resolves.
   */
  digest(data: Buffer, blockBytes: number): Promise<Buffer> {
    if (!(data.buffer instanceof SharedArrayBuffer)) throw new Error('BlockHasher.digest needs a buffer from allocShared()');
    const id = this.nextJob++;
    const target = this.pick();
    return new Promise<Buffer>((resolve, reject) => {
      target.pending.set(id, { resolve, reject });
      target.worker.ref();
      target.worker.postMessage({ id, buffer: data.buffer, byteOffset: data.byteOffset, length: data.length, blockBytes, digestBytes: blockDigestBytes });
    });
  }

  /** Stops the worker threads; a later digest() starts new ones. */
  async close(): Promise<void> {
    const workers = this.workers;
    this.workers = [];
    await Promise.all(workers.map((w) => w.worker.terminate()));
  }

  /** The least busy worker, starting one while fewer than threadsMax run. */
  private pick(): HashWorker {
    const idle = this.workers.find((w) => w.pending.size === 0);
    if (idle) return idle;
    if (this.workers.length < this.threadsMax) return this.spawn();
    return this.workers.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
  }

  private spawn(): HashWorker {
    const entry: HashWorker = { worker: new Worker(workerSource, { eval: true }), pending: new Map() };
    entry.worker.unref(); // an idle hasher must not keep the process alive; digest() refs it while jobs run
    entry.worker.on('message', (message: { id: number; digests?: ArrayBuffer; error?: string }) => {
      const job = entry.pending.get(message.id);
      if (!job) return;
      entry.pending.delete(message.id);
      if (entry.pending.size === 0) entry.worker.unref();
      if (message.digests) job.resolve(Buffer.from(message.digests));
      else job.reject(new Error(`block hashing failed: ${message.error}`));
    });
    const fail = (error: Error) => {
      this.workers = this.workers.filter((w) => w !== entry);
      for (const job of entry.pending.values()) job.reject(new Error(`block hashing worker stopped: ${error.message}`));
      entry.pending.clear();
    };
    entry.worker.on('error', fail);
    entry.worker.on('exit', (code) => fail(new Error(`exit code ${code}`)));
    this.workers.push(entry);
    return entry;
  }
}
