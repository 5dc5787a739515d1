/**
 * Evacuation on the local backend with real QEMU guests (TCG) and two compute
 * hosts on one machine: the cloud's own host `pumice` and `compute02`, a
 * second `pumice serve --roles compute` process on the same data directory
 * with its own instances_path.
 *
 * 1. Refused while compute02 is up (409 naming the fix).
 * 2. Host death: a server booted on compute02 from a local (NBD) boot volume
 *    with a data volume; compute02's agent and QEMU are killed -9; the
 *    operator forces the service down and runs `openstack server evacuate`;
 *    the server is ACTIVE on `pumice` with both volumes attached there, the
 *    guest boots and the data volume's counter marker goes 1 → 2 (data
 *    intact). The fence is in the instance actions, the migration record
 *    (type evacuation, done) in `openstack server migration list`.
 * 3. Partition: a server with a local qcow2 root (rebuilt from the image on
 *    the new host) and a data volume; only compute02's agent dies, its QEMU
 *    keeps running. After `nova evacuate`, the old QEMU's writes to the data
 *    volume fail (its NBD connection was cut and the export's secret is
 *    revoked: the old export name is refused), the new guest counts the data
 *    volume, and compute02's agent, restarted, destroys the old QEMU.
 * Prints the evacuation time: host marked down → guest READY on the new host.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { openstack, openstackJson, startPumice, cliEnv, repoRoot, type PumiceProcess } from '../helpers/pumice.ts';
import { ComputeClient, qemuPids, uploadGuestImage, type Row } from '../helpers/compute.ts';
import { qemuIo, startComputeHost, waitComputeService, type ComputeHostProcess } from '../helpers/compute-host.ts';

process.env['PUMICE_VALIDATE_RESPONSES'] = '1';
const execFileAsync = promisify(execFile);

const config = `[DEFAULT]
report_interval = 1
service_down_time = 4

[libvirt]
virt_type = qemu
`;

let pumice: PumiceProcess;
let compute02: ComputeHostProcess;
let compute03: ComputeHostProcess | null = null;
let admin: ComputeClient;
let env: Record<string, string>;
let imageId = '';
const os = (args: string[]) => openstack(env, args);
const osJson = <T = Row>(args: string[]) => openstackJson<T>(env, args);
const timings: string[] = [];

async function startCompute02(): Promise<void> {
  compute02 = await startComputeHost({ dataDir: pumice.dataDir, host: 'compute02', configText: config });
  await waitService('compute02', 'up');
}

const waitService = (host: string, state: 'up' | 'down', timeoutMs = 30_000) => waitComputeService(admin, host, state, timeoutMs);

/** Waits until the local backend's volume service shows `state` in `openstack volume service list`. */
async function waitVolumeService(state: 'up' | 'down', timeoutMs = 30_000): Promise<Row> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const services = await osJson<Row[]>(['volume', 'service', 'list', '--long']);
    const local = services.find((s) => s['Binary'] === 'cinder-volume' && String(s['Host']).endsWith('@local'));
    if (local && local['State'] === state) return local;
    if (Date.now() > deadline) throw new Error(`the local volume service is not ${state}: ${JSON.stringify(local)}`);
    await new Promise((res) => setTimeout(res, 250));
  }
}

async function serviceId(host: string): Promise<string> {
  const r = await admin.request('GET', '/os-services?binary=nova-compute');
  return (r.body.services as Row[]).find((s) => s['host'] === host)!['id'];
}

/** Boots on compute02 (admin forces the host with availability_zone nova:compute02); returns the server id. */
async function bootOnCompute02(name: string, bdms: Row[], imageRef?: string): Promise<string> {
  const r = await admin.request('POST', '/servers', {
    server: { name, flavorRef: '42', networks: 'none', availability_zone: 'nova:compute02', ...(imageRef ? { imageRef } : {}), block_device_mapping_v2: bdms },
  });
  assert.equal(r.status, 202, r.text);
  const id = r.body.server.id as string;
  const started = Date.now();
  const row = (await admin.waitServer(id, ['ACTIVE'], 120_000))!;
  assert.equal(row['OS-EXT-SRV-ATTR:host'], 'compute02');
  await admin.waitConsole(id, /PUMICE-GUEST-READY/, 1, 90_000);
  timings.push(`reference: boot of ${name} on compute02, create → guest READY ${Date.now() - started} ms`);
  return id;
}

