/**
 * `pumice doctor`: checks every prerequisite of a configuration and names
 * the fix for each one that fails, without starting the server.
 */
import { execFile, spawnSync } from 'node:child_process';
import { accessSync, constants, mkdirSync, statSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { resolveCephClient } from './ceph/conf.ts';
import { setupPlan } from './ceph/setup.ts';
import { blocklistProbe } from './compute/evacuation.ts';
import { liveMigrationChecks } from './compute/migration-doctor.ts';
import { openCloudDatabase, type Db } from './db/db.ts';
import { checkQemu, probeAccelerator, probeBootOnce } from './compute/hypervisor/qemu/index.ts';
import { promisify } from 'node:util';
import { isIP } from 'node:net';
import { unsafeDirectoryMode } from './file-modes.ts';
import { loadConfig, type PumiceConfig } from './config/config.ts';
import { ConfigError } from './config/ini.ts';
import { createBackupDriver } from './backup/manager.ts';
import { LocalBackend, nullExporter } from './volume/drivers/local.ts';
import { RbdBackend } from './volume/drivers/rbd.ts';
import type { BackendConfig } from './config/config.ts';

const execFileAsync = promisify(execFile);

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

/**
 * Issue 12: directories others can read (volumes, database, keys) and an NBD listener reachable
 * beyond loopback without TLS are reported with the fix.
 */
function securityChecks(config: PumiceConfig, dataDir: string): Check[] {
  const checks: Check[] = [];
  const dirs: [string, string][] = [[dataDir, 'the data directory']];
  for (const backend of config.backends) {
    if (backend.local_volume_dir && (backend.volume_driver === 'local' || /LocalDriver$|LVMVolumeDriver$/.test(backend.volume_driver))) {
      dirs.push([backend.local_volume_dir, `[${backend.section}] local_volume_dir`]);
    }
  }
  for (const store of config.glance_store.backends.filter((s) => s.type === 'file')) dirs.push([store.filesystem_store_datadir, `[${store.section}] filesystem_store_datadir`]);
  for (const [path, what] of dirs) {
    const unsafe = unsafeDirectoryMode(path, what);
    checks.push({ name: `permissions of ${what}`, ok: unsafe === null, detail: unsafe ?? `${path}: only its owner can enter it` });
  }
  const host = config.DEFAULT.nbd_listen_host;
  const loopback = host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
  checks.push(
    loopback || config.DEFAULT.nbd_tls
      ? { name: 'NBD listener', ok: true, detail: `${host}${config.DEFAULT.nbd_tls ? ' with TLS-PSK per connection' : ' (loopback only)'}` }
      : { name: 'NBD listener', ok: false, detail: `[DEFAULT] nbd_listen_host = ${host} is beyond loopback without TLS (serve refuses to start): set [DEFAULT] nbd_tls = true or nbd_listen_host = 127.0.0.1` },
  );
  return checks;
}

/** A data directory `serve` cannot use: exit 3 with the directory and the fix, not SQLite's 'unable to open database file'. */
export class DataDirError extends Error {}

/**
 * Creates the data directory if missing and proves it writable, before SQLite opens a file in it.
 * Throws DataDirError naming the directory, the user and the fix.
 */
export function ensureWritableDataDir(dataDir: string): void {
  const user = safeUserName();
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    accessSync(dataDir, constants.W_OK | constants.X_OK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? '';
    let owner = '';
    try {
      owner = ` (owned by uid ${statSync(dataDir).uid})`;
    } catch {
      // missing and not creatable: the parent is not writable
    }
    const why = code === 'EACCES' || code === 'EPERM' || code === 'EROFS' ? `is not writable by user ${user}${owner}` : `cannot be used (${(error as Error).message})`;
    throw new DataDirError(
      `the data directory ${dataDir} ${why}. Fix: give it to this user (sudo install -d -o ${user} -m 0700 ${dataDir}), or pass --data-dir with a directory this user can write` +
        ' (as a service: the unit\'s StateDirectory=pumice makes /var/lib/pumice for User=pumice)',
    );
  }
}

function safeUserName(): string {
  try {
    return userInfo().username;
  } catch {
    return `uid ${process.getuid?.() ?? '?'}`;
  }
}

/**
 * The checks of `doctor` that take milliseconds (tools on PATH), run by `serve` at every start:
 * each failure is a warning line naming what stops working and the fix; the server still starts.
 */
export function cheapStartupWarnings(): string[] {
  const warnings: string[] = [];
  const tools: [string, string[], string][] = [
    ['qemu-img', ['--version'], 'image uploads and conversions are refused (501) until it is installed: apt-get install qemu-utils'],
    ['cp', ['--version'], 'local volume copies fail: install coreutils'],
  ];
  for (const [tool, args, consequence] of tools) {
    const probe = spawnSync(tool, args, { stdio: 'ignore', timeout: 5000 });
    if (probe.error || probe.status !== 0) warnings.push(`${tool} not found on PATH (${process.env['PATH'] ?? ''}): ${consequence}`);
  }
  return warnings;
}

export async function runDoctor(configPath: string | null, dataDir: string): Promise<Check[]> {
  const checks: Check[] = [];
  let config: PumiceConfig;
  try {
    config = loadConfig(configPath, dataDir);
    checks.push({ name: 'configuration', ok: true, detail: configPath ?? 'embedded defaults' });
  } catch (error) {
    checks.push({ name: 'configuration', ok: false, detail: error instanceof ConfigError ? error.message : String(error) });
    return checks;
  }
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    accessSync(dataDir, constants.W_OK);
    checks.push({ name: 'data directory', ok: true, detail: dataDir });
  } catch (error) {
    checks.push({ name: 'data directory', ok: false, detail: `${dataDir} is not writable: ${(error as Error).message}. Pass --data-dir with a writable directory.` });
  }
  checks.push(...securityChecks(config, dataDir));
  try {
    await import('better-sqlite3');
    checks.push({ name: 'SQLite (better-sqlite3)', ok: true, detail: 'loads' });
  } catch (error) {
    checks.push({ name: 'SQLite (better-sqlite3)', ok: false, detail: `${(error as Error).message}. Run npm ci (it builds better-sqlite3 with g++ and make).` });
  }
  for (const backend of config.backends) {
    const name = `backend [${backend.section}] (${backend.volume_driver})`;
    if (backend.volume_driver === 'rbd' || /RBDDriver$/.test(backend.volume_driver)) {
      checks.push(...(await checkRbdBackend(name, backend)));
      continue;
    }
    if (backend.volume_driver !== 'local' && !/LocalDriver$|LVMVolumeDriver$/.test(backend.volume_driver)) {
      checks.push({ name, ok: false, detail: `volume_driver ${backend.volume_driver} is unknown; use 'local' or 'rbd'` });
      continue;
    }
    const driver = new LocalBackend({
      section: backend.section,
      directory: backend.local_volume_dir!,
      exporter: nullExporter,
      reportDiscard: false,
    });
    try {
      await driver.start();
      const capacity = await driver.reportCapacity();
      checks.push({ name, ok: true, detail: `${backend.local_volume_dir}: ${capacity.freeCapacityGiB.toFixed(1)} of ${capacity.totalCapacityGiB.toFixed(1)} GiB free` });
    } catch (error) {
      checks.push({ name, ok: false, detail: (error as Error).message });
    }
  }
  checks.push(await checkBackupDriver(config));
  checks.push(await checkImageService(config));
  try {
    const { stdout } = await execFileAsync('qemu-img', ['--version']);
    checks.push({ name: 'qemu-img (image format checks)', ok: true, detail: stdout.split('\n')[0]! });
  } catch {
    checks.push({ name: 'qemu-img (image format checks)', ok: false, detail: 'qemu-img not found: image uploads are refused until it is installed (apt-get install qemu-utils)' });
  }
  try {
    const { stdout } = await execFileAsync('cp', ['--version']);
    checks.push({ name: 'cp (sparse copies)', ok: true, detail: stdout.split('\n')[0]! });
  } catch {
    checks.push({ name: 'cp (sparse copies)', ok: false, detail: 'GNU cp not found: install coreutils' });
  }
  checks.push(...(await computeChecks(config)));
  checks.push(...(await migrationChecks(config, dataDir)));
  return checks;
}

