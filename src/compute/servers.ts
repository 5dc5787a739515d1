/**
 * Servers: the API side of compute. It validates a boot request (flavor,
 * image, block device mappings, the scenario's guard rails), checks quota,
 * picks a host and writes the server, its block device mappings, its
 * instance action and the build task in one transaction. The compute agent
 * on the chosen host does the rest (`agent.ts`). This module owns a server's
 * vm_state/task_state: every change is a compare-and-set in `transition`.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Db } from '../db/db.ts';
import { errors, PumiceError } from '../errors.ts';
import { emitEvent } from '../events.ts';
import type { AuthContext } from '../http/router.ts';
import type { TaskQueue } from '../tasks/queue.ts';
import { resourceStates } from '../state/owner.ts';
import type { FlavorRow, Flavors } from './flavors.ts';
import { guestHardwareFromImage, HardwarePropertyError } from './hardware.ts';
import { liveMigrationRefusal, type LiveMigrationPayload, type LiveMigrationRequest } from './live-migration.ts';
import { coldMigrationRefusal, confirmDone, type ColdMigrationPayload } from './cold-migration.ts';
import type { ComputeHosts } from './hosts.ts';
import type { Keypairs } from './keypairs.ts';
import type { BdmRow, FlavorSnapshot, ServerFault, ServerRow, ServerTaskState, VmState } from './model.ts';
import { nowIso, PowerState, vmStatesForStatus } from './model.ts';
import { Migrations, type MigrationRow } from './evacuation.ts';
import type { ComputeQuotas } from './quotas.ts';
import type { InstanceScheduler } from './scheduler.ts';

const GiB = 1024 ** 3;

/** What the API needs to know of an image, looked up with the caller's rights. */
export interface ImageFacts {
  id: string;
  name: string | null;
  status: string;
  diskFormat: string | null;
  minDiskGiB: number;
  minRamMiB: number;
  sizeBytes: number | null;
  virtualSizeBytes: number | null;
  /** `rbd://` location when the image lives in Ceph (clonable). */
  directUrl: string | null;
  properties: Record<string, string>;
}

export interface VolumeFacts {
  id: string;
  status: string;
  sizeGiB: number;
  multiattach: boolean;
  bootable: boolean;
  availabilityZone: string;
  imageMetadata: Record<string, string>;
  backendDriver: string | null;
}

export interface VolumeBackendFacts {
  name: string;
  /** The volume service's host (`host@backend`). */
  host: string;
  /** RBD: every host reaches the data; local: only through the volume service of one host. */
  shared: boolean;
  up: boolean;
  downReason: string | null;
}

export interface ComputeLookups {
  image(auth: AuthContext, imageId: string): ImageFacts;
  volume(auth: AuthContext, volumeId: string): VolumeFacts;
  /** Where a volume's data lives; absent where the volume role does not run (a compute-only host). */
  volumeBackend?(volumeId: string): VolumeBackendFacts | null;
}

export interface BlockDeviceMappingInput {
  source_type: string;
  destination_type?: string | null;
  uuid?: string | null;
  boot_index?: number | string | null;
  volume_size?: number | string | null;
  delete_on_termination?: boolean | string | null;
  device_name?: string | null;
  tag?: string | null;
  volume_type?: string | null;
  disk_bus?: string | null;
  device_type?: string | null;
  guest_format?: string | null;
  no_device?: boolean | null;
}

export interface CreateServerInput {
  name: string;
  flavorRef: string;
  imageRef?: string | null;
  blockDeviceMappings?: BlockDeviceMappingInput[];
  availabilityZone?: string | null;
  keyName?: string | null;
  metadata?: Record<string, string>;
  description?: string | null;
  userData?: string | null;
  minCount?: number;
  maxCount?: number;
  configDrive?: boolean;
  accessIPv4?: string | null;
  accessIPv6?: string | null;
  /** 2.74 `host`: admin-only host request. */
  host?: string | null;
}

export interface ComputeOptions {
  /** [libvirt] images_type of the compute hosts: `rbd` clones images into the vms pool. */
  imagesType: string;
  defaultZone: string;
  metadataItemsMax: number;
}

export interface ServerListQuery {
  allTenants: boolean;
  projectId?: string | null;
  name?: string | null;
  status?: string | null;
  host?: string | null;
  image?: string | null;
  flavor?: string | null;
  changesSince?: string | null;
  changesBefore?: string | null;
  limit: number;
  marker?: string | null;
  sortKey: string;
  sortDir: 'asc' | 'desc';
  deleted?: boolean;
  availabilityZone?: string | null;
  locked?: boolean | null;
  tags?: string | null;
}

export interface InstanceActionRow {
  id: number;
  server_id: string;
  request_id: string;
  action: string;
  project_id: string;
  user_id: string;
  message: string | null;
  start_time: string;
  updated_at: string | null;
}

export interface InstanceActionEventRow {
  id: number;
  action_id: number;
  event: string;
  host: string | null;
  start_time: string;
  finish_time: string | null;
  result: string | null;
  details: string | null;
}

/** Server tasks: the kinds the compute agent registers; payloads carry what the agent cannot re-derive. */
export const serverTaskKinds = ['server.build', 'server.stop', 'server.start', 'server.reboot', 'server.rebuild', 'server.delete', 'server.attach', 'server.detach', 'server.release_volumes', 'server.evacuate', 'server.live_migration.prepare', 'server.live_migration.run', 'server.live_migration.finish', 'server.live_migration.rollback', 'server.cold_migration.migrate', 'server.cold_migration.finish', 'server.cold_migration.confirm', 'server.cold_migration.revert', 'server.cold_migration.finish_revert'] as const;
export type ServerTaskKind = (typeof serverTaskKinds)[number];

/** Work any compute agent may do: releasing the volumes of a server deleted while its host was down. */
export const releaseQueue = 'compute:any';

export function computeQueue(host: string): string {
  return `compute:${host}`;
}

/** A volume's device names in attach order: vda is the root, then vdb... (the guest may name them otherwise: virtio serials tell). */
function deviceName(index: number): string {
  let name = '';
  let n = index;
  do {
    name = String.fromCharCode(97 + (n % 26)) + name;
    n = Math.floor(n / 26) - 1;
  } while (n >= 0);
  return `/dev/vd${name}`;
}

/** The image's hw_* properties must be ones the compute hosts build: a 400 naming the accepted values before anything exists. */
function checkHardwareProperties(properties: Record<string, string>): void {
  try {
    guestHardwareFromImage(properties);
  } catch (error) {
    if (error instanceof HardwarePropertyError) throw errors.badRequest(error.message);
    throw error;
  }
}

function parseBool(value: unknown, field: string): boolean {
  if (value === undefined || value === null) return false;
  if (typeof value === 'boolean') return value;
  if (typeof value === 'string' && ['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'].includes(value.toLowerCase())) return ['true', '1', 'yes', 'on'].includes(value.toLowerCase());
  throw errors.badRequest(`Invalid input for field/attribute ${field}. Value: ${JSON.stringify(value)}. Expected a boolean.`);
}

function parseIntField(value: unknown, field: string, min: number): number | null {
  if (value === undefined || value === null || value === '') return null;
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^-?\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < min) throw errors.badRequest(`Invalid input for field/attribute ${field}. Value: ${JSON.stringify(value)}. Expected an integer >= ${min}.`);
  return n;
}

/** A block device mapping before it is written: the row's fields that the request decides. */
type PlannedBdm = Pick<BdmRow, 'source_type' | 'destination_type' | 'boot_index' | 'volume_id' | 'image_id' | 'volume_size_gib' | 'volume_type' | 'device_name' | 'tag'> & {
  delete_on_termination: boolean;
};

