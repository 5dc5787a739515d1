/**
 * The backup record of Cinder's export_record / import_record: everything
 * another Pumice needs to take a backup into its database, given that it
 * reaches the same storage. `backup_url` is opaque to clients: base64 of a
 * versioned JSON document, so a record from a newer Pumice is refused with
 * a clear message instead of being half-read.
 */
import { errors } from '../errors.ts';
import { validContainer } from './drivers/posix.ts';
import type { BackupRow } from './records.ts';

export interface BackupRecord {
  format: 'pumice-backup-record';
  version: 1;
  id: string;
  volumeId: string;
  snapshotId: string | null;
  name: string | null;
  description: string | null;
  sizeGiB: number;
  objectCount: number;
  storedBytes: number;
  availabilityZone: string | null;
  parentId: string | null;
  isIncremental: boolean;
  metadata: Record<string, string>;
  dataTimestamp: string;
  createdAt: string;
  /** The driver's class path (the backup's `service`). */
  service: string;
  /** Where the driver keeps the data: `CONTAINER/ID/` under backup_posix_path, or the Ceph driver's image names. */
  location: { container: string; backupId: string };
}

/** A backup_url larger than this is not one of ours: a record is under 4 KiB plus its metadata (at most ~90 KB as base64 with 128 keys of 255+255 characters), and the request body limit is 112 KiB. */
const backupUrlBytesMax = 100_000;
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function encodeBackupRecord(row: BackupRow): string {
  const record: BackupRecord = {
    format: 'pumice-backup-record',
    version: 1,
    id: row.id,
    volumeId: row.volume_id,
    snapshotId: row.snapshot_id,
    name: row.name,
    description: row.description,
    sizeGiB: row.size_gib,
    objectCount: row.object_count,
    storedBytes: row.stored_bytes,
    availabilityZone: row.availability_zone,
    parentId: row.parent_id,
    isIncremental: !!row.is_incremental,
    metadata: JSON.parse(row.metadata) as Record<string, string>,
    dataTimestamp: row.data_timestamp,
    createdAt: row.created_at,
    service: row.service ?? '',
    location: { container: row.container ?? 'volumebackups', backupId: row.id },
  };
  return Buffer.from(JSON.stringify(record)).toString('base64');
}

/** Decodes and checks a backup_url; every defect is a 400 naming what is wrong and where a good one comes from. */
export function decodeBackupRecord(backupUrl: string): BackupRecord {
  const fix = 'Pass the backup_url exactly as export_record (openstack volume backup record export) printed it.';
  if (backupUrl.length > backupUrlBytesMax) throw errors.badRequest(`Invalid input: backup_url is ${backupUrl.length} bytes, more than a backup record can be (${backupUrlBytesMax}). ${fix}`);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(backupUrl.trim())) throw errors.badRequest(`Invalid input: backup_url is not base64. ${fix}`);
  let record: BackupRecord;
  try {
    record = JSON.parse(Buffer.from(backupUrl, 'base64').toString('utf8')) as BackupRecord;
  } catch {
    throw errors.badRequest(`Invalid input: backup_url does not decode to a Pumice backup record (base64 of JSON). ${fix}`);
  }
  if (!record || typeof record !== 'object' || record.format !== 'pumice-backup-record') {
    throw errors.badRequest(`Invalid input: backup_url does not decode to a Pumice backup record. ${fix}`);
  }
  if (record.version !== 1) throw errors.badRequest(`Invalid input: backup record version ${String(record.version)} is not supported by this Pumice (it reads version 1); import it with the Pumice version that exported it or a newer one.`);
  const bad = (field: string) => errors.badRequest(`Invalid input: backup record field '${field}' is missing or malformed. ${fix}`);
  if (typeof record.id !== 'string' || !uuidPattern.test(record.id)) throw bad('id');
  if (typeof record.volumeId !== 'string' || !uuidPattern.test(record.volumeId)) throw bad('volumeId');
  if (!Number.isInteger(record.sizeGiB) || record.sizeGiB < 1) throw bad('sizeGiB');
  if (!Number.isInteger(record.objectCount) || record.objectCount < 0) throw bad('objectCount');
  if (!Number.isInteger(record.storedBytes) || record.storedBytes < 0) throw bad('storedBytes');
  if (record.parentId !== null && (typeof record.parentId !== 'string' || !uuidPattern.test(record.parentId))) throw bad('parentId');
  if (typeof record.isIncremental !== 'boolean') throw bad('isIncremental');
  if (typeof record.service !== 'string') throw bad('service');
  if (typeof record.dataTimestamp !== 'string' || Number.isNaN(Date.parse(record.dataTimestamp))) throw bad('dataTimestamp');
  if (typeof record.createdAt !== 'string' || Number.isNaN(Date.parse(record.createdAt))) throw bad('createdAt');
  for (const field of ['name', 'description', 'availabilityZone', 'snapshotId'] as const) {
    const value = record[field];
    if (value !== null && (typeof value !== 'string' || value.length > 255)) throw bad(field);
  }
  if (!record.metadata || typeof record.metadata !== 'object' || Array.isArray(record.metadata) || Object.values(record.metadata).some((v) => typeof v !== 'string')) throw bad('metadata');
  const location = record.location;
  if (!location || typeof location.container !== 'string' || !validContainer(location.container) || location.backupId !== record.id) throw bad('location');
  return record;
}
