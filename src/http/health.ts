/**
 * `/healthcheck` in oslo.middleware's format, and `/metrics` for Prometheus,
 * on the API listener.
 *
 * `/healthcheck`: 200 `OK` when every check passes, 503 with the failing
 * checks otherwise; HEAD answers 204 / 503 without a body; `Accept:
 * application/json` gives `{"detailed": ..., "reasons": [...]}`. Checks: the
 * database answers, each volume backend is up (its reason when not, as
 * `openstack volume service list` shows it), and no task waits to run, or
 * holds an expired lease, for more than `[healthcheck] task_stuck_seconds`.
 * Who sees what: anyone (a load balancer, without a token) gets the status
 * and the names of the failing checks; the reasons and the passing checks
 * (`detailed`) only a caller with an admin token, or everyone when
 * `[healthcheck] detailed = true` (reasons may name hosts and paths).
 *
 * `/metrics`: the text exposition format, to a caller with an admin token;
 * without one only when `[metrics] allow_anonymous = true`. The listener of
 * `[metrics] listen` (see ../metrics.ts) serves it without a token, for a
 * scraper on a management network.
 */
import { Readable } from 'node:stream';
import { platform } from 'node:os';
import type { Db } from '../db/db.ts';
import { errors } from '../errors.ts';
import { expositionContentType, type MetricsRegistry } from '../metrics.ts';
import { Type } from '@sinclair/typebox';
import { compileSchema, responseValidationEnabled } from './declare.ts';
import { Router, type AuthContext, type Reply, type RequestContext } from './router.ts';
import type { ServiceApp, TokenValidator } from './server.ts';

export interface HealthCheckResult {
  /** Short name of the check: `database`, `backend local`, `task queue`. */
  name: string;
  ok: boolean;
  /** Why it failed, or what it found (shown in detailed output only). */
  details: string;
}

export interface HealthSources {
  db: Db;
  backends(): { backend: string; up: boolean; downReason: string | null }[];
  taskStuckSeconds: number;
  clock?: () => number;
}

/** Runs every check; never throws (a check that throws fails with its error). */
export function runHealthChecks(sources: HealthSources): HealthCheckResult[] {
  const now = (sources.clock ?? Date.now)();
  const results: HealthCheckResult[] = [];
  const check = (name: string, fn: () => { ok: boolean; details: string }) => {
    try {
      results.push({ name, ...fn() });
    } catch (error) {
      results.push({ name, ok: false, details: (error as Error).message });
    }
  };
  check('database', () => {
    sources.db.get('SELECT 1 AS ok');
    return { ok: true, details: 'the database answers' };
  });
  let backends: ReturnType<HealthSources['backends']> = [];
  check('backends', () => {
    backends = sources.backends();
    return { ok: true, details: `${backends.length} configured` };
  });
  if (results.at(-1)!.ok) results.pop();
  for (const b of backends) {
    check(`backend ${b.backend}`, () => (b.up ? { ok: true, details: 'up' } : { ok: false, details: `down: ${b.downReason ?? 'no capacity report yet'}` }));
  }
  check('task queue', () => {
    const stuckMs = sources.taskStuckSeconds * 1000;
    const waiting = sources.db.all<{ id: number; kind: string; updated_at: string; not_before: number }>(
      "SELECT id, kind, updated_at, not_before FROM tasks WHERE state = 'queued' AND not_before <= ? ORDER BY id LIMIT 200", now);
    const stuck = waiting.filter((t) => now - Math.max(Date.parse(t.updated_at), t.not_before) > stuckMs);
    const expired = sources.db.all<{ id: number; kind: string }>(
      "SELECT id, kind FROM tasks WHERE state = 'running' AND lease_until IS NOT NULL AND lease_until < ? ORDER BY id LIMIT 20", now - stuckMs);
    if (stuck.length === 0 && expired.length === 0) return { ok: true, details: `${waiting.length} task(s) ready to run, none waiting over ${sources.taskStuckSeconds} s` };
    const parts = [];
    if (stuck.length > 0) parts.push(`${stuck.length} task(s) waiting to run for over ${sources.taskStuckSeconds} s (oldest: task ${stuck[0]!.id}, ${stuck[0]!.kind})`);
    if (expired.length > 0) parts.push(`${expired.length} running task(s) whose lease expired over ${sources.taskStuckSeconds} s ago (task ${expired[0]!.id}, ${expired[0]!.kind}): is a volume/backup role running?`);
    return { ok: false, details: `${parts.join('; ')}; see 'pumice tasks list'` };
  });
  return results;
}

