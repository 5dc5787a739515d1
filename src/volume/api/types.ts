/**
 * Routes of /types: volume types, their extra specs and access lists. Rules
 * and SQL live in `../types.ts`.
 */
import { Type } from '@sinclair/typebox';
import { errors } from '../../errors.ts';
import { route, type AnyRouteSpec } from '../../http/declare.ts';
import { checkMetadataKeys, metadataSchema, queryBool, validate, type Schema } from '../../http/validate.ts';
import type { VolumeTypeRow } from '../records.ts';
import { auth, declaredBody, type Ctx, type VolumeRouteDeps } from './common.ts';
import { ExtraSpecsBody, TypeAccessList, VolumeTypeCreated, VolumeTypeDetail, VolumeTypeUpdated } from './schemas.ts';

const Params = Type.Object({ id: Type.String({ minLength: 1 }) });
const KeyParams = Type.Object({ id: Type.String({ minLength: 1 }), key: Type.String({ minLength: 1 }) });
const typeNameSchema: Schema = { type: 'string', minLength: 1, maxLength: 255, pattern: /\S/, patternHelp: 'a non-blank name' };
const createSchema: Schema = {
  type: 'object', required: ['volume_type'],
  properties: {
    volume_type: {
      type: 'object', required: ['name'],
      properties: {
        name: typeNameSchema, description: { type: 'string', maxLength: 255, nullable: true },
        'os-volume-type-access:is_public': { type: 'boolean', allowString: true }, is_public: { type: 'boolean', allowString: true },
        extra_specs: metadataSchema,
      },
    },
  },
};
const updateSchema: Schema = {
  type: 'object', required: ['volume_type'],
  properties: { volume_type: { type: 'object', properties: { name: typeNameSchema, description: { type: 'string', maxLength: 255, nullable: true }, is_public: { type: 'boolean', allowString: true } } } },
};
const extraSpecsSchema: Schema = { type: 'object', required: ['extra_specs'], properties: { extra_specs: metadataSchema } };
const extraSpecItemSchema: Schema = { ...metadataSchema, maxProperties: 1 } as Schema;
const accessSchema: Schema = {
  type: 'object',
  properties: {
    addProjectAccess: { type: 'object', required: ['project'], properties: { project: { type: 'string', minLength: 1, maxLength: 64 } } },
    removeProjectAccess: { type: 'object', required: ['project'], properties: { project: { type: 'string', minLength: 1, maxLength: 64 } } },
  },
};

