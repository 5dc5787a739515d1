/**
 * Routes of /messages (3.3+): what went wrong with accepted requests.
 */
import { Type } from '@sinclair/typebox';
import { cinderTime } from '../../db/db.ts';
import { route, type AnyRouteSpec } from '../../http/declare.ts';
import type { RequestContext } from '../../http/router.ts';
import { messageFilters, type MessageFilter, type MessageRow } from '../messages.ts';
import { auth, microversionMax, type VolumeRouteDeps } from './common.ts';
import { Message } from './schemas.ts';

const versions = { min: 3, max: microversionMax };
const Params = Type.Object({ id: Type.String({ minLength: 1 }) });

/** Cinder's message view: resource_type and resource_uuid only when the message has them. */
export function renderMessage(ctx: RequestContext, m: MessageRow) {
  const body: Record<string, unknown> = {
    id: m.id, message_level: m.message_level, user_message: m.user_message, request_id: m.request_id ?? '', event_id: m.event_id,
    created_at: cinderTime(m.created_at), guaranteed_until: cinderTime(m.expires_at),
    links: [{ href: `${ctx.serviceUrl}/v3/${m.project_id}/messages/${m.id}`, rel: 'self' }],
  };
  if (m.resource_type) body['resource_type'] = m.resource_type;
  if (m.resource_uuid) body['resource_uuid'] = m.resource_uuid;
  return body;
}

export function messageRoutes(deps: VolumeRouteDeps): AnyRouteSpec[] {
  const { messages, osapiMaxLimit } = deps;
  return [
    route({
      method: 'GET', path: '/v3/messages', policy: 'message:get_all', versions,
      responses: { 200: Type.Object({ messages: Type.Array(Message) }, { additionalProperties: false }) },
      handler(ctx) {
        const filters: Partial<Record<MessageFilter, string>> = {};
        for (const key of messageFilters) {
          const value = ctx.query.get(key);
          if (value !== null) filters[key] = value;
        }
        return { status: 200, body: { messages: messages.list(auth(ctx), filters, osapiMaxLimit).map((m) => renderMessage(ctx, m)) } };
      },
    }),
    route({
      method: 'GET', path: '/v3/messages/:id', policy: 'message:get', versions, params: Params,
      responses: { 200: Type.Object({ message: Message }, { additionalProperties: false }) },
      handler: (ctx) => ({ status: 200, body: { message: renderMessage(ctx, messages.get(auth(ctx), ctx.params['id']!)) } }),
    }),
    route({
      method: 'DELETE', path: '/v3/messages/:id', policy: 'message:delete', versions, params: Params,
      responses: { 204: null },
      handler(ctx) {
        messages.delete(auth(ctx), ctx.params['id']!);
        return { status: 204 };
      },
    }),
  ];
}
