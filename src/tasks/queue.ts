/**
 * The task engine: durable work in the database, run by the role that owns
 * each queue.
 *
 * **Tasks and queues.** A service writes a resource in its first state and
 * enqueues its task in the same transaction (`enqueue` joins the caller's
 * transaction), so a crash never strands a request between the two. A task
 * names a queue: a volume backend section (`local`, `ceph`), `backup`, or a
 * compute host (`compute:<host>`). A `TaskQueue` runs the queues passed to
 * `start`, at most `concurrencyPerQueue` tasks of each at once, and calls the
 * handler registered for the task's kind. Handlers are idempotent: a task is
 * re-run from the start after a crash, and every step tolerates having been
 * done already.
 *
 * **Leases.** Claiming a task records the runner (`owner`, which names host
 * and pid) and `lease_until`; a heartbeat renews the leases of running tasks.
 * A runner takes over a task of another runner only when its lease expired,
 * or at once when the owner was a process of this host that is gone — so two
 * processes on one data directory never run a task twice. A task that keeps
 * being interrupted fails after `attemptsMax` tries.
 *
 * **Operation locks.** A task declares the resources it writes and reads
 * (`locks`: by default it writes its own resource). It is claimed only when
 * no running task, and no older queued task, holds a conflicting lock (reads
 * share, a write excludes everything): "clone V" and "delete V", "snapshot
 * V" and "extend V", "volume from S" and "delete S" run one after the other,
 * in the order they were asked for.
 *
 * **Outcomes.** A handler returns (done) or throws. Typed errors
 * (`./errors.ts`) decide what follows: transient and conflict errors are
 * retried with exponential backoff and jitter until `attemptsMax`, then the
 * task fails with the last reason and the number of attempts; other errors
 * fail it at once. A failed task calls its failure handler in the
 * transaction that marks it failed; if that handler throws, nothing of it is
 * kept (a savepoint) and the task is failed with both reasons.
 *
 * **Checkpoints, fencing and chains.** `task.checkpoint(name)` is a named
 * crash point (see `./crash.ts`) and checks that the task is still this
 * runner's and not fenced: `os-reset_status` fences the running tasks that
 * write the resource and cancels the queued ones, and a fenced task stops at
 * its next checkpoint without writing. `task.complete(fn)` runs the task's
 * last writes and marks it done in one transaction (fence checked inside);
 * a follow-up task enqueued in `fn` is a chain (volume created → restore the
 * backup into it) that exists if and only if the first task finished.
 *
 * **Retention.** Done tasks are deleted when they finish; failed and
 * cancelled ones are kept `failedRetentionDays` for `pumice tasks` and
 * support, then purged with expired user messages by `purge`.
 */
import { emitEvent, noteTaskQueued, withTaskRequest } from '../events.ts';
import { hostname } from 'node:os';
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { tasksQueuedChannel, type Db } from '../db/db.ts';
import { systemClock, crashPoint, type Clock } from './crash.ts';
import { classifyError, errorMessage, TaskFencedError } from './errors.ts';
import { SqliteTaskStore, type TaskLocks, type TaskRow, type TaskStore } from './store.ts';
import { atTurnEnd } from '../util/turn-end.ts';

export type { TaskLocks, TaskRow } from './store.ts';

export interface Task<P = unknown> {
  id: number;
  kind: string;
  resourceId: string;
  queue: string;
  payload: P;
  /** This run's number (1 on the first run; a retry or a re-run after a crash adds one). */
  attempts: number;
  /**
   * A named crash point; throws TaskFencedError when the task was fenced
   * (reset by an operator) or taken over. Call it around every await that
   * changes state.
   */
  checkpoint(name: string): void;
  /**
   * Runs `fn` (the task's final writes, and any follow-up `enqueue`) and marks
   * the task done, in one transaction. Throws TaskFencedError, writing nothing,
   * when the task is no longer this runner's. `deferCommit`: the handler does
   * nothing more, so the transaction may share the turn's COMMIT (Db.transaction):
   * a crash before it leaves the task running, to be run again.
   */
  complete<T>(fn: () => T, options?: { deferCommit?: boolean }): T;
  /** Records progress shown by `pumice tasks show` (e.g. "40% (1/4 GiB)"). */
  progress(text: string): void;
}

export type TaskHandler = (task: Task) => Promise<void>;
/** Called when a task fails for good, to put its resource in an error state with a reason. */
export type TaskFailureHandler = (task: Task, reason: string) => void;

