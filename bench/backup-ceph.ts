/**
 * The Ceph backup driver against `rbd export | rbd import` on the lab
 * cluster, in one run:
 *   1. an RBD volume image (`--gib`, default 2) filled with random bytes
 *      through librbd as client.admin, in a pool made for the run (a Pumice
 *      starting with an RBD backend on pool `volumes` removes the images its
 *      database does not know, so a shared lab's `volumes` is not safe);
 *   2. baseline: `rbd --id admin export POOL/IMG - | rbd --id cinder-backup
 *      import - backups/IMG.baseline` (the users the driver uses), timed;
 *      the copy stays (with a snapshot on both sides) for step 4's baseline;
 *   3. a full backup with CephBackupDriver (source read as client.admin,
 *      backup image written as client.cinder-backup, backup_ceph_chunk_size
 *      128 MiB as in the scenario): time and ratio to the baseline;
 *   4. 1% of the volume changed in random 4 KiB writes; baseline: `rbd snap
 *      create` + `rbd export-diff --from-snap | rbd import-diff` into that
 *      copy; then the driver's incremental: bytes moved (data bytes the
 *      driver wrote), time against the full and against the baseline, and
 *      its time by phase (CephBackupDriver.lastBackupPhases);
 *   5. restores of that incremental: into a new zeroed image, then over the
 *      volume it came from after another 1% changed there (the driver
 *      rewrites only what differs): time and data bytes written; both are
 *      checked byte-identical (sha256) against the volume at backup time.
 * The driver runs in this process, as the backup role runs it in `pumice
 * serve` (no HTTP or database in the measured time). Everything it creates
 * is removed at the end.
 *
 *   PUMICE_CEPH_LAB=/tmp/pumice-dev-lab node --import tsx bench/backup-ceph.ts [--gib N]
 *
 * MB/s are 10^6 bytes per second of volume size.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { readLab } from '../src/ceph/lab.ts';
import { RadosCluster, type IoCtx } from '../src/ceph/rbd.ts';
import { CephBackupDriver } from '../src/backup/drivers/ceph.ts';
import type { VolumeSource } from '../src/backup/drivers/driver.ts';
import { formatPhases } from '../src/backup/drivers/phases.ts';
import { loadavg } from 'node:os';
import { arg, machineBusySeconds, now } from './lib.ts';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const sizeBytes = arg('gib', 2) * GiB;
const labDir = process.env['PUMICE_CEPH_LAB'];
if (!labDir) {
  console.error('set PUMICE_CEPH_LAB to a running lab directory (e.g. /tmp/pumice-dev-lab)');
  process.exit(2);
}
const lab = readLab(labDir);
const conf = lab.confPath;
const mbps = (bytes: number, ms: number) => `${(bytes / 1e6 / (ms / 1000)).toFixed(0)} MB/s`;
const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

/** `rbd export | rbd import` of the volume (full), or `rbd export-diff | rbd import-diff` between two of its snapshots. */
function pipeline(diff?: { fromSnap: string; toSnap: string }): Promise<void> {
  return new Promise((resolve, reject) => {
    const exportArgs = diff ? ['export-diff', '--no-progress', '--from-snap', diff.fromSnap, `${poolName}/${image}@${diff.toSnap}`, '-'] : ['export', '--no-progress', `${poolName}/${image}`, '-'];
    const importArgs = diff ? ['import-diff', '--no-progress', '-', `backups/${image}.baseline`] : ['import', '--no-progress', '-', `backups/${image}.baseline`];
    const exporter = spawn('rbd', ['--conf', conf, '--id', 'admin', ...exportArgs], { stdio: ['ignore', 'pipe', 'inherit'] });
    const importer = spawn('rbd', ['--conf', conf, '--id', 'cinder-backup', ...importArgs], { stdio: ['pipe', 'ignore', 'inherit'] });
    exporter.stdout.pipe(importer.stdin);
    let pending = 2;
    const done = (what: string) => (code: number | null) => {
      if (code !== 0) reject(new Error(`${what} exited with ${code}`));
      else if (--pending === 0) resolve();
    };
    exporter.on('exit', done('rbd export'));
    importer.on('exit', done('rbd import'));
  });
}

/** CPU of this process (the driver and librados) and of every other process over a phase, and the load average. */
function meter(): () => string {
  const t0 = now();
  const own0 = process.cpuUsage();
  const machine0 = machineBusySeconds();
  return () => {
    const elapsedS = (now() - t0) / 1000;
    const own = process.cpuUsage(own0);
    const ownS = (own.user + own.system) / 1e6;
    const otherS = Math.max(0, machineBusySeconds() - machine0 - ownS);
    return `[driver process ${((ownS / elapsedS) * 100).toFixed(0)}%, other processes (OSDs included) ${((otherS / elapsedS) * 100).toFixed(0)}% of one core; load average ${loadavg()[0]!.toFixed(1)}]`;
  };
}

