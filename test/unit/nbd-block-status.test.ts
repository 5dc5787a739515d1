/**
 * Structured replies and base:allocation on the wire (issue 14), with the raw test client:
 * option negotiation (NBD_OPT_STRUCTURED_REPLY, LIST/SET_META_CONTEXT), NBD_CMD_BLOCK_STATUS
 * against the holes of a sparse file (all extents, REQ_ONE, the descriptor limit, a range past the
 * end, no context negotiated), READs answered with chunks (a hole, data, 0 bytes, past the end),
 * and a server without the native hole finder offering no context.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { NbdServer, blockStatusExtentsMax } from '../../src/nbd/server.ts';
import { extentProbe } from '../../src/nbd/extents.ts';
import {
  BASE_ALLOCATION,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_EINVAL,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_META_CONTEXT,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
} from '../../src/nbd/protocol.ts';
import { NbdTestClient, connectExport, metaContextData } from '../helpers/nbd-client.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const exportBytes = 16 * MiB;
const HOLE = NBD_STATE_HOLE | NBD_STATE_ZERO;

/** The data written into the sparse file (everything else is a hole). */
const islands = [
  { offset: 1 * MiB, data: randomBytes(64 * KiB) },
  { offset: 5 * MiB, data: randomBytes(192 * KiB) },
];
/** Many small islands past 8 MiB: more extents than one reply carries. */
const manyAt = 8 * MiB;
const manyCount = 80;
const manyStride = 64 * KiB;

interface Descriptor {
  length: number;
  flags: number;
}

function parseBlockStatus(payload: Buffer): { contextId: number; descriptors: Descriptor[] } {
  assert.ok(payload.length >= 12 && (payload.length - 4) % 8 === 0, `bad BLOCK_STATUS payload length ${payload.length}`);
  const descriptors: Descriptor[] = [];
  for (let at = 4; at < payload.length; at += 8) descriptors.push({ length: payload.readUInt32BE(at), flags: payload.readUInt32BE(at + 4) });
  return { contextId: payload.readUInt32BE(0), descriptors };
}

/** BLOCK_STATUS, one reply of one chunk (one context): its descriptors. */
async function blockStatus(c: NbdTestClient, handle: number, offset: number, length: number, flags = 0): Promise<Descriptor[]> {
  c.write(NbdTestClient.request(NBD_CMD_BLOCK_STATUS, handle, offset, length, flags));
  const chunks = await c.structuredReply();
  assert.equal(chunks.length, 1, 'one chunk for one context');
  const [chunk] = chunks;
  assert.equal(chunk!.handle, handle);
  assert.equal(chunk!.type, NBD_REPLY_TYPE_BLOCK_STATUS, `type ${chunk!.type}: ${chunk!.message ?? ''}`);
  const { contextId, descriptors } = parseBlockStatus(chunk!.payload);
  assert.equal(contextId, c.contexts.get(BASE_ALLOCATION));
  for (const d of descriptors) assert.ok(d.length > 0, 'a descriptor of 0 bytes');
  assert.ok(
    descriptors.reduce((sum, d) => sum + d.length, 0) <= length,
    'descriptors cover more than the request',
  );
  return descriptors;
}

/** An error chunk (final) for `handle`. */
async function errorChunk(c: NbdTestClient, handle: number): Promise<{ error: number; message: string }> {
  const chunks = await c.structuredReply();
  assert.equal(chunks.length, 1);
  const [chunk] = chunks;
  assert.equal(chunk!.handle, handle);
  assert.equal(chunk!.type, NBD_REPLY_TYPE_ERROR);
  assert.ok(chunk!.flags & NBD_REPLY_FLAG_DONE);
  return { error: chunk!.error, message: chunk!.message ?? '' };
}

