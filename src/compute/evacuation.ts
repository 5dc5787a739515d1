/**
 * Evacuation: rebuilding the servers of a dead compute host on another host,
 * after making sure the dead host can no longer write (fencing).
 *
 * The pieces:
 * - `Migrations`: the migration records (`os-migrations`, type `evacuation`).
 *   A record is also the evacuation's journal: `accepted` → `fenced` (the
 *   source cannot write; the volumes' attachments moved to the destination)
 *   → `rebuilding` (the server row names the destination) → `done`, or
 *   `failed` with the reason. The task re-run after a crash continues from
 *   the status it finds.
 * - `RbdFence`: blocklists the Ceph client instances that had a server's RBD
 *   disks open (the addresses recorded when the guest opened them, the
 *   images' current watchers and exclusive-lock owners) and breaks the
 *   exclusive locks, so a partitioned host's QEMU gets EBLOCKLISTED on its
 *   next write and the new guest takes the lock. Local (NBD) volumes are
 *   fenced by deleting the old host's attachments: the export's secret is
 *   revoked and its live connections are cut (`nbd/exports.ts`).
 * - `EvacuationMonitor`: the automatic mode (`[compute] auto_evacuate`),
 *   Masakari's job inside the product, with a guard against correlated
 *   failures.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import type { Db } from '../db/db.ts';
import type { AuthContext } from '../http/router.ts';
import type { ComputeHosts, ComputeServiceRow } from './hosts.ts';
import { computeBinary } from './hosts.ts';
import { nowIso, type ServerRow } from './model.ts';

const execFileAsync = promisify(execFile);

/**
 * Evacuation: accepted → fenced → rebuilding → done | failed. Live migration (Nova's words):
 * queued → preparing (target) → running (source copies memory) → post-migrating → completed, or
 * cancelling → cancelled (abort) / error (the guest stays on the source).
 */
export type MigrationStatus = 'accepted' | 'fenced' | 'rebuilding' | 'done' | 'failed' | 'queued' | 'preparing' | 'running' | 'post-migrating' | 'completed' | 'cancelling' | 'cancelled' | 'error'
  // Cold migration (Nova's names): pre-migrating → migrating (source stopped) → post-migrating → finished (VERIFY_RESIZE), then confirming → confirmed or reverting → reverted.
  | 'pre-migrating' | 'migrating' | 'finished' | 'confirming' | 'confirmed' | 'reverting' | 'reverted';

/** Cold-migration statuses in which the server is still between hosts (or waiting for confirm/revert). */
export const coldMigrationOpenStatuses: readonly MigrationStatus[] = ['pre-migrating', 'migrating', 'post-migrating', 'finished', 'confirming', 'reverting'];

/** Live-migration statuses in which the migration is still under way. */
export const liveMigrationActiveStatuses: readonly MigrationStatus[] = ['queued', 'preparing', 'running', 'post-migrating', 'cancelling'];

export interface MigrationRow {
  id: number;
  uuid: string;
  server_id: string;
  project_id: string;
  user_id: string;
  migration_type: string;
  source_compute: string | null;
  dest_compute: string | null;
  status: MigrationStatus;
  /** JSON FenceRecord once the source is fenced. */
  fence: string | null;
  reason: string | null;
  automatic: number;
  created_at: string;
  updated_at: string;
  source_cleaned_at: string | null;
  memory_total_bytes: number | null;
  memory_processed_bytes: number | null;
  memory_remaining_bytes: number | null;
  /** Live migration: `host:port` the target's QEMU listens on. */
  dest_address: string | null;
  /** Live migration: JSON { bdmId: attachmentId } of the attachments made for the target host. */
  dest_attachments: string | null;
}

