/**
 * A throwaway single-host Ceph cluster (one monitor `mon.a`, one manager
 * `mgr.x`, N OSDs) living entirely in one directory, for tests and demos.
 *
 * Layout of DIR:
 *   ceph.conf, lab.json (our state), monmap, ceph.mon.keyring (mkfs input),
 *   ceph.client.{admin,cinder,glance,cinder-backup}.keyring,
 *   mon/ceph-a, mgr/ceph-x, osd/ceph-N (BlueStore: sparse `block` file),
 *   run/ (pid files, admin sockets), log/, crash/.
 *
 * Daemons are plain background processes (no systemd, no cephadm); we only
 * ever signal pids read from DIR/run whose command line names DIR/ceph.conf.
 * Every `ceph` call uses `--conf DIR/ceph.conf`, `--connect-timeout` and a
 * child-process timeout. Only one lab can run at a time: the monitor binds
 * 127.0.0.1:3300 and :6789.
 */
import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { accessSync, closeSync, constants, existsSync, mkdirSync, openSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';

export interface CephLab {
  dir: string;
  confPath: string;
  fsid: string;
  monHosts: string[];
  monPort: number;
  adminKeyringPath: string;
  keyringPath(user: string): string;
}

export type DaemonName = 'mon.a' | 'mgr.x' | `osd.${number}`;

export interface LabUpOptions {
  osdCount?: number;
  blockSizeGiB?: number;
  log?: (m: string) => void;
  /** How long to wait for HEALTH_OK + all PGs active+clean (default 180 s). */
  readyTimeoutMs?: number;
  /** Default: bluestore where the directory supports O_DIRECT, else memstore (tmpfs on older kernels). */
  objectstore?: 'bluestore' | 'memstore';
}

export class CephLabError extends Error {
  override name = 'CephLabError';
}

export const MON_HOST = '127.0.0.1';
export const MON_PORT = 6789;
export const MON_V2_PORT = 3300;
/** Pools of SCENARIO.md §3, with PG counts scaled to a 3-OSD lab. */
export const LAB_POOLS = ['images', 'volumes', 'vms', 'backups'] as const;
export const LAB_PG_NUM = 32;
/** Users and capabilities exactly as in SCENARIO.md §3. */
export const LAB_USERS: Readonly<Record<'cinder' | 'glance' | 'cinder-backup', { mon: string; osd: string }>> = {
  cinder: {
    mon: 'allow r',
    osd: 'allow class-read object_prefix rbd_children, allow rwx pool=volumes, allow rwx pool=vms, allow rx pool=images',
  },
  glance: { mon: 'allow r', osd: 'allow class-read object_prefix rbd_children, allow rwx pool=images' },
  'cinder-backup': { mon: 'allow r', osd: 'allow class-read object_prefix rbd_children, allow rwx pool=backups' },
};

const STATE_FILE = 'lab.json';
const MGR_DISABLED_MODULES = [
  'alerts', 'diskprediction_local', 'influx', 'insights', 'k8sevents', 'localpool', 'mirroring', 'nfs', 'osd_support',
  'prometheus', 'restful', 'selftest', 'snap_schedule', 'stats', 'telegraf', 'test_orchestrator', 'zabbix',
];
const CONNECT_TIMEOUT_S = 10;
const CEPH_CLI_TIMEOUT_MS = 30_000;
const GiB = 1024 ** 3;

interface LabState {
  version: 1;
  fsid: string;
  osdCount: number;
  blockSizeGiB: number;
  objectstore: 'bluestore' | 'memstore';
  pgNum: number;
  complete: boolean;
  createdAt: string;
}

/** Debian package providing each binary we run, for "not found" messages. */
const PACKAGE_OF: Record<string, string> = {
  'ceph-mon': 'ceph-mon',
  'ceph-mgr': 'ceph-mgr',
  'ceph-osd': 'ceph-osd',
  ceph: 'ceph-common',
  'ceph-authtool': 'ceph-common',
  rbd: 'ceph-common',
  monmaptool: 'ceph-base',
};

// ---------------------------------------------------------------- processes

function inPath(cmd: string): boolean {
  for (const d of (process.env['PATH'] ?? '').split(':')) {
    if (!d) continue;
    try {
      accessSync(path.join(d, cmd), constants.X_OK);
      return true;
    } catch {
      /* next */
    }
  }
  return false;
}

/** Fails with one message naming every missing program and the packages to install. */
function assertTools(): void {
  const missing = Object.keys(PACKAGE_OF).filter((cmd) => !inPath(cmd));
  if (missing.length === 0) return;
  const packages = [...new Set(missing.map((cmd) => PACKAGE_OF[cmd]!))];
  throw new CephLabError(`${missing.join(', ')} not found in PATH: apt-get install ${packages.join(' ')}`);
}

function tail(text: string, lines = 15): string {
  const all = text.trim().split('\n');
  return all.slice(-lines).join('\n');
}

function notFound(cmd: string): CephLabError {
  const pkg = PACKAGE_OF[cmd];
  return new CephLabError(`${cmd} not found${pkg ? `: apt-get install ${pkg}` : ' in PATH'}`);
}

interface RunOptions {
  input?: string;
  timeoutMs?: number;
  /** Appended to failure messages: what to do about it. */
  hint?: string;
}

/** Runs a program with explicit args; rejects with a message naming the command and its output. */
function run(cmd: string, args: string[], options: RunOptions = {}): Promise<string> {
  const timeoutMs = options.timeoutMs ?? CEPH_CLI_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (error, stdout, stderr) => {
        if (!error) return resolve(stdout);
        const e = error as NodeJS.ErrnoException & { killed?: boolean; signal?: string | null; code?: unknown };
        if (e.code === 'ENOENT') return reject(notFound(cmd));
        const shown = `${cmd} ${args.join(' ')}`;
        const output = tail(`${stderr}\n${stdout}`);
        const hint = options.hint ? `\n${options.hint}` : '';
        if (e.killed) return reject(new CephLabError(`${shown} timed out after ${Math.round(timeoutMs / 1000)} s${output ? `:\n${output}` : ''}${hint}`));
        reject(new CephLabError(`${shown} failed (exit ${String(e.code ?? e.signal)})${output ? `:\n${output}` : ''}${hint}`));
      },
    );
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(options.input ?? '');
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** True when pid is a live (non-zombie) process. The init here may not reap, so zombies count as dead. */
function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((s) => s.length > 0);
  } catch {
    return [];
  }
}

