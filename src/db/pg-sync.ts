/**
 * A synchronous PostgreSQL connection for `Db`: the `pg` client runs in a worker
 * thread (pg-worker.mjs) and the calling thread blocks in Atomics.wait until the
 * reply is posted (the synckit technique). The calling thread is blocked for the
 * whole round trip, so one connection per Db is all it can use: a pool would sit
 * idle. Processes on other hosts have their own connections.
 */
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import type { Row, SqlValue } from './db.ts';

/** A statement that runs longer is cancelled by the server (and the call throws). */
export const pgStatementTimeoutMs = 30_000;
/** The caller stops waiting for a reply after the statement timeout plus this margin. */
const replyMarginMs = 5_000;
/** How long a reply may lag its wake-up before the call gives up. */
const replyLateMaxMs = 2_000;
/** Statements prepared by name on the connection; others are parsed on each call. */
const preparedMax = 512;

/** A PostgreSQL error with the SQLite code callers already test (`SQLITE_CONSTRAINT_PRIMARYKEY`, …). */
export class PgError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly pgCode: string | undefined,
  ) {
    super(message);
    this.name = 'PgError';
  }
}

type Request = { kind: 'connect' | 'close' } | { kind: 'listen'; channel: string } | { kind: 'exec'; sql: string } | { kind: 'query'; sql: string; params: SqlValue[]; guarded: boolean };
interface Reply {
  /** The request's id: a reply that comes after its call gave up is told apart from the next call's. */
  id: number;
  result?: { rows: Row[]; rowCount: number } | null;
  error?: { message: string; code?: string; constraint?: string; detail?: string };
}

/** SQLite's names for the constraint classes, so existing `error.code` checks hold on both engines. */
function sqliteCode(pgCode: string | undefined, constraint: string | undefined): string {
  switch (pgCode) {
    case '23505':
      return constraint?.endsWith('_pkey') ? 'SQLITE_CONSTRAINT_PRIMARYKEY' : 'SQLITE_CONSTRAINT_UNIQUE';
    case '23503':
      return 'SQLITE_CONSTRAINT_FOREIGNKEY';
    case '23502':
      return 'SQLITE_CONSTRAINT_NOTNULL';
    case '23514':
      return 'SQLITE_CONSTRAINT_CHECK';
    default:
      return pgCode ? `PG_${pgCode}` : 'PG_ERROR';
  }
}

/** Removes the password from a connection URL, for messages and logs. */
export function redactConnectionUrl(url: string): string {
  return url.replace(/^(\w+:\/\/[^:@/]*):[^@/]*@/, '$1:***@');
}

/** Connection failures that a later attempt may not meet: the server or its network is not there yet. */
const transientConnectCodes = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ECONNRESET', 'EAI_AGAIN', 'PG_TIMEOUT', '57P03']);

/** The first connect failed; `transient` when the server or the network was not there (a wrong password is not). */
export class PgConnectError extends Error {
  constructor(
    message: string,
    readonly transient: boolean,
  ) {
    super(message);
    this.name = 'PgConnectError';
  }
}

export class PgSyncConnection {
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private readonly flag = new Int32Array(new SharedArrayBuffer(4));
  /** Never notified: Atomics.wait on it is a sleep. */
  private readonly pause = new Int32Array(new SharedArrayBuffer(4));
  private closed = false;
  private lastCallId = 0;
  /** NOTIFYs from the worker, handled on this thread's event loop. */
  private readonly notices: MessagePort;
  private readonly listeners = new Map<string, ((payload: string) => void)[]>();
  /** How long a call waits for its reply: the server's statement timeout and a margin (tests shorten it). */
  private readonly replyTimeoutMs: number;

