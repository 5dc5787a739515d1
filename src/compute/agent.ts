/**
 * The compute agent (role `compute`, one per host, nova-compute's job): it
 * heartbeats, reports the host's resources, runs the server tasks queued for
 * its host, and keeps the server rows in step with the guests it runs.
 *
 * Every task is resumable: each step records what it made (volume ids,
 * attachment ids, connection info, disks) in the block device mapping rows
 * before the next step, so a task re-run after a crash continues instead of
 * starting over. Guests run as detached QEMU processes: they survive the
 * agent, and a restarted agent adopts them through their QMP sockets.
 */
import { execFile } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { cpus, hostname, totalmem } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import type { PumiceConfig } from '../config/config.ts';
import { CephConfigProblem, resolveCephClient } from '../ceph/conf.ts';
import type { Db } from '../db/db.ts';
import type { Task, TaskQueue } from '../tasks/queue.ts';
import { resourceStates } from '../state/owner.ts';
import type { ImageServiceClient } from '../volume/images.ts';
import { parseRbdLocation } from '../volume/images.ts';
import type { ComputeHosts } from './hosts.ts';
import { computeBinary } from './hosts.ts';
import type { GuestDisk, GuestHardware, GuestSpec, Hypervisor } from './hypervisor/types.ts';
import { guestHardwareFromImage, HardwarePropertyError } from './hardware.ts';
import { HypervisorError } from './hypervisor/types.ts';
import type { BdmRow, FlavorSnapshot, ServerFault, ServerRow } from './model.ts';
import { nowIso, PowerState } from './model.ts';
import type { ServerService } from './servers.ts';
import { computeQueue, releaseQueue, type EvacuatePayload } from './servers.ts';
import { fenceRbdDisks, rbdWatchers, unfence, type FenceRecord, type RbdDiskRef } from './evacuation.ts';
import { ColdMigrationTasks } from './cold-migration.ts';
import { LiveMigrationTasks, type LiveMigrationHost } from './live-migration-agent.ts';
import { MigrationProbeListener, parseProbeReport, probeMigrationTargets } from './migration-probe.ts';

const execFileAsync = promisify(execFile);
const GiB = 1024 ** 3;

/** What the agent needs of Block Storage (Cinder's attachments API, 3.44+), over HTTP as Nova uses it. */
export interface BlockStorage {
  getVolume(projectId: string, volumeId: string): Promise<{ id: string; status: string; size: number }>;
  createVolume(projectId: string, input: { size: number; imageRef?: string; name?: string; volume_type?: string; availability_zone?: string }): Promise<{ id: string; status: string }>;
  deleteVolume(projectId: string, volumeId: string): Promise<void>;
  createAttachment(projectId: string, input: { volumeId: string; serverId: string; connector?: Record<string, unknown> | null; mode?: 'rw' | 'ro' }): Promise<{ attachment: { id: string }; connectionInfo: { driver_volume_type: string; data: Record<string, unknown> } | null }>;
  updateAttachment(projectId: string, attachmentId: string, connector: Record<string, unknown>): Promise<{ driver_volume_type: string; data: Record<string, unknown> }>;
  completeAttachment(projectId: string, attachmentId: string): Promise<void>;
  deleteAttachment(projectId: string, attachmentId: string): Promise<void>;
}

/** A failure the user must see on the server (fault) with the fix; not retried. */
/** How long after a build the guest agent (hw_qemu_guest_agent) has to answer before 'no agent answered' is recorded. */
const guestAgentWaitMs = 60_000;

export class BuildError extends Error {
  constructor(message: string, readonly code = 500) {
    super(message);
  }
}

export interface ComputeAgentOptions {
  db: Db;
  config: PumiceConfig;
  queue: TaskQueue;
  servers: ServerService;
  hosts: ComputeHosts;
  hypervisor: Hypervisor;
  blockStorage: BlockStorage;
  images: ImageServiceClient;
  /** An admin token of the cloud for the agent's own calls (images, volumes), as Nova's service user. */
  serviceToken: () => string;
  virt: { virtType: 'kvm' | 'qemu'; reason: string; qemuVersion: number };
  log: (message: string) => void;
  /** Seconds between power-state checks of the guests (Nova's sync_power_state_interval is 600; guests here are watched closer). */
  powerSyncIntervalS?: number;
}

/** A compute host that does not accept a TCP connection within this is unreachable for live migration. */
const migrationProbeTimeoutMs = 1000;

export class ComputeAgent {
  readonly host: string;
  private readonly zone: string;
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;
  private powerSyncRunning = false;
  /** Servers a task of this agent is working on: the power sync leaves them alone. */
  private readonly busy = new Set<string>();
  /** The other compute hosts probe this listener to learn they reach our live-migration address. */
  private readonly migrationProbe = new MigrationProbeListener();
  private migrationProbeAddress: { address: string; port: number } | null = null;

  constructor(private readonly o: ComputeAgentOptions) {
    this.host = o.config.DEFAULT.host;
    this.zone = o.config.compute.default_availability_zone;
  }

  async start(): Promise<void> {
    mkdirSync(this.o.config.compute.instances_path, { recursive: true, mode: 0o700 });
    this.heartbeat();
    await this.reportNode();
    await this.adopt();
    const q = this.o.queue;
    const wrap = (fn: (server: ServerRow, task: Task) => Promise<void>) => async (task: Task) => {
      const server = this.o.servers.row(task.resourceId);
      if (!server) return;
      this.busy.add(server.id);
      try {
        await fn(server, task);
      } finally {
        this.busy.delete(server.id);
      }
    };
    q.register('server.build', wrap((s, t) => this.build(s, t)), (task, reason) => this.failTask(task, 'compute__do_build_and_run_instance', reason, { vm_state: 'error' }));
    q.register('server.stop', wrap((s, t) => this.stopServer(s, t)), (task, reason) => this.failTask(task, 'compute_stop_instance', reason, {}));
    q.register('server.start', wrap((s, t) => this.startServer(s, t)), (task, reason) => this.failTask(task, 'compute_start_instance', reason, {}));
    q.register('server.reboot', wrap((s, t) => this.rebootServer(s, t)), (task, reason) => this.failTask(task, 'compute_reboot_instance', reason, {}));
    q.register('server.rebuild', wrap((s, t) => this.rebuildServer(s, t)), (task, reason) => this.failTask(task, 'compute_rebuild_instance', reason, { vm_state: 'error' }));
    q.register('server.delete', wrap((s, t) => this.deleteServer(s, t)), (task, reason) => this.failTask(task, 'compute_terminate_instance', reason, { vm_state: 'error' }));
    q.register('server.attach', wrap((s, t) => this.attachVolume(s, t)), (task, reason) => this.failAttach(task, reason));
    q.register('server.detach', wrap((s, t) => this.detachVolume(s, t)), (task, reason) => this.failDetach(task, reason));
    q.register('server.evacuate', wrap((s, t) => this.evacuateServer(s, t)), (task, reason) => this.failEvacuate(task, reason));
    new LiveMigrationTasks(this.liveMigrationHost()).register(wrap);
    new ColdMigrationTasks(this.liveMigrationHost()).register(wrap);
    q.register('server.release_volumes', async (task) => {
      const server = this.o.db.get<ServerRow>('SELECT * FROM servers WHERE id = ?', task.resourceId);
      if (server) await this.releaseVolumes(server, this.o.servers.bdms(server.id));
    }, (task, reason) => this.o.log(`WARNING: compute: releasing the volumes of deleted server ${task.resourceId} failed: ${reason}`));
    q.start([computeQueue(this.host), releaseQueue]);
    const interval = this.o.config.DEFAULT.report_interval * 1000;
    this.timers.push(setInterval(() => this.heartbeat(), interval));
    this.timers.push(setInterval(() => void this.reportNode().catch((e: Error) => this.o.log(`WARNING: compute: node report failed: ${e.message}`)), 60_000));
    this.timers.push(setInterval(() => void this.syncPowerStates().then(() => this.cleanupEvacuated()), (this.o.powerSyncIntervalS ?? 5) * 1000));
    for (const t of this.timers) t.unref();
  }

