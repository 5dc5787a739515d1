/**
 * Evacuation on the Ceph lab (scenario §7 step 6, done right), with real QEMU
 * guests (TCG) and three compute hosts on one machine: `pumice` (the cloud's
 * own), `compute02` (where the server runs) and `compute03` whose Ceph user
 * is the scenario's client.cinder (`mon 'allow r'`: it may not blocklist).
 *
 * The server boots on compute02 from an RBD volume cloned from the image,
 * with an RBD data volume (exclusive-lock images). Partition: only
 * compute02's agent dies; its QEMU keeps running and keeps the images open.
 * - Evacuating to compute03 is refused by the fence (the cap and the fix are
 *   named) and nothing is rebuilt: the server is still on compute02.
 * - Evacuating to `pumice` (a fencing user with `mon 'profile rbd'`)
 *   blocklists the old QEMU's Ceph client and breaks the locks: the server is
 *   ACTIVE on pumice, its new guest reads the data volume's marker (counter
 *   1 → 2), and the old QEMU, still running, can no longer write.
 * - compute02's agent comes back: the old QEMU is destroyed, then the
 *   blocklist entries are removed.
 * - Fail-back (issue 15 test 4): `pumice host rebalance compute02` (healthy
 *   2 s) live-migrates the server home; a ticker volume's acknowledged counter
 *   goes on by one across the switch and compute02's console shows no boot.
 * Then host death with an ephemeral RBD root (vms pool, reused on the new host),
 * and `[compute] auto_failback` (pumice restarted with it on): the two servers
 * evacuated from compute02 stay away while compute03 is down although
 * compute02 is back, then go home one live migration at a time, no boot.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { readLab, type CephLab } from '../../src/ceph/lab.ts';
import { openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';
import { ComputeClient, emptyTheCloud, qemuPids, uploadGuestImage, type Row } from '../helpers/compute.ts';
import { cephComputeConfig, deviceIdOf, hostRebalance, qemuIo, startComputeHost, waitComputeService, type ComputeHostProcess } from '../helpers/compute-host.ts';
import { assertConsecutive, guestMarkers, tickCounters } from '../helpers/guest.ts';

process.env['PUMICE_VALIDATE_RESPONSES'] = '1';
const execFileAsync = promisify(execFile);
const shared = process.env['PUMICE_CEPH_LAB'];
const secretUuid = '457eb676-33da-42ec-9a8c-9293d545c337';
const fenceUser = `pumice-evac-${process.pid}`;

let lab: CephLab;
let workDir = '';
let keyringPath = '';
let pumice: PumiceProcess;
let compute02: ComputeHostProcess;
let compute03: ComputeHostProcess;
let admin: ComputeClient;
let env: Record<string, string>;
let imageId = '';
let blocklistBefore = '';
let fencedAddresses: string[] = [];
const timings: string[] = [];

async function ceph(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('ceph', ['--conf', lab.confPath, '--id', 'admin', ...args], { timeout: 60_000 });
  return stdout;
}

async function rbd(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('rbd', ['--conf', lab.confPath, '--id', 'admin', ...args], { timeout: 60_000 });
  return stdout;
}

/** The cloud's config; `rbdUser` is the compute host's Ceph user (the one that fences); `compute`: more [compute] lines. */
function config(rbdUser: string, compute = ''): string {
  return cephComputeConfig({ confPath: lab.confPath, secretUuid, rbdUser, keyringPath, libvirt: 'hw_disk_discard = unmap', compute: `evacuation_blocklist_expire_s = 600\n${compute}` });
}

const waitService = (host: string, state: 'up' | 'down', timeoutMs = 30_000) => waitComputeService(admin, host, state, timeoutMs);

async function startCompute02(): Promise<void> {
  compute02 = await startComputeHost({ dataDir: pumice.dataDir, host: 'compute02', configText: config(fenceUser) });
  await waitService('compute02', 'up');
}

async function blocklist(): Promise<string> {
  return ceph(['osd', 'blocklist', 'ls']).catch(() => '');
}

/** The QEMU of one instance (its -uuid argument) under an instances directory. */
async function qemuPidOf(instancesDir: string, uuid: string): Promise<number> {
  const { stdout } = await execFileAsync('ps', ['-eo', 'pid=,args='], { maxBuffer: 16 << 20 });
  const pids = stdout.split('\n').filter((l) => l.includes('qemu-system') && l.includes(instancesDir) && l.includes(`-uuid ${uuid}`)).map((l) => Number(l.trim().split(/\s+/)[0]));
  assert.equal(pids.length, 1, `one QEMU for ${uuid}: ${pids.join(', ')}`);
  return pids[0]!;
}

function processState(pid: number): string {
  return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[0]!;
}

