/**
 * The test guest image (scripts/build-test-guest.sh), built once per machine
 * into a cache under os.tmpdir() keyed by a hash of the builder script, so a
 * changed builder rebuilds and an unchanged one costs nothing. Concurrent
 * callers (several test processes) each build to their own temporary name and
 * rename atomically: the loser's rename just replaces an identical file.
 *
 * Markers the guest prints on ttyS0 (see the builder's header):
 * PUMICE-GUEST-BOOTED, PUMICE-GUEST-READY, PUMICE-DISK serial=S counter=N,
 * PUMICE-DISK-GONE serial=S, PUMICE-DISK-ERROR ..., PUMICE-GUEST-POWEROFF.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const repoRoot = path.resolve(import.meta.dirname, '..', '..');
const builderPath = path.join(repoRoot, 'scripts', 'build-test-guest.sh');
/** apt-get update + a ~70 MB kernel download on a fresh machine, then seconds. */
const buildTimeoutMs = 600_000;

export const guestMarkers = {
  booted: 'PUMICE-GUEST-BOOTED',
  ready: 'PUMICE-GUEST-READY',
  poweroff: 'PUMICE-GUEST-POWEROFF',
} as const;

let pending: Promise<string> | null = null;

/** Path of the built raw image (read-only for callers: copy it before booting from it). */
export function testGuestImage(): Promise<string> {
  pending ??= build().catch((err: unknown) => {
    pending = null;
    throw err;
  });
  return pending;
}

async function build(): Promise<string> {
  const hash = createHash('sha256').update(readFileSync(builderPath)).digest('hex').slice(0, 16);
  const cacheDir = path.join(tmpdir(), 'pumice-test-guest');
  mkdirSync(cacheDir, { recursive: true, mode: 0o755 });
  const imagePath = path.join(cacheDir, `guest-${hash}.raw`);
  if (exists(imagePath)) return imagePath;
  const tempPath = `${imagePath}.build-${process.pid}-${Date.now()}`;
  try {
    // The builder writes OUT.tmp.PID and renames it to OUT, so tempPath appears whole or not at all.
    await execFileAsync('bash', [builderPath, tempPath], { timeout: buildTimeoutMs, maxBuffer: 16 * 1024 * 1024 });
    renameSync(tempPath, imagePath);
  } catch (err) {
    await rm(tempPath, { force: true });
    const e = err as { stderr?: string; message?: string };
    throw new Error(`building the test guest failed: ${(e.stderr ?? '').trim() || e.message}`);
  }
  return imagePath;
}

function exists(file: string): boolean {
  try {
    return statSync(file).size > 0;
  } catch {
    return false;
  }
}

/** Lines of a console log that carry PUMICE-DISK counters for one serial, as numbers in order. */
export function diskCounters(consoleText: string, serial: string): number[] {
  const counters: number[] = [];
  const re = /PUMICE-DISK serial=(\S*) counter=(\d+)/g;
  for (const m of consoleText.matchAll(re)) if (m[1] === serial) counters.push(Number(m[2]));
  return counters;
}

/** The ticker's acknowledged writes (PUMICE-TICK serial=S n=N) for one serial, in console order. */
export function tickCounters(consoleText: string, serial: string): number[] {
  const ticks: number[] = [];
  for (const m of consoleText.matchAll(/PUMICE-TICK serial=(\S*) n=(\d+)/g)) if (m[1] === serial) ticks.push(Number(m[2]));
  return ticks;
}

/** Every acknowledged tick went up by exactly one from the one before (no write lost, none repeated). */
export function assertConsecutive(ticks: number[], what: string): void {
  assert.ok(ticks.length > 0, `${what}: no ticks`);
  for (let i = 1; i < ticks.length; i++) {
    assert.equal(ticks[i], ticks[i - 1]! + 1, `${what}: tick ${ticks[i - 1]} was followed by ${ticks[i]} (a lost or repeated write), around ${JSON.stringify(ticks.slice(Math.max(0, i - 3), i + 3))}`);
  }
}
