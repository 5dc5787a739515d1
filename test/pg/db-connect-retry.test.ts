/**
 * A service's PostgreSQL at start (run under scripts/with-postgres.sh): a server that is not
 * reachable yet is tried again every [database] retry_interval seconds, up to max_retries, as
 * oslo.db does — a host whose network or database comes up after it (found when a compute host
 * restarted the moment its link came back, test/multihost/cluster.test.ts) joins once it can.
 * A refused login fails at once: waiting does not mend a wrong password.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openServiceDatabase } from '../../src/db/db.ts';
import { PgConnectError } from '../../src/db/pg-sync.ts';
import { testDatabaseUrl } from '../helpers/pumice.ts';

const server = process.env['PUMICE_TEST_DATABASE'];
const skip = server ? false : 'needs PostgreSQL: run under scripts/with-postgres.sh';

/** A loopback port nothing listens on (bound, then closed). */
async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const { port } = probe.address() as AddressInfo;
  await new Promise((r) => probe.close(r));
  return port;
}

/** argv: listen port, target host, target port. */
const proxyScript = `
const net = require('node:net');
const [port, host, targetPort] = process.argv.slice(1);
net.createServer((client) => {
  const upstream = net.connect(Number(targetPort), host);
  client.pipe(upstream).pipe(client);
  client.on('error', () => upstream.destroy());
  upstream.on('error', () => client.destroy());
}).listen(Number(port), '127.0.0.1');
`;

function withPort(url: string, port: number): string {
  const u = new URL(url);
  u.port = String(port);
  return u.toString();
}

test('a refused connection is tried max_retries times, retry_interval apart, each try logged; then the error names the server and the fix', { skip }, async () => {
  const url = withPort(server!, await freePort());
  const lines: string[] = [];
  const started = Date.now();
  await assert.rejects(openServiceDatabase(url, { maxRetries: 2, retryIntervalS: 1, log: (l) => lines.push(l) }), (error: Error) => {
    assert.ok(error instanceof PgConnectError && error.transient, String(error));
    assert.match(error.message, /cannot connect to PostgreSQL at postgresql:\/\/pumice:\*\*\*@127\.0\.0\.1:\d+\/postgres: connect ECONNREFUSED .*Check \[database\] connection/);
    return true;
  });
  assert.ok(Date.now() - started >= 2000, `two intervals of 1 s: ${Date.now() - started} ms`);
  assert.equal(lines.length, 2, lines.join('\n'));
  assert.match(lines[0]!, /^WARNING: cannot connect .*ECONNREFUSED.*; trying again in 1 s \(retry 1 of 2, \[database\] max_retries and retry_interval\)$/);
  assert.doesNotMatch(lines.join('\n'), /pumice:(?!\*\*\*)[^@]*@/, 'no password in the log');
});

test('a wrong password fails at once, without a retry', { skip }, async () => {
  const u = new URL(server!);
  u.password = 'not-the-password';
  const lines: string[] = [];
  await assert.rejects(openServiceDatabase(u.toString(), { maxRetries: 5, retryIntervalS: 10, log: (l) => lines.push(l) }), (error: Error) => {
    assert.ok(error instanceof PgConnectError && !error.transient, String(error));
    assert.match(error.message, /password authentication failed/);
    return true;
  });
  assert.deepEqual(lines, []);
});

test('a server that comes up between two tries is used: the service starts on it', { skip }, async () => {
  const port = await freePort();
  const target = new URL(server!);
  const scratch = mkdtempSync(join(tmpdir(), 'pumice-pgretry-'));
  // A database of its own: the service migrates what it opens.
  const database = (await testDatabaseUrl(scratch))!;
  let proxy: ChildProcess | null = null;
  const lines: string[] = [];
  try {
    const opened = openServiceDatabase(withPort(database, port), {
      maxRetries: 5,
      retryIntervalS: 1,
      log: (line) => {
        lines.push(line);
        // After the first refusal the "server" appears on the port: a proxy to the real one, in a process
        // of its own (this thread blocks in the synchronous connect).
        proxy ??= spawn(process.execPath, ['-e', proxyScript, String(port), target.hostname, target.port], { stdio: 'ignore' });
      },
    });
    const db = await opened;
    try {
      assert.equal(db.get<{ one: number }>('SELECT 1 AS one')!.one, 1);
    } finally {
      db.close();
    }
    assert.ok(lines.length >= 1 && lines.length < 5, lines.join('\n'));
  } finally {
    (proxy as ChildProcess | null)?.kill();
    rmSync(scratch, { recursive: true, force: true });
  }
});
