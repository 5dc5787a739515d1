/**
 * QoS specs and volume transfers through real clients, against a real `pumice serve`:
 * - `openstack volume qos create/associate` on a type; a back-end QoS on a local volume
 *   limits what `qemu-img bench` reads over the attachment's NBD export to within 10% of
 *   total_bytes_sec, and a connection made after the QoS is disassociated is not limited
 *   (so the limit is the QoS, not the machine);
 * - a front-end QoS reaches the consumer as connection_info.qos_specs (`_per_gb` scaled);
 * - `openstack volume transfer request create/accept` moves a volume to another project,
 *   and the quota usage with it; openstacksdk drives /volume-transfers at 3.57.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { ApiClient, cliEnv, openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const MV = { 'OpenStack-API-Version': 'volume 3.57' };
const MiB = 1024 * 1024;
const connector = { host: 'qos-host', ip: '127.0.0.1', initiator: 'iqn.1993-08.org.debian:01:qos', platform: 'x86_64', os_type: 'linux', multipath: false };

/** qemu-img bench reads `count` requests of `sizeBytes` over the export; the rate from its own timing (no process start). */
async function benchReadBytesPerSec(info: { host: string; port: number; export_name: string }, count: number, sizeBytes: number): Promise<number> {
  const { stdout } = await execFileAsync('qemu-img', ['bench', '-f', 'raw', '-c', String(count), '-d', '1', '-s', String(sizeBytes), `nbd://${info.host}:${info.port}/${info.export_name}`], { timeout: 60_000 });
  const seconds = Number(/Run completed in ([\d.]+) seconds/.exec(stdout)?.[1]);
  assert.ok(seconds > 0, stdout);
  return (count * sizeBytes) / seconds;
}

