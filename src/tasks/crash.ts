/**
 * Named crash points and the injectable clock.
 *
 * A multi-step task calls `task.checkpoint(name)` (or `crashPoint(name)` from
 * code without a task) around every await that changes state. With
 * `PUMICE_CRASH_POINT=name:hit[,name:hit...]` in the environment the process
 * exits with status 137 (as after kill -9) the `hit`-th time it reaches
 * `name`, so a failing seed of the crash harness replays exactly. With
 * `name:hit:stop` it stops itself instead (SIGSTOP), holding whatever it holds
 * (leases, files), so a test can kill -9 it, or cut its network, mid-operation.
 * `PUMICE_CRASH_TRACE=1` prints every point reached (`crash-point NAME HIT`
 * on stderr) so a harness can learn which points an operation passes.
 */
import { writeSync } from 'node:fs';

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

function parseSpec(text: string | undefined): Map<string, number> {
  const points = new Map<string, number>();
  for (let part of (text ?? '').split(',').map((p) => p.trim()).filter(Boolean)) {
    if (part.endsWith(':stop')) {
      part = part.slice(0, -':stop'.length);
      stopping.add(part.slice(0, part.lastIndexOf(':') > 0 ? part.lastIndexOf(':') : part.length));
    }
    const at = part.lastIndexOf(':');
    const name = at > 0 ? part.slice(0, at) : part;
    const hit = at > 0 ? Number(part.slice(at + 1)) : 1;
    points.set(name, Number.isInteger(hit) && hit > 0 ? hit : 1);
  }
  return points;
}

/** Points armed with `:stop`: the process stops (SIGSTOP) there instead of exiting. */
const stopping = new Set<string>();
const armed = parseSpec(process.env['PUMICE_CRASH_POINT']);
const trace = process.env['PUMICE_CRASH_TRACE'] === '1';
const hits = new Map<string, number>();

/** Counts a pass through crash point `name`; exits the process (137) when it is the armed hit. */
export function crashPoint(name: string): void {
  if (armed.size === 0 && !trace) return;
  const hit = (hits.get(name) ?? 0) + 1;
  hits.set(name, hit);
  if (trace) writeSync(2, `crash-point ${name} ${hit}\n`);
  if (armed.get(name) === hit && stopping.has(name)) {
    writeSync(2, `crash-point ${name}:${hit}: stopping (SIGSTOP; PUMICE_CRASH_POINT)\n`);
    process.kill(process.pid, 'SIGSTOP');
    return;
  }
  if (armed.get(name) === hit) {
    writeSync(2, `crash-point ${name}:${hit}: exiting with 137 (PUMICE_CRASH_POINT)\n`);
    process.exit(137);
  }
}
