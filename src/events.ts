/**
 * Structured events and the operator's log.
 *
 * **Events**: one JSON line per thing that happened (an API request answered,
 * a task queued, claimed, retried, finished or failed, a resource's status
 * moved, a volume the scheduler could not place), written with pino to
 * DATA_DIR/log/events.jsonl (0600). Each line carries the request id of the
 * API call it belongs to when there is one (`x-openstack-request-id`), also
 * from the task that call queued, so an operator follows a request from the
 * API into the state changes it made, and tests read facts instead of
 * scraping log text.
 *
 *   emitEvent('task.retry', { task_id: 12, kind: 'volume.create', attempts: 2, reason: '...' });
 *   withRequestId('req-…', () => handler());     // events inside carry request_id
 *
 * Event writes are buffered: the buffer is written at once when an API reply
 * is about to leave (`flushEvents`, so a client that reads the file after its
 * reply finds its request and everything it caused so far), every
 * `eventFlushIntervalMs`, when it holds `eventBufferBytesMax`, and on close
 * (SIGTERM). Before, every event was its own write(2): a few per request.
 *
 * **Log**: human lines as oslo.log writes them,
 * `TIMESTAMP PID LEVEL module [req-id user project] message`, on stderr or
 * `[DEFAULT] log_file`, or one JSON object per line with
 * `[DEFAULT] log_format = json`, or to systemd-journald with structured fields with
 * `[DEFAULT] use_journal = true` (./journal.ts); DEBUG only with `[DEFAULT] debug = true`.
 * Every event also becomes a log line at its level: a status change INFO, a
 * retry or a scheduler rejection WARNING, a failed task ERROR, with the reason.
 *
 * Until `openEventLog` runs (unit tests, CLI tools) events go nowhere; log
 * lines go to stderr in the text format.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { chmodSync, closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { pino, type DestinationStream, type Logger } from 'pino';
import { journalPriority, openJournal, type JournalWriter } from './journal.ts';
import { atTurnEndLast } from './util/turn-end.ts';

interface RequestContext {
  requestId: string;
  userId?: string | null;
  projectId?: string | null;
}

const requestContext = new AsyncLocalStorage<RequestContext>();
let sink: Logger | null = null;
let eventFile: BufferedFile | null = null;

/** Runs `fn` with `requestId` attached to every event it (and what it awaits) emits. */
export function withRequestId<T>(requestId: string, fn: () => T): T {
  return requestContext.run({ requestId }, fn);
}

/** The request id of the API call running now, if any. */
export function currentRequestId(): string | null {
  return requestContext.getStore()?.requestId ?? null;
}

/** Names the authenticated caller of the request running now (shown in its log lines). */
export function setRequestCaller(userId: string | null, projectId: string | null): void {
  const store = requestContext.getStore();
  if (!store) return;
  store.userId = userId;
  store.projectId = projectId;
}

/** Tasks queued by an API call of this process, and that call's request id (bounded; forgotten when the task ends). */
const taskRequests = new Map<number, RequestContext>();
const taskRequestsMax = 10_000;

/** Remembers the request running now as the origin of task `taskId` (call it where the task is enqueued). */
export function noteTaskQueued(taskId: number, fields: Record<string, unknown>): void {
  const store = requestContext.getStore();
  if (store) {
    if (taskRequests.size >= taskRequestsMax) taskRequests.delete(taskRequests.keys().next().value!);
    taskRequests.set(taskId, { ...store });
  }
  emitEvent('task.queued', { task_id: taskId, ...fields });
}

/**
 * Runs task `taskId`'s work under the request id of the call that queued it (when this process
 * queued it), or under none: never under the context of whatever request happened to wake the runner.
 */
export function withTaskRequest<T>(taskId: number, fn: () => T): T {
  const origin = taskRequests.get(taskId);
  return origin ? requestContext.run({ ...origin }, fn) : requestContext.exit(fn);
}

export type LogLevel = 'DEBUG' | 'INFO' | 'WARNING' | 'ERROR';
const levelRank: Record<LogLevel, number> = { DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40 };

/** Subscribers to every event (metrics); called after the event is recorded, never throw into the caller. */
type EventListener = (event: string, fields: Record<string, unknown>) => void;
const listeners: EventListener[] = [];

/** Calls `listener` for every event emitted from now on; returns a function that stops it. */
export function onEvent(listener: EventListener): () => void {
  listeners.push(listener);
  return () => {
    const i = listeners.indexOf(listener);
    if (i >= 0) listeners.splice(i, 1);
  };
}

