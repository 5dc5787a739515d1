/**
 * The cost of one Db call on each engine, from the caller's side: a primary-key
 * SELECT, an UPDATE, and a transaction of one UPDATE, each repeated N times on a
 * small table. On PostgreSQL each call is a round trip through the worker thread
 * (Atomics.wait on the caller) to the server; on SQLite it is a library call.
 *
 *   scripts/with-postgres.sh sh -c 'node --import tsx bench/db-query-cost.ts --database "$PUMICE_TEST_DATABASE"'
 *   node --import tsx bench/db-query-cost.ts            (SQLite only)
 *   [--count 2000]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Db } from '../src/db/db.ts';
import { arg, argString } from './lib.ts';

const count = arg('count', 2000);
const databaseUrl = argString('database', '');

function measure(label: string, fn: (i: number) => void): void {
  for (let i = 0; i < Math.min(200, count); i++) fn(i); // warm-up: statements prepared, JIT
  const started = process.hrtime.bigint();
  for (let i = 0; i < count; i++) fn(i);
  const perCallUs = Number(process.hrtime.bigint() - started) / count / 1000;
  console.log(`${label}: ${perCallUs.toFixed(1)} µs per call (${count} calls)`);
}

function run(engine: string, db: Db): void {
  db.run("INSERT INTO domains (id, name) VALUES ('bench-d', 'bench') ON CONFLICT DO NOTHING");
  measure(`${engine}_get_by_primary_key`, () => db.get('SELECT * FROM domains WHERE id = ?', 'bench-d'));
  measure(`${engine}_update`, (i) => db.run('UPDATE domains SET description = ? WHERE id = ?', String(i), 'bench-d'));
  measure(`${engine}_transaction_of_one_update`, (i) => db.transaction(() => db.run('UPDATE domains SET description = ? WHERE id = ?', String(i), 'bench-d')));
}

const dir = mkdtempSync(join(tmpdir(), 'pumice-bench-db-'));
try {
  const sqlite = new Db(join(dir, 'pumice.db'));
  run('sqlite', sqlite);
  sqlite.close();
  if (databaseUrl) {
    const pg = new Db(databaseUrl);
    run('postgresql', pg);
    pg.close();
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
