/**
 * Manage and unmanage (Cinder's os-volume-manage, manageable_volumes 3.8+,
 * os-snapshot-manage, manageable_snapshots 3.8+; os-unmanage is a volume
 * action in actions.ts and a snapshot action in snapshots.ts): adopt an RBD image or a file
 * of a local backend as a volume without copying, and list what could be
 * adopted on a host this process runs. Administrators by default.
 */
import { Type } from '@sinclair/typebox';
import { errors, PumiceError } from '../../errors.ts';
import { route, type AnyRouteSpec } from '../../http/declare.ts';
import type { RequestContext } from '../../http/router.ts';
import { checkMetadataKeys } from '../../http/validate.ts';
import { cinderTime } from '../../db/db.ts';
import { hasManageExisting } from '../drivers/driver.ts';
import { auth, microversionMax, type VolumeRouteDeps } from './common.ts';
import { volumeResponses } from './schemas.ts';
import { volumeRenderer } from './volumes.ts';

const closed = { additionalProperties: false } as const;
const Text = (max: number) => Type.String({ maxLength: max });
const OptionalNullable = (max: number) => Type.Optional(Type.Union([Text(max), Type.Null()]));

const ManageBody = Type.Object({
  volume: Type.Object({
    host: Type.String({ minLength: 1, maxLength: 255 }),
    ref: Type.Object({ 'source-name': Type.String({ minLength: 1, maxLength: 255 }) }, { additionalProperties: true }),
    name: OptionalNullable(255),
    description: OptionalNullable(255),
    volume_type: OptionalNullable(255),
    availability_zone: OptionalNullable(255),
    bootable: Type.Optional(Type.Boolean()),
    metadata: Type.Optional(Type.Union([Type.Record(Type.String({ minLength: 1, maxLength: 255 }), Text(255)), Type.Null()])),
  }, closed),
}, closed);

const ListQuery = Type.Object({
  host: Type.String({ minLength: 1, maxLength: 255 }),
  limit: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000 })),
  offset: Type.Optional(Type.Integer({ minimum: 0 })),
  marker: Type.Optional(Type.String({ maxLength: 255 })),
  sort_key: Type.Optional(Type.Union([Type.Literal('size'), Type.Literal('reference')])),
  sort_dir: Type.Optional(Type.Union([Type.Literal('asc'), Type.Literal('desc')])),
}, closed);

const Reference = Type.Object({ 'source-name': Type.String() }, closed);
const Summary = Type.Object({ reference: Reference, size: Type.Integer(), safe_to_manage: Type.Boolean() }, closed);
const Detail = Type.Object({
  reference: Reference, size: Type.Integer(), safe_to_manage: Type.Boolean(),
  reason_not_safe: Type.Union([Type.String(), Type.Null()]), cinder_id: Type.Union([Type.String(), Type.Null()]), extra_info: Type.Union([Type.String(), Type.Null()]),
}, closed);

const gib = 1024 ** 3;

const SnapshotManageBody = Type.Object({
  snapshot: Type.Object({
    volume_id: Type.String({ format: 'uuid' }),
    ref: Type.Object({ 'source-name': Type.String({ minLength: 1, maxLength: 255 }) }, { additionalProperties: true }),
    name: OptionalNullable(255),
    description: OptionalNullable(255),
    metadata: Type.Optional(Type.Union([Type.Record(Type.String({ minLength: 1, maxLength: 255 }), Text(255)), Type.Null()])),
  }, closed),
}, closed);

/** Cinder's manage_snapshot answer (tempest's manage_snapshot schema). */
const ManagedSnapshot = Type.Object({
  snapshot: Type.Object({
    id: Type.String({ format: 'uuid' }), status: Type.String(), size: Type.Integer(), metadata: Type.Record(Type.String(), Type.String()),
    name: Type.Union([Type.String(), Type.Null()]), volume_id: Type.String({ format: 'uuid' }), created_at: Type.String(),
    description: Type.Union([Type.String(), Type.Null()]), updated_at: Type.Union([Type.String(), Type.Null()]),
  }, closed),
}, closed);

