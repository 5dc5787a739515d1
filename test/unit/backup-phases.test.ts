/**
 * The Ceph backup driver's phase timer (src/backup/drivers/phases.ts), which
 * bench/backup-ceph.ts prints for the incremental: calls of one phase in
 * flight together count once (the union of their intervals), phases keep the
 * order of their first start, a failing call still counts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatPhases, Phases } from '../../src/backup/drivers/phases.ts';

test('a phase is the union of its calls\' intervals; phases in order of first start; failures count', async () => {
  let nowMs = 0;
  const phases = new Phases(() => nowMs);
  const gate = () => {
    let open!: () => void;
    const p = new Promise<void>((resolve) => (open = resolve));
    return { p, open };
  };
  nowMs = 10;
  const a = gate();
  const b = gate();
  const first = phases.time('write', () => a.p); // 10 .. 40
  nowMs = 20;
  const second = phases.time('write', () => b.p); // 20 .. 60: overlaps the first
  nowMs = 40;
  a.open();
  await first;
  nowMs = 60;
  b.open();
  await second;
  nowMs = 70;
  const c = gate();
  const third = phases.time('write', () => c.p); // 70 .. 75: a separate interval
  nowMs = 75;
  c.open();
  await third;
  nowMs = 80;
  await assert.rejects(phases.time('snapshot', async () => {
    nowMs = 95;
    throw new Error('boom');
  }));
  nowMs = 5 + 95; // report at 100
  const report = phases.report();
  assert.deepEqual(report, {
    totalMs: 100,
    phases: [
      { name: 'write', ms: 55, calls: 3 }, // 10..60 and 70..75
      { name: 'snapshot', ms: 15, calls: 1 },
    ],
  });
  assert.equal(formatPhases(report), '100 ms: write 55 ms (3 calls), snapshot 15 ms');
});
