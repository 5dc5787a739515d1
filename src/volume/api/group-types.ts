/**
 * Routes of /group_types (3.11+): group types, their group specs, and the
 * default group type. Rules and SQL in `../groups.ts`; Cinder's policy
 * names (`group:group_types:*`, `group:group_types_specs:*`,
 * `group:access_group_types_specs`), in `groupPolicyDefaults` (./groups.ts).
 */
import { Type } from '@sinclair/typebox';
import { errors } from '../../errors.ts';
import { Nullable, route, type AnyRouteSpec } from '../../http/declare.ts';
import { checkMetadataKeys, metadataSchema, queryBool, validate, type Schema } from '../../http/validate.ts';
import type { GroupTypeRow, GroupTypes } from '../groups.ts';
import { auth, declaredBody, microversionMax, type Ctx } from './common.ts';

const closed = { additionalProperties: false } as const;
/** Group types came with microversion 3.11. */
const versions = { min: 11, max: microversionMax };
const Params = Type.Object({ id: Type.String({ minLength: 1, maxLength: 255 }) }, closed);
const KeyParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 255 }), key: Type.String({ minLength: 1, maxLength: 255 }) }, closed);

const typeNameSchema: Schema = { type: 'string', minLength: 1, maxLength: 255, pattern: /\S/, patternHelp: 'a non-blank name' };
const createSchema: Schema = {
  type: 'object', required: ['group_type'],
  properties: {
    group_type: {
      type: 'object', required: ['name'],
      properties: { name: typeNameSchema, description: { type: 'string', maxLength: 255, nullable: true }, is_public: { type: 'boolean', allowString: true }, group_specs: metadataSchema },
    },
  },
};
const updateSchema: Schema = {
  type: 'object', required: ['group_type'],
  properties: { group_type: { type: 'object', properties: { name: typeNameSchema, description: { type: 'string', maxLength: 255, nullable: true }, is_public: { type: 'boolean', allowString: true } } } },
};
const specsSchema: Schema = { type: 'object', required: ['group_specs'], properties: { group_specs: metadataSchema } };
const specItemSchema: Schema = { ...metadataSchema, maxProperties: 1 } as Schema;

const GroupSpecs = Type.Record(Type.String(), Type.String());
const GroupType = Type.Object({
  id: Type.String(), name: Type.String(), description: Nullable(Type.String()), is_public: Type.Boolean(), group_specs: Type.Optional(GroupSpecs),
}, closed);
const OneGroupType = Type.Object({ group_type: GroupType }, closed);
const SpecItem = Type.Record(Type.String(), Type.String(), { minProperties: 1, maxProperties: 1 });

