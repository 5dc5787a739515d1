/**
 * What the compute agent asks of a hypervisor driver. The agent owns the
 * server rows and their states; a driver only starts, stops and inspects
 * guests and their disks on this host. Implementations: `qemu/` (QEMU driven
 * directly over QMP).
 */

/** Where a guest disk's bytes are. */
export type DiskSource =
  | {
      kind: 'rbd';
      pool: string;
      image: string;
      /** Ceph user without the `client.` prefix, e.g. `cinder`. */
      user: string;
      /** The cephx key, base64 as in a keyring. Handed to QEMU as a secret object from a 0600 file, never on the command line. */
      keyBase64: string;
      /** Monitor addresses `host:port`. */
      monitorHosts: string[];
      /** ceph.conf for QEMU; the driver writes its own with short timeouts when null. */
      cephConfPath: string | null;
      /** libvirt secret uuid, for the domain XML only. */
      secretUuid: string | null;
    }
  | {
      kind: 'nbd';
      host: string;
      port: number;
      exportName: string;
      /** TLS-PSK credentials when the export requires them. */
      tlsPsk?: { identity: string; keyHex: string } | null;
    }
  | { kind: 'file'; path: string; format: 'raw' | 'qcow2' };

export interface GuestDisk {
  /** Stable id of the disk inside the guest's configuration: the volume id, or `root` for an ephemeral root disk. */
  diskId: string;
  /** virtio-blk serial seen by the guest (Nova uses the volume id, truncated to 20 characters by virtio). */
  serial: string;
  source: DiskSource;
  readOnly: boolean;
  /** 1 for the boot disk; omitted for data disks. */
  bootIndex?: number;
  /** `writeback` for network disks as the scenario's disk_cachemodes = network=writeback; `none` otherwise. */
  cache: 'writeback' | 'none' | 'writethrough' | 'unsafe';
  discard: 'unmap' | 'ignore';
}

/** Guest hardware from the image's hw_* properties (src/compute/hardware.ts). */
export interface GuestHardware {
  /** Bus of every disk: virtio-blk PCI devices, or scsi-hd on one virtio-scsi controller. */
  diskBus: 'virtio' | 'scsi';
  scsiModel: 'virtio-scsi' | null;
  /** A virtio-serial channel org.qemu.guest_agent.0 on a unix socket in the instance directory. */
  guestAgent: boolean;
  /** Snapshots of the running guest must freeze its file systems through the agent first. */
  requireQuiesce: boolean;
  rngModel: 'virtio' | null;
  videoModel: 'none' | 'vga' | 'cirrus' | 'virtio';
  /** `pc` or a versioned `pc-i440fx-X.Y`. */
  machineType: string;
}

/** What a guest gets with no hw_* properties (and what guests made before they were read had). */
export const defaultGuestHardware: Readonly<GuestHardware> = {
  diskBus: 'virtio',
  scsiModel: null,
  guestAgent: false,
  requireQuiesce: false,
  rngModel: null,
  videoModel: 'none',
  machineType: 'pc',
};

export interface GuestSpec {
  /** Server uuid. */
  uuid: string;
  /** Display name (libvirt domain name `instance-XXXXXXXX` is derived by the driver). */
  name: string;
  vcpus: number;
  memoryMiB: number;
  /** `kvm` or `qemu` (TCG), as nova.conf's [libvirt] virt_type. */
  virtType: 'kvm' | 'qemu';
  disks: GuestDisk[];
  /** Absent: virtio disks, no agent channel, no RNG, no video, machine `pc` (guests made before hw_* properties were read). */
  hardware?: GuestHardware;
}

export type GuestPowerState = 'running' | 'paused' | 'shutdown' | 'crashed' | 'nostate';

export interface GuestInfo {
  uuid: string;
  powerState: GuestPowerState;
  pid: number | null;
  /** Disks currently attached (by diskId). */
  diskIds: string[];
  /** Set by adopt() for a live QEMU of this host's instances directory that has no spec.json (nothing to rebuild it from): log it, destroy it. */
  orphan?: boolean;
}

/** A driver failure the agent turns into a server fault. `code` is closed; `message` names the cause and the fix. */
export class HypervisorError extends Error {
  constructor(
    readonly code: 'CephClientMissing' | 'CephKeyMissing' | 'DiskOpenFailed' | 'QemuStartFailed' | 'QmpTimeout' | 'GuestNotFound' | 'DeviceBusy' | 'GuestAgentUnavailable' | 'MigrationFailed' | 'MigrationCancelled' | 'Internal',
    message: string,
  ) {
    super(message);
  }
}

