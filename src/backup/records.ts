/**
 * The backup row and its Block Storage v3 rendering (Cinder's field names,
 * types and nulls; `metadata` from microversion 3.43).
 */
import { cinderTime } from '../db/db.ts';
import { volumeLinks, type RenderOptions } from '../volume/records.ts';

export interface BackupRow {
  id: string;
  project_id: string;
  user_id: string;
  volume_id: string;
  snapshot_id: string | null;
  name: string | null;
  description: string | null;
  status: string;
  size_gib: number;
  object_count: number;
  availability_zone: string | null;
  container: string | null;
  parent_id: string | null;
  is_incremental: number;
  fail_reason: string | null;
  metadata: string;
  /** The source volume's status before the backup moved it to `backing-up`. */
  volume_previous_status: string | null;
  restore_volume_id: string | null;
  host: string | null;
  service: string | null;
  stored_bytes: number;
  /** `"<percent>% (<done>/<total> bytes)"` while a backup or restore runs. */
  progress: string | null;
  data_timestamp: string;
  created_at: string;
  updated_at: string | null;
}

/**
 * Response header of a backup's show while it is created or restored: `42% (450887680/1073741824 bytes)`.
 * Not a body key: Cinder's backup has no progress, and strict clients (tempest's schemas) refuse extra keys;
 * clients that know it (`pumice backup watch`, the dashboard) read the header.
 */
export const backupProgressHeader = 'Pumice-Backup-Progress';

export function renderBackupSummary(options: RenderOptions, row: BackupRow) {
  return { id: row.id, name: row.name, links: volumeLinks(options, row.id, 'backups') };
}

export function renderBackup(options: RenderOptions, row: BackupRow, hasDependents: boolean) {
  const body: Record<string, unknown> = {
    id: row.id,
    name: row.name,
    description: row.description,
    status: row.status,
    size: row.size_gib,
    object_count: row.object_count,
    availability_zone: row.availability_zone,
    container: row.container,
    created_at: cinderTime(row.created_at),
    updated_at: cinderTime(row.updated_at),
    data_timestamp: cinderTime(row.data_timestamp),
    volume_id: row.volume_id,
    snapshot_id: row.snapshot_id,
    is_incremental: !!row.is_incremental,
    has_dependent_backups: hasDependents,
    fail_reason: row.fail_reason,
    links: volumeLinks(options, row.id, 'backups'),
  };
  if (options.microversion >= 18 && options.isAdmin) body['os-backup-project-attr:project_id'] = row.project_id;
  if (options.microversion >= 43) body['metadata'] = JSON.parse(row.metadata) as Record<string, string>;
  if (options.microversion >= 56) body['user_id'] = row.user_id;
  return body;
}
