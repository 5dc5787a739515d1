/**
 * Throughput of the librbd binding (src/ceph/rbd.ts) against librbd's own
 * `rbd bench`, on the same Ceph lab, as the same user, in one run:
 *
 *   binding: sequential 4 MiB writes of 1 GiB with 8 in flight, then reads
 *   rbd:     rbd bench --io-type write --io-size 4M --io-threads 8 --io-total 1G --io-pattern seq
 *            rbd bench --io-type read  ...
 *
 * Each side writes a fresh image (same features and 4 MiB objects) and then
 * reads it back. Phases alternate between the two sides, and with --repeat N
 * the side that goes first alternates too. Prints one line per phase, then
 * `name: value` summary lines with the ratio binding / rbd bench.
 *
 *   npm run build:native
 *   PUMICE_CEPH_LAB=/path/to/lab node --import tsx bench/rbd-binding.ts
 *   node --import tsx bench/rbd-binding.ts            # brings up a throwaway lab (src/ceph/lab.ts) and purges it
 *
 * Options: --lab DIR, --user cinder, --pool volumes, --total 1G, --io-size 4M,
 * --depth 8, --repeat 2.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import { libraryVersions, RadosCluster, RBD_FEATURES_DEFAULT, type RbdImage } from '../src/ceph/rbd.ts';

interface Lab {
  confPath: string;
  keyringPath(user: string): string;
}
interface LabModule {
  labUp(dir: string, options?: { log?: (m: string) => void }): Promise<Lab>;
  labPurge(dir: string): Promise<void>;
  readLab(dir: string): Lab;
}

function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)i?B?$/i.exec(s.trim());
  if (!m) throw new Error(`bad size '${s}' (e.g. 4M, 1G)`);
  const mult = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  return Math.round(Number(m[1]) * mult);
}

const { values: opt } = parseArgs({
  options: {
    lab: { type: 'string' },
    user: { type: 'string', default: 'cinder' },
    pool: { type: 'string', default: 'volumes' },
    total: { type: 'string', default: '1G' },
    'io-size': { type: 'string', default: '4M' },
    depth: { type: 'string', default: '8' },
    repeat: { type: 'string', default: '2' },
  },
});
const total = parseSize(opt.total!);
const ioSize = parseSize(opt['io-size']!);
const depth = Number(opt.depth);
const repeat = Number(opt.repeat);
const user = opt.user!.replace(/^client\./, '');
const pool = opt.pool!;
if (total % ioSize !== 0) throw new Error('--total must be a multiple of --io-size');

const labModulePath = fileURLToPath(new URL('../src/ceph/lab.ts', import.meta.url));
const labArg = opt.lab ?? process.env.PUMICE_CEPH_LAB;

async function loadLabModule(): Promise<LabModule | undefined> {
  if (!existsSync(labModulePath)) return undefined;
  return (await import(pathToFileURL(labModulePath).href)) as LabModule;
}

function run(cmd: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve(stdout + stderr);
    });
  });
}

function cpuPercent(startCpu: NodeJS.CpuUsage, seconds: number): number {
  const u = process.cpuUsage(startCpu);
  return ((u.user + u.system) / 1e6 / seconds) * 100;
}

interface Result {
  mbps: number;
  seconds: number;
  cpu?: number;
}

/** Sequential I/O through the binding: `depth` lanes, each with its own buffer. */
async function bindingPhase(img: RbdImage, kind: 'write' | 'read' | 'read-alloc'): Promise<Result> {
  const buffers = Array.from({ length: depth }, () => randomBytes(ioSize));
  let next = 0;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  async function lane(i: number): Promise<void> {
    while (next < total) {
      const off = next;
      next += ioSize;
      if (kind === 'write') await img.write(off, buffers[i]!);
      else if (kind === 'read') await img.readInto(off, buffers[i]!);
      else await img.read(off, ioSize);
    }
  }
  await Promise.all(Array.from({ length: depth }, (_, i) => lane(i)));
  if (kind === 'write') await img.flush();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { mbps: total / 1e6 / seconds, seconds, cpu: cpuPercent(cpu0, seconds) };
}

/** `rbd bench`; throughput from its ops/sec (more digits than its bytes/sec). */
async function rbdBench(lab: Lab, image: string, kind: 'write' | 'read'): Promise<Result> {
  const args = [
    '--conf', lab.confPath, '--id', user, '--keyring', lab.keyringPath(user),
    'bench', '--io-type', kind, '--io-size', String(ioSize), '--io-threads', String(depth),
    '--io-total', String(total), '--io-pattern', 'seq', `${pool}/${image}`,
  ];
  const out = await run('rbd', args, 600_000);
  const m = /elapsed:\s*([\d.]+)\s+ops:\s*(\d+)\s+ops\/sec:\s*([\d.]+)/.exec(out);
  if (!m) throw new Error(`cannot parse rbd bench output:\n${out}`);
  const opsPerSec = Number(m[3]);
  const mbps = (opsPerSec * ioSize) / 1e6;
  return { mbps, seconds: total / 1e6 / mbps };
}

