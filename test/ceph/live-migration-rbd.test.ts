/**
 * Live migration on the Ceph lab (issue 15 tests 2 and 3), real QEMU guests
 * (TCG) and two compute hosts on one machine: `pumice` (the cloud's own) and
 * `compute02`, whose migrations are slowed to 1 MiB/s ([libvirt]
 * live_migration_bandwidth) so an abort lands mid-copy. One boot for the file.
 *
 * The server boots on pumice with an RBD root (images_type = rbd) and an RBD
 * data volume holding a ticker record: the guest writes the counter every
 * 100 ms (fsync) and prints each acknowledged value.
 * 1. `openstack server migrate --live-migration --host compute02`: MIGRATING
 *    with a migration record in progress, then ACTIVE on compute02; the
 *    target's console shows no boot; the acknowledged counter, across both
 *    consoles, goes up by exactly one each time (no write lost, none
 *    repeated); the volume has one attachment, compute02's.
 * 2. Back towards pumice at 1 MiB/s, `openstack server migration show`
 *    reports memory progress, `openstack server migration abort` mid-copy:
 *    the server keeps running on compute02 (the ticker goes on), nothing of
 *    it is left on pumice (no QEMU, no instance directory, no attachment).
 * 3. Fail-back (issue 15 test 4, without the evacuation: the server is away
 *    from its home, pumice, after 1.): `pumice host rebalance pumice` refuses
 *    while compute02 is down (its agent stopped; the guest runs on); once
 *    compute02 is back (without the bandwidth limit) it live-migrates the
 *    server home: ACTIVE on pumice, no boot, the ticker goes on by one.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { readLab, type CephLab } from '../../src/ceph/lab.ts';
import { openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';
import { ComputeClient, emptyTheCloud, qemuPids, uploadGuestImage, type Row } from '../helpers/compute.ts';
import { cephComputeConfig, hostRebalance, startComputeHost, waitComputeService, type ComputeHostProcess } from '../helpers/compute-host.ts';
import { assertConsecutive, guestMarkers, tickCounters } from '../helpers/guest.ts';

process.env['PUMICE_VALIDATE_RESPONSES'] = '1';
const execFileAsync = promisify(execFile);
const shared = process.env['PUMICE_CEPH_LAB'];
const secretUuid = '6f1d2c1e-8f43-4b8e-9d0a-2a4f0b1c5e11';

let lab: CephLab;
let workDir = '';
let pumice: PumiceProcess;
let compute02: ComputeHostProcess;
let admin: ComputeClient;
let env: Record<string, string>;
let imageId = '';
const notes: string[] = [];

function config(libvirt = '', compute = ''): string {
  return cephComputeConfig({ confPath: lab.confPath, secretUuid, rbdUser: 'cinder', keyringPath: lab.keyringPath('cinder'), libvirt, compute });
}

const waitService = (host: string, state: 'up' | 'down', timeoutMs = 30_000) => waitComputeService(admin, host, state, timeoutMs);

/** The first sector of an RBD volume, as the admin reads it. */
async function volumeRecord(volumeId: string): Promise<string> {
  const file = path.join(workDir, `record-${volumeId}`);
  await rm(file, { force: true });
  await execFileAsync('rbd', ['--conf', lab.confPath, '--id', 'admin', 'export', '--no-progress', `volumes/volume-${volumeId}`, file], { timeout: 60_000 });
  return readFileSync(file).subarray(0, 512).toString('latin1').replace(/\0+$/, '').trim();
}

async function serverMigrations(vm: string): Promise<Row[]> {
  const r = await admin.request('GET', `/servers/${vm}/migrations`);
  assert.equal(r.status, 200, r.text);
  return r.body.migrations as Row[];
}

async function volumeAttachments(volumeId: string): Promise<Row[]> {
  const r = await admin.api.request('GET', `/volume/v3/${admin.projectId}/attachments?volume_id=${volumeId}`, undefined, { 'OpenStack-API-Version': 'volume 3.60' });
  assert.equal(r.status, 200, r.text);
  return r.body.attachments as Row[];
}

/** `pumice host rebalance HOST` beside the running cloud, fail-back allowed 2 s after a host's return. */
const rebalance = (host: string) => hostRebalance({ dataDir: pumice.dataDir, configText: config('', 'failback_healthy_seconds = 2'), host });

