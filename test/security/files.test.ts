/**
 * Issue 12, file findings, reproduced as another local user (`runuser -u nobody`): with a data
 * directory and a local_volume_dir that an operator made with a plain mkdir (0755), the
 * database, its WAL and the volume files are 0600 and unreadable to others, Pumice warns at
 * start, and `doctor` reports the unsafe directories.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ApiClient, repoRoot, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const isRoot = process.getuid?.() === 0;

async function asNobody(args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await execFileAsync('runuser', ['-u', 'nobody', '--', ...args], { timeout: 10_000 });
    return { code: 0, out: stdout + stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

const mode = (path: string) => statSync(path).mode & 0o777;

describe('private files', { skip: isRoot ? false : 'runuser needs root' }, () => {
  let root: string;
  let dataDir: string;
  let volumeDir: string;
  let pumice: PumiceProcess;
  let volumeId: string;

  before(async () => {
    // A parent others can traverse, as /srv or /var/lib are, so only the modes below protect.
    root = mkdtempSync(join(tmpdir(), 'pumice-sec-files-'));
    chmodSync(root, 0o755);
    dataDir = join(root, 'data');
    volumeDir = join(root, 'volumes');
    mkdirSync(dataDir, { mode: 0o755 });
    mkdirSync(volumeDir, { mode: 0o755 });
    chmodSync(dataDir, 0o755);
    chmodSync(volumeDir, 0o755);
    const config = `[DEFAULT]\nenabled_backends = local\n[local]\nvolume_driver = local\nlocal_volume_dir = ${volumeDir}\n`;
    writeFileSync(join(root, 'pumice.conf'), config);
    pumice = await startPumice({ dataDir, config });
    const api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const r = await api.request('POST', `/volume/v3/${api.projectId}/volumes`, { volume: { size: 1, name: 'secret-data' } });
    assert.equal(r.status, 202, r.text);
    volumeId = r.body.volume.id;
    await api.waitVolume(volumeId, ['available']);
  });

  after(async () => {
    await pumice?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  test('start-up warns about group/world-accessible directories, naming the fix', () => {
    // oslo.log lines: TIMESTAMP PID WARNING module [req] message.
    assert.match(pumice.output(), new RegExp(`WARNING .*the data directory ${dataDir} has mode 0755.*chmod 700`));
    assert.match(pumice.output(), new RegExp(`WARNING .*\\[local\\] local_volume_dir ${volumeDir} has mode 0755`));
  });

  test('the database, its WAL, the volume file and openrc are 0600; directories Pumice makes are 0700', () => {
    for (const name of readdirSync(dataDir)) {
      const path = join(dataDir, name);
      const st = statSync(path);
      if (st.isDirectory()) assert.equal(mode(path), 0o700, `${path} is ${mode(path).toString(8)}`);
      else if (name !== 'pumice.conf') assert.equal(mode(path) & 0o077, 0, `${path} is ${mode(path).toString(8)}`);
    }
    assert.equal(mode(join(volumeDir, `volume-${volumeId}`)), 0o600);
  });

  test('another local user cannot read the database or the volume', async () => {
    for (const path of [join(dataDir, 'pumice.db'), join(dataDir, 'pumice.db-wal'), join(volumeDir, `volume-${volumeId}`), join(dataDir, 'admin-openrc')]) {
      const r = await asNobody(['head', '-c', '16', path]);
      assert.notEqual(r.code, 0, `nobody read ${path}`);
      assert.match(r.out, /Permission denied/);
    }
  });

  test('doctor reports the unsafe directory modes and an NBD listener beyond loopback without TLS', async () => {
    const doctor = async (name: string, text: string) => {
      const conf = join(root, name);
      writeFileSync(conf, text);
      return execFileAsync(process.execPath, [join(repoRoot, 'bin', 'pumice.mjs'), 'doctor', '--data-dir', dataDir, '--config', conf], { timeout: 60_000 }).then(
        (x) => ({ code: 0, out: x.stdout }),
        (e: { code?: number; stdout?: string }) => ({ code: e.code ?? 1, out: e.stdout ?? '' }),
      );
    };
    const backend = `enabled_backends = local\n[local]\nvolume_driver = local\nlocal_volume_dir = ${volumeDir}\n`;
    const modes = await doctor('doctor.conf', `[DEFAULT]\n${backend}`);
    assert.notEqual(modes.code, 0);
    assert.match(modes.out, /FAIL\s+permissions of the data directory: .*mode 0755.*chmod 700/);
    assert.match(modes.out, /FAIL\s+permissions of \[local\] local_volume_dir/);
    // An NBD listener beyond loopback without TLS is a configuration error now (serve refuses it too), named with the fix.
    const nbd = await doctor('doctor-nbd.conf', `[DEFAULT]\nnbd_listen_host = 0.0.0.0\n${backend}`);
    assert.notEqual(nbd.code, 0);
    assert.match(nbd.out, /FAIL\s+configuration: .*doctor-nbd\.conf:2: \[DEFAULT\] nbd_listen_host = 0\.0\.0\.0 listens beyond loopback without TLS: set \[DEFAULT\] nbd_tls = true/);
  });
});
