/**
 * Volume transfers (Cinder's transfer API): the owner offers an available
 * volume, gets an auth key once, and a member of another project accepts with
 * the id and the key; the volume (and, unless `no_snapshots`, its snapshots)
 * changes project, and so does the quota it consumes. Only a salted hash of
 * the key is stored. Offer, accept and delete each run in one transaction
 * with the volume's status change (available ⇄ awaiting-transfer), so a
 * crash leaves either the old owner's offer or the new owner's volume.
 */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { nowIso, type Db } from '../db/db.ts';
import { errors } from '../errors.ts';
import type { AuthContext } from '../http/router.ts';
import { resourceStates } from '../state/owner.ts';
import type { Quotas } from './quotas.ts';
import type { VolumeService } from './volumes.ts';
import { requireStatus } from './states.ts';

export interface TransferRow {
  id: string;
  volume_id: string;
  name: string | null;
  source_project_id: string;
  destination_project_id: string | null;
  salt: string;
  crypt_hash: string;
  no_snapshots: number;
  accepted: number;
  created_at: string;
  updated_at: string | null;
  deleted_at: string | null;
}

/** Characters of a new auth key (Cinder's volume_transfer_key_length); hex, so 64 bits of randomness. */
const authKeyLength = 16;

function keyHash(salt: string, authKey: string): string {
  return createHash('sha256').update(`${salt}${authKey}`).digest('hex');
}

export class VolumeTransfers {
  constructor(
    private readonly db: Db,
    private readonly volumes: VolumeService,
    private readonly quotas: Quotas,
  ) {}

  /**
   * Offers an available volume of the caller's project. Returns the row and
   * the auth key, which is never shown again. 409 when the volume is not
   * available (an open offer leaves it awaiting-transfer).
   */
  create(auth: AuthContext, input: { volumeId: string; name: string | null; noSnapshots: boolean }): { row: TransferRow; authKey: string } {
    return this.db.transaction(() => {
      const volume = this.volumes.volume(auth, input.volumeId);
      requireStatus('volume', volume.id, volume.status, 'transfer', ['available']);
      const authKey = randomBytes(authKeyLength / 2).toString('hex');
      const salt = randomBytes(8).toString('hex');
      const id = randomUUID();
      const now = nowIso();
      if (!resourceStates(this.db).volumes.transition(volume.id, ['available'], 'awaiting-transfer', { previous_status: 'available' })) {
        throw errors.conflict(`Invalid volume: volume ${volume.id} changed state while the transfer was requested; retry.`);
      }
      this.db.run(
        'INSERT INTO volume_transfers (id, volume_id, name, source_project_id, salt, crypt_hash, no_snapshots, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
        id, volume.id, input.name, volume.project_id, salt, keyHash(salt, authKey), input.noSnapshots ? 1 : 0, now,
      );
      return { row: this.get(id)!, authKey };
    });
  }

  private get(id: string): TransferRow | undefined {
    return this.db.get<TransferRow>('SELECT * FROM volume_transfers WHERE id = ? AND deleted_at IS NULL AND accepted = 0', id);
  }

  /** An open transfer of the caller's project (any project's for an administrator); 404 otherwise. */
  transfer(auth: AuthContext, id: string): TransferRow {
    const row = this.get(id);
    if (!row || (!auth.isAdmin && row.source_project_id !== auth.projectId)) throw errors.notFound('Transfer', id);
    return row;
  }

  /** Open transfers of the caller's project, or of every project for an administrator with `allProjects`. */
  list(auth: AuthContext, allProjects: boolean): TransferRow[] {
    if (auth.isAdmin && allProjects) return this.db.all<TransferRow>('SELECT * FROM volume_transfers WHERE deleted_at IS NULL AND accepted = 0 ORDER BY created_at, id');
    return this.db.all<TransferRow>('SELECT * FROM volume_transfers WHERE deleted_at IS NULL AND accepted = 0 AND source_project_id = ? ORDER BY created_at, id', auth.projectId);
  }

  /** Withdraws an open transfer; the volume is available again. 404 when gone or another project's. */
  delete(auth: AuthContext, id: string): void {
    this.db.transaction(() => {
      const row = this.transfer(auth, id);
      this.db.run('UPDATE volume_transfers SET deleted_at = ?, updated_at = ? WHERE id = ?', nowIso(), nowIso(), id);
      resourceStates(this.db).volumes.transition(row.volume_id, ['awaiting-transfer'], 'available', { previous_status: null });
    });
  }

  /**
   * Accepts transfer `id` into the caller's project with `authKey`. The
   * volume and (unless the transfer says no_snapshots) its snapshots move;
   * the destination's quota must hold them (413 otherwise, nothing moved).
   * A wrong key is a 400 naming the transfer; an accepted or withdrawn
   * transfer is a 404.
   */
  accept(auth: AuthContext, id: string, authKey: string): TransferRow {
    const destination = this.volumes.projectOf(auth);
    return this.db.transaction(() => {
      const row = this.get(id);
      if (!row) throw errors.notFound('Transfer', id);
      const expected = Buffer.from(row.crypt_hash, 'hex');
      const given = Buffer.from(keyHash(row.salt, authKey), 'hex');
      if (expected.length !== given.length || !timingSafeEqual(expected, given)) {
        throw errors.badRequest(`Invalid auth key: Attempt to transfer ${id} with invalid auth key. Use the auth_key the transfer's creator was given when it was made.`);
      }
      const volume = this.db.get<{ id: string; size_gib: number; status: string }>('SELECT id, size_gib, status FROM volumes WHERE id = ?', row.volume_id);
      if (!volume) throw errors.notFound('Volume', row.volume_id);
      requireStatus('volume', volume.id, volume.status, 'accept its transfer', ['awaiting-transfer']);
      const snapshots = row.no_snapshots
        ? { n: 0, gb: 0 }
        : this.db.get<{ n: number; gb: number | null }>('SELECT COUNT(*) AS n, SUM(size_gib) AS gb FROM snapshots WHERE volume_id = ?', volume.id)!;
      if (destination !== row.source_project_id) {
        this.quotas.check(destination, { volumes: 1, snapshots: snapshots.n, gigabytes: volume.size_gib + (snapshots.gb ?? 0) });
      }
      const now = nowIso();
      this.db.run('UPDATE volumes SET project_id = ?, user_id = ?, updated_at = ? WHERE id = ?', destination, auth.userId, now, volume.id);
      if (!row.no_snapshots) this.db.run('UPDATE snapshots SET project_id = ?, user_id = ?, updated_at = ? WHERE volume_id = ?', destination, auth.userId, now, volume.id);
      if (!resourceStates(this.db).volumes.transition(volume.id, ['awaiting-transfer'], 'available', { previous_status: null })) {
        throw errors.conflict(`Invalid volume: volume ${volume.id} changed state while its transfer was accepted; retry.`);
      }
      this.db.run('UPDATE volume_transfers SET accepted = 1, destination_project_id = ?, updated_at = ? WHERE id = ?', destination, now, id);
      return this.db.get<TransferRow>('SELECT * FROM volume_transfers WHERE id = ?', id)!;
    });
  }
}
