/**
 * Where tasks live. `TaskStore` is what the runner needs from a database;
 * `SqliteTaskStore` is the embedded implementation. A PostgreSQL store keeps
 * the same contract with `SELECT ... FOR UPDATE SKIP LOCKED` in `claim` (the
 * lock checks stay the same NOT EXISTS over tasks and task_locks) and the same columns.
 *
 * Every method that changes a claimed task names the owner that claimed it
 * and changes nothing (returns false / throws TaskFencedError) when the task
 * is no longer that owner's, so a runner that lost its lease cannot write.
 */
import type { Db } from '../db/db.ts';
import { TaskFencedError } from './errors.ts';

export type TaskState = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';

export interface TaskRow {
  id: number;
  kind: string;
  resource_id: string;
  queue: string;
  payload: string;
  state: TaskState;
  attempts: number;
  owner: string | null;
  /** Epoch ms until which `owner` holds the task; renewed by its heartbeat. */
  lease_until: number | null;
  /** Epoch ms before which a queued task is not claimed (retry backoff). */
  not_before: number;
  /** 1 once os-reset_status fenced the task: it stops at its next checkpoint. */
  fenced: number;
  last_error: string | null;
  progress: string | null;
  parent_task_id: number | null;
  created_at: string;
  updated_at: string;
  finished_at: string | null;
}

export interface TaskLocks {
  /** Resources the task changes: no other task may read or write them meanwhile. */
  write?: readonly string[];
  /** Resources the task reads: other readers may run, writers wait. */
  read?: readonly string[];
}

export interface NewTask {
  kind: string;
  resourceId: string;
  queue: string;
  payload: unknown;
  locks: TaskLocks;
  notBeforeMs: number;
  parentTaskId: number | null;
}

export interface TaskStore {
  /** Inserts a queued task and its locks; joins the caller's transaction when there is one. */
  insert(task: NewTask): number;
  /**
   * Claims the oldest queued task of `queue` that is due and whose locks
   * conflict with no running task and no older queued task (so tasks on one
   * resource run in the order they were asked for).
   */
  claim(queue: string, owner: string, nowMs: number, leaseUntilMs: number): TaskRow | undefined;
  /**
   * The same claim, as a statement of the caller's write transaction (undone with it). Only
   * where that is as safe as `claim`: SQLite; PostgreSQL returns undefined (its claims run
   * outside the write lock, see pgClaimSql).
   */
  claimInTransaction(queue: string, owner: string, nowMs: number, leaseUntilMs: number): TaskRow | undefined;
  /** Extends the lease of every running task of `owner`. */
  renew(owner: string, leaseUntilMs: number): void;
  /** Throws TaskFencedError unless task `id` is running, claimed by `owner` and not fenced. */
  check(id: number, owner: string): void;
  /** Runs `fn` and finishes the task as done, in one transaction; throws TaskFencedError (nothing written) if the task is no longer the owner's. */
  complete<T>(id: number, owner: string, fn: () => T, options?: { deferCommit?: boolean }): T;
  /** Back to queued for another try at `notBeforeMs`; false if no longer the owner's. */
  retry(id: number, owner: string, notBeforeMs: number, reason: string): boolean;
  /** Runs `fn` and finishes the task as failed, in one transaction; false (nothing written) if no longer the owner's or fenced. */
  fail(id: number, owner: string | null, reason: string, fn: () => void): boolean;
  /** Finishes the task as cancelled (fenced or taken over): no failure handler runs. */
  cancel(id: number, reason: string): void;
  /** Running tasks of `queues` claimed by someone other than `owner` (for lease expiry checks). */
  runningOfOthers(queues: readonly string[], owner: string): TaskRow[];
  /** Puts a running task whose lease expired back in the queue, if still claimed by `previousOwner`. */
  requeueExpired(id: number, previousOwner: string | null): boolean;
  /** Queued tasks of `queues` (due or not). */
  queuedCount(queues: readonly string[]): number;
  /** Earliest not_before among queued tasks of `queues` later than `nowMs`, or null. */
  nextDueMs(queues: readonly string[], nowMs: number): number | null;
  /** os-reset_status: cancels queued tasks that write `resourceId` and fences running ones. */
  fenceResource(resourceId: string, reason: string): { cancelled: number; fenced: number };
  setProgress(id: number, owner: string, progress: string): void;
  /** Deletes failed and cancelled tasks finished before `beforeIso`; returns how many. */
  purgeFinished(beforeIso: string): number;
  get(id: number): TaskRow | undefined;
  transaction<T>(fn: () => T): T;
}

