/**
 * Generic volume groups (Block Storage 3.11-3.20) on the local backend,
 * through real clients: openstacksdk (group types with specs, groups,
 * create-from-src, reset, delete with volumes) and `openstack volume group
 * ...` (types, groups, group snapshots) at --os-volume-api-version 3.20,
 * plus raw calls for what neither client sends (add_volumes, group snapshot
 * reset). Every answer is checked by the server (PUMICE_VALIDATE_RESPONSES=1),
 * here against the route's declaration, and against tempest's group schemas
 * where published; every group route must be exercised. Then the bad-input
 * table of these routes: each case its 4xx, an OpenStack fault naming the
 * cause, and nothing changed in the tables the routes write.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { responseProblem, type AnyRouteSpec } from '../../src/http/declare.ts';
import { declaredGroupRoutes } from '../../src/volume/api/app.ts';
import type { VolumeGroups } from '../../src/volume/groups.ts';
import { ApiClient, cliEnv, openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const specs: AnyRouteSpec[] = declaredGroupRoutes({ types: {} } as unknown as VolumeGroups, 1000);
const UNKNOWN = '00000000-0000-4000-8000-000000000000';

function specFor(method: string, url: string, minor: number): AnyRouteSpec | null {
  const bare = url.split('?')[0]!.replace(/^.*\/volume\/v3\/[0-9a-f]{32}/, '/v3');
  const matching = specs.filter((s) => s.method === method && new RegExp(`^${s.path.split('/').map((seg) => (seg.startsWith(':') ? '[^/]+' : seg)).join('/')}/?$`).test(bare));
  const literal = matching.filter((s) => !s.path.includes(':'));
  const candidates = literal.length > 0 ? literal : matching;
  return candidates.find((s) => !s.versions || (minor >= s.versions.min && minor <= s.versions.max)) ?? null;
}

describe('generic volume groups', { timeout: 240_000 }, () => {
  let pumice: PumiceProcess;
  let admin: ApiClient;
  let member: ApiClient;
  let other: ApiClient;
  let memberEnv: Record<string, string>;
  const covered = new Set<string>();
  const problems: string[] = [];
  const tempestCases: { api: 'volume'; schema: string; version: string; status: number; body: unknown; where: string }[] = [];

  async function call(client: ApiClient, mv: string, method: string, url: string, expect: number, body?: unknown, tempest?: string): Promise<any> {
    const r = await client.request(method, `${client.volumeUrl}${url}`, body, { 'OpenStack-API-Version': `volume ${mv}` });
    const minor = Number(mv.split('.')[1]);
    const where = `${method} ${url} @${mv} -> ${r.status}`;
    if (r.status !== expect) problems.push(`${where}: expected ${expect}: ${r.text.slice(0, 300)}`);
    if (r.status < 400) {
      const spec = specFor(method, `/v3${url}`, minor);
      if (spec) {
        covered.add(`${spec.method} ${spec.path}`);
        const problem = responseProblem(spec, r.status, minor, r.body);
        if (problem) problems.push(`${where}: declared schema: ${problem}`);
      }
      if (tempest) tempestCases.push({ api: 'volume', schema: tempest, version: mv, status: r.status, body: r.body ?? null, where });
    } else {
      const fault = r.body && typeof r.body === 'object' ? (Object.values(r.body)[0] as { code?: number; message?: string }) : undefined;
      if (!fault || fault.code !== r.status || !fault.message) problems.push(`${where}: not an OpenStack fault: ${r.text.slice(0, 200)}`);
    }
    return r.body;
  }

  async function waitFor(client: ApiClient, url: string, key: string, statuses: string[]): Promise<any> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const r = await client.request('GET', `${client.volumeUrl}${url}`, undefined, { 'OpenStack-API-Version': 'volume 3.20' });
      if (r.status === 404 && statuses.includes('deleted')) return null;
      if (r.status === 200 && statuses.includes(r.body[key].status)) return r.body[key];
      if (Date.now() > deadline) throw new Error(`${url} is ${r.body?.[key]?.status ?? r.status}, not ${statuses.join('/')}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  async function sdk(env: Record<string, string>, script: string, ...args: string[]): Promise<any> {
    const { stdout } = await execFileAsync('/usr/bin/python3', ['-c', `import json, sys, openstack\nconn = openstack.connect(block_storage_api_version='3')\n${script}`, ...args], { env: cliEnv(env), timeout: 60_000 });
    return JSON.parse(stdout.trim().split('\n').pop()!);
  }

  before(async () => {
    pumice = await startPumice({ config: '[DEFAULT]\ndefault_group_type = gt-default\n' });
    admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const ok = async (r: Promise<{ status: number; body: any; text: string }>, status: number) => {
      const reply = await r;
      assert.equal(reply.status, status, reply.text);
      return reply.body;
    };
    const role = async (name: string) => (await ok(admin.request('GET', `/identity/v3/roles?name=${name}`), 200)).roles[0].id as string;
    for (const [user, project] of [['gr-member', 'gr-p1'], ['gr-other', 'gr-p2']] as const) {
      const projectId = (await ok(admin.request('POST', '/identity/v3/projects', { project: { name: project, domain_id: 'default' } }), 201)).project.id as string;
      const userId = (await ok(admin.request('POST', '/identity/v3/users', { user: { name: user, password: `pw-${user}`, domain_id: 'default' } }), 201)).user.id as string;
      await ok(admin.request('PUT', `/identity/v3/projects/${projectId}/users/${userId}/roles/${await role('member')}`), 204);
    }
    member = await ApiClient.login(pumice.url, 'gr-member', 'pw-gr-member', 'gr-p1');
    other = await ApiClient.login(pumice.url, 'gr-other', 'pw-gr-other', 'gr-p2');
    memberEnv = { ...pumice.adminEnv, OS_USERNAME: 'gr-member', OS_PASSWORD: 'pw-gr-member', OS_PROJECT_NAME: 'gr-p1' };
  });

  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
  });

  test('group types, groups and group snapshots through openstacksdk, the openstack CLI and the API', async () => {
    const osc = (env: Record<string, string>, args: string[]) => openstackJson<any>(env, ['--os-volume-api-version', '3.20', ...args]);
    // group types: openstacksdk creates with specs; the CLI lists, shows and sets
    const gt = await sdk(pumice.adminEnv, `
t = conn.block_storage.create_group_type(name='gt-sdk', description='d', group_specs={'consistent_group_snapshot_enabled': '<is> True'})
conn.block_storage.create_group_type_group_specs(t, {'k2': 'v2'})
specs = conn.block_storage.fetch_group_type_group_specs(t).group_specs
conn.block_storage.update_group_type_group_specs_property(t, 'k2', 'v3')
prop = conn.block_storage.get_group_type_group_specs_property(t, 'k2')
conn.block_storage.delete_group_type_group_specs_property(t, 'k2')
conn.block_storage.update_group_type(t.id, description='d2')
names = sorted(x.name for x in conn.block_storage.group_types())
print(json.dumps({'id': t.id, 'specs': specs, 'prop': prop, 'names': names}))`);
    assert.deepEqual(gt.specs, { consistent_group_snapshot_enabled: '<is> True', k2: 'v2' });
    assert.ok(gt.names.includes('gt-sdk'), JSON.stringify(gt));
    const cliType = await osc(pumice.adminEnv, ['volume', 'group', 'type', 'create', '--description', 'cli', 'gt-default']);
    assert.equal(cliType.Name, 'gt-default');
    const M = '3.70';
    await call(admin, '3.11', 'GET', '/group_types', 200, undefined, 'group_types.list_group_types');
    assert.equal((await call(member, M, 'GET', `/group_types/${gt.id}`, 200, undefined, 'group_types.show_group_type')).group_type.description, 'd2', 'openstacksdk updated the description');
    const byMember = await call(member, M, 'GET', '/group_types/default', 200, undefined, 'group_types.show_default_group_type');
    assert.equal(byMember.group_type.id, cliType.ID);
    assert.equal('group_specs' in byMember.group_type, false, 'a member does not see group specs');
    await call(member, '3.10', 'GET', '/group_types', 404);
    await call(member, M, 'POST', '/group_types', 403, { group_type: { name: 'x' } });
    const scratch = await call(admin, M, 'POST', '/group_types', 202, { group_type: { name: 'gt-scratch', is_public: false, group_specs: { a: '1' } } }, 'group_types.create_group_type');
    const S = `/group_types/${scratch.group_type.id}`;
    await call(member, M, 'GET', S, 404);
    await call(admin, M, 'PUT', S, 200, { group_type: { description: 'x' } }, 'group_types.update_group_type');
    await call(admin, M, 'POST', `${S}/group_specs`, 202, { group_specs: { b: '2' } }, 'group_types.create_or_update_group_type_specs');
    await call(admin, M, 'GET', `${S}/group_specs`, 200, undefined, 'group_types.list_group_type_specs');
    await call(admin, M, 'GET', `${S}/group_specs/a`, 200, undefined, 'group_types.show_group_type_specs_item');
    await call(admin, M, 'PUT', `${S}/group_specs/a`, 200, { a: '3' }, 'group_types.update_group_type_specs_item');
    await call(admin, M, 'DELETE', `${S}/group_specs/a`, 202, undefined, 'group_types.delete_group_type_specs_item');
    await call(admin, M, 'DELETE', S, 202, undefined, 'group_types.delete_group_type');

    // a group of two volumes: the CLI creates it, the API adds the volumes
    const volumeType = (await call(admin, M, 'GET', '/types', 200)).volume_types[0].id as string;
    const group = await osc(memberEnv, ['volume', 'group', 'create', '--name', 'g1', 'gt-sdk', volumeType]);
    const G = `/groups/${group.ID}`;
    await waitFor(member, G, 'group', ['available']);
    const volumes: string[] = [];
    for (const name of ['gv1', 'gv2']) volumes.push((await call(member, M, 'POST', '/volumes', 202, { volume: { size: 1, name } })).volume.id);
    for (const id of volumes) await member.waitVolume(id, ['available']);
    await call(member, M, 'PUT', G, 202, { group: { add_volumes: volumes.join(','), description: 'two' } }, 'groups.update_group');
    // tempest's group schemas predate project_id (3.58): they check the answers at 3.57, the declaration checks 3.70
    const detail = await call(member, M, 'GET', `${G}?list_volume=true`, 200);
    await call(member, '3.57', 'GET', `${G}?list_volume=true`, 200, undefined, 'groups.show_group');
    assert.deepEqual([...detail.group.volumes].sort(), [...volumes].sort());
    assert.equal(detail.group.project_id, member.projectId);
    await call(member, '3.13', 'GET', G, 200, undefined, 'groups.show_group');
    const vol = await call(member, M, 'GET', `/volumes/${volumes[0]}`, 200);
    assert.equal(vol.volume.group_id, group.ID, 'a member volume shows its group_id at 3.13+');
    const filtered = (await call(member, M, 'GET', `/volumes?group_id=${group.ID}`, 200)).volumes as any[];
    assert.deepEqual(filtered.map((v) => v.id).sort(), [...volumes].sort(), 'volumes filtered by group_id');
    await call(member, M, 'GET', '/groups', 200, undefined, 'groups.list_groups_no_detail');
    await call(member, M, 'GET', '/groups/detail', 200);
    await call(admin, '3.57', 'GET', '/groups/detail?all_tenants=1', 200, undefined, 'groups.list_groups_with_detail');
    await call(other, M, 'GET', G, 404);
    assert.deepEqual((await call(other, M, 'GET', '/groups', 200)).groups, []);
    await call(member, '3.12', 'GET', G, 404);

    // group snapshot through the CLI: one snapshot of each volume, marked with the group snapshot
    const gs = await osc(memberEnv, ['volume', 'group', 'snapshot', 'create', '--name', 'gs1', group.ID]);
    const GS = `/group_snapshots/${gs.ID}`;
    await waitFor(member, GS, 'group_snapshot', ['available']);
    // (OSC 6's `volume group snapshot show` and `volume group type show` fail in the client itself: 'GroupManager' object has no attribute 'show')
    const listedGs = await osc(memberEnv, ['volume', 'group', 'snapshot', 'list']);
    assert.deepEqual(listedGs.map((x: any) => [x.ID, x.Status]), [[gs.ID, 'available']]);
    assert.equal((await call(member, M, 'GET', GS, 200)).group_snapshot.project_id, member.projectId);
    await call(member, '3.57', 'GET', GS, 200, undefined, 'group_snapshots.show_group_snapshot');
    await call(member, '3.14', 'GET', '/group_snapshots', 200, undefined, 'group_snapshots.list_group_snapshots_no_detail');
    await call(member, '3.57', 'GET', `/group_snapshots/detail?group_id=${group.ID}`, 200, undefined, 'group_snapshots.list_group_snapshots_with_detail');
    await call(member, M, 'GET', '/group_snapshots/detail', 200);
    const snaps = (await call(member, M, 'GET', '/snapshots/detail', 200)).snapshots as any[];
    assert.deepEqual(snaps.filter((s) => s.group_snapshot_id === gs.ID).map((s) => s.volume_id).sort(), [...volumes].sort());
    // reset status (admins only), then back
    await call(member, M, 'POST', `${GS}/action`, 403, { reset_status: { status: 'error' } });
    await call(admin, M, 'POST', `${GS}/action`, 202, { reset_status: { status: 'error' } }, 'group_snapshots.reset_group_snapshot_status');
    assert.equal((await call(member, M, 'GET', GS, 200)).group_snapshot.status, 'error');
    await call(admin, M, 'POST', `${GS}/action`, 202, { reset_status: { status: 'available' } });
    // a second group snapshot through the API, deleted through it
    const gs2 = await call(member, M, 'POST', '/group_snapshots', 202, { group_snapshot: { group_id: group.ID, name: 'gs2' } }, 'group_snapshots.create_group_snapshot');
    await waitFor(member, `/group_snapshots/${gs2.group_snapshot.id}`, 'group_snapshot', ['available']);
    await call(member, M, 'DELETE', `/group_snapshots/${gs2.group_snapshot.id}`, 202, undefined, 'group_snapshots.delete_group_snapshot');
    await waitFor(member, `/group_snapshots/${gs2.group_snapshot.id}`, 'group_snapshot', ['deleted']);

    // a group from the group snapshot (openstacksdk), and a clone of the group (API)
    const fromSnap = await sdk(memberEnv, `
g = conn.block_storage.create_group_from_source(group_snapshot_id=sys.argv[1], source_group_id=None, name='g-from-gs')
print(json.dumps({'id': g.id}))`, gs.ID);
    const fromSnapGroup = await waitFor(member, `/groups/${fromSnap.id}`, 'group', ['available', 'error']);
    assert.equal(fromSnapGroup.status, 'available');
    assert.equal(fromSnapGroup.group_snapshot_id, gs.ID);
    const clone = await call(member, M, 'POST', '/groups/action', 202, { 'create-from-src': { name: 'g-clone', source_group_id: group.ID } }, 'groups.create_group_from_source');
    assert.equal((await waitFor(member, `/groups/${clone.group.id}`, 'group', ['available', 'error'])).status, 'available');
    const cloneVolumes = (await call(member, M, 'GET', `/groups/${clone.group.id}?list_volume=1`, 200)).group.volumes as string[];
    assert.equal(cloneVolumes.length, 2);

    // deleting: a group with a group snapshot is refused; the group snapshot goes with its member snapshots
    await call(member, M, 'POST', `${G}/action`, 400, { delete: { 'delete-volumes': true } });
    await openstack(memberEnv, ['--os-volume-api-version', '3.20', 'volume', 'group', 'snapshot', 'delete', gs.ID]);
    await waitFor(member, GS, 'group_snapshot', ['deleted']);
    assert.equal(((await call(member, M, 'GET', '/snapshots', 200)).snapshots as any[]).length, 0);
    // remove one volume; reset the group's status (admins, 3.20); delete with its volumes through each client
    await call(member, M, 'PUT', G, 202, { group: { remove_volumes: volumes[1] } });
    assert.equal((await call(member, M, 'GET', `/volumes/${volumes[1]}`, 200)).volume.group_id, null);
    await call(admin, '3.19', 'POST', `${G}/action`, 404, { reset_status: { status: 'error' } });
    await call(admin, M, 'POST', `${G}/action`, 202, { reset_status: { status: 'error' } }, 'groups.reset_group_status');
    await sdk(memberEnv, `
g = conn.block_storage.get_group(sys.argv[1])
assert g.status == 'error', g.status
conn.block_storage.delete_group(g, delete_volumes=True)
print('{}')`, group.ID);
    await waitFor(member, G, 'group', ['deleted']);
    await member.waitVolume(volumes[0]!, ['deleted']);
    assert.equal((await call(member, M, 'GET', `/volumes/${volumes[1]}`, 200)).volume.status, 'available', 'a removed volume stays');
    await openstack(memberEnv, ['--os-volume-api-version', '3.20', 'volume', 'group', 'delete', '--force', fromSnap.id]);
    await call(member, M, 'POST', `/groups/${clone.group.id}/action`, 202, { delete: { 'delete-volumes': true } }, 'groups.delete_group');
    for (const id of [fromSnap.id, clone.group.id]) await waitFor(member, `/groups/${id}`, 'group', ['deleted']);
    assert.deepEqual(((await call(member, M, 'GET', '/volumes', 200)).volumes as any[]).map((v) => v.id), [volumes[1]]);
    // an empty group goes at once
    const empty = await call(member, M, 'POST', '/groups', 202, { group: { name: 'empty', group_type: 'gt-sdk', volume_types: [volumeType] } }, 'groups.create_group');
    await call(member, M, 'POST', `/groups/${empty.group.id}/action`, 202, { delete: {} });
    await call(member, M, 'GET', `/groups/${empty.group.id}`, 404);
    await call(admin, M, 'DELETE', `/group_types/${cliType.ID}`, 202);

    assert.deepEqual(problems, [], problems.join('\n'));
    const missing = specs.map((s) => `${s.method} ${s.path}`).filter((k) => !covered.has(k));
    assert.deepEqual(missing, [], 'every group route is exercised');
  });

  test("tempest.lib accepts the answers that have a published schema", async () => {
    assert.ok(tempestCases.length >= 25, `${tempestCases.length} cases`);
    const results = await new Promise<{ index: number; ok: boolean; error: string | null }[]>((resolve, reject) => {
      const child = execFile('/usr/bin/python3', [path.join(import.meta.dirname, '..', 'helpers', 'tempest-schemas.py')], { maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
        if (error) reject(new Error(`${error.message}\n${stderr}`));
        else resolve(JSON.parse(stdout));
      });
      child.stdin!.end(JSON.stringify(tempestCases.map(({ where: _where, ...c }) => c)));
    });
    const failures = results.filter((r) => !r.ok).map((r) => `${tempestCases[r.index]!.where} (${tempestCases[r.index]!.schema}): ${r.error}`);
    assert.deepEqual(failures, [], failures.join('\n\n'));
  });

  test('bad input on every group route: its 4xx, a named cause, nothing changed', async () => {
    const db = new Database(pumice.database, { readonly: true, fileMustExist: true });
    const tables = ['group_types', 'group_type_specs', 'volume_groups', 'group_snapshots', 'volumes', 'snapshots', 'tasks'];
    const fingerprint = () => JSON.stringify(tables.map((t) => db.prepare(`SELECT * FROM ${t} ORDER BY rowid`).all()));
    const M = '3.70';
    const ok = async (client: ApiClient, method: string, url: string, status: number, body?: unknown) => {
      const r = await client.request(method, `${client.volumeUrl}${url}`, body, { 'OpenStack-API-Version': `volume ${M}` });
      assert.equal(r.status, status, r.text);
      return r.body;
    };
    const type = (await ok(admin, 'POST', '/group_types', 202, { group_type: { name: 'bi-gt', group_specs: { s: '1' } } })).group_type.id as string;
    const volumeType = (await ok(admin, 'GET', '/types', 200)).volume_types[0].id as string;
    const otherType = (await ok(admin, 'POST', '/types', 200, { volume_type: { name: 'bi-vt' } })).volume_type.id as string;
    const group = (await ok(member, 'POST', '/groups', 202, { group: { name: 'bi-g', group_type: type, volume_types: [volumeType] } })).group.id as string;
    const emptyGroup = (await ok(member, 'POST', '/groups', 202, { group: { name: 'bi-empty', group_type: type, volume_types: [volumeType] } })).group.id as string;
    const vol = (await ok(member, 'POST', '/volumes', 202, { volume: { size: 1 } })).volume.id as string;
    const loose = (await ok(member, 'POST', '/volumes', 202, { volume: { size: 1 } })).volume.id as string;
    const typed = (await ok(member, 'POST', '/volumes', 202, { volume: { size: 1, volume_type: otherType } })).volume.id as string;
    const otherVol = (await ok(other, 'POST', '/volumes', 202, { volume: { size: 1 } })).volume.id as string;
    for (const id of [vol, loose, typed]) await member.waitVolume(id, ['available']);
    await other.waitVolume(otherVol, ['available']);
    await ok(member, 'PUT', `/groups/${group}`, 202, { group: { add_volumes: vol } });
    const gs = (await ok(member, 'POST', '/group_snapshots', 202, { group_snapshot: { group_id: group, name: 'bi-gs' } })).group_snapshot.id as string;
    await waitFor(member, `/group_snapshots/${gs}`, 'group_snapshot', ['available']);
    const memberSnapshot = (await ok(member, 'GET', `/snapshots?volume_id=${vol}`, 200)).snapshots[0].id as string;

    interface Case { name: string; as?: ApiClient; mv?: string; method: string; path: string; body?: unknown; raw?: string; expect: number; message?: RegExp }
    const T = '/group_types';
    const cases: Case[] = [
      // group types
      { name: 'type: before 3.11', mv: '3.10', method: 'GET', path: T, expect: 404, message: /3\.11/ },
      { name: 'type: member creates', method: 'POST', path: T, body: { group_type: { name: 'x' } }, expect: 403 },
      { name: 'type: no body', as: admin, method: 'POST', path: T, expect: 400 },
      { name: 'type: not JSON', as: admin, method: 'POST', path: T, raw: '{"group_type":', expect: 400 },
      { name: 'type: no name', as: admin, method: 'POST', path: T, body: { group_type: {} }, expect: 400, message: /name/ },
      { name: 'type: blank name', as: admin, method: 'POST', path: T, body: { group_type: { name: '  ' } }, expect: 400, message: /name/ },
      { name: 'type: name too long', as: admin, method: 'POST', path: T, body: { group_type: { name: 'n'.repeat(256) } }, expect: 400, message: /name/ },
      { name: 'type: unknown key', as: admin, method: 'POST', path: T, body: { group_type: { name: 'x', colour: 'red' } }, expect: 400, message: /colour/ },
      { name: 'type: specs not strings', as: admin, method: 'POST', path: T, body: { group_type: { name: 'x', group_specs: { a: 1 } } }, expect: 400, message: /group_specs/ },
      { name: 'type: is_public not a boolean', as: admin, method: 'POST', path: T, body: { group_type: { name: 'x', is_public: 'perhaps' } }, expect: 400, message: /is_public/ },
      { name: 'type: name taken', as: admin, method: 'POST', path: T, body: { group_type: { name: 'bi-gt' } }, expect: 409, message: /already exists/ },
      { name: 'type: show unknown', method: 'GET', path: `${T}/${UNKNOWN}`, expect: 404 },
      { name: 'type: id too long', method: 'GET', path: `${T}/${'x'.repeat(300)}`, expect: 400 },
      { name: 'type: list with an unknown filter', method: 'GET', path: `${T}?colour=red`, expect: 400, message: /colour/ },
      { name: 'type: list with a bad is_public', as: admin, method: 'GET', path: `${T}?is_public=perhaps`, expect: 400, message: /is_public/ },
      { name: 'type: update nothing', as: admin, method: 'PUT', path: `${T}/${type}`, body: { group_type: {} }, expect: 400, message: /Nothing to update/ },
      { name: 'type: update unknown', as: admin, method: 'PUT', path: `${T}/${UNKNOWN}`, body: { group_type: { name: 'y' } }, expect: 404 },
      { name: 'type: member updates', method: 'PUT', path: `${T}/${type}`, body: { group_type: { name: 'y' } }, expect: 403 },
      { name: 'type: delete one in use', as: admin, method: 'DELETE', path: `${T}/${type}`, expect: 400, message: /in use.*Delete those groups/ },
      { name: 'type: member deletes', method: 'DELETE', path: `${T}/${type}`, expect: 403 },
      { name: 'type: delete unknown', as: admin, method: 'DELETE', path: `${T}/${UNKNOWN}`, expect: 404 },
      { name: 'type: default unset', mv: '3.11', method: 'GET', path: `${T}/default`, expect: 404, message: /default_group_type/ },
      { name: 'specs: member lists', method: 'GET', path: `${T}/${type}/group_specs`, expect: 403 },
      { name: 'specs: no group_specs', as: admin, method: 'POST', path: `${T}/${type}/group_specs`, body: { specs: {} }, expect: 400, message: /group_specs/ },
      { name: 'specs: unknown type', as: admin, method: 'POST', path: `${T}/${UNKNOWN}/group_specs`, body: { group_specs: { a: 'b' } }, expect: 404 },
      { name: 'spec: missing key', as: admin, method: 'GET', path: `${T}/${type}/group_specs/nope`, expect: 404, message: /nope/ },
      { name: 'spec: body and URI mismatch', as: admin, method: 'PUT', path: `${T}/${type}/group_specs/s`, body: { t: '1' }, expect: 400, message: /mismatch/ },
      { name: 'spec: two keys', as: admin, method: 'PUT', path: `${T}/${type}/group_specs/s`, body: { s: '1', t: '2' }, expect: 400 },
      { name: 'spec: delete missing key', as: admin, method: 'DELETE', path: `${T}/${type}/group_specs/nope`, expect: 404, message: /nope/ },
      { name: 'spec: member deletes', method: 'DELETE', path: `${T}/${type}/group_specs/s`, expect: 403 },
      // groups
      { name: 'group: before 3.13', mv: '3.12', method: 'POST', path: '/groups', body: { group: { group_type: type, volume_types: [volumeType] } }, expect: 404, message: /3\.13/ },
      { name: 'group: no body', method: 'POST', path: '/groups', expect: 400 },
      { name: 'volume: created straight into a group', method: 'POST', path: '/volumes', body: { volume: { size: 1, group_id: group } }, expect: 400, message: /add it to the group/ },
      { name: 'group: no group_type', method: 'POST', path: '/groups', body: { group: { volume_types: [volumeType] } }, expect: 400, message: /group_type/ },
      { name: 'group: no volume_types', method: 'POST', path: '/groups', body: { group: { group_type: type } }, expect: 400, message: /volume_types/ },
      { name: 'group: volume_types empty', method: 'POST', path: '/groups', body: { group: { group_type: type, volume_types: [] } }, expect: 400, message: /volume_types/ },
      { name: 'group: volume_types a string', method: 'POST', path: '/groups', body: { group: { group_type: type, volume_types: volumeType } }, expect: 400, message: /volume_types/ },
      { name: 'group: unknown group type', method: 'POST', path: '/groups', body: { group: { group_type: UNKNOWN, volume_types: [volumeType] } }, expect: 404, message: /Group type/ },
      { name: 'group: unknown volume type', method: 'POST', path: '/groups', body: { group: { group_type: type, volume_types: ['nope'] } }, expect: 404 },
      { name: 'group: bad zone', method: 'POST', path: '/groups', body: { group: { group_type: type, volume_types: [volumeType], availability_zone: 'mars' } }, expect: 400, message: /mars/ },
      { name: 'group: reader-less other project shows', as: other, method: 'GET', path: `/groups/${group}`, expect: 404 },
      { name: 'group: list with an unknown filter', method: 'GET', path: '/groups?colour=red', expect: 400, message: /colour/ },
      { name: 'group: list with a bad limit', method: 'GET', path: '/groups/detail?limit=-1', expect: 400, message: /limit/ },
      { name: 'group: list with an unknown marker', method: 'GET', path: `/groups?marker=${UNKNOWN}`, expect: 404, message: /Marker/ },
      { name: 'update: nothing', method: 'PUT', path: `/groups/${group}`, body: { group: {} }, expect: 400, message: /Nothing to update/ },
      { name: 'update: add an unknown volume', method: 'PUT', path: `/groups/${group}`, body: { group: { add_volumes: UNKNOWN } }, expect: 400, message: /not found/ },
      { name: 'update: add a non-id', method: 'PUT', path: `/groups/${group}`, body: { group: { add_volumes: 'nope' } }, expect: 400, message: /not a volume id/ },
      { name: 'update: add another project\'s volume', method: 'PUT', path: `/groups/${group}`, body: { group: { add_volumes: otherVol } }, expect: 400, message: /not found/ },
      { name: 'update: add a volume already in', method: 'PUT', path: `/groups/${group}`, body: { group: { add_volumes: vol } }, expect: 400, message: /already in group/ },
      { name: 'update: add a volume of another type', method: 'PUT', path: `/groups/${group}`, body: { group: { add_volumes: typed } }, expect: 400, message: /does not support/ },
      { name: 'update: add and remove the same', method: 'PUT', path: `/groups/${emptyGroup}`, body: { group: { add_volumes: loose, remove_volumes: loose } }, expect: 400, message: /both/ },
      { name: 'update: add in two groups', method: 'PUT', path: `/groups/${emptyGroup}`, body: { group: { add_volumes: `${loose},${vol}` } }, expect: 400, message: /already in group/ },
      { name: 'update: remove a non-member', method: 'PUT', path: `/groups/${group}`, body: { group: { remove_volumes: loose } }, expect: 400, message: /not in group/ },
      { name: 'update: add_volumes a list', method: 'PUT', path: `/groups/${group}`, body: { group: { add_volumes: [loose] } }, expect: 400, message: /add_volumes/ },
      { name: 'update: unknown group', method: 'PUT', path: `/groups/${UNKNOWN}`, body: { group: { name: 'x' } }, expect: 404 },
      { name: 'update: other project', as: other, method: 'PUT', path: `/groups/${group}`, body: { group: { name: 'x' } }, expect: 404 },
      { name: 'action: empty', method: 'POST', path: `/groups/${group}/action`, body: {}, expect: 400 },
      { name: 'action: two at once', method: 'POST', path: `/groups/${group}/action`, body: { delete: {}, reset_status: { status: 'error' } }, expect: 400 },
      { name: 'action: unknown', method: 'POST', path: `/groups/${group}/action`, body: { enable_replication: {} }, expect: 400, message: /enable_replication/ },
      { name: 'delete: a group with a group snapshot', method: 'POST', path: `/groups/${group}/action`, body: { delete: { 'delete-volumes': true } }, expect: 400, message: /group snapshot/ },
      { name: 'delete: delete-volumes not a boolean', method: 'POST', path: `/groups/${group}/action`, body: { delete: { 'delete-volumes': 'perhaps' } }, expect: 400, message: /delete-volumes/ },
      { name: 'delete: unknown group', method: 'POST', path: `/groups/${UNKNOWN}/action`, body: { delete: {} }, expect: 404 },
      { name: 'reset: member', method: 'POST', path: `/groups/${group}/action`, body: { reset_status: { status: 'error' } }, expect: 403 },
      { name: 'reset: not a status', as: admin, method: 'POST', path: `/groups/${group}/action`, body: { reset_status: { status: 'sleepy' } }, expect: 400, message: /sleepy.*Valid/ },
      { name: 'reset: no status', as: admin, method: 'POST', path: `/groups/${group}/action`, body: { reset_status: {} }, expect: 400, message: /status/ },
      { name: 'from-src: neither source', method: 'POST', path: '/groups/action', body: { 'create-from-src': { name: 'x' } }, expect: 400, message: /exactly one/ },
      { name: 'from-src: both sources', method: 'POST', path: '/groups/action', body: { 'create-from-src': { group_snapshot_id: gs, source_group_id: group } }, expect: 400, message: /exactly one/ },
      { name: 'from-src: unknown group snapshot', method: 'POST', path: '/groups/action', body: { 'create-from-src': { group_snapshot_id: UNKNOWN } }, expect: 404 },
      { name: 'from-src: another project\'s group', as: other, method: 'POST', path: '/groups/action', body: { 'create-from-src': { source_group_id: group } }, expect: 404 },
      { name: 'from-src: an empty group', method: 'POST', path: '/groups/action', body: { 'create-from-src': { source_group_id: emptyGroup } }, expect: 400, message: /no volumes/ },
      { name: 'from-src: not a uuid', method: 'POST', path: '/groups/action', body: { 'create-from-src': { group_snapshot_id: 'nope' } }, expect: 400, message: /group_snapshot_id/ },
      { name: 'from-src: before 3.14', mv: '3.13', method: 'POST', path: '/groups/action', body: { 'create-from-src': { group_snapshot_id: gs } }, expect: 404 },
      // group snapshots
      { name: 'gs: before 3.14', mv: '3.13', method: 'GET', path: '/group_snapshots', expect: 404 },
      { name: 'gs: no group_id', method: 'POST', path: '/group_snapshots', body: { group_snapshot: { name: 'x' } }, expect: 400, message: /group_id/ },
      { name: 'gs: unknown group', method: 'POST', path: '/group_snapshots', body: { group_snapshot: { group_id: UNKNOWN } }, expect: 404 },
      { name: 'gs: an empty group', method: 'POST', path: '/group_snapshots', body: { group_snapshot: { group_id: emptyGroup } }, expect: 400, message: /holds no volumes/ },
      { name: 'gs: another project\'s group', as: other, method: 'POST', path: '/group_snapshots', body: { group_snapshot: { group_id: group } }, expect: 404 },
      { name: 'gs: show unknown', method: 'GET', path: `/group_snapshots/${UNKNOWN}`, expect: 404 },
      { name: 'gs: show another project\'s', as: other, method: 'GET', path: `/group_snapshots/${gs}`, expect: 404 },
      { name: 'gs: list with an unknown filter', method: 'GET', path: '/group_snapshots/detail?colour=red', expect: 400, message: /colour/ },
      { name: 'gs: delete unknown', method: 'DELETE', path: `/group_snapshots/${UNKNOWN}`, expect: 404 },
      { name: 'gs: delete another project\'s', as: other, method: 'DELETE', path: `/group_snapshots/${gs}`, expect: 404 },
      { name: 'gs reset: member', method: 'POST', path: `/group_snapshots/${gs}/action`, body: { reset_status: { status: 'error' } }, expect: 403 },
      { name: 'gs reset: before 3.19', as: admin, mv: '3.18', method: 'POST', path: `/group_snapshots/${gs}/action`, body: { reset_status: { status: 'error' } }, expect: 404 },
      { name: 'gs reset: not a status', as: admin, method: 'POST', path: `/group_snapshots/${gs}/action`, body: { reset_status: { status: 'sleepy' } }, expect: 400, message: /sleepy/ },
      { name: 'gs reset: unknown action', as: admin, method: 'POST', path: `/group_snapshots/${gs}/action`, body: { delete: {} }, expect: 400 },
      { name: 'volume: delete a member of a group', method: 'DELETE', path: `/volumes/${vol}`, expect: 400, message: new RegExp(`belongs to group ${group}.*--remove-volumes ${vol} ${group}.*volume group delete --force ${group}`) },
      { name: 'volume: cascade delete of a member', method: 'DELETE', path: `/volumes/${vol}?cascade=true`, expect: 400, message: /belongs to group/ },
      { name: 'volume: force-delete of a member', as: admin, method: 'POST', path: `/volumes/${vol}/action`, body: { 'os-force_delete': {} }, expect: 400, message: /belongs to group/ },
      { name: 'revert: to a member of a group snapshot', method: 'POST', path: `/volumes/${vol}/action`, body: { revert: { snapshot_id: memberSnapshot } }, expect: 400, message: new RegExp(`member of group snapshot ${gs}.*volume create --snapshot ${memberSnapshot}.*group-create-from-src --group-snapshot ${gs}`) },
    ];
    const failures: string[] = [];
    for (const c of cases) {
      const before = fingerprint();
      const client = c.as ?? member;
      const headers: Record<string, string> = { 'OpenStack-API-Version': `volume ${c.mv ?? M}` };
      const r = c.raw !== undefined
        ? await fetch(`${client.volumeUrl}${c.path}`, { method: c.method, body: c.raw, headers: { ...headers, 'X-Auth-Token': client.token, 'Content-Type': 'application/json' } }).then(async (res) => ({ status: res.status, text: await res.text() }))
        : await client.request(c.method, `${client.volumeUrl}${c.path}`, c.body, headers);
      let fault: { code?: number; message?: string } | undefined;
      try {
        fault = Object.values(JSON.parse(r.text) as Record<string, { code?: number; message?: string }>)[0];
      } catch {
        fault = undefined;
      }
      const where = `${c.name} (${c.method} ${c.path}) -> ${r.status}`;
      if (r.status !== c.expect) failures.push(`${where}: expected ${c.expect}: ${r.text.slice(0, 300)}`);
      else if (!fault || fault.code !== r.status || !fault.message) failures.push(`${where}: not an OpenStack fault: ${r.text.slice(0, 200)}`);
      else if (c.message && !c.message.test(fault.message)) failures.push(`${where}: message does not match ${c.message}: ${fault.message}`);
      else if (/\bat .*\.ts:\d+|node:internal/.test(r.text)) failures.push(`${where}: leaks a stack trace`);
      if (fingerprint() !== before) failures.push(`${where}: changed the database`);
    }
    db.close();
    assert.deepEqual(failures, [], failures.join('\n'));
    assert.ok(cases.length >= 80, `${cases.length} cases`);
  });
});
