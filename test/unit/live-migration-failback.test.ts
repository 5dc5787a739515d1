/**
 * Fail-back's guard (issue 15): a home host must have been up
 * failback_healthy_seconds without a gap (up_since restarts when its
 * heartbeat resumes after it was down), and no compute host may be down.
 * And doctor's live-migration checks: QEMU versions that differ, and disks
 * that are not shared storage, are named.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Db } from '../../src/db/db.ts';
import { loadConfig } from '../../src/config/config.ts';
import { failbackBlocked } from '../../src/compute/failback.ts';
import { ComputeHosts } from '../../src/compute/hosts.ts';
import { liveMigrationChecks } from '../../src/compute/migration-doctor.ts';
import { MigrationProbeListener, probeMigrationTargets } from '../../src/compute/migration-probe.ts';

function cloud() {
  const db = new Db(':memory:');
  const hosts = new ComputeHosts(db, () => 10, () => 1);
  for (const host of ['compute01', 'compute02']) hosts.heartbeat('nova-compute', host, 'nova');
  return { db, hosts };
}

test('fail-back waits failback_healthy_seconds after the home host returns, and while any host is down', () => {
  const { db, hosts } = cloud();
  const now = Date.now();
  assert.match(failbackBlocked(hosts, 'compute01', 30, now)!, /has been up 0 s, less than \[compute\] failback_healthy_seconds = 30/);
  db.run("UPDATE services SET up_since = ? WHERE host = 'compute01'", new Date(now - 60_000).toISOString());
  assert.equal(failbackBlocked(hosts, 'compute01', 30, now), null);
  // compute02 goes down: the cloud is degraded.
  db.run("UPDATE services SET heartbeat_at = ? WHERE host = 'compute02'", new Date(now - 60_000).toISOString());
  assert.match(failbackBlocked(hosts, 'compute01', 30, now)!, /degraded: compute host compute02 is down/);
  // compute02's heartbeat resumes: its up_since restarts, and compute01's does not move.
  hosts.heartbeat('nova-compute', 'compute02', 'nova');
  assert.ok(hosts.upForS('compute02') < 5, `compute02 up for ${hosts.upForS('compute02')} s`);
  hosts.heartbeat('nova-compute', 'compute01', 'nova');
  assert.ok(hosts.upForS('compute01') >= 59, 'a heartbeat without a gap keeps up_since');
  assert.equal(failbackBlocked(hosts, 'compute01', 30), null);
  assert.match(failbackBlocked(hosts, 'compute09', 30)!, /compute09 is unknown/);
  db.run("UPDATE services SET disabled = 1 WHERE host = 'compute01'");
  assert.match(failbackBlocked(hosts, 'compute01', 30)!, /compute01 is disabled/);
});

test('doctor: differing QEMU versions and disks off shared storage are named', async () => {
  const { db } = cloud();
  const config = loadConfig(null, '/tmp');
  const node = (host: string, version: number) => db.run(
    `INSERT INTO compute_nodes (host, hypervisor_hostname, hypervisor_type, hypervisor_version, host_ip, virt_type, virt_type_reason, vcpus, memory_mib, local_gib, disk_source, disk_total_gib, disk_free_gib, cpu_info, updated_at)
     VALUES (?, ?, 'QEMU', ?, '127.0.0.1', 'qemu', '', 2, 2048, 10, 'local', 10, 10, '{"model":"x"}', ?)`, host, host, version, new Date().toISOString());
  node('compute01', 7002022);
  node('compute02', 7002022);
  let checks = await liveMigrationChecks(config, db);
  assert.ok(checks.every((c) => c.ok), JSON.stringify(checks));
  assert.match(checks.find((c) => c.name === 'live migration: same QEMU and CPU model')!.detail, /2 hosts: QEMU 7\.2\.22, qemu/);
  db.run("UPDATE compute_nodes SET hypervisor_version = 8000000 WHERE host = 'compute02'");
  checks = await liveMigrationChecks(config, db);
  const same = checks.find((c) => c.name === 'live migration: same QEMU and CPU model')!;
  assert.equal(same.ok, false);
  assert.match(same.detail, /compute01: QEMU 7\.2\.22, qemu; compute02: QEMU 8\.0\.0, qemu.*Install the same qemu-system-x86 version/);
});

test('doctor: each up compute host reaches the others\' migration address; a closed port names the pair and the fix', async () => {
  const { db, hosts } = cloud();
  const config = loadConfig(null, '/tmp');
  const node = (host: string) => db.run(`INSERT INTO compute_nodes (host, hypervisor_hostname, hypervisor_type, hypervisor_version, host_ip, virt_type, virt_type_reason, vcpus, memory_mib, local_gib, disk_source, disk_total_gib, disk_free_gib, cpu_info, updated_at)
     VALUES (?, ?, 'QEMU', 7002022, '127.0.0.1', 'qemu', '', 2, 2048, 10, 'local', 10, 10, '{"model":"x"}', ?)`, host, host, new Date().toISOString());
  node('compute01');
  node('compute02');
  const reachability = async () => (await liveMigrationChecks(config, db)).find((c) => c.name === 'live migration: hosts reach each other')!;
  assert.match((await reachability()).detail, /warning: not probed yet.*compute02 → compute01, compute01 → compute02/);

  // What each agent does at every node report: listen, then probe the other (src/compute/agent.ts).
  const listeners = { compute01: new MigrationProbeListener(), compute02: new MigrationProbeListener() };
  const addresses = { compute01: await listeners.compute01.start('127.0.0.1'), compute02: await listeners.compute02.start('127.0.0.1') };
  const probe = async (source: 'compute01' | 'compute02', target: 'compute01' | 'compute02') =>
    hosts.recordMigrationProbe(source, { migration_probe: addresses[source], migration_reach: await probeMigrationTargets([{ host: target, ...addresses[target] }], 1000) });
  try {
    await probe('compute01', 'compute02');
    await probe('compute02', 'compute01');
    let check = await reachability();
    assert.equal(check.ok, true, check.detail);
    assert.match(check.detail, /^2 host pairs: every up compute host reaches/);

    // compute02's port is closed: compute01's next probe fails, and doctor says who cannot reach what.
    await listeners.compute02.close();
    await probe('compute01', 'compute02');
    check = await reachability();
    assert.equal(check.ok, false, check.detail);
    assert.match(check.detail, new RegExp(`compute01 cannot reach compute02's migration address 127\\.0\\.0\\.1:${addresses.compute02.port} \\(ECONNREFUSED`));
    assert.match(check.detail, /Open TCP from the source hosts to each target's \[libvirt\] live_migration_inbound_addr/);

    // A host that is down is not a pair to reach.
    db.run("UPDATE services SET heartbeat_at = ? WHERE host = 'compute02'", new Date(Date.now() - 3_600_000).toISOString());
    check = await reachability();
    assert.equal(check.ok, true, check.detail);
    assert.match(check.detail, /fewer than two compute hosts are up/);
  } finally {
    await listeners.compute01.close();
    await listeners.compute02.close();
  }
});
