/**
 * The QEMU driver with RBD disks on the lab cluster, as client.cinder: the
 * test guest imported with `rbd import` into the `volumes` pool boots from
 * RBD, a second RBD image is hot-plugged and written by the guest (checked
 * with the rbd CLI), the key never shows in QEMU's command line or stays in a
 * file, the domain XML names the rbd source, monitors and secret, and a wrong
 * key / unreachable monitors fail fast with a clear HypervisorError (short
 * librados timeouts instead of QEMU freezing for 300 s). One guest boot.
 * Needs PUMICE_CEPH_LAB (skipped otherwise).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { readLab, waitLabReady, type CephLab } from '../../src/ceph/lab.ts';
import { QemuHypervisor } from '../../src/compute/hypervisor/qemu/index.ts';
import { HypervisorError, type GuestDisk, type GuestSpec } from '../../src/compute/hypervisor/types.ts';
import { diskCounters, guestMarkers, testGuestImage } from '../helpers/guest.ts';

const execFileAsync = promisify(execFile);
const shared = process.env['PUMICE_CEPH_LAB'];
const suffix = randomUUID().slice(0, 8);
const bootImage = `qemu-test-${suffix}-boot`;
const dataImage = `qemu-test-${suffix}-data`;
const secretUuid = randomUUID();

let lab: CephLab;
let workDir = '';
let instancesDir = '';
let cinderKey = '';
let driver: QemuHypervisor;
const logs: string[] = [];

async function rbd(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('rbd', ['--conf', lab.confPath, '--id', 'cinder', '--keyring', lab.keyringPath('cinder'), ...args], {
    timeout: 120_000,
    maxBuffer: 64 * 1024 * 1024,
    encoding: 'latin1',
  });
  return stdout;
}

function rbdDisk(diskId: string, image: string, extra: Partial<GuestDisk> & { key?: string; monitorHosts?: string[]; cephConfPath?: string | null } = {}): GuestDisk {
  const { key, monitorHosts, cephConfPath, ...rest } = extra;
  return {
    diskId,
    serial: diskId.slice(0, 20),
    readOnly: false,
    cache: 'writeback',
    discard: 'unmap',
    source: {
      kind: 'rbd',
      pool: 'volumes',
      image,
      user: 'cinder',
      keyBase64: key ?? cinderKey,
      monitorHosts: monitorHosts ?? lab.monHosts.map((h) => (h.includes(':') ? h : `${h}:${lab.monPort}`)),
      cephConfPath: cephConfPath ?? null,
      secretUuid,
    },
    ...rest,
  };
}

function guestSpec(uuid: string, disks: GuestDisk[]): GuestSpec {
  return { uuid, name: `rbd-${uuid.slice(0, 8)}`, vcpus: 1, memoryMiB: 128, virtType: 'qemu', disks };
}

async function waitConsole(uuid: string, predicate: (text: string) => boolean, what: string, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await driver.consoleLog(uuid);
    if (predicate(text)) return text;
    if (Date.now() > deadline) assert.fail(`no ${what} on the console within ${timeoutMs} ms:\n${text.slice(-1500)}\n${logs.slice(-10).join('\n')}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('QemuHypervisor with RBD disks on the lab', { skip: shared ? false : 'PUMICE_CEPH_LAB is not set' }, () => {
  before(async () => {
    lab = readLab(shared!);
    await waitLabReady(lab.dir, 180_000);
    const guestImage = await testGuestImage();
    workDir = await mkdtemp('/tmp/pqr-');
    instancesDir = path.join(workDir, 'inst');
    cinderKey = /key\s*=\s*(\S+)/.exec(await readFile(lab.keyringPath('cinder'), 'utf8'))![1]!;
    await rbd(['import', '--image-format', '2', '--no-progress', guestImage, `volumes/${bootImage}`]);
    await rbd(['create', '--size', '16M', `volumes/${dataImage}`]);
    driver = new QemuHypervisor({ instancesDir, log: (m) => logs.push(m) });
  });

  after(async () => {
    if (!lab) return;
    const cleanup = new QemuHypervisor({ instancesDir, log: () => undefined });
    for (const guest of await cleanup.adopt().catch(() => [])) await cleanup.destroy(guest.uuid, { removeFiles: true }).catch(() => undefined);
    await cleanup.close();
    await driver?.close();
    for (const image of [bootImage, dataImage]) await rbd(['rm', '--no-progress', `volumes/${image}`]).catch(() => undefined);
    await rm(workDir, { recursive: true, force: true });
  });

  test('boots from an RBD image as client.cinder, hot-plugs a second RBD image, no key on the command line or on disk', async (t) => {
    const uuid = randomUUID();
    const spec = guestSpec(uuid, [rbdDisk('root', bootImage, { bootIndex: 1, serial: 'rbd-root' })]);
    const started = Date.now();
    const info = await driver.spawn(spec);
    await waitConsole(uuid, (text) => text.includes(guestMarkers.booted), 'boot marker');
    t.diagnostic(`TCG from RBD: spawn() to ${guestMarkers.booted}: ${Date.now() - started} ms`);

    const cmdline = await readFile(`/proc/${info.pid}/cmdline`, 'utf8');
    assert.ok(!cmdline.includes(cinderKey), 'the cephx key is not on the command line');
    assert.match(cmdline, /"driver":"rbd","pool":"volumes"/);
    assert.match(cmdline, /"key-secret":"sec1"/);
    const dir = path.join(instancesDir, uuid);
    for (const name of await readdir(dir)) {
      assert.ok(!name.startsWith('secret-'), `${name} left after QEMU read it`);
      const file = path.join(dir, name);
      const text = await readFile(file, 'utf8').catch(() => '');
      assert.ok(!text.includes(cinderKey), `${name} holds the key`);
    }
    const conf = await readFile(path.join(dir, 'ceph-n1-src.conf'), 'utf8');
    assert.match(conf, /client_mount_timeout = 5/);
    assert.match(conf, /rados_osd_op_timeout = 30/);
    assert.match(conf, /rados_mon_op_timeout = 10/);

    const xml = await readFile(path.join(dir, 'libvirt.xml'), 'utf8');
    assert.match(xml, /<disk type='network' device='disk'>\s*<driver name='qemu' type='raw' cache='writeback' discard='unmap'\/>/);
    assert.match(xml, new RegExp(`<auth username='cinder'>\\s*<secret type='ceph' uuid='${secretUuid}'/>\\s*</auth>`));
    assert.match(xml, new RegExp(`<source protocol='rbd' name='volumes/${bootImage}'>\\s*<host name='127.0.0.1' port='6789'/>`));
    assert.match(xml, /<target dev='vda' bus='virtio'\/>/);
    assert.equal(xml, driver.domainXml(spec), 'written XML = domainXml(spec) for the cold-plugged spec');

    await waitConsole(uuid, (text) => text.includes(guestMarkers.ready), 'ready marker');
    // The operator's ceph.conf as base (no monitor list): the driver adds its timeouts.
    const plugged = Date.now();
    await driver.attachDisk(uuid, rbdDisk('rbd-data-1', dataImage, { monitorHosts: [], cephConfPath: lab.confPath }));
    await waitConsole(uuid, (text) => diskCounters(text, 'rbd-data-1').includes(1), 'RBD data disk counter=1');
    t.diagnostic(`attachDisk(rbd) to the guest's counter=1: ${Date.now() - plugged} ms`);
    assert.ok(!(await readFile(`/proc/${info.pid}/cmdline`, 'utf8')).includes(cinderKey));
    const hotXml = await readFile(path.join(dir, 'libvirt.xml'), 'utf8');
    assert.match(hotXml, new RegExp(`<source protocol='rbd' name='volumes/${dataImage}'>\\s*<config file='${lab.confPath}'/>`));
    assert.match(hotXml, /<target dev='vdb' bus='virtio'\/>/);

    // Monitors that do not answer: the hot-plug fails within seconds and the guest keeps running.
    const port = await closedPort();
    const failedAt = Date.now();
    const err = await driver.attachDisk(uuid, rbdDisk('rbd-data-2', dataImage, { monitorHosts: [`127.0.0.1:${port}`] })).then(() => null, (e: unknown) => e);
    const elapsedMs = Date.now() - failedAt;
    assert.ok(err instanceof HypervisorError, String(err));
    assert.equal(err.code, 'DiskOpenFailed');
    assert.match(err.message, new RegExp(`Ceph monitors 127\\.0\\.0\\.1:${port} did not answer[\\s\\S]*QEMU said: `));
    assert.ok(elapsedMs < 12_000, `hot-plug failed after ${elapsedMs} ms`);
    t.diagnostic(`hot-plug with unreachable monitors failed after ${elapsedMs} ms`);
    const after = await driver.info(uuid);
    assert.equal(after.powerState, 'running');
    assert.deepEqual([...after.diskIds].sort(), ['rbd-data-1', 'root']);

    await driver.detachDisk(uuid, 'rbd-data-1', { timeoutMs: 15_000 });
    await waitConsole(uuid, (text) => text.includes('PUMICE-DISK-GONE serial=rbd-data-1'), 'disk gone');
    // What the guest wrote is in the RBD image.
    const head = await rbd(['export', '--no-progress', `volumes/${dataImage}`, '-']);
    assert.ok(head.startsWith('PUMICE-MARK 1\n'), JSON.stringify(head.slice(0, 32)));

    await driver.powerOff(uuid, { timeoutMs: 30_000 });
    assert.ok((await driver.consoleLog(uuid)).includes(guestMarkers.poweroff));
    await driver.destroy(uuid, { removeFiles: true });
  });

  test('a wrong key and unreachable monitors at start: CephKeyMissing / DiskOpenFailed within seconds, no process left', async (t) => {
    const { stdout } = await execFileAsync('ceph-authtool', ['--gen-print-key'], { timeout: 10_000 });
    const wrongKey = stdout.trim();
    const wrong = guestSpec(randomUUID(), [rbdDisk('root', bootImage, { bootIndex: 1, key: wrongKey })]);
    let started = Date.now();
    const e1 = await driver.spawn(wrong).then(() => null, (e: unknown) => e);
    t.diagnostic(`wrong key: failed after ${Date.now() - started} ms: ${(e1 as Error).message}`);
    assert.ok(e1 instanceof HypervisorError, String(e1));
    assert.equal(e1.code, 'CephKeyMissing', e1.message);
    assert.match(e1.message, /client\.cinder[\s\S]*QEMU said: /);
    assert.ok(Date.now() - started < 12_000);
    assert.equal((await driver.info(wrong.uuid)).pid, null);

    const port = await closedPort();
    const unreachable = guestSpec(randomUUID(), [rbdDisk('root', bootImage, { bootIndex: 1, monitorHosts: [`127.0.0.1:${port}`] })]);
    started = Date.now();
    const e2 = await driver.spawn(unreachable).then(() => null, (e: unknown) => e);
    t.diagnostic(`unreachable monitors: failed after ${Date.now() - started} ms: ${(e2 as Error).message}`);
    assert.ok(e2 instanceof HypervisorError, String(e2));
    assert.equal(e2.code, 'DiskOpenFailed', e2.message);
    assert.match(e2.message, /did not answer within 5 s/);
    assert.ok(Date.now() - started < 12_000);
    assert.equal((await driver.info(unreachable.uuid)).pid, null);
    for (const uuid of [wrong.uuid, unreachable.uuid]) await driver.destroy(uuid, { removeFiles: true });
  });
});
