import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Db } from '../../src/db/db.ts';
import { IdentityService, defaultDomainId, tokenDigest } from '../../src/identity/identity.ts';
import { bootstrapIdentity } from '../../src/identity/bootstrap.ts';
import { PumiceError } from '../../src/errors.ts';
import { hashPassword, verifyPassword } from '../../src/identity/passwords.ts';

async function setup(lifetimeSeconds = 3600) {
  const db = new Db(':memory:');
  const identity = new IdentityService(db, lifetimeSeconds);
  const boot = await bootstrapIdentity(db, identity, 'secret');
  return { db, identity, boot };
}

function status(fn: () => unknown): number {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof PumiceError);
    return error.status;
  }
  return 0;
}

test('passwords are salted scrypt hashes, verified in constant form', async () => {
  const a = await hashPassword('pw');
  const b = await hashPassword('pw');
  assert.notEqual(a, b);
  // OWASP Password Storage Cheat Sheet: N=2^15, r=8, p=3 is one of its equivalent scrypt settings.
  assert.match(a, /^scrypt\$32768\$8\$3\$/);
  assert.ok(await verifyPassword('pw', a));
  assert.ok(!(await verifyPassword('pW', a)));
  assert.ok(!(await verifyPassword('pw', null)));
});

test('bootstrap is idempotent and creates the admin with roles and the catalog', async () => {
  const { db, identity } = await setup();
  const again = await bootstrapIdentity(db, identity, 'other');
  assert.equal(again.generatedAdminPassword, null);
  const admin = identity.findUserByName('admin', defaultDomainId)!;
  const project = identity.findProjectByName('admin', defaultDomainId)!;
  assert.deepEqual(identity.effectiveRoles(admin.id, project.id).map((r) => r.name).sort(), ['admin', 'member', 'reader']);
  const types = identity.services().map((s) => s.type).sort();
  assert.deepEqual(types, ['block-storage', 'compute', 'identity', 'image', 'volumev3']);
  const catalog = identity.catalog('http://h:1', project.id) as { type: string; endpoints: { url: string; interface: string }[] }[];
  const volume = catalog.find((s) => s.type === 'volumev3')!;
  assert.equal(volume.endpoints.length, 3);
  assert.equal(volume.endpoints[0]!.url, `http://h:1/volume/v3/${project.id}`);
  // The first password stays: bootstrap never overwrites an existing admin.
  await identity.authenticatePassword(admin, 'secret');
});

test('wrong password and unknown user fail with the same 401 message', async () => {
  const { identity } = await setup();
  const admin = identity.findUserByName('admin', defaultDomainId);
  const messages: string[] = [];
  for (const [user, pw] of [[admin, 'wrong'], [undefined, 'secret']] as const) {
    await assert.rejects(identity.authenticatePassword(user, pw), (error: unknown) => {
      assert.ok(error instanceof PumiceError);
      assert.equal(error.status, 401);
      messages.push(error.message);
      return true;
    });
  }
  assert.equal(messages[0], messages[1]);
});

test('tokens: scoped issue, validate, revoke; disabled users and expired tokens are refused', async () => {
  const { identity } = await setup();
  const admin = identity.findUserByName('admin', defaultDomainId)!;
  const project = identity.findProjectByName('admin', defaultDomainId)!;
  const token = identity.issueToken(admin, { kind: 'project', projectId: project.id }, ['password']);
  assert.equal(token.projectId, project.id);
  assert.ok(token.isAdmin);
  assert.equal(identity.validateToken(token.tokenId).userId, admin.id);
  identity.revokeToken(token.tokenId);
  assert.equal(status(() => identity.validateToken(token.tokenId)), 401);

  const user = await identity.createUser({ name: 'u', domainId: defaultDomainId, password: 'p' });
  // No role on the project: a scoped token is refused.
  assert.equal(status(() => identity.issueToken(user, { kind: 'project', projectId: project.id }, ['password'])), 401);
  identity.grantRole(user.id, 'project', project.id, identity.findRoleByName('reader')!.id);
  const readerToken = identity.issueToken(user, { kind: 'project', projectId: project.id }, ['password']);
  assert.deepEqual(readerToken.roles, ['reader']);
  assert.ok(!readerToken.isAdmin);
  await identity.updateUser(user.id, { enabled: false });
  assert.equal(status(() => identity.validateToken(readerToken.tokenId)), 401);
});

