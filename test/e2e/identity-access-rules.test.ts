/**
 * Application credential access rules (issue 18): created with the
 * openstack CLI (`--access-rules`) and through the API, shown with their
 * ids, used through openstacksdk (v3applicationcredential), and
 * enforced on every request made with a token from the credential: the
 * service type, the method and the path (`*` one segment, `**` any) must
 * match a rule, else a 401 naming the credential, before any handler runs.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ApiClient, cliEnv, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

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
});
