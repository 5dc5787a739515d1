/**
 * A clone chain deleted end to end while the background flatten of its deepest member and that
 * flatten's clean-up of its parent still run (what test/ceph/rbd-volumes.test.ts's chain test does
 * at CI speed). The delete of a volume and a clean-up of the same image used to run at once on two
 * handles of one process: a snapshot removed by the clean-up was taken, inside the delete, for the
 * image being gone, so the volume's image stayed in the pool for good (and its parents with it),
 * and two handles changing one image race on its exclusive lock, which librbd may abort on.
 * Changes of one image are now queued per image in the driver.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { readLab } from '../../src/ceph/lab.ts';
import { loadConfig } from '../../src/config/config.ts';
import { RbdBackend } from '../../src/volume/drivers/rbd.ts';

const execFileAsync = promisify(execFile);
const shared = process.env['PUMICE_CEPH_LAB'];

test('a chain deleted child first while its flatten cleans up leaves nothing in the pool', { skip: shared ? false : 'needs $PUMICE_CEPH_LAB', timeout: 300_000 }, async (t) => {
  const lab = readLab(shared!);
  const admin = async (tool: string, ...args: string[]) => (await execFileAsync(tool, ['--conf', lab.confPath, '--id', 'admin', ...args], { timeout: 120_000 })).stdout;
  const pool = `chain-delete-${process.pid}`;
  const scratch = mkdtempSync(join(tmpdir(), 'pumice-chain-delete-'));
  const logged: string[] = [];
  let backend: RbdBackend | null = null;
  const leftovers = async () => [
    ...(JSON.parse(await admin('rbd', 'ls', '--format', 'json', pool)) as string[]),
    ...(JSON.parse(await admin('rbd', 'trash', 'ls', '--format', 'json', pool)) as { name: string }[]).map((e) => `trash:${e.name}`),
  ];
  try {
    await admin('ceph', 'osd', 'pool', 'create', pool, '8', '8');
    await admin('rbd', 'pool', 'init', pool);
    const configPath = join(scratch, 'pumice.conf');
    writeFileSync(configPath, `[DEFAULT]\nenabled_backends = chain\n\n[chain]\nvolume_driver = rbd\nrbd_pool = ${pool}\nrbd_user = admin\nrbd_ceph_conf = ${lab.confPath}\nrbd_max_clone_depth = 2\n`);
    backend = new RbdBackend({ config: loadConfig(configPath, scratch).backends[0]!, log: (line) => logged.push(line) });
    await backend.start();
    for (let round = 0; round < 5; round++) {
      const chain = [0, 1, 2, 3].map(() => ({ id: randomUUID(), sizeGiB: 1 }));
      await backend.createVolume(chain[0]!);
      // d3 is the third clone: deeper than rbd_max_clone_depth, so its flatten starts in the background.
      for (let i = 1; i < chain.length; i++) await backend.cloneVolume(chain[i]!, chain[i - 1]!);
      // The deletes come while the flatten, or its clean-up of d2's snapshot, runs (a few rounds, a few moments).
      await new Promise((r) => setTimeout(r, 50 * round));
      for (const volume of [...chain].reverse()) await backend.deleteVolume(volume);
    }
    // The purges and parents' clean-ups follow the deletes in the background; the collector takes what they defer.
    const deadline = Date.now() + 60_000;
    let left = await leftovers();
    while (left.length > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 1000));
      await backend.maintain();
      left = await leftovers();
    }
    t.diagnostic(`driver log: ${logged.length} lines`);
    assert.deepEqual(left, [], `the pool still holds ${left.join(', ')}; driver log:\n${logged.join('\n')}`);
    assert.ok(!logged.some((line) => /failed/.test(line)), logged.join('\n'));
  } finally {
    await backend?.stop().catch(() => undefined);
    await admin('ceph', 'osd', 'pool', 'delete', pool, pool, '--yes-i-really-really-mean-it').catch(() => undefined);
    rmSync(scratch, { recursive: true, force: true });
  }
});
