/**
 * Cold migration (Nova's `migrate` server action, then `confirmResize` or
 * `revertResize`) on shared storage: the guest is stopped on the source and
 * started on the destination; its volumes do not move, only their Block
 * Storage attachments do (the same bookkeeping as live migration's switch).
 *
 * The plan, as tasks on the two hosts' queues; the migration record
 * (migration_type 'migration') is the journal, and the server's `host`
 * column names the one host allowed to run its guest (an agent that starts
 * destroys any guest whose server names another host, so a crash anywhere
 * never leaves it running on two):
 * 1. `server.cold_migration.migrate` on the source: task_state
 *    resize_migrating; the guest powered off (ACPI, then hard after
 *    [compute] shutdown_timeout) and its QEMU gone; `post-migrating`, and 2.
 * 2. `server.cold_migration.finish` on the destination: resize_finish; per
 *    volume a new attachment is reserved (recorded in the record as it is
 *    made), the source's deleted, the new one connected with this host's
 *    connector and completed; the server's host becomes this host; the guest
 *    starts here if it was running (a SHUTOFF server stays off). The server is
 *    `resized` (VERIFY_RESIZE), the record `finished`.
 * 3. confirmResize: `server.cold_migration.confirm` on the source removes what
 *    is left of the guest there; the server is ACTIVE (or SHUTOFF), the
 *    record `confirmed`. With the source down, the API confirms at once and
 *    the source's agent destroys the leftovers when it returns.
 * 4. revertResize: `server.cold_migration.revert` on the destination stops the
 *    guest there, then `server.cold_migration.finish_revert` on the source
 *    moves the attachments back and starts it there: `reverted`.
 *
 * A task that fails for good leaves the record `error` and, once the guest
 * was stopped, the server in ERROR with the reason as its fault and its host
 * column naming where its attachments are: `openstack server set --state
 * active SERVER` then `openstack server reboot --hard SERVER` starts it there.
 */
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { errors, type PumiceError } from '../errors.ts';
import type { Task } from '../tasks/queue.ts';
import type { MigrationRow, MigrationStatus } from './evacuation.ts';
import type { ComputeHosts } from './hosts.ts';
import type { LiveMigrationHost } from './live-migration-agent.ts';
import type { BdmRow, ServerFault, ServerRow } from './model.ts';
import { nowIso, PowerState } from './model.ts';
import { computeQueue } from './servers.ts';

/** The tasks' payload: the migration record is the rest. */
export interface ColdMigrationPayload {
  requestId: string;
  actionId: number;
  migrationId: number;
  sourceHost: string;
  destHost: string;
}

/**
 * The first reason `server` cannot be cold-migrated to `host` (null: the scheduler picks), as the
 * fault to return; null when it can. A refusal changes nothing.
 */
export function coldMigrationRefusal(server: ServerRow, bdms: BdmRow[], host: string | null, context: { hosts: ComputeHosts; imagesType: string }): PumiceError | null {
  if (!['active', 'stopped'].includes(server.vm_state) || server.task_state !== null) {
    return errors.conflict(
      `Cannot 'migrate' instance ${server.id} while it is in vm_state ${server.vm_state}${server.task_state ? ` and task_state ${server.task_state}` : ''}; ` +
        `a cold migration needs an ACTIVE or SHUTOFF server with no task running${server.vm_state === 'resized' ? ' (confirm or revert the last migration first: openstack server migrate confirm|revert)' : ''}.`,
    );
  }
  if (!server.host) return errors.conflict(`Instance ${server.id} has no host (it was never scheduled): there is nothing to migrate.`);
  const sourceStatus = context.hosts.serviceByHost('nova-compute', server.host) ? context.hosts.hostStatus(server.host) : null;
  if (sourceStatus === null || sourceStatus === 'DOWN') {
    return errors.conflict(`Instance ${server.id} cannot be migrated: its compute host ${server.host} is ${sourceStatus?.toLowerCase() ?? 'unknown'}, and the source host stops the guest. Evacuate it instead (openstack server evacuate).`);
  }
  if (host !== null) {
    if (host === server.host) return errors.badRequest(`Instance ${server.id} already runs on ${host}: choose another target host (openstack compute service list --service nova-compute), or leave --host out and let the scheduler choose.`);
    const status = context.hosts.serviceByHost('nova-compute', host) ? context.hosts.hostStatus(host) : null;
    if (status === null) return errors.badRequest(`Compute host ${host} could not be found: choose a host from openstack compute service list --service nova-compute.`);
    // Overdue heartbeats (UNKNOWN, within service_down_time) still count as up, as in Nova and live-migration.ts.
    if (status === 'DOWN' || status === 'MAINTENANCE') return errors.badRequest(`Compute host ${host} is ${status === 'MAINTENANCE' ? 'disabled' : 'down'}: a migration needs a target that is up and enabled (openstack compute service set --enable ${host} nova-compute).`);
  }
  const localRoot = bdms.some((b) => b.boot_index === 0 && b.destination_type === 'local');
  if (localRoot && context.imagesType !== 'rbd') {
    return errors.conflict(
      `Instance ${server.id} cannot be migrated: its root disk is a file on ${server.host} (images_type = ${context.imagesType}), not shared storage, and copying disks between hosts is not implemented. ` +
        'Boot from a volume (openstack server create --boot-from-volume) or use [libvirt] images_type = rbd.',
    );
  }
  return null;
}

