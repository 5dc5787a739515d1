/**
 * The NBD exports of attached local volumes, one per connection (attachment or connector).
 *
 * Every `grant` issues a fresh export name of 256 random bits: the name is the credential,
 * returned once in the connection info and stored here only as its SHA-256, so neither the
 * database nor a log line lets anyone open the export. With TLS on, each grant also carries its
 * own TLS-PSK identity and key, and the export opens only on a TLS session made with that key.
 * Grants live in the database so a restart keeps attached volumes reachable; `revoke` removes
 * them and cuts the connections opened through them. A volume with no grant is not exported.
 */
import { createHash, randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import type { Db } from '../db/db.ts';
import { nowIso } from '../db/db.ts';
import { volumeQos } from '../volume/qos.ts';
import type { NbdExport } from './server.ts';

export interface ExportGrantRequest {
  backend: string;
  volumeId: string;
  path: string;
  readOnly: boolean;
  /** Who the export is for: `attachment:<id>` or a digest of the connector. One grant per key. */
  connectionKey: string;
}

export interface ExportGrant {
  exportName: string;
  /** Present when the NBD server requires TLS: the client's PSK identity and key (hex). */
  tlsPsk: { identity: string; keyHex: string } | null;
}

/** What the NBD server needs to serve a resolved export, plus the grant it came from. */
export interface ResolvedExport extends NbdExport {
  grantId: string;
  /** When set, the export opens only on a TLS session whose PSK identity is this one. */
  pskIdentity: string | null;
}

interface ExportRow {
  name_hash: string;
  volume_id: string;
  backend: string;
  connection_key: string;
  path: string;
  read_only: number;
  psk_identity: string | null;
  psk_key: string | null;
}

/** Export names: 32 random bytes (256 bits), base64url, 43 characters. */
const exportNameBytes = 32;
/** TLS-PSK keys: 32 random bytes, hex as GnuTLS psk files and qemu's tls-creds-psk expect. */
const pskKeyBytes = 32;
/** Upper bound on a name the resolver even hashes (the NBD spec allows 4 KiB). */
const exportNameCharsMax = 4096;

export function hashExportName(name: string): string {
  return createHash('sha256').update(name, 'utf8').digest('hex');
}

/**
 * A stable key for one consumer connection: the attachment id when the caller passes one (the
 * attachments API does), else the connector's host, as Cinder's drivers key exports by the
 * consumer host (os-terminate_connection often sends a connector with fewer fields).
 */
export function connectionKeyOf(connector: Record<string, unknown> | null | undefined): string {
  const attachmentId = connector?.['attachment_id'];
  if (typeof attachmentId === 'string' && attachmentId.length > 0) return `attachment:${attachmentId}`;
  const host = connector?.['host'];
  return `host:${createHash('sha256').update(typeof host === 'string' ? host : '').digest('hex').slice(0, 32)}`;
}

export class NbdExportTable {
  constructor(
    private readonly db: Db,
    private readonly options: {
      tls: boolean;
      /** Cuts the live NBD connections opened through a revoked grant. */
      disconnect: (grantId: string) => void;
      log: (message: string) => void;
    },
  ) {}

  /**
   * Issues a new export for (volume, connection key), replacing any earlier grant of that key:
   * connections already open keep working, new ones need the new name. Idempotent in effect
   * (the caller always gets a working export); never returns an earlier name.
   */
  grant(request: ExportGrantRequest): ExportGrant {
    const exportName = randomBytes(exportNameBytes).toString('base64url');
    const nameHash = hashExportName(exportName);
    const tlsPsk = this.options.tls
      ? { identity: `pumice-${randomBytes(12).toString('hex')}`, keyHex: randomBytes(pskKeyBytes).toString('hex') }
      : null;
    this.db.transaction(() => {
      this.db.run('DELETE FROM nbd_exports WHERE volume_id = ? AND connection_key = ?', request.volumeId, request.connectionKey);
      this.db.run(
        'INSERT INTO nbd_exports (name_hash, volume_id, backend, connection_key, path, read_only, psk_identity, psk_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        nameHash, request.volumeId, request.backend, request.connectionKey, request.path, request.readOnly ? 1 : 0,
        tlsPsk?.identity ?? null, tlsPsk?.keyHex ?? null, nowIso(),
      );
    });
    this.options.log(`nbd: export ${nameHash.slice(0, 12)} granted for volume ${request.volumeId} (${request.connectionKey}, ${request.readOnly ? 'ro' : 'rw'}${tlsPsk ? ', tls-psk' : ''})`);
    return { exportName, tlsPsk };
  }

  /**
   * Revokes the grant of one connection key, or every grant of the volume when the key is null
   * (delete, revert, restore, force detach), and cuts the connections opened through them.
   * Succeeds when there is nothing to revoke. Returns how many grants were removed.
   */
  revoke(volumeId: string, connectionKey: string | null): number {
    const rows = connectionKey === null
      ? this.db.all<ExportRow>('SELECT * FROM nbd_exports WHERE volume_id = ?', volumeId)
      : this.db.all<ExportRow>('SELECT * FROM nbd_exports WHERE volume_id = ? AND connection_key = ?', volumeId, connectionKey);
    for (const row of rows) {
      this.db.run('DELETE FROM nbd_exports WHERE name_hash = ?', row.name_hash);
      this.options.log(`nbd: export ${row.name_hash.slice(0, 12)} of volume ${volumeId} revoked (${row.connection_key})`);
      this.options.disconnect(row.name_hash);
    }
    return rows.length;
  }

  /** Grants of a volume (for tests and doctor); never the names themselves. */
  count(volumeId?: string): number {
    const row = volumeId === undefined
      ? this.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM nbd_exports')
      : this.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM nbd_exports WHERE volume_id = ?', volumeId);
    return row?.n ?? 0;
  }

  /** The export a client names, if it is granted and its file exists; the size is read now (extends show up). */
  resolve(name: string): ResolvedExport | undefined {
    if (name.length === 0 || name.length > exportNameCharsMax) return undefined;
    const nameHash = hashExportName(name);
    const row = this.db.get<ExportRow>('SELECT * FROM nbd_exports WHERE name_hash = ?', nameHash);
    if (!row) return undefined;
    let sizeBytes: number;
    try {
      sizeBytes = statSync(row.path).size;
    } catch {
      return undefined;
    }
    // The volume type's back-end QoS as it is now (a changed spec applies to the next connection).
    const volume = this.db.get<{ volume_type_id: string | null; size_gib: number }>('SELECT volume_type_id, size_gib FROM volumes WHERE id = ?', row.volume_id);
    const limits = volume ? volumeQos(this.db, volume.volume_type_id, volume.size_gib).backEnd : undefined;
    return { path: row.path, sizeBytes, readOnly: row.read_only === 1, grantId: row.name_hash, pskIdentity: row.psk_identity, ...(limits ? { limits } : {}) };
  }

  /** The PSK of a TLS identity, for the TLS handshake; undefined refuses the session. */
  pskKey(identity: string): Buffer | undefined {
    if (identity.length === 0 || identity.length > 256) return undefined;
    const row = this.db.get<{ psk_key: string | null }>('SELECT psk_key FROM nbd_exports WHERE psk_identity = ?', identity);
    if (!row?.psk_key) return undefined;
    return Buffer.from(row.psk_key, 'hex');
  }

  /**
   * Drops grants whose volume file is gone (deleted while Pumice was down). Called at start;
   * logs what it drops and how many grants stay published.
   */
  sweep(): void {
    const rows = this.db.all<ExportRow>('SELECT * FROM nbd_exports');
    let kept = 0;
    for (const row of rows) {
      try {
        statSync(row.path);
        kept++;
      } catch {
        this.db.run('DELETE FROM nbd_exports WHERE name_hash = ?', row.name_hash);
        this.options.log(`nbd: export ${row.name_hash.slice(0, 12)} of volume ${row.volume_id} dropped at start: ${row.path} is gone`);
      }
    }
    if (kept > 0) this.options.log(`nbd: ${kept} export(s) of attached volumes restored`);
  }
}

