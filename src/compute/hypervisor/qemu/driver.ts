/**
 * QemuHypervisor: runs each guest as a plain `qemu-system-x86_64` process
 * driven over QMP, with no libvirt (COMPUTE-NOTES: no host set-up, no 48 s
 * capability re-probes, one QMP socket per guest is all the agent needs).
 *
 * Per instance, INSTANCES_DIR/<uuid>/ (0700, files 0600):
 *   qmp.sock, qemu.pid, qemu.log (QEMU's stderr), console.log (ttyS0,
 *   appended), libvirt.xml (the domain XML Nova would have written),
 *   spec.json (the GuestSpec without secrets), devices.json (PCI slots and
 *   QEMU node names of each disk), ceph-N.conf (short librados timeouts),
 *   secret-N (a cephx key, only until QEMU has read it), tls-N/keys.psk.
 *
 * QEMU is spawned detached in its own process group with stdio to files, so
 * it survives the agent (even SIGKILL); a new agent re-adopts it from the
 * directory (adopt()). Disks are verified with QEMU paused (-S) before the
 * vCPUs run. Every virtio-blk device gets an explicit bus=pci.0,addr=... so
 * cold- and hot-plugged disks keep stable PCI addresses (COMPUTE-NOTES:
 * device order pitfall). Operations on one guest are serialised.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, statSync } from 'node:fs';
import { chmod, mkdir, open, readFile, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { defaultGuestHardware, HypervisorError, type GuestDisk, type GuestInfo, type GuestPowerState, type GuestSpec, type Hypervisor } from '../types.ts';
import {
  cephConfText,
  deviceFor,
  formatNode,
  hardwareArgs,
  pciSlotFirst,
  pciSlotLast,
  placementFor,
  protocolNode,
  scsiLunMax,
  type DiskPlacement,
} from './blockdev.ts';
import { QgaClient } from './qga.ts';
import { domainName, renderDomainXml, targetName } from './domain-xml.ts';
import { diskOpenError, qemuSaid } from './errors.ts';
import { QmpClient, QmpError } from './qmp.ts';
import { KeyedQueue } from '../../../util/keyed-queue.ts';

export interface QemuHypervisorOptions {
  /** Nova's instances_path: one directory per guest. */
  instancesDir: string;
  /** Default `qemu-system-x86_64` (from PATH). */
  qemuBinary?: string;
  log: (msg: string) => void;
  /**
   * Directory of the operator's ceph.conf, used as the base of the ceph.conf
   * QEMU gets for an rbd disk with neither `cephConfPath` nor monitor hosts.
   * Default `/etc/ceph`.
   */
  cephConfDir?: string;
  /** Timeout of ordinary QMP commands. Default 10 s. */
  qmpTimeoutMs?: number;
  /** From spawning QEMU to its disks open and QMP answering. Default 60 s. */
  startTimeoutMs?: number;
  /** TCG translation cache (MiB): QEMU's default 1 GiB costs RSS; 32 is plenty for small guests. */
  tcgTbSizeMiB?: number;
}

/** GuestInfo plus what adopt() found: `orphan` = a live QEMU of ours with no spec.json (nothing to rebuild it from). */
export interface AdoptedGuest extends GuestInfo {
  orphan?: boolean;
}

interface DevicesFile {
  version: 1;
  nextSeq: number;
  placements: DiskPlacement[];
}

interface Instance {
  uuid: string;
  dir: string;
  spec: GuestSpec;
  placements: Map<string, DiskPlacement>;
  nextSeq: number;
  pid: number | null;
  qmp: QmpClient | null;
}

/** The guest agent channel's socket in the instance directory (libvirt: /var/lib/libvirt/qemu/channel/target/.../org.qemu.guest_agent.0). */
const guestAgentSocketName = 'qga.sock';
/** QEMU's default max-bandwidth is 128 MiB/s; a LAN between compute hosts (and loopback) carries more. */
const migrationBandwidthDefaultBytesPerS = 1024 * 1024 * 1024;
/** After the source's `completed`, how long the target may take to load the last bytes and leave `inmigrate`. */
const incomingSettleMs = 10_000;
/** The longest pause of the guest at the switch QEMU aims for (its default 300 ms). */
const migrationDowntimeLimitMs = 300;

interface QueryMigrate {
  status?: string;
  ram?: { transferred?: number; remaining?: number; total?: number };
  downtime?: number;
  'error-desc'?: string;
}

export interface MigrationProgress {
  /** QEMU's: setup, active, completed, failed, cancelling, cancelled, ... */
  status: string;
  transferredBytes: number;
  remainingBytes: number;
  totalBytes: number;
  elapsedMs: number;
}

export interface MigrationResult {
  totalMs: number;
  /** QEMU's measured pause of the guest at the switch. */
  downtimeMs: number | null;
  transferredBytes: number;
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** sun_path is 108 bytes including the NUL. */
const unixPathBytesMax = 107;
/** blockdev-add of an rbd disk may wait for librados' client_mount_timeout (5 s) and more. */
const blockdevAddTimeoutMs = 30_000;
const powerdownRetryMs = 2_000;
const exitWaitMs = 10_000;
const consoleReadBytesMax = 1024 * 1024;
const disksMax = pciSlotLast - pciSlotFirst + 1;

export class QemuHypervisor implements Hypervisor {
  private readonly instances = new Map<string, Instance>();
  /** Operations of one instance run one at a time. */
  private readonly locks = new KeyedQueue();
  private readonly qemuBinary: string;
  private readonly qmpTimeoutMs: number;
  private readonly startTimeoutMs: number;
  private readonly tbSizeMiB: number;
  private readonly log: (msg: string) => void;

  constructor(private readonly options: QemuHypervisorOptions) {
    this.qemuBinary = options.qemuBinary ?? 'qemu-system-x86_64';
    this.qmpTimeoutMs = options.qmpTimeoutMs ?? 10_000;
    this.startTimeoutMs = options.startTimeoutMs ?? 60_000;
    this.tbSizeMiB = options.tcgTbSizeMiB ?? 32;
    this.log = options.log;
  }

  // ------------------------------------------------------------------ paths

  private dirOf(uuid: string): string {
    if (!uuidPattern.test(uuid)) throw new HypervisorError('Internal', `not an instance uuid: ${JSON.stringify(uuid)}`);
    return path.join(this.options.instancesDir, uuid);
  }

  private file(uuid: string, name: string): string {
    return path.join(this.dirOf(uuid), name);
  }

  // ------------------------------------------------------------------ Hypervisor