/**
 * Whether task `o` (a running task, or a queued one older than `t`) holds a lock: the alias
 * names in the subqueries below.
 */
const activeBefore = "(o.state = 'running' OR (o.state = 'queued' AND o.id < t.id))";

/**
 * The oldest queued task of a queue (first parameter) that is due (second)
 * and whose locks conflict with no running task and no older queued one: a
 * lock conflicts when either side writes. Every task writes its own resource
 * (`tasks.resource_id`, held while it is queued or running, with no task_locks
 * row: three B-trees fewer to write when a task is queued and again when it
 * ends, about a quarter of a volume cycle's database pages); task_locks
 * holds only the other resources a task names. So four checks: own against
 * own, own against the other's named locks, named against the other's own,
 * named against named.
 */
const claimableSql = `SELECT t.id FROM tasks t WHERE t.queue = ? AND t.state = 'queued' AND t.not_before <= ?
    AND NOT EXISTS (SELECT 1 FROM tasks o WHERE o.resource_id = t.resource_id AND o.id != t.id AND ${activeBefore})
    AND NOT EXISTS (
      SELECT 1 FROM task_locks other JOIN tasks o ON o.id = other.task_id
      WHERE other.resource_id = t.resource_id AND other.task_id != t.id AND ${activeBefore})
    AND NOT EXISTS (
      SELECT 1 FROM task_locks mine JOIN tasks o ON o.resource_id = mine.resource_id
      WHERE mine.task_id = t.id AND o.id != t.id AND ${activeBefore})
    AND NOT EXISTS (
      SELECT 1 FROM task_locks mine
        JOIN task_locks other ON other.resource_id = mine.resource_id AND other.task_id != mine.task_id
        JOIN tasks o ON o.id = other.task_id
      WHERE mine.task_id = t.id AND (mine.mode = 'write' OR other.mode = 'write') AND ${activeBefore})
  ORDER BY t.id LIMIT 1`;

/**
 * The tasks that write `resource_id` (first and second parameter: the same id): those whose
 * own resource it is, and those that name it as a write lock.
 */
const writersOfResourceSql = "SELECT id FROM tasks WHERE resource_id = ? UNION SELECT task_id FROM task_locks WHERE resource_id = ? AND mode = 'write'";

/**
 * PostgreSQL's claim: the same choice, but a row another host is claiming right now is
 * skipped (FOR UPDATE SKIP LOCKED) instead of waited for, and the statement runs on its own,
 * outside the advisory lock that serializes write transactions. Safe without that lock: of
 * tasks whose locks conflict only the oldest queued one is claimable, a claim turns it
 * running (still blocking the younger ones), and the outer `state = 'queued'` is re-checked
 * on the locked row, so two hosts never claim one task or two conflicting ones.
 */
const pgClaimSql = `UPDATE tasks SET state = 'running', owner = ?, lease_until = ?, attempts = attempts + 1, fenced = 0, updated_at = ?
  WHERE id = (${claimableSql.replace(/LIMIT 1$/, 'LIMIT 1 FOR UPDATE OF t SKIP LOCKED')}) AND state = 'queued' RETURNING *`;

function placeholders(n: number): string {
  return new Array(n).fill('?').join(',');
}

