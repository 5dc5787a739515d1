/**
 * The parts under the operator's endpoints, without a server: the strict
 * Prometheus text parser the e2e test relies on refuses what Prometheus would;
 * the metrics registry writes what it accepts (label escapes included); event
 * writes are buffered until a flush (before a reply) or close (SIGTERM); log
 * lines in oslo.log's text format and in JSON, levels from the message prefix,
 * DEBUG only with debug on, the request context in the brackets; log lines of
 * one event-loop turn written together (at its end, before a reply, on exit).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configureLogging, emitEvent, eventLogPath, flushEvents, log, moduleLogger, openEventLog, setRequestCaller, withRequestId } from '../../src/events.ts';
import { MetricsRegistry } from '../../src/metrics.ts';
import { parsePrometheusText, promValue } from '../helpers/prometheus.ts';

test('the Prometheus parser refuses what breaks the exposition format, with the line', () => {
  const bad: [string, RegExp][] = [
    ['1bad_name 1\n', /no metric name/],
    ['m{a="x"} 1', /newline/],
    ['m{a="x\\q"} 1\n', /bad escape/],
    ['m{a="x} 1\n', /unterminated|expected/],
    ['m{a="x",a="y"} 1\n', /label a twice/],
    ['m 1\nm 2\n', /appears twice/],
    ['m 1\n# TYPE m gauge\n', /TYPE of m after its samples/],
    ['# TYPE m gauge\n# TYPE m gauge\n', /second TYPE/],
    ['# TYPE m thing\n', /unknown type/],
    ['a 1\nb 1\na{x="1"} 2\n', /continues after/],
    ['m one\n', /bad value/],
    ['# TYPE c counter\nc -1\n', /counter c is -1/],
    ['# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', /counts fewer/],
    ['# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n', /no \+Inf bucket/],
    ['# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 1\n', /!= _count/],
    ['# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_count 1\n', /_sum or _count missing/],
  ];
  for (const [text, why] of bad) assert.throws(() => parsePrometheusText(text), why, JSON.stringify(text));
  const ok = parsePrometheusText('# HELP m a \\\\ help\n# TYPE m gauge\nm{a="q\\"\\\\\\n"} +Inf 1700000000000\n# a comment\n\nn NaN\n');
  assert.equal(ok.get('m')!.help, 'a \\ help');
  assert.equal(promValue(ok, 'm', { a: 'q"\\\n' }), Infinity);
  assert.ok(Number.isNaN(promValue(ok, 'n')));
});

test('the registry writes counters, histograms and scrape-time gauges the strict parser accepts', () => {
  const registry = new MetricsRegistry();
  const counter = registry.counter('t_requests_total', 'requests');
  const histogram = registry.histogram('t_duration_seconds', 'durations', [0.1, 1]);
  let depth = 3;
  registry.gauge('t_depth', 'depth', () => [{ labels: { kind: 'a "quoted" \\ kind\nnext' }, value: depth }]);
  registry.gauge('t_broken', 'a source that throws is left empty', () => {
    throw new Error('database closed');
  });
  counter.inc({ route: '/x' });
  counter.inc({ route: '/x' }, 2);
  histogram.observe({ route: '/x' }, 0.05);
  histogram.observe({ route: '/x' }, 0.5);
  histogram.observe({ route: '/x' }, 5);
  depth = 4;
  const m = parsePrometheusText(registry.render());
  assert.equal(promValue(m, 't_requests_total', { route: '/x' }), 3);
  assert.equal(promValue(m, 't_duration_seconds_bucket', { route: '/x', le: '0.1' }), 1);
  assert.equal(promValue(m, 't_duration_seconds_bucket', { route: '/x', le: '1' }), 2);
  assert.equal(promValue(m, 't_duration_seconds_bucket', { route: '/x', le: '+Inf' }), 3);
  assert.equal(promValue(m, 't_duration_seconds_sum', { route: '/x' }), 5.55);
  assert.equal(promValue(m, 't_depth', { kind: 'a "quoted" \\ kind\nnext' }), 4, 'read at scrape time, label escaped and read back');
  assert.deepEqual(m.get('t_broken')!.samples, []);
});

test('events are buffered: written on flushEvents (before a reply) and on close (SIGTERM), not one write per event', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'pumice-obs-unit-'));
  try {
    const close = openEventLog(dataDir);
    const file = eventLogPath(dataDir);
    emitEvent('test.one', { n: 1 });
    assert.equal(readFileSync(file, 'utf8'), '', 'still buffered');
    flushEvents();
    assert.equal(readFileSync(file, 'utf8').trim().split('\n').length, 1);
    withRequestId('req-unit', () => emitEvent('test.two', { n: 2 }));
    close();
    const events = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(events.map((e) => [e['event'], e['request_id']]), [['test.one', undefined], ['test.two', 'req-unit']]);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('log lines: oslo.log text format with the request context, levels from the prefix, DEBUG only with debug; JSON with log_format = json', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pumice-obs-log-'));
  const logFile = join(dir, 'pumice.log');
  try {
    let close = configureLogging({ format: 'text', debug: false, logFile });
    const log = moduleLogger('pumice.unit');
    log('plain message');
    log('DEBUG: hidden without debug');
    withRequestId('req-1', () => {
      setRequestCaller('user1', 'project1');
      log('WARNING: something is off');
    });
    close();
    const lines = readFileSync(logFile, 'utf8').trim().split('\n');
    assert.equal(lines.length, 2, lines.join('\n'));
    assert.match(lines[0]!, new RegExp(`^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\.\\d{3} ${process.pid} INFO pumice\\.unit \\[-\\] plain message$`));
    assert.match(lines[1]!, new RegExp(`^\\S+ \\S+ ${process.pid} WARNING pumice\\.unit \\[req-1 user1 project1\\] something is off$`));

    rmSync(logFile);
    close = configureLogging({ format: 'json', debug: true, logFile });
    log('DEBUG: shown with debug');
    withRequestId('req-2', () => log('ERROR: it broke'));
    close();
    const records = readFileSync(logFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(records.map((r) => [r['level'], r['module'], r['request_id'], r['message'], r['pid']]), [
      ['DEBUG', 'pumice.unit', null, 'shown with debug', process.pid],
      ['ERROR', 'pumice.unit', 'req-2', 'it broke', process.pid],
    ]);
    assert.ok(!Number.isNaN(Date.parse(String(records[0]!['timestamp']))));
  } finally {
    configureLogging({ format: 'text', debug: false, logFile: null });
    rmSync(dir, { recursive: true, force: true });
  }
});

test('log levels, a table: state changes INFO, failures and scheduler rejections WARNING/ERROR with the reason, access lines by status, DEBUG only with debug', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pumice-obs-levels-'));
  const logFile = join(dir, 'pumice.log');
  // [what happened, how it is written, expected level (null: no line), text the line must carry]
  const table: [string, () => void, string | null, RegExp | null][] = [
    ['status moved', () => emitEvent('state.transition', { resource: 'volume', id: 'v1', from: ['creating'], to: 'available', moved: true }), 'INFO', /volume v1: creating -> available/],
    ['status not moved', () => emitEvent('state.transition', { resource: 'volume', id: 'v1', from: ['creating'], to: 'available', moved: false }), 'DEBUG', /not moved/],
    ['status forced', () => emitEvent('state.forced', { resource: 'volume', id: 'v1', to: 'error', reason: 'reset-state' }), 'WARNING', /forced to error: reset-state/],
    ['task queued', () => emitEvent('task.queued', { task_id: 1, kind: 'volume.create', resource_id: 'v1', queue: 'q' }), 'DEBUG', /queued/],
    ['task done', () => emitEvent('task.done', { task_id: 1, kind: 'volume.create', resource_id: 'v1', attempts: 1 }), 'INFO', /task 1 .* done/],
    // The queue writes its own retry/failure lines (below); the events add none.
    ['task retry event', () => emitEvent('task.retry', { task_id: 1, reason: 'x' }), null, null],
    ['task failed event', () => emitEvent('task.failed', { task_id: 1, reason: 'x' }), null, null],
    ['queue: retry', () => moduleLogger('pumice')('WARNING: task 1 volume.create v1: attempt 1 failed (transient): timed out; retrying in 100 ms'), 'WARNING', /retrying in 100 ms/],
    ['queue: failed', () => moduleLogger('pumice')('ERROR: task 1 volume.create v1 failed: no space'), 'ERROR', /failed: no space/],
    ['server NoValidHost', () => emitEvent('scheduler.rejected', { resource: 'server', id: 's1', project_id: 'p1', reason: 'No valid host was found. h1: RamFilter' }), 'WARNING', /server s1 of project p1 not placed: No valid host was found\. h1: RamFilter/],
    // The volume service writes its own WARNING line for its rejections (volumes.test.ts reads it).
    ['volume rejection event', () => emitEvent('scheduler.rejected', { resource: 'volume', id: 'v2', project_id: 'p1', reason: 'x' }), null, null],
    ['access 200', () => emitEvent('http.request', { method: 'GET', path: '/v3', status: 200, duration_ms: 1 }), 'DEBUG', /GET \/v3 status: 200/],
    ['access 404', () => emitEvent('http.request', { method: 'GET', path: '/nope', status: 404, duration_ms: 1 }), 'INFO', /GET \/nope status: 404/],
    ['access 503', () => emitEvent('http.request', { method: 'POST', path: '/volumes', status: 503, duration_ms: 2 }), 'ERROR', /POST \/volumes status: 503 time: 2 ms/],
    ['progress', () => moduleLogger('pumice')('DEBUG: backup b1: 50% (1/2 bytes)'), 'DEBUG', /50%/],
  ];
  try {
    for (const debug of [true, false]) {
      for (const [what, write, level, text] of table) {
        rmSync(logFile, { force: true });
        const close = configureLogging({ format: 'json', debug, logFile });
        write();
        close();
        let records: Record<string, unknown>[] = [];
        try {
          records = readFileSync(logFile, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
        } catch { /* no line: no file content */ }
        const expected = level === null || (level === 'DEBUG' && !debug) ? [] : [level];
        assert.deepEqual(records.map((r) => r['level']), expected, `${what} (debug ${debug}): ${JSON.stringify(records)}`);
        if (expected.length > 0 && text) assert.match(String(records[0]!['message']), text, what);
      }
    }
  } finally {
    configureLogging({ format: 'text', debug: false, logFile: null });
    rmSync(dir, { recursive: true, force: true });
  }
});

