/**
 * The posix backup driver's chunk, block and manifest logic on real files:
 * zero chunks are recorded, not stored; an incremental stores only the 4 KiB
 * blocks that changed and reads the rest from its ancestors' files; restores
 * are byte-identical, zero what the target held before and discard excess
 * bytes; corruption names the chunk and the file; version-1 manifests (one
 * file per chunk) still restore.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync, truncateSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BackupDriverError, PosixBackupDriver, isZero, sourcesPerChunkMax, type BackupManifestV1, type BackupManifestV2, type ChunkCodec, type ManifestChunk,
} from '../../src/backup/drivers/posix.ts';

const MiB = 1024 * 1024;
const KiB = 1024;
const chunkBytes = MiB;
/** Not a multiple of the chunk size: the last chunk is short. */
const sizeBytes = 8 * MiB + 100 * KiB;

async function writeAt(path: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  await fh.write(data, 0, data.length, offset);
  await fh.close();
}

function blankFile(path: string, bytes: number): void {
  writeFileSync(path, '');
  truncateSync(path, bytes);
}

type DataChunk = Extract<ManifestChunk, { sources: unknown }>;
const dataChunk = (manifest: BackupManifestV2, index: number): DataChunk => {
  const chunk = manifest.chunks[index]!;
  assert.ok(!chunk.zero, `chunk ${index} is zero`);
  return chunk as DataChunk;
};
/** Bytes of the files in a backup's own directory (chunks, deltas, digests, manifest). */
const dirBytes = (dir: string) => readdirSync(dir).reduce((sum, f) => sum + statSync(join(dir, f)).size, 0);

