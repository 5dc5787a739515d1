/**
 * QEMU objects for one guest disk: the protocol node (rbd, nbd, file), the
 * format node above it, the secret / TLS objects it needs and the
 * virtio-blk-pci device, as JSON for both `-blockdev`/`-device`/`-object` on
 * the command line and `blockdev-add`/`device_add`/`object-add` over QMP, so
 * a cold-plugged and a hot-plugged disk are configured identically.
 */
import type { GuestDisk, GuestHardware } from '../types.ts';

/** Names QEMU gives to one disk's objects; kept in devices.json so adopt() can find them again. */
export interface DiskPlacement {
  diskId: string;
  /** PCI slot on pci.0 (0x04..0x1f) of a virtio-blk device; unused (0) for a SCSI disk. */
  slot: number;
  /** Guest target name in the domain XML (`vda`, `vdb`, ... or `sda`, ... on SCSI). */
  target: string;
  /** `scsi`: a scsi-hd on the virtio-scsi controller at `lun`. Absent: virtio-blk (devices.json written before SCSI). */
  bus?: 'scsi';
  lun?: number;
  deviceId: string;
  formatNode: string;
  protocolNode: string;
  secretId: string | null;
  tlsId: string | null;
}

export const pciSlotFirst = 0x04;
export const pciSlotLast = 0x1f;
/** librados timeouts QEMU gets: an unreachable monitor fails an open in seconds instead of freezing QEMU (QMP and the guest) for 300 s. */
export const cephClientMountTimeoutS = 5;
export const cephOsdOpTimeoutS = 30;
export const cephMonOpTimeoutS = 10;
/** NBD: give up connecting after this, and reconnect for this long after a dropped connection before failing I/O. */
export const nbdOpenTimeoutS = 5;
export const nbdReconnectDelayS = 5;

export function pciAddr(slot: number): string {
  return `0x${slot.toString(16)}`;
}

/** QEMU ids: a letter, then letters, digits, `-`, `.`, `_`. */
export function deviceIdFor(diskId: string): string {
  return `disk-${diskId.replace(/[^A-Za-z0-9._-]/g, '_')}`;
}

/** The virtio-scsi controller's id; its bus is `scsi0.0`. */
export const scsiControllerId = 'scsi0';
/** LUNs of the one SCSI target Pumice uses (QEMU's scsi-hd allows 0..16383; a limit like the PCI slots'). */
export const scsiLunMax = 255;

export function placementFor(disk: GuestDisk, slot: number, target: string, seq: number, scsi: { lun: number } | null = null): DiskPlacement {
  return {
    diskId: disk.diskId,
    slot: scsi ? 0 : slot,
    target,
    ...(scsi ? { bus: 'scsi' as const, lun: scsi.lun } : {}),
    deviceId: deviceIdFor(disk.diskId),
    // Node names are limited to 31 characters: a sequence number, never reused in one QEMU.
    formatNode: `n${seq}-fmt`,
    protocolNode: `n${seq}-src`,
    secretId: disk.source.kind === 'rbd' ? `sec${seq}` : null,
    tlsId: disk.source.kind === 'nbd' && disk.source.tlsPsk ? `tls${seq}` : null,
  };
}

function cacheOptions(cache: GuestDisk['cache']): { direct: boolean; 'no-flush': boolean } {
  // As libvirt maps <driver cache=...>: none = O_DIRECT; unsafe ignores flushes.
  return { direct: cache === 'none', 'no-flush': cache === 'unsafe' };
}

export function writeCacheFor(cache: GuestDisk['cache']): 'on' | 'off' {
  return cache === 'writethrough' ? 'off' : 'on';
}

/** The protocol node. `cephConfPath` is the driver-written ceph.conf for rbd disks. */
export function protocolNode(disk: GuestDisk, placement: DiskPlacement, paths: { cephConfPath: string | null; tlsDir: string | null }): Record<string, unknown> {
  const common = {
    'node-name': placement.protocolNode,
    cache: cacheOptions(disk.cache),
    'read-only': disk.readOnly,
    discard: disk.discard,
    'auto-read-only': false,
  };
  const source = disk.source;
  switch (source.kind) {
    case 'rbd':
      return {
        driver: 'rbd',
        pool: source.pool,
        image: source.image,
        user: source.user,
        'auth-client-required': ['cephx', 'none'],
        'key-secret': placement.secretId,
        server: source.monitorHosts.map(splitHostPort).map(({ host, port }) => ({ host, port: String(port) })),
        ...(paths.cephConfPath ? { conf: paths.cephConfPath } : {}),
        ...common,
      };
    case 'nbd':
      return {
        driver: 'nbd',
        server: { type: 'inet', host: source.host, port: String(source.port) },
        export: source.exportName,
        'open-timeout': nbdOpenTimeoutS,
        'reconnect-delay': nbdReconnectDelayS,
        ...(placement.tlsId ? { 'tls-creds': placement.tlsId } : {}),
        ...common,
      };
    case 'file':
      return { driver: 'file', filename: source.path, aio: 'threads', ...common };
  }
}

export function formatNode(disk: GuestDisk, placement: DiskPlacement): Record<string, unknown> {
  const format = disk.source.kind === 'file' ? disk.source.format : 'raw';
  return {
    driver: format,
    'node-name': placement.formatNode,
    file: placement.protocolNode,
    cache: cacheOptions(disk.cache),
    'read-only': disk.readOnly,
    discard: disk.discard,
  };
}

