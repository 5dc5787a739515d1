/**
 * Resource state machines, as in Cinder. Every status change goes through
 * `transition`, which refuses a move the machine does not allow; API checks
 * use the `allowedFrom` lists so the 409 message can say what state is needed.
 */
import { errors } from '../errors.ts';

export type VolumeStatus =
  | 'creating'
  | 'available'
  | 'reserved'
  | 'attaching'
  | 'detaching'
  | 'in-use'
  | 'maintenance'
  | 'deleting'
  | 'awaiting-transfer'
  | 'error'
  | 'error_deleting'
  | 'backing-up'
  | 'restoring-backup'
  | 'error_backing-up'
  | 'error_restoring'
  | 'extending'
  | 'error_extending'
  | 'downloading'
  | 'uploading'
  | 'retyping'
  | 'reverting';

export const volumeStatuses: readonly VolumeStatus[] = [
  'creating', 'available', 'reserved', 'attaching', 'detaching', 'in-use', 'maintenance', 'deleting', 'awaiting-transfer',
  'error', 'error_deleting', 'backing-up', 'restoring-backup', 'error_backing-up', 'error_restoring', 'extending',
  'error_extending', 'downloading', 'uploading', 'retyping', 'reverting',
];

/** Moves a volume may make; the key is the current status. */
const volumeTransitions: Record<VolumeStatus, readonly VolumeStatus[]> = {
  creating: ['available', 'error'],
  available: ['deleting', 'extending', 'reserved', 'attaching', 'in-use', 'reverting', 'backing-up', 'restoring-backup', 'uploading', 'maintenance', 'retyping'],
  reserved: ['available', 'attaching', 'in-use'],
  attaching: ['in-use', 'available', 'error'],
  detaching: ['available', 'in-use'],
  'in-use': ['detaching', 'available', 'backing-up', 'extending', 'in-use'],
  maintenance: ['available', 'error'],
  deleting: ['error_deleting'],
  'awaiting-transfer': ['available'],
  error: ['deleting'],
  error_deleting: ['deleting'],
  'backing-up': ['available', 'in-use'],
  'restoring-backup': ['available', 'error_restoring'],
  'error_backing-up': ['deleting', 'available'],
  error_restoring: ['deleting'],
  extending: ['available', 'in-use', 'error_extending'],
  error_extending: ['deleting', 'extending'],
  downloading: ['available', 'error'],
  uploading: ['available', 'in-use', 'error'],
  retyping: ['available', 'error'],
  reverting: ['available', 'error'],
};

export function canTransitionVolume(from: VolumeStatus, to: VolumeStatus): boolean {
  return volumeTransitions[from]?.includes(to) ?? false;
}

/** Throws a 409 naming the current and the needed states unless `status` is one of `allowed`. */
export function requireStatus(kind: string, id: string, status: string, action: string, allowed: readonly string[]): void {
  if (!allowed.includes(status)) throw errors.invalidState(kind, id, status, action, allowed);
}

/** States from which a volume may be deleted (Cinder's list), and the ones for which `force` is needed. */
export const volumeDeletableStatuses: readonly VolumeStatus[] = ['available', 'error', 'error_restoring', 'error_extending', 'error_deleting', 'error_backing-up'];
export const volumeExtendableStatuses: readonly VolumeStatus[] = ['available', 'in-use'];

export type SnapshotStatus = 'creating' | 'available' | 'deleting' | 'error' | 'error_deleting' | 'restoring' | 'unmanaging' | 'backing-up';
export const snapshotStatuses: readonly SnapshotStatus[] = ['creating', 'available', 'deleting', 'error', 'error_deleting', 'restoring', 'unmanaging', 'backing-up'];
export const snapshotDeletableStatuses: readonly SnapshotStatus[] = ['available', 'error', 'error_deleting'];
