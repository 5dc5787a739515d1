/**
 * Group snapshots on the RBD backend of a real Ceph cluster (issue 18): two volumes of a
 * group are written with known bytes, a group snapshot is taken, both volumes are
 * overwritten, and a group made from the group snapshot (create-from-src) holds, in each
 * of its two volumes, the bytes of the snapshot moment. The member snapshots are RBD
 * snapshots of each image taken through librbd while no member is attached (Pumice refuses
 * a group snapshot of an attached volume); it is not a librbd group snapshot.
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
const MiB = 1024 * 1024;
const dataBytes = 2 * MiB;

let lab: CephLab;
let testLab: TestLab | undefined;
let pumice: PumiceProcess;
let admin: ApiClient;
const scratch = mkdtempSync(path.join(tmpdir(), 'pumice-groups-rbd-'));
const images: string[] = [];

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

function rbd(args: string[]) {
  return execFileAsync('rbd', ['--id', 'cinder', '-c', lab.confPath, '--keyring', lab.keyringPath('cinder'), ...args], { timeout: 120_000, maxBuffer: 64 * MiB });
}

/** Writes `data` at the start of an image through librbd (qemu-img's rbd driver). */
async function writeHead(image: string, data: Buffer): Promise<void> {
  const file = path.join(scratch, `data-${randomBytes(4).toString('hex')}`);
  writeFileSync(file, data);
  await execFileAsync('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', file, `rbd:volumes/${image}:id=cinder:conf=${lab.confPath}:keyring=${lab.keyringPath('cinder')}`], { timeout: 120_000 });
  rmSync(file, { force: true });
}

/** sha256 of the first `dataBytes` of an image, read through librbd. */
async function headSha(image: string): Promise<string> {
  const file = path.join(scratch, `head-${randomBytes(4).toString('hex')}`);
  await execFileAsync('qemu-img', ['dd', '-f', 'raw', '-O', 'raw', 'bs=1M', `count=${dataBytes / MiB}`, `if=rbd:volumes/${image}:id=cinder:conf=${lab.confPath}:keyring=${lab.keyringPath('cinder')}`, `of=${file}`], { timeout: 120_000 });
  const { stdout } = await execFileAsync('sha256sum', [file]);
  rmSync(file, { force: true });
  return stdout.split(' ')[0]!;
}

async function call(method: string, url: string, expect: number, body?: unknown): Promise<any> {
  const r = await admin.request(method, `${admin.volumeUrl}${url}`, body, MV);
  assert.equal(r.status, expect, `${method} ${url}: ${r.text}`);
  return r.body;
}

