/**
 * Identity resources as Keystone renders them: every entity carries
 * `links.self`, every list `links: {self, previous, next}`.
 */
import type { AuthContext, RequestContext } from '../../http/router.ts';
import {
  defaultDomainId,
  renderEndpointUrl,
  type CatalogServiceRow,
  type DomainRow,
  type EndpointRow,
  type GroupRow,
  type IdentityService,
  type ProjectRow,
  type RegionRow,
  type RoleRow,
  type UserRow,
} from '../identity.ts';

/** `http://HOST/identity/v3/PATH` for the address the client used. */
export function selfUrl(ctx: RequestContext, path: string): string {
  return `${ctx.serviceUrl}/v3/${path}`;
}

/** A list's links: Pumice answers every list in one page. */
export function listLinks(ctx: RequestContext, path: string) {
  return { self: selfUrl(ctx, path), previous: null, next: null };
}

export function renderDomain(ctx: RequestContext, d: DomainRow) {
  return { id: d.id, name: d.name, description: d.description, enabled: !!d.enabled, tags: [] as string[], options: {}, links: { self: selfUrl(ctx, `domains/${d.id}`) } };
}

export function renderProject(ctx: RequestContext, p: ProjectRow) {
  return {
    id: p.id, name: p.name, domain_id: p.domain_id, description: p.description, enabled: !!p.enabled,
    parent_id: p.parent_id, is_domain: false, tags: JSON.parse(p.tags) as string[], options: JSON.parse(p.options) as object,
    links: { self: selfUrl(ctx, `projects/${p.id}`) },
  };
}

/** `default_project_id`, `description` and `email` appear only when set, as Keystone's extra attributes do. */
export function renderUser(ctx: RequestContext, u: UserRow) {
  const user: Record<string, unknown> = {
    id: u.id, name: u.name, domain_id: u.domain_id, enabled: !!u.enabled, password_expires_at: null, options: {},
    links: { self: selfUrl(ctx, `users/${u.id}`) },
  };
  if (u.default_project_id) user['default_project_id'] = u.default_project_id;
  if (u.description !== null) user['description'] = u.description;
  if (u.email !== null) user['email'] = u.email;
  return user;
}

export function renderGroup(ctx: RequestContext, g: GroupRow) {
  return { id: g.id, name: g.name, domain_id: g.domain_id, description: g.description, links: { self: selfUrl(ctx, `groups/${g.id}`) } };
}

export function renderRole(ctx: RequestContext, r: RoleRow) {
  return { id: r.id, name: r.name, domain_id: r.domain_id, description: r.description, options: {}, links: { self: selfUrl(ctx, `roles/${r.id}`) } };
}

export function renderService(ctx: RequestContext, s: CatalogServiceRow) {
  return { id: s.id, type: s.type, name: s.name, description: s.description, enabled: !!s.enabled, links: { self: selfUrl(ctx, `services/${s.id}`) } };
}

export function renderEndpoint(ctx: RequestContext, e: EndpointRow) {
  return {
    id: e.id, interface: e.interface, region: e.region_id, region_id: e.region_id, service_id: e.service_id,
    url: renderEndpointUrl(e.url, ctx.baseUrl, null), enabled: !!e.enabled,
    links: { self: selfUrl(ctx, `endpoints/${e.id}`) },
  };
}

export function renderRegion(ctx: RequestContext, r: RegionRow) {
  return { id: r.id, description: r.description, parent_region_id: r.parent_region_id, links: { self: selfUrl(ctx, `regions/${r.id}`) } };
}

/** A token's body: the scope it carries, its roles and (unless `withCatalog` is false) the catalog; unscoped tokens carry neither. */
export function renderToken(ctx: RequestContext, identity: IdentityService, context: AuthContext, withCatalog: boolean) {
  const user = identity.user(context.userId);
  const userDomain = identity.domain(user.domain_id);
  const token: Record<string, unknown> = {
    methods: context.methods,
    user: { domain: { id: userDomain.id, name: userDomain.name }, id: user.id, name: user.name, password_expires_at: null },
    // Keystone: this token's audit id, then the audit id of the chain's first token when it was issued from another.
    audit_ids: [context.auditId, ...[identity.auditChainOf(context.tokenId)].filter((id) => id !== null)],
    expires_at: context.expiresAt,
    issued_at: context.issuedAt,
  };
  if (context.projectId) {
    const projectDomain = identity.domain(context.projectDomainId ?? defaultDomainId);
    token['project'] = { domain: { id: projectDomain.id, name: projectDomain.name }, id: context.projectId, name: context.projectName };
    token['is_domain'] = false;
  } else if (context.domainId) {
    const domain = identity.domain(context.domainId);
    token['domain'] = { id: domain.id, name: domain.name };
  }
  const extras = identity.tokenExtras(context.tokenId);
  if (extras.system) token['system'] = { all: true };
  if (extras.applicationCredential) {
    const a = extras.applicationCredential;
    token['application_credential'] = { id: a.id, name: a.name, restricted: !a.unrestricted };
  }
  if (extras.trust) {
    const t = extras.trust;
    token['OS-TRUST:trust'] = { id: t.id, impersonation: !!t.impersonation, trustee_user: { id: t.trustee_user_id }, trustor_user: { id: t.trustor_user_id } };
  }
  if (context.projectId || context.domainId || extras.system) {
    token['roles'] = identity.roleRefs(context);
    if (withCatalog) token['catalog'] = identity.catalog(ctx.baseUrl, context.projectId);
  }
  return { token };
}
