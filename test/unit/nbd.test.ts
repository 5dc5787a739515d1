/**
 * NBD server tests against real consumers (qemu-io, nbdcopy, nbdinfo from
 * qemu-utils / libnbd-bin) plus a minimal raw-socket client for the corners
 * those tools never exercise (garbage, split chunks, pipelining, EPERM/EINVAL).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { NbdTestClient as RawClient } from '../helpers/nbd-client.ts';
import { NbdServer, type NbdExport } from '../../src/nbd/server.js';
import {
  NBD_CMD_DISC,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_EPERM,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_IHAVEOPT,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_LIST,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_REP_ACK,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
} from '../../src/nbd/protocol.js';

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;
const exportBytes = 64 * MiB;
const toolTimeoutMs = 20_000;

async function tool(cmd: string, args: string[]): Promise<string> {
  const { stdout, stderr } = await execFileAsync(cmd, args, { timeout: toolTimeoutMs, maxBuffer: 16 * MiB });
  return stdout + stderr;
}

/** Runs a tool expected to fail; resolves with its combined output. */
async function toolFailure(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await tool(cmd, args);
    assert.fail(`${cmd} ${args.join(' ')} unexpectedly succeeded: ${out}`);
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    const e = err as { stdout?: string; stderr?: string };
    return `${e.stdout ?? ''}${e.stderr ?? ''}`;
  }
}

/** Some qemu-io versions exit 0 even when a command fails, so also check its output. */
async function qemuIo(url: string, command: string, extraArgs: string[] = []): Promise<string> {
  const out = await tool('qemu-io', [...extraArgs, '-f', 'raw', '-c', command, url]);
  assert.doesNotMatch(out, /Pattern verification failed|failed:|error/i, `qemu-io ${command}: ${out}`);
  return out;
}

async function readRange(file: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, offset);
    return buf;
  } finally {
    await fh.close();
  }
}

async function createSparse(file: string, bytes: number): Promise<void> {
  const fh = await open(file, 'w');
  await fh.truncate(bytes);
  await fh.close();
}


