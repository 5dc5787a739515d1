/**
 * Routes of Glance's metadata definitions catalog (`/v2/metadefs/...` and
 * `/v2/schemas/metadefs/...`), declared with their schemas and Glance's
 * metadef policy rules. The domain lives in metadefs.ts.
 */
import { Type, type Static } from '@sinclair/typebox';
import { compileSchema, describeErrors, route, type AnyRouteSpec } from '../http/declare.ts';
import type { AuthContext, RequestContext } from '../http/router.ts';
import { queryBool } from '../http/validate.ts';
import { glanceTime } from './images.ts';
import { metadefLimits, type MetadefObject, type MetadefService, type MetadefTag, type Namespace, type ResourceTypeAssociation } from './metadefs.ts';

const closed = { additionalProperties: false } as const;
const Timestamp = Type.String({ pattern: '^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ$' });
const Name = Type.String({ minLength: 1, maxLength: metadefLimits.nameLengthMax });
const propertyTypes = ['array', 'boolean', 'integer', 'number', 'object', 'string'] as const;

/** A property definition as Glance's metadef property schema allows it. */
const PropertyFields = {
  title: Type.String({ maxLength: 255 }),
  type: Type.Union(propertyTypes.map((t) => Type.Literal(t))),
  description: Type.Optional(Type.String({ maxLength: 2048 })),
  default: Type.Optional(Type.Unknown()),
  readonly: Type.Optional(Type.Boolean()),
  operators: Type.Optional(Type.Array(Type.String({ maxLength: 255 }))),
  enum: Type.Optional(Type.Array(Type.Unknown(), { maxItems: 1000 })),
  minimum: Type.Optional(Type.Number()),
  maximum: Type.Optional(Type.Number()),
  minLength: Type.Optional(Type.Integer({ minimum: 0 })),
  maxLength: Type.Optional(Type.Integer({ minimum: 0 })),
  pattern: Type.Optional(Type.String({ maxLength: 1024 })),
  items: Type.Optional(Type.Object({ type: Type.Optional(Type.String()), enum: Type.Optional(Type.Array(Type.Unknown())) }, closed)),
  uniqueItems: Type.Optional(Type.Boolean()),
  minItems: Type.Optional(Type.Integer({ minimum: 0 })),
  maxItems: Type.Optional(Type.Integer({ minimum: 0 })),
  additionalItems: Type.Optional(Type.Boolean()),
};
const PropertyDefinition = Type.Object(PropertyFields, closed);
const PropertyWithName = Type.Object({ name: Name, ...PropertyFields }, closed);
const PropertyMap = Type.Record(Type.String({ minLength: 1, maxLength: metadefLimits.nameLengthMax }), PropertyDefinition);

const ObjectBody = Type.Object({
  name: Name,
  description: Type.Optional(Type.String({ maxLength: 2048 })),
  required: Type.Optional(Type.Array(Type.String())),
  properties: Type.Optional(PropertyMap),
}, closed);

const AssociationBody = Type.Object({
  name: Name,
  prefix: Type.Optional(Type.String({ maxLength: 80 })),
  properties_target: Type.Optional(Type.String({ maxLength: 80 })),
}, closed);

const NamespaceAttributes = {
  namespace: Name,
  display_name: Type.Optional(Type.String({ maxLength: 80 })),
  description: Type.Optional(Type.String({ maxLength: 500 })),
  visibility: Type.Optional(Type.Union([Type.Literal('public'), Type.Literal('private')])),
  protected: Type.Optional(Type.Boolean()),
  owner: Type.Optional(Type.String({ maxLength: 255 })),
};

export const NamespaceCreateBody = Type.Object({
  ...NamespaceAttributes,
  properties: Type.Optional(PropertyMap),
  objects: Type.Optional(Type.Array(ObjectBody)),
  tags: Type.Optional(Type.Array(Type.Object({ name: Name }, closed))),
  resource_type_associations: Type.Optional(Type.Array(AssociationBody)),
}, closed);