test('a token expires after its lifetime and a rescoped token never outlives its parent', async () => {
  const { identity, db } = await setup(60);
  const admin = identity.findUserByName('admin', defaultDomainId)!;
  const project = identity.findProjectByName('admin', defaultDomainId)!;
  const token = identity.issueToken(admin, { kind: 'unscoped' }, ['password']);
  const child = identity.issueToken(admin, { kind: 'project', projectId: project.id }, ['password', 'token'], { expiresAt: token.expiresAt, auditId: token.auditId });
  assert.ok(child.expiresAt <= token.expiresAt);
  // Tokens are stored by digest: the row's id is never the token itself.
  assert.equal(db.get('SELECT 1 AS x FROM tokens WHERE id = ?', token.tokenId), undefined);
  db.run('UPDATE tokens SET expires_at = ? WHERE id = ?', new Date(Date.now() - 1000).toISOString(), tokenDigest(token.tokenId));
  identity.invalidateCache();
  assert.equal(status(() => identity.validateToken(token.tokenId)), 401);
});

test('revoking a role takes effect on existing tokens at once', async () => {
  const { identity } = await setup();
  const project = identity.findProjectByName('service', defaultDomainId)!;
  const user = await identity.createUser({ name: 'svc', domainId: defaultDomainId, password: 'p' });
  const member = identity.findRoleByName('member')!;
  identity.grantRole(user.id, 'project', project.id, member.id);
  const token = identity.issueToken(user, { kind: 'project', projectId: project.id }, ['password']);
  assert.ok(identity.validateToken(token.tokenId).roles.includes('member'));
  identity.revokeRole(user.id, project.id, member.id);
  assert.equal(status(() => identity.validateToken(token.tokenId)), 401);
});

test('a token revoked or a user disabled by another process stops validating here within a second; here at once', async () => {
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = mkdtempSync(join(tmpdir(), 'pumice-identity-'));
  // Two processes on one database (two API hosts on PostgreSQL, or the CLI beside the server): two connections, two caches.
  const dbA = new Db(join(dir, 'pumice.db'));
  const dbB = new Db(join(dir, 'pumice.db'));
  try {
    const a = new IdentityService(dbA, 3600);
    const b = new IdentityService(dbB, 3600);
    await bootstrapIdentity(dbA, a, 'secret');
    const admin = a.findUserByName('admin', defaultDomainId)!;
    const project = a.findProjectByName('admin', defaultDomainId)!;
    const token = a.issueToken(admin, { kind: 'project', projectId: project.id }, ['password']);
    const user = await a.createUser({ name: 'u', domainId: defaultDomainId, password: 'p' });
    a.grantRole(user.id, 'project', project.id, a.findRoleByName('reader')!.id);
    const userToken = a.issueToken(user, { kind: 'project', projectId: project.id }, ['password']);
    // B validates (and caches) both.
    assert.equal(b.validateToken(token.tokenId).userId, admin.id);
    assert.equal(b.validateToken(userToken.tokenId).userId, user.id);
    a.revokeToken(token.tokenId);
    await a.updateUser(user.id, { enabled: false });
    // A, which made the changes, refuses at once.
    assert.equal(status(() => a.validateToken(token.tokenId)), 401);
    assert.equal(status(() => a.validateToken(userToken.tokenId)), 401);
    const deadline = Date.now() + 1500;
    while (Date.now() < deadline && (status(() => b.validateToken(token.tokenId)) !== 401 || status(() => b.validateToken(userToken.tokenId)) !== 401)) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(status(() => b.validateToken(token.tokenId)), 401, 'B still accepts the token A revoked');
    assert.equal(status(() => b.validateToken(userToken.tokenId)), 401, 'B still accepts the token of the user A disabled');
  } finally {
    dbB.close();
    dbA.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