/** The --conf/-c argument of a command line, if any. */
function confArg(args: string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if ((a === '--conf' || a === '-c') && i + 1 < args.length) return args[i + 1];
    if (a.startsWith('--conf=')) return a.slice('--conf='.length);
  }
  return undefined;
}

// ---------------------------------------------------------------- layout

function confPathOf(dir: string): string {
  return path.join(dir, 'ceph.conf');
}

function labOf(dir: string, fsid: string): CephLab {
  return {
    dir,
    confPath: confPathOf(dir),
    fsid,
    monHosts: [MON_HOST],
    monPort: MON_PORT,
    adminKeyringPath: path.join(dir, 'ceph.client.admin.keyring'),
    keyringPath: (user: string) => path.join(dir, `ceph.client.${user}.keyring`),
  };
}

function readState(dir: string): LabState | null {
  try {
    return JSON.parse(readFileSync(path.join(dir, STATE_FILE), 'utf8')) as LabState;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new CephLabError(`${path.join(dir, STATE_FILE)} is unreadable: ${(error as Error).message}. Purge the lab: pumice ceph-lab purge ${dir}`);
  }
}

function writeState(dir: string, state: LabState): void {
  writeFileSync(path.join(dir, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
}

/** The lab in an existing directory (created by labUp). */
export function readLab(dir: string): CephLab {
  const abs = path.resolve(dir);
  const state = readState(abs);
  if (!state) throw new CephLabError(`${abs} is not a Ceph lab (no ${STATE_FILE}); create one with: pumice ceph-lab up ${abs}`);
  return labOf(abs, state.fsid);
}

function daemonsOf(state: Pick<LabState, 'osdCount'>): DaemonName[] {
  const names: DaemonName[] = ['mon.a', 'mgr.x'];
  for (let i = 0; i < state.osdCount; i++) names.push(`osd.${i}`);
  return names;
}

interface DaemonInfo {
  type: 'mon' | 'mgr' | 'osd';
  id: string;
  bin: string;
  pidFile: string;
}

function daemonInfo(dir: string, name: string): DaemonInfo {
  const m = /^(mon|mgr|osd)\.([A-Za-z0-9]+)$/.exec(name);
  if (!m || (m[1] === 'osd' && !/^\d+$/.test(m[2]!))) throw new CephLabError(`unknown daemon '${name}': expected mon.a, mgr.x or osd.N`);
  const type = m[1] as DaemonInfo['type'];
  return { type, id: m[2]!, bin: `ceph-${type}`, pidFile: path.join(dir, 'run', `ceph-${name}.pid`) };
}

/** The pid of a running daemon of this lab, or null. Only trusts pids whose command line is ours. */
function labPid(dir: string, name: string): number | null {
  const info = daemonInfo(dir, name);
  let pid: number;
  try {
    pid = Number.parseInt(readFileSync(info.pidFile, 'utf8').trim(), 10);
  } catch {
    return null;
  }
  if (!Number.isInteger(pid) || pid <= 1 || !pidAlive(pid)) return null;
  const args = cmdline(pid);
  if (args.length === 0 || path.basename(args[0]!) !== info.bin) return null;
  if (confArg(args) !== confPathOf(dir)) return null;
  return pid;
}

/** Pid files present in DIR/run, as daemon names (covers labs whose state file is gone). */
function pidFileDaemons(dir: string): DaemonName[] {
  try {
    return readdirSync(path.join(dir, 'run'))
      .map((f) => /^ceph-((?:mon|mgr|osd)\.[A-Za-z0-9]+)\.pid$/.exec(f)?.[1])
      .filter((n): n is DaemonName => n !== undefined);
  } catch {
    return [];
  }
}

// ---------------------------------------------------------------- ceph CLI

function cephBaseArgs(dir: string): string[] {
  return ['--conf', confPathOf(dir), '--connect-timeout', String(CONNECT_TIMEOUT_S)];
}

function ceph(dir: string, args: string[], options: RunOptions = {}): Promise<string> {
  return run('ceph', [...cephBaseArgs(dir), ...args], {
    hint: `(is the lab running? pumice ceph-lab status ${dir}; logs in ${path.join(dir, 'log')})`,
    ...options,
  });
}

function rbd(dir: string, args: string[], options: RunOptions = {}): Promise<string> {
  return run('rbd', ['--conf', confPathOf(dir), `--client_mount_timeout=${CONNECT_TIMEOUT_S}`, ...args], options);
}

// ---------------------------------------------------------------- ports

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: MON_HOST, port });
    const done = (open: boolean) => {
      socket.destroy();
      resolve(open);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** Running ceph-mon processes and the conf each was started with. */
function cephMonProcesses(): { pid: number; conf: string | undefined }[] {
  const found: { pid: number; conf: string | undefined }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const args = cmdline(pid);
    if (args.length > 0 && path.basename(args[0]!) === 'ceph-mon' && pidAlive(pid)) found.push({ pid, conf: confArg(args) });
  }
  return found;
}

