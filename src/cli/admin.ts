/**
 * `pumice admin reset-password`: what `keystone-manage bootstrap --bootstrap-password`
 * does for a lost admin password. Works on the data directory (a running server sees the
 * new password at the next login); the password goes to admin-openrc (0600), never to
 * stdout or the journal.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../config/config.ts';
import { Db } from '../db/db.ts';
import { bootstrapIdentity, generateAdminPassword, writeAdminOpenrc } from '../identity/bootstrap.ts';
import { IdentityService } from '../identity/identity.ts';

export interface ResetResult {
  generated: boolean;
  openrcPath: string;
}

/** Sets the admin's password (from `passwordFile`'s first line, or generated), enables the admin and rewrites admin-openrc. */
export async function resetAdminPassword(options: { dataDir: string; configPath: string | null; passwordFile?: string | undefined }): Promise<ResetResult> {
  const config = loadConfig(options.configPath, options.dataDir);
  const dbPath = join(options.dataDir, 'pumice.db');
  if (!existsSync(dbPath)) throw new Error(`${dbPath} does not exist: ${options.dataDir} is not a Pumice data directory yet; run pumice init --data-dir ${options.dataDir} (or pass the right --data-dir)`);
  const password = options.passwordFile === undefined ? generateAdminPassword() : readPasswordFile(options.passwordFile);
  const db = new Db(dbPath);
  try {
    const identity = new IdentityService(db, config.token.expiration);
    // The bootstrap itself: a missing admin (or role, project, catalog entry) is made again, an existing one gets this password.
    await bootstrapIdentity(db, identity, password, undefined, 'reset');
  } finally {
    db.close();
  }
  const openrcPath = writeAdminOpenrc(options.dataDir, authUrlOf(options.dataDir, config.DEFAULT.public_endpoint), password);
  return { generated: options.passwordFile === undefined, openrcPath };
}

function readPasswordFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new Error(`--password-file ${path}: ${(error as Error).message}`);
  }
  const password = text.split(/\r?\n/)[0]!;
  if (password.length === 0) throw new Error(`--password-file ${path}: the first line is empty; write the password on it (or leave out --password-file to generate one)`);
  if ((statSync(path).mode & 0o077) !== 0) process.stderr.write(`pumice: warning: ${path} is readable by other users; remove it or chmod 600 it\n`);
  return password;
}

/** The address admin-openrc already names (the server rewrites it at each start), else public_endpoint, else the default listener. */
function authUrlOf(dataDir: string, publicEndpoint: string | null): string {
  const path = join(dataDir, 'admin-openrc');
  if (existsSync(path)) {
    const match = /^export OS_AUTH_URL=(\S+)$/m.exec(readFileSync(path, 'utf8'));
    if (match) return match[1]!;
  }
  return `${publicEndpoint ?? 'http://127.0.0.1:5000'}/identity/v3`;
}
