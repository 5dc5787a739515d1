/**
 * Block Storage v3 routes (Cinder subset): parses and validates requests,
 * handles microversions, renders Cinder-shaped bodies. Domain rules live in
 * `volumes.ts`; this file never touches a driver.
 */
import { cinderTime, type Db, type SqlValue } from '../db/db.ts';
import { errors, PumiceError } from '../errors.ts';
import type { ServiceApp } from '../http/server.ts';
import { Router, type AuthContext, type RequestContext } from '../http/router.ts';
import { checkMetadataKeys, metadataSchema, queryBool, validate, type Schema } from '../http/validate.ts';
import { AttachmentService } from './attachments.ts';
import { registerAttachmentRoutes } from './attachments-api.ts';
import { ImageServiceError, type ImageRecord } from './images.ts';
import { volumeBinary, type VolumeManager } from './manager.ts';
import { quotaResources, type QuotaResource } from './quotas.ts';
import {
  renderSnapshot,
  renderVolume,
  renderVolumeSummary,
  type RenderOptions,
  type SnapshotRow,
  type VolumeRow,
  type VolumeTypeRow,
} from './records.ts';
import { defaultTypeName, type ListQuery, type VolumeService } from './volumes.ts';
import { randomUUID } from 'node:crypto';
import { nowIso } from '../db/db.ts';

export const microversionMin = 0;
/** Highest 3.x microversion served; see README for what each implemented step means here. */
export const microversionMax = 67;

const topLevelCollections = new Set([
  'volumes', 'types', 'snapshots', 'os-quota-sets', 'limits', 'os-availability-zone', 'os-services', 'scheduler-stats',
  'messages', 'backups', 'attachments', 'groups', 'group_types', 'group_snapshots', 'extensions', 'os-hosts', 'qos-specs',
  'capabilities', 'workers', 'clusters', 'manageable_volumes', 'manageable_snapshots', 'resource_filters', 'default-types',
  'volume-transfers', 'os-volume-transfer', 'os-quota-class-sets', 'os-volume-manage', 'os-snapshot-manage', 'consistencygroups', 'cgsnapshots',
]);

const sizeSchema = (max: number): Schema => ({ type: 'integer', min: 1, max, allowString: true });
const nameSchema: Schema = { type: 'string', maxLength: 255, nullable: true };
const descriptionSchema: Schema = { type: 'string', maxLength: 65535, nullable: true };
const uuidRef: Schema = { type: 'uuid', nullable: true };
/** Largest volume one request may ask for: 1 PiB; beyond it is a typo, not a plan. */
const volumeSizeGiBMax = 1024 * 1024;

/** What another service's routes on the Block Storage router (backups) share with the volume routes. */
export interface VolumeApiHelpers {
  render(ctx: RequestContext): RenderOptions;
  listQuery(ctx: RequestContext, allowedFilters: string[]): ListQuery;
  scopeToProject(ctx: RequestContext, query: ListQuery): void;
  nextLink(ctx: RequestContext, lastId: string, limit: number): { href: string; rel: string };
}
export type VolumeApiExtension = (router: Router, helpers: VolumeApiHelpers) => void;