/** Fails with a clear message when another monitor (another lab) holds 3300/6789. */
async function assertMonPortsFree(dir: string): Promise<void> {
  const busy: number[] = [];
  for (const port of [MON_V2_PORT, MON_PORT]) if (await portOpen(port)) busy.push(port);
  if (busy.length === 0) return;
  const where = busy.map((p) => `${MON_HOST}:${p}`).join(' and ');
  const others = cephMonProcesses().filter((p) => p.conf !== confPathOf(dir));
  if (others.length > 0) {
    const o = others[0]!;
    const otherDir = o.conf ? path.dirname(o.conf) : undefined;
    throw new CephLabError(
      `${where} in use by another Ceph monitor (pid ${o.pid}${o.conf ? `, --conf ${o.conf}` : ''}): only one lab can run at a time. ` +
        (otherDir ? `Stop it with: pumice ceph-lab down ${otherDir}` : 'Stop that cluster first.'),
    );
  }
  throw new CephLabError(`${where} in use by another process: the lab's monitor needs both ports. Find it with: ss -ltnp | grep -E ':(3300|6789)'`);
}

// ---------------------------------------------------------------- daemons

async function logTail(dir: string, name: string): Promise<string> {
  const parts: string[] = [];
  for (const file of [path.join(dir, 'log', `${name}.out`), path.join(dir, 'log', `ceph-${name}.log`)]) {
    try {
      const text = tail(await readFile(file, 'utf8'), 8);
      if (text) parts.push(`--- ${file}:\n${text}`);
    } catch {
      /* absent */
    }
  }
  return parts.join('\n');
}

