/**
 * Identity throughput: password token issue (POST /identity/v3/auth/tokens)
 * with 1 and 8 concurrent clients, token validation (GET
 * /identity/v3/auth/tokens with X-Subject-Token, catalog included as
 * keystonemiddleware asks by default) and the cheapest authenticated Block
 * Storage call (GET /volume/v3/{project}/volumes?limit=1), each for a fixed
 * duration with 1 and 8 clients. Prints requests/s, latency p50/p99, the
 * server's CPU and its peak resident memory per phase. Last, one client
 * cycling volumes (create→available→delete→gone) for up to 5 s alone and
 * then while 8 clients issue password tokens: scrypt and the local
 * backend's file operations share libuv's thread pool.
 *
 *   node --import tsx bench/tokens.ts [--duration 10] [--concurrency 1,8]
 */
import {
  arg, argString, cleanupOnSignal, cpuMeter, latencySummary, login, now, passwordAuthBody, request, rssMiB, sampleRss, sleep, startServer, unlimitedQuota,
  type Response, type Server,
} from './lib.ts';

const durationS = arg('duration', 10);
const concurrencies = argString('concurrency', '1,8').split(',').map(Number);

let server: Server | undefined;
cleanupOnSignal(() => (server ? [server] : []));

async function phase(name: string, clients: number, serverPid: number, call: (i: number) => Promise<Response>, expect: number): Promise<Response[]> {
  const stopAt = now() + durationS * 1000;
  const latencies: number[] = [];
  const errors: string[] = [];
  const kept: Response[] = [];
  const rss = sampleRss(serverPid, 100);
  const meter = cpuMeter(serverPid);
  let n = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (now() < stopAt) {
        const t0 = now();
        const r = await call(n++);
        const t = now() - t0;
        if (r.status === expect) {
          latencies.push(t);
          if (kept.length < 1000) kept.push(r);
        } else errors.push(`${r.status} ${r.text.slice(0, 200)}`);
      }
    }),
  );
  const cpu = meter.stop();
  const mem = rss.stop();
  const p = `${name}_c${clients}`;
  console.log(`${p}_per_s: ${(latencies.length / cpu.elapsedS).toFixed(1)} (${latencies.length} in ${cpu.elapsedS.toFixed(2)} s, errors ${errors.length}${errors.length ? `, first: ${errors[0]}` : ''})`);
  console.log(`${p}_latency: ${latencySummary(latencies)}`);
  console.log(`${p}_cpu: ${cpu.text}; server ${((cpu.serverS / Math.max(1, latencies.length)) * 1000).toFixed(2)} ms CPU per request`);
  console.log(`${p}_rss_peak: ${mem.peakMiB.toFixed(1)} MiB`);
  return kept;
}

async function main(): Promise<void> {
  server = await startServer();
  try {
    const admin = await login(server.url);
    console.log(`# tokens: ${durationS} s per phase; server pid ${server.pid}; rss idle ${rssMiB(server.pid).toFixed(1)} MiB`);
    const issueUrl = `${server.url}/identity/v3/auth/tokens`;
    const body = passwordAuthBody();
    // Warm-up, not counted.
    for (let i = 0; i < 5; i++) await request(issueUrl, 'POST', {}, body);

    const tokens: string[] = [];
    for (const c of concurrencies) {
      const issued = await phase('token_issue_password', c, server.pid, () => request(issueUrl, 'POST', {}, body), 201);
      for (const r of issued) tokens.push(String(r.headers['x-subject-token']));
    }
    console.log(`# validating ${tokens.length} distinct tokens round-robin (the server caches validations)`);
    for (const c of concurrencies) {
      await phase('token_validate', c, server.pid, (i) => request(issueUrl, 'GET', { 'X-Auth-Token': admin.token, 'X-Subject-Token': tokens[i % tokens.length]! }), 200);
    }
    for (const c of concurrencies) {
      await phase('token_validate_nocatalog', c, server.pid, (i) => request(`${issueUrl}?nocatalog`, 'GET', { 'X-Auth-Token': admin.token, 'X-Subject-Token': tokens[i % tokens.length]! }), 200);
    }
    for (const c of concurrencies) {
      await phase('volumes_list_limit_1', c, server.pid, (i) => request(`${admin.volumeUrl}/volumes?limit=1`, 'GET', { 'X-Auth-Token': tokens[i % tokens.length]! }), 200);
    }

    // Interference: password hashing (scrypt) and the local backend's file operations share libuv's
    // thread pool. One client cycles volumes alone, then while 8 clients issue password tokens.
    await unlimitedQuota(admin);
    const mixedS = Math.min(durationS, 5);
    const cycles = async (label: string) => {
      const stopAt = now() + mixedS * 1000;
      const createMs: number[] = [];
      const wait = async (id: string, gone: boolean) => {
        for (let a = 0; ; a++) {
          if (a) await sleep(Math.min(16, 2 ** (a - 1)));
          const r = await admin.call('GET', `${admin.volumeUrl}/volumes/${id}`);
          if (gone ? r.status === 404 : r.status === 200 && r.json<{ volume: { status: string } }>().volume.status === 'available') return;
        }
      };
      while (now() < stopAt) {
        const t0 = now();
        const r = await admin.call('POST', `${admin.volumeUrl}/volumes`, { volume: { size: 1 } });
        const id = r.json<{ volume: { id: string } }>().volume.id;
        await wait(id, false);
        createMs.push(now() - t0);
        await admin.call('DELETE', `${admin.volumeUrl}/volumes/${id}`);
        await wait(id, true);
      }
      console.log(`volume_cycles_c1_${label}: ${(createMs.length / mixedS).toFixed(1)} cycles/s, create_to_available ${latencySummary(createMs)}`);
    };
    await cycles('alone');
    let issued = 0;
    const stopIssuing = now() + mixedS * 1000;
    const issuers = Array.from({ length: 8 }, async () => {
      while (now() < stopIssuing) if ((await request(issueUrl, 'POST', {}, body)).status === 201) issued++;
    });
    await cycles('while_8_clients_issue_password_tokens');
    await Promise.all(issuers);
    console.log(`token_issue_password_c8_during_volume_cycles_per_s: ${(issued / mixedS).toFixed(1)}`);
  } finally {
    await server.stop();
    server.cleanup();
  }
}

await main();
