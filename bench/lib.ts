/**
 * Shared helpers for the benchmarks in bench/: start a real `pumice serve`
 * in a child process (free port, temporary data directory), a small
 * keep-alive HTTP client, percentiles, and resident-memory sampling from
 * /proc. Benchmarks are not tests: they print figures and exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { closeSync, createReadStream, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { labPurge, labUp, readLab, type CephLab } from '../src/ceph/lab.ts';

export const repoRoot = resolve(import.meta.dirname, '..');
export const adminPassword = 'bench-admin-password';

export interface Server {
  url: string;
  pid: number;
  dataDir: string;
  proc: ChildProcess;
  output(): string;
  /** SIGTERM and wait for exit (SIGKILL after 10 s). */
  stop(): Promise<void>;
  /** Removes the data directory (after stop). */
  cleanup(): void;
}

export interface ServerOptions {
  /** Reuse an existing data directory (e.g. one prepared with rows inserted directly). */
  dataDir?: string;
  /** INI text written to DATA_DIR/pumice.conf. */
  config?: string;
  /** Extra node flags for the server process, e.g. ['--cpu-prof', '--cpu-prof-dir=/tmp/x']. */
  nodeFlags?: string[];
}

export async function startServer(options: ServerOptions = {}): Promise<Server> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'pumice-bench-'));
  const args = [...(options.nodeFlags ?? []), join(repoRoot, 'bin', 'pumice.mjs'), 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0'];
  if (options.config !== undefined) {
    writeFileSync(join(dataDir, 'pumice.conf'), options.config);
    args.push('--config', join(dataDir, 'pumice.conf'));
  }
  const proc = spawn(process.execPath, args, {
    cwd: repoRoot,
    env: { ...process.env, PUMICE_ADMIN_PASSWORD: adminPassword },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  proc.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`pumice did not start in 90 s:\n${output}`)), 90_000);
    proc.stdout!.on('data', () => {
      const m = /ready at (http:\/\/\S+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1]!);
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`pumice exited with ${code} before it was ready:\n${output}`));
    });
  });
  let stopped = false;
  // If the benchmark dies (an exception, EPIPE from `| head`), take the server and its data with it.
  const onExit = () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    if (basename(dataDir).startsWith('pumice-bench-')) rmSync(dataDir, { recursive: true, force: true });
  };
  process.once('exit', onExit);
  void exited.then(() => process.removeListener('exit', onExit));
  return {
    url,
    pid: proc.pid!,
    dataDir,
    proc,
    output: () => output,
    async stop() {
      if (stopped) return;
      stopped = true;
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
    cleanup() {
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Stops and removes the server on SIGINT/SIGTERM of the benchmark itself. */
export function cleanupOnSignal(servers: () => Server[]): void {
  const handler = async () => {
    for (const s of servers()) {
      await s.stop().catch(() => undefined);
      s.cleanup();
    }
    process.exit(130);
  };
  process.once('SIGINT', handler);
  process.once('SIGTERM', handler);
}

// ---- HTTP ----
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

export interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json<T = any>(): T;
}

export function request(url: string, method: string, headers: Record<string, string> = {}, body?: unknown): Promise<Response> {
  return new Promise((resolveRes, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const h: Record<string, string> = { Accept: 'application/json', ...headers };
    if (payload) {
      h['Content-Type'] = 'application/json';
      h['Content-Length'] = String(payload.length);
    }
    const req = http.request(url, { method, headers: h, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolveRes({ status: res.statusCode ?? 0, headers: res.headers, text, json: () => JSON.parse(text) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

export interface Session {
  url: string;
  token: string;
  projectId: string;
  volumeUrl: string;
  call(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Response>;
}

export function passwordAuthBody(user = 'admin', password = adminPassword, project = 'admin') {
  return {
    auth: {
      identity: { methods: ['password'], password: { user: { name: user, domain: { name: 'Default' }, password } } },
      scope: { project: { name: project, domain: { name: 'Default' } } },
    },
  };
}

export async function login(url: string): Promise<Session> {
  const res = await request(`${url}/identity/v3/auth/tokens`, 'POST', {}, passwordAuthBody());
  if (res.status !== 201) throw new Error(`login failed: ${res.status} ${res.text}`);
  const token = String(res.headers['x-subject-token']);
  const projectId = res.json<{ token: { project: { id: string } } }>().token.project.id;
  const volumeUrl = `${url}/volume/v3/${projectId}`;
  return {
    url,
    token,
    projectId,
    volumeUrl,
    call: (method, path, body, headers = {}) =>
      request(path.startsWith('http') ? path : `${url}${path}`, method, { 'X-Auth-Token': token, ...headers }, body),
  };
}

/** Polls a volume (1, 2, 4 … 16 ms apart) until it has status `wanted` ('gone': 404); throws on an error status. */
export async function waitVolumeStatus(s: Session, id: string, wanted: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const r = await s.call('GET', `${s.volumeUrl}/volumes/${id}`);
    if (wanted === 'gone' && r.status === 404) return;
    if (r.status === 200) {
      const status = r.json<{ volume: { status: string } }>().volume.status;
      if (status === wanted) return;
      if (status.startsWith('error')) throw new Error(`volume ${id} went to ${status}`);
    }
    await sleep(Math.min(16, 2 ** (attempt - 1)));
  }
}

/** Lifts the admin project's volume quotas (volumes, gigabytes, snapshots: unlimited). */
export async function unlimitedQuota(s: Session): Promise<void> {
  const res = await s.call('PUT', `/volume/v3/${s.projectId}/os-quota-sets/${s.projectId}`, { quota_set: { volumes: -1, gigabytes: -1, snapshots: -1 } });
  if (res.status !== 200) throw new Error(`quota update failed: ${res.status} ${res.text}`);
}

// ---- data and clusters ----
/** Writes `bytes` of random data (8 MiB blocks, so no all-zero runs in practice); returns the md5 of the content. */
export function makeRandomFile(path: string, bytes: number): string {
  const blockBytes = 8 * 1024 * 1024;
  const fd = openSync(path, 'w');
  const block = Buffer.allocUnsafe(blockBytes);
  const md5 = createHash('md5');
  for (let offset = 0; offset < bytes; offset += blockBytes) {
    const n = Math.min(blockBytes, bytes - offset);
    randomFillSync(block, 0, n);
    md5.update(block.subarray(0, n));
    writeSync(fd, block, 0, n, offset);
  }
  closeSync(fd);
  return md5.digest('hex');
}

/** Runs `fn` on the lab in $PUMICE_CEPH_LAB, or on a lab brought up in a temp dir and purged afterwards. */
export async function withLab<T>(fn: (lab: CephLab) => Promise<T>): Promise<T> {
  const shared = process.env['PUMICE_CEPH_LAB'];
  if (shared) return fn(readLab(shared));
  const root = mkdtempSync(join(tmpdir(), 'pumice-bench-lab-'));
  const dir = join(root, 'lab');
  try {
    return await fn(await labUp(dir));
  } finally {
    await labPurge(dir).catch(() => undefined);
    rmSync(root, { recursive: true, force: true });
  }
}

/** A public volume type named like the backend it routes to (volume_backend_name). */
export async function createBackendType(s: Session, backend: string): Promise<void> {
  const t = await s.call('POST', `${s.volumeUrl}/types`, { volume_type: { name: backend, extra_specs: { volume_backend_name: backend } } });
  if (t.status !== 200) throw new Error(`type create failed: ${t.status} ${t.text}`);
}

// ---- figures ----
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))]!;
}

export function ms(n: number): string {
  return `${n.toFixed(2)} ms`;
}

export function latencySummary(values: number[]): string {
  return `n=${values.length} p50=${ms(percentile(values, 50))} p99=${ms(percentile(values, 99))} max=${ms(Math.max(...values))}`;
}

export const now = (): number => performance.now();
export const sleep = (t: number): Promise<void> => new Promise((r) => setTimeout(r, t));

/** VmRSS of a process in MiB, from /proc/PID/status. */
export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** Samples VmRSS every `intervalMs`; stop() returns the peak and the sample count. */
export function sampleRss(pid: number, intervalMs = 100): { stop(): { peakMiB: number; samples: number; lastMiB: number } } {
  let peak = 0;
  let samples = 0;
  let last = NaN;
  const take = () => {
    try {
      last = rssMiB(pid);
      peak = Math.max(peak, last);
      samples++;
    } catch {
      // process gone
    }
  };
  take();
  const timer = setInterval(take, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      take();
      return { peakMiB: peak, samples, lastMiB: last };
    },
  };
}

/** CPU seconds (user+system) a process used so far, from /proc/PID/stat. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks / 100;
}

export function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? Number(process.argv[i + 1]) : fallback;
}
export function argString(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
export function flag(name: string): boolean {
  return process.argv.includes(`--${name}`);
}

/** Busy CPU seconds of the whole machine (all cores) so far, from /proc/stat. */
export function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
  return (user! + nice! + system! + irq! + softirq! + steal!) / 100;
}

/**
 * Measures the CPU of the server, of this benchmark process and of everything
 * else on the machine over a phase, so a figure taken while other work ran
 * (tests of other sessions, say) can be recognised as such.
 */
export function cpuMeter(serverPid: number): { stop(): { elapsedS: number; serverS: number; benchS: number; otherS: number; text: string } } {
  const t0 = now();
  const server0 = cpuSeconds(serverPid);
  const bench0 = process.cpuUsage();
  const machine0 = machineBusySeconds();
  return {
    stop() {
      const elapsedS = (now() - t0) / 1000;
      const serverS = cpuSeconds(serverPid) - server0;
      const b = process.cpuUsage(bench0);
      const benchS = (b.user + b.system) / 1e6;
      const otherS = Math.max(0, machineBusySeconds() - machine0 - serverS - benchS);
      const pct = (x: number) => `${((x / elapsedS) * 100).toFixed(0)}%`;
      return {
        elapsedS, serverS, benchS, otherS,
        text: `server ${pct(serverS)}, bench client ${pct(benchS)}, other processes ${pct(otherS)} of one core (machine has 2)`,
      };
    },
  };
}

// ---- CPU per thread ----
/** CPU seconds of each thread of `pid` (utime + stime from /proc/PID/task/TID/stat, 100 ticks/s). */
export function threadCpuSeconds(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(tid), (Number(fields[11]) + Number(fields[12])) / 100);
    } catch { /* the thread ended */ }
  }
  return out;
}

