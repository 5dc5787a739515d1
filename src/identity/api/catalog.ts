/**
 * Routes of the service catalog: /v3/regions, /v3/services and /v3/endpoints.
 * Any token reads regions; readers of any scope read services and endpoints;
 * administrators change them.
 */
import { Type } from '@sinclair/typebox';
import { route, Nullable, type AnyRouteSpec } from '../../http/declare.ts';
import type { IdentityService } from '../identity.ts';
import { listLinks, renderEndpoint, renderRegion, renderService } from './render.ts';
import { collection, Endpoint, envelope, IdParam, IdRef, Name, Region, Service } from './schemas.ts';

const strict = { additionalProperties: false } as const;

const CreateRegionBody = envelope('region', Type.Object(
  { id: Type.Optional(IdRef), description: Type.Optional(Type.String({ maxLength: 255 })), parent_region_id: Type.Optional(Nullable(Type.String())) },
  strict,
));

const UpdateRegionBody = envelope('region', Type.Object(
  { description: Type.Optional(Type.String({ maxLength: 255 })), parent_region_id: Type.Optional(Nullable(Type.String({ maxLength: 255 }))) },
  strict,
));

const serviceFields = {
  name: Type.Optional(Type.String({ maxLength: 255 })),
  description: Type.Optional(Nullable(Type.String({ maxLength: 65535 }))),
  enabled: Type.Optional(Type.Boolean()),
};
const CreateServiceBody = envelope('service', Type.Object({ type: Name, ...serviceFields }, strict));
const UpdateServiceBody = envelope('service', Type.Object({ type: Type.Optional(Name), ...serviceFields }, strict));

// An absolute URL, or Pumice's template for the address the client used.
const EndpointUrl = Type.String({ minLength: 1, maxLength: 1024, pattern: '^[a-zA-Z][a-zA-Z0-9+.-]*://|^\\$\\(base_url\\)s' });
const Interface = Type.String({ enum: ['public', 'internal', 'admin'] });
const endpointFields = {
  region: Type.Optional(Nullable(Type.String())),
  region_id: Type.Optional(Nullable(Type.String())),
  enabled: Type.Optional(Type.Boolean()),
};
const CreateEndpointBody = envelope('endpoint', Type.Object({ interface: Interface, service_id: IdRef, url: EndpointUrl, ...endpointFields }, strict));
const UpdateEndpointBody = envelope('endpoint', Type.Object(
  { interface: Type.Optional(Interface), service_id: Type.Optional(IdRef), url: Type.Optional(EndpointUrl), ...endpointFields },
  strict,
));

