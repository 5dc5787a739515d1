/**
 * Seeded crash harness. `runCrashSeed(seed)` drives a real `pumice serve`
 * (local backend, posix backups) through `operations` operations chosen
 * from the seed; before each one the running server is armed with
 * `<point>:1` through its PUMICE_CRASH_CONTROL file (a point that operation
 * passes, chosen from the seed, or none), so the process kills itself
 * (SIGKILL, a real kill -9) in the middle of it. After a crash the server is
 * restarted on the same data directory, disarmed, and the invariants are
 * checked once it settles:
 *
 * - no volume, snapshot or backup stays in a transitional state (the
 *   recovery window is bounded; its length is the recovery time reported);
 * - every error has a user message or a fail reason;
 * - database rows match the backend: a file per available volume and
 *   snapshot and no file without a row, no temporary file; a manifest per
 *   available backup and no backup directory without a row;
 * - every available copy (clone, volume from snapshot, restore) holds the
 *   source's bytes.
 *
 * A failing seed replays from the seed alone: `runCrashSeed(seed)` makes the
 * same choices (the operations, the crash points and hits).
 *
 * Speed (a seed is a dozen server starts' worth of work): every start of a
 * run loads one prebuilt bundle (prepareHarnessServer) without the compute
 * role; an operation is armed in the running server instead of a restart; a
 * restarted server is used with the token it issued before (no password hash);
 * a crash is seen by the child's exit, not by a sleep. `timing` says where the
 * time went.
 *
 * Two backends: `local` (sparse files, posix backups) and `ceph` (RBD volumes
 * and the Ceph backup driver in pools made for the seed on the lab, so the
 * listing of a pool is exactly this run's). On Ceph the rows are checked
 * against `rbd ls`, every image's snapshots (Cinder's names, the hidden
 * parents kept for clones, the clone and backup snapshots), the trash, and
 * the backup images' snapshots; the operations also pass the drivers' own
 * crash points (between RBD's snapshot, protect and clone; after the trash
 * move; inside a backup's copy).
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, cpSync, existsSync, mkdtempSync, openSync, readdirSync, readSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type { CephLab } from '../../src/ceph/lab.ts';
import { RadosCluster, type IoCtx } from '../../src/ceph/rbd.ts';
import { ApiClient, repoRoot, testDatabaseUrl } from './pumice.ts';
import { followServe } from './serve.ts';

const execFileAsync = promisify(execFile);

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** Bytes the source volume holds (written into its file before the run). */
const sourcePattern: { byte: number; offset: number; length: number }[] = [
  { byte: 0x5a, offset: 0, length: 2 * MiB },
  { byte: 0xa5, offset: 700 * MiB, length: 1 * MiB },
];

const transitional = {
  volume: new Set(['creating', 'deleting', 'extending', 'reverting', 'attaching', 'detaching', 'reserved', 'maintenance', 'backing-up', 'restoring-backup', 'downloading', 'uploading', 'retyping', 'awaiting-transfer']),
  snapshot: new Set(['creating', 'deleting', 'restoring', 'unmanaging', 'backing-up']),
  backup: new Set(['creating', 'deleting', 'restoring']),
};

/** Operations and the crash points each one passes (src/tasks checkpoints), in order. */
export const crashOperations = {
  clone: ['volume.create.clone.before', 'volume.create.made'],
  'volume-from-snapshot': ['volume.create.snapshot.before', 'volume.create.made'],
  'delete-with-dependents': ['volume.delete.snapshot.before', 'volume.delete.snapshot.deleted', 'volume.delete.before', 'volume.delete.deleted'],
  extend: ['volume.extend.before', 'volume.extend.extended'],
  snapshot: ['snapshot.create.before', 'snapshot.create.taken'],
  'backup-full': ['backup.create.full.before', 'backup.create.full.written'],
  'backup-incremental': ['backup.create.incremental.before', 'backup.create.incremental.written'],
  restore: ['volume.create.before', 'volume.create.made', 'backup.restore.before', 'backup.restore.written'],
  'upload-to-image': ['volume.upload.before', 'volume.upload.uploaded'],
  'volume-from-image': ['volume.create.image.before', 'volume.create.image.copy-start', 'volume.create.image.filled'],
} as const;
export type CrashOperation = keyof typeof crashOperations;

/** On Ceph the operations also pass the RBD driver's and the Ceph backup driver's points. */
export const cephCrashOperations: Record<CrashOperation, readonly string[]> = {
  ...crashOperations,
  clone: ['volume.create.clone.before', 'rbd.clone.snapshot-taken', 'rbd.clone.protected', 'rbd.clone.cloned', 'volume.create.made'],
  'volume-from-snapshot': ['volume.create.snapshot.before', 'rbd.clone.protected', 'rbd.clone.cloned', 'volume.create.made'],
  'delete-with-dependents': ['volume.delete.snapshot.before', 'volume.delete.snapshot.deleted', 'volume.delete.before', 'rbd.delete.snapshots-removed', 'rbd.delete.trashed', 'volume.delete.deleted'],
  'backup-full': ['backup.create.full.before', 'ceph-backup.image-created', 'ceph-backup.source-snapshot-taken', 'ceph-backup.piece-written', 'ceph-backup.copied', 'backup.create.full.written'],
  'backup-incremental': ['backup.create.incremental.before', 'ceph-backup.source-snapshot-taken', 'ceph-backup.copied', 'backup.create.incremental.written'],
};

