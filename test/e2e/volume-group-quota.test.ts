/**
 * The groups quota (Cinder's `quota_groups`): the default comes from
 * `[DEFAULT] quota_groups`, os-quota-sets?usage=true counts the project's
 * groups, and a group past the limit is refused with Cinder's 413.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ApiClient, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

describe('volume groups quota', { timeout: 120_000 }, () => {
  let pumice: PumiceProcess;
  let admin: ApiClient;
  const at = (mv: string) => ({ 'OpenStack-API-Version': `volume ${mv}` });

  before(async () => {
    pumice = await startPumice({ config: '[DEFAULT]\nquota_groups = 1\n' });
    admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  });

  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
  });

  test('the default comes from quota_groups, usage counts groups, one past the limit is a 413', async () => {
    const quota = async () => (await admin.request('GET', `${admin.volumeUrl}/os-quota-sets/${admin.projectId}?usage=true`)).body.quota_set.groups;
    assert.deepEqual(await quota(), { limit: 1, in_use: 0, reserved: 0, allocated: 0 });
    const groupType = await admin.request('POST', `${admin.volumeUrl}/group_types`, { group_type: { name: 'gq' } }, at('3.11'));
    assert.equal(groupType.status, 202, groupType.text);
    const volumeType = (await admin.request('GET', `${admin.volumeUrl}/types`)).body.volume_types[0].id as string;
    const body = (name: string) => ({ group: { name, group_type: groupType.body.group_type.id, volume_types: [volumeType] } });
    const first = await admin.request('POST', `${admin.volumeUrl}/groups`, body('gq-1'), at('3.13'));
    assert.equal(first.status, 202, first.text);
    assert.deepEqual(await quota(), { limit: 1, in_use: 1, reserved: 0, allocated: 0 });
    const second = await admin.request('POST', `${admin.volumeUrl}/groups`, body('gq-2'), at('3.13'));
    assert.equal(second.status, 413, second.text);
    assert.match(second.text, /quota 'groups'.*raise the quota/);
    const groups = (await admin.request('GET', `${admin.volumeUrl}/groups`, undefined, at('3.13'))).body.groups as { name: string }[];
    assert.deepEqual(groups.map((g) => g.name), ['gq-1'], 'the refused group left nothing');
  });
});
