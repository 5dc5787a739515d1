/**
 * Many hosts in network namespaces (issue 16): a controller (api, scheduler, image, and
 * PostgreSQL on its bridge address) and two volume hosts (volume, backup) of one cluster
 * sharing a local backend directory (the Ceph lab listens on 127.0.0.1 of the root
 * namespace, which the hosts' namespaces cannot reach). Each host is its own `pumice serve`
 * with its own data directory and hostname; they meet only in PostgreSQL.
 *
 * vol-a runs with PUMICE_CRASH_POINT=volume.create.made:1:stop: it stops itself (SIGSTOP)
 * in the middle of the first volume create it runs, holding the task's lease, so the test
 * can kill -9 it or cut its link at that exact point. vol-b is held stopped by the test
 * while a request is made, so the task goes to vol-a.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Db } from '../../src/db/db.ts';
import { NetnsLab, netnsUnavailable, type LabProcess } from '../helpers/netns.ts';
import { ApiClient, readEvents, repoRoot } from '../helpers/pumice.ts';

const unavailable = netnsUnavailable();
const serviceDownTimeS = 4;
const adminPassword = 'multihost-admin-16';
const apiPort = 5000;
const cluster = 'lab16';

let lab: NetnsLab | null = null;
let pg: { url: string; localUrl: string };
let admin: ApiClient;
/** The test's own connection to the cloud's PostgreSQL (through its socket directory). */
let db: Db | null = null;
const dataDirs: Record<string, string> = {};
const running: Record<string, LabProcess> = {};

function configFor(host: string): string {
  return `[DEFAULT]
host = ${host}
cluster = ${cluster}
service_down_time = ${serviceDownTimeS}
report_interval = 1
public_endpoint = http://${lab!.controller.address}:${apiPort}
enabled_backends = local
backup_posix_path = ${join(lab!.dir, 'shared-backups')}

[local]
volume_driver = local
local_volume_dir = ${join(lab!.dir, 'shared-volumes')}

[database]
connection = ${pg.url}
`;
}

