/**
 * Named crash points and the injectable clock.
 *
 * A multi-step task calls `task.checkpoint(name)` (or `crashPoint(name)` from
 * code without a task) around every await that changes state. With
 * `PUMICE_CRASH_POINT=name:hit[,name:hit...]` in the environment the process
 * kills itself with SIGKILL (a real kill -9: no exit handlers, no native
 * destructors, no flush of anything buffered) the `hit`-th time it reaches
 * `name`, so a failing seed of the crash harness replays exactly; whoever
 * waits for it sees the signal SIGKILL (a shell's 137). It announces that on
 * stderr first (`crash-point NAME:HIT: killing the process (SIGKILL; ...)`),
 * so a test tells this death from any other. With `name:hit:stop` it stops
 * itself instead (SIGSTOP), holding whatever it holds (leases, files), so a
 * test can kill -9 it, or cut its network, mid-operation.
 *
 * `PUMICE_CRASH_CONTROL=FILE` arms points while the process runs: whenever the
 * file changed since the last crash point (it is looked at, one stat, at each
 * point) its text replaces the armed set (same syntax; empty: none armed) and
 * the hit counts start again from zero, so `name:1` means the first pass after
 * the file was written (until a file appears, PUMICE_CRASH_POINT holds). A harness that runs many operations on one server
 * needs no restart to arm the next one. Write it atomically (write, rename).
 *
 * `PUMICE_CRASH_TRACE=1` prints every point reached (`crash-point NAME HIT`
 * on stderr) so a harness can learn which points an operation passes.
 */
import { readFileSync, statSync, writeSync } from 'node:fs';

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** A clock tests move by hand. */
export class ManualClock implements Clock {
  constructor(private ms = Date.now()) {}
  now(): number {
    return this.ms;
  }
  advance(ms: number): void {
    this.ms += ms;
  }
}

interface Armed {
  /** Point name to the hit that crashes (or stops) the process. */
  points: Map<string, number>;
  /** Points armed with `:stop`: the process stops (SIGSTOP) there instead of dying. */
  stopping: Set<string>;
}

export function parseCrashSpec(text: string | undefined): Armed {
  const points = new Map<string, number>();
  const stopping = new Set<string>();
  for (let part of (text ?? '').split(/[,\n]/).map((p) => p.trim()).filter(Boolean)) {
    const stop = part.endsWith(':stop');
    if (stop) part = part.slice(0, -':stop'.length);
    const at = part.lastIndexOf(':');
    const name = at > 0 ? part.slice(0, at) : part;
    const hit = at > 0 ? Number(part.slice(at + 1)) : 1;
    points.set(name, Number.isInteger(hit) && hit > 0 ? hit : 1);
    if (stop) stopping.add(name);
  }
  return { points, stopping };
}

let armed = parseCrashSpec(process.env['PUMICE_CRASH_POINT']);
const control = process.env['PUMICE_CRASH_CONTROL'] || null;
/** What the control file was when last read (inode, size, mtime): a rename or a write changes it. Absent at first: PUMICE_CRASH_POINT holds until a file appears. */
let controlSeen = 'absent';
const trace = process.env['PUMICE_CRASH_TRACE'] === '1';
const hits = new Map<string, number>();

/** Re-arms from the control file when it changed; the hit counts start again. */
function readControl(): void {
  const st = statSync(control!, { throwIfNoEntry: false, bigint: true });
  const seen = st ? `${st.ino}:${st.size}:${st.mtimeNs}` : 'absent';
  if (seen === controlSeen) return;
  controlSeen = seen;
  let text = '';
  try {
    text = st ? readFileSync(control!, 'utf8') : '';
  } catch {
    // Replaced between the stat and the read: the next point reads the new file.
    controlSeen = '';
  }
  armed = parseCrashSpec(text);
  hits.clear();
}

/** Counts a pass through crash point `name`; kills the process (SIGKILL) when it is the armed hit. */
export function crashPoint(name: string): void {
  if (control) readControl();
  if (armed.points.size === 0 && !trace) return;
  const hit = (hits.get(name) ?? 0) + 1;
  hits.set(name, hit);
  if (trace) writeSync(2, `crash-point ${name} ${hit}\n`);
  if (armed.points.get(name) !== hit) return;
  if (armed.stopping.has(name)) {
    writeSync(2, `crash-point ${name}:${hit}: stopping (SIGSTOP; PUMICE_CRASH_POINT)\n`);
    process.kill(process.pid, 'SIGSTOP');
    return;
  }
  writeSync(2, `crash-point ${name}:${hit}: killing the process (SIGKILL; PUMICE_CRASH_POINT)\n`);
  process.kill(process.pid, 'SIGKILL');
  // Not reached (the kernel kills the process on the way back from kill(2)); nothing after the point may run.
  process.exit(137);
}
