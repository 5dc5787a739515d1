/**
 * The instance scheduler: Nova's filter scheduler over the hosts' reports.
 * Pure: it reads service rows, node reports and usage, and either returns
 * hosts in order of preference or the filter that rejected each host, so a
 * refusal says why for every host (Nova says only "No valid host was found").
 */
import type { ComputeHosts, ComputeNodeRow, ComputeServiceRow } from './hosts.ts';
import { computeBinary } from './hosts.ts';
import type { FlavorSnapshot } from './model.ts';

export interface SchedulingRequest {
  flavor: FlavorSnapshot;
  /** Image properties of the root image (hw_*, hypervisor_type, architecture...), or the volume's image metadata. */
  imageProperties: Record<string, string>;
  /** Requested zone (`nova` or `zone:host` forms resolved by the caller). */
  availabilityZone: string | null;
  /** A host forced by an admin (`zone:host` or `host` field 2.74). */
  forcedHost: string | null;
  /** Root disk on the host's local disk (or RBD images pool): boot from image. */
  needsLocalDisk: boolean;
  ignoreHosts: string[];
}

export interface AllocationRatios {
  cpu: number;
  ram: number;
  disk: number;
  reservedMemoryMiB: number;
  reservedCpus: number;
  reservedDiskMiB: number;
}

export interface HostState {
  service: ComputeServiceRow;
  node: ComputeNodeRow;
  up: boolean;
  freeVcpus: number;
  freeMemoryMiB: number;
  freeDiskGiB: number;
  servers: number;
}

/**
 * A refusal carries `reasons` (each host, the filter that rejected it, figures: for administrators
 * and the log) and `memberReasons` (the same without host names, free capacity or host settings:
 * for the server's owner; issue 12).
 */
export type SchedulingResult = { ok: true; hosts: HostState[] } | { ok: false; reasons: string[]; memberReasons: string[] };

type Filter = {
  name: string;
  check: (host: HostState, request: SchedulingRequest) => string | null;
  /** The rejection as a project member may read it: only figures of its own request. */
  member: (request: SchedulingRequest) => string;
};

const hostUnavailable = 'a compute host is unavailable';

const filters: Record<string, Filter> = {
  ComputeFilter: {
    name: 'ComputeFilter',
    check: (host) => {
      if (host.service.disabled) return `the compute service is disabled${host.service.disabled_reason ? ` (${host.service.disabled_reason})` : ''}`;
      if (!host.up) return host.service.forced_down ? 'the compute service is forced down' : `the compute service is down (last heartbeat ${host.service.heartbeat_at ?? 'never'})`;
      return null;
    },
    member: () => hostUnavailable,
  },
  AvailabilityZoneFilter: {
    name: 'AvailabilityZoneFilter',
    check: (host, request) => (request.availabilityZone && host.service.zone !== request.availabilityZone ? `it is in zone '${host.service.zone}', not '${request.availabilityZone}'` : null),
    member: (request) => `no host in availability zone '${request.availabilityZone ?? ''}'`,
  },
  RamFilter: {
    name: 'RamFilter',
    check: (host, request) => (host.freeMemoryMiB < request.flavor.ram_mib ? `${host.freeMemoryMiB} MiB of RAM free (with ram_allocation_ratio) < ${request.flavor.ram_mib} MiB asked` : null),
    member: (request) => `not enough free RAM for ${request.flavor.ram_mib} MiB`,
  },
  CoreFilter: {
    name: 'CoreFilter',
    check: (host, request) => (host.freeVcpus < request.flavor.vcpus ? `${host.freeVcpus} vCPUs free (with cpu_allocation_ratio) < ${request.flavor.vcpus} asked` : null),
    member: (request) => `not enough free vCPUs for ${request.flavor.vcpus}`,
  },
  DiskFilter: {
    name: 'DiskFilter',
    check: (host, request) => {
      if (!request.needsLocalDisk) return null;
      const asked = request.flavor.root_gib + request.flavor.ephemeral_gib;
      return host.freeDiskGiB < asked ? `${host.freeDiskGiB} GiB of ${host.node.disk_source === 'rbd' ? 'RBD pool' : 'local'} disk free < ${asked} GiB asked` : null;
    },
    member: (request) => `not enough free disk for ${request.flavor.root_gib + request.flavor.ephemeral_gib} GiB`,
  },
  ComputeCapabilitiesFilter: {
    name: 'ComputeCapabilitiesFilter',
    check: (host, request) => {
      const capabilities: Record<string, string> = {
        hypervisor_type: host.node.hypervisor_type,
        virt_type: host.node.virt_type,
        hypervisor_hostname: host.node.hypervisor_hostname,
        cpu_arch: 'x86_64',
      };
      for (const [key, wanted] of Object.entries(request.flavor.extra_specs)) {
        if (!key.startsWith('capabilities:')) continue;
        const name = key.slice('capabilities:'.length);
        const have = capabilities[name];
        if (!matchesExtraSpec(have, wanted)) return `flavor extra spec ${key}='${wanted}' does not match the host's ${name}='${have ?? '(none)'}'`;
      }
      return null;
    },
    member: () => "no host has the capabilities the flavor's extra specs ask for",
  },
  ImagePropertiesFilter: {
    name: 'ImagePropertiesFilter',
    check: (host, request) => {
      const arch = request.imageProperties['hw_architecture'] ?? request.imageProperties['architecture'];
      if (arch && !['x86_64', 'amd64', 'i686', 'x86'].includes(arch.toLowerCase())) return `image architecture '${arch}' is not the host's x86_64`;
      const hv = request.imageProperties['img_hv_type'] ?? request.imageProperties['hypervisor_type'];
      if (hv && !['qemu', 'kvm'].includes(hv.toLowerCase())) return `image hypervisor_type '${hv}' is not the host's qemu/kvm`;
      if (hv && hv.toLowerCase() === 'kvm' && host.node.virt_type !== 'kvm') return `image needs hypervisor_type kvm but the host runs ${host.node.virt_type} (${host.node.virt_type_reason})`;
      const mode = request.imageProperties['hw_vm_mode'] ?? request.imageProperties['vm_mode'];
      if (mode && mode.toLowerCase() !== 'hvm') return `image vm_mode '${mode}' is not hvm`;
      return null;
    },
    member: () => "no host can run the image as its properties ask (architecture, hypervisor_type, vm_mode)",
  },
};

