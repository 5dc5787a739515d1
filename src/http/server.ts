/**
 * The one HTTP listener: every API lives under its path prefix, as in an
 * all-in-one OpenStack (`/identity`, `/volume`, `/image`). This module owns
 * body limits, JSON parsing, token authentication and fault rendering;
 * services only see a RequestContext and return a Reply.
 */
import { emitEvent, flushEvents, setRequestCaller, withRequestId } from '../events.ts';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { errors, PumiceError } from '../errors.ts';
import { pumiceVersion } from '../config/version.ts';
import { withoutAbsolutePaths } from '../redact.ts';
import { toFault, type FaultStyle } from './faults.ts';
import type { AuthContext, Reply, RequestContext, Router } from './router.ts';
import { enforceAccessRules } from '../identity/access-rules.ts';
import { atTurnEndFirst } from '../util/turn-end.ts';

export interface ServiceApp {
  /** Path prefix without trailing slash, e.g. `/volume`. */
  prefix: string;
  router: Router;
  faultStyle: FaultStyle;
  /** Runs after routing and authentication, before the handler; returns headers to add to every reply (also faults). */
  prepare?: (ctx: RequestContext) => Record<string, string> | undefined;
  /** Headers added to every reply of this service, including faults before `prepare` ran. */
  baseHeaders?: (ctx: { headers: IncomingMessage['headers'] }) => Record<string, string>;
  /** Rewrites the path below the prefix before routing; returns the project id it stripped from the URL, if any. */
  rewritePath?: (path: string) => { path: string; pathProjectId: string | null };
}

export interface TokenValidator {
  /** Returns the token's context or throws a 401 PumiceError. */
  validateToken(tokenId: string): AuthContext;
}

export interface HttpServerOptions {
  apps: ServiceApp[];
  tokens: TokenValidator;
  requestBodyBytesMax: number;
  publicEndpoint: string | null;
  log: (message: string) => void;
  debug: boolean;
  /** Reply for `GET /`: lists the services. */
  rootDocument: (baseUrl: string) => unknown;
  /** Longest a socket may sit idle while the client still sends the request (default 120 s). */
  idleTimeoutMs?: number;
  /** Static pages on the same listener (the dashboard): tried before the APIs, for the paths it claims. */
  site?: { handles(req: IncomingMessage, pathname: string): boolean; serve(req: IncomingMessage, res: ServerResponse, pathname: string): void };
}

