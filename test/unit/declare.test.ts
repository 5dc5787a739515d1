import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { Type } from '@sinclair/typebox';
import { declaredRoutes, Nullable, registerRoutes, responseProblem, route, type AnyRouteSpec } from '../../src/http/declare.ts';
import { PolicyTable } from '../../src/http/policy.ts';
import { Router, type AuthContext, type Reply, type RequestContext } from '../../src/http/router.ts';
import { PumiceError } from '../../src/errors.ts';

function auth(projectId: string, roles: string[]): AuthContext {
  return {
    tokenId: 't', userId: 'u1', userName: 'n', userDomainId: 'default', projectId, projectName: 'p', projectDomainId: 'default', domainId: null,
    roles, isAdmin: roles.includes('admin'), expiresAt: '', issuedAt: '', methods: ['password'], auditId: 'a',
  };
}

const policy = new PolicyTable({
  'thing:get': 'role:reader or role:member or role:admin',
  'thing:update': 'role:admin or (role:member and project_id:%(project_id)s)',
  'thing:admin': 'role:admin',
});

const Thing = Type.Object({ id: Type.String(), name: Type.String(), description: Nullable(Type.String()) }, { additionalProperties: false });
const OldThing = Type.Object({ id: Type.String(), name: Type.String() }, { additionalProperties: false });

interface Call {
  method?: string;
  path: string;
  query?: string;
  body?: unknown;
  auth?: AuthContext | null;
  microversion?: number;
}

function build(routes: AnyRouteSpec[], validateResponses = true) {
  const router = new Router();
  const logs: string[] = [];
  registerRoutes(router, routes, { policy, validateResponses, log: (m) => logs.push(m), versionText: (m) => `2.${m}` });
  const call = async (c: Call): Promise<Reply> => {
    const method = c.method ?? 'GET';
    const match = router.match(method, c.path);
    const ctx: RequestContext = {
      method, path: c.path, params: match.params, query: new URLSearchParams(c.query ?? ''), headers: {}, requestId: 'r', baseUrl: 'http://x',
      serviceUrl: 'http://x/compute', body: c.body, stream: null as unknown as IncomingMessage,
      auth: c.auth === undefined ? auth('p1', ['member', 'reader']) : c.auth, pathProjectId: null, microversion: c.microversion ?? 1,
    };
    return match.handler(ctx);
  };
  return { call, logs };
}

async function failure(promise: Promise<unknown>): Promise<PumiceError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof PumiceError, String(error));
    return error;
  }
  assert.fail('expected an error');
}

const things = [
  route({
    method: 'GET', path: '/things/:id', policy: 'thing:get', versions: { min: 1, max: 18 },
    responses: { 200: Type.Object({ thing: OldThing }, { additionalProperties: false }) },
    handler: (ctx) => ({ status: 200, body: { thing: { id: ctx.params['id']!, name: 'old' } } }),
  }),
  route({
    method: 'GET', path: '/things/:id', policy: 'thing:get', versions: { min: 19, max: 79 },
    responses: { 200: Type.Object({ thing: Thing }, { additionalProperties: false }) },
    handler: (ctx) => ({ status: 200, body: { thing: { id: ctx.params['id']!, name: 'new', description: null } } }),
  }),
  route({
    method: 'PUT', path: '/things/:id', policy: 'thing:update',
    params: Type.Object({ id: Type.String({ pattern: '^[a-z0-9-]+$' }) }),
    body: Type.Object({ thing: Type.Object({ name: Type.String({ minLength: 1, maxLength: 10 }), size: Type.Optional(Type.Integer({ minimum: 1 })) }, { additionalProperties: false }) }, { additionalProperties: false }),
    responses: { 200: Type.Object({ thing: OldThing }, { additionalProperties: false }) },
    handler(ctx) {
      // Typed: ctx.body.thing.name is a string.
      const name: string = ctx.body.thing.name;
      ctx.authorize('thing:update', { project_id: 'owner-project' });
      return { status: 200, body: { thing: { id: ctx.params['id']!, name } } };
    },
  }),
  route({
    method: 'GET', path: '/things', policy: 'thing:get',
    query: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 0 })), deleted: Type.Optional(Type.Boolean()), tag: Type.Optional(Type.Array(Type.String())) }, { additionalProperties: false }),
    responses: { 200: Type.Object({ query: Type.Any() }) },
    handler: (ctx) => ({ status: 200, body: { query: ctx.queryParams } }),
  }),
  route({
    method: 'POST', path: '/things/:id/bad', policy: 'thing:get',
    responses: { 200: Type.Object({ thing: OldThing }, { additionalProperties: false }), 204: null },
    handler: (ctx) => {
      const kind = ctx.queryParams['kind'];
      if (kind === 'extra') return { status: 200, body: { thing: { id: 'a', name: 'b', extra: 1 } } };
      if (kind === 'missing') return { status: 200, body: { thing: { id: 'a' } } };
      if (kind === 'type') return { status: 200, body: { thing: { id: 'a', name: 5 } } };
      if (kind === 'status') return { status: 202 };
      if (kind === 'nobody') return { status: 204, body: { x: 1 } };
      return { status: 204 };
    },
  }),
  route({
    method: 'POST', path: '/admin-only', policy: 'thing:admin', responses: { 204: null }, handler: () => ({ status: 204 }),
  }),
  route({
    method: 'GET', path: '/public', policy: '@', options: { public: true }, responses: { 200: Type.Object({ ok: Type.Boolean() }) },
    handler: () => ({ status: 200, body: { ok: true } }),
  }),
];