  spawn(spec: GuestSpec): Promise<GuestInfo> {
    validateSpec(spec);
    return this.locked(spec.uuid, async () => {
      const existing = await this.load(spec.uuid);
      if (existing?.pid !== null && existing !== null) {
        const qmp = await this.qmpOf(existing);
        const status = await this.status(qmp);
        if (status !== 'shutdown') return this.infoOf(existing, status);
        // Powered off inside a live QEMU (-no-shutdown): start afresh with the given spec.
        await this.stopProcess(existing, { graceful: true });
      }
      return this.start(spec);
    });
  }

  powerOff(uuid: string, options: { timeoutMs: number }): Promise<void> {
    return this.locked(uuid, async () => {
      const instance = await this.load(uuid);
      if (!instance || instance.pid === null) return;
      const qmp = await this.qmpOf(instance).catch(() => null);
      const deadline = Date.now() + options.timeoutMs;
      if (qmp) {
        for (;;) {
          const status = await this.status(qmp).catch(() => null);
          if (status === null || status === 'shutdown' || !processAlive(instance.pid)) break;
          if (Date.now() >= deadline) {
            this.log(`qemu ${uuid}: no ACPI power-off within ${options.timeoutMs} ms, stopping QEMU`);
            break;
          }
          // The guest may not listen to ACPI yet (still booting): ask again until the deadline.
          const since = qmp.eventSeq();
          await qmp.execute('system_powerdown', undefined, { timeoutMs: this.qmpTimeoutMs }).catch(() => undefined);
          await qmp.waitForEvent((e) => e.event === 'SHUTDOWN', { sinceSeq: since, timeoutMs: Math.min(powerdownRetryMs, Math.max(deadline - Date.now(), 1)) });
        }
      }
      await this.stopProcess(instance, { graceful: true });
    });
  }

  reboot(uuid: string, spec: GuestSpec, options: { hard: boolean; timeoutMs: number }): Promise<void> {
    validateSpec(spec);
    if (spec.uuid !== uuid) throw new HypervisorError('Internal', `reboot of ${uuid} with the spec of ${spec.uuid}`);
    if (!options.hard) {
      return (async () => {
        await this.powerOff(uuid, { timeoutMs: options.timeoutMs });
        await this.spawn(spec);
      })();
    }
    return this.locked(uuid, async () => {
      const instance = await this.load(uuid);
      if (!instance || instance.pid === null) {
        await this.start(spec);
        return;
      }
      const qmp = await this.qmpOf(instance);
      await qmp.execute('system_reset', undefined, { timeoutMs: this.qmpTimeoutMs });
      const status = await this.status(qmp);
      if (status !== 'running') await qmp.execute('cont', undefined, { timeoutMs: this.qmpTimeoutMs });
    });
  }

  destroy(uuid: string, options: { removeFiles: boolean }): Promise<void> {
    return this.locked(uuid, async () => {
      const instance = await this.load(uuid);
      // `quit` first: QEMU closes its disks, so librbd drops its watch and the image can be removed at once
      // (after a SIGKILL the watch lingers ~30 s and `rbd rm` refuses with "image has watchers").
      if (instance && instance.pid !== null) await this.stopProcess(instance, { graceful: true });
      await this.killUnrecorded(uuid, instance?.pid ?? null);
      this.instances.delete(uuid);
      const dir = this.dirOf(uuid);
      if (options.removeFiles) {
        await rm(dir, { recursive: true, force: true });
      } else {
        await removeRuntimeFiles(dir);
      }
    });
  }

  attachDisk(uuid: string, disk: GuestDisk): Promise<void> {
    validateDisk(disk);
    return this.locked(uuid, async () => {
      const instance = await this.live(uuid);
      if (instance.placements.has(disk.diskId)) return;
      const qmp = await this.qmpOf(instance);
      const scsi = busOf(instance.spec) === 'scsi';
      // Volumes follow the image's disk bus, as Nova's blockinfo does for hw_disk_bus.
      const slot = scsi ? 0 : await this.freeSlot(instance, qmp);
      const placement = placementFor(disk, slot, this.freeTarget(instance), instance.nextSeq++, scsi ? { lun: this.freeLun(instance) } : null);
      await this.saveDevices(instance);
      const undo: (() => Promise<unknown>)[] = [];
      const timeoutMs = this.qmpTimeoutMs;
      try {
        const cephConfPath = await this.writeDiskFiles(instance, disk, placement, { secretFile: false });
        if (disk.source.kind === 'rbd' && placement.secretId) {
          // Over the 0700-protected QMP socket: the key never touches a file or a command line.
          await qmp.execute('object-add', { 'qom-type': 'secret', id: placement.secretId, data: disk.source.keyBase64, format: 'base64' }, { timeoutMs });
          undo.push(() => qmp.execute('object-del', { id: placement.secretId }, { timeoutMs }));
        }
        if (disk.source.kind === 'nbd' && disk.source.tlsPsk && placement.tlsId) {
          await qmp.execute(
            'object-add',
            { 'qom-type': 'tls-creds-psk', id: placement.tlsId, endpoint: 'client', dir: this.file(uuid, `tls-${placement.tlsId}`), username: disk.source.tlsPsk.identity },
            { timeoutMs },
          );
          undo.push(() => qmp.execute('object-del', { id: placement.tlsId }, { timeoutMs }));
        }
        try {
          await qmp.execute('blockdev-add', protocolNode(disk, placement, { cephConfPath, tlsDir: null }), { timeoutMs: blockdevAddTimeoutMs });
        } catch (err) {
          throw err instanceof QmpError && err.qmpClass !== 'timeout' && err.qmpClass !== 'closed' ? diskOpenError(disk, err.message) : asHypervisorError(err, `blockdev-add of ${disk.diskId}`);
        }
        undo.push(() => qmp.execute('blockdev-del', { 'node-name': placement.protocolNode }, { timeoutMs }));
        await qmp.execute('blockdev-add', formatNode(disk, placement), { timeoutMs: blockdevAddTimeoutMs });
        undo.push(() => qmp.execute('blockdev-del', { 'node-name': placement.formatNode }, { timeoutMs }));
        await qmp.execute('device_add', deviceFor(disk, placement), { timeoutMs });
      } catch (err) {
        for (const step of undo.reverse()) await step().catch(() => undefined);
        throw asHypervisorError(err, `hot-plug of disk ${disk.diskId}`);
      }
      instance.placements.set(disk.diskId, placement);
      instance.spec = { ...instance.spec, disks: [...instance.spec.disks.filter((d) => d.diskId !== disk.diskId), withoutSecrets(disk)] };
      await this.saveState(instance);
      this.log(`qemu ${uuid}: attached disk ${disk.diskId} at ${placement.bus === 'scsi' ? `scsi0 lun ${placement.lun}` : `pci.0 ${placement.slot.toString(16)}`} (${placement.target})`);
    });
  }

