/**
 * Issue 12, start-up sweeps: Pumice removes only what it created (its own temporary names,
 * regular files only), logs every removal, never recurses into unknown directories, and leaves
 * volume files without a row alone in an operator's local_volume_dir (another instance may use it).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPumice, type PumiceProcess } from '../helpers/pumice.ts';

describe('start-up sweeps remove only what Pumice created', () => {
  let root: string;
  let pumice: PumiceProcess;
  const ids = { conv: randomUUID(), storeOrphan: randomUUID(), storeTemp: randomUUID(), foreignVolume: randomUUID(), volumeTemp: randomUUID() };
  let conversionDir: string;
  let storeDir: string;
  let volumeDir: string;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'pumice-sec-startup-'));
    conversionDir = join(root, 'scratch');
    storeDir = join(root, 'images');
    volumeDir = join(root, 'volumes');
    for (const dir of [conversionDir, storeDir, volumeDir]) {
      mkdirSync(join(dir, 'operator-subdir'), { recursive: true });
      writeFileSync(join(dir, 'operator-subdir', 'precious'), 'keep me');
      writeFileSync(join(dir, 'NOTES.txt'), 'keep me');
    }
    // Pumice's own leftovers.
    writeFileSync(join(conversionDir, `.pumice-conversion-${ids.conv}.qcow2`), 'x');
    writeFileSync(join(conversionDir, `.pumice-conversion-${ids.conv}.raw`), 'x');
    writeFileSync(join(storeDir, `${ids.storeTemp}.0123456789ab.tmp`), 'x');
    writeFileSync(join(storeDir, ids.storeOrphan), 'x');
    writeFileSync(join(volumeDir, `.tmp-${ids.volumeTemp}`), 'x');
    // Not Pumice's, or not provably so.
    writeFileSync(join(conversionDir, `${ids.conv}.raw`), 'an operator file with a uuid name');
    writeFileSync(join(storeDir, 'something.tmp'), 'x');
    writeFileSync(join(volumeDir, `volume-${ids.foreignVolume}`), 'another instance');
    writeFileSync(join(volumeDir, '.tmp-notes'), 'x');
    mkdirSync(join(root, 'data'), { mode: 0o700 });
    pumice = await startPumice({
      dataDir: join(root, 'data'),
      config:
        `[DEFAULT]\nimage_conversion_dir = ${conversionDir}\nenabled_backends = local\n` +
        `[local]\nvolume_driver = local\nlocal_volume_dir = ${volumeDir}\n` +
        `[glance_store]\nfilesystem_store_datadir = ${storeDir}\n`,
    });
    // The reconciler runs after start; give it a moment.
    for (let i = 0; i < 50 && !/volume-[0-9a-f-]+ in backend \[local\] has no database row/.test(pumice.output()); i++) await new Promise((r) => setTimeout(r, 100));
  });

  after(async () => {
    await pumice?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  test("Pumice's own leftovers are removed, each with a log line", () => {
    const log = pumice.output();
    for (const path of [
      join(conversionDir, `.pumice-conversion-${ids.conv}.qcow2`),
      join(conversionDir, `.pumice-conversion-${ids.conv}.raw`),
      join(storeDir, `${ids.storeTemp}.0123456789ab.tmp`),
      join(storeDir, ids.storeOrphan),
      join(volumeDir, `.tmp-${ids.volumeTemp}`),
    ]) {
      assert.ok(!existsSync(path), `${path} is still there`);
      assert.ok(log.includes(`removed ${path}`), `no log line for ${path}:\n${log}`);
    }
  });

  test('operator files, unknown names and directories stay', () => {
    for (const dir of [conversionDir, storeDir, volumeDir]) {
      assert.ok(existsSync(join(dir, 'operator-subdir', 'precious')), `${dir}/operator-subdir was emptied`);
      assert.ok(existsSync(join(dir, 'NOTES.txt')), `${dir}/NOTES.txt was removed`);
    }
    assert.ok(existsSync(join(conversionDir, `${ids.conv}.raw`)));
    assert.ok(existsSync(join(storeDir, 'something.tmp')));
    assert.ok(existsSync(join(volumeDir, '.tmp-notes')));
  });

  test("a volume file with no row in an operator's local_volume_dir is reported, not removed", () => {
    assert.ok(existsSync(join(volumeDir, `volume-${ids.foreignVolume}`)));
    assert.match(pumice.output(), new RegExp(`volume-${ids.foreignVolume} in backend \\[local\\] has no database row here; left alone`));
  });
});