/** What a fence did, kept in the migration record (the returning host undoes the blocklist entries). */
export interface FenceRecord {
  /** Ceph client addresses blocklisted, with the image that named them. */
  blocklisted: { address: string; image: string }[];
  /** Exclusive locks broken (`pool/image lock-id locker`). */
  locksBroken: string[];
  /** Attachments of the old host deleted (their NBD exports revoked, connections cut). */
  attachmentsRevoked: { volumeId: string; attachmentId: string }[];
  /** Set when the operator said the host is powered off and the RBD blocklist was skipped. */
  skippedBecause: string | null;
  /** The Ceph user that fenced (for the returning host's unfence). */
  cephUser: string | null;
  at: string;
}

export class Migrations {
  constructor(readonly db: Db) {}

  create(server: ServerRow, dest: string, auth: { userId: string }, automatic: boolean): MigrationRow {
    const now = nowIso();
    const uuid = randomUUID();
    this.db.run(
      `INSERT INTO migrations (uuid, server_id, project_id, user_id, migration_type, source_compute, dest_compute, status, automatic, created_at, updated_at)
       VALUES (?, ?, ?, ?, 'evacuation', ?, ?, 'accepted', ?, ?, ?)`,
      uuid, server.id, server.project_id, auth.userId, server.host, dest, automatic ? 1 : 0, now, now,
    );
    return this.db.get<MigrationRow>('SELECT * FROM migrations WHERE uuid = ?', uuid)!;
  }

  /** A live migration of `server` to `dest`, `queued`. */
  createLive(server: ServerRow, dest: string, auth: { userId: string }): MigrationRow {
    const now = nowIso();
    const uuid = randomUUID();
    this.db.run(
      `INSERT INTO migrations (uuid, server_id, project_id, user_id, migration_type, source_compute, dest_compute, status, automatic, created_at, updated_at)
       VALUES (?, ?, ?, ?, 'live-migration', ?, ?, 'queued', 0, ?, ?)`,
      uuid, server.id, server.project_id, auth.userId, server.host, dest, now, now,
    );
    return this.db.get<MigrationRow>('SELECT * FROM migrations WHERE uuid = ?', uuid)!;
  }

  /** A cold migration of `server` to `dest`, `pre-migrating`. */
  createCold(server: ServerRow, dest: string, auth: { userId: string }): MigrationRow {
    const now = nowIso();
    const uuid = randomUUID();
    this.db.run(
      `INSERT INTO migrations (uuid, server_id, project_id, user_id, migration_type, source_compute, dest_compute, status, automatic, created_at, updated_at)
       VALUES (?, ?, ?, ?, 'migration', ?, ?, 'pre-migrating', 0, ?, ?)`,
      uuid, server.id, server.project_id, auth.userId, server.host, dest, now, now,
    );
    return this.db.get<MigrationRow>('SELECT * FROM migrations WHERE uuid = ?', uuid)!;
  }

  /** The cold migration of the server that is not confirmed or reverted yet (one at a time per server). */
  coldOpen(serverId: string): MigrationRow | undefined {
    return this.db.get<MigrationRow>(
      `SELECT * FROM migrations WHERE server_id = ? AND migration_type = 'migration' AND status IN (${coldMigrationOpenStatuses.map(() => '?').join(',')}) ORDER BY id DESC LIMIT 1`,
      serverId, ...coldMigrationOpenStatuses,
    );
  }

  /** A live migration of the server that has not finished (one at a time per server). */
  liveInProgress(serverId: string): MigrationRow | undefined {
    return this.db.get<MigrationRow>(
      `SELECT * FROM migrations WHERE server_id = ? AND migration_type = 'live-migration' AND status IN (${liveMigrationActiveStatuses.map(() => '?').join(',')}) ORDER BY id DESC LIMIT 1`,
      serverId, ...liveMigrationActiveStatuses,
    );
  }

  /** QEMU's memory counters, as the source last read them. */
  recordProgress(id: number, memory: { totalBytes: number; processedBytes: number; remainingBytes: number }): void {
    this.db.run('UPDATE migrations SET memory_total_bytes = ?, memory_processed_bytes = ?, memory_remaining_bytes = ?, updated_at = ? WHERE id = ?', memory.totalBytes, memory.processedBytes, memory.remainingBytes, nowIso(), id);
  }

