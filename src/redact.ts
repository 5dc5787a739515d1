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

/**
 * An absolute file-system path (two or more segments, not part of a URL): `/etc/ceph/ceph.conf`,
 * `/var/lib/pumice/volumes/local/volume-1`. Preceded by a host or a scheme (`http://h:5000/x/y`)
 * it is a URL's path and is left alone.
 */
const fileSystemPath = /(?<![\w.:/@-])\/[\w.@+-]+(?:\/[\w.@+-]+)+\/?/g;

/**
 * `text` with every absolute file-system path reduced to its last name, for a server error (5xx)
 * shown to a caller who is not an administrator: where a configuration, keyring or volume file
 * lives is the operator's business; which file it is still says what failed.
 */
export function withoutAbsolutePaths(text: string): string {
  return text.replace(fileSystemPath, (path) => path.replace(/\/+$/, '').split('/').pop() ?? path);
}
