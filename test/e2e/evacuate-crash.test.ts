/**
 * Issue 13, test 5: the destination of an evacuation dies (exit 137, as after kill -9, from
 * PUMICE_CRASH_POINT) at each step of the evacuation; restarted, it resumes from the migration
 * record and finishes. Invariants checked after every crash and at the end:
 * - never two running QEMUs of the instance (counted by their -uuid argument, on every host);
 * - the evacuation ends `done`, the server ACTIVE on the destination with its data volume's counter
 *   record read back by the guest;
 * - no reservation is leaked: the volume has exactly one attachment, on the destination (a fence
 *   interrupted between reserving the volume and recording the reservation reuses it);
 * - the old host, back, removes the instance's local files (its qcow2 root) and runs nothing of it
 *   (each evacuation's destination is the previous one's old host: it cleans up when it starts).
 *
 * Few boots: one server ping-pongs between compute02 and compute03 (a host is "dead": agent and
 * QEMU killed -9, forced down), two crash points per evacuation (the task is retried twice:
 * attemptsMax 3), and a guest boots only where the task passes the spawn.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';
import { ComputeClient, qemuPids, uploadGuestImage, type Row } from '../helpers/compute.ts';
import { startComputeHost, waitComputeService, type ComputeHostProcess } from '../helpers/compute-host.ts';

process.env['PUMICE_VALIDATE_RESPONSES'] = '1';
const execFileAsync = promisify(execFile);

const config = `[DEFAULT]
report_interval = 1
service_down_time = 4

[libvirt]
virt_type = qemu
`;

/** Evacuations and the crash points each is interrupted at, in order: every step of agent.ts evacuateServer. */
const plan: { from: 'compute02' | 'compute03'; to: 'compute02' | 'compute03'; points: string[] }[] = [
  { from: 'compute02', to: 'compute03', points: ['evacuate.fence.reserved', 'evacuate.fence.old-ended'] },
  { from: 'compute03', to: 'compute02', points: ['evacuate.fenced', 'evacuate.root-disk'] },
  { from: 'compute02', to: 'compute03', points: ['evacuate.volumes-connected', 'evacuate.spawned'] },
  { from: 'compute03', to: 'compute02', points: ['evacuate.volumes-completed'] },
];

let pumice: PumiceProcess;
let admin: ComputeClient;
let env: Record<string, string>;
let imageId = '';
const hosts = new Map<string, ComputeHostProcess>();
const log: string[] = [];

function instancesDir(host: string): string {
  return path.join(pumice.dataDir, `instances-${host}`);
}

/** Starts `host`'s compute process, armed with a crash point or not. Returns whether it died with 137 before it was ready. */
async function startHost(host: string, crashPoint: string | null): Promise<ComputeHostProcess | 'crashed'> {
  try {
    const proc = await startComputeHost({ dataDir: pumice.dataDir, host, configText: config, ...(crashPoint ? { env: { PUMICE_CRASH_POINT: crashPoint } } : {}) });
    hosts.set(host, proc);
    return proc;
  } catch (error) {
    // The resumed task may reach its crash point before the process says it is ready.
    if (crashPoint && /exited with 137/.test((error as Error).message)) return 'crashed';
    throw error;
  }
}

const waitService = (host: string, state: 'up' | 'down', timeoutMs = 30_000) => waitComputeService(admin, host, state, timeoutMs);

/** QEMU processes of the instance on every host of this cloud (its -uuid argument). */
async function qemusOf(uuid: string): Promise<number[]> {
  const { stdout } = await execFileAsync('ps', ['-eo', 'pid=,args='], { maxBuffer: 16 << 20 });
  return stdout.split('\n').filter((l) => l.includes('qemu-system') && l.includes(pumice.dataDir) && l.includes(`-uuid ${uuid}`)).map((l) => Number(l.trim().split(/\s+/)[0]));
}

/** Kills a host as a power cut would: its agent and its guests, -9. */
async function killHost(host: string): Promise<void> {
  const pids = await qemuPids(instancesDir(host));
  await hosts.get(host)?.kill9();
  for (const pid of pids) process.kill(pid, 'SIGKILL');
}

