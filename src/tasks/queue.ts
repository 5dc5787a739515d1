/**
 * Durable work queue in the database. A resource row and its task are
 * written in one transaction; a runner for the task's queue (a backend
 * section) claims it, runs the handler and records the outcome. Handlers are
 * idempotent: after a crash, a task found `running` is re-run from the start,
 * and each step tolerates having been done already.
 */
import { randomUUID } from 'node:crypto';
import type { Db } from '../db/db.ts';

export interface TaskRow {
  id: number;
  kind: string;
  resource_id: string;
  queue: string;
  payload: string;
  state: 'queued' | 'running' | 'done' | 'failed';
  attempts: number;
  claimed_by: string | null;
  last_error: string | null;
  created_at: string;
}

export interface Task<P = unknown> {
  id: number;
  kind: string;
  resourceId: string;
  queue: string;
  payload: P;
  attempts: number;
}

export type TaskHandler = (task: Task) => Promise<void>;
/** Called when a task fails for good, to put its resource in an error state with a reason. */
export type TaskFailureHandler = (task: Task, reason: string) => void;

export interface TaskQueueOptions {
  db: Db;
  log: (message: string) => void;
  /** Tasks of one queue running at once. */
  concurrencyPerQueue: number;
  /** Tries before a task is failed for good (a crash mid-task counts as a try). */
  attemptsMax: number;
  /** Fallback poll for tasks enqueued by other processes sharing the database. */
  pollIntervalMs: number;
}

export class TaskQueue {
  readonly runnerId = randomUUID();
  private readonly handlers = new Map<string, TaskHandler>();
  private readonly failureHandlers = new Map<string, TaskFailureHandler>();
  private readonly queues = new Set<string>();
  private readonly running = new Map<string, number>();
  private readonly inFlight = new Set<Promise<void>>();
  private pollTimer: NodeJS.Timeout | undefined;
  private stopped = true;
  private kickScheduled = false;
  private readonly idleWaiters: (() => void)[] = [];

  constructor(private readonly options: TaskQueueOptions) {}

  register(kind: string, handler: TaskHandler, onFailure: TaskFailureHandler): void {
    this.handlers.set(kind, handler);
    this.failureHandlers.set(kind, onFailure);
  }

  /** Enqueues a task; call inside the transaction that writes the resource. */
  enqueue(kind: string, resourceId: string, queue: string, payload: unknown = {}): void {
    const now = new Date().toISOString();
    this.options.db.run(
      "INSERT INTO tasks (kind, resource_id, queue, payload, state, created_at, updated_at) VALUES (?, ?, ?, ?, 'queued', ?, ?)",
      kind, resourceId, queue, JSON.stringify(payload), now, now,
    );
    this.kick();
  }

  /** Starts runners for `queues`. Tasks left `running` by a dead process are requeued (or failed after attemptsMax). */
  start(queues: string[]): void {
    for (const q of queues) this.queues.add(q);
    this.stopped = false;
    this.recoverAbandoned();
    this.pollTimer = setInterval(() => this.kick(), this.options.pollIntervalMs);
    this.pollTimer.unref();
    this.kick();
  }

  /** Stops claiming new tasks and waits for the running ones. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    await Promise.allSettled([...this.inFlight]);
  }

  /** Resolves when no task of this process's queues is queued or running (for tests and shutdown). */
  whenIdle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private isIdle(): boolean {
    if (this.inFlight.size > 0) return false;
    const placeholders = [...this.queues].map(() => '?').join(',');
    if (!placeholders) return true;
    const row = this.options.db.get<{ n: number }>(
      `SELECT COUNT(*) AS n FROM tasks WHERE state = 'queued' AND queue IN (${placeholders})`,
      ...this.queues,
    );
    return (row?.n ?? 0) === 0;
  }