export class SqliteTaskStore implements TaskStore {
  constructor(private readonly db: Db) {}

  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn);
  }

  insert(task: NewTask): number {
    const now = new Date().toISOString();
    const { db } = this;
    const insert = () => {
      const row = db.get<{ id: number }>(
        "INSERT INTO tasks (kind, resource_id, queue, payload, state, not_before, parent_task_id, created_at, updated_at) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?) RETURNING id",
        task.kind, task.resourceId, task.queue, JSON.stringify(task.payload ?? {}), task.notBeforeMs, task.parentTaskId, now, now,
      )!;
      const modes = new Map<string, 'read' | 'write'>();
      for (const id of task.locks.read ?? []) modes.set(id, 'read');
      for (const id of task.locks.write ?? []) modes.set(id, 'write');
      // Its own resource is written by every task and locked by its row alone (see claimableSql).
      modes.delete(task.resourceId);
      for (const [resourceId, mode] of modes) db.run('INSERT INTO task_locks (task_id, resource_id, mode) VALUES (?, ?, ?)', row.id, resourceId, mode);
      return row.id;
    };
    // Inside the caller's transaction it is part of it (no savepoint: a failed insert fails the whole request anyway).
    return db.inTransaction ? insert() : db.transaction(insert);
  }

  claim(queue: string, owner: string, nowMs: number, leaseUntilMs: number): TaskRow | undefined {
    // Most passes find nothing: look first without taking the write lock, then claim with one
    // statement, atomic on SQLite (one writer; no BEGIN/COMMIT pair, no second read of the row).
    // `state = 'queued'` again outside: a concurrent claim of the same row then updates nothing.
    if (!this.db.get(claimableSql, queue, nowMs)) return undefined;
    if (this.db.engine === 'postgresql') return this.db.get<TaskRow>(pgClaimSql, owner, leaseUntilMs, new Date().toISOString(), queue, nowMs);
    return this.claimOne(queue, owner, nowMs, leaseUntilMs);
  }

  claimInTransaction(queue: string, owner: string, nowMs: number, leaseUntilMs: number): TaskRow | undefined {
    if (this.db.engine !== 'sqlite' || !this.db.inTransaction) return undefined;
    return this.claimOne(queue, owner, nowMs, leaseUntilMs);
  }

  private claimOne(queue: string, owner: string, nowMs: number, leaseUntilMs: number): TaskRow | undefined {
    return this.db.get<TaskRow>(
      `UPDATE tasks SET state = 'running', owner = ?, lease_until = ?, attempts = attempts + 1, fenced = 0, updated_at = ?
         WHERE id = (${claimableSql}) AND state = 'queued' RETURNING *`,
      owner, leaseUntilMs, new Date().toISOString(), queue, nowMs,
    );
  }

  renew(owner: string, leaseUntilMs: number): void {
    this.db.run("UPDATE tasks SET lease_until = ? WHERE owner = ? AND state = 'running'", leaseUntilMs, owner);
  }

  check(id: number, owner: string): void {
    const row = this.db.get<{ state: string; owner: string | null; fenced: number }>('SELECT state, owner, fenced FROM tasks WHERE id = ?', id);
    if (!row || row.state !== 'running') throw new TaskFencedError(`task ${id} was ended by an operator (${row?.state ?? 'gone'})`);
    if (row.fenced) throw new TaskFencedError(`task ${id} was fenced by os-reset_status of its resource`);
    if (row.owner !== owner) throw new TaskFencedError(`task ${id} was taken over by ${row.owner} after this runner's lease expired`);
  }

  complete<T>(id: number, owner: string, fn: () => T, options: { deferCommit?: boolean } = {}): T {
    return this.db.transaction(() => {
      // Finished tasks are history only: deleted at once (their locks go with them). Deleted first,
      // as the ownership check: if fn throws, the transaction puts the row back.
      if (this.db.run("DELETE FROM tasks WHERE id = ? AND state = 'running' AND owner = ? AND fenced = 0", id, owner).changes !== 1) this.check(id, owner);
      return fn();
    }, options);
  }

  retry(id: number, owner: string, notBeforeMs: number, reason: string): boolean {
    return this.db.run(
      "UPDATE tasks SET state = 'queued', owner = NULL, lease_until = NULL, not_before = ?, last_error = ?, updated_at = ? WHERE id = ? AND state = 'running' AND owner = ? AND fenced = 0",
      notBeforeMs, reason, new Date().toISOString(), id, owner,
    ).changes === 1;
  }

  fail(id: number, owner: string | null, reason: string, fn: () => void): boolean {
    return this.db.transaction(() => {
      const now = new Date().toISOString();
      const changed = this.db.run(
        "UPDATE tasks SET state = 'failed', last_error = ?, lease_until = NULL, updated_at = ?, finished_at = ? WHERE id = ? AND state IN ('running', 'queued') AND fenced = 0 AND owner IS ?",
        reason, now, now, id, owner,
      ).changes;
      if (changed !== 1) return false;
      this.db.run('DELETE FROM task_locks WHERE task_id = ?', id);
      fn();
      return true;
    });
  }

  cancel(id: number, reason: string): void {
    const now = new Date().toISOString();
    this.db.transaction(() => {
      this.db.run("UPDATE tasks SET state = 'cancelled', last_error = ?, lease_until = NULL, updated_at = ?, finished_at = ? WHERE id = ? AND state IN ('queued', 'running')", reason, now, now, id);
      this.db.run('DELETE FROM task_locks WHERE task_id = ?', id);
    });
  }

  runningOfOthers(queues: readonly string[], owner: string): TaskRow[] {
    if (queues.length === 0) return [];
    return this.db.all<TaskRow>(
      `SELECT * FROM tasks WHERE state = 'running' AND queue IN (${placeholders(queues.length)}) AND (owner IS NULL OR owner != ?)`,
      ...queues, owner,
    );
  }

  requeueExpired(id: number, previousOwner: string | null): boolean {
    return this.db.run(
      "UPDATE tasks SET state = 'queued', owner = NULL, lease_until = NULL, fenced = 0, updated_at = ? WHERE id = ? AND state = 'running' AND owner IS ?",
      new Date().toISOString(), id, previousOwner,
    ).changes === 1;
  }

  queuedCount(queues: readonly string[]): number {
    if (queues.length === 0) return 0;
    return this.db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM tasks WHERE state = 'queued' AND queue IN (${placeholders(queues.length)})`, ...queues)?.n ?? 0;
  }

  nextDueMs(queues: readonly string[], nowMs: number): number | null {
    if (queues.length === 0) return null;
    return this.db.get<{ due: number | null }>(
      `SELECT MIN(not_before) AS due FROM tasks WHERE state = 'queued' AND queue IN (${placeholders(queues.length)}) AND not_before > ?`,
      ...queues, nowMs,
    )?.due ?? null;
  }

  fenceResource(resourceId: string, reason: string): { cancelled: number; fenced: number } {
    const now = new Date().toISOString();
    return this.db.transaction(() => {
      const queued = this.db.all<{ id: number }>(`SELECT id FROM tasks WHERE state = 'queued' AND id IN (${writersOfResourceSql})`, resourceId, resourceId);
      for (const { id } of queued) this.cancel(id, reason);
      const fenced = this.db.run(`UPDATE tasks SET fenced = 1, last_error = ?, updated_at = ? WHERE state = 'running' AND fenced = 0 AND id IN (${writersOfResourceSql})`, reason, now, resourceId, resourceId).changes;
      return { cancelled: queued.length, fenced };
    });
  }

  setProgress(id: number, owner: string, progress: string): void {
    this.db.run("UPDATE tasks SET progress = ?, updated_at = ? WHERE id = ? AND owner = ? AND state = 'running'", progress, new Date().toISOString(), id, owner);
  }

  purgeFinished(beforeIso: string): number {
    return this.db.run("DELETE FROM tasks WHERE state IN ('failed', 'cancelled', 'done') AND finished_at IS NOT NULL AND finished_at < ?", beforeIso).changes;
  }

  get(id: number): TaskRow | undefined {
    return this.db.get<TaskRow>('SELECT * FROM tasks WHERE id = ?', id);
  }
}
