/**
 * Bad input on the Block Storage routes of issue 18 (volume transfers, QoS
 * specs, manage/unmanage of volumes and snapshots, os-reimage, os-retype,
 * os-migrate_volume), in the manner of bad-input.test.ts:
 * each case gets its 4xx (never a 5xx), an OpenStack fault whose code is the
 * status and whose message names the cause, no stack trace or path, and
 * changes nothing (a fingerprint of the tables these routes write and of the
 * local backend's directory is compared after every case).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ApiClient, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

type Caller = 'admin' | 'member' | 'reader' | 'other';

interface Case {
  name: string;
  method: string;
  /** `{V}` is the caller's /volume/v3/<project> prefix. */
  path: string;
  as?: Caller;
  body?: unknown;
  raw?: string;
  mv?: string;
  expect: number;
  message?: RegExp;
}

const UNKNOWN = '00000000-0000-4000-8000-000000000000';
const tables = ['volumes', 'snapshots', 'volume_transfers', 'qos_specs', 'volume_types', 'tasks'];

describe('bad input on transfers, QoS specs and manage/unmanage', { timeout: 180_000 }, () => {
  let pumice: PumiceProcess;
  let db: Database.Database;
  const clients = {} as Record<Caller, ApiClient>;
  const F = {} as { vol: string; offeredVol: string; transfer: string; otherVol: string; qos: string; qosOther: string; type: string; host: string; localDir: string };

  function fingerprint(): string {
    const parts: Record<string, unknown> = {};
    for (const table of tables) parts[table] = db.prepare(`SELECT * FROM ${table} ORDER BY rowid`).all();
    parts['dir'] = readdirSync(F.localDir).sort();
    return JSON.stringify(parts);
  }

  before(async () => {
    pumice = await startPumice();
    db = new Database(pumice.database, { readonly: true, fileMustExist: true });
    const admin = (clients.admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin'));
    const ok = async (r: Promise<{ status: number; body: any; text: string }>, status: number) => {
      const reply = await r;
      assert.equal(reply.status, status, reply.text);
      return reply.body;
    };
    const role = async (name: string) => (await ok(admin.request('GET', `/identity/v3/roles?name=${name}`), 200)).roles[0].id as string;
    for (const [user, project, roleName] of [['bi-member', 'bi-p1', 'member'], ['bi-reader', 'bi-p1', 'reader'], ['bi-other', 'bi-p2', 'member']] as const) {
      let projectId = (await ok(admin.request('GET', `/identity/v3/projects?name=${project}`), 200)).projects[0]?.id as string | undefined;
      projectId ??= (await ok(admin.request('POST', '/identity/v3/projects', { project: { name: project, domain_id: 'default' } }), 201)).project.id as string;
      const userId = (await ok(admin.request('POST', '/identity/v3/users', { user: { name: user, password: `pw-${user}`, domain_id: 'default' } }), 201)).user.id as string;
      await ok(admin.request('PUT', `/identity/v3/projects/${projectId}/users/${userId}/roles/${await role(roleName)}`), 204);
    }
    clients.member = await ApiClient.login(pumice.url, 'bi-member', 'pw-bi-member', 'bi-p1');
    clients.reader = await ApiClient.login(pumice.url, 'bi-reader', 'pw-bi-reader', 'bi-p1');
    clients.other = await ApiClient.login(pumice.url, 'bi-other', 'pw-bi-other', 'bi-p2');
    const m = clients.member;
    F.vol = (await ok(m.request('POST', `${m.volumeUrl}/volumes`, { volume: { size: 1 } }), 202)).volume.id;
    F.offeredVol = (await ok(m.request('POST', `${m.volumeUrl}/volumes`, { volume: { size: 1 } }), 202)).volume.id;
    F.otherVol = (await ok(clients.other.request('POST', `${clients.other.volumeUrl}/volumes`, { volume: { size: 1 } }), 202)).volume.id;
    for (const id of [F.vol, F.offeredVol]) await m.waitVolume(id, ['available']);
    await clients.other.waitVolume(F.otherVol, ['available']);
    F.transfer = (await ok(m.request('POST', `${m.volumeUrl}/os-volume-transfer`, { transfer: { volume_id: F.offeredVol } }), 202)).transfer.id;
    F.qos = (await ok(admin.request('POST', `${admin.volumeUrl}/qos-specs`, { qos_specs: { name: 'bi-qos', total_iops_sec: '10' } }), 200)).qos_specs.id;
    F.qosOther = (await ok(admin.request('POST', `${admin.volumeUrl}/qos-specs`, { qos_specs: { name: 'bi-qos-2' } }), 200)).qos_specs.id;
    F.type = (await ok(admin.request('POST', `${admin.volumeUrl}/types`, { volume_type: { name: 'bi-type' } }), 200)).volume_type.id;
    await ok(admin.request('GET', `${admin.volumeUrl}/qos-specs/${F.qos}/associate?vol_type_id=${F.type}`), 202);
    const elsewhere = (await ok(admin.request('POST', `${admin.volumeUrl}/types`, { volume_type: { name: 'bi-elsewhere' } }), 200)).volume_type.id as string;
    await ok(admin.request('POST', `${admin.volumeUrl}/types/${elsewhere}/extra_specs`, { extra_specs: { volume_backend_name: 'no-such-backend' } }), 200);
    F.host = (await ok(admin.request('GET', `${admin.volumeUrl}/scheduler-stats/get_pools`), 200)).pools[0].name;
    F.localDir = join(pumice.dataDir, 'volumes', 'local');
    writeFileSync(join(F.localDir, 'bi-adoptable'), Buffer.alloc(4096, 1));
  });

  after(async () => {
    db?.close();
    await pumice?.stop();
  });

  test('every case is refused with its 4xx, a named cause, and nothing changed', async (t) => {
    const V = '{V}';
    const T = `${V}/volume-transfers`;
    const Q = `${V}/qos-specs`;
    const mv55 = '3.55';
    const cases: Case[] = [
      // volume transfers
      { name: 'transfer: no body', method: 'POST', path: T, mv: mv55, expect: 400 },
      { name: 'transfer: not JSON', method: 'POST', path: T, mv: mv55, raw: '{"transfer": ', expect: 400 },
      { name: 'transfer: empty object', method: 'POST', path: T, mv: mv55, body: {}, expect: 400, message: /transfer/ },
      { name: 'transfer: no volume_id', method: 'POST', path: T, mv: mv55, body: { transfer: {} }, expect: 400, message: /volume_id/ },
      { name: 'transfer: volume_id not a uuid', method: 'POST', path: T, mv: mv55, body: { transfer: { volume_id: 'nope' } }, expect: 400, message: /volume_id/ },
      { name: 'transfer: unknown key', method: 'POST', path: T, mv: mv55, body: { transfer: { volume_id: UNKNOWN, colour: 'red' } }, expect: 400, message: /colour/ },
      { name: 'transfer: name too long', method: 'POST', path: T, mv: mv55, body: { transfer: { volume_id: UNKNOWN, name: 'n'.repeat(256) } }, expect: 400, message: /name/ },
      { name: 'transfer: no_snapshots not a boolean', method: 'POST', path: T, mv: mv55, body: { transfer: { volume_id: UNKNOWN, no_snapshots: 'perhaps' } }, expect: 400, message: /no_snapshots/ },
      { name: 'transfer: no_snapshots on the legacy route', method: 'POST', path: `${V}/os-volume-transfer`, body: { transfer: { volume_id: UNKNOWN, no_snapshots: true } }, expect: 400, message: /no_snapshots/ },
      { name: 'transfer: /volume-transfers before 3.55', method: 'POST', path: T, mv: '3.54', body: { transfer: { volume_id: UNKNOWN } }, expect: 404 },
      { name: 'transfer: unknown volume', method: 'POST', path: T, mv: mv55, body: { transfer: { volume_id: UNKNOWN } }, expect: 404, message: /could not be found/ },
      { name: 'transfer: another project\'s volume', method: 'POST', path: T, mv: mv55, body: { transfer: { volume_id: '{otherVol}' } }, expect: 404 },
      { name: 'transfer: reader', method: 'POST', path: T, mv: mv55, as: 'reader', body: { transfer: { volume_id: '{vol}' } }, expect: 403 },
      { name: 'transfer: volume already offered', method: 'POST', path: T, mv: mv55, body: { transfer: { volume_id: '{offeredVol}' } }, expect: 409, message: /awaiting-transfer/ },
      { name: 'transfer: show unknown', method: 'GET', path: `${T}/${UNKNOWN}`, mv: mv55, expect: 404 },
      { name: 'transfer: show another project\'s', method: 'GET', path: `${T}/{transfer}`, mv: mv55, as: 'other', expect: 404 },
      { name: 'transfer: id too long', method: 'GET', path: `${T}/${'x'.repeat(300)}`, mv: mv55, expect: 400 },
      { name: 'transfer: list with an unknown filter', method: 'GET', path: `${T}?colour=red`, mv: mv55, expect: 400, message: /colour/ },
      { name: 'transfer: list with a bad all_tenants', method: 'GET', path: `${T}/detail?all_tenants=perhaps`, mv: mv55, expect: 400, message: /all_tenants/ },
      { name: 'accept: no body', method: 'POST', path: `${T}/{transfer}/accept`, mv: mv55, as: 'other', expect: 400 },
      { name: 'accept: no auth_key', method: 'POST', path: `${T}/{transfer}/accept`, mv: mv55, as: 'other', body: { accept: {} }, expect: 400, message: /auth_key/ },
      { name: 'accept: empty auth_key', method: 'POST', path: `${T}/{transfer}/accept`, mv: mv55, as: 'other', body: { accept: { auth_key: '' } }, expect: 400, message: /auth_key/ },
      { name: 'accept: auth_key a number', method: 'POST', path: `${T}/{transfer}/accept`, mv: mv55, as: 'other', body: { accept: { auth_key: 42 } }, expect: 400, message: /auth_key/ },
      { name: 'accept: wrong auth_key', method: 'POST', path: `${T}/{transfer}/accept`, mv: mv55, as: 'other', body: { accept: { auth_key: '0123456789abcdef' } }, expect: 400, message: /invalid auth key/ },
      { name: 'accept: unknown transfer', method: 'POST', path: `${T}/${UNKNOWN}/accept`, mv: mv55, as: 'other', body: { accept: { auth_key: 'k' } }, expect: 404 },
      { name: 'accept: reader', method: 'POST', path: `${T}/{transfer}/accept`, mv: mv55, as: 'reader', body: { accept: { auth_key: 'k' } }, expect: 403 },
      { name: 'transfer delete: unknown', method: 'DELETE', path: `${T}/${UNKNOWN}`, mv: mv55, expect: 404 },
      { name: 'transfer delete: another project', method: 'DELETE', path: `${T}/{transfer}`, mv: mv55, as: 'other', expect: 404 },
      { name: 'transfer delete: reader', method: 'DELETE', path: `${T}/{transfer}`, mv: mv55, as: 'reader', expect: 403 },
      // QoS specs
      { name: 'qos: member creates', method: 'POST', path: Q, body: { qos_specs: { name: 'x' } }, expect: 403 },
      { name: 'qos: no body', method: 'POST', path: Q, as: 'admin', expect: 400 },
      { name: 'qos: no name', method: 'POST', path: Q, as: 'admin', body: { qos_specs: { total_iops_sec: '1' } }, expect: 400, message: /name/ },
      { name: 'qos: blank name', method: 'POST', path: Q, as: 'admin', body: { qos_specs: { name: '   ' } }, expect: 400, message: /name/ },
      { name: 'qos: unknown consumer', method: 'POST', path: Q, as: 'admin', body: { qos_specs: { name: 'x', consumer: 'middle-end' } }, expect: 400, message: /consumer/ },
      { name: 'qos: limit not a number', method: 'POST', path: Q, as: 'admin', body: { qos_specs: { name: 'x', total_iops_sec: 'fast' } }, expect: 400, message: /total_iops_sec.*number/ },
      { name: 'qos: value an object', method: 'POST', path: Q, as: 'admin', body: { qos_specs: { name: 'x', total_iops_sec: { a: 1 } } }, expect: 400, message: /total_iops_sec/ },
      { name: 'qos: name taken', method: 'POST', path: Q, as: 'admin', body: { qos_specs: { name: 'bi-qos' } }, expect: 409, message: /already exists/ },
      { name: 'qos: show unknown', method: 'GET', path: `${Q}/${UNKNOWN}`, as: 'admin', expect: 404 },
      { name: 'qos: member lists', method: 'GET', path: Q, expect: 403 },
      { name: 'qos: set on unknown', method: 'PUT', path: `${Q}/${UNKNOWN}`, as: 'admin', body: { qos_specs: { total_iops_sec: '1' } }, expect: 404 },
      { name: 'qos: set nothing', method: 'PUT', path: `${Q}/{qos}`, as: 'admin', body: { qos_specs: {} }, expect: 400, message: /qos_specs/ },
      { name: 'qos: set a bad consumer', method: 'PUT', path: `${Q}/{qos}`, as: 'admin', body: { qos_specs: { consumer: 'nobody' } }, expect: 400, message: /consumer/ },
      { name: 'qos: set a bad limit', method: 'PUT', path: `${Q}/{qos}`, as: 'admin', body: { qos_specs: { read_bytes_sec_per_gb: '-5' } }, expect: 400, message: /read_bytes_sec_per_gb/ },
      { name: 'qos: delete_keys empty', method: 'PUT', path: `${Q}/{qos}/delete_keys`, as: 'admin', body: { keys: [] }, expect: 400, message: /keys/ },
      { name: 'qos: delete_keys not a list', method: 'PUT', path: `${Q}/{qos}/delete_keys`, as: 'admin', body: { keys: 'total_iops_sec' }, expect: 400, message: /keys/ },
      { name: 'qos: delete_keys a key it lacks', method: 'PUT', path: `${Q}/{qos}/delete_keys`, as: 'admin', body: { keys: ['total_iops_sec', 'nope'] }, expect: 404, message: /nope/ },
      { name: 'qos: associate without a type', method: 'GET', path: `${Q}/{qos}/associate`, as: 'admin', expect: 400, message: /vol_type_id/ },
      { name: 'qos: associate an unknown type', method: 'GET', path: `${Q}/{qos}/associate?vol_type_id=${UNKNOWN}`, as: 'admin', expect: 404 },
      { name: 'qos: associate an unknown spec', method: 'GET', path: `${Q}/${UNKNOWN}/associate?vol_type_id={type}`, as: 'admin', expect: 404 },
      { name: 'qos: a type holds one spec', method: 'GET', path: `${Q}/{qosOther}/associate?vol_type_id={type}`, as: 'admin', expect: 400, message: /already associated.*Disassociate/ },
      { name: 'qos: member associates', method: 'GET', path: `${Q}/{qos}/associate?vol_type_id={type}`, expect: 403 },
      { name: 'qos: disassociate an unknown type', method: 'GET', path: `${Q}/{qos}/disassociate?vol_type_id=${UNKNOWN}`, as: 'admin', expect: 404 },
      { name: 'qos: associations of unknown', method: 'GET', path: `${Q}/${UNKNOWN}/associations`, as: 'admin', expect: 404 },
      { name: 'qos: delete while associated', method: 'DELETE', path: `${Q}/{qos}`, as: 'admin', expect: 400, message: /still associated.*force/ },
      { name: 'qos: delete with a bad force', method: 'DELETE', path: `${Q}/{qos}?force=perhaps`, as: 'admin', expect: 400, message: /force/ },
      { name: 'qos: delete unknown', method: 'DELETE', path: `${Q}/${UNKNOWN}`, as: 'admin', expect: 404 },
      // manage / unmanage
      { name: 'manage: member', method: 'POST', path: `${V}/os-volume-manage`, body: { volume: { host: '{host}', ref: { 'source-name': 'bi-adoptable' } } }, expect: 403 },
      { name: 'manage: no ref', method: 'POST', path: `${V}/os-volume-manage`, as: 'admin', body: { volume: { host: '{host}' } }, expect: 400, message: /ref/ },
      { name: 'manage: ref without source-name', method: 'POST', path: `${V}/os-volume-manage`, as: 'admin', body: { volume: { host: '{host}', ref: { 'source-id': 'x' } } }, expect: 400, message: /source-name/ },
      { name: 'manage: unknown host', method: 'POST', path: `${V}/os-volume-manage`, as: 'admin', body: { volume: { host: 'nowhere@x#x', ref: { 'source-name': 'bi-adoptable' } } }, expect: 400, message: /no backend.*get_pools/ },
      { name: 'manage: no such object', method: 'POST', path: `${V}/os-volume-manage`, as: 'admin', body: { volume: { host: '{host}', ref: { 'source-name': 'not-there' } } }, expect: 404, message: /manageable_volumes/ },
      { name: 'manage: a path as the name', method: 'POST', path: `${V}/os-volume-manage`, as: 'admin', body: { volume: { host: '{host}', ref: { 'source-name': '../../pumice.db' } } }, expect: 404 },
      { name: 'manage: an existing volume', method: 'POST', path: `${V}/os-volume-manage`, as: 'admin', body: { volume: { host: '{host}', ref: { 'source-name': 'volume-{vol}' } } }, expect: 404 },
      { name: 'manage: unknown type', method: 'POST', path: `${V}/os-volume-manage`, as: 'admin', body: { volume: { host: '{host}', ref: { 'source-name': 'bi-adoptable' }, volume_type: 'no-such-type' } }, expect: 404 },
      { name: 'manage: bootable not a boolean', method: 'POST', path: `${V}/os-volume-manage`, as: 'admin', body: { volume: { host: '{host}', ref: { 'source-name': 'bi-adoptable' }, bootable: 'yes please' } }, expect: 400, message: /bootable/ },
      { name: 'manage: unknown key', method: 'POST', path: `${V}/os-volume-manage`, as: 'admin', body: { volume: { host: '{host}', ref: { 'source-name': 'bi-adoptable' }, size: 5 } }, expect: 400, message: /size/ },
      { name: 'manageable: no host', method: 'GET', path: `${V}/manageable_volumes`, as: 'admin', mv: '3.8', expect: 400, message: /host/ },
      { name: 'manageable: before 3.8', method: 'GET', path: `${V}/manageable_volumes?host={host}`, as: 'admin', mv: '3.7', expect: 404 },
      { name: 'manageable: negative limit', method: 'GET', path: `${V}/manageable_volumes?host={host}&limit=-1`, as: 'admin', mv: '3.8', expect: 400, message: /limit/ },
      { name: 'manageable: bad sort key', method: 'GET', path: `${V}/manageable_volumes/detail?host={host}&sort_key=colour`, as: 'admin', mv: '3.8', expect: 400, message: /sort_key/ },
      { name: 'manageable: member', method: 'GET', path: `${V}/manageable_volumes?host={host}`, mv: '3.8', expect: 403 },
      { name: 'unmanage: member', method: 'POST', path: `${V}/volumes/{vol}/action`, body: { 'os-unmanage': {} }, expect: 403 },
      { name: 'unmanage: unknown volume', method: 'POST', path: `${V}/volumes/${UNKNOWN}/action`, as: 'admin', body: { 'os-unmanage': {} }, expect: 404 },
      { name: 'unmanage: a volume awaiting transfer', method: 'POST', path: `${V}/volumes/{offeredVol}/action`, as: 'admin', body: { 'os-unmanage': {} }, expect: 409, message: /awaiting-transfer/ },
      // snapshot manage / unmanage
      { name: 'snapshot manage: member', method: 'POST', path: `${V}/os-snapshot-manage`, body: { snapshot: { volume_id: '{vol}', ref: { 'source-name': 'x' } } }, expect: 403 },
      { name: 'snapshot manage: no volume_id', method: 'POST', path: `${V}/os-snapshot-manage`, as: 'admin', body: { snapshot: { ref: { 'source-name': 'x' } } }, expect: 400, message: /volume_id/ },
      { name: 'snapshot manage: volume_id not a uuid', method: 'POST', path: `${V}/os-snapshot-manage`, as: 'admin', body: { snapshot: { volume_id: 'v', ref: { 'source-name': 'x' } } }, expect: 400, message: /volume_id/ },
      { name: 'snapshot manage: no ref', method: 'POST', path: `${V}/os-snapshot-manage`, as: 'admin', body: { snapshot: { volume_id: '{vol}' } }, expect: 400, message: /ref/ },
      { name: 'snapshot manage: unknown key', method: 'POST', path: `${V}/os-snapshot-manage`, as: 'admin', body: { snapshot: { volume_id: '{vol}', ref: { 'source-name': 'x' }, size: 1 } }, expect: 400, message: /size/ },
      { name: 'snapshot manage: unknown volume', method: 'POST', path: `${V}/os-snapshot-manage`, as: 'admin', body: { snapshot: { volume_id: UNKNOWN, ref: { 'source-name': 'x' } } }, expect: 404 },
      { name: 'snapshot manage: no such file', method: 'POST', path: `${V}/os-snapshot-manage`, as: 'admin', body: { snapshot: { volume_id: '{vol}', ref: { 'source-name': 'not-there' } } }, expect: 404, message: /not a manageable snapshot/ },
      { name: 'snapshot manage: a path as the name', method: 'POST', path: `${V}/os-snapshot-manage`, as: 'admin', body: { snapshot: { volume_id: '{vol}', ref: { 'source-name': '../../pumice.db' } } }, expect: 404 },
      { name: 'snapshot manage: a volume\'s own file', method: 'POST', path: `${V}/os-snapshot-manage`, as: 'admin', body: { snapshot: { volume_id: '{vol}', ref: { 'source-name': 'volume-{offeredVol}' } } }, expect: 404 },
      { name: 'manageable snapshots: no host', method: 'GET', path: `${V}/manageable_snapshots`, as: 'admin', mv: '3.8', expect: 400, message: /host/ },
      { name: 'manageable snapshots: before 3.8', method: 'GET', path: `${V}/manageable_snapshots?host={host}`, as: 'admin', mv: '3.7', expect: 404 },
      { name: 'manageable snapshots: member', method: 'GET', path: `${V}/manageable_snapshots/detail?host={host}`, mv: '3.8', expect: 403 },
      { name: 'manageable snapshots: unknown host', method: 'GET', path: `${V}/manageable_snapshots?host=nowhere%40x`, as: 'admin', mv: '3.8', expect: 400, message: /get_pools/ },
      { name: 'snapshot unmanage: member', method: 'POST', path: `${V}/snapshots/${UNKNOWN}/action`, body: { 'os-unmanage': {} }, expect: 403 },
      { name: 'snapshot unmanage: unknown snapshot', method: 'POST', path: `${V}/snapshots/${UNKNOWN}/action`, as: 'admin', body: { 'os-unmanage': {} }, expect: 404 },
      // workers/cleanup (3.24)
      { name: 'cleanup: member', method: 'POST', path: `${V}/workers/cleanup`, mv: '3.24', body: {}, expect: 403 },
      { name: 'cleanup: before 3.24', method: 'POST', path: `${V}/workers/cleanup`, as: 'admin', mv: '3.23', body: {}, expect: 404 },
      { name: 'cleanup: unknown binary', method: 'POST', path: `${V}/workers/cleanup`, as: 'admin', mv: '3.24', body: { binary: 'cinder-api' }, expect: 400, message: /binary/ },
      { name: 'cleanup: service_id not an integer', method: 'POST', path: `${V}/workers/cleanup`, as: 'admin', mv: '3.24', body: { service_id: 'one' }, expect: 400, message: /service_id/ },
      { name: 'cleanup: resource_id (not applied by Pumice)', method: 'POST', path: `${V}/workers/cleanup`, as: 'admin', mv: '3.24', body: { resource_id: UNKNOWN }, expect: 400, message: /resource_id/ },
      // os-retype and os-migrate_volume (one local backend here: a type that needs another backend cannot be met)
      { name: 'retype: no new_type', method: 'POST', path: `${V}/volumes/{vol}/action`, body: { 'os-retype': {} }, expect: 400, message: /new_type/ },
      { name: 'retype: new_type a number', method: 'POST', path: `${V}/volumes/{vol}/action`, body: { 'os-retype': { new_type: 7 } }, expect: 400, message: /new_type/ },
      { name: 'retype: unknown migration_policy', method: 'POST', path: `${V}/volumes/{vol}/action`, body: { 'os-retype': { new_type: 'bi-type', migration_policy: 'sometimes' } }, expect: 400, message: /migration_policy/ },
      { name: 'retype: unknown key', method: 'POST', path: `${V}/volumes/{vol}/action`, body: { 'os-retype': { new_type: 'bi-type', colour: 'red' } }, expect: 400, message: /colour/ },
      { name: 'retype: unknown type', method: 'POST', path: `${V}/volumes/{vol}/action`, body: { 'os-retype': { new_type: 'no-such-type' } }, expect: 404, message: /no-such-type/ },
      { name: 'retype: to its own type', method: 'POST', path: `${V}/volumes/{vol}/action`, body: { 'os-retype': { new_type: '__DEFAULT__' } }, expect: 400, message: /already of type/ },
      { name: 'retype: reader', method: 'POST', path: `${V}/volumes/{vol}/action`, as: 'reader', body: { 'os-retype': { new_type: 'bi-type' } }, expect: 403 },
      { name: 'retype: another project\'s volume', method: 'POST', path: `${V}/volumes/{vol}/action`, as: 'other', body: { 'os-retype': { new_type: 'bi-type' } }, expect: 404 },
      { name: 'retype: another backend with policy never', method: 'POST', path: `${V}/volumes/{vol}/action`, body: { 'os-retype': { new_type: 'bi-elsewhere', migration_policy: 'never' } }, expect: 400, message: /on-demand/ },
      { name: 'retype: another backend that does not exist', method: 'POST', path: `${V}/volumes/{vol}/action`, body: { 'os-retype': { new_type: 'bi-elsewhere', migration_policy: 'on-demand' } }, expect: 400, message: /No valid backend/ },
      { name: 'retype: a volume awaiting transfer', method: 'POST', path: `${V}/volumes/{offeredVol}/action`, body: { 'os-retype': { new_type: 'bi-type' } }, expect: 409, message: /awaiting-transfer/ },
      { name: 'migrate: member', method: 'POST', path: `${V}/volumes/{vol}/action`, body: { 'os-migrate_volume': { host: '{host}' } }, expect: 403 },
      { name: 'migrate: no host', method: 'POST', path: `${V}/volumes/{vol}/action`, as: 'admin', body: { 'os-migrate_volume': {} }, expect: 400, message: /host/ },
      { name: 'migrate: unknown host', method: 'POST', path: `${V}/volumes/{vol}/action`, as: 'admin', body: { 'os-migrate_volume': { host: 'nowhere@x#x' } }, expect: 400, message: /get_pools/ },
      { name: 'migrate: to the host it is on', method: 'POST', path: `${V}/volumes/{vol}/action`, as: 'admin', body: { 'os-migrate_volume': { host: '{host}' } }, expect: 400, message: /already on/ },
      { name: 'migrate: force_host_copy not a boolean', method: 'POST', path: `${V}/volumes/{vol}/action`, as: 'admin', body: { 'os-migrate_volume': { host: '{host}', force_host_copy: 'maybe' } }, expect: 400, message: /force_host_copy/ },
      { name: 'migrate: unknown volume', method: 'POST', path: `${V}/volumes/${UNKNOWN}/action`, as: 'admin', body: { 'os-migrate_volume': { host: '{host}' } }, expect: 404 },
      // os-reimage (3.68)
      { name: 'reimage: no image_id', method: 'POST', path: `${V}/volumes/{vol}/action`, mv: '3.68', body: { 'os-reimage': {} }, expect: 400, message: /image_id/ },
      { name: 'reimage: image_id not a uuid', method: 'POST', path: `${V}/volumes/{vol}/action`, mv: '3.68', body: { 'os-reimage': { image_id: 'x' } }, expect: 400, message: /image_id/ },
      { name: 'reimage: before 3.68', method: 'POST', path: `${V}/volumes/{vol}/action`, mv: '3.67', body: { 'os-reimage': { image_id: UNKNOWN } }, expect: 404, message: /3\.68/ },
    ];

    const fill = (text: string, as: Caller) => text
      .replace('{V}', `/volume/v3/${clients[as].projectId}`)
      .replace(/\{(vol|offeredVol|otherVol|transfer|qos|qosOther|type|host)\}/g, (_m, key: keyof typeof F) => (key === 'host' ? encodeURIComponent(F.host) : F[key]));
    let baseline = fingerprint();
    const started = Date.now();
    for (const c of cases) {
      await t.test(c.name, async () => {
        const as = c.as ?? 'member';
        const path = fill(c.path, as);
        const body = c.raw ?? (c.body === undefined ? undefined : JSON.parse(fill(JSON.stringify(c.body), as).replace(encodeURIComponent(F.host), F.host)));
        const r = await clients[as].request(c.method, path, body, { 'OpenStack-API-Version': `volume ${c.mv ?? '3.70'}` });
        const problems: string[] = [];
        if (r.status !== c.expect) problems.push(`status ${r.status}, expected ${c.expect}`);
        if (/\n\s+at\s|\.(ts|js|mjs):\d+|node_modules|\/work\/|file:\/\//.test(r.text)) problems.push('reply leaks a stack trace or source path');
        const keys = r.body && typeof r.body === 'object' ? Object.keys(r.body) : [];
        const fault = keys.length === 1 ? r.body[keys[0]!] : undefined;
        if (!fault || fault.code !== r.status || typeof fault.message !== 'string' || fault.message.length < 10) problems.push('not an OpenStack fault with a message');
        else if (c.message && !c.message.test(fault.message)) problems.push(`message does not match ${c.message}: ${fault.message}`);
        const now = fingerprint();
        if (now !== baseline) {
          problems.push('the request changed stored state');
          baseline = now;
        }
        assert.deepEqual(problems, [], `${c.method} ${path} -> ${r.status} ${r.text.slice(0, 400)}`);
      });
    }
    t.diagnostic(`${cases.length} cases in ${Date.now() - started} ms`);
    assert.doesNotMatch(pumice.output(), /internal error|response failed/, 'the server log shows an internal error');
  });
});