  detachDisk(uuid: string, diskId: string, options: { timeoutMs: number }): Promise<void> {
    return this.locked(uuid, async () => {
      const instance = await this.load(uuid);
      if (!instance) return;
      const placement = instance.placements.get(diskId);
      if (!placement) return;
      if (instance.pid !== null) {
        const qmp = await this.qmpOf(instance);
        const timeoutMs = this.qmpTimeoutMs;
        const since = qmp.eventSeq();
        let present = true;
        try {
          await qmp.execute('device_del', { id: placement.deviceId }, { timeoutMs });
        } catch (err) {
          if (err instanceof QmpError && err.qmpClass === 'DeviceNotFound') present = false;
          else if (!(err instanceof QmpError && /not found/i.test(err.message))) throw asHypervisorError(err, `device_del of ${diskId}`);
          else present = false;
        }
        if (present) {
          const deleted = await qmp.waitForEvent((e) => e.event === 'DEVICE_DELETED' && e.data['device'] === placement.deviceId, {
            sinceSeq: since,
            timeoutMs: options.timeoutMs,
          });
          if (!deleted && (await this.devicePresent(qmp, placement.deviceId))) {
            throw new HypervisorError(
              'DeviceBusy',
              `The guest did not release disk ${diskId} within ${options.timeoutMs} ms of the unplug request (its OS must answer the ACPI PCI hot-unplug; a guest still booting or without ACPI cannot). Retry the detach, or stop the server and detach then.`,
            );
          }
        }
        for (const node of [placement.formatNode, placement.protocolNode]) {
          await qmp.execute('blockdev-del', { 'node-name': node }, { timeoutMs }).catch((err: unknown) => this.log(`qemu ${uuid}: blockdev-del ${node}: ${String(err)}`));
        }
        for (const id of [placement.secretId, placement.tlsId]) {
          if (id) await qmp.execute('object-del', { id }, { timeoutMs }).catch(() => undefined);
        }
      }
      instance.placements.delete(diskId);
      instance.spec = { ...instance.spec, disks: instance.spec.disks.filter((d) => d.diskId !== diskId) };
      if (placement.tlsId) await rm(this.file(uuid, `tls-${placement.tlsId}`), { recursive: true, force: true });
      await rm(this.file(uuid, `ceph-${placement.protocolNode}.conf`), { force: true });
      await this.saveState(instance);
      this.log(`qemu ${uuid}: detached disk ${diskId}`);
    });
  }

  info(uuid: string): Promise<GuestInfo> {
    return this.locked(uuid, async () => {
      const instance = await this.load(uuid);
      if (!instance) return { uuid, powerState: 'nostate', pid: null, diskIds: [] };
      if (instance.pid === null) return this.infoOf(instance, 'shutdown');
      return this.infoOf(instance, await this.status(await this.qmpOf(instance)));
    });
  }

  async adopt(): Promise<AdoptedGuest[]> {
    await mkdir(this.options.instancesDir, { recursive: true, mode: 0o700 });
    const found: AdoptedGuest[] = [];
    const seenPids = new Set<number>();
    for (const name of await readdir(this.options.instancesDir)) {
      if (!uuidPattern.test(name)) continue;
      const pid = await this.livePid(name);
      if (pid === null) continue;
      seenPids.add(pid);
      const hasSpec = await exists(this.file(name, 'spec.json'));
      if (!hasSpec) {
        found.push({ uuid: name, powerState: 'nostate', pid, diskIds: [], orphan: true });
        this.log(`qemu: orphan QEMU pid ${pid} for ${name} has no spec.json`);
        continue;
      }
      try {
        found.push(await this.info(name));
      } catch (err) {
        this.log(`qemu: cannot adopt ${name} (pid ${pid}): ${String(err)}`);
        found.push({ uuid: name, powerState: 'nostate', pid, diskIds: [], orphan: true });
      }
    }
    // QEMUs started from this instances directory whose directory or pid file is gone.
    for (const { pid, uuid } of await qemuProcessesUnder(this.options.instancesDir)) {
      if (seenPids.has(pid)) continue;
      this.log(`qemu: orphan QEMU pid ${pid} (uuid ${uuid}) has no instance directory record`);
      found.push({ uuid, powerState: 'nostate', pid, diskIds: [], orphan: true });
    }
    return found;
  }

  async consoleLog(uuid: string, lines?: number): Promise<string> {
    const file = this.file(uuid, 'console.log');
    let handle;
    try {
      handle = await open(file, 'r');
    } catch {
      if (!(await exists(this.dirOf(uuid)))) throw new HypervisorError('GuestNotFound', `No instance ${uuid} on this host.`);
      return '';
    }
    try {
      const size = (await handle.stat()).size;
      const length = Math.min(size, consoleReadBytesMax);
      const buffer = Buffer.alloc(length);
      await handle.read(buffer, 0, length, size - length);
      let text = buffer.toString('utf8').replace(/\r/g, '');
      if (lines !== undefined) {
        const all = text.split('\n');
        if (all[all.length - 1] === '') all.pop();
        text = all.slice(-lines).join('\n') + (all.length > 0 ? '\n' : '');
      }
      return text;
    } finally {
      await handle.close();
    }
  }

  domainXml(spec: GuestSpec): string {
    return renderDomainXml(spec, coldPlacements(spec), { consoleLogPath: this.file(spec.uuid, 'console.log'), emulator: this.qemuBinary, guestAgentSocketPath: this.file(spec.uuid, guestAgentSocketName) });
  }

  async guestAgentPing(uuid: string, options: { timeoutMs: number }): Promise<{ answered: boolean; detail: string }> {
    try {
      await this.withGuestAgent(uuid, options.timeoutMs, (qga) => qga.execute('guest-ping', undefined, options.timeoutMs));
      return { answered: true, detail: `the guest agent on ${guestAgentSocketName} answered guest-ping` };
    } catch (err) {
      return { answered: false, detail: (err as Error).message };
    }
  }

  async freezeFilesystems(uuid: string, options: { timeoutMs: number }): Promise<number> {
    return this.withGuestAgent(uuid, options.timeoutMs, async (qga) => {
      const frozen = await qga.execute<number>('guest-fsfreeze-freeze', undefined, options.timeoutMs);
      this.log(`qemu ${uuid}: guest agent froze ${frozen} file systems`);
      return frozen;
    });
  }

  async thawFilesystems(uuid: string, options: { timeoutMs: number }): Promise<void> {
    await this.withGuestAgent(uuid, options.timeoutMs, async (qga) => {
      const thawed = await qga.execute<number>('guest-fsfreeze-thaw', undefined, options.timeoutMs);
      this.log(`qemu ${uuid}: guest agent thawed ${thawed} file systems`);
    });
  }

  // ------------------------------------------------------------------ live migration