/** The compute agent's side: the tasks of the plan above. */
export class ColdMigrationTasks {
  constructor(private readonly h: LiveMigrationHost) {}

  register(wrap: (fn: (server: ServerRow, task: Task) => Promise<void>) => (task: Task) => Promise<void>): void {
    const q = this.h.queue;
    q.register('server.cold_migration.migrate', wrap((s, t) => this.migrate(s, t)), (task, reason) => this.fail(task, 'compute_resize_instance', reason, 'source'));
    q.register('server.cold_migration.finish', wrap((s, t) => this.finish(s, t)), (task, reason) => this.fail(task, 'compute_finish_resize', reason, 'moved'));
    q.register('server.cold_migration.confirm', wrap((s, t) => this.confirm(s, t)), (task, reason) => this.fail(task, 'compute_confirm_resize', reason, 'confirm'));
    q.register('server.cold_migration.revert', wrap((s, t) => this.revert(s, t)), (task, reason) => this.fail(task, 'compute_revert_resize', reason, 'moved'));
    q.register('server.cold_migration.finish_revert', wrap((s, t) => this.finishRevert(s, t)), (task, reason) => this.fail(task, 'compute_finish_revert_resize', reason, 'moved'));
  }

  private migration(p: ColdMigrationPayload): MigrationRow | undefined {
    return this.h.servers.migrations.get(p.migrationId);
  }

  /** Source, step 1: the guest stops here (graceful, then forced) and its QEMU goes. */
  private async migrate(server: ServerRow, task: Task): Promise<void> {
    const p = task.payload as ColdMigrationPayload;
    const migrations = this.h.servers.migrations;
    const m = this.migration(p);
    if (!m || (m.status !== 'pre-migrating' && m.status !== 'migrating')) return;
    this.h.servers.transition(server.id, ['active', 'stopped'], ['resize_prep', 'resize_migrating'], { task_state: 'resize_migrating' });
    migrations.advance(m.id, ['pre-migrating'], 'migrating');
    task.checkpoint('cold-migration.source-stopping');
    await this.h.hypervisor.powerOff(server.id, { timeoutMs: this.h.config.compute.shutdown_timeout * 1000 });
    await this.h.hypervisor.destroy(server.id, { removeFiles: false });
    // The connection copies (with secrets) stay only where the guest runs; the console log stays for the operator.
    rmSync(join(this.h.instanceDir(server.id), 'connections'), { recursive: true, force: true });
    task.complete(() => {
      if (!migrations.advance(m.id, ['migrating'], 'post-migrating')) return;
      this.h.servers.transition(server.id, ['active', 'stopped'], ['resize_migrating'], { task_state: 'resize_migrated' });
      this.h.queue.enqueue('server.cold_migration.finish', server.id, computeQueue(p.destHost), p);
    });
  }

