/**
 * Declared routes: every route of a service is one declaration of method,
 * path, microversion range, request schemas (body, query, path), response
 * schema per status (and per microversion) and the policy rule that guards it.
 * The framework validates the request and applies the policy before the
 * handler runs; with `validateResponses` it also checks every reply against
 * its declared schema, so a contract test fails on an extra, missing or
 * mistyped key.
 *
 * Usage:
 *
 *   import { Type } from '@sinclair/typebox';
 *   import { route, registerRoutes, Nullable } from '../http/declare.ts';
 *
 *   const Server = Type.Object({ id: Type.String({ format: 'uuid' }), name: Type.String(), description: Nullable(Type.String()) },
 *                              { additionalProperties: false });
 *   const routes = [
 *     route({
 *       method: 'PUT', path: '/servers/:server_id', policy: 'os_compute_api:servers:update',
 *       params: Type.Object({ server_id: Type.String() }),
 *       body: Type.Object({ server: Type.Object({ name: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })) },
 *                                                { additionalProperties: false }) },
 *                         { additionalProperties: false }),
 *       responses: { 200: [
 *         { versions: { min: 1, max: 18 }, schema: Type.Object({ server: Type.Omit(Server, ['description']) }, { additionalProperties: false }) },
 *         { versions: { min: 19, max: 79 }, schema: Type.Object({ server: Server }, { additionalProperties: false }) },
 *       ] },
 *       handler(ctx) {                              // ctx.body is typed { server: { name?: string } }
 *         const server = servers.get(ctx.params['server_id']!);
 *         ctx.authorize('os_compute_api:servers:update', { project_id: server.projectId });  // the target's owner
 *         return { status: 200, body: { server: render(servers.update(server, ctx.body.server), ctx.microversion) } };
 *       },
 *     }),
 *   ];
 *   registerRoutes(router, routes, { policy: new PolicyTable(computePolicyDefaults, overrides), validateResponses });
 *
 * Order of checks for a request: route and microversion (404 when no
 * declaration covers the version), path parameters, query, body (400 naming the
 * field, value and expected shape), then the route's policy rule with the
 * default target (403), then the handler. Nova validates before it checks
 * policy, and so do we. The route-level policy check sees only the caller's own
 * project as target (unless the route declares `target`); handlers that act on
 * another project's resource call `ctx.authorize(rule, { project_id: owner })`
 * once they know the owner.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { OptionalKind, Type, type Static, type TSchema } from '@sinclair/typebox';
import { errors, PumiceError } from '../errors.ts';
import type { PolicyTable, PolicyTarget } from './policy.ts';
import type { AuthContext, Handler, Reply, RequestContext, RouteOptions, Router } from './router.ts';

/** Minor microversions of the service's major version, inclusive (compute 2.1..2.79 is `{ min: 1, max: 79 }`). Omitted: all. */
export interface VersionRange {
  min: number;
  max: number;
}

export interface DeclaredContext<B, Q> extends RequestContext {
  /** The body, validated against the route's `body` schema (undefined when the request had none and the schema allows it). */
  body: B;
  /** The query string as an object, validated (and coerced: numbers, booleans) against the route's `query` schema. */
  queryParams: Q;
  /**
   * Throws 403 (Forbidden) unless `rule` allows the caller on `target`; the target
   * defaults to `{ project_id: auth.projectId, user_id: auth.userId }`.
   */
  authorize(rule: string, target?: PolicyTarget): void;
  /** Whether `rule` allows the caller on `target` (same default target). */
  can(rule: string, target?: PolicyTarget): boolean;
}

/** Response schema of one status: a schema, null (no JSON body: 204, or a raw stream), or one schema per microversion range. */
export type ResponseSchema = TSchema | null | { versions: VersionRange; schema: TSchema | null }[];

type StaticOr<T, Fallback> = T extends TSchema ? Static<T> : Fallback;