before(async () => {
  pumice = await startPumice({ config });
  env = { ...pumice.adminEnv, OS_COMPUTE_API_VERSION: '2.79' };
  admin = await ComputeClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  imageId = await uploadGuestImage(admin.api);
  assert.notEqual(await startHost('compute02', null), 'crashed');
  await waitService('compute02', 'up');
}, { timeout: 600_000 });

after(async () => {
  if (!pumice) return;
  for (const host of ['compute02', 'compute03']) {
    await openstack(env, ['compute', 'service', 'set', '--up', host, 'nova-compute']).catch(() => undefined);
    if (hosts.get(host)?.proc.exitCode !== null || hosts.get(host)?.proc.signalCode !== null) await startHost(host, null).catch(() => undefined);
  }
  for (const s of (await admin.request('GET', '/servers?all_tenants=1')).body?.servers ?? []) await admin.request('DELETE', `/servers/${s.id}`);
  for (const s of (await admin.request('GET', '/servers?all_tenants=1')).body?.servers ?? []) await admin.waitServer(s.id, ['DELETED'], 60_000).catch(() => undefined);
  for (const host of hosts.values()) await host.stop().catch(() => undefined);
  await pumice.stop();
  const left = [...(await qemuPids(path.join(pumice.dataDir, 'instances'))), ...(await qemuPids(instancesDir('compute02'))), ...(await qemuPids(instancesDir('compute03')))];
  for (const pid of left) process.kill(pid, 'SIGKILL');
  if (log.length) console.log(`evacuation crash points:\n  ${log.join('\n  ')}`);
  pumice.cleanup();
  assert.deepEqual(left, [], 'no QEMU process outlives its servers');
}, { timeout: 300_000 });

