/**
 * Transition tables: the moves each resource kind may make; the key is the
 * current status. Deletion is not a transition (the row goes). Anything
 * else, only `force` (os-reset_status, force-delete) may do.
 */
import type { SnapshotStatus, VolumeStatus } from '../volume/states.ts';

export type { SnapshotStatus, VolumeStatus } from '../volume/states.ts';
export type BackupStatus = 'creating' | 'available' | 'deleting' | 'error' | 'error_deleting' | 'restoring';
/** Glance's image statuses ('deleted' is Glance's name for a row soft-deleted; Pumice removes the row). */
export type ImageStatus = 'queued' | 'saving' | 'uploading' | 'importing' | 'active' | 'killed' | 'deactivated' | 'deleted';

export const volumeTransitions: Readonly<Record<VolumeStatus, readonly VolumeStatus[]>> = {
  // A volume made from an image copies it in 'downloading'; one made from a backup is held for its restore.
  creating: ['available', 'error', 'downloading', 'restoring-backup'],
  downloading: ['available', 'error'],
  available: ['deleting', 'extending', 'reserved', 'attaching', 'in-use', 'reverting', 'backing-up', 'restoring-backup', 'uploading', 'maintenance', 'retyping', 'awaiting-transfer'],
  // Attachments (Cinder 3.27+): a multiattach volume in use is reserved again for its next server.
  reserved: ['available', 'attaching', 'in-use', 'reserved'],
  attaching: ['in-use', 'available', 'error', 'attaching', 'reserved'],
  'in-use': ['detaching', 'available', 'backing-up', 'extending', 'uploading', 'in-use', 'attaching', 'reserved'],
  detaching: ['available', 'in-use', 'error'],
  maintenance: ['available', 'in-use', 'error'],
  deleting: ['error_deleting'],
  'awaiting-transfer': ['available'],
  error: ['deleting'],
  error_deleting: ['deleting'],
  'backing-up': ['available', 'in-use', 'error_backing-up'],
  'restoring-backup': ['available', 'error_restoring'],
  'error_backing-up': ['deleting', 'available'],
  error_restoring: ['deleting'],
  extending: ['available', 'in-use', 'error_extending'],
  error_extending: ['deleting', 'extending'],
  uploading: ['available', 'in-use', 'error'],
  retyping: ['available', 'in-use', 'error'],
  reverting: ['available', 'error'],
};

export const snapshotTransitions: Readonly<Record<SnapshotStatus, readonly SnapshotStatus[]>> = {
  creating: ['available', 'error'],
  available: ['deleting', 'restoring', 'backing-up', 'unmanaging'],
  // A revert that fails leaves the snapshot intact.
  restoring: ['available'],
  'backing-up': ['available'],
  deleting: ['error_deleting'],
  error: ['deleting'],
  error_deleting: ['deleting'],
  unmanaging: ['available', 'error'],
};

export const imageTransitions: Readonly<Record<ImageStatus, readonly ImageStatus[]>> = {
  // Upload (PUT file) is saving; stage (PUT stage) is uploading, then an import is importing;
  // a web-download import goes from queued to importing (the task fetches the data).
  queued: ['saving', 'uploading', 'importing'],
  // An upload the client cut goes back to queued; a store that failed leaves it killed.
  saving: ['active', 'queued', 'killed'],
  uploading: ['importing', 'queued', 'killed'],
  // A failed import: refused data → queued; a store failure keeps the staged data (uploading).
  importing: ['active', 'queued', 'uploading'],
  active: ['deactivated'],
  deactivated: ['active'],
  killed: [],
  deleted: [],
};

export const backupTransitions: Readonly<Record<BackupStatus, readonly BackupStatus[]>> = {
  creating: ['available', 'error'],
  // A restore that fails leaves the backup usable ('available', with the reason).
  available: ['restoring', 'deleting'],
  restoring: ['available'],
  error: ['deleting'],
  deleting: ['error_deleting'],
  error_deleting: ['deleting'],
};
