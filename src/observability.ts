/**
 * What an operator watches a running Pumice with, put together for `startPumice`:
 * the log settings, `/healthcheck`, `/metrics` (on the API listener, and on
 * `[metrics] listen` when set). See ./events.ts, ./metrics.ts, ./http/health.ts.
 */
import type { PumiceConfig } from './config/config.ts';
import type { Db } from './db/db.ts';
import { configureLogging, onEvent } from './events.ts';
import { healthcheckApp, metricsApp } from './http/health.ts';
import type { ServiceApp, TokenValidator } from './http/server.ts';
import { pumiceMetrics, startMetricsListener, type MetricSources } from './metrics.ts';
import type { PoolState } from './volume/scheduler/scheduler.ts';

const gib = 1024 ** 3;
export const logFormats = ['text', 'json'] as const;

/** Applies `[DEFAULT] log_format`, `log_file`, `use_journal` and `debug`; returns a function that closes the log file. */
export function applyLogSettings(config: PumiceConfig): () => void {
  const format = config.DEFAULT.log_format;
  if (!(logFormats as readonly string[]).includes(format)) {
    throw new Error(`[DEFAULT] log_format = ${format} is unknown; use 'text' (oslo.log's line format) or 'json'`);
  }
  return configureLogging({ format: format as 'text' | 'json', debug: config.DEFAULT.debug, logFile: config.DEFAULT.log_file, useJournal: config.DEFAULT.use_journal });
}

export interface ObservabilityInput {
  config: PumiceConfig;
  db: Db;
  tokens: TokenValidator;
  pools: () => PoolState[];
  nbdConnections: () => number;
}

/** Builds the health and metrics apps and starts the `[metrics] listen` listener if configured. */
export async function startObservability(input: ObservabilityInput): Promise<{ apps: ServiceApp[]; metricsUrl: string | null; stop(): Promise<void> }> {
  const { config, db } = input;
  // Kinds queued since the start, or found queued: each keeps its series (at 0 once its queue drained).
  const kindsSeen = new Set<string>();
  const stopWatchingKinds = onEvent((event, fields) => {
    if (event === 'task.queued') kindsSeen.add(String(fields['kind']));
  });
  const sources: MetricSources = {
    tasks: () => {
      const now = Date.now();
      const rows = db.all<{ kind: string; queued: number; running: number; oldest: string | null }>(
        `SELECT kind, SUM(state = 'queued') AS queued, SUM(state = 'running') AS running,
                MIN(CASE WHEN state = 'queued' THEN created_at END) AS oldest
           FROM tasks WHERE state IN ('queued', 'running') GROUP BY kind`);
      for (const row of rows) kindsSeen.add(row.kind);
      return [...kindsSeen].sort().map((kind) => {
        const row = rows.find((r) => r.kind === kind);
        return {
          kind,
          queued: row?.queued ?? 0,
          running: row?.running ?? 0,
          oldestQueuedAgeSeconds: row?.oldest ? Math.max(0, (now - Date.parse(row.oldest)) / 1000) : 0,
        };
      });
    },
    backends: () => input.pools().map((p) => ({
      backend: p.backend,
      host: p.host,
      up: p.up,
      totalBytes: p.totalCapacityGiB * gib,
      freeBytes: p.freeCapacityGiB * gib,
      provisionedBytes: p.provisionedCapacityGiB * gib,
    })),
    nbdConnections: input.nbdConnections,
    instances: () => db.all<{ vm_state: string; n: number }>('SELECT vm_state, COUNT(*) AS n FROM servers WHERE deleted_at IS NULL GROUP BY vm_state ORDER BY vm_state')
      .map((r) => ({ vmState: r.vm_state, count: r.n })),
  };
  const metrics = pumiceMetrics(sources);
  const health = { db, backends: input.pools, taskStuckSeconds: config.healthcheck.task_stuck_seconds };
  let listener: Awaited<ReturnType<typeof startMetricsListener>> | null = null;
  try {
    if (config.metrics.listen) listener = await startMetricsListener(config.metrics.listen, metrics.registry);
  } catch (error) {
    metrics.stop();
    stopWatchingKinds();
    throw error;
  }
  return {
    apps: [
      healthcheckApp(health, { detailed: config.healthcheck.detailed, tokens: input.tokens }),
      metricsApp(metrics.registry, { allowAnonymous: config.metrics.allow_anonymous, tokens: input.tokens }),
    ],
    metricsUrl: listener?.url ?? null,
    async stop() {
      metrics.stop();
      stopWatchingKinds();
      await listener?.close();
    },
  };
}
