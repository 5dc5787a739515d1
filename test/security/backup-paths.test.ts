/**
 * Issue 12 (Low): manifests come back through backup-record imports, so the paths they name are
 * input. A chunk, delta or digest file outside the backup directory (`../`, absolute) is refused
 * as a corrupt backup: a restore never reads a host file into a volume.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackupDriverError, PosixBackupDriver } from '../../src/backup/drivers/posix.ts';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'pumice-sec-backup-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('a manifest naming files outside the backup directory is refused, and nothing is read from there', async () => {
  const driver = new PosixBackupDriver({ root: join(dir, 'backups'), chunkBytes: 1024 * 1024, codec: 'none', concurrencyMax: 2 });
  const source = join(dir, 'volume');
  writeFileSync(source, randomBytes(2 * 1024 * 1024));
  const location = { backupId: '44444444-4444-4444-8444-444444444444', container: 'volumebackups' };
  await driver.backup({ ...location, volumeId: 'v', sourcePath: source, sizeBytes: 2 * 1024 * 1024, parent: null });
  // The host file the attacker wants, and a manifest edited to point at it.
  const secret = join(dir, 'host-secret');
  writeFileSync(secret, Buffer.alloc(1024 * 1024, 0x53));
  const manifestPath = join(dir, 'backups', location.container, location.backupId, 'manifest.json');
  const original = readFileSync(manifestPath, 'utf8');
  for (const evil of ['../host-secret', 'volumebackups/../../host-secret', secret]) {
    const manifest = JSON.parse(original) as { chunks: { sources?: { file: string }[]; file?: string }[]; digestsFile?: string };
    for (const chunk of manifest.chunks) {
      if (chunk.sources) for (const s of chunk.sources) s.file = evil;
      if (chunk.file) chunk.file = evil;
    }
    writeFileSync(manifestPath, JSON.stringify(manifest));
    const target = join(dir, 'restored');
    writeFileSync(target, '');
    truncateSync(target, 2 * 1024 * 1024);
    await assert.rejects(
      driver.restore({ ...location, targetPath: target, targetIsZeroed: true, discardExcess: true }),
      (error: unknown) => error instanceof BackupDriverError && /outside the backup directory/.test(error.message),
    );
    assert.ok(!readFileSync(target).includes(Buffer.alloc(64, 0x53)), 'host file bytes were restored into the volume');
    // A record check counts such a file as missing, never as present.
    assert.equal(await driver.firstMissing([evil]), evil);
  }
  await driver.stop();
});