test('dispatch by microversion: each range gets its declaration; a version no range covers is 404', async () => {
  const { call } = build(things);
  assert.deepEqual((await call({ path: '/things/a', microversion: 1 })).body, { thing: { id: 'a', name: 'old' } });
  assert.deepEqual((await call({ path: '/things/a', microversion: 18 })).body, { thing: { id: 'a', name: 'old' } });
  assert.deepEqual((await call({ path: '/things/a', microversion: 19 })).body, { thing: { id: 'a', name: 'new', description: null } });
  const error = await failure(call({ path: '/things/a', microversion: 80 }));
  assert.equal(error.status, 404);
  assert.match(error.message, /not available in microversion 2\.80: it exists in 2\.1 to 2\.18, 2\.19 to 2\.79/);
});

test('request bodies: Nova\'s message names the field path, the value and the expected shape', async () => {
  const { call } = build(things);
  const cases: [unknown, RegExp][] = [
    [{ thing: { name: 5 } }, /^Invalid input for field\/attribute thing\/name\. Value: 5\. 5 is not of type 'string'\.$/],
    [{ thing: { name: '' } }, /thing\/name\. Value: ''\. '' is too short/],
    [{ thing: { name: 'a', size: 0 } }, /thing\/size\. Value: 0\. 0 is less than the minimum of 1/],
    [{ thing: { name: 'a', color: 'red' } }, /field\/attribute thing\. .*Additional properties are not allowed \('color' was unexpected\)/],
    [{ thing: {} }, /field\/attribute thing\. Value: \{\}\. 'name' is a required property/],
    [{ thing: { name: 'a', size: '3' } }, /'3' is not of type 'integer'/],
    [[1], /Invalid input for the request body\. Value: \[1\]\. \[1\] is not of type 'object'/],
  ];
  for (const [body, message] of cases) {
    const error = await failure(call({ method: 'PUT', path: '/things/a', body }));
    assert.equal(error.status, 400, JSON.stringify(body));
    assert.match(error.message, message, JSON.stringify(body));
  }
  const none = await failure(call({ method: 'PUT', path: '/things/a' }));
  assert.equal(none.status, 400);
  assert.match(none.message, /needs a JSON body/);
  const badPath = await failure(call({ method: 'PUT', path: '/things/A_B', body: { thing: { name: 'x' } } }));
  assert.equal(badPath.status, 400);
  assert.match(badPath.message, /path parameter id\. Value: 'A_B'/);
});

test('nullable values: a wrong type names both accepted types', async () => {
  const { call } = build([route({
    method: 'POST', path: '/n', policy: 'thing:get', body: Type.Object({ d: Nullable(Type.String()) }), responses: { 204: null },
    handler: () => ({ status: 204 }),
  })]);
  await call({ method: 'POST', path: '/n', body: { d: null } });
  const error = await failure(call({ method: 'POST', path: '/n', body: { d: 3 } }));
  assert.match(error.message, /field\/attribute d\. Value: 3\. 3 is not of type 'string', 'null'/);
});

test('query strings are coerced; arrays collect repeated keys; unknown keys refused where declared', async () => {
  const { call } = build(things);
  assert.deepEqual((await call({ path: '/things', query: 'limit=5&deleted=true&tag=a&tag=b' })).body, { query: { limit: 5, deleted: true, tag: ['a', 'b'] } });
  const error = await failure(call({ path: '/things', query: 'limit=x' }));
  assert.equal(error.status, 400);
  assert.match(error.message, /query parameter limit\. Value: 'x'\. 'x' is not of type 'integer'/);
  assert.match((await failure(call({ path: '/things', query: 'color=red' }))).message, /'color' was unexpected/);
});

