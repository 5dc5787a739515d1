/**
 * The attachments API on the RBD backend of a real Ceph cluster: the
 * connection info carries what Nova's libvirt driver needs (the pool/image
 * name, the monitors of the lab's ceph.conf, client.cinder, the libvirt secret
 * uuid of the backend section), and QEMU opens the volume with exactly that
 * information (qemu-img / qemu-io with `rbd:POOL/IMAGE:id=USER:conf=...`).
 * Uses the lab in $PUMICE_CEPH_LAB when set, else brings one up and purges it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import type { CephLab } from '../../src/ceph/lab.ts';
import { labForTest, rbdBackendSection, type TestLab } from '../helpers/ceph-config.ts';
import { monitorAddresses } from '../../src/ceph/conf.ts';
import { ApiClient, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const secretUuid = '457eb676-33da-42ec-9a8c-9293d545c337';
const MV = { 'OpenStack-API-Version': 'volume 3.44' };

let lab: CephLab;
let testLab: TestLab | undefined;
let pumice: PumiceProcess;
let admin: ApiClient;

before(async () => {
  testLab = await labForTest('pumice-att-rbd');
  lab = testLab.lab;
  pumice = await startPumice({ config: `[DEFAULT]\nenabled_backends = ceph\n\n${rbdBackendSection(lab, { secretUuid })}` });
  admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
}, { timeout: 180_000 });

after(async () => {
  if (pumice) {
    await pumice.stop();
    pumice.cleanup();
  }
  await testLab?.release();
}, { timeout: 60_000 });

/** The RBD drive spec QEMU takes, built only from the connection info (plus where this host keeps ceph.conf and the keyring). */
function qemuRbdTarget(info: Record<string, any>): string {
  return `rbd:${info['name']}:id=${info['auth_username']}:conf=${lab.confPath}:keyring=${lab.keyringPath(info['auth_username'])}`;
}

async function tool(cmd: string, args: string[]): Promise<string> {
  const { stdout, stderr } = await execFileAsync(cmd, args, { timeout: 120_000 });
  return stdout + stderr;
}

describe('attachments on RBD', { timeout: 300_000 }, () => {
  test('connection info for Nova/libvirt, and QEMU opens the volume with it', async () => {
    const V = `/volume/v3/${admin.projectId}`;
    let r = await admin.request('POST', `${V}/volumes`, { volume: { size: 1, name: 'att-rbd' } });
    assert.equal(r.status, 202, r.text);
    const volumeId = r.body.volume.id as string;
    await admin.waitVolume(volumeId, ['available'], 60_000);

    r = await admin.request('POST', `${V}/attachments`, { attachment: { volume_uuid: volumeId, instance_uuid: randomUUID() } }, MV);
    assert.equal(r.status, 200, r.text);
    const attachmentId = r.body.attachment.id as string;
    assert.equal((await admin.waitVolume(volumeId, ['reserved'])).status, 'reserved');

    r = await admin.request('PUT', `${V}/attachments/${attachmentId}`, { attachment: { connector: { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.x', platform: 'x86_64', os_type: 'linux', multipath: false } } }, MV);
    assert.equal(r.status, 200, r.text);
    const info = r.body.attachment.connection_info as Record<string, any>;
    const monitors = monitorAddresses(/mon host = (.*)/.exec(await tool('cat', [lab.confPath]))![1]!);
    assert.ok(monitors.length > 0);
    assert.equal(info['driver_volume_type'], 'rbd');
    assert.equal(info['name'], `volumes/volume-${volumeId}`);
    assert.deepEqual(info['hosts'], monitors.map((m) => m.host));
    assert.deepEqual(info['ports'], monitors.map((m) => String(m.port)));
    assert.equal(info['auth_enabled'], true);
    assert.equal(info['auth_username'], 'cinder');
    assert.equal(info['secret_type'], 'ceph');
    assert.equal(info['secret_uuid'], secretUuid);
    assert.equal(info['cluster_name'], 'ceph');
    assert.equal(info['volume_id'], volumeId);
    assert.equal(info['discard'], true);
    assert.equal(info['access_mode'], 'rw');
    assert.equal(info['attachment_id'], attachmentId);
    assert.equal((await admin.waitVolume(volumeId, ['attaching'])).status, 'attaching');
    // Nothing secret in RBD's connection info: show gives the same fields.
    const shown = (await admin.request('GET', `${V}/attachments/${attachmentId}`, undefined, MV)).body.attachment.connection_info;
    for (const key of ['name', 'hosts', 'ports', 'auth_username', 'secret_uuid', 'secret_type']) assert.deepEqual(shown[key], info[key], key);

    // QEMU as the compute host would open it: client.cinder, the lab's ceph.conf.
    const target = qemuRbdTarget(info);
    const imgInfo = JSON.parse(await tool('qemu-img', ['info', '--output=json', '-f', 'raw', target])) as { 'virtual-size': number };
    assert.equal(imgInfo['virtual-size'], 1024 ** 3);
    const io = await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 0 1M', '-c', 'read -P 0x42 0 1M', target]);
    assert.doesNotMatch(io, /fail|error|mismatch/i, io);

    assert.equal((await admin.request('POST', `${V}/attachments/${attachmentId}/action`, { 'os-complete': null }, MV)).status, 204);
    const inUse = await admin.waitVolume(volumeId, ['in-use']);
    assert.equal(inUse.attachments[0].attachment_id, attachmentId);
    assert.equal(inUse.attachments[0].host_name, 'compute-1');

    assert.equal((await admin.request('POST', `${V}/volumes/${volumeId}/action`, { 'os-begin_detaching': null })).status, 202);
    assert.equal((await admin.waitVolume(volumeId, ['detaching'])).status, 'detaching');
    r = await admin.request('DELETE', `${V}/attachments/${attachmentId}`, undefined, MV);
    assert.equal(r.status, 200, r.text);
    assert.equal((await admin.waitVolume(volumeId, ['available'])).status, 'available');

    // The bytes written through QEMU are in the volume.
    const readBack = await tool('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x42 0 1M', target]);
    assert.doesNotMatch(readBack, /fail|error|mismatch/i, readBack);
    assert.equal((await admin.request('DELETE', `${V}/volumes/${volumeId}`)).status, 202);
  });
});
