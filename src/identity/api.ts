/**
 * Identity v3 routes (Keystone subset): version documents, tokens, projects,
 * users, roles, role assignments, domains, regions, services and endpoints.
 * Writes and listings of other principals need the admin role; a user may
 * read themself, their projects and their own token.
 */
import { errors, PumiceError } from '../errors.ts';
import { Router, type AuthContext, type Reply, type RequestContext } from '../http/router.ts';
import { validate, type Schema } from '../http/validate.ts';
import {
  defaultDomainId,
  newId,
  renderEndpointUrl,
  type DomainRow,
  type EndpointRow,
  type IdentityService,
  type ProjectRow,
  type RegionRow,
  type RoleRow,
  type Scope,
  type UserRow,
  type CatalogServiceRow,
} from './identity.ts';
import type { Db } from '../db/db.ts';

const nameSchema: Schema = { type: 'string', minLength: 1, maxLength: 255 };
const idRef: Schema = { type: 'string', minLength: 1, maxLength: 64 };
const domainRefSchema: Schema = { type: 'object', properties: { id: idRef, name: nameSchema } };

const authSchema: Schema = {
  type: 'object',
  required: ['auth'],
  properties: {
    auth: {
      type: 'object',
      required: ['identity'],
      properties: {
        identity: {
          type: 'object',
          required: ['methods'],
          properties: {
            methods: { type: 'array', items: { type: 'string', enum: ['password', 'token', 'application_credential'] }, maxItems: 3 },
            password: {
              type: 'object',
              required: ['user'],
              properties: {
                user: {
                  type: 'object',
                  required: ['password'],
                  properties: { id: idRef, name: nameSchema, domain: domainRefSchema, password: { type: 'string', maxLength: 4096 } },
                },
              },
            },
            token: { type: 'object', required: ['id'], properties: { id: { type: 'string', maxLength: 1024 } } },
          },
        },
        scope: {
          type: 'any',
        },
      },
    },
  },
};