/** PUT: Glance's client sends the whole model back, timestamps and links included; they are read-only and ignored. */
const NamespaceUpdateBody = Type.Object({
  ...NamespaceAttributes,
  created_at: Type.Optional(Type.String()), updated_at: Type.Optional(Type.String()), schema: Type.Optional(Type.String()), self: Type.Optional(Type.String()),
  properties: Type.Optional(Type.Unknown()), objects: Type.Optional(Type.Unknown()), tags: Type.Optional(Type.Unknown()), resource_type_associations: Type.Optional(Type.Unknown()),
}, closed);
const ReadOnlyEcho = { created_at: Type.Optional(Type.String()), updated_at: Type.Optional(Type.String()), schema: Type.Optional(Type.String()), self: Type.Optional(Type.String()) };
const ObjectUpdateBody = Type.Object({ ...ObjectBody.properties, ...ReadOnlyEcho }, closed);
const TagUpdateBody = Type.Object({ name: Name, ...ReadOnlyEcho }, closed);

// ---- responses ----

const AssociationEntity = Type.Object({
  name: Type.String(), prefix: Type.Optional(Type.String()), properties_target: Type.Optional(Type.String()), created_at: Timestamp, updated_at: Timestamp,
}, closed);
const ObjectEntity = Type.Object({
  name: Type.String(), description: Type.Optional(Type.String()), required: Type.Optional(Type.Array(Type.String())), properties: Type.Optional(PropertyMap),
  schema: Type.Literal('/v2/schemas/metadefs/object'), self: Type.String({ pattern: '^/v2/metadefs/namespaces/[^/]+/objects/' }), created_at: Timestamp, updated_at: Timestamp,
}, closed);
const TagEntity = Type.Object({ name: Type.String(), created_at: Timestamp, updated_at: Timestamp }, closed);
const NamespaceEntity = Type.Object({
  namespace: Type.String(), display_name: Type.Optional(Type.String()), description: Type.Optional(Type.String()),
  visibility: Type.Union([Type.Literal('public'), Type.Literal('private')]), protected: Type.Boolean(), owner: Type.Optional(Type.String()),
  created_at: Timestamp, updated_at: Timestamp,
  schema: Type.Literal('/v2/schemas/metadefs/namespace'), self: Type.String({ pattern: '^/v2/metadefs/namespaces/' }),
  resource_type_associations: Type.Optional(Type.Array(AssociationEntity)),
  properties: Type.Optional(PropertyMap),
  objects: Type.Optional(Type.Array(Type.Object({ name: Type.String(), description: Type.Optional(Type.String()), required: Type.Optional(Type.Array(Type.String())), properties: Type.Optional(PropertyMap) }, closed))),
  tags: Type.Optional(Type.Array(Type.Object({ name: Type.String() }, closed))),
}, closed);
const NamespaceList = Type.Object({
  namespaces: Type.Array(NamespaceEntity), first: Type.String(), schema: Type.Literal('/v2/schemas/metadefs/namespaces'), next: Type.Optional(Type.String()),
}, closed);
const SchemaDocument = Type.Object({ name: Type.String(), properties: Type.Object({}) });

const NamespaceListQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1 })),
  marker: Type.Optional(Type.String()),
  sort_key: Type.Optional(Type.Union(['namespace', 'created_at', 'updated_at'].map((k) => Type.Literal(k)))),
  sort_dir: Type.Optional(Type.Union([Type.Literal('asc'), Type.Literal('desc')])),
  visibility: Type.Optional(Type.Union([Type.Literal('public'), Type.Literal('private')])),
  resource_types: Type.Optional(Type.String()),
}, closed);

const seedCheck = compileSchema(NamespaceCreateBody);

/** Checks a seed file's document against the create schema (what `MetadefService.seed` loads). */
export function parseSeedDocument(document: unknown, file: string): Static<typeof NamespaceCreateBody> {
  // Glance's files may carry timestamps or an owner of their own; they are not part of a definition.
  if (document && typeof document === 'object') {
    for (const key of ['created_at', 'updated_at']) delete (document as Record<string, unknown>)[key];
  }
  if (!seedCheck(document)) {
    const failure = describeErrors('body', seedCheck.errors ?? [], document);
    throw new Error(`${file}: ${failure.field || '(document)'}: ${failure.problem}`);
  }
  return document as Static<typeof NamespaceCreateBody>;
}

