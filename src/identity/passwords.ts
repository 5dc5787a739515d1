/**
 * Password hashing with scrypt (memory-hard, in Node's standard library).
 * Format: `scrypt$N$r$p$saltBase64$hashBase64`, so parameters can change later
 * without invalidating stored hashes.
 */
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

const costN = 16384;
const blockSizeR = 8;
const parallelP = 1;
const keyBytes = 32;

/** Hashes at once; more wait, so logins never take every thread of the pool that file I/O needs. */
const concurrentHashesMax = 2;
let hashesRunning = 0;
const waiting: (() => void)[] = [];

async function derive(password: string, salt: Buffer, options: ScryptOptions): Promise<Buffer> {
  if (hashesRunning >= concurrentHashesMax) await new Promise<void>((resolve) => waiting.push(resolve));
  hashesRunning++;
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      scrypt(password, salt, keyBytes, options, (error, key) => (error ? reject(error) : resolve(key)));
    });
  } finally {
    hashesRunning--;
    waiting.shift()?.();
  }
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, { N: costN, r: blockSizeR, p: parallelP });
  return `scrypt$${costN}$${blockSizeR}$${parallelP}$${salt.toString('base64')}$${key.toString('base64')}`;
}

export async function verifyPassword(password: string, stored: string | null): Promise<boolean> {
  if (!stored) return false;
  const [scheme, n, r, p, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64');
  const key = await derive(password, Buffer.from(salt, 'base64'), { N: Number(n), r: Number(r), p: Number(p) });
  return key.length === expected.length && timingSafeEqual(key, expected);
}
