/**
 * The Ceph lab (src/ceph/lab.ts) against real daemons: health, the scenario's
 * pools and users with their exact caps, what client.cinder may and may not
 * do, and a monitor stop/start. Uses the lab in $PUMICE_CEPH_LAB when set
 * (scripts/with-ceph-lab.sh shares one per run), else brings up a private one
 * in a temp dir and purges it afterwards. A private lab also gets an OSD
 * stop/start; a shared one does not (other test files may be using it).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  LAB_POOLS,
  LAB_USERS,
  labPurge,
  labStatus,
  labUp,
  readLab,
  startDaemon,
  stopDaemon,
  waitLabReady,
  type CephLab,
} from '../../src/ceph/lab.js';

const shared = process.env['PUMICE_CEPH_LAB'];
let lab: CephLab;
let privateDir: string | undefined;
const tag = randomBytes(4).toString('hex');

function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      if (error && typeof error.code !== 'number') return reject(new Error(`${cmd} ${args.join(' ')}: ${error.message}`));
      resolve({ code: error ? (error.code as number) : 0, stdout, stderr });
    });
    child.stdin?.end();
  });
}

async function ok(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

const ceph = (...args: string[]) => ok('ceph', ['--conf', lab.confPath, '--connect-timeout', '10', ...args]);
const rbdAs = (id: string, ...args: string[]) => run('rbd', ['--conf', lab.confPath, '--id', id, '--client_mount_timeout=10', ...args]);
const rbdOk = async (id: string, ...args: string[]) => {
  const r = await rbdAs(id, ...args);
  assert.equal(r.code, 0, `rbd --id ${id} ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
};

before(async () => {
  if (shared) {
    lab = readLab(shared);
  } else {
    privateDir = path.join(await mkdtemp(path.join(tmpdir(), 'pumice-lab-test-')), 'lab');
    const started = Date.now();
    lab = await labUp(privateDir);
    process.stderr.write(`# private Ceph lab ready in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  }
}, { timeout: 120_000 });

after(async () => {
  if (!privateDir) return;
  await labPurge(privateDir);
  await rm(path.dirname(privateDir), { recursive: true, force: true });
}, { timeout: 60_000 });

describe('ceph lab', { timeout: 90_000 }, () => {
  test('is running and HEALTH_OK; labUp on a ready lab returns at once', async () => {
    const status = await labStatus(lab.dir);
    assert.deepEqual(status, { running: true, health: 'HEALTH_OK' });
    const t0 = Date.now();
    const again = await labUp(lab.dir);
    assert.equal(again.fsid, lab.fsid);
    assert.ok(Date.now() - t0 < 5000, `idempotent labUp took ${Date.now() - t0} ms`);
    const j = JSON.parse(await ceph('status', '--format', 'json')) as { fsid: string; pgmap: { num_pgs: number; pgs_by_state: { state_name: string }[] } };
    assert.equal(j.fsid, lab.fsid);
    // A shared lab may still trim snapshots that earlier test files removed: active+clean all the same.
    for (const state of j.pgmap.pgs_by_state.map((s) => s.state_name)) assert.match(state, /^active\+clean(\+snaptrim(_wait)?|\+scrubbing(\+deep)?)*$/);
  });

  test('ceph.conf keeps everything in the lab directory', () => {
    const conf = readFileSync(lab.confPath, 'utf8');
    assert.match(conf, /^mon host = \[v2:127\.0\.0\.1:3300,v1:127\.0\.0\.1:6789\]$/m);
    assert.match(conf, /^auth allow insecure global id reclaim = false$/m);
    assert.match(conf, /^osd client watch timeout = 5$/m);
    assert.match(conf, new RegExp(`^keyring = ${lab.dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/\\$cluster\\.\\$name\\.keyring$`, 'm'));
    assert.doesNotMatch(conf, /\/etc\/ceph|\/var\/(lib|run|log)\/ceph/);
    assert.deepEqual(lab.monHosts, ['127.0.0.1']);
    assert.equal(lab.monPort, 6789);
    assert.ok(existsSync(lab.adminKeyringPath));
  });

  test('the four pools exist with 2 replicas and are rbd-initialised', async () => {
    const pools = JSON.parse(await ceph('osd', 'pool', 'ls', 'detail', '--format', 'json')) as {
      pool_name: string;
      size: number;
      min_size: number;
      application_metadata: Record<string, unknown>;
    }[];
    for (const name of LAB_POOLS) {
      const pool = pools.find((p) => p.pool_name === name);
      assert.ok(pool, `pool ${name} missing`);
      assert.equal(pool.size, 2);
      assert.equal(pool.min_size, 1);
      assert.deepEqual(Object.keys(pool.application_metadata), ['rbd'], `pool ${name} application`);
      await ok('rados', ['--conf', lab.confPath, '-p', name, 'stat', 'rbd_info']);
    }
  });

  test('users have exactly the scenario caps, and their keyrings', async () => {
    for (const [user, caps] of Object.entries(LAB_USERS)) {
      const [entry] = JSON.parse(await ceph('auth', 'get', `client.${user}`, '--format', 'json')) as { key: string; caps: Record<string, string> }[];
      assert.deepEqual(entry!.caps, caps, `caps of client.${user}`);
      const keyring = readFileSync(lab.keyringPath(user), 'utf8');
      assert.equal(lab.keyringPath(user), path.join(lab.dir, `ceph.client.${user}.keyring`));
      assert.ok(keyring.includes(`[client.${user}]`) && keyring.includes(entry!.key), `keyring of client.${user}`);
    }
  });

  test('as cinder: create and write in volumes, clone from images, denied writing images', async () => {
    const img = `lab-test-img-${tag}`;
    const vol = `lab-test-vol-${tag}`;
    const clone = `lab-test-clone-${tag}`;
    try {
      // glance owns images: create, write, snapshot, protect (clone v1 needs it)
      await rbdOk('glance', 'create', '--size', '16M', `images/${img}`);
      await rbdOk('glance', 'bench', '--io-type', 'write', '--io-size', '64K', '--io-total', '1M', `images/${img}`);
      await rbdOk('glance', 'snap', 'create', `images/${img}@snap`);
      await rbdOk('glance', 'snap', 'protect', `images/${img}@snap`);

      await rbdOk('cinder', 'create', '--size', '16M', `volumes/${vol}`);
      await rbdOk('cinder', 'bench', '--io-type', 'write', '--io-size', '64K', '--io-total', '1M', `volumes/${vol}`);
      await rbdOk('cinder', 'clone', `images/${img}@snap`, `volumes/${clone}`);
      await rbdOk('cinder', 'bench', '--io-type', 'write', '--io-size', '64K', '--io-total', '256K', `volumes/${clone}`);
      const info = JSON.parse(await rbdOk('cinder', 'info', '--format', 'json', `volumes/${clone}`)) as { parent?: { pool: string; image: string; snapshot: string } };
      assert.deepEqual(info.parent && [info.parent.pool, info.parent.image, info.parent.snapshot], ['images', img, 'snap']);

      const denied = await rbdAs('cinder', 'create', '--size', '1M', `images/lab-test-denied-${tag}`);
      assert.notEqual(denied.code, 0, 'cinder created an image in images');
      assert.match(denied.stderr, /Operation not permitted|Permission denied/);
      const deniedWrite = await rbdAs('cinder', 'bench', '--io-type', 'write', '--io-total', '64K', `images/${img}`);
      assert.notEqual(deniedWrite.code, 0, 'cinder wrote to an image in images');
    } finally {
      await rbdAs('cinder', 'rm', '--no-progress', `volumes/${clone}`);
      await rbdAs('cinder', 'rm', '--no-progress', `volumes/${vol}`);
      await rbdAs('glance', 'snap', 'unprotect', `images/${img}@snap`);
      await rbdAs('glance', 'snap', 'purge', '--no-progress', `images/${img}`);
      await rbdAs('glance', 'rm', '--no-progress', `images/${img}`);
    }
  });

  test('a second lab is refused while this one holds the monitor ports', async () => {
    const other = path.join(await mkdtemp(path.join(tmpdir(), 'pumice-lab-other-')), 'lab');
    await assert.rejects(labUp(other), /only one lab can run at a time.*ceph-lab down/s);
    assert.equal(existsSync(other), false, 'a refused labUp must not create its directory');
    await rm(path.dirname(other), { recursive: true, force: true });
  });

  test('monitor stop and start: unavailable, then healthy again', async () => {
    const t0 = Date.now();
    await stopDaemon(lab.dir, 'mon.a');
    const down = await labStatus(lab.dir);
    assert.equal(down.running, false);
    assert.match(down.health, /mon\.a is not running/);
    await startDaemon(lab.dir, 'mon.a');
    await waitLabReady(lab.dir, 60_000);
    assert.deepEqual(await labStatus(lab.dir), { running: true, health: 'HEALTH_OK' });
    process.stderr.write(`# mon stop/start to ready: ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  });

  test('OSD stop and start (private lab only)', { skip: shared ? 'shared lab: other test files may be using it' : false }, async () => {
    const t0 = Date.now();
    await stopDaemon(lab.dir, 'osd.2');
    const status = await labStatus(lab.dir);
    assert.equal(status.running, false);
    assert.match(status.health, /not running: osd\.2/);
    // A degraded cluster still serves I/O (2 replicas, min_size 1).
    const vol = `lab-test-degraded-${tag}`;
    await rbdOk('cinder', 'create', '--size', '8M', `volumes/${vol}`);
    await rbdOk('cinder', 'bench', '--io-type', 'write', '--io-size', '64K', '--io-total', '512K', `volumes/${vol}`);
    await rbdOk('cinder', 'rm', '--no-progress', `volumes/${vol}`);
    await startDaemon(lab.dir, 'osd.2');
    await waitLabReady(lab.dir, 60_000);
    assert.deepEqual(await labStatus(lab.dir), { running: true, health: 'HEALTH_OK' });
    process.stderr.write(`# osd stop/start to ready: ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  });
});
