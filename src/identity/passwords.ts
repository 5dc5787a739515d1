/**
 * Password hashing with scrypt (memory-hard, in Node's standard library).
 * Format: `scrypt$N$r$p$saltBase64$hashBase64`, so parameters can change later
 * without invalidating stored hashes (older hashes verify with their own).
 *
 * Parameters follow OWASP's Password Storage Cheat Sheet (one of its equivalent
 * scrypt settings: N=2^15, r=8, p=3, 32 MiB per hash), with `maxmem` set so a
 * stored hash with absurd parameters cannot make us allocate without bound.
 *
 * Hashing is CPU-bound and costs ~250 ms, so it runs through a bounded queue:
 * a few hashes at once, waiting logins served round-robin per source address
 * (a flood from one address waits behind itself, not in front of others), and
 * a full queue answers 503 at once instead of growing.
 */
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { PumiceError } from '../errors.ts';

const costN = 32768;
const blockSizeR = 8;
const parallelP = 3;
const keyBytes = 32;
/** 128 * N * r bytes are needed (32 MiB); twice that leaves room and refuses anything larger. */
const scryptMaxmemBytes = 64 * 1024 * 1024;

/** Hashes at once; more wait, so logins never take every thread of the pool that file I/O needs. */
const concurrentHashesMax = 2;
/** Logins waiting from one source address; beyond it that source gets 503 at once. */
export const waitingPerSourceMax = 16;
/** Logins waiting in all. */
export const waitingMax = 256;

let hashesRunning = 0;
/** Waiting jobs per source, served round-robin (Map keeps insertion order of sources). */
const waiting = new Map<string, Array<() => void>>();
let waitingCount = 0;

function busy(): PumiceError {
  return new PumiceError('BackendUnavailable', 'Too many logins are being checked right now; retry in a second.', { 'Retry-After': '1' });
}

function nextJob(): (() => void) | undefined {
  for (const [source, queue] of waiting) {
    const job = queue.shift();
    waiting.delete(source);
    // Re-insert at the end: the next turn goes to another source.
    if (queue.length > 0) waiting.set(source, queue);
    if (job) {
      waitingCount--;
      return job;
    }
  }
  return undefined;
}

async function derive(password: string, salt: Buffer, options: ScryptOptions, source: string): Promise<Buffer> {
  if (hashesRunning >= concurrentHashesMax) {
    const queue = waiting.get(source) ?? [];
    if (queue.length >= waitingPerSourceMax || waitingCount >= waitingMax) throw busy();
    await new Promise<void>((resolve) => {
      queue.push(resolve);
      waiting.set(source, queue);
      waitingCount++;
    });
  }
  hashesRunning++;
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      scrypt(password, salt, keyBytes, { ...options, maxmem: scryptMaxmemBytes }, (error, key) => (error ? reject(error) : resolve(key)));
    });
  } finally {
    hashesRunning--;
    nextJob()?.();
  }
}

export async function hashPassword(password: string, source = 'local'): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, { N: costN, r: blockSizeR, p: parallelP }, source);
  return `scrypt$${costN}$${blockSizeR}$${parallelP}$${salt.toString('base64')}$${key.toString('base64')}`;
}

/** A hash of a random password with the current parameters: unknown users cost a real scrypt. */
const dummyHash = `scrypt$${costN}$${blockSizeR}$${parallelP}$${randomBytes(16).toString('base64')}$${randomBytes(keyBytes).toString('base64')}`;

/**
 * Checks a password against a stored hash. With no stored hash (unknown user, user without a
 * password) it still runs one scrypt of the current cost, so the answer takes as long either way.
 * Throws 503 (Retry-After) when the hashing queue is full.
 */
export async function verifyPassword(password: string, stored: string | null, source = 'local'): Promise<boolean> {
  const parsed = parseHash(stored ?? dummyHash) ?? parseHash(dummyHash)!;
  const key = await derive(password, parsed.salt, { N: parsed.n, r: parsed.r, p: parsed.p }, source);
  if (stored === null || parsed.hash.length !== key.length) return false;
  return timingSafeEqual(key, parsed.hash) && parseHash(stored) !== undefined;
}

function parseHash(stored: string): { n: number; r: number; p: number; salt: Buffer; hash: Buffer } | undefined {
  const [scheme, n, r, p, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || !salt || !hash) return undefined;
  const N = Number(n);
  const R = Number(r);
  const P = Number(p);
  if (!Number.isSafeInteger(N) || N < 2 || (N & (N - 1)) !== 0) return undefined;
  if (!Number.isSafeInteger(R) || R < 1 || R > 32 || !Number.isSafeInteger(P) || P < 1 || P > 16) return undefined;
  // A stored hash (corrupt or hostile) never makes us allocate beyond maxmem.
  if (128 * N * R > scryptMaxmemBytes) return undefined;
  return { n: N, r: R, p: P, salt: Buffer.from(salt, 'base64'), hash: Buffer.from(hash, 'base64') };
}