  /** The target's side, recorded as it is made (so a rollback finds every attachment). */
  recordTarget(id: number, target: { address?: string | null; attachments?: Record<string, string> }): void {
    if (target.address !== undefined) this.db.run('UPDATE migrations SET dest_address = ?, updated_at = ? WHERE id = ?', target.address, nowIso(), id);
    if (target.attachments !== undefined) this.db.run('UPDATE migrations SET dest_attachments = ?, updated_at = ? WHERE id = ?', JSON.stringify(target.attachments), nowIso(), id);
  }

  get(id: number): MigrationRow | undefined {
    return this.db.get<MigrationRow>('SELECT * FROM migrations WHERE id = ?', id);
  }

  /** Moves a record on; `from` guards against a stale writer. Returns false when the record moved elsewhere. */
  advance(id: number, from: readonly MigrationStatus[], to: MigrationStatus, changes: { fence?: FenceRecord; reason?: string | null } = {}): boolean {
    const sets = ['status = ?', 'updated_at = ?'];
    const params: (string | number | null)[] = [to, nowIso()];
    if (changes.fence) {
      sets.push('fence = ?');
      params.push(JSON.stringify(changes.fence));
    }
    if (changes.reason !== undefined) {
      sets.push('reason = ?');
      params.push(changes.reason);
    }
    return this.db.run(`UPDATE migrations SET ${sets.join(', ')} WHERE id = ? AND status IN (${from.map(() => '?').join(',')})`, ...params, id, ...from).changes === 1;
  }

  /** An evacuation of the server that has not finished (one at a time per server). */
  inProgress(serverId: string): MigrationRow | undefined {
    return this.db.get<MigrationRow>("SELECT * FROM migrations WHERE server_id = ? AND migration_type = 'evacuation' AND status IN ('accepted', 'fenced', 'rebuilding') ORDER BY id DESC LIMIT 1", serverId);
  }

  /** Finished evacuations away from `host` whose old guest the host has not cleaned up yet. */
  uncleanedFrom(host: string): MigrationRow[] {
    return this.db.all<MigrationRow>("SELECT * FROM migrations WHERE source_compute = ? AND status = 'done' AND source_cleaned_at IS NULL ORDER BY id", host);
  }

  markSourceCleaned(id: number): void {
    this.db.run('UPDATE migrations SET source_cleaned_at = ?, updated_at = ? WHERE id = ?', nowIso(), nowIso(), id);
  }

  list(filter: { serverId?: string | null; host?: string | null; status?: string | null; migrationType?: string | null; limit: number }): MigrationRow[] {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (filter.serverId) {
      where.push('server_id = ?');
      params.push(filter.serverId);
    }
    if (filter.host) {
      where.push('(source_compute = ? OR dest_compute = ?)');
      params.push(filter.host, filter.host);
    }
    if (filter.status) {
      where.push('status = ?');
      params.push(filter.status);
    }
    if (filter.migrationType) {
      where.push('migration_type = ?');
      params.push(filter.migrationType);
    }
    return this.db.all<MigrationRow>(`SELECT * FROM migrations ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`, ...params, filter.limit);
  }
}

/** A Ceph client of the compute host: the `ceph`/`rbd` CLIs run with it. */
export interface CephCli {
  user: string;
  confPath: string;
  keyringPath: string;
}

/** A fence that could not be made; the message names the cause and the fix. Evacuation stops before anything is rebuilt. */
export class FenceError extends Error {
  constructor(message: string, readonly kind: 'Caps' | 'Ceph' | 'BlockStorage') {
    super(message);
    this.name = 'FenceError';
  }
}

const cliTimeoutMs = 30_000;
/** Rounds of list-blocklist-break per image before a fence gives up (a lock taken again each time). */
const lockRoundsMax = 5;

function cliArgs(client: CephCli): string[] {
  return ['--id', client.user, '-c', client.confPath, '--keyring', client.keyringPath];
}

