/**
 * The roles one `pumice serve` process runs (`--roles`), as DESIGN.md lists them. Every
 * process of a cloud shares one database (PostgreSQL when there are several hosts); the
 * roles talk through it (task queue, heartbeats, capacity reports) and over HTTP with
 * service tokens, so any subset may run on any host:
 *
 * - `api`: the HTTP listener (identity, block storage, image, compute APIs, dashboard);
 *   volume placement runs in-line in the request that creates the volume;
 * - `scheduler`: the scheduler service records (cinder-scheduler, nova-scheduler,
 *   nova-conductor) the API's placement stands for; it needs the `api` role;
 * - `volume`: starts the backends of enabled_backends, heartbeats them and runs their tasks;
 *   several hosts with one `[DEFAULT] cluster` share a backend's tasks (active/active);
 * - `backup`: the backup service and its tasks;
 * - `image`: image import tasks (web-download, conversion) and the image store's recovery;
 * - `compute`: the compute agent of this host.
 */
import { UsageError, didYouMean } from './cli/args.ts';

export const allRoles = ['api', 'scheduler', 'volume', 'backup', 'image', 'compute'] as const;
export type Role = (typeof allRoles)[number];

/**
 * Parses `--roles api,volume,...`: every role when absent. Throws UsageError for an unknown
 * role (with the nearest name), an empty list, or `scheduler` without `api`.
 */
export function parseRoles(value: string | undefined): Role[] {
  if (value === undefined) return [...allRoles];
  const hint = "see 'pumice serve --help'";
  const roles = [...new Set(value.split(',').map((r) => r.trim()).filter(Boolean))];
  if (roles.length === 0) throw new UsageError(`--roles '${value}' names no role; roles are ${allRoles.join(', ')}`, hint);
  for (const role of roles) {
    if (!(allRoles as readonly string[]).includes(role)) throw new UsageError(`--roles: unknown role '${role}'${didYouMean(role, [...allRoles]) ?? ''}; roles are ${allRoles.join(', ')}`, hint);
  }
  if (roles.includes('scheduler') && !roles.includes('api')) {
    throw new UsageError(`--roles ${value}: the scheduler places volumes in-line in the API's create request, so it runs with the api role (--roles api,scheduler)`, hint);
  }
  return roles as Role[];
}
