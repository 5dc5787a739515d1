/**
 * RBD backend figures on the lab cluster:
 *  1. create→available→delete→gone cycles per second through the API with
 *     1, 8 and 32 clients, against the same sequence done by `rbd create` /
 *     `rbd rm` CLI calls (one client, the same cluster, in the same run), and
 *     before each concurrency the cluster's own ceiling at that concurrency:
 *     librbd create + remove through the native binding, no API, no database;
 *  2. create→available latency of a volume from a snapshot and of a volume
 *     clone, for a 1 GiB and a 100 GiB source (copy-on-write: should be equal).
 *
 *   PUMICE_CEPH_LAB=DIR node --import tsx bench/rbd-cycles.ts [--duration 10] [--concurrency 1,8,32] [--repeat 5]
 * Without PUMICE_CEPH_LAB it brings a lab up in a temp dir and purges it at the end.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { CephLab } from '../src/ceph/lab.ts';
import { RadosCluster, RBD_FEATURES_DEFAULT } from '../src/ceph/rbd.ts';
import { arg, argString, cleanupOnSignal, latencySummary, login, now, percentile, sleep, startServer, unlimitedQuota, type Server, type Session, waitVolumeStatus, createBackendType, withLab } from './lib.ts';

const execFileAsync = promisify(execFile);
const durationS = arg('duration', 10);
const concurrencies = argString('concurrency', '1,8,32').split(',').map(Number);
const repeat = arg('repeat', 5);

let server: Server | undefined;
cleanupOnSignal(() => (server ? [server] : []));


async function createVolume(s: Session, body: Record<string, unknown>): Promise<string> {
  const r = await s.call('POST', `${s.volumeUrl}/volumes`, { volume: body });
  if (r.status !== 202) throw new Error(`create failed: ${r.status} ${r.text}`);
  return r.json<{ volume: { id: string } }>().volume.id;
}

async function deleteVolume(s: Session, id: string): Promise<void> {
  const r = await s.call('DELETE', `${s.volumeUrl}/volumes/${id}`);
  if (r.status !== 202) throw new Error(`delete failed: ${r.status} ${r.text}`);
  await waitVolumeStatus(s, id, 'gone');
}

async function apiCycles(s: Session, clients: number): Promise<void> {
  const deadline = now() + durationS * 1000;
  const createLatencies: number[] = [];
  let cycles = 0;
  const started = now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (now() < deadline) {
        const t0 = now();
        const id = await createVolume(s, { size: 1, volume_type: 'ceph' });
        await waitVolumeStatus(s, id, 'available');
        createLatencies.push(now() - t0);
        await deleteVolume(s, id);
        cycles++;
      }
    }),
  );
  const elapsedS = (now() - started) / 1000;
  console.log(`rbd_api_c${clients}_cycles_per_s: ${(cycles / elapsedS).toFixed(1)} (${cycles} in ${elapsedS.toFixed(1)} s)`);
  console.log(`rbd_api_c${clients}_create_to_available: ${latencySummary(createLatencies)}`);
}

async function cliCycles(lab: CephLab): Promise<void> {
  const rbd = (args: string[]) => execFileAsync('rbd', ['--conf', lab.confPath, '--id', 'cinder', ...args], { timeout: 60_000 });
  const deadline = now() + durationS * 1000;
  let cycles = 0;
  const started = now();
  while (now() < deadline) {
    const name = `volumes/bench-cli-${cycles}`;
    await rbd(['create', '--size', '1G', '--object-size', '4M', name]);
    await rbd(['rm', '--no-progress', name]);
    cycles++;
  }
  const elapsedS = (now() - started) / 1000;
  console.log(`rbd_cli_c1_cycles_per_s: ${(cycles / elapsedS).toFixed(1)} (${cycles} rbd create + rbd rm in ${elapsedS.toFixed(1)} s)`);
}

/**
 * The lab's own ceiling: librbd create (1 GiB, 4 MiB objects, the driver's features) + remove through
 * the native binding, `clients` at once on one connection, no API and no database. With the OSDs on
 * the same 2 cores, this says how many cycles/s the cluster itself allows at that concurrency.
 */
