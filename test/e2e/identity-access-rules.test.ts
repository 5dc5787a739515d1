/**
 * Application credential access rules (issue 18): created with the
 * openstack CLI (`--access-rules`) and through the API, shown with their
 * ids, used through openstacksdk (v3applicationcredential), and
 * enforced on every request made with a token from the credential: the
 * service type, the method and the path (`*` one segment, `**` any) must
 * match a rule, else a 401 naming the credential, before any handler runs.
 * The rules themselves (/v3/users/{id}/access_rules) are listed, shown and
 * deleted with `openstack access rule`: credentials naming the same rule
 * share it, and it can be deleted only once no credential uses it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ApiClient, cliEnv, openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);

let pumice: PumiceProcess;
let admin: ApiClient;

/** A token from an application credential (the application_credential auth method). */
async function appCredToken(id: string, secret: string): Promise<ApiClient> {
  const res = await fetch(`${pumice.url}/identity/v3/auth/tokens`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ auth: { identity: { methods: ['application_credential'], application_credential: { id, secret } } } }),
  });
  assert.equal(res.status, 201, await res.text());
  const client = new ApiClient(pumice.url);
  client.token = res.headers.get('x-subject-token')!;
  client.projectId = admin.projectId;
  return client;
}

before(async () => {
  pumice = await startPumice();
  admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
}, { timeout: 120_000 });

after(async () => {
  if (pumice) {
    await pumice.stop();
    pumice.cleanup();
  }
});

