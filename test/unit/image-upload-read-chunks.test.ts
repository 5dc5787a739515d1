/**
 * The upload's read loop (issue 14): `readChunks` hands a body's chunks in
 * order to the store, pauses the source while the store is busy (a fast
 * client waits in its socket, not in memory), resolves only once the last
 * busy chunk is done even when the body ended meanwhile, and on a failure
 * (the store's, or the body's) rejects and stops reading. `copyInto` puts a
 * chunk into shared memory byte for byte, as `Buffer.copy` did.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { copyInto, readChunks } from '../../src/image/hashing.ts';

test('copyInto copies a chunk into shared memory at any offset, byte for byte, and refuses to run past the end', () => {
  const target = Buffer.from(new SharedArrayBuffer(4096));
  const expected = Buffer.alloc(4096);
  for (let round = 0; round < 200; round++) {
    const length = 1 + Math.floor(Math.random() * 700);
    const at = Math.floor(Math.random() * (4096 - length + 1));
    const chunk = randomBytes(length + 6).subarray(3, 3 + length); // a view at an offset, as a socket chunk may be
    copyInto(target, at, chunk);
    chunk.copy(expected, at);
  }
  assert.ok(target.equals(expected), 'copyInto wrote other bytes than Buffer.copy');
  assert.throws(() => copyInto(target, 4090, Buffer.alloc(7, 1)), RangeError);
});

test('chunks arrive in order; while the store is busy the source is paused, and the end waits for the last busy chunk', async () => {
  const source = new PassThrough({ highWaterMark: 1024 });
  const seen: number[] = [];
  let busyUntil: (() => void) | null = null;
  const finishedSpy = { done: false };
  const reading = readChunks(source, (chunk) => {
    seen.push(chunk[0]!);
    // Every third chunk finds the store busy.
    if (chunk[0]! % 3 !== 2) return undefined;
    return new Promise<void>((resolve) => (busyUntil = resolve));
  }).then(() => (finishedSpy.done = true));
  for (let i = 0; i < 3; i++) source.write(Buffer.alloc(512, i));
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(seen, [0, 1, 2]);
  assert.equal(source.isPaused(), true, 'the source reads on while the store is busy');
  // More data and the end arrive while the store is busy: nothing is handed over, nothing resolves.
  source.write(Buffer.alloc(512, 3));
  source.end(Buffer.alloc(512, 4));
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(seen, [0, 1, 2]);
  assert.equal(finishedSpy.done, false);
  busyUntil!();
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(seen, [0, 1, 2, 3, 4]);
  await reading;
  assert.equal(finishedSpy.done, true);

  // The body ends while its last chunk waits for a batch: the read resolves after that wait, not at the end.
  const last = new PassThrough();
  let release: (() => void) | null = null;
  let resolved = false;
  const lastReading = readChunks(last, () => new Promise<void>((resolve) => (release = resolve))).then(() => (resolved = true));
  last.end(Buffer.alloc(10));
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(resolved, false, 'resolved before the last chunk was stored');
  release!();
  await lastReading;
});

test('a store failure (thrown or rejected) rejects and destroys the source; a failing body rejects with its error', async () => {
  const thrown = Readable.from([Buffer.alloc(10), Buffer.alloc(10), Buffer.alloc(10)]);
  let calls = 0;
  await assert.rejects(readChunks(thrown, () => {
    calls += 1;
    if (calls === 2) throw new Error('too large');
    return undefined;
  }), /too large/);
  assert.equal(calls, 2, 'a chunk was handed over after the failure');
  assert.equal(thrown.destroyed, true);

  const rejected = new PassThrough();
  const reading = readChunks(rejected, () => Promise.reject(new Error('disk on fire')));
  rejected.write(Buffer.alloc(10));
  await assert.rejects(reading, /disk on fire/);
  assert.equal(rejected.destroyed, true);

  const failing = Readable.from((async function* () {
    yield Buffer.alloc(10);
    throw new Error('client went away');
  })());
  await assert.rejects(readChunks(failing, () => undefined), /client went away/);

  // A body that closes before its end (a reset connection) is a failure, not a short success.
  const cut = new PassThrough();
  const cutReading = readChunks(cut, () => undefined);
  cut.write(Buffer.alloc(10));
  cut.destroy();
  await assert.rejects(cutReading, /premature close/i);
});
