/**
 * Backups across two Pumices that share one backup directory, and how an
 * operator follows a backup:
 * - `pumice backup create --wait` (non-TTY) prints progress lines and ends
 *   at `available`; the API body and `openstack volume backup show` carry
 *   `progress` while it runs; `pumice backup watch` follows a restore; a
 *   failing backup prints its reason and exits 1.
 * - export_record on the first Pumice (admin only), import_record on the
 *   second with the Debian `openstack`/`cinder` clients, restore there: the
 *   bytes equal the volume's at backup time; an incremental imported after
 *   its parent keeps the dependency (409 on deleting the parent).
 * - Bad records: unknown service, garbage URL → 400; the same backup twice →
 *   409; a record whose data is not in the directory → `error` with a reason.
 * - The `backups` and `backup_gigabytes` quotas refuse a backup with a 413.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createReadStream, mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiClient, cliEnv, openstack, openstackJson, repoRoot, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const toolTimeoutMs = 180_000;

async function sha256File(path: string, bytes = Infinity): Promise<string> {
  const hash = createHash('sha256');
  for await (const piece of createReadStream(path, { highWaterMark: 4 * MiB, ...(Number.isFinite(bytes) ? { end: bytes - 1 } : {}) })) hash.update(piece as Buffer);
  return hash.digest('hex');
}

/** Runs `pumice backup ARGS` as the operator would (stdout not a TTY); resolves with the exit code and all output. */
function pumiceBackup(env: Record<string, string>, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(repoRoot, 'bin', 'pumice.mjs'), 'backup', ...args], { env: { ...process.env, ...env }, timeout: toolTimeoutMs }, (error, stdout, stderr) =>
      resolve({ code: error ? Number(error.code ?? 1) : 0, out: String(stdout) + String(stderr) }),
    );
  });
}

function cinder(env: Record<string, string>, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('/usr/bin/cinder', args, { env: cliEnv(env), timeout: toolTimeoutMs }, (error, stdout, stderr) =>
      resolve({ code: error ? Number(error.code ?? 1) : 0, out: String(stdout) + String(stderr) }),
    );
  });
}

