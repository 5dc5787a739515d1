/**
 * POST /volumes/{id}/action: one route, one body key naming the action. The
 * route is declared with every action's argument schema; each action's Cinder
 * policy rule (`volumeActionPolicies`) is checked before it runs.
 */
import { Type } from '@sinclair/typebox';
import { errors, PumiceError } from '../../errors.ts';
import { route, type AnyRouteSpec } from '../../http/declare.ts';
import { checkMetadataKeys, metadataSchema, validate, type Schema } from '../../http/validate.ts';
import { ImageServiceError, type ImageRecord } from '../images.ts';
import { auth, declaredBody, type Ctx, type VolumeRouteDeps } from './common.ts';
import { ConnectionInfoBody, MetadataBody, uploadImageResponses } from './schemas.ts';
import { sizeSchema, VolumeIdParams, volumeSizeGiBMax } from './volumes.ts';

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
  'os-unmanage': { type: 'any' },
  'os-retype': { type: 'object', required: ['new_type'], properties: { new_type: { type: 'string', minLength: 1, maxLength: 255 }, migration_policy: { type: 'string', enum: ['never', 'on-demand'], nullable: true } } },
  'os-migrate_volume': {
    type: 'object', required: ['host'],
    properties: { host: { type: 'string', minLength: 1, maxLength: 255 }, force_host_copy: { type: 'boolean', allowString: true }, lock_volume: { type: 'boolean', allowString: true } },
  },
  'os-reimage': { type: 'object', required: ['image_id'], properties: { image_id: { type: 'uuid' }, reimage_reserved: { type: 'boolean', allowString: true } } },
};

/** The Cinder policy rule of each volume action. */
export const volumeActionPolicies: Record<string, string> = {
  'os-extend': 'volume:extend',
  'os-set_bootable': 'volume:set_bootable',
  'os-update_readonly_flag': 'volume:update_readonly_flag',
  'os-reset_status': 'volume_extension:volume_admin_actions:reset_status',
  'os-force_delete': 'volume_extension:volume_admin_actions:force_delete',
  'os-reserve': 'volume_extension:volume_actions:reserve',
  'os-unreserve': 'volume_extension:volume_actions:unreserve',
  'os-begin_detaching': 'volume_extension:volume_actions:begin_detaching',
  'os-roll_detaching': 'volume_extension:volume_actions:roll_detaching',
  'os-initialize_connection': 'volume_extension:volume_actions:initialize_connection',
  'os-terminate_connection': 'volume_extension:volume_actions:terminate_connection',
  'os-attach': 'volume_extension:volume_actions:attach',
  'os-detach': 'volume_extension:volume_actions:detach',
  'os-force_detach': 'volume_extension:volume_admin_actions:force_detach',
  revert: 'volume:revert_to_snapshot',
  'os-volume_upload_image': 'volume_extension:volume_actions:upload_image',
  'os-set_image_metadata': 'volume_extension:volume_image_metadata:set',
  'os-unset_image_metadata': 'volume_extension:volume_image_metadata:remove',
  'os-show_image_metadata': 'volume_extension:volume_image_metadata:show',
  'os-reimage': 'volume:reimage',
  'os-unmanage': 'volume_extension:volume_unmanage',
  'os-retype': 'volume:retype',
  'os-migrate_volume': 'volume_extension:volume_admin_actions:migrate_volume',
};

/** Exactly one known action key; its argument as the action declares it. */
const ActionBody = {
  type: 'object',
  properties: Object.fromEntries(Object.entries(actionSchemas).map(([name, schema]) => [name, declaredBody(schema)])),
  additionalProperties: false,
  minProperties: 1,
  maxProperties: 1,
} as unknown as ReturnType<typeof declaredBody>;

/** Keys of volume_image_metadata that describe the old image, not properties to hand to the new one. */
const imageMetadataNotCopied = new Set(['image_id', 'image_name', 'checksum', 'container_format', 'disk_format', 'min_disk', 'min_ram', 'size', 'virtual_size', 'os_hash_algo', 'os_hash_value', 'direct_url', 'owner']);

/** Cinder's volume type extra spec naming the image store os-volume_upload_image uploads into. */
const imageStoreSpec = 'image_service:store_id';

