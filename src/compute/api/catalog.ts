/**
 * Routes around servers: flavors (with extra specs and access), key pairs,
 * availability zones, limits, quota sets, compute services and hypervisors.
 */
import { loadavg, uptime as osUptime } from 'node:os';
import { Type, type TSchema } from '@sinclair/typebox';
import { errors } from '../../errors.ts';
import { Nullable, route, type AnyRouteSpec, type DeclaredContext } from '../../http/declare.ts';
import type { FlavorRow, Flavors } from '../flavors.ts';
import type { ComputeHosts, ComputeNodeRow, ComputeServiceRow } from '../hosts.ts';
import { computeBinary } from '../hosts.ts';
import type { Keypairs, KeypairRow } from '../keypairs.ts';
import { novaTime } from '../model.ts';
import type { ComputeQuotaResource, ComputeQuotas } from '../quotas.ts';
import { computeQuotaDefaults, computeQuotaResources } from '../quotas.ts';
import { Links, links, versioned } from './render.ts';

export interface CatalogRouteDeps {
  flavors: Flavors;
  keypairs: Keypairs;
  hosts: ComputeHosts;
  quotas: ComputeQuotas;
  projectExists: (projectId: string) => boolean;
}

const FlavorIdParams = Type.Object({ flavor_id: Type.String({ minLength: 1, maxLength: 255 }) });
const ExtraSpecs = Type.Record(Type.String({ minLength: 1, maxLength: 255, pattern: '^[a-zA-Z0-9-_:. ]+$' }), Type.String({ maxLength: 255 }));

function flavorSchema(v: number): TSchema {
  const props: Record<string, TSchema> = {
    id: Type.String(),
    name: Type.String(),
    ram: Type.Integer(),
    disk: Type.Integer(),
    vcpus: Type.Integer(),
    links: Links,
    'OS-FLV-EXT-DATA:ephemeral': Type.Integer(),
    'OS-FLV-DISABLED:disabled': Type.Boolean(),
    'os-flavor-access:is_public': Type.Boolean(),
    swap: Type.Union([Type.Integer(), Type.Literal('')]),
    rxtx_factor: Type.Number(),
  };
  if (v >= 55) props['description'] = Nullable(Type.String());
  if (v >= 61) props['extra_specs'] = Type.Optional(Type.Record(Type.String(), Type.String()));
  return Type.Object(props, { additionalProperties: false });
}
const flavorBreakpoints = [1, 55, 61];

function flavorBody(ctx: DeclaredContext<unknown, unknown>, flavors: Flavors, row: FlavorRow, showSpecs: boolean): Record<string, unknown> {
  const body: Record<string, unknown> = {
    id: row.id,
    name: row.name,
    ram: row.ram_mib,
    disk: row.root_gib,
    vcpus: row.vcpus,
    links: links(ctx.serviceUrl, 'flavors', row.id),
    'OS-FLV-EXT-DATA:ephemeral': row.ephemeral_gib,
    'OS-FLV-DISABLED:disabled': row.disabled === 1,
    'os-flavor-access:is_public': row.is_public === 1,
    // Nova shows a flavor without swap as "" before 2.75.
    swap: row.swap_mib === 0 && ctx.microversion < 75 ? '' : row.swap_mib,
    rxtx_factor: row.rxtx_factor,
  };
  if (ctx.microversion >= 55) body['description'] = row.description;
  if (ctx.microversion >= 61 && showSpecs) body['extra_specs'] = flavors.extraSpecs(row.id);
  return body;
}

function keypairBody(ctx: DeclaredContext<unknown, unknown>, row: KeypairRow, detail: boolean): Record<string, unknown> {
  const body: Record<string, unknown> = { name: row.name, public_key: row.public_key, fingerprint: row.fingerprint };
  if (ctx.microversion >= 2) body['type'] = row.type;
  if (detail) {
    body['user_id'] = row.user_id;
    body['created_at'] = row.created_at.replace('Z', '').replace(/(\.\d{3})$/, '$1000');
    body['deleted'] = false;
    body['deleted_at'] = null;
    body['updated_at'] = null;
    body['id'] = Math.abs([...`${row.user_id}/${row.name}`].reduce((h, c) => (h * 31 + c.charCodeAt(0)) | 0, 7));
  }
  return body;
}

function serviceBody(ctx: DeclaredContext<unknown, unknown>, hosts: ComputeHosts, row: ComputeServiceRow): Record<string, unknown> {
  const body: Record<string, unknown> = {
    id: ctx.microversion >= 53 ? row.uuid : row.id,
    binary: row.binary,
    host: row.host,
    zone: row.binary === computeBinary ? row.zone : 'internal',
    status: row.disabled ? 'disabled' : 'enabled',
    state: hosts.isUp(row) ? 'up' : 'down',
    updated_at: novaTime(row.heartbeat_at ?? row.updated_at)?.replace('Z', '.000000') ?? null,
    disabled_reason: row.disabled_reason,
  };
  if (ctx.microversion >= 11) body['forced_down'] = row.forced_down === 1;
  return body;
}

function hypervisorBody(ctx: DeclaredContext<unknown, unknown>, hosts: ComputeHosts, node: ComputeNodeRow, detail: boolean): Record<string, unknown> {
  const service = hosts.serviceByHost(computeBinary, node.host);
  const id = ctx.microversion >= 53 ? hypervisorUuid(node.host) : hypervisorIntId(node.host);
  const body: Record<string, unknown> = {
    id,
    hypervisor_hostname: node.hypervisor_hostname,
    state: service && hosts.isUp(service) ? 'up' : 'down',
    status: service?.disabled ? 'disabled' : 'enabled',
  };
  if (!detail) return body;
  const usage = hosts.usage(node.host);
  const detailBody: Record<string, unknown> = {
    ...body,
    hypervisor_type: node.hypervisor_type,
    hypervisor_version: node.hypervisor_version,
    host_ip: node.host_ip,
    service: { host: node.host, id: ctx.microversion >= 53 ? service?.uuid ?? null : service?.id ?? null, disabled_reason: service?.disabled_reason ?? null },
  };
  if (ctx.microversion < 88) {
    const diskUsedGiB = node.disk_source === 'rbd' ? Math.max(0, node.disk_total_gib - node.disk_free_gib) : usage.localGiB;
    Object.assign(detailBody, {
      vcpus: node.vcpus,
      memory_mb: node.memory_mib,
      local_gb: node.disk_total_gib,
      vcpus_used: usage.vcpus,
      memory_mb_used: usage.memoryMiB,
      local_gb_used: diskUsedGiB,
      free_ram_mb: node.memory_mib - usage.memoryMiB,
      free_disk_gb: node.disk_source === 'rbd' ? node.disk_free_gib : node.disk_total_gib - usage.localGiB,
      current_workload: 0,
      running_vms: usage.servers,
      disk_available_least: node.disk_free_gib,
      cpu_info: ctx.microversion >= 28 ? cpuInfo(node) : JSON.stringify(cpuInfo(node)),
    });
  }
  return detailBody;
}