/** Live migration between the compute hosts the cloud's database knows (none when there is no database yet). */
async function migrationChecks(config: PumiceConfig, dataDir: string): Promise<Check[]> {
  let db: Db;
  try {
    db = openCloudDatabase(config.database.connection, dataDir);
  } catch {
    return [];
  }
  try {
    return await liveMigrationChecks(config, db);
  } catch (error) {
    return [{ name: 'live migration', ok: false, detail: `could not read the compute hosts from the database: ${(error as Error).message}` }];
  } finally {
    db.close();
  }
}

/**
 * The compute side (scenario §8, "Ceph client missing on a compute node"): QEMU and its rbd block
 * driver, whether the accelerator works (a real probe boot, never /dev/kvm's presence), the
 * instances directory, and for RBD disks the keyring of [libvirt] rbd_user and its access to the pools.
 */
async function computeChecks(config: PumiceConfig): Promise<Check[]> {
  const checks: Check[] = [];
  const qemu = await checkQemu({ qemuBinary: config.libvirt.qemu_binary });
  checks.push(qemu.binary
    ? { name: 'compute: QEMU', ok: true, detail: `${qemu.binary} ${qemu.version ?? ''}`.trim() }
    : { name: 'compute: QEMU', ok: false, detail: qemu.problems.join('; ') });
  if (qemu.binary) {
    checks.push(qemu.rbd
      ? { name: 'compute: QEMU rbd block driver', ok: true, detail: 'block-rbd is installed and links (qemu-block-extra)' }
      : { name: 'compute: QEMU rbd block driver', ok: false, detail: qemu.problems.find((p) => /rbd/.test(p)) ?? 'missing: apt-get install qemu-block-extra' });
    const virt = config.libvirt.virt_type;
    if (virt === 'qemu') {
      checks.push({ name: 'compute: accelerator', ok: true, detail: '[libvirt] virt_type = qemu: TCG (software emulation)' });
    } else if (virt === 'kvm') {
      const probe = await probeBootOnce('kvm', { qemuBinary: config.libvirt.qemu_binary });
      checks.push(probe.ok
        ? { name: 'compute: accelerator', ok: true, detail: `[libvirt] virt_type = kvm: a probe guest booted under KVM in ${probe.elapsedMs} ms` }
        : { name: 'compute: accelerator', ok: false, detail: `[libvirt] virt_type = kvm but a probe guest under KVM did not boot (${probe.detail}): set virt_type = qemu (TCG) or auto, or fix KVM on this host` });
    } else {
      const probe = await probeAccelerator({ qemuBinary: config.libvirt.qemu_binary });
      checks.push({ name: 'compute: accelerator', ok: true, detail: `[libvirt] virt_type = auto → ${probe.virtType}: ${probe.reason}` });
    }
  }
  const instances = config.compute.instances_path;
  try {
    mkdirSync(instances, { recursive: true, mode: 0o700 });
    accessSync(instances, constants.W_OK);
    const socketPath = join(instances, '00000000-0000-0000-0000-000000000000', 'qmp.sock');
    checks.push(Buffer.byteLength(socketPath) <= 107
      ? { name: 'compute: instances_path', ok: true, detail: instances }
      : { name: 'compute: instances_path', ok: false, detail: `${instances} is too long: QMP sockets under it would exceed the 107-byte Unix socket path limit; set [compute] instances_path to a shorter path` });
  } catch (error) {
    checks.push({ name: 'compute: instances_path', ok: false, detail: `${instances} is not writable: ${(error as Error).message}. Set [compute] instances_path or fix its owner.` });
  }
  const usesRbd = config.libvirt.images_type === 'rbd' || config.backends.some((b) => b.volume_driver === 'rbd' || /RBDDriver$/.test(b.volume_driver));
  if (!usesRbd) return checks;
  const user = config.libvirt.rbd_user ?? config.backends.find((b) => b.rbd_user)?.rbd_user ?? 'cinder';
  const confPath = config.libvirt.images_rbd_ceph_conf || config.backends.find((b) => b.rbd_ceph_conf)?.rbd_ceph_conf || '/etc/ceph/ceph.conf';
  let client;
  try {
    client = resolveCephClient({ confPath, user, keyringPath: config.libvirt.rbd_keyring });
    checks.push({ name: `compute: Ceph client client.${user}`, ok: true, detail: `${client.confPath}, keyring ${client.keyringPath} (${client.keyringSource})` });
  } catch (error) {
    checks.push({ name: `compute: Ceph client client.${user}`, ok: false, detail: `${(error as Error).message} Instances with RBD disks would go to ERROR on this host.` });
    return checks;
  }
  checks.push(await checkFencingCaps(config, user, client));
  const rbd = (args: string[]) => execFileAsync('rbd', ['--id', user, '-c', client.confPath, '--keyring', client.keyringPath, '--client_mount_timeout=10', ...args], { timeout: 30_000 });
  if (config.libvirt.images_type === 'rbd') {
    const pool = config.libvirt.images_rbd_pool;
    const probe = `pumice-doctor-probe-${process.pid}`;
    try {
      await rbd(['create', '--size', '1M', `${pool}/${probe}`]);
      await rbd(['rm', '--no-progress', `${pool}/${probe}`]);
      checks.push({ name: `compute: pool ${pool} (images_rbd_pool)`, ok: true, detail: `client.${user} can create and remove images (rwx)` });
    } catch (error) {
      const text = ((error as { stderr?: string }).stderr ?? (error as Error).message).trim().split('\n').pop();
      checks.push({ name: `compute: pool ${pool} (images_rbd_pool)`, ok: false, detail: `client.${user} cannot write pool ${pool} (${text}): give it 'allow rwx pool=${pool}' (ceph auth caps client.${user} ...; pumice ceph setup does)` });
    }
  }
  for (const imagePool of new Set(config.glance_store.backends.filter((s) => s.type === 'rbd').map((s) => s.rbd_store_pool))) {
    try {
      await rbd(['ls', imagePool]);
      checks.push({ name: `compute: pool ${imagePool} (images, read)`, ok: true, detail: `client.${user} can read it (copy-on-write clones of images)` });
    } catch (error) {
      checks.push({ name: `compute: pool ${imagePool} (images, read)`, ok: false, detail: `client.${user} cannot read pool ${imagePool}: give it 'allow rx pool=${imagePool}' so volumes and root disks can be clones of images (${((error as { stderr?: string }).stderr ?? '').trim().split('\n').pop()})` });
    }
  }
  return checks;
}