  /** Stops taking tasks; guests keep running (a restarted agent adopts them). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    await this.migrationProbe.close();
    await this.o.queue.stop();
    await this.o.hypervisor.close();
  }

  private heartbeat(): void {
    if (this.stopped) return;
    try {
      this.o.hosts.heartbeat(computeBinary, this.host, this.zone);
    } catch (error) {
      this.o.log(`WARNING: compute: heartbeat failed: ${(error as Error).message}`);
    }
  }

  // ---- host resources ----

  async reportNode(): Promise<void> {
    const path = this.o.config.compute.instances_path;
    const fs = statfsSync(path);
    const localGiB = Math.floor((fs.blocks * fs.bsize) / GiB);
    const localFreeGiB = Math.floor((fs.bavail * fs.bsize) / GiB);
    let diskSource: 'local' | 'rbd' = 'local';
    let diskTotalGiB = localGiB;
    let diskFreeGiB = localFreeGiB;
    let diskDetail: Record<string, unknown> = { source: 'local', path, total_bytes: fs.blocks * fs.bsize, free_bytes: fs.bavail * fs.bsize };
    if (this.o.config.libvirt.images_type === 'rbd') {
      try {
        const rbd = await this.rbdPoolCapacity();
        diskSource = 'rbd';
        diskTotalGiB = Math.floor(rbd.usableTotalBytes / GiB);
        diskFreeGiB = Math.floor(rbd.maxAvailBytes / GiB);
        diskDetail = { source: 'rbd', ...rbd };
      } catch (error) {
        diskDetail = { source: 'local', path, rbd_error: (error as Error).message };
      }
    }
    this.o.hosts.report(this.host, {
      hypervisorHostname: this.host,
      hypervisorType: 'QEMU',
      hypervisorVersion: this.o.virt.qemuVersion,
      // The address the other hosts reach this one at ([DEFAULT] my_ip), as Nova reports it.
      hostIp: this.o.config.DEFAULT.my_ip,
      virtType: this.o.virt.virtType,
      virtTypeReason: this.o.virt.reason,
      vcpus: cpus().length,
      memoryMiB: Math.floor(totalmem() / 1024 / 1024),
      localGiB,
      diskSource,
      diskTotalGiB,
      diskFreeGiB,
      diskDetail: { ...diskDetail, instances_path: path },
      cpuInfo: { arch: 'x86_64', model: cpus()[0]?.model ?? 'unknown', vendor: 'unknown', topology: { cells: 1, sockets: 1, cores: cpus().length, threads: 1 }, features: [] },
    });
    await this.probeMigrationPeers();
  }

  /**
   * Listens for the other hosts' probes (once) and probes theirs, each bounded by
   * migrationProbeTimeoutMs; the result goes to compute_nodes.report for `pumice doctor`. A problem is
   * logged, never thrown: the node report goes on.
   */
  private async probeMigrationPeers(): Promise<void> {
    try {
      this.migrationProbeAddress ??= await this.migrationProbe.start(this.o.config.libvirt.live_migration_inbound_addr ?? this.o.config.DEFAULT.my_ip);
      const targets = this.o.hosts.services({ binary: computeBinary })
        .filter((s) => s.host !== this.host && this.o.hosts.isUp(s))
        .flatMap((s) => {
          const probe = parseProbeReport(this.o.hosts.node(s.host)?.report).migration_probe;
          return probe ? [{ host: s.host, ...probe }] : [];
        });
      const reach = await probeMigrationTargets(targets, migrationProbeTimeoutMs);
      this.o.hosts.recordMigrationProbe(this.host, { migration_probe: this.migrationProbeAddress, migration_reach: reach });
    } catch (error) {
      this.o.log(`WARNING: compute: live-migration probe of the other hosts failed: ${(error as Error).message}`);
    }
  }

  /** The vms pool's space as Ceph accounts it: raw capacity divided by the pool's replicas (3.5 TB raw with 2 replicas is 1.75 TB). */
  private async rbdPoolCapacity(): Promise<{ pool: string; replicas: number; rawTotalBytes: number; usableTotalBytes: number; maxAvailBytes: number; storedBytes: number }> {
    const pool = this.o.config.libvirt.images_rbd_pool;
    const client = this.cephClient();
    const args = ['--id', client.user, '-c', client.confPath, '--keyring', client.keyringPath, '--format', 'json', '--connect-timeout', '10'];
    const df = JSON.parse((await execFileAsync('ceph', ['df', ...args], { timeout: 20_000 })).stdout) as {
      stats: { total_bytes: number };
      pools: { name: string; stats: { stored: number; max_avail: number; bytes_used: number } }[];
    };
    const size = JSON.parse((await execFileAsync('ceph', ['osd', 'pool', 'get', pool, 'size', ...args], { timeout: 20_000 })).stdout) as { size: number };
    const entry = df.pools.find((p) => p.name === pool);
    if (!entry) throw new Error(`pool ${pool} ([libvirt] images_rbd_pool) does not exist`);
    const replicas = Math.max(1, size.size);
    return { pool, replicas, rawTotalBytes: df.stats.total_bytes, usableTotalBytes: Math.floor(df.stats.total_bytes / replicas), maxAvailBytes: entry.stats.max_avail, storedBytes: entry.stats.stored };
  }

  private cephClient(user = this.o.config.libvirt.rbd_user ?? 'cinder') {
    try {
      return resolveCephClient({ confPath: this.o.config.libvirt.images_rbd_ceph_conf, user, keyringPath: this.o.config.libvirt.rbd_keyring });
    } catch (error) {
      if (error instanceof CephConfigProblem) {
        throw new BuildError(`The Ceph client on compute host ${this.host} is not set up for user client.${user}: ${error.message} ([libvirt] images_rbd_ceph_conf, rbd_user, rbd_keyring)`);
      }
      throw error;
    }
  }

  // ---- adoption and power state ----

  private async adopt(): Promise<void> {
    const guests = await this.o.hypervisor.adopt();
    const known = new Set<string>();
    for (const guest of guests) {
      const server = this.o.db.get<ServerRow>('SELECT * FROM servers WHERE id = ?', guest.uuid);
      if (!server) {
        this.o.log(`compute: orphan guest ${guest.uuid} (QEMU pid ${guest.pid ?? '?'}) runs on host ${this.host} with no server record; it is left running: stop it by hand if it is not wanted`);
        continue;
      }
      if (server.deleted_at || server.host !== this.host) {
        this.o.log(`compute: guest ${guest.uuid} (pid ${guest.pid ?? '?'}) belongs to a server that is ${server.deleted_at ? 'deleted' : `on host ${server.host}`}: destroying it`);
        await this.o.hypervisor.destroy(guest.uuid, { removeFiles: server.deleted_at !== null });
        continue;
      }
      known.add(guest.uuid);
      this.o.log(`compute: adopted guest of server ${guest.uuid} (pid ${guest.pid ?? '?'}, ${guest.powerState})`);
    }
    await this.syncPowerStates();
    await this.cleanupEvacuated();
  }

  private cleaning = false;

