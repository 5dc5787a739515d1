/**
 * A small time series for the dashboard's plots: every `intervalMs` the API process samples what
 * the operator looks at (each backend's capacity, the volume count, the API request rate, the
 * backup throughput) into one table, and drops samples older than `retentionMs`. Prometheus does
 * this better for a real deployment (`/metrics` has the same figures); this is for the cloud that
 * has no Prometheus, so the dashboard can draw the last hours without one.
 *
 *   GET /pumice/v1/timeseries?since_seconds=3600    every series since then, oldest point first
 *
 * Policy rule `pumice:timeseries:index`, admin by default (backend capacity is an operator's view).
 * Several API processes on one database each write their own samples (`host`); the reader puts
 * samples into buckets of one sampling period and sums the rates of the hosts in a bucket (each
 * process counts its own requests), while a gauge (volume count, capacity) is the same cloud-wide
 * figure from every host, so a bucket keeps the largest.
 */
import { Type } from '@sinclair/typebox';
import type { Db } from '../db/db.ts';
import { onEvent } from '../events.ts';
import { registerRoutes, route } from '../http/declare.ts';
import { PolicyTable } from '../http/policy.ts';
import { Router } from '../http/router.ts';
import type { ServiceApp } from '../http/server.ts';
import type { PoolState } from '../volume/scheduler/scheduler.ts';

export const timeseriesPolicyDefaults: Record<string, string> = {
  'pumice:timeseries:index': 'role:admin',
};

/** How far back the API reads at most, and how long samples are kept: a day. */
export const timeseriesRetentionMs = 24 * 3600_000;
/** Default sampling period; `PUMICE_TIMESERIES_INTERVAL_SECONDS` changes it (tests sample every second). */
export const timeseriesIntervalMsDefault = 15_000;
/** Points one series returns at most: a day at 15 s is 5760; more is thinned by taking every n-th. */
const pointsPerSeriesMax = 2000;

const gib = 1024 ** 3;

export interface TimeseriesSources {
  pools(): PoolState[];
}

/** What one sample row names: a series, and the unit its values are in. */
const seriesUnits: Record<string, string> = {
  'volumes.count': 'volumes',
  'api.requests_per_second': 'requests/s',
  'backup.bytes_per_second': 'bytes/s',
};
function unitOf(series: string): string {
  return seriesUnits[series] ?? (series.endsWith('_bytes') ? 'bytes' : '');
}

/**
 * Starts sampling into `timeseries_samples` as `host`. Idempotent per tick (a sample has its own
 * time); a tick that fails (database busy) is skipped, never retried, since the next one follows.
 * Returns a function that stops the sampler.
 */
export function startTimeseriesSampler(db: Db, host: string, sources: TimeseriesSources, intervalMs: number, log: (message: string) => void): () => void {
  let requests = 0;
  let backupBytes = 0;
  const stopEvents = onEvent((event, fields) => {
    if (event === 'http.request') requests += 1;
    else if (event === 'backup.written') backupBytes += Number(fields['stored_bytes']) || 0;
  });
  let last = Date.now();
  let warned = false;
  const tick = () => {
    const now = Date.now();
    const seconds = Math.max(0.001, (now - last) / 1000);
    const values: [string, number][] = [
      ['api.requests_per_second', requests / seconds],
      ['backup.bytes_per_second', backupBytes / seconds],
    ];
    requests = 0;
    backupBytes = 0;
    last = now;
    try {
      values.push(['volumes.count', db.get<{ n: number }>('SELECT COUNT(*) AS n FROM volumes')!.n]);
      for (const pool of sources.pools()) {
        if (!pool.up) continue;
        const prefix = `backend.${pool.backend}`;
        values.push(
          [`${prefix}.provisioned_bytes`, pool.provisionedCapacityGiB * gib],
          [`${prefix}.used_bytes`, Math.max(0, pool.totalCapacityGiB - pool.freeCapacityGiB) * gib],
          // Usable: what volumes can use, after the reserve (free capacity of an RBD pool is max_avail, replication counted).
          [`${prefix}.usable_bytes`, pool.totalCapacityGiB * (1 - pool.reservedPercentage / 100) * gib],
        );
      }
      db.transaction(() => {
        for (const [series, value] of values) db.run('INSERT INTO timeseries_samples (series, host, taken_at_ms, value) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING', series, host, now, value);
        db.run('DELETE FROM timeseries_samples WHERE taken_at_ms < ?', now - timeseriesRetentionMs);
      });
      warned = false;
    } catch (error) {
      if (!warned) log(`WARNING: timeseries: a sample was skipped (${(error as Error).message}); the dashboard's plots have a gap`);
      warned = true;
    }
  };
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  return () => {
    clearInterval(timer);
    stopEvents();
  };
}