/**
 * Issue 13: the compute host's Ceph user ([libvirt] rbd_user, the one an evacuation to this host
 * fences with) must be able to blocklist the old host's clients, or evacuations of servers with RBD
 * disks are refused. A warning, since servers run without it; a failure with `[compute]
 * auto_evacuate = true`, which could then never recover a host. The fix is `pumice ceph setup` when
 * it manages that user, else the exact `ceph auth caps` command (with the user's current osd caps
 * when an admin keyring is at hand to read them).
 */
async function checkFencingCaps(config: PumiceConfig, user: string, client: { confPath: string; keyringPath: string }): Promise<Check> {
  const name = `compute: fencing as client.${user} (evacuation)`;
  const problem = await blocklistProbe({ user, confPath: client.confPath, keyringPath: client.keyringPath });
  if (!problem) return { name, ok: true, detail: `client.${user} may blocklist Ceph clients: an evacuation to this host can fence a dead or partitioned host` };
  const automatic = config.compute.auto_evacuate;
  if (!problem.capsMissing) {
    return { name, ok: !automatic, detail: `${automatic ? '' : 'warning: '}could not check that client.${user} may blocklist Ceph clients: ${problem.message}` };
  }
  const osdCaps = await readOsdCaps(client.confPath, user);
  const command = `ceph auth caps client.${user} mon 'profile rbd' osd '${osdCaps ?? `<its current osd caps: ceph auth get client.${user}>`}'`;
  const viaSetup = setupPlan(config).some((entry) => entry.user === user);
  return {
    name,
    ok: !automatic,
    detail:
      `${automatic ? '' : 'warning: '}client.${user} may not blocklist Ceph clients (mon caps lack 'profile rbd' or 'allow command "osd blocklist"'; the scenario's mon 'allow r' cannot): ` +
      `evacuating a server with RBD disks to this host is refused, because the old host could keep writing to them` +
      `${automatic ? ', and [compute] auto_evacuate = true can never recover a host' : ''}. ` +
      `Fix: ${viaSetup ? `pumice ceph setup (it grants mon 'profile rbd'), or ` : ''}${command}`,
  };
}

