/**
 * Identity (issues 11 and 18) through real clients: Debian's `openstack` CLI
 * (run in its interactive mode with commands on stdin, so one Python start
 * serves a whole session) and openstacksdk authenticating with
 * `auth_type=v3applicationcredential`, the way Terraform and CI jobs do.
 * Groups and their role assignments reach a user's token; a domain is
 * disabled then deleted; a credential is stored; an application credential
 * made with the CLI lists volumes through openstacksdk, and stops working
 * once deleted.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { cliEnv, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);

/** Runs `commands` in one `openstack` interactive session; returns stdout and stderr (the CLI reports command failures on stderr and goes on). */
async function openstackSession(osEnv: Record<string, string>, commands: string[]): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile('/usr/bin/openstack', [], { env: cliEnv(osEnv), timeout: 120_000, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`openstack session failed: ${stderr || error.message}`));
      else resolve({ stdout, stderr });
    });
    child.stdin!.end(commands.join('\n') + '\n');
  });
}

/** Every JSON document the session printed, in order (commands run with `-f json`). */
function jsonDocuments(text: string): unknown[] {
  const docs: unknown[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"' && depth > 0) inString = true;
    else if (c === '{' || c === '[') {
      if (depth === 0) start = i;
      depth++;
    } else if ((c === '}' || c === ']') && depth > 0) {
      depth--;
      if (depth === 0) docs.push(JSON.parse(text.slice(start, i + 1)));
    }
  }
  return docs;
}

const sdkScript = `
import json, sys, openstack
auth_url, ac_id, secret = sys.argv[1:4]
conn = openstack.connect(auth_type='v3applicationcredential', region_name='RegionOne', block_storage_api_version='3',
                         auth={'auth_url': auth_url, 'application_credential_id': ac_id, 'application_credential_secret': secret})
try:
    volumes = [v.name for v in conn.block_storage.volumes()]
    print(json.dumps({'ok': True, 'project_id': conn.current_project_id, 'volumes': volumes}))
except Exception as error:
    print(json.dumps({'ok': False, 'error': type(error).__name__, 'text': str(error)[:300]}))
`;

