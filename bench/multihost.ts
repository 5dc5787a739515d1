/**
 * Takeover time of an active/active volume cluster (issue 16), in network namespaces
 * (root; test/helpers/netns.ts): a controller (api, scheduler, image, PostgreSQL) and two
 * volume hosts of one cluster on a shared local backend directory. Each round holds vol-b
 * (SIGSTOP), asks for a volume, lets vol-a stop itself inside the create
 * (PUMICE_CRASH_POINT=volume.create.made:1:stop), kill -9s vol-a, releases vol-b and times
 * kill -> volume available (lease expiry + the next poll + the create), then restarts vol-a.
 * Compared with 2 x service_down_time, the aim.
 *
 * --api-hosts: API throughput with 1 and with 2 API hosts on one PostgreSQL (controller with
 * api,scheduler,image; api2 with api; one volume host on the local backend): c32 clients
 * cycle create -> available -> delete -> gone for --duration s, first all against the
 * controller, then spread round-robin over both API hosts. Each phase is run --rounds times
 * alternately and the median is printed with the load average and the CPU time of the
 * cloud's processes (PostgreSQL included) and of the rest of the machine.
 *
 *   node --import tsx bench/multihost.ts [--rounds 3] [--service-down-time 4]
 *   node --import tsx bench/multihost.ts --api-hosts [--rounds 3] [--duration 15] [--concurrency 32]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { NetnsLab, netnsUnavailable, type LabProcess } from '../test/helpers/netns.ts';
import { ApiClient } from '../test/helpers/pumice.ts';
import { adminPassword, login, now, repoRoot, sleep, unlimitedQuota, waitVolumeStatus, type Session } from './lib.ts';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' }, 'service-down-time': { type: 'string', default: '4' },
    'api-hosts': { type: 'boolean', default: false }, duration: { type: 'string', default: '15' }, concurrency: { type: 'string', default: '32' },
  },
});
const rounds = Number(values.rounds);
const serviceDownTimeS = Number(values['service-down-time']);
const durationS = Number(values.duration);
const clients = Number(values.concurrency);
const apiPort = 5000;

async function main(): Promise<void> {
  const unavailable = netnsUnavailable();
  if (unavailable) {
    console.log(`# multihost: skipped: ${unavailable}`);
    return;
  }
  const lab = new NetnsLab(values['api-hosts'] ? ['ctl', 'api2', 'vol-a'] : ['ctl', 'vol-a', 'vol-b']);
  process.on('SIGINT', () => process.exit(130));
  try {
    const pg = lab.startPostgres();
    mkdirSync(join(lab.dir, 'shared-volumes'), { mode: 0o700 });
    const start = async (host: string, roles: string, env: Record<string, string> = {}): Promise<LabProcess> => {
      const dataDir = join(lab.dir, `data-${host}`);
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      writeFileSync(join(dataDir, 'pumice.conf'), `[DEFAULT]\nhost = ${host}\ncluster = bench\nservice_down_time = ${serviceDownTimeS}\nreport_interval = 1\n` +
        `public_endpoint = http://${lab.controller.address}:${apiPort}\nenabled_backends = local\n\n[local]\nvolume_driver = local\nlocal_volume_dir = ${join(lab.dir, 'shared-volumes')}\n\n[database]\nconnection = ${pg.url}\n`);
      const proc = lab.spawn(host, [process.execPath, join(repoRoot, 'bin', 'pumice.mjs'), 'serve', '--roles', roles, '--data-dir', dataDir,
        '--config', join(dataDir, 'pumice.conf'), '--listen', `${lab.host(host).address}:${apiPort}`], { PATH: process.env['PATH'], HOME: dataDir, PUMICE_ADMIN_PASSWORD: adminPassword, ...env });
      const deadline = Date.now() + 90_000;
      while (!/ready (at|with roles)/.test(proc.output())) {
        if (proc.proc.exitCode !== null || Date.now() > deadline) throw new Error(`${host} did not start: ${proc.output()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      return proc;
    };
    if (values['api-hosts']) {
      await start('ctl', 'api,scheduler,image');
      await Promise.all([start('api2', 'api'), start('vol-a', 'volume')]);
      await apiHosts(lab);
      return;
    }
    const armed = { PUMICE_CRASH_POINT: 'volume.create.made:1:stop' };
    await start('ctl', 'api,scheduler,image');
    let [a, b] = await Promise.all([start('vol-a', 'volume', armed), start('vol-b', 'volume')]);
    const admin = await ApiClient.login(await lab.bridgeHttp('ctl', lab.controller.address, apiPort), 'admin', adminPassword, 'admin');
    const takeoversMs: number[] = [];
    for (let round = 1; round <= rounds; round++) {
      process.kill(b!.pid, 'SIGSTOP');
      const created = await admin.request('POST', `/volume/v3/${admin.projectId}/volumes`, { volume: { size: 1, name: `takeover-${round}` } });
      if (created.status !== 202) throw new Error(created.text);
      while (!NetnsLab.isStopped(a!.pid)) await new Promise((r) => setTimeout(r, 20));
      process.kill(b!.pid, 'SIGCONT');
      const killedAt = Date.now();
      process.kill(a!.pid, 'SIGKILL');
      await admin.waitVolume(created.body.volume.id, ['available'], 120_000);
      takeoversMs.push(Date.now() - killedAt);
      console.log(`multihost_takeover_round_${round}_ms: ${takeoversMs.at(-1)}`);
      a = await start('vol-a', 'volume', armed);
    }
    const sorted = [...takeoversMs].sort((x, y) => x - y);
    console.log(`multihost_takeover_ms: median ${sorted[Math.floor(sorted.length / 2)]} min ${sorted[0]} max ${sorted.at(-1)} (n=${sorted.length}); ` +
      `service_down_time ${serviceDownTimeS} s, lease ${Math.min(30, serviceDownTimeS)} s, poll 2 s; aim <= ${2 * serviceDownTimeS * 1000} ms`);
  } finally {
    await lab.cleanup();
  }
}

/** CPU seconds (user + system) of every process, by pid, from /proc. */
function cpuByPid(): Map<number, number> {
  const out = new Map<number, number>();
  for (const line of execFileSync('ps', ['-e', '-o', 'pid=,times='], { encoding: 'utf8' }).split('\n')) {
    const [pid, seconds] = line.trim().split(/\s+/);
    if (pid && seconds) out.set(Number(pid), Number(seconds));
  }
  return out;
}

