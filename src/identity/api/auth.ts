/**
 * Routes of /v3/auth: issue, validate, check and revoke tokens, and what the
 * caller's token may be scoped to (catalog, projects, domains, system).
 */
import { Type, type Static } from '@sinclair/typebox';
import { errors, PumiceError } from '../../errors.ts';
import { route, type AnyRouteSpec } from '../../http/declare.ts';
import type { PolicyTarget } from '../../http/policy.ts';
import type { AuthContext, RequestContext } from '../../http/router.ts';
import { defaultDomainId, systemTargetId, type ApplicationCredentialRow, type IdentityService, type Scope, type UserRow } from '../identity.ts';
import { listLinks, renderDomain, renderProject, renderToken } from './render.ts';
import { Catalog, collection, Domain, DomainRefInput, envelope, IdRef, ListLinks, Name, Project, Token } from './schemas.ts';

const strict = { additionalProperties: false } as const;

const ScopeInput = Type.Object(
  {
    project: Type.Optional(Type.Object({ id: Type.Optional(IdRef), name: Type.Optional(Name), domain: Type.Optional(DomainRefInput) }, strict)),
    domain: Type.Optional(DomainRefInput),
    system: Type.Optional(Type.Object({ all: Type.Literal(true) }, strict)),
    // OS-TRUST: a token scoped to a trust's project with the trust's roles (trusts.ts).
    'OS-TRUST:trust': Type.Optional(Type.Object({ id: IdRef }, strict)),
  },
  strict,
);

const AuthBody = Type.Object(
  {
    auth: Type.Object(
      {
        identity: Type.Object(
          {
            methods: Type.Array(Type.String({ enum: ['password', 'token', 'application_credential'] }), { maxItems: 3 }),
            password: Type.Optional(Type.Object(
              {
                user: Type.Object(
                  { id: Type.Optional(IdRef), name: Type.Optional(Name), domain: Type.Optional(DomainRefInput), password: Type.String({ maxLength: 4096 }) },
                  strict,
                ),
              },
              strict,
            )),
            token: Type.Optional(Type.Object({ id: Type.String({ maxLength: 1024 }) }, strict)),
            application_credential: Type.Optional(Type.Object(
              {
                id: Type.Optional(IdRef), name: Type.Optional(Name), secret: Type.String({ minLength: 1, maxLength: 4096 }),
                user: Type.Optional(Type.Object({ id: Type.Optional(IdRef), name: Type.Optional(Name), domain: Type.Optional(DomainRefInput) }, strict)),
              },
              strict,
            )),
          },
          strict,
        ),
        // "unscoped": an explicitly unscoped token, even for a user with a default project (Keystone's api-ref).
        scope: Type.Optional(Type.Union([ScopeInput, Type.Literal('unscoped')])),
      },
      strict,
    ),
  },
  strict,
);

const TokenQuery = Type.Object({ nocatalog: Type.Optional(Type.String()), allow_expired: Type.Optional(Type.String()) }, { additionalProperties: true });

const TokenBody = envelope('token', Token);

