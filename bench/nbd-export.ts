/**
 * NBD export throughput: Pumice's NBD server against `qemu-nbd` serving the
 * same volume file, measured side by side with fio's nbd engine (Debian's
 * fio is built with libnbd): sequential 1 MiB reads and writes and random
 * 4 KiB reads and writes at queue depth 16, each for `--seconds`, each
 * workload run on Pumice then on qemu-nbd, `--rounds` times. The volume is
 * filled with random bytes first (nbdcopy into Pumice's export), so reads
 * read data and not holes. Prints MB/s (10^6 bytes/s) or IOPS per side, the
 * ratio Pumice / qemu-nbd (aim ≥ 0.9×), and the CPU of each server.
 *
 * sparse_copy: a second volume with 16 MiB of data in 16 regions (qemu-io writes) and holes
 * elsewhere is copied with `nbdcopy URI null:` from each server (both offer base:allocation, so
 * nbdcopy reads only the data), and from Pumice with --no-extents (every byte read, as before
 * Pumice had block status); median seconds of `--rounds`, ratio = qemu-nbd's time / Pumice's.
 *
 *   node --import tsx bench/nbd-export.ts [--gib 1] [--seconds 8] [--rounds 1] [--only rand_write_4k] [--cpu-prof DIR]
 *
 * --only runs the workloads whose name contains the word; --cpu-prof writes
 * the Pumice server's V8 CPU profile into DIR (node --cpu-prof) for profiling.
 *
 * Needs fio (apt-get install fio), qemu-nbd and nbdcopy.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { arg, argString, cleanupOnSignal, cpuSeconds, login, makeRandomFile, now, sleep, startServer, waitVolumeStatus, type Server, type Session } from './lib.ts';

const gib = arg('gib', 1);
const seconds = arg('seconds', 8);
const rounds = arg('rounds', 1);
const only = argString('only', '');
const cpuProfDir = argString('cpu-prof', '');
const GiB = 1024 ** 3;

const workloads = [
  { name: 'seq_read_1m', rw: 'read', bs: '1M', unit: 'MB/s' },
  { name: 'seq_write_1m', rw: 'write', bs: '1M', unit: 'MB/s' },
  { name: 'rand_read_4k', rw: 'randread', bs: '4k', unit: 'IOPS' },
  { name: 'rand_write_4k', rw: 'randwrite', bs: '4k', unit: 'IOPS' },
] as const;
/** Data regions of the sparse_copy volume: 1 MiB every gib * 64 MiB. */
const sparseRegions = 16;

let server: Server | undefined;
let qemuNbd: ChildProcess | undefined;
cleanupOnSignal(() => {
  qemuNbd?.kill('SIGKILL');
  return server ? [server] : [];
});

for (const tool of ['fio', 'qemu-nbd', 'nbdcopy']) {
  try {
    execFileSync('which', [tool], { stdio: 'ignore' });
  } catch {
    console.error(`nbd-export: ${tool} is missing (apt-get install fio qemu-utils libnbd-bin)`);
    process.exit(2);
  }
}

/** One fio run against `uri`: MB/s for sequential workloads, IOPS for random ones, and the requests it completed. */
function fio(uri: string, w: (typeof workloads)[number]): { value: number; ios: number } {
  const out = execFileSync('fio', [
    '--name=bench', '--ioengine=nbd', `--uri=${uri}`, `--rw=${w.rw}`, `--bs=${w.bs}`, '--iodepth=16',
    `--size=${gib}G`, `--runtime=${seconds}`, '--time_based', '--randrepeat=0', '--output-format=json',
  ], { encoding: 'utf8', maxBuffer: 16 << 20 });
  // The nbd engine prints "fio: connected to NBD server" lines before the JSON.
  const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { read: Stats; write: Stats }[] }).jobs[0]!;
  const stats = w.rw.includes('read') ? job.read : job.write;
  return { value: w.unit === 'MB/s' ? stats.bw_bytes / 1e6 : stats.iops, ios: stats.total_ios };
}
interface Stats { bw_bytes: number; iops: number; total_ios: number }

