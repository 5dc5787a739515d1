/**
 * Routes of /v3/projects. Anyone may list projects and sees those they hold a
 * role on (administrators: all); a project is shown to administrators, to
 * tokens scoped to it and to users with a role on it; writes are for
 * administrators.
 */
import { Type } from '@sinclair/typebox';
import { route, Nullable, type AnyRouteSpec } from '../../http/declare.ts';
import type { RequestContext } from '../../http/router.ts';
import { defaultDomainId, type IdentityService } from '../identity.ts';
import { listLinks, renderProject } from './render.ts';
import { collection, envelope, FreeObject, IdParam, IdRef, Name, Project } from './schemas.ts';

const strict = { additionalProperties: false } as const;

const projectFields = {
  description: Type.Optional(Nullable(Type.String({ maxLength: 65535 }))),
  domain_id: Type.Optional(IdRef),
  enabled: Type.Optional(Type.Boolean()),
  is_domain: Type.Optional(Type.Boolean()),
  parent_id: Type.Optional(Nullable(Type.String({ maxLength: 64 }))),
  tags: Type.Optional(Type.Array(Type.String({ maxLength: 255 }), { maxItems: 80 })),
  options: Type.Optional(FreeObject),
};
const CreateProjectBody = envelope('project', Type.Object({ name: Name, ...projectFields }, strict));
const UpdateProjectBody = envelope('project', Type.Object({ name: Type.Optional(Name), ...projectFields }, strict));
const ProjectParams = Type.Object({ project_id: IdParam });

const ListQuery = Type.Object(
  { name: Type.Optional(Type.String()), domain_id: Type.Optional(Type.String()), parent_id: Type.Optional(Type.String()), enabled: Type.Optional(Type.String()) },
  { additionalProperties: true },
);

export function projectRoutes(identity: IdentityService): AnyRouteSpec[] {
  const projectTarget = (ctx: RequestContext) => {
    const id = ctx.params['project_id']!;
    const project = identity.findProject(id);
    const assigned = ctx.auth !== null && project !== undefined && identity.effectiveRoles(ctx.auth.userId, project.id).length > 0;
    return { 'target.project.id': id, 'target.project.domain_id': project?.domain_id ?? null, 'target.project.assignee_id': assigned ? ctx.auth!.userId : null };
  };
  return [
    route({
      method: 'GET', path: '/v3/projects', policy: 'identity:list_projects',
      summary: 'List projects (filters: name, domain_id, parent_id, enabled); non-administrators see the projects they hold a role on',
      query: ListQuery,
      responses: { 200: collection('projects', Project) },
      handler(ctx) {
        const q = ctx.queryParams;
        const rows = identity.listProjects({
          name: q.name, domainId: q.domain_id, parentId: q.parent_id,
          enabled: q.enabled === undefined ? undefined : !['false', '0', 'no'].includes(q.enabled.toLowerCase()),
          assignedTo: ctx.can('admin_required') ? null : ctx.auth!.userId,
        });
        return { status: 200, body: { projects: rows.map((p) => renderProject(ctx, p)), links: listLinks(ctx, 'projects') } };
      },
    }),
    route({
      method: 'GET', path: '/v3/projects/:project_id', policy: 'identity:get_project', target: projectTarget,
      params: ProjectParams,
      responses: { 200: envelope('project', Project) },
      handler(ctx) {
        return { status: 200, body: { project: renderProject(ctx, identity.project(ctx.params['project_id']!)) } };
      },
    }),
    route({
      method: 'POST', path: '/v3/projects', policy: 'identity:create_project',
      body: CreateProjectBody,
      responses: { 201: envelope('project', Project) },
      handler(ctx) {
        const { project } = ctx.body;
        const created = identity.createProject({
          name: project.name, domainId: project.domain_id ?? defaultDomainId, description: project.description ?? '', enabled: project.enabled, tags: project.tags,
        });
        return { status: 201, body: { project: renderProject(ctx, created) } };
      },
    }),
    route({
      method: 'PATCH', path: '/v3/projects/:project_id', policy: 'identity:update_project',
      params: ProjectParams, body: UpdateProjectBody,
      responses: { 200: envelope('project', Project) },
      handler(ctx) {
        const { project } = ctx.body;
        const updated = identity.updateProject(ctx.params['project_id']!, {
          name: project.name, description: project.description ?? undefined, enabled: project.enabled, tags: project.tags,
        });
        return { status: 200, body: { project: renderProject(ctx, updated) } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/projects/:project_id', policy: 'identity:delete_project',
      params: ProjectParams,
      responses: { 204: null },
      handler(ctx) {
        identity.deleteProject(ctx.params['project_id']!);
        return { status: 204 };
      },
    }),
  ];
}
