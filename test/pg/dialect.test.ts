/**
 * The SQLite constructs services write, translated for PostgreSQL by the Db layer
 * (src/db/pg-dialect.ts), give the same rows on both engines: each statement below
 * is the form a service uses, run on a fresh SQLite file and on a fresh PostgreSQL
 * database (under scripts/with-postgres.sh) with the same data.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Db } from '../../src/db/db.ts';
import { testDatabaseUrl } from '../helpers/pumice.ts';

const skip = process.env['PUMICE_TEST_DATABASE'] ? false : 'needs PostgreSQL: run under scripts/with-postgres.sh';
const dir = mkdtempSync(join(tmpdir(), 'pumice-dialect-'));
const engines: Db[] = [];
let pgUrl = '';
const now = '2026-01-02T03:04:05.000Z';

before(async () => {
  if (skip) return;
  pgUrl = (await testDatabaseUrl(dir))!;
  engines.push(new Db(join(dir, 'pumice.db')), new Db(pgUrl));
  for (const db of engines) {
    db.run("INSERT INTO images (id, name, owner, status, visibility, tags, properties, created_at, updated_at) VALUES ('i1', 'one', 'p', 'active', 'public', ?, ?, ?, ?)", '["gold","x y"]', '{"os_distro":"debian","hw \\"q\\"":"1"}', now, now);
    db.run("INSERT INTO images (id, name, owner, status, visibility, tags, properties, created_at, updated_at) VALUES ('i2', 'two', 'p', 'active', 'public', '[]', '{}', ?, ?)", now, now);
    for (const [id, metadata] of [['v1', '{"k":"v","n":"1"}'], ['v2', '{"k":"w"}']] as const) {
      db.run("INSERT INTO volumes (id, project_id, user_id, size_gib, status, availability_zone, metadata, created_at) VALUES (?, 'p', 'u', 1, 'available', 'nova', ?, ?)", id, metadata, now);
    }
    db.run("INSERT INTO services (binary, host, zone, created_at) VALUES ('cinder-volume', 'h@b', 'nova', ?)", now);
  }
});

after(() => {
  for (const db of engines) db.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Runs `fn` on both engines and asserts the same result. */
function same(fn: (db: Db) => unknown): unknown {
  const [sqlite, pg] = engines.map(fn);
  assert.deepEqual(pg, sqlite);
  return sqlite;
}

test('json_each over a tags array and an object, json_extract of a quoted property', { skip }, () => {
  assert.deepEqual(same((db) => db.all('SELECT id FROM images WHERE EXISTS (SELECT 1 FROM json_each(images.tags) WHERE json_each.value = ?) ORDER BY id', 'x y')), [{ id: 'i1' }]);
  assert.deepEqual(
    same((db) => db.all('SELECT id FROM volumes WHERE EXISTS (SELECT 1 FROM json_each(volumes.metadata) m WHERE m.key = ? AND m.value = ?) ORDER BY id', 'k', 'w')),
    [{ id: 'v2' }],
  );
  assert.deepEqual(
    same((db) => db.all('SELECT DISTINCT m.key AS key, CAST(m.value AS TEXT) AS value FROM volumes, json_each(volumes.metadata) m ORDER BY m.key, m.value')),
    [{ key: 'k', value: 'v' }, { key: 'k', value: 'w' }, { key: 'n', value: '1' }],
  );
  assert.deepEqual(same((db) => db.all('SELECT id FROM images WHERE json_extract(images.properties, ?) = ?', '$."os_distro"', 'debian')), [{ id: 'i1' }]);
});

test('INSERT OR IGNORE, IS ?, last_insert_rowid(), binary, counts and sums as numbers, changes', { skip }, () => {
  same((db) => db.run("INSERT OR IGNORE INTO metadef_resource_types (name, created_at, updated_at) VALUES ('OS::Glance::Image', ?, ?)", now, now).changes);
  assert.equal(same((db) => db.run("INSERT OR IGNORE INTO metadef_resource_types (name, created_at, updated_at) VALUES ('OS::Glance::Image', ?, ?)", now, now).changes), 0);
  same((db) => db.run("INSERT INTO tasks (kind, resource_id, queue, state, created_at, updated_at) VALUES ('k', 'v1', 'q', 'queued', ?, ?)", now, now).changes);
  assert.equal(same((db) => db.get<{ id: number }>('SELECT last_insert_rowid() AS id')!.id), 1);
  assert.equal(same((db) => db.run("UPDATE tasks SET state = 'failed' WHERE id = 1 AND owner IS ?", null).changes), 1);
  assert.equal(same((db) => db.run("UPDATE tasks SET state = 'failed' WHERE id = 1 AND owner IS ?", 'someone').changes), 0);
  assert.deepEqual(same((db) => db.all('SELECT binary, host FROM services WHERE binary = ?', 'cinder-volume')), [{ binary: 'cinder-volume', host: 'h@b' }]);
  assert.deepEqual(same((db) => db.get('SELECT COUNT(*) AS n, COALESCE(SUM(size_gib), 0) AS gib, 1 = 1 AS yes FROM volumes')), { n: 2, gib: 2, yes: 1 });
  assert.deepEqual(same((db) => db.get("SELECT COUNT(*) AS volumeCount FROM volumes WHERE host LIKE ? ESCAPE '\\'", '%')), { volumeCount: 0 });
});

test('a unique conflict caught inside a transaction undoes only that statement; a nested failure only its savepoint', { skip }, () => {
  same((db) =>
    db.transaction(() => {
      db.run("INSERT INTO domains (id, name) VALUES ('d1', 'one')");
      try {
        db.run("INSERT INTO domains (id, name) VALUES ('d1', 'again')");
      } catch (error) {
        assert.equal((error as { code: string }).code, 'SQLITE_CONSTRAINT_PRIMARYKEY');
      }
      assert.throws(() => db.transaction(() => {
        db.run("INSERT INTO domains (id, name) VALUES ('d2', 'two')");
        throw new Error('undo d2');
      }), /undo d2/);
      db.run("INSERT INTO domains (id, name) VALUES ('d3', 'three')");
    }),
  );
  assert.deepEqual(same((db) => db.all("SELECT id, name FROM domains WHERE id LIKE 'd_' ORDER BY id")), [{ id: 'd1', name: 'one' }, { id: 'd3', name: 'three' }]);
  // Another connection sees the rows: the transaction was committed, its connection is not left inside one.
  const other = new Db(pgUrl);
  try {
    assert.deepEqual(other.all("SELECT id FROM domains WHERE id LIKE 'd_' ORDER BY id"), [{ id: 'd1' }, { id: 'd3' }]);
  } finally {
    other.close();
  }
});
