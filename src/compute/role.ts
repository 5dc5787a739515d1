/**
 * Assembles compute: the API side (servers, flavors... on the api role) and
 * the compute agent (role `compute`, one per host). Both read the same
 * database; the agent reaches Block Storage and Image over HTTP, as Nova does.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import type { PumiceConfig } from '../config/config.ts';
import type { Db } from '../db/db.ts';
import { loadPolicyOverrides } from '../http/policy.ts';
import type { ServiceApp } from '../http/server.ts';
import type { AuthContext } from '../http/router.ts';
import type { IdentityService } from '../identity/identity.ts';
import { renderEndpointUrl } from '../identity/identity.ts';
import type { ImageService } from '../image/images.ts';
import { TaskQueue } from '../tasks/queue.ts';
import { ImageServiceClient } from '../volume/images.ts';
import type { VolumeService } from '../volume/volumes.ts';
import { ComputeAgent, type BlockStorage } from './agent.ts';
import { computeApp } from './api/app.ts';
import { BlockStorageClient } from './block-storage-client.ts';
import { EvacuationMonitor, systemAuth } from './evacuation.ts';
import { FailbackMonitor } from './failback.ts';
import { Flavors } from './flavors.ts';
import { ComputeHosts } from './hosts.ts';
import { checkQemu, probeAccelerator, QemuHypervisor } from './hypervisor/qemu/index.ts';
import { Keypairs } from './keypairs.ts';
import { ComputeQuotas } from './quotas.ts';

const execFileAsync = promisify(execFile);
import { InstanceScheduler } from './scheduler.ts';
import { ServerService, type ComputeLookups } from './servers.ts';

export interface ComputeParts {
  flavors: Flavors;
  keypairs: Keypairs;
  hosts: ComputeHosts;
  quotas: ComputeQuotas;
  scheduler: InstanceScheduler;
  servers: ServerService;
}

/** The compute domain objects every role shares (they only read and write the database). */
export function computeParts(db: Db, config: PumiceConfig, queue: TaskQueue, lookups: ComputeLookups): ComputeParts {
  const flavors = new Flavors(db);
  const keypairs = new Keypairs(db);
  const hosts = new ComputeHosts(db, () => config.DEFAULT.service_down_time, () => config.DEFAULT.report_interval);
  const quotas = new ComputeQuotas(db);
  const c = config.compute;
  const scheduler = new InstanceScheduler(hosts, () => c.scheduler_enabled_filters, () => ({
    cpu: c.cpu_allocation_ratio, ram: c.ram_allocation_ratio, disk: c.disk_allocation_ratio,
    reservedMemoryMiB: c.reserved_host_memory_mb, reservedCpus: c.reserved_host_cpus, reservedDiskMiB: c.reserved_host_disk_mb,
  }));
  const servers = new ServerService(db, queue, flavors, keypairs, hosts, scheduler, quotas, lookups, {
    imagesType: config.libvirt.images_type,
    defaultZone: c.default_availability_zone,
    metadataItemsMax: 128,
  });
  return { flavors, keypairs, hosts, quotas, scheduler, servers };
}

/** Image and volume facts for the API, looked up in-process with the caller's rights. */
export function inProcessLookups(images: ImageService, volumes: VolumeService): ComputeLookups {
  return {
    image(auth: AuthContext, imageId: string) {
      const row = images.get(auth, imageId);
      const props = JSON.parse(row.properties) as Record<string, unknown>;
      const location = images.locationFields({ ...auth, isAdmin: true }, row) as { direct_url?: string };
      return {
        id: row.id, name: row.name, status: row.status, diskFormat: row.disk_format, minDiskGiB: row.min_disk, minRamMiB: row.min_ram,
        sizeBytes: row.size, virtualSizeBytes: row.virtual_size, directUrl: location.direct_url ?? null,
        properties: Object.fromEntries(Object.entries(props).map(([k, v]) => [k, String(v)])),
      };
    },
    volume(auth: AuthContext, volumeId: string) {
      const row = volumes.volume(auth, volumeId);
      return {
        id: row.id, status: row.status, sizeGiB: row.size_gib, multiattach: row.multiattach === 1, bootable: row.bootable === 1,
        availabilityZone: row.availability_zone, imageMetadata: row.image_metadata ? (JSON.parse(row.image_metadata) as Record<string, string>) : {},
        backendDriver: null,
      };
    },
    volumeBackend: (volumeId: string) => volumes.backendOf(volumeId),
  };
}

