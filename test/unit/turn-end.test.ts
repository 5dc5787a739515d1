/**
 * src/util/turn-end.ts: the API replies of a turn leave before the work (task starts, claim
 * passes) deferred in the same turn, whatever the order they were deferred in.
 * test/e2e/backend-down-tasks.test.ts is the end-to-end case
 * (a DELETE whose task crashes the process still gets its 202).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { atTurnEnd, atTurnEndFirst } from '../../src/util/turn-end.ts';
import { configureLogging, log } from '../../src/events.ts';

test('replies deferred after the work of a turn still run first; every job runs once at the end of the turn', async () => {
  const order: string[] = [];
  atTurnEnd(() => order.push('task start'));
  atTurnEndFirst(() => order.push('reply 1'));
  atTurnEnd(() => order.push('claim pass'));
  atTurnEndFirst(() => order.push('reply 2'));
  assert.deepEqual(order, [], 'nothing runs in the turn that deferred it');
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(order, ['reply 1', 'reply 2', 'task start', 'claim pass']);
});


test('the log lines of a turn are written at its end with its replies and task starts: one immediate, the work phase\'s lines included', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pumice-turn-end-'));
  const file = join(dir, 'pumice.log');
  const close = configureLogging({ format: 'text', debug: false, logFile: file });
  const realSetImmediate = globalThis.setImmediate;
  let immediates = 0;
  globalThis.setImmediate = ((...args: Parameters<typeof setImmediate>) => (immediates++, realSetImmediate(...args))) as typeof setImmediate;
  try {
    log('INFO', 'pumice.test', 'line of the request');
    const order: string[] = [];
    atTurnEndFirst(() => order.push('reply'));
    atTurnEnd(() => (order.push('task start'), log('INFO', 'pumice.test', 'line of the task start')));
    assert.equal(readFileSync(file, 'utf8'), '', 'nothing written in the turn that logged');
    await new Promise((resolve) => realSetImmediate(resolve));
    assert.deepEqual(order, ['reply', 'task start']);
    assert.equal(immediates, 1, 'one setImmediate for the end of the turn (no other for the log lines)');
    assert.match(readFileSync(file, 'utf8'), /line of the request\n.*line of the task start\n$/);
  } finally {
    globalThis.setImmediate = realSetImmediate;
    close();
    rmSync(dir, { recursive: true, force: true });
  }
});
