/**
 * GET /os-migrations (admin): the migration records, evacuations and live
 * migrations (`openstack server migration list`, `nova migration-list`).
 * Fields by microversion as Nova: migration_type and links from 2.23, uuid
 * from 2.59.
 *
 * A server's live migrations in progress (admin, as Nova):
 * GET /servers/{id}/migrations and /servers/{id}/migrations/{mid} (2.23+,
 * with QEMU's memory counters; `openstack server migration show`), abort
 * DELETE /servers/{id}/migrations/{mid} (2.24+, `openstack server migration
 * abort`), and force_complete (2.22+), which is refused: it would pause the
 * guest, and Pumice has no pause yet.
 */
import { Type } from '@sinclair/typebox';
import { errors } from '../../errors.ts';
import { route, type AnyRouteSpec } from '../../http/declare.ts';
import { liveMigrationActiveStatuses, type MigrationRow } from '../evacuation.ts';
import { usageTime } from '../model.ts';
import type { ComputeHosts } from '../hosts.ts';
import type { ServerService } from '../servers.ts';

export interface MigrationRouteDeps {
  servers: ServerService;
  /** The compute nodes: a migration's dest_host is its destination's reported address ([DEFAULT] my_ip). */
  hosts: ComputeHosts;
  maxLimit: number;
}

const MigrationQuery = Type.Object({
  instance_uuid: Type.Optional(Type.String({ maxLength: 255 })),
  host: Type.Optional(Type.String({ maxLength: 255 })),
  status: Type.Optional(Type.String({ maxLength: 255 })),
  migration_type: Type.Optional(Type.String({ maxLength: 255 })),
  source_compute: Type.Optional(Type.String({ maxLength: 255 })),
  hidden: Type.Optional(Type.String()),
  limit: Type.Optional(Type.String({ pattern: '^[0-9]+$' })),
  marker: Type.Optional(Type.String()),
  changes_since: Type.Optional(Type.String()),
  'changes-since': Type.Optional(Type.String()),
  changes_before: Type.Optional(Type.String()),
  'changes-before': Type.Optional(Type.String()),
}, { additionalProperties: true });

const Migration = Type.Object({
  id: Type.Integer(),
  uuid: Type.Optional(Type.String()),
  instance_uuid: Type.String(),
  source_compute: Type.Union([Type.String(), Type.Null()]),
  source_node: Type.Union([Type.String(), Type.Null()]),
  dest_compute: Type.Union([Type.String(), Type.Null()]),
  dest_node: Type.Union([Type.String(), Type.Null()]),
  dest_host: Type.Union([Type.String(), Type.Null()]),
  status: Type.String(),
  old_instance_type_id: Type.Union([Type.Integer(), Type.Null()]),
  new_instance_type_id: Type.Union([Type.Integer(), Type.Null()]),
  migration_type: Type.Optional(Type.String()),
  links: Type.Optional(Type.Array(Type.Unknown())),
  created_at: Type.String(),
  updated_at: Type.Union([Type.String(), Type.Null()]),
}, { additionalProperties: false });

/** Nova's statuses for an evacuation: accepted → pre-migrating → ... → done / failed. A live migration's are Nova's already. */
function novaStatus(status: MigrationRow['status']): string {
  return ({ accepted: 'accepted', fenced: 'pre-migrating', rebuilding: 'migrating', done: 'done', failed: 'failed' } as Record<string, string>)[status] ?? status;
}

const ServerMigrationParams = Type.Object({ server_id: Type.String({ maxLength: 255 }), migration_id: Type.String({ maxLength: 255 }) });
const ServerIdParams = Type.Object({ server_id: Type.String({ maxLength: 255 }) });
const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);

/** Nova's server migration (2.23; uuid from 2.59; user_id and project_id from 2.80, beyond what Pumice serves). */
const ServerMigration = Type.Object({
  id: Type.Integer(),
  uuid: Type.Optional(Type.String()),
  server_uuid: Type.String(),
  source_compute: Nullable(Type.String()),
  source_node: Nullable(Type.String()),
  dest_compute: Nullable(Type.String()),
  dest_node: Nullable(Type.String()),
  dest_host: Nullable(Type.String()),
  status: Type.String(),
  memory_total_bytes: Nullable(Type.Integer()),
  memory_processed_bytes: Nullable(Type.Integer()),
  memory_remaining_bytes: Nullable(Type.Integer()),
  disk_total_bytes: Nullable(Type.Integer()),
  disk_processed_bytes: Nullable(Type.Integer()),
  disk_remaining_bytes: Nullable(Type.Integer()),
  created_at: Type.String(),
  updated_at: Nullable(Type.String()),
}, { additionalProperties: false });

function migrationIdOf(text: string): number {
  if (!/^[0-9]{1,15}$/.test(text)) throw errors.badRequest(`Migration id '${text}' is not an integer: take it from openstack server migration list --server SERVER.`);
  return Number(text);
}

function renderServerMigration(r: MigrationRow, microversion: number): Record<string, unknown> {
  return {
    id: r.id,
    ...(microversion >= 59 ? { uuid: r.uuid } : {}),
    server_uuid: r.server_id,
    source_compute: r.source_compute,
    source_node: r.source_compute,
    dest_compute: r.dest_compute,
    dest_node: r.dest_compute,
    dest_host: r.dest_address ? r.dest_address.slice(0, r.dest_address.lastIndexOf(':')) : null,
    status: r.status,
    memory_total_bytes: r.memory_total_bytes,
    memory_processed_bytes: r.memory_processed_bytes,
    memory_remaining_bytes: r.memory_remaining_bytes,
    // Shared storage only: no disk is copied.
    disk_total_bytes: 0,
    disk_processed_bytes: 0,
    disk_remaining_bytes: 0,
    created_at: usageTime(r.created_at)!,
    updated_at: usageTime(r.updated_at),
  };
}

