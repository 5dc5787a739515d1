/**
 * Routes of /v3/users/{user_id}/application_credentials: a user creates
 * credentials for programs (Terraform, CI jobs) from a project-scoped token,
 * with a subset of that token's roles; the secret is in the create answer
 * only. Administrators may read and delete any user's. A token issued from a
 * restricted application credential cannot create or delete application
 * credentials (Keystone's safeguard against a leaked credential renewing itself).
 */
import { Type } from '@sinclair/typebox';
import { errors, PumiceError } from '../../errors.ts';
import { route, Nullable, type AnyRouteSpec } from '../../http/declare.ts';
import type { RequestContext } from '../../http/router.ts';
import type { ApplicationCredentialRow, IdentityService, RoleRow } from '../identity.ts';
import { listLinks, selfUrl } from './render.ts';
import type { AccessRule } from '../access-rules.ts';
import { collection, envelope, IdParam, IdRef, Name } from './schemas.ts';

const strict = { additionalProperties: false } as const;

const AccessRuleEntity = Type.Object({ id: Type.String(), service: Type.String(), method: Type.String(), path: Type.String() }, strict);
// Either an existing rule's id alone or service, method and path (checked in access-rules.ts).
const AccessRuleInput = Type.Object({
  id: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  service: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  method: Type.Optional(Type.String({ minLength: 1, maxLength: 16 })),
  path: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })),
}, strict);
/** Keystone's access rule entity (GET /v3/users/{id}/access_rules/{id}). */
const AccessRuleResource = Type.Object({ id: Type.String(), service: Type.String(), method: Type.String(), path: Type.String(), links: Type.Object({ self: Type.String({ format: 'uri' }) }, strict) }, strict);
const AccessRuleParams = Type.Object({ user_id: IdParam, access_rule_id: IdParam });
const AppCredRole = Type.Object({ id: Type.String(), name: Type.String(), domain_id: Nullable(Type.String()) }, strict);
const appCredFields = {
  id: Type.String(), name: Type.String(), description: Nullable(Type.String()), expires_at: Nullable(Type.String({ format: 'date-time' })),
  unrestricted: Type.Boolean(), project_id: Type.String(), user_id: Type.String(), roles: Type.Array(AppCredRole),
  access_rules: Type.Array(AccessRuleEntity),
  links: Type.Object({ self: Type.String({ format: 'uri' }) }, strict),
};
export const ApplicationCredential = Type.Object(appCredFields, strict);
const CreatedApplicationCredential = Type.Object({ ...appCredFields, secret: Type.String({ minLength: 1 }) }, strict);

const CreateBody = envelope('application_credential', Type.Object(
  {
    name: Name,
    description: Type.Optional(Nullable(Type.String({ maxLength: 255 }))),
    secret: Type.Optional(Nullable(Type.String({ minLength: 1, maxLength: 4096 }))),
    expires_at: Type.Optional(Nullable(Type.String({ maxLength: 64 }))),
    roles: Type.Optional(Type.Array(Type.Object({ id: Type.Optional(IdRef), name: Type.Optional(Name), domain_id: Type.Optional(Nullable(Type.String())) }, strict), { maxItems: 64 })),
    unrestricted: Type.Optional(Type.Boolean()),
    access_rules: Type.Optional(Type.Array(AccessRuleInput, { maxItems: 64 })),
  },
  strict,
));
const UserParams = Type.Object({ user_id: IdParam });
const CredParams = Type.Object({ user_id: IdParam, application_credential_id: IdParam });

function renderAccessRule(ctx: RequestContext, userId: string, rule: AccessRule) {
  return { id: rule.id, service: rule.service, method: rule.method, path: rule.path, links: { self: selfUrl(ctx, `users/${userId}/access_rules/${rule.id}`) } };
}

function render(ctx: RequestContext, row: ApplicationCredentialRow) {
  return {
    id: row.id, name: row.name, description: row.description, expires_at: row.expires_at, unrestricted: !!row.unrestricted,
    project_id: row.project_id, user_id: row.user_id, roles: JSON.parse(row.roles) as { id: string; name: string; domain_id: string | null }[],
    access_rules: JSON.parse(row.access_rules) as AccessRule[],
    links: { self: selfUrl(ctx, `users/${row.user_id}/application_credentials/${row.id}`) },
  };
}