/** Starts one daemon (it daemonises itself) and waits for its pid file. */
async function launch(dir: string, name: DaemonName): Promise<number> {
  const info = daemonInfo(dir, name);
  await mkdir(path.join(dir, 'log'), { recursive: true });
  const out = await open(path.join(dir, 'log', `${name}.out`), 'a');
  let code: number | null;
  try {
    code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn(info.bin, ['--conf', confPathOf(dir), '-i', info.id], { stdio: ['ignore', out.fd, out.fd], detached: true });
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.once('error', (error) => {
        clearTimeout(timer);
        reject((error as NodeJS.ErrnoException).code === 'ENOENT' ? notFound(info.bin) : error);
      });
      child.once('exit', (c, signal) => {
        clearTimeout(timer);
        resolve(signal ? -1 : c);
      });
    });
  } finally {
    await out.close();
  }
  if (code !== 0) {
    throw new CephLabError(`${info.bin} -i ${info.id} failed to start (exit ${code}).\n${await logTail(dir, name)}`);
  }
  const deadline = Date.now() + 15_000;
  for (;;) {
    const pid = labPid(dir, name);
    if (pid !== null) return pid;
    if (Date.now() > deadline) throw new CephLabError(`${name} started but did not stay up (no live pid in ${info.pidFile}).\n${await logTail(dir, name)}`);
    await sleep(50);
  }
}

async function stopPid(pid: number, graceMs: number): Promise<void> {
  try {
    process.kill(pid, graceMs > 0 ? 'SIGTERM' : 'SIGKILL');
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (pidAlive(pid)) {
    if (Date.now() > deadline) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      const killDeadline = Date.now() + 5000;
      while (pidAlive(pid) && Date.now() < killDeadline) await sleep(50);
      return;
    }
    await sleep(50);
  }
}

/**
 * Stops one daemon of the lab and waits for it to exit: SIGTERM (SIGKILL after
 * 20 s), or with `{ kill: true }` SIGKILL at once, to simulate a crash.
 */
export async function stopDaemon(dir: string, name: DaemonName, options: { kill?: boolean } = {}): Promise<void> {
  const abs = path.resolve(dir);
  const info = daemonInfo(abs, name);
  const pid = labPid(abs, name);
  if (pid !== null) await stopPid(pid, options.kill ? 0 : 20_000);
  try {
    unlinkSync(info.pidFile);
  } catch {
    /* removed by the daemon on clean exit */
  }
}

/** Starts one daemon of the lab if it is not running (does not wait for health). */
export async function startDaemon(dir: string, name: DaemonName): Promise<void> {
  const abs = path.resolve(dir);
  const state = readState(abs);
  if (!state) throw new CephLabError(`${abs} is not a Ceph lab (no ${STATE_FILE})`);
  if (!daemonsOf(state).includes(name)) throw new CephLabError(`${name} is not a daemon of the lab in ${abs} (it has ${daemonsOf(state).join(', ')})`);
  if (labPid(abs, name) !== null) return;
  if (name === 'mon.a') await assertMonPortsFree(abs);
  await launch(abs, name);
}

// ---------------------------------------------------------------- readiness

interface Readiness {
  ready: boolean;
  health: string;
  pgs: string;
}

function pgSummary(json: unknown): { numPgs: number; byState: { name: string; num: number }[] } | null {
  if (!json || typeof json !== 'object') return null;
  const o = json as Record<string, unknown>;
  const inner = (o['pg_summary'] as Record<string, unknown> | undefined) ?? o;
  const byState = inner['num_pg_by_state'];
  const numPgs = inner['num_pgs'];
  if (!Array.isArray(byState) || typeof numPgs !== 'number') return null;
  return { numPgs, byState: byState as { name: string; num: number }[] };
}

function isActiveClean(state: string): boolean {
  const flags = new Set(state.split('+'));
  if (!flags.has('active') || !flags.has('clean')) return false;
  const harmless = new Set(['active', 'clean', 'snaptrim', 'snaptrim_wait', 'scrubbing', 'deep', 'scrubbing+deep', 'laggy', 'wait']);
  return [...flags].every((f) => harmless.has(f));
}

