/**
 * Key pairs (os-keypairs), per user as in Nova. Pumice does not inject keys
 * into guests (the scenario's `inject_key = false`); they are stored and
 * handed to the guest through metadata consumers only.
 */
import { createHash, generateKeyPairSync } from 'node:crypto';
import type { Db } from '../db/db.ts';
import { errors } from '../errors.ts';
import { nowIso } from './model.ts';

export interface KeypairRow {
  user_id: string;
  name: string;
  type: string;
  public_key: string;
  fingerprint: string;
  created_at: string;
}

const knownKeyTypes = ['ssh-rsa', 'ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'ssh-dss'];

/** MD5 fingerprint of an OpenSSH public key line, as Nova shows it; throws 400 on a line that is not one. */
export function fingerprintOf(publicKey: string): string {
  const parts = publicKey.trim().split(/\s+/);
  const blob = parts.length >= 2 && knownKeyTypes.includes(parts[0]!) ? Buffer.from(parts[1]!, 'base64') : null;
  if (!blob || blob.length < 20 || blob.readUInt32BE(0) !== parts[0]!.length || blob.subarray(4, 4 + parts[0]!.length).toString() !== parts[0]) {
    throw errors.badRequest('Keypair data is invalid: failed to generate fingerprint. Give an OpenSSH public key line such as the content of ~/.ssh/id_ed25519.pub.');
  }
  return createHash('md5').update(blob).digest('hex').replace(/(..)(?!$)/g, '$1:');
}

function sshString(data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  return Buffer.concat([length, data]);
}

function sshMpint(bigEndian: Buffer): Buffer {
  return sshString(bigEndian[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), bigEndian]) : bigEndian);
}

/** A new RSA key pair: the OpenSSH public line and the PEM private key (returned once, never stored). */
export function generateRsaKeypair(comment: string): { publicKey: string; privateKey: string } {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = publicKey.export({ format: 'jwk' }) as { n: string; e: string };
  const blob = Buffer.concat([sshString(Buffer.from('ssh-rsa')), sshMpint(Buffer.from(jwk.e, 'base64url')), sshMpint(Buffer.from(jwk.n, 'base64url'))]);
  return {
    publicKey: `ssh-rsa ${blob.toString('base64')} ${comment}`,
    privateKey: privateKey.export({ format: 'pem', type: 'pkcs1' }).toString(),
  };
}

export class Keypairs {
  constructor(private readonly db: Db) {}

  list(userId: string): KeypairRow[] {
    return this.db.all<KeypairRow>('SELECT * FROM keypairs WHERE user_id = ? ORDER BY name', userId);
  }

  get(userId: string, name: string): KeypairRow {
    const row = this.db.get<KeypairRow>('SELECT * FROM keypairs WHERE user_id = ? AND name = ?', userId, name);
    if (!row) throw errors.notFound('Keypair', `${name} of user ${userId}`);
    return row;
  }

  /** Imports `publicKey`, or generates a pair when it is absent (the private key is in the result only). */
  create(userId: string, name: string, type: string, publicKey: string | null, quotaMax: number): { row: KeypairRow; privateKey: string | null } {
    let privateKey: string | null = null;
    let key = publicKey;
    if (key === null) {
      const generated = generateRsaKeypair(`Generated-by-Pumice`);
      key = generated.publicKey;
      privateKey = generated.privateKey;
    }
    const fingerprint = fingerprintOf(key);
    return this.db.transaction(() => {
      if (this.db.get('SELECT 1 FROM keypairs WHERE user_id = ? AND name = ?', userId, name)) {
        throw errors.conflict(`Key pair '${name}' already exists.`);
      }
      const count = this.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM keypairs WHERE user_id = ?', userId)!.n;
      if (quotaMax >= 0 && count >= quotaMax) throw errors.quotaExceeded(`Quota exceeded, too many key pairs (limit ${quotaMax}): delete one first.`);
      this.db.run('INSERT INTO keypairs (user_id, name, type, public_key, fingerprint, created_at) VALUES (?, ?, ?, ?, ?, ?)', userId, name, type, key!.trim(), fingerprint, nowIso());
      return { row: this.get(userId, name), privateKey };
    });
  }

  delete(userId: string, name: string): void {
    const changed = this.db.run('DELETE FROM keypairs WHERE user_id = ? AND name = ?', userId, name);
    if (changed.changes === 0) throw errors.notFound('Keypair', `${name} of user ${userId}`);
  }
}
