/**
 * Live migration (os-migrateLive) on shared storage.
 *
 * The pre-checks, as Nova's conductor runs them before anything moves: the
 * server's state, the target host, and shared storage for every disk. A
 * refusal changes nothing.
 *
 * The hand-off, as three tasks on the two hosts' queues, the migration record
 * being the journal (src/compute/agent.ts):
 * 1. `server.live_migration.prepare` on the target: a Block Storage attachment
 *    per volume with the target's connector (recorded in the record as it is
 *    made), QEMU started paused with -incoming on the target's
 *    live_migration_inbound_addr; then `running`, and 2. is queued.
 * 2. `server.live_migration.run` on the source: QEMU's migration, progress
 *    written to the record; an abort (`cancelling`) cancels it. On success
 *    `post-migrating` and 3. is queued; on failure or abort 4. is.
 * 3. `server.live_migration.finish` on the target: the vCPUs run there, the new
 *    attachments are completed and the source's deleted, the mappings and the
 *    server's host name the target: `completed`.
 * 4. `server.live_migration.rollback` on the target: its QEMU destroyed, its
 *    attachments deleted; the server, still running on the source, is ACTIVE
 *    again: `cancelled` or `error`.
 */
import { errors, type PumiceError } from '../errors.ts';
import type { ComputeHosts } from './hosts.ts';
import type { BdmRow, ServerRow } from './model.ts';

export interface LiveMigrationRequest {
  /** null: the scheduler picks. */
  host: string | null;
  blockMigration: boolean | 'auto';
}

/** The tasks' payload: the migration record is the rest. */
export interface LiveMigrationPayload {
  requestId: string;
  actionId: number;
  migrationId: number;
  sourceHost: string;
  destHost: string;
}

/** The first reason `server` cannot be live-migrated as asked, as the fault to return; null when it can. */
export function liveMigrationRefusal(server: ServerRow, bdms: BdmRow[], request: LiveMigrationRequest, context: { hosts: ComputeHosts; imagesType: string }): PumiceError | null {
  if (server.vm_state !== 'active' || server.task_state !== null) {
    return errors.conflict(`Cannot 'os-migrateLive' instance ${server.id} while it is in vm_state ${server.vm_state}${server.task_state ? ` and task_state ${server.task_state}` : ''}; live migration needs an ACTIVE server with no task running.`);
  }
  if (request.host !== null) {
    if (request.host === server.host) return errors.badRequest(`Instance ${server.id} already runs on ${request.host}: choose another target host (openstack compute service list --service nova-compute).`);
    const status = context.hosts.serviceByHost('nova-compute', request.host) ? context.hosts.hostStatus(request.host) : null;
    if (status === null) return errors.badRequest(`Compute host ${request.host} could not be found: choose a host from openstack compute service list --service nova-compute.`);
    // As Nova's servicegroup check: a target is refused when down or disabled; one whose heartbeat is merely
    // overdue (UNKNOWN, still within service_down_time) is up, and runs the prepare task once it heartbeats.
    if (status === 'DOWN' || status === 'MAINTENANCE') return errors.badRequest(`Compute host ${request.host} is ${status === 'MAINTENANCE' ? 'disabled' : 'down'}: a live migration needs a target that is up and enabled.`);
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
  return null;
}

function connectionType(bdm: BdmRow): string | null {
  try {
    return (JSON.parse(bdm.connection_info ?? 'null') as { driver_volume_type?: string } | null)?.driver_volume_type ?? null;
  } catch {
    return null;
  }
}
