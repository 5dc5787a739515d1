/**
 * The start of the Image API v2 (Glance): version discovery and an image
 * list, so clients that build an image client on every command (the
 * `openstack` CLI does for `volume create`) find the service. Images
 * themselves arrive with the images issue.
 */
import { errors } from '../errors.ts';
import type { ServiceApp } from '../http/server.ts';
import { Router, type RequestContext } from '../http/router.ts';

const imageApiVersions = ['2.16', '2.15', '2.9', '2.7', '2.6', '2.5', '2.4', '2.3', '2.2', '2.1', '2.0'];

export function imageApp(): ServiceApp {
  const router = new Router();
  const versions = (ctx: RequestContext) => ({
    versions: imageApiVersions.map((v, i) => ({
      id: `v${v}`,
      status: i === 0 ? 'CURRENT' : 'SUPPORTED',
      links: [{ rel: 'self', href: `${ctx.serviceUrl}/v2/` }],
    })),
  });
  router.get('/', (ctx) => ({ status: 300, body: versions(ctx) }), { public: true });
  router.get('/versions', (ctx) => ({ status: 200, body: versions(ctx) }), { public: true });
  router.get('/v2', (ctx) => ({ status: 200, body: versions(ctx) }), { public: true });
  router.get('/v2/images', (ctx) => {
    const limit = ctx.query.get('limit');
    if (limit !== null && !/^\d+$/.test(limit)) throw errors.invalidInput(`Invalid input: limit '${limit}' must be a non-negative integer.`);
    return { status: 200, body: { images: [], schema: '/v2/schemas/images', first: '/v2/images' } };
  });
  router.get('/v2/images/:id', (ctx) => {
    throw errors.notFound('Image', ctx.params['id']!);
  });
  return { prefix: '/image', router, faultStyle: 'openstack' };
}