export function catalogRoutes(identity: IdentityService): AnyRouteSpec[] {
  const RegionParams = Type.Object({ region_id: IdParam });
  const ServiceParams = Type.Object({ service_id: IdParam });
  const EndpointParams = Type.Object({ endpoint_id: IdParam });
  return [
    // ---- regions ----
    route({
      method: 'GET', path: '/v3/regions', policy: 'identity:list_regions',
      responses: { 200: collection('regions', Region) },
      handler(ctx) {
        return { status: 200, body: { regions: identity.regions().map((r) => renderRegion(ctx, r)), links: listLinks(ctx, 'regions') } };
      },
    }),
    route({
      method: 'GET', path: '/v3/regions/:region_id', policy: 'identity:get_region',
      params: RegionParams,
      responses: { 200: envelope('region', Region) },
      handler(ctx) {
        return { status: 200, body: { region: renderRegion(ctx, identity.region(ctx.params['region_id']!)) } };
      },
    }),
    route({
      method: 'POST', path: '/v3/regions', policy: 'identity:create_region',
      body: CreateRegionBody,
      responses: { 201: envelope('region', Region) },
      handler(ctx) {
        const { region } = ctx.body;
        const created = identity.createRegion({ id: region.id, description: region.description, parentRegionId: region.parent_region_id });
        return { status: 201, body: { region: renderRegion(ctx, created) } };
      },
    }),
    route({
      method: 'PATCH', path: '/v3/regions/:region_id', policy: 'identity:update_region',
      summary: "Change a region's description or parent",
      params: RegionParams, body: UpdateRegionBody,
      responses: { 200: envelope('region', Region) },
      handler(ctx) {
        const { region } = ctx.body;
        const updated = identity.updateRegion(ctx.params['region_id']!, { description: region.description, parentRegionId: region.parent_region_id });
        return { status: 200, body: { region: renderRegion(ctx, updated) } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/regions/:region_id', policy: 'identity:delete_region',
      params: RegionParams,
      responses: { 204: null },
      handler(ctx) {
        identity.deleteRegion(ctx.params['region_id']!);
        return { status: 204 };
      },
    }),

    // ---- services ----
    route({
      method: 'GET', path: '/v3/services', policy: 'identity:list_services',
      summary: 'List services (filters: type, name)',
      query: Type.Object({ type: Type.Optional(Type.String()), name: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: collection('services', Service) },
      handler(ctx) {
        // The openstack CLI finds a service by name before type (`services?name=volume`): an ignored filter made every lookup ambiguous.
        const { type, name } = ctx.queryParams;
        const rows = identity.services().filter((s) => (type === undefined || s.type === type) && (name === undefined || s.name === name));
        return { status: 200, body: { services: rows.map((s) => renderService(ctx, s)), links: listLinks(ctx, 'services') } };
      },
    }),
    route({
      method: 'GET', path: '/v3/services/:service_id', policy: 'identity:get_service',
      params: ServiceParams,
      responses: { 200: envelope('service', Service) },
      handler(ctx) {
        return { status: 200, body: { service: renderService(ctx, identity.service(ctx.params['service_id']!)) } };
      },
    }),
    route({
      method: 'POST', path: '/v3/services', policy: 'identity:create_service',
      body: CreateServiceBody,
      responses: { 201: envelope('service', Service) },
      handler(ctx) {
        return { status: 201, body: { service: renderService(ctx, identity.createService(ctx.body.service)) } };
      },
    }),
    route({
      method: 'PATCH', path: '/v3/services/:service_id', policy: 'identity:update_service',
      params: ServiceParams, body: UpdateServiceBody,
      responses: { 200: envelope('service', Service) },
      handler(ctx) {
        return { status: 200, body: { service: renderService(ctx, identity.updateService(ctx.params['service_id']!, ctx.body.service)) } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/services/:service_id', policy: 'identity:delete_service',
      params: ServiceParams,
      responses: { 204: null },
      handler(ctx) {
        identity.deleteService(ctx.params['service_id']!);
        return { status: 204 };
      },
    }),

    // ---- endpoints ----
    route({
      method: 'GET', path: '/v3/endpoints', policy: 'identity:list_endpoints',
      summary: 'List endpoints (filters: service_id, interface, region_id)',
      query: Type.Object(
        { service_id: Type.Optional(Type.String()), interface: Type.Optional(Type.String()), region_id: Type.Optional(Type.String()) },
        { additionalProperties: true },
      ),
      responses: { 200: collection('endpoints', Endpoint) },
      handler(ctx) {
        const q = ctx.queryParams;
        const rows = identity.endpoints().filter((e) =>
          (q.service_id === undefined || e.service_id === q.service_id) &&
          (q.interface === undefined || e.interface === q.interface) &&
          (q.region_id === undefined || e.region_id === q.region_id));
        return { status: 200, body: { endpoints: rows.map((e) => renderEndpoint(ctx, e)), links: listLinks(ctx, 'endpoints') } };
      },
    }),
    route({
      method: 'GET', path: '/v3/endpoints/:endpoint_id', policy: 'identity:get_endpoint',
      params: EndpointParams,
      responses: { 200: envelope('endpoint', Endpoint) },
      handler(ctx) {
        return { status: 200, body: { endpoint: renderEndpoint(ctx, identity.endpoint(ctx.params['endpoint_id']!)) } };
      },
    }),
    route({
      method: 'POST', path: '/v3/endpoints', policy: 'identity:create_endpoint',
      body: CreateEndpointBody,
      responses: { 201: envelope('endpoint', Endpoint) },
      handler(ctx) {
        const { endpoint } = ctx.body;
        const created = identity.createEndpoint({
          interface: endpoint.interface, serviceId: endpoint.service_id, url: endpoint.url,
          regionId: endpoint.region_id ?? endpoint.region ?? null, enabled: endpoint.enabled,
        });
        return { status: 201, body: { endpoint: renderEndpoint(ctx, created) } };
      },
    }),
    route({
      method: 'PATCH', path: '/v3/endpoints/:endpoint_id', policy: 'identity:update_endpoint',
      params: EndpointParams, body: UpdateEndpointBody,
      responses: { 200: envelope('endpoint', Endpoint) },
      handler(ctx) {
        const { endpoint } = ctx.body;
        const updated = identity.updateEndpoint(ctx.params['endpoint_id']!, {
          interface: endpoint.interface, serviceId: endpoint.service_id, url: endpoint.url,
          regionId: endpoint.region_id ?? endpoint.region, enabled: endpoint.enabled,
        });
        return { status: 200, body: { endpoint: renderEndpoint(ctx, updated) } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/endpoints/:endpoint_id', policy: 'identity:delete_endpoint',
      params: EndpointParams,
      responses: { 204: null },
      handler(ctx) {
        identity.deleteEndpoint(ctx.params['endpoint_id']!);
        return { status: 204 };
      },
    }),
  ];
}