export interface Hypervisor {
  /**
   * Starts the guest (creating its per-instance directory, console log, domain XML) and returns when
   * QEMU runs the vCPUs. Idempotent: a guest already running with this uuid is left as is.
   */
  spawn(spec: GuestSpec): Promise<GuestInfo>;
  /** ACPI power-off, retried until `timeoutMs`, then a hard stop. Already off is success. The QEMU process exits. */
  powerOff(uuid: string, options: { timeoutMs: number }): Promise<void>;
  /** Soft (ACPI shutdown, then start again with the same spec) or hard (system_reset) reboot. */
  reboot(uuid: string, spec: GuestSpec, options: { hard: boolean; timeoutMs: number }): Promise<void>;
  /** Kills the guest and removes its runtime files (not the console log unless `removeFiles`). Already gone is success. */
  destroy(uuid: string, options: { removeFiles: boolean }): Promise<void>;
  /** Hot-plugs a virtio-blk disk (blockdev-add + device_add). Already attached is success. */
  attachDisk(uuid: string, disk: GuestDisk): Promise<void>;
  /** Hot-unplugs (device_del, waits for DEVICE_DELETED up to `timeoutMs`, then blockdev-del). Not attached is success. */
  detachDisk(uuid: string, diskId: string, options: { timeoutMs: number }): Promise<void>;
  /** Current state from QMP (`query-status`), or `shutdown`/`nostate` when there is no process. */
  info(uuid: string): Promise<GuestInfo>;
  /** Guests whose QEMU runs on this host (found in the instances directory), re-attached through their QMP sockets. */
  adopt(): Promise<GuestInfo[]>;
  /** The serial console log; the last `lines` lines when given. */
  consoleLog(uuid: string, lines?: number): Promise<string>;
  /** The libvirt-style domain XML Nova would have produced for this spec (written next to the instance for inspection). */
  domainXml(spec: GuestSpec): string;
  /**
   * Asks the guest agent (hw_qemu_guest_agent) for `guest-ping` within `timeoutMs`. `answered` false
   * with the reason when the guest has no agent channel or nothing in the guest answered.
   */
  guestAgentPing(uuid: string, options: { timeoutMs: number }): Promise<{ answered: boolean; detail: string }>;
  /**
   * Freezes the guest's file systems through the agent (guest-fsfreeze-freeze), for a consistent
   * snapshot; returns how many were frozen. GuestAgentUnavailable (naming the cause) when it cannot:
   * then nothing is frozen. Pair every success with thawFilesystems.
   */
  freezeFilesystems(uuid: string, options: { timeoutMs: number }): Promise<number>;
  /** guest-fsfreeze-thaw. Not frozen is success. */
  thawFilesystems(uuid: string, options: { timeoutMs: number }): Promise<void>;
  /** Closes QMP connections without touching the guests (agent shutdown: guests keep running). */
  close(): Promise<void>;
}

/** QEMU's migration counters, as the source polls them. */
export interface LiveMigrationProgress {
  /** QEMU's: setup, active, completed, failed, cancelling, cancelled, ... */
  status: string;
  transferredBytes: number;
  remainingBytes: number;
  totalBytes: number;
  elapsedMs: number;
}

/**
 * Live migration on shared storage, a capability a driver may have (the agent refuses the tasks
 * otherwise). The QEMU driver implements it (qemu/driver.ts has each method's contract).
 */
export interface LiveMigrationCapable {
  /** Target: QEMU for `spec` started paused, waiting for the source's memory on `listen`. */
  prepareIncoming(spec: GuestSpec, listen: { host: string; port: number }): Promise<GuestInfo>;
  /** Source: sends the running guest; on success the source QEMU is gone, else the guest keeps running here. */
  migrateTo(uuid: string, target: { host: string; port: number }, options: { timeoutMs: number; pollMs?: number; maxBandwidthBytesPerS?: number; onProgress?: (progress: LiveMigrationProgress) => void }): Promise<{ totalMs: number; downtimeMs: number | null; transferredBytes: number }>;
  /** Source: cancels a migration under way (migrateTo then throws MigrationCancelled). */
  cancelMigration(uuid: string): Promise<void>;
  /** Target: after the source completed, the vCPUs run here. */
  finishIncoming(uuid: string): Promise<GuestInfo>;
}

export function canLiveMigrate(hypervisor: Hypervisor): hypervisor is Hypervisor & LiveMigrationCapable {
  const h = hypervisor as Partial<LiveMigrationCapable>;
  return typeof h.prepareIncoming === 'function' && typeof h.migrateTo === 'function' && typeof h.cancelMigration === 'function' && typeof h.finishIncoming === 'function';
}