describe('evacuation: kill -9 of the destination at every step', () => {
  test('each crash point is reached, the restarted destination finishes, never two QEMUs, no leaked reservation, the old host cleans up', { timeout: 900_000 }, async () => {
    const dataId = await admin.createVolume({ size: 1, name: 'evac-crash-data' });
    await admin.waitVolume(dataId, ['available']);
    const serial = dataId.slice(0, 20);
    const r = await admin.request('POST', '/servers', {
      server: { name: 'evac-crash', flavorRef: '42', networks: 'none', availability_zone: 'nova:compute02', imageRef: imageId, block_device_mapping_v2: [{ source_type: 'volume', destination_type: 'volume', uuid: dataId, boot_index: -1 }] },
    });
    assert.equal(r.status, 202, r.text);
    const vm = r.body.server.id as string;
    // A second server of the same image, built at the same time on compute02 whose image cache is empty: both
    // builds need the image's download (a whole host's evacuation does the same on its destination).
    const twin = await admin.request('POST', '/servers', { server: { name: 'evac-crash-twin', flavorRef: '42', networks: 'none', availability_zone: 'nova:compute02', imageRef: imageId } });
    assert.equal(twin.status, 202, twin.text);
    assert.equal((await admin.waitServer(vm, ['ACTIVE'], 120_000))!['OS-EXT-SRV-ATTR:host'], 'compute02');
    const twinRow = (await admin.waitServer(twin.body.server.id, ['ACTIVE', 'ERROR'], 120_000))!;
    assert.equal(twinRow['status'], 'ACTIVE', `two builds of one image at once share its download: ${JSON.stringify(twinRow['fault'])}`);
    assert.equal((await admin.request('DELETE', `/servers/${twin.body.server.id}`)).status, 204);
    await admin.waitServer(twin.body.server.id, ['DELETED'], 60_000);
    await admin.waitConsole(vm, new RegExp(`PUMICE-DISK serial=${serial} counter=1`), 1, 90_000);
    let counter = 1;

    for (const step of plan) {
      await killHost(step.from);
      await openstack(env, ['compute', 'service', 'set', '--down', step.from, 'nova-compute']);
      await waitService(step.from, 'down');
      assert.ok(existsSync(path.join(instancesDir(step.from), vm, 'disk')), `the dead ${step.from} keeps the local root disk until it returns`);
      // The destination is the host the previous evacuation left (dead, forced down), or compute03 never started:
      // it returns armed, and first cleans up what the previous evacuation took away from it.
      if (step !== plan[0]) await openstack(env, ['compute', 'service', 'set', '--up', step.to, 'nova-compute']);
      let evacuated = false;
      for (const point of step.points) {
        const started = await startHost(step.to, `${point}:1`);
        if (started !== 'crashed') {
          await waitService(step.to, 'up');
          if (!evacuated && step !== plan[0]) {
            // The line is on stderr, 'ready' and the heartbeat the test saw come by other ways: give the pipe a moment.
            const cleaned = new RegExp(`the old guest of server ${vm}, evacuated to ${step.from}, is destroyed on ${step.to} and its local files removed`);
            for (let waitedMs = 0; !cleaned.test(started.output()) && waitedMs < 10_000; waitedMs += 100) await new Promise((r) => setTimeout(r, 100));
            assert.match(started.output(), cleaned);
            assert.ok(!existsSync(path.join(instancesDir(step.to), vm)), `${step.to} removed the instance directory the previous evacuation left`);
          }
          if (!evacuated) {
            const e = await admin.request('POST', `/servers/${vm}/action`, { evacuate: { host: step.to } });
            assert.equal(e.status, 200, e.text);
            evacuated = true;
          }
          const code = await Promise.race([started.exited, new Promise((res) => setTimeout(() => res('still running'), 120_000))]);
          assert.equal(code, 137, `${step.to} did not reach crash point ${point}:\n${started.output().slice(-3000)}`);
          assert.match(started.output(), new RegExp(`crash-point ${point.replace(/\./g, '\\.')}:1: killing the process \\(SIGKILL`));
        }
        const copies = await qemusOf(vm);
        assert.ok(copies.length <= 1, `after a crash at ${point}: ${copies.length} QEMUs of ${vm} (${copies.join(', ')})`);
        log.push(`${step.from} → ${step.to}: crashed at ${point}; QEMUs of the server now ${copies.length}`);
      }
      const finisher = await startHost(step.to, null);
      assert.notEqual(finisher, 'crashed');
      const row = (await admin.waitServer(vm, ['ACTIVE', 'ERROR'], 180_000))!;
      assert.equal(row['status'], 'ACTIVE', JSON.stringify(row['fault'] ?? row));
      assert.equal(row['OS-EXT-SRV-ATTR:host'], step.to);
      counter++;
      await admin.waitConsole(vm, new RegExp(`PUMICE-DISK serial=${serial} counter=${counter}`), 1, 120_000);
      assert.deepEqual((await qemusOf(vm)).length, 1, 'one QEMU of the server');
      const attachments = (await admin.volume(dataId))['attachments'] as Row[];
      assert.equal(attachments.length, 1, `one attachment (no reservation leaked by the crashes): ${JSON.stringify(attachments)}`);
      assert.equal(attachments[0]!['host_name'], step.to);
      // The volume's view lists attached ones only: a leaked reservation shows in the attachments API.
      const listed = await admin.api.request('GET', `/volume/v3/${admin.projectId}/attachments?volume_id=${dataId}`, undefined, { 'OpenStack-API-Version': 'volume 3.27' });
      assert.equal(listed.status, 200, listed.text);
      const live = (listed.body.attachments as Row[]).filter((a) => a['status'] !== 'detached');
      assert.deepEqual(live.map((a) => a['status']), ['attached'], `one live attachment, no reservation left by the crashes: ${JSON.stringify(listed.body.attachments)}`);
      const migrations = await openstackJson<Row[]>(env, ['server', 'migration', 'list', '--server', vm]);
      assert.equal(migrations[0]!['Status'], 'done');
      assert.equal(migrations[0]!['Dest Compute'], step.to);

    }
    // The last evacuation's old host returns: nothing of the server runs there and its local files (the qcow2 root) are gone.
    const last = plan[plan.length - 1]!;
    await openstack(env, ['compute', 'service', 'set', '--up', last.from, 'nova-compute']);
    assert.notEqual(await startHost(last.from, null), 'crashed');
    await waitService(last.from, 'up');
    assert.ok(!existsSync(path.join(instancesDir(last.from), vm)), `${last.from} removed the evacuated server's instance directory`);
    assert.deepEqual(await qemuPids(instancesDir(last.from)), []);
    const migrations = await openstackJson<Row[]>(env, ['server', 'migration', 'list', '--server', vm]);
    assert.deepEqual(migrations.map((m) => m['Status']), plan.map(() => 'done'));
  });
});