export function authRoutes(identity: IdentityService): AnyRouteSpec[] {
  const resolveDomainRef = (ref: { id?: string; name?: string } | undefined): string | undefined => {
    if (!ref) return defaultDomainId;
    if (ref.id) return ref.id;
    if (ref.name) return identity.findDomainByName(ref.name)?.id;
    return undefined;
  };
  // Keystone answers 401 for a scope the caller cannot use, without telling whether it exists.
  const requireFound = <T>(value: T | undefined, ref: string): T => {
    if (!value) throw errors.unauthorized(`Could not find project: ${ref}, or you have no role on it.`);
    return value;
  };
  const parseScope = (scope: Static<typeof ScopeInput> | 'unscoped' | undefined): Scope => {
    if (scope === undefined || scope === 'unscoped') return { kind: 'unscoped' };
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
      if (!domainId || !identity.findDomain(domainId)) throw errors.unauthorized(`Could not find domain: ${scope.domain.id ?? scope.domain.name}.`);
      return { kind: 'domain', domainId };
    }
    if (scope.system !== undefined) return { kind: 'system' };
    return { kind: 'unscoped' };
  };

  /** The token X-Subject-Token names, or null when it is missing or not valid. */
  const subjectOrNull = (ctx: RequestContext): AuthContext | null => {
    const subject = ctx.headers['x-subject-token'];
    if (typeof subject !== 'string' || !subject) return null;
    try {
      return identity.validateToken(subject);
    } catch (error) {
      if (error instanceof PumiceError && error.status === 401) return null;
      throw error;
    }
  };
  // Keystone's target: the subject token's user, absent for a token that is not valid (only admins then learn it is a 404).
  const subjectTarget = (ctx: RequestContext): PolicyTarget => ({ 'target.token.user_id': subjectOrNull(ctx)?.userId ?? null });
  const subject = (ctx: RequestContext): AuthContext => {
    const header = ctx.headers['x-subject-token'];
    if (typeof header !== 'string' || !header) throw errors.badRequest('Missing X-Subject-Token header: name the token to check.');
    const context = subjectOrNull(ctx);
    if (!context) throw new PumiceError('NotFound', 'Could not find token: it is invalid, expired or revoked.');
    return context;
  };
  const withCatalog = (query: Static<typeof TokenQuery>) => query.nocatalog === undefined;

  return [
    route({
      method: 'POST', path: '/v3/auth/tokens', policy: '@', options: { public: true },
      summary: 'Issue a token (password, token or application_credential method), scoped to a project, a domain or the system, or unscoped',
      body: AuthBody, query: TokenQuery,
      responses: { 201: TokenBody },
      async handler(ctx) {
        const { identity: identityPart, scope: scopeInput } = ctx.body.auth;
        let user: UserRow;
        let methods: string[];
        let parent: AuthContext | undefined;
        let appCred: ApplicationCredentialRow | undefined;
        if (identityPart.methods.includes('application_credential')) {
          const a = identityPart.application_credential;
          if (!a) throw errors.invalidInput("Invalid input: auth/identity/application_credential is required for the 'application_credential' method.");
          let owner: UserRow | undefined;
          if (!a.id) {
            if (!a.name || !a.user) throw errors.invalidInput('Invalid input: auth/identity/application_credential needs an id, or a name and its user (id, or name and domain).');
            if (a.user.id) owner = identity.findUser(a.user.id);
            else if (a.user.name) {
              const domainId = resolveDomainRef(a.user.domain);
              owner = domainId ? identity.findUserByName(a.user.name, domainId) : undefined;
            } else throw errors.invalidInput('Invalid input: auth/identity/application_credential/user needs an id, or a name and a domain.');
            if (!owner) throw errors.unauthorized('The request you have made requires authentication.');
          }
          const found = await identity.applicationCredentials.authenticate({ id: a.id, name: a.name, user: owner }, a.secret);
          user = found.user;
          appCred = found.row;
          methods = ['application_credential'];
        } else if (identityPart.methods.includes('password')) {
          const p = identityPart.password;
          if (!p) throw errors.invalidInput("Invalid input: auth/identity/password is required for the 'password' method.");
          let candidate: UserRow | undefined;
          if (p.user.id) candidate = identity.findUser(p.user.id);
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
          throw errors.unauthorized('Unsupported authentication method: use password, token or application_credential.');
        }
        // A token from a trust is never a way to a wider token: with impersonation it would become the trustor's own.
        if (parent && identity.tokenExtras(parent.tokenId).trust) {
          throw new PumiceError('Forbidden', 'A token from a trust cannot be exchanged for another token: the trustee authenticates again (password or own token) with the trust scope.');
        }
        const trustRef = typeof scopeInput === 'object' ? scopeInput['OS-TRUST:trust'] : undefined;
        if (trustRef) {
          if (scopeInput !== undefined && scopeInput !== 'unscoped' && (scopeInput.project || scopeInput.domain || scopeInput.system)) {
            throw errors.invalidInput('Invalid input: auth/scope names a trust and another scope; a token from a trust is scoped to the trust\'s project, so give OS-TRUST:trust alone.');
          }
          if (appCred) throw new PumiceError('Forbidden', 'A token from an application credential cannot use a trust: authenticate as the trustee with a password or a token.');
          const { trust, tokenUser } = identity.trusts.consume(trustRef.id, user);
          if (!trust.project_id) throw new PumiceError('Forbidden', `Trust ${trust.id} delegates no roles on a project: a token from it needs a trust with a project_id.`);
          const context = identity.issueToken(
            tokenUser, { kind: 'project', projectId: trust.project_id }, methods,
            parent ? { expiresAt: parent.expiresAt, auditId: identity.auditChainOf(parent.tokenId) ?? parent.auditId } : undefined,
            undefined, trust,
          );
          return { status: 201, body: renderToken(ctx, identity, context, withCatalog(ctx.queryParams)), headers: { 'X-Subject-Token': context.tokenId } };
        }
        let scope = parseScope(scopeInput);
        // An application credential's token is scoped to its project whatever the request asks (Keystone).
        const appCredOfChain = appCred ?? (parent ? identity.tokenExtras(parent.tokenId).applicationCredential ?? undefined : undefined);
        if (appCredOfChain) {
          if (scopeInput !== undefined && !(scope.kind === 'project' && scope.projectId === appCredOfChain.project_id)) {
            throw errors.unauthorized(`A token from application credential ${appCredOfChain.id} can only be scoped to its project ${appCredOfChain.project_id}: leave out the scope.`);
          }
          scope = { kind: 'project', projectId: appCredOfChain.project_id };
        }
        if (scope.kind === 'unscoped' && scopeInput === undefined && parent) {
          // Rescoping without a scope keeps the parent token's scope.
          if (parent.projectId) scope = { kind: 'project', projectId: parent.projectId };
          else if (parent.domainId) scope = { kind: 'domain', domainId: parent.domainId };
          else if (identity.tokenExtras(parent.tokenId).system) scope = { kind: 'system' };
        } else if (scope.kind === 'unscoped' && scopeInput === undefined && user.default_project_id) {
          const project = identity.findProject(user.default_project_id);
          if (project && project.enabled && identity.effectiveRoles(user.id, project.id).length > 0) {
            scope = { kind: 'project', projectId: project.id };
          }
        }
        // The new token's chain starts where the parent's did (Keystone: audit_ids[1] is the chain's first token).
        const context = identity.issueToken(
          user, scope, methods,
          parent ? { expiresAt: parent.expiresAt, auditId: identity.auditChainOf(parent.tokenId) ?? parent.auditId, applicationCredentialId: appCredOfChain?.id ?? null } : undefined,
          appCred,
        );
        return { status: 201, body: renderToken(ctx, identity, context, withCatalog(ctx.queryParams)), headers: { 'X-Subject-Token': context.tokenId } };
      },
    }),
    // HEAD before GET: the router would otherwise answer HEAD with the GET declaration.
    route({
      method: 'HEAD', path: '/v3/auth/tokens', policy: 'identity:check_token', target: subjectTarget,
      summary: 'Check the token named by X-Subject-Token',
      responses: { 200: null },
      handler(ctx) {
        return { status: 200, headers: { 'X-Subject-Token': subject(ctx).tokenId } };
      },
    }),
    route({
      method: 'GET', path: '/v3/auth/tokens', policy: 'identity:validate_token', target: subjectTarget,
      summary: 'Validate the token named by X-Subject-Token and show it',
      query: TokenQuery,
      responses: { 200: TokenBody },
      handler(ctx) {
        const context = subject(ctx);
        return { status: 200, body: renderToken(ctx, identity, context, withCatalog(ctx.queryParams)), headers: { 'X-Subject-Token': context.tokenId } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/auth/tokens', policy: 'identity:revoke_token', target: subjectTarget,
      summary: 'Revoke the token named by X-Subject-Token',
      responses: { 204: null },
      handler(ctx) {
        identity.revokeToken(subject(ctx).tokenId);
        return { status: 204 };
      },
    }),
    route({
      method: 'GET', path: '/v3/auth/catalog', policy: 'identity:get_auth_catalog',
      summary: "The catalog of the caller's token",
      responses: { 200: Type.Object({ catalog: Catalog, links: ListLinks }, strict) },
      handler(ctx) {
        const context = ctx.auth!;
        // Keystone refuses this to an unscoped token in code, not in policy: such a token has no catalog.
        if (!context.projectId && !context.domainId) throw errors.forbidden('identity:get_auth_catalog (an unscoped token has no catalog)');
        return { status: 200, body: { catalog: identity.catalog(ctx.baseUrl, context.projectId), links: listLinks(ctx, 'auth/catalog') } };
      },
    }),
    route({
      method: 'GET', path: '/v3/auth/projects', policy: 'identity:get_auth_projects',
      summary: 'Projects the caller may scope a token to',
      responses: { 200: collection('projects', Project) },
      handler(ctx) {
        const projects = identity.listProjects({ assignedTo: ctx.auth!.userId, enabled: true });
        return { status: 200, body: { projects: projects.map((p) => renderProject(ctx, p)), links: listLinks(ctx, 'auth/projects') } };
      },
    }),
    route({
      method: 'GET', path: '/v3/auth/domains', policy: 'identity:get_auth_domains',
      summary: 'Domains the caller may scope a token to',
      responses: { 200: collection('domains', Domain) },
      handler(ctx) {
        const domains = identity.domainsWithRoleFor(ctx.auth!.userId);
        return { status: 200, body: { domains: domains.map((d) => renderDomain(ctx, d)), links: listLinks(ctx, 'auth/domains') } };
      },
    }),
    route({
      method: 'GET', path: '/v3/auth/system', policy: 'identity:get_auth_system',
      summary: 'System scopes the caller may use: [{"all": true}] when they hold a role on the system',
      responses: { 200: Type.Object({ system: Type.Array(Type.Object({ all: Type.Boolean() }, strict), { maxItems: 1 }), links: ListLinks }, strict) },
      handler(ctx) {
        const system = identity.effectiveRoles(ctx.auth!.userId, systemTargetId).length > 0 ? [{ all: true }] : [];
        return { status: 200, body: { system, links: listLinks(ctx, 'auth/system') } };
      },
    }),
  ];
}