function fmt(r: Result): string {
  return `${r.mbps.toFixed(0)} MB/s (${r.seconds.toFixed(2)} s${r.cpu !== undefined ? `, node CPU ${r.cpu.toFixed(0)}%` : ''})`;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

async function main(): Promise<void> {
  const labModule = await loadLabModule();
  let lab: Lab;
  let ownDir: string | undefined;
  if (labArg) {
    const dir = path.resolve(labArg);
    lab = labModule ? labModule.readLab(dir) : { confPath: path.join(dir, 'ceph.conf'), keyringPath: (u) => path.join(dir, `ceph.client.${u}.keyring`) };
  } else {
    if (!labModule) throw new Error('set PUMICE_CEPH_LAB (or --lab DIR) to a Ceph lab directory');
    ownDir = mkdtempSync(path.join(tmpdir(), 'pumice-rbd-bench-'));
    const t0 = Date.now();
    lab = await labModule.labUp(ownDir);
    console.log(`# lab up in ${ownDir} after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  const v = libraryVersions();
  console.log(
    `## ${new Date().toISOString()} librbd ${v.librbd}, node ${process.version}, load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}; ` +
      `client.${user} on ${pool}: ${total / 1024 ** 2} MiB sequential, ${ioSize / 1024 ** 2} MiB I/Os, ${depth} in flight, ${repeat} round(s)`,
  );

  const cluster = await RadosCluster.connect({ confPath: lab.confPath, user, keyringPath: lab.keyringPath(user), connectTimeoutSeconds: 30 });
  const io = await cluster.openIoctx(pool);
  const tag = `bench${process.pid}`;
  const results = { bw: [] as number[], br: [] as number[], bra: [] as number[], rw: [] as number[], rr: [] as number[] };
  const leftovers = new Set<string>();
  try {
    for (let round = 0; round < repeat; round++) {
      const bName = `${tag}-binding-${round}`;
      const rName = `${tag}-rbd-${round}`;
      for (const n of [bName, rName]) {
        await io.createImage(n, total, { orderBits: Math.log2(4 * 1024 ** 2), features: RBD_FEATURES_DEFAULT });
        leftovers.add(n);
      }
      const img = await io.openImage(bName);
      const bindingFirst = round % 2 === 0;
      const phases: (() => Promise<void>)[] = [];
      const b = (kind: 'write' | 'read' | 'read-alloc', into: number[]) => async () => {
        const r = await bindingPhase(img, kind);
        into.push(r.mbps);
        console.log(`round ${round + 1} binding ${kind.padEnd(10)} ${fmt(r)}`);
      };
      const rb = (kind: 'write' | 'read', into: number[]) => async () => {
        const r = await rbdBench(lab, rName, kind);
        into.push(r.mbps);
        console.log(`round ${round + 1} rbd bench ${kind.padEnd(8)} ${fmt(r)}`);
      };
      if (bindingFirst) phases.push(b('write', results.bw), rb('write', results.rw), b('read', results.br), rb('read', results.rr));
      else phases.push(rb('write', results.rw), b('write', results.bw), rb('read', results.rr), b('read', results.br));
      phases.push(b('read-alloc', results.bra));
      for (const p of phases) await p();
      await img.close();
      for (const n of [bName, rName]) {
        await io.removeImage(n);
        leftovers.delete(n);
      }
    }
  } finally {
    for (const n of leftovers) await io.removeImage(n).catch(() => undefined);
    await cluster.shutdown();
    if (ownDir && labModule) await labModule.labPurge(ownDir);
  }

  const bw = mean(results.bw), rw = mean(results.rw), br = mean(results.br), rr = mean(results.rr), bra = mean(results.bra);
  console.log(`binding_write_MBps: ${bw.toFixed(0)}`);
  console.log(`rbd_bench_write_MBps: ${rw.toFixed(0)}`);
  console.log(`write_ratio: ${(bw / rw).toFixed(2)}`);
  console.log(`binding_read_MBps: ${br.toFixed(0)}`);
  console.log(`binding_read_new_buffer_MBps: ${bra.toFixed(0)}`);
  console.log(`rbd_bench_read_MBps: ${rr.toFixed(0)}`);
  console.log(`read_ratio: ${(br / rr).toFixed(2)}`);
}

await main();
