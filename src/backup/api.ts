/**
 * Block Storage v3 backup routes (Cinder's backups API), registered on the
 * volume service's router: parses and validates requests, renders
 * Cinder-shaped bodies. Rules live in `backups.ts`; no driver is reached here.
 */
import type { SqlValue } from '../db/db.ts';
import { errors } from '../errors.ts';
import { Type } from '@sinclair/typebox';
import { Nullable, route } from '../http/declare.ts';
import type { AuthContext, RequestContext } from '../http/router.ts';
import { checkMetadataKeys, metadataSchema, validate, type Schema } from '../http/validate.ts';
import type { VolumeApiExtension } from '../volume/api.ts';
import type { BackupService } from './backups.ts';
import { backupProgressHeader, renderBackup, renderBackupSummary, type BackupRow } from './records.ts';

const nameSchema: Schema = { type: 'string', maxLength: 255, nullable: true };
const descriptionSchema: Schema = { type: 'string', maxLength: 255, nullable: true };

const createSchema: Schema = {
  type: 'object',
  required: ['backup'],
  properties: {
    backup: {
      type: 'object',
      required: ['volume_id'],
      properties: {
        volume_id: { type: 'uuid' },
        name: nameSchema,
        display_name: nameSchema,
        description: descriptionSchema,
        display_description: descriptionSchema,
        incremental: { type: 'boolean', nullable: true, allowString: true },
        force: { type: 'boolean', nullable: true, allowString: true },
        snapshot_id: { type: 'uuid', nullable: true },
        container: { type: 'string', maxLength: 255, nullable: true },
        metadata: { ...metadataSchema, nullable: true } as Schema,
        availability_zone: { type: 'string', maxLength: 255, nullable: true },
      },
    },
  },
};

const sortColumns: Record<string, string> = {
  created_at: 'created_at', updated_at: "COALESCE(updated_at, '')", id: 'id', name: "COALESCE(name, '')", status: 'status',
  size: 'size_gib', volume_id: 'volume_id', data_timestamp: 'data_timestamp',
};

const Params = Type.Object({ id: Type.String({ minLength: 1 }) });
const closed = { additionalProperties: false } as const;
const StringMap = Type.Record(Type.String(), Type.String());
const Links = Type.Array(Type.Object({ href: Type.String(), rel: Type.String() }, closed));
const BackupSummary = Type.Object({ id: Type.String(), name: Nullable(Type.String()), links: Links }, closed);

/** A backup at `mv`: os-backup-project-attr:project_id (admins) from 3.18, metadata from 3.43, user_id from 3.56. */
function backupSchema(mv: number) {
  return Type.Object({
    id: Type.String(),
    name: Nullable(Type.String()),
    description: Nullable(Type.String()),
    status: Type.String(),
    size: Type.Integer(),
    object_count: Type.Integer(),
    availability_zone: Nullable(Type.String()),
    container: Nullable(Type.String()),
    created_at: Type.String(),
    updated_at: Nullable(Type.String()),
    data_timestamp: Nullable(Type.String()),
    volume_id: Type.String(),
    snapshot_id: Nullable(Type.String()),
    is_incremental: Type.Boolean(),
    has_dependent_backups: Type.Boolean(),
    fail_reason: Nullable(Type.String()),
    links: Links,
    ...(mv >= 18 ? { 'os-backup-project-attr:project_id': Type.Optional(Type.String()) } : {}),
    ...(mv >= 43 ? { metadata: StringMap } : {}),
    ...(mv >= 56 ? { user_id: Type.String() } : {}),
  }, closed);
}
const backupBoundaries = [18, 43, 45, 56];
const CreatedBackup = (mv: number) => Type.Object({ backup: Type.Object({ id: Type.String(), name: Nullable(Type.String()), links: Links, ...(mv >= 43 ? { metadata: StringMap } : {}) }, closed) }, closed);

const updateSchema: Schema = { type: 'object', required: ['backup'], properties: { backup: { type: 'object', properties: { name: nameSchema, description: descriptionSchema, metadata: { ...metadataSchema, nullable: true } as Schema } } } };
const importSchema: Schema = {
  type: 'object',
  required: ['backup-record'],
  properties: {
    'backup-record': {
      type: 'object',
      required: ['backup_service', 'backup_url'],
      properties: { backup_service: { type: 'string', maxLength: 255 }, backup_url: { type: 'string', maxLength: 100_000 } },
    },
  },
};
const restoreSchema: Schema = { type: 'object', required: ['restore'], properties: { restore: { type: 'object', nullable: true, properties: { volume_id: { type: 'uuid', nullable: true }, name: nameSchema } } } };
const actionSchema: Schema = {
  type: 'object',
  maxProperties: 1,
  properties: {
    'os-reset_status': { type: 'object', required: ['status'], properties: { status: { type: 'string', maxLength: 255 } } },
    'os-force_delete': { type: 'object', nullable: true, additional: true },
  },
};