  /**
   * Servers evacuated away from this host (it was dead or cut off): their old guests are destroyed
   * (their disks and volumes are not touched: the volumes are attached elsewhere now, and were
   * fenced), their local connection files removed, and only then the blocklist entries of the
   * fence are removed. Runs when the agent starts and with every power sync, so a host whose
   * agent survived a partition cleans up as soon as it can reach the database again.
   */
  async cleanupEvacuated(): Promise<void> {
    if (this.cleaning || this.stopped) return;
    this.cleaning = true;
    try {
      for (const migration of this.o.servers.migrations.uncleanedFrom(this.host)) {
        const server = this.o.db.get<ServerRow>('SELECT * FROM servers WHERE id = ?', migration.server_id);
        try {
          if (!server || server.host !== this.host) {
            // Its instance directory goes too (as Nova's destroy of evacuated instances without shared storage): a local
            // qcow2 root (rebuilt from the image on the new host), connection files, logs. Volumes and RBD disks are not in it.
            await this.o.hypervisor.destroy(migration.server_id, { removeFiles: true });
            rmSync(this.instanceDir(migration.server_id), { recursive: true, force: true });
            this.o.log(`compute: the old guest of server ${migration.server_id}, evacuated to ${migration.dest_compute}, is destroyed on ${this.host} and its local files removed (its volumes and shared disks were left alone)`);
          }
          const fence = migration.fence ? (JSON.parse(migration.fence) as FenceRecord) : null;
          if (fence && fence.blocklisted.length > 0) {
            await unfence(this.cephClient(fence.cephUser ?? undefined), fence.blocklisted.map((b) => b.address), this.o.log);
          }
          this.o.servers.migrations.markSourceCleaned(migration.id);
        } catch (error) {
          this.o.log(`compute: cleaning up evacuated server ${migration.server_id} on ${this.host} failed (retried): ${(error as Error).message}`);
        }
      }
    } finally {
      this.cleaning = false;
    }
  }

  /** Guests that powered themselves off (or vanished) make their servers SHUTOFF, as Nova's power sync does. */
  async syncPowerStates(): Promise<void> {
    if (this.powerSyncRunning || this.stopped) return;
    this.powerSyncRunning = true;
    try {
      const rows = this.o.db.all<ServerRow>("SELECT * FROM servers WHERE host = ? AND deleted_at IS NULL AND vm_state IN ('active', 'stopped') AND task_state IS NULL", this.host);
      for (const row of rows) {
        if (this.busy.has(row.id)) continue;
        const info = await this.o.hypervisor.info(row.id).catch(() => null);
        if (!info) continue;
        const power = info.powerState === 'running' ? PowerState.RUNNING : info.powerState === 'paused' ? PowerState.PAUSED : info.powerState === 'crashed' ? PowerState.CRASHED : PowerState.SHUTDOWN;
        if (row.vm_state === 'active' && power === PowerState.SHUTDOWN) {
          if (this.o.servers.transition(row.id, ['active'], [null], { vm_state: 'stopped', power_state: PowerState.SHUTDOWN })) {
            this.o.log(`compute: server ${row.id} was found powered off (the guest shut down or QEMU exited): it is now SHUTOFF`);
            // A guest that powered off inside keeps its QEMU (-no-shutdown): stop it so start is a clean boot.
            await this.o.hypervisor.powerOff(row.id, { timeoutMs: 1000 }).catch(() => undefined);
          }
        } else if (power !== row.power_state) {
          this.o.servers.transition(row.id, [row.vm_state], [null], { power_state: power });
        }
      }
    } finally {
      this.powerSyncRunning = false;
    }
  }

  // ---- tasks ----

  private failTask(task: Task, event: string, reason: string, changes: { vm_state?: 'error' }): void {
    const payload = task.payload as { actionId?: number };
    const server = this.o.servers.row(task.resourceId);
    if (!server) return;
    const fault: ServerFault = { code: 500, message: reason.slice(0, 255), details: reason, created: nowIso() };
    this.o.servers.transition(server.id, null, null, { task_state: null, fault: JSON.stringify(fault), ...(changes.vm_state ? { vm_state: changes.vm_state } : {}) });
    if (payload.actionId) this.o.servers.finishAction(payload.actionId, event, this.host, 'Error', reason);
    this.o.log(`ERROR: compute: ${task.kind} of server ${server.id} failed: ${reason}`);
  }

  private failAttach(task: Task, reason: string): void {
    const payload = task.payload as { actionId?: number; bdmId: string };
    const bdm = this.o.db.get<BdmRow>('SELECT * FROM block_device_mappings WHERE id = ?', payload.bdmId);
    if (bdm) {
      // Undo the reservation so the volume is usable again; the mapping is dropped as Nova does.
      if (bdm.attachment_id) void this.o.blockStorage.deleteAttachment(this.projectOf(bdm.server_id), bdm.attachment_id).catch(() => undefined);
      this.o.db.run('DELETE FROM block_device_mappings WHERE id = ?', bdm.id);
    }
    if (payload.actionId) this.o.servers.finishAction(payload.actionId, 'compute_attach_volume', this.host, 'Error', reason);
    this.o.log(`ERROR: compute: attaching a volume to server ${task.resourceId} failed: ${reason}`);
  }

  /**
   * An evacuation that failed for good: the migration record says why. Before the fence nothing
   * changed (the server stays on its dead host, with the reason as its fault, and may be evacuated
   * again); after it the server is in ERROR with the reason.
   */
  private failEvacuate(task: Task, reason: string): void {
    const payload = task.payload as EvacuatePayload;
    const migration = this.o.servers.migrations.get(payload.migrationId);
    const server = this.o.servers.row(task.resourceId);
    if (migration && migration.status !== 'done') this.o.servers.migrations.advance(migration.id, ['accepted', 'fenced', 'rebuilding'], 'failed', { reason: reason.slice(0, 2000) });
    if (server) {
      const fault: ServerFault = { code: 500, message: reason.slice(0, 255), details: reason, created: nowIso() };
      const untouched = !migration || migration.status === 'accepted';
      this.o.servers.transition(server.id, null, null, { task_state: null, fault: JSON.stringify(fault), ...(untouched ? {} : { vm_state: 'error' }) });
    }
    this.o.servers.finishAction(payload.actionId, 'compute_rebuild_instance', this.host, 'Error', reason);
    this.o.log(`ERROR: compute: evacuation of server ${task.resourceId} failed: ${reason}`);
  }

  private failDetach(task: Task, reason: string): void {
    const payload = task.payload as { actionId?: number; bdmId: string };
    resourceStates(this.o.db).blockDeviceMappings.transition(payload.bdmId, ['detaching'], 'attached');
    if (payload.actionId) this.o.servers.finishAction(payload.actionId, 'compute_detach_volume', this.host, 'Error', reason);
    this.o.log(`ERROR: compute: detaching a volume from server ${task.resourceId} failed: ${reason}`);
  }

  private projectOf(serverId: string): string {
    return this.o.db.get<{ project_id: string }>('SELECT project_id FROM servers WHERE id = ?', serverId)?.project_id ?? '';
  }

  /** os-brick's connector as Nova sends it; `mountpoint` is the device name Cinder shows in the attachment. */
  private connector(mountpoint: string | null = null): Record<string, unknown> {
    return { platform: 'x86_64', os_type: 'linux', host: this.host, ip: this.o.config.DEFAULT.my_ip, initiator: null, multipath: false, do_local_attach: false, mode: 'rw', ...(mountpoint ? { mountpoint } : {}) };
  }

  /** Sets a mapping's other columns; its status moves through its state owner. */
  private updateBdm(id: string, changes: Partial<Pick<BdmRow, 'volume_id' | 'attachment_id' | 'connection_info'>>): void {
    for (const [key, value] of Object.entries(changes)) this.o.db.run(`UPDATE block_device_mappings SET ${key} = ? WHERE id = ?`, value as string | null, id);
  }

