/**
 * Image hardware properties and host_status (issue 15, test 1 and the
 * host_status half of test 4), with one guest boot under TCG:
 *
 * 1. An image with a hw_* value Pumice does not build is refused at boot
 *    (400 naming the accepted values and the fix; nothing created), as is
 *    os_require_quiesce without the guest agent.
 * 2. A server from an image with hw_disk_bus=scsi hw_scsi_model=virtio-scsi
 *    hw_qemu_guest_agent=yes hw_rng_model=virtio hw_video_model=vga
 *    hw_machine_type=pc-i440fx-7.2 on compute02: the domain XML and QEMU's
 *    command line have the virtio-scsi controller, the agent channel, the RNG,
 *    the video and the machine type; the guest sees its boot disk as sda on a
 *    SCSI host with discard, a hot-plugged volume as a SCSI disk it writes;
 *    the guest agent's answer is recorded as the create action's event; a
 *    freeze/thaw goes through the agent (the guest prints it).
 * 3. A guest agent channel with nothing listening: "no agent answered", and a
 *    freeze is refused with the reason.
 * 4. host_status (2.16): UP, MAINTENANCE when disabled, hidden from a member,
 *    UNKNOWN then DOWN after compute02's agent is killed -9 (by pid), shown by
 *    `openstack server list --long` and `server show`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';
import { ComputeClient, qemuPids, type Row } from '../helpers/compute.ts';
import { startComputeHost, type ComputeHostProcess } from '../helpers/compute-host.ts';
import { diskCounters, testGuestImage } from '../helpers/guest.ts';
import { QemuHypervisor } from '../../src/compute/hypervisor/qemu/index.ts';
import { HypervisorError } from '../../src/compute/hypervisor/types.ts';

process.env['PUMICE_VALIDATE_RESPONSES'] = '1';
const execFileAsync = promisify(execFile);

// report_interval 1 s: overdue (UNKNOWN) after 2 s without a heartbeat, DOWN after 6 s.
const config = `[DEFAULT]
report_interval = 1
service_down_time = 6

[libvirt]
virt_type = qemu
`;

const hardwareProperties = {
  hw_disk_bus: 'scsi',
  hw_scsi_model: 'virtio-scsi',
  hw_qemu_guest_agent: 'yes',
  os_require_quiesce: 'yes',
  hw_rng_model: 'virtio',
  hw_video_model: 'vga',
  hw_machine_type: 'pc-i440fx-7.2',
};

let pumice: PumiceProcess;
let compute02: ComputeHostProcess;
let admin: ComputeClient;
let env: Record<string, string>;
let imageId = '';
let serverId = '';
const notes: string[] = [];
const osJson = <T = Row>(args: string[]) => openstackJson<T>(env, args);

async function createImage(name: string, properties: Record<string, string>): Promise<string> {
  const file = await testGuestImage();
  const props = Object.entries(properties).flatMap(([k, v]) => ['--property', `${k}=${v}`]);
  const image = await osJson(['image', 'create', '--disk-format', 'raw', '--container-format', 'bare', '--public', '--file', file, ...props, name]);
  return image['id'] as string;
}

async function serverCount(): Promise<number> {
  return ((await admin.request('GET', '/servers?all_tenants=1')).body.servers as Row[]).length;
}

/** Bodies checked against tempest's compute schemas at the end (test/helpers/tempest-schemas.py). */
const schemaCases: { api: 'compute'; schema: string; version: string; status: number; body: unknown }[] = [];

async function hostStatus(id: string, client = admin): Promise<string | undefined> {
  const r = await client.request('GET', `/servers/${id}`, undefined, { 'OpenStack-API-Version': 'compute 2.16' });
  assert.equal(r.status, 200, r.text);
  const status = r.body.server['host_status'];
  if (!schemaCases.some((c) => (c.body as Row)['server']?.['host_status'] === status)) schemaCases.push({ api: 'compute', schema: 'servers.get_server', version: '2.16', status: 200, body: r.body });
  return status;
}

async function collectServerBodies(version: string): Promise<void> {
  const headers = { 'OpenStack-API-Version': `compute ${version}` };
  const show = await admin.request('GET', `/servers/${serverId}`, undefined, headers);
  schemaCases.push({ api: 'compute', schema: 'servers.get_server', version, status: 200, body: show.body });
  const list = await admin.request('GET', '/servers/detail?all_tenants=1', undefined, headers);
  schemaCases.push({ api: 'compute', schema: 'servers.list_servers_detail', version, status: 200, body: list.body });
}

