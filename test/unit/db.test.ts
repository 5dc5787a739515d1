/**
 * Db.transaction on SQLite: BEGIN IMMEDIATE … COMMIT, savepoints when nested
 * (an inner failure undoes only the inner writes, even when the outer code
 * catches it and goes on), rollback on a throw, and no promise returned.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Db } from '../../src/db/db.ts';

function withDb(fn: (db: Db, path: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'pumice-db-'));
  const path = join(dir, 'pumice.db');
  const db = new Db(path);
  try {
    db.sqlite.exec('CREATE TABLE t (v TEXT NOT NULL)');
    fn(db, path);
  } finally {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const values = (db: Db) => db.all<{ v: string }>('SELECT v FROM t ORDER BY rowid').map((r) => r.v);

test('a transaction commits, or rolls back everything on a throw; a nested one is a savepoint', () => {
  withDb((db) => {
    assert.equal(db.transaction(() => (db.run("INSERT INTO t VALUES ('a')"), 42)), 42);
    assert.throws(() => db.transaction(() => {
      db.run("INSERT INTO t VALUES ('b')");
      throw new Error('boom');
    }), /boom/);
    assert.deepEqual(values(db), ['a']);
    assert.equal(db.inTransaction, false);

    db.transaction(() => {
      db.run("INSERT INTO t VALUES ('outer')");
      assert.throws(() => db.transaction(() => {
        db.run("INSERT INTO t VALUES ('inner')");
        throw new Error('inner failed');
      }), /inner failed/);
      db.transaction(() => db.run("INSERT INTO t VALUES ('inner kept')"));
    });
    assert.deepEqual(values(db), ['a', 'outer', 'inner kept']);

    // An outer rollback takes the released savepoints with it.
    assert.throws(() => db.transaction(() => {
      db.transaction(() => db.run("INSERT INTO t VALUES ('gone')"));
      throw new Error('outer failed');
    }), /outer failed/);
    assert.deepEqual(values(db), ['a', 'outer', 'inner kept']);

    assert.throws(() => db.transaction(() => {
      db.run("INSERT INTO t VALUES ('async')");
      return Promise.resolve();
    }), /cannot return a promise/);
    assert.deepEqual(values(db), ['a', 'outer', 'inner kept']);
    assert.equal(db.inTransaction, false);
  });
});

test('a transaction takes the write lock when it begins (IMMEDIATE), not at its first write', () => {
  withDb((db, path) => {
    const other = new Database(path, { timeout: 0 });
    try {
      db.transaction(() => {
        // Nothing written yet: a deferred BEGIN would let the other connection write here.
        assert.throws(() => other.prepare("INSERT INTO t VALUES ('other')").run(), /database is locked|SQLITE_BUSY/);
      });
      other.prepare("INSERT INTO t VALUES ('other')").run();
    } finally {
      other.close();
    }
    assert.deepEqual(values(db), ['other']);
  });
});
