/**
 * Request and response schemas of the Image API v2 as Glance 25 (Zed)
 * serves it, from the Image API reference (docs.openstack.org/api-ref/image)
 * and Glance's own `/v2/schemas/*` documents. Response schemas are strict
 * (`additionalProperties: false`) except where Glance allows extra keys: an
 * image's additional properties, which are always strings.
 */
import { Type, type TSchema } from '@sinclair/typebox';
import { Nullable } from '../http/declare.ts';
import { containerFormats, diskFormats, limits, memberStatuses, visibilities } from './images.ts';

const closed = { additionalProperties: false } as const;
const literals = (values: readonly string[]) => Type.Union(values.map((v) => Type.Literal(v)));

export const imageStatuses = ['queued', 'saving', 'active', 'killed', 'deleted', 'uploading', 'importing', 'pending_delete', 'deactivated'] as const;

/** Glance's timestamps: to the second, with a Z. */
const Timestamp = Type.String({ pattern: '^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ$' });
const Uuid = Type.String({ pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' });

/** One image as GET /v2/images/{id} returns it. */
export const ImageEntity = Type.Object({
  id: Uuid,
  name: Nullable(Type.String({ maxLength: 255 })),
  status: literals(imageStatuses),
  visibility: literals(visibilities),
  protected: Type.Boolean(),
  os_hidden: Type.Boolean(),
  checksum: Nullable(Type.String({ maxLength: 32 })),
  os_hash_algo: Nullable(Type.String({ maxLength: 64 })),
  os_hash_value: Nullable(Type.String({ maxLength: 128 })),
  owner: Nullable(Type.String({ maxLength: 255 })),
  size: Nullable(Type.Integer({ minimum: 0 })),
  virtual_size: Nullable(Type.Integer({ minimum: 0 })),
  container_format: Nullable(literals(containerFormats)),
  disk_format: Nullable(literals(diskFormats)),
  created_at: Timestamp,
  updated_at: Timestamp,
  tags: Type.Array(Type.String({ maxLength: 255 })),
  min_ram: Type.Integer({ minimum: 0 }),
  min_disk: Type.Integer({ minimum: 0 }),
  self: Type.String({ pattern: '^/v2/images/' }),
  file: Type.String({ pattern: '^/v2/images/.*/file$' }),
  schema: Type.Literal('/v2/schemas/image'),
  // Only with show_image_direct_url / show_multiple_locations, for admins and owners.
  direct_url: Type.Optional(Type.String()),
  locations: Type.Optional(Type.Array(Type.Object({ url: Type.String(), metadata: Type.Object({ store: Type.Optional(Type.String()) }), validation_data: Type.Optional(Type.Object({})) }, closed))),
}, { additionalProperties: Type.String() });

export const ImageList = Type.Object({
  images: Type.Array(ImageEntity),
  first: Type.String({ pattern: '^/v2/images' }),
  schema: Type.Literal('/v2/schemas/images'),
  next: Type.Optional(Type.String({ pattern: '^/v2/images\\?' })),
}, closed);

export const MemberEntity = Type.Object({
  image_id: Uuid,
  member_id: Type.String(),
  status: literals(memberStatuses),
  created_at: Timestamp,
  updated_at: Timestamp,
  schema: Type.Literal('/v2/schemas/member'),
}, closed);

export const MemberList = Type.Object({ members: Type.Array(MemberEntity), schema: Type.Literal('/v2/schemas/members') }, closed);

export const VersionList = Type.Object({
  versions: Type.Array(Type.Object({
    id: Type.String({ pattern: '^v2\\.\\d+$' }),
    status: literals(['CURRENT', 'SUPPORTED', 'DEPRECATED']),
    links: Type.Array(Type.Object({ rel: Type.String(), href: Type.String() }, closed)),
  }, closed)),
}, closed);

/** A JSON-schema document as /v2/schemas/* return it: open, but with a name and properties. */
export const SchemaDocument = Type.Object({ name: Type.String(), properties: Type.Object({}), links: Type.Optional(Type.Array(Type.Object({}))) });

export const StoreList = Type.Object({
  stores: Type.Array(Type.Object({ id: Type.String(), description: Type.Optional(Type.String()), default: Type.Optional(Type.Boolean()) }, closed)),
}, closed);

/** GET /v2/info/stores/detail: each store's type and its backend properties (pool, chunk_size, data_dir). */
export const StoreDetailList = Type.Object({
  stores: Type.Array(Type.Object({
    id: Type.String(), description: Type.Optional(Type.String()), default: Type.Optional(Type.Boolean()),
    type: Type.String(), properties: Type.Record(Type.String(), Type.Unknown()),
  }, closed)),
}, closed);

export const ImportInfo = Type.Object({
  'import-methods': Type.Object({ description: Type.String(), type: Type.Literal('array'), value: Type.Array(Type.String()) }, closed),
}, closed);

// ---- requests ----

const Int32 = Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1 });