const SourceReference = Type.Object({ 'source-name': Type.String() }, closed);
const SnapshotSummary = Type.Object({ reference: Reference, size: Type.Integer(), safe_to_manage: Type.Boolean(), source_reference: SourceReference }, closed);
const SnapshotDetail = Type.Object({
  reference: Reference, size: Type.Integer(), safe_to_manage: Type.Boolean(), source_reference: SourceReference,
  reason_not_safe: Type.Union([Type.String(), Type.Null()]), cinder_id: Type.Union([Type.String(), Type.Null()]), extra_info: Type.Union([Type.String(), Type.Null()]),
}, closed);

/** The paging query of GET /manageable_volumes and /manageable_snapshots (Cinder's). */
interface ManageableQuery { host: string; limit?: number; offset?: number; marker?: string; sort_key?: 'size' | 'reference'; sort_dir?: 'asc' | 'desc' }

/**
 * One page of manageable objects, as Cinder pages them: sorted by size or name (`sort_dir`, default
 * descending; ties by `tiebreak`), after the object named `marker` (none when it is not listed),
 * then `offset` and `limit`.
 */
export function pageManageable<T extends { name: string; sizeGiB: number }>(objects: T[], query: Omit<ManageableQuery, 'host'>, tiebreak: (o: T) => string): T[] {
  const dir = query.sort_dir === 'asc' ? 1 : -1;
  let page = [...objects].sort((a, b) => (query.sort_key === 'size' ? a.sizeGiB - b.sizeGiB : a.name.localeCompare(b.name)) * dir || tiebreak(a).localeCompare(tiebreak(b)));
  if (query.marker !== undefined) {
    const at = page.findIndex((o) => o.name === query.marker);
    page = at >= 0 ? page.slice(at + 1) : [];
  }
  const offset = query.offset ?? 0;
  return page.slice(offset, query.limit !== undefined ? offset + query.limit : undefined);
}

