/**
 * Routes of /volumes: list (summary and detail), summary, create, show,
 * update, delete. Rules live in `../volumes.ts`.
 */
import { Type } from '@sinclair/typebox';
import type { SqlValue } from '../../db/db.ts';
import { errors, PumiceError } from '../../errors.ts';
import { route, type AnyRouteSpec } from '../../http/declare.ts';
import type { RequestContext } from '../../http/router.ts';
import { checkMetadataKeys, metadataSchema, queryBool, validate, type Schema } from '../../http/validate.ts';
import { ImageServiceError, type ImageRecord } from '../images.ts';
import { renderVolume, renderVolumeSummary, type VolumeRow } from '../records.ts';
import type { ListQuery } from '../volumes.ts';
import { auth, collectionLinks, declaredBody, listQuery, microversionMax, parseDictParam, renderOptions, scopeToProject, type Ctx, type VolumeRouteDeps } from './common.ts';
import { volumeListResponses, volumeResponses, volumeSummaryResponses } from './schemas.ts';

export const sizeSchema = (max: number): Schema => ({ type: 'integer', min: 1, max, allowString: true });
export const nameSchema: Schema = { type: 'string', maxLength: 255, nullable: true };
export const descriptionSchema: Schema = { type: 'string', maxLength: 65535, nullable: true };
const uuidRef: Schema = { type: 'uuid', nullable: true };
/** Largest volume one request may ask for: 1 PiB; beyond it is a typo, not a plan. */
export const volumeSizeGiBMax = 1024 * 1024;

export const VolumeIdParams = Type.Object({ id: Type.String({ minLength: 1 }) });

const volumeSortColumns: Record<string, string> = {
  created_at: 'created_at', updated_at: "COALESCE(updated_at, '')", id: 'id', name: "COALESCE(name, '')", display_name: "COALESCE(name, '')",
  status: 'status', size: 'size_gib', availability_zone: 'availability_zone', bootable: 'bootable',
};

const listFilters = ['name', 'status', 'availability_zone', 'bootable', 'metadata', 'volume_type', 'project_id', 'display_name', 'display_description', 'description', 'created_at', 'updated_at', 'group_id', 'glance_metadata', 'migration_status', 'host', 'user_id'];

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

const updateVolumeSchema: Schema = {
  type: 'object', required: ['volume'],
  properties: { volume: { type: 'object', properties: { name: nameSchema, display_name: nameSchema, description: descriptionSchema, display_description: descriptionSchema, metadata: metadataSchema } } },
};

const DeleteQuery = Type.Object({ cascade: Type.Optional(Type.String()), force: Type.Optional(Type.String()) }, { additionalProperties: true });

/** Volume bodies: 'detail' for show and list detail, 'create' for the answers of writes (no tenant/host/migration attributes, no image metadata). */
export function volumeRenderer(deps: VolumeRouteDeps) {
  const { service } = deps;
  return (ctx: RequestContext, rows: VolumeRow[], view: 'detail' | 'create' = 'detail') => {
    const types = service.typeNames(rows.map((r) => r.volume_type_id));
    const attachmentsByVolume = service.attachmentsOf(rows.map((r) => r.id));
    const options = renderOptions(ctx);
    return rows.map((r) => renderVolume(
      options, r, r.volume_type_id ? types.get(r.volume_type_id) ?? null : null, attachmentsByVolume.get(r.id) ?? [],
      r.image_metadata ? (JSON.parse(r.image_metadata) as Record<string, string>) : null, view,
    ));
  };
}

