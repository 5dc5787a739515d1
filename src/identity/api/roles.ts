/**
 * Routes of /v3/roles, the grants of a role to a user or group on a project
 * or domain (/v3/{projects,domains}/{id}/{users,groups}/{actor_id}/roles[/{role_id}]),
 * a user's system grants (/v3/system/users/{user_id}/roles) and
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
    'scope.project.id': Type.Optional(Type.String()), 'scope.domain.id': Type.Optional(Type.String()), 'scope.system': Type.Optional(Type.String()),
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

  // Grants on projects and domains, to users and to groups: /v3/{projects,domains}/{id}/{users,groups}/{actor}/roles[/{role}].
  for (const targetType of ['project', 'domain'] as const) {
    for (const actorType of ['user', 'group'] as const) {
      const base = `/v3/${targetType}s/:target_id/${actorType}s/:${actorType}_id/roles`;
      const checkTarget = (id: string) => (targetType === 'project' ? identity.project(id) : identity.domain(id));
      const checkActor = (id: string) => (actorType === 'user' ? identity.user(id) : identity.group(id));
      const GrantParams = Type.Object({ target_id: IdParam, [`${actorType}_id`]: IdParam, role_id: IdParam });
      const actorOf = (ctx: RequestContext) => ctx.params[`${actorType}_id`]!;
      const grantTarget = (ctx: RequestContext) => ({ [`target.${actorType}.id`]: ctx.params[`${actorType}_id`] ?? null, [`target.${targetType}.id`]: ctx.params['target_id'] ?? null });
      const holds = (ctx: RequestContext) => actorType === 'user'
        ? identity.hasRole(actorOf(ctx), ctx.params['target_id']!, ctx.params['role_id']!)
        : identity.hasGroupRole(actorOf(ctx), ctx.params['target_id']!, ctx.params['role_id']!);
      const requireGrant = (ctx: RequestContext) => {
        checkTarget(ctx.params['target_id']!);
        checkActor(actorOf(ctx));
        if (!holds(ctx)) throw errors.notFound('Role assignment', ctx.params['role_id']!);
      };
      routes.push(
        route({
          method: 'GET', path: base, policy: 'identity:list_grants', target: grantTarget,
          summary: `Roles granted to a ${actorType} on a ${targetType}`,
          params: Type.Object({ target_id: IdParam, [`${actorType}_id`]: IdParam }),
          responses: { 200: collection('roles', Role) },
          handler(ctx) {
            checkTarget(ctx.params['target_id']!);
            checkActor(actorOf(ctx));
            const rows = actorType === 'user' ? identity.directRoles(actorOf(ctx), ctx.params['target_id']!) : identity.groupDirectRoles(actorOf(ctx), ctx.params['target_id']!);
            return { status: 200, body: { roles: rows.map((r) => renderRole(ctx, r)), links: listLinks(ctx, ctx.path.slice('/v3/'.length)) } };
          },
        }),
        route({
          method: 'PUT', path: `${base}/:role_id`, policy: 'identity:create_grant', target: grantTarget,
          summary: `Grant a role to a ${actorType} on a ${targetType}`,
          params: GrantParams,
          responses: { 204: null },
          handler(ctx) {
            if (actorType === 'user') identity.grantRole(actorOf(ctx), targetType, ctx.params['target_id']!, ctx.params['role_id']!);
            else identity.grantGroupRole(actorOf(ctx), targetType, ctx.params['target_id']!, ctx.params['role_id']!);
            return { status: 204 };
          },
        }),
        // HEAD before GET: the router would otherwise answer HEAD with the GET declaration.
        route({
          method: 'HEAD', path: `${base}/:role_id`, policy: 'identity:check_grant', target: grantTarget,
          params: GrantParams,
          responses: { 204: null },
          handler(ctx) {
            requireGrant(ctx);
            return { status: 204 };
          },
        }),
        route({
          method: 'GET', path: `${base}/:role_id`, policy: 'identity:check_grant', target: grantTarget,
          summary: `Whether a ${actorType} holds a role on a ${targetType} (204 or 404)`,
          params: GrantParams,
          responses: { 204: null },
          handler(ctx) {
            requireGrant(ctx);
            return { status: 204 };
          },
        }),
        route({
          method: 'DELETE', path: `${base}/:role_id`, policy: 'identity:revoke_grant', target: grantTarget,
          params: GrantParams,
          responses: { 204: null },
          handler(ctx) {
            if (actorType === 'user') identity.revokeRole(actorOf(ctx), ctx.params['target_id']!, ctx.params['role_id']!);
            else identity.revokeGroupRole(actorOf(ctx), ctx.params['target_id']!, ctx.params['role_id']!);
            return { status: 204 };
          },
        }),
      );
    }
  }

  // System role assignments of users: /v3/system/users/{user_id}/roles[/{role_id}].
  const systemUserTarget = (ctx: RequestContext) => ({ 'target.user.id': ctx.params['user_id'] ?? null });
  const SystemGrantParams = Type.Object({ user_id: IdParam, role_id: IdParam });
  const requireSystemGrant = (ctx: RequestContext) => {
    identity.user(ctx.params['user_id']!);
    if (!identity.hasSystemRole(ctx.params['user_id']!, ctx.params['role_id']!)) throw errors.notFound('Role assignment', ctx.params['role_id']!);
  };
  routes.push(
    route({
      method: 'GET', path: '/v3/system/users/:user_id/roles', policy: 'identity:list_system_grants_for_user', target: systemUserTarget,
      summary: 'Roles granted to a user on the system',
      params: Type.Object({ user_id: IdParam }),
      responses: { 200: collection('roles', Role) },
      handler(ctx) {
        identity.user(ctx.params['user_id']!);
        return { status: 200, body: { roles: identity.systemRoles(ctx.params['user_id']!).map((r) => renderRole(ctx, r)), links: listLinks(ctx, ctx.path.slice('/v3/'.length)) } };
      },
    }),
    route({
      method: 'PUT', path: '/v3/system/users/:user_id/roles/:role_id', policy: 'identity:create_system_grant_for_user', target: systemUserTarget,
      summary: 'Grant a role to a user on the system',
      params: SystemGrantParams,
      responses: { 204: null },
      handler(ctx) {
        identity.grantSystemRole(ctx.params['user_id']!, ctx.params['role_id']!);
        return { status: 204 };
      },
    }),
    route({
      method: 'HEAD', path: '/v3/system/users/:user_id/roles/:role_id', policy: 'identity:check_system_grant_for_user', target: systemUserTarget,
      params: SystemGrantParams,
      responses: { 204: null },
      handler(ctx) {
        requireSystemGrant(ctx);
        return { status: 204 };
      },
    }),
    route({
      method: 'GET', path: '/v3/system/users/:user_id/roles/:role_id', policy: 'identity:check_system_grant_for_user', target: systemUserTarget,
      summary: 'Whether a user holds a role on the system (204 or 404)',
      params: SystemGrantParams,
      responses: { 204: null },
      handler(ctx) {
        requireSystemGrant(ctx);
        return { status: 204 };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/system/users/:user_id/roles/:role_id', policy: 'identity:revoke_system_grant_for_user', target: systemUserTarget,
      params: SystemGrantParams,
      responses: { 204: null },
      handler(ctx) {
        identity.revokeSystemRole(ctx.params['user_id']!, ctx.params['role_id']!);
        return { status: 204 };
      },
    }),
  );

  const truthy = (value: string | undefined) => value !== undefined && !['false', '0', 'no'].includes(value.toLowerCase());
  routes.push(route({
    method: 'GET', path: '/v3/role_assignments', policy: 'identity:list_role_assignments',
    summary: 'Role assignments (filters: user.id, group.id, role.id, scope.project.id, scope.domain.id, scope.system; effective expands groups into their members; include_names); a user may list their own',
    target: (ctx) => ({ 'target.user.id': ctx.query.get('user.id') }),
    query: AssignmentQuery,
    responses: { 200: collection('role_assignments', RoleAssignment) },
    handler(ctx) {
      const q = ctx.queryParams;
      const includeNames = truthy(q.include_names);
      const effective = q.effective !== undefined && truthy(q.effective === '' ? 'true' : q.effective);
      if (effective && q['group.id'] !== undefined) {
        throw errors.invalidInput('Invalid input: effective and group.id cannot be combined (effective lists users); list the group\'s assignments without effective.');
      }
      if (q['scope.system'] !== undefined && q['scope.system'] !== 'all') throw errors.invalidInput(`Invalid input for scope.system: '${q['scope.system']}'; the only system scope is 'all'.`);
      const rows = identity.roleAssignments({
        userId: q['user.id'], groupId: q['group.id'], projectId: q['scope.project.id'], domainId: q['scope.domain.id'],
        system: q['scope.system'] !== undefined, roleId: q['role.id'], effective,
      });
      const domainRef = (id: string) => ({ id, name: identity.findDomain(id)?.name ?? id });
      const assignments = rows.map((row) => {
        const role: Record<string, unknown> = { id: row.role_id };
        const actor: Record<string, unknown> = { id: row.actor_id };
        let scope: Record<string, unknown>;
        if (row.target_type === 'project') {
          const project: Record<string, unknown> = { id: row.target_id };
          const p = includeNames ? identity.findProject(row.target_id) : undefined;
          if (p) {
            project['name'] = p.name;
            project['domain'] = domainRef(p.domain_id);
          }
          scope = { project };
        } else if (row.target_type === 'domain') {
          const domain: Record<string, unknown> = { id: row.target_id };
          if (includeNames) domain['name'] = identity.findDomain(row.target_id)?.name ?? row.target_id;
          scope = { domain };
        } else scope = { system: { all: true } };
        if (includeNames) {
          const r = identity.findRoleById(row.role_id);
          if (r) role['name'] = r.name;
          const named = row.actor_type === 'user' ? identity.findUser(row.actor_id) : identity.findGroup(row.actor_id);
          if (named) {
            actor['name'] = named.name;
            actor['domain'] = domainRef(named.domain_id);
          }
        }
        const grantPath = row.target_type === 'system'
          ? `system/${row.via_group ? 'groups' : `${row.actor_type}s`}/${row.via_group ?? row.actor_id}/roles/${row.role_id}`
          : `${row.target_type}s/${row.target_id}/${row.via_group ? 'groups' : `${row.actor_type}s`}/${row.via_group ?? row.actor_id}/roles/${row.role_id}`;
        const links: Record<string, string> = { assignment: selfUrl(ctx, grantPath) };
        if (row.via_group) links['membership'] = selfUrl(ctx, `groups/${row.via_group}/users/${row.actor_id}`);
        return { role, [row.actor_type]: actor, scope, links };
      });
      return { status: 200, body: { role_assignments: assignments, links: listLinks(ctx, 'role_assignments') } };
    },
  }));
  return routes;
}
