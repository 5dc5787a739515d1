/**
 * The image upload hasher (md5 + sha512 in worker threads, shared-memory
 * batches) gives the same digests as node:crypto in the main thread, for
 * empty, odd-sized and multi-batch inputs fed in uneven chunks, with
 * several sessions interleaved; and the image import options parse the way
 * Glance writes them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { parseConfigText } from '../../src/config/config.ts';
import { ConfigError } from '../../src/config/ini.ts';
import { pooledBatches, StreamHasher } from '../../src/image/hashing.ts';

const MiB = 1024 * 1024;

async function feed(hasher: StreamHasher, data: Buffer, chunkBytes: number): Promise<void> {
  for (let offset = 0; offset < data.length; offset += chunkBytes) {
    const pending = hasher.update(data.subarray(offset, offset + chunkBytes));
    if (pending) await pending;
  }
}

test('digests equal node:crypto for empty, small, odd and multi-batch inputs in uneven chunks', async () => {
  for (const [bytes, chunk] of [[0, 1], [1, 1], [65_537, 4096], [4 * MiB, 4 * MiB], [4 * MiB + 1, 1_000_003], [45 * MiB + 17, 65_536]] as const) {
    const data = randomBytes(bytes);
    const hasher = new StreamHasher();
    await feed(hasher, data, chunk);
    const digests = await hasher.digest();
    assert.equal(digests.md5Hex, createHash('md5').update(data).digest('hex'), `md5 of ${bytes} bytes`);
    assert.equal(digests.sha512Hex, createHash('sha512').update(data).digest('hex'), `sha512 of ${bytes} bytes`);
  }
});

test('batches go back to a pool for the next upload (a server taking upload after upload stays bounded); stale bytes never reach a digest or a write', async () => {
  const batchBytes = 1 * MiB + 3; // a size no other test uses
  const written: Buffer[] = [];
  const sink = async (data: Buffer) => void written.push(Buffer.from(data));
  const first = new StreamHasher({ batchBytes, slotsMax: 3, sink });
  await feed(first, Buffer.alloc(3 * batchBytes, 0x11), 65_536);
  await first.digest();
  assert.equal(pooledBatches(batchBytes), 3, 'every batch of a finished upload is back in the pool');
  // The next, shorter upload reuses those batches, which still hold 0x11 beyond its bytes.
  written.length = 0;
  const data = randomBytes(batchBytes + 10);
  const second = new StreamHasher({ batchBytes, slotsMax: 3, sink });
  await feed(second, data, 4096);
  assert.ok(pooledBatches(batchBytes) < 3, 'the second upload took batches from the pool');
  const digests = await second.digest();
  assert.equal(digests.md5Hex, createHash('md5').update(data).digest('hex'));
  assert.equal(digests.sha512Hex, createHash('sha512').update(data).digest('hex'));
  assert.deepEqual(Buffer.concat(written), data, 'the sink saw exactly the upload\'s bytes');
  assert.equal(pooledBatches(batchBytes), 3);
  // An aborted upload gives back only batches nothing reads: a write still running keeps its batch.
  let finishWrite: () => void = () => undefined;
  const slow = new StreamHasher({ hash: false, batchBytes, slotsMax: 3, sink: () => new Promise<void>((resolve) => (finishWrite = resolve)) });
  await feed(slow, Buffer.alloc(batchBytes, 1), 65_536);
  assert.equal(pooledBatches(batchBytes), 2);
  slow.abort();
  assert.equal(pooledBatches(batchBytes), 2, 'the batch under a running write is not given back');
  finishWrite();
  await slow.drain();
});

test('interleaved sessions keep their own state; an aborted one does not disturb the others', async () => {
  const inputs = [randomBytes(9 * MiB), randomBytes(3 * MiB + 5), randomBytes(12 * MiB)];
  const aborted = new StreamHasher();
  await feed(aborted, randomBytes(6 * MiB), MiB);
  const results = await Promise.all(inputs.map(async (data, i) => {
    const hasher = new StreamHasher();
    await feed(hasher, data, 256 * 1024 + i);
    if (i === 1) aborted.abort();
    return hasher.digest();
  }));
  results.forEach((digests, i) => {
    assert.equal(digests.md5Hex, createHash('md5').update(inputs[i]!).digest('hex'));
    assert.equal(digests.sha512Hex, createHash('sha512').update(inputs[i]!).digest('hex'));
  });
});

test('image conversion options: on by default, Glance list syntax, empty turns it off, unknown plugins and formats are errors', () => {
  assert.deepEqual(parseConfigText('', '/tmp/d').image_import_opts.image_import_plugins, ['image_conversion']);
  assert.deepEqual(parseConfigText("[image_import_opts]\nimage_import_plugins = ['image_conversion']\n", '/tmp/d').image_import_opts.image_import_plugins, ['image_conversion']);
  assert.deepEqual(parseConfigText('[image_import_opts]\nimage_import_plugins =\n', '/tmp/d').image_import_opts.image_import_plugins, []);
  assert.deepEqual(parseConfigText('[image_import_opts]\nimage_import_plugins = []\n', '/tmp/d').image_import_opts.image_import_plugins, []);
  assert.throws(() => parseConfigText("[image_import_opts]\nimage_import_plugins = ['no_op']\n", '/tmp/d'), (e: unknown) => e instanceof ConfigError && /pumice\.conf:2: .*plugin 'no_op' is not available/.test(e.message));
  assert.throws(() => parseConfigText('[image_conversion]\noutput_format = qcow2\n', '/tmp/d'), (e: unknown) => e instanceof ConfigError && /output_format = qcow2 is not available: only raw/.test(e.message));
});