async function sha256(pool: IoCtx, name: string): Promise<string> {
  const hash = createHash('sha256');
  await pool.withImage(name, { readOnly: true }, async (img) => {
    for (let offset = 0; offset < sizeBytes; offset += 64 * MiB) hash.update(await img.read(offset, Math.min(64 * MiB, sizeBytes - offset)));
  });
  return hash.digest('hex');
}

async function changeOnePercent(name: string): Promise<number> {
  const blocks = new Set<number>();
  const count = Math.round((0.01 * sizeBytes) / 4096);
  while (blocks.size < count) blocks.add(Math.floor(Math.random() * (sizeBytes / 4096)));
  const list = [...blocks];
  await volumes.withImage(name, {}, async (img) => {
    for (let i = 0; i < list.length; i += 128) await Promise.all(list.slice(i, i + 128).map((b) => img.write(b * 4096, randomBytes(4096))));
    await img.flush();
  });
  return count;
}

const poolName = `backup-bench-${process.pid}`;
const volumeId = randomUUID();
const image = `volume-${volumeId}`;
const admin = await RadosCluster.connect({ confPath: conf, user: 'admin', keyringPath: lab.keyringPath('admin'), connectTimeoutSeconds: 10 });
execFileSync('ceph', ['--conf', conf, '--id', 'admin', 'osd', 'pool', 'create', poolName, '16', '16'], { stdio: 'ignore' });
execFileSync('rbd', ['--conf', conf, '--id', 'admin', 'pool', 'init', poolName]);
const volumes = await admin.openIoctx(poolName);
const driver = new CephBackupDriver({
  client: { confPath: conf, user: 'cinder-backup', clusterName: 'ceph', keyringPath: null, connectTimeoutSeconds: 15 },
  pool: 'backups',
  chunkBytes: 128 * MiB,
  stripeUnit: 0,
  stripeCount: 0,
  log: () => undefined,
});
const source: VolumeSource = {
  kind: 'rbd',
  client: { confPath: conf, user: 'admin', clusterName: 'ceph', keyringPath: null, connectTimeoutSeconds: 15 },
  pool: poolName,
  image,
  snapshot: null,
  sizeBytes,
};
const fullId = randomUUID();
const incrementalId = randomUUID();
const ref = (backupId: string) => ({ backupId, container: 'bench', volumeId, chainRootId: fullId });

