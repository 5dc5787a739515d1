/**
 * Routes of /v3/domains: list and show for readers of any scope, create,
 * update and delete for administrators. A domain is deleted only once
 * disabled (Keystone's rule) and empty (Pumice's: see IdentityService.deleteDomain).
 */
import { Type } from '@sinclair/typebox';
import { route, Nullable, type AnyRouteSpec } from '../../http/declare.ts';
import type { IdentityService } from '../identity.ts';
import { listLinks, renderDomain } from './render.ts';
import { collection, Domain, envelope, FreeObject, IdParam, Name } from './schemas.ts';

const strict = { additionalProperties: false } as const;

const CreateDomainBody = envelope('domain', Type.Object(
  {
    name: Name,
    description: Type.Optional(Type.String({ maxLength: 65535 })),
    enabled: Type.Optional(Type.Boolean()),
    tags: Type.Optional(Type.Array(Type.String())),
    // openstackclient sends `options: {}` on create.
    options: Type.Optional(FreeObject),
  },
  strict,
));

const UpdateDomainBody = envelope('domain', Type.Object(
  {
    name: Type.Optional(Name),
    description: Type.Optional(Nullable(Type.String({ maxLength: 65535 }))),
    enabled: Type.Optional(Type.Boolean()),
    tags: Type.Optional(Type.Array(Type.String())),
    options: Type.Optional(FreeObject),
  },
  strict,
));
const DomainParams = Type.Object({ domain_id: IdParam });

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
      params: DomainParams,
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
        const created = identity.createDomain(domain.name, domain.description ?? '');
        // Created disabled when asked (Keystone accepts enabled: false at creation).
        const row = domain.enabled === false ? identity.updateDomain(created.id, { enabled: false }) : created;
        return { status: 201, body: { domain: renderDomain(ctx, row) } };
      },
    }),
    route({
      method: 'PATCH', path: '/v3/domains/:domain_id', policy: 'identity:update_domain',
      summary: 'Rename, describe, enable or disable a domain (disabling revokes its tokens)',
      params: DomainParams, body: UpdateDomainBody,
      responses: { 200: envelope('domain', Domain) },
      handler(ctx) {
        const { domain } = ctx.body;
        const updated = identity.updateDomain(ctx.params['domain_id']!, { name: domain.name, description: domain.description, enabled: domain.enabled });
        return { status: 200, body: { domain: renderDomain(ctx, updated) } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/domains/:domain_id', policy: 'identity:delete_domain',
      summary: 'Delete a disabled domain that holds no projects, users or groups',
      params: DomainParams,
      responses: { 204: null },
      handler(ctx) {
        identity.deleteDomain(ctx.params['domain_id']!);
        return { status: 204 };
      },
    }),
  ];
}
