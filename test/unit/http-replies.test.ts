/**
 * Replies of one event-loop turn leave together (src/http/server.ts): the
 * events they recorded are written first, with one write(2) for all of them,
 * and every reply still finds its request's events in the file when it
 * arrives (tests and operators read the file after the reply).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs, { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { syncBuiltinESMExports } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { emitEvent, eventLogPath, openEventLog } from '../../src/events.ts';
import { Router, type AuthContext } from '../../src/http/router.ts';
import { createHttpServer } from '../../src/http/server.ts';

/** The HTTP layer alone on a loopback port, serving `router` under /t with every token accepted. */
async function listen(router: Router) {
  const server = createHttpServer({
    apps: [{ prefix: '/t', router, faultStyle: 'openstack' }],
    tokens: { validateToken: () => ({}) as unknown as AuthContext },
    requestBodyBytesMax: 1 << 20,
    publicEndpoint: null,
    log: () => undefined,
    debug: false,
    rootDocument: () => ({}),
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return { server, port: (server.address() as AddressInfo).port };
}

test('replies of one turn: their events are written once, before any of them leaves', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pumice-replies-'));
  const closeEvents = openEventLog(dir);
  const clients = 16;
  // Every handler waits until all requests arrived, so their replies are made in one turn.
  let arrived = 0;
  let release!: () => void;
  const allArrived = new Promise<void>((resolve) => (release = resolve));
  const router = new Router();
  router.get('/hit/:n', async (ctx) => {
    emitEvent('unit.hit', { n: Number(ctx.params['n']) });
    if (++arrived === clients) release();
    await allArrived;
    return { status: 200, body: { n: Number(ctx.params['n']) } };
  }, { public: true });
  const { server, port } = await listen(router);
  const agent = new Agent({ keepAlive: true, maxSockets: clients });
  const path = eventLogPath(dir);
  let eventWrites = 0;
  const writeSync = fs.writeSync;
  fs.writeSync = ((...args: Parameters<typeof fs.writeSync>) => {
    eventWrites++;
    return writeSync(...args);
  }) as typeof fs.writeSync;
  syncBuiltinESMExports();
  try {
    const missing: string[] = [];
    await Promise.all(Array.from({ length: clients }, (_, n) => new Promise<void>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: `/t/hit/${n}`, agent }, (res) => {
        // Read at once, on the reply's arrival: the request's events must be there already.
        const events = readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
        if (!events.some((e) => e['event'] === 'unit.hit' && e['n'] === n)) missing.push(`unit.hit ${n}`);
        if (!events.some((e) => e['event'] === 'http.request' && e['path'] === `/t/hit/${n}` && e['status'] === 200)) missing.push(`http.request ${n}`);
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', reject);
      req.end();
    })));
    assert.deepEqual(missing, [], 'events not in the file when their reply arrived');
    assert.ok(eventWrites >= 1 && eventWrites <= 2, `${eventWrites} writes of the events file for ${clients} replies of one turn`);
  } finally {
    fs.writeSync = writeSync;
    syncBuiltinESMExports();
    agent.destroy();
    server.close();
    closeEvents();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a queued reply whose header Node refuses is answered 500, not left hanging; the others of its turn still leave', async () => {
  const router = new Router();
  router.get('/bad', () => ({ status: 200, body: {}, headers: { 'x-bad': 'line\nbreak' } }), { public: true });
  router.get('/good', () => ({ status: 200, body: { ok: true } }), { public: true });
  const { server, port } = await listen(router);
  try {
    const get = (path: string) => fetch(`http://127.0.0.1:${port}/t${path}`, { signal: AbortSignal.timeout(10_000) });
    const [bad, good] = await Promise.all([get('/bad'), get('/good')]);
    assert.equal(bad.status, 500);
    assert.match(await bad.text(), /internal error/);
    assert.equal(good.status, 200);
    assert.deepEqual(await good.json(), { ok: true });
  } finally {
    server.close();
  }
});
