/**
 * Response contract of the Identity v3 API: every declared route is driven as
 * the admin, a member and a reader of project A, a member of project B
 * ("other"), an unscoped token and without a token, through the resources'
 * life (create, show, update, grant, check, revoke, delete). Every answer is
 * checked three times: by the server (PUMICE_VALIDATE_RESPONSES=1: a mismatch
 * would be a 500), here against the route's declared schema for its status
 * (additionalProperties false: extra, missing or mistyped keys fail), and
 * against the key sets of the Identity API v3 reference, written out below
 * independently of our schemas. Faults must be Keystone's
 * `{"error": {"code", "title", "message"}}`. tempest.lib has no Identity
 * response schemas, so the reference's parameter tables are the source. The
 * test ends by checking that every declared route was exercised, and a second
 * server checks that `[oslo_policy] policy_file` overrides Identity rules.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { declaredRoutes, responseProblem, type AnyRouteSpec } from '../../src/http/declare.ts';
import type { IdentityService } from '../../src/identity/identity.ts';
import { identityRouter } from '../../src/identity/api/app.ts';
import { ApiClient, openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const cliEnvFor = (adminEnv: Record<string, string>, user: string, password: string, project: string) => ({ ...adminEnv, OS_USERNAME: user, OS_PASSWORD: password, OS_PROJECT_NAME: project });

type Persona = 'admin' | 'member' | 'reader' | 'other' | 'unscoped' | 'anonymous';

/** The Identity API's declarations, read from a router built over a stand-in service (registration does not call it). */
const specs: AnyRouteSpec[] = declaredRoutes(identityRouter({ identity: {} as IdentityService, policyOverrides: {}, validateResponses: false, log: () => undefined }));

function specFor(method: string, path: string): AnyRouteSpec | null {
  const bare = path.split('?')[0]!.replace(/^\/identity/, '');
  return specs.find((s) => {
    if (s.method !== method) return false;
    const pattern = new RegExp(`^${s.path.split('/').map((seg) => (seg.startsWith(':') ? '[^/]+' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('/')}/?$`);
    return pattern.test(bare);
  }) ?? null;
}

/**
 * Keys of each entity in the Identity API v3 reference (docs.openstack.org/api-ref/identity/v3):
 * every `required` key must be there, and no key outside `required` and `optional`.
 */
const reference: Record<string, { required: string[]; optional?: string[] }> = {
  project: { required: ['description', 'domain_id', 'enabled', 'id', 'is_domain', 'links', 'name', 'parent_id'], optional: ['tags', 'options'] },
  domain: { required: ['description', 'enabled', 'id', 'links', 'name'], optional: ['tags', 'options'] },
  user: { required: ['domain_id', 'enabled', 'id', 'links', 'name', 'password_expires_at'], optional: ['default_project_id', 'description', 'email', 'options'] },
  role: { required: ['id', 'links', 'name'], optional: ['domain_id', 'description', 'options'] },
  region: { required: ['description', 'id', 'links', 'parent_region_id'] },
  service: { required: ['enabled', 'id', 'links', 'type'], optional: ['name', 'description'] },
  endpoint: { required: ['enabled', 'id', 'interface', 'links', 'region', 'region_id', 'service_id', 'url'] },
  group: { required: ['description', 'domain_id', 'id', 'links', 'name'] },
  token: { required: ['audit_ids', 'expires_at', 'issued_at', 'methods', 'user'], optional: ['application_credential', 'catalog', 'domain', 'is_domain', 'project', 'roles', 'system'] },
  // Exactly one of user and group (checked in the declared schema).
  role_assignment: { required: ['links', 'role', 'scope'], optional: ['user', 'group'] },
  credential: { required: ['blob', 'id', 'links', 'project_id', 'type', 'user_id'] },
  application_credential: {
    required: ['description', 'expires_at', 'id', 'links', 'name', 'project_id', 'roles', 'unrestricted'],
    optional: ['access_rules', 'secret', 'user_id'],
  },
  version: { required: ['id', 'links', 'media-types', 'status', 'updated'] },
};
/** Collection key -> entity name. */
const collections: Record<string, string> = {
  projects: 'project', domains: 'domain', users: 'user', roles: 'role', regions: 'region', services: 'service',
  endpoints: 'endpoint', groups: 'group', role_assignments: 'role_assignment', credentials: 'credential',
  application_credentials: 'application_credential',
};

function referenceProblems(body: unknown): string[] {
  if (!body || typeof body !== 'object') return [];
  const problems: string[] = [];
  const checkEntity = (entity: string, value: unknown, where: string) => {
    const ref = reference[entity]!;
    const keys = Object.keys(value as object);
    for (const k of ref.required) if (!keys.includes(k)) problems.push(`${where}: '${k}' missing`);
    for (const k of keys) if (!ref.required.includes(k) && !(ref.optional ?? []).includes(k)) problems.push(`${where}: '${k}' is not in the reference`);
    const links = (value as Record<string, unknown>)['links'];
    if (!['version', 'role_assignment', 'token'].includes(entity) && (typeof links !== 'object' || links === null || typeof (links as Record<string, unknown>)['self'] !== 'string')) {
      problems.push(`${where}: links.self missing`);
    }
  };
  for (const [key, value] of Object.entries(body as Record<string, unknown>)) {
    if (reference[key]) checkEntity(key, value, key);
    else if (collections[key] && Array.isArray(value)) {
      value.forEach((item, i) => checkEntity(collections[key]!, item, `${key}[${i}]`));
      const links = (body as Record<string, unknown>)['links'] as Record<string, unknown> | undefined;
      if (!links || Object.keys(links).sort().join() !== 'next,previous,self') problems.push(`${key}: list links are not {self, previous, next}`);
    }
  }
  return problems;
}

