/**
 * Block Storage quotas: defaults from the configuration, per-project
 * overrides in the database, usage counted from the resources themselves
 * (no separate usage table that could drift). Checks run inside the
 * transaction that writes the resource, so concurrent creates cannot both
 * pass the last free slot.
 */
import type { Db } from '../db/db.ts';
import type { DefaultConfig } from '../config/config.ts';
import { errors } from '../errors.ts';

export const quotaResources = ['volumes', 'snapshots', 'gigabytes', 'backups', 'backup_gigabytes', 'per_volume_gigabytes', 'groups'] as const;
export type QuotaResource = (typeof quotaResources)[number];

export interface Usage {
  volumes: number;
  snapshots: number;
  gigabytes: number;
  backups: number;
  backup_gigabytes: number;
  groups: number;
}

export class Quotas {
  constructor(
    private readonly db: Db,
    private readonly defaults: DefaultConfig,
  ) {}

  defaultLimits(): Record<QuotaResource, number> {
    return {
      volumes: this.defaults.quota_volumes,
      snapshots: this.defaults.quota_snapshots,
      gigabytes: this.defaults.quota_gigabytes,
      backups: this.defaults.quota_backups,
      backup_gigabytes: this.defaults.quota_backup_gigabytes,
      per_volume_gigabytes: this.defaults.per_volume_size_limit,
      groups: this.defaults.quota_groups,
    };
  }

  limits(projectId: string): Record<QuotaResource, number> {
    const limits = this.defaultLimits();
    for (const row of this.db.all<{ resource: QuotaResource; hard_limit: number }>('SELECT resource, hard_limit FROM quotas WHERE project_id = ?', projectId)) {
      if (row.resource in limits) limits[row.resource] = row.hard_limit;
    }
    return limits;
  }

  usage(projectId: string): Usage {
    const volumes = this.db.get<{ n: number; gb: number | null }>('SELECT COUNT(*) AS n, SUM(size_gib) AS gb FROM volumes WHERE project_id = ?', projectId)!;
    const snapshots = this.db.get<{ n: number; gb: number | null }>('SELECT COUNT(*) AS n, SUM(size_gib) AS gb FROM snapshots WHERE project_id = ?', projectId)!;
    const backups = this.db.get<{ n: number; gb: number | null }>('SELECT COUNT(*) AS n, SUM(size_gib) AS gb FROM backups WHERE project_id = ?', projectId)!;
    const groups = this.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM volume_groups WHERE project_id = ?', projectId)!;
    return {
      volumes: volumes.n,
      snapshots: snapshots.n,
      gigabytes: (volumes.gb ?? 0) + (this.defaults.no_snapshot_gb_quota ? 0 : snapshots.gb ?? 0),
      backups: backups.n,
      backup_gigabytes: backups.gb ?? 0,
      groups: groups.n,
    };
  }

  setLimits(projectId: string, changes: Partial<Record<QuotaResource, number>>): void {
    this.db.transaction(() => {
      for (const [resource, limit] of Object.entries(changes)) {
        this.db.run(
          'INSERT INTO quotas (project_id, resource, hard_limit) VALUES (?, ?, ?) ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = excluded.hard_limit',
          projectId, resource, limit as number,
        );
      }
    });
  }

  resetLimits(projectId: string): void {
    this.db.run('DELETE FROM quotas WHERE project_id = ?', projectId);
  }

  /** Throws Cinder's 413 quota errors if adding `delta` would pass a limit. Call inside the writing transaction. */
  check(projectId: string, delta: { volumes?: number; snapshots?: number; gigabytes?: number; backups?: number; backupGigabytes?: number }): void {
    const limits = this.limits(projectId);
    const usage = this.usage(projectId);
    const fix = 'Delete resources you no longer need, or ask an administrator to raise the quota (cinder quota-update).';
    if (delta.volumes && limits.volumes >= 0 && usage.volumes + delta.volumes > limits.volumes) {
      throw errors.quotaExceeded(`VolumeLimitExceeded: Maximum number of volumes allowed (${limits.volumes}) exceeded for quota 'volumes'. ${fix}`);
    }
    if (delta.snapshots && limits.snapshots >= 0 && usage.snapshots + delta.snapshots > limits.snapshots) {
      throw errors.quotaExceeded(`SnapshotLimitExceeded: Maximum number of snapshots allowed (${limits.snapshots}) exceeded for quota 'snapshots'. ${fix}`);
    }
    if (delta.backups && limits.backups >= 0 && usage.backups + delta.backups > limits.backups) {
      throw errors.quotaExceeded(`BackupLimitExceeded: Maximum number of backups allowed (${limits.backups}) exceeded for quota 'backups'. ${fix}`);
    }
    if (delta.backupGigabytes && limits.backup_gigabytes >= 0 && usage.backup_gigabytes + delta.backupGigabytes > limits.backup_gigabytes) {
      throw errors.quotaExceeded(
        `VolumeBackupSizeExceedsAvailableQuota: Requested backup exceeds allowed Backup gigabytes quota. Requested ${delta.backupGigabytes}G, quota is ${limits.backup_gigabytes}G and ${usage.backup_gigabytes}G has been consumed. ${fix}`,
      );
    }
    if (delta.gigabytes && limits.gigabytes >= 0 && usage.gigabytes + delta.gigabytes > limits.gigabytes) {
      const what = delta.snapshots ? 'snapshot' : 'volume';
      throw errors.quotaExceeded(
        `VolumeSizeExceedsAvailableQuota: Requested ${what} exceeds allowed gigabytes quota. Requested ${delta.gigabytes}G, quota is ${limits.gigabytes}G and ${usage.gigabytes}G has been consumed. ${fix}`,
      );
    }
  }

  /** Per-volume size limit (per_volume_gigabytes): a 400 like Cinder's VolumeSizeExceedsLimit... as 413. */
  checkVolumeSize(projectId: string, sizeGiB: number): void {
    const limit = this.limits(projectId).per_volume_gigabytes;
    if (limit >= 0 && sizeGiB > limit) {
      throw errors.quotaExceeded(`VolumeSizeExceedsLimit: Requested volume size ${sizeGiB}G is larger than maximum allowed limit ${limit}G (per_volume_gigabytes).`);
    }
  }
}