/**
 * cpu_info is free-form in Nova's schema: Pumice adds which accelerator runs guests and why, and where
 * the disk figures come from (replication-aware for RBD), so `openstack hypervisor show` tells an
 * operator without extra keys that would break strict clients.
 */
function cpuInfo(node: ComputeNodeRow): Record<string, unknown> {
  return {
    ...(JSON.parse(node.cpu_info) as Record<string, unknown>),
    accelerator: { virt_type: node.virt_type, reason: node.virt_type_reason },
    disk: { source: node.disk_source, ...(JSON.parse(node.disk_detail ?? '{}') as Record<string, unknown>) },
  };
}

/** Stable ids for hypervisors from their host names (Nova's are database ids / uuids). */
function hypervisorIntId(host: string): number {
  return (Math.abs([...host].reduce((h, c) => (h * 31 + c.charCodeAt(0)) | 0, 17)) % 1_000_000) + 1;
}
function hypervisorUuid(host: string): string {
  let hex = '';
  let seed = hypervisorIntId(host);
  while (hex.length < 32) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    hex += seed.toString(16).padStart(8, '0');
  }
  hex = hex.slice(0, 32);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

function findNode(ctx: DeclaredContext<unknown, unknown>, hosts: ComputeHosts, id: string): ComputeNodeRow {
  const node = hosts.nodes().find((n) => String(hypervisorIntId(n.host)) === id || hypervisorUuid(n.host) === id || (ctx.microversion < 53 && n.hypervisor_hostname === id));
  if (!node) throw errors.notFound('Hypervisor', id);
  return node;
}

const ServiceSchema = (v: number) => Type.Object({
  id: v >= 53 ? Type.String() : Type.Integer(),
  binary: Type.String(), host: Type.String(), zone: Type.String(), status: Type.String(), state: Type.String(),
  updated_at: Nullable(Type.String()), disabled_reason: Nullable(Type.String()),
  ...(v >= 11 ? { forced_down: Type.Boolean() } : {}),
}, { additionalProperties: false });