describe('Identity API response contract', () => {
  let pumice: PumiceProcess;
  const tokens = {} as Record<Exclude<Persona, 'anonymous'>, string>;
  const covered = new Set<string>();
  const problems: string[] = [];
  const ids = {} as Record<'projectA' | 'projectB' | 'member' | 'reader' | 'other' | 'adminUser' | 'memberRole' | 'readerRole', string>;

  /** One request; checks the status, then the body against the declaration and the reference, or the fault shape. */
  async function call(as: Persona, method: string, path: string, expect: number, body?: unknown, headers: Record<string, string> = {}): Promise<any> {
    const spec = specFor(method, path);
    const res = await fetch(`${pumice.url}${path}`, {
      method,
      headers: {
        ...(as === 'anonymous' ? {} : { 'X-Auth-Token': tokens[as] }),
        ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const parsed: unknown = (res.headers.get('content-type') ?? '').startsWith('application/json') && text ? JSON.parse(text) : undefined;
    const where = `${as} ${method} ${path} -> ${res.status}`;
    if (res.status !== expect) problems.push(`${where}: expected ${expect}: ${text.slice(0, 300)}`);
    if (res.status < 400) {
      if (!spec) {
        problems.push(`${where}: answered without a declared route`);
        return parsed;
      }
      covered.add(`${spec.method} ${spec.path}`);
      const problem = responseProblem(spec, res.status, 0, parsed);
      if (problem) problems.push(`${where}: ${problem}`);
      for (const p of referenceProblems(parsed)) problems.push(`${where}: ${p}`);
      if (method === 'HEAD' && text !== '') problems.push(`${where}: HEAD reply has a body`);
    } else if (method !== 'HEAD') {
      const error = (parsed as { error?: Record<string, unknown> } | undefined)?.error;
      if (!parsed || Object.keys(parsed).length !== 1 || !error || error['code'] !== res.status || typeof error['title'] !== 'string' || typeof error['message'] !== 'string' || error['message'] === ''
        || Object.keys(error).sort().join() !== 'code,message,title') {
        problems.push(`${where}: not a Keystone fault: ${text.slice(0, 300)}`);
      }
      if (res.status === 401 && !res.headers.get('www-authenticate')) problems.push(`${where}: 401 without WWW-Authenticate`);
    }
    return parsed;
  }

  async function login(name: string, password: string, scope?: unknown): Promise<string> {
    const res = await fetch(`${pumice.url}/identity/v3/auth/tokens`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name, domain: { id: 'default' }, password } } }, ...(scope !== undefined ? { scope } : {}) } }),
    });
    assert.equal(res.status, 201, await res.text());
    return res.headers.get('x-subject-token')!;
  }

  before(async () => {
    pumice = await startPumice();
    const admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    tokens.admin = admin.token;
    const roleId = async (name: string) => ((await admin.request('GET', `/identity/v3/roles?name=${name}`)).body.roles as { id: string }[])[0]!.id;
    ids.memberRole = await roleId('member');
    ids.readerRole = await roleId('reader');
    const project = async (name: string) => (await admin.request('POST', '/identity/v3/projects', { project: { name, domain_id: 'default' } })).body.project.id as string;
    const user = async (name: string, projectId: string, role: string) => {
      const created = await admin.request('POST', '/identity/v3/users', { user: { name, password: `pw-${name}`, domain_id: 'default' } });
      assert.equal(created.status, 201, created.text);
      const granted = await admin.request('PUT', `/identity/v3/projects/${projectId}/users/${created.body.user.id}/roles/${role}`);
      assert.equal(granted.status, 204, granted.text);
      return created.body.user.id as string;
    };
    ids.projectA = await project('idc-a');
    ids.projectB = await project('idc-b');
    ids.member = await user('idc-member', ids.projectA, ids.memberRole);
    ids.reader = await user('idc-reader', ids.projectA, ids.readerRole);
    ids.other = await user('idc-other', ids.projectB, ids.memberRole);
    ids.adminUser = (await admin.request('GET', '/identity/v3/users?name=admin')).body.users[0].id;
    tokens.member = await login('idc-member', 'pw-idc-member', { project: { id: ids.projectA } });
    tokens.reader = await login('idc-reader', 'pw-idc-reader', { project: { id: ids.projectA } });
    tokens.other = await login('idc-other', 'pw-idc-other', { project: { id: ids.projectB } });
    tokens.unscoped = await login('idc-member', 'pw-idc-member');
  });

  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
  });

  test('version documents, without a token', async () => {
    const versions = await call('anonymous', 'GET', '/identity/', 300);
    assert.equal(versions.versions.values[0].id, 'v3.14');
    const v3 = await call('anonymous', 'GET', '/identity/v3', 200);
    assert.match(v3.version.links[0].href, /\/identity\/v3\/$/);
    assert.deepEqual(problems, []);
  });

  test('tokens: issue in every scope, validate, check and revoke, as the subject, the admin and another user', async () => {
    const I = '/identity/v3';
    const pw = (name: string, password: string, scope?: unknown) => ({ auth: { identity: { methods: ['password'], password: { user: { name, domain: { name: 'Default' }, password } } }, ...(scope !== undefined ? { scope } : {}) } });
    const scoped = await call('anonymous', 'POST', `${I}/auth/tokens`, 201, pw('idc-member', 'pw-idc-member', { project: { name: 'idc-a', domain: { id: 'default' } } }));
    assert.equal(scoped.token.project.id, ids.projectA);
    assert.equal(scoped.token.is_domain, false);
    assert.deepEqual(scoped.token.roles.map((r: { name: string }) => r.name).sort(), ['member', 'reader']);
    assert.ok(scoped.token.catalog.some((s: { type: string }) => s.type === 'identity'));
    const noCatalog = await call('anonymous', 'POST', `${I}/auth/tokens?nocatalog`, 201, pw('idc-member', 'pw-idc-member', { project: { id: ids.projectA } }));
    assert.equal(noCatalog.token.catalog, undefined);
    const unscoped = await call('anonymous', 'POST', `${I}/auth/tokens`, 201, pw('idc-member', 'pw-idc-member'));
    assert.equal(unscoped.token.project, undefined);
    assert.equal(unscoped.token.roles, undefined);
    const explicit = await call('anonymous', 'POST', `${I}/auth/tokens`, 201, pw('idc-member', 'pw-idc-member', 'unscoped'));
    assert.equal(explicit.token.catalog, undefined);
    const domainScoped = await call('anonymous', 'POST', `${I}/auth/tokens`, 201, pw('admin', pumice.adminPassword, { domain: { id: 'default' } }));
    assert.deepEqual(domainScoped.token.domain, { id: 'default', name: 'Default' });
    // Rescope the unscoped token with the token method.
    const rescoped = await call('anonymous', 'POST', `${I}/auth/tokens`, 201, { auth: { identity: { methods: ['token'], token: { id: tokens.unscoped } }, scope: { project: { id: ids.projectA } } } });
    assert.deepEqual(rescoped.token.methods.sort(), ['password', 'token']);
    // audit_ids: the token's own, then the first of its chain (Keystone), also after a second rescope.
    const parentAudit = (await call('admin', 'GET', `${I}/auth/tokens`, 200, undefined, { 'X-Subject-Token': tokens.unscoped })).token.audit_ids as string[];
    assert.equal(parentAudit.length, 1);
    assert.equal(rescoped.token.audit_ids.length, 2);
    assert.equal(rescoped.token.audit_ids[1], parentAudit[0]);
    const rescopedToken = await fetch(`${pumice.url}${I}/auth/tokens`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ auth: { identity: { methods: ['token'], token: { id: tokens.unscoped } }, scope: { project: { id: ids.projectA } } } }),
    }).then((r) => r.headers.get('x-subject-token')!);
    const twice = await call('anonymous', 'POST', `${I}/auth/tokens`, 201, { auth: { identity: { methods: ['token'], token: { id: rescopedToken } } } });
    assert.equal(twice.token.audit_ids[1], parentAudit[0]);
    assert.equal(twice.token.project.id, ids.projectA, 'a rescope without a scope keeps the parent token\'s');
    await call('anonymous', 'POST', `${I}/auth/tokens`, 401, pw('idc-member', 'wrong'));
    await call('anonymous', 'POST', `${I}/auth/tokens`, 400, pw('idc-member', 'pw-idc-member', 'project'));
    await call('anonymous', 'POST', `${I}/auth/tokens`, 401, pw('idc-member', 'pw-idc-member', { project: { id: ids.projectB } }));

    // A throwaway token of the member, validated by its user, the admin and others.
    const subjectToken = await login('idc-member', 'pw-idc-member', { project: { id: ids.projectA } });
    const subject = { 'X-Subject-Token': subjectToken };
    for (const as of ['member', 'admin', 'unscoped'] as const) {
      const shown = await call(as, 'GET', `${I}/auth/tokens`, 200, undefined, subject);
      assert.equal(shown.token.user.id, ids.member);
      await call(as, 'HEAD', `${I}/auth/tokens`, 200, undefined, subject);
    }
    await call('member', 'GET', `${I}/auth/tokens?nocatalog=1`, 200, undefined, subject);
    for (const as of ['reader', 'other'] as const) {
      await call(as, 'GET', `${I}/auth/tokens`, 403, undefined, subject);
      await call(as, 'HEAD', `${I}/auth/tokens`, 403, undefined, subject);
      await call(as, 'DELETE', `${I}/auth/tokens`, 403, undefined, subject);
    }
    await call('anonymous', 'GET', `${I}/auth/tokens`, 401, undefined, subject);
    await call('admin', 'GET', `${I}/auth/tokens`, 400);
    await call('admin', 'GET', `${I}/auth/tokens`, 404, undefined, { 'X-Subject-Token': 'not-a-token' });
    await call('member', 'GET', `${I}/auth/tokens`, 403, undefined, { 'X-Subject-Token': 'not-a-token' });
    await call('member', 'DELETE', `${I}/auth/tokens`, 204, undefined, subject);
    await call('admin', 'GET', `${I}/auth/tokens`, 404, undefined, subject);
    const second = await login('idc-other', 'pw-idc-other', { project: { id: ids.projectB } });
    await call('admin', 'DELETE', `${I}/auth/tokens`, 204, undefined, { 'X-Subject-Token': second });
    assert.deepEqual(problems, []);
  });

  test("the caller's scopes and catalog", async () => {
    const I = '/identity/v3';
    for (const as of ['member', 'reader', 'other', 'admin'] as const) {
      const catalog = await call(as, 'GET', `${I}/auth/catalog`, 200);
      const volume = catalog.catalog.find((s: { type: string }) => s.type === 'volumev3');
      assert.ok(volume.endpoints.every((e: { url: string }) => !e.url.includes('$(')), 'templates are rendered');
      await call(as, 'GET', `${I}/auth/system`, 200);
    }
    await call('unscoped', 'GET', `${I}/auth/catalog`, 403);
    await call('anonymous', 'GET', `${I}/auth/catalog`, 401);
    const projects = await call('unscoped', 'GET', `${I}/auth/projects`, 200);
    assert.deepEqual(projects.projects.map((p: { id: string }) => p.id), [ids.projectA]);
    assert.deepEqual((await call('other', 'GET', `${I}/auth/projects`, 200)).projects.map((p: { id: string }) => p.id), [ids.projectB]);
    assert.deepEqual((await call('member', 'GET', `${I}/auth/domains`, 200)).domains, []);
    assert.deepEqual((await call('admin', 'GET', `${I}/auth/domains`, 200)).domains.map((d: { id: string }) => d.id), ['default']);
    await call('unscoped', 'GET', `${I}/auth/system`, 200);
    assert.deepEqual(problems, []);
  });

  test('domains: readers of any scope read, the admin creates, an unscoped token is refused', async () => {
    const I = '/identity/v3';
    for (const as of ['member', 'reader', 'other', 'admin'] as const) {
      await call(as, 'GET', `${I}/domains`, 200);
      await call(as, 'GET', `${I}/domains?name=Default`, 200);
      await call(as, 'GET', `${I}/domains/default`, 200);
    }
    await call('unscoped', 'GET', `${I}/domains`, 403);
    await call('unscoped', 'GET', `${I}/domains/default`, 403);
    await call('member', 'POST', `${I}/domains`, 403, { domain: { name: 'idc-domain' } });
    const created = await call('admin', 'POST', `${I}/domains`, 201, { domain: { name: 'idc-domain', description: 'contract' } });
    assert.equal(created.domain.name, 'idc-domain');
    await call('admin', 'POST', `${I}/domains`, 409, { domain: { name: 'idc-domain' } });
    await call('admin', 'POST', `${I}/domains`, 400, { domain: { name: 'x', bogus: 1 } });
    await call('admin', 'GET', `${I}/domains/no-such-domain`, 404);
    assert.deepEqual(problems, []);
  });

  test('projects: through create, show, update and delete as every persona', async () => {
    const I = '/identity/v3';
    const created = await call('admin', 'POST', `${I}/projects`, 201, { project: { name: 'idc-c', description: 'contract', tags: ['t1'], domain_id: 'default' } });
    const id = created.project.id as string;
    assert.deepEqual(created.project.tags, ['t1']);
    for (const as of ['member', 'reader', 'other'] as const) await call(as, 'POST', `${I}/projects`, 403, { project: { name: 'nope' } });
    // Lists: the admin sees all, others the projects they hold a role on.
    const all = await call('admin', 'GET', `${I}/projects`, 200);
    assert.ok(all.projects.some((p: { id: string }) => p.id === id));
    assert.deepEqual((await call('member', 'GET', `${I}/projects`, 200)).projects.map((p: { id: string }) => p.id), [ids.projectA]);
    assert.deepEqual((await call('other', 'GET', `${I}/projects`, 200)).projects.map((p: { id: string }) => p.id), [ids.projectB]);
    assert.deepEqual((await call('unscoped', 'GET', `${I}/projects`, 200)).projects.map((p: { id: string }) => p.id), [ids.projectA]);
    await call('admin', 'GET', `${I}/projects?name=idc-c&domain_id=default&enabled=true`, 200);
    // Show: the admin, a token scoped to it, a user with a role on it.
    await call('admin', 'GET', `${I}/projects/${id}`, 200);
    for (const as of ['member', 'reader', 'unscoped'] as const) await call(as, 'GET', `${I}/projects/${ids.projectA}`, 200);
    await call('other', 'GET', `${I}/projects/${ids.projectA}`, 403);
    await call('member', 'GET', `${I}/projects/${id}`, 403);
    await call('admin', 'GET', `${I}/projects/no-such-project`, 404);
    // Update and delete.
    const updated = await call('admin', 'PATCH', `${I}/projects/${id}`, 200, { project: { name: 'idc-c2', enabled: false, description: null } });
    assert.equal(updated.project.enabled, false);
    await call('member', 'PATCH', `${I}/projects/${ids.projectA}`, 403, { project: { name: 'x' } });
    await call('admin', 'PATCH', `${I}/projects/${id}`, 400, { project: { bogus: 1 } });
    await call('reader', 'DELETE', `${I}/projects/${id}`, 403);
    await call('admin', 'DELETE', `${I}/projects/${id}`, 204);
    await call('admin', 'GET', `${I}/projects/${id}`, 404);
    assert.deepEqual(problems, []);
  });

  test('users and groups: the admin manages, a user reads themself and changes their password', async () => {
    const I = '/identity/v3';
    const created = await call('admin', 'POST', `${I}/users`, 201, {
      user: { name: 'idc-u', password: 'pw-1', email: 'u@example.com', description: 'contract', default_project_id: ids.projectA, domain_id: 'default' },
    });
    const id = created.user.id as string;
    assert.equal(created.user.default_project_id, ids.projectA);
    const bare = await call('admin', 'POST', `${I}/users`, 201, { user: { name: 'idc-bare' } });
    assert.equal(bare.user.email, undefined);
    for (const as of ['member', 'reader', 'other', 'unscoped'] as const) {
      await call(as, 'POST', `${I}/users`, 403, { user: { name: 'nope' } });
      await call(as, 'GET', `${I}/users`, 403);
      await call(as, 'GET', `${I}/users/${id}`, 403);
      await call(as, 'GET', `${I}/users/${id}/projects`, 403);
      await call(as, 'GET', `${I}/users/${id}/groups`, 403);
      await call(as, 'GET', `${I}/groups`, 403);
    }
    await call('admin', 'GET', `${I}/users`, 200);
    await call('admin', 'GET', `${I}/users?name=idc-u&domain_id=default`, 200);
    await call('admin', 'GET', `${I}/users/${id}`, 200);
    await call('admin', 'GET', `${I}/users/${id}/projects`, 200);
    await call('admin', 'GET', `${I}/users/${id}/groups`, 200);
    await call('admin', 'GET', `${I}/groups`, 200);
    for (const as of ['member', 'unscoped'] as const) {
      assert.equal((await call(as, 'GET', `${I}/users/${ids.member}`, 200)).user.name, 'idc-member');
      assert.deepEqual((await call(as, 'GET', `${I}/users/${ids.member}/projects`, 200)).projects.map((p: { id: string }) => p.id), [ids.projectA]);
      await call(as, 'GET', `${I}/users/${ids.member}/groups`, 200);
    }
    const updated = await call('admin', 'PATCH', `${I}/users/${id}`, 200, { user: { email: null, enabled: false } });
    assert.equal(updated.user.enabled, false);
    await call('member', 'PATCH', `${I}/users/${ids.member}`, 403, { user: { name: 'x' } });
    await call('admin', 'PATCH', `${I}/users/${id}`, 200, { user: { enabled: true, password: 'pw-2' } });
    // Password change: only by the user, with the original password.
    const own = await login('idc-u', 'pw-2');
    const u = { 'X-Auth-Token': own };
    const change = async (token: Record<string, string>, userId: string, original: string, expect: number) => {
      const res = await fetch(`${pumice.url}${I}/users/${userId}/password`, { method: 'POST', headers: { ...token, 'Content-Type': 'application/json' }, body: JSON.stringify({ user: { password: 'pw-3', original_password: original } }) });
      if (res.status !== expect) problems.push(`password change of ${userId}: ${res.status}, expected ${expect}: ${await res.text()}`);
      if (res.status === 204) covered.add('POST /v3/users/:user_id/password');
    };
    await change({ 'X-Auth-Token': tokens.admin }, id, 'pw-2', 403);
    await change(u, id, 'wrong', 401);
    await change(u, id, 'pw-2', 204);
    await login('idc-u', 'pw-3');
    await call('member', 'DELETE', `${I}/users/${id}`, 403);
    await call('admin', 'DELETE', `${I}/users/${id}`, 204);
    await call('admin', 'DELETE', `${I}/users/${bare.user.id}`, 204);
    await call('admin', 'GET', `${I}/users/${id}`, 404);
    assert.deepEqual(problems, []);
  });

  test('roles, grants on projects and domains, and role assignments', async () => {
    const I = '/identity/v3';
    for (const as of ['member', 'reader', 'other', 'admin'] as const) {
      await call(as, 'GET', `${I}/roles`, 200);
      await call(as, 'GET', `${I}/roles/${ids.memberRole}`, 200);
    }
    await call('unscoped', 'GET', `${I}/roles`, 403);
    await call('member', 'POST', `${I}/roles`, 403, { role: { name: 'idc-role' } });
    const role = (await call('admin', 'POST', `${I}/roles`, 201, { role: { name: 'idc-role', description: 'contract' } })).role.id as string;
    await call('admin', 'PATCH', `${I}/roles/${role}`, 200, { role: { description: 'changed' } });
    await call('member', 'PATCH', `${I}/roles/${role}`, 403, { role: { description: 'x' } });

    for (const [kind, target] of [['projects', ids.projectA], ['domains', 'default']] as const) {
      const base = `${I}/${kind}/${target}/users/${ids.reader}/roles`;
      await call('member', 'PUT', `${base}/${role}`, 403);
      await call('admin', 'PUT', `${base}/${role}`, 204);
      await call('admin', 'HEAD', `${base}/${role}`, 204);
      await call('admin', 'GET', `${base}/${role}`, 204);
      await call('member', 'GET', `${base}/${role}`, 403);
      await call('member', 'HEAD', `${base}/${role}`, 403);
      const granted = await call('admin', 'GET', base, 200);
      assert.ok(granted.roles.some((r: { id: string }) => r.id === role));
      await call('reader', 'GET', base, 200);
      await call('other', 'GET', base, 403);
      await call('member', 'DELETE', `${base}/${role}`, 403);
      await call('admin', 'DELETE', `${base}/${role}`, 204);
      // Keystone revokes the user's tokens on the target when one of their roles there is revoked.
      await call('reader', 'GET', `${I}/roles`, kind === 'projects' ? 401 : 200);
      tokens.reader = await login('idc-reader', 'pw-idc-reader', { project: { id: ids.projectA } });
      await call('admin', 'GET', `${base}/${role}`, 404);
      await call('admin', 'HEAD', `${base}/${role}`, 404);
    }

    const all = await call('admin', 'GET', `${I}/role_assignments`, 200);
    assert.ok(all.role_assignments.some((a: { user: { id: string }; scope: { project?: { id: string } } }) => a.user.id === ids.member && a.scope.project?.id === ids.projectA));
    const named = await call('admin', 'GET', `${I}/role_assignments?include_names=true&scope.project.id=${ids.projectA}`, 200);
    assert.ok(named.role_assignments.every((a: { role: { name?: string }; scope: { project: { name?: string } } }) => a.role.name && a.scope.project.name === 'idc-a'));
    await call('admin', 'GET', `${I}/role_assignments?scope.domain.id=default&include_names=1`, 200);
    await call('admin', 'GET', `${I}/role_assignments?role.id=${ids.memberRole}&user.id=${ids.member}`, 200);
    await call('admin', 'GET', `${I}/role_assignments?group.id=none`, 200);
    const own = await call('member', 'GET', `${I}/role_assignments?user.id=${ids.member}`, 200);
    assert.ok(own.role_assignments.every((a: { user: { id: string } }) => a.user.id === ids.member));
    await call('member', 'GET', `${I}/role_assignments`, 403);
    await call('member', 'GET', `${I}/role_assignments?user.id=${ids.other}`, 403);

    await call('member', 'DELETE', `${I}/roles/${role}`, 403);
    await call('admin', 'DELETE', `${I}/roles/${role}`, 204);
    await call('admin', 'GET', `${I}/roles/${role}`, 404);
    assert.deepEqual(problems, []);
  });

  test('domains: update, the disable-then-delete rule, and the default domain', async () => {
    const I = '/identity/v3';
    const id = (await call('admin', 'POST', `${I}/domains`, 201, { domain: { name: 'idc-d2', description: 'to delete' } })).domain.id as string;
    await call('member', 'PATCH', `${I}/domains/${id}`, 403, { domain: { description: 'x' } });
    const renamed = await call('admin', 'PATCH', `${I}/domains/${id}`, 200, { domain: { name: 'idc-d2b', description: null } });
    assert.equal(renamed.domain.name, 'idc-d2b');
    await call('admin', 'PATCH', `${I}/domains/${id}`, 409, { domain: { name: 'Default' } });
    await call('member', 'DELETE', `${I}/domains/${id}`, 403);
    const refused = await call('admin', 'DELETE', `${I}/domains/${id}`, 403);
    assert.match(refused.error.message, /disable/);
    // A domain that still holds a project is refused even when disabled, naming what it holds.
    const project = (await call('admin', 'POST', `${I}/projects`, 201, { project: { name: 'idc-in-d2', domain_id: id } })).project.id as string;
    assert.equal((await call('admin', 'PATCH', `${I}/domains/${id}`, 200, { domain: { enabled: false } })).domain.enabled, false);
    assert.match((await call('admin', 'DELETE', `${I}/domains/${id}`, 409)).error.message, /1 projects/);
    await call('admin', 'DELETE', `${I}/projects/${project}`, 204);
    await call('admin', 'DELETE', `${I}/domains/${id}`, 204);
    await call('admin', 'GET', `${I}/domains/${id}`, 404);
    await call('admin', 'DELETE', `${I}/domains/${id}`, 404);
    await call('admin', 'PATCH', `${I}/domains/default`, 403, { domain: { enabled: false } });
    await call('admin', 'DELETE', `${I}/domains/default`, 403);
    assert.deepEqual(problems, []);
  });

  test('groups: CRUD, membership, grants to groups, effective assignments and a member token with group roles', async () => {
    const I = '/identity/v3';
    await call('member', 'POST', `${I}/groups`, 403, { group: { name: 'idc-g' } });
    const group = (await call('admin', 'POST', `${I}/groups`, 201, { group: { name: 'idc-g', description: 'contract' } })).group.id as string;
    await call('admin', 'POST', `${I}/groups`, 409, { group: { name: 'idc-g' } });
    await call('admin', 'GET', `${I}/groups`, 200);
    assert.equal((await call('admin', 'GET', `${I}/groups?name=idc-g&domain_id=default`, 200)).groups.length, 1);
    await call('member', 'GET', `${I}/groups`, 403);
    await call('admin', 'GET', `${I}/groups/${group}`, 200);
    await call('member', 'GET', `${I}/groups/${group}`, 403);
    await call('admin', 'PATCH', `${I}/groups/${group}`, 200, { group: { description: 'changed' } });
    await call('member', 'PATCH', `${I}/groups/${group}`, 403, { group: { description: 'x' } });

    // Membership of the "other" user (who holds nothing on project A).
    const member = `${I}/groups/${group}/users/${ids.other}`;
    await call('member', 'PUT', member, 403);
    await call('admin', 'PUT', member, 204);
    await call('admin', 'PUT', member, 204);
    await call('admin', 'HEAD', member, 204);
    await call('admin', 'GET', member, 204);
    await call('member', 'HEAD', member, 403);
    await call('admin', 'GET', `${I}/groups/${group}/users/${ids.reader}`, 404);
    assert.deepEqual((await call('admin', 'GET', `${I}/groups/${group}/users`, 200)).users.map((u: { id: string }) => u.id), [ids.other]);
    await call('member', 'GET', `${I}/groups/${group}/users`, 403);
    assert.deepEqual((await call('other', 'GET', `${I}/users/${ids.other}/groups`, 200)).groups.map((g: { id: string }) => g.id), [group]);
    await call('member', 'GET', `${I}/users/${ids.other}/groups`, 403);

    // A group grant on project A lets "other" scope a token there, with the group's role.
    for (const [kind, target] of [['projects', ids.projectA], ['domains', 'default']] as const) {
      const base = `${I}/${kind}/${target}/groups/${group}/roles`;
      await call('member', 'PUT', `${base}/${ids.readerRole}`, 403);
      await call('admin', 'PUT', `${base}/${ids.readerRole}`, 204);
      await call('admin', 'HEAD', `${base}/${ids.readerRole}`, 204);
      await call('admin', 'GET', `${base}/${ids.readerRole}`, 204);
      await call('admin', 'GET', `${base}/${ids.memberRole}`, 404);
      await call('admin', 'HEAD', `${base}/${ids.memberRole}`, 404);
      assert.deepEqual((await call('admin', 'GET', base, 200)).roles.map((r: { id: string }) => r.id), [ids.readerRole]);
      await call('member', 'GET', base, 403);
    }
    const viaGroup = await call('anonymous', 'POST', `${I}/auth/tokens`, 201, { auth: { identity: { methods: ['password'], password: { user: { id: ids.other, password: 'pw-idc-other' } } }, scope: { project: { id: ids.projectA } } } });
    assert.deepEqual(viaGroup.token.roles.map((r: { name: string }) => r.name), ['reader']);
    const groupAssignments = await call('admin', 'GET', `${I}/role_assignments?group.id=${group}&include_names=1`, 200);
    assert.equal(groupAssignments.role_assignments.length, 2);
    assert.ok(groupAssignments.role_assignments.every((a: { group?: { name: string } }) => a.group?.name === 'idc-g'));
    const effective = await call('admin', 'GET', `${I}/role_assignments?effective&user.id=${ids.other}&scope.project.id=${ids.projectA}&include_names=true`, 200);
    assert.equal(effective.role_assignments.length, 1);
    assert.equal(effective.role_assignments[0].user.name, 'idc-other');
    assert.match(effective.role_assignments[0].links.membership, new RegExp(`groups/${group}/users/${ids.other}$`));
    // Without effective, the user has no assignment of their own on project A.
    assert.equal((await call('other', 'GET', `${I}/role_assignments?user.id=${ids.other}&scope.project.id=${ids.projectA}`, 200)).role_assignments.length, 0);
    await call('admin', 'GET', `${I}/role_assignments?effective=true&group.id=${group}`, 400);

    for (const [kind, target] of [['projects', ids.projectA], ['domains', 'default']] as const) {
      await call('member', 'DELETE', `${I}/${kind}/${target}/groups/${group}/roles/${ids.readerRole}`, 403);
      await call('admin', 'DELETE', `${I}/${kind}/${target}/groups/${group}/roles/${ids.readerRole}`, 204);
      await call('admin', 'DELETE', `${I}/${kind}/${target}/groups/${group}/roles/${ids.readerRole}`, 404);
    }
    await call('member', 'DELETE', member, 403);
    await call('admin', 'DELETE', member, 204);
    await call('admin', 'DELETE', member, 404);
    await call('member', 'DELETE', `${I}/groups/${group}`, 403);
    await call('admin', 'DELETE', `${I}/groups/${group}`, 204);
    await call('admin', 'GET', `${I}/groups/${group}`, 404);
    assert.deepEqual(problems, []);
  });

  test('system role assignments and system-scoped tokens', async () => {
    const I = '/identity/v3';
    const grant = `${I}/system/users/${ids.reader}/roles/${ids.readerRole}`;
    await call('member', 'PUT', grant, 403);
    await call('admin', 'GET', grant, 404);
    await call('admin', 'PUT', grant, 204);
    await call('admin', 'HEAD', grant, 204);
    await call('admin', 'GET', grant, 204);
    await call('member', 'HEAD', grant, 403);
    assert.deepEqual((await call('reader', 'GET', `${I}/system/users/${ids.reader}/roles`, 200)).roles.map((r: { id: string }) => r.id), [ids.readerRole]);
    await call('member', 'GET', `${I}/system/users/${ids.reader}/roles`, 403);
    const system = await call('anonymous', 'POST', `${I}/auth/tokens`, 201, { auth: { identity: { methods: ['password'], password: { user: { id: ids.reader, password: 'pw-idc-reader' } } }, scope: { system: { all: true } } } });
    assert.deepEqual(system.token.system, { all: true });
    assert.deepEqual(system.token.roles.map((r: { name: string }) => r.name), ['reader']);
    assert.deepEqual((await call('reader', 'GET', `${I}/auth/system`, 200)).system, [{ all: true }]);
    const listed = await call('admin', 'GET', `${I}/role_assignments?scope.system=all&include_names=1`, 200);
    assert.ok(listed.role_assignments.some((a: { user?: { id: string }; scope: { system?: unknown } }) => a.user?.id === ids.reader && a.scope.system));
    await call('anonymous', 'POST', `${I}/auth/tokens`, 401, { auth: { identity: { methods: ['password'], password: { user: { id: ids.member, password: 'pw-idc-member' } } }, scope: { system: { all: true } } } });
    await call('member', 'DELETE', grant, 403);
    await call('admin', 'DELETE', grant, 204);
    await call('admin', 'DELETE', grant, 404);
    assert.deepEqual(problems, []);
  });

  test('credentials: the owner and the admin, blobs encrypted at rest, no one else sees them', async () => {
    const I = '/identity/v3';
    const blob = JSON.stringify({ access: 'idc-access', secret: 'idc-very-secret' });
    const ec2 = (await call('member', 'POST', `${I}/credentials`, 201, { credential: { type: 'ec2', blob, project_id: ids.projectA } })).credential;
    assert.equal(ec2.user_id, ids.member);
    assert.equal(ec2.blob, blob);
    assert.match(ec2.id, /^[0-9a-f]{64}$/);
    await call('member', 'POST', `${I}/credentials`, 409, { credential: { type: 'ec2', blob, project_id: ids.projectA } });
    await call('member', 'POST', `${I}/credentials`, 403, { credential: { type: 'totp', blob: 'x', user_id: ids.other } });
    const totp = (await call('admin', 'POST', `${I}/credentials`, 201, { credential: { type: 'totp', blob: 'idc-totp-secret', user_id: ids.other } })).credential.id as string;
    assert.deepEqual((await call('member', 'GET', `${I}/credentials`, 200)).credentials.map((c: { id: string }) => c.id), [ec2.id]);
    assert.deepEqual((await call('member', 'GET', `${I}/credentials?user_id=${ids.other}`, 200)).credentials, []);
    assert.equal((await call('admin', 'GET', `${I}/credentials?user_id=${ids.other}&type=totp`, 200)).credentials.length, 1);
    await call('member', 'GET', `${I}/credentials/${totp}`, 403);
    await call('other', 'GET', `${I}/credentials/${ec2.id}`, 403);
    await call('member', 'GET', `${I}/credentials/${ec2.id}`, 200);
    await call('admin', 'GET', `${I}/credentials/${totp}`, 200);
    const changed = await call('other', 'PATCH', `${I}/credentials/${totp}`, 200, { credential: { blob: 'idc-totp-2' } });
    assert.equal(changed.credential.blob, 'idc-totp-2');
    await call('other', 'PATCH', `${I}/credentials/${totp}`, 403, { credential: { user_id: ids.member } });
    await call('member', 'PATCH', `${I}/credentials/${totp}`, 403, { credential: { blob: 'x' } });
    // At rest: neither secret appears in the database files.
    const { readFileSync, readdirSync } = await import('node:fs');
    const files = readdirSync(pumice.dataDir).filter((f) => f.startsWith('pumice.db'));
    for (const file of files) {
      const bytes = readFileSync(join(pumice.dataDir, file)).toString('latin1');
      assert.ok(!bytes.includes('idc-very-secret') && !bytes.includes('idc-totp-2'), `${file} holds a blob in clear`);
    }
    await call('other', 'DELETE', `${I}/credentials/${ec2.id}`, 403);
    await call('member', 'DELETE', `${I}/credentials/${ec2.id}`, 204);
    await call('admin', 'DELETE', `${I}/credentials/${totp}`, 204);
    await call('admin', 'GET', `${I}/credentials/${totp}`, 404);
    assert.deepEqual(problems, []);
  });

  test('application credentials: create with a subset of roles, authenticate, restrictions, invalidation', async () => {
    const I = '/identity/v3';
    const base = `${I}/users/${ids.member}/application_credentials`;
    await call('other', 'POST', base, 403, { application_credential: { name: 'x' } });
    await call('admin', 'POST', base, 403, { application_credential: { name: 'x' } });
    await call('unscoped', 'POST', base, 400, { application_credential: { name: 'x' } });
    const created = (await call('member', 'POST', base, 201, { application_credential: { name: 'idc-ac', description: 'ci', roles: [{ name: 'reader' }] } })).application_credential;
    assert.ok(created.secret.length >= 64);
    assert.deepEqual(created.roles.map((r: { name: string }) => r.name), ['reader']);
    assert.equal(created.project_id, ids.projectA);
    await call('member', 'POST', base, 409, { application_credential: { name: 'idc-ac' } });
    await call('member', 'POST', base, 403, { application_credential: { name: 'idc-ac2', roles: [{ name: 'admin' }] } });
    await call('member', 'POST', base, 400, { application_credential: { name: 'idc-ac3', access_rules: [{ method: 'GET', path: '/v3/volumes', service: 'swift' }] } });
    await call('member', 'POST', base, 400, { application_credential: { name: 'idc-ac4', expires_at: '2001-01-01T00:00:00Z' } });
    const full = (await call('member', 'POST', base, 201, { application_credential: { name: 'idc-full', secret: 'chosen-secret', expires_at: '2099-01-01T00:00:00Z', unrestricted: true } })).application_credential;
    assert.deepEqual(full.roles.map((r: { name: string }) => r.name).sort(), ['member', 'reader']);
    // Secrets are never shown again.
    const listed = await call('member', 'GET', base, 200);
    assert.deepEqual(listed.application_credentials.map((a: { name: string }) => a.name), ['idc-ac', 'idc-full']);
    assert.ok(!JSON.stringify(listed).includes('secret'));
    await call('member', 'GET', `${base}?name=idc-ac`, 200);
    await call('admin', 'GET', base, 200);
    await call('other', 'GET', base, 403);
    await call('member', 'GET', `${base}/${created.id}`, 200);
    await call('other', 'GET', `${base}/${created.id}`, 403);
    await call('admin', 'GET', `${I}/users/${ids.other}/application_credentials/${created.id}`, 404);

    // Authenticate by id, and by name and user; the token is the project's with the credential's roles only.
    const byId = await call('anonymous', 'POST', `${I}/auth/tokens`, 201, { auth: { identity: { methods: ['application_credential'], application_credential: { id: created.id, secret: created.secret } } } });
    assert.equal(byId.token.project.id, ids.projectA);
    assert.deepEqual(byId.token.roles.map((r: { name: string }) => r.name), ['reader']);
    assert.deepEqual(byId.token.methods, ['application_credential']);
    assert.deepEqual(byId.token.application_credential, { id: created.id, name: 'idc-ac', restricted: true });
    await call('anonymous', 'POST', `${I}/auth/tokens`, 201, { auth: { identity: { methods: ['application_credential'], application_credential: { name: 'idc-full', secret: 'chosen-secret', user: { name: 'idc-member', domain: { id: 'default' } } } } } });
    await call('anonymous', 'POST', `${I}/auth/tokens`, 401, { auth: { identity: { methods: ['application_credential'], application_credential: { id: created.id, secret: 'wrong' } } } });
    await call('anonymous', 'POST', `${I}/auth/tokens`, 401, { auth: { identity: { methods: ['application_credential'], application_credential: { id: created.id, secret: created.secret } }, scope: { project: { id: ids.projectB } } } });
    // A restricted credential's token may not make more credentials.
    const acToken = await fetch(`${pumice.url}${I}/auth/tokens`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ auth: { identity: { methods: ['application_credential'], application_credential: { id: created.id, secret: created.secret } } } }),
    }).then((r) => r.headers.get('x-subject-token')!);
    const viaAc = await fetch(`${pumice.url}${base}`, { method: 'POST', headers: { 'X-Auth-Token': acToken, 'Content-Type': 'application/json' }, body: JSON.stringify({ application_credential: { name: 'idc-child' } }) });
    assert.equal(viaAc.status, 403, await viaAc.text());
    // Removing the member role from the user invalidates the unrestricted credential (which holds it) but not the reader-only one.
    await call('admin', 'DELETE', `${I}/projects/${ids.projectA}/users/${ids.member}/roles/${ids.memberRole}`, 204);
    const lost = await call('anonymous', 'POST', `${I}/auth/tokens`, 401, { auth: { identity: { methods: ['application_credential'], application_credential: { id: full.id, secret: 'chosen-secret' } } } });
    assert.match(lost.error.message, /no longer holds role member/);
    assert.equal((await fetch(`${pumice.url}${I}/auth/catalog`, { headers: { 'X-Auth-Token': acToken } })).status, 401, 'the restricted token lost the reader role too: member implied it');
    await call('admin', 'PUT', `${I}/projects/${ids.projectA}/users/${ids.member}/roles/${ids.memberRole}`, 204);
    tokens.member = await login('idc-member', 'pw-idc-member', { project: { id: ids.projectA } });
    // Deleting the credential revokes its tokens.
    const again = await fetch(`${pumice.url}${I}/auth/tokens`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ auth: { identity: { methods: ['application_credential'], application_credential: { id: created.id, secret: created.secret } } } }),
    }).then((r) => r.headers.get('x-subject-token')!);
    await call('other', 'DELETE', `${base}/${created.id}`, 403);
    await call('member', 'DELETE', `${base}/${created.id}`, 204);
    await call('member', 'DELETE', `${base}/${created.id}`, 404);
    assert.equal((await fetch(`${pumice.url}${I}/auth/catalog`, { headers: { 'X-Auth-Token': again } })).status, 401);
    await call('admin', 'DELETE', `${base}/${full.id}`, 204);

    // Deleting the user takes their application credentials with them.
    const doomed = (await call('admin', 'POST', `${I}/users`, 201, { user: { name: 'idc-doomed', password: 'pw-idc-doomed' } })).user.id as string;
    await call('admin', 'PUT', `${I}/projects/${ids.projectA}/users/${doomed}/roles/${ids.readerRole}`, 204);
    const doomedToken = await login('idc-doomed', 'pw-idc-doomed', { project: { id: ids.projectA } });
    const doomedCred = await fetch(`${pumice.url}${I}/users/${doomed}/application_credentials`, {
      method: 'POST', headers: { 'X-Auth-Token': doomedToken, 'Content-Type': 'application/json' }, body: JSON.stringify({ application_credential: { name: 'idc-doomed-ac', secret: 'doomed-secret' } }),
    }).then((r) => r.json() as Promise<{ application_credential: { id: string } }>);
    const doomedAuth = { auth: { identity: { methods: ['application_credential'], application_credential: { id: doomedCred.application_credential.id, secret: 'doomed-secret' } } } };
    await call('anonymous', 'POST', `${I}/auth/tokens`, 201, doomedAuth);
    await call('admin', 'DELETE', `${I}/users/${doomed}`, 204);
    await call('anonymous', 'POST', `${I}/auth/tokens`, 401, doomedAuth);
    assert.deepEqual(problems, []);
  });

  test('access rules and trusts: the owner lists, shows and deletes; strangers get 403 or 404', async () => {
    const I = '/identity/v3';
    const credentials = `${I}/users/${ids.member}/application_credentials`;
    const rule = { service: 'image', method: 'GET', path: '/v2/images' };
    const limited = (await call('member', 'POST', credentials, 201, { application_credential: { name: 'idc-rules', access_rules: [rule] } })).application_credential;
    const ruleId = limited.access_rules[0].id as string;
    const rules = `${I}/users/${ids.member}/access_rules`;
    assert.deepEqual((await call('member', 'GET', rules, 200)).access_rules.map((r: { id: string }) => r.id), [ruleId]);
    await call('admin', 'GET', rules, 200);
    await call('other', 'GET', rules, 403);
    assert.equal((await call('member', 'GET', `${rules}/${ruleId}`, 200)).access_rule.path, '/v2/images');
    await call('member', 'GET', `${rules}/not-a-rule`, 404);
    await call('member', 'DELETE', `${rules}/${ruleId}`, 403);
    await call('member', 'DELETE', `${credentials}/${limited.id}`, 204);
    await call('other', 'DELETE', `${rules}/${ruleId}`, 403);
    await call('member', 'DELETE', `${rules}/${ruleId}`, 204);
    await call('member', 'GET', `${rules}/${ruleId}`, 404);

    // The member trusts the reader with their reader role on project A.
    const trusts = `${I}/OS-TRUST/trusts`;
    const body = { trust: { trustor_user_id: ids.member, trustee_user_id: ids.reader, project_id: ids.projectA, roles: [{ name: 'reader' }], impersonation: false } };
    await call('other', 'POST', trusts, 403, body);
    await call('member', 'POST', trusts, 404, { trust: { ...body.trust, roles: [{ name: 'no-such-role' }] } });
    const trust = (await call('member', 'POST', trusts, 201, body)).trust;
    assert.equal(trust.trustee_user_id, ids.reader);
    assert.deepEqual((await call('member', 'GET', `${trusts}?trustor_user_id=${ids.member}`, 200)).trusts.map((t: { id: string }) => t.id), [trust.id]);
    await call('reader', 'GET', `${trusts}?trustee_user_id=${ids.reader}`, 200);
    await call('admin', 'GET', trusts, 200);
    await call('reader', 'GET', `${trusts}/${trust.id}`, 200);
    await call('other', 'GET', `${trusts}/${trust.id}`, 403);
    const delegated = (await call('reader', 'GET', `${trusts}/${trust.id}/roles`, 200)).roles;
    assert.deepEqual(delegated.map((r: { id: string }) => r.id), [ids.readerRole]);
    await call('other', 'GET', `${trusts}/${trust.id}/roles`, 403);
    assert.equal((await call('member', 'GET', `${trusts}/${trust.id}/roles/${ids.readerRole}`, 200)).role.name, 'reader');
    await call('reader', 'HEAD', `${trusts}/${trust.id}/roles/${ids.readerRole}`, 200);
    await call('member', 'GET', `${trusts}/${trust.id}/roles/${ids.memberRole}`, 404);
    await call('member', 'HEAD', `${trusts}/${trust.id}/roles/${ids.memberRole}`, 404);
    await call('reader', 'DELETE', `${trusts}/${trust.id}`, 403);
    await call('member', 'DELETE', `${trusts}/${trust.id}`, 204);
    await call('member', 'GET', `${trusts}/${trust.id}`, 404);
    assert.deepEqual(problems, []);
  });

  test('catalog: regions, services and endpoints', async () => {
    const I = '/identity/v3';
    for (const as of ['member', 'reader', 'other', 'admin', 'unscoped'] as const) {
      await call(as, 'GET', `${I}/regions`, 200);
      await call(as, 'GET', `${I}/regions/RegionOne`, 200);
    }
    for (const as of ['member', 'reader', 'other', 'admin'] as const) {
      await call(as, 'GET', `${I}/services`, 200);
      assert.deepEqual((await call(as, 'GET', `${I}/services?type=identity`, 200)).services.map((x: { name: string }) => x.name), ['keystone']);
      assert.deepEqual((await call(as, 'GET', `${I}/services?name=glance`, 200)).services.map((x: { type: string }) => x.type), ['image']);
      await call(as, 'GET', `${I}/endpoints`, 200);
      await call(as, 'GET', `${I}/endpoints?interface=public&region_id=RegionOne`, 200);
    }
    for (const path of ['services', 'endpoints']) await call('unscoped', 'GET', `${I}/${path}`, 403);

    await call('member', 'POST', `${I}/regions`, 403, { region: { id: 'idc-region' } });
    await call('admin', 'POST', `${I}/regions`, 201, { region: { id: 'idc-region', description: 'contract', parent_region_id: 'RegionOne' } });
    await call('admin', 'POST', `${I}/regions`, 409, { region: { id: 'idc-region' } });
    await call('member', 'PATCH', `${I}/regions/idc-region`, 403, { region: { description: 'x' } });
    assert.equal((await call('admin', 'PATCH', `${I}/regions/idc-region`, 200, { region: { description: 'changed', parent_region_id: null } })).region.parent_region_id, null);
    await call('admin', 'PATCH', `${I}/regions/idc-region`, 200, { region: { parent_region_id: 'RegionOne' } });
    await call('admin', 'PATCH', `${I}/regions/RegionOne`, 400, { region: { parent_region_id: 'idc-region' } });
    await call('admin', 'PATCH', `${I}/regions/idc-region`, 404, { region: { parent_region_id: 'no-such-region' } });
    const service = (await call('admin', 'POST', `${I}/services`, 201, { service: { type: 'idc', name: 'idc-svc', description: 'contract' } })).service.id as string;
    await call('member', 'POST', `${I}/services`, 403, { service: { type: 'x' } });
    for (const as of ['member', 'admin'] as const) await call(as, 'GET', `${I}/services/${service}`, 200);
    await call('admin', 'PATCH', `${I}/services/${service}`, 200, { service: { enabled: false } });
    await call('reader', 'PATCH', `${I}/services/${service}`, 403, { service: { enabled: true } });
    const endpoint = (await call('admin', 'POST', `${I}/endpoints`, 201, { endpoint: { interface: 'public', service_id: service, url: 'http://example.invalid/idc', region_id: 'idc-region' } })).endpoint.id as string;
    await call('member', 'POST', `${I}/endpoints`, 403, { endpoint: { interface: 'public', service_id: service, url: 'http://x' } });
    for (const as of ['reader', 'admin'] as const) await call(as, 'GET', `${I}/endpoints/${endpoint}`, 200);
    await call('admin', 'PATCH', `${I}/endpoints/${endpoint}`, 200, { endpoint: { interface: 'internal', region: 'RegionOne' } });
    await call('other', 'PATCH', `${I}/endpoints/${endpoint}`, 403, { endpoint: { url: 'http://y' } });
    await call('member', 'DELETE', `${I}/endpoints/${endpoint}`, 403);
    await call('admin', 'DELETE', `${I}/endpoints/${endpoint}`, 204);
    await call('admin', 'GET', `${I}/endpoints/${endpoint}`, 404);
    await call('member', 'DELETE', `${I}/services/${service}`, 403);
    await call('admin', 'DELETE', `${I}/services/${service}`, 204);
    await call('member', 'DELETE', `${I}/regions/idc-region`, 403);
    await call('admin', 'DELETE', `${I}/regions/idc-region`, 204);
    await call('admin', 'GET', `${I}/regions/idc-region`, 404);
    assert.deepEqual(problems, []);
  });

  test("the scenario's Identity set-up with the openstack CLI (service user, services, endpoints with %(tenant_id)s)", async () => {
    const env = pumice.adminEnv;
    await openstack(env, ['user', 'create', '--project', 'service', '--password', 'cinder-pw', 'cinder']);
    await openstack(env, ['role', 'add', '--project', 'service', '--user', 'cinder', 'admin']);
    await openstack(env, ['service', 'create', '--name', 'cinder', '--description', 'OpenStack Block Storage', 'volume']);
    await openstack(env, ['service', 'create', '--name', 'cinderv2', 'volumev2']);
    for (const iface of ['public', 'internal', 'admin']) {
      await openstack(env, ['endpoint', 'create', '--region', 'RegionOne', 'volume', iface, 'http://controller:8776/v1/%(tenant_id)s']);
    }
    const endpoints = await openstackJson<{ URL: string; Interface: string }[]>(env, ['endpoint', 'list', '--service', 'volume']);
    assert.deepEqual(endpoints.map((e) => e.Interface).sort(), ['admin', 'internal', 'public']);
    const assignments = await openstackJson<{ Role: string; User: string; Project: string }[]>(env, ['role', 'assignment', 'list', '--user', 'cinder', '--project', 'service', '--names']);
    assert.deepEqual(assignments.map((a) => a.Role), ['admin']);
    const token = await openstackJson(cliEnvFor(env, 'cinder', 'cinder-pw', 'service'), ['token', 'issue']);
    assert.ok(token['project_id']);
    await openstack(env, ['user', 'show', 'cinder']);
    await openstack(env, ['project', 'list', '--user', 'cinder']);
    // The catalog of the service user renders the template with its project.
    const catalog = await openstackJson<{ Type: string; Endpoints: unknown }[]>(cliEnvFor(env, 'cinder', 'cinder-pw', 'service'), ['catalog', 'list']);
    const volume = catalog.find((c) => c.Type === 'volume');
    assert.ok(volume && JSON.stringify(volume.Endpoints).includes(`/v1/${token['project_id']}`), JSON.stringify(volume));
  });

  test('every route that needs a token answers 401 without one, and with a bad one', async () => {
    for (const spec of specs.filter((s) => !s.options?.public)) {
      const path = `/identity${spec.path.replace(/:[a-z_]+/g, 'x')}`;
      const body = ['POST', 'PUT', 'PATCH'].includes(spec.method) ? {} : undefined;
      await call('anonymous', spec.method, path, 401, body);
      const res = await fetch(`${pumice.url}${path}`, { method: spec.method, headers: { 'X-Auth-Token': 'not-a-token' } });
      if (res.status !== 401) problems.push(`${spec.method} ${path} with a bad token -> ${res.status}`);
    }
    assert.deepEqual(problems, []);
  });

  test('every declared route was exercised, and the server found no contract violation', () => {
    const missing = specs.map((s) => `${s.method} ${s.path}`).filter((key) => !covered.has(key));
    assert.deepEqual(missing, []);
    assert.doesNotMatch(pumice.output(), /response validation failed|internal error/);
  });
});