export function volumeActionRoutes(deps: VolumeRouteDeps): AnyRouteSpec[] {
  const { service, manager, attachments } = deps;

  const uploadToImage = async (ctx: Ctx, id: string, args: Record<string, unknown>) => {
    const a = auth(ctx);
    const force = (args['force'] as boolean | undefined) ?? false;
    if (ctx.microversion < 1 && (args['visibility'] !== undefined || args['protected'] !== undefined)) {
      throw errors.badRequest("'visibility' and 'protected' need microversion 3.1 or later (OpenStack-API-Version: volume 3.1).");
    }
    // Cinder: a public image needs its own rule (administrators by default).
    if (args['visibility'] === 'public') ctx.authorize('volume_extension:volume_actions:upload_public');
    const row = service.uploadableVolume(a, id, force);
    const client = manager.images?.client;
    if (!client) throw new PumiceError('BackendUnavailable', 'This Pumice process has no image service client; uploads to images are not possible.');
    const diskFormat = (args['disk_format'] as string | undefined) ?? 'raw';
    const containerFormat = (args['container_format'] as string | undefined) ?? 'bare';
    // Cinder's image_service:store_id: the volume type names the image store uploads go to; checked before anything is made.
    const storeId = row.volume_type_id ? service.extraSpecs(row.volume_type_id)[imageStoreSpec] ?? null : null;
    if (storeId !== null) {
      let storeIds: string[];
      try {
        storeIds = await client.storeIds(a.tokenId);
      } catch (error) {
        if (!(error instanceof ImageServiceError)) throw error;
        throw new PumiceError('BackendUnavailable', `Cannot upload the volume: ${error.message}`);
      }
      if (!storeIds.includes(storeId)) {
        const typeName = service.typeNames([row.volume_type_id]).get(row.volume_type_id!) ?? row.volume_type_id;
        throw errors.badRequest(`Volume type '${typeName}' has ${imageStoreSpec} = '${storeId.slice(0, 64)}', which is not a store of the image service (its stores: ${storeIds.join(', ')}): set the extra spec to one of them (openstack volume type set --property ${imageStoreSpec}=STORE ${typeName}).`);
      }
    }
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
      // The image service beside this API would store a qcow2 (vmdk, ...) upload into this store converted
      // back to raw (rbd, image_conversion): it records the image as that conversion leaves it (disk_format raw,
      // container_format bare, original_disk_format) and the volume's raw bytes are sent once, as they are.
      const storedRaw = manager.images?.recordRawVolumeUpload?.(image.id, storeId) ?? false;
      started = service.startUpload(a, id, force, { imageId: image.id, diskFormat: storedRaw ? 'raw' : diskFormat, ...(storeId !== null ? { storeId } : {}) });
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
      volume_type: started.volume_type_id ? { id: started.volume_type_id, name: service.typeNames([started.volume_type_id]).get(started.volume_type_id) ?? null } : null,
      image_id: image.id,
      container_format: containerFormat,
      disk_format: diskFormat,
      image_name: image.name,
      ...(ctx.microversion >= 1 ? { visibility: (args['visibility'] as string | undefined) ?? 'private', protected: (args['protected'] as boolean | undefined) ?? false } : {}),
    };
  };

  return [
    route({
      method: 'POST', path: '/v3/volumes/:id/action', params: VolumeIdParams, summary: 'Volume actions (os-extend, os-attach, os-volume_upload_image, revert, ...)',
      // Each action has its own rule (volumeActionPolicies), checked in the handler before the action runs.
      policy: '@',
      body: ActionBody,
      responses: {
        // os-set_bootable, os-unset_image_metadata: no body; os-initialize_connection: connection_info; image metadata: metadata.
        200: Type.Optional(Type.Union([ConnectionInfoBody, MetadataBody])),
        202: uploadImageResponses.map((e) => ({ versions: e.versions, schema: Type.Optional(e.schema!) })),
      },
      async handler(ctx) {
        const body = ctx.body as Record<string, unknown>;
        const [action, rawArgs] = Object.entries(body)[0]!;
        const schema = actionSchemas[action]!;
        const args = validate<Record<string, unknown>>(schema, rawArgs ?? {}, action);
        ctx.authorize(volumeActionPolicies[action]!);
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
          case 'os-unmanage':
            service.unmanageVolume(a, id);
            return { status: 202 };
          case 'os-retype':
            service.retypeVolume(a, id, args['new_type'] as string, (args['migration_policy'] as 'never' | 'on-demand' | null | undefined) ?? 'never');
            return { status: 202 };
          case 'os-migrate_volume':
            // Pumice always copies through the host (force_host_copy) and always holds the volume in
            // 'maintenance' while it moves (lock_volume): a consumer writing meanwhile would lose data.
            service.migrateVolume(a, id, args['host'] as string);
            return { status: 202 };
          case 'os-reimage':
            if (ctx.microversion < 68) throw errors.notFound('Volume action', "'os-reimage' (it needs microversion 3.68 or later: OpenStack-API-Version: volume 3.68)");
            if (args['reimage_reserved'] === true) ctx.authorize('volume:reimage_reserved');
            service.volume(a, id); // a missing or another project's volume is a 404 before the refusal
            throw new PumiceError('NotImplemented', `Re-imaging a volume (os-reimage, 3.68) is not implemented by Pumice: it cannot rewrite an existing volume from an image yet. Create a new volume from image ${String(args['image_id'])} (imageRef) and use it instead.`);
          case 'revert':
            if (ctx.microversion < 40) throw errors.notFound('Volume action', "'revert' (it needs microversion 3.40 or later: OpenStack-API-Version: volume 3.40)");
            service.revertToSnapshot(a, id, args['snapshot_id'] as string);
            return { status: 202 };
        }
        throw errors.badRequest(`Invalid volume action '${action}'.`);
      },
    }),
  ];
}