export function catalogRoutes(deps: CatalogRouteDeps): AnyRouteSpec[] {
  const { flavors, keypairs, hosts, quotas } = deps;
  const isAdmin = (ctx: DeclaredContext<unknown, unknown>) => ctx.auth?.isAdmin ?? false;
  const flavorList = (ctx: DeclaredContext<unknown, unknown>, detail: boolean) => {
    const q = ctx.queryParams as Record<string, string | number | undefined>;
    const isPublicParam = String(q['is_public'] ?? 'true').toLowerCase();
    let rows = flavors.list({
      projectId: ctx.auth!.projectId,
      isAdmin: isAdmin(ctx),
      isPublic: isPublicParam === 'none' ? 'none' : ['false', '0', 'no'].includes(isPublicParam) ? 'false' : 'true',
      minRamMiB: q['minRam'] !== undefined ? Number(q['minRam']) : undefined,
      minDiskGiB: q['minDisk'] !== undefined ? Number(q['minDisk']) : undefined,
    });
    const sortKey = String(q['sort_key'] ?? 'flavorid');
    const column = ({ flavorid: 'id', id: 'id', name: 'name', memory_mb: 'ram_mib', root_gb: 'root_gib', vcpus: 'vcpus', ephemeral_gb: 'ephemeral_gib', swap: 'swap_mib', created_at: 'created_at' } as Record<string, keyof FlavorRow>)[sortKey];
    if (!column) throw errors.badRequest(`Invalid sort_key '${sortKey}': use flavorid, name, memory_mb, root_gb, vcpus, ephemeral_gb, swap or created_at.`);
    const dir = q['sort_dir'] === 'desc' ? -1 : 1;
    rows = rows.sort((a, b) => (a[column]! < b[column]! ? -dir : a[column]! > b[column]! ? dir : 0));
    if (q['marker'] !== undefined) {
      const i = rows.findIndex((r) => r.id === q['marker']);
      if (i < 0) throw errors.badRequest(`marker [${q['marker']}] not found`);
      rows = rows.slice(i + 1);
    }
    const limit = q['limit'] !== undefined ? Number(q['limit']) : 1000;
    const page = rows.slice(0, limit);
    const body: Record<string, unknown> = {
      flavors: page.map((r) => (detail ? flavorBody(ctx, flavors, r, ctx.can('os_compute_api:os-flavor-extra-specs:index')) : { id: r.id, name: r.name, links: links(ctx.serviceUrl, 'flavors', r.id), ...(ctx.microversion >= 55 ? { description: r.description } : {}) })),
    };
    if (rows.length > limit && page.length) body['flavors_links'] = [{ href: `${ctx.serviceUrl}/v2.1/flavors${detail ? '/detail' : ''}?limit=${limit}&marker=${page[page.length - 1]!.id}`, rel: 'next' }];
    return { status: 200, body };
  };
  const FlavorListQuery = Type.Object({
    is_public: Type.Optional(Type.String()), minRam: Type.Optional(Type.Integer({ minimum: 0 })), minDisk: Type.Optional(Type.Integer({ minimum: 0 })),
    limit: Type.Optional(Type.Integer({ minimum: 0 })), marker: Type.Optional(Type.String()), sort_key: Type.Optional(Type.String()), sort_dir: Type.Optional(Type.String({ enum: ['asc', 'desc'] })),
  }, { additionalProperties: true });
  const flavorResponse = versioned(flavorBreakpoints, (v) => Type.Object({ flavor: flavorSchema(v) }, { additionalProperties: false }));
  const quotaSetSchema = (v: number, withId: boolean, detail: boolean) => {
    const props: Record<string, TSchema> = {};
    const value = detail ? Type.Object({ limit: Type.Integer(), in_use: Type.Integer(), reserved: Type.Integer() }, { additionalProperties: false }) : Type.Integer();
    for (const r of visibleQuotaKeys(v)) props[r] = value;
    if (withId) props['id'] = Type.String();
    return Type.Object(props, { additionalProperties: false });
  };
  const quotaBody = (v: number, projectId: string, limits: Record<ComputeQuotaResource, number>, withId: boolean, usage?: Record<string, number>) => {
    const body: Record<string, unknown> = {};
    for (const r of visibleQuotaKeys(v)) body[r] = usage ? { limit: limits[r], in_use: usage[r] ?? 0, reserved: 0 } : limits[r];
    if (withId) body['id'] = projectId;
    return body;
  };
  const quotaBreakpoints = [1, 36, 57];
  const QuotaParams = Type.Object({ project_id: Type.String({ minLength: 1, maxLength: 255 }) });

  return [
    // ---- flavors ----
    route({ method: 'GET', path: '/flavors', policy: 'os_compute_api:flavors:index', query: FlavorListQuery,
      responses: { 200: versioned([1, 55], (v) => Type.Object({ flavors: Type.Array(Type.Object({ id: Type.String(), name: Type.String(), links: Links, ...(v >= 55 ? { description: Nullable(Type.String()) } : {}) }, { additionalProperties: false })), flavors_links: Type.Optional(Links) }, { additionalProperties: false })) },
      handler: (ctx) => flavorList(ctx as never, false) }),
    route({ method: 'GET', path: '/flavors/detail', policy: 'os_compute_api:flavors:index', query: FlavorListQuery,
      responses: { 200: versioned(flavorBreakpoints, (v) => Type.Object({ flavors: Type.Array(flavorSchema(v)), flavors_links: Type.Optional(Links) }, { additionalProperties: false })) },
      handler: (ctx) => flavorList(ctx as never, true) }),
    route({ method: 'GET', path: '/flavors/:flavor_id', policy: 'os_compute_api:flavors:index', params: FlavorIdParams, responses: { 200: flavorResponse },
      handler(ctx) {
        const row = flavors.get(ctx.params['flavor_id']!, ctx.auth!.projectId, isAdmin(ctx as never));
        return { status: 200, body: { flavor: flavorBody(ctx as never, flavors, row, ctx.can('os_compute_api:os-flavor-extra-specs:index')) } };
      } }),
    route({ method: 'POST', path: '/flavors', policy: 'os_compute_api:os-flavor-manage:create',
      body: Type.Object({ flavor: Type.Object({
        name: Type.String({ minLength: 1, maxLength: 255, pattern: '^(?! )[^\\x00-\\x1F]*(?<! )$' }),
        id: Type.Optional(Nullable(Type.String({ minLength: 1, maxLength: 255, pattern: '^(?! )[a-zA-Z0-9. _-]+(?<! )$' }))),
        ram: Type.Union([Type.Integer({ minimum: 1, maximum: 2147483647 }), Type.String({ pattern: '^[0-9]+$' })]),
        vcpus: Type.Union([Type.Integer({ minimum: 1, maximum: 2147483647 }), Type.String({ pattern: '^[0-9]+$' })]),
        disk: Type.Union([Type.Integer({ minimum: 0, maximum: 2147483647 }), Type.String({ pattern: '^[0-9]+$' })]),
        'OS-FLV-EXT-DATA:ephemeral': Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.String({ pattern: '^[0-9]+$' })])),
        swap: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.String({ pattern: '^[0-9]*$' })])),
        rxtx_factor: Type.Optional(Type.Union([Type.Number({ exclusiveMinimum: 0 }), Type.String()])),
        'os-flavor-access:is_public': Type.Optional(Type.Union([Type.Boolean(), Type.String()])),
        description: Type.Optional(Nullable(Type.String({ maxLength: 65535 }))),
      }, { additionalProperties: false }) }, { additionalProperties: false }),
      responses: { 200: flavorResponse },
      handler(ctx) {
        const f = ctx.body.flavor;
        if (f.description !== undefined && ctx.microversion < 55) throw errors.badRequest('description needs microversion 2.55 or later.');
        const num = (v: number | string | undefined, name: string, min: number) => {
          const n = v === undefined || v === '' ? 0 : Number(v);
          if (!Number.isInteger(n) || n < min) throw errors.badRequest(`Invalid input for field/attribute ${name}. Value: ${v}. Expected an integer >= ${min}.`);
          return n;
        };
        const isPublic = f['os-flavor-access:is_public'];
        const row = flavors.create({
          name: f.name, id: f.id ?? null, ramMiB: num(f.ram, 'ram', 1), vcpus: num(f.vcpus, 'vcpus', 1), rootGiB: num(f.disk, 'disk', 0),
          ephemeralGiB: num(f['OS-FLV-EXT-DATA:ephemeral'], 'OS-FLV-EXT-DATA:ephemeral', 0), swapMiB: num(f.swap, 'swap', 0),
          rxtxFactor: f.rxtx_factor !== undefined ? Number(f.rxtx_factor) : 1,
          isPublic: isPublic === undefined ? true : isPublic === true || String(isPublic).toLowerCase() === 'true',
          description: f.description ?? null,
        });
        return { status: 200, body: { flavor: flavorBody(ctx as never, flavors, row, true) } };
      } }),
    route({ method: 'PUT', path: '/flavors/:flavor_id', policy: 'os_compute_api:os-flavor-manage:update', versions: { min: 55, max: 79 }, params: FlavorIdParams,
      body: Type.Object({ flavor: Type.Object({ description: Nullable(Type.String({ maxLength: 65535 })) }, { additionalProperties: false }) }, { additionalProperties: false }),
      responses: { 200: flavorResponse },
      handler: (ctx) => ({ status: 200, body: { flavor: flavorBody(ctx as never, flavors, flavors.update(ctx.params['flavor_id']!, ctx.body.flavor.description), true) } }) }),
    route({ method: 'DELETE', path: '/flavors/:flavor_id', policy: 'os_compute_api:os-flavor-manage:delete', params: FlavorIdParams, responses: { 202: null },
      handler(ctx) {
        flavors.delete(ctx.params['flavor_id']!);
        return { status: 202 };
      } }),
    route({ method: 'GET', path: '/flavors/:flavor_id/os-extra_specs', policy: 'os_compute_api:os-flavor-extra-specs:index', params: FlavorIdParams,
      responses: { 200: Type.Object({ extra_specs: Type.Record(Type.String(), Type.String()) }, { additionalProperties: false }) },
      handler(ctx) {
        const row = flavors.get(ctx.params['flavor_id']!, ctx.auth!.projectId, isAdmin(ctx as never));
        return { status: 200, body: { extra_specs: flavors.extraSpecs(row.id) } };
      } }),
    route({ method: 'POST', path: '/flavors/:flavor_id/os-extra_specs', policy: 'os_compute_api:os-flavor-extra-specs:create', params: FlavorIdParams,
      body: Type.Object({ extra_specs: Type.Record(Type.String({ minLength: 1, maxLength: 255, pattern: '^[a-zA-Z0-9-_:. ]+$' }), Type.Union([Type.String({ maxLength: 255 }), Type.Number(), Type.Boolean()]), { minProperties: 1 }) }, { additionalProperties: false }),
      responses: { 200: Type.Object({ extra_specs: ExtraSpecs }, { additionalProperties: false }) },
      handler(ctx) {
        const specs = Object.fromEntries(Object.entries(ctx.body.extra_specs).map(([k, v]) => [k, String(v)]));
        return { status: 200, body: { extra_specs: flavors.setExtraSpecs(ctx.params['flavor_id']!, specs) } };
      } }),
    route({ method: 'GET', path: '/flavors/:flavor_id/os-extra_specs/:key', policy: 'os_compute_api:os-flavor-extra-specs:show',
      params: Type.Object({ flavor_id: Type.String(), key: Type.String({ minLength: 1, maxLength: 255 }) }),
      responses: { 200: Type.Record(Type.String(), Type.String(), { minProperties: 1, maxProperties: 1 }) },
      handler(ctx) {
        const row = flavors.get(ctx.params['flavor_id']!, ctx.auth!.projectId, isAdmin(ctx as never));
        const value = flavors.extraSpecs(row.id)[ctx.params['key']!];
        if (value === undefined) throw errors.notFound('Flavor extra spec', `${ctx.params['key']} of flavor ${row.id}`);
        return { status: 200, body: { [ctx.params['key']!]: value } };
      } }),
    route({ method: 'PUT', path: '/flavors/:flavor_id/os-extra_specs/:key', policy: 'os_compute_api:os-flavor-extra-specs:update',
      params: Type.Object({ flavor_id: Type.String(), key: Type.String({ minLength: 1, maxLength: 255 }) }),
      body: Type.Record(Type.String({ minLength: 1, maxLength: 255 }), Type.Union([Type.String({ maxLength: 255 }), Type.Number(), Type.Boolean()]), { minProperties: 1, maxProperties: 1 }),
      responses: { 200: Type.Record(Type.String(), Type.String(), { minProperties: 1, maxProperties: 1 }) },
      handler(ctx) {
        const key = ctx.params['key']!;
        const body = ctx.body as Record<string, unknown>;
        if (!(key in body)) throw errors.badRequest(`Request body and URI mismatch: the URL names key '${key}', the body '${Object.keys(body)[0]}'.`);
        flavors.setExtraSpecs(ctx.params['flavor_id']!, { [key]: String(body[key]) });
        return { status: 200, body: { [key]: String(body[key]) } };
      } }),
    route({ method: 'DELETE', path: '/flavors/:flavor_id/os-extra_specs/:key', policy: 'os_compute_api:os-flavor-extra-specs:delete',
      params: Type.Object({ flavor_id: Type.String(), key: Type.String({ minLength: 1, maxLength: 255 }) }), responses: { 200: null },
      handler(ctx) {
        flavors.deleteExtraSpec(ctx.params['flavor_id']!, ctx.params['key']!);
        return { status: 200 };
      } }),
    route({ method: 'GET', path: '/flavors/:flavor_id/os-flavor-access', policy: 'os_compute_api:os-flavor-access', params: FlavorIdParams,
      responses: { 200: Type.Object({ flavor_access: Type.Array(Type.Object({ flavor_id: Type.String(), tenant_id: Type.String() }, { additionalProperties: false })) }, { additionalProperties: false }) },
      handler: (ctx) => ({ status: 200, body: { flavor_access: flavors.access(ctx.params['flavor_id']!).map((p) => ({ flavor_id: ctx.params['flavor_id']!, tenant_id: p })) } }) }),
    route({ method: 'POST', path: '/flavors/:flavor_id/action', policy: 'os_compute_api:os-flavor-access', params: FlavorIdParams,
      body: Type.Object({
        addTenantAccess: Type.Optional(Type.Object({ tenant: Type.String({ minLength: 1, maxLength: 255 }) }, { additionalProperties: false })),
        removeTenantAccess: Type.Optional(Type.Object({ tenant: Type.String({ minLength: 1, maxLength: 255 }) }, { additionalProperties: false })),
      }, { additionalProperties: false, minProperties: 1, maxProperties: 1 }),
      responses: { 200: Type.Object({ flavor_access: Type.Array(Type.Object({ flavor_id: Type.String(), tenant_id: Type.String() }, { additionalProperties: false })) }, { additionalProperties: false }) },
      handler(ctx) {
        const id = ctx.params['flavor_id']!;
        if (ctx.body.addTenantAccess) {
          ctx.authorize('os_compute_api:os-flavor-access:add_tenant_access');
          if (!deps.projectExists(ctx.body.addTenantAccess.tenant)) throw errors.badRequest(`Project ${ctx.body.addTenantAccess.tenant} does not exist (openstack project list).`);
          flavors.addAccess(id, ctx.body.addTenantAccess.tenant);
        } else {
          ctx.authorize('os_compute_api:os-flavor-access:remove_tenant_access');
          flavors.removeAccess(id, ctx.body.removeTenantAccess!.tenant);
        }
        return { status: 200, body: { flavor_access: flavors.access(id).map((p) => ({ flavor_id: id, tenant_id: p })) } };
      } }),

    // ---- key pairs ----
    route({ method: 'GET', path: '/os-keypairs', policy: 'os_compute_api:os-keypairs:index',
      query: Type.Object({ user_id: Type.Optional(Type.String()), limit: Type.Optional(Type.Integer({ minimum: 0 })), marker: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: Type.Object({ keypairs: Type.Array(Type.Object({ keypair: Type.Object({ name: Type.String(), public_key: Type.String(), fingerprint: Type.String(), type: Type.Optional(Type.String()) }, { additionalProperties: false }) }, { additionalProperties: false })), keypairs_links: Type.Optional(Links) }, { additionalProperties: false }) },
      handler(ctx) {
        const q = ctx.queryParams as { user_id?: string };
        const userId = ctx.microversion >= 10 && q.user_id ? q.user_id : ctx.auth!.userId;
        ctx.authorize('os_compute_api:os-keypairs:index', { user_id: userId });
        return { status: 200, body: { keypairs: keypairs.list(userId).map((k) => ({ keypair: keypairBody(ctx as never, k, false) })) } };
      } }),
    route({ method: 'POST', path: '/os-keypairs', policy: 'os_compute_api:os-keypairs:create',
      body: Type.Object({ keypair: Type.Object({
        name: Type.String({ minLength: 1, maxLength: 255, pattern: '^[a-zA-Z0-9 @._-]+$' }),
        public_key: Type.Optional(Type.String({ minLength: 1 })),
        type: Type.Optional(Type.String({ enum: ['ssh', 'x509'] })),
        user_id: Type.Optional(Type.String()),
      }, { additionalProperties: false }) }, { additionalProperties: false }),
      responses: { 200: Type.Object({ keypair: Type.Object({ name: Type.String(), public_key: Type.String(), fingerprint: Type.String(), user_id: Type.String(), type: Type.Optional(Type.String()), private_key: Type.Optional(Type.String()) }, { additionalProperties: false }) }, { additionalProperties: false }), 201: Type.Object({ keypair: Type.Object({ name: Type.String(), public_key: Type.String(), fingerprint: Type.String(), user_id: Type.String(), type: Type.Optional(Type.String()), private_key: Type.Optional(Type.String()) }, { additionalProperties: false }) }, { additionalProperties: false }) },
      handler(ctx) {
        const k = ctx.body.keypair;
        if (k.type !== undefined && ctx.microversion < 2) throw errors.badRequest('type needs microversion 2.2 or later.');
        if (k.type === 'x509') throw errors.badRequest('x509 key pairs are not supported by Pumice; use an ssh key.');
        const userId = ctx.microversion >= 10 && k.user_id ? k.user_id : ctx.auth!.userId;
        ctx.authorize('os_compute_api:os-keypairs:create', { user_id: userId });
        const limit = quotas.limits(ctx.auth!.projectId ?? '').key_pairs;
        const { row, privateKey } = keypairs.create(userId, k.name, k.type ?? 'ssh', k.public_key ?? null, limit);
        const body: Record<string, unknown> = { ...keypairBody(ctx as never, row, false), user_id: row.user_id };
        if (privateKey) body['private_key'] = privateKey;
        return { status: ctx.microversion >= 2 ? 201 : 200, body: { keypair: body } };
      } }),
    route({ method: 'GET', path: '/os-keypairs/:name', policy: 'os_compute_api:os-keypairs:show', params: Type.Object({ name: Type.String({ minLength: 1, maxLength: 255 }) }),
      query: Type.Object({ user_id: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: Type.Object({ keypair: Type.Object({ name: Type.String(), public_key: Type.String(), fingerprint: Type.String(), type: Type.Optional(Type.String()), user_id: Type.String(), created_at: Type.String(), deleted: Type.Boolean(), deleted_at: Type.Null(), updated_at: Type.Null(), id: Type.Integer() }, { additionalProperties: false }) }, { additionalProperties: false }) },
      handler(ctx) {
        const q = ctx.queryParams as { user_id?: string };
        const userId = ctx.microversion >= 10 && q.user_id ? q.user_id : ctx.auth!.userId;
        ctx.authorize('os_compute_api:os-keypairs:show', { user_id: userId });
        return { status: 200, body: { keypair: keypairBody(ctx as never, keypairs.get(userId, ctx.params['name']!), true) } };
      } }),
    route({ method: 'DELETE', path: '/os-keypairs/:name', policy: 'os_compute_api:os-keypairs:delete', params: Type.Object({ name: Type.String({ minLength: 1, maxLength: 255 }) }),
      query: Type.Object({ user_id: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 202: null, 204: null },
      handler(ctx) {
        const q = ctx.queryParams as { user_id?: string };
        const userId = ctx.microversion >= 10 && q.user_id ? q.user_id : ctx.auth!.userId;
        ctx.authorize('os_compute_api:os-keypairs:delete', { user_id: userId });
        keypairs.delete(userId, ctx.params['name']!);
        return { status: ctx.microversion >= 2 ? 204 : 202 };
      } }),

    // ---- availability zones ----
    route({ method: 'GET', path: '/os-availability-zone', policy: 'os_compute_api:os-availability-zone:list',
      responses: { 200: Type.Object({ availabilityZoneInfo: Type.Array(Type.Object({ zoneName: Type.String(), zoneState: Type.Object({ available: Type.Boolean() }, { additionalProperties: false }), hosts: Type.Null() }, { additionalProperties: false })) }, { additionalProperties: false }) },
      handler() {
        const zones = new Map<string, boolean>();
        for (const s of hosts.services({ binary: computeBinary })) zones.set(s.zone, (zones.get(s.zone) ?? false) || (!s.disabled && hosts.isUp(s)));
        return { status: 200, body: { availabilityZoneInfo: [...zones].map(([zoneName, available]) => ({ zoneName, zoneState: { available }, hosts: null })) } };
      } }),
    route({ method: 'GET', path: '/os-availability-zone/detail', policy: 'os_compute_api:os-availability-zone:detail',
      responses: { 200: Type.Object({ availabilityZoneInfo: Type.Array(Type.Object({ zoneName: Type.String(), zoneState: Type.Object({ available: Type.Boolean() }, { additionalProperties: false }), hosts: Nullable(Type.Record(Type.String(), Type.Record(Type.String(), Type.Object({ available: Type.Boolean(), active: Type.Boolean(), updated_at: Nullable(Type.String()) }, { additionalProperties: false })))) }, { additionalProperties: false })) }, { additionalProperties: false }) },
      handler() {
        const zones = new Map<string, Record<string, Record<string, { available: boolean; active: boolean; updated_at: string | null }>>>();
        for (const s of hosts.services()) {
          const zone = s.binary === computeBinary ? s.zone : 'internal';
          const entry = zones.get(zone) ?? {};
          entry[s.host] = { ...(entry[s.host] ?? {}), [s.binary]: { available: hosts.isUp(s), active: !s.disabled, updated_at: s.heartbeat_at } };
          zones.set(zone, entry);
        }
        return { status: 200, body: { availabilityZoneInfo: [...zones].map(([zoneName, h]) => ({ zoneName, zoneState: { available: Object.values(h).some((b) => Object.values(b).some((x) => x.available && x.active)) }, hosts: h })) } };
      } }),

    // ---- limits and quotas ----
    route({ method: 'GET', path: '/limits', policy: 'os_compute_api:limits', query: Type.Object({ tenant_id: Type.Optional(Type.String()), reserved: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: Type.Object({ limits: Type.Object({ rate: Type.Array(Type.Unknown()), absolute: Type.Record(Type.String(), Type.Integer()) }, { additionalProperties: false }) }, { additionalProperties: false }) },
      handler(ctx) {
        const q = ctx.queryParams as { tenant_id?: string };
        const projectId = q.tenant_id && ctx.auth!.isAdmin ? q.tenant_id : ctx.auth!.projectId ?? '';
        const l = quotas.limits(projectId);
        const u = quotas.usage(projectId, ctx.auth!.userId);
        const absolute: Record<string, number> = {
          maxTotalInstances: l.instances, maxTotalCores: l.cores, maxTotalRAMSize: l.ram, maxTotalKeypairs: l.key_pairs,
          maxServerMeta: l.metadata_items, maxServerGroups: l.server_groups, maxServerGroupMembers: l.server_group_members,
          totalInstancesUsed: u.instances, totalCoresUsed: u.cores, totalRAMUsed: u.ram, totalServerGroupsUsed: 0,
        };
        if (ctx.microversion < 57) Object.assign(absolute, { maxPersonality: l.injected_files, maxPersonalitySize: l.injected_file_content_bytes });
        // Nova drops the networking limits at 2.36 and maxImageMeta (the image API's business) at 2.39.
        if (ctx.microversion < 36) Object.assign(absolute, { maxSecurityGroups: l.security_groups, maxSecurityGroupRules: l.security_group_rules, maxTotalFloatingIps: l.floating_ips, totalSecurityGroupsUsed: 0, totalFloatingIpsUsed: 0 });
        if (ctx.microversion < 39) absolute['maxImageMeta'] = l.metadata_items;
        return { status: 200, body: { limits: { rate: [], absolute } } };
      } }),
    route({ method: 'GET', path: '/os-quota-sets/:project_id', policy: 'os_compute_api:os-quota-sets:show', params: QuotaParams,
      query: Type.Object({ user_id: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: versioned(quotaBreakpoints, (v) => Type.Object({ quota_set: quotaSetSchema(v, true, false) }, { additionalProperties: false })) },
      handler(ctx) {
        const projectId = ctx.params['project_id']!;
        ctx.authorize('os_compute_api:os-quota-sets:show', { project_id: projectId });
        return { status: 200, body: { quota_set: quotaBody(ctx.microversion, projectId, quotas.limits(projectId), true) } };
      } }),
    route({ method: 'GET', path: '/os-quota-sets/:project_id/detail', policy: 'os_compute_api:os-quota-sets:detail', params: QuotaParams,
      responses: { 200: versioned(quotaBreakpoints, (v) => Type.Object({ quota_set: quotaSetSchema(v, true, true) }, { additionalProperties: false })) },
      handler(ctx) {
        const projectId = ctx.params['project_id']!;
        ctx.authorize('os_compute_api:os-quota-sets:detail', { project_id: projectId });
        const usage = quotas.usage(projectId, ctx.auth!.userId) as unknown as Record<string, number>;
        return { status: 200, body: { quota_set: quotaBody(ctx.microversion, projectId, quotas.limits(projectId), true, usage) } };
      } }),
    route({ method: 'GET', path: '/os-quota-sets/:project_id/defaults', policy: 'os_compute_api:os-quota-sets:defaults', params: QuotaParams,
      responses: { 200: versioned(quotaBreakpoints, (v) => Type.Object({ quota_set: quotaSetSchema(v, true, false) }, { additionalProperties: false })) },
      handler: (ctx) => ({ status: 200, body: { quota_set: quotaBody(ctx.microversion, ctx.params['project_id']!, { ...computeQuotaDefaults }, true) } }) }),
    route({ method: 'PUT', path: '/os-quota-sets/:project_id', policy: 'os_compute_api:os-quota-sets:update', params: QuotaParams,
      body: Type.Object({ quota_set: Type.Object({
        ...Object.fromEntries(computeQuotaResources.map((r) => [r, Type.Optional(Type.Union([Type.Integer({ minimum: -1, maximum: 2147483647 }), Type.String({ pattern: '^-?[0-9]+$' })]))])),
        force: Type.Optional(Type.Union([Type.Boolean(), Type.String()])),
      }, { additionalProperties: false }) }, { additionalProperties: false }),
      responses: { 200: versioned(quotaBreakpoints, (v) => Type.Object({ quota_set: quotaSetSchema(v, false, false) }, { additionalProperties: false })) },
      handler(ctx) {
        const projectId = ctx.params['project_id']!;
        if (!deps.projectExists(projectId)) throw errors.badRequest(`Project ${projectId} does not exist (openstack project list).`);
        const changes: Partial<Record<ComputeQuotaResource, number>> = {};
        const visible = new Set(visibleQuotaKeys(ctx.microversion));
        for (const [key, value] of Object.entries(ctx.body.quota_set)) {
          if (key === 'force') continue;
          if (!visible.has(key as ComputeQuotaResource)) throw errors.badRequest(`Invalid input for field/attribute quota_set. Additional properties are not allowed ('${key}' was unexpected at microversion 2.${ctx.microversion}).`);
          changes[key as ComputeQuotaResource] = Number(value);
        }
        quotas.setLimits(projectId, changes);
        return { status: 200, body: { quota_set: quotaBody(ctx.microversion, projectId, quotas.limits(projectId), false) } };
      } }),
    route({ method: 'DELETE', path: '/os-quota-sets/:project_id', policy: 'os_compute_api:os-quota-sets:delete', params: QuotaParams, responses: { 202: null },
      handler(ctx) {
        quotas.resetLimits(ctx.params['project_id']!);
        return { status: 202 };
      } }),

    // ---- services ----
    route({ method: 'GET', path: '/os-services', policy: 'os_compute_api:os-services:list',
      query: Type.Object({ binary: Type.Optional(Type.String()), host: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: versioned([1, 11, 53], (v) => Type.Object({ services: Type.Array(ServiceSchema(v)) }, { additionalProperties: false })) },
      handler(ctx) {
        const q = ctx.queryParams as { binary?: string; host?: string };
        return { status: 200, body: { services: hosts.services({ binary: q.binary ?? null, host: q.host ?? null }).map((s) => serviceBody(ctx as never, hosts, s)) } };
      } }),
    // Before 2.53 a service is changed with PUT /os-services/{enable|disable|disable-log-reason|force-down}.
    // One path for both forms: the router matches by pattern, the microversion picks the declaration.
    route({ method: 'PUT', path: '/os-services/:service_id', policy: 'os_compute_api:os-services:update', versions: { min: 1, max: 52 },
      params: Type.Object({ service_id: Type.String({ enum: ['enable', 'disable', 'disable-log-reason', 'force-down'] }) }),
      body: Type.Object({ host: Type.String({ minLength: 1, maxLength: 255 }), binary: Type.String({ minLength: 1, maxLength: 255 }), disabled_reason: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })), forced_down: Type.Optional(Type.Boolean()) }, { additionalProperties: false }),
      responses: { 200: Type.Object({ service: Type.Object({ host: Type.String(), binary: Type.String(), status: Type.Optional(Type.String()), disabled_reason: Type.Optional(Nullable(Type.String())), forced_down: Type.Optional(Type.Boolean()) }, { additionalProperties: false }) }, { additionalProperties: false }) },
      handler(ctx) {
        const action = ctx.params['service_id']!;
        const b = ctx.body;
        const row = hosts.serviceByHost(b.binary, b.host);
        if (!row || !row.binary.startsWith('nova-')) throw errors.notFound('Service', `${b.binary} on host ${b.host}`);
        if (action === 'force-down') {
          if (ctx.microversion < 11) throw errors.routeNotFound('PUT', '/os-services/force-down');
          if (b.forced_down === undefined) throw errors.badRequest("Invalid input for field/attribute forced_down: 'forced_down' is a required property.");
          hosts.update(row.id, { forcedDown: b.forced_down });
          return { status: 200, body: { service: { host: b.host, binary: b.binary, forced_down: b.forced_down } } };
        }
        if (action === 'disable-log-reason' && !b.disabled_reason) throw errors.badRequest('disable-log-reason needs disabled_reason.');
        const disabled = action !== 'enable';
        hosts.update(row.id, { disabled, disabledReason: b.disabled_reason ?? null });
        const service: Record<string, unknown> = { host: b.host, binary: b.binary, status: disabled ? 'disabled' : 'enabled' };
        if (action === 'disable-log-reason') service['disabled_reason'] = b.disabled_reason;
        return { status: 200, body: { service } };
      } }),
    route({ method: 'PUT', path: '/os-services/:service_id', policy: 'os_compute_api:os-services:update', versions: { min: 53, max: 79 },
      params: Type.Object({ service_id: Type.String({ format: 'uuid' }) }),
      body: Type.Object({ status: Type.Optional(Type.String({ enum: ['enabled', 'disabled'] })), disabled_reason: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })), forced_down: Type.Optional(Type.Boolean()) }, { additionalProperties: false, minProperties: 1 }),
      responses: { 200: Type.Object({ service: ServiceSchema(53) }, { additionalProperties: false }) },
      handler(ctx) {
        const row = hosts.service(ctx.params['service_id']!);
        const b = ctx.body;
        if (b.disabled_reason !== undefined && b.status !== 'disabled') throw errors.badRequest('disabled_reason is only allowed with status disabled.');
        const updated = hosts.update(row.id, {
          ...(b.status ? { disabled: b.status === 'disabled', disabledReason: b.disabled_reason ?? null } : {}),
          ...(b.forced_down !== undefined ? { forcedDown: b.forced_down } : {}),
        });
        return { status: 200, body: { service: serviceBody(ctx as never, hosts, updated) } };
      } }),
    route({ method: 'DELETE', path: '/os-services/:service_id', policy: 'os_compute_api:os-services:delete', params: Type.Object({ service_id: Type.String() }), responses: { 204: null },
      handler(ctx) {
        hosts.delete(hosts.service(ctx.params['service_id']!).id);
        return { status: 204 };
      } }),

    // ---- host aggregates: none yet (zones come from [compute] default_availability_zone per host) ----
    route({ method: 'GET', path: '/os-aggregates', policy: 'os_compute_api:os-aggregates:index',
      responses: { 200: Type.Object({ aggregates: Type.Array(Type.Unknown(), { maxItems: 0 }) }, { additionalProperties: false }) },
      handler: () => ({ status: 200, body: { aggregates: [] } }) }),

    // ---- hypervisors ----
    route({ method: 'GET', path: '/os-hypervisors', policy: 'os_compute_api:os-hypervisors:list',
      query: Type.Object({ hypervisor_hostname_pattern: Type.Optional(Type.String()), limit: Type.Optional(Type.Integer({ minimum: 0 })), marker: Type.Optional(Type.String()), with_servers: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: Type.Object({ hypervisors: Type.Array(Type.Object({ id: Type.Union([Type.Integer(), Type.String()]), hypervisor_hostname: Type.String(), state: Type.String(), status: Type.String() }, { additionalProperties: false })), hypervisors_links: Type.Optional(Links) }, { additionalProperties: false }) },
      handler(ctx) {
        const q = ctx.queryParams as { hypervisor_hostname_pattern?: string };
        const nodes = hosts.nodes().filter((n) => !q.hypervisor_hostname_pattern || n.hypervisor_hostname.includes(q.hypervisor_hostname_pattern));
        return { status: 200, body: { hypervisors: nodes.map((n) => hypervisorBody(ctx as never, hosts, n, false)) } };
      } }),
    route({ method: 'GET', path: '/os-hypervisors/detail', policy: 'os_compute_api:os-hypervisors:list-detail',
      query: Type.Object({ hypervisor_hostname_pattern: Type.Optional(Type.String()), limit: Type.Optional(Type.Integer({ minimum: 0 })), marker: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: Type.Object({ hypervisors: Type.Array(Type.Record(Type.String(), Type.Unknown())), hypervisors_links: Type.Optional(Links) }, { additionalProperties: false }) },
      handler(ctx) {
        const q = ctx.queryParams as { hypervisor_hostname_pattern?: string };
        const nodes = hosts.nodes().filter((n) => !q.hypervisor_hostname_pattern || n.hypervisor_hostname.includes(q.hypervisor_hostname_pattern));
        return { status: 200, body: { hypervisors: nodes.map((n) => hypervisorBody(ctx as never, hosts, n, true)) } };
      } }),
    route({ method: 'GET', path: '/os-hypervisors/statistics', policy: 'os_compute_api:os-hypervisors:statistics', versions: { min: 1, max: 87 },
      responses: { 200: Type.Object({ hypervisor_statistics: Type.Object(Object.fromEntries(['count', 'vcpus_used', 'local_gb_used', 'memory_mb', 'current_workload', 'vcpus', 'running_vms', 'free_disk_gb', 'disk_available_least', 'local_gb', 'free_ram_mb', 'memory_mb_used'].map((k) => [k, Type.Integer()])), { additionalProperties: false }) }, { additionalProperties: false }) },
      handler(ctx) {
        const stats = { count: 0, vcpus_used: 0, local_gb_used: 0, memory_mb: 0, current_workload: 0, vcpus: 0, running_vms: 0, free_disk_gb: 0, disk_available_least: 0, local_gb: 0, free_ram_mb: 0, memory_mb_used: 0 };
        // Hosts sharing one RBD pool report the same pool: count it once.
        const rbdPoolsCounted = new Set<string>();
        for (const node of hosts.nodes()) {
          const body = hypervisorBody(ctx as never, hosts, node, true) as Record<string, number>;
          stats.count += 1;
          for (const k of ['vcpus_used', 'memory_mb', 'current_workload', 'vcpus', 'running_vms', 'free_ram_mb', 'memory_mb_used'] as const) stats[k] += body[k] ?? 0;
          const pool = node.disk_source === 'rbd' ? String((JSON.parse(node.disk_detail ?? '{}') as { pool?: string }).pool) : null;
          if (pool && rbdPoolsCounted.has(pool)) continue;
          if (pool) rbdPoolsCounted.add(pool);
          for (const k of ['local_gb_used', 'free_disk_gb', 'disk_available_least', 'local_gb'] as const) stats[k] += body[k] ?? 0;
        }
        return { status: 200, body: { hypervisor_statistics: stats } };
      } }),
    route({ method: 'GET', path: '/os-hypervisors/:hypervisor_id/uptime', policy: 'os_compute_api:os-hypervisors:uptime', versions: { min: 1, max: 87 }, params: Type.Object({ hypervisor_id: Type.String() }),
      responses: { 200: Type.Object({ hypervisor: Type.Object({ id: Type.Union([Type.Integer(), Type.String()]), hypervisor_hostname: Type.String(), state: Type.String(), status: Type.String(), uptime: Type.String() }, { additionalProperties: false }) }, { additionalProperties: false }) },
      handler(ctx) {
        const node = findNode(ctx as never, hosts, ctx.params['hypervisor_id']!);
        // The host's uptime as `uptime` prints it (Nova asks the hypervisor; every host here reports this machine's).
        const seconds = Math.floor(osUptime());
        const days = Math.floor(seconds / 86400);
        const hhmm = `${Math.floor((seconds % 86400) / 3600)}:${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}`;
        const load = loadavg().map((l) => l.toFixed(2)).join(', ');
        const now = new Date().toISOString().slice(11, 19);
        return { status: 200, body: { hypervisor: { ...hypervisorBody(ctx as never, hosts, node, false), uptime: ` ${now} up ${days ? `${days} day${days > 1 ? 's' : ''}, ` : ''}${hhmm},  load average: ${load}` } } };
      } }),
    route({ method: 'GET', path: '/os-hypervisors/:hypervisor_id', policy: 'os_compute_api:os-hypervisors:show', params: Type.Object({ hypervisor_id: Type.String() }),
      query: Type.Object({ with_servers: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: Type.Object({ hypervisor: Type.Record(Type.String(), Type.Unknown()) }, { additionalProperties: false }) },
      handler(ctx) {
        const node = findNode(ctx as never, hosts, ctx.params['hypervisor_id']!);
        const body = hypervisorBody(ctx as never, hosts, node, true);
        return { status: 200, body: { hypervisor: body } };
      } }),
  ];
}

/** Quota keys Nova shows at a microversion: networking keys go at 2.36, injected files at 2.57. */
function visibleQuotaKeys(v: number): ComputeQuotaResource[] {
  return computeQuotaResources.filter((r) => {
    if (v >= 36 && ['floating_ips', 'fixed_ips', 'security_groups', 'security_group_rules'].includes(r)) return false;
    if (v >= 57 && r.startsWith('injected_file')) return false;
    return true;
  });
}
