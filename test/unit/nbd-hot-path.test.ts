/**
 * The NBD server's hot path (issue 14): read replies come from a pool of reused buffers, and WRITE
 * payloads are written as the socket's own chunks with pwritev. Both are checked with a raw client
 * for the cases a real client rarely makes: replies held back by a client that does not read (so a
 * buffer reused too early would change a reply still queued on the socket), and payloads split at
 * odd places and pipelined (so chunk boundaries fall inside and across requests).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { NbdServer } from '../../src/nbd/server.js';
import { NBD_CMD_FLAG_FUA, NBD_CMD_READ, NBD_CMD_WRITE } from '../../src/nbd/protocol.js';
import { NbdTestClient as Client, connectExport } from '../helpers/nbd-client.ts';

const MiB = 1024 * 1024;
const exportBytes = 64 * MiB;

describe('NBD hot path', () => {
  let dir: string;
  let server: NbdServer;
  let port: number;
  let file: string;
  const logs: string[] = [];

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'nbd-hot-path-'));
    file = path.join(dir, 'vol.raw');
    await writeFile(file, randomBytes(exportBytes));
    server = new NbdServer({
      host: '127.0.0.1',
      port: 0,
      resolveExport: (name) => (name === 'vol' ? { path: file, sizeBytes: exportBytes, readOnly: false } : undefined),
      log: (m) => logs.push(m),
    });
    port = (await server.start()).port;
  });

  after(async () => {
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('pipelined reads of one size, held back by a client that does not read: every reply carries its own range', async () => {
    const content = await readFile(file);
    const client = await connectExport(port, 'vol');
    // Stop reading so replies queue on the server's socket (and their write callbacks wait) while
    // later reads of the same size are served: a reply buffer reused before its write completed
    // would be overwritten with another range's data.
    client.socket.pause();
    const count = 60;
    const size = MiB;
    const offsetOf = (i: number): number => ((i * 37) % 63) * MiB + (i % 7) * 4096;
    for (let round = 0; round < 2; round++) {
      const requests = Array.from({ length: count }, (_, i) => Client.request(NBD_CMD_READ, round * 1000 + i, offsetOf(i), size));
      client.socket.write(Buffer.concat(requests));
      await new Promise((resolve) => setTimeout(resolve, 300));
      client.socket.resume();
      const seen = new Set<number>();
      for (let n = 0; n < count; n++) {
        const r = await client.reply(() => size);
        assert.equal(r.error, 0);
        const i = r.handle - round * 1000;
        assert.ok(i >= 0 && i < count && !seen.has(i), `unexpected handle ${r.handle}`);
        seen.add(i);
        assert.ok(r.data.equals(content.subarray(offsetOf(i), offsetOf(i) + size)), `read ${i} (offset ${offsetOf(i)}) of round ${round} returned other data`);
      }
      client.socket.pause();
    }
    client.socket.resume();
    await client.disconnect();
  });

  test('pipelined writes split at odd places land byte for byte, FUA ones too', async () => {
    const client = await connectExport(port, 'vol');
    const writes = [
      { offset: 3 * MiB + 11, data: randomBytes(3 * MiB + 123), flags: 0 },
      { offset: 17, data: randomBytes(1), flags: 0 },
      { offset: 9 * MiB, data: randomBytes(65536 * 2 + 1), flags: NBD_CMD_FLAG_FUA },
      { offset: 20 * MiB - 5000, data: randomBytes(4096), flags: 0 },
      { offset: 30 * MiB + 1, data: randomBytes(2 * MiB - 1), flags: 0 },
      { offset: exportBytes - 777, data: randomBytes(777), flags: 0 },
    ];
    const stream = Buffer.concat(writes.flatMap((w, i) => [Client.request(NBD_CMD_WRITE, i, w.offset, w.data.length, w.flags), w.data]));
    // Odd-sized pieces with a turn of the event loop between some: the server sees chunk
    // boundaries inside headers, inside payloads and across requests.
    for (let at = 0, n = 0; at < stream.length; n++) {
      const piece = [7, 65_537, 13, 200_003, 1][n % 5]!;
      client.socket.write(stream.subarray(at, at + piece));
      at += piece;
      if (n % 3 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    for (let n = 0; n < writes.length; n++) assert.equal((await client.reply(() => 0)).error, 0);
    const after = await readFile(file);
    for (const [i, w] of writes.entries()) {
      assert.ok(after.subarray(w.offset, w.offset + w.data.length).equals(w.data), `write ${i} (${w.data.length} bytes at ${w.offset}) did not land as sent`);
    }
    // And the server reads them back the same (through the pooled reply buffers).
    for (const [i, w] of writes.entries()) client.socket.write(Client.request(NBD_CMD_READ, 100 + i, w.offset, w.data.length));
    for (let n = 0; n < writes.length; n++) {
      const r = await client.reply((h) => writes[h - 100]!.data.length);
      assert.equal(r.error, 0);
      assert.ok(r.data.equals(writes[r.handle - 100]!.data), `read back of write ${r.handle - 100} differs`);
    }
    await client.disconnect();
    assert.deepEqual(logs.filter((l) => /error|closing/i.test(l)), []);
  });

  test('a sequential writer\'s pipelined writes (written in batches) land in order, interleaved reads, FUA and a gap included', async () => {
    const client = await connectExport(port, 'vol');
    const base = 40 * MiB + 512;
    const sizes = [256 * 1024, 4096, 1, 1 * MiB + 3, 65536, 999, 2 * MiB, 4096, 7, 512 * 1024];
    const writes: { offset: number; data: Buffer; flags: number }[] = [];
    let at = base;
    for (let round = 0; round < 6; round++) {
      for (const [i, size] of sizes.entries()) {
        writes.push({ offset: at, data: randomBytes(size), flags: round === 2 && i === 4 ? NBD_CMD_FLAG_FUA : 0 });
        at += size;
      }
      if (round === 3) at += 4096; // a gap: the next write starts a new batch
    }
    assert.ok(at < exportBytes);
    const before = await readFile(file);
    const stream: Buffer[] = [];
    for (const [i, w] of writes.entries()) {
      stream.push(Client.request(NBD_CMD_WRITE, i, w.offset, w.data.length, w.flags), w.data);
      // A read in the middle of the sequence ends a batch too.
      if (i === 23) stream.push(Client.request(NBD_CMD_READ, 5000, base - 100, 200));
    }
    client.socket.write(Buffer.concat(stream));
    const handles = new Set<number>();
    for (let n = 0; n < writes.length + 1; n++) {
      const r = await client.reply((h) => (h === 5000 ? 200 : 0));
      assert.equal(r.error, 0, `request ${r.handle} failed`);
      handles.add(r.handle);
    }
    assert.equal(handles.size, writes.length + 1);
    const after = await readFile(file);
    for (const [i, w] of writes.entries()) {
      assert.ok(after.subarray(w.offset, w.offset + w.data.length).equals(w.data), `write ${i} (${w.data.length} bytes at ${w.offset}) did not land as sent`);
    }
    // Nothing outside the writes changed (the gap neither).
    const gapAt = writes[sizes.length * 4]!.offset - 4096;
    assert.ok(after.subarray(gapAt, gapAt + 4096).equals(before.subarray(gapAt, gapAt + 4096)), 'the gap between two batches was written');
    assert.ok(after.subarray(at, at + MiB).equals(before.subarray(at, at + MiB)), 'bytes after the last write changed');
    await client.disconnect();
  });
});
