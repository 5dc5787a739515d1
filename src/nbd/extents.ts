/**
 * Data and holes of a local (sparse) volume file, for the NBD export's `base:allocation` metadata
 * context (NBD_CMD_BLOCK_STATUS). Node has no lseek(SEEK_DATA / SEEK_HOLE): the walk is done by the
 * native addon (native/src/files.cc), one thread-pool job per query.
 *
 * When the addon is not built or is an older build without fileExtents, `extentProbe()` is
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
}

interface FilesAddon {
  fileExtents?: (fd: number, offset: number, length: number, maxExtents: number) => Promise<number[]>;
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
  const { fileExtents } = addon;
  if (typeof fileExtents !== 'function') return (probe = null);
  probe = {
    async fileExtents(fd, offset, length, maxExtents) {
      const flat = await fileExtents(fd, offset, length, maxExtents);
      const out: FileExtent[] = [];
      for (let i = 0; i + 1 < flat.length; i += 2) out.push({ length: flat[i]!, hole: flat[i + 1] === 1 });
      return out;
    },
  };
  return probe;
}