  /**
   * Target side of a live migration: starts QEMU for `spec` (the same devices at the same addresses
   * as the source's: same spec, same disk order) paused, listening on `listen` for the source's
   * memory. Shared storage only: the disks are opened inactive until the switch. Refused when a
   * QEMU of this guest already runs here.
   */
  prepareIncoming(spec: GuestSpec, listen: { host: string; port: number }): Promise<GuestInfo> {
    validateSpec(spec);
    return this.locked(spec.uuid, async () => {
      const existing = await this.load(spec.uuid);
      if (existing && existing.pid !== null) throw new HypervisorError('DeviceBusy', `Instance ${spec.uuid} already has a QEMU (pid ${existing.pid}) on this host: a migration target must start empty.`);
      return this.start(spec, { incoming: listen });
    });
  }

  /**
   * Source side: sends the running guest to `target` over TCP (QMP `migrate`), polling
   * `query-migrate` every `pollMs` and reporting progress. On `completed` the source QEMU is stopped
   * (the guest now lives on the target) and the measured figures are returned. On failure or
   * cancelMigration the guest keeps running here and MigrationFailed / MigrationCancelled is thrown.
   */
  migrateTo(
    uuid: string,
    target: { host: string; port: number },
    options: { timeoutMs: number; pollMs?: number; maxBandwidthBytesPerS?: number; onProgress?: (progress: MigrationProgress) => void },
  ): Promise<MigrationResult> {
    return this.locked(uuid, async () => {
      const instance = await this.live(uuid);
      const qmp = await this.qmpOf(instance);
      const timeoutMs = this.qmpTimeoutMs;
      const started = Date.now();
      try {
        // Explicit, not QEMU's defaults: bandwidth (bytes/s; QEMU's default is 128 MiB/s) and the pause allowed at the switch.
        await qmp.execute('migrate-set-parameters', { 'max-bandwidth': options.maxBandwidthBytesPerS ?? migrationBandwidthDefaultBytesPerS, 'downtime-limit': migrationDowntimeLimitMs }, { timeoutMs });
        await qmp.execute('migrate', { uri: `tcp:${target.host}:${target.port}` }, { timeoutMs });
      } catch (err) {
        throw asHypervisorError(err, `starting the migration of ${uuid} to ${target.host}:${target.port}`);
      }
      for (;;) {
        const info = await qmp.execute<QueryMigrate>('query-migrate', undefined, { timeoutMs }).catch((err: unknown) => {
          throw asHypervisorError(err, 'query-migrate');
        });
        const progress: MigrationProgress = {
          status: info.status ?? 'none',
          transferredBytes: info.ram?.transferred ?? 0,
          remainingBytes: info.ram?.remaining ?? 0,
          totalBytes: info.ram?.total ?? 0,
          elapsedMs: Date.now() - started,
        };
        options.onProgress?.(progress);
        if (info.status === 'completed') {
          await this.stopProcess(instance, { graceful: true });
          this.log(`qemu ${uuid}: migrated to ${target.host}:${target.port} in ${Date.now() - started} ms (downtime ${info.downtime ?? '?'} ms)`);
          return { totalMs: Date.now() - started, downtimeMs: info.downtime ?? null, transferredBytes: progress.transferredBytes };
        }
        if (info.status === 'cancelled') {
          throw new HypervisorError('MigrationCancelled', `The migration of ${uuid} to ${target.host}:${target.port} was cancelled; the guest keeps running on this host.`);
        }
        if (info.status === 'failed') {
          throw new HypervisorError('MigrationFailed', `The migration of ${uuid} to ${target.host}:${target.port} failed (${info['error-desc'] ?? 'no reason given'}); the guest keeps running on this host.`);
        }
        if (Date.now() - started > options.timeoutMs) {
          await qmp.execute('migrate_cancel', undefined, { timeoutMs }).catch(() => undefined);
          throw new HypervisorError('MigrationFailed', `The migration of ${uuid} did not complete within ${options.timeoutMs} ms (${progress.remainingBytes} bytes of memory left): cancelled, the guest keeps running on this host. A guest dirtying memory faster than the bandwidth never converges: raise the bandwidth or the downtime limit.`);
        }
        await sleep(options.pollMs ?? 200);
      }
    });
  }

  /**
   * Cancels a migration under way (QMP migrate_cancel), outside the guest's operation lock (migrateTo
   * holds it); migrateTo then throws MigrationCancelled. No migration running: nothing happens.
   */
  async cancelMigration(uuid: string): Promise<void> {
    const instance = this.instances.get(uuid);
    if (!instance || instance.pid === null || !instance.qmp?.isOpen) return;
    await instance.qmp.execute('migrate_cancel', undefined, { timeoutMs: this.qmpTimeoutMs });
  }

  /** Target side after the source reported `completed`: the vCPUs run here. */
  finishIncoming(uuid: string): Promise<GuestInfo> {
    return this.locked(uuid, async () => {
      const instance = await this.live(uuid);
      const qmp = await this.qmpOf(instance);
      // The source reports `completed` when it sent the last bytes; the target may still be loading them.
      const deadline = Date.now() + incomingSettleMs;
      let status = await qmp.execute<{ status: string }>('query-status', undefined, { timeoutMs: this.qmpTimeoutMs });
      while (status.status === 'inmigrate') {
        if (Date.now() > deadline) throw new HypervisorError('DeviceBusy', `Instance ${uuid} is still receiving its migration after ${incomingSettleMs} ms: finish it on the source first.`);
        await sleep(50);
        status = await qmp.execute<{ status: string }>('query-status', undefined, { timeoutMs: this.qmpTimeoutMs });
      }
      if (status.status !== 'running') await qmp.execute('cont', undefined, { timeoutMs: this.qmpTimeoutMs });
      return this.infoOf(instance, 'running');
    });
  }

  /** One agent conversation (the channel takes one client at a time), serialised with the guest's other operations. */
  private withGuestAgent<T>(uuid: string, timeoutMs: number, fn: (qga: QgaClient) => Promise<T>): Promise<T> {
    return this.locked(uuid, async () => {
      const instance = await this.live(uuid);
      if (!(instance.spec.hardware ?? defaultGuestHardware).guestAgent) {
        throw new HypervisorError('GuestAgentUnavailable', `Instance ${uuid} has no guest agent channel: its image lacks hw_qemu_guest_agent=yes. Set it on the image and rebuild the server.`);
      }
      let qga: QgaClient;
      try {
        qga = await QgaClient.connect(this.file(uuid, guestAgentSocketName), { timeoutMs });
      } catch (err) {
        throw new HypervisorError('GuestAgentUnavailable', `Cannot open the guest agent channel of ${uuid}: ${(err as Error).message}`);
      }
      try {
        await qga.sync(timeoutMs).catch((err: Error) => {
          throw new HypervisorError(
            'GuestAgentUnavailable',
            `No agent answered on the guest agent channel of ${uuid} within ${timeoutMs} ms (${err.message}): install and start qemu-guest-agent in the guest (it listens on /dev/virtio-ports/org.qemu.guest_agent.0).`,
          );
        });
        return await fn(qga);
      } catch (err) {
        if (err instanceof HypervisorError) throw err;
        throw new HypervisorError('GuestAgentUnavailable', `The guest agent of ${uuid} refused or did not answer: ${(err as Error).message}`);
      } finally {
        qga.close();
      }
    });
  }

