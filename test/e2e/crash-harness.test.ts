/**
 * The seeded crash harness on a fixed, small set of seeds (bench/crash-harness.ts
 * runs many): each seed runs operations on a real server that kills itself
 * (SIGKILL) at a crash point chosen from the seed, restarts it, and checks that nothing is
 * stuck, rows match the backend files and copies hold the source's bytes.
 * A failure names its seed; `runCrashSeed(seed, ...)` replays it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCrashSeed } from '../helpers/crash-harness.ts';

/** Chosen so that 3 operations each cover every operation kind (restore, backups, clone, image paths, cascade delete...). */
const seeds = [2, 8, 24, 65];
const operations = 3;

for (const seed of seeds) {
  test(`crash seed ${seed}: every crash recovers with no stuck resource, no orphan and equal bytes`, { timeout: 300_000 }, async (t) => {
    const result = await runCrashSeed(seed, { operations, log: (line) => t.diagnostic(line) });
    assert.equal(result.steps.length, operations);
  });
}
