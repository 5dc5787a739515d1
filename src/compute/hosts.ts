/**
 * Compute hosts as the services table and the resources each agent reports:
 * `nova-compute` service rows (heartbeat, enable/disable, forced_down) and
 * `compute_nodes` (vCPUs, memory, disk). Up/down is decided here, once.
 */
import { randomUUID } from 'node:crypto';
import type { Db } from '../db/db.ts';
import { errors } from '../errors.ts';
import { nowIso } from './model.ts';
import type { MigrationProbeReport } from './migration-probe.ts';

export const computeBinary = 'nova-compute';
export const schedulerBinary = 'nova-scheduler';
export const conductorBinary = 'nova-conductor';

export interface ComputeServiceRow {
  id: number;
  uuid: string | null;
  binary: string;
  host: string;
  zone: string;
  disabled: number;
  disabled_reason: string | null;
  forced_down: number;
  heartbeat_at: string | null;
  state_reason: string | null;
  created_at: string;
  updated_at: string | null;
}

export interface ComputeNodeRow {
  host: string;
  hypervisor_hostname: string;
  hypervisor_type: string;
  hypervisor_version: number;
  host_ip: string;
  virt_type: string;
  virt_type_reason: string;
  vcpus: number;
  memory_mib: number;
  local_gib: number;
  /** `local` (instances_path's filesystem) or `rbd` (the images_rbd_pool, replication-aware) */
  disk_source: string;
  disk_total_gib: number;
  disk_free_gib: number;
  /** JSON: how the disk figures were computed (pool, replicas, raw bytes), for hypervisor show. */
  disk_detail: string | null;
  cpu_info: string;
  report: string;
  updated_at: string;
}

export interface NodeReport {
  hypervisorHostname: string;
  hypervisorType: string;
  hypervisorVersion: number;
  hostIp: string;
  virtType: string;
  virtTypeReason: string;
  vcpus: number;
  memoryMiB: number;
  localGiB: number;
  diskSource: 'local' | 'rbd';
  diskTotalGiB: number;
  diskFreeGiB: number;
  diskDetail: Record<string, unknown>;
  cpuInfo: Record<string, unknown>;
}

export class ComputeHosts {
  constructor(
    private readonly db: Db,
    private readonly serviceDownTimeS: () => number,
    /** [DEFAULT] report_interval: a heartbeat more than two intervals old is overdue (host_status UNKNOWN). */
    private readonly reportIntervalS: () => number = () => 10,
  ) {}

  /**
   * Registers (or re-registers) a service row for `binary` on `host` and records a heartbeat. The
   * first heartbeat after the service was down (or forced down) restarts its `up_since`.
   */
  heartbeat(binary: string, host: string, zone: string): void {
    const now = nowIso();
    const before = this.db.get<{ heartbeat_at: string | null; forced_down: number; up_since: string | null }>('SELECT heartbeat_at, forced_down, up_since FROM services WHERE binary = ? AND host = ?', binary, host);
    const wasDown = !before?.heartbeat_at || before.forced_down === 1 || Date.parse(now) - Date.parse(before.heartbeat_at) > this.serviceDownTimeS() * 1000;
    const upSince = wasDown ? now : (before.up_since ?? before.heartbeat_at);
    this.db.run(
      `INSERT INTO services (binary, host, zone, created_at, updated_at, heartbeat_at, uuid, up_since) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (binary, host) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, updated_at = excluded.updated_at, state_reason = NULL, up_since = excluded.up_since`,
      binary, host, zone, now, now, now, randomUUID(), upSince,
    );
    // Rows created by an older version have no uuid (2.53+ addresses services by uuid).
    this.db.run('UPDATE services SET uuid = ? WHERE binary = ? AND host = ? AND uuid IS NULL', randomUUID(), binary, host);
  }

  markDown(binary: string, host: string, reason: string): void {
    this.db.run('UPDATE services SET state_reason = ?, updated_at = ? WHERE binary = ? AND host = ?', reason, nowIso(), binary, host);
  }

