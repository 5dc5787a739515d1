/**
 * Data and holes of a local (sparse) volume file, for the NBD export's `base:allocation` metadata
 * context (NBD_CMD_BLOCK_STATUS). Node has no lseek(SEEK_DATA / SEEK_HOLE): the walk is done by the
 * native addon (native/src/files.cc), one thread-pool job per query.
 *
 * When the addon is not built or is an older build without these functions, `extentProbe()` is
 * null and the NBD server does not offer `base:allocation` at all (NBD_OPT_LIST_META_CONTEXT and
 * NBD_OPT_SET_META_CONTEXT select no context, so clients never send BLOCK_STATUS and read every
 * byte, as before): answering "all data" instead would be correct but would only cost clients a
 * round trip per extent for nothing.
 */
import { loadBinding } from '../ceph/rbd.js';

export interface FileExtent {
  length: number;
  /** True for a hole (reads as zeros, not allocated); false for data. */
  hole: boolean;
}

export interface ExtentProbe {
  /**
   * Consecutive extents from `offset`, together at most `length` bytes (fewer bytes when
   * `maxExtents` extents were found first); past the end of the file is a hole.
   */
  fileExtents(fd: number, offset: number, length: number, maxExtents: number): Promise<FileExtent[]>;
  /** lseek(SEEK_DATA): the next data offset at or after `offset`, or -1 when there is none. */
  seekData(fd: number, offset: number): number;
  /** lseek(SEEK_HOLE): the next hole at or after `offset` (the file size at the end), or -1 past the end. */
  seekHole(fd: number, offset: number): number;
}

interface FilesAddon {
  fileExtents?: (fd: number, offset: number, length: number, maxExtents: number) => Promise<number[]>;
  seekData?: (fd: number, offset: number) => number;
  seekHole?: (fd: number, offset: number) => number;
}

let probe: ExtentProbe | null | undefined;

/** The probe, or null when the native addon (or its files.cc functions) cannot be loaded. */
export function extentProbe(): ExtentProbe | null {
  if (probe !== undefined) return probe;
  let addon: FilesAddon;
  try {
    addon = loadBinding() as unknown as FilesAddon;
  } catch {
    return (probe = null);
  }
  const { fileExtents, seekData, seekHole } = addon;
  if (typeof fileExtents !== 'function' || typeof seekData !== 'function' || typeof seekHole !== 'function') return (probe = null);
  probe = {
    async fileExtents(fd, offset, length, maxExtents) {
      const flat = await fileExtents(fd, offset, length, maxExtents);
      const out: FileExtent[] = [];
      for (let i = 0; i + 1 < flat.length; i += 2) out.push({ length: flat[i]!, hole: flat[i + 1] === 1 });
      return out;
    },
    seekData: (fd, offset) => seekData(fd, offset),
    seekHole: (fd, offset) => seekHole(fd, offset),
  };
  return probe;
}
