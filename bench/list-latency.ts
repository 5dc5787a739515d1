/**
 * List latency with 10,000 volumes in one project.
 *
 *   node --import tsx bench/list-latency.ts [--volumes 10000] [--requests 200] [--via-api] [--cpu-prof DIR]
 *
 * The server runs with [local] max_over_subscription_ratio = 100000 so that
 * 10,000 thin 1 GiB volumes pass the scheduler's capacity filter on a small disk.
 *
 * Filling: by default the rows are inserted DIRECTLY into DATA_DIR/pumice.db
 * of the stopped server with better-sqlite3, each a copy of a volume the API
 * created (same project, user, type, backend, host, zone), status available,
 * with a distinct created_at, plus its sparse file in the local backend's
 * directory; then the server is started again on that data directory.
 * --via-api instead creates them with POST /volumes (32 at a time) and waits
 * until all are available.
 *
 * Then: GET /volumes/detail?limit=1000 --requests times (sequential),
 * GET /volumes?limit=1000 (summary) 50 times, a paging walk through all
 * volumes with markers (limit=1000, following volumes_links), the cost of
 * one POST /volumes with 10,000 volumes present compared with an empty
 * project, and the server's VmRSS.
 */
import Database from 'better-sqlite3';
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, ftruncateSync, openSync } from 'node:fs';
import { join } from 'node:path';
import {
  arg, argString, cleanupOnSignal, cpuMeter, flag, latencySummary, login, now, rssMiB, sampleRss, sleep, startServer, unlimitedQuota,
  type Server, type Session,
} from './lib.ts';

const volumeCount = arg('volumes', 10_000);
const requests = arg('requests', 200);
const viaApi = flag('via-api');
const profileDir = argString('cpu-prof', '');
/** 10,000 thin 1 GiB volumes are more than the default over-subscription (20 x the disk) allows on a small disk. */
const config = '[local]\nvolume_driver = local\nmax_over_subscription_ratio = 100000\n';
const serverOptions = (dataDir?: string) => ({ config, dataDir, nodeFlags: profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [] });

let server: Server | undefined;
cleanupOnSignal(() => (server ? [server] : []));

async function waitAvailable(s: Session, id: string): Promise<void> {
  for (let i = 0; i < 5000; i++) {
    const r = await s.call('GET', `${s.volumeUrl}/volumes/${id}`);
    const status = r.status === 200 ? r.json<{ volume: { status: string; status_reason?: string } }>().volume.status : `HTTP ${r.status}`;
    if (status === 'available') return;
    if (status.startsWith('error') || status.startsWith('HTTP')) throw new Error(`volume ${id}: ${status} ${r.text.slice(0, 300)}`);
    await sleep(2);
  }
  throw new Error(`volume ${id} not available`);
}

/** Time of POST /volumes (until its 202) for `n` creates, each deleted again afterwards. */
async function postLatency(s: Session, n: number): Promise<number[]> {
  const times: number[] = [];
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = now();
    const r = await s.call('POST', `${s.volumeUrl}/volumes`, { volume: { size: 1, name: `probe-${i}` } });
    times.push(now() - t0);
    if (r.status !== 202) throw new Error(`create: ${r.status} ${r.text}`);
    ids.push(r.json<{ volume: { id: string } }>().volume.id);
  }
  for (const id of ids) await waitAvailable(s, id);
  for (const id of ids) await s.call('DELETE', `${s.volumeUrl}/volumes/${id}`);
  for (const id of ids) {
    for (let i = 0; i < 5000; i++) {
      if ((await s.call('GET', `${s.volumeUrl}/volumes/${id}`)).status === 404) break;
      await sleep(2);
    }
  }
  return times;
}

async function fillViaApi(s: Session, n: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      for (let i = next++; i < n; i = next++) {
        const r = await s.call('POST', `${s.volumeUrl}/volumes`, { volume: { size: 1, name: `bulk-${i}` } });
        if (r.status !== 202) throw new Error(`create: ${r.status} ${r.text}`);
      }
    }),
  );
  for (;;) {
    const r = await s.call('GET', `${s.volumeUrl}/volumes/detail?status=creating&limit=1`);
    if (r.json<{ volumes: unknown[] }>().volumes.length === 0) return;
    await sleep(200);
  }
}

function fillDirect(dataDir: string, templateId: string, n: number): void {
  const db = new Database(join(dataDir, 'pumice.db'));
  db.pragma('journal_mode = WAL');
  const template = db.prepare('SELECT * FROM volumes WHERE id = ?').get(templateId) as Record<string, unknown>;
  const columns = Object.keys(template);
  const insert = db.prepare(`INSERT INTO volumes (${columns.join(', ')}) VALUES (${columns.map((c) => `@${c}`).join(', ')})`);
  const volumeDir = join(dataDir, 'volumes', String(template['backend']));
  if (!existsSync(join(volumeDir, `volume-${templateId}`))) throw new Error(`template volume file not found in ${volumeDir}`);
  const base = Date.parse(String(template['created_at'])) - n * 1000;
  db.transaction(() => {
    for (let i = 0; i < n; i++) {
      const id = randomUUID();
      const created = new Date(base + i * 1000).toISOString();
      insert.run({ ...template, id, name: `bulk-${i}`, status: 'available', created_at: created, updated_at: created, launched_at: created });
      const fd = openSync(join(volumeDir, `volume-${id}`), 'w');
      ftruncateSync(fd, Number(template['size_gib']) * 1024 ** 3);
      closeSync(fd);
    }
  })();
  db.close();
}

