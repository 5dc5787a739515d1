/**
 * Identity v3 request and response schemas, from the Identity API v3
 * reference (docs.openstack.org/api-ref/identity/v3 and its samples in
 * keystone's api-ref/source/v3/samples): the keys Keystone returns, with
 * `additionalProperties: false` where the reference fixes them. (tempest.lib
 * publishes no Identity response schemas; its compute and volume ones are
 * the model.) Requests are as strict as the old hand-written validator:
 * every object refuses unknown keys.
 */
import { Type, type TSchema } from '@sinclair/typebox';
import { Nullable } from '../../http/declare.ts';

const strict = { additionalProperties: false } as const;

export const Name = Type.String({ minLength: 1, maxLength: 255 });
export const IdRef = Type.String({ minLength: 1, maxLength: 64 });
/** A path parameter: an id (64 characters in Keystone's columns) or a region id, bounded at 255; an unknown one is a 404, not a 400. */
export const IdParam = Type.String({ minLength: 1, maxLength: 255 });
/** An object the caller may fill freely (Keystone's `options`). */
export const FreeObject = Type.Object({}, { additionalProperties: true });

/** `{ "<key>": schema }` and nothing else: Keystone's envelope of a single resource. */
export function envelope<T extends TSchema>(key: string, schema: T) {
  return Type.Object({ [key]: schema }, strict);
}

// ---- response building blocks ----
export const SelfLink = Type.Object({ self: Type.String({ format: 'uri' }) }, strict);
export const ListLinks = Type.Object({ self: Type.String({ format: 'uri' }), previous: Nullable(Type.String()), next: Nullable(Type.String()) }, strict);
export const DomainRef = Type.Object({ id: Type.String(), name: Type.String() }, strict);

/** A collection and its `links`, as every Keystone list answers. */
export function collection<T extends TSchema>(key: string, item: T) {
  return Type.Object({ [key]: Type.Array(item), links: ListLinks }, strict);
}

export const Domain = Type.Object(
  {
    id: Type.String(), name: Type.String(), description: Nullable(Type.String()), enabled: Type.Boolean(),
    tags: Type.Array(Type.String()), options: FreeObject, links: SelfLink,
  },
  strict,
);

export const Project = Type.Object(
  {
    id: Type.String(), name: Type.String(), domain_id: Type.String(), description: Nullable(Type.String()), enabled: Type.Boolean(),
    parent_id: Nullable(Type.String()), is_domain: Type.Boolean(), tags: Type.Array(Type.String()), options: FreeObject, links: SelfLink,
  },
  strict,
);

export const User = Type.Object(
  {
    id: Type.String(), name: Type.String(), domain_id: Type.String(), enabled: Type.Boolean(),
    password_expires_at: Nullable(Type.String({ format: 'date-time' })), options: FreeObject, links: SelfLink,
    default_project_id: Type.Optional(Type.String()), description: Type.Optional(Nullable(Type.String())), email: Type.Optional(Nullable(Type.String())),
  },
  strict,
);

export const Group = Type.Object({ id: Type.String(), name: Type.String(), domain_id: Type.String(), description: Nullable(Type.String()), links: SelfLink }, strict);

export const Role = Type.Object(
  { id: Type.String(), name: Type.String(), domain_id: Nullable(Type.String()), description: Nullable(Type.String()), options: FreeObject, links: SelfLink },
  strict,
);

const Interface = Type.String({ enum: ['public', 'internal', 'admin'] });

export const Service = Type.Object(
  { id: Type.String(), type: Type.String(), name: Type.Optional(Type.String()), description: Type.Optional(Nullable(Type.String())), enabled: Type.Boolean(), links: SelfLink },
  strict,
);

export const Endpoint = Type.Object(
  {
    id: Type.String(), interface: Interface, region: Nullable(Type.String()), region_id: Nullable(Type.String()), service_id: Type.String(),
    url: Type.String(), enabled: Type.Boolean(), links: SelfLink,
  },
  strict,
);

export const Region = Type.Object({ id: Type.String(), description: Type.String(), parent_region_id: Nullable(Type.String()), links: SelfLink }, strict);

/** The catalog as a token (and GET /v3/auth/catalog) carries it. */
export const Catalog = Type.Array(Type.Object(
  {
    id: Type.String(), type: Type.String(), name: Type.String(),
    endpoints: Type.Array(Type.Object({ id: Type.String(), interface: Interface, region: Nullable(Type.String()), region_id: Nullable(Type.String()), url: Type.String() }, strict)),
  },
  strict,
));

export const RoleRef = Type.Object({ id: Type.String(), name: Type.String() }, strict);

export const Token = Type.Object(
  {
    methods: Type.Array(Type.String(), { minItems: 1 }),
    user: Type.Object({ domain: DomainRef, id: Type.String(), name: Type.String(), password_expires_at: Nullable(Type.String({ format: 'date-time' })) }, strict),
    audit_ids: Type.Array(Type.String(), { minItems: 1, maxItems: 2 }),
    expires_at: Type.String({ format: 'date-time' }),
    issued_at: Type.String({ format: 'date-time' }),
    project: Type.Optional(Type.Object({ domain: DomainRef, id: Type.String(), name: Type.String() }, strict)),
    is_domain: Type.Optional(Type.Boolean()),
    domain: Type.Optional(DomainRef),
    system: Type.Optional(Type.Object({ all: Type.Literal(true) }, strict)),
    application_credential: Type.Optional(Type.Object({ id: Type.String(), name: Type.String(), restricted: Type.Boolean() }, strict)),
    'OS-TRUST:trust': Type.Optional(Type.Object(
      { id: Type.String(), impersonation: Type.Boolean(), trustee_user: Type.Object({ id: Type.String() }, strict), trustor_user: Type.Object({ id: Type.String() }, strict) },
      strict,
    )),
    roles: Type.Optional(Type.Array(RoleRef)),
    catalog: Type.Optional(Catalog),
  },
  strict,
);

const NamedRef = Type.Object({ id: Type.String(), name: Type.Optional(Type.String()), domain: Type.Optional(DomainRef) }, strict);

/** One assignment: a user's or a group's role on a project, a domain or the system; `membership` links an effective row to the group it came through. */
export const RoleAssignment = Type.Object(
  {
    role: NamedRef,
    user: Type.Optional(NamedRef),
    group: Type.Optional(NamedRef),
    scope: Type.Union([
      Type.Object({ project: NamedRef }, strict),
      Type.Object({ domain: Type.Object({ id: Type.String(), name: Type.Optional(Type.String()) }, strict) }, strict),
      Type.Object({ system: Type.Object({ all: Type.Literal(true) }, strict) }, strict),
    ]),
    links: Type.Object({ assignment: Type.String({ format: 'uri' }), membership: Type.Optional(Type.String({ format: 'uri' })) }, strict),
  },
  { ...strict, minProperties: 4, maxProperties: 4 },
);

export const VersionDocument = Type.Object(
  {
    id: Type.String(), status: Type.String({ enum: ['stable', 'deprecated', 'experimental'] }), updated: Type.String({ format: 'date-time' }),
    links: Type.Array(Type.Object({ rel: Type.String(), href: Type.String({ format: 'uri' }), type: Type.Optional(Type.String()) }, strict)),
    'media-types': Type.Array(Type.Object({ base: Type.String(), type: Type.String() }, strict)),
  },
  strict,
);

// ---- request bodies ----
export const DomainRefInput = Type.Object({ id: Type.Optional(IdRef), name: Type.Optional(Name) }, strict);
