/**
 * Routes of /snapshots: list (summary and detail), create, show, update,
 * delete, and the admin actions (os-reset_status, os-force_delete, os-unmanage).
 */
import { Type } from '@sinclair/typebox';
import { errors } from '../../errors.ts';
import { route, type AnyRouteSpec } from '../../http/declare.ts';
import { checkMetadataKeys, metadataSchema, validate, type Schema } from '../../http/validate.ts';
import { renderSnapshot, type SnapshotRow } from '../records.ts';
import { auth, collectionLinks, declaredBody, listQuery, parseDictParam, renderOptions, scopeToProject, type Ctx, type VolumeRouteDeps } from './common.ts';
import { snapshotListResponses, snapshotResponses } from './schemas.ts';
import { descriptionSchema, nameSchema } from './volumes.ts';

const snapshotSortColumns: Record<string, string> = {
  created_at: 'created_at', updated_at: "COALESCE(updated_at, '')", id: 'id', name: "COALESCE(name, '')", status: 'status', size: 'size_gib', volume_id: 'volume_id',
};
const Params = Type.Object({ id: Type.String({ minLength: 1 }) });

const createSchema: Schema = {
  type: 'object', required: ['snapshot'],
  properties: {
    snapshot: {
      type: 'object', required: ['volume_id'],
      properties: {
        volume_id: { type: 'uuid' }, name: nameSchema, display_name: nameSchema, description: descriptionSchema, display_description: descriptionSchema,
        force: { type: 'boolean', allowString: true, nullable: true }, metadata: { ...metadataSchema, nullable: true } as Schema,
      },
    },
  },
};
const updateSchema: Schema = {
  type: 'object', required: ['snapshot'],
  properties: { snapshot: { type: 'object', properties: { name: nameSchema, display_name: nameSchema, description: descriptionSchema, display_description: descriptionSchema } } },
};
const resetStatusSchema: Schema = { type: 'object', required: ['status'], properties: { status: { type: 'string', maxLength: 255 } } };
const ActionBody = {
  type: 'object',
  properties: { 'os-reset_status': declaredBody(resetStatusSchema), 'os-force_delete': {}, 'os-unmanage': {} },
  additionalProperties: false, minProperties: 1, maxProperties: 1,
} as unknown as ReturnType<typeof declaredBody>;

