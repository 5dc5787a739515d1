/**
 * `[oslo_policy] policy_file` overrides the Block Storage API's Cinder rules by
 * name (src/volume/api/policy.ts): tightened and loosened rules apply, the
 * others keep their defaults.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiClient, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

describe('Block Storage policy file overrides', () => {
  let pumice: PumiceProcess;
  let work = '';

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'volume-policy-file-'));
    const policyPath = join(work, 'policy.yaml');
    writeFileSync(policyPath, [
      '# Only admins create volumes; members may read the host list and extra specs.',
      '"volume:create": "role:admin"',
      '"volume_extension:hosts": "rule:admin_api or role:member"',
      '"volume_extension:types_extra_specs:index": "rule:admin_api or role:member"',
    ].join('\n'));
    pumice = await startPumice({ config: `[oslo_policy]\npolicy_file = ${policyPath}\n` });
  });
  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  test('overridden rules apply; the others keep their defaults', async () => {
    const admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const roles = (await admin.request('GET', '/identity/v3/roles?name=member')).body.roles as { id: string }[];
    const project = (await admin.request('POST', '/identity/v3/projects', { project: { name: 'vpf', domain_id: 'default' } })).body.project.id as string;
    const user = (await admin.request('POST', '/identity/v3/users', { user: { name: 'vpf-member', password: 'pw', domain_id: 'default' } })).body.user.id as string;
    assert.equal((await admin.request('PUT', `/identity/v3/projects/${project}/users/${user}/roles/${roles[0]!.id}`)).status, 204);
    const member = await ApiClient.login(pumice.url, 'vpf-member', 'pw', 'vpf');

    const refused = await member.request('POST', `${member.volumeUrl}/volumes`, { volume: { size: 1 } });
    assert.equal(refused.status, 403, refused.text);
    assert.match(refused.body.forbidden.message, /volume:create/);
    const made = await admin.request('POST', `${admin.volumeUrl}/volumes`, { volume: { size: 1 } });
    assert.equal(made.status, 202, made.text);

    assert.equal((await member.request('GET', `${member.volumeUrl}/os-hosts`)).status, 200);
    const defaultType = (await member.request('GET', `${member.volumeUrl}/types/default`)).body.volume_type.id as string;
    assert.equal((await member.request('GET', `${member.volumeUrl}/types/${defaultType}/extra_specs`)).status, 200);
    // Defaults elsewhere: members list volumes, only admins list services or create types.
    assert.equal((await member.request('GET', `${member.volumeUrl}/volumes`)).status, 200);
    assert.equal((await member.request('GET', `${member.volumeUrl}/os-services`)).status, 403);
    assert.equal((await member.request('POST', `${member.volumeUrl}/types`, { volume_type: { name: 'nope' } })).status, 403);
  });
});
