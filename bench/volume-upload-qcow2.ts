/**
 * Volume → image as qcow2 into the rbd store, before and after issue 14's
 * shortcut, side by side in one run on a running lab.
 *
 * The rbd store keeps only raw images (volumes are clones of them), so a
 * qcow2 upload is stored converted back to raw. Before: the volume role read
 * the RBD volume into a sparse raw scratch file, `qemu-img convert`ed it to
 * qcow2 and PUT the qcow2 to the image service, which spooled it, probed it,
 * converted it back to raw and wrote that into the store. After: the image is
 * created as the conversion leaves it (raw/bare, original_disk_format qcow2)
 * and the volume's raw bytes are streamed into the store once.
 *
 *  - after: POST os-volume_upload_image {disk_format: qcow2} on the server of
 *    this tree, timed until the image is active and the volume available.
 *  - before: the old path rebuilt step by step with the tools it ran, on the
 *    same server and volume: `rbd export` of the volume (sparse raw file, the
 *    volume role's scratch copy), `qemu-img convert -f raw -O qcow2`, then
 *    PUT of the qcow2 into a qcow2 image (the image service's old half runs
 *    unchanged: spool, qemu-img info, convert to raw, write into the store).
 *
 * The volume is 1 GiB (`--size-gib`) of random bytes (a clone of an image
 * uploaded at setup, not measured). Both images must end with the same
 * checksum (the raw bytes of the volume). `--rounds N` (3) alternates the two
 * sides and prints the medians. Everything made is deleted.
 *
 *   PUMICE_CEPH_LAB=/tmp/pumice-dev-lab node --import tsx bench/volume-upload-qcow2.ts [--rounds 3] [--size-gib 1]
 */
import { execFile } from 'node:child_process';
import { createReadStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { arg, cleanupOnSignal, createBackendType, login, makeRandomFile, now, percentile, sleep, startServer, unlimitedQuota, waitVolumeStatus, withLab, type Server, type Session } from './lib.ts';

const execFileAsync = promisify(execFile);
const rounds = arg('rounds', 3);
const sizeGiB = arg('size-gib', 1);
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

let servers: Server[] = [];
cleanupOnSignal(() => servers);
const scratch = mkdtempSync(join(tmpdir(), 'pumice-bench-vol-qcow2-'));
process.once('exit', () => rmSync(scratch, { recursive: true, force: true }));

interface ImageRow { id: string; status: string; disk_format: string; container_format: string; size: number | null; checksum: string | null; original_disk_format?: string }

/** PUTs a file as an image's data; resolves when the service answered 204 (the image is then active). */
function putFile(s: Session, imageId: string, path: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const req = http.request(`${s.url}/image/v2/images/${imageId}/file`, {
      method: 'PUT',
      headers: { 'X-Auth-Token': s.token, 'Content-Type': 'application/octet-stream', 'Content-Length': String(statSync(path).size) },
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => (res.statusCode === 204 ? resolve() : reject(new Error(`upload answered ${res.statusCode}: ${Buffer.concat(chunks).toString()}`))));
    });
    req.on('error', reject);
    createReadStream(path, { highWaterMark: 8 * MiB }).pipe(req);
  });
}

async function createImage(s: Session, body: Record<string, unknown>): Promise<string> {
  const r = await s.call('POST', '/image/v2/images', body);
  if (r.status !== 201) throw new Error(`image create failed: ${r.status} ${r.text}`);
  return r.json<{ id: string }>().id;
}

async function showImage(s: Session, id: string): Promise<ImageRow> {
  const r = await s.call('GET', `/image/v2/images/${id}`);
  if (r.status !== 200) throw new Error(`image show failed: ${r.status} ${r.text}`);
  return r.json<ImageRow>();
}

async function waitImageActive(s: Session, id: string): Promise<ImageRow> {
  for (let attempt = 1; ; attempt++) {
    const image = await showImage(s, id);
    if (image.status === 'active') return image;
    if (image.status === 'killed' || image.status === 'deleted') throw new Error(`image ${id} went ${image.status}`);
    await sleep(Math.min(50, 2 ** attempt));
  }
}

/** The old path, rebuilt with the tools it ran: export, convert to qcow2, PUT (the service converts back). */
async function before(s: Session, confPath: string, volumeId: string, round: number): Promise<{ ms: number; image: ImageRow; qcow2Bytes: number }> {
  const raw = join(scratch, 'volume.raw');
  const qcow2 = join(scratch, 'volume.qcow2');
  const started = now();
  await execFileAsync('rbd', ['--conf', confPath, '--id', 'admin', 'export', '--no-progress', `volumes/volume-${volumeId}`, raw], { timeout: 3600_000 });
  await execFileAsync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, qcow2], { timeout: 3600_000 });
  rmSync(raw, { force: true });
  const qcow2Bytes = statSync(qcow2).size;
  const id = await createImage(s, { name: `before-${round}`, disk_format: 'qcow2', container_format: 'bare' });
  await putFile(s, id, qcow2);
  const ms = now() - started;
  rmSync(qcow2, { force: true });
  return { ms, image: await showImage(s, id), qcow2Bytes };
}