export function groupTypeRoutes(types: GroupTypes): AnyRouteSpec[] {
  /** Cinder's view: group_specs only where group:access_group_types_specs allows (administrators by default). */
  const render = (ctx: Ctx, t: GroupTypeRow) => ({
    id: t.id, name: t.name, description: t.description, is_public: !!t.is_public,
    ...(ctx.can('group:access_group_types_specs') ? { group_specs: types.specs(t.id) } : {}),
  });
  const typeOf = (ctx: Ctx) => types.get(auth(ctx), ctx.params['id']!);
  return [
    route({
      method: 'GET', path: '/v3/group_types', policy: '@', versions,
      query: Type.Object({ is_public: Type.Optional(Type.String({ maxLength: 16 })) }, closed),
      responses: { 200: Type.Object({ group_types: Type.Array(GroupType) }, closed) },
      handler(ctx) {
        const raw = ctx.query.get('is_public');
        const isPublic = raw === null || raw.toLowerCase() === 'none' ? null : queryBool(raw, 'is_public')!;
        return { status: 200, body: { group_types: types.list(auth(ctx), isPublic).map((t) => render(ctx, t)) } };
      },
    }),
    route({
      method: 'GET', path: '/v3/group_types/default', policy: '@', versions,
      summary: 'The group type named by [DEFAULT] default_group_type',
      responses: { 200: OneGroupType },
      handler: (ctx) => ({ status: 200, body: { group_type: render(ctx, types.defaultType(auth(ctx))) } }),
    }),
    route({
      method: 'GET', path: '/v3/group_types/:id', policy: '@', versions, params: Params,
      responses: { 200: OneGroupType },
      handler: (ctx) => ({ status: 200, body: { group_type: render(ctx, typeOf(ctx)) } }),
    }),
    route({
      method: 'POST', path: '/v3/group_types', policy: 'group:group_types:create', versions, body: declaredBody(createSchema),
      responses: { 202: OneGroupType },
      handler(ctx) {
        const { group_type: input } = validate<{ group_type: { name: string; description?: string | null; is_public?: boolean; group_specs?: Record<string, string> } }>(createSchema, ctx.body ?? null);
        if (input.group_specs) checkMetadataKeys(input.group_specs);
        const row = types.create({ name: input.name.trim(), description: input.description ?? null, isPublic: input.is_public ?? true, specs: input.group_specs ?? {} });
        return { status: 202, body: { group_type: render(ctx, row) } };
      },
    }),
    route({
      method: 'PUT', path: '/v3/group_types/:id', policy: 'group:group_types:update', versions, params: Params, body: declaredBody(updateSchema),
      responses: { 200: OneGroupType },
      handler(ctx) {
        const { group_type: input } = validate<{ group_type: { name?: string; description?: string | null; is_public?: boolean } }>(updateSchema, ctx.body ?? null);
        if (Object.keys(input).length === 0) throw errors.badRequest("Nothing to update: give 'name', 'description' or 'is_public'.");
        const row = types.update(typeOf(ctx), { name: input.name?.trim(), description: input.description, isPublic: input.is_public });
        return { status: 200, body: { group_type: render(ctx, row) } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/group_types/:id', policy: 'group:group_types:delete', versions, params: Params,
      responses: { 202: null },
      handler(ctx) {
        types.delete(typeOf(ctx));
        return { status: 202 };
      },
    }),
    route({
      method: 'GET', path: '/v3/group_types/:id/group_specs', policy: 'group:group_types_specs:get_all', versions, params: Params,
      responses: { 200: Type.Object({ group_specs: GroupSpecs }, closed) },
      handler: (ctx) => ({ status: 200, body: { group_specs: types.specs(typeOf(ctx).id) } }),
    }),
    route({
      method: 'POST', path: '/v3/group_types/:id/group_specs', policy: 'group:group_types_specs:create', versions, params: Params, body: declaredBody(specsSchema),
      responses: { 202: Type.Object({ group_specs: GroupSpecs }, closed) },
      handler(ctx) {
        const type = typeOf(ctx);
        const { group_specs: specs } = validate<{ group_specs: Record<string, string> }>(specsSchema, ctx.body ?? null);
        checkMetadataKeys(specs);
        types.setSpecs(type.id, specs);
        return { status: 202, body: { group_specs: specs } };
      },
    }),
    route({
      method: 'GET', path: '/v3/group_types/:id/group_specs/:key', policy: 'group:group_types_specs:get', versions, params: KeyParams,
      responses: { 200: SpecItem },
      handler(ctx) {
        const specs = types.specs(typeOf(ctx).id);
        const key = ctx.params['key']!;
        if (!Object.hasOwn(specs, key)) throw errors.notFound('Group type spec', `'${key}' of group type ${ctx.params['id']}`);
        return { status: 200, body: { [key]: specs[key] } };
      },
    }),
    route({
      method: 'PUT', path: '/v3/group_types/:id/group_specs/:key', policy: 'group:group_types_specs:update', versions, params: KeyParams, body: declaredBody(specItemSchema),
      responses: { 200: SpecItem },
      handler(ctx) {
        const type = typeOf(ctx);
        const key = ctx.params['key']!;
        const body = validate<Record<string, string>>(specItemSchema, ctx.body ?? null);
        checkMetadataKeys(body);
        if (!Object.hasOwn(body, key)) throw errors.badRequest(`Request body and URI mismatch: the body must set key '${key}'.`);
        types.setSpecs(type.id, { [key]: body[key]! });
        return { status: 200, body: { [key]: body[key] } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/group_types/:id/group_specs/:key', policy: 'group:group_types_specs:delete', versions, params: KeyParams,
      responses: { 202: null },
      handler(ctx) {
        types.deleteSpec(typeOf(ctx).id, ctx.params['key']!);
        return { status: 202 };
      },
    }),
  ];
}
