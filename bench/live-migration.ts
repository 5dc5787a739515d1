/**
 * Live migration figures (issue 15), TCG, loopback, a 256 MiB test guest whose
 * ticker disk (scripts/build-test-guest.sh) writes a counter every 100 ms and
 * prints each acknowledged value on its serial console.
 *  A. Pumice's QEMU driver (QemuHypervisor: prepareIncoming, migrateTo,
 *     finishIncoming, the calls the agents make), two instances directories
 *     standing for two hosts sharing the disk files.
 *  B. The same guest migrated by hand: two bare qemu-system-x86_64 processes
 *     (-incoming on the target) driven over QMP with the same bandwidth and
 *     downtime limit.
 * For each: total time (migrate → the guest runs on the target) and downtime,
 * the longest gap between two consecutive acknowledged ticks as the bench sees
 * them arrive in the console files (polled every 10 ms), beside QEMU's own
 * downtime figure. The ratio A/B is printed, with the load average.
 *
 *   node --import tsx bench/live-migration.ts [--memory-mib 256]
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { promisify } from 'node:util';
import { QemuHypervisor } from '../src/compute/hypervisor/qemu/index.ts';
import type { GuestDisk, GuestSpec } from '../src/compute/hypervisor/types.ts';
import { testGuestImage } from '../test/helpers/guest.ts';

const execFileAsync = promisify(execFile);
const { values } = parseArgs({ options: { 'memory-mib': { type: 'string', default: '256' } } });
const memoryMiB = Number(values['memory-mib']);
const bandwidthBytesPerS = 1024 * 1024 * 1024;
const downtimeLimitMs = 300;
const tickSerial = 'ticker';

interface Figures {
  totalMs: number;
  gapMs: number;
  qemuDowntimeMs: number | null;
  ticksBefore: number;
  ticksAfter: number;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function tickerDisk(file: string): Promise<void> {
  await writeFile(file, Buffer.concat([Buffer.from('PUMICE-TICK 0\n'), Buffer.alloc(512 - 14)]));
  await truncate(file, 16 * 1024 * 1024);
}

/** Watches console files for acknowledged ticks and stamps each on arrival. */
class TickWatch {
  private readonly seen = new Map<number, number>();
  private timer: NodeJS.Timeout | null = null;
  constructor(private readonly files: string[]) {}
  start(): void {
    this.timer = setInterval(() => this.poll(), 10);
  }
  poll(): void {
    for (const file of this.files) {
      if (!existsSync(file)) continue;
      for (const m of readFileSync(file, 'latin1').matchAll(/PUMICE-TICK serial=(\S*) n=(\d+)/g)) {
        if (m[1] === tickSerial && !this.seen.has(Number(m[2]))) this.seen.set(Number(m[2]), Date.now());
      }
    }
  }
  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
  count(): number {
    return this.seen.size;
  }
  async waitTicks(n: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.seen.size < n) {
      if (Date.now() > deadline) throw new Error(`only ${this.seen.size} ticks within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  /** The longest gap between consecutive ticks seen within [fromMs, toMs + 2 s]. */
  longestGapMs(fromMs: number, toMs: number): number {
    const stamps = [...this.seen.entries()].sort((a, b) => a[0] - b[0]).map(([, at]) => at).filter((at) => at >= fromMs - 1000 && at <= toMs + 2000);
    let gap = 0;
    for (let i = 1; i < stamps.length; i++) gap = Math.max(gap, stamps[i]! - stamps[i - 1]!);
    return gap;
  }
}

async function viaDriver(work: string, boot: string): Promise<Figures> {
  const uuid = randomUUID();
  const source = new QemuHypervisor({ instancesDir: path.join(work, 'a-src'), log: () => undefined });
  const target = new QemuHypervisor({ instancesDir: path.join(work, 'a-dst'), log: () => undefined });
  const ticker = path.join(work, 'a-ticker.raw');
  await tickerDisk(ticker);
  const disk = (diskId: string, file: string, extra: Partial<GuestDisk> = {}): GuestDisk => ({ diskId, serial: diskId, source: { kind: 'file', path: file, format: 'raw' }, readOnly: false, cache: 'none', discard: 'unmap', ...extra });
  const spec: GuestSpec = { uuid, name: 'bench-lm', vcpus: 1, memoryMiB, virtType: 'qemu', disks: [disk('root', boot, { bootIndex: 1 }), disk(tickSerial, ticker)] };
  const watch = new TickWatch([path.join(work, 'a-src', uuid, 'console.log'), path.join(work, 'a-dst', uuid, 'console.log')]);
  try {
    await source.spawn(spec);
    watch.start();
    await watch.waitTicks(20, 180_000);
    const port = await freePort();
    const before = watch.count();
    const started = Date.now();
    await target.prepareIncoming(spec, { host: '127.0.0.1', port });
    const result = await source.migrateTo(uuid, { host: '127.0.0.1', port }, { timeoutMs: 300_000, maxBandwidthBytesPerS: bandwidthBytesPerS });
    await target.finishIncoming(uuid);
    const totalMs = Date.now() - started;
    await watch.waitTicks(before + 20, 60_000);
    return { totalMs, gapMs: watch.longestGapMs(started, started + totalMs), qemuDowntimeMs: result.downtimeMs, ticksBefore: before, ticksAfter: watch.count() - before };
  } finally {
    watch.stop();
    for (const hv of [source, target]) {
      await hv.destroy(uuid, { removeFiles: true }).catch(() => undefined);
      await hv.close();
    }
  }
}

/** A minimal QMP conversation: one command at a time, replies matched by order. */
async function qmpSession(socketPath: string): Promise<{ run: (command: string, args?: unknown) => Promise<Record<string, unknown>>; close: () => void }> {
  const deadline = Date.now() + 30_000;
  while (!existsSync(socketPath)) {
    if (Date.now() > deadline) throw new Error(`no QMP socket ${socketPath}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const socket = net.connect(socketPath);
  let buffer = '';
  const waiting: ((m: Record<string, unknown>) => void)[] = [];
  socket.on('data', (d: Buffer) => {
    buffer += d.toString();
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const message = JSON.parse(buffer.slice(0, nl)) as Record<string, unknown>;
      buffer = buffer.slice(nl + 1);
      if ('return' in message || 'error' in message) waiting.shift()?.(message);
    }
  });
  const run = (command: string, args?: unknown) => new Promise<Record<string, unknown>>((resolve, reject) => {
    waiting.push((m) => ('error' in m ? reject(new Error(`${command}: ${JSON.stringify(m['error'])}`)) : resolve(m['return'] as Record<string, unknown>)));
    socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) })}\n`);
  });
  await run('qmp_capabilities');
  return { run, close: () => socket.destroy() };
}

function bareQemu(dir: string, boot: string, ticker: string, incomingPort: number | null): ChildProcess {
  const args = [
    '-machine', 'pc', '-accel', 'tcg', '-m', String(memoryMiB), '-smp', '1', '-nographic', '-nodefaults', '-no-user-config',
    '-drive', `file=${boot},format=raw,if=none,id=d0,cache=none`, '-device', 'virtio-blk-pci,drive=d0,bus=pci.0,addr=0x4,bootindex=1',
    '-drive', `file=${ticker},format=raw,if=none,id=d1,cache=none`, '-device', `virtio-blk-pci,drive=d1,bus=pci.0,addr=0x5,serial=${tickSerial}`,
    '-chardev', `file,id=s0,path=${path.join(dir, 'console.log')},append=on`, '-serial', 'chardev:s0',
    '-qmp', `unix:${path.join(dir, 'qmp.sock')},server=on,wait=off`,
    ...(incomingPort === null ? [] : ['-incoming', `tcp:127.0.0.1:${incomingPort}`]),
  ];
  return spawn('qemu-system-x86_64', args, { stdio: 'ignore' });
}

async function byHand(work: string, boot: string): Promise<Figures> {
  const srcDir = path.join(work, 'b-src');
  const dstDir = path.join(work, 'b-dst');
  await execFileAsync('mkdir', ['-p', srcDir, dstDir]);
  const ticker = path.join(work, 'b-ticker.raw');
  await tickerDisk(ticker);
  const watch = new TickWatch([path.join(srcDir, 'console.log'), path.join(dstDir, 'console.log')]);
  const procs: ChildProcess[] = [];
  try {
    procs.push(bareQemu(srcDir, boot, ticker, null));
    const src = await qmpSession(path.join(srcDir, 'qmp.sock'));
    watch.start();
    await watch.waitTicks(20, 180_000);
    const port = await freePort();
    const before = watch.count();
    const started = Date.now();
    procs.push(bareQemu(dstDir, boot, ticker, port));
    const dst = await qmpSession(path.join(dstDir, 'qmp.sock'));
    await src.run('migrate-set-parameters', { 'max-bandwidth': bandwidthBytesPerS, 'downtime-limit': downtimeLimitMs });
    await src.run('migrate', { uri: `tcp:127.0.0.1:${port}` });
    let info: Record<string, unknown>;
    for (;;) {
      info = await src.run('query-migrate');
      if (info['status'] === 'completed') break;
      if (info['status'] === 'failed' || info['status'] === 'cancelled') throw new Error(`bare migration ${String(info['status'])}: ${JSON.stringify(info)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    while ((await dst.run('query-status'))['status'] !== 'running') await new Promise((r) => setTimeout(r, 20));
    const totalMs = Date.now() - started;
    await src.run('quit').catch(() => undefined);
    src.close();
    await watch.waitTicks(before + 20, 60_000);
    await dst.run('quit').catch(() => undefined);
    dst.close();
    return { totalMs, gapMs: watch.longestGapMs(started, started + totalMs), qemuDowntimeMs: (info['downtime'] as number | undefined) ?? null, ticksBefore: before, ticksAfter: watch.count() - before };
  } finally {
    watch.stop();
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
  }
}

const work = await mkdtemp(path.join(tmpdir(), 'pumice-bench-lm-'));
try {
  const boot = path.join(work, 'boot.raw');
  await execFileAsync('cp', ['--sparse=always', await testGuestImage(), boot]);
  const loadBefore = loadavg().map((l) => l.toFixed(2)).join(' ');
  const a = await viaDriver(work, boot);
  const b = await byHand(work, boot);
  const show = (f: Figures) => `total ${f.totalMs} ms, downtime (longest tick gap) ${f.gapMs} ms, QEMU's downtime ${f.qemuDowntimeMs ?? '?'} ms (ticks ${f.ticksBefore} before, ${f.ticksAfter} after)`;
  console.log(`live migration, TCG, ${memoryMiB} MiB guest, loopback, load average ${loadBefore} → ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  console.log(`  A. Pumice's QEMU driver: ${show(a)}`);
  console.log(`  B. bare qemu-system-x86_64 by hand: ${show(b)}`);
  console.log(`  ratio A/B: total ${(a.totalMs / b.totalMs).toFixed(2)}x, tick gap ${(a.gapMs / Math.max(1, b.gapMs)).toFixed(2)}x`);
} finally {
  await rm(work, { recursive: true, force: true });
}
