/**
 * Routes of /servers: create, list, show, update, delete, actions, metadata,
 * volume attachments, instance actions and the console log.
 */
import { existsSync, openSync, readSync, closeSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Type } from '@sinclair/typebox';
import { errors } from '../../errors.ts';
import { Nullable, route, type AnyRouteSpec, type DeclaredContext } from '../../http/declare.ts';
import type { ComputeHosts } from '../hosts.ts';
import type { BdmRow } from '../model.ts';
import { novaTime } from '../model.ts';
import { ServerService, type ServerListQuery } from '../servers.ts';
import { Links, links, renderServer, renderServerSummary, serverDetailResponses, serverListDetailResponses, ServerSummary, type RenderContext } from './render.ts';

const ServerIdParams = Type.Object({ server_id: Type.String({ minLength: 1, maxLength: 255 }) });
const Metadata = Type.Record(Type.String({ minLength: 1, maxLength: 255 }), Type.String({ maxLength: 255 }));
const IntOrString = Type.Union([Type.Integer(), Type.String({ pattern: '^-?[0-9]+$' })]);
const BoolOrString = Type.Union([Type.Boolean(), Type.String()]);

const BlockDeviceMapping = Type.Object(
  {
    source_type: Type.String({ enum: ['volume', 'image', 'snapshot', 'blank'] }),
    destination_type: Type.Optional(Nullable(Type.String({ enum: ['local', 'volume'] }))),
    uuid: Type.Optional(Nullable(Type.String({ minLength: 1, maxLength: 255 }))),
    boot_index: Type.Optional(Nullable(IntOrString)),
    volume_size: Type.Optional(Nullable(IntOrString)),
    delete_on_termination: Type.Optional(Nullable(BoolOrString)),
    device_name: Type.Optional(Nullable(Type.String({ maxLength: 255 }))),
    disk_bus: Type.Optional(Nullable(Type.String())),
    device_type: Type.Optional(Nullable(Type.String())),
    guest_format: Type.Optional(Nullable(Type.String())),
    no_device: Type.Optional(Nullable(Type.Boolean())),
    tag: Type.Optional(Nullable(Type.String({ maxLength: 60 }))),
    volume_type: Type.Optional(Nullable(Type.String({ maxLength: 255 }))),
    connection_info: Type.Optional(Type.Unknown()),
    snapshot_id: Type.Optional(Nullable(Type.String())),
    volume_id: Type.Optional(Nullable(Type.String())),
    image_id: Type.Optional(Nullable(Type.String())),
  },
  { additionalProperties: false },
);

const CreateServerBody = Type.Object(
  {
    server: Type.Object(
      {
        name: Type.String({ minLength: 1, maxLength: 255 }),
        flavorRef: Type.Union([Type.String({ minLength: 1 }), Type.Integer()]),
        imageRef: Type.Optional(Nullable(Type.String())),
        adminPass: Type.Optional(Type.String()),
        metadata: Type.Optional(Metadata),
        networks: Type.Optional(Type.Union([Type.String({ enum: ['auto', 'none'] }), Type.Array(Type.Object({}, { additionalProperties: true }))])),
        block_device_mapping_v2: Type.Optional(Type.Array(BlockDeviceMapping)),
        availability_zone: Type.Optional(Nullable(Type.String({ maxLength: 255 }))),
        key_name: Type.Optional(Nullable(Type.String({ minLength: 1, maxLength: 255 }))),
        user_data: Type.Optional(Nullable(Type.String({ maxLength: 65535 }))),
        security_groups: Type.Optional(Type.Array(Type.Object({ name: Type.String() }, { additionalProperties: false }))),
        min_count: Type.Optional(IntOrString),
        max_count: Type.Optional(IntOrString),
        return_reservation_id: Type.Optional(BoolOrString),
        config_drive: Type.Optional(BoolOrString),
        accessIPv4: Type.Optional(Nullable(Type.String())),
        accessIPv6: Type.Optional(Nullable(Type.String())),
        'OS-DCF:diskConfig': Type.Optional(Type.String({ enum: ['AUTO', 'MANUAL'] })),
        description: Type.Optional(Nullable(Type.String({ maxLength: 255 }))),
        tags: Type.Optional(Type.Array(Type.String({ maxLength: 60 }), { maxItems: 50 })),
        host: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
        hypervisor_hostname: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
        personality: Type.Optional(Type.Array(Type.Unknown(), { maxItems: 0 })),
      },
      { additionalProperties: false },
    ),
    'os:scheduler_hints': Type.Optional(Type.Object({}, { additionalProperties: true })),
    'OS-SCH-HNT:scheduler_hints': Type.Optional(Type.Object({}, { additionalProperties: true })),
  },
  { additionalProperties: false },
);

const ListQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 0 })),
    marker: Type.Optional(Type.String()),
    name: Type.Optional(Type.String()),
    status: Type.Optional(Type.String()),
    host: Type.Optional(Type.String()),
    image: Type.Optional(Type.String()),
    flavor: Type.Optional(Type.String()),
    'changes-since': Type.Optional(Type.String({ format: 'date-time' })),
    'changes-before': Type.Optional(Type.String({ format: 'date-time' })),
    all_tenants: Type.Optional(Type.String()),
    project_id: Type.Optional(Type.String()),
    tenant_id: Type.Optional(Type.String()),
    sort_key: Type.Optional(Type.String()),
    sort_dir: Type.Optional(Type.String({ enum: ['asc', 'desc'] })),
    deleted: Type.Optional(Type.String()),
    availability_zone: Type.Optional(Type.String()),
    locked: Type.Optional(Type.String()),
    ip: Type.Optional(Type.String()),
    ip6: Type.Optional(Type.String()),
    tags: Type.Optional(Type.String()),
    reservation_id: Type.Optional(Type.String()),
    user_id: Type.Optional(Type.String()),
    key_name: Type.Optional(Type.String()),
    node: Type.Optional(Type.String()),
  },
  { additionalProperties: true },
);

const VolumeAttachment = Type.Object(
  {
    id: Type.String(),
    serverId: Type.String(),
    volumeId: Type.String(),
    device: Nullable(Type.String()),
    tag: Type.Optional(Nullable(Type.String())),
    delete_on_termination: Type.Optional(Type.Boolean()),
    attachment_id: Type.Optional(Nullable(Type.String())),
    bdm_uuid: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);

const InstanceAction = Type.Object(
  {
    action: Type.String(),
    instance_uuid: Type.String(),
    request_id: Type.String(),
    user_id: Type.String(),
    project_id: Type.String(),
    start_time: Type.String(),
    message: Nullable(Type.String()),
    updated_at: Type.Optional(Nullable(Type.String())),
    events: Type.Optional(Type.Array(Type.Object({
      event: Type.String(),
      start_time: Type.String(),
      finish_time: Nullable(Type.String()),
      result: Nullable(Type.String()),
      traceback: Type.Optional(Nullable(Type.String())),
      host: Type.Optional(Type.String()),
      hostId: Type.Optional(Type.String()),
      details: Type.Optional(Nullable(Type.String())),
    }, { additionalProperties: false }))),
  },
  { additionalProperties: false },
);

export interface ServerRouteDeps {
  servers: ServerService;
  hosts: ComputeHosts;
  /** instances_path of a compute host, for the console log (the API reads it where the host shares the filesystem). */
  instancesPathOf: (host: string) => string | null;
  maxLimit: number;
}

export function renderContext(ctx: DeclaredContext<unknown, unknown>, hosts: ComputeHosts, instancesPathOf?: (host: string) => string | null): RenderContext {
  return {
    privateDirectoriesOf: (host) => {
      const instancesPath = host && instancesPathOf ? instancesPathOf(host) : null;
      return instancesPath ? [instancesPath, dirname(instancesPath)] : [];
    },
    serviceUrl: ctx.serviceUrl,
    microversion: ctx.microversion,
    isAdmin: ctx.auth?.isAdmin ?? false,
    showExtended: ctx.can('os_compute_api:os-extended-server-attributes'),
    showHostStatus: ctx.can('os_compute_api:servers:show:host_status'),
    hostStatus: (host) => (host ? hosts.hostStatus(host) : ''),
  };
}

function attachmentBody(ctx: DeclaredContext<unknown, unknown>, serverId: string, bdm: BdmRow): Record<string, unknown> {
  const body: Record<string, unknown> = { id: bdm.volume_id, serverId, volumeId: bdm.volume_id, device: bdm.device_name };
  if (ctx.microversion >= 70) body['tag'] = bdm.tag;
  if (ctx.microversion >= 79) body['delete_on_termination'] = bdm.delete_on_termination === 1;
  return body;
}

function bool(value: string | undefined): boolean {
  return value !== undefined && ['true', '1', 'yes', 'on', 'True'].includes(value);
}

export function serverRoutes(deps: ServerRouteDeps): AnyRouteSpec[] {
  const { servers, hosts } = deps;
  const list = (ctx: DeclaredContext<unknown, Record<string, unknown>>, detail: boolean) => {
    const q = ctx.queryParams as Record<string, string | number | undefined>;
    const allTenants = q['all_tenants'] !== undefined && q['all_tenants'] !== 'false' && q['all_tenants'] !== '0';
    if (allTenants) ctx.authorize(detail ? 'os_compute_api:servers:detail:get_all_tenants' : 'os_compute_api:servers:index:get_all_tenants');
    const admin = ctx.auth!.isAdmin;
    const limit = Math.min(Number(q['limit'] ?? deps.maxLimit), deps.maxLimit);
    const query: ServerListQuery = {
      allTenants,
      projectId: admin ? ((q['project_id'] ?? q['tenant_id']) as string | undefined) ?? null : null,
      name: (q['name'] as string | undefined) ?? null,
      status: (q['status'] as string | undefined) ?? null,
      host: admin ? ((q['host'] as string | undefined) ?? null) : null,
      image: (q['image'] as string | undefined) ?? null,
      flavor: (q['flavor'] as string | undefined) ?? null,
      changesSince: (q['changes-since'] as string | undefined) ?? null,
      changesBefore: (q['changes-before'] as string | undefined) ?? null,
      limit,
      marker: (q['marker'] as string | undefined) ?? null,
      sortKey: (q['sort_key'] as string | undefined) ?? 'created_at',
      sortDir: ((q['sort_dir'] as string | undefined) ?? 'desc') as 'asc' | 'desc',
      deleted: admin && bool(q['deleted'] as string | undefined),
      availabilityZone: (q['availability_zone'] as string | undefined) ?? null,
      locked: ctx.microversion >= 73 && q['locked'] !== undefined ? bool(q['locked'] as string) : null,
    };
    const page = servers.list(ctx.auth!, query);
    const rc = renderContext(ctx, hosts, deps.instancesPathOf);
    const body: Record<string, unknown> = {
      servers: page.servers.map((row) => (detail ? renderServer(rc, row, servers.bdms(row.id)) : renderServerSummary(rc, row))),
    };
    if (page.more && page.servers.length > 0) {
      const next = new URLSearchParams(ctx.query);
      next.set('limit', String(limit));
      next.set('marker', page.servers[page.servers.length - 1]!.id);
      body['servers_links'] = [{ href: `${ctx.serviceUrl}/v2.1/servers${detail ? '/detail' : ''}?${next.toString()}`, rel: 'next' }];
    }
    return { status: 200, body };
  };

  const owned = (ctx: DeclaredContext<unknown, unknown>, rule: string) => {
    const row = servers.get(ctx.auth!, (ctx.params as Record<string, string>)['server_id']!);
    ctx.authorize(rule, { project_id: row.project_id });
    return row;
  };

  const consoleLog = (serverId: string, host: string | null, lines: number | null): string => {
    const base = host ? deps.instancesPathOf(host) : null;
    const path = base ? join(base, serverId, 'console.log') : null;
    if (!path || !existsSync(path)) return '';
    // Read at most the last 1 MiB: a console log grows without bound.
    const size = statSync(path).size;
    const readBytes = Math.min(size, 1024 * 1024);
    const buffer = Buffer.alloc(readBytes);
    const fd = openSync(path, 'r');
    try {
      readSync(fd, buffer, 0, readBytes, size - readBytes);
    } finally {
      closeSync(fd);
    }
    const text = buffer.toString('utf8').replace(/\r/g, '');
    if (lines === null) return text;
    const all = text.split('\n');
    if (all[all.length - 1] === '') all.pop();
    return all.slice(-lines).join('\n') + (lines > 0 ? '\n' : '');
  };

  return [
    route({
      method: 'GET', path: '/servers', policy: 'os_compute_api:servers:index', query: ListQuery,
      responses: { 200: Type.Object({ servers: Type.Array(ServerSummary), servers_links: Type.Optional(Links) }, { additionalProperties: false }) },
      handler: (ctx) => list(ctx as never, false),
    }),
    route({
      method: 'GET', path: '/servers/detail', policy: 'os_compute_api:servers:detail', query: ListQuery,
      responses: { 200: serverListDetailResponses },
      handler: (ctx) => list(ctx as never, true),
    }),
    route({
      method: 'POST', path: '/servers', policy: 'os_compute_api:servers:create', body: CreateServerBody,
      responses: {
        202: Type.Object({
          server: Type.Object({ id: Type.String(), links: Links, 'OS-DCF:diskConfig': Type.String(), security_groups: Type.Array(Type.Object({ name: Type.String() })), adminPass: Type.Optional(Type.String()) }, { additionalProperties: false }),
        }, { additionalProperties: false }),
      },
      handler(ctx) {
        const s = ctx.body.server;
        if (s.description !== undefined && ctx.microversion < 19) throw errors.badRequest("Invalid input for field/attribute server. Additional properties are not allowed ('description' was unexpected): description needs microversion 2.19 or later.");
        if ((s.host !== undefined || s.hypervisor_hostname !== undefined) && ctx.microversion < 74) throw errors.badRequest("Invalid input for field/attribute server. Additional properties are not allowed ('host' was unexpected): host needs microversion 2.74 or later.");
        if (ctx.microversion >= 37 && s.networks === undefined) throw errors.badRequest("Invalid input for field/attribute server. 'networks' is a required property (microversion 2.37 and later): send \"networks\": \"none\" or \"auto\".");
        if (s.host !== undefined) ctx.authorize('os_compute_api:servers:create:forced_host');
        const toInt = (v: number | string | undefined) => (v === undefined ? undefined : Number(v));
        const { server, adminPass } = servers.create(ctx.auth!, {
          name: s.name,
          flavorRef: String(s.flavorRef),
          imageRef: s.imageRef ?? null,
          blockDeviceMappings: s.block_device_mapping_v2 ?? [],
          availabilityZone: s.availability_zone ?? null,
          keyName: s.key_name ?? null,
          metadata: s.metadata ?? {},
          description: s.description ?? null,
          userData: s.user_data ?? null,
          minCount: toInt(s.min_count),
          maxCount: toInt(s.max_count),
          configDrive: s.config_drive === true || s.config_drive === 'true' || s.config_drive === 'True',
          accessIPv4: s.accessIPv4 ?? null,
          accessIPv6: s.accessIPv6 ?? null,
          host: s.host ?? null,
        }, ctx.requestId);
        return {
          status: 202,
          headers: { Location: `${ctx.serviceUrl}/v2.1/servers/${server.id}` },
          body: { server: { id: server.id, links: links(ctx.serviceUrl, 'servers', server.id), 'OS-DCF:diskConfig': 'MANUAL', security_groups: [{ name: 'default' }], adminPass } },
        };
      },
    }),
    route({
      method: 'GET', path: '/servers/:server_id', policy: 'os_compute_api:servers:show', params: ServerIdParams,
      responses: { 200: serverDetailResponses },
      handler(ctx) {
        const row = owned(ctx as never, 'os_compute_api:servers:show');
        return { status: 200, body: { server: renderServer(renderContext(ctx as never, hosts, deps.instancesPathOf), row, servers.bdms(row.id), true) } };
      },
    }),
    route({
      method: 'PUT', path: '/servers/:server_id', policy: 'os_compute_api:servers:update', params: ServerIdParams,
      body: Type.Object({
        server: Type.Object({
          name: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
          description: Type.Optional(Nullable(Type.String({ maxLength: 255 }))),
          accessIPv4: Type.Optional(Type.String()),
          accessIPv6: Type.Optional(Type.String()),
          'OS-DCF:diskConfig': Type.Optional(Type.String({ enum: ['AUTO', 'MANUAL'] })),
          hostname: Type.Optional(Type.String()),
        }, { additionalProperties: false }),
      }, { additionalProperties: false }),
      responses: { 200: serverDetailResponses },
      handler(ctx) {
        const row = owned(ctx as never, 'os_compute_api:servers:update');
        if (ctx.body.server.description !== undefined && ctx.microversion < 19) throw errors.badRequest('description needs microversion 2.19 or later.');
        const updated = servers.update(ctx.auth!, row.id, { name: ctx.body.server.name, description: ctx.body.server.description, accessIPv4: ctx.body.server.accessIPv4, accessIPv6: ctx.body.server.accessIPv6 });
        return { status: 200, body: { server: renderServer(renderContext(ctx as never, hosts, deps.instancesPathOf), updated, servers.bdms(row.id), true) } };
      },
    }),
    route({
      method: 'DELETE', path: '/servers/:server_id', policy: 'os_compute_api:servers:delete', params: ServerIdParams,
      responses: { 204: null },
      handler(ctx) {
        const row = owned(ctx as never, 'os_compute_api:servers:delete');
        servers.delete(ctx.auth!, row.id, ctx.requestId);
        return { status: 204 };
      },
    }),
    route({
      method: 'POST', path: '/servers/:server_id/action', policy: 'os_compute_api:servers:show', params: ServerIdParams,
      body: Type.Object({
        'os-stop': Type.Optional(Type.Null()),
        'os-start': Type.Optional(Type.Null()),
        reboot: Type.Optional(Type.Object({ type: Type.String({ enum: ['HARD', 'Hard', 'hard', 'SOFT', 'Soft', 'soft'] }) }, { additionalProperties: false })),
        rebuild: Type.Optional(Type.Object({
          imageRef: Type.String({ minLength: 1 }),
          name: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
          metadata: Type.Optional(Metadata),
          adminPass: Type.Optional(Type.String()),
          preserve_ephemeral: Type.Optional(Type.Boolean()),
          'OS-DCF:diskConfig': Type.Optional(Type.String()),
          accessIPv4: Type.Optional(Nullable(Type.String())),
          accessIPv6: Type.Optional(Nullable(Type.String())),
          description: Type.Optional(Nullable(Type.String({ maxLength: 255 }))),
          key_name: Type.Optional(Nullable(Type.String())),
          user_data: Type.Optional(Nullable(Type.String())),
        }, { additionalProperties: false })),
        'os-getConsoleOutput': Type.Optional(Type.Object({ length: Type.Optional(Nullable(Type.Union([Type.Integer({ minimum: -1 }), Type.String({ pattern: '^-?[0-9]+$' })]))) }, { additionalProperties: false })),
        lock: Type.Optional(Nullable(Type.Object({ locked_reason: Type.Optional(Type.String({ maxLength: 255 })) }, { additionalProperties: false }))),
        unlock: Type.Optional(Type.Null()),
        evacuate: Type.Optional(Type.Object({
          host: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
          onSharedStorage: Type.Optional(BoolOrString),
          adminPass: Type.Optional(Type.String({ maxLength: 255 })),
          force: Type.Optional(BoolOrString),
          /** Pumice: the operator vouches that the source host is powered off; the RBD blocklist is skipped (documented in the README). */
          pumice_host_powered_off: Type.Optional(Type.Boolean()),
        }, { additionalProperties: false })),
        'os-migrateLive': Type.Optional(Type.Object({
          host: Nullable(Type.String({ minLength: 1, maxLength: 255 })),
          block_migration: Type.Union([Type.Boolean(), Type.Literal('auto'), Type.String({ enum: ['True', 'False', 'true', 'false'] })]),
          disk_over_commit: Type.Optional(BoolOrString),
          force: Type.Optional(BoolOrString),
        }, { additionalProperties: false })),
        // Cold migration: null, or from 2.56 { host } (the scheduler picks when it is null or left out).
        migrate: Type.Optional(Nullable(Type.Object({ host: Type.Optional(Nullable(Type.String({ minLength: 1, maxLength: 255 }))) }, { additionalProperties: false }))),
        confirmResize: Type.Optional(Type.Null()),
        revertResize: Type.Optional(Type.Null()),
      }, { additionalProperties: false, minProperties: 1, maxProperties: 1 }),
      responses: {
        202: serverDetailResponses.map((r) => ({ versions: r.versions, schema: Type.Optional(r.schema) })),
        204: null,
        200: Type.Optional(Type.Union([Type.Object({ output: Type.String() }, { additionalProperties: false }), Type.Object({ adminPass: Type.String() }, { additionalProperties: false })])),
      },
      handler(ctx) {
        const body = ctx.body as Record<string, unknown>;
        const action = Object.keys(body)[0]!;
        const rule = ({
          'os-stop': 'os_compute_api:servers:stop', 'os-start': 'os_compute_api:servers:start', reboot: 'os_compute_api:servers:reboot',
          rebuild: 'os_compute_api:servers:rebuild', 'os-getConsoleOutput': 'os_compute_api:os-console-output',
          lock: 'os_compute_api:os-lock-server:lock', unlock: 'os_compute_api:os-lock-server:unlock', evacuate: 'os_compute_api:os-evacuate',
          'os-migrateLive': 'os_compute_api:os-migrate-server:migrate_live', migrate: 'os_compute_api:os-migrate-server:migrate',
          confirmResize: 'os_compute_api:servers:confirm_resize', revertResize: 'os_compute_api:servers:revert_resize',
        } as Record<string, string>)[action]!;
        const row = owned(ctx as never, rule);
        switch (action) {
          case 'migrate': {
            const host = ctx.body.migrate?.host ?? null;
            if (ctx.body.migrate?.host !== undefined && ctx.microversion < 56) {
              throw errors.badRequest(`Invalid input for field/attribute migrate: 'host' needs microversion 2.56 or later (this request is 2.${ctx.microversion}); send OpenStack-API-Version: compute 2.56 (openstack --os-compute-api-version 2.56 server migrate --host ${host ?? 'HOST'}).`);
            }
            servers.migrate(ctx.auth!, row.id, host, ctx.requestId);
            return { status: 202 };
          }
          case 'confirmResize':
            servers.confirmResize(ctx.auth!, row.id, ctx.requestId);
            return { status: 204 };
          case 'revertResize':
            servers.revertResize(ctx.auth!, row.id, ctx.requestId);
            return { status: 202 };
          case 'os-migrateLive': {
            const live = ctx.body['os-migrateLive']!;
            const block = live.block_migration === 'auto' ? 'auto' : String(live.block_migration).toLowerCase() === 'true';
            servers.liveMigrate(ctx.auth!, row.id, { host: live.host ?? null, blockMigration: block }, ctx.requestId);
            return { status: 202 };
          }
          case 'os-stop':
            servers.stop(ctx.auth!, row.id, ctx.requestId);
            return { status: 202 };
          case 'os-start':
            servers.start(ctx.auth!, row.id, ctx.requestId);
            return { status: 202 };
          case 'reboot':
            servers.reboot(ctx.auth!, row.id, ctx.body.reboot!.type.toUpperCase() === 'HARD', ctx.requestId);
            return { status: 202 };
          case 'rebuild': {
            const r = ctx.body.rebuild!;
            const updated = servers.rebuild(ctx.auth!, row.id, { imageRef: r.imageRef, name: r.name, metadata: r.metadata }, ctx.requestId);
            // No adminPass: Pumice injects no password (the scenario's inject_password = false), as Nova with enable_instance_password = false.
            return { status: 202, body: { server: renderServer(renderContext(ctx as never, hosts, deps.instancesPathOf), updated, servers.bdms(row.id), true) } };
          }
          case 'os-getConsoleOutput': {
            const raw = ctx.body['os-getConsoleOutput']!.length;
            const length = raw === undefined || raw === null || Number(raw) === -1 ? null : Number(raw);
            if (!['active', 'stopped', 'error'].includes(row.vm_state) || !row.host) throw errors.conflict(`Instance ${row.id} is '${row.vm_state}': its console log exists once it has been built.`);
            return { status: 200, body: { output: consoleLog(row.id, row.host, length) } };
          }
          case 'evacuate': {
            const e = ctx.body.evacuate!;
            const v = ctx.microversion;
            const asBool = (value: unknown, field: string): boolean => {
              if (typeof value === 'boolean') return value;
              const text = String(value).toLowerCase();
              if (['true', '1', 'yes', 'on'].includes(text)) return true;
              if (['false', '0', 'no', 'off'].includes(text)) return false;
              throw errors.badRequest(`Invalid input for field/attribute ${field}. Value: ${JSON.stringify(value)}. Expected a boolean.`);
            };
            if (v < 14 && e.onSharedStorage === undefined) throw errors.badRequest("Invalid input for field/attribute evacuate: 'onSharedStorage' is a required property before microversion 2.14.");
            if (v >= 14 && e.onSharedStorage !== undefined) throw errors.badRequest("Invalid input for field/attribute evacuate: 'onSharedStorage' was removed in microversion 2.14 (Pumice knows which disks are on shared storage); leave it out.");
            if (e.force !== undefined && (v < 29 || v >= 68)) throw errors.badRequest(`Invalid input for field/attribute evacuate: 'force' exists only in microversions 2.29 to 2.67 (this request is 2.${v}).`);
            const shared = e.onSharedStorage === undefined ? false : asBool(e.onSharedStorage, 'onSharedStorage');
            if (shared && e.adminPass !== undefined) throw errors.badRequest("'adminPass' parameter should not be specified when onSharedStorage is True: the guest keeps its disk and its password.");
            const force = e.force === undefined ? false : asBool(e.force, 'force');
            if (force && !e.host) throw errors.badRequest("'force' needs 'host': it bypasses the scheduler for the given host.");
            const result = servers.evacuate(ctx.auth!, row.id, { host: e.host ?? null, force, hostPoweredOff: e.pumice_host_powered_off === true }, ctx.requestId);
            // Before 2.14 the password is returned (Nova with enable_instance_password); Pumice injects none, so it only echoes one.
            if (v < 14) return { status: 200, body: { adminPass: e.adminPass ?? result.adminPass } };
            return { status: 200 };
          }
          case 'lock':
            servers.lock(ctx.auth!, row.id, true, ctx.microversion >= 73 ? ctx.body.lock?.locked_reason ?? null : null);
            return { status: 202 };
          default:
            servers.lock(ctx.auth!, row.id, false, null);
            return { status: 202 };
        }
      },
    }),

    // ---- metadata ----
    route({
      method: 'GET', path: '/servers/:server_id/metadata', policy: 'os_compute_api:server-metadata:index', params: ServerIdParams,
      responses: { 200: Type.Object({ metadata: Metadata }, { additionalProperties: false }) },
      handler: (ctx) => ({ status: 200, body: { metadata: servers.metadata(owned(ctx as never, 'os_compute_api:server-metadata:index')) } }),
    }),
    route({
      method: 'POST', path: '/servers/:server_id/metadata', policy: 'os_compute_api:server-metadata:create', params: ServerIdParams,
      body: Type.Object({ metadata: Metadata }, { additionalProperties: false }),
      responses: { 200: Type.Object({ metadata: Metadata }, { additionalProperties: false }) },
      handler(ctx) {
        const row = owned(ctx as never, 'os_compute_api:server-metadata:create');
        return { status: 200, body: { metadata: servers.setMetadata(ctx.auth!, row.id, ctx.body.metadata, false) } };
      },
    }),
    route({
      method: 'PUT', path: '/servers/:server_id/metadata', policy: 'os_compute_api:server-metadata:update_all', params: ServerIdParams,
      body: Type.Object({ metadata: Metadata }, { additionalProperties: false }),
      responses: { 200: Type.Object({ metadata: Metadata }, { additionalProperties: false }) },
      handler(ctx) {
        const row = owned(ctx as never, 'os_compute_api:server-metadata:update_all');
        return { status: 200, body: { metadata: servers.setMetadata(ctx.auth!, row.id, ctx.body.metadata, true) } };
      },
    }),
    route({
      method: 'GET', path: '/servers/:server_id/metadata/:key', policy: 'os_compute_api:server-metadata:show',
      params: Type.Object({ server_id: Type.String(), key: Type.String({ minLength: 1, maxLength: 255 }) }),
      responses: { 200: Type.Object({ meta: Metadata }, { additionalProperties: false }) },
      handler(ctx) {
        const row = owned(ctx as never, 'os_compute_api:server-metadata:show');
        const key = ctx.params['key']!;
        const value = servers.metadata(row)[key];
        if (value === undefined) throw errors.notFound('Metadata item', `${key} of server ${row.id}`);
        return { status: 200, body: { meta: { [key]: value } } };
      },
    }),
    route({
      method: 'PUT', path: '/servers/:server_id/metadata/:key', policy: 'os_compute_api:server-metadata:update',
      params: Type.Object({ server_id: Type.String(), key: Type.String({ minLength: 1, maxLength: 255 }) }),
      body: Type.Object({ meta: Type.Record(Type.String({ minLength: 1, maxLength: 255 }), Type.String({ maxLength: 255 }), { minProperties: 1, maxProperties: 1 }) }, { additionalProperties: false }),
      responses: { 200: Type.Object({ meta: Metadata }, { additionalProperties: false }) },
      handler(ctx) {
        const row = owned(ctx as never, 'os_compute_api:server-metadata:update');
        const key = ctx.params['key']!;
        if (!(key in ctx.body.meta)) throw errors.badRequest(`Request body and URI mismatch: the URL names key '${key}', the body '${Object.keys(ctx.body.meta)[0]}'.`);
        servers.setMetadata(ctx.auth!, row.id, { [key]: ctx.body.meta[key]! }, false);
        return { status: 200, body: { meta: { [key]: ctx.body.meta[key]! } } };
      },
    }),
    route({
      method: 'DELETE', path: '/servers/:server_id/metadata/:key', policy: 'os_compute_api:server-metadata:delete',
      params: Type.Object({ server_id: Type.String(), key: Type.String({ minLength: 1, maxLength: 255 }) }),
      responses: { 204: null },
      handler(ctx) {
        const row = owned(ctx as never, 'os_compute_api:server-metadata:delete');
        servers.deleteMetadataKey(ctx.auth!, row.id, ctx.params['key']!);
        return { status: 204 };
      },
    }),

    // ---- volume attachments ----
    route({
      method: 'GET', path: '/servers/:server_id/os-volume_attachments', policy: 'os_compute_api:os-volumes-attachments:index', params: ServerIdParams,
      query: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 0 })), offset: Type.Optional(Type.Integer({ minimum: 0 })) }, { additionalProperties: true }),
      responses: { 200: Type.Object({ volumeAttachments: Type.Array(VolumeAttachment) }, { additionalProperties: false }) },
      handler(ctx) {
        const row = owned(ctx as never, 'os_compute_api:os-volumes-attachments:index');
        const q = ctx.queryParams as { limit?: number; offset?: number };
        const all = servers.attachedVolumes(row.id);
        const page = all.slice(q.offset ?? 0, (q.offset ?? 0) + (q.limit ?? all.length));
        return { status: 200, body: { volumeAttachments: page.map((b) => attachmentBody(ctx as never, row.id, b)) } };
      },
    }),
    route({
      method: 'POST', path: '/servers/:server_id/os-volume_attachments', policy: 'os_compute_api:os-volumes-attachments:create', params: ServerIdParams,
      body: Type.Object({
        volumeAttachment: Type.Object({
          volumeId: Type.String({ minLength: 1 }),
          device: Type.Optional(Nullable(Type.String({ pattern: '^(/dev/x{0,1}[a-z]{0,1}d{0,1})([a-z]+)[0-9]*$' }))),
          tag: Type.Optional(Type.String({ maxLength: 60 })),
          delete_on_termination: Type.Optional(Type.Boolean()),
        }, { additionalProperties: false }),
      }, { additionalProperties: false }),
      responses: { 200: Type.Object({ volumeAttachment: VolumeAttachment }, { additionalProperties: false }) },
      handler(ctx) {
        const row = owned(ctx as never, 'os_compute_api:os-volumes-attachments:create');
        const a = ctx.body.volumeAttachment;
        if (a.tag !== undefined && ctx.microversion < 49) throw errors.badRequest('tag needs microversion 2.49 or later.');
        if (a.delete_on_termination !== undefined && ctx.microversion < 79) throw errors.badRequest('delete_on_termination needs microversion 2.79 or later.');
        const bdm = servers.attachVolume(ctx.auth!, row.id, { volumeId: a.volumeId, device: null, tag: a.tag ?? null, deleteOnTermination: a.delete_on_termination ?? false }, ctx.requestId);
        return { status: 200, body: { volumeAttachment: attachmentBody(ctx as never, row.id, bdm) } };
      },
    }),
    route({
      method: 'GET', path: '/servers/:server_id/os-volume_attachments/:volume_id', policy: 'os_compute_api:os-volumes-attachments:show',
      params: Type.Object({ server_id: Type.String(), volume_id: Type.String() }),
      responses: { 200: Type.Object({ volumeAttachment: VolumeAttachment }, { additionalProperties: false }) },
      handler(ctx) {
        const row = owned(ctx as never, 'os_compute_api:os-volumes-attachments:show');
        const bdm = servers.attachedVolumes(row.id).find((b) => b.volume_id === ctx.params['volume_id']);
        if (!bdm) throw errors.notFound('Volume attachment', `of volume ${ctx.params['volume_id']} to instance ${row.id}`);
        return { status: 200, body: { volumeAttachment: attachmentBody(ctx as never, row.id, bdm) } };
      },
    }),
    route({
      method: 'DELETE', path: '/servers/:server_id/os-volume_attachments/:volume_id', policy: 'os_compute_api:os-volumes-attachments:delete',
      params: Type.Object({ server_id: Type.String(), volume_id: Type.String() }),
      responses: { 202: null },
      handler(ctx) {
        const row = owned(ctx as never, 'os_compute_api:os-volumes-attachments:delete');
        servers.detachVolume(ctx.auth!, row.id, ctx.params['volume_id']!, ctx.requestId);
        return { status: 202 };
      },
    }),

    // ---- instance actions ----
    route({
      method: 'GET', path: '/servers/:server_id/os-instance-actions', policy: 'os_compute_api:os-instance-actions:list', params: ServerIdParams,
      query: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 0 })), marker: Type.Optional(Type.String()), 'changes-since': Type.Optional(Type.String()), 'changes-before': Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: Type.Object({ instanceActions: Type.Array(InstanceAction), links: Type.Optional(Links) }, { additionalProperties: false }) },
      handler(ctx) {
        const id = ctx.params['server_id']!;
        const rows = servers.actions(ctx.auth!, id);
        return {
          status: 200,
          body: {
            instanceActions: rows.map((a) => ({
              action: a.action, instance_uuid: a.server_id, request_id: a.request_id, user_id: a.user_id, project_id: a.project_id,
              start_time: novaTime(a.start_time)!, message: a.message, ...(ctx.microversion >= 58 ? { updated_at: novaTime(a.updated_at) } : {}),
            })),
          },
        };
      },
    }),
    route({
      method: 'GET', path: '/servers/:server_id/os-instance-actions/:request_id', policy: 'os_compute_api:os-instance-actions:show',
      params: Type.Object({ server_id: Type.String(), request_id: Type.String() }),
      responses: { 200: Type.Object({ instanceAction: InstanceAction }, { additionalProperties: false }) },
      handler(ctx) {
        const { action, events } = servers.action(ctx.auth!, ctx.params['server_id']!, ctx.params['request_id']!);
        const showEvents = ctx.microversion >= 51 || ctx.can('os_compute_api:os-instance-actions:events');
        const isAdmin = ctx.can('os_compute_api:os-instance-actions:events');
        return {
          status: 200,
          body: {
            instanceAction: {
              action: action.action, instance_uuid: action.server_id, request_id: action.request_id, user_id: action.user_id, project_id: action.project_id,
              start_time: novaTime(action.start_time)!, message: action.message, ...(ctx.microversion >= 58 ? { updated_at: novaTime(action.updated_at) } : {}),
              ...(showEvents
                ? {
                    events: events.map((e) => ({
                      event: e.event, start_time: novaTime(e.start_time)!, finish_time: novaTime(e.finish_time), result: e.result,
                      ...(isAdmin ? { traceback: e.details } : {}),
                      ...(ctx.microversion >= 62 && isAdmin && e.host ? { host: e.host } : {}),
                      ...(ctx.microversion >= 62 && e.host ? { hostId: ServerService.hostId(action.project_id, e.host) } : {}),
                      ...(ctx.microversion >= 84 ? { details: e.details } : {}),
                    })),
                  }
                : {}),
            },
          },
        };
      },
    }),
  ];
}
