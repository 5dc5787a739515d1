/**
 * What runs at the end of an event-loop turn, in one setImmediate, in four phases:
 *  0. the COMMIT of the turn's deferred database transactions (src/db/db.ts group commit), so
 *     no reply or task start below tells of a write that is not kept;
 *  1. the API replies of the turn (src/http/server.ts; it writes the turn's events and log lines
 *     first, so a client that reads them after its reply finds its request there);
 *  2. the rest of the deferred work: task starts and claim passes (src/tasks/queue.ts);
 *  3. the log lines logged in the turn, the first two phases' included (src/events.ts).
 * A reply must leave before the work its request queued begins: a task that crashed the process
 * first (a crash point, or a real kill -9 a moment later) would leave the client with a cut
 * connection for a request that was accepted, and a client that retries a create makes a second
 * volume. The log lines last: one write(2) for all of the turn's, and no immediate of their own.
 */
const commits: (() => void)[] = [];
const replies: (() => void)[] = [];
const work: (() => void)[] = [];
const flushes: (() => void)[] = [];
const phases = [commits, replies, work, flushes];
let scheduled = false;

function schedule(): void {
  if (scheduled) return;
  scheduled = true;
  setImmediate(runTurnEnd);
}

function runTurnEnd(): void {
  // Jobs deferred while this runs join it when their phase is still to come (a log line of a task
  // start is flushed in this pass); one deferred to a phase already done gets a pass of its own.
  for (const phase of phases) {
    for (const job of phase.splice(0)) {
      try {
        job();
      } catch (error) {
        // The other jobs still run; the error stays uncaught, as it would have in its own setImmediate.
        setImmediate(() => {
          throw error;
        });
      }
    }
  }
  scheduled = false;
  if (phases.some((phase) => phase.length > 0)) schedule();
}

/** Runs `job` at the end of this turn, first (the database's group commit). */
export function atTurnEndCommit(job: () => void): void {
  commits.push(job);
  schedule();
}

/** Runs `job` at the end of this turn, before any `atTurnEnd` job (API replies). */
export function atTurnEndFirst(job: () => void): void {
  replies.push(job);
  schedule();
}

/** Runs `job` at the end of this turn, after the replies of the turn are written. */
export function atTurnEnd(job: () => void): void {
  work.push(job);
  schedule();
}

/** Runs `job` last at the end of this turn, after the replies and the deferred work (writes the turn's log lines). */
export function atTurnEndLast(job: () => void): void {
  flushes.push(job);
  schedule();
}
