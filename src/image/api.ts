/**
 * Image API v2 (Glance) routes, declared (src/http/declare.ts): each route
 * names its request and response schemas (schemas.ts) and its Glance policy
 * rule (policy.ts), checked with the caller's own project before the handler;
 * the image service checks the rule again against the image's real target.
 * The state machine lives in `images.ts`; bytes live in the store.
 */
import { errors, PumiceError } from '../errors.ts';
import { emitEvent } from '../events.ts';
import { countedStream } from '../metrics.ts';
import type { Readable } from 'node:stream';
import type { ServiceApp } from '../http/server.ts';
import { Router, type AuthContext, type RequestContext } from '../http/router.ts';
import { queryBool } from '../http/validate.ts';
import { compileSchema, describeErrors, registerRoutes, route, type AnyRouteSpec } from '../http/declare.ts';
import {
  containerFormats, diskFormats, glanceTime, limits, memberStatuses, sortKeys, visibilities,
  type ImageRow, type ImageService, type ImageTaskRow, type ListQuery, type MemberRow, type PatchOp,
} from './images.ts';
import { ownProjectTarget } from './policy.ts';
import type { MetadefService } from './metadefs.ts';
import { metadefRoutes } from './metadefs-api.ts';
import {
  ImageCreateBody, ImageEntity, ImageList, ImageListQuery, ImportBody, ImportInfo, MemberCreateBody, MemberEntity, MemberList,
  MemberUpdateBody, PatchBody, PatchOpDraft4, PatchOpRfc6902, SchemaDocument, StoreImageParams, StoreDetailList, StoreList, TagParams, VersionList,
  ImageTaskList, TaskCreateBody, TaskEntity, TaskList, TaskListQuery, TaskParams,
} from './schemas.ts';

const imageApiVersions = ['2.16', '2.15', '2.12', '2.11', '2.10', '2.9', '2.8', '2.7', '2.6', '2.5', '2.4', '2.3', '2.2', '2.1', '2.0'];
const jsonPatchTypes = ['application/openstack-images-v2.1-json-patch', 'application/openstack-images-v2.0-json-patch'];

/** Query parameters with a meaning of their own; any other is a property filter, as in Glance. */
const listParams = new Set(['limit', 'marker', 'sort_key', 'sort_dir', 'sort', 'member_status', 'name', 'status', 'visibility', 'owner', 'tag',
  'disk_format', 'container_format', 'size_min', 'size_max', 'os_hidden', 'protected', 'id', 'created_at', 'updated_at']);

export function renderImage(image: ImageRow): Record<string, unknown> {
  const properties = JSON.parse(image.properties) as Record<string, string>;
  return {
    ...properties,
    id: image.id,
    name: image.name,
    status: image.status,
    visibility: image.visibility,
    protected: image.protected === 1,
    os_hidden: image.os_hidden === 1,
    checksum: image.checksum,
    os_hash_algo: image.os_hash_algo,
    os_hash_value: image.os_hash_value,
    size: image.size,
    virtual_size: image.virtual_size,
    disk_format: image.disk_format,
    container_format: image.container_format,
    min_disk: image.min_disk,
    min_ram: image.min_ram,
    owner: image.owner,
    tags: JSON.parse(image.tags) as string[],
    created_at: glanceTime(image.created_at),
    updated_at: glanceTime(image.updated_at),
    self: `/v2/images/${image.id}`,
    file: `/v2/images/${image.id}/file`,
    schema: '/v2/schemas/image',
  };
}

/** A Glance task record; `full` adds input and result (show), `ofImage` the image, request and user (GET /v2/images/{id}/tasks). */
function renderTask(task: ImageTaskRow, full: boolean, ofImage = false): Record<string, unknown> {
  return {
    id: task.id,
    type: task.type,
    status: task.status,
    owner: task.owner,
    message: task.message,
    created_at: glanceTime(task.created_at),
    updated_at: glanceTime(task.updated_at),
    ...(task.expires_at ? { expires_at: glanceTime(task.expires_at) } : {}),
    ...(full ? { input: JSON.parse(task.input) as unknown, result: task.result === null ? null : (JSON.parse(task.result) as unknown) } : {}),
    ...(ofImage ? { image_id: task.image_id, request_id: task.request_id, user_id: task.user_id } : {}),
    self: `/v2/tasks/${task.id}`,
    schema: '/v2/schemas/task',
  };
}

