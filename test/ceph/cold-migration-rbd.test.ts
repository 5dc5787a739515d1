/**
 * Cold migration on the Ceph lab (issue 15's stretch goal: Nova's migrate,
 * confirmResize, revertResize), a real QEMU guest (TCG) and two compute hosts
 * on one machine as in live-migration-rbd.test.ts: `pumice` and `compute02`.
 * One server for the file, booted from a volume (RBD), with an RBD data
 * volume whose counter record the guest increments at every boot
 * (`PUMICE-DISK serial=S counter=N`): the counter going on from where the
 * other host left it proves the data moved with the attachments.
 * 1. `openstack server migrate --host compute02 --wait`: RESIZE, then
 *    VERIFY_RESIZE on compute02, the guest booted there (counter 2), no QEMU
 *    on pumice; os-migrations has it 'finished' (type 'migration'); each
 *    volume has one attachment. Bad input meanwhile (a second migrate, a
 *    confirm of nothing, ...).
 * 2. `openstack server migrate revert`: ACTIVE on pumice again, counter 3,
 *    nothing left on compute02; the record 'reverted'.
 * 3. openstacksdk migrate_server (the scheduler picks compute02, the only
 *    other host) and `openstack server migrate confirm`: ACTIVE on compute02,
 *    counter 4, pumice's instance directory gone; the record 'confirmed'.
 * 4. A SHUTOFF server migrates without being started (Nova keeps the power
 *    state): openstacksdk migrate_server (to pumice, the only other host) then
 *    revert_server_resize, then again and confirm_server_resize: SHUTOFF on
 *    pumice, no QEMU anywhere, the counter still 4 (no boot).
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
import { cephComputeConfig, startComputeHost, waitComputeService, type ComputeHostProcess } from '../helpers/compute-host.ts';

process.env['PUMICE_VALIDATE_RESPONSES'] = '1';
const execFileAsync = promisify(execFile);
const shared = process.env['PUMICE_CEPH_LAB'];
const secretUuid = '6f1d2c1e-8f43-4b8e-9d0a-2a4f0b1c5e12';

let lab: CephLab;
let workDir = '';
let pumice: PumiceProcess;
let compute02: ComputeHostProcess;
let admin: ComputeClient;
let env: Record<string, string>;
let imageId = '';
const notes: string[] = [];

function config(): string {
  return cephComputeConfig({ confPath: lab.confPath, secretUuid, rbdUser: 'cinder', keyringPath: lab.keyringPath('cinder') });
}

async function serverAction(vm: string, body: Row, version = '2.79'): Promise<{ status: number; text: string; body: Row }> {
  return admin.api.request('POST', `/compute/v2.1/servers/${vm}/action`, body, { 'OpenStack-API-Version': `compute ${version}` }) as Promise<{ status: number; text: string; body: Row }>;
}

async function volumeAttachments(volumeId: string): Promise<Row[]> {
  const r = await admin.api.request('GET', `/volume/v3/${admin.projectId}/attachments?volume_id=${volumeId}`, undefined, { 'OpenStack-API-Version': 'volume 3.60' });
  assert.equal(r.status, 200, r.text);
  return r.body.attachments as Row[];
}

async function coldMigrations(vm: string): Promise<Row[]> {
  const r = await admin.request('GET', `/os-migrations?instance_uuid=${vm}&migration_type=migration`);
  assert.equal(r.status, 200, r.text);
  return r.body.migrations as Row[];
}

/** openstacksdk, as the admin (Debian's python: the pyenv one cannot import it). */
async function sdk(code: string): Promise<string> {
  const script = `import openstack, sys\nconn = openstack.connect()\n${code}\n`;
  const { stdout } = await execFileAsync('/usr/bin/python3', ['-c', script], { env: { ...process.env, ...env, PATH: `/usr/bin:${process.env['PATH']}` }, timeout: 120_000 });
  return stdout.trim();
}

before(async () => {
  if (!shared) return;
  lab = readLab(shared);
  workDir = await mkdtemp(path.join(tmpdir(), 'pumice-cold-migration-'));
  pumice = await startPumice({ config: config() });
  env = { ...pumice.adminEnv };
  admin = await ComputeClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  imageId = await uploadGuestImage(admin.api, 'cold-migration-guest');
  compute02 = await startComputeHost({ dataDir: pumice.dataDir, host: 'compute02', configText: config() });
  await waitComputeService(admin, 'compute02', 'up', 30_000);
}, { timeout: 600_000 });

