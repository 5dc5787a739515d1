/**
 * Database rows of the volume service and their Block Storage v3 JSON
 * renderings. Field names, types and nulls follow Cinder exactly, because
 * clients validate them; fields appear from the microversion that added them.
 */
import { cinderTime } from '../db/db.ts';

export interface VolumeRow {
  id: string;
  project_id: string;
  user_id: string;
  name: string | null;
  description: string | null;
  size_gib: number;
  status: string;
  attach_status: string;
  migration_status: string | null;
  availability_zone: string;
  volume_type_id: string | null;
  host: string | null;
  backend: string | null;
  bootable: number;
  read_only: number;
  multiattach: number;
  source_volid: string | null;
  snapshot_id: string | null;
  metadata: string;
  status_reason: string | null;
  previous_status: string | null;
  /** JSON object of volume_image_metadata, or null when not made from an image. */
  image_metadata: string | null;
  created_at: string;
  updated_at: string | null;
  launched_at: string | null;
  /** The generic volume group the volume belongs to (3.13+), or null. */
  group_id?: string | null;
}

export interface SnapshotRow {
  id: string;
  project_id: string;
  user_id: string;
  volume_id: string;
  name: string | null;
  description: string | null;
  size_gib: number;
  status: string;
  progress: string;
  metadata: string;
  status_reason: string | null;
  created_at: string;
  updated_at: string | null;
  /** The group snapshot the snapshot was taken for (3.14+), or null. */
  group_snapshot_id?: string | null;
}

export interface VolumeTypeRow {
  id: string;
  name: string;
  description: string | null;
  is_public: number;
  /** The associated QoS spec (qos-specs associate), or null. */
  qos_specs_id?: string | null;
  created_at: string;
  updated_at: string | null;
}

export interface AttachmentRow {
  id: string;
  volume_id: string;
  instance_uuid: string | null;
  attached_host: string | null;
  mountpoint: string | null;
  attach_mode: string;
  attach_status: string;
  connector: string | null;
  attach_time: string | null;
  detach_time: string | null;
}

export interface RenderOptions {
  serviceUrl: string;
  projectId: string;
  isAdmin: boolean;
  microversion: number;
}

export function volumeLinks(options: RenderOptions, id: string, collection = 'volumes') {
  return [
    { href: `${options.serviceUrl}/v3/${options.projectId}/${collection}/${id}`, rel: 'self' },
    { href: `${options.serviceUrl.replace(/\/v3$/, '')}/${options.projectId}/${collection}/${id}`, rel: 'bookmark' },
  ];
}

export function renderVolumeSummary(options: RenderOptions, row: VolumeRow) {
  return { id: row.id, name: row.name, links: volumeLinks(options, row.id) };
}

export function renderVolume(
  options: RenderOptions,
  row: VolumeRow,
  typeName: string | null,
  attachments: AttachmentRow[],
  imageMetadata: Record<string, string> | null = null,
  /** 'detail': show and list detail; 'create': the answer of create, update and other writes, which has no tenant, host or migration attributes and no image metadata (Cinder's extensions add those to show and detail only). */
  view: 'detail' | 'create' = 'detail',
) {
  const metadata = JSON.parse(row.metadata) as Record<string, string>;
  // Cinder shows the visible admin metadata in the volume's metadata: 'readonly' once the flag was set to true.
  if (row.read_only) metadata['readonly'] = 'True';
  const body: Record<string, unknown> = {
    id: row.id,
    name: row.name,
    status: row.status,
    size: row.size_gib,
    availability_zone: row.availability_zone,
    created_at: cinderTime(row.created_at),
    updated_at: cinderTime(row.updated_at),
    attachments: attachments
      .filter((a) => a.attach_status === 'attached')
      .map((a) => ({
        id: row.id,
        attachment_id: a.id,
        volume_id: row.id,
        server_id: a.instance_uuid,
        // Cinder shows the host an attachment is on to administrators only.
        host_name: options.isAdmin ? a.attached_host : null,
        device: a.mountpoint,
        attached_at: cinderTime(a.attach_time),
      })),
    description: row.description,
    volume_type: typeName,
    snapshot_id: row.snapshot_id,
    source_volid: row.source_volid,
    metadata,
    links: volumeLinks(options, row.id),
    user_id: row.user_id,
    bootable: row.bootable ? 'true' : 'false',
    encrypted: false,
    replication_status: null,
    consistencygroup_id: null,
    multiattach: !!row.multiattach,
    migration_status: row.migration_status,
  };
  if (view === 'detail') {
    body['os-vol-tenant-attr:tenant_id'] = row.project_id;
    if (options.isAdmin) {
      body['os-vol-host-attr:host'] = row.host;
      body['os-vol-mig-status-attr:migstat'] = row.migration_status;
      body['os-vol-mig-status-attr:name_id'] = null;
    }
    if (imageMetadata) body['volume_image_metadata'] = imageMetadata;
  }
  const mv = options.microversion;
  if (mv >= 13) body['group_id'] = row.group_id ?? null;
  if (mv >= 21 && options.isAdmin) body['provider_id'] = null;
  if (mv >= 61 && options.isAdmin) body['cluster_name'] = null;
  if (mv >= 48) {
    body['service_uuid'] = null;
    body['shared_targets'] = false;
  }
  if (mv >= 63) body['volume_type_id'] = row.volume_type_id;
  if (mv >= 64) body['encryption_key_id'] = null;
  if (mv >= 65) body['consumes_quota'] = true;
  return body;
}

/** 'detail' (show, list detail) carries the os-extended-snapshot-attributes; 'summary' (list, create, update) does not. */
export function renderSnapshot(options: RenderOptions, row: SnapshotRow, view: 'detail' | 'summary' = 'detail') {
  const body: Record<string, unknown> = {
    id: row.id,
    created_at: cinderTime(row.created_at),
    updated_at: cinderTime(row.updated_at),
    name: row.name,
    description: row.description,
    volume_id: row.volume_id,
    status: row.status,
    size: row.size_gib,
    metadata: JSON.parse(row.metadata) as Record<string, string>,
  };
  if (view === 'detail') {
    body['os-extended-snapshot-attributes:progress'] = row.progress;
    body['os-extended-snapshot-attributes:project_id'] = row.project_id;
  }
  const mv = options.microversion;
  if (mv >= 14) body['group_snapshot_id'] = row.group_snapshot_id ?? null;
  if (mv >= 41) body['user_id'] = row.user_id;
  if (mv >= 65) body['consumes_quota'] = true;
  return body;
}
