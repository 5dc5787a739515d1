/**
 * Routes of /groups (3.13+) and /group_snapshots (3.14+): generic volume
 * groups, their update (add/remove volumes), delete (with delete-volumes),
 * create-from-src (3.14), reset_status (groups 3.20, group snapshots 3.19).
 * Rules and SQL in `../groups.ts`; Cinder's policy names below.
 */
import { Type, type TSchema } from '@sinclair/typebox';
import { cinderTime } from '../../db/db.ts';
import { errors } from '../../errors.ts';
import { Nullable, route, type AnyRouteSpec } from '../../http/declare.ts';
import { queryBool, validate, type Schema } from '../../http/validate.ts';
import { groupVolumesMax, groupVolumeTypesMax, type GroupListFilter, type GroupRow, type GroupSnapshotRow, type VolumeGroups } from '../groups.ts';
import { auth, declaredBody, microversionMax, type Ctx } from './common.ts';
import { perVersion } from './schemas.ts';

/** Cinder's group policies (2023.x defaults: readers read, members write in their project, admins reset and manage types). */
export const groupPolicyDefaults: Record<string, string> = {
  'group:group_types:create': 'rule:admin_api',
  'group:group_types:update': 'rule:admin_api',
  'group:group_types:delete': 'rule:admin_api',
  'group:access_group_types_specs': 'rule:admin_api',
  'group:group_types_specs:get': 'rule:admin_api',
  'group:group_types_specs:get_all': 'rule:admin_api',
  'group:group_types_specs:create': 'rule:admin_api',
  'group:group_types_specs:update': 'rule:admin_api',
  'group:group_types_specs:delete': 'rule:admin_api',
  'group:get_all': 'rule:project_reader_or_admin',
  'group:create': 'rule:project_member_or_admin',
  'group:get': 'rule:project_reader_or_admin',
  'group:update': 'rule:project_member_or_admin',
  'group:delete': 'rule:project_member_or_admin',
  'group:reset_status': 'rule:admin_api',
  'group:get_all_group_snapshots': 'rule:project_reader_or_admin',
  'group:create_group_snapshot': 'rule:project_member_or_admin',
  'group:get_group_snapshot': 'rule:project_reader_or_admin',
  'group:delete_group_snapshot': 'rule:project_member_or_admin',
  'group:reset_group_snapshot_status': 'rule:admin_api',
};

const closed = { additionalProperties: false } as const;
const groupVersions = { min: 13, max: microversionMax };
const snapshotVersions = { min: 14, max: microversionMax };
const Params = Type.Object({ id: Type.String({ minLength: 1, maxLength: 255 }) }, closed);
const nameSchema: Schema = { type: 'string', maxLength: 255, nullable: true };
const descriptionSchema: Schema = { type: 'string', maxLength: 255, nullable: true };
/** Comma-separated volume ids (Cinder's add_volumes / remove_volumes); 37 characters per id at most. */
const idListSchema: Schema = { type: 'string', maxLength: groupVolumesMax * 37, nullable: true };

const createSchema: Schema = {
  type: 'object', required: ['group'],
  properties: {
    group: {
      type: 'object', required: ['group_type', 'volume_types'],
      properties: {
        name: nameSchema, description: descriptionSchema, group_type: { type: 'string', minLength: 1, maxLength: 255 },
        volume_types: { type: 'array', items: { type: 'string', minLength: 1, maxLength: 255 }, maxItems: groupVolumeTypesMax },
        availability_zone: { type: 'string', minLength: 1, maxLength: 255, nullable: true },
      },
    },
  },
};
const updateSchema: Schema = {
  type: 'object', required: ['group'],
  properties: { group: { type: 'object', properties: { name: nameSchema, description: descriptionSchema, add_volumes: idListSchema, remove_volumes: idListSchema } } },
};
const fromSourceSchema: Schema = {
  type: 'object', required: ['create-from-src'],
  properties: {
    'create-from-src': {
      type: 'object',
      properties: { name: nameSchema, description: descriptionSchema, group_snapshot_id: { type: 'uuid', nullable: true }, source_group_id: { type: 'uuid', nullable: true } },
    },
  },
};
const deleteSchema: Schema = { type: 'object', properties: { 'delete-volumes': { type: 'boolean', allowString: true } } };
const resetStatusSchema: Schema = { type: 'object', required: ['status'], properties: { status: { type: 'string', minLength: 1, maxLength: 255 } } };
const GroupActionBody = {
  type: 'object',
  properties: { delete: declaredBody(deleteSchema), reset_status: declaredBody(resetStatusSchema) },
  additionalProperties: false, minProperties: 1, maxProperties: 1,
} as unknown as TSchema;
const snapshotCreateSchema: Schema = {
  type: 'object', required: ['group_snapshot'],
  properties: { group_snapshot: { type: 'object', required: ['group_id'], properties: { group_id: { type: 'uuid' }, name: nameSchema, description: descriptionSchema } } },
};
const SnapshotActionBody = {
  type: 'object', properties: { reset_status: declaredBody(resetStatusSchema) }, additionalProperties: false, minProperties: 1, maxProperties: 1,
} as unknown as TSchema;

