/**
 * Test helpers: start a real `pumice serve` in a child process on a free
 * port with a temporary data directory, talk to it over HTTP, and run the
 * Debian `openstack`/`cinder` clients against it.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { followServe } from './serve.ts';

const execFileAsync = promisify(execFile);
export const repoRoot = resolve(import.meta.dirname, '..', '..');
// A loaded CI machine (seven agents on two cores) can take over 30 s to probe the compute host.
const startTimeoutMs = 60_000;

export interface PumiceProcess {
  url: string;
  dataDir: string;
  /** Its database, for a second connection from the test: a SQLite path or a postgresql:// URL. */
  database: string;
  adminPassword: string;
  /** Environment for the openstack CLI as admin (from admin-openrc). */
  adminEnv: Record<string, string>;
  proc: ChildProcess;
  output: () => string;
  /** SIGTERM and wait for exit. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait for exit (crash simulation). */
  kill9(): Promise<void>;
  /** Removes the data directory (after stop). */
  cleanup(): void;
}

export interface StartOptions {
  /** INI text written to DATA_DIR/pumice.conf and passed with --config. */
  config?: string;
  /** Reuse a data directory (restart after a crash). */
  dataDir?: string;
  adminPassword?: string;
  port?: number;
  /** Extra environment of the server (e.g. PUMICE_CRASH_POINT). */
  env?: Record<string, string>;
  /**
   * --host of the server: 'pumice' unless the config sets [DEFAULT] host (the tests name hosts
   * pumice@backend#pool; the real default is the machine's hostname); null: no --host.
   */
  host?: string | null;
}

/** Where a test server under PUMICE_TEST_DATABASE keeps its database's URL (reused on restart). */
const testDatabaseFile = 'test-database-url';

/**
 * Under scripts/with-postgres.sh (PUMICE_TEST_DATABASE set), a fresh PostgreSQL database for
 * a new data directory, the one made before for a reused one; null on the SQLite default.
 */
export async function testDatabaseUrl(dataDir: string): Promise<string | null> {
  const server = process.env['PUMICE_TEST_DATABASE'];
  if (!server) return null;
  const remembered = join(dataDir, testDatabaseFile);
  if (existsSync(remembered)) return readFileSync(remembered, 'utf8').trim();
  const name = `pumice_test_${randomBytes(6).toString('hex')}`;
  await execFileAsync('/usr/bin/psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', server, '-c', `CREATE DATABASE ${name}`], { timeout: 30_000 });
  const url = new URL(server);
  url.pathname = `/${name}`;
  writeFileSync(remembered, url.toString(), { mode: 0o600 });
  return url.toString();
}

