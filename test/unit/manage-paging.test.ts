/**
 * pageManageable (src/volume/api/manage.ts): the one paging of GET
 * /manageable_volumes and /manageable_snapshots, as Cinder pages them:
 * sort by name or size (descending unless asked), ties by the caller's key,
 * then marker, offset and limit.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pageManageable } from '../../src/volume/api/manage.ts';

const objects = [
  { name: 'b', sizeGiB: 2, volumeId: 'v1' },
  { name: 'a', sizeGiB: 3, volumeId: 'v2' },
  { name: 'c', sizeGiB: 2, volumeId: 'v3' },
  { name: 'c', sizeGiB: 1, volumeId: 'v0' },
];
const names = (page: typeof objects) => page.map((o) => `${o.name}/${o.volumeId}`);

test('sorted by name descending by default, ties by the tiebreak key; the input is not reordered', () => {
  assert.deepEqual(names(pageManageable(objects, {}, (o) => o.volumeId)), ['c/v0', 'c/v3', 'b/v1', 'a/v2']);
  assert.deepEqual(names(objects), ['b/v1', 'a/v2', 'c/v3', 'c/v0']);
});

test('sort_key size ascending; marker, offset and limit', () => {
  const q = { sort_key: 'size', sort_dir: 'asc' } as const;
  assert.deepEqual(names(pageManageable(objects, q, (o) => o.volumeId)), ['c/v0', 'b/v1', 'c/v3', 'a/v2']);
  assert.deepEqual(names(pageManageable(objects, { ...q, marker: 'b' }, (o) => o.volumeId)), ['c/v3', 'a/v2']);
  assert.deepEqual(names(pageManageable(objects, { ...q, offset: 1, limit: 2 }, (o) => o.volumeId)), ['b/v1', 'c/v3']);
  assert.deepEqual(pageManageable(objects, { ...q, marker: 'nothing' }, (o) => o.volumeId), [], 'an unknown marker lists nothing');
  assert.deepEqual(pageManageable(objects, { limit: 0 }, (o) => o.volumeId), []);
});
