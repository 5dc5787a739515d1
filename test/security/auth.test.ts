/**
 * Issue 12, login findings, reproduced against a running Pumice on 127.0.0.1 with a bounded
 * flood (200 requests): a flood from one address does not starve a login from another; a user
 * is locked out after lockout_failure_attempts and unlocked after lockout_duration; an unknown
 * user name answers as slowly as a known one; every failed login leaves an audit line; the
 * database holds token digests, never the tokens.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ApiClient, startPumice, type PumiceProcess } from '../helpers/pumice.ts';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Db } from '../../src/db/db.ts';
import { IdentityService, defaultDomainId } from '../../src/identity/identity.ts';
import { bootstrapIdentity, writeAdminOpenrc } from '../../src/identity/bootstrap.ts';

const execFileAsync = promisify(execFile);

/** POST /v3/auth/tokens from a chosen local address (127.0.0.0/8 all reach 127.0.0.1). */
function login(url: string, name: string, password: string, localAddress = '127.0.0.1'): Promise<{ status: number; ms: number; token: string | null; text: string }> {
  const started = performance.now();
  const body = JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name, domain: { id: 'default' }, password } } } } });
  const target = new URL(`${url}/identity/v3/auth/tokens`);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: target.hostname, port: target.port, path: target.pathname, method: 'POST', localAddress, agent: false, headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - started, token: (res.headers['x-subject-token'] as string | undefined) ?? null, text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

describe('login defences', () => {
  let pumice: PumiceProcess;
  let admin: ApiClient;

  before(async () => {
    pumice = await startPumice({ config: '[security_compliance]\nlockout_failure_attempts = 5\nlockout_duration = 3\n' });
    admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    for (const name of ['victim', 'timing']) {
      const r = await admin.request('POST', '/identity/v3/users', { user: { name, password: `${name}-password-1` } });
      assert.equal(r.status, 201, r.text);
    }
  });

  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
  });

  test('an unknown user name answers as slowly as a wrong password for a known one', async () => {
    const known: number[] = [];
    const unknown: number[] = [];
    for (let i = 0; i < 4; i++) {
      const k = await login(pumice.url, 'timing', 'wrong-password');
      assert.equal(k.status, 401);
      known.push(k.ms);
      const u = await login(pumice.url, `nobody-${i}`, 'wrong-password');
      assert.equal(u.status, 401);
      unknown.push(u.ms);
    }
    const ratio = median(unknown) / median(known);
    assert.ok(ratio > 0.5 && ratio < 2, `unknown ${median(unknown).toFixed(1)} ms vs known ${median(known).toFixed(1)} ms`);
    // The right password still works (4 failures < 5) and resets the count.
    assert.equal((await login(pumice.url, 'timing', 'timing-password-1')).status, 201);
  });

  test('a flood of wrong passwords from one address leaves logins from another fast', async () => {
    const baseline = await login(pumice.url, 'admin', pumice.adminPassword);
    assert.equal(baseline.status, 201, baseline.text);
    // 200 requests, 100 at a time, from 127.0.0.2, for user names that do not exist (no lockout to stop them).
    let sent = 0;
    const statuses = new Map<number, number>();
    const flood = Promise.all(
      Array.from({ length: 100 }, async () => {
        while (sent < 200) {
          sent++;
          const r = await login(pumice.url, `flood-${sent}`, 'x', '127.0.0.2');
          statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        }
      }),
    );
    await new Promise((r) => setTimeout(r, 300));
    const during: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await login(pumice.url, 'admin', pumice.adminPassword);
      assert.equal(r.status, 201, r.text);
      during.push(r.ms);
    }
    await flood;
    assert.ok(Math.max(...during) < 2000, `logins during the flood took ${during.map((m) => m.toFixed(0)).join(', ')} ms (baseline ${baseline.ms.toFixed(0)} ms)`);
    // The flood is answered with 401 (checked) or 503 (queue full for that address), never anything else.
    for (const status of statuses.keys()) assert.ok(status === 401 || status === 503, `flood got ${status}`);
    assert.ok((statuses.get(503) ?? 0) > 0, 'the per-address queue bound never applied');
  });

  test('lockout after lockout_failure_attempts, lifted after lockout_duration; failures are audited', async () => {
    for (let i = 0; i < 5; i++) assert.equal((await login(pumice.url, 'victim', `wrong-${i}`)).status, 401);
    const locked = await login(pumice.url, 'victim', 'victim-password-1');
    assert.equal(locked.status, 401);
    assert.match(locked.text, /locked/);
    assert.ok(locked.ms < 100, `a locked-out attempt still hashed (${locked.ms.toFixed(0)} ms)`);
    await new Promise((r) => setTimeout(r, 3200));
    const ok = await login(pumice.url, 'victim', 'victim-password-1');
    assert.equal(ok.status, 201, ok.text);
    const log = pumice.output();
    assert.match(log, /failed login for user \w+ \("victim"\) from 127\.0\.0\.1: wrong password \(5 in a row; locked out for 3 s\)/);
    assert.match(log, /failed login for unknown user "flood-\d+" from 127\.0\.0\.2/);
    assert.match(log, /refused login for locked-out user/);
  });

  test('an unscoped token cannot list domains, roles, services or endpoints, nor probe user ids', async () => {
    const r = await login(pumice.url, 'timing', 'timing-password-1');
    assert.equal(r.status, 201, r.text);
    // User ids cannot be probed either: a user that exists and one that does not answer alike.
    const adminUserId = (await admin.request('GET', '/identity/v3/users?name=admin')).body.users[0].id as string;
    for (const path of ['domains', 'domains/default', 'roles', 'services', 'endpoints', `users/${adminUserId}`, 'users/0123456789abcdef0123456789abcdef', `users/${adminUserId}/projects`]) {
      const res = await fetch(`${pumice.url}/identity/v3/${path}`, { headers: { 'X-Auth-Token': r.token! } });
      assert.equal(res.status, 403, `GET ${path} with an unscoped token: ${res.status}`);
    }
    const scoped = await admin.request('GET', '/identity/v3/domains');
    assert.equal(scoped.status, 200, scoped.text);
  });

  test('the database holds token digests, not tokens', async () => {
    const r = await login(pumice.url, 'admin', pumice.adminPassword);
    assert.ok(r.token);
    const { stdout } = await execFileAsync('sqlite3', [join(pumice.dataDir, 'pumice.db'), 'SELECT id FROM tokens']).catch(() => ({ stdout: '' }));
    if (stdout) {
      assert.ok(!stdout.includes(r.token!), 'a token is stored in clear');
      assert.match(stdout.trim().split('\n')[0]!, /^[0-9a-f]{64}$/);
    }
  });
});

