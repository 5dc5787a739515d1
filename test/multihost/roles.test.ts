/** `pumice serve --roles` parsing (src/roles.ts): any subset, with the refusals named. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allRoles, parseRoles } from '../../src/roles.ts';
import { UsageError } from '../../src/cli/args.ts';

test('no --roles is every role; a list is that subset, once each', () => {
  assert.deepEqual(parseRoles(undefined), [...allRoles]);
  assert.deepEqual(parseRoles('volume,backup'), ['volume', 'backup']);
  assert.deepEqual(parseRoles(' api , scheduler,image,api'), ['api', 'scheduler', 'image']);
  assert.deepEqual(parseRoles('compute'), ['compute']);
});

test('an unknown role, an empty list and a scheduler without the api are usage errors naming the fix', () => {
  assert.throws(() => parseRoles('volum'), (e: unknown) => e instanceof UsageError && /unknown role 'volum'; did you mean 'volume'\?/.test(e.message));
  assert.throws(() => parseRoles(','), (e: unknown) => e instanceof UsageError && /names no role; roles are api, scheduler/.test(e.message));
  assert.throws(() => parseRoles('scheduler,volume'), (e: unknown) => e instanceof UsageError && /runs with the api role \(--roles api,scheduler\)/.test(e.message));
});