/** A user's osd caps as an admin reads them (best effort: null when no admin keyring is at hand). */
async function readOsdCaps(confPath: string, user: string): Promise<string | null> {
  try {
    const { stdout } = await execFileAsync('ceph', ['--conf', confPath, '--id', 'admin', '--connect-timeout', '10', 'auth', 'get', `client.${user}`, '--format', 'json'], { timeout: 20_000 });
    return (JSON.parse(stdout) as { caps?: { osd?: string } }[])[0]?.caps?.osd ?? null;
  } catch {
    return null;
  }
}

/** The backup driver can work: directory writable, or Ceph reachable as backup_ceph_user with write caps on backup_ceph_pool. */
/**
 * Volumes from images need the volume service to reach the image API (the
 * scenario's glance_host story). With glance_api_servers set, each must
 * answer; without it, the catalog's image endpoint is Pumice's own API.
 */
async function checkImageService(config: PumiceConfig): Promise<Check> {
  const name = 'image service (for volumes from images)';
  const servers = config.DEFAULT.glance_api_servers;
  if (servers.length === 0) {
    return { name, ok: true, detail: `found through the catalog (${config.DEFAULT.glance_catalog_info}): this Pumice's own image API` };
  }
  for (const server of servers) {
    const root = (/^https?:\/\//.test(server) ? server : `http://${server}`).replace(/\/+$/, '');
    try {
      const response = await fetch(`${root}/versions`, { signal: AbortSignal.timeout(5000) });
      const body = (await response.json().catch(() => null)) as { versions?: unknown[] } | null;
      if (!body?.versions) {
        return { name, ok: false, detail: `${root}/versions answered ${response.status} without a versions document: glance_api_servers must name the image API's root (e.g. http://HOST:PORT/image for Pumice, http://HOST:9292 for Glance)` };
      }
    } catch (error) {
      const cause = (error as Error & { cause?: Error }).cause?.message ?? (error as Error).message;
      return { name, ok: false, detail: `${root} from [DEFAULT] glance_api_servers cannot be reached (${cause}): volumes from images will fail. Start the image service there or fix glance_api_servers.` };
    }
  }
  return { name, ok: true, detail: `${servers.join(', ')} answer` };
}

async function checkBackupDriver(config: PumiceConfig): Promise<Check> {
  const name = `backup driver (${config.DEFAULT.backup_driver})`;
  let driver;
  try {
    driver = createBackupDriver(config, () => undefined);
  } catch (error) {
    return { name, ok: false, detail: (error as Error).message };
  }
  try {
    await driver.start();
    const d = config.DEFAULT;
    return { name, ok: true, detail: driver.serviceName.includes('ceph') ? `pool ${d.backup_ceph_pool} writable as client.${d.backup_ceph_user}` : 'backup directory writable' };
  } catch (error) {
    return { name, ok: false, detail: (error as Error).message };
  } finally {
    await driver.stop();
  }
}

/** ceph.conf, keyring, monitors, pool and capabilities of an RBD backend, each with its fix (scenario §8). */
async function checkRbdBackend(name: string, backend: BackendConfig): Promise<Check[]> {
  const driver = new RbdBackend({ config: backend, log: () => undefined });
  try {
    await driver.start();
    const capacity = await driver.reportCapacity();
    const checks: Check[] = [
      { name, ok: true, detail: `pool ${backend.rbd_pool} as client.${backend.rbd_user ?? 'admin'}: ${capacity.freeCapacityGiB.toFixed(1)} of ${capacity.totalCapacityGiB.toFixed(1)} GiB free (after replication)` },
    ];
    const fencing = await driver.fencingProblem();
    // Not fatal: volumes work; only taking over a crashed client's lock needs it.
    checks.push({ name: `${name} fencing`, ok: true, detail: fencing ? `warning: ${fencing}` : 'may blocklist crashed clients' });
    if (!backend.rbd_secret_uuid) {
      checks.push({ name: `${name} rbd_secret_uuid`, ok: true, detail: 'warning: rbd_secret_uuid is not set: compute hosts (libvirt) need it to attach volumes' });
    }
    return checks;
  } catch (error) {
    return [{ name, ok: false, detail: (error as Error).message }];
  } finally {
    await driver.stop();
  }
}