  async close(): Promise<void> {
    for (const instance of this.instances.values()) {
      instance.qmp?.destroy();
      instance.qmp = null;
    }
    this.instances.clear();
  }

  // ------------------------------------------------------------------ start

  private async start(spec: GuestSpec, options: { incoming?: { host: string; port: number } } = {}): Promise<GuestInfo> {
    const uuid = spec.uuid;
    const dir = this.dirOf(uuid);
    const qmpPath = path.join(dir, 'qmp.sock');
    if (Buffer.byteLength(qmpPath) > unixPathBytesMax) {
      throw new HypervisorError('QemuStartFailed', `The QMP socket path ${qmpPath} is longer than ${unixPathBytesMax} bytes (a unix socket limit): configure a shorter instances_path.`);
    }
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700);
    await this.killUnrecorded(uuid, null);
    await removeRuntimeFiles(dir);
    const placements = coldPlacements(spec);
    const instance: Instance = { uuid, dir, spec: { ...spec, disks: spec.disks.map(withoutSecrets) }, placements, nextSeq: spec.disks.length + 1, pid: null, qmp: null };
    this.instances.set(uuid, instance);

    const args = this.baseArgs(spec, dir);
    args.push(...hardwareArgs(spec.hardware ?? defaultGuestHardware, { guestAgentSocketPath: path.join(dir, guestAgentSocketName) }));
    // The URI is given over QMP once the disks are verified, so a disk QEMU cannot open fails before anything listens.
    if (options.incoming) args.push('-incoming', 'defer');
    for (const disk of orderedDisks(spec)) {
      const placement = placements.get(disk.diskId)!;
      const cephConfPath = await this.writeDiskFiles(instance, disk, placement, { secretFile: true });
      if (placement.secretId) {
        args.push('-object', JSON.stringify({ 'qom-type': 'secret', id: placement.secretId, file: path.join(dir, `secret-${placement.secretId}`), format: 'base64' }));
      }
      if (placement.tlsId && disk.source.kind === 'nbd' && disk.source.tlsPsk) {
        args.push(
          '-object',
          JSON.stringify({ 'qom-type': 'tls-creds-psk', id: placement.tlsId, endpoint: 'client', dir: path.join(dir, `tls-${placement.tlsId}`), username: disk.source.tlsPsk.identity }),
        );
      }
      args.push('-blockdev', JSON.stringify(protocolNode(disk, placement, { cephConfPath, tlsDir: null })));
      args.push('-blockdev', JSON.stringify(formatNode(disk, placement)));
      args.push('-device', JSON.stringify(deviceFor(disk, placement)));
    }
    await this.saveState(instance);
    // QEMU creates files 0644 by default: create the logs first so they stay 0600.
    for (const name of ['console.log', 'qemu.log']) {
      closeSync(openSync(path.join(dir, name), 'a', 0o600));
      await chmod(path.join(dir, name), 0o600);
    }
    const qemuLogPath = path.join(dir, 'qemu.log');
    const logOffset = statSync(qemuLogPath).size;
    const logFd = openSync(qemuLogPath, 'a', 0o600);
    const startedAt = Date.now();
    let exited: { code: number | null; signal: string | null } | null = null;
    let child;
    try {
      child = spawn(this.qemuBinary, args, { detached: true, stdio: ['ignore', logFd, logFd], cwd: dir });
    } finally {
      closeSync(logFd);
    }
    const spawnError = new Promise<never>((_, reject) => {
      child.once('error', (err) => reject(new HypervisorError('QemuStartFailed', `Cannot run ${this.qemuBinary}: ${err.message}. Install qemu-system-x86 (apt-get install qemu-system-x86) or set the QEMU binary path.`)));
    });
    const exitedPromise = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        exited = { code, signal };
        resolve();
      });
    });
    child.unref();
    spawnError.catch(() => undefined);
    if (child.pid === undefined) await spawnError;
    const pid = child.pid!;
    instance.pid = pid;
    await writeFile0600(path.join(dir, 'qemu.pid'), `${pid}\n`);

    const fail = async (err: HypervisorError): Promise<never> => {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await waitExit(pid, exitWaitMs);
      instance.qmp?.destroy();
      instance.qmp = null;
      instance.pid = null;
      await removeRuntimeFiles(dir);
      throw err;
    };
    const qemuOutput = async (): Promise<string> => (await readFromOffset(qemuLogPath, logOffset)).trim();

    // QEMU serves QMP once its disks are open (or failed): race the socket against the process exit.
    let qmp: QmpClient;
    const abandon = new AbortController();
    void exitedPromise.then(() => abandon.abort());
    try {
      qmp = await Promise.race([
        QmpClient.connect(qmpPath, { timeoutMs: this.qmpTimeoutMs, retryUntilMs: this.startTimeoutMs, signal: abandon.signal }),
        exitedPromise.then(() => {
          throw new Error('exited');
        }),
        spawnError,
      ]);
    } catch (err) {
      abandon.abort();
      if (err instanceof HypervisorError) return fail(err);
      if (exited !== null) {
        await sleep(50); // let the last stderr bytes land
        return fail(this.startError(spec, await qemuOutput(), exited));
      }
      return fail(new HypervisorError('QemuStartFailed', `QEMU did not answer on ${qmpPath} within ${this.startTimeoutMs} ms. QEMU said: ${qemuSaid(await qemuOutput())}`));
    }
    instance.qmp = qmp;
    qmp.onClosed(() => {
      if (instance.qmp === qmp) instance.qmp = null;
    });
    try {
      await this.verifyDisks(qmp, placements);
      await removeSecretFiles(dir);
      if (options.incoming) {
        await qmp.execute('migrate-incoming', { uri: `tcp:${options.incoming.host}:${options.incoming.port}` }, { timeoutMs: this.qmpTimeoutMs });
        this.log(`qemu ${uuid}: pid ${pid} waits for an incoming migration on ${options.incoming.host}:${options.incoming.port}`);
        return this.infoOf(instance, 'paused');
      }
      await qmp.execute('cont', undefined, { timeoutMs: this.qmpTimeoutMs });
    } catch (err) {
      return fail(asHypervisorError(err, 'starting the guest'));
    }
    this.log(`qemu ${uuid}: started pid ${pid} (${spec.virtType === 'kvm' ? 'kvm' : 'tcg'}, ${spec.disks.length} disks) in ${Date.now() - startedAt} ms`);
    return this.infoOf(instance, 'running');
  }

  private baseArgs(spec: GuestSpec, dir: string): string[] {
    const kvm = spec.virtType === 'kvm';
    return [
      '-name', `guest=${domainName(spec.uuid)},debug-threads=on`,
      '-uuid', spec.uuid,
      '-machine', (spec.hardware ?? defaultGuestHardware).machineType,
      '-accel', kvm ? 'kvm' : `tcg,tb-size=${this.tbSizeMiB}`,
      '-cpu', kvm ? 'host' : 'qemu64',
      '-m', `${spec.memoryMiB}`,
      '-smp', `${spec.vcpus}`,
      '-nodefaults', '-no-user-config', '-display', 'none', '-vga', 'none',
      '-rtc', 'base=utc',
      '-boot', 'strict=on',
      '-chardev', `file,id=charserial0,path=${keyvalEscape(path.join(dir, 'console.log'))},append=on`,
      '-serial', 'chardev:charserial0',
      '-qmp', `unix:${keyvalEscape(path.join(dir, 'qmp.sock'))},server=on,wait=off`,
      '-no-shutdown',
      '-S',
      '-msg', 'timestamp=on',
    ];
  }

  private startError(spec: GuestSpec, output: string, exited: { code: number | null; signal: string | null }): HypervisorError {
    const nodeMatch = /"node-name":\s*"(n\d+)-(?:src|fmt)"/.exec(output);
    const placements = coldPlacements(spec);
    const disk = nodeMatch ? spec.disks.find((d) => placements.get(d.diskId)?.protocolNode === `${nodeMatch[1]}-src`) ?? null : null;
    if (disk || /rbd|nbd|Could not open|blockdev/i.test(output)) return diskOpenError(disk, output);
    return new HypervisorError('QemuStartFailed', `QEMU exited (${exited.signal ?? `code ${exited.code}`}) while starting the guest. QEMU said: ${qemuSaid(output)}`);
  }

  /** Every expected disk is behind its device with the expected node before the vCPUs run. */
  private async verifyDisks(qmp: QmpClient, placements: Map<string, DiskPlacement>): Promise<void> {
    const blocks = await qmp.execute<{ qdev?: string; inserted?: { 'node-name'?: string } }[]>('query-block', undefined, { timeoutMs: this.qmpTimeoutMs });
    for (const placement of placements.values()) {
      const block = blocks.find((b) => qdevIs(b.qdev, placement.deviceId));
      if (!block || block.inserted?.['node-name'] !== placement.formatNode) {
        throw new HypervisorError('Internal', `QEMU started without disk ${placement.diskId} on device ${placement.deviceId} (query-block devices: ${JSON.stringify(blocks.map((b) => `${b.qdev ?? '?'}=${b.inserted?.['node-name'] ?? 'empty'}`)).slice(0, 400)})`);
      }
    }
  }

  /** ceph.conf, secret and PSK files of one disk; returns the ceph.conf path for rbd disks. */
  private async writeDiskFiles(instance: Instance, disk: GuestDisk, placement: DiskPlacement, options: { secretFile: boolean }): Promise<string | null> {
    const source = disk.source;
    if (source.kind === 'rbd') {
      let base: string | null = null;
      const basePath = source.cephConfPath ?? (source.monitorHosts.length === 0 ? path.join(this.options.cephConfDir ?? '/etc/ceph', 'ceph.conf') : null);
      if (basePath) {
        try {
          base = await readFile(basePath, 'utf8');
        } catch (err) {
          throw new HypervisorError('CephClientMissing', `Cannot read ${basePath} for RBD disk ${disk.diskId}: ${(err as Error).message}. Install the cluster's ceph.conf on this compute host (or set images_rbd_ceph_conf / the monitor hosts).`);
        }
      }
      const confPath = path.join(instance.dir, `ceph-${placement.protocolNode}.conf`);
      await writeFile0600(confPath, cephConfText({ baseConfText: base, monitorHosts: source.monitorHosts }));
      if (options.secretFile && placement.secretId) await writeFile0600(path.join(instance.dir, `secret-${placement.secretId}`), source.keyBase64);
      return confPath;
    }
    if (source.kind === 'nbd' && source.tlsPsk && placement.tlsId) {
      const tlsDir = path.join(instance.dir, `tls-${placement.tlsId}`);
      await mkdir(tlsDir, { recursive: true, mode: 0o700 });
      await writeFile0600(path.join(tlsDir, 'keys.psk'), `${source.tlsPsk.identity}:${source.tlsPsk.keyHex}\n`);
    }
    return null;
  }

  // ------------------------------------------------------------------ state

  /** The instance as known in memory, else rebuilt from its directory; `pid` null when no live QEMU of it runs. */
  private async load(uuid: string): Promise<Instance | null> {
    const dir = this.dirOf(uuid);
    let instance = this.instances.get(uuid) ?? null;
    if (!instance) {
      let spec: GuestSpec;
      let devices: DevicesFile;
      try {
        spec = JSON.parse(await readFile(path.join(dir, 'spec.json'), 'utf8')) as GuestSpec;
        devices = JSON.parse(await readFile(path.join(dir, 'devices.json'), 'utf8')) as DevicesFile;
      } catch {
        return null;
      }
      instance = { uuid, dir, spec, placements: new Map(devices.placements.map((p) => [p.diskId, p])), nextSeq: devices.nextSeq, pid: null, qmp: null };
      instance.pid = await this.livePid(uuid);
      this.instances.set(uuid, instance);
      if (instance.pid !== null) await this.reconcile(instance);
      return instance;
    }
    if (instance.pid !== null && !processAlive(instance.pid)) {
      instance.pid = null;
      instance.qmp?.destroy();
      instance.qmp = null;
    }
    return instance;
  }

  /** After re-attaching: drop disks QEMU no longer has (an unplug completed while no agent listened). */
  private async reconcile(instance: Instance): Promise<void> {
    const qmp = await this.qmpOf(instance);
    const blocks = await qmp.execute<{ qdev?: string }[]>('query-block', undefined, { timeoutMs: this.qmpTimeoutMs });
    let changed = false;
    for (const placement of [...instance.placements.values()]) {
      if (!blocks.some((b) => qdevIs(b.qdev, placement.deviceId))) {
        this.log(`qemu ${instance.uuid}: disk ${placement.diskId} is no longer in QEMU; forgetting it`);
        instance.placements.delete(placement.diskId);
        instance.spec = { ...instance.spec, disks: instance.spec.disks.filter((d) => d.diskId !== placement.diskId) };
        changed = true;
      }
    }
    if (changed) await this.saveState(instance);
  }

  private async live(uuid: string): Promise<Instance> {
    const instance = await this.load(uuid);
    if (!instance || instance.pid === null) throw new HypervisorError('GuestNotFound', `Instance ${uuid} has no running QEMU on this host: start it first.`);
    return instance;
  }

  /**
   * QEMUs of this instance that no pid file records: a start interrupted (Pumice killed) between
   * spawning QEMU and writing qemu.pid. Such a guest never finished starting, so a new start or a
   * destroy kills it: otherwise it would run on beside the new one, unseen and never stopped.
   */
  private async killUnrecorded(uuid: string, recordedPid: number | null): Promise<void> {
    for (const found of await qemuProcessesUnder(this.options.instancesDir)) {
      const pid = found.pid;
      if (pid === recordedPid || found.uuid !== uuid) continue;
      this.log(`qemu ${uuid}: killing QEMU pid ${pid}, left by an interrupted start (no pid file records it)`);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        continue;
      }
      await waitExit(pid, exitWaitMs);
    }
  }

  private async livePid(uuid: string): Promise<number | null> {
    let pid: number;
    try {
      pid = Number((await readFile(this.file(uuid, 'qemu.pid'), 'utf8')).trim());
    } catch {
      return null;
    }
    if (!Number.isInteger(pid) || pid <= 0 || !processAlive(pid)) return null;
    const cmdline = await readCmdline(pid);
    // A recycled pid is not ours: it must be QEMU for this uuid.
    if (!cmdline || !/qemu/.test(cmdline[0] ?? '') || cmdline[cmdline.indexOf('-uuid') + 1] !== uuid) return null;
    return pid;
  }

  private async qmpOf(instance: Instance): Promise<QmpClient> {
    if (instance.qmp?.isOpen) return instance.qmp;
    try {
      const qmp = await QmpClient.connect(path.join(instance.dir, 'qmp.sock'), { timeoutMs: this.qmpTimeoutMs });
      qmp.onClosed(() => {
        if (instance.qmp === qmp) instance.qmp = null;
      });
      instance.qmp = qmp;
      return qmp;
    } catch (err) {
      throw new HypervisorError('QmpTimeout', `Cannot talk to QEMU of ${instance.uuid} (pid ${instance.pid}) over ${path.join(instance.dir, 'qmp.sock')}: ${(err as Error).message}`);
    }
  }

  private async status(qmp: QmpClient): Promise<GuestPowerState> {
    try {
      const result = await qmp.execute<{ status: string }>('query-status', undefined, { timeoutMs: this.qmpTimeoutMs });
      return powerStateOf(result.status);
    } catch (err) {
      throw asHypervisorError(err, 'query-status');
    }
  }

  private infoOf(instance: Instance, powerState: GuestPowerState): GuestInfo {
    return { uuid: instance.uuid, powerState, pid: instance.pid, diskIds: [...instance.placements.keys()] };
  }

  private async saveDevices(instance: Instance): Promise<void> {
    const devices: DevicesFile = { version: 1, nextSeq: instance.nextSeq, placements: [...instance.placements.values()] };
    await writeFile0600(path.join(instance.dir, 'devices.json'), `${JSON.stringify(devices, null, 2)}\n`);
  }

  private async saveState(instance: Instance): Promise<void> {
    await writeFile0600(path.join(instance.dir, 'spec.json'), `${JSON.stringify(instance.spec, null, 2)}\n`);
    await this.saveDevices(instance);
    const xml = renderDomainXml(instance.spec, instance.placements, {
      consoleLogPath: path.join(instance.dir, 'console.log'),
      emulator: this.qemuBinary,
      guestAgentSocketPath: path.join(instance.dir, guestAgentSocketName),
    });
    await writeFile0600(path.join(instance.dir, 'libvirt.xml'), xml);
  }

  private async stopProcess(instance: Instance, options: { graceful: boolean }): Promise<void> {
    const pid = instance.pid;
    if (pid === null) return;
    if (options.graceful && !instance.qmp?.isOpen) await this.qmpOf(instance).catch(() => undefined);
    if (options.graceful && instance.qmp?.isOpen) {
      await instance.qmp.execute('quit', undefined, { timeoutMs: 3_000 }).catch(() => undefined);
      await waitExit(pid, 3_000);
    }
    if (processAlive(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    if (!(await waitExit(pid, exitWaitMs))) throw new HypervisorError('Internal', `QEMU pid ${pid} of ${instance.uuid} did not exit after SIGKILL within ${exitWaitMs} ms.`);
    instance.qmp?.destroy();
    instance.qmp = null;
    instance.pid = null;
    await removeRuntimeFiles(instance.dir);
  }

  private async freeSlot(instance: Instance, qmp: QmpClient): Promise<number> {
    const used = new Set([...instance.placements.values()].map((p) => p.slot));
    try {
      const buses = await qmp.execute<{ bus: number; devices: { slot: number }[] }[]>('query-pci', undefined, { timeoutMs: this.qmpTimeoutMs });
      for (const bus of buses) if (bus.bus === 0) for (const device of bus.devices) used.add(device.slot);
    } catch (err) {
      throw asHypervisorError(err, 'query-pci');
    }
    for (let slot = pciSlotFirst; slot <= pciSlotLast; slot++) if (!used.has(slot)) return slot;
    throw new HypervisorError('DeviceBusy', `Instance ${instance.uuid} has no free PCI slot for another disk (at most ${disksMax}): detach a disk first.`);
  }

  private freeTarget(instance: Instance): string {
    const used = new Set([...instance.placements.values()].map((p) => p.target));
    const bus = busOf(instance.spec);
    for (let i = 0; ; i++) if (!used.has(targetName(i, bus))) return targetName(i, bus);
  }

  private freeLun(instance: Instance): number {
    const used = new Set([...instance.placements.values()].map((p) => p.lun));
    for (let lun = 0; lun <= scsiLunMax; lun++) if (!used.has(lun)) return lun;
    throw new HypervisorError('DeviceBusy', `Instance ${instance.uuid} has no free SCSI LUN for another disk (at most ${scsiLunMax + 1}): detach a disk first.`);
  }

  private async devicePresent(qmp: QmpClient, deviceId: string): Promise<boolean> {
    const blocks = await qmp.execute<{ qdev?: string }[]>('query-block', undefined, { timeoutMs: this.qmpTimeoutMs }).catch(() => []);
    return blocks.some((b) => qdevIs(b.qdev, deviceId));
  }

  private locked<T>(uuid: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(uuid, fn);
  }
}

// ------------------------------------------------------------------ helpers

function validateSpec(spec: GuestSpec): void {
  if (!uuidPattern.test(spec.uuid)) throw new HypervisorError('Internal', `not an instance uuid: ${JSON.stringify(spec.uuid)}`);
  if (!Number.isInteger(spec.vcpus) || spec.vcpus < 1) throw new HypervisorError('Internal', `vcpus must be a positive integer, got ${spec.vcpus}`);
  if (!Number.isInteger(spec.memoryMiB) || spec.memoryMiB < 16) throw new HypervisorError('Internal', `memoryMiB must be an integer >= 16, got ${spec.memoryMiB}`);
  const max = busOf(spec) === 'scsi' ? scsiLunMax + 1 : disksMax;
  if (spec.disks.length > max) throw new HypervisorError('Internal', `at most ${max} disks per guest, got ${spec.disks.length}`);
  const ids = new Set<string>();
  for (const disk of spec.disks) {
    if (ids.has(disk.diskId)) throw new HypervisorError('Internal', `disk ${disk.diskId} appears twice in the guest spec`);
    ids.add(disk.diskId);
    validateDisk(disk);
  }
}

function validateDisk(disk: GuestDisk): void {
  const source = disk.source;
  if (source.kind === 'rbd') {
    const key = source.keyBase64.trim();
    if (!key || !/^[A-Za-z0-9+/]+={0,2}$/.test(key) || Buffer.from(key, 'base64').length < 16) {
      throw new HypervisorError(
        'CephKeyMissing',
        `No usable cephx key for client.${source.user} on this compute host (needed to open ${source.pool}/${source.image}): install /etc/ceph/ceph.client.${source.user}.keyring${source.secretUuid ? ` or define libvirt secret ${source.secretUuid} (rbd_secret_uuid)` : ''} with the key from 'ceph auth get-key client.${source.user}'.`,
      );
    }
    if (source.monitorHosts.length === 0 && source.cephConfPath === null) {
      // Allowed: the operator's /etc/ceph/ceph.conf (cephConfDir) names the monitors.
    }
  }
}

/** Boot disks first (by boot index), then data disks in the spec's order: slots 0x04.. and vda.. follow that order. */
function orderedDisks(spec: GuestSpec): GuestDisk[] {
  const boot = spec.disks.filter((d) => d.bootIndex !== undefined).sort((a, b) => a.bootIndex! - b.bootIndex!);
  return [...boot, ...spec.disks.filter((d) => d.bootIndex === undefined)];
}

function coldPlacements(spec: GuestSpec): Map<string, DiskPlacement> {
  const placements = new Map<string, DiskPlacement>();
  const bus = busOf(spec);
  orderedDisks(spec).forEach((disk, index) =>
    placements.set(disk.diskId, placementFor(disk, pciSlotFirst + index, targetName(index, bus), index + 1, bus === 'scsi' ? { lun: index } : null)),
  );
  return placements;
}

/** query-block's qdev of a device: `/machine/peripheral/ID/virtio-backend` for virtio-blk, the bare id `ID` for scsi-hd. */
function qdevIs(qdev: string | undefined, deviceId: string): boolean {
  return qdev !== undefined && (qdev === deviceId || qdev.endsWith(`/peripheral/${deviceId}`) || qdev.includes(`/peripheral/${deviceId}/`));
}

function busOf(spec: GuestSpec): 'virtio' | 'scsi' {
  return (spec.hardware ?? defaultGuestHardware).diskBus;
}

function withoutSecrets(disk: GuestDisk): GuestDisk {
  const source = disk.source;
  if (source.kind === 'rbd') return { ...disk, source: { ...source, keyBase64: '' } };
  if (source.kind === 'nbd' && source.tlsPsk) return { ...disk, source: { ...source, tlsPsk: { identity: source.tlsPsk.identity, keyHex: '' } } };
  return disk;
}

function powerStateOf(status: string): GuestPowerState {
  switch (status) {
    case 'running':
      return 'running';
    case 'shutdown':
      return 'shutdown';
    case 'guest-panicked':
    case 'internal-error':
      return 'crashed';
    default:
      // prelaunch, paused, io-error, suspended, inmigrate, ...: the vCPUs do not run.
      return 'paused';
  }
}

function asHypervisorError(err: unknown, what: string): HypervisorError {
  if (err instanceof HypervisorError) return err;
  if (err instanceof QmpError) {
    if (err.qmpClass === 'timeout') return new HypervisorError('QmpTimeout', `QEMU did not answer ${what} in time: ${err.message}`);
    if (err.qmpClass === 'closed') return new HypervisorError('QmpTimeout', `QEMU's QMP connection closed during ${what} (did QEMU exit?): ${err.message}`);
    return new HypervisorError('Internal', `QEMU refused ${what}: ${err.message}`);
  }
  return new HypervisorError('Internal', `${what} failed: ${String(err)}`);
}

/** `,` is doubled inside QEMU keyval option values. */
function keyvalEscape(value: string): string {
  return value.replace(/,/g, ',,');
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A zombie (exited, not yet reaped by its parent) is not a running guest.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

async function readCmdline(pid: number): Promise<string[] | null> {
  try {
    return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter((x) => x !== '');
  } catch {
    return null;
  }
}

/** Live QEMU processes whose QMP socket lies under `instancesDir`, with their `-uuid`. */
async function qemuProcessesUnder(instancesDir: string): Promise<{ pid: number; uuid: string }[]> {
  const found: { pid: number; uuid: string }[] = [];
  const prefix = `unix:${path.resolve(instancesDir)}/`;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const cmdline = await readCmdline(pid);
    if (!cmdline || !/qemu-system/.test(cmdline[0] ?? '')) continue;
    const qmpIndex = cmdline.indexOf('-qmp');
    if (qmpIndex < 0 || !cmdline[qmpIndex + 1]?.startsWith(prefix)) continue;
    if (!processAlive(pid)) continue;
    found.push({ pid, uuid: cmdline[cmdline.indexOf('-uuid') + 1] ?? 'unknown' });
  }
  return found;
}

export async function waitExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (processAlive(pid)) {
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
  return true;
}

async function writeFile0600(file: string, data: string): Promise<void> {
  const temp = `${file}.tmp`;
  await writeFile(temp, data, { mode: 0o600 });
  await chmod(temp, 0o600);
  await rename(temp, file);
}

async function removeSecretFiles(dir: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (name.startsWith('secret-')) await unlink(path.join(dir, name)).catch(() => undefined);
  }
}

/** Files that only mean something while QEMU runs. Keeps console.log, qemu.log, libvirt.xml, spec.json, devices.json. */
async function removeRuntimeFiles(dir: string): Promise<void> {
  await removeSecretFiles(dir);
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (name.startsWith('tls-')) await rm(path.join(dir, name), { recursive: true, force: true });
  }
  for (const name of ['qmp.sock', 'qemu.pid', guestAgentSocketName]) await rm(path.join(dir, name), { force: true });
}

async function readFromOffset(file: string, offset: number): Promise<string> {
  try {
    const text = await readFile(file, 'utf8');
    return text.slice(offset);
  } catch {
    return '';
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
