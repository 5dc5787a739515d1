/**
 * End-to-end data path of the local backend: a real `pumice serve`, the
 * Cinder attach flow over HTTP, and the volume's bytes reached through
 * Pumice's NBD server with real consumers (qemu-io, nbdcopy, nbdinfo).
 *
 * Proves that what a consumer writes through the connection info is what a
 * later reader (another connection, a snapshot, a volume made from the
 * snapshot, a revert) sees; that terminate_connection really withdraws the
 * export; and that the read-only flag is enforced on the wire.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiClient, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const toolTimeoutMs = 60_000;

interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a tool and resolves with its exit code and output (never rejects on a non-zero exit). */
function run(cmd: string, args: string[]): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: toolTimeoutMs, maxBuffer: 16 * MiB }, (error, stdout, stderr) => {
      if (error && typeof error.code !== 'number') return reject(new Error(`${cmd} ${args.join(' ')}: ${error.message}\n${stderr}`));
      resolve({ code: error ? (error.code as number) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

interface Connection {
  host: string;
  port: number;
  export_name: string;
  uri: string;
  access_mode: string;
}

const nbdUri = (c: Connection) => `nbd://${c.host}:${c.port}/${c.export_name}`;

/** `qemu-io -f raw -c CMD...` against the export; asserts exit 0 and no error text. */
async function qemuIo(c: Connection, commands: string[], readOnly = false): Promise<string> {
  const args = ['-f', 'raw', ...(readOnly ? ['-r'] : []), ...commands.flatMap((cmd) => ['-c', cmd]), nbdUri(c)];
  const r = await run('qemu-io', args);
  const out = r.stdout + r.stderr;
  assert.equal(r.code, 0, `qemu-io ${args.join(' ')} exited ${r.code}:\n${out}`);
  assert.doesNotMatch(out, /fail|error|mismatch/i, `qemu-io ${args.join(' ')}:\n${out}`);
  return out;
}

/** Writes `pattern` at each [offset, length] and checks qemu-io reports every write. */
async function writePattern(c: Connection, pattern: number, ranges: [number, number][]): Promise<void> {
  const out = await qemuIo(c, ranges.map(([off, len]) => `write -P 0x${pattern.toString(16)} ${off} ${len}`));
  const wrote = [...out.matchAll(/^wrote (\d+)\/(\d+) bytes at offset (\d+)/gm)].map((m) => [Number(m[3]), Number(m[1])]);
  assert.deepEqual(wrote, ranges, `qemu-io write output:\n${out}`);
}

/** Reads each range back with `read -P` (qemu-io exits 1 and prints "Pattern verification failed" on a mismatch). */
async function verifyPattern(c: Connection, pattern: number, ranges: [number, number][]): Promise<void> {
  const out = await qemuIo(c, ranges.map(([off, len]) => `read -P 0x${pattern.toString(16)} ${off} ${len}`), true);
  const read = [...out.matchAll(/^read (\d+)\/(\d+) bytes at offset (\d+)/gm)].map((m) => [Number(m[3]), Number(m[1])]);
  assert.deepEqual(read, ranges, `qemu-io read output:\n${out}`);
}

/** A long-lived `qemu-io` session on one NBD connection (commands on stdin, one at a time). */
class QemuIoSession {
  private output = '';
  private readonly proc;
  private readonly exited: Promise<number | null>;
  constructor(uri: string) {
    this.proc = spawn('qemu-io', ['-f', 'raw', uri], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stdout.on('data', (d: Buffer) => (this.output += d.toString()));
    this.proc.stderr.on('data', (d: Buffer) => (this.output += d.toString()));
    this.exited = new Promise((r) => this.proc.once('exit', (code) => r(code)));
  }
  /** Sends one command and resolves with what qemu-io printed until its next prompt (or its exit). */
  async command(cmd: string, timeoutMs = 20_000): Promise<string> {
    const start = this.output.length;
    this.proc.stdin.write(`${cmd}\n`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const fresh = this.output.slice(start);
      if (/qemu-io> $/.test(fresh) || this.proc.exitCode !== null) return fresh;
      if (Date.now() > deadline) throw new Error(`qemu-io '${cmd}' gave no prompt in ${timeoutMs} ms: ${fresh}`);
      await new Promise((res) => setTimeout(res, 20));
    }
  }
  /** Waits for the first prompt (the connection is open). */
  async ready(): Promise<void> {
    const deadline = Date.now() + 20_000;
    while (!this.output.includes('qemu-io> ')) {
      if (this.proc.exitCode !== null) throw new Error(`qemu-io exited ${this.proc.exitCode}: ${this.output}`);
      if (Date.now() > deadline) throw new Error(`qemu-io did not start: ${this.output}`);
      await new Promise((res) => setTimeout(res, 20));
    }
  }
  async close(): Promise<void> {
    if (this.proc.exitCode === null) {
      this.proc.stdin.end('quit\n');
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
      await this.exited;
      clearTimeout(timer);
    }
  }
}

/**
 * A client that ignores the export's read-only flag: fixed-newstyle handshake
 * with NBD_OPT_EXPORT_NAME, one NBD_CMD_WRITE, and the error of its reply
 * (0 = written, 1 = EPERM). Proves the server, not the client, enforces ro.
 */
function rawNbdWrite(c: Connection, offset: number, data: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(c.port, c.host);
    let buf = Buffer.alloc(0);
    let stage: 'greeting' | 'export' | 'reply' = 'greeting';
    const timer = setTimeout(() => finish(new Error(`raw NBD client: no answer in stage ${stage}`)), 10_000);
    const finish = (result: number | Error) => {
      clearTimeout(timer);
      socket.destroy();
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    socket.on('error', finish);
    socket.on('close', () => finish(new Error(`raw NBD client: connection closed in stage ${stage}`)));
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (stage === 'greeting' && buf.length >= 18) {
        assert.equal(buf.subarray(0, 16).toString('latin1'), 'NBDMAGICIHAVEOPT');
        buf = buf.subarray(18);
        const name = Buffer.from(c.export_name);
        const option = Buffer.alloc(4 + 16);
        option.writeUInt32BE(0b11, 0); // FIXED_NEWSTYLE | NO_ZEROES
        option.write('IHAVEOPT', 4, 'latin1');
        option.writeUInt32BE(1, 12); // NBD_OPT_EXPORT_NAME
        option.writeUInt32BE(name.length, 16);
        socket.write(Buffer.concat([option, name]));
        stage = 'export';
      }
      if (stage === 'export' && buf.length >= 10) {
        buf = buf.subarray(10); // size (8) + transmission flags (2); no zero padding (NO_ZEROES)
        const header = Buffer.alloc(28);
        header.writeUInt32BE(0x25609513, 0);
        header.writeUInt16BE(0, 4);
        header.writeUInt16BE(1, 6); // NBD_CMD_WRITE
        header.write('rawwrite', 8, 'latin1');
        header.writeBigUInt64BE(BigInt(offset), 16);
        header.writeUInt32BE(data.length, 24);
        socket.write(Buffer.concat([header, data]));
        stage = 'reply';
      }
      if (stage === 'reply' && buf.length >= 16) {
        assert.equal(buf.readUInt32BE(0), 0x67446698, 'simple reply magic');
        finish(buf.readUInt32BE(4));
      }
    });
  });
}

/** Reads `length` bytes at `offset` of a local file. */
async function fileBytes(path: string, offset: number, length: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buf, 0, length, offset);
    assert.equal(bytesRead, length, `short read of ${path} at ${offset}`);
    return buf;
  } finally {
    await handle.close();
  }
}