const ListQuery = Type.Object({
  limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,9}$' })), marker: Type.Optional(Type.String({ maxLength: 255 })),
  all_tenants: Type.Optional(Type.String({ maxLength: 16 })), project_id: Type.Optional(Type.String({ maxLength: 64 })),
  name: Type.Optional(Type.String({ maxLength: 255 })), status: Type.Optional(Type.String({ maxLength: 255 })),
}, closed);
const GroupListQuery = Type.Object({ ...ListQuery.properties, list_volume: Type.Optional(Type.String({ maxLength: 16 })) }, closed);
const SnapshotListQuery = Type.Object({ ...ListQuery.properties, group_id: Type.Optional(Type.String({ maxLength: 255 })) }, closed);

const Summary = Type.Object({ id: Type.String(), name: Nullable(Type.String()) }, closed);
/** Where the group view changes: group_snapshot_id/source_group_id 3.14, volumes 3.25, replication_status 3.38, project_id 3.58. */
const groupBoundaries = [14, 25, 38, 58];
function groupView(mv: number): TSchema {
  return Type.Object({
    id: Type.String(), name: Nullable(Type.String()), description: Nullable(Type.String()), status: Type.String(),
    availability_zone: Type.String(), created_at: Type.String(), group_type: Type.String(), volume_types: Type.Array(Type.String()),
    ...(mv >= 14 ? { group_snapshot_id: Nullable(Type.String()), source_group_id: Nullable(Type.String()) } : {}),
    ...(mv >= 25 ? { volumes: Type.Optional(Type.Array(Type.String())) } : {}),
    ...(mv >= 38 ? { replication_status: Nullable(Type.String()) } : {}),
    ...(mv >= 58 ? { project_id: Type.String() } : {}),
  }, closed);
}
function groupSnapshotView(mv: number): TSchema {
  return Type.Object({
    id: Type.String(), name: Nullable(Type.String()), description: Nullable(Type.String()), status: Type.String(), created_at: Type.String(),
    group_id: Type.String(), group_type_id: Type.String(), ...(mv >= 58 ? { project_id: Type.String() } : {}),
  }, closed);
}

function listFilter(ctx: Ctx, osapiMaxLimit: number): GroupListFilter {
  const q = ctx.query;
  const limit = q.get('limit');
  return {
    allProjects: queryBool(q.get('all_tenants'), 'all_tenants') ?? false,
    projectId: q.get('project_id'),
    name: q.get('name'),
    status: q.get('status'),
    limit: limit === null ? osapiMaxLimit : Math.min(Number(limit), osapiMaxLimit),
    marker: q.get('marker'),
  };
}

