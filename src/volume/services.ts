/**
 * The Block Storage service records (cinder-volume per backend, cinder-backup,
 * cinder-scheduler...): listing, enabling and disabling them, and the per-host
 * resource summary of os-hosts.
 */
import { nowIso, type Db } from '../db/db.ts';
import { errors } from '../errors.ts';
import { volumeBinary } from './manager.ts';

export interface ServiceRow {
  id: number;
  binary: string;
  host: string;
  zone: string;
  disabled: number;
  disabled_reason: string | null;
  frozen: number;
  heartbeat_at: string | null;
  state_reason: string | null;
  /** `cluster@backend` of a clustered cinder-volume service (Cinder's cluster_name), else null. */
  cluster: string | null;
  created_at: string;
  updated_at: string | null;
}

/** One project's (or the total's) share of a host, as os-hosts shows it. */
export interface HostResource {
  project: string;
  volumeCount: number;
  totalVolumeGiB: number;
  snapshotCount: number;
  totalSnapshotGiB: number;
}

export class BlockStorageServices {
  constructor(
    private readonly db: Db,
    private readonly serviceDownSeconds: number,
  ) {}

  list(filters: { host?: string; binary?: string } = {}): ServiceRow[] {
    return this.db.all<ServiceRow>("SELECT * FROM services WHERE binary LIKE 'cinder-%' ORDER BY binary, host")
      .filter((r) => (filters.host === undefined || r.host === filters.host) && (filters.binary === undefined || r.binary === filters.binary));
  }

  isUp(row: ServiceRow, nowMs = Date.now()): boolean {
    return row.heartbeat_at !== null && nowMs - Date.parse(row.heartbeat_at) <= this.serviceDownSeconds * 1000;
  }

  /** Enables or disables a service (default binary cinder-volume); 404 when there is none on that host. */
  setDisabled(host: string, binary: string | undefined, disabled: boolean, reason: string | null): ServiceRow {
    const row = this.db.get<ServiceRow>('SELECT * FROM services WHERE host = ? AND binary = ?', host, binary ?? volumeBinary);
    if (!row) throw errors.notFound('Service', `${binary ?? volumeBinary} on host ${host}`);
    this.db.run('UPDATE services SET disabled = ?, disabled_reason = ?, updated_at = ? WHERE id = ?', disabled ? 1 : 0, reason, nowIso(), row.id);
    return this.db.get<ServiceRow>('SELECT * FROM services WHERE id = ?', row.id)!;
  }

  /**
   * The volumes and snapshots on a cinder-volume host (`host` as in os-hosts: the
   * service host, volumes on `host#pool` or `host@backend#pool` count): the total
   * first, then one entry per project. 404 when no volume service has that host.
   */
  hostResources(host: string): HostResource[] {
    if (!this.db.get('SELECT 1 FROM services WHERE binary = ? AND host = ?', volumeBinary, host)) throw errors.notFound('Host', host);
    const pattern = `${host.replace(/[\\%_]/g, (c) => `\\${c}`)}#%`;
    const volumes = this.db.all<{ project_id: string; n: number; gib: number }>(
      "SELECT project_id, COUNT(*) AS n, COALESCE(SUM(size_gib), 0) AS gib FROM volumes WHERE host = ? OR host LIKE ? ESCAPE '\\' GROUP BY project_id", host, pattern);
    const snapshots = this.db.all<{ project_id: string; n: number; gib: number }>(
      "SELECT s.project_id, COUNT(*) AS n, COALESCE(SUM(s.size_gib), 0) AS gib FROM snapshots s JOIN volumes v ON v.id = s.volume_id WHERE v.host = ? OR v.host LIKE ? ESCAPE '\\' GROUP BY s.project_id", host, pattern);
    const byProject = new Map<string, HostResource>();
    const entry = (project: string) => {
      let r = byProject.get(project);
      if (!r) byProject.set(project, (r = { project, volumeCount: 0, totalVolumeGiB: 0, snapshotCount: 0, totalSnapshotGiB: 0 }));
      return r;
    };
    for (const v of volumes) Object.assign(entry(v.project_id), { volumeCount: v.n, totalVolumeGiB: v.gib });
    for (const s of snapshots) Object.assign(entry(s.project_id), { snapshotCount: s.n, totalSnapshotGiB: s.gib });
    const projects = [...byProject.values()].sort((a, b) => a.project.localeCompare(b.project));
    const total: HostResource = {
      project: '(total)',
      volumeCount: projects.reduce((n, p) => n + p.volumeCount, 0),
      totalVolumeGiB: projects.reduce((n, p) => n + p.totalVolumeGiB, 0),
      snapshotCount: projects.reduce((n, p) => n + p.snapshotCount, 0),
      totalSnapshotGiB: projects.reduce((n, p) => n + p.totalSnapshotGiB, 0),
    };
    return [total, ...projects];
  }
}