export function computeApiApp(parts: ComputeParts, config: PumiceConfig, identity: IdentityService, log: (m: string) => void): ServiceApp {
  return computeApp({
    ...parts,
    instancesPathOf: (host) => {
      const node = parts.hosts.node(host);
      if (!node) return null;
      return ((JSON.parse(node.disk_detail ?? '{}') as { instances_path?: string }).instances_path) ?? null;
    },
    maxLimit: config.DEFAULT.osapi_max_limit,
    projectExists: (projectId) => identity.findProject(projectId) !== undefined,
    policyOverrides: loadPolicyOverrides((config as unknown as { oslo_policy?: { policy_file?: string | null } }).oslo_policy?.policy_file ?? null),
    validateResponses: (config as unknown as { api?: { validate_responses?: boolean } }).api?.validate_responses === true || process.env['PUMICE_VALIDATE_RESPONSES'] === '1',
    log,
  });
}

/** Where the agent finds Block Storage: [cinder] endpoint_override, else the catalog, rendered for the API's recorded listener. */
function blockStorageEndpoint(config: PumiceConfig, identity: IdentityService, hosts: ComputeHosts): string {
  if (config.cinder.endpoint_override) return config.cinder.endpoint_override.replace(/\/+$/, '');
  const [type = 'volumev3', name = '', iface = 'publicURL'] = config.cinder.catalog_info.split(':');
  const service = identity.services().find((s) => s.type === type && s.enabled && (!name || s.name === name));
  const endpoint = service && identity.endpoints().find((e) => e.service_id === service.id && e.interface === iface.replace(/URL$/, '') && e.enabled && (!config.cinder.os_region_name || e.region_id === config.cinder.os_region_name));
  if (!endpoint) throw new Error(`the catalog has no ${iface} endpoint of type '${type}' ([cinder] catalog_info = ${config.cinder.catalog_info}): add one, or set [cinder] endpoint_override`);
  const base = config.DEFAULT.public_endpoint ?? hosts.apiListener();
  if (!base) throw new Error('no API listener is known yet: start the api role, or set [cinder] endpoint_override');
  // The agent's calls carry no project in the URL template: it is filled per call.
  return renderEndpointUrl(endpoint.url, base, null).replace(/\/\$\(project_id\)s$|\/%\(project_id\)s$|\/None$/, '').replace(/\/+$/, '');
}

function imageEndpoint(config: PumiceConfig, hosts: ComputeHosts): string {
  const base = config.DEFAULT.public_endpoint ?? hosts.apiListener();
  if (!base) throw new Error('no API listener is known yet: start the api role');
  return `${base.replace(/\/+$/, '')}/image`;
}

/** The accelerator: from [libvirt] virt_type, or for `auto` a real probe boot, remembered per QEMU version. */
async function chooseVirtType(config: PumiceConfig, log: (m: string) => void): Promise<{ virtType: 'kvm' | 'qemu'; reason: string; qemuVersion: number }> {
  const binary = config.libvirt.qemu_binary;
  const versionText = await execFileAsync(binary, ['--version'], { timeout: 30_000 }).then((r) => /version (\S+)/.exec(r.stdout)?.[1] ?? '0', () => '0');
  const [a = 0, b = 0, c = 0] = versionText.split('.').map((n) => Number.parseInt(n, 10) || 0);
  const qemuVersion = a * 1_000_000 + b * 1000 + c;
  // The full check (rbd module, accelerators) runs QEMU several times: in the background, to log what is missing.
  void checkQemu({ qemuBinary: binary }).then((check) => {
    for (const problem of check.problems) log(`compute: ${problem}`);
  });
  const configured = config.libvirt.virt_type;
  if (configured === 'kvm' || configured === 'qemu') return { virtType: configured, reason: `[libvirt] virt_type = ${configured}`, qemuVersion };
  const cachePath = join(config.compute.instances_path, '.virt-probe.json');
  // 'cpu-flags': results remembered before the vmx/svm check (a kvm chosen on kvm_pvm) are probed again.
  const key = `${versionText}/${existsSync('/dev/kvm')}/cpu-flags`;
  try {
    const cached = JSON.parse(readFileSync(cachePath, 'utf8')) as { key: string; virtType: 'kvm' | 'qemu'; reason: string };
    if (cached.key === key) return { virtType: cached.virtType, reason: `${cached.reason} (probe result remembered in ${cachePath})`, qemuVersion };
  } catch {
    // no remembered probe
  }
  const probe = await probeAccelerator({ qemuBinary: binary, log });
  mkdirSync(config.compute.instances_path, { recursive: true, mode: 0o700 });
  writeFileSync(cachePath, JSON.stringify({ key, ...probe }), { mode: 0o600 });
  return { ...probe, reason: `[libvirt] virt_type = auto: ${probe.reason}`, qemuVersion };
}

