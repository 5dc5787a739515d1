/**
 * Volume backups on the posix (directory) driver with the local backend:
 * a 1 GiB volume filled with 1 GiB of random bytes through Pumice's NBD
 * export (`nbdcopy FILE nbd://…` after os-initialize_connection), then
 *   1. a full backup: time from POST /backups to `available`, MB/s, bytes stored;
 *   2. 1% of the volume changed in random 4 KiB writes of random bytes
 *      (qemu-io, one connection per 500, `write -s FILE`), then an
 *      incremental backup: bytes it stored (every file of its own directory
 *      under DATA_DIR/backups: chunk and delta files, block digests,
 *      manifest) and its time;
 *   3. 1% of the volume changed as random 1 MiB regions of random bytes
 *      (qemu-io `write -s FILE`), then another incremental (its parent is the
 *      incremental of step 2).
 * Baseline: `tar -cf - FILE | zstd -1 -T1 > OUT` (gzip -1 when zstd is
 * missing) of the same 1 GiB file on the same disk.
 *
 *   node --import tsx bench/backup-posix.ts [--chunk-mib N]
 *
 * --chunk-mib sets [DEFAULT] backup_file_size (default: the server's, 32 MiB).
 * An incremental stores the 4 KiB blocks whose digest changed (plus 16 bytes
 * of digest per block of the volume). MB/s are 10^6 bytes per second.
 */
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { arg, cleanupOnSignal, cpuMeter, login, now, sampleRss, sleep, startServer, type Server, type Session, makeRandomFile } from './lib.ts';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const chunkMiB = arg('chunk-mib', 0);
const changeBytes = Math.round(0.01 * GiB);

let server: Server | undefined;
const scratch = mkdtempSync(join(tmpdir(), 'pumice-bench-bkp-'));
process.once('exit', () => rmSync(scratch, { recursive: true, force: true }));
cleanupOnSignal(() => (server ? [server] : []));

const mbps = (bytes: number, seconds: number) => `${(bytes / 1e6 / seconds).toFixed(0)} MB/s`;
const mib = (bytes: number) => `${(bytes / MiB).toFixed(2)} MiB`;

/** A small deterministic PRNG (mulberry32), so every run changes the same offsets. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `count` distinct aligned offsets of `unit` bytes inside `size`, sorted. */
function randomOffsets(count: number, unit: number, size: number, seed: number): number[] {
  const next = rng(seed);
  const picked = new Set<number>();
  while (picked.size < count) picked.add(Math.floor(next() * (size / unit)) * unit);
  return [...picked].sort((a, b) => a - b);
}


function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB, stdio: ['ignore', 'pipe', 'pipe'] });
}

async function volumeAction(s: Session, id: string, body: unknown, status: number) {
  const r = await s.call('POST', `${s.volumeUrl}/volumes/${id}/action`, body);
  if (r.status !== status) throw new Error(`${JSON.stringify(body)}: ${r.status} ${r.text}`);
  return r;
}

async function connect(s: Session, id: string): Promise<string> {
  const r = await volumeAction(s, id, { 'os-initialize_connection': { connector: { host: 'bench', initiator: 'bench' } } }, 200);
  const d = r.json<{ connection_info: { data: { host: string; port: number; export_name: string } } }>().connection_info.data;
  return `nbd://${d.host}:${d.port}/${d.export_name}`;
}

const disconnect = (s: Session, id: string) => volumeAction(s, id, { 'os-terminate_connection': { connector: { host: 'bench' } } }, 202);

async function waitVolume(s: Session, id: string): Promise<void> {
  const deadline = now() + 60_000;
  for (;;) {
    const r = await s.call('GET', `${s.volumeUrl}/volumes/${id}`);
    const status = r.json<{ volume: { status: string } }>().volume.status;
    if (status === 'available') return;
    if (status.startsWith('error') || now() > deadline) throw new Error(`volume ${id} is ${status}`);
    await sleep(20);
  }
}

interface BackupResult {
  id: string;
  seconds: number;
  objectCount: number;
  storedBytes: number;
  rssPeakMiB: number;
  cpu: string;
}

