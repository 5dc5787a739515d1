/**
 * Volume backups end to end on the directory (posix) driver: a real
 * `pumice serve`, the Debian `openstack` CLI, and the volume's bytes reached
 * through Pumice's NBD server (nbdcopy, qemu-io).
 *
 * Proves that a full and an incremental backup restore into new volumes
 * byte-identical to the volume at each backup time; that the incremental
 * after 1% of the volume changed in scattered 4 KiB writes stores at most 2%
 * of the volume plus fixed overhead, with the default 32 MiB chunks;
 * that a backup another depends on cannot be deleted (409); that a corrupt
 * chunk fails the restore with a message naming the chunk; that the volume
 * is `available` again after each backup; and that usage, quotas and the
 * cinder-backup service show what happened.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { copyFile, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiClient, cliEnv, openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** The server's default backup_file_size. */
const chunkBytes = 32 * MiB;
/** Small chunks for the crash test, so chunks appear on disk early. */
const crashChunkBytes = MiB;
const toolTimeoutMs = 120_000;

function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: toolTimeoutMs, maxBuffer: 16 * MiB }, (error, stdout, stderr) => {
      if (error && typeof error.code !== 'number') return reject(new Error(`${cmd} ${args.join(' ')}: ${error.message}\n${stderr}`));
      resolve({ code: error ? (error.code as number) : 0, out: String(stdout) + String(stderr) });
    });
  });
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const piece of createReadStream(path, { highWaterMark: 4 * MiB })) hash.update(piece as Buffer);
  return hash.digest('hex');
}

interface Connection {
  host: string;
  port: number;
  export_name: string;
}