export function createHttpServer(options: HttpServerOptions): Server {
  const apps = [...options.apps].sort((a, b) => b.prefix.length - a.prefix.length);
  const server = createServer((req, res) => {
    // Once the whole request has arrived, the server is the slow side (a conversion, a glance-direct
    // import): the idle timeout bounds stalled clients, and must not cut off one that waits for the answer.
    const holdOpen = (): void => {
      req.socket.setTimeout(0);
    };
    if (req.complete) holdOpen();
    else req.once('end', holdOpen);
    res.once('finish', () => {
      if (!req.socket.destroyed) req.socket.setTimeout(server.timeout);
    });
    handle(req, res).catch((error: unknown) => {
      options.log(`ERROR: response failed: ${error instanceof Error ? error.stack : String(error)}`);
      if (!res.headersSent && !repliesQueued.has(res)) send(res, 500, { computeFault: { code: 500, message: 'internal error' } }, {});
      else res.destroy();
    });
  });
  // Requests Node's parser rejects (oversize headers, malformed HTTP) still get a fault body.
  server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) return socket.destroy();
    const status = error.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    const message = status === 431
      ? 'Request headers or URL are too large (over 16 KiB): shorten the URL or query string.'
      : 'Malformed HTTP request: the request line or headers could not be parsed.';
    const body = JSON.stringify({ badRequest: { code: status, message } });
    socket.end(`HTTP/1.1 ${status} ${status === 431 ? 'Request Header Fields Too Large' : 'Bad Request'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  // No cap on a whole request: an image upload of many GiB may take long. Slow or stalled
  // clients are still bounded: headers within 66 s, and no socket idle for more than 120 s.
  server.requestTimeout = 0;
  server.timeout = options.idleTimeoutMs ?? 120_000;

  function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = `req-${randomUUID()}`;
    return withRequestId(requestId, () => handleRequest(req, res, requestId));
  }

  async function handleRequest(req: IncomingMessage, res: ServerResponse, requestId: string): Promise<void> {
    const started = process.hrtime.bigint();
    let auth: RequestContext['auth'] = null;
    const url = new URL(req.url ?? '/', 'http://placeholder');
    const baseUrl = options.publicEndpoint?.replace(/\/+$/, '') ?? `http://${req.headers.host ?? '127.0.0.1'}`;
    const pathname = url.pathname.replace(/\/{2,}/g, '/');
    const app = apps.find((a) => pathname === a.prefix || pathname.startsWith(a.prefix + '/'));
    let status = 500;
    // Pumice's version on every API reply: the services' version documents cannot carry it (tempest
    // validates them with additionalProperties: false); `/` has it in its body too.
    const headers: Record<string, string> = { 'x-openstack-request-id': requestId, 'x-pumice-version': pumiceVersion() };
    // Recorded before the answer goes out: a client that reads the events file after its reply finds it there.
    let recorded = false;
    // The declared route (`/volume/v3/:project_id/volumes/:volume_id`): metrics count by it, not by raw path.
    let route = app ? null : pathname === '/' ? '/' : 'unmatched';
    /** Records the request's event; `flush`: write the buffered events now (a reply that leaves at once, not through queueReply). */
    const record = (answered: number, flush = true): void => {
      if (recorded) return;
      recorded = true;
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      emitEvent('http.request', { method: req.method, path: pathname, status: answered, duration_ms: Math.round(ms * 10) / 10, user_id: auth?.userId ?? null, project_id: auth?.projectId ?? null, route: route ?? 'unmatched' });
      // Events are buffered: written before the reply, so a reader after the reply finds them.
      if (flush) flushEvents();
    };
    try {
      if (options.site?.handles(req, pathname)) {
        // One label for every static file: metrics stay bounded whatever paths browsers ask for.
        route = '/dashboard';
        options.site.serve(req, res, pathname);
        status = res.statusCode;
        return;
      }
      if (!app) {
        if (pathname === '/' && (req.method === 'GET' || req.method === 'HEAD')) {
          status = 200;
          record(status, false);
          queueReply(res, 200, options.rootDocument(baseUrl), headers);
          return;
        }
        throw errors.routeNotFound(req.method ?? 'GET', pathname);
      }
      Object.assign(headers, app.baseHeaders?.({ headers: req.headers }));
      try {
        let subPath = pathname.slice(app.prefix.length) || '/';
        // Access rules name paths as the client sent them (with a project id in the URL, before rewritePath).
        const requestPath = subPath;
        let pathProjectId: string | null = null;
        if (app.rewritePath) ({ path: subPath, pathProjectId } = app.rewritePath(subPath));
        const match = app.router.match(req.method ?? 'GET', subPath);
        route = app.prefix + match.template;
        const ctx: RequestContext = {
          method: req.method ?? 'GET',
          path: subPath,
          params: match.params,
          query: url.searchParams,
          headers: req.headers,
          requestId,
          baseUrl,
          serviceUrl: baseUrl + app.prefix,
          body: undefined,
          stream: req,
          auth: null,
          microversion: 0,
          pathProjectId,
        };
        if (!match.options.public) {
          const token = req.headers['x-auth-token'];
          if (typeof token !== 'string' || token.length === 0) throw errors.unauthorized();
          ctx.auth = options.tokens.validateToken(token);
          auth = ctx.auth;
          if (auth.accessRules) enforceAccessRules(auth.accessRules.rules, auth.accessRules.credentialId, app.prefix, ctx.method, requestPath);
          setRequestCaller(auth.userId, auth.projectId);
        }
        Object.assign(headers, app.prepare?.(ctx));
        if (!match.options.rawBody) ctx.body = await readJsonBody(req, options.requestBodyBytesMax);
        const reply: Reply = await match.handler(ctx);
        status = reply.status;
        if (reply.stream) {
          record(status);
          return await sendStream(res, req, reply.status, reply.stream, { ...headers, ...reply.headers });
        }
        record(status, false);
        queueReply(res, reply.status, req.method === 'HEAD' ? undefined : reply.body, { ...headers, ...reply.headers });
      } catch (error) {
        const fault = toFault(forCaller(error, auth), app.faultStyle, options.log);
        status = fault.status;
        // A client still sending its body (an oversize one, or one refused before it was read) would see
        // the connection reset instead of this fault: read and discard the rest, within bounds, first.
        if (!req.complete) await discardBody(req, bodyDiscard);
        // An unread body would otherwise be parsed as the next request on this connection.
        if (!req.complete) res.setHeader('Connection', 'close');
        record(status, false);
        queueReply(res, fault.status, req.method === 'HEAD' ? undefined : fault.body, { ...headers, ...fault.headers });
      }
    } catch (error) {
      const fault = toFault(error, 'openstack', options.log);
      status = fault.status;
      record(status, false);
      queueReply(res, fault.status, fault.body, { ...headers, ...fault.headers });
    } finally {
      // The access line is the http.request event's (events.ts accessLogLine: 5xx ERROR, 4xx INFO, else DEBUG).
      record(status);
    }
  }

  return server;
}