describe('Identity policy file overrides', () => {
  let pumice: PumiceProcess;
  let work = '';

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'identity-policy-'));
    const policyPath = join(work, 'policy.yaml');
    writeFileSync(policyPath, [
      '# Readers may list users; only admins may list roles.',
      '"identity:list_users": "rule:admin_required or role:reader"',
      '"identity:list_roles": "rule:admin_required"',
    ].join('\n'));
    pumice = await startPumice({ config: `[oslo_policy]\npolicy_file = ${policyPath}\n` });
  });
  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  test('overridden Identity rules apply; the others keep their defaults', async () => {
    const admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const roles = await admin.request('GET', '/identity/v3/roles?name=reader');
    assert.equal(roles.status, 200, roles.text);
    const project = (await admin.request('POST', '/identity/v3/projects', { project: { name: 'ipf' } })).body.project.id as string;
    const user = (await admin.request('POST', '/identity/v3/users', { user: { name: 'ipf-reader', password: 'pw' } })).body.user.id as string;
    assert.equal((await admin.request('PUT', `/identity/v3/projects/${project}/users/${user}/roles/${roles.body.roles[0].id}`)).status, 204);
    const reader = await ApiClient.login(pumice.url, 'ipf-reader', 'pw', 'ipf');
    const users = await reader.request('GET', '/identity/v3/users');
    assert.equal(users.status, 200, users.text);
    const refused = await reader.request('GET', '/identity/v3/roles');
    assert.equal(refused.status, 403, refused.text);
    assert.match(refused.body.error.message, /identity:list_roles/);
    // Defaults still apply: a reader may not create users.
    assert.equal((await reader.request('POST', '/identity/v3/users', { user: { name: 'x' } })).status, 403);
    assert.equal((await reader.request('GET', '/identity/v3/domains')).status, 200);
  });
});
