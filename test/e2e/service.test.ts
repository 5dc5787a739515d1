/**
 * Packaging as a service (issue 19): the shipped systemd unit passes `systemd-analyze verify`
 * and has what the issue asks (User=pumice, StateDirectory, Restart=on-failure, ExecReload
 * sending SIGHUP); `serve --service` runs as an unprivileged user on the service locations
 * systemd hands over (STATE_DIRECTORY, CONFIGURATION_DIRECTORY), and answers SIGHUP without
 * dying; `pumice backup create --volume NAME` resolves the name. The installer's argument
 * handling is checked; its full run needs root and systemd.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, test } from 'node:test';
import { ApiClient, repoRoot } from '../helpers/pumice.ts';
import { followServe } from '../helpers/serve.ts';
import { readdirSync, symlinkSync } from 'node:fs';

const execFileAsync = promisify(execFile);
const unitPath = join(repoRoot, 'packaging', 'systemd', 'pumice.service');
const scratch = mkdtempSync(join(tmpdir(), 'pumice-service-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

test('the systemd unit passes systemd-analyze verify and runs pumice as a non-root service', async (t) => {
  const unit = readFileSync(unitPath, 'utf8');
  for (const line of ['User=pumice', 'StateDirectory=pumice', 'Restart=on-failure', 'ExecReload=/bin/kill -HUP $MAINPID', 'Environment=PUMICE_SERVICE=1', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'RestartPreventExitStatus=2 3']) {
    assert.ok(unit.split('\n').includes(line), `the unit has ${line}`);
  }
  assert.match(unit, /^ExecStart=\/usr\/bin\/node \/opt\/pumice\/bin\/pumice\.mjs serve --service /m);
  const analyze = spawnSync('systemd-analyze', ['--version']);
  if (analyze.error) {
    t.skip('systemd-analyze is not installed (apt-get install systemd): the unit was not verified');
    return;
  }
  // verify checks that ExecStart's program exists: point it at this machine's node.
  const copy = join(scratch, 'pumice.service');
  writeFileSync(copy, unit.replaceAll('/usr/bin/node', process.execPath).replaceAll('/opt/pumice', repoRoot));
  const { stdout, stderr } = await execFileAsync('systemd-analyze', ['verify', copy]).catch((error: { stdout: string; stderr: string; code: number }) => {
    assert.fail(`systemd-analyze verify failed (${error.code}):\n${error.stdout}${error.stderr}`);
  });
  // Warnings about this unit (unknown keys, bad values) come on stderr with its name.
  assert.doesNotMatch(`${stdout}${stderr}`, /pumice\.service:\d+:/, `systemd-analyze verify:\n${stdout}${stderr}`);
});

/** A PATH with every program of the usual directories except those named: a host without them. */
function pathWithout(missing: string[]): string {
  const bin = join(scratch, 'bin');
  mkdirSync(bin, { recursive: true });
  for (const dir of (process.env['PATH'] ?? '').split(':').filter((d) => d.startsWith('/'))) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      if (missing.includes(name)) continue;
      try {
        symlinkSync(join(dir, name), join(bin, name));
      } catch {
        // an earlier directory's program of that name wins, as in PATH
      }
    }
  }
  return bin;
}

