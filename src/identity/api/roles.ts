/**
 * Routes of /v3/roles, the grants of a role to a user on a project or domain
 * (/v3/{projects,domains}/{id}/users/{user_id}/roles[/{role_id}]) and
 * /v3/role_assignments.
 */
import { Type } from '@sinclair/typebox';
import { errors } from '../../errors.ts';
import { route, Nullable, type AnyRouteSpec } from '../../http/declare.ts';
import type { RequestContext } from '../../http/router.ts';
import type { IdentityService } from '../identity.ts';
import { listLinks, renderRole, selfUrl } from './render.ts';
import { collection, envelope, FreeObject, IdParam, Name, Role, RoleAssignment } from './schemas.ts';

const strict = { additionalProperties: false } as const;

const roleFields = {
  description: Type.Optional(Nullable(Type.String({ maxLength: 255 }))),
  domain_id: Type.Optional(Nullable(Type.String())),
  options: Type.Optional(FreeObject),
};
const CreateRoleBody = envelope('role', Type.Object({ name: Name, ...roleFields }, strict));
const UpdateRoleBody = envelope('role', Type.Object({ name: Type.Optional(Name), ...roleFields }, strict));
const RoleParams = Type.Object({ role_id: IdParam });

const AssignmentQuery = Type.Object(
  {
    'user.id': Type.Optional(Type.String()), 'group.id': Type.Optional(Type.String()), 'role.id': Type.Optional(Type.String()),
    'scope.project.id': Type.Optional(Type.String()), 'scope.domain.id': Type.Optional(Type.String()),
    include_names: Type.Optional(Type.String()), effective: Type.Optional(Type.String()), include_subtree: Type.Optional(Type.String()),
  },
  { additionalProperties: true },
);