async function attachmentsOf(volumeId: string): Promise<Row[]> {
  return (await admin.volume(volumeId))['attachments'] as Row[];
}

before(async () => {
  pumice = await startPumice({ config });
  env = { ...pumice.adminEnv, OS_COMPUTE_API_VERSION: '2.79' };
  admin = await ComputeClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  imageId = await uploadGuestImage(admin.api);
  await startCompute02();
}, { timeout: 600_000 });

after(async () => {
  if (!pumice) return;
  if (compute02) await compute02.stop().catch(() => undefined);
  await startCompute02().catch(() => undefined);
  for (const s of (await admin.request('GET', '/servers?all_tenants=1')).body?.servers ?? []) await admin.request('DELETE', `/servers/${s.id}`);
  for (const s of (await admin.request('GET', '/servers?all_tenants=1')).body?.servers ?? []) await admin.waitServer(s.id, ['DELETED'], 60_000).catch(() => undefined);
  await compute02?.stop().catch(() => undefined);
  await compute03?.stop().catch(() => undefined);
  await pumice.stop();
  const left = [...(await qemuPids(path.join(pumice.dataDir, 'instances'))), ...(await qemuPids(compute02.instancesDir)), ...(await qemuPids(path.join(pumice.dataDir, 'instances-compute03')))];
  for (const pid of left) process.kill(pid, 'SIGKILL');
  if (timings.length) console.log(`evacuation timings (TCG):\n  ${timings.join('\n  ')}`);
  pumice.cleanup();
  assert.deepEqual(left, [], 'no QEMU process outlives its servers');
}, { timeout: 300_000 });

