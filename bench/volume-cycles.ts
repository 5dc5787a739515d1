/**
 * Volume create→available→delete→gone cycles per second on the local
 * backend, for each concurrency (default 1 and 32 clients), each phase a
 * fixed duration. Each client: POST /volumes (size 1), poll GET until
 * available, DELETE, poll GET until 404. Also prints the server's resident
 * memory idle after start and at peak under load (VmRSS sampled every
 * 100 ms), the CPU the server used (also less what it uses idle), and the
 * load average before and after each phase: on a shared machine the server's
 * CPU per cycle is the figure to compare, and only runs of similar load.
 *
 *   node --import tsx bench/volume-cycles.ts [--duration 10] [--concurrency 1,32] [--poll fixed:2,backoff:1:16] [--task-concurrency N] [--cpu-prof DIR] [--database URL]
 *
 * Polling: see pollSchedules below. --task-concurrency N starts the server
 * with [DEFAULT] volume_task_concurrency = N (default: the server's 8).
 * --database postgresql://… runs the server on that (empty) PostgreSQL database, e.g.
 * `scripts/with-postgres.sh sh -c 'node --import tsx bench/volume-cycles.ts --database "$PUMICE_TEST_DATABASE"'`;
 * default: SQLite in the data directory.
 */
import {
  arg, argString, cleanupOnSignal, cpuMeter, latencySummary, login, now, rssMiB, sampleRss, sleep, startServer, unlimitedQuota,
  type Server, type Session,
} from './lib.ts';
import { loadavg } from 'node:os';

const durationS = arg('duration', 10);
const concurrencies = argString('concurrency', '1,32').split(',').map(Number);
/**
 * Poll schedules, comma separated; every concurrency runs with each:
 *   fixed:N      first GET at once, then every N ms ("tight")
 *   backoff:A:B  first GET at once, then wait A ms, doubling up to B ms ("smart": few wasted GETs under load)
 */
const pollSchedules = argString('poll', 'fixed:2,backoff:1:16').split(',');
const profileDir = argString('cpu-prof', '');
/** 0 = the server's default ([DEFAULT] volume_task_concurrency = 8). */
const taskConcurrency = arg('task-concurrency', 0);
/** '' = SQLite in the data directory. */
const databaseUrl = argString('database', '');

let server: Server | undefined;
cleanupOnSignal(() => (server ? [server] : []));

function pollDelays(schedule: string): (attempt: number) => number {
  const [kind, a, b] = schedule.split(':');
  if (kind === 'fixed') return () => Number(a ?? 2);
  if (kind === 'backoff') return (attempt) => Math.min(Number(b ?? 16), Number(a ?? 1) * 2 ** (attempt - 1));
  throw new Error(`unknown poll schedule '${schedule}' (fixed:N or backoff:A:B)`);
}

async function waitFor(s: Session, id: string, until: 'available' | 'gone', counter: { polls: number }, delay: (attempt: number) => number): Promise<void> {
  const deadline = now() + 60_000;
  for (let attempt = 0; ; attempt++) {
    if (attempt > 0) await sleep(delay(attempt));
    const res = await s.call('GET', `${s.volumeUrl}/volumes/${id}`);
    counter.polls++;
    if (until === 'gone' && res.status === 404) return;
    if (res.status !== 200) throw new Error(`GET volume ${id}: ${res.status} ${res.text}`);
    const status = res.json<{ volume: { status: string } }>().volume.status;
    if (until === 'available' && status === 'available') return;
    if (status.startsWith('error')) throw new Error(`volume ${id} went ${status}`);
    if (now() > deadline) throw new Error(`volume ${id} not ${until} after 60 s (last ${status})`);
  }
}

interface PhaseResult {
  cycles: number;
  errors: string[];
  elapsedS: number;
  createMs: number[];
  deleteMs: number[];
  polls: number;
}

async function phase(s: Session, clients: number, delay: (attempt: number) => number): Promise<PhaseResult> {
  const stopAt = now() + durationS * 1000;
  const result: PhaseResult = { cycles: 0, errors: [], elapsedS: 0, createMs: [], deleteMs: [], polls: 0 };
  const counter = { polls: 0 };
  const started = now();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let i = 0; now() < stopAt; i++) {
        try {
          const t0 = now();
          const created = await s.call('POST', `${s.volumeUrl}/volumes`, { volume: { size: 1, name: `cycle-${c}-${i}` } });
          if (created.status !== 202) throw new Error(`create: ${created.status} ${created.text}`);
          const id = created.json<{ volume: { id: string } }>().volume.id;
          await waitFor(s, id, 'available', counter, delay);
          const t1 = now();
          const deleted = await s.call('DELETE', `${s.volumeUrl}/volumes/${id}`);
          if (deleted.status !== 202) throw new Error(`delete: ${deleted.status} ${deleted.text}`);
          await waitFor(s, id, 'gone', counter, delay);
          const t2 = now();
          result.cycles++;
          result.createMs.push(t1 - t0);
          result.deleteMs.push(t2 - t1);
        } catch (error) {
          result.errors.push((error as Error).message.slice(0, 200));
          await sleep(100);
        }
      }
    }),
  );
  result.elapsedS = (now() - started) / 1000;
  result.polls = counter.polls;
  return result;
}