async function startHost(host: string, roles: string, env: Record<string, string> = {}): Promise<LabProcess> {
  const dataDir = (dataDirs[host] ??= join(lab!.dir, `data-${host}`));
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dataDir, 'pumice.conf'), configFor(host));
  const proc = lab!.spawn(host, [
    process.execPath, join(repoRoot, 'bin', 'pumice.mjs'), 'serve', '--roles', roles, '--data-dir', dataDir,
    '--config', join(dataDir, 'pumice.conf'), '--listen', `${lab!.host(host).address}:${apiPort}`,
  ], { PATH: process.env['PATH'], HOME: dataDir, PUMICE_ADMIN_PASSWORD: adminPassword, PUMICE_VALIDATE_RESPONSES: '1', ...env });
  const deadline = Date.now() + 90_000;
  while (!/ready (at|with roles)/.test(proc.output())) {
    if (proc.proc.exitCode !== null || Date.now() > deadline) throw new Error(`${host} did not start: ${proc.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  running[host] = proc;
  return proc;
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined | false> | T | undefined | false): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface ServiceView { binary: string; host: string; state: string; cluster: string | null }
async function volumeServices(): Promise<ServiceView[]> {
  const r = await admin.request('GET', `/volume/v3/${admin.projectId}/os-services`, undefined, { 'OpenStack-API-Version': 'volume 3.7' });
  assert.equal(r.status, 200, `${r.text}\ncontroller log:\n${running['ctl']?.output().slice(-4000)}`);
  return r.body.services as ServiceView[];
}

async function createVolume(name: string): Promise<string> {
  const r = await admin.request('POST', `/volume/v3/${admin.projectId}/volumes`, { volume: { size: 1, name } });
  assert.equal(r.status, 202, r.text);
  return r.body.volume.id as string;
}

/** task.done / task.fenced events of one resource on one host (the event log is written asynchronously: poll). */
function taskEvents(host: string, event: string, resourceId: string) {
  return readEvents(dataDirs[host]!, event).filter((e) => e['resource_id'] === resourceId);
}

/** The running task of a resource, as the database has it. */
function runningTask(resourceId: string): { id: number; owner: string } | undefined {
  return db!.get<{ id: number; owner: string }>("SELECT id, owner FROM tasks WHERE resource_id = ? AND state = 'running'", resourceId);
}

before(async () => {
  if (unavailable) return;
  lab = new NetnsLab(['ctl', 'vol-a', 'vol-b']);
  pg = lab.startPostgres();
  mkdirSync(join(lab.dir, 'shared-volumes'), { mode: 0o700 });
  mkdirSync(join(lab.dir, 'shared-backups'), { mode: 0o700 });
  await startHost('ctl', 'api,scheduler,image');
  await Promise.all([
    startHost('vol-a', 'volume,backup', { PUMICE_CRASH_POINT: 'volume.create.made:1:stop' }),
    startHost('vol-b', 'volume,backup'),
  ]);
  db = new Db(pg.localUrl);
  const url = await lab.bridgeHttp('ctl', lab.controller.address, apiPort);
  admin = await ApiClient.login(url, 'admin', adminPassword, 'admin');
});

after(async () => {
  db?.close();
  await lab?.cleanup();
});

test('each host has its own service rows; the volume hosts show their cluster; the controller runs no volume service', { skip: unavailable ?? false }, async () => {
  const services = await until('both volume hosts up', 20_000, async () => {
    const rows = await volumeServices();
    return rows.filter((s) => s.binary === 'cinder-volume' && s.state === 'up').length === 2 && rows;
  });
  const volume = services.filter((s) => s.binary === 'cinder-volume').map((s) => `${s.host} ${s.cluster} ${s.state}`).sort();
  assert.deepEqual(volume, [`vol-a@local ${cluster}@local up`, `vol-b@local ${cluster}@local up`]);
  assert.deepEqual(services.filter((s) => s.binary === 'cinder-backup').map((s) => s.host).sort(), ['vol-a', 'vol-b']);
  assert.deepEqual(services.filter((s) => s.binary === 'cinder-scheduler').map((s) => s.host), ['ctl']);
  // The controller serves the API; the volume hosts serve none.
  assert.throws(() => lab!.exec('ctl', ['curl', '-sf', '-m', '2', `http://${lab!.host('vol-a').address}:${apiPort}/`]));
});

test('kill -9 of a volume host mid-create: the other member of the cluster takes the task over after the lease', { skip: unavailable ?? false }, async () => {
  const a = running['vol-a']!;
  const b = running['vol-b']!;
  process.kill(b.pid, 'SIGSTOP');
  let volumeId = '';
  try {
    volumeId = await createVolume('takeover');
    await until('vol-a stopped inside the create', 30_000, () => NetnsLab.isStopped(a.pid));
    assert.match(runningTask(volumeId)?.owner ?? '', /^vol-a:/, 'vol-a holds the task');
  } finally {
    process.kill(b.pid, 'SIGCONT');
  }
  const task = runningTask(volumeId)!;
  const killedAt = Date.now();
  process.kill(a.pid, 'SIGKILL');
  await a.exited;
  const volume = await admin.waitVolume(volumeId, ['available', 'error'], 40_000);
  const takeoverMs = Date.now() - killedAt;
  assert.equal(volume.status, 'available');
  assert.equal(volume['os-vol-host-attr:host'], `${cluster}@local#local`);
  assert.match(b.output(), new RegExp(`task ${task.id} volume.create ${volumeId}: its runner vol-a:\\d+:\\w+ is gone \\(lease expired\\); running it again`));
  await until('vol-b records the task done', 10_000, () => taskEvents('vol-b', 'task.done', volumeId).length === 1);
  assert.equal(taskEvents('vol-a', 'task.done', volumeId).length, 0);
  assert.equal(db!.get('SELECT 1 FROM tasks WHERE resource_id = ?', volumeId), undefined, 'no task row left');
  console.log(`takeover after kill -9: ${takeoverMs} ms (service_down_time ${serviceDownTimeS} s, lease ${serviceDownTimeS} s, poll 2 s)`);
  assert.ok(takeoverMs <= 2 * serviceDownTimeS * 1000 + 4000, `takeover took ${takeoverMs} ms`);
});