export function volumeApp(service: VolumeService, manager: VolumeManager, db: Db, osapiMaxLimit: number, serviceDownSeconds: number, extensions: VolumeApiExtension[] = []): ServiceApp {
  const router = new Router();
  const render = (ctx: RequestContext): RenderOptions => ({
    serviceUrl: ctx.serviceUrl,
    projectId: ctx.auth?.projectId ?? '',
    isAdmin: ctx.auth?.isAdmin ?? false,
    microversion: ctx.microversion,
  });
  const auth = (ctx: RequestContext): AuthContext => ctx.auth!;
  const attachments = new AttachmentService(db, service, manager, (message) => console.error(`${new Date().toISOString()} ${message}`));
  registerAttachmentRoutes(router, attachments, osapiMaxLimit);
  const versionDocument = (ctx: RequestContext) => ({
    id: 'v3.0',
    status: 'CURRENT',
    version: `3.${microversionMax}`,
    min_version: `3.${microversionMin}`,
    updated: '2023-08-31T00:00:00Z',
    links: [{ href: `${ctx.serviceUrl}/v3/`, rel: 'self' }],
    'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.volume+json;version=3' }],
  });
  router.get('/', (ctx) => ({ status: 300, body: { versions: [versionDocument(ctx)] } }), { public: true });
  router.get('/v3', (ctx) => ({ status: 200, body: { versions: [versionDocument(ctx)] } }), { public: true });

  // ---- volumes ----
  const volumeSortColumns: Record<string, string> = {
    created_at: 'created_at', updated_at: "COALESCE(updated_at, '')", id: 'id', name: "COALESCE(name, '')", display_name: "COALESCE(name, '')",
    status: 'status', size: 'size_gib', availability_zone: 'availability_zone', bootable: 'bootable',
  };
  const renderFull = (ctx: RequestContext, rows: VolumeRow[]) => {
    const types = service.typesById();
    const ids = rows.map((r) => r.id);
    const attachmentsByVolume = new Map<string, ReturnType<VolumeService['attachments']>>();
    if (ids.length > 0) {
      for (const a of db.all<ReturnType<VolumeService['attachments']>[number]>(
        `SELECT * FROM volume_attachments WHERE volume_id IN (${ids.map(() => '?').join(',')})`, ...ids,
      )) {
        const list = attachmentsByVolume.get(a.volume_id) ?? [];
        list.push(a);
        attachmentsByVolume.set(a.volume_id, list);
      }
    }
    const options = render(ctx);
    return rows.map((r) =>
      renderVolume(options, r, r.volume_type_id ? types.get(r.volume_type_id)?.name ?? null : null, attachmentsByVolume.get(r.id) ?? [], r.image_metadata ? (JSON.parse(r.image_metadata) as Record<string, string>) : null),
    );
  };
  const listVolumes = (detail: boolean) => (ctx: RequestContext) => {
    const query = listQuery(ctx, ['name', 'status', 'availability_zone', 'bootable', 'metadata', 'volume_type', 'project_id', 'display_name', 'display_description', 'description', 'created_at', 'updated_at', 'group_id', 'glance_metadata', 'migration_status', 'host', 'user_id']);
    const q = ctx.query;
    const add = (sql: string, value: SqlValue) => {
      query.conditions.push(sql);
      query.params.push(value);
    };
    for (const [param, column] of [['name', 'name'], ['display_name', 'name'], ['status', 'status'], ['availability_zone', 'availability_zone'], ['description', 'description'], ['migration_status', 'migration_status'], ['user_id', 'user_id']] as const) {
      const value = q.get(param);
      if (value !== null) add(`${column} = ?`, value);
    }
    const bootable = queryBool(q.get('bootable'), 'bootable');
    if (bootable !== undefined) add('bootable = ?', bootable ? 1 : 0);
    const volumeType = q.get('volume_type');
    if (volumeType !== null) {
      const type = db.get<VolumeTypeRow>('SELECT * FROM volume_types WHERE id = ? OR name = ?', volumeType, volumeType);
      add('volume_type_id = ?', type?.id ?? '-');
    }
    if (auth(ctx).isAdmin && auth(ctx).roles.includes('admin') && q.get('host') !== null) add('host = ?', q.get('host')!);
    for (const [key, value] of Object.entries(parseDictParam(q.get('metadata'), 'metadata'))) {
      add('EXISTS (SELECT 1 FROM json_each(volumes.metadata) m WHERE m.key = ? AND m.value = ?)', key);
      query.params.push(value);
    }
    scopeToProject(ctx, query);
    const page = service.listPage<VolumeRow>('volumes', query, volumeSortColumns);
    const body: Record<string, unknown> = {
      volumes: detail ? renderFull(ctx, page.rows) : page.rows.map((r) => renderVolumeSummary(render(ctx), r)),
    };
    if (page.hasMore) body['volumes_links'] = [nextLink(ctx, page.rows[page.rows.length - 1]!.id, query.limit)];
    if (page.count !== undefined) body['count'] = page.count;
    return { status: 200, body };
  };
  router.get('/v3/volumes', listVolumes(false));
  router.get('/v3/volumes/detail', listVolumes(true));
  router.get('/v3/volumes/summary', (ctx) => {
    const query: ListQuery = { conditions: [], params: [], sort: [], limit: 0, marker: null, withCount: false };
    scopeToProject(ctx, query);
    const where = query.conditions.length ? `WHERE ${query.conditions.join(' AND ')}` : '';
    const row = db.get<{ n: number; gb: number | null }>(`SELECT COUNT(*) AS n, SUM(size_gib) AS gb FROM volumes ${where}`, ...query.params)!;
    return { status: 200, body: { 'volume-summary': { total_size: row.gb ?? 0, total_count: row.n, ...(ctx.microversion >= 36 ? { metadata: {} } : {}) } } };
  });

  const createVolumeSchema: Schema = {
    type: 'object',
    required: ['volume'],
    properties: {
      volume: {
        type: 'object',
        properties: {
          size: { ...sizeSchema(volumeSizeGiBMax), nullable: true } as Schema,
          name: nameSchema, display_name: nameSchema, description: descriptionSchema, display_description: descriptionSchema,
          volume_type: { type: 'string', maxLength: 255, nullable: true }, availability_zone: { type: 'string', maxLength: 255, nullable: true },
          metadata: { ...metadataSchema, nullable: true } as Schema, source_volid: uuidRef, snapshot_id: uuidRef,
          imageRef: { type: 'string', nullable: true, maxLength: 255 }, backup_id: uuidRef, consistencygroup_id: uuidRef, group_id: uuidRef,
          multiattach: { type: 'boolean', nullable: true, allowString: true }, source_replica: uuidRef,
          user_id: { type: 'any' }, project_id: { type: 'any' },
        },
      },
      'OS-SCH-HNT:scheduler_hints': { type: 'object', nullable: true, additional: true },
    },
  };
  /**
   * Asks the image service for the image with the caller's token, so its
   * visibility rules apply. Unreachable is not the caller's fault: the volume
   * is then recorded in error with the reason (Cinder's behaviour), not refused.
   */
  const lookUpImage = async (ctx: RequestContext, imageRef: string): Promise<{ image: ImageRecord | null; failure: string | null }> => {
    const invalid = (why: string) => errors.badRequest(`Invalid image identifier or unable to access requested image: ${why}`);
    if (!/^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$/.test(imageRef)) {
      throw invalid(`'${imageRef}' is not an image id (a UUID); the openstack CLI resolves names: openstack volume create --image NAME --size N VOLUME`);
    }
    const client = manager.images?.client;
    if (!client) return { image: null, failure: 'this Pumice process has no image service client' };
    try {
      const image = await client.show(auth(ctx).tokenId, imageRef);
      if (image.status !== 'active') throw invalid(`image ${image.id} is ${image.status}, not active; upload its data first (openstack image create --file FILE ...).`);
      return { image, failure: null };
    } catch (error) {
      if (!(error instanceof ImageServiceError)) throw error;
      if (error.kind === 'Unreachable') return { image: null, failure: `the image service is unreachable: ${error.message}` };
      if (error.kind === 'NotFound') throw invalid(`image ${imageRef} does not exist or is not visible to project ${auth(ctx).projectId ?? ''}.`);
      throw invalid(error.message);
    }
  };

  router.post('/v3/volumes', async (ctx) => {
    const { volume } = validate<{ volume: Record<string, unknown> }>(createVolumeSchema, ctx.body ?? null);
    if (volume['metadata']) checkMetadataKeys(volume['metadata'] as Record<string, string>);
    const imageRef = volume['imageRef'] ? String(volume['imageRef']) : null;
    if (imageRef && (volume['source_volid'] || volume['snapshot_id'] || volume['backup_id'])) {
      throw errors.badRequest('Invalid input: give only one source for the volume: imageRef, source_volid, snapshot_id or backup_id.');
    }
    if ([volume['source_volid'], volume['snapshot_id'], volume['backup_id']].filter(Boolean).length > 1) {
      throw errors.badRequest('Invalid input: give only one source for the volume: source_volid, snapshot_id or backup_id.');
    }
    // No group exists in Pumice, so a reference to one is a client error (404 as in Cinder), not a 501.
    if (volume['multiattach']) throw errors.badRequest('Multiattach volumes are not supported by the configured backends.');
    const groupId = volume['group_id'] ?? volume['consistencygroup_id'];
    if (groupId) throw new PumiceError('NotFound', `Group ${String(groupId)} could not be found (Pumice has no volume groups yet).`);
    const { image, failure } = imageRef ? await lookUpImage(ctx, imageRef) : { image: null, failure: null };
    const row = service.createVolume(auth(ctx), {
      image,
      failure,
      size: (volume['size'] as number | null | undefined) ?? null,
      name: (volume['name'] ?? volume['display_name']) as string | null | undefined,
      description: (volume['description'] ?? volume['display_description']) as string | null | undefined,
      volumeType: volume['volume_type'] as string | null | undefined,
      availabilityZone: volume['availability_zone'] as string | null | undefined,
      metadata: (volume['metadata'] as Record<string, string> | null | undefined) ?? {},
      sourceVolumeId: volume['source_volid'] as string | null | undefined,
      snapshotId: volume['snapshot_id'] as string | null | undefined,
      backupId: volume['backup_id'] as string | null | undefined,
    }, ctx.requestId);
    return { status: 202, body: { volume: renderFull(ctx, [row])[0] } };
  });
  router.get('/v3/volumes/:id', (ctx) => {
    const row = service.volume(auth(ctx), ctx.params['id']!);
    return { status: 200, body: { volume: renderFull(ctx, [row])[0] } };
  });
  router.put('/v3/volumes/:id', (ctx) => {
    const { volume } = validate<{ volume: { name?: string | null; display_name?: string | null; description?: string | null; display_description?: string | null; metadata?: Record<string, string> } }>(
      {
        type: 'object', required: ['volume'],
        properties: { volume: { type: 'object', properties: { name: nameSchema, display_name: nameSchema, description: descriptionSchema, display_description: descriptionSchema, metadata: metadataSchema } } },
      },
      ctx.body ?? null,
    );
    if (Object.keys(volume).length === 0) throw errors.badRequest("Nothing to update: give at least one of 'name', 'description' or 'metadata'.");
    if (volume.metadata) checkMetadataKeys(volume.metadata);
    const row = service.updateVolume(auth(ctx), ctx.params['id']!, {
      name: volume.name !== undefined ? volume.name : volume.display_name,
      description: volume.description !== undefined ? volume.description : volume.display_description,
      metadata: volume.metadata,
    });
    return { status: 200, body: { volume: renderFull(ctx, [row])[0] } };
  });
  router.delete('/v3/volumes/:id', (ctx) => {
    const cascade = queryBool(ctx.query.get('cascade'), 'cascade') ?? false;
    const force = queryBool(ctx.query.get('force'), 'force') ?? false;
    service.deleteVolume(auth(ctx), ctx.params['id']!, { cascade, force });
    return { status: 202 };
  });

  // ---- volume actions ----
  const actionSchemas: Record<string, Schema> = {
    'os-extend': { type: 'object', required: ['new_size'], properties: { new_size: sizeSchema(volumeSizeGiBMax) } },
    'os-set_bootable': { type: 'object', required: ['bootable'], properties: { bootable: { type: 'boolean', allowString: true } } },
    'os-update_readonly_flag': { type: 'object', required: ['readonly'], properties: { readonly: { type: 'boolean', allowString: true } } },
    'os-reset_status': { type: 'object', properties: { status: { type: 'string', maxLength: 255 }, attach_status: { type: 'string', enum: ['attached', 'detached'] }, migration_status: { type: 'string', nullable: true, enum: ['migrating', 'error', 'success', 'completing', 'none', 'starting'] } } },
    'os-force_delete': { type: 'any' },
    'os-reserve': { type: 'any' },
    'os-unreserve': { type: 'any' },
    'os-begin_detaching': { type: 'any' },
    'os-roll_detaching': { type: 'any' },
    'os-initialize_connection': { type: 'object', required: ['connector'], properties: { connector: { type: 'object', additional: true } } },
    'os-terminate_connection': { type: 'object', properties: { connector: { type: 'object', additional: true, nullable: true } } },
    'os-attach': {
      type: 'object', required: ['mountpoint'],
      properties: { instance_uuid: { type: 'uuid', nullable: true }, host_name: { type: 'string', maxLength: 255, nullable: true }, mountpoint: { type: 'string', minLength: 1, maxLength: 255 }, mode: { type: 'string', enum: ['rw', 'ro'] } },
    },
    'os-detach': { type: 'object', properties: { attachment_id: { type: 'uuid', nullable: true } } },
    'os-force_detach': { type: 'object', properties: { attachment_id: { type: 'uuid', nullable: true }, connector: { type: 'object', additional: true, nullable: true } } },
    revert: { type: 'object', required: ['snapshot_id'], properties: { snapshot_id: { type: 'uuid' } } },
    'os-volume_upload_image': {
      type: 'object', required: ['image_name'],
      properties: {
        image_name: { type: 'string', minLength: 1, maxLength: 255 },
        force: { type: 'boolean', allowString: true },
        disk_format: { type: 'string', enum: ['raw', 'qcow2', 'vmdk', 'vdi', 'vhd', 'vhdx'] },
        container_format: { type: 'string', enum: ['bare'] },
        visibility: { type: 'string', enum: ['public', 'private', 'shared', 'community'] },
        protected: { type: 'boolean', allowString: true },
      },
    },
    'os-set_image_metadata': { type: 'object', required: ['metadata'], properties: { metadata: metadataSchema } },
    'os-unset_image_metadata': { type: 'object', required: ['key'], properties: { key: { type: 'string', minLength: 1, maxLength: 255 } } },
    'os-show_image_metadata': { type: 'any' },
  };
  /** Keys of volume_image_metadata that describe the old image, not properties to hand to the new one. */
  const imageMetadataNotCopied = new Set(['image_id', 'image_name', 'checksum', 'container_format', 'disk_format', 'min_disk', 'min_ram', 'size', 'virtual_size', 'os_hash_algo', 'os_hash_value', 'direct_url', 'owner']);
  const uploadToImage = async (ctx: RequestContext, id: string, args: Record<string, unknown>) => {
    const a = auth(ctx);
    const force = (args['force'] as boolean | undefined) ?? false;
    const row = service.uploadableVolume(a, id, force);
    const client = manager.images?.client;
    if (!client) throw new PumiceError('BackendUnavailable', 'This Pumice process has no image service client; uploads to images are not possible.');
    if (ctx.microversion < 1 && (args['visibility'] !== undefined || args['protected'] !== undefined)) {
      throw errors.badRequest("'visibility' and 'protected' need microversion 3.1 or later (OpenStack-API-Version: volume 3.1).");
    }
    const diskFormat = (args['disk_format'] as string | undefined) ?? 'raw';
    const containerFormat = (args['container_format'] as string | undefined) ?? 'bare';
    const properties: Record<string, string> = {};
    if (row.image_metadata) {
      for (const [key, value] of Object.entries(JSON.parse(row.image_metadata) as Record<string, string>)) if (!imageMetadataNotCopied.has(key)) properties[key] = value;
    }
    const body: Record<string, unknown> = {
      ...properties,
      name: args['image_name'],
      disk_format: diskFormat,
      container_format: containerFormat,
      min_disk: row.size_gib,
      ...(args['visibility'] !== undefined ? { visibility: args['visibility'] } : {}),
      ...(args['protected'] !== undefined ? { protected: args['protected'] } : {}),
    };
    let image: ImageRecord;
    try {
      image = await client.create(a.tokenId, body);
    } catch (error) {
      if (!(error instanceof ImageServiceError)) throw error;
      if (error.kind === 'Unreachable') throw new PumiceError('BackendUnavailable', `Cannot upload the volume: ${error.message}`);
      throw errors.badRequest(`The image service refused to create the image: ${error.message}`);
    }
    let started: typeof row;
    try {
      started = service.startUpload(a, id, force, { imageId: image.id, diskFormat });
    } catch (error) {
      await client.remove(a.tokenId, image.id);
      throw error;
    }
    return {
      id: started.id,
      updated_at: started.updated_at,
      status: started.status,
      display_description: started.description,
      size: started.size_gib,
      volume_type: started.volume_type_id ? { id: started.volume_type_id, name: service.typesById().get(started.volume_type_id)?.name ?? null } : null,
      image_id: image.id,
      container_format: containerFormat,
      disk_format: diskFormat,
      image_name: image.name,
      ...(ctx.microversion >= 1 ? { visibility: (args['visibility'] as string | undefined) ?? 'private', protected: (args['protected'] as boolean | undefined) ?? false } : {}),
    };
  };

  router.post('/v3/volumes/:id/action', async (ctx) => {
    const body = ctx.body;
    if (typeof body !== 'object' || body === null || Array.isArray(body) || Object.keys(body).length !== 1) {
      throw errors.badRequest(`A volume action body is an object with exactly one key, the action: one of ${Object.keys(actionSchemas).join(', ')}.`);
    }
    const [action, rawArgs] = Object.entries(body)[0]!;
    const schema = Object.hasOwn(actionSchemas, action) ? actionSchemas[action] : undefined;
    if (!schema) throw errors.badRequest(`Invalid volume action '${action}'. Pumice supports: ${Object.keys(actionSchemas).join(', ')}.`);
    const args = validate<Record<string, unknown>>(schema, rawArgs ?? {}, action);
    const id = ctx.params['id']!;
    const a = auth(ctx);
    switch (action) {
      case 'os-extend':
        service.extendVolume(a, id, args['new_size'] as number, ctx.microversion);
        return { status: 202 };
      case 'os-set_bootable':
        service.setBootable(a, id, args['bootable'] as boolean);
        return { status: 200 };
      case 'os-update_readonly_flag':
        service.setReadOnly(a, id, args['readonly'] as boolean);
        return { status: 202 };
      case 'os-reset_status':
        service.resetVolumeStatus(a, id, args as never);
        // Cinder's _clean_volume_attachment: a volume reset to detached has no attachment left.
        if (args['attach_status'] === 'detached') attachments.cleanAfterReset(id);
        return { status: 202 };
      case 'os-force_delete':
        service.deleteVolume(a, id, { cascade: false, force: true });
        return { status: 202 };
      case 'os-reserve':
        service.reserve(a, id);
        return { status: 202 };
      case 'os-unreserve':
        service.unreserve(a, id);
        return { status: 202 };
      case 'os-begin_detaching':
        service.beginDetaching(a, id);
        return { status: 202 };
      case 'os-roll_detaching':
        service.rollDetaching(a, id);
        return { status: 202 };
      case 'os-initialize_connection': {
        const info = await service.initializeConnection(a, id, args['connector'] as never);
        return { status: 200, body: { connection_info: info } };
      }
      case 'os-terminate_connection':
        await service.terminateConnection(a, id, (args['connector'] as never) ?? null);
        return { status: 202 };
      case 'os-attach':
        service.attach(a, id, args as never);
        return { status: 202 };
      case 'os-detach':
        service.detach(a, id, (args['attachment_id'] as string | null | undefined) ?? null);
        return { status: 202 };
      case 'os-force_detach':
        await attachments.forceDetach(a, id, (args['attachment_id'] as string | null | undefined) ?? null, (args['connector'] as never) ?? null);
        return { status: 202 };
      case 'os-volume_upload_image':
        return { status: 202, body: { 'os-volume_upload_image': await uploadToImage(ctx, id, args) } };
      case 'os-set_image_metadata':
        checkMetadataKeys(args['metadata'] as Record<string, string>);
        return { status: 200, body: { metadata: service.updateImageMetadata(a, id, args['metadata'] as Record<string, string>, []) } };
      case 'os-unset_image_metadata':
        service.updateImageMetadata(a, id, {}, [args['key'] as string]);
        return { status: 200 };
      case 'os-show_image_metadata': {
        const row = service.volume(a, id);
        return { status: 200, body: { metadata: row.image_metadata ? (JSON.parse(row.image_metadata) as object) : {} } };
      }
      case 'revert':
        if (ctx.microversion < 40) throw errors.notFound('Volume action', "'revert' (it needs microversion 3.40 or later: OpenStack-API-Version: volume 3.40)");
        service.revertToSnapshot(a, id, args['snapshot_id'] as string);
        return { status: 202 };
    }
    throw errors.badRequest(`Invalid volume action '${action}'.`);
  });

  // ---- volume metadata ----
  const metadataBody: Schema = { type: 'object', required: ['metadata'], properties: { metadata: metadataSchema } };
  const metaItemBody: Schema = { type: 'object', required: ['meta'], properties: { meta: { ...metadataSchema, maxProperties: 1 } as Schema } };
  const registerMetadata = (
    base: string,
    get: (a: AuthContext, id: string) => { metadata: string },
    set: (a: AuthContext, id: string, m: Record<string, string>, replace: boolean) => Record<string, string>,
    remove: (a: AuthContext, id: string, key: string) => void,
  ) => {
    router.get(`${base}/:id/metadata`, (ctx) => ({ status: 200, body: { metadata: JSON.parse(get(auth(ctx), ctx.params['id']!).metadata) as object } }));
    router.post(`${base}/:id/metadata`, (ctx) => {
      const { metadata } = validate<{ metadata: Record<string, string> }>(metadataBody, ctx.body ?? null);
      checkMetadataKeys(metadata);
      return { status: 200, body: { metadata: set(auth(ctx), ctx.params['id']!, metadata, false) } };
    });
    router.put(`${base}/:id/metadata`, (ctx) => {
      const { metadata } = validate<{ metadata: Record<string, string> }>(metadataBody, ctx.body ?? null);
      checkMetadataKeys(metadata);
      return { status: 200, body: { metadata: set(auth(ctx), ctx.params['id']!, metadata, true) } };
    });
    router.get(`${base}/:id/metadata/:key`, (ctx) => {
      const metadata = JSON.parse(get(auth(ctx), ctx.params['id']!).metadata) as Record<string, string>;
      const key = ctx.params['key']!;
      // hasOwn, not `in`: a key named 'constructor' or 'toString' is not in the metadata.
      if (!Object.hasOwn(metadata, key)) throw errors.notFound('Metadata key', `'${key}'`);
      return { status: 200, body: { meta: { [key]: metadata[key] } } };
    });
    router.put(`${base}/:id/metadata/:key`, (ctx) => {
      const { meta } = validate<{ meta: Record<string, string> }>(metaItemBody, ctx.body ?? null);
      const key = ctx.params['key']!;
      checkMetadataKeys(meta);
      if (!Object.hasOwn(meta, key)) throw errors.badRequest(`Request body and URI mismatch: the body must set key '${key}'.`);
      set(auth(ctx), ctx.params['id']!, { [key]: meta[key]! }, false);
      return { status: 200, body: { meta: { [key]: meta[key] } } };
    });
    router.delete(`${base}/:id/metadata/:key`, (ctx) => {
      remove(auth(ctx), ctx.params['id']!, ctx.params['key']!);
      return { status: 200 };
    });
  };
  registerMetadata('/v3/volumes', (a, id) => service.volume(a, id), (a, id, m, r) => service.setMetadata(a, id, m, r), (a, id, k) => service.deleteMetadataKey(a, id, k));
  registerMetadata('/v3/snapshots', (a, id) => service.snapshot(a, id), (a, id, m, r) => service.setSnapshotMetadata(a, id, m, r), (a, id, k) => service.deleteSnapshotMetadataKey(a, id, k));

  // ---- snapshots ----
  const snapshotSortColumns: Record<string, string> = {
    created_at: 'created_at', updated_at: "COALESCE(updated_at, '')", id: 'id', name: "COALESCE(name, '')", status: 'status', size: 'size_gib', volume_id: 'volume_id',
  };
  const listSnapshots = (detail: boolean) => (ctx: RequestContext) => {
    const query = listQuery(ctx, ['name', 'status', 'volume_id', 'metadata', 'project_id', 'display_name']);
    const q = ctx.query;
    for (const [param, column] of [['name', 'name'], ['display_name', 'name'], ['status', 'status'], ['volume_id', 'volume_id']] as const) {
      const value = q.get(param);
      if (value !== null) {
        query.conditions.push(`${column} = ?`);
        query.params.push(value);
      }
    }
    for (const [key, value] of Object.entries(parseDictParam(q.get('metadata'), 'metadata'))) {
      query.conditions.push('EXISTS (SELECT 1 FROM json_each(snapshots.metadata) m WHERE m.key = ? AND m.value = ?)');
      query.params.push(key, value);
    }
    scopeToProject(ctx, query);
    const page = service.listPage<SnapshotRow>('snapshots', query, snapshotSortColumns);
    const options = render(ctx);
    const body: Record<string, unknown> = {
      snapshots: page.rows.map((r) => {
        const full = renderSnapshot(options, r);
        if (detail) return full;
        const { ['os-extended-snapshot-attributes:progress']: _p, ['os-extended-snapshot-attributes:project_id']: _pr, ...summary } = full;
        return summary;
      }),
    };
    if (page.hasMore) body['snapshots_links'] = [nextLink(ctx, page.rows[page.rows.length - 1]!.id, query.limit)];
    if (page.count !== undefined) body['count'] = page.count;
    return { status: 200, body };
  };
  router.get('/v3/snapshots', listSnapshots(false));
  router.get('/v3/snapshots/detail', listSnapshots(true));
  router.post('/v3/snapshots', (ctx) => {
    const { snapshot } = validate<{ snapshot: { volume_id: string; name?: string | null; display_name?: string | null; description?: string | null; display_description?: string | null; force?: boolean; metadata?: Record<string, string> | null } }>(
      {
        type: 'object', required: ['snapshot'],
        properties: {
          snapshot: {
            type: 'object', required: ['volume_id'],
            properties: {
              volume_id: { type: 'uuid' }, name: nameSchema, display_name: nameSchema, description: descriptionSchema, display_description: descriptionSchema,
              force: { type: 'boolean', allowString: true, nullable: true }, metadata: { ...metadataSchema, nullable: true } as Schema,
            },
          },
        },
      },
      ctx.body ?? null,
    );
    if (snapshot.metadata) checkMetadataKeys(snapshot.metadata);
    const row = service.createSnapshot(auth(ctx), {
      volumeId: snapshot.volume_id,
      name: snapshot.name !== undefined ? snapshot.name : snapshot.display_name,
      description: snapshot.description !== undefined ? snapshot.description : snapshot.display_description,
      force: snapshot.force ?? false,
      metadata: snapshot.metadata ?? {},
    });
    return { status: 202, body: { snapshot: renderSnapshot(render(ctx), row) } };
  });
  router.get('/v3/snapshots/:id', (ctx) => ({ status: 200, body: { snapshot: renderSnapshot(render(ctx), service.snapshot(auth(ctx), ctx.params['id']!)) } }));
  router.put('/v3/snapshots/:id', (ctx) => {
    const { snapshot } = validate<{ snapshot: { name?: string | null; display_name?: string | null; description?: string | null; display_description?: string | null } }>(
      { type: 'object', required: ['snapshot'], properties: { snapshot: { type: 'object', properties: { name: nameSchema, display_name: nameSchema, description: descriptionSchema, display_description: descriptionSchema } } } },
      ctx.body ?? null,
    );
    if (Object.keys(snapshot).length === 0) throw errors.badRequest("Nothing to update: give 'name' or 'description'.");
    const row = service.updateSnapshot(auth(ctx), ctx.params['id']!, {
      name: snapshot.name !== undefined ? snapshot.name : snapshot.display_name,
      description: snapshot.description !== undefined ? snapshot.description : snapshot.display_description,
    });
    return { status: 200, body: { snapshot: renderSnapshot(render(ctx), row) } };
  });
  router.delete('/v3/snapshots/:id', (ctx) => {
    service.deleteSnapshot(auth(ctx), ctx.params['id']!, false);
    return { status: 202 };
  });
  router.post('/v3/snapshots/:id/action', (ctx) => {
    const body = ctx.body as Record<string, unknown> | undefined;
    if (!body || typeof body !== 'object' || Object.keys(body).length !== 1) throw errors.badRequest('A snapshot action body is an object with exactly one key: os-reset_status, os-force_delete or os-update_snapshot_status.');
    const [action, args] = Object.entries(body)[0]!;
    if (action === 'os-reset_status') {
      const { status } = validate<{ status: string }>({ type: 'object', required: ['status'], properties: { status: { type: 'string', maxLength: 255 } } }, args, action);
      service.resetSnapshotStatus(auth(ctx), ctx.params['id']!, status);
      return { status: 202 };
    }
    if (action === 'os-force_delete') {
      service.deleteSnapshot(auth(ctx), ctx.params['id']!, true);
      return { status: 202 };
    }
    throw errors.badRequest(`Invalid snapshot action '${action}'. Supported: os-reset_status, os-force_delete.`);
  });

  // ---- volume types ----
  const visibleSpecs = (a: AuthContext, typeId: string) => {
    const specs = service.extraSpecs(typeId);
    if (a.isAdmin) return specs;
    // Cinder shows non-admins only the specs that describe user-visible behaviour.
    const userVisible = ['RESKEY:availability_zones', 'multiattach', 'replication_enabled'];
    return Object.fromEntries(Object.entries(specs).filter(([k]) => userVisible.includes(k)));
  };
  const renderType = (ctx: RequestContext, t: VolumeTypeRow) => ({
    id: t.id,
    name: t.name,
    description: t.description,
    is_public: !!t.is_public,
    'os-volume-type-access:is_public': !!t.is_public,
    extra_specs: visibleSpecs(auth(ctx), t.id),
    qos_specs_id: null,
  });
  const typeById = (ctx: RequestContext): VolumeTypeRow => {
    const id = ctx.params['id']!;
    if (id === 'default') return service.defaultType();
    const row = db.get<VolumeTypeRow>('SELECT * FROM volume_types WHERE id = ?', id);
    if (!row || !service.typeAccessible(auth(ctx), row)) throw errors.notFound('Volume type', id);
    return row;
  };
  router.get('/v3/types', (ctx) => {
    const a = auth(ctx);
    const isPublic = ctx.query.get('is_public');
    let rows = db.all<VolumeTypeRow>('SELECT * FROM volume_types ORDER BY name');
    if (!a.isAdmin || isPublic === null) rows = rows.filter((t) => service.typeAccessible(a, t) && (a.isAdmin || t.is_public || isPublic !== 'true'));
    if (a.isAdmin && isPublic !== null && isPublic.toLowerCase() !== 'none') {
      const wanted = queryBool(isPublic, 'is_public');
      rows = rows.filter((t) => !!t.is_public === wanted);
    }
    return { status: 200, body: { volume_types: rows.map((t) => renderType(ctx, t)) } };
  });
  router.get('/v3/types/:id', (ctx) => ({ status: 200, body: { volume_type: renderType(ctx, typeById(ctx)) } }));
  const typeNameSchema: Schema = { type: 'string', minLength: 1, maxLength: 255, pattern: /\S/, patternHelp: 'a non-blank name' };
  router.post('/v3/types', (ctx) => {
    service.requireAdmin(auth(ctx), 'volume_extension:types_manage');
    const { volume_type: input } = validate<{ volume_type: { name: string; description?: string | null; 'os-volume-type-access:is_public'?: boolean; is_public?: boolean; extra_specs?: Record<string, string> } }>(
      {
        type: 'object', required: ['volume_type'],
        properties: {
          volume_type: {
            type: 'object', required: ['name'],
            properties: {
              name: typeNameSchema, description: { type: 'string', maxLength: 255, nullable: true },
              'os-volume-type-access:is_public': { type: 'boolean', allowString: true }, is_public: { type: 'boolean', allowString: true },
              extra_specs: metadataSchema,
            },
          },
        },
      },
      ctx.body ?? null,
    );
    if (input.extra_specs) checkMetadataKeys(input.extra_specs);
    if (db.get('SELECT 1 FROM volume_types WHERE name = ?', input.name)) throw errors.conflict(`Volume Type ${input.name} already exists.`);
    const id = randomUUID();
    const isPublic = input['os-volume-type-access:is_public'] ?? input.is_public ?? true;
    db.transaction(() => {
      db.run('INSERT INTO volume_types (id, name, description, is_public, created_at) VALUES (?, ?, ?, ?, ?)', id, input.name, input.description ?? null, isPublic ? 1 : 0, nowIso());
      for (const [k, v] of Object.entries(input.extra_specs ?? {})) db.run('INSERT INTO volume_type_extra_specs (volume_type_id, key, value) VALUES (?, ?, ?)', id, k, v);
    });
    return { status: 200, body: { volume_type: renderType(ctx, db.get<VolumeTypeRow>('SELECT * FROM volume_types WHERE id = ?', id)!) } };
  });
  router.put('/v3/types/:id', (ctx) => {
    service.requireAdmin(auth(ctx), 'volume_extension:types_manage');
    const type = typeById(ctx);
    const { volume_type: input } = validate<{ volume_type: { name?: string; description?: string | null; is_public?: boolean } }>(
      { type: 'object', required: ['volume_type'], properties: { volume_type: { type: 'object', properties: { name: typeNameSchema, description: { type: 'string', maxLength: 255, nullable: true }, is_public: { type: 'boolean', allowString: true } } } } },
      ctx.body ?? null,
    );
    if (input.name && input.name !== type.name) {
      if (type.name === defaultTypeName) throw errors.badRequest(`The default volume type ${defaultTypeName} cannot be renamed.`);
      if (db.get('SELECT 1 FROM volume_types WHERE name = ?', input.name)) throw errors.conflict(`Volume Type ${input.name} already exists.`);
    }
    db.run('UPDATE volume_types SET name = ?, description = ?, is_public = ?, updated_at = ? WHERE id = ?',
      input.name ?? type.name, input.description === undefined ? type.description : input.description,
      input.is_public === undefined ? type.is_public : input.is_public ? 1 : 0, nowIso(), type.id);
    return { status: 200, body: { volume_type: renderType(ctx, db.get<VolumeTypeRow>('SELECT * FROM volume_types WHERE id = ?', type.id)!) } };
  });
  router.delete('/v3/types/:id', (ctx) => {
    service.requireAdmin(auth(ctx), 'volume_extension:types_manage');
    const type = typeById(ctx);
    if (type.name === defaultTypeName || type.name === service.defaultType().name) {
      throw errors.badRequest(`Volume type ${type.name} is the default type and cannot be deleted; set default_volume_type to another type first.`);
    }
    const used = db.get<{ n: number }>('SELECT COUNT(*) AS n FROM volumes WHERE volume_type_id = ?', type.id)!.n;
    if (used > 0) throw errors.badRequest(`Target volume type is still in use: ${used} volume(s) of type ${type.name} exist. Delete or retype them first.`);
    db.run('DELETE FROM volume_types WHERE id = ?', type.id);
    return { status: 202 };
  });
  router.get('/v3/types/:id/extra_specs', (ctx) => {
    service.requireAdmin(auth(ctx), 'volume_extension:types_extra_specs:index');
    return { status: 200, body: { extra_specs: service.extraSpecs(typeById(ctx).id) } };
  });
  router.post('/v3/types/:id/extra_specs', (ctx) => {
    service.requireAdmin(auth(ctx), 'volume_extension:types_extra_specs:create');
    const type = typeById(ctx);
    const { extra_specs: specs } = validate<{ extra_specs: Record<string, string> }>({ type: 'object', required: ['extra_specs'], properties: { extra_specs: metadataSchema } }, ctx.body ?? null);
    checkMetadataKeys(specs);
    checkInUseBackendChange(type.id, specs);
    db.transaction(() => {
      for (const [k, v] of Object.entries(specs)) {
        db.run('INSERT INTO volume_type_extra_specs (volume_type_id, key, value) VALUES (?, ?, ?) ON CONFLICT (volume_type_id, key) DO UPDATE SET value = excluded.value', type.id, k, v);
      }
    });
    return { status: 200, body: { extra_specs: specs } };
  });
  router.get('/v3/types/:id/extra_specs/:key', (ctx) => {
    service.requireAdmin(auth(ctx), 'volume_extension:types_extra_specs:show');
    const specs = service.extraSpecs(typeById(ctx).id);
    const key = ctx.params['key']!;
    if (!Object.hasOwn(specs, key)) throw errors.notFound('Volume type extra spec', key);
    return { status: 200, body: { [key]: specs[key] } };
  });
  router.put('/v3/types/:id/extra_specs/:key', (ctx) => {
    service.requireAdmin(auth(ctx), 'volume_extension:types_extra_specs:update');
    const type = typeById(ctx);
    const key = ctx.params['key']!;
    const body = validate<Record<string, string>>({ ...metadataSchema, maxProperties: 1 } as Schema, ctx.body ?? null);
    checkMetadataKeys(body);
    // hasOwn, not `in`: URL key 'toString' would otherwise find Object.prototype.toString and bind a function (500).
    if (!Object.hasOwn(body, key)) throw errors.badRequest(`Request body and URI mismatch: the body must set key '${key}'.`);
    checkInUseBackendChange(type.id, body);
    db.run('INSERT INTO volume_type_extra_specs (volume_type_id, key, value) VALUES (?, ?, ?) ON CONFLICT (volume_type_id, key) DO UPDATE SET value = excluded.value', type.id, key, body[key]!);
    return { status: 200, body: { [key]: body[key] } };
  });
  router.delete('/v3/types/:id/extra_specs/:key', (ctx) => {
    service.requireAdmin(auth(ctx), 'volume_extension:types_extra_specs:delete');
    const type = typeById(ctx);
    if (db.run('DELETE FROM volume_type_extra_specs WHERE volume_type_id = ? AND key = ?', type.id, ctx.params['key']!).changes === 0) {
      throw errors.notFound('Volume type extra spec', ctx.params['key']!);
    }
    return { status: 202 };
  });
  router.get('/v3/types/:id/os-volume-type-access', (ctx) => {
    service.requireAdmin(auth(ctx), 'volume_extension:volume_type_access');
    const type = typeById(ctx);
    if (type.is_public) throw errors.notFound('Volume type access', `for public type ${type.id} (a public type has no access list)`);
    const rows = db.all<{ project_id: string }>('SELECT project_id FROM volume_type_projects WHERE volume_type_id = ? ORDER BY project_id', type.id);
    return { status: 200, body: { volume_type_access: rows.map((r) => ({ volume_type_id: type.id, project_id: r.project_id })) } };
  });
  router.post('/v3/types/:id/action', (ctx) => {
    service.requireAdmin(auth(ctx), 'volume_extension:volume_type_access:manage');
    const type = typeById(ctx);
    const body = validate<{ addProjectAccess?: { project: string }; removeProjectAccess?: { project: string } }>(
      {
        type: 'object',
        properties: {
          addProjectAccess: { type: 'object', required: ['project'], properties: { project: { type: 'string', minLength: 1, maxLength: 64 } } },
          removeProjectAccess: { type: 'object', required: ['project'], properties: { project: { type: 'string', minLength: 1, maxLength: 64 } } },
        },
      },
      ctx.body ?? null,
    );
    if (type.is_public) throw errors.badRequest(`Volume type ${type.name} is public: access lists apply only to private types (openstack volume type set --private).`);
    if (body.addProjectAccess) {
      const project = body.addProjectAccess.project;
      if (db.get('SELECT 1 FROM volume_type_projects WHERE volume_type_id = ? AND project_id = ?', type.id, project)) {
        throw errors.conflict(`Volume type access for ${type.id} / ${project} combination already exists.`);
      }
      db.run('INSERT INTO volume_type_projects (volume_type_id, project_id) VALUES (?, ?)', type.id, project);
    } else if (body.removeProjectAccess) {
      if (db.run('DELETE FROM volume_type_projects WHERE volume_type_id = ? AND project_id = ?', type.id, body.removeProjectAccess.project).changes === 0) {
        throw errors.notFound('Volume type access', `for ${type.id} / ${body.removeProjectAccess.project}`);
      }
    } else {
      throw errors.badRequest('Give addProjectAccess or removeProjectAccess.');
    }
    return { status: 202 };
  });
  function checkInUseBackendChange(typeId: string, specs: Record<string, string>): void {
    if (!('volume_backend_name' in specs)) return;
    const used = db.get<{ n: number }>('SELECT COUNT(*) AS n FROM volumes WHERE volume_type_id = ?', typeId)!.n;
    const current = service.extraSpecs(typeId)['volume_backend_name'];
    if (used > 0 && current !== undefined && current !== specs['volume_backend_name']) {
      throw errors.badRequest(`Volume type is in use by ${used} volume(s): changing volume_backend_name would misdescribe them. Create a new type instead.`);
    }
  }

  // ---- quotas and limits ----
  const quotaProject = (ctx: RequestContext): string => {
    const a = auth(ctx);
    const target = ctx.params['project']!;
    if (!a.isAdmin && target !== a.projectId) throw errors.forbidden('volume_extension:quotas:show for another project');
    return target;
  };
  const renderQuotaSet = (projectId: string, usage: boolean) => {
    const limits = service.quotas.limits(projectId);
    const used = service.quotas.usage(projectId);
    const set: Record<string, unknown> = { id: projectId };
    for (const resource of quotaResources) {
      set[resource] = usage
        ? { limit: limits[resource], in_use: resource === 'per_volume_gigabytes' ? 0 : used[resource as keyof typeof used] ?? 0, reserved: 0, allocated: 0 }
        : limits[resource];
    }
    return set;
  };
  router.get('/v3/os-quota-sets/:project', (ctx) => {
    const usage = queryBool(ctx.query.get('usage'), 'usage') ?? false;
    return { status: 200, body: { quota_set: renderQuotaSet(quotaProject(ctx), usage) } };
  });
  router.get('/v3/os-quota-sets/:project/defaults', (ctx) => {
    quotaProject(ctx);
    return { status: 200, body: { quota_set: { id: ctx.params['project'], ...service.quotas.defaultLimits() } } };
  });
  router.put('/v3/os-quota-sets/:project', (ctx) => {
    service.requireAdmin(auth(ctx), 'volume_extension:quotas:update');
    const limitSchema: Schema = { type: 'integer', min: -1, max: 2 ** 31 - 1, allowString: true };
    const properties: Record<string, Schema> = { tenant_id: { type: 'string', maxLength: 255 }, skip_validation: { type: 'boolean', allowString: true } };
    for (const resource of quotaResources) properties[resource] = limitSchema;
    const { quota_set: input } = validate<{ quota_set: Record<string, unknown> }>({ type: 'object', required: ['quota_set'], properties: { quota_set: { type: 'object', properties } } }, ctx.body ?? null);
    const changes: Partial<Record<QuotaResource, number>> = {};
    for (const resource of quotaResources) if (typeof input[resource] === 'number') changes[resource] = input[resource] as number;
    const projectId = ctx.params['project']!;
    if (input['skip_validation'] === false) {
      const used = service.quotas.usage(projectId);
      for (const [resource, limit] of Object.entries(changes)) {
        const inUse = used[resource as keyof typeof used];
        if (inUse !== undefined && limit >= 0 && limit < inUse) {
          throw errors.badRequest(`Quota limit ${limit} for ${resource} is below the ${inUse} already in use by project ${projectId}.`);
        }
      }
    }
    service.quotas.setLimits(projectId, changes);
    const set = renderQuotaSet(projectId, false);
    delete set['id'];
    return { status: 200, body: { quota_set: set } };
  });
  router.delete('/v3/os-quota-sets/:project', (ctx) => {
    service.requireAdmin(auth(ctx), 'volume_extension:quotas:delete');
    service.quotas.resetLimits(ctx.params['project']!);
    return { status: 200 };
  });
  router.get('/v3/limits', (ctx) => {
    const a = auth(ctx);
    let projectId = service.projectOf(a);
    const requested = ctx.query.get('project_id');
    if (requested && ctx.microversion >= 39) {
      if (!a.isAdmin && requested !== projectId) throw errors.forbidden('limits_extension:used_limits for another project');
      projectId = requested;
    }
    const limits = service.quotas.limits(projectId);
    const used = service.quotas.usage(projectId);
    return {
      status: 200,
      body: {
        limits: {
          rate: [],
          absolute: {
            totalSnapshotsUsed: used.snapshots, maxTotalBackups: limits.backups, maxTotalVolumeGigabytes: limits.gigabytes,
            maxTotalSnapshots: limits.snapshots, maxTotalBackupGigabytes: limits.backup_gigabytes, totalBackupGigabytesUsed: used.backup_gigabytes,
            maxTotalVolumes: limits.volumes, totalVolumesUsed: used.volumes, totalBackupsUsed: used.backups, totalGigabytesUsed: used.gigabytes,
          },
        },
      },
    };
  });

  // ---- availability zones, services, pools ----
  router.get('/v3/os-availability-zone', (ctx) => {
    auth(ctx);
    const up = new Map<string, boolean>();
    for (const state of manager.backends.values()) {
      const zone = state.config.backend_availability_zone!;
      up.set(zone, (up.get(zone) ?? false) || state.up);
    }
    return { status: 200, body: { availabilityZoneInfo: [...up].map(([zoneName, available]) => ({ zoneName, zoneState: { available } })) } };
  });
  interface ServiceRow { id: number; binary: string; host: string; zone: string; disabled: number; disabled_reason: string | null; frozen: number; heartbeat_at: string | null; state_reason: string | null; updated_at: string | null }
  const renderService = (ctx: RequestContext, row: ServiceRow) => {
    const isUp = row.heartbeat_at !== null && Date.now() - Date.parse(row.heartbeat_at) <= serviceDownSeconds * 1000;
    const body: Record<string, unknown> = {
      binary: row.binary, host: row.host, zone: row.zone, status: row.disabled ? 'disabled' : 'enabled', state: isUp ? 'up' : 'down',
      updated_at: cinderTime(row.heartbeat_at),
      // A service that is down says why where operators look (volume service list --long).
      disabled_reason: row.disabled_reason ?? (isUp ? null : row.state_reason),
    };
    if (row.binary === volumeBinary) {
      body['replication_status'] = 'disabled';
      body['active_backend_id'] = null;
      body['frozen'] = !!row.frozen;
      if (ctx.microversion >= 49) body['backend_state'] = isUp ? 'up' : 'down';
    }
    if (ctx.microversion >= 7) body['cluster'] = null;
    return body;
  };
  router.get('/v3/os-services', (ctx) => {
    service.requireAdmin(auth(ctx), 'volume_extension:services:index');
    const q = ctx.query;
    let rows = db.all<ServiceRow>("SELECT * FROM services WHERE binary LIKE 'cinder-%' ORDER BY binary, host");
    if (q.get('host') !== null) rows = rows.filter((r) => r.host === q.get('host'));
    if (q.get('binary') !== null) rows = rows.filter((r) => r.binary === q.get('binary'));
    return { status: 200, body: { services: rows.map((r) => renderService(ctx, r)) } };
  });
  router.put('/v3/os-services/:action', (ctx) => {
    service.requireAdmin(auth(ctx), 'volume_extension:services:update');
    const action = ctx.params['action']!;
    if (!['enable', 'disable', 'disable-log-reason'].includes(action)) {
      throw errors.notFound('Service action', `'${action}' (supported: enable, disable, disable-log-reason)`);
    }
    const body = validate<{ host: string; binary?: string; disabled_reason?: string }>(
      { type: 'object', required: ['host'], properties: { host: { type: 'string', minLength: 1, maxLength: 255 }, binary: { type: 'string', maxLength: 255 }, disabled_reason: { type: 'string', maxLength: 255 } } },
      ctx.body ?? null,
    );
    const binary = body.binary ?? volumeBinary;
    const row = db.get<ServiceRow>('SELECT * FROM services WHERE host = ? AND binary = ?', body.host, binary);
    if (!row) throw errors.notFound('Service', `${binary} on host ${body.host}`);
    const disabled = action !== 'enable';
    const reason = action === 'disable-log-reason' ? body.disabled_reason ?? null : null;
    db.run('UPDATE services SET disabled = ?, disabled_reason = ?, updated_at = ? WHERE id = ?', disabled ? 1 : 0, reason, nowIso(), row.id);
    return { status: 200, body: { host: row.host, binary: row.binary, status: disabled ? 'disabled' : 'enabled', disabled, disabled_reason: reason } };
  });
  router.get('/v3/scheduler-stats/get_pools', (ctx) => {
    service.requireAdmin(auth(ctx), 'scheduler_extension:scheduler_stats:get_pools');
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
  });

  // ---- user messages (3.3+) ----
  interface MessageRow { id: string; project_id: string; request_id: string | null; resource_type: string | null; resource_uuid: string | null; event_id: string; message_level: string; user_message: string; created_at: string; expires_at: string }
  const renderMessage = (ctx: RequestContext, m: MessageRow) => ({
    id: m.id, message_level: m.message_level, user_message: m.user_message, request_id: m.request_id, resource_type: m.resource_type,
    resource_uuid: m.resource_uuid, event_id: m.event_id, created_at: cinderTime(m.created_at), guaranteed_until: cinderTime(m.expires_at),
    links: [{ href: `${ctx.serviceUrl}/v3/${m.project_id}/messages/${m.id}`, rel: 'self' }],
  });
  const requireMessages = (ctx: RequestContext) => {
    if (ctx.microversion < 3) throw errors.notFound('Resource', "'messages' (it needs microversion 3.3 or later)");
  };
  const message = (ctx: RequestContext): MessageRow => {
    const row = db.get<MessageRow>('SELECT * FROM messages WHERE id = ?', ctx.params['id']!);
    if (!row || (!auth(ctx).isAdmin && row.project_id !== auth(ctx).projectId)) throw errors.notFound('Message', ctx.params['id']!);
    return row;
  };
  router.get('/v3/messages', (ctx) => {
    requireMessages(ctx);
    const a = auth(ctx);
    const conditions: string[] = ['expires_at > ?'];
    const params: SqlValue[] = [nowIso()];
    if (!a.isAdmin) {
      conditions.push('project_id = ?');
      params.push(a.projectId ?? '');
    }
    for (const key of ['resource_uuid', 'resource_type', 'event_id', 'request_id', 'message_level'] as const) {
      const value = ctx.query.get(key);
      if (value !== null) {
        conditions.push(`${key} = ?`);
        params.push(value);
      }
    }
    const rows = db.all<MessageRow>(`SELECT * FROM messages WHERE ${conditions.join(' AND ')} ORDER BY created_at DESC LIMIT ?`, ...params, osapiMaxLimit);
    return { status: 200, body: { messages: rows.map((m) => renderMessage(ctx, m)) } };
  });
  router.get('/v3/messages/:id', (ctx) => {
    requireMessages(ctx);
    return { status: 200, body: { message: renderMessage(ctx, message(ctx)) } };
  });
  router.delete('/v3/messages/:id', (ctx) => {
    requireMessages(ctx);
    service.requireWriter(auth(ctx), 'delete_message');
    db.run('DELETE FROM messages WHERE id = ?', message(ctx).id);
    return { status: 204 };
  });
  router.get('/v3/extensions', () => ({ status: 200, body: { extensions: [] } }));

  // ---- helpers ----
  /** Sort keys one list call may give (Cinder's lists have fewer sortable columns than this). */
  const sortKeysMax = 8;
  function listQuery(ctx: RequestContext, allowedFilters: string[]): ListQuery {
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

  function scopeToProject(ctx: RequestContext, query: ListQuery): void {
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

  function nextLink(ctx: RequestContext, lastId: string, limit: number) {
    const params = new URLSearchParams(ctx.query);
    params.set('marker', lastId);
    params.set('limit', String(limit));
    const path = ctx.pathProjectId ? `/v3/${ctx.pathProjectId}${ctx.path.slice(3)}` : ctx.path;
    return { href: `${ctx.serviceUrl}${path}?${params.toString()}`, rel: 'next' };
  }

  for (const extend of extensions) extend(router, { render, listQuery, scopeToProject, nextLink });

  return {
    prefix: '/volume',
    router,
    faultStyle: 'openstack',
    rewritePath(path) {
      const m = /^\/v3\/([^/]+)(\/.*)?$/.exec(path);
      if (!m || topLevelCollections.has(m[1]!)) return { path, pathProjectId: null };
      return { path: `/v3${m[2] ?? ''}`, pathProjectId: m[1]! };
    },
    baseHeaders: () => ({ 'OpenStack-API-Version': 'volume 3.0', Vary: 'OpenStack-API-Version' }),
    prepare(ctx) {
      // The version list at the root is how clients discover the range: like Cinder, it ignores the
      // microversion header (cinderclient asks with its own maximum, e.g. 3.70, before negotiating).
      if (ctx.path === '/') return undefined;
      ctx.microversion = parseMicroversion(ctx.headers['openstack-api-version'] ?? ctx.headers['openstack-volume-microversion']);
      if (ctx.pathProjectId && ctx.auth && ctx.auth.projectId !== ctx.pathProjectId) {
        throw errors.badRequest(`Malformed request URL: the URL's project_id '${ctx.pathProjectId}' does not match the token's project '${ctx.auth.projectId}'. Use the endpoint from the catalog of a token scoped to that project.`);
      }
      return { 'OpenStack-API-Version': `volume 3.${ctx.microversion}` };
    },
  };
}

/** Parses `volume 3.x` / `volume latest`; other services' entries in the header are ignored. */
export function parseMicroversion(header: string | string[] | undefined): number {
  if (header === undefined) return microversionMin;
  const values = (Array.isArray(header) ? header.join(',') : header).split(',').map((s) => s.trim());
  const entry = values.find((v) => /^volume\s/i.test(v)) ?? (values.length === 1 && /^\d/.test(values[0]!) ? `volume ${values[0]}` : undefined);
  if (!entry) return microversionMin;
  const version = entry.replace(/^volume\s+/i, '').trim();
  if (version.toLowerCase() === 'latest') return microversionMax;
  const m = /^(\d+)\.(\d+)$/.exec(version);
  if (!m) throw errors.badRequest(`Invalid OpenStack-API-Version '${entry}': expected 'volume 3.N' or 'volume latest'.`);
  const minor = Number(m[2]);
  if (m[1] !== '3' || minor < microversionMin || minor > microversionMax) {
    throw errors.versionNotSupported(version, `3.${microversionMin}`, `3.${microversionMax}`);
  }
  return minor;
}

/** Parses a dict filter as cinderclient sends it: Python's repr (`{'k': 'v'}`) or JSON. */
function parseDictParam(value: string | null, name: string): Record<string, string> {
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

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}

