/**
 * Turns QEMU's text (stderr at start, a QMP error at hot-plug) about a disk
 * into a HypervisorError that names the cause and the fix, with QEMU's own
 * words after the explanation. Only this module reads QEMU's message text.
 */
import { HypervisorError, type GuestDisk } from '../types.ts';
import { cephClientMountTimeoutS, nbdOpenTimeoutS } from './blockdev.ts';

/**
 * QEMU's stderr without timestamps, program name and the echoed -blockdev
 * JSON (which names the node, not the cause), distinct lines, the last few.
 */
export function qemuSaid(text: string): string {
  const lines = text
    .split('\n')
    .map((line) =>
      line
        .replace(/^\d{4}-\d\d-\d\dT[\d:.]+Z\s+/, '')
        .replace(/^[^\s:]*qemu-system-[^:\s]*:\s*/, '')
        .replace(/^-(blockdev|device|object)\s+\{.*\}:\s*/, '')
        .trim(),
    )
    .filter((line) => line !== '');
  const distinct = [...new Set(lines)];
  return distinct.slice(-3).join(' / ').slice(-600) || '(nothing)';
}

export function diskOpenError(disk: GuestDisk | null, qemuText: string): HypervisorError {
  const said = `QEMU said: ${qemuSaid(qemuText)}`;
  if (/Unknown driver 'rbd'|Unknown protocol 'rbd'|block-rbd|Invalid parameter 'rbd'|driver 'rbd' is not whitelisted/i.test(qemuText)) {
    return new HypervisorError(
      'CephClientMissing',
      `QEMU on this compute host has no rbd block driver (Debian's block-rbd module, linked to librbd): install qemu-block-extra (apt-get install qemu-block-extra) and start the instance again. ${said}`,
    );
  }
  const source = disk?.source;
  if (source?.kind === 'rbd' || (!source && /error connecting|rbd/i.test(qemuText))) {
    const user = source?.kind === 'rbd' ? source.user : 'the configured user';
    const where = source?.kind === 'rbd' ? `${source.pool}/${source.image}` : 'the RBD image';
    const monitors = source?.kind === 'rbd' ? source.monitorHosts.join(', ') || '(from ceph.conf)' : '(unknown)';
    if (/Permission denied|Operation not permitted|EACCES|EPERM|key.*invalid|Invalid argument/i.test(qemuText) && /connect/i.test(qemuText)) {
      return new HypervisorError(
        'CephKeyMissing',
        `The Ceph monitors refused the cephx key of client.${user} while opening ${where}: the key given to this compute host is wrong or revoked. Put client.${user}'s current key (ceph auth get-key client.${user}) in the compute host's keyring / rbd_secret_uuid secret. ${said}`,
      );
    }
    if (/timed out|ETIMEDOUT|Connection refused|Network is unreachable|No route/i.test(qemuText)) {
      return new HypervisorError(
        'DiskOpenFailed',
        `The Ceph monitors ${monitors} did not answer within ${cephClientMountTimeoutS} s while opening ${where} as client.${user}: check that they run and are reachable from this compute host (mon_host in ceph.conf, firewall). ${said}`,
      );
    }
    if (/No such file or directory|ENOENT|error opening pool|error reading header/i.test(qemuText)) {
      return new HypervisorError(
        'DiskOpenFailed',
        `RBD image ${where} does not exist or its pool is missing (opened as client.${user}): check the volume's pool and image name. ${said}`,
      );
    }
    return new HypervisorError('DiskOpenFailed', `QEMU could not open RBD image ${where} as client.${user}. ${said}`);
  }
  if (source?.kind === 'nbd') {
    return new HypervisorError(
      'DiskOpenFailed',
      `QEMU could not open NBD export '${source.exportName}' at ${source.host}:${source.port} (tried for ${nbdOpenTimeoutS} s): check that the volume service exporting it runs and is reachable from this compute host. ${said}`,
    );
  }
  if (source?.kind === 'file') {
    return new HypervisorError('DiskOpenFailed', `QEMU could not open disk file ${source.path} (${source.format}): check that it exists and is readable by this host's QEMU. ${said}`);
  }
  return new HypervisorError('QemuStartFailed', `QEMU failed to start the guest. ${said}`);
}