export function typeRoutes(deps: VolumeRouteDeps): AnyRouteSpec[] {
  const { service, types } = deps;
  /** Cinder's type view: extra_specs where access_types_extra_specs allows, qos_specs_id for administrators; `view` selects the access extension's key. */
  const render = (ctx: Ctx, t: VolumeTypeRow, view: 'detail' | 'create' | 'update') => {
    const body: Record<string, unknown> = { id: t.id, name: t.name, description: t.description, is_public: !!t.is_public };
    if (ctx.can('volume_extension:access_types_extra_specs')) body['extra_specs'] = types.visibleSpecs(auth(ctx), t.id);
    if (view !== 'update') body['os-volume-type-access:is_public'] = !!t.is_public;
    if (view === 'detail' && ctx.can('volume_extension:access_types_qos_specs_id')) body['qos_specs_id'] = t.qos_specs_id ?? null;
    return body;
  };
  const typeOf = (ctx: Ctx) => types.get(auth(ctx), ctx.params['id']!);
  return [
    route({
      method: 'GET', path: '/v3/types', policy: 'volume_extension:type_get_all',
      query: Type.Object({ is_public: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: Type.Object({ volume_types: Type.Array(VolumeTypeDetail) }, { additionalProperties: false }) },
      handler(ctx) {
        const raw = ctx.query.get('is_public');
        const isPublic = raw === null ? null : raw.toLowerCase() === 'none' ? 'none' : queryBool(raw, 'is_public')!;
        return { status: 200, body: { volume_types: types.list(auth(ctx), isPublic).map((t) => render(ctx, t, 'detail')) } };
      },
    }),
    route({
      method: 'GET', path: '/v3/types/:id', policy: 'volume_extension:type_get', params: Params,
      responses: { 200: Type.Object({ volume_type: VolumeTypeDetail }, { additionalProperties: false }) },
      handler: (ctx) => ({ status: 200, body: { volume_type: render(ctx, typeOf(ctx), 'detail') } }),
    }),
    route({
      method: 'POST', path: '/v3/types', policy: 'volume_extension:type_create', body: declaredBody(createSchema),
      responses: { 200: Type.Object({ volume_type: VolumeTypeCreated }, { additionalProperties: false }) },
      handler(ctx) {
        const { volume_type: input } = validate<{ volume_type: { name: string; description?: string | null; 'os-volume-type-access:is_public'?: boolean; is_public?: boolean; extra_specs?: Record<string, string> } }>(createSchema, ctx.body ?? null);
        if (input.extra_specs) checkMetadataKeys(input.extra_specs);
        const row = types.create({
          name: input.name,
          description: input.description ?? null,
          isPublic: input['os-volume-type-access:is_public'] ?? input.is_public ?? true,
          extraSpecs: input.extra_specs ?? {},
        });
        return { status: 200, body: { volume_type: render(ctx, row, 'create') } };
      },
    }),
    route({
      method: 'PUT', path: '/v3/types/:id', policy: 'volume_extension:type_update', params: Params, body: declaredBody(updateSchema),
      responses: { 200: Type.Object({ volume_type: VolumeTypeUpdated }, { additionalProperties: false }) },
      handler(ctx) {
        const type = typeOf(ctx);
        const { volume_type: input } = validate<{ volume_type: { name?: string; description?: string | null; is_public?: boolean } }>(updateSchema, ctx.body ?? null);
        const row = types.update(type, { name: input.name, description: input.description, isPublic: input.is_public });
        return { status: 200, body: { volume_type: render(ctx, row, 'update') } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/types/:id', policy: 'volume_extension:type_delete', params: Params,
      responses: { 202: null },
      handler(ctx) {
        types.delete(typeOf(ctx));
        return { status: 202 };
      },
    }),
    route({
      method: 'GET', path: '/v3/types/:id/extra_specs', policy: 'volume_extension:types_extra_specs:index', params: Params,
      responses: { 200: ExtraSpecsBody },
      handler: (ctx) => ({ status: 200, body: { extra_specs: service.extraSpecs(typeOf(ctx).id) } }),
    }),
    route({
      method: 'POST', path: '/v3/types/:id/extra_specs', policy: 'volume_extension:types_extra_specs:create', params: Params, body: declaredBody(extraSpecsSchema),
      responses: { 200: ExtraSpecsBody },
      handler(ctx) {
        const type = typeOf(ctx);
        const { extra_specs: specs } = validate<{ extra_specs: Record<string, string> }>(extraSpecsSchema, ctx.body ?? null);
        checkMetadataKeys(specs);
        types.setSpecs(type.id, specs);
        return { status: 200, body: { extra_specs: specs } };
      },
    }),
    route({
      method: 'GET', path: '/v3/types/:id/extra_specs/:key', policy: 'volume_extension:types_extra_specs:show', params: KeyParams,
      responses: { 200: Type.Record(Type.String(), Type.String(), { minProperties: 1, maxProperties: 1 }) },
      handler(ctx) {
        const specs = service.extraSpecs(typeOf(ctx).id);
        const key = ctx.params['key']!;
        if (!Object.hasOwn(specs, key)) throw errors.notFound('Volume type extra spec', key);
        return { status: 200, body: { [key]: specs[key] } };
      },
    }),
    route({
      method: 'PUT', path: '/v3/types/:id/extra_specs/:key', policy: 'volume_extension:types_extra_specs:update', params: KeyParams, body: declaredBody(extraSpecItemSchema),
      responses: { 200: Type.Record(Type.String(), Type.String(), { minProperties: 1, maxProperties: 1 }) },
      handler(ctx) {
        const type = typeOf(ctx);
        const key = ctx.params['key']!;
        const body = validate<Record<string, string>>(extraSpecItemSchema, ctx.body ?? null);
        checkMetadataKeys(body);
        // hasOwn, not `in`: URL key 'toString' would otherwise find Object.prototype.toString and bind a function (500).
        if (!Object.hasOwn(body, key)) throw errors.badRequest(`Request body and URI mismatch: the body must set key '${key}'.`);
        types.setSpecs(type.id, { [key]: body[key]! });
        return { status: 200, body: { [key]: body[key] } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/types/:id/extra_specs/:key', policy: 'volume_extension:types_extra_specs:delete', params: KeyParams,
      responses: { 202: null },
      handler(ctx) {
        types.deleteSpec(typeOf(ctx).id, ctx.params['key']!);
        return { status: 202 };
      },
    }),
    route({
      method: 'GET', path: '/v3/types/:id/os-volume-type-access', policy: 'volume_extension:volume_type_access:get_all_for_type', params: Params,
      responses: { 200: TypeAccessList },
      handler(ctx) {
        const type = typeOf(ctx);
        return { status: 200, body: { volume_type_access: types.accessList(type).map((projectId) => ({ volume_type_id: type.id, project_id: projectId })) } };
      },
    }),
    route({
      method: 'POST', path: '/v3/types/:id/action', params: Params, body: declaredBody(accessSchema),
      // addProjectAccess and removeProjectAccess have their own rules, checked in the handler.
      policy: '@',
      responses: { 202: null },
      handler(ctx) {
        const body = validate<{ addProjectAccess?: { project: string }; removeProjectAccess?: { project: string } }>(accessSchema, ctx.body ?? null);
        if (body.addProjectAccess) ctx.authorize('volume_extension:volume_type_access:addProjectAccess');
        else if (body.removeProjectAccess) ctx.authorize('volume_extension:volume_type_access:removeProjectAccess');
        else {
          ctx.authorize('volume_extension:volume_type_access:addProjectAccess');
          throw errors.badRequest('Give addProjectAccess or removeProjectAccess.');
        }
        const type = typeOf(ctx);
        if (body.addProjectAccess) types.addAccess(type, body.addProjectAccess.project);
        else types.removeAccess(type, body.removeProjectAccess!.project);
        return { status: 202 };
      },
    }),
  ];
}
