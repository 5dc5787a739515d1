/**
 * Transition tables: the moves each resource kind may make; the key is the
 * current status. Deletion is not a transition (the row goes). Anything
 * else, only `force` (os-reset_status, force-delete) may do.
 */
import type { SnapshotStatus, VolumeStatus } from '../volume/states.ts';
import type { TaskState, VmState } from '../compute/model.ts';

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

/** A Glance task record's status (GET /v2/tasks/{id}): pending → processing → success | failure. */
export type ImageTaskStatus = 'pending' | 'processing' | 'success' | 'failure';

export const imageTaskTransitions: Readonly<Record<ImageTaskStatus, readonly ImageTaskStatus[]>> = {
  // A task given up before its handler ran (the engine failed it) fails from pending.
  pending: ['processing', 'failure'],
  // An import or copy interrupted by a crash runs again and records processing again.
  processing: ['processing', 'success', 'failure'],
  // A finished task is history: a late re-run never rewrites its outcome.
  success: [],
  failure: [],
};

/** An image member's status (Glance's member API). */
export type ImageMemberStatus = 'pending' | 'accepted' | 'rejected';

export const imageMemberTransitions: Readonly<Record<ImageMemberStatus, readonly ImageMemberStatus[]>> = {
  // The member may change its mind in any direction, and may send the same decision again.
  pending: ['pending', 'accepted', 'rejected'],
  accepted: ['pending', 'accepted', 'rejected'],
  rejected: ['pending', 'accepted', 'rejected'],
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

/** A generic volume group's status (Cinder's fields.GroupStatus, the ones Pumice reaches). */
export type GroupStatus = 'creating' | 'available' | 'updating' | 'deleting' | 'error' | 'error_deleting' | 'in-use';

export const groupTransitions: Readonly<Record<GroupStatus, readonly GroupStatus[]>> = {
  // A group made from a group snapshot or another group is available when all its new volumes are.
  creating: ['available', 'error'],
  available: ['deleting', 'updating'],
  updating: ['available'],
  // A delete that failed on one of its volumes leaves the group in error_deleting (delete again).
  deleting: ['error_deleting'],
  error: ['deleting'],
  error_deleting: ['deleting'],
  'in-use': ['deleting', 'available'],
};

/** A group snapshot's status (Cinder's fields.GroupSnapshotStatus). */
export type GroupSnapshotStatus = 'creating' | 'available' | 'deleting' | 'error' | 'error_deleting';

export const groupSnapshotTransitions: Readonly<Record<GroupSnapshotStatus, readonly GroupSnapshotStatus[]>> = {
  // Available when every member snapshot is; error when one of them failed.
  creating: ['available', 'error'],
  available: ['deleting'],
  deleting: ['error_deleting'],
  error: ['deleting'],
  error_deleting: ['deleting'],
};

/** A Block Storage attachment's attach_status (Cinder's attachment API: reserve → update → complete). */
export type AttachmentStatus = 'reserved' | 'attaching' | 'attached';

export const attachmentTransitions: Readonly<Record<AttachmentStatus, readonly AttachmentStatus[]>> = {
  // os-complete may follow the reservation directly when the connector was given at create.
  reserved: ['attaching', 'attached'],
  // An update may be repeated (a consumer re-sends its connector); a deleted attachment's row goes.
  attaching: ['attaching', 'attached'],
  attached: ['attaching', 'attached'],
};

/** A server's block device mapping as the compute agent moves it (Nova keeps no status; Pumice needs one for resumable attach/detach). */
export type BdmStatus = 'pending' | 'attached' | 'detaching' | 'detached';

export const bdmTransitions: Readonly<Record<BdmStatus, readonly BdmStatus[]>> = {
  // A fence re-run after a crash records the reservation again.
  pending: ['attached', 'detached', 'pending'],
  // An evacuation re-attaches every volume on the new host: its mappings go back to pending.
  attached: ['detaching', 'detached', 'pending'],
  // A detach that failed leaves the volume attached.
  detaching: ['attached', 'detached'],
  detached: [],
};

/**
 * A server's vm_state moves (Nova's vm_states; a move to the same state is no
 * move). Pumice reaches building, active, stopped, error and deleted; the
 * others are Nova's names, listed so that a row imported with them can leave.
 */
export const serverVmTransitions: Readonly<Record<VmState, readonly VmState[]>> = {
  building: ['active', 'error', 'deleted'],
  // The power-state sync finds a guest that stopped by itself: active → stopped.
  active: ['stopped', 'error', 'deleted'],
  stopped: ['active', 'error', 'deleted'],
  // A rebuild or an evacuation of an ERROR server ends active (or stopped, if it was).
  error: ['active', 'stopped', 'deleted'],
  deleted: [],
  paused: ['active', 'error', 'deleted'],
  suspended: ['active', 'error', 'deleted'],
  rescued: ['active', 'error', 'deleted'],
  resized: ['active', 'error', 'deleted'],
  'soft-delete': ['active', 'deleted'],
  shelved: ['active', 'error', 'deleted'],
  shelved_offloaded: ['active', 'error', 'deleted'],
};

/** The vm_states in which each task_state may be set (what Nova's check_instance_state allows per action). */
export const serverTaskStates: Readonly<Record<NonNullable<TaskState>, readonly VmState[]>> = {
  scheduling: ['building'],
  block_device_mapping: ['building'],
  networking: ['building'],
  spawning: ['building'],
  'powering-off': ['active', 'error'],
  'powering-on': ['stopped'],
  rebooting: ['active', 'stopped', 'error'],
  rebooting_hard: ['active', 'stopped', 'error'],
  reboot_started: ['active', 'stopped', 'error'],
  reboot_started_hard: ['active', 'stopped', 'error'],
  rebuilding: ['active', 'stopped', 'error'],
  rebuild_block_device_mapping: ['active', 'stopped', 'error'],
  rebuild_spawning: ['active', 'stopped', 'error'],
  rebuilding_evacuate: ['active', 'stopped', 'error'],
  migrating: ['active'],
  deleting: ['building', 'active', 'stopped', 'error', 'paused', 'suspended', 'rescued', 'resized', 'soft-delete', 'shelved', 'shelved_offloaded'],
};

/** task_states that only end (to no task): a delete is never turned into another action. */
export const serverFinalTaskStates: ReadonlySet<NonNullable<TaskState>> = new Set(['deleting']);
