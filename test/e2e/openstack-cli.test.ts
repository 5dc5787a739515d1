/**
 * End-to-end operator workflow with the real Debian clients: one `pumice
 * serve` with two local backends, driven by `/usr/bin/openstack`,
 * `/usr/bin/cinder` and an openstacksdk script, asserting on what the clients
 * parse (`-f json`, cinderclient's tables, the SDK's resources).
 *
 * Covers: catalog and endpoints; project, user and role setup; volume
 * services per backend; a volume type pinned to the second backend and the
 * placement it causes; extend, snapshot, volume from snapshot, clone,
 * properties; deleting a volume that has snapshots; quotas and limits with
 * cinderclient and their enforcement; project isolation and the reader
 * role; the SDK's block_storage proxy. Everything is deleted again.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ApiClient, cliEnv, openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);

const config = `[DEFAULT]
enabled_backends = local,local-b

[local]
volume_driver = local
volume_backend_name = local

[local-b]
volume_driver = local
volume_backend_name = local-b
`;

const stepTimeoutMs = 90_000;
const waitTimeoutMs = 60_000;

type Row = Record<string, unknown>;
type Env = Record<string, string>;

let pumice: PumiceProcess | undefined;
let dataDir: string | undefined;
let admin: Env = {};
let demo: Env = {};
let reader: Env = {};
let demoProjectId = '';
let adminProjectId = '';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs an openstack command that must fail; returns the client's error text. */
async function openstackFails(env: Env, args: string[]): Promise<string> {
  try {
    await openstack(env, args);
  } catch (error) {
    return (error as Error).message;
  }
  assert.fail(`openstack ${args.join(' ')} succeeded but was expected to fail`);
}

/** Runs `/usr/bin/cinder ARGS` (microversion negotiated by the client, as an operator runs it). */
async function cinder(env: Env, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync('/usr/bin/cinder', args, { env: cliEnv(env), timeout: 60_000, maxBuffer: 16 << 20 });
    return stdout;
  } catch (error) {
    const e = error as { stderr?: string; message: string };
    throw new Error(`cinder ${args.join(' ')} failed: ${e.stderr || e.message}`);
  }
}

/** Parses a cinderclient (prettytable) table into rows keyed by the header cells. */
function parseTable(text: string): Record<string, string>[] {
  const lines = text.split('\n').filter((l) => l.startsWith('|'));
  const cells = lines.map((l) => l.slice(1, l.lastIndexOf('|')).split('|').map((c) => c.trim()));
  const [header, ...rows] = cells;
  assert.ok(header, `no table in cinder output:\n${text}`);
  return rows.map((r) => Object.fromEntries(header.map((h, i) => [h, r[i] ?? ''])));
}

/** A two-column `Property | Value` (or `Name | Value`) table as an object. */
function parseProperties(text: string): Record<string, string> {
  return Object.fromEntries(parseTable(text).map((r) => [Object.values(r)[0]!, Object.values(r)[1]!]));
}

/** Polls `openstack volume show` until `done` holds; fails fast on an error status. */
async function waitVolume(env: Env, ref: string, done: (v: Row) => boolean, what: string): Promise<Row> {
  const deadline = Date.now() + waitTimeoutMs;
  let last: Row = {};
  for (;;) {
    last = await openstackJson(env, ['volume', 'show', ref]);
    if (done(last)) return last;
    if (typeof last['status'] === 'string' && last['status'].startsWith('error')) {
      assert.fail(`volume ${ref} went to ${last['status']} while waiting for ${what}: ${JSON.stringify(last)}`);
    }
    if (Date.now() > deadline) assert.fail(`volume ${ref} did not reach ${what} in ${waitTimeoutMs} ms: ${JSON.stringify(last)}`);
    await sleep(200);
  }
}

const waitAvailable = (env: Env, ref: string) => waitVolume(env, ref, (v) => v['status'] === 'available', 'available');

/** Polls a list command until `done` holds for its rows. */
async function waitList(env: Env, args: string[], done: (rows: Row[]) => boolean, what: string): Promise<Row[]> {
  const deadline = Date.now() + waitTimeoutMs;
  for (;;) {
    const rows = await openstackJson<Row[]>(env, args);
    if (done(rows)) return rows;
    if (Date.now() > deadline) assert.fail(`${args.join(' ')} did not reach ${what} in ${waitTimeoutMs} ms: ${JSON.stringify(rows)}`);
    await sleep(200);
  }
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'pumice-cli-'));
  pumice = await startPumice({ config, dataDir });
  admin = pumice.adminEnv;
  demo = { ...admin, OS_USERNAME: 'demo', OS_PASSWORD: 'demo-password', OS_PROJECT_NAME: 'demo' };
  reader = { ...admin, OS_USERNAME: 'auditor', OS_PASSWORD: 'auditor-password', OS_PROJECT_NAME: 'demo' };
});

