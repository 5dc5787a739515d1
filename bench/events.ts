/**
 * The cost of structured events per API request, in process: the way they
 * were written before (pino to a synchronous destination: one write(2) per
 * event) against the buffered writer of src/events.ts (one write(2) per
 * request, when the reply is about to leave).
 *
 *   node --import tsx bench/events.ts [--requests 20000] [--events-per-request 4]
 *
 * A request here is what a volume create costs in events: the http.request
 * line plus `--events-per-request - 1` state and task events. Prints CPU
 * microseconds per request for each writer and the ratio.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { emitEvent, flushEvents, openEventLog } from '../src/events.ts';
import { arg } from './lib.ts';

const requests = arg('--requests', 20_000);
const eventsPerRequest = arg('--events-per-request', 4);

function fields(i: number): Record<string, unknown> {
  return { task_id: i, kind: 'volume.create', resource_id: '5b0c6c57-4d7f-4d42-9a43-2f1f1b1c8d2e', queue: 'local', attempts: 1 };
}

function measure(label: string, run: () => void): number {
  const cpu = process.cpuUsage();
  const wallStart = process.hrtime.bigint();
  run();
  const used = process.cpuUsage(cpu);
  const wallMs = Number(process.hrtime.bigint() - wallStart) / 1e6;
  const perRequestUs = (used.user + used.system) / requests;
  console.log(`${label}: ${perRequestUs.toFixed(1)} us CPU per request (${(used.system / requests).toFixed(1)} us system), ${wallMs.toFixed(0)} ms wall for ${requests} requests x ${eventsPerRequest} events`);
  return perRequestUs;
}

const dir = mkdtempSync(join(tmpdir(), 'pumice-bench-events-'));
try {
  // Before: pino with a synchronous destination, as src/events.ts wrote them until this change.
  const destination = pino.destination({ dest: join(dir, 'sync.jsonl'), sync: true, append: true });
  const syncLogger = pino({ base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime, messageKey: 'msg' }, destination);
  const before = measure('synchronous (one write per event)', () => {
    for (let i = 0; i < requests; i++) {
      for (let e = 0; e < eventsPerRequest; e++) syncLogger.info({ event: 'task.claimed', request_id: 'req-5b0c6c57-4d7f-4d42-9a43-2f1f1b1c8d2e', ...fields(i) });
    }
  });
  destination.flushSync();
  destination.end();

  const close = openEventLog(join(dir, 'buffered'));
  const after = measure('buffered (one write per request)', () => {
    for (let i = 0; i < requests; i++) {
      for (let e = 0; e < eventsPerRequest; e++) emitEvent('task.claimed', fields(i));
      flushEvents();
    }
  });
  close();
  console.log(`buffered / synchronous CPU: ${(after / before).toFixed(2)}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
