/**
 * Image data through the Image API v2 on the file store: a 1 GiB file of
 * random bytes uploaded with PUT /image/v2/images/{id}/file (raw/bare) and
 * downloaded back with GET .../file, in MB/s, with the server's peak VmRSS
 * during each transfer (sampled every 100 ms) to show the bytes are streamed,
 * not buffered. Baseline: `cp --sparse=always` of the same file into the same
 * filesystem, alone and followed by `sync FILE` (the store fsyncs before it
 * answers). Last, a 4 GiB sparse file holding only a few MiB of data: upload
 * time (the store skips all-zero chunks, so the stored file stays sparse).
 *
 *   node --import tsx bench/image-upload.ts [--size-mib 1024] [--sparse-mib 4096] [--cpu-prof DIR] [--upload-rounds N] [--upload-only]
 *
 * --cpu-prof DIR writes the server's CPU profiles (main thread and each hash worker) into DIR.
 * --upload-rounds N uploads the random file N times on the same server (figures per round: V8's
 * collections differ from one server process to another, and within one). --upload-only stops
 * after the uploads (no download, no sparse upload).
 *
 * MB/s are 10^6 bytes per second. The random file is made in this process
 * (crypto.randomFillSync, 8 MiB blocks) in a temporary directory next to the
 * server's data directory (same filesystem) and removed at the end.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { arg, argString, cleanupOnSignal, flag, cpuMeter, login, measuredImageUpload, now, putImageFile, rssMiB, sampleRss, sleep, startServer, threadCpuText, type Server, type Session, makeRandomFile } from './lib.ts';

const MiB = 1024 * 1024;
const sizeBytes = arg('size-mib', 1024) * MiB;
const sparseBytes = arg('sparse-mib', 4096) * MiB;
const profileDir = argString('cpu-prof', '');
const uploadRounds = arg('upload-rounds', 1);
const uploadOnly = flag('upload-only');

let server: Server | undefined;

const scratch = mkdtempSync(join(tmpdir(), 'pumice-bench-img-'));
process.once('exit', () => rmSync(scratch, { recursive: true, force: true }));
cleanupOnSignal(() => (server ? [server] : []));

const mbps = (bytes: number, seconds: number) => `${(bytes / 1e6 / seconds).toFixed(0)} MB/s`;


/** A sparse file of `bytes` with `dataBlocks` 1 MiB random blocks spread evenly; returns the md5 of the content. */
function makeSparseFile(path: string, bytes: number, dataBlocks: number): { md5: string; dataBytes: number } {
  const fd = openSync(path, 'w');
  ftruncateSync(fd, bytes);
  const block = Buffer.allocUnsafe(MiB);
  const offsets = Array.from({ length: dataBlocks }, (_, i) => Math.floor((i * bytes) / dataBlocks / MiB) * MiB);
  for (const offset of offsets) writeSync(fd, randomFillSync(block), 0, MiB, offset);
  closeSync(fd);
  const md5 = createHash('md5');
  // md5 of the logical content: zeros between the data blocks.
  const zero = Buffer.alloc(MiB);
  const set = new Set(offsets);
  const read = openSync(path, 'r');
  const buf = Buffer.allocUnsafe(MiB);
  for (let offset = 0; offset < bytes; offset += MiB) {
    if (set.has(offset)) {
      readSync(read, buf, 0, MiB, offset);
      md5.update(buf);
    } else md5.update(zero);
  }
  closeSync(read);
  return { md5: md5.digest('hex'), dataBytes: dataBlocks * MiB };
}