export function roleRoutes(identity: IdentityService): AnyRouteSpec[] {
  const routes: AnyRouteSpec[] = [
    route({
      method: 'GET', path: '/v3/roles', policy: 'identity:list_roles',
      summary: 'List roles (filter: name)',
      query: Type.Object({ name: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: collection('roles', Role) },
      handler(ctx) {
        return { status: 200, body: { roles: identity.listRoles(ctx.queryParams.name ?? null).map((r) => renderRole(ctx, r)), links: listLinks(ctx, 'roles') } };
      },
    }),
    route({
      method: 'GET', path: '/v3/roles/:role_id', policy: 'identity:get_role',
      params: RoleParams,
      responses: { 200: envelope('role', Role) },
      handler(ctx) {
        return { status: 200, body: { role: renderRole(ctx, identity.role(ctx.params['role_id']!)) } };
      },
    }),
    route({
      method: 'POST', path: '/v3/roles', policy: 'identity:create_role',
      body: CreateRoleBody,
      responses: { 201: envelope('role', Role) },
      handler(ctx) {
        const { role } = ctx.body;
        return { status: 201, body: { role: renderRole(ctx, identity.createRole(role.name, role.description ?? null)) } };
      },
    }),
    route({
      method: 'PATCH', path: '/v3/roles/:role_id', policy: 'identity:update_role',
      params: RoleParams, body: UpdateRoleBody,
      responses: { 200: envelope('role', Role) },
      handler(ctx) {
        const { role } = ctx.body;
        return { status: 200, body: { role: renderRole(ctx, identity.updateRole(ctx.params['role_id']!, { name: role.name, description: role.description })) } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/roles/:role_id', policy: 'identity:delete_role',
      params: RoleParams,
      responses: { 204: null },
      handler(ctx) {
        identity.deleteRole(ctx.params['role_id']!);
        return { status: 204 };
      },
    }),
  ];

  for (const targetType of ['project', 'domain'] as const) {
    const base = `/v3/${targetType}s/:target_id/users/:user_id/roles`;
    const checkTarget = (id: string) => (targetType === 'project' ? identity.project(id) : identity.domain(id));
    const GrantParams = Type.Object({ target_id: IdParam, user_id: IdParam, role_id: IdParam });
    const userTarget = (ctx: RequestContext) => ({ 'target.user.id': ctx.params['user_id'] ?? null, [`target.${targetType}.id`]: ctx.params['target_id'] ?? null });
    const requireGrant = (ctx: RequestContext) => {
      checkTarget(ctx.params['target_id']!);
      if (!identity.hasRole(ctx.params['user_id']!, ctx.params['target_id']!, ctx.params['role_id']!)) throw errors.notFound('Role assignment', ctx.params['role_id']!);
    };
    routes.push(
      route({
        method: 'GET', path: base, policy: 'identity:list_grants', target: userTarget,
        summary: `Roles granted to a user on a ${targetType}`,
        params: Type.Object({ target_id: IdParam, user_id: IdParam }),
        responses: { 200: collection('roles', Role) },
        handler(ctx) {
          checkTarget(ctx.params['target_id']!);
          const rows = identity.directRoles(ctx.params['user_id']!, ctx.params['target_id']!);
          return { status: 200, body: { roles: rows.map((r) => renderRole(ctx, r)), links: listLinks(ctx, ctx.path.slice('/v3/'.length)) } };
        },
      }),
      route({
        method: 'PUT', path: `${base}/:role_id`, policy: 'identity:create_grant', target: userTarget,
        summary: `Grant a role to a user on a ${targetType}`,
        params: GrantParams,
        responses: { 204: null },
        handler(ctx) {
          identity.grantRole(ctx.params['user_id']!, targetType, ctx.params['target_id']!, ctx.params['role_id']!);
          return { status: 204 };
        },
      }),
      // HEAD before GET: the router would otherwise answer HEAD with the GET declaration.
      route({
        method: 'HEAD', path: `${base}/:role_id`, policy: 'identity:check_grant', target: userTarget,
        params: GrantParams,
        responses: { 204: null },
        handler(ctx) {
          requireGrant(ctx);
          return { status: 204 };
        },
      }),
      route({
        method: 'GET', path: `${base}/:role_id`, policy: 'identity:check_grant', target: userTarget,
        summary: `Whether a user holds a role on a ${targetType} (204 or 404)`,
        params: GrantParams,
        responses: { 204: null },
        handler(ctx) {
          requireGrant(ctx);
          return { status: 204 };
        },
      }),
      route({
        method: 'DELETE', path: `${base}/:role_id`, policy: 'identity:revoke_grant', target: userTarget,
        params: GrantParams,
        responses: { 204: null },
        handler(ctx) {
          identity.revokeRole(ctx.params['user_id']!, ctx.params['target_id']!, ctx.params['role_id']!);
          return { status: 204 };
        },
      }),
    );
  }

  routes.push(route({
    method: 'GET', path: '/v3/role_assignments', policy: 'identity:list_role_assignments',
    summary: 'Role assignments (filters: user.id, role.id, scope.project.id, scope.domain.id; include_names); a user may list their own',
    target: (ctx) => ({ 'target.user.id': ctx.query.get('user.id') }),
    query: AssignmentQuery,
    responses: { 200: collection('role_assignments', RoleAssignment) },
    handler(ctx) {
      const q = ctx.queryParams;
      // Pumice has no groups: no assignment is a group's.
      if (q['group.id'] !== undefined) return { status: 200, body: { role_assignments: [], links: listLinks(ctx, 'role_assignments') } };
      const includeNames = q.include_names !== undefined && q.include_names !== 'false' && q.include_names !== '0';
      const rows = identity.roleAssignments({ userId: q['user.id'], projectId: q['scope.project.id'], domainId: q['scope.domain.id'], roleId: q['role.id'] });
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
          const p = includeNames ? identity.findProject(row.target_id) : undefined;
          if (p) {
            project['name'] = p.name;
            project['domain'] = domainRef(p.domain_id);
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
        return { role, user, scope, links: { assignment: selfUrl(ctx, `${row.target_type}s/${row.target_id}/users/${row.actor_id}/roles/${row.role_id}`) } };
      });
      return { status: 200, body: { role_assignments: assignments, links: listLinks(ctx, 'role_assignments') } };
    },
  }));
  return routes;
}