/** Cinder's backup rules and their defaults; the volume API's policy table includes them. */
export const backupPolicyDefaults: Record<string, string> = {
  'backup:get_all': 'rule:project_reader_or_admin',
  'backup:get': 'rule:project_reader_or_admin',
  'backup:create': 'rule:project_member_or_admin',
  'backup:update': 'rule:project_member_or_admin',
  'backup:delete': 'rule:project_member_or_admin',
  'backup:restore': 'rule:project_member_or_admin',
  'backup:export-import': 'rule:admin_api',
  'backup:backup-import': 'rule:admin_api',
  'volume_extension:backup_admin_actions:reset_status': 'rule:admin_api',
  'volume_extension:backup_admin_actions:force_delete': 'rule:admin_api',
};

/** The backup routes, declared and registered on the Block Storage router (rules in backups.ts). */
export function backupRoutes(service: BackupService): VolumeApiExtension {
  return (_router, helpers) => {
    const auth = (ctx: RequestContext): AuthContext => ctx.auth!;
    const renderRows = (ctx: RequestContext, rows: BackupRow[]) => {
      const dependents = service.withDependents(rows.map((r) => r.id));
      const options = helpers.render(ctx);
      return rows.map((r) => renderBackup(options, r, dependents.has(r.id)));
    };
    const perVersion = helpers.perVersion;

    const list = (detail: boolean) => (ctx: RequestContext) => {
      const query = helpers.listQuery(ctx, ['name', 'status', 'volume_id', 'project_id', 'availability_zone', 'container', 'is_incremental']);
      const add = (sql: string, value: SqlValue) => {
        query.conditions.push(sql);
        query.params.push(value);
      };
      for (const key of ['name', 'status', 'volume_id', 'availability_zone', 'container'] as const) {
        const value = ctx.query.get(key);
        if (value !== null) add(`${key} = ?`, value);
      }
      const incremental = ctx.query.get('is_incremental');
      if (incremental !== null) add('is_incremental = ?', /^(1|true|yes|on)$/i.test(incremental) ? 1 : 0);
      helpers.scopeToProject(ctx, query);
      const page = service.list(query, sortColumns);
      const options = helpers.render(ctx);
      const body: Record<string, unknown> = {
        backups: detail ? renderRows(ctx, page.rows) : page.rows.map((r) => renderBackupSummary(options, r)),
      };
      if (page.hasMore) body['backups_links'] = [helpers.nextLink(ctx, page.rows[page.rows.length - 1]!.id, query.limit)];
      if (page.count !== undefined) body['count'] = page.count;
      return { status: 200, body };
    };
    const listResponses = (detail: boolean) => perVersion(backupBoundaries, (mv) => Type.Object({
      backups: Type.Array(detail ? backupSchema(mv) : BackupSummary),
      backups_links: Type.Optional(Links),
      ...(mv >= 45 ? { count: Type.Optional(Type.Integer()) } : {}),
    }, closed));

    helpers.register([
      route({ method: 'GET', path: '/v3/backups', policy: 'backup:get_all', responses: { 200: listResponses(false) }, handler: list(false) }),
      route({ method: 'GET', path: '/v3/backups/detail', policy: 'backup:get_all', responses: { 200: listResponses(true) }, handler: list(true) }),
      route({
        method: 'POST', path: '/v3/backups', policy: 'backup:create', body: helpers.declaredBody(createSchema),
        responses: { 202: perVersion([43], CreatedBackup) },
        handler(ctx) {
          const { backup } = validate<{ backup: Record<string, unknown> }>(createSchema, ctx.body ?? null);
          const metadata = (backup['metadata'] as Record<string, string> | null | undefined) ?? undefined;
          if (metadata) {
            if (ctx.microversion < 43) throw errors.badRequest("Invalid input: backup 'metadata' needs microversion 3.43 or later.");
            checkMetadataKeys(metadata);
          }
          const row = service.create(auth(ctx), {
            volumeId: backup['volume_id'] as string,
            name: (backup['name'] ?? backup['display_name']) as string | null | undefined,
            description: (backup['description'] ?? backup['display_description']) as string | null | undefined,
            incremental: (backup['incremental'] as boolean | null | undefined) ?? false,
            force: (backup['force'] as boolean | null | undefined) ?? false,
            snapshotId: backup['snapshot_id'] as string | null | undefined,
            container: backup['container'] as string | null | undefined,
            metadata,
            availabilityZone: backup['availability_zone'] as string | null | undefined,
          });
          const body: Record<string, unknown> = renderBackupSummary(helpers.render(ctx), row);
          if (ctx.microversion >= 43) body['metadata'] = JSON.parse(row.metadata) as Record<string, string>;
          return { status: 202, body: { backup: body } };
        },
      }),
      route({
        method: 'GET', path: '/v3/backups/:id', policy: 'backup:get', params: Params,
        responses: { 200: perVersion(backupBoundaries, (mv) => Type.Object({ backup: backupSchema(mv) }, closed)) },
        handler(ctx) {
          const row = service.backup(auth(ctx), ctx.params['id']!);
          return { status: 200, body: { backup: renderRows(ctx, [row])[0] }, ...(row.progress ? { headers: { [backupProgressHeader]: row.progress } } : {}) };
        },
      }),
      route({
        method: 'GET', path: '/v3/backups/:id/export_record', policy: 'backup:export-import', params: Params,
        responses: { 200: Type.Object({ 'backup-record': Type.Object({ backup_service: Type.String(), backup_url: Type.String() }, closed) }, closed) },
        handler: (ctx) => ({ status: 200, body: { 'backup-record': service.exportRecord(auth(ctx), ctx.params['id']!) } }),
      }),
      route({
        method: 'POST', path: '/v3/backups/import_record', policy: 'backup:backup-import', body: helpers.declaredBody(importSchema),
        responses: { 201: Type.Object({ backup: BackupSummary }, closed) },
        async handler(ctx) {
          const { 'backup-record': record } = validate<{ 'backup-record': { backup_service: string; backup_url: string } }>(importSchema, ctx.body ?? null);
          const row = await service.importRecord(auth(ctx), record.backup_service, record.backup_url);
          return { status: 201, body: { backup: renderBackupSummary(helpers.render(ctx), row) } };
        },
      }),
      route({
        method: 'PUT', path: '/v3/backups/:id', policy: 'backup:update', versions: { min: 9, max: helpers.microversionMax }, params: Params, body: helpers.declaredBody(updateSchema),
        responses: { 200: perVersion(backupBoundaries, (mv) => Type.Object({ backup: backupSchema(mv) }, closed)) },
        handler(ctx) {
          const { backup } = validate<{ backup: { name?: string | null; description?: string | null; metadata?: Record<string, string> | null } }>(updateSchema, ctx.body ?? null);
          if (backup.metadata) {
            if (ctx.microversion < 43) throw errors.badRequest("Invalid input: backup 'metadata' needs microversion 3.43 or later.");
            checkMetadataKeys(backup.metadata);
          }
          const row = service.update(auth(ctx), ctx.params['id']!, { name: backup.name, description: backup.description, metadata: backup.metadata ?? undefined });
          return { status: 200, body: { backup: renderRows(ctx, [row])[0] } };
        },
      }),
      route({
        method: 'DELETE', path: '/v3/backups/:id', policy: 'backup:delete', params: Params,
        responses: { 202: null },
        handler(ctx) {
          service.delete(auth(ctx), ctx.params['id']!, false);
          return { status: 202 };
        },
      }),
      route({
        method: 'POST', path: '/v3/backups/:id/restore', policy: 'backup:restore', params: Params, body: helpers.declaredBody(restoreSchema),
        responses: { 202: Type.Object({ restore: Type.Object({ backup_id: Type.String(), volume_id: Type.String(), volume_name: Type.String() }, closed) }, closed) },
        handler(ctx) {
          const { restore } = validate<{ restore: { volume_id?: string | null; name?: string | null } | null }>(restoreSchema, ctx.body ?? null);
          // Cinder answers the target's display name, null for an unnamed one; tempest's schema (and so strict
          // clients) want a string, and an empty name says the same.
          const result = service.restore(auth(ctx), ctx.params['id']!, { volumeId: restore?.volume_id ?? null, name: restore?.name ?? null }, ctx.requestId);
          return { status: 202, body: { restore: { backup_id: result.backupId, volume_id: result.volumeId, volume_name: result.volumeName ?? '' } } };
        },
      }),
      route({
        method: 'POST', path: '/v3/backups/:id/action', params: Params, body: helpers.declaredBody(actionSchema),
        // os-reset_status and os-force_delete have their own admin rules, checked in the handler.
        policy: '@',
        responses: { 202: null },
        handler(ctx) {
          const body = validate<Record<string, unknown>>(actionSchema, ctx.body ?? null);
          const id = ctx.params['id']!;
          if (body['os-reset_status']) {
            ctx.authorize('volume_extension:backup_admin_actions:reset_status');
            service.resetStatus(auth(ctx), id, (body['os-reset_status'] as { status: string }).status);
            return { status: 202 };
          }
          if ('os-force_delete' in body) {
            ctx.authorize('volume_extension:backup_admin_actions:force_delete');
            service.delete(auth(ctx), id, true);
            return { status: 202 };
          }
          throw errors.badRequest('Invalid input: the backup action must be one of os-reset_status, os-force_delete.');
        },
      }),
    ]);
  };
}
