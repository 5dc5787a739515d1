/**
 * Prometheus metrics in the text exposition format (version 0.0.4), written
 * here rather than with prom-client: Pumice needs counters, gauges read at
 * scrape time and one histogram family, about 150 lines, where prom-client
 * brings its own registry, cluster aggregation and default collectors we do
 * not use, and one more dependency to keep current.
 *
 * Counters are fed by the structured events (`onEvent` in ../events.ts: a
 * request answered, a task finished, a backup written, image bytes moved), so
 * no service calls a metric itself; gauges (queue depth, backends, NBD
 * connections, instances) are read from their owners when scraped.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline, Transform, type Readable } from 'node:stream';
import { onEvent } from './events.ts';

type Labels = Record<string, string>;

interface Family {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  /** Samples of this family as exposition lines (without HELP/TYPE). */
  lines(): string[];
}

/** Histogram upper bounds of request durations, in seconds. */
export const requestDurationBucketsSeconds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Distinct label sets one family keeps; beyond it new ones are counted under `other` (a bound on memory). */
const labelSetsMax = 2000;

export class Counter {
  private readonly values = new Map<string, { labels: Labels; value: number }>();
  constructor(readonly name: string) {}

  inc(labels: Labels, by = 1): void {
    const key = labelKey(labels);
    let entry = this.values.get(key);
    if (!entry) {
      if (this.values.size >= labelSetsMax) return this.inc(Object.fromEntries(Object.keys(labels).map((k) => [k, 'other'])), by);
      this.values.set(key, (entry = { labels, value: 0 }));
    }
    entry.value += by;
  }

  lines(): string[] {
    return [...this.values.values()].map((e) => sample(this.name, e.labels, e.value));
  }
}

export class Histogram {
  private readonly values = new Map<string, { labels: Labels; buckets: number[]; sum: number; count: number }>();
  constructor(readonly name: string, private readonly bounds: number[]) {}

  observe(labels: Labels, value: number): void {
    const key = labelKey(labels);
    let entry = this.values.get(key);
    if (!entry) {
      if (this.values.size >= labelSetsMax) return this.observe(Object.fromEntries(Object.keys(labels).map((k) => [k, 'other'])), value);
      this.values.set(key, (entry = { labels, buckets: this.bounds.map(() => 0), sum: 0, count: 0 }));
    }
    this.bounds.forEach((bound, i) => {
      if (value <= bound) entry.buckets[i]! += 1;
    });
    entry.sum += value;
    entry.count += 1;
  }

  lines(): string[] {
    const out: string[] = [];
    for (const e of this.values.values()) {
      this.bounds.forEach((bound, i) => out.push(sample(`${this.name}_bucket`, { ...e.labels, le: String(bound) }, e.buckets[i]!)));
      out.push(sample(`${this.name}_bucket`, { ...e.labels, le: '+Inf' }, e.count));
      out.push(sample(`${this.name}_sum`, e.labels, e.sum));
      out.push(sample(`${this.name}_count`, e.labels, e.count));
    }
    return out;
  }
}

export interface GaugeSample {
  labels: Labels;
  value: number;
}

export class MetricsRegistry {
  private readonly families: Family[] = [];

  counter(name: string, help: string): Counter {
    const counter = new Counter(name);
    this.families.push({ name, help, type: 'counter', lines: () => counter.lines() });
    return counter;
  }

  histogram(name: string, help: string, bounds: number[]): Histogram {
    const histogram = new Histogram(name, bounds);
    this.families.push({ name, help, type: 'histogram', lines: () => histogram.lines() });
    return histogram;
  }

  /** A gauge whose samples `read` returns at each scrape; a `read` that throws leaves the family empty. */
  gauge(name: string, help: string, read: () => GaugeSample[]): void {
    this.families.push({
      name, help, type: 'gauge',
      lines: () => {
        try {
          return read().map((s) => sample(name, s.labels, s.value));
        } catch {
          return [];
        }
      },
    });
  }

  /** The whole exposition: `# HELP`, `# TYPE` and the samples of every family. */
  render(): string {
    const out: string[] = [];
    for (const family of this.families) {
      out.push(`# HELP ${family.name} ${family.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${family.name} ${family.type}`, ...family.lines());
    }
    return out.join('\n') + '\n';
  }
}

/** The content type of the text exposition format. */
export const expositionContentType = 'text/plain; version=0.0.4; charset=utf-8';

/** A label set's map key: names and values joined by control characters no label holds (cheaper than JSON on every request). */
function labelKey(labels: Labels): string {
  let key = '';
  for (const name in labels) key += `${name}\u0001${labels[name]}\u0002`;
  return key;
}

