/**
 * Moving a volume between backends (os-retype with migration_policy=on-demand,
 * os-migrate_volume): a `volume.migrate` task on the source backend's queue
 * copies the bytes into a new object on the target backend, renames it to the
 * volume's name there, then switches the row to the target and chains a
 * `volume.migrate_cleanup` task that removes the source copy, in one
 * transaction.
 *
 * Crash safety: until the switch the row names the source backend, whose copy
 * is never written, so an interrupted copy leaves the volume whole where it
 * was; the re-run starts the copy again on a fresh target. A task that fails
 * for good puts the volume back (`available`, migration_status `error`) and
 * chains the removal of the partial target. The cleanup task never removes the
 * copy the row names (it checks), so a cleanup can only ever remove a copy no
 * longer in use.
 */
import { nowIso, type Db } from '../db/db.ts';
import type { Task, TaskQueue } from '../tasks/queue.ts';
import type { ResourceStates } from '../state/owner.ts';
import { DriverError, hasDataAccess, hasManageExisting, type DataAccess, type VolumeBackend, type VolumeRef } from './drivers/driver.ts';
import type { VolumeRow } from './records.ts';
import type { VolumeStatus } from './states.ts';

export interface MigratePayload {
  /** The backend section the volume moves to. */
  toBackend: string;
  /** Its Cinder host string (`host@backend#pool`), written to the row at the switch. */
  toHost: string;
  toAvailabilityZone: string;
  /** os-retype: the type the volume has once moved; null for os-migrate_volume (the type stays). */
  newTypeId: string | null;
  /** The status the volume holds while it moves: `retyping` (os-retype) or `maintenance` (os-migrate_volume). */
  holdStatus: 'retyping' | 'maintenance';
}

/** `volume.migrate_cleanup` removes the volume's copy in the task's backend unless the row names that backend, and the copies of tries 1..`copiesOfTries`. */
export interface CleanupPayload {
  copiesOfTries?: number;
}

/** Bytes per read/write of the copy; the copy keeps `copyChunksInFlight` of them in flight. */
export const copyChunkBytes = 4 * 1024 * 1024;
const copyChunksInFlight = 4;

export interface MigrationDeps {
  db: Db;
  queue: TaskQueue;
  volumes: ResourceStates<VolumeStatus>;
  /** The driver of a backend section that is up; throws DriverError('Unreachable') otherwise. */
  ready(section: string): VolumeBackend;
  log(message: string): void;
  userMessage(volumeId: string, reason: string): void;
}

/**
 * Copies `sourceVolume`'s bytes from `source` into `targetVolume` of `target` (a freshly
 * created, zeroed volume of the same size): chunks that read as zeros are skipped, so the target stays thin. Calls
 * `checkpoint` before each chunk (crash point `volume.migrate.copy`). Returns the bytes read
 * and written.
 */
export async function copyVolumeBytes(
  source: VolumeBackend & DataAccess,
  targetVolume: VolumeRef,
  target: VolumeBackend & DataAccess,
  sourceVolume: VolumeRef,
  checkpoint: () => void,
): Promise<{ bytes: number; writtenBytes: number }> {
  const from = await source.openVolumeData(sourceVolume, false);
  let to;
  try {
    to = await target.openVolumeData(targetVolume, true);
  } catch (error) {
    await from.close();
    throw error;
  }
  const totalBytes = Math.min(from.sizeBytes, to.sizeBytes);
  const zeros = Buffer.alloc(copyChunkBytes);
  let nextOffset = 0;
  let writtenBytes = 0;
  const worker = async () => {
    const buffer = Buffer.alloc(copyChunkBytes);
    while (nextOffset < totalBytes) {
      const offset = nextOffset;
      nextOffset += copyChunkBytes;
      checkpoint();
      const length = Math.min(copyChunkBytes, totalBytes - offset);
      const chunk = buffer.subarray(0, length);
      let filled = 0;
      while (filled < length) {
        const n = await from.readInto(offset + filled, chunk.subarray(filled));
        if (n <= 0) break;
        filled += n;
      }
      // A short read past the source's end (a managed image smaller than its GiB) is zeros.
      chunk.fill(0, filled);
      if (chunk.equals(zeros.subarray(0, length))) continue;
      await to.write(offset, chunk);
      writtenBytes += length;
    }
  };
  let failure: unknown = null;
  try {
    await Promise.all(Array.from({ length: copyChunksInFlight }, worker));
  } catch (error) {
    failure = error;
  }
  // The target is flushed (close) before the switch may name it; both are released either way.
  const closed = await Promise.allSettled([to.close(), from.close()]);
  if (failure) throw failure;
  for (const c of closed) if (c.status === 'rejected') throw c.reason;
  return { bytes: totalBytes, writtenBytes };
}

