/**
 * The file image store's write path (issue 14): the body is copied once into
 * shared batches that the hash workers and several file writes in flight read
 * in place. Checked on a real directory: the stored bytes and both digests
 * equal node:crypto's for data fed in uneven chunks across batch boundaries,
 * zero runs stay holes, a spool without hashing stores the same bytes, and a
 * body that fails or a write that fails leaves no temp file and reports the
 * right error.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { StreamHasher } from '../../src/image/hashing.ts';
import { FileStore, StoreWriteError } from '../../src/image/stores/file.ts';

const MiB = 1024 * 1024;
const imageId = '0b6d3c2e-5f7a-4c1d-9e8f-1a2b3c4d5e6f';

function chunked(data: Buffer, chunkBytes: number): Readable {
  const chunks: Buffer[] = [];
  for (let offset = 0; offset < data.length; offset += chunkBytes) chunks.push(data.subarray(offset, offset + chunkBytes));
  return Readable.from(chunks);
}

test('stored bytes and md5/sha512 equal the body; zero runs stay holes; hash: false stores the same bytes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pumice-store-write-'));
  try {
    const store = new FileStore(dir);
    // 5 MiB of data, 9 MiB of zeros, 7 MiB + 4097 bytes of data: three 8 MiB batches, a partial last one.
    const body = Buffer.concat([randomBytes(5 * MiB), Buffer.alloc(9 * MiB), randomBytes(7 * MiB + 4097)]);
    const pending = await store.write(imageId, chunked(body, 100_003), { expectedBytes: body.length, sizeBytesMax: 1 << 30 });
    assert.equal(pending.sizeBytes, body.length);
    assert.equal(pending.md5Hex, createHash('md5').update(body).digest('hex'));
    assert.equal(pending.sha512Hex, createHash('sha512').update(body).digest('hex'));
    await store.commit(imageId, pending);
    const stored = store.pathOf(imageId);
    assert.ok(readFileSync(stored).equals(body), 'stored bytes differ from the body');
    const allocated = statSync(stored).blocks * 512;
    assert.ok(allocated <= 12 * MiB + 64 * 1024, `the 9 MiB zero run was written: ${allocated} bytes allocated`);

    const spooled = await store.write(imageId, chunked(body, 65_536), { expectedBytes: null, sizeBytesMax: 1 << 30, hash: false });
    assert.equal(spooled.md5Hex, '');
    assert.ok(readFileSync(spooled.tempPath).equals(body), 'spooled bytes differ from the body');
    await store.discard(spooled);
    assert.deepEqual(readdirSync(dir), [imageId]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a body that fails midway, or is longer than allowed, leaves no temp file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pumice-store-write-'));
  try {
    const store = new FileStore(dir);
    const failing = Readable.from((async function* () {
      for (let i = 0; i < 20; i++) yield randomBytes(MiB);
      throw new Error('client went away');
    })());
    await assert.rejects(store.write(imageId, failing, { expectedBytes: 64 * MiB, sizeBytesMax: 1 << 30 }), /client went away/);
    await assert.rejects(store.write(imageId, chunked(randomBytes(20 * MiB), MiB), { expectedBytes: null, sizeBytesMax: 10 * MiB }), /larger than 10485760 bytes/);
    assert.deepEqual(readdirSync(dir), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a sink write that fails rejects the stream (update or digest) with its error, and drain waits for the writes in flight', async () => {
  let inFlight = 0;
  let written = 0;
  const hasher = new StreamHasher({
    batchBytes: MiB,
    slotsMax: 3,
    sink: async (data) => {
      inFlight += 1;
      await new Promise((resolve) => setTimeout(resolve, 5));
      inFlight -= 1;
      written += 1;
      if (written === 3) throw new StoreWriteError(new Error('EIO: disk on fire'));
      assert.equal(data.length, MiB);
    },
  });
  const failure = (async () => {
    for (let i = 0; i < 16; i++) await hasher.update(randomBytes(MiB));
    await hasher.digest();
  })();
  await assert.rejects(failure, (error: unknown) => error instanceof StoreWriteError && /disk on fire/.test(error.message));
  hasher.abort();
  await hasher.drain();
  assert.equal(inFlight, 0);
  assert.ok(written < 16, `every batch was written after the failure (${written})`);
});
