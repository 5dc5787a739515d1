/**
 * Live migration's pre-checks (os-migrateLive), as Nova's conductor runs them
 * before anything moves: the server's state, the target host, and shared
 * storage for every disk. The QEMU driver can move a running guest
 * (QemuHypervisor.prepareIncoming / migrateTo / finishIncoming); the agents'
 * hand-off and the Block Storage attachment moves are not wired yet, so a
 * request that passes every check is refused as not implemented, naming what
 * to do instead. Nothing is changed by a refusal.
 */
import { errors, PumiceError } from '../errors.ts';
import type { ComputeHosts } from './hosts.ts';
import type { BdmRow, ServerRow } from './model.ts';

export interface LiveMigrationRequest {
  /** null: the scheduler would pick (not offered while nothing is wired). */
  host: string | null;
  blockMigration: boolean | 'auto';
}

/** The first reason `server` cannot be live-migrated as asked, as the fault to return. */
export function liveMigrationRefusal(server: ServerRow, bdms: BdmRow[], request: LiveMigrationRequest, context: { hosts: ComputeHosts; imagesType: string }): PumiceError {
  if (server.vm_state !== 'active' || server.task_state !== null) {
    return errors.conflict(`Cannot 'os-migrateLive' instance ${server.id} while it is in vm_state ${server.vm_state}${server.task_state ? ` and task_state ${server.task_state}` : ''}; live migration needs an ACTIVE server with no task running.`);
  }
  if (request.host !== null) {
    if (request.host === server.host) return errors.badRequest(`Instance ${server.id} already runs on ${request.host}: choose another target host (openstack compute service list --service nova-compute).`);
    const status = context.hosts.serviceByHost('nova-compute', request.host) ? context.hosts.hostStatus(request.host) : null;
    if (status === null) return errors.badRequest(`Compute host ${request.host} could not be found: choose a host from openstack compute service list --service nova-compute.`);
    if (status !== 'UP') return errors.badRequest(`Compute host ${request.host} is ${status === 'MAINTENANCE' ? 'disabled' : status.toLowerCase()}: a live migration needs a target that is up and enabled.`);
  }
  for (const bdm of bdms) {
    if (bdm.destination_type !== 'volume' || !bdm.volume_id || bdm.status === 'detached') continue;
    const type = connectionType(bdm);
    if (type !== 'rbd') {
      return errors.conflict(
        `Instance ${server.id} cannot be live-migrated: volume ${bdm.volume_id} is ${type === 'nbd' ? 'on the local backend (an NBD export of one volume host)' : `attached over '${type ?? 'unknown'}'`}, not shared storage, ` +
          `and block migration is not implemented${request.blockMigration === true ? '' : ' (block_migration auto chose it)'}. Detach the volume first, or move the server with stop + evacuate.`,
      );
    }
  }
  const localRoot = bdms.some((b) => b.boot_index === 0 && b.destination_type === 'local');
  if (localRoot && context.imagesType !== 'rbd') {
    return errors.conflict(`Instance ${server.id} cannot be live-migrated: its root disk is a qcow2 file on ${server.host} (images_type = ${context.imagesType}), not shared storage, and block migration is not implemented. Boot from a volume or use images_type = rbd.`);
  }
  return new PumiceError(
    'NotImplemented',
    `Live migration of instance ${server.id} passed its checks (shared storage for every disk) but is not wired through the compute agents yet (the QEMU driver can move a running guest; the agents' hand-off and the Block Storage attachment moves are not done). ` +
      'Not yet: move it with openstack server stop, then openstack server evacuate after the source host is down, or keep it where it is.',
  );
}

function connectionType(bdm: BdmRow): string | null {
  try {
    return (JSON.parse(bdm.connection_info ?? 'null') as { driver_volume_type?: string } | null)?.driver_volume_type ?? null;
  } catch {
    return null;
  }
}