/** Registers `volume.migrate` and `volume.migrate_cleanup`. */
export function registerMigrationTasks(deps: MigrationDeps): void {
  const { db, queue, volumes } = deps;
  const volume = (id: string) => db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', id);

  queue.register(
    'volume.migrate',
    async (task: Task) => {
      const payload = task.payload as MigratePayload;
      const row = volume(task.resourceId);
      // Gone, reset by an operator, or switched already (the task finished before a crash): nothing to do.
      if (!row || row.status !== payload.holdStatus || row.backend !== task.queue) return;
      const source = deps.ready(task.queue);
      const target = deps.ready(payload.toBackend);
      if (!hasDataAccess(source) || !hasDataAccess(target)) {
        throw new DriverError('Invalid', `backend [${!hasDataAccess(source) ? task.queue : payload.toBackend}] gives no access to volume bytes, so volumes cannot move to or from it`);
      }
      const ref = { id: row.id, sizeGiB: row.size_gib };
      task.checkpoint('volume.migrate.before');
      db.run("UPDATE volumes SET migration_status = 'migrating', updated_at = ? WHERE id = ?", nowIso(), row.id);
      if (task.attempts === 1) {
        // Nothing of this migration can be in the target yet: an object under the volume's name is stale.
        await target.deleteVolume(ref);
      }
      // A re-run finds the volume's name in the target only when the try before it copied everything
      // and renamed its copy into place, then died before the switch: the switch is all that is left.
      const copiedBefore = task.attempts > 1 && (await target.listResources()).volumeIds.includes(row.id);
      if (!copiedBefore) {
        // Each try copies into its own object: one left by a killed try may still be locked by the
        // dead client (breaking that lock needs blocklist rights, which Cinder's old caps lack).
        const copy = { id: migrationCopyId(row.id, task.attempts), sizeGiB: row.size_gib };
        await target.createVolume(copy);
        task.checkpoint('volume.migrate.target-created');
        const started = Date.now();
        let copied: { bytes: number; writtenBytes: number };
        try {
          copied = await copyVolumeBytes(source, copy, target, ref, () => task.checkpoint('volume.migrate.copy'));
        } catch (error) {
          await target.deleteVolume(copy).catch(() => undefined);
          throw error;
        }
        task.checkpoint('volume.migrate.copied');
        if (!hasManageExisting(target)) throw new DriverError('Invalid', `backend [${payload.toBackend}] cannot rename a copy into place, so volumes cannot move to it`);
        await target.manageExisting(ref, `volume-${copy.id}`);
        task.checkpoint('volume.migrate.renamed');
        deps.log(
          `volume ${row.id}: copied ${copied.bytes} bytes (${copied.writtenBytes} written, the rest zeros) from [${task.queue}] to [${payload.toBackend}] in ${((Date.now() - started) / 1000).toFixed(1)} s`,
        );
      }
      task.complete(() => {
        const switched = volumes.transition(row.id, [payload.holdStatus], 'available', {
          backend: payload.toBackend,
          host: payload.toHost,
          availability_zone: payload.toAvailabilityZone,
          volume_type_id: payload.newTypeId ?? row.volume_type_id,
          migration_status: 'success',
          status_reason: null,
        });
        // The copy no longer named by the row goes: the source after the switch, else the new one;
        // and the objects of tries killed before this one.
        queue.enqueue('volume.migrate_cleanup', row.id, switched ? task.queue : payload.toBackend, {} satisfies CleanupPayload);
        if (task.attempts > 1) queue.enqueue('volume.migrate_cleanup', row.id, payload.toBackend, { copiesOfTries: task.attempts - 1 } satisfies CleanupPayload);
      });
    },
    (task, reason) => {
      const payload = task.payload as MigratePayload;
      volumes.transition(task.resourceId, [payload.holdStatus], 'available', { migration_status: 'error', status_reason: reason });
      const row = volume(task.resourceId);
      if (row && row.backend !== payload.toBackend) queue.enqueue('volume.migrate_cleanup', task.resourceId, payload.toBackend, { copiesOfTries: task.attempts } satisfies CleanupPayload);
      deps.userMessage(task.resourceId, `migrate volume to backend [${payload.toBackend}]: ${reason}; the volume stays where it was`);
    },
  );

  queue.register(
    'volume.migrate_cleanup',
    async (task: Task) => {
      const { copiesOfTries } = task.payload as CleanupPayload;
      const row = volume(task.resourceId);
      const driver = deps.ready(task.queue);
      task.checkpoint('volume.migrate_cleanup.before');
      // Copies of killed tries: each is removed if it can be (a dead client's lock may keep one).
      for (let attempt = 1; attempt <= (copiesOfTries ?? 0); attempt++) {
        const copy = { id: migrationCopyId(task.resourceId, attempt), sizeGiB: 0 };
        await driver.deleteVolume(copy).catch((error: unknown) => {
          deps.log(`WARNING: volume ${task.resourceId}: the copy volume-${copy.id} left in backend [${task.queue}] by an interrupted migration could not be removed: ${(error as Error).message}; remove it by hand`);
        });
      }
      // Never the copy in use: the row names it (it stayed, or a later migration moved it back here).
      if (!(row && row.backend === task.queue)) {
        await driver.deleteVolume({ id: task.resourceId, sizeGiB: row?.size_gib ?? 0 });
      }
      task.checkpoint('volume.migrate_cleanup.deleted');
      task.complete(() => undefined);
    },
    (task, reason) => {
      deps.log(`WARNING: volume ${task.resourceId}: the copy left in backend [${task.queue}] by a migration could not be removed: ${reason}`);
    },
  );
}

/** The object a migration's try copies into, renamed to the volume's own name once complete. */
function migrationCopyId(volumeId: string, attempt: number): string {
  return `${volumeId}.migrating-${attempt}`;
}
