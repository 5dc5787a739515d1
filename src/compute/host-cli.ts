/**
 * `pumice host rebalance HOST`: fail-back, the servers whose home is HOST
 * live-migrated back to it one at a time (src/compute/failback.ts).
 *
 * `pumice host evacuate HOST [--target HOST] [--host-powered-off] [--wait]`:
 * evacuates every server of a dead compute host (Nova's `nova host-evacuate`),
 * beside a running cloud (it opens the configured database: PostgreSQL, or DATA_DIR/pumice.db; SQLite in WAL mode lets
 * both work). Each server gets the same checks, fence and migration record as
 * `openstack server evacuate`; the destination hosts' agents do the work.
 * `--wait` prints each server's progress until all are done or failed.
 */
import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/config.ts';
import { openCloudDatabase, type Db } from '../db/db.ts';
import { PumiceError } from '../errors.ts';
import { TaskQueue } from '../tasks/queue.ts';
import { systemAuth } from './evacuation.ts';
import { rebalance } from './failback.ts';
import { computeParts } from './role.ts';
import { parseArgsMessage } from '../cli/args.ts';

const usage = `usage: pumice host evacuate HOST [options]
       pumice host rebalance HOST [--data-dir DIR] [--config FILE]

rebalance: live-migrates the servers built on HOST (their home) that run
elsewhere back to it, one at a time, once HOST has been up [compute]
failback_healthy_seconds and while no compute host is down.

evacuate:

Evacuates every server of compute host HOST, which must be down (its heartbeat
lost, or forced down: openstack compute service set --down HOST nova-compute).
Each is fenced before it is rebuilt on another host (see the README, "HA and evacuation").

options:
  --target HOST        rebuild on this host (default: the scheduler chooses, per server)
  --host-powered-off   you vouch that HOST is powered off: the Ceph blocklist is skipped
  --wait               show each server's progress until every evacuation has ended
  --data-dir DIR       data directory (default: ./data, or $PUMICE_DATA_DIR)
  --config FILE        the cloud's configuration

example:
  pumice host evacuate compute-2 --wait --config /etc/pumice/pumice.conf --data-dir /var/lib/pumice
`;

const waitTimeoutMs = 30 * 60_000;

export async function runHostCli(args: string[], out: (text: string) => void = (t) => process.stdout.write(t)): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: { target: { type: 'string' }, 'host-powered-off': { type: 'boolean' }, wait: { type: 'boolean' }, 'data-dir': { type: 'string' }, config: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (error) {
    out(`${parseArgsMessage(error, usage)}\n${usage}`);
    return 2;
  }
  const [command, host] = parsed.positionals;
  if (parsed.values.help) {
    out(usage);
    return 0;
  }
  if ((command !== 'evacuate' && command !== 'rebalance') || !host || parsed.positionals.length !== 2) {
    out(usage);
    return 2;
  }
  const dataDir = resolve(parsed.values['data-dir'] ?? process.env['PUMICE_DATA_DIR'] ?? './data');
  const config = loadConfig(parsed.values.config ?? process.env['PUMICE_CONFIG'] ?? null, dataDir);
  let db: Db;
  try {
    db = openCloudDatabase(config.database.connection, dataDir);
  } catch (error) {
    out(`${(error as Error).message}\n`);
    return 1;
  }
  try {
    const queue = new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 1, attemptsMax: 3, pollIntervalMs: 60_000 });
    const refuse = () => {
      throw new Error('not used by evacuation');
    };
    const parts = computeParts(db, config, queue, { image: refuse, volume: refuse });
    if (command === 'rebalance') {
      const result = await rebalance(host, { db, hosts: parts.hosts, servers: parts.servers, healthySeconds: config.compute.failback_healthy_seconds, out: (line) => out(`${line}\n`), migrationTimeoutMs: waitTimeoutMs });
      out(`${result.moved} server(s) moved home to ${host}${result.notMoved ? `; ${result.notMoved} not (see above)` : ''}\n`);
      return result.notMoved > 0 ? 1 : 0;
    }
    const servers = db.all<{ id: string; name: string }>('SELECT id, name FROM servers WHERE host = ? AND deleted_at IS NULL ORDER BY created_at', host);
    if (servers.length === 0) {
      out(`host ${host} has no servers: nothing to evacuate\n`);
      return 0;
    }
    const started: { id: string; name: string; migrationId: number }[] = [];
    let refused = 0;
    for (const server of servers) {
      try {
        const result = parts.servers.evacuate(systemAuth(), server.id, { host: parsed.values.target ?? null, hostPoweredOff: parsed.values['host-powered-off'] === true, reason: `pumice host evacuate ${host}` }, `req-${randomUUID()}`);
        started.push({ ...server, migrationId: result.migration.id });
        out(`${server.id} ${server.name}: evacuating to ${result.migration.dest_compute} (migration ${result.migration.uuid})\n`);
      } catch (error) {
        refused++;
        out(`${server.id} ${server.name}: refused: ${error instanceof PumiceError ? error.message : (error as Error).message}\n`);
      }
    }
    if (!parsed.values.wait || started.length === 0) return refused > 0 ? 1 : 0;
    const deadline = Date.now() + waitTimeoutMs;
    const shown = new Map<string, string>();
    for (;;) {
      let pending = 0;
      let failed = 0;
      for (const s of started) {
        const migration = parts.servers.migrations.get(s.migrationId)!;
        const row = db.get<{ task_state: string | null; vm_state: string }>('SELECT task_state, vm_state FROM servers WHERE id = ?', s.id);
        const steps: Partial<Record<string, number>> = { accepted: 1, fenced: 2, rebuilding: 3, done: 4, failed: 4 };
        const step = steps[migration.status] ?? 0;
        const bar = `[${'#'.repeat(step * 5).padEnd(20, '.')}]`;
        const line = `${bar} ${s.name}: ${migration.status}${row?.task_state ? ` (${row.task_state})` : ''}${migration.status === 'failed' ? `: ${migration.reason ?? ''}` : ''}`;
        if (shown.get(s.id) !== line) {
          out(`${line}\n`);
          shown.set(s.id, line);
        }
        if (migration.status === 'failed') failed++;
        else if (migration.status !== 'done') pending++;
      }
      if (pending === 0) {
        out(`${started.length - failed} of ${servers.length} server(s) evacuated from ${host}${failed + refused ? `; ${failed + refused} not (see above)` : ''}\n`);
        return failed + refused > 0 ? 1 : 0;
      }
      if (Date.now() > deadline) {
        out(`still running after ${waitTimeoutMs / 60_000} min: follow with openstack server migration list --host ${host}\n`);
        return 1;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  } finally {
    db.close();
  }
}
