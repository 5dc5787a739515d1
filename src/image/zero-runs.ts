/**
 * Zero detection for the image stores' writes: runs of all-zero granules are
 * not written, so a stored image stays as thin as its data.
 */

/** Zero runs shorter than this are written: smaller holes save little and cost a write each. */
export const granuleBytes = 64 * 1024;
const zeroGranule = Buffer.alloc(granuleBytes);

/** Whether `data` holds only zeros (compares granule by granule; random data fails on the first bytes). */
export function isAllZero(data: Uint8Array): boolean {
  for (let offset = 0; offset < data.length; offset += granuleBytes) {
    const length = Math.min(granuleBytes, data.length - offset);
    if (zeroGranule.compare(data, offset, offset + length, 0, length) !== 0) return false;
  }
  return true;
}

/** [start, end) ranges of `data` made of granules that are not all zero, adjacent granules merged. */
export function nonZeroRuns(data: Uint8Array): [number, number][] {
  const runs: [number, number][] = [];
  for (let offset = 0; offset < data.length; offset += granuleBytes) {
    const end = Math.min(offset + granuleBytes, data.length);
    if (zeroGranule.compare(data, offset, end, 0, end - offset) === 0) continue;
    const last = runs[runs.length - 1];
    if (last && last[1] === offset) last[1] = end;
    else runs.push([offset, end]);
  }
  return runs;
}
