/**
 * A small QMP client over a unix socket: greeting, `qmp_capabilities`, one
 * command at a time with request ids, a timeout on every command, and a
 * bounded buffer of events with sequence numbers so a caller can wait for an
 * event that may arrive before it starts waiting (take `eventSeq()` before
 * sending the command that causes it).
 *
 * Why one command at a time: QEMU runs QMP commands one after the other
 * anyway, and a command stuck behind a slow `blockdev-add` should time out on
 * its own clock, not on the previous command's.
 */
import net from 'node:net';

export interface QmpEvent {
  seq: number;
  event: string;
  data: Record<string, unknown>;
}

export class QmpError extends Error {
  constructor(
    /** `timeout`, `closed`, `connect`, `protocol`, or QEMU's error class (e.g. `GenericError`, `DeviceNotFound`). */
    readonly qmpClass: string,
    message: string,
  ) {
    super(message);
  }
}

const eventsMax = 256;
const lineBytesMax = 16 * 1024 * 1024;

interface Pending {
  id: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class QmpClient {
  private socket: net.Socket | null = null;
  private buffer = '';
  private pending = new Map<string, Pending>();
  private nextId = 1;
  private events: QmpEvent[] = [];
  private seq = 0;
  private eventWaiters = new Set<() => void>();
  private queue: Promise<unknown> = Promise.resolve();
  private closed = true;
  private closeListeners = new Set<() => void>();

  private constructor(readonly socketPath: string) {}

  /** Connects, reads the greeting and negotiates capabilities. Retries connecting until `timeoutMs` (QEMU may not listen yet). */
  static async connect(socketPath: string, options: { timeoutMs: number; retryUntilMs?: number; signal?: AbortSignal }): Promise<QmpClient> {
    const deadline = Date.now() + (options.retryUntilMs ?? 0);
    for (;;) {
      const client = new QmpClient(socketPath);
      try {
        await client.open(options.timeoutMs);
        if (options.signal?.aborted) {
          client.destroy();
          throw new QmpError('closed', `connecting to ${socketPath} was abandoned`);
        }
        return client;
      } catch (err) {
        client.destroy();
        if (Date.now() >= deadline || options.signal?.aborted) throw err;
        await sleep(100);
      }
    }
  }

  private open(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const socket = net.createConnection({ path: this.socketPath });
      this.socket = socket;
      this.closed = false;
      let greeted = false;
      const timer = setTimeout(() => {
        reject(new QmpError('timeout', `no QMP greeting on ${this.socketPath} within ${timeoutMs} ms`));
        socket.destroy();
      }, timeoutMs);
      socket.setEncoding('utf8');
      socket.on('error', (err) => {
        clearTimeout(timer);
        if (!greeted) reject(new QmpError('connect', `cannot connect to QMP socket ${this.socketPath}: ${err.message}`));
        this.onClose();
      });
      socket.on('close', () => {
        clearTimeout(timer);
        if (!greeted) reject(new QmpError('closed', `QMP socket ${this.socketPath} closed before the greeting`));
        this.onClose();
      });
      socket.on('data', (chunk: string) => {
        this.buffer += chunk;
        if (this.buffer.length > lineBytesMax) {
          socket.destroy(new Error('QMP line too long'));
          return;
        }
        let newline: number;
        while ((newline = this.buffer.indexOf('\n')) >= 0) {
          const line = this.buffer.slice(0, newline).trim();
          this.buffer = this.buffer.slice(newline + 1);
          if (!line) continue;
          let message: Record<string, unknown>;
          try {
            message = JSON.parse(line) as Record<string, unknown>;
          } catch {
            continue;
          }
          if (!greeted) {
            if (!('QMP' in message)) continue;
            greeted = true;
            clearTimeout(timer);
            this.execute('qmp_capabilities', undefined, { timeoutMs }).then(() => resolve(), reject);
            continue;
          }
          this.onMessage(message);
        }
      });
    });
  }

  private onMessage(message: Record<string, unknown>): void {
    if (typeof message['event'] === 'string') {
      this.events.push({ seq: ++this.seq, event: message['event'], data: (message['data'] as Record<string, unknown>) ?? {} });
      if (this.events.length > eventsMax) this.events.splice(0, this.events.length - eventsMax);
      for (const wake of this.eventWaiters) wake();
      return;
    }
    const id = typeof message['id'] === 'string' ? message['id'] : undefined;
    if (id === undefined) return;
    const pending = this.pending.get(id);
    if (!pending) return; // a reply after its timeout
    this.pending.delete(id);
    clearTimeout(pending.timer);
    if ('error' in message) {
      const error = message['error'] as { class?: string; desc?: string };
      pending.reject(new QmpError(error.class ?? 'GenericError', error.desc ?? 'unknown QMP error'));
    } else {
      pending.resolve(message['return']);
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (const pending of this.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new QmpError('closed', `QMP connection ${this.socketPath} closed`));
    }
    this.pending.clear();
    for (const wake of this.eventWaiters) wake();
    for (const listener of this.closeListeners) listener();
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  onClosed(listener: () => void): void {
    this.closeListeners.add(listener);
  }

  /** Runs one command and resolves with its `return` value; rejects with QmpError on `error`, timeout or a closed connection. */
  execute<T = unknown>(command: string, args: Record<string, unknown> | undefined, options: { timeoutMs: number }): Promise<T> {
    const run = (): Promise<T> =>
      new Promise<T>((resolve, reject) => {
        if (this.closed || !this.socket) {
          reject(new QmpError('closed', `QMP connection ${this.socketPath} is closed`));
          return;
        }
        const id = `pumice-${this.nextId++}`;
        const timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new QmpError('timeout', `QMP ${command} got no reply within ${options.timeoutMs} ms`));
        }, options.timeoutMs);
        this.pending.set(id, { id, resolve: resolve as (value: unknown) => void, reject, timer });
        const message = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
        this.socket.write(`${JSON.stringify(message)}\n`);
      });
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** Sequence number of the last event received; pass it to `waitForEvent` to also see events that arrive in between. */
  eventSeq(): number {
    return this.seq;
  }

  /** Resolves with the first event after `sinceSeq` matching `match`; null on timeout or close. */
  waitForEvent(match: (event: QmpEvent) => boolean, options: { sinceSeq: number; timeoutMs: number }): Promise<QmpEvent | null> {
    return new Promise((resolve) => {
      let done = false;
      const check = (): void => {
        if (done) return;
        const found = this.events.find((e) => e.seq > options.sinceSeq && match(e));
        if (found || this.closed) finish(found ?? null);
      };
      const finish = (result: QmpEvent | null): void => {
        done = true;
        clearTimeout(timer);
        this.eventWaiters.delete(check);
        resolve(result);
      };
      const timer = setTimeout(() => finish(null), options.timeoutMs);
      this.eventWaiters.add(check);
      check();
    });
  }

  /** Closes the connection; QEMU keeps running. */
  destroy(): void {
    this.socket?.destroy();
    this.onClose();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
