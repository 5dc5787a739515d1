/**
 * Operator routes: /os-services, /os-hosts, /workers/cleanup (3.24),
 * /scheduler-stats/get_pools and /os-availability-zone. Service records live in `../services.ts`.
 */
import { Type } from '@sinclair/typebox';
import { cinderTime, nowIso } from '../../db/db.ts';
import { errors } from '../../errors.ts';
import { route, type AnyRouteSpec } from '../../http/declare.ts';
import { queryBool, validate, type Schema } from '../../http/validate.ts';
import { volumeBinary } from '../manager.ts';
import type { ServiceRow } from '../services.ts';
import { declaredBody, microversionMax, type Ctx, type VolumeRouteDeps } from './common.ts';
import { AvailabilityZonesBody, HostListBody, HostShowBody, PoolsBody, serviceListResponses, ServiceUpdateBody } from './schemas.ts';

const updateSchema: Schema = {
  type: 'object', required: ['host'],
  properties: { host: { type: 'string', minLength: 1, maxLength: 255 }, binary: { type: 'string', maxLength: 255 }, disabled_reason: { type: 'string', maxLength: 255 } },
};

/** Cinder's workers/cleanup filters that Pumice applies (resource_id and resource_type are not: the whole service is cleaned). */
const CleanupBody = Type.Optional(Type.Object({
  service_id: Type.Optional(Type.Integer({ minimum: 1 })),
  host: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
  binary: Type.Optional(Type.Union([Type.Literal('cinder-volume'), Type.Literal('cinder-backup')])),
  cluster_name: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
  is_up: Type.Optional(Type.Boolean()),
  disabled: Type.Optional(Type.Boolean()),
}, { additionalProperties: false }));

const CleanupService = Type.Object({ id: Type.Integer(), host: Type.String(), binary: Type.String(), cluster_name: Type.Union([Type.String(), Type.Null()]) }, { additionalProperties: false });
const CleanupResult = Type.Object({ cleaning: Type.Array(CleanupService), unavailable: Type.Array(CleanupService) }, { additionalProperties: false });

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}

