/**
 * Keystone's credential store (/v3/credentials): blobs (EC2 keys, TOTP secrets, certificates)
 * belonging to a user. Blobs are encrypted at rest with AES-256-GCM under a key kept in a 0600
 * file beside the database (`credential.key`, Keystone keeps `credential-keys/` the same way), so
 * a copy of the database alone reveals no blob. Who may read a blob is the policy's business:
 * its owner and administrators.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Db } from '../db/db.ts';
import { errors, PumiceError } from '../errors.ts';

export interface CredentialRow { id: string; user_id: string; project_id: string | null; type: string; encrypted_blob: string; created_at: string }
export interface Credential { id: string; userId: string; projectId: string | null; type: string; blob: string }

const keyBytes = 32;
const ivBytes = 12;
/** Stored blobs start with this: the scheme, so a later key rotation can tell old from new. */
const schemePrefix = 'aes256gcm:v1:';

/**
 * The key file's path: in `keyDirectory` (the data directory), else beside a SQLite database;
 * null for an in-memory database (a key that lives as long as the process).
 */
function keyPathFor(db: Db, keyDirectory: string | null): string | null {
  if (keyDirectory !== null) return join(keyDirectory, 'credential.key');
  if (db.engine !== 'sqlite') throw new PumiceError('Internal', 'Credentials need a key directory with a PostgreSQL database: start Pumice through its app (the data directory holds credential.key).');
  const file = db.where;
  return file && file !== ':memory:' ? join(dirname(file), 'credential.key') : null;
}

/** Reads the credential key, creating it (0600, exclusive) on first use. */
function loadKey(path: string | null): Buffer {
  if (path === null) return randomBytes(keyBytes);
  if (!existsSync(path)) {
    try {
      writeFileSync(path, randomBytes(keyBytes).toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
  chmodSync(path, 0o600);
  const key = Buffer.from(readFileSync(path, 'utf8').trim(), 'base64');
  if (key.length !== keyBytes) throw new Error(`${path} is not a ${keyBytes}-byte base64 key: restore it from a backup (credentials stored under it cannot be read without it).`);
  return key;
}

export class CredentialStore {
  private keyCache: Buffer | null = null;

  /** `keyDirectory`: where credential.key lives (the data directory); null: beside a SQLite database. */
  constructor(private readonly db: Db, private readonly keyDirectory: string | null = null) {}

  private key(): Buffer {
    this.keyCache ??= loadKey(keyPathFor(this.db, this.keyDirectory));
    return this.keyCache;
  }

  private encrypt(blob: string): string {
    const iv = randomBytes(ivBytes);
    const cipher = createCipheriv('aes-256-gcm', this.key(), iv);
    const sealed = Buffer.concat([cipher.update(blob, 'utf8'), cipher.final()]);
    return schemePrefix + [iv, cipher.getAuthTag(), sealed].map((b) => b.toString('base64')).join(':');
  }

  private decrypt(row: CredentialRow): string {
    const [iv, tag, sealed] = row.encrypted_blob.slice(schemePrefix.length).split(':').map((part) => Buffer.from(part, 'base64'));
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key(), iv!);
      decipher.setAuthTag(tag!);
      return Buffer.concat([decipher.update(sealed!), decipher.final()]).toString('utf8');
    } catch {
      throw new PumiceError('Internal', `Credential ${row.id} cannot be decrypted: the credential key beside the database is not the one it was stored with; restore credential.key from a backup, or, with several API hosts on one database, copy the first API host's DATA_DIR/credential.key to the others (as Keystone's credential key repository).`);
    }
  }

  private toCredential(row: CredentialRow): Credential {
    return { id: row.id, userId: row.user_id, projectId: row.project_id, type: row.type, blob: this.decrypt(row) };
  }

  findRow(id: string): CredentialRow | undefined {
    return this.db.get<CredentialRow>('SELECT * FROM credentials WHERE id = ?', id);
  }

  get(id: string): Credential {
    const row = this.findRow(id);
    if (!row) throw new PumiceError('NotFound', `Could not find credential: ${id}.`);
    return this.toCredential(row);
  }

  /** Credentials matching every filter, by id. */
  list(filter: { userId?: string | null; type?: string | null }): Credential[] {
    // Conditions built here rather than `? IS NULL OR ...`: PostgreSQL cannot type a parameter compared only with NULL.
    const conditions: string[] = [];
    const params: string[] = [];
    if (filter.userId != null) {
      conditions.push('user_id = ?');
      params.push(filter.userId);
    }
    if (filter.type != null) {
      conditions.push('type = ?');
      params.push(filter.type);
    }
    return this.db.all<CredentialRow>(`SELECT * FROM credentials ${conditions.length ? 'WHERE ' + conditions.join(' AND ') : ''} ORDER BY id`, ...params)
      .map((row) => this.toCredential(row));
  }

  /**
   * Stores a credential. An `ec2` blob must be JSON with an `access` key and needs a project;
   * its id is the SHA-256 of the access key, as Keystone makes it (409 when that key exists).
   */
  create(input: { userId: string; projectId: string | null; type: string; blob: string }): Credential {
    const id = input.type === 'ec2' ? ec2CredentialId(input.blob, input.projectId) : randomUUID().replace(/-/g, '');
    if (this.findRow(id)) throw errors.conflict(`Conflict occurred attempting to store credential - Duplicate ID, ${id}: an EC2 credential with this access key exists.`);
    this.db.run('INSERT INTO credentials (id, user_id, project_id, type, encrypted_blob, created_at) VALUES (?, ?, ?, ?, ?, ?)',
      id, input.userId, input.projectId, input.type, this.encrypt(input.blob), new Date().toISOString());
    return this.get(id);
  }

  /** Changes the given fields; the id of an EC2 credential stays what it was. */
  update(id: string, changes: { userId?: string; projectId?: string | null; type?: string; blob?: string }): Credential {
    const current = this.get(id);
    const type = changes.type ?? current.type;
    const projectId = changes.projectId === undefined ? current.projectId : changes.projectId;
    const blob = changes.blob ?? current.blob;
    if (type === 'ec2') ec2CredentialId(blob, projectId);
    this.db.run('UPDATE credentials SET user_id = ?, project_id = ?, type = ?, encrypted_blob = ? WHERE id = ?',
      changes.userId ?? current.userId, projectId, type, this.encrypt(blob), id);
    return this.get(id);
  }

  delete(id: string): void {
    if (this.db.run('DELETE FROM credentials WHERE id = ?', id).changes === 0) throw new PumiceError('NotFound', `Could not find credential: ${id}.`);
  }
}

/** The id Keystone gives an EC2 credential: SHA-256 of its access key; 400 naming the fix for a blob without one. */
function ec2CredentialId(blob: string, projectId: string | null): string {
  let access: unknown;
  try {
    access = (JSON.parse(blob) as Record<string, unknown>)['access'];
  } catch {
    access = undefined;
  }
  if (typeof access !== 'string' || access === '') {
    throw errors.invalidInput('Invalid blob in credential: an ec2 credential\'s blob is a JSON object with an "access" key, e.g. {"access": "...", "secret": "..."}.');
  }
  if (!projectId) throw errors.invalidInput('Invalid input: an ec2 credential needs a project_id.');
  return createHash('sha256').update(access, 'utf8').digest('hex');
}