export function identityRouter(identity: IdentityService, db: Db): Router {
  const router = new Router();
  const self = (ctx: RequestContext, path: string): string => `${ctx.serviceUrl}/v3/${path}`;
  const auth = (ctx: RequestContext): AuthContext => {
    if (!ctx.auth) throw errors.unauthorized();
    return ctx.auth;
  };
  const requireAdmin = (ctx: RequestContext, action: string): AuthContext => {
    const context = auth(ctx);
    if (!context.isAdmin) throw errors.forbidden(`identity:${action}`);
    return context;
  };
  /** Catalogue reads need roles somewhere: an unscoped token has none (Keystone denies these to it). */
  const requireScoped = (ctx: RequestContext, action: string): AuthContext => {
    const context = auth(ctx);
    if (!context.projectId && !context.domainId) throw errors.forbidden(`identity:${action} with an unscoped token (get a project-scoped token: openstack token issue with --os-project-name)`);
    return context;
  };
  const listLinks = (ctx: RequestContext, path: string) => ({ self: self(ctx, path), previous: null, next: null });

  // ---- renderers ----
  const renderDomain = (ctx: RequestContext, d: DomainRow) => ({
    id: d.id, name: d.name, description: d.description, enabled: !!d.enabled, tags: [], options: {},
    links: { self: self(ctx, `domains/${d.id}`) },
  });
  const renderProject = (ctx: RequestContext, p: ProjectRow) => ({
    id: p.id, name: p.name, domain_id: p.domain_id, description: p.description, enabled: !!p.enabled,
    parent_id: p.parent_id, is_domain: false, tags: JSON.parse(p.tags) as string[], options: JSON.parse(p.options) as object,
    links: { self: self(ctx, `projects/${p.id}`) },
  });
  const renderUser = (ctx: RequestContext, u: UserRow) => {
    const user: Record<string, unknown> = {
      id: u.id, name: u.name, domain_id: u.domain_id, enabled: !!u.enabled, password_expires_at: null, options: {},
      links: { self: self(ctx, `users/${u.id}`) },
    };
    if (u.default_project_id) user['default_project_id'] = u.default_project_id;
    if (u.description !== null) user['description'] = u.description;
    if (u.email !== null) user['email'] = u.email;
    return user;
  };
  const renderRole = (ctx: RequestContext, r: RoleRow) => ({
    id: r.id, name: r.name, domain_id: r.domain_id, description: r.description, options: {},
    links: { self: self(ctx, `roles/${r.id}`) },
  });
  const renderService = (ctx: RequestContext, s: CatalogServiceRow) => ({
    id: s.id, type: s.type, name: s.name, description: s.description, enabled: !!s.enabled,
    links: { self: self(ctx, `services/${s.id}`) },
  });
  const renderEndpoint = (ctx: RequestContext, e: EndpointRow) => ({
    id: e.id, interface: e.interface, region: e.region_id, region_id: e.region_id, service_id: e.service_id,
    url: renderEndpointUrl(e.url, ctx.baseUrl, null), enabled: !!e.enabled,
    links: { self: self(ctx, `endpoints/${e.id}`) },
  });
  const renderRegion = (ctx: RequestContext, r: RegionRow) => ({
    id: r.id, description: r.description, parent_region_id: r.parent_region_id,
    links: { self: self(ctx, `regions/${r.id}`) },
  });

  const renderToken = (ctx: RequestContext, context: AuthContext, withCatalog: boolean) => {
    const user = identity.user(context.userId);
    const userDomain = identity.domain(user.domain_id);
    const token: Record<string, unknown> = {
      methods: context.methods,
      user: { domain: { id: userDomain.id, name: userDomain.name }, id: user.id, name: user.name, password_expires_at: null },
      audit_ids: [context.auditId],
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
    if (context.projectId || context.domainId) {
      token['roles'] = identity.roleRefs(context);
      if (withCatalog) token['catalog'] = identity.catalog(ctx.baseUrl, context.projectId);
    }
    return { token };
  };

  // ---- version documents ----
  const v3Document = (ctx: RequestContext) => ({
    id: 'v3.14',
    status: 'stable',
    updated: '2020-04-07T00:00:00Z',
    links: [{ rel: 'self', href: `${ctx.serviceUrl}/v3/` }],
    'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.identity-v3+json' }],
  });
  router.get('/', (ctx) => ({ status: 300, body: { versions: { values: [v3Document(ctx)] } } }), { public: true });
  router.get('/v3', (ctx) => ({ status: 200, body: { version: v3Document(ctx) } }), { public: true });

  // ---- tokens ----
  router.post(
    '/v3/auth/tokens',
    async (ctx) => {
      const body = validate<{ auth: { identity: { methods: string[]; password?: { user: { id?: string; name?: string; domain?: { id?: string; name?: string }; password: string } }; token?: { id: string } }; scope?: unknown } }>(authSchema, ctx.body ?? {});
      const { identity: identityPart, scope: scopeInput } = body.auth;
      let user: UserRow;
      let methods: string[];
      let parent: AuthContext | undefined;
      if (identityPart.methods.includes('password')) {
        const p = identityPart.password;
        if (!p) throw errors.invalidInput("Invalid input: auth/identity/password is required for the 'password' method.");
        let candidate: UserRow | undefined;
        if (p.user.id) candidate = db.get<UserRow>('SELECT * FROM users WHERE id = ?', p.user.id);
        else if (p.user.name) {
          const domainId = resolveDomainRef(p.user.domain);
          candidate = domainId ? identity.findUserByName(p.user.name, domainId) : undefined;
        } else throw errors.invalidInput('Invalid input: auth/identity/password/user needs an id, or a name and a domain.');
        user = await identity.authenticatePassword(candidate, p.user.password, ctx.stream.socket?.remoteAddress ?? 'unknown', p.user.name ?? p.user.id);
        methods = ['password'];
      } else if (identityPart.methods.includes('token')) {
        const t = identityPart.token;
        if (!t) throw errors.invalidInput("Invalid input: auth/identity/token is required for the 'token' method.");
        parent = identity.validateToken(t.id);
        user = identity.user(parent.userId);
        methods = [...new Set([...parent.methods, 'token'])];
      } else {
        throw errors.unauthorized('Unsupported authentication method: use password or token.');
      }
      let scope = parseScope(scopeInput);
      if (scope.kind === 'unscoped' && scopeInput === undefined && parent) {
        // Rescoping without a scope keeps the parent token's scope.
        if (parent.projectId) scope = { kind: 'project', projectId: parent.projectId };
        else if (parent.domainId) scope = { kind: 'domain', domainId: parent.domainId };
      } else if (scope.kind === 'unscoped' && scopeInput === undefined && user.default_project_id) {
        const project = identity.findProject(user.default_project_id);
        if (project && project.enabled && identity.effectiveRoles(user.id, project.id).length > 0) {
          scope = { kind: 'project', projectId: project.id };
        }
      }
      const context = identity.issueToken(user, scope, methods, parent ? { expiresAt: parent.expiresAt, auditId: parent.auditId } : undefined);
      const withCatalog = ctx.query.get('nocatalog') === null;
      return { status: 201, body: renderToken(ctx, context, withCatalog), headers: { 'X-Subject-Token': context.tokenId } };
    },
    { public: true },
  );

  const subjectToken = (ctx: RequestContext): AuthContext => {
    const caller = auth(ctx);
    const subject = ctx.headers['x-subject-token'];
    if (typeof subject !== 'string' || !subject) throw errors.badRequest('Missing X-Subject-Token header: name the token to check.');
    if (subject !== caller.tokenId && !caller.isAdmin) {
      // Validating another user's token is a service (admin) action.
      throw errors.forbidden('identity:validate_token');
    }
    try {
      return identity.validateToken(subject);
    } catch (error) {
      if (error instanceof PumiceError && error.status === 401) throw new PumiceError('NotFound', 'Could not find token: it is invalid, expired or revoked.');
      throw error;
    }
  };
  router.get('/v3/auth/tokens', (ctx) => {
    const context = subjectToken(ctx);
    return { status: 200, body: renderToken(ctx, context, ctx.query.get('nocatalog') === null), headers: { 'X-Subject-Token': context.tokenId } };
  });
  router.head('/v3/auth/tokens', (ctx) => {
    const context = subjectToken(ctx);
    return { status: 200, headers: { 'X-Subject-Token': context.tokenId } };
  });
  router.delete('/v3/auth/tokens', (ctx) => {
    const context = subjectToken(ctx);
    identity.revokeToken(context.tokenId);
    return { status: 204 };
  });
  router.get('/v3/auth/catalog', (ctx) => {
    const context = auth(ctx);
    if (!context.projectId && !context.domainId) throw errors.forbidden('identity:get_auth_catalog (an unscoped token has no catalog)');
    return { status: 200, body: { catalog: identity.catalog(ctx.baseUrl, context.projectId), links: listLinks(ctx, 'auth/catalog') } };
  });
  router.get('/v3/auth/projects', (ctx) => {
    const context = auth(ctx);
    const projects = db.all<ProjectRow>(
      'SELECT DISTINCT p.* FROM projects p JOIN role_assignments a ON a.target_id = p.id WHERE a.actor_id = ? AND p.enabled = 1 ORDER BY p.name',
      context.userId,
    );
    return { status: 200, body: { projects: projects.map((p) => renderProject(ctx, p)), links: listLinks(ctx, 'auth/projects') } };
  });
  router.get('/v3/auth/domains', (ctx) => {
    const context = auth(ctx);
    const domains = db.all<DomainRow>(
      'SELECT DISTINCT d.* FROM domains d JOIN role_assignments a ON a.target_id = d.id WHERE a.actor_id = ? ORDER BY d.name',
      context.userId,
    );
    return { status: 200, body: { domains: domains.map((d) => renderDomain(ctx, d)), links: listLinks(ctx, 'auth/domains') } };
  });
  router.get('/v3/auth/system', (ctx) => ({ status: 200, body: { system: [], links: listLinks(ctx, 'auth/system') } }));

  // ---- domains (read; create for operators) ----
  router.get('/v3/domains', (ctx) => {
    requireScoped(ctx, 'list_domains');
    const name = ctx.query.get('name');
    const rows = name !== null ? db.all<DomainRow>('SELECT * FROM domains WHERE name = ?', name) : db.all<DomainRow>('SELECT * FROM domains ORDER BY name');
    return { status: 200, body: { domains: rows.map((d) => renderDomain(ctx, d)), links: listLinks(ctx, 'domains') } };
  });
  router.get('/v3/domains/:id', (ctx) => {
    requireScoped(ctx, 'get_domain');
    return { status: 200, body: { domain: renderDomain(ctx, identity.domain(ctx.params['id']!)) } };
  });
  router.post('/v3/domains', (ctx) => {
    requireAdmin(ctx, 'create_domain');
    const { domain } = validate<{ domain: { name: string; description?: string; enabled?: boolean } }>(
      { type: 'object', required: ['domain'], properties: { domain: { type: 'object', required: ['name'], properties: { name: nameSchema, description: { type: 'string', maxLength: 65535 }, enabled: { type: 'boolean' }, tags: { type: 'array', items: { type: 'string' } } } } } },
      ctx.body,
    );
    return { status: 201, body: { domain: renderDomain(ctx, identity.createDomain(domain.name, domain.description ?? '')) } };
  });

  // ---- projects ----
  const projectBody: Schema = {
    type: 'object',
    properties: {
      name: nameSchema, description: { type: 'string', maxLength: 65535, nullable: true }, domain_id: idRef,
      enabled: { type: 'boolean' }, is_domain: { type: 'boolean' }, parent_id: { type: 'string', nullable: true, maxLength: 64 },
      tags: { type: 'array', items: { type: 'string', maxLength: 255 }, maxItems: 80 }, options: { type: 'object', additional: true },
    },
  };
  router.get('/v3/projects', (ctx) => {
    const context = auth(ctx);
    const conditions: string[] = [];
    const params: string[] = [];
    for (const key of ['name', 'domain_id', 'parent_id'] as const) {
      const value = ctx.query.get(key);
      if (value !== null) {
        conditions.push(`${key} = ?`);
        params.push(value);
      }
    }
    const enabled = ctx.query.get('enabled');
    if (enabled !== null) {
      conditions.push('enabled = ?');
      params.push(['false', '0', 'no'].includes(enabled.toLowerCase()) ? '0' : '1');
    }
    if (!context.isAdmin) {
      conditions.push('id IN (SELECT target_id FROM role_assignments WHERE actor_id = ?)');
      params.push(context.userId);
    }
    const rows = db.all<ProjectRow>(`SELECT * FROM projects ${conditions.length ? 'WHERE ' + conditions.join(' AND ') : ''} ORDER BY name`, ...params);
    return { status: 200, body: { projects: rows.map((p) => renderProject(ctx, p)), links: listLinks(ctx, 'projects') } };
  });
  router.get('/v3/projects/:id', (ctx) => {
    const context = auth(ctx);
    const project = identity.project(ctx.params['id']!);
    if (!context.isAdmin && context.projectId !== project.id && identity.effectiveRoles(context.userId, project.id).length === 0) {
      throw errors.forbidden('identity:get_project');
    }
    return { status: 200, body: { project: renderProject(ctx, project) } };
  });
  router.post('/v3/projects', (ctx) => {
    requireAdmin(ctx, 'create_project');
    const { project } = validate<{ project: { name?: string; description?: string | null; domain_id?: string; enabled?: boolean; tags?: string[] } }>(
      { type: 'object', required: ['project'], properties: { project: { ...projectBody, required: ['name'] } as Schema } },
      ctx.body,
    );
    const created = identity.createProject({
      name: project.name!, domainId: project.domain_id ?? defaultDomainId, description: project.description ?? '', enabled: project.enabled, tags: project.tags,
    });
    return { status: 201, body: { project: renderProject(ctx, created) } };
  });
  router.patch('/v3/projects/:id', (ctx) => {
    requireAdmin(ctx, 'update_project');
    const { project } = validate<{ project: { name?: string; description?: string | null; enabled?: boolean; tags?: string[] } }>(
      { type: 'object', required: ['project'], properties: { project: projectBody } },
      ctx.body,
    );
    const updated = identity.updateProject(ctx.params['id']!, { ...project, description: project.description ?? undefined });
    return { status: 200, body: { project: renderProject(ctx, updated) } };
  });
  router.delete('/v3/projects/:id', (ctx) => {
    requireAdmin(ctx, 'delete_project');
    identity.deleteProject(ctx.params['id']!);
    return { status: 204 };
  });

  // ---- users ----
  const userBody: Schema = {
    type: 'object',
    properties: {
      name: nameSchema, password: { type: 'string', nullable: true, maxLength: 4096 }, domain_id: idRef, enabled: { type: 'boolean' },
      default_project_id: { type: 'string', nullable: true, maxLength: 64 }, description: { type: 'string', nullable: true, maxLength: 65535 },
      email: { type: 'string', nullable: true, maxLength: 255 }, options: { type: 'object', additional: true },
    },
  };
  interface UserInput { name?: string; password?: string | null; domain_id?: string; enabled?: boolean; default_project_id?: string | null; description?: string | null; email?: string | null }
  router.get('/v3/users', (ctx) => {
    requireAdmin(ctx, 'list_users');
    const conditions: string[] = [];
    const params: string[] = [];
    for (const key of ['name', 'domain_id'] as const) {
      const value = ctx.query.get(key);
      if (value !== null) {
        conditions.push(`${key} = ?`);
        params.push(value);
      }
    }
    const rows = db.all<UserRow>(`SELECT * FROM users ${conditions.length ? 'WHERE ' + conditions.join(' AND ') : ''} ORDER BY name`, ...params);
    return { status: 200, body: { users: rows.map((u) => renderUser(ctx, u)), links: listLinks(ctx, 'users') } };
  });
  router.get('/v3/users/:id', (ctx) => {
    const context = auth(ctx);
    if (!context.isAdmin && context.userId !== ctx.params['id']) throw errors.forbidden('identity:get_user');
    return { status: 200, body: { user: renderUser(ctx, identity.user(ctx.params['id']!)) } };
  });
  router.post('/v3/users', async (ctx) => {
    requireAdmin(ctx, 'create_user');
    const { user } = validate<{ user: UserInput }>({ type: 'object', required: ['user'], properties: { user: { ...userBody, required: ['name'] } as Schema } }, ctx.body);
    const created = await identity.createUser({
      name: user.name!, domainId: user.domain_id ?? defaultDomainId, password: user.password, enabled: user.enabled,
      defaultProjectId: user.default_project_id, description: user.description, email: user.email,
    });
    return { status: 201, body: { user: renderUser(ctx, created) } };
  });
  router.patch('/v3/users/:id', async (ctx) => {
    requireAdmin(ctx, 'update_user');
    const { user } = validate<{ user: UserInput }>({ type: 'object', required: ['user'], properties: { user: userBody } }, ctx.body);
    const updated = await identity.updateUser(ctx.params['id']!, {
      name: user.name, password: user.password, enabled: user.enabled, defaultProjectId: user.default_project_id, description: user.description, email: user.email,
    });
    return { status: 200, body: { user: renderUser(ctx, updated) } };
  });
  router.delete('/v3/users/:id', (ctx) => {
    requireAdmin(ctx, 'delete_user');
    identity.deleteUser(ctx.params['id']!);
    return { status: 204 };
  });
  router.post('/v3/users/:id/password', async (ctx) => {
    const context = auth(ctx);
    if (context.userId !== ctx.params['id']) throw errors.forbidden('identity:change_password');
    const { user } = validate<{ user: { password: string; original_password: string } }>(
      { type: 'object', required: ['user'], properties: { user: { type: 'object', required: ['password', 'original_password'], properties: { password: { type: 'string', minLength: 1, maxLength: 4096 }, original_password: { type: 'string', maxLength: 4096 } } } } },
      ctx.body,
    );
    await identity.authenticatePassword(identity.user(context.userId), user.original_password, ctx.stream.socket?.remoteAddress ?? 'unknown');
    await identity.updateUser(context.userId, { password: user.password });
    return { status: 204 };
  });
  router.get('/v3/users/:id/projects', (ctx) => {
    const context = auth(ctx);
    if (!context.isAdmin && context.userId !== ctx.params['id']) throw errors.forbidden('identity:list_user_projects');
    const rows = db.all<ProjectRow>(
      'SELECT DISTINCT p.* FROM projects p JOIN role_assignments a ON a.target_id = p.id WHERE a.actor_id = ? ORDER BY p.name',
      identity.user(ctx.params['id']!).id,
    );
    return { status: 200, body: { projects: rows.map((p) => renderProject(ctx, p)), links: listLinks(ctx, `users/${ctx.params['id']}/projects`) } };
  });
  router.get('/v3/users/:id/groups', (ctx) => {
    auth(ctx);
    identity.user(ctx.params['id']!);
    return { status: 200, body: { groups: [], links: listLinks(ctx, `users/${ctx.params['id']}/groups`) } };
  });
  router.get('/v3/groups', (ctx) => {
    requireAdmin(ctx, 'list_groups');
    return { status: 200, body: { groups: [], links: listLinks(ctx, 'groups') } };
  });

  // ---- roles ----
  const roleBody: Schema = { type: 'object', properties: { name: nameSchema, description: { type: 'string', nullable: true, maxLength: 255 }, domain_id: { type: 'string', nullable: true }, options: { type: 'object', additional: true } } };
  router.get('/v3/roles', (ctx) => {
    requireScoped(ctx, 'list_roles');
    const name = ctx.query.get('name');
    const rows = name !== null ? db.all<RoleRow>('SELECT * FROM roles WHERE name = ?', name) : db.all<RoleRow>('SELECT * FROM roles ORDER BY name');
    return { status: 200, body: { roles: rows.map((r) => renderRole(ctx, r)), links: listLinks(ctx, 'roles') } };
  });
  router.get('/v3/roles/:id', (ctx) => {
    requireScoped(ctx, 'get_role');
    return { status: 200, body: { role: renderRole(ctx, identity.role(ctx.params['id']!)) } };
  });
  router.post('/v3/roles', (ctx) => {
    requireAdmin(ctx, 'create_role');
    const { role } = validate<{ role: { name: string; description?: string | null } }>({ type: 'object', required: ['role'], properties: { role: { ...roleBody, required: ['name'] } as Schema } }, ctx.body);
    return { status: 201, body: { role: renderRole(ctx, identity.createRole(role.name, role.description ?? null)) } };
  });
  router.patch('/v3/roles/:id', (ctx) => {
    requireAdmin(ctx, 'update_role');
    const { role } = validate<{ role: { name?: string; description?: string | null } }>({ type: 'object', required: ['role'], properties: { role: roleBody } }, ctx.body);
    return { status: 200, body: { role: renderRole(ctx, identity.updateRole(ctx.params['id']!, role)) } };
  });
  router.delete('/v3/roles/:id', (ctx) => {
    requireAdmin(ctx, 'delete_role');
    identity.deleteRole(ctx.params['id']!);
    return { status: 204 };
  });

  // ---- role assignments ----
  for (const targetType of ['project', 'domain'] as const) {
    const base = `/v3/${targetType}s/:target/users/:user/roles`;
    const checkTarget = (id: string) => (targetType === 'project' ? identity.project(id) : identity.domain(id));
    router.get(base, (ctx) => {
      const context = auth(ctx);
      if (!context.isAdmin && context.userId !== ctx.params['user']) throw errors.forbidden('identity:list_grants');
      checkTarget(ctx.params['target']!);
      const rows = db.all<RoleRow>(
        'SELECT r.* FROM role_assignments a JOIN roles r ON r.id = a.role_id WHERE a.actor_id = ? AND a.target_id = ? ORDER BY r.name',
        ctx.params['user']!, ctx.params['target']!,
      );
      return { status: 200, body: { roles: rows.map((r) => renderRole(ctx, r)), links: listLinks(ctx, ctx.path.slice(4)) } };
    });
    router.put(`${base}/:role`, (ctx) => {
      requireAdmin(ctx, 'create_grant');
      identity.grantRole(ctx.params['user']!, targetType, ctx.params['target']!, ctx.params['role']!);
      return { status: 204 };
    });
    router.head(`${base}/:role`, (ctx) => {
      requireAdmin(ctx, 'check_grant');
      checkTarget(ctx.params['target']!);
      if (!identity.hasRole(ctx.params['user']!, ctx.params['target']!, ctx.params['role']!)) throw errors.notFound('Role assignment', ctx.params['role']!);
      return { status: 204 };
    });
    router.get(`${base}/:role`, (ctx) => {
      requireAdmin(ctx, 'check_grant');
      if (!identity.hasRole(ctx.params['user']!, ctx.params['target']!, ctx.params['role']!)) throw errors.notFound('Role assignment', ctx.params['role']!);
      return { status: 204 };
    });
    router.delete(`${base}/:role`, (ctx) => {
      requireAdmin(ctx, 'revoke_grant');
      identity.revokeRole(ctx.params['user']!, ctx.params['target']!, ctx.params['role']!);
      return { status: 204 };
    });
  }
  router.get('/v3/role_assignments', (ctx) => {
    const context = auth(ctx);
    const q = ctx.query;
    const userFilter = q.get('user.id');
    if (!context.isAdmin && userFilter !== context.userId) throw errors.forbidden('identity:list_role_assignments');
    const conditions: string[] = [];
    const params: string[] = [];
    const add = (sql: string, value: string | null) => {
      if (value !== null) {
        conditions.push(sql);
        params.push(value);
      }
    };
    add('a.actor_id = ?', userFilter);
    add("a.target_id = ? AND a.target_type = 'project'", q.get('scope.project.id'));
    add("a.target_id = ? AND a.target_type = 'domain'", q.get('scope.domain.id'));
    add('a.role_id = ?', q.get('role.id'));
    if (q.get('group.id') !== null) return { status: 200, body: { role_assignments: [], links: listLinks(ctx, 'role_assignments') } };
    const includeNames = q.has('include_names') && q.get('include_names') !== 'false' && q.get('include_names') !== '0';
    const rows = db.all<{ actor_id: string; target_id: string; target_type: 'project' | 'domain'; role_id: string; role_name: string; user_name: string; user_domain: string }>(
      `SELECT a.*, r.name AS role_name, u.name AS user_name, u.domain_id AS user_domain FROM role_assignments a
       JOIN roles r ON r.id = a.role_id JOIN users u ON u.id = a.actor_id
       ${conditions.length ? 'WHERE ' + conditions.join(' AND ') : ''} ORDER BY a.actor_id, a.target_id, r.name`,
      ...params,
    );
    const domainRef = (id: string) => {
      const d = identity.domain(id);
      return { id: d.id, name: d.name };
    };
    const assignments = rows.map((row) => {
      const role: Record<string, unknown> = { id: row.role_id };
      const user: Record<string, unknown> = { id: row.actor_id };
      let scope: Record<string, unknown>;
      if (row.target_type === 'project') {
        const project: Record<string, unknown> = { id: row.target_id };
        if (includeNames) {
          const p = identity.findProject(row.target_id);
          project['name'] = p?.name;
          if (p) project['domain'] = domainRef(p.domain_id);
        }
        scope = { project };
      } else {
        const domain: Record<string, unknown> = { id: row.target_id };
        if (includeNames) domain['name'] = identity.domain(row.target_id).name;
        scope = { domain };
      }
      if (includeNames) {
        role['name'] = row.role_name;
        user['name'] = row.user_name;
        user['domain'] = domainRef(row.user_domain);
      }
      return {
        role, user, scope,
        links: { assignment: self(ctx, `${row.target_type}s/${row.target_id}/users/${row.actor_id}/roles/${row.role_id}`) },
      };
    });
    return { status: 200, body: { role_assignments: assignments, links: listLinks(ctx, 'role_assignments') } };
  });

  // ---- regions ----
  router.get('/v3/regions', (ctx) => {
    auth(ctx);
    return { status: 200, body: { regions: db.all<RegionRow>('SELECT * FROM regions ORDER BY id').map((r) => renderRegion(ctx, r)), links: listLinks(ctx, 'regions') } };
  });
  router.get('/v3/regions/:id', (ctx) => {
    auth(ctx);
    const region = db.get<RegionRow>('SELECT * FROM regions WHERE id = ?', ctx.params['id']!);
    if (!region) throw new PumiceError('NotFound', `Could not find region: ${ctx.params['id']}.`);
    return { status: 200, body: { region: renderRegion(ctx, region) } };
  });
  router.post('/v3/regions', (ctx) => {
    requireAdmin(ctx, 'create_region');
    const { region } = validate<{ region: { id?: string; description?: string; parent_region_id?: string | null } }>(
      { type: 'object', required: ['region'], properties: { region: { type: 'object', properties: { id: idRef, description: { type: 'string', maxLength: 255 }, parent_region_id: { type: 'string', nullable: true } } } } },
      ctx.body,
    );
    const id = region.id ?? newId();
    if (db.get('SELECT 1 FROM regions WHERE id = ?', id)) throw errors.conflict(`Conflict occurred attempting to store region - Duplicate ID, ${id}.`);
    if (region.parent_region_id && !db.get('SELECT 1 FROM regions WHERE id = ?', region.parent_region_id)) {
      throw new PumiceError('NotFound', `Could not find region: ${region.parent_region_id} (the parent_region_id); create the parent region first.`);
    }
    db.run('INSERT INTO regions (id, description, parent_region_id) VALUES (?, ?, ?)', id, region.description ?? '', region.parent_region_id ?? null);
    return { status: 201, body: { region: renderRegion(ctx, db.get<RegionRow>('SELECT * FROM regions WHERE id = ?', id)!) } };
  });
  router.delete('/v3/regions/:id', (ctx) => {
    requireAdmin(ctx, 'delete_region');
    if (db.run('DELETE FROM regions WHERE id = ?', ctx.params['id']!).changes === 0) throw new PumiceError('NotFound', `Could not find region: ${ctx.params['id']}.`);
    return { status: 204 };
  });

  // ---- services ----
  const serviceBody: Schema = { type: 'object', properties: { type: nameSchema, name: { type: 'string', maxLength: 255 }, description: { type: 'string', maxLength: 65535, nullable: true }, enabled: { type: 'boolean' } } };
  const getService = (id: string): CatalogServiceRow =>
    db.get<CatalogServiceRow>('SELECT * FROM catalog_services WHERE id = ?', id) ?? (() => { throw new PumiceError('NotFound', `Could not find service: ${id}.`); })();
  router.get('/v3/services', (ctx) => {
    requireScoped(ctx, 'list_services');
    const type = ctx.query.get('type');
    const rows = identity.services().filter((s) => type === null || s.type === type);
    return { status: 200, body: { services: rows.map((s) => renderService(ctx, s)), links: listLinks(ctx, 'services') } };
  });
  router.get('/v3/services/:id', (ctx) => {
    requireScoped(ctx, 'get_service');
    return { status: 200, body: { service: renderService(ctx, getService(ctx.params['id']!)) } };
  });
  router.post('/v3/services', (ctx) => {
    requireAdmin(ctx, 'create_service');
    const { service } = validate<{ service: { type: string; name?: string; description?: string | null; enabled?: boolean } }>(
      { type: 'object', required: ['service'], properties: { service: { ...serviceBody, required: ['type'] } as Schema } }, ctx.body,
    );
    const id = newId();
    db.run('INSERT INTO catalog_services (id, type, name, description, enabled) VALUES (?, ?, ?, ?, ?)', id, service.type, service.name ?? '', service.description ?? '', service.enabled === false ? 0 : 1);
    return { status: 201, body: { service: renderService(ctx, getService(id)) } };
  });
  router.patch('/v3/services/:id', (ctx) => {
    requireAdmin(ctx, 'update_service');
    const current = getService(ctx.params['id']!);
    const { service } = validate<{ service: { type?: string; name?: string; description?: string | null; enabled?: boolean } }>(
      { type: 'object', required: ['service'], properties: { service: serviceBody } }, ctx.body,
    );
    db.run('UPDATE catalog_services SET type = ?, name = ?, description = ?, enabled = ? WHERE id = ?',
      service.type ?? current.type, service.name ?? current.name, service.description ?? current.description,
      service.enabled === undefined ? current.enabled : service.enabled ? 1 : 0, current.id);
    return { status: 200, body: { service: renderService(ctx, getService(current.id)) } };
  });
  router.delete('/v3/services/:id', (ctx) => {
    requireAdmin(ctx, 'delete_service');
    getService(ctx.params['id']!);
    db.run('DELETE FROM catalog_services WHERE id = ?', ctx.params['id']!);
    return { status: 204 };
  });

  // ---- endpoints ----
  const endpointBody: Schema = {
    type: 'object',
    properties: {
      interface: { type: 'string', enum: ['public', 'internal', 'admin'] }, region: { type: 'string', nullable: true }, region_id: { type: 'string', nullable: true },
      service_id: idRef, url: { type: 'string', minLength: 1, maxLength: 1024, pattern: /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/|^\$\(base_url\)s/, patternHelp: 'an absolute URL' }, enabled: { type: 'boolean' },
    },
  };
  const getEndpoint = (id: string): EndpointRow =>
    db.get<EndpointRow>('SELECT * FROM catalog_endpoints WHERE id = ?', id) ?? (() => { throw new PumiceError('NotFound', `Could not find endpoint: ${id}.`); })();
  router.get('/v3/endpoints', (ctx) => {
    requireScoped(ctx, 'list_endpoints');
    const q = ctx.query;
    const rows = identity.endpoints().filter((e) =>
      (q.get('service_id') === null || e.service_id === q.get('service_id')) &&
      (q.get('interface') === null || e.interface === q.get('interface')) &&
      (q.get('region_id') === null || e.region_id === q.get('region_id')));
    return { status: 200, body: { endpoints: rows.map((e) => renderEndpoint(ctx, e)), links: listLinks(ctx, 'endpoints') } };
  });
  router.get('/v3/endpoints/:id', (ctx) => {
    requireScoped(ctx, 'get_endpoint');
    return { status: 200, body: { endpoint: renderEndpoint(ctx, getEndpoint(ctx.params['id']!)) } };
  });
  router.post('/v3/endpoints', (ctx) => {
    requireAdmin(ctx, 'create_endpoint');
    const { endpoint } = validate<{ endpoint: { interface: string; region?: string | null; region_id?: string | null; service_id: string; url: string; enabled?: boolean } }>(
      { type: 'object', required: ['endpoint'], properties: { endpoint: { ...endpointBody, required: ['interface', 'service_id', 'url'] } as Schema } }, ctx.body,
    );
    getService(endpoint.service_id);
    const regionId = endpoint.region_id ?? endpoint.region ?? null;
    if (regionId && !db.get('SELECT 1 FROM regions WHERE id = ?', regionId)) {
      throw errors.badRequest(`Region ${regionId} does not exist: create it first (openstack region create ${regionId}).`);
    }
    const id = newId();
    db.run('INSERT INTO catalog_endpoints (id, service_id, interface, region_id, url, enabled) VALUES (?, ?, ?, ?, ?, ?)', id, endpoint.service_id, endpoint.interface, regionId, endpoint.url, endpoint.enabled === false ? 0 : 1);
    return { status: 201, body: { endpoint: renderEndpoint(ctx, getEndpoint(id)) } };
  });
  router.patch('/v3/endpoints/:id', (ctx) => {
    requireAdmin(ctx, 'update_endpoint');
    const current = getEndpoint(ctx.params['id']!);
    const { endpoint } = validate<{ endpoint: { interface?: string; region?: string | null; region_id?: string | null; service_id?: string; url?: string; enabled?: boolean } }>(
      { type: 'object', required: ['endpoint'], properties: { endpoint: endpointBody } }, ctx.body,
    );
    if (endpoint.service_id) getService(endpoint.service_id);
    const newRegionId = endpoint.region_id ?? endpoint.region;
    if (newRegionId && !db.get('SELECT 1 FROM regions WHERE id = ?', newRegionId)) {
      throw errors.badRequest(`Region ${newRegionId} does not exist: create it first (openstack region create ${newRegionId}).`);
    }
    db.run('UPDATE catalog_endpoints SET interface = ?, region_id = ?, service_id = ?, url = ?, enabled = ? WHERE id = ?',
      endpoint.interface ?? current.interface, endpoint.region_id ?? endpoint.region ?? current.region_id, endpoint.service_id ?? current.service_id,
      endpoint.url ?? current.url, endpoint.enabled === undefined ? current.enabled : endpoint.enabled ? 1 : 0, current.id);
    return { status: 200, body: { endpoint: renderEndpoint(ctx, getEndpoint(current.id)) } };
  });
  router.delete('/v3/endpoints/:id', (ctx) => {
    requireAdmin(ctx, 'delete_endpoint');
    getEndpoint(ctx.params['id']!);
    db.run('DELETE FROM catalog_endpoints WHERE id = ?', ctx.params['id']!);
    return { status: 204 };
  });

  function resolveDomainRef(ref: { id?: string; name?: string } | undefined): string | undefined {
    if (!ref) return defaultDomainId;
    if (ref.id) return ref.id;
    if (ref.name) return identity.findDomainByName(ref.name)?.id;
    return undefined;
  }

  function parseScope(input: unknown): Scope {
    if (input === undefined || input === null) return { kind: 'unscoped' };
    const scope = validate<{ project?: { id?: string; name?: string; domain?: { id?: string; name?: string } }; domain?: { id?: string; name?: string }; system?: unknown; 'OS-TRUST:trust'?: unknown }>(
      { type: 'object', properties: { project: { type: 'object', properties: { id: idRef, name: nameSchema, domain: domainRefSchema } }, domain: domainRefSchema, system: { type: 'any' } } },
      input,
      'auth/scope',
    );
    if (scope.project) {
      if (scope.project.id) return { kind: 'project', projectId: requireFound(identity.findProject(scope.project.id), scope.project.id).id };
      if (!scope.project.name) throw errors.invalidInput('Invalid input: auth/scope/project needs an id, or a name and a domain.');
      if (!scope.project.domain) throw errors.invalidInput('Invalid input: auth/scope/project/domain is required when the project is named (set OS_PROJECT_DOMAIN_NAME=Default).');
      const domainId = resolveDomainRef(scope.project.domain);
      const project = domainId ? identity.findProjectByName(scope.project.name, domainId) : undefined;
      return { kind: 'project', projectId: requireFound(project, scope.project.name).id };
    }
    if (scope.domain) {
      const domainId = resolveDomainRef(scope.domain);
      if (!domainId || !db.get('SELECT 1 FROM domains WHERE id = ?', domainId)) throw errors.unauthorized(`Could not find domain: ${scope.domain.id ?? scope.domain.name}.`);
      return { kind: 'domain', domainId };
    }
    if (scope.system) throw errors.unauthorized('System-scoped tokens are not supported by Pumice: scope the token to a project (the admin role on any project is cloud admin).');
    return { kind: 'unscoped' };
  }

  function requireFound<T>(value: T | undefined, ref: string): T {
    // Keystone answers 401 for a scope the caller cannot use, without telling whether it exists.
    if (!value) throw errors.unauthorized(`Could not find project: ${ref}, or you have no role on it.`);
    return value;
  }

  return router;
}

export type { Reply };
