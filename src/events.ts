/**
 * Structured events: one JSON line per thing that happened (an API request
 * answered, a task claimed, retried, finished or failed, a resource's status
 * moved), written with pino to DATA_DIR/log/events.jsonl (0600), beside the
 * human log on stderr. Each line carries the request id of the API call it
 * belongs to when there is one (`x-openstack-request-id`), so an operator
 * follows a request from the API into the state changes it made, and tests
 * read facts instead of scraping log text.
 *
 *   emitEvent('task.retry', { task_id: 12, kind: 'volume.create', attempts: 2, reason: '...' });
 *   withRequestId('req-…', () => handler());     // events inside carry request_id
 *
 * Until `openEventLog` runs (unit tests, CLI tools) events go nowhere.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';

const requestContext = new AsyncLocalStorage<{ requestId: string }>();
let sink: Logger | null = null;
let reopenSink: (() => void) | null = null;

/** Runs `fn` with `requestId` attached to every event it (and what it awaits) emits. */
export function withRequestId<T>(requestId: string, fn: () => T): T {
  return requestContext.run({ requestId }, fn);
}

/** The request id of the API call running now, if any. */
export function currentRequestId(): string | null {
  return requestContext.getStore()?.requestId ?? null;
}

/** Records event `event` with `fields` (snake_case keys, JSON values). */
export function emitEvent(event: string, fields: Record<string, unknown> = {}): void {
  if (!sink) return;
  const requestId = currentRequestId();
  sink.info(requestId ? { event, request_id: requestId, ...fields } : { event, ...fields });
}

/** Reopens the events file by its name (SIGHUP, after a log rotation); false when none is open. */
export function reopenEventLog(): boolean {
  if (!reopenSink) return false;
  reopenSink();
  return true;
}

/** The events file of a data directory. */
export function eventLogPath(dataDir: string): string {
  return join(dataDir, 'log', 'events.jsonl');
}

/**
 * Starts writing events to DATA_DIR/log/events.jsonl (appending; 0600 in a 0700 directory).
 * Returns a function that flushes and closes it.
 */
export function openEventLog(dataDir: string): () => void {
  const file = eventLogPath(dataDir);
  mkdirSync(join(dataDir, 'log'), { recursive: true, mode: 0o700 });
  closeSync(openSync(file, 'a', 0o600));
  chmodSync(file, 0o600);
  // sync: a kill -9 loses no event already emitted (the crash harness reads them after one).
  const destination = pino.destination({ dest: file, sync: true, append: true });
  const logger = pino({ base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime, messageKey: 'msg' }, destination);
  sink = logger;
  // After logrotate moved the file away: SIGHUP makes the next event start a new file (0600 as the first).
  reopenSink = () => {
    closeSync(openSync(file, 'a', 0o600));
    destination.reopen();
  };
  return () => {
    if (sink === logger) {
      sink = null;
      reopenSink = null;
    }
    destination.flushSync();
    destination.end();
  };
}