async function run(command: 'ceph' | 'rbd', client: CephCli, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync(command, [...cliArgs(client), ...args], { timeout: cliTimeoutMs, maxBuffer: 4 << 20 });
    return stdout;
  } catch (error) {
    const e = error as Error & { stderr?: string };
    throw new Error(`${command} ${args.join(' ')}: ${(e.stderr ?? e.message).trim()}`);
  }
}

/** Ceph client addresses (`ip:port/nonce`) that have an RBD image open now: its watchers. */
export async function rbdWatchers(client: CephCli, pool: string, image: string): Promise<string[]> {
  const out = JSON.parse(await run('rbd', client, ['status', '--format', 'json', `${pool}/${image}`])) as { watchers?: { address?: string }[] };
  return (out.watchers ?? []).map((w) => normalizeAddress(String(w.address ?? ''))).filter(Boolean);
}

interface Locker {
  id: string;
  locker: string;
  address: string;
}

async function rbdLockers(client: CephCli, pool: string, image: string): Promise<Locker[]> {
  const parsed = JSON.parse((await run('rbd', client, ['lock', 'ls', '--format', 'json', `${pool}/${image}`])) || '[]') as unknown;
  // Pacific prints a list; older releases an object keyed by lock id.
  if (Array.isArray(parsed)) return (parsed as Locker[]).map((l) => ({ ...l, address: normalizeAddress(l.address) }));
  return Object.entries(parsed as Record<string, { locker: string; address: string }>).map(([id, l]) => ({ id, locker: l.locker, address: normalizeAddress(l.address) }));
}

/** `v1:127.0.0.1:0/123` or `127.0.0.1:0/123` → `127.0.0.1:0/123` (the form `ceph osd blocklist` takes). */
function normalizeAddress(address: string): string {
  return address.trim().replace(/^(v1|v2|any):/, '');
}

function isCapsError(message: string): boolean {
  return /EACCES|Permission denied|access denied|\(13\)|EPERM|\(1\) Operation not permitted/i.test(message);
}

export interface RbdDiskRef {
  pool: string;
  image: string;
  /** Addresses recorded when the old host's guest opened the disk. */
  recordedClients: string[];
  /**
   * Also open by other servers (a multiattach volume attached elsewhere): its watchers and lock
   * owners may be those servers' guests, so only the recorded clients of the old guest are fenced.
   */
  sharedWithOthers?: boolean;
}

/**
 * Fences RBD disks: every client address that had one of them open (recorded at
 * open, watching now, or owning the exclusive lock) is blocklisted for
 * `expireS`, then the exclusive locks are broken (with `blocklist: false`, for a
 * host the operator says is powered off, only the locks are broken, so the new
 * guest is not held up by a dead owner's lock). Idempotent: blocklisting an
 * address twice and breaking a lock that is gone both succeed. Throws
 * FenceError (caps named, with the fix) when the user may not blocklist.
 */