  /** Destination, step 2: the attachments move here, the guest starts here if it ran: VERIFY_RESIZE. */
  private async finish(server: ServerRow, task: Task): Promise<void> {
    const p = task.payload as ColdMigrationPayload;
    const m = this.migration(p);
    if (!m || m.status !== 'post-migrating') return;
    const started = nowIso();
    this.h.servers.transition(server.id, ['active', 'stopped'], ['resize_migrated', 'resize_finish'], { task_state: 'resize_finish' });
    await this.moveAttachmentsHere(server, m);
    task.checkpoint('cold-migration.attachments-moved');
    // From here this host owns the guest: the source's agent would destroy a guest of it.
    this.h.servers.transition(server.id, ['active', 'stopped'], ['resize_finish'], { host: this.h.host, availability_zone: this.h.zone });
    const running = server.power_state === PowerState.RUNNING;
    if (running) await this.h.hypervisor.spawn(this.h.guestSpec(this.h.servers.row(server.id)!));
    task.complete(() => {
      this.h.servers.transition(server.id, ['active', 'stopped'], ['resize_finish'], { vm_state: 'resized', task_state: null, power_state: running ? PowerState.RUNNING : PowerState.SHUTDOWN, fault: null });
      this.h.servers.migrations.advance(m.id, ['post-migrating'], 'finished');
      this.h.servers.finishAction(p.actionId, 'compute_finish_resize', this.h.host, 'Success', `migrated from ${p.sourceHost} to ${this.h.host}${running ? '' : ' (stopped, as it was)'}`, started);
    });
    if (running) await this.h.recordRbdClients(this.h.servers.row(server.id)!);
  }

  /** Source, confirm: what is left of the guest here goes; ACTIVE (or SHUTOFF) on the destination. */
  private async confirm(server: ServerRow, task: Task): Promise<void> {
    const p = task.payload as ColdMigrationPayload;
    const m = this.migration(p);
    if (!m || m.status !== 'confirming') return;
    if (server.host !== this.h.host) {
      await this.h.hypervisor.destroy(server.id, { removeFiles: true });
      rmSync(this.h.instanceDir(server.id), { recursive: true, force: true });
    }
    task.complete(() => confirmDone(this.h, server.id, m.id, p.actionId, this.h.host));
  }

  /** Destination, revert: the guest stops here; the source takes it back (finish_revert). */
  private async revert(server: ServerRow, task: Task): Promise<void> {
    const p = task.payload as ColdMigrationPayload;
    const m = this.migration(p);
    if (!m || m.status !== 'reverting') return;
    if (server.host === this.h.host) {
      await this.h.hypervisor.powerOff(server.id, { timeoutMs: this.h.config.compute.shutdown_timeout * 1000 });
      await this.h.hypervisor.destroy(server.id, { removeFiles: true });
      rmSync(join(this.h.instanceDir(server.id), 'connections'), { recursive: true, force: true });
    }
    task.complete(() => {
      this.h.servers.migrations.recordTarget(m.id, { attachments: {} });
      this.h.queue.enqueue('server.cold_migration.finish_revert', server.id, computeQueue(p.sourceHost), p);
    });
  }

  /** Source, revert: the attachments come back, the guest starts here if it ran: as before the migration. */
  private async finishRevert(server: ServerRow, task: Task): Promise<void> {
    const p = task.payload as ColdMigrationPayload;
    const m = this.migration(p);
    if (!m || m.status !== 'reverting') return;
    const started = nowIso();
    await this.moveAttachmentsHere(server, m);
    task.checkpoint('cold-migration.attachments-back');
    this.h.servers.transition(server.id, ['resized'], ['resize_reverting'], { host: this.h.host, availability_zone: this.h.zone });
    const running = server.power_state === PowerState.RUNNING;
    if (running) await this.h.hypervisor.spawn(this.h.guestSpec(this.h.servers.row(server.id)!));
    task.complete(() => {
      this.h.servers.transition(server.id, ['resized'], ['resize_reverting'], { vm_state: running ? 'active' : 'stopped', task_state: null, power_state: running ? PowerState.RUNNING : PowerState.SHUTDOWN, fault: null });
      this.h.servers.migrations.advance(m.id, ['reverting'], 'reverted');
      this.h.servers.finishAction(p.actionId, 'compute_finish_revert_resize', this.h.host, 'Success', `back on ${this.h.host}`, started);
    });
    if (running) await this.h.recordRbdClients(this.h.servers.row(server.id)!);
  }