/** X-Image-Meta-Store: the one store an upload or import goes to (multi-store, Image API 2.8). */
function storeHeader(ctx: RequestContext): string | null {
  const value = ctx.headers['x-image-meta-store'];
  if (value === undefined) return null;
  const text = (Array.isArray(value) ? value[0]! : value).trim();
  if (text.length === 0 || text.length > 255) throw errors.badRequest('Invalid X-Image-Meta-Store header: name one enabled store (GET /v2/info/stores).');
  return text;
}

function renderMember(member: MemberRow): Record<string, unknown> {
  return {
    image_id: member.image_id,
    member_id: member.member_id,
    status: member.status,
    created_at: glanceTime(member.created_at),
    updated_at: glanceTime(member.updated_at),
    schema: '/v2/schemas/member',
  };
}

function parseListQuery(query: URLSearchParams): ListQuery {
  const one = (name: string): string | undefined => query.get(name) ?? undefined;
  const limitText = one('limit');
  let limit = limits.pageDefault;
  if (limitText !== undefined) {
    if (!/^\d{1,15}$/.test(limitText)) throw errors.invalidInput(`Invalid input: limit '${limitText.slice(0, 40)}' must be a non-negative integer.`);
    limit = Math.min(Number(limitText), limits.pageMax);
  }
  let sortKey = one('sort_key') ?? 'created_at';
  let sortDir = one('sort_dir') ?? 'desc';
  const sort = one('sort');
  if (sort !== undefined) {
    const [key, dir] = sort.split(',')[0]!.split(':');
    sortKey = key ?? sortKey;
    sortDir = dir ?? 'desc';
  }
  if (!sortKeys.includes(sortKey)) throw errors.invalidInput(`Invalid sort key '${sortKey.slice(0, 40)}': expected one of ${sortKeys.join(', ')}.`);
  if (sortDir !== 'asc' && sortDir !== 'desc') throw errors.invalidInput(`Invalid sort direction '${sortDir.slice(0, 40)}': expected asc or desc.`);
  const filters: Record<string, string> = {};
  for (const key of ['name', 'status', 'owner', 'disk_format', 'container_format', 'id']) {
    const value = one(key);
    if (value !== undefined) filters[key] = value;
  }
  const visibility = one('visibility');
  if (visibility !== undefined) {
    if (visibility !== 'all' && !(visibilities as readonly string[]).includes(visibility)) {
      throw errors.invalidInput(`Invalid visibility value '${visibility.slice(0, 40)}': expected one of ${[...visibilities, 'all'].join(', ')}.`);
    }
    filters['visibility'] = visibility;
  }
  for (const key of ['size_min', 'size_max']) {
    const value = one(key);
    if (value === undefined) continue;
    if (!/^\d{1,15}$/.test(value)) throw errors.invalidInput(`Invalid input: ${key} '${value.slice(0, 40)}' must be a non-negative integer.`);
    filters[key] = value;
  }
  for (const key of ['os_hidden', 'protected']) {
    const value = queryBool(query.get(key), key);
    if (value !== undefined) filters[key] = String(value);
  }
  const tags = query.getAll('tag');
  if (tags.length > 0) filters['tag'] = tags.join('\u0000');
  for (const [key, value] of query) {
    if (!listParams.has(key)) filters[`property:${key}`] = value;
  }
  const memberStatus = one('member_status') ?? 'accepted';
  if (memberStatus !== 'all' && !(memberStatuses as readonly string[]).includes(memberStatus)) {
    throw errors.invalidInput(`Invalid member_status '${memberStatus.slice(0, 40)}': expected pending, accepted, rejected or all.`);
  }
  return { filters, memberStatus, limit, marker: one('marker') ?? null, sortKey, sortDir };
}

