/**
 * The RBD backend on a real Ceph cluster, driven with the Debian `openstack`
 * and `cinder` CLIs as the scenario's operator did, checked with the `rbd`
 * CLI and with the bytes read through the binding as client.cinder.
 * Uses the lab in $PUMICE_CEPH_LAB when set (one cluster per test run),
 * else brings one up and purges it afterwards.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { labPurge, labUp, readLab, startDaemon, stopDaemon, waitLabReady, type CephLab } from '../../src/ceph/lab.ts';
import { RadosCluster, type IoCtx } from '../../src/ceph/rbd.ts';
import { ApiClient, cliEnv, openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const shared = process.env['PUMICE_CEPH_LAB'];
const MiB = 1024 * 1024;

let lab: CephLab;
let privateDir = '';
let pumice: PumiceProcess;
let env: Record<string, string>;
let cluster: RadosCluster;
let volumesPool: IoCtx;

async function rbd(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('rbd', ['--conf', lab.confPath, '--id', 'admin', ...args], { timeout: 60_000 });
  return stdout;
}

async function rbdInfo(image: string): Promise<{ size: number; order: number; parent?: { pool: string; image: string; snapshot: string } }> {
  return JSON.parse(await rbd(['info', '--format', 'json', `volumes/${image}`]));
}

/**
 * What the pool held before this file's server started: earlier test files share the run's lab
 * and its pool, and what they left there is not this file's to judge.
 */
let imagesBefore = new Set<string>();

/** This file's images in the pool, and those still in its trash (deletes move there first and are purged in the background). */
async function poolImages(): Promise<string[]> {
  const images = JSON.parse(await rbd(['ls', '--format', 'json', 'volumes'])) as string[];
  const trash = (JSON.parse(await rbd(['trash', 'ls', '--format', 'json', 'volumes'])) as { name: string }[]).map((t) => `trash:${t.name}`);
  return [...images, ...trash].filter((name) => !imagesBefore.has(name)).sort();
}

function pattern(seed: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  for (let i = 0; i < length; i++) buffer[i] = (seed * 31 + i * 7) & 0xff;
  return buffer;
}

async function writeThroughBinding(image: string, offset: number, data: Buffer): Promise<void> {
  const handle = await volumesPool.openImage(image);
  try {
    await handle.write(offset, data);
    await handle.flush();
  } finally {
    await handle.close();
  }
}

