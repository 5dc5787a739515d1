/**
 * `pumice doctor`'s live-migration checks: can this host receive a migration
 * (its [libvirt] live_migration_inbound_addr can be listened on), do the
 * compute hosts agree on what a guest sees (QEMU version, hence machine
 * types; the host CPU model under KVM), and are the servers' disks on shared
 * storage; does every up compute host reach the others' migration address
 * (each agent probes the others: src/compute/migration-probe.ts). The other
 * hosts are read from the database their agents report to.
 */
import net from 'node:net';
import type { PumiceConfig } from '../config/config.ts';
import type { Db } from '../db/db.ts';
import { parseProbeReport, reachabilityCheck } from './migration-probe.ts';

export interface MigrationCheck {
  name: string;
  ok: boolean;
  detail: string;
}

/** Checks run against the cloud's database `db` (opened by the caller, read only). */
export async function liveMigrationChecks(config: PumiceConfig, db: Db): Promise<MigrationCheck[]> {
  const checks: MigrationCheck[] = [];
  const address = config.libvirt.live_migration_inbound_addr ?? config.DEFAULT.my_ip;
  const listenProblem = await new Promise<string | null>((resolve) => {
    const server = net.createServer();
    server.once('error', (error: Error) => resolve(error.message));
    server.listen(0, address, () => server.close(() => resolve(null)));
  });
  checks.push(listenProblem === null
    ? { name: 'live migration: incoming address', ok: true, detail: `QEMU can listen on ${address} ([libvirt] live_migration_inbound_addr); the source hosts must reach it on any TCP port (each migration takes a free one)` }
    : { name: 'live migration: incoming address', ok: false, detail: `cannot listen on ${address} ([libvirt] live_migration_inbound_addr): ${listenProblem}. Set it to an address of this host that the other compute hosts reach.` });

  const nodes = db.all<{ host: string; hypervisor_version: number; virt_type: string; cpu_info: string }>('SELECT host, hypervisor_version, virt_type, cpu_info FROM compute_nodes ORDER BY host');
  if (nodes.length < 2) {
    checks.push({ name: 'live migration: compute hosts', ok: true, detail: `${nodes.length} compute host${nodes.length === 1 ? '' : 's'} reported: live migration needs two` });
  } else {
    const describe = (n: (typeof nodes)[number]) => {
      const model = (JSON.parse(n.cpu_info || '{}') as { model?: string }).model ?? 'unknown';
      // Under TCG the guest's CPU is QEMU's own model, the same everywhere; under KVM it follows the host's.
      return `QEMU ${Math.floor(n.hypervisor_version / 1_000_000)}.${Math.floor(n.hypervisor_version / 1000) % 1000}.${n.hypervisor_version % 1000}, ${n.virt_type}${n.virt_type === 'kvm' ? `, CPU ${model}` : ''}`;
    };
    const groups = new Map<string, string[]>();
    for (const node of nodes) groups.set(describe(node), [...(groups.get(describe(node)) ?? []), node.host]);
    checks.push(groups.size === 1
      ? { name: 'live migration: same QEMU and CPU model', ok: true, detail: `${nodes.length} hosts: ${[...groups.keys()][0]}` }
      : {
          name: 'live migration: same QEMU and CPU model', ok: false,
          detail: `the compute hosts differ (${[...groups].map(([what, hosts]) => `${hosts.join(', ')}: ${what}`).join('; ')}): a guest started on one may not run on another (machine type pc-i440fx-X.Y and CPU flags follow QEMU and the CPU). Install the same qemu-system-x86 version everywhere, or keep live migrations within one group.`,
        });
  }

  // Every ordered pair of up compute hosts: the source's agent reached the target's probe listener.
  const downAfterMs = config.DEFAULT.service_down_time * 1000;
  const up = new Set(db.all<{ host: string; forced_down: number; heartbeat_at: string | null }>("SELECT host, forced_down, heartbeat_at FROM services WHERE binary = 'nova-compute'")
    .filter((s) => !s.forced_down && s.heartbeat_at !== null && Date.now() - Date.parse(s.heartbeat_at) <= downAfterMs).map((s) => s.host));
  const reports = db.all<{ host: string; report: string }>('SELECT host, report FROM compute_nodes ORDER BY host').filter((n) => up.has(n.host));
  checks.push(reachabilityCheck(reports.map((n) => ({ host: n.host, report: parseProbeReport(n.report) }))));

  const notShared = db.all<{ server_id: string; volume_id: string | null; connection_info: string | null; destination_type: string }>(
    `SELECT b.server_id, b.volume_id, b.connection_info, b.destination_type FROM block_device_mappings b JOIN servers s ON s.id = b.server_id
     WHERE s.deleted_at IS NULL AND b.status != 'detached' ORDER BY b.server_id`,
  ).filter((b) => b.destination_type === 'local' ? config.libvirt.images_type !== 'rbd' : !(b.connection_info ?? '').includes('"driver_volume_type":"rbd"'));
  const servers = [...new Set(notShared.map((b) => b.server_id))];
  checks.push(servers.length === 0
    ? { name: 'live migration: shared storage', ok: true, detail: 'every disk of every server is on RBD (shared storage)' }
    : { name: 'live migration: shared storage', ok: true, detail: `warning: ${servers.length} server(s) have disks that are not shared storage (local-backend NBD volumes, or qcow2 roots with images_type = ${config.libvirt.images_type}) and cannot be live-migrated: ${servers.slice(0, 5).join(', ')}${servers.length > 5 ? ', ...' : ''}. Use RBD volumes and images_type = rbd.` });
  return checks;
}
