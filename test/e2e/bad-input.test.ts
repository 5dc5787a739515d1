/**
 * Bad input against every route of the Identity, Block Storage and Image
 * APIs of one real Pumice process. Each case asserts: the expected 4xx status
 * (never a 5xx), an OpenStack-shaped fault body whose `code` equals the
 * status, a non-empty message without stack traces or source paths, and that
 * the request changed nothing (a fingerprint of every database table and of
 * the local backend's volume directory is compared after each case).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ApiClient, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

type Caller = 'admin' | 'member' | 'reader' | 'other' | 'unscoped' | 'domainAdmin' | 'none' | 'bogus';

interface Case {
  name: string;
  method: string;
  /** Path; `{P}` is replaced by the caller's project id. */
  path: string;
  as?: Caller;
  /** Sent as JSON. */
  body?: unknown;
  /** Sent as-is (takes precedence over body). */
  raw?: string | Buffer;
  /** Content-Type; defaults to application/json when there is a body; null sends none. */
  contentType?: string | null;
  headers?: Record<string, string>;
  /** Send the body with chunked transfer encoding instead of Content-Length. */
  chunked?: boolean;
  expect: number | number[];
  message?: RegExp;
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

const openstackFaultKeys: Record<number, string> = {
  400: 'badRequest',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'itemNotFound',
  405: 'badMethod',
  406: 'notAcceptable',
  409: 'conflictingRequest',
  413: 'overLimit',
  415: 'badMediaType',
};

const UNKNOWN = '00000000-0000-4000-8000-000000000000';
const BAD_UUID = 'not-a-uuid';
const long = (n: number, c = 'k') => c.repeat(n);
const bodyMax = 114688;

interface Fixtures {
  adminP: string;
  p1: string;
  p2: string;
  memberA: string;
  readerA: string;
  memberB: string;
  nopw: string;
  disabled: string;
  memberRole: string;
  readerRole: string;
  customRole: string;
  customService: string;
  customEndpoint: string;
  volA: string;
  snapA: string;
  volB: string;
  snapB: string;
  privType: string;
  defaultType: string;
  volumeHost: string;
  volAtt: string;
  attA: string;
  volBAtt: string;
  attB: string;
}

