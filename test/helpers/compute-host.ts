/**
 * A second compute host on this machine: `pumice serve --roles compute --host NAME
 * --data-dir DIR --config F`, sharing the cloud's data directory (its SQLite
 * database) with its own instances_path; the configuration of a cloud whose
 * compute hosts run on the Ceph lab; waiting for a compute service's state;
 * `pumice host rebalance` beside the cloud. And a minimal QMP client, to poke
 * a guest's QEMU directly (a fenced guest's writes must fail).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from './pumice.ts';

/** What a Ceph compute cloud's configuration varies on between tests and benches. */
export interface CephComputeConfigOptions {
  /** The lab's ceph.conf. */
  confPath: string;
  secretUuid: string;
  /** The compute hosts' Ceph user ([libvirt] rbd_user; a fencing user for evacuation) and its keyring. */
  rbdUser: string;
  keyringPath: string;
  serviceDownTimeS?: number;
  /** Extra lines of [libvirt] (e.g. live_migration_bandwidth = 1). */
  libvirt?: string;
  /** Lines of [compute]; the section is left out when empty. */
  compute?: string;
}

/**
 * A cloud with every store on the Ceph lab: volumes (pool volumes, client.cinder), images
 * (images, client.glance, direct URLs for copy-on-write clones) and the compute hosts' RBD roots
 * (vms) with heartbeats every second, so a stopped agent is seen down within service_down_time.
 */
export function cephComputeConfig(o: CephComputeConfigOptions): string {
  return `[DEFAULT]
enabled_backends = ceph
show_image_direct_url = true
report_interval = 1
service_down_time = ${o.serviceDownTimeS ?? 4}

[ceph]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = ceph
rbd_pool = volumes
rbd_user = cinder
rbd_ceph_conf = ${o.confPath}
rbd_secret_uuid = ${o.secretUuid}
rados_connect_timeout = 5

[glance_store]
stores = rbd
default_store = rbd
rbd_store_pool = images
rbd_store_user = glance
rbd_store_ceph_conf = ${o.confPath}
rbd_store_chunk_size = 8

[libvirt]
virt_type = qemu
images_type = rbd
images_rbd_pool = vms
images_rbd_ceph_conf = ${o.confPath}
rbd_user = ${o.rbdUser}
rbd_keyring = ${o.keyringPath}
rbd_secret_uuid = ${o.secretUuid}
disk_cachemodes = network=writeback
${o.libvirt ?? ''}
${o.compute ? `[compute]\n${o.compute}\n` : ''}`;
}

/** The client side waitComputeService needs: GET of the Compute API (ComputeClient.request). */
export interface ComputeRequester {
  request(method: string, path: string): Promise<{ status: number; body: { services?: { host: string; state: string }[] } }>;
}

/** Waits until `host`'s nova-compute service reads `state` in os-services. */
export async function waitComputeService(admin: ComputeRequester, host: string, state: 'up' | 'down', timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await admin.request('GET', '/os-services?binary=nova-compute');
    const service = (r.body.services ?? []).find((s) => s.host === host);
    if (service && service.state === state) return;
    if (Date.now() > deadline) throw new Error(`service of ${host} not ${state} after ${timeoutMs} ms: ${JSON.stringify(service)}`);
    await new Promise((res) => setTimeout(res, 250));
  }
}

/**
 * `pumice host rebalance HOST` beside the running cloud in `dataDir`, with `configText` (which sets
 * [compute] failback_healthy_seconds): its exit code and output.
 */
