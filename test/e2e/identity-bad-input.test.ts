/**
 * Bad input against every Identity route added for issues 11 and 18 (domain
 * update/delete, region update, credentials, application credentials and
 * their auth method, groups and membership, group and system grants,
 * role_assignments' new filters), modelled on bad-input.test.ts: each case
 * asserts the expected 4xx (never a 5xx), a Keystone fault
 * `{"error": {"code", "title", "message"}}` whose code is the status and
 * whose message names the cause without a stack trace or source path, and
 * that the request changed nothing (a fingerprint of every table but tokens
 * and the heartbeat tables is compared after each case).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { ApiClient, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

type Caller = 'admin' | 'member' | 'other' | 'unscoped' | 'none';

interface Case {
  name: string;
  method: string;
  path: string;
  as?: Caller;
  body?: unknown;
  raw?: string;
  expect: number;
  message?: RegExp;
}

const UNKNOWN = 'ffffffffffffffffffffffffffffffff';
const I = '/identity/v3';

describe('Identity bad input (issues 11 and 18 routes)', () => {
  let pumice: PumiceProcess;
  let db: Database.Database | null = null;
  const tokens = {} as Record<Exclude<Caller, 'none'>, string>;
  const F = {} as Record<'p1' | 'p2' | 'memberA' | 'other' | 'group' | 'credential' | 'otherCredential' | 'appCred' | 'domainEnabled' | 'domainHolding' | 'memberRole' | 'readerRole' | 'adminRole', string>;

  async function send(c: Case): Promise<{ status: number; headers: Headers; text: string }> {
    const headers: Record<string, string> = {};
    if (c.as && c.as !== 'none') headers['X-Auth-Token'] = tokens[c.as];
    let body: string | undefined;
    if (c.raw !== undefined) body = c.raw;
    else if (c.body !== undefined) body = JSON.stringify(c.body);
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(`${pumice.url}${c.path}`, { method: c.method, headers, body });
    return { status: res.status, headers: res.headers, text: await res.text() };
  }

  function fingerprint(): string {
    if (!db) return '';
    // timeseries_samples: the dashboard's plots, sampled in the background every few seconds, not a case's doing.
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT IN ('tokens', 'services', 'compute_nodes', 'api_listeners', 'timeseries_samples') ORDER BY name").all() as { name: string }[];
    const parts: Record<string, unknown> = {};
    for (const { name } of tables) {
      const rows = db.prepare(`SELECT * FROM "${name}" ORDER BY rowid`).all() as Record<string, unknown>[];
      // A failed login counts against the user (lockout columns): not a change of state the case made.
      parts[name] = name === 'users' ? rows.map(({ failed_auth_count: _c, failed_auth_at: _a, ...rest }) => rest) : rows;
    }
    return JSON.stringify(parts);
  }

  function faultProblems(c: Case, r: { status: number; headers: Headers; text: string }): string[] {
    const problems: string[] = [];
    if (r.status !== c.expect) problems.push(`status ${r.status}, expected ${c.expect}`);
    if (r.status >= 500 || r.status < 400) problems.push(`status ${r.status} is not a 4xx`);
    if (c.method === 'HEAD') {
      if (r.text !== '') problems.push('HEAD reply has a body');
      return problems;
    }
    if (/\n\s+at\s|\.(ts|js|mjs|cjs):\d+|node_modules|\/work\/|file:\/\//.test(r.text)) problems.push('reply leaks a stack trace or source path');
    let body: any;
    try {
      body = JSON.parse(r.text);
    } catch {
      return [...problems, `body is not JSON: ${r.text.slice(0, 200)}`];
    }
    if (Object.keys(body ?? {}).join() !== 'error') problems.push(`not a Keystone fault: ${r.text.slice(0, 200)}`);
    const e = body?.error;
    if (e?.code !== r.status) problems.push(`error.code ${e?.code} != status ${r.status}`);
    if (typeof e?.title !== 'string' || !e.title) problems.push('error.title missing');
    if (typeof e?.message !== 'string' || !e.message.trim()) problems.push('error.message empty');
    else if (c.message && !c.message.test(e.message)) problems.push(`message ${JSON.stringify(e.message)} does not match ${c.message}`);
    if (r.status === 401 && !r.headers.get('www-authenticate')) problems.push('401 without WWW-Authenticate');
    return problems;
  }

  before(async () => {
    pumice = await startPumice();
    const admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    tokens.admin = admin.token;
    const ok = (r: { status: number; text: string }, status: number) => assert.equal(r.status, status, r.text);
    const roleId = async (name: string) => (await admin.request('GET', `${I}/roles?name=${name}`)).body.roles[0].id as string;
    F.memberRole = await roleId('member');
    F.readerRole = await roleId('reader');
    F.adminRole = await roleId('admin');
    const project = async (name: string, domainId = 'default') => {
      const r = await admin.request('POST', `${I}/projects`, { project: { name, domain_id: domainId } });
      ok(r, 201);
      return r.body.project.id as string;
    };
    const user = async (name: string, projectId: string) => {
      const r = await admin.request('POST', `${I}/users`, { user: { name, password: `pw-${name}` } });
      ok(r, 201);
      ok(await admin.request('PUT', `${I}/projects/${projectId}/users/${r.body.user.id}/roles/${F.memberRole}`), 204);
      return r.body.user.id as string;
    };
    F.p1 = await project('ibi-p1');
    F.p2 = await project('ibi-p2');
    F.memberA = await user('ibi-member', F.p1);
    F.other = await user('ibi-other', F.p2);
    const login = async (name: string, scope?: unknown) => {
      const res = await fetch(`${pumice.url}${I}/auth/tokens`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name, domain: { id: 'default' }, password: `pw-${name}` } } }, ...(scope ? { scope } : {}) } }),
      });
      assert.equal(res.status, 201, await res.text());
      return res.headers.get('x-subject-token')!;
    };
    tokens.member = await login('ibi-member', { project: { id: F.p1 } });
    tokens.other = await login('ibi-other', { project: { id: F.p2 } });
    tokens.unscoped = await login('ibi-member');
    const group = await admin.request('POST', `${I}/groups`, { group: { name: 'ibi-group' } });
    ok(group, 201);
    F.group = group.body.group.id;
    const memberClient = { request: (m: string, p: string, b?: unknown) => fetch(`${pumice.url}${p}`, { method: m, headers: { 'X-Auth-Token': tokens.member, 'Content-Type': 'application/json' }, body: b === undefined ? undefined : JSON.stringify(b) }).then(async (r) => ({ status: r.status, text: await r.text() })) };
    const cred = await memberClient.request('POST', `${I}/credentials`, { credential: { type: 'totp', blob: 'ibi-blob' } });
    ok(cred, 201);
    F.credential = JSON.parse(cred.text).credential.id;
    const otherCred = await admin.request('POST', `${I}/credentials`, { credential: { type: 'totp', blob: 'ibi-other-blob', user_id: F.other } });
    ok(otherCred, 201);
    F.otherCredential = otherCred.body.credential.id;
    const appCred = await memberClient.request('POST', `${I}/users/${F.memberA}/application_credentials`, { application_credential: { name: 'ibi-ac', secret: 'ibi-secret' } });
    ok(appCred, 201);
    F.appCred = JSON.parse(appCred.text).application_credential.id;
    const domain = await admin.request('POST', `${I}/domains`, { domain: { name: 'ibi-enabled' } });
    ok(domain, 201);
    F.domainEnabled = domain.body.domain.id;
    const holding = await admin.request('POST', `${I}/domains`, { domain: { name: 'ibi-holding', enabled: false } });
    ok(holding, 201);
    F.domainHolding = holding.body.domain.id;
    await project('ibi-in-holding', F.domainHolding);
    if (!pumice.database.startsWith('postgres')) db = new Database(pumice.database, { readonly: true, fileMustExist: true });
  });

  after(async () => {
    db?.close();
    await pumice?.stop();
    pumice?.cleanup();
  });

  function cases(): Case[] {
    const acAuth = (application_credential: unknown, scope?: unknown) => ({ auth: { identity: { methods: ['application_credential'], application_credential }, ...(scope ? { scope } : {}) } });
    const pwAuth = (name: string, scope: unknown) => ({ auth: { identity: { methods: ['password'], password: { user: { name, domain: { id: 'default' }, password: `pw-${name}` } } }, scope } });
    const appCreds = `${I}/users/${F.memberA}/application_credentials`;
    const c: Case[] = [
      // ---- domains ----
      { name: 'domain update: no body', method: 'PATCH', path: `${I}/domains/${F.domainEnabled}`, as: 'admin', expect: 400 },
      { name: 'domain update: not JSON', method: 'PATCH', path: `${I}/domains/${F.domainEnabled}`, as: 'admin', raw: '{"domain":', expect: 400 },
      { name: 'domain update: unknown key', method: 'PATCH', path: `${I}/domains/${F.domainEnabled}`, as: 'admin', body: { domain: { bogus: 1 } }, expect: 400, message: /bogus/ },
      { name: 'domain update: empty name', method: 'PATCH', path: `${I}/domains/${F.domainEnabled}`, as: 'admin', body: { domain: { name: '' } }, expect: 400 },
      { name: 'domain update: enabled not boolean', method: 'PATCH', path: `${I}/domains/${F.domainEnabled}`, as: 'admin', body: { domain: { enabled: 'no' } }, expect: 400 },
      { name: 'domain update: name taken', method: 'PATCH', path: `${I}/domains/${F.domainEnabled}`, as: 'admin', body: { domain: { name: 'Default' } }, expect: 409 },
      { name: 'domain update: member', method: 'PATCH', path: `${I}/domains/${F.domainEnabled}`, as: 'member', body: { domain: { description: 'x' } }, expect: 403 },
      { name: 'domain update: unknown', method: 'PATCH', path: `${I}/domains/${UNKNOWN}`, as: 'admin', body: { domain: { description: 'x' } }, expect: 404 },
      { name: 'domain update: disable the default domain', method: 'PATCH', path: `${I}/domains/default`, as: 'admin', body: { domain: { enabled: false } }, expect: 403, message: /default/ },
      { name: 'domain delete: enabled', method: 'DELETE', path: `${I}/domains/${F.domainEnabled}`, as: 'admin', expect: 403, message: /disable/ },
      { name: 'domain delete: still holds a project', method: 'DELETE', path: `${I}/domains/${F.domainHolding}`, as: 'admin', expect: 409, message: /1 projects/ },
      { name: 'domain delete: default', method: 'DELETE', path: `${I}/domains/default`, as: 'admin', expect: 403 },
      { name: 'domain delete: member', method: 'DELETE', path: `${I}/domains/${F.domainEnabled}`, as: 'member', expect: 403 },
      { name: 'domain delete: unknown', method: 'DELETE', path: `${I}/domains/${UNKNOWN}`, as: 'admin', expect: 404 },
      // ---- regions ----
      { name: 'region update: own parent', method: 'PATCH', path: `${I}/regions/RegionOne`, as: 'admin', body: { region: { parent_region_id: 'RegionOne' } }, expect: 400, message: /cycle/ },
      { name: 'region update: unknown parent', method: 'PATCH', path: `${I}/regions/RegionOne`, as: 'admin', body: { region: { parent_region_id: 'nowhere' } }, expect: 404, message: /nowhere/ },
      { name: 'region update: id in body', method: 'PATCH', path: `${I}/regions/RegionOne`, as: 'admin', body: { region: { id: 'other' } }, expect: 400 },
      { name: 'region update: description not a string', method: 'PATCH', path: `${I}/regions/RegionOne`, as: 'admin', body: { region: { description: 5 } }, expect: 400 },
      { name: 'region update: member', method: 'PATCH', path: `${I}/regions/RegionOne`, as: 'member', body: { region: { description: 'x' } }, expect: 403 },
      { name: 'region update: unknown', method: 'PATCH', path: `${I}/regions/nowhere`, as: 'admin', body: { region: { description: 'x' } }, expect: 404 },
      // ---- credentials ----
      { name: 'credential create: no type', method: 'POST', path: `${I}/credentials`, as: 'member', body: { credential: { blob: 'x' } }, expect: 400, message: /type/ },
      { name: 'credential create: blob not a string', method: 'POST', path: `${I}/credentials`, as: 'member', body: { credential: { type: 'totp', blob: { a: 1 } } }, expect: 400 },
      { name: 'credential create: blob too long', method: 'POST', path: `${I}/credentials`, as: 'member', body: { credential: { type: 'totp', blob: 'x'.repeat(65536) } }, expect: 400 },
      { name: 'credential create: ec2 without access', method: 'POST', path: `${I}/credentials`, as: 'member', body: { credential: { type: 'ec2', blob: '{"secret": "s"}', project_id: F.p1 } }, expect: 400, message: /access/ },
      { name: 'credential create: ec2 blob not JSON', method: 'POST', path: `${I}/credentials`, as: 'member', body: { credential: { type: 'ec2', blob: 'plain', project_id: F.p1 } }, expect: 400, message: /access/ },
      { name: 'credential create: ec2 without project', method: 'POST', path: `${I}/credentials`, as: 'member', body: { credential: { type: 'ec2', blob: '{"access": "a"}' } }, expect: 400, message: /project_id/ },
      { name: 'credential create: for another user as member', method: 'POST', path: `${I}/credentials`, as: 'member', body: { credential: { type: 'totp', blob: 'x', user_id: F.other } }, expect: 403 },
      { name: 'credential create: unknown user', method: 'POST', path: `${I}/credentials`, as: 'admin', body: { credential: { type: 'totp', blob: 'x', user_id: UNKNOWN } }, expect: 404 },
      { name: 'credential create: unknown project', method: 'POST', path: `${I}/credentials`, as: 'member', body: { credential: { type: 'totp', blob: 'x', project_id: UNKNOWN } }, expect: 404 },
      { name: 'credential create: no token', method: 'POST', path: `${I}/credentials`, as: 'none', body: { credential: { type: 'totp', blob: 'x' } }, expect: 401 },
      { name: 'credential show: unknown', method: 'GET', path: `${I}/credentials/${UNKNOWN}`, as: 'admin', expect: 404 },
      { name: "credential show: another user's", method: 'GET', path: `${I}/credentials/${F.otherCredential}`, as: 'member', expect: 403 },
      { name: 'credential update: unknown key', method: 'PATCH', path: `${I}/credentials/${F.credential}`, as: 'member', body: { credential: { secret: 'x' } }, expect: 400 },
      { name: 'credential update: give it away as member', method: 'PATCH', path: `${I}/credentials/${F.credential}`, as: 'member', body: { credential: { user_id: F.other } }, expect: 403 },
      { name: "credential update: another user's", method: 'PATCH', path: `${I}/credentials/${F.otherCredential}`, as: 'member', body: { credential: { blob: 'x' } }, expect: 403 },
      { name: 'credential update: unknown', method: 'PATCH', path: `${I}/credentials/${UNKNOWN}`, as: 'admin', body: { credential: { blob: 'x' } }, expect: 404 },
      { name: 'credential update: ec2 without access', method: 'PATCH', path: `${I}/credentials/${F.credential}`, as: 'member', body: { credential: { type: 'ec2', project_id: F.p1 } }, expect: 400 },
      { name: "credential delete: another user's", method: 'DELETE', path: `${I}/credentials/${F.otherCredential}`, as: 'member', expect: 403 },
      { name: 'credential delete: unknown', method: 'DELETE', path: `${I}/credentials/${UNKNOWN}`, as: 'admin', expect: 404 },
      // ---- application credentials ----
      { name: 'app cred create: no body', method: 'POST', path: appCreds, as: 'member', expect: 400 },
      { name: 'app cred create: no name', method: 'POST', path: appCreds, as: 'member', body: { application_credential: {} }, expect: 400, message: /name/ },
      { name: 'app cred create: empty name', method: 'POST', path: appCreds, as: 'member', body: { application_credential: { name: '' } }, expect: 400 },
      { name: 'app cred create: roles not a list', method: 'POST', path: appCreds, as: 'member', body: { application_credential: { name: 'x', roles: 'member' } }, expect: 400 },
      { name: 'app cred create: role without id or name', method: 'POST', path: appCreds, as: 'member', body: { application_credential: { name: 'x', roles: [{}] } }, expect: 400, message: /id or a name/ },
      { name: 'app cred create: a role the token lacks', method: 'POST', path: appCreds, as: 'member', body: { application_credential: { name: 'x', roles: [{ id: F.adminRole }] } }, expect: 403, message: /subset/ },
      { name: 'app cred create: unknown role', method: 'POST', path: appCreds, as: 'member', body: { application_credential: { name: 'x', roles: [{ name: 'nope' }] } }, expect: 403 },
      { name: 'app cred create: access rule of an unknown service', method: 'POST', path: appCreds, as: 'member', body: { application_credential: { name: 'x', access_rules: [{ method: 'GET', path: '/v3/x', service: 'swift' }] } }, expect: 400, message: /service type/ },
      { name: 'app cred create: access rule with an unknown method', method: 'POST', path: appCreds, as: 'member', body: { application_credential: { name: 'x', access_rules: [{ method: 'FETCH', path: '/v3/x', service: 'volumev3' }] } }, expect: 400, message: /method/ },
      { name: 'app cred create: access rule with a relative path', method: 'POST', path: appCreds, as: 'member', body: { application_credential: { name: 'x', access_rules: [{ method: 'GET', path: 'v3/x', service: 'volumev3' }] } }, expect: 400, message: /path/ },
      { name: 'app cred create: access rule without a path', method: 'POST', path: appCreds, as: 'member', body: { application_credential: { name: 'x', access_rules: [{ method: 'GET', service: 'image' }] } }, expect: 400, message: /path/ },
      { name: 'app cred create: access rule with an unknown key', method: 'POST', path: appCreds, as: 'member', body: { application_credential: { name: 'x', access_rules: [{ method: 'GET', path: '/v2/images', service: 'image', verb: 'x' }] } }, expect: 400 },
      { name: 'app cred create: expires_at not a time', method: 'POST', path: appCreds, as: 'member', body: { application_credential: { name: 'x', expires_at: 'tomorrow' } }, expect: 400, message: /ISO 8601/ },
      { name: 'app cred create: expires_at in the past', method: 'POST', path: appCreds, as: 'member', body: { application_credential: { name: 'x', expires_at: '2000-01-01T00:00:00Z' } }, expect: 400, message: /past/ },
      { name: 'app cred create: empty secret', method: 'POST', path: appCreds, as: 'member', body: { application_credential: { name: 'x', secret: '' } }, expect: 400 },
      { name: 'app cred create: unrestricted not boolean', method: 'POST', path: appCreds, as: 'member', body: { application_credential: { name: 'x', unrestricted: 'yes' } }, expect: 400 },
      { name: 'app cred create: name taken', method: 'POST', path: appCreds, as: 'member', body: { application_credential: { name: 'ibi-ac' } }, expect: 409 },
      { name: 'app cred create: unscoped token', method: 'POST', path: appCreds, as: 'unscoped', body: { application_credential: { name: 'x' } }, expect: 400, message: /project-scoped/ },
      { name: "app cred create: another user's path", method: 'POST', path: appCreds, as: 'other', body: { application_credential: { name: 'x' } }, expect: 403 },
      { name: 'app cred create: admin for another user', method: 'POST', path: appCreds, as: 'admin', body: { application_credential: { name: 'x' } }, expect: 403 },
      { name: 'app cred list: unknown user', method: 'GET', path: `${I}/users/${UNKNOWN}/application_credentials`, as: 'admin', expect: 404 },
      { name: "app cred list: another user's", method: 'GET', path: appCreds, as: 'other', expect: 403 },
      { name: 'app cred show: unknown', method: 'GET', path: `${appCreds}/${UNKNOWN}`, as: 'member', expect: 404 },
      { name: 'app cred show: through another user', method: 'GET', path: `${I}/users/${F.other}/application_credentials/${F.appCred}`, as: 'admin', expect: 404 },
      { name: 'app cred delete: unknown', method: 'DELETE', path: `${appCreds}/${UNKNOWN}`, as: 'member', expect: 404 },
      { name: "app cred delete: another user's", method: 'DELETE', path: `${appCreds}/${F.appCred}`, as: 'other', expect: 403 },
      // ---- application credential and system authentication ----
      { name: 'auth app cred: section missing', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: { auth: { identity: { methods: ['application_credential'] } } }, expect: 400, message: /application_credential/ },
      { name: 'auth app cred: no secret', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: acAuth({ id: F.appCred }), expect: 400, message: /secret/ },
      { name: 'auth app cred: neither id nor name', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: acAuth({ secret: 'ibi-secret' }), expect: 400, message: /id, or a name/ },
      { name: 'auth app cred: name without user', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: acAuth({ name: 'ibi-ac', secret: 'ibi-secret' }), expect: 400 },
      { name: 'auth app cred: user without id or name', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: acAuth({ name: 'ibi-ac', secret: 'ibi-secret', user: {} }), expect: 400 },
      { name: 'auth app cred: unknown user', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: acAuth({ name: 'ibi-ac', secret: 'ibi-secret', user: { id: UNKNOWN } }), expect: 401 },
      { name: 'auth app cred: wrong secret', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: acAuth({ id: F.appCred, secret: 'wrong' }), expect: 401 },
      { name: 'auth app cred: unknown id', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: acAuth({ id: UNKNOWN, secret: 'ibi-secret' }), expect: 401 },
      { name: 'auth app cred: another project', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: acAuth({ id: F.appCred, secret: 'ibi-secret' }, { project: { id: F.p2 } }), expect: 401, message: /its project/ },
      { name: 'auth app cred: unknown key', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: acAuth({ id: F.appCred, secret: 'ibi-secret', extra: 1 }), expect: 400 },
      { name: 'auth system: no role on the system', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pwAuth('ibi-member', { system: { all: true } }), expect: 401, message: /role add --system/ },
      { name: 'auth system: all false', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pwAuth('ibi-member', { system: { all: false } }), expect: 400 },
      { name: 'auth system: not an object', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pwAuth('ibi-member', { system: 'all' }), expect: 400 },
      // ---- groups ----
      { name: 'group create: no name', method: 'POST', path: `${I}/groups`, as: 'admin', body: { group: {} }, expect: 400, message: /name/ },
      { name: 'group create: unknown key', method: 'POST', path: `${I}/groups`, as: 'admin', body: { group: { name: 'x', members: [] } }, expect: 400 },
      { name: 'group create: name taken', method: 'POST', path: `${I}/groups`, as: 'admin', body: { group: { name: 'ibi-group' } }, expect: 409 },
      { name: 'group create: unknown domain', method: 'POST', path: `${I}/groups`, as: 'admin', body: { group: { name: 'x', domain_id: UNKNOWN } }, expect: 404 },
      { name: 'group create: member', method: 'POST', path: `${I}/groups`, as: 'member', body: { group: { name: 'x' } }, expect: 403 },
      { name: 'group list: member', method: 'GET', path: `${I}/groups`, as: 'member', expect: 403 },
      { name: 'group show: unknown', method: 'GET', path: `${I}/groups/${UNKNOWN}`, as: 'admin', expect: 404 },
      { name: 'group update: domain_id', method: 'PATCH', path: `${I}/groups/${F.group}`, as: 'admin', body: { group: { domain_id: 'default' } }, expect: 400 },
      { name: 'group update: unknown', method: 'PATCH', path: `${I}/groups/${UNKNOWN}`, as: 'admin', body: { group: { name: 'x' } }, expect: 404 },
      { name: 'group update: member', method: 'PATCH', path: `${I}/groups/${F.group}`, as: 'member', body: { group: { name: 'x' } }, expect: 403 },
      { name: 'group delete: unknown', method: 'DELETE', path: `${I}/groups/${UNKNOWN}`, as: 'admin', expect: 404 },
      { name: 'group delete: member', method: 'DELETE', path: `${I}/groups/${F.group}`, as: 'member', expect: 403 },
      { name: 'group users: unknown group', method: 'GET', path: `${I}/groups/${UNKNOWN}/users`, as: 'admin', expect: 404 },
      { name: 'group add user: unknown user', method: 'PUT', path: `${I}/groups/${F.group}/users/${UNKNOWN}`, as: 'admin', expect: 404 },
      { name: 'group add user: unknown group', method: 'PUT', path: `${I}/groups/${UNKNOWN}/users/${F.memberA}`, as: 'admin', expect: 404 },
      { name: 'group add user: member', method: 'PUT', path: `${I}/groups/${F.group}/users/${F.memberA}`, as: 'member', expect: 403 },
      { name: 'group check user: not a member (HEAD)', method: 'HEAD', path: `${I}/groups/${F.group}/users/${F.memberA}`, as: 'admin', expect: 404 },
      { name: 'group check user: not a member (GET)', method: 'GET', path: `${I}/groups/${F.group}/users/${F.memberA}`, as: 'admin', expect: 404 },
      { name: 'group remove user: not a member', method: 'DELETE', path: `${I}/groups/${F.group}/users/${F.memberA}`, as: 'admin', expect: 404, message: /not a member/ },
      { name: "user's groups: unknown user", method: 'GET', path: `${I}/users/${UNKNOWN}/groups`, as: 'admin', expect: 404 },
      { name: "user's groups: another user's", method: 'GET', path: `${I}/users/${F.other}/groups`, as: 'member', expect: 403 },
    ];
    // ---- grants to groups on projects and domains ----
    for (const [kind, target] of [['projects', F.p1], ['domains', 'default']] as const) {
      const base = `${I}/${kind}/${target}/groups/${F.group}/roles`;
      c.push(
        { name: `group grant on ${kind}: unknown role`, method: 'PUT', path: `${base}/${UNKNOWN}`, as: 'admin', expect: 404 },
        { name: `group grant on ${kind}: unknown group`, method: 'PUT', path: `${I}/${kind}/${target}/groups/${UNKNOWN}/roles/${F.readerRole}`, as: 'admin', expect: 404 },
        { name: `group grant on ${kind}: unknown target`, method: 'PUT', path: `${I}/${kind}/${UNKNOWN}/groups/${F.group}/roles/${F.readerRole}`, as: 'admin', expect: 404 },
        { name: `group grant on ${kind}: member`, method: 'PUT', path: `${base}/${F.readerRole}`, as: 'member', expect: 403 },
        { name: `group grant on ${kind}: check, not granted (HEAD)`, method: 'HEAD', path: `${base}/${F.readerRole}`, as: 'admin', expect: 404 },
        { name: `group grant on ${kind}: check, not granted (GET)`, method: 'GET', path: `${base}/${F.readerRole}`, as: 'admin', expect: 404 },
        { name: `group grant on ${kind}: revoke, not granted`, method: 'DELETE', path: `${base}/${F.readerRole}`, as: 'admin', expect: 404 },
        { name: `group grant on ${kind}: list, unknown group`, method: 'GET', path: `${I}/${kind}/${target}/groups/${UNKNOWN}/roles`, as: 'admin', expect: 404 },
        { name: `group grant on ${kind}: list as member`, method: 'GET', path: base, as: 'member', expect: 403 },
      );
    }
    // ---- system grants ----
    const system = `${I}/system/users/${F.memberA}/roles`;
    c.push(
      { name: 'system grant: unknown role', method: 'PUT', path: `${system}/${UNKNOWN}`, as: 'admin', expect: 404 },
      { name: 'system grant: unknown user', method: 'PUT', path: `${I}/system/users/${UNKNOWN}/roles/${F.readerRole}`, as: 'admin', expect: 404 },
      { name: 'system grant: member', method: 'PUT', path: `${system}/${F.readerRole}`, as: 'member', expect: 403 },
      { name: 'system grant: check, not granted (HEAD)', method: 'HEAD', path: `${system}/${F.readerRole}`, as: 'admin', expect: 404 },
      { name: 'system grant: check, not granted (GET)', method: 'GET', path: `${system}/${F.readerRole}`, as: 'admin', expect: 404 },
      { name: 'system grant: revoke, not granted', method: 'DELETE', path: `${system}/${F.readerRole}`, as: 'admin', expect: 404 },
      { name: 'system grant: list, unknown user', method: 'GET', path: `${I}/system/users/${UNKNOWN}/roles`, as: 'admin', expect: 404 },
      { name: "system grant: list another user's", method: 'GET', path: `${I}/system/users/${F.other}/roles`, as: 'member', expect: 403 },
      // ---- role_assignments ----
      { name: 'role assignments: effective with group.id', method: 'GET', path: `${I}/role_assignments?effective&group.id=${F.group}`, as: 'admin', expect: 400, message: /effective/ },
      { name: 'role assignments: scope.system not all', method: 'GET', path: `${I}/role_assignments?scope.system=some`, as: 'admin', expect: 400, message: /all/ },
      { name: "role assignments: a group's, as member", method: 'GET', path: `${I}/role_assignments?group.id=${F.group}`, as: 'member', expect: 403 },
    );
    return c;
  }

  test('every new Identity route rejects bad input cleanly and changes nothing', async (t) => {
    const all = cases();
    assert.equal(new Set(all.map((c) => c.name)).size, all.length, 'case names are unique');
    let baseline = fingerprint();
    const started = Date.now();
    for (const c of all) {
      await t.test(c.name, async () => {
        const reply = await send(c);
        const problems = faultProblems(c, reply);
        const now = fingerprint();
        if (now !== baseline) {
          problems.push('the request changed stored state');
          baseline = now;
        }
        assert.deepEqual(problems, [], `${c.method} ${c.path} -> ${reply.status} ${reply.text.slice(0, 400)}`);
      });
    }
    t.diagnostic(`${all.length} cases in ${Date.now() - started} ms`);
    assert.doesNotMatch(pumice.output(), /internal error|response validation failed/);
  });
});
