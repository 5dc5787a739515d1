/**
 * Issue 12, error texts: what a project member reads about a failed
 * scheduling names the kind of reason and the figures of its own request,
 * never a backend's or host's name, free capacity or settings; an
 * administrator still reads every host (or backend), the filter that
 * rejected it and the figures (the server fault's details; the log for volumes).
 * A refused image upload quotes qemu-img without the server's file paths.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { memberProject, openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';
import { ComputeClient } from '../helpers/compute.ts';

const config = `[DEFAULT]
report_interval = 2

[libvirt]
virt_type = qemu
`;

describe('scheduler refusals: members get the reason, administrators the detail', () => {
  let pumice: PumiceProcess;
  let admin: ComputeClient;
  let member: ComputeClient;
  let projectId = '';
  let imageId = '';

  before(async () => {
    pumice = await startPumice({ config });
    admin = await ComputeClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const made = await memberProject(pumice.adminEnv, 'errors-p', 'errors-u');
    projectId = made.projectId;
    member = await ComputeClient.login(pumice.url, 'errors-u', 'pw-errors-u', 'errors-p');
    // No quota stands in the way: the scheduler is what refuses.
    await openstack(pumice.adminEnv, ['quota', 'set', '--ram', '-1', '--gigabytes', '-1', '--per-volume-gigabytes', '-1', 'errors-p']);
    await openstack(pumice.adminEnv, ['flavor', 'create', '--ram', String(4 * 1024 * 1024), '--disk', '1', '--vcpus', '1', '--public', 'errors-huge']);
    const created = await member.api.request('POST', '/image/v2/images', { name: 'tiny', disk_format: 'raw', container_format: 'bare' });
    assert.equal(created.status, 201, created.text);
    imageId = created.body.id;
    const put = await fetch(`${pumice.url}/image/v2/images/${imageId}/file`, {
      method: 'PUT', headers: { 'X-Auth-Token': member.api.token, 'Content-Type': 'application/octet-stream' }, body: new Uint8Array(1024 * 1024),
    });
    assert.equal(put.status, 204, await put.text());
    // The compute host has registered (else the refusal would only say that no host is available).
    for (const deadline = Date.now() + 60_000; Date.now() < deadline;) {
      const hypervisors = await admin.request('GET', '/os-hypervisors');
      if (hypervisors.body?.hypervisors?.length > 0) break;
      await new Promise((r) => setTimeout(r, 200));
    }
  }, { timeout: 180_000 });

  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
  });

  test('no host fits a server: the owner reads what was short, the admin each host, filter and free RAM', async () => {
    const flavor = await openstackJson(pumice.adminEnv, ['flavor', 'show', 'errors-huge']);
    const r = await member.request('POST', '/servers', { server: { name: 'no-room', flavorRef: flavor['id'], imageRef: imageId, networks: 'none' } });
    assert.equal(r.status, 202, r.text);
    const seen = (await member.waitServer(r.body.server.id, ['ERROR']))!;
    const fault = seen['fault'];
    assert.equal(fault.code, 500);
    assert.equal(fault.message, 'No valid host was found: not enough free RAM for 4194304 MiB.');
    assert.equal(fault.details, undefined, 'the details of a 500 fault are for administrators (Nova)');
    assert.doesNotMatch(JSON.stringify(seen), /RamFilter|MiB of RAM free|pumice:/);
    const asAdmin = (await admin.server(r.body.server.id))!;
    assert.equal(asAdmin['fault'].message, fault.message);
    assert.match(asAdmin['fault'].details, /Each compute host and the filter that rejected it: pumice: RamFilter \(-?\d+ MiB of RAM free \(with ram_allocation_ratio\) < 4194304 MiB asked\)/);
    assert.equal((await member.request('DELETE', `/servers/${r.body.server.id}`)).status, 204);
  });

  test('no backend fits a volume: the user message names the size asked, not the backend or its free space', async () => {
    const r = await member.api.request('POST', `/volume/v3/${projectId}/volumes`, { volume: { size: 900_000, name: 'too-big' } });
    assert.equal(r.status, 202, r.text);
    const volume = await member.api.waitVolume(r.body.volume.id, ['error']);
    assert.equal(volume.status, 'error');
    const messages = await member.api.request('GET', `/volume/v3/${projectId}/messages?resource_uuid=${r.body.volume.id}`, undefined, { 'OpenStack-API-Version': 'volume 3.3' });
    assert.equal(messages.status, 200, messages.text);
    const texts = messages.body.messages.map((m: { user_message: string }) => m.user_message);
    assert.deepEqual(texts, ['schedule allocate volume: No valid backend was found: not enough free capacity for 900000 GiB.']);
    assert.doesNotMatch(JSON.stringify(volume), /GiB free|GiB on|CapacityFilter|@/);
    // The operator's view keeps every backend, its filter and the figures.
    assert.match(pumice.output(), new RegExp(`scheduler: volume ${r.body.volume.id} of project ${projectId} \\(900000 GiB\\) not placed: No valid backend was found\\. CapacityFilter rejected backend pumice@\\S+: .*[\\d.]+ GiB`));
    assert.equal((await member.api.request('DELETE', `/volume/v3/${projectId}/volumes/${r.body.volume.id}`)).status, 202);
  });

  test("a refused image upload says why without naming the server's files", async () => {
    // A qcow2 header with an unknown version: qemu-img's refusal names the file it read.
    const header = Buffer.alloc(512);
    header.write('QFI\xfb', 0, 'latin1');
    header.writeUInt32BE(7, 4);
    const created = await member.api.request('POST', '/image/v2/images', { name: 'bad-qcow2', disk_format: 'qcow2', container_format: 'bare' });
    assert.equal(created.status, 201, created.text);
    const put = await fetch(`${pumice.url}/image/v2/images/${created.body.id}/file`, {
      method: 'PUT', headers: { 'X-Auth-Token': member.api.token, 'Content-Type': 'application/octet-stream' }, body: new Uint8Array(header),
    });
    const text = await put.text();
    assert.equal(put.status, 400, text);
    assert.match(text, /Unsupported qcow2 version 7/);
    assert.match(text, /Could not open '[0-9a-f-]{36}\.[0-9a-f]+\.tmp'/, 'the file name stays, its directory goes');
    assert.ok(!text.includes(pumice.dataDir), text);
    assert.doesNotMatch(text, /\/images\//);
    assert.equal((await member.api.request('GET', `/image/v2/images/${created.body.id}`)).body.status, 'queued');
  });
});