export function manageRoutes(deps: VolumeRouteDeps): AnyRouteSpec[] {
  const render = volumeRenderer(deps);
  const list = (detail: boolean) => async (ctx: RequestContext & { queryParams: Record<string, unknown> }) => {
    const q = ctx.queryParams as unknown as ManageableQuery;
    const state = deps.service.backendOfHost(q.host);
    if (!hasManageExisting(state.driver)) throw errors.badRequest(`Invalid host '${q.host}': backend [${state.config.section}] cannot manage existing storage.`);
    requireUp(q.host, state);
    // Names a creating volume is adopting are not offered twice.
    const adopting = new Set(deps.db.all<{ managed_from: string }>("SELECT managed_from FROM volumes WHERE backend = ? AND status = 'creating' AND managed_from IS NOT NULL", state.config.section).map((r) => r.managed_from));
    const objects = (await state.driver.listManageable()).map((o) => ({
      name: o.name, sizeGiB: Math.max(1, Math.ceil(o.sizeBytes / gib)), safe: !adopting.has(o.name),
    }));
    return {
      status: 200,
      body: {
        'manageable-volumes': pageManageable(objects, q, (o) => o.name).map((o) => ({
          reference: { 'source-name': o.name }, size: o.sizeGiB, safe_to_manage: o.safe,
          ...(detail ? { reason_not_safe: o.safe ? null : 'Volume already being managed', cinder_id: null, extra_info: null } : {}),
        })),
      },
    };
  };
  const listSnapshots = (detail: boolean) => async (ctx: RequestContext & { queryParams: Record<string, unknown> }) => {
    const q = ctx.queryParams as unknown as ManageableQuery;
    const objects = await deps.service.manageableSnapshots(requireUp(q.host, deps.service.backendOfHost(q.host)));
    return {
      status: 200,
      body: {
        'manageable-snapshots': pageManageable(objects, q, (o) => o.volumeId).map((o) => ({
          reference: { 'source-name': o.name }, size: o.sizeGiB, safe_to_manage: true, source_reference: { 'source-name': `volume-${o.volumeId}` },
          ...(detail ? { reason_not_safe: null, cinder_id: null, extra_info: null } : {}),
        })),
      },
    };
  };
  /** `state`, the backend serving `host`; a 400 when it is down. */
  const requireUp = <S extends { up: boolean; downReason?: string | null; config: { section: string } }>(host: string, state: S): S => {
    if (!state.up) throw errors.badRequest(`Invalid host '${host}': backend [${state.config.section}] is down (${state.downReason ?? 'no reason recorded'}); nothing can be listed until it is up.`);
    return state;
  };
  return [
    route({
      method: 'POST', path: '/v3/os-snapshot-manage', policy: 'snapshot_extension:snapshot_manage', body: SnapshotManageBody,
      summary: "Adopt an existing RBD snapshot of a volume's image as a snapshot (renamed, no copy)",
      responses: { 202: ManagedSnapshot },
      async handler(ctx) {
        const s = ctx.body.snapshot;
        if (s.metadata) checkMetadataKeys(s.metadata);
        const row = await deps.service.manageSnapshot(auth(ctx), {
          volumeId: s.volume_id, sourceName: s.ref['source-name'], name: s.name ?? null, description: s.description ?? null, metadata: s.metadata ?? {},
        });
        return {
          status: 202,
          body: {
            snapshot: {
              id: row.id, status: row.status, size: row.size_gib, metadata: JSON.parse(row.metadata) as Record<string, string>, name: row.name,
              volume_id: row.volume_id, created_at: cinderTime(row.created_at), description: row.description, updated_at: row.updated_at ? cinderTime(row.updated_at) : null,
            },
          },
        };
      },
    }),
    route({
      method: 'GET', path: '/v3/manageable_snapshots', policy: 'snapshot_extension:list_manageable', versions: { min: 8, max: microversionMax }, query: ListQuery,
      responses: { 200: Type.Object({ 'manageable-snapshots': Type.Array(SnapshotSummary) }, closed) },
      handler: listSnapshots(false),
    }),
    route({
      method: 'GET', path: '/v3/manageable_snapshots/detail', policy: 'snapshot_extension:list_manageable', versions: { min: 8, max: microversionMax }, query: ListQuery,
      responses: { 200: Type.Object({ 'manageable-snapshots': Type.Array(SnapshotDetail) }, closed) },
      handler: listSnapshots(true),
    }),
    route({
      method: 'POST', path: '/v3/os-volume-manage', policy: 'volume_extension:volume_manage', body: ManageBody,
      summary: 'Adopt an existing RBD image or local file as a volume (no copy)',
      responses: { 202: volumeResponses('detail') },
      async handler(ctx) {
        const v = ctx.body.volume;
        if (v.metadata) checkMetadataKeys(v.metadata);
        // Checked before a volume row exists: a name that is not there is a 404, not a volume in error.
        const state = deps.service.backendOfHost(v.host);
        if (hasManageExisting(state.driver) && state.up && !(await state.driver.listManageable()).some((o) => o.name === v.ref['source-name'])) {
          throw new PumiceError('NotFound', `Manage existing volume failed: '${v.ref['source-name'].slice(0, 255)}' is not a manageable object of ${v.host} (not there, or already a volume). List them with GET /manageable_volumes?host=${v.host} (microversion 3.8+).`);
        }
        const row = deps.service.manageVolume(auth(ctx), {
          host: v.host, sourceName: v.ref['source-name'], name: v.name ?? null, description: v.description ?? null,
          volumeType: v.volume_type ?? null, availabilityZone: v.availability_zone ?? null, bootable: v.bootable ?? false, metadata: v.metadata ?? {},
        });
        return { status: 202, body: { volume: render(ctx, [row], 'detail')[0] } };
      },
    }),
    route({
      method: 'GET', path: '/v3/manageable_volumes', policy: 'volume_extension:list_manageable', versions: { min: 8, max: microversionMax }, query: ListQuery,
      responses: { 200: Type.Object({ 'manageable-volumes': Type.Array(Summary) }, closed) },
      handler: list(false),
    }),
    route({
      method: 'GET', path: '/v3/manageable_volumes/detail', policy: 'volume_extension:list_manageable', versions: { min: 8, max: microversionMax }, query: ListQuery,
      responses: { 200: Type.Object({ 'manageable-volumes': Type.Array(Detail) }, closed) },
      handler: list(true),
    }),
  ];
}
