/**
 * `pumice image import FILE` against a running Pumice (file store): creates
 * the image, streams the file with a progress bar on stderr (a line per 10%
 * when stderr is not a terminal), prints the image on stdout; the disk
 * format is detected with qemu-img when not given; a refused upload prints
 * the API's message, removes the empty image and exits 1; bad usage exits 2.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ApiClient, repoRoot, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;

let work = '';
let pumice: PumiceProcess;
let api: ApiClient;

/** Runs `pumice image ARGS` with no OS_* variables (credentials from --data-dir) unless `osEnv` is given. */
function pumiceImage(args: string[], osEnv: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('OS_')) env[k] = v;
  Object.assign(env, osEnv);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(repoRoot, 'bin', 'pumice.mjs'), 'image', ...args], { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

function field(stdout: string, key: string): string | undefined {
  return new RegExp(`^${key}: (.*)$`, 'm').exec(stdout)?.[1];
}

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'pumice-image-cli-'));
  pumice = await startPumice();
  api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
}, { timeout: 60_000 });

after(async () => {
  if (pumice) {
    await pumice.stop();
    pumice.cleanup();
  }
  if (work) await rm(work, { recursive: true, force: true });
});

describe('pumice image import', { timeout: 180_000 }, () => {
  test('a 64 MiB raw file: progress lines per 10% on stderr, the active image on stdout, properties and options applied', async () => {
    const file = path.join(work, 'disk.img');
    const data = randomFillSync(Buffer.alloc(64 * MiB));
    await writeFile(file, data);
    const run = await pumiceImage(['import', file, '--data-dir', pumice.dataDir, '--name', 'cli-raw', '--visibility', 'private', '--property', 'hw_disk_bus=scsi', '--property', 'os_distro=debian', '--min-disk', '1', '--min-ram', '512']);
    assert.equal(run.code, 0, run.stderr);
    const id = field(run.stdout, 'id')!;
    assert.match(id, /^[0-9a-f-]{36}$/);
    assert.equal(field(run.stdout, 'status'), 'active');
    assert.equal(field(run.stdout, 'disk_format'), 'raw', 'raw detected by qemu-img');
    assert.equal(field(run.stdout, 'checksum'), createHash('md5').update(data).digest('hex'));
    const progress = run.stderr.split('\n').filter((l) => /^uploading cli-raw \[/.test(l));
    const percents = progress.map((l) => Number(/\]\s+(\d+)%/.exec(l)![1]));
    assert.ok(progress.length >= 10 && progress.length <= 11, `a line per 10%:\n${run.stderr}`);
    assert.deepEqual([...percents].sort((a, b) => a - b), percents, 'percent only grows');
    assert.equal(percents[percents.length - 1], 100);
    for (const line of progress) assert.match(line, /MiB\/64\.0 MiB [\d.]+ MB\/s ETA \S+$/);
    assert.match(run.stderr, /uploading cli-raw 64\.0 MiB in [\d.]+ s \([\d.]+ MB\/s\): done/);
    const shown = (await api.request('GET', `/image/v2/images/${id}`)).body;
    assert.equal(shown.name, 'cli-raw');
    assert.equal(shown.visibility, 'private');
    assert.equal(shown.hw_disk_bus, 'scsi');
    assert.equal(shown.os_distro, 'debian');
    assert.equal(shown.min_disk, 1);
    assert.equal(shown.min_ram, 512);
    assert.equal(shown.container_format, 'bare');
    const saved = await fetch(`${pumice.url}/image/v2/images/${id}/file`, { headers: { 'X-Auth-Token': api.token } });
    assert.ok(Buffer.from(await saved.arrayBuffer()).equals(data));
  });

  test('a qcow2 without --disk-format: qcow2 detected; credentials from OS_* variables; name from the file name', async () => {
    const file = path.join(work, 'guest.qcow2');
    await execFileAsync('qemu-img', ['create', '-q', '-f', 'qcow2', file, '256M']);
    const run = await pumiceImage(['import', file], pumice.adminEnv);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(field(run.stdout, 'name'), 'guest');
    assert.equal(field(run.stdout, 'disk_format'), 'qcow2');
    assert.equal(field(run.stdout, 'virtual_size'), String(256 * MiB));
    assert.equal(field(run.stdout, 'size'), String((await readFile(file)).length));
  });

  test('a qcow2 declared raw: the API message on stderr, exit 1, the empty image removed', async () => {
    const file = path.join(work, 'wrong.qcow2');
    await execFileAsync('qemu-img', ['create', '-q', '-f', 'qcow2', file, '16M']);
    const run = await pumiceImage(['import', file, '--disk-format', 'raw', '--name', 'cli-wrong', '--data-dir', pumice.dataDir]);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /upload refused: .*400: Image data is in qcow2 format but disk_format is 'raw'/);
    assert.match(run.stderr, /image [0-9a-f-]{36} deleted/);
    assert.equal(run.stdout, '');
    const list = (await api.request('GET', '/image/v2/images?name=cli-wrong')).body.images as unknown[];
    assert.deepEqual(list, []);
  });

  test('usage errors exit 2 and say what is wrong; a missing file and a server that is not there exit 1', async () => {
    const none = await pumiceImage(['import', '--data-dir', pumice.dataDir]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /import needs the FILE to upload/);
    const badVisibility = await pumiceImage(['import', 'x.img', '--visibility', 'everyone']);
    assert.equal(badVisibility.code, 2);
    assert.match(badVisibility.stderr, /--visibility 'everyone' is not one of public, private, shared, community/);
    const badProperty = await pumiceImage(['import', 'x.img', '--property', 'novalue']);
    assert.equal(badProperty.code, 2);
    assert.match(badProperty.stderr, /--property 'novalue' is not KEY=VALUE/);
    const missing = await pumiceImage(['import', path.join(work, 'nope.img'), '--data-dir', pumice.dataDir, '--disk-format', 'raw']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot read .*nope\.img/);
    const file = path.join(work, 'small.img');
    await writeFile(file, Buffer.alloc(4096, 1));
    const unreachable = await pumiceImage(['import', file, '--disk-format', 'raw'], { ...pumice.adminEnv, OS_AUTH_URL: 'http://127.0.0.1:9/identity/v3' });
    assert.equal(unreachable.code, 1);
    assert.match(unreachable.stderr, /cannot reach the identity service at http:\/\/127\.0\.0\.1:9\/identity\/v3/);
  });
});
