/**
 * Request context, route table and matching. A service module registers its
 * routes on a `Router`; the server picks the router by path prefix.
 */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { errors } from '../errors.ts';

export interface AuthContext {
  tokenId: string;
  userId: string;
  userName: string;
  userDomainId: string;
  projectId: string | null;
  projectName: string | null;
  projectDomainId: string | null;
  domainId: string | null;
  roles: string[];
  isAdmin: boolean;
  expiresAt: string;
  issuedAt: string;
  methods: string[];
  auditId: string;
  /** A token from an application credential with access rules: the requests it may make (enforced by the server before routing). */
  accessRules?: { credentialId: string; rules: import('../identity/access-rules.ts').AccessRule[] };
}

export interface RequestContext {
  method: string;
  /** Path below the service prefix, e.g. `/v3/volumes/ID` for `/volume/v3/volumes/ID`. */
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  requestId: string;
  /** Scheme, host and port the client used, e.g. `http://127.0.0.1:8776`. */
  baseUrl: string;
  /** Full URL prefix of this service, e.g. `http://127.0.0.1:8776/volume`. */
  serviceUrl: string;
  /** Parsed JSON body; undefined when there was none. */
  body: unknown;
  /** The unread request stream for routes that take raw bodies. */
  stream: IncomingMessage;
  auth: AuthContext | null;
  /** Project id given in the URL (`/v3/{project_id}/volumes`), if any. */
  pathProjectId: string | null;
  /** Minor microversion of Block Storage v3 (e.g. 40 for 3.40); 0 elsewhere. */
  microversion: number;
}

export interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
  /** Raw bytes to stream as the body instead of JSON (image downloads); `headers` then carry its Content-Type and Content-Length. */
  stream?: Readable;
}

export type Handler = (ctx: RequestContext) => Reply | Promise<Reply>;

export interface RouteOptions {
  /** Route answers without a token (version documents, token issue). */
  public?: boolean;
  /** Route reads the body itself as a stream. */
  rawBody?: boolean;
}

interface Route {
  method: string;
  /** The path as declared, e.g. `/v3/:project_id/volumes/:volume_id` (metrics label requests by it). */
  template: string;
  pattern: RegExp;
  paramNames: string[];
  handler: Handler;
  options: RouteOptions;
}

export interface RouteMatch {
  handler: Handler;
  /** The matched route's declared path. */
  template: string;
  params: Record<string, string>;
  options: RouteOptions;
}

export class Router {
  private readonly routes: Route[] = [];

  add(method: string, path: string, handler: Handler, options: RouteOptions = {}): this {
    const paramNames: string[] = [];
    const source = path
      .split('/')
      .map((segment) => {
        if (segment.startsWith(':')) {
          paramNames.push(segment.slice(1));
          return '([^/]+)';
        }
        return segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      })
      .join('/');
    this.routes.push({ method, template: path, pattern: new RegExp(`^${source}/?$`), paramNames, handler, options });
    return this;
  }

  get(path: string, handler: Handler, options?: RouteOptions): this {
    return this.add('GET', path, handler, options);
  }
  post(path: string, handler: Handler, options?: RouteOptions): this {
    return this.add('POST', path, handler, options);
  }
  put(path: string, handler: Handler, options?: RouteOptions): this {
    return this.add('PUT', path, handler, options);
  }
  patch(path: string, handler: Handler, options?: RouteOptions): this {
    return this.add('PATCH', path, handler, options);
  }
  delete(path: string, handler: Handler, options?: RouteOptions): this {
    return this.add('DELETE', path, handler, options);
  }
  head(path: string, handler: Handler, options?: RouteOptions): this {
    return this.add('HEAD', path, handler, options);
  }

  /** Finds the route; throws 404 for an unknown path and 405 for a known path with another method. */
  match(method: string, path: string): RouteMatch {
    let pathMatched = false;
    for (const route of this.routes) {
      const m = route.pattern.exec(path);
      if (!m) continue;
      pathMatched = true;
      if (route.method !== method && !(method === 'HEAD' && route.method === 'GET')) continue;
      const params: Record<string, string> = {};
      route.paramNames.forEach((name, i) => {
        params[name] = safeDecode(m[i + 1]!);
      });
      return { handler: route.handler, template: route.template, params, options: route.options };
    }
    if (pathMatched) throw errors.methodNotAllowed(method, path);
    throw errors.routeNotFound(method, path);
  }
}

function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw errors.badRequest(`Malformed URL: '${segment}' is not valid percent-encoding.`);
  }
}
