/**
 * Block Storage v3 backup routes (Cinder's backups API), registered on the
 * volume service's router: parses and validates requests, renders
 * Cinder-shaped bodies. Rules live in `backups.ts`; no driver is reached here.
 */
import type { SqlValue } from '../db/db.ts';
import { errors } from '../errors.ts';
import type { AuthContext, RequestContext, Router } from '../http/router.ts';
import { checkMetadataKeys, metadataSchema, validate, type Schema } from '../http/validate.ts';
import type { VolumeApiExtension } from '../volume/api.ts';
import type { BackupService } from './backups.ts';
import { renderBackup, renderBackupSummary, type BackupRow } from './records.ts';

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

export function backupRoutes(service: BackupService): VolumeApiExtension {
  return (router: Router, helpers) => {
    const auth = (ctx: RequestContext): AuthContext => ctx.auth!;
    const renderRows = (ctx: RequestContext, rows: BackupRow[]) => {
      const dependents = service.withDependents(rows.map((r) => r.id));
      const options = helpers.render(ctx);
      return rows.map((r) => renderBackup(options, r, dependents.has(r.id)));
    };

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
    router.get('/v3/backups', list(false));
    router.get('/v3/backups/detail', list(true));

    router.post('/v3/backups', (ctx) => {
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
    });

    router.get('/v3/backups/:id', (ctx) => {
      const row = service.backup(auth(ctx), ctx.params['id']!);
      return { status: 200, body: { backup: renderRows(ctx, [row])[0] } };
    });

    router.get('/v3/backups/:id/export_record', (ctx) => {
      return { status: 200, body: { 'backup-record': service.exportRecord(auth(ctx), ctx.params['id']!) } };
    });

    router.post('/v3/backups/import_record', async (ctx) => {
      const { 'backup-record': record } = validate<{ 'backup-record': { backup_service: string; backup_url: string } }>(
        {
          type: 'object',
          required: ['backup-record'],
          properties: {
            'backup-record': {
              type: 'object',
              required: ['backup_service', 'backup_url'],
              properties: { backup_service: { type: 'string', maxLength: 255 }, backup_url: { type: 'string', maxLength: 100_000 } },
            },
          },
        },
        ctx.body ?? null,
      );
      const row = await service.importRecord(auth(ctx), record.backup_service, record.backup_url);
      return { status: 201, body: { backup: renderBackupSummary(helpers.render(ctx), row) } };
    });

    router.put('/v3/backups/:id', (ctx) => {
      if (ctx.microversion < 9) throw errors.notFound('Resource', "PUT on a backup (it needs microversion 3.9 or later)");
      const { backup } = validate<{ backup: { name?: string | null; description?: string | null; metadata?: Record<string, string> | null } }>(
        { type: 'object', required: ['backup'], properties: { backup: { type: 'object', properties: { name: nameSchema, description: descriptionSchema, metadata: { ...metadataSchema, nullable: true } as Schema } } } },
        ctx.body ?? null,
      );
      if (backup.metadata) {
        if (ctx.microversion < 43) throw errors.badRequest("Invalid input: backup 'metadata' needs microversion 3.43 or later.");
        checkMetadataKeys(backup.metadata);
      }
      const row = service.update(auth(ctx), ctx.params['id']!, { name: backup.name, description: backup.description, metadata: backup.metadata ?? undefined });
      return { status: 200, body: { backup: renderRows(ctx, [row])[0] } };
    });

    router.delete('/v3/backups/:id', (ctx) => {
      service.delete(auth(ctx), ctx.params['id']!, false);
      return { status: 202 };
    });

    router.post('/v3/backups/:id/restore', (ctx) => {
      const { restore } = validate<{ restore: { volume_id?: string | null; name?: string | null } | null }>(
        { type: 'object', required: ['restore'], properties: { restore: { type: 'object', nullable: true, properties: { volume_id: { type: 'uuid', nullable: true }, name: nameSchema } } } },
        ctx.body ?? null,
      );
      const result = service.restore(auth(ctx), ctx.params['id']!, { volumeId: restore?.volume_id ?? null, name: restore?.name ?? null }, ctx.requestId);
      return { status: 202, body: { restore: { backup_id: result.backupId, volume_id: result.volumeId, volume_name: result.volumeName } } };
    });

    router.post('/v3/backups/:id/action', (ctx) => {
      const body = validate<Record<string, unknown>>(
        {
          type: 'object',
          maxProperties: 1,
          properties: {
            'os-reset_status': { type: 'object', required: ['status'], properties: { status: { type: 'string', maxLength: 255 } } },
            'os-force_delete': { type: 'object', nullable: true, additional: true },
          },
        },
        ctx.body ?? null,
      );
      const id = ctx.params['id']!;
      if (body['os-reset_status']) {
        service.resetStatus(auth(ctx), id, (body['os-reset_status'] as { status: string }).status);
        return { status: 202 };
      }
      if ('os-force_delete' in body) {
        service.delete(auth(ctx), id, true);
        return { status: 202 };
      }
      throw errors.badRequest('Invalid input: the backup action must be one of os-reset_status, os-force_delete.');
    });
  };
}