/** Records event `event` with `fields` (snake_case keys, JSON values), and logs it at its level. */
export function emitEvent(event: string, fields: Record<string, unknown> = {}): void {
  const context = requestContext.getStore();
  if (sink) sink.info(context ? { event, request_id: context.requestId, ...fields } : { event, ...fields });
  const line = eventLogLine(event, fields);
  // Most events are DEBUG lines (a request answered 2xx, a task queued or claimed): built only when written.
  if (line && logEnabled(line.level)) writeLog(line.level, line.module, line.message(), context);
  for (const listener of listeners) {
    try {
      listener(event, fields);
    } catch {
      // A metric must never break the operation it counts.
    }
  }
  if (event === 'task.done' || event === 'task.failed' || event === 'task.cancelled') taskRequests.delete(Number(fields['task_id']));
}

/**
 * Writes buffered events and log lines now: call it before a reply leaves, so the reader of the
 * events file or the log after it finds them.
 */
export function flushEvents(): void {
  eventFile?.flush();
  flushLog();
}

/**
 * The log line an event becomes: state changes INFO, retries and rejections WARNING, failures ERROR;
 * bookkeeping DEBUG. The message is a function: most lines are DEBUG and not written without
 * `[DEFAULT] debug`, so it is built only for a line that is.
 */
function eventLogLine(event: string, f: Record<string, unknown>): { level: LogLevel; module: string; message: () => string } | null {
  const resource = () => `${String(f['resource'] ?? f['kind'] ?? '')} ${String(f['id'] ?? f['resource_id'] ?? '')}`.trim();
  const task = () => `task ${String(f['task_id'])} (${String(f['kind'])} ${String(f['resource_id'])}, attempt ${String(f['attempts'])})`;
  switch (event) {
    case 'state.transition':
      return f['moved']
        ? { level: 'INFO', module: 'pumice.state', message: () => `${resource()}: ${[f['from']].flat().join('|')} -> ${String(f['to'])}` }
        : { level: 'DEBUG', module: 'pumice.state', message: () => `${resource()}: not moved to ${String(f['to'])} (not in ${[f['from']].flat().join('|')})` };
    case 'state.forced':
      return { level: 'WARNING', module: 'pumice.state', message: () => `${resource()}: forced to ${String(f['to'])}${f['reason'] ? `: ${String(f['reason'])}` : ''}` };
    case 'task.queued':
      return { level: 'DEBUG', module: 'pumice.tasks', message: () => `task ${String(f['task_id'])} (${String(f['kind'])} ${String(f['resource_id'])}) queued on ${String(f['queue'])}` };
    case 'task.claimed':
      return { level: 'DEBUG', module: 'pumice.tasks', message: () => `${task()} claimed by ${String(f['owner'])}` };
    case 'task.done':
      return { level: 'INFO', module: 'pumice.tasks', message: () => `${task()} done` };
    case 'task.retry':
    case 'task.fenced':
    case 'task.failed':
      // The task queue logs these itself (WARNING, ERROR) with the reason: one line per failure, not two.
      return null;
    case 'scheduler.rejected':
      // Nova's NoValidHost and Cinder's "No valid backend" are WARNINGs with every filter's reason.
      // The volume service logs its own line (the one its tests read); a server's rejection is logged here.
      return f['resource'] === 'volume' ? null : { level: 'WARNING', module: 'pumice.scheduler', message: () => `${resource()} of project ${String(f['project_id'])} not placed: ${String(f['reason'])}` };
    case 'http.request':
      return accessLogLine(f);
    default:
      return { level: 'DEBUG', module: `pumice.${event.split('.')[0]}`, message: () => `${event} ${JSON.stringify(f)}` };
  }
}

/**
 * The access line of a request, `GET /path status: 200 time: 1.2 ms`, at the level of its status:
 * a 5xx is the server's failure, ERROR (the cause is a separate ERROR line); a 4xx INFO, as Nova
 * logs "HTTP exception thrown" for a refused request (a client's mistake is not the server's
 * warning). 1xx–3xx lines are DEBUG: Nova's RequestLog writes them at INFO, but every request
 * is already in the events file and in `/metrics`, and a line per request on a busy API costs.
 */
export function accessLogLine(f: Record<string, unknown>): { level: LogLevel; module: string; message: () => string } {
  const status = Number(f['status']);
  const message = () => `${String(f['method'])} ${String(f['path'])} status: ${status} time: ${String(f['duration_ms'])} ms`;
  return { level: status >= 500 ? 'ERROR' : status >= 400 ? 'INFO' : 'DEBUG', module: 'pumice.http', message };
}

// ---------------------------------------------------------------- the log

