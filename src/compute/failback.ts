/**
 * Fail-back: servers go home (the host they were built on; evacuation and
 * live migration leave that record alone) by live migration, one at a time,
 * once the home host has been up `[compute] failback_healthy_seconds` without
 * a gap, and never while any compute host is down (a degraded cloud keeps
 * what it has). `pumice host rebalance HOST` asks for it; `[compute]
 * auto_failback` does it on its own (FailbackMonitor).
 */
import { randomUUID } from 'node:crypto';
import type { Db } from '../db/db.ts';
import { PumiceError } from '../errors.ts';
import { liveMigrationActiveStatuses, systemAuth, type MigrationRow } from './evacuation.ts';
import type { ComputeHosts } from './hosts.ts';
import { computeBinary } from './hosts.ts';
import type { ServerService } from './servers.ts';

/** Why fail-back to `home` may not start now (null: it may). Names the cause and what to wait for. */
export function failbackBlocked(hosts: ComputeHosts, home: string, healthySeconds: number, nowMs = Date.now()): string | null {
  const service = hosts.serviceByHost(computeBinary, home);
  if (!service) return `compute host ${home} is unknown: choose one from openstack compute service list --service nova-compute`;
  const status = hosts.hostStatus(home, nowMs);
  if (status !== 'UP') return `compute host ${home} is ${status === 'MAINTENANCE' ? 'disabled' : status.toLowerCase()}: fail-back needs it up and enabled`;
  const upForS = hosts.upForS(home, nowMs);
  if (upForS < healthySeconds) return `compute host ${home} has been up ${Math.floor(upForS)} s, less than [compute] failback_healthy_seconds = ${healthySeconds}: wait ${Math.ceil(healthySeconds - upForS)} s`;
  const down = hosts.services({ binary: computeBinary }).filter((s) => !hosts.isUp(s, nowMs)).map((s) => s.host);
  if (down.length > 0) return `the cloud is degraded: compute host${down.length > 1 ? 's' : ''} ${down.join(', ')} ${down.length > 1 ? 'are' : 'is'} down; fail-back waits until every compute host is up`;
  return null;
}

/** Servers whose home is `home` that run elsewhere and could move now (ACTIVE, no task). */
export function awayFromHome(db: Db, home: string): { id: string; name: string; host: string }[] {
  return db.all<{ id: string; name: string; host: string }>(
    "SELECT id, name, host FROM servers WHERE home_host = ? AND host IS NOT NULL AND host != ? AND deleted_at IS NULL AND vm_state = 'active' AND task_state IS NULL ORDER BY created_at",
    home, home,
  );
}

/** Any live migration under way in the cloud: fail-back starts one only when none is. */
function liveMigrationRunning(db: Db): boolean {
  return db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM migrations WHERE migration_type = 'live-migration' AND status IN (${liveMigrationActiveStatuses.map(() => '?').join(',')})`, ...liveMigrationActiveStatuses)!.n > 0;
}

export interface RebalanceOptions {
  db: Db;
  hosts: ComputeHosts;
  servers: ServerService;
  healthySeconds: number;
  out: (line: string) => void;
  /** Bound on each server's migration. */
  migrationTimeoutMs: number;
}

/**
 * Moves the servers whose home is `home` back to it, one at a time, checking before each that
 * fail-back may go on. Returns how many came home and how many did not (refused or failed).
 */
export async function rebalance(home: string, o: RebalanceOptions): Promise<{ moved: number; notMoved: number }> {
  let moved = 0;
  let notMoved = 0;
  const skipped = new Set<string>();
  for (;;) {
    const candidates = awayFromHome(o.db, home).filter((s) => !skipped.has(s.id));
    if (candidates.length === 0) break;
    const blocked = failbackBlocked(o.hosts, home, o.healthySeconds);
    if (blocked) {
      o.out(`stopped: ${blocked}; ${candidates.length} server(s) still away from ${home}`);
      return { moved, notMoved: notMoved + candidates.length };
    }
    const server = candidates[0]!;
    let migration: MigrationRow;
    try {
      migration = o.servers.liveMigrate(systemAuth(), server.id, { host: home, blockMigration: 'auto' }, `req-${randomUUID()}`);
    } catch (error) {
      skipped.add(server.id);
      notMoved++;
      o.out(`${server.id} ${server.name}: refused: ${error instanceof PumiceError ? error.message : (error as Error).message}`);
      continue;
    }
    o.out(`${server.id} ${server.name}: live-migrating from ${server.host} to ${home} (migration ${migration.id})`);
    const deadline = Date.now() + o.migrationTimeoutMs;
    let last = o.servers.migrations.get(migration.id)!;
    while (liveMigrationActiveStatuses.includes(last.status) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      last = o.servers.migrations.get(migration.id)!;
    }
    if (last.status === 'completed') {
      moved++;
      o.out(`${server.id} ${server.name}: home on ${home}`);
    } else {
      skipped.add(server.id);
      notMoved++;
      o.out(`${server.id} ${server.name}: not moved: migration ${migration.id} is ${last.status}${last.reason ? ` (${last.reason})` : ''}`);
      if (liveMigrationActiveStatuses.includes(last.status)) return { moved, notMoved: notMoved + awayFromHome(o.db, home).filter((s) => !skipped.has(s.id)).length };
    }
  }
  return { moved, notMoved };
}

/**
 * `[compute] auto_failback`: every check, at most one live migration home is started, when none is
 * running anywhere and fail-back to that home may go on. Runs in the scheduler's process.
 */
export class FailbackMonitor {
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly o: { db: Db; hosts: ComputeHosts; servers: ServerService; healthySeconds: () => number; log: (message: string) => void; intervalMs: number }) {}

  start(): void {
    this.timer = setInterval(() => this.check(), this.o.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** One pass; returns the server it started moving, if any. */
  check(): string | null {
    if (liveMigrationRunning(this.o.db)) return null;
    const homes = this.o.db.all<{ home_host: string }>("SELECT DISTINCT home_host FROM servers WHERE home_host IS NOT NULL AND host != home_host AND deleted_at IS NULL AND vm_state = 'active' AND task_state IS NULL");
    for (const { home_host: home } of homes) {
      if (failbackBlocked(this.o.hosts, home, this.o.healthySeconds())) continue;
      for (const server of awayFromHome(this.o.db, home)) {
        try {
          this.o.servers.liveMigrate(systemAuth(), server.id, { host: home, blockMigration: 'auto' }, `req-${randomUUID()}`);
          this.o.log(`compute: auto_failback: live-migrating server ${server.id} from ${server.host} home to ${home}`);
          return server.id;
        } catch (error) {
          this.o.log(`compute: auto_failback: server ${server.id} cannot go home to ${home}: ${(error as Error).message}`);
        }
      }
    }
    return null;
  }
}
