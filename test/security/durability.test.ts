/**
 * The image file store's publish is durable (issue 12, "rename without a
 * directory fsync"): the data file is fsynced before its rename, and the
 * store directory is fsynced after it, for an upload (commit), a staged
 * import (stage) and its publication (commitStaged). Watched with strace on
 * a process that does exactly that through FileStore, so the order of the
 * system calls is what the kernel saw, not what the code intends.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const storeModule = resolve(import.meta.dirname, '..', '..', 'src', 'image', 'stores', 'file.ts');
const uploaded = '11111111-1111-4111-8111-111111111111';
const imported = '22222222-2222-4222-8222-222222222222';

test('upload, stage and import publish: fsync of the data, rename, then fsync of the store directory', async () => {
  const work = mkdtempSync(join(tmpdir(), 'pumice-durability-'));
  try {
    const storeDir = join(work, 'images');
    const script = join(work, 'publish.mts');
    writeFileSync(script, `
import { Readable } from 'node:stream';
import { FileStore } from ${JSON.stringify(storeModule)};
const store = new FileStore(${JSON.stringify(storeDir)});
const data = () => Readable.from([Buffer.alloc(65536, 7)]);
await store.commit(${JSON.stringify(uploaded)}, await store.write(${JSON.stringify(uploaded)}, data(), { expectedBytes: 65536, sizeBytesMax: 1 << 20 }));
await store.stage(${JSON.stringify(imported)}, await store.write(${JSON.stringify(imported)}, data(), { expectedBytes: 65536, sizeBytesMax: 1 << 20 }));
await store.commitStaged(${JSON.stringify(imported)});
`);
    const trace = join(work, 'trace.txt');
    // -y prints the path of each descriptor, so an fsync names the file or directory it synced.
    await execFileAsync('strace', ['-f', '-y', '-qq', '-e', 'trace=rename,renameat,renameat2,fsync,fdatasync', '-o', trace, process.execPath, '--import', 'tsx', script], {
      cwd: resolve(import.meta.dirname, '..', '..'),
      timeout: 60_000,
    });
    const calls = readFileSync(trace, 'utf8').split('\n').filter((line) => /\b(rename\w*|f(data)?sync)\(/.test(line));
    const index = (predicate: (line: string) => boolean, from = 0) => calls.findIndex((line, i) => i >= from && predicate(line));
    const dirSync = (line: string) => /f(data)?sync\(\d+<([^>]*)>/.exec(line)?.[2] === storeDir;
    const renameTo = (name: string) => (line: string) => /rename/.test(line) && line.includes(`${storeDir}/${name}"`);
    for (const [name, what] of [[uploaded, 'upload'], [`${imported}.staged`, 'stage'], [imported, 'import publish']] as const) {
      const renamed = index(renameTo(name));
      assert.ok(renamed >= 0, `${what}: a rename to ${name}:\n${calls.join('\n')}`);
      // Before the next rename: each publish makes its own rename durable before it returns.
      const nextRename = index((line) => /rename/.test(line), renamed + 1);
      const synced = index(dirSync, renamed + 1);
      assert.ok(synced > renamed && (nextRename < 0 || synced < nextRename), `${what}: the store directory is fsynced after the rename, before anything else is published:\n${calls.join('\n')}`);
    }
    // The data itself reached the disk before it was published.
    const firstRename = index(renameTo(uploaded));
    assert.ok(calls.slice(0, firstRename).some((line) => /f(data)?sync\(\d+<[^>]*\.tmp>/.test(line)), `the temp file is fsynced before the rename:\n${calls.join('\n')}`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
