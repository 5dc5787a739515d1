/**
 * QoS and manage/unmanage on the RBD backend of a real Ceph cluster:
 * - a back-end QoS spec on the volume's type becomes librbd's per-image options once the
 *   volume is connected: `rbd config image list` shows rbd_qos_iops_limit / rbd_qos_bps_limit;
 * - an RBD image made outside Pumice is listed as manageable, adopted as a volume without a
 *   copy, and unmanaged back under its own name with the same content (sha256 of `rbd export`
 *   before, while managed, and after).
 * Uses the lab in $PUMICE_CEPH_LAB when set, else brings one up and purges it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { CephLab } from '../../src/ceph/lab.ts';
import { labForTest, rbdBackendSection, type TestLab } from '../helpers/ceph-config.ts';
import { ApiClient, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const MV = { 'OpenStack-API-Version': 'volume 3.70' };

let lab: CephLab;
let testLab: TestLab | undefined;
let pumice: PumiceProcess;
let admin: ApiClient;
const imageName = `pumice-manage-${randomBytes(4).toString('hex')}`;
const scratch = mkdtempSync(path.join(tmpdir(), 'pumice-manage-'));

function rbd(args: string[], encoding: 'utf8' | 'buffer' = 'utf8') {
  return execFileAsync('rbd', ['--id', 'cinder', '-c', lab.confPath, '--keyring', lab.keyringPath('cinder'), ...args], { timeout: 120_000, encoding, maxBuffer: 64 << 20 } as never) as unknown as Promise<{ stdout: string | Buffer }>;
}

async function imageSha256(name: string): Promise<string> {
  const { stdout } = await rbd(['export', '--no-progress', `volumes/${name}`, '-'], 'buffer');
  return createHash('sha256').update(stdout as Buffer).digest('hex');
}

before(async () => {
  testLab = await labForTest('pumice-qos-rbd');
  lab = testLab.lab;
  pumice = await startPumice({ config: `[DEFAULT]\nenabled_backends = ceph\n\n${rbdBackendSection(lab)}` });
  admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
}, { timeout: 180_000 });

after(async () => {
  await rbd(['rm', '--no-progress', `volumes/${imageName}`]).catch(() => undefined);
  rmSync(scratch, { recursive: true, force: true });
  if (pumice) {
    await pumice.stop();
    pumice.cleanup();
  }
  await testLab?.release();
}, { timeout: 60_000 });

describe('RBD QoS and manage/unmanage', { timeout: 300_000 }, () => {
  test('a back-end QoS spec shows in rbd config image list once the volume is connected', async () => {
    const V = admin.volumeUrl;
    const qos = await admin.request('POST', `${V}/qos-specs`, { qos_specs: { name: 'rbd-limits', consumer: 'back-end', total_iops_sec: '200', total_bytes_sec: '8388608', write_iops_sec_per_gb: '50' } });
    assert.equal(qos.status, 200, qos.text);
    const type = await admin.request('POST', `${V}/types`, { volume_type: { name: 'rbd-limited' } });
    assert.equal((await admin.request('GET', `${V}/qos-specs/${qos.body.qos_specs.id}/associate?vol_type_id=${type.body.volume_type.id}`)).status, 202);
    const created = await admin.request('POST', `${V}/volumes`, { volume: { size: 2, volume_type: 'rbd-limited' } });
    assert.equal(created.status, 202, created.text);
    const volumeId = created.body.volume.id as string;
    await admin.waitVolume(volumeId, ['available'], 60_000);
    const connected = await admin.request('POST', `${V}/volumes/${volumeId}/action`, { 'os-initialize_connection': { connector: { host: 'qos-rbd-host' } } });
    assert.equal(connected.status, 200, connected.text);
    assert.equal(connected.body.connection_info.data.qos_specs, null);

    const { stdout } = await rbd(['config', 'image', 'list', `volumes/volume-${volumeId}`, '--format', 'json']);
    const options = new Map((JSON.parse(stdout as string) as { name: string; value: string; source: string }[]).map((o) => [o.name, o]));
    assert.equal(options.get('rbd_qos_iops_limit')?.value, '200');
    assert.equal(options.get('rbd_qos_iops_limit')?.source, 'image');
    assert.equal(options.get('rbd_qos_bps_limit')?.value, '8388608');
    assert.equal(options.get('rbd_qos_write_iops_limit')?.value, '100', '_per_gb times 2 GiB');
    assert.equal(options.get('rbd_qos_read_bps_limit')?.value, '0');

    await admin.request('POST', `${V}/volumes/${volumeId}/action`, { 'os-terminate_connection': { connector: { host: 'qos-rbd-host' } } });
    assert.equal((await admin.request('DELETE', `${V}/volumes/${volumeId}`)).status, 202);
    await admin.waitVolume(volumeId, ['deleted'], 60_000);
  });

  test('manage adopts an RBD image without copying; unmanage gives it back untouched', async () => {
    const V = admin.volumeUrl;
    // 24 MiB of random bytes in a 40 MiB image (a partial last GiB: the volume reports 1 GiB, the image keeps its size).
    const file = path.join(scratch, 'data');
    writeFileSync(file, randomBytes(24 * 1024 * 1024));
    await rbd(['import', '--no-progress', file, `volumes/${imageName}`]);
    await rbd(['resize', '--no-progress', '--size', '40M', `volumes/${imageName}`]);
    const before = await imageSha256(imageName);

    const pools = await admin.request('GET', `${V}/scheduler-stats/get_pools`);
    const host = pools.body.pools[0].name as string;
    const listed = await admin.request('GET', `${V}/manageable_volumes/detail?host=${encodeURIComponent(host)}`, undefined, MV);
    assert.equal(listed.status, 200, listed.text);
    const entry = (listed.body['manageable-volumes'] as { reference: Record<string, string>; size: number; safe_to_manage: boolean }[]).find((m) => m.reference['source-name'] === imageName);
    assert.deepEqual(entry && { size: entry.size, safe: entry.safe_to_manage }, { size: 1, safe: true });

    const managed = await admin.request('POST', `${V}/os-volume-manage`, { volume: { host, ref: { 'source-name': imageName }, name: 'adopted' } }, MV);
    assert.equal(managed.status, 202, managed.text);
    const volumeId = managed.body.volume.id as string;
    const volume = await admin.waitVolume(volumeId, ['available'], 60_000);
    assert.equal(volume.size, 1);
    assert.equal(await imageSha256(`volume-${volumeId}`), before, 'the volume is the image itself');
    const { stdout: info } = await rbd(['info', '--format', 'json', `volumes/volume-${volumeId}`]);
    assert.equal((JSON.parse(info as string) as { size: number }).size, 40 * 1024 * 1024, 'not resized');

    const unmanaged = await admin.request('POST', `${V}/volumes/${volumeId}/action`, { 'os-unmanage': {} }, MV);
    assert.equal(unmanaged.status, 202, unmanaged.text);
    await admin.waitVolume(volumeId, ['deleted'], 60_000);
    assert.equal(await imageSha256(imageName), before, 'unmanage leaves the bytes, under the image name');
    const gone = await rbd(['info', `volumes/volume-${volumeId}`]).then(() => 'exists', () => 'gone');
    assert.equal(gone, 'gone');
  });
});