export async function fenceRbdDisks(client: CephCli, disks: RbdDiskRef[], expireS: number, log: (m: string) => void, options: { blocklist: boolean } = { blocklist: true }): Promise<Pick<FenceRecord, 'blocklisted' | 'locksBroken'>> {
  // Three rounds, each over every disk at once (every CLI call costs a Ceph connection: sequential calls made the fence the slow part).
  // 1. Who has each image open: recorded clients, watchers, exclusive-lock owners.
  const seen = await Promise.all(disks.map(async (disk) => {
    const spec = `${disk.pool}/${disk.image}`;
    try {
      const [watchers, lockers] = await Promise.all([rbdWatchers(client, disk.pool, disk.image), rbdLockers(client, disk.pool, disk.image)]);
      // A volume other servers use too: its watchers and lock owners may be their guests; only the old guest's recorded clients are fenced.
      return { disk, spec, watchers: disk.sharedWithOthers ? [] : watchers, lockers: disk.sharedWithOthers ? [] : lockers };
    } catch (error) {
      const message = (error as Error).message;
      if (/No such file|\(2\)/.test(message)) return null; // the image is gone: nothing can write to it
      throw new FenceError(`Fencing could not read who has RBD image ${spec} open (client.${client.user}): ${message}`, 'Ceph');
    }
  }));
  // 2. Blocklist every address once.
  const blocklisted: FenceRecord['blocklisted'] = [];
  const blocked = new Set<string>();
  const blocklistOne = async (address: string, spec: string) => {
    if (blocked.has(address)) return;
    blocked.add(address);
    try {
      await run('ceph', client, ['osd', 'blocklist', 'add', address, String(expireS)]);
    } catch (error) {
      blocked.delete(address);
      const message = (error as Error).message;
      if (isCapsError(message)) {
        throw new FenceError(
          `Evacuation refused: client.${client.user} may not blocklist Ceph clients, so the old host could keep writing to ${spec} (${message}). ` +
            `Give it the caps: ceph auth caps client.${client.user} mon 'profile rbd' osd '<its current osd caps>' (pumice ceph setup grants profile rbd).`,
          'Caps',
        );
      }
      throw new FenceError(`Blocklisting the old host's Ceph client ${address} (it had ${spec} open) failed: ${message}`, 'Ceph');
    }
    blocklisted.push({ address, image: spec });
    log(`evacuation: blocklisted Ceph client ${address} (it had ${spec} open) for ${expireS} s`);
  };
  if (options.blocklist) {
    const targets = new Map<string, string>();
    for (const entry of seen) {
      if (!entry) continue;
      for (const address of [...entry.disk.recordedClients.map(normalizeAddress), ...entry.watchers, ...entry.lockers.map((l) => l.address)]) {
        if (address && !targets.has(address)) targets.set(address, entry.spec);
      }
    }
    await Promise.all([...targets].map(([address, spec]) => blocklistOne(address, spec)));
  }
  // 3. Break the exclusive locks, so the new guest takes them at once (its user may not be allowed to break a
  //    dead owner's lock itself). Listed again after the blocklist: a live old client may have taken a lock
  //    since round 1 (a write it had cached); a new owner is blocklisted too, until a listing finds none.
  const locksBroken: string[] = [];
  await Promise.all(seen.map(async (entry) => {
    if (!entry || entry.disk.sharedWithOthers) return;
    for (let round = 1; ; round++) {
      const lockers = await rbdLockers(client, entry.disk.pool, entry.disk.image).catch((error: Error) => {
        if (/No such file|\(2\)/.test(error.message)) return [] as Locker[];
        throw new FenceError(`Fencing could not list the locks of RBD image ${entry.spec}: ${error.message}`, 'Ceph');
      });
      if (lockers.length === 0) return;
      if (round > lockRoundsMax) throw new FenceError(`The exclusive lock of ${entry.spec} was taken again ${lockRoundsMax} times while it was being fenced (by ${lockers.map((l) => l.address).join(', ')}): evacuation stopped; retry it.`, 'Ceph');
      for (const lock of lockers) {
        if (options.blocklist) await blocklistOne(lock.address, entry.spec);
        try {
          // Without a blocklist (the operator vouched the host is off), librbd must not blocklist on break either: the user may lack the caps.
          // (With it, librbd blocklists the owner again on break: with our expiry, not its 1 h default.)
          const breakOptions = options.blocklist ? [`--rbd_blocklist_expire_seconds=${expireS}`] : ['--rbd_blocklist_on_break_lock=false'];
          await run('rbd', client, [...breakOptions, 'lock', 'rm', entry.spec, lock.id, lock.locker]);
          locksBroken.push(`${entry.spec} ${lock.id} ${lock.locker}`);
        } catch (error) {
          const message = (error as Error).message;
          // Already released (librbd of the dead client, or a race with another fence): fine.
          if (!/No such file|\(2\)|not found|ENOENT/.test(message)) throw new FenceError(`Breaking the exclusive lock of ${entry.spec} held by ${lock.locker} failed: ${message}`, 'Ceph');
        }
      }
    }
  }));
  return { blocklisted, locksBroken };
}