export function deviceFor(disk: GuestDisk, placement: DiskPlacement): Record<string, unknown> {
  if (placement.bus === 'scsi') {
    // As libvirt's <target bus='scsi'/> on a virtio-scsi controller: one target, a LUN per disk.
    return {
      driver: 'scsi-hd',
      id: placement.deviceId,
      drive: placement.formatNode,
      bus: `${scsiControllerId}.0`,
      channel: 0,
      'scsi-id': 0,
      lun: placement.lun ?? 0,
      serial: disk.serial,
      'write-cache': writeCacheFor(disk.cache),
      ...(disk.bootIndex !== undefined ? { bootindex: disk.bootIndex } : {}),
    };
  }
  return {
    driver: 'virtio-blk-pci',
    id: placement.deviceId,
    drive: placement.formatNode,
    bus: 'pci.0',
    addr: pciAddr(placement.slot),
    serial: disk.serial,
    'write-cache': writeCacheFor(disk.cache),
    ...(disk.bootIndex !== undefined ? { bootindex: disk.bootIndex } : {}),
  };
}

/** `host:port`, `[v6]:port` or a bare host (port 6789). */
export function splitHostPort(address: string): { host: string; port: number } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(address);
  if (v6) return { host: v6[1]!, port: v6[2] ? Number(v6[2]) : 6789 };
  const colon = address.lastIndexOf(':');
  if (colon > 0 && address.indexOf(':') === colon) return { host: address.slice(0, colon), port: Number(address.slice(colon + 1)) };
  return { host: address, port: 6789 };
}

/**
 * The ceph.conf QEMU reads for rbd disks: the operator's file (when given)
 * with our client timeouts appended in a `[client]` section that overrides
 * theirs, else only monitors and timeouts.
 */
export function cephConfText(options: { baseConfText: string | null; monitorHosts: string[] }): string {
  const ours = [
    '[client]',
    `client_mount_timeout = ${cephClientMountTimeoutS}`,
    `rados_osd_op_timeout = ${cephOsdOpTimeoutS}`,
    `rados_mon_op_timeout = ${cephMonOpTimeoutS}`,
    '',
  ].join('\n');
  if (options.baseConfText !== null) {
    const timeoutKey = /^\s*(client[ _]mount[ _]timeout|rados[ _]osd[ _]op[ _]timeout|rados[ _]mon[ _]op[ _]timeout)\s*=/i;
    const kept = options.baseConfText.split('\n').filter((line) => !timeoutKey.test(line));
    return `# written by pumice: the operator's ceph.conf with short client timeouts\n${kept.join('\n')}\n${ours}`;
  }
  return [
    '# written by pumice for QEMU: monitors and short client timeouts',
    '[global]',
    `mon_host = ${options.monitorHosts.join(',')}`,
    ours,
  ].join('\n');
}

// ------------------------------------------------------------------ non-disk devices of hw_* properties

/** The channel name qemu-guest-agent looks for (/dev/virtio-ports/org.qemu.guest_agent.0 in the guest). */
export const guestAgentChannelName = 'org.qemu.guest_agent.0';
/** Where the standard VGA sits on i440fx when present (QEMU's own default). */
export const videoPciSlot = 0x02;
/** The SCSI controller, virtio-serial controller and RNG share slot 3 as functions of one multifunction device: disks keep slots 0x04..0x1f. */
export const extraDevicesPciSlot = 0x03;

export interface ExtraPciDevice {
  id: 'scsi0' | 'virtio-serial0' | 'rng0';
  driver: 'virtio-scsi-pci' | 'virtio-serial-pci' | 'virtio-rng-pci';
  slot: number;
  function: number;
  /** Set on function 0 when other functions follow: the guest only probes functions > 0 of a multifunction device. */
  multifunction: boolean;
}

export function extraPciDevices(hardware: GuestHardware): ExtraPciDevice[] {
  const wanted: Pick<ExtraPciDevice, 'id' | 'driver'>[] = [];
  if (hardware.diskBus === 'scsi') wanted.push({ id: 'scsi0', driver: 'virtio-scsi-pci' });
  if (hardware.guestAgent) wanted.push({ id: 'virtio-serial0', driver: 'virtio-serial-pci' });
  if (hardware.rngModel === 'virtio') wanted.push({ id: 'rng0', driver: 'virtio-rng-pci' });
  return wanted.map((device, index) => ({ ...device, slot: extraDevicesPciSlot, function: index, multifunction: index === 0 && wanted.length > 1 }));
}

/** QEMU -device / -object / -chardev arguments for the hw_* devices (disks aside) and the video model. */
export function hardwareArgs(hardware: GuestHardware, paths: { guestAgentSocketPath: string }): string[] {
  const args: string[] = [];
  for (const device of extraPciDevices(hardware)) {
    if (device.driver === 'virtio-rng-pci') args.push('-object', JSON.stringify({ 'qom-type': 'rng-random', id: 'objrng0', filename: '/dev/urandom' }));
    args.push(
      '-device',
      JSON.stringify({
        driver: device.driver,
        id: device.id,
        bus: 'pci.0',
        addr: `${pciAddr(device.slot)}.${device.function}`,
        ...(device.multifunction ? { multifunction: true } : {}),
        ...(device.driver === 'virtio-rng-pci' ? { rng: 'objrng0' } : {}),
      }),
    );
  }
  if (hardware.guestAgent) {
    args.push('-chardev', `socket,id=charchannel0,path=${paths.guestAgentSocketPath.replace(/,/g, ',,')},server=on,wait=off`);
    args.push('-device', JSON.stringify({ driver: 'virtserialport', bus: 'virtio-serial0.0', nr: 1, chardev: 'charchannel0', id: 'channel0', name: guestAgentChannelName }));
  }
  const video = { vga: 'VGA', cirrus: 'cirrus-vga', virtio: 'virtio-vga' } as const;
  if (hardware.videoModel !== 'none') args.push('-device', JSON.stringify({ driver: video[hardware.videoModel], id: 'video0', bus: 'pci.0', addr: pciAddr(videoPciSlot) }));
  return args;
}
