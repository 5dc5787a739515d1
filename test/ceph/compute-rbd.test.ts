/**
 * The scenario's Nova-on-Ceph flow on the lab cluster, with Debian's
 * `openstack` CLI and real QEMU guests (TCG): the test guest uploaded into the
 * rbd image store, a bootable volume that is a copy-on-write clone of it, a
 * server booted from that volume through QEMU's rbd driver as client.cinder
 * (the domain XML says so), an RBD data volume hot-plugged and moved to a
 * second server whose root disk is a clone in the `vms` pool, the
 * hypervisor's replication-aware disk figures, and a compute host without
 * the cephx key putting the server in ERROR with the missing piece named.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { CephLab } from '../../src/ceph/lab.ts';
import { computeRbdSection, labForTest, rbdBackendSection, rbdImageStoreSection, type TestLab } from '../helpers/ceph-config.ts';
import { openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';
import { ComputeClient, qemuPids, uploadGuestImage, type Row } from '../helpers/compute.ts';

process.env['PUMICE_VALIDATE_RESPONSES'] = '1';
const execFileAsync = promisify(execFile);
const secretUuid = '457eb676-33da-42ec-9a8c-9293d545c337';

let lab: CephLab;
let testLab: TestLab | undefined;
let pumice: PumiceProcess;
let admin: ComputeClient;
let env: Record<string, string>;
let imageId = '';
let bootVolumeId = '';
let dataVolumeId = '';
let vm1 = '';
let vm2 = '';
const os = (args: string[]) => openstack(env, args);
const osJson = <T = Row>(args: string[]) => openstackJson<T>(env, args);

async function rbd(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('rbd', ['--conf', lab.confPath, '--id', 'admin', ...args], { timeout: 120_000 });
  return stdout;
}

function config(options: { keyring?: string } = {}): string {
  return `[DEFAULT]
enabled_backends = ceph
show_image_direct_url = true
report_interval = 2

${rbdBackendSection(lab, { secretUuid })}
${rbdImageStoreSection(lab)}
${computeRbdSection(lab, { secretUuid, ...options })}`;
}

before(async () => {
  testLab = await labForTest('pumice-compute-rbd-test');
  lab = testLab.lab;
  pumice = await startPumice({ config: config() });
  env = { ...pumice.adminEnv, OS_COMPUTE_API_VERSION: '2.79' };
  admin = await ComputeClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  imageId = await uploadGuestImage(admin.api);
}, { timeout: 600_000 });

after(async () => {
  if (pumice) {
    for (const s of (await admin.request('GET', '/servers?all_tenants=1')).body?.servers ?? []) await admin.request('DELETE', `/servers/${s.id}`);
    for (const s of (await admin.request('GET', '/servers?all_tenants=1')).body?.servers ?? []) await admin.waitServer(s.id, ['DELETED'], 60_000).catch(() => undefined);
    for (const v of await openstackJson<Row[]>(env, ['volume', 'list', '--all-projects']).catch(() => [])) await openstack(env, ['volume', 'delete', '--force', v['ID']]).catch(() => undefined);
    const deadline = Date.now() + 60_000;
    while (await openstack(env, ['image', 'delete', imageId]).then(() => false, () => Date.now() < deadline)) await new Promise((r) => setTimeout(r, 1000));
    await pumice.stop();
    const left = await qemuPids(path.join(pumice.dataDir, 'instances'));
    for (const pid of left) process.kill(pid, 'SIGKILL');
    pumice.cleanup();
    assert.deepEqual(left, [], 'no QEMU outlives its servers');
    assert.equal((await rbd(['ls', 'vms'])).trim(), '', 'no root disk is left in the vms pool');
  }
  await testLab?.release();
}, { timeout: 300_000 });

describe('Nova on Ceph (scenario §4, §6, §7 steps 1-3)', () => {
  test('boot from a bootable RBD volume that is a clone of the image', async () => {
    const volume = await osJson(['volume', 'create', '--image', imageId, '--size', '1', 'boot-rbd']);
    bootVolumeId = volume['id'];
    await admin.waitVolume(bootVolumeId, ['available']);
    const info = JSON.parse(await rbd(['info', '--format', 'json', `volumes/volume-${bootVolumeId}`])) as Row;
    assert.equal(info['parent']?.pool, 'images', 'the boot volume is a COW clone of the image');
    const server = await osJson(['server', 'create', '--volume', 'boot-rbd', '--flavor', 'm1.nano', '--nic', 'none', '--wait', 'rbd-vm1']);
    vm1 = server['id'];
    assert.equal(server['status'], 'ACTIVE');
    await admin.waitConsole(vm1, /PUMICE-GUEST-READY/);
    assert.match(await os(['console', 'log', 'show', 'rbd-vm1']), /PUMICE-GUEST-BOOTED/);
    const xml = readFileSync(path.join(pumice.dataDir, 'instances', vm1, 'libvirt.xml'), 'utf8');
    assert.match(xml, new RegExp(`<disk type=['"]network['"]`));
    assert.match(xml, new RegExp(`protocol=['"]rbd['"] name=['"]volumes/volume-${bootVolumeId}['"]`));
    assert.match(xml, /<auth username=['"]cinder['"]>/);
    assert.match(xml, new RegExp(`<secret type=['"]ceph['"] uuid=['"]${secretUuid}['"]`));
    assert.match(xml, /cache=['"]writeback['"]/);
    assert.match(xml, /discard=['"]unmap['"]/);
    const pid = Number(readFileSync(path.join(pumice.dataDir, 'instances', vm1, 'qemu.pid'), 'utf8').trim());
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    const key = /key = (\S+)/.exec(readFileSync(lab.keyringPath('cinder'), 'utf8'))![1]!;
    assert.equal(cmdline.includes(key), false, 'the cephx key is not on the QEMU command line');
    assert.equal((await admin.volume(bootVolumeId))['status'], 'in-use');
  });

  test('boot from image: the root disk is a clone in the vms pool; an RBD data volume moves between servers with its data', async () => {
    const server = await osJson(['server', 'create', '--image', imageId, '--flavor', 'm1.nano', '--nic', 'none', '--wait', 'rbd-vm2']);
    vm2 = server['id'];
    assert.equal(server['status'], 'ACTIVE');
    assert.match(await rbd(['ls', 'vms']), new RegExp(`${vm2}_disk`));
    const info = JSON.parse(await rbd(['info', '--format', 'json', `vms/${vm2}_disk`])) as Row;
    assert.equal(info['parent']?.pool, 'images');
    assert.equal(info['parent']?.image, imageId);
    await admin.waitConsole(vm2, /PUMICE-GUEST-READY/);

    const data = await osJson(['volume', 'create', '--size', '1', 'data-rbd']);
    dataVolumeId = data['id'];
    await admin.waitVolume(dataVolumeId, ['available']);
    const serial = dataVolumeId.slice(0, 20);
    await os(['server', 'add', 'volume', 'rbd-vm1', 'data-rbd']);
    await admin.waitConsole(vm1, new RegExp(`PUMICE-DISK serial=${serial} counter=1`));
    await os(['server', 'remove', 'volume', 'rbd-vm1', 'data-rbd']);
    await admin.waitVolume(dataVolumeId, ['available']);
    await os(['server', 'add', 'volume', 'rbd-vm2', 'data-rbd']);
    await admin.waitConsole(vm2, new RegExp(`PUMICE-DISK serial=${serial} counter=2`));
    const shown = await admin.volume(dataVolumeId);
    assert.equal(shown['status'], 'in-use');
    assert.equal(shown['attachments'][0].server_id, vm2);
  });

  test('hypervisor figures: the RBD disk total is the usable space with replication', async () => {
    const hv = (await osJson<Row[]>(['hypervisor', 'list']))[0]!;
    const shown = await osJson(['hypervisor', 'show', hv['ID']]);
    const source = (shown['cpu_info'] as Row)['disk'] as Row;
    assert.equal(source['source'], 'rbd');
    assert.equal(source['pool'], 'vms');
    assert.equal(source['replicas'], 2);
    const df = JSON.parse((await execFileAsync('ceph', ['--conf', lab.confPath, 'df', '--format', 'json'])).stdout) as { stats: { total_bytes: number } };
    assert.equal(source['rawTotalBytes'], df.stats.total_bytes);
    assert.equal(source['usableTotalBytes'], Math.floor(df.stats.total_bytes / 2));
    const stats = await openstackJson({ ...env, OS_COMPUTE_API_VERSION: '2.79' }, ['hypervisor', 'stats', 'show']);
    assert.equal(stats['local_gb'], Math.floor(df.stats.total_bytes / 2 / 1024 ** 3), 'hypervisor stats count Ceph usable space, not raw');
    assert.ok(Number(stats['running_vms']) >= 2);
  });

  test('stop/start and delete keep RBD volumes right and remove the vms clone', async () => {
    await os(['server', 'stop', 'rbd-vm2']);
    await admin.waitServer(vm2, ['SHUTOFF']);
    await os(['server', 'start', 'rbd-vm2']);
    await admin.waitServer(vm2, ['ACTIVE']);
    await admin.waitConsole(vm2, new RegExp(`PUMICE-DISK serial=${dataVolumeId.slice(0, 20)} counter=3`));
    await os(['server', 'delete', '--wait', 'rbd-vm2']);
    await admin.waitVolume(dataVolumeId, ['available']);
    assert.doesNotMatch(await rbd(['ls', 'vms']), new RegExp(`${vm2}_disk`), 'the root clone is removed with the server');
  });
});

describe('guard rails on Ceph (scenario §8)', () => {
  test('a compute host without the cephx key: the server goes to ERROR naming the missing keyring and the fix', async () => {
    const broken = await startPumice({ config: config({ keyring: '/nonexistent/ceph.client.cinder.keyring' }) });
    try {
      const client = await ComputeClient.login(broken.url, 'admin', broken.adminPassword, 'admin');
      const vol = await client.createVolume({ size: 1, name: 'nokey' });
      await client.waitVolume(vol, ['available']);
      const r = await client.request('POST', '/servers', {
        server: { name: 'nokey', flavorRef: '42', networks: 'none', block_device_mapping_v2: [{ source_type: 'volume', destination_type: 'volume', uuid: vol, boot_index: 0 }] },
      });
      assert.equal(r.status, 202, r.text);
      const row = (await client.waitServer(r.body.server.id, ['ERROR']))!;
      assert.match(row['fault'].message, /client\.cinder/);
      assert.match(row['fault'].details, /\/nonexistent\/ceph\.client\.cinder\.keyring/);
      assert.match(row['fault'].details, /ceph auth get client\.cinder|rbd_keyring/);
      await client.request('DELETE', `/servers/${r.body.server.id}`);
      await client.waitServer(r.body.server.id, ['DELETED']);
      await client.waitVolume(vol, ['available']);
      await client.api.request('DELETE', `/volume/v3/${client.projectId}/volumes/${vol}`);
      await client.waitVolume(vol, ['deleted']);
    } finally {
      await broken.stop();
      broken.cleanup();
    }
  });

  test('a non-raw image cannot become an RBD root disk: it is converted to raw when uploaded', async () => {
    // The rbd store converts at upload (image_conversion, Glance's plugin), so what boots from RBD is raw.
    const created = await admin.api.request('POST', '/image/v2/images', { name: 'as-qcow2', disk_format: 'qcow2', container_format: 'bare' });
    const id = created.body.id as string;
    const file = path.join(pumice.dataDir, 'guest.qcow2');
    const { testGuestImage } = await import('../helpers/guest.ts');
    await execFileAsync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', await testGuestImage(), file]);
    await execFileAsync('curl', ['-sf', '-T', file, '-H', `X-Auth-Token: ${admin.api.token}`, '-H', 'Content-Type: application/octet-stream', `${pumice.url}/image/v2/images/${id}/file`], { timeout: 120_000 });
    let image: Row = {};
    for (let i = 0; i < 300; i++) {
      image = (await admin.api.request('GET', `/image/v2/images/${id}`)).body;
      if (image['status'] === 'active') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(image['disk_format'], 'raw');
    assert.equal(image['original_disk_format'], 'qcow2');
    const r = await admin.request('POST', '/servers', { server: { name: 'from-qcow2', flavorRef: '42', imageRef: id, networks: 'none' } });
    assert.equal(r.status, 202, r.text);
    await admin.waitServer(r.body.server.id, ['ACTIVE']);
    await admin.waitConsole(r.body.server.id, /PUMICE-GUEST-READY/);
    await admin.request('DELETE', `/servers/${r.body.server.id}`);
    await admin.waitServer(r.body.server.id, ['DELETED']);
    const deadline = Date.now() + 60_000;
    while ((await admin.api.request('DELETE', `/image/v2/images/${id}`)).status !== 204 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 1000));
  });
});
