/**
 * The QEMU driver against real QEMU under TCG, with the real test guest
 * (scripts/build-test-guest.sh): file and NBD disks (Pumice's own NBD server,
 * in-process), hot-plug / unplug / replug seen by the guest, ACPI power-off,
 * hard reboot, an agent killed with SIGKILL whose guest keeps running and is
 * adopted by a new driver, destroy leaving no process, and the clear errors
 * for disks QEMU cannot open. Two guest boots in all (~5 s each under TCG).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { chmod, mkdtemp, open, readFile, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { NbdServer, type NbdExport } from '../../src/nbd/server.ts';
import { QemuHypervisor, checkQemu, probeAccelerator, probeBootOnce, processAlive } from '../../src/compute/hypervisor/qemu/index.ts';
import { HypervisorError, type GuestDisk, type GuestSpec } from '../../src/compute/hypervisor/types.ts';
import { diskCounters, guestMarkers, testGuestImage } from '../helpers/guest.ts';

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;
const bootTimeoutMs = 60_000;
const markerTimeoutMs = 20_000;

let workDir = '';
let instancesDir = '';
let guestImage = '';
let nbd: NbdServer;
let nbdPort = 0;
const exports = new Map<string, NbdExport>();
const logs: string[] = [];
const log = (msg: string): void => {
  logs.push(msg);
};
let driver: QemuHypervisor;

function fileDisk(diskId: string, file: string, extra: Partial<GuestDisk> = {}): GuestDisk {
  return { diskId, serial: diskId.slice(0, 20), source: { kind: 'file', path: file, format: 'raw' }, readOnly: false, cache: 'writeback', discard: 'unmap', ...extra };
}

function nbdDisk(diskId: string, exportName: string, extra: Partial<GuestDisk> = {}): GuestDisk {
  return { diskId, serial: diskId.slice(0, 20), source: { kind: 'nbd', host: '127.0.0.1', port: nbdPort, exportName }, readOnly: false, cache: 'writeback', discard: 'unmap', ...extra };
}

function guestSpec(uuid: string, disks: GuestDisk[]): GuestSpec {
  return { uuid, name: `test-${uuid.slice(0, 8)}`, vcpus: 1, memoryMiB: 128, virtType: 'qemu', disks };
}

async function blankDisk(name: string, sizeBytes = 16 * MiB): Promise<string> {
  const file = path.join(workDir, name);
  await writeFile(file, '');
  await truncate(file, sizeBytes);
  return file;
}

async function guestCopy(name: string): Promise<string> {
  const file = path.join(workDir, name);
  await execFileAsync('cp', ['--sparse=always', guestImage, file]);
  return file;
}

/** Polls the console log until `predicate` holds; fails with the log's tail. */
async function waitConsole(hv: QemuHypervisor, uuid: string, predicate: (text: string) => boolean, what: string, timeoutMs = markerTimeoutMs): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await hv.consoleLog(uuid);
    if (predicate(text)) return text;
    if (Date.now() > deadline) assert.fail(`no ${what} on the console of ${uuid} within ${timeoutMs} ms; console tail:\n${text.slice(-1500)}\ndriver log:\n${logs.slice(-10).join('\n')}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function count(text: string, marker: string): number {
  return text.split(marker).length - 1;
}

const alive = processAlive;

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

before(async () => {
  guestImage = await testGuestImage();
  // Short: the QMP socket path must fit a unix socket address (107 bytes).
  workDir = await mkdtemp('/tmp/pq-');
  instancesDir = path.join(workDir, 'inst');
  nbd = new NbdServer({ host: '127.0.0.1', port: 0, resolveExport: (name) => exports.get(name), log });
  nbdPort = (await nbd.start()).port;
  driver = new QemuHypervisor({ instancesDir, log });
});

after(async () => {
  // Leave no guest behind, whatever failed.
  const cleanup = new QemuHypervisor({ instancesDir, log });
  for (const guest of await cleanup.adopt().catch(() => [])) {
    if (guest.pid !== null) {
      try {
        process.kill(guest.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  await cleanup.close();
  await driver?.close();
  await nbd?.stop();
  await rm(workDir, { recursive: true, force: true });
});

describe('QemuHypervisor with file and NBD disks under TCG', () => {
  test('checkQemu finds the binary and the rbd driver; the KVM probe falls back to TCG with the reason, and is not tried without vmx/svm', async (t) => {
    const check = await checkQemu();
    assert.ok(check.binary, JSON.stringify(check));
    assert.match(check.version ?? '', /^\d+\.\d+/);
    assert.equal(check.rbd, true, `qemu-block-extra is installed by install-deps: ${check.problems.join('; ')}`);
    const tcg = await probeBootOnce('tcg', { timeoutMs: 15_000 });
    assert.equal(tcg.ok, true, tcg.detail);
    t.diagnostic(`TCG probe boot sector reached its marker in ${tcg.elapsedMs} ms`);
    // A /dev/kvm that exists but cannot run guests (this machine kind's nested PVM, on most boots): /dev/null
    // stands in for the device, and a QEMU wrapper refuses -accel kvm. Machines of this kind differ: on some
    // the real KVM reaches the probe's marker, so the real one cannot be what fails here.
    const refusingKvm = path.join(workDir, 'qemu-without-kvm');
    await writeFile(refusingKvm, '#!/bin/sh\nfor a in "$@"; do [ "$a" = kvm ] && { echo "test wrapper: -accel kvm refused" >&2; exit 1; }; done\nexec qemu-system-x86_64 "$@"\n');
    await chmod(refusingKvm, 0o755);
    // CPU flags with vmx, so the probe boots under KVM (this machine's have none: see the next check).
    const withVmx = path.join(workDir, 'cpuinfo-vmx');
    await writeFile(withVmx, 'processor\t: 0\nflags\t\t: fpu vme de pse vmx sse2\n');
    const probe = await probeAccelerator({ kvmDevice: '/dev/null', timeoutMs: 5_000, qemuBinary: refusingKvm, cpuinfoPath: withVmx });
    assert.equal(probe.virtType, 'qemu', probe.reason);
    assert.match(probe.reason, /KVM did not reach its marker/);
    assert.match(probe.reason, /TCG reached the marker/);
    // No vmx/svm flag: KVM is not tried (kvm_pvm passes the probe's boot sector on some kernels, then stops
    // real guests with a KVM internal error): TCG at once, saying why.
    const withoutVmx = path.join(workDir, 'cpuinfo-novmx');
    await writeFile(withoutVmx, 'processor\t: 0\nflags\t\t: fpu vme de pse sse2 hypervisor\n');
    const started = Date.now();
    const nested = await probeAccelerator({ kvmDevice: '/dev/null', timeoutMs: 5_000, cpuinfoPath: withoutVmx });
    assert.equal(nested.virtType, 'qemu', nested.reason);
    assert.match(nested.reason, /no vmx or svm flag/);
    assert.ok(Date.now() - started < 1_000, 'decided without a probe boot');
    const missing = await checkQemu({ qemuBinary: '/nonexistent/qemu-system-x86_64' });
    assert.equal(missing.binary, null);
    assert.match(missing.problems.join(' '), /apt-get install qemu-system-x86/);
  });

  test('file boot disk: boot marker, hot-plug / unplug / replug counters, adopt by a new driver, ACPI power-off, destroy', async (t) => {
    const uuid = randomUUID();
    const bootPath = await guestCopy('file-boot.raw');
    const dataPath = await blankDisk('file-data.raw');
    const spec = guestSpec(uuid, [fileDisk('root', bootPath, { bootIndex: 1, serial: 'root-disk' })]);
    const started = Date.now();
    const info = await driver.spawn(spec);
    assert.equal(info.powerState, 'running');
    assert.ok(info.pid && alive(info.pid));
    await waitConsole(driver, uuid, (text) => text.includes(guestMarkers.booted), 'boot marker', bootTimeoutMs);
    t.diagnostic(`TCG: spawn() call to ${guestMarkers.booted} on the console: ${Date.now() - started} ms`);
    assert.deepEqual(await driver.spawn(spec), { ...info }, 'spawn of a running guest is a no-op');

    // Files: 0700 directory, 0600 files, the domain XML and the spec.
    const dir = path.join(instancesDir, uuid);
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    for (const name of await readdir(dir)) {
      const s = await stat(path.join(dir, name));
      if (s.isFile()) assert.equal(s.mode & 0o777, 0o600, `${name} mode`);
    }
    const xml = await readFile(path.join(dir, 'libvirt.xml'), 'utf8');
    assert.match(xml, /<disk type='file' device='disk'>/);
    assert.match(xml, new RegExp(`<source file='${bootPath}'/>`));
    assert.match(xml, /<target dev='vda' bus='virtio'\/>/);
    assert.match(xml, /<serial type='file'>/);
    const cmdline = (await readFile(`/proc/${info.pid}/cmdline`, 'utf8')).split('\0');
    assert.ok(cmdline.includes('-no-shutdown') && cmdline.includes('-nodefaults'), cmdline.join(' '));
    assert.ok(cmdline.some((a) => a.includes('"addr":"0x4"') && a.includes('"bus":"pci.0"')), 'explicit PCI address');

    await waitConsole(driver, uuid, (text) => text.includes(guestMarkers.ready), 'ready marker');
    const data = fileDisk('data-file-1', dataPath);
    const plugged = Date.now();
    await driver.attachDisk(uuid, data);
    await driver.attachDisk(uuid, data); // already attached: success
    await waitConsole(driver, uuid, (text) => diskCounters(text, 'data-file-1').includes(1), 'counter=1');
    t.diagnostic(`attachDisk() to the guest's counter=1: ${Date.now() - plugged} ms`);
    assert.match(await readFile(path.join(dir, 'libvirt.xml'), 'utf8'), new RegExp(`<source file='${dataPath}'/>[\\s\\S]*<target dev='vdb'`));
    await driver.detachDisk(uuid, 'data-file-1', { timeoutMs: 15_000 });
    await waitConsole(driver, uuid, (text) => text.includes('PUMICE-DISK-GONE serial=data-file-1'), 'disk gone');
    await driver.detachDisk(uuid, 'data-file-1', { timeoutMs: 15_000 }); // not attached: success
    await driver.attachDisk(uuid, data);
    await waitConsole(driver, uuid, (text) => diskCounters(text, 'data-file-1').includes(2), 'counter=2 after replug');
    assert.deepEqual((await driver.info(uuid)).diskIds.sort(), ['data-file-1', 'root']);
    // The boot disk's MBR is intact: the guest never writes a disk with partitions.
    const mbr = Buffer.alloc(512);
    const fh = await open(bootPath, 'r');
    await fh.read(mbr, 0, 512, 0);
    await fh.close();
    assert.equal(mbr.readUInt16LE(510), 0xaa55);

    // The agent goes away (close: guests keep running); a new driver adopts the guest from the directory.
    await driver.close();
    assert.ok(alive(info.pid!));
    driver = new QemuHypervisor({ instancesDir, log });
    const adopted = await driver.adopt();
    const mine = adopted.find((g) => g.uuid === uuid);
    assert.ok(mine, JSON.stringify(adopted));
    assert.equal(mine.powerState, 'running');
    assert.equal(mine.pid, info.pid);
    assert.ok(!mine.orphan);
    assert.deepEqual([...mine.diskIds].sort(), ['data-file-1', 'root']);
    await driver.detachDisk(uuid, 'data-file-1', { timeoutMs: 15_000 });
    await waitConsole(driver, uuid, (text) => count(text, 'PUMICE-DISK-GONE serial=data-file-1') === 2, 'second disk gone');
    assert.deepEqual((await driver.info(uuid)).diskIds, ['root']);

    const off = Date.now();
    await driver.powerOff(uuid, { timeoutMs: 30_000 });
    t.diagnostic(`powerOff() (ACPI) to QEMU exit: ${Date.now() - off} ms`);
    assert.ok((await driver.consoleLog(uuid)).includes(guestMarkers.poweroff), 'the guest powered off through ACPI');
    assert.ok(!alive(info.pid!), 'QEMU exited');
    assert.equal((await driver.info(uuid)).powerState, 'shutdown');
    await driver.powerOff(uuid, { timeoutMs: 1_000 }); // already off: success
    assert.match(await driver.consoleLog(uuid, 1), /\n$/);
    await driver.destroy(uuid, { removeFiles: true });
    await assert.rejects(stat(dir), /ENOENT/);
    assert.equal((await driver.info(uuid)).powerState, 'nostate');
  });

  test('NBD boot disk: a guest started by an agent killed with SIGKILL keeps running, is adopted, hard-rebooted, and destroyed', async (t) => {
    const uuid = randomUUID();
    const bootPath = await guestCopy('nbd-boot.raw');
    const dataPath = await blankDisk('nbd-data.raw');
    exports.set('guest-root', { path: bootPath, sizeBytes: (await stat(bootPath)).size, readOnly: false });
    exports.set('guest-data', { path: dataPath, sizeBytes: 16 * MiB, readOnly: false });
    const spec = guestSpec(uuid, [nbdDisk('root', 'guest-root', { bootIndex: 1, serial: 'nbd-root' })]);

    // A separate "agent" process spawns the guest, then dies with SIGKILL.
    const agentScript = path.join(workDir, 'agent.mts');
    await writeFile(
      agentScript,
      `import { QemuHypervisor } from ${JSON.stringify(path.resolve('src/compute/hypervisor/qemu/index.ts'))};
const hv = new QemuHypervisor({ instancesDir: ${JSON.stringify(instancesDir)}, log: () => {} });
const info = await hv.spawn(${JSON.stringify(spec)});
process.stdout.write(JSON.stringify(info) + '\\n');
setInterval(() => {}, 1000);
`,
    );
    const agent = spawn(process.execPath, ['--import', 'tsx', agentScript], { stdio: ['ignore', 'pipe', 'inherit'], cwd: process.cwd() });
    const started = Date.now();
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      agent.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes('\n')) resolve(out.split('\n')[0]!);
      });
      agent.once('exit', (code) => reject(new Error(`agent exited ${code} before spawning: ${out}`)));
    });
    const spawned = JSON.parse(line) as { pid: number; powerState: string };
    assert.equal(spawned.powerState, 'running');
    agent.kill('SIGKILL');
    await new Promise((resolve) => agent.once('exit', resolve));
    await waitConsole(driver, uuid, (text) => text.includes(guestMarkers.booted), 'boot marker over NBD', bootTimeoutMs);
    t.diagnostic(`TCG over NBD: agent start to ${guestMarkers.booted}: ${Date.now() - started} ms (includes the agent's tsx start-up)`);
    assert.ok(alive(spawned.pid), 'QEMU survived the agent');

    const adopted = await driver.adopt();
    assert.equal(adopted.find((g) => g.uuid === uuid)?.powerState, 'running');
    assert.ok(!adopted.some((g) => g.orphan), JSON.stringify(adopted));
    const xml = await readFile(path.join(instancesDir, uuid, 'libvirt.xml'), 'utf8');
    assert.match(xml, /<disk type='network' device='disk'>\s*<driver name='qemu' type='raw' cache='writeback' discard='unmap'\/>\s*<source protocol='nbd' name='guest-root'>\s*<host name='127.0.0.1' port='\d+'\/>/);

    await waitConsole(driver, uuid, (text) => text.includes(guestMarkers.ready), 'ready marker');
    await driver.attachDisk(uuid, nbdDisk('data-nbd-1', 'guest-data'));
    await waitConsole(driver, uuid, (text) => diskCounters(text, 'data-nbd-1').includes(1), 'NBD data disk counter=1');

    // Hard reboot: same QEMU, the guest boots again and finds the still-attached disk.
    await driver.reboot(uuid, spec, { hard: true, timeoutMs: 30_000 });
    await waitConsole(driver, uuid, (text) => count(text, guestMarkers.booted) === 2, 'second boot marker', bootTimeoutMs);
    await waitConsole(driver, uuid, (text) => diskCounters(text, 'data-nbd-1').includes(2), 'counter=2 after reboot');
    assert.equal((await driver.info(uuid)).pid, spawned.pid);

    // A data disk over TLS-PSK (Pumice's NBD server with TLS on): the PSK reaches QEMU in a 0600 file in a 0700 directory.
    const identity = `pumice-${randomUUID()}`;
    const keyHex = randomBytes(32).toString('hex');
    const tlsServer = new NbdServer({
      host: '127.0.0.1',
      port: 0,
      resolveExport: (name) => (name === 'guest-tls' ? { path: dataPath, sizeBytes: 16 * MiB, readOnly: false, pskIdentity: identity } : undefined),
      tls: { pskKey: (id) => (id === identity ? Buffer.from(keyHex, 'hex') : undefined) },
      log,
    });
    const tlsPort = (await tlsServer.start()).port;
    // The same file as data-nbd-1, which the guest counted to 2.
    await driver.detachDisk(uuid, 'data-nbd-1', { timeoutMs: 15_000 });
    try {
      const tlsDisk: GuestDisk = { ...nbdDisk('data-tls-1', 'guest-tls'), source: { kind: 'nbd', host: '127.0.0.1', port: tlsPort, exportName: 'guest-tls', tlsPsk: { identity, keyHex } } };
      await driver.attachDisk(uuid, tlsDisk);
      const tlsDir = (await readdir(path.join(instancesDir, uuid))).find((name) => name.startsWith('tls-'));
      assert.ok(tlsDir);
      assert.equal((await stat(path.join(instancesDir, uuid, tlsDir))).mode & 0o777, 0o700);
      assert.equal((await stat(path.join(instancesDir, uuid, tlsDir, 'keys.psk'))).mode & 0o777, 0o600);
      assert.ok(!(await readFile(path.join(instancesDir, uuid, 'spec.json'), 'utf8')).includes(keyHex), 'spec.json holds no PSK');
      assert.match(await readFile(path.join(instancesDir, uuid, 'libvirt.xml'), 'utf8'), /<source protocol='nbd' name='guest-tls' tls='yes'>/);
      await waitConsole(driver, uuid, (text) => diskCounters(text, 'data-tls-1').includes(3), 'TLS data disk counter=3');
      await driver.detachDisk(uuid, 'data-tls-1', { timeoutMs: 15_000 });
      assert.deepEqual((await readdir(path.join(instancesDir, uuid))).filter((name) => name.startsWith('tls-')), []);
    } finally {
      await tlsServer.stop();
    }

    await driver.destroy(uuid, { removeFiles: false });
    assert.ok(!alive(spawned.pid), 'destroy left no process');
    assert.equal((await driver.info(uuid)).powerState, 'shutdown');
    assert.ok((await driver.consoleLog(uuid)).includes(guestMarkers.booted), 'console log kept');
    const left = (await driver.adopt()).filter((g) => g.uuid === uuid);
    assert.deepEqual(left, []);
    await driver.destroy(uuid, { removeFiles: true });
  });

  test('a QEMU no pid file records (a start interrupted before qemu.pid was written) is killed by the next start and by destroy', async () => {
    const uuid = randomUUID();
    const spec = guestSpec(uuid, [fileDisk('root', await blankDisk('unrecorded.raw'), { bootIndex: 1 })]);
    const first = await driver.spawn(spec);
    assert.ok(first.pid && alive(first.pid));
    // The window between spawning QEMU and recording it: the agent died there, so no pid file.
    await rm(path.join(instancesDir, uuid, 'qemu.pid'));
    const restarted = new QemuHypervisor({ instancesDir, log });
    const second = await restarted.spawn(spec);
    assert.ok(second.pid && alive(second.pid));
    assert.notEqual(second.pid, first.pid);
    assert.ok(!alive(first.pid), 'the unrecorded QEMU was killed before the new one started');
    assert.ok(logs.some((line) => line.includes(`killing QEMU pid ${first.pid}`)), 'the kill is logged');

    await rm(path.join(instancesDir, uuid, 'qemu.pid'));
    await new QemuHypervisor({ instancesDir, log }).destroy(uuid, { removeFiles: true });
    assert.ok(!alive(second.pid), 'destroy kills an unrecorded QEMU too');
    await restarted.close();
  });

  test('disks QEMU cannot open give HypervisorErrors naming the cause, quickly, and leave no process', async (t) => {
    const missing = guestSpec(randomUUID(), [fileDisk('root', path.join(workDir, 'no-such-disk.raw'), { bootIndex: 1 })]);
    const e1 = await driver.spawn(missing).then(() => null, (err: unknown) => err);
    assert.ok(e1 instanceof HypervisorError, String(e1));
    t.diagnostic(`missing file: ${e1.message}`);
    assert.equal(e1.code, 'DiskOpenFailed');
    assert.match(e1.message, /no-such-disk\.raw[\s\S]*QEMU said: .*No such file/);
    assert.equal((await driver.info(missing.uuid)).pid, null);

    const port = await closedPort();
    const unreachable = guestSpec(randomUUID(), [{ ...nbdDisk('root', 'nothing', { bootIndex: 1 }), source: { kind: 'nbd', host: '127.0.0.1', port, exportName: 'nothing' } }]);
    const started = Date.now();
    const e2 = await driver.spawn(unreachable).then(() => null, (err: unknown) => err);
    const elapsedMs = Date.now() - started;
    assert.ok(e2 instanceof HypervisorError, String(e2));
    t.diagnostic(`unreachable NBD after ${elapsedMs} ms: ${e2.message}`);
    assert.equal(e2.code, 'DiskOpenFailed');
    assert.match(e2.message, new RegExp(`NBD export 'nothing' at 127\\.0\\.0\\.1:${port}`));
    assert.ok(elapsedMs < 15_000, `failed after ${elapsedMs} ms`);

    const noKey: GuestSpec = guestSpec(randomUUID(), [
      {
        diskId: 'root',
        serial: 'root',
        bootIndex: 1,
        readOnly: false,
        cache: 'writeback',
        discard: 'unmap',
        source: { kind: 'rbd', pool: 'volumes', image: 'volume-x', user: 'cinder', keyBase64: '', monitorHosts: ['127.0.0.1:6789'], cephConfPath: null, secretUuid: null },
      },
    ]);
    assert.throws(() => driver.spawn(noKey), (err: unknown) => err instanceof HypervisorError && err.code === 'CephKeyMissing' && /client\.cinder/.test(err.message));

    for (const name of await readdir(instancesDir)) {
      const pidFile = path.join(instancesDir, name, 'qemu.pid');
      assert.equal(await stat(pidFile).then(() => true, () => false), false, `${name} left a pid file`);
    }
  });

  test('no rbd block module: CephClientMissing naming qemu-block-extra', { skip: process.getuid?.() !== 0 ? 'needs root for a private mount namespace' : false }, async (t) => {
    // A QEMU whose block-rbd.so is hidden (bind-mounted /dev/null in its own mount namespace), as on a host without qemu-block-extra.
    const wrapper = path.join(workDir, 'qemu-without-rbd');
    await writeFile(wrapper, `#!/bin/sh\nexec unshare -m sh -c 'mount --bind /dev/null /usr/lib/x86_64-linux-gnu/qemu/block-rbd.so && exec qemu-system-x86_64 "$@"' qemu "$@"\n`);
    await chmod(wrapper, 0o755);
    const hv = new QemuHypervisor({ instancesDir, qemuBinary: wrapper, log });
    const key = Buffer.alloc(16, 7).toString('base64');
    const spec = guestSpec(randomUUID(), [
      {
        diskId: 'root',
        serial: 'root',
        bootIndex: 1,
        readOnly: false,
        cache: 'writeback',
        discard: 'unmap',
        source: { kind: 'rbd', pool: 'volumes', image: 'volume-x', user: 'cinder', keyBase64: key, monitorHosts: ['127.0.0.1:1'], cephConfPath: null, secretUuid: null },
      },
    ]);
    const err = await hv.spawn(spec).then(() => null, (e: unknown) => e);
    await hv.close();
    assert.ok(err instanceof HypervisorError, String(err));
    t.diagnostic(`no block-rbd.so: ${err.message}`);
    assert.equal(err.code, 'CephClientMissing');
    assert.match(err.message, /install qemu-block-extra[\s\S]*QEMU said: /);
    await driver.destroy(spec.uuid, { removeFiles: true });
  });
});
