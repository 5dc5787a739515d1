import { test } from 'node:test';
import assert from 'node:assert/strict';
import { matchesSpec, schedule, schedulingFailureTexts, type PoolState } from '../../src/volume/scheduler/scheduler.ts';

function pool(overrides: Partial<PoolState>): PoolState {
  return {
    backend: 'local', host: 'pumice@local#local', volumeBackendName: 'local', availabilityZone: 'nova', up: true, disabled: false,
    downReason: null, totalCapacityGiB: 100, freeCapacityGiB: 80, provisionedCapacityGiB: 0, maxOverSubscriptionRatio: 20,
    reservedPercentage: 0, thinProvisioningSupport: true, thickProvisioningSupport: false, capabilities: {}, ...overrides,
  };
}

test('volume_backend_name in the extra specs routes to the matching backend', () => {
  const pools = [pool({}), pool({ backend: 'local-b', host: 'pumice@local-b#local-b', volumeBackendName: 'local-b', freeCapacityGiB: 10 })];
  const result = schedule(pools, { sizeGiB: 1, availabilityZone: null, extraSpecs: { volume_backend_name: 'local-b' } });
  assert.ok(result.ok);
  assert.equal(result.pool.backend, 'local-b');
});

test('the capacity weigher prefers the pool with the most virtual free space', () => {
  const pools = [pool({ backend: 'a', provisionedCapacityGiB: 500 }), pool({ backend: 'b', provisionedCapacityGiB: 100 })];
  const result = schedule(pools, { sizeGiB: 1, availabilityZone: null, extraSpecs: {} });
  assert.ok(result.ok);
  assert.equal(result.pool.backend, 'b');
});

test('thin provisioning: over-subscription is allowed up to max_over_subscription_ratio', () => {
  const thin = pool({ totalCapacityGiB: 100, freeCapacityGiB: 30, provisionedCapacityGiB: 150, maxOverSubscriptionRatio: 2 });
  assert.ok(schedule([thin], { sizeGiB: 50, availabilityZone: null, extraSpecs: {} }).ok);
  const over = schedule([thin], { sizeGiB: 51, availabilityZone: null, extraSpecs: {} });
  assert.ok(!over.ok);
  assert.match(over.reasons[0]!, /CapacityFilter rejected backend pumice@local#local: .*over max_over_subscription_ratio 2/);
  // Virtual free space (free x ratio) must also cover the request, as in Cinder.
  const lowFree = pool({ totalCapacityGiB: 100, freeCapacityGiB: 10, provisionedCapacityGiB: 0, maxOverSubscriptionRatio: 2 });
  assert.ok(!schedule([lowFree], { sizeGiB: 21, availabilityZone: null, extraSpecs: {} }).ok);
});

test('thick pools need real free space, after the reserved percentage', () => {
  const thick = pool({ thinProvisioningSupport: false, thickProvisioningSupport: true, totalCapacityGiB: 100, freeCapacityGiB: 30, reservedPercentage: 10 });
  assert.ok(schedule([thick], { sizeGiB: 20, availabilityZone: null, extraSpecs: {} }).ok);
  const result = schedule([thick], { sizeGiB: 21, availabilityZone: null, extraSpecs: {} });
  assert.ok(!result.ok);
  assert.match(result.reasons[0]!, /20 GiB free \(after 10% reserved\) and 21 GiB were asked/);
});

test('when nothing fits, every backend gets a reason naming its filter', () => {
  const pools = [
    pool({ backend: 'a', host: 'h@a#a', availabilityZone: 'az2' }),
    pool({ backend: 'b', host: 'h@b#b', volumeBackendName: 'b' }),
    pool({ backend: 'c', host: 'h@c#c', up: false, downReason: 'keyring missing' }),
    pool({ backend: 'd', host: 'h@d#d', disabled: true }),
  ];
  const result = schedule(pools, { sizeGiB: 1, availabilityZone: 'nova', extraSpecs: { volume_backend_name: 'ceph' } });
  assert.ok(!result.ok);
  assert.equal(result.reasons.length, 4);
  assert.match(result.reasons[0]!, /AvailabilityZoneFilter rejected backend h@a#a: it is in availability zone 'az2', not 'nova'/);
  assert.match(result.reasons[1]!, /CapabilitiesFilter rejected backend h@b#b: its volume_backend_name is 'b'/);
  assert.match(result.reasons[2]!, /h@c#c: its volume service is down \(keyring missing\)/);
  assert.match(result.reasons[3]!, /h@d#d: its volume service is disabled/);
  // What the project reads: kinds of reasons and its own figures; no backend name, down reason or capacity.
  const texts = schedulingFailureTexts(result);
  assert.equal(texts.member, "No valid backend was found: no backend in availability zone 'nova'; no backend offers what the volume type asks for; a storage backend is unavailable.");
  assert.match(texts.detail, /h@c#c: its volume service is down \(keyring missing\)/);
});

test('a capacity refusal reads the size asked, never the free space, for the member', () => {
  const result = schedule([pool({ thinProvisioningSupport: false, thickProvisioningSupport: true, freeCapacityGiB: 30 })], { sizeGiB: 31, availabilityZone: null, extraSpecs: {} });
  assert.ok(!result.ok);
  const texts = schedulingFailureTexts(result);
  assert.equal(texts.member, 'No valid backend was found: not enough free capacity for 31 GiB.');
  assert.match(texts.detail, /pumice@local#local: it has 30 GiB free/);
});

test('no backends at all is explained', () => {
  const result = schedule([], { sizeGiB: 1, availabilityZone: null, extraSpecs: {} });
  assert.ok(!result.ok);
  assert.match(result.reasons[0]!, /no storage backend is configured/);
});

test('scoped extra specs: capabilities: is matched, other scopes are left to drivers', () => {
  const p = pool({ capabilities: { storage_protocol: 'nbd' } });
  assert.ok(schedule([p], { sizeGiB: 1, availabilityZone: null, extraSpecs: { 'capabilities:storage_protocol': 'nbd', 'hw:foo': 'x', 'RESKEY:bar': 'y' } }).ok);
  assert.ok(!schedule([p], { sizeGiB: 1, availabilityZone: null, extraSpecs: { 'capabilities:storage_protocol': 'rbd' } }).ok);
});

test("extra-spec operators follow Cinder's", () => {
  assert.ok(matchesSpec('True', '<is> true'));
  assert.ok(matchesSpec('ssd-fast', '<in> fast'));
  assert.ok(matchesSpec('b', '<or> a <or> b'));
  assert.ok(!matchesSpec('c', '<or> a <or> b'));
  assert.ok(matchesSpec('20', '>= 10'));
  assert.ok(!matchesSpec('5', '>= 10'));
  assert.ok(matchesSpec('local', 'local'));
  assert.ok(!matchesSpec('local', 'local-b'));
});

test("'auto' over-subscription derives the ratio from what is already provisioned", () => {
  const p = pool({ maxOverSubscriptionRatio: 'auto', totalCapacityGiB: 100, freeCapacityGiB: 90, provisionedCapacityGiB: 50 });
  // used 10 GiB backs 50 GiB provisioned: ratio 1 + 50/10 = 6 => 600 GiB virtual capacity
  assert.ok(schedule([p], { sizeGiB: 500, availabilityZone: null, extraSpecs: {} }).ok);
  assert.ok(!schedule([p], { sizeGiB: 560, availabilityZone: null, extraSpecs: {} }).ok);
});