/**
 * A server error (5xx) told to a caller who is not an administrator names no directory of the
 * server (a ceph.conf, a keyring, a data directory): the file's name stays, its place goes. The
 * log, and an administrator, keep the whole text.
 */
function forCaller(error: unknown, auth: AuthContext | null): unknown {
  if (!(error instanceof PumiceError) || error.status < 500 || auth?.roles.some((r) => r.toLowerCase() === 'admin')) return error;
  const message = withoutAbsolutePaths(error.message);
  return message === error.message ? error : new PumiceError(error.code, message, error.headers);
}

/**
 * JSON replies of one event-loop turn leave together, at its end: the events and log lines they
 * recorded are written first, with one write(2) per file for all of them (a reader of the events
 * file after a reply still finds its request there), then each reply. Before, every reply wrote
 * the files on its own: two write(2)s per request besides the reply's own. The body is
 * serialized at once (it may be a live object), only the socket write waits.
 */
const queuedReplies: { res: ServerResponse; write: () => void }[] = [];
/** Responses whose reply is queued (not yet written): the error path must not answer them twice. */
const repliesQueued = new WeakSet<ServerResponse>();

function queueReply(res: ServerResponse, status: number, body: unknown, headers: Record<string, string>): void {
  const payload = body === undefined || status === 204 ? undefined : Buffer.from(JSON.stringify(body));
  repliesQueued.add(res);
  queuedReplies.push({ res, write: () => writeReply(res, status, payload, headers) });
  if (queuedReplies.length === 1) atTurnEndFirst(sendQueuedReplies);
}

function sendQueuedReplies(): void {
  flushEvents();
  for (const { res, write } of queuedReplies.splice(0)) {
    try {
      write();
    } catch {
      // A header Node refuses (an invalid character): answer 500 as a handler's failure would be,
      // rather than leave the client waiting; the other replies still leave.
      if (res.headersSent) res.destroy();
      else send(res, 500, { computeFault: { code: 500, message: 'internal error: the reply could not be written' } }, {});
    }
  }
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string>): void {
  writeReply(res, status, body === undefined || status === 204 ? undefined : Buffer.from(JSON.stringify(body)), headers);
}

function writeReply(res: ServerResponse, status: number, payload: Buffer | undefined, headers: Record<string, string>): void {
  if (payload === undefined) {
    res.writeHead(status, { ...headers, 'Content-Length': '0' });
    res.end();
    return;
  }
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': String(payload.length),
    ...headers,
  });
  res.end(payload);
}

/** Streams a raw body; a failure after the headers went out can only end the connection. */
async function sendStream(res: ServerResponse, req: IncomingMessage, status: number, body: Readable, headers: Record<string, string>): Promise<void> {
  res.writeHead(status, headers);
  if (req.method === 'HEAD') {
    body.destroy();
    res.end();
    return;
  }
  try {
    await pipeline(body, res);
  } catch {
    res.destroy();
  }
}

/**
 * How much of a refused request's body the server reads and throws away so
 * that the client, which sends its whole body before it reads the answer
 * (python-requests, node:http), receives the fault instead of a reset. Beyond
 * these bounds the fault goes out with `Connection: close`.
 */