before(async () => {
  if (!shared) return;
  lab = readLab(shared);
  workDir = await mkdtemp(path.join(tmpdir(), 'pumice-live-migration-'));
  pumice = await startPumice({ config: config() });
  env = { ...pumice.adminEnv, OS_COMPUTE_API_VERSION: '2.79' };
  admin = await ComputeClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  imageId = await uploadGuestImage(admin.api);
  compute02 = await startComputeHost({ dataDir: pumice.dataDir, host: 'compute02', configText: config('live_migration_bandwidth = 1') });
  await waitService('compute02', 'up');
  // compute02's agent probed pumice's migration address at start (pumice doctor reads it: src/compute/migration-probe.ts).
  const { stdout: report } = await execFileAsync('sqlite3', [path.join(pumice.dataDir, 'pumice.db'), "SELECT report FROM compute_nodes WHERE host = 'compute02'"]);
  const reach = (JSON.parse(report) as { migration_reach?: Record<string, { ok: boolean; detail: string }> }).migration_reach?.['pumice'];
  assert.equal(reach?.ok, true, `compute02 reached pumice's migration probe: ${report}`);
}, { timeout: 600_000 });

after(async () => {
  if (pumice) {
    await emptyTheCloud(admin, env, imageId);
    await compute02?.stop().catch(() => undefined);
    await pumice.stop();
    if (process.env['PUMICE_TEST_LOG_DIR']) {
      writeFileSync(path.join(process.env['PUMICE_TEST_LOG_DIR'], 'live-migration-pumice.log'), pumice.output());
      writeFileSync(path.join(process.env['PUMICE_TEST_LOG_DIR'], 'live-migration-compute02.log'), compute02?.output() ?? '');
    }
    const left = [...(await qemuPids(`${path.join(pumice.dataDir, 'instances')}/`)), ...(compute02 ? await qemuPids(compute02.instancesDir) : [])];
    for (const pid of left) process.kill(pid, 'SIGKILL');
    if (notes.length) console.log(`live migration on Ceph (TCG, 128 MiB guest, loopback):\n  ${notes.join('\n  ')}`);
    pumice.cleanup();
    assert.deepEqual(left, [], 'no QEMU outlives its servers');
  }
  if (workDir) await rm(workDir, { recursive: true, force: true });
}, { timeout: 300_000 });

