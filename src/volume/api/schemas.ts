/**
 * Response schemas of the Block Storage v3 API, per microversion, written from
 * the API reference (docs.openstack.org/api-ref/block-storage) and tempest's
 * published schemas (tempest/lib/api_schema/response/volume and its v3_N
 * variants): every body is closed (`additionalProperties: false`), so an extra,
 * missing or mistyped key fails response validation and the contract test.
 */
import { Type, type TSchema } from '@sinclair/typebox';
import { Nullable, type VersionRange } from '../../http/declare.ts';
import { microversionMax, microversionMin } from './common.ts';

const closed = { additionalProperties: false } as const;

export const Links = Type.Array(Type.Object({ href: Type.String(), rel: Type.String() }, closed));
/** Cinder's datetimes: ISO 8601 without a zone, microseconds (`2024-01-02T03:04:05.000000`). */
const DateTime = Type.String();
const StringMap = Type.Record(Type.String(), Type.String());

/**
 * One response schema per microversion range: `boundaries` are the first
 * microversions where the shape changes, `build(mv)` the schema at `mv`.
 */
export function perVersion(boundaries: number[], build: (mv: number) => TSchema | null): { versions: VersionRange; schema: TSchema | null }[] {
  const starts = [microversionMin, ...boundaries.filter((b) => b > microversionMin && b <= microversionMax)];
  return starts.map((min, i) => ({ versions: { min, max: i + 1 < starts.length ? starts[i + 1]! - 1 : microversionMax }, schema: build(min) }));
}

// ---- volumes ----
const VolumeAttachment = Type.Object({
  id: Type.String(),
  attachment_id: Type.String(),
  volume_id: Type.String(),
  server_id: Nullable(Type.String()),
  host_name: Nullable(Type.String()),
  device: Nullable(Type.String()),
  attached_at: Nullable(DateTime),
}, closed);

/** Microversions where the volume body changes: group_id 3.13, provider_id 3.21, service_uuid/shared_targets 3.48, cluster_name 3.61, volume_type_id 3.63, encryption_key_id 3.64, consumes_quota 3.65, nullable shared_targets 3.69. */
export const volumeBoundaries = [13, 21, 48, 61, 63, 64, 65, 69];

/**
 * A volume at `mv`. `view` 'detail' is show and list-detail (with the
 * tenant, host and migration attributes and volume_image_metadata); 'create' is
 * the body of create, update and other writes, which Cinder renders without them.
 */
export function volumeSchema(mv: number, view: 'detail' | 'create') {
  const p: Record<string, TSchema> = {
    id: Type.String(),
    name: Nullable(Type.String()),
    status: Type.String(),
    size: Type.Integer(),
    availability_zone: Nullable(Type.String()),
    created_at: DateTime,
    updated_at: Nullable(DateTime),
    attachments: Type.Array(VolumeAttachment),
    description: Nullable(Type.String()),
    volume_type: Nullable(Type.String()),
    snapshot_id: Nullable(Type.String()),
    source_volid: Nullable(Type.String()),
    metadata: StringMap,
    links: Links,
    user_id: Type.String(),
    bootable: Type.String({ enum: ['true', 'false'] }),
    encrypted: Type.Boolean(),
    replication_status: Nullable(Type.String()),
    consistencygroup_id: Nullable(Type.String()),
    multiattach: Type.Boolean(),
    migration_status: Nullable(Type.String()),
  };
  if (view === 'detail') {
    p['os-vol-tenant-attr:tenant_id'] = Type.String();
    // Administrators only (volume_extension:volume_host_attribute / volume_mig_status_attribute).
    p['os-vol-host-attr:host'] = Type.Optional(Nullable(Type.String()));
    p['os-vol-mig-status-attr:migstat'] = Type.Optional(Nullable(Type.String()));
    p['os-vol-mig-status-attr:name_id'] = Type.Optional(Nullable(Type.String()));
    p['volume_image_metadata'] = Type.Optional(StringMap);
  }
  if (mv >= 13) p['group_id'] = Nullable(Type.String());
  if (mv >= 21) p['provider_id'] = Type.Optional(Nullable(Type.String()));
  if (mv >= 48) {
    p['service_uuid'] = Nullable(Type.String());
    p['shared_targets'] = mv >= 69 ? Nullable(Type.Boolean()) : Type.Boolean();
  }
  if (mv >= 61) p['cluster_name'] = Type.Optional(Nullable(Type.String()));
  if (mv >= 63) p['volume_type_id'] = Nullable(Type.String());
  if (mv >= 64) p['encryption_key_id'] = Nullable(Type.String());
  if (mv >= 65) p['consumes_quota'] = Type.Boolean();
  return Type.Object(p, closed);
}

export const VolumeSummary = Type.Object({ id: Type.String(), name: Nullable(Type.String()), links: Links }, closed);