interface LogSettings {
  format: 'text' | 'json';
  debug: boolean;
  /** `[DEFAULT] use_journal`: entries go to journald instead of stderr (see ./journal.ts). */
  journal: JournalWriter | null;
}
let logSettings: LogSettings = { format: 'text', debug: false, journal: null };
/** Where log lines go: stderr, or `[DEFAULT] log_file` (reopened on SIGHUP). */
let logFile: BufferedFile | null = null;
/** Log lines bound for stderr not yet written (see flushLog). */
let stderrLines: string[] = [];
let stderrBytes = 0;
let logFlushScheduled = false;
/** Buffered log bytes that make the next line write at once. */
const logBufferBytesMax = 64 * 1024;

/**
 * Writes the log lines buffered in this turn of the event loop, with one write(2) per destination.
 * Runs at the end of the turn that logged them (src/util/turn-end.ts), before an API reply leaves
 * (flushEvents), when `logBufferBytesMax` is buffered, when the destination changes, and on exit.
 * Before, every line was a write(2) of its own: a few per volume cycle, 5% of a busy server's CPU.
 */
export function flushLog(): void {
  logFile?.flush();
  if (stderrLines.length === 0) return;
  const text = stderrLines.length === 1 ? stderrLines[0]! : stderrLines.join('');
  stderrLines = [];
  stderrBytes = 0;
  process.stderr.write(text);
}

// A process that ends (process.exit at a crash point, an uncaught error, the end of a CLI) still writes its last lines.
process.on('exit', flushLog);

/** At the end of this turn, after its replies and task starts (see src/util/turn-end.ts): one pass, no immediate of its own. */
function scheduleLogFlush(): void {
  if (logFlushScheduled) return;
  logFlushScheduled = true;
  atTurnEndLast(runLogFlush);
}

function runLogFlush(): void {
  logFlushScheduled = false;
  flushLog();
}

/**
 * Applies `[DEFAULT] log_format`, `debug` and `log_file`. Log lines are written at the end of the
 * event loop turn that logged them (see flushLog): an operator tails them while it happens.
 * Returns a function that closes the log file (lines go to stderr again).
 */
export function configureLogging(options: { format: 'text' | 'json'; debug: boolean; logFile: string | null; useJournal?: boolean }): () => void {
  flushLog();
  const journal = options.useJournal ? openJournal() : null;
  logSettings.journal?.close();
  logSettings = { format: options.format, debug: options.debug, journal };
  const file = options.logFile ? new BufferedFile(options.logFile, { bufferBytesMax: logBufferBytesMax }) : null;
  logFile?.close();
  logFile = file;
  return () => {
    flushLog();
    if (logFile === file) logFile = null;
    file?.close();
    if (logSettings.journal === journal) logSettings.journal = null;
    journal?.close();
  };
}

/** Whether a line at `level` is written (DEBUG only with `[DEFAULT] debug = true`). */
export function logEnabled(level: LogLevel): boolean {
  return levelRank[level] >= (logSettings.debug ? levelRank.DEBUG : levelRank.INFO);
}

/**
 * Writes one log line at `level` from `module` (`pumice.volume`), with the request context running now.
 * `fields` are added to the JSON format only.
 */
export function log(level: LogLevel, module: string, message: string, fields?: Record<string, unknown>): void {
  writeLog(level, module, message, requestContext.getStore(), fields);
}

/**
 * A `(message) => void` logger for `module`, as the services take: a message that starts with
 * `WARNING:` or `ERROR:` is logged at that level (the prefix dropped), else at INFO.
 */
export function moduleLogger(module: string): (message: string) => void {
  return (message: string) => {
    const m = /^(WARNING|ERROR|DEBUG):\s*/.exec(message);
    writeLog(m ? (m[1] as LogLevel) : 'INFO', module, m ? message.slice(m[0].length) : message, requestContext.getStore());
  };
}

function writeLog(level: LogLevel, module: string, message: string, context: RequestContext | undefined, fields?: Record<string, unknown>): void {
  if (!logEnabled(level)) return;
  const now = new Date();
  const text = logSettings.format === 'json'
    ? JSON.stringify({
        timestamp: now.toISOString(),
        pid: process.pid,
        level,
        module,
        request_id: context?.requestId ?? null,
        user_id: context?.userId ?? null,
        project_id: context?.projectId ?? null,
        message,
        ...fields,
      })
    : `${formatTimestamp(now)} ${process.pid} ${level} ${module} [${context ? `${context.requestId} ${context.userId ?? '-'} ${context.projectId ?? '-'}` : '-'}] ${message}`;
  if (logFile) {
    logFile.write(text + '\n');
    scheduleLogFlush();
  }
  const journal = logSettings.journal;
  if (journal) {
    const sent = journal.send({
      MESSAGE: message,
      PRIORITY: String(journalPriority[level]),
      SYSLOG_IDENTIFIER: 'pumice',
      LOGGER_NAME: module,
      LOGGER_LEVEL: level,
      ...(context ? { REQUEST_ID: context.requestId } : {}),
      ...(context?.userId ? { USER_ID: context.userId } : {}),
      ...(context?.projectId ? { PROJECT_ID: context.projectId } : {}),
      ...journalExtras(fields),
    });
    // Not taken (journald busy or gone): stderr, which under systemd reaches the journal without fields.
    if (sent || logFile) return;
  } else if (logFile) return;
  stderrLines.push(text + '\n');
  stderrBytes += text.length + 1;
  if (stderrBytes >= logBufferBytesMax) flushLog();
  else scheduleLogFlush();
}

