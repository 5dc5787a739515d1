/**
 * The backup driver contract. The manager resolves where a volume's bytes
 * are (a file on this host, or an RBD image reached with the volume
 * backend's Ceph user) and hands that to the driver with the backup's place
 * in its chain; the driver moves bytes and never touches the database.
 * Every call may be re-run after a crash: a backup starts over, a delete
 * succeeds when already gone.
 */
import type { ProgressCallback } from './posix.ts';

export type { ProgressCallback };

/** How to reach a Ceph cluster as one user (the volume backend's rbd_user, or backup_ceph_user). */
export interface CephClientRef {
  confPath: string;
  user: string;
  clusterName: string;
  /** An explicit keyring path; else ceph.conf's `keyring`, else /etc/ceph/<cluster>.client.<user>.keyring. */
  keyringPath: string | null;
  connectTimeoutSeconds: number;
}

/** Where the bytes of a volume, or of one of its snapshots, are. */
export type VolumeSource =
  | { kind: 'file'; path: string; sizeBytes: number }
  | {
      kind: 'rbd';
      client: CephClientRef;
      pool: string;
      /** `volume-<id>` (or its hidden name). */
      image: string;
      /** Read at this snapshot (a backup of a volume snapshot); null: the live image, which the driver snapshots itself. */
      snapshot: string | null;
      sizeBytes: number;
    };

export interface BackupRef {
  backupId: string;
  container: string;
  /** The volume the backup was made of (names the Ceph backup image). */
  volumeId: string;
  /** The full backup its incremental chain starts from (itself for a full backup). */
  chainRootId: string;
}

export interface ParentRef extends BackupRef {
  /** The volume snapshot the parent was read from, when it was a backup of a snapshot. */
  snapshotId: string | null;
}

export interface BackupJob extends BackupRef {
  source: VolumeSource;
  sizeBytes: number;
  parent: ParentRef | null;
  onProgress?: ProgressCallback;
}

export interface BackupResult {
  /** Objects (chunk files, RBD objects) the backup wrote itself: Cinder's object_count. */
  objectCount: number;
  /** Bytes of data the backup moved and stored (zero runs count nothing). */
  storedBytes: number;
}

export interface RestoreJob extends BackupRef {
  target: VolumeSource;
  /** The backup's size in bytes. */
  sizeBytes: number;
  /** The target holds only zeros (a volume created for this restore): zero runs need no write. */
  targetIsZeroed: boolean;
  /** Zero the target's bytes beyond the backup's size (restore_discard_excess_bytes). */
  discardExcess: boolean;
  onProgress?: ProgressCallback;
}

export interface BackupDriver {
  /** Cinder's class path, stored as the backup's `service`. */
  readonly serviceName: string;
  /** Checks the driver can work now (directory writable, Ceph reachable with the right caps); throws naming the fix. */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Null when the driver can read and write volumes like `source`, else why not (shown as a 400). */
  unsupported(source: VolumeSource['kind']): string | null;
  /** Backs up `source`; starts over if re-run. Throws on failure, leaving what `discard` removes. */
  backup(job: BackupJob): Promise<BackupResult>;
  /** Writes the backup's bytes into the target; the result reads byte-identical to the source at backup time. */
  restore(job: RestoreJob): Promise<void>;
  /**
   * Removes a backup (finished, failed or cut short by a crash) and what it left on the source
   * (`source`: the volume's image, when it still exists). Succeeds if already gone.
   */
  delete(ref: BackupRef, source: VolumeSource | null): Promise<void>;
  /** Removes leftovers no backup row refers to (called at start, before the queue runs). */
  removeOrphans?(known: (backupId: string) => boolean, log: (message: string) => void): Promise<void>;
}

/** Cinder's names of the drivers Pumice has, and the short names Pumice accepts. */
export const posixServiceName = 'cinder.backup.drivers.posix.PosixBackupDriver';
export const cephServiceName = 'cinder.backup.drivers.ceph.CephBackupDriver';

export function backupDriverKind(name: string): 'posix' | 'ceph' | null {
  if (/^(posix|cinder\.backup\.drivers\.posix(\.PosixBackupDriver)?)$/.test(name)) return 'posix';
  if (/^(ceph|cinder\.backup\.drivers\.ceph(\.CephBackupDriver)?)$/.test(name)) return 'ceph';
  return null;
}
