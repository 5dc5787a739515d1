/**
 * Boot-from-volume figures, side by side with bare QEMU in one run.
 *  1. Pumice: POST /servers with a bootable local volume (the test guest, over
 *     NBD) → the guest's boot marker on the console, split by polling the
 *     server's task_state every 5 ms: API (the POST), scheduling + volume
 *     connection (until `spawning`), QEMU start (until ACTIVE), guest boot
 *     (until the marker is in the console log).
 *  2. Bare QEMU: `qemu-system-x86_64` started by hand on a copy of the same
 *     raw disk with the same machine options → the same marker.
 *  Pumice's overhead over bare QEMU = median(1) − median(2) (aim ≤ 0.5 s).
 *  3. Attach of a blank data volume → the guest prints its PUMICE-DISK marker.
 *  4. Memory: the Pumice process's RSS per running instance, and QEMU's.
 *
 *   node --import tsx bench/boot.ts [--repeat 5] [--virt-type qemu|kvm]
 */
import { execFile, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { testGuestImage } from '../test/helpers/guest.ts';
import { arg, argString, cleanupOnSignal, login, now, rssMiB, sleep, startServer, waitVolumeStatus, type Server, type Session } from './lib.ts';

const execFileAsync = promisify(execFile);
const repeat = arg('repeat', 5);
const virtType = argString('virt-type', 'qemu');
const compute = { 'OpenStack-API-Version': 'compute 2.79' };
const marker = 'PUMICE-GUEST-BOOTED';

let servers: Server[] = [];
cleanupOnSignal(() => servers);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function fmt(msValue: number): string {
  return `${(msValue / 1000).toFixed(2)} s`;
}

async function consoleHas(s: Session, id: string, pattern: string): Promise<boolean> {
  const r = await s.call('POST', `/compute/v2.1/servers/${id}/action`, { 'os-getConsoleOutput': { length: -1 } }, compute);
  return r.status === 200 && r.json<{ output: string }>().output.includes(pattern);
}

async function uploadGuest(s: Session): Promise<string> {
  const created = await s.call('POST', '/image/v2/images', { name: 'guest', disk_format: 'raw', container_format: 'bare' });
  const id = created.json<{ id: string }>().id;
  await execFileAsync('curl', ['-sf', '-T', await testGuestImage(), '-H', `X-Auth-Token: ${s.token}`, '-H', 'Content-Type: application/octet-stream', `${s.url}/image/v2/images/${id}/file`]);
  for (;;) {
    if ((await s.call('GET', `/image/v2/images/${id}`)).json<{ status: string }>().status === 'active') return id;
    await sleep(50);
  }
}

interface PumiceBoot {
  apiMs: number;
  toSpawningMs: number;
  qemuStartMs: number;
  guestBootMs: number;
  totalMs: number;
}

async function bootOnce(s: Session, volumeId: string, name: string): Promise<{ id: string; timing: PumiceBoot }> {
  const t0 = now();
  const r = await s.call('POST', '/compute/v2.1/servers', { server: { name, flavorRef: '42', networks: 'none', block_device_mapping_v2: [{ source_type: 'volume', destination_type: 'volume', uuid: volumeId, boot_index: 0 }] } }, compute);
  const tApi = now();
  if (r.status !== 202) throw new Error(`server create: ${r.status} ${r.text}`);
  const id = r.json<{ server: { id: string } }>().server.id;
  let tSpawning = 0;
  let tActive = 0;
  for (;;) {
    const row = (await s.call('GET', `/compute/v2.1/servers/${id}`, undefined, compute)).json<{ server: Record<string, string | null> }>().server;
    if (!tSpawning && (row['OS-EXT-STS:task_state'] === 'spawning' || row['status'] === 'ACTIVE')) tSpawning = now();
    if (row['status'] === 'ACTIVE') {
      tActive = now();
      break;
    }
    if (row['status'] === 'ERROR') throw new Error(`server ${id} went to ERROR: ${JSON.stringify(row['fault'])}`);
    await sleep(5);
  }
  while (!(await consoleHas(s, id, marker))) await sleep(20);
  const tMarker = now();
  return { id, timing: { apiMs: tApi - t0, toSpawningMs: tSpawning - tApi, qemuStartMs: tActive - tSpawning, guestBootMs: tMarker - tActive, totalMs: tMarker - t0 } };
}

/** Starts QEMU by hand with the options Pumice's driver uses, on a copy of the disk; ms to the marker. */
async function bareQemuOnce(image: string, dir: string): Promise<number> {
  const disk = join(dir, 'bare.raw');
  const log = join(dir, 'bare.log');
  copyFileSync(image, disk);
  rmSync(log, { force: true });
  const accel = virtType === 'kvm' ? 'kvm' : 'tcg,tb-size=32';
  const t0 = now();
  const proc = spawn('qemu-system-x86_64', [
    '-machine', 'pc', '-accel', accel, '-m', '128', '-smp', '1', '-nodefaults', '-no-user-config', '-display', 'none', '-vga', 'none',
    '-chardev', `file,id=serial0,path=${log}`, '-serial', 'chardev:serial0',
    '-blockdev', JSON.stringify({ driver: 'raw', 'node-name': 'disk0', file: { driver: 'file', filename: disk } }),
    '-device', 'virtio-blk-pci,drive=disk0,bus=pci.0,addr=0x4,bootindex=1',
  ], { stdio: 'ignore' });
  try {
    for (;;) {
      if (existsSync(log) && readFileSync(log, 'utf8').includes(marker)) return now() - t0;
      if (proc.exitCode !== null) throw new Error('bare QEMU exited before the marker');
      if (now() - t0 > 120_000) throw new Error('bare QEMU: no marker in 120 s');
      await sleep(20);
    }
  } finally {
    proc.kill('SIGKILL');
  }
}

async function main(): Promise<void> {
  const image = await testGuestImage();
  const work = mkdtempSync(join(tmpdir(), 'pumice-bench-boot-'));
  const server = await startServer({ config: `[DEFAULT]\nreport_interval = 2\n\n[libvirt]\nvirt_type = ${virtType}\n` });
  servers = [server];
  try {
    const s = await login(server.url);
    const imageId = await uploadGuest(s);
    const volumes: string[] = [];
    for (let i = 0; i < repeat; i++) {
      const r = await s.call('POST', `${s.volumeUrl}/volumes`, { volume: { size: 1, imageRef: imageId, name: `boot-${i}` } });
      volumes.push(r.json<{ volume: { id: string } }>().volume.id);
    }
    for (const v of volumes) await waitVolumeStatus(s, v, 'available');
    const rssIdle = rssMiB(server.pid);
    console.log(`machine: ${virtType === 'kvm' ? 'KVM' : 'TCG'}, ${repeat} boots of the test guest (32 MiB raw, m1.nano: 1 vCPU, 128 MiB), local volumes over NBD`);

    const pumiceRuns: PumiceBoot[] = [];
    const bareRuns: number[] = [];
    const ids: string[] = [];
    // Interleaved so that machine load hits both sides alike.
    for (let i = 0; i < repeat; i++) {
      const { id, timing } = await bootOnce(s, volumes[i]!, `bench-${i}`);
      ids.push(id);
      pumiceRuns.push(timing);
      bareRuns.push(await bareQemuOnce(image, work));
      console.log(`round ${i + 1}: pumice ${fmt(timing.totalMs)} (api ${timing.apiMs.toFixed(0)} ms, scheduling+volume ${timing.toSpawningMs.toFixed(0)} ms, qemu start ${timing.qemuStartMs.toFixed(0)} ms, guest boot ${fmt(timing.guestBootMs)}), bare qemu ${fmt(bareRuns[i]!)}`);
    }
    const pick = (k: keyof PumiceBoot) => median(pumiceRuns.map((r) => r[k]));
    console.log(`boot from volume, API call → boot marker, median of ${repeat}: ${fmt(pick('totalMs'))}`);
    console.log(`  api (POST /servers): ${pick('apiMs').toFixed(0)} ms`);
    console.log(`  scheduling + volume attachment (until spawning): ${pick('toSpawningMs').toFixed(0)} ms`);
    console.log(`  qemu start (spawning → ACTIVE): ${pick('qemuStartMs').toFixed(0)} ms`);
    console.log(`  guest boot (ACTIVE → marker): ${fmt(pick('guestBootMs'))}`);
    console.log(`bare qemu-system-x86_64 → boot marker, median of ${repeat}: ${fmt(median(bareRuns))}`);
    const overhead = pick('totalMs') - median(bareRuns);
    console.log(`pumice overhead over bare QEMU: ${fmt(overhead)} (aim ≤ 0.50 s: ${overhead <= 500 ? 'met' : 'not met'}); ratio ${(pick('totalMs') / median(bareRuns)).toFixed(2)}×`);

    // Attach → the guest sees the disk.
    const attachRuns: number[] = [];
    for (let i = 0; i < Math.min(repeat, ids.length); i++) {
      const r = await s.call('POST', `${s.volumeUrl}/volumes`, { volume: { size: 1, name: `data-${i}` } });
      const vid = r.json<{ volume: { id: string } }>().volume.id;
      await waitVolumeStatus(s, vid, 'available');
      const t0 = now();
      const a = await s.call('POST', `/compute/v2.1/servers/${ids[i]}/os-volume_attachments`, { volumeAttachment: { volumeId: vid } }, compute);
      if (a.status !== 200) throw new Error(`attach: ${a.status} ${a.text}`);
      while (!(await consoleHas(s, ids[i]!, `PUMICE-DISK serial=${vid.slice(0, 20)} counter=1`))) await sleep(20);
      attachRuns.push(now() - t0);
    }
    console.log(`attach of a data volume → the guest sees it (hot-plug + its marker), median of ${attachRuns.length}: ${fmt(median(attachRuns))}`);

    const rssRunning = rssMiB(server.pid);
    const qemuRss: number[] = [];
    for (const id of ids) {
      const pidFile = join(server.dataDir, 'instances', id, 'qemu.pid');
      if (existsSync(pidFile)) qemuRss.push(rssMiB(Number(readFileSync(pidFile, 'utf8').trim())));
    }
    console.log(`pumice RSS: ${rssIdle.toFixed(0)} MiB before the boots, ${rssRunning.toFixed(0)} MiB with ${ids.length} instances: ${((rssRunning - rssIdle) / ids.length).toFixed(1)} MiB per instance`);
    console.log(`qemu RSS per instance (TCG, 128 MiB guest): median ${median(qemuRss).toFixed(0)} MiB`);
    for (const id of ids) await s.call('DELETE', `/compute/v2.1/servers/${id}`, undefined, compute);
    for (const id of ids) while ((await s.call('GET', `/compute/v2.1/servers/${id}`, undefined, compute)).status !== 404) await sleep(100);
  } finally {
    await server.stop();
    server.cleanup();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
