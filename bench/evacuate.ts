/**
 * Evacuation figures (issue 13), TCG, two compute hosts on one machine: `pumice`
 * (the cloud's own process) and `compute02` (`pumice serve --roles compute`).
 *  A. Manual: a server booted from a volume on compute02; the host is forced down
 *     through the API (no detection time, as the OpenStack Zed figure), then its
 *     agent and QEMU are killed -9; `evacuate` call → ACTIVE on pumice, → the
 *     guest's READY marker. Median of --repeat runs. Split: call → fenced (the
 *     migration record leaves `accepted`), → ACTIVE, → READY.
 *  B. Automatic: `[compute] auto_evacuate = true`, service_down_time = 5,
 *     auto_evacuate_grace_s = 0; compute02 dies (kill -9, not forced down) →
 *     detection (the migration record appears), fencing, rebuild (→ ACTIVE),
 *     guest boot (→ READY), printed separately.
 *  C. Evacuating --instances servers of one host (booted from the image, local
 *     qcow2 roots, rebuilt from the cached image on pumice): total time to all
 *     ACTIVE and to all READY, and the most evacuations in flight at once.
 * Compared with OpenStack Zed (Nova + libvirt, same lab, TCG, the same guest):
 * evacuate → READY median 8.1 s, → ACTIVE 2.6 s.
 *
 *   node --import tsx bench/evacuate.ts [--repeat 3] [--instances 10] [--phases ABC] [--ceph]
 *
 * --ceph boots from RBD volumes on the lab in $PUMICE_CEPH_LAB (the fence then
 * blocklists the dead host's Ceph clients); without it, local volumes over NBD.
 */
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { readLab } from '../src/ceph/lab.ts';
import { testGuestImage } from '../test/helpers/guest.ts';
import { cephComputeConfig, startComputeHost, type ComputeHostProcess } from '../test/helpers/compute-host.ts';
import { arg, argString, cleanupOnSignal, cpuMeter, flag, login, now, sleep, startServer, waitVolumeStatus, type Server, type Session } from './lib.ts';

const execFileAsync = promisify(execFile);
const repeat = arg('repeat', 3);
const instances = arg('instances', 10);
const useCeph = flag('ceph');
const phases = argString('phases', 'ABC');
const compute = { 'OpenStack-API-Version': 'compute 2.79' };
const zedReadyMs = 8100;
const zedActiveMs = 2600;
const ready = 'PUMICE-GUEST-READY';
const secretUuid = '457eb676-33da-42ec-9a8c-9293d545c337';
const fenceUser = `pumice-bench-evac-${process.pid}`;

let servers: Server[] = [];
cleanupOnSignal(() => servers);
let compute02: ComputeHostProcess | null = null;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function s1(msValue: number): string {
  return `${(msValue / 1000).toFixed(2)} s`;
}

function config(cephParts: { confPath: string; keyringPath: string } | null): string {
  const computeLines = `auto_evacuate = true
auto_evacuate_grace_s = 0
evacuation_blocklist_expire_s = 600
# --instances guests of 1 vCPU on one host of 2 cores.
cpu_allocation_ratio = 16
`;
  if (cephParts) return cephComputeConfig({ confPath: cephParts.confPath, secretUuid, rbdUser: fenceUser, keyringPath: cephParts.keyringPath, serviceDownTimeS: 5, compute: computeLines });
  return `[DEFAULT]
report_interval = 1
service_down_time = 5

[libvirt]
virt_type = qemu

[compute]
${computeLines}`;
}

async function uploadGuest(s: Session): Promise<string> {
  const created = await s.call('POST', '/image/v2/images', { name: 'guest', disk_format: 'raw', container_format: 'bare', visibility: 'public' });
  const id = created.json<{ id: string }>().id;
  await execFileAsync('curl', ['-sf', '-T', await testGuestImage(), '-H', `X-Auth-Token: ${s.token}`, '-H', 'Content-Type: application/octet-stream', `${s.url}/image/v2/images/${id}/file`]);
  for (;;) {
    if ((await s.call('GET', `/image/v2/images/${id}`)).json<{ status: string }>().status === 'active') return id;
    await sleep(50);
  }
}