export async function hostRebalance(options: { dataDir: string; configText: string; host: string; timeoutMs?: number }): Promise<{ code: number; output: string }> {
  const configPath = join(options.dataDir, `rebalance-${options.host}.conf`);
  writeFileSync(configPath, options.configText);
  return new Promise((resolve) => {
    execFile(process.execPath, [join(repoRoot, 'bin', 'pumice.mjs'), 'host', 'rebalance', options.host, '--data-dir', options.dataDir, '--config', configPath], { cwd: repoRoot, timeout: options.timeoutMs ?? 180_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? ((error as { code: number }).code) : -1) : 0;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

export interface ComputeHostProcess {
  host: string;
  instancesDir: string;
  proc: ChildProcess;
  output: () => string;
  kill9(): Promise<void>;
  stop(): Promise<void>;
  /** Resolves with the exit code, or 128 + the signal's number after a signal (137 after a crash point's SIGKILL, as a shell says). */
  exited: Promise<number | null>;
}

/** A child's status as a shell reports it: its exit code, or 128 + the number of the signal that killed it. */
function exitStatus(code: number | null, signal: NodeJS.Signals | null): number | null {
  return code ?? (signal ? 128 + (osConstants.signals[signal] ?? 0) : null);
}

/** Starts the compute role for `host` on the cloud in `dataDir`; `configText` gets its instances_path added. */
export async function startComputeHost(options: { dataDir: string; host: string; configText: string; instancesDir?: string; env?: Record<string, string> }): Promise<ComputeHostProcess> {
  const instancesDir = options.instancesDir ?? join(options.dataDir, `instances-${options.host}`);
  const configPath = join(options.dataDir, `${options.host}.conf`);
  writeFileSync(configPath, `${options.configText.replace(/^\[compute\]$/m, `[compute]\ninstances_path = ${instancesDir}`)}${/^\[compute\]$/m.test(options.configText) ? '' : `\n[compute]\ninstances_path = ${instancesDir}\n`}`);
  const proc = spawn(process.execPath, [join(repoRoot, 'bin', 'pumice.mjs'), 'serve', '--roles', 'compute', '--host', options.host, '--data-dir', options.dataDir, '--config', configPath], {
    cwd: repoRoot,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  proc.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code, signal) => r(exitStatus(code, signal))));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`compute host ${options.host} did not start in 60 s:\n${output}`)), 60_000);
    proc.stdout!.on('data', () => {
      if (/ready \(compute agent/.test(output)) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`compute host ${options.host} exited with ${exitStatus(code, signal)}${signal ? ` (${signal})` : ''}:\n${output}`));
    });
  });
  return {
    host: options.host,
    instancesDir,
    proc,
    exited,
    output: () => output,
    async kill9() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      await exited;
    },
  };
}

/** Sends one HMP command through a guest's QMP socket and returns its text (QMP errors as thrown Errors). */
export async function hmp(qmpSocket: string, command: string, timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(qmpSocket);
    let buffer = '';
    let stage = 0;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`HMP '${command}' timed out`));
    }, timeoutMs);
    socket.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    socket.on('data', (d) => {
      buffer += d.toString();
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as { QMP?: unknown; return?: unknown; error?: { desc: string }; event?: string };
        if (msg.event) continue;
        if (stage === 0 && msg.QMP) {
          stage = 1;
          socket.write(`${JSON.stringify({ execute: 'qmp_capabilities' })}\n`);
        } else if (stage === 1) {
          stage = 2;
          socket.write(`${JSON.stringify({ execute: 'human-monitor-command', arguments: { 'command-line': command } })}\n`);
        } else if (stage === 2) {
          clearTimeout(timer);
          socket.end();
          if (msg.error) reject(new Error(msg.error.desc));
          else resolve(String(msg.return ?? ''));
        }
      }
    });
  });
}

/** The QEMU device id of a guest disk (devices.json of the instance). */
export function deviceIdOf(instanceDir: string, diskId: string): string {
  const devices = JSON.parse(readFileSync(join(instanceDir, 'devices.json'), 'utf8')) as { placements: { diskId: string; deviceId: string }[] };
  const placement = devices.placements.find((p) => p.diskId === diskId);
  if (!placement) throw new Error(`disk ${diskId} is not in ${instanceDir}/devices.json`);
  return placement.deviceId;
}

/**
 * Runs a qemu-io command (e.g. `write -P 0x5a 1048576 4096`, `flush`) on a guest disk through its
 * QEMU's monitor, as the guest's own I/O would go (the device's block backend). qemu-io prints to
 * QEMU's stdout, which is the instance's qemu.log: returns what it printed
 * (`wrote 4096/4096 bytes ...` or `write failed: ...`).
 */
export async function qemuIo(instanceDir: string, diskId: string, command: string): Promise<string> {
  const logPath = join(instanceDir, 'qemu.log');
  const before = readFileSync(logPath).length;
  const device = deviceIdOf(instanceDir, diskId);
  const returned = await hmp(join(instanceDir, 'qmp.sock'), `qemu-io -d /machine/peripheral/${device}/virtio-backend "${command}"`, 60_000);
  await new Promise((r) => setTimeout(r, 200));
  return `${returned}${readFileSync(logPath).subarray(before).toString()}`.trim();
}
