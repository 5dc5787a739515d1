/**
 * The local backend: each volume is a sparse file in a directory (thin
 * provisioning by the filesystem), snapshots and clones are sparse-aware
 * copies (reflinks where the filesystem has them), and consumers reach the
 * bytes through Pumice's NBD server: each connection gets its own secret
 * export name (and TLS-PSK key when [DEFAULT] nbd_tls is on), revoked when
 * the connection is terminated.
 *
 * Every write of a new file goes to a temporary name and is renamed into
 * place, so a crash never leaves a half-copied volume under its real name.
 */
import { execFile } from 'node:child_process';
import { closeSync, ftruncateSync, openSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, statfs, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { makePrivate } from '../../file-modes.ts';
import { connectionKeyOf, type ExportGrant, type ExportGrantRequest } from '../../nbd/exports.ts';
import {
  DriverError,
  gib,
  type CapacityReport,
  type Clones,
  type ConnectionInfo,
  type Connector,
  type DataAccess,
  type FileAccess,
  type FileImport,
  type ManageableObject,
  type ManageExisting,
  type ManageExistingSnapshots,
  type ManageableSnapshot,
  type SnapshotRef,
  type Snapshots,
  type VolumeBackend,
  type VolumeData,
  type VolumeRef,
} from './driver.ts';

const execFileAsync = promisify(execFile);
const copyTimeoutMs = 6 * 3600_000;

/** How the local backend publishes volumes to consumers (implemented over the NBD server's export table). */
export interface BlockExporter {
  /** Issues a fresh secret export of the volume for one connection key (replacing that key's earlier one). */
  grant(request: ExportGrantRequest): ExportGrant;
  /** Revokes one connection key's export, or all of the volume's when null; cuts their live connections. */
  revoke(volumeId: string, connectionKey: string | null): void;
  address(): { host: string; port: number; tls: boolean };
}

/** An exporter for processes that never serve NBD (doctor, unit tests): grants nothing reachable. */
export const nullExporter: BlockExporter = {
  grant: () => {
    throw new DriverError('Unreachable', 'this process does not serve NBD: initialize the connection through a running Pumice');
  },
  revoke: () => undefined,
  address: () => ({ host: '', port: 0, tls: false }),
};

export interface LocalBackendOptions {
  section: string;
  directory: string;
  exporter: BlockExporter;
  reportDiscard: boolean;
  /** Start-up sweep and permission fixes are logged, one line per file. */
  log?: (message: string) => void;
}

/** Temporary files this backend makes: `.tmp-<uuid>`, `.tmp-<uuid>-revert`, each maybe `.<pid>` (a copy's); nothing else is swept. */
const tempNamePattern = /^\.tmp-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(-revert)?(\.\d+)?$/;

export class LocalBackend implements VolumeBackend, Snapshots, Clones, FileAccess, DataAccess, FileImport, ManageExisting, ManageExistingSnapshots {
  readonly driverName = 'local';
  readonly driverVersion = '1.0.0';
  readonly section: string;
  private readonly directory: string;

  constructor(private readonly options: LocalBackendOptions) {
    this.section = options.section;
    this.directory = options.directory;
  }

  private volumePath(id: string): string {
    return join(this.directory, `volume-${id}`);
  }
  private snapshotPath(id: string): string {
    return join(this.directory, `snapshot-${id}`);
  }
  private tempPath(id: string): string {
    return join(this.directory, `.tmp-${id}`);
  }

  /** Read-only accessor for the backup role (FileAccess). */
  volumeFilePath(volume: VolumeRef): string {
    return this.volumePath(volume.id);
  }

  withdrawExport(volume: VolumeRef): void {
    this.options.exporter.revoke(volume.id, null);
  }

  async openVolumeData(volume: VolumeRef, writable: boolean): Promise<VolumeData> {
    const path = this.volumePath(volume.id);
    let handle;
    try {
      handle = await open(path, writable ? 'r+' : 'r');
    } catch (error) {
      this.options.log?.(`local backend [${this.section}]: cannot open ${path}: ${(error as Error).message}`);
      throw new DriverError('NotFound', `volume ${volume.id} has no file in the local backend [${this.section}]`);
    }
    const { size } = await handle.stat();
    const fh = handle;
    return {
      sizeBytes: size,
      async readInto(offset, target) {
        const { bytesRead } = await fh.read(target, 0, target.length, offset);
        return bytesRead;
      },
      async write(offset, data) {
        await fh.write(data, 0, data.length, offset);
      },
      async close() {
        try {
          if (writable) await fh.sync();
        } finally {
          await fh.close();
        }
      },
    };
  }

  async start(): Promise<void> {
    const log = this.options.log ?? (() => undefined);
    try {
      await mkdir(this.directory, { recursive: true, mode: 0o700 });
      for (const entry of await readdir(this.directory, { withFileTypes: true })) {
        const path = join(this.directory, entry.name);
        // Temporary files are copies interrupted by a crash; the task that made them re-runs from scratch.
        // Only regular files named as this backend names them are removed; never a directory or a link.
        if (entry.isFile() && tempNamePattern.test(entry.name)) {
          await rm(path, { force: true });
          log(`local backend [${this.section}]: removed ${path} (a copy a crash interrupted)`);
        } else if (entry.isFile() && /^(volume|snapshot)-/.test(entry.name)) {
          // Volumes written by an older Pumice (before umask 077) may be readable by other users.
          const mode = (await stat(path)).mode & 0o777;
          if ((mode & 0o077) !== 0) {
            makePrivate(path);
            log(`local backend [${this.section}]: ${path} had mode ${mode.toString(8)}; now 600`);
          }
        }
      }
    } catch (error) {
      throw new DriverError('Unreachable', `local backend [${this.section}]: cannot use directory ${this.directory}: ${(error as Error).message}. Check local_volume_dir and its permissions.`);
    }
  }

  async stop(): Promise<void> {}

  // Creating and deleting a sparse file are metadata-only calls of microseconds: done synchronously,
  // they skip five thread-pool round trips each, which under load cost more than the work (bench/).
  async createVolume(volume: VolumeRef): Promise<void> {
    const path = this.volumePath(volume.id);
    const existing = statSyncOrNull(path);
    if (existing && existing.size === volume.sizeGiB * gib) return;
    const temp = this.tempPath(volume.id);
    const fd = openSync(temp, 'w');
    try {
      ftruncateSync(fd, volume.sizeGiB * gib);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, path);
  }

  async deleteVolume(volume: VolumeRef): Promise<void> {
    this.options.exporter.revoke(volume.id, null);
    unlinkIfPresent(this.volumePath(volume.id));
    unlinkIfPresent(this.tempPath(volume.id));
  }

  async extendVolume(volume: VolumeRef, newSizeGiB: number): Promise<void> {
    const path = this.volumePath(volume.id);
    const current = await statOrNull(path);
    if (!current) throw new DriverError('NotFound', `volume ${volume.id} has no file in the local backend [${this.section}]`);
    if (current.size < newSizeGiB * gib) await truncate(path, newSizeGiB * gib);
  }

  async reportCapacity(): Promise<CapacityReport> {
    const fs = await statfs(this.directory);
    return {
      totalCapacityGiB: (fs.blocks * fs.bsize) / gib,
      freeCapacityGiB: (fs.bavail * fs.bsize) / gib,
      thinProvisioningSupport: true,
      thickProvisioningSupport: false,
      storageProtocol: 'nbd',
    };
  }

  /**
   * Grants this connection (the connector's `attachment_id`, else its host/initiator) a fresh
   * secret export: a 256-bit export name, plus a TLS-PSK identity and key when the NBD server
   * requires TLS. The result is self-describing for qemu's nbd blockdev (`server`, `export`,
   * `tls-creds` of type tls-creds-psk) and libnbd (`nbds://` URI with the PSK file).
   * Calling it again for the same connection issues a new export; connections already open stay.
   */
  async initializeConnection(volume: VolumeRef, connector: Connector): Promise<ConnectionInfo> {
    const path = this.volumePath(volume.id);
    const current = await statOrNull(path);
    if (!current) throw new DriverError('NotFound', `volume ${volume.id} has no file in the local backend [${this.section}]`);
    const readOnly = connector['mode'] === 'ro';
    const grant = this.options.exporter.grant({ backend: this.section, volumeId: volume.id, path, readOnly, connectionKey: connectionKeyOf(connector) });
    const { host, port, tls } = this.options.exporter.address();
    const uriHost = host.includes(':') ? `[${host}]` : host;
    return {
      driver_volume_type: 'nbd',
      data: {
        host,
        port,
        export_name: grant.exportName,
        uri: `${tls ? 'nbds' : 'nbd'}://${uriHost}:${port}/${grant.exportName}`,
        tls,
        ...(grant.tlsPsk ? { tls_psk_identity: grant.tlsPsk.identity, tls_psk_key: grant.tlsPsk.keyHex } : {}),
        volume_id: volume.id,
        access_mode: readOnly ? 'ro' : 'rw',
        discard: this.options.reportDiscard,
      },
    };
  }

  /** Revokes the export of this connection (all of the volume's when the connector is null) and cuts its clients. */
  async terminateConnection(volume: VolumeRef, connector: Connector | null): Promise<void> {
    this.options.exporter.revoke(volume.id, connector ? connectionKeyOf(connector) : null);
  }

  async listManageable(): Promise<ManageableObject[]> {
    const out: ManageableObject[] = [];
    for (const name of await readdir(this.directory)) {
      if (/^(volume|snapshot|tmp)-|\.tmp$|^\./.test(name)) continue;
      const info = await statOrNull(join(this.directory, name));
      if (info?.isFile()) out.push({ name, sizeBytes: info.size });
    }
    return out;
  }

  /** The source is a file directly in local_volume_dir (no path: the backend adopts only its own directory's files). */
  async manageExisting(volume: VolumeRef, sourceName: string): Promise<{ sizeGiB: number }> {
    if (!/^[^/\0]+$/.test(sourceName) || sourceName === '.' || sourceName === '..') {
      throw new DriverError('Invalid', `source-name '${sourceName.slice(0, 100)}' must be a file name in the backend's local_volume_dir, without a path`);
    }
    const source = join(this.directory, sourceName);
    const target = this.volumePath(volume.id);
    const found = (await statOrNull(source)) ?? (await statOrNull(target));
    if (!found || !found.isFile()) throw new DriverError('NotFound', `file ${sourceName} does not exist in the local backend [${this.section}]; list what can be managed with GET /manageable_volumes?host=...`);
    if (await statOrNull(source)) await rename(source, target);
    return { sizeGiB: Math.max(1, Math.ceil(found.size / gib)) };
  }

  async unmanage(volume: VolumeRef, name: string): Promise<void> {
    this.options.exporter.revoke(volume.id, null);
    const path = this.volumePath(volume.id);
    if (await statOrNull(path)) await rename(path, join(this.directory, name));
  }

  /** A file of the directory does not say which volume it is a snapshot of: none are offered (Cinder's default). */
  async listManageableSnapshots(): Promise<ManageableSnapshot[]> {
    return [];
  }

  /** Any file of the directory that is not Pumice's and not larger than the volume (a path is refused). */
  async canManageSnapshot(volume: VolumeRef, sourceName: string): Promise<boolean> {
    if (!/^[^/\0]+$/.test(sourceName) || sourceName === '.' || sourceName === '..' || /^(volume|snapshot|tmp)-|\.tmp$|^\./.test(sourceName)) return false;
    const info = await statOrNull(join(this.directory, sourceName));
    return !!info?.isFile() && info.size <= volume.sizeGiB * gib;
  }

  async manageExistingSnapshot(snapshot: SnapshotRef, sourceName: string): Promise<{ sizeGiB: number }> {
    if (!/^[^/\0]+$/.test(sourceName) || sourceName === '.' || sourceName === '..') {
      throw new DriverError('Invalid', `source-name '${sourceName.slice(0, 100)}' must be a file name in the backend's local_volume_dir, without a path`);
    }
    const source = join(this.directory, sourceName);
    const target = this.snapshotPath(snapshot.id);
    const found = (await statOrNull(source)) ?? (await statOrNull(target));
    if (!found || !found.isFile()) throw new DriverError('NotFound', `file ${sourceName} does not exist in the local backend [${this.section}]`);
    if (await statOrNull(source)) await rename(source, target);
    return { sizeGiB: Math.max(1, Math.ceil(found.size / gib)) };
  }

  async unmanageSnapshot(snapshot: SnapshotRef, name: string): Promise<void> {
    const path = this.snapshotPath(snapshot.id);
    if (await statOrNull(path)) await rename(path, join(this.directory, name));
  }

  async listResources(): Promise<{ volumeIds: string[]; snapshotIds: string[] }> {
    const names = await readdir(this.directory);
    return {
      volumeIds: names.filter((n) => n.startsWith('volume-')).map((n) => n.slice('volume-'.length)),
      snapshotIds: names.filter((n) => n.startsWith('snapshot-')).map((n) => n.slice('snapshot-'.length)),
    };
  }

  async createSnapshot(snapshot: SnapshotRef): Promise<void> {
    const target = this.snapshotPath(snapshot.id);
    if (await statOrNull(target)) return;
    await this.copyInto(this.volumePath(snapshot.volumeId), target, snapshot.id, null);
  }

  async deleteSnapshot(snapshot: SnapshotRef): Promise<void> {
    await rm(this.snapshotPath(snapshot.id), { force: true });
    await rm(this.tempPath(snapshot.id), { force: true });
  }

  async createVolumeFromSnapshot(volume: VolumeRef, snapshot: SnapshotRef): Promise<void> {
    if (await statOrNull(this.volumePath(volume.id))) return;
    await this.copyInto(this.snapshotPath(snapshot.id), this.volumePath(volume.id), volume.id, volume.sizeGiB);
  }

  async cloneVolume(volume: VolumeRef, source: VolumeRef): Promise<void> {
    if (await statOrNull(this.volumePath(volume.id))) return;
    await this.copyInto(this.volumePath(source.id), this.volumePath(volume.id), volume.id, volume.sizeGiB);
  }

  async revertToSnapshot(volume: VolumeRef, snapshot: SnapshotRef): Promise<void> {
    // Copy beside the volume, then rename over it: a crash leaves either the old or the reverted content.
    // Withdraw the export first: a connection opened before the rename would keep writing into the
    // replaced file and its acknowledged writes would be lost; consumers re-initialize the connection.
    this.options.exporter.revoke(volume.id, null);
    await this.copyInto(this.snapshotPath(snapshot.id), this.volumePath(volume.id), `${volume.id}-revert`, volume.sizeGiB);
  }

  /** An image file of this host copied in by `cp` (no user-space copy, no HTTP), fsync'd as a streamed copy was. */
  async createVolumeFromFile(volume: VolumeRef, sourcePath: string): Promise<{ allocatedBytes: number }> {
    await this.copyInto(sourcePath, this.volumePath(volume.id), volume.id, volume.sizeGiB, { durable: true });
    return { allocatedBytes: (await stat(this.volumePath(volume.id))).blocks * 512 };
  }

  /** Sparse-aware copy (`cp` seeks over holes and reflinks when it can) through a temp file, then resize; `durable` fsyncs it before the rename. */
  private async copyInto(source: string, target: string, tempId: string, sizeGiB: number | null, options: { durable?: boolean } = {}): Promise<void> {
    if (!(await statOrNull(source))) {
      // Messages reach non-admin users: they name the backend, not the host's paths.
      this.options.log?.(`local backend [${this.section}]: copy source ${source} is missing`);
      throw new DriverError('NotFound', `the source of this copy has no file in the local backend [${this.section}]`);
    }
    // A copy of this process only: the `cp` of a process killed mid-copy outlives it and goes on writing into
    // the file it opened. Under a shared name the re-run's `cp` would open that same file (and truncate it
    // under the orphan, or be truncated by it) and rename it into place while the orphan still writes there.
    const temp = `${this.tempPath(tempId)}.${process.pid}`;
    try {
      await execFileAsync('cp', ['--reflink=auto', '--sparse=always', '--', source, temp], { timeout: copyTimeoutMs });
      if (sizeGiB !== null) {
        const copied = await stat(temp);
        if (copied.size < sizeGiB * gib) await truncate(temp, sizeGiB * gib);
      }
      if (options.durable) await syncFile(temp);
      await rename(temp, target);
    } catch (error) {
      await rm(temp, { force: true });
      const message = (error as { stderr?: string }).stderr?.trim() || (error as Error).message;
      if (/No space left/i.test(message)) {
        this.options.log?.(`local backend [${this.section}]: copy to ${target} failed: ${message}`);
        throw new DriverError('NoSpace', `local backend [${this.section}] is full: free space there or extend it, then retry`);
      }
      throw error;
    }
  }
}

async function syncFile(path: string): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function statSyncOrNull(path: string) {
  try {
    return statSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

function unlinkIfPresent(path: string): void {
  try {
    unlinkSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

async function statOrNull(path: string) {
  try {
    return await stat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}
