/**
 * `pumice db` against real servers (run under scripts/with-postgres.sh): a SQLite
 * Pumice is populated through the API (a project, a member, a volume, an image),
 * exported, imported into a fresh PostgreSQL database, and started on it from the
 * same data directory: the same resources are served, the member's old token still
 * works and new ones are issued, new rows get new ids. Also: `db upgrade` copies an
 * older SQLite file before migrating it, and a database newer than the code is
 * refused by `db status` and by `serve`, with the fix.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Db, codeSchemaVersion } from '../../src/db/db.ts';
import { migrations } from '../../src/db/schema.ts';
import { runCli } from '../../src/db/cli.ts';
import { ApiClient, startPumice, testDatabaseUrl, type PumiceProcess } from '../helpers/pumice.ts';

const haveDatabase = Boolean(process.env['PUMICE_TEST_DATABASE']);
const skip = haveDatabase ? false : 'needs PostgreSQL: run under scripts/with-postgres.sh';

/** `pumice db ARGS` in this process (a child process would cost a TypeScript load per call). */
async function pumiceDb(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(args, (t) => (stdout += t), (t) => (stderr += t));
  return { code, stdout, stderr };
}

let dataDir = '';
let pumice: PumiceProcess | null = null;
const scratch = mkdtempSync(join(tmpdir(), 'pumice-dbcli-'));
const seen: { failedTaskId: number; volumeId: string; imageId: string; userId: string; memberToken: string; projectId: string; volumes: number; users: number } = {
  failedTaskId: 0, volumeId: '', imageId: '', userId: '', memberToken: '', projectId: '', volumes: 0, users: 0,
};

before(async () => {
  if (!haveDatabase) return;
  // SQLite first: the test's own [database] section keeps startPumice off PostgreSQL.
  pumice = await startPumice({ config: '[database]\nconnection = sqlite://\n' });
  dataDir = pumice.dataDir;
  const admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  const project = await admin.request('POST', '/identity/v3/projects', { project: { name: 'moved', domain_id: 'default' } });
  assert.equal(project.status, 201, project.text);
  seen.projectId = project.body.project.id;
  const user = await admin.request('POST', '/identity/v3/users', { user: { name: 'mover', password: 'pw-mover', domain_id: 'default', default_project_id: seen.projectId } });
  assert.equal(user.status, 201, user.text);
  seen.userId = user.body.user.id;
  const roles = await admin.request('GET', '/identity/v3/roles?name=member');
  const grant = await admin.request('PUT', `/identity/v3/projects/${seen.projectId}/users/${seen.userId}/roles/${roles.body.roles[0].id}`);
  assert.equal(grant.status, 204, grant.text);
  const member = await ApiClient.login(pumice.url, 'mover', 'pw-mover', 'moved');
  seen.memberToken = member.token;
  const volume = await member.request('POST', `/volume/v3/${member.projectId}/volumes`, { volume: { size: 1, name: 'moved-vol', metadata: { k: 'v' } } });
  assert.equal(volume.status, 202, volume.text);
  seen.volumeId = volume.body.volume.id;
  await member.waitVolume(seen.volumeId, ['available'], 60_000);
  const image = await member.request('POST', '/image/v2/images', { name: 'moved-img', disk_format: 'raw', container_format: 'bare', tags: ['t1'] });
  assert.equal(image.status, 201, image.text);
  seen.imageId = image.body.id;
  seen.volumes = (await admin.request('GET', `/volume/v3/${admin.projectId}/volumes?all_tenants=1`)).body.volumes.length;
  seen.users = (await admin.request('GET', '/identity/v3/users')).body.users.length;
  await pumice.stop();
  // A failed task is kept (done ones are deleted when they finish): the imported tasks table is not
  // empty, so PostgreSQL's id sequence must start after it or the next task's id collides.
  const sqlite = new Db(join(dataDir, 'pumice.db'));
  const now = new Date().toISOString();
  seen.failedTaskId = sqlite.get<{ id: number }>(
    "INSERT INTO tasks (kind, resource_id, queue, payload, state, attempts, last_error, created_at, updated_at, finished_at) VALUES ('volume.extend', ?, 'test:nobody', '{}', 'failed', 3, 'kept for the operator', ?, ?, ?) RETURNING id",
    seen.volumeId, now, now, now,
  )!.id;
  sqlite.close();
});

after(async () => {
  if (pumice) {
    await pumice.stop();
    pumice.cleanup();
  }
  rmSync(scratch, { recursive: true, force: true });
});