describe('volume backups on the posix driver', { timeout: 600_000 }, () => {
  let pumice: PumiceProcess;
  let api: ApiClient;
  let scratch: string;
  let env: Record<string, string>;
  let volumeId: string;
  let fullId: string;
  let incrementalId: string;
  const imageFull = () => join(scratch, 'at-full.img');
  const imageIncremental = () => join(scratch, 'at-incremental.img');
  const figures: string[] = [];

  const v = (path: string) => `${api.volumeUrl}${path}`;
  const action = async (id: string, body: unknown, status: number) => {
    const r = await api.request('POST', v(`/volumes/${id}/action`), body);
    assert.equal(r.status, status, `${JSON.stringify(body)} on ${id}: ${r.status} ${r.text}`);
    return r;
  };
  const connect = async (id: string): Promise<string> => {
    const r = await action(id, { 'os-initialize_connection': { connector: { host: 'test', initiator: 'x' } } }, 200);
    const data = r.body.connection_info.data as Connection;
    return `nbd://${data.host}:${data.port}/${data.export_name}`;
  };
  const disconnect = async (id: string) => action(id, { 'os-terminate_connection': { connector: { host: 'test' } } }, 202);
  const backupDir = (id: string) => join(pumice.dataDir, 'backups', 'volumebackups', id);

  const waitBackup = async (id: string, statuses: string[], timeoutMs = 300_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await api.request('GET', v(`/backups/${id}`), undefined, { 'OpenStack-API-Version': 'volume 3.43' });
      assert.equal(r.status, 200, r.text);
      if (statuses.includes(r.body.backup.status)) return r.body.backup;
      assert.ok(Date.now() < deadline, `backup ${id} stuck in ${r.body.backup.status}`);
      await new Promise((res) => setTimeout(res, 50));
    }
  };

  /** Reads the whole volume through NBD into a file and returns its sha256. */
  const volumeSha = async (id: string): Promise<string> => {
    const out = join(scratch, `read-${id}.img`);
    writeFileSync(out, '');
    const uri = await connect(id);
    try {
      const r = await run('nbdcopy', [uri, out]);
      assert.equal(r.code, 0, `nbdcopy ${uri}: ${r.out}`);
    } finally {
      await disconnect(id);
    }
    const sha = await sha256File(out);
    rmSync(out, { force: true });
    return sha;
  };

  /** The id of the only volume named `name`. */
  const volumeNamed = async (name: string): Promise<string> => {
    const r = await api.request('GET', v(`/volumes?name=${encodeURIComponent(name)}`));
    assert.equal(r.body.volumes.length, 1, r.text);
    return r.body.volumes[0].id as string;
  };

  /**
   * `openstack volume backup restore BACKUP NAME`. python-openstackclient 6.0.0 (Debian bookworm) sends the
   * request and then fails to print the answer ("cannot unpack non-iterable VolumeBackupsRestore object":
   * its take_action returns the restore object instead of columns), so that one error is tolerated and the
   * new volume is found by name.
   */
  const openstackRestore = async (backupId: string, name: string): Promise<string> => {
    try {
      await openstack(env, ['volume', 'backup', 'restore', backupId, name]);
    } catch (error) {
      if (!/cannot unpack non-iterable VolumeBackupsRestore/.test((error as Error).message)) throw error;
    }
    return volumeNamed(name);
  };

  /** `cinder backup-restore --name NAME BACKUP` (python-cinderclient prints the restore and exits 0). */
  const cinderRestore = async (backupId: string, name: string): Promise<string> => {
    const r = await new Promise<{ code: number; out: string }>((resolve) =>
      execFile('/usr/bin/cinder', ['backup-restore', '--name', name, backupId], { env: cliEnv(env), timeout: toolTimeoutMs }, (error, stdout, stderr) =>
        resolve({ code: error ? Number(error.code ?? 1) : 0, out: String(stdout) + String(stderr) }),
      ),
    );
    assert.equal(r.code, 0, `cinder backup-restore: ${r.out}`);
    assert.match(r.out, new RegExp(backupId));
    return volumeNamed(name);
  };

  /** Bytes of the files a backup wrote itself (its own directory: chunk or delta files, block digests, manifest). */
  const backupFileBytes = (id: string) => readdirSync(backupDir(id)).reduce((sum, f) => sum + statSync(join(backupDir(id), f)).size, 0);

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'pumice-backups-'));
    // The default chunk size (backup_file_size, 32 MiB): the incremental must still store only what changed.
    pumice = await startPumice();
    env = pumice.adminEnv;
    api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  });

  after(async () => {
    if (pumice) {
      await pumice.stop();
      pumice.cleanup();
    }
    if (scratch) rmSync(scratch, { recursive: true, force: true });
    if (figures.length) console.log(`# figures:\n${figures.map((f) => `#   ${f}`).join('\n')}`);
  });

  test('the cinder-backup service is listed and up', async () => {
    const services = await openstackJson<{ Binary: string; State: string }[]>(env, ['volume', 'service', 'list']);
    const backup = services.find((s) => s.Binary === 'cinder-backup');
    assert.ok(backup, JSON.stringify(services));
    assert.equal(backup.State, 'up');
  });

  test('a full backup of a written 1 GiB volume restores byte-identical', async () => {
    const created = await openstackJson<{ id: string }>(env, ['volume', 'create', '--size', '1', 'backup-source']);
    volumeId = created.id;
    await api.waitVolume(volumeId, ['available']);
    // 960 MiB of incompressible data, the last 64 MiB left zero (zero chunks are recorded, not stored).
    const image = imageFull();
    const fh = await open(image, 'w');
    for (let offset = 0; offset < 960 * MiB; offset += 16 * MiB) await fh.write(randomBytes(16 * MiB), 0, 16 * MiB, offset);
    await fh.truncate(GiB);
    await fh.close();
    const uri = await connect(volumeId);
    const w = await run('nbdcopy', [image, uri]);
    assert.equal(w.code, 0, `nbdcopy: ${w.out}`);
    await disconnect(volumeId);

    const started = Date.now();
    const backup = await openstackJson<{ id: string }>(env, ['volume', 'backup', 'create', '--name', 'full', volumeId]);
    fullId = backup.id;
    const during = await api.request('GET', v(`/volumes/${volumeId}`));
    assert.ok(['backing-up', 'available'].includes(during.body.volume.status), during.text);
    const done = await waitBackup(fullId, ['available', 'error']);
    const seconds = (Date.now() - started) / 1000;
    assert.equal(done.status, 'available', JSON.stringify(done));
    assert.equal(done.is_incremental, false);
    assert.equal(done.size, 1);
    assert.equal(done.object_count, (960 * MiB) / chunkBytes);
    assert.equal(done.volume_id, volumeId);
    assert.deepEqual(done.metadata, {});
    assert.equal((await api.waitVolume(volumeId, ['available', 'error'])).status, 'available');
    figures.push(`full backup of a 1 GiB volume (960 MiB random data, ${chunkBytes / MiB} MiB chunks): ${seconds.toFixed(1)} s from CLI call to available, ${(1024 / seconds).toFixed(0)} MiB/s; ${(backupFileBytes(fullId) / MiB).toFixed(1)} MiB stored`);
    figures.push(`  server log: ${new RegExp(`backup ${fullId} of volume [^:]+: ([^\n]*)`).exec(pumice.output())?.[1] ?? '(no log line)'}`);

    const restoredId = await cinderRestore(fullId, 'restored-full');
    assert.equal((await api.waitVolume(restoredId, ['available', 'error_restoring'], 300_000)).status, 'available');
    await waitBackup(fullId, ['available']);
    assert.equal(await volumeSha(restoredId), await sha256File(image));
  });

  test('an incremental after 1% changed in scattered 4 KiB writes stores only the changed blocks and restores byte-identical', async () => {
    // Ten 1 MiB regions (~1% of the volume) get new random bytes through qemu-io (`write -s FILE`), two of
    // them in the zero tail; random so that compression cannot hide what the incremental stores.
    // 1% of the volume in scattered 4 KiB writes of random bytes through qemu-io (`write -s FILE`), some
    // in the zero tail: random so that compression cannot hide what the incremental stores, scattered so
    // that every 32 MiB chunk changes.
    const blockBytes = 4096;
    const picked = new Set<number>();
    while (picked.size < Math.round((0.01 * GiB) / blockBytes)) picked.add(Math.floor(Math.random() * (GiB / blockBytes)) * blockBytes);
    const offsets = [...picked].sort((a, b) => a - b);
    await copyFile(imageFull(), imageIncremental());
    const expected = await open(imageIncremental(), 'r+');
    const blockFiles: string[] = [];
    for (const [i, offset] of offsets.entries()) {
      const data = randomBytes(blockBytes);
      blockFiles.push(join(scratch, `block-${i}.bin`));
      writeFileSync(blockFiles[i]!, data);
      await expected.write(data, 0, blockBytes, offset);
    }
    await expected.close();
    const uri = await connect(volumeId);
    for (let i = 0; i < offsets.length; i += 500) {
      const batch = offsets.slice(i, i + 500).flatMap((offset, j) => ['-c', `write -q -s ${blockFiles[i + j]} ${offset} ${blockBytes}`]);
      const r = await run('qemu-io', ['-f', 'raw', ...batch, uri]);
      assert.equal(r.code, 0, r.out);
      assert.doesNotMatch(r.out, /error|fail/i, r.out);
    }
    await disconnect(volumeId);
    for (const file of blockFiles) rmSync(file);
    const touchedChunks = new Set(offsets.map((offset) => Math.floor(offset / chunkBytes))).size;

    const started = Date.now();
    const backup = await openstackJson<{ id: string }>(env, ['volume', 'backup', 'create', '--incremental', '--name', 'incremental', volumeId]);
    incrementalId = backup.id;
    const done = await waitBackup(incrementalId, ['available', 'error']);
    const seconds = (Date.now() - started) / 1000;
    assert.equal(done.status, 'available', JSON.stringify(done));
    assert.equal(done.is_incremental, true);
    assert.equal(done.object_count, touchedChunks, 'one delta file per changed chunk');
    assert.equal((await api.waitVolume(volumeId, ['available', 'error'])).status, 'available');
    // Everything the incremental wrote: delta files, its block digests (16 bytes per 4 KiB block) and its manifest.
    const stored = backupFileBytes(incrementalId);
    const overheadBytes = 64 * 1024;
    assert.ok(stored >= offsets.length * blockBytes, `incremental stored ${stored} bytes: less than the random bytes changed`);
    assert.ok(stored <= 0.02 * GiB + overheadBytes, `incremental stored ${stored} bytes`);
    figures.push(`  incremental server log: ${new RegExp(`backup ${incrementalId} of volume [^:]+: ([^\n]*)`).exec(pumice.output())?.[1] ?? '(no log line)'}`);
    figures.push(`incremental after ${offsets.length} random 4 KiB writes: ${seconds.toFixed(1)} s wall, ${done.object_count} delta files, ${stored} bytes stored (${((stored / GiB) * 100).toFixed(2)}% of the volume)`);

    const full = await waitBackup(fullId, ['available']);
    assert.equal(full.has_dependent_backups, true);

    const restoredIncrId = await openstackRestore(incrementalId, 'restored-incremental');
    assert.equal((await api.waitVolume(restoredIncrId, ['available', 'error_restoring'], 300_000)).status, 'available');
    await waitBackup(incrementalId, ['available']);
    assert.equal(await volumeSha(restoredIncrId), await sha256File(imageIncremental()));
    // The source volume reads as the incremental image too (nothing in the backup path wrote to it).
    assert.equal(await volumeSha(volumeId), await sha256File(imageIncremental()));
  });

  test('restore into an existing larger volume discards the excess', async () => {
    const created = await api.request('POST', v('/volumes'), { volume: { size: 2, name: 'existing-target' } });
    assert.equal(created.status, 202, created.text);
    const targetId = created.body.volume.id as string;
    await api.waitVolume(targetId, ['available']);
    const uri = await connect(targetId);
    const w = await run('qemu-io', ['-f', 'raw', '-c', `write -P 0xee ${GiB - MiB} ${2 * MiB}`, '-c', `write -P 0xee ${GiB + 100 * MiB} ${MiB}`, uri]);
    assert.equal(w.code, 0, w.out);
    await disconnect(targetId);
    const r = await api.request('POST', v(`/backups/${fullId}/restore`), { restore: { volume_id: targetId } });
    assert.equal(r.status, 202, r.text);
    assert.deepEqual(r.body.restore, { backup_id: fullId, volume_id: targetId, volume_name: 'existing-target' });
    assert.equal((await api.waitVolume(targetId, ['available', 'error_restoring'], 300_000)).status, 'available');
    const expected = join(scratch, 'full-2g.img');
    await copyFile(imageFull(), expected);
    const fh = await open(expected, 'r+');
    await fh.truncate(2 * GiB);
    await fh.close();
    assert.equal(await volumeSha(targetId), await sha256File(expected));
    rmSync(expected);
  });

  test('listing, paging and quotas count the backups', async () => {
    const page = await api.request('GET', v('/backups/detail?limit=1'));
    assert.equal(page.status, 200, page.text);
    assert.equal(page.body.backups.length, 1);
    assert.match(page.body.backups_links[0].href, /marker=/);
    const next = await api.request('GET', page.body.backups_links[0].href);
    assert.equal(next.body.backups.length, 1);
    assert.notEqual(next.body.backups[0].id, page.body.backups[0].id);
    const filtered = await api.request('GET', v(`/backups?volume_id=${volumeId}&name=full`));
    assert.deepEqual(filtered.body.backups.map((b: { id: string }) => b.id), [fullId]);
    const show = await api.request('GET', v(`/backups/${incrementalId}`), undefined, { 'OpenStack-API-Version': 'volume 3.43' });
    for (const field of ['id', 'name', 'description', 'status', 'size', 'object_count', 'availability_zone', 'container', 'created_at', 'updated_at',
      'data_timestamp', 'volume_id', 'snapshot_id', 'is_incremental', 'has_dependent_backups', 'fail_reason', 'links', 'metadata']) {
      assert.ok(field in show.body.backup, `${field} missing: ${show.text}`);
    }
    assert.equal(show.body.backup.container, 'volumebackups');
    const updated = await api.request('PUT', v(`/backups/${incrementalId}`), { backup: { description: 'after 1%', metadata: { purpose: 'e2e' } } }, { 'OpenStack-API-Version': 'volume 3.43' });
    assert.equal(updated.status, 200, updated.text);
    assert.deepEqual(updated.body.backup.metadata, { purpose: 'e2e' });
    assert.equal(updated.body.backup.description, 'after 1%');

    // snapshot_id must name an existing snapshot (backups of snapshots are tested with their driver).
    const fromSnapshot = await api.request('POST', v('/backups'), { backup: { volume_id: volumeId, snapshot_id: volumeId } });
    assert.equal(fromSnapshot.status, 404, fromSnapshot.text);
    assert.match(fromSnapshot.text, new RegExp(`Snapshot ${volumeId} could not be found`));
    // A volume from a backup takes one source only (volumes from backups: test/e2e/volume-from-backup.test.ts).
    const twoSources = await api.request('POST', v('/volumes'), { volume: { size: 1, backup_id: fullId, snapshot_id: volumeId } });
    assert.equal(twoSources.status, 400, twoSources.text);
    assert.match(twoSources.text, /only one source/);

    // os-reset_status (admin): error and back; a backup in error cannot be restored.
    const reset = async (status: string) => {
      const r = await api.request('POST', v(`/backups/${incrementalId}/action`), { 'os-reset_status': { status } });
      assert.equal(r.status, 202, r.text);
    };
    await reset('error');
    const refused = await api.request('POST', v(`/backups/${incrementalId}/restore`), { restore: { name: 'nope' } });
    assert.equal(refused.status, 409, refused.text);
    await reset('available');
    const badStatus = await api.request('POST', v(`/backups/${incrementalId}/action`), { 'os-reset_status': { status: 'creating' } });
    assert.equal(badStatus.status, 400, badStatus.text);

    const listed = await openstackJson<{ ID: string; Name: string; Status: string; Size: number }[]>(env, ['volume', 'backup', 'list']);
    assert.deepEqual(listed.map((b) => b.Name).sort(), ['full', 'incremental']);
    assert.ok(listed.every((b) => b.Status === 'available' && b.Size === 1), JSON.stringify(listed));
    const shown = await openstackJson<{ id: string; is_incremental: boolean; has_dependent_backups: boolean }>(env, ['volume', 'backup', 'show', 'full']);
    assert.equal(shown.id, fullId);
    assert.equal(shown.has_dependent_backups, true);

    const limits = await api.request('GET', v('/limits'));
    assert.equal(limits.body.limits.absolute.totalBackupsUsed, 2);
    assert.equal(limits.body.limits.absolute.totalBackupGigabytesUsed, 2);
  });

  test('a backup with a dependent incremental cannot be deleted', async () => {
    const r = await api.request('DELETE', v(`/backups/${fullId}`));
    assert.equal(r.status, 409, r.text);
    assert.match(r.text, /incremental/i);
    assert.match(r.text, new RegExp(incrementalId));
    await assert.rejects(openstack(env, ['volume', 'backup', 'delete', fullId]), /incremental backups exist/i);
  });

  test('a corrupt chunk fails the restore with a message naming the chunk', async () => {
    const chunk = readdirSync(backupDir(fullId)).filter((f) => f.startsWith('chunk-')).sort()[5]!;
    const path = join(backupDir(fullId), chunk);
    const body = readFileSync(path);
    body[body.length >> 1]! ^= 0xff;
    writeFileSync(path, body);
    const r = await api.request('POST', v(`/backups/${fullId}/restore`), { restore: { name: 'from-corrupt' } });
    assert.equal(r.status, 202, r.text);
    const target = await api.waitVolume(r.body.restore.volume_id, ['available', 'error_restoring'], 300_000);
    assert.equal(target.status, 'error_restoring');
    const backup = await waitBackup(fullId, ['available']);
    assert.match(backup.fail_reason, /corrupt/);
    assert.ok(backup.fail_reason.includes(chunk), backup.fail_reason);
    assert.match(backup.fail_reason, /chunk 5 /);
  });

  test('deleting the incremental first, then the full backup, removes their files', async () => {
    await openstack(env, ['volume', 'backup', 'delete', 'incremental']);
    await waitUntilGone(incrementalId);
    const r2 = await api.request('DELETE', v(`/backups/${fullId}`));
    assert.equal(r2.status, 202, r2.text);
    await waitUntilGone(fullId);
    assert.deepEqual(readdirSync(join(pumice.dataDir, 'backups', 'volumebackups')), []);
  });

  async function waitUntilGone(id: string): Promise<void> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const r = await api.request('GET', v(`/backups/${id}`));
      if (r.status === 404) return;
      assert.ok(Date.now() < deadline, `backup ${id} not deleted: ${r.text}`);
      await new Promise((res) => setTimeout(res, 50));
    }
  }
});