async function main(): Promise<void> {
  server = await startServer(serverOptions());
  try {
    let s = await login(server.url);
    await unlimitedQuota(s);
    console.log(`# list-latency: ${volumeCount} volumes, ${requests} requests; server pid ${server.pid}`);
    const postEmpty = await postLatency(s, 100);
    console.log(`post_volume_latency_empty_project: ${latencySummary(postEmpty)}`);

    const t0 = now();
    if (viaApi) {
      await fillViaApi(s, volumeCount);
      console.log(`fill: ${volumeCount} volumes created THROUGH THE API (POST /volumes, 32 at a time) and available in ${((now() - t0) / 1000).toFixed(1)} s`);
    } else {
      const template = await s.call('POST', `${s.volumeUrl}/volumes`, { volume: { size: 1, name: 'template' } });
      const templateId = template.json<{ volume: { id: string } }>().volume.id;
      await waitAvailable(s, templateId);
      await server.stop();
      fillDirect(server.dataDir, templateId, volumeCount - 1);
      server = await startServer(serverOptions(server.dataDir));
      s = await login(server.url);
      console.log(`fill: ${volumeCount - 1} volume rows INSERTED DIRECTLY into the SQLite database of the stopped server (better-sqlite3, copies of one API-created volume, each with its sparse file) + 1 created through the API; server restarted (pid ${server.pid}); ${((now() - t0) / 1000).toFixed(1)} s`);
    }
    console.log(`rss_idle_with_${volumeCount}_volumes: ${rssMiB(server.pid).toFixed(1)} MiB`);

    const get = async (path: string) => {
      const a = now();
      const r = await s.call('GET', path);
      const t = now() - a;
      if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${r.text.slice(0, 300)}`);
      return { t, r };
    };
    // Warm-up (JIT, statement cache, page cache), not counted.
    for (let i = 0; i < 10; i++) await get(`${s.volumeUrl}/volumes/detail?limit=1000`);

    const rss = sampleRss(server.pid, 100);
    const meter = cpuMeter(server.pid);
    const detail: number[] = [];
    let bytes = 0;
    let items = 0;
    for (let i = 0; i < requests; i++) {
      const { t, r } = await get(`${s.volumeUrl}/volumes/detail?limit=1000`);
      detail.push(t);
      bytes = r.text.length;
      items = r.json<{ volumes: unknown[] }>().volumes.length;
    }
    const cpu = meter.stop();
    console.log(`list_detail_limit_1000: ${latencySummary(detail)} (${items} items, ${(bytes / 1024).toFixed(0)} KiB per response)`);
    console.log(`list_detail_limit_1000_cpu: ${cpu.text}; server ${((cpu.serverS / requests) * 1000).toFixed(1)} ms CPU per request`);

    const summary: number[] = [];
    for (let i = 0; i < 50; i++) summary.push((await get(`${s.volumeUrl}/volumes?limit=1000`)).t);
    console.log(`list_summary_limit_1000: ${latencySummary(summary)}`);
    const small: number[] = [];
    for (let i = 0; i < 100; i++) small.push((await get(`${s.volumeUrl}/volumes/detail?limit=10`)).t);
    console.log(`list_detail_limit_10: ${latencySummary(small)}`);
    // with_count only counts from microversion 3.45 on.
    const counted: number[] = [];
    for (let i = 0; i < 20; i++) {
      const a = now();
      await s.call('GET', `${s.volumeUrl}/volumes/detail?limit=1000&with_count=true`, undefined, { 'OpenStack-API-Version': 'volume 3.45' });
      counted.push(now() - a);
    }
    console.log(`list_detail_limit_1000_with_count_mv3.45: ${latencySummary(counted)}`);

    for (const [label, first] of [
      ['detail', `${s.volumeUrl}/volumes/detail?limit=1000`],
      ['detail_sort_name_asc', `${s.volumeUrl}/volumes/detail?limit=1000&sort=name:asc`],
    ] as const) {
      const pages: number[] = [];
      const seen = new Set<string>();
      const walk0 = now();
      let next: string | undefined = first;
      while (next) {
        const { t, r }: { t: number; r: Awaited<ReturnType<Session['call']>> } = await get(next);
        pages.push(t);
        const body = r.json<{ volumes: { id: string }[]; volumes_links?: { href: string; rel: string }[] }>();
        for (const v of body.volumes) seen.add(v.id);
        next = body.volumes_links?.find((l) => l.rel === 'next')?.href;
      }
      const walk = now() - walk0;
      console.log(`paging_${label}_limit_1000: ${pages.length} pages, ${seen.size} distinct volumes, total ${walk.toFixed(0)} ms; per page ${latencySummary(pages)}`);
    }
    const mem = rss.stop();
    console.log(`rss_peak_during_listing: ${mem.peakMiB.toFixed(1)} MiB`);

    const postFull = await postLatency(s, 100);
    console.log(`post_volume_latency_with_${volumeCount}_volumes: ${latencySummary(postFull)}`);
    const g: number[] = [];
    const one = (await s.call('GET', `${s.volumeUrl}/volumes?limit=1`)).json<{ volumes: { id: string }[] }>().volumes[0]!.id;
    for (let i = 0; i < 200; i++) g.push((await get(`${s.volumeUrl}/volumes/${one}`)).t);
    console.log(`get_one_volume_with_${volumeCount}_volumes: ${latencySummary(g)}`);
    const lim: number[] = [];
    for (let i = 0; i < 50; i++) lim.push((await get(`${s.volumeUrl}/limits`)).t);
    console.log(`get_limits_with_${volumeCount}_volumes: ${latencySummary(lim)}`);
  } finally {
    await server.stop();
    server.cleanup();
  }
}

await main();
