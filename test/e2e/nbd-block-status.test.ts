/**
 * Issue 14, NBD row: a local volume written sparsely through its NBD export (qemu-io writes at two
 * offsets of a fresh 1 GiB volume) is seen as two data extents and holes by real clients, through
 * structured replies and base:allocation: `nbdinfo --map`, `qemu-img map --output=json`, and
 * `nbdcopy` into a file, which gets the same bytes and stays sparse (its own SEEK_DATA / SEEK_HOLE
 * extents and allocated blocks). The same over a TLS-PSK export.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { extentProbe } from '../../src/nbd/extents.ts';
import { ApiClient, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** What qemu-io writes: two regions of a 1 GiB volume, the rest never written. */
const regions = [
  { offset: 4 * MiB, length: 64 * KiB, pattern: 0x11 },
  { offset: 300 * MiB, length: 1 * MiB, pattern: 0x22 },
];

async function run(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync(cmd, args, { timeout: 60_000, maxBuffer: 16 * MiB });
    return stdout;
  } catch (error) {
    const e = error as { message: string; stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

interface Extent {
  offset: number;
  length: number;
  data: boolean;
}

/** Consecutive extents of the same kind merged (clients may split where the server did not). */
function merge(extents: Extent[]): Extent[] {
  const out: Extent[] = [];
  for (const e of extents) {
    const last = out[out.length - 1];
    if (last && last.data === e.data && last.offset + last.length === e.offset) last.length += e.length;
    else out.push({ ...e });
  }
  return out;
}

/** The extents the two writes should leave: data exactly where written, holes elsewhere. */
function expectedExtents(size: number): Extent[] {
  const out: Extent[] = [];
  let at = 0;
  for (const r of regions) {
    out.push({ offset: at, length: r.offset - at, data: false }, { offset: r.offset, length: r.length, data: true });
    at = r.offset + r.length;
  }
  out.push({ offset: at, length: size - at, data: false });
  return out;
}

/** `nbdinfo --map` lines: offset, length, type number, description ("data" / "hole,zero"). */
function parseNbdinfoMap(out: string): Extent[] {
  return out
    .trim()
    .split('\n')
    .map((line) => {
      const [offset, length, type] = line.trim().split(/\s+/);
      // base:allocation: bit 0 NBD_STATE_HOLE, bit 1 NBD_STATE_ZERO.
      return { offset: Number(offset), length: Number(length), data: (Number(type) & 1) === 0 };
    });
}

async function checkVolumeSeenSparse(uri: string, qemuImgArgs: string[], scratch: string): Promise<void> {
  // nbdinfo --map: base:allocation extents match what was written.
  const map = parseNbdinfoMap(await run('nbdinfo', ['--map', uri]));
  assert.deepEqual(merge(map), expectedExtents(GiB), `nbdinfo --map:\n${JSON.stringify(map)}`);
  const info = await run('nbdinfo', [uri]);
  assert.match(info, /using structured packets/);
  assert.match(info, /base:allocation/);

  // qemu-img map over NBD agrees.
  {
    const qmap = JSON.parse(await run('qemu-img', ['map', '--output=json', ...qemuImgArgs])) as Array<{ start: number; length: number; data: boolean; zero: boolean }>;
    assert.deepEqual(
      merge(qmap.map((e) => ({ offset: e.start, length: e.length, data: e.data }))),
      expectedExtents(GiB),
      `qemu-img map:\n${JSON.stringify(qmap)}`,
    );
    for (const e of qmap) assert.equal(e.zero, !e.data, `extent at ${e.start}: zero ${e.zero}, data ${e.data}`);
  }

  // nbdcopy into a file: the same bytes, and the file keeps the holes.
  const copy = join(scratch, 'copy.raw');
  rmSync(copy, { force: true });
  await run('nbdcopy', [uri, copy]);
  assert.equal(statSync(copy).size, GiB);
  const fh = await open(copy, 'r');
  try {
    const probe = extentProbe()!;
    const extents = await probe.fileExtents(fh.fd, 0, GiB, 64);
    let at = 0;
    const fileExtents = extents.map((e) => {
      const x = { offset: at, length: e.length, data: !e.hole };
      at += e.length;
      return x;
    });
    // The file system may allocate in larger blocks than was written, never whole gigabytes.
    const dataBytes = fileExtents.filter((e) => e.data).reduce((s, e) => s + e.length, 0);
    assert.ok(dataBytes >= 64 * KiB + MiB && dataBytes <= 8 * MiB, `the copy has ${dataBytes} bytes of data extents: ${JSON.stringify(fileExtents)}`);
    assert.ok(statSync(copy).blocks * 512 <= 8 * MiB, `the copy allocates ${statSync(copy).blocks * 512} bytes`);
    for (const r of regions) {
      const buf = Buffer.alloc(r.length + 8192);
      await fh.read(buf, 0, buf.length, r.offset - 4096);
      assert.ok(buf.subarray(0, 4096).equals(Buffer.alloc(4096)), `bytes before region at ${r.offset} are not zero`);
      assert.ok(buf.subarray(4096, 4096 + r.length).equals(Buffer.alloc(r.length, r.pattern)), `region at ${r.offset} differs`);
      assert.ok(buf.subarray(4096 + r.length).equals(Buffer.alloc(4096)), `bytes after region at ${r.offset} are not zero`);
    }
  } finally {
    await fh.close();
  }
}

function qemuIoWrites(): string[] {
  return regions.flatMap((r) => ['-c', `write -P 0x${r.pattern.toString(16)} ${r.offset} ${r.length}`]);
}

describe('NBD block status through Pumice (no TLS)', () => {
  let pumice: PumiceProcess;
  let api: ApiClient;
  let scratch: string;

  before(async () => {
    assert.ok(extentProbe(), 'the native addon with fileExtents is not built: run npm run build:native');
    scratch = mkdtempSync(join(tmpdir(), 'pumice-nbd-bs-'));
    pumice = await startPumice();
    api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  });

  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  test('a volume written at two offsets: nbdinfo --map, qemu-img map and nbdcopy see two data extents and holes', async () => {
    const r = await api.request('POST', `/volume/v3/${api.projectId}/volumes`, { volume: { size: 1, name: 'nbd-bs' } });
    assert.equal(r.status, 202, r.text);
    const volumeId = r.body.volume.id as string;
    await api.waitVolume(volumeId, ['available']);
    const ci = await api.request('POST', `/volume/v3/${api.projectId}/volumes/${volumeId}/action`, { 'os-initialize_connection': { connector: { host: 'h1' } } });
    assert.equal(ci.status, 200, ci.text);
    const c = ci.body.connection_info.data as { uri: string; host: string; port: number; export_name: string };
    // A fresh volume is one hole.
    assert.deepEqual(merge(parseNbdinfoMap(await run('nbdinfo', ['--map', c.uri]))), [{ offset: 0, length: GiB, data: false }]);
    await run('qemu-io', ['-f', 'raw', ...qemuIoWrites(), c.uri]);
    await checkVolumeSeenSparse(c.uri, ['--image-opts', `driver=nbd,server.type=inet,server.host=${c.host},server.port=${c.port},export=${c.export_name}`], scratch);
  });
});

describe('NBD block status through Pumice with TLS-PSK', () => {
  let pumice: PumiceProcess;
  let api: ApiClient;
  let scratch: string;

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'pumice-nbd-bs-psk-'));
    pumice = await startPumice({ config: '[DEFAULT]\nnbd_tls = true\n' });
    api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  });

  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  test('the same through a TLS-PSK export: nbdinfo --map, qemu-img map and nbdcopy', async () => {
    const r = await api.request('POST', `/volume/v3/${api.projectId}/volumes`, { volume: { size: 1, name: 'nbd-bs-psk' } });
    assert.equal(r.status, 202, r.text);
    const volumeId = r.body.volume.id as string;
    await api.waitVolume(volumeId, ['available']);
    const ci = await api.request('POST', `/volume/v3/${api.projectId}/volumes/${volumeId}/action`, { 'os-initialize_connection': { connector: { host: 'h1' } } });
    assert.equal(ci.status, 200, ci.text);
    const c = ci.body.connection_info.data as { host: string; port: number; export_name: string; tls_psk_identity: string; tls_psk_key: string };
    const pskFile = join(scratch, 'keys.psk');
    writeFileSync(pskFile, `${c.tls_psk_identity}:${c.tls_psk_key}\n`, { mode: 0o600 });
    const uri = `nbds://${c.tls_psk_identity}@${c.host}:${c.port}/${c.export_name}?tls-psk-file=${pskFile}`;
    const tls = `tls-creds-psk,id=tls0,endpoint=client,dir=${scratch},username=${c.tls_psk_identity}`;
    const blockdev = `driver=nbd,server.type=inet,server.host=${c.host},server.port=${c.port},export=${c.export_name},tls-creds=tls0`;
    await run('qemu-io', ['--object', tls, '--image-opts', blockdev, ...qemuIoWrites()]);
    await checkVolumeSeenSparse(uri, ['--object', tls, '--image-opts', blockdev], scratch);
  });
});
