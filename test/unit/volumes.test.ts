import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Db } from '../../src/db/db.ts';
import { parseConfigText } from '../../src/config/config.ts';
import { TaskQueue } from '../../src/tasks/queue.ts';
import { VolumeManager } from '../../src/volume/manager.ts';
import { nullExporter } from '../../src/volume/drivers/local.ts';
import { Quotas } from '../../src/volume/quotas.ts';
import { VolumeService } from '../../src/volume/volumes.ts';
import { PumiceError } from '../../src/errors.ts';
import { PolicyTable } from '../../src/http/policy.ts';
import { volumePolicyDefaults } from '../../src/volume/api/policy.ts';
import type { AuthContext } from '../../src/http/router.ts';
import { FakeBackend } from '../helpers/fake-backend.ts';

const configText = `[DEFAULT]
enabled_backends = a,b
quota_volumes = 3
quota_gigabytes = 10
[a]
volume_driver = local
volume_backend_name = a
[b]
volume_driver = local
volume_backend_name = b
`;

function ctx(projectId: string, roles: string[]): AuthContext {
  return {
    tokenId: 't', userId: `u-${projectId}`, userName: 'u', userDomainId: 'default', projectId, projectName: projectId, projectDomainId: 'default',
    domainId: null, roles, isAdmin: roles.includes('admin'), expiresAt: '9999', issuedAt: '0', methods: ['password'], auditId: 'a',
  };
}

async function setup() {
  const db = new Db(':memory:');
  const config = parseConfigText(configText, '/nonexistent');
  const queue = new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 4, attemptsMax: 3, pollIntervalMs: 50 });
  const fakes = new Map<string, FakeBackend>();
  const manager = new VolumeManager(db, config, queue, nullExporter, () => undefined, (b) => {
    const fake = new FakeBackend(b.section);
    fakes.set(b.section, fake);
    return fake;
  });
  const service = new VolumeService(db, config, queue, manager, new Quotas(db, config.DEFAULT));
  service.ensureDefaultType();
  await manager.start();
  const settle = async () => {
    await new Promise((r) => setTimeout(r, 5));
    await queue.whenIdle();
  };
  return { db, service, manager, queue, fakes, settle };
}

function errorOf(fn: () => unknown): PumiceError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof PumiceError, String(error));
    return error;
  }
  assert.fail('expected an error');
}

test('create → available → delete → gone, through tasks on the chosen backend', async () => {
  const { service, fakes, settle, manager } = await setup();
  const member = ctx('p1', ['member', 'reader']);
  const volume = service.createVolume(member, { size: 1 }, 'req');
  assert.equal(volume.status, 'creating');
  await settle();
  const created = service.volume(member, volume.id);
  assert.equal(created.status, 'available');
  assert.ok(fakes.get(created.backend!)!.volumes.has(volume.id));
  service.deleteVolume(member, volume.id, { cascade: false, force: false });
  assert.equal(service.volume(member, volume.id).status, 'deleting');
  await settle();
  assert.equal(errorOf(() => service.volume(member, volume.id)).status, 404);
  assert.equal(fakes.get(created.backend!)!.volumes.size, 0);
  await manager.stop();
});

test("volume types route by volume_backend_name; another project's volume is a 404", async () => {
  const { service, db, settle, manager } = await setup();
  const admin = ctx('admin', ['admin', 'member', 'reader']);
  db.run("INSERT INTO volume_types (id, name, is_public, created_at) VALUES ('tb', 'type-b', 1, 'now')");
  db.run("INSERT INTO volume_type_extra_specs (volume_type_id, key, value) VALUES ('tb', 'volume_backend_name', 'b')");
  const v = service.createVolume(admin, { size: 1, volumeType: 'type-b' }, 'r');
  assert.equal(v.host, 'pumice@b#b');
  await settle();
  assert.equal(errorOf(() => service.volume(ctx('p2', ['member']), v.id)).status, 404);
  assert.equal(service.volume(admin, v.id).status, 'available');
  await manager.stop();
});