/** What an evacuation task carries to the destination host's agent. */
export interface EvacuatePayload {
  requestId: string;
  actionId: number;
  migrationId: number;
  sourceHost: string;
  wasStopped: boolean;
  /** The operator said the source host is powered off: the RBD blocklist is skipped (attachments still move). */
  hostPoweredOff: boolean;
}

export class ServerService {
  /** Wakes this process's compute agent after a task is queued (agents in other processes poll). */
  onEnqueue: () => void = () => undefined;
  readonly migrations: Migrations;

  constructor(
    private readonly db: Db,
    private readonly queue: TaskQueue,
    private readonly flavors: Flavors,
    private readonly keypairs: Keypairs,
    private readonly hosts: ComputeHosts,
    private readonly scheduler: InstanceScheduler,
    private readonly quotas: ComputeQuotas,
    private readonly lookups: ComputeLookups,
    private readonly options: ComputeOptions,
  ) {
    this.migrations = new Migrations(db);
  }

  // ---- reading ----

  row(id: string): ServerRow | undefined {
    return this.db.get<ServerRow>('SELECT * FROM servers WHERE id = ? AND deleted_at IS NULL', id);
  }

  /** A server the caller may see; another project's server is a 404, as in Nova. */
  get(auth: AuthContext, id: string): ServerRow {
    const row = this.row(id);
    if (!row || (!auth.isAdmin && row.project_id !== auth.projectId)) throw errors.notFound('Instance', id);
    return row;
  }

  bdms(serverId: string): BdmRow[] {
    return this.db.all<BdmRow>('SELECT * FROM block_device_mappings WHERE server_id = ? ORDER BY (boot_index IS NULL), boot_index, created_at, id', serverId);
  }

  attachedVolumes(serverId: string): BdmRow[] {
    return this.bdms(serverId).filter((b) => b.destination_type === 'volume' && b.volume_id !== null && b.status !== 'detached');
  }

  list(auth: AuthContext, query: ServerListQuery): { servers: ServerRow[]; more: boolean } {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (query.deleted) where.push('deleted_at IS NOT NULL');
    else where.push('deleted_at IS NULL');
    if (!auth.isAdmin || !query.allTenants) {
      where.push('project_id = ?');
      params.push(auth.isAdmin && query.projectId ? query.projectId : auth.projectId ?? '');
    } else if (query.projectId) {
      where.push('project_id = ?');
      params.push(query.projectId);
    }
    if (query.host) {
      where.push('host = ?');
      params.push(query.host);
    }
    if (query.image) {
      where.push('image_id = ?');
      params.push(query.image);
    }
    if (query.flavor) {
      where.push('flavor_id = ?');
      params.push(query.flavor);
    }
    if (query.availabilityZone) {
      where.push('availability_zone = ?');
      params.push(query.availabilityZone);
    }
    if (query.locked !== undefined && query.locked !== null) {
      where.push('locked = ?');
      params.push(query.locked ? 1 : 0);
    }
    if (query.changesSince) {
      where.push('COALESCE(updated_at, created_at) >= ?');
      params.push(query.changesSince);
    }
    if (query.changesBefore) {
      where.push('COALESCE(updated_at, created_at) <= ?');
      params.push(query.changesBefore);
    }
    if (query.status) {
      const states = vmStatesForStatus(query.status);
      if (!states) return { servers: [], more: false };
      where.push(`vm_state IN (${states.map(() => '?').join(',')})`);
      params.push(...states);
    }
    const column = ({ created_at: 'created_at', updated_at: 'updated_at', display_name: 'name', name: 'name', uuid: 'id', id: 'id', host: 'host', vm_state: 'vm_state', task_state: 'task_state', availability_zone: 'availability_zone', launched_at: 'launched_at' } as Record<string, string>)[query.sortKey];
    if (!column) throw errors.badRequest(`Invalid sort_key '${query.sortKey}': use one of created_at, updated_at, display_name, uuid, host, vm_state, task_state, availability_zone, launched_at.`);
    const dir = query.sortDir === 'asc' ? 'ASC' : 'DESC';
    if (query.marker) {
      const marker = this.db.get<Record<string, string | null>>(`SELECT id, ${column} AS v FROM servers WHERE id = ?`, query.marker);
      if (!marker) throw errors.badRequest(`marker [${query.marker}] not found`);
      const op = dir === 'ASC' ? '>' : '<';
      where.push(`(COALESCE(${column}, '') ${op} ? OR (COALESCE(${column}, '') = ? AND id ${op} ?))`);
      params.push(marker['v'] ?? '', marker['v'] ?? '', query.marker);
    }
    let rows = this.db.all<ServerRow>(`SELECT * FROM servers WHERE ${where.join(' AND ')} ORDER BY COALESCE(${column}, '') ${dir}, id ${dir}`, ...params);
    if (query.name) {
      let pattern: RegExp;
      try {
        pattern = new RegExp(query.name);
      } catch {
        throw errors.badRequest(`Invalid name filter '${query.name}': it is a regular expression and does not compile.`);
      }
      rows = rows.filter((r) => pattern.test(r.name));
    }
    const more = rows.length > query.limit;
    return { servers: rows.slice(0, query.limit), more };
  }

  // ---- create ----

