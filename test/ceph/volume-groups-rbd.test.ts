/**
 * Group snapshots on the RBD backend of a real Ceph cluster (issue 18): a group of two volumes,
 * one of them attached (attachments API) and held open by a writing qemu-io, the other written
 * by qemu-img. The group snapshot is ONE librbd group snapshot (`rbd group snap ls` shows it,
 * both members' snapshots are in its group namespace), taken while the first volume is in-use.
 * Both volumes are written again afterwards, and a group made from the group snapshot
 * (create-from-src) holds, in each of its two volumes, the bytes of the snapshot moment (copied:
 * Ceph Pacific cannot clone from a group-namespace snapshot). A member snapshot cannot be
 * deleted alone. Deleting everything leaves the pool's groups, images and trash as they were.
 * Then: add_volumes / remove_volumes change the RBD group at once (`rbd group image list`, no
 * group snapshot needed; a server killed before the sync syncs at its restart), and two group snapshots of one group plus an extend of a member, asked
 * at the same moment, run one after the other (the server, stopped mid group snapshot, runs one
 * task only): both librbd group snapshots complete, each member snapshot records its RBD
 * snapshot's size, nothing in error, no librbd error in the log.
 * Uses the lab in $PUMICE_CEPH_LAB when set, else brings one up and purges it. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
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

async function start(env: Record<string, string> = {}): Promise<void> {
  pumice = await startPumice({ config: `[DEFAULT]\nenabled_backends = ceph\n\n${rbdBackendSection(lab)}`, dataDir: pumice?.dataDir, env });
  admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
}

before(async () => {
  testLab = await labForTest('pumice-groups-rbd');
  lab = testLab.lab;
  // The first server dies once the RBD group holds the members, just before the group snapshot.
  await start({ PUMICE_CRASH_POINT: 'rbd.group-snapshot.members-synced:1' });
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
  for (const group of rbdGroups) await rbd(['group', 'rm', `volumes/${group}`]).catch(() => undefined);
  for (const image of images) await remove(image);
  rmSync(scratch, { recursive: true, force: true });
  await testLab?.release();
}, { timeout: 180_000 });

/** The pool's RBD groups, image names and trash entry names, to compare before and after. */
async function poolContent(): Promise<{ groups: string[]; images: string[]; trash: string[] }> {
  const list = async (args: string[]) => ((await rbd(args)).stdout.trim() ? JSON.parse((await rbd(args)).stdout) : []) as unknown[];
  return {
    groups: ((await list(['group', 'ls', '--format', 'json', 'volumes'])) as string[]).sort(),
    images: ((await list(['ls', '--format', 'json', 'volumes'])) as string[]).sort(),
    trash: ((await list(['trash', 'ls', '--format', 'json', 'volumes'])) as { name: string }[]).map((t) => t.name).sort(),
  };
}

