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
