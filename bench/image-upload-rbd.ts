/**
 * Image upload into the rbd store vs `rbd import` of the same file into the
 * same pool, in one run: a file of random (incompressible, never all-zero)
 * bytes is uploaded with PUT /image/v2/images/{id}/file (raw/bare; the
 * server hashes md5 + sha512 in worker threads and writes through librbd),
 * then imported with `rbd import` as client.glance with the same object
 * size and features. Prints both MB/s, the ratio, and the CPU of each phase.
 *
 *   PUMICE_CEPH_LAB=/tmp/pumice-dev-lab node --import tsx bench/image-upload-rbd.ts [--size-mib 4096] [--rounds 1]
 *
 * MB/s are 10^6 bytes per second. The random file is made in a temporary
 * directory and read once before timing so both sides read it from the page
 * cache. Every image this creates is deleted (the lab's OSDs are sparse
 * files: each phase writes size x pool replicas, one phase at a time).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { arg, cleanupOnSignal, cpuMeter, login, measuredImageUpload, now, sleep, startServer, threadCpuText, type Server, type Session, makeRandomFile } from './lib.ts';

const MiB = 1024 * 1024;
const sizeBytes = arg('size-mib', 4096) * MiB;
const rounds = arg('rounds', 1);
const blockBytes = 8 * MiB;
const labDir = process.env['PUMICE_CEPH_LAB'];
if (!labDir) {
  console.error('image-upload-rbd: set PUMICE_CEPH_LAB to a running lab directory (e.g. /tmp/pumice-dev-lab)');
  process.exit(2);
}
const confPath = join(labDir, 'ceph.conf');
const pool = 'images';

let server: Server | undefined;
const scratch = mkdtempSync(join(tmpdir(), 'pumice-bench-img-rbd-'));
process.once('exit', () => rmSync(scratch, { recursive: true, force: true }));
cleanupOnSignal(() => (server ? [server] : []));

const mbps = (bytes: number, seconds: number) => bytes / 1e6 / seconds;
const fmt = (v: number) => `${v.toFixed(0)} MB/s`;


/** Reads the file once so both contenders start from the page cache. */
function warm(path: string, bytes: number): void {
  const fd = openSync(path, 'r');
  const block = Buffer.allocUnsafe(blockBytes);
  for (let offset = 0; offset < bytes; offset += blockBytes) readSync(fd, block, 0, blockBytes, offset);
  closeSync(fd);
}

function rbd(user: string, args: string[]): string {
  return execFileSync('rbd', ['--conf', confPath, '--id', user, '--keyring', join(labDir!, `ceph.client.${user}.keyring`), ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function poolImages(): string[] {
  return JSON.parse(rbd('admin', ['ls', '--format', 'json', pool])) as string[];
}

async function main(): Promise<void> {
  const file = join(scratch, 'random.img');
  let t0 = now();
  const md5 = makeRandomFile(file, sizeBytes);
  const genS = (now() - t0) / 1000;
  warm(file, sizeBytes);
  server = await startServer({
    config: `[glance_store]
stores = rbd
default_store = rbd
rbd_store_pool = ${pool}
rbd_store_user = glance
rbd_store_ceph_conf = ${confPath}
rbd_store_chunk_size = 8
`,
  });
  const importName = `bench-rbd-import-${randomBytes(4).toString('hex')}`;
  const created: string[] = [];
  try {
    const s = await login(server.url);
    await sleep(1000);
    console.log(`# image-upload-rbd: ${sizeBytes / MiB} MiB random file (made in ${genS.toFixed(1)} s), pool '${pool}' of the lab in ${labDir}, ${rounds} round(s), server pid ${server.pid}; MB = 10^6 bytes`);
    const uploads: number[] = [];
    const imports: number[] = [];
    for (let round = 1; round <= rounds; round++) {
      // ---- Pumice upload ----
      const r = await s.call('POST', '/image/v2/images', { name: `bench-rbd-${round}`, disk_format: 'raw', container_format: 'bare' });
      if (r.status !== 201) throw new Error(`create image: ${r.status} ${r.text}`);
      const id = r.json<{ id: string }>().id;
      created.push(id);
      const measured = await measuredImageUpload(s, server.pid, id, file, sizeBytes, md5, 4 * MiB);
      const { seconds: upS, threads, mem } = measured;
      let { cpu } = measured;
      uploads.push(mbps(sizeBytes, upS));
      console.log(`round ${round} pumice_upload: ${fmt(mbps(sizeBytes, upS))} (${upS.toFixed(2)} s, PUT to 204 incl. snapshot; image active, size and md5 checked)`);
      console.log(`round ${round} pumice_upload_rss_peak: ${mem.peakMiB.toFixed(1)} MiB; cpu: ${cpu.text}`);
      console.log(`round ${round} pumice_upload_cpu_per_gib_by_thread: ${threadCpuText(threads, server.pid, sizeBytes, "librbd's messenger and aio threads, libuv, GC helpers")}; the OSDs and other processes ${((cpu.otherS / (sizeBytes / (1 << 30)))).toFixed(2)} s`);
      const del = await s.call('DELETE', `/image/v2/images/${id}`);
      if (del.status !== 204) throw new Error(`delete: ${del.status} ${del.text}`);
      created.pop();

      // ---- rbd import of the same file, same pool, same object size and features ----
      const meter = cpuMeter(server.pid);
      t0 = now();
      rbd('glance', ['import', '--image-format', '2', '--object-size', '8M', '--image-feature', 'layering,exclusive-lock,object-map,fast-diff,deep-flatten', '--no-progress', file, `${pool}/${importName}`]);
      const importS = (now() - t0) / 1000;
      cpu = meter.stop();
      imports.push(mbps(sizeBytes, importS));
      console.log(`round ${round} rbd_import: ${fmt(mbps(sizeBytes, importS))} (${importS.toFixed(2)} s; rbd --id glance import --object-size 8M FILE ${pool}/${importName}); cpu: other processes (rbd, OSDs) ${((cpu.otherS / cpu.elapsedS) * 100).toFixed(0)}% of one core`);
      rbd('glance', ['rm', '--no-progress', `${pool}/${importName}`]);
    }
    const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
    console.log(`pumice_upload_mean: ${fmt(mean(uploads))}`);
    console.log(`rbd_import_mean: ${fmt(mean(imports))}`);
    console.log(`ratio_upload_vs_rbd_import: ${(mean(uploads) / mean(imports)).toFixed(2)}x (aim >= 0.9x)`);
  } finally {
    const s = await login(server.url).catch(() => null);
    for (const id of created) await s?.call('DELETE', `/image/v2/images/${id}`).catch(() => undefined);
    try {
      if (poolImages().includes(importName)) rbd('admin', ['rm', '--no-progress', `${pool}/${importName}`]);
    } catch {
      // best effort: the lab may be gone
    }
    await server.stop();
    server.cleanup();
    rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