/** qemu-io holding an image open as its consumer would, taking commands on stdin. */
function openConsumer(image: string): { run(command: string, done: RegExp): Promise<void>; quit(): Promise<void> } {
  const child = spawn('qemu-io', ['-f', 'raw', `rbd:volumes/${image}:id=cinder:conf=${lab.confPath}:keyring=${lab.keyringPath('cinder')}`], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return {
    async run(command, done) {
      const from = output.length;
      child.stdin.write(`${command}\n`);
      const deadline = Date.now() + 60_000;
      while (!done.test(output.slice(from))) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`qemu-io ${command}: ${output.slice(from)}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    async quit() {
      child.stdin.end('quit\n');
      await exited;
    },
  };
}

const rbdGroups: string[] = [];
let poolBefore: { groups: string[]; images: string[]; trash: string[] };

describe('RBD group snapshots', { timeout: 300_000 }, () => {
  test('one librbd group snapshot while a member is attached and written; a group from it holds the snapshot moment', async () => {
    poolBefore = await poolContent();
    // An empty RBD group of a group that has no row (as a crash after its last member left it
    // leaves): the backend's maintenance (every report_interval, 10 s) removes it.
    const stray = `group-${randomUUID()}`;
    await rbd(['group', 'create', `volumes/${stray}`]);
    rbdGroups.push(stray);
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
    rbdGroups.push(`group-${group}`);
    const [attachedId, detachedId] = volumes as [string, string];

    // The first volume is attached and its consumer (qemu-io, through librbd) keeps it open and writes.
    const attachment = (await call('POST', '/attachments', 200, { attachment: { volume_uuid: attachedId, instance_uuid: randomUUID() } })).attachment.id as string;
    await call('PUT', `/attachments/${attachment}`, 200, { attachment: { connector: { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.x', platform: 'x86_64', os_type: 'linux', multipath: false } } });
    await call('POST', `/attachments/${attachment}/action`, 204, { 'os-complete': null });
    assert.equal((await call('GET', `/volumes/${attachedId}`, 200)).volume.status, 'in-use');
    const consumer = openConsumer(`volume-${attachedId}`);
    const detachedBefore = randomBytes(dataBytes);
    let groupSnapshot: string;
    try {
      await consumer.run(`write -P 0x11 0 ${dataBytes}`, /wrote/);
      await writeHead(`volume-${detachedId}`, detachedBefore);

      groupSnapshot = (await call('POST', '/group_snapshots', 202, { group_snapshot: { group_id: group, name: 'rbd-gs' } })).group_snapshot.id as string;
      // Crash safety: the server dies at the crash point; restarted, the member tasks take the group snapshot.
      // The crash point kills the process (SIGKILL): a signal, no exit code.
      const code = await new Promise<number | string | null>((resolve) => {
        if (pumice.proc.exitCode !== null || pumice.proc.signalCode !== null) resolve(pumice.proc.signalCode ?? pumice.proc.exitCode);
        else pumice.proc.once('exit', (c, signal) => resolve(signal ?? c));
      });
      assert.equal(code, 'SIGKILL', `the server should have died at the crash point:\n${pumice.output().slice(-2000)}`);
      await start();
      const taken = await waitFor(`/group_snapshots/${groupSnapshot}`, 'group_snapshot', ['available', 'error']);
      assert.equal(taken.status, 'available', `group snapshot: ${JSON.stringify(taken)}`);
      // The consumer goes on writing after the snapshot moment; so does the other volume's writer.
      await consumer.run(`write -P 0x22 0 ${dataBytes}`, /wrote/);
      await consumer.run('flush', /qemu-io>|$/);
    } finally {
      await consumer.quit();
    }
    await writeHead(`volume-${detachedId}`, randomBytes(dataBytes));

    // ONE librbd group snapshot; each member's snapshot is in its group namespace.
    const rbdGroup = `volumes/group-${group}`;
    const groupSnaps = JSON.parse((await rbd(['group', 'snap', 'ls', '--format', 'json', rbdGroup])).stdout) as { snapshot: string; state: string }[];
    assert.deepEqual(groupSnaps.map((g) => [g.snapshot, g.state]), [[`snapshot-${groupSnapshot}`, 'ok']]);
    const members = ((await call('GET', '/snapshots/detail', 200)).snapshots as any[]).filter((s) => s.group_snapshot_id === groupSnapshot);
    assert.deepEqual(members.map((s) => s.volume_id).sort(), [...volumes].sort());
    for (const id of volumes) {
      const snaps = JSON.parse((await rbd(['snap', 'ls', '--all', '--format', 'json', `volumes/volume-${id}`])).stdout) as { namespace: { type: string; group?: string; group_snap?: string; 'group snap'?: string } }[];
      assert.equal(snaps.length, 1, `volume-${id} has one snapshot: ${JSON.stringify(snaps)}`);
      assert.equal(snaps[0]!.namespace.type, 'group', JSON.stringify(snaps));
      assert.equal(snaps[0]!.namespace.group, `group-${group}`, JSON.stringify(snaps));
      assert.equal(snaps[0]!.namespace['group snap'] ?? snaps[0]!.namespace.group_snap, `snapshot-${groupSnapshot}`, JSON.stringify(snaps));
    }

    // A member snapshot goes only with its group snapshot (Cinder refuses it too).
    const alone = await admin.request('DELETE', `${admin.volumeUrl}/snapshots/${members[0].id}`, undefined, MV);
    assert.equal(alone.status, 400, alone.text);
    assert.match(alone.text, new RegExp(`group snapshot ${groupSnapshot}`));

    const restored = (await call('POST', '/groups/action', 202, { 'create-from-src': { name: 'rbd-restored', group_snapshot_id: groupSnapshot } })).group.id as string;
    const restoredGroup = await waitFor(`/groups/${restored}`, 'group', ['available', 'error']);
    assert.equal(restoredGroup.status, 'available', JSON.stringify(restoredGroup));
    const newVolumes = (await call('GET', `/groups/${restored}?list_volume=true`, 200)).group.volumes as string[];
    assert.equal(newVolumes.length, 2);
    const expected = new Map([[attachedId, sha(Buffer.alloc(dataBytes, 0x11))], [detachedId, sha(detachedBefore)]]);
    for (const id of newVolumes) {
      images.push(`volume-${id}`);
      const volume = (await call('GET', `/volumes/${id}`, 200)).volume;
      assert.equal(volume.group_id, restored);
      const source = members.find((s) => s.id === volume.snapshot_id);
      assert.ok(source, `volume ${id} was made from a member snapshot (${volume.snapshot_id})`);
      assert.equal(await headSha(`volume-${id}`), expected.get(source.volume_id), `volume ${id} holds the bytes volume ${source.volume_id} had at the group snapshot`);
    }
    assert.equal(await headSha(`volume-${attachedId}`), sha(Buffer.alloc(dataBytes, 0x22)), 'the attached source was written after the snapshot');
    assert.notEqual(await headSha(`volume-${detachedId}`), sha(detachedBefore), 'the other source changed after the snapshot');

    // Delete everything through Pumice: the attachment, the restored group, the group snapshot, the group.
    await call('POST', `/volumes/${attachedId}/action`, 202, { 'os-begin_detaching': null });
    await call('DELETE', `/attachments/${attachment}`, 200);
    await admin.waitVolume(attachedId, ['available'], 60_000);
    await call('POST', `/groups/${restored}/action`, 202, { delete: { 'delete-volumes': true } });
    await waitFor(`/groups/${restored}`, 'group', ['deleted']);
    await call('DELETE', `/group_snapshots/${groupSnapshot}`, 202);
    await waitFor(`/group_snapshots/${groupSnapshot}`, 'group_snapshot', ['deleted']);
    assert.deepEqual(JSON.parse((await rbd(['group', 'snap', 'ls', '--format', 'json', rbdGroup])).stdout), [], 'the librbd group snapshot is gone');
    await call('POST', `/groups/${group}/action`, 202, { delete: { 'delete-volumes': true } });
    await waitFor(`/groups/${group}`, 'group', ['deleted']);
    await call('DELETE', `/group_types/${groupType}`, 202);
    // The purge of trashed images runs in the background: wait for the pool to be as it was. Other
    // test files may share the lab's pool meanwhile, so only this test's names are judged, and no
    // RBD group may be new (only this file makes them).
    const ours = (name: string) => images.includes(name);
    const judged = (c: typeof poolBefore) => ({ groups: c.groups, images: c.images.filter(ours), trash: c.trash.filter(ours) });
    const deadline = Date.now() + 30_000;
    let after = judged(await poolContent());
    while (JSON.stringify(after) !== JSON.stringify(judged(poolBefore)) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      after = judged(await poolContent());
    }
    assert.deepEqual(after, judged(poolBefore), 'the pool holds the groups, images and trash entries it held before the test');
  });

  test('the RBD group follows add/remove at once; two group snapshots and an extend of a member at the same moment serialize', async () => {
    // This server dies (SIGKILL) when the first group.sync task is about to sync the RBD group.
    await pumice.stop();
    await start({ PUMICE_CRASH_POINT: 'group.sync.before:1' });
    const groupType = (await call('POST', '/group_types', 202, { group_type: { name: 'rbd-groups-2' } })).group_type.id as string;
    const volumeType = (await call('GET', '/types', 200)).volume_types[0].id as string;
    const group = (await call('POST', '/groups', 202, { group: { name: 'rbd-sync', group_type: groupType, volume_types: [volumeType] } })).group.id as string;
    rbdGroups.push(`group-${group}`);
    const volumes: string[] = [];
    for (const name of ['rbd-sync-1', 'rbd-sync-2']) {
      const id = (await call('POST', '/volumes', 202, { volume: { size: 1, name } })).volume.id as string;
      volumes.push(id);
      images.push(`volume-${id}`);
    }
    for (const id of volumes) await admin.waitVolume(id, ['available'], 60_000);
    const [first, second] = volumes as [string, string];
    /** The images `rbd group image list` shows, once they are `expected` (the sync is a task: polled, 60 s at most). */
    const groupImages = async (expected: string[]) => {
      const deadline = Date.now() + 60_000;
      for (;;) {
        const listed = await rbd(['group', 'image', 'list', '--format', 'json', `volumes/group-${group}`]).then((r) => (JSON.parse(r.stdout) as { image: string }[]).map((m) => m.image).sort()).catch(() => [] as string[]);
        if (JSON.stringify(listed) === JSON.stringify([...expected].sort()) || Date.now() > deadline) return listed;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    };
    // No group snapshot yet: the adds alone put the images in the RBD group, the remove takes one out.
    // The first sync dies before it syncs: the restarted server runs it again (it is a persisted task).
    // It may die before its answer leaves (the task is claimed as it is queued): the add is committed either way.
    const added = await admin.request('PUT', `${admin.volumeUrl}/groups/${group}`, { group: { add_volumes: volumes.join(',') } }, MV).catch((error: Error) => ({ status: 0, text: error.message }));
    assert.ok(added.status === 202 || added.status === 0, added.text);
    const died = await new Promise<number | string | null>((resolve) => {
      if (pumice.proc.exitCode !== null || pumice.proc.signalCode !== null) resolve(pumice.proc.signalCode ?? pumice.proc.exitCode);
      else pumice.proc.once('exit', (c, signal) => resolve(signal ?? c));
    });
    assert.equal(died, 'SIGKILL', `the server should have died before the sync:\n${pumice.output().slice(-2000)}`);
    assert.deepEqual(await rbd(['group', 'image', 'list', '--format', 'json', `volumes/group-${group}`]).then((r) => JSON.parse(r.stdout) as unknown[]).catch(() => []), [], 'not synced before the crash');
    // The next server stops itself (SIGSTOP) the first time a group snapshot has synced its RBD
    // group, right before rbd_group_snap_create2 (group.sync passes another point): the tasks
    // running then are all that the locks let run beside it.
    await start({ PUMICE_CRASH_POINT: 'rbd.group-snapshot.members-synced:1:stop' });
    assert.deepEqual(((await call('GET', `/groups/${group}?list_volume=true`, 200)).group.volumes as string[]).sort(), [...volumes].sort());
    assert.deepEqual(await groupImages(volumes.map((v) => `volume-${v}`)), volumes.map((v) => `volume-${v}`).sort(), `both images in the RBD group after add_volumes; the server said:\n${pumice.output().split('\n').filter((l) => /group|task|WARNING|ERROR/.test(l)).slice(-30).join('\n')}`);
    await call('PUT', `/groups/${group}`, 202, { group: { remove_volumes: second } });
    assert.deepEqual(await groupImages([`volume-${first}`]), [`volume-${first}`], 'the removed image left the RBD group');
    await call('PUT', `/groups/${group}`, 202, { group: { add_volumes: second } });
    assert.deepEqual(await groupImages(volumes.map((v) => `volume-${v}`)), volumes.map((v) => `volume-${v}`).sort());
    assert.deepEqual(JSON.parse((await rbd(['group', 'snap', 'ls', '--format', 'json', `volumes/group-${group}`])).stdout), [], 'no group snapshot was needed for that');

    // Two group snapshots of the group and an extend of a member, asked at the same moment.
    const logFrom = pumice.output().length;
    const [gsA, gsB, extend] = await Promise.all([
      admin.request('POST', `${admin.volumeUrl}/group_snapshots`, { group_snapshot: { group_id: group, name: 'rbd-gs-a' } }, MV),
      admin.request('POST', `${admin.volumeUrl}/group_snapshots`, { group_snapshot: { group_id: group, name: 'rbd-gs-b' } }, MV),
      admin.request('POST', `${admin.volumeUrl}/volumes/${first}/action`, { 'os-extend': { new_size: 2 } }, MV),
    ]);
    try {
      assert.equal(gsA.status, 202, gsA.text);
      assert.equal(gsB.status, 202, gsB.text);
      assert.equal(extend.status, 202, extend.text);
      const stopDeadline = Date.now() + 60_000;
      while (!/crash-point rbd\.group-snapshot\.members-synced:1: stopping/.test(pumice.output())) {
        if (Date.now() > stopDeadline) throw new Error(`the server did not stop at the group snapshot:\n${pumice.output().slice(-2000)}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const db = new Database(pumice.database, { readonly: true, fileMustExist: true });
      const tasks = db.prepare("SELECT kind, resource_id, state FROM tasks WHERE state IN ('running', 'queued') ORDER BY id").all() as { kind: string; resource_id: string; state: string }[];
      db.close();
      const running = tasks.filter((t) => t.state === 'running');
      assert.equal(running.length, 1, `only the task taking the group snapshot runs: ${JSON.stringify(tasks)}`);
      assert.equal(running[0]!.kind, 'snapshot.create');
    } finally {
      process.kill(pumice.proc.pid!, 'SIGCONT');
    }
    const groupSnapshots = [gsA.body.group_snapshot.id as string, gsB.body.group_snapshot.id as string];
    for (const id of groupSnapshots) {
      const taken = await waitFor(`/group_snapshots/${id}`, 'group_snapshot', ['available', 'error']);
      assert.equal(taken.status, 'available', JSON.stringify(taken));
    }
    const extended = await admin.waitVolume(first, ['available', 'error_extending'], 60_000);
    assert.equal(extended.status, 'available');
    assert.equal((await call('GET', `/volumes/${first}`, 200)).volume.size, 2);
    // Both librbd group snapshots complete; every member snapshot records the size its RBD snapshot has.
    const rbdSnaps = JSON.parse((await rbd(['group', 'snap', 'ls', '--format', 'json', `volumes/group-${group}`])).stdout) as { snapshot: string; state: string }[];
    assert.deepEqual(rbdSnaps.map((g) => [g.snapshot, g.state]).sort(), groupSnapshots.map((id) => [`snapshot-${id}`, 'ok']).sort());
    const members = ((await call('GET', '/snapshots/detail', 200)).snapshots as any[]).filter((s) => groupSnapshots.includes(s.group_snapshot_id));
    assert.equal(members.length, 4);
    for (const member of members) {
      assert.equal(member.status, 'available', JSON.stringify(member));
      const snaps = JSON.parse((await rbd(['snap', 'ls', '--all', '--format', 'json', `volumes/volume-${member.volume_id}`])).stdout) as { size: number; namespace: { 'group snap'?: string; group_snap?: string } }[];
      const own = snaps.find((x) => (x.namespace['group snap'] ?? x.namespace.group_snap) === `snapshot-${member.group_snapshot_id}`);
      assert.ok(own, `volume-${member.volume_id} has its snapshot of ${member.group_snapshot_id}: ${JSON.stringify(snaps)}`);
      assert.equal(own.size, member.size * 1024 * MiB, `member ${member.id} of ${member.group_snapshot_id} records ${member.size} GiB, its RBD snapshot has ${own.size} bytes`);
    }
    for (const id of volumes) assert.equal((await call('GET', `/volumes/${id}`, 200)).volume.status, 'available');
    const log = pumice.output().slice(logFrom).split('\n').filter((line) => !line.includes('crash-point')).join('\n');
    assert.doesNotMatch(log, /librbd|rbd_group|failed|ERROR/, `no librbd error and no failed task:\n${log.slice(-3000)}`);

    // Clean up through Pumice: the group snapshots, then the group with its volumes; the RBD group goes too.
    for (const id of groupSnapshots) await call('DELETE', `/group_snapshots/${id}`, 202);
    for (const id of groupSnapshots) await waitFor(`/group_snapshots/${id}`, 'group_snapshot', ['deleted']);
    await call('POST', `/groups/${group}/action`, 202, { delete: { 'delete-volumes': true } });
    await waitFor(`/groups/${group}`, 'group', ['deleted']);
    await call('DELETE', `/group_types/${groupType}`, 202);
    const deadline = Date.now() + 30_000;
    while ((await poolContent()).groups.includes(`group-${group}`) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 500));
    assert.ok(!(await poolContent()).groups.includes(`group-${group}`), 'the RBD group is gone with its last volume');
  });
});