/** An address no Ceph client has (port 0 on 127.0.0.254): what the blocklist probe adds, for a second. */
const blocklistProbeAddress = '127.0.0.254:0/1';

/**
 * Whether `client` may blocklist Ceph clients, which the fence of an evacuation needs (`mon 'profile
 * rbd'`, or `allow command "osd blocklist"`): adds a blocklist entry for an address no client has,
 * expiring after 1 s (the only way to know, as a user may not read its own caps). Returns null when
 * it may; otherwise the failure, with `capsMissing` when Ceph said EACCES/EPERM (anything else:
 * the cluster could not be asked).
 */
export async function blocklistProbe(client: CephCli): Promise<{ capsMissing: boolean; message: string } | null> {
  try {
    await run('ceph', client, ['--connect-timeout', '10', 'osd', 'blocklist', 'add', blocklistProbeAddress, '1']);
    return null;
  } catch (error) {
    const message = (error as Error).message;
    return { capsMissing: isCapsError(message), message };
  }
}

/**
 * Removes the blocklist entries of a fence (the fenced host has destroyed its old guests). Entries
 * already gone are fine. `mon 'profile rbd'` may add entries but not remove them: then they are left
 * to expire ([compute] evacuation_blocklist_expire_s), which is harmless (an address names one
 * client instance; a restarted QEMU gets a new one). Returns how many were removed.
 */
export async function unfence(client: CephCli, addresses: string[], log: (m: string) => void): Promise<number> {
  let removed = 0;
  for (const address of addresses) {
    try {
      await run('ceph', client, ['osd', 'blocklist', 'rm', address]);
      removed++;
      log(`evacuation: blocklist entry ${address} removed (its host destroyed the evacuated guest)`);
    } catch (error) {
      const message = (error as Error).message;
      if (isCapsError(message)) log(`evacuation: blocklist entry ${address} stays until it expires: client.${client.user} may add entries but not remove them (mon 'profile rbd')`);
      else log(`evacuation: removing blocklist entry ${address} failed (it expires by itself): ${message}`);
    }
  }
  return removed;
}

export interface EvacuationMonitorOptions {
  db: Db;
  hosts: ComputeHosts;
  /** Reads the options each pass (a reload takes effect). */
  settings: () => { enabled: boolean; graceS: number; hostsMax: number; downFractionMax: number; serviceDownTimeS: number };
  /** Evacuates one server as the system (admin) with the reason recorded; throws with the refusal. */
  evacuate: (serverId: string, reason: string) => void;
  log: (m: string) => void;
  intervalMs?: number;
  now?: () => number;
}

/** The outcome of one monitor pass, for tests and the log. */
export interface MonitorPass {
  down: string[];
  evacuatedHosts: string[];
  refused: { host: string; reason: string }[];
  guard: string | null;
}

/**
 * Automatic evacuation (Masakari-like) in the api role. A host is evacuated
 * when its heartbeat is older than service_down_time + the grace period and
 * it was not forced down by an operator (maintenance). Guard: nothing is done
 * while more than `downFractionMax` of the hosts are down (that is a
 * partition of the control plane, not host deaths), and at most `hostsMax`
 * hosts are evacuated at once. Every decision is recorded: on the service
 * (state_reason, shown by `openstack compute service list --long` as the
 * disabled reason is not touched) and in the log; every evacuation in the
 * server's instance actions with its reason.
 */
export class EvacuationMonitor {
  private timer: NodeJS.Timeout | undefined;
  private readonly now: () => number;