  /** Connects (blocking); throws a message naming the server (never the password) when it cannot. */
  constructor(
    readonly url: string,
    options: { replyTimeoutMs?: number } = {},
  ) {
    this.replyTimeoutMs = options.replyTimeoutMs ?? pgStatementTimeoutMs + replyMarginMs;
    const channel = new MessageChannel();
    this.port = channel.port1;
    const notices = new MessageChannel();
    this.notices = notices.port1;
    this.notices.on('message', (notice: { channel: string; payload: string }) => {
      for (const listener of this.listeners.get(notice.channel) ?? []) listener(notice.payload);
    });
    // Listening never keeps the process alive.
    this.notices.unref();
    this.worker = new Worker(new URL('./pg-worker.mjs', import.meta.url), {
      workerData: { port: channel.port2, notices: notices.port2, flag: this.flag, connection: url, statementTimeoutMs: pgStatementTimeoutMs, preparedMax },
      transferList: [channel.port2, notices.port2],
    });
    // The worker never keeps the process alive by itself; close() ends it.
    this.worker.unref();
    try {
      this.call({ kind: 'connect' });
    } catch (error) {
      void this.worker.terminate();
      this.closed = true;
      this.notices.close();
      const code = error instanceof PgError ? (error.pgCode ?? error.code) : undefined;
      throw new PgConnectError(
        `cannot connect to PostgreSQL at ${redactConnectionUrl(url)}: ${(error as Error).message}. ` +
          'Check [database] connection (postgresql://user:password@host:port/database), that the server runs and that the user may log in',
        (code !== undefined && transientConnectCodes.has(code)) || /Connection terminated/.test((error as Error).message),
      );
    }
  }

  /** LISTENs to `channel` (a fixed name of Pumice's); `onNotify` gets each NOTIFY's payload, after the transaction that sent it committed. */
  listen(channel: string, onNotify: (payload: string) => void): void {
    const listeners = this.listeners.get(channel);
    if (listeners) {
      listeners.push(onNotify);
      return;
    }
    this.call({ kind: 'listen', channel });
    this.listeners.set(channel, [onNotify]);
  }

    exec(sql: string): void {
    this.call({ kind: 'exec', sql });
  }

  /** `guarded`: wrap in a savepoint so a failure undoes only this statement (inside a transaction). */
  query(sql: string, params: SqlValue[], guarded: boolean): { rows: Row[]; rowCount: number } {
    return this.call({ kind: 'query', sql, params, guarded })!;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.notices.close();
    try {
      this.call({ kind: 'close' });
    } finally {
      void this.worker.terminate();
    }
  }

  private call(request: Request): { rows: Row[]; rowCount: number } | null {
    if (this.closed && request.kind !== 'close') throw new Error('the database connection is closed');
    const id = ++this.lastCallId;
    Atomics.store(this.flag, 0, 0);
    this.port.postMessage({ ...request, id });
    const deadlineMs = Date.now() + this.replyTimeoutMs;
    for (;;) {
      let message = receiveMessageOnPort(this.port);
      if (!message) {
        // The worker posts the reply, sets the flag, then notifies. When this thread saw the flag
        // of the previous reply before that reply's notify came, the late notify wakes this wait
        // early with the flag still 0: wait again until the flag says a reply is posted.
        if (Atomics.load(this.flag, 0) === 0) {
          const remainingMs = deadlineMs - Date.now();
          if (remainingMs <= 0) throw new PgError(`PostgreSQL did not answer in ${this.replyTimeoutMs} ms`, 'PG_TIMEOUT', undefined);
          Atomics.wait(this.flag, 0, 0, remainingMs);
          continue;
        }
        // Posted before the flag was set, so it is there; a bounded wait all the same.
        for (let waitedMs = 0; !message && waitedMs < replyLateMaxMs; waitedMs++) {
          Atomics.wait(this.pause, 0, 0, 1);
          message = receiveMessageOnPort(this.port);
        }
        if (!message) throw new PgError('the PostgreSQL worker woke without a reply', 'PG_ERROR', undefined);
      }
      const reply = message.message as Reply;
      if (reply.id !== id) {
        // The answer of a call that gave up (PG_TIMEOUT), come now: not this call's. If this call's reply
        // was posted before the flag is cleared here, the next look at the port finds it.
        Atomics.store(this.flag, 0, 0);
        continue;
      }
      if (reply.error) {
        const { message: text, code, constraint, detail } = reply.error;
        throw new PgError(detail ? `${text} (${detail})` : text, sqliteCode(code, constraint), code);
      }
      return reply.result ?? null;
    }
  }
}
