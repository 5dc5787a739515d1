/**
 * Resource statuses, as in Cinder, and the lists API checks use so a 409
 * can say what state is needed. Every status change goes through the state
 * owner (src/state/owner.ts), which enforces the transition tables.
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

// The transition tables and the compare-and-set that enforces them are in src/state/ (one owner of status).

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