/** Parses a single `bytes=` range; null means "send everything" (no or unusable header). */
function parseRange(header: string | undefined, sizeBytes: number): { start: number; end: number } | null {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) throw errors.rangeNotSatisfiable(header, sizeBytes);
    start = Math.max(0, sizeBytes - suffix);
    end = sizeBytes - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? sizeBytes - 1 : Math.min(Number(m[2]), sizeBytes - 1);
    if (end < start && m[2] !== '') throw errors.rangeNotSatisfiable(header, sizeBytes);
  }
  if (start >= sizeBytes) throw errors.rangeNotSatisfiable(header, sizeBytes);
  return { start, end };
}

/** Checks the Content-Type of image data and returns its Content-Length, if announced. */
function dataContentLength(ctx: RequestContext): number | null {
  const type = (ctx.headers['content-type'] ?? 'application/octet-stream').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/octet-stream') throw new PumiceError('UnsupportedMediaType', `Unsupported Content-Type '${type}' for image data: send Content-Type: application/octet-stream.`);
  const lengthHeader = ctx.headers['content-length'];
  const contentLength = lengthHeader === undefined ? null : Number(lengthHeader);
  if (contentLength !== null && !Number.isSafeInteger(contentLength)) throw errors.badRequest(`Invalid Content-Length '${lengthHeader}'.`);
  return contentLength;
}

export interface ImageAppOptions {
  /** Check every reply against its declared schema ([api] validate_responses); on in tests. */
  validateResponses?: boolean;
  log?: (message: string) => void;
  /** The metadata definitions catalog; its routes are served when given. */
  metadefs?: MetadefService;
}

/**
 * Turns a PATCH body into RFC 6902 operations. Glance's media types:
 * `application/openstack-images-v2.1-json-patch` is RFC 6902's form
 * (`{"op": "replace", "path": "/name", "value": ...}`);
 * `application/openstack-images-v2.0-json-patch` is draft 4's
 * (`{"replace": "/name", "value": ...}`). A body in the other form is refused
 * naming the media type it needs, as Glance refuses it.
 */
export function normalizePatch(contentType: string, body: unknown[]): PatchOp[] {
  const draft4 = contentType === 'application/openstack-images-v2.0-json-patch';
  const rfc = compileSchema(PatchOpRfc6902);
  const old = compileSchema(PatchOpDraft4);
  return body.map((raw, index): PatchOp => {
    const op = raw as Record<string, unknown>;
    if (draft4) {
      if (Object.hasOwn(op, 'op')) {
        throw errors.badRequest(`Invalid JSON patch: operation ${index} is in RFC 6902 form ('op'); with Content-Type ${contentType} write {"replace": "/name", "value": ...}, or send Content-Type: application/openstack-images-v2.1-json-patch.`);
      }
      const kind = (['add', 'replace', 'remove'] as const).find((k) => Object.hasOwn(op, k));
      if (!kind) throw errors.badRequest(`Invalid JSON patch: operation ${index} names no operation: expected one of "add", "replace", "remove" as its key.`);
      if (!old(op)) throw errors.badRequest(`Invalid JSON patch: operation ${index}: ${describeErrors('body', old.errors ?? [], op).problem}.`);
      return { op: kind, path: op[kind] as string, ...(Object.hasOwn(op, 'value') ? { value: op['value'] } : {}) };
    }
    if (!Object.hasOwn(op, 'op')) {
      const kind = ['add', 'replace', 'remove'].find((k) => Object.hasOwn(op, k));
      if (kind) throw errors.badRequest(`Invalid JSON patch: operation ${index} is in draft-4 form ('${kind}'); with Content-Type ${contentType} write {"op": "${kind}", "path": ...}, or send Content-Type: application/openstack-images-v2.0-json-patch.`);
      throw errors.badRequest(`Invalid JSON patch: operation ${index} has no 'op': expected {"op": "replace", "path": "/name", "value": ...}.`);
    }
    if (!rfc(op)) {
      const failure = describeErrors('body', rfc.errors ?? [], op);
      throw errors.badRequest(`Invalid JSON patch: operation ${index}${failure.field ? ` member '${failure.field}'` : ''}: ${failure.problem}.`);
    }
    if (op['op'] !== 'remove' && !Object.hasOwn(op, 'value')) throw errors.badRequest(`Invalid JSON patch: operation ${index} ('${String(op['op'])}') needs a value.`);
    if (op['op'] === 'remove' && Object.hasOwn(op, 'value')) throw errors.badRequest(`Invalid JSON patch: operation ${index} ('remove') takes no value.`);
    return op as unknown as PatchOp;
  });
}

