/**
 * The compute agent's side of a live migration (the plan is in
 * live-migration.ts): the four tasks, on the target (prepare, finish,
 * rollback) and on the source (run). The migration record is the journal:
 * each task starts from the status it finds, and the attachments made for
 * the target are recorded as they are made, so a rollback finds all of them.
 */
import { rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import type { PumiceConfig } from '../config/config.ts';
import type { Task, TaskQueue } from '../tasks/queue.ts';
import type { BlockStorage } from './agent.ts';
import type { MigrationRow, MigrationStatus } from './evacuation.ts';
import { liveMigrationActiveStatuses } from './evacuation.ts';
import { canLiveMigrate, HypervisorError, type GuestSpec, type Hypervisor, type LiveMigrationCapable } from './hypervisor/types.ts';
import type { LiveMigrationPayload } from './live-migration.ts';
import type { BdmRow, FlavorSnapshot, ServerFault, ServerRow } from './model.ts';
import { nowIso, PowerState } from './model.ts';
import type { ServerService } from './servers.ts';
import { computeQueue } from './servers.ts';

const MiB = 1024 * 1024;
/** How often the source writes QEMU's counters into the record (it polls QEMU every 200 ms). */
const progressWriteIntervalMs = 500;

export interface RollbackPayload extends LiveMigrationPayload {
  outcome: 'cancelled' | 'error';
  reason: string;
}

/** What the live-migration tasks need of the agent that runs them (its private helpers, lent). */
export interface LiveMigrationHost {
  host: string;
  zone: string;
  config: PumiceConfig;
  queue: TaskQueue;
  servers: ServerService;
  hypervisor: Hypervisor;
  blockStorage: BlockStorage;
  log: (message: string) => void;
  guestSpec(server: ServerRow): GuestSpec;
  connector(mountpoint: string | null): Record<string, unknown>;
  instanceDir(serverId: string): string;
  /** Writes the connection (with its secrets) to this host's 0600 file only; the row keeps the source's until the switch. */
  writeConnectionFile(serverId: string, bdmId: string, info: { driver_volume_type: string; data: Record<string, unknown> }): void;
  /** The connection info without secrets, as the database keeps it. */
  publicConnectionInfo(info: { driver_volume_type: string; data: Record<string, unknown> }): string;
  setBdmAttachment(bdmId: string, attachmentId: string, connectionInfo: string): void;
  recordRbdClients(server: ServerRow): Promise<void>;
}

export class LiveMigrationTasks {
  constructor(private readonly h: LiveMigrationHost) {}

  register(wrap: (fn: (server: ServerRow, task: Task) => Promise<void>) => (task: Task) => Promise<void>): void {
    const q = this.h.queue;
    q.register('server.live_migration.prepare', wrap((s, t) => this.prepare(s, t)), (task, reason) => this.queueRollback(task.resourceId, task.payload as LiveMigrationPayload, 'error', `preparing ${this.h.host} failed: ${reason}`));
    q.register('server.live_migration.run', wrap((s, t) => this.run(s, t)), (task, reason) => this.queueRollback(task.resourceId, task.payload as LiveMigrationPayload, 'error', reason));
    q.register('server.live_migration.finish', wrap((s, t) => this.finish(s, t)), (task, reason) => this.failFinish(task, reason));
    q.register('server.live_migration.rollback', wrap((s, t) => this.rollback(s, t)), (task, reason) => this.failRollback(task, reason));
  }

  private capable(): Hypervisor & LiveMigrationCapable {
    const hv = this.h.hypervisor;
    if (!canLiveMigrate(hv)) throw new HypervisorError('Internal', `The hypervisor driver of compute host ${this.h.host} cannot live-migrate guests.`);
    return hv;
  }

  private migration(p: LiveMigrationPayload): MigrationRow | undefined {
    return this.h.servers.migrations.get(p.migrationId);
  }

  private destAttachments(m: MigrationRow): Record<string, string> {
    return m.dest_attachments ? (JSON.parse(m.dest_attachments) as Record<string, string>) : {};
  }

  private volumeBdms(serverId: string): BdmRow[] {
    return this.h.servers.bdms(serverId).filter((b) => b.destination_type === 'volume' && b.volume_id && b.status !== 'detached' && b.status !== 'detaching');
  }

  /** Target, step 1: attachments with this host's connector, QEMU waiting with -incoming. */
  private async prepare(server: ServerRow, task: Task): Promise<void> {
    const p = task.payload as LiveMigrationPayload;
    const migrations = this.h.servers.migrations;
    const m = this.migration(p);
    if (!m || (m.status !== 'queued' && m.status !== 'preparing')) return;
    const hv = this.capable();
    migrations.advance(m.id, ['queued'], 'preparing');
    // Block Storage connects one host per non-multiattach volume at a time (stricter than Cinder, which
    // lets a migration's target connect beside the source), so the target reserves the volume now and
    // connects at the switch, once the source's attachment is gone. An RBD disk's connection names the
    // image and the monitors, not the host: the target opens it with the same connection info.
    const attachments = this.destAttachments(m);
    for (const bdm of this.volumeBdms(server.id)) {
      if (!attachments[bdm.id]) {
        const created = await this.h.blockStorage.createAttachment(server.project_id, { volumeId: bdm.volume_id!, serverId: server.id, connector: null, mode: 'rw' });
        attachments[bdm.id] = created.attachment.id;
        migrations.recordTarget(m.id, { attachments });
      }
      this.h.writeConnectionFile(server.id, bdm.id, sharedConnectionInfo(bdm));
    }
    task.checkpoint('live-migration.target-attachments');
    const address = this.h.config.libvirt.live_migration_inbound_addr ?? this.h.config.DEFAULT.my_ip;
    const port = await freePort(address);
    await hv.prepareIncoming(this.h.guestSpec(server), { host: address, port });
    task.complete(() => {
      migrations.recordTarget(m.id, { address: `${address}:${port}` });
      // An abort asked meanwhile (only `running` can be aborted) cannot have happened; a vanished record ends here.
      if (migrations.advance(m.id, ['preparing'], 'running')) this.h.queue.enqueue('server.live_migration.run', server.id, computeQueue(p.sourceHost), p);
    });
  }

  /** Source, step 2: QEMU's migration, its progress in the record; an abort cancels it. */
  private async run(server: ServerRow, task: Task): Promise<void> {
    const p = task.payload as LiveMigrationPayload;
    const migrations = this.h.servers.migrations;
    const m = this.migration(p);
    if (!m) return;
    if (m.status === 'cancelling') {
      task.complete(() => this.queueRollback(server.id, p, 'cancelled', 'aborted before the copy started'));
      return;
    }
    if (m.status !== 'running' || !m.dest_address) return;
    const hv = this.capable();
    const separator = m.dest_address.lastIndexOf(':');
    const target = { host: m.dest_address.slice(0, separator), port: Number(m.dest_address.slice(separator + 1)) };
    const flavor = JSON.parse(server.flavor) as FlavorSnapshot;
    const timeoutMs = Math.max(1, flavor.ram_mib / 1024) * this.h.config.libvirt.live_migration_completion_timeout * 1000;
    const bandwidthMiBPerS = this.h.config.libvirt.live_migration_bandwidth;
    let lastWriteMs = 0;
    let cancelAsked = false;
    try {
      const result = await hv.migrateTo(server.id, target, {
        timeoutMs,
        ...(bandwidthMiBPerS > 0 ? { maxBandwidthBytesPerS: bandwidthMiBPerS * MiB } : {}),
        onProgress: (progress) => {
          if (Date.now() - lastWriteMs >= progressWriteIntervalMs) {
            lastWriteMs = Date.now();
            migrations.recordProgress(m.id, { totalBytes: progress.totalBytes, processedBytes: progress.transferredBytes, remainingBytes: progress.remainingBytes });
          }
          if (!cancelAsked && migrations.get(m.id)?.status === 'cancelling') {
            cancelAsked = true;
            void hv.cancelMigration(server.id).catch((error: Error) => this.h.log(`compute: cancelling the migration of ${server.id} failed: ${error.message}`));
          }
        },
      });
      this.h.log(`compute: server ${server.id} migrated live to ${p.destHost} in ${result.totalMs} ms (QEMU's downtime ${result.downtimeMs ?? '?'} ms)`);
      const total = migrations.get(m.id)?.memory_total_bytes ?? result.transferredBytes;
      task.complete(() => {
        migrations.recordProgress(m.id, { totalBytes: total, processedBytes: result.transferredBytes, remainingBytes: 0 });
        // Completed even when an abort came too late: the guest lives on the target now.
        migrations.advance(m.id, ['running', 'cancelling'], 'post-migrating');
        this.h.queue.enqueue('server.live_migration.finish', server.id, computeQueue(p.destHost), p);
      });
      // The source QEMU is gone (migrateTo stopped it); its runtime files and connection copies go too.
      // The console log stays: it holds the guest's output up to the switch.
      await hv.destroy(server.id, { removeFiles: false }).catch(() => undefined);
      rmSync(join(this.h.instanceDir(server.id), 'connections'), { recursive: true, force: true });
    } catch (error) {
      if (error instanceof HypervisorError && (error.code === 'MigrationCancelled' || error.code === 'MigrationFailed')) {
        const outcome = error.code === 'MigrationCancelled' ? 'cancelled' : 'error';
        task.complete(() => this.queueRollback(server.id, p, outcome, error.message));
        return;
      }
      throw error;
    }
  }

  /** Target, step 3: the vCPUs run here; the attachments move; the server names this host. */
  private async finish(server: ServerRow, task: Task): Promise<void> {
    const p = task.payload as LiveMigrationPayload;
    const migrations = this.h.servers.migrations;
    const m = this.migration(p);
    if (!m || m.status !== 'post-migrating') return;
    const started = nowIso();
    await this.capable().finishIncoming(server.id);
    task.checkpoint('live-migration.target-running');
    const attachments = this.destAttachments(m);
    for (const bdm of this.volumeBdms(server.id)) {
      const next = attachments[bdm.id];
      if (!next || bdm.attachment_id === next) continue;
      // The source's attachment ends first (its QEMU is gone), then this host's is connected and completed.
      const old = bdm.attachment_id;
      if (old) {
        await this.h.blockStorage.deleteAttachment(server.project_id, old).catch((error: Error & { status?: number }) => {
          if (error.status !== 404) throw error;
        });
      }
      const info = await this.h.blockStorage.updateAttachment(server.project_id, next, this.h.connector(bdm.device_name));
      this.h.writeConnectionFile(server.id, bdm.id, info);
      await this.h.blockStorage.completeAttachment(server.project_id, next);
      this.h.setBdmAttachment(bdm.id, next, this.h.publicConnectionInfo(info));
    }
    task.checkpoint('live-migration.attachments-moved');
    const fresh = this.h.servers.row(server.id)!;
    task.complete(() => {
      this.h.servers.transition(server.id, ['active'], ['migrating'], { host: this.h.host, availability_zone: this.h.zone, task_state: null, power_state: PowerState.RUNNING, fault: null });
      migrations.advance(m.id, ['post-migrating'], 'completed');
      this.h.servers.finishAction(p.actionId, 'compute_live_migration', this.h.host, 'Success', `live-migrated from ${p.sourceHost} to ${this.h.host}`, started);
    });
    await this.h.recordRbdClients(fresh);
  }

  /** Target, step 4: nothing of the migration stays here; the server runs on the source. */
  private async rollback(server: ServerRow, task: Task): Promise<void> {
    const p = task.payload as RollbackPayload;
    const migrations = this.h.servers.migrations;
    const m = this.migration(p);
    if (!m) return;
    const started = nowIso();
    await this.h.hypervisor.destroy(server.id, { removeFiles: true });
    for (const attachmentId of Object.values(this.destAttachments(m))) {
      await this.h.blockStorage.deleteAttachment(server.project_id, attachmentId).catch((error: Error & { status?: number }) => {
        if (error.status !== 404) throw error;
      });
    }
    if (server.host !== this.h.host) rmSync(this.h.instanceDir(server.id), { recursive: true, force: true });
    task.complete(() => {
      migrations.recordTarget(m.id, { attachments: {}, address: null });
      migrations.advance(m.id, [...liveMigrationActiveStatuses, 'error'], p.outcome, { reason: p.reason.slice(0, 2000) });
      this.h.servers.transition(server.id, ['active'], ['migrating'], { task_state: null });
      this.h.servers.finishAction(p.actionId, 'compute_rollback_live_migration_at_destination', this.h.host, p.outcome === 'cancelled' ? 'Success' : 'Error', `${p.outcome === 'cancelled' ? 'aborted' : 'failed'}: ${p.reason}; the server keeps running on ${p.sourceHost}`, started);
    });
  }

  /** Called where a task is done or failed: the target undoes its side (the guest is on the source). */
  private queueRollback(serverId: string, p: LiveMigrationPayload, outcome: RollbackPayload['outcome'], reason: string): void {
    const payload: RollbackPayload = { ...p, outcome, reason };
    this.h.queue.enqueue('server.live_migration.rollback', serverId, computeQueue(p.destHost), payload);
  }

  /** The source QEMU is gone and the target's did not take over: the server is in ERROR with the reason. */
  private failFinish(task: Task, reason: string): void {
    const p = task.payload as LiveMigrationPayload;
    this.setMigrationStatus(p, 'error', reason);
    const fault: ServerFault = { code: 500, message: reason.slice(0, 255), details: reason, created: nowIso() };
    this.h.servers.transition(task.resourceId, null, ['migrating'], { vm_state: 'error', task_state: null, fault: JSON.stringify(fault) });
    this.h.servers.finishAction(p.actionId, 'compute_live_migration', this.h.host, 'Error', reason);
    this.h.log(`compute: finishing the live migration of ${task.resourceId} on ${this.h.host} failed: ${reason}`);
  }

  /** The guest runs on the source; what the target kept is named in the record for the operator. */
  private failRollback(task: Task, reason: string): void {
    const p = task.payload as RollbackPayload;
    this.setMigrationStatus(p, 'error', `${p.reason}; then the rollback on ${this.h.host} failed: ${reason} (attachments left: ${this.migration(p)?.dest_attachments ?? 'none'})`);
    this.h.servers.transition(task.resourceId, ['active'], ['migrating'], { task_state: null });
    this.h.servers.finishAction(p.actionId, 'compute_rollback_live_migration_at_destination', this.h.host, 'Error', reason);
    this.h.log(`compute: rolling back the live migration of ${task.resourceId} on ${this.h.host} failed: ${reason}`);
  }

  private setMigrationStatus(p: LiveMigrationPayload, status: MigrationStatus, reason: string): void {
    this.h.servers.migrations.advance(p.migrationId, [...liveMigrationActiveStatuses, 'error'], status, { reason: reason.slice(0, 2000) });
  }
}

/** The connection info of a volume on shared storage (RBD), which any host opens the same way. */
function sharedConnectionInfo(bdm: BdmRow): { driver_volume_type: string; data: Record<string, unknown> } {
  const info = bdm.connection_info ? (JSON.parse(bdm.connection_info) as { driver_volume_type: string; data: Record<string, unknown> }) : null;
  if (!info || info.driver_volume_type !== 'rbd') {
    throw new HypervisorError('DiskOpenFailed', `Volume ${bdm.volume_id} is attached over '${info?.driver_volume_type ?? 'nothing'}', not RBD: it is not shared storage, so it cannot be live-migrated. Detach it first.`);
  }
  return info;
}

/** A free TCP port on `address` for QEMU's -incoming (the kernel picks; QEMU binds it right after). */
function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', (error: Error) => reject(new HypervisorError('QemuStartFailed', `No port to receive a live migration on ${address} ([libvirt] live_migration_inbound_addr, else [DEFAULT] my_ip): ${error.message}`)));
    server.listen(0, address, () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}