test('partition of a volume host: reported down, its lease expires and the work moves; back on the link it rejoins without finishing the task again', { skip: unavailable ?? false }, async () => {
  const a = await startHost('vol-a', 'volume,backup', { PUMICE_CRASH_POINT: 'volume.create.made:1:stop' });
  const b = running['vol-b']!;
  await until('vol-a up again', 20_000, async () => (await volumeServices()).some((s) => s.host === 'vol-a@local' && s.state === 'up'));
  process.kill(b.pid, 'SIGSTOP');
  let volumeId = '';
  try {
    volumeId = await createVolume('partitioned');
    await until('vol-a stopped inside the create', 30_000, () => NetnsLab.isStopped(a.pid));
    assert.match(runningTask(volumeId)?.owner ?? '', /^vol-a:/, 'vol-a holds the task');
    lab!.setLink('vol-a', false);
    process.kill(a.pid, 'SIGCONT');
  } finally {
    process.kill(b.pid, 'SIGCONT');
  }
  const cutAt = Date.now();
  await until('vol-a reported down', 30_000, async () => (await volumeServices()).some((s) => s.host === 'vol-a@local' && s.state === 'down'));
  const downAfterMs = Date.now() - cutAt;
  const volume = await admin.waitVolume(volumeId, ['available', 'error'], 40_000);
  assert.equal(volume.status, 'available');
  await until('vol-b records the task done', 10_000, () => taskEvents('vol-b', 'task.done', volumeId).length === 1);
  lab!.setLink('vol-a', true);
  // vol-a's write of the end of the task reaches the database now and is refused: the task is vol-b's.
  await until("vol-a's late completion refused", 45_000, () => taskEvents('vol-a', 'task.fenced', volumeId).length === 1);
  assert.equal(taskEvents('vol-a', 'task.done', volumeId).length, 0, 'vol-a did not finish the task a second time');
  await until('vol-a up again', 30_000, async () => (await volumeServices()).some((s) => s.host === 'vol-a@local' && s.state === 'up'));
  console.log(`partition: vol-a reported down ${downAfterMs} ms after its link went down (service_down_time ${serviceDownTimeS} s)`);
  // Rejoined: with vol-b held, vol-a takes and finishes new work.
  process.kill(b.pid, 'SIGSTOP');
  let nextId = '';
  try {
    nextId = await createVolume('after-rejoin');
    assert.equal((await admin.waitVolume(nextId, ['available', 'error'], 30_000)).status, 'available');
  } finally {
    process.kill(b.pid, 'SIGCONT');
  }
  await until('vol-a records the new task done', 10_000, () => taskEvents('vol-a', 'task.done', nextId).length === 1);
  assert.equal(taskEvents('vol-b', 'task.claimed', nextId).length, 0);
  assert.equal(taskEvents('vol-b', 'task.done', volumeId).length, 1, 'the partitioned task was finished once, by vol-b');
});

