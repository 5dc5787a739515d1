// The PostgreSQL side of the synchronous Db (src/db/pg-sync.ts): this worker owns one
// connection and answers one request at a time. The caller blocks in Atomics.wait until
// `flag` becomes 1, then takes the reply with receiveMessageOnPort. Plain JavaScript so
// the worker needs no TypeScript loader.
import { workerData } from 'node:worker_threads';
import pg from 'pg';

const { port, notices, flag, connection, statementTimeoutMs, preparedMax } = workerData;

// Values as better-sqlite3 gives them: 64-bit integers (ids, millisecond times, byte
// counts, all below 2^53) and SUM()s as numbers, booleans as 0/1.
pg.types.setTypeParser(20, (text) => Number(text));
pg.types.setTypeParser(1700, (text) => Number(text));
pg.types.setTypeParser(16, (text) => (text === 't' ? 1 : 0));

// A host cut off inside a transaction would hold the write lock (pg_advisory_xact_lock) until TCP gave
// up, stalling every other host's writes: the server ends such a transaction after the statement timeout.
const client = new pg.Client({
  connectionString: connection,
  statement_timeout: statementTimeoutMs,
  idle_in_transaction_session_timeout: statementTimeoutMs,
  application_name: 'pumice',
});
// A connection lost mid-session is reported by the next request, not by a crash of the worker.
client.on('error', () => {});
// NOTIFYs on the channels this connection LISTENs to go to the calling thread's event loop, which
// handles them between its requests (a notice is a hint: the caller's poll still finds the work).
// A NOTIFY of this connection's own transactions is not passed on: this process knows what it queued.
client.on('notification', (message) => {
  if (message.processId !== client.processID) notices.postMessage({ channel: message.channel, payload: message.payload ?? '' });
});
/** Statement names by SQL text: each prepared once per connection, at most preparedMax of them. */
const prepared = new Map();

async function query(sql, params) {
  let name = prepared.get(sql);
  if (name === undefined && prepared.size < preparedMax) {
    name = `p${prepared.size}`;
    prepared.set(sql, name);
  }
  const result = await client.query({ name, text: sql, values: params });
  return { rows: result.rows, rowCount: result.rowCount ?? 0 };
}

async function handle(request) {
  switch (request.kind) {
    case 'connect':
      await client.connect();
      return null;
    case 'exec':
      // Simple protocol: several statements, no parameters (migrations, BEGIN, COMMIT).
      await client.query(request.sql);
      return null;
    case 'query':
      if (!request.guarded) return await query(request.sql, request.params);
      // Inside a transaction a failed statement must undo only itself, as in SQLite,
      // so the caller may catch a constraint error and go on.
      await client.query('SAVEPOINT pumice_statement');
      try {
        const result = await query(request.sql, request.params);
        await client.query('RELEASE SAVEPOINT pumice_statement');
        return result;
      } catch (error) {
        await client.query('ROLLBACK TO SAVEPOINT pumice_statement; RELEASE SAVEPOINT pumice_statement');
        throw error;
      }
    case 'listen':
      // An identifier, not a parameter: the caller passes only its own fixed channel names.
      await client.query(`LISTEN "${request.channel.replaceAll('"', '""')}"`);
      return null;
    case 'close':
      await client.end();
      return null;
    default:
      throw new Error(`unknown request ${request.kind}`);
  }
}

port.on('message', async (request) => {
  let reply;
  try {
    reply = { id: request.id, result: await handle(request) };
  } catch (error) {
    const e = error ?? {};
    reply = { id: request.id, error: { message: String(e.message ?? e), code: e.code, constraint: e.constraint, detail: e.detail } };
  }
  port.postMessage(reply);
  Atomics.store(flag, 0, 1);
  Atomics.notify(flag, 0);
});