test('serve --service as an unprivileged user: the state and configuration directories systemd hands over, SIGHUP survives; a missing qemu-img is a start warning and a 501, not a retried 503', async () => {
  const stateDir = join(scratch, 'state');
  const confDir = join(scratch, 'etc-pumice');
  mkdirSync(stateDir, { mode: 0o700 });
  mkdirSync(confDir);
  // virt_type = qemu: no accelerator probe boot (no guest here). The file is the one --service reads.
  writeFileSync(join(confDir, 'pumice.conf'), '[libvirt]\nvirt_type = qemu\n');
  chmodSync(scratch, 0o755);
  const nobody = 65534;
  chownSync(stateDir, nobody, nobody);
  const env: NodeJS.ProcessEnv = { PATH: pathWithout(['qemu-img']), HOME: stateDir, PUMICE_SERVICE: '1', STATE_DIRECTORY: stateDir, CONFIGURATION_DIRECTORY: confDir };
  const proc = spawn('setpriv', ['--reuid', String(nobody), '--regid', String(nobody), '--clear-groups', process.execPath, join(repoRoot, 'bin', 'pumice.mjs'), 'serve', '--listen', ':0'], { cwd: stateDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const served = followServe(proc);
  const { exited, output } = served;
  try {
    const url = await served.ready;
    // Its files are the unprivileged user's, in the state directory.
    for (const file of ['pumice.db', 'admin-openrc']) assert.equal(statSync(join(stateDir, file)).uid, nobody, file);
    assert.equal(statSync(join(stateDir, 'admin-openrc')).mode & 0o777, 0o600);
    const root = (await (await fetch(`${url}/`, { headers: { accept: 'application/json' } })).json()) as { version?: string };
    assert.equal(root.version, (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version, 'the / document names the version');
    // The services' version documents keep their published schemas; every reply names the version in a header.
    for (const path of ['/volume/', '/compute/', '/identity/', '/image/']) {
      const reply = await fetch(`${url}${path}`, { headers: { accept: 'application/json' } });
      await reply.arrayBuffer();
      assert.equal(reply.headers.get('x-pumice-version'), root.version, `${path} carries X-Pumice-Version`);
    }
    // doctor's cheap checks ran at start: the missing tool is a warning with the fix.
    assert.match(output(), /WARNING: qemu-img not found on PATH .*image uploads and conversions are refused \(501\) until it is installed: apt-get install qemu-utils/);
    const openrc = readFileSync(join(stateDir, 'admin-openrc'), 'utf8');
    const password = /^export OS_PASSWORD='([^']*)'$/m.exec(openrc)![1]!;
    const api = await ApiClient.login(url, 'admin', password, 'admin');
    const created = await api.request('POST', '/image/v2/images', { name: 'needs-qemu-img', disk_format: 'qcow2', container_format: 'bare' });
    assert.equal(created.status, 201, created.text);
    const startedMs = Date.now();
    const upload = await api.request('PUT', `/image/v2/images/${created.body.id}/file`, 'QFI\xfb not really qcow2', { 'Content-Type': 'application/octet-stream' });
    assert.equal(upload.status, 501, `a status clients do not retry: ${upload.text}`);
    assert.match(upload.text, /qemu-img is not installed on the image service host.*apt-get install qemu-utils/);
    assert.ok(Date.now() - startedMs < 10_000);
    assert.equal((await api.request('GET', `/image/v2/images/${created.body.id}`)).body.status, 'queued', 'nothing half-done: the image stays queued without data');
    // Names where IDs are expected: pumice backup create --volume NAME, as the openstack CLI resolves it.
    const volume = await api.request('POST', `/volume/v3/${api.projectId}/volumes`, { volume: { size: 1, name: 'named-for-backup' } });
    assert.equal(volume.status, 202, volume.text);
    await api.waitVolume(volume.body.volume.id, ['available']);
    const cliEnv = { ...process.env, OS_AUTH_URL: `${url}/identity/v3`, OS_USERNAME: 'admin', OS_PASSWORD: password, OS_PROJECT_NAME: 'admin', OS_USER_DOMAIN_NAME: 'Default', OS_PROJECT_DOMAIN_NAME: 'Default' };
    const cli = (args: string[]) => spawnSync(process.execPath, [join(repoRoot, 'bin', 'pumice.mjs'), 'backup', 'create', ...args], { env: cliEnv, encoding: 'utf8', timeout: 120_000 });
    const byName = cli(['--volume', 'named-for-backup', '--wait', '--interval-ms', '200']);
    assert.equal(byName.status, 0, `${byName.stdout}${byName.stderr}`);
    assert.ok(byName.stdout.includes(`of volume ${volume.body.volume.id} is being created`), byName.stdout);
    const unknown = cli(['--volume', 'no-such-volume']);
    assert.equal(unknown.status, 1, unknown.stderr);
    assert.match(unknown.stderr, /no volume with ID or name 'no-such-volume' in this project/);
    // systemctl reload: SIGHUP keeps it serving.
    proc.kill('SIGHUP');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await fetch(`${url}/identity/v3`)).status, 200);
    assert.equal(proc.exitCode, null, 'still running after SIGHUP');
  } finally {
    proc.kill('SIGTERM');
    assert.equal(await exited, 0, output());
  }
});

test('serve as an unprivileged user on a data directory it cannot write: exit 3 naming the directory, the user and the fix', () => {
  const rootOwned = join(scratch, 'root-owned');
  mkdirSync(rootOwned, { mode: 0o755 });
  const result = spawnSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, join(repoRoot, 'bin', 'pumice.mjs'), 'serve', '--data-dir', rootOwned, '--listen', ':0'], { cwd: '/', env: { PATH: process.env['PATH'], HOME: '/' }, encoding: 'utf8', timeout: 60_000 });
  assert.equal(result.status, 3, `${result.stdout}${result.stderr}`);
  assert.match(result.stderr, new RegExp(`the data directory ${rootOwned} is not writable by user nobody \\(owned by uid 0\\)\\. Fix: give it to this user \\(sudo install -d -o nobody -m 0700 ${rootOwned}\\)`));
  assert.doesNotMatch(result.stderr, /unable to open database file/);
});

test('the installer: usage, unknown options refused, and a --destdir install whose unit verifies and whose copy runs check-config', async () => {
  const script = join(repoRoot, 'scripts', 'install-service.sh');
  const help = await execFileAsync('bash', [script, '--help']);
  assert.match(help.stdout, /usage: sudo scripts\/install-service\.sh/);
  const bad = spawnSync('bash', [script, '--prefx', '/x'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown option '--prefx'/);
  // --destdir: what a package build does (no user, no systemctl): the code, the unit, a sample configuration.
  const destdir = join(scratch, 'destdir');
  const installed = await execFileAsync('bash', [script, '--destdir', destdir], { timeout: 120_000 });
  assert.match(installed.stdout, /installed: /);
  const unit = readFileSync(join(destdir, 'etc', 'systemd', 'system', 'pumice.service'), 'utf8');
  assert.match(unit, new RegExp(`^ExecStart=${process.execPath} /opt/pumice/bin/pumice\\.mjs serve --service`, 'm'));
  if (!spawnSync('systemd-analyze', ['--version']).error) {
    const verify = spawnSync('systemd-analyze', ['verify', join(destdir, 'etc', 'systemd', 'system', 'pumice.service')], { encoding: 'utf8' });
    assert.doesNotMatch(`${verify.stdout}${verify.stderr}`, /pumice\.service:\d+:/);
  }
  assert.equal(statSync(join(destdir, 'etc', 'pumice', 'pumice.conf')).mode & 0o777, 0o640);
  // The installed copy runs on its own and accepts the sample it wrote, as ExecStartPre does.
  const checked = await execFileAsync(process.execPath, [join(destdir, 'opt', 'pumice', 'bin', 'pumice.mjs'), 'check-config', '--config', join(destdir, 'etc', 'pumice', 'pumice.conf')], { cwd: '/' });
  assert.match(checked.stdout, /pumice\.conf: OK/);
});