/** A line's extra fields as journal fields (upper-cased by the encoder); objects as JSON. */
function journalExtras(fields: Record<string, unknown> | undefined): Record<string, string> {
  const extras: Record<string, string> = {};
  for (const [key, value] of Object.entries(fields ?? {})) {
    if (value === undefined || value === null) continue;
    extras[key] = typeof value === 'string' ? value : JSON.stringify(value);
  }
  return extras;
}

/** oslo.log's `%(asctime)s.%(msecs)03d` in UTC: `2026-12-05 13:02:24.123`. */
function formatTimestamp(date: Date): string {
  return date.toISOString().replace('T', ' ').replace('Z', '');
}

/** Reopens the events file and the log file by name (SIGHUP, after a log rotation); false when no events file is open. */
export function reopenEventLog(): boolean {
  logFile?.reopen();
  if (!eventFile) return false;
  eventFile.reopen();
  return true;
}

/** The events file of a data directory. */
export function eventLogPath(dataDir: string): string {
  return join(dataDir, 'log', 'events.jsonl');
}

/** Longest an event waits in the buffer when no reply flushes it. */
export const eventFlushIntervalMs = 100;
/** Buffered bytes that make the next event flush at once. */
export const eventBufferBytesMax = 64 * 1024;

/**
 * Starts writing events to DATA_DIR/log/events.jsonl (appending; 0600 in a 0700 directory).
 * Returns a function that flushes and closes it.
 */
export function openEventLog(dataDir: string): () => void {
  const path = eventLogPath(dataDir);
  mkdirSync(join(dataDir, 'log'), { recursive: true, mode: 0o700 });
  const file = new BufferedFile(path, { bufferBytesMax: eventBufferBytesMax, flushIntervalMs: eventFlushIntervalMs });
  const logger = pino({ base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime, messageKey: 'msg' }, file);
  sink = logger;
  eventFile = file;
  // A process that exits without stop() (process.exit in a CLI path, an uncaught error) still writes what it buffered.
  const onExit = () => file.flush();
  process.once('exit', onExit);
  return () => {
    process.off('exit', onExit);
    if (sink === logger) {
      sink = null;
      eventFile = null;
    }
    file.close();
  };
}

/**
 * An append-only 0600 file written in batches: `write` buffers, `flush` writes the buffer with one
 * synchronous write(2) (so it completes before the caller goes on, e.g. before a reply is sent).
 * `reopen` starts a new file by the same name after a rotation.
 */
class BufferedFile implements DestinationStream {
  private fd: number;
  private chunks: string[] = [];
  private bufferedBytes = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly path: string,
    private readonly options: { bufferBytesMax: number; flushIntervalMs?: number },
  ) {
    this.fd = BufferedFile.open(path);
  }

  private static open(path: string): number {
    const fd = openSync(path, 'a', 0o600);
    // An older file (or one created by another tool) may be readable by others.
    chmodSync(path, 0o600);
    return fd;
  }

  write(text: string): void {
    this.chunks.push(text);
    this.bufferedBytes += text.length;
    if (this.bufferedBytes >= this.options.bufferBytesMax) this.flush();
    else if (!this.timer && this.options.flushIntervalMs !== undefined) {
      this.timer = setTimeout(() => this.flush(), this.options.flushIntervalMs);
      // A pending flush must not keep a finished process alive; close() and 'exit' write the rest.
      this.timer.unref();
    }
  }

  flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.chunks.length === 0 || this.fd < 0) return;
    const data = Buffer.from(this.chunks.length === 1 ? this.chunks[0]! : this.chunks.join(''));
    this.chunks = [];
    this.bufferedBytes = 0;
    let offset = 0;
    while (offset < data.length) offset += writeSync(this.fd, data, offset, data.length - offset);
  }

  reopen(): void {
    this.flush();
    const fd = BufferedFile.open(this.path);
    closeSync(this.fd);
    this.fd = fd;
  }

  close(): void {
    this.flush();
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}
