/**
 * Crash safety of the local backend's copies (clone, volume from snapshot, from an image file,
 * snapshot, revert): they run `cp` into a temporary file renamed into place. A kill -9 of the
 * server does not kill its `cp`: the orphan goes on writing into the file it opened. The copy
 * that the restarted server runs again must never be that file, or the volume marked available
 * is one the orphan still writes into (and truncated under it, a partial copy).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalBackend, nullExporter } from '../../src/volume/drivers/local.ts';

const MiB = 1024 * 1024;

function backendIn(dir: string): LocalBackend {
  return new LocalBackend({ section: 'local', directory: dir, exporter: nullExporter, reportDiscard: false });
}

function readAt(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, offset);
    return buf;
  } finally {
    closeSync(fd);
  }
}

test('a copy run again after a crash is not the file the dead process\'s cp still writes into', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pumice-local-copy-'));
  try {
    const backend = backendIn(dir);
    await backend.start();
    const source = randomUUID();
    await backend.createVolume({ id: source, sizeGiB: 1 });
    const fd = openSync(join(dir, `volume-${source}`), 'r+');
    writeSync(fd, Buffer.alloc(MiB, 0x5a), 0, MiB, 0);
    closeSync(fd);

    for (const [what, run] of [
      ['clone', (id: string) => backend.cloneVolume({ id, sizeGiB: 1 }, { id: source, sizeGiB: 1 })],
      ['volume from snapshot', async (id: string) => {
        const snap = randomUUID();
        await backend.createSnapshot({ id: snap, volumeId: source, sizeGiB: 1 });
        await backend.createVolumeFromSnapshot({ id, sizeGiB: 1 }, { id: snap, volumeId: source, sizeGiB: 1 });
      }],
    ] as const) {
      const id = randomUUID();
      // The dead process's cp: it opened the temporary file by the name a copy of this volume used
      // there (late, on a loaded machine: after the restarted server's sweep) and is still writing.
      const names = [`.tmp-${id}`, `.tmp-${id}.${process.pid + 1}`];
      const orphans = names.map((name) => openSync(join(dir, name), 'w'));
      await run(id);
      for (const orphan of orphans) {
        writeSync(orphan, Buffer.alloc(4096, 0xee), 0, 4096, 0);
        closeSync(orphan);
      }
      const head = readAt(join(dir, `volume-${id}`), 0, 4096);
      assert.equal(head.findIndex((b) => b !== 0x5a), -1, `${what}: the volume is the file an orphaned cp writes into (byte 0 is ${head[0]!.toString(16)})`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a start sweeps the temporary copies of dead processes, and nothing else', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pumice-local-copy-'));
  try {
    const id = randomUUID();
    const swept = [`.tmp-${id}`, `.tmp-${id}-revert`, `.tmp-${id}.4242`, `.tmp-${id}-revert.4242`];
    const kept = [`.tmp-${id}.x`, `.tmp-notauuid.4242`, 'other'];
    for (const name of [...swept, ...kept]) writeFileSync(join(dir, name), 'x');
    await backendIn(dir).start();
    assert.deepEqual(readdirSync(dir).sort(), [...kept].sort());
    for (const name of swept) assert.ok(!existsSync(join(dir, name)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