export function applicationCredentialRoutes(identity: IdentityService): AnyRouteSpec[] {
  const store = identity.applicationCredentials;
  const userTarget = (ctx: RequestContext) => ({ 'target.user.id': ctx.params['user_id'] ?? null });
  /** Keystone: a token from a restricted application credential may not manage application credentials. */
  const refuseRestricted = (ctx: RequestContext) => {
    const appCred = identity.tokenExtras(ctx.auth!.tokenId).applicationCredential;
    if (appCred && !appCred.unrestricted) {
      throw new PumiceError('Forbidden', `This token comes from application credential ${appCred.id}, which is restricted: it cannot create or delete application credentials (create the credential with --unrestricted to allow it).`);
    }
  };
  return [
    route({
      method: 'GET', path: '/v3/users/:user_id/application_credentials', policy: 'identity:list_application_credentials', target: userTarget,
      summary: "List a user's application credentials (filter: name); secrets are never shown again",
      params: UserParams,
      query: Type.Object({ name: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: collection('application_credentials', ApplicationCredential) },
      handler(ctx) {
        identity.user(ctx.params['user_id']!);
        const rows = store.list(ctx.params['user_id']!, ctx.queryParams.name ?? null);
        return { status: 200, body: { application_credentials: rows.map((r) => render(ctx, r)), links: listLinks(ctx, `users/${ctx.params['user_id']}/application_credentials`) } };
      },
    }),
    route({
      method: 'POST', path: '/v3/users/:user_id/application_credentials', policy: 'identity:create_application_credential', target: userTarget,
      summary: "Create an application credential on the token's project, with a subset of the token's roles; the secret is shown once",
      params: UserParams, body: CreateBody,
      responses: { 201: envelope('application_credential', CreatedApplicationCredential) },
      async handler(ctx) {
        const auth = ctx.auth!;
        if (!auth.projectId) throw errors.invalidInput('Invalid input: an application credential is created from a project-scoped token; scope your token to the project it is for (OS_PROJECT_NAME).');
        refuseRestricted(ctx);
        const { application_credential: input } = ctx.body;
        const tokenRoles = auth.roles.map((name) => identity.findRoleByName(name)).filter((r): r is RoleRow => r !== undefined);
        const { row, secret } = await store.create({
          userId: auth.userId, projectId: auth.projectId, name: input.name, description: input.description, secret: input.secret,
          expiresAt: input.expires_at, unrestricted: input.unrestricted, roles: input.roles, tokenRoles, accessRules: input.access_rules,
        });
        return { status: 201, body: { application_credential: { ...render(ctx, row), secret } } };
      },
    }),
    route({
      method: 'GET', path: '/v3/users/:user_id/application_credentials/:application_credential_id', policy: 'identity:get_application_credential', target: userTarget,
      params: CredParams,
      responses: { 200: envelope('application_credential', ApplicationCredential) },
      handler(ctx) {
        return { status: 200, body: { application_credential: render(ctx, store.get(ctx.params['user_id']!, ctx.params['application_credential_id']!)) } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/users/:user_id/application_credentials/:application_credential_id', policy: 'identity:delete_application_credential', target: userTarget,
      summary: 'Delete an application credential and revoke the tokens issued from it',
      params: CredParams,
      responses: { 204: null },
      handler(ctx) {
        refuseRestricted(ctx);
        store.delete(ctx.params['user_id']!, ctx.params['application_credential_id']!);
        return { status: 204 };
      },
    }),
    route({
      method: 'GET', path: '/v3/users/:user_id/access_rules', policy: 'identity:list_access_rules', target: userTarget,
      summary: "List a user's access rules (made by their application credentials, kept until deleted)",
      params: UserParams,
      responses: { 200: collection('access_rules', AccessRuleResource) },
      handler(ctx) {
        const userId = ctx.params['user_id']!;
        identity.user(userId);
        return { status: 200, body: { access_rules: store.listAccessRules(userId).map((r) => renderAccessRule(ctx, userId, r)), links: listLinks(ctx, `users/${userId}/access_rules`) } };
      },
    }),
    route({
      method: 'GET', path: '/v3/users/:user_id/access_rules/:access_rule_id', policy: 'identity:get_access_rule', target: userTarget,
      params: AccessRuleParams,
      responses: { 200: envelope('access_rule', AccessRuleResource) },
      handler(ctx) {
        const userId = ctx.params['user_id']!;
        return { status: 200, body: { access_rule: renderAccessRule(ctx, userId, store.accessRule(userId, ctx.params['access_rule_id']!)) } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/users/:user_id/access_rules/:access_rule_id', policy: 'identity:delete_access_rule', target: userTarget,
      summary: 'Delete an access rule no application credential uses (403 while one does)',
      params: AccessRuleParams,
      responses: { 204: null },
      handler(ctx) {
        refuseRestricted(ctx);
        store.deleteAccessRule(ctx.params['user_id']!, ctx.params['access_rule_id']!);
        return { status: 204 };
      },
    }),
  ];
}