/** Pids of the lab's processes and their descendants (the Pumice hosts, forwarders, PostgreSQL). */
function labPids(labDir: string): Set<number> {
  const pids = new Set<number>();
  for (const line of execFileSync('ps', ['-e', '-o', 'pid=,args='], { encoding: 'utf8' }).split('\n')) {
    const match = /^\s*(\d+)\s+(.*)$/.exec(line);
    if (match && match[2]!.includes(labDir)) pids.add(Number(match[1]));
  }
  return pids;
}

async function cycles(sessions: Session[], seconds: number): Promise<{ cycles: number; errors: number; elapsedS: number }> {
  const stopAt = now() + seconds * 1000;
  let done = 0;
  let errors = 0;
  const started = now();
  await Promise.all(Array.from({ length: clients }, async (_, c) => {
    for (let i = 0; now() < stopAt; i++) {
      // Round-robin over the API hosts, request by request, as a load balancer would.
      const s = sessions[(c + i) % sessions.length]!;
      try {
        const created = await s.call('POST', `${s.volumeUrl}/volumes`, { volume: { size: 1, name: `bench-${c}-${i}` } });
        if (created.status !== 202) throw new Error(`create: ${created.status} ${created.text}`);
        const id = created.json<{ volume: { id: string } }>().volume.id;
        await waitVolumeStatus(sessions[(c + i + 1) % sessions.length]!, id, 'available');
        const deleted = await s.call('DELETE', `${s.volumeUrl}/volumes/${id}`);
        if (deleted.status !== 202) throw new Error(`delete: ${deleted.status} ${deleted.text}`);
        await waitVolumeStatus(sessions[(c + i + 1) % sessions.length]!, id, 'gone');
        done++;
      } catch (error) {
        if (errors++ === 0) console.log(`# first error: ${(error as Error).message.slice(0, 300)}`);
        await sleep(100);
      }
    }
  }));
  return { cycles: done, errors, elapsedS: (now() - started) / 1000 };
}

async function apiHosts(lab: NetnsLab): Promise<void> {
  const urls = [await lab.bridgeHttp('ctl', lab.controller.address, apiPort), await lab.bridgeHttp('api2', lab.host('api2').address, apiPort)];
  const one = await login(urls[0]!);
  await unlimitedQuota(one);
  const sessions = urls.map((url) => ({ ...one, url, volumeUrl: `${url}/volume/v3/${one.projectId}`, call: (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => one.call(method, path.startsWith('http') ? path.replace(one.url, url) : `${url}${path}`, body, headers) }));
  console.log(`# multihost api-hosts: c${clients}, ${durationS} s per phase, ${rounds} rounds, PostgreSQL on the controller, local backend on one volume host`);
  await cycles(sessions, 3); // warm-up: JIT, statement caches, both hosts' token caches
  const results: Record<string, number[]> = { one: [], two: [] };
  for (let round = 1; round <= rounds; round++) {
    for (const [name, use] of [['one', sessions.slice(0, 1)], ['two', sessions]] as const) {
      const pids = labPids(lab.dir);
      const cpu0 = cpuByPid();
      const load0 = loadavg()[0]!;
      const r = await cycles(use, durationS);
      const cpu1 = cpuByPid();
      let labS = 0;
      let otherS = 0;
      for (const [pid, seconds] of cpu1) {
        const delta = seconds - (cpu0.get(pid) ?? 0);
        if (pids.has(pid) || pid === process.pid) labS += delta;
        else otherS += delta;
      }
      const perS = r.cycles / r.elapsedS;
      results[name]!.push(perS);
      console.log(`multihost_api_${name}_host_round_${round}: ${perS.toFixed(1)} cycles/s (${r.cycles} cycles, ${r.errors} errors, ${r.elapsedS.toFixed(1)} s); load ${load0.toFixed(1)} -> ${loadavg()[0]!.toFixed(1)}; cpu of the cloud + bench ${labS.toFixed(1)} s, of other processes ${otherS.toFixed(1)} s`);
    }
  }
  const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
  console.log(`multihost_api_cycles_per_s: 1 API host ${median(results['one']!).toFixed(1)}, 2 API hosts ${median(results['two']!).toFixed(1)} (median of ${rounds}, c${clients}, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')})`);
}

await main();
