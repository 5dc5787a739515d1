/**
 * The Block Storage API v3 (catalog types `volumev3` and `block-storage`,
 * `/volume/v3`): version documents, microversions (`OpenStack-API-Version:
 * volume 3.x`), the URL's project id, and the declared routes of every
 * resource module. Each route names its request and response schemas
 * (schemas.ts) and its Cinder policy rule (policy.ts); rules and SQL live in
 * the domain modules (`../volumes.ts`, `../types.ts`, `../services.ts`,
 * `../messages.ts`, `../quotas.ts`, `../attachments.ts`). Backups declare
 * theirs in src/backup/api.ts and register them through `helpers.register`.
 */
import type { Db } from '../../db/db.ts';
import { errors } from '../../errors.ts';
import { backupPolicyDefaults } from '../../backup/api.ts';
import { registerRoutes, responseValidationEnabled, route, type AnyRouteSpec } from '../../http/declare.ts';
import { loadPolicyOverrides, PolicyTable } from '../../http/policy.ts';
import { Router, type RequestContext } from '../../http/router.ts';
import type { ServiceApp } from '../../http/server.ts';
import { attachmentRoutes } from '../attachments-api.ts';
import { AttachmentService } from '../attachments.ts';
import type { VolumeManager } from '../manager.ts';
import { UserMessages } from '../messages.ts';
import type { RenderOptions } from '../records.ts';
import { BlockStorageServices } from '../services.ts';
import { QosSpecs } from '../qos.ts';
import { VolumeTransfers } from '../transfers.ts';
import { VolumeTypes } from '../types.ts';
import type { ListQuery, VolumeService } from '../volumes.ts';
import { volumeActionRoutes } from './actions.ts';
import { declaredBody, listQuery, microversionMax, microversionMin, nextLink, renderOptions, scopeToProject, type VolumeRouteDeps } from './common.ts';
import { messageRoutes } from './messages.ts';
import { metadataRoutes } from './metadata.ts';
import { volumePolicyDefaults } from './policy.ts';
import { quotaRoutes } from './quotas.ts';
import { ExtensionsBody, perVersion } from './schemas.ts';
import { serviceRoutes } from './services.ts';
import { snapshotRoutes } from './snapshots.ts';
import { defaultsRoutes } from './defaults.ts';
import { GroupTypes, VolumeGroups } from '../groups.ts';
import { groupTypeRoutes } from './group-types.ts';
import { groupPolicyDefaults, groupRoutes } from './groups.ts';
import { manageRoutes } from './manage.ts';
import { qosRoutes } from './qos.ts';
import { transferRoutes } from './transfers.ts';
import { typeRoutes } from './types.ts';
import { volumeRoutes } from './volumes.ts';

export { microversionMax, microversionMin } from './common.ts';

const topLevelCollections = new Set([
  'volumes', 'types', 'snapshots', 'os-quota-sets', 'limits', 'os-availability-zone', 'os-services', 'scheduler-stats',
  'messages', 'backups', 'attachments', 'groups', 'group_types', 'group_snapshots', 'extensions', 'os-hosts', 'qos-specs',
  'capabilities', 'workers', 'clusters', 'manageable_volumes', 'manageable_snapshots', 'resource_filters', 'default-types',
  'volume-transfers', 'os-volume-transfer', 'os-quota-class-sets', 'os-volume-manage', 'os-snapshot-manage', 'consistencygroups', 'cgsnapshots',
]);

/** What another service's routes on the Block Storage router (backups) share with the volume routes. */
export interface VolumeApiHelpers {
  render(ctx: RequestContext): RenderOptions;
  listQuery(ctx: RequestContext, allowedFilters: string[]): ListQuery;
  scopeToProject(ctx: RequestContext, query: ListQuery): void;
  nextLink(ctx: RequestContext, lastId: string, limit: number): { href: string; rel: string };
  /** Registers declared routes with the Block Storage policy table and response validation. */
  register(routes: AnyRouteSpec[]): void;
  declaredBody: typeof declaredBody;
  perVersion: typeof perVersion;
  microversionMax: number;
}
export type VolumeApiExtension = (router: Router, helpers: VolumeApiHelpers) => void;

export interface VolumeAppOptions {
  /** Rules from `[oslo_policy] policy_file`; default: read the file the configuration names. */
  policyOverrides?: Record<string, string>;
  /** Check every reply against its declared schema; default: `[api] validate_responses` or PUMICE_VALIDATE_RESPONSES. */
  validateResponses?: boolean;
  log?: (message: string) => void;
}

/**
 * The generic volume group routes (3.11+): group types, groups, group
 * snapshots. Kept apart from declaredVolumeRoutes so that their contract
 * test (test/e2e/volume-groups.test.ts) checks their coverage.
 */
export function declaredGroupRoutes(groups: VolumeGroups, osapiMaxLimit: number): AnyRouteSpec[] {
  return [...groupTypeRoutes(groups.types), ...groupRoutes(groups, osapiMaxLimit)];
}

/** The Block Storage routes as declarations (contract tests and docs walk them). */
export function declaredVolumeRoutes(deps: VolumeRouteDeps): AnyRouteSpec[] {
  return [
    ...volumeRoutes(deps),
    ...volumeActionRoutes(deps),
    ...metadataRoutes(deps),
    ...snapshotRoutes(deps),
    ...typeRoutes(deps),
    ...quotaRoutes(deps),
    ...serviceRoutes(deps),
    ...messageRoutes(deps),
    ...attachmentRoutes(deps.attachments, deps.osapiMaxLimit),
    ...transferRoutes(deps.transfers),
    ...qosRoutes(deps.qos),
    ...manageRoutes(deps),
    ...defaultsRoutes(deps),
    route({
      method: 'GET', path: '/v3/extensions', policy: '@',
      responses: { 200: ExtensionsBody },
      handler: () => ({ status: 200, body: { extensions: [] } }),
    }),
  ];
}

