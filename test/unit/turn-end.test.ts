/**
 * src/util/turn-end.ts: the API replies of a turn leave before the work (task starts, claim
 * passes) deferred in the same turn, whatever the order they were deferred in.
 * test/e2e/backend-down-tasks.test.ts is the end-to-end case
 * (a DELETE whose task crashes the process still gets its 202).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { atTurnEnd, atTurnEndFirst } from '../../src/util/turn-end.ts';

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