describe('NbdServer', () => {
  let dir: string;
  let server: NbdServer;
  let port: number;
  const logs: string[] = [];
  const exports = new Map<string, NbdExport>();
  const url = (name: string): string => `nbd://127.0.0.1:${port}/${name}`;
  const file = (name: string): string => {
    const exp = exports.get(name);
    assert.ok(exp);
    return exp.path;
  };

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'nbd-test-'));
    for (const [name, readOnly] of [
      ['vol-rw', false],
      ['vol-copy', false],
      ['vol-zero', false],
      ['vol-raw', false],
      ['vol-ro', true],
      ['vol-multi', false],
      ['vol-qos', false],
    ] as const) {
      const p = path.join(dir, `${name}.raw`);
      await createSparse(p, exportBytes);
      exports.set(name, { path: p, sizeBytes: exportBytes, readOnly });
    }
    // Limits far above what the test moves: only their presence matters (multi-conn is then off).
    exports.set('vol-qos', { ...exports.get('vol-qos')!, limits: { total_iops_sec: 1_000_000 } });
    // Recognisable content in the read-only volume.
    const fh = await open(file('vol-ro'), 'r+');
    await fh.write(Buffer.alloc(4096, 0x5a), 0, 4096, 0);
    await fh.close();

    server = new NbdServer({
      host: '127.0.0.1',
      port: 0,
      resolveExport: (name) => exports.get(name),
      log: (msg) => logs.push(msg),
    });
    const address = await server.start();
    assert.equal(address.host, '127.0.0.1');
    assert.ok(address.port > 0);
    port = address.port;
  });

  after(async () => {
    await server?.stop();
    assert.equal(server?.connectionCount ?? 0, 0);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('qemu-io writes and reads back a pattern', async () => {
    await qemuIo(url('vol-rw'), 'write -P 0xab 1M 64k');
    const out = await qemuIo(url('vol-rw'), 'read -P 0xab 1M 64k');
    assert.match(out, /read 65536\/65536 bytes/);
    assert.ok((await readRange(file('vol-rw'), MiB, 64 * 1024)).equals(Buffer.alloc(64 * 1024, 0xab)));
    // Neighbouring bytes untouched.
    assert.ok((await readRange(file('vol-rw'), MiB - 4096, 4096)).equals(Buffer.alloc(4096)));
    assert.ok((await readRange(file('vol-rw'), MiB + 64 * 1024, 4096)).equals(Buffer.alloc(4096)));
    // A mismatching pattern is detected (guards the check above against false passes).
    const bad = await tool('qemu-io', ['-f', 'raw', '-c', 'read -P 0xcd 1M 64k', url('vol-rw')]).catch(
      (err: { stdout?: string }) => err.stdout ?? '',
    );
    assert.match(bad, /Pattern verification failed/);
  });

  test('nbdcopy round-trips 4 MiB of random data', async () => {
    const source = randomBytes(4 * MiB);
    const inFile = path.join(dir, 'in.raw');
    const outFile = path.join(dir, 'out.raw');
    await writeFile(inFile, source);
    await tool('nbdcopy', [inFile, url('vol-copy')]);
    assert.ok((await readRange(file('vol-copy'), 0, 4 * MiB)).equals(source));
    await tool('nbdcopy', [url('vol-copy'), outFile]);
    const out = await readFile(outFile);
    assert.equal(out.length, exportBytes);
    assert.ok(out.subarray(0, 4 * MiB).equals(source));
    assert.ok(out.subarray(4 * MiB, 8 * MiB).equals(Buffer.alloc(4 * MiB)));
  });

  test('nbdinfo reports size and capabilities', async () => {
    const info = JSON.parse(await tool('nbdinfo', ['--json', url('vol-rw')])) as {
      exports: Array<Record<string, unknown>>;
    };
    const exp = info.exports[0];
    assert.ok(exp);
    assert.equal(exp['export-size'], exportBytes);
    assert.equal(exp['is_read_only'], false);
    assert.equal(exp['can_flush'], true);
    assert.equal(exp['can_fua'], true);
    assert.equal(exp['can_zero'], true);
    assert.equal(exp['block_size_minimum'], 1);
    assert.equal(exp['block_size_preferred'], 4096);
    assert.equal(exp['block_size_maximum'], 32 * MiB);

    const ro = JSON.parse(await tool('nbdinfo', ['--json', url('vol-ro')])) as {
      exports: Array<Record<string, unknown>>;
    };
    assert.equal(ro.exports[0]?.['is_read_only'], true);
  });

  test('multi-conn: advertised unless the export has QoS limits; nbdcopy then opens several connections; a write flushed on one connection reads back on another', async () => {
    const canMultiConn = async (name: string): Promise<unknown> =>
      (JSON.parse(await tool('nbdinfo', ['--json', url(name)])) as { exports: Array<Record<string, unknown>> }).exports[0]?.['can_multi_conn'];
    assert.equal(await canMultiConn('vol-multi'), true);
    assert.equal(await canMultiConn('vol-ro'), true);
    // QoS is paced per connection: several connections would multiply the volume's limits.
    assert.equal(await canMultiConn('vol-qos'), false);

    const source = randomBytes(2 * MiB);
    const inFile = path.join(dir, 'multi-in.raw');
    await writeFile(inFile, source);
    const copyArgs = (to: string): string[] => ['--verbose', '--connections=2', '--threads=2', inFile, url(to)];
    assert.match(await tool('nbdcopy', copyArgs('vol-multi')), /connections=2 /);
    assert.ok((await readRange(file('vol-multi'), 0, 2 * MiB)).equals(source));
    assert.match(await tool('nbdcopy', copyArgs('vol-qos')), /connections=1 /);

    // Two connections open at once: what one wrote and flushed, the other reads.
    const [writer, reader] = await Promise.all([RawClient.connect(port), RawClient.connect(port)]);
    try {
      await writer.connectExport('vol-multi');
      await reader.connectExport('vol-multi');
      const data = randomBytes(4096);
      writer.write(Buffer.concat([writer.request(NBD_CMD_WRITE, 1, 3 * MiB, data.length, 0, data), writer.request(NBD_CMD_FLUSH, 2, 0, 0)]));
      assert.deepEqual([(await writer.readReply()).error, (await writer.readReply()).error], [0, 0]);
      reader.write(reader.request(NBD_CMD_READ, 3, 3 * MiB, data.length));
      const got = await reader.readReply(new Map([[3, data.length]]));
      assert.equal(got.error, 0);
      assert.ok(got.data.equals(data));
    } finally {
      writer.close();
      reader.close();
    }
  });

  test('unknown export is refused', async () => {
    await assert.rejects(tool('nbdinfo', ['--json', url('no-such-volume')]));
    const client = await RawClient.connect(port);
    try {
      await client.greet();
      assert.deepEqual(await client.go('no-such-volume'), { errorType: NBD_REP_ERR_UNKNOWN });
      // Still negotiating: a valid export can be chosen afterwards.
      const ok = await client.go('vol-rw');
      assert.ok('size' in ok && ok.size === BigInt(exportBytes));
    } finally {
      client.close();
    }
    // NBD_OPT_EXPORT_NAME has no error reply: the server must close.
    const legacy = await RawClient.connect(port);
    await legacy.greet();
    legacy.sendOption(NBD_OPT_EXPORT_NAME, Buffer.from('no-such-volume'));
    await legacy.closedPromise;
  });

  test('read-only export refuses writes', async () => {
    // qemu refuses to open a read-only export read-write.
    const out = await toolFailure('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 4k', url('vol-ro')]);
    assert.match(out, /read-only|Permission denied|not permitted/i);
    await qemuIo(url('vol-ro'), 'read -P 0x5a 0 4k', ['-r']);

    const client = await RawClient.connect(port);
    try {
      const { flags } = await client.connectExport('vol-ro');
      assert.ok(flags & NBD_FLAG_READ_ONLY);
      assert.equal(flags & NBD_FLAG_SEND_WRITE_ZEROES, 0);
      client.write(client.request(NBD_CMD_WRITE, 1, 0, 4096, 0, Buffer.alloc(4096, 0x11)));
      assert.deepEqual(await client.readReply(), { handle: 1, error: NBD_EPERM, data: Buffer.alloc(0) });
      client.write(client.request(NBD_CMD_WRITE_ZEROES, 2, 0, 4096));
      assert.equal((await client.readReply()).error, NBD_EPERM);
      // The connection stays usable after an error reply.
      client.write(client.request(NBD_CMD_READ, 3, 0, 4096));
      const read = await client.readReply(new Map([[3, 4096]]));
      assert.equal(read.error, 0);
      assert.ok(read.data.equals(Buffer.alloc(4096, 0x5a)));
    } finally {
      client.close();
    }
    assert.ok((await readRange(file('vol-ro'), 0, 4096)).equals(Buffer.alloc(4096, 0x5a)));
  });

  test('write_zeroes zeroes data and keeps holes sparse', async () => {
    await qemuIo(url('vol-zero'), 'write -P 0xcd 0 2M');
    assert.ok((await readRange(file('vol-zero'), 0, 2 * MiB)).equals(Buffer.alloc(2 * MiB, 0xcd)));
    await qemuIo(url('vol-zero'), 'write -z 0 1M');
    assert.ok((await readRange(file('vol-zero'), 0, MiB)).equals(Buffer.alloc(MiB)));
    assert.ok((await readRange(file('vol-zero'), MiB, MiB)).equals(Buffer.alloc(MiB, 0xcd)));
    // Zeroing a never-written range with unmap allowed (-u, i.e. no NO_HOLE flag) must not
    // allocate it; without -u qemu sends NO_HOLE, which asks for provisioning.
    const blocksBefore = (await stat(file('vol-zero'))).blocks;
    await qemuIo(url('vol-zero'), 'write -z -u 16M 16M');
    assert.equal((await stat(file('vol-zero'))).blocks, blocksBefore);
    await qemuIo(url('vol-zero'), 'write -z 32M 1M');
    assert.ok((await stat(file('vol-zero'))).blocks > blocksBefore);
    assert.ok((await readRange(file('vol-zero'), 32 * MiB, MiB)).equals(Buffer.alloc(MiB)));
  });

  test('raw client: split chunks, pipelining, range checks, FUA, flush, disconnect', async () => {
    const client = await RawClient.connect(port);
    try {
      const { size, flags } = await client.connectExport('vol-raw');
      assert.equal(size, BigInt(exportBytes));
      assert.ok(flags & NBD_FLAG_SEND_WRITE_ZEROES);

      // A WRITE delivered one byte per TCP segment.
      const payload = randomBytes(600);
      const bytes = client.request(NBD_CMD_WRITE, 7, 12345, payload.length, NBD_CMD_FLAG_FUA, payload);
      for (const byte of bytes) {
        client.write(Buffer.from([byte]));
        await new Promise((resolve) => setImmediate(resolve));
      }
      assert.equal((await client.readReply()).error, 0);
      assert.ok((await readRange(file('vol-raw'), 12345, payload.length)).equals(payload));

      // Many requests in one segment (more than the in-flight limit), plus errors mixed in.
      const chunks: Buffer[] = [];
      const expected = new Map<number, Buffer>();
      const lengths = new Map<number, number>();
      for (let i = 0; i < 40; i++) {
        const data = randomBytes(8192);
        chunks.push(client.request(NBD_CMD_WRITE, 100 + i, MiB + i * 8192, data.length, 0, data));
        chunks.push(client.request(NBD_CMD_READ, 200 + i, MiB + i * 8192, data.length));
        expected.set(200 + i, data);
        lengths.set(200 + i, data.length);
      }
      chunks.push(client.request(NBD_CMD_READ, 900, exportBytes - 512, 1024)); // crosses the end
      chunks.push(client.request(NBD_CMD_READ, 901, 0, 64 * MiB + 1)); // over the size cap
      chunks.push(client.request(NBD_CMD_WRITE_ZEROES, 902, exportBytes, 1)); // past the end
      chunks.push(client.request(99, 903, 0, 0)); // unknown command
      chunks.push(client.request(NBD_CMD_FLUSH, 904, 0, 0));
      chunks.push(client.request(NBD_CMD_READ, 905, exportBytes - 512, 512)); // last sector: fine
      lengths.set(905, 512);
      client.write(Buffer.concat(chunks));

      const seen = new Map<number, { error: number; data: Buffer }>();
      for (let i = 0; i < 80 + 6; i++) {
        const reply = await client.readReply(lengths);
        assert.ok(!seen.has(reply.handle), `duplicate reply for handle ${reply.handle}`);
        seen.set(reply.handle, reply);
      }
      for (let i = 0; i < 40; i++) {
        assert.equal(seen.get(100 + i)?.error, 0);
        // Reads may legitimately be served before the preceding write; only check the error.
        assert.equal(seen.get(200 + i)?.error, 0);
      }
      assert.equal(seen.get(900)?.error, NBD_EINVAL);
      assert.equal(seen.get(901)?.error, NBD_EINVAL);
      assert.equal(seen.get(902)?.error, NBD_EINVAL);
      assert.equal(seen.get(903)?.error, NBD_EINVAL);
      assert.equal(seen.get(904)?.error, 0);
      assert.equal(seen.get(905)?.error, 0);
      for (const [handle, data] of expected) {
        assert.ok((await readRange(file('vol-raw'), MiB + (handle - 200) * 8192, 8192)).equals(data));
      }
      // Now that writes are done, a read must return them.
      client.write(client.request(NBD_CMD_READ, 1000, MiB, 8192));
      const readBack = await client.readReply(new Map([[1000, 8192]]));
      assert.ok(readBack.data.equals(expected.get(200) ?? Buffer.alloc(0)));

      // Graceful disconnect.
      client.write(client.request(NBD_CMD_DISC, 1001, 0, 0));
      await client.closedPromise;
    } finally {
      client.close();
    }
  });

  test('handshake option handling', async () => {
    const client = await RawClient.connect(port);
    try {
      await client.greet();
      client.sendOption(NBD_OPT_EXTENDED_HEADERS);
      assert.equal((await client.readOptionReply()).type, NBD_REP_ERR_UNSUP);
      client.sendOption(0x1234);
      assert.equal((await client.readOptionReply()).type, NBD_REP_ERR_UNSUP);
      client.sendOption(NBD_OPT_LIST);
      assert.equal((await client.readOptionReply()).type, NBD_REP_ERR_POLICY);
      client.sendOption(NBD_OPT_ABORT);
      assert.equal((await client.readOptionReply()).type, NBD_REP_ACK);
      await client.closedPromise;
    } finally {
      client.close();
    }

    // Old-style EXPORT_NAME without NO_ZEROES: size, flags, 124 zero bytes.
    const legacy = await RawClient.connect(port);
    try {
      await legacy.greet(NBD_FLAG_C_FIXED_NEWSTYLE);
      legacy.sendOption(NBD_OPT_EXPORT_NAME, Buffer.from('vol-rw'));
      const reply = await legacy.read(134);
      assert.equal(reply.readBigUInt64BE(0), BigInt(exportBytes));
      assert.ok(reply.subarray(10).equals(Buffer.alloc(124)));
      legacy.write(legacy.request(NBD_CMD_READ, 5, MiB, 16));
      const read = await legacy.readReply(new Map([[5, 16]]));
      assert.ok(read.data.equals(Buffer.alloc(16, 0xab)));
    } finally {
      legacy.close();
    }
  });

  test('garbage from a client only costs that connection', async () => {
    const garbage = await RawClient.connect(port);
    await garbage.read(18);
    garbage.write(randomBytes(4096));
    await garbage.closedPromise;

    // Bad request magic after a successful handshake.
    const badMagic = await RawClient.connect(port);
    await badMagic.connectExport('vol-rw');
    badMagic.write(Buffer.alloc(28, 0xff));
    await badMagic.closedPromise;

    // Oversized write payload: the server closes rather than buffer it.
    const huge = await RawClient.connect(port);
    await huge.connectExport('vol-rw');
    huge.write(huge.request(NBD_CMD_WRITE, 1, 0, 0xffffffff));
    await huge.closedPromise;

    // Oversized option data.
    const bigOption = await RawClient.connect(port);
    await bigOption.greet();
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(NBD_IHAVEOPT, 0);
    header.writeUInt32BE(NBD_OPT_GO, 8);
    header.writeUInt32BE(0x7fffffff, 12);
    bigOption.write(header);
    await bigOption.closedPromise;

    const out = await qemuIo(url('vol-rw'), 'read -P 0xab 1M 64k');
    assert.match(out, /read 65536\/65536 bytes/);
  });

  test('disconnectExport closes that export’s connections only', async () => {
    const a = await RawClient.connect(port);
    const b = await RawClient.connect(port);
    try {
      await a.connectExport('vol-rw');
      await b.connectExport('vol-copy');
      assert.ok(server.connectionCount >= 2);
      server.disconnectExport('vol-rw');
      await a.closedPromise;
      b.write(b.request(NBD_CMD_READ, 1, 0, 512));
      assert.equal((await b.readReply(new Map([[1, 512]]))).error, 0);
      assert.equal(b.isClosed, false);
    } finally {
      a.close();
      b.close();
    }
  });

  test('connection count returns to zero', async () => {
    for (let i = 0; i < 100 && server.connectionCount > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal(server.connectionCount, 0, logs.join('\n'));
  });

  test('connectionsMax refuses extra connections once they name an export', async () => {
    const limited = new NbdServer({ host: '127.0.0.1', port: 0, resolveExport: (name) => exports.get(name), connectionsMax: 1 });
    const { port: limitedPort } = await limited.start();
    const first = await RawClient.connect(limitedPort);
    try {
      await first.connectExport('vol-rw');
      const second = await RawClient.connect(limitedPort);
      await second.connectExport('vol-rw').catch(() => undefined);
      await second.closedPromise;
      // The server forgets a refused connection once its clean-up ran.
      for (let i = 0; i < 50 && limited.connectionCount > 1; i++) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(limited.connectionCount, 1);
    } finally {
      first.close();
      await limited.stop();
    }
  });

  test('stop() closes connections in any phase', async () => {
    const negotiating = await RawClient.connect(port);
    await negotiating.greet();
    const transmitting = await RawClient.connect(port);
    await transmitting.connectExport('vol-rw');
    assert.equal(server.connectionCount, 2);
    await server.stop();
    await Promise.all([negotiating.closedPromise, transmitting.closedPromise]);
    assert.equal(server.connectionCount, 0);
  });
});
