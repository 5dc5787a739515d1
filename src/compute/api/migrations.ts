/**
 * GET /os-migrations (admin): the migration records, here evacuations
 * (`openstack server migration list`, `nova migration-list`). Fields by
 * microversion as Nova: migration_type and links from 2.23, uuid from 2.59.
 */
import { Type } from '@sinclair/typebox';
import { errors } from '../../errors.ts';
import { route, type AnyRouteSpec } from '../../http/declare.ts';
import type { MigrationRow } from '../evacuation.ts';
import { usageTime } from '../model.ts';
import type { ServerService } from '../servers.ts';

export interface MigrationRouteDeps {
  servers: ServerService;
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

/** Nova's statuses for an evacuation: accepted → pre-migrating → ... → done / failed. */
function novaStatus(status: MigrationRow['status']): string {
  return ({ accepted: 'accepted', fenced: 'pre-migrating', rebuilding: 'migrating', done: 'done', failed: 'failed' } as Record<string, string>)[status] ?? status;
}

export function migrationRoutes(deps: MigrationRouteDeps): AnyRouteSpec[] {
  return [
    route({
      method: 'GET', path: '/os-migrations', policy: 'os_compute_api:os-migrations:index', query: MigrationQuery,
      responses: { 200: Type.Object({ migrations: Type.Array(Migration), migrations_links: Type.Optional(Type.Array(Type.Unknown())) }, { additionalProperties: false }) },
      handler(ctx) {
        const q = ctx.queryParams as Record<string, string | undefined>;
        const limit = Math.min(q['limit'] ? Number(q['limit']) : deps.maxLimit, deps.maxLimit);
        if (q['marker'] && ctx.microversion < 59) throw errors.badRequest('marker needs microversion 2.59 or later.');
        const statusFilter = q['status'] ? Object.entries({ accepted: 'accepted', 'pre-migrating': 'fenced', migrating: 'rebuilding', done: 'done', failed: 'failed' }).find(([nova]) => nova === q['status'])?.[1] ?? q['status'] : null;
        let rows = deps.servers.migrations.list({
          serverId: q['instance_uuid'] ?? null,
          host: q['host'] ?? q['source_compute'] ?? null,
          status: statusFilter,
          migrationType: q['migration_type'] ?? null,
          limit: 100_000,
        });
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
              dest_host: r.dest_compute ? '127.0.0.1' : null,
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