/** os-volume_upload_image as qcow2 on this tree: timed until the image is active and the volume available again. */
async function after(s: Session, volumeId: string, round: number): Promise<{ ms: number; image: ImageRow }> {
  const started = now();
  const r = await s.call('POST', `${s.volumeUrl}/volumes/${volumeId}/action`, { 'os-volume_upload_image': { image_name: `after-${round}`, disk_format: 'qcow2', container_format: 'bare', force: false } });
  if (r.status !== 202) throw new Error(`upload to image failed: ${r.status} ${r.text}`);
  const imageId = r.json<{ 'os-volume_upload_image': { image_id: string } }>()['os-volume_upload_image'].image_id;
  const image = await waitImageActive(s, imageId);
  await waitVolumeStatus(s, volumeId, 'available');
  return { ms: now() - started, image };
}

async function deleteImage(s: Session, id: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while ((await s.call('DELETE', `/image/v2/images/${id}`)).status !== 204 && Date.now() < deadline) await sleep(1000);
}

const seconds = (msValue: number): string => `${(msValue / 1000).toFixed(1)} s`;

await withLab(async (lab) => {
  const server = await startServer({
    config:
      `[DEFAULT]\nenabled_backends = ceph\nshow_image_direct_url = true\n` +
      `[ceph]\nvolume_driver = rbd\nvolume_backend_name = ceph\nrbd_pool = volumes\nrbd_user = cinder\nrbd_ceph_conf = ${lab.confPath}\n` +
      `[glance_store]\nstores = rbd\ndefault_store = rbd\nrbd_store_pool = images\nrbd_store_user = glance\nrbd_store_ceph_conf = ${lab.confPath}\n`,
  });
  servers.push(server);
  const s = await login(server.url);
  await unlimitedQuota(s);
  await createBackendType(s, 'ceph');
  console.log(`# volume → image as qcow2 into the rbd store, ${sizeGiB} GiB volume of random bytes, lab ${lab.dir}, ${rounds} rounds; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  // Setup (not measured): a raw image of random bytes and a volume cloned from it.
  const source = join(scratch, 'random.raw');
  makeRandomFile(source, sizeGiB * GiB);
  const sourceImage = await createImage(s, { name: 'bench-random', disk_format: 'raw', container_format: 'bare' });
  await putFile(s, sourceImage, source);
  rmSync(source, { force: true });
  const v = await s.call('POST', `${s.volumeUrl}/volumes`, { volume: { imageRef: sourceImage, size: sizeGiB, volume_type: 'ceph', name: 'bench-qcow2-upload' } });
  if (v.status !== 202) throw new Error(`volume create failed: ${v.status} ${v.text}`);
  const volumeId = v.json<{ volume: { id: string } }>().volume.id;
  await waitVolumeStatus(s, volumeId, 'available');
  const beforeMs: number[] = [];
  const afterMs: number[] = [];
  for (let round = 1; round <= rounds; round++) {
    const b = await before(s, lab.confPath, volumeId, round);
    const a = await after(s, volumeId, round);
    beforeMs.push(b.ms);
    afterMs.push(a.ms);
    for (const [side, image] of [['before', b.image], ['after', a.image]] as const) {
      if (image.disk_format !== 'raw' || image.container_format !== 'bare' || image.original_disk_format !== 'qcow2' || image.size !== sizeGiB * GiB) {
        throw new Error(`${side}: image ${image.id} is not stored as raw from qcow2: ${JSON.stringify(image)}`);
      }
    }
    if (a.image.checksum !== b.image.checksum) throw new Error(`the two images differ: md5 ${b.image.checksum} (before) vs ${a.image.checksum} (after)`);
    console.log(`  round ${round}: before ${seconds(b.ms)} (qcow2 ${(b.qcow2Bytes / MiB).toFixed(0)} MiB), after ${seconds(a.ms)}: ${(b.ms / a.ms).toFixed(2)}× faster; md5 ${a.image.checksum} both`);
    await deleteImage(s, b.image.id);
    await deleteImage(s, a.image.id);
  }
  const b50 = percentile(beforeMs, 50);
  const a50 = percentile(afterMs, 50);
  console.log(`  median before ${seconds(b50)} (${((sizeGiB * GiB) / 1e6 / (b50 / 1000)).toFixed(0)} MB/s), after ${seconds(a50)} (${((sizeGiB * GiB) / 1e6 / (a50 / 1000)).toFixed(0)} MB/s): ${(b50 / a50).toFixed(2)}× faster; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  await s.call('DELETE', `${s.volumeUrl}/volumes/${volumeId}`);
  await waitVolumeStatus(s, volumeId, 'gone');
  await deleteImage(s, sourceImage);
  await server.stop();
  server.cleanup();
  servers = [];
});
