/**
 * The storage driver contract. A backend implements the core interface and
 * the capability interfaces it supports; the volume manager checks the
 * capabilities when the backend loads and reports them to the scheduler.
 * Every call is idempotent: it may be re-run after a crash at any point.
 */

import type { QosLimits } from '../qos.ts';

export interface VolumeRef {
  id: string;
  sizeGiB: number;
  /**
   * Back-end QoS of the volume's type (qos-specs with consumer back-end or both), given to
   * initializeConnection: the driver enforces it (librbd image options, the NBD rate limit).
   */
  qos?: QosLimits;
}

export interface SnapshotRef {
  id: string;
  volumeId: string;
  sizeGiB: number;
  /** Set when the snapshot is one member of a group snapshot and the backend takes those at one moment (GroupSnapshots). */
  groupSnapshot?: GroupSnapshotRef;
}

/** The group snapshot a member snapshot belongs to: every member's snapshot is taken by one backend call. */
export interface GroupSnapshotRef {
  groupId: string;
  groupSnapshotId: string;
  /** The volumes the group snapshot holds (its member snapshots' volumes). */
  volumeIds: string[];
}

export interface CapacityReport {
  totalCapacityGiB: number;
  freeCapacityGiB: number;
  /** Sum of the sizes of the volumes and snapshots the backend holds (thin provisioning maths). */
  provisionedCapacityGiB?: number;
  thinProvisioningSupport: boolean;
  thickProvisioningSupport: boolean;
  storageProtocol: string;
}

export interface Connector {
  host?: string;
  ip?: string;
  initiator?: string;
  multipath?: boolean;
  [key: string]: unknown;
}

export interface ConnectionInfo {
  driver_volume_type: string;
  data: Record<string, unknown>;
}

/** Thrown by drivers for expected failures; `message` is shown to the user and must name the fix. */
export class DriverError extends Error {
  constructor(
    readonly reason: 'NotFound' | 'NoSpace' | 'Unreachable' | 'Permission' | 'Invalid',
    message: string,
  ) {
    super(message);
  }
}

export interface VolumeBackend {
  /** Section name in the configuration (e.g. `local`). */
  readonly section: string;
  readonly driverName: string;
  readonly driverVersion: string;
  /** Checks prerequisites and connects; throws DriverError naming the fix when it cannot. */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Creates an empty (zeroed, thin) volume. Succeeds if it exists already with this size. */
  createVolume(volume: VolumeRef): Promise<void>;
  /** Deletes a volume and its data. Succeeds if it is already gone. Must not leak data to later volumes. */
  deleteVolume(volume: VolumeRef): Promise<void>;
  /** Grows a volume to `newSizeGiB`. Succeeds if it already has that size. */
  extendVolume(volume: VolumeRef, newSizeGiB: number): Promise<void>;
  reportCapacity(): Promise<CapacityReport>;
  /** Returns what a consumer needs to reach the volume's bytes. */
  initializeConnection(volume: VolumeRef, connector: Connector): Promise<ConnectionInfo>;
  terminateConnection(volume: VolumeRef, connector: Connector | null): Promise<void>;
  /** Lists the volume and snapshot ids the backend holds, for reconciliation. */
  listResources(): Promise<{ volumeIds: string[]; snapshotIds: string[] }>;
  /** Periodic housekeeping (e.g. removing parents kept for clones that are gone); called on heartbeats. */
  maintain?(): Promise<void>;
}

export interface Snapshots {
  /** Point-in-time copy of a volume. Succeeds if the snapshot exists already. */
  createSnapshot(snapshot: SnapshotRef): Promise<void>;
  /** Succeeds if already gone. */
  deleteSnapshot(snapshot: SnapshotRef): Promise<void>;
  /** New volume with the snapshot's content, grown to `volume.sizeGiB`. */
  createVolumeFromSnapshot(volume: VolumeRef, snapshot: SnapshotRef): Promise<void>;
  /** Puts the snapshot's content back into its volume (microversion 3.40). */
  revertToSnapshot(volume: VolumeRef, snapshot: SnapshotRef): Promise<void>;
}

/**
 * Crash-consistent group snapshots: createSnapshot / deleteSnapshot / createVolumeFromSnapshot of a
 * SnapshotRef with `groupSnapshot` act on the one group snapshot (idempotent: the first member's
 * call takes or removes it, the others find it done), so members may be attached (in-use) meanwhile.
 */
export interface GroupSnapshots {
  readonly consistentGroupSnapshots: true;
  /**
   * Makes the backend's group of Block Storage group `groupId` hold exactly `volumeIds` (of this
   * backend): volumes added, others removed, the backend's group made when it holds volumes.
   * Idempotent (a re-run after a crash converges); a volume whose storage is gone or not made yet
   * is skipped (its create or delete settles it). Taking a group snapshot syncs too, as a safety net.
   */
  syncGroupMembers(groupId: string, volumeIds: readonly string[]): Promise<void>;
}

export function hasGroupSnapshots(backend: VolumeBackend): backend is VolumeBackend & GroupSnapshots {
  return (backend as Partial<GroupSnapshots>).consistentGroupSnapshots === true;
}

export interface Clones {
  /** New volume with the source's current content, grown to `volume.sizeGiB`. */
  cloneVolume(volume: VolumeRef, source: VolumeRef): Promise<void>;
}

export type FullBackend = VolumeBackend & Snapshots & Clones;

export function hasSnapshots(backend: VolumeBackend): backend is VolumeBackend & Snapshots {
  return typeof (backend as Partial<Snapshots>).createSnapshot === 'function';
}

export function hasClones(backend: VolumeBackend): backend is VolumeBackend & Clones {
  return typeof (backend as Partial<Clones>).cloneVolume === 'function';
}