test('log lines of one turn are one write: at the end of the turn, before a reply (flushEvents), on exit; to stderr and to a log file', async () => {
  const turnEnd = () => new Promise<void>((resolve) => setImmediate(resolve));
  const writes: string[] = [];
  const original = process.stderr.write;
  process.stderr.write = ((chunk: string | Uint8Array) => {
    writes.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  const dir = mkdtempSync(join(tmpdir(), 'pumice-obs-batch-'));
  const logFile = join(dir, 'pumice.log');
  try {
    configureLogging({ format: 'text', debug: false, logFile: null });
    for (let i = 1; i <= 3; i++) log('INFO', 'pumice.unit', `line ${i}`);
    assert.equal(writes.length, 0, 'nothing written before the turn ends');
    await turnEnd();
    assert.equal(writes.length, 1, writes.join(''));
    assert.match(writes[0]!, /line 1\n.*line 2\n.*line 3\n$/s);
    // A reply flushes what its request logged, before it leaves.
    log('INFO', 'pumice.unit', 'line 4');
    log('WARNING', 'pumice.unit', 'line 5');
    flushEvents();
    assert.equal(writes.length, 2);
    assert.match(writes[1]!, /INFO pumice\.unit \[-\] line 4\n.*WARNING pumice\.unit \[-\] line 5\n$/s);
    await turnEnd();
    assert.equal(writes.length, 2, 'nothing left to write');

    const close = configureLogging({ format: 'text', debug: false, logFile });
    log('INFO', 'pumice.unit', 'file 1');
    log('INFO', 'pumice.unit', 'file 2');
    assert.equal(readFileSync(logFile, 'utf8'), '');
    await turnEnd();
    assert.match(readFileSync(logFile, 'utf8'), /file 1\n.*file 2\n$/s);
    log('INFO', 'pumice.unit', 'file 3');
    close();
    assert.match(readFileSync(logFile, 'utf8'), /file 2\n.*file 3\n$/s, 'close writes what is buffered');
    assert.equal(writes.length, 2, 'file lines never go to stderr');
  } finally {
    process.stderr.write = original;
    configureLogging({ format: 'text', debug: false, logFile: null });
    rmSync(dir, { recursive: true, force: true });
  }
  // A process that exits in the turn it logged (process.exit at a crash point) still writes its lines.
  const events = new URL('../../src/events.ts', import.meta.url).href;
  const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e',
    `const { log } = await import(${JSON.stringify(events)}); log('INFO', 'pumice.unit', 'last words'); process.exit(3);`], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(child.status, 3, child.stderr);
  assert.match(child.stderr, /INFO pumice\.unit \[-\] last words\n/);
});