function allThreadsStopped(pid: number): boolean {
  return readdirSync(`/proc/${pid}/task`).every((tid) => readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').replace(/^.*\) /, '').startsWith('T'));
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return processState(pid) !== 'Z';
  } catch {
    return false;
  }
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * QEMU's QMP socket takes one client, and the frozen agent keeps its connection open: the command is
 * sent on that connection, borrowed with pidfd_getfd(2) (the agent cannot read the reply while it is
 * stopped), or on a new one when the agent has none.
 */
const borrowQmpScript = String.raw`
import ctypes, json, os, socket, sys
agent, path, command = int(sys.argv[1]), sys.argv[2], sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
def borrowed():
    pidfd = libc.syscall(434, agent, 0)  # pidfd_open
    if pidfd < 0: return None
    for name in os.listdir(f'/proc/{agent}/fd'):
        try:
            if not os.readlink(f'/proc/{agent}/fd/{name}').startswith('socket:'): continue
        except OSError: continue
        fd = libc.syscall(438, pidfd, int(name), 0)  # pidfd_getfd
        if fd < 0: continue
        s = socket.socket(fileno=fd)
        try:
            if s.family == socket.AF_UNIX and s.getpeername() == path: return s
        except OSError: pass
        s.close()
    return None
s = borrowed()
fresh = s is None
if fresh:
    s = socket.socket(socket.AF_UNIX); s.connect(path)
s.settimeout(60)
buf = b''
def messages():
    global buf
    while True:
        while b'\n' in buf:
            line, buf = buf.split(b'\n', 1)
            if line.strip(): yield json.loads(line)
        data = s.recv(65536)
        if not data: sys.exit('QMP connection closed')
        buf += data
it = messages()
if fresh:
    next(it)
    s.sendall(b'{"execute": "qmp_capabilities", "id": "pumice-test-caps"}\n')
    for m in it:
        if m.get('id') == 'pumice-test-caps': break
s.sendall(json.dumps({'execute': 'human-monitor-command', 'arguments': {'command-line': command}, 'id': 'pumice-test'}).encode() + b'\n')
for m in it:
    if m.get('id') == 'pumice-test':
        if 'error' in m: sys.exit(m['error']['desc'])
        print(m['return'], end='')
        break
`;

/** qemuIo (helpers/compute-host.ts) on a guest whose agent is frozen holding the QMP connection. */
async function qemuIoBeside(agentPid: number, instanceDir: string, diskId: string, command: string): Promise<string> {
  const logPath = path.join(instanceDir, 'qemu.log');
  const before = readFileSync(logPath).length;
  const device = deviceIdOf(instanceDir, diskId);
  const { stdout } = await execFileAsync('/usr/bin/python3', ['-c', borrowQmpScript, String(agentPid), path.join(instanceDir, 'qmp.sock'), `qemu-io -d /machine/peripheral/${device}/virtio-backend "${command}"`], { timeout: 90_000 });
  await new Promise((r) => setTimeout(r, 200));
  return `${stdout}${readFileSync(logPath).subarray(before).toString()}`.trim();
}

/**
 * SIGSTOPs a compute agent. The hosts of this test share one SQLite database: an agent frozen inside
 * a write (its heartbeat, every second) would hold the write lock and stall the whole cloud, which
 * a real partition (PostgreSQL, a lost connection) does not. So the test thaws and freezes again
 * until the database takes a write.
 */
async function freezeAgent(pid: number): Promise<void> {
  const dbPath = path.join(pumice.dataDir, 'pumice.db');
  for (let attempt = 1; ; attempt++) {
    process.kill(pid, 'SIGSTOP');
    const stopDeadline = Date.now() + 10_000;
    while (!allThreadsStopped(pid) && Date.now() < stopDeadline) await new Promise((res) => setTimeout(res, 20));
    const free = await execFileAsync('sqlite3', ['-cmd', '.timeout 1000', dbPath, 'BEGIN IMMEDIATE; ROLLBACK;'], { timeout: 10_000 }).then(() => true, () => false);
    if (free) return;
    process.kill(pid, 'SIGCONT');
    if (attempt >= 20) throw new Error(`agent ${pid} was frozen holding the database's write lock ${attempt} times`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

before(async () => {
  if (!shared) return;
  lab = readLab(shared);
  workDir = await mkdtemp(path.join(tmpdir(), 'pumice-evacuate-rbd-'));
  // A fencing user with the caps `pumice ceph setup` grants (mon 'profile rbd' may blocklist); client.cinder keeps the scenario's mon 'allow r'.
  await ceph(['auth', 'get-or-create', `client.${fenceUser}`, 'mon', 'profile rbd', 'osd', 'profile rbd pool=volumes, profile rbd pool=vms, profile rbd-read-only pool=images']);
  keyringPath = path.join(workDir, 'keyring');
  const fenceKeyring = await ceph(['auth', 'get', `client.${fenceUser}`]);
  writeFileSync(keyringPath, `${readFileSync(lab.keyringPath('cinder'), 'utf8')}\n${fenceKeyring}\n`, { mode: 0o600 });
  pumice = await startPumice({ config: config(fenceUser) });
  env = { ...pumice.adminEnv, OS_COMPUTE_API_VERSION: '2.79' };
  admin = await ComputeClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  imageId = await uploadGuestImage(admin.api);
  await startCompute02();
  compute03 = await startComputeHost({ dataDir: pumice.dataDir, host: 'compute03', configText: config('cinder') });
  await waitService('compute03', 'up');
}, { timeout: 600_000 });

after(async () => {
  if (pumice) {
    await compute02?.stop().catch(() => undefined);
    await compute03?.stop().catch(() => undefined);
    await startCompute02().catch(() => undefined);
    await emptyTheCloud(admin, env, imageId);
    await compute02?.stop().catch(() => undefined);
    await pumice.stop();
    // The addresses this test's fences blocklisted (from the migration records), removed below.
    const { stdout } = await execFileAsync('sqlite3', [path.join(pumice.dataDir, 'pumice.db'), 'SELECT fence FROM migrations WHERE fence IS NOT NULL']).catch(() => ({ stdout: '' }));
    fencedAddresses = stdout.split('\n').filter(Boolean).flatMap((line) => (JSON.parse(line) as { blocklisted: { address: string }[] }).blocklisted.map((b) => b.address));
    const left = [...(await qemuPids(path.join(pumice.dataDir, 'instances'))), ...(await qemuPids(compute02.instancesDir)), ...(await qemuPids(compute03.instancesDir))];
    for (const pid of left) process.kill(pid, 'SIGKILL');
    if (timings.length) console.log(`evacuation timings on Ceph (TCG):\n  ${timings.join('\n  ')}`);
    pumice.cleanup();
    assert.deepEqual(left, [], 'no QEMU outlives its servers');
  }
  if (lab) {
    // Leave the shared lab as found: the fence entries this test made are removed (the admin may).
    for (const address of fencedAddresses) await ceph(['osd', 'blocklist', 'rm', address]).catch(() => undefined);
    await ceph(['auth', 'del', `client.${fenceUser}`]).catch(() => undefined);
  }
  if (workDir) await rm(workDir, { recursive: true, force: true });
}, { timeout: 300_000 });

describe('evacuation on Ceph with fencing', { skip: shared ? false : 'PUMICE_CEPH_LAB is not set (a running Ceph lab)' }, () => {
  let vm = '';
  let bootVolumeId = '';
  let dataVolumeId = '';
  let oldPid = 0;
  // A ticker volume on the first server: its acknowledged counter shows a live migration (no gap, no boot).
  let tickerVolumeId = '';
  let tickerSerial = '';
  // The servers of the later tests, evacuated to pumice from their home compute02 (auto_failback brings them back).
  let stopVm = '';
  let ephVm = '';
  const consoleOf = (instancesDir: string, id: string) => readFileSync(path.join(instancesDir, id, 'console.log'), 'utf8');
  const consoleLength = (instancesDir: string, id: string) => (existsSync(path.join(instancesDir, id, 'console.log')) ? readFileSync(path.join(instancesDir, id, 'console.log')).length : 0);

  test('a server on compute02: boot volume cloned from the image, RBD data volume with its marker', async () => {
    bootVolumeId = await admin.createVolume({ size: 1, imageRef: imageId, name: 'evac-rbd-boot' });
    dataVolumeId = await admin.createVolume({ size: 1, name: 'evac-rbd-data' });
    tickerVolumeId = await admin.createVolume({ size: 1, name: 'evac-rbd-ticker' });
    await admin.waitVolume(bootVolumeId, ['available'], 120_000);
    await admin.waitVolume(dataVolumeId, ['available']);
    await admin.waitVolume(tickerVolumeId, ['available']);
    tickerSerial = tickerVolumeId.slice(0, 20);
    const tickFile = path.join(workDir, 'tick.raw');
    writeFileSync(tickFile, Buffer.concat([Buffer.from('PUMICE-TICK 0\n'), Buffer.alloc(512 - 14)]));
    await execFileAsync('qemu-io', ['-f', 'raw', '-c', `write -s ${tickFile} 0 512`, `rbd:volumes/volume-${tickerVolumeId}:id=admin:conf=${lab.confPath}`], { timeout: 60_000 });
    const r = await admin.request('POST', '/servers', {
      server: {
        name: 'evac-rbd', flavorRef: '42', networks: 'none', availability_zone: 'nova:compute02',
        block_device_mapping_v2: [
          { source_type: 'volume', destination_type: 'volume', uuid: bootVolumeId, boot_index: 0 },
          { source_type: 'volume', destination_type: 'volume', uuid: dataVolumeId, boot_index: -1 },
          { source_type: 'volume', destination_type: 'volume', uuid: tickerVolumeId, boot_index: -1 },
        ],
      },
    });
    assert.equal(r.status, 202, r.text);
    vm = r.body.server.id;
    const started = Date.now();
    assert.equal((await admin.waitServer(vm, ['ACTIVE'], 120_000))!['OS-EXT-SRV-ATTR:host'], 'compute02');
    await admin.waitConsole(vm, new RegExp(`PUMICE-DISK serial=${dataVolumeId.slice(0, 20)} counter=1`), 1, 90_000);
    timings.push(`reference: boot on compute02 → data marker ${Date.now() - started} ms`);
    const status = JSON.parse(await rbd(['status', '--format', 'json', `volumes/volume-${dataVolumeId}`])) as { watchers: unknown[] };
    assert.equal(status.watchers.length, 1, 'the guest on compute02 has the data volume open');
    [oldPid] = await qemuPids(compute02.instancesDir);
    assert.ok(oldPid);
  });

  test('partition: the fence of a user without blocklist caps refuses, naming the cap and the fix; nothing is rebuilt', async () => {
    assert.ok(vm, 'needs the server');
    await compute02.kill9();
    await openstack(env, ['compute', 'service', 'set', '--down', 'compute02', 'nova-compute']);
    await waitService('compute02', 'down');
    blocklistBefore = await blocklist();
    const r = await admin.request('POST', `/servers/${vm}/action`, { evacuate: { host: 'compute03' } });
    assert.equal(r.status, 200, r.text);
    const row = (await admin.waitServer(vm, ['ACTIVE', 'ERROR'], 60_000))!;
    assert.equal(row['OS-EXT-SRV-ATTR:host'], 'compute02', 'nothing moved');
    assert.equal(row['status'], 'ACTIVE', 'the server is as it was (the fence failed before any change)');
    // An ACTIVE server shows no fault (as Nova): the reason is in the instance action, for the admin.
    const events = await openstackJson<Row[]>(env, ['server', 'event', 'list', vm]);
    const failed = events.find((e) => e['Action'] === 'evacuate')!;
    const shown = await openstackJson(env, ['server', 'event', 'show', vm, failed['Request ID']]);
    assert.equal(shown['message'], 'Error');
    const event = (shown['events'] as Row[]).find((e) => e['event'] === 'compute_rebuild_instance')!;
    assert.equal(event['result'], 'Error');
    assert.match(String(event['traceback']), /client\.cinder may not blocklist Ceph clients.*mon 'profile rbd'/s);
    assert.deepEqual(await qemuPids(compute03.instancesDir), [], 'no guest was started on compute03');
    const migrations = await openstackJson<Row[]>(env, ['server', 'migration', 'list', '--server', vm]);
    assert.equal(migrations[0]!['Status'], 'failed');
  });

  test('partition: evacuated to pumice after blocklisting the old client; the new guest reads the data, the old QEMU cannot write', async () => {
    const oldDir = path.join(compute02.instancesDir, vm);
    // Before the fence the old guest can write (its agent is dead, so the test may use QMP).
    assert.match(await qemuIo(oldDir, dataVolumeId, 'write -P 0x5a 1048576 4096'), /wrote 4096\/4096 bytes/);
    const calledAt = Date.now();
    await openstack(env, ['server', 'evacuate', '--host', 'pumice', vm]).catch((error: Error) => {
      if (!/TupleWithMeta/.test(error.message)) throw error; // OSC 6.0.0 fails reading the reply after the request
    });
    const row = (await admin.waitServer(vm, ['ACTIVE'], 120_000))!;
    assert.equal(row['OS-EXT-SRV-ATTR:host'], 'pumice');
    const activeAt = Date.now();
    await admin.waitConsole(vm, new RegExp(`PUMICE-DISK serial=${dataVolumeId.slice(0, 20)} counter=2`), 1, 90_000);
    timings.push(`partition (RBD boot + data volumes): evacuate call → ACTIVE ${activeAt - calledAt} ms, → data marker read by the new guest ${Date.now() - calledAt} ms`);
    const after = await blocklist();
    assert.notEqual(after, blocklistBefore, 'the old client is blocklisted');

    assert.doesNotThrow(() => process.kill(oldPid, 0), 'the partitioned QEMU still runs');
    // With cache=writeback a write may land in librbd's cache: the flush must then fail. Either way nothing reaches the image.
    const write = await qemuIo(oldDir, dataVolumeId, 'write -P 0xa5 1048576 4096').catch((e: Error) => e.message);
    const flush = await qemuIo(oldDir, dataVolumeId, 'flush').catch((e: Error) => e.message);
    assert.match(`${write}\n${flush}`, /write failed|flush failed/i, `the fenced QEMU must not write: write: ${write} flush: ${flush}`);
    const { stdout: check } = await execFileAsync('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x5a 1048576 4096', `rbd:volumes/volume-${dataVolumeId}:id=admin:conf=${lab.confPath}`], { timeout: 60_000 });
    assert.match(check, /read 4096\/4096 bytes/);
    assert.doesNotMatch(check, /Pattern verification failed/, 'the data volume holds what the old guest wrote before the fence, not after');

    for (const volumeId of [bootVolumeId, dataVolumeId]) {
      const volume = await admin.volume(volumeId);
      assert.equal(volume['status'], 'in-use');
      assert.equal(volume['attachments'].length, 1);
      assert.equal(volume['attachments'][0].host_name, 'pumice');
    }
    const status = JSON.parse(await rbd(['status', '--format', 'json', `volumes/volume-${dataVolumeId}`])) as { watchers: unknown[] };
    assert.equal(status.watchers.length, 1, 'only the new guest watches the data volume');
    const events = await openstackJson<Row[]>(env, ['server', 'event', 'list', vm]);
    const evacuate = events.find((e) => e['Action'] === 'evacuate'); // the newest first
    assert.ok(evacuate, JSON.stringify(events));
    const shown = await openstackJson(env, ['server', 'event', 'show', vm, evacuate['Request ID']]);
    const fence = (shown['events'] as Row[]).find((e) => e['event'] === 'compute_fence_source_host')!;
    assert.match(String(fence['traceback'] ?? JSON.stringify(fence)), /Ceph clients blocklisted: \S+ \(volumes\/volume-/);
  });

  test('compute02 comes back: it destroys the old QEMU; the fence entries expire (profile rbd may add them, not remove them)', async () => {
    await openstack(env, ['compute', 'service', 'set', '--up', 'compute02', 'nova-compute']);
    await startCompute02();
    const deadline = Date.now() + 45_000;
    let gone = false;
    while (!gone && Date.now() < deadline) {
      try {
        process.kill(oldPid, 0);
        await new Promise((r) => setTimeout(r, 250));
      } catch {
        gone = true;
      }
    }
    assert.ok(gone, 'the old QEMU is destroyed');
    const before = new Set(blocklistBefore.split('\n'));
    const added = (await blocklist()).split('\n').filter((l) => l && !before.has(l));
    assert.ok(added.length >= 1, 'the fence entries are there');
    for (const line of added) {
      const expires = Date.parse(line.split(' ')[1]!);
      assert.ok(expires - Date.now() <= 600_000 && expires > Date.now(), `entry ${line} expires within evacuation_blocklist_expire_s`);
    }
    assert.equal((await admin.server(vm))!['status'], 'ACTIVE');
  });

  test('fail-back after the evacuation: pumice host rebalance compute02 live-migrates the server home (no boot, its ticks go on by one)', async () => {
    assert.ok(vm, 'needs the server evacuated from compute02');
    const pumiceInstances = path.join(pumice.dataDir, 'instances');
    await admin.waitConsole(vm, new RegExp(`PUMICE-TICK serial=${tickerSerial} n=\\d+`), 3, 60_000);
    // compute02's console of the first life (before the evacuation) may still be there: only what follows counts.
    const homeBefore = consoleLength(compute02.instancesDir, vm);
    const started = Date.now();
    let result = await hostRebalance({ dataDir: pumice.dataDir, configText: config(fenceUser, 'failback_healthy_seconds = 2'), host: 'compute02' });
    // compute02 came back moments ago: it must first have been up failback_healthy_seconds.
    for (let attempt = 0; attempt < 5 && /less than \[compute\] failback_healthy_seconds/.test(result.output); attempt++) {
      await new Promise((res) => setTimeout(res, 1000));
      result = await hostRebalance({ dataDir: pumice.dataDir, configText: config(fenceUser, 'failback_healthy_seconds = 2'), host: 'compute02' });
    }
    assert.equal(result.code, 0, result.output);
    assert.match(result.output, /1 server\(s\) moved home to compute02/);
    timings.push(`fail-back after the evacuation (pumice host rebalance, live migration pumice → compute02): ${Date.now() - started} ms`);
    const row = (await admin.waitServer(vm, ['ACTIVE'], 30_000))!;
    assert.equal(row['OS-EXT-SRV-ATTR:host'], 'compute02', 'home again');
    const migrations = await openstackJson<Row[]>(env, ['server', 'migration', 'list', '--server', vm]);
    const live = migrations.find((m) => (m['Type'] ?? m['Migration Type']) === 'live-migration');
    assert.ok(live, `a live migration record: ${JSON.stringify(migrations)}`);
    assert.deepEqual([live['Status'], live['Source Compute'], live['Dest Compute']], ['completed', 'pumice', 'compute02']);

    // The same guest runs on: no boot at home, and the acknowledged counter goes on by one across the switch.
    const homeText = () => consoleOf(compute02.instancesDir, vm).slice(homeBefore);
    const deadline = Date.now() + 60_000;
    while (tickCounters(homeText(), tickerSerial).length < 5 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 250));
    const home = homeText();
    assert.ok(!home.includes(guestMarkers.booted), `no boot at home:\n${home.slice(0, 2000)}`);
    const away = tickCounters(consoleOf(pumiceInstances, vm), tickerSerial);
    const back = tickCounters(home, tickerSerial);
    assert.ok(back.length >= 5, `the guest ticks at home: ${JSON.stringify(back)}`);
    assertConsecutive([...away, ...back], 'ticks through the fail-back');
    assert.deepEqual(await qemuPids(`${pumiceInstances}/`), [], 'no QEMU left on pumice');
    for (const volumeId of [bootVolumeId, dataVolumeId, tickerVolumeId]) {
      const volume = await admin.volume(volumeId);
      assert.deepEqual(volume['attachments'].map((a: Row) => a['host_name']), ['compute02'], `volume ${volumeId} attached at home only`);
    }
  });

  test('partition by SIGSTOP (agent and QEMU of compute02 frozen): evacuated; on SIGCONT the old guest cannot write, the data volume holds what the new guest wrote, the resumed agent destroys the old QEMU', async () => {
    const boot = await admin.createVolume({ size: 1, imageRef: imageId, name: 'evac-stop-boot' });
    const data = await admin.createVolume({ size: 1, name: 'evac-stop-data' });
    await admin.waitVolume(boot, ['available'], 120_000);
    await admin.waitVolume(data, ['available']);
    const r = await admin.request('POST', '/servers', {
      server: {
        name: 'evac-stop', flavorRef: '42', networks: 'none', availability_zone: 'nova:compute02',
        block_device_mapping_v2: [
          { source_type: 'volume', destination_type: 'volume', uuid: boot, boot_index: 0 },
          { source_type: 'volume', destination_type: 'volume', uuid: data, boot_index: -1 },
        ],
      },
    });
    assert.equal(r.status, 202, r.text);
    const id = r.body.server.id as string;
    stopVm = id;
    assert.equal((await admin.waitServer(id, ['ACTIVE'], 120_000))!['OS-EXT-SRV-ATTR:host'], 'compute02');
    await admin.waitConsole(id, new RegExp(`PUMICE-DISK serial=${data.slice(0, 20)} counter=1`), 1, 90_000);
    const oldQemu = await qemuPidOf(compute02.instancesDir, id);
    const agentPid = compute02.proc.pid!;
    const oldDir = path.join(compute02.instancesDir, id);
    const frozen: number[] = [];
    try {
      // The agent first: frozen while its guest still answers, it is not left waiting on a QMP reply.
      await freezeAgent(agentPid);
      frozen.push(agentPid);
      process.kill(oldQemu, 'SIGSTOP');
      frozen.push(oldQemu);
      // SIGSTOP lands asynchronously: wait until every thread of the QEMU is stopped.
      const stopDeadline = Date.now() + 10_000;
      while (!allThreadsStopped(oldQemu) && Date.now() < stopDeadline) await new Promise((res) => setTimeout(res, 50));
      assert.ok(allThreadsStopped(oldQemu), 'the old QEMU is stopped');
      await openstack(env, ['compute', 'service', 'set', '--down', 'compute02', 'nova-compute']);
      await waitService('compute02', 'down');
      const calledAt = Date.now();
      const e = await admin.request('POST', `/servers/${id}/action`, { evacuate: { host: 'pumice' } });
      assert.equal(e.status, 200, e.text);
      assert.equal((await admin.waitServer(id, ['ACTIVE'], 120_000))!['OS-EXT-SRV-ATTR:host'], 'pumice');
      const activeAt = Date.now();
      const consoleText = await admin.waitConsole(id, new RegExp(`PUMICE-DISK serial=${data.slice(0, 20)} counter=2`), 1, 90_000);
      timings.push(`partition by SIGSTOP: evacuate call → ACTIVE ${activeAt - calledAt} ms, → data marker of the new guest ${Date.now() - calledAt} ms`);
      assert.doesNotMatch(consoleText, /PUMICE-DISK-ERROR/, 'the new guest wrote its marker');

      // The partition heals for the QEMU first (its agent still frozen, so nothing stops it): it runs again, fenced.
      process.kill(oldQemu, 'SIGCONT');
      frozen.splice(frozen.indexOf(oldQemu), 1);
      const write = await qemuIoBeside(agentPid, oldDir, data, 'write -P 0xa5 0 512').catch((err: Error) => err.message);
      const flush = await qemuIoBeside(agentPid, oldDir, data, 'flush').catch((err: Error) => err.message);
      assert.match(`${write}\n${flush}`, /write failed|flush failed/i, `the fenced QEMU must not write: write: ${write} flush: ${flush}`);
      // The data volume's first sector is the new guest's counter record, byte for byte ("PUMICE-MARK 2\n", NUL padded).
      const expected = Buffer.alloc(512);
      expected.write('PUMICE-MARK 2\n');
      const sectorFile = path.join(workDir, `sector-${id}`);
      await execFileAsync('qemu-img', ['dd', '-f', 'raw', '-O', 'raw', 'bs=512', 'count=1', `if=rbd:volumes/volume-${data}:id=admin:conf=${lab.confPath}`, `of=${sectorFile}`], { timeout: 60_000 });
      const sector = readFileSync(sectorFile);
      assert.equal(sha256(sector), sha256(expected), `the data volume holds what the new guest wrote: ${JSON.stringify(sector.toString('latin1').replace(/\0+$/, ''))}`);

      assert.ok(processAlive(oldQemu), 'the fenced QEMU runs on until its agent comes back');
      // The agent resumes: it finds the server evacuated to pumice and destroys the old QEMU.
      process.kill(agentPid, 'SIGCONT');
      frozen.splice(frozen.indexOf(agentPid), 1);
      const destroyed = new RegExp(`the old guest of server ${id}, evacuated to pumice, is destroyed on compute02`);
      const deadline = Date.now() + 60_000;
      while ((processAlive(oldQemu) || !destroyed.test(compute02.output())) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 250));
      assert.ok(!processAlive(oldQemu), `the resumed agent destroys the old QEMU:\n${compute02.output().slice(-2000)}`);
      assert.match(compute02.output(), destroyed);
      const server = (await admin.server(id))!;
      assert.equal(server['status'], 'ACTIVE');
      assert.equal(server['OS-EXT-SRV-ATTR:host'], 'pumice');
      const status = JSON.parse(await rbd(['status', '--format', 'json', `volumes/volume-${data}`])) as { watchers: unknown[] };
      assert.equal(status.watchers.length, 1, 'only the new guest has the data volume open');
    } finally {
      for (const pid of frozen) process.kill(pid, 'SIGCONT');
    }
    await openstack(env, ['compute', 'service', 'set', '--up', 'compute02', 'nova-compute']);
    await waitService('compute02', 'up');
  });

  test('host death with an ephemeral RBD root, the operator vouching it is powered off: no blocklist, the lock is broken, the vms-pool disk is reused', async () => {
    const r = await admin.request('POST', '/servers', { server: { name: 'evac-rbd-eph', flavorRef: '42', networks: 'none', imageRef: imageId, availability_zone: 'nova:compute02' } });
    assert.equal(r.status, 202, r.text);
    const id = r.body.server.id as string;
    ephVm = id;
    await admin.waitServer(id, ['ACTIVE'], 120_000);
    await admin.waitConsole(id, /PUMICE-GUEST-READY/, 1, 90_000);
    const before = JSON.parse(await rbd(['info', '--format', 'json', `vms/${id}_disk`])) as Row;
    const pids = await qemuPids(compute02.instancesDir);
    await compute02.kill9();
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    const downAt = Date.now();
    await openstack(env, ['compute', 'service', 'set', '--down', 'compute02', 'nova-compute']);
    const entriesBefore = await blocklist();
    const e = await admin.request('POST', `/servers/${id}/action`, { evacuate: { host: 'pumice', pumice_host_powered_off: true } });
    assert.equal(e.status, 200, e.text);
    assert.equal((await admin.waitServer(id, ['ACTIVE'], 120_000))!['OS-EXT-SRV-ATTR:host'], 'pumice');
    await admin.waitConsole(id, /PUMICE-GUEST-READY/, 1, 90_000);
    timings.push(`host death (ephemeral RBD root): marked down → guest READY ${Date.now() - downAt} ms`);
    const after = JSON.parse(await rbd(['info', '--format', 'json', `vms/${id}_disk`])) as Row;
    assert.equal(after['id'], before['id'], 'the same RBD image (not rebuilt from the image)');
    assert.equal(await blocklist(), entriesBefore, 'nothing was blocklisted');
    const events = await openstackJson<Row[]>(env, ['server', 'event', 'list', id]);
    const shown = await openstackJson(env, ['server', 'event', 'show', id, events.find((a) => a['Action'] === 'evacuate')!['Request ID']]);
    const fence = (shown['events'] as Row[]).find((ev) => ev['event'] === 'compute_fence_source_host')!;
    assert.match(String(fence['traceback']), /RBD blocklist skipped: the operator vouched that compute02 is powered off/);
    await openstack(env, ['compute', 'service', 'set', '--up', 'compute02', 'nova-compute']);
  });
  test('auto_failback: with [compute] auto_failback on, the evacuated servers go home without the command, one at a time, never while a compute host is down', async () => {
    assert.ok(stopVm && ephVm, 'needs the servers evacuated from compute02');
    const awayIds = [stopVm, ephVm];
    const pumiceInstances = path.join(pumice.dataDir, 'instances');
    for (const id of awayIds) assert.equal((await admin.server(id))!['OS-EXT-SRV-ATTR:host'], 'pumice');
    // The monitor runs in the scheduler's process: pumice restarts with the policy on (its guests run on).
    await pumice.stop();
    pumice = await startPumice({ dataDir: pumice.dataDir, config: config(fenceUser, 'auto_failback = true\nfailback_healthy_seconds = 2') });
    env = { ...pumice.adminEnv, OS_COMPUTE_API_VERSION: '2.79' };
    admin = await ComputeClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const liveMigrationsOf = async (id: string) => ((await admin.request('GET', `/os-migrations?instance_uuid=${id}&migration_type=live-migration`)).body.migrations as Row[]);
    const counts = async () => Promise.all(awayIds.map(async (id) => (await liveMigrationsOf(id)).length));

    // compute02 (home) comes back while compute03 is down: the cloud is degraded, nothing moves.
    await openstack(env, ['compute', 'service', 'set', '--down', 'compute03', 'nova-compute']);
    await waitService('compute03', 'down');
    await startCompute02();
    const homeBefore = new Map(awayIds.map((id) => [id, consoleLength(compute02.instancesDir, id)]));
    // failback_healthy_seconds (2) and several passes of the monitor (every report_interval, 1 s).
    await new Promise((res) => setTimeout(res, 6000));
    assert.deepEqual(await counts(), [0, 0], 'no fail-back while compute03 is down');
    for (const id of awayIds) assert.equal((await admin.server(id))!['OS-EXT-SRV-ATTR:host'], 'pumice');
    assert.doesNotMatch(pumice.output(), /auto_failback: live-migrating/);

    // Every compute host up: both go home, one live migration at a time.
    const healed = Date.now();
    await openstack(env, ['compute', 'service', 'set', '--up', 'compute03', 'nova-compute']);
    const deadline = Date.now() + 240_000;
    for (;;) {
      const rows = await Promise.all(awayIds.map((id) => admin.server(id)));
      if (rows.every((row) => row!['status'] === 'ACTIVE' && row!['OS-EXT-STS:task_state'] === null && row!['OS-EXT-SRV-ATTR:host'] === 'compute02')) break;
      const running = (await admin.request('GET', '/os-migrations?migration_type=live-migration')).body.migrations.filter((m: Row) => ['queued', 'preparing', 'running', 'post-migrating', 'cancelling'].includes(String(m['status'])));
      assert.ok(running.length <= 1, `one live migration at a time: ${JSON.stringify(running)}`);
      for (const row of rows) assert.notEqual(row!['status'], 'ERROR', JSON.stringify(row!['fault']));
      assert.ok(Date.now() < deadline, `not home 240 s after every host was up: ${JSON.stringify(rows.map((row) => [row!['id'], row!['status'], row!['OS-EXT-SRV-ATTR:host']]))}`);
      await new Promise((res) => setTimeout(res, 250));
    }
    timings.push(`auto_failback: every host up → both servers home on compute02 ${Date.now() - healed} ms`);
    assert.match(pumice.output(), new RegExp(`auto_failback: live-migrating server ${stopVm} from pumice home to compute02`));
    assert.match(pumice.output(), new RegExp(`auto_failback: live-migrating server ${ephVm} from pumice home to compute02`));
    for (const id of awayIds) {
      const [record] = await liveMigrationsOf(id);
      assert.deepEqual([record!['status'], record!['source_compute'], record!['dest_compute']], ['completed', 'pumice', 'compute02']);
      const home = consoleOf(compute02.instancesDir, id).slice(homeBefore.get(id));
      assert.ok(!home.includes(guestMarkers.booted), `no boot of ${id} at home:\n${home.slice(0, 2000)}`);
    }
    assert.deepEqual(await qemuPids(`${pumiceInstances}/`), [], 'no QEMU left on pumice');
  });
});