export function snapshotRoutes(deps: VolumeRouteDeps): AnyRouteSpec[] {
  const { service, osapiMaxLimit } = deps;
  const list = (detail: boolean) => (ctx: Ctx) => {
    const query = listQuery(ctx, osapiMaxLimit, ['name', 'status', 'volume_id', 'metadata', 'project_id', 'display_name']);
    const q = ctx.query;
    for (const [param, column] of [['name', 'name'], ['display_name', 'name'], ['status', 'status'], ['volume_id', 'volume_id']] as const) {
      const value = q.get(param);
      if (value !== null) {
        query.conditions.push(`${column} = ?`);
        query.params.push(value);
      }
    }
    for (const [key, value] of Object.entries(parseDictParam(q.get('metadata'), 'metadata'))) {
      query.conditions.push('EXISTS (SELECT 1 FROM json_each(snapshots.metadata) m WHERE m.key = ? AND m.value = ?)');
      query.params.push(key, value);
    }
    scopeToProject(ctx, service, query);
    const page = service.listPage<SnapshotRow>('snapshots', query, snapshotSortColumns);
    const options = renderOptions(ctx);
    const body: Record<string, unknown> = { snapshots: page.rows.map((r) => renderSnapshot(options, r, detail ? 'detail' : 'summary')) };
    const links = collectionLinks(ctx, page.rows, query.limit);
    if (links) body['snapshots_links'] = links;
    if (page.count !== undefined) body['count'] = page.count;
    return { status: 200, body };
  };
  return [
    route({ method: 'GET', path: '/v3/snapshots', policy: 'volume:get_all_snapshots', responses: { 200: snapshotListResponses(false) }, handler: list(false) }),
    route({ method: 'GET', path: '/v3/snapshots/detail', policy: 'volume:get_all_snapshots', responses: { 200: snapshotListResponses(true) }, handler: list(true) }),
    route({
      method: 'POST', path: '/v3/snapshots', policy: 'volume:create_snapshot', body: declaredBody(createSchema),
      responses: { 202: snapshotResponses('summary') },
      handler(ctx) {
        const { snapshot } = validate<{ snapshot: { volume_id: string; name?: string | null; display_name?: string | null; description?: string | null; display_description?: string | null; force?: boolean; metadata?: Record<string, string> | null } }>(createSchema, ctx.body ?? null);
        if (snapshot.metadata) checkMetadataKeys(snapshot.metadata);
        const row = service.createSnapshot(auth(ctx), {
          volumeId: snapshot.volume_id,
          name: snapshot.name !== undefined ? snapshot.name : snapshot.display_name,
          description: snapshot.description !== undefined ? snapshot.description : snapshot.display_description,
          force: snapshot.force ?? false,
          metadata: snapshot.metadata ?? {},
        });
        return { status: 202, body: { snapshot: renderSnapshot(renderOptions(ctx), row, 'summary') } };
      },
    }),
    route({
      method: 'GET', path: '/v3/snapshots/:id', policy: 'volume:get_snapshot', params: Params,
      responses: { 200: snapshotResponses('detail') },
      handler: (ctx) => ({ status: 200, body: { snapshot: renderSnapshot(renderOptions(ctx), service.snapshot(auth(ctx), ctx.params['id']!)) } }),
    }),
    route({
      method: 'PUT', path: '/v3/snapshots/:id', policy: 'volume:update_snapshot', params: Params, body: declaredBody(updateSchema),
      responses: { 200: snapshotResponses('summary') },
      handler(ctx) {
        const { snapshot } = validate<{ snapshot: { name?: string | null; display_name?: string | null; description?: string | null; display_description?: string | null } }>(updateSchema, ctx.body ?? null);
        if (Object.keys(snapshot).length === 0) throw errors.badRequest("Nothing to update: give 'name' or 'description'.");
        const row = service.updateSnapshot(auth(ctx), ctx.params['id']!, {
          name: snapshot.name !== undefined ? snapshot.name : snapshot.display_name,
          description: snapshot.description !== undefined ? snapshot.description : snapshot.display_description,
        });
        return { status: 200, body: { snapshot: renderSnapshot(renderOptions(ctx), row, 'summary') } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/snapshots/:id', policy: 'volume:delete_snapshot', params: Params,
      responses: { 202: null },
      handler(ctx) {
        service.deleteSnapshot(auth(ctx), ctx.params['id']!, false);
        return { status: 202 };
      },
    }),
    route({
      method: 'POST', path: '/v3/snapshots/:id/action', params: Params, body: ActionBody,
      // os-reset_status and os-force_delete have their own admin rules, checked in the handler.
      policy: '@',
      responses: { 202: null },
      handler(ctx) {
        const [action, args] = Object.entries(ctx.body as Record<string, unknown>)[0]!;
        if (action === 'os-reset_status') {
          ctx.authorize('volume_extension:snapshot_admin_actions:reset_status');
          const { status } = validate<{ status: string }>(resetStatusSchema, args, action);
          service.resetSnapshotStatus(auth(ctx), ctx.params['id']!, status);
          return { status: 202 };
        }
        if (action === 'os-unmanage') {
          ctx.authorize('snapshot_extension:snapshot_unmanage');
          service.unmanageSnapshot(auth(ctx), ctx.params['id']!);
          return { status: 202 };
        }
        ctx.authorize('volume_extension:snapshot_admin_actions:force_delete');
        service.deleteSnapshot(auth(ctx), ctx.params['id']!, true);
        return { status: 202 };
      },
    }),
  ];
}