/**
 * POST /v2/images: core attributes typed here; other keys are image
 * properties, whose names (read-only, reserved: 403) and string values the
 * image service checks, as Glance does after its schema.
 */
export const ImageCreateBody = Type.Object({
  id: Type.Optional(Type.String()),
  name: Type.Optional(Nullable(Type.String({ maxLength: limits.nameLengthMax }))),
  visibility: Type.Optional(literals(visibilities)),
  protected: Type.Optional(Type.Boolean()),
  os_hidden: Type.Optional(Type.Boolean()),
  disk_format: Type.Optional(Nullable(literals(diskFormats))),
  container_format: Type.Optional(Nullable(literals(containerFormats))),
  min_disk: Type.Optional(Int32),
  min_ram: Type.Optional(Int32),
  tags: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 255 }), { maxItems: limits.tagsMax })),
  owner: Type.Optional(Nullable(Type.String({ maxLength: 255 }))),
}, { additionalProperties: true });

/** PATCH bodies: a list of operations; their form depends on the media type (see api.ts). */
export const PatchBody = Type.Array(Type.Object({}, { additionalProperties: true }), { maxItems: 1000 });

/** application/openstack-images-v2.1-json-patch: RFC 6902's form. */
export const PatchOpRfc6902 = Type.Object({
  op: literals(['add', 'replace', 'remove']),
  path: Type.String({ pattern: '^/[^/]+$' }),
  value: Type.Optional(Type.Unknown()),
}, closed);

/** application/openstack-images-v2.0-json-patch: JSON-patch draft 4, `{"replace": "/name", "value": ...}`. */
export const PatchOpDraft4 = Type.Union([
  Type.Object({ add: Type.String({ pattern: '^/[^/]+$' }), value: Type.Unknown() }, closed),
  Type.Object({ replace: Type.String({ pattern: '^/[^/]+$' }), value: Type.Unknown() }, closed),
  Type.Object({ remove: Type.String({ pattern: '^/[^/]+$' }) }, closed),
]);

export const MemberCreateBody = Type.Object({ member: Type.String({ minLength: 1, maxLength: 255 }) }, closed);
/** openstacksdk sends the member's id along with the new status; Glance ignores it, so do we. */
export const MemberUpdateBody = Type.Object({
  status: literals(memberStatuses),
  member: Type.Optional(Type.String({ maxLength: 255 })),
  member_id: Type.Optional(Type.String({ maxLength: 255 })),
}, closed);

export const ImportBody = Type.Object({
  method: Type.Object({ name: Type.String({ maxLength: 255 }), uri: Type.Optional(Type.String({ maxLength: 2048 })) }, closed),
  stores: Type.Optional(Type.Array(Type.String({ maxLength: 255 }), { maxItems: 16 })),
  all_stores: Type.Optional(Type.Boolean()),
  all_stores_must_succeed: Type.Optional(Type.Boolean()),
}, closed);

