/**
 * The file store's direct I/O (issue 14): uploads into a directory whose file
 * system takes O_DIRECT are written from block-aligned batches, the last
 * write's tail padded to a block and cut by the final truncate; elsewhere
 * (tmpfs before Linux 6.6) the store says why and writes through the page cache. Either way
 * the stored bytes, holes and digests are the body's, also when a later,
 * shorter upload reuses batches that still hold an earlier upload's bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pooledBatches } from '../../src/image/hashing.ts';
import { FileStore } from '../../src/image/stores/file.ts';

const MiB = 1024 * 1024;
const batchBytes = 8 * MiB;
const imageId = '5e0f3a51-7c2b-4d8e-9a41-0c6b2d7e8f90';

async function roundTrip(store: FileStore, body: Buffer): Promise<void> {
  const chunks: Buffer[] = [];
  for (let offset = 0; offset < body.length; offset += 65_521) chunks.push(body.subarray(offset, offset + 65_521));
  const pending = await store.write(imageId, Readable.from(chunks), { expectedBytes: body.length, sizeBytesMax: 1 << 30 });
  assert.equal(pending.md5Hex, createHash('md5').update(body).digest('hex'));
  assert.equal(pending.sha512Hex, createHash('sha512').update(body).digest('hex'));
  await store.commit(imageId, pending);
  const stored = readFileSync(store.pathOf(imageId));
  assert.equal(stored.length, body.length, 'the padded tail is cut: the file is as long as the body');
  assert.ok(stored.equals(body), 'the stored bytes are the body');
  await store.delete(imageId);
}

test('on ext4 the store writes with O_DIRECT from pooled aligned batches; unaligned tails and stale batch bytes do not leak into the image', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pumice-direct-io-'));
  const log: string[] = [];
  try {
    const store = new FileStore(dir, (line) => log.push(line));
    const before = pooledBatches(batchBytes, 'direct-io');
    // 19 MiB + 4097 bytes with a 3 MiB zero run: three batches, the last one 3 MiB + 4097 bytes.
    const first = Buffer.concat([randomBytes(6 * MiB), Buffer.alloc(3 * MiB), randomBytes(10 * MiB + 4097)]);
    await roundTrip(store, first);
    assert.match(log.join('\n'), /writes with O_DIRECT/, `the probe found O_DIRECT usable in ${dir}: ${log.join('; ')}`);
    assert.ok(pooledBatches(batchBytes, 'direct-io') > before, 'the upload gave its aligned batches back to their own pool');
    // A shorter body over the same (pooled) batches, ending 1 byte into a block: the rest of that block holds
    // the first upload's bytes in the batch, and must not reach the file.
    const second = randomBytes(MiB + 1);
    await roundTrip(store, second);
    const sizes = [1, 4095, 4096, 4097];
    for (const size of sizes) await roundTrip(store, randomBytes(size));
    await roundTrip(store, Buffer.alloc(0));
    assert.deepEqual(readdirSync(dir), [], 'no temp or probe file is left');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('on tmpfs (O_DIRECT since Linux 6.6, refused before) the store says which way it writes, and the bytes are the body either way', { skip: existsSync('/dev/shm') ? false : 'no /dev/shm' }, async () => {
  const dir = mkdtempSync(join('/dev/shm', 'pumice-direct-io-'));
  const log: string[] = [];
  try {
    const store = new FileStore(dir, (line) => log.push(line));
    const body = Buffer.concat([randomBytes(9 * MiB + 17), Buffer.alloc(MiB), randomBytes(3)]);
    await roundTrip(store, body);
    assert.match(log.join('\n'), /writes with O_DIRECT in |writes through the page cache: the file system of .* refuses O_DIRECT \(EINVAL\)/);
    assert.deepEqual(readdirSync(dir), [], 'the probe file is gone');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
