/**
 * Pumice's admin API for the task engine, `/pumice/v1/tasks` (no OpenStack
 * service has one: Cinder and Nova keep their work in RPC queues an operator
 * cannot see). The same operations as `pumice tasks`, for a dashboard or a
 * script on another machine:
 *
 *   GET  /pumice/v1/tasks?state=&kind=&resource=&limit=&marker=   newest first
 *   GET  /pumice/v1/tasks/{id}                                    with locks and payload (credentials masked)
 *   POST /pumice/v1/tasks/{id}/retry                              a failed or cancelled task, queued again
 *   POST /pumice/v1/tasks/{id}/cancel  {"reason": "..."}          queued → cancelled; running → fenced
 *
 * Policy rules `pumice:tasks:*`, admin by default, overridable in the
 * operator's policy file like every other service's rules.
 */
import { Type } from '@sinclair/typebox';
import { Nullable, registerRoutes, route } from '../http/declare.ts';
import { PolicyTable } from '../http/policy.ts';
import { Router } from '../http/router.ts';
import type { ServiceApp } from '../http/server.ts';
import type { Db } from '../db/db.ts';
import { TaskAdmin, taskListLimitMax, taskView, type TaskView } from './admin.ts';

export const taskPolicyDefaults: Record<string, string> = {
  'pumice:tasks:index': 'role:admin',
  'pumice:tasks:show': 'role:admin',
  'pumice:tasks:retry': 'role:admin',
  'pumice:tasks:cancel': 'role:admin',
};

const Task = Type.Object({
  id: Type.Integer(),
  kind: Type.String(),
  resource_id: Type.String(),
  queue: Type.String(),
  state: Type.Union([Type.Literal('queued'), Type.Literal('running'), Type.Literal('done'), Type.Literal('failed'), Type.Literal('cancelled')]),
  attempts: Type.Integer(),
  owner: Nullable(Type.String()),
  lease_until: Nullable(Type.String()),
  not_before: Nullable(Type.String()),
  fenced: Type.Boolean(),
  last_error: Nullable(Type.String()),
  progress: Nullable(Type.String()),
  parent_task_id: Nullable(Type.Integer()),
  created_at: Type.String(),
  updated_at: Type.String(),
  finished_at: Nullable(Type.String()),
}, { additionalProperties: false });

const TaskDetail = Type.Object({
  ...Task.properties,
  payload: Type.Unknown(),
  locks: Type.Array(Type.Object({ resource_id: Type.String(), mode: Type.Union([Type.Literal('read'), Type.Literal('write')]) }, { additionalProperties: false })),
}, { additionalProperties: false });

const TaskIdParams = Type.Object({ task_id: Type.String({ pattern: '^[1-9][0-9]{0,15}$' }) });

const ListQuery = Type.Object({
  state: Type.Optional(Type.String({ maxLength: 16 })),
  kind: Type.Optional(Type.String({ maxLength: 64 })),
  resource: Type.Optional(Type.String({ maxLength: 255 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: taskListLimitMax })),
  marker: Type.Optional(Type.Integer({ minimum: 1 })),
}, { additionalProperties: false });

export interface TaskAppOptions {
  policyOverrides: Record<string, string>;
  validateResponses: boolean;
  log: (message: string) => void;
}

export function taskApp(db: Db, options: TaskAppOptions): ServiceApp {
  const admin = new TaskAdmin(db);
  const router = new Router();
  const id = (params: Record<string, string>) => Number(params['task_id']);
  const links = (serviceUrl: string, rows: TaskView[], limit: number) =>
    rows.length === limit ? [{ rel: 'next', href: `${serviceUrl}/v1/tasks?limit=${limit}&marker=${rows[rows.length - 1]!.id}` }] : [];
  registerRoutes(router, [
    route({
      method: 'GET', path: '/v1/tasks', policy: 'pumice:tasks:index', query: ListQuery,
      responses: { 200: Type.Object({ tasks: Type.Array(Task), tasks_links: Type.Array(Type.Object({ rel: Type.String(), href: Type.String() })) }, { additionalProperties: false }) },
      handler(ctx) {
        const q = ctx.queryParams;
        const limit = q.limit ?? 100;
        const tasks = admin.list({ state: q.state, kind: q.kind, resource: q.resource, marker: q.marker, limit }).map(taskView);
        return { status: 200, body: { tasks, tasks_links: links(ctx.serviceUrl, tasks, limit) } };
      },
    }),
    route({
      method: 'GET', path: '/v1/tasks/:task_id', policy: 'pumice:tasks:show', params: TaskIdParams,
      responses: { 200: Type.Object({ task: TaskDetail }, { additionalProperties: false }) },
      handler: (ctx) => ({ status: 200, body: { task: admin.detail(id(ctx.params)) } }),
    }),
    route({
      method: 'POST', path: '/v1/tasks/:task_id/retry', policy: 'pumice:tasks:retry', params: TaskIdParams,
      responses: { 202: Type.Object({ task: Task }, { additionalProperties: false }) },
      handler(ctx) {
        const row = admin.retry(id(ctx.params));
        options.log(`tasks: task ${row.id} (${row.kind} ${row.resource_id}) queued again by user ${ctx.auth?.userId ?? '?'}`);
        return { status: 202, body: { task: taskView(row) } };
      },
    }),
    route({
      method: 'POST', path: '/v1/tasks/:task_id/cancel', policy: 'pumice:tasks:cancel', params: TaskIdParams,
      body: Type.Optional(Type.Object({ reason: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })) }, { additionalProperties: false })),
      responses: { 202: Type.Object({ task: Task, effect: Type.Union([Type.Literal('cancelled'), Type.Literal('fenced')]) }, { additionalProperties: false }) },
      handler(ctx) {
        const reason = ctx.body?.reason ?? `cancelled by user ${ctx.auth?.userId ?? '?'} through the admin API`;
        const { task, effect } = admin.cancel(id(ctx.params), reason);
        options.log(`tasks: task ${task.id} (${task.kind} ${task.resource_id}) ${effect}: ${reason}`);
        return { status: 202, body: { task: taskView(task), effect } };
      },
    }),
  ], { policy: new PolicyTable(taskPolicyDefaults, options.policyOverrides), validateResponses: options.validateResponses, log: options.log });
  return { prefix: '/pumice', router, faultStyle: 'openstack' };
}
