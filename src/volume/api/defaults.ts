/**
 * Smaller Block Storage resources operators and clients query: per-project
 * default volume types (3.62, `/default-types`), the filters each list accepts
 * (3.33, `/resource_filters`) and a backend's capabilities
 * (`/capabilities/{host}`, what Horizon shows when making a type).
 */
import { Type } from '@sinclair/typebox';
import { nowIso } from '../../db/db.ts';
import { errors } from '../../errors.ts';
import { route, type AnyRouteSpec } from '../../http/declare.ts';
import type { RequestContext } from '../../http/router.ts';
import { auth, microversionMax, type VolumeRouteDeps } from './common.ts';

const closed = { additionalProperties: false } as const;
const ProjectParams = Type.Object({ project_id: Type.String({ minLength: 1, maxLength: 64, pattern: '^[0-9a-zA-Z_-]+$' }) });
const DefaultType = Type.Object({ project_id: Type.String(), volume_type_id: Type.String() }, closed);
const SetBody = Type.Object({ default_type: Type.Object({ volume_type: Type.String({ minLength: 1, maxLength: 255 }) }, closed) }, closed);

/** What each list accepts as a filter here (Cinder's resource_filters.json, limited to what Pumice filters on). */
const resourceFilters: Record<string, string[]> = {
  volume: ['name', 'status', 'metadata', 'bootable', 'migration_status', 'availability_zone', 'volume_type', 'host', 'user_id', 'description'],
  backup: ['name', 'status', 'volume_id', 'availability_zone', 'container', 'is_incremental'],
  snapshot: ['name', 'status', 'volume_id', 'metadata'],
  attachment: ['volume_id', 'status', 'instance_id', 'attach_status'],
  message: ['resource_uuid', 'resource_type', 'event_id', 'request_id', 'message_level'],
  pool: ['name', 'volume_type'],
  volume_type: ['is_public'],
};

const PropertyInfo = Type.Object({ type: Type.String(), description: Type.String(), title: Type.String() }, closed);
const Capabilities = Type.Object({
  namespace: Type.String({ pattern: '^OS::Storage::Capabilities::.+$' }),
  vendor_name: Type.String(), volume_backend_name: Type.String(), pool_name: Type.Union([Type.String(), Type.Null()]),
  driver_version: Type.String(), storage_protocol: Type.String(), display_name: Type.Union([Type.String(), Type.Null()]),
  description: Type.Union([Type.String(), Type.Null()]), visibility: Type.Union([Type.String(), Type.Null()]),
  replication_targets: Type.Array(Type.Unknown()), properties: Type.Record(Type.String(), PropertyInfo),
}, closed);

export function defaultsRoutes(deps: VolumeRouteDeps): AnyRouteSpec[] {
  const { db, service } = deps;
  const versions = { min: 62, max: microversionMax };
  const get = (projectId: string) => {
    const row = db.get<{ project_id: string; volume_type_id: string }>('SELECT project_id, volume_type_id FROM default_volume_types WHERE project_id = ?', projectId);
    if (!row) throw errors.notFound('Default type for project', projectId);
    return row;
  };
  const target = (ctx: RequestContext) => ({ project_id: ctx.params['project_id'] ?? '' });
  return [
    route({
      method: 'PUT', path: '/v3/default-types/:project_id', policy: 'volume_extension:default_set_or_update', versions, params: ProjectParams, body: SetBody, target,
      summary: 'Set the volume type a project gets when it names none (3.62)',
      responses: { 200: Type.Object({ default_type: DefaultType }, closed) },
      handler(ctx) {
        const projectId = ctx.params['project_id']!;
        if (!db.get('SELECT 1 FROM projects WHERE id = ?', projectId)) throw errors.notFound('Project', projectId);
        const type = service.volumeType(auth(ctx), ctx.body.default_type.volume_type);
        const now = nowIso();
        db.run(
          'INSERT INTO default_volume_types (project_id, volume_type_id, created_at) VALUES (?, ?, ?) ON CONFLICT (project_id) DO UPDATE SET volume_type_id = excluded.volume_type_id, updated_at = ?',
          projectId, type.id, now, now,
        );
        return { status: 200, body: { default_type: get(projectId) } };
      },
    }),
    route({
      method: 'GET', path: '/v3/default-types/:project_id', policy: 'volume_extension:default_get', versions, params: ProjectParams, target,
      responses: { 200: Type.Object({ default_type: DefaultType }, closed) },
      handler: (ctx) => ({ status: 200, body: { default_type: get(ctx.params['project_id']!) } }),
    }),
    route({
      method: 'GET', path: '/v3/default-types', policy: 'volume_extension:default_get_all', versions,
      responses: { 200: Type.Object({ default_types: Type.Array(DefaultType) }, closed) },
      handler: () => ({ status: 200, body: { default_types: db.all('SELECT project_id, volume_type_id FROM default_volume_types ORDER BY project_id') } }),
    }),
    route({
      method: 'DELETE', path: '/v3/default-types/:project_id', policy: 'volume_extension:default_unset', versions, params: ProjectParams, target,
      responses: { 204: null },
      handler(ctx) {
        get(ctx.params['project_id']!);
        db.run('DELETE FROM default_volume_types WHERE project_id = ?', ctx.params['project_id']!);
        return { status: 204 };
      },
    }),
    route({
      method: 'GET', path: '/v3/resource_filters', policy: 'volume_extension:resource_filters', versions: { min: 33, max: microversionMax },
      query: Type.Object({ resource: Type.Optional(Type.String({ maxLength: 64 })) }, closed),
      responses: { 200: Type.Object({ resource_filters: Type.Array(Type.Object({ resource: Type.String(), filters: Type.Array(Type.String()) }, closed)) }, closed) },
      handler(ctx) {
        const wanted = ctx.query.get('resource');
        const entries = Object.entries(resourceFilters).filter(([resource]) => wanted === null || resource === wanted);
        return { status: 200, body: { resource_filters: entries.map(([resource, filters]) => ({ resource, filters })) } };
      },
    }),
    route({
      method: 'GET', path: '/v3/capabilities/:host', policy: 'volume_extension:capabilities', params: Type.Object({ host: Type.String({ minLength: 1, maxLength: 255 }) }),
      responses: { 200: Capabilities },
      handler(ctx) {
        const state = service.backendOfHost(ctx.params['host']!);
        const rbd = state.driver.driverName === 'rbd';
        const property = (type: string, title: string, description: string) => ({ type, title, description });
        return {
          status: 200,
          body: {
            namespace: `OS::Storage::Capabilities::${state.host}`,
            vendor_name: 'Pumice', volume_backend_name: state.config.volume_backend_name, pool_name: state.config.volume_backend_name,
            driver_version: state.driver.driverVersion, storage_protocol: rbd ? 'ceph' : 'nbd',
            display_name: null, description: null, visibility: null, replication_targets: [],
            properties: {
              thin_provisioning: property('boolean', 'Thin Provisioning', 'Sets thin provisioning.'),
              multiattach: property('boolean', 'Multiattach', 'Volumes of a type with multiattach=<is> True can be attached to several servers.'),
              'qos:total_iops_sec': property('integer', 'QoS IOPS', `Back-end QoS: ${rbd ? 'librbd rbd_qos_iops_limit' : 'NBD server pacing'} of the volume.`),
              'qos:total_bytes_sec': property('integer', 'QoS bandwidth', `Back-end QoS: ${rbd ? 'librbd rbd_qos_bps_limit' : 'NBD server pacing'} of the volume.`),
            },
          },
        };
      },
    }),
  ];
}

