/**
 * Routes of /qos-specs (Cinder's qos_specs_manage, administrators by
 * default): CRUD, keys, and the association with volume types (Cinder's
 * GET-with-effect associate/disassociate calls, as cinderclient and the
 * openstack CLI send them). Rules in `../qos.ts`.
 */
import { Type } from '@sinclair/typebox';
import { route, type AnyRouteSpec } from '../../http/declare.ts';
import type { RequestContext } from '../../http/router.ts';
import { queryBool } from '../../http/validate.ts';
import { qosConsumers, type QosConsumer, type QosSpecs, type QosSpecsRow } from '../qos.ts';
import { volumeLinks } from '../records.ts';
import { renderOptions } from './common.ts';
import { Links } from './schemas.ts';

const closed = { additionalProperties: false } as const;
const Params = Type.Object({ id: Type.String({ minLength: 1, maxLength: 255 }) });
const SpecKey = '^[^/]{1,255}$';
/** A spec's value: text or a number (stored as text, as Cinder does). */
const SpecValue = Type.Union([Type.String({ maxLength: 255 }), Type.Number()]);
const SpecMap = Type.Record(Type.String({ pattern: SpecKey }), Type.String());
const QosSpecsView = Type.Object({ id: Type.String(), name: Type.String(), consumer: Type.String(), specs: SpecMap }, closed);

const CreateBody = Type.Object({
  qos_specs: Type.Object({
    name: Type.String({ minLength: 1, maxLength: 255, pattern: '\\S' }),
    consumer: Type.Optional(Type.Union(qosConsumers.map((c) => Type.Literal(c)))),
  }, { additionalProperties: SpecValue, maxProperties: 64 }),
}, closed);
const SetBody = Type.Object({
  qos_specs: Type.Record(Type.String({ pattern: SpecKey }), SpecValue, { minProperties: 1, maxProperties: 64 }),
}, closed);
const DeleteKeysBody = Type.Object({ keys: Type.Array(Type.String({ minLength: 1, maxLength: 255 }), { minItems: 1, maxItems: 64 }) }, closed);
const TypeQuery = Type.Object({ vol_type_id: Type.String({ minLength: 1, maxLength: 255 }) }, closed);

function asText(values: Record<string, string | number>): Record<string, string> {
  return Object.fromEntries(Object.entries(values).map(([k, v]) => [k, String(v)]));
}

export function qosRoutes(qos: QosSpecs): AnyRouteSpec[] {
  const render = (row: QosSpecsRow) => ({ id: row.id, name: row.name, consumer: row.consumer, specs: JSON.parse(row.specs) as Record<string, string> });
  const links = (ctx: RequestContext, id: string) => volumeLinks(renderOptions(ctx), id, 'qos-specs');
  return [
    route({
      method: 'GET', path: '/v3/qos-specs', policy: 'volume_extension:qos_specs_manage:get_all',
      responses: { 200: Type.Object({ qos_specs: Type.Array(QosSpecsView) }, closed) },
      handler: () => ({ status: 200, body: { qos_specs: qos.list().map(render) } }),
    }),
    route({
      method: 'POST', path: '/v3/qos-specs', policy: 'volume_extension:qos_specs_manage:create', body: CreateBody,
      responses: { 200: Type.Object({ qos_specs: QosSpecsView, links: Links }, closed) },
      handler(ctx) {
        const { name, consumer, ...specs } = ctx.body.qos_specs as { name: string; consumer?: QosConsumer } & Record<string, string | number>;
        const row = qos.create(name.trim(), consumer ?? 'back-end', asText(specs as Record<string, string | number>));
        return { status: 200, body: { qos_specs: render(row), links: links(ctx, row.id) } };
      },
    }),
    route({
      method: 'GET', path: '/v3/qos-specs/:id', policy: 'volume_extension:qos_specs_manage:get', params: Params,
      responses: { 200: Type.Object({ qos_specs: QosSpecsView, links: Links }, closed) },
      handler(ctx) {
        const row = qos.get(ctx.params['id']!);
        return { status: 200, body: { qos_specs: render(row), links: links(ctx, row.id) } };
      },
    }),
    route({
      method: 'PUT', path: '/v3/qos-specs/:id', policy: 'volume_extension:qos_specs_manage:update', params: Params, body: SetBody,
      responses: { 200: Type.Object({ qos_specs: SpecMap }, closed) },
      handler: (ctx) => ({ status: 200, body: { qos_specs: qos.setKeys(ctx.params['id']!, asText(ctx.body.qos_specs)) } }),
    }),
    route({
      method: 'PUT', path: '/v3/qos-specs/:id/delete_keys', policy: 'volume_extension:qos_specs_manage:update', params: Params, body: DeleteKeysBody,
      responses: { 202: null },
      handler(ctx) {
        qos.deleteKeys(ctx.params['id']!, ctx.body.keys);
        return { status: 202 };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/qos-specs/:id', policy: 'volume_extension:qos_specs_manage:delete', params: Params,
      query: Type.Object({ force: Type.Optional(Type.String({ maxLength: 16 })) }, closed),
      responses: { 202: null },
      handler(ctx) {
        qos.delete(ctx.params['id']!, queryBool(ctx.query.get('force'), 'force') ?? false);
        return { status: 202 };
      },
    }),
    route({
      method: 'GET', path: '/v3/qos-specs/:id/associations', policy: 'volume_extension:qos_specs_manage:get_all', params: Params,
      responses: { 200: Type.Object({ qos_associations: Type.Array(Type.Object({ association_type: Type.String(), id: Type.String(), name: Type.String() }, closed)) }, closed) },
      handler(ctx) {
        const id = ctx.params['id']!;
        qos.get(id);
        return { status: 200, body: { qos_associations: qos.associations(id).map((t) => ({ association_type: 'volume_type', id: t.id, name: t.name })) } };
      },
    }),
    route({
      method: 'GET', path: '/v3/qos-specs/:id/associate', policy: 'volume_extension:qos_specs_manage:update', params: Params, query: TypeQuery,
      responses: { 202: null },
      handler(ctx) {
        qos.associate(ctx.params['id']!, ctx.queryParams.vol_type_id);
        return { status: 202 };
      },
    }),
    route({
      method: 'GET', path: '/v3/qos-specs/:id/disassociate', policy: 'volume_extension:qos_specs_manage:update', params: Params, query: TypeQuery,
      responses: { 202: null },
      handler(ctx) {
        qos.disassociate(ctx.params['id']!, ctx.queryParams.vol_type_id);
        return { status: 202 };
      },
    }),
    route({
      method: 'GET', path: '/v3/qos-specs/:id/disassociate_all', policy: 'volume_extension:qos_specs_manage:update', params: Params,
      responses: { 202: null },
      handler(ctx) {
        qos.disassociate(ctx.params['id']!, null);
        return { status: 202 };
      },
    }),
  ];
}

