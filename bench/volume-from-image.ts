/**
 * Volume-from-image figures.
 *  1. RBD (same cluster): create→available latency of a volume from a 1 GiB
 *     and from a 50 GiB (sparse) raw image in the rbd store: copy-on-write
 *     clones, so both should be equal and well under a second.
 *  2. Local backend: throughput of a volume made from a 1 GiB image of random
 *     bytes (the image file of the server's own file store copied into the
 *     volume file by `cp --reflink=auto --sparse=always`, fsync'd; before
 *     issue 14 it was streamed over loopback HTTP) against `cp --sparse=always`
 *     of the same file plus `sync`, on the same disk.
 *
 *   PUMICE_CEPH_LAB=DIR node --import tsx bench/volume-from-image.ts [--repeat 5] [--big-gib 50] [--skip-rbd]
 * Without PUMICE_CEPH_LAB the RBD part brings a lab up in a temp dir and purges it at the end.
 */
import { execFile } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, rmSync, writeSync } from 'node:fs';
import http from 'node:http';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { arg, cleanupOnSignal, flag, latencySummary, login, now, startServer, unlimitedQuota, type Server, type Session, waitVolumeStatus, createBackendType, withLab } from './lib.ts';

const execFileAsync = promisify(execFile);
const repeat = arg('repeat', 5);
const bigGiB = arg('big-gib', 50);
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

let servers: Server[] = [];
cleanupOnSignal(() => servers);

/** PUTs `sizeBytes` of image data: `head` first, zeros after, streamed with back-pressure. */
async function uploadImage(s: Session, name: string, sizeBytes: number, head: Buffer): Promise<string> {
  const created = await s.call('POST', '/image/v2/images', { name, disk_format: 'raw', container_format: 'bare', visibility: 'public' });
  if (created.status !== 201) throw new Error(`image create failed: ${created.status} ${created.text}`);
  const id = created.json<{ id: string }>().id;
  const started = now();
  await new Promise<void>((resolve, reject) => {
    const req = http.request(`${s.url}/image/v2/images/${id}/file`, {
      method: 'PUT',
      headers: { 'X-Auth-Token': s.token, 'Content-Type': 'application/octet-stream', 'Content-Length': String(sizeBytes) },
    });
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 204 ? resolve() : reject(new Error(`upload answered ${res.statusCode}`))));
    });
    req.on('error', reject);
    const zeros = Buffer.alloc(8 * MiB);
    let sent = 0;
    const pump = () => {
      while (sent < sizeBytes) {
        const piece = sent < head.length ? head.subarray(sent, Math.min(head.length, sent + 8 * MiB)) : zeros.subarray(0, Math.min(8 * MiB, sizeBytes - sent));
        sent += piece.length;
        if (!req.write(piece)) {
          req.once('drain', pump);
          return;
        }
      }
      req.end();
    };
    pump();
  });
  console.log(`  uploaded ${name}: ${(sizeBytes / GiB).toFixed(0)} GiB in ${((now() - started) / 1000).toFixed(1)} s (setup, not measured)`);
  return id;
}


/** create→available of a volume from `imageId`, in ms; the volume is deleted afterwards. */
async function volumeFromImage(s: Session, imageId: string, sizeGiB: number, type: string): Promise<number> {
  const started = now();
  const r = await s.call('POST', `${s.volumeUrl}/volumes`, { volume: { imageRef: imageId, size: sizeGiB, volume_type: type } });
  if (r.status !== 202) throw new Error(`volume create failed: ${r.status} ${r.text}`);
  const id = r.json<{ volume: { id: string } }>().volume.id;
  await waitVolumeStatus(s, id, 'available');
  const elapsed = now() - started;
  await s.call('DELETE', `${s.volumeUrl}/volumes/${id}`);
  await waitVolumeStatus(s, id, 'gone');
  return elapsed;
}