after(async () => {
  try {
    await pumice?.stop();
  } finally {
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }
});

describe('openstack CLI against Pumice', { timeout: 170_000 }, () => {
  test('catalog list shows identity and block storage for the admin project', { timeout: stepTimeoutMs }, async () => {
    const token = await openstackJson(admin, ['token', 'issue']);
    adminProjectId = token['project_id'] as string;
    assert.match(adminProjectId, /^[0-9a-f]{32}$/);

    const catalog = await openstackJson<Row[]>(admin, ['catalog', 'list']);
    const byType = new Map(catalog.map((s) => [s['Type'] as string, s]));
    for (const type of ['identity', 'block-storage', 'volumev3']) assert.ok(byType.has(type), `catalog has no ${type}: ${JSON.stringify(catalog)}`);
    const endpoints = byType.get('block-storage')!['Endpoints'] as { interface: string; url: string; region: string }[];
    assert.deepEqual(endpoints.map((e) => e.interface).sort(), ['admin', 'internal', 'public']);
    for (const e of endpoints) {
      assert.equal(e.url, `${pumice!.url}/volume/v3/${adminProjectId}`);
      assert.equal(e.region, 'RegionOne');
    }
    const identity = byType.get('identity')!['Endpoints'] as { interface: string; url: string }[];
    assert.ok(identity.some((e) => e.interface === 'public' && e.url === `${pumice!.url}/identity`), JSON.stringify(identity));
  });

  test('endpoint list shows the registered endpoints', { timeout: stepTimeoutMs }, async () => {
    const endpoints = await openstackJson<Row[]>(admin, ['endpoint', 'list']);
    const volumePublic = endpoints.find((e) => e['Service Type'] === 'block-storage' && e['Interface'] === 'public');
    assert.ok(volumePublic, JSON.stringify(endpoints));
    assert.equal(volumePublic['Enabled'], true);
    assert.equal(volumePublic['Region'], 'RegionOne');
    assert.match(volumePublic['URL'] as string, /\/volume\/v3\/.*project_id/);
    const identityPublic = endpoints.find((e) => e['Service Type'] === 'identity' && e['Interface'] === 'public');
    assert.ok(identityPublic, JSON.stringify(endpoints));
  });

  test('project, user and role set up a member of project demo', { timeout: stepTimeoutMs }, async () => {
    const project = await openstackJson(admin, ['project', 'create', 'demo']);
    assert.equal(project['name'], 'demo');
    assert.equal(project['enabled'], true);
    assert.equal(project['domain_id'], 'default');
    demoProjectId = project['id'] as string;
    assert.match(demoProjectId, /^[0-9a-f]{32}$/);

    const user = await openstackJson(admin, ['user', 'create', '--project', 'demo', '--password', demo['OS_PASSWORD']!, 'demo']);
    assert.equal(user['name'], 'demo');
    assert.equal(user['default_project_id'], demoProjectId);
    assert.equal(user['enabled'], true);

    await openstack(admin, ['role', 'add', '--project', 'demo', '--user', 'demo', 'member']);
    const assignments = await openstackJson<Row[]>(admin, ['role', 'assignment', 'list', '--project', 'demo', '--user', 'demo', '--names']);
    assert.deepEqual(assignments.map((a) => [a['Role'], a['User'], a['Project']]), [['member', 'demo@Default', 'demo@Default']]);

    const demoToken = await openstackJson(demo, ['token', 'issue']);
    assert.equal(demoToken['project_id'], demoProjectId);
  });

  test('volume service list: scheduler and one volume service per backend, all up', { timeout: stepTimeoutMs }, async () => {
    const services = await openstackJson<Row[]>(admin, ['volume', 'service', 'list']);
    const volumeHosts = services.filter((s) => s['Binary'] === 'cinder-volume').map((s) => s['Host']).sort();
    assert.deepEqual(volumeHosts, ['pumice@local', 'pumice@local-b']);
    assert.ok(services.some((s) => s['Binary'] === 'cinder-scheduler'), JSON.stringify(services));
    for (const s of services) {
      assert.equal(s['State'], 'up', JSON.stringify(s));
      assert.equal(s['Status'], 'enabled', JSON.stringify(s));
      assert.equal(s['Zone'], 'nova');
    }
  });

  test('volume type local-b is pinned to the second backend', { timeout: stepTimeoutMs }, async () => {
    const created = await openstackJson(admin, ['volume', 'type', 'create', 'local-b']);
    assert.equal(created['name'], 'local-b');
    assert.equal(created['is_public'], true);
    await openstack(admin, ['volume', 'type', 'set', 'local-b', '--property', 'volume_backend_name=local-b']);
    const shown = await openstackJson(admin, ['volume', 'type', 'show', 'local-b']);
    assert.deepEqual(shown['properties'], { volume_backend_name: 'local-b' });
  });

  test('volume create with the type lands on pumice@local-b#local-b', { timeout: stepTimeoutMs }, async () => {
    const created = await openstackJson(admin, ['volume', 'create', '--size', '1', '--type', 'local-b', 'v1']);
    assert.equal(created['name'], 'v1');
    assert.equal(created['size'], 1);
    assert.ok(['creating', 'available'].includes(created['status'] as string), JSON.stringify(created));
    const v1 = await waitAvailable(admin, 'v1');
    assert.equal(v1['os-vol-host-attr:host'], 'pumice@local-b#local-b');
    assert.equal(v1['type'], 'local-b');
    assert.equal(v1['os-vol-tenant-attr:tenant_id'], adminProjectId);
    assert.equal(v1['bootable'], 'false');
  });

  test('volume set --size extends v1 to 2 GiB', { timeout: stepTimeoutMs }, async () => {
    await openstack(admin, ['volume', 'set', '--size', '2', 'v1']);
    const v1 = await waitVolume(admin, 'v1', (v) => v['status'] === 'available' && v['size'] === 2, 'size 2');
    assert.equal(v1['size'], 2);
  });

  test('snapshot s1 of v1, a volume from it and a clone of v1', { timeout: stepTimeoutMs }, async () => {
    const v1 = await openstackJson(admin, ['volume', 'show', 'v1']);
    const snap = await openstackJson(admin, ['volume', 'snapshot', 'create', '--volume', 'v1', 's1']);
    assert.equal(snap['name'], 's1');
    assert.equal(snap['volume_id'], v1['id']);
    assert.equal(snap['size'], 2);
    const snaps = await waitList(admin, ['volume', 'snapshot', 'list'], (rows) => rows.some((r) => r['Name'] === 's1' && r['Status'] === 'available'), 's1 available');
    assert.equal(snaps.length, 1);
    const s1 = await openstackJson(admin, ['volume', 'snapshot', 'show', 's1']);
    assert.equal(s1['status'], 'available');
    assert.equal(s1['os-extended-snapshot-attributes:progress'], '100%');

    await openstackJson(admin, ['volume', 'create', '--snapshot', 's1', 'v2']);
    const v2 = await waitAvailable(admin, 'v2');
    assert.equal(v2['size'], 2);
    assert.equal(v2['snapshot_id'], s1['id']);
    assert.equal(v2['os-vol-host-attr:host'], 'pumice@local-b#local-b');
    assert.equal(v2['type'], 'local-b');

    await openstackJson(admin, ['volume', 'create', '--source', 'v1', 'v3']);
    const v3 = await waitAvailable(admin, 'v3');
    assert.equal(v3['size'], 2);
    assert.equal(v3['source_volid'], v1['id']);
    assert.equal(v3['os-vol-host-attr:host'], 'pumice@local-b#local-b');
  });

  test('volume list --long and properties', { timeout: stepTimeoutMs }, async () => {
    await openstack(admin, ['volume', 'set', '--property', 'k=v', '--property', 'tier=gold', 'v1']);
    const v1 = await openstackJson(admin, ['volume', 'show', 'v1']);
    assert.deepEqual(v1['properties'], { k: 'v', tier: 'gold' });

    const rows = await openstackJson<Row[]>(admin, ['volume', 'list', '--long']);
    assert.deepEqual(rows.map((r) => r['Name']).sort(), ['v1', 'v2', 'v3']);
    for (const r of rows) {
      assert.equal(r['Status'], 'available');
      assert.equal(r['Size'], 2);
      assert.equal(r['Type'], 'local-b');
      assert.equal(r['Bootable'], 'false');
      assert.deepEqual(r['Attached to'], []);
    }
    assert.deepEqual(rows.find((r) => r['Name'] === 'v1')!['Properties'], { k: 'v', tier: 'gold' });

    await openstack(admin, ['volume', 'unset', '--property', 'tier', 'v1']);
    assert.deepEqual((await openstackJson(admin, ['volume', 'show', 'v1']))['properties'], { k: 'v' });
  });

  test('deleting a volume with snapshots fails until the snapshot is gone', { timeout: stepTimeoutMs }, async () => {
    const message = await openstackFails(admin, ['volume', 'delete', 'v1']);
    assert.match(message, /snapshot/i);
    assert.match(message, /1 of 1 volumes failed to delete/);
    assert.equal((await openstackJson(admin, ['volume', 'show', 'v1']))['status'], 'available');

    await openstack(admin, ['volume', 'snapshot', 'delete', 's1']);
    await waitList(admin, ['volume', 'snapshot', 'list'], (rows) => rows.length === 0, 'no snapshots');

    await openstack(admin, ['volume', 'delete', 'v1', 'v2', 'v3']);
    await waitList(admin, ['volume', 'list'], (rows) => rows.length === 0, 'no volumes');
  });

  test('cinder quota-show, quota-update, quota-usage and absolute-limits', { timeout: stepTimeoutMs }, async () => {
    const shown = parseProperties(await cinder(admin, ['quota-show', demoProjectId]));
    assert.equal(shown['volumes'], '10');
    assert.equal(shown['snapshots'], '10');
    assert.equal(shown['gigabytes'], '1000');

    const updated = parseProperties(await cinder(admin, ['quota-update', '--volumes', '3', demoProjectId]));
    assert.equal(updated['volumes'], '3');
    assert.equal(parseProperties(await cinder(admin, ['quota-show', demoProjectId]))['volumes'], '3');

    const usage = new Map(parseTable(await cinder(admin, ['quota-usage', demoProjectId])).map((r) => [r['Type'], r]));
    assert.equal(usage.get('volumes')?.['Limit'], '3');
    assert.equal(usage.get('volumes')?.['In_use'], '0');
    assert.equal(usage.get('gigabytes')?.['In_use'], '0');

    const limits = parseProperties(await cinder(demo, ['absolute-limits']));
    assert.equal(limits['maxTotalVolumes'], '3');
    assert.equal(limits['totalVolumesUsed'], '0');
    assert.equal(limits['maxTotalVolumeGigabytes'], '1000');
  });

  test('the volumes quota is enforced: the 4th volume is refused with a 413', { timeout: stepTimeoutMs }, async () => {
    for (const name of ['q1', 'q2', 'q3']) await openstackJson(demo, ['volume', 'create', '--size', '1', name]);
    for (const name of ['q1', 'q2', 'q3']) await waitAvailable(demo, name);
    const message = await openstackFails(demo, ['volume', 'create', '--size', '1', 'q4']);
    assert.match(message, /VolumeLimitExceeded/);
    assert.match(message, /HTTP 413/);

    const usage = new Map(parseTable(await cinder(admin, ['quota-usage', demoProjectId])).map((r) => [r['Type'], r]));
    assert.equal(usage.get('volumes')?.['In_use'], '3');
    assert.equal(usage.get('gigabytes')?.['In_use'], '3');
    const limits = parseProperties(await cinder(demo, ['absolute-limits']));
    assert.equal(limits['totalVolumesUsed'], '3');
    assert.equal(limits['totalGigabytesUsed'], '3');
  });

  test('project isolation: demo cannot see or touch the admin volume', { timeout: stepTimeoutMs }, async () => {
    const adminVol = await openstackJson(admin, ['volume', 'create', '--size', '1', 'admin-only']);
    const adminVolId = adminVol['id'] as string;
    await waitAvailable(admin, adminVolId);

    const demoList = await openstackJson<Row[]>(demo, ['volume', 'list']);
    assert.deepEqual(demoList.map((r) => r['Name']).sort(), ['q1', 'q2', 'q3']);
    assert.ok(!demoList.some((r) => r['ID'] === adminVolId));

    const showById = await openstackFails(demo, ['volume', 'show', adminVolId]);
    assert.match(showById, new RegExp(`No volume with a name or ID of '${adminVolId}' exists`));
    const showByName = await openstackFails(demo, ['volume', 'show', 'admin-only']);
    assert.match(showByName, /No volume with a name or ID of 'admin-only' exists/);
    await openstackFails(demo, ['volume', 'delete', adminVolId]);

    const client = await ApiClient.login(pumice!.url, 'demo', demo['OS_PASSWORD']!, 'demo');
    const direct = await client.request('GET', `/volume/v3/${client.projectId}/volumes/${adminVolId}`);
    assert.equal(direct.status, 404);
    assert.equal(direct.body.itemNotFound.code, 404);

    // The admin sees every project's volumes with --all-projects.
    const all = await openstackJson<Row[]>(admin, ['volume', 'list', '--all-projects']);
    assert.deepEqual(all.map((r) => r['Name']).sort(), ['admin-only', 'q1', 'q2', 'q3']);
    assert.equal((await openstackJson(admin, ['volume', 'show', adminVolId]))['status'], 'available');
  });

  test('a reader of project demo can list volumes but not create one (403)', { timeout: stepTimeoutMs }, async () => {
    await openstackJson(admin, ['user', 'create', '--project', 'demo', '--password', reader['OS_PASSWORD']!, 'auditor']);
    await openstack(admin, ['role', 'add', '--project', 'demo', '--user', 'auditor', 'reader']);
    const listed = await openstackJson<Row[]>(reader, ['volume', 'list']);
    assert.deepEqual(listed.map((r) => r['Name']).sort(), ['q1', 'q2', 'q3']);
    const message = await openstackFails(reader, ['volume', 'create', '--size', '1', 'r1']);
    assert.match(message, /HTTP 403/);
    assert.match(message, /[Pp]olicy/);
  });

  test('openstacksdk lists, creates and deletes a volume through conn.block_storage', { timeout: stepTimeoutMs }, async () => {
    const script = `
import json, os
import openstack
conn = openstack.connect(
    auth_url=os.environ['OS_AUTH_URL'], username=os.environ['OS_USERNAME'], password=os.environ['OS_PASSWORD'],
    project_name=os.environ['OS_PROJECT_NAME'], user_domain_name='Default', project_domain_name='Default',
    region_name='RegionOne')
before = sorted(v.name for v in conn.block_storage.volumes())
vol = conn.block_storage.create_volume(size=1, name='sdk-vol', volume_type='local-b', metadata={'made-by': 'sdk'})
vol = conn.block_storage.wait_for_status(vol, status='available', failures=['error'], interval=0.2, wait=60)
got = conn.block_storage.get_volume(vol.id)
during = sorted(v.name for v in conn.block_storage.volumes(details=True))
conn.block_storage.delete_volume(vol)
conn.block_storage.wait_for_delete(vol, interval=0.2, wait=60)
after = sorted(v.name for v in conn.block_storage.volumes())
missing = None
try:
    conn.block_storage.get_volume(vol.id)
except openstack.exceptions.ResourceNotFound as e:
    missing = e.status_code
print(json.dumps({'before': before, 'during': during, 'after': after, 'id': got.id, 'size': got.size,
                  'status': got.status, 'host': got.host, 'type': got.volume_type, 'metadata': got.metadata,
                  'missing': missing}))
`;
    const { stdout } = await execFileAsync('/usr/bin/python3', ['-c', script], { env: cliEnv(admin), timeout: 120_000 });
    const result = JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>;
    assert.deepEqual(result['before'], ['admin-only']);
    assert.deepEqual(result['during'], ['admin-only', 'sdk-vol']);
    assert.deepEqual(result['after'], ['admin-only']);
    assert.match(result['id'] as string, /^[0-9a-f-]{36}$/);
    assert.equal(result['size'], 1);
    assert.equal(result['status'], 'available');
    assert.equal(result['host'], 'pumice@local-b#local-b');
    assert.equal(result['type'], 'local-b');
    assert.deepEqual(result['metadata'], { 'made-by': 'sdk' });
    assert.equal(result['missing'], 404);
  });

  test('cleanup: every volume is deleted and the lists are empty', { timeout: stepTimeoutMs }, async () => {
    await openstack(demo, ['volume', 'delete', 'q1', 'q2', 'q3']);
    await openstack(admin, ['volume', 'delete', 'admin-only']);
    await waitList(admin, ['volume', 'list', '--all-projects'], (rows) => rows.length === 0, 'no volumes in any project');
    assert.deepEqual(await openstackJson<Row[]>(admin, ['volume', 'list']), []);
    assert.deepEqual(await openstackJson<Row[]>(demo, ['volume', 'list']), []);
    const usage = new Map(parseTable(await cinder(admin, ['quota-usage', demoProjectId])).map((r) => [r['Type'], r]));
    assert.equal(usage.get('volumes')?.['In_use'], '0');
  });

  test('the server stops cleanly on SIGTERM', { timeout: 30_000 }, async () => {
    const code = await pumice!.stop();
    assert.equal(code, 0, pumice!.output());
  });
});
