/**
 * Takeover time of an active/active volume cluster (issue 16), in network namespaces
 * (root; test/helpers/netns.ts): a controller (api, scheduler, image, PostgreSQL) and two
 * volume hosts of one cluster on a shared local backend directory. Each round holds vol-b
 * (SIGSTOP), asks for a volume, lets vol-a stop itself inside the create
 * (PUMICE_CRASH_POINT=volume.create.made:1:stop), kill -9s vol-a, releases vol-b and times
 * kill -> volume available (lease expiry + the next poll + the create), then restarts vol-a.
 * Compared with 2 x service_down_time, the aim.
 *
 *   node --import tsx bench/multihost.ts [--rounds 3] [--service-down-time 4]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { NetnsLab, netnsUnavailable, type LabProcess } from '../test/helpers/netns.ts';
import { ApiClient } from '../test/helpers/pumice.ts';
import { repoRoot } from './lib.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, 'service-down-time': { type: 'string', default: '4' } } });
const rounds = Number(values.rounds);
const serviceDownTimeS = Number(values['service-down-time']);
const adminPassword = 'bench-multihost-admin';
const apiPort = 5000;

async function main(): Promise<void> {
  const unavailable = netnsUnavailable();
  if (unavailable) {
    console.log(`# multihost: skipped: ${unavailable}`);
    return;
  }
  const lab = new NetnsLab(['ctl', 'vol-a', 'vol-b']);
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

await main();