async function serverRow(s: Session, id: string): Promise<Record<string, unknown>> {
  return (await s.call('GET', `/compute/v2.1/servers/${id}`, undefined, compute)).json<{ server: Record<string, unknown> }>().server;
}

async function waitActive(s: Session, id: string, host: string, timeoutMs = 300_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const row = await serverRow(s, id);
    if (row['status'] === 'ACTIVE' && row['OS-EXT-STS:task_state'] === null && row['OS-EXT-SRV-ATTR:host'] === host) return now();
    if (row['status'] === 'ERROR') throw new Error(`server ${id} went to ERROR: ${JSON.stringify(row['fault'])}`);
    if (Date.now() > deadline) throw new Error(`server ${id} not ACTIVE on ${host}: ${JSON.stringify(row)}`);
    await sleep(20);
  }
}

async function consoleHas(s: Session, id: string, pattern: string): Promise<boolean> {
  const r = await s.call('POST', `/compute/v2.1/servers/${id}/action`, { 'os-getConsoleOutput': { length: -1 } }, compute);
  return r.status === 200 && r.json<{ output: string }>().output.includes(pattern);
}

async function waitReady(s: Session, id: string, timeoutMs = 300_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (!(await consoleHas(s, id, ready))) {
    if (Date.now() > deadline) throw new Error(`server ${id} never printed ${ready}`);
    await sleep(50);
  }
  return now();
}

async function migrationsOf(s: Session): Promise<{ instance_uuid: string; status: string; id: number }[]> {
  return (await s.call('GET', '/compute/v2.1/os-migrations?migration_type=evacuation', undefined, compute)).json<{ migrations: { instance_uuid: string; status: string; id: number }[] }>().migrations;
}

async function forceDown(s: Session, host: string, down: boolean): Promise<void> {
  const r = await s.call('PUT', '/compute/v2.1/os-services/force-down', { host, binary: 'nova-compute', forced_down: down }, { 'OpenStack-API-Version': 'compute 2.11' });
  if (r.status !== 200) throw new Error(`force-down ${host}: ${r.status} ${r.text}`);
}

async function waitServiceUp(s: Session, host: string): Promise<void> {
  for (;;) {
    const r = await s.call('GET', '/compute/v2.1/os-services?binary=nova-compute', undefined, compute);
    if (r.json<{ services: { host: string; state: string }[] }>().services.some((svc) => svc.host === host && svc.state === 'up')) return;
    await sleep(100);
  }
}

async function qemuPidsUnder(dir: string): Promise<number[]> {
  const { stdout } = await execFileAsync('ps', ['-eo', 'pid=,args='], { maxBuffer: 16 << 20 });
  return stdout.split('\n').filter((l) => l.includes('qemu-system') && l.includes(dir)).map((l) => Number(l.trim().split(/\s+/)[0]));
}

/** A power cut of compute02: its agent and guests, -9. */
async function killCompute02(): Promise<void> {
  const pids = await qemuPidsUnder(compute02!.instancesDir);
  await compute02!.kill9();
  for (const pid of pids) process.kill(pid, 'SIGKILL');
}

async function startCompute02(dataDir: string, configText: string, s: Session): Promise<void> {
  compute02 = await startComputeHost({ dataDir, host: 'compute02', configText });
  await forceDown(s, 'compute02', false);
  await waitServiceUp(s, 'compute02');
}

async function bootOnCompute02(s: Session, name: string, source: { volumeId?: string; imageId?: string }): Promise<string> {
  const body = source.volumeId
    ? { block_device_mapping_v2: [{ source_type: 'volume', destination_type: 'volume', uuid: source.volumeId, boot_index: 0 }] }
    : { imageRef: source.imageId };
  const r = await s.call('POST', '/compute/v2.1/servers', { server: { name, flavorRef: '42', networks: 'none', availability_zone: 'nova:compute02', ...body } }, compute);
  if (r.status !== 202) throw new Error(`server create: ${r.status} ${r.text}`);
  return r.json<{ server: { id: string } }>().server.id;
}

async function bootVolume(s: Session, imageId: string, name: string): Promise<string> {
  const r = await s.call('POST', `${s.volumeUrl}/volumes`, { volume: { size: 1, imageRef: imageId, name } });
  const id = r.json<{ volume: { id: string } }>().volume.id;
  await waitVolumeStatus(s, id, 'available');
  return id;
}

