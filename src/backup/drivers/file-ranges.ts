/** Positional file writes shared by the backup drivers that read and restore local volume files. */
import { execFile } from 'node:child_process';
import type { FileHandle } from 'node:fs/promises';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const zeroBlock = Buffer.alloc(1 << 20);

/** Writes all of `data` at `position` (a positional write may be short). */
export async function writeFully(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

/**
 * Zeroes a file range: a punched hole (sparse) for ranges of at least
 * `punchFromBytes` (a hole costs a process start, so small ranges are
 * written), zeros written otherwise or where holes are not supported.
 */
export async function zeroFileRange(fh: FileHandle, path: string, offset: number, length: number, punchFromBytes = 0): Promise<void> {
  if (length <= 0) return;
  if (length >= punchFromBytes) {
    try {
      await execFileAsync('fallocate', ['--punch-hole', '--keep-size', '--offset', String(offset), '--length', String(length), '--', path], { timeout: 600_000 });
      return;
    } catch {
      // no fallocate or no hole support on this filesystem: write zeros
    }
  }
  for (let done = 0; done < length; done += zeroBlock.length) {
    await writeFully(fh, zeroBlock.subarray(0, Math.min(zeroBlock.length, length - done)), offset + done);
  }
}
