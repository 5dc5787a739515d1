/**
 * The Identity API v3 (catalog type `identity`, `/identity/v3`): version
 * documents and the declared routes, guarded by the Identity policy table
 * (`src/identity/policy.ts`, overridable in `[oslo_policy] policy_file`).
 * Faults are Keystone's `{"error": {"code", "title", "message"}}`.
 */
import { Type } from '@sinclair/typebox';
import { registerRoutes, route } from '../../http/declare.ts';
import { Router, type RequestContext } from '../../http/router.ts';
import type { ServiceApp } from '../../http/server.ts';
import type { IdentityService } from '../identity.ts';
import { callerTarget, identityPolicy } from '../policy.ts';
import { applicationCredentialRoutes } from './application-credentials.ts';
import { authRoutes } from './auth.ts';
import { catalogRoutes } from './catalog.ts';
import { credentialRoutes } from './credentials.ts';
import { domainRoutes } from './domains.ts';
import { groupRoutes } from './groups.ts';
import { projectRoutes } from './projects.ts';
import { roleRoutes } from './roles.ts';
import { trustRoutes } from './trusts.ts';
import { VersionDocument } from './schemas.ts';
import { userRoutes } from './users.ts';

export interface IdentityAppOptions {
  identity: IdentityService;
  policyOverrides: Record<string, string>;
  validateResponses: boolean;
  log: (message: string) => void;
}

function v3Document(ctx: RequestContext) {
  return {
    id: 'v3.14',
    status: 'stable',
    updated: '2020-04-07T00:00:00Z',
    links: [{ rel: 'self', href: `${ctx.serviceUrl}/v3/` }],
    'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.identity-v3+json' }],
  };
}

/** Every route of the Identity API, in the order they are matched (HEAD before GET on a shared path). */
export function identityRouter(options: IdentityAppOptions): Router {
  const { identity } = options;
  const router = new Router();
  registerRoutes(router, [
    route({
      method: 'GET', path: '/', policy: '@', options: { public: true },
      summary: 'Version discovery: Identity v3 only',
      responses: { 300: Type.Object({ versions: Type.Object({ values: Type.Array(VersionDocument) }, { additionalProperties: false }) }, { additionalProperties: false }) },
      handler: (ctx) => ({ status: 300, body: { versions: { values: [v3Document(ctx)] } } }),
    }),
    route({
      method: 'GET', path: '/v3', policy: '@', options: { public: true },
      responses: { 200: Type.Object({ version: VersionDocument }, { additionalProperties: false }) },
      handler: (ctx) => ({ status: 200, body: { version: v3Document(ctx) } }),
    }),
    ...authRoutes(identity),
    ...domainRoutes(identity),
    ...projectRoutes(identity),
    ...userRoutes(identity),
    ...applicationCredentialRoutes(identity),
    ...groupRoutes(identity),
    ...roleRoutes(identity),
    ...catalogRoutes(identity),
    ...credentialRoutes(identity),
    ...trustRoutes(identity),
  ], { policy: identityPolicy(options.policyOverrides), validateResponses: options.validateResponses, log: options.log, defaultTarget: callerTarget });
  return router;
}

export function identityApp(options: IdentityAppOptions): ServiceApp {
  return { prefix: '/identity', router: identityRouter(options), faultStyle: 'keystone' };
}
