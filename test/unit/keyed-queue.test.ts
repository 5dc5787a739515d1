import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KeyedQueue } from '../../src/util/keyed-queue.ts';

const tick = () => new Promise((r) => setImmediate(r));

test('one key runs its jobs one at a time in order; other keys run meanwhile; a failure does not stop the next; keys are forgotten', async () => {
  const queue = new KeyedQueue();
  const events: string[] = [];
  const gates: Record<string, () => void> = {};
  const job = (name: string, fail = false) => () =>
    new Promise<string>((resolve, reject) => {
      events.push(`start ${name}`);
      gates[name] = () => {
        events.push(`end ${name}`);
        if (fail) reject(new Error(name));
        else resolve(name);
      };
    });
  const a1 = queue.run('a', job('a1', true));
  const a2 = queue.run('a', job('a2'));
  const b1 = queue.run('b', job('b1'));
  await tick();
  assert.deepEqual(events, ['start a1', 'start b1'], 'a2 waits for a1; b1 does not');
  gates['b1']!();
  gates['a1']!();
  await assert.rejects(a1, /a1/);
  assert.equal(await b1, 'b1');
  await tick();
  assert.deepEqual(events.slice(2), ['end b1', 'end a1', 'start a2'], 'a2 starts after a1 failed');
  assert.equal(queue.size, 1, 'b is forgotten, a still has a2');
  gates['a2']!();
  assert.equal(await a2, 'a2');
  await tick();
  assert.equal(queue.size, 0);
});
