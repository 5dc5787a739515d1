/**
 * The owner of a server's state. A server has two state columns, as in Nova:
 * vm_state (what it is) and task_state (what is being done to it); every
 * change of either goes through `ServerStates.transition`, which
 *
 * - compares and sets: the change applies only while vm_state is one of
 *   `fromVm` and task_state one of `fromTask` (null = any), read and written
 *   as one compare-and-set on the values it read (retried when another
 *   writer moved the row in between and the caller accepted any state);
 * - enforces the tables in ./tables.ts: the vm_state move must be listed, the
 *   resulting task_state must be allowed in the resulting vm_state; an
 *   illegal change throws under tests and is refused (logged) in production;
 * - keeps a delete a delete: while task_state is 'deleting', only the
 *   delete's own end (vm_state deleted or error) may clear it; any other
 *   writer's change is a compare-and-set miss (a build finishing under a
 *   delete must not make the server ACTIVE again).
 *
 * `force` is os-resetState: any vm_state, no task, and the server's tasks
 * fenced (queued ones cancelled, running ones stop at their next checkpoint).
 */
import { nowIso, type Db, type SqlValue } from '../db/db.ts';
import { emitEvent } from '../events.ts';
import { noteLocalFence } from '../tasks/queue.ts';
import type { ResizeTaskState, ServerTaskState, VmState } from '../compute/model.ts';
import { serverFinalTaskStates, serverTaskStates, serverVmTransitions } from './tables.ts';
import { IllegalTransitionError, type StateOwnerOptions } from './owner.ts';

/** The columns a server transition may set besides its two states (names are code; checked anyway). */
export type ServerStateChanges = { vm_state?: VmState; task_state?: ServerTaskState } & Record<string, SqlValue | undefined>;

const columnName = /^[a-z_][a-z0-9_]*$/;
const ownColumns = new Set(['id', 'generation', 'updated_at']);
/** A row that keeps moving under a compare-and-set is given up on after this many reads. */
const maxAttempts = 5;

interface StateRow {
  vm_state: VmState;
  task_state: ServerTaskState;
}

/**
 * Cold migration (migrate, confirmResize, revertResize), in addition to ./tables.ts (another
 * module's file this session; these rows belong there): an ACTIVE or SHUTOFF server goes through
 * resize_prep → resize_migrating → resize_migrated → resize_finish and ends `resized`
 * (VERIFY_RESIZE) on the destination; confirm or revert ends it `active` or `stopped` as its power
 * state says (Nova keeps the power state across a cold migration).
 */
export const coldMigrationVmTransitions: Readonly<Partial<Record<VmState, readonly VmState[]>>> = {
  active: ['resized'],
  stopped: ['resized'],
  resized: ['stopped'],
};
export const coldMigrationTaskStates: Readonly<Record<ResizeTaskState, readonly VmState[]>> = {
  resize_prep: ['active', 'stopped'],
  resize_migrating: ['active', 'stopped'],
  resize_migrated: ['active', 'stopped'],
  resize_finish: ['active', 'stopped'],
  resize_reverting: ['resized'],
  resize_confirming: ['resized'],
};

function vmMoves(from: VmState): readonly VmState[] {
  return [...(serverVmTransitions[from] ?? []), ...(coldMigrationVmTransitions[from] ?? [])];
}

function taskAllowedIn(task: NonNullable<ServerTaskState>): readonly VmState[] {
  return task in coldMigrationTaskStates ? coldMigrationTaskStates[task as ResizeTaskState] : ((serverTaskStates as Record<string, readonly VmState[]>)[task] ?? []);
}

function isFinalTask(task: ServerTaskState): boolean {
  return task !== null && (serverFinalTaskStates as ReadonlySet<string>).has(task);
}

export class ServerStates {
  constructor(
    private readonly db: Db,
    private readonly options: StateOwnerOptions,
  ) {}

  /** Why `from → changes` breaks the tables, or null when it is legal. */
  illegal(from: StateRow, changes: ServerStateChanges): string | null {
    const vm = changes.vm_state ?? from.vm_state;
    const task = changes.task_state !== undefined ? changes.task_state : from.task_state;
    if (vm !== from.vm_state && !vmMoves(from.vm_state).includes(vm)) return `vm_state ${from.vm_state} → ${vm} is not in serverVmTransitions`;
    if (task !== null && !taskAllowedIn(task).includes(vm)) return `task_state ${task} is not allowed in vm_state ${vm} (serverTaskStates)`;
    return null;
  }

