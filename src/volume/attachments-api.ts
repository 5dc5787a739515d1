/**
 * Block Storage attachments routes (Cinder 3.27+; os-complete 3.44; mode 3.54):
 * parse, validate and render exactly as Cinder's attachments controller and
 * view builder; the rules live in `attachments.ts`.
 *
 *   POST   /v3/{project_id}/attachments                 200 {attachment}   (connection_info only here and in PUT)
 *   GET    /v3/{project_id}/attachments[/detail]        200 {attachments}
 *   GET    /v3/{project_id}/attachments/{id}            200 {attachment}
 *   PUT    /v3/{project_id}/attachments/{id}            200 {attachment}
 *   POST   /v3/{project_id}/attachments/{id}/action     204 (os-complete)
 *   DELETE /v3/{project_id}/attachments/{id}            200 {attachments}  (the volume's remaining ones)
 */
import { cinderTime } from '../db/db.ts';
import { errors } from '../errors.ts';
import { Type } from '@sinclair/typebox';
import { Nullable, route, type AnyRouteSpec, type DeclaredContext } from '../http/declare.ts';
import type { RequestContext } from '../http/router.ts';
import { queryBool, validate, type Schema } from '../http/validate.ts';
import type { AttachmentRecord, AttachmentService, FlatConnectionInfo, ListAttachmentsQuery } from './attachments.ts';
import type { Connector } from './drivers/driver.ts';
import { declaredBody, microversionMax } from './api/common.ts';

/** First microversions of the attachments API, os-complete, and the create `mode` argument. */
export const attachmentsMicroversion = 27;
export const attachmentCompleteMicroversion = 44;
export const attachmentModeMicroversion = 54;

const connectorSchema: Schema = { type: 'object', additional: true };

function createSchema(withMode: boolean): Schema {
  return {
    type: 'object',
    required: ['attachment'],
    properties: {
      attachment: {
        type: 'object',
        required: ['volume_uuid'],
        properties: {
          volume_uuid: { type: 'uuid' },
          instance_uuid: { type: 'uuid', nullable: true },
          connector: { ...connectorSchema, nullable: true } as Schema,
          ...(withMode ? { mode: { type: 'string', enum: ['rw', 'ro'] } as Schema } : {}),
        },
      },
    },
  };
}

const updateSchema: Schema = {
  type: 'object',
  required: ['attachment'],
  properties: { attachment: { type: 'object', required: ['connector'], properties: { connector: connectorSchema } } },
};

/** Cinder's `_normalize`: a datetime, or '' when there is none. */
const when = (iso: string | null): string => cinderTime(iso) ?? '';

export function renderAttachmentSummary(a: AttachmentRecord) {
  return { id: a.id, status: a.attach_status, instance: a.instance_uuid, volume_id: a.volume_id };
}

/** Cinder's detail view; `connectionInfo` is the full one only for the caller that connected, else the stored public part. */
export function renderAttachmentDetail(a: AttachmentRecord, connectionInfo: FlatConnectionInfo | null = null) {
  const stored = a.connection_info ? (JSON.parse(a.connection_info) as Record<string, unknown>) : {};
  return {
    ...renderAttachmentSummary(a),
    attached_at: when(a.attach_time),
    detached_at: when(a.detach_time),
    attach_mode: a.attach_mode === 'null' ? null : a.attach_mode,
    connection_info: connectionInfo ?? stored,
  };
}

const Params = Type.Object({ id: Type.String({ minLength: 1 }) });
const closed = { additionalProperties: false } as const;
const AttachmentSummary = Type.Object({ id: Type.String(), status: Type.String(), instance: Nullable(Type.String()), volume_id: Type.String() }, closed);
const AttachmentDetail = Type.Object({
  id: Type.String(),
  status: Type.String(),
  instance: Nullable(Type.String()),
  volume_id: Type.String(),
  attached_at: Type.String(),
  detached_at: Type.String(),
  attach_mode: Nullable(Type.String()),
  connection_info: Type.Record(Type.String(), Type.Unknown()),
}, closed);
const AttachmentBody = Type.Object({ attachment: AttachmentDetail }, closed);
const versions = { min: attachmentsMicroversion, max: microversionMax };
/** os-complete takes null or an empty object, nothing else. */
const CompleteBody = Type.Object({
  'os-complete': Type.Union([Type.Null(), Type.Object({}, closed)]),
}, closed);