export interface RetryOptions {
  /** First backoff; attempt n waits baseMs * 2^(n-1), capped, with full jitter over its upper half. */
  baseMs: number;
  capMs: number;
}

export interface TaskQueueOptions {
  db: Db;
  log: (message: string) => void;
  /** Tasks of one queue running at once. */
  concurrencyPerQueue: number;
  /** Tries before a task is failed for good (retries of transient errors and re-runs after a crash both count). */
  attemptsMax: number;
  /** Fallback poll for tasks enqueued by other processes sharing the database, and for expired leases. */
  pollIntervalMs: number;
  /** How long a claim holds without a heartbeat (default 30 s). */
  leaseMs?: number;
  retry?: RetryOptions;
  clock?: Clock;
  /** Random numbers in [0, 1) for the backoff jitter (tests pass a seeded one). */
  random?: () => number;
  store?: TaskStore;
}

export interface EnqueueOptions {
  /** Resources the task writes and reads besides its own resource (always written). */
  locks?: TaskLocks;
  /** Delay before the task may run, in ms. */
  delayMs?: number;
}

const defaultLeaseMs = 30_000;
const defaultRetry: RetryOptions = { baseMs: 1000, capMs: 30_000 };

/** Runners of one process per database, so a task that ends wakes the runners its locks held back. */
const runnersByDb = new WeakMap<Db, Set<TaskQueue>>();
/** Fences set by this process; a checkpoint reads the task row when it changed (else at most every fenceCheckIntervalMs). */
let localFences = 0;
/** How stale a checkpoint's view of a fence set by another process may be; task.complete() always checks. */
const fenceCheckIntervalMs = 250;
/** SQLite: how often a process looks whether another one committed (PRAGMA data_version), for tasks queued there. */
const otherCommitWatchMs = 100;

/**
 * Owner names `host:pid:random:pidspace`, so a runner on the same host can tell a dead owner at
 * once. `pidspace` names the boot and the pid namespace: containers (or network-namespace hosts)
 * that share a hostname have pids of their own, and a pid that is not alive in this namespace
 * may be alive in theirs.
 */
function ownerName(): string {
  return `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}:${pidSpace()}`;
}

let pidSpaceId: string | undefined;
/** This process's boot id and pid namespace inode, hashed short; '' where /proc does not say. */
function pidSpace(): string {
  if (pidSpaceId !== undefined) return pidSpaceId;
  try {
    const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    pidSpaceId = createHash('sha256').update(`${bootId}/${statSync('/proc/self/ns/pid').ino}`).digest('hex').slice(0, 8);
  } catch {
    pidSpaceId = '';
  }
  return pidSpaceId;
}

/** Counts a fence set in this process (the state owner's force() calls it), so checkpoints look at once. */
export function noteLocalFence(): void {
  localFences++;
}