const bodyDiscard = { bytesMax: 64 * 1024 * 1024, timeoutMs: 10_000 };

/** Reads and drops the rest of the request body; resolves when it ended, or a bound was reached. */
function discardBody(req: IncomingMessage, bounds: { bytesMax: number; timeoutMs: number }): Promise<void> {
  if (req.complete || req.destroyed) return Promise.resolve();
  const declared = Number(req.headers['content-length'] ?? '0');
  if (Number.isFinite(declared) && declared > bounds.bytesMax) return Promise.resolve();
  return new Promise((resolveDiscard) => {
    let received = 0;
    const done = () => {
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', done);
      req.off('error', done);
      req.off('close', done);
      resolveDiscard();
    };
    const onData = (chunk: Buffer) => {
      received += chunk.length;
      if (received > bounds.bytesMax) done();
    };
    const timer = setTimeout(done, bounds.timeoutMs);
    req.on('data', onData);
    req.once('end', done);
    req.once('error', done);
    req.once('close', done);
    req.resume();
  });
}

/** Rejects invalid UTF-8; keeps a BOM in the text so JSON.parse refuses it as before. */
const utf8Strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Reads the body into memory, bounded by `bytesMax`; leaves the rest of an oversize body unread (the stream is not destroyed). */
function readBodyBytes(req: IncomingMessage, bytesMax: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? '0');
  if (declared > bytesMax) return Promise.reject(errors.bodyTooLarge(bytesMax));
  return new Promise((resolveBody, rejectBody) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const finish = (error: unknown) => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onAborted);
      if (error) rejectBody(error);
      else resolveBody(Buffer.concat(chunks, total));
    };
    const onData = (chunk: Buffer) => {
      total += chunk.length;
      if (total > bytesMax) {
        // Stop buffering; the caller's fault path discards what is still coming.
        req.pause();
        finish(errors.bodyTooLarge(bytesMax));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => finish(null);
    const onError = (error: Error) => finish(errors.malformedBody(`the request body could not be read (${error.message})`));
    const onAborted = () => finish(errors.malformedBody('the client closed the connection before the body ended'));
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', onError);
    req.once('aborted', onAborted);
  });
}

/** Reads and parses a JSON body, bounded by `bytesMax`; returns undefined for an empty body. */
async function readJsonBody(req: IncomingMessage, bytesMax: number): Promise<unknown> {
  const body = await readBodyBytes(req, bytesMax);
  const total = body.length;
  if (total === 0) return undefined;
  const contentType = (req.headers['content-type'] ?? 'application/json').split(';')[0]!.trim().toLowerCase();
  // `application/openstack-images-v2.1-json-patch` is JSON too (Glance's PATCH).
  if (!contentType.endsWith('json') && !contentType.endsWith('json-patch')) throw errors.unsupportedMediaType(contentType);
  // Buffer#toString would turn invalid UTF-8 into U+FFFD and store it; JSON must be valid UTF-8 (RFC 8259).
  let text: string;
  try {
    text = utf8Strict.decode(body);
  } catch {
    throw errors.malformedBody('the body is not valid UTF-8');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw errors.malformedBody((error as Error).message);
  }
  // Every API body is a few levels deep; a deeply nested one would overflow the stack of the
  // recursive code that validates and quotes it (a 500). Counted without recursion.
  if (jsonDepth(parsed) > jsonDepthMax) throw errors.malformedBody(`the body is nested more than ${jsonDepthMax} levels deep`);
  return parsed;
}

/** Deepest nesting a JSON request body may have. */
const jsonDepthMax = 32;

/** Nesting depth of a parsed JSON value (0 for a scalar), iteratively; stops counting past the limit. */
function jsonDepth(value: unknown): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [item, depth] = stack.pop()!;
    if (item === null || typeof item !== 'object') continue;
    const inner = depth + 1;
    if (inner > deepest) deepest = inner;
    if (deepest > jsonDepthMax) return deepest;
    for (const child of Array.isArray(item) ? item : Object.values(item)) stack.push([child, inner]);
  }
  return deepest;
}

export { PumiceError };
