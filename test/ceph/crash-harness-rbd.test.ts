/**
 * The seeded crash harness on the Ceph lab (bench/crash-harness.ts --backend
 * ceph runs many seeds): RBD volumes and the Ceph backup driver in pools made
 * for each seed. The seeds are chosen so their operations crash inside the
 * drivers — between RBD's clone snapshot, protect and clone, after a
 * delete's snapshots went and before the trash move, between a backup's
 * source snapshot, image and copy — and after each restart the rows must
 * match `rbd ls`, every image's snapshots, the trash and the backup images,
 * and every copy must hold the source's bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readLab } from '../../src/ceph/lab.ts';
import { runCrashSeed } from '../helpers/crash-harness.ts';

const shared = process.env['PUMICE_CEPH_LAB'];
/** 205: cascade delete at rbd.delete.snapshots-removed, full and incremental backups at ceph-backup.source-snapshot-taken; 289: clone at rbd.clone.snapshot-taken, volume from snapshot at rbd.clone.cloned and rbd.clone.protected; 126: full backup at ceph-backup.image-created, clone at rbd.clone.cloned. */
const seeds = [205, 289, 126];
const operations = 3;

for (const seed of seeds) {
  test(`Ceph crash seed ${seed}: crashes inside the RBD and backup drivers recover with no stuck resource, no orphan image or snapshot, equal bytes`, { timeout: 300_000 }, async (t) => {
    assert.ok(shared, 'set PUMICE_CEPH_LAB to a running lab (these tests never start or stop one)');
    const result = await runCrashSeed(seed, { operations, backend: { ceph: readLab(shared) }, log: (line) => t.diagnostic(line) });
    assert.equal(result.steps.length, operations);
    assert.ok(result.steps.some((s) => s.crashed && /^(rbd|ceph-backup)\./.test(s.crashPoint ?? '')), `a crash inside a driver: ${JSON.stringify(result.steps)}`);
  });
}