/**
 * A backend whose volumes are plain files on this host (the local backend): the backup role reads
 * and restores their bytes directly. The path is stable while the volume is not being deleted.
 */
export interface FileAccess {
  volumeFilePath(volume: VolumeRef): string;
  /** Withdraws any consumer export of the volume before its bytes are replaced (restore). */
  withdrawExport(volume: VolumeRef): void;
}

export function hasFileAccess(backend: VolumeBackend): backend is VolumeBackend & FileAccess {
  return typeof (backend as Partial<FileAccess>).volumeFilePath === 'function';
}

/** A storage object of the backend that is not one of its volumes, offered to os-volume-manage. */
export interface ManageableObject {
  /** The name to give as `ref: {"source-name": ...}`. */
  name: string;
  sizeBytes: number;
}

/**
 * Adopting existing storage as volumes and letting volumes go (Cinder's manage_existing and
 * unmanage), without copying: the object is renamed into the backend's volume name and back.
 */
export interface ManageExisting {
  listManageable(): Promise<ManageableObject[]>;
  /**
   * Adopts `sourceName` as `volume` (renamed to the volume's name; the bytes are not touched nor
   * resized). Returns its size, rounded up to whole GiB. Idempotent: succeeds when the volume
   * already holds it. NotFound names the source when neither exists.
   */
  manageExisting(volume: VolumeRef, sourceName: string): Promise<{ sizeGiB: number }>;
  /** Gives the volume's bytes back under `name`, in place. Succeeds when already done. */
  unmanage(volume: VolumeRef, name: string): Promise<void>;
}

export function hasManageExisting(backend: VolumeBackend): backend is VolumeBackend & ManageExisting {
  return typeof (backend as Partial<ManageExisting>).manageExisting === 'function';
}

/** A snapshot the backend holds of one of its volumes that is not a Pumice snapshot, offered to os-snapshot-manage. */
export interface ManageableSnapshot {
  /** The name to give as `ref: {"source-name": ...}`. */
  name: string;
  volumeId: string;
  sizeBytes: number;
}

/**
 * Adopting existing snapshots of a volume and letting snapshots go (Cinder's
 * manage_existing_snapshot and unmanage_snapshot), without copying: renames in place.
 */
export interface ManageExistingSnapshots {
  /** The foreign snapshots of the given volumes (missing volumes are skipped); [] when the backend cannot tell which volume an object belongs to. */
  listManageableSnapshots(volumeIds: readonly string[]): Promise<ManageableSnapshot[]>;
  /** Whether `sourceName` exists and can be adopted as a snapshot of `volume`. */
  canManageSnapshot(volume: VolumeRef, sourceName: string): Promise<boolean>;
  /** Adopts `sourceName` of the snapshot's volume as `snapshot`. Idempotent; NotFound names the source when neither exists. Returns its size. */
  manageExistingSnapshot(snapshot: SnapshotRef, sourceName: string): Promise<{ sizeGiB: number }>;
  /** Gives the snapshot back under `name`, in place. Succeeds when already done. */
  unmanageSnapshot(snapshot: SnapshotRef, name: string): Promise<void>;
}

export function hasManageExistingSnapshots(backend: VolumeBackend): backend is VolumeBackend & ManageExistingSnapshots {
  return typeof (backend as Partial<ManageExistingSnapshots>).manageExistingSnapshot === 'function';
}

/** Random access to a volume's bytes (image copies, uploads to images). */
export interface VolumeData {
  readonly sizeBytes: number;
  /** Reads up to `target.length` bytes at `offset`; returns how many were read. */
  readInto(offset: number, target: Buffer): Promise<number>;
  /** The buffer must not change until the promise settles. */
  write(offset: number, data: Buffer): Promise<void>;
  /** Makes every write durable, then releases the volume. */
  close(): Promise<void>;
}

export interface DataAccess {
  /** Opens a volume's bytes; `writable` false opens it read-only. */
  openVolumeData(volume: VolumeRef, writable: boolean): Promise<VolumeData>;
}

export function hasDataAccess(backend: VolumeBackend): backend is VolumeBackend & DataAccess {
  return typeof (backend as Partial<DataAccess>).openVolumeData === 'function';
}

/** Where an image's bytes live in a Ceph cluster (`rbd://FSID/POOL/IMAGE/SNAP`). */
export interface RbdLocation {
  fsid: string;
  pool: string;
  image: string;
  snapshot: string;
}

export interface ImageCloning {
  /**
   * Makes the volume a copy-on-write clone of an image's snapshot and grows it
   * to the volume's size. Returns false, having done nothing, when the
   * location is not in this backend's cluster; throws when cloning fails.
   */
  cloneImageLocation(volume: VolumeRef, location: RbdLocation): Promise<boolean>;
}

export function hasImageCloning(backend: VolumeBackend): backend is VolumeBackend & ImageCloning {
  return typeof (backend as Partial<ImageCloning>).cloneImageLocation === 'function';
}

/** Filling a new volume from a raw file of this host (an image in this process's file store). */
export interface FileImport {
  /**
   * Makes the volume a copy of the raw file `sourcePath`, grown to the volume's size: zero runs
   * stay holes, reflinked where the filesystem can, durable (fsync'd) when it returns. Replaces
   * what an interrupted earlier run left (idempotent). Returns the bytes the volume allocates.
   */
  createVolumeFromFile(volume: VolumeRef, sourcePath: string): Promise<{ allocatedBytes: number }>;
}

export function hasFileImport(backend: VolumeBackend): backend is VolumeBackend & FileImport {
  return typeof (backend as Partial<FileImport>).createVolumeFromFile === 'function';
}

export const gib = 1024 ** 3;