describe('a backup killed mid-way', { timeout: 300_000 }, () => {
  let pumice: PumiceProcess;
  let api: ApiClient;
  const config = `[DEFAULT]\nbackup_file_size = ${crashChunkBytes}\n`;
  const v = (path: string) => `${api.volumeUrl}${path}`;

  after(async () => {
    if (pumice) {
      await pumice.stop();
      pumice.cleanup();
    }
  });

  test('leaves the backup in error with a reason, the volume available, no partial chunks, and a new backup succeeds', async () => {
    pumice = await startPumice({ config });
    api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const created = await api.request('POST', v('/volumes'), { volume: { size: 1, name: 'crash-source' } });
    const volumeId = created.body.volume.id as string;
    await api.waitVolume(volumeId, ['available']);
    // Fill the volume file directly (the data path is covered above): random bytes make the backup take seconds.
    const volumeFile = join(pumice.dataDir, 'volumes', 'local', `volume-${volumeId}`);
    const fh = await open(volumeFile, 'r+');
    for (let offset = 0; offset < GiB; offset += 16 * MiB) await fh.write(randomBytes(16 * MiB), 0, 16 * MiB, offset);
    await fh.close();

    const r = await api.request('POST', v('/backups'), { backup: { volume_id: volumeId, name: 'doomed' } });
    assert.equal(r.status, 202, r.text);
    const backupId = r.body.backup.id as string;
    const dir = join(pumice.dataDir, 'backups', 'volumebackups', backupId);
    const deadline = Date.now() + 60_000;
    for (;;) {
      let files: string[] = [];
      try {
        files = readdirSync(dir).filter((f) => f.startsWith('chunk-'));
      } catch {
        // not created yet
      }
      if (files.length >= 20) break;
      assert.ok(Date.now() < deadline, 'the backup wrote no chunks');
      await new Promise((res) => setTimeout(res, 5));
    }
    const mid = await api.request('GET', v(`/backups/${backupId}`));
    assert.equal(mid.body.backup.status, 'creating', mid.text);
    await pumice.kill9();

    pumice = await startPumice({ config, dataDir: pumice.dataDir });
    api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const after = await api.request('GET', v(`/backups/${backupId}`));
    assert.equal(after.body.backup.status, 'error', after.text);
    assert.match(after.body.backup.fail_reason, /interrupted/);
    assert.equal((await api.waitVolume(volumeId, ['available'], 5_000)).status, 'available');
    assert.throws(() => readdirSync(dir), /ENOENT/);

    const again = await api.request('POST', v('/backups'), { backup: { volume_id: volumeId, name: 'second' } });
    assert.equal(again.status, 202, again.text);
    const deadline2 = Date.now() + 120_000;
    for (;;) {
      const b = await api.request('GET', v(`/backups/${again.body.backup.id}`));
      if (b.body.backup.status === 'available') break;
      assert.notEqual(b.body.backup.status, 'error', b.text);
      assert.ok(Date.now() < deadline2, b.text);
      await new Promise((res) => setTimeout(res, 50));
    }
    assert.equal((await api.waitVolume(volumeId, ['available'], 5_000)).status, 'available');

    // A restore killed mid-way: the backup stays usable, the half-written volume says so.
    const secondId = again.body.backup.id as string;
    const restore = await api.request('POST', v(`/backups/${secondId}/restore`), { restore: { name: 'half-restored' } });
    assert.equal(restore.status, 202, restore.text);
    const targetId = restore.body.restore.volume_id as string;
    await api.waitVolume(targetId, ['restoring-backup'], 60_000);
    await pumice.kill9();
    pumice = await startPumice({ config, dataDir: pumice.dataDir });
    api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const backupAfter = await api.request('GET', v(`/backups/${secondId}`));
    assert.equal(backupAfter.body.backup.status, 'available', backupAfter.text);
    assert.match(backupAfter.body.backup.fail_reason, /restore.*interrupted/);
    assert.equal((await api.waitVolume(targetId, ['error_restoring'], 5_000)).status, 'error_restoring');
  });
});
