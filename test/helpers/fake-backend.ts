/**
 * An in-memory backend implementing the same driver interfaces as the real
 * ones, for fast unit tests of the volume service. Operations can be made to
 * fail or to wait, to test error paths and in-flight states.
 */
import type { CapacityReport, Clones, ConnectionInfo, SnapshotRef, Snapshots, VolumeBackend, VolumeRef } from '../../src/volume/drivers/driver.ts';
import { DriverError } from '../../src/volume/drivers/driver.ts';

export class FakeBackend implements VolumeBackend, Snapshots, Clones {
  readonly driverName = 'fake';
  readonly driverVersion = '0';
  readonly volumes = new Map<string, number>();
  readonly snapshots = new Map<string, { volumeId: string; sizeGiB: number }>();
  failNext: string | null = null;
  gate: Promise<void> | null = null;
  capacity: CapacityReport = { totalCapacityGiB: 100, freeCapacityGiB: 100, thinProvisioningSupport: true, thickProvisioningSupport: false, storageProtocol: 'fake' };
  down: string | null = null;

  constructor(readonly section: string) {}

  private async step(op: string): Promise<void> {
    if (this.gate) await this.gate;
    if (this.failNext === op) {
      this.failNext = null;
      throw new DriverError('Invalid', `fake ${op} failure`);
    }
  }
  async start() {
    if (this.down) throw new DriverError('Unreachable', this.down);
  }
  async stop() {}
  async createVolume(v: VolumeRef) {
    await this.step('create');
    this.volumes.set(v.id, v.sizeGiB);
  }
  async deleteVolume(v: VolumeRef) {
    await this.step('delete');
    this.volumes.delete(v.id);
  }
  async extendVolume(v: VolumeRef, size: number) {
    await this.step('extend');
    this.volumes.set(v.id, size);
  }
  async reportCapacity() {
    if (this.down) throw new DriverError('Unreachable', this.down);
    return this.capacity;
  }
  async initializeConnection(v: VolumeRef): Promise<ConnectionInfo> {
    return { driver_volume_type: 'fake', data: { volume_id: v.id } };
  }
  async terminateConnection() {}
  async listResources() {
    return { volumeIds: [...this.volumes.keys()], snapshotIds: [...this.snapshots.keys()] };
  }
  async createSnapshot(s: SnapshotRef) {
    await this.step('snapshot');
    this.snapshots.set(s.id, { volumeId: s.volumeId, sizeGiB: s.sizeGiB });
  }
  async deleteSnapshot(s: SnapshotRef) {
    await this.step('delete-snapshot');
    this.snapshots.delete(s.id);
  }
  async createVolumeFromSnapshot(v: VolumeRef) {
    await this.step('from-snapshot');
    this.volumes.set(v.id, v.sizeGiB);
  }
  async revertToSnapshot() {
    await this.step('revert');
  }
  async cloneVolume(v: VolumeRef) {
    await this.step('clone');
    this.volumes.set(v.id, v.sizeGiB);
  }
}