describe('token revocations stick (Keystone)', () => {
  test('a token revoked by a role removal or a project disable stays revoked after re-grant or re-enable', async () => {
    const db = new Db(':memory:');
    const identity = new IdentityService(db, 3600);
    await bootstrapIdentity(db, identity, 'secret');
    const project = identity.createProject({ name: 'p1', domainId: defaultDomainId });
    const user = await identity.createUser({ name: 'u1', domainId: defaultDomainId, password: 'pw' });
    const member = identity.findRoleByName('member')!;
    identity.grantRole(user.id, 'project', project.id, member.id);
    const byRole = identity.issueToken(user, { kind: 'project', projectId: project.id }, ['password']);
    identity.revokeRole(user.id, project.id, member.id);
    identity.grantRole(user.id, 'project', project.id, member.id);
    assert.throws(() => identity.validateToken(byRole.tokenId), /invalid, expired or revoked/);
    const byProject = identity.issueToken(user, { kind: 'project', projectId: project.id }, ['password']);
    identity.updateProject(project.id, { enabled: false });
    identity.updateProject(project.id, { enabled: true });
    assert.throws(() => identity.validateToken(byProject.tokenId), /invalid, expired or revoked/);
    // New tokens work again.
    assert.equal(identity.validateToken(identity.issueToken(user, { kind: 'project', projectId: project.id }, ['password']).tokenId).userId, user.id);
    db.close();
  });
});

describe('admin-openrc', () => {
  test('a password with quotes, dollars and backticks survives sourcing and a rewrite', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pumice-sec-openrc-'));
    try {
      const password = `it's $HOME \`id\` "q" \\ end'`;
      const path = writeAdminOpenrc(dir, 'http://127.0.0.1:1/identity/v3', password);
      const { stdout } = await execFileAsync('bash', ['-c', `. '${path}' && printf %s "$OS_PASSWORD"`]);
      assert.equal(stdout, password);
      // Restart: the file keeps its password when none is given.
      writeAdminOpenrc(dir, 'http://127.0.0.1:2/identity/v3', null);
      const again = await execFileAsync('bash', ['-c', `. '${path}' && printf %s "$OS_PASSWORD"`]);
      assert.equal(again.stdout, password);
      assert.match(readFileSync(path, 'utf8'), /127\.0\.0\.1:2/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