test('no backend fits: the volume is error with a reason for the member, the filter and backend in the log', async () => {
  const { service, db, manager } = await setup();
  const logged: string[] = [];
  (manager as unknown as { log: (m: string) => void }).log = (m) => logged.push(m);
  const member = ctx('p1', ['member']);
  db.run("INSERT INTO volume_types (id, name, is_public, created_at) VALUES ('tc', 'ceph', 1, 'now')");
  db.run("INSERT INTO volume_type_extra_specs (volume_type_id, key, value) VALUES ('tc', 'volume_backend_name', 'ceph')");
  const v = service.createVolume(member, { size: 1, volumeType: 'ceph' }, 'req-1');
  assert.equal(v.status, 'error');
  assert.equal(v.status_reason, 'No valid backend was found: no backend offers what the volume type asks for.');
  assert.match(logged.join('\n'), /scheduler: volume .* not placed: .*CapabilitiesFilter rejected backend pumice@a#a: its volume_backend_name is 'a'/);
  const message = db.get<{ user_message: string; request_id: string }>('SELECT * FROM messages WHERE resource_uuid = ?', v.id)!;
  assert.equal(message.user_message, 'schedule allocate volume: No valid backend was found: no backend offers what the volume type asks for.');
  assert.equal(message.request_id, 'req-1');
  await manager.stop();
});

test("a driver failure's user message names the file, not the server's directories; the status reason keeps it", async () => {
  const { service, settle, manager, fakes, db } = await setup();
  const member = ctx('p1', ['member']);
  for (const fake of fakes.values()) fake.failWith = { op: 'create', error: new Error("ENOSPC: no space left on device, open '/nonexistent/volumes/a/volume-x.tmp'"), times: 1 };
  const v = service.createVolume(member, { size: 1 }, 'r');
  await settle();
  const failed = service.volume(member, v.id);
  assert.equal(failed.status, 'error');
  assert.match(failed.status_reason!, /\/nonexistent\/volumes\/a\/volume-x\.tmp/);
  const message = db.get<{ user_message: string }>('SELECT * FROM messages WHERE resource_uuid = ?', v.id)!;
  assert.equal(message.user_message, "create volume: ENOSPC: no space left on device, open 'volume-x.tmp'");
  await manager.stop();
});

test('quotas: count and gigabytes are enforced with 413s, extend counts the growth', async () => {
  const { service, settle, manager } = await setup();
  const member = ctx('p1', ['member']);
  const big = service.createVolume(member, { size: 8 }, 'r');
  const e1 = errorOf(() => service.createVolume(member, { size: 3 }, 'r'));
  assert.equal(e1.status, 413);
  assert.match(e1.message, /VolumeSizeExceedsAvailableQuota: .*Requested 3G, quota is 10G and 8G has been consumed/);
  service.createVolume(member, { size: 1 }, 'r');
  service.createVolume(member, { size: 1 }, 'r');
  const e2 = errorOf(() => service.createVolume(member, { size: 1 }, 'r'));
  assert.match(e2.message, /VolumeLimitExceeded: Maximum number of volumes allowed \(3\)/);
  await settle();
  assert.equal(errorOf(() => service.extendVolume(member, big.id, 9, 0)).status, 413);
  assert.equal(service.quotas.usage('p1').volumes, 3);
  await manager.stop();
});

test('state rules: delete with snapshots is a 409 unless cascade; in-use needs force for snapshots', async () => {
  const { service, settle, manager, fakes } = await setup();
  const member = ctx('p1', ['member']);
  const v = service.createVolume(member, { size: 1 }, 'r');
  await settle();
  const s = service.createSnapshot(member, { volumeId: v.id, force: false });
  await settle();
  const e = errorOf(() => service.deleteVolume(member, v.id, { cascade: false, force: false }));
  assert.equal(e.status, 409);
  assert.match(e.message, new RegExp(`1 dependent snapshot\\(s\\) \\(${s.id}\\).*cascade`));
  service.attach(member, v.id, { mountpoint: '/dev/vdb' });
  assert.equal(service.volume(member, v.id).status, 'in-use');
  assert.match(errorOf(() => service.createSnapshot(member, { volumeId: v.id, force: false })).message, /use force for an in-use volume/);
  assert.equal(errorOf(() => service.deleteVolume(member, v.id, { cascade: true, force: false })).status, 409);
  service.detach(member, v.id, null);
  service.deleteVolume(member, v.id, { cascade: true, force: false });
  await settle();
  const backend = fakes.get(v.backend!)!;
  assert.equal(backend.snapshots.size, 0);
  assert.equal(backend.volumes.size, 0);
  await manager.stop();
});

test('a driver failure puts the volume in error with the reason; extend failure is error_extending', async () => {
  const { service, settle, manager, fakes, db } = await setup();
  const member = ctx('p1', ['member']);
  for (const fake of fakes.values()) fake.failNext = 'create';
  const v = service.createVolume(member, { size: 1 }, 'r');
  await settle();
  const failed = service.volume(member, v.id);
  assert.equal(failed.status, 'error');
  assert.equal(failed.status_reason, 'fake create failure');
  for (const fake of fakes.values()) fake.failNext = null;
  const ok = service.createVolume(member, { size: 1 }, 'r');
  await settle();
  fakes.get(ok.backend!)!.failNext = 'extend';
  service.extendVolume(member, ok.id, 2, 0);
  await settle();
  assert.equal(service.volume(member, ok.id).status, 'error_extending');
  assert.equal(service.volume(member, ok.id).size_gib, 1);
  assert.ok(db.get("SELECT 1 FROM messages WHERE resource_uuid = ? AND user_message LIKE 'extend volume: %'", ok.id));
  await manager.stop();
});

test('the reader role cannot write (the policy table decides, not the service); a conflicting operation gets a 409 naming the state', async () => {
  const { service, settle, manager, fakes } = await setup();
  const policy = new PolicyTable(volumePolicyDefaults, {});
  assert.equal(policy.check('volume:create', ctx('p1', ['reader']), { project_id: 'p1' }), false);
  assert.equal(policy.check('volume:create', ctx('p1', ['member']), { project_id: 'p1' }), true);
  const member = ctx('p1', ['member']);
  let open!: () => void;
  for (const fake of fakes.values()) fake.gate = new Promise((r) => (open = r));
  const v = service.createVolume(member, { size: 1 }, 'r');
  const e = errorOf(() => service.extendVolume(member, v.id, 2, 0));
  assert.equal(e.status, 409);
  assert.match(e.message, /is 'creating'; extend .*needs it to be 'available'/);
  for (const fake of fakes.values()) fake.gate = null;
  open();
  await settle();
  assert.equal(service.volume(member, v.id).status, 'available');
  await manager.stop();
});

test('a backend that is down is reported by the scheduler and comes back on heartbeat', async () => {
  const { service, manager, fakes } = await setup();
  const logged: string[] = [];
  (manager as unknown as { log: (m: string) => void }).log = (m) => logged.push(m);
  for (const fake of fakes.values()) fake.down = 'Error connecting to the cluster: keyring missing';
  await manager.heartbeat();
  const v = service.createVolume(ctx('p1', ['member']), { size: 1 }, 'r');
  assert.equal(v.status, 'error');
  // The member reads that a backend is unavailable; why (the keyring) is for the operator's log.
  assert.equal(v.status_reason, 'No valid backend was found: a storage backend is unavailable.');
  assert.match(logged.join('\n'), /its volume service is down \(Error connecting to the cluster: keyring missing\)/);
  for (const fake of fakes.values()) fake.down = null;
  await manager.heartbeat();
  assert.equal(service.createVolume(ctx('p1', ['member']), { size: 1 }, 'r').status, 'creating');
  await manager.stop();
});