  constructor(private readonly o: EvacuationMonitorOptions) {
    this.now = o.now ?? Date.now;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      try {
        this.pass();
      } catch (error) {
        this.o.log(`auto-evacuate: pass failed: ${(error as Error).message}`);
      }
    }, this.o.intervalMs ?? 2000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One decision pass. */
  pass(): MonitorPass {
    const s = this.o.settings();
    const result: MonitorPass = { down: [], evacuatedHosts: [], refused: [], guard: null };
    if (!s.enabled) return result;
    const services = this.o.hosts.services({ binary: computeBinary });
    const nowMs = this.now();
    const down = services.filter((svc) => !this.o.hosts.isUp(svc, nowMs));
    result.down = down.map((d) => d.host);
    if (down.length === 0) return result;
    if (services.length > 0 && down.length / services.length > s.downFractionMax) {
      result.guard = `${down.length} of ${services.length} compute hosts are down (more than auto_evacuate_down_fraction_max = ${s.downFractionMax}): this looks like a partition of the control plane, not host deaths; no automatic evacuation. Evacuate by hand once you know which hosts are dead.`;
      for (const svc of down) this.note(svc, `auto-evacuate held back: ${result.guard}`);
      return result;
    }
    // Hosts with an evacuation still running count against the limit.
    const inFlight = new Set(this.o.db.all<{ source_compute: string }>("SELECT DISTINCT source_compute FROM migrations WHERE automatic = 1 AND status IN ('accepted', 'fenced', 'rebuilding')").map((r) => r.source_compute));
    for (const svc of down) {
      if (svc.forced_down) {
        // An operator forced it down: maintenance, or a manual evacuation. Not ours to act on.
        continue;
      }
      const lastMs = svc.heartbeat_at ? Date.parse(svc.heartbeat_at) : 0;
      const downForS = (nowMs - lastMs) / 1000 - s.serviceDownTimeS;
      if (downForS < s.graceS) continue;
      // A server whose automatic evacuation failed since the host went down is not retried in a loop: the failure is on it, for an operator.
      const servers = this.o.db.all<{ id: string }>(
        `SELECT s.id FROM servers s WHERE s.host = ? AND s.deleted_at IS NULL AND s.vm_state IN ('active', 'stopped', 'error') AND s.task_state IS NULL
           AND NOT EXISTS (SELECT 1 FROM migrations m WHERE m.server_id = s.id AND m.automatic = 1 AND m.status = 'failed' AND m.created_at >= ?)`,
        svc.host, svc.heartbeat_at ?? '',
      );
      if (servers.length === 0) continue;
      if (!inFlight.has(svc.host) && inFlight.size >= s.hostsMax) {
        const reason = `auto-evacuate waits: ${inFlight.size} host(s) are being evacuated already (auto_evacuate_hosts_max = ${s.hostsMax})`;
        result.refused.push({ host: svc.host, reason });
        this.note(svc, reason);
        continue;
      }
      inFlight.add(svc.host);
      const reason = `automatic evacuation: compute host ${svc.host} has sent no heartbeat since ${svc.heartbeat_at ?? 'ever'} (down for ${Math.round(downForS + s.serviceDownTimeS)} s > service_down_time ${s.serviceDownTimeS} s + auto_evacuate_grace_s ${s.graceS} s)`;
      this.note(svc, reason);
      for (const server of servers) {
        try {
          this.o.evacuate(server.id, reason);
          this.o.log(`auto-evacuate: server ${server.id} of ${svc.host}: ${reason}`);
        } catch (error) {
          result.refused.push({ host: svc.host, reason: `server ${server.id}: ${(error as Error).message}` });
          this.o.log(`auto-evacuate: server ${server.id} of ${svc.host} not evacuated: ${(error as Error).message}`);
        }
      }
      result.evacuatedHosts.push(svc.host);
    }
    return result;
  }

  private note(svc: ComputeServiceRow, reason: string): void {
    if (svc.state_reason === reason) return;
    this.o.hosts.markDown(computeBinary, svc.host, reason.slice(0, 1000));
  }
}

/** The identity automatic evacuations act as (recorded as the actions' user). */
export function systemAuth(): AuthContext {
  return {
    tokenId: '', userId: 'pumice-auto-evacuate', userName: 'pumice-auto-evacuate', userDomainId: 'default', projectId: null, projectName: null,
    projectDomainId: null, domainId: null, roles: ['admin'], isAdmin: true, expiresAt: '', issuedAt: '', methods: [], auditId: '',
  };
}