describe('application credential access rules', { timeout: 120_000 }, () => {
  test('the openstack CLI creates a credential with access rules; used through openstacksdk it may list images but not volumes', async () => {
    // openstacksdk 0.101 has no access_rules on its ApplicationCredential resource; OSC 6.0's --access-rules sends them.
    const created = await openstackJson(pumice.adminEnv, ['application', 'credential', 'create', '--access-rules', JSON.stringify([{ service: 'image', method: 'GET', path: '/v2/images' }]), 'ar-cli']);
    const rules = created['access_rules'] as { id: string; service: string; method: string; path: string }[];
    assert.equal(rules.length, 1);
    assert.deepEqual({ service: rules[0]!.service, method: rules[0]!.method, path: rules[0]!.path }, { service: 'image', method: 'GET', path: '/v2/images' });
    assert.match(rules[0]!.id, /^[0-9a-f]{32}$/);
    const script = `
import json, os, sys, openstack
limited = openstack.connect(auth_type='v3applicationcredential', auth={
    'auth_url': os.environ['OS_AUTH_URL'], 'application_credential_id': sys.argv[1], 'application_credential_secret': sys.argv[2]})
out = {'images': len(list(limited.image.images()))}
try:
    list(limited.block_storage.volumes())
    out['volumes'] = 'allowed'
except openstack.exceptions.HttpException as e:
    out['volumes'] = e.status_code
    out['volumes_message'] = str(e)
print(json.dumps(out))
`;
    const { stdout } = await execFileAsync('/usr/bin/python3', ['-c', script, created['id'] as string, created['secret'] as string], { env: cliEnv(pumice.adminEnv), timeout: 60_000 });
    const out = JSON.parse(stdout.trim().split('\n').pop()!) as { images: number; volumes: unknown; volumes_message?: string };
    assert.equal(out.images, 0);
    assert.equal(out.volumes, 401, `volumes must be refused: ${String(out.volumes_message)}`);
  });

  test('rules match service, method and path (* one segment, ** any); anything else is a 401 naming the credential', async () => {
    const created = await admin.request('POST', `/identity/v3/users/${admin.userId}/application_credentials`, {
      application_credential: {
        name: 'ar-api',
        access_rules: [
          { service: 'image', method: 'GET', path: '/v2/images/*' },
          { service: 'image', method: 'GET', path: '/v2/images' },
          { service: 'volumev3', method: 'GET', path: '/v3/**' },
        ],
      },
    });
    assert.equal(created.status, 201, created.text);
    const credential = created.body.application_credential;
    assert.deepEqual(credential.access_rules.map((r: { path: string }) => r.path), ['/v2/images/*', '/v2/images', '/v3/**']);
    const shown = await admin.request('GET', `/identity/v3/users/${admin.userId}/application_credentials/${credential.id}`);
    assert.deepEqual(shown.body.application_credential.access_rules, credential.access_rules);

    const limited = await appCredToken(credential.id, credential.secret);
    assert.equal((await limited.request('GET', '/image/v2/images')).status, 200);
    assert.equal((await limited.request('GET', '/image/v2/images/00000000-0000-4000-8000-000000000000')).status, 404, 'allowed through, then not found');
    assert.equal((await limited.request('HEAD', '/image/v2/images')).status, 200, 'a GET rule allows HEAD');
    assert.equal((await limited.request('GET', `/volume/v3/${admin.projectId}/volumes`)).status, 200);
    assert.equal((await limited.request('GET', `/volume/v3/${admin.projectId}/types`)).status, 200);
    for (const [method, path] of [
      ['GET', '/image/v2/images/00000000-0000-4000-8000-000000000000/members'],
      ['POST', '/image/v2/images'],
      ['GET', '/identity/v3/users'],
      ['GET', '/compute/v2.1/servers'],
      ['POST', `/volume/v3/${admin.projectId}/volumes`],
    ] as const) {
      const refused = await limited.request(method, path, method === 'POST' ? {} : undefined);
      assert.equal(refused.status, 401, `${method} ${path}: ${refused.text}`);
      assert.match(refused.text, new RegExp(`access rules of application credential ${credential.id} do not allow ${method}`));
    }
    const images = (await admin.request('GET', '/image/v2/images')).body.images;
    assert.equal(images.length, 0, 'the refused POST created nothing');
  });

  test('openstack access rule list/show/delete: a rule is shared by credentials, kept after them and deleted only when unused', async () => {
    const rule = { service: 'compute', method: 'GET', path: '/v2.1/servers' };
    const base = `/identity/v3/users/${admin.userId}/application_credentials`;
    const first = await admin.request('POST', base, { application_credential: { name: 'ar-share-1', access_rules: [rule] } });
    assert.equal(first.status, 201, first.text);
    const ruleId = first.body.application_credential.access_rules[0].id as string;
    // A second credential naming the same rule, and a third naming it by id only, share its id.
    const second = await admin.request('POST', base, { application_credential: { name: 'ar-share-2', access_rules: [rule] } });
    const third = await admin.request('POST', base, { application_credential: { name: 'ar-share-3', access_rules: [{ id: ruleId }] } });
    assert.equal(second.body.application_credential.access_rules[0].id, ruleId, second.text);
    assert.deepEqual(third.body.application_credential.access_rules, [{ id: ruleId, ...rule }], third.text);

    const listed = await openstackJson<{ ID: string; Service: string; Method: string; Path: string }[]>(pumice.adminEnv, ['access', 'rule', 'list']);
    assert.equal(listed.filter((r) => r.ID === ruleId).length, 1, JSON.stringify(listed));
    assert.deepEqual(listed.find((r) => r.ID === ruleId), { ID: ruleId, Service: 'compute', Method: 'GET', Path: '/v2.1/servers' });
    const shown = await openstackJson(pumice.adminEnv, ['access', 'rule', 'show', ruleId]);
    assert.deepEqual({ id: shown['id'], service: shown['service'], method: shown['method'], path: shown['path'] }, { id: ruleId, ...rule });

    // In use: refused with a 403 naming a credential that uses it.
    const inUse = await admin.request('DELETE', `/identity/v3/users/${admin.userId}/access_rules/${ruleId}`);
    assert.equal(inUse.status, 403, inUse.text);
    assert.match(inUse.text, /in use: application credential [0-9a-f]{32} \(ar-share-[123]\)/);
    for (const cred of [first, second, third]) assert.equal((await admin.request('DELETE', `${base}/${cred.body.application_credential.id}`)).status, 204);
    // The rule outlives its credentials, until deleted.
    assert.equal((await admin.request('GET', `/identity/v3/users/${admin.userId}/access_rules/${ruleId}`)).status, 200);
    await openstack(pumice.adminEnv, ['access', 'rule', 'delete', ruleId]);
    const gone = await admin.request('GET', `/identity/v3/users/${admin.userId}/access_rules/${ruleId}`);
    assert.equal(gone.status, 404, gone.text);
    const after = await openstackJson<{ ID: string }[]>(pumice.adminEnv, ['access', 'rule', 'list']);
    assert.ok(!after.some((r) => r.ID === ruleId));
    // Naming a rule id that is not the user's is a 404 and creates nothing.
    const unknown = await admin.request('POST', base, { application_credential: { name: 'ar-unknown', access_rules: [{ id: ruleId }] } });
    assert.equal(unknown.status, 404, unknown.text);
    assert.equal((await admin.request('GET', `${base}?name=ar-unknown`)).body.application_credentials.length, 0);
  });
});