  private recoverAbandoned(): void {
    const { db } = this.options;
    const placeholders = [...this.queues].map(() => '?').join(',');
    if (!placeholders) return;
    const abandoned = db.all<TaskRow>(
      `SELECT * FROM tasks WHERE state = 'running' AND queue IN (${placeholders}) AND (claimed_by IS NULL OR claimed_by != ?)`,
      ...this.queues, this.runnerId,
    );
    for (const row of abandoned) {
      if (row.attempts >= this.options.attemptsMax) {
        this.fail(row, `the task was interrupted ${row.attempts} times (process stopped while it ran) and was given up`);
      } else {
        this.options.log(`task ${row.id} ${row.kind} ${row.resource_id}: interrupted by a restart; running it again`);
        db.run("UPDATE tasks SET state = 'queued', claimed_by = NULL, updated_at = ? WHERE id = ?", new Date().toISOString(), row.id);
      }
    }
  }

  /** Schedules a claim pass on the next tick (coalesces bursts of enqueues). */
  kick(): void {
    if (this.stopped || this.kickScheduled) return;
    this.kickScheduled = true;
    setImmediate(() => {
      this.kickScheduled = false;
      this.claimAvailable();
    });
  }

  private claimAvailable(): void {
    if (this.stopped) return;
    for (const queue of this.queues) {
      while ((this.running.get(queue) ?? 0) < this.options.concurrencyPerQueue) {
        const row = this.claim(queue);
        if (!row) break;
        this.launch(row);
      }
    }
    this.notifyIdle();
  }

  private claim(queue: string): TaskRow | undefined {
    const { db } = this.options;
    return db.transaction(() => {
      // Tasks on one resource run in order: skip a resource that has a running task.
      const row = db.get<TaskRow>(
        `SELECT * FROM tasks t WHERE t.state = 'queued' AND t.queue = ?
           AND NOT EXISTS (SELECT 1 FROM tasks r WHERE r.resource_id = t.resource_id AND r.state = 'running')
         ORDER BY t.id LIMIT 1`,
        queue,
      );
      if (!row) return undefined;
      db.run(
        "UPDATE tasks SET state = 'running', claimed_by = ?, attempts = attempts + 1, updated_at = ? WHERE id = ?",
        this.runnerId, new Date().toISOString(), row.id,
      );
      return { ...row, attempts: row.attempts + 1 };
    });
  }

  private launch(row: TaskRow): void {
    this.running.set(row.queue, (this.running.get(row.queue) ?? 0) + 1);
    const promise = this.execute(row).finally(() => {
      this.running.set(row.queue, (this.running.get(row.queue) ?? 1) - 1);
      this.inFlight.delete(promise);
      this.kick();
    });
    this.inFlight.add(promise);
  }

  private async execute(row: TaskRow): Promise<void> {
    const handler = this.handlers.get(row.kind);
    const { db } = this.options;
    if (!handler) {
      this.fail(row, `no handler for task kind '${row.kind}' in this version of Pumice`);
      return;
    }
    try {
      await handler(toTask(row));
      db.run("UPDATE tasks SET state = 'done', updated_at = ? WHERE id = ?", new Date().toISOString(), row.id);
      // Finished tasks are history only; keep the table small.
      db.run("DELETE FROM tasks WHERE id = ? AND state = 'done'", row.id);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      this.options.log(`task ${row.id} ${row.kind} ${row.resource_id} failed: ${reason}`);
      this.fail(row, reason);
    }
  }

  private fail(row: TaskRow, reason: string): void {
    const { db } = this.options;
    db.transaction(() => {
      db.run("UPDATE tasks SET state = 'failed', last_error = ?, updated_at = ? WHERE id = ?", reason, new Date().toISOString(), row.id);
      try {
        this.failureHandlers.get(row.kind)?.(toTask(row), reason);
      } catch (error) {
        this.options.log(`task ${row.id}: failure handler failed: ${(error as Error).message}`);
      }
    });
  }

  private notifyIdle(): void {
    if (this.idleWaiters.length === 0 || !this.isIdle()) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}

function toTask(row: TaskRow): Task {
  return { id: row.id, kind: row.kind, resourceId: row.resource_id, queue: row.queue, payload: JSON.parse(row.payload) as unknown, attempts: row.attempts };
}