export interface RouteSpec<B extends TSchema | undefined = undefined, Q extends TSchema | undefined = undefined> {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'HEAD';
  /** As `Router.add`: `/servers/:server_id`. */
  path: string;
  versions?: VersionRange;
  /** Rule name in the service's policy table, checked with the default target before the handler; `@` for routes anyone may call. */
  policy: string;
  /**
   * The target of the route-level policy check, built from the validated request (path
   * parameters, a header, a lookup that does not throw); default: `RegisterOptions.defaultTarget`.
   * Keystone's rules name the target this way (`user_id:%(target.user.id)s`).
   */
  target?: (ctx: RequestContext) => PolicyTarget;
  /** Path parameters' schema (an object of strings), e.g. `Type.Object({ server_id: Type.String({ format: 'uuid' }) })`. */
  params?: TSchema;
  body?: B;
  query?: Q;
  /** Per status: the body's schema. A status the handler returns that is not declared fails response validation. */
  responses: Record<number, ResponseSchema>;
  options?: RouteOptions;
  /** Short text for docs and logs. */
  summary?: string;
  handler(ctx: DeclaredContext<StaticOr<B, unknown>, StaticOr<Q, Record<string, string>>>): Reply | Promise<Reply>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyRouteSpec = RouteSpec<any, any>;

/** Identity: lets TypeScript infer the body and query types of the handler from the schemas. */
export function route<B extends TSchema | undefined = undefined, Q extends TSchema | undefined = undefined>(spec: RouteSpec<B, Q>): RouteSpec<B, Q> {
  return spec;
}

/** What failed in a request: `where` is body, query or path; `field` the slash-separated path ('' for the whole). */
export interface ValidationFailure {
  where: 'body' | 'query' | 'path';
  field: string;
  value: unknown;
  /** jsonschema-style text: `123 is not of type 'string'`. */
  problem: string;
}

export interface RegisterOptions {
  policy: PolicyTable;
  /** Check every reply against its declared schema; a mismatch becomes a 500 and a log line. On in tests. */
  validateResponses: boolean;
  /** Builds the error for an invalid request; default: 400 `Invalid input for field/attribute X. Value: Y. Z`. */
  faultForBadRequest?: (failure: ValidationFailure) => Error;
  log?: (message: string) => void;
  /** Microversion text for messages, e.g. (1) => '2.1'; default '0.N'. */
  versionText?: (minor: number) => string;
  /**
   * The target of the route-level policy check and of `authorize()` without a target;
   * default `{ project_id, user_id }` of the caller (Nova's). Glance adds `owner` and `member_id`.
   */
  defaultTarget?: (auth: AuthContext | null) => PolicyTarget;
}

/** `T | null`, as OpenStack bodies write optional values. */
export function Nullable<T extends TSchema>(schema: T) {
  return Type.Union([schema, Type.Null()]);
}

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

function newAjv(coerce: boolean): Ajv {
  const ajv = new Ajv({
    allErrors: false,
    coerceTypes: coerce,
    useDefaults: false,
    removeAdditional: false,
    strict: false,
    // Error objects need the failing value (for the message).
    verbose: true,
  });
  addFormats(ajv);
  return ajv;
}

/** Bodies and responses: no coercion (a JSON string is not a number). */
const strictAjv = newAjv(false);
/** Query strings and path parameters are text: numbers and booleans are coerced. */
const coercingAjv = newAjv(true);

const compiledByAjv = new Map<Ajv, WeakMap<object, ValidateFunction>>([[strictAjv, new WeakMap()], [coercingAjv, new WeakMap()]]);
/** One compiled function per schema object and ajv: a shared schema is compiled once. */
function compile(ajv: Ajv, schema: TSchema): ValidateFunction {
  const cache = compiledByAjv.get(ajv)!;
  const hit = cache.get(schema);
  if (hit) return hit;
  const fn = ajv.compile(schema);
  cache.set(schema, fn);
  return fn;
}

/** Python repr-like text of a value, bounded, for messages. */
export function describeValue(value: unknown): string {
  let text: string;
  if (value === undefined) text = 'None';
  else if (value === null) text = 'None';
  else if (value === true) text = 'True';
  else if (value === false) text = 'False';
  else if (typeof value === 'string') text = `'${value}'`;
  else if (typeof value === 'number') text = String(value);
  else text = JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function typeText(type: unknown): string {
  const names: Record<string, string> = { string: 'string', integer: 'integer', number: 'number', boolean: 'boolean', object: 'object', array: 'array', null: 'null' };
  return (Array.isArray(type) ? type : [type]).map((t) => `'${names[String(t)] ?? String(t)}'`).join(', ');
}

/** The first error as a ValidationFailure, in the words of Python's jsonschema (what Nova and Cinder print). */
export function describeErrors(where: ValidationFailure['where'], list: ErrorObject[], root: unknown): ValidationFailure {
  // With allErrors off, the last error is the one that decided (for anyOf, the branches come first).
  const decisive = list.find((e) => e.keyword === 'anyOf' || e.keyword === 'oneOf') ?? list[0]!;
  const segments = decisive.instancePath.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  const field = segments.join('/');
  const value = decisive.data !== undefined ? decisive.data : valueAt(root, segments);
  const v = describeValue(value);
  const p = decisive.params as Record<string, unknown>;
  let problem: string;
  switch (decisive.keyword) {
    case 'type':
      problem = `${v} is not of type ${typeText(p['type'])}`;
      break;
    case 'required':
      problem = `'${String(p['missingProperty'])}' is a required property`;
      break;
    case 'additionalProperties':
      problem = `Additional properties are not allowed ('${String(p['additionalProperty'])}' was unexpected)`;
      break;
    case 'enum':
      problem = `${v} is not one of [${(p['allowedValues'] as unknown[]).map(describeValue).join(', ')}]`;
      break;
    case 'const':
      problem = `${describeValue(p['allowedValue'])} was expected`;
      break;
    case 'maxLength':
      problem = `${v} is too long (at most ${String(p['limit'])} characters)`;
      break;
    case 'minLength':
      problem = `${v} is too short (at least ${String(p['limit'])} characters)`;
      break;
    case 'maximum':
    case 'exclusiveMaximum':
      problem = `${v} is greater than the maximum of ${String(p['limit'])}`;
      break;
    case 'minimum':
    case 'exclusiveMinimum':
      problem = `${v} is less than the minimum of ${String(p['limit'])}`;
      break;
    case 'pattern':
      problem = `${v} does not match '${String(p['pattern'])}'`;
      break;
    case 'format':
      problem = `${v} is not a '${String(p['format'])}'`;
      break;
    case 'maxItems':
      problem = `${v} is too long (at most ${String(p['limit'])} items)`;
      break;
    case 'minItems':
      problem = `${v} is too short (at least ${String(p['limit'])} items)`;
      break;
    case 'maxProperties':
      problem = `${v} has too many properties (at most ${String(p['limit'])})`;
      break;
    case 'minProperties':
      problem = `${v} does not have enough properties (at least ${String(p['limit'])})`;
      break;
    case 'uniqueItems':
      problem = `${v} has non-unique elements`;
      break;
    case 'anyOf':
    case 'oneOf': {
      const branchTypes = list.filter((e) => e.keyword === 'type' && e.instancePath === decisive.instancePath).map((e) => (e.params as { type: unknown }).type);
      problem = branchTypes.length > 0 && branchTypes.length === list.length - 1
        ? `${v} is not of type ${typeText(branchTypes.flat())}`
        : `${v} is not valid under any of the given schemas`;
      break;
    }
    default:
      problem = `${v} ${decisive.message ?? 'is not valid'}`;
  }
  return { where, field, value, problem };
}

function valueAt(root: unknown, segments: string[]): unknown {
  let node = root;
  for (const s of segments) {
    if (typeof node !== 'object' || node === null) return undefined;
    node = (node as Record<string, unknown>)[s];
  }
  return node;
}

/** Nova's text: `Invalid input for field/attribute server/name. Value: 123. 123 is not of type 'string'`. */
export function defaultBadRequest(failure: ValidationFailure): PumiceError {
  const prefix = failure.where === 'query' ? 'Invalid input for query parameter' : failure.where === 'path' ? 'Invalid input for path parameter' : 'Invalid input for field/attribute';
  if (failure.field === '') return errors.invalidInput(`Invalid input for ${failure.where === 'body' ? 'the request body' : failure.where}. Value: ${describeValue(failure.value)}. ${failure.problem}.`);
  return errors.invalidInput(`${prefix} ${failure.field}. Value: ${describeValue(failure.value)}. ${failure.problem}.`);
}

function inRange(range: VersionRange | undefined, microversion: number): boolean {
  return !range || (microversion >= range.min && microversion <= range.max);
}

/** The query string as an object: one string per key, or every value when the schema declares the key an array. */
function queryObject(query: URLSearchParams, schema: TSchema | undefined): Record<string, unknown> {
  const properties = (schema?.['properties'] ?? {}) as Record<string, TSchema>;
  const out: Record<string, unknown> = {};
  for (const key of new Set(query.keys())) {
    const property = Object.hasOwn(properties, key) ? properties[key] : undefined;
    const value = property?.['type'] === 'array' ? query.getAll(key) : query.get(key);
    Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

interface CompiledSpec {
  spec: AnyRouteSpec;
  params: (() => ValidateFunction) | null;
  query: (() => ValidateFunction) | null;
  body: (() => ValidateFunction) | null;
}

/**
 * Schemas compile on first use: compiling every route's schemas took seconds of a start (about a
 * quarter of its CPU), and a process uses few routes. PUMICE_COMPILE_SCHEMAS=eager compiles all of
 * them at registration, so a bad schema fails at start; test/e2e/schemas-compile.test.ts does that.
 */
const eagerSchemas = process.env['PUMICE_COMPILE_SCHEMAS'] === 'eager';

function lazyCompile(ajv: Ajv, schema: TSchema): () => ValidateFunction {
  let fn: ValidateFunction | undefined = eagerSchemas ? compile(ajv, schema) : undefined;
  return () => (fn ??= compile(ajv, schema));
}

function compileSpec(spec: AnyRouteSpec): CompiledSpec {
  if (eagerSchemas) {
    for (const declared of Object.values(spec.responses as Record<string, ResponseSchema>)) {
      for (const entry of Array.isArray(declared) ? declared : [{ schema: declared }]) if (entry.schema !== null) compile(strictAjv, entry.schema);
    }
  }
  if (spec.options?.rawBody && spec.body) throw new Error(`route ${spec.method} ${spec.path}: a rawBody route cannot declare a body schema`);
  return {
    spec,
    params: spec.params ? lazyCompile(coercingAjv, spec.params) : null,
    query: spec.query ? lazyCompile(coercingAjv, spec.query as TSchema) : null,
    body: spec.body ? lazyCompile(strictAjv, spec.body as TSchema) : null,
  };
}

/**
 * Adds the routes to `router`. Specs sharing method and path must have
 * disjoint version ranges; a request whose microversion no spec covers gets a
 * 404, as Nova and Cinder answer for routes outside their version. Throws at
 * start (a programming error) for an unknown policy rule or overlapping ranges.
 */
export function registerRoutes(router: Router, routes: AnyRouteSpec[], options: RegisterOptions): void {
  const log = options.log ?? ((message: string) => console.error(message));
  const versionText = options.versionText ?? ((minor: number) => `0.${minor}`);
  const badRequest = options.faultForBadRequest ?? defaultBadRequest;
  const groups = new Map<string, CompiledSpec[]>();
  for (const spec of routes) {
    if (spec.policy !== '@' && spec.policy !== '!' && !options.policy.has(spec.policy)) {
      throw new Error(`route ${spec.method} ${spec.path}: policy rule '${spec.policy}' is not in the service's policy table`);
    }
    const key = `${spec.method} ${spec.path}`;
    const group = groups.get(key) ?? [];
    for (const other of group) {
      const a = spec.versions ?? { min: -Infinity, max: Infinity };
      const b = other.spec.versions ?? { min: -Infinity, max: Infinity };
      if (a.min <= b.max && b.min <= a.max) throw new Error(`routes ${key}: two declarations cover the same microversions`);
    }
    group.push(compileSpec(spec));
    groups.set(key, group);
  }
  specsByRouter.set(router, [...(specsByRouter.get(router) ?? []), ...routes]);
  for (const [key, group] of groups) {
    const first = group[0]!.spec;
    const rawBody = group.some((c) => c.spec.options?.rawBody);
    const isPublic = group.some((c) => c.spec.options?.public);
    const handler: Handler = async (ctx) => {
      const chosen = group.find((c) => inRange(c.spec.versions, ctx.microversion));
      if (!chosen) {
        const ranges = group.map((c) => `${versionText(c.spec.versions!.min)} to ${versionText(c.spec.versions!.max)}`).join(', ');
        throw new PumiceError('NotFound', `${key} is not available in microversion ${versionText(ctx.microversion)}: it exists in ${ranges}.`);
      }
      return runSpec(chosen, ctx);
    };
    router.add(first.method, first.path, handler, { public: isPublic, rawBody });
  }

  async function runSpec(compiledSpec: CompiledSpec, ctx: RequestContext): Promise<Reply> {
    const { spec } = compiledSpec;
    if (compiledSpec.params) {
      const params = { ...ctx.params };
      const validate = compiledSpec.params();
      if (!validate(params)) throw badRequest(describeErrors('path', validate.errors ?? [], params));
    }
    let queryParams: Record<string, unknown> = {};
    if (compiledSpec.query) {
      queryParams = queryObject(ctx.query, spec.query as TSchema);
      const validate = compiledSpec.query();
      if (!validate(queryParams)) throw badRequest(describeErrors('query', validate.errors ?? [], queryParams));
    } else {
      for (const key of new Set(ctx.query.keys())) queryParams[key] = ctx.query.get(key);
    }
    const bodyMayBeAbsent = ctx.body === undefined && (spec.body as unknown as Record<symbol, unknown> | undefined)?.[OptionalKind] === 'Optional';
    if (compiledSpec.body && !spec.options?.rawBody && !bodyMayBeAbsent) {
      const validate = compiledSpec.body();
      if (!validate(ctx.body)) {
        if (ctx.body === undefined) throw errors.badRequest(`${spec.method} ${spec.path} needs a JSON body; the request had none.`);
        throw badRequest(describeErrors('body', validate.errors ?? [], ctx.body));
      }
    }
    const defaultTarget = (): PolicyTarget => (options.defaultTarget
      ? options.defaultTarget(ctx.auth)
      : { project_id: ctx.auth?.projectId ?? null, user_id: ctx.auth?.userId ?? null });
    const declared: DeclaredContext<unknown, unknown> = Object.assign(ctx, {
      queryParams,
      authorize(rule: string, target?: PolicyTarget): void {
        options.policy.enforce(rule, ctx.auth, target ?? defaultTarget());
      },
      can(rule: string, target?: PolicyTarget): boolean {
        return options.policy.check(rule, ctx.auth, target ?? defaultTarget());
      },
    });
    declared.authorize(spec.policy, spec.target?.(ctx));
    const reply = await spec.handler(declared);
    if (options.validateResponses) checkResponse(compiledSpec, ctx, reply);
    return reply;
  }

  function checkResponse(compiledSpec: CompiledSpec, ctx: RequestContext, reply: Reply): void {
    const { spec } = compiledSpec;
    const problem = responseProblem(spec, reply.status, ctx.microversion, reply.body, reply.stream !== undefined);
    if (problem === null) return;
    const where = `${spec.method} ${spec.path} ${reply.status} (microversion ${versionText(ctx.microversion)})`;
    log(`response validation failed: ${where}: ${problem}`);
    reply.stream?.destroy();
    throw new PumiceError('Internal', `The response did not match its declared schema: ${where}: ${problem}.`);
  }
}

const specsByRouter = new WeakMap<Router, AnyRouteSpec[]>();

/** The declarations registered on `router`, in order (contract tests walk them; docs list them). */
export function declaredRoutes(router: Router): AnyRouteSpec[] {
  return [...(specsByRouter.get(router) ?? [])];
}

/**
 * Why `body` is not what `spec` declares for `status` at `microversion`, or null when it is.
 * `streamed`: the reply carried a raw stream (declared as null).
 */
export function responseProblem(spec: AnyRouteSpec, status: number, microversion: number, body: unknown, streamed = false): string | null {
  const declared = (spec.responses as Record<number, ResponseSchema | undefined>)[status];
  if (declared === undefined) return `status ${status} is not declared (declared: ${Object.keys(spec.responses).join(', ')})`;
  const entries = Array.isArray(declared) ? declared : [{ versions: undefined, schema: declared }];
  const entry = entries.find((e) => inRange(e.versions, microversion));
  if (!entry) return 'no response schema covers this microversion';
  if (entry.schema === null) return body !== undefined ? 'a body was returned where none is declared' : null;
  if (streamed) return 'a stream was returned where a JSON body is declared';
  // `Type.Optional(schema)` as a response: the body may be absent (Nova's server actions: only rebuild answers with one).
  if (body === undefined && (entry.schema as unknown as Record<symbol, unknown>)[OptionalKind] === 'Optional') return null;
  const validate = compile(strictAjv, entry.schema);
  if (validate(body)) return null;
  const failure = describeErrors('body', validate.errors ?? [], body);
  return `${failure.field === '' ? '(body)' : failure.field}: ${failure.problem}`;
}

/** Response validation is on when `[api] validate_responses = true` or PUMICE_VALIDATE_RESPONSES=1 (tests set it). */
export function responseValidationEnabled(configValue: boolean, env: NodeJS.ProcessEnv = process.env): boolean {
  return configValue || env['PUMICE_VALIDATE_RESPONSES'] === '1' || env['PUMICE_VALIDATE_RESPONSES'] === 'true';
}

/** A strict (no coercion) validator for a schema used outside a route, e.g. a PATCH operation's form. */
export function compileSchema(schema: TSchema): ValidateFunction {
  return compile(strictAjv, schema);
}