async function readThroughBinding(image: string, offset: number, length: number): Promise<Buffer> {
  const handle = await volumesPool.openImage(image, { readOnly: true });
  try {
    return await handle.read(offset, length);
  } finally {
    await handle.close();
  }
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; the pool holds ${JSON.stringify(await poolImages().catch((e: Error) => e.message))}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function waitVolume(name: string, status: string): Promise<Record<string, any>> {
  return waitFor(`volume ${name} to be ${status}`, async () => {
    const volume = await openstackJson(env, ['volume', 'show', name]);
    if (volume['status'] === 'error') throw new Error(`volume ${name} went to error`);
    return volume['status'] === status ? volume : undefined;
  });
}

async function serviceStates(): Promise<Record<string, { state: string; reason: string | null }>> {
  const rows = await openstackJson<{ Host: string; State: string; 'Disabled Reason': string | null }[]>(env, ['volume', 'service', 'list', '--long']);
  return Object.fromEntries(rows.map((r) => [r.Host, { state: r.State, reason: r['Disabled Reason'] }]));
}

before(async () => {
  if (shared) {
    lab = readLab(shared);
  } else {
    privateDir = path.join(await mkdtemp(path.join(tmpdir(), 'pumice-rbd-test-')), 'lab');
    lab = await labUp(privateDir);
  }
  imagesBefore = new Set(await poolImages());
  pumice = await startPumice({
    config: `[DEFAULT]
enabled_backends = ceph,ceph-flat,local
report_interval = 1
service_down_time = 4

[ceph]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = ceph
rbd_pool = volumes
rbd_user = cinder
rbd_ceph_conf = ${lab.confPath}
rbd_secret_uuid = 457eb676-33da-42ec-9a8c-9293d545c337
rbd_flatten_volume_from_snapshot = false
rbd_max_clone_depth = 2
rbd_store_chunk_size = 4
rados_connect_timeout = 5

[ceph-flat]
volume_driver = rbd
volume_backend_name = ceph-flat
rbd_pool = vms
rbd_user = cinder
rbd_ceph_conf = ${lab.confPath}
rbd_flatten_volume_from_snapshot = true

[local]
volume_driver = local
volume_backend_name = local
`,
  });
  env = pumice.adminEnv;
  cluster = await RadosCluster.connect({ confPath: lab.confPath, user: 'cinder', keyringPath: lab.keyringPath('cinder'), connectTimeoutSeconds: 10 });
  volumesPool = await cluster.openIoctx('volumes');
}, { timeout: 180_000 });

after(async () => {
  await volumesPool?.close().catch(() => undefined);
  await cluster?.shutdown().catch(() => undefined);
  if (pumice) {
    await pumice.stop();
    pumice.cleanup();
  }
  if (privateDir) {
    await labPurge(privateDir);
    await rm(path.dirname(privateDir), { recursive: true, force: true });
  }
}, { timeout: 60_000 });

describe('RBD backend with the scenario sequence', { timeout: 300_000 }, () => {
  const ids: Record<string, string> = {};

  test('volume service list: one row per backend, all up', async () => {
    const states = await serviceStates();
    assert.equal(states['pumice@ceph']?.state, 'up');
    assert.equal(states['pumice@ceph-flat']?.state, 'up');
    assert.equal(states['pumice@local']?.state, 'up');
  });

  test('type ceph routes a 1 GiB volume to the volumes pool: thin, 4 MiB objects', async () => {
    await openstack(env, ['volume', 'type', 'create', 'ceph']);
    await openstack(env, ['volume', 'type', 'set', 'ceph', '--property', 'volume_backend_name=ceph']);
    const created = await openstackJson(env, ['volume', 'create', '--type', 'ceph', '--size', '1', 'c1']);
    ids['c1'] = created['id'] as string;
    const volume = await waitVolume('c1', 'available');
    assert.equal(volume['os-vol-host-attr:host'], 'pumice@ceph#ceph');
    const info = await rbdInfo(`volume-${ids['c1']}`);
    assert.equal(info.size, 1024 * MiB);
    assert.equal(info.order, 22);
    assert.equal(info.parent, undefined);
  });

  test('snapshot, revert to it (3.40), volume from snapshot is a clone with the snapshot bytes', async () => {
    const before = pattern(1, 4 * MiB);
    await writeThroughBinding(`volume-${ids['c1']}`, 8 * MiB, before);
    const snap = await openstackJson(env, ['volume', 'snapshot', 'create', '--volume', 'c1', 's1']);
    ids['s1'] = snap['id'] as string;
    await waitFor('snapshot s1', async () => ((await openstackJson(env, ['volume', 'snapshot', 'show', 's1']))['status'] === 'available' ? true : undefined));
    const snaps = await rbd(['snap', 'ls', '--format', 'json', `volumes/volume-${ids['c1']}`]);
    assert.ok((JSON.parse(snaps) as { name: string }[]).some((s) => s.name === `snapshot-${ids['s1']}`));

    await writeThroughBinding(`volume-${ids['c1']}`, 8 * MiB, pattern(2, 4 * MiB));
    await execFileAsync('/usr/bin/cinder', ['--os-volume-api-version', '3.40', 'revert-to-snapshot', 's1'], { env: cliEnv(env), timeout: 60_000 });
    await waitVolume('c1', 'available');
    assert.ok((await readThroughBinding(`volume-${ids['c1']}`, 8 * MiB, 4 * MiB)).equals(before), 'revert restores the snapshot bytes');

    const fromSnap = await openstackJson(env, ['volume', 'create', '--snapshot', 's1', 'c2']);
    ids['c2'] = fromSnap['id'] as string;
    await waitVolume('c2', 'available');
    const info = await rbdInfo(`volume-${ids['c2']}`);
    assert.deepEqual({ pool: info.parent?.pool, image: info.parent?.image, snapshot: info.parent?.snapshot }, {
      pool: 'volumes', image: `volume-${ids['c1']}`, snapshot: `snapshot-${ids['s1']}`,
    });
    assert.ok((await readThroughBinding(`volume-${ids['c2']}`, 8 * MiB, 4 * MiB)).equals(before));
  });

  test('volume from volume is a clone of a temporary snapshot; extend grows the image', async () => {
    const clone = await openstackJson(env, ['volume', 'create', '--source', 'c1', 'c3']);
    ids['c3'] = clone['id'] as string;
    await waitVolume('c3', 'available');
    const info = await rbdInfo(`volume-${ids['c3']}`);
    assert.equal(info.parent?.image, `volume-${ids['c1']}`);
    assert.equal(info.parent?.snapshot, `volume-${ids['c3']}.clone_snap`);
    assert.ok((await readThroughBinding(`volume-${ids['c3']}`, 8 * MiB, 4 * MiB)).equals(pattern(1, 4 * MiB)));

    await openstack(env, ['volume', 'set', '--size', '2', 'c1']);
    const extended = await waitVolume('c1', 'available');
    assert.equal(extended['size'], 2);
    assert.equal((await rbdInfo(`volume-${ids['c1']}`)).size, 2048 * MiB);
  });

  test('connection info has the shape of Cinder RBD and works with qemu-io as client.cinder', async () => {
    const api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const r = await api.request('POST', `/volume/v3/${api.projectId}/volumes/${ids['c3']}/action`, { 'os-initialize_connection': { connector: { host: 'compute01' } } });
    assert.equal(r.status, 200, r.text);
    const info = r.body.connection_info;
    assert.equal(info.driver_volume_type, 'rbd');
    assert.equal(info.data.name, `volumes/volume-${ids['c3']}`);
    assert.deepEqual(info.data.hosts, ['127.0.0.1']);
    assert.deepEqual(info.data.ports, ['6789']);
    assert.equal(info.data.auth_enabled, true);
    assert.equal(info.data.auth_username, 'cinder');
    assert.equal(info.data.secret_type, 'ceph');
    assert.equal(info.data.secret_uuid, '457eb676-33da-42ec-9a8c-9293d545c337');
    assert.equal(info.data.cluster_name, 'ceph');
    assert.equal(typeof info.data.discard, 'boolean');
    const target = `rbd:${info.data.name}:id=${info.data.auth_username}:conf=${lab.confPath}:keyring=${lab.keyringPath('cinder')}`;
    const write = await execFileAsync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x7e 100M 64k', target], { timeout: 60_000 });
    assert.match(write.stdout, /wrote 65536\/65536 bytes/);
    const read = await execFileAsync('qemu-io', ['-f', 'raw', '-c', 'read -P 0x7e 100M 64k', target], { timeout: 60_000 });
    assert.doesNotMatch(read.stdout, /Pattern verification failed/);
    assert.ok((await readThroughBinding(`volume-${ids['c3']}`, 100 * MiB, 64 * 1024)).equals(Buffer.alloc(64 * 1024, 0x7e)));
  });

  test('deletes in awkward order: parents are kept hidden until their last clone is gone', async () => {
    const failed = await openstack(env, ['volume', 'delete', 'c1']).then(() => null, (e: Error) => e.message);
    assert.match(failed ?? '', /snapshot/i, 'a volume with snapshots is refused without cascade');
    await openstack(env, ['volume', 'snapshot', 'delete', 's1']);
    await waitFor('snapshot s1 gone', async () => ((await openstackJson<unknown[]>(env, ['volume', 'snapshot', 'list'])).length === 0 ? true : undefined));
    await openstack(env, ['volume', 'delete', 'c1']);
    await waitFor('c1 gone from the API', async () => ((await openstackJson<{ Name: string }[]>(env, ['volume', 'list'])).some((v) => v.Name === 'c1') ? undefined : true));
    const hidden = await waitFor('c1 hidden', async () => {
      const names = await poolImages();
      return names.includes(`volume-${ids['c1']}.deleted`) ? names : undefined;
    });
    assert.ok(hidden.includes(`volume-${ids['c1']}.deleted`), `parent kept hidden: ${hidden.join(', ')}`);
    assert.ok(!hidden.includes(`volume-${ids['c1']}`));
    // The clones still read their data through the hidden parent.
    assert.ok((await readThroughBinding(`volume-${ids['c2']}`, 8 * MiB, 4 * MiB)).equals(pattern(1, 4 * MiB)));

    await openstack(env, ['volume', 'delete', 'c2']);
    await waitFor('c2 image gone', async () => ((await poolImages()).some((n) => n.includes(`volume-${ids['c2']}`)) ? undefined : true));
    assert.ok((await poolImages()).includes(`volume-${ids['c1']}.deleted`), 'still kept for c3');
    await openstack(env, ['volume', 'delete', 'c3']);
    await waitFor('pool empty', async () => ((await poolImages()).length === 0 ? true : undefined));
    assert.deepEqual(await openstackJson(env, ['volume', 'list']), []);
  });

  test("capacity: get_pools reports the pool's usable space (raw / replicas) for the thin-provisioning maths", async () => {
    const api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const r = await api.request('GET', `/volume/v3/${api.projectId}/scheduler-stats/get_pools?detail=true`);
    assert.equal(r.status, 200, r.text);
    const ceph = r.body.pools.find((p: { name: string }) => p.name === 'pumice@ceph#ceph').capabilities;
    const df = JSON.parse((await execFileAsync('ceph', ['--conf', lab.confPath, 'df', '--format', 'json'])).stdout) as { stats: { total_bytes: number } };
    const rawGiB = df.stats.total_bytes / 1024 ** 3;
    // 2 replicas: usable is about half the raw space (less what Ceph keeps back for full ratios).
    assert.ok(ceph.total_capacity_gb > rawGiB * 0.3 && ceph.total_capacity_gb <= rawGiB / 2 + 0.5, `total ${ceph.total_capacity_gb} GiB for ${rawGiB.toFixed(1)} GiB raw`);
    assert.ok(ceph.free_capacity_gb <= ceph.total_capacity_gb);
    assert.equal(ceph.thin_provisioning_support, true);
    assert.equal(ceph.max_over_subscription_ratio, '20');
    assert.equal(ceph.storage_protocol, 'ceph');
  });

  test('deleting a volume whose image is already gone from Ceph succeeds', async () => {
    await openstack(env, ['volume', 'create', '--type', 'ceph', '--size', '1', 'vanished']);
    const id = (await waitVolume('vanished', 'available'))['id'] as string;
    await rbd(['rm', '--no-progress', `volumes/volume-${id}`]);
    await openstack(env, ['volume', 'delete', 'vanished']);
    await waitFor('vanished gone', async () => ((await openstackJson<{ Name: string }[]>(env, ['volume', 'list'])).some((v) => v.Name === 'vanished') ? undefined : true));
  });

  test('rbd_flatten_volume_from_snapshot = true: a volume from a snapshot ends independent of its parent (pool vms)', async () => {
    await openstack(env, ['volume', 'type', 'create', 'ceph-flat', '--property', 'volume_backend_name=ceph-flat']);
    await openstack(env, ['volume', 'create', '--type', 'ceph-flat', '--size', '1', 'f0']);
    const f0 = (await waitVolume('f0', 'available'))['id'] as string;
    assert.equal((await openstackJson(env, ['volume', 'show', 'f0']))['os-vol-host-attr:host'], 'pumice@ceph-flat#ceph-flat');
    const vms = await cluster.openIoctx('vms');
    try {
      const img = await vms.openImage(`volume-${f0}`);
      await img.write(0, pattern(5, MiB));
      await img.close();
      await openstack(env, ['volume', 'snapshot', 'create', '--volume', 'f0', 'fs']);
      await waitFor('fs available', async () => ((await openstackJson(env, ['volume', 'snapshot', 'show', 'fs']))['status'] === 'available' ? true : undefined));
      await openstack(env, ['volume', 'create', '--snapshot', 'fs', 'f1']);
      const f1 = (await waitVolume('f1', 'available'))['id'] as string;
      await waitFor('f1 flattened', async () => {
        const info = JSON.parse(await rbd(['info', '--format', 'json', `vms/volume-${f1}`])) as { parent?: unknown };
        return info.parent ? undefined : true;
      });
      const copy = await vms.openImage(`volume-${f1}`, { readOnly: true });
      assert.ok((await copy.read(0, MiB)).equals(pattern(5, MiB)));
      await copy.close();
    } finally {
      await vms.close();
    }
    await openstack(env, ['volume', 'delete', 'f1']);
    await openstack(env, ['volume', 'snapshot', 'delete', 'fs']);
    await waitFor('fs gone', async () => ((await openstackJson<unknown[]>(env, ['volume', 'snapshot', 'list'])).length === 0 ? true : undefined));
    await openstack(env, ['volume', 'delete', 'f0']);
    await waitFor('vms empty', async () => ((JSON.parse(await rbd(['ls', '--format', 'json', 'vms'])) as string[]).length === 0 ? true : undefined));
  });

  test('a chain deeper than rbd_max_clone_depth is flattened in the background and keeps its bytes', async () => {
    await openstack(env, ['volume', 'create', '--type', 'ceph', '--size', '1', 'd0']);
    const d0 = (await waitVolume('d0', 'available'))['id'] as string;
    await writeThroughBinding(`volume-${d0}`, 0, pattern(9, 4 * MiB));
    let previous = 'd0';
    const chain: string[] = [d0];
    for (const name of ['d1', 'd2', 'd3']) {
      await openstack(env, ['volume', 'create', '--source', previous, name]);
      chain.push((await waitVolume(name, 'available'))['id'] as string);
      previous = name;
    }
    // depth: d1 = 1, d2 = 2, d3 = 3 > rbd_max_clone_depth 2, so d3 is flattened.
    await waitFor('d3 flattened', async () => ((await rbdInfo(`volume-${chain[3]}`)).parent ? undefined : true));
    assert.ok((await rbdInfo(`volume-${chain[2]}`)).parent, 'd2 is within the limit and stays a clone');
    assert.ok((await readThroughBinding(`volume-${chain[3]}`, 0, 4 * MiB)).equals(pattern(9, 4 * MiB)));
    for (const name of ['d3', 'd2', 'd1', 'd0']) await openstack(env, ['volume', 'delete', name]);
    await waitFor('pool empty', async () => ((await poolImages()).length === 0 ? true : undefined));
  });

  test('keyring removed: the ceph backend goes down with the keyring message, local keeps serving; restored: up again', async () => {
    const keyring = lab.keyringPath('cinder');
    await rename(keyring, `${keyring}.away`);
    try {
      const down = await waitFor('ceph down', async () => {
        const states = await serviceStates();
        return states['pumice@ceph']?.state === 'down' ? states['pumice@ceph'] : undefined;
      }, 30_000);
      assert.match(down.reason ?? '', /keyring .*ceph\.client\.cinder\.keyring.* not found.*ceph auth get client\.cinder/);
      await openstack(env, ['volume', 'create', '--size', '1', '--type', 'ceph', 'while-down']);
      const failed = await waitFor('while-down to error', async () => {
        const v = await openstackJson(env, ['volume', 'show', 'while-down']);
        return v['status'] === 'error' ? v : undefined;
      });
      assert.equal(failed['status'], 'error');
      await openstack(env, ['volume', 'create', '--size', '1', 'on-local']);
      assert.equal((await waitVolume('on-local', 'available'))['os-vol-host-attr:host'], 'pumice@local#local');
    } finally {
      await rename(`${keyring}.away`, keyring);
    }
    await waitFor('ceph up again', async () => ((await serviceStates())['pumice@ceph']?.state === 'up' ? true : undefined), 30_000);
    await openstack(env, ['volume', 'delete', 'while-down', 'on-local']);
  });

  test('monitor stopped: down with a timeout message; started: up again', async () => {
    await stopDaemon(lab.dir, 'mon.a');
    try {
      const down = await waitFor('ceph down', async () => {
        const states = await serviceStates();
        // Down shows once heartbeats stop; the reason once the cluster call has timed out.
        return states['pumice@ceph']?.state === 'down' && states['pumice@ceph']?.reason ? states['pumice@ceph'] : undefined;
      }, 60_000);
      assert.match(down.reason ?? '', /no answer from the monitors .* within 5 s/);
      assert.equal((await serviceStates())['pumice@local']?.state, 'up');
    } finally {
      await startDaemon(lab.dir, 'mon.a');
      await waitLabReady(lab.dir, 120_000);
    }
    await waitFor('ceph up again', async () => ((await serviceStates())['pumice@ceph']?.state === 'up' ? true : undefined), 60_000);
  });
});