const loadAverage = (): string => loadavg().map((l) => l.toFixed(2)).join(' ');

async function volumeAction(s: Session, id: string, body: unknown): Promise<Record<string, any>> {
  const r = await s.call('POST', `${s.volumeUrl}/volumes/${id}/action`, body);
  if (r.status >= 300) throw new Error(`${JSON.stringify(body)}: ${r.status} ${r.text}`);
  return r.text ? r.json<Record<string, any>>() : {};
}

async function startQemuNbd(file: string): Promise<string> {
  // TCP on loopback like Pumice's export; same cache mode (page cache, flush on request); shared so fio's connection is accepted.
  const port = await freePort();
  qemuNbd = spawn('qemu-nbd', ['--format=raw', '--persistent', '--shared=16', '--cache=writeback', '--aio=threads', '--bind=127.0.0.1', `--port=${port}`, file], { stdio: 'ignore' });
  const deadline = now() + 10_000;
  for (;;) {
    try {
      execFileSync('nbdinfo', ['--size', `nbd://127.0.0.1:${port}`], { stdio: 'ignore' });
      return `nbd://127.0.0.1:${port}`;
    } catch {
      if (now() > deadline) throw new Error('qemu-nbd did not start');
      await sleep(50);
    }
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/** Seconds `nbdcopy [flags] URI null:` takes. */
function nbdcopyNull(uri: string, flags: string[] = []): number {
  const t0 = now();
  execFileSync('nbdcopy', [...flags, uri, 'null:'], { stdio: 'ignore' });
  return (now() - t0) / 1000;
}

/** A new local volume of `gib` GiB, available and attached to the bench: its id and its NBD URI. */
async function exportedVolume(s: Session, name: string): Promise<{ volumeId: string; uri: string }> {
  const created = await s.call('POST', `${s.volumeUrl}/volumes`, { volume: { size: gib, name } });
  if (created.status !== 202) throw new Error(`create volume: ${created.status} ${created.text}`);
  const volumeId = created.json<{ volume: { id: string } }>().volume.id;
  await waitVolumeStatus(s, volumeId, 'available');
  const info = await volumeAction(s, volumeId, { 'os-initialize_connection': { connector: { host: 'bench', initiator: 'bench' } } });
  const d = info['connection_info'].data as { host: string; port: number; export_name: string };
  return { volumeId, uri: `nbd://${d.host}:${d.port}/${d.export_name}` };
}

async function sparseCopy(s: Session): Promise<void> {
  const { volumeId, uri: pumiceUri } = await exportedVolume(s, 'bench-nbd-sparse');
  const stride = (gib * GiB) / sparseRegions;
  const writes = Array.from({ length: sparseRegions }, (_, i) => ['-c', `write -P 0x${(i + 1).toString(16)} ${i * stride + 4096} 1M`]).flat();
  execFileSync('qemu-io', ['-f', 'raw', ...writes, pumiceUri], { stdio: 'ignore' });
  qemuNbd?.kill('SIGTERM');
  const qemuUri = await startQemuNbd(join(server!.dataDir, 'volumes', 'local', `volume-${volumeId}`));
  const [mine, plain, theirs]: number[][] = [[], [], []];
  const loadBefore = loadAverage();
  for (let r = 0; r < rounds; r++) {
    mine.push(nbdcopyNull(pumiceUri));
    plain.push(nbdcopyNull(pumiceUri, ['--no-extents']));
    theirs.push(nbdcopyNull(qemuUri));
  }
  const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
  const [a, p, b] = [median(mine), median(plain), median(theirs)];
  console.log(`sparse_copy_pumice: ${a.toFixed(3)} s (nbdcopy URI null:, ${sparseRegions} MiB of data in ${gib} GiB)`);
  console.log(`sparse_copy_pumice_no_extents: ${p.toFixed(3)} s (nbdcopy --no-extents: every byte read)`);
  console.log(`sparse_copy_qemu_nbd: ${b.toFixed(3)} s`);
  console.log(`sparse_copy_ratio: ${(b / a).toFixed(2)}x (qemu-nbd's time / Pumice's, median of ${rounds}; load average ${loadBefore} → ${loadAverage()})`);
  await volumeAction(s, volumeId, { 'os-terminate_connection': { connector: { host: 'bench' } } }).catch(() => undefined);
}

async function main(): Promise<void> {
  const scratch = mkdtempSync(join(tmpdir(), 'pumice-nbd-bench-'));
  try {
    server = await startServer(cpuProfDir ? { nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] } : {});
    const s = await login(server.url);
    const { volumeId, uri: pumiceUri } = await exportedVolume(s, 'bench-nbd');
    const random = join(scratch, 'random.img');
    makeRandomFile(random, gib * GiB);
    execFileSync('nbdcopy', [random, pumiceUri]);
    rmSync(random);
    const volumeFile = join(server.dataDir, 'volumes', 'local', `volume-${volumeId}`);
    if (!existsSync(volumeFile)) throw new Error(`volume file ${volumeFile} not found`);
    const qemuUri = await startQemuNbd(volumeFile);
    console.log(`# nbd-export: ${gib} GiB local volume filled with random bytes; fio nbd engine, iodepth 16, ${seconds} s per run, ${rounds} round(s); Pumice pid ${server.pid}, qemu-nbd pid ${qemuNbd!.pid}`);
    for (const w of workloads.filter((x) => x.name.includes(only))) {
      const mine: number[] = [];
      const theirs: number[] = [];
      let mineCpu = 0;
      let theirCpu = 0;
      let [mineIos, theirIos] = [0, 0];
      const loadBefore = loadAverage();
      for (let r = 0; r < rounds; r++) {
        let c0 = cpuSeconds(server.pid);
        const a = fio(pumiceUri, w);
        mineCpu += cpuSeconds(server.pid) - c0;
        c0 = cpuSeconds(qemuNbd!.pid!);
        const b = fio(qemuUri, w);
        theirCpu += cpuSeconds(qemuNbd!.pid!) - c0;
        mine.push(a.value);
        theirs.push(b.value);
        mineIos += a.ios;
        theirIos += b.ios;
      }
      const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
      const [a, b] = [median(mine), median(theirs)];
      // CPU per request is what a loaded machine distorts least: the rate depends on the share of the cores each side got.
      const cpu = (x: number, ios: number) => `${((x / (rounds * seconds)) * 100).toFixed(0)}% of one core, ${((x / Math.max(1, ios)) * 1e6).toFixed(1)} µs per request`;
      console.log(`${w.name}_pumice: ${a.toFixed(w.unit === 'IOPS' ? 0 : 1)} ${w.unit} (server CPU ${cpu(mineCpu, mineIos)})`);
      console.log(`${w.name}_qemu_nbd: ${b.toFixed(w.unit === 'IOPS' ? 0 : 1)} ${w.unit} (qemu-nbd CPU ${cpu(theirCpu, theirIos)})`);
      console.log(`${w.name}_ratio: ${(a / b).toFixed(2)}x (median of ${rounds}; load average ${loadBefore} → ${loadAverage()})`);
    }
    // Best effort: the server stops next anyway, and its idle keep-alive socket may be gone after the long fio runs.
    await volumeAction(s, volumeId, { 'os-terminate_connection': { connector: { host: 'bench' } } }).catch(() => undefined);
    if ('sparse_copy'.includes(only)) await sparseCopy(s);
  } finally {
    qemuNbd?.kill('SIGTERM');
    await server?.stop();
    // The volume file (1 GiB per run) goes with the server: stop() leaves the data directory.
    server?.cleanup();
    rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
