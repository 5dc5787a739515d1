/**
 * Routes of /v3/users: administrators manage users; a user reads themself
 * and their projects and changes their own password. Groups are in groups.ts.
 */
import { Type } from '@sinclair/typebox';
import { route, Nullable, type AnyRouteSpec } from '../../http/declare.ts';
import type { RequestContext } from '../../http/router.ts';
import { defaultDomainId, type IdentityService } from '../identity.ts';
import { listLinks, renderProject, renderUser } from './render.ts';
import { collection, envelope, FreeObject, IdParam, IdRef, Name, Project, User } from './schemas.ts';

const strict = { additionalProperties: false } as const;

const userFields = {
  password: Type.Optional(Nullable(Type.String({ maxLength: 4096 }))),
  domain_id: Type.Optional(IdRef),
  enabled: Type.Optional(Type.Boolean()),
  default_project_id: Type.Optional(Nullable(Type.String({ maxLength: 64 }))),
  description: Type.Optional(Nullable(Type.String({ maxLength: 65535 }))),
  email: Type.Optional(Nullable(Type.String({ maxLength: 255 }))),
  options: Type.Optional(FreeObject),
};
const CreateUserBody = envelope('user', Type.Object({ name: Name, ...userFields }, strict));
const UpdateUserBody = envelope('user', Type.Object({ name: Type.Optional(Name), ...userFields }, strict));
const ChangePasswordBody = envelope('user', Type.Object({ password: Type.String({ minLength: 1, maxLength: 4096 }), original_password: Type.String({ maxLength: 4096 }) }, strict));
const UserParams = Type.Object({ user_id: IdParam });
const UserEnvelope = envelope('user', User);

/** Keystone's target of a user route: the user the path names. */
export function userTarget(ctx: RequestContext) {
  return { 'target.user.id': ctx.params['user_id'] ?? null };
}

export function userRoutes(identity: IdentityService): AnyRouteSpec[] {
  return [
    route({
      method: 'GET', path: '/v3/users', policy: 'identity:list_users',
      summary: 'List users (filters: name, domain_id)',
      query: Type.Object({ name: Type.Optional(Type.String()), domain_id: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: collection('users', User) },
      handler(ctx) {
        const rows = identity.listUsers({ name: ctx.queryParams.name, domainId: ctx.queryParams.domain_id });
        return { status: 200, body: { users: rows.map((u) => renderUser(ctx, u)), links: listLinks(ctx, 'users') } };
      },
    }),
    route({
      method: 'GET', path: '/v3/users/:user_id', policy: 'identity:get_user', target: userTarget,
      params: UserParams,
      responses: { 200: UserEnvelope },
      handler(ctx) {
        return { status: 200, body: { user: renderUser(ctx, identity.user(ctx.params['user_id']!)) } };
      },
    }),
    route({
      method: 'POST', path: '/v3/users', policy: 'identity:create_user',
      body: CreateUserBody,
      responses: { 201: UserEnvelope },
      async handler(ctx) {
        const { user } = ctx.body;
        if (user.password) identity.checkPasswordRules(user.password);
        const created = await identity.createUser({
          name: user.name, domainId: user.domain_id ?? defaultDomainId, password: user.password, enabled: user.enabled,
          defaultProjectId: user.default_project_id, description: user.description, email: user.email,
        });
        return { status: 201, body: { user: renderUser(ctx, created) } };
      },
    }),
    route({
      method: 'PATCH', path: '/v3/users/:user_id', policy: 'identity:update_user',
      params: UserParams, body: UpdateUserBody,
      responses: { 200: UserEnvelope },
      async handler(ctx) {
        const { user } = ctx.body;
        if (user.password) identity.checkPasswordRules(user.password);
        const updated = await identity.updateUser(ctx.params['user_id']!, {
          name: user.name, password: user.password, enabled: user.enabled, defaultProjectId: user.default_project_id, description: user.description, email: user.email,
        });
        return { status: 200, body: { user: renderUser(ctx, updated) } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/users/:user_id', policy: 'identity:delete_user',
      params: UserParams,
      responses: { 204: null },
      handler(ctx) {
        identity.deleteUser(ctx.params['user_id']!);
        return { status: 204 };
      },
    }),
    route({
      method: 'POST', path: '/v3/users/:user_id/password', policy: 'identity:change_password', target: userTarget,
      summary: "Change the caller's own password (the original password is checked, with lockout; the new one against [security_compliance] password_regex)",
      params: UserParams, body: ChangePasswordBody,
      responses: { 204: null },
      async handler(ctx) {
        const userId = ctx.params['user_id']!;
        await identity.authenticatePassword(identity.user(userId), ctx.body.user.original_password, ctx.stream.socket?.remoteAddress ?? 'unknown');
        identity.checkPasswordRules(ctx.body.user.password);
        await identity.updateUser(userId, { password: ctx.body.user.password });
        return { status: 204 };
      },
    }),
    route({
      method: 'GET', path: '/v3/users/:user_id/projects', policy: 'identity:list_user_projects', target: userTarget,
      params: UserParams,
      responses: { 200: collection('projects', Project) },
      handler(ctx) {
        const rows = identity.listProjects({ assignedTo: identity.user(ctx.params['user_id']!).id });
        return { status: 200, body: { projects: rows.map((p) => renderProject(ctx, p)), links: listLinks(ctx, `users/${ctx.params['user_id']}/projects`) } };
      },
    }),
  ];
}
