/**
 * Moving a volume between the local backend and Ceph (issue 18), with Debian's openstack CLI:
 * - `openstack volume set --type ceph --retype-policy on-demand` moves a local volume into RBD
 *   through the task engine; the process is killed mid-copy (crash point volume.migrate.copy):
 *   the volume is still on its old backend with its file untouched; restarted, the task engine
 *   runs the copy again and the volume arrives in RBD, its bytes identical (qemu-img compare
 *   against a copy of the original, reading the RBD image through librbd);
 * - `openstack volume migrate --host <local>` brings it back: the local file has the original
 *   sha256, and the RBD image is removed;
 * - refusals: an attached volume (no swap-volume yet), and a type that needs another backend
 *   with migration_policy never; a type the current backend satisfies retypes in place.
 * Uses the lab in $PUMICE_CEPH_LAB when set, else brings one up and purges it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { copyFile, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import type { CephLab } from '../../src/ceph/lab.ts';
import { labForTest, rbdBackendSection, type TestLab } from '../helpers/ceph-config.ts';
import { ApiClient, openstack, readEvents, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;

let lab: CephLab;
let testLab: TestLab | undefined;
let pumice: PumiceProcess;
let admin: ApiClient;
let dataDir = '';
const servers: PumiceProcess[] = [];
const scratch = mkdtempSync(path.join(tmpdir(), 'pumice-migrate-'));
const original = path.join(scratch, 'original.raw');
let volumeId = '';
let originalSha = '';

function config(): string {
  return `[DEFAULT]
enabled_backends = local,ceph
default_volume_type = local

[local]
volume_driver = local
volume_backend_name = local

${rbdBackendSection(lab)}`;
}

const localFile = (id: string) => path.join(dataDir, 'volumes', 'local', `volume-${id}`);

function sha256File(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

function rbdUri(id: string): string {
  return `rbd:volumes/volume-${id}:id=cinder:conf=${lab.confPath}:keyring=${lab.keyringPath('cinder')}`;
}

async function rbdImageExists(id: string): Promise<boolean> {
  return execFileAsync('rbd', ['--id', 'cinder', '-c', lab.confPath, '--keyring', lab.keyringPath('cinder'), 'info', `volumes/volume-${id}`], { timeout: 60_000 }).then(() => true, () => false);
}

async function start(env: Record<string, string> = {}): Promise<void> {
  pumice = await startPumice({ config: config(), dataDir: dataDir || undefined, env });
  servers.push(pumice);
  dataDir = pumice.dataDir;
  admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  testLab = await labForTest('pumice-migrate-rbd');
  lab = testLab.lab;
  // The first copy of this process dies at its 20th chunk (80 MiB into the 1 GiB volume).
  await start({ PUMICE_CRASH_POINT: 'volume.migrate.copy:20' });
  for (const name of ['local', 'ceph']) {
    await openstack(pumice.adminEnv, ['volume', 'type', 'create', '--property', `volume_backend_name=${name}`, name]);
  }
  await openstack(pumice.adminEnv, ['volume', 'type', 'create', 'anywhere']);
}, { timeout: 180_000 });

after(async () => {
  for (const server of servers) await server.stop();
  if (volumeId) {
    // What the run left in the shared pool: the copy of the killed try keeps the dead client's
    // exclusive lock, which client.cinder (mon 'allow r', no blocklist) cannot break; admin can.
    const { stdout } = await execFileAsync('rbd', ['--id', 'admin', '-c', lab.confPath, 'ls', 'volumes'], { timeout: 60_000 });
    for (const name of stdout.split('\n').filter((n) => n.startsWith(`volume-${volumeId}`))) {
      await execFileAsync('rbd', ['--id', 'admin', '-c', lab.confPath, 'rm', '--no-progress', `volumes/${name}`], { timeout: 120_000 }).catch((e: Error) => console.error(`could not remove volumes/${name}: ${e.message}`));
    }
  }
  servers.at(-1)?.cleanup();
  rmSync(scratch, { recursive: true, force: true });
  await testLab?.release();
}, { timeout: 120_000 });

describe('retype and migration between local and Ceph', { timeout: 300_000 }, () => {
  test('a retype with on-demand migration survives a crash mid-copy and arrives in RBD with the same bytes', async () => {
    const t0 = Date.now();
    const mark = (what: string) => console.error(`# ${((Date.now() - t0) / 1000).toFixed(1)} s ${what}`);
    const created = await admin.request('POST', `${admin.volumeUrl}/volumes`, { volume: { size: 1, volume_type: 'local', name: 'moving' } });
    assert.equal(created.status, 202, created.text);
    volumeId = created.body.volume.id as string;
    await admin.waitVolume(volumeId, ['available'], 60_000);
    // Data at the start, in the middle and in the last 4 KiB of the GiB.
    const handle = await open(localFile(volumeId), 'r+');
    await handle.write(randomBytes(8 * MiB), 0, 8 * MiB, 0);
    await handle.write(randomBytes(4 * MiB), 0, 4 * MiB, 700 * MiB);
    await handle.write(randomBytes(4096), 0, 4096, 1024 * MiB - 4096);
    await handle.close();
    await copyFile(localFile(volumeId), original);
    mark('written');
    originalSha = sha256File(original);

    // The server may die before the CLI has its answer (the copy starts at once): the exit code tells.
    const retyped = await openstack(pumice.adminEnv, ['volume', 'set', '--type', 'ceph', '--retype-policy', 'on-demand', volumeId]).then(() => 'answered', (e: Error) => e.message);
    // The crash point kills the process (SIGKILL): a signal, no exit code.
    const code = await new Promise<number | string | null>((resolve) => {
      if (pumice.proc.exitCode !== null || pumice.proc.signalCode !== null) resolve(pumice.proc.signalCode ?? pumice.proc.exitCode);
      else pumice.proc.once('exit', (c, signal) => resolve(signal ?? c));
    });
    mark('crashed');
    assert.equal(code, 'SIGKILL', `the server should have died at the crash point (CLI: ${retyped}):\n${pumice.output().slice(-2000)}`);

    // Killed mid-copy: the row still names the local backend, whose file is untouched.
    const db = new Database(pumice.database, { readonly: true });
    const row = db.prepare('SELECT status, backend, migration_status FROM volumes WHERE id = ?').get(volumeId) as Record<string, string>;
    db.close();
    assert.deepEqual(row, { status: 'retyping', backend: 'local', migration_status: 'migrating' });
    assert.equal(sha256File(localFile(volumeId)), originalSha, 'the source is intact after the crash');

    // Restarted without the crash point: the task engine runs the copy again and finishes it.
    await start();
    mark('restarted');
    const moved = await admin.waitVolume(volumeId, ['available', 'error'], 90_000);
    assert.equal(moved.status, 'available');
    assert.equal(moved.volume_type, 'ceph', `not moved:\n${pumice.output().slice(-3000)}`);
    assert.match(moved['os-vol-host-attr:host'], /@ceph#ceph$/);
    assert.equal(moved['os-vol-mig-status-attr:migstat'], 'success');
    mark('moved');
    await execFileAsync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', original, rbdUri(volumeId)], { timeout: 120_000 });
    mark('compared');
    // The chained cleanup removes the source copy once the row names the target.
    await until('the local copy to be removed', () => !existsSync(localFile(volumeId)));
  });

  test('openstack volume migrate --host brings it back to the local backend, bytes identical, RBD image removed', async () => {
    assert.ok(volumeId, 'needs the volume of the first test');
    const pools = await admin.request('GET', `${admin.volumeUrl}/scheduler-stats/get_pools`);
    const localHost = (pools.body.pools as { name: string }[]).map((p) => p.name).find((n) => n.endsWith('@local#local'))!;
    await openstack(pumice.adminEnv, ['volume', 'migrate', '--host', localHost, volumeId]);
    await until('the migration to finish', async () => {
      const r = await admin.request('GET', `${admin.volumeUrl}/volumes/${volumeId}`);
      return r.body.volume.status === 'available' && r.body.volume['os-vol-mig-status-attr:migstat'] === 'success' && r.body.volume['os-vol-host-attr:host'] === localHost;
    }, 90_000);
    const held = readEvents(dataDir, 'state.transition').filter((e) => e['id'] === volumeId && e['moved'] === true).map((e) => e['to']);
    assert.deepEqual(held.slice(-2), ['maintenance', 'available'], 'held in maintenance while it moved');
    const shown = await admin.request('GET', `${admin.volumeUrl}/volumes/${volumeId}`);
    assert.equal(shown.body.volume.volume_type, 'ceph', 'os-migrate_volume keeps the type');
    assert.equal(sha256File(localFile(volumeId)), originalSha);
    await until('the RBD copy to be removed', async () => !(await rbdImageExists(volumeId)));
  });

  test('refusals name the reason: an attached volume, and a type needing another backend with policy never', async () => {
    assert.ok(volumeId, 'needs the volume of the first test');
    const V = admin.volumeUrl;
    const pools = await admin.request('GET', `${V}/scheduler-stats/get_pools`);
    const cephHost = (pools.body.pools as { name: string }[]).map((p) => p.name).find((n) => n.endsWith('@ceph#ceph'))!;
    // A type the volume's backend satisfies (no backend spec): the type changes in place.
    const inPlace = await admin.request('POST', `${V}/volumes/${volumeId}/action`, { 'os-retype': { new_type: 'anywhere' } });
    assert.equal(inPlace.status, 202, inPlace.text);
    const volume = await admin.waitVolume(volumeId, ['available']);
    assert.equal(volume.volume_type, 'anywhere');
    assert.match(volume['os-vol-host-attr:host'], /@local#local$/);

    const never = await admin.request('POST', `${V}/volumes/${volumeId}/action`, { 'os-retype': { new_type: 'ceph', migration_policy: 'never' } });
    assert.equal(never.status, 400, never.text);
    assert.match(never.body.badRequest.message, /on-demand/);

    const attach = await admin.request('POST', `${V}/volumes/${volumeId}/action`, { 'os-attach': { instance_uuid: '4d3c5a7e-6f0b-4b8e-9d61-2f4b4a1c9e01', mountpoint: '/dev/vdb' } });
    assert.equal(attach.status, 202, attach.text);
    for (const action of [{ 'os-retype': { new_type: 'ceph', migration_policy: 'on-demand' } }, { 'os-migrate_volume': { host: cephHost } }]) {
      const refused = await admin.request('POST', `${V}/volumes/${volumeId}/action`, action);
      assert.equal(refused.status, 409, refused.text);
      assert.match(JSON.stringify(refused.body), /swap-volume/);
    }
    assert.equal((await admin.request('POST', `${V}/volumes/${volumeId}/action`, { 'os-detach': {} })).status, 202);
    assert.equal((await admin.waitVolume(volumeId, ['available'])).volume_type, 'anywhere', 'nothing changed');

    assert.equal((await admin.request('DELETE', `${V}/volumes/${volumeId}`)).status, 202);
    await admin.waitVolume(volumeId, ['deleted'], 60_000);
  });
});