export function serviceRoutes(deps: VolumeRouteDeps): AnyRouteSpec[] {
  const { manager, services } = deps;
  const renderService = (ctx: Ctx, row: ServiceRow) => {
    const isUp = services.isUp(row);
    const body: Record<string, unknown> = {
      binary: row.binary, host: row.host, zone: row.zone, status: row.disabled ? 'disabled' : 'enabled', state: isUp ? 'up' : 'down',
      updated_at: cinderTime(row.heartbeat_at ?? row.updated_at ?? row.created_at),
      // A service that is down says why where operators look (volume service list --long).
      disabled_reason: row.disabled_reason ?? (isUp ? null : row.state_reason),
    };
    if (row.binary === volumeBinary) {
      body['replication_status'] = 'disabled';
      body['active_backend_id'] = null;
      body['frozen'] = !!row.frozen;
      if (ctx.microversion >= 49) body['backend_state'] = isUp ? 'up' : 'down';
    }
    if (ctx.microversion >= 7) body['cluster'] = row.cluster ?? null;
    return body;
  };
  return [
    route({
      method: 'GET', path: '/v3/os-services', policy: 'volume_extension:services:index',
      query: Type.Object({ host: Type.Optional(Type.String()), binary: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: serviceListResponses },
      handler(ctx) {
        const rows = services.list({ host: ctx.query.get('host') ?? undefined, binary: ctx.query.get('binary') ?? undefined });
        return { status: 200, body: { services: rows.map((r) => renderService(ctx, r)) } };
      },
    }),
    route({
      method: 'PUT', path: '/v3/os-services/:action', policy: 'volume_extension:services:update',
      params: Type.Object({ action: Type.String({ minLength: 1 }) }),
      body: declaredBody(updateSchema),
      responses: { 200: ServiceUpdateBody },
      handler(ctx) {
        const action = ctx.params['action']!;
        if (!['enable', 'disable', 'disable-log-reason'].includes(action)) {
          throw errors.notFound('Service action', `'${action}' (supported: enable, disable, disable-log-reason)`);
        }
        const body = validate<{ host: string; binary?: string; disabled_reason?: string }>(updateSchema, ctx.body ?? null);
        const disabled = action !== 'enable';
        const reason = action === 'disable-log-reason' ? body.disabled_reason ?? null : null;
        const row = services.setDisabled(body.host, body.binary, disabled, reason);
        const answer: Record<string, unknown> = { host: row.host, service: row.binary, binary: row.binary, status: disabled ? 'disabled' : 'enabled', disabled };
        // Cinder answers disabled_reason for enable and disable-log-reason, not for disable.
        if (action !== 'disable') answer['disabled_reason'] = reason;
        return { status: 200, body: answer };
      },
    }),
    route({
      method: 'POST', path: '/v3/workers/cleanup', policy: 'workers:cleanup', versions: { min: 24, max: microversionMax },
      summary: 'Clean resources left in transitional states by a volume service that died (3.24)',
      body: CleanupBody,
      responses: { 202: CleanupResult },
      handler(ctx) {
        const f = (ctx.body ?? {}) as { service_id?: number; host?: string; binary?: string; is_up?: boolean; disabled?: boolean; cluster_name?: string };
        const matched = services.list().filter((r) =>
          r.binary === volumeBinary && (f.binary === undefined || f.binary === r.binary) && (f.service_id === undefined || f.service_id === r.id)
          && (f.host === undefined || f.host === r.host || r.host.startsWith(`${f.host}@`)) && (f.cluster_name === undefined || f.cluster_name === r.cluster)
          && (f.disabled === undefined || f.disabled === !!r.disabled) && (f.is_up === undefined || f.is_up === services.isUp(r)));
        const render = (r: (typeof matched)[number]) => ({ id: r.id, host: r.host, binary: r.binary, cluster_name: r.cluster ?? null });
        const cleaning: (typeof matched)[number][] = [];
        const unavailable: (typeof matched)[number][] = [];
        const sections: string[] = [];
        for (const row of matched) {
          // A backend this process runs and reaches cleans what its dead predecessor left; one it
          // does not run, or cannot reach now, cannot (Cinder's 'unavailable').
          const state = [...manager.backends.values()].find((b) => b.host === row.host);
          if (state?.up) {
            cleaning.push(row);
            sections.push(state.config.section);
          } else {
            unavailable.push(row);
          }
        }
        if (sections.length > 0) manager.cleanStuckResources(sections);
        return { status: 202, body: { cleaning: cleaning.map(render), unavailable: unavailable.map(render) } };
      },
    }),
    route({
      method: 'GET', path: '/v3/os-hosts', policy: 'volume_extension:hosts',
      responses: { 200: HostListBody },
      handler: () => ({
        status: 200,
        body: {
          hosts: services.list().map((r) => ({
            host_name: r.host,
            service: r.binary,
            zone: r.zone,
            'service-status': services.isUp(r) ? 'available' : 'unavailable',
            'service-state': r.disabled ? 'disabled' : 'enabled',
            'last-update': cinderTime(r.updated_at ?? r.heartbeat_at),
          })),
        },
      }),
    }),
    route({
      method: 'GET', path: '/v3/os-hosts/:host', policy: 'volume_extension:hosts',
      params: Type.Object({ host: Type.String({ minLength: 1 }) }),
      responses: { 200: HostShowBody },
      handler(ctx) {
        const host = ctx.params['host']!;
        return {
          status: 200,
          body: {
            host: services.hostResources(host).map((r) => ({
              resource: {
                host, project: r.project,
                volume_count: String(r.volumeCount), total_volume_gb: String(r.totalVolumeGiB),
                snapshot_count: String(r.snapshotCount), total_snapshot_gb: String(r.totalSnapshotGiB),
              },
            })),
          },
        };
      },
    }),
    route({
      method: 'GET', path: '/v3/scheduler-stats/get_pools', policy: 'scheduler_extension:scheduler_stats:get_pools',
      responses: { 200: PoolsBody },
      handler(ctx) {
        const detail = queryBool(ctx.query.get('detail'), 'detail') ?? false;
        const pools = manager.poolStates().map((p) => {
          if (!detail) return { name: p.host };
          return {
            name: p.host,
            capabilities: {
              pool_name: p.volumeBackendName,
              volume_backend_name: p.volumeBackendName,
              total_capacity_gb: round2(p.totalCapacityGiB),
              free_capacity_gb: round2(p.freeCapacityGiB),
              allocated_capacity_gb: p.provisionedCapacityGiB,
              provisioned_capacity_gb: p.provisionedCapacityGiB,
              max_over_subscription_ratio: String(p.maxOverSubscriptionRatio),
              reserved_percentage: p.reservedPercentage,
              thin_provisioning_support: p.thinProvisioningSupport,
              thick_provisioning_support: p.thickProvisioningSupport,
              backend_state: p.up ? 'up' : 'down',
              timestamp: cinderTime(nowIso()),
              QoS_support: false,
              ...p.capabilities,
            },
          };
        });
        return { status: 200, body: { pools } };
      },
    }),
    route({
      method: 'GET', path: '/v3/os-availability-zone', policy: 'volume_extension:availability_zone_list',
      responses: { 200: AvailabilityZonesBody },
      handler() {
        const up = new Map<string, boolean>();
        for (const state of manager.backends.values()) {
          const zone = state.config.backend_availability_zone!;
          up.set(zone, (up.get(zone) ?? false) || state.up);
        }
        return { status: 200, body: { availabilityZoneInfo: [...up].map(([zoneName, available]) => ({ zoneName, zoneState: { available } })) } };
      },
    }),
  ];
}