/** POST /backups, poll GET every 20 ms until available; the seconds are from POST to the GET that shows available. */
async function backup(s: Session, volumeId: string, name: string, incremental: boolean): Promise<BackupResult> {
  const rss = sampleRss(server!.pid, 100);
  const meter = cpuMeter(server!.pid);
  const t0 = now();
  const r = await s.call('POST', `${s.volumeUrl}/backups`, { backup: { volume_id: volumeId, name, incremental } });
  if (r.status !== 202) throw new Error(`create backup: ${r.status} ${r.text}`);
  const id = r.json<{ backup: { id: string } }>().backup.id;
  const deadline = t0 + 300_000;
  let b: { status: string; object_count: number; fail_reason: string | null; is_incremental: boolean };
  for (;;) {
    const g = await s.call('GET', `${s.volumeUrl}/backups/${id}`);
    b = g.json<{ backup: typeof b }>().backup;
    if (b.status === 'available') break;
    if (b.status === 'error' || now() > deadline) throw new Error(`backup ${id}: ${b.status} ${b.fail_reason}`);
    await sleep(20);
  }
  const seconds = (now() - t0) / 1000;
  const cpu = meter.stop().text;
  const mem = rss.stop();
  if (b.is_incremental !== incremental) throw new Error(`backup ${id}: is_incremental ${b.is_incremental}`);
  await waitVolume(s, volumeId);
  const dir = join(server!.dataDir, 'backups', 'volumebackups', id);
  // Every file the backup wrote: chunk and delta files, the block digests and the manifest.
  const storedBytes = readdirSync(dir).reduce((sum, f) => sum + statSync(join(dir, f)).size, 0);
  return { id, seconds, objectCount: b.object_count, storedBytes, rssPeakMiB: mem.peakMiB, cpu };
}

/** POST restore into a new volume, poll until it is available; prints the time from POST to available. */
async function restore(s: Session, backupId: string, prefix: string): Promise<void> {
  const t0 = now();
  const r = await s.call('POST', `${s.volumeUrl}/backups/${backupId}/restore`, { restore: { name: `restore-${prefix}` } });
  if (r.status !== 202) throw new Error(`restore: ${r.status} ${r.text}`);
  const volumeId = r.json<{ restore: { volume_id: string } }>().restore.volume_id;
  const deadline = t0 + 300_000;
  for (;;) {
    const g = await s.call('GET', `${s.volumeUrl}/volumes/${volumeId}`);
    const status = g.json<{ volume: { status: string } }>().volume.status;
    if (status === 'available') break;
    if (status.startsWith('error') || now() > deadline) throw new Error(`restore of ${backupId}: volume ${status}`);
    await sleep(20);
  }
  const seconds = (now() - t0) / 1000;
  console.log(`${prefix}_restore: ${seconds.toFixed(2)} s (POST restore to a new volume available), ${mbps(GiB, seconds)}`);
  const d = await s.call('DELETE', `${s.volumeUrl}/volumes/${volumeId}`);
  if (d.status !== 202) throw new Error(`delete restored volume: ${d.status} ${d.text}`);
}