  private async waitVolume(projectId: string, volumeId: string, wanted: string[], timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let delay = 100;
    for (;;) {
      const volume = await this.o.blockStorage.getVolume(projectId, volumeId);
      if (wanted.includes(volume.status)) return;
      if (volume.status === 'error' || volume.status.startsWith('error')) {
        throw new BuildError(`Volume ${volumeId} went to '${volume.status}' while the server was built: see openstack volume message list (or cinder message-list) for the reason.`);
      }
      if (Date.now() > deadline) throw new BuildError(`Volume ${volumeId} did not become ${wanted.join('/')} within ${Math.round(timeoutMs / 1000)} s (it is '${volume.status}').`);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 2000);
    }
  }

  /** Makes every volume of the server exist and be connected to this host; records each step in its mapping. */
  private async connectVolumes(server: ServerRow): Promise<void> {
    for (const bdm of this.o.servers.bdms(server.id)) {
      if (bdm.destination_type !== 'volume' || bdm.status === 'detached' || bdm.status === 'detaching') continue;
      let volumeId = bdm.volume_id;
      if (!volumeId) {
        const created = await this.o.blockStorage.createVolume(server.project_id, {
          size: bdm.volume_size_gib ?? 1,
          ...(bdm.source_type === 'image' && bdm.image_id ? { imageRef: bdm.image_id } : {}),
          ...(bdm.volume_type ? { volume_type: bdm.volume_type } : {}),
          name: '',
        });
        volumeId = created.id;
        this.updateBdm(bdm.id, { volume_id: volumeId });
      }
      // Creating from an image can take long; the bound grows with the size.
      await this.waitVolume(server.project_id, volumeId, ['available', 'reserved', 'attaching', 'in-use'], 300_000 + (bdm.volume_size_gib ?? 1) * 30_000);
      let attachmentId = bdm.attachment_id;
      let connected = bdm.connection_info !== null && existsSync(this.connectionFile(server.id, bdm.id));
      if (!attachmentId) {
        const created = await this.o.blockStorage.createAttachment(server.project_id, { volumeId, serverId: server.id, connector: this.connector(bdm.device_name), mode: 'rw' });
        attachmentId = created.attachment.id;
        this.updateBdm(bdm.id, { attachment_id: attachmentId });
        if (created.connectionInfo) {
          this.storeConnection(server.id, bdm.id, created.connectionInfo);
          connected = true;
        }
      }
      if (!connected) {
        // Also after a restart that lost the host's copy: Block Storage connects the attachment again.
        this.storeConnection(server.id, bdm.id, await this.o.blockStorage.updateAttachment(server.project_id, attachmentId, this.connector(bdm.device_name)));
      }
    }
  }

  private connectionFile(serverId: string, bdmId: string): string {
    return join(this.instanceDir(serverId), 'connections', `${bdmId}.json`);
  }

  /**
   * Connection info carries secrets (an NBD export name, TLS keys): it stays on the host that uses
   * it, in a 0600 file; the database keeps the same info without them, for operators to read.
   */
  private storeConnection(serverId: string, bdmId: string, info: { driver_volume_type: string; data: Record<string, unknown> }): void {
    this.writeConnectionFile(serverId, bdmId, info);
    this.updateBdm(bdmId, { connection_info: publicConnectionInfo(info) });
  }

  private writeConnectionFile(serverId: string, bdmId: string, info: { driver_volume_type: string; data: Record<string, unknown> }): void {
    const dir = join(this.instanceDir(serverId), 'connections');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = this.connectionFile(serverId, bdmId);
    writeFileSync(`${file}.tmp`, JSON.stringify(info), { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  }

  /** The agent's helpers the live-migration tasks use (live-migration-agent.ts). */
  private liveMigrationHost(): LiveMigrationHost {
    return {
      host: this.host,
      zone: this.zone,
      config: this.o.config,
      queue: this.o.queue,
      servers: this.o.servers,
      hypervisor: this.o.hypervisor,
      blockStorage: this.o.blockStorage,
      log: this.o.log,
      guestSpec: (server) => this.guestSpec(server),
      connector: (mountpoint) => this.connector(mountpoint),
      instanceDir: (serverId) => this.instanceDir(serverId),
      writeConnectionFile: (serverId, bdmId, info) => this.writeConnectionFile(serverId, bdmId, info),
      publicConnectionInfo,
      setBdmAttachment: (bdmId, attachmentId, connectionInfo) => this.updateBdm(bdmId, { attachment_id: attachmentId, connection_info: connectionInfo }),
      recordRbdClients: (server) => this.recordRbdClients(server),
    };
  }

  private loadConnection(bdm: BdmRow): { driver_volume_type: string; data: Record<string, unknown> } {
    try {
      return JSON.parse(readFileSync(this.connectionFile(bdm.server_id, bdm.id), 'utf8')) as { driver_volume_type: string; data: Record<string, unknown> };
    } catch {
      throw new BuildError(`The connection of volume ${bdm.volume_id} to server ${bdm.server_id} is not on compute host ${this.host} (${this.connectionFile(bdm.server_id, bdm.id)}); stop and start the server to connect it again.`);
    }
  }

  private async completeVolumes(server: ServerRow): Promise<void> {
    for (const bdm of this.o.servers.bdms(server.id)) {
      if (bdm.destination_type !== 'volume' || !bdm.attachment_id || bdm.status !== 'pending') continue;
      await this.o.blockStorage.completeAttachment(server.project_id, bdm.attachment_id);
      resourceStates(this.o.db).blockDeviceMappings.transition(bdm.id, ['pending'], 'attached');
    }
  }

  private instanceDir(serverId: string): string {
    return join(this.o.config.compute.instances_path, serverId);
  }

  private rootDiskName(serverId: string): string {
    return `${serverId}_disk`;
  }

  /** The ephemeral root disk of a server booted from an image: a COW clone in the vms pool, or a qcow2 overlay on a cached base. */
  private async prepareRootDisk(server: ServerRow, imageId: string, recreate: boolean): Promise<void> {
    const flavor = JSON.parse(server.flavor) as FlavorSnapshot;
    const token = this.o.serviceToken();
    const image = await this.o.images.show(token, imageId).catch((error: Error) => {
      throw new BuildError(`Image ${imageId} could not be read from the image service: ${error.message}`);
    });
    const virtualBytes = image.virtualSize ?? image.size ?? 0;
    const rootBytes = Math.max(flavor.root_gib * GiB, virtualBytes);
    if (this.o.config.libvirt.images_type === 'rbd') {
      const client = this.cephClient();
      const pool = this.o.config.libvirt.images_rbd_pool;
      const name = this.rootDiskName(server.id);
      const rbd = (args: string[]) => execFileAsync('rbd', ['--id', client.user, '-c', client.confPath, '--keyring', client.keyringPath, ...args], { timeout: 120_000 });
      const exists = await rbd(['info', `${pool}/${name}`]).then(() => true, () => false);
      if (exists && !recreate) return;
      if (exists) await rbd(['rm', '--no-progress', `${pool}/${name}`]);
      const location = parseRbdLocation(image.directUrl);
      if (image.diskFormat !== 'raw') {
        throw new BuildError(`Image ${imageId} is ${image.diskFormat}; a root disk in RBD needs a raw image (the guest would find an unbootable disk). Convert it to raw and upload it again.`);
      }
      if (location) {
        // Copy-on-write: the root disk costs nothing until the guest writes (Nova's images_type = rbd clone path).
        await rbd(['clone', `${location.pool}/${location.image}@${location.snapshot}`, `${pool}/${name}`]).catch((error: Error & { stderr?: string }) => {
          throw new BuildError(`Cloning image ${imageId} (${location.pool}/${location.image}@${location.snapshot}) into ${pool}/${name} failed: ${(error.stderr ?? error.message).trim()}. Check that client.${client.user} may read pool ${location.pool} and write pool ${pool}.`);
        });
      } else {
        const file = await this.cachedImage(imageId, token);
        await execFileAsync('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', '-n', file, `rbd:${pool}/${name}:id=${client.user}:conf=${client.confPath}:keyring=${client.keyringPath}`], { timeout: 3600_000 }).catch(async () => {
          await rbd(['import', '--no-progress', file, `${pool}/${name}`]);
        });
      }
      if (rootBytes > virtualBytes) await rbd(['resize', '--no-progress', '--size', `${Math.ceil(rootBytes / 1024 / 1024)}M`, `${pool}/${name}`]);
      return;
    }
    const dir = this.instanceDir(server.id);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const disk = join(dir, 'disk');
    if (existsSync(disk) && !recreate) return;
    const base = await this.cachedImage(imageId, token);
    const format = image.diskFormat === 'qcow2' ? 'qcow2' : 'raw';
    rmSync(disk, { force: true });
    await execFileAsync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', format, '-b', base, `${disk}.tmp`, String(rootBytes)]);
    renameSync(`${disk}.tmp`, disk);
  }

  /** Downloads of images into the cache under way: concurrent builds (an evacuation of a whole host) share one. */
  private readonly imageDownloads = new Map<string, Promise<string>>();

  /**
   * Image bytes cached under instances_path/_base (Nova's image cache), downloaded once per image:
   * concurrent callers wait for the same download (before, each wrote the same `.part` file and all
   * renames but the first failed with ENOENT, so evacuating several servers of one image failed).
   */
  private async cachedImage(imageId: string, token: string): Promise<string> {
    const dir = join(this.o.config.compute.instances_path, '_base');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const path = join(dir, imageId);
    if (existsSync(path)) return path;
    let download = this.imageDownloads.get(imageId);
    if (!download) {
      download = (async () => {
        const data = await this.o.images.openData(token, imageId);
        const tmp = `${path}.part-${process.pid}`;
        try {
          await pipeline(Readable.from(data), createWriteStream(tmp, { mode: 0o600 }));
          renameSync(tmp, path);
        } catch (error) {
          rmSync(tmp, { force: true });
          throw error;
        }
        return path;
      })().finally(() => this.imageDownloads.delete(imageId));
      this.imageDownloads.set(imageId, download);
    }
    return download;
  }

  /** The guest's disks from the server's mappings: root first (vda), then volumes in attach order. */
  private guestSpec(server: ServerRow): GuestSpec {
    const flavor = JSON.parse(server.flavor) as FlavorSnapshot;
    const disks: GuestDisk[] = [];
    for (const bdm of this.o.servers.bdms(server.id)) {
      if (bdm.status === 'detached' || bdm.status === 'detaching') continue;
      if (bdm.destination_type === 'local') {
        disks.push(this.localRootDisk(server));
        continue;
      }
      if (!bdm.connection_info || !bdm.volume_id) continue;
      disks.push(this.volumeDisk(bdm));
    }
    let hardware: GuestHardware;
    try {
      hardware = guestHardwareFromImage(JSON.parse(server.image_meta || '{}') as Record<string, string>);
    } catch (error) {
      if (error instanceof HardwarePropertyError) throw new BuildError(error.message);
      throw error;
    }
    return { uuid: server.id, name: server.name, vcpus: flavor.vcpus, memoryMiB: flavor.ram_mib, virtType: this.o.virt.virtType, disks, hardware };
  }

  private cacheMode(kind: 'network' | 'file'): GuestDisk['cache'] {
    for (const entry of this.o.config.libvirt.disk_cachemodes) {
      const [type, mode] = entry.split('=');
      if (type === kind && (mode === 'none' || mode === 'writeback' || mode === 'writethrough' || mode === 'unsafe')) return mode;
    }
    return 'none';
  }

  private discard(): GuestDisk['discard'] {
    return this.o.config.libvirt.hw_disk_discard === 'unmap' ? 'unmap' : 'ignore';
  }

  private localRootDisk(server: ServerRow): GuestDisk {
    if (this.o.config.libvirt.images_type === 'rbd') {
      const client = this.cephClient();
      return {
        diskId: 'root',
        serial: server.id.slice(0, 20),
        source: { kind: 'rbd', pool: this.o.config.libvirt.images_rbd_pool, image: this.rootDiskName(server.id), user: client.user, keyBase64: this.readKey(client.keyringPath, client.user), monitorHosts: monitorHostsOf(client.monHost), cephConfPath: null, secretUuid: this.o.config.libvirt.rbd_secret_uuid },
        readOnly: false,
        bootIndex: 1,
        cache: this.cacheMode('network'),
        discard: this.discard(),
      };
    }
    return { diskId: 'root', serial: server.id.slice(0, 20), source: { kind: 'file', path: join(this.instanceDir(server.id), 'disk'), format: 'qcow2' }, readOnly: false, bootIndex: 1, cache: this.cacheMode('file'), discard: this.discard() };
  }

  private volumeDisk(bdm: BdmRow): GuestDisk {
    const info = this.loadConnection(bdm);
    const data = info.data;
    const readOnly = data['access_mode'] === 'ro';
    const base = { diskId: bdm.volume_id!, serial: bdm.volume_id!.slice(0, 20), readOnly, ...(bdm.boot_index === 0 ? { bootIndex: 1 } : {}), discard: this.discard() };
    if (info.driver_volume_type === 'rbd') {
      const [pool, image] = String(data['name']).split('/');
      const user = String(data['auth_username'] ?? this.o.config.libvirt.rbd_user ?? 'cinder');
      const client = this.cephClient(user);
      const hosts = (data['hosts'] as string[] | undefined) ?? [];
      const ports = (data['ports'] as string[] | undefined) ?? [];
      return {
        ...base,
        source: { kind: 'rbd', pool: pool!, image: image!, user, keyBase64: this.readKey(client.keyringPath, user), monitorHosts: hosts.length ? hosts.map((h, i) => `${h}:${ports[i] ?? '6789'}`) : monitorHostsOf(client.monHost), cephConfPath: null, secretUuid: (data['secret_uuid'] as string | null) ?? this.o.config.libvirt.rbd_secret_uuid },
        cache: this.cacheMode('network'),
      };
    }
    if (info.driver_volume_type === 'nbd') {
      const psk = data['tls_psk_identity'] && data['tls_psk_key'] ? { identity: String(data['tls_psk_identity']), keyHex: String(data['tls_psk_key']) } : null;
      return { ...base, source: { kind: 'nbd', host: String(data['host']), port: Number(data['port']), exportName: String(data['export_name']), tlsPsk: psk }, cache: this.cacheMode('network') };
    }
    throw new BuildError(`Volume ${bdm.volume_id} has connection type '${info.driver_volume_type}', which this compute host cannot attach (it attaches rbd and nbd).`);
  }

  private readKey(keyringPath: string, user: string): string {
    let text: string;
    try {
      text = readFileSync(keyringPath, 'utf8');
    } catch (error) {
      throw new BuildError(`The cephx key of client.${user} is missing on compute host ${this.host}: cannot read ${keyringPath} (${(error as Error).message}). Copy the keyring there (ceph auth get client.${user} -o ${keyringPath}; chmod 600) or set [libvirt] rbd_keyring.`);
    }
    const section = new RegExp(`\\[client\\.${user.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\][^\\[]*?key\\s*=\\s*(\\S+)`, 'm').exec(text);
    if (!section) throw new BuildError(`Keyring ${keyringPath} on compute host ${this.host} has no key for client.${user}: fetch it with ceph auth get client.${user} -o ${keyringPath}.`);
    return section[1]!;
  }

  private async build(server: ServerRow, task: Task): Promise<void> {
    const payload = task.payload as { actionId?: number };
    if (server.vm_state !== 'building') return;
    const started = nowIso();
    try {
      this.o.servers.transition(server.id, ['building'], null, { task_state: 'block_device_mapping' });
      await this.connectVolumes(server);
      const root = this.o.servers.bdms(server.id).find((b) => b.boot_index === 0);
      if (root?.destination_type === 'local' && root.image_id) await this.prepareRootDisk(server, root.image_id, false);
      this.o.servers.transition(server.id, ['building'], null, { task_state: 'spawning' });
      const spec = this.guestSpec(this.o.servers.row(server.id)!);
      await this.o.hypervisor.spawn(spec);
      await this.completeVolumes(server);
      await this.recordRbdClients(server);
      const done = this.o.servers.transition(server.id, ['building'], null, { vm_state: 'active', task_state: null, power_state: PowerState.RUNNING, launched_at: nowIso(), fault: null });
      if (!done) {
        // Deleted (or reset) while building: the delete task cleans up what was made.
        this.o.log(`compute: server ${server.id} left 'building' during its build; leaving it to the task that changed it`);
      }
      if (payload.actionId) this.o.servers.finishAction(payload.actionId, 'compute__do_build_and_run_instance', this.host, 'Success', null, started);
      if (spec.hardware?.guestAgent && payload.actionId) void this.reportGuestAgent(server.id, payload.actionId);
    } catch (error) {
      throw describeFailure(error);
    }
  }

  /**
   * hw_qemu_guest_agent: once the guest had time to boot, is an agent answering on its channel?
   * Recorded as the create action's event `compute_guest_agent_ping` (openstack server event show):
   * Success, or Error with "no agent answered" and the fix. Runs beside the agent's work, bounded.
   */
  private async reportGuestAgent(serverId: string, actionId: number): Promise<void> {
    const started = nowIso();
    const deadline = Date.now() + guestAgentWaitMs;
    let last = '';
    while (Date.now() < deadline) {
      const ping = await this.o.hypervisor.guestAgentPing(serverId, { timeoutMs: 2_000 }).catch((error: Error) => ({ answered: false, detail: error.message }));
      if (ping.answered) {
        this.o.servers.finishAction(actionId, 'compute_guest_agent_ping', this.host, 'Success', ping.detail, started);
        return;
      }
      last = ping.detail;
      if (!this.o.servers.row(serverId) || /no running QEMU/.test(last)) return;
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
    this.o.log(`compute: server ${serverId}: no guest agent answered within ${guestAgentWaitMs} ms: ${last}`);
    this.o.servers.finishAction(actionId, 'compute_guest_agent_ping', this.host, 'Error', `no agent answered within ${guestAgentWaitMs / 1000} s of the build: ${last}`, started);
  }

  private async stopServer(server: ServerRow, task: Task): Promise<void> {
    const payload = task.payload as { actionId?: number };
    await this.o.hypervisor.powerOff(server.id, { timeoutMs: this.o.config.compute.shutdown_timeout * 1000 }).catch((e) => {
      throw describeFailure(e);
    });
    this.o.servers.transition(server.id, null, ['powering-off'], { vm_state: 'stopped', task_state: null, power_state: PowerState.SHUTDOWN });
    if (payload.actionId) this.o.servers.finishAction(payload.actionId, 'compute_stop_instance', this.host, 'Success', null);
  }

  private async startServer(server: ServerRow, task: Task): Promise<void> {
    const payload = task.payload as { actionId?: number };
    try {
      await this.connectVolumes(server);
      await this.o.hypervisor.spawn(this.guestSpec(this.o.servers.row(server.id)!));
      await this.completeVolumes(server);
      await this.recordRbdClients(server);
    } catch (error) {
      throw describeFailure(error);
    }
    this.o.servers.transition(server.id, null, ['powering-on'], { vm_state: 'active', task_state: null, power_state: PowerState.RUNNING });
    if (payload.actionId) this.o.servers.finishAction(payload.actionId, 'compute_start_instance', this.host, 'Success', null);
  }

  private async rebootServer(server: ServerRow, task: Task): Promise<void> {
    const payload = task.payload as { actionId?: number; hard: boolean };
    const spec = this.guestSpec(server);
    try {
      const info = await this.o.hypervisor.info(server.id);
      if (info.powerState === 'running' || info.powerState === 'paused') {
        this.o.servers.transition(server.id, null, null, { task_state: payload.hard ? 'reboot_started_hard' : 'reboot_started' });
        await this.o.hypervisor.reboot(server.id, spec, { hard: payload.hard, timeoutMs: this.o.config.compute.shutdown_timeout * 1000 });
      } else {
        await this.connectVolumes(server);
        await this.o.hypervisor.spawn(this.guestSpec(this.o.servers.row(server.id)!));
      }
    } catch (error) {
      throw describeFailure(error);
    }
    this.o.servers.transition(server.id, null, null, { vm_state: 'active', task_state: null, power_state: PowerState.RUNNING });
    if (payload.actionId) this.o.servers.finishAction(payload.actionId, 'compute_reboot_instance', this.host, 'Success', null);
  }

  private async rebuildServer(server: ServerRow, task: Task): Promise<void> {
    const payload = task.payload as { actionId?: number; imageId: string; wasStopped: boolean };
    try {
      await this.o.hypervisor.destroy(server.id, { removeFiles: false });
      this.o.servers.transition(server.id, null, null, { task_state: 'rebuild_block_device_mapping' });
      if (server.root_source === 'image') await this.prepareRootDisk(server, payload.imageId, true);
      await this.connectVolumes(server);
      this.o.servers.transition(server.id, null, null, { task_state: 'rebuild_spawning' });
      await this.o.hypervisor.spawn(this.guestSpec(this.o.servers.row(server.id)!));
      if (payload.wasStopped) await this.o.hypervisor.powerOff(server.id, { timeoutMs: this.o.config.compute.shutdown_timeout * 1000 });
    } catch (error) {
      throw describeFailure(error);
    }
    this.o.servers.transition(server.id, null, null, payload.wasStopped
      ? { vm_state: 'stopped', task_state: null, power_state: PowerState.SHUTDOWN, fault: null }
      : { vm_state: 'active', task_state: null, power_state: PowerState.RUNNING, fault: null, launched_at: nowIso() });
    if (payload.actionId) this.o.servers.finishAction(payload.actionId, 'compute_rebuild_instance', this.host, 'Success', null);
  }

  /**
   * Evacuate (on the destination host), resumable by the migration record's status:
   * accepted → fence the source (RBD: blocklist its clients and break the exclusive locks; every
   * volume: a new reservation for this server, then the old host's attachment deleted, which for a
   * local volume revokes its NBD export and cuts the old QEMU's connection) → fenced → a local
   * qcow2 root is rebuilt from the image (it was not shared), the server row names this host →
   * rebuilding → volumes connected here, the guest spawned → done. Nothing is rebuilt without a
   * successful fence; a fence that fails leaves the server where it was, with the reason.
   */
  private async evacuateServer(server: ServerRow, task: Task): Promise<void> {
    const p = task.payload as EvacuatePayload;
    const migrations = this.o.servers.migrations;
    let migration = migrations.get(p.migrationId);
    if (!migration || migration.status === 'done' || migration.status === 'failed') return;
    const started = nowIso();
    try {
      if (migration.status === 'accepted') {
        const service = this.o.hosts.serviceByHost(computeBinary, p.sourceHost);
        if (service && this.o.hosts.isUp(service)) {
          throw new BuildError(`Evacuation of server ${server.id} stopped before anything changed: its host ${p.sourceHost} is up again (last heartbeat ${service.heartbeat_at}). The server keeps running there.`, 409);
        }
        const fence = await this.fenceSource(server, p, task);
        task.checkpoint('evacuate.fenced');
        this.o.db.transaction(() => {
          migrations.advance(p.migrationId, ['accepted'], 'fenced', { fence });
          this.o.servers.finishAction(p.actionId, 'compute_fence_source_host', this.host, 'Success', describeFence(p.sourceHost, fence), started);
        });
        migration = migrations.get(p.migrationId)!;
      }
      if (migration.status === 'fenced') {
        // An ephemeral root disk on this host's disk was not shared: rebuilt from the image. In RBD it is reused.
        if (server.root_source === 'image' && server.image_id && this.o.config.libvirt.images_type !== 'rbd') await this.prepareRootDisk(server, server.image_id, true);
        task.checkpoint('evacuate.root-disk');
        this.o.db.transaction(() => {
          this.o.servers.transition(server.id, null, null, { host: this.host, availability_zone: this.zone, task_state: 'rebuild_block_device_mapping' });
          migrations.advance(p.migrationId, ['fenced'], 'rebuilding');
        });
        migration = migrations.get(p.migrationId)!;
      }
      const fresh = this.o.servers.row(server.id)!;
      if (fresh.root_source === 'image' && fresh.image_id && this.o.config.libvirt.images_type === 'rbd') await this.prepareRootDisk(fresh, fresh.image_id, false);
      await this.connectVolumes(fresh);
      task.checkpoint('evacuate.volumes-connected');
      this.o.servers.transition(server.id, null, null, { task_state: 'rebuild_spawning' });
      await this.o.hypervisor.spawn(this.guestSpec(this.o.servers.row(server.id)!));
      task.checkpoint('evacuate.spawned');
      await this.completeVolumes(fresh);
      task.checkpoint('evacuate.volumes-completed');
      await this.recordRbdClients(fresh);
      if (p.wasStopped) await this.o.hypervisor.powerOff(server.id, { timeoutMs: this.o.config.compute.shutdown_timeout * 1000 });
    } catch (error) {
      throw describeFailure(error);
    }
    task.complete(() => {
      this.o.servers.transition(server.id, null, null, p.wasStopped
        ? { vm_state: 'stopped', task_state: null, power_state: PowerState.SHUTDOWN, fault: null }
        : { vm_state: 'active', task_state: null, power_state: PowerState.RUNNING, fault: null, launched_at: nowIso() });
      migrations.advance(p.migrationId, ['rebuilding'], 'done');
      this.o.servers.finishAction(p.actionId, 'compute_rebuild_instance', this.host, 'Success', `rebuilt on ${this.host} (evacuated from ${p.sourceHost})`, started);
    });
  }

  /** The server's RBD disks: its root in the vms pool, and its RBD volumes (from the connection info the database keeps). */
  private rbdDisksOf(serverId: string): (RbdDiskRef & { bdmId: string })[] {
    const out: (RbdDiskRef & { bdmId: string })[] = [];
    for (const bdm of this.o.servers.bdms(serverId)) {
      if (bdm.status === 'detached') continue;
      const recordedClients = bdm.rbd_clients ? (JSON.parse(bdm.rbd_clients) as string[]) : [];
      if (bdm.destination_type === 'local') {
        if (this.o.config.libvirt.images_type === 'rbd') out.push({ bdmId: bdm.id, pool: this.o.config.libvirt.images_rbd_pool, image: this.rootDiskName(serverId), recordedClients });
        continue;
      }
      if (!bdm.connection_info) continue;
      const info = JSON.parse(bdm.connection_info) as { driver_volume_type: string; data: Record<string, unknown> };
      if (info.driver_volume_type !== 'rbd' || typeof info.data['name'] !== 'string') continue;
      const [pool, image] = info.data['name'].split('/');
      const others = this.o.db.get<{ n: number }>("SELECT COUNT(*) AS n FROM volume_attachments WHERE volume_id = ? AND COALESCE(instance_uuid, '') != ? AND attach_status != 'detached'", bdm.volume_id, serverId)?.n ?? 0;
      if (pool && image) out.push({ bdmId: bdm.id, pool, image, recordedClients, sharedWithOthers: others > 0 });
    }
    return out;
  }

  /** Remembers which Ceph client addresses opened the guest's RBD disks, so a later fence blocklists them even if their watch lapsed. */
  private async recordRbdClients(server: ServerRow): Promise<void> {
    const disks = this.rbdDisksOf(server.id);
    if (disks.length === 0) return;
    try {
      const client = this.cephClient();
      for (const disk of disks) {
        const watchers = await rbdWatchers({ user: client.user, confPath: client.confPath, keyringPath: client.keyringPath }, disk.pool, disk.image);
        this.o.db.run('UPDATE block_device_mappings SET rbd_clients = ? WHERE id = ?', JSON.stringify(watchers), disk.bdmId);
      }
    } catch (error) {
      this.o.log(`compute: recording the Ceph clients of server ${server.id} failed (a fence will use the watchers it finds): ${(error as Error).message}`);
    }
  }

  /**
   * A reservation (attachment with no connector) of `volumeId` for the server other than `old`: what
   * an earlier run of this fence made before a crash, since nothing else reserves a volume the server
   * already has. Null when there is none.
   */
  private fenceReservationOf(serverId: string, volumeId: string, old: string | null): string | null {
    return this.o.db.get<{ id: string }>(
      "SELECT id FROM volume_attachments WHERE volume_id = ? AND instance_uuid = ? AND id != ? AND attach_status = 'reserved' AND connector IS NULL ORDER BY rowid LIMIT 1",
      volumeId, serverId, old ?? '',
    )?.id ?? null;
  }

  /** The fence of an evacuation (see evacuateServer). Idempotent, also when re-run after a crash at any step; throws FenceError or BlockStorage errors naming the cause. */
  private async fenceSource(server: ServerRow, p: EvacuatePayload, task: Task): Promise<FenceRecord> {
    const record: FenceRecord = { blocklisted: [], locksBroken: [], attachmentsRevoked: [], skippedBecause: null, cephUser: null, at: nowIso() };
    const rbdDisks = this.rbdDisksOf(server.id);
    if (rbdDisks.length > 0) {
      const client = this.cephClient();
      const done = await fenceRbdDisks({ user: client.user, confPath: client.confPath, keyringPath: client.keyringPath }, rbdDisks, this.o.config.compute.evacuation_blocklist_expire_s, this.o.log, { blocklist: !p.hostPoweredOff });
      if (p.hostPoweredOff) record.skippedBecause = `the operator vouched that ${p.sourceHost} is powered off (pumice_host_powered_off): its Ceph clients were not blocklisted, only their exclusive locks broken`;
      record.blocklisted = done.blocklisted;
      record.locksBroken = done.locksBroken;
      record.cephUser = client.user;
    }
    // Every volume: reserve it for this server first (so it never looks free), then end the old host's attachment.
    for (const bdm of this.o.servers.bdms(server.id)) {
      if (bdm.destination_type !== 'volume' || !bdm.volume_id || bdm.status === 'detached') continue;
      const old = bdm.attachment_id;
      if (bdm.status === 'detaching') {
        // A detach asked before the host died: finished here (the old attachment ends), not re-attached.
        if (old) {
          await this.o.blockStorage.deleteAttachment(server.project_id, old).catch((error: Error & { status?: number }) => {
            if (error.status !== 404) throw new Error(`Fencing: ending attachment ${old} of volume ${bdm.volume_id} on ${p.sourceHost} failed, so the old host may still reach it: ${error.message}`);
          });
          record.attachmentsRevoked.push({ volumeId: bdm.volume_id, attachmentId: old });
        }
        resourceStates(this.o.db).blockDeviceMappings.transition(bdm.id, ['detaching'], 'detached', { connection_info: null });
        continue;
      }
      let next: string | null = null;
      if (old || bdm.status !== 'pending') {
        // A fence re-run after a crash finds the reservation its last run made (before the mapping recorded it): reused, not leaked.
        next = this.fenceReservationOf(server.id, bdm.volume_id, old)
          ?? (await this.o.blockStorage.createAttachment(server.project_id, { volumeId: bdm.volume_id, serverId: server.id, connector: null, mode: 'rw' })).attachment.id;
        task.checkpoint('evacuate.fence.reserved');
      }
      if (old) {
        await this.o.blockStorage.deleteAttachment(server.project_id, old).catch((error: Error & { status?: number }) => {
          if (error.status !== 404) throw new Error(`Fencing: ending attachment ${old} of volume ${bdm.volume_id} on ${p.sourceHost} failed, so the old host may still reach it: ${error.message}`);
        });
        record.attachmentsRevoked.push({ volumeId: bdm.volume_id, attachmentId: old });
        task.checkpoint('evacuate.fence.old-ended');
      }
      rmSync(this.connectionFile(server.id, bdm.id), { force: true });
      resourceStates(this.o.db).blockDeviceMappings.transition(bdm.id, ['attached', 'pending'], 'pending', { attachment_id: next ?? old, connection_info: null, rbd_clients: null });
    }
    return record;
  }

  private async deleteServer(server: ServerRow, task: Task): Promise<void> {
    const payload = task.payload as { actionId?: number };
    await this.o.hypervisor.destroy(server.id, { removeFiles: true });
    if (server.root_source === 'image') await this.removeRootDisk(server);
    await this.releaseVolumes(server, this.o.servers.bdms(server.id));
    rmSync(this.instanceDir(server.id), { recursive: true, force: true });
    this.o.servers.finishDelete(server.id);
    if (payload.actionId) this.o.servers.finishAction(payload.actionId, 'compute_terminate_instance', this.host, 'Success', null);
  }

  /** Removes the server's RBD root disk; already gone is fine. A crashed client's watch expires in ~30 s: retried that long. */
  private async removeRootDisk(server: ServerRow): Promise<void> {
    if (this.o.config.libvirt.images_type !== 'rbd') return;
    const client = this.cephClient();
    const target = `${this.o.config.libvirt.images_rbd_pool}/${this.rootDiskName(server.id)}`;
    const deadline = Date.now() + 45_000;
    for (;;) {
      const failure = await execFileAsync('rbd', ['--id', client.user, '-c', client.confPath, '--keyring', client.keyringPath, 'rm', '--no-progress', target], { timeout: 120_000 }).then(
        () => null,
        (error: Error & { stderr?: string }) => (error.stderr ?? error.message).trim(),
      );
      if (failure === null || /No such file|does not exist|\(2\)/.test(failure)) return;
      if (!/watchers/.test(failure) || Date.now() > deadline) throw new Error(`removing the root disk ${target} failed: ${failure}`);
      await new Promise((r) => setTimeout(r, 2000));
    }
  }

  /** Ends every attachment of the server and deletes the volumes marked delete_on_termination. Already gone is fine. */
  private async releaseVolumes(server: ServerRow, bdms: BdmRow[]): Promise<void> {
    for (const bdm of bdms) {
      if (bdm.destination_type !== 'volume' || !bdm.volume_id) continue;
      if (bdm.attachment_id) {
        await this.o.blockStorage.deleteAttachment(server.project_id, bdm.attachment_id).catch((error: Error & { status?: number }) => {
          if (error.status !== 404) throw error;
        });
      }
      resourceStates(this.o.db).blockDeviceMappings.transition(bdm.id, ['pending', 'attached', 'detaching'], 'detached', { connection_info: null });
      rmSync(this.connectionFile(server.id, bdm.id), { force: true });
      if (bdm.delete_on_termination) {
        await this.o.blockStorage.deleteVolume(server.project_id, bdm.volume_id).catch((error: Error & { status?: number }) => {
          if (error.status !== 404) this.o.log(`compute: deleting volume ${bdm.volume_id} of deleted server ${server.id} failed: ${error.message}`);
        });
      }
    }
  }

  private async attachVolume(server: ServerRow, task: Task): Promise<void> {
    const payload = task.payload as { actionId?: number; bdmId: string };
    const bdm = this.o.db.get<BdmRow>('SELECT * FROM block_device_mappings WHERE id = ?', payload.bdmId);
    if (!bdm || bdm.status !== 'pending') return;
    try {
      await this.connectVolumes(server);
      const fresh = this.o.db.get<BdmRow>('SELECT * FROM block_device_mappings WHERE id = ?', payload.bdmId)!;
      const info = await this.o.hypervisor.info(server.id);
      if (info.powerState === 'running' || info.powerState === 'paused') await this.o.hypervisor.attachDisk(server.id, this.volumeDisk(fresh));
      await this.completeVolumes(server);
      await this.recordRbdClients(server);
    } catch (error) {
      throw describeFailure(error);
    }
    if (payload.actionId) this.o.servers.finishAction(payload.actionId, 'compute_attach_volume', this.host, 'Success', null);
  }

  private async detachVolume(server: ServerRow, task: Task): Promise<void> {
    const payload = task.payload as { actionId?: number; bdmId: string };
    const bdm = this.o.db.get<BdmRow>('SELECT * FROM block_device_mappings WHERE id = ?', payload.bdmId);
    if (!bdm || bdm.status !== 'detaching') return;
    try {
      await this.o.hypervisor.detachDisk(server.id, bdm.volume_id!, { timeoutMs: 30_000 });
    } catch (error) {
      throw describeFailure(error);
    }
    await this.releaseVolumes(server, [{ ...bdm, delete_on_termination: 0 }]);
    if (payload.actionId) this.o.servers.finishAction(payload.actionId, 'compute_detach_volume', this.host, 'Success', null);
  }
}

/** Keys of connection data that grant access (NBD export names and URIs, TLS keys, CHAP passwords). */
const secretConnectionKeys = /export_name|^uri$|psk|password|secret_key|keyring|^key$/i;

/** Connection info as the database keeps it: without the keys that grant access. */
function publicConnectionInfo(info: { driver_volume_type: string; data: Record<string, unknown> }): string {
  const data = Object.fromEntries(Object.entries(info.data).filter(([key]) => !secretConnectionKeys.test(key)));
  return JSON.stringify({ driver_volume_type: info.driver_volume_type, data });
}

/** The fence, in the words of the instance action event (`openstack server event show`). */
function describeFence(sourceHost: string, fence: FenceRecord): string {
  const parts: string[] = [`source host ${sourceHost} fenced`];
  if (fence.blocklisted.length) parts.push(`Ceph clients blocklisted: ${fence.blocklisted.map((b) => `${b.address} (${b.image})`).join(', ')}`);
  if (fence.locksBroken.length) parts.push(`exclusive locks broken: ${fence.locksBroken.length}`);
  if (fence.skippedBecause) parts.push(`RBD blocklist skipped: ${fence.skippedBecause}`);
  if (fence.attachmentsRevoked.length) parts.push(`old attachments ended (NBD exports revoked, connections cut): ${fence.attachmentsRevoked.map((a) => `${a.attachmentId} of volume ${a.volumeId}`).join(', ')}`);
  if (parts.length === 1) parts.push('it had no disk open that another host could reach');
  return parts.join('; ');
}

function monitorHostsOf(monHost: string | null): string[] {
  if (!monHost) return [];
  const out: string[] = [];
  for (const m of monHost.matchAll(/v1:([^,\]\s]+)|(?:^|[\s,])(\d+\.\d+\.\d+\.\d+(?::\d+)?)(?=$|[\s,])/g)) {
    const addr = (m[1] ?? m[2])!;
    out.push(addr.includes(':') ? addr : `${addr}:6789`);
  }
  return out;
}

/** Turns a failure into the text the server's fault shows: the hypervisor's or build error's own words, or the cause. */
function describeFailure(error: unknown): Error {
  if (error instanceof BuildError || error instanceof HypervisorError) return error;
  const e = error as Error & { status?: number };
  return new Error(e.message ?? String(error));
}

export function defaultComputeHostName(): string {
  return hostname();
}