// ---- rendering ----

const nsPath = (name: string) => `/v2/metadefs/namespaces/${encodeURIComponent(name)}`;

function renderAssociation(a: ResourceTypeAssociation): Record<string, unknown> {
  return { name: a.name, ...(a.prefix !== undefined ? { prefix: a.prefix } : {}), ...(a.properties_target !== undefined ? { properties_target: a.properties_target } : {}), created_at: glanceTime(a.created_at), updated_at: glanceTime(a.updated_at) };
}

function withPrefix(properties: Record<string, unknown>, prefix: string): Record<string, unknown> {
  return Object.fromEntries(Object.entries(properties).map(([k, v]) => [prefix + k, stripTimes(v as Record<string, unknown>)]));
}

function stripTimes(value: Record<string, unknown>): Record<string, unknown> {
  const { created_at: _c, updated_at: _u, ...rest } = value;
  return rest;
}

function renderObject(ns: string, o: MetadefObject, prefix = ''): Record<string, unknown> {
  return {
    name: o.name, ...(o.description !== undefined ? { description: o.description } : {}), ...(o.required ? { required: o.required } : {}),
    ...(o.properties ? { properties: withPrefix(o.properties, prefix) } : {}),
    schema: '/v2/schemas/metadefs/object', self: `${nsPath(ns)}/objects/${encodeURIComponent(o.name)}`,
    created_at: glanceTime(o.created_at), updated_at: glanceTime(o.updated_at),
  };
}

function renderTag(t: MetadefTag): Record<string, unknown> {
  return { name: t.name, created_at: glanceTime(t.created_at), updated_at: glanceTime(t.updated_at) };
}

/** The namespace; `full` adds its contents (show), with the prefix of `resourceType`'s association on property names. */
function renderNamespace(ns: Namespace, full: boolean, resourceType?: string): Record<string, unknown> {
  const body: Record<string, unknown> = {
    namespace: ns.namespace,
    ...(ns.display_name !== undefined ? { display_name: ns.display_name } : {}),
    ...(ns.description !== undefined ? { description: ns.description } : {}),
    visibility: ns.visibility, protected: ns.protected, ...(ns.owner !== null ? { owner: ns.owner } : {}),
    created_at: glanceTime(ns.created_at), updated_at: glanceTime(ns.updated_at),
    schema: '/v2/schemas/metadefs/namespace', self: nsPath(ns.namespace),
  };
  if (ns.resource_type_associations.length > 0) body['resource_type_associations'] = ns.resource_type_associations.map(renderAssociation);
  if (full) {
    const prefix = resourceType ? ns.resource_type_associations.find((a) => a.name === resourceType)?.prefix ?? '' : '';
    if (Object.keys(ns.properties).length > 0) body['properties'] = withPrefix(ns.properties, prefix);
    if (ns.objects.length > 0) {
      body['objects'] = ns.objects.map((o) => ({
        name: o.name, ...(o.description !== undefined ? { description: o.description } : {}), ...(o.required ? { required: o.required } : {}),
        ...(o.properties ? { properties: withPrefix(o.properties, prefix) } : {}),
      }));
    }
    if (ns.tags.length > 0) body['tags'] = ns.tags.map((t) => ({ name: t.name }));
  }
  return body;
}