  create(auth: AuthContext, input: CreateServerInput, requestId: string): { server: ServerRow; adminPass: string } {
    if (!auth.projectId) throw errors.badRequest('Creating a server needs a project-scoped token.');
    const minCount = input.minCount ?? 1;
    const maxCount = input.maxCount ?? minCount;
    if (minCount > maxCount) throw errors.badRequest('min_count must be <= max_count');
    if (maxCount > 1) throw errors.badRequest('Creating several servers in one request (max_count > 1) is not supported by Pumice yet: send one request per server.');
    const flavorRow = this.flavorFor(auth, input.flavorRef);
    if (flavorRow.disabled) throw errors.badRequest(`Flavor ${input.flavorRef} is disabled: choose another flavor.`);
    const flavor = this.flavors.snapshot(flavorRow);
    if (input.metadata && Object.keys(input.metadata).length > this.options.metadataItemsMax) {
      throw errors.quotaExceeded(`Quota exceeded for metadata_items: ${Object.keys(input.metadata).length} items, limit ${this.options.metadataItemsMax}.`);
    }
    let keyData: string | null = null;
    if (input.keyName) {
      try {
        keyData = this.keypairs.get(auth.userId, input.keyName).public_key;
      } catch {
        throw errors.badRequest(`Invalid key_name provided: key pair '${input.keyName}' does not exist for this user (openstack keypair list).`);
      }
    }
    const planned = this.planBlockDevices(auth, input, flavor);
    const rootIsImage = planned.bdms.some((b) => b.boot_index === 0 && b.destination_type === 'local');
    if (planned.rootImage) this.checkImageFitsFlavor(planned.rootImage, flavor, rootIsImage);
    const { zone, forcedHost } = this.parseZone(auth, input.availabilityZone ?? null, input.host ?? null);
    const serverId = randomUUID();
    const adminPass = randomUUID().replace(/-/g, '').slice(0, 12);
    const now = nowIso();
    const imageMeta: Record<string, string> = planned.rootImage?.properties ?? planned.rootVolumeImageMeta ?? {};
    checkHardwareProperties(imageMeta);
    const server = this.db.transaction(() => {
      this.quotas.checkServer(auth.projectId!, { instances: 1, cores: flavor.vcpus, ramMiB: flavor.ram_mib });
      const result = this.scheduler.select({
        flavor,
        imageProperties: imageMeta,
        availabilityZone: zone,
        forcedHost,
        needsLocalDisk: rootIsImage,
        ignoreHosts: [],
      });
      const host = result.ok ? result.hosts[0]!.service.host : null;
      const fault: ServerFault | null = result.ok
        ? null
        : {
            code: 500,
            // The owner reads the message (no host names or free capacity); administrators the details.
            message: `No valid host was found: ${result.memberReasons.join('; ')}.`.slice(0, 255),
            details: `No valid host was found. Each compute host and the filter that rejected it: ${result.reasons.join('; ')}`,
            created: now,
          };
      this.db.run(
        `INSERT INTO servers (id, name, project_id, user_id, flavor_id, flavor, image_id, image_meta, host, home_host, availability_zone, requested_zone,
           vm_state, task_state, power_state, key_name, key_data, metadata, description, user_data, config_drive, access_ipv4, access_ipv6,
           fault, root_source, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        serverId, input.name, auth.projectId!, auth.userId, flavor.id, JSON.stringify(flavor),
        rootIsImage ? planned.rootImage!.id : null, JSON.stringify(imageMeta), host, host,
        host ? result.ok ? result.hosts[0]!.service.zone : null : null, zone,
        host ? 'building' : 'error', host ? 'scheduling' : null, PowerState.NOSTATE,
        input.keyName ?? null, keyData, JSON.stringify(input.metadata ?? {}), input.description ?? null, input.userData ?? null,
        input.configDrive ? 'True' : '', input.accessIPv4 ?? '', input.accessIPv6 ?? '',
        fault ? JSON.stringify(fault) : null, rootIsImage ? 'image' : 'volume', now, now,
      );
      // NoValidHost leaves a WARNING line with every host's reason (events.ts), as Nova's scheduler does.
      if (fault) emitEvent('scheduler.rejected', { resource: 'server', id: serverId, project_id: auth.projectId, reason: fault.details });
      planned.bdms.forEach((b, index) => {
        this.db.run(
          `INSERT INTO block_device_mappings (id, server_id, source_type, destination_type, boot_index, volume_id, image_id, volume_size_gib,
             volume_type, device_name, tag, delete_on_termination, status, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)`,
          randomUUID(), serverId, b.source_type, b.destination_type, b.boot_index, b.volume_id, b.image_id, b.volume_size_gib,
          b.volume_type, b.device_name ?? deviceName(index), b.tag, b.delete_on_termination ? 1 : 0, now,
        );
      });
      const actionId = this.recordAction(serverId, requestId, 'create', auth);
      if (host) {
        this.queue.enqueue('server.build', serverId, computeQueue(host), { requestId, actionId });
        queueMicrotask(() => this.onEnqueue());
      } else {
        this.finishAction(actionId, 'schedule_instances', null, 'Error', fault!.details);
      }
      return this.row(serverId)!;
    });
    return { server, adminPass };
  }

  private flavorFor(auth: AuthContext, flavorRef: string): FlavorRow {
    const id = flavorRef.replace(/^.*\/flavors\//, '');
    try {
      return this.flavors.get(id, auth.projectId, auth.isAdmin);
    } catch {
      throw errors.badRequest(`Flavor ${flavorRef} could not be found (openstack flavor list shows the flavors you may use).`);
    }
  }

  private imageFor(auth: AuthContext, imageRef: string): ImageFacts {
    const id = imageRef.replace(/^.*\/images\//, '');
    let image: ImageFacts;
    try {
      image = this.lookups.image(auth, id);
    } catch (error) {
      if (error instanceof PumiceError && error.status === 404) throw errors.badRequest(`Image ${imageRef} could not be found (or is not visible to your project).`);
      throw error;
    }
    if (image.status !== 'active') throw errors.badRequest(`Image ${id} is not active (it is '${image.status}'): wait for its upload to finish or choose another image.`);
    return image;
  }

  /** The scenario's guard rail: an image larger than the root disk fails here, naming both sizes, before anything exists. */
  private checkImageFitsFlavor(image: ImageFacts, flavor: FlavorSnapshot, rootOnFlavorDisk: boolean): void {
    if (image.minRamMiB > flavor.ram_mib) {
      throw errors.badRequest(`Flavor's memory is too small for requested image: flavor ${flavor.name} has ${flavor.ram_mib} MiB, image ${image.id} needs min_ram ${image.minRamMiB} MiB. Choose a larger flavor.`);
    }
    if (!rootOnFlavorDisk || flavor.root_gib === 0) return;
    const diskBytes = flavor.root_gib * GiB;
    const virtual = image.virtualSizeBytes ?? image.sizeBytes ?? 0;
    if (virtual > diskBytes) {
      throw errors.badRequest(
        `Flavor's disk is too small for requested image. Flavor disk is ${diskBytes} bytes (${flavor.name}: ${flavor.root_gib} GiB), image is ${virtual} bytes (virtual size of ${image.id}). ` +
          'Choose a flavor with a larger disk, or boot from a volume (openstack server create --image IMAGE --boot-from-volume SIZE_GB).',
      );
    }
    if (image.minDiskGiB > flavor.root_gib) {
      throw errors.badRequest(`Flavor's disk is too small for requested image: flavor ${flavor.name} has ${flavor.root_gib} GiB, image ${image.id} needs min_disk ${image.minDiskGiB} GiB.`);
    }
  }

  private planBlockDevices(auth: AuthContext, input: CreateServerInput, flavor: FlavorSnapshot): { bdms: PlannedBdm[]; rootImage: ImageFacts | null; rootVolumeImageMeta: Record<string, string> | null } {
    const bdms: PlannedBdm[] = [];
    let rootImage: ImageFacts | null = null;
    let rootVolumeImageMeta: Record<string, string> | null = null;
    const seenVolumes = new Set<string>();
    for (const [index, raw] of (input.blockDeviceMappings ?? []).entries()) {
      const field = `block_device_mapping_v2[${index}]`;
      if (raw.no_device) continue;
      const source = raw.source_type;
      const destination = raw.destination_type ?? (source === 'volume' ? 'volume' : 'local');
      if (!['volume', 'image', 'blank', 'snapshot'].includes(source)) throw errors.badRequest(`Invalid input for field/attribute ${field}.source_type. Value: ${source}. Expected volume, image, blank or snapshot.`);
      if (destination !== 'volume' && destination !== 'local') throw errors.badRequest(`Invalid input for field/attribute ${field}.destination_type. Value: ${destination}. Expected volume or local.`);
      const bootIndex = raw.boot_index === undefined || raw.boot_index === null || raw.boot_index === '' || Number(raw.boot_index) < 0 ? null : parseIntField(raw.boot_index, `${field}.boot_index`, 0);
      const size = parseIntField(raw.volume_size, `${field}.volume_size`, 1);
      const planned: PlannedBdm = {
        source_type: source as PlannedBdm['source_type'],
        destination_type: destination,
        boot_index: bootIndex,
        volume_id: null,
        image_id: null,
        volume_size_gib: size,
        volume_type: raw.volume_type ?? null,
        device_name: raw.device_name ?? null,
        tag: raw.tag ?? null,
        delete_on_termination: parseBool(raw.delete_on_termination, `${field}.delete_on_termination`),
      };
      if (source === 'volume') {
        if (destination !== 'volume') throw errors.badRequest(`${field}: source_type volume needs destination_type volume.`);
        if (!raw.uuid) throw errors.badRequest(`${field}: source_type volume needs uuid, the volume's id.`);
        const volume = this.volumeFor(auth, raw.uuid);
        if (seenVolumes.has(volume.id)) throw errors.badRequest(`Volume ${volume.id} is given twice in block_device_mapping_v2.`);
        seenVolumes.add(volume.id);
        if (volume.status !== 'available' && !(volume.multiattach && volume.status === 'in-use')) {
          throw errors.badRequest(`Volume ${volume.id} is '${volume.status}'; booting or attaching needs it 'available' (or 'in-use' for a multiattach volume). Detach it from its server first.`);
        }
        planned.volume_id = volume.id;
        planned.volume_size_gib = volume.sizeGiB;
        if (bootIndex === 0) {
          rootVolumeImageMeta = volume.imageMetadata;
          const virtual = Number(volume.imageMetadata['virtual_size'] ?? 0);
          if (virtual && virtual > volume.sizeGiB * GiB) throw errors.badRequest(`Volume ${volume.id} (${volume.sizeGiB} GiB) is smaller than the image it was made from (${virtual} bytes).`);
        }
      } else if (source === 'image') {
        if (!raw.uuid) throw errors.badRequest(`${field}: source_type image needs uuid, the image's id.`);
        const image = this.imageFor(auth, raw.uuid);
        planned.image_id = image.id;
        if (destination === 'volume') {
          const virtual = image.virtualSizeBytes ?? image.sizeBytes ?? 0;
          const needed = Math.max(Math.ceil(virtual / GiB), image.minDiskGiB, 1);
          if (size === null) planned.volume_size_gib = Math.max(needed, flavor.root_gib);
          else if (size * GiB < virtual || size < image.minDiskGiB) {
            throw errors.badRequest(`Volume size ${size} GiB (${size * GiB} bytes) of ${field} is smaller than image ${image.id}: its virtual size is ${virtual} bytes${image.minDiskGiB ? ` and min_disk ${image.minDiskGiB} GiB` : ''}. Ask for at least ${needed} GiB.`);
          }
          if (bootIndex === 0) rootVolumeImageMeta = image.properties;
        } else {
          if (bootIndex !== 0) throw errors.badRequest(`${field}: an image on a local disk must be the boot disk (boot_index 0).`);
          rootImage = image;
        }
        if (bootIndex === 0 && destination === 'volume') rootImage = image;
      } else if (source === 'blank') {
        if (destination === 'local') throw errors.badRequest(`${field}: blank local disks (ephemeral and swap) are not supported by Pumice yet; use a blank volume (destination_type volume, volume_size N).`);
        if (size === null) throw errors.badRequest(`${field}: a blank volume needs volume_size in GiB.`);
        if (bootIndex === 0) throw errors.badRequest(`${field}: a blank volume cannot be the boot disk (boot_index 0): it has nothing to boot.`);
      } else {
        throw errors.badRequest(`${field}: source_type snapshot is not supported by Pumice yet; create a volume from the snapshot (openstack volume create --snapshot) and boot from it.`);
      }
      bdms.push(planned);
    }
    const boots = bdms.filter((b) => b.boot_index === 0);
    if (boots.length > 1) throw errors.badRequest('Boot sequence for the instance and image/block device mapping combination is not valid: more than one device has boot_index 0.');
    const imageRef = input.imageRef ?? '';
    if (boots.length === 0) {
      if (!imageRef) throw errors.badRequest('Block Device Mapping is Invalid: Boot sequence for the instance and image/block device mapping combination is not valid. Give imageRef, or a block_device_mapping_v2 entry with boot_index 0.');
      const image = this.imageFor(auth, imageRef);
      rootImage = image;
      bdms.unshift({
        source_type: 'image', destination_type: 'local', boot_index: 0, volume_id: null, image_id: image.id,
        volume_size_gib: null, volume_type: null, device_name: '/dev/vda', tag: null, delete_on_termination: true,
      });
    }
    const root = bdms.find((b) => b.boot_index === 0)!;
    if (root.destination_type === 'local' && rootImage) this.checkImageForLocalRoot(rootImage);
    // The root disk is vda; other disks follow in the order given.
    bdms.sort((a, b) => (a.boot_index === 0 ? -1 : b.boot_index === 0 ? 1 : 0));
    return { bdms, rootImage, rootVolumeImageMeta };
  }

  /** The scenario's trap: a non-raw image on an RBD root disk boots an unreadable disk. Refused with the fix. */
  private checkImageForLocalRoot(image: ImageFacts): void {
    if (this.options.imagesType !== 'rbd') return;
    if (image.diskFormat !== 'raw') {
      throw errors.badRequest(
        `Image ${image.id} is ${image.diskFormat ?? 'of unknown format'}; root disks in RBD ([libvirt] images_type = rbd) need a raw image, or the guest finds an unbootable disk. ` +
          `Convert it (qemu-img convert -f ${image.diskFormat ?? 'qcow2'} -O raw in.img out.raw) and upload it with --disk-format raw, or upload through the image service's image_conversion plugin.`,
      );
    }
  }

  private volumeFor(auth: AuthContext, volumeId: string): VolumeFacts {
    try {
      return this.lookups.volume(auth, volumeId);
    } catch (error) {
      if (error instanceof PumiceError && error.status === 404) throw errors.badRequest(`Volume ${volumeId} could not be found (or is not visible to your project).`);
      throw error;
    }
  }

  private parseZone(auth: AuthContext, requested: string | null, host: string | null): { zone: string | null; forcedHost: string | null } {
    let zone: string | null = requested;
    let forcedHost: string | null = null;
    if (requested && requested.includes(':')) {
      const [z, h] = requested.split(':');
      zone = z || null;
      forcedHost = h || null;
    }
    if (host) forcedHost = host;
    if (forcedHost && !auth.isAdmin) throw errors.forbidden('os_compute_api:servers:create:forced_host (choosing a host)');
    if (zone) {
      const zones = new Set(this.hosts.services({ binary: 'nova-compute' }).map((s) => s.zone));
      if (!zones.has(zone)) throw errors.badRequest(`The requested availability zone '${zone}' is not available (zones with compute hosts: ${[...zones].join(', ') || 'none'}).`);
    }
    return { zone, forcedHost };
  }

  // ---- actions ----

  /**
   * Compare-and-set of a server's states through their owner (src/state/servers.ts): applies
   * `changes` only while vm_state is one of `fromVm` (and task_state one of `fromTask` when given),
   * and only as the transition tables allow. Returns false when the row moved on.
   */
  transition(id: string, fromVm: readonly VmState[] | null, fromTask: readonly ServerTaskState[] | null, changes: Partial<Pick<ServerRow, 'vm_state' | 'task_state' | 'power_state' | 'host' | 'fault' | 'launched_at' | 'terminated_at' | 'availability_zone' | 'image_id' | 'image_meta' | 'progress' | 'deleted_at' | 'name'>>): boolean {
    return resourceStates(this.db).servers.transition(id, fromVm, fromTask, changes);
  }

  /** The scheduler's choice of a host other than the server's own for a migration (a 400 naming the filters' reasons when none fits). */
  private otherHostFor(row: ServerRow, verb: 'live-migrate' | 'migrate'): string {
    const result = this.scheduler.select({
      flavor: JSON.parse(row.flavor) as FlavorSnapshot,
      imageProperties: JSON.parse(row.image_meta) as Record<string, string>,
      availabilityZone: row.requested_zone,
      forcedHost: null,
      needsLocalDisk: false,
      ignoreHosts: row.host ? [row.host] : [],
    });
    if (!result.ok) throw errors.badRequest(`No valid host was found to ${verb} instance ${row.id} to. ${result.reasons.join('; ')}`);
    return result.hosts[0]!.service.host;
  }

  /**
   * os-migrateLive: Nova's checks first (a refusal changes nothing), then the target is chosen (the
   * scheduler, or the named host checked), the server goes to MIGRATING (task_state migrating), a
   * live-migration record is `queued` and the target's prepare task is enqueued, in one transaction.
   */
  liveMigrate(auth: AuthContext, id: string, request: LiveMigrationRequest, requestId: string): MigrationRow {
    const row = this.row(id);
    if (!row || (!auth.isAdmin && row.project_id !== auth.projectId)) throw errors.notFound('Instance', id);
    const running = this.migrations.liveInProgress(id);
    if (running) throw errors.conflict(`Instance ${id} is being live-migrated already (migration ${running.id} from ${running.source_compute} to ${running.dest_compute}, ${running.status}): wait for it, or abort it with openstack server migration abort ${id} ${running.id}.`);
    const refusal = liveMigrationRefusal(row, this.bdms(id), request, { hosts: this.hosts, imagesType: this.options.imagesType });
    if (refusal) throw refusal;
    if (!row.host || !this.hostIsUp(row.host)) throw errors.conflict(`Instance ${id} cannot be live-migrated: its compute host ${row.host ?? '(none)'} is down, and the source host runs the migration. Evacuate it instead (openstack server evacuate).`);
    const source = row.host;
    const target = request.host ?? this.otherHostFor(row, 'live-migrate');
    return this.db.transaction(() => {
      if (!this.transition(id, ['active'], [null], { task_state: 'migrating' })) throw errors.conflict(`Instance ${id} changed state; retry.`);
      const migration = this.migrations.createLive(row, target, auth);
      const actionId = this.recordAction(id, requestId, 'live-migration', auth);
      const payload: LiveMigrationPayload = { requestId, actionId, migrationId: migration.id, sourceHost: source, destHost: target };
      this.queue.enqueue('server.live_migration.prepare', id, computeQueue(target), payload);
      queueMicrotask(() => this.onEnqueue());
      return migration;
    });
  }

  /**
   * migrate (cold migration, admin): the checks of cold-migration.ts (a refusal changes nothing), the
   * target chosen (the named host, or the scheduler's choice of another up host), then in one
   * transaction the server to RESIZE (task_state resize_prep), a migration record `pre-migrating`
   * and the source's task that stops the guest.
   */
  migrate(auth: AuthContext, id: string, host: string | null, requestId: string): MigrationRow {
    const row = this.get(auth, id);
    let open = this.migrations.coldOpen(id);
    // A record left open by a server that was reset (os-resetState fenced its tasks) no longer moves: it ends in error.
    if (open && row.vm_state !== 'resized' && !(row.task_state ?? '').startsWith('resize_')) {
      this.migrations.advance(open.id, [open.status], 'error', { reason: `abandoned: server ${id} was reset to ${row.vm_state} on ${row.host ?? '(no host)'} while the migration was ${open.status}` });
      open = undefined;
    }
    if (open) throw errors.conflict(`Instance ${id} has a migration in progress already (migration ${open.id} from ${open.source_compute} to ${open.dest_compute}, ${open.status}): ${open.status === 'finished' ? `confirm or revert it first (openstack server migrate confirm|revert ${id})` : 'wait for it'}.`);
    const running = this.migrations.liveInProgress(id) ?? this.migrations.inProgress(id);
    if (running) throw errors.conflict(`Instance ${id} is being ${running.migration_type === 'evacuation' ? 'evacuated' : 'live-migrated'} (migration ${running.id}, ${running.status}): wait for it to end.`);
    const refusal = coldMigrationRefusal(row, this.bdms(id), host, { hosts: this.hosts, imagesType: this.options.imagesType });
    if (refusal) throw refusal;
    const source = row.host!;
    const target = host ?? this.otherHostFor(row, 'migrate');
    return this.db.transaction(() => {
      if (!this.transition(id, ['active', 'stopped'], [null], { task_state: 'resize_prep' })) throw errors.conflict(`Instance ${id} changed state; retry.`);
      const migration = this.migrations.createCold(row, target, auth);
      const actionId = this.recordAction(id, requestId, 'migrate', auth);
      const payload: ColdMigrationPayload = { requestId, actionId, migrationId: migration.id, sourceHost: source, destHost: target };
      this.queue.enqueue('server.cold_migration.migrate', id, computeQueue(source), payload);
      queueMicrotask(() => this.onEnqueue());
      return migration;
    });
  }

  /** The cold migration waiting in VERIFY_RESIZE for confirm or revert (409 naming the state otherwise). */
  private finishedMigration(row: ServerRow, action: 'confirmResize' | 'revertResize'): MigrationRow {
    const open = this.migrations.coldOpen(row.id);
    if (row.vm_state !== 'resized' || row.task_state !== null || !open || open.status !== 'finished') {
      throw errors.conflict(
        `Cannot '${action}' instance ${row.id} while it is in vm_state ${row.vm_state}${row.task_state ? ` and task_state ${row.task_state}` : ''}: ` +
          `${action} needs status VERIFY_RESIZE, after a migration has finished (openstack server migrate ${row.id}${open ? `; migration ${open.id} is ${open.status}` : ''}).`,
      );
    }
    return open;
  }

  /**
   * confirmResize: the source host removes what is left of the guest; the server leaves VERIFY_RESIZE.
   * With the source host down the confirm ends at once: its agent destroys the leftovers when it
   * returns (a guest whose server names another host is destroyed at start).
   */
  confirmResize(auth: AuthContext, id: string, requestId: string): void {
    const row = this.get(auth, id);
    this.requireUnlocked(auth, row, 'confirmResize');
    const migration = this.finishedMigration(row, 'confirmResize');
    const source = migration.source_compute!;
    this.db.transaction(() => {
      if (!this.transition(id, ['resized'], [null], { task_state: 'resize_confirming' }) || !this.migrations.advance(migration.id, ['finished'], 'confirming')) throw errors.conflict(`Instance ${id} changed state; retry.`);
      const actionId = this.recordAction(id, requestId, 'confirmResize', auth);
      const payload: ColdMigrationPayload = { requestId, actionId, migrationId: migration.id, sourceHost: source, destHost: migration.dest_compute! };
      if (this.hostIsUp(source)) {
        this.queue.enqueue('server.cold_migration.confirm', id, computeQueue(source), payload);
        queueMicrotask(() => this.onEnqueue());
      } else {
        confirmDone({ servers: this }, id, migration.id, actionId, null);
      }
    });
  }

  /** revertResize: the guest stops on the destination and starts again on the source (whose agent must be up). */
  revertResize(auth: AuthContext, id: string, requestId: string): void {
    const row = this.get(auth, id);
    this.requireUnlocked(auth, row, 'revertResize');
    const migration = this.finishedMigration(row, 'revertResize');
    const source = migration.source_compute!;
    if (!this.hostIsUp(source)) throw errors.conflict(`Cannot revert the migration of instance ${id}: its source host ${source} is down, and it takes the guest back. Bring ${source} back and retry, or confirm the migration (openstack server migrate confirm ${id}).`);
    if (!row.host || !this.hostIsUp(row.host)) throw errors.conflict(`Cannot revert the migration of instance ${id}: its host ${row.host ?? '(none)'} is down and must stop the guest first. Evacuate it instead (openstack server evacuate).`);
    this.db.transaction(() => {
      if (!this.transition(id, ['resized'], [null], { task_state: 'resize_reverting' }) || !this.migrations.advance(migration.id, ['finished'], 'reverting')) throw errors.conflict(`Instance ${id} changed state; retry.`);
      const actionId = this.recordAction(id, requestId, 'revertResize', auth);
      const payload: ColdMigrationPayload = { requestId, actionId, migrationId: migration.id, sourceHost: source, destHost: row.host! };
      this.queue.enqueue('server.cold_migration.revert', id, computeQueue(row.host!), payload);
      queueMicrotask(() => this.onEnqueue());
    });
  }

  /** A live migration of the server (404 when it is not one of this server's). */
  liveMigration(auth: AuthContext, serverId: string, migrationId: number): MigrationRow {
    this.get(auth, serverId);
    const migration = this.migrations.get(migrationId);
    if (!migration || migration.server_id !== serverId || migration.migration_type !== 'live-migration') throw errors.notFound('Migration', String(migrationId));
    return migration;
  }

  /**
   * Abort (DELETE /servers/{id}/migrations/{mid}): a `running` migration goes to `cancelling`; the
   * source's run task cancels QEMU's migration and the target's rollback removes what it made.
   * Queued and preparing ones cannot be aborted yet (409, wait a second); finished ones neither (400).
   */
  abortLiveMigration(auth: AuthContext, serverId: string, migrationId: number): void {
    const migration = this.liveMigration(auth, serverId, migrationId);
    if (migration.status === 'cancelling') return;
    if (migration.status === 'queued' || migration.status === 'preparing') {
      throw errors.conflict(`Migration ${migrationId} of instance ${serverId} is ${migration.status}: it can be aborted once it is running (memory being copied); retry in a second.`);
    }
    if (migration.status !== 'running' || !this.migrations.advance(migration.id, ['running'], 'cancelling')) {
      throw errors.badRequest(`Migration ${migrationId} of instance ${serverId} is ${this.migrations.get(migrationId)?.status ?? migration.status}, not running: there is nothing to abort.`);
    }
  }

  /** Where the server was built: fail-back brings it back there (evacuation does not change it). */
  homeHost(serverId: string): string | null {
    return this.db.get<{ home_host: string | null }>('SELECT home_host FROM servers WHERE id = ?', serverId)?.home_host ?? null;
  }

  private requireState(row: ServerRow, action: string, vmStates: readonly VmState[], taskStates: readonly ServerTaskState[] = [null]): void {
    if (!vmStates.includes(row.vm_state) || !taskStates.includes(row.task_state)) {
      throw errors.conflict(
        `Cannot '${action}' instance ${row.id} while it is in vm_state ${row.vm_state}${row.task_state ? ` and task_state ${row.task_state}` : ''}; ` +
          `${action} needs vm_state ${vmStates.join(' or ')}${taskStates.some((t) => t !== null) ? '' : ' with no task running'}.`,
      );
    }
  }

  private requireUnlocked(auth: AuthContext, row: ServerRow, action: string): void {
    if (row.locked && !auth.isAdmin) throw errors.conflict(`Instance ${row.id} is locked${row.locked_reason ? ` (${row.locked_reason})` : ''}; '${action}' is refused until it is unlocked.`);
  }

  private enqueueOnHost(row: ServerRow, kind: ServerTaskKind, payload: Record<string, unknown>): void {
    if (!row.host) throw errors.conflict(`Instance ${row.id} has no host (it was never scheduled): delete it and create it again.`);
    this.queue.enqueue(kind, row.id, computeQueue(row.host), payload);
    queueMicrotask(() => this.onEnqueue());
  }

  stop(auth: AuthContext, id: string, requestId: string): void {
    const row = this.get(auth, id);
    this.requireUnlocked(auth, row, 'stop');
    this.db.transaction(() => {
      this.requireState(row, 'stop', ['active', 'error']);
      if (row.vm_state === 'error' && !row.host) throw errors.conflict(`Instance ${id} is in error with no host: there is nothing to stop.`);
      if (!this.transition(id, ['active', 'error'], [null], { task_state: 'powering-off' })) throw errors.conflict(`Instance ${id} changed state; retry.`);
      const actionId = this.recordAction(id, requestId, 'stop', auth);
      this.enqueueOnHost(row, 'server.stop', { requestId, actionId });
    });
  }

  start(auth: AuthContext, id: string, requestId: string): void {
    const row = this.get(auth, id);
    this.requireUnlocked(auth, row, 'start');
    this.db.transaction(() => {
      this.requireState(row, 'start', ['stopped']);
      if (!this.transition(id, ['stopped'], [null], { task_state: 'powering-on' })) throw errors.conflict(`Instance ${id} changed state; retry.`);
      const actionId = this.recordAction(id, requestId, 'start', auth);
      this.enqueueOnHost(row, 'server.start', { requestId, actionId });
    });
  }

  reboot(auth: AuthContext, id: string, hard: boolean, requestId: string): void {
    const row = this.get(auth, id);
    this.requireUnlocked(auth, row, 'reboot');
    this.db.transaction(() => {
      // Nova allows a hard reboot from more states (it is the way out of a stuck soft reboot).
      if (hard) this.requireState(row, 'reboot', ['active', 'stopped', 'error'], [null, 'rebooting', 'reboot_started', 'rebooting_hard', 'reboot_started_hard']);
      else this.requireState(row, 'reboot', ['active']);
      if (!row.host) throw errors.conflict(`Instance ${id} has no host: it was never scheduled.`);
      this.transition(id, null, null, { task_state: hard ? 'rebooting_hard' : 'rebooting' });
      const actionId = this.recordAction(id, requestId, 'reboot', auth);
      this.enqueueOnHost(row, 'server.reboot', { requestId, actionId, hard });
    });
  }

  rebuild(auth: AuthContext, id: string, input: { imageRef: string; name?: string; metadata?: Record<string, string> }, requestId: string): ServerRow {
    const row = this.get(auth, id);
    this.requireUnlocked(auth, row, 'rebuild');
    const image = this.imageFor(auth, input.imageRef);
    const flavor = JSON.parse(row.flavor) as FlavorSnapshot;
    if (row.root_source === 'volume') {
      // Nova (before 2.93) rebuilds a volume-backed server only with the image it has.
      const current = (JSON.parse(row.image_meta) as Record<string, string>)['image_id'];
      if (current && current !== image.id) {
        throw errors.badRequest(`Unable to rebuild volume-backed instance ${id} with a new image (${image.id}): its root disk is volume ${this.bdms(id).find((b) => b.boot_index === 0)?.volume_id}. Rebuild with its current image ${current}, or boot a new server.`);
      }
    } else {
      this.checkImageFitsFlavor(image, flavor, true);
      this.checkImageForLocalRoot(image);
      checkHardwareProperties(image.properties);
    }
    return this.db.transaction(() => {
      this.requireState(row, 'rebuild', ['active', 'stopped', 'error']);
      if (!row.host) throw errors.conflict(`Instance ${id} has no host: it was never scheduled.`);
      this.transition(id, ['active', 'stopped', 'error'], [null], { task_state: 'rebuilding', ...(input.name ? { name: input.name } : {}), ...(row.root_source === 'image' ? { image_id: image.id, image_meta: JSON.stringify(image.properties) } : {}) });
      if (input.metadata) this.db.run('UPDATE servers SET metadata = ? WHERE id = ?', JSON.stringify(input.metadata), id);
      const actionId = this.recordAction(id, requestId, 'rebuild', auth);
      this.enqueueOnHost(row, 'server.rebuild', { requestId, actionId, imageId: image.id, wasStopped: row.vm_state === 'stopped' });
      return this.row(id)!;
    });
  }

  delete(auth: AuthContext, id: string, requestId: string, force = false): void {
    const row = this.get(auth, id);
    this.requireUnlocked(auth, row, 'delete');
    this.db.transaction(() => {
      if (row.task_state === 'deleting' && !force) return;
      this.transition(id, null, null, { task_state: 'deleting' });
      const actionId = this.recordAction(id, requestId, 'delete', auth);
      if (row.host && this.hostIsUp(row.host)) {
        this.enqueueOnHost(row, 'server.delete', { requestId, actionId });
      } else if (row.host) {
        // Nova's "local delete": the host is down, so its agent cannot run the delete. The server is
        // deleted here; any live agent releases its volumes (attachments, delete_on_termination).
        this.finishDelete(id);
        this.queue.enqueue('server.release_volumes', id, releaseQueue, { requestId, actionId });
      } else {
        // Never scheduled: nothing exists on a host, and the build created no volume.
        this.finishDelete(id);
      }
    });
  }

  /**
   * Evacuate (admin): rebuild the server on another host because its host is dead. Refused while
   * the source host's compute service is up (409, with the way to force it down). The destination
   * is the requested host (checked by the filters unless `force`, 2.29-2.67) or the scheduler's
   * choice, never the source. The server, its migration record (the journal) and the task on the
   * destination's queue are written in one transaction; the destination fences the source before
   * it rebuilds anything (agent.ts `evacuateServer`).
   */
  evacuate(auth: AuthContext, id: string, input: { host?: string | null; force?: boolean; hostPoweredOff?: boolean; reason?: string | null; automatic?: boolean }, requestId: string): { server: ServerRow; migration: MigrationRow; adminPass: string } {
    const row = this.get(auth, id);
    if (!row.host) throw errors.conflict(`Instance ${id} has no host (it was never scheduled): there is nothing to evacuate; delete it and create it again.`);
    const source = row.host;
    const service = this.hosts.serviceByHost('nova-compute', source);
    if (service && this.hosts.isUp(service)) {
      throw errors.conflict(
        `Compute service of ${source} is still in use: evacuation needs the host down; force it down with \`openstack compute service set --down ${source} nova-compute\` ` +
          `(after making sure it is dead), or wait service_down_time after its heartbeat stops.`,
      );
    }
    // A local volume is not shared storage: another host reaches it only through its volume service.
    for (const bdm of this.bdms(id)) {
      const backend = bdm.volume_id ? this.lookups.volumeBackend?.(bdm.volume_id) : null;
      if (!backend || backend.shared || backend.up) continue;
      throw errors.conflict(
        `Instance ${id} cannot be evacuated: volume ${bdm.volume_id} is on the local backend ${backend.host}, which is down (${backend.downReason ?? 'no heartbeat'}). ` +
          `A local volume is not shared storage: no other host can reach its data until that volume service is back. Bring ${backend.host} back, then evacuate; or restore the volume from a backup.`,
      );
    }
    const running = this.migrations.inProgress(id);
    if (running) throw errors.conflict(`Instance ${id} is being evacuated already (migration ${running.uuid} from ${running.source_compute} to ${running.dest_compute}, ${running.status}).`);
    this.requireState(row, 'evacuate', ['active', 'stopped', 'error']);
    if (input.host) {
      if (input.host === source) throw errors.badRequest(`The target host can't be the same one: instance ${id} is on ${source} already; choose another host or let the scheduler choose.`);
      if (!this.hosts.serviceByHost('nova-compute', input.host)) throw errors.notFound('Compute host', input.host);
    }
    const flavor = JSON.parse(row.flavor) as FlavorSnapshot;
    let dest: string;
    let destZone: string | null;
    if (input.host && input.force) {
      // 2.29-2.67 force: the scheduler is bypassed (the host must still be up to run the task).
      const target = this.hosts.serviceByHost('nova-compute', input.host)!;
      if (!this.hosts.isUp(target)) throw errors.badRequest(`Compute host ${input.host} is down: it cannot rebuild instance ${id}.`);
      dest = target.host;
      destZone = target.zone;
    } else {
      const result = this.scheduler.select({
        flavor,
        imageProperties: JSON.parse(row.image_meta) as Record<string, string>,
        availabilityZone: row.requested_zone,
        forcedHost: input.host ?? null,
        needsLocalDisk: row.root_source === 'image',
        ignoreHosts: [source],
      });
      if (!result.ok) throw errors.badRequest(`No valid host was found to evacuate instance ${id} to. ${result.reasons.join('; ')}`);
      dest = result.hosts[0]!.service.host;
      destZone = result.hosts[0]!.service.zone;
    }
    void destZone;
    const adminPass = randomUUID().replace(/-/g, '').slice(0, 12);
    return this.db.transaction(() => {
      if (!this.transition(id, ['active', 'stopped', 'error'], [null], { task_state: 'rebuilding' })) throw errors.conflict(`Instance ${id} changed state; retry.`);
      // Tasks of this server on the dead host's queue can never run or finish there (a volume attach asked
      // while it was down, or one it was running when it died): they would hold the server's lock, and the
      // evacuation behind them, for ever. Queued ones are cancelled; running ones too (a returning agent finds
      // its task gone and stops at its next checkpoint without writing).
      const reason = `cancelled: server ${id} is evacuated from ${source}, whose compute service is down`;
      this.queue.fence(id, reason);
      for (const task of this.queue.store.runningOfOthers([computeQueue(source)], '')) if (task.resource_id === id) this.queue.store.cancel(task.id, reason);
      const migration = this.migrations.create(row, dest, auth, input.automatic === true);
      const actionId = this.recordAction(id, requestId, 'evacuate', auth);
      if (input.reason) this.db.run('UPDATE instance_actions SET message = ? WHERE id = ?', input.reason.slice(0, 255), actionId);
      const payload: EvacuatePayload = { requestId, actionId, migrationId: migration.id, sourceHost: source, wasStopped: row.vm_state === 'stopped', hostPoweredOff: input.hostPoweredOff === true };
      this.queue.enqueue('server.evacuate', id, computeQueue(dest), payload);
      queueMicrotask(() => this.onEnqueue());
      return { server: this.row(id)!, migration, adminPass };
    });
  }

  private hostIsUp(host: string): boolean {
    const service = this.hosts.serviceByHost('nova-compute', host);
    return service !== undefined && this.hosts.isUp(service);
  }

  /** Marks a server deleted (its row stays for `deleted=true` listing and instance actions). */
  finishDelete(id: string): void {
    const now = nowIso();
    const states = resourceStates(this.db);
    this.db.transaction(() => {
      this.transition(id, null, null, { vm_state: 'deleted', task_state: null, power_state: PowerState.NOSTATE, terminated_at: now, deleted_at: now });
      for (const bdm of this.bdms(id)) states.blockDeviceMappings.transition(bdm.id, ['pending', 'attached', 'detaching'], 'detached', { connection_info: null });
    });
  }

  lock(auth: AuthContext, id: string, locked: boolean, reason: string | null): void {
    const row = this.get(auth, id);
    this.db.run('UPDATE servers SET locked = ?, locked_reason = ?, updated_at = ? WHERE id = ?', locked ? 1 : 0, locked ? reason : null, nowIso(), row.id);
  }

  update(auth: AuthContext, id: string, changes: { name?: string; description?: string | null; accessIPv4?: string; accessIPv6?: string }): ServerRow {
    const row = this.get(auth, id);
    this.requireUnlocked(auth, row, 'update');
    if (changes.name !== undefined) this.db.run('UPDATE servers SET name = ?, updated_at = ? WHERE id = ?', changes.name, nowIso(), id);
    if (changes.description !== undefined) this.db.run('UPDATE servers SET description = ?, updated_at = ? WHERE id = ?', changes.description, nowIso(), id);
    if (changes.accessIPv4 !== undefined) this.db.run('UPDATE servers SET access_ipv4 = ?, updated_at = ? WHERE id = ?', changes.accessIPv4, nowIso(), id);
    if (changes.accessIPv6 !== undefined) this.db.run('UPDATE servers SET access_ipv6 = ?, updated_at = ? WHERE id = ?', changes.accessIPv6, nowIso(), id);
    return this.row(id)!;
  }

  // ---- metadata ----

  metadata(row: ServerRow): Record<string, string> {
    return JSON.parse(row.metadata) as Record<string, string>;
  }

  setMetadata(auth: AuthContext, id: string, metadata: Record<string, string>, replace: boolean): Record<string, string> {
    const row = this.get(auth, id);
    this.requireUnlocked(auth, row, 'update metadata');
    const next = replace ? { ...metadata } : { ...this.metadata(row), ...metadata };
    if (Object.keys(next).length > this.options.metadataItemsMax) throw errors.quotaExceeded(`Quota exceeded for metadata_items: ${Object.keys(next).length} items, limit ${this.options.metadataItemsMax}.`);
    this.db.run('UPDATE servers SET metadata = ?, updated_at = ? WHERE id = ?', JSON.stringify(next), nowIso(), id);
    return next;
  }

  deleteMetadataKey(auth: AuthContext, id: string, key: string): void {
    const row = this.get(auth, id);
    this.requireUnlocked(auth, row, 'delete metadata');
    const current = this.metadata(row);
    if (!(key in current)) throw errors.notFound('Metadata item', `${key} of server ${id}`);
    delete current[key];
    this.db.run('UPDATE servers SET metadata = ?, updated_at = ? WHERE id = ?', JSON.stringify(current), nowIso(), id);
  }

  // ---- volume attachments ----

  attachVolume(auth: AuthContext, id: string, input: { volumeId: string; device?: string | null; tag?: string | null; deleteOnTermination?: boolean }, requestId: string): BdmRow {
    const row = this.get(auth, id);
    this.requireUnlocked(auth, row, 'attach_volume');
    const volume = this.volumeFor(auth, input.volumeId);
    if (volume.status !== 'available' && !(volume.multiattach && volume.status === 'in-use')) {
      throw errors.badRequest(`Invalid volume: volume ${volume.id} is '${volume.status}'; attaching needs it 'available'${volume.multiattach ? " or 'in-use'" : ''}.`);
    }
    return this.db.transaction(() => {
      this.requireState(row, 'attach_volume', ['active', 'stopped']);
      if (this.attachedVolumes(id).some((b) => b.volume_id === volume.id)) throw errors.conflict(`Volume ${volume.id} is already attached to instance ${id}.`);
      const used = this.bdms(id).filter((b) => b.status !== 'detached').length;
      const bdmId = randomUUID();
      this.db.run(
        `INSERT INTO block_device_mappings (id, server_id, source_type, destination_type, boot_index, volume_id, volume_size_gib, device_name, tag, delete_on_termination, status, created_at)
         VALUES (?, ?, 'volume', 'volume', NULL, ?, ?, ?, ?, ?, 'pending', ?)`,
        bdmId, id, volume.id, volume.sizeGiB, input.device ?? deviceName(used), input.tag ?? null, input.deleteOnTermination ? 1 : 0, nowIso(),
      );
      const actionId = this.recordAction(id, requestId, 'attach_volume', auth);
      this.enqueueOnHost(row, 'server.attach', { requestId, actionId, bdmId });
      return this.db.get<BdmRow>('SELECT * FROM block_device_mappings WHERE id = ?', bdmId)!;
    });
  }

  detachVolume(auth: AuthContext, id: string, volumeId: string, requestId: string): void {
    const row = this.get(auth, id);
    this.requireUnlocked(auth, row, 'detach_volume');
    this.db.transaction(() => {
      const bdm = this.attachedVolumes(id).find((b) => b.volume_id === volumeId);
      if (!bdm) throw errors.notFound('Volume attachment', `of volume ${volumeId} to instance ${id}`);
      if (bdm.boot_index === 0) throw errors.badRequest(`Can't detach root device volume ${volumeId} of instance ${id}: it is the boot disk. Delete or rebuild the server instead.`);
      if (bdm.status === 'detaching') return;
      this.requireState(row, 'detach_volume', ['active', 'stopped', 'error']);
      if (bdm.status === 'pending') throw errors.conflict(`Volume ${volumeId} is still being attached to instance ${id}; detach it once the attach has finished.`);
      resourceStates(this.db).blockDeviceMappings.transition(bdm.id, ['attached'], 'detaching');
      const actionId = this.recordAction(id, requestId, 'detach_volume', auth);
      this.enqueueOnHost(row, 'server.detach', { requestId, actionId, bdmId: bdm.id });
    });
  }

  // ---- instance actions ----

  recordAction(serverId: string, requestId: string, action: string, auth: { projectId: string | null; userId: string }): number {
    const server = this.db.get<{ project_id: string }>('SELECT project_id FROM servers WHERE id = ?', serverId);
    const now = nowIso();
    this.db.run(
      'INSERT INTO instance_actions (server_id, request_id, action, project_id, user_id, start_time, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
      serverId, requestId, action, server?.project_id ?? auth.projectId ?? '', auth.userId, now, now,
    );
    return this.db.get<{ id: number }>('SELECT last_insert_rowid() AS id')!.id;
  }

  /** Records one event of an action (`compute__do_build_and_run_instance`...) with its result. */
  finishAction(actionId: number, event: string, host: string | null, result: 'Success' | 'Error', details: string | null, startTime?: string): void {
    const now = nowIso();
    this.db.transaction(() => {
      this.db.run(
        'INSERT INTO instance_action_events (action_id, event, host, start_time, finish_time, result, details) VALUES (?, ?, ?, ?, ?, ?, ?)',
        actionId, event, host, startTime ?? now, now, result, details,
      );
      this.db.run('UPDATE instance_actions SET updated_at = ?, message = CASE WHEN ? = \'Error\' THEN \'Error\' ELSE message END WHERE id = ?', now, result, actionId);
    });
  }

  actions(auth: AuthContext, id: string): InstanceActionRow[] {
    const row = this.db.get<ServerRow>('SELECT * FROM servers WHERE id = ?', id);
    if (!row || (!auth.isAdmin && row.project_id !== auth.projectId)) throw errors.notFound('Instance', id);
    return this.db.all<InstanceActionRow>('SELECT * FROM instance_actions WHERE server_id = ? ORDER BY id DESC', id);
  }

  action(auth: AuthContext, id: string, requestId: string): { action: InstanceActionRow; events: InstanceActionEventRow[] } {
    const action = this.actions(auth, id).find((a) => a.request_id === requestId);
    if (!action) throw errors.notFound('Action', `${requestId} of instance ${id}`);
    return { action, events: this.db.all<InstanceActionEventRow>('SELECT * FROM instance_action_events WHERE action_id = ? ORDER BY id', action.id) };
  }

  /** Nova's hostId: a per-project hash of the host name, so projects cannot map the cloud's hosts. */
  static hostId(projectId: string, host: string | null): string {
    if (!host) return '';
    return createHash('sha224').update(projectId + host).digest('hex');
  }
}