describe('QoS specs and volume transfers', { timeout: 300_000 }, () => {
  let pumice: PumiceProcess;
  let admin: ApiClient;
  let dest: ApiClient;
  let destEnv: Record<string, string>;

  const waitVolume = (client: ApiClient, id: string, statuses: string[]) => client.waitVolume(id, statuses, 60_000);

  before(async () => {
    pumice = await startPumice();
    admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    // The receiving project and its member, through the Identity API (cheaper than three CLI runs).
    const project = await admin.request('POST', '/identity/v3/projects', { project: { name: 'xfer-dest', domain_id: 'default' } });
    assert.equal(project.status, 201, project.text);
    const user = await admin.request('POST', '/identity/v3/users', { user: { name: 'xfer-user', password: 'pw-xfer-user', domain_id: 'default' } });
    assert.equal(user.status, 201, user.text);
    const role = (await admin.request('GET', '/identity/v3/roles?name=member')).body.roles[0].id as string;
    const grant = await admin.request('PUT', `/identity/v3/projects/${project.body.project.id}/users/${user.body.user.id}/roles/${role}`);
    assert.equal(grant.status, 204, grant.text);
    dest = await ApiClient.login(pumice.url, 'xfer-user', 'pw-xfer-user', 'xfer-dest');
    destEnv = { ...pumice.adminEnv, OS_USERNAME: 'xfer-user', OS_PASSWORD: 'pw-xfer-user', OS_PROJECT_NAME: 'xfer-dest' };
  });

  after(async () => {
    await pumice?.stop();
  });

  test('back-end QoS limits NBD reads of a local volume to total_bytes_sec (within 10%)', async () => {
    const limitBytesPerSec = 4 * MiB;
    const qos = await openstackJson(pumice.adminEnv, ['volume', 'qos', 'create', '--consumer', 'back-end', '--property', `total_bytes_sec=${limitBytesPerSec}`, 'nbd-limit']);
    assert.equal(qos['consumer'], 'back-end');
    const type = await admin.request('POST', `${admin.volumeUrl}/types`, { volume_type: { name: 'limited' } });
    assert.equal(type.status, 200, type.text);
    await openstack(pumice.adminEnv, ['volume', 'qos', 'associate', 'nbd-limit', 'limited']);
    const shownType = await admin.request('GET', `${admin.volumeUrl}/types/${type.body.volume_type.id}`);
    assert.equal(shownType.body.volume_type.qos_specs_id, qos['id']);

    const created = await admin.request('POST', `${admin.volumeUrl}/volumes`, { volume: { size: 1, volume_type: 'limited', name: 'limited' } });
    assert.equal(created.status, 202, created.text);
    const volumeId = created.body.volume.id as string;
    await waitVolume(admin, volumeId, ['available']);
    const attached = await admin.request('POST', `${admin.volumeUrl}/attachments`, { attachment: { volume_uuid: volumeId, instance_uuid: randomUUID(), connector } }, MV);
    assert.equal(attached.status, 200, attached.text);
    const info = attached.body.attachment.connection_info;
    assert.equal(info.qos_specs, null, 'a back-end spec is not handed to the consumer');

    // 12 MiB in 128 KiB reads: 3 s at the limit.
    const limited = await benchReadBytesPerSec(info, 96, 128 * 1024);
    assert.ok(Math.abs(limited - limitBytesPerSec) / limitBytesPerSec < 0.1, `measured ${(limited / MiB).toFixed(2)} MiB/s, limit ${limitBytesPerSec / MiB} MiB/s`);

    // Disassociated: the next connection is not paced (the machine reads far faster than 4 MiB/s).
    const disassociated = await admin.request('GET', `${admin.volumeUrl}/qos-specs/${qos['id']}/disassociate?vol_type_id=${type.body.volume_type.id}`);
    assert.equal(disassociated.status, 202, disassociated.text);
    const again = await admin.request('POST', `${admin.volumeUrl}/volumes/${volumeId}/action`, { 'os-initialize_connection': { connector: { ...connector, host: 'unlimited-host' } } });
    assert.equal(again.status, 200, again.text);
    const free = await benchReadBytesPerSec(again.body.connection_info.data, 96, 128 * 1024);
    assert.ok(free > 3 * limitBytesPerSec, `without QoS: ${(free / MiB).toFixed(1)} MiB/s`);
    console.log(`# NBD read rate: limit ${limitBytesPerSec / MiB} MiB/s, measured ${(limited / MiB).toFixed(2)} MiB/s with QoS, ${(free / MiB).toFixed(1)} MiB/s without`);

    await admin.request('DELETE', `${admin.volumeUrl}/attachments/${attached.body.attachment.id}`, undefined, MV);
    await admin.request('POST', `${admin.volumeUrl}/volumes/${volumeId}/action`, { 'os-terminate_connection': { connector: { ...connector, host: 'unlimited-host' } } });
    await waitVolume(admin, volumeId, ['available']);
    assert.equal((await admin.request('DELETE', `${admin.volumeUrl}/volumes/${volumeId}`)).status, 202);
    await waitVolume(admin, volumeId, ['deleted']);
    // A spec still associated cannot be deleted without force.
    await admin.request('GET', `${admin.volumeUrl}/qos-specs/${qos['id']}/associate?vol_type_id=${type.body.volume_type.id}`);
    const refused = await admin.request('DELETE', `${admin.volumeUrl}/qos-specs/${qos['id']}`);
    assert.equal(refused.status, 400, refused.text);
    assert.match(refused.body.badRequest.message, /still associated with volume types \(limited\).*force/);
    assert.equal((await admin.request('DELETE', `${admin.volumeUrl}/qos-specs/${qos['id']}?force=True`)).status, 202);
    assert.equal((await admin.request('GET', `${admin.volumeUrl}/types/${type.body.volume_type.id}`)).body.volume_type.qos_specs_id, null);
  });

  test('front-end QoS reaches the consumer in the connection info, _per_gb scaled by the size', async () => {
    const qos = await admin.request('POST', `${admin.volumeUrl}/qos-specs`, { qos_specs: { name: 'front', consumer: 'front-end', total_iops_sec: '500', read_bytes_sec_per_gb: 1048576 } });
    assert.equal(qos.status, 200, qos.text);
    const type = await admin.request('POST', `${admin.volumeUrl}/types`, { volume_type: { name: 'throttled' } });
    assert.equal((await admin.request('GET', `${admin.volumeUrl}/qos-specs/${qos.body.qos_specs.id}/associate?vol_type_id=${type.body.volume_type.id}`)).status, 202);
    const created = await admin.request('POST', `${admin.volumeUrl}/volumes`, { volume: { size: 2, volume_type: 'throttled' } });
    await waitVolume(admin, created.body.volume.id, ['available']);
    const connected = await admin.request('POST', `${admin.volumeUrl}/volumes/${created.body.volume.id}/action`, { 'os-initialize_connection': { connector } });
    assert.equal(connected.status, 200, connected.text);
    assert.deepEqual(connected.body.connection_info.data.qos_specs, { total_iops_sec: '500', read_bytes_sec: '2097152' });
    const associations = await admin.request('GET', `${admin.volumeUrl}/qos-specs/${qos.body.qos_specs.id}/associations`);
    assert.deepEqual(associations.body.qos_associations, [{ association_type: 'volume_type', id: type.body.volume_type.id, name: 'throttled' }]);
    await admin.request('POST', `${admin.volumeUrl}/volumes/${created.body.volume.id}/action`, { 'os-terminate_connection': { connector } });
    assert.equal((await admin.request('DELETE', `${admin.volumeUrl}/volumes/${created.body.volume.id}`)).status, 202);
  });

  test('openstack volume transfer request create/accept moves the volume and its quota usage', async () => {
    const created = await admin.request('POST', `${admin.volumeUrl}/volumes`, { volume: { size: 1, name: 'gift' } });
    const volumeId = created.body.volume.id as string;
    await waitVolume(admin, volumeId, ['available']);
    const usage = async (client: ApiClient) => (await client.request('GET', `${client.volumeUrl}/os-quota-sets/${client.projectId}?usage=true`)).body.quota_set;
    const sourceBefore = await usage(admin);
    const destBefore = await usage(dest);

    const offered = await openstackJson(pumice.adminEnv, ['--os-volume-api-version', '3.55', 'volume', 'transfer', 'request', 'create', '--name', 'gift', volumeId]);
    assert.equal(offered['volume_id'], volumeId);
    assert.match(offered['auth_key'] as string, /^[0-9a-f]{16}$/);
    assert.equal((await admin.request('GET', `${admin.volumeUrl}/volumes/${volumeId}`)).body.volume.status, 'awaiting-transfer');
    const accepted = await openstackJson(destEnv, ['volume', 'transfer', 'request', 'accept', '--auth-key', offered['auth_key'] as string, offered['id'] as string]);
    assert.equal(accepted['volume_id'], volumeId);

    const mine = await dest.request('GET', `${dest.volumeUrl}/volumes/${volumeId}`);
    assert.equal(mine.status, 200, mine.text);
    assert.equal(mine.body.volume.status, 'available');
    assert.equal((await admin.request('GET', `${admin.volumeUrl}/volumes/${volumeId}`)).status, 200, 'the admin still sees it (any project)');
    const sourceAfter = await usage(admin);
    const destAfter = await usage(dest);
    assert.equal(sourceAfter.volumes.in_use, sourceBefore.volumes.in_use - 1);
    assert.equal(sourceAfter.gigabytes.in_use, sourceBefore.gigabytes.in_use - 1);
    assert.equal(destAfter.volumes.in_use, destBefore.volumes.in_use + 1);
    assert.equal(destAfter.gigabytes.in_use, destBefore.gigabytes.in_use + 1);

    // A full destination quota refuses the next accept, and nothing moves.
    const next = await admin.request('POST', `${admin.volumeUrl}/volumes`, { volume: { size: 1, name: 'too-much' } });
    await waitVolume(admin, next.body.volume.id, ['available']);
    assert.equal((await admin.request('PUT', `${admin.volumeUrl}/os-quota-sets/${dest.projectId}`, { quota_set: { volumes: 1 } })).status, 200);
    const offer2 = await admin.request('POST', `${admin.volumeUrl}/os-volume-transfer`, { transfer: { volume_id: next.body.volume.id } });
    const full = await dest.request('POST', `${dest.volumeUrl}/os-volume-transfer/${offer2.body.transfer.id}/accept`, { accept: { auth_key: offer2.body.transfer.auth_key } });
    assert.equal(full.status, 413, full.text);
    assert.match(full.text, /VolumeLimitExceeded/);
    assert.equal((await admin.request('GET', `${admin.volumeUrl}/volumes/${next.body.volume.id}`)).body.volume.status, 'awaiting-transfer');
    assert.equal((await admin.request('DELETE', `${admin.volumeUrl}/os-volume-transfer/${offer2.body.transfer.id}`)).status, 202);
    assert.equal((await admin.request('GET', `${admin.volumeUrl}/volumes/${next.body.volume.id}`)).body.volume.status, 'available');
  });

  test('openstacksdk drives /volume-transfers at 3.57', async () => {
    const created = await dest.request('POST', `${dest.volumeUrl}/volumes`, { volume: { size: 1, name: 'sdk-gift' } });
    assert.equal(created.status, 413, 'the destination is full');
    const volume = await admin.request('POST', `${admin.volumeUrl}/volumes`, { volume: { size: 1, name: 'sdk-gift' } });
    await waitVolume(admin, volume.body.volume.id, ['available']);
    const script = `
import json, sys, openstack
conn = openstack.connect()
bs = conn.block_storage
made = bs.post('/volume-transfers', json={'transfer': {'volume_id': sys.argv[1], 'name': 'sdk', 'no_snapshots': True}}, microversion='3.57').json()['transfer']
listed = bs.get('/volume-transfers/detail', microversion='3.57').json()['transfers']
shown = bs.get('/volume-transfers/' + made['id'], microversion='3.57').json()['transfer']
deleted = bs.delete('/volume-transfers/' + made['id'], microversion='3.57').status_code
gone = bs.get('/volume-transfers/' + made['id'], microversion='3.57').status_code
print(json.dumps({'made': made, 'listed': [t['id'] for t in listed], 'shown': shown, 'deleted': deleted, 'gone': gone}))
`;
    const { stdout } = await execFileAsync('/usr/bin/python3', ['-c', script, volume.body.volume.id], { env: cliEnv(pumice.adminEnv), timeout: 60_000 });
    const r = JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, any>;
    assert.equal(r['made'].no_snapshots, true);
    assert.equal(r['made'].accepted, false);
    assert.equal(r['made'].source_project_id, admin.projectId);
    assert.equal(r['made'].destination_project_id, null);
    assert.ok(r['listed'].includes(r['made'].id));
    assert.equal('auth_key' in r['shown'], false, 'the key is shown only at create');
    assert.equal(r['deleted'], 202);
    assert.equal(r['gone'], 404);
  });
});