/** Ready = `ceph health` is HEALTH_OK and `ceph pg stat` shows at least `expectedPgs` PGs, all active+clean. */
async function readiness(dir: string, expectedPgs: number, timeoutMs = 15_000): Promise<Readiness> {
  const [health, pgs] = await Promise.all([
    ceph(dir, ['health', '--format', 'json'], { timeoutMs }).then(
      (out) => {
        const j = JSON.parse(out) as { status?: string; checks?: Record<string, { summary?: { message?: string } }> };
        const checks = Object.entries(j.checks ?? {}).map(([k, v]) => `${k}: ${v.summary?.message ?? ''}`);
        return { ok: j.status === 'HEALTH_OK', text: [j.status ?? 'unknown', ...checks].join('; ') };
      },
      (error: Error) => ({ ok: false, text: `ceph health failed: ${error.message.split('\n')[0]}` }),
    ),
    ceph(dir, ['pg', 'stat', '--format', 'json'], { timeoutMs }).then(
      (out) => {
        const s = pgSummary(JSON.parse(out));
        if (!s) return { ok: false, text: `unparsable pg stat: ${out.slice(0, 200)}` };
        const text = `${s.numPgs} pgs: ${s.byState.map((b) => `${b.num} ${b.name}`).join(', ') || 'none'}`;
        // Background work on healthy PGs (snaptrim after snapshot removal, scrubbing) still counts as ready.
        const ok = s.numPgs >= expectedPgs && s.byState.every((b) => b.num === 0 || isActiveClean(b.name));
        return { ok, text };
      },
      (error: Error) => ({ ok: false, text: `ceph pg stat failed: ${error.message.split('\n')[0]}` }),
    ),
  ]);
  return { ready: health.ok && pgs.ok, health: health.text, pgs: pgs.text };
}

async function waitReady(dir: string, state: LabState, timeoutMs: number, log: (m: string) => void): Promise<void> {
  const expected = LAB_POOLS.length * state.pgNum;
  const deadline = Date.now() + timeoutMs;
  let last: Readiness | undefined;
  let lastLogged = '';
  for (;;) {
    for (const name of daemonsOf(state)) {
      if (labPid(dir, name) === null) throw new CephLabError(`${name} is not running (it died or was never started).\n${await logTail(dir, name)}`);
    }
    last = await readiness(dir, expected, 10_000);
    if (last.ready) return;
    const line = `waiting: ${last.health} | ${last.pgs}`;
    if (line !== lastLogged) log(line);
    lastLogged = line;
    if (Date.now() > deadline) {
      throw new CephLabError(
        `the lab in ${dir} did not become ready (HEALTH_OK and all PGs active+clean) in ${Math.round(timeoutMs / 1000)} s: ` +
          `${last.health} | ${last.pgs}. Logs: ${path.join(dir, 'log')}; check \`ceph --conf ${confPathOf(dir)} health detail\`, or purge and retry.`,
      );
    }
    await sleep(400);
  }
}

// ---------------------------------------------------------------- creation

/** Whether files in dir can be opened with O_DIRECT (BlueStore needs it; tmpfs lacks it). */
function supportsODirect(dir: string): boolean {
  const probe = path.join(dir, `.odirect-probe-${process.pid}`);
  try {
    const fd = openSync(probe, constants.O_CREAT | constants.O_RDWR | constants.O_DIRECT, 0o600);
    closeSync(fd);
    return true;
  } catch {
    return false;
  } finally {
    try {
      unlinkSync(probe);
    } catch {
      /* never created */
    }
  }
}

function cephConf(dir: string, state: LabState): string {
  const d = (...p: string[]) => path.join(dir, ...p);
  const memstore = state.objectstore === 'memstore';
  return `# Throwaway single-host Ceph lab written by Pumice (src/ceph/lab.ts). Purge with: pumice ceph-lab purge ${dir}
[global]
fsid = ${state.fsid}
mon initial members = a
mon host = [v2:${MON_HOST}:${MON_V2_PORT},v1:${MON_HOST}:${MON_PORT}]
public network = 127.0.0.0/8
cluster network = 127.0.0.0/8
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
osd pool default size = 2
osd pool default min size = 1
osd pool default pg num = ${state.pgNum}
osd pool default pgp num = ${state.pgNum}
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon data avail warn = 5
mon allow pool delete = true
# lab speed-ups: monitor commits every 0.1 s instead of 1 s; PG stats reach the
# manager every second (readiness is judged on them)
paxos propose interval = 0.1
mgr stats period = 1
# only the modules a lab needs at mon mkfs (the defaults add restful and nfs)
mgr initial modules = iostat
osd memory target = 939524096
osd client watch timeout = 5
run dir = ${d('run')}
crash dir = ${d('crash')}
log file = ${d('log', '$cluster-$name.log')}
mon cluster log file = default=${d('log', '$cluster.$channel.log')} cluster=${d('log', '$cluster.log')}

[mon]
mon data = ${d('mon', '$cluster-$id')}
pid file = ${d('run', '$cluster-$name.pid')}

[mgr]
mgr data = ${d('mgr', '$cluster-$id')}
pid file = ${d('run', '$cluster-$name.pid')}
# the manager imports every module it may run, one by one (~0.2 s each): skip
# the ones a lab never uses (the always-on ones and iostat stay)
mgr disabled modules = ${MGR_DISABLED_MODULES.join(' ')}

[osd]
osd data = ${d('osd', '$cluster-$id')}
pid file = ${d('run', '$cluster-$name.pid')}
osd objectstore = ${state.objectstore}
${
  memstore
    ? `# the lab directory has no O_DIRECT (tmpfs): data lives in memory, saved on clean shutdown
memstore device bytes = ${state.blockSizeGiB * GiB}
osd fast shutdown = false`
    : `bluestore block size = ${state.blockSizeGiB * GiB}
bluestore block create = true
bluestore fsck on mkfs = false
# each open/close of the block file waits one aio poll period (default 250 ms), ~8 times per start
bdev aio poll ms = 50`
}

[client]
keyring = ${d('$cluster.$name.keyring')}
`;
}

