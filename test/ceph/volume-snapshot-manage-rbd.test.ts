/**
 * Managing snapshots on the RBD backend of a real Ceph cluster (issue 18): a snapshot made
 * with `rbd snap create` on a volume's image is listed by GET /manageable_snapshots, adopted
 * with `openstack volume snapshot create --remote-source source-name=...` (renamed in place:
 * the same RBD snapshot id, no copy), usable (a volume made from it holds its bytes), and
 * os-unmanage leaves it in the image as unmanaged-snapshot-<id>, same snapshot id again.
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
import { ApiClient, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const MV = { 'OpenStack-API-Version': 'volume 3.8' };
const MiB = 1024 * 1024;

let lab: CephLab;
let testLab: TestLab | undefined;
let pumice: PumiceProcess;
let admin: ApiClient;
const scratch = mkdtempSync(path.join(tmpdir(), 'pumice-snap-manage-'));
const made: string[] = [];

function rbd(args: string[], encoding: 'utf8' | 'buffer' = 'utf8') {
  return execFileAsync('rbd', ['--id', 'cinder', '-c', lab.confPath, '--keyring', lab.keyringPath('cinder'), ...args], { timeout: 120_000, encoding, maxBuffer: 64 * MiB } as never) as unknown as Promise<{ stdout: string | Buffer }>;
}

async function snapIds(image: string): Promise<Map<string, number>> {
  const { stdout } = await rbd(['snap', 'ls', '--format', 'json', `volumes/${image}`]);
  return new Map((JSON.parse(stdout as string) as { id: number; name: string }[]).map((s) => [s.name, s.id]));
}

/** sha256 of the first `bytes` of an image (or image@snap), read through librbd by rbd export. */
async function headSha(spec: string, bytes: number): Promise<string> {
  const file = path.join(scratch, `export-${randomBytes(4).toString('hex')}`);
  await rbd(['export', '--no-progress', `volumes/${spec}`, file]);
  const { stdout } = await execFileAsync('head', ['-c', String(bytes), file], { encoding: 'buffer', maxBuffer: 64 * MiB });
  rmSync(file, { force: true });
  return createHash('sha256').update(stdout).digest('hex');
}

before(async () => {
  testLab = await labForTest('pumice-snap-manage-rbd');
  lab = testLab.lab;
  pumice = await startPumice({ config: `[DEFAULT]\nenabled_backends = ceph\n\n${rbdBackendSection(lab)}` });
  admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
}, { timeout: 180_000 });

after(async () => {
  for (const id of made.reverse()) {
    await admin.request('DELETE', `${admin.volumeUrl}/volumes/${id}?cascade=true`).catch(() => undefined);
    await admin.waitVolume(id, ['deleted', 'error_deleting'], 60_000).catch(() => undefined);
  }
  // The unmanaged snapshot is no longer Pumice's: the volume's delete removes it with the image
  // (a snapshot without clones), else it is removed here.
  if (pumice) {
    await pumice.stop();
    pumice.cleanup();
  }
  for (const id of made) {
    await rbd(['snap', 'purge', '--no-progress', `volumes/volume-${id}`]).catch(() => undefined);
    await rbd(['rm', '--no-progress', `volumes/volume-${id}`]).catch(() => undefined);
  }
  rmSync(scratch, { recursive: true, force: true });
  await testLab?.release();
}, { timeout: 180_000 });