/** GET /v2/images: the parameters with a meaning of their own; any other key is a property filter (a string). */
export const ImageListQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 0 })),
  marker: Type.Optional(Type.String()),
  sort_key: Type.Optional(Type.String()),
  sort_dir: Type.Optional(literals(['asc', 'desc'])),
  sort: Type.Optional(Type.String()),
  member_status: Type.Optional(literals([...memberStatuses, 'all'])),
  visibility: Type.Optional(literals([...visibilities, 'all'])),
  size_min: Type.Optional(Type.Integer({ minimum: 0 })),
  size_max: Type.Optional(Type.Integer({ minimum: 0 })),
  tag: Type.Optional(Type.Array(Type.String())),
}, { additionalProperties: Type.String() });

export const ImageIdParams = Type.Object({ image_id: Type.String({ minLength: 1 }) });
/** Glance's task record (GET /v2/tasks/{id}); the list leaves out input and result, as Glance's does. */
const taskStatuses = ['pending', 'processing', 'success', 'failure'] as const;
const taskFields = {
  id: Uuid,
  type: literals(['import', 'api_image_import', 'location_import']),
  status: literals(taskStatuses),
  owner: Type.String(),
  message: Type.String(),
  created_at: Timestamp,
  updated_at: Timestamp,
  expires_at: Type.Optional(Timestamp),
  self: Type.String({ pattern: '^/v2/tasks/' }),
  schema: Type.Literal('/v2/schemas/task'),
};
export const TaskSummary = Type.Object(taskFields, closed);
export const TaskEntity = Type.Object({
  ...taskFields,
  input: Type.Record(Type.String(), Type.Unknown()),
  result: Nullable(Type.Record(Type.String(), Type.Unknown())),
}, closed);
export const TaskList = Type.Object({
  tasks: Type.Array(TaskSummary),
  first: Type.String({ pattern: '^/v2/tasks' }),
  schema: Type.Literal('/v2/schemas/tasks'),
  next: Type.Optional(Type.String({ pattern: '^/v2/tasks\\?' })),
}, closed);
/** GET /v2/images/{id}/tasks (2.12): full records with the image, request and user they came from. */
export const ImageTaskList = Type.Object({
  tasks: Type.Array(Type.Object({
    ...taskFields,
    input: Type.Record(Type.String(), Type.Unknown()),
    result: Nullable(Type.Record(Type.String(), Type.Unknown())),
    image_id: Uuid,
    request_id: Nullable(Type.String()),
    user_id: Nullable(Type.String()),
  }, closed)),
}, closed);
export const TaskListQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000 })),
  marker: Type.Optional(Type.String({ maxLength: 255 })),
  sort_key: Type.Optional(literals(['created_at'])),
  sort_dir: Type.Optional(literals(['asc', 'desc'])),
  type: Type.Optional(literals(['import', 'api_image_import', 'location_import'])),
  status: Type.Optional(literals(taskStatuses)),
}, closed);
export const TaskParams = Type.Object({ task_id: Type.String({ minLength: 1, maxLength: 255 }) });
/** POST /v2/tasks: Glance's import task (the input is checked further by ImageService.createImportTask). */
export const TaskCreateBody = Type.Object({
  type: Type.String({ minLength: 1, maxLength: 64 }),
  input: Type.Object({
    import_from: Type.String({ minLength: 1, maxLength: 2048 }),
    import_from_format: Type.String({ minLength: 1, maxLength: 64 }),
    image_properties: Type.Record(Type.String(), Type.Unknown()),
  }, closed),
}, closed);
export const StoreImageParams = Type.Object({ store_id: Type.String({ minLength: 1, maxLength: 255 }), image_id: Type.String({ minLength: 1 }) });

export const TagParams = Type.Object({ image_id: Type.String({ minLength: 1 }), tag: Type.String({ minLength: 1, maxLength: 255 }) });

export type AnySchema = TSchema;
