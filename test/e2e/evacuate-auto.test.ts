/**
 * Automatic evacuation ([compute] auto_evacuate = true) with real QEMU guests
 * (TCG): a server with a data volume runs on compute02; compute02 dies (its
 * agent and QEMU killed -9) and nobody does anything. After service_down_time
 * and the grace period the api role's monitor evacuates it: ACTIVE on
 * `pumice`, the data volume's marker read by the new guest, the reason in the
 * instance action. Prints host death → guest READY (detection included).
 * The guard (most hosts down, hosts at once, forced down) is in
 * test/unit/evacuation-monitor.test.ts.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';
import { ComputeClient, qemuPids, uploadGuestImage, type Row } from '../helpers/compute.ts';
import { startComputeHost, type ComputeHostProcess } from '../helpers/compute-host.ts';

process.env['PUMICE_VALIDATE_RESPONSES'] = '1';

const config = `[DEFAULT]
report_interval = 1
service_down_time = 4

[libvirt]
virt_type = qemu

[compute]
auto_evacuate = true
auto_evacuate_grace_s = 2
`;

let pumice: PumiceProcess;
let compute02: ComputeHostProcess;
let admin: ComputeClient;
let imageId = '';

before(async () => {
  pumice = await startPumice({ config });
  admin = await ComputeClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  imageId = await uploadGuestImage(admin.api);
  compute02 = await startComputeHost({ dataDir: pumice.dataDir, host: 'compute02', configText: config });
}, { timeout: 600_000 });

after(async () => {
  if (!pumice) return;
  await compute02?.stop().catch(() => undefined);
  for (const s of (await admin.request('GET', '/servers?all_tenants=1')).body?.servers ?? []) await admin.request('DELETE', `/servers/${s.id}`);
  for (const s of (await admin.request('GET', '/servers?all_tenants=1')).body?.servers ?? []) await admin.waitServer(s.id, ['DELETED'], 60_000).catch(() => undefined);
  await pumice.stop();
  const left = [...(await qemuPids(path.join(pumice.dataDir, 'instances'))), ...(await qemuPids(compute02.instancesDir))];
  for (const pid of left) process.kill(pid, 'SIGKILL');
  pumice.cleanup();
  assert.deepEqual(left, [], 'no QEMU process outlives its servers');
}, { timeout: 300_000 });

test('compute02 dies and nobody acts: its server is evacuated automatically after fencing, with the reason recorded', { timeout: 400_000 }, async () => {
  const dataId = await admin.createVolume({ size: 1, name: 'auto-data' });
  await admin.waitVolume(dataId, ['available']);
  const r = await admin.request('POST', '/servers', {
    server: {
      name: 'auto-vm', flavorRef: '42', networks: 'none', imageRef: imageId, availability_zone: 'nova:compute02',
      block_device_mapping_v2: [{ source_type: 'volume', destination_type: 'volume', uuid: dataId, boot_index: -1 }],
    },
  });
  assert.equal(r.status, 202, r.text);
  const id = r.body.server.id as string;
  assert.equal((await admin.waitServer(id, ['ACTIVE'], 120_000))!['OS-EXT-SRV-ATTR:host'], 'compute02');
  await admin.waitConsole(id, new RegExp(`PUMICE-DISK serial=${dataId.slice(0, 20)} counter=1`), 1, 90_000);

  const pids = await qemuPids(compute02.instancesDir);
  await compute02.kill9();
  for (const pid of pids) process.kill(pid, 'SIGKILL');
  const deathAt = Date.now();
  const row = (await admin.waitServer(id, ['ACTIVE'], 120_000).then(async function wait(): Promise<Row> {
    const s = (await admin.server(id))!;
    if (s['OS-EXT-SRV-ATTR:host'] === 'pumice' && s['OS-EXT-STS:task_state'] === null && s['status'] === 'ACTIVE') return s;
    if (Date.now() - deathAt > 120_000) throw new Error(`not evacuated: ${JSON.stringify(s)}`);
    await new Promise((res) => setTimeout(res, 250));
    return wait();
  }))!;
  assert.equal(row['OS-EXT-SRV-ATTR:host'], 'pumice');
  const activeAt = Date.now();
  await admin.waitConsole(id, /PUMICE-GUEST-READY/, 1, 90_000);
  const readyAt = Date.now();
  await admin.waitConsole(id, new RegExp(`PUMICE-DISK serial=${dataId.slice(0, 20)} counter=2`), 1, 60_000);
  console.log(`automatic evacuation (TCG, service_down_time 4 s, grace 2 s): host death → ACTIVE ${activeAt - deathAt} ms, → guest READY ${readyAt - deathAt} ms`);

  const env = { ...pumice.adminEnv, OS_COMPUTE_API_VERSION: '2.79' };
  const actions = await openstackJson<Row[]>(env, ['server', 'event', 'list', '--long', id]);
  const evacuate = actions.find((a) => a['Action'] === 'evacuate');
  assert.ok(evacuate, JSON.stringify(actions));
  const shown = await openstackJson(env, ['server', 'event', 'show', id, evacuate['Request ID']]);
  assert.match(String(shown['message']), /automatic evacuation: compute host compute02 has sent no heartbeat/);
  assert.equal(shown['user_id'], 'pumice-auto-evacuate');
  const services = await openstackJson<Row[]>(env, ['compute', 'service', 'list']);
  assert.equal(services.find((s) => s['Host'] === 'compute02')!['State'], 'down');
  // compute02 returns (nothing of the old guest to clean: it was killed).
  compute02 = await startComputeHost({ dataDir: pumice.dataDir, host: 'compute02', configText: config });
});