async function deleteServer(s: Session, id: string): Promise<void> {
  await s.call('DELETE', `/compute/v2.1/servers/${id}`, undefined, compute);
  for (let i = 0; i < 1200; i++) {
    if ((await s.call('GET', `/compute/v2.1/servers/${id}`, undefined, compute)).status === 404) return;
    await sleep(100);
  }
}

async function main(): Promise<void> {
  let cephParts: { confPath: string; keyringPath: string } | null = null;
  let cephAdmin: ((args: string[]) => Promise<string>) | null = null;
  if (useCeph) {
    const labDir = process.env['PUMICE_CEPH_LAB'];
    if (!labDir) throw new Error('--ceph needs PUMICE_CEPH_LAB (a running lab)');
    const lab = readLab(labDir);
    cephAdmin = async (args) => (await execFileAsync('ceph', ['--conf', lab.confPath, '--id', 'admin', ...args], { timeout: 60_000 })).stdout;
    await cephAdmin(['auth', 'get-or-create', `client.${fenceUser}`, 'mon', 'profile rbd', 'osd', 'profile rbd pool=volumes, profile rbd pool=vms, profile rbd-read-only pool=images']);
    const keyringPath = join(labDir, '..', `bench-evac-${process.pid}.keyring`);
    writeFileSync(keyringPath, `${readFileSync(lab.keyringPath('cinder'), 'utf8')}\n${await cephAdmin(['auth', 'get', `client.${fenceUser}`])}\n`, { mode: 0o600 });
    cephParts = { confPath: lab.confPath, keyringPath };
  }
  const configText = config(cephParts);
  const server = await startServer({ config: configText });
  servers = [server];
  try {
    const s = await login(server.url);
    const imageId = await uploadGuest(s);
    await startCompute02(server.dataDir, configText, s);
    console.log(`machine: TCG, test guest (m1.nano: 1 vCPU, 128 MiB), ${useCeph ? 'RBD volumes on the Ceph lab (fence: blocklist + lock break)' : 'local volumes over NBD (fence: attachments revoked)'}; service_down_time 5 s, report_interval 1 s`);

    // ---- A. manual evacuation, source forced down through the API ----
    const toActive: number[] = [];
    const toReady: number[] = [];
    const toFenced: number[] = [];
    const firstBoot: number[] = [];
    const meterA = cpuMeter(server.pid);
    for (let i = 0; i < (phases.includes('A') ? repeat : 0); i++) {
      const vol = await bootVolume(s, imageId, `evac-boot-${i}`);
      const id = await bootOnCompute02(s, `evac-${i}`, { volumeId: vol });
      const tFirstActive = await waitActive(s, id, 'compute02');
      firstBoot.push((await waitReady(s, id)) - tFirstActive);
      // Forced down first, so the automatic mode (on for phase B) leaves this host to the operator.
      await forceDown(s, 'compute02', true);
      await killCompute02();
      const t0 = now();
      const r = await s.call('POST', `/compute/v2.1/servers/${id}/action`, { evacuate: { host: 'pumice' } }, compute);
      if (r.status !== 200) throw new Error(`evacuate: ${r.status} ${r.text}`);
      let tFenced = 0;
      for (;;) {
        const m = (await migrationsOf(s)).find((x) => x.instance_uuid === id);
        if (m && m.status !== 'accepted') {
          tFenced = now();
          break;
        }
        await sleep(10);
      }
      const tActive = await waitActive(s, id, 'pumice');
      const tReady = await waitReady(s, id);
      toFenced.push(tFenced - t0);
      toActive.push(tActive - t0);
      toReady.push(tReady - t0);
      console.log(`  A${i + 1}: evacuate → fenced ${s1(tFenced - t0)}, → ACTIVE ${s1(tActive - t0)}, → READY ${s1(tReady - t0)} (guest boot ${s1(tReady - tActive)}; its first boot on compute02: ACTIVE → READY ${s1(firstBoot[i]!)})`);
      await startCompute02(server.dataDir, configText, s);
      await deleteServer(s, id);
    }
    const cpuA = meterA.stop();
    if (phases.includes('A')) console.log(`A. evacuate call (source forced down) → fenced median ${s1(median(toFenced))}, → ACTIVE median ${s1(median(toActive))} (Zed ${s1(zedActiveMs)}: ×${(median(toActive) / zedActiveMs).toFixed(2)}), → guest READY median ${s1(median(toReady))} (Zed ${s1(zedReadyMs)}: ×${(median(toReady) / zedReadyMs).toFixed(2)}); ${repeat} runs; the same guest's first boot (ACTIVE → READY) median ${s1(median(firstBoot))} in the same conditions; CPU: ${cpuA.text}`);

    // ---- B. host death, automatic evacuation ----
    if (phases.includes('B')) {
      const vol = await bootVolume(s, imageId, 'auto-boot');
      const id = await bootOnCompute02(s, 'auto', { volumeId: vol });
      await waitActive(s, id, 'compute02');
      await waitReady(s, id);
      const meterB = cpuMeter(server.pid);
      const tDeath = now();
      await killCompute02();
      let tDetected = 0;
      let tFenced = 0;
      for (;;) {
        const m = (await migrationsOf(s)).find((x) => x.instance_uuid === id);
        if (m && !tDetected) tDetected = now();
        if (m && m.status !== 'accepted') {
          tFenced = now();
          break;
        }
        if (now() - tDeath > 120_000) throw new Error('no automatic evacuation within 120 s');
        await sleep(20);
      }
      const tActive = await waitActive(s, id, 'pumice');
      const tReady = await waitReady(s, id);
      console.log(
        `B. host death → READY ${s1(tReady - tDeath)} (automatic, service_down_time 5 s, grace 0 s): detection ${s1(tDetected - tDeath)}, fencing ${s1(tFenced - tDetected)}, ` +
          `rebuild → ACTIVE ${s1(tActive - tFenced)}, guest boot → READY ${s1(tReady - tActive)}; CPU: ${meterB.stop().text}`,
      );
      await startCompute02(server.dataDir, configText, s);
      await deleteServer(s, id);
    }

    // ---- C. one host's --instances servers ----
    if (phases.includes('C')) {
      const ids: string[] = [];
      for (let i = 0; i < instances; i++) ids.push(await bootOnCompute02(s, `many-${i}`, { imageId }));
      for (const id of ids) await waitActive(s, id, 'compute02');
      for (const id of ids) await waitReady(s, id);
      await forceDown(s, 'compute02', true);
      await killCompute02();
      const meterC = cpuMeter(server.pid);
      const t0 = now();
      for (const id of ids) {
        const r = await s.call('POST', `/compute/v2.1/servers/${id}/action`, { evacuate: { host: 'pumice' } }, compute);
        if (r.status !== 200) throw new Error(`evacuate ${id}: ${r.status} ${r.text}`);
      }
      const tCalled = now();
      const wanted = new Set(ids);
      let maxInFlight = 0;
      for (;;) {
        const ms = (await migrationsOf(s)).filter((m) => wanted.has(m.instance_uuid));
        maxInFlight = Math.max(maxInFlight, ms.filter((m) => m.status !== 'done' && m.status !== 'failed' && m.status !== 'error').length);
        if (ms.length === ids.length && ms.every((m) => m.status === 'done' || m.status === 'failed')) break;
        await sleep(50);
      }
      let tAllActive = 0;
      for (const id of ids) tAllActive = Math.max(tAllActive, await waitActive(s, id, 'pumice'));
      let tAllReady = 0;
      for (const id of ids) tAllReady = Math.max(tAllReady, await waitReady(s, id));
      console.log(`C. ${instances} servers of one host (local qcow2 roots): ${instances} evacuate calls ${s1(tCalled - t0)}, → all ACTIVE ${s1(tAllActive - t0)}, → all READY ${s1(tAllReady - t0)}; at most ${maxInFlight} evacuations in flight; CPU: ${meterC.stop().text}`);
      await startCompute02(server.dataDir, configText, s);
      for (const id of ids) await s.call('DELETE', `/compute/v2.1/servers/${id}`, undefined, compute);
      for (const id of ids) await deleteServer(s, id);
    }
  } finally {
    await compute02?.stop().catch(() => undefined);
    await server.stop();
    for (const pid of [...(await qemuPidsUnder(server.dataDir))]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    server.cleanup();
    if (cephAdmin) await cephAdmin(['auth', 'del', `client.${fenceUser}`]).catch(() => undefined);
  }
}

await main();
