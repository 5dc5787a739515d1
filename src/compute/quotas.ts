/**
 * Compute quotas (os-quota-sets, limits), stored in the shared `quotas` table
 * with Nova's resource names (no Cinder name collides). Defaults are Nova's.
 */
import type { Db } from '../db/db.ts';
import { PumiceError } from '../errors.ts';

export const computeQuotaDefaults = {
  instances: 10,
  cores: 20,
  ram: 51200,
  metadata_items: 128,
  key_pairs: 100,
  server_groups: 10,
  server_group_members: 10,
  injected_files: 5,
  injected_file_content_bytes: 10240,
  injected_file_path_bytes: 255,
  // Networking quotas that Nova 2.1–2.35 still shows; Pumice has no networking, they are only reported.
  floating_ips: 10,
  fixed_ips: -1,
  security_groups: 10,
  security_group_rules: 20,
} as const;

export type ComputeQuotaResource = keyof typeof computeQuotaDefaults;
export const computeQuotaResources = Object.keys(computeQuotaDefaults) as ComputeQuotaResource[];

export interface ComputeUsage {
  instances: number;
  cores: number;
  ram: number;
  key_pairs: number;
}

export class ComputeQuotas {
  constructor(private readonly db: Db) {}

  limits(projectId: string): Record<ComputeQuotaResource, number> {
    const limits: Record<ComputeQuotaResource, number> = { ...computeQuotaDefaults };
    const placeholders = computeQuotaResources.map(() => '?').join(',');
    for (const row of this.db.all<{ resource: ComputeQuotaResource; hard_limit: number }>(`SELECT resource, hard_limit FROM quotas WHERE project_id = ? AND resource IN (${placeholders})`, projectId, ...computeQuotaResources)) {
      limits[row.resource] = row.hard_limit;
    }
    return limits;
  }

  usage(projectId: string, userId: string | null): ComputeUsage {
    const rows = this.db.all<{ flavor: string }>("SELECT flavor FROM servers WHERE project_id = ? AND deleted_at IS NULL AND vm_state != 'deleted'", projectId);
    const usage: ComputeUsage = { instances: rows.length, cores: 0, ram: 0, key_pairs: 0 };
    for (const row of rows) {
      const flavor = JSON.parse(row.flavor) as { vcpus: number; ram_mib: number };
      usage.cores += flavor.vcpus;
      usage.ram += flavor.ram_mib;
    }
    if (userId) usage.key_pairs = this.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM keypairs WHERE user_id = ?', userId)!.n;
    return usage;
  }

  setLimits(projectId: string, changes: Partial<Record<ComputeQuotaResource, number>>): void {
    this.db.transaction(() => {
      for (const [resource, limit] of Object.entries(changes)) {
        this.db.run('INSERT INTO quotas (project_id, resource, hard_limit) VALUES (?, ?, ?) ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = excluded.hard_limit', projectId, resource, limit as number);
      }
    });
  }

  resetLimits(projectId: string): void {
    const placeholders = computeQuotaResources.map(() => '?').join(',');
    this.db.run(`DELETE FROM quotas WHERE project_id = ? AND resource IN (${placeholders})`, projectId, ...computeQuotaResources);
  }

  /** Nova's 403 "Quota exceeded for cores: Requested 2, but already used 19 of 20 cores". Call inside the writing transaction. */
  checkServer(projectId: string, delta: { instances: number; cores: number; ramMiB: number }): void {
    const limits = this.limits(projectId);
    const usage = this.usage(projectId, null);
    const checks: [string, number, number, number][] = [
      ['instances', delta.instances, usage.instances, limits.instances],
      ['cores', delta.cores, usage.cores, limits.cores],
      ['ram', delta.ramMiB, usage.ram, limits.ram],
    ];
    for (const [name, requested, used, limit] of checks) {
      if (limit >= 0 && used + requested > limit) {
        throw new PumiceError(
          'Forbidden',
          `Quota exceeded for ${name}: Requested ${requested}, but already used ${used} of ${limit} ${name}. Delete servers you no longer need, or ask an administrator to raise the quota (openstack quota set --${name} N PROJECT).`,
        );
      }
    }
  }
}
