/**
 * The seeded crash harness at scale (test/e2e/crash-harness.test.ts runs a
 * few seeds): seeds × operations on a real server that kills itself (SIGKILL)
 * at a crash point chosen from each seed, is restarted, and is checked for
 * stuck resources, orphans and byte mismatches. Prints every failing seed
 * (replay it with --first-seed S --seeds 1), the crash points hit, the
 * recovery time (restart to settled) p50/p99, and where the time went.
 *
 *   node --import tsx bench/crash-harness.ts [--seeds 100] [--operations 10] [--first-seed 1] [--parallel 1] [--until ISO-TIME]
 *
 * Local backend (sparse files) and the posix backup driver by default; with
 * --backend ceph, RBD volumes and the Ceph backup driver in pools made per seed
 * on the lab named by PUMICE_CEPH_LAB (e.g. --backend ceph --seeds 30 for 300
 * operations). --parallel N runs N seeds at once (own server, data directory,
 * port, pools). Every server of the run loads one bundle of the sources as
 * they were at its start (test/helpers/crash-harness.ts prepareHarnessServer).
 */
import { loadavg } from 'node:os';
import { readLab } from '../src/ceph/lab.ts';
import { cephCrashOperations, crashOperations, percentile, prepareHarnessServer, runCrashSeed, type CrashRunOptions, type CrashStep } from '../test/helpers/crash-harness.ts';
import { arg, argString } from './lib.ts';

const seeds = arg('seeds', 100);
const operations = arg('operations', 10);
const firstSeed = arg('first-seed', 1);

const backendArg = argString('backend', 'local');
if (backendArg !== 'local' && backendArg !== 'ceph') throw new Error(`--backend local|ceph, not ${backendArg}`);
const labDir = process.env['PUMICE_CEPH_LAB'];
if (backendArg === 'ceph' && !labDir) throw new Error('--backend ceph needs PUMICE_CEPH_LAB (start one: pumice ceph-lab up DIR)');
const backend: CrashRunOptions['backend'] = backendArg === 'ceph' ? { ceph: readLab(labDir!) } : 'local';
console.log(`crash_harness_backend: ${backendArg}`);
const load = () => loadavg().map((l) => l.toFixed(2)).join(' ');
console.log(`crash_harness_load_start: ${load()}`);

const steps: CrashStep[] = [];
const failures: { seed: number; message: string }[] = [];
const timing: Record<string, number> = {};
const started = Date.now();
let seedsRun = 0;
// --until ISO-TIME: no seed starts after it (a run that must end by a deadline still prints its figures).
const untilArg = argString('until', '');
const until = untilArg ? Date.parse(untilArg) : Infinity;
if (Number.isNaN(until)) throw new Error(`--until takes an ISO time (2026-12-06T00:40:00Z), not ${untilArg}`);
// --parallel N: seeds at once, each with its own server, data directory and port (the Ceph ones with their own pools).
const parallel = Math.max(1, arg('parallel', 1));
console.log(`crash_harness_parallel: ${parallel}`);
// One bundle of the sources as they are now for every server of the run (edits made meanwhile are not picked up).
const server = await prepareHarnessServer();
console.log(`crash_harness_server: ${server.label}`);
let next = firstSeed;
let stoppedAt: number | null = null;
async function worker(): Promise<void> {
  for (;;) {
    const seed = next++;
    if (seed >= firstSeed + seeds) return;
    if (Date.now() > until) {
      stoppedAt ??= seed;
      return;
    }
    try {
      const result = await runCrashSeed(seed, { operations, backend, server });
      steps.push(...result.steps);
      for (const [phase, ms] of Object.entries(result.timing)) timing[phase] = (timing[phase] ?? 0) + ms;
      const crashed = result.steps.filter((s) => s.crashed).length;
      console.log(`seed ${seed}: ${result.steps.length} operations, ${crashed} crashes (load ${load()}): ${result.steps.map((s) => `${s.operation}@${s.crashPoint ?? '-'}${s.crashed ? '!' : ''}`).join(' ')}`);
    } catch (error) {
      failures.push({ seed, message: (error as Error).message.split('\n').slice(0, 12).join('\n') });
      // The whole message at once: a long run may be stopped before the end.
      console.log(`seed ${seed}: FAILED (load ${load()}): ${(error as Error).message.split('\n').slice(0, 60).join('\n')}`);
    }
    seedsRun++;
  }
}
try {
  await Promise.all(Array.from({ length: parallel }, () => worker()));
} finally {
  server.dispose();
}
if (stoppedAt !== null) console.log(`crash_harness_stopped: --until ${untilArg} passed before seed ${stoppedAt}; the figures are of the ${seedsRun} seeds that ran`);
summarize();

function summarize(): never {
  const hits = new Map<string, number>();
  for (const s of steps) if (s.crashed && s.crashPoint) hits.set(s.crashPoint, (hits.get(s.crashPoint) ?? 0) + 1);
  const recoveries = steps.flatMap((s) => (s.recoveryMs === null ? [] : [s.recoveryMs]));
  const allPoints = Object.values(backendArg === 'ceph' ? cephCrashOperations : crashOperations).flat();
  console.log(`crash_harness_seeds: ${seedsRun} of ${seeds} asked from ${firstSeed} (${failures.length} failed), ${operations} operations each`);
  console.log(`crash_harness_operations: ${steps.length} checked, ${steps.filter((s) => s.crashed).length} crashed, ${steps.filter((s) => s.crashPoint && !s.crashed).length} armed but not reached`);
  console.log(`crash_harness_failed_seeds: ${failures.length}${failures.length ? ` (${failures.map((f) => f.seed).join(', ')})` : ''}`);
  console.log(`crash_harness_points_hit: ${hits.size} of ${new Set(allPoints).size}: ${[...hits].sort().map(([p, n]) => `${p}=${n}`).join(' ')}`);
  console.log(`crash_harness_recovery_ms: n=${recoveries.length} p50=${percentile(recoveries, 50)} p99=${percentile(recoveries, 99)} max=${Math.max(0, ...recoveries)}`);
  console.log(`crash_harness_elapsed_s: ${((Date.now() - started) / 1000).toFixed(0)}`);
  // Summed over the seeds (parallel seeds overlap): where a seed's time goes.
  const total = Object.values(timing).reduce((a, b) => a + b, 0);
  console.log(`crash_harness_time_by_phase_s: ${Object.entries(timing).map(([p, ms]) => `${p}=${(ms / 1000).toFixed(0)} (${((100 * ms) / Math.max(1, total)).toFixed(0)}%)`).join(' ')}`);
  console.log(`crash_harness_load_end: ${load()}`);
  for (const f of failures) console.log(`--- seed ${f.seed}\n${f.message}`);
  process.exit(failures.length ? 1 : 0);
}
