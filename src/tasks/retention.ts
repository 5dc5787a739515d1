/**
 * Retention: done tasks are deleted when they finish (./store.ts); failed and
 * cancelled ones are kept `[DEFAULT] task_failed_retention_days` for
 * `pumice tasks` and support, then deleted; user messages (GET /messages)
 * are deleted once past their expires_at. Runs at start and on a timer.
 */
import type { Db } from '../db/db.ts';
import { systemClock, type Clock } from './crash.ts';
import { SqliteTaskStore, type TaskStore } from './store.ts';

export interface RetentionOptions {
  db: Db;
  failedRetentionDays: number;
  intervalMs: number;
  log: (message: string) => void;
  store?: TaskStore;
  clock?: Clock;
}

/** One pass; returns what it deleted. */
export function purgeExpired(options: Omit<RetentionOptions, 'intervalMs'>): { tasks: number; messages: number } {
  const clock = options.clock ?? systemClock;
  const store = options.store ?? new SqliteTaskStore(options.db);
  const nowMs = clock.now();
  const tasks = store.purgeFinished(new Date(nowMs - options.failedRetentionDays * 86_400_000).toISOString());
  const messages = options.db.run('DELETE FROM messages WHERE expires_at < ?', new Date(nowMs).toISOString()).changes;
  if (tasks + messages > 0) options.log(`retention: deleted ${tasks} finished task(s) older than ${options.failedRetentionDays} day(s) and ${messages} expired user message(s)`);
  return { tasks, messages };
}

/** Purges now and every `intervalMs`; returns the function that stops it. */
export function startRetention(options: RetentionOptions): () => void {
  const run = () => {
    try {
      purgeExpired(options);
    } catch (error) {
      options.log(`retention: ${(error as Error).message}`);
    }
  };
  run();
  const timer = setInterval(run, options.intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
