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

  /** The next `times` calls of `op` throw `error` (e.g. a librbd ETIMEDOUT, to test retries). */
  failWith: { op: string; error: Error; times: number } | null = null;
  /** Operations in the order they started (after the gate), e.g. 'clone v2', 'delete v1'. */
  readonly calls: string[] = [];

  /** When set, the gate holds only these operations. */
  gateOnly: Set<string> | null = null;

  private async step(op: string, subject = ''): Promise<void> {
    if (this.gate && (!this.gateOnly || this.gateOnly.has(op))) await this.gate;
    this.calls.push(subject ? `${op} ${subject}` : op);
    if (this.failWith?.op === op && this.failWith.times > 0) {
      this.failWith.times--;
      throw this.failWith.error;
    }
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
    await this.step('create', v.id);
    this.volumes.set(v.id, v.sizeGiB);
  }
  async deleteVolume(v: VolumeRef) {
    await this.step('delete', v.id);
    this.volumes.delete(v.id);
  }
  async extendVolume(v: VolumeRef, size: number) {
    await this.step('extend', v.id);
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
    await this.step('snapshot', s.id);
    this.snapshots.set(s.id, { volumeId: s.volumeId, sizeGiB: s.sizeGiB });
  }
  async deleteSnapshot(s: SnapshotRef) {
    await this.step('delete-snapshot', s.id);
    this.snapshots.delete(s.id);
  }
  async createVolumeFromSnapshot(v: VolumeRef) {
    await this.step('from-snapshot', v.id);
    this.volumes.set(v.id, v.sizeGiB);
  }
  async revertToSnapshot() {
    await this.step('revert');
  }
  async cloneVolume(v: VolumeRef) {
    await this.step('clone', v.id);
    this.volumes.set(v.id, v.sizeGiB);
  }
}