async function rbdPart(): Promise<void> {
  await withLab(async (lab) => {
    const server = await startServer({
      config:
        `[DEFAULT]\nenabled_backends = ceph\nshow_image_direct_url = true\n` +
        `[ceph]\nvolume_driver = rbd\nvolume_backend_name = ceph\nrbd_pool = volumes\nrbd_user = cinder\nrbd_ceph_conf = ${lab.confPath}\n` +
        `# thin clones of a ${bigGiB} GiB image on a lab of ~14 GiB\nmax_over_subscription_ratio = 1000\n` +
        `[glance_store]\nstores = rbd\ndefault_store = rbd\nrbd_store_pool = images\nrbd_store_user = glance\nrbd_store_ceph_conf = ${lab.confPath}\n`,
    });
    servers.push(server);
    const s = await login(server.url);
    await unlimitedQuota(s);
    await createBackendType(s, 'ceph');
    console.log(`# volume from image on RBD (copy-on-write clone), lab ${lab.dir}, ${repeat} volumes per image`);
    const head = randomFillSync(Buffer.alloc(4 * MiB));
    const images: [number, string][] = [];
    for (const gib of [1, bigGiB]) images.push([gib, await uploadImage(s, `bench-${gib}g`, gib * GiB, head)]);
    for (const [gib, id] of images) {
      await volumeFromImage(s, id, gib, 'ceph'); // warm-up: opens the image pool
      const samples: number[] = [];
      for (let i = 0; i < repeat; i++) samples.push(await volumeFromImage(s, id, gib, 'ceph'));
      console.log(`  ${String(gib).padStart(3)} GiB image: create→available ${latencySummary(samples)}`);
    }
    for (const [, id] of images) await s.call('DELETE', `/image/v2/images/${id}`);
    await server.stop();
    server.cleanup();
  });
}

async function localPart(): Promise<void> {
  const server = await startServer({ config: '[DEFAULT]\nenabled_backends = local\n[local]\nvolume_driver = local\nvolume_backend_name = local\n' });
  servers.push(server);
  const s = await login(server.url);
  await unlimitedQuota(s);
  await createBackendType(s, 'local');
  console.log(`# volume from image on the local backend: 1 GiB of random bytes, file store → volume file (data dir ${server.dataDir})`);
  const data = randomFillSync(Buffer.alloc(GiB));
  const id = await uploadImage(s, 'bench-random-1g', GiB, data);
  const samples: number[] = [];
  for (let i = 0; i < repeat; i++) samples.push(await volumeFromImage(s, id, 1, 'local'));
  const best = Math.min(...samples);
  console.log(`  create→available ${latencySummary(samples)}; best ${(GiB / 1e6 / (best / 1000)).toFixed(0)} MB/s`);
  // Baseline: the same bytes copied by cp --sparse=always into the same directory, then sync.
  const source = join(server.dataDir, 'bench-source.raw');
  const fd = openSync(source, 'w');
  writeSync(fd, data);
  closeSync(fd);
  await execFileAsync('sync');
  const cpSamples: number[] = [];
  for (let i = 0; i < repeat; i++) {
    const target = join(server.dataDir, 'bench-copy.raw');
    const started = now();
    await execFileAsync('cp', ['--sparse=always', source, target]);
    await execFileAsync('sync', [target]);
    cpSamples.push(now() - started);
    rmSync(target);
  }
  const cpBest = Math.min(...cpSamples);
  console.log(`  cp --sparse=always + sync: ${latencySummary(cpSamples)}; best ${(GiB / 1e6 / (cpBest / 1000)).toFixed(0)} MB/s`);
  console.log(`  ratio (best vs best): ${(cpBest / best).toFixed(2)}× of cp; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  await server.stop();
  server.cleanup();
}

console.log(`# load average ${loadavg().map((l) => l.toFixed(2)).join(' ')} at the start`);
if (!flag('skip-rbd')) await rbdPart();
await localPart();