/** Volume ids of add_volumes / remove_volumes: comma-separated, blanks skipped, each once. */
function idList(value: string | null | undefined, field: string): string[] {
  const ids = (value ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (ids.length > groupVolumesMax) throw errors.badRequest(`Invalid input: ${field} names ${ids.length} volumes; at most ${groupVolumesMax} per update.`);
  return [...new Set(ids)];
}

export function groupRoutes(groups: VolumeGroups, osapiMaxLimit: number): AnyRouteSpec[] {
  const renderGroup = (ctx: Ctx, g: GroupRow) => {
    const mv = ctx.microversion;
    const body: Record<string, unknown> = {
      id: g.id, name: g.name, description: g.description, status: g.status, availability_zone: g.availability_zone,
      created_at: cinderTime(g.created_at), group_type: g.group_type_id, volume_types: groups.volumeTypeIds(g),
    };
    if (mv >= 14) Object.assign(body, { group_snapshot_id: g.group_snapshot_id, source_group_id: g.source_group_id });
    if (mv >= 25 && (queryBool(ctx.query.get('list_volume'), 'list_volume') ?? false)) body['volumes'] = groups.memberIds(g.id);
    if (mv >= 38) body['replication_status'] = 'disabled';
    if (mv >= 58) body['project_id'] = g.project_id;
    return body;
  };
  const renderSnapshot = (ctx: Ctx, s: GroupSnapshotRow) => ({
    id: s.id, name: s.name, description: s.description, status: s.status, created_at: cinderTime(s.created_at),
    group_id: s.group_id, group_type_id: s.group_type_id, ...(ctx.microversion >= 58 ? { project_id: s.project_id } : {}),
  });
  const listGroups = (detail: boolean) => (ctx: Ctx) => {
    const rows = groups.list(auth(ctx), listFilter(ctx, osapiMaxLimit));
    return { status: 200, body: { groups: rows.map((g) => (detail ? renderGroup(ctx, g) : { id: g.id, name: g.name })) } };
  };
  const listSnapshots = (detail: boolean) => (ctx: Ctx) => {
    const rows = groups.listSnapshots(auth(ctx), { ...listFilter(ctx, osapiMaxLimit), groupId: ctx.query.get('group_id') });
    return { status: 200, body: { group_snapshots: rows.map((s) => (detail ? renderSnapshot(ctx, s) : { id: s.id, name: s.name })) } };
  };
  return [
    route({
      method: 'GET', path: '/v3/groups', policy: 'group:get_all', versions: groupVersions, query: GroupListQuery,
      responses: { 200: Type.Object({ groups: Type.Array(Summary) }, closed) },
      handler: listGroups(false),
    }),
    route({
      method: 'GET', path: '/v3/groups/detail', policy: 'group:get_all', versions: groupVersions, query: GroupListQuery,
      responses: { 200: perVersion(groupBoundaries, (mv) => Type.Object({ groups: Type.Array(groupView(mv)) }, closed)) },
      handler: listGroups(true),
    }),
    route({
      method: 'GET', path: '/v3/groups/:id', policy: 'group:get', versions: groupVersions, params: Params,
      query: Type.Object({ list_volume: Type.Optional(Type.String({ maxLength: 16 })) }, closed),
      responses: { 200: perVersion(groupBoundaries, (mv) => Type.Object({ group: groupView(mv) }, closed)) },
      handler: (ctx) => ({ status: 200, body: { group: renderGroup(ctx, groups.group(auth(ctx), ctx.params['id']!)) } }),
    }),
    route({
      method: 'POST', path: '/v3/groups', policy: 'group:create', versions: groupVersions, body: declaredBody(createSchema),
      summary: 'An empty group of a group type and volume types',
      responses: { 202: Type.Object({ group: Summary }, closed) },
      handler(ctx) {
        const { group } = validate<{ group: { name?: string | null; description?: string | null; group_type: string; volume_types: string[]; availability_zone?: string | null } }>(createSchema, ctx.body ?? null);
        const row = groups.create(auth(ctx), {
          name: group.name ?? null, description: group.description ?? null, groupType: group.group_type, volumeTypes: group.volume_types, availabilityZone: group.availability_zone ?? null,
        });
        return { status: 202, body: { group: { id: row.id, name: row.name } } };
      },
    }),
    route({
      method: 'POST', path: '/v3/groups/action', policy: 'group:create', versions: snapshotVersions, body: declaredBody(fromSourceSchema),
      summary: 'create-from-src: a group with a volume from each snapshot of a group snapshot, or a clone of each volume of a group',
      responses: { 202: Type.Object({ group: Summary }, closed) },
      handler(ctx) {
        const { 'create-from-src': input } = validate<{ 'create-from-src': { name?: string | null; description?: string | null; group_snapshot_id?: string | null; source_group_id?: string | null } }>(fromSourceSchema, ctx.body ?? null);
        const row = groups.createFromSource(auth(ctx), {
          name: input.name ?? null, description: input.description ?? null, groupSnapshotId: input.group_snapshot_id ?? null, sourceGroupId: input.source_group_id ?? null,
        }, ctx.requestId);
        return { status: 202, body: { group: { id: row.id, name: row.name } } };
      },
    }),
    route({
      method: 'PUT', path: '/v3/groups/:id', policy: 'group:update', versions: groupVersions, params: Params, body: declaredBody(updateSchema),
      responses: { 202: null },
      handler(ctx) {
        const { group } = validate<{ group: { name?: string | null; description?: string | null; add_volumes?: string | null; remove_volumes?: string | null } }>(updateSchema, ctx.body ?? null);
        if (Object.keys(group).length === 0) throw errors.badRequest("Nothing to update: give 'name', 'description', 'add_volumes' or 'remove_volumes'.");
        groups.update(auth(ctx), ctx.params['id']!, {
          name: group.name, description: group.description, addVolumes: idList(group.add_volumes, 'add_volumes'), removeVolumes: idList(group.remove_volumes, 'remove_volumes'),
        });
        return { status: 202 };
      },
    }),
    route({
      method: 'POST', path: '/v3/groups/:id/action', params: Params, versions: groupVersions, body: GroupActionBody,
      // delete and reset_status have their own rules, checked in the handler.
      policy: '@',
      responses: { 202: null },
      handler(ctx) {
        const [action, args] = Object.entries(ctx.body as Record<string, unknown>)[0]!;
        if (action === 'reset_status') {
          if (ctx.microversion < 20) throw errors.notFound('Resource', "'reset_status' of a group (it needs microversion 3.20 or later)");
          ctx.authorize('group:reset_status');
          const { status } = validate<{ status: string }>(resetStatusSchema, args, action);
          groups.resetStatus(auth(ctx), ctx.params['id']!, status);
          return { status: 202 };
        }
        ctx.authorize('group:delete');
        const input = validate<{ 'delete-volumes'?: boolean }>(deleteSchema, args ?? {}, action);
        groups.delete(auth(ctx), ctx.params['id']!, input['delete-volumes'] ?? false);
        return { status: 202 };
      },
    }),

    // ---- group snapshots ----
    route({
      method: 'GET', path: '/v3/group_snapshots', policy: 'group:get_all_group_snapshots', versions: snapshotVersions, query: SnapshotListQuery,
      responses: { 200: Type.Object({ group_snapshots: Type.Array(Summary) }, closed) },
      handler: listSnapshots(false),
    }),
    route({
      method: 'GET', path: '/v3/group_snapshots/detail', policy: 'group:get_all_group_snapshots', versions: snapshotVersions, query: SnapshotListQuery,
      responses: { 200: perVersion([58], (mv) => Type.Object({ group_snapshots: Type.Array(groupSnapshotView(mv)) }, closed)) },
      handler: listSnapshots(true),
    }),
    route({
      method: 'GET', path: '/v3/group_snapshots/:id', policy: 'group:get_group_snapshot', versions: snapshotVersions, params: Params,
      responses: { 200: perVersion([58], (mv) => Type.Object({ group_snapshot: groupSnapshotView(mv) }, closed)) },
      handler: (ctx) => ({ status: 200, body: { group_snapshot: renderSnapshot(ctx, groups.groupSnapshot(auth(ctx), ctx.params['id']!)) } }),
    }),
    route({
      method: 'POST', path: '/v3/group_snapshots', policy: 'group:create_group_snapshot', versions: snapshotVersions, body: declaredBody(snapshotCreateSchema),
      summary: 'A snapshot of every volume of a group, of one moment (the volumes must be detached)',
      responses: { 202: Type.Object({ group_snapshot: Type.Object({ id: Type.String(), name: Nullable(Type.String()), group_type_id: Type.String() }, closed) }, closed) },
      handler(ctx) {
        const { group_snapshot: input } = validate<{ group_snapshot: { group_id: string; name?: string | null; description?: string | null } }>(snapshotCreateSchema, ctx.body ?? null);
        const row = groups.createSnapshot(auth(ctx), { groupId: input.group_id, name: input.name ?? null, description: input.description ?? null });
        return { status: 202, body: { group_snapshot: { id: row.id, name: row.name, group_type_id: row.group_type_id } } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/group_snapshots/:id', policy: 'group:delete_group_snapshot', versions: snapshotVersions, params: Params,
      responses: { 202: null },
      handler(ctx) {
        groups.deleteSnapshot(auth(ctx), ctx.params['id']!);
        return { status: 202 };
      },
    }),
    route({
      method: 'POST', path: '/v3/group_snapshots/:id/action', policy: 'group:reset_group_snapshot_status', versions: { min: 19, max: microversionMax }, params: Params, body: SnapshotActionBody,
      responses: { 202: null },
      handler(ctx) {
        const { status } = validate<{ status: string }>(resetStatusSchema, (ctx.body as Record<string, unknown>)['reset_status'], 'reset_status');
        groups.resetSnapshotStatus(auth(ctx), ctx.params['id']!, status);
        return { status: 202 };
      },
    }),
  ];
}