async function sdkListVolumes(authUrl: string, id: string, secret: string): Promise<{ ok: boolean; project_id?: string; volumes?: string[]; error?: string; text?: string }> {
  const { stdout } = await execFileAsync('/usr/bin/python3', ['-c', sdkScript, authUrl, id, secret], { env: cliEnv({}), timeout: 120_000 });
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

describe('Identity through the openstack CLI and openstacksdk', () => {
  let pumice: PumiceProcess;
  let admin: Record<string, string>;

  before(async () => {
    // Keystone's password rule: new passwords set through the API must match it (the test users' passwords do).
    pumice = await startPumice({ config: '[security_compliance]\npassword_regex = ^.{10,}$\npassword_regex_description = at least 10 characters\n' });
    admin = pumice.adminEnv;
  });
  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
  });

  test('groups, group role assignments, domains disabled then deleted, credentials (as admin, one CLI session)', async () => {
    const { stdout, stderr } = await openstackSession(admin, [
      'domain create --description cli idcli-dom -f json',
      'domain set --disable idcli-dom',
      'domain delete idcli-dom',
      'domain list -f json',
      'project create idcli-proj -f json',
      'user create --password pw-idcli-user idcli-user -f json',
      'group create --description cli idcli-group -f json',
      'group add user idcli-group idcli-user',
      'group contains user idcli-group idcli-user',
      'role add --group idcli-group --project idcli-proj member',
      'role assignment list --effective --names --user idcli-user -f json',
      'role assignment list --group idcli-group --names -f json',
      'credential create --type totp idcli-user idcli-blob -f json',
      'credential list --user idcli-user -f json',
      // For the next test: a CI user, member of its project.
      'project create idcli-ac-proj',
      'user create --password pw-idcli-ci idcli-ci',
      'role add --user idcli-ci --project idcli-ac-proj member',
    ]);
    assert.doesNotMatch(stderr, /\S/, stderr);
    const [domain, domains, , user, group, effective, groupAssignments, credential, credentials] = jsonDocuments(stdout) as any[];
    assert.equal(domain.name, 'idcli-dom');
    assert.deepEqual(domains.map((d: { Name: string }) => d.Name), ['Default'], 'the disabled domain was deleted');
    assert.equal(group.name, 'idcli-group');
    assert.match(stdout, /idcli-user in group idcli-group/);
    assert.deepEqual(effective.map((a: { Role: string; Project: string }) => [a.Role, a.Project]), [['member', 'idcli-proj@Default']]);
    assert.deepEqual(groupAssignments.map((a: { Role: string; Group: string }) => [a.Role, a.Group]), [['member', 'idcli-group@Default']]);
    assert.equal(credential.blob, 'idcli-blob');
    assert.deepEqual(credentials.map((c: { ID: string }) => c.ID), [credential.id]);

    // The group's role is what lets the user in: removed from the group, the user can no longer scope to the project.
    const login = () => fetch(`${admin['OS_AUTH_URL']}/auth/tokens`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name: 'idcli-user', domain: { id: 'default' }, password: 'pw-idcli-user' } } }, scope: { project: { name: 'idcli-proj', domain: { id: 'default' } } } } }),
    });
    assert.equal((await login()).status, 201);
    const adminToken = (await fetch(`${admin['OS_AUTH_URL']}/auth/tokens`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name: 'admin', domain: { id: 'default' }, password: admin['OS_PASSWORD'] } } }, scope: { project: { name: 'admin', domain: { id: 'default' } } } } }),
    })).headers.get('x-subject-token')!;
    const removed = await fetch(`${admin['OS_AUTH_URL']}/groups/${group.id}/users/${user.id}`, { method: 'DELETE', headers: { 'X-Auth-Token': adminToken } });
    assert.equal(removed.status, 204);
    assert.equal((await login()).status, 401);
  });

  test('an application credential made with the CLI lists volumes through openstacksdk (v3applicationcredential), and stops when deleted', async () => {
    const ci = { ...admin, OS_USERNAME: 'idcli-ci', OS_PASSWORD: 'pw-idcli-ci', OS_PROJECT_NAME: 'idcli-ac-proj' };
    const made = await openstackSession(ci, [
      'application credential create --role member --description terraform idcli-ac -f json',
      'application credential list -f json',
      'volume create --size 1 idcli-vol -f json',
    ]);
    assert.doesNotMatch(made.stderr, /\S/, made.stderr);
    const [appCred, listed] = jsonDocuments(made.stdout) as any[];
    assert.equal(appCred.roles, 'member');
    assert.ok(appCred.secret);
    assert.deepEqual(listed.map((a: { Name: string }) => a.Name), ['idcli-ac']);
    assert.ok(!JSON.stringify(listed).includes(appCred.secret), 'the secret is shown once');

    const seen = await sdkListVolumes(admin['OS_AUTH_URL']!, appCred.id, appCred.secret);
    assert.equal(seen.ok, true, JSON.stringify(seen));
    assert.equal(seen.project_id, appCred.project_id);
    assert.deepEqual(seen.volumes, ['idcli-vol']);

    const removed = await openstackSession(ci, ['application credential delete idcli-ac', 'application credential list -f json']);
    assert.doesNotMatch(removed.stderr, /\S/, removed.stderr);
    assert.deepEqual(jsonDocuments(removed.stdout)[0], []);
    const gone = await sdkListVolumes(admin['OS_AUTH_URL']!, appCred.id, appCred.secret);
    assert.equal(gone.ok, false, JSON.stringify(gone));
    assert.match(gone.text ?? '', /401|authenticat/i);
  });

  test('self-service password change with the CLI follows [security_compliance] password_regex', async () => {
    const ci = { ...admin, OS_USERNAME: 'idcli-ci', OS_PASSWORD: 'pw-idcli-ci', OS_PROJECT_NAME: 'idcli-ac-proj' };
    const refused = await openstackSession(ci, ['user password set --original-password pw-idcli-ci --password short']);
    assert.match(refused.stderr, /at least 10 characters.*\(HTTP 400\)/s);
    const changed = await openstackSession(ci, ['user password set --original-password pw-idcli-ci --password pw-idcli-ci-new']);
    assert.doesNotMatch(changed.stderr, /\S/, changed.stderr);
    const login = (password: string) => fetch(`${admin['OS_AUTH_URL']}/auth/tokens`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name: 'idcli-ci', domain: { id: 'default' }, password } } } } }),
    }).then((r) => r.status);
    assert.equal(await login('pw-idcli-ci-new'), 201);
    assert.equal(await login('pw-idcli-ci'), 401);
  });
});
