/**
 * The operator's view of the task table, shared by `pumice tasks` (on a data
 * directory) and the admin API (`/pumice/v1/tasks`): list with filters, show
 * with locks and payload, retry a failed or cancelled task, cancel a queued
 * one or fence a running one (it stops at its next checkpoint, writing
 * nothing). The resource's status is never changed here: that stays with the
 * resource's state owner (`os-reset_status`).
 */
import type { Db } from '../db/db.ts';
import { errors } from '../errors.ts';
import { SqliteTaskStore, type TaskRow, type TaskState } from './store.ts';

export const taskStates: readonly TaskState[] = ['queued', 'running', 'done', 'failed', 'cancelled'];
export const taskListLimitMax = 1000;

export interface TaskFilter {
  state?: string | undefined;
  kind?: string | undefined;
  /** A task's own resource, or any resource it locks. */
  resource?: string | undefined;
  /** Tasks with a smaller id than this (the list is newest first). */
  marker?: number | undefined;
  limit: number;
}

/** A task as the API and `--json` show it: times as ISO text, `fenced` as a boolean. */
export interface TaskView {
  id: number;
  kind: string;
  resource_id: string;
  queue: string;
  state: string;
  attempts: number;
  owner: string | null;
  lease_until: string | null;
  not_before: string | null;
  fenced: boolean;
  last_error: string | null;
  progress: string | null;
  parent_task_id: number | null;
  created_at: string;
  updated_at: string;
  finished_at: string | null;
}

export interface TaskDetail extends TaskView {
  payload: unknown;
  locks: { resource_id: string; mode: string }[];
}

/** Payload keys whose values are credentials or guest secrets: never shown. */
const secretKey = /pass(word)?|secret|token|key(ring)?$|user_data|psk/i;

function redact(value: unknown, depth = 0): unknown {
  if (depth > 8 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  return Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, secretKey.test(k) && v !== null && v !== undefined ? '***' : redact(v, depth + 1)]));
}

export function taskView(row: TaskRow): TaskView {
  return {
    id: row.id,
    kind: row.kind,
    resource_id: row.resource_id,
    queue: row.queue,
    state: row.state,
    attempts: row.attempts,
    owner: row.owner,
    lease_until: row.lease_until ? new Date(row.lease_until).toISOString() : null,
    not_before: row.not_before > 0 ? new Date(row.not_before).toISOString() : null,
    fenced: row.fenced === 1,
    last_error: row.last_error,
    progress: row.progress,
    parent_task_id: row.parent_task_id,
    created_at: row.created_at,
    updated_at: row.updated_at,
    finished_at: row.finished_at,
  };
}

export class TaskAdmin {
  private readonly store: SqliteTaskStore;

  constructor(private readonly db: Db) {
    this.store = new SqliteTaskStore(db);
  }

  list(filter: TaskFilter): TaskRow[] {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (filter.state) {
      if (!taskStates.includes(filter.state as TaskState)) throw errors.badRequest(`Invalid task state '${filter.state}': one of ${taskStates.join(', ')}.`);
      where.push('state = ?');
      params.push(filter.state);
    }
    if (filter.kind) (where.push('kind = ?'), params.push(filter.kind));
    if (filter.resource) (where.push('(resource_id = ? OR id IN (SELECT task_id FROM task_locks WHERE resource_id = ?))'), params.push(filter.resource, filter.resource));
    if (filter.marker !== undefined) (where.push('id < ?'), params.push(filter.marker));
    const limit = Math.max(1, Math.min(filter.limit, taskListLimitMax));
    return this.db.all<TaskRow>(`SELECT * FROM tasks ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`, ...params, limit);
  }

  get(id: number): TaskRow {
    const row = Number.isSafeInteger(id) && id > 0 ? this.store.get(id) : undefined;
    if (!row) throw errors.notFound('Task', String(id));
    return row;
  }

  /** Every column, the locks it holds, and the payload with credentials masked. */
  detail(id: number, options: { revealSecrets: boolean } = { revealSecrets: false }): TaskDetail {
    const row = this.get(id);
    let payload: unknown;
    try {
      payload = JSON.parse(row.payload) as unknown;
    } catch {
      payload = row.payload;
    }
    // A queued or running task holds a write lock on its own resource (its row is the lock), plus the named ones.
    const named = this.db.all<{ resource_id: string; mode: string }>('SELECT resource_id, mode FROM task_locks WHERE task_id = ? AND resource_id != ? ORDER BY mode DESC, resource_id', row.id, row.resource_id);
    const locks = row.state === 'queued' || row.state === 'running' ? [{ resource_id: row.resource_id, mode: 'write' }, ...named] : named;
    return { ...taskView(row), payload: options.revealSecrets ? payload : redact(payload), locks };
  }

  /**
   * Queues a failed or cancelled task again, attempts from 0. Its named locks were released when
   * it ended and are not recorded: queued again, it holds its own resource's write lock only.
   */
  retry(id: number): TaskRow {
    const row = this.get(id);
    if (row.state !== 'failed' && row.state !== 'cancelled') throw errors.conflict(`Task ${row.id} is ${row.state}: only a failed or cancelled task can be retried.`);
    this.db.run(
      "UPDATE tasks SET state = 'queued', attempts = 0, owner = NULL, lease_until = NULL, not_before = 0, fenced = 0, finished_at = NULL, updated_at = ? WHERE id = ? AND state = ?",
      new Date().toISOString(), row.id, row.state,
    );
    return this.get(id);
  }

  /** A queued task is cancelled; a running one is fenced and stops at its next checkpoint without writing. */
  cancel(id: number, reason: string): { task: TaskRow; effect: 'cancelled' | 'fenced' } {
    const row = this.get(id);
    if (row.state === 'queued') {
      this.store.cancel(row.id, reason);
      return { task: this.get(id), effect: 'cancelled' };
    }
    if (row.state === 'running') {
      this.db.run("UPDATE tasks SET fenced = 1, last_error = ?, updated_at = ? WHERE id = ? AND state = 'running'", reason, new Date().toISOString(), row.id);
      return { task: this.get(id), effect: 'fenced' };
    }
    throw errors.conflict(`Task ${row.id} is ${row.state} already: only a queued or running task can be cancelled.`);
  }
}