export function threadCpuDelta(before: Map<number, number>, after: Map<number, number>): Map<number, number> {
  const delta = new Map<number, number>();
  for (const [tid, s] of after) delta.set(tid, s - (before.get(tid) ?? 0));
  return delta;
}

/**
 * Where the server's CPU went per GiB uploaded: the main thread (HTTP, copies into batches),
 * the two busiest other threads (the md5 and sha512 workers: each hashes every byte) and the
 * rest (`restIs`: libuv's pool doing the file writes, GC helpers; or librbd's threads). Threads
 * are told apart by CPU only: Node 20 gives worker threads no name of their own.
 */
export function threadCpuText(delta: Map<number, number>, pid: number, bytes: number, restIs = "file writes on libuv's pool, GC helpers"): string {
  const gib = bytes / (1 << 30);
  const main = delta.get(pid) ?? 0;
  const others = [...delta].filter(([tid]) => tid !== pid).map(([, s]) => s).sort((a, b) => b - a);
  const [first = 0, second = 0] = others;
  const rest = others.slice(2).reduce((a, b) => a + b, 0);
  const f = (x: number) => (x / gib).toFixed(2);
  // Each thread's rank in creation order (TIDs grow): V8's platform threads are made at start-up, libuv's pool at its first use.
  const order = [...delta.keys()].sort((a, b) => a - b);
  const restEach = [...delta].filter(([tid]) => tid !== pid).sort((a, b) => b[1] - a[1]).slice(2)
    .filter(([, s]) => s / gib >= 0.05).map(([tid, s]) => `${f(s)} (thread #${order.indexOf(tid)})`).join(' + ');
  return `main thread ${f(main)} s, busiest two other threads (hash workers) ${f(first)} + ${f(second)} s, the rest (${restIs}) ${f(rest)} s (${restEach || 'none over 0.05 s'})`;
}