function assertFilled(buf: Buffer, value: number, what: string): void {
  const bad = buf.findIndex((b) => b !== value);
  assert.equal(bad, -1, `${what}: byte ${bad} is 0x${buf[bad]?.toString(16)}, expected 0x${value.toString(16)}`);
}

describe('local backend data path through NBD', { timeout: 120_000 }, () => {
  let pumice: PumiceProcess;
  let api: ApiClient;
  let scratch: string;
  const createdVolumes: string[] = [];

  const v = (path: string) => `${api.volumeUrl}${path}`;
  const action = async (id: string, body: unknown, headers: Record<string, string> = {}) => api.request('POST', v(`/volumes/${id}/action`), body, headers);
  const expectAction = async (id: string, body: unknown, status: number, headers: Record<string, string> = {}) => {
    const r = await action(id, body, headers);
    assert.equal(r.status, status, `${JSON.stringify(body)} on ${id}: ${r.status} ${r.text}`);
    return r;
  };
  const createVolume = async (body: Record<string, unknown>): Promise<string> => {
    const r = await api.request('POST', v('/volumes'), { volume: body });
    assert.equal(r.status, 202, r.text);
    createdVolumes.push(r.body.volume.id);
    return r.body.volume.id as string;
  };
  const showVolume = async (id: string) => {
    const r = await api.request('GET', v(`/volumes/${id}`));
    assert.equal(r.status, 200, r.text);
    return r.body.volume;
  };
  const createSnapshot = async (volumeId: string, force: boolean): Promise<string> => {
    const r = await api.request('POST', v('/snapshots'), { snapshot: { volume_id: volumeId, force, name: 'e2e' } });
    assert.equal(r.status, 202, r.text);
    const id = r.body.snapshot.id as string;
    const deadline = Date.now() + 30_000;
    for (;;) {
      const s = await api.request('GET', v(`/snapshots/${id}`));
      assert.equal(s.status, 200, s.text);
      if (s.body.snapshot.status === 'available') return id;
      assert.notEqual(s.body.snapshot.status, 'error', s.text);
      assert.ok(Date.now() < deadline, `snapshot ${id} stuck in ${s.body.snapshot.status}`);
      await new Promise((res) => setTimeout(res, 50));
    }
  };
  const connect = async (id: string): Promise<Connection> => {
    const r = await expectAction(id, { 'os-initialize_connection': { connector: { host: 'test', initiator: 'x' } } }, 200);
    const info = r.body.connection_info;
    assert.equal(info.driver_volume_type, 'nbd');
    return info.data as Connection;
  };

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'pumice-data-path-'));
    pumice = await startPumice({ dataDir: mkdtempSync(join(tmpdir(), 'pumice-e2e-data-')) });
    api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  });

  after(async () => {
    try {
      if (api) {
        for (const id of createdVolumes.reverse()) {
          const vol = await api.request('GET', v(`/volumes/${id}`));
          if (vol.status !== 200) continue;
          if (vol.body.volume.status === 'in-use') {
            await action(id, { 'os-terminate_connection': { connector: { host: 'test' } } });
            await action(id, { 'os-detach': {} });
          }
          await api.request('DELETE', v(`/volumes/${id}?cascade=true`));
        }
        for (const id of createdVolumes) await api.waitVolume(id, ['deleted', 'error_deleting'], 30_000).catch(() => undefined);
      }
    } finally {
      if (pumice) {
        await pumice.stop();
        pumice.cleanup();
      }
      if (scratch) rmSync(scratch, { recursive: true, force: true });
    }
  });

  // Shared across the ordered tests below.
  let volumeId = '';
  let conn: Connection;
  let snapshotId = '';
  const first: [number, number][] = [[0, 1 * MiB], [512 * MiB, 64 * 1024], [GiB - 4096, 4096]];
  const pattern1 = 0x5a;
  const pattern1b = 0xa5;
  const later: [number, number][] = [[0, 1 * MiB], [512 * MiB, 64 * 1024]];
  const pattern2 = 0x3c;

  test('attach flow: reserve, initialize_connection, attach → in-use with one attachment', async () => {
    volumeId = await createVolume({ size: 1, name: 'e2e-data' });
    const available = await api.waitVolume(volumeId, ['available', 'error']);
    assert.equal(available.status, 'available');
    await expectAction(volumeId, { 'os-reserve': {} }, 202);
    assert.equal((await showVolume(volumeId)).status, 'attaching');
    conn = await connect(volumeId);
    assert.equal(typeof conn.host, 'string');
    assert.ok(conn.host.length > 0);
    assert.ok(Number.isInteger(conn.port) && conn.port > 0 && conn.port < 65536, `port ${conn.port}`);
    // The export name is a per-connection secret (256 bits), not derived from the volume id.
    assert.match(conn.export_name, /^[A-Za-z0-9_-]{43}$/);
    assert.ok(!conn.export_name.includes(volumeId));
    assert.equal(conn.access_mode, 'rw');
    assert.equal(conn.uri, nbdUri(conn));
    await expectAction(volumeId, { 'os-attach': { mountpoint: '/dev/vdb', instance_uuid: '11111111-2222-3333-4444-555555555555' } }, 202);
    const vol = await showVolume(volumeId);
    assert.equal(vol.status, 'in-use');
    assert.equal(vol.attachments.length, 1);
    assert.equal(vol.attachments[0].device, '/dev/vdb');
    assert.equal(vol.attachments[0].volume_id, volumeId);
    assert.equal(vol.attachments[0].server_id, '11111111-2222-3333-4444-555555555555');
  });

  test('nbdinfo sees a 1 GiB writable export', async () => {
    const r = await run('nbdinfo', ['--json', nbdUri(conn)]);
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout);
    assert.equal(info.exports[0]['export-size'], GiB);
    assert.equal(info.exports[0]['is_read_only'], false);
  });

  test('written patterns read back through qemu-io and nbdcopy', async () => {
    await writePattern(conn, pattern1, first.slice(0, 1));
    await writePattern(conn, pattern1b, first.slice(1));
    await verifyPattern(conn, pattern1, first.slice(0, 1));
    await verifyPattern(conn, pattern1b, first.slice(1));
    // A wrong pattern must make qemu-io fail: the check above would catch a server that returns garbage.
    const wrong = await run('qemu-io', ['-f', 'raw', '-r', '-c', `read -P 0x11 0 4k`, nbdUri(conn)]);
    assert.equal(wrong.code, 1, `qemu-io with a wrong pattern exited ${wrong.code}: ${wrong.stdout}${wrong.stderr}`);
    assert.match(wrong.stdout + wrong.stderr, /Pattern verification failed/);
    // Never-written areas read as zeros.
    await verifyPattern(conn, 0, [[1 * MiB, 1 * MiB], [256 * MiB, 64 * 1024]]);

    const copy = join(scratch, 'whole.raw');
    const r = await run('nbdcopy', [nbdUri(conn), copy]);
    assert.equal(r.code, 0, `nbdcopy: ${r.stdout}${r.stderr}`);
    const handle = await open(copy, 'r');
    const size = (await handle.stat()).size;
    await handle.close();
    assert.equal(size, GiB);
    assertFilled(await fileBytes(copy, 0, MiB), pattern1, 'nbdcopy at 0');
    assertFilled(await fileBytes(copy, 512 * MiB, 64 * 1024), pattern1b, 'nbdcopy at 512M');
    assertFilled(await fileBytes(copy, GiB - 4096, 4096), pattern1b, 'nbdcopy at the last 4k');
    assertFilled(await fileBytes(copy, MiB, MiB), 0, 'nbdcopy after the first write');
    assertFilled(await fileBytes(copy, 512 * MiB - 4096, 4096), 0, 'nbdcopy before 512M');
    assertFilled(await fileBytes(copy, 512 * MiB + 64 * 1024, 4096), 0, 'nbdcopy after 512M+64k');
    rmSync(copy);
  });

  test('a snapshot keeps the bytes of its time; a volume made from it holds them', async () => {
    const refused = await api.request('POST', v('/snapshots'), { snapshot: { volume_id: volumeId } });
    // Pumice reports a wrong state as 409 (Cinder: 400 InvalidVolume); either way it is refused.
    assert.ok([400, 409].includes(refused.status), `snapshot of an in-use volume without force: ${refused.status} ${refused.text}`);
    snapshotId = await createSnapshot(volumeId, true);
    await writePattern(conn, pattern2, later);
    await verifyPattern(conn, pattern2, later);

    const fromSnap = await createVolume({ snapshot_id: snapshotId, name: 'e2e-from-snapshot' });
    const vol = await api.waitVolume(fromSnap, ['available', 'error']);
    assert.equal(vol.status, 'available');
    assert.equal(vol.size, 1);
    assert.equal(vol.snapshot_id, snapshotId);
    const c = await connect(fromSnap);
    assert.match(c.export_name, /^[A-Za-z0-9_-]{43}$/);
    assert.notEqual(c.export_name, conn.export_name);
    await verifyPattern(c, pattern1, first.slice(0, 1));
    await verifyPattern(c, pattern1b, first.slice(1));
    await expectAction(fromSnap, { 'os-terminate_connection': { connector: { host: 'test' } } }, 202);
    // The source still has the later write.
    await verifyPattern(conn, pattern2, later);
  });

  test('terminate_connection withdraws the export and cuts live connections; detach makes the volume available', async () => {
    const live = new QemuIoSession(nbdUri(conn));
    try {
      await live.ready();
      assert.match(await live.command(`read -P 0x${pattern2.toString(16)} 0 4k`), /^read 4096\/4096 bytes at offset 0$/m);
      await expectAction(volumeId, { 'os-begin_detaching': {} }, 202);
      assert.equal((await showVolume(volumeId)).status, 'detaching');
      await expectAction(volumeId, { 'os-terminate_connection': { connector: { host: 'test', initiator: 'x' } } }, 202);
      // The consumer that was connected can no longer write to the volume.
      const afterTerminate = await live.command('write -P 0x66 0 4k');
      assert.doesNotMatch(afterTerminate, /^wrote /m, `write on a connection to a terminated export succeeded: ${afterTerminate}`);
    } finally {
      await live.close();
    }
    const gone = await run('nbdinfo', [nbdUri(conn)]);
    assert.notEqual(gone.code, 0, `nbdinfo on a terminated export succeeded: ${gone.stdout}`);
    const io = await run('qemu-io', ['-f', 'raw', '-r', '-c', 'read 0 4k', nbdUri(conn)]);
    assert.notEqual(io.code, 0, `qemu-io on a terminated export succeeded: ${io.stdout}`);
    await expectAction(volumeId, { 'os-detach': {} }, 202);
    const vol = await showVolume(volumeId);
    assert.equal(vol.status, 'available');
    assert.deepEqual(vol.attachments, []);
  });

  test('revert to snapshot (3.40) restores the snapshot bytes', async () => {
    const old = await action(volumeId, { revert: { snapshot_id: snapshotId } });
    assert.equal(old.status, 404, `revert without microversion 3.40: ${old.status} ${old.text}`);
    // A consumer still connected from before the revert must not write into a file the volume no longer uses.
    const before = await connect(volumeId);
    const live = new QemuIoSession(nbdUri(before));
    let lateWrite = '';
    try {
      await live.ready();
      await expectAction(volumeId, { revert: { snapshot_id: snapshotId } }, 202, { 'OpenStack-API-Version': 'volume 3.40' });
      const vol = await api.waitVolume(volumeId, ['available', 'error']);
      assert.equal(vol.status, 'available');
      lateWrite = await live.command('write -P 0x42 4M 4k');
    } finally {
      await live.close();
    }
    const snap = await api.request('GET', v(`/snapshots/${snapshotId}`));
    assert.equal(snap.body.snapshot.status, 'available');
    const c = await connect(volumeId);
    await verifyPattern(c, pattern1, first.slice(0, 1));
    await verifyPattern(c, pattern1b, first.slice(1));
    // Either the old connection was cut, or what it wrote is in the volume: an acknowledged write is never lost.
    if (/^wrote 4096\/4096 bytes/m.test(lateWrite)) await verifyPattern(c, 0x42, [[4 * MiB, 4096]]);
    await expectAction(volumeId, { 'os-terminate_connection': { connector: { host: 'test' } } }, 202);
  });

  test('the read-only flag gives access_mode ro and NBD writes fail', async () => {
    const ro = await createVolume({ size: 1, name: 'e2e-readonly' });
    await api.waitVolume(ro, ['available']);
    // Write something first while it is still writable.
    const rw = await connect(ro);
    assert.equal(rw.access_mode, 'rw');
    await writePattern(rw, 0x77, [[0, 64 * 1024]]);
    await expectAction(ro, { 'os-terminate_connection': { connector: { host: 'test' } } }, 202);

    await expectAction(ro, { 'os-update_readonly_flag': { readonly: true } }, 202);
    await expectAction(ro, { 'os-reserve': {} }, 202);
    const c = await connect(ro);
    assert.equal(c.access_mode, 'ro');
    const info = await run('nbdinfo', ['--json', nbdUri(c)]);
    assert.equal(info.code, 0, info.stderr);
    assert.equal(JSON.parse(info.stdout).exports[0]['is_read_only'], true);
    const refused = await action(ro, { 'os-attach': { mountpoint: '/dev/vdc', mode: 'rw' } });
    assert.equal(refused.status, 400, `rw attach of a read-only volume: ${refused.text}`);
    await expectAction(ro, { 'os-attach': { mountpoint: '/dev/vdc', mode: 'ro' } }, 202);
    assert.equal((await showVolume(ro)).status, 'in-use');

    const write = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x99 0 64k', nbdUri(c)]);
    assert.notEqual(write.code, 0, `write to a read-only export succeeded: ${write.stdout}${write.stderr}`);
    // A client that ignores the read-only flag gets EPERM, and the bytes stay as they were.
    assert.equal(await rawNbdWrite(c, 0, Buffer.alloc(4096, 0x99)), 1, 'NBD_CMD_WRITE on a read-only export must fail with EPERM');
    await verifyPattern(c, 0x77, [[0, 64 * 1024]]);
    // The same raw client can write to a writable export (so the EPERM above is about read-only, not the client).
    const other = await connect(volumeId);
    assert.equal(await rawNbdWrite(other, 8 * MiB, Buffer.alloc(4096, 0x31)), 0);
    await verifyPattern(other, 0x31, [[8 * MiB, 4096]]);
    await expectAction(volumeId, { 'os-terminate_connection': { connector: { host: 'test' } } }, 202);

    await expectAction(ro, { 'os-terminate_connection': { connector: { host: 'test' } } }, 202);
    await expectAction(ro, { 'os-detach': {} }, 202);
    assert.equal((await showVolume(ro)).status, 'available');
  });
});
