/**
 * Routes of /v3/credentials: a user's blobs (EC2 keys, TOTP secrets, ...),
 * stored encrypted (see ../credentials.ts). Owners manage their own and
 * administrators any; a list shows a non-administrator only their own, as
 * Keystone filters it.
 */
import { Type } from '@sinclair/typebox';
import { route, Nullable, type AnyRouteSpec } from '../../http/declare.ts';
import type { RequestContext } from '../../http/router.ts';
import type { Credential } from '../credentials.ts';
import type { IdentityService } from '../identity.ts';
import { listLinks, selfUrl } from './render.ts';
import { collection, envelope, IdParam, IdRef } from './schemas.ts';

const strict = { additionalProperties: false } as const;

export const CredentialSchema = Type.Object(
  { id: Type.String(), user_id: Type.String(), project_id: Nullable(Type.String()), type: Type.String(), blob: Type.String(), links: Type.Object({ self: Type.String({ format: 'uri' }) }, strict) },
  strict,
);

const Blob = Type.String({ minLength: 1, maxLength: 65535 });
const CredentialType = Type.String({ minLength: 1, maxLength: 255 });
const CreateCredentialBody = envelope('credential', Type.Object(
  { user_id: Type.Optional(IdRef), project_id: Type.Optional(Nullable(IdRef)), type: CredentialType, blob: Blob },
  strict,
));
const UpdateCredentialBody = envelope('credential', Type.Object(
  { user_id: Type.Optional(IdRef), project_id: Type.Optional(Nullable(IdRef)), type: Type.Optional(CredentialType), blob: Type.Optional(Blob) },
  strict,
));
const CredentialParams = Type.Object({ credential_id: IdParam });

function renderCredential(ctx: RequestContext, c: Credential) {
  return { id: c.id, user_id: c.userId, project_id: c.projectId, type: c.type, blob: c.blob, links: { self: selfUrl(ctx, `credentials/${c.id}`) } };
}

export function credentialRoutes(identity: IdentityService): AnyRouteSpec[] {
  const store = identity.credentials;
  // The owner of the credential the path names (absent for an unknown one: only administrators then learn it is a 404).
  const ownerTarget = (ctx: RequestContext) => ({ 'target.credential.user_id': store.findRow(ctx.params['credential_id'] ?? '')?.user_id ?? null });
  return [
    route({
      method: 'GET', path: '/v3/credentials', policy: 'identity:list_credentials',
      summary: "List credentials (filters: user_id, type); a non-administrator sees only their own",
      query: Type.Object({ user_id: Type.Optional(Type.String()), type: Type.Optional(Type.String()) }, { additionalProperties: true }),
      responses: { 200: collection('credentials', CredentialSchema) },
      handler(ctx) {
        const own = !ctx.can('admin_required');
        const wanted = ctx.queryParams.user_id ?? null;
        const rows = own && wanted !== null && wanted !== ctx.auth!.userId ? [] : store.list({ userId: own ? ctx.auth!.userId : wanted, type: ctx.queryParams.type ?? null });
        return { status: 200, body: { credentials: rows.map((c) => renderCredential(ctx, c)), links: listLinks(ctx, 'credentials') } };
      },
    }),
    route({
      method: 'POST', path: '/v3/credentials', policy: 'identity:create_credential',
      summary: 'Store a credential for a user (default: the caller)',
      target: (ctx) => {
        const body = ctx.body as { credential?: { user_id?: string } } | undefined;
        return { 'target.credential.user_id': body?.credential?.user_id ?? ctx.auth?.userId ?? null };
      },
      body: CreateCredentialBody,
      responses: { 201: envelope('credential', CredentialSchema) },
      handler(ctx) {
        const { credential } = ctx.body;
        const userId = credential.user_id ?? ctx.auth!.userId;
        identity.user(userId);
        if (credential.project_id) identity.project(credential.project_id);
        const created = store.create({ userId, projectId: credential.project_id ?? null, type: credential.type, blob: credential.blob });
        return { status: 201, body: { credential: renderCredential(ctx, created) } };
      },
    }),
    route({
      method: 'GET', path: '/v3/credentials/:credential_id', policy: 'identity:get_credential', target: ownerTarget,
      params: CredentialParams,
      responses: { 200: envelope('credential', CredentialSchema) },
      handler(ctx) {
        return { status: 200, body: { credential: renderCredential(ctx, store.get(ctx.params['credential_id']!)) } };
      },
    }),
    route({
      method: 'PATCH', path: '/v3/credentials/:credential_id', policy: 'identity:update_credential', target: ownerTarget,
      params: CredentialParams, body: UpdateCredentialBody,
      responses: { 200: envelope('credential', CredentialSchema) },
      handler(ctx) {
        const { credential } = ctx.body;
        store.get(ctx.params['credential_id']!);
        // Giving a credential to another user is an administrator's act.
        if (credential.user_id !== undefined && credential.user_id !== ctx.auth!.userId) {
          ctx.authorize('admin_required');
          identity.user(credential.user_id);
        }
        if (credential.project_id) identity.project(credential.project_id);
        const updated = store.update(ctx.params['credential_id']!, { userId: credential.user_id, projectId: credential.project_id, type: credential.type, blob: credential.blob });
        return { status: 200, body: { credential: renderCredential(ctx, updated) } };
      },
    }),
    route({
      method: 'DELETE', path: '/v3/credentials/:credential_id', policy: 'identity:delete_credential', target: ownerTarget,
      params: CredentialParams,
      responses: { 204: null },
      handler(ctx) {
        store.delete(ctx.params['credential_id']!);
        return { status: 204 };
      },
    }),
  ];
}