function ownerIsDeadLocalProcess(owner: string | null): boolean {
  if (!owner) return true;
  const [host, pidText, , space] = owner.split(':');
  const pid = Number(pidText);
  if (host !== hostname() || !Number.isInteger(pid) || pid <= 0 || pid === process.pid) return false;
  // Another boot or pid namespace (or one /proc does not name): only its lease tells. An owner named before pidspace (three parts) is judged as before.
  if (space !== undefined && (space === '' || space !== pidSpace())) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

export class TaskQueue {
  readonly runnerId = ownerName();
  readonly store: TaskStore;
  private readonly clock: Clock;
  private readonly leaseMs: number;
  private readonly retry: RetryOptions;
  private readonly random: () => number;
  private readonly handlers = new Map<string, TaskHandler>();
  private readonly failureHandlers = new Map<string, TaskFailureHandler>();
  private readonly queues = new Set<string>();
  /** Queues of this runner it claims nothing from for now (pauseClaims). */
  private readonly pausedQueues = new Set<string>();
  private readonly running = new Map<string, number>();
  private readonly inFlight = new Set<Promise<void>>();
  private pollTimer: NodeJS.Timeout | undefined;
  private leaseTimer: NodeJS.Timeout | undefined;
  private wakeTimer: NodeJS.Timeout | undefined;
  private wakeAtMs = Infinity;
  private rearmWake = false;
  private stopped = true;
  private kickScheduled = false;
  private readonly idleWaiters: (() => void)[] = [];

  constructor(private readonly options: TaskQueueOptions) {
    this.store = options.store ?? new SqliteTaskStore(options.db);
    this.clock = options.clock ?? systemClock;
    this.leaseMs = options.leaseMs ?? defaultLeaseMs;
    this.retry = options.retry ?? defaultRetry;
    this.random = options.random ?? Math.random;
    let runners = runnersByDb.get(options.db);
    if (!runners) {
      runnersByDb.set(options.db, (runners = new Set()));
      // Tasks queued by another host (PostgreSQL) are claimed when their transaction commits, not at the next poll.
      const db = options.db;
      if (db.engine === 'postgresql') db.listen(tasksQueuedChannel, (queue) => runnersByDb.get(db)?.forEach((runner) => runner.queuedElsewhere(queue)));
      // SQLite: another process's commit (`pumice tasks retry`, a CLI) may have queued a task: a claim pass within 100 ms, not at the poll.
      else db.watchOtherCommits(otherCommitWatchMs, () => runnersByDb.get(db)?.forEach((runner) => runner.queuedElsewhere(null)));
    }
    runners.add(this);
  }

  /** Another host queued a task in `queue` (its NOTIFY; null: in some queue): a claim pass, if this runner serves that queue. */
  private queuedElsewhere(queue: string | null): void {
    if (this.stopped || this.queues.size === 0 || (queue !== null && !this.queues.has(queue))) return;
    this.maybeQueued = true;
    this.scheduleClaimPass();
  }

  register(kind: string, handler: TaskHandler, onFailure: TaskFailureHandler): void {
    this.handlers.set(kind, handler);
    this.failureHandlers.set(kind, onFailure);
  }

  /**
   * Enqueues a task; call it inside the transaction that writes the resource
   * (it joins it). The task writes `resourceId`, plus what `options.locks` names.
   * Returns the task id.
   */
  enqueue(kind: string, resourceId: string, queue: string, payload: unknown = {}, options: EnqueueOptions = {}): number {
    const id = this.store.insert({
      kind,
      resourceId,
      queue,
      payload,
      locks: { write: [resourceId, ...(options.locks?.write ?? [])], read: options.locks?.read ?? [] },
      notBeforeMs: options.delayMs ? this.clock.now() + options.delayMs : 0,
      parentTaskId: null,
    });
    // The request that queued it: the task's events and log lines carry its request id.
    noteTaskQueued(id, { kind, resource_id: resourceId, queue });
    let claimed = false;
    if (options.delayMs) setImmediate(() => this.scheduleWake());
    else claimed = this.claimWhileQueuing(queue);
    // Claimed at once (the usual case): nothing more is queued because of this call.
    this.kickAll(claimed ? undefined : queue);
    return id;
  }

  /**
   * A runner of this process with a free slot for `queue` claims that queue's next task in the
   * transaction that queues one, and launches it once the transaction commits: a claim then
   * costs one statement of that transaction instead of a write transaction of its own (and
   * nothing runs if the transaction rolls back). The claim is the one the claim pass makes, so
   * leases, locks and order are the same. Only within `db.transaction` on SQLite (see
   * TaskStore.claimInTransaction); otherwise the kick's claim pass claims.
   */
  private claimWhileQueuing(queue: string): boolean {
    const { db } = this.options;
    if (db.engine !== 'sqlite' || !db.inOwnTransaction) return false;
    for (const runner of runnersByDb.get(db) ?? []) {
      if (runner.stopped || !runner.queues.has(queue) || runner.pausedQueues.has(queue)) continue;
      const running = runner.running.get(queue) ?? 0;
      if (running >= runner.options.concurrencyPerQueue) continue;
      const now = runner.clock.now();
      const row = runner.store.claimInTransaction(queue, runner.runnerId, now, now + runner.leaseMs);
      if (!row) return false;
      // The slot is taken now, so a second task queued in this transaction does not overfill it.
      runner.running.set(queue, running + 1);
      db.afterCommit(
        () => runner.launch(row, { slotTaken: true }),
        () => runner.running.set(queue, (runner.running.get(queue) ?? 1) - 1),
      );
      return true;
    }
    return false;
  }

  /** Starts runners for `queues` (more may be added by calling it again). Tasks whose owner's lease expired are taken over. */
  start(queues: string[]): void {
    for (const q of queues) this.queues.add(q);
    this.stopped = false;
    this.recoverAbandoned();
    if (!this.pollTimer) {
      this.pollTimer = setInterval(() => {
        this.survive('the poll', () => {
          this.recoverAbandoned();
          this.scheduleWake();
        });
        this.kick();
      }, this.options.pollIntervalMs);
      this.pollTimer.unref();
    }
    if (!this.leaseTimer) {
      this.leaseTimer = setInterval(() => this.survive('lease renewal', () => this.store.renew(this.runnerId, this.clock.now() + this.leaseMs)), Math.max(10, Math.floor(this.leaseMs / 3)));
      this.leaseTimer.unref();
    }
    this.kick();
  }

  /**
   * Stops (`paused`) or resumes claiming new tasks of one queue; running tasks go on. A volume
   * host whose backend is down pauses that backend's queue: its tasks stay queued for a member
   * of the cluster that reaches the storage, or until this host does again. Idempotent.
   */
  pauseClaims(queue: string, paused: boolean): void {
    if (paused) this.pausedQueues.add(queue);
    else if (this.pausedQueues.delete(queue)) this.kick();
  }

  /** Stops claiming new tasks and waits for the running ones. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.pollTimer = undefined;
    this.wakeTimer = undefined;
    this.wakeAtMs = Infinity;
    await Promise.allSettled([...this.inFlight]);
    if (this.leaseTimer) clearInterval(this.leaseTimer);
    this.leaseTimer = undefined;
  }

  /** Resolves when no task of this runner's queues is queued or running (for tests and shutdown). */
  whenIdle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** os-reset_status of `resourceId`: queued tasks that write it are cancelled, running ones stop at their next checkpoint. */
  fence(resourceId: string, reason = 'cancelled by os-reset_status'): { cancelled: number; fenced: number } {
    noteLocalFence();
    return this.store.fenceResource(resourceId, reason);
  }

  private isIdle(): boolean {
    if (this.inFlight.size > 0) return false;
    return this.store.queuedCount([...this.queues]) === 0;
  }

  /** True when a running task's owner can no longer be running it (lease expired, or a dead process of this host). */
  abandoned(row: Pick<TaskRow, 'owner' | 'lease_until' | 'state'>): boolean {
    if (row.state !== 'running' || row.owner === this.runnerId) return false;
    return row.lease_until === null || row.lease_until < this.clock.now() || ownerIsDeadLocalProcess(row.owner);
  }

  private recoverAbandoned(): void {
    for (const row of this.store.runningOfOthers([...this.queues], this.runnerId)) {
      if (!this.abandoned(row)) continue;
      if (row.attempts >= this.options.attemptsMax) {
        this.fail(row, row.owner, `the task was interrupted ${row.attempts} times (the process running it stopped) and was given up`);
      } else if (this.store.requeueExpired(row.id, row.owner)) {
        this.options.log(`WARNING: task ${row.id} ${row.kind} ${row.resource_id}: its runner ${row.owner ?? '(none)'} is gone (lease expired); running it again`);
      }
    }
  }

  /** Schedules a claim pass on the next tick (coalesces bursts of enqueues); something may be queued. */
  kick(): void {
    this.maybeQueued = true;
    this.scheduleClaimPass();
  }

  /**
   * False when this runner's last claim pass found no queued task at all in its queues, and no
   * task was queued since without being claimed at once (enqueue, the poll, a wake, a resume and
   * an outside kick set it again). A task that ends then needs no claim pass: on a busy SQLite
   * server every task is claimed in the transaction that queues it, and the pass that followed
   * each task's end found nothing (two autocommit reads per task, each with its WAL read lock).
   * A task queued by another process sharing the SQLite file sets it within 100 ms (that
   * process's commit moves data_version: Db.watchOtherCommits). PostgreSQL always runs the pass:
   * there other hosts queue most tasks.
   */
  private maybeQueued = true;

  private scheduleClaimPass(): void {
    if (this.stopped || this.kickScheduled) return;
    this.kickScheduled = true;
    // After the replies of this turn (a claim may start a task that crashes the process): see turn-end.ts.
    atTurnEnd(() => {
      this.kickScheduled = false;
      this.survive('a claim pass', () => this.claimAvailable());
    });
  }

  /** The failure of the last timer-driven database call, while the database stays unreachable; null when it answers. */
  private outage: string | null = null;

  /**
   * Runs a timer's database work. A database that does not answer (PostgreSQL cut off, a locked
   * SQLite file) must not kill the process from a timer: the next poll tries again, and leases
   * that could not be renewed expire so a live member takes the work over. Logged when the
   * outage starts and when it ends, not at every poll.
   */
  private survive(what: string, work: () => void): void {
    try {
      work();
      if (this.outage !== null) {
        this.options.log(`task queue: the database answers again (it failed from ${this.outage})`);
        this.outage = null;
      }
    } catch (error) {
      if (this.outage === null) {
        this.outage = new Date(this.clock.now()).toISOString();
        this.options.log(`ERROR: task queue: ${what} failed: ${(error as Error).message}; claims and lease renewals are retried at every poll until the database answers`);
      }
    }
  }

  /** A claim pass for every runner of this database; `queued`: a task of that queue was queued and not claimed. */
  private kickAll(queued?: string): void {
    for (const runner of runnersByDb.get(this.options.db) ?? [this]) {
      if (queued !== undefined && runner.queues.has(queued)) runner.maybeQueued = true;
      runner.scheduleClaimPass();
    }
  }

  private claimAvailable(): void {
    if (this.stopped) return;
    if (!this.maybeQueued && this.options.db.engine === 'sqlite') {
      this.notifyIdle();
      return;
    }
    // Cleared only when every queue was looked at and holds no queued task (not merely none claimable
    // now: a task held back by a lock becomes claimable when the task holding it ends).
    let empty = true;
    for (const queue of this.queues) {
      if (this.pausedQueues.has(queue)) continue;
      let looked = false;
      while ((this.running.get(queue) ?? 0) < this.options.concurrencyPerQueue) {
        const now = this.clock.now();
        const row = this.store.claim(queue, this.runnerId, now, now + this.leaseMs);
        looked = !row;
        if (!row) break;
        this.launch(row);
      }
      if (!looked || this.store.queuedCount([queue]) > 0) empty = false;
    }
    if (empty) this.maybeQueued = false;
    if (this.rearmWake) {
      this.rearmWake = false;
      this.scheduleWake();
    }
    this.notifyIdle();
  }

  /** Wakes the runner when the earliest backed-off task becomes due. */
  private scheduleWake(): void {
    const now = this.clock.now();
    const due = this.store.nextDueMs([...this.queues], now);
    if (due === null || due >= this.wakeAtMs) return;
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeAtMs = due;
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = undefined;
      this.wakeAtMs = Infinity;
      // The claim pass re-arms the timer for what is still not due (a timer may fire a little early).
      this.rearmWake = true;
      this.kick();
    }, Math.max(1, due - now) + 1);
    // Not unref'd: a retry that is due keeps the process (and whenIdle waiters) alive; bounded by retry.capMs.
  }

  /** Runs a claimed task; `slotTaken`: claimed while queuing, its slot counted already and its start deferred to the next turn. */
  private launch(row: TaskRow, options: { slotTaken?: boolean } = {}): void {
    if (!options.slotTaken) {
      withTaskRequest(row.id, () => this.launchInContext(row));
      return;
    }
    // Not run inside the caller that committed the transaction (an API request): on the next turn, as a claim pass would.
    // Held in inFlight until launched (stop() waits for it), then the task's own promise is.
    const started = new Promise<void>((resolve) => atTurnEnd(resolve)).then(() => {
      this.inFlight.delete(started);
      withTaskRequest(row.id, () => this.launchInContext(row, options));
    });
    this.inFlight.add(started);
  }

  private launchInContext(row: TaskRow, options: { slotTaken?: boolean } = {}): void {
    emitEvent('task.claimed', { ...taskFields(row), owner: this.runnerId });
    if (!options.slotTaken) this.running.set(row.queue, (this.running.get(row.queue) ?? 0) + 1);
    const promise = this.execute(row).finally(() => {
      this.running.set(row.queue, (this.running.get(row.queue) ?? 1) - 1);
      this.inFlight.delete(promise);
      // A slot is free, and the locks it held: queued tasks may be claimable now (if any is queued).
      this.kickAll();
    });
    this.inFlight.add(promise);
  }

  private toTask(row: TaskRow, state: { completed: boolean }): Task {
    const { store, clock } = this;
    const owner = this.runnerId;
    let checkedAtMs = clock.now();
    let fencesSeen = localFences;
    return {
      id: row.id,
      kind: row.kind,
      resourceId: row.resource_id,
      queue: row.queue,
      payload: JSON.parse(row.payload) as unknown,
      attempts: row.attempts,
      checkpoint: (name: string) => {
        crashPoint(name);
        const now = clock.now();
        if (fencesSeen === localFences && now - checkedAtMs < fenceCheckIntervalMs) return;
        fencesSeen = localFences;
        checkedAtMs = now;
        store.check(row.id, owner);
      },
      complete: <T>(fn: () => T, options?: { deferCommit?: boolean }): T => {
        const result = store.complete(row.id, owner, fn, options);
        state.completed = true;
        emitEvent('task.done', taskFields(row));
        return result;
      },
      progress: (text: string) => store.setProgress(row.id, owner, text),
    };
  }

  private async execute(row: TaskRow): Promise<void> {
    const handler = this.handlers.get(row.kind);
    if (!handler) {
      this.fail(row, this.runnerId, `no handler for task kind '${row.kind}' in this version of Pumice`);
      return;
    }
    const state = { completed: false };
    const task = this.toTask(row, state);
    try {
      await handler(task);
      if (!state.completed) task.complete(() => undefined);
    } catch (error) {
      this.settleError(row, task, error);
    }
  }

  private settleError(row: TaskRow, task: Task, error: unknown): void {
    const reason = errorMessage(error);
    const kind = classifyError(error);
    const label = `task ${row.id} ${row.kind} ${row.resource_id}`;
    if (kind === 'fenced') {
      this.options.log(`WARNING: ${label}: stopped without writing: ${reason}`);
      emitEvent('task.fenced', { ...taskFields(row), reason });
      // Taken over by another runner: that runner owns the row now; leave it alone.
      if (!(error instanceof TaskFencedError) || !/taken over/.test(reason)) this.store.cancel(row.id, reason);
      return;
    }
    if ((kind === 'transient' || kind === 'conflict') && row.attempts < this.options.attemptsMax) {
      const delayMs = this.backoffMs(row.attempts);
      if (this.store.retry(row.id, this.runnerId, this.clock.now() + delayMs, reason)) {
        this.options.log(`WARNING: ${label}: attempt ${row.attempts} failed (${kind}): ${reason}; retrying in ${delayMs} ms`);
        emitEvent('task.retry', { ...taskFields(row), error_kind: kind, reason, delay_ms: delayMs });
        this.scheduleWake();
        return;
      }
    }
    const final = kind === 'transient' || kind === 'conflict' ? `${reason} (gave up after ${row.attempts} attempt${row.attempts === 1 ? '' : 's'})` : reason;
    this.options.log(`ERROR: ${label} failed: ${final}`);
    emitEvent('task.failed', { ...taskFields(row), error_kind: kind, reason: final });
    this.fail(row, this.runnerId, final, task);
  }

  /** Exponential backoff with jitter: attempt n waits between half and all of min(cap, base * 2^(n-1)). */
  backoffMs(attempt: number): number {
    const ceiling = Math.min(this.retry.capMs, this.retry.baseMs * 2 ** Math.max(0, attempt - 1));
    return Math.round(ceiling / 2 + this.random() * (ceiling / 2));
  }

  private fail(row: TaskRow, owner: string | null, reason: string, task?: Task): void {
    const handler = this.failureHandlers.get(row.kind);
    const view = task ?? this.toTask(row, { completed: false });
    try {
      const failed = this.store.fail(row.id, owner, reason, () => handler?.(view, reason));
      if (!failed) {
        // Fenced or taken over meanwhile: whoever holds it now decides.
        const current = this.store.get(row.id);
        if (current?.fenced && current.state === 'running') this.store.cancel(row.id, current.last_error ?? 'fenced');
      }
    } catch (error) {
      // The handler's writes were rolled back with the transaction; the task still fails, with both reasons.
      const handlerReason = errorMessage(error);
      this.options.log(`ERROR: task ${row.id} ${row.kind} ${row.resource_id}: failure handler failed (its writes were undone): ${handlerReason}`);
      this.store.fail(row.id, owner, `${reason}; then the failure handler failed: ${handlerReason}`, () => undefined);
    }
  }

  private notifyIdle(): void {
    if (this.idleWaiters.length === 0 || !this.isIdle()) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}

/** The fields every task event carries. */
function taskFields(row: TaskRow): Record<string, unknown> {
  return { task_id: row.id, kind: row.kind, resource_id: row.resource_id, queue: row.queue, attempts: row.attempts };
}