describe('RBD snapshot manage/unmanage', { timeout: 300_000 }, () => {
  test('an RBD snapshot made outside Pumice is listed, adopted in place, used, and unmanaged back', async () => {
    const V = admin.volumeUrl;
    const created = await admin.request('POST', `${V}/volumes`, { volume: { size: 1, name: 'with-foreign-snap' } });
    assert.equal(created.status, 202, created.text);
    const volumeId = created.body.volume.id as string;
    made.push(volumeId);
    await admin.waitVolume(volumeId, ['available'], 60_000);
    const image = `volume-${volumeId}`;
    // 4 MiB of data, a snapshot of it taken outside Pumice, then the volume overwritten.
    const data = path.join(scratch, 'data');
    writeFileSync(data, randomBytes(4 * MiB));
    await execFileAsync('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', data, `rbd:volumes/${image}:id=cinder:conf=${lab.confPath}:keyring=${lab.keyringPath('cinder')}`], { timeout: 120_000 });
    await rbd(['snap', 'create', `volumes/${image}@ops-snap`]);
    const atSnap = await headSha(`${image}@ops-snap`, 4 * MiB);
    writeFileSync(data, randomBytes(4 * MiB));
    await execFileAsync('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', data, `rbd:volumes/${image}:id=cinder:conf=${lab.confPath}:keyring=${lab.keyringPath('cinder')}`], { timeout: 120_000 });
    assert.notEqual(await headSha(image, 4 * MiB), atSnap, 'the volume moved on after the snapshot');
    const snapId = (await snapIds(image)).get('ops-snap');
    assert.ok(snapId !== undefined);

    const host = (await admin.request('GET', `${V}/scheduler-stats/get_pools`)).body.pools[0].name as string;
    const listed = await admin.request('GET', `${V}/manageable_snapshots/detail?host=${encodeURIComponent(host)}`, undefined, MV);
    assert.equal(listed.status, 200, listed.text);
    const entry = (listed.body['manageable-snapshots'] as { reference: Record<string, string>; source_reference: Record<string, string>; size: number }[])
      .find((m) => m.reference['source-name'] === 'ops-snap');
    assert.deepEqual(entry && { source: entry.source_reference['source-name'], size: entry.size }, { source: image, size: 1 });

    const managed = await openstackJson<{ id: string }>(pumice.adminEnv, ['volume', 'snapshot', 'create', '--volume', volumeId, '--remote-source', 'source-name=ops-snap', 'adopted', '-f', 'json']);
    const snapshotId = managed.id;
    await until(async () => (await admin.request('GET', `${V}/snapshots/${snapshotId}`)).body?.snapshot?.status === 'available');
    const ids = await snapIds(image);
    assert.equal(ids.get(`snapshot-${snapshotId}`), snapId, 'the same RBD snapshot, renamed (no copy)');
    assert.equal(ids.has('ops-snap'), false);
    const again = await admin.request('GET', `${V}/manageable_snapshots?host=${encodeURIComponent(host)}`, undefined, MV);
    assert.equal((again.body['manageable-snapshots'] as unknown[]).length, 0, 'a managed snapshot is not offered again');

    // The adopted snapshot is a snapshot like any other: a volume made from it has its bytes.
    const fromSnap = await admin.request('POST', `${V}/volumes`, { volume: { snapshot_id: snapshotId, name: 'from-adopted' } });
    assert.equal(fromSnap.status, 202, fromSnap.text);
    made.push(fromSnap.body.volume.id);
    await admin.waitVolume(fromSnap.body.volume.id, ['available'], 60_000);
    assert.equal(await headSha(`volume-${fromSnap.body.volume.id}`, 4 * MiB), atSnap);
    assert.equal((await admin.request('DELETE', `${V}/volumes/${fromSnap.body.volume.id}`)).status, 202);
    await admin.waitVolume(fromSnap.body.volume.id, ['deleted'], 60_000);

    const unmanaged = await admin.request('POST', `${V}/snapshots/${snapshotId}/action`, { 'os-unmanage': {} });
    assert.equal(unmanaged.status, 202, unmanaged.text);
    await until(async () => (await admin.request('GET', `${V}/snapshots/${snapshotId}`)).status === 404);
    const after = await snapIds(image);
    assert.equal(after.get(`unmanaged-snapshot-${snapshotId}`), snapId, 'left in place under a new name, same snapshot');
    assert.equal(await headSha(`${image}@unmanaged-snapshot-${snapshotId}`, 4 * MiB), atSnap);
  });
});

async function until(check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 100));
  }
}
