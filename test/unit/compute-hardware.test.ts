/**
 * Pure parts of issue 15's first slices, on an in-memory database: the image
 * hardware table (accepted values and refusals), host_status by heartbeat age
 * (UP → UNKNOWN → DOWN; MAINTENANCE; forced down), and the live-migration
 * pre-checks in the order Nova runs them, including the branches the e2e test
 * cannot reach cheaply (a qcow2 root, RBD-only disks → 501 not wired yet).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Db } from '../../src/db/db.ts';
import { guestHardwareFromImage, HardwarePropertyError } from '../../src/compute/hardware.ts';
import { ComputeHosts } from '../../src/compute/hosts.ts';
import { liveMigrationRefusal } from '../../src/compute/live-migration.ts';
import { defaultGuestHardware } from '../../src/compute/hypervisor/types.ts';
import type { BdmRow, ServerRow } from '../../src/compute/model.ts';
import { PumiceError } from '../../src/errors.ts';

test('image hardware: defaults, every accepted value, and refusals naming the accepted ones', () => {
  assert.deepEqual(guestHardwareFromImage({}), defaultGuestHardware);
  assert.deepEqual(guestHardwareFromImage({ hw_vif_model: 'virtio', hw_cpu_cores: '2' }), defaultGuestHardware, 'keys Pumice does not read are ignored');
  assert.deepEqual(
    guestHardwareFromImage({ hw_disk_bus: 'scsi', hw_qemu_guest_agent: 'True', os_require_quiesce: 'yes', hw_rng_model: 'virtio', hw_video_model: 'cirrus', hw_machine_type: 'pc-i440fx-7.2' }),
    { diskBus: 'scsi', scsiModel: 'virtio-scsi', guestAgent: true, requireQuiesce: true, rngModel: 'virtio', videoModel: 'cirrus', machineType: 'pc-i440fx-7.2' },
  );
  const refused: [Record<string, string>, RegExp][] = [
    [{ hw_disk_bus: 'sata' }, /hw_disk_bus="sata".*virtio, scsi/],
    [{ hw_scsi_model: 'lsilogic' }, /hw_scsi_model="lsilogic".*virtio-scsi/],
    [{ hw_rng_model: 'egd' }, /hw_rng_model="egd".*virtio/],
    [{ hw_machine_type: 'pc-q35-7.2' }, /q35 is not offered/],
    [{ hw_qemu_guest_agent: 'no', os_require_quiesce: 'true' }, /os_require_quiesce=yes needs the QEMU guest agent/],
  ];
  for (const [properties, message] of refused) {
    assert.throws(() => guestHardwareFromImage(properties), (err: unknown) => err instanceof HardwarePropertyError && message.test(err.message), JSON.stringify(properties));
  }
});

function cloud() {
  const db = new Db(':memory:');
  const hosts = new ComputeHosts(db, () => 10, () => 1);
  for (const host of ['compute01', 'compute02']) hosts.heartbeat('nova-compute', host, 'nova');
  const beat = (host: string, atMs: number) => db.run("UPDATE services SET heartbeat_at = ? WHERE host = ? AND binary = 'nova-compute'", new Date(atMs).toISOString(), host);
  return { db, hosts, beat };
}

test('host_status by heartbeat age: UP, UNKNOWN after two report intervals, DOWN after service_down_time; MAINTENANCE; forced down', () => {
  const { db, hosts, beat } = cloud();
  const t0 = Date.parse('2026-12-05T10:00:00.000Z');
  beat('compute01', t0);
  assert.equal(hosts.hostStatus('compute01', t0 + 1_000), 'UP');
  assert.equal(hosts.hostStatus('compute01', t0 + 2_500), 'UNKNOWN');
  assert.equal(hosts.hostStatus('compute01', t0 + 10_000), 'UNKNOWN');
  assert.equal(hosts.hostStatus('compute01', t0 + 10_001), 'DOWN');
  assert.equal(hosts.hostStatus('nowhere', t0), 'UNKNOWN');
  db.run("UPDATE services SET disabled = 1 WHERE host = 'compute01'");
  assert.equal(hosts.hostStatus('compute01', t0 + 1_000), 'MAINTENANCE');
  assert.equal(hosts.hostStatus('compute01', t0 + 20_000), 'DOWN', 'a dead host reads DOWN even when disabled');
  db.run("UPDATE services SET disabled = 0, forced_down = 1 WHERE host = 'compute01'");
  assert.equal(hosts.hostStatus('compute01', t0 + 1_000), 'DOWN');
});

test('live-migration pre-checks: state, target, NBD volume, qcow2 root; none for shared storage', () => {
  const { hosts, beat } = cloud();
  const now = Date.now();
  beat('compute01', now);
  beat('compute02', now);
  const server = { id: 's1', host: 'compute01', vm_state: 'active', task_state: null } as unknown as ServerRow;
  const rbdVolume = { destination_type: 'volume', volume_id: 'v-rbd', status: 'attached', boot_index: 0, connection_info: JSON.stringify({ driver_volume_type: 'rbd' }) } as unknown as BdmRow;
  const nbdVolume = { destination_type: 'volume', volume_id: 'v-nbd', status: 'attached', boot_index: null, connection_info: JSON.stringify({ driver_volume_type: 'nbd' }) } as unknown as BdmRow;
  const localRoot = { destination_type: 'local', volume_id: null, status: 'attached', boot_index: 0, connection_info: null } as unknown as BdmRow;
  const check = (row: ServerRow, bdms: BdmRow[], host: string | null, imagesType = 'default'): PumiceError | null =>
    liveMigrationRefusal(row, bdms, { host, blockMigration: 'auto' }, { hosts, imagesType });
  const expect = (err: PumiceError | null, code: string, message: RegExp) => {
    assert.ok(err, `refused with ${code}`);
    assert.equal(err.code, code, err.message);
    assert.match(err.message, message);
  };
  expect(check({ ...server, task_state: 'rebooting' } as ServerRow, [rbdVolume], 'compute02'), 'Conflict', /needs an ACTIVE server with no task/);
  expect(check(server, [rbdVolume], 'compute01'), 'BadRequest', /already runs on compute01/);
  expect(check(server, [rbdVolume], 'compute09'), 'BadRequest', /compute09 could not be found/);
  expect(check(server, [rbdVolume, nbdVolume], 'compute02'), 'Conflict', /volume v-nbd is on the local backend.*not shared storage/);
  expect(check(server, [localRoot], 'compute02'), 'Conflict', /root disk is a qcow2 file on compute01.*images_type = default/);
  assert.equal(check(server, [rbdVolume], 'compute02'), null, 'RBD volumes are shared storage');
  assert.equal(check(server, [localRoot, rbdVolume], null, 'rbd'), null, 'an RBD root (images_type = rbd) is shared storage');
  // Heartbeats overdue but within service_down_time (host_status UNKNOWN): up for the check, as Nova's servicegroup
  // (a loaded or just restarted agent; the namespace cluster test met it).
  beat('compute02', now - 3_000);
  assert.equal(hosts.hostStatus('compute02', now), 'UNKNOWN');
  assert.equal(check(server, [rbdVolume], 'compute02'), null, 'an overdue heartbeat within service_down_time is not down');
  beat('compute02', now - 60_000);
  expect(check(server, [rbdVolume], 'compute02'), 'BadRequest', /compute02 is down/);
});
