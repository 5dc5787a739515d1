/**
 * `pumice ceph setup`: with an admin keyring, makes the cluster match the
 * configuration — creates missing pools (rbd-initialised) and users with the
 * capabilities their backends need, and writes their keyrings. Idempotent:
 * a second run changes nothing and says so. Uses the `ceph` and `rbd` CLIs of
 * ceph-common, as an operator would.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { promisify } from 'node:util';
import type { PumiceConfig } from '../config/config.ts';
import { parseCephConf } from './conf.ts';
import { readFileSync } from 'node:fs';

const execFileAsync = promisify(execFile);
const commandTimeoutMs = 60_000;

export interface SetupPlanUser {
  user: string;
  /** Pools the user writes (rwx). */
  pools: Set<string>;
  /** Pools the user only reads (rx): the image pool for the volume users' clones. */
  readPools: Set<string>;
  keyringPath: string;
  confPath: string;
}

/** Capabilities Pumice gives a user: the scenario's osd caps, and mon 'profile rbd' so it can fence crashed clients. */
export function capsFor(pools: Iterable<string>, readPools: Iterable<string> = []): { mon: string; osd: string } {
  const written = new Set(pools);
  const osd = [
    'allow class-read object_prefix rbd_children',
    ...[...written].sort().map((p) => `allow rwx pool=${p}`),
    ...[...readPools].filter((p) => !written.has(p)).sort().map((p) => `allow rx pool=${p}`),
  ].join(', ');
  return { mon: 'profile rbd', osd };
}

/**
 * The Ceph users the configuration names and what each needs: the RBD
 * backends' users (their pools, and read access to the image pool so volumes
 * can be clones of images), the rbd image store's user, the backup user.
 */
export function setupPlan(config: PumiceConfig): SetupPlanUser[] {
  const users = new Map<string, SetupPlanUser>();
  const add = (user: string, confPath: string, cluster: string, keyringPath: string | null, pool: string) => {
    const entry = users.get(user) ?? { user, pools: new Set<string>(), readPools: new Set<string>(), keyringPath: keyringPath ?? defaultKeyring(confPath, cluster, user), confPath };
    entry.pools.add(pool);
    users.set(user, entry);
    return entry;
  };
  // Every rbd image store (named stores may be several, on several pools).
  const imageStores = config.glance_store.backends.filter((s) => s.type === 'rbd');
  for (const backend of config.backends.filter((b) => b.volume_driver === 'rbd' || /RBDDriver$/.test(b.volume_driver))) {
    const confPath = backend.rbd_ceph_conf || `/etc/ceph/${backend.rbd_cluster_name}.conf`;
    const entry = add(backend.rbd_user ?? 'admin', confPath, backend.rbd_cluster_name, backend.rbd_keyring_conf, backend.rbd_pool);
    for (const store of imageStores) entry.readPools.add(store.rbd_store_pool);
  }
  for (const store of imageStores) add(store.rbd_store_user, store.rbd_store_ceph_conf, 'ceph', null, store.rbd_store_pool);
  const d = config.DEFAULT;
  if (/^(ceph|cinder\.backup\.drivers\.ceph(\.CephBackupDriver)?)$/.test(d.backup_driver)) {
    add(d.backup_ceph_user, d.backup_ceph_conf, 'ceph', null, d.backup_ceph_pool);
  }
  return [...users.values()];
}