/** Downloads the image data, hashing it (md5) and discarding it. */
function download(s: Session, id: string): Promise<{ status: number; bytes: number; md5: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${s.url}/image/v2/images/${id}/file`, { method: 'GET', headers: { 'X-Auth-Token': s.token } }, (res) => {
      const md5 = createHash('md5');
      let bytes = 0;
      res.on('data', (d: Buffer) => {
        bytes += d.length;
        md5.update(d);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, md5: md5.digest('hex') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function createImage(s: Session, name: string): Promise<string> {
  const r = await s.call('POST', '/image/v2/images', { name, disk_format: 'raw', container_format: 'bare' });
  if (r.status !== 201) throw new Error(`create image: ${r.status} ${r.text}`);
  return r.json<{ id: string }>().id;
}

async function imageRow(s: Session, id: string): Promise<{ status: string; size: number; checksum: string }> {
  const r = await s.call('GET', `/image/v2/images/${id}`);
  if (r.status !== 200) throw new Error(`GET image: ${r.status} ${r.text}`);
  return r.json();
}

function timeCommand(cmd: string, args: string[]): number {
  const t0 = now();
  execFileSync(cmd, args, { stdio: 'inherit' });
  return (now() - t0) / 1000;
}

async function main(): Promise<void> {
  const file = join(scratch, 'random.img');
  let t0 = now();
  const md5 = makeRandomFile(file, sizeBytes);
  const genS = (now() - t0) / 1000;
  server = await startServer(profileDir ? { nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] } : {});
  try {
    const s = await login(server.url);
    await sleep(500);
    const imagesDir = join(server.dataDir, 'images');
    console.log(`# image-upload: ${sizeBytes / MiB} MiB random file (made in ${genS.toFixed(1)} s, ${mbps(sizeBytes, genS)}), file store in ${imagesDir}, server pid ${server.pid}; MB = 10^6 bytes`);
    console.log(`rss_idle: ${rssMiB(server.pid).toFixed(1)} MiB`);

    // ---- baseline: cp into the same filesystem ----
    const copy = join(server.dataDir, 'cp-baseline.img');
    const cpS = timeCommand('cp', ['--sparse=always', file, copy]);
    const syncS = timeCommand('sync', [copy]);
    rmSync(copy, { force: true });
    console.log(`baseline_cp_sparse_always: ${mbps(sizeBytes, cpS)} (${cpS.toFixed(2)} s; cp --sparse=always ${file} DATA_DIR/cp-baseline.img)`);
    console.log(`baseline_cp_then_sync_file: ${mbps(sizeBytes, cpS + syncS)} (${(cpS + syncS).toFixed(2)} s; cp then \`sync FILE\` (fsync), as the store fsyncs before answering)`);

    // ---- upload (--upload-rounds N: N uploads on the same server, each into a new image) ----
    let id = '';
    for (let round = 1; round <= uploadRounds; round++) {
      if (id) await s.call('DELETE', `/image/v2/images/${id}`);
      id = await createImage(s, 'bench-random');
      const { seconds: upS, cpu, threads, mem } = await measuredImageUpload(s, server.pid, id, file, sizeBytes, md5, MiB);
      const tag = uploadRounds > 1 ? `[round ${round}, load ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}]` : '';
      console.log(`upload${tag}: ${mbps(sizeBytes, upS)} (${upS.toFixed(2)} s, PUT to 204; image active, size and md5 match)`);
      console.log(`upload_rss_peak${tag}: ${mem.peakMiB.toFixed(1)} MiB (${mem.samples} samples every 100 ms, end ${mem.lastMiB.toFixed(1)} MiB)`);
      console.log(`upload_cpu${tag}: ${cpu.text}`);
      console.log(`upload_cpu_per_gib_by_thread${tag}: ${threadCpuText(threads, server.pid, sizeBytes)}`);
      console.log(`upload_vs_cp_then_sync${tag}: ${((cpS + syncS) / upS).toFixed(2)}x the speed`);
    }
    if (uploadOnly) {
      await s.call('DELETE', `/image/v2/images/${id}`);
      return;
    }

    // ---- download ----
    let rss = sampleRss(server.pid, 100);
    let meter = cpuMeter(server.pid);
    t0 = now();
    const down = await download(s, id);
    const downS = (now() - t0) / 1000;
    let cpu = meter.stop();
    let mem = rss.stop();
    if (down.status !== 200 || down.bytes !== sizeBytes || down.md5 !== md5) throw new Error(`download: ${down.status} ${down.bytes} bytes md5 ${down.md5}, expected ${md5}`);
    console.log(`download: ${mbps(sizeBytes, downS)} (${downS.toFixed(2)} s, GET to last byte; md5 checked by the client as it reads)`);
    console.log(`download_rss_peak: ${mem.peakMiB.toFixed(1)} MiB (${mem.samples} samples every 100 ms, end ${mem.lastMiB.toFixed(1)} MiB)`);
    console.log(`download_cpu: ${cpu.text}`);
    await s.call('DELETE', `/image/v2/images/${id}`);
    rmSync(file, { force: true });

    // ---- sparse ----
    const sparse = join(scratch, 'sparse.img');
    const made = makeSparseFile(sparse, sparseBytes, 4);
    const sparseId = await createImage(s, 'bench-sparse');
    rss = sampleRss(server.pid, 100);
    meter = cpuMeter(server.pid);
    t0 = now();
    const sup = await putImageFile(s, sparseId, sparse, sparseBytes, MiB);
    const supS = (now() - t0) / 1000;
    cpu = meter.stop();
    mem = rss.stop();
    if (sup.status !== 204) throw new Error(`sparse upload: ${sup.status} ${sup.text}`);
    const srow = await imageRow(s, sparseId);
    if (srow.status !== 'active' || srow.size !== sparseBytes || srow.checksum !== made.md5) throw new Error(`sparse image after upload: ${JSON.stringify(srow)}`);
    const stored = statSync(join(imagesDir, sparseId));
    console.log(`sparse_upload: ${supS.toFixed(2)} s for ${sparseBytes / MiB} MiB with ${made.dataBytes / MiB} MiB of data (${mbps(sparseBytes, supS)} logical); stored file allocates ${((stored.blocks * 512) / MiB).toFixed(1)} MiB`);
    console.log(`sparse_upload_rss_peak: ${mem.peakMiB.toFixed(1)} MiB; cpu: ${cpu.text}`);
    await s.call('DELETE', `/image/v2/images/${sparseId}`);
  } finally {
    await server.stop();
    server.cleanup();
    rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