async function waitFor(url: string, key: string, statuses: string[]): Promise<any> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const r = await admin.request('GET', `${admin.volumeUrl}${url}`, undefined, MV);
    if (r.status === 404 && statuses.includes('deleted')) return null;
    if (r.status === 200 && statuses.includes(r.body[key].status)) return r.body[key];
    if (Date.now() > deadline) throw new Error(`${url} is ${r.body?.[key]?.status ?? r.status}, not ${statuses.join('/')}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

before(async () => {
  testLab = await labForTest('pumice-groups-rbd');
  lab = testLab.lab;
  pumice = await startPumice({ config: `[DEFAULT]\nenabled_backends = ceph\n\n${rbdBackendSection(lab)}` });
  admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
}, { timeout: 180_000 });

after(async () => {
  if (pumice) {
    await pumice.stop();
    pumice.cleanup();
  }
  // Whatever the test did not delete through Pumice (a failure half-way) goes here: the clones of
  // the volumes' snapshots first (a group made from the group snapshot), then the snapshots, unprotected.
  const remove = async (image: string) => {
    const snaps = await rbd(['snap', 'ls', '--format', 'json', `volumes/${image}`]).then((r) => JSON.parse(r.stdout) as { name: string }[]).catch(() => []);
    for (const snap of snaps) {
      const children = await rbd(['children', '--format', 'json', `volumes/${image}@${snap.name}`]).then((r) => JSON.parse(r.stdout) as { pool: string; image: string }[]).catch(() => []);
      for (const child of children) if (child.pool === 'volumes') await remove(child.image);
      await rbd(['snap', 'unprotect', `volumes/${image}@${snap.name}`]).catch(() => undefined);
    }
    await rbd(['snap', 'purge', '--no-progress', `volumes/${image}`]).catch(() => undefined);
    await rbd(['rm', '--no-progress', `volumes/${image}`]).catch(() => undefined);
  };
  for (const image of images) await remove(image);
  rmSync(scratch, { recursive: true, force: true });
  await testLab?.release();
}, { timeout: 180_000 });

describe('RBD group snapshots', { timeout: 300_000 }, () => {
  test('a group made from a group snapshot holds the bytes of the snapshot moment in each volume', async () => {
    const groupType = (await call('POST', '/group_types', 202, { group_type: { name: 'rbd-groups', group_specs: { consistent_group_snapshot_enabled: '<is> True' } } })).group_type.id as string;
    const volumeType = (await call('GET', '/types', 200)).volume_types[0].id as string;
    const group = (await call('POST', '/groups', 202, { group: { name: 'rbd-g', group_type: groupType, volume_types: [volumeType] } })).group.id as string;
    const volumes: string[] = [];
    for (const name of ['rbd-gv1', 'rbd-gv2']) {
      const id = (await call('POST', '/volumes', 202, { volume: { size: 1, name } })).volume.id as string;
      volumes.push(id);
      images.push(`volume-${id}`);
    }
    for (const id of volumes) await admin.waitVolume(id, ['available'], 60_000);
    await call('PUT', `/groups/${group}`, 202, { group: { add_volumes: volumes.join(',') } });

    const before = volumes.map(() => randomBytes(dataBytes));
    for (const [i, id] of volumes.entries()) await writeHead(`volume-${id}`, before[i]!);
    const groupSnapshot = (await call('POST', '/group_snapshots', 202, { group_snapshot: { group_id: group, name: 'rbd-gs' } })).group_snapshot.id as string;
    await waitFor(`/group_snapshots/${groupSnapshot}`, 'group_snapshot', ['available']);
    // Each member snapshot is an RBD snapshot of its volume's image.
    const members = ((await call('GET', '/snapshots/detail', 200)).snapshots as any[]).filter((s) => s.group_snapshot_id === groupSnapshot);
    assert.deepEqual(members.map((s) => s.volume_id).sort(), [...volumes].sort());
    for (const s of members) {
      const { stdout } = await rbd(['snap', 'ls', '--format', 'json', `volumes/volume-${s.volume_id}`]);
      assert.ok((JSON.parse(stdout) as { name: string }[]).some((x) => x.name.includes(s.id)), `an RBD snapshot of volume-${s.volume_id} for snapshot ${s.id}: ${stdout}`);
    }
    // After the group snapshot both volumes change.
    for (const id of volumes) await writeHead(`volume-${id}`, randomBytes(dataBytes));

    const restored = (await call('POST', '/groups/action', 202, { 'create-from-src': { name: 'rbd-restored', group_snapshot_id: groupSnapshot } })).group.id as string;
    const restoredGroup = await waitFor(`/groups/${restored}`, 'group', ['available', 'error']);
    assert.equal(restoredGroup.status, 'available');
    const newVolumes = (await call('GET', `/groups/${restored}?list_volume=true`, 200)).group.volumes as string[];
    assert.equal(newVolumes.length, 2);
    for (const id of newVolumes) {
      images.push(`volume-${id}`);
      const volume = (await call('GET', `/volumes/${id}`, 200)).volume;
      assert.equal(volume.group_id, restored);
      const source = members.find((s) => s.id === volume.snapshot_id);
      assert.ok(source, `volume ${id} was made from a member snapshot (${volume.snapshot_id})`);
      const index = volumes.indexOf(source.volume_id);
      assert.equal(await headSha(`volume-${id}`), sha(before[index]!), `volume ${id} holds the bytes volume ${source.volume_id} had at the group snapshot`);
    }
    for (const [i, id] of volumes.entries()) assert.notEqual(await headSha(`volume-${id}`), sha(before[i]!), 'the sources changed after the snapshot');

    // Delete everything through Pumice: the restored group, the group snapshot, the group.
    await call('POST', `/groups/${restored}/action`, 202, { delete: { 'delete-volumes': true } });
    await waitFor(`/groups/${restored}`, 'group', ['deleted']);
    await call('DELETE', `/group_snapshots/${groupSnapshot}`, 202);
    await waitFor(`/group_snapshots/${groupSnapshot}`, 'group_snapshot', ['deleted']);
    await call('POST', `/groups/${group}/action`, 202, { delete: { 'delete-volumes': true } });
    await waitFor(`/groups/${group}`, 'group', ['deleted']);
    await call('DELETE', `/group_types/${groupType}`, 202);
    const { stdout } = await rbd(['ls', 'volumes']);
    for (const image of images) assert.equal(stdout.split('\n').includes(image), false, `${image} is gone from pool volumes`);
  });
});