  report(host: string, report: NodeReport): void {
    this.db.run(
      `INSERT INTO compute_nodes (host, hypervisor_hostname, hypervisor_type, hypervisor_version, host_ip, virt_type, virt_type_reason,
         vcpus, memory_mib, local_gib, disk_source, disk_total_gib, disk_free_gib, disk_detail, cpu_info, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (host) DO UPDATE SET hypervisor_hostname = excluded.hypervisor_hostname, hypervisor_type = excluded.hypervisor_type,
         hypervisor_version = excluded.hypervisor_version, host_ip = excluded.host_ip, virt_type = excluded.virt_type,
         virt_type_reason = excluded.virt_type_reason, vcpus = excluded.vcpus, memory_mib = excluded.memory_mib, local_gib = excluded.local_gib,
         disk_source = excluded.disk_source, disk_total_gib = excluded.disk_total_gib, disk_free_gib = excluded.disk_free_gib,
         disk_detail = excluded.disk_detail, cpu_info = excluded.cpu_info, updated_at = excluded.updated_at`,
      host, report.hypervisorHostname, report.hypervisorType, report.hypervisorVersion, report.hostIp, report.virtType, report.virtTypeReason,
      report.vcpus, report.memoryMiB, report.localGiB, report.diskSource, report.diskTotalGiB, report.diskFreeGiB,
      JSON.stringify(report.diskDetail), JSON.stringify(report.cpuInfo), nowIso(),
    );
  }

  services(filter: { binary?: string | null; host?: string | null } = {}): ComputeServiceRow[] {
    let rows = this.db.all<ComputeServiceRow>("SELECT * FROM services WHERE binary LIKE 'nova-%' ORDER BY id");
    if (filter.binary) rows = rows.filter((r) => r.binary === filter.binary);
    if (filter.host) rows = rows.filter((r) => r.host === filter.host);
    return rows;
  }

  service(idOrUuid: string): ComputeServiceRow {
    const row = /^\d+$/.test(idOrUuid)
      ? this.db.get<ComputeServiceRow>("SELECT * FROM services WHERE id = ? AND binary LIKE 'nova-%'", Number(idOrUuid))
      : this.db.get<ComputeServiceRow>("SELECT * FROM services WHERE uuid = ? AND binary LIKE 'nova-%'", idOrUuid);
    if (!row) throw errors.notFound('Service', idOrUuid);
    return row;
  }

  serviceByHost(binary: string, host: string): ComputeServiceRow | undefined {
    return this.db.get<ComputeServiceRow>('SELECT * FROM services WHERE binary = ? AND host = ?', binary, host);
  }

  /** Seconds the compute service of `host` has been up without a gap; 0 when it is down or unknown. */
  upForS(host: string, nowMs = Date.now()): number {
    const row = this.serviceByHost(computeBinary, host) as (ComputeServiceRow & { up_since?: string | null }) | undefined;
    if (!row || !this.isUp(row, nowMs) || !row.up_since) return 0;
    return Math.max(0, (nowMs - Date.parse(row.up_since)) / 1000);
  }

  /** Down when forced down by an operator, or when the last heartbeat is older than service_down_time. */
  isUp(row: ComputeServiceRow, nowMs = Date.now()): boolean {
    if (row.forced_down) return false;
    if (!row.heartbeat_at) return false;
    return nowMs - Date.parse(row.heartbeat_at) <= this.serviceDownTimeS() * 1000;
  }

  /**
   * Compute API 2.16 host_status of a server's host: DOWN (forced down, or no heartbeat for
   * service_down_time), UNKNOWN (heartbeats overdue: more than two report intervals old, not yet
   * down; also a host with no service row), MAINTENANCE (disabled), else UP. Nova puts disabled
   * before a missing heartbeat; here a dead host reads DOWN even when disabled, because that is
   * what an operator deciding on evacuation must see.
   */
  hostStatus(host: string, nowMs = Date.now()): 'UP' | 'DOWN' | 'MAINTENANCE' | 'UNKNOWN' {
    const row = this.serviceByHost(computeBinary, host);
    if (!row) return 'UNKNOWN';
    if (!this.isUp(row, nowMs)) return 'DOWN';
    if (row.disabled) return 'MAINTENANCE';
    const ageMs = nowMs - Date.parse(row.heartbeat_at!);
    return ageMs > 2 * this.reportIntervalS() * 1000 ? 'UNKNOWN' : 'UP';
  }

