/**
 * Private files: Pumice keeps tokens' digests, TLS-PSK keys and volume bytes on disk, so every
 * file it creates is 0600 and every directory 0700 (the process runs with umask 077), and a
 * directory it is given that others can enter or read is reported at start and by `doctor`.
 */
import { chmodSync, mkdirSync, statSync } from 'node:fs';

/** The umask `serve` runs with: new files 0600, new directories 0700. */
export const privateUmask = 0o077;

/** Sets the process umask so every file and directory Pumice creates is private. */
export function usePrivateUmask(): void {
  process.umask(privateUmask);
}

/**
 * What is unsafe about a directory's mode, or null when only its owner can use it (or it does
 * not exist yet). `what` names the directory and its option for the message.
 */
export function unsafeDirectoryMode(path: string, what: string): string | null {
  let mode: number;
  try {
    mode = statSync(path).mode & 0o777;
  } catch {
    return null;
  }
  if ((mode & 0o077) === 0) return null;
  return `${what} ${path} has mode ${mode.toString(8).padStart(4, '0')}: other local users can reach the files in it (volumes, database, keys); run chmod 700 ${path}`;
}

/** Creates a directory 0700 if missing; returns the warning for an existing one that is not private. */
export function ensurePrivateDirectory(path: string, what: string): string | null {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  return unsafeDirectoryMode(path, what);
}

/** Makes an existing file private (files created before the umask, or by an older Pumice); ignores a missing one. */
export function makePrivate(path: string): void {
  try {
    const mode = statSync(path).mode & 0o777;
    if ((mode & 0o077) !== 0) chmodSync(path, mode & 0o700);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}