export function imageApp(service: ImageService, options: ImageAppOptions = {}): ServiceApp {
  const router = new Router();
  const auth = (ctx: RequestContext): AuthContext => ctx.auth!;
  /** A store as /v2/info/stores lists it: the first one is the default. */
  const storeEntry = (store: (typeof service.stores)[number], index: number) => ({ id: store.id, description: store.description, ...(index === 0 ? { default: true } : {}) });
  /** The image as Glance renders it, with direct_url/locations where this caller may see them. */
  const render = (ctx: RequestContext, image: ImageRow): Record<string, unknown> => ({ ...renderImage(image), ...storesField(image), ...service.locationFields(auth(ctx), image) });
  /** Glance's `stores` (comma-separated) when several stores are enabled and the image has data. */
  const storesField = (image: ImageRow): Record<string, string> => {
    if (!service.multiStore) return {};
    const stores = service.locationsOf(image.id);
    return stores.length > 0 ? { stores: stores.join(',') } : {};
  };
  const versions = (ctx: RequestContext) => ({
    versions: imageApiVersions.map((v, i) => ({
      id: `v${v}`,
      status: i === 0 ? 'CURRENT' : 'SUPPORTED',
      links: [{ rel: 'self', href: `${ctx.serviceUrl}/v2/` }],
    })),
  });
  const id = (ctx: RequestContext) => ctx.params['image_id']!;
  const noBody = { 204: null } as const;

  const routes: AnyRouteSpec[] = [
    // ---- versions (no token) ----
    route({ method: 'GET', path: '/', policy: '@', options: { public: true }, responses: { 300: VersionList }, handler: (ctx) => ({ status: 300, body: versions(ctx) }) }),
    route({ method: 'GET', path: '/versions', policy: '@', options: { public: true }, responses: { 200: VersionList }, handler: (ctx) => ({ status: 200, body: versions(ctx) }) }),
    route({ method: 'GET', path: '/v2', policy: '@', options: { public: true }, responses: { 200: VersionList }, handler: (ctx) => ({ status: 200, body: versions(ctx) }) }),

    // ---- discovery (any token; Glance checks no rule) ----
    route({ method: 'GET', path: '/v2/schemas/image', policy: '@', responses: { 200: SchemaDocument }, handler: () => ({ status: 200, body: imageSchema() }) }),
    route({
      method: 'GET', path: '/v2/schemas/images', policy: '@', responses: { 200: SchemaDocument },
      handler: () => ({
        status: 200,
        body: {
          name: 'images',
          properties: { images: { type: 'array', items: imageSchema() }, schema: { type: 'string' }, first: { type: 'string' }, next: { type: 'string' } },
          links: [{ rel: 'first', href: '{first}' }, { rel: 'next', href: '{next}' }, { rel: 'describedby', href: '{schema}' }],
        },
      }),
    }),
    route({ method: 'GET', path: '/v2/schemas/member', policy: '@', responses: { 200: SchemaDocument }, handler: () => ({ status: 200, body: memberSchema() }) }),
    route({
      method: 'GET', path: '/v2/schemas/members', policy: '@', responses: { 200: SchemaDocument },
      handler: () => ({
        status: 200,
        body: { name: 'members', properties: { members: { type: 'array', items: memberSchema() }, schema: { type: 'string' } }, links: [{ rel: 'describedby', href: '{schema}' }] },
      }),
    }),
    route({
      method: 'GET', path: '/v2/info/stores', policy: '@', responses: { 200: StoreList },
      handler: () => ({
        status: 200,
        body: {
          stores: service.stores.map(storeEntry),
        },
      }),
    }),
    route({
      method: 'GET', path: '/v2/info/stores/detail', policy: 'stores_info_detail', responses: { 200: StoreDetailList },
      handler: () => ({
        status: 200,
        body: {
          // As Glance's: the type of each store and what it keeps data in (admins by default).
          stores: service.stores.map((store, i) => ({ ...storeEntry(store, i), type: store.type, properties: store.properties?.() ?? {} })),
        },
      }),
    }),
    route({
      method: 'GET', path: '/v2/info/import', policy: '@', responses: { 200: ImportInfo },
      handler: () => ({ status: 200, body: { 'import-methods': { description: 'Import methods available.', type: 'array', value: service.importMethods } } }),
    }),

    // ---- images ----
    route({
      method: 'GET', path: '/v2/images', policy: 'get_images', query: ImageListQuery, responses: { 200: ImageList },
      handler(ctx) {
        const query = parseListQuery(ctx.query);
        const page = service.list(auth(ctx), query);
        const body: Record<string, unknown> = { images: page.images.map((image) => render(ctx, image)), first: '/v2/images', schema: '/v2/schemas/images' };
        if (page.nextMarker) {
          const next = new URLSearchParams(ctx.query);
          next.set('marker', page.nextMarker);
          next.set('limit', String(query.limit));
          body['next'] = `/v2/images?${next.toString()}`;
        }
        return { status: 200, body };
      },
    }),
    route({
      method: 'POST', path: '/v2/images', policy: 'add_image', body: ImageCreateBody, responses: { 201: ImageEntity },
      handler(ctx) {
        const image = service.create(auth(ctx), ctx.body);
        return {
          status: 201,
          body: render(ctx, image),
          headers: { Location: `${ctx.serviceUrl}/v2/images/${image.id}`, 'OpenStack-image-import-methods': service.importMethods.join(',') },
        };
      },
    }),
    route({
      method: 'GET', path: '/v2/images/:image_id', policy: 'get_image', responses: { 200: ImageEntity },
      handler: (ctx) => ({ status: 200, body: render(ctx, service.get(auth(ctx), id(ctx))) }),
    }),
    route({
      method: 'PATCH', path: '/v2/images/:image_id', policy: 'modify_image', body: PatchBody, responses: { 200: ImageEntity },
      handler(ctx) {
        const type = (ctx.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
        if (!jsonPatchTypes.includes(type)) {
          throw new PumiceError('UnsupportedMediaType', `Unsupported Content-Type '${type || '(none)'}' for PATCH: send Content-Type: application/openstack-images-v2.1-json-patch (RFC 6902 operations) or application/openstack-images-v2.0-json-patch (draft 4).`);
        }
        return { status: 200, body: render(ctx, service.update(auth(ctx), id(ctx), normalizePatch(type, ctx.body))) };
      },
    }),
    route({
      method: 'DELETE', path: '/v2/images/:image_id', policy: 'delete_image', responses: noBody,
      async handler(ctx) {
        await service.delete(auth(ctx), id(ctx));
        return { status: 204 };
      },
    }),

    // ---- data ----
    route({
      method: 'PUT', path: '/v2/images/:image_id/file', policy: 'upload_image', options: { rawBody: true }, responses: noBody,
      async handler(ctx) {
        const contentLength = dataContentLength(ctx);
        await service.upload(auth(ctx), id(ctx), ctx.stream, contentLength, storeHeader(ctx));
        emitEvent('image.transferred', { image_id: id(ctx), direction: 'upload', bytes: contentLength ?? service.get(auth(ctx), id(ctx)).size ?? 0 });
        return { status: 204 };
      },
    }),
    route({
      method: 'GET', path: '/v2/images/:image_id/file', policy: 'download_image', responses: { 200: null, 204: null, 206: null },
      async handler(ctx) {
        const image = service.openData(auth(ctx), id(ctx));
        if (!image) return { status: 204 };
        const sizeBytes = image.size ?? 0;
        const store = service.storeOf(image);
        const stored = await store.sizeOf(image.id);
        if (stored !== sizeBytes) {
          throw errors.backendUnavailable(`The data of image ${image.id} is missing or damaged in store '${store.id}' (${stored ?? 'no'} bytes stored, ${sizeBytes} recorded).`);
        }
        const rangeHeader = ctx.headers['range'];
        const range = sizeBytes > 0 ? parseRange(typeof rangeHeader === 'string' ? rangeHeader : undefined, sizeBytes) : null;
        const headers: Record<string, string> = { 'Content-Type': 'application/octet-stream', 'Accept-Ranges': 'bytes' };
        if (!range) {
          headers['Content-Length'] = String(sizeBytes);
          if (image.checksum) headers['Content-MD5'] = image.checksum;
          return { status: 200, headers, stream: countedDownload(store.read(image.id), image.id) };
        }
        headers['Content-Length'] = String(range.end - range.start + 1);
        headers['Content-Range'] = `bytes ${range.start}-${range.end}/${sizeBytes}`;
        return { status: 206, headers, stream: countedDownload(store.read(image.id, range), image.id) };
      },
    }),

    // ---- interoperable import (glance-direct) ----
    route({
      method: 'PUT', path: '/v2/images/:image_id/stage', policy: 'upload_image', options: { rawBody: true }, responses: noBody,
      async handler(ctx) {
        const contentLength = dataContentLength(ctx);
        await service.stage(auth(ctx), id(ctx), ctx.stream, contentLength);
        return { status: 204 };
      },
    }),
    route({
      method: 'POST', path: '/v2/images/:image_id/import', policy: 'upload_image', body: ImportBody, responses: { 202: null },
      handler(ctx) {
        const header = storeHeader(ctx);
        const stores = ctx.body.stores ?? (header !== null ? [header] : undefined);
        if (ctx.body.all_stores && ctx.body.stores !== undefined && ctx.body.stores.length > 0) throw errors.badRequest('"all_stores": true and "stores" are mutually exclusive: send one of them.');
        // Answers at once, as Glance does: the import runs as a task; clients poll the image's status.
        service.importImage(auth(ctx), id(ctx), ctx.body.method.name, {
          uri: ctx.body.method.uri, stores, allStores: ctx.body.all_stores, allStoresMustSucceed: ctx.body.all_stores_must_succeed, requestId: ctx.requestId,
        });
        return { status: 202 };
      },
    }),
    route({
      method: 'DELETE', path: '/v2/stores/:store_id/:image_id', policy: 'delete_image_location', params: StoreImageParams, responses: noBody,
      async handler(ctx) {
        await service.deleteFromStore(auth(ctx), ctx.params['store_id']!, id(ctx));
        return { status: 204 };
      },
    }),
    route({
      method: 'GET', path: '/v2/images/:image_id/tasks', policy: 'get_image', responses: { 200: ImageTaskList },
      handler: (ctx) => ({ status: 200, body: { tasks: service.tasksOfImage(auth(ctx), id(ctx)).map((t) => renderTask(t, true, true)) } }),
    }),

    // ---- tasks (Glance's tasks API: admins by default) ----
    route({
      method: 'GET', path: '/v2/tasks', policy: 'get_tasks', query: TaskListQuery, responses: { 200: TaskList },
      handler(ctx) {
        const q = ctx.queryParams;
        const limit = Math.min(q.limit ?? limits.pageDefault, limits.pageMax);
        const page = service.listTasks(auth(ctx), { type: q.type, status: q.status, limit, marker: q.marker, sortDir: q.sort_dir === 'asc' ? 'asc' : 'desc' });
        const body: Record<string, unknown> = { tasks: page.tasks.map((t) => renderTask(t, false)), first: '/v2/tasks', schema: '/v2/schemas/tasks' };
        if (page.nextMarker) {
          const next = new URLSearchParams(ctx.query);
          next.set('marker', page.nextMarker);
          next.set('limit', String(limit));
          body['next'] = `/v2/tasks?${next.toString()}`;
        }
        return { status: 200, body };
      },
    }),
    route({
      method: 'POST', path: '/v2/tasks', policy: 'add_task', body: TaskCreateBody, responses: { 201: TaskEntity },
      handler(ctx) {
        const task = service.createImportTask(auth(ctx), ctx.body.type, ctx.body.input, ctx.requestId);
        return { status: 201, body: renderTask(task, true), headers: { Location: `${ctx.serviceUrl}/v2/tasks/${task.id}` } };
      },
    }),
    route({
      method: 'GET', path: '/v2/tasks/:task_id', policy: 'get_task', params: TaskParams, responses: { 200: TaskEntity },
      handler: (ctx) => ({ status: 200, body: renderTask(service.getTask(auth(ctx), ctx.params['task_id']!), true) }),
    }),

    // ---- actions, tags ----
    route({
      method: 'POST', path: '/v2/images/:image_id/actions/deactivate', policy: 'deactivate', responses: noBody,
      handler(ctx) {
        service.deactivate(auth(ctx), id(ctx));
        return { status: 204 };
      },
    }),
    route({
      method: 'POST', path: '/v2/images/:image_id/actions/reactivate', policy: 'reactivate', responses: noBody,
      handler(ctx) {
        service.reactivate(auth(ctx), id(ctx));
        return { status: 204 };
      },
    }),
    route({
      method: 'PUT', path: '/v2/images/:image_id/tags/:tag', policy: 'modify_image', params: TagParams, responses: noBody,
      handler(ctx) {
        service.addTag(auth(ctx), id(ctx), ctx.params['tag']!);
        return { status: 204 };
      },
    }),
    route({
      method: 'DELETE', path: '/v2/images/:image_id/tags/:tag', policy: 'modify_image', responses: noBody,
      handler(ctx) {
        service.removeTag(auth(ctx), id(ctx), ctx.params['tag']!);
        return { status: 204 };
      },
    }),

    // ---- members ----
    route({
      method: 'POST', path: '/v2/images/:image_id/members', policy: 'add_member', body: MemberCreateBody, responses: { 200: MemberEntity },
      handler: (ctx) => ({ status: 200, body: renderMember(service.addMember(auth(ctx), id(ctx), ctx.body.member)) }),
    }),
    route({
      method: 'GET', path: '/v2/images/:image_id/members', policy: 'get_members', responses: { 200: MemberList },
      handler: (ctx) => ({ status: 200, body: { members: service.listMembers(auth(ctx), id(ctx)).map(renderMember), schema: '/v2/schemas/members' } }),
    }),
    route({
      method: 'GET', path: '/v2/images/:image_id/members/:member_id', policy: 'get_member', responses: { 200: MemberEntity },
      handler: (ctx) => ({ status: 200, body: renderMember(service.getMember(auth(ctx), id(ctx), ctx.params['member_id']!)) }),
    }),
    route({
      method: 'PUT', path: '/v2/images/:image_id/members/:member_id', policy: 'modify_member', body: MemberUpdateBody, responses: { 200: MemberEntity },
      handler: (ctx) => ({ status: 200, body: renderMember(service.updateMember(auth(ctx), id(ctx), ctx.params['member_id']!, ctx.body.status)) }),
    }),
    route({
      method: 'DELETE', path: '/v2/images/:image_id/members/:member_id', policy: 'delete_member', responses: noBody,
      handler(ctx) {
        service.removeMember(auth(ctx), id(ctx), ctx.params['member_id']!);
        return { status: 204 };
      },
    }),
  ];
  if (options.metadefs) routes.push(...metadefRoutes(options.metadefs));
  registerRoutes(router, routes, {
    policy: service.policy,
    validateResponses: options.validateResponses ?? false,
    log: options.log,
    versionText: (minor) => `2.${minor}`,
    defaultTarget: (a) => ownProjectTarget(a?.projectId ?? null),
  });

  return {
    prefix: '/image',
    router,
    faultStyle: 'openstack',
    rewritePath(path) {
      // Glance routes /v2/images/{image_id}; an empty id (a trailing slash) names no image.
      if (path === '/v2/images/') throw errors.notFound('Image', "'' (the image id is empty)");
      return { path, pathProjectId: null };
    },
  };
}

/** Glance's image schema, abridged to what Pumice stores; extra string properties are allowed. */
function imageSchema(): Record<string, unknown> {
  const str = (description: string, extra: Record<string, unknown> = {}) => ({ type: ['null', 'string'], description, ...extra });
  const readOnly = { readOnly: true };
  return {
    name: 'image',
    properties: {
      id: { type: 'string', pattern: '^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$', description: 'An identifier for the image' },
      name: str('Descriptive name for the image', { maxLength: 255 }),
      status: { type: 'string', readOnly: true, description: 'Status of the image', enum: ['queued', 'saving', 'active', 'killed', 'deleted', 'uploading', 'importing', 'pending_delete', 'deactivated'] },
      visibility: { type: 'string', enum: [...visibilities], description: 'Scope of image accessibility' },
      protected: { type: 'boolean', description: 'If true, image will not be deletable.' },
      os_hidden: { type: 'boolean', description: 'If true, image will not appear in default image list response.' },
      checksum: str('md5 hash of image contents.', { ...readOnly, maxLength: 32 }),
      os_hash_algo: str('Algorithm to calculate the os_hash_value', { ...readOnly, maxLength: 64 }),
      os_hash_value: str('Hexdigest of the image contents using the algorithm specified by the os_hash_algo', { ...readOnly, maxLength: 128 }),
      owner: str('Owner of the image', { maxLength: 255 }),
      size: { type: ['null', 'integer'], readOnly: true, description: 'Size of image file in bytes' },
      virtual_size: { type: ['null', 'integer'], readOnly: true, description: 'Virtual size of image in bytes' },
      container_format: { type: ['null', 'string'], enum: [null, ...containerFormats], description: 'Format of the container' },
      disk_format: { type: ['null', 'string'], enum: [null, ...diskFormats], description: 'Format of the disk' },
      created_at: { type: 'string', readOnly: true, description: 'Date and time of image registration' },
      updated_at: { type: 'string', readOnly: true, description: 'Date and time of the last image modification' },
      tags: { type: 'array', items: { type: 'string', maxLength: 255 }, description: 'List of strings related to the image' },
      min_ram: { type: 'integer', description: 'Amount of ram (in MB) required to boot image.' },
      min_disk: { type: 'integer', description: 'Amount of disk space (in GB) required to boot image.' },
      self: { type: 'string', readOnly: true, description: 'An image self url' },
      file: { type: 'string', readOnly: true, description: 'An image file url' },
      schema: { type: 'string', readOnly: true, description: 'An image schema url' },
    },
    additionalProperties: { type: 'string' },
    links: [
      { rel: 'self', href: '{self}' },
      { rel: 'enclosure', href: '{file}' },
      { rel: 'describedby', href: '{schema}' },
    ],
  };
}

function memberSchema(): Record<string, unknown> {
  return {
    name: 'member',
    properties: {
      created_at: { type: 'string', description: 'Date and time of image member creation' },
      image_id: { type: 'string', description: 'An identifier for the image' },
      member_id: { type: 'string', description: 'An identifier for the image member (tenantId)' },
      status: { type: 'string', enum: [...memberStatuses], description: 'The status of this image member' },
      updated_at: { type: 'string', description: 'Date and time of last modification of image member' },
      schema: { type: 'string', readOnly: true },
    },
  };
}

/** The image data of a download, counted: `image.transferred` (and the image bytes metric) when it ends or is cut off. */
function countedDownload(source: Readable, imageId: string): Readable {
  return countedStream(source, (bytes) => emitEvent('image.transferred', { image_id: imageId, direction: 'download', bytes }));
}