/** The JSON-schema documents Glance serves at /v2/schemas/metadefs/*; glanceclient builds its models from them. */
function schemaDocument(name: string): Record<string, unknown> {
  const str = (maxLength?: number) => ({ type: 'string', ...(maxLength ? { maxLength } : {}) });
  const stamp = { type: 'string', readOnly: true, format: 'date-time' };
  const propertyDefinition = {
    type: 'object',
    properties: {
      title: str(255), description: str(), type: { type: 'string', enum: [...propertyTypes] }, default: {}, readonly: { type: 'boolean' },
      operators: { type: 'array', items: str() }, enum: { type: 'array' }, minimum: { type: 'number' }, maximum: { type: 'number' },
      minLength: { type: 'integer', minimum: 0 }, maxLength: { type: 'integer', minimum: 0 }, pattern: { type: 'string', format: 'regex' },
      items: { type: 'object', properties: { type: str(), enum: { type: 'array' } } }, uniqueItems: { type: 'boolean' },
      minItems: { type: 'integer', minimum: 0 }, maxItems: { type: 'integer', minimum: 0 }, additionalItems: { type: 'boolean' }, name: str(80),
    },
    required: ['title', 'type'],
  };
  const association = { type: 'object', properties: { name: str(80), prefix: str(80), properties_target: str(80), created_at: stamp, updated_at: stamp }, required: ['name'] };
  const object = {
    name: 'object',
    properties: {
      name: str(80), description: str(), required: { type: 'array', items: str() }, properties: { type: 'object', additionalProperties: propertyDefinition },
      schema: { type: 'string', readOnly: true }, self: { type: 'string', readOnly: true }, created_at: stamp, updated_at: stamp,
    },
    required: ['name'],
    additionalProperties: false,
  };
  const tag = { name: 'tag', properties: { name: str(80), created_at: stamp, updated_at: stamp }, required: ['name'], additionalProperties: false };
  const namespace = {
    name: 'namespace',
    properties: {
      namespace: str(80), display_name: str(80), description: str(500), visibility: { type: 'string', enum: ['public', 'private'] },
      protected: { type: 'boolean' }, owner: str(255), created_at: stamp, updated_at: stamp,
      schema: { type: 'string', readOnly: true }, self: { type: 'string', readOnly: true },
      resource_type_associations: { type: 'array', items: association },
      properties: { type: 'object', additionalProperties: propertyDefinition },
      objects: { type: 'array', items: { type: 'object', properties: { name: str(80), description: str(), required: { type: 'array', items: str() }, properties: { type: 'object', additionalProperties: propertyDefinition } } } },
      tags: { type: 'array', items: { type: 'object', properties: { name: str(80) } } },
    },
    required: ['namespace'],
    additionalProperties: false,
  };
  const resourceType = { name: 'resource_type_association', properties: association.properties, required: ['name', 'prefix', 'properties_target'].slice(0, 1), additionalProperties: false };
  const property = { name: 'property', ...propertyDefinition, additionalProperties: false };
  const list = (plural: string, itemName: string, item: Record<string, unknown>) => ({
    name: plural,
    properties: { [plural === 'resource_type_associations' ? 'resource_type_associations' : plural]: { type: 'array', items: item }, schema: { type: 'string' }, first: { type: 'string' }, next: { type: 'string' } },
    links: [{ rel: 'first', href: '{first}' }, { rel: 'next', href: '{next}' }, { rel: 'describedby', href: '{schema}' }],
    description: `A list of ${itemName}s`,
  });
  switch (name) {
    case 'namespace': return namespace;
    case 'namespaces': return list('namespaces', 'namespace', namespace);
    case 'object': return object;
    case 'objects': return list('objects', 'object', object);
    case 'tag': return tag;
    case 'tags': return list('tags', 'tag', tag);
    case 'property': return property;
    case 'properties': return { name: 'properties', properties: { properties: { type: 'object', additionalProperties: propertyDefinition } } };
    case 'resource_type': return resourceType;
    default: return list('resource_type_associations', 'resource type association', resourceType);
  }
}

