/**
 * Routes of /os-quota-sets and /limits. Quota rules live in `../quotas.ts`.
 */
import { Type } from '@sinclair/typebox';
import { errors } from '../../errors.ts';
import { route, type AnyRouteSpec } from '../../http/declare.ts';
import { queryBool, validate, type Schema } from '../../http/validate.ts';
import { quotaResources, type QuotaResource } from '../quotas.ts';
import { auth, declaredBody, type Ctx, type VolumeRouteDeps } from './common.ts';
import { LimitsBody, QuotaSetBody, QuotaSetUpdatedBody, QuotaSetUsageBody } from './schemas.ts';

const Params = Type.Object({ project: Type.String({ minLength: 1 }) });
const limitSchema: Schema = { type: 'integer', min: -1, max: 2 ** 31 - 1, allowString: true };
const updateSchema: Schema = {
  type: 'object', required: ['quota_set'],
  properties: {
    quota_set: {
      type: 'object',
      properties: {
        tenant_id: { type: 'string', maxLength: 255 }, skip_validation: { type: 'boolean', allowString: true },
        ...Object.fromEntries(quotaResources.map((r) => [r, limitSchema])),
      },
    },
  },
};

export function quotaRoutes(deps: VolumeRouteDeps): AnyRouteSpec[] {
  const { service } = deps;
  /** The project of the URL; another project's quotas need admin (Cinder checks the rule against the target project). */
  const quotaProject = (ctx: Ctx): string => {
    const target = ctx.params['project']!;
    ctx.authorize('volume_extension:quotas:show', { project_id: target, user_id: auth(ctx).userId });
    return target;
  };
  const renderQuotaSet = (projectId: string, usage: boolean) => {
    const limits = service.quotas.limits(projectId);
    const used = service.quotas.usage(projectId);
    const set: Record<string, unknown> = { id: projectId };
    for (const resource of quotaResources) {
      set[resource] = usage
        ? { limit: limits[resource], in_use: resource === 'per_volume_gigabytes' ? 0 : used[resource as keyof typeof used] ?? 0, reserved: 0, allocated: 0 }
        : limits[resource];
    }
    return set;
  };
  return [
    route({
      method: 'GET', path: '/v3/os-quota-sets/:project', policy: 'volume_extension:quotas:show', params: Params,
      query: Type.Object({ usage: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: Type.Union([QuotaSetBody, QuotaSetUsageBody]) },
      handler(ctx) {
        const usage = queryBool(ctx.query.get('usage'), 'usage') ?? false;
        return { status: 200, body: { quota_set: renderQuotaSet(quotaProject(ctx), usage) } };
      },
    }),
    route({
      method: 'GET', path: '/v3/os-quota-sets/:project/defaults', policy: 'volume_extension:quotas:show', params: Params,
      responses: { 200: QuotaSetBody },
      handler(ctx) {
        return { status: 200, body: { quota_set: { id: quotaProject(ctx), ...service.quotas.defaultLimits() } } };
      },
    }),
    route({
      method: 'PUT', path: '/v3/os-quota-sets/:project', policy: 'volume_extension:quotas:update', params: Params, body: declaredBody(updateSchema),
      responses: { 200: QuotaSetUpdatedBody },
      handler(ctx) {
        const { quota_set: input } = validate<{ quota_set: Record<string, unknown> }>(updateSchema, ctx.body ?? null);
        const changes: Partial<Record<QuotaResource, number>> = {};
        for (const resource of quotaResources) if (typeof input[resource] === 'number') changes[resource] = input[resource] as number;
        const projectId = ctx.params['project']!;
        if (input['skip_validation'] === false) {
          const used = service.quotas.usage(projectId);
          for (const [resource, limit] of Object.entries(changes)) {
            const inUse = used[resource as keyof typeof used];
            if (inUse !== undefined && limit >= 0 && limit < inUse) {
              throw errors.badRequest(`Quota limit ${limit} for ${resource} is below the ${inUse} already in use by project ${projectId}.`);
            }
          }
        }
        service.quotas.setLimits(projectId, changes);
        const set = renderQuotaSet(projectId, false);
        delete set['id'];
        return { status: 200, body: { quota_set: set } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/os-quota-sets/:project', policy: 'volume_extension:quotas:delete', params: Params,
      responses: { 200: null },
      handler(ctx) {
        service.quotas.resetLimits(ctx.params['project']!);
        return { status: 200 };
      },
    }),
    route({
      method: 'GET', path: '/v3/limits', policy: 'limits_extension:used_limits',
      responses: { 200: LimitsBody },
      handler(ctx) {
        const a = auth(ctx);
        let projectId = service.projectOf(a);
        const requested = ctx.query.get('project_id');
        if (requested && ctx.microversion >= 39) {
          if (requested !== projectId) ctx.authorize('limits_extension:used_limits', { project_id: requested, user_id: a.userId });
          projectId = requested;
        }
        const limits = service.quotas.limits(projectId);
        const used = service.quotas.usage(projectId);
        return {
          status: 200,
          body: {
            limits: {
              rate: [],
              absolute: {
                totalSnapshotsUsed: used.snapshots, maxTotalBackups: limits.backups, maxTotalVolumeGigabytes: limits.gigabytes,
                maxTotalSnapshots: limits.snapshots, maxTotalBackupGigabytes: limits.backup_gigabytes, totalBackupGigabytesUsed: used.backup_gigabytes,
                maxTotalVolumes: limits.volumes, totalVolumesUsed: used.volumes, totalBackupsUsed: used.backups, totalGigabytesUsed: used.gigabytes,
              },
            },
          },
        };
      },
    }),
  ];
}