describe('live migration on Ceph', { skip: shared ? false : 'PUMICE_CEPH_LAB is not set (a running Ceph lab)' }, () => {
  let vm = '';
  let volumeId = '';
  let serial = '';
  const pumiceConsole = () => readFileSync(path.join(pumice.dataDir, 'instances', vm, 'console.log'), 'utf8');
  const compute02Console = () => readFileSync(path.join(compute02.instancesDir, vm, 'console.log'), 'utf8');

  test('live migration pumice → compute02: the guest keeps running and its acknowledged writes all land', async () => {
    volumeId = await admin.createVolume({ size: 1, name: 'lm-ticker' });
    await admin.waitVolume(volumeId, ['available']);
    serial = volumeId.slice(0, 20);
    const tickFile = path.join(workDir, 'tick.raw');
    writeFileSync(tickFile, Buffer.concat([Buffer.from('PUMICE-TICK 0\n'), Buffer.alloc(512 - 14)]));
    await execFileAsync('qemu-io', ['-f', 'raw', '-c', `write -s ${tickFile} 0 512`, `rbd:volumes/volume-${volumeId}:id=admin:conf=${lab.confPath}`], { timeout: 60_000 });
    const r = await admin.request('POST', '/servers', {
      server: {
        name: 'lm', flavorRef: '42', imageRef: imageId, networks: 'none', availability_zone: 'nova:pumice',
        block_device_mapping_v2: [
          { source_type: 'image', destination_type: 'local', uuid: imageId, boot_index: 0 },
          { source_type: 'volume', destination_type: 'volume', uuid: volumeId, boot_index: -1 },
        ],
      },
    });
    assert.equal(r.status, 202, r.text);
    vm = r.body.server.id;
    const booted = Date.now();
    assert.equal((await admin.waitServer(vm, ['ACTIVE'], 120_000))!['OS-EXT-SRV-ATTR:host'], 'pumice');
    await admin.waitConsole(vm, new RegExp(`PUMICE-TICK serial=${serial} n=3\\b`), 1, 120_000);
    notes.push(`boot → 3 ticks: ${Date.now() - booted} ms`);

    const started = Date.now();
    await openstack(env, ['server', 'migrate', '--live-migration', '--host', 'compute02', vm]);
    const statuses = new Set<string>();
    let inProgress: Row | null = null;
    for (;;) {
      const row = (await admin.server(vm))!;
      statuses.add(String(row['status']));
      if (!inProgress) inProgress = (await serverMigrations(vm))[0] ?? null;
      if (row['status'] === 'ACTIVE' && row['OS-EXT-SRV-ATTR:host'] === 'compute02') break;
      assert.ok(['MIGRATING', 'ACTIVE'].includes(String(row['status'])), `status ${row['status']} during the migration: ${JSON.stringify(row['fault'] ?? null)}`);
      assert.ok(Date.now() - started < 90_000, `not on compute02 after 90 s: ${JSON.stringify(row)}`);
      await new Promise((res) => setTimeout(res, 100));
    }
    notes.push(`os-migrateLive → ACTIVE on compute02: ${Date.now() - started} ms`);
    assert.ok(statuses.has('MIGRATING'), `MIGRATING seen: ${[...statuses].join(', ')}`);
    assert.ok(inProgress, 'GET /servers/{id}/migrations listed the migration while it ran');
    assert.equal(inProgress['dest_compute'], 'compute02');

    // The guest did not boot on compute02 and kept writing: the acknowledged counter goes on by one.
    await admin.waitConsole(vm, new RegExp(`PUMICE-TICK serial=${serial} n=\\d+`), 10, 60_000);
    const target = compute02Console();
    assert.ok(!target.includes(guestMarkers.booted), `no boot on compute02's console:\n${target.slice(0, 2000)}`);
    const source = pumiceConsole();
    const before = tickCounters(source, serial);
    const afterSwitch = tickCounters(target, serial);
    assert.ok(afterSwitch.length >= 10, 'the guest ticks on compute02');
    assertConsecutive([...before, ...afterSwitch], 'ticks across the switch');
    notes.push(`ticks: ${before.length} on pumice (last ${before.at(-1)}), then ${afterSwitch[0]}… on compute02`);
    const onDisk = Number((await volumeRecord(volumeId)).replace('PUMICE-TICK ', ''));
    assert.ok(onDisk >= afterSwitch.at(-1)!, `the volume holds ${onDisk}, at least the last acknowledged ${afterSwitch.at(-1)}`);

    const attachments = await volumeAttachments(volumeId);
    assert.equal(attachments.length, 1, `one attachment left: ${JSON.stringify(attachments)}`);
    const records = await openstackJson<Row[]>(env, ['server', 'migration', 'list', '--server', vm]);
    const record = records.find((m) => m['Type'] === 'live-migration' || m['Migration Type'] === 'live-migration');
    assert.ok(record, `openstack server migration list shows it: ${JSON.stringify(records)}`);
    assert.equal(record['Status'], 'completed');
    assert.equal(record['Source Compute'], 'pumice');
    assert.equal(record['Dest Compute'], 'compute02');
    assert.deepEqual(await qemuPids(`${path.join(pumice.dataDir, 'instances')}/`), [], 'the source QEMU is gone');
  });

  test('abort mid-copy (compute02 → pumice at 1 MiB/s): the guest stays on compute02, nothing is left on pumice', async () => {
    assert.ok(vm, 'needs the migrated server');
    await openstack(env, ['server', 'migrate', '--live-migration', '--host', 'pumice', vm]);
    const deadline = Date.now() + 60_000;
    let running: Row | undefined;
    while (!running) {
      running = (await serverMigrations(vm)).find((m) => m['status'] === 'running' && Number(m['memory_processed_bytes'] ?? 0) > 0);
      assert.ok(Date.now() < deadline, 'the migration never reached running with bytes sent');
      if (!running) await new Promise((res) => setTimeout(res, 200));
    }
    const shown = await openstackJson(env, ['server', 'migration', 'show', vm, String(running['id'])]);
    assert.equal(shown['Status'] ?? shown['status'], 'running', JSON.stringify(shown));
    assert.ok(Number(shown['Memory Remaining Bytes'] ?? shown['memory_remaining_bytes']) > 0, `copy under way: ${JSON.stringify(shown)}`);
    assert.ok(existsSync(path.join(pumice.dataDir, 'instances', vm)), 'pumice prepared a target');
    const ticksBefore = tickCounters(compute02Console(), serial).length;
    await openstack(env, ['server', 'migration', 'abort', vm, String(running['id'])]);
    const aborted = Date.now();
    for (;;) {
      const records = (await admin.request('GET', `/os-migrations?instance_uuid=${vm}`)).body.migrations as Row[];
      const record = records.find((m) => m['id'] === running['id'])!;
      if (record['status'] === 'cancelled') break;
      assert.ok(Date.now() - aborted < 60_000, `not cancelled after 60 s: ${JSON.stringify(record)}`);
      await new Promise((res) => setTimeout(res, 200));
    }
    notes.push(`abort with ${running['memory_processed_bytes']} of ${running['memory_total_bytes']} bytes sent → cancelled: ${Date.now() - aborted} ms`);
    const row = (await admin.waitServer(vm, ['ACTIVE'], 30_000))!;
    assert.equal(row['OS-EXT-SRV-ATTR:host'], 'compute02');
    assert.deepEqual(await qemuPids(`${path.join(pumice.dataDir, 'instances')}/`), [], 'no QEMU on pumice');
    assert.ok(!existsSync(path.join(pumice.dataDir, 'instances', vm)), 'no instance directory on pumice');
    const attachments = await volumeAttachments(volumeId);
    assert.equal(attachments.length, 1, `only compute02's attachment: ${JSON.stringify(attachments)}`);
    await admin.waitConsole(vm, new RegExp(`PUMICE-TICK serial=${serial} n=\\d+`), ticksBefore + 10, 60_000);
    const text = compute02Console();
    assert.ok(!text.includes(guestMarkers.booted), 'still no boot on compute02');
    assertConsecutive(tickCounters(text, serial), 'ticks on compute02 through the abort');
  });

  test('fail-back: pumice host rebalance waits while a host is down, then brings the server home live', async () => {
    assert.ok(vm, 'needs the server, away from its home on compute02');
    await compute02.stop();
    await waitService('compute02', 'down');
    const degraded = await rebalance('pumice');
    assert.equal(degraded.code, 1, degraded.output);
    assert.match(degraded.output, /degraded: compute host compute02 is down/);
    assert.equal((await admin.server(vm))!['OS-EXT-SRV-ATTR:host'], 'compute02', 'nothing moved');

    compute02 = await startComputeHost({ dataDir: pumice.dataDir, host: 'compute02', configText: config() });
    await waitService('compute02', 'up');
    // The abort's rollback removed pumice's instance directory, console log included.
    const consoleBefore = existsSync(path.join(pumice.dataDir, 'instances', vm, 'console.log')) ? pumiceConsole().length : 0;
    const started = Date.now();
    await new Promise((res) => setTimeout(res, 2000));
    const home = await rebalance('pumice');
    assert.equal(home.code, 0, home.output);
    assert.match(home.output, /1 server\(s\) moved home to pumice/);
    notes.push(`rebalance (healthy 2 s, then the live migration home): ${Date.now() - started} ms`);
    const row = (await admin.waitServer(vm, ['ACTIVE'], 30_000))!;
    assert.equal(row['OS-EXT-SRV-ATTR:host'], 'pumice');
    await new Promise((res) => setTimeout(res, 2000));
    const away = compute02Console();
    const back = pumiceConsole().slice(consoleBefore);
    assert.ok(!back.includes(guestMarkers.booted), `no boot at home:\n${back.slice(0, 2000)}`);
    const ticksHome = tickCounters(back, serial);
    assert.ok(ticksHome.length > 0, 'the guest ticks at home');
    assertConsecutive([...tickCounters(away, serial), ...ticksHome], 'ticks through the fail-back');
  });
});
