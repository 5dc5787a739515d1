/**
 * Compute's vocabulary, as Nova's: a server has a vm_state (what it is), a
 * task_state (what is being done to it) and a power_state (what the
 * hypervisor last saw); the API's `status` is derived from the first two.
 */

export const vmStates = ['building', 'active', 'stopped', 'error', 'deleted', 'paused', 'suspended', 'rescued', 'resized', 'soft-delete', 'shelved', 'shelved_offloaded'] as const;
export type VmState = (typeof vmStates)[number];

export type TaskState =
  | 'scheduling'
  | 'block_device_mapping'
  | 'networking'
  | 'spawning'
  | 'powering-off'
  | 'powering-on'
  | 'rebooting'
  | 'rebooting_hard'
  | 'reboot_started'
  | 'reboot_started_hard'
  | 'rebuilding'
  | 'rebuild_block_device_mapping'
  | 'rebuild_spawning'
  | 'deleting'
  | 'rebuilding_evacuate'
  | 'migrating'
  | null;

/**
 * Cold migration's task_states (Nova's resize ones). Kept out of `TaskState` because
 * src/state/tables.ts keys a table by every TaskState; their rows live in src/state/servers.ts.
 */
export const resizeTaskStates = ['resize_prep', 'resize_migrating', 'resize_migrated', 'resize_finish', 'resize_reverting', 'resize_confirming'] as const;
export type ResizeTaskState = (typeof resizeTaskStates)[number];
/** Every task_state a server row may hold. */
export type ServerTaskState = TaskState | ResizeTaskState;

/** Nova's power_state numbers. */
export const PowerState = { NOSTATE: 0, RUNNING: 1, PAUSED: 3, SHUTDOWN: 4, CRASHED: 6, SUSPENDED: 7 } as const;

/** vm_state + task_state → the API's status, as nova/api/openstack/common.py maps them. */
export function serverStatus(vmState: string, taskState: string | null): string {
  switch (vmState) {
    case 'building':
      return 'BUILD';
    case 'active':
      if (taskState === 'rebooting' || taskState === 'reboot_started') return 'REBOOT';
      if (taskState === 'rebooting_hard' || taskState === 'reboot_started_hard') return 'HARD_REBOOT';
      if (taskState === 'rebuilding' || taskState === 'rebuild_block_device_mapping' || taskState === 'rebuild_spawning') return 'REBUILD';
      if (taskState === 'migrating') return 'MIGRATING';
      if (isResizing(taskState)) return 'RESIZE';
      return 'ACTIVE';
    case 'stopped':
      if (isResizing(taskState)) return 'RESIZE';
      if (taskState === 'rebuilding' || taskState === 'rebuild_block_device_mapping' || taskState === 'rebuild_spawning') return 'REBUILD';
      return 'SHUTOFF';
    case 'error':
      if (taskState === 'rebuilding' || taskState === 'rebuild_block_device_mapping' || taskState === 'rebuild_spawning' || taskState === 'rebuilding_evacuate') return 'REBUILD';
      return 'ERROR';
    case 'deleted':
      return 'DELETED';
    case 'soft-delete':
      return 'SOFT_DELETED';
    case 'paused':
      return 'PAUSED';
    case 'suspended':
      return 'SUSPENDED';
    case 'rescued':
      return 'RESCUE';
    case 'resized':
      return taskState === 'resize_reverting' ? 'REVERT_RESIZE' : 'VERIFY_RESIZE';
    case 'shelved':
      return 'SHELVED';
    case 'shelved_offloaded':
      return 'SHELVED_OFFLOADED';
    default:
      return 'UNKNOWN';
  }
}

/** The task_states Nova shows as RESIZE: a cold migration on its way to VERIFY_RESIZE. */
function isResizing(taskState: string | null): boolean {
  return taskState === 'resize_prep' || taskState === 'resize_migrating' || taskState === 'resize_migrated' || taskState === 'resize_finish';
}