test('export a populated SQLite install, import it into PostgreSQL, and serve the same cloud from it', { skip }, async () => {
  const status = await pumiceDb(['status', '--data-dir', dataDir]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, new RegExp(`database ${codeSchemaVersion}, code ${codeSchemaVersion}`));

  const exportFile = join(scratch, 'export.jsonl');
  const exported = await pumiceDb(['export', '--data-dir', dataDir, '--output', exportFile]);
  assert.equal(exported.code, 0, exported.stderr);
  assert.equal(statSync(exportFile).mode & 0o777, 0o600, 'the export holds password hashes: private to its owner');

  // The data directory now points at a fresh PostgreSQL database (startPumice reuses it below).
  const url = (await testDatabaseUrl(dataDir))!;
  const pgConfig = join(scratch, 'pg.conf');
  writeFileSync(pgConfig, `[database]\nconnection = ${url}\n`);
  const imported = await pumiceDb(['import', '--data-dir', dataDir, '--config', pgConfig, '--input', exportFile]);
  assert.equal(imported.code, 0, imported.stderr);
  assert.doesNotMatch(imported.stdout + imported.stderr, new RegExp(new URL(url).password), 'the password of the URL is never printed');
  const again = await pumiceDb(['import', '--data-dir', dataDir, '--config', pgConfig, '--input', exportFile]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /is not empty .*import into a new database/);

  // Same rows, table by table.
  const sqlite = new Db(join(dataDir, 'pumice.db'), { migrate: false });
  const pg = new Db(url, { migrate: false });
  try {
    for (const table of ['users', 'projects', 'role_assignments', 'tokens', 'volumes', 'images', 'tasks', 'services']) {
      const order = table === 'role_assignments' ? 'actor_id, target_id, role_id' : 'id';
      assert.deepEqual(pg.all(`SELECT * FROM ${table} ORDER BY ${order}`), sqlite.all(`SELECT * FROM ${table} ORDER BY ${order}`), `table ${table}`);
    }
  } finally {
    sqlite.close();
    pg.close();
  }

  pumice = await startPumice({ dataDir });
  assert.match(pumice.output(), /ready at/);
  // The member's token from the SQLite days is still valid.
  const old = new ApiClient(pumice.url);
  old.token = seen.memberToken;
  const volume = await old.request('GET', `/volume/v3/${seen.projectId}/volumes/${seen.volumeId}`);
  assert.equal(volume.status, 200, volume.text);
  assert.equal(volume.body.volume.name, 'moved-vol');
  assert.equal(volume.body.volume.status, 'available');
  assert.deepEqual(volume.body.volume.metadata, { k: 'v' });
  const image = await old.request('GET', `/image/v2/images/${seen.imageId}`);
  assert.equal(image.status, 200, image.text);
  assert.deepEqual(image.body.tags, ['t1']);
  const tagged = await old.request('GET', '/image/v2/images?tag=t1');
  assert.deepEqual(tagged.body.images.map((i: { id: string }) => i.id), [seen.imageId]);

  const admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  assert.equal((await admin.request('GET', `/volume/v3/${admin.projectId}/volumes?all_tenants=1`)).body.volumes.length, seen.volumes);
  assert.equal((await admin.request('GET', '/identity/v3/users')).body.users.length, seen.users);
  // A new token, and new rows with new ids (the id sequences follow the imported rows).
  const member = await ApiClient.login(pumice.url, 'mover', 'pw-mover', 'moved');
  const created = await member.request('POST', `/volume/v3/${member.projectId}/volumes`, { volume: { size: 1, name: 'after-move' } });
  assert.equal(created.status, 202, created.text);
  await member.waitVolume(created.body.volume.id, ['available'], 60_000);
  const deleted = await member.request('DELETE', `/volume/v3/${member.projectId}/volumes/${created.body.volume.id}`);
  assert.equal(deleted.status, 202, deleted.text);
  await member.waitVolume(created.body.volume.id, ['deleted'], 60_000);
  const kept = await admin.request('GET', `/pumice/v1/tasks/${seen.failedTaskId}`);
  assert.equal(kept.status, 200, kept.text);
  assert.equal(kept.body.task.last_error, 'kept for the operator');
  await pumice.stop();

  // A database upgraded by a newer Pumice is refused, by status and by serve, with the fix.
  const db = new Db(url);
  db.run('UPDATE schema_version SET version = ?', codeSchemaVersion + 1);
  db.close();
  const tooNew = await pumiceDb(['status', '--data-dir', dataDir, '--config', pgConfig]);
  assert.equal(tooNew.code, 3);
  assert.match(tooNew.stderr, new RegExp(`schema version ${codeSchemaVersion + 1}, newer than this Pumice knows \\(${codeSchemaVersion}\\).*Run that newer Pumice, or restore the backup`));
  await assert.rejects(startPumice({ dataDir }), /newer than this Pumice knows/);
  assert.throws(() => new Db(url, { migrate: false }), /newer than this Pumice knows/);
});

test('db upgrade copies an older SQLite database next to it, then migrates it', async () => {
  const dir = mkdtempSync(join(scratch, 'old-'));
  const path = join(dir, 'pumice.db');
  const old = new Database(path);
  old.exec('CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (0)');
  for (const migration of migrations.filter((m) => m.version < codeSchemaVersion)) old.exec(migration.sql);
  old.prepare('UPDATE schema_version SET version = ?').run(codeSchemaVersion - 1);
  old.close();
  const before = await pumiceDb(['status', '--data-dir', dir]);
  assert.match(before.stdout, /1 migration\(s\) pending: run pumice db upgrade/);
  const upgraded = await pumiceDb(['upgrade', '--data-dir', dir]);
  assert.equal(upgraded.code, 0, upgraded.stderr);
  const backup = `${path}.before-v${codeSchemaVersion}`;
  assert.ok(existsSync(backup), upgraded.stdout);
  const copy = new Database(backup, { readonly: true });
  assert.equal((copy.prepare('SELECT version FROM schema_version').get() as { version: number }).version, codeSchemaVersion - 1);
  copy.close();
  const after = await pumiceDb(['status', '--data-dir', dir]);
  assert.match(after.stdout, /state: up to date/);
});
