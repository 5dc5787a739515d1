/**
 * Direct I/O (O_DIRECT) for the file store's uploads. Buffered writes cost this
 * 2-core machine about 2 CPU-seconds per GiB on libuv's threads (the copy into
 * the page cache and its bookkeeping; `fsync` then writes it all again), more
 * than the md5 and sha512 workers together; O_DIRECT writes go from the upload's
 * batches straight to the disk for about 0.1 s per GiB (measured with 1 GiB of
 * random bytes, 8 MiB writes). The file system must accept O_DIRECT (tmpfs does
 * not): the store probes its directory once and keeps buffered writes otherwise.
 *
 * O_DIRECT wants the buffer's address, the file offset and the length aligned to
 * the device's logical block. JavaScript cannot see an address, so a batch is
 * allocated one block larger and the first offset inside it at which a direct
 * write of one block succeeds (the kernel answers EINVAL at once for a
 * misaligned buffer) is where the batch starts; batches are pooled, so each
 * probe runs once per batch ever made.
 */
import { closeSync, constants, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import type { BatchAllocator } from '../hashing.ts';

/** Offsets, lengths and addresses are kept multiples of this (4 KiB covers 512-byte and 4K-sector disks). */
export const directIoBlockBytes = 4096;

/** Rounds a write's end up to a whole block (the tail past the data is cut by the final truncate). */
export function directIoLength(bytes: number): number {
  return Math.ceil(bytes / directIoBlockBytes) * directIoBlockBytes;
}

export class DirectIo implements BatchAllocator {
  readonly kind = 'direct-io';
  readonly openFlag = constants.O_DIRECT;

  private constructor(private readonly probeFd: number) {}

  /** Direct I/O in `directory`, or the reason it cannot be used there (the store then writes through the page cache). */
  static probe(directory: string): DirectIo | string {
    if (!constants.O_DIRECT) return 'this platform has no O_DIRECT';
    // Named as an interrupted upload's temp file, so the start-up sweep removes one a crash left behind.
    const path = join(directory, `${randomUUID()}.${randomBytes(6).toString('hex')}.tmp`);
    let fd: number;
    try {
      fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_DIRECT, 0o600);
    } catch (error) {
      return `the file system of ${directory} refuses O_DIRECT (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`;
    } finally {
      // The probe file lives on only as the open descriptor.
      rmSync(path, { force: true });
    }
    const io = new DirectIo(fd);
    try {
      io.allocate(directIoBlockBytes);
    } catch (error) {
      closeSync(fd);
      return `direct writes fail in ${directory}: ${(error as Error).message}`;
    }
    return io;
  }

  /** A batch of `bytes` whose first byte is block-aligned (a view into a SharedArrayBuffer one block larger). */
  allocate(bytes: number): Buffer {
    const memory = new SharedArrayBuffer(bytes + directIoBlockBytes);
    const whole = Buffer.from(memory);
    // Array buffers are at least 8-byte aligned; try every 8th offset of the first block.
    for (let offset = 0; offset < directIoBlockBytes; offset += 8) {
      try {
        writeSync(this.probeFd, whole, offset, directIoBlockBytes, 0);
        return Buffer.from(memory, offset, bytes);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EINVAL') throw error;
      }
    }
    throw new Error(`no ${directIoBlockBytes}-byte aligned offset in a new batch accepts a direct write`);
  }

  close(): void {
    closeSync(this.probeFd);
  }
}