describe('evacuation between two compute hosts on one machine', () => {
  let vm1 = '';
  let bootVolumeId = '';
  let dataVolumeId = '';
  let lateVolumeId = '';

  test('a server on compute02 with a boot volume and a data volume; evacuate is refused while compute02 is up', async () => {
    bootVolumeId = await admin.createVolume({ size: 1, imageRef: imageId, name: 'evac-boot' });
    dataVolumeId = await admin.createVolume({ size: 1, name: 'evac-data' });
    await admin.waitVolume(bootVolumeId, ['available'], 120_000);
    await admin.waitVolume(dataVolumeId, ['available']);
    vm1 = await bootOnCompute02('evac-vm1', [
      { source_type: 'volume', destination_type: 'volume', uuid: bootVolumeId, boot_index: 0 },
      { source_type: 'volume', destination_type: 'volume', uuid: dataVolumeId, boot_index: -1 },
    ]);
    await admin.waitConsole(vm1, new RegExp(`PUMICE-DISK serial=${dataVolumeId.slice(0, 20)} counter=1`), 1, 90_000);

    const up = await admin.request('POST', `/servers/${vm1}/action`, { evacuate: {} });
    assert.equal(up.status, 409, up.text);
    assert.match(up.body.conflictingRequest.message, /Compute service of compute02 is still in use: evacuation needs the host down; force it down with `openstack compute service set --down compute02 nova-compute`/);
    // Microversion rules and bad targets, answered before anything changes.
    const old = await admin.request('POST', `/servers/${vm1}/action`, { evacuate: {} }, { 'OpenStack-API-Version': 'compute 2.13' });
    assert.equal(old.status, 400);
    assert.match(old.body.badRequest.message, /onSharedStorage/);
    const shared = await admin.request('POST', `/servers/${vm1}/action`, { evacuate: { onSharedStorage: true } });
    assert.equal(shared.status, 400);
    const force = await admin.request('POST', `/servers/${vm1}/action`, { evacuate: { host: 'pumice', force: true } });
    assert.equal(force.status, 400, 'force is gone after 2.67');
    const { env: memberEnv } = await import('../helpers/pumice.ts').then((m) => m.memberProject(pumice.adminEnv, 'evac-p', 'evac-u'));
    void memberEnv;
    const member = await ComputeClient.login(pumice.url, 'evac-u', 'pw-evac-u', 'evac-p');
    assert.equal((await member.request('POST', `/servers/${vm1}/action`, { evacuate: {} })).status, 404, "another project's server is not even seen");
    assert.equal((await admin.server(vm1))!['status'], 'ACTIVE');
  });

  test('host death: kill -9 of compute02 (agent and QEMU), service forced down, openstack server evacuate: ACTIVE on pumice with both volumes, data intact', async () => {
    assert.ok(vm1, 'needs vm1');
    const oldPids = await qemuPids(compute02.instancesDir);
    assert.equal(oldPids.length, 1);
    await compute02.kill9();
    for (const pid of oldPids) process.kill(pid, 'SIGKILL');
    const downAt = Date.now();
    await os(['compute', 'service', 'set', '--down', 'compute02', 'nova-compute']);
    await waitService('compute02', 'down');
    // Local volumes are not shared storage: with their volume service down (its directory gone here) no
    // other host can reach their data, and the evacuation is refused naming it; back up, it goes ahead.
    const volumeDir = path.join(pumice.dataDir, 'volumes', 'local');
    renameSync(volumeDir, `${volumeDir}.away`);
    symlinkSync('/nonexistent-pumice-volume-directory', volumeDir);
    try {
      const down = await waitVolumeService('down');
      assert.match(String(down['Disabled Reason']), /nonexistent-pumice-volume-directory|ENOENT/);
      const statusBefore = (await admin.server(vm1))!['status'];
      const refused = await admin.request('POST', `/servers/${vm1}/action`, { evacuate: {} });
      assert.equal(refused.status, 409, refused.text);
      assert.match(refused.body.conflictingRequest.message, /cannot be evacuated: volume [0-9a-f-]{36} is on the local backend pumice@local, which is down \(.*\)\. A local volume is not shared storage: .* Bring pumice@local back, then evacuate/);
      assert.equal((await admin.server(vm1))!['status'], statusBefore, 'nothing changed');
      assert.deepEqual(await osJson<Row[]>(['server', 'migration', 'list', '--server', vm1]), [], 'no migration record');
    } finally {
      rmSync(volumeDir);
      renameSync(`${volumeDir}.away`, volumeDir);
    }
    await waitVolumeService('up');
    // A volume attach asked while the host is dead queues a task that compute02 will never run: the
    // evacuation must not wait behind it (it is cancelled, and the volume is attached on the new host).
    lateVolumeId = await admin.createVolume({ size: 1, name: 'evac-late' });
    await admin.waitVolume(lateVolumeId, ['available']);
    const late = await admin.request('POST', `/servers/${vm1}/os-volume_attachments`, { volumeAttachment: { volumeId: lateVolumeId } });
    assert.equal(late.status, 200, late.text);
    // OSC 6.0.0 sends the request, then fails reading novaclient's reply (a TupleWithMeta, fixed in later OSC): tolerated, nothing else.
    await os(['server', 'evacuate', vm1]).catch((error: Error) => {
      if (!/TupleWithMeta/.test(error.message)) throw error;
    });
    const calledAt = Date.now();
    const row = (await admin.waitServer(vm1, ['ACTIVE'], 120_000))!;
    assert.equal(row['OS-EXT-SRV-ATTR:host'], 'pumice');
    const activeAt = Date.now();
    await admin.waitConsole(vm1, /PUMICE-GUEST-READY/, 1, 90_000);
    const readyAt = Date.now();
    const log = await admin.waitConsole(vm1, new RegExp(`PUMICE-DISK serial=${dataVolumeId.slice(0, 20)} counter=2`), 1, 60_000);
    await admin.waitConsole(vm1, new RegExp(`PUMICE-DISK serial=${lateVolumeId.slice(0, 20)} counter=1`), 1, 60_000);
    assert.match(log, /PUMICE-GUEST-BOOTED/);
    timings.push(`host death (NBD volumes): marked down → evacuate call ${calledAt - downAt} ms, → ACTIVE ${activeAt - downAt} ms, → guest READY ${readyAt - downAt} ms`);

    for (const volumeId of [bootVolumeId, dataVolumeId, lateVolumeId]) {
      const volume = await admin.volume(volumeId);
      assert.equal(volume['status'], 'in-use');
      assert.equal(volume['attachments'].length, 1, `one attachment left on ${volumeId}: ${JSON.stringify(volume['attachments'])}`);
      assert.equal(volume['attachments'][0].server_id, vm1);
      assert.equal(volume['attachments'][0].host_name, 'pumice');
    }
    const attached = (await osJson<Row[]>(['server', 'volume', 'list', vm1])).map((a) => [a['Volume ID'], a['Device']]).sort();
    assert.deepEqual(attached, [[bootVolumeId, '/dev/vda'], [dataVolumeId, '/dev/vdb'], [lateVolumeId, '/dev/vdc']].sort(), 'same device names');

    const events = await osJson<Row[]>(['server', 'event', 'list', vm1]);
    const evacuate = events.find((e) => e['Action'] === 'evacuate');
    assert.ok(evacuate, JSON.stringify(events));
    const shown = await osJson(['server', 'event', 'show', vm1, evacuate['Request ID']]);
    const eventNames = (shown['events'] as Row[]).map((e) => `${e['event']}:${e['result']}`);
    assert.deepEqual(eventNames, ['compute_fence_source_host:Success', 'compute_rebuild_instance:Success']);
    const fence = (shown['events'] as Row[])[0]!;
    // Before 2.84 an event's details reach the admin as its traceback.
    assert.match(String(fence['traceback'] ?? fence['details'] ?? JSON.stringify(fence)), /old attachments ended \(NBD exports revoked, connections cut\)/);

    const migrations = await osJson<Row[]>(['server', 'migration', 'list', '--server', vm1]);
    assert.equal(migrations.length, 1, JSON.stringify(migrations));
    assert.equal(migrations[0]!['Type'], 'evacuation');
    assert.equal(migrations[0]!['Status'], 'done');
    assert.equal(migrations[0]!['Source Compute'], 'compute02');
    assert.equal(migrations[0]!['Dest Compute'], 'pumice');
  });

  test('compute02 comes back: nothing of the evacuated server runs there, its disks and volumes are untouched', async () => {
    await os(['compute', 'service', 'set', '--up', 'compute02', 'nova-compute']);
    await startCompute02();
    // The migration record is marked cleaned once compute02 looked at it.
    const deadline = Date.now() + 30_000;
    while ((await qemuPids(compute02.instancesDir)).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
    assert.deepEqual(await qemuPids(compute02.instancesDir), []);
    assert.equal((await admin.server(vm1))!['status'], 'ACTIVE');
    assert.equal((await admin.volume(dataVolumeId))['status'], 'in-use');
    assert.equal((await attachmentsOf(dataVolumeId))[0]!.host_name, 'pumice');
  });

  test('partition: compute02\'s QEMU keeps running; after nova evacuate its writes fail, its old export is refused, and its agent destroys it on return', async () => {
    const dataId = await admin.createVolume({ size: 1, name: 'evac-data2' });
    await admin.waitVolume(dataId, ['available']);
    const serial = dataId.slice(0, 20);
    const vm2 = await bootOnCompute02('evac-vm2', [{ source_type: 'volume', destination_type: 'volume', uuid: dataId, boot_index: -1 }], imageId);
    await admin.waitConsole(vm2, new RegExp(`PUMICE-DISK serial=${serial} counter=1`), 1, 90_000);
    const [oldPid] = await qemuPids(compute02.instancesDir);
    assert.ok(oldPid);
    const oldDir = path.join(compute02.instancesDir, vm2);
    const connectionFiles = readFileSync(path.join(oldDir, 'connections', (await import('node:fs')).readdirSync(path.join(oldDir, 'connections'))[0]!), 'utf8');
    const oldExport = JSON.parse(connectionFiles) as { data: Record<string, unknown> };

    await compute02.kill9();
    // QMP takes one client: with the agent gone the test may talk to the old QEMU. Before the fence its disk takes writes
    // (at 1 MiB: the counter record in sector 0 is left alone).
    assert.match(await qemuIo(oldDir, dataId, 'write -P 0x5a 1048576 4096'), /wrote 4096\/4096 bytes/);
    const downAt = Date.now();
    await os(['compute', 'service', 'set', '--down', 'compute02', 'nova-compute']);
    await execFileAsync('/usr/bin/nova', ['evacuate', vm2], { env: cliEnv({ ...env, OS_COMPUTE_API_VERSION: '2.79' }), timeout: 60_000 });
    const row = (await admin.waitServer(vm2, ['ACTIVE'], 120_000))!;
    assert.equal(row['OS-EXT-SRV-ATTR:host'], 'pumice');
    await admin.waitConsole(vm2, /PUMICE-GUEST-READY/, 1, 90_000);
    timings.push(`partition (local qcow2 root rebuilt from the image + NBD data volume): marked down → guest READY ${Date.now() - downAt} ms`);
    assert.ok(existsSync(path.join(pumice.dataDir, 'instances', vm2, 'disk')), 'the root disk was rebuilt from the image on pumice');
    await admin.waitConsole(vm2, new RegExp(`PUMICE-DISK serial=${serial} counter=2`), 1, 60_000);

    // The old QEMU still runs (nobody killed it) but is cut off: its writes fail.
    assert.doesNotThrow(() => process.kill(oldPid, 0), 'the partitioned QEMU is still running');
    const write = await qemuIo(oldDir, dataId, 'write -P 0xa5 1048576 4096').catch((e: Error) => e.message);
    assert.match(write, /write failed/i, `the fenced guest's write must fail: ${write}`);
    assert.doesNotMatch(write, /wrote 4096/);
    // And its export name is refused to anyone who still holds it.
    const uri = `nbd://${String(oldExport.data['host'])}:${String(oldExport.data['port'])}/${String(oldExport.data['export_name'])}`;
    await assert.rejects(execFileAsync('qemu-img', ['info', '--image-opts', `driver=nbd,host=${String(oldExport.data['host'])},port=${String(oldExport.data['port'])},export=${String(oldExport.data['export_name'])}`], { timeout: 30_000 }), /export|not available|Requested export/i, uri.slice(0, 30));

    // compute02 returns: its agent destroys the old guest (and only that).
    await os(['compute', 'service', 'set', '--up', 'compute02', 'nova-compute']);
    await startCompute02();
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      try {
        process.kill(oldPid, 0);
      } catch {
        break;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.throws(() => process.kill(oldPid, 0), 'the old QEMU is gone');
    assert.equal((await admin.server(vm2))!['status'], 'ACTIVE');
    assert.equal((await attachmentsOf(dataId)).length, 1);
    assert.equal((await attachmentsOf(dataId))[0]!.host_name, 'pumice');
  });

  test('crash harness: the destination dies (exit 137) at two steps of an evacuation; restarted, it finishes; never two copies, no stale attachment', async () => {
    const dataId = await admin.createVolume({ size: 1, name: 'evac-data3' });
    await admin.waitVolume(dataId, ['available']);
    const vm3 = await bootOnCompute02('evac-vm3', [{ source_type: 'volume', destination_type: 'volume', uuid: dataId, boot_index: -1 }], imageId);
    await admin.waitConsole(vm3, new RegExp(`PUMICE-DISK serial=${dataId.slice(0, 20)} counter=1`), 1, 90_000);
    const pids = await qemuPids(compute02.instancesDir);
    await compute02.kill9();
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    await os(['compute', 'service', 'set', '--down', 'compute02', 'nova-compute']);
    const crashAt = async (point: string | null) => {
      compute03 = await startComputeHost({ dataDir: pumice.dataDir, host: 'compute03', configText: config, ...(point ? { env: { PUMICE_CRASH_POINT: point } } : {}) });
      await waitService('compute03', 'up');
    };
    await crashAt('evacuate.fenced');
    // Nova's host-evacuate as a pumice command (beside the running cloud, on its data directory).
    const { stdout } = await execFileAsync(process.execPath, [path.join(repoRoot, 'bin', 'pumice.mjs'), 'host', 'evacuate', 'compute02', '--target', 'compute03', '--data-dir', pumice.dataDir, '--config', path.join(pumice.dataDir, 'pumice.conf')], { timeout: 60_000 });
    assert.match(stdout, new RegExp(`${vm3} evac-vm3: evacuating to compute03`));
    assert.equal(await compute03!.exited, 137, 'compute03 died at evacuate.fenced');
    await crashAt('evacuate.volumes-connected');
    assert.equal(await compute03!.exited, 137, 'compute03 died at evacuate.volumes-connected');
    await crashAt(null);
    const row = (await admin.waitServer(vm3, ['ACTIVE'], 120_000))!;
    assert.equal(row['OS-EXT-SRV-ATTR:host'], 'compute03');
    await admin.waitConsole(vm3, new RegExp(`PUMICE-DISK serial=${dataId.slice(0, 20)} counter=2`), 1, 90_000);
    assert.equal((await qemuPids(compute03!.instancesDir)).length, 1, 'one guest');
    assert.deepEqual(await qemuPids(compute02.instancesDir), []);
    const attachments = await attachmentsOf(dataId);
    assert.equal(attachments.length, 1, `one attachment: ${JSON.stringify(attachments)}`);
    assert.equal(attachments[0]!.host_name, 'compute03');
    const migrations = await osJson<Row[]>(['server', 'migration', 'list', '--server', vm3]);
    assert.deepEqual(migrations.map((m) => m['Status']), ['done']);
    await os(['compute', 'service', 'set', '--up', 'compute02', 'nova-compute']);
  });
});
