/**
 * What the Block Storage route modules share: their dependencies, list
 * parameters (limit, marker, sort, project scope), next links, the microversion
 * range, and `declaredBody`, which turns a request schema of `http/validate.ts`
 * into the JSON Schema the route declares (so the declaration and the coercing
 * check in the handler accept exactly the same bodies).
 */
import type { TSchema } from '@sinclair/typebox';
import type { Db } from '../../db/db.ts';
import { errors } from '../../errors.ts';
import type { DeclaredContext } from '../../http/declare.ts';
import type { AuthContext, RequestContext } from '../../http/router.ts';
import { queryBool, type Schema } from '../../http/validate.ts';
import type { AttachmentService } from '../attachments.ts';
import type { VolumeManager } from '../manager.ts';
import type { UserMessages } from '../messages.ts';
import type { RenderOptions } from '../records.ts';
import type { BlockStorageServices } from '../services.ts';
import type { QosSpecs } from '../qos.ts';
import type { VolumeTransfers } from '../transfers.ts';
import type { VolumeTypes } from '../types.ts';
import type { ListQuery, VolumeService } from '../volumes.ts';

export const microversionMin = 0;
/** Highest 3.x microversion served; see README for what each implemented step means here. */
export const microversionMax = 70;

export interface VolumeRouteDeps {
  service: VolumeService;
  manager: VolumeManager;
  db: Db;
  types: VolumeTypes;
  messages: UserMessages;
  services: BlockStorageServices;
  attachments: AttachmentService;
  transfers: VolumeTransfers;
  qos: QosSpecs;
  osapiMaxLimit: number;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Ctx = DeclaredContext<any, any>;

export function auth(ctx: RequestContext): AuthContext {
  return ctx.auth!;
}

export function renderOptions(ctx: RequestContext): RenderOptions {
  return { serviceUrl: ctx.serviceUrl, projectId: ctx.auth?.projectId ?? '', isAdmin: ctx.auth?.isAdmin ?? false, microversion: ctx.microversion };
}

const ci = (word: string) => word.split('').map((c) => (/[a-z]/.test(c) ? `[${c}${c.toUpperCase()}]` : c)).join('');
/** The strings `validate.ts` reads as booleans (allowString), case-insensitive. */
const booleanStringPattern = `^(${['true', 't', 'yes', 'y', 'on', '1', 'false', 'f', 'no', 'n', 'off', '0'].map(ci).join('|')})$`;
const uuidPattern = '^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$';

/**
 * The JSON Schema of a `validate.ts` schema: the same fields, required keys,
 * types, bounds and unknown-field rule. The handler still runs `validate()` for
 * its coercions (numeric and boolean strings), which then cannot fail on shape.
 */
export function declaredBody(schema: Schema): TSchema {
  const nullable = (s: Record<string, unknown>, isNullable: boolean | undefined) => (isNullable ? { anyOf: [s, { type: 'null' }] } : s);
  switch (schema.type) {
    case 'any':
      return {} as TSchema;
    case 'string': {
      const s: Record<string, unknown> = { type: 'string' };
      if (schema.minLength !== undefined) s['minLength'] = schema.minLength;
      if (schema.maxLength !== undefined) s['maxLength'] = schema.maxLength;
      if (schema.enum) s['enum'] = [...schema.enum];
      if (schema.pattern) s['pattern'] = schema.pattern.source;
      return nullable(s, schema.nullable) as TSchema;
    }
    case 'uuid':
      return nullable({ type: 'string', pattern: uuidPattern }, schema.nullable) as TSchema;
    case 'integer': {
      const n: Record<string, unknown> = { type: 'integer' };
      if (schema.min !== undefined) n['minimum'] = schema.min;
      if (schema.max !== undefined) n['maximum'] = schema.max;
      const s = schema.allowString ? { anyOf: [n, { type: 'string', pattern: '^\\s*-?\\d+\\s*$' }] } : n;
      return nullable(s, schema.nullable) as TSchema;
    }
    case 'boolean': {
      const s = schema.allowString ? { anyOf: [{ type: 'boolean' }, { type: 'string', pattern: booleanStringPattern }] } : { type: 'boolean' };
      return nullable(s, schema.nullable) as TSchema;
    }
    case 'array': {
      const s: Record<string, unknown> = { type: 'array', items: declaredBody(schema.items) };
      if (schema.maxItems !== undefined) s['maxItems'] = schema.maxItems;
      return nullable(s, schema.nullable) as TSchema;
    }
    case 'object': {
      const properties: Record<string, TSchema> = {};
      for (const [key, value] of Object.entries(schema.properties ?? {})) properties[key] = declaredBody(value);
      const s: Record<string, unknown> = {
        type: 'object',
        properties,
        additionalProperties: schema.additional === true ? true : schema.additional ? declaredBody(schema.additional) : false,
      };
      if (schema.required?.length) s['required'] = [...schema.required];
      if (schema.maxProperties !== undefined) s['maxProperties'] = schema.maxProperties;
      return nullable(s, schema.nullable) as TSchema;
    }
  }
}

/** Sort keys one list call may give (Cinder's lists have fewer sortable columns than this). */
const sortKeysMax = 8;

/** Paging, sorting and filter-name checks of a list call; `allowedFilters` are the list's own filters. */
export function listQuery(ctx: RequestContext, osapiMaxLimit: number, allowedFilters: string[]): ListQuery {
  const q = ctx.query;
  const known = new Set([...allowedFilters, 'limit', 'marker', 'sort', 'sort_key', 'sort_dir', 'all_tenants', 'with_count', 'offset']);
  const seen = new Set<string>();
  for (const key of q.keys()) {
    if (!known.has(key)) throw errors.invalidInput(`Invalid filter '${key.slice(0, 40)}'. Supported filters here: ${allowedFilters.join(', ')}.`);
    // Each parameter once (a repeated one would be ignored or multiply the query's work).
    if (seen.has(key)) throw errors.invalidInput(`Invalid input: query parameter '${key}' is given more than once; give it once.`);
    seen.add(key);
  }
  let limit = osapiMaxLimit;
  const rawLimit = q.get('limit');
  if (rawLimit !== null) {
    if (!/^\d+$/.test(rawLimit)) throw errors.invalidInput(`Invalid input: limit '${rawLimit}' must be a non-negative integer.`);
    limit = Math.min(Number(rawLimit), osapiMaxLimit);
  }
  const marker = q.get('marker');
  const sort: ListQuery['sort'] = [];
  const sortParam = q.get('sort');
  const sortKey = q.get('sort_key');
  if (sortParam !== null && (sortKey !== null || q.get('sort_dir') !== null)) {
    throw errors.invalidInput("Invalid input: use either 'sort' or 'sort_key'/'sort_dir', not both.");
  }
  const parseDir = (dir: string | undefined): 'asc' | 'desc' => {
    const d = (dir ?? 'desc').toLowerCase();
    if (d !== 'asc' && d !== 'desc') throw errors.invalidInput(`Invalid input: sort direction '${dir}' must be asc or desc.`);
    return d;
  };
  if (sortParam !== null) {
    const parts = sortParam.split(',');
    // Cinder allows each key once; a bound keeps the marker condition (quadratic in keys) cheap.
    if (parts.length > sortKeysMax) throw errors.invalidInput(`Invalid input: ${parts.length} sort keys; at most ${sortKeysMax}, each once.`);
    for (const part of parts) {
      const [key, dir] = part.split(':');
      if (!key) throw errors.invalidInput(`Invalid input: empty sort key in '${sortParam.slice(0, 200)}'.`);
      if (sort.some((s) => s.key === key.trim())) throw errors.invalidInput(`Invalid input: sort key '${key.trim().slice(0, 40)}' is given more than once; give each key once.`);
      sort.push({ key: key.trim(), dir: parseDir(dir?.trim()) });
    }
  } else if (sortKey !== null || q.get('sort_dir') !== null) {
    // sort_dir alone applies to the default key (as in Cinder); a bad value is a 400, not silently ignored.
    sort.push({ key: sortKey ?? 'created_at', dir: parseDir(q.get('sort_dir') ?? undefined) });
  } else {
    sort.push({ key: 'created_at', dir: 'desc' });
  }
  const withCount = ctx.microversion >= 45 ? queryBool(q.get('with_count'), 'with_count') ?? false : false;
  return { conditions: [], params: [], sort, limit, marker, withCount };
}

/** Limits a list to the caller's project, unless an administrator asks for all_tenants (optionally one project_id). */
export function scopeToProject(ctx: RequestContext, service: VolumeService, query: ListQuery): void {
  const a = auth(ctx);
  const allTenants = queryBool(ctx.query.get('all_tenants'), 'all_tenants') ?? false;
  const projectFilter = ctx.query.get('project_id');
  if (a.isAdmin && allTenants) {
    if (projectFilter !== null) {
      query.conditions.push('project_id = ?');
      query.params.push(projectFilter);
    }
    return;
  }
  query.conditions.push('project_id = ?');
  query.params.push(service.projectOf(a));
}

/** The `next` link of a page: this request's URL with the marker set to the page's last id. */
export function nextLink(ctx: RequestContext, lastId: string, limit: number) {
  const params = new URLSearchParams(ctx.query);
  params.set('marker', lastId);
  params.set('limit', String(limit));
  const path = ctx.pathProjectId ? `/v3/${ctx.pathProjectId}${ctx.path.slice(3)}` : ctx.path;
  return { href: `${ctx.serviceUrl}${path}?${params.toString()}`, rel: 'next' };
}

/**
 * Cinder's collection links: a `next` link whenever the page is full (as many
 * rows as the effective limit), so a client paging with `limit` always learns
 * where to continue; the page after the last full one is empty and has none.
 */
export function collectionLinks(ctx: RequestContext, rows: { id: string }[], limit: number): { href: string; rel: string }[] | undefined {
  if (limit === 0 || rows.length < limit) return undefined;
  return [nextLink(ctx, rows[rows.length - 1]!.id, limit)];
}

/** Parses a dict filter as cinderclient sends it: Python's repr (`{'k': 'v'}`) or JSON. */
export function parseDictParam(value: string | null, name: string): Record<string, string> {
  if (value === null || value === '') return {};
  const attempts = [value, value.replace(/'/g, '"').replace(/\bu"/g, '"')];
  for (const text of attempts) {
    try {
      const parsed = JSON.parse(text) as unknown;
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) {
        return Object.fromEntries(Object.entries(parsed).map(([k, v]) => [k, String(v)]));
      }
    } catch {
      // try the next form
    }
  }
  throw errors.invalidInput(`Invalid filter ${name}='${value}': expected a dictionary such as {"key": "value"}.`);
}

/** 404 below the microversion that introduced a resource, as Cinder answers. */
export function requireMicroversion(ctx: RequestContext, minor: number, what: string): void {
  if (ctx.microversion < minor) throw errors.notFound('Resource', `'${what}' (it needs microversion 3.${minor} or later)`);
}