try {
  console.log(`volume: ${sizeBytes / GiB} GiB of random bytes in ${poolName}/${image} (4 MiB objects, Cinder's features)`);
  await volumes.createImage(image, sizeBytes, { orderBits: 22, features: 1 | 4 | 8 | 16 | 32 });
  const handle = await volumes.openImage(image);
  const piece = 16 * MiB;
  for (let offset = 0; offset < sizeBytes; offset += piece * 4) {
    await Promise.all([0, 1, 2, 3].map((i) => (offset + i * piece < sizeBytes ? handle.write(offset + i * piece, randomBytes(piece)) : undefined)));
  }
  await handle.flush();

  let m = meter();
  let t = now();
  await pipeline();
  const baselineMs = now() - t;
  // Kept for the incremental's baseline (rbd export-diff | rbd import-diff needs the copy and a snapshot on both sides).
  execFileSync('rbd', ['--conf', conf, '--id', 'admin', 'snap', 'create', '--no-progress', `${poolName}/${image}@bench.base`]);
  execFileSync('rbd', ['--conf', conf, '--id', 'cinder-backup', 'snap', 'create', '--no-progress', `backups/${image}.baseline@bench.base`]);
  console.log(`baseline rbd export | rbd import: ${secs(baselineMs)}, ${mbps(sizeBytes, baselineMs)} ${m()}`);

  await driver.start();
  m = meter();
  t = now();
  const full = await driver.backup({ ...ref(fullId), source, sizeBytes, parent: null });
  const fullMs = now() - t;
  console.log(`full backup (driver): ${secs(fullMs)}, ${mbps(sizeBytes, fullMs)}, ${full.storedBytes} bytes stored; ratio to baseline ${(baselineMs / fullMs).toFixed(2)}x ${m()}`);

  await handle.close();
  const count = await changeOnePercent(image);

  // Baseline of the incremental: what `rbd` does for the same change (snapshot, export-diff | import-diff, which snapshots its copy).
  m = meter();
  t = now();
  execFileSync('rbd', ['--conf', conf, '--id', 'admin', 'snap', 'create', '--no-progress', `${poolName}/${image}@bench.inc`]);
  await pipeline({ fromSnap: 'bench.base', toSnap: 'bench.inc' });
  const diffBaselineMs = now() - t;
  console.log(`baseline incremental: rbd snap create + rbd export-diff --from-snap | rbd import-diff: ${secs(diffBaselineMs)} ${m()}`);

  m = meter();
  t = now();
  const incremental = await driver.backup({ ...ref(incrementalId), source, sizeBytes, parent: { ...ref(fullId), snapshotId: null } });
  const incrementalMs = now() - t;
  console.log(
    `incremental after ${count} random 4 KiB writes (${((count * 4096) / MiB).toFixed(1)} MiB, 1%): ${secs(incrementalMs)} ` +
      `(${((incrementalMs / fullMs) * 100).toFixed(1)}% of the full), ${incremental.storedBytes} bytes moved (${((incremental.storedBytes / sizeBytes) * 100).toFixed(2)}% of the volume, ` +
      `${(incremental.storedBytes / (count * 4096)).toFixed(3)}x the changed bytes) ${m()}`,
  );
  console.log(`incremental by phase (wall time each, phases in flight together overlap): ${formatPhases(driver.lastBackupPhases)}`);
  console.log(`incremental vs rbd export-diff | rbd import-diff: ${(diffBaselineMs / incrementalMs).toFixed(2)}x the baseline's speed`);

  const shaAtIncremental = await sha256(volumes, image);
  await volumes.createImage(`${image}.restored`, sizeBytes, { orderBits: 22, features: 1 | 4 | 8 | 16 | 32 });
  m = meter();
  t = now();
  await driver.restore({ ...ref(incrementalId), target: { ...source, image: `${image}.restored` }, sizeBytes, targetIsZeroed: true, discardExcess: false });
  const newMs = now() - t;
  const newLine = `restore of the incremental into a new image: ${secs(newMs)}, ${mbps(sizeBytes, newMs)} ${m()}`;
  const newOk = (await sha256(volumes, `${image}.restored`)) === shaAtIncremental;
  console.log(`${newLine}; byte-identical: ${newOk}`);
  const changedAgain = await changeOnePercent(image);
  m = meter();
  t = now();
  await driver.restore({ ...ref(incrementalId), target: source, sizeBytes, targetIsZeroed: false, discardExcess: false });
  const overMs = now() - t;
  const overMeter = m();
  const overOk = (await sha256(volumes, image)) === shaAtIncremental;
  console.log(
    `restore of the incremental over its own volume after ${changedAgain} more random 4 KiB writes: ${secs(overMs)} (${((overMs / newMs) * 100).toFixed(1)}% of the restore into a new image), ` +
      `${driver.lastRestoreWrittenBytes} data bytes written (${(driver.lastRestoreWrittenBytes / (changedAgain * 4096)).toFixed(3)}x the changed bytes) ${overMeter}; byte-identical: ${overOk}`,
  );
  if (!newOk || !overOk) process.exitCode = 1;
} finally {
  await driver.delete(ref(incrementalId), source).catch((e: unknown) => console.error(`cleanup: ${(e as Error).message}`));
  await driver.delete(ref(fullId), source).catch((e: unknown) => console.error(`cleanup: ${(e as Error).message}`));
  await driver.stop();
  for (const args of [
    ['snap', 'purge', '--no-progress', `backups/${image}.baseline`],
    ['rm', '--no-progress', `backups/${image}.baseline`],
    ['snap', 'rm', '--no-progress', `${poolName}/${image}@bench.inc`],
    ['snap', 'rm', '--no-progress', `${poolName}/${image}@bench.base`],
  ]) {
    try {
      execFileSync('rbd', ['--conf', conf, '--id', 'admin', ...args], { stdio: 'ignore' });
    } catch {
      // not made, or already removed
    }
  }
  await volumes.removeImage(`${image}.restored`).catch(() => undefined);
  await volumes.removeImage(image).catch((e: unknown) => console.error(`cleanup: ${(e as Error).message}`));
  await volumes.close();
  await admin.shutdown();
  execFileSync('ceph', ['--conf', conf, '--id', 'admin', 'osd', 'pool', 'delete', poolName, poolName, '--yes-i-really-really-mean-it'], { stdio: 'ignore' });
}