function print(prefix: string, r: BackupResult, full?: BackupResult): void {
  console.log(`${prefix}_time: ${r.seconds.toFixed(2)} s (POST to available)${full ? `, ${(r.seconds / full.seconds).toFixed(2)}x the full backup's time` : ''}`);
  console.log(`${prefix}_rate: ${mbps(GiB, r.seconds)} of volume read`);
  console.log(`${prefix}_stored: ${r.storedBytes} bytes (${mib(r.storedBytes)}, ${((r.storedBytes / GiB) * 100).toFixed(2)}% of the volume) (chunk files, block digests, manifest) in ${r.objectCount} chunk file(s)${full ? `, ${((r.storedBytes / full.storedBytes) * 100).toFixed(1)}% of the full backup's` : ''}`);
  console.log(`${prefix}_server: rss peak ${r.rssPeakMiB.toFixed(1)} MiB; cpu: ${r.cpu}`);
  const log = new RegExp(`backup ${r.id} of volume [^:]+: ([^\n]*)`).exec(server!.output())?.[1];
  if (log) console.log(`${prefix}_server_log: ${log}`);
}

async function main(): Promise<void> {
  const file = join(scratch, 'random.img');
  let t0 = now();
  makeRandomFile(file, GiB);
  const genS = (now() - t0) / 1000;

  // ---- baseline: tar | zstd -1 -T1 of the same file on the same disk ----
  const haveZstd = (() => {
    try {
      run('zstd', ['--version']);
      return true;
    } catch {
      return false;
    }
  })();
  const compressor = haveZstd ? 'zstd -1 -T1' : 'gzip -1';
  const out = join(scratch, haveZstd ? 'random.tar.zst' : 'random.tar.gz');
  const baselineCmd = `tar -cf - -C ${scratch} random.img | ${compressor} > ${out}`;
  t0 = now();
  execFileSync('bash', ['-o', 'pipefail', '-c', baselineCmd], { stdio: 'inherit' });
  const baseS = (now() - t0) / 1000;
  const baseBytes = statSync(out).size;
  rmSync(out, { force: true });

  server = await startServer({ config: chunkMiB ? `[DEFAULT]\nbackup_file_size = ${chunkMiB * MiB}\n` : undefined });
  try {
    const s = await login(server.url);
    const chunkText = chunkMiB ? `${chunkMiB} MiB chunks (backup_file_size)` : '32 MiB chunks (server default backup_file_size)';
    console.log(`# backup-posix: 1 GiB volume, 1 GiB random data (file made in ${genS.toFixed(1)} s), ${chunkText}, brotli (server default codec); server pid ${server.pid}; MB = 10^6 bytes`);
    console.log(`baseline_tar_${haveZstd ? 'zstd' : 'gzip'}: ${mbps(GiB, baseS)} (${baseS.toFixed(2)} s, ${mib(baseBytes)} out; ${baselineCmd.replaceAll(scratch, 'TMP')})`);

    const created = await s.call('POST', `${s.volumeUrl}/volumes`, { volume: { size: 1, name: 'bench-backup' } });
    if (created.status !== 202) throw new Error(`create volume: ${created.status} ${created.text}`);
    const volumeId = created.json<{ volume: { id: string } }>().volume.id;
    await waitVolume(s, volumeId);

    let uri = await connect(s, volumeId);
    t0 = now();
    run('nbdcopy', [file, uri]);
    const fillS = (now() - t0) / 1000;
    await disconnect(s, volumeId);
    console.log(`fill_nbdcopy: ${mbps(GiB, fillS)} (${fillS.toFixed(2)} s, nbdcopy FILE nbd://… into the volume's export)`);

    const full = await backup(s, volumeId, 'full', false);
    print('full_backup', full);
    console.log(`full_backup_vs_tar_${haveZstd ? 'zstd' : 'gzip'}: ${(baseS / full.seconds).toFixed(2)}x the baseline's speed`);

    // ---- 1% in random 4 KiB writes ----
    const small = randomOffsets(Math.round(changeBytes / 4096), 4096, GiB, 1);
    uri = await connect(s, volumeId);
    t0 = now();
    const batch = 500;
    // Random bytes (qemu-io `write -s FILE`), so compression cannot hide what the incremental stores.
    const blockFiles = small.map((_, i) => {
      const p = join(scratch, `block-${i}.bin`);
      writeFileSync(p, randomFillSync(Buffer.allocUnsafe(4096)));
      return p;
    });
    for (let i = 0; i < small.length; i += batch) {
      const cmds = small.slice(i, i + batch).flatMap((off, j) => ['-c', `write -q -s ${blockFiles[i + j]} ${off} 4096`]);
      run('qemu-io', ['-f', 'raw', ...cmds, uri]);
    }
    const writeSmallS = (now() - t0) / 1000;
    await disconnect(s, volumeId);
    const chunkBytes = (chunkMiB || 32) * MiB;
    const touchedSmall = new Set(small.map((o) => Math.floor(o / chunkBytes))).size;
    console.log(`change_4k: ${small.length} random 4 KiB writes (${mib(small.length * 4096)}) through qemu-io in ${writeSmallS.toFixed(2)} s, touching ${touchedSmall} of ${GiB / chunkBytes} chunks`);
    const incr4k = await backup(s, volumeId, 'incremental-4k', true);
    print('incremental_4k', incr4k, full);
    await restore(s, incr4k.id, 'incremental_4k');

    // ---- 1% as random 1 MiB regions of random bytes ----
    const regions = randomOffsets(Math.round(changeBytes / MiB), MiB, GiB, 2);
    const regionFiles = regions.map((_, i) => {
      const p = join(scratch, `region-${i}.bin`);
      writeFileSync(p, randomFillSync(Buffer.allocUnsafe(MiB)));
      return p;
    });
    uri = await connect(s, volumeId);
    t0 = now();
    run('qemu-io', ['-f', 'raw', ...regions.flatMap((off, i) => ['-c', `write -q -s ${regionFiles[i]} ${off} ${MiB}`]), uri]);
    const writeBigS = (now() - t0) / 1000;
    await disconnect(s, volumeId);
    const touchedBig = new Set(regions.map((o) => Math.floor(o / chunkBytes))).size;
    console.log(`change_1m: ${regions.length} random 1 MiB regions (${mib(regions.length * MiB)}) through qemu-io in ${writeBigS.toFixed(2)} s, touching ${touchedBig} of ${GiB / chunkBytes} chunks`);
    const incr1m = await backup(s, volumeId, 'incremental-1m', true);
    print('incremental_1m', incr1m, full);
  } finally {
    await server.stop();
    server.cleanup();
    rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