for (const codec of ['brotli', 'none'] as ChunkCodec[]) {
  describe(`posix backup driver (${codec})`, () => {
    let dir: string;
    let driver: PosixBackupDriver;
    let source: string;
    const images = new Map<string, Buffer>();
    const full = { backupId: '11111111-1111-4111-8111-111111111111', container: 'volumebackups' };
    const incremental = { backupId: '22222222-2222-4222-8222-222222222222', container: 'other' };
    const second = { backupId: '33333333-3333-4333-8333-333333333333', container: 'volumebackups' };
    /** Block offsets changed before the first incremental: scattered 4 KiB writes in chunks 0, 3, 5 (was zero) and 8 (short). */
    const scattered = [8 * KiB, 300 * KiB, 3 * MiB + 64 * KiB, 3 * MiB + 68 * KiB, 5 * MiB + 4 * KiB, 8 * MiB + 96 * KiB];

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'pumice-backup-unit-'));
      driver = new PosixBackupDriver({ root: join(dir, 'backups'), chunkBytes, codec, concurrencyMax: 3 });
      await driver.start();
      source = join(dir, 'volume');
      blankFile(source, sizeBytes);
      await writeAt(source, 0, randomBytes(MiB));
      await writeAt(source, 3 * MiB + 4096, Buffer.alloc(8192, 0x5a));
      await writeAt(source, 8 * MiB + 50 * KiB, randomBytes(1000)); // inside the short last chunk
      images.set(full.backupId, readFileSync(source));
    });
    after(async () => {
      await driver.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    test('a full backup stores non-zero chunks only, block digests and a version-2 manifest', async () => {
      const manifest = await driver.backup({ ...full, volumeId: 'v', sourcePath: source, sizeBytes, parent: null });
      assert.equal(manifest.version, 2);
      assert.equal(manifest.blockBytes, 4096);
      assert.equal(manifest.chunks.length, 9);
      assert.deepEqual(manifest.chunks.filter((c) => !c.zero).map((c) => c.index), [0, 3, 8]);
      assert.equal(manifest.objectCount, 3);
      const files = readdirSync(join(dir, 'backups', 'volumebackups', full.backupId)).sort();
      assert.equal(files.length, 5, files.join(','));
      assert.ok(files.includes('manifest.json') && files.includes('block-digests.bin'));
      assert.ok(!files.some((f) => f.endsWith('.tmp')));
      // 16 bytes per 4 KiB block, 256 blocks per chunk slot
      assert.equal(statSync(join(dir, 'backups', manifest.digestsFile)).size, 8 * 256 * 16 + 25 * 16);
      // Stored: the three chunk files and the digests of the non-zero chunks only (zero chunks leave a hole).
      const chunkFiles = manifest.chunks.reduce((sum, c) => sum + (c.zero ? 0 : c.sources[0]!.storedBytes), 0);
      assert.equal(manifest.storedBytes, chunkFiles + (256 + 256 + 25) * 16);
      assert.deepEqual(await driver.readManifest(full), manifest);
      // The chunk sha256 is the sha256 of its blocks' 16-byte digests.
      const digests = Buffer.concat(Array.from({ length: 256 }, (_, b) => createHash('sha256').update(images.get(full.backupId)!.subarray(b * 4096, (b + 1) * 4096)).digest().subarray(0, 16)));
      assert.equal(dataChunk(manifest, 0).sha256, createHash('sha256').update(digests).digest('hex'));
      // Under brotli, the random chunk is stored raw (a sample showed it does not compress); the patterned one compressed.
      const random = dataChunk(manifest, 0).sources[0]!;
      const patterned = dataChunk(manifest, 3).sources[0]!;
      assert.deepEqual(dataChunk(manifest, 0).runs, [[0, 256]]);
      assert.equal(random.raw, codec === 'brotli' ? true : undefined);
      assert.equal(patterned.raw, undefined);
      if (codec === 'brotli') assert.ok(patterned.storedBytes < 64 * 1024, `patterned chunk stored ${patterned.storedBytes} bytes`);
    });

    test('an incremental stores only the changed 4 KiB blocks and reads the rest from its parent', async () => {
      for (const offset of scattered) await writeAt(source, offset, randomBytes(4096));
      await writeAt(source, 3 * MiB + 4096, Buffer.alloc(4096)); // a block that becomes zero: a zero run, nothing stored
      images.set(incremental.backupId, readFileSync(source));
      const manifest = await driver.backup({ ...incremental, volumeId: 'v', sourcePath: source, sizeBytes, parent: full });
      assert.equal(manifest.parentId, full.backupId);
      assert.equal(manifest.objectCount, 4, 'one delta file per changed chunk');
      const own = readdirSync(join(dir, 'backups', 'other', incremental.backupId)).filter((f) => f.startsWith('chunk-')).sort();
      // Random blocks do not compress: stored raw under either codec.
      assert.deepEqual(own, [0, 3, 5, 8].map((i) => `chunk-0000000${i}.delta.raw`));
      const chunk0 = dataChunk(manifest, 0);
      assert.equal(chunk0.sources.length, 2);
      assert.ok(chunk0.sources[0]!.file.startsWith(`volumebackups/${full.backupId}/`), JSON.stringify(chunk0));
      assert.deepEqual(chunk0.sources[1]!.blocks, [[2, 1], [75, 1]]);
      assert.deepEqual(chunk0.runs, [[0, 2], [1, 1], [0, 72], [1, 1], [0, 180]]);
      const chunk3 = dataChunk(manifest, 3);
      assert.deepEqual(chunk3.sources[1]!.blocks, [[16, 2]]);
      assert.deepEqual(chunk3.runs, [[0, 1], [-1, 1], [0, 14], [1, 2], [0, 238]]);
      assert.deepEqual(dataChunk(manifest, 5).runs, [[-1, 1], [0, 1], [-1, 254]], 'a chunk that was zero holds only its new block');
      // The short last chunk (100 KiB = 25 blocks): its block 24 changed.
      assert.deepEqual(dataChunk(manifest, 8).sources[1]!.blocks, [[24, 1]]);
      const changedBlockBytes = scattered.length * 4096;
      const digestBytes = (3 * 256 + 25) * 16; // chunks 0, 3, 5 and 8
      assert.equal(manifest.storedBytes - digestBytes, changedBlockBytes, `stored ${manifest.storedBytes}`);
      assert.ok(dirBytes(join(dir, 'backups', 'other', incremental.backupId)) < changedBlockBytes + 64 * KiB);
    });

    test('an incremental of an incremental flattens: its runs name every file directly', async () => {
      await writeAt(source, 4096 * 2, randomBytes(4096)); // the block the first incremental stored changes again
      await writeAt(source, 6 * MiB, randomBytes(MiB)); // a whole zero chunk written: stored whole
      images.set(second.backupId, readFileSync(source));
      const manifest = await driver.backup({ ...second, volumeId: 'v', sourcePath: source, sizeBytes, parent: incremental });
      const chunk0 = dataChunk(manifest, 0);
      assert.deepEqual(chunk0.sources.map((s) => s.file.split('/')[1]), [full.backupId, incremental.backupId, second.backupId]);
      assert.deepEqual(chunk0.runs, [[0, 2], [2, 1], [0, 72], [1, 1], [0, 180]]);
      const chunk6 = dataChunk(manifest, 6);
      assert.equal(chunk6.sources.length, 1);
      assert.equal(chunk6.sources[0]!.blocks, undefined);
      assert.deepEqual(dataChunk(manifest, 3), { ...dataChunk((await driver.readManifest(incremental)) as BackupManifestV2, 3) }, 'an unchanged chunk is the parent entry');
      assert.deepEqual(await driver.referencedFiles(second).then((f) => f.length), 1 + 1 + 2 + 1 + 1 + 1 + 1 + 2);
    });

    test('restores are byte-identical to the volume at each backup time', async () => {
      for (const location of [full, incremental, second]) {
        const fresh = join(dir, `restore-${location.backupId}`);
        blankFile(fresh, sizeBytes);
        await driver.restore({ ...location, targetPath: fresh, targetIsZeroed: true, discardExcess: true });
        assert.ok(readFileSync(fresh).equals(images.get(location.backupId)!), `restore of ${location.backupId}`);
        rmSync(fresh);
      }
      // An existing, larger volume full of 0xff: zero chunks, zero runs and the excess must read back as zeros.
      const existing = join(dir, 'restore-existing');
      writeFileSync(existing, Buffer.alloc(sizeBytes + 2 * MiB, 0xff));
      await driver.restore({ ...incremental, targetPath: existing, targetIsZeroed: false, discardExcess: true });
      const restored = readFileSync(existing);
      assert.ok(restored.subarray(0, sizeBytes).equals(images.get(incremental.backupId)!));
      assert.ok(isZero(restored.subarray(sizeBytes)));
    });

    test('a target smaller than the backup is refused', async () => {
      const small = join(dir, 'small');
      writeFileSync(small, Buffer.alloc(MiB));
      await assert.rejects(driver.restore({ ...full, targetPath: small, targetIsZeroed: false, discardExcess: true }), (e: unknown) => e instanceof BackupDriverError && e.reason === 'Invalid');
    });

    test('a corrupt full chunk or delta file fails the restore naming the chunk and the file', async () => {
      const flip = (file: string) => {
        const path = join(dir, 'backups', file);
        const body = readFileSync(path);
        const flipped = Buffer.from(body);
        flipped[Math.floor(flipped.length / 2)]! ^= 0xff;
        writeFileSync(path, flipped);
        return () => writeFileSync(path, body);
      };
      const target = join(dir, 'restore-corrupt');
      blankFile(target, sizeBytes);
      const fullFile = dataChunk((await driver.readManifest(full)) as BackupManifestV2, 3).sources[0]!.file;
      let undo = flip(fullFile);
      await assert.rejects(
        driver.restore({ ...full, targetPath: target, targetIsZeroed: true, discardExcess: true }),
        (e: unknown) => e instanceof BackupDriverError && e.reason === 'Corrupt' && e.message.includes('chunk 3 ') && e.message.includes(fullFile),
      );
      // The incremental reads that file too.
      await assert.rejects(driver.restore({ ...incremental, targetPath: target, targetIsZeroed: true, discardExcess: true }), (e: unknown) => e instanceof BackupDriverError && e.message.includes(fullFile));
      undo();
      const deltaFile = dataChunk((await driver.readManifest(incremental)) as BackupManifestV2, 0).sources[1]!.file;
      undo = flip(deltaFile);
      await assert.rejects(
        driver.restore({ ...incremental, targetPath: target, targetIsZeroed: true, discardExcess: true }),
        (e: unknown) => e instanceof BackupDriverError && e.reason === 'Corrupt' && e.message.includes('chunk 0 ') && e.message.includes(deltaFile) && !e.message.includes(full.backupId + '/chunk'),
      );
      undo();
      rmSync(deltaFile.startsWith('other') ? join(dir, 'backups', deltaFile) : '', { force: true });
      await assert.rejects(
        driver.restore({ ...incremental, targetPath: target, targetIsZeroed: true, discardExcess: true }),
        (e: unknown) => e instanceof BackupDriverError && e.reason === 'Corrupt' && e.message.includes(deltaFile) && /cannot be read/.test(e.message),
      );
      assert.equal(await driver.firstMissing(await driver.referencedFiles(incremental)), deltaFile);
    });

    test('delete removes the directory and succeeds when it is already gone', async () => {
      await driver.delete(incremental);
      await driver.delete(incremental);
      assert.ok(!existsSync(join(dir, 'backups', 'other', incremental.backupId)));
      await assert.rejects(driver.readManifest(incremental), (e: unknown) => e instanceof BackupDriverError && e.reason === 'NotFound');
    });
  });
}