export interface CrashRunOptions {
  /** Operations per seed. */
  operations: number;
  /** Where the volumes and backups live; default local files. */
  backend?: 'local' | { ceph: CephLab };
  /** Chance that an operation runs unarmed (no crash), to mix in clean runs. */
  cleanChance?: number;
  /**
   * Time an operation, or a restarted server, has to settle every resource (default 120 s: at load 27 on
   * 2 cores under nice 10 an upload of the 1 GiB source to an image took over 30 s, the earlier bound, with
   * no crash at all). A resource that never settles still fails the seed; the recovery p99 says how long it took.
   */
  settleTimeoutMs?: number;
  log?: (line: string) => void;
  /** The server's command line, shared by parallel seeds (prepareHarnessServer); default one made for the seed. */
  server?: HarnessServer;
}

export interface CrashStep {
  operation: CrashOperation;
  crashPoint: string | null;
  /** The armed point was reached and the process killed itself there (SIGKILL). */
  crashed: boolean;
  /** From the restart to every resource settled, ms (null when no crash). */
  recoveryMs: number | null;
}

export interface CrashRunResult {
  seed: number;
  steps: CrashStep[];
  /** Where the seed's time went, ms by phase (prepare, ceph-pools, start, login, setup, operation, restart, recovery, check). */
  timing: Record<string, number>;
}

/** mulberry32: a small seeded generator, so a seed replays the same choices. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** virt_type = qemu: no accelerator probe boot at each fresh data directory's first start (the harness runs no guests). */
const localConfig = '[DEFAULT]\nvolume_task_concurrency = 4\nreport_interval = 1\n[libvirt]\nvirt_type = qemu\n';

/** What the invariants need to know of a backend: where the bytes are and what exists there. */
interface HarnessBackend {
  config: string;
  points: Record<CrashOperation, readonly string[]>;
  writeSource(volumeId: string): Promise<void>;
  /** Null when the volume holds the source's bytes, else what differs. */
  sourceMismatch(volumeId: string): Promise<string | null>;
  /** Rows against what the backend holds: orphans, missing data, wrong sizes. */
  problems(listing: Listing): Promise<string[]>;
  close(): Promise<void>;
}

