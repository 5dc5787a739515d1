/**
 * Routes of /v3/groups and group membership (/v3/groups/{g}/users[/{u}],
 * /v3/users/{u}/groups). Administrators manage groups; a user lists their own
 * groups. A group's role assignments (in roles.ts) reach its members' tokens.
 */
import { Type } from '@sinclair/typebox';
import { errors } from '../../errors.ts';
import { route, Nullable, type AnyRouteSpec } from '../../http/declare.ts';
import type { RequestContext } from '../../http/router.ts';
import { defaultDomainId, type IdentityService } from '../identity.ts';
import { listLinks, renderGroup, renderUser } from './render.ts';
import { collection, envelope, Group, IdParam, IdRef, Name, User } from './schemas.ts';

const strict = { additionalProperties: false } as const;

const CreateGroupBody = envelope('group', Type.Object(
  { name: Name, domain_id: Type.Optional(IdRef), description: Type.Optional(Nullable(Type.String({ maxLength: 65535 }))) },
  strict,
));
const UpdateGroupBody = envelope('group', Type.Object(
  { name: Type.Optional(Name), description: Type.Optional(Nullable(Type.String({ maxLength: 65535 }))) },
  strict,
));
const GroupParams = Type.Object({ group_id: IdParam });
const MemberParams = Type.Object({ group_id: IdParam, user_id: IdParam });

export function groupRoutes(identity: IdentityService): AnyRouteSpec[] {
  const requireMember = (ctx: RequestContext) => {
    const groupId = ctx.params['group_id']!;
    const userId = ctx.params['user_id']!;
    identity.group(groupId);
    identity.user(userId);
    if (!identity.isGroupMember(groupId, userId)) throw errors.notFound(`User ${userId} in group`, groupId);
  };
  return [
    route({
      method: 'GET', path: '/v3/groups', policy: 'identity:list_groups',
      summary: 'List groups (filters: name, domain_id)',
      query: Type.Object({ name: Type.Optional(Type.String()), domain_id: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: collection('groups', Group) },
      handler(ctx) {
        const rows = identity.listGroups({ name: ctx.queryParams.name, domainId: ctx.queryParams.domain_id });
        return { status: 200, body: { groups: rows.map((g) => renderGroup(ctx, g)), links: listLinks(ctx, 'groups') } };
      },
    }),
    route({
      method: 'POST', path: '/v3/groups', policy: 'identity:create_group',
      body: CreateGroupBody,
      responses: { 201: envelope('group', Group) },
      handler(ctx) {
        const { group } = ctx.body;
        const created = identity.createGroup({ name: group.name, domainId: group.domain_id ?? defaultDomainId, description: group.description });
        return { status: 201, body: { group: renderGroup(ctx, created) } };
      },
    }),
    route({
      method: 'GET', path: '/v3/groups/:group_id', policy: 'identity:get_group',
      params: GroupParams,
      responses: { 200: envelope('group', Group) },
      handler(ctx) {
        return { status: 200, body: { group: renderGroup(ctx, identity.group(ctx.params['group_id']!)) } };
      },
    }),
    route({
      method: 'PATCH', path: '/v3/groups/:group_id', policy: 'identity:update_group',
      params: GroupParams, body: UpdateGroupBody,
      responses: { 200: envelope('group', Group) },
      handler(ctx) {
        const { group } = ctx.body;
        return { status: 200, body: { group: renderGroup(ctx, identity.updateGroup(ctx.params['group_id']!, { name: group.name, description: group.description })) } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/groups/:group_id', policy: 'identity:delete_group',
      summary: 'Delete a group, its memberships and its role assignments',
      params: GroupParams,
      responses: { 204: null },
      handler(ctx) {
        identity.deleteGroup(ctx.params['group_id']!);
        return { status: 204 };
      },
    }),
    route({
      method: 'GET', path: '/v3/groups/:group_id/users', policy: 'identity:list_users_in_group',
      params: GroupParams,
      responses: { 200: collection('users', User) },
      handler(ctx) {
        identity.group(ctx.params['group_id']!);
        const users = identity.usersInGroup(ctx.params['group_id']!);
        return { status: 200, body: { users: users.map((u) => renderUser(ctx, u)), links: listLinks(ctx, `groups/${ctx.params['group_id']}/users`) } };
      },
    }),
    route({
      method: 'PUT', path: '/v3/groups/:group_id/users/:user_id', policy: 'identity:add_user_to_group',
      summary: 'Add a user to a group (idempotent)',
      params: MemberParams,
      responses: { 204: null },
      handler(ctx) {
        identity.addGroupMember(ctx.params['group_id']!, ctx.params['user_id']!);
        return { status: 204 };
      },
    }),
    // HEAD before GET: the router would otherwise answer HEAD with the GET declaration.
    route({
      method: 'HEAD', path: '/v3/groups/:group_id/users/:user_id', policy: 'identity:check_user_in_group',
      params: MemberParams,
      responses: { 204: null },
      handler(ctx) {
        requireMember(ctx);
        return { status: 204 };
      },
    }),
    route({
      method: 'GET', path: '/v3/groups/:group_id/users/:user_id', policy: 'identity:check_user_in_group',
      summary: 'Whether a user is in a group (204 or 404)',
      params: MemberParams,
      responses: { 204: null },
      handler(ctx) {
        requireMember(ctx);
        return { status: 204 };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/groups/:group_id/users/:user_id', policy: 'identity:remove_user_from_group',
      summary: "Remove a user from a group: the group's roles leave the user's tokens",
      params: MemberParams,
      responses: { 204: null },
      handler(ctx) {
        identity.removeGroupMember(ctx.params['group_id']!, ctx.params['user_id']!);
        return { status: 204 };
      },
    }),
    route({
      method: 'GET', path: '/v3/users/:user_id/groups', policy: 'identity:list_groups_for_user',
      target: (ctx) => ({ 'target.user.id': ctx.params['user_id'] ?? null }),
      params: Type.Object({ user_id: IdParam }),
      responses: { 200: collection('groups', Group) },
      handler(ctx) {
        identity.user(ctx.params['user_id']!);
        const groups = identity.groupsOfUser(ctx.params['user_id']!);
        return { status: 200, body: { groups: groups.map((g) => renderGroup(ctx, g)), links: listLinks(ctx, `users/${ctx.params['user_id']}/groups`) } };
      },
    }),
  ];
}