export function volumeApp(
  service: VolumeService, manager: VolumeManager, db: Db, osapiMaxLimit: number, serviceDownSeconds: number,
  extensions: VolumeApiExtension[] = [], options: VolumeAppOptions = {},
): ServiceApp {
  const log = options.log ?? ((message: string) => console.error(`${new Date().toISOString()} ${message}`));
  const router = new Router();
  const attachments = new AttachmentService(db, service, manager, log);
  const versionDocument = (ctx: RequestContext) => ({
    id: 'v3.0',
    status: 'CURRENT',
    version: `3.${microversionMax}`,
    min_version: `3.${microversionMin}`,
    updated: '2023-08-31T00:00:00Z',
    links: [{ href: `${ctx.serviceUrl}/v3/`, rel: 'self' }],
    'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.volume+json;version=3' }],
  });
  router.get('/', (ctx) => ({ status: 300, body: { versions: [versionDocument(ctx)] } }), { public: true });
  router.get('/v3', (ctx) => ({ status: 200, body: { versions: [versionDocument(ctx)] } }), { public: true });

  const deps: VolumeRouteDeps = {
    service, manager, db, attachments, osapiMaxLimit,
    types: new VolumeTypes(db, service),
    messages: new UserMessages(db),
    services: new BlockStorageServices(db, serviceDownSeconds),
    transfers: new VolumeTransfers(db, service, service.quotas),
    qos: new QosSpecs(db),
  };
  const policy = new PolicyTable({ ...volumePolicyDefaults, ...backupPolicyDefaults, ...groupPolicyDefaults }, options.policyOverrides ?? loadPolicyOverrides(service.config.oslo_policy.policy_file));
  const registerOptions = {
    policy,
    validateResponses: options.validateResponses ?? responseValidationEnabled(service.config.api.validate_responses),
    log,
    versionText: (minor: number) => `3.${minor}`,
  };
  registerRoutes(router, declaredVolumeRoutes(deps), registerOptions);
  const groups = new VolumeGroups(db, service, new GroupTypes(db, () => service.config.DEFAULT.default_group_type ?? null));
  registerRoutes(router, declaredGroupRoutes(groups, osapiMaxLimit), registerOptions);

  const helpers: VolumeApiHelpers = {
    render: renderOptions,
    listQuery: (ctx, allowedFilters) => listQuery(ctx, osapiMaxLimit, allowedFilters),
    scopeToProject: (ctx, query) => scopeToProject(ctx, service, query),
    nextLink,
    register: (routes) => registerRoutes(router, routes, registerOptions),
    declaredBody,
    perVersion,
    microversionMax,
  };
  for (const extend of extensions) extend(router, helpers);

  return {
    prefix: '/volume',
    router,
    faultStyle: 'openstack',
    rewritePath(path) {
      const m = /^\/v3\/([^/]+)(\/.*)?$/.exec(path);
      if (!m || topLevelCollections.has(m[1]!)) return { path, pathProjectId: null };
      return { path: `/v3${m[2] ?? ''}`, pathProjectId: m[1]! };
    },
    baseHeaders: () => ({ 'OpenStack-API-Version': 'volume 3.0', Vary: 'OpenStack-API-Version' }),
    prepare(ctx) {
      // The version list at the root is how clients discover the range: like Cinder, it ignores the
      // microversion header (cinderclient asks with its own maximum, e.g. 3.70, before negotiating).
      if (ctx.path === '/') return undefined;
      ctx.microversion = parseMicroversion(ctx.headers['openstack-api-version'] ?? ctx.headers['openstack-volume-microversion']);
      if (ctx.pathProjectId && ctx.auth && ctx.auth.projectId !== ctx.pathProjectId) {
        throw errors.badRequest(`Malformed request URL: the URL's project_id '${ctx.pathProjectId}' does not match the token's project '${ctx.auth.projectId}'. Use the endpoint from the catalog of a token scoped to that project.`);
      }
      return { 'OpenStack-API-Version': `volume 3.${ctx.microversion}` };
    },
  };
}

/** Parses `volume 3.x` / `volume latest`; other services' entries in the header are ignored. */
export function parseMicroversion(header: string | string[] | undefined): number {
  if (header === undefined) return microversionMin;
  const values = (Array.isArray(header) ? header.join(',') : header).split(',').map((s) => s.trim());
  const entry = values.find((v) => /^volume\s/i.test(v)) ?? (values.length === 1 && /^\d/.test(values[0]!) ? `volume ${values[0]}` : undefined);
  if (!entry) return microversionMin;
  const version = entry.replace(/^volume\s+/i, '').trim();
  if (version.toLowerCase() === 'latest') return microversionMax;
  const m = /^(\d+)\.(\d+)$/.exec(version);
  if (!m) throw errors.badRequest(`Invalid OpenStack-API-Version '${entry}': expected 'volume 3.N' or 'volume latest'.`);
  const minor = Number(m[2]);
  if (m[1] !== '3' || minor < microversionMin || minor > microversionMax) {
    throw errors.versionNotSupported(version, `3.${microversionMin}`, `3.${microversionMax}`);
  }
  return minor;
}