/** Nova's extra-spec operators: `<or> a <or> b`, `s== x`, `>= n`, `<= n`, `== n`, `<in> x`, else equality. */
export function matchesExtraSpec(have: string | undefined, wanted: string): boolean {
  if (have === undefined) return false;
  const w = wanted.trim();
  const num = (s: string) => Number(s.trim());
  if (w.startsWith('<or>')) return w.split('<or>').map((s) => s.trim()).filter(Boolean).includes(have);
  if (w.startsWith('s==')) return have === w.slice(3).trim();
  if (w.startsWith('s!=')) return have !== w.slice(3).trim();
  if (w.startsWith('<in>')) return have.includes(w.slice(4).trim());
  if (w.startsWith('>=')) return num(have) >= num(w.slice(2));
  if (w.startsWith('<=')) return num(have) <= num(w.slice(2));
  if (w.startsWith('==')) return num(have) === num(w.slice(2));
  if (w.startsWith('!=')) return num(have) !== num(w.slice(2));
  return have === w;
}

export const knownFilters = Object.keys(filters);

export class InstanceScheduler {
  constructor(
    private readonly hosts: ComputeHosts,
    private readonly enabledFilters: () => string[],
    private readonly ratios: () => AllocationRatios,
  ) {}

  hostStates(nowMs = Date.now()): HostState[] {
    const ratios = this.ratios();
    const services = new Map(this.hosts.services({ binary: computeBinary }).map((s) => [s.host, s]));
    const out: HostState[] = [];
    for (const node of this.hosts.nodes()) {
      const service = services.get(node.host);
      if (!service) continue;
      const usage = this.hosts.usage(node.host);
      out.push({
        service,
        node,
        up: this.hosts.isUp(service, nowMs),
        freeVcpus: Math.floor(Math.max(0, node.vcpus - ratios.reservedCpus) * ratios.cpu) - usage.vcpus,
        freeMemoryMiB: Math.floor(node.memory_mib * ratios.ram) - ratios.reservedMemoryMiB - usage.memoryMiB,
        // RBD disk figures are the pool's usable space, shared with every host: no per-host usage to subtract.
        freeDiskGiB: node.disk_source === 'rbd' ? node.disk_free_gib : Math.floor(node.disk_total_gib * ratios.disk) - Math.ceil(ratios.reservedDiskMiB / 1024) - usage.localGiB,
        servers: usage.servers,
      });
    }
    return out;
  }

  /** Hosts that pass every enabled filter, best first (most free RAM, then fewest servers); or each host's rejection. */
  select(request: SchedulingRequest): SchedulingResult {
    const all = this.hostStates();
    if (all.length === 0) {
      return {
        ok: false,
        reasons: ['no compute host has registered: start one with `pumice serve` (all roles) or `pumice serve --roles compute --host NAME`'],
        memberReasons: ['no compute host is available'],
      };
    }
    const reasons: string[] = [];
    const memberReasons: string[] = [];
    const passed: HostState[] = [];
    const active = this.enabledFilters().map((name) => filters[name]).filter((f): f is Filter => f !== undefined);
    for (const host of all) {
      if (request.ignoreHosts.includes(host.service.host)) {
        reasons.push(`${host.service.host}: excluded by the request`);
        memberReasons.push('a host was excluded by the request');
        continue;
      }
      if (request.forcedHost && host.service.host !== request.forcedHost) continue;
      let rejected: string | null = null;
      for (const filter of active) {
        const why = filter.check(host, request);
        if (why) {
          rejected = `${host.service.host}: ${filter.name} (${why})`;
          memberReasons.push(filter.member(request));
          break;
        }
      }
      if (rejected) reasons.push(rejected);
      else passed.push(host);
    }
    if (request.forcedHost && !all.some((h) => h.service.host === request.forcedHost)) {
      // Only administrators may force a host: the list of hosts is theirs to read.
      const reason = `host '${request.forcedHost}' is not a compute host (known: ${all.map((h) => h.service.host).join(', ')})`;
      return { ok: false, reasons: [reason], memberReasons: [reason] };
    }
    if (passed.length === 0) return { ok: false, reasons, memberReasons: [...new Set(memberReasons)] };
    passed.sort((a, b) => b.freeMemoryMiB - a.freeMemoryMiB || a.servers - b.servers || a.service.host.localeCompare(b.service.host));
    return { ok: true, hosts: passed };
  }
}