async function createKeyring(file: string, entity: string, caps: Record<string, string>, key?: string): Promise<void> {
  const args = ['--create-keyring', file, '--name', entity, ...(key ? ['--add-key', key] : ['--gen-key'])];
  for (const [service, cap] of Object.entries(caps)) args.push('--cap', service, cap);
  await run('ceph-authtool', args);
}

async function createOsd(dir: string, state: LabState, i: number, log: (m: string) => void): Promise<void> {
  const t0 = Date.now();
  const uuid = randomUUID();
  const secret = (await run('ceph-authtool', ['--gen-print-key'])).trim();
  await ceph(dir, ['osd', 'new', uuid, String(i), '-i', '-'], { input: JSON.stringify({ cephx_secret: secret }) });
  const data = path.join(dir, 'osd', `ceph-${i}`);
  await mkdir(data, { recursive: true });
  await createKeyring(path.join(data, 'keyring'), `osd.${i}`, {}, secret);
  await run('ceph-osd', ['--conf', confPathOf(dir), '-i', String(i), '--mkfs', '--osd-uuid', uuid, '--osd-objectstore', state.objectstore], {
    timeoutMs: 120_000,
    hint: `(the lines "_read_bdev_label failed" and "_read_fsid unparsable uuid" are normal; see ${path.join(dir, 'log', `ceph-osd.${i}.log`)})`,
  });
  await launch(dir, `osd.${i}`);
  log(`osd.${i} up (${state.objectstore}) after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

async function createPool(dir: string, state: LabState, pool: string): Promise<void> {
  await ceph(dir, ['osd', 'pool', 'create', pool, String(state.pgNum), String(state.pgNum), 'replicated']);
}

async function initPool(dir: string, pool: string): Promise<void> {
  // Waits until the pool's PGs are active. Started before the OSDs were up, a
  // client only notices them at its next objecter tick (5 s): start it after.
  await rbd(dir, ['pool', 'init', pool], { timeoutMs: 120_000 });
}

async function createLab(dir: string, state: LabState, log: (m: string) => void, readyTimeoutMs: number): Promise<void> {
  const t0 = Date.now();
  const since = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
  for (const sub of ['run', 'log', 'crash', 'mon', 'mgr/ceph-x', 'osd']) await mkdir(path.join(dir, sub), { recursive: true });
  await writeFile(confPathOf(dir), cephConf(dir, state));
  writeState(dir, state);

  const monKeyring = path.join(dir, 'ceph.mon.keyring');
  const parts = {
    mon: path.join(dir, 'mon', 'mon.keyring.part'),
    admin: path.join(dir, 'ceph.client.admin.keyring'),
    mgr: path.join(dir, 'mgr', 'ceph-x', 'keyring'),
  };
  await Promise.all([
    createKeyring(parts.mon, 'mon.', { mon: 'allow *' }),
    createKeyring(parts.admin, 'client.admin', { mon: 'allow *', osd: 'allow *', mds: 'allow *', mgr: 'allow *' }),
    createKeyring(parts.mgr, 'mgr.x', { mon: 'allow profile mgr', osd: 'allow *', mds: 'allow *' }),
    ...Object.entries(LAB_USERS).map(([user, caps]) => createKeyring(path.join(dir, `ceph.client.${user}.keyring`), `client.${user}`, caps)),
    run('monmaptool', [
      '--create', '--clobber', '--fsid', state.fsid,
      '--addv', 'a', `[v2:${MON_HOST}:${MON_V2_PORT},v1:${MON_HOST}:${MON_PORT}]`,
      path.join(dir, 'monmap'),
    ]),
  ]);
  // The monitor imports every key of its mkfs keyring, with caps: mgr.x and the
  // scenario's users exist from the first moment, without further ceph calls.
  const keyFiles = [parts.mon, parts.admin, parts.mgr, ...Object.keys(LAB_USERS).map((u) => path.join(dir, `ceph.client.${u}.keyring`))];
  await writeFile(monKeyring, (await Promise.all(keyFiles.map((f) => readFile(f, 'utf8')))).join('\n'), { mode: 0o600 });
  await rm(parts.mon);
  await run('ceph-mon', ['--conf', confPathOf(dir), '--mkfs', '-i', 'a', '--monmap', path.join(dir, 'monmap'), '--keyring', monKeyring], {
    timeoutMs: 60_000,
  });
  await launch(dir, 'mon.a');
  log(`mon.a up after ${since()}`);

  // Everything else in parallel: the manager, the OSDs, the pools; then
  // `rbd pool init` of every pool once the OSDs are up.
  await Promise.all([
    launch(dir, 'mgr.x').then(() => log(`mgr.x started after ${since()}`)),
    ...Array.from({ length: state.osdCount }, (_, i) => createOsd(dir, state, i, log)),
    ...LAB_POOLS.map((pool) => createPool(dir, state, pool)),
  ]);
  await Promise.all(LAB_POOLS.map((pool) => initPool(dir, pool).then(() => log(`pool ${pool} initialised after ${since()}`))));
  await waitReady(dir, state, readyTimeoutMs, log);
  state.complete = true;
  writeState(dir, state);
  log(`lab ready after ${since()}`);
}

/** Entries labUp creates; used to clear a half-created lab (and nothing else). */
const LAB_ENTRIES = /^(ceph\.conf|lab\.json|monmap|ceph\.mon\.keyring|ceph\.client\..+\.keyring|mon|mgr|osd|run|log|crash|\.odirect-probe-\d+)$/;

// ---------------------------------------------------------------- public API

/**
 * Creates the lab in dir, or restarts its stopped daemons; returns once it is
 * ready (HEALTH_OK, every PG active+clean). Returns at once if it already is.
 */
export async function labUp(dir: string, options: LabUpOptions = {}): Promise<CephLab> {
  const abs = path.resolve(dir);
  const log = options.log ?? (() => undefined);
  const readyTimeoutMs = options.readyTimeoutMs ?? 180_000;
  if (/\s/.test(abs)) throw new CephLabError(`lab directory '${abs}' contains whitespace, which ceph.conf cannot express; choose another path`);
  assertTools();
  let state = readState(abs);

  if (state && !state.complete) {
    log(`${abs} holds a half-created lab: clearing it`);
    await labDown(abs);
    for (const entry of readdirSync(abs)) if (LAB_ENTRIES.test(entry)) await rm(path.join(abs, entry), { recursive: true, force: true });
    state = null;
  }

  if (state) {
    const lab = labOf(abs, state.fsid);
    const names = daemonsOf(state);
    if (options.osdCount !== undefined && options.osdCount !== state.osdCount) {
      log(`note: the lab has ${state.osdCount} OSDs; osdCount ${options.osdCount} applies only to a new lab (purge first)`);
    }
    if (names.every((n) => labPid(abs, n) !== null)) {
      const r = await readiness(abs, LAB_POOLS.length * state.pgNum);
      if (r.ready) {
        log('lab already running and healthy');
        return lab;
      }
    }
    const t0 = Date.now();
    if (labPid(abs, 'mon.a') === null) {
      await assertMonPortsFree(abs);
      await launch(abs, 'mon.a');
    }
    await Promise.all(names.filter((n) => n !== 'mon.a' && labPid(abs, n) === null).map((n) => launch(abs, n)));
    await waitReady(abs, state, readyTimeoutMs, log);
    log(`lab restarted and ready after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    return lab;
  }

  const foreign = existsSync(abs) ? readdirSync(abs).filter((e) => !/^\.odirect-probe-\d+$/.test(e)) : [];
  if (foreign.length > 0) {
    throw new CephLabError(`${abs} is not empty and is not a Ceph lab (no ${STATE_FILE}): pass a new or empty directory`);
  }
  const osdCount = options.osdCount ?? 3;
  const blockSizeGiB = options.blockSizeGiB ?? 10;
  if (!Number.isInteger(osdCount) || osdCount < 2 || osdCount > 16) throw new CephLabError(`osdCount ${osdCount}: use 2 to 16 (pools keep 2 replicas)`);
  if (!(blockSizeGiB >= 1 && blockSizeGiB <= 1024)) throw new CephLabError(`blockSizeGiB ${blockSizeGiB}: use 1 to 1024`);
  await assertMonPortsFree(abs);
  mkdirSync(abs, { recursive: true });
  let objectstore = options.objectstore ?? 'bluestore';
  if (objectstore === 'bluestore' && !supportsODirect(abs)) {
    if (options.objectstore) throw new CephLabError(`${abs} does not support O_DIRECT, which BlueStore needs: use a directory on a disk filesystem, or objectstore memstore`);
    objectstore = 'memstore';
    log(`${abs} has no O_DIRECT (tmpfs?): using memstore OSDs instead of BlueStore`);
  }
  state = {
    version: 1,
    fsid: randomUUID(),
    osdCount,
    blockSizeGiB,
    objectstore,
    pgNum: LAB_PG_NUM,
    complete: false,
    createdAt: new Date().toISOString(),
  };
  try {
    await createLab(abs, state, log, readyTimeoutMs);
  } catch (error) {
    // Free the ports; keep the directory (logs) for diagnosis. The next labUp clears it.
    await labDown(abs).catch(() => undefined);
    const message = (error as Error).message;
    throw new CephLabError(`${message}\nCreating the lab in ${abs} failed; its daemons are stopped, logs are in ${path.join(abs, 'log')}. Retry (labUp clears a half-created lab) or purge: pumice ceph-lab purge ${abs}`);
  }
  return labOf(abs, state.fsid);
}