async function waitHostStatus(id: string, wanted: string, timeoutMs: number): Promise<number> {
  const started = Date.now();
  for (;;) {
    const status = await hostStatus(id);
    if (status === wanted) return Date.now() - started;
    if (Date.now() - started > timeoutMs) assert.fail(`host_status of ${id} never read ${wanted} (last ${status})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

before(async () => {
  pumice = await startPumice({ config });
  env = { ...pumice.adminEnv, OS_COMPUTE_API_VERSION: '2.79' };
  admin = await ComputeClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  imageId = await createImage('hw-guest', hardwareProperties);
  compute02 = await startComputeHost({ dataDir: pumice.dataDir, host: 'compute02', configText: config });
}, { timeout: 600_000 });

after(async () => {
  if (!pumice) return;
  await compute02?.kill9().catch(() => undefined);
  const left = compute02 ? await qemuPids(compute02.instancesDir) : [];
  for (const pid of left) process.kill(pid, 'SIGKILL');
  await pumice.stop();
  if (notes.length) console.log(`image hardware / host_status (TCG):\n  ${notes.join('\n  ')}`);
  pumice.cleanup();
}, { timeout: 120_000 });

describe('image hardware properties and host_status', () => {
  test('hw_* values Pumice does not build are refused at boot with the accepted values; nothing is created', async () => {
    const before = await serverCount();
    const cases: [Record<string, string>, RegExp][] = [
      [{ hw_disk_bus: 'ide' }, /hw_disk_bus="ide" is not supported.*accepted values are virtio, scsi.*openstack image set --property hw_disk_bus=virtio/],
      [{ hw_disk_bus: 'scsi', hw_scsi_model: 'lsilogic' }, /hw_scsi_model="lsilogic".*accepted values are virtio-scsi/],
      [{ hw_video_model: 'qxl' }, /hw_video_model="qxl".*none, vga, cirrus, virtio/],
      [{ hw_machine_type: 'q35' }, /hw_machine_type="q35".*pc-i440fx-X\.Y.*q35 is not offered/],
      [{ hw_qemu_guest_agent: 'maybe' }, /hw_qemu_guest_agent="maybe".*yes, no, true, false/],
      [{ os_require_quiesce: 'yes' }, /os_require_quiesce=yes needs the QEMU guest agent.*hw_qemu_guest_agent=yes/],
    ];
    // One image (the real guest, active), its properties replaced per case with a JSON patch as glanceclient sends.
    const badImage = await createImage('hw-bad', {});
    let previous: string[] = [];
    for (const [properties, expected] of cases) {
      const patch = [...previous.map((k) => ({ op: 'remove', path: `/${k}` })), ...Object.entries(properties).map(([k, v]) => ({ op: 'add', path: `/${k}`, value: v }))];
      const set = await admin.api.request('PATCH', `/image/v2/images/${badImage}`, patch, { 'Content-Type': 'application/openstack-images-v2.1-json-patch' });
      assert.equal(set.status, 200, set.text);
      previous = Object.keys(properties);
      const r = await admin.request('POST', '/servers', { server: { name: 'hw-bad', flavorRef: '42', networks: 'none', imageRef: badImage } });
      assert.equal(r.status, 400, `${JSON.stringify(properties)}: ${r.text}`);
      assert.match(r.body.badRequest.message, expected);
    }
    await admin.api.request('DELETE', `/image/v2/images/${badImage}`);
    assert.equal(await serverCount(), before, 'no server was created');
  });

  test('a virtio-scsi, guest-agent, RNG, VGA, pc-i440fx-7.2 guest: its description, its disks as the guest sees them, the agent', async (t) => {
    const started = Date.now();
    const r = await admin.request('POST', '/servers', { server: { name: 'hw-scsi', flavorRef: '42', networks: 'none', imageRef: imageId, availability_zone: 'nova:compute02' } });
    assert.equal(r.status, 202, r.text);
    serverId = r.body.server.id;
    const row = (await admin.waitServer(serverId, ['ACTIVE', 'ERROR'], 120_000))!;
    assert.equal(row['status'], 'ACTIVE', JSON.stringify(row['fault']));
    assert.equal(row['OS-EXT-SRV-ATTR:host'], 'compute02');
    assert.equal(row['OS-EXT-SRV-ATTR:root_device_name'], '/dev/sda');

    const dir = path.join(compute02.instancesDir, serverId);
    const xml = await readFile(path.join(dir, 'libvirt.xml'), 'utf8');
    assert.match(xml, /<type arch='x86_64' machine='pc-i440fx-7.2'>hvm<\/type>/);
    assert.match(xml, /<controller type='scsi' index='0' model='virtio-scsi'>/);
    assert.match(xml, /<target dev='sda' bus='scsi'\/>[\s\S]*<address type='drive' controller='0' bus='0' target='0' unit='0'\/>/);
    assert.match(xml, /<channel type='unix'>\s*<source mode='bind' path='[^']*qga\.sock'\/>\s*<target type='virtio' name='org\.qemu\.guest_agent\.0'\/>/);
    assert.match(xml, /<rng model='virtio'>/);
    assert.match(xml, /<video><model type='vga' primary='yes'\/>/);
    const [pid] = await qemuPids(compute02.instancesDir);
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    const arg = (flag: string) => cmdline.filter((_, i) => cmdline[i - 1] === flag);
    assert.deepEqual(arg('-machine'), ['pc-i440fx-7.2']);
    const devices = arg('-device').map((d) => (d.startsWith('{') ? (JSON.parse(d) as Row) : { raw: d }));
    assert.ok(devices.some((d) => d['driver'] === 'virtio-scsi-pci' && d['id'] === 'scsi0' && d['addr'] === '0x3.0' && d['multifunction'] === true), JSON.stringify(devices));
    assert.ok(devices.some((d) => d['driver'] === 'scsi-hd' && d['bus'] === 'scsi0.0' && d['bootindex'] === 1), 'the boot disk is a scsi-hd');
    assert.ok(!devices.some((d) => d['driver'] === 'virtio-blk-pci'), 'no virtio-blk disk');
    assert.ok(devices.some((d) => d['driver'] === 'virtserialport' && d['name'] === 'org.qemu.guest_agent.0'));
    assert.ok(devices.some((d) => d['driver'] === 'virtio-rng-pci') && devices.some((d) => d['driver'] === 'VGA'));
    const blockdevs = arg('-blockdev').map((b) => JSON.parse(b) as Row);
    assert.ok(blockdevs.every((b) => b['discard'] === 'unmap' || b['discard'] === 'ignore'));

    // The guest's own view: its boot disk on a SCSI host (sd driver), discard offered; the agent started.
    const log = await admin.waitConsole(serverId, /PUMICE-GUEST-DISK name=sda /, 1, 90_000);
    t.diagnostic(`create → guest lists sda: ${Date.now() - started} ms`);
    notes.push(`boot of a virtio-scsi guest on compute02, create → guest lists its disks: ${Date.now() - started} ms`);
    assert.match(log, /PUMICE-GUEST-DISK name=sda serial=\S+ bus=scsi driver=sd discard_max_bytes=[1-9]\d*/);
    assert.doesNotMatch(log, /PUMICE-GUEST-DISK name=vd/);
    assert.doesNotMatch(log, /PUMICE-GUEST-ERROR/);
    await admin.waitConsole(serverId, /PUMICE-GUEST-AGENT port=vport\d+p1/, 1, 30_000);

    // The agent's answer, recorded on the create action (an admin reads an event's details as its traceback before 2.84).
    const deadline = Date.now() + 60_000;
    let ping: Row | undefined;
    while (!ping && Date.now() < deadline) {
      const actions = await admin.request('GET', `/servers/${serverId}/os-instance-actions`);
      const create = (actions.body.instanceActions as Row[]).find((a) => a['action'] === 'create')!;
      const shown = await admin.request('GET', `/servers/${serverId}/os-instance-actions/${create['request_id']}`);
      ping = (shown.body.instanceAction.events as Row[]).find((e) => e['event'] === 'compute_guest_agent_ping');
      if (!ping) await new Promise((res) => setTimeout(res, 500));
    }
    assert.ok(ping, 'the guest agent check is recorded');
    assert.equal(ping['result'], 'Success', JSON.stringify(ping));
    assert.match(ping['traceback'], /answered guest-ping/);

    // A hot-plugged volume follows the image's bus: a SCSI disk the guest writes its counter on.
    const volumeId = await admin.createVolume({ size: 1, name: 'hw-data' });
    await admin.waitVolume(volumeId, ['available']);
    const attach = await admin.request('POST', `/servers/${serverId}/os-volume_attachments`, { volumeAttachment: { volumeId } });
    assert.equal(attach.status, 200, attach.text);
    await admin.waitVolume(volumeId, ['in-use']);
    const withData = await admin.waitConsole(serverId, new RegExp(`PUMICE-DISK serial=${volumeId.slice(0, 20)} counter=1`), 1, 30_000);
    assert.match(withData, new RegExp(`PUMICE-GUEST-DISK name=sdb serial=${volumeId.slice(0, 20)} bus=scsi driver=sd`));
    assert.deepEqual(diskCounters(withData, volumeId.slice(0, 20)), [1]);
    assert.match(await readFile(path.join(dir, 'libvirt.xml'), 'utf8'), /<target dev='sdb' bus='scsi'\/>[\s\S]*unit='1'/);

  });

  test('os-migrateLive: refused with the reason (same host; a local NBD volume is not shared storage), nothing changed', async () => {
    assert.ok(serverId, 'needs the server of the previous test');
    const same = await admin.request('POST', `/servers/${serverId}/action`, { 'os-migrateLive': { host: 'compute02', block_migration: 'auto' } });
    assert.equal(same.status, 400, same.text);
    assert.match(same.body.badRequest.message, /already runs on compute02/);
    // The real client: openstack server migrate --live-migration --host H (os-migrateLive, block_migration auto).
    await assert.rejects(
      openstack({ ...env, OS_COMPUTE_API_VERSION: '2.79' }, ['server', 'migrate', '--live-migration', '--host', 'pumice', serverId]),
      /volume \S+ is on the local backend \(an NBD export of one volume host\), not shared storage, and block migration is not implemented.*Detach the volume first/,
    );
    const row = (await admin.server(serverId))!;
    assert.equal(row['status'], 'ACTIVE');
    assert.equal(row['OS-EXT-SRV-ATTR:host'], 'compute02');
    assert.equal(row['OS-EXT-STS:task_state'], null);
  });

  test('an agent channel nobody answers: "no agent answered", and a freeze is refused with the reason', async () => {
    // A guest still in its firmware: the channel exists, nothing in the guest listens yet.
    const workDir = await mkdtemp('/tmp/phw-');
    const hv = new QemuHypervisor({ instancesDir: path.join(workDir, 'inst'), log: () => undefined });
    const uuid = randomUUID();
    const disk = path.join(workDir, 'boot.raw');
    await execFileAsync('cp', ['--sparse=always', await testGuestImage(), disk]);
    try {
      await hv.spawn({
        uuid, name: 'no-agent', vcpus: 1, memoryMiB: 128, virtType: 'qemu',
        disks: [{ diskId: 'root', serial: 'root', source: { kind: 'file', path: disk, format: 'raw' }, readOnly: false, bootIndex: 1, cache: 'writeback', discard: 'unmap' }],
        hardware: { diskBus: 'virtio', scsiModel: null, guestAgent: true, requireQuiesce: true, rngModel: null, videoModel: 'none', machineType: 'pc' },
      });
      const ping = await hv.guestAgentPing(uuid, { timeoutMs: 1_000 });
      assert.equal(ping.answered, false);
      assert.match(ping.detail, /No agent answered on the guest agent channel .* within 1000 ms.*install and start qemu-guest-agent/);
      await assert.rejects(hv.freezeFilesystems(uuid, { timeoutMs: 1_000 }), (err: unknown) => err instanceof HypervisorError && err.code === 'GuestAgentUnavailable' && /No agent answered/.test(err.message));
    } finally {
      await hv.destroy(uuid, { removeFiles: true });
      await hv.close();
      await rm(workDir, { recursive: true, force: true });
    }
  });

  test('host_status (2.16): UP, MAINTENANCE, hidden from a member, UNKNOWN then DOWN after the agent dies; openstack server list --long', async () => {
    assert.ok(serverId, 'needs the server of the previous test');
    assert.equal(await hostStatus(serverId), 'UP');
    const before216 = await admin.request('GET', `/servers/${serverId}`, undefined, { 'OpenStack-API-Version': 'compute 2.15' });
    assert.ok(!('host_status' in before216.body.server), 'no host_status before 2.16');

    // A member of the server's project never sees it (policy os_compute_api:servers:show:host_status is admin).
    await openstack(pumice.adminEnv, ['user', 'create', '--project', 'admin', '--password', 'pw-hw-member', 'hw-member']);
    await openstack(pumice.adminEnv, ['role', 'add', '--project', 'admin', '--user', 'hw-member', 'member']);
    const member = await ComputeClient.login(pumice.url, 'hw-member', 'pw-hw-member', 'admin');
    const memberView = await member.request('GET', `/servers/${serverId}`, undefined, { 'OpenStack-API-Version': 'compute 2.16' });
    assert.equal(memberView.status, 200, memberView.text);
    assert.ok(!('host_status' in memberView.body.server), 'a member does not see host_status');

    const services = (await admin.request('GET', '/os-services?binary=nova-compute')).body.services as Row[];
    const serviceId = services.find((s) => s['host'] === 'compute02')!['id'];
    let r = await admin.request('PUT', `/os-services/${serviceId}`, { status: 'disabled', disabled_reason: 'hw test' }, { 'OpenStack-API-Version': 'compute 2.53' });
    assert.equal(r.status, 200, r.text);
    assert.equal(await hostStatus(serverId), 'MAINTENANCE');
    r = await admin.request('PUT', `/os-services/${serviceId}`, { status: 'enabled' }, { 'OpenStack-API-Version': 'compute 2.53' });
    assert.equal(r.status, 200, r.text);
    assert.equal(await hostStatus(serverId), 'UP');

    const killed = Date.now();
    process.kill(compute02.proc.pid!, 'SIGKILL');
    await compute02.exited;
    const unknownMs = await waitHostStatus(serverId, 'UNKNOWN', 10_000);
    const downMs = await waitHostStatus(serverId, 'DOWN', 15_000);
    await collectServerBodies('2.16');
    await collectServerBodies('2.79');
    notes.push(`agent killed → host_status UNKNOWN ${unknownMs} ms, DOWN ${unknownMs + downMs} ms (report_interval 1 s, service_down_time 6 s)`);
    assert.ok(Date.now() - killed >= 4_000, 'DOWN only after service_down_time');

    // The real client shows it: `server list --long` has a Host Status column, `server show` the field.
    const list = await openstackJson<Row[]>({ ...env, OS_COMPUTE_API_VERSION: '2.16' }, ['server', 'list', '--long', '--all-projects']);
    const listed = list.find((s) => s['ID'] === serverId);
    assert.equal(listed?.['Host Status'], 'DOWN', JSON.stringify(listed));
    const shown = await openstackJson({ ...env, OS_COMPUTE_API_VERSION: '2.16' }, ['server', 'show', serverId]);
    assert.equal(shown['host_status'], 'DOWN');
    assert.equal(shown['status'], 'ACTIVE', 'the server still says ACTIVE: host_status is what tells the truth');

    // Every body read above (UP, MAINTENANCE, UNKNOWN, DOWN; show and list at 2.16 and 2.79) against tempest's schemas.
    assert.deepEqual([...new Set(schemaCases.map((c) => (c.body as Row)['server']?.['host_status']).filter(Boolean))].sort(), ['DOWN', 'MAINTENANCE', 'UNKNOWN', 'UP']);
    const results = await new Promise<{ index: number; ok: boolean; error: string | null }[]>((resolve, reject) => {
      const child = execFile('/usr/bin/python3', [path.join(import.meta.dirname, '..', 'helpers', 'tempest-schemas.py')], { maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
        if (error) reject(new Error(`${error.message}\n${stderr}`));
        else resolve(JSON.parse(stdout));
      });
      child.stdin!.end(JSON.stringify(schemaCases));
    });
    const failures = results.filter((r) => !r.ok).map((r) => `${schemaCases[r.index]!.schema} @${schemaCases[r.index]!.version}: ${r.error}`);
    assert.deepEqual(failures, [], failures.join('\n\n'));
    // Freeze / thaw through the agent channel (the snapshot path of os_require_quiesce), by a driver on
    // compute02's instances directory: QEMU takes one QMP client, free now that the agent is dead.
    const hv = new QemuHypervisor({ instancesDir: compute02.instancesDir, log: () => undefined });
    try {
      assert.equal(await hv.freezeFilesystems(serverId, { timeoutMs: 5_000 }), 1);
      await hv.thawFilesystems(serverId, { timeoutMs: 5_000 });
    } finally {
      await hv.close();
    }
    const consoleText = await admin.console(serverId).catch(async () => readFile(path.join(compute02.instancesDir, serverId, 'console.log'), 'utf8'));
    assert.ok(consoleText.indexOf('PUMICE-GUEST-FSFREEZE') >= 0 && consoleText.indexOf('PUMICE-GUEST-FSTHAW') > consoleText.indexOf('PUMICE-GUEST-FSFREEZE'), consoleText.slice(-800));
  });
});
