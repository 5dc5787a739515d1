/**
 * Glance's `web-download` import method: the image service fetches the
 * image's data from a URL the user gives. A server that fetches any URL for
 * its users is a way into networks they cannot reach (SSRF), so Pumice,
 * unlike Glance, offers the method only when the operator lists the hosts
 * it may fetch from (`[import_filtering_opts] allowed_hosts`). Glance's other
 * filters (schemes, ports, their disallowed_ lists) apply as in Glance, to
 * the URL and to every redirect it leads to.
 */
import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import { errors } from '../errors.ts';

export interface ImportFilter {
  allowedSchemes: string[];
  disallowedSchemes: string[];
  allowedHosts: string[];
  disallowedHosts: string[];
  allowedPorts: number[];
  disallowedPorts: number[];
}

/** Redirects followed, each checked like the first URL. */
const redirectsMax = 3;
/** No answer (headers, or data between chunks) for this long ends the download. */
const idleTimeoutMs = 30_000;

/** True when web-download can be offered: an operator named the hosts it may fetch from. */
export function webDownloadEnabled(filter: ImportFilter | null): filter is ImportFilter {
  return filter !== null && filter.allowedHosts.length > 0;
}

/** Why `url` may not be fetched, or null when it may. */
function refusal(url: URL, filter: ImportFilter): string | null {
  const scheme = url.protocol.replace(/:$/, '');
  if (!['http', 'https'].includes(scheme)) return `scheme '${scheme}' is not supported (http or https)`;
  if (filter.allowedSchemes.length > 0 ? !filter.allowedSchemes.includes(scheme) : filter.disallowedSchemes.includes(scheme)) {
    return `scheme '${scheme}' is not allowed by [import_filtering_opts] (allowed: ${filter.allowedSchemes.join(', ') || 'any'})`;
  }
  if (url.username || url.password) return 'credentials in the URL are not accepted';
  const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (!filter.allowedHosts.includes(host) || filter.disallowedHosts.includes(host)) {
    return `host '${host}' is not in [import_filtering_opts] allowed_hosts (${filter.allowedHosts.join(', ')})`;
  }
  const port = url.port ? Number(url.port) : scheme === 'https' ? 443 : 80;
  if (filter.allowedPorts.length > 0 ? !filter.allowedPorts.includes(port) : filter.disallowedPorts.includes(port)) {
    return `port ${port} is not allowed by [import_filtering_opts] (allowed: ${filter.allowedPorts.join(', ') || 'any'})`;
  }
  return null;
}

/** Parses and checks a web-download URI from a request: a 400 naming the rule and the fix when it is refused. */
export function checkImportUri(uri: string | undefined, filter: ImportFilter | null): URL {
  if (!webDownloadEnabled(filter)) {
    throw errors.badRequest("Import method 'web-download' is not enabled: an operator must list the hosts it may fetch from in [import_filtering_opts] allowed_hosts; available: glance-direct.");
  }
  if (!uri) throw errors.badRequest("Import method 'web-download' needs the image's address: {\"method\": {\"name\": \"web-download\", \"uri\": \"https://...\"}}.");
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw errors.badRequest(`The web-download uri '${uri.slice(0, 200)}' is not a URL: give an absolute http(s) address.`);
  }
  const why = refusal(url, filter);
  if (why) throw errors.badRequest(`The web-download uri is refused: ${why}. Ask an operator to allow it, or upload the data with glance-direct.`);
  return url;
}

/** A download that failed: the message is shown to the image's owner (no host paths in it). */
export class DownloadError extends Error {}

export interface Download {
  body: Readable;
  /** Content-Length of the answer, when it has one. */
  lengthBytes: number | null;
}

/** GETs `url`, following up to `redirectsMax` redirects that pass the filter; resolves with the body of a 200. */
export async function fetchImageData(url: URL, filter: ImportFilter): Promise<Download> {
  let current = url;
  for (let hop = 0; ; hop++) {
    const res = await get(current);
    const status = res.statusCode ?? 0;
    if (status >= 300 && status < 400 && res.headers.location) {
      res.resume();
      if (hop >= redirectsMax) throw new DownloadError(`${url.host} redirected more than ${redirectsMax} times`);
      const next = new URL(res.headers.location, current);
      const why = refusal(next, filter);
      if (why) throw new DownloadError(`${current.host} redirected to ${next.host}, which is refused: ${why}`);
      current = next;
      continue;
    }
    if (status !== 200) {
      res.resume();
      throw new DownloadError(`GET ${current.origin}${current.pathname} answered ${status} ${res.statusMessage ?? ''}`.trim());
    }
    const length = Number(res.headers['content-length']);
    return { body: res, lengthBytes: Number.isSafeInteger(length) && length >= 0 ? length : null };
  }
}

function get(url: URL): Promise<http.IncomingMessage> {
  const client = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = client.get(url, { timeout: idleTimeoutMs, headers: { 'User-Agent': 'pumice-image-import' } }, (res) => {
      res.setTimeout(idleTimeoutMs, () => res.destroy(new DownloadError(`${url.host} sent no data for ${idleTimeoutMs / 1000} s`)));
      resolve(res);
    });
    req.on('timeout', () => req.destroy(new DownloadError(`${url.host} did not answer in ${idleTimeoutMs / 1000} s`)));
    req.on('error', (error) => reject(error instanceof DownloadError ? error : new DownloadError(`GET ${url.origin}: ${error.message}`)));
  });
}

/** The filter of a parsed [import_filtering_opts] section. */
export function importFilterOf(options: {
  allowed_schemes: string[]; disallowed_schemes: string[]; allowed_hosts: string[]; disallowed_hosts: string[]; allowed_ports: number[]; disallowed_ports: number[];
}): ImportFilter {
  return {
    allowedSchemes: options.allowed_schemes,
    disallowedSchemes: options.disallowed_schemes,
    allowedHosts: options.allowed_hosts,
    disallowedHosts: options.disallowed_hosts,
    allowedPorts: options.allowed_ports,
    disallowedPorts: options.disallowed_ports,
  };
}
