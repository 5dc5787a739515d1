/**
 * SQLite group commit (Db.enableGroupCommit): deferred transactions of one event-loop turn share
 * one COMMIT at the turn's end, before the turn's replies; anything else that writes commits the
 * group at once; a deferred transaction that throws undoes only itself.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Db } from '../../src/db/db.ts';
import { atTurnEndFirst } from '../../src/util/turn-end.ts';

function open(options: { group: boolean }) {
  const path = join(mkdtempSync(join(tmpdir(), 'pumice-group-commit-')), 'pumice.db');
  const db = new Db(path);
  db.run('CREATE TABLE t (v TEXT NOT NULL UNIQUE)');
  const failures: Error[] = [];
  if (options.group) db.enableGroupCommit((error) => failures.push(error));
  // Another connection sees only what was committed.
  const other = new Db(path, { migrate: false });
  const committed = () => other.all<{ v: string }>('SELECT v FROM t ORDER BY v').map((r) => r.v);
  const turnEnd = () => new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve)));
  return { db, other, committed, failures, turnEnd };
}

test('deferred transactions of one turn are kept, committed together at its end, before its replies', async () => {
  const { db, other, committed, turnEnd } = open({ group: true });
  const order: string[] = [];
  db.transaction(() => {
    db.run("INSERT INTO t (v) VALUES ('a')");
    db.afterCommit(() => order.push(`after-commit sees ${committed().join(',')}`));
  }, { deferCommit: true });
  db.transaction(() => db.run("INSERT INTO t (v) VALUES ('b')"), { deferCommit: true });
  atTurnEndFirst(() => order.push(`reply sees ${committed().join(',')}`));
  assert.deepEqual(db.all<{ v: string }>('SELECT v FROM t ORDER BY v').map((r) => r.v), ['a', 'b'], 'this connection reads its own writes');
  assert.deepEqual(committed(), [], 'not committed before the turn ends');
  assert.deepEqual(order, []);
  await turnEnd();
  assert.deepEqual(committed(), ['a', 'b']);
  assert.deepEqual(order, ['after-commit sees a,b', 'reply sees a,b']);
  db.close();
  other.close();
});

test('a write outside a transaction, or a transaction that does not defer, commits the open group at once', () => {
  const { db, other, committed } = open({ group: true });
  db.transaction(() => db.run("INSERT INTO t (v) VALUES ('a')"), { deferCommit: true });
  assert.deepEqual(committed(), []);
  db.get('SELECT COUNT(*) AS n FROM t');
  assert.deepEqual(committed(), [], 'a read does not commit');
  db.run("INSERT INTO t (v) VALUES ('b')");
  assert.deepEqual(committed(), ['a', 'b'], 'a write outside a transaction commits the group with it');
  db.transaction(() => db.run("INSERT INTO t (v) VALUES ('c')"), { deferCommit: true });
  db.transaction(() => db.run("INSERT INTO t (v) VALUES ('d')"));
  assert.deepEqual(committed(), ['a', 'b', 'c', 'd'], 'a transaction that does not defer commits the group with it');
  db.transaction(() => db.run("INSERT INTO t (v) VALUES ('e')"), { deferCommit: true });
  assert.equal(db.inTransaction, false, 'only a group is open: no caller is inside a transaction');
  db.close();
  assert.deepEqual(committed(), ['a', 'b', 'c', 'd', 'e'], 'close commits the group');
  other.close();
});

test('a deferred transaction that throws undoes only itself: the group keeps the others', async () => {
  const { db, other, committed, turnEnd } = open({ group: true });
  const rolledBack: string[] = [];
  db.transaction(() => db.run("INSERT INTO t (v) VALUES ('a')"), { deferCommit: true });
  assert.throws(() =>
    db.transaction(() => {
      db.run("INSERT INTO t (v) VALUES ('b')");
      db.afterCommit(() => rolledBack.push('b committed?'), () => rolledBack.push('b undone'));
      db.run("INSERT INTO t (v) VALUES ('a')"); // UNIQUE: fails
    }, { deferCommit: true }),
  /UNIQUE/);
  db.transaction(() => db.run("INSERT INTO t (v) VALUES ('c')"), { deferCommit: true });
  await turnEnd();
  assert.deepEqual(committed(), ['a', 'c']);
  assert.deepEqual(rolledBack, ['b undone']);
  db.close();
  other.close();
});

test('a COMMIT that fails is reported, and the group\'s afterCommit work is dropped', async () => {
  const { db, other, committed, failures, turnEnd } = open({ group: true });
  const seen: string[] = [];
  db.transaction(() => {
    db.run("INSERT INTO t (v) VALUES ('a')");
    db.afterCommit(() => seen.push('committed'), () => seen.push('undone'));
  }, { deferCommit: true });
  // Something ends the transaction under the group (as a failing disk's error makes SQLite do).
  db.sqlite.exec('ROLLBACK');
  await turnEnd();
  assert.equal(failures.length, 1);
  assert.match(failures[0]!.message, /no transaction is active/);
  assert.deepEqual(seen, ['undone']);
  assert.deepEqual(committed(), []);
  db.close();
  other.close();
});

test('without enableGroupCommit, deferCommit commits at once', () => {
  const { db, other, committed } = open({ group: false });
  db.transaction(() => db.run("INSERT INTO t (v) VALUES ('a')"), { deferCommit: true });
  assert.deepEqual(committed(), ['a']);
  db.close();
  other.close();
});