export interface SeriesView {
  name: string;
  unit: string;
  /** [time in ms since the epoch, value], oldest first. */
  points: [number, number][];
}

/** Every series since `sinceMs`, in buckets of `intervalMs`: rates (`*_per_second`) summed over hosts, gauges the largest. */
export function readTimeseries(db: Db, sinceMs: number, intervalMs: number): SeriesView[] {
  const rows = db.all<{ series: string; takenAtMs: number; value: number }>(
    'SELECT series, taken_at_ms AS "takenAtMs", value FROM timeseries_samples WHERE taken_at_ms >= ? ORDER BY series, taken_at_ms',
    sinceMs,
  );
  const bySeries = new Map<string, Map<number, number>>();
  for (const row of rows) {
    let buckets = bySeries.get(row.series);
    if (!buckets) bySeries.set(row.series, (buckets = new Map()));
    const bucketMs = Math.floor(Number(row.takenAtMs) / intervalMs) * intervalMs;
    const value = Number(row.value);
    const previous = buckets.get(bucketMs);
    buckets.set(bucketMs, previous === undefined ? value : row.series.endsWith('_per_second') ? previous + value : Math.max(previous, value));
  }
  return [...bySeries].map(([name, buckets]) => {
    const points = [...buckets].sort((a, b) => a[0] - b[0]);
    const step = Math.ceil(points.length / pointsPerSeriesMax);
    return { name, unit: unitOf(name), points: step > 1 ? points.filter((_, i) => i % step === 0 || i === points.length - 1) : points };
  });
}

const TimeseriesQuery = Type.Object({
  since_seconds: Type.Optional(Type.Integer({ minimum: 1, maximum: timeseriesRetentionMs / 1000 })),
}, { additionalProperties: false });

const Series = Type.Object({
  name: Type.String(),
  unit: Type.String(),
  points: Type.Array(Type.Tuple([Type.Integer(), Type.Number()])),
}, { additionalProperties: false });

export interface TimeseriesAppOptions {
  policyOverrides: Record<string, string>;
  validateResponses: boolean;
  intervalMs: number;
  log: (message: string) => void;
}

/** `/pumice/v1/timeseries`: the samples for the dashboard's plots. */
export function timeseriesApp(db: Db, options: TimeseriesAppOptions): ServiceApp {
  const router = new Router();
  registerRoutes(router, [
    route({
      method: 'GET', path: '', policy: 'pumice:timeseries:index', query: TimeseriesQuery,
      summary: 'Samples of every series since since_seconds ago (default 3600)',
      responses: { 200: Type.Object({ series: Type.Array(Series), interval_seconds: Type.Number(), retention_seconds: Type.Integer() }, { additionalProperties: false }) },
      handler(ctx) {
        const sinceSeconds = ctx.queryParams.since_seconds ?? 3600;
        return {
          status: 200,
          body: { series: readTimeseries(db, Date.now() - sinceSeconds * 1000, options.intervalMs), interval_seconds: options.intervalMs / 1000, retention_seconds: timeseriesRetentionMs / 1000 },
        };
      },
    }),
  ], { policy: new PolicyTable(timeseriesPolicyDefaults, options.policyOverrides), validateResponses: options.validateResponses, log: options.log });
  return { prefix: '/pumice/v1/timeseries', router, faultStyle: 'openstack' };
}

/** The sampling period: `PUMICE_TIMESERIES_INTERVAL_SECONDS` when set (at least 1 s), else the default. */
export function timeseriesIntervalMs(env: NodeJS.ProcessEnv = process.env): number {
  const seconds = Number(env['PUMICE_TIMESERIES_INTERVAL_SECONDS']);
  return Number.isFinite(seconds) && seconds >= 1 ? seconds * 1000 : timeseriesIntervalMsDefault;
}
