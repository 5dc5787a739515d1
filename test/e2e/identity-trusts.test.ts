/**
 * OS-TRUST (issue 18): a trustor delegates one of their roles on a project
 * to a trustee with `openstack trust create`; the trustee, who holds no role
 * there, gets a trust-scoped token through openstacksdk (keystoneauth's
 * trust_id) that carries the trust's roles only and works on the Block
 * Storage API of that project; `openstack trust list/show/delete`; deleting
 * the trust ends its tokens. Through the API: impersonation (the token's user
 * is the trustor), remaining_uses, a stranger using the trust, and a trust
 * token exchanged for another token. Responses are validated against the
 * declared schemas (PUMICE_VALIDATE_RESPONSES=1; tempest publishes no
 * Identity schemas).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ApiClient, cliEnv, openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);

let pumice: PumiceProcess;
let admin: ApiClient;
const ids = {} as Record<'project' | 'trustor' | 'trustee' | 'stranger' | 'extraRole', string>;
let trustorEnv: Record<string, string>;
let trusteeEnv: Record<string, string>;

/** POST /v3/auth/tokens as `user` (password `pw-USER`) with `scope`; the raw reply. */
async function passwordToken(user: string, scope: unknown): Promise<{ status: number; token: string; body: any; text: string }> {
  const res = await fetch(`${pumice.url}/identity/v3/auth/tokens`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name: user, domain: { id: 'default' }, password: `pw-${user}` } } }, scope } }),
  });
  const text = await res.text();
  return { status: res.status, token: res.headers.get('x-subject-token') ?? '', body: text ? JSON.parse(text) : undefined, text };
}

async function trustorClient(): Promise<ApiClient> {
  return ApiClient.login(pumice.url, 'tr-trustor', 'pw-tr-trustor', 'tr-project');
}

before(async () => {
  pumice = await startPumice();
  admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  const roles = (await admin.request('GET', '/identity/v3/roles')).body.roles as { id: string; name: string }[];
  const member = roles.find((r) => r.name === 'member')!.id;
  ids.extraRole = (await admin.request('POST', '/identity/v3/roles', { role: { name: 'tr-extra' } })).body.role.id;
  ids.project = (await admin.request('POST', '/identity/v3/projects', { project: { name: 'tr-project' } })).body.project.id;
  for (const name of ['tr-trustor', 'tr-trustee', 'tr-stranger'] as const) {
    const created = await admin.request('POST', '/identity/v3/users', { user: { name, password: `pw-${name}` } });
    assert.equal(created.status, 201, created.text);
    ids[name.slice(3) as 'trustor' | 'trustee' | 'stranger'] = created.body.user.id;
  }
  for (const role of [member, ids.extraRole]) {
    assert.equal((await admin.request('PUT', `/identity/v3/projects/${ids.project}/users/${ids.trustor}/roles/${role}`)).status, 204);
  }
  trustorEnv = { ...pumice.adminEnv, OS_USERNAME: 'tr-trustor', OS_PASSWORD: 'pw-tr-trustor', OS_PROJECT_NAME: 'tr-project' };
  // The trustee holds no role anywhere: an unscoped login is all it has of its own.
  trusteeEnv = { ...pumice.adminEnv, OS_USERNAME: 'tr-trustee', OS_PASSWORD: 'pw-tr-trustee' };
  delete trusteeEnv['OS_PROJECT_NAME'];
  delete trusteeEnv['OS_PROJECT_DOMAIN_NAME'];
}, { timeout: 120_000 });

after(async () => {
  if (pumice) {
    await pumice.stop();
    pumice.cleanup();
  }
});