/**
 * The attachments routes as declarations. Cinder guards create, update,
 * complete and delete with its rules (`volume:attachment_*`); it has none for
 * list and show, which Pumice guards with `volume:attachment_get_all` /
 * `volume:attachment_get` (reader of the project, or admin).
 */
export function attachmentRoutes(attachments: AttachmentService, osapiMaxLimit: number): AnyRouteSpec[] {
  const auth = (ctx: RequestContext) => ctx.auth!;
  const list = (detail: boolean) => (ctx: RequestContext) => {
    const query = listQuery(ctx, osapiMaxLimit);
    const rows = attachments.list(auth(ctx), query);
    return { status: 200, body: { attachments: rows.map((r) => (detail ? renderAttachmentDetail(r) : renderAttachmentSummary(r))) } };
  };
  const create = async (ctx: DeclaredContext<unknown, unknown>, withMode: boolean) => {
    const { attachment: input } = validate<{ attachment: { volume_uuid: string; instance_uuid?: string | null; connector?: Connector | null; mode?: 'rw' | 'ro' } }>(createSchema(withMode), ctx.body ?? null);
    const { attachment, connectionInfo } = await attachments.create(auth(ctx), {
      volumeId: input.volume_uuid,
      instanceUuid: input.instance_uuid ?? null,
      connector: input.connector ?? null,
      mode: input.mode ?? null,
    });
    return { status: 200, body: { attachment: renderAttachmentDetail(attachment, connectionInfo) } };
  };
  return [
    route({
      method: 'GET', path: '/v3/attachments', policy: 'volume:attachment_get_all', versions,
      responses: { 200: Type.Object({ attachments: Type.Array(AttachmentSummary) }, closed) },
      handler: list(false),
    }),
    route({
      method: 'GET', path: '/v3/attachments/detail', policy: 'volume:attachment_get_all', versions,
      responses: { 200: Type.Object({ attachments: Type.Array(AttachmentDetail) }, closed) },
      handler: list(true),
    }),
    route({
      method: 'POST', path: '/v3/attachments', policy: 'volume:attachment_create', versions: { min: attachmentsMicroversion, max: attachmentModeMicroversion - 1 },
      body: declaredBody(createSchema(false)),
      responses: { 200: AttachmentBody },
      handler: (ctx) => create(ctx, false),
    }),
    route({
      method: 'POST', path: '/v3/attachments', policy: 'volume:attachment_create', versions: { min: attachmentModeMicroversion, max: microversionMax },
      body: declaredBody(createSchema(true)),
      responses: { 200: AttachmentBody },
      handler: (ctx) => create(ctx, true),
    }),
    route({
      method: 'GET', path: '/v3/attachments/:id', policy: 'volume:attachment_get', versions, params: Params,
      responses: { 200: AttachmentBody },
      handler: (ctx) => ({ status: 200, body: { attachment: renderAttachmentDetail(attachments.attachment(auth(ctx), ctx.params['id']!)) } }),
    }),
    route({
      method: 'PUT', path: '/v3/attachments/:id', policy: 'volume:attachment_update', versions, params: Params, body: declaredBody(updateSchema),
      responses: { 200: AttachmentBody },
      async handler(ctx) {
        const { attachment: input } = validate<{ attachment: { connector: Connector } }>(updateSchema, ctx.body ?? null);
        if (Object.keys(input.connector).length === 0) {
          throw errors.invalidInput("Invalid input for field/attribute attachment/connector. Value: {}. Expected an object with at least 1 property (the host's connector: host, ip, initiator, ...).");
        }
        const { attachment, connectionInfo } = await attachments.update(auth(ctx), ctx.params['id']!, input.connector);
        return { status: 200, body: { attachment: renderAttachmentDetail(attachment, connectionInfo) } };
      },
    }),
    route({
      method: 'POST', path: '/v3/attachments/:id/action', policy: 'volume:attachment_complete', versions: { min: attachmentCompleteMicroversion, max: microversionMax },
      params: Params, body: CompleteBody,
      responses: { 204: null },
      handler(ctx) {
        attachments.complete(auth(ctx), ctx.params['id']!);
        return { status: 204 };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/attachments/:id', policy: 'volume:attachment_delete', versions, params: Params,
      responses: { 200: Type.Object({ attachments: Type.Array(AttachmentSummary) }, closed) },
      async handler(ctx) {
        const remaining = await attachments.delete(auth(ctx), ctx.params['id']!);
        return { status: 200, body: { attachments: remaining.map(renderAttachmentSummary) } };
      },
    }),
  ];
}

/** Cinder's list parameters for attachments: filters volume_id, status, attach_status, instance_id; sort; limit/marker/offset. */
function listQuery(ctx: RequestContext, osapiMaxLimit: number): ListAttachmentsQuery {
  const q = ctx.query;
  const allowed = ['volume_id', 'status', 'attach_status', 'instance_id', 'instance_uuid', 'project_id'];
  const known = new Set([...allowed, 'limit', 'marker', 'sort', 'sort_key', 'sort_dir', 'all_tenants', 'offset']);
  for (const key of q.keys()) {
    if (!known.has(key)) throw errors.invalidInput(`Invalid filter '${key}'. Supported filters for attachments: ${allowed.join(', ')}.`);
    if (q.getAll(key).length > 1) throw errors.invalidInput(`Invalid input: query parameter '${key}' is given more than once.`);
  }
  const filters: ListAttachmentsQuery['filters'] = [];
  const add = (param: string, column: ListAttachmentsQuery['filters'][number]['column']) => {
    const value = q.get(param);
    if (value !== null) filters.push({ column, value });
  };
  add('volume_id', 'volume_id');
  add('status', 'attach_status');
  add('attach_status', 'attach_status');
  add('instance_id', 'instance_uuid');
  add('instance_uuid', 'instance_uuid');
  add('project_id', 'project_id');
  const nonNegative = (name: string): number | null => {
    const raw = q.get(name);
    if (raw === null) return null;
    if (!/^\d{1,15}$/.test(raw)) throw errors.invalidInput(`Invalid input: ${name} '${raw.slice(0, 40)}' must be a non-negative integer.`);
    return Number(raw);
  };
  const limit = Math.min(nonNegative('limit') ?? osapiMaxLimit, osapiMaxLimit);
  const offset = nonNegative('offset') ?? 0;
  const parseDir = (dir: string | undefined): 'asc' | 'desc' => {
    const d = (dir ?? 'desc').toLowerCase();
    if (d !== 'asc' && d !== 'desc') throw errors.invalidInput(`Invalid input: sort direction '${dir}' must be asc or desc.`);
    return d;
  };
  const sort: ListAttachmentsQuery['sort'] = [];
  const sortParam = q.get('sort');
  if (sortParam !== null && (q.get('sort_key') !== null || q.get('sort_dir') !== null)) {
    throw errors.invalidInput("Invalid input: use either 'sort' or 'sort_key'/'sort_dir', not both.");
  }
  if (sortParam !== null) {
    const parts = sortParam.split(',');
    if (parts.length > 8) throw errors.invalidInput('Invalid input: at most 8 sort keys.');
    for (const part of parts) {
      const [key, dir] = part.split(':');
      if (!key?.trim()) throw errors.invalidInput(`Invalid input: empty sort key in '${sortParam.slice(0, 80)}'.`);
      if (sort.some((s) => s.key === key.trim())) throw errors.invalidInput(`Invalid input: sort key '${key.trim()}' is given more than once.`);
      sort.push({ key: key.trim(), dir: parseDir(dir?.trim()) });
    }
  } else if (q.get('sort_key') !== null || q.get('sort_dir') !== null) {
    sort.push({ key: q.get('sort_key') ?? 'created_at', dir: parseDir(q.get('sort_dir') ?? undefined) });
  } else {
    sort.push({ key: 'created_at', dir: 'desc' });
  }
  const allProjects = queryBool(q.get('all_tenants'), 'all_tenants') ?? false;
  return { filters, allProjects, sort, limit, marker: q.get('marker'), offset };
}
