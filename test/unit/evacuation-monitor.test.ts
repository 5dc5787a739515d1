/**
 * The automatic evacuation monitor's decisions, on a real (in-memory) database
 * and a fake clock: grace period, forced-down hosts left to the operator, the
 * split-brain guard (most hosts down → nothing, with the reason on the
 * services), the limit of hosts at once, and no retry loop after a failure.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Db } from '../../src/db/db.ts';
import { EvacuationMonitor, Migrations } from '../../src/compute/evacuation.ts';
import { ComputeHosts } from '../../src/compute/hosts.ts';
import type { ServerRow } from '../../src/compute/model.ts';

const t0 = Date.parse('2026-12-05T10:00:00.000Z');
const serviceDownTimeS = 10;

function setup(hosts: string[], options: { graceS?: number; hostsMax?: number; downFractionMax?: number; enabled?: boolean } = {}) {
  const db = new Db(':memory:');
  const computeHosts = new ComputeHosts(db, () => serviceDownTimeS);
  for (const host of hosts) computeHosts.heartbeat('nova-compute', host, 'nova');
  let nowMs = t0;
  const evacuated: { serverId: string; reason: string }[] = [];
  const refuse = new Set<string>();
  const monitor = new EvacuationMonitor({
    db,
    hosts: computeHosts,
    settings: () => ({ enabled: options.enabled ?? true, graceS: options.graceS ?? 30, hostsMax: options.hostsMax ?? 1, downFractionMax: options.downFractionMax ?? 0.5, serviceDownTimeS }),
    evacuate: (serverId, reason) => {
      if (refuse.has(serverId)) throw new Error('fence refused');
      evacuated.push({ serverId, reason });
    },
    log: () => undefined,
    now: () => nowMs,
  });
  const beat = (host: string, atMs: number) => db.run("UPDATE services SET heartbeat_at = ? WHERE host = ? AND binary = 'nova-compute'", new Date(atMs).toISOString(), host);
  for (const host of hosts) beat(host, t0);
  const addServer = (id: string, host: string) =>
    db.run(
      `INSERT INTO servers (id, name, project_id, user_id, flavor_id, flavor, image_meta, host, vm_state, task_state, power_state, root_source, created_at)
       VALUES (?, ?, 'p', 'u', '42', '{"vcpus":1,"ram_mib":128,"root_gib":1,"ephemeral_gib":0}', '{}', ?, 'active', NULL, 1, 'volume', ?)`,
      id, id, host, new Date(t0).toISOString(),
    );
  const stateReason = (host: string) => db.get<{ state_reason: string | null }>("SELECT state_reason FROM services WHERE host = ? AND binary = 'nova-compute'", host)?.state_reason ?? null;
  return { db, monitor, evacuated, refuse, beat, addServer, stateReason, setNow: (ms: number) => (nowMs = ms) };
}

test('disabled (the default): a dead host is left alone', () => {
  const s = setup(['a', 'b', 'c'], { enabled: false });
  s.addServer('s1', 'a');
  s.setNow(t0 + 600_000);
  assert.deepEqual(s.monitor.pass().evacuatedHosts, []);
  assert.deepEqual(s.evacuated, []);
});

test('a host down longer than service_down_time + grace has its servers evacuated, with the reason', () => {
  const s = setup(['a', 'b', 'c']);
  s.addServer('s1', 'a');
  s.addServer('s2', 'a');
  s.addServer('s3', 'b');
  s.setNow(t0 + 35_000);
  s.beat('b', t0 + 34_000);
  s.beat('c', t0 + 34_000);
  // Down (35 s > 10 s) but within the 30 s grace beyond service_down_time: nothing yet.
  assert.deepEqual(s.monitor.pass().evacuatedHosts, []);
  s.setNow(t0 + 41_000);
  s.beat('b', t0 + 40_000);
  s.beat('c', t0 + 40_000);
  const pass = s.monitor.pass();
  assert.deepEqual(pass.evacuatedHosts, ['a']);
  assert.deepEqual(s.evacuated.map((e) => e.serverId).sort(), ['s1', 's2']);
  assert.match(s.evacuated[0]!.reason, /automatic evacuation: compute host a has sent no heartbeat since .* \(down for 41 s > service_down_time 10 s \+ auto_evacuate_grace_s 30 s\)/);
  assert.match(s.stateReason('a')!, /automatic evacuation/);
});

test('guard: most hosts down is a partition, not deaths: nothing is evacuated and the services say why', () => {
  const s = setup(['a', 'b', 'c']);
  s.addServer('s1', 'a');
  s.addServer('s2', 'b');
  s.setNow(t0 + 120_000);
  s.beat('c', t0 + 119_000);
  const pass = s.monitor.pass();
  assert.deepEqual(pass.evacuatedHosts, []);
  assert.match(pass.guard!, /2 of 3 compute hosts are down .*auto_evacuate_down_fraction_max = 0\.5.*partition of the control plane/);
  assert.deepEqual(s.evacuated, []);
  assert.match(s.stateReason('a')!, /auto-evacuate held back: 2 of 3/);
});

test('a host forced down by an operator (maintenance) is never evacuated automatically', () => {
  const s = setup(['a', 'b', 'c']);
  s.addServer('s1', 'a');
  s.db.run("UPDATE services SET forced_down = 1 WHERE host = 'a'");
  s.setNow(t0 + 120_000);
  s.beat('b', t0 + 119_000);
  s.beat('c', t0 + 119_000);
  assert.deepEqual(s.monitor.pass().evacuatedHosts, []);
  assert.deepEqual(s.evacuated, []);
});

test('at most auto_evacuate_hosts_max hosts at once; the next waits with a reason', () => {
  const s = setup(['a', 'b', 'c', 'd', 'e'], { hostsMax: 1 });
  s.addServer('s1', 'a');
  s.addServer('s2', 'b');
  s.setNow(t0 + 120_000);
  for (const h of ['c', 'd', 'e']) s.beat(h, t0 + 119_000);
  // The first host's evacuation is recorded as in flight (the real evacuate writes the migration).
  const migrations = new Migrations(s.db);
  const realEvacuate = s.evacuated;
  const pass = s.monitor.pass();
  assert.deepEqual(pass.evacuatedHosts, ['a']);
  assert.equal(pass.refused.length, 1);
  assert.match(pass.refused[0]!.reason, /1 host\(s\) are being evacuated already \(auto_evacuate_hosts_max = 1\)/);
  assert.deepEqual(realEvacuate.map((e) => e.serverId), ['s1']);
  // With a's evacuation in flight (a migration record), b still waits.
  const server = s.db.get<ServerRow>("SELECT * FROM servers WHERE id = 's1'")!;
  const m = migrations.create(server, 'c', { userId: 'x' }, true);
  s.db.run("UPDATE servers SET task_state = 'rebuilding' WHERE id = 's1'");
  assert.deepEqual(s.monitor.pass().evacuatedHosts, []);
  // Once it is done, b goes.
  migrations.advance(m.id, ['accepted'], 'done');
  assert.deepEqual(s.monitor.pass().evacuatedHosts, ['b']);
});

test('a server whose automatic evacuation failed is not retried in a loop', () => {
  const s = setup(['a', 'b', 'c']);
  s.addServer('s1', 'a');
  s.setNow(t0 + 120_000);
  s.beat('b', t0 + 119_000);
  s.beat('c', t0 + 119_000);
  const migrations = new Migrations(s.db);
  const server = s.db.get<ServerRow>("SELECT * FROM servers WHERE id = 's1'")!;
  const m = migrations.create(server, 'b', { userId: 'x' }, true);
  migrations.advance(m.id, ['accepted'], 'failed', { reason: 'fence refused' });
  s.db.run('UPDATE migrations SET created_at = ? WHERE id = ?', new Date(t0 + 60_000).toISOString(), m.id);
  assert.deepEqual(s.monitor.pass().evacuatedHosts, []);
  assert.deepEqual(s.evacuated, []);
});