  /**
   * Moves every volume's attachment to this host, each step recorded so that a re-run continues:
   * a new attachment is reserved (and written into the record) before the old one is deleted; then
   * it is connected with this host's connector, completed and set in the mapping. The old host's
   * guest is already stopped, so one host at a time has the volume open.
   */
  private async moveAttachmentsHere(server: ServerRow, m: MigrationRow): Promise<void> {
    const migrations = this.h.servers.migrations;
    const journal = m.dest_attachments ? (JSON.parse(m.dest_attachments) as Record<string, string>) : {};
    const bdms = this.h.servers.bdms(server.id).filter((b) => b.destination_type === 'volume' && b.volume_id && b.status !== 'detached' && b.status !== 'detaching');
    for (const bdm of bdms) {
      if (!journal[bdm.id]) {
        const created = await this.h.blockStorage.createAttachment(server.project_id, { volumeId: bdm.volume_id!, serverId: server.id, connector: null, mode: 'rw' });
        journal[bdm.id] = created.attachment.id;
        migrations.recordTarget(m.id, { attachments: journal });
      }
      const next = journal[bdm.id]!;
      const connected = existsSync(join(this.h.instanceDir(server.id), 'connections', `${bdm.id}.json`));
      if (bdm.attachment_id === next && connected) continue;
      if (bdm.attachment_id && bdm.attachment_id !== next) {
        await this.h.blockStorage.deleteAttachment(server.project_id, bdm.attachment_id).catch((error: Error & { status?: number }) => {
          if (error.status !== 404) throw error;
        });
      }
      const info = await this.h.blockStorage.updateAttachment(server.project_id, next, this.h.connector(bdm.device_name));
      this.h.writeConnectionFile(server.id, bdm.id, info);
      await this.h.blockStorage.completeAttachment(server.project_id, next);
      this.h.setBdmAttachment(bdm.id, next, this.h.publicConnectionInfo(info));
    }
  }

  /**
   * A step failed for good. `source`: the guest was not moved (it may have been stopped): the server
   * keeps its host and vm_state, its task ends, with the reason as its fault. `moved`: the guest is
   * between hosts: ERROR with the reason; the host column names where its attachments are.
   * `confirm`: the source could not clean up; the server stays VERIFY_RESIZE for another confirm.
   */
  private fail(task: Task, event: string, reason: string, stage: 'source' | 'moved' | 'confirm'): void {
    const p = task.payload as ColdMigrationPayload;
    const fault: ServerFault = { code: 500, message: reason.slice(0, 255), details: reason, created: nowIso() };
    const open: MigrationStatus[] = ['pre-migrating', 'migrating', 'post-migrating', 'reverting'];
    if (stage === 'confirm') {
      this.h.servers.migrations.advance(p.migrationId, ['confirming'], 'finished', { reason: reason.slice(0, 2000) });
      this.h.servers.transition(task.resourceId, ['resized'], ['resize_confirming'], { task_state: null, fault: JSON.stringify(fault) });
    } else {
      this.h.servers.migrations.advance(p.migrationId, open, 'error', { reason: reason.slice(0, 2000) });
      const server = this.h.servers.row(task.resourceId);
      const stopped = stage === 'source' && server !== undefined && server.power_state !== PowerState.RUNNING;
      this.h.servers.transition(task.resourceId, null, null, { task_state: null, fault: JSON.stringify(fault), ...(stage === 'moved' ? { vm_state: 'error' } : stopped ? { vm_state: 'stopped', power_state: PowerState.SHUTDOWN } : {}) });
    }
    this.h.servers.finishAction(p.actionId, event, this.h.host, 'Error', reason);
    this.h.log(`ERROR: compute: ${task.kind} of server ${task.resourceId} on ${this.h.host} failed: ${reason}`);
  }
}

/** The end of a confirm: the server leaves VERIFY_RESIZE as its power state says; the record is `confirmed`. */
export function confirmDone(h: Pick<LiveMigrationHost, 'servers'>, serverId: string, migrationId: number, actionId: number, host: string | null): void {
  const server = h.servers.row(serverId);
  const running = server?.power_state === PowerState.RUNNING;
  h.servers.transition(serverId, ['resized'], ['resize_confirming'], { vm_state: running ? 'active' : 'stopped', task_state: null, fault: null });
  h.servers.migrations.advance(migrationId, ['confirming'], 'confirmed');
  h.servers.finishAction(actionId, 'compute_confirm_resize', host, 'Success', null);
}