export function migrationRoutes(deps: MigrationRouteDeps): AnyRouteSpec[] {
  const inProgress = (r: MigrationRow) => liveMigrationActiveStatuses.includes(r.status);
  return [
    route({
      method: 'GET', path: '/servers/:server_id/migrations', policy: 'os_compute_api:servers:migrations:index', params: ServerIdParams, versions: { min: 23, max: 79 },
      responses: { 200: Type.Object({ migrations: Type.Array(ServerMigration) }, { additionalProperties: false }) },
      handler(ctx) {
        const serverId = (ctx.params as Record<string, string>)['server_id']!;
        deps.servers.get(ctx.auth!, serverId);
        const rows = deps.servers.migrations.list({ serverId, migrationType: 'live-migration', limit: 1000 }).filter(inProgress);
        return { status: 200, body: { migrations: rows.map((r) => renderServerMigration(r, ctx.microversion)) } };
      },
    }),
    route({
      method: 'GET', path: '/servers/:server_id/migrations/:migration_id', policy: 'os_compute_api:servers:migrations:show', params: ServerMigrationParams, versions: { min: 23, max: 79 },
      responses: { 200: Type.Object({ migration: ServerMigration }, { additionalProperties: false }) },
      handler(ctx) {
        const p = ctx.params as Record<string, string>;
        const migration = deps.servers.liveMigration(ctx.auth!, p['server_id']!, migrationIdOf(p['migration_id']!));
        if (!inProgress(migration)) throw errors.notFound('In-progress live migration', p['migration_id']!);
        return { status: 200, body: { migration: renderServerMigration(migration, ctx.microversion) } };
      },
    }),
    route({
      method: 'DELETE', path: '/servers/:server_id/migrations/:migration_id', policy: 'os_compute_api:servers:migrations:delete', params: ServerMigrationParams, versions: { min: 24, max: 79 },
      responses: { 202: null },
      handler(ctx) {
        const p = ctx.params as Record<string, string>;
        deps.servers.abortLiveMigration(ctx.auth!, p['server_id']!, migrationIdOf(p['migration_id']!));
        return { status: 202 };
      },
    }),
    route({
      method: 'POST', path: '/servers/:server_id/migrations/:migration_id/action', policy: 'os_compute_api:servers:migrations:force_complete', params: ServerMigrationParams, versions: { min: 22, max: 79 },
      body: Type.Object({ force_complete: Type.Null() }, { additionalProperties: false }),
      responses: { 202: null },
      handler(ctx) {
        const p = ctx.params as Record<string, string>;
        const migration = deps.servers.liveMigration(ctx.auth!, p['server_id']!, migrationIdOf(p['migration_id']!));
        if (!inProgress(migration)) throw errors.badRequest(`Migration ${migration.id} of instance ${migration.server_id} is ${migration.status}: there is nothing to complete.`);
        throw errors.conflict(`force_complete is not supported: it pauses the guest to finish the copy, and Pumice cannot pause a guest yet. Raise [libvirt] live_migration_bandwidth on ${migration.source_compute}, or abort the migration (openstack server migration abort ${migration.server_id} ${migration.id}).`);
      },
    }),
    route({
      method: 'GET', path: '/os-migrations', policy: 'os_compute_api:os-migrations:index', query: MigrationQuery,
      responses: { 200: Type.Object({ migrations: Type.Array(Migration), migrations_links: Type.Optional(Type.Array(Type.Unknown())) }, { additionalProperties: false }) },
      handler(ctx) {
        const q = ctx.queryParams as Record<string, string | undefined>;
        const limit = Math.min(q['limit'] ? Number(q['limit']) : deps.maxLimit, deps.maxLimit);
        if (q['marker'] && ctx.microversion < 59) throw errors.badRequest('marker needs microversion 2.59 or later.');
        let rows = deps.servers.migrations.list({
          serverId: q['instance_uuid'] ?? null,
          host: q['host'] ?? q['source_compute'] ?? null,
          status: null,
          migrationType: q['migration_type'] ?? null,
          limit: 100_000,
        });
        // By the status shown: an evacuation's `fenced` is shown pre-migrating, as a cold migration's own pre-migrating.
        if (q['status']) rows = rows.filter((r) => novaStatus(r.status) === q['status']);
        const since = q['changes_since'] ?? q['changes-since'];
        if (since) rows = rows.filter((r) => r.updated_at >= new Date(since).toISOString());
        if (q['marker']) {
          const index = rows.findIndex((r) => r.uuid === q['marker']);
          if (index < 0) throw errors.notFound('Marker', q['marker']);
          rows = rows.slice(index + 1);
        }
        rows = rows.slice(0, limit);
        const v = ctx.microversion;
        return {
          status: 200,
          body: {
            migrations: rows.map((r) => ({
              id: r.id,
              ...(v >= 59 ? { uuid: r.uuid } : {}),
              instance_uuid: r.server_id,
              source_compute: r.source_compute,
              source_node: r.source_compute,
              dest_compute: r.dest_compute,
              dest_node: r.dest_compute,
              dest_host: r.dest_compute ? (deps.hosts.node(r.dest_compute)?.host_ip ?? null) : null,
              status: novaStatus(r.status),
              old_instance_type_id: null,
              new_instance_type_id: null,
              ...(v >= 23 ? { migration_type: r.migration_type, links: [] } : {}),
              created_at: usageTime(r.created_at)!,
              updated_at: usageTime(r.updated_at),
            })),
          },
        };
      },
    }),
  ];
}
