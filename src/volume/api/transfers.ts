/**
 * Volume transfers: `/volume-transfers` (3.55+, with `no_snapshots`; source
 * and destination projects and `accepted` from 3.57) and the older
 * `/os-volume-transfer` (every microversion, Cinder's original view). Rules
 * in `../transfers.ts`; Cinder's policy names (`volume:create_transfer`, ...).
 */
import { Type, type TSchema } from '@sinclair/typebox';
import { cinderTime } from '../../db/db.ts';
import { Nullable, route, type AnyRouteSpec } from '../../http/declare.ts';
import type { RequestContext } from '../../http/router.ts';
import { queryBool, validate, type Schema } from '../../http/validate.ts';
import { volumeLinks } from '../records.ts';
import type { TransferRow, VolumeTransfers } from '../transfers.ts';
import { auth, declaredBody, microversionMax, renderOptions } from './common.ts';
import { Links, perVersion } from './schemas.ts';

const closed = { additionalProperties: false } as const;
const Params = Type.Object({ id: Type.String({ minLength: 1, maxLength: 255 }) });

const legacyCreateSchema: Schema = {
  type: 'object', required: ['transfer'],
  properties: { transfer: { type: 'object', required: ['volume_id'], properties: { volume_id: { type: 'uuid' }, name: { type: 'string', maxLength: 255, nullable: true } } } },
};
const createSchema: Schema = {
  type: 'object', required: ['transfer'],
  properties: {
    transfer: {
      type: 'object', required: ['volume_id'],
      properties: { volume_id: { type: 'uuid' }, name: { type: 'string', maxLength: 255, nullable: true }, no_snapshots: { type: 'boolean', allowString: true } },
    },
  },
};
const acceptSchema: Schema = {
  type: 'object', required: ['accept'],
  properties: { accept: { type: 'object', required: ['auth_key'], properties: { auth_key: { type: 'string', minLength: 1, maxLength: 255 } } } },
};

/** What a transfer's view holds at `mv` on `/volume-transfers` (modern) or `/os-volume-transfer` (legacy). */
function transferFields(modern: boolean, mv: number): Record<string, TSchema> {
  return {
    id: Type.String(), name: Nullable(Type.String()), volume_id: Type.String(), created_at: Type.String(), links: Links,
    ...(modern && mv >= 55 ? { no_snapshots: Type.Boolean() } : {}),
    ...(modern && mv >= 57 ? { source_project_id: Type.String(), destination_project_id: Nullable(Type.String()), accepted: Type.Boolean() } : {}),
  };
}
const TransferSummary = Type.Object({ id: Type.String(), name: Nullable(Type.String()), volume_id: Type.String(), links: Links }, closed);

export function transferRoutes(transfers: VolumeTransfers): AnyRouteSpec[] {
  const routesAt = (collection: 'volume-transfers' | 'os-volume-transfer'): AnyRouteSpec[] => {
    const modern = collection === 'volume-transfers';
    const versions = modern ? { min: 55, max: microversionMax } : undefined;
    const boundaries = modern ? [55, 57] : [];
    const links = (ctx: RequestContext, id: string) => volumeLinks(renderOptions(ctx), id, collection);
    const render = (ctx: RequestContext, row: TransferRow) => ({
      id: row.id, name: row.name, volume_id: row.volume_id, created_at: cinderTime(row.created_at), links: links(ctx, row.id),
      ...(modern ? { no_snapshots: !!row.no_snapshots } : {}),
      ...(modern && ctx.microversion >= 57 ? { source_project_id: row.source_project_id, destination_project_id: row.destination_project_id, accepted: !!row.accepted } : {}),
    });
    const Detail = (mv: number) => Type.Object(transferFields(modern, mv), closed);
    const base = `/v3/${collection}`;
    const list = (detail: boolean) => (ctx: RequestContext) => {
      const allProjects = queryBool(ctx.query.get('all_tenants'), 'all_tenants') ?? false;
      const rows = transfers.list(auth(ctx), allProjects);
      return { status: 200, body: { transfers: rows.map((r) => (detail ? render(ctx, r) : { id: r.id, name: r.name, volume_id: r.volume_id, links: links(ctx, r.id) })) } };
    };
    const AllTenants = Type.Object({ all_tenants: Type.Optional(Type.String({ maxLength: 16 })) }, closed);
    return [
      route({
        method: 'POST', path: base, policy: 'volume:create_transfer', versions, body: declaredBody(modern ? createSchema : legacyCreateSchema),
        summary: 'Offer a volume to another project; the auth key is shown only here',
        responses: { 202: perVersion(boundaries, (mv) => Type.Object({ transfer: Type.Object({ ...transferFields(modern, mv), auth_key: Type.String() }, closed) }, closed)) },
        handler(ctx) {
          const { transfer } = validate<{ transfer: { volume_id: string; name?: string | null; no_snapshots?: boolean } }>(modern ? createSchema : legacyCreateSchema, ctx.body ?? null);
          const { row, authKey } = transfers.create(auth(ctx), { volumeId: transfer.volume_id, name: transfer.name ?? null, noSnapshots: transfer.no_snapshots ?? false });
          return { status: 202, body: { transfer: { ...render(ctx, row), auth_key: authKey } } };
        },
      }),
      route({
        method: 'GET', path: base, policy: 'volume:get_all_transfers', versions, query: AllTenants,
        responses: { 200: Type.Object({ transfers: Type.Array(TransferSummary) }, closed) },
        handler: list(false),
      }),
      route({
        method: 'GET', path: `${base}/detail`, policy: 'volume:get_all_transfers', versions, query: AllTenants,
        responses: { 200: perVersion(boundaries, (mv) => Type.Object({ transfers: Type.Array(Detail(mv)) }, closed)) },
        handler: list(true),
      }),
      route({
        method: 'GET', path: `${base}/:id`, policy: 'volume:get_transfer', versions, params: Params,
        responses: { 200: perVersion(boundaries, (mv) => Type.Object({ transfer: Detail(mv) }, closed)) },
        handler: (ctx) => ({ status: 200, body: { transfer: render(ctx, transfers.transfer(auth(ctx), ctx.params['id']!)) } }),
      }),
      route({
        method: 'POST', path: `${base}/:id/accept`, policy: 'volume:accept_transfer', versions, params: Params, body: declaredBody(acceptSchema),
        summary: 'Take the volume into the caller\'s project with the auth key',
        responses: { 202: Type.Object({ transfer: TransferSummary }, closed) },
        handler(ctx) {
          const { accept } = validate<{ accept: { auth_key: string } }>(acceptSchema, ctx.body ?? null);
          const row = transfers.accept(auth(ctx), ctx.params['id']!, accept.auth_key);
          return { status: 202, body: { transfer: { id: row.id, name: row.name, volume_id: row.volume_id, links: links(ctx, row.id) } } };
        },
      }),
      route({
        method: 'DELETE', path: `${base}/:id`, policy: 'volume:delete_transfer', versions, params: Params,
        responses: { 202: null },
        handler(ctx) {
          transfers.delete(auth(ctx), ctx.params['id']!);
          return { status: 202 };
        },
      }),
    ];
  };
  return [...routesAt('volume-transfers'), ...routesAt('os-volume-transfer')];
}
