/**
 * QEMU objects for one guest disk: the protocol node (rbd, nbd, file), the
 * format node above it, the secret / TLS objects it needs and the
 * virtio-blk-pci device, as JSON for both `-blockdev`/`-device`/`-object` on
 * the command line and `blockdev-add`/`device_add`/`object-add` over QMP, so
 * a cold-plugged and a hot-plugged disk are configured identically.
 */
import type { GuestDisk } from '../types.ts';

/** Names QEMU gives to one disk's objects; kept in devices.json so adopt() can find them again. */
export interface DiskPlacement {
  diskId: string;
  /** PCI slot on pci.0 (0x04..0x1f). */
  slot: number;
  /** Guest target name in the domain XML (`vda`, `vdb`, ...). */
  target: string;
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

export function placementFor(disk: GuestDisk, slot: number, target: string, seq: number): DiskPlacement {
  return {
    diskId: disk.diskId,
    slot,
    target,
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
