/**
 * The posix backup driver's chunk and manifest logic on real files: zero
 * chunks are recorded, not stored; an incremental stores only changed chunks
 * and references its parent's; restores are byte-identical, zero what the
 * target held before and discard excess bytes; corruption names the chunk.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync, truncateSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackupDriverError, PosixBackupDriver, isZero, type ChunkCodec } from '../../src/backup/drivers/posix.ts';

const MiB = 1024 * 1024;
const chunkBytes = MiB;
/** Not a multiple of the chunk size: the last chunk is short. */
const sizeBytes = 8 * MiB + 100 * 1024;

async function writeAt(path: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  await fh.write(data, 0, data.length, offset);
  await fh.close();
}

for (const codec of ['brotli', 'none'] as ChunkCodec[]) {
  describe(`posix backup driver (${codec})`, () => {
    let dir: string;
    let driver: PosixBackupDriver;
    let source: string;
    let imageAtFull: Buffer;
    let imageAtIncremental: Buffer;
    const full = { backupId: '11111111-1111-4111-8111-111111111111', container: 'volumebackups' };
    const incremental = { backupId: '22222222-2222-4222-8222-222222222222', container: 'other' };

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'pumice-backup-unit-'));
      driver = new PosixBackupDriver({ root: join(dir, 'backups'), chunkBytes, codec, concurrencyMax: 3 });
      await driver.start();
      source = join(dir, 'volume');
      writeFileSync(source, '');
      truncateSync(source, sizeBytes);
      await writeAt(source, 0, randomBytes(MiB));
      await writeAt(source, 3 * MiB + 4096, Buffer.alloc(8192, 0x5a));
      await writeAt(source, 8 * MiB + 50 * 1024, randomBytes(1000)); // inside the short last chunk
      imageAtFull = readFileSync(source);
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    test('a full backup stores non-zero chunks only, with their sha256, and a manifest', async () => {
      const manifest = await driver.backup({ ...full, volumeId: 'v', sourcePath: source, sizeBytes, parent: null });
      assert.equal(manifest.chunks.length, 9);
      assert.deepEqual(manifest.chunks.filter((c) => !c.zero).map((c) => c.index), [0, 3, 8]);
      assert.equal(manifest.objectCount, 3);
      const files = readdirSync(join(dir, 'backups', 'volumebackups', full.backupId)).sort();
      assert.equal(files.length, 4, files.join(','));
      assert.ok(files.includes('manifest.json'));
      assert.ok(!files.some((f) => f.endsWith('.tmp')));
      const stored = await driver.readManifest(full);
      assert.deepEqual(stored, manifest);
      // Under brotli, the random chunk is stored raw (a sample showed it does not compress); the patterned one compressed.
      const [random, , , patterned] = manifest.chunks;
      assert.ok(random && !random.zero && patterned && !patterned.zero);
      assert.equal(random.raw, codec === 'brotli' ? true : undefined);
      assert.equal(patterned.raw, undefined);
      if (codec === 'brotli') assert.ok(patterned.storedBytes < 64 * 1024, `patterned chunk stored ${patterned.storedBytes} bytes`);
    });

    test('an incremental stores only the changed chunks and references the parent for the rest', async () => {
      await writeAt(source, 5 * MiB, randomBytes(4096)); // chunk 5 was zero
      await writeAt(source, 3 * MiB, Buffer.alloc(10, 0x01)); // chunk 3 changes
      imageAtIncremental = readFileSync(source);
      const manifest = await driver.backup({ ...incremental, volumeId: 'v', sourcePath: source, sizeBytes, parent: full });
      assert.equal(manifest.parentId, full.backupId);
      assert.equal(manifest.objectCount, 2);
      const own = manifest.chunks.filter((c) => !c.zero && c.file.startsWith(`other/${incremental.backupId}/`)).map((c) => c.index);
      assert.deepEqual(own, [3, 5]);
      const chunk0 = manifest.chunks[0]!;
      assert.ok(!chunk0.zero && chunk0.file.startsWith(`volumebackups/${full.backupId}/`), JSON.stringify(chunk0));
      assert.ok(manifest.storedBytes <= 2 * chunkBytes + 1024);
    });

    test('restores are byte-identical to the volume at each backup time', async () => {
      const fresh = join(dir, 'restore-full');
      writeFileSync(fresh, '');
      truncateSync(fresh, sizeBytes);
      await driver.restore({ ...full, targetPath: fresh, targetIsZeroed: true, discardExcess: true });
      assert.ok(readFileSync(fresh).equals(imageAtFull));

      // An existing, larger volume full of 0xff: zero chunks and the excess must read back as zeros.
      const existing = join(dir, 'restore-existing');
      writeFileSync(existing, Buffer.alloc(sizeBytes + 2 * MiB, 0xff));
      await driver.restore({ ...incremental, targetPath: existing, targetIsZeroed: false, discardExcess: true });
      const restored = readFileSync(existing);
      assert.ok(restored.subarray(0, sizeBytes).equals(imageAtIncremental));
      assert.ok(isZero(restored.subarray(sizeBytes)));
    });

    test('a target smaller than the backup is refused', async () => {
      const small = join(dir, 'small');
      writeFileSync(small, Buffer.alloc(MiB));
      await assert.rejects(driver.restore({ ...full, targetPath: small, targetIsZeroed: false, discardExcess: true }), (e: unknown) => e instanceof BackupDriverError && e.reason === 'Invalid');
    });

    test('a corrupt chunk fails the restore with a message naming the chunk and its file', async () => {
      const manifest = await driver.readManifest(full);
      const chunk = manifest.chunks[3]!;
      assert.ok(!chunk.zero);
      const path = join(dir, 'backups', chunk.file);
      const body = readFileSync(path);
      const flipped = Buffer.from(body);
      flipped[Math.floor(flipped.length / 2)]! ^= 0xff;
      writeFileSync(path, flipped);
      const target = join(dir, 'restore-corrupt');
      writeFileSync(target, '');
      truncateSync(target, sizeBytes);
      await assert.rejects(
        driver.restore({ ...full, targetPath: target, targetIsZeroed: true, discardExcess: true }),
        (e: unknown) => e instanceof BackupDriverError && e.reason === 'Corrupt' && e.message.includes('chunk 3') && e.message.includes(chunk.file),
      );
      writeFileSync(path, body);
    });

    test('delete removes the directory and succeeds when it is already gone', async () => {
      await driver.delete(incremental);
      await driver.delete(incremental);
      assert.ok(!existsSync(join(dir, 'backups', 'other', incremental.backupId)));
      await assert.rejects(driver.readManifest(incremental), (e: unknown) => e instanceof BackupDriverError && e.reason === 'NotFound');
    });
  });
}

test('isZero looks at every byte', () => {
  const data = Buffer.alloc(3 * MiB + 17);
  assert.ok(isZero(data));
  data[data.length - 1] = 1;
  assert.ok(!isZero(data));
});
