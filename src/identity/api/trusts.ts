/**
 * Routes of /v3/OS-TRUST/trusts (Keystone's OS-TRUST extension): a trustor
 * delegates roles on a project to a trustee (`openstack trust create`), who
 * authenticates with `scope: {"OS-TRUST:trust": {"id": ...}}` (auth.ts). The
 * trustor or the trustee may read a trust, the trustor delete it;
 * administrators may read and delete any. A list without filters shows
 * the caller's own trusts (as trustor or trustee), or every trust to an
 * administrator.
 */
import { Type } from '@sinclair/typebox';
import { PumiceError } from '../../errors.ts';
import { route, Nullable, type AnyRouteSpec } from '../../http/declare.ts';
import type { PolicyTarget } from '../../http/policy.ts';
import type { RequestContext } from '../../http/router.ts';
import type { IdentityService } from '../identity.ts';
import type { TrustRole, TrustRow } from '../trusts.ts';
import { selfUrl } from './render.ts';
import { collection, envelope, IdParam, IdRef, ListLinks, Name } from './schemas.ts';

const strict = { additionalProperties: false } as const;

const TrustRoleEntity = Type.Object({ id: Type.String(), name: Type.String(), domain_id: Nullable(Type.String()), links: Type.Object({ self: Type.String({ format: 'uri' }) }, strict) }, strict);
export const Trust = Type.Object({
  id: Type.String(), trustor_user_id: Type.String(), trustee_user_id: Type.String(), project_id: Nullable(Type.String()),
  impersonation: Type.Boolean(), expires_at: Nullable(Type.String({ format: 'date-time' })), remaining_uses: Nullable(Type.Integer({ minimum: 0 })),
  allow_redelegation: Type.Boolean(), redelegation_count: Type.Integer({ minimum: 0 }), redelegated_trust_id: Type.Null(),
  roles: Type.Array(TrustRoleEntity), roles_links: ListLinks, links: Type.Object({ self: Type.String({ format: 'uri' }) }, strict),
}, strict);

const CreateBody = envelope('trust', Type.Object({
  trustor_user_id: IdRef,
  trustee_user_id: IdRef,
  impersonation: Type.Boolean(),
  project_id: Type.Optional(Nullable(IdRef)),
  roles: Type.Optional(Nullable(Type.Array(Type.Object({ id: Type.Optional(IdRef), name: Type.Optional(Name) }, strict), { maxItems: 64 }))),
  expires_at: Type.Optional(Nullable(Type.String({ maxLength: 64 }))),
  remaining_uses: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: 1_000_000 }))),
  allow_redelegation: Type.Optional(Nullable(Type.Boolean())),
  redelegation_count: Type.Optional(Nullable(Type.Integer({ minimum: 0 }))),
}, strict));
const TrustParams = Type.Object({ trust_id: IdParam });
const TrustRoleParams = Type.Object({ trust_id: IdParam, role_id: IdParam });
const ListQuery = Type.Object({ trustor_user_id: Type.Optional(IdRef), trustee_user_id: Type.Optional(IdRef) }, { additionalProperties: true });

function renderRoles(ctx: RequestContext, row: TrustRow) {
  return (JSON.parse(row.roles) as TrustRole[]).map((r) => ({ id: r.id, name: r.name, domain_id: r.domain_id, links: { self: selfUrl(ctx, `roles/${r.id}`) } }));
}

/** The delegated role `roleId` of a trust, or Keystone's 404. */
function delegatedRole(ctx: RequestContext, row: TrustRow) {
  const role = renderRoles(ctx, row).find((r) => r.id === ctx.params['role_id']);
  if (!role) throw new PumiceError('NotFound', `Trust ${row.id} delegates no role ${ctx.params['role_id']}: list its roles with GET /v3/OS-TRUST/trusts/${row.id}/roles.`);
  return role;
}

function render(ctx: RequestContext, row: TrustRow) {
  const roles = renderRoles(ctx, row);
  return {
    id: row.id, trustor_user_id: row.trustor_user_id, trustee_user_id: row.trustee_user_id, project_id: row.project_id,
    impersonation: !!row.impersonation, expires_at: row.expires_at, remaining_uses: row.remaining_uses,
    allow_redelegation: false, redelegation_count: 0, redelegated_trust_id: null,
    roles, roles_links: { self: selfUrl(ctx, `OS-TRUST/trusts/${row.id}/roles`), previous: null, next: null },
    links: { self: selfUrl(ctx, `OS-TRUST/trusts/${row.id}`) },
  };
}

