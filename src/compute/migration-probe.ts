/**
 * Cross-host reachability for live migration. Each compute agent listens on a
 * probe port of its [libvirt] live_migration_inbound_addr (the address its
 * QEMU takes incoming migrations on; QEMU picks a free port per migration, so
 * the probe port stands for "a TCP connection from another host reaches this
 * address") and, every node report, connects to the probe port of every other
 * up compute host with a short timeout. Both are kept in compute_nodes.report
 * ({ migration_probe, migration_reach }); `pumice doctor` reads them.
 */
import net from 'node:net';
import type { MigrationCheck } from './migration-doctor.ts';

/** What an agent records: where it listens, and what it reached at its last probe. */
export interface MigrationProbeReport {
  migration_probe?: { address: string; port: number };
  migration_reach?: Record<string, { ok: boolean; address: string; port: number; detail: string; checked_at: string }>;
}

/** A TCP listener that accepts and closes at once: enough for another host's connect to succeed. */
export class MigrationProbeListener {
  private server: net.Server | null = null;

  /** Listens on `address`, a free port; returns it. */
  async start(address: string): Promise<{ address: string; port: number }> {
    const server = net.createServer((socket) => socket.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, address, () => resolve());
    });
    server.unref();
    this.server = server;
    return { address, port: (server.address() as net.AddressInfo).port };
  }

  /** Stops listening; already stopped is fine. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** Connects to `address:port` within `timeoutMs`: null when it connected, else why not. */
export function probeTcp(address: string, port: number, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: address, port });
    const done = (problem: string | null) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(problem);
    };
    const timer = setTimeout(() => done(`no answer within ${timeoutMs} ms`), timeoutMs);
    socket.once('connect', () => done(null));
    socket.once('error', (error: NodeJS.ErrnoException) => done(error.code ?? error.message));
  });
}

/** Probes each target's listener (all at once, each bounded by `timeoutMs`). */
export async function probeMigrationTargets(targets: { host: string; address: string; port: number }[], timeoutMs: number, nowIso = () => new Date().toISOString()): Promise<NonNullable<MigrationProbeReport['migration_reach']>> {
  const reach: NonNullable<MigrationProbeReport['migration_reach']> = {};
  await Promise.all(targets.map(async (t) => {
    const problem = await probeTcp(t.address, t.port, timeoutMs);
    reach[t.host] = { ok: problem === null, address: t.address, port: t.port, detail: problem ?? 'connected', checked_at: nowIso() };
  }));
  return reach;
}

/** Parses compute_nodes.report; a missing or foreign report is empty. */
export function parseProbeReport(text: string | null | undefined): MigrationProbeReport {
  try {
    const parsed = JSON.parse(text || '{}') as unknown;
    return parsed && typeof parsed === 'object' ? (parsed as MigrationProbeReport) : {};
  } catch {
    return {};
  }
}

/**
 * Doctor's check over every ordered pair (source, target) of up compute hosts: the source's last
 * probe reached the target's current probe listener. A failed probe fails the check, naming the
 * pair, the address and the fix; a pair not probed yet (a host just started) is a warning.
 */
export function reachabilityCheck(nodes: { host: string; report: MigrationProbeReport }[]): MigrationCheck {
  const failed: string[] = [];
  const pending: string[] = [];
  let pairs = 0;
  for (const target of nodes) {
    const listener = target.report.migration_probe;
    for (const source of nodes) {
      if (source.host === target.host) continue;
      pairs++;
      const seen = source.report.migration_reach?.[target.host];
      if (!listener || !seen || seen.port !== listener.port || seen.address !== listener.address) pending.push(`${source.host} → ${target.host}`);
      else if (!seen.ok) failed.push(`${source.host} cannot reach ${target.host}'s migration address ${seen.address}:${seen.port} (${seen.detail}, ${seen.checked_at})`);
    }
  }
  const name = 'live migration: hosts reach each other';
  if (failed.length > 0) {
    return { name, ok: false, detail: `${failed.join('; ')}. Open TCP from the source hosts to each target's [libvirt] live_migration_inbound_addr (QEMU takes incoming migrations on a free port there), or set that option to an address the other compute hosts reach.` };
  }
  if (pairs === 0) return { name, ok: true, detail: 'fewer than two compute hosts are up: nothing to probe' };
  if (pending.length > 0) return { name, ok: true, detail: `warning: not probed yet (the agents probe at start and every node report, 60 s): ${pending.join(', ')}; ${pairs - pending.length} of ${pairs} host pairs reach each other` };
  return { name, ok: true, detail: `${pairs} host pairs: every up compute host reaches the others' migration address` };
}