test('policy: the route rule runs before the handler; authorize() checks the real target', async () => {
  const { call } = build(things);
  const reader = auth('p1', ['reader']);
  const error = await failure(call({ method: 'POST', path: '/admin-only', auth: reader }));
  assert.equal(error.status, 403);
  assert.match(error.message, /Policy doesn't allow thing:admin to be performed/);
  await call({ method: 'POST', path: '/admin-only', auth: auth('p1', ['admin']) });
  // thing:update passes with the caller's own project, then fails on the owner's.
  const other = await failure(call({ method: 'PUT', path: '/things/a', body: { thing: { name: 'x' } }, auth: auth('p1', ['member']) }));
  assert.equal(other.status, 403);
  assert.equal((await call({ method: 'PUT', path: '/things/a', body: { thing: { name: 'x' } }, auth: auth('owner-project', ['member']) })).status, 200);
  assert.equal((await call({ method: 'PUT', path: '/things/a', body: { thing: { name: 'x' } }, auth: auth('p1', ['admin']) })).status, 200);
  // Validation comes first, as in Nova: a bad body is 400 even for a caller the policy refuses.
  assert.equal((await failure(call({ method: 'PUT', path: '/things/a', body: {}, auth: reader }))).status, 400);
  assert.deepEqual((await call({ path: '/public', auth: null })).body, { ok: true });
});

test('response validation: extra, missing and mistyped keys, undeclared status and stray bodies become 500 with a log line', async () => {
  const { call, logs } = build(things);
  for (const [kind, message] of [
    ['extra', /thing: Additional properties are not allowed \('extra' was unexpected\)/],
    ['missing', /thing: 'name' is a required property/],
    ['type', /thing\/name: 5 is not of type 'string'/],
    ['status', /status 202 is not declared \(declared: 200, 204\)/],
    ['nobody', /a body was returned where none is declared/],
  ] as const) {
    const error = await failure(call({ method: 'POST', path: '/things/a/bad', query: `kind=${kind}` }));
    assert.equal(error.status, 500, kind);
    assert.match(error.message, message, kind);
    assert.match(logs.at(-1)!, /^response validation failed: POST \/things\/:id\/bad \d+ \(microversion 2\.1\): /);
  }
  assert.equal((await call({ method: 'POST', path: '/things/a/bad' })).status, 204);
  // Off (production default): the reply goes out as the handler made it.
  const lax = build(things, false);
  assert.equal((await lax.call({ method: 'POST', path: '/things/a/bad', query: 'kind=extra' })).status, 200);
});

test('registration refuses unknown policy rules and overlapping version ranges', () => {
  const spec = { method: 'GET', path: '/x', responses: { 200: null }, handler: () => ({ status: 200 }) } as const;
  assert.throws(() => build([route({ ...spec, policy: 'no:such:rule' })]), /policy rule 'no:such:rule' is not in the service's policy table/);
  assert.throws(() => build([
    route({ ...spec, policy: 'thing:get', versions: { min: 1, max: 10 } }),
    route({ ...spec, policy: 'thing:get', versions: { min: 10, max: 20 } }),
  ]), /cover the same microversions/);
});

test('declaredRoutes lists the declarations; responseProblem checks a body as the server does; Optional bodies may be absent', () => {
  const router = new Router();
  const optional = route({
    method: 'POST', path: '/act', policy: 'thing:get', responses: { 202: Type.Optional(Type.Object({ done: Type.Boolean() }, { additionalProperties: false })) },
    handler: () => ({ status: 202 }),
  });
  registerRoutes(router, [...things, optional], { policy, validateResponses: true });
  const listed = declaredRoutes(router);
  assert.equal(listed.length, things.length + 1);
  assert.deepEqual(listed.map((r) => `${r.method} ${r.path}`).slice(0, 2), ['GET /things/:id', 'GET /things/:id']);
  const getOld = listed[0]!;
  assert.equal(responseProblem(getOld, 200, 1, { thing: { id: 'a', name: 'b' } }), null);
  assert.match(responseProblem(getOld, 200, 1, { thing: { id: 'a', name: 'b', x: 1 } })!, /'x' was unexpected/);
  assert.match(responseProblem(getOld, 404, 1, {})!, /status 404 is not declared/);
  assert.equal(responseProblem(optional, 202, 1, undefined), null);
  assert.equal(responseProblem(optional, 202, 1, { done: true }), null);
  assert.match(responseProblem(optional, 202, 1, { done: 'yes' })!, /not of type 'boolean'/);
});
