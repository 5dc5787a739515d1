/**
 * The Compute API v2.1 (catalog type `compute`, `/compute/v2.1`): version
 * documents, microversions (`OpenStack-API-Version: compute 2.x` or
 * `X-OpenStack-Nova-API-Version: 2.x`) and the declared routes.
 */
import { Type } from '@sinclair/typebox';
import { errors } from '../../errors.ts';
import { registerRoutes, route } from '../../http/declare.ts';
import { PolicyTable } from '../../http/policy.ts';
import { Router, type RequestContext } from '../../http/router.ts';
import type { ServiceApp } from '../../http/server.ts';
import { catalogRoutes, type CatalogRouteDeps } from './catalog.ts';
import { migrationRoutes } from './migrations.ts';
import { computePolicyDefaults } from './policy.ts';
import { computeMicroversionMax, computeMicroversionMin } from './render.ts';
import { serverRoutes, type ServerRouteDeps } from './servers.ts';

export interface ComputeAppOptions extends ServerRouteDeps, CatalogRouteDeps {
  policyOverrides: Record<string, string>;
  validateResponses: boolean;
  log: (message: string) => void;
}

function versionDocument(ctx: RequestContext, v2: boolean) {
  return v2
    ? { id: 'v2.0', status: 'DEPRECATED', version: '', min_version: '', updated: '2025-07-04T12:00:00Z', links: [{ rel: 'self', href: `${ctx.serviceUrl}/v2/` }] }
    : { id: 'v2.1', status: 'CURRENT', version: `2.${computeMicroversionMax}`, min_version: `2.${computeMicroversionMin}`, updated: '2013-07-23T11:33:21Z', links: [{ rel: 'self', href: `${ctx.serviceUrl}/v2.1/` }] };
}

export function computeApp(options: ComputeAppOptions): ServiceApp {
  const router = new Router();
  const policy = new PolicyTable(computePolicyDefaults, options.policyOverrides);
  router.get('/', (ctx) => ({ status: 200, body: { versions: [versionDocument(ctx, false)] } }), { public: true });
  router.get('/v2.1', (ctx) => ({ status: 200, body: { version: { ...versionDocument(ctx, false), 'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.compute+json;version=2.1' }] } } }), { public: true });
  const inner = new Router();
  registerRoutes(inner, [
    ...serverRoutes(options),
    ...catalogRoutes(options),
    ...migrationRoutes(options),
    route({
      method: 'GET', path: '/extensions', policy: 'os_compute_api:extensions',
      responses: { 200: Type.Object({ extensions: Type.Array(Type.Unknown()) }, { additionalProperties: false }) },
      handler: () => ({ status: 200, body: { extensions: [] } }),
    }),
  ], { policy, validateResponses: options.validateResponses, log: options.log, versionText: (minor) => `2.${minor}` });
  return {
    prefix: '/compute',
    router: {
      match(method: string, path: string) {
        if (path === '/' || path === '/v2.1' || path === '/v2.1/') return router.match(method, path.replace(/\/$/, '') || '/');
        const m = /^\/v2\.1(\/.*)$/.exec(path);
        if (!m) throw errors.routeNotFound(method, `/compute${path}`);
        // /v2.1/{project_id}/servers: Nova still accepts the project id in the URL.
        const rest = m[1]!.replace(/^\/[0-9a-f]{32}(?=\/)/, '');
        return inner.match(method, rest);
      },
    } as unknown as Router,
    faultStyle: 'openstack',
    baseHeaders: () => ({ 'OpenStack-API-Version': 'compute 2.1', 'X-OpenStack-Nova-API-Version': '2.1', Vary: 'OpenStack-API-Version, X-OpenStack-Nova-API-Version' }),
    prepare(ctx) {
      if (ctx.path === '/' || ctx.path === '/v2.1' || ctx.path === '/v2.1/') return undefined;
      ctx.microversion = parseComputeMicroversion(ctx.headers['openstack-api-version'], ctx.headers['x-openstack-nova-api-version']);
      return { 'OpenStack-API-Version': `compute 2.${ctx.microversion}`, 'X-OpenStack-Nova-API-Version': `2.${ctx.microversion}` };
    },
  };
}

/** `compute 2.x` / `compute latest` in OpenStack-API-Version, else the legacy Nova header; 2.1 when neither. */
export function parseComputeMicroversion(header: string | string[] | undefined, legacy: string | string[] | undefined): number {
  let version: string | null = null;
  if (header !== undefined) {
    const values = (Array.isArray(header) ? header.join(',') : header).split(',').map((s) => s.trim());
    const entry = values.find((v) => /^compute\s/i.test(v));
    if (entry) version = entry.replace(/^compute\s+/i, '').trim();
  }
  if (version === null && legacy !== undefined) version = (Array.isArray(legacy) ? legacy[0]! : legacy).trim();
  if (version === null) return computeMicroversionMin;
  if (version.toLowerCase() === 'latest') return computeMicroversionMax;
  const m = /^(\d+)\.(\d+)$/.exec(version);
  if (!m) throw errors.badRequest(`Invalid API version '${version}': expected 'compute 2.N' or 'compute latest' in OpenStack-API-Version.`);
  const minor = Number(m[2]);
  if (m[1] !== '2' || minor < computeMicroversionMin || minor > computeMicroversionMax) {
    throw errors.versionNotSupported(version, `2.${computeMicroversionMin}`, `2.${computeMicroversionMax}`);
  }
  return minor;
}
