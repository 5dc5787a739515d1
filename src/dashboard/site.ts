/**
 * The web dashboard's server side: static files only. The dashboard is a
 * client of the public OpenStack APIs on this same listener (same origin, so
 * no CORS), with the user's own token; this module never sees a token and
 * serves nothing that depends on who asks.
 */
import { createReadStream, statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, extname, join, resolve, sep } from 'node:path';

/** URL prefix of the dashboard on the API listener. */
export const dashboardPrefix = '/dashboard';

const staticDirectory = resolve(import.meta.dirname, 'static');
/** The htm package's folder (its `exports` hide package.json; its main file is `dist/htm.js`). */
const htmDirectory = dirname(dirname(createRequire(import.meta.url).resolve('htm')));
/** Preact + hooks + htm in one ES module (htm's own bundle): the whole UI stack, no build step. */
const vendorFiles: Record<string, string> = {
  'vendor/preact-htm.js': join(htmDirectory, 'preact', 'standalone.module.js'),
  'vendor/LICENSE-htm.txt': join(htmDirectory, 'LICENSE'),
};

const contentTypes: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.txt': 'text/plain; charset=utf-8',
};

/**
 * Only this origin's own files and API: no inline script or style, no eval, no framing.
 * `connect-src 'self'` is what lets the pages call the APIs (and nothing else).
 */
const securityHeaders: Record<string, string> = {
  'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  'Cache-Control': 'no-cache',
};

/** True when a request for `/` comes from a browser (it asks for HTML); API clients keep the JSON version document. */
export function wantsDashboard(req: IncomingMessage, pathname: string): boolean {
  if (pathname !== '/' || (req.method !== 'GET' && req.method !== 'HEAD')) return false;
  return /(^|,)\s*text\/html\b/i.test(req.headers.accept ?? '');
}

/** True when `pathname` belongs to the dashboard. */
export function isDashboardPath(pathname: string): boolean {
  return pathname === dashboardPrefix || pathname.startsWith(dashboardPrefix + '/');
}

/**
 * Answers a dashboard request: a redirect from `/` or the bare prefix, a static file, or a plain 404/405.
 * Every path below the prefix that names no file is the single page itself (`index.html`), so a reload
 * of `/dashboard/volumes` works.
 */
export function serveDashboard(req: IncomingMessage, res: ServerResponse, pathname: string): void {
  if (pathname === '/' || pathname === dashboardPrefix) return redirect(res, `${dashboardPrefix}/`);
  if (req.method !== 'GET' && req.method !== 'HEAD') return plain(res, 405, 'Method not allowed: the dashboard only serves GET.', { Allow: 'GET, HEAD' });
  const relative = decodeSafely(pathname.slice(dashboardPrefix.length + 1));
  if (relative === null) return plain(res, 400, 'Malformed path.');
  let file = vendorFiles[relative] ?? resolve(staticDirectory, relative || 'index.html');
  // Nothing outside the static directory (`..`, encoded slashes), whatever the path says.
  if (!vendorFiles[relative] && file !== staticDirectory && !file.startsWith(staticDirectory + sep)) return plain(res, 404, 'Not found.');
  let size = fileSize(file);
  if (size === null) {
    if (extname(relative) !== '') return plain(res, 404, 'Not found.');
    file = join(staticDirectory, 'index.html');
    size = fileSize(file)!;
  }
  res.writeHead(200, { ...securityHeaders, 'Content-Type': contentTypes[extname(file)] ?? 'application/octet-stream', 'Content-Length': String(size) });
  if (req.method === 'HEAD') return void res.end();
  createReadStream(file).on('error', () => res.destroy()).pipe(res);
}

function decodeSafely(path: string): string | null {
  try {
    const decoded = decodeURIComponent(path);
    return decoded.includes('\0') ? null : decoded;
  } catch {
    return null;
  }
}

function fileSize(file: string): number | null {
  try {
    const stat = statSync(file);
    return stat.isFile() ? stat.size : null;
  } catch {
    return null;
  }
}

function redirect(res: ServerResponse, location: string): void {
  res.writeHead(302, { ...securityHeaders, Location: location, 'Content-Length': '0' });
  res.end();
}

function plain(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  const body = Buffer.from(text + '\n');
  res.writeHead(status, { ...securityHeaders, ...headers, 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': String(body.length) });
  res.end(body);
}