/** The API status filter (`?status=ACTIVE`) back to the vm_states it covers. */
export function vmStatesForStatus(status: string): string[] | null {
  const table: Record<string, string[]> = {
    BUILD: ['building'],
    ACTIVE: ['active'],
    REBOOT: ['active'],
    HARD_REBOOT: ['active'],
    REBUILD: ['active', 'stopped', 'error'],
    SHUTOFF: ['stopped'],
    ERROR: ['error'],
    DELETED: ['deleted'],
    SOFT_DELETED: ['soft-delete'],
    PAUSED: ['paused'],
    SUSPENDED: ['suspended'],
    RESCUE: ['rescued'],
    RESIZE: ['active', 'stopped'],
    VERIFY_RESIZE: ['resized'],
    REVERT_RESIZE: ['resized'],
    SHELVED: ['shelved'],
    SHELVED_OFFLOADED: ['shelved_offloaded'],
  };
  return table[status.toUpperCase()] ?? null;
}

export interface FlavorSnapshot {
  id: string;
  name: string;
  vcpus: number;
  ram_mib: number;
  root_gib: number;
  ephemeral_gib: number;
  swap_mib: number;
  extra_specs: Record<string, string>;
}

export interface ServerRow {
  id: string;
  name: string;
  project_id: string;
  user_id: string;
  flavor_id: string;
  /** JSON FlavorSnapshot taken at create: a flavor deleted later does not change the server. */
  flavor: string;
  image_id: string | null;
  /** JSON of the image's properties the server was built from (hw_* etc.). */
  image_meta: string;
  host: string | null;
  availability_zone: string | null;
  requested_zone: string | null;
  vm_state: VmState;
  task_state: ServerTaskState;
  power_state: number;
  key_name: string | null;
  key_data: string | null;
  metadata: string;
  description: string | null;
  user_data: string | null;
  config_drive: string;
  access_ipv4: string;
  access_ipv6: string;
  locked: number;
  locked_reason: string | null;
  fault: string | null;
  progress: number;
  /** `volume` (boot from volume), `image` (ephemeral root disk) */
  root_source: 'volume' | 'image';
  generation: number;
  created_at: string;
  updated_at: string | null;
  launched_at: string | null;
  terminated_at: string | null;
  deleted_at: string | null;
}

export interface BdmRow {
  id: string;
  server_id: string;
  source_type: 'volume' | 'image' | 'blank' | 'snapshot';
  destination_type: 'volume' | 'local';
  boot_index: number | null;
  volume_id: string | null;
  image_id: string | null;
  volume_size_gib: number | null;
  volume_type: string | null;
  device_name: string | null;
  tag: string | null;
  delete_on_termination: number;
  attachment_id: string | null;
  /** JSON connection_info from Block Storage; holds secrets, never returned by the API. */
  connection_info: string | null;
  /** pending → attached → detaching → detached (or error) */
  status: string;
  created_at: string;
  /** JSON list of the Ceph client addresses that opened this RBD disk for the guest (whom a fence blocklists). */
  rbd_clients?: string | null;
}

export interface ServerFault {
  code: number;
  message: string;
  details: string;
  created: string;
}

export function nowIso(): string {
  return new Date().toISOString();
}

/** Nova's time format in server bodies: `2026-12-05T06:00:00Z` (no fraction). */
export function novaTime(iso: string | null): string | null {
  if (!iso) return null;
  return iso.replace(/\.\d+Z$/, 'Z');
}

/** Nova's `OS-SRV-USG:launched_at` format: `2026-12-05T06:00:00.000000`. */
export function usageTime(iso: string | null): string | null {
  if (!iso) return null;
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?Z$/.exec(iso);
  if (!m) return iso;
  return `${m[1]}.${(m[2] ?? '').padEnd(6, '0').slice(0, 6)}`;
}

/** libvirt-style instance name from Nova's integer id; here from the uuid, stable and unique enough for display. */
export function instanceName(serverId: string): string {
  return `instance-${serverId.replace(/-/g, '').slice(0, 8)}`;
}
