/**
 * Error texts for API callers without the server's directories (issue 12): a
 * qemu-img, file-system or driver message names the file it failed on; the
 * caller keeps the file name, never where Pumice keeps its data. The log
 * keeps the full text where the error happens.
 */

/**
 * `text` with each of `directories` (absolute paths; others are ignored) cut
 * from the paths it names: `/var/lib/pumice/volumes/local/volume-1` reads
 * `volume-1`, and a directory named alone reads `placeholder`. Nested
 * directories are cut whole (longest first).
 */
export function withoutDirectories(text: string, directories: Iterable<string | null | undefined>, placeholder: string): string {
  const absolute = [...new Set(directories)]
    .filter((d): d is string => typeof d === 'string' && d.startsWith('/') && d.replace(/\/+$/, '').length > 0)
    .map((d) => d.replace(/\/+$/, ''))
    .sort((a, b) => b.length - a.length);
  let out = text;
  for (const directory of absolute) {
    const escaped = directory.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    // Not a longer name that merely starts the same (/data/images-old is not under /data/images).
    out = out.replace(new RegExp(`${escaped}(/|(?![\\w.-]))`, 'g'), (_, slash: string) => (slash ? '' : placeholder));
  }
  return out;
}