export const volumeListResponses = (detail: boolean) => perVersion(volumeBoundaries, (mv) => Type.Object({
  volumes: Type.Array(detail ? volumeSchema(mv, 'detail') : VolumeSummary),
  volumes_links: Type.Optional(Links),
  ...(mv >= 45 ? { count: Type.Optional(Type.Integer()) } : {}),
}, closed));

export const volumeResponses = (view: 'detail' | 'create') => perVersion(volumeBoundaries, (mv) => Type.Object({ volume: volumeSchema(mv, view) }, closed));

export const volumeSummaryResponses = perVersion([36], (mv) => Type.Object({
  'volume-summary': Type.Object({
    total_size: Type.Integer(),
    total_count: Type.Integer(),
    ...(mv >= 36 ? { metadata: Type.Record(Type.String(), Type.Array(Type.String())) } : {}),
  }, closed),
}, closed));

export const MetadataBody = Type.Object({ metadata: StringMap }, closed);
export const MetaBody = Type.Object({ meta: StringMap }, closed);

// ---- volume actions ----
export const ConnectionInfoBody = Type.Object({
  connection_info: Type.Object({ driver_volume_type: Type.String(), data: Type.Record(Type.String(), Type.Unknown()) }, { additionalProperties: true }),
}, closed);

export const uploadImageResponses = perVersion([1], (mv) => Type.Object({
  'os-volume_upload_image': Type.Object({
    id: Type.String(),
    updated_at: Nullable(DateTime),
    status: Type.String(),
    display_description: Nullable(Type.String()),
    size: Type.Integer(),
    volume_type: Nullable(Type.Object({ id: Type.String(), name: Nullable(Type.String()) }, { additionalProperties: true })),
    image_id: Type.String(),
    container_format: Type.String(),
    disk_format: Type.String(),
    image_name: Type.String(),
    ...(mv >= 1 ? { visibility: Type.String(), protected: Type.Boolean() } : {}),
  }, closed),
}, closed));

// ---- snapshots ----
export const snapshotBoundaries = [14, 41, 65];

/** A snapshot at `mv`; 'detail' (show, list detail) adds the os-extended-snapshot-attributes. */
export function snapshotSchema(mv: number, view: 'detail' | 'summary') {
  const p: Record<string, TSchema> = {
    id: Type.String(),
    created_at: DateTime,
    updated_at: Nullable(DateTime),
    name: Nullable(Type.String()),
    description: Nullable(Type.String()),
    volume_id: Type.String(),
    status: Type.String(),
    size: Type.Integer(),
    metadata: StringMap,
  };
  if (view === 'detail') {
    p['os-extended-snapshot-attributes:progress'] = Type.String();
    p['os-extended-snapshot-attributes:project_id'] = Type.String();
  }
  if (mv >= 14) p['group_snapshot_id'] = Nullable(Type.String());
  if (mv >= 41) p['user_id'] = Type.String();
  if (mv >= 65) p['consumes_quota'] = Type.Boolean();
  return Type.Object(p, closed);
}

export const snapshotListResponses = (detail: boolean) => perVersion(snapshotBoundaries, (mv) => Type.Object({
  snapshots: Type.Array(snapshotSchema(mv, detail ? 'detail' : 'summary')),
  snapshots_links: Type.Optional(Links),
  ...(mv >= 45 ? { count: Type.Optional(Type.Integer()) } : {}),
}, closed));

export const snapshotResponses = (view: 'detail' | 'summary') => perVersion(snapshotBoundaries, (mv) => Type.Object({ snapshot: snapshotSchema(mv, view) }, closed));

// ---- volume types ----
const typeCore = {
  id: Type.String(),
  name: Type.String(),
  description: Nullable(Type.String()),
  is_public: Type.Boolean(),
  extra_specs: Type.Optional(StringMap),
};
/** Show and list: with the access extension's is_public and, for administrators, qos_specs_id. */
export const VolumeTypeDetail = Type.Object({ ...typeCore, 'os-volume-type-access:is_public': Type.Boolean(), qos_specs_id: Type.Optional(Nullable(Type.String())) }, closed);
/** Create: the access extension's is_public, no qos_specs_id. */
export const VolumeTypeCreated = Type.Object({ ...typeCore, 'os-volume-type-access:is_public': Type.Boolean() }, closed);
/** Update: neither. */
export const VolumeTypeUpdated = Type.Object(typeCore, closed);
export const ExtraSpecsBody = Type.Object({ extra_specs: StringMap }, closed);
export const TypeAccessList = Type.Object({
  volume_type_access: Type.Array(Type.Object({ volume_type_id: Type.String(), project_id: Type.String() }, closed)),
}, closed);