export async function cephSetup(config: PumiceConfig, log: (line: string) => void): Promise<string[]> {
  const changes: string[] = [];
  const users = new Map(setupPlan(config).map((u) => [u.user, u]));
  if (users.size === 0) {
    throw new Error('nothing in the configuration uses Ceph: nothing to set up (add a backend with volume_driver = rbd, the rbd image store, or backup_driver = ceph)');
  }
  for (const entry of users.values()) {
    const ceph = (args: string[]) => run('ceph', ['--conf', entry.confPath, '--id', 'admin', '--connect-timeout', '15', ...args]);
    const existingPools = JSON.parse(await ceph(['osd', 'pool', 'ls', '--format', 'json'])) as string[];
    for (const pool of entry.pools) {
      if (existingPools.includes(pool)) continue;
      await ceph(['osd', 'pool', 'create', pool]);
      await run('rbd', ['--conf', entry.confPath, '--id', 'admin', 'pool', 'init', pool]);
      changes.push(`created pool ${pool} (rbd pool init)`);
      log(`created pool ${pool}`);
    }
    if (entry.user === 'admin') continue;
    const wanted = capsFor(entry.pools, entry.readPools);
    let current: { caps?: Record<string, string> } | undefined;
    try {
      current = (JSON.parse(await ceph(['auth', 'get', `client.${entry.user}`, '--format', 'json'])) as { caps?: Record<string, string> }[])[0];
    } catch (error) {
      if (!/ENOENT|does not exist|failed to find/i.test((error as Error).message)) throw error;
    }
    if (!current) {
      await ceph(['auth', 'get-or-create', `client.${entry.user}`, 'mon', wanted.mon, 'osd', wanted.osd]);
      changes.push(`created client.${entry.user} with mon '${wanted.mon}' osd '${wanted.osd}'`);
    } else if (!capsCover(current.caps ?? {}, wanted, entry.pools, entry.readPools)) {
      const osd = mergeOsdCaps(current.caps?.['osd'] ?? '', wanted.osd);
      await ceph(['auth', 'caps', `client.${entry.user}`, 'mon', wanted.mon, 'osd', osd]);
      changes.push(`updated caps of client.${entry.user} to mon '${wanted.mon}' osd '${osd}'`);
    }
    const keyring = await ceph(['auth', 'get', `client.${entry.user}`]);
    let existing = '';
    try {
      existing = readFileSync(entry.keyringPath, 'utf8');
    } catch {
      existing = '';
    }
    if (keyOf(existing) !== keyOf(keyring)) {
      mkdirSync(dirname(entry.keyringPath), { recursive: true });
      writeFileSync(entry.keyringPath, keyring, { mode: 0o600 });
      changes.push(`wrote keyring ${entry.keyringPath}`);
    }
  }
  return changes;
}

function defaultKeyring(confPath: string, cluster: string, user: string): string {
  try {
    const conf = parseCephConf(readFileSync(confPath, 'utf8'));
    const setting = conf.get(`client.${user}`)?.get('keyring') ?? conf.get('client')?.get('keyring') ?? conf.get('global')?.get('keyring');
    if (setting) return setting.split(',')[0]!.trim().replace(/\$cluster/g, cluster).replace(/\$name/g, `client.${user}`);
  } catch {
    // fall through to the default path
  }
  return `/etc/ceph/${cluster}.client.${user}.keyring`;
}

function keyOf(keyring: string): string | null {
  return /key\s*=\s*(\S+)/.exec(keyring)?.[1] ?? null;
}

function capsCover(current: Record<string, string>, wanted: { mon: string; osd: string }, pools: Set<string>, readPools: Set<string>): boolean {
  if ((current['mon'] ?? '') !== wanted.mon) return false;
  const osd = current['osd'] ?? '';
  return (
    osd.includes('class-read object_prefix rbd_children') &&
    [...pools].every((p) => new RegExp(`allow rwx pool=${p}(,|$)`).test(osd)) &&
    [...readPools].every((p) => pools.has(p) || new RegExp(`allow (rx|rwx|r) pool=${p}(,|$)|profile rbd(-read-only)? pool=${p}(,|$)`).test(osd))
  );
}

/** Keeps grants the user already had (e.g. `allow rx pool=images`) and adds what is missing. */
function mergeOsdCaps(current: string, wanted: string): string {
  const parts = new Set(current.split(',').map((s) => s.trim()).filter(Boolean));
  for (const part of wanted.split(',').map((s) => s.trim())) parts.add(part);
  return [...parts].join(', ');
}

async function run(command: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync(command, args, { timeout: commandTimeoutMs });
    return stdout;
  } catch (error) {
    const e = error as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new Error(`${command} not found: install ceph-common (apt-get install ceph-common)`);
    throw new Error(`${command} ${args.join(' ')} failed: ${(e.stderr ?? e.message).trim()}`);
  }
}