test("pumice tasks on the controller reads the cloud's PostgreSQL ([database] connection of its configuration)", { skip: unavailable ?? false }, async () => {
  const a = running['vol-a']!;
  const b = running['vol-b']!;
  // Both volume hosts held: the task stays queued where the CLI can see it.
  process.kill(a.pid, 'SIGSTOP');
  process.kill(b.pid, 'SIGSTOP');
  let volumeId = '';
  try {
    volumeId = await createVolume('seen-by-tasks-cli');
    const listed = JSON.parse(lab!.exec('ctl', [
      process.execPath, join(repoRoot, 'bin', 'pumice.mjs'), 'tasks', 'list', '--resource', volumeId, '--json',
      '--data-dir', dataDirs['ctl']!, '--config', join(dataDirs['ctl']!, 'pumice.conf'),
    ])) as { kind: string; state: string; queue: string }[];
    assert.deepEqual(listed.map((t) => `${t.kind} ${t.state} ${t.queue}`), ['volume.create queued local']);
  } finally {
    process.kill(a.pid, 'SIGCONT');
    process.kill(b.pid, 'SIGCONT');
  }
  assert.equal((await admin.waitVolume(volumeId, ['available', 'error'], 30_000)).status, 'available');
});

test('a backup asked of the controller (no backup role) is run by a backup host of the cluster', { skip: unavailable ?? false }, async () => {
  const volumeId = await createVolume('backed-up');
  await admin.waitVolume(volumeId, ['available'], 30_000);
  const r = await admin.request('POST', `/volume/v3/${admin.projectId}/backups`, { backup: { volume_id: volumeId, name: 'b16' } });
  assert.equal(r.status, 202, r.text);
  const backupId = r.body.backup.id as string;
  await until('backup available', 60_000, async () => {
    const b = await admin.request('GET', `/volume/v3/${admin.projectId}/backups/${backupId}`);
    assert.notEqual(b.body?.backup?.status, 'error', b.text);
    return b.body?.backup?.status === 'available';
  });
  await until('a backup host records the task done', 10_000, () =>
    taskEvents('vol-a', 'task.done', backupId).length + taskEvents('vol-b', 'task.done', backupId).length === 1);
});

test('CLI day against the multi-host cloud: token, volume create/list, snapshot create/delete, volume delete', { skip: unavailable ?? false }, async () => {
  const env = {
    PATH: '/usr/bin:/bin', HOME: lab!.dir,
    OS_AUTH_URL: `http://${lab!.controller.address}:${apiPort}/identity/v3`, OS_USERNAME: 'admin', OS_PASSWORD: adminPassword,
    OS_PROJECT_NAME: 'admin', OS_USER_DOMAIN_NAME: 'Default', OS_PROJECT_DOMAIN_NAME: 'Default', OS_IDENTITY_API_VERSION: '3',
  };
  // One openstack process runs several commands read from stdin (its interactive shell): a Python start costs seconds here.
  const cli = (...commands: string[]) => execFileSync('ip', ['netns', 'exec', lab!.controller.namespace, '/usr/bin/openstack'], { input: `${commands.join('\n')}\n`, env, encoding: 'utf8', timeout: 120_000 }).trim().split('\n');
  const [token, volumeId] = cli('token issue -f value -c id', 'volume create --size 1 cli-day -f value -c id');
  assert.match(token ?? '', /^\S{20,}$/);
  assert.match(volumeId ?? '', /^[0-9a-f-]{36}$/);
  await admin.waitVolume(volumeId!, ['available'], 30_000);
  const [listed, snapshotId] = cli('volume list --name cli-day -f value -c Name', 'volume snapshot create --volume cli-day cli-snap -f value -c id');
  assert.equal(listed, 'cli-day');
  assert.match(snapshotId ?? '', /^[0-9a-f-]{36}$/);
  const snapshotPath = `/volume/v3/${admin.projectId}/snapshots/${snapshotId}`;
  await until('snapshot available', 30_000, async () => (await admin.request('GET', snapshotPath)).body?.snapshot?.status === 'available');
  cli('volume snapshot delete cli-snap');
  await until('snapshot gone', 30_000, async () => (await admin.request('GET', snapshotPath)).status === 404);
  cli('volume delete cli-day');
  await admin.waitVolume(volumeId!, ['deleted'], 30_000);
});