function sample(name: string, labels: Labels, value: number): string {
  const entries = Object.entries(labels);
  const text = entries.length === 0 ? '' : `{${entries.map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')}"`).join(',')}}`;
  return `${name}${text} ${formatValue(value)}`;
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

/** What the gauges read at scrape time. */
export interface MetricSources {
  /** Queued tasks per kind and the age of the oldest, and running tasks per kind. */
  tasks(): { kind: string; queued: number; running: number; oldestQueuedAgeSeconds: number }[];
  backends(): { backend: string; host: string; up: boolean; totalBytes: number; freeBytes: number; provisionedBytes: number }[];
  nbdConnections(): number;
  instances(): { vmState: string; count: number }[];
}

/**
 * The metrics of one Pumice process: counters fed from its events from now on, gauges read from
 * `sources`. Returns the registry and a function that stops counting.
 */
export function pumiceMetrics(sources: MetricSources): { registry: MetricsRegistry; stop(): void } {
  const registry = new MetricsRegistry();
  const requests = registry.counter('pumice_http_requests_total', 'API requests answered, by method, declared route and status');
  const durations = registry.histogram('pumice_http_request_duration_seconds', 'Time from request to reply (headers and JSON body; a streamed body not included), by method and declared route', requestDurationBucketsSeconds);
  const tasksFinished = registry.counter('pumice_tasks_finished_total', 'Tasks finished by this process, by kind and outcome (done, failed)');
  const taskRetries = registry.counter('pumice_task_retries_total', 'Task attempts that failed with a transient error and were retried, by kind');
  const backupBytes = registry.counter('pumice_backup_bytes_total', 'Bytes written to the backup store by finished backup runs');
  const imageBytes = registry.counter('pumice_image_transfer_bytes_total', 'Image data moved through the image API, by direction (upload, download)');
  // Counters start at 0, so a rate() sees the first increase.
  backupBytes.inc({}, 0);
  for (const direction of ['upload', 'download']) imageBytes.inc({ direction }, 0);
  registry.gauge('pumice_task_queue_depth', 'Tasks waiting in the queue (all hosts sharing the database), by kind', () =>
    sources.tasks().map((t) => ({ labels: { kind: t.kind }, value: t.queued })));
  registry.gauge('pumice_task_running', 'Tasks running now, by kind', () => sources.tasks().map((t) => ({ labels: { kind: t.kind }, value: t.running })));
  registry.gauge('pumice_task_oldest_queued_age_seconds', 'Age of the oldest queued task, by kind (0 when none is queued)', () =>
    sources.tasks().map((t) => ({ labels: { kind: t.kind }, value: t.oldestQueuedAgeSeconds })));
  const backends = () => sources.backends();
  registry.gauge('pumice_backend_up', 'Whether the volume backend answered its last capacity report (1) or is down (0)', () =>
    backends().map((b) => ({ labels: { backend: b.backend, host: b.host }, value: b.up ? 1 : 0 })));
  registry.gauge('pumice_backend_capacity_total_bytes', 'Total capacity the backend last reported', () =>
    backends().map((b) => ({ labels: { backend: b.backend, host: b.host }, value: b.totalBytes })));
  registry.gauge('pumice_backend_capacity_free_bytes', 'Free capacity the backend last reported', () =>
    backends().map((b) => ({ labels: { backend: b.backend, host: b.host }, value: b.freeBytes })));
  registry.gauge('pumice_backend_provisioned_bytes', 'Capacity provisioned to volumes on the backend', () =>
    backends().map((b) => ({ labels: { backend: b.backend, host: b.host }, value: b.provisionedBytes })));
  registry.gauge('pumice_nbd_connections', 'NBD connections past the handshake (attached local volumes in use)', () => [{ labels: {}, value: sources.nbdConnections() }]);
  registry.gauge('pumice_compute_instances', 'Servers by vm_state', () => sources.instances().map((i) => ({ labels: { vm_state: i.vmState }, value: i.count })));

  const stop = onEvent((event, f) => {
    switch (event) {
      case 'http.request': {
        const labels = { method: String(f['method']), route: String(f['route'] ?? 'unmatched') };
        requests.inc({ ...labels, status: String(f['status']) });
        durations.observe(labels, Number(f['duration_ms']) / 1000);
        break;
      }
      case 'task.done':
        tasksFinished.inc({ kind: String(f['kind']), outcome: 'done' });
        break;
      case 'task.failed':
        tasksFinished.inc({ kind: String(f['kind']), outcome: 'failed' });
        break;
      case 'task.retry':
        taskRetries.inc({ kind: String(f['kind']) });
        break;
      case 'backup.written':
        backupBytes.inc({}, Number(f['stored_bytes']) || 0);
        break;
      case 'image.transferred':
        imageBytes.inc({ direction: String(f['direction']) }, Number(f['bytes']) || 0);
        break;
    }
  });
  return { registry, stop };
}

/**
 * The `[metrics] listen` listener (`HOST:PORT`): `GET /metrics` without a token, nothing else. For a
 * scraper on a management address the API listener does not face; bind it to such an address only.
 */
export async function startMetricsListener(listen: string, registry: MetricsRegistry): Promise<{ url: string; close(): Promise<void> }> {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(listen.trim());
  if (!m) throw new Error(`[metrics] listen = ${listen} is not HOST:PORT (e.g. 127.0.0.1:9464)`);
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('only GET /metrics is served here\n');
      return;
    }
    const body = Buffer.from(registry.render());
    res.writeHead(200, { 'Content-Type': expositionContentType, 'Content-Length': String(body.length), 'Cache-Control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', (error) => reject(new Error(`[metrics] listen = ${listen}: ${error.message}`)));
    server.listen(Number(m[2]), m[1] || '127.0.0.1', () => resolveListen());
  });
  const address = server.address() as AddressInfo;
  return {
    url: `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}/metrics`,
    close: () => new Promise<void>((r) => {
      server.close(() => r());
      server.closeAllConnections();
    }),
  };
}

/**
 * `source` passed through unchanged, counting its bytes; `onDone(bytes)` is called once, when it
 * ended or was cut off (a client that went away still moved what it read).
 */
export function countedStream(source: Readable, onDone: (bytes: number) => void): Readable {
  let bytes = 0;
  let reported = false;
  const report = () => {
    if (reported) return;
    reported = true;
    onDone(bytes);
  };
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      bytes += chunk.length;
      callback(null, chunk);
    },
  });
  pipeline(source, counter, report);
  counter.once('close', report);
  return counter;
}