function localBackend(dataDir: string): HarnessBackend {
  const backendDir = join(dataDir, 'volumes', 'local');
  const backupDir = join(dataDir, 'backups', 'volumebackups');
  return {
    config: localConfig,
    points: crashOperations,
    writeSource: async (volumeId) => writeSource(join(backendDir, `volume-${volumeId}`)),
    sourceMismatch: async (volumeId) => sourceMismatch(join(backendDir, `volume-${volumeId}`)),
    problems: async (listing) => localProblems(listing, backendDir, backupDir),
    close: async () => undefined,
  };
}
export async function runCrashSeed(seed: number, options: CrashRunOptions): Promise<CrashRunResult> {
  const random = seededRandom(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const log = options.log ?? (() => undefined);
  const settleTimeoutMs = options.settleTimeoutMs ?? 120_000;
  const timing: Record<string, number> = {};
  let mark = Date.now();
  /** Adds the time since the last lap to `phase`. */
  const lap = (phase: string) => {
    const now = Date.now();
    timing[phase] = (timing[phase] ?? 0) + (now - mark);
    mark = now;
  };
  const own = options.server ? null : await prepareHarnessServer();
  const command = options.server ?? own!;
  lap('prepare');
  const servers: HarnessProcess[] = [];
  let ceph: HarnessBackend | null = null;
  let server: HarnessProcess | null = null;
  /** Where the run is, for the failure's message: 'setup' or the operation and its crash point. */
  let at = 'setup';
  try {
    ceph = options.backend && options.backend !== 'local' ? await cephBackend(options.backend.ceph, seed) : null;
    lap('ceph-pools');
    const config = ceph?.config ?? localConfig;
    server = await startHarnessServer(command, { config });
    servers.push(server);
    lap('start');
    const dataDir = server.dataDir;
    /** Armed crash points (PUMICE_CRASH_CONTROL): written before each operation, emptied before each restart. */
    const arm = (spec: string) => {
      writeFileSync(`${server!.controlPath}.tmp`, spec);
      renameSync(`${server!.controlPath}.tmp`, server!.controlPath);
    };
    const backend = ceph ?? localBackend(dataDir);
    let api = await ApiClient.login(server.url, 'admin', server.adminPassword, 'admin');
    lap('login');
    const v = (path: string) => `${api.volumeUrl}${path}`;
    const call = async (method: string, path: string, body?: unknown, expected = [200, 202]) => {
      const r = await api.request(method, path.startsWith('http') ? path : v(path), body);
      assert.ok(expected.includes(r.status), `${method} ${path}: ${r.status} ${r.text}`);
      return r.body;
    };
    /** Resources that must hold the source's bytes when available. */
    const copies = new Set<string>();
    const steps: CrashStep[] = [];

    await call('PUT', `${server.url}/volume/v3/os-quota-sets/${api.projectId}`, { quota_set: { volumes: -1, snapshots: -1, gigabytes: -1, backups: -1, backup_gigabytes: -1 } });
    // Setup: a source with known bytes, a snapshot of it, a full backup of it, a small image.
    const sourceId = (await call('POST', '/volumes', { volume: { size: 1, name: 'source' } })).volume.id as string;
    assert.equal((await api.waitVolume(sourceId, ['available', 'error'])).status, 'available');
    await backend.writeSource(sourceId);
    lap('setup-source');
    const snapshotId = (await call('POST', '/snapshots', { snapshot: { volume_id: sourceId, name: 'base' } })).snapshot.id as string;
    await waitFor(api, v(`/snapshots/${snapshotId}`), 'snapshot', ['available']);
    lap('setup-snapshot');
    const backupId = (await call('POST', '/backups', { backup: { volume_id: sourceId, name: 'base' } })).backup.id as string;
    await waitFor(api, v(`/backups/${backupId}`), 'backup', ['available']);
    lap('setup-backup');
    const imageId = await makeImage(api, server.url);
    lap('setup');

    const operations = Object.keys(crashOperations) as CrashOperation[];
    for (let index = 0; index < options.operations; index++) {
      const operation = pick(operations);
      const points = backend.points[operation];
      const armed = random() < (options.cleanChance ?? 0.1) ? null : pick(points);
      at = `operation ${index} ${operation}, crash point ${armed ?? '(none)'}`;
      // Armed in the running server: its hit counts start again, so the point's first hit is this operation's.
      arm(armed ? `${armed}:1` : '');
      const current = server;
      /** The cut connection is seen before the exit, on a loaded machine by seconds: wait for it that long. */
      const exitSeen = async () => {
        if (!current.hasExited()) await Promise.race([current.exited, new Promise((r) => setTimeout(r, exitSeenMs).unref())]);
        return current.hasExited();
      };
      const done = startOperation(operation, { api, call, sourceId, snapshotId, backupId, imageId, copies, serverUrl: server.url }).catch(async (error: unknown) => {
        // A crash cuts the HTTP call or the wait short; anything else is a real failure.
        if (!(await exitSeen())) throw error;
      });
      const raced = await Promise.race([current.exited.then(() => 'exited'), done.then(() => settleAll(api, v, settleTimeoutMs)).then(() => 'settled', () => 'failed')]);
      // A crash during the settle polls shows as failed requests first and as the exit a moment later.
      if (raced === 'failed') await exitSeen();
      lap('operation');
      let crashed = false;
      let recoveryMs: number | null = null;
      if (current.hasExited()) {
        assert.ok(await exitedAtCrashPoint(current, armed), `the server died with ${current.proc.exitCode ?? current.proc.signalCode}, not at a crash point:\n${current.output().slice(-3000)}`);
        crashed = true;
        // Disarmed before the restart: the recovery must not crash at the same point again.
        arm('');
        const restartedAt = Date.now();
        server = await startHarnessServer(command, { config, dataDir });
        servers.push(server);
        lap('restart');
        api = await sameToken(api, server);
        lap('restart');
        await settleAll(api, v, settleTimeoutMs, server);
        recoveryMs = Date.now() - restartedAt;
        lap('recovery');
      } else {
        await done;
        await settleAll(api, v, settleTimeoutMs, server);
        lap('operation');
      }
      await checkInvariants({ api, v, backend, copies, sourceId });
      lap('check');
      steps.push({ operation, crashPoint: armed, crashed, recoveryMs });
      log(`seed ${seed} op ${index} ${operation} crash-point ${armed ?? '(none)'} ${crashed ? `crashed, recovered in ${recoveryMs} ms` : 'not crashed'}`);
    }
    return { seed, steps, timing };
  } catch (error) {
    (error as Error).message = `seed ${seed} (replay: runCrashSeed(${seed}, ${JSON.stringify({ operations: options.operations })})) at ${at}: ${(error as Error).message}\n--- last server output ---\n${server?.output().slice(-4000) ?? '(none started)'}`;
    throw error;
  } finally {
    for (const s of servers) await s.kill9();
    servers[0]?.cleanup();
    await ceph?.close();
    own?.dispose();
  }
}

/** How long a cut connection may come before the process's death is seen. */
const exitSeenMs = 15_000;

/**
 * The process died at the armed crash point: killed by SIGKILL after announcing it (src/tasks/crash.ts).
 * Waits for its output to be read to the end ('close' comes after the exit and the last of stderr).
 */
async function exitedAtCrashPoint(server: HarnessProcess, armed: string | null): Promise<boolean> {
  await server.closed;
  return armed !== null && server.proc.signalCode === 'SIGKILL' && server.output().includes(`crash-point ${armed}:1: killing the process (SIGKILL`);
}

/**
 * The same user's token on the restarted server (tokens outlive a restart: their keys are in the data
 * directory), so a recovery does not pay a password hash; a login only if it is refused.
 */
async function sameToken(previous: ApiClient, server: HarnessProcess): Promise<ApiClient> {
  const api = new ApiClient(server.url);
  api.token = previous.token;
  api.projectId = previous.projectId;
  api.userId = previous.userId;
  api.volumeUrl = `${server.url}/volume/v3/${previous.projectId}`;
  const probe = await api.request('GET', `${api.volumeUrl}/volumes?limit=1`);
  if (probe.status === 200) return api;
  return ApiClient.login(server.url, 'admin', server.adminPassword, 'admin');
}

// ------------------------------------------------------------------ the server under test

/** How the harness starts `pumice serve`: a copy of the bundle of the sources as they were when the run began. */
export interface HarnessServer {
  /** node arguments before `serve ...`. */
  argv: string[];
  /** What the run tests, for the report: the bundle's stamp, or 'tsx' when the sources run through tsx. */
  label: string;
  dispose(): void;
}

/**
 * Builds Pumice's bundle (bin/bundle.mjs) once and copies it to build/crash-harness-PID/ (same depth as the
 * bundle, so its paths to src/ still resolve; not a name bin/bundle.mjs prunes): every start of the run loads
 * that one file, not a rebuild each time someone edits src/ meanwhile (which also tested a mix of versions),
 * and no start transforms TypeScript. Without esbuild the sources run through bin/pumice.mjs as before.
 */
export async function prepareHarnessServer(): Promise<HarnessServer> {
  const buildDir = join(repoRoot, 'build');
  // Copies left by runs that died (their process is gone).
  for (const name of existsSync(buildDir) ? readdirSync(buildDir) : []) {
    const m = /^crash-harness-(\d+)$/.exec(name);
    if (m && !processAlive(Number(m[1]))) rmSync(join(buildDir, name), { recursive: true, force: true });
  }
  let main: string;
  try {
    main = (await execFileAsync(process.execPath, [join(repoRoot, 'bin', 'bundle.mjs')], { cwd: repoRoot, timeout: 300_000 })).stdout.trim();
    if (!existsSync(main)) throw new Error(`bin/bundle.mjs printed ${main}`);
  } catch {
    return { argv: [join(repoRoot, 'bin', 'pumice.mjs')], label: 'tsx', dispose: () => undefined };
  }
  const dir = join(buildDir, `crash-harness-${process.pid}`);
  if (!existsSync(dir)) {
    cpSync(dirname(main), `${dir}.tmp`, { recursive: true });
    // As bin/pumice.mjs: libuv's pool sized first, then the bundle's main.
    writeFileSync(join(`${dir}.tmp`, 'start.mjs'), "process.env.UV_THREADPOOL_SIZE ??= '16';\nprocess.setSourceMapsEnabled(true);\nconst { main } = await import('./main.js');\nawait main(process.argv.slice(2));\n");
    renameSync(`${dir}.tmp`, dir);
  }
  return { argv: [join(dir, 'start.mjs')], label: basename(dirname(main)), dispose: () => rmSync(dir, { recursive: true, force: true }) };
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface HarnessProcess {
  url: string;
  dataDir: string;
  adminPassword: string;
  /** The file the server reads its armed crash points from (PUMICE_CRASH_CONTROL). */
  controlPath: string;
  proc: ChildProcess;
  output: () => string;
  /** Resolves when the process has died (its exit seen). */
  exited: Promise<void>;
  /** Resolves once the process died and its output was read to the end. */
  closed: Promise<void>;
  hasExited(): boolean;
  kill9(): Promise<void>;
  cleanup(): void;
}

/** The roles the harness needs: no compute (it runs no guests; its start probes QEMU for about a second). */
const harnessRoles = 'api,scheduler,volume,backup,image';

/** `pumice serve` as test/helpers/pumice.ts starts it (responses validated, host 'pumice'), on the harness's command line. */
async function startHarnessServer(server: HarnessServer, options: { config: string; dataDir?: string }): Promise<HarnessProcess> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'pumice-crash-'));
  const databaseUrl = await testDatabaseUrl(dataDir);
  const configPath = join(dataDir, 'pumice.conf');
  writeFileSync(configPath, databaseUrl && !/^\[database\]/m.test(options.config) ? `${options.config}\n[database]\nconnection = ${databaseUrl}\n` : options.config);
  const controlPath = join(dataDir, 'crash-control');
  const adminPassword = 'test-admin-password';
  const args = [...server.argv, 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--host', 'pumice', '--roles', harnessRoles, '--config', configPath];
  const proc = spawn(process.execPath, args, {
    cwd: repoRoot,
    env: { PUMICE_VALIDATE_RESPONSES: '1', ...process.env, PUMICE_CRASH_CONTROL: controlPath, PUMICE_ADMIN_PASSWORD: adminPassword },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const served = followServe(proc, 60_000);
  const exited = served.exited.then(() => undefined);
  const closed = new Promise<void>((r) => (proc.exitCode !== null || proc.signalCode !== null ? r() : proc.once('close', () => r())));
  const url = await served.ready.catch((error: unknown) => {
    proc.kill('SIGKILL');
    throw error;
  });
  const hasExited = () => proc.exitCode !== null || proc.signalCode !== null;
  return {
    url,
    dataDir,
    adminPassword,
    controlPath,
    proc,
    output: served.output,
    exited,
    closed,
    hasExited,
    async kill9() {
      if (!hasExited()) proc.kill('SIGKILL');
      await exited;
    },
    cleanup() {
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

interface OperationContext {
  api: ApiClient;
  call: (method: string, path: string, body?: unknown, expected?: number[]) => Promise<any>;
  sourceId: string;
  snapshotId: string;
  backupId: string;
  imageId: string;
  copies: Set<string>;
  serverUrl: string;
}

/** Sends the operation's requests (what the API accepts before the task runs). */
async function startOperation(operation: CrashOperation, c: OperationContext): Promise<void> {
  const { call } = c;
  switch (operation) {
    case 'clone': {
      const id = (await call('POST', '/volumes', { volume: { source_volid: c.sourceId, name: 'clone' } })).volume.id;
      c.copies.add(id);
      return;
    }
    case 'volume-from-snapshot': {
      const id = (await call('POST', '/volumes', { volume: { snapshot_id: c.snapshotId, name: 'from-snapshot' } })).volume.id;
      c.copies.add(id);
      return;
    }
    case 'delete-with-dependents': {
      const id = (await call('POST', '/volumes', { volume: { size: 1, name: 'doomed' } })).volume.id;
      await c.api.waitVolume(id, ['available']);
      for (let i = 0; i < 2; i++) {
        const snap = (await call('POST', '/snapshots', { snapshot: { volume_id: id, name: `doomed-${i}` } })).snapshot.id;
        await waitFor(c.api, `${c.api.volumeUrl}/snapshots/${snap}`, 'snapshot', ['available']);
      }
      await call('DELETE', `/volumes/${id}?cascade=true`);
      return;
    }
    case 'extend': {
      const id = (await call('POST', '/volumes', { volume: { size: 1, name: 'extend-me' } })).volume.id;
      await c.api.waitVolume(id, ['available']);
      await call('POST', `/volumes/${id}/action`, { 'os-extend': { new_size: 2 } });
      return;
    }
    case 'snapshot':
      await call('POST', '/snapshots', { snapshot: { volume_id: c.sourceId, name: 'snap' } });
      return;
    case 'backup-full':
      await call('POST', '/backups', { backup: { volume_id: c.sourceId, name: 'full' } });
      return;
    case 'backup-incremental':
      await call('POST', '/backups', { backup: { volume_id: c.sourceId, name: 'incremental', incremental: true } });
      return;
    case 'restore': {
      const body = await call('POST', `/backups/${c.backupId}/restore`, { restore: { name: 'restored' } });
      c.copies.add(body.restore.volume_id);
      return;
    }
    case 'upload-to-image':
      await call('POST', `/volumes/${c.sourceId}/action`, { 'os-volume_upload_image': { image_name: 'uploaded', disk_format: 'raw', container_format: 'bare', force: true } });
      return;
    case 'volume-from-image':
      await call('POST', '/volumes', { volume: { size: 1, name: 'from-image', imageRef: c.imageId } });
      return;
  }
}

function writeSource(path: string): void {
  const fd = openSync(path, 'r+');
  try {
    for (const p of sourcePattern) writeSync(fd, Buffer.alloc(p.length, p.byte), 0, p.length, p.offset);
  } finally {
    closeSync(fd);
  }
}

/** Null when the file holds the source's bytes at the pattern's places (and zeros after the first run), else what differs. */
function sourceMismatch(path: string): string | null {
  const fd = openSync(path, 'r');
  try {
    const probe = (offset: number, length: number, byte: number): string | null => {
      const buf = Buffer.alloc(length);
      readSync(fd, buf, 0, length, offset);
      const at = buf.findIndex((b) => b !== byte);
      return at === -1 ? null : `byte ${offset + at} is ${buf[at]}, expected ${byte}`;
    };
    for (const p of sourcePattern) {
      const problem = probe(p.offset, p.length, p.byte) ?? probe(p.offset + p.length, 4096, 0);
      if (problem) return problem;
    }
    return null;
  } finally {
    closeSync(fd);
  }
}

async function makeImage(api: ApiClient, url: string): Promise<string> {
  const imageUrl = `${url}/image/v2`;
  const created = await api.request('POST', `${imageUrl}/images`, { name: 'crash-image', disk_format: 'raw', container_format: 'bare' });
  assert.equal(created.status, 201, created.text);
  const id = created.body.id as string;
  const data = Buffer.alloc(MiB, 0x3c);
  const put = await fetch(`${imageUrl}/images/${id}/file`, {
    method: 'PUT',
    headers: { 'X-Auth-Token': api.token, 'Content-Type': 'application/octet-stream' },
    body: data,
  });
  assert.equal(put.status, 204, await put.text());
  return id;
}

/** Polls `url` until its `kind` has one of `statuses` (the setup's backup of 1 GiB took 10 s at load 23: the bound is generous). */
async function waitFor(api: ApiClient, url: string, kind: string, statuses: string[], timeoutMs = 120_000): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await api.request('GET', url);
    if (r.status === 200 && statuses.includes(r.body[kind].status)) return r.body[kind];
    assert.ok(Date.now() < deadline, `${kind} at ${url}: ${r.status} ${r.text}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

interface Listing {
  volumes: any[];
  snapshots: any[];
  backups: any[];
}

async function listAll(api: ApiClient, v: (path: string) => string): Promise<Listing> {
  const get = async (path: string, key: string) => {
    const r = await api.request('GET', v(path));
    assert.equal(r.status, 200, r.text);
    return r.body[key] as any[];
  };
  return {
    volumes: await get('/volumes/detail?limit=1000', 'volumes'),
    snapshots: await get('/snapshots/detail?limit=1000', 'snapshots'),
    backups: await get('/backups/detail?limit=1000', 'backups'),
  };
}

/** Waits until no resource is transitional; fails naming the stuck ones after the timeout. */
async function settleAll(api: ApiClient, v: (path: string) => string, timeoutMs: number, server?: HarnessProcess): Promise<Listing> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const listing = await listAll(api, v);
    const busy = [
      ...listing.volumes.filter((x) => transitional.volume.has(x.status)).map((x) => `volume ${x.id} ${x.name} ${x.status}`),
      ...listing.snapshots.filter((x) => transitional.snapshot.has(x.status)).map((x) => `snapshot ${x.id} ${x.name} ${x.status}`),
      ...listing.backups.filter((x) => transitional.backup.has(x.status)).map((x) => `backup ${x.id} ${x.name} ${x.status}`),
    ];
    if (busy.length === 0) return listing;
    assert.ok(Date.now() < deadline, `still transitional after ${timeoutMs} ms:\n${busy.join('\n')}\n${server?.output().slice(-3000) ?? ''}`);
    // Three listings a poll: every 100 ms, not to take the CPU the recovery needs on a loaded machine.
    await new Promise((res) => setTimeout(res, 100));
  }
}

async function checkInvariants(c: {
  api: ApiClient;
  v: (path: string) => string;
  backend: HarnessBackend;
  copies: Set<string>;
  sourceId: string;
}): Promise<void> {
  const listing = await listAll(c.api, c.v);
  const problems: string[] = [];
  for (const vol of listing.volumes) {
    if (!String(vol.status).startsWith('error')) continue;
    const r = await c.api.request('GET', c.v(`/messages?resource_uuid=${vol.id}`), undefined, { 'OpenStack-API-Version': 'volume 3.3' });
    if (r.status !== 200 || r.body.messages.length === 0) problems.push(`volume ${vol.id} ${vol.name} is ${vol.status} with no user message`);
  }
  for (const b of listing.backups) if (b.status === 'error' && !b.fail_reason) problems.push(`backup ${b.id} is error with no fail_reason`);
  problems.push(...(await c.backend.problems(listing)));
  for (const vol of listing.volumes) {
    if ((vol.status !== 'available' && vol.status !== 'in-use') || (!c.copies.has(vol.id) && vol.id !== c.sourceId)) continue;
    const mismatch = await c.backend.sourceMismatch(vol.id);
    if (mismatch) problems.push(`volume ${vol.id} ${vol.name} does not hold the source's bytes: ${mismatch}`);
  }
  assert.deepEqual(problems, []);
}

function localProblems(listing: Listing, backendDir: string, backupDir: string): string[] {
  const problems: string[] = [];
  const volumes = new Map(listing.volumes.map((x) => [x.id as string, x]));
  const snapshots = new Map(listing.snapshots.map((x) => [x.id as string, x]));
  const backups = new Map(listing.backups.map((x) => [x.id as string, x]));
  for (const name of readdirSync(backendDir)) {
    if (name.startsWith('.tmp-')) problems.push(`temporary file ${name} left behind`);
    else if (name.startsWith('volume-')) {
      if (!volumes.has(name.slice('volume-'.length))) problems.push(`orphaned file ${name}: no volume row`);
    } else if (name.startsWith('snapshot-')) {
      if (!snapshots.has(name.slice('snapshot-'.length))) problems.push(`orphaned file ${name}: no snapshot row`);
    }
  }
  for (const vol of volumes.values()) {
    if (vol.status !== 'available' && vol.status !== 'in-use') continue;
    const path = join(backendDir, `volume-${vol.id}`);
    if (!existsSync(path)) problems.push(`available volume ${vol.id} ${vol.name} has no file`);
    else if (statSync(path).size !== vol.size * GiB) problems.push(`volume ${vol.id} is ${vol.size} GiB but its file has ${statSync(path).size} bytes`);
  }
  for (const snap of snapshots.values()) {
    if (snap.status === 'available' && !existsSync(join(backendDir, `snapshot-${snap.id}`))) problems.push(`available snapshot ${snap.id} has no file`);
  }
  for (const b of backups.values()) {
    if (b.status === 'available' && !existsSync(join(backupDir, b.id, 'manifest.json'))) problems.push(`available backup ${b.id} ${b.name} has no manifest`);
  }
  if (existsSync(backupDir)) {
    for (const name of readdirSync(backupDir)) if (!backups.has(name)) problems.push(`orphaned backup directory ${name}: no backup row`);
  }
  return problems;
}

// ------------------------------------------------------------------ Ceph

const uuid = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
const volumeImagePattern = new RegExp(`^volume-(${uuid})(\\.deleted)?$`);
const backupImagePattern = new RegExp(`^volume-(${uuid})\\.backup\\.(${uuid})$`);
/** Snapshot names a volume image may carry, and what each needs to exist. */
const volumeSnapPatterns = {
  snapshot: new RegExp(`^snapshot-(${uuid})$`),
  hidden: new RegExp(`^snapshot-(${uuid})\\.deleted$`),
  cloneSnap: new RegExp(`^volume-(${uuid})\\.clone_snap$`),
  backup: new RegExp(`^backup\\.(${uuid})\\.snap$`),
};
/**
 * The background parts of a delete (trash purge, the collector of hidden parents) get this long after the API settled:
 * a purge cut short by the crash is taken up once its trash entry is 15 s old (the RBD driver's abandonedTrashSeconds),
 * at the next heartbeat after that.
 */
const cephGraceMs = 60_000;

/**
 * RBD volumes (as client.admin: client.cinder has no caps on a pool made for the run) and the
 * Ceph backup driver, in two pools made for this seed and deleted after it.
 */
async function cephBackend(lab: CephLab, seed: number): Promise<HarnessBackend> {
  const volumePool = `crash-v-${process.pid}-${seed}`;
  const backupPool = `crash-b-${process.pid}-${seed}`;
  const ceph = (...args: string[]) => execFileAsync('ceph', ['--conf', lab.confPath, '--id', 'admin', ...args], { timeout: 120_000 });
  for (const pool of [volumePool, backupPool]) {
    await ceph('osd', 'pool', 'create', pool, '8', '8');
    await execFileAsync('rbd', ['--conf', lab.confPath, '--id', 'admin', 'pool', 'init', pool], { timeout: 120_000 });
  }
  const cluster = await RadosCluster.connect({ confPath: lab.confPath, user: 'admin', keyringPath: lab.keyringPath('admin'), connectTimeoutSeconds: 10 });
  const volumes = await cluster.openIoctx(volumePool);
  const backups = await cluster.openIoctx(backupPool);
  const config = `[DEFAULT]
volume_task_concurrency = 4
report_interval = 1
enabled_backends = ceph
backup_driver = cinder.backup.drivers.ceph.CephBackupDriver
backup_ceph_conf = ${lab.confPath}
backup_ceph_user = admin
backup_ceph_pool = ${backupPool}

[ceph]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = ceph
rbd_pool = ${volumePool}
rbd_user = admin
rbd_ceph_conf = ${lab.confPath}
rados_connect_timeout = 5

[libvirt]
virt_type = qemu
`;
  const imageOf = async (volumeId: string): Promise<string> => {
    const names = await volumes.listImages();
    return names.includes(`volume-${volumeId}`) ? `volume-${volumeId}` : `volume-${volumeId}.deleted`;
  };
  return {
    config,
    points: cephCrashOperations,
    async writeSource(volumeId) {
      await volumes.withImage(`volume-${volumeId}`, {}, async (image) => {
        for (const p of sourcePattern) await image.write(p.offset, Buffer.alloc(p.length, p.byte));
        await image.flush();
      });
    },
    async sourceMismatch(volumeId) {
      return volumes.withImage(await imageOf(volumeId), { readOnly: true }, async (image) => {
        for (const p of sourcePattern) {
          for (const [offset, length, byte] of [[p.offset, p.length, p.byte], [p.offset + p.length, 4096, 0]] as const) {
            const buf = Buffer.alloc(length);
            const got = await image.readInto(offset, buf);
            if (got < length) buf.fill(0, got);
            const at = buf.findIndex((b) => b !== byte);
            if (at !== -1) return `byte ${offset + at} is ${buf[at]}, expected ${byte}`;
          }
        }
        return null;
      });
    },
    async problems(listing) {
      // The API settled; a delete's purge and the collector of hidden parents run in the background: give them a while.
      const deadline = Date.now() + cephGraceMs;
      for (;;) {
        const problems = await cephProblems(listing, volumes, backups);
        if (problems.length === 0 || Date.now() > deadline) return problems;
        await new Promise((r) => setTimeout(r, 500));
      }
    },
    async close() {
      await volumes.close().catch(() => undefined);
      await backups.close().catch(() => undefined);
      await cluster.shutdown().catch(() => undefined);
      for (const pool of [volumePool, backupPool]) await ceph('osd', 'pool', 'delete', pool, pool, '--yes-i-really-really-mean-it').catch(() => undefined);
    },
  };
}

async function cephProblems(listing: Listing, volumes: IoCtx, backups: IoCtx): Promise<string[]> {
  const problems: string[] = [];
  const volumeRows = new Map(listing.volumes.map((x) => [x.id as string, x]));
  const snapshotRows = new Map(listing.snapshots.map((x) => [x.id as string, x]));
  const backupRows = new Map(listing.backups.map((x) => [x.id as string, x]));
  const names = new Set(await volumes.listImages());
  const snapshotsSeen = new Set<string>();
  for (const name of names) {
    const m = volumeImagePattern.exec(name);
    if (!m) {
      problems.push(`image ${volumes.pool}/${name}: not a name Pumice gives`);
      continue;
    }
    const [, volumeId, hidden] = m;
    await volumes.withImage(name, { readOnly: true }, async (image) => {
      let children = 0;
      for (const snap of await image.snapList()) {
        const kids = (await image.listChildren(snap.name)).length;
        children += kids;
        const at = `${volumes.pool}/${name}@${snap.name}`;
        const s = volumeSnapPatterns.snapshot.exec(snap.name);
        if (s) {
          snapshotsSeen.add(s[1]!);
          if (!snapshotRows.has(s[1]!)) problems.push(`snapshot ${at}: no snapshot row`);
        } else if (volumeSnapPatterns.hidden.test(snap.name) || volumeSnapPatterns.cloneSnap.test(snap.name)) {
          // Kept for clones only; a clone snapshot is also fine while its clone's volume exists.
          const clone = volumeSnapPatterns.cloneSnap.exec(snap.name)?.[1];
          if (kids === 0 && !(clone && names.has(`volume-${clone}`))) problems.push(`snapshot ${at}: kept for clones but none is left`);
        } else {
          const b = volumeSnapPatterns.backup.exec(snap.name);
          if (!b) problems.push(`snapshot ${at}: not a name Pumice gives`);
          else if (!backupRows.has(b[1]!)) problems.push(`snapshot ${at}: no backup row`);
        }
      }
      if (hidden) {
        if (children === 0) problems.push(`image ${volumes.pool}/${name}: hidden for clones but none is left`);
      } else if (!volumeRows.has(volumeId!)) {
        problems.push(`image ${volumes.pool}/${name}: no volume row`);
      } else {
        const row = volumeRows.get(volumeId!);
        const sizeBytes = await image.size();
        if ((row.status === 'available' || row.status === 'in-use') && sizeBytes !== row.size * GiB) problems.push(`volume ${volumeId} is ${row.size} GiB but its image has ${sizeBytes} bytes`);
      }
    });
  }
  for (const vol of volumeRows.values()) {
    if ((vol.status === 'available' || vol.status === 'in-use') && !names.has(`volume-${vol.id}`)) problems.push(`available volume ${vol.id} ${vol.name} has no image`);
  }
  for (const snap of snapshotRows.values()) {
    if (snap.status === 'available' && !snapshotsSeen.has(snap.id)) problems.push(`available snapshot ${snap.id} has no RBD snapshot`);
  }
  for (const entry of await volumes.trashList()) problems.push(`trash of ${volumes.pool} still holds ${entry.name} (${entry.id})`);
  const backupSnaps = new Set<string>();
  for (const name of await backups.listImages()) {
    if (!backupImagePattern.test(name)) {
      problems.push(`image ${backups.pool}/${name}: not a name the backup driver gives`);
      continue;
    }
    const snaps = await backups.withImage(name, { readOnly: true }, (image) => image.snapList());
    if (snaps.length === 0) problems.push(`backup image ${backups.pool}/${name} has no backup snapshot: an interrupted backup's leftover`);
    for (const snap of snaps) {
      const b = volumeSnapPatterns.backup.exec(snap.name);
      if (!b) problems.push(`snapshot ${backups.pool}/${name}@${snap.name}: not a name the backup driver gives`);
      else {
        backupSnaps.add(b[1]!);
        if (!backupRows.has(b[1]!)) problems.push(`snapshot ${backups.pool}/${name}@${snap.name}: no backup row`);
      }
    }
  }
  for (const b of backupRows.values()) {
    if (b.status === 'available' && !backupSnaps.has(b.id)) problems.push(`available backup ${b.id} ${b.name} has no snapshot in ${backups.pool}`);
  }
  return problems;
}

/** Percentile of sorted-or-not numbers (nearest rank). */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}