describe('bad input on every route', () => {
  let pumice: PumiceProcess;
  let db: Database.Database;
  const tokens = {} as Record<Caller, string>;
  const projects = {} as Record<Caller, string>;
  const F = {} as Fixtures;

  async function send(c: Pick<Case, 'method' | 'path' | 'as' | 'body' | 'raw' | 'contentType' | 'headers' | 'chunked'>): Promise<Reply> {
    const caller = c.as ?? 'member';
    const path = c.path.replace('{P}', projects[caller] ?? F.p1);
    const url = new URL(pumice.url + path);
    let payload: Buffer | undefined;
    if (c.raw !== undefined) payload = Buffer.isBuffer(c.raw) ? c.raw : Buffer.from(c.raw, 'utf8');
    else if (c.body !== undefined) payload = Buffer.from(JSON.stringify(c.body), 'utf8');
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (caller !== 'none') headers['X-Auth-Token'] = caller === 'bogus' ? 'gAAAAA-not-a-real-token' : tokens[caller];
    if (payload !== undefined) {
      const type = c.contentType === undefined ? 'application/json' : c.contentType;
      if (type !== null) headers['Content-Type'] = type;
      if (c.chunked) headers['Transfer-Encoding'] = 'chunked';
      else headers['Content-Length'] = String(payload.length);
    }
    Object.assign(headers, c.headers);
    return new Promise<Reply>((resolve, reject) => {
      let answered = false;
      const req = http.request(
        { host: url.hostname, port: url.port, path: url.pathname + url.search, method: c.method, headers, agent: false },
        (res) => {
          answered = true;
          const chunks: Buffer[] = [];
          res.on('data', (d: Buffer) => chunks.push(d));
          res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        },
      );
      // The server may answer (413, 401...) and close before it read the whole body.
      req.on('error', (error) => {
        if (!answered) reject(error);
      });
      if (payload !== undefined && c.chunked) {
        for (let i = 0; i < payload.length; i += 16384) req.write(payload.subarray(i, i + 16384));
        req.end();
      } else {
        req.end(payload);
      }
    });
  }

  async function ok(method: string, path: string, as: Caller, body?: unknown, headers?: Record<string, string>): Promise<any> {
    const r = await send({ method, path, as, body, headers });
    if (r.status >= 300) throw new Error(`setup ${method} ${path} failed: ${r.status} ${r.text}`);
    return r.text ? JSON.parse(r.text) : undefined;
  }

  async function login(user: string, password: string, project: string | null): Promise<{ token: string; projectId: string }> {
    if (project !== null) {
      const client = await ApiClient.login(pumice.url, user, password, project);
      return { token: client.token, projectId: client.projectId };
    }
    const r = await send({
      method: 'POST', path: '/identity/v3/auth/tokens', as: 'none',
      body: { auth: { identity: { methods: ['password'], password: { user: { name: user, domain: { id: 'default' }, password } } } } },
    });
    if (r.status !== 201) throw new Error(`unscoped login failed: ${r.status} ${r.text}`);
    return { token: r.headers['x-subject-token'] as string, projectId: '' };
  }

  async function waitStatus(kind: 'volumes' | 'snapshots', id: string, as: Caller): Promise<void> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const body = await ok('GET', `/volume/v3/{P}/${kind}/${id}`, as);
      const status = (body.volume ?? body.snapshot).status;
      if (status === 'available') return;
      if (status === 'error' || Date.now() > deadline) throw new Error(`${kind} ${id} is ${status}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * Every table except tokens (logins add rows), the heartbeat tables (services, compute_nodes: the agents' resource reports, api_listeners)
   * and the dashboard's background samples (timeseries_samples), plus the backend's files.
   * A failed login is expected to count against the user (Keystone's lockout columns), so those two are left out.
   */
  function fingerprint(): string {
    const tables = db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT IN ('tokens', 'services', 'compute_nodes', 'api_listeners', 'timeseries_samples') ORDER BY name")
      .all() as { name: string }[];
    const parts: Record<string, unknown> = {};
    for (const { name } of tables) {
      const rows = db.prepare(`SELECT * FROM "${name}" ORDER BY rowid`).all() as Record<string, unknown>[];
      parts[name] = name === 'users' ? rows.map(({ failed_auth_count: _count, failed_auth_at: _at, ...rest }) => rest) : rows;
    }
    let files: string[] = [];
    try {
      files = readdirSync(join(pumice.dataDir, 'volumes', 'local')).sort();
    } catch {
      files = [];
    }
    parts['files'] = files;
    return JSON.stringify(parts);
  }

  /** After an unexpected change, waits for the tasks it queued so their effects are not blamed on the next case. */
  async function settled(): Promise<string> {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const busy = db.prepare("SELECT COUNT(*) AS n FROM tasks WHERE state IN ('queued', 'running')").get() as { n: number };
      if (busy.n === 0) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 100));
    return fingerprint();
  }

  function describeDiff(before: string, afterPrint: string): string {
    const a = JSON.parse(before) as Record<string, unknown[]>;
    const b = JSON.parse(afterPrint) as Record<string, unknown[]>;
    const changed: string[] = [];
    for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const x = JSON.stringify(a[key]);
      const y = JSON.stringify(b[key]);
      if (x !== y) changed.push(`${key}: ${(a[key] ?? []).length} -> ${(b[key] ?? []).length} rows; now ${String(y).slice(0, 300)}`);
    }
    return changed.join('\n');
  }

  /** Returns the problems of one reply; an empty list means the case passed. */
  function faultProblems(c: Case, r: Reply): string[] {
    const problems: string[] = [];
    const expected = Array.isArray(c.expect) ? c.expect : [c.expect];
    if (!expected.includes(r.status)) problems.push(`status ${r.status}, expected ${expected.join(' or ')}`);
    if (r.status >= 500 || r.status < 400) problems.push(`status ${r.status} is not a 4xx`);
    const path = c.path.split('?')[0]!;
    const identity = path.startsWith('/identity');
    if (c.method === 'HEAD') {
      if (r.text !== '') problems.push('HEAD reply has a body');
      return problems;
    }
    if (!/^application\/json/.test(String(r.headers['content-type'] ?? ''))) problems.push(`content-type ${r.headers['content-type']}`);
    if (/\n\s+at\s|\.(ts|js|mjs|cjs):\d+|node_modules|\/work\/|file:\/\//.test(r.text)) problems.push('reply leaks a stack trace or source path');
    let body: any;
    try {
      body = JSON.parse(r.text);
    } catch {
      problems.push(`body is not JSON: ${r.text.slice(0, 200)}`);
      return problems;
    }
    let message: unknown;
    if (identity) {
      const keys = body && typeof body === 'object' ? Object.keys(body) : [];
      if (keys.length !== 1 || keys[0] !== 'error') problems.push(`identity fault is not {"error": ...}: ${r.text.slice(0, 200)}`);
      const e = body?.error;
      if (e?.code !== r.status) problems.push(`error.code ${e?.code} != status ${r.status}`);
      if (typeof e?.title !== 'string' || e.title.length === 0) problems.push('error.title missing');
      message = e?.message;
      if (r.status === 401 && !r.headers['www-authenticate']) problems.push('401 without WWW-Authenticate');
    } else {
      const keys = body && typeof body === 'object' && !Array.isArray(body) ? Object.keys(body) : [];
      const wanted = openstackFaultKeys[r.status];
      if (keys.length !== 1 || keys[0] !== wanted) problems.push(`fault key ${JSON.stringify(keys)}, expected ["${wanted}"]`);
      const f = body?.[keys[0] ?? ''];
      if (f?.code !== r.status) problems.push(`fault code ${f?.code} != status ${r.status}`);
      message = f?.message;
    }
    if (typeof message !== 'string' || message.trim().length === 0) problems.push('fault message is empty');
    else if (c.message && !c.message.test(message)) problems.push(`message ${JSON.stringify(message)} does not match ${c.message}`);
    return problems;
  }

  before(async () => {
    pumice = await startPumice();
    const admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    tokens.admin = admin.token;
    projects.admin = admin.projectId;
    F.adminP = admin.projectId;
    db = new Database(join(pumice.dataDir, 'pumice.db'), { readonly: true, fileMustExist: true });

    const roles = (await ok('GET', '/identity/v3/roles', 'admin')).roles as { id: string; name: string }[];
    F.memberRole = roles.find((r) => r.name === 'member')!.id;
    F.readerRole = roles.find((r) => r.name === 'reader')!.id;
    F.customRole = (await ok('POST', '/identity/v3/roles', 'admin', { role: { name: 'bad-input-role' } })).role.id;
    F.p1 = (await ok('POST', '/identity/v3/projects', 'admin', { project: { name: 'bad-input-a' } })).project.id;
    F.p2 = (await ok('POST', '/identity/v3/projects', 'admin', { project: { name: 'bad-input-b' } })).project.id;
    const user = async (name: string, password: string | undefined, project: string | null, role: string | null, enabled = true) => {
      const id = (await ok('POST', '/identity/v3/users', 'admin', { user: { name, ...(password ? { password } : {}), enabled } })).user.id as string;
      if (project && role) await ok('PUT', `/identity/v3/projects/${project}/users/${id}/roles/${role}`, 'admin');
      return id;
    };
    F.memberA = await user('member-a', 'pw-member-a', F.p1, F.memberRole);
    F.readerA = await user('reader-a', 'pw-reader-a', F.p1, F.readerRole);
    F.memberB = await user('member-b', 'pw-member-b', F.p2, F.memberRole);
    F.nopw = await user('no-password', undefined, F.p1, F.memberRole);
    F.disabled = await user('disabled-user', 'pw-disabled', F.p1, F.memberRole, false);
    for (const [caller, name, password, project] of [
      ['member', 'member-a', 'pw-member-a', 'bad-input-a'],
      ['reader', 'reader-a', 'pw-reader-a', 'bad-input-a'],
      ['other', 'member-b', 'pw-member-b', 'bad-input-b'],
      ['unscoped', 'member-a', 'pw-member-a', null],
    ] as const) {
      const t = await login(name, password, project);
      tokens[caller] = t.token;
      projects[caller] = t.projectId;
    }
    const domainScoped = await send({
      method: 'POST', path: '/identity/v3/auth/tokens', as: 'none',
      body: { auth: { identity: { methods: ['password'], password: { user: { name: 'admin', domain: { id: 'default' }, password: pumice.adminPassword } } }, scope: { domain: { id: 'default' } } } },
    });
    assert.equal(domainScoped.status, 201, domainScoped.text);
    tokens.domainAdmin = domainScoped.headers['x-subject-token'] as string;
    projects.domainAdmin = F.adminP;

    F.customService = (await ok('POST', '/identity/v3/services', 'admin', { service: { type: 'bad-input', name: 'bad-input-svc' } })).service.id;
    F.customEndpoint = (await ok('POST', '/identity/v3/endpoints', 'admin', { endpoint: { interface: 'public', service_id: F.customService, url: 'http://example.invalid/x' } })).endpoint.id;

    F.volA = (await ok('POST', '/volume/v3/{P}/volumes', 'member', { volume: { size: 1, name: 'vol-a', metadata: { k1: 'v1' } } })).volume.id;
    F.volB = (await ok('POST', '/volume/v3/{P}/volumes', 'other', { volume: { size: 1, name: 'vol-b' } })).volume.id;
    await waitStatus('volumes', F.volA, 'member');
    await waitStatus('volumes', F.volB, 'other');
    F.snapA = (await ok('POST', '/volume/v3/{P}/snapshots', 'member', { snapshot: { volume_id: F.volA, name: 'snap-a', metadata: { k1: 'v1' } } })).snapshot.id;
    F.snapB = (await ok('POST', '/volume/v3/{P}/snapshots', 'other', { snapshot: { volume_id: F.volB, name: 'snap-b' } })).snapshot.id;
    await waitStatus('snapshots', F.snapA, 'member');
    await waitStatus('snapshots', F.snapB, 'other');

    F.privType = (await ok('POST', '/volume/v3/{P}/types', 'admin', { volume_type: { name: 'bad-input-private', is_public: false, extra_specs: { k1: 'v1' } } })).volume_type.id;
    await ok('POST', `/volume/v3/{P}/types/${F.privType}/action`, 'admin', { addProjectAccess: { project: F.p2 } });
    F.defaultType = (await ok('GET', '/volume/v3/{P}/types/default', 'admin')).volume_type.id;
    F.volumeHost = ((await ok('GET', '/volume/v3/{P}/os-services', 'admin')).services as { binary: string; host: string }[]).find((s) => s.binary === 'cinder-volume')!.host;

    // Attachments (3.27+): a reserved attachment in each project, on volumes of their own.
    const mv44 = { 'OpenStack-API-Version': 'volume 3.44' };
    F.volAtt = (await ok('POST', '/volume/v3/{P}/volumes', 'member', { volume: { size: 1, name: 'vol-att' } })).volume.id;
    F.volBAtt = (await ok('POST', '/volume/v3/{P}/volumes', 'other', { volume: { size: 1, name: 'vol-b-att' } })).volume.id;
    await waitStatus('volumes', F.volAtt, 'member');
    await waitStatus('volumes', F.volBAtt, 'other');
    F.attA = (await ok('POST', '/volume/v3/{P}/attachments', 'member', { attachment: { volume_uuid: F.volAtt, instance_uuid: UNKNOWN } }, mv44)).attachment.id;
    F.attB = (await ok('POST', '/volume/v3/{P}/attachments', 'other', { attachment: { volume_uuid: F.volBAtt, instance_uuid: UNKNOWN } }, mv44)).attachment.id;
  });

  after(async () => {
    db?.close();
    if (pumice) {
      await pumice.stop();
      pumice.cleanup();
    }
  });

  // ------------------------------------------------------------------ cases

  /** Every route: [method, path with fixture ids, caller allowed to call it, body required]. */
  function identityRoutes(): [string, string, Caller, boolean][] {
    const grants: [string, string, Caller, boolean][] = [];
    for (const [kind, target] of [['projects', F.p1], ['domains', 'default']] as const) {
      grants.push(['GET', `/v3/${kind}/${target}/users/${F.memberA}/roles`, 'admin', false]);
      for (const m of ['PUT', 'HEAD', 'GET', 'DELETE']) grants.push([m, `/v3/${kind}/${target}/users/${F.nopw}/roles/${F.customRole}`, 'admin', false]);
    }
    return [
      ['GET', '/', 'none', false],
      ['GET', '/v3', 'none', false],
      ['POST', '/v3/auth/tokens', 'none', true],
      ['GET', '/v3/auth/tokens', 'admin', false],
      ['HEAD', '/v3/auth/tokens', 'admin', false],
      ['DELETE', '/v3/auth/tokens', 'admin', false],
      ['GET', '/v3/auth/catalog', 'member', false],
      ['GET', '/v3/auth/projects', 'member', false],
      ['GET', '/v3/auth/domains', 'member', false],
      ['GET', '/v3/auth/system', 'member', false],
      ['GET', '/v3/domains', 'admin', false],
      ['GET', '/v3/domains/default', 'admin', false],
      ['POST', '/v3/domains', 'admin', true],
      ['PATCH', '/v3/domains/default', 'admin', true],
      ['GET', '/v3/projects', 'admin', false],
      ['GET', `/v3/projects/${F.p1}`, 'admin', false],
      ['POST', '/v3/projects', 'admin', true],
      ['PATCH', `/v3/projects/${F.p1}`, 'admin', true],
      ['DELETE', `/v3/projects/${F.p2}`, 'admin', false],
      ['GET', '/v3/users', 'admin', false],
      ['GET', `/v3/users/${F.memberA}`, 'admin', false],
      ['POST', '/v3/users', 'admin', true],
      ['PATCH', `/v3/users/${F.nopw}`, 'admin', true],
      ['DELETE', `/v3/users/${F.nopw}`, 'admin', false],
      ['POST', `/v3/users/${F.memberA}/password`, 'member', true],
      ['GET', `/v3/users/${F.memberA}/projects`, 'admin', false],
      ['GET', `/v3/users/${F.memberA}/groups`, 'admin', false],
      ['GET', '/v3/groups', 'admin', false],
      ['GET', '/v3/roles', 'admin', false],
      ['GET', `/v3/roles/${F.customRole}`, 'admin', false],
      ['POST', '/v3/roles', 'admin', true],
      ['PATCH', `/v3/roles/${F.customRole}`, 'admin', true],
      ['DELETE', `/v3/roles/${F.customRole}`, 'admin', false],
      ...grants,
      ['GET', '/v3/role_assignments', 'admin', false],
      ['GET', '/v3/regions', 'admin', false],
      ['GET', '/v3/regions/RegionOne', 'admin', false],
      ['POST', '/v3/regions', 'admin', true],
      ['PATCH', '/v3/regions/RegionOne', 'admin', true],
      ['DELETE', '/v3/regions/RegionOne', 'admin', false],
      ['GET', '/v3/services', 'admin', false],
      ['GET', `/v3/services/${F.customService}`, 'admin', false],
      ['POST', '/v3/services', 'admin', true],
      ['PATCH', `/v3/services/${F.customService}`, 'admin', true],
      ['DELETE', `/v3/services/${F.customService}`, 'admin', false],
      ['GET', '/v3/endpoints', 'admin', false],
      ['GET', `/v3/endpoints/${F.customEndpoint}`, 'admin', false],
      ['POST', '/v3/endpoints', 'admin', true],
      ['PATCH', `/v3/endpoints/${F.customEndpoint}`, 'admin', true],
      ['DELETE', `/v3/endpoints/${F.customEndpoint}`, 'admin', false],
      ['GET', `/v3/users/${F.memberA}/access_rules`, 'admin', false],
      ['GET', `/v3/users/${F.memberA}/access_rules/${UNKNOWN}`, 'admin', false],
      ['DELETE', `/v3/users/${F.memberA}/access_rules/${UNKNOWN}`, 'admin', false],
      ['GET', '/v3/OS-TRUST/trusts', 'member', false],
      ['POST', '/v3/OS-TRUST/trusts', 'member', true],
      ['GET', `/v3/OS-TRUST/trusts/${UNKNOWN}`, 'admin', false],
      ['GET', `/v3/OS-TRUST/trusts/${UNKNOWN}/roles`, 'admin', false],
      ['HEAD', `/v3/OS-TRUST/trusts/${UNKNOWN}/roles/${UNKNOWN}`, 'admin', false],
      ['GET', `/v3/OS-TRUST/trusts/${UNKNOWN}/roles/${UNKNOWN}`, 'admin', false],
      ['DELETE', `/v3/OS-TRUST/trusts/${UNKNOWN}`, 'admin', false],
    ];
  }

  /** Block Storage routes below `/volume/v3/{P}` (or `/volume/v3` without a project). */
  function volumeRoutes(): [string, string, Caller, boolean][] {
    const routes: [string, string, Caller, boolean][] = [
      ['GET', '/volumes', 'member', false],
      ['GET', '/volumes/detail', 'member', false],
      ['GET', '/volumes/summary', 'member', false],
      ['POST', '/volumes', 'member', true],
      ['GET', `/volumes/${F.volA}`, 'member', false],
      ['PUT', `/volumes/${F.volA}`, 'member', true],
      ['DELETE', `/volumes/${F.volA}`, 'member', false],
      ['POST', `/volumes/${F.volA}/action`, 'member', true],
    ];
    for (const [kind, id] of [['volumes', F.volA], ['snapshots', F.snapA]] as const) {
      routes.push(
        ['GET', `/${kind}/${id}/metadata`, 'member', false],
        ['POST', `/${kind}/${id}/metadata`, 'member', true],
        ['PUT', `/${kind}/${id}/metadata`, 'member', true],
        ['GET', `/${kind}/${id}/metadata/k1`, 'member', false],
        ['PUT', `/${kind}/${id}/metadata/k1`, 'member', true],
        ['DELETE', `/${kind}/${id}/metadata/k1`, 'member', false],
      );
    }
    routes.push(
      ['GET', '/snapshots', 'member', false],
      ['GET', '/snapshots/detail', 'member', false],
      ['POST', '/snapshots', 'member', true],
      ['GET', `/snapshots/${F.snapA}`, 'member', false],
      ['PUT', `/snapshots/${F.snapA}`, 'member', true],
      ['DELETE', `/snapshots/${F.snapA}`, 'member', false],
      ['POST', `/snapshots/${F.snapA}/action`, 'member', true],
      ['GET', '/types', 'admin', false],
      ['GET', `/types/${F.privType}`, 'admin', false],
      ['POST', '/types', 'admin', true],
      ['PUT', `/types/${F.privType}`, 'admin', true],
      ['DELETE', `/types/${F.privType}`, 'admin', false],
      ['GET', `/types/${F.privType}/extra_specs`, 'admin', false],
      ['POST', `/types/${F.privType}/extra_specs`, 'admin', true],
      ['GET', `/types/${F.privType}/extra_specs/k1`, 'admin', false],
      ['PUT', `/types/${F.privType}/extra_specs/k1`, 'admin', true],
      ['DELETE', `/types/${F.privType}/extra_specs/k1`, 'admin', false],
      ['GET', `/types/${F.privType}/os-volume-type-access`, 'admin', false],
      ['POST', `/types/${F.privType}/action`, 'admin', true],
      ['GET', `/os-quota-sets/${F.p1}`, 'admin', false],
      ['GET', `/os-quota-sets/${F.p1}/defaults`, 'admin', false],
      ['PUT', `/os-quota-sets/${F.p1}`, 'admin', true],
      ['DELETE', `/os-quota-sets/${F.p1}`, 'admin', false],
      ['GET', '/limits', 'member', false],
      ['GET', '/os-availability-zone', 'member', false],
      ['GET', '/os-services', 'admin', false],
      ['PUT', '/os-services/disable', 'admin', true],
      ['GET', '/scheduler-stats/get_pools', 'admin', false],
      ['GET', '/messages', 'member', false],
      ['GET', `/messages/${UNKNOWN}`, 'member', false],
      ['DELETE', `/messages/${UNKNOWN}`, 'member', false],
      ['GET', '/extensions', 'member', false],
    );
    return routes;
  }

  const imageRoutes: [string, string, Caller, boolean][] = [
    ['GET', '/', 'none', false],
    ['GET', '/versions', 'none', false],
    ['GET', '/v2', 'none', false],
    ['GET', '/v2/images', 'member', false],
    ['POST', '/v2/images', 'member', true],
    ['GET', `/v2/images/${UNKNOWN}`, 'member', false],
    ['PATCH', `/v2/images/${UNKNOWN}`, 'member', false],
    ['DELETE', `/v2/images/${UNKNOWN}`, 'member', false],
    ['GET', `/v2/images/${UNKNOWN}/tasks`, 'member', false],
    ['DELETE', `/v2/stores/file/${UNKNOWN}`, 'admin', false],
    ['GET', '/v2/info/stores/detail', 'admin', false],
    ['GET', '/v2/tasks', 'admin', false],
    ['POST', '/v2/tasks', 'admin', true],
    ['GET', `/v2/tasks/${UNKNOWN}`, 'admin', false],
  ];

  /** A method that the path's route pattern does not serve, for the 405 cases. */
  function otherMethod(routes: [string, string, Caller, boolean][], path: string): string {
    const ids = new Set<string>([...Object.values(F), UNKNOWN, 'default', 'RegionOne', 'k1']);
    const pattern = (p: string) => p.split('/').map((s) => (ids.has(s) ? ':id' : s)).join('/');
    const used = new Set(routes.filter((r) => pattern(r[1]) === pattern(path)).map((r) => r[0]));
    if (used.has('GET')) used.add('HEAD');
    return ['PATCH', 'PUT', 'POST', 'DELETE', 'GET'].find((m) => !used.has(m))!;
  }

  /** Bodies that are never a valid request body. */
  function badBodies(method: string, path: string, as: Caller): Case[] {
    const name = `${method} ${path}`;
    const nonUtf8 = Buffer.concat([Buffer.from('{"'), Buffer.from([0xff, 0xfe, 0xc3, 0x28]), Buffer.from('": "'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')]);
    const hugeJson = JSON.stringify({ x: long(bodyMax) });
    return [
      { name: `${name}: truncated JSON`, method, path, as, raw: '{"volume": {"size": 1', expect: 400 },
      { name: `${name}: JSON array body`, method, path, as, raw: '[]', expect: 400 },
      { name: `${name}: JSON null body`, method, path, as, raw: 'null', expect: 400 },
      { name: `${name}: JSON string body`, method, path, as, raw: '"str"', expect: 400 },
      { name: `${name}: JSON number body`, method, path, as, raw: '42', expect: 400 },
      { name: `${name}: non-UTF-8 bytes`, method, path, as, raw: nonUtf8, expect: 400 },
      { name: `${name}: empty body`, method, path, as, expect: 400 },
      { name: `${name}: text/plain`, method, path, as, raw: '{"a": 1}', contentType: 'text/plain', expect: 415 },
      { name: `${name}: oversize body`, method, path, as, raw: hugeJson, expect: 413 },
    ];
  }

  function genericCases(): Case[] {
    const cases: Case[] = [];
    const sets: [string, [string, string, Caller, boolean][]][] = [
      ['/identity', identityRoutes()],
      ['/volume/v3/{P}', volumeRoutes()],
      ['/image', imageRoutes],
    ];
    for (const [prefix, routes] of sets) {
      const seen = new Set<string>();
      for (const [method, sub, as, bodyRequired] of routes) {
        const path = prefix + (sub === '/' ? '/' : sub);
        const routeName = `${method} ${path}`;
        if (as !== 'none') {
          cases.push({ name: `${routeName}: no X-Auth-Token`, method, path, as: 'none', expect: 401 });
          cases.push({ name: `${routeName}: invalid X-Auth-Token`, method, path, as: 'bogus', expect: 401 });
          if (prefix.startsWith('/volume')) {
            cases.push({ name: `${routeName} (no project in URL): no X-Auth-Token`, method, path: `/volume/v3${sub}`, as: 'none', expect: 401 });
          }
        }
        if (!seen.has(sub)) {
          seen.add(sub);
          const m = otherMethod(routes, sub);
          cases.push({ name: `${m} ${path}: method not allowed`, method: m, path, as, expect: 405 });
        }
        if (prefix.startsWith('/volume')) {
          for (const [header, status] of [['volume 3.999', 406], ['volume abc', 400], ['volume 2.0', 406]] as const) {
            cases.push({ name: `${routeName}: OpenStack-API-Version ${header}`, method, path, as, headers: { 'OpenStack-API-Version': header }, expect: status });
            cases.push({ name: `${routeName} (no project in URL): OpenStack-API-Version ${header}`, method, path: `/volume/v3${sub}`, as, headers: { 'OpenStack-API-Version': header }, expect: status });
          }
          cases.push({
            name: `${routeName}: URL project of another project`, method, path: `/volume/v3/${F.p2}${sub}`, as: as === 'admin' ? 'admin' : 'member', expect: 400,
            message: /project/,
          });
          cases.push({ name: `${routeName}: URL project that does not exist`, method, path: `/volume/v3/no-such-project${sub}`, as, expect: 400 });
        }
        if (bodyRequired) cases.push(...badBodies(method, path, as));
        else if (method !== 'GET' && method !== 'HEAD') {
          // Bodies the route does not need are still parsed: malformed ones are rejected.
          cases.push({ name: `${routeName}: truncated JSON body`, method, path, as, raw: '{"a": ', expect: 400 });
          cases.push({ name: `${routeName}: text/plain body`, method, path, as, raw: 'hello', contentType: 'text/plain', expect: 415 });
        }
      }
    }
    // Chunked oversize bodies (no Content-Length) on one route of each API.
    const big = JSON.stringify({ x: long(bodyMax * 2) });
    cases.push(
      { name: 'POST /identity/v3/auth/tokens: chunked oversize body', method: 'POST', path: '/identity/v3/auth/tokens', as: 'none', raw: big, chunked: true, expect: 413 },
      { name: 'POST /volume/v3/{P}/volumes: chunked oversize body', method: 'POST', path: '/volume/v3/{P}/volumes', raw: big, chunked: true, expect: 413 },
      { name: 'GET /image/v2/images: chunked oversize body', method: 'GET', path: '/image/v2/images', raw: big, chunked: true, expect: 413 },
      { name: 'GET /image/v2/images: text/plain body', method: 'GET', path: '/image/v2/images', raw: 'x', contentType: 'text/plain', expect: 415 },
    );
    return cases;
  }

  function identityCases(): Case[] {
    const I = '/identity/v3';
    const pw = (user: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ auth: { identity: { methods: ['password'], password: { user } }, ...extra } });
    const tokenCases: Case[] = [
      { name: 'token: wrong password', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', domain: { id: 'default' }, password: 'wrong' }), expect: 401 },
      { name: 'token: unknown user', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'nobody-at-all', domain: { id: 'default' }, password: 'pw-member-a' }), expect: 401 },
      { name: 'token: unknown user id', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ id: 'f'.repeat(32), password: 'x' }), expect: 401 },
      { name: 'token: unknown user domain', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', domain: { name: 'NoSuchDomain' }, password: 'pw-member-a' }), expect: 401 },
      { name: 'token: user without password', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'no-password', domain: { id: 'default' }, password: '' }), expect: 401 },
      { name: 'token: disabled user', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'disabled-user', domain: { id: 'default' }, password: 'pw-disabled' }), expect: 401 },
      { name: 'token: unknown field in auth', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: { auth: { identity: { methods: ['password'] }, bogus: 1 } }, expect: 400 },
      { name: 'token: unknown field in user', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', password: 'x', constructor: 1 }), expect: 400 },
      { name: 'token: __proto__ field in user', method: 'POST', path: `${I}/auth/tokens`, as: 'none', raw: '{"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "member-a", "password": "x", "__proto__": {"id": "x"}}}}}}', expect: 400 },
      { name: 'token: missing auth', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: {}, expect: 400 },
      { name: 'token: missing identity', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: { auth: {} }, expect: 400 },
      { name: 'token: missing methods', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: { auth: { identity: {} } }, expect: 400 },
      { name: 'token: methods is a string', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: { auth: { identity: { methods: 'password' } } }, expect: 400 },
      { name: 'token: unknown method', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: { auth: { identity: { methods: ['totp'] } } }, expect: 400 },
      { name: 'token: empty methods', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: { auth: { identity: { methods: [] } } }, expect: [400, 401] },
      { name: 'token: password method without password', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: { auth: { identity: { methods: ['password'] } } }, expect: 400 },
      { name: 'token: user without password field', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', domain: { id: 'default' } }), expect: 400 },
      { name: 'token: user without id or name', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ password: 'x' }), expect: 400 },
      { name: 'token: password is an object', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', password: { x: 1 } }), expect: 400 },
      { name: 'token: password is a number', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', password: 12345 }), expect: 400 },
      { name: 'token: password too long', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', password: long(5000) }), expect: 400 },
      { name: 'token: user name is an array', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: ['member-a'], password: 'x' }), expect: 400 },
      { name: 'token: user domain is a string', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', domain: 'default', password: 'x' }), expect: 400 },
      { name: 'token: user id too long', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ id: long(65), password: 'x' }), expect: 400 },
      { name: 'token: token method without token', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: { auth: { identity: { methods: ['token'] } } }, expect: 400 },
      { name: 'token: token method with invalid token', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: { auth: { identity: { methods: ['token'], token: { id: 'bogus' } } } }, expect: [401, 404] },
      { name: 'token: token id is a number', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: { auth: { identity: { methods: ['token'], token: { id: 5 } } } }, expect: 400 },
      { name: 'token: scope is a string', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', domain: { id: 'default' }, password: 'pw-member-a' }, { scope: 'project' }), expect: 400 },
      { name: 'token: scope has unknown field', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', domain: { id: 'default' }, password: 'pw-member-a' }, { scope: { 'OS-FEDERATION': { id: 'x' } } }), expect: 400 },
      { name: 'token: unknown trust', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', domain: { id: 'default' }, password: 'pw-member-a' }, { scope: { 'OS-TRUST:trust': { id: 'x' } } }), expect: 404, message: /trust/ },
      { name: 'token: trust beside a project scope', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', domain: { id: 'default' }, password: 'pw-member-a' }, { scope: { 'OS-TRUST:trust': { id: 'x' }, project: { id: F.p1 } } }), expect: 400, message: /alone/ },
      { name: 'token: trust id is a number', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', domain: { id: 'default' }, password: 'pw-member-a' }, { scope: { 'OS-TRUST:trust': { id: 5 } } }), expect: 400 },
      { name: 'token: scope project id is a number', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', domain: { id: 'default' }, password: 'pw-member-a' }, { scope: { project: { id: 5 } } }), expect: 400 },
      { name: 'token: scope project empty', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', domain: { id: 'default' }, password: 'pw-member-a' }, { scope: { project: {} } }), expect: 400 },
      { name: 'token: scope project name without domain', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', domain: { id: 'default' }, password: 'pw-member-a' }, { scope: { project: { name: 'bad-input-a' } } }), expect: 400 },
      { name: 'token: scope unknown project', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', domain: { id: 'default' }, password: 'pw-member-a' }, { scope: { project: { id: UNKNOWN } } }), expect: 401 },
      { name: 'token: scope project without role', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', domain: { id: 'default' }, password: 'pw-member-a' }, { scope: { project: { id: F.p2 } } }), expect: 401 },
      { name: 'token: scope unknown domain', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', domain: { id: 'default' }, password: 'pw-member-a' }, { scope: { domain: { id: 'nope' } } }), expect: 401 },
      { name: 'token: scope empty domain', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', domain: { id: 'default' }, password: 'pw-member-a' }, { scope: { domain: {} } }), expect: [400, 401] },
      { name: 'token: system scope', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'member-a', domain: { id: 'default' }, password: 'pw-member-a' }, { scope: { system: { all: true } } }), expect: [400, 401] },
      { name: 'token: deeply nested arrays', method: 'POST', path: `${I}/auth/tokens`, as: 'none', raw: '['.repeat(50000) + ']'.repeat(50000), expect: 400 },
      { name: 'token: wrong password, empty string', method: 'POST', path: `${I}/auth/tokens`, as: 'none', body: pw({ name: 'admin', domain: { id: 'default' }, password: '' }), expect: 401 },
      { name: 'check token: no X-Subject-Token', method: 'GET', path: `${I}/auth/tokens`, as: 'admin', expect: 400 },
      { name: 'check token: invalid X-Subject-Token', method: 'GET', path: `${I}/auth/tokens`, as: 'admin', headers: { 'X-Subject-Token': 'bogus' }, expect: 404 },
      { name: 'check token (HEAD): invalid X-Subject-Token', method: 'HEAD', path: `${I}/auth/tokens`, as: 'admin', headers: { 'X-Subject-Token': 'bogus' }, expect: 404 },
      { name: 'revoke token: invalid X-Subject-Token', method: 'DELETE', path: `${I}/auth/tokens`, as: 'admin', headers: { 'X-Subject-Token': 'bogus' }, expect: 404 },
      { name: 'revoke token: no X-Subject-Token', method: 'DELETE', path: `${I}/auth/tokens`, as: 'admin', expect: 400 },
      { name: "check token: member checks another user's token", method: 'GET', path: `${I}/auth/tokens`, as: 'member', headers: { 'X-Subject-Token': 'someone-elses' }, expect: 403 },
      { name: "revoke token: member revokes another user's token", method: 'DELETE', path: `${I}/auth/tokens`, as: 'member', headers: { 'X-Subject-Token': 'someone-elses' }, expect: 403 },
      { name: 'catalog: unscoped token', method: 'GET', path: `${I}/auth/catalog`, as: 'unscoped', expect: 403 },
    ];
    const entity = (kind: string, body: unknown, expect: number | number[], name: string, method = 'POST', path = `${I}/${kind}`, as: Caller = 'admin'): Case => ({
      name: `${method} ${kind}: ${name}`, method, path, as, body, expect,
    });
    const cases: Case[] = [
      ...tokenCases,
      // domains
      entity('domains', { domain: {} }, 400, 'missing name'),
      entity('domains', { domain: { name: '' } }, 400, 'empty name'),
      entity('domains', { domain: { name: long(256) } }, 400, 'name too long'),
      entity('domains', { domain: { name: 5 } }, 400, 'name is a number'),
      entity('domains', { domain: { name: 'x', bogus: 1 } }, 400, 'unknown field'),
      entity('domains', { domain: { name: 'x', constructor: 1 } }, 400, "unknown field 'constructor'"),
      entity('domains', { domain: { name: 'x', toString: 'y' } }, 400, "unknown field 'toString'"),
      entity('domains', { domain: { name: 'x', enabled: 'yes' } }, 400, 'enabled is a string'),
      entity('domains', { domain: { name: 'Default' } }, 409, 'duplicate name'),
      entity('domains', { domain: { name: 'x' } }, 403, 'as member', 'POST', `${I}/domains`, 'member'),
      entity('domains', undefined, 404, 'unknown domain', 'GET', `${I}/domains/${UNKNOWN}`),
      entity('domains', undefined, 400, 'bad percent-encoding in id', 'GET', `${I}/domains/%E0%A4%A`),
      // projects
      entity('projects', { project: {} }, 400, 'missing name'),
      entity('projects', { project: { name: { x: 1 } } }, 400, 'name is an object'),
      entity('projects', { project: { name: long(256) } }, 400, 'name too long'),
      entity('projects', { project: { name: 'x', tags: 'a' } }, 400, 'tags is a string'),
      entity('projects', { project: { name: 'x', tags: [1] } }, 400, 'tag is a number'),
      entity('projects', { project: { name: 'x', tags: Array.from({ length: 81 }, (_, i) => `t${i}`) } }, 400, 'too many tags'),
      entity('projects', { project: { name: 'x', enabled: 'false' } }, 400, 'enabled is a string'),
      entity('projects', { project: { name: 'x', bogus: true } }, 400, 'unknown field'),
      entity('projects', { project: { name: 'x', hasOwnProperty: true } }, 400, "unknown field 'hasOwnProperty'"),
      entity('projects', { project: { name: 'x', domain_id: 'nope' } }, [400, 404], 'unknown domain'),
      entity('projects', { project: { name: 'bad-input-a' } }, 409, 'duplicate name'),
      entity('projects', { project: { name: 'x' } }, 403, 'as member', 'POST', `${I}/projects`, 'member'),
      entity('projects', { project: { name: 'x' } }, 403, 'as reader', 'POST', `${I}/projects`, 'reader'),
      entity('projects', undefined, 404, 'unknown project', 'GET', `${I}/projects/${UNKNOWN}`),
      entity('projects', undefined, 403, 'project of another user', 'GET', `${I}/projects/${F.p2}`, 'member'),
      entity('projects', { project: { name: 5 } }, 400, 'name is a number', 'PATCH', `${I}/projects/${F.p1}`),
      entity('projects', { project: { bogus: 5 } }, 400, 'unknown field', 'PATCH', `${I}/projects/${F.p1}`),
      entity('projects', { project: { name: 'bad-input-b' } }, 409, 'rename to an existing name', 'PATCH', `${I}/projects/${F.p1}`),
      entity('projects', { project: { name: 'x' } }, 404, 'unknown project', 'PATCH', `${I}/projects/${UNKNOWN}`),
      entity('projects', { project: { name: 'x' } }, 403, 'as member', 'PATCH', `${I}/projects/${F.p1}`, 'member'),
      entity('projects', { name: 'x' }, 400, 'missing project wrapper', 'PATCH', `${I}/projects/${F.p1}`),
      entity('projects', undefined, 404, 'unknown project', 'DELETE', `${I}/projects/${UNKNOWN}`),
      entity('projects', undefined, 403, 'as member', 'DELETE', `${I}/projects/${F.p1}`, 'member'),
      // users
      entity('users', { user: {} }, 400, 'missing name'),
      entity('users', { user: { name: '' } }, 400, 'empty name'),
      entity('users', { user: { name: 'x', password: long(4097) } }, 400, 'password too long'),
      entity('users', { user: { name: 'x', password: 5 } }, 400, 'password is a number'),
      entity('users', { user: { name: 'x', enabled: 1 } }, 400, 'enabled is a number'),
      entity('users', { user: { name: 'x', email: ['a@b'] } }, 400, 'email is an array'),
      entity('users', { user: { name: 'x', bogus: 1 } }, 400, 'unknown field'),
      entity('users', { user: { name: 'x', domain_id: 'nope' } }, [400, 404], 'unknown domain'),
      entity('users', { user: { name: 'x', default_project_id: UNKNOWN } }, [400, 404], 'unknown default project'),
      entity('users', { user: { name: 'member-a' } }, 409, 'duplicate name'),
      entity('users', { user: { name: 'x' } }, 403, 'as member', 'POST', `${I}/users`, 'member'),
      entity('users', undefined, 403, 'list as member', 'GET', `${I}/users`, 'member'),
      entity('users', undefined, 404, 'unknown user', 'GET', `${I}/users/${UNKNOWN}`),
      entity('users', undefined, 403, 'another user as member', 'GET', `${I}/users/${F.memberB}`, 'member'),
      entity('users', { user: { name: 'member-b' } }, 409, 'rename to an existing name', 'PATCH', `${I}/users/${F.nopw}`),
      entity('users', { user: { enabled: 'no' } }, 400, 'enabled is a string', 'PATCH', `${I}/users/${F.nopw}`),
      entity('users', { user: { default_project_id: UNKNOWN } }, [400, 404], 'unknown default project', 'PATCH', `${I}/users/${F.nopw}`),
      entity('users', { user: { name: 'x' } }, 404, 'unknown user', 'PATCH', `${I}/users/${UNKNOWN}`),
      entity('users', { user: { name: 'x' } }, 403, 'as member', 'PATCH', `${I}/users/${F.memberA}`, 'member'),
      entity('users', undefined, 404, 'unknown user', 'DELETE', `${I}/users/${UNKNOWN}`),
      entity('users', undefined, 403, 'as member', 'DELETE', `${I}/users/${F.memberB}`, 'member'),
      entity('users', { user: { password: 'new', original_password: 'wrong' } }, 401, 'change password: wrong original', 'POST', `${I}/users/${F.memberA}/password`, 'member'),
      entity('users', { user: { password: 'new', original_password: 'pw-member-b' } }, 403, "change password: another user's", 'POST', `${I}/users/${F.memberB}/password`, 'member'),
      entity('users', { user: { password: 'new' } }, 400, 'change password: no original', 'POST', `${I}/users/${F.memberA}/password`, 'member'),
      entity('users', { user: { password: '', original_password: 'pw-member-a' } }, 400, 'change password: empty new', 'POST', `${I}/users/${F.memberA}/password`, 'member'),
      entity('users', { user: { password: 5, original_password: 'pw-member-a' } }, 400, 'change password: number', 'POST', `${I}/users/${F.memberA}/password`, 'member'),
      entity('users', { user: { password: 'n', original_password: 'pw-member-a', extra: 1 } }, 400, 'change password: unknown field', 'POST', `${I}/users/${F.memberA}/password`, 'member'),
      entity('users', undefined, 404, 'projects of unknown user', 'GET', `${I}/users/${UNKNOWN}/projects`),
      entity('users', undefined, 403, 'projects of another user', 'GET', `${I}/users/${F.memberB}/projects`, 'member'),
      entity('users', undefined, 404, 'groups of unknown user', 'GET', `${I}/users/${UNKNOWN}/groups`),
      entity('groups', undefined, 403, 'list as member', 'GET', `${I}/groups`, 'member'),
      // roles
      entity('roles', { role: {} }, 400, 'missing name'),
      entity('roles', { role: { name: [] } }, 400, 'name is an array'),
      entity('roles', { role: { name: 'x', description: long(256) } }, 400, 'description too long'),
      entity('roles', { role: { name: 'x', bogus: 1 } }, 400, 'unknown field'),
      entity('roles', { role: { name: 'member' } }, 409, 'duplicate name'),
      entity('roles', { role: { name: 'x' } }, 403, 'as member', 'POST', `${I}/roles`, 'member'),
      entity('roles', undefined, 404, 'unknown role', 'GET', `${I}/roles/${UNKNOWN}`),
      entity('roles', { role: { name: 'reader' } }, 409, 'rename to an existing name', 'PATCH', `${I}/roles/${F.customRole}`),
      entity('roles', { role: { name: 5 } }, 400, 'name is a number', 'PATCH', `${I}/roles/${F.customRole}`),
      entity('roles', { role: { name: 'x' } }, 404, 'unknown role', 'PATCH', `${I}/roles/${UNKNOWN}`),
      entity('roles', { role: { name: 'x' } }, 403, 'as member', 'PATCH', `${I}/roles/${F.customRole}`, 'member'),
      entity('roles', undefined, 404, 'unknown role', 'DELETE', `${I}/roles/${UNKNOWN}`),
      entity('roles', undefined, 403, 'as member', 'DELETE', `${I}/roles/${F.customRole}`, 'member'),
      // role assignments
      entity('role_assignments', undefined, 403, 'list as member without user filter', 'GET', `${I}/role_assignments`, 'member'),
      entity('role_assignments', undefined, 403, "list another user's as member", 'GET', `${I}/role_assignments?user.id=${F.memberB}`, 'member'),
    ];
    for (const [kind, target] of [['projects', F.p1], ['domains', 'default']] as const) {
      const base = `${I}/${kind}/${target}/users`;
      cases.push(
        entity(kind, undefined, 404, 'grant: unknown user', 'PUT', `${base}/${UNKNOWN}/roles/${F.customRole}`),
        entity(kind, undefined, 404, 'grant: unknown role', 'PUT', `${base}/${F.nopw}/roles/${UNKNOWN}`),
        entity(kind, undefined, 404, 'grant: unknown target', 'PUT', `${I}/${kind}/${UNKNOWN}/users/${F.nopw}/roles/${F.customRole}`),
        entity(kind, undefined, 403, 'grant: as member', 'PUT', `${base}/${F.memberA}/roles/${F.customRole}`, 'member'),
        entity(kind, undefined, 404, 'check grant: not assigned', 'GET', `${base}/${F.nopw}/roles/${F.customRole}`),
        entity(kind, undefined, 404, 'check grant (HEAD): not assigned', 'HEAD', `${base}/${F.nopw}/roles/${F.customRole}`),
        entity(kind, undefined, 404, 'check grant (HEAD): unknown target', 'HEAD', `${I}/${kind}/${UNKNOWN}/users/${F.nopw}/roles/${F.customRole}`),
        entity(kind, undefined, 403, 'check grant: as member', 'GET', `${base}/${F.memberA}/roles/${F.memberRole}`, 'member'),
        entity(kind, undefined, 404, 'revoke: not assigned', 'DELETE', `${base}/${F.nopw}/roles/${F.customRole}`),
        entity(kind, undefined, 403, 'revoke: as member', 'DELETE', `${base}/${F.memberA}/roles/${F.memberRole}`, 'member'),
        entity(kind, undefined, 404, 'list grants: unknown target', 'GET', `${I}/${kind}/${UNKNOWN}/users/${F.memberA}/roles`),
        entity(kind, undefined, 403, "list grants: another user's as member", 'GET', `${base}/${F.memberB}/roles`, 'member'),
      );
    }
    cases.push(
      // regions
      entity('regions', { region: { id: 'RegionOne' } }, 409, 'duplicate id'),
      entity('regions', { region: { id: long(65) } }, 400, 'id too long'),
      entity('regions', { region: { id: 5 } }, 400, 'id is a number'),
      entity('regions', { region: { description: long(256) } }, 400, 'description too long'),
      entity('regions', { region: { bogus: 1 } }, 400, 'unknown field'),
      entity('regions', { region: { id: 'bad-input-child', parent_region_id: 'NoSuchRegion' } }, [400, 404], 'unknown parent region'),
      entity('regions', { region: 'RegionTwo' }, 400, 'region is a string'),
      entity('regions', { region: {} }, 403, 'as member', 'POST', `${I}/regions`, 'member'),
      entity('regions', undefined, 404, 'unknown region', 'GET', `${I}/regions/NoSuchRegion`),
      entity('regions', undefined, 404, 'unknown region', 'DELETE', `${I}/regions/NoSuchRegion`),
      entity('regions', undefined, 403, 'as member', 'DELETE', `${I}/regions/RegionOne`, 'member'),
      // services
      entity('services', { service: {} }, 400, 'missing type'),
      entity('services', { service: { type: '' } }, 400, 'empty type'),
      entity('services', { service: { type: 'x', enabled: 'true' } }, 400, 'enabled is a string'),
      entity('services', { service: { type: 'x', bogus: 1 } }, 400, 'unknown field'),
      entity('services', { service: { type: 'x' } }, 403, 'as member', 'POST', `${I}/services`, 'member'),
      entity('services', undefined, 404, 'unknown service', 'GET', `${I}/services/${UNKNOWN}`),
      entity('services', { service: { type: 5 } }, 400, 'type is a number', 'PATCH', `${I}/services/${F.customService}`),
      entity('services', { service: { type: 'x' } }, 404, 'unknown service', 'PATCH', `${I}/services/${UNKNOWN}`),
      entity('services', { service: { type: 'x' } }, 403, 'as member', 'PATCH', `${I}/services/${F.customService}`, 'member'),
      entity('services', undefined, 404, 'unknown service', 'DELETE', `${I}/services/${UNKNOWN}`),
      entity('services', undefined, 403, 'as member', 'DELETE', `${I}/services/${F.customService}`, 'member'),
      // endpoints
      entity('endpoints', { endpoint: { interface: 'public', service_id: F.customService } }, 400, 'missing url'),
      entity('endpoints', { endpoint: { interface: 'everywhere', service_id: F.customService, url: 'http://x' } }, 400, 'bad interface'),
      entity('endpoints', { endpoint: { interface: 'public', service_id: F.customService, url: 'not a url' } }, 400, 'bad url'),
      entity('endpoints', { endpoint: { interface: 'public', service_id: F.customService, url: 'http://x', enabled: 'no' } }, 400, 'enabled is a string'),
      entity('endpoints', { endpoint: { interface: 'public', service_id: UNKNOWN, url: 'http://x' } }, [400, 404], 'unknown service'),
      entity('endpoints', { endpoint: { interface: 'public', service_id: F.customService, url: 'http://x', region_id: 'NoSuchRegion' } }, [400, 404], 'unknown region'),
      entity('endpoints', { endpoint: { interface: 'public', service_id: F.customService, url: 'http://x', bogus: 1 } }, 400, 'unknown field'),
      entity('endpoints', { endpoint: { interface: 'public', service_id: F.customService, url: 'http://x' } }, 403, 'as member', 'POST', `${I}/endpoints`, 'member'),
      entity('endpoints', undefined, 404, 'unknown endpoint', 'GET', `${I}/endpoints/${UNKNOWN}`),
      entity('endpoints', { endpoint: { interface: 'sideways' } }, 400, 'bad interface', 'PATCH', `${I}/endpoints/${F.customEndpoint}`),
      entity('endpoints', { endpoint: { url: 'nope' } }, 400, 'bad url', 'PATCH', `${I}/endpoints/${F.customEndpoint}`),
      entity('endpoints', { endpoint: { service_id: UNKNOWN } }, [400, 404], 'unknown service', 'PATCH', `${I}/endpoints/${F.customEndpoint}`),
      entity('endpoints', { endpoint: { region_id: 'NoSuchRegion' } }, [400, 404], 'unknown region', 'PATCH', `${I}/endpoints/${F.customEndpoint}`),
      entity('endpoints', { endpoint: { url: 'http://y' } }, 404, 'unknown endpoint', 'PATCH', `${I}/endpoints/${UNKNOWN}`),
      entity('endpoints', { endpoint: { url: 'http://y' } }, 403, 'as member', 'PATCH', `${I}/endpoints/${F.customEndpoint}`, 'member'),
      entity('endpoints', undefined, 404, 'unknown endpoint', 'DELETE', `${I}/endpoints/${UNKNOWN}`),
      entity('endpoints', undefined, 403, 'as member', 'DELETE', `${I}/endpoints/${F.customEndpoint}`, 'member'),
      // access rules (/v3/users/{id}/access_rules)
      entity('access_rules', undefined, 404, 'unknown rule', 'GET', `${I}/users/${F.memberA}/access_rules/${UNKNOWN}`),
      entity('access_rules', undefined, 404, 'unknown rule', 'DELETE', `${I}/users/${F.memberA}/access_rules/${UNKNOWN}`),
      entity('access_rules', undefined, 404, 'unknown user', 'GET', `${I}/users/${UNKNOWN}/access_rules`),
      entity('access_rules', undefined, 403, "another user's, as member", 'GET', `${I}/users/${F.memberB}/access_rules`, 'member'),
      entity('access_rules', undefined, 403, "another user's, as member", 'DELETE', `${I}/users/${F.memberB}/access_rules/${UNKNOWN}`, 'member'),
      // OS-TRUST trusts
      ...((): Case[] => {
        const trust = (extra: Record<string, unknown>) => ({ trust: { trustor_user_id: F.memberA, trustee_user_id: F.memberB, impersonation: false, project_id: F.p1, roles: [{ name: 'member' }], ...extra } });
        const T = 'OS-TRUST/trusts';
        return [
          entity(T, trust({ trustor_user_id: F.readerA }), 403, 'trustor is not the caller', 'POST', `${I}/${T}`, 'member'),
          entity(T, trust({ trustee_user_id: UNKNOWN }), 404, 'unknown trustee', 'POST', `${I}/${T}`, 'member'),
          entity(T, trust({ project_id: UNKNOWN }), 404, 'unknown project', 'POST', `${I}/${T}`, 'member'),
          entity(T, trust({ project_id: null }), 400, 'roles without a project', 'POST', `${I}/${T}`, 'member'),
          entity(T, trust({ roles: [{ name: 'admin' }] }), 403, 'a role the trustor does not hold', 'POST', `${I}/${T}`, 'member'),
          entity(T, trust({ roles: [{ name: 'no-such-role' }] }), 404, 'unknown role', 'POST', `${I}/${T}`, 'member'),
          entity(T, trust({ roles: [{}] }), 400, 'role without id or name', 'POST', `${I}/${T}`, 'member'),
          entity(T, trust({ impersonation: undefined }), 400, 'missing impersonation', 'POST', `${I}/${T}`, 'member'),
          entity(T, trust({ impersonation: 'yes' }), 400, 'impersonation is a string', 'POST', `${I}/${T}`, 'member'),
          entity(T, trust({ remaining_uses: 0 }), 400, 'remaining_uses 0', 'POST', `${I}/${T}`, 'member'),
          entity(T, trust({ expires_at: '2001-01-01T00:00:00Z' }), 400, 'expires_at in the past', 'POST', `${I}/${T}`, 'member'),
          entity(T, trust({ expires_at: 'tomorrow' }), 400, 'expires_at not a time', 'POST', `${I}/${T}`, 'member'),
          entity(T, trust({ allow_redelegation: true }), 403, 'redelegation', 'POST', `${I}/${T}`, 'member'),
          entity(T, trust({ bogus: 1 }), 400, 'unknown field', 'POST', `${I}/${T}`, 'member'),
          entity(T, { trust: {} }, 400, 'empty trust', 'POST', `${I}/${T}`, 'member'),
          entity(T, undefined, 403, "another user's trusts, as member", 'GET', `${I}/${T}?trustor_user_id=${F.memberB}`, 'member'),
          entity(T, undefined, 404, 'unknown trust', 'GET', `${I}/${T}/${UNKNOWN}`),
          entity(T, undefined, 404, "unknown trust's roles", 'GET', `${I}/${T}/${UNKNOWN}/roles`),
          entity(T, undefined, 404, "unknown trust's role", 'GET', `${I}/${T}/${UNKNOWN}/roles/${UNKNOWN}`, 'member'),
          entity(T, undefined, 404, 'unknown trust', 'DELETE', `${I}/${T}/${UNKNOWN}`),
          // Keystone builds the policy target from the trust, so an unknown one is a 404 even for a member.
          entity(T, undefined, 404, 'unknown trust, as member', 'DELETE', `${I}/${T}/${UNKNOWN}`, 'member'),
        ];
      })(),
      // unknown routes
      { name: 'GET /identity/v3/nope: unknown route', method: 'GET', path: `${I}/nope`, as: 'admin', expect: 404 },
      { name: 'GET /identity/v2.0: unknown version', method: 'GET', path: '/identity/v2.0', as: 'admin', expect: 404 },
    );
    return cases;
  }

  function volumeCases(): Case[] {
    const V = '/volume/v3/{P}';
    const nonUtf8Name = Buffer.concat([Buffer.from('{"volume": {"size": 1, "name": "'), Buffer.from([0xff, 0xfe]), Buffer.from('"}}')]);
    const c = (name: string, method: string, path: string, body: unknown, expect: number | number[], as: Caller = 'member', extra: Partial<Case> = {}): Case => ({
      name: `${method} ${path.replace(V, '').replace('/volume/v3', '')}: ${name}`, method, path, as, body, expect, ...extra,
    });
    const create = (name: string, volume: unknown, expect: number | number[] = 400, as: Caller = 'member', extra: Partial<Case> = {}) =>
      c(name, 'POST', `${V}/volumes`, { volume }, expect, as, extra);
    const update = (name: string, volume: unknown, expect: number | number[] = 400, as: Caller = 'member') => c(name, 'PUT', `${V}/volumes/${F.volA}`, { volume }, expect, as);
    const action = (name: string, body: unknown, expect: number | number[] = 400, as: Caller = 'member', id = F.volA, extra: Partial<Case> = {}) =>
      c(name, 'POST', `${V}/volumes/${id}/action`, body, expect, as, extra);
    const at40 = { headers: { 'OpenStack-API-Version': 'volume 3.40' } };
    const cases: Case[] = [
      // ---- volume create ----
      create('unknown field', { size: 1, bogus: 1 }),
      create("unknown field 'constructor'", { size: 1, constructor: 1 }),
      create("unknown field 'toString'", { size: 1, toString: 'x' }),
      create("unknown field 'valueOf'", { size: 1, valueOf: 1 }),
      c("unknown field '__proto__'", 'POST', `${V}/volumes`, undefined, 400, 'member', { raw: '{"volume": {"size": 1, "__proto__": {"size": 2}}}' }),
      c('unknown top-level field', 'POST', `${V}/volumes`, { volume: { size: 1 }, extra: {} }, 400),
      c('missing volume', 'POST', `${V}/volumes`, {}, 400),
      c('volume is null', 'POST', `${V}/volumes`, { volume: null }, 400),
      c('volume is an array', 'POST', `${V}/volumes`, { volume: [{ size: 1 }] }, 400),
      c('volume is a string', 'POST', `${V}/volumes`, { volume: 'big' }, 400),
      create('missing size', {}),
      create('size null', { size: null }),
      create('size zero', { size: 0 }),
      create('size negative', { size: -1 }),
      create('size -0', { size: -0 }),
      create('size fractional', { size: 1.5 }),
      create('size 2**53', { size: 2 ** 53 }),
      create('size 1e308', { size: 1e308 }),
      c('size 1e309 (Infinity)', 'POST', `${V}/volumes`, undefined, 400, 'member', { raw: '{"volume": {"size": 1e309}}' }),
      create('size "99999999999999999999"', { size: '99999999999999999999' }),
      create('size "abc"', { size: 'abc' }),
      create('size "1.5"', { size: '1.5' }),
      create('size "1; DROP TABLE volumes"', { size: '1; DROP TABLE volumes' }),
      create('size true', { size: true }),
      create('size array', { size: [1] }),
      create('size object', { size: { gb: 1 } }),
      create('size over the 1 PiB cap', { size: 1024 * 1024 + 1 }),
      create('size over the gigabytes quota', { size: 1001 }, 413),
      create('name too long', { size: 1, name: long(256) }),
      create('name is an object', { size: 1, name: { a: 1 } }),
      create('name is a number', { size: 1, name: 5 }),
      create('description too long', { size: 1, description: long(65536) }),
      create('display_name is an array', { size: 1, display_name: ['x'] }),
      create('metadata is a string', { size: 1, metadata: 'k=v' }),
      create('metadata is an array', { size: 1, metadata: [['k', 'v']] }),
      create('metadata key too long', { size: 1, metadata: { [long(256)]: 'v' } }),
      create('metadata empty key', { size: 1, metadata: { '': 'v' } }),
      create('metadata value too long', { size: 1, metadata: { k: long(256, 'v') } }),
      create('metadata value is a number', { size: 1, metadata: { k: 1 } }),
      create('metadata value is null', { size: 1, metadata: { k: null } }),
      create('metadata value is an object', { size: 1, metadata: { k: { a: 'b' } } }),
      create('metadata with 129 keys', { size: 1, metadata: Object.fromEntries(Array.from({ length: 129 }, (_, i) => [`k${i}`, 'v'])) }),
      create('volume_type unknown', { size: 1, volume_type: 'no-such-type' }, 404),
      create('volume_type is a number', { size: 1, volume_type: 5 }),
      create('volume_type private to another project', { size: 1, volume_type: F.privType }, 404),
      create('availability_zone unknown', { size: 1, availability_zone: 'nowhere' }),
      create('availability_zone is an object', { size: 1, availability_zone: {} }),
      create('source_volid not a UUID', { source_volid: BAD_UUID }),
      create('source_volid unknown', { source_volid: UNKNOWN }, 404),
      create("source_volid of another project's volume", { source_volid: F.volB }, 404),
      create('source_volid smaller size', { source_volid: F.volA, size: 0 }),
      create('snapshot_id not a UUID', { snapshot_id: 'snap' }),
      create('snapshot_id is a number', { snapshot_id: 5 }),
      create('snapshot_id unknown', { snapshot_id: UNKNOWN }, 404),
      create("snapshot_id of another project's snapshot", { snapshot_id: F.snapB }, 404),
      create('backup_id not a UUID', { size: 1, backup_id: 'backup' }),
      create('backup_id unknown', { size: 1, backup_id: UNKNOWN }, 404),
      create('group_id unknown', { size: 1, group_id: UNKNOWN }, 404),
      create('consistencygroup_id not a UUID', { size: 1, consistencygroup_id: 'cg' }),
      create('imageRef unknown', { size: 1, imageRef: UNKNOWN }, [400, 404]),
      create('imageRef is a number', { size: 1, imageRef: 5 }),
      create('imageRef not a UUID', { size: 1, imageRef: 'cirros' }),
      create('imageRef with a path', { size: 1, imageRef: '../../v2/images' }),
      create('imageRef and source_volid', { size: 1, imageRef: UNKNOWN, source_volid: F.volA }),
      create('imageRef too long', { size: 1, imageRef: long(256) }),
      create('multiattach "maybe"', { size: 1, multiattach: 'maybe' }),
      create('multiattach not supported', { size: 1, multiattach: true }),
      c('scheduler hints is a string', 'POST', `${V}/volumes`, { volume: { size: 1 }, 'OS-SCH-HNT:scheduler_hints': 'near' }, 400),
      c('non-UTF-8 bytes in name', 'POST', `${V}/volumes`, undefined, 400, 'member', { raw: nonUtf8Name }),
      c('deeply nested arrays', 'POST', `${V}/volumes`, undefined, 400, 'member', { raw: '['.repeat(50000) + ']'.repeat(50000) }),
      c('JSON with trailing garbage', 'POST', `${V}/volumes`, undefined, 400, 'member', { raw: '{"volume": {"size": 1}} x' }),
      c('JSON with a BOM', 'POST', `${V}/volumes`, undefined, 400, 'member', { raw: '\ufeff{"volume": {"size": 1}}' }),
      c('Content-Type application/x-www-form-urlencoded', 'POST', `${V}/volumes`, { volume: { size: 1 } }, 415, 'member', { contentType: 'application/x-www-form-urlencoded' }),
      create('as reader', { size: 1 }, 403, 'reader'),
      create('unscoped token', { size: 1 }, 403, 'unscoped'),
      c('domain-scoped admin token', 'POST', '/volume/v3/volumes', { volume: { size: 1 } }, 403, 'domainAdmin'),
      c('as reader, no project in URL', 'POST', '/volume/v3/volumes', { volume: { size: 1 } }, 403, 'reader'),
      c('size zero, no project in URL', 'POST', '/volume/v3/volumes', { volume: { size: 0 } }, 400),
      c('unscoped token, no project in URL', 'GET', '/volume/v3/volumes', undefined, 403, 'unscoped'),
      c('unscoped token, project in URL', 'GET', `/volume/v3/${F.p1}/volumes`, undefined, 400, 'unscoped'),
      // ---- volume list ----
      ...(['volumes', 'volumes/detail', 'snapshots', 'snapshots/detail'] as const).flatMap((list) => [
        c('limit=-1', 'GET', `${V}/${list}?limit=-1`, undefined, 400),
        c('limit=abc', 'GET', `${V}/${list}?limit=abc`, undefined, 400),
        c('limit=1.5', 'GET', `${V}/${list}?limit=1.5`, undefined, 400),
        c('limit empty', 'GET', `${V}/${list}?limit=`, undefined, 400),
        c('sort=bogus:desc', 'GET', `${V}/${list}?sort=bogus:desc`, undefined, 400),
        c('sort=name:sideways', 'GET', `${V}/${list}?sort=name:sideways`, undefined, 400),
        c('sort=:desc', 'GET', `${V}/${list}?sort=:desc`, undefined, 400),
        c('sort_key=bogus', 'GET', `${V}/${list}?sort_key=bogus`, undefined, 400),
        c('sort_key and sort', 'GET', `${V}/${list}?sort_key=name&sort=name`, undefined, 400),
        c('sort_dir=up', 'GET', `${V}/${list}?sort_dir=up`, undefined, 400),
        c('marker=unknown-id', 'GET', `${V}/${list}?marker=unknown-id`, undefined, [400, 404]),
        c('marker=unknown UUID', 'GET', `${V}/${list}?marker=${UNKNOWN}`, undefined, [400, 404]),
        c("marker of another project's resource", 'GET', `${V}/${list}?marker=${list.startsWith('volumes') ? F.volB : F.snapB}`, undefined, [400, 404]),
        c('unknown filter', 'GET', `${V}/${list}?colour=red`, undefined, 400),
        c('metadata filter not a dict', 'GET', `${V}/${list}?metadata=notadict`, undefined, 400),
        c('all_tenants=maybe', 'GET', `${V}/${list}?all_tenants=maybe`, undefined, 400),
        c('with_count=maybe at 3.45', 'GET', `${V}/${list}?with_count=maybe`, undefined, 400, 'member', { headers: { 'OpenStack-API-Version': 'volume 3.45' } }),
        c('limit=-1, no project in URL', 'GET', `/volume/v3/${list}?limit=-1`, undefined, 400),
      ]),
      c('bootable=maybe', 'GET', `${V}/volumes?bootable=maybe`, undefined, 400),
      // ---- one volume ----
      c('id not a UUID', 'GET', `${V}/volumes/${BAD_UUID}`, undefined, 404),
      c('unknown id', 'GET', `${V}/volumes/${UNKNOWN}`, undefined, 404),
      c('id with bad percent-encoding', 'GET', `${V}/volumes/%E0%A4%A`, undefined, 400),
      c('id with NUL', 'GET', `${V}/volumes/a%00b`, undefined, 404),
      c('very long id', 'GET', `${V}/volumes/${long(4000, 'a')}`, undefined, 404),
      c("another project's volume", 'GET', `${V}/volumes/${F.volB}`, undefined, 404),
      c("another project's volume, no project in URL", 'GET', `/volume/v3/volumes/${F.volB}`, undefined, 404),
      update('empty update', {}),
      c('missing volume', 'PUT', `${V}/volumes/${F.volA}`, { name: 'x' }, 400),
      update('unknown field', { name: 'x', status: 'available' }),
      update("unknown field 'size'", { size: 5 }),
      update("unknown field 'constructor'", { constructor: 'x' }),
      update('name is a number', { name: 5 }),
      update('name too long', { name: long(256) }),
      update('metadata key too long', { metadata: { [long(256)]: 'v' } }),
      update('metadata value too long', { metadata: { k: long(256) } }),
      update('metadata is null', { metadata: null }),
      c('non-UTF-8 bytes in name', 'PUT', `${V}/volumes/${F.volA}`, undefined, 400, 'member', { raw: Buffer.concat([Buffer.from('{"volume": {"name": "'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}}')]) }),
      update('as reader', { name: 'x' }, 403, 'reader'),
      c("another project's volume", 'PUT', `${V}/volumes/${F.volB}`, { volume: { name: 'x' } }, 404),
      c('unknown id', 'PUT', `${V}/volumes/${UNKNOWN}`, { volume: { name: 'x' } }, 404),
      c('id not a UUID', 'PUT', `${V}/volumes/${BAD_UUID}`, { volume: { name: 'x' } }, 404),
      c('as reader', 'DELETE', `${V}/volumes/${F.volA}`, undefined, 403, 'reader'),
      c("another project's volume", 'DELETE', `${V}/volumes/${F.volB}`, undefined, 404),
      c('unknown id', 'DELETE', `${V}/volumes/${UNKNOWN}`, undefined, 404),
      c('id not a UUID', 'DELETE', `${V}/volumes/${BAD_UUID}`, undefined, 404),
      c('cascade=maybe', 'DELETE', `${V}/volumes/${F.volA}?cascade=maybe`, undefined, 400),
      c('force=maybe', 'DELETE', `${V}/volumes/${F.volA}?force=maybe`, undefined, 400),
      c('force as member', 'DELETE', `${V}/volumes/${F.volA}?force=true`, undefined, 403),
      c('has snapshots', 'DELETE', `${V}/volumes/${F.volA}`, undefined, [400, 409]),
      c('summary with unscoped token', 'GET', '/volume/v3/volumes/summary', undefined, 403, 'unscoped', { headers: { 'OpenStack-API-Version': 'volume 3.12' } }),
      // Cinder serves the summary from 3.12; below it /volumes/summary is no route.
      c('summary before 3.12', 'GET', `${V}/volumes/summary`, undefined, 404),
      // ---- volume actions ----
      action('unknown action', { 'os-bogus': {} }),
      action("action 'constructor'", { constructor: {} }),
      action("action 'toString'", { toString: {} }),
      action("action 'hasOwnProperty'", { hasOwnProperty: {} }),
      action("action '__proto__'", undefined, 400, 'member', F.volA, { raw: '{"__proto__": {}}' }),
      action('empty object', {}),
      action('two actions', { 'os-extend': { new_size: 2 }, 'os-set_bootable': { bootable: true } }),
      action('os-extend without new_size', { 'os-extend': {} }),
      action('os-volume_upload_image without image_name', { 'os-volume_upload_image': { disk_format: 'raw' } }),
      action('os-volume_upload_image empty image_name', { 'os-volume_upload_image': { image_name: '' } }),
      action('os-volume_upload_image unknown disk_format', { 'os-volume_upload_image': { image_name: 'x', disk_format: 'iso9660' } }),
      action('os-volume_upload_image unknown container_format', { 'os-volume_upload_image': { image_name: 'x', container_format: 'tgz' } }),
      action('os-volume_upload_image force "maybe"', { 'os-volume_upload_image': { image_name: 'x', force: 'maybe' } }),
      action('os-volume_upload_image unknown field', { 'os-volume_upload_image': { image_name: 'x', bogus: 1 } }),
      action('os-volume_upload_image visibility before 3.1', { 'os-volume_upload_image': { image_name: 'x', visibility: 'public' } }),
      action('os-volume_upload_image as reader', { 'os-volume_upload_image': { image_name: 'x' } }, 403, 'reader'),
      action("os-volume_upload_image of another project's volume", { 'os-volume_upload_image': { image_name: 'x' } }, 404, 'member', F.volB),
      action('os-set_image_metadata without metadata', { 'os-set_image_metadata': {} }),
      action('os-set_image_metadata value not a string', { 'os-set_image_metadata': { metadata: { k: 5 } } }),
      action('os-unset_image_metadata unknown key', { 'os-unset_image_metadata': { key: 'nope' } }, 404),
      action('os-unset_image_metadata without key', { 'os-unset_image_metadata': {} }),
      action('os-extend null', { 'os-extend': null }),
      action('os-extend is a string', { 'os-extend': '2' }),
      action('os-extend is an array', { 'os-extend': [2] }),
      action('os-extend new_size same', { 'os-extend': { new_size: 1 } }),
      action('os-extend new_size zero', { 'os-extend': { new_size: 0 } }),
      action('os-extend new_size negative', { 'os-extend': { new_size: -5 } }),
      action('os-extend new_size 2**53', { 'os-extend': { new_size: 2 ** 53 } }),
      action('os-extend new_size 1e308', { 'os-extend': { new_size: 1e308 } }),
      action('os-extend new_size "99999999999999999999"', { 'os-extend': { new_size: '99999999999999999999' } }),
      action('os-extend new_size "abc"', { 'os-extend': { new_size: 'abc' } }),
      action('os-extend new_size over quota', { 'os-extend': { new_size: 1001 } }, 413),
      action('os-extend unknown field', { 'os-extend': { new_size: 2, force: true } }),
      action('os-extend as reader', { 'os-extend': { new_size: 2 } }, 403, 'reader'),
      action("os-extend another project's volume", { 'os-extend': { new_size: 2 } }, 404, 'member', F.volB),
      action('os-extend unknown volume', { 'os-extend': { new_size: 2 } }, 404, 'member', UNKNOWN),
      action('os-extend volume id not a UUID', { 'os-extend': { new_size: 2 } }, 404, 'member', BAD_UUID),
      action('os-set_bootable "maybe"', { 'os-set_bootable': { bootable: 'maybe' } }),
      action('os-set_bootable missing', { 'os-set_bootable': {} }),
      action('os-set_bootable as reader', { 'os-set_bootable': { bootable: true } }, 403, 'reader'),
      action("os-set_bootable another project's volume", { 'os-set_bootable': { bootable: true } }, 404, 'member', F.volB),
      action('os-update_readonly_flag "maybe"', { 'os-update_readonly_flag': { readonly: 'maybe' } }),
      action('os-update_readonly_flag as reader', { 'os-update_readonly_flag': { readonly: true } }, 403, 'reader'),
      action('os-reset_status as member', { 'os-reset_status': { status: 'error' } }, 403),
      action('os-reset_status bogus status', { 'os-reset_status': { status: 'bogus' } }, 400, 'admin'),
      action('os-reset_status bogus attach_status', { 'os-reset_status': { attach_status: 'glued' } }, 400, 'admin'),
      action('os-reset_status status is a number', { 'os-reset_status': { status: 5 } }, 400, 'admin'),
      action('os-force_delete as member', { 'os-force_delete': {} }, 403),
      action('os-force_delete unknown volume', { 'os-force_delete': {} }, 404, 'admin', UNKNOWN),
      action('os-reserve as reader', { 'os-reserve': {} }, 403, 'reader'),
      action("os-reserve another project's volume", { 'os-reserve': {} }, 404, 'member', F.volB),
      action('os-begin_detaching on an available volume', { 'os-begin_detaching': {} }, 409),
      action('os-initialize_connection without connector', { 'os-initialize_connection': {} }),
      action('os-initialize_connection connector is a string', { 'os-initialize_connection': { connector: 'iqn' } }),
      action("os-initialize_connection another project's volume", { 'os-initialize_connection': { connector: {} } }, 404, 'member', F.volB),
      action('os-initialize_connection as reader', { 'os-initialize_connection': { connector: {} } }, 403, 'reader'),
      action('os-terminate_connection connector is an array', { 'os-terminate_connection': { connector: [] } }),
      action('os-attach without mountpoint', { 'os-attach': { instance_uuid: UNKNOWN } }),
      action('os-attach empty mountpoint', { 'os-attach': { mountpoint: '' } }),
      action('os-attach instance_uuid not a UUID', { 'os-attach': { mountpoint: '/dev/vdb', instance_uuid: 'server-1' } }),
      action('os-attach bad mode', { 'os-attach': { mountpoint: '/dev/vdb', mode: 'rx' } }),
      action('os-attach as reader', { 'os-attach': { mountpoint: '/dev/vdb' } }, 403, 'reader'),
      action('os-detach attachment_id not a UUID', { 'os-detach': { attachment_id: 'att' } }),
      action('os-detach on an available volume', { 'os-detach': { attachment_id: UNKNOWN } }, [404, 409]),
      action('revert below 3.40', { revert: { snapshot_id: F.snapA } }, [400, 404]),
      action('revert snapshot_id not a UUID', { revert: { snapshot_id: 'snap' } }, 400, 'member', F.volA, at40),
      action('revert without snapshot_id', { revert: {} }, 400, 'member', F.volA, at40),
      action('revert unknown snapshot', { revert: { snapshot_id: UNKNOWN } }, 404, 'member', F.volA, at40),
      action("revert to another project's snapshot", { revert: { snapshot_id: F.snapB } }, 404, 'member', F.volA, at40),
      action('revert as reader', { revert: { snapshot_id: F.snapA } }, 403, 'reader', F.volA, at40),
      action('os-extend, no project in URL, as reader', undefined, 403, 'reader', F.volA, { path: `/volume/v3/volumes/${F.volA}/action`, body: { 'os-extend': { new_size: 2 } } }),
      // ---- snapshots ----
      c('missing snapshot', 'POST', `${V}/snapshots`, {}, 400),
      c('missing volume_id', 'POST', `${V}/snapshots`, { snapshot: { name: 's' } }, 400),
      c('volume_id not a UUID', 'POST', `${V}/snapshots`, { snapshot: { volume_id: BAD_UUID } }, 400),
      c('volume_id is a number', 'POST', `${V}/snapshots`, { snapshot: { volume_id: 5 } }, 400),
      c('volume_id unknown', 'POST', `${V}/snapshots`, { snapshot: { volume_id: UNKNOWN } }, 404),
      c("volume_id of another project's volume", 'POST', `${V}/snapshots`, { snapshot: { volume_id: F.volB } }, 404),
      c('unknown field', 'POST', `${V}/snapshots`, { snapshot: { volume_id: F.volA, size: 5 } }, 400),
      c("unknown field 'constructor'", 'POST', `${V}/snapshots`, { snapshot: { volume_id: F.volA, constructor: 5 } }, 400),
      c('force "maybe"', 'POST', `${V}/snapshots`, { snapshot: { volume_id: F.volA, force: 'maybe' } }, 400),
      c('name too long', 'POST', `${V}/snapshots`, { snapshot: { volume_id: F.volA, name: long(256) } }, 400),
      c('metadata key too long', 'POST', `${V}/snapshots`, { snapshot: { volume_id: F.volA, metadata: { [long(256)]: 'v' } } }, 400),
      c('metadata value is a number', 'POST', `${V}/snapshots`, { snapshot: { volume_id: F.volA, metadata: { k: 5 } } }, 400),
      c('as reader', 'POST', `${V}/snapshots`, { snapshot: { volume_id: F.volA } }, 403, 'reader'),
      c('unknown id', 'GET', `${V}/snapshots/${UNKNOWN}`, undefined, 404),
      c('id not a UUID', 'GET', `${V}/snapshots/${BAD_UUID}`, undefined, 404),
      c("another project's snapshot", 'GET', `${V}/snapshots/${F.snapB}`, undefined, 404),
      c('empty update', 'PUT', `${V}/snapshots/${F.snapA}`, { snapshot: {} }, 400),
      c('unknown field', 'PUT', `${V}/snapshots/${F.snapA}`, { snapshot: { status: 'error' } }, 400),
      c('name is a number', 'PUT', `${V}/snapshots/${F.snapA}`, { snapshot: { name: 5 } }, 400),
      c('as reader', 'PUT', `${V}/snapshots/${F.snapA}`, { snapshot: { name: 'x' } }, 403, 'reader'),
      c("another project's snapshot", 'PUT', `${V}/snapshots/${F.snapB}`, { snapshot: { name: 'x' } }, 404),
      c('unknown id', 'PUT', `${V}/snapshots/${UNKNOWN}`, { snapshot: { name: 'x' } }, 404),
      c('as reader', 'DELETE', `${V}/snapshots/${F.snapA}`, undefined, 403, 'reader'),
      c("another project's snapshot", 'DELETE', `${V}/snapshots/${F.snapB}`, undefined, 404),
      c('unknown id', 'DELETE', `${V}/snapshots/${UNKNOWN}`, undefined, 404),
      c('unknown action', 'POST', `${V}/snapshots/${F.snapA}/action`, { 'os-bogus': {} }, 400),
      c("action 'constructor'", 'POST', `${V}/snapshots/${F.snapA}/action`, { constructor: {} }, 400),
      c('empty action', 'POST', `${V}/snapshots/${F.snapA}/action`, {}, 400),
      c('two actions', 'POST', `${V}/snapshots/${F.snapA}/action`, { 'os-force_delete': {}, 'os-reset_status': { status: 'error' } }, 400),
      c('os-reset_status as member', 'POST', `${V}/snapshots/${F.snapA}/action`, { 'os-reset_status': { status: 'error' } }, 403),
      c('os-reset_status bogus status', 'POST', `${V}/snapshots/${F.snapA}/action`, { 'os-reset_status': { status: 'bogus' } }, 400, 'admin'),
      c('os-reset_status without status', 'POST', `${V}/snapshots/${F.snapA}/action`, { 'os-reset_status': {} }, 400, 'admin'),
      c('os-reset_status args is a string', 'POST', `${V}/snapshots/${F.snapA}/action`, { 'os-reset_status': 'error' }, 400, 'admin'),
      c('os-reset_status unknown snapshot', 'POST', `${V}/snapshots/${UNKNOWN}/action`, { 'os-reset_status': { status: 'error' } }, 404, 'admin'),
      c('os-force_delete as member', 'POST', `${V}/snapshots/${F.snapA}/action`, { 'os-force_delete': {} }, 403),
      // ---- types ----
      c('unknown id', 'GET', `${V}/types/${UNKNOWN}`, undefined, 404),
      c('private type of another project', 'GET', `${V}/types/${F.privType}`, undefined, 404),
      c('is_public=maybe', 'GET', `${V}/types?is_public=maybe`, undefined, 400, 'admin'),
      c('as member', 'POST', `${V}/types`, { volume_type: { name: 'x' } }, 403),
      c('missing volume_type', 'POST', `${V}/types`, { name: 'x' }, 400, 'admin'),
      c('missing name', 'POST', `${V}/types`, { volume_type: {} }, 400, 'admin'),
      c('empty name', 'POST', `${V}/types`, { volume_type: { name: '' } }, 400, 'admin'),
      c('blank name', 'POST', `${V}/types`, { volume_type: { name: '   ' } }, 400, 'admin'),
      c('name too long', 'POST', `${V}/types`, { volume_type: { name: long(256) } }, 400, 'admin'),
      c('name is a number', 'POST', `${V}/types`, { volume_type: { name: 5 } }, 400, 'admin'),
      c('duplicate name', 'POST', `${V}/types`, { volume_type: { name: 'bad-input-private' } }, 409, 'admin'),
      c('unknown field', 'POST', `${V}/types`, { volume_type: { name: 'x', qos: 1 } }, 400, 'admin'),
      c('is_public "maybe"', 'POST', `${V}/types`, { volume_type: { name: 'x', is_public: 'maybe' } }, 400, 'admin'),
      c('extra_specs value is a number', 'POST', `${V}/types`, { volume_type: { name: 'x', extra_specs: { k: 1 } } }, 400, 'admin'),
      c('extra_specs key too long', 'POST', `${V}/types`, { volume_type: { name: 'x', extra_specs: { [long(256)]: 'v' } } }, 400, 'admin'),
      c('extra_specs empty key', 'POST', `${V}/types`, { volume_type: { name: 'x', extra_specs: { '': 'v' } } }, 400, 'admin'),
      c('extra_specs value too long', 'POST', `${V}/types`, { volume_type: { name: 'x', extra_specs: { k: long(256) } } }, 400, 'admin'),
      c('as member', 'PUT', `${V}/types/${F.privType}`, { volume_type: { name: 'x' } }, 403),
      c('empty name', 'PUT', `${V}/types/${F.privType}`, { volume_type: { name: '' } }, 400, 'admin'),
      c('rename to an existing name', 'PUT', `${V}/types/${F.privType}`, { volume_type: { name: '__DEFAULT__' } }, 409, 'admin'),
      c('rename the default type', 'PUT', `${V}/types/${F.defaultType}`, { volume_type: { name: 'renamed' } }, 400, 'admin'),
      c('unknown field', 'PUT', `${V}/types/${F.privType}`, { volume_type: { extra_specs: {} } }, 400, 'admin'),
      c('unknown id', 'PUT', `${V}/types/${UNKNOWN}`, { volume_type: { name: 'x' } }, 404, 'admin'),
      c('as member', 'DELETE', `${V}/types/${F.privType}`, undefined, 403),
      c('unknown id', 'DELETE', `${V}/types/${UNKNOWN}`, undefined, 404, 'admin'),
      c('the default type', 'DELETE', `${V}/types/${F.defaultType}`, undefined, 400, 'admin'),
      c('as member', 'GET', `${V}/types/${F.privType}/extra_specs`, undefined, 403),
      c('unknown type', 'GET', `${V}/types/${UNKNOWN}/extra_specs`, undefined, 404, 'admin'),
      c('missing extra_specs', 'POST', `${V}/types/${F.privType}/extra_specs`, { k: 'v' }, 400, 'admin'),
      c('value is a number', 'POST', `${V}/types/${F.privType}/extra_specs`, { extra_specs: { k: 5 } }, 400, 'admin'),
      c('key too long', 'POST', `${V}/types/${F.privType}/extra_specs`, { extra_specs: { [long(256)]: 'v' } }, 400, 'admin'),
      c('value too long', 'POST', `${V}/types/${F.privType}/extra_specs`, { extra_specs: { k: long(256) } }, 400, 'admin'),
      c('non-UTF-8 value', 'POST', `${V}/types/${F.privType}/extra_specs`, undefined, 400, 'admin', { raw: Buffer.concat([Buffer.from('{"extra_specs": {"k2": "'), Buffer.from([0xff]), Buffer.from('"}}')]) }),
      c('as member', 'POST', `${V}/types/${F.privType}/extra_specs`, { extra_specs: { k: 'v' } }, 403),
      c('unknown type', 'POST', `${V}/types/${UNKNOWN}/extra_specs`, { extra_specs: { k: 'v' } }, 404, 'admin'),
      c('unknown key', 'GET', `${V}/types/${F.privType}/extra_specs/nope`, undefined, 404, 'admin'),
      c("key 'constructor'", 'GET', `${V}/types/${F.privType}/extra_specs/constructor`, undefined, 404, 'admin'),
      c("key '__proto__'", 'GET', `${V}/types/${F.privType}/extra_specs/__proto__`, undefined, 404, 'admin'),
      c('body and URI mismatch', 'PUT', `${V}/types/${F.privType}/extra_specs/k1`, { k2: 'v' }, 400, 'admin'),
      c('two keys', 'PUT', `${V}/types/${F.privType}/extra_specs/k1`, { k1: 'v', k2: 'v' }, 400, 'admin'),
      c('value too long', 'PUT', `${V}/types/${F.privType}/extra_specs/k1`, { k1: long(256) }, 400, 'admin'),
      c('key too long', 'PUT', `${V}/types/${F.privType}/extra_specs/${long(256)}`, { [long(256)]: 'v' }, 400, 'admin'),
      c("URL key 'toString' with another body key", 'PUT', `${V}/types/${F.privType}/extra_specs/toString`, { k1: 'v' }, 400, 'admin'),
      c('as member', 'PUT', `${V}/types/${F.privType}/extra_specs/k1`, { k1: 'v' }, 403),
      c('unknown key', 'DELETE', `${V}/types/${F.privType}/extra_specs/nope`, undefined, 404, 'admin'),
      c('as member', 'DELETE', `${V}/types/${F.privType}/extra_specs/k1`, undefined, 403),
      c('public type', 'GET', `${V}/types/${F.defaultType}/os-volume-type-access`, undefined, 404, 'admin'),
      c('unknown type', 'GET', `${V}/types/${UNKNOWN}/os-volume-type-access`, undefined, 404, 'admin'),
      c('as member', 'GET', `${V}/types/${F.privType}/os-volume-type-access`, undefined, 403),
      c('empty action', 'POST', `${V}/types/${F.privType}/action`, {}, 400, 'admin'),
      c('unknown action', 'POST', `${V}/types/${F.privType}/action`, { setPublic: {} }, 400, 'admin'),
      c('addProjectAccess without project', 'POST', `${V}/types/${F.privType}/action`, { addProjectAccess: {} }, 400, 'admin'),
      c('addProjectAccess empty project', 'POST', `${V}/types/${F.privType}/action`, { addProjectAccess: { project: '' } }, 400, 'admin'),
      c('addProjectAccess project is a number', 'POST', `${V}/types/${F.privType}/action`, { addProjectAccess: { project: 5 } }, 400, 'admin'),
      c('addProjectAccess duplicate', 'POST', `${V}/types/${F.privType}/action`, { addProjectAccess: { project: F.p2 } }, 409, 'admin'),
      c('removeProjectAccess not granted', 'POST', `${V}/types/${F.privType}/action`, { removeProjectAccess: { project: F.p1 } }, 404, 'admin'),
      c('addProjectAccess on a public type', 'POST', `${V}/types/${F.defaultType}/action`, { addProjectAccess: { project: F.p1 } }, 400, 'admin'),
      c('as member', 'POST', `${V}/types/${F.privType}/action`, { addProjectAccess: { project: F.p1 } }, 403),
      // ---- quotas and limits ----
      c("another project's quotas as member", 'GET', `${V}/os-quota-sets/${F.p2}`, undefined, 403),
      c("another project's default quotas as member", 'GET', `${V}/os-quota-sets/${F.p2}/defaults`, undefined, 403),
      c('usage=maybe', 'GET', `${V}/os-quota-sets/${F.p1}?usage=maybe`, undefined, 400),
      c('as member', 'PUT', `${V}/os-quota-sets/${F.p1}`, { quota_set: { volumes: 100 } }, 403),
      c('missing quota_set', 'PUT', `${V}/os-quota-sets/${F.p1}`, { volumes: 5 }, 400, 'admin'),
      c('limit -2', 'PUT', `${V}/os-quota-sets/${F.p1}`, { quota_set: { volumes: -2 } }, 400, 'admin'),
      c('limit 2**31', 'PUT', `${V}/os-quota-sets/${F.p1}`, { quota_set: { volumes: 2 ** 31 } }, 400, 'admin'),
      c('limit 2**53', 'PUT', `${V}/os-quota-sets/${F.p1}`, { quota_set: { gigabytes: 2 ** 53 } }, 400, 'admin'),
      c('limit 1e308', 'PUT', `${V}/os-quota-sets/${F.p1}`, { quota_set: { gigabytes: 1e308 } }, 400, 'admin'),
      c('limit "99999999999999999999"', 'PUT', `${V}/os-quota-sets/${F.p1}`, { quota_set: { gigabytes: '99999999999999999999' } }, 400, 'admin'),
      c('limit "abc"', 'PUT', `${V}/os-quota-sets/${F.p1}`, { quota_set: { snapshots: 'abc' } }, 400, 'admin'),
      c('limit 1.5', 'PUT', `${V}/os-quota-sets/${F.p1}`, { quota_set: { snapshots: 1.5 } }, 400, 'admin'),
      c('unknown resource', 'PUT', `${V}/os-quota-sets/${F.p1}`, { quota_set: { cores: 5 } }, 400, 'admin'),
      c("unknown resource 'constructor'", 'PUT', `${V}/os-quota-sets/${F.p1}`, { quota_set: { constructor: 5 } }, 400, 'admin'),
      c('skip_validation "maybe"', 'PUT', `${V}/os-quota-sets/${F.p1}`, { quota_set: { volumes: 5, skip_validation: 'maybe' } }, 400, 'admin'),
      c('below usage without skip_validation', 'PUT', `${V}/os-quota-sets/${F.p1}`, { quota_set: { volumes: 0, skip_validation: false } }, 400, 'admin'),
      c('as member', 'DELETE', `${V}/os-quota-sets/${F.p1}`, undefined, 403),
      c("another project's limits at 3.39", 'GET', `${V}/limits?project_id=${F.p2}`, undefined, 403, 'member', { headers: { 'OpenStack-API-Version': 'volume 3.39' } }),
      c('limits with unscoped token', 'GET', '/volume/v3/limits', undefined, 403, 'unscoped'),
      // ---- services, pools ----
      c('as member', 'GET', `${V}/os-services`, undefined, 403),
      c('unknown action', 'PUT', `${V}/os-services/explode`, { host: F.volumeHost }, 404, 'admin'),
      c('missing host', 'PUT', `${V}/os-services/disable`, {}, 400, 'admin'),
      c('host is a number', 'PUT', `${V}/os-services/disable`, { host: 5 }, 400, 'admin'),
      c('unknown host', 'PUT', `${V}/os-services/disable`, { host: 'no-such-host' }, 404, 'admin'),
      c('unknown field', 'PUT', `${V}/os-services/disable`, { host: F.volumeHost, forced_down: true }, 400, 'admin'),
      c('reason too long', 'PUT', `${V}/os-services/disable-log-reason`, { host: F.volumeHost, disabled_reason: long(256) }, 400, 'admin'),
      c('as member', 'PUT', `${V}/os-services/disable`, { host: F.volumeHost }, 403),
      c('as member', 'GET', `${V}/scheduler-stats/get_pools`, undefined, 403),
      c('detail=maybe', 'GET', `${V}/scheduler-stats/get_pools?detail=maybe`, undefined, 400, 'admin'),
      // ---- messages ----
      c('below 3.3', 'GET', `${V}/messages`, undefined, 404),
      c('unknown id at 3.3', 'GET', `${V}/messages/${UNKNOWN}`, undefined, 404, 'member', { headers: { 'OpenStack-API-Version': 'volume 3.3' } }),
      c('id not a UUID at 3.3', 'GET', `${V}/messages/${BAD_UUID}`, undefined, 404, 'member', { headers: { 'OpenStack-API-Version': 'volume 3.3' } }),
      c('unknown id at 3.3', 'DELETE', `${V}/messages/${UNKNOWN}`, undefined, 404, 'member', { headers: { 'OpenStack-API-Version': 'volume 3.3' } }),
      c('as reader at 3.3', 'DELETE', `${V}/messages/${UNKNOWN}`, undefined, 403, 'reader', { headers: { 'OpenStack-API-Version': 'volume 3.3' } }),
      // ---- backup records (export_record / import_record, admin only) ----
      c('export_record as member', 'GET', `${V}/backups/${UNKNOWN}/export_record`, undefined, 403),
      c('export_record of an unknown backup', 'GET', `${V}/backups/${UNKNOWN}/export_record`, undefined, 404, 'admin'),
      c('import_record as member', 'POST', `${V}/backups/import_record`, { 'backup-record': { backup_service: 'posix', backup_url: 'e30=' } }, 403),
      c('import_record without backup-record', 'POST', `${V}/backups/import_record`, { backup_service: 'posix', backup_url: 'e30=' }, 400, 'admin'),
      c('import_record without backup_url', 'POST', `${V}/backups/import_record`, { 'backup-record': { backup_service: 'posix' } }, 400, 'admin'),
      c('import_record backup_url is a number', 'POST', `${V}/backups/import_record`, { 'backup-record': { backup_service: 'posix', backup_url: 5 } }, 400, 'admin'),
      c('import_record unknown field', 'POST', `${V}/backups/import_record`, { 'backup-record': { backup_service: 'posix', backup_url: 'e30=', extra: 1 } }, 400, 'admin'),
      c('import_record unknown service', 'POST', `${V}/backups/import_record`, { 'backup-record': { backup_service: 'cinder.backup.drivers.nfs.NFSBackupDriver', backup_url: 'e30=' } }, 400, 'admin'),
      c('import_record backup_url not base64', 'POST', `${V}/backups/import_record`, { 'backup-record': { backup_service: 'posix', backup_url: '%%%' } }, 400, 'admin'),
      c('import_record backup_url of another JSON', 'POST', `${V}/backups/import_record`, { 'backup-record': { backup_service: 'posix', backup_url: 'e30=' } }, 400, 'admin'),
      c('import_record backup_url too long', 'POST', `${V}/backups/import_record`, { 'backup-record': { backup_service: 'posix', backup_url: 'A'.repeat(100_004) } }, 400, 'admin'),
      // ---- unknown routes and odd headers ----
      c('unknown collection', 'GET', `${V}/backups-and-more`, undefined, 404),
      c('unknown version', 'GET', '/volume/v2/volumes', undefined, 404),
      c('OpenStack-API-Version volume 3.-1', 'GET', `${V}/volumes`, undefined, 400, 'member', { headers: { 'OpenStack-API-Version': 'volume 3.-1' } }),
      c('OpenStack-API-Version volume 3.99999999999999999999', 'GET', `${V}/volumes`, undefined, 406, 'member', { headers: { 'OpenStack-API-Version': 'volume 3.99999999999999999999' } }),
      c('OpenStack-API-Version bare 4.0', 'GET', `${V}/volumes`, undefined, 406, 'member', { headers: { 'OpenStack-API-Version': '4.0' } }),
      c('OpenStack-API-Version with compute and bad volume', 'GET', `${V}/volumes`, undefined, 406, 'member', { headers: { 'OpenStack-API-Version': 'compute 2.1, volume 3.999' } }),
      c('OpenStack-API-Version volume 3.', 'GET', `${V}/volumes`, undefined, 400, 'member', { headers: { 'OpenStack-API-Version': 'volume 3.' } }),
    ];
    // ---- metadata of volumes and snapshots ----
    for (const [kind, id, otherId] of [['volumes', F.volA, F.volB], ['snapshots', F.snapA, F.snapB]] as const) {
      const m = `${V}/${kind}/${id}/metadata`;
      for (const method of ['POST', 'PUT']) {
        cases.push(
          c('missing metadata', method, m, { k: 'v' }, 400),
          c('metadata is a string', method, m, { metadata: 'k=v' }, 400),
          c('metadata is null', method, m, { metadata: null }, 400),
          c('key too long', method, m, { metadata: { [long(256)]: 'v' } }, 400),
          c('empty key', method, m, { metadata: { '': 'v' } }, 400),
          c('value too long', method, m, { metadata: { k: long(256) } }, 400),
          c('value is a number', method, m, { metadata: { k: 1 } }, 400),
          c('value is null', method, m, { metadata: { k: null } }, 400),
          c('value is an array', method, m, { metadata: { k: ['v'] } }, 400),
          c('129 keys', method, m, { metadata: Object.fromEntries(Array.from({ length: 129 }, (_, i) => [`k${i}`, 'v'])) }, 400),
          c('unknown field', method, m, { metadata: { k: 'v' }, extra: 1 }, 400),
          c('non-UTF-8 value', method, m, undefined, 400, 'member', { raw: Buffer.concat([Buffer.from('{"metadata": {"k": "'), Buffer.from([0xfe]), Buffer.from('"}}')]) }),
          c('non-UTF-8 key', method, m, undefined, 400, 'member', { raw: Buffer.concat([Buffer.from('{"metadata": {"'), Buffer.from([0x80, 0x80]), Buffer.from('": "v"}}')]) }),
          c('as reader', method, m, { metadata: { k: 'v' } }, 403, 'reader'),
          c(`another project's ${kind.slice(0, -1)}`, method, `${V}/${kind}/${otherId}/metadata`, { metadata: { k: 'v' } }, 404),
          c('unknown id', method, `${V}/${kind}/${UNKNOWN}/metadata`, { metadata: { k: 'v' } }, 404),
          c('id not a UUID', method, `${V}/${kind}/${BAD_UUID}/metadata`, { metadata: { k: 'v' } }, 404),
        );
      }
      cases.push(
        c(`another project's ${kind.slice(0, -1)}`, 'GET', `${V}/${kind}/${otherId}/metadata`, undefined, 404),
        c('unknown id', 'GET', `${V}/${kind}/${UNKNOWN}/metadata`, undefined, 404),
        c('unknown key', 'GET', `${m}/nope`, undefined, 404),
        c("key 'constructor'", 'GET', `${m}/constructor`, undefined, 404),
        c("key 'toString'", 'GET', `${m}/toString`, undefined, 404),
        c("key '__proto__'", 'GET', `${m}/__proto__`, undefined, 404),
        c(`another project's ${kind.slice(0, -1)}`, 'GET', `${V}/${kind}/${otherId}/metadata/k1`, undefined, 404),
        c('missing meta', 'PUT', `${m}/k1`, { metadata: { k1: 'v' } }, 400),
        c('meta is a string', 'PUT', `${m}/k1`, { meta: 'v' }, 400),
        c('body and URI mismatch', 'PUT', `${m}/k1`, { meta: { k2: 'v' } }, 400),
        c('empty meta', 'PUT', `${m}/k1`, { meta: {} }, 400),
        c('two keys', 'PUT', `${m}/k1`, { meta: { k1: 'v', k2: 'v' } }, 400),
        c('value too long', 'PUT', `${m}/k1`, { meta: { k1: long(256) } }, 400),
        c('value is a number', 'PUT', `${m}/k1`, { meta: { k1: 1 } }, 400),
        c('key too long', 'PUT', `${m}/${long(256)}`, { meta: { [long(256)]: 'v' } }, 400),
        c("URL key 'toString' with another body key", 'PUT', `${m}/toString`, { meta: { k1: 'v' } }, 400),
        c("URL key 'constructor' with another body key", 'PUT', `${m}/constructor`, { meta: { k2: 'v' } }, 400),
        c('as reader', 'PUT', `${m}/k1`, { meta: { k1: 'v' } }, 403, 'reader'),
        c(`another project's ${kind.slice(0, -1)}`, 'PUT', `${V}/${kind}/${otherId}/metadata/k1`, { meta: { k1: 'v' } }, 404),
        c('unknown key', 'DELETE', `${m}/nope`, undefined, 404),
        c("key 'constructor'", 'DELETE', `${m}/constructor`, undefined, 404),
        c("key 'hasOwnProperty'", 'DELETE', `${m}/hasOwnProperty`, undefined, 404),
        c('as reader', 'DELETE', `${m}/k1`, undefined, 403, 'reader'),
        c(`another project's ${kind.slice(0, -1)}`, 'DELETE', `${V}/${kind}/${otherId}/metadata/k1`, undefined, 404),
      );
    }
    return cases;
  }

  /**
   * Compute's cold-migration actions (migrate, confirmResize, revertResize): their body shapes, and an
   * unknown server. States (409: VERIFY_RESIZE needed, a migration open, same host) need a booted
   * guest: test/ceph/cold-migration-rbd.test.ts.
   */
  function computeMigrateCases(): Case[] {
    const action = (id: string) => `/compute/v2.1/servers/${id}/action`;
    const c = (name: string, id: string, body: unknown, expect: number, as: Caller = 'admin', version = '2.56'): Case => ({
      name: `compute POST /servers/{id}/action: ${name}`, method: 'POST', path: action(id), as, body, expect, headers: { 'OpenStack-API-Version': `compute ${version}` },
    });
    return [
      c('migrate of an unknown server', UNKNOWN, { migrate: null }, 404),
      c('migrate with host, unknown server', UNKNOWN, { migrate: { host: 'compute02' } }, 404),
      c('migrate id not a UUID', BAD_UUID, { migrate: null }, 404),
      c('migrate is a string', UNKNOWN, { migrate: 'compute02' }, 400),
      c('migrate host is a number', UNKNOWN, { migrate: { host: 5 } }, 400),
      c('migrate host is empty', UNKNOWN, { migrate: { host: '' } }, 400),
      c('migrate host too long', UNKNOWN, { migrate: { host: long(256) } }, 400),
      c('migrate unknown field', UNKNOWN, { migrate: { host: null, block_migration: 'auto' } }, 400),
      c('migrate and confirmResize together', UNKNOWN, { migrate: null, confirmResize: null }, 400),
      c('confirmResize is an object', UNKNOWN, { confirmResize: {} }, 400, 'member'),
      c('confirmResize of an unknown server', UNKNOWN, { confirmResize: null }, 404, 'member'),
      c('revertResize is a string', UNKNOWN, { revertResize: 'now' }, 400, 'member'),
      c('revertResize of an unknown server', UNKNOWN, { revertResize: null }, 404, 'member'),
    ];
  }

  /** The attachments API (3.27+, os-complete 3.44, mode 3.54): every route, at 3.44 unless the case is about the version. */
  function attachmentCases(): Case[] {
    const V = '/volume/v3/{P}';
    const A = `${V}/attachments`;
    const mv = (v: string) => ({ 'OpenStack-API-Version': `volume ${v}` });
    const c = (name: string, method: string, path: string, body: unknown, expect: number, as: Caller = 'member', extra: Partial<Case> = {}): Case => ({
      name: `attachments ${method} ${path.replace(V, '')}: ${name}`, method, path, as, body, expect, headers: mv('3.44'), ...extra,
    });
    const create = (name: string, attachment: unknown, expect = 400, as: Caller = 'member', extra: Partial<Case> = {}) => c(name, 'POST', A, { attachment }, expect, as, extra);
    const update = (name: string, attachment: unknown, expect = 400, as: Caller = 'member', id = F.attA) => c(name, 'PUT', `${A}/${id}`, { attachment }, expect, as);
    const action = (name: string, body: unknown, expect = 400, as: Caller = 'member', id = F.attA, extra: Partial<Case> = {}) => c(name, 'POST', `${A}/${id}/action`, body, expect, as, extra);
    const connector = { host: 'h', initiator: 'iqn.x' };
    const ok = { volume_uuid: F.volA, instance_uuid: UNKNOWN };
    const cases: Case[] = [
      // ---- create ----
      c('missing attachment', 'POST', A, {}, 400),
      c('attachment is null', 'POST', A, { attachment: null }, 400),
      c('attachment is an array', 'POST', A, { attachment: [ok] }, 400),
      c('attachment is a string', 'POST', A, { attachment: F.volA }, 400),
      c('unknown top-level field', 'POST', A, { attachment: ok, extra: 1 }, 400),
      create('unknown field', { ...ok, bogus: 1 }),
      create("unknown field 'constructor'", { ...ok, constructor: 1 }),
      c("unknown field '__proto__'", 'POST', A, undefined, 400, 'member', { raw: `{"attachment": {"volume_uuid": "${F.volA}", "__proto__": {"x": 1}}}` }),
      create('missing volume_uuid', { instance_uuid: UNKNOWN }),
      create('volume_uuid null', { volume_uuid: null }),
      create('volume_uuid not a UUID', { volume_uuid: BAD_UUID }),
      create('volume_uuid is a number', { volume_uuid: 5 }),
      create('instance_uuid not a UUID', { ...ok, instance_uuid: BAD_UUID }),
      create('instance_uuid is an object', { ...ok, instance_uuid: {} }),
      create('connector is a string', { ...ok, connector: 'host=h' }),
      create('connector is an array', { ...ok, connector: [connector] }),
      create('connector mode bogus', { ...ok, connector: { ...connector, mode: 'rx' } }),
      create('connector with 65 keys', { ...ok, connector: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v'])) }),
      create('mode before 3.54', { ...ok, mode: 'ro' }),
      create('mode bogus at 3.54', { ...ok, mode: 'rx' }, 400, 'member', { headers: mv('3.54') }),
      create('mode null at 3.54', { ...ok, mode: null }, 400, 'member', { headers: mv('3.54') }),
      create('unknown volume', { ...ok, volume_uuid: UNKNOWN }, 404),
      create("another project's volume", { ...ok, volume_uuid: F.volB }, 404),
      create('as reader', ok, 403, 'reader'),
      create('volume reserved for another server (not multiattach)', { volume_uuid: F.volAtt, instance_uuid: '11111111-2222-4333-8444-555555555555' }),
      create('volume reserved, with a connector', { volume_uuid: F.volAtt, instance_uuid: '11111111-2222-4333-8444-555555555555', connector }),
      create('before 3.27', ok, 404, 'member', { headers: mv('3.26') }),
      create('without a microversion', ok, 404, 'member', { headers: {} }),
      c('unscoped token', 'POST', '/volume/v3/attachments', { attachment: ok }, 403, 'unscoped'),
      // ---- update ----
      update('missing connector', {}),
      update('connector is null', { connector: null }),
      update('connector is empty', { connector: {} }),
      update('connector is a string', { connector: 'h' }),
      update('connector is an array', { connector: [] }),
      update('unknown field', { connector, instance_uuid: UNKNOWN }),
      update('connector mode bogus', { connector: { ...connector, mode: 5 } }),
      update('connector with 65 keys', { connector: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v'])) }),
      c('missing attachment', 'PUT', `${A}/${F.attA}`, { connector }, 400),
      c('attachment is null', 'PUT', `${A}/${F.attA}`, { attachment: null }, 400),
      update('unknown attachment', { connector }, 404, 'member', UNKNOWN),
      update('id not a UUID', { connector }, 404, 'member', BAD_UUID),
      update("another project's attachment", { connector }, 404, 'member', F.attB),
      update('as reader', { connector }, 403, 'reader'),
      c('before 3.27', 'PUT', `${A}/${F.attA}`, { attachment: { connector } }, 404, 'member', { headers: mv('3.26') }),
      // ---- os-complete ----
      action('empty body', {}),
      action('two actions', { 'os-complete': null, 'os-detach': null }),
      action('unknown action', { 'os-terminate': null }),
      action("action 'constructor'", { constructor: null }),
      action('os-complete with arguments', { 'os-complete': { force: true } }),
      action('os-complete is a string', { 'os-complete': 'now' }),
      action('os-complete before 3.44', { 'os-complete': null }, 404, 'member', F.attA, { headers: mv('3.43') }),
      action('as reader', { 'os-complete': null }, 403, 'reader'),
      action('unknown attachment', { 'os-complete': null }, 404, 'member', UNKNOWN),
      action("another project's attachment", { 'os-complete': null }, 404, 'member', F.attB),
      // ---- show, list ----
      c('unknown attachment', 'GET', `${A}/${UNKNOWN}`, undefined, 404),
      c('id not a UUID', 'GET', `${A}/${BAD_UUID}`, undefined, 404),
      c("another project's attachment", 'GET', `${A}/${F.attB}`, undefined, 404),
      c('before 3.27', 'GET', `${A}/${F.attA}`, undefined, 404, 'member', { headers: mv('3.26') }),
      c('before 3.27', 'GET', A, undefined, 404, 'member', { headers: mv('3.26') }),
      c('before 3.27', 'GET', `${A}/detail`, undefined, 404, 'member', { headers: mv('3.26') }),
      c('unknown filter', 'GET', `${A}?bogus=1`, undefined, 400),
      c('limit=-1', 'GET', `${A}?limit=-1`, undefined, 400),
      c('limit=abc', 'GET', `${A}/detail?limit=abc`, undefined, 400),
      c('offset=x', 'GET', `${A}?offset=x`, undefined, 400),
      c('sort key unknown', 'GET', `${A}?sort=size`, undefined, 400),
      c('sort direction bogus', 'GET', `${A}?sort=created_at:up`, undefined, 400),
      c('sort key twice', 'GET', `${A}?sort=id,id`, undefined, 400),
      c('sort and sort_key', 'GET', `${A}?sort=id&sort_key=id`, undefined, 400),
      c('sort_dir bogus', 'GET', `${A}/detail?sort_dir=sideways`, undefined, 400),
      c('unknown marker', 'GET', `${A}?marker=${UNKNOWN}`, undefined, 404),
      c("another project's attachment as marker", 'GET', `${A}?marker=${F.attB}`, undefined, 404),
      c('all_tenants=maybe', 'GET', `${A}?all_tenants=maybe`, undefined, 400, 'admin'),
      c('filter given twice', 'GET', `${A}?volume_id=a&volume_id=b`, undefined, 400),
      c('unscoped token', 'GET', '/volume/v3/attachments', undefined, 403, 'unscoped'),
      // ---- delete ----
      c('unknown attachment', 'DELETE', `${A}/${UNKNOWN}`, undefined, 404),
      c("another project's attachment", 'DELETE', `${A}/${F.attB}`, undefined, 404),
      c('as reader', 'DELETE', `${A}/${F.attA}`, undefined, 403, 'reader'),
      c('before 3.27', 'DELETE', `${A}/${F.attA}`, undefined, 404, 'member', { headers: mv('3.26') }),
      // ---- methods ----
      c('method not allowed', 'DELETE', A, undefined, 405),
      c('method not allowed', 'PATCH', `${A}/${F.attA}`, { attachment: {} }, 405),
      c('method not allowed', 'GET', `${A}/${F.attA}/action`, undefined, 405),
      // ---- os-force_detach (volume action, admin) ----
      c('os-force_detach as member', 'POST', `${V}/volumes/${F.volAtt}/action`, { 'os-force_detach': { attachment_id: F.attA } }, 403),
      c('os-force_detach unknown attachment', 'POST', `${V}/volumes/${F.volAtt}/action`, { 'os-force_detach': { attachment_id: UNKNOWN } }, 404, 'admin'),
      c('os-force_detach attachment_id not a UUID', 'POST', `${V}/volumes/${F.volAtt}/action`, { 'os-force_detach': { attachment_id: BAD_UUID } }, 400, 'admin'),
      c('os-force_detach connector is a string', 'POST', `${V}/volumes/${F.volAtt}/action`, { 'os-force_detach': { connector: 'h' } }, 400, 'admin'),
      c('os-force_detach unknown field', 'POST', `${V}/volumes/${F.volAtt}/action`, { 'os-force_detach': { attachment_id: F.attA, force: true } }, 400, 'admin'),
      c('os-force_detach of an attachment of another volume', 'POST', `${V}/volumes/${F.volA}/action`, { 'os-force_detach': { attachment_id: F.attA } }, 404, 'admin'),
    ];
    for (const [method, path] of [['POST', A], ['PUT', `${A}/${F.attA}`], ['POST', `${A}/${F.attA}/action`]] as const) {
      for (const bad of badBodies(method, path, 'member')) cases.push({ ...bad, name: `attachments ${bad.name}`, headers: mv('3.44') });
    }
    for (const [method, path] of [['GET', A], ['GET', `${A}/detail`], ['GET', `${A}/${F.attA}`], ['POST', A], ['PUT', `${A}/${F.attA}`], ['POST', `${A}/${F.attA}/action`], ['DELETE', `${A}/${F.attA}`]] as const) {
      cases.push({ name: `attachments ${method} ${path}: no X-Auth-Token`, method, path, as: 'none', headers: mv('3.44'), expect: 401 });
      cases.push({ name: `attachments ${method} ${path}: invalid X-Auth-Token`, method, path, as: 'bogus', headers: mv('3.44'), expect: 401 });
      cases.push({ name: `attachments ${method} ${path}: OpenStack-API-Version volume 3.999`, method, path, as: 'member', headers: mv('3.999'), expect: 406 });
    }
    return cases;
  }

  function imageCases(): Case[] {
    return [
      { name: 'GET /image/v2/images?limit=-1', method: 'GET', path: '/image/v2/images?limit=-1', expect: 400 },
      { name: 'GET /image/v2/images?limit=abc', method: 'GET', path: '/image/v2/images?limit=abc', expect: 400 },
      { name: 'GET /image/v2/images/not-a-uuid', method: 'GET', path: `/image/v2/images/${BAD_UUID}`, expect: 404 },
      { name: 'GET /image/v2/images/%E0%A4%A', method: 'GET', path: '/image/v2/images/%E0%A4%A', expect: 400 },
      { name: 'GET /image/v2/nope', method: 'GET', path: '/image/v2/nope', expect: 404 },
      { name: 'GET /image/v3', method: 'GET', path: '/image/v3', expect: 404 },
      { name: 'POST /image/v2/images: unknown disk_format', method: 'POST', path: '/image/v2/images', body: { name: 'x', disk_format: 'qcow3' }, expect: 400 },
      { name: 'DELETE /image/v2/images/{id}: unknown image', method: 'DELETE', path: `/image/v2/images/${UNKNOWN}`, expect: 404 },
      { name: 'GET /image/v2/tasks as a member', method: 'GET', path: '/image/v2/tasks', expect: 403 },
      { name: 'GET /image/v2/tasks?status=done', method: 'GET', path: '/image/v2/tasks?status=done', as: 'admin', expect: 400 },
      { name: 'GET /image/v2/tasks?limit=-1', method: 'GET', path: '/image/v2/tasks?limit=-1', as: 'admin', expect: 400 },
      { name: 'GET /image/v2/tasks?marker=unknown', method: 'GET', path: `/image/v2/tasks?marker=${UNKNOWN}`, as: 'admin', expect: 400 },
      ...((): Case[] => {
        const task = (input: Record<string, unknown>, type = 'import') => ({ type, input: { import_from: 'http://127.0.0.1:9/x', import_from_format: 'raw', image_properties: { container_format: 'bare' }, ...input } });
        const post = (name: string, body: unknown, expect: number, as: Caller = 'admin', message?: RegExp): Case => ({ name: `POST /image/v2/tasks: ${name}`, method: 'POST', path: '/image/v2/tasks', as, body, expect, message });
        return [
          post('as a member', task({}), 403, 'member'),
          // This server enables no download host: the task's import_from is refused like web-download's.
          post('web-download not enabled', task({}), 400, 'admin', /allowed_hosts/),
          post('unknown type', task({}, 'export'), 400, 'admin', /only task type is 'import'/),
          post('missing input', { type: 'import' }, 400),
          post('missing import_from', { type: 'import', input: { import_from_format: 'raw', image_properties: {} } }, 400),
          post('image_properties not an object', task({ image_properties: 'x' }), 400),
          post('unknown input field', task({ bogus: 1 }), 400),
          post('import_from too long', task({ import_from: `http://127.0.0.1/${long(2100)}` }), 400),
        ];
      })(),
      { name: 'GET /image/v2/tasks/{id}: unknown task', method: 'GET', path: `/image/v2/tasks/${UNKNOWN}`, as: 'admin', expect: 404 },
      { name: 'GET /image/v2/images/{id}/tasks: unknown image', method: 'GET', path: `/image/v2/images/${UNKNOWN}/tasks`, expect: 404 },
      { name: 'DELETE /image/v2/stores/{store}/{id}: unknown store', method: 'DELETE', path: `/image/v2/stores/swift/${UNKNOWN}`, as: 'admin', expect: 404 },
      { name: 'DELETE /image/v2/stores/{store}/{id} as a member', method: 'DELETE', path: `/image/v2/stores/file/${UNKNOWN}`, expect: 403 },
      { name: 'POST /image/v2/images/{id}/import: copy-image of an unknown image', method: 'POST', path: `/image/v2/images/${UNKNOWN}/import`, as: 'admin', body: { method: { name: 'copy-image' }, stores: ['file'] }, expect: 404 },
      { name: 'POST /image/v2/images/{id}/import: stores not a list', method: 'POST', path: `/image/v2/images/${UNKNOWN}/import`, as: 'admin', body: { method: { name: 'copy-image' }, stores: 'file' }, expect: 400 },
      { name: 'GET /image/v2/info/stores/detail as a member', method: 'GET', path: '/image/v2/info/stores/detail', expect: 403, message: /stores_info_detail/ },
      { name: 'PUT /image/v2/images/{id}/file: X-Image-Meta-Store not an enabled store', method: 'PUT', path: `/image/v2/images/${UNKNOWN}/file`, as: 'admin', raw: Buffer.alloc(16), contentType: 'application/octet-stream', headers: { 'X-Image-Meta-Store': 'swift' }, expect: 400, message: /Unknown store 'swift': the enabled stores are file/ },
      { name: 'POST /image/v2/images/{id}/import: X-Image-Meta-Store not an enabled store', method: 'POST', path: `/image/v2/images/${UNKNOWN}/import`, as: 'admin', headers: { 'X-Image-Meta-Store': 'swift' }, body: { method: { name: 'glance-direct' } }, expect: [400, 404] },
    ];
  }

  test('every route rejects bad input cleanly and changes nothing', async (t) => {
    const cases = [...genericCases(), ...identityCases(), ...volumeCases(), ...attachmentCases(), ...imageCases(), ...computeMigrateCases()];
    const names = new Set<string>();
    for (const c of cases) {
      assert.ok(!names.has(c.name), `duplicate case name: ${c.name}`);
      names.add(c.name);
    }
    let baseline = fingerprint();
    const started = Date.now();
    for (const c of cases) {
      await t.test(c.name, async () => {
        const reply = await send(c);
        const problems = faultProblems(c, reply);
        const now = fingerprint();
        if (now !== baseline) {
          problems.push(`the request changed stored state:\n${describeDiff(baseline, now)}`);
          baseline = await settled();
        }
        assert.deepEqual(problems, [], `${c.method} ${c.path.slice(0, 200)} -> ${reply.status} ${reply.text.slice(0, 400)}`);
      });
    }
    t.diagnostic(`${cases.length} cases in ${Date.now() - started} ms`);
    // The server survived all of it.
    const alive = await send({ method: 'GET', path: '/volume/v3/{P}/volumes', as: 'member' });
    assert.equal(alive.status, 200);
    assert.doesNotMatch(pumice.output(), /internal error|response failed/, 'the server log shows an internal error');
  });

  test('edge values that are valid are answered, never with a 5xx', async () => {
    const before = fingerprint();
    for (const list of ['volumes', 'volumes/detail', 'snapshots', 'snapshots/detail']) {
      for (const query of ['limit=0', 'limit=99999999999999999999', 'limit=1&sort=name:asc,id:desc', `limit=0&marker=${list.startsWith('volumes') ? F.volA : F.snapA}`, 'sort_dir=asc', 'offset=0']) {
        const r = await send({ method: 'GET', path: `/volume/v3/{P}/${list}?${query}`, as: 'member' });
        assert.equal(r.status, 200, `GET ${list}?${query} -> ${r.status} ${r.text.slice(0, 300)}`);
        const items = JSON.parse(r.text)[list.split('/')[0]!] as unknown[];
        if (query.startsWith('limit=0')) assert.deepEqual(items, [], `GET ${list}?${query} returns nothing`);
      }
    }
    const hints = await send({ method: 'GET', path: '/volume/v3/{P}/volumes?limit=1', as: 'member', headers: { 'OpenStack-API-Version': 'volume latest' } });
    assert.equal(hints.status, 200, hints.text);
    assert.equal(fingerprint(), before);
  });

  test('identity: wrong password and unknown user get the same 401', async () => {
    const attempt = async (user: Record<string, unknown>) => {
      const r = await send({ method: 'POST', path: '/identity/v3/auth/tokens', as: 'none', body: { auth: { identity: { methods: ['password'], password: { user } } } } });
      assert.equal(r.status, 401, r.text);
      return { body: JSON.parse(r.text) as unknown, auth: r.headers['www-authenticate'] };
    };
    const wrongPassword = await attempt({ name: 'member-a', domain: { id: 'default' }, password: 'wrong' });
    const variants = {
      'unknown user': await attempt({ name: 'nobody-at-all', domain: { id: 'default' }, password: 'wrong' }),
      'unknown user id': await attempt({ id: UNKNOWN, password: 'wrong' }),
      'known user id, wrong password': await attempt({ id: F.memberA, password: 'wrong' }),
      'unknown domain': await attempt({ name: 'member-a', domain: { name: 'NoSuchDomain' }, password: 'pw-member-a' }),
      'user without password': await attempt({ name: 'no-password', domain: { id: 'default' }, password: 'anything' }),
      'disabled user, right password': await attempt({ name: 'disabled-user', domain: { id: 'default' }, password: 'pw-disabled' }),
      'admin, wrong password': await attempt({ name: 'admin', domain: { name: 'Default' }, password: 'nope' }),
    };
    for (const [name, reply] of Object.entries(variants)) assert.deepEqual(reply, wrongPassword, `${name} differs from a wrong password`);
  });
});