export function trustRoutes(identity: IdentityService): AnyRouteSpec[] {
  const trusts = identity.trusts;
  /** Keystone's target: the trust's trustor and trustee; as Keystone builds it from the trust, an unknown trust is a 404 for everyone, not a 403. */
  const trustTarget = (ctx: RequestContext): PolicyTarget => {
    const trust = trusts.get(ctx.params['trust_id'] ?? '');
    return { 'target.trust.trustor_user_id': trust.trustor_user_id, 'target.trust.trustee_user_id': trust.trustee_user_id };
  };
  return [
    route({
      method: 'GET', path: '/v3/OS-TRUST/trusts', policy: 'identity:list_trusts',
      summary: "List trusts (filters: trustor_user_id, trustee_user_id); a user sees their own, an administrator all",
      query: ListQuery,
      responses: { 200: collection('trusts', Trust) },
      handler(ctx) {
        const { trustor_user_id: trustor, trustee_user_id: trustee } = ctx.queryParams;
        const self = ctx.auth!.userId;
        let rows: TrustRow[];
        if (ctx.can('identity:list_all_trusts')) rows = trusts.list({ trustorUserId: trustor, trusteeUserId: trustee });
        else {
          if ((trustor && trustor !== self) || (trustee && trustee !== self)) {
            throw new PumiceError('Forbidden', `Only an administrator lists other users' trusts: filter on your own user id (${self}) as trustor_user_id or trustee_user_id.`);
          }
          rows = trusts.list({ trustorUserId: trustor, trusteeUserId: trustee }).filter((t) => t.trustor_user_id === self || t.trustee_user_id === self);
        }
        return { status: 200, body: { trusts: rows.map((t) => render(ctx, t)), links: { self: selfUrl(ctx, 'OS-TRUST/trusts'), previous: null, next: null } } };
      },
    }),
    route({
      method: 'POST', path: '/v3/OS-TRUST/trusts', policy: 'identity:create_trust',
      summary: "Delegate some of the caller's roles on a project to another user (the caller is the trustor)",
      body: CreateBody,
      responses: { 201: envelope('trust', Trust) },
      handler(ctx) {
        const input = ctx.body.trust;
        const row = trusts.create({
          callerUserId: ctx.auth!.userId, callerTokenFromTrust: identity.tokenExtras(ctx.auth!.tokenId).trust !== null,
          trustorUserId: input.trustor_user_id, trusteeUserId: input.trustee_user_id, impersonation: input.impersonation,
          projectId: input.project_id, roles: input.roles ?? [], expiresAt: input.expires_at, remainingUses: input.remaining_uses,
          allowRedelegation: input.allow_redelegation ?? false,
        });
        return { status: 201, body: { trust: render(ctx, row) } };
      },
    }),
    route({
      method: 'GET', path: '/v3/OS-TRUST/trusts/:trust_id', policy: 'identity:get_trust', target: trustTarget,
      params: TrustParams,
      responses: { 200: envelope('trust', Trust) },
      handler(ctx) {
        return { status: 200, body: { trust: render(ctx, trusts.get(ctx.params['trust_id']!)) } };
      },
    }),
    route({
      method: 'GET', path: '/v3/OS-TRUST/trusts/:trust_id/roles', policy: 'identity:list_roles_for_trust', target: trustTarget,
      summary: 'The roles a trust delegates',
      params: TrustParams,
      responses: { 200: collection('roles', TrustRoleEntity) },
      handler(ctx) {
        const row = trusts.get(ctx.params['trust_id']!);
        return { status: 200, body: { roles: renderRoles(ctx, row), links: { self: selfUrl(ctx, `OS-TRUST/trusts/${row.id}/roles`), previous: null, next: null } } };
      },
    }),
    // HEAD before GET: the router would otherwise answer HEAD with the GET declaration.
    route({
      method: 'HEAD', path: '/v3/OS-TRUST/trusts/:trust_id/roles/:role_id', policy: 'identity:get_role_for_trust', target: trustTarget,
      summary: 'Whether a trust delegates a role (200 or 404)',
      params: TrustRoleParams,
      responses: { 200: null },
      handler(ctx) {
        delegatedRole(ctx, trusts.get(ctx.params['trust_id']!));
        return { status: 200 };
      },
    }),
    route({
      method: 'GET', path: '/v3/OS-TRUST/trusts/:trust_id/roles/:role_id', policy: 'identity:get_role_for_trust', target: trustTarget,
      summary: 'One role a trust delegates',
      params: TrustRoleParams,
      responses: { 200: envelope('role', TrustRoleEntity) },
      handler(ctx) {
        return { status: 200, body: { role: delegatedRole(ctx, trusts.get(ctx.params['trust_id']!)) } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/OS-TRUST/trusts/:trust_id', policy: 'identity:delete_trust', target: trustTarget,
      summary: 'Delete a trust and revoke the tokens issued from it',
      params: TrustParams,
      responses: { 204: null },
      handler(ctx) {
        trusts.delete(ctx.params['trust_id']!);
        return { status: 204 };
      },
    }),
  ];
}