async function librbdCycles(lab: CephLab, clients: number): Promise<void> {
  const cluster = await RadosCluster.connect({ confPath: lab.confPath, user: 'cinder', keyringPath: lab.keyringPath('cinder'), connectTimeoutSeconds: 30 });
  try {
    const io = await cluster.openIoctx('volumes');
    const deadline = now() + durationS * 1000;
    let cycles = 0;
    const started = now();
    await Promise.all(
      Array.from({ length: clients }, async (_, client) => {
        for (let i = 0; now() < deadline; i++) {
          const name = `bench-librbd-${process.pid}-${client}-${i}`;
          await io.createImage(name, 1024 ** 3, { orderBits: 22, features: RBD_FEATURES_DEFAULT });
          await io.removeImage(name);
          cycles++;
        }
      }),
    );
    const elapsedS = (now() - started) / 1000;
    console.log(`rbd_librbd_c${clients}_cycles_per_s: ${(cycles / elapsedS).toFixed(1)} (${cycles} create + remove through the binding, ${clients} at once, in ${elapsedS.toFixed(1)} s)`);
  } finally {
    await cluster.shutdown();
  }
}

async function cloneLatency(s: Session, sizeGiB: number): Promise<void> {
  const source = await createVolume(s, { size: sizeGiB, volume_type: 'ceph', name: `src-${sizeGiB}` });
  await waitVolumeStatus(s, source, 'available');
  const snapR = await s.call('POST', `${s.volumeUrl}/snapshots`, { snapshot: { volume_id: source, name: `snap-${sizeGiB}` } });
  const snapshotId = snapR.json<{ snapshot: { id: string } }>().snapshot.id;
  for (;;) {
    const r = await s.call('GET', `${s.volumeUrl}/snapshots/${snapshotId}`);
    if (r.json<{ snapshot: { status: string } }>().snapshot.status === 'available') break;
    await sleep(5);
  }
  const fromSnapshot: number[] = [];
  const fromVolume: number[] = [];
  const made: string[] = [];
  for (let i = 0; i < repeat; i++) {
    let t0 = now();
    const a = await createVolume(s, { snapshot_id: snapshotId });
    await waitVolumeStatus(s, a, 'available');
    fromSnapshot.push(now() - t0);
    t0 = now();
    const b = await createVolume(s, { source_volid: source });
    await waitVolumeStatus(s, b, 'available');
    fromVolume.push(now() - t0);
    made.push(a, b);
  }
  console.log(`rbd_volume_from_snapshot_${sizeGiB}GiB: ${latencySummary(fromSnapshot)} (median ${percentile(fromSnapshot, 50).toFixed(1)} ms)`);
  console.log(`rbd_volume_clone_${sizeGiB}GiB: ${latencySummary(fromVolume)} (median ${percentile(fromVolume, 50).toFixed(1)} ms)`);
  for (const id of made) await deleteVolume(s, id);
  await s.call('DELETE', `${s.volumeUrl}/snapshots/${snapshotId}`);
  await sleep(500);
  await deleteVolume(s, source).catch(async () => {
    await sleep(2000);
    await deleteVolume(s, source);
  });
}

async function main(): Promise<void> {
  await withLab(async (lab) => {
    try {
      server = await startServer({
        config: `[DEFAULT]\nenabled_backends = ceph\n[ceph]\nvolume_driver = rbd\nvolume_backend_name = ceph\nrbd_pool = volumes\nrbd_user = cinder\nrbd_ceph_conf = ${lab.confPath}\nrbd_store_chunk_size = 4\n# the lab has ~14 GiB usable: let 100 GiB thin clones through\nmax_over_subscription_ratio = 1000\n`,
      });
      const s = await login(server.url);
      await unlimitedQuota(s);
      await createBackendType(s, 'ceph');
      console.log(`# rbd-cycles: ${durationS} s per phase, lab ${lab.dir}`);
      await cliCycles(lab);
      // Side by side per concurrency: the cluster's own librbd ceiling, then the API's cycles.
      for (const c of concurrencies) {
        await librbdCycles(lab, c);
        await apiCycles(s, c);
      }
      for (const size of [1, 100]) await cloneLatency(s, size);
    } finally {
      await server?.stop();
      server?.cleanup();
    }
  });
}

await main();
