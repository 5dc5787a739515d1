/**
 * The directory driver behind the BackupDriver contract: it reads and writes
 * files only (volumes of the local backend and their snapshot files), and at
 * start removes backup directories no database row names.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { BackupDriver, BackupJob, BackupRef, BackupResult, RestoreJob, VolumeSource } from './driver.ts';
import { posixServiceName } from './driver.ts';
import { PosixBackupDriver, validContainer } from './posix.ts';

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export class PosixBackupAdapter implements BackupDriver {
  readonly serviceName = posixServiceName;

  constructor(readonly posix: PosixBackupDriver) {}

  start(): Promise<void> {
    return this.posix.start();
  }

  async stop(): Promise<void> {}

  unsupported(kind: VolumeSource['kind']): string | null {
    return kind === 'file' ? null : 'the posix backup driver reads and writes volumes of the local backend only; set backup_driver = ceph to back up RBD volumes';
  }

  private path(source: VolumeSource): string {
    if (source.kind !== 'file') throw new Error(this.unsupported(source.kind)!);
    return source.path;
  }

  async backup(job: BackupJob): Promise<BackupResult> {
    const manifest = await this.posix.backup({
      backupId: job.backupId,
      container: job.container,
      volumeId: job.volumeId,
      sourcePath: this.path(job.source),
      sizeBytes: job.sizeBytes,
      parent: job.parent ? { backupId: job.parent.backupId, container: job.parent.container } : null,
      ...(job.onProgress ? { onProgress: job.onProgress } : {}),
    });
    return { objectCount: manifest.objectCount, storedBytes: manifest.storedBytes };
  }

  async restore(job: RestoreJob): Promise<void> {
    await this.posix.restore({
      backupId: job.backupId,
      container: job.container,
      targetPath: this.path(job.target),
      targetIsZeroed: job.targetIsZeroed,
      discardExcess: job.discardExcess,
      ...(job.onProgress ? { onProgress: job.onProgress } : {}),
    });
  }

  delete(ref: BackupRef): Promise<void> {
    return this.posix.delete({ backupId: ref.backupId, container: ref.container });
  }

  /** Removes temporary files of known backups; reports directories no row refers to without touching them. */
  async removeOrphans(known: (backupId: string) => boolean, log: (message: string) => void): Promise<void> {
    const root = this.posix.options.root;
    let containers: string[];
    try {
      containers = await readdir(root);
    } catch {
      return;
    }
    for (const container of containers) {
      if (!validContainer(container)) continue;
      let entries: string[];
      try {
        entries = await readdir(join(root, container));
      } catch {
        continue;
      }
      for (const entry of entries) {
        if (!uuidPattern.test(entry)) continue; // only what this driver names; never anything else in the directory
        if (known(entry)) {
          for (const file of await readdir(join(root, container, entry)).catch(() => [] as string[])) {
            if (file.endsWith('.tmp')) await rm(join(root, container, entry, file), { force: true });
          }
          continue;
        }
        // Not ours to remove: another Pumice sharing backup_posix_path (import_record needs that) may own it.
        // A backup cut short here still has its row, and the reconcile of that row removes its files.
        log(`reconcile: backup directory ${container}/${entry} has no database row here; left alone (another Pumice's backup, or adopt it with import_record)`);
      }
    }
  }
}
