/**
 * Follows a `pumice serve` the test spawned itself (its own command line, user or namespace, where
 * `startPumice` does not fit): collects stdout and stderr, and resolves with the URL once it prints
 * "ready at URL"; rejects, with the output, if it exits first or is not ready in `timeoutMs`.
 */
import type { ChildProcess } from 'node:child_process';

export interface FollowedServe {
  /** The API's URL, once the server printed "ready at". */
  ready: Promise<string>;
  /** Resolves with the exit code when the process ends. */
  exited: Promise<number | null>;
  /** Everything it printed so far (stdout and stderr). */
  output(): string;
}

export function followServe(proc: ChildProcess, timeoutMs = 60_000): FollowedServe {
  let output = '';
  proc.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const ready = new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve was not ready in ${timeoutMs} ms:\n${output}`)), timeoutMs);
    proc.stdout!.on('data', (d: Buffer) => {
      output += d.toString();
      const m = /ready at (http:\/\/\S+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1]!);
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code} before it was ready:\n${output}`));
    });
  });
  // A rejection nobody awaits (the test already failed elsewhere) must not crash the runner.
  ready.catch(() => undefined);
  return { ready, exited, output: () => output };
}