// ---- quotas and limits ----
const QuotaUsage = Type.Object({ limit: Type.Integer(), in_use: Type.Integer(), reserved: Type.Integer(), allocated: Type.Integer() }, closed);
const quotaKeys = ['volumes', 'snapshots', 'gigabytes', 'backups', 'backup_gigabytes', 'per_volume_gigabytes', 'groups'] as const;
export const QuotaSetBody = Type.Object({
  quota_set: Type.Object({ id: Type.String(), ...Object.fromEntries(quotaKeys.map((k) => [k, Type.Integer()])) }, closed),
}, closed);
export const QuotaSetUsageBody = Type.Object({
  quota_set: Type.Object({ id: Type.String(), ...Object.fromEntries(quotaKeys.map((k) => [k, QuotaUsage])) }, closed),
}, closed);
export const QuotaSetUpdatedBody = Type.Object({
  quota_set: Type.Object(Object.fromEntries(quotaKeys.map((k) => [k, Type.Integer()])), closed),
}, closed);
export const LimitsBody = Type.Object({
  limits: Type.Object({
    rate: Type.Array(Type.Unknown()),
    absolute: Type.Object(Object.fromEntries([
      'totalSnapshotsUsed', 'maxTotalBackups', 'maxTotalVolumeGigabytes', 'maxTotalSnapshots', 'maxTotalBackupGigabytes',
      'totalBackupGigabytesUsed', 'maxTotalVolumes', 'totalVolumesUsed', 'totalBackupsUsed', 'totalGigabytesUsed',
    ].map((k) => [k, Type.Integer()])), closed),
  }, closed),
}, closed);

// ---- services, hosts, pools, zones ----
export const serviceListResponses = perVersion([7, 49], (mv) => Type.Object({
  services: Type.Array(Type.Object({
    binary: Type.String(),
    host: Type.String(),
    zone: Type.String(),
    status: Type.String({ enum: ['enabled', 'disabled'] }),
    state: Type.String({ enum: ['up', 'down'] }),
    updated_at: Nullable(DateTime),
    disabled_reason: Nullable(Type.String()),
    // cinder-volume only:
    replication_status: Type.Optional(Type.String()),
    active_backend_id: Type.Optional(Nullable(Type.String())),
    frozen: Type.Optional(Type.Boolean()),
    ...(mv >= 49 ? { backend_state: Type.Optional(Type.String({ enum: ['up', 'down'] })) } : {}),
    ...(mv >= 7 ? { cluster: Nullable(Type.String()) } : {}),
  }, closed)),
}, closed));

/** enable and disable-log-reason answer with disabled_reason; disable without it (tempest's enable/disable schemas). */
export const ServiceUpdateBody = Type.Object({
  host: Type.String(),
  service: Type.String(),
  binary: Type.String(),
  status: Type.String({ enum: ['enabled', 'disabled'] }),
  disabled: Type.Boolean(),
  disabled_reason: Type.Optional(Nullable(Type.String())),
}, closed);

export const HostListBody = Type.Object({
  hosts: Type.Array(Type.Object({
    host_name: Type.String(),
    service: Type.String(),
    zone: Type.String(),
    'service-status': Type.String({ enum: ['available', 'unavailable'] }),
    'service-state': Type.String({ enum: ['enabled', 'disabled'] }),
    'last-update': Nullable(DateTime),
  }, closed)),
}, closed);

export const HostShowBody = Type.Object({
  host: Type.Array(Type.Object({
    resource: Type.Object({
      host: Type.String(),
      project: Type.String(),
      volume_count: Type.String(),
      total_volume_gb: Type.String(),
      snapshot_count: Type.String(),
      total_snapshot_gb: Type.String(),
    }, closed),
  }, closed)),
}, closed);

export const PoolsBody = Type.Object({
  pools: Type.Array(Type.Object({
    name: Type.String(),
    capabilities: Type.Optional(Type.Object({
      pool_name: Type.String(),
      volume_backend_name: Type.String(),
      total_capacity_gb: Type.Union([Type.Number(), Type.String()]),
      free_capacity_gb: Type.Union([Type.Number(), Type.String()]),
      allocated_capacity_gb: Type.Number(),
      provisioned_capacity_gb: Type.Number(),
      max_over_subscription_ratio: Type.String(),
      reserved_percentage: Type.Integer(),
      thin_provisioning_support: Type.Boolean(),
      thick_provisioning_support: Type.Boolean(),
      backend_state: Type.String({ enum: ['up', 'down'] }),
      timestamp: Nullable(DateTime),
      QoS_support: Type.Boolean(),
    }, { additionalProperties: true })),
  }, closed)),
}, closed);

export const AvailabilityZonesBody = Type.Object({
  availabilityZoneInfo: Type.Array(Type.Object({ zoneName: Type.String(), zoneState: Type.Object({ available: Type.Boolean() }, closed) }, closed)),
}, closed);

// ---- messages ----
export const Message = Type.Object({
  id: Type.String(),
  message_level: Type.String(),
  user_message: Type.String(),
  request_id: Type.String(),
  resource_type: Type.Optional(Type.String()),
  resource_uuid: Type.Optional(Type.String()),
  event_id: Type.String(),
  created_at: DateTime,
  guaranteed_until: DateTime,
  links: Links,
}, closed);

export const ExtensionsBody = Type.Object({ extensions: Type.Array(Type.Unknown()) }, closed);