  /**
   * Applies `changes` to server `id` while its vm_state is one of `fromVm` and its task_state one
   * of `fromTask` (null: any). Returns whether the row moved.
   */
  transition(id: string, fromVm: readonly VmState[] | null, fromTask: readonly ServerTaskState[] | null, changes: ServerStateChanges): boolean {
    const columns = Object.keys(changes).filter((c) => changes[c] !== undefined);
    for (const c of columns) if (!columnName.test(c) || ownColumns.has(c)) throw new Error(`bad column '${c}' in a server transition`);
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      const row = this.db.get<StateRow>('SELECT vm_state, task_state FROM servers WHERE id = ?', id);
      if (!row) return false;
      if (fromVm && !fromVm.includes(row.vm_state)) return false;
      if (fromTask && !fromTask.includes(row.task_state)) return false;
      const vm = changes.vm_state ?? row.vm_state;
      const task = changes.task_state !== undefined ? changes.task_state : row.task_state;
      // A delete in progress is only ended by itself (the server deleted, or in error when it failed).
      if (isFinalTask(row.task_state) && task !== row.task_state && vm !== 'deleted' && vm !== 'error') return false;
      const problem = this.illegal(row, changes);
      if (problem) {
        const message = `illegal server transition for server ${id} (${row.vm_state}/${row.task_state ?? '-'} → ${vm}/${task ?? '-'}): ${problem} (src/state/tables.ts)`;
        if (this.options.strict) throw new IllegalTransitionError(message);
        this.options.log(`ERROR ${message}; refused, the row is left alone`);
        return false;
      }
      const sets = ['updated_at = ?', 'generation = generation + 1', ...columns.map((c) => `${c} = ?`)];
      const params: SqlValue[] = [nowIso(), ...columns.map((c) => changes[c] as SqlValue)];
      // The compare half: the values just read (NULL needs IS NULL, on SQLite and PostgreSQL alike).
      const taskMatch = row.task_state === null ? 'task_state IS NULL' : 'task_state = ?';
      const where = [id, row.vm_state, ...(row.task_state === null ? [] : [row.task_state])];
      const moved = this.db.run(`UPDATE servers SET ${sets.join(', ')} WHERE id = ? AND vm_state = ? AND ${taskMatch}`, ...params, ...where).changes === 1;
      if (moved) {
        if (vm !== row.vm_state || task !== row.task_state) emitEvent('state.transition', { resource: 'server', id, from: `${row.vm_state}/${row.task_state ?? '-'}`, to: `${vm}/${task ?? '-'}`, moved });
        return true;
      }
      // Another writer moved the row between the read and the write: read it again.
    }
    return false;
  }

  /** os-resetState: vm_state `to`, no task, `changes`; fences the server's tasks. False if the row is gone. */
  force(id: string, to: VmState, changes: ServerStateChanges, reason: string): boolean {
    return this.db.transaction(() => {
      const columns = Object.keys(changes).filter((c) => changes[c] !== undefined && c !== 'vm_state' && c !== 'task_state');
      for (const c of columns) if (!columnName.test(c) || ownColumns.has(c)) throw new Error(`bad column '${c}' in a server reset`);
      const sets = ['vm_state = ?', 'task_state = NULL', 'updated_at = ?', 'generation = generation + 1', ...columns.map((c) => `${c} = ?`)];
      const moved = this.db.run(`UPDATE servers SET ${sets.join(', ')} WHERE id = ?`, to, nowIso(), ...columns.map((c) => changes[c] as SqlValue), id).changes === 1;
      emitEvent('state.forced', { resource: 'server', id, to, moved, reason });
      if (moved) {
        noteLocalFence();
        const { cancelled, fenced } = this.options.tasks.fenceResource(id, reason);
        if (cancelled + fenced > 0) this.options.log(`server ${id} set to ${to} (${reason}): ${cancelled} queued task(s) cancelled, ${fenced} running task(s) fenced`);
      }
      return moved;
    });
  }
}
