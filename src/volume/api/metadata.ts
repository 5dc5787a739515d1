/**
 * Metadata of volumes and snapshots: /volumes/{id}/metadata[/{key}] and
 * /snapshots/{id}/metadata[/{key}], with Cinder's rule names of each.
 */
import { Type } from '@sinclair/typebox';
import { errors } from '../../errors.ts';
import { route, type AnyRouteSpec } from '../../http/declare.ts';
import type { AuthContext } from '../../http/router.ts';
import { checkMetadataKeys, metadataSchema, validate, type Schema } from '../../http/validate.ts';
import { auth, declaredBody, type VolumeRouteDeps } from './common.ts';
import { MetaBody, MetadataBody } from './schemas.ts';

const metadataBody: Schema = { type: 'object', required: ['metadata'], properties: { metadata: metadataSchema } };
const metaItemBody: Schema = { type: 'object', required: ['meta'], properties: { meta: { ...metadataSchema, maxProperties: 1 } as Schema } };
const Params = Type.Object({ id: Type.String({ minLength: 1 }) });
const KeyParams = Type.Object({ id: Type.String({ minLength: 1 }), key: Type.String({ minLength: 1 }) });

interface MetadataOwner {
  base: string;
  rules: { get: string; create: string; update: string; delete: string };
  get(a: AuthContext, id: string): { metadata: string };
  set(a: AuthContext, id: string, metadata: Record<string, string>, replace: boolean): Record<string, string>;
  remove(a: AuthContext, id: string, key: string): void;
}

function metadataRoutesOf(owner: MetadataOwner): AnyRouteSpec[] {
  const { base, rules } = owner;
  return [
    route({
      method: 'GET', path: `${base}/:id/metadata`, policy: rules.get, params: Params,
      responses: { 200: MetadataBody },
      handler: (ctx) => ({ status: 200, body: { metadata: JSON.parse(owner.get(auth(ctx), ctx.params['id']!).metadata) as object } }),
    }),
    route({
      method: 'POST', path: `${base}/:id/metadata`, policy: rules.create, params: Params, body: declaredBody(metadataBody), summary: 'Add or replace the given keys',
      responses: { 200: MetadataBody },
      handler(ctx) {
        const { metadata } = validate<{ metadata: Record<string, string> }>(metadataBody, ctx.body ?? null);
        checkMetadataKeys(metadata);
        return { status: 200, body: { metadata: owner.set(auth(ctx), ctx.params['id']!, metadata, false) } };
      },
    }),
    route({
      method: 'PUT', path: `${base}/:id/metadata`, policy: rules.update, params: Params, body: declaredBody(metadataBody), summary: 'Replace all metadata',
      responses: { 200: MetadataBody },
      handler(ctx) {
        const { metadata } = validate<{ metadata: Record<string, string> }>(metadataBody, ctx.body ?? null);
        checkMetadataKeys(metadata);
        return { status: 200, body: { metadata: owner.set(auth(ctx), ctx.params['id']!, metadata, true) } };
      },
    }),
    route({
      method: 'GET', path: `${base}/:id/metadata/:key`, policy: rules.get, params: KeyParams,
      responses: { 200: MetaBody },
      handler(ctx) {
        const metadata = JSON.parse(owner.get(auth(ctx), ctx.params['id']!).metadata) as Record<string, string>;
        const key = ctx.params['key']!;
        // hasOwn, not `in`: a key named 'constructor' or 'toString' is not in the metadata.
        if (!Object.hasOwn(metadata, key)) throw errors.notFound('Metadata key', `'${key}'`);
        return { status: 200, body: { meta: { [key]: metadata[key] } } };
      },
    }),
    route({
      method: 'PUT', path: `${base}/:id/metadata/:key`, policy: rules.update, params: KeyParams, body: declaredBody(metaItemBody),
      responses: { 200: MetaBody },
      handler(ctx) {
        const { meta } = validate<{ meta: Record<string, string> }>(metaItemBody, ctx.body ?? null);
        const key = ctx.params['key']!;
        checkMetadataKeys(meta);
        if (!Object.hasOwn(meta, key)) throw errors.badRequest(`Request body and URI mismatch: the body must set key '${key}'.`);
        owner.set(auth(ctx), ctx.params['id']!, { [key]: meta[key]! }, false);
        return { status: 200, body: { meta: { [key]: meta[key] } } };
      },
    }),
    route({
      method: 'DELETE', path: `${base}/:id/metadata/:key`, policy: rules.delete, params: KeyParams,
      responses: { 200: null },
      handler(ctx) {
        owner.remove(auth(ctx), ctx.params['id']!, ctx.params['key']!);
        return { status: 200 };
      },
    }),
  ];
}

export function metadataRoutes(deps: VolumeRouteDeps): AnyRouteSpec[] {
  const { service } = deps;
  return [
    ...metadataRoutesOf({
      base: '/v3/volumes',
      rules: { get: 'volume:get_volume_metadata', create: 'volume:create_volume_metadata', update: 'volume:update_volume_metadata', delete: 'volume:delete_volume_metadata' },
      get: (a, id) => service.volume(a, id),
      set: (a, id, m, r) => service.setMetadata(a, id, m, r),
      remove: (a, id, k) => service.deleteMetadataKey(a, id, k),
    }),
    ...metadataRoutesOf({
      base: '/v3/snapshots',
      rules: { get: 'volume:get_snapshot_metadata', create: 'volume:update_snapshot_metadata', update: 'volume:update_snapshot_metadata', delete: 'volume:delete_snapshot_metadata' },
      get: (a, id) => service.snapshot(a, id),
      set: (a, id, m, r) => service.setSnapshotMetadata(a, id, m, r),
      remove: (a, id, k) => service.deleteSnapshotMetadataKey(a, id, k),
    }),
  ];
}
