/**
 * The synchronous PostgreSQL connection (run under scripts/with-postgres.sh): a call that gave up
 * waiting (PG_TIMEOUT: a host cut off from the database, a stall) has its answer come later, and the
 * next call must not take that answer for its own — before the replies carried their request's id it
 * did, and a query got another query's rows.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PgError, PgSyncConnection } from '../../src/db/pg-sync.ts';

const server = process.env['PUMICE_TEST_DATABASE'];

test("a late reply of a timed-out call is not the next call's answer", { skip: server ? false : 'needs PostgreSQL: run under scripts/with-postgres.sh' }, () => {
  const connection = new PgSyncConnection(server!, { replyTimeoutMs: 1000 });
  try {
    assert.throws(() => connection.query('SELECT pg_sleep(1.5) AS slept, 1 AS which', [], false), (error: Error) => error instanceof PgError && error.code === 'PG_TIMEOUT');
    // The sleep's reply arrives while this call waits (the worker runs the statements in order).
    const started = Date.now();
    const { rows } = connection.query('SELECT 2 AS which', [], false);
    assert.deepEqual(rows, [{ which: 2 }], 'the second call got its own row');
    assert.ok(Date.now() - started >= 300, 'it waited behind the sleep');
    assert.deepEqual(connection.query('SELECT 3 AS which', [], false).rows, [{ which: 3 }]);
  } finally {
    connection.close();
  }
});