describe('posix backup driver limits and old manifests', () => {
  let dir: string;
  let driver: PosixBackupDriver;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pumice-backup-unit-'));
    driver = new PosixBackupDriver({ root: join(dir, 'backups'), chunkBytes: 256 * KiB, codec: 'brotli', concurrencyMax: 2 });
    await driver.start();
  });
  after(async () => {
    await driver.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const id = (n: number) => `${String(n).padStart(8, '0')}-0000-4000-8000-000000000000`;

  test(`a chunk is read from at most ${sourcesPerChunkMax} files; a chunk more than half changed is stored whole`, async () => {
    const source = join(dir, 'volume');
    writeFileSync(source, randomBytes(512 * KiB));
    const images: Buffer[] = [];
    let parent: { backupId: string; container: string } | null = null;
    for (let n = 0; n < sourcesPerChunkMax + 3; n++) {
      if (n > 0) await writeAt(source, n * 8192, randomBytes(4096));
      if (n === 5) await writeAt(source, 256 * KiB, randomBytes(160 * KiB)); // chunk 1: 40 of 64 blocks
      images.push(readFileSync(source));
      const location = { backupId: id(n), container: 'c' };
      const manifest = await driver.backup({ ...location, volumeId: 'v', sourcePath: source, sizeBytes: 512 * KiB, parent });
      const chunk0 = manifest.chunks[0] as DataChunk;
      assert.ok(chunk0.sources.length <= sourcesPerChunkMax, `backup ${n}: ${chunk0.sources.length} sources`);
      if (n === 5) assert.equal((manifest.chunks[1] as DataChunk).sources[0]!.file, `c/${id(5)}/chunk-00000001.raw`);
      parent = location;
    }
    const last = (await driver.readManifest(parent!)) as BackupManifestV2;
    assert.ok((last.chunks[0] as DataChunk).sources.length < sourcesPerChunkMax, 'the chunk was stored whole again once it hit the limit');
    for (const [n, image] of images.entries()) {
      const target = join(dir, 'target');
      blankFile(target, 512 * KiB);
      await driver.restore({ backupId: id(n), container: 'c', targetPath: target, targetIsZeroed: true, discardExcess: true });
      assert.ok(readFileSync(target).equals(image), `restore of backup ${n}`);
    }
  });

  test("a parent's damaged digest file makes the incremental store the chunk whole, never trust it", async () => {
    const source = join(dir, 'volume-digests');
    writeFileSync(source, randomBytes(512 * KiB));
    const parent = { backupId: 'aaaaaaaa-0000-4000-8000-000000000000', container: 'd' };
    const manifest = (await driver.backup({ ...parent, volumeId: 'v', sourcePath: source, sizeBytes: 512 * KiB, parent: null })) as BackupManifestV2;
    const digestsPath = join(dir, 'backups', manifest.digestsFile);
    const digests = readFileSync(digestsPath);
    digests[5]! ^= 0xff; // chunk 0's first block digest
    writeFileSync(digestsPath, digests);
    await writeAt(source, 4096, randomBytes(4096));
    await writeAt(source, 256 * KiB + 4096, randomBytes(4096));
    const child = { backupId: 'bbbbbbbb-0000-4000-8000-000000000000', container: 'd' };
    const next = (await driver.backup({ ...child, volumeId: 'v', sourcePath: source, sizeBytes: 512 * KiB, parent })) as BackupManifestV2;
    assert.deepEqual((next.chunks[0] as DataChunk).sources.map((s) => [s.file, s.blocks]), [[`d/${child.backupId}/chunk-00000000.raw`, undefined]]);
    assert.deepEqual((next.chunks[1] as DataChunk).sources[1]!.blocks, [[1, 1]], 'the undamaged chunk still stores one block');
    const target = join(dir, 'target-digests');
    blankFile(target, 512 * KiB);
    await driver.restore({ ...child, targetPath: target, targetIsZeroed: true, discardExcess: true });
    assert.ok(readFileSync(target).equals(readFileSync(source)));
  });

  test('a version-1 manifest (one file per chunk, sha256 of its bytes) still restores, and an incremental on it stores whole chunks', async () => {
    const sizeBytes = 600 * KiB;
    const image = Buffer.alloc(sizeBytes);
    randomBytes(256 * KiB).copy(image, 0);
    image.fill(0x42, 512 * KiB);
    const backupId = '99999999-9999-4999-8999-999999999999';
    const own = join(dir, 'backups', 'old', backupId);
    mkdirSync(own, { recursive: true });
    writeFileSync(join(own, 'chunk-00000000.raw'), image.subarray(0, 256 * KiB));
    writeFileSync(join(own, 'chunk-00000002.raw'), image.subarray(512 * KiB));
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    const v1: BackupManifestV1 = {
      format: 'pumice-posix-backup', version: 1, backupId, volumeId: 'v', parentId: null, sizeBytes, chunkBytes: 256 * KiB, codec: 'brotli',
      createdAt: new Date().toISOString(), objectCount: 2, storedBytes: 256 * KiB + 88 * KiB,
      chunks: [
        { index: 0, sha256: sha(image.subarray(0, 256 * KiB)), file: `old/${backupId}/chunk-00000000.raw`, storedBytes: 256 * KiB, raw: true },
        { index: 1, zero: true },
        { index: 2, sha256: sha(image.subarray(512 * KiB)), file: `old/${backupId}/chunk-00000002.raw`, storedBytes: 88 * KiB, raw: true },
      ],
    };
    writeFileSync(join(own, 'manifest.json'), JSON.stringify(v1));
    const target = join(dir, 'old-target');
    writeFileSync(target, Buffer.alloc(sizeBytes + 4096, 0xff));
    await driver.restore({ backupId, container: 'old', targetPath: target, targetIsZeroed: false, discardExcess: true });
    const restored = readFileSync(target);
    assert.ok(restored.subarray(0, sizeBytes).equals(image));
    assert.ok(isZero(restored.subarray(sizeBytes)));

    const source = join(dir, 'old-volume');
    writeFileSync(source, image);
    await writeAt(source, 4096, randomBytes(4096));
    const next = { backupId: '88888888-8888-4888-8888-888888888888', container: 'old' };
    const manifest = await driver.backup({ ...next, volumeId: 'v', sourcePath: source, sizeBytes, parent: { backupId, container: 'old' } });
    assert.equal(manifest.parentId, backupId);
    assert.equal(manifest.objectCount, 2, 'no block digests to compare with: every non-zero chunk stored');
    blankFile(target, sizeBytes);
    await driver.restore({ ...next, targetPath: target, targetIsZeroed: true, discardExcess: true });
    assert.ok(readFileSync(target).equals(readFileSync(source)));

    writeFileSync(join(own, 'manifest.json'), '{"format": "pumice-posix-backup", "version": 7');
    await assert.rejects(driver.readManifest({ backupId, container: 'old' }), (e: unknown) => e instanceof BackupDriverError && e.reason === 'Corrupt' && e.message.includes(backupId));
  });
});

test('isZero looks at every byte', () => {
  const data = Buffer.alloc(3 * MiB + 17);
  assert.ok(isZero(data));
  data[data.length - 1] = 1;
  assert.ok(!isZero(data));
});
