/**
 * Typed task outcomes. A handler (or the driver under it) throws one of
 * these to say what the runner should do; anything else is classified by
 * `classifyError`:
 *
 * - `TransientError`: the operation may succeed if tried again (a Ceph
 *   timeout, EAGAIN, a backend briefly down). Retried with exponential
 *   backoff and jitter up to the runner's bound, then failed with the last
 *   reason and the number of attempts.
 * - `ConflictError`: something else holds the resource for now (EBUSY, an
 *   image still open). Retried like a transient error.
 * - `NotFoundError`: what the task works on is gone. Final.
 * - `FatalError`: retrying cannot help (bad input, no space, no permission). Final.
 * - `TaskFencedError`: thrown by the runner itself at a checkpoint when an
 *   operator reset the resource (`os-reset_status`) or another runner took
 *   the task over; the task stops without writing anything.
 */

export type TaskOutcomeKind = 'transient' | 'conflict' | 'not-found' | 'fatal' | 'fenced';

export class TaskError extends Error {
  constructor(readonly kind: TaskOutcomeKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

export class TransientError extends TaskError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('transient', message, options);
  }
}

export class ConflictError extends TaskError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('conflict', message, options);
  }
}

export class NotFoundError extends TaskError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('not-found', message, options);
  }
}

export class FatalError extends TaskError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('fatal', message, options);
  }
}

/** The task was fenced (reset by an operator, or taken over after its lease expired): stop, write nothing. */
export class TaskFencedError extends TaskError {
  constructor(message: string) {
    super('fenced', message);
  }
}

const transientMark = Symbol.for('pumice.transient');

/**
 * Marks an error of another type (a DriverError that names the fix) as
 * worth retrying, keeping its class and message for the user.
 */
export function markTransient<E extends Error>(error: E): E {
  (error as unknown as Record<symbol, boolean>)[transientMark] = true;
  return error;
}

/** errno names of librados/librbd (and sockets) that a retry may cure. */
const transientCodes = new Set(['ETIMEDOUT', 'EAGAIN', 'EINTR', 'ECONNRESET', 'ECONNREFUSED', 'ESHUTDOWN', 'ENOTCONN', 'EHOSTUNREACH']);
const conflictCodes = new Set(['EBUSY']);

/** What the runner does with an error thrown by a handler. */
export function classifyError(error: unknown): TaskOutcomeKind {
  if (error instanceof TaskError) return error.kind;
  if (error instanceof Error) {
    if ((error as unknown as Record<symbol, unknown>)[transientMark] === true) return 'transient';
    // A librbd/librados error as the binding raises it (RbdError: code + errno + operation).
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'string') {
      if (transientCodes.has(code)) return 'transient';
      if (conflictCodes.has(code)) return 'conflict';
      if (code === 'ENOENT') return 'not-found';
    }
  }
  return 'fatal';
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