// ---- image uploads ----
/** PUT of a file as an image's data (raw body with its Content-Length), read in `chunkBytes` pieces. */
export function putImageFile(s: Session, id: string, path: string, bytes: number, chunkBytes: number): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${s.url}/image/v2/images/${id}/file`, {
      method: 'PUT',
      headers: { 'X-Auth-Token': s.token, 'Content-Type': 'application/octet-stream', 'Content-Length': String(bytes) },
    }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    createReadStream(path, { highWaterMark: chunkBytes }).on('error', reject).pipe(req);
  });
}

/**
 * One upload of `path` into image `id`, measured: seconds from PUT to its answer, the server's CPU
 * (whole, and per thread) and its peak RSS. Throws unless the PUT answered 204 and the image is
 * then active with `bytes` bytes and md5 `md5`.
 */
export async function measuredImageUpload(s: Session, serverPid: number, id: string, path: string, bytes: number, md5: string, chunkBytes: number) {
  const rss = sampleRss(serverPid, 100);
  const meter = cpuMeter(serverPid);
  const threads0 = threadCpuSeconds(serverPid);
  const t0 = now();
  const up = await putImageFile(s, id, path, bytes, chunkBytes);
  const seconds = (now() - t0) / 1000;
  const cpu = meter.stop();
  const threads = threadCpuDelta(threads0, threadCpuSeconds(serverPid));
  const mem = rss.stop();
  if (up.status !== 204) throw new Error(`upload: ${up.status} ${up.text}`);
  const row = (await s.call('GET', `/image/v2/images/${id}`)).json<{ status: string; size: number; checksum: string }>();
  if (row.status !== 'active' || row.size !== bytes || row.checksum !== md5) throw new Error(`image after upload: ${JSON.stringify(row)}, expected md5 ${md5}`);
  return { seconds, cpu, threads, mem };
}