export interface ComputeRole {
  agent: ComputeAgent;
  stop(): Promise<void>;
}

/** Starts the compute agent of this host (`[DEFAULT] host`). */
export async function startComputeRole(options: {
  db: Db;
  config: PumiceConfig;
  identity: IdentityService;
  parts: ComputeParts;
  serviceToken: () => string;
  log: (m: string) => void;
}): Promise<ComputeRole> {
  const { db, config, identity, parts, log } = options;
  const virt = await chooseVirtType(config, log);
  log(`compute: host ${config.DEFAULT.host} runs guests with ${virt.virtType === 'kvm' ? 'KVM' : 'TCG (software emulation)'}: ${virt.reason}`);
  const queue = new TaskQueue({ db, log, concurrencyPerQueue: config.compute.max_concurrent_builds, attemptsMax: 3, pollIntervalMs: 1000 });
  const hypervisor = new QemuHypervisor({ instancesDir: config.compute.instances_path, qemuBinary: config.libvirt.qemu_binary, log });
  const token = options.serviceToken;
  const client = new BlockStorageClient({ endpoint: () => blockStorageEndpoint(config, identity, parts.hosts), token, timeoutMs: config.cinder.http_timeout * 1000 });
  const blockStorage = client as unknown as BlockStorage;
  const images = new ImageServiceClient(() => ({ url: imageEndpoint(config, parts.hosts), origin: 'the API listener' }), 120_000);
  const agent = new ComputeAgent({ db, config, queue, servers: parts.servers, hosts: parts.hosts, hypervisor, blockStorage, images, serviceToken: token, virt, log });
  parts.servers.onEnqueue = () => queue.kick();
  await agent.start();
  return { agent, stop: () => agent.stop() };
}

/**
 * The automatic evacuation monitor of the api role ([compute] auto_evacuate, off by default). It
 * evacuates as the system user with the reason in the instance action; see EvacuationMonitor.
 * With [compute] auto_failback, the fail-back monitor too (FailbackMonitor).
 */
export function startEvacuationMonitor(parts: ComputeParts, config: PumiceConfig, log: (m: string) => void): { stop(): void } {
  const monitor = new EvacuationMonitor({
    db: parts.servers.migrations.db,
    hosts: parts.hosts,
    settings: () => ({
      enabled: config.compute.auto_evacuate,
      graceS: config.compute.auto_evacuate_grace_s,
      hostsMax: config.compute.auto_evacuate_hosts_max,
      downFractionMax: config.compute.auto_evacuate_down_fraction_max,
      serviceDownTimeS: config.DEFAULT.service_down_time,
    }),
    evacuate: (serverId, reason) => {
      parts.servers.evacuate(systemAuth(), serverId, { reason, automatic: true }, `req-${randomUUID()}`);
    },
    log,
    intervalMs: Math.max(1000, Math.min(5000, config.DEFAULT.report_interval * 1000)),
  });
  monitor.start();
  const failback = config.compute.auto_failback
    ? new FailbackMonitor({ db: parts.servers.migrations.db, hosts: parts.hosts, servers: parts.servers, healthySeconds: () => config.compute.failback_healthy_seconds, log, intervalMs: Math.max(1000, Math.min(5000, config.DEFAULT.report_interval * 1000)) })
    : null;
  failback?.start();
  return {
    stop: () => {
      monitor.stop();
      failback?.stop();
    },
  };
}