/** Stops the daemons this lab started (by its pid files) and waits for them to exit. */
export async function labDown(dir: string): Promise<void> {
  const abs = path.resolve(dir);
  if (!existsSync(abs)) return;
  const state = readState(abs);
  const names = [...new Set<DaemonName>([...(state ? daemonsOf(state) : []), ...pidFileDaemons(abs)])];
  // OSDs and the manager first (OSDs tell the monitor they are going), the monitor last.
  await Promise.all(names.filter((n) => n !== 'mon.a').map((n) => stopDaemon(abs, n)));
  if (names.includes('mon.a')) await stopDaemon(abs, 'mon.a');
}

/** labDown, then removes the directory (BlueStore block files only grow). */
export async function labPurge(dir: string): Promise<void> {
  const abs = path.resolve(dir);
  if (!existsSync(abs)) return;
  const isLab = existsSync(path.join(abs, STATE_FILE)) || existsSync(confPathOf(abs));
  if (!isLab && readdirSync(abs).length > 0) {
    throw new CephLabError(`${abs} is not a Ceph lab (no ${STATE_FILE}): refusing to remove it`);
  }
  await labDown(abs);
  await rm(abs, { recursive: true, force: true });
}

/** running: every daemon of the lab is alive; health: `ceph health` (or why it is unknown). */
export async function labStatus(dir: string): Promise<{ running: boolean; health: string }> {
  const abs = path.resolve(dir);
  const state = readState(abs);
  if (!state) return { running: false, health: existsSync(abs) ? `not a Ceph lab (no ${STATE_FILE})` : 'absent' };
  const down = daemonsOf(state).filter((n) => labPid(abs, n) === null);
  if (down.includes('mon.a')) return { running: false, health: `unknown: mon.a is not running${down.length > 1 ? ` (nor ${down.filter((n) => n !== 'mon.a').join(', ')})` : ''}` };
  let health: string;
  try {
    health = (await ceph(abs, ['health'], { timeoutMs: 20_000 })).trim();
  } catch (error) {
    health = `unknown: ${(error as Error).message.split('\n')[0]}`;
  }
  if (!state.complete) health = `incomplete lab (creation did not finish); ${health}`;
  if (down.length > 0) health = `${health} (not running: ${down.join(', ')})`;
  return { running: down.length === 0, health };
}

/** Waits until a running lab is ready again (HEALTH_OK, every PG active+clean), e.g. after startDaemon. */
export async function waitLabReady(dir: string, timeoutMs = 120_000, log: (m: string) => void = () => undefined): Promise<void> {
  const abs = path.resolve(dir);
  const state = readState(abs);
  if (!state) throw new CephLabError(`${abs} is not a Ceph lab (no ${STATE_FILE})`);
  await waitReady(abs, state, timeoutMs, log);
}