export async function startPumice(options: StartOptions = {}): Promise<PumiceProcess> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'pumice-test-'));
  const args = [join(repoRoot, 'bin', 'pumice.mjs'), 'serve', '--data-dir', dataDir, '--listen', `127.0.0.1:${options.port ?? 0}`];
  const host = options.host === undefined ? (/^\s*host\s*=/m.test(options.config ?? '') ? null : 'pumice') : options.host;
  if (host !== null) args.push('--host', host);
  const databaseUrl = await testDatabaseUrl(dataDir);
  // The test's own [database] section wins; otherwise the PostgreSQL of with-postgres.sh is appended.
  const config = databaseUrl && !/^\[database\]/m.test(options.config ?? '') ? `${options.config ?? ''}\n[database]\nconnection = ${databaseUrl}\n` : options.config;
  if (config !== undefined) {
    const configPath = join(dataDir, 'pumice.conf');
    writeFileSync(configPath, config);
    args.push('--config', configPath);
  }
  const adminPassword = options.adminPassword ?? 'test-admin-password';
  const proc = spawn(process.execPath, args, {
    cwd: repoRoot,
    // Every reply is checked against its declared schema: a contract violation is a 500 the test sees.
    env: { PUMICE_VALIDATE_RESPONSES: '1', ...process.env, ...options.env, PUMICE_ADMIN_PASSWORD: adminPassword },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const served = followServe(proc, startTimeoutMs);
  const { exited, output } = served;
  // Not left running behind a failed start.
  const url = await served.ready.catch((error: unknown) => {
    proc.kill('SIGKILL');
    throw error;
  });
  const adminEnv = parseOpenrc(readFileSync(join(dataDir, 'admin-openrc'), 'utf8'));
  // A server that dies under a test shows up as "connection refused" in the next call; its own last
  // words (a native abort, an uncaught error) are what explains it, so they go to the test's output.
  let stopping = false;
  proc.once('exit', (code, signal) => {
    if (stopping) return;
    const tail = output().split('\n').slice(-80).join('\n');
    process.stderr.write(`\npumice serve (pid ${proc.pid}, ${dataDir}) exited by itself: code ${code}, signal ${signal}. The end of its output:\n${tail}\n`);
  });
  return {
    url,
    dataDir,
    database: databaseUrl ?? join(dataDir, 'pumice.db'),
    adminPassword,
    adminEnv,
    proc,
    output,
    async stop() {
      stopping = true;
      if (proc.exitCode !== null) return proc.exitCode;
      proc.kill('SIGTERM');
      return exited;
    },
    async kill9() {
      stopping = true;
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGKILL');
      await exited;
    },
    cleanup() {
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export function parseOpenrc(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const m of text.matchAll(/^export (\w+)='?([^'\n]*)'?$/gm)) env[m[1]!] = m[2]!;
  return env;
}

/** Environment for Debian's Python clients: no pyenv on PATH, no inherited OS_* variables. */
export function cliEnv(osEnv: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: process.env['HOME'] ?? '/root', LANG: 'C.UTF-8' };
  for (const [k, v] of Object.entries(osEnv)) env[k] = v;
  return env;
}

/** Runs `/usr/bin/openstack ARGS` and returns stdout; throws with stderr on failure. */
export async function openstack(osEnv: Record<string, string>, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync('/usr/bin/openstack', args, { env: cliEnv(osEnv), timeout: 120_000, maxBuffer: 64 << 20 });
    return stdout;
  } catch (error) {
    const e = error as { stderr?: string; stdout?: string; message: string };
    throw new Error(`openstack ${args.join(' ')} failed: ${e.stderr || e.message}`);
  }
}

/** Runs `openstack ARGS -f json` and parses the output. */
export async function openstackJson<T = Record<string, unknown>>(osEnv: Record<string, string>, args: string[]): Promise<T> {
  return JSON.parse(await openstack(osEnv, [...args, '-f', 'json'])) as T;
}

/**
 * Creates `project` with `user` (password `pw-USER`) as its member; returns
 * the project id and the user's CLI environment, based on the admin's.
 */
export async function memberProject(adminEnv: Record<string, string>, project: string, user: string): Promise<{ projectId: string; env: Record<string, string> }> {
  const created = await openstackJson(adminEnv, ['project', 'create', project]);
  await openstack(adminEnv, ['user', 'create', '--project', project, '--password', `pw-${user}`, user]);
  await openstack(adminEnv, ['role', 'add', '--project', project, '--user', user, 'member']);
  return { projectId: created['id'] as string, env: { ...adminEnv, OS_USERNAME: user, OS_PASSWORD: `pw-${user}`, OS_PROJECT_NAME: project } };
}

/** A small HTTP client that authenticates once as the given user and project. */
export class ApiClient {
  token = '';
  projectId = '';
  userId = '';
  volumeUrl = '';
  constructor(readonly url: string) {}

  static async login(url: string, user: string, password: string, project: string): Promise<ApiClient> {
    const client = new ApiClient(url);
    const res = await fetch(`${url}/identity/v3/auth/tokens`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        auth: {
          identity: { methods: ['password'], password: { user: { name: user, domain: { name: 'Default' }, password } } },
          scope: { project: { name: project, domain: { name: 'Default' } } },
        },
      }),
    });
    if (res.status !== 201) throw new Error(`login failed: ${res.status} ${await res.text()}`);
    client.token = res.headers.get('x-subject-token')!;
    const body = (await res.json()) as { token: { project: { id: string }; user: { id: string } } };
    client.projectId = body.token.project.id;
    client.userId = body.token.user.id;
    client.volumeUrl = `${url}/volume/v3/${client.projectId}`;
    return client;
  }

  async request(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any; headers: Headers; text: string }> {
    const res = await fetch(path.startsWith('http') ? path : `${this.url}${path}`, {
      method,
      headers: { 'X-Auth-Token': this.token, ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = undefined;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    return { status: res.status, body: parsed, headers: res.headers, text };
  }

  /** Polls a volume until its status is one of `statuses` (or fails after timeoutMs). */
  async waitVolume(id: string, statuses: string[], timeoutMs = 30_000): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.request('GET', `/volume/v3/${this.projectId}/volumes/${id}`);
      if (r.status === 404 && statuses.includes('deleted')) return null;
      if (r.status === 200 && statuses.includes(r.body.volume.status)) return r.body.volume;
      if (Date.now() > deadline) throw new Error(`volume ${id} did not reach ${statuses.join('/')}: last ${r.status} ${r.text}`);
      await new Promise((res) => setTimeout(res, 50));
    }
  }
}

/** One structured event of a Pumice's DATA_DIR/log/events.jsonl (see src/events.ts). */
export interface PumiceEvent {
  event: string;
  time: string;
  request_id?: string;
  [field: string]: unknown;
}

/** The events a Pumice has written so far, oldest first, optionally only those named `event`. */
export function readEvents(dataDir: string, event?: string): PumiceEvent[] {
  let text = '';
  try {
    text = readFileSync(join(dataDir, 'log', 'events.jsonl'), 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as PumiceEvent)
    .filter((e) => event === undefined || e.event === event);
}