  update(id: number, changes: { disabled?: boolean; disabledReason?: string | null; forcedDown?: boolean }): ComputeServiceRow {
    this.db.transaction(() => {
      if (changes.disabled !== undefined) {
        this.db.run('UPDATE services SET disabled = ?, disabled_reason = ?, updated_at = ? WHERE id = ?', changes.disabled ? 1 : 0, changes.disabled ? changes.disabledReason ?? null : null, nowIso(), id);
      }
      if (changes.forcedDown !== undefined) this.db.run('UPDATE services SET forced_down = ?, updated_at = ? WHERE id = ?', changes.forcedDown ? 1 : 0, nowIso(), id);
    });
    return this.db.get<ComputeServiceRow>('SELECT * FROM services WHERE id = ?', id)!;
  }

  /** Removes a compute service and its node; refused while servers are on the host. */
  delete(id: number): void {
    const row = this.db.get<ComputeServiceRow>('SELECT * FROM services WHERE id = ?', id);
    if (!row) throw errors.notFound('Service', String(id));
    if (row.binary === computeBinary) {
      const servers = this.db.get<{ n: number }>("SELECT COUNT(*) AS n FROM servers WHERE host = ? AND deleted_at IS NULL", row.host)!.n;
      if (servers > 0) throw errors.conflict(`Unable to delete compute service that is hosting instances: host ${row.host} has ${servers} server(s). Migrate or delete them first.`);
    }
    this.db.transaction(() => {
      this.db.run('DELETE FROM services WHERE id = ?', id);
      if (row.binary === computeBinary) this.db.run('DELETE FROM compute_nodes WHERE host = ?', row.host);
    });
  }

  /** The agent's live-migration probe record (compute_nodes.report; src/compute/migration-probe.ts), apart from its resources. */
  recordMigrationProbe(host: string, report: MigrationProbeReport): void {
    this.db.run('UPDATE compute_nodes SET report = ? WHERE host = ?', JSON.stringify(report), host);
  }

  nodes(): ComputeNodeRow[] {
    return this.db.all<ComputeNodeRow>('SELECT * FROM compute_nodes ORDER BY host');
  }

  node(host: string): ComputeNodeRow | undefined {
    return this.db.get<ComputeNodeRow>('SELECT * FROM compute_nodes WHERE host = ?', host);
  }

  /** What servers on `host` take: vCPUs, RAM and local root disk (boot-from-volume servers take none). */
  usage(host: string): { vcpus: number; memoryMiB: number; localGiB: number; servers: number } {
    const rows = this.db.all<{ flavor: string; root_source: string }>("SELECT flavor, root_source FROM servers WHERE host = ? AND deleted_at IS NULL AND vm_state != 'deleted'", host);
    const usage = { vcpus: 0, memoryMiB: 0, localGiB: 0, servers: rows.length };
    for (const row of rows) {
      const flavor = JSON.parse(row.flavor) as { vcpus: number; ram_mib: number; root_gib: number; ephemeral_gib: number };
      usage.vcpus += flavor.vcpus;
      usage.memoryMiB += flavor.ram_mib;
      if (row.root_source === 'image') usage.localGiB += flavor.root_gib + flavor.ephemeral_gib;
    }
    return usage;
  }

  /** The API listener's URL, so agents in other processes find Block Storage without a configured endpoint. */
  recordApiListener(host: string, url: string): void {
    this.db.run('INSERT INTO api_listeners (host, url, updated_at) VALUES (?, ?, ?) ON CONFLICT (host) DO UPDATE SET url = excluded.url, updated_at = excluded.updated_at', host, url, nowIso());
  }

  apiListener(): string | null {
    return this.db.get<{ url: string }>('SELECT url FROM api_listeners ORDER BY updated_at DESC LIMIT 1')?.url ?? null;
  }
}
