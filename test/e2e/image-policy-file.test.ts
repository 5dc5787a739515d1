/**
 * `[oslo_policy] policy_file` overrides Glance's defaults by rule name, and a
 * rule that does not parse stops the start naming the rule.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiClient, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

describe('policy file overrides', () => {
  let pumice: PumiceProcess;
  let work = '';

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'policy-file-'));
    const policyPath = join(work, 'policy.yaml');
    writeFileSync(policyPath, [
      '# Only admins may deactivate; listing images needs the auditor role (or admin).',
      '"deactivate": "role:admin"',
      '"get_images": "role:admin or role:auditor"',
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
    const project = (await admin.request('POST', '/identity/v3/projects', { project: { name: 'pf', domain_id: 'default' } })).body.project.id as string;
    const user = (await admin.request('POST', '/identity/v3/users', { user: { name: 'pf-member', password: 'pw', domain_id: 'default' } })).body.user.id as string;
    assert.equal((await admin.request('PUT', `/identity/v3/projects/${project}/users/${user}/roles/${roles[0]!.id}`)).status, 204);
    const member = await ApiClient.login(pumice.url, 'pf-member', 'pw', 'pf');

    const created = await member.request('POST', '/image/v2/images', { name: 'pf', disk_format: 'raw', container_format: 'bare' });
    assert.equal(created.status, 201, created.text);
    const put = await fetch(`${pumice.url}/image/v2/images/${created.body.id}/file`, {
      method: 'PUT', headers: { 'X-Auth-Token': member.token, 'Content-Type': 'application/octet-stream' }, body: 'data',
    });
    assert.equal(put.status, 204);
    const refused = await member.request('POST', `/image/v2/images/${created.body.id}/actions/deactivate`);
    assert.equal(refused.status, 403, refused.text);
    assert.match(refused.body.forbidden.message, /deactivate/);
    assert.equal((await admin.request('POST', `/image/v2/images/${created.body.id}/actions/deactivate`)).status, 204);
    assert.equal((await member.request('GET', '/image/v2/images')).status, 403);
    assert.equal((await admin.request('GET', '/image/v2/images')).status, 200);
    // modify_image keeps Glance's default: the owner's member may rename.
    const renamed = await member.request('PATCH', `/image/v2/images/${created.body.id}`, [{ op: 'replace', path: '/name', value: 'pf2' }], { 'Content-Type': 'application/openstack-images-v2.1-json-patch' });
    assert.equal(renamed.status, 200, renamed.text);
  });

  test('a rule that does not parse stops the start, naming the rule', async () => {
    const badPath = join(work, 'bad.yaml');
    writeFileSync(badPath, '"deactivate": "role:admin or"\n');
    await assert.rejects(
      startPumice({ config: `[oslo_policy]\npolicy_file = ${badPath}\n` }),
      /policy file rule 'deactivate'/,
    );
  });
});