after(async () => {
  if (pumice) {
    await emptyTheCloud(admin, env, imageId);
    await compute02?.stop().catch(() => undefined);
    await pumice.stop();
    if (process.env['PUMICE_TEST_LOG_DIR']) {
      writeFileSync(path.join(process.env['PUMICE_TEST_LOG_DIR'], 'cold-migration-pumice.log'), pumice.output());
      writeFileSync(path.join(process.env['PUMICE_TEST_LOG_DIR'], 'cold-migration-compute02.log'), compute02?.output() ?? '');
    }
    const left = [...(await qemuPids(`${path.join(pumice.dataDir, 'instances')}/`)), ...(compute02 ? await qemuPids(compute02.instancesDir) : [])];
    for (const pid of left) process.kill(pid, 'SIGKILL');
    if (notes.length) console.log(`cold migration on Ceph (TCG guest, loopback):\n  ${notes.join('\n  ')}`);
    pumice.cleanup();
    assert.deepEqual(left, [], 'no QEMU outlives its servers');
  }
  if (workDir) await rm(workDir, { recursive: true, force: true });
}, { timeout: 300_000 });

describe('cold migration on Ceph', { skip: shared ? false : 'PUMICE_CEPH_LAB is not set (a running Ceph lab)' }, () => {
  let vm = '';
  let rootId = '';
  let dataId = '';
  let serial = '';
  const pumiceDir = () => path.join(pumice.dataDir, 'instances', vm);
  const compute02Dir = () => path.join(compute02.instancesDir, vm);
  const counterOn = (dir: string, n: number) => new RegExp(`PUMICE-DISK serial=${serial} counter=${n}\\b`).test(existsSync(path.join(dir, 'console.log')) ? readFileSync(path.join(dir, 'console.log'), 'utf8') : '');
  async function waitCounter(dir: string, n: number): Promise<void> {
    const deadline = Date.now() + 60_000;
    while (!counterOn(dir, n)) {
      assert.ok(Date.now() < deadline, `counter=${n} never on ${dir}/console.log:\n${existsSync(path.join(dir, 'console.log')) ? readFileSync(path.join(dir, 'console.log'), 'utf8').slice(-1500) : '(no console log)'}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  async function assertOneAttachmentEach(host: string): Promise<void> {
    for (const volumeId of [rootId, dataId]) {
      const attachments = await volumeAttachments(volumeId);
      assert.equal(attachments.length, 1, `one attachment of ${volumeId}: ${JSON.stringify(attachments)}`);
      assert.equal(attachments[0]!['status'], 'attached', JSON.stringify(attachments));
      const volume = await admin.volume(volumeId);
      assert.equal(volume['status'], 'in-use');
      assert.equal(volume['attachments'][0]['host_name'], host, `volume ${volumeId} attached to ${host}`);
    }
  }

  test('migrate --host compute02 --wait: VERIFY_RESIZE on compute02, the guest booted there on the same data', async () => {
    dataId = await admin.createVolume({ size: 1, name: 'cm-data' });
    await admin.waitVolume(dataId, ['available']);
    serial = dataId.slice(0, 20);
    const booted = Date.now();
    const r = await admin.request('POST', '/servers', {
      server: {
        name: 'cm', flavorRef: '42', networks: 'none', availability_zone: 'nova:pumice',
        block_device_mapping_v2: [
          { source_type: 'image', destination_type: 'volume', uuid: imageId, boot_index: 0, volume_size: 1, delete_on_termination: true },
          { source_type: 'volume', destination_type: 'volume', uuid: dataId, boot_index: -1 },
        ],
      },
    });
    assert.equal(r.status, 202, r.text);
    vm = r.body.server.id;
    assert.equal((await admin.waitServer(vm, ['ACTIVE'], 180_000))!['OS-EXT-SRV-ATTR:host'], 'pumice');
    await waitCounter(pumiceDir(), 1);
    notes.push(`boot from volume → data disk counted: ${Date.now() - booted} ms`);
    rootId = (await admin.server(vm))!['os-extended-volumes:volumes_attached'].map((v: Row) => v['id']).find((id: string) => id !== dataId);

    // Before 2.56 a host cannot be named (OSC refuses by itself; the API names the microversion).
    const old = await serverAction(vm, { migrate: { host: 'compute02' } }, '2.55');
    assert.equal(old.status, 400, old.text);
    assert.match(old.text, /2\.56/);

    const started = Date.now();
    await openstack({ ...env, OS_COMPUTE_API_VERSION: '2.56' }, ['server', 'migrate', '--host', 'compute02', '--wait', vm]);
    notes.push(`openstack server migrate --wait → VERIFY_RESIZE: ${Date.now() - started} ms`);
    const row = (await admin.server(vm))!;
    assert.equal(row['status'], 'VERIFY_RESIZE', JSON.stringify(row['fault'] ?? row));
    assert.equal(row['OS-EXT-SRV-ATTR:host'], 'compute02');
    assert.equal(row['OS-EXT-STS:power_state'], 1);
    await waitCounter(compute02Dir(), 2);
    assert.deepEqual(await qemuPids(`${path.join(pumice.dataDir, 'instances')}/`), [], 'no QEMU left on pumice');
    await assertOneAttachmentEach('compute02');
    const [record] = await coldMigrations(vm);
    assert.equal(record?.['status'], 'finished');
    assert.equal(record?.['source_compute'], 'pumice');
    assert.equal(record?.['dest_compute'], 'compute02');
    const listed = await openstackJson<Row[]>({ ...env, OS_COMPUTE_API_VERSION: '2.23' }, ['server', 'migration', 'list', '--server', vm, '--type', 'cold-migration']);
    assert.equal(listed[0]?.['Status'], 'finished', JSON.stringify(listed));

    // Bad input while it waits for confirm: named causes, nothing changed.
    const again = await serverAction(vm, { migrate: null });
    assert.equal(again.status, 409, again.text);
    assert.match(again.text, /confirm or revert/);
    const live = await serverAction(vm, { 'os-migrateLive': { host: null, block_migration: 'auto' } });
    assert.equal(live.status, 409, live.text);
    assert.equal((await admin.server(vm))!['status'], 'VERIFY_RESIZE');
  });

  test('migrate revert: ACTIVE on pumice again, booted on the same data, nothing left on compute02', async () => {
    assert.ok(vm, 'needs the migrated server');
    const started = Date.now();
    await openstack(env, ['server', 'migrate', 'revert', vm]);
    const row = (await admin.waitServer(vm, ['ACTIVE'], 90_000))!;
    notes.push(`revert → ACTIVE: ${Date.now() - started} ms`);
    assert.equal(row['OS-EXT-SRV-ATTR:host'], 'pumice');
    await waitCounter(pumiceDir(), 3);
    assert.deepEqual(await qemuPids(compute02.instancesDir), [], 'no QEMU left on compute02');
    assert.equal(existsSync(compute02Dir()), false, "compute02's instance directory is gone");
    await assertOneAttachmentEach('pumice');
    assert.equal((await coldMigrations(vm))[0]?.['status'], 'reverted');
    // Nothing to confirm or revert now.
    for (const action of ['confirmResize', 'revertResize']) {
      const r = await serverAction(vm, { [action]: null });
      assert.equal(r.status, 409, r.text);
      assert.match(r.text, /VERIFY_RESIZE/);
    }
  });

  test('bad input: same host, unknown host, a host down, a member, an unknown server: refused, nothing made', async () => {
    const same = await serverAction(vm, { migrate: { host: 'pumice' } });
    assert.equal(same.status, 400, same.text);
    assert.match(same.text, /already runs on pumice/);
    const unknown = await serverAction(vm, { migrate: { host: 'nowhere' } });
    assert.equal(unknown.status, 400, unknown.text);
    assert.match(unknown.text, /nowhere could not be found/);
    // A target that is down: named with the way out; the scheduler finds no other host.
    await openstack({ ...env, OS_COMPUTE_API_VERSION: '2.11' }, ['compute', 'service', 'set', '--down', 'compute02', 'nova-compute']);
    try {
      const down = await serverAction(vm, { migrate: { host: 'compute02' } });
      assert.equal(down.status, 400, down.text);
      assert.match(down.text, /compute02 is down/);
      const none = await serverAction(vm, { migrate: null });
      assert.equal(none.status, 400, none.text);
      assert.match(none.text, /No valid host was found to migrate/);
    } finally {
      await openstack({ ...env, OS_COMPUTE_API_VERSION: '2.11' }, ['compute', 'service', 'set', '--up', 'compute02', 'nova-compute']);
    }
    await waitComputeService(admin, 'compute02', 'up', 30_000);
    // migrate is admin-only (os_compute_api:os-migrate-server:migrate); a member of the server's project gets 403.
    await openstack(env, ['user', 'create', '--password', 'pw-cm-member', 'cm-member']);
    await openstack(env, ['role', 'add', '--user', 'cm-member', '--project', 'admin', 'member']);
    const member = await ComputeClient.login(pumice.url, 'cm-member', 'pw-cm-member', 'admin');
    const forbidden = await member.request('POST', `/servers/${vm}/action`, { migrate: null });
    assert.equal(forbidden.status, 403, forbidden.text);
    assert.match(forbidden.text, /os-migrate-server:migrate/);
    const noServer = await serverAction('00000000-0000-4000-8000-000000000000', { migrate: null });
    assert.equal(noServer.status, 404, noServer.text);
    assert.equal((await admin.server(vm))!['status'], 'ACTIVE');
    assert.equal((await coldMigrations(vm)).length, 1, 'no migration record was made');
  });

  test('openstacksdk migrate_server (the scheduler picks), then openstack server migrate confirm: ACTIVE on compute02', async () => {
    assert.ok(vm, 'needs the server');
    await sdk(`conn.compute.migrate_server('${vm}')`);
    await admin.waitServer(vm, ['VERIFY_RESIZE'], 90_000);
    const row = (await admin.server(vm))!;
    assert.equal(row['OS-EXT-SRV-ATTR:host'], 'compute02');
    await waitCounter(compute02Dir(), 4);
    await openstack(env, ['server', 'migrate', 'confirm', vm]);
    const done = (await admin.waitServer(vm, ['ACTIVE'], 60_000))!;
    assert.equal(done['OS-EXT-SRV-ATTR:host'], 'compute02');
    const [record] = await coldMigrations(vm);
    assert.equal(record?.['status'], 'confirmed');
    const byStatus = await admin.request('GET', `/os-migrations?instance_uuid=${vm}&status=reverted`);
    assert.deepEqual(byStatus.body.migrations.map((m: Row) => m['migration_type']), ['migration'], 'the status filter finds the reverted one');
    assert.equal(existsSync(pumiceDir()), false, "pumice's instance directory is gone after the confirm");
    assert.deepEqual(await qemuPids(`${path.join(pumice.dataDir, 'instances')}/`), []);
    await assertOneAttachmentEach('compute02');
    const sdkSeen = await sdk(`print(conn.compute.get_server('${vm}').status)`);
    assert.equal(sdkSeen, 'ACTIVE');
  });

  test('a SHUTOFF server migrates without being started: openstacksdk migrate_server, revert_server_resize, confirm_server_resize', async () => {
    assert.ok(vm, 'needs the server');
    await openstack(env, ['server', 'stop', vm]);
    await admin.waitServer(vm, ['SHUTOFF'], 60_000);
    await sdk(`conn.compute.migrate_server('${vm}')`);
    let row = (await admin.waitServer(vm, ['VERIFY_RESIZE'], 60_000))!;
    assert.equal(row['OS-EXT-SRV-ATTR:host'], 'pumice');
    assert.equal(row['OS-EXT-STS:power_state'], 4, 'not started on pumice');
    await sdk(`conn.compute.revert_server_resize('${vm}')`);
    row = (await admin.waitServer(vm, ['SHUTOFF'], 60_000))!;
    assert.equal(row['OS-EXT-SRV-ATTR:host'], 'compute02');
    assert.equal((await coldMigrations(vm))[0]?.['status'], 'reverted');
    await sdk(`conn.compute.migrate_server('${vm}')`);
    await admin.waitServer(vm, ['VERIFY_RESIZE'], 60_000);
    await sdk(`conn.compute.confirm_server_resize('${vm}')`);
    row = (await admin.waitServer(vm, ['SHUTOFF'], 60_000))!;
    assert.equal(row['OS-EXT-SRV-ATTR:host'], 'pumice');
    assert.equal((await coldMigrations(vm))[0]?.['status'], 'confirmed');
    assert.deepEqual([...(await qemuPids(`${path.join(pumice.dataDir, 'instances')}/`)), ...(await qemuPids(compute02.instancesDir))], [], 'no QEMU anywhere: it stayed off');
    assert.equal(counterOn(pumiceDir(), 5) || counterOn(compute02Dir(), 5), false, 'the guest never booted');
    await assertOneAttachmentEach('pumice');
  });
});