describe('OS-TRUST trusts', { timeout: 180_000 }, () => {
  // As a non-admin the CLI cannot look users up by name (Keystone's list_users is admin-only): ids, as with Keystone.
  test('openstack trust create/list/show/delete; openstacksdk gets a trust-scoped token with the trust\'s roles only', async () => {
    const created = await openstackJson(trustorEnv, ['trust', 'create', '--project', 'tr-project', '--role', 'member', '--expiration', '2099-01-01T00:00:00', ids.trustor, ids.trustee]);
    const trustId = created['id'] as string;
    assert.match(trustId, /^[0-9a-f]{32}$/);
    assert.equal(created['roles'], 'member');
    assert.equal(created['impersonation'], false);
    assert.equal(created['project_id'], ids.project);
    assert.equal(created['trustee_user_id'], ids.trustee);
    assert.match(String(created['expires_at']), /^2099-01-01T00:00:00/);

    const listed = await openstackJson<{ ID: string; 'Trustee User ID': string }[]>(trustorEnv, ['trust', 'list']);
    assert.deepEqual(listed.map((t) => [t.ID, t['Trustee User ID']]), [[trustId, ids.trustee]]);
    const shown = await openstackJson(trustorEnv, ['trust', 'show', trustId]);
    assert.equal(shown['trustor_user_id'], ids.trustor);

    // The trustee: keystoneauth's trust_id sends scope {"OS-TRUST:trust": {"id": ...}}.
    const script = `
import json, os, sys, openstack
conn = openstack.connect(auth_type='password', auth={
    'auth_url': os.environ['OS_AUTH_URL'], 'username': 'tr-trustee', 'password': 'pw-tr-trustee',
    'user_domain_id': 'default', 'trust_id': sys.argv[1]})
token = conn.session.get_token()
access = conn.session.auth.get_access(conn.session)
out = {'token': token, 'project': access.project_id, 'user': access.user_id, 'roles': sorted(access.role_names),
       'trust': access.trust_id, 'volumes': len(list(conn.block_storage.volumes())),
       'shown': conn.identity.get_trust(sys.argv[1]).trustor_user_id}
print(json.dumps(out))
`;
    // Only the auth URL from the environment: an OS_PROJECT_NAME would be a second scope beside the trust.
    const trusteeOnly = Object.fromEntries(Object.entries(pumice.adminEnv).filter(([k]) => !/^OS_(PROJECT|USER|PASSWORD|USERNAME)/.test(k)));
    const { stdout } = await execFileAsync('/usr/bin/python3', ['-c', script, trustId], { env: cliEnv(trusteeOnly), timeout: 60_000 });
    const out = JSON.parse(stdout.trim().split('\n').pop()!) as { token: string; project: string; user: string; roles: string[]; trust: string; volumes: number; shown: string };
    assert.deepEqual({ project: out.project, user: out.user, roles: out.roles, trust: out.trust, volumes: out.volumes, shown: out.shown },
      { project: ids.project, user: ids.trustee, roles: ['member', 'reader'], trust: trustId, volumes: 0, shown: ids.trustor });
    const validated = await admin.request('GET', '/identity/v3/auth/tokens', undefined, { 'X-Subject-Token': out.token });
    assert.equal(validated.status, 200, validated.text);
    assert.deepEqual(validated.body.token['OS-TRUST:trust'], { id: trustId, impersonation: false, trustee_user: { id: ids.trustee }, trustor_user: { id: ids.trustor } });
    assert.ok(!validated.body.token.roles.some((r: { name: string }) => r.name === 'tr-extra'), 'the trustor\'s other role is not delegated');

    await openstack(trustorEnv, ['trust', 'delete', trustId]);
    const afterDelete = await fetch(`${pumice.url}/volume/v3/${ids.project}/volumes`, { headers: { 'X-Auth-Token': out.token } });
    assert.equal(afterDelete.status, 401, 'the trust\'s token ends with it');
    assert.equal((await admin.request('GET', `/identity/v3/OS-TRUST/trusts/${trustId}`)).status, 404);
  });

  test('impersonation, remaining_uses, a stranger, a trust token exchanged, a role the trustor lacks', async () => {
    const trustor = await trustorClient();
    const create = (extra: Record<string, unknown>) => trustor.request('POST', '/identity/v3/OS-TRUST/trusts', {
      trust: { trustor_user_id: ids.trustor, trustee_user_id: ids.trustee, project_id: ids.project, roles: [{ name: 'tr-extra' }], impersonation: false, ...extra },
    });
    const impersonating = await create({ impersonation: true, remaining_uses: 1 });
    assert.equal(impersonating.status, 201, impersonating.text);
    const trustId = impersonating.body.trust.id as string;
    assert.equal(impersonating.body.trust.remaining_uses, 1);

    const stranger = await passwordToken('tr-stranger', { 'OS-TRUST:trust': { id: trustId } });
    assert.equal(stranger.status, 403, stranger.text);
    assert.match(stranger.text, /not the trustee/);

    const first = await passwordToken('tr-trustee', { 'OS-TRUST:trust': { id: trustId } });
    assert.equal(first.status, 201, first.text);
    assert.equal(first.body.token.user.id, ids.trustor, 'impersonation: the token is the trustor\'s');
    assert.deepEqual(first.body.token.roles.map((r: { name: string }) => r.name), ['tr-extra']);
    assert.equal(first.body.token.project.id, ids.project);
    const spent = await passwordToken('tr-trustee', { 'OS-TRUST:trust': { id: trustId } });
    assert.equal(spent.status, 403, spent.text);
    assert.match(spent.text, /no uses left/);

    // Exchanging the impersonating token for an ordinary one would hand the trustee the trustor's own token.
    const exchanged = await fetch(`${pumice.url}/identity/v3/auth/tokens`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ auth: { identity: { methods: ['token'], token: { id: first.token } }, scope: { project: { id: ids.project } } } }),
    });
    assert.equal(exchanged.status, 403, await exchanged.text());

    const notHeld = await create({ roles: [{ name: 'admin' }] });
    assert.equal(notHeld.status, 403, notHeld.text);
    assert.match(notHeld.text, /does not hold role admin/);
    const asSomeoneElse = await trustor.request('POST', '/identity/v3/OS-TRUST/trusts', {
      trust: { trustor_user_id: ids.stranger, trustee_user_id: ids.trustee, project_id: ids.project, roles: [{ name: 'member' }], impersonation: false },
    });
    assert.equal(asSomeoneElse.status, 403, asSomeoneElse.text);

    // The trustee sees the trust; a stranger neither sees nor lists it.
    const trustee = await passwordToken('tr-trustee', undefined);
    const seen = await fetch(`${pumice.url}/identity/v3/OS-TRUST/trusts/${trustId}`, { headers: { 'X-Auth-Token': trustee.token } });
    assert.equal(seen.status, 200);
    const strangerToken = (await passwordToken('tr-stranger', undefined)).token;
    assert.equal((await fetch(`${pumice.url}/identity/v3/OS-TRUST/trusts/${trustId}`, { headers: { 'X-Auth-Token': strangerToken } })).status, 403);
    const strangerList = await (await fetch(`${pumice.url}/identity/v3/OS-TRUST/trusts`, { headers: { 'X-Auth-Token': strangerToken } })).json() as { trusts: unknown[] };
    assert.equal(strangerList.trusts.length, 0);

    // The trustor losing the delegated role ends the trust's tokens.
    const second = await create({ roles: [{ name: 'member' }] });
    const token = (await passwordToken('tr-trustee', { 'OS-TRUST:trust': { id: second.body.trust.id } })).token;
    assert.equal((await fetch(`${pumice.url}/volume/v3/${ids.project}/volumes`, { headers: { 'X-Auth-Token': token } })).status, 200);
    const member = ((await admin.request('GET', '/identity/v3/roles?name=member')).body.roles as { id: string }[])[0]!.id;
    assert.equal((await admin.request('DELETE', `/identity/v3/projects/${ids.project}/users/${ids.trustor}/roles/${member}`)).status, 204);
    assert.equal((await fetch(`${pumice.url}/volume/v3/${ids.project}/volumes`, { headers: { 'X-Auth-Token': token } })).status, 401);
  });
});