async function main(): Promise<void> {
  server = await startServer({
    nodeFlags: profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [],
    config:
      (taskConcurrency ? `[DEFAULT]\nvolume_task_concurrency = ${taskConcurrency}\n` : '') + (databaseUrl ? `[database]\nconnection = ${databaseUrl}\n` : '') || undefined,
  });
  try {
    await sleep(1000);
    const rssStart = rssMiB(server.pid);
    const s = await login(server.url);
    await unlimitedQuota(s);
    await sleep(1000);
    console.log(`# volume-cycles: ${durationS} s per phase, poll schedules ${pollSchedules.join(' ')}, local backend, database ${databaseUrl ? 'PostgreSQL' : 'SQLite'}, volume_task_concurrency ${taskConcurrency || '8 (default)'}, server pid ${server.pid}`);
    console.log(`rss_idle_after_start: ${rssStart.toFixed(1)} MiB (1 s after ready, no request yet)`);
    console.log(`rss_idle_after_first_login: ${rssMiB(server.pid).toFixed(1)} MiB (one password token, one quota update)`);
    // Warm-up: JIT and statement cache, not counted.
    for (let i = 0; i < 20; i++) {
      const r = await s.call('POST', `${s.volumeUrl}/volumes`, { volume: { size: 1, name: 'warmup' } });
      const id = r.json<{ volume: { id: string } }>().volume.id;
      await waitFor(s, id, 'available', { polls: 0 }, () => 2);
      await s.call('DELETE', `${s.volumeUrl}/volumes/${id}`);
      await waitFor(s, id, 'gone', { polls: 0 }, () => 2);
    }
    console.log(`rss_after_warmup: ${rssMiB(server.pid).toFixed(1)} MiB`);
    // The server's own timers (WAL checkpoints, polls, heartbeats) cost CPU with no request at all; on a
    // loaded machine a phase completes few cycles and that share swamps the per-cycle figure, so it is
    // measured here and also shown taken out.
    const idleMeter = cpuMeter(server.pid);
    await sleep(3000);
    const idle = idleMeter.stop();
    const idleCpuPerS = idle.serverS / idle.elapsedS;
    console.log(`server_cpu_idle: ${(idleCpuPerS * 1000).toFixed(1)} ms per s (3 s without requests)`);
    for (const clients of concurrencies) for (const schedule of pollSchedules) {
      const loadBefore = loadavg()[0]!;
      const rss = sampleRss(server.pid, 100);
      const meter = cpuMeter(server.pid);
      const r = await phase(s, clients, pollDelays(schedule));
      const cpu = meter.stop();
      const mem = rss.stop();
      const p = `c${clients}_${schedule.replace(/:/g, '_')}`;
      console.log(`${p}_cycles: ${r.cycles} in ${r.elapsedS.toFixed(2)} s`);
      console.log(`${p}_cycles_per_s: ${(r.cycles / r.elapsedS).toFixed(1)}`);
      console.log(`${p}_errors: ${r.errors.length}${r.errors.length ? ` (first: ${r.errors[0]})` : ''}`);
      console.log(`${p}_create_to_available: ${latencySummary(r.createMs)}`);
      console.log(`${p}_delete_to_gone: ${latencySummary(r.deleteMs)}`);
      console.log(`${p}_polls_per_cycle: ${(r.polls / Math.max(1, r.cycles)).toFixed(2)}  (HTTP requests per cycle: ${(2 + r.polls / Math.max(1, r.cycles)).toFixed(2)}, ${((r.cycles * 2 + r.polls) / r.elapsedS).toFixed(0)} req/s)`);
      console.log(`${p}_cpu: ${cpu.text}`);
      console.log(`${p}_server_cpu_per_cycle: ${((cpu.serverS / Math.max(1, r.cycles)) * 1000).toFixed(2)} ms`);
      console.log(`${p}_server_cpu_per_cycle_above_idle: ${((Math.max(0, cpu.serverS - idleCpuPerS * cpu.elapsedS) / Math.max(1, r.cycles)) * 1000).toFixed(2)} ms`);
      console.log(`${p}_load_average: ${loadBefore.toFixed(2)} -> ${loadavg()[0]!.toFixed(2)} (1 min, before -> after the phase)`);
      console.log(`${p}_rss_peak: ${mem.peakMiB.toFixed(1)} MiB (${mem.samples} samples every 100 ms, end ${mem.lastMiB.toFixed(1)} MiB)`);
    }
    const left = await s.call('GET', `${s.volumeUrl}/volumes?limit=5`);
    console.log(`volumes_left_after_run: ${left.json<{ volumes: unknown[] }>().volumes.length}`);
  } finally {
    await server.stop();
    if (profileDir) console.log(`cpu profile of the server written to ${profileDir}`);
    server.cleanup();
  }
}

await main();
