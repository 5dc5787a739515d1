/**
 * `pumice doctor` names each Ceph problem of scenario §8 with its fix, and
 * `pumice ceph setup` creates what a configuration needs (pool, user, caps,
 * keyring), idempotently. Runs the real CLI against the lab cluster.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { labPurge, labUp, readLab, type CephLab } from '../../src/ceph/lab.ts';
import { repoRoot } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const shared = process.env['PUMICE_CEPH_LAB'];
let lab: CephLab;
let privateDir = '';
let work = '';

async function pumice(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, [path.join(repoRoot, 'bin', 'pumice.mjs'), ...args], { timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function ceph(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('ceph', ['--conf', lab.confPath, '--id', 'admin', ...args], { timeout: 60_000 });
  return stdout;
}

async function configFile(name: string, section: string): Promise<string> {
  const file = path.join(work, `${name}.conf`);
  await writeFile(file, `[DEFAULT]\nenabled_backends = ceph\n[ceph]\nvolume_driver = rbd\nrados_connect_timeout = 5\nrbd_secret_uuid = 457eb676-33da-42ec-9a8c-9293d545c337\n${section}`);
  return file;
}

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'pumice-setup-test-'));
  if (shared) lab = readLab(shared);
  else {
    privateDir = path.join(work, 'lab');
    lab = await labUp(privateDir);
  }
}, { timeout: 120_000 });

after(async () => {
  if (privateDir) await labPurge(privateDir);
  await rm(work, { recursive: true, force: true });
}, { timeout: 60_000 });

describe('pumice doctor and pumice ceph setup', { timeout: 180_000 }, () => {
  test('doctor: missing ceph.conf is named with the fix', async () => {
    const conf = await configFile('noconf', `rbd_pool = volumes\nrbd_user = cinder\nrbd_ceph_conf = ${work}/missing/ceph.conf\n`);
    const r = await pumice(['doctor', '--data-dir', path.join(work, 'd1'), '--config', conf]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /FAIL\s+backend \[ceph\] \(rbd\): .*ceph\.conf not found.*conf_read_file: errno EINVAL.*copy \/etc\/ceph\/ceph\.conf from a monitor host/);
  });

  test('doctor: a user without caps on the pool gets the caps to grant', async () => {
    const conf = await configFile('nocaps', `rbd_pool = backups\nrbd_user = cinder\nrbd_ceph_conf = ${lab.confPath}\n`);
    const r = await pumice(['doctor', '--data-dir', path.join(work, 'd2'), '--config', conf]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stdout, /FAIL\s+backend \[ceph\] \(rbd\): Permission denied for pool 'backups' as client\.cinder.*ceph auth caps client\.cinder/);
  });

  test('doctor: a missing pool is named with the commands that create it', async () => {
    const conf = await configFile('nopool', `rbd_pool = nosuchpool\nrbd_user = cinder\nrbd_ceph_conf = ${lab.confPath}\n`);
    const r = await pumice(['doctor', '--data-dir', path.join(work, 'd5'), '--config', conf]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stdout, /FAIL\s+backend \[ceph\] \(rbd\): Ceph pool 'nosuchpool' does not exist: create it \(ceph osd pool create nosuchpool; rbd pool init nosuchpool\) or run 'pumice ceph setup'/);
  });

  test("doctor: the scenario's cinder user works, with a warning that it cannot fence", async () => {
    const conf = await configFile('scenario', `rbd_pool = volumes\nrbd_user = cinder\nrbd_ceph_conf = ${lab.confPath}\n`);
    const r = await pumice(['doctor', '--data-dir', path.join(work, 'd3'), '--config', conf]);
    assert.equal(r.code, 0, r.stdout);
    assert.match(r.stdout, /ok\s+backend \[ceph\] \(rbd\): pool volumes as client\.cinder: [\d.]+ of [\d.]+ GiB free/);
    assert.match(r.stdout, /warning: client\.cinder may not blocklist clients.*mon 'profile rbd'/);
    // The compute side: client.cinder fences evacuations ([libvirt] rbd_user falls back to the backend's user).
    assert.match(r.stdout, /ok\s+compute: fencing as client\.cinder \(evacuation\): warning: client\.cinder may not blocklist Ceph clients .*mon 'allow r'.*evacuating a server with RBD disks to this host is refused/);
  });

  test("doctor: with auto_evacuate, the compute user's mon 'allow r' fails, naming the cap and the exact fix", async () => {
    const conf = await configFile('fence-auto', `rbd_pool = volumes\nrbd_user = cinder\nrbd_ceph_conf = ${lab.confPath}\n[libvirt]\nrbd_user = cinder\n[compute]\nauto_evacuate = true\n`);
    const r = await pumice(['doctor', '--data-dir', path.join(work, 'd6'), '--config', conf]);
    assert.equal(r.code, 1, r.stdout);
    const line = r.stdout.split('\n').find((l) => /compute: fencing as client\.cinder/.test(l)) ?? '';
    assert.match(line, /^FAIL\s+compute: fencing as client\.cinder \(evacuation\): client\.cinder may not blocklist Ceph clients \(mon caps lack 'profile rbd' or 'allow command "osd blocklist"'/);
    assert.match(line, /\[compute\] auto_evacuate = true can never recover a host/);
    // client.cinder is a backend user, so pumice ceph setup fixes it; the exact command keeps its osd caps (read with the lab's admin keyring).
    const osd = JSON.parse(await ceph(['auth', 'get', 'client.cinder', '--format', 'json']))[0].caps.osd as string;
    assert.ok(line.includes(`Fix: pumice ceph setup (it grants mon 'profile rbd'), or ceph auth caps client.cinder mon 'profile rbd' osd '${osd}'`), line);
  });

  test('doctor: a compute user pumice ceph setup does not manage gets only the ceph auth caps command; a user that may blocklist passes', async () => {
    const conf = await configFile('fence-other', `rbd_pool = volumes\nrbd_user = cinder\nrbd_ceph_conf = ${lab.confPath}\n[libvirt]\nrbd_user = glance\n`);
    const r = await pumice(['doctor', '--data-dir', path.join(work, 'd7'), '--config', conf]);
    const line = r.stdout.split('\n').find((l) => /compute: fencing as client\.glance/.test(l)) ?? '';
    assert.match(line, /warning: client\.glance may not blocklist/);
    assert.match(line, /Fix: ceph auth caps client\.glance mon 'profile rbd' osd 'allow class-read object_prefix rbd_children, allow rwx pool=images'$/);
    assert.doesNotMatch(line, /pumice ceph setup/);

    const fencer = `pumice-doctor-fence-${process.pid}`;
    await ceph(['auth', 'get-or-create', `client.${fencer}`, 'mon', 'allow r, allow command "osd blocklist"', 'osd', 'allow rwx pool=volumes']);
    try {
      const keyring = path.join(work, 'fencer.keyring');
      await writeFile(keyring, await ceph(['auth', 'get', `client.${fencer}`]), { mode: 0o600 });
      const ok = await configFile('fence-ok', `rbd_pool = volumes\nrbd_user = cinder\nrbd_ceph_conf = ${lab.confPath}\n[libvirt]\nrbd_user = ${fencer}\nrbd_keyring = ${keyring}\n`);
      const r2 = await pumice(['doctor', '--data-dir', path.join(work, 'd8'), '--config', ok]);
      assert.match(r2.stdout, new RegExp(`ok\\s+compute: fencing as client\\.${fencer} \\(evacuation\\): client\\.${fencer} may blocklist Ceph clients`), r2.stdout);
    } finally {
      await ceph(['auth', 'del', `client.${fencer}`]).catch(() => undefined);
    }
  });

  test('ceph setup creates the missing pool, user, caps and keyring once; doctor is then happy', async () => {
    const conf = await configFile('fresh', `rbd_pool = volumes2\nrbd_user = cinder2\nrbd_ceph_conf = ${lab.confPath}\n`);
    const before = await pumice(['doctor', '--data-dir', path.join(work, 'd4'), '--config', conf]);
    assert.equal(before.code, 1);
    assert.match(before.stdout, /keyring .*ceph\.client\.cinder2\.keyring for client\.cinder2 not found.*ceph auth get client\.cinder2 -o/);

    const first = await pumice(['ceph', 'setup', '--data-dir', path.join(work, 'd4'), '--config', conf]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /changed: created pool volumes2/);
    assert.match(first.stdout, /changed: created client\.cinder2 with mon 'profile rbd' osd 'allow class-read object_prefix rbd_children, allow rwx pool=volumes2'/);
    assert.match(first.stdout, /changed: wrote keyring .*ceph\.client\.cinder2\.keyring/);

    const second = await pumice(['ceph', 'setup', '--data-dir', path.join(work, 'd4'), '--config', conf]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /nothing to change/);

    const after = await pumice(['doctor', '--data-dir', path.join(work, 'd4'), '--config', conf]);
    assert.equal(after.code, 0, after.stdout);
    assert.match(after.stdout, /ok\s+backend \[ceph\] \(rbd\) fencing: may blocklist crashed clients/);
    assert.match(after.stdout, /ok\s+compute: fencing as client\.cinder2 \(evacuation\): client\.cinder2 may blocklist Ceph clients/);
  });
});