/** Whether the caller holds a valid admin token (a missing or invalid one is simply not admin here). */
function callerIsAdmin(ctx: RequestContext, tokens: TokenValidator): boolean {
  const token = ctx.headers['x-auth-token'];
  if (typeof token !== 'string' || token === '') return false;
  let auth: AuthContext;
  try {
    auth = tokens.validateToken(token);
  } catch {
    return false;
  }
  return auth.isAdmin;
}

function textReply(status: number, text: string, contentType: string, head: boolean): Reply {
  if (head) return { status, headers: { 'Content-Type': contentType, 'Cache-Control': 'no-store' }, body: undefined };
  const bytes = Buffer.from(text);
  return { status, headers: { 'Content-Type': contentType, 'Content-Length': String(bytes.length), 'Cache-Control': 'no-store' }, stream: Readable.from([bytes]) };
}

/**
 * The JSON body of `/healthcheck`, oslo.middleware's: `{detailed: false, reasons: [text]}`, or with
 * detail a reason object per check and the host's platform. Declared here rather than through
 * `registerRoutes`, whose replies are JSON or a raw stream per status: this route answers text,
 * JSON or HEAD on the same status. Checked as declared routes are, when response validation is on.
 */
export const HealthcheckBody = Type.Union([
  Type.Object({ detailed: Type.Literal(false), reasons: Type.Array(Type.String()) }, { additionalProperties: false }),
  Type.Object({
    detailed: Type.Literal(true),
    reasons: Type.Array(Type.Object({ class: Type.String(), reason: Type.Union([Type.Literal('OK'), Type.Literal('FAILED')]), details: Type.String() }, { additionalProperties: false })),
    now: Type.String(),
    platform: Type.String(),
    node_version: Type.String(),
  }, { additionalProperties: false }),
]);
const validHealthcheckBody = compileSchema(HealthcheckBody);

/** The `/healthcheck` app (oslo.middleware's Healthcheck, text and JSON). */
export function healthcheckApp(sources: HealthSources, options: { detailed: boolean; tokens: TokenValidator }): ServiceApp {
  const router = new Router();
  const answer = (ctx: RequestContext): Reply => {
    const results = runHealthChecks(sources);
    const healthy = results.every((r) => r.ok);
    const detailed = options.detailed || callerIsAdmin(ctx, options.tokens);
    const head = ctx.method === 'HEAD';
    // oslo.middleware: HEAD answers 204 when healthy.
    const status = healthy ? (head ? 204 : 200) : 503;
    const shown = detailed ? results : results.filter((r) => !r.ok);
    const wantsJson = /application\/json/i.test(String(ctx.headers['accept'] ?? ''));
    if (wantsJson) {
      const reasons = detailed
        ? shown.map((r) => ({ class: r.name, reason: r.ok ? 'OK' : 'FAILED', details: r.details }))
        : healthy ? ['OK'] : shown.map((r) => `${r.name}: FAILED`);
      const body = detailed ? { detailed: true, reasons, now: new Date().toISOString(), platform: platform(), node_version: process.version } : { detailed: false, reasons };
      // As declared routes: a body that breaks its schema is a 500 in tests, never a silent drift.
      if (responseValidationEnabled(false) && !validHealthcheckBody(body)) {
        throw new Error(`/healthcheck response validation failed: ${JSON.stringify(validHealthcheckBody.errors)}`);
      }
      return textReply(status, JSON.stringify(body), 'application/json', head);
    }
    const lines = detailed
      ? [healthy ? 'OK' : 'FAILED', ...shown.map((r) => `${r.name}: ${r.ok ? 'OK' : 'FAILED'}: ${r.details}`)]
      : healthy ? ['OK'] : shown.map((r) => `${r.name}: FAILED`);
    return textReply(status, lines.join('\n') + '\n', 'text/plain; charset=UTF-8', head);
  };
  router.get('', answer, { public: true });
  return { prefix: '/healthcheck', router, faultStyle: 'openstack' };
}

/** The `/metrics` app: admin token, or none when `allowAnonymous`. */
export function metricsApp(registry: MetricsRegistry, options: { allowAnonymous: boolean; tokens: TokenValidator }): ServiceApp {
  const router = new Router();
  router.get('', (ctx) => {
    if (!options.allowAnonymous) {
      const token = ctx.headers['x-auth-token'];
      if (typeof token !== 'string' || token === '') throw errors.unauthorized('The request you have made requires authentication: /metrics needs an admin token (X-Auth-Token), unless [metrics] allow_anonymous = true; or scrape the [metrics] listen address.');
      // An invalid or expired token is a 401 with its reason; a valid one without admin is a 403.
      const auth = options.tokens.validateToken(token);
      if (!auth.isAdmin) throw errors.forbidden('metrics:read (administrators only)');
    }
    return textReply(200, registry.render(), expositionContentType, ctx.method === 'HEAD');
  }, { public: true });
  return { prefix: '/metrics', router, faultStyle: 'openstack' };
}
