/**
 * Routes of /v3/domains: list and show for readers of any scope, create for
 * administrators.
 */
import { Type } from '@sinclair/typebox';
import { route, type AnyRouteSpec } from '../../http/declare.ts';
import type { IdentityService } from '../identity.ts';
import { listLinks, renderDomain } from './render.ts';
import { collection, Domain, envelope, IdParam, Name } from './schemas.ts';

const strict = { additionalProperties: false } as const;

const CreateDomainBody = envelope('domain', Type.Object(
  {
    name: Name,
    description: Type.Optional(Type.String({ maxLength: 65535 })),
    enabled: Type.Optional(Type.Boolean()),
    tags: Type.Optional(Type.Array(Type.String())),
  },
  strict,
));

export function domainRoutes(identity: IdentityService): AnyRouteSpec[] {
  return [
    route({
      method: 'GET', path: '/v3/domains', policy: 'identity:list_domains',
      summary: 'List domains (filter: name)',
      query: Type.Object({ name: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: collection('domains', Domain) },
      handler(ctx) {
        const rows = identity.listDomains(ctx.queryParams.name ?? null);
        return { status: 200, body: { domains: rows.map((d) => renderDomain(ctx, d)), links: listLinks(ctx, 'domains') } };
      },
    }),
    route({
      method: 'GET', path: '/v3/domains/:domain_id', policy: 'identity:get_domain',
      params: Type.Object({ domain_id: IdParam }),
      responses: { 200: envelope('domain', Domain) },
      handler(ctx) {
        return { status: 200, body: { domain: renderDomain(ctx, identity.domain(ctx.params['domain_id']!)) } };
      },
    }),
    route({
      method: 'POST', path: '/v3/domains', policy: 'identity:create_domain',
      body: CreateDomainBody,
      responses: { 201: envelope('domain', Domain) },
      handler(ctx) {
        const { domain } = ctx.body;
        return { status: 201, body: { domain: renderDomain(ctx, identity.createDomain(domain.name, domain.description ?? '')) } };
      },
    }),
  ];
}