export function volumeRoutes(deps: VolumeRouteDeps): AnyRouteSpec[] {
  const { service, manager, osapiMaxLimit } = deps;
  const render = volumeRenderer(deps);

  const list = (detail: boolean) => (ctx: Ctx) => {
    const query = listQuery(ctx, osapiMaxLimit, listFilters);
    const q = ctx.query;
    const add = (sql: string, value: SqlValue) => {
      query.conditions.push(sql);
      query.params.push(value);
    };
    for (const [param, column] of [['name', 'name'], ['display_name', 'name'], ['status', 'status'], ['availability_zone', 'availability_zone'], ['description', 'description'], ['migration_status', 'migration_status'], ['user_id', 'user_id'], ['group_id', 'group_id']] as const) {
      const value = q.get(param);
      if (value !== null) add(`${column} = ?`, value);
    }
    const bootable = queryBool(q.get('bootable'), 'bootable');
    if (bootable !== undefined) add('bootable = ?', bootable ? 1 : 0);
    const volumeType = q.get('volume_type');
    if (volumeType !== null) add('volume_type_id = ?', service.typeIdForFilter(volumeType));
    if (q.get('host') !== null && ctx.can('volume_extension:volume_host_attribute')) add('host = ?', q.get('host')!);
    for (const [key, value] of Object.entries(parseDictParam(q.get('metadata'), 'metadata'))) {
      add('EXISTS (SELECT 1 FROM json_each(volumes.metadata) m WHERE m.key = ? AND m.value = ?)', key);
      query.params.push(value);
    }
    scopeToProject(ctx, service, query);
    const page = service.listPage<VolumeRow>('volumes', query, volumeSortColumns);
    const body: Record<string, unknown> = {
      volumes: detail ? render(ctx, page.rows) : page.rows.map((r) => renderVolumeSummary(renderOptions(ctx), r)),
    };
    const links = collectionLinks(ctx, page.rows, query.limit);
    if (links) body['volumes_links'] = links;
    if (page.count !== undefined) body['count'] = page.count;
    return { status: 200, body };
  };

  /**
   * Asks the image service for the image with the caller's token, so its
   * visibility rules apply. Unreachable is not the caller's fault: the volume
   * is then recorded in error with the reason (Cinder's behaviour), not refused.
   */
  const lookUpImage = async (ctx: Ctx, imageRef: string): Promise<{ image: ImageRecord | null; failure: string | null }> => {
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

  return [
    route({
      method: 'GET', path: '/v3/volumes', policy: 'volume:get_all', summary: 'List volumes (id, name, links)',
      responses: { 200: volumeListResponses(false) },
      handler: list(false),
    }),
    route({
      method: 'GET', path: '/v3/volumes/detail', policy: 'volume:get_all', summary: 'List volumes with details',
      responses: { 200: volumeListResponses(true) },
      handler: list(true),
    }),
    route({
      method: 'GET', path: '/v3/volumes/summary', policy: 'volume:get_volume_summary', versions: { min: 12, max: microversionMax }, summary: 'Count and total size of the volumes (3.12+)',
      responses: { 200: volumeSummaryResponses },
      handler(ctx) {
        const query: ListQuery = { conditions: [], params: [], sort: [], limit: 0, marker: null, withCount: false };
        scopeToProject(ctx, service, query);
        const { count, sizeGiB, metadata } = service.summary(query);
        return { status: 200, body: { 'volume-summary': { total_size: sizeGiB, total_count: count, ...(ctx.microversion >= 36 ? { metadata } : {}) } } };
      },
    }),
    route({
      method: 'POST', path: '/v3/volumes', policy: 'volume:create', summary: 'Create a volume (empty, or from an image, snapshot, volume or backup)',
      body: declaredBody(createVolumeSchema),
      responses: { 202: volumeResponses('create') },
      async handler(ctx) {
        const { volume } = validate<{ volume: Record<string, unknown> }>(createVolumeSchema, ctx.body ?? null);
        if (volume['metadata']) checkMetadataKeys(volume['metadata'] as Record<string, string>);
        const imageRef = volume['imageRef'] ? String(volume['imageRef']) : null;
        if (imageRef && (volume['source_volid'] || volume['snapshot_id'] || volume['backup_id'])) {
          throw errors.badRequest('Invalid input: give only one source for the volume: imageRef, source_volid, snapshot_id or backup_id.');
        }
        if ([volume['source_volid'], volume['snapshot_id'], volume['backup_id']].filter(Boolean).length > 1) {
          throw errors.badRequest('Invalid input: give only one source for the volume: source_volid, snapshot_id or backup_id.');
        }
        if (imageRef) ctx.authorize('volume:create_from_image');
        if (volume['multiattach']) throw errors.badRequest('Multiattach volumes are not supported by the configured backends.');
        // Consistency groups do not exist (404 as in Cinder); a volume joins a generic group after it is made.
        if (volume['consistencygroup_id']) throw new PumiceError('NotFound', `Consistency group ${String(volume['consistencygroup_id'])} could not be found (Pumice has generic volume groups only).`);
        if (volume['group_id']) {
          const groupId = String(volume['group_id']);
          const group = deps.db.get<{ project_id: string }>('SELECT project_id FROM volume_groups WHERE id = ?', groupId);
          if (!group || (!auth(ctx).isAdmin && group.project_id !== service.projectOf(auth(ctx)))) throw new PumiceError('NotFound', `Group ${groupId} could not be found.`);
          throw errors.badRequest(`Creating a volume straight into group ${groupId} is not supported: create the volume, then add it to the group (PUT /groups/{id} with add_volumes).`);
        }
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
        return { status: 202, body: { volume: render(ctx, [row], 'create')[0] } };
      },
    }),
    route({
      method: 'GET', path: '/v3/volumes/:id', policy: 'volume:get', params: VolumeIdParams, summary: 'Show a volume',
      responses: { 200: volumeResponses('detail') },
      handler(ctx) {
        const row = service.volume(auth(ctx), ctx.params['id']!);
        return { status: 200, body: { volume: render(ctx, [row])[0] } };
      },
    }),
    route({
      method: 'PUT', path: '/v3/volumes/:id', policy: 'volume:update', params: VolumeIdParams, summary: 'Rename, describe or replace the metadata of a volume',
      body: declaredBody(updateVolumeSchema),
      responses: { 200: volumeResponses('create') },
      handler(ctx) {
        const { volume } = validate<{ volume: { name?: string | null; display_name?: string | null; description?: string | null; display_description?: string | null; metadata?: Record<string, string> } }>(updateVolumeSchema, ctx.body ?? null);
        if (Object.keys(volume).length === 0) throw errors.badRequest("Nothing to update: give at least one of 'name', 'description' or 'metadata'.");
        if (volume.metadata) checkMetadataKeys(volume.metadata);
        const row = service.updateVolume(auth(ctx), ctx.params['id']!, {
          name: volume.name !== undefined ? volume.name : volume.display_name,
          description: volume.description !== undefined ? volume.description : volume.display_description,
          metadata: volume.metadata,
        });
        return { status: 200, body: { volume: render(ctx, [row], 'create')[0] } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/volumes/:id', policy: 'volume:delete', params: VolumeIdParams, query: DeleteQuery, summary: 'Delete a volume (cascade: with its snapshots; force: admin)',
      responses: { 202: null },
      handler(ctx) {
        const cascade = queryBool(ctx.query.get('cascade'), 'cascade') ?? false;
        const force = queryBool(ctx.query.get('force'), 'force') ?? false;
        if (force) ctx.authorize('volume:force_delete');
        service.deleteVolume(auth(ctx), ctx.params['id']!, { cascade, force });
        return { status: 202 };
      },
    }),
  ];
}