describe('NBD structured replies and base:allocation', () => {
  let dir: string;
  let file: string;
  let server: NbdServer;
  let port: number;
  const logs: string[] = [];

  before(async () => {
    assert.ok(extentProbe(), 'the native addon with fileExtents is not built: run npm run build:native');
    dir = await mkdtemp(path.join(tmpdir(), 'nbd-block-status-'));
    file = path.join(dir, 'vol.raw');
    const fh = await open(file, 'w');
    // Shorter than the export: the last 2 MiB are past the end of the file and read as zeros.
    await fh.truncate(exportBytes - 2 * MiB);
    for (const { offset, data } of islands) await fh.write(data, 0, data.length, offset);
    for (let i = 0; i < manyCount; i++) await fh.write(Buffer.alloc(4 * KiB, 0x5a), 0, 4 * KiB, manyAt + i * manyStride);
    await fh.close();
    server = new NbdServer({
      host: '127.0.0.1',
      port: 0,
      // vol2: the same file under another name (a context selected for it does not apply to vol).
      resolveExport: (name) => (name === 'vol' || name === 'vol2' ? { path: file, sizeBytes: exportBytes, readOnly: false } : undefined),
      log: (m) => logs.push(m),
    });
    port = (await server.start()).port;
  });

  after(async () => {
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('option negotiation: structured replies first, then the one context base:allocation', async () => {
    const c = await NbdTestClient.connect(port);
    try {
      await c.greet();
      // Meta contexts need structured replies.
      let [r] = await c.option(NBD_OPT_LIST_META_CONTEXT, metaContextData('vol', []));
      assert.equal(r!.type, NBD_REP_ERR_INVALID);
      assert.match(r!.data.toString(), /send NBD_OPT_STRUCTURED_REPLY first/);
      [r] = await c.option(NBD_OPT_STRUCTURED_REPLY, Buffer.from('x'));
      assert.equal(r!.type, NBD_REP_ERR_INVALID, 'STRUCTURED_REPLY with data');
      [r] = await c.option(NBD_OPT_STRUCTURED_REPLY);
      assert.equal(r!.type, NBD_REP_ACK);
      // LIST: everything, the namespace, the full name; nothing for other namespaces.
      for (const queries of [[], ['base:'], [BASE_ALLOCATION], ['x-other:thing', BASE_ALLOCATION]]) {
        const replies = await c.option(NBD_OPT_LIST_META_CONTEXT, metaContextData('vol', queries));
        assert.deepEqual(replies.map((x) => x.type), [NBD_REP_META_CONTEXT, NBD_REP_ACK], `LIST ${JSON.stringify(queries)}`);
        assert.equal(replies[0]!.data.toString('utf8', 4), BASE_ALLOCATION);
      }
      assert.deepEqual((await c.option(NBD_OPT_LIST_META_CONTEXT, metaContextData('vol', ['x-other:']))).map((x) => x.type), [NBD_REP_ACK]);
      // Unknown export, malformed data.
      [r] = await c.option(NBD_OPT_SET_META_CONTEXT, metaContextData('nope', [BASE_ALLOCATION]));
      assert.equal(r!.type, NBD_REP_ERR_UNKNOWN);
      const bad = metaContextData('vol', [BASE_ALLOCATION]);
      bad.writeUInt32BE(1000, 7); // the query count lies
      [r] = await c.option(NBD_OPT_SET_META_CONTEXT, bad);
      assert.equal(r!.type, NBD_REP_ERR_INVALID);
      // SET selects it with a nonzero id, once even if asked twice.
      const set = await c.option(NBD_OPT_SET_META_CONTEXT, metaContextData('vol', [BASE_ALLOCATION, BASE_ALLOCATION, 'base:']));
      assert.deepEqual(set.map((x) => x.type), [NBD_REP_META_CONTEXT, NBD_REP_ACK]);
      assert.equal(set[0]!.data.toString('utf8', 4), BASE_ALLOCATION);
      const id = set[0]!.data.readUInt32BE(0);
      c.contexts.set(BASE_ALLOCATION, id);
      const info = await c.go('vol');
      assert.ok(!('errorType' in info));
      const descriptors = await blockStatus(c, 1, 0, 2 * MiB);
      assert.deepEqual(descriptors, [
        { length: 1 * MiB, flags: HOLE },
        { length: 64 * KiB, flags: 0 },
        { length: 1 * MiB - 64 * KiB, flags: HOLE },
      ]);
      await c.disconnect();
    } finally {
      c.close();
    }
  });

  test('BLOCK_STATUS reports the holes and data of the file, REQ_ONE one extent, at most the descriptor limit', async () => {
    const c = await connectExport(port, 'vol', { structured: true, metaContexts: [BASE_ALLOCATION] });
    try {
      assert.ok(c.contexts.get(BASE_ALLOCATION));
      // 0 .. 8 MiB: the two islands, everything else holes.
      assert.deepEqual(await blockStatus(c, 2, 0, manyAt), [
        { length: 1 * MiB, flags: HOLE },
        { length: 64 * KiB, flags: 0 },
        { length: 4 * MiB - 64 * KiB, flags: HOLE },
        { length: 192 * KiB, flags: 0 },
        { length: 3 * MiB - 192 * KiB, flags: HOLE },
      ]);
      // An unaligned range inside data, and one inside a hole.
      assert.deepEqual(await blockStatus(c, 3, 5 * MiB + 1, 100), [{ length: 100, flags: 0 }]);
      assert.deepEqual(await blockStatus(c, 4, 3 * MiB + 7, 4096), [{ length: 4096, flags: HOLE }]);
      // REQ_ONE: one descriptor, not past the request.
      assert.deepEqual(await blockStatus(c, 5, 0, manyAt, NBD_CMD_FLAG_REQ_ONE), [{ length: 1 * MiB, flags: HOLE }]);
      assert.deepEqual(await blockStatus(c, 6, 1 * MiB, manyAt, NBD_CMD_FLAG_REQ_ONE), [{ length: 64 * KiB, flags: 0 }]);
      assert.deepEqual(await blockStatus(c, 7, 1 * MiB + 10, 20, NBD_CMD_FLAG_REQ_ONE), [{ length: 20, flags: 0 }]);
      // 80 islands = 160 extents: one reply carries at most the limit; asking on from its end covers the rest.
      const end = exportBytes;
      const seen: Descriptor[] = [];
      let at = manyAt;
      let replies = 0;
      while (at < end) {
        const d = await blockStatus(c, 100 + replies, at, end - at);
        assert.ok(d.length <= blockStatusExtentsMax, `${d.length} descriptors in one reply`);
        replies++;
        for (const x of d) {
          const last = seen[seen.length - 1];
          if (last && last.flags === x.flags) last.length += x.length;
          else seen.push({ ...x });
          at += x.length;
        }
      }
      assert.ok(replies >= 3, `${replies} replies for ${manyCount * 2} extents`);
      const expected: Descriptor[] = [];
      for (let i = 0; i < manyCount; i++) expected.push({ length: 4 * KiB, flags: 0 }, { length: manyStride - 4 * KiB, flags: HOLE });
      // The last hole runs on past the end of the file (the export is 2 MiB longer).
      expected[expected.length - 1]!.length = end - (manyAt + (manyCount - 1) * manyStride + 4 * KiB);
      assert.deepEqual(seen, expected);
      await c.disconnect();
    } finally {
      c.close();
    }
  });

  test('BLOCK_STATUS errors: past the end, 0 bytes, unknown flags, no context negotiated; the connection goes on', async () => {
    const c = await connectExport(port, 'vol', { structured: true, metaContexts: [BASE_ALLOCATION] });
    try {
      c.write(NbdTestClient.request(NBD_CMD_BLOCK_STATUS, 1, exportBytes - 4096, 8192));
      let e = await errorChunk(c, 1);
      assert.equal(e.error, NBD_EINVAL);
      assert.match(e.message, /8192 bytes at offset 16773120 go past the end of the export \(16777216 bytes\)/);
      c.write(NbdTestClient.request(NBD_CMD_BLOCK_STATUS, 2, 0, 0));
      e = await errorChunk(c, 2);
      assert.equal(e.error, NBD_EINVAL);
      c.write(NbdTestClient.request(NBD_CMD_BLOCK_STATUS, 3, 0, 4096, 1 << 2 /* DF: a READ flag */));
      assert.equal((await errorChunk(c, 3)).error, NBD_EINVAL);
      // Still usable.
      assert.deepEqual(await blockStatus(c, 4, exportBytes - 4096, 4096), [{ length: 4096, flags: HOLE }]);
      await c.disconnect();
    } finally {
      c.close();
    }
    // Structured replies but no SET_META_CONTEXT: EINVAL, with what to do.
    const noContext = await connectExport(port, 'vol', { structured: true });
    try {
      noContext.write(NbdTestClient.request(NBD_CMD_BLOCK_STATUS, 9, 0, 4096));
      const err = await errorChunk(noContext, 9);
      assert.equal(err.error, NBD_EINVAL);
      assert.match(err.message, /NBD_OPT_SET_META_CONTEXT with "base:allocation"/);
      await noContext.disconnect();
    } finally {
      noContext.close();
    }
    // A context selected for another export name does not apply to the export opened.
    const other = await NbdTestClient.connect(port);
    try {
      await other.greet();
      assert.equal((await other.option(NBD_OPT_STRUCTURED_REPLY))[0]!.type, NBD_REP_ACK);
      assert.equal((await other.option(NBD_OPT_SET_META_CONTEXT, metaContextData('vol2', [BASE_ALLOCATION])))[0]!.type, NBD_REP_META_CONTEXT);
      assert.ok(!('errorType' in (await other.go('vol'))));
      other.write(NbdTestClient.request(NBD_CMD_BLOCK_STATUS, 10, 0, 4096));
      assert.equal((await errorChunk(other, 10)).error, NBD_EINVAL);
      await other.disconnect();
    } finally {
      other.close();
    }
    // Without structured replies: a simple reply with EINVAL.
    const simple = await connectExport(port, 'vol');
    try {
      simple.write(NbdTestClient.request(NBD_CMD_BLOCK_STATUS, 11, 0, 4096));
      const r = await simple.reply(() => 0);
      assert.deepEqual([r.handle, r.error], [11, NBD_EINVAL]);
      await simple.disconnect();
    } finally {
      simple.close();
    }
  });

  test('READ in structured mode: one OFFSET_DATA chunk (a hole reads as zeros), NONE for 0 bytes, an error chunk past the end', async () => {
    const c = await connectExport(port, 'vol', { structured: true, metaContexts: [BASE_ALLOCATION] });
    try {
      const reads = [
        { handle: 1, offset: 2 * MiB, length: 64 * KiB, want: Buffer.alloc(64 * KiB) }, // a hole
        { handle: 2, offset: 5 * MiB + 3, length: 1000, want: islands[1]!.data.subarray(3, 1003) },
        { handle: 3, offset: exportBytes - 4096, length: 4096, want: Buffer.alloc(4096) }, // past the end of the file
        { handle: 4, offset: 1 * MiB - 10, length: 20, want: Buffer.concat([Buffer.alloc(10), islands[0]!.data.subarray(0, 10)]) },
      ];
      c.write(Buffer.concat(reads.map((r) => NbdTestClient.request(NBD_CMD_READ, r.handle, r.offset, r.length))));
      for (let n = 0; n < reads.length; n++) {
        const [chunk, ...more] = await c.structuredReply();
        assert.equal(more.length, 0);
        const r = reads.find((x) => x.handle === chunk!.handle)!;
        assert.equal(chunk!.type, NBD_REPLY_TYPE_OFFSET_DATA);
        assert.ok(chunk!.flags & NBD_REPLY_FLAG_DONE);
        assert.equal(chunk!.payload.readBigUInt64BE(0), BigInt(r.offset));
        assert.ok(chunk!.payload.subarray(8).equals(r.want), `read ${r.handle} returned other bytes`);
      }
      c.write(NbdTestClient.request(NBD_CMD_READ, 5, 4096, 0));
      const [none] = await c.structuredReply();
      assert.deepEqual([none!.handle, none!.type, none!.payload.length], [5, NBD_REPLY_TYPE_NONE, 0]);
      c.write(NbdTestClient.request(NBD_CMD_READ, 6, exportBytes - 10, 20));
      const e = await errorChunk(c, 6);
      assert.equal(e.error, NBD_EINVAL);
      assert.match(e.message, /past the end of the export/);
      // A WRITE still gets a simple reply (the spec allows it for replies without payload).
      c.write(c.request(NBD_CMD_WRITE, 7, 3 * MiB, 4, 0, Buffer.from('abcd')));
      const w = await c.message();
      assert.deepEqual([w.structured, w.handle, w.error], [false, 7, 0]);
      // ... and BLOCK_STATUS sees the new data.
      assert.deepEqual(await blockStatus(c, 8, 3 * MiB, 4096, NBD_CMD_FLAG_REQ_ONE), [{ length: 4096, flags: 0 }]);
      await c.disconnect();
    } finally {
      c.close();
    }
    assert.deepEqual(logs.filter((l) => /error|closing/i.test(l)), []);
  });

  test('without the native hole finder, no context is offered (and BLOCK_STATUS is refused)', async () => {
    const plain = new NbdServer({
      host: '127.0.0.1',
      port: 0,
      resolveExport: (name) => (name === 'vol' ? { path: file, sizeBytes: exportBytes, readOnly: true } : undefined),
      extents: null,
    });
    const plainPort = (await plain.start()).port;
    try {
      const c = await connectExport(plainPort, 'vol', { structured: true, metaContexts: [BASE_ALLOCATION] });
      assert.equal(c.contexts.size, 0);
      c.write(NbdTestClient.request(NBD_CMD_BLOCK_STATUS, 1, 0, 4096));
      assert.equal((await errorChunk(c, 1)).error, NBD_EINVAL);
      const list = await NbdTestClient.connect(plainPort);
      await list.greet();
      await list.option(NBD_OPT_STRUCTURED_REPLY);
      assert.deepEqual((await list.option(NBD_OPT_LIST_META_CONTEXT, metaContextData('vol', []))).map((x) => x.type), [NBD_REP_ACK]);
      list.close();
      await c.disconnect();
    } finally {
      await plain.stop();
    }
  });
});
