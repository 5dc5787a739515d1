/**
 * Work deferred to the end of the current event-loop turn (one setImmediate), in two phases:
 * the API replies of the turn first, then the rest (task starts and claim passes). A reply
 * batched for the end of the turn (src/http/server.ts) must leave before the work its request
 * queued begins: a task that crashed the process first (a crash point, or a real kill -9 a moment
 * later) would leave the client with a cut connection for a request that was accepted, and a
 * client that retries a create makes a second volume.
 */
const replies: (() => void)[] = [];
const work: (() => void)[] = [];
let scheduled = false;

function schedule(): void {
  if (scheduled) return;
  scheduled = true;
  setImmediate(runTurnEnd);
}

function runTurnEnd(): void {
  scheduled = false;
  for (const phase of [replies, work]) {
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