/** Declarations of the metadefs routes on top of `service`. */
export function metadefRoutes(service: MetadefService): AnyRouteSpec[] {
  const auth = (ctx: RequestContext): AuthContext => ctx.auth!;
  const ns = (ctx: RequestContext) => ctx.params['namespace']!;
  const noBody = { 204: null } as const;
  const routes: AnyRouteSpec[] = [];
  for (const name of ['namespace', 'namespaces', 'object', 'objects', 'property', 'properties', 'tag', 'tags', 'resource_type', 'resource_types']) {
    routes.push(route({ method: 'GET', path: `/v2/schemas/metadefs/${name}`, policy: '@', responses: { 200: SchemaDocument }, handler: () => ({ status: 200, body: schemaDocument(name) }) }));
  }
  routes.push(
    route({
      method: 'GET', path: '/v2/metadefs/namespaces', policy: 'get_metadef_namespaces', query: NamespaceListQuery, responses: { 200: NamespaceList },
      handler(ctx) {
        const q = ctx.queryParams;
        const limit = Math.min(q.limit ?? metadefLimits.namespacesPageDefault, metadefLimits.namespacesPageMax);
        const page = service.list(auth(ctx), {
          limit, marker: q.marker ?? null, sortKey: (q.sort_key ?? 'created_at') as 'namespace' | 'created_at' | 'updated_at', sortDir: q.sort_dir ?? 'desc',
          visibility: q.visibility, resourceTypes: q.resource_types?.split(',').map((s) => s.trim()).filter((s) => s !== ''),
        });
        const body: Record<string, unknown> = { namespaces: page.namespaces.map((n) => renderNamespace(n, false)), first: '/v2/metadefs/namespaces', schema: '/v2/schemas/metadefs/namespaces' };
        if (page.nextMarker) {
          const next = new URLSearchParams(ctx.query);
          next.set('marker', page.nextMarker);
          next.set('limit', String(limit));
          body['next'] = `/v2/metadefs/namespaces?${next.toString()}`;
        }
        return { status: 200, body };
      },
    }),
    route({
      method: 'POST', path: '/v2/metadefs/namespaces', policy: 'add_metadef_namespace', body: NamespaceCreateBody, responses: { 201: NamespaceEntity },
      handler: (ctx) => ({ status: 201, body: renderNamespace(service.create(auth(ctx), ctx.body), true) }),
    }),
    route({
      method: 'GET', path: '/v2/metadefs/namespaces/:namespace', policy: 'get_metadef_namespace', query: Type.Object({ resource_type: Type.Optional(Type.String()) }, closed),
      responses: { 200: NamespaceEntity },
      handler: (ctx) => ({ status: 200, body: renderNamespace(service.get(auth(ctx), ns(ctx)), true, ctx.queryParams.resource_type) }),
    }),
    route({
      method: 'PUT', path: '/v2/metadefs/namespaces/:namespace', policy: 'modify_metadef_namespace', body: NamespaceUpdateBody, responses: { 200: NamespaceEntity },
      handler: (ctx) => ({ status: 200, body: renderNamespace(service.update(auth(ctx), ns(ctx), ctx.body), false) }),
    }),
    route({
      method: 'DELETE', path: '/v2/metadefs/namespaces/:namespace', policy: 'delete_metadef_namespace', responses: noBody,
      handler(ctx) {
        service.delete(auth(ctx), ns(ctx));
        return { status: 204 };
      },
    }),

    // objects
    route({
      method: 'GET', path: '/v2/metadefs/namespaces/:namespace/objects', policy: 'get_metadef_objects',
      responses: { 200: Type.Object({ objects: Type.Array(ObjectEntity), schema: Type.Literal('v2/schemas/metadefs/objects') }, closed) },
      handler: (ctx) => ({ status: 200, body: { objects: service.get(auth(ctx), ns(ctx), 'get_metadef_objects').objects.map((o) => renderObject(ns(ctx), o)), schema: 'v2/schemas/metadefs/objects' } }),
    }),
    route({
      method: 'POST', path: '/v2/metadefs/namespaces/:namespace/objects', policy: 'add_metadef_object', body: ObjectBody, responses: { 201: ObjectEntity },
      handler: (ctx) => ({ status: 201, body: renderObject(ns(ctx), service.createObject(auth(ctx), ns(ctx), ctx.body)) }),
    }),
    route({
      method: 'DELETE', path: '/v2/metadefs/namespaces/:namespace/objects', policy: 'delete_metadef_namespace', responses: noBody,
      handler(ctx) {
        service.clear(auth(ctx), ns(ctx), 'objects');
        return { status: 204 };
      },
    }),
    route({
      method: 'GET', path: '/v2/metadefs/namespaces/:namespace/objects/:object_name', policy: 'get_metadef_object', responses: { 200: ObjectEntity },
      handler: (ctx) => ({ status: 200, body: renderObject(ns(ctx), service.getObject(auth(ctx), ns(ctx), ctx.params['object_name']!)) }),
    }),
    route({
      method: 'PUT', path: '/v2/metadefs/namespaces/:namespace/objects/:object_name', policy: 'modify_metadef_object', body: ObjectUpdateBody, responses: { 200: ObjectEntity },
      handler(ctx) {
        const { created_at: _c, updated_at: _u, schema: _s, self: _l, ...object } = ctx.body;
        return { status: 200, body: renderObject(ns(ctx), service.updateObject(auth(ctx), ns(ctx), ctx.params['object_name']!, object)) };
      },
    }),
    route({
      method: 'DELETE', path: '/v2/metadefs/namespaces/:namespace/objects/:object_name', policy: 'delete_metadef_object', responses: noBody,
      handler(ctx) {
        service.deleteObject(auth(ctx), ns(ctx), ctx.params['object_name']!);
        return { status: 204 };
      },
    }),

    // properties
    route({
      method: 'GET', path: '/v2/metadefs/namespaces/:namespace/properties', policy: 'get_metadef_properties', responses: { 200: Type.Object({ properties: PropertyMap }, closed) },
      handler: (ctx) => ({ status: 200, body: { properties: withPrefix(service.get(auth(ctx), ns(ctx), 'get_metadef_properties').properties, '') } }),
    }),
    route({
      method: 'POST', path: '/v2/metadefs/namespaces/:namespace/properties', policy: 'add_metadef_property', body: PropertyWithName, responses: { 201: PropertyWithName },
      handler: (ctx) => ({ status: 201, body: service.createProperty(auth(ctx), ns(ctx), ctx.body) }),
    }),
    route({
      method: 'DELETE', path: '/v2/metadefs/namespaces/:namespace/properties', policy: 'delete_metadef_namespace', responses: noBody,
      handler(ctx) {
        service.clear(auth(ctx), ns(ctx), 'properties');
        return { status: 204 };
      },
    }),
    route({
      method: 'GET', path: '/v2/metadefs/namespaces/:namespace/properties/:property_name', policy: 'get_metadef_property',
      query: Type.Object({ resource_type: Type.Optional(Type.String()) }, closed), responses: { 200: PropertyWithName },
      handler: (ctx) => ({ status: 200, body: service.getProperty(auth(ctx), ns(ctx), ctx.params['property_name']!, ctx.queryParams.resource_type) }),
    }),
    route({
      method: 'PUT', path: '/v2/metadefs/namespaces/:namespace/properties/:property_name', policy: 'modify_metadef_property', body: PropertyWithName, responses: { 200: PropertyWithName },
      handler: (ctx) => ({ status: 200, body: service.updateProperty(auth(ctx), ns(ctx), ctx.params['property_name']!, ctx.body) }),
    }),
    route({
      method: 'DELETE', path: '/v2/metadefs/namespaces/:namespace/properties/:property_name', policy: 'remove_metadef_property', responses: noBody,
      handler(ctx) {
        service.deleteProperty(auth(ctx), ns(ctx), ctx.params['property_name']!);
        return { status: 204 };
      },
    }),

    // tags
    route({
      method: 'GET', path: '/v2/metadefs/namespaces/:namespace/tags', policy: 'get_metadef_tags', responses: { 200: Type.Object({ tags: Type.Array(TagEntity) }, closed) },
      handler: (ctx) => ({ status: 200, body: { tags: service.get(auth(ctx), ns(ctx), 'get_metadef_tags').tags.map(renderTag) } }),
    }),
    route({
      method: 'POST', path: '/v2/metadefs/namespaces/:namespace/tags', policy: 'add_metadef_tags',
      body: Type.Object({ tags: Type.Array(Type.Object({ name: Name }, closed), { maxItems: 1000 }) }, closed),
      responses: { 201: Type.Object({ tags: Type.Array(Type.Object({ name: Type.String() }, closed)) }, closed) },
      handler(ctx) {
        // Glance 2.10+: X-Openstack-Append: true adds to the existing tags instead of replacing them.
        const appendHeader = ctx.headers['x-openstack-append'];
        const append = queryBool(typeof appendHeader === 'string' ? appendHeader : null, 'X-Openstack-Append') ?? false;
        const created = service.createTags(auth(ctx), ns(ctx), ctx.body.tags.map((t) => t.name), append);
        return { status: 201, body: { tags: created.map((t) => ({ name: t.name })) } };
      },
    }),
    route({
      method: 'DELETE', path: '/v2/metadefs/namespaces/:namespace/tags', policy: 'delete_metadef_tags', responses: noBody,
      handler(ctx) {
        service.clear(auth(ctx), ns(ctx), 'tags');
        return { status: 204 };
      },
    }),
    route({
      method: 'GET', path: '/v2/metadefs/namespaces/:namespace/tags/:tag_name', policy: 'get_metadef_tag', responses: { 200: TagEntity },
      handler: (ctx) => ({ status: 200, body: renderTag(service.getTag(auth(ctx), ns(ctx), ctx.params['tag_name']!)) }),
    }),
    route({
      method: 'POST', path: '/v2/metadefs/namespaces/:namespace/tags/:tag_name', policy: 'add_metadef_tag',
      params: Type.Object({ namespace: Type.String(), tag_name: Name }), responses: { 201: TagEntity },
      handler: (ctx) => ({ status: 201, body: renderTag(service.createTag(auth(ctx), ns(ctx), ctx.params['tag_name']!)) }),
    }),
    route({
      method: 'PUT', path: '/v2/metadefs/namespaces/:namespace/tags/:tag_name', policy: 'modify_metadef_tag', body: TagUpdateBody, responses: { 200: TagEntity },
      handler: (ctx) => ({ status: 200, body: renderTag(service.renameTag(auth(ctx), ns(ctx), ctx.params['tag_name']!, ctx.body.name)) }),
    }),
    route({
      method: 'DELETE', path: '/v2/metadefs/namespaces/:namespace/tags/:tag_name', policy: 'delete_metadef_tag', responses: noBody,
      handler(ctx) {
        service.deleteTag(auth(ctx), ns(ctx), ctx.params['tag_name']!);
        return { status: 204 };
      },
    }),

    // resource types
    route({
      method: 'GET', path: '/v2/metadefs/resource_types', policy: 'list_metadef_resource_types',
      responses: { 200: Type.Object({ resource_types: Type.Array(TagEntity) }, closed) },
      handler: (ctx) => ({ status: 200, body: { resource_types: service.listResourceTypes(auth(ctx)).map((r) => ({ name: r.name, created_at: glanceTime(r.created_at), updated_at: glanceTime(r.updated_at) })) } }),
    }),
    route({
      method: 'GET', path: '/v2/metadefs/namespaces/:namespace/resource_types', policy: 'get_metadef_resource_type',
      responses: { 200: Type.Object({ resource_type_associations: Type.Array(AssociationEntity) }, closed) },
      handler: (ctx) => ({ status: 200, body: { resource_type_associations: service.associations(auth(ctx), ns(ctx)).map(renderAssociation) } }),
    }),
    route({
      method: 'POST', path: '/v2/metadefs/namespaces/:namespace/resource_types', policy: 'add_metadef_resource_type_association', body: AssociationBody,
      responses: { 201: AssociationEntity },
      handler: (ctx) => ({ status: 201, body: renderAssociation(service.associate(auth(ctx), ns(ctx), ctx.body)) }),
    }),
    route({
      method: 'DELETE', path: '/v2/metadefs/namespaces/:namespace/resource_types/:resource_type', policy: 'remove_metadef_resource_type_association', responses: noBody,
      handler(ctx) {
        service.dissociate(auth(ctx), ns(ctx), ctx.params['resource_type']!);
        return { status: 204 };
      },
    }),
  );
  return routes;
}