describe('backup records, progress and the pumice backup CLI', { timeout: 900_000 }, () => {
  let scratch: string;
  let sharedDir: string;
  let first: PumiceProcess;
  let second: PumiceProcess;
  let apiA: ApiClient;
  let apiB: ApiClient;
  let volumeId: string;
  let fullId: string;
  let incrementalId: string;
  let shaAtFull: string;
  let shaAtIncremental: string;
  const volumeFile = (p: PumiceProcess, id: string) => join(p.dataDir, 'volumes', 'local', `volume-${id}`);
  const backupUrl = (api: ApiClient, path: string) => `${api.volumeUrl}/backups${path}`;

  const waitBackup = async (api: ApiClient, id: string, statuses: string[], timeoutMs = 300_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await api.request('GET', backupUrl(api, `/${id}`));
      assert.equal(r.status, 200, r.text);
      if (statuses.includes(r.body.backup.status)) return r.body.backup;
      assert.ok(Date.now() < deadline, `backup ${id} stuck in ${r.body.backup.status}`);
      await new Promise((res) => setTimeout(res, 50));
    }
  };

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'pumice-backup-records-'));
    sharedDir = join(scratch, 'shared-backups');
    const config = `[DEFAULT]\nbackup_posix_path = ${sharedDir}\n`;
    // Both start before any backup exists: a Pumice removes backup directories it has no row for when it starts.
    first = await startPumice({ config });
    second = await startPumice({ config });
    apiA = await ApiClient.login(first.url, 'admin', first.adminPassword, 'admin');
    apiB = await ApiClient.login(second.url, 'admin', second.adminPassword, 'admin');
  });

  after(async () => {
    for (const p of [first, second]) {
      if (!p) continue;
      await p.stop();
      p.cleanup();
    }
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  test('pumice backup create --wait shows progress and ends available; the API and osc show progress while it runs', async () => {
    const created = await apiA.request('POST', `${apiA.volumeUrl}/volumes`, { volume: { size: 1, name: 'records-source' } });
    assert.equal(created.status, 202, created.text);
    volumeId = created.body.volume.id;
    await apiA.waitVolume(volumeId, ['available']);
    // Random bytes straight into the local backend's file (the NBD data path is covered in backups.test.ts); the last 64 MiB stay zero.
    const fh = await open(volumeFile(first, volumeId), 'r+');
    for (let offset = 0; offset < GiB - 64 * MiB; offset += 16 * MiB) await fh.write(randomBytes(16 * MiB), 0, 16 * MiB, offset);
    await fh.close();
    shaAtFull = await sha256File(volumeFile(first, volumeId));

    // Watch the API while the CLI runs: some show of the creating backup must carry a progress figure (a header: the body is Cinder's).
    const seen: string[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const list = await apiA.request('GET', backupUrl(apiA, `/detail?volume_id=${volumeId}`));
        for (const b of list.body?.backups ?? []) {
          if (b.status !== 'creating') continue;
          const shown = await apiA.request('GET', backupUrl(apiA, `/${b.id}`));
          const progress = shown.headers.get('pumice-backup-progress');
          if (progress) seen.push(progress);
        }
        await new Promise((res) => setTimeout(res, 100));
      }
    })();
    const r = await pumiceBackup(first.adminEnv, ['create', '--volume', volumeId, '--name', 'full', '--wait', '--interval-ms', '200']);
    polling = false;
    await poller;
    assert.equal(r.code, 0, r.out);
    const id = /backup ([0-9a-f-]{36}) of volume/.exec(r.out)?.[1];
    assert.ok(id, r.out);
    fullId = id;
    assert.match(r.out, /\[[# ]{30}\] +\d+% /, `no progress bar line:\n${r.out}`);
    assert.match(r.out, /100% 1\.0 GiB\/1\.0 GiB/, r.out);
    assert.match(r.out, /: available\n/, r.out);
    assert.ok(seen.length > 0, 'no GET showed progress while the backup was creating');
    assert.match(seen[0]!, /^\d{1,3}% \(\d+\/1073741824 bytes\)$/);

    const shown = await openstackJson<Record<string, unknown>>(first.adminEnv, ['volume', 'backup', 'show', fullId]);
    assert.equal(shown['status'], 'available');
    assert.ok(!('progress' in shown), `osc volume backup show: Cinder's keys only: ${JSON.stringify(shown)}`);
    const watched = await pumiceBackup(first.adminEnv, ['watch', fullId]);
    assert.equal(watched.code, 0, watched.out);
    assert.match(watched.out, /is available/);
  });

  test('a failing backup: the CLI prints the reason and exits 1', async () => {
    const created = await apiA.request('POST', `${apiA.volumeUrl}/volumes`, { volume: { size: 1, name: 'doomed-source' } });
    const doomedId = created.body.volume.id as string;
    await apiA.waitVolume(doomedId, ['available']);
    rmSync(volumeFile(first, doomedId)); // the backup cannot read it
    const r = await pumiceBackup(first.adminEnv, ['create', '--volume', doomedId, '--wait', '--interval-ms', '100']);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /is error: .*ENOENT|is error: .*no such file/i, r.out);
    const usage = await pumiceBackup(first.adminEnv, ['create']);
    assert.equal(usage.code, 2);
    assert.match(usage.out, /create needs --volume (NAME or )?ID/);
    const missing = await pumiceBackup(first.adminEnv, ['watch', randomUUID()]);
    assert.equal(missing.code, 1);
    assert.match(missing.out, /404: Backup .* could not be found/);
  });

  test('export_record is admin only and gives the backup service and an opaque URL', async () => {
    const exported = await apiA.request('GET', backupUrl(apiA, `/${fullId}/export_record`));
    assert.equal(exported.status, 200, exported.text);
    assert.deepEqual(Object.keys(exported.body['backup-record']).sort(), ['backup_service', 'backup_url']);
    assert.equal(exported.body['backup-record'].backup_service, 'cinder.backup.drivers.posix.PosixBackupDriver');

    // A member of the project may see the backup but not export it.
    const roles = await apiA.request('GET', '/identity/v3/roles?name=member');
    const user = await apiA.request('POST', '/identity/v3/users', { user: { name: 'records-member', password: 'member-password-1' } });
    assert.equal(user.status, 201, user.text);
    const grant = await apiA.request('PUT', `/identity/v3/projects/${apiA.projectId}/users/${user.body.user.id}/roles/${roles.body.roles[0].id}`);
    assert.equal(grant.status, 204, grant.text);
    const member = await ApiClient.login(first.url, 'records-member', 'member-password-1', 'admin');
    const refused = await member.request('GET', backupUrl(member, `/${fullId}/export_record`));
    assert.equal(refused.status, 403, refused.text);
    const shown = await member.request('GET', backupUrl(member, `/${fullId}`));
    assert.equal(shown.status, 200, shown.text);
  });

  test('osc export, cinder import on a second Pumice, restore there: the bytes equal the volume at backup time', async () => {
    const record = await openstackJson<{ backup_service: string; backup_url: string }>(first.adminEnv, ['volume', 'backup', 'record', 'export', fullId]);
    assert.equal(record.backup_service, 'cinder.backup.drivers.posix.PosixBackupDriver');
    const imported = await cinder(second.adminEnv, ['backup-import', record.backup_service, record.backup_url]);
    assert.equal(imported.code, 0, imported.out);
    assert.match(imported.out, new RegExp(fullId));
    const onB = await waitBackup(apiB, fullId, ['available', 'error']);
    assert.equal(onB.status, 'available', JSON.stringify(onB));
    assert.equal(onB.name, 'full');
    assert.equal(onB.volume_id, volumeId);
    assert.equal(onB.size, 1);
    assert.equal(onB.is_incremental, false);

    const restore = await apiB.request('POST', backupUrl(apiB, `/${fullId}/restore`), { restore: { name: 'restored-on-b' } });
    assert.equal(restore.status, 202, restore.text);
    const targetId = restore.body.restore.volume_id as string;
    // The backup is `restoring` from the moment the API answered: watch follows the restore to its end.
    const watched = await pumiceBackup(second.adminEnv, ['watch', fullId, '--interval-ms', '200']);
    assert.equal(watched.code, 0, watched.out);
    assert.match(watched.out, new RegExp(`backup ${fullId} restoring .*restored; the backup is available`, 's'), watched.out);
    assert.equal((await apiB.waitVolume(targetId, ['available', 'error_restoring'], 300_000)).status, 'available');
    await waitBackup(apiB, fullId, ['available']);
    assert.equal(await sha256File(volumeFile(second, targetId)), shaAtFull);
  });

  test('an incremental imported after its parent keeps the dependency and restores byte-identical', async () => {
    const fh = await open(volumeFile(first, volumeId), 'r+');
    for (let i = 0; i < 200; i++) await fh.write(randomBytes(4096), 0, 4096, Math.floor(Math.random() * (GiB / 4096)) * 4096);
    await fh.close();
    shaAtIncremental = await sha256File(volumeFile(first, volumeId));
    const r = await pumiceBackup(first.adminEnv, ['create', '--volume', volumeId, '--incremental', '--name', 'incr', '--wait']);
    assert.equal(r.code, 0, r.out);
    incrementalId = /backup ([0-9a-f-]{36}) of volume/.exec(r.out)![1]!;

    const record = await openstackJson<{ backup_service: string; backup_url: string }>(first.adminEnv, ['volume', 'backup', 'record', 'export', incrementalId]);
    const imported = await openstackJson<Record<string, unknown>>(second.adminEnv, ['volume', 'backup', 'record', 'import', record.backup_service, record.backup_url]);
    assert.equal(imported['id'], incrementalId);
    const onB = await waitBackup(apiB, incrementalId, ['available', 'error']);
    assert.equal(onB.status, 'available', JSON.stringify(onB));
    assert.equal(onB.is_incremental, true);
    assert.equal((await waitBackup(apiB, fullId, ['available'])).has_dependent_backups, true);
    const del = await apiB.request('DELETE', backupUrl(apiB, `/${fullId}`));
    assert.equal(del.status, 409, del.text);

    const restore = await apiB.request('POST', backupUrl(apiB, `/${incrementalId}/restore`), { restore: { name: 'incr-on-b' } });
    assert.equal(restore.status, 202, restore.text);
    const targetId = restore.body.restore.volume_id as string;
    assert.equal((await apiB.waitVolume(targetId, ['available', 'error_restoring'], 300_000)).status, 'available');
    assert.equal(await sha256File(volumeFile(second, targetId)), shaAtIncremental);
  });

  test('bad records: unknown service or garbage URL → 400, the same backup twice → 409, missing data → error with a reason', async () => {
    const exported = await apiA.request('GET', backupUrl(apiA, `/${fullId}/export_record`));
    const { backup_service: service, backup_url: url } = exported.body['backup-record'];
    const importB = (body: unknown) => apiB.request('POST', backupUrl(apiB, '/import_record'), body);

    const unknown = await importB({ 'backup-record': { backup_service: 'cinder.backup.drivers.swift.SwiftBackupDriver', backup_url: url } });
    assert.equal(unknown.status, 400, unknown.text);
    assert.match(unknown.body.badRequest.message, /backup_service 'cinder\.backup\.drivers\.swift\.SwiftBackupDriver' is not the backup service of this Pumice/);
    for (const garbage of ['not base64 !!', Buffer.from('{"hello": 1}').toString('base64'), Buffer.from('[[[').toString('base64')]) {
      const r = await importB({ 'backup-record': { backup_service: service, backup_url: garbage } });
      assert.equal(r.status, 400, r.text);
      assert.match(r.body.badRequest.message, /backup_url .*(base64|Pumice backup record)/);
      assert.match(r.body.badRequest.message, /export_record/);
    }
    const missingField = await importB({ 'backup-record': { backup_service: service } });
    assert.equal(missingField.status, 400, missingField.text);

    const duplicate = await importB({ 'backup-record': { backup_service: service, backup_url: url } });
    assert.equal(duplicate.status, 409, duplicate.text);
    assert.match(duplicate.body.conflictingRequest.message, new RegExp(`backup ${fullId} already exists`));

    // The same record under an id whose data is not in the directory.
    const record = JSON.parse(Buffer.from(url, 'base64').toString('utf8'));
    const ghostId = randomUUID();
    const ghost = Buffer.from(JSON.stringify({ ...record, id: ghostId, location: { ...record.location, backupId: ghostId } })).toString('base64');
    const created = await importB({ 'backup-record': { backup_service: service, backup_url: ghost } });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.body.backup.id, ghostId);
    const row = await waitBackup(apiB, ghostId, ['available', 'error']);
    assert.equal(row.status, 'error');
    assert.match(row.fail_reason, /has no manifest/);
    assert.match(row.fail_reason, /backup_posix_path/);
    const badField = Buffer.from(JSON.stringify({ ...record, sizeGiB: -1 })).toString('base64');
    const refused = await importB({ 'backup-record': { backup_service: service, backup_url: badField } });
    assert.equal(refused.status, 400, refused.text);
    assert.match(refused.body.badRequest.message, /sizeGiB/);

    const notAvailable = await apiB.request('GET', backupUrl(apiB, `/${ghostId}/export_record`));
    assert.equal(notAvailable.status, 409, notAvailable.text);
    const gone = await apiB.request('GET', backupUrl(apiB, `/${randomUUID()}/export_record`));
    assert.equal(gone.status, 404, gone.text);
  });

  test('the backups and backup_gigabytes quotas refuse a backup over the limit with a 413', async () => {
    const quota = (values: Record<string, number>) => apiA.request('PUT', `${apiA.volumeUrl}/os-quota-sets/${apiA.projectId}`, { quota_set: values });
    const usage = (await apiA.request('GET', `${apiA.volumeUrl}/limits`)).body.limits.absolute;
    const used = usage.totalBackupsUsed as number;
    assert.ok(used >= 2, JSON.stringify(usage));
    let r = await quota({ backups: used });
    assert.equal(r.status, 200, r.text);
    let create = await apiA.request('POST', backupUrl(apiA, ''), { backup: { volume_id: volumeId, name: 'over' } });
    assert.equal(create.status, 413, create.text);
    assert.match(create.body.overLimit.message, new RegExp(`Maximum number of backups allowed \\(${used}\\) exceeded for quota 'backups'`));
    await assert.rejects(openstack(first.adminEnv, ['volume', 'backup', 'create', '--name', 'over', volumeId]), /Maximum number of backups allowed .*HTTP 413/s);

    r = await quota({ backups: -1, backup_gigabytes: usage.totalBackupGigabytesUsed as number });
    assert.equal(r.status, 200, r.text);
    create = await apiA.request('POST', backupUrl(apiA, ''), { backup: { volume_id: volumeId, name: 'over' } });
    assert.equal(create.status, 413, create.text);
    assert.match(create.body.overLimit.message, /Requested backup exceeds allowed Backup gigabytes quota\. Requested 1G, quota is \d+G and \d+G has been consumed/);
    const cli = await pumiceBackup(first.adminEnv, ['create', '--volume', volumeId]);
    assert.equal(cli.code, 1, cli.out);
    assert.match(cli.out, /413: .*Backup gigabytes quota/);
    assert.equal((await apiA.waitVolume(volumeId, ['available'], 5_000)).status, 'available');
    await quota({ backups: 10, backup_gigabytes: 1000 });
  });
});
