/**
 * Volume backups on the Ceph backup driver (`backup_driver = ceph`) against
 * the lab cluster, driven with the Debian `openstack` and `cinder` CLIs.
 *
 * Proves, for an RBD volume: a full backup and an incremental after 1% of
 * the volume changed in scattered 4 KiB writes restore into new volumes
 * byte-identical to the volume at each backup time; the incremental stores
 * at most 2% of the volume (measured with `rbd diff` on the backup image);
 * restore into an existing volume; backups from a snapshot; the delete order
 * rule and that nothing is left in Ceph after the deletes. For a local
 * volume: full and incremental into the backups pool. That a missing keyring
 * fails the backup with a reason naming it and shows the service down, that
 * wrong caps keep the service down with the cap to grant, and that a kill -9
 * mid-backup leaves an `error` backup, an available volume, no orphan image
 * or snapshot, and a new backup succeeds.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { readLab, type CephLab } from '../../src/ceph/lab.ts';
import { RadosCluster, type IoCtx } from '../../src/ceph/rbd.ts';
import { ApiClient, cliEnv, openstack, openstackJson, readEvents, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const shared = process.env['PUMICE_CEPH_LAB'];
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/**
 * The volumes live in a pool of their own, made for this run and removed after it: every Pumice
 * with an RBD backend removes, when it starts, the `volume-*` images of its pool that its own
 * database does not know, so other test files' servers on the shared lab would remove ours from
 * pool `volumes` (and our restart in the kill test would remove theirs). client.cinder has no caps
 * on a new pool, so the volume backend runs as client.admin here; the backup driver runs as the
 * scenario's client.cinder-backup.
 */
const volumePool = `backups-rbd-test-${process.pid}`;
let lab: CephLab;
let admin: RadosCluster;
let volumesPool: IoCtx;
let backupsPool: IoCtx;

function config(extra = ''): string {
  return `[DEFAULT]
enabled_backends = ceph,local
report_interval = 1
service_down_time = 4
default_volume_type = ceph
backup_driver = cinder.backup.drivers.ceph.CephBackupDriver
backup_ceph_conf = ${lab.confPath}
backup_ceph_user = cinder-backup
backup_ceph_pool = backups
backup_ceph_chunk_size = 134217728
backup_ceph_stripe_unit = 0
backup_ceph_stripe_count = 0
restore_discard_excess_bytes = true
${extra}
[ceph]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = ceph
rbd_pool = ${volumePool}
rbd_user = admin
rbd_ceph_conf = ${lab.confPath}
rbd_secret_uuid = 457eb676-33da-42ec-9a8c-9293d545c337
rbd_store_chunk_size = 4
rados_connect_timeout = 5

[local]
volume_driver = local
volume_backend_name = local
`;
}

async function rbd(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('rbd', ['--conf', lab.confPath, '--id', 'admin', ...args], { timeout: 120_000, maxBuffer: 64 * MiB });
  return stdout;
}

async function snapNames(spec: string): Promise<string[]> {
  return (JSON.parse(await rbd(['snap', 'ls', '--format', 'json', spec])) as { name: string }[]).map((s) => s.name).sort();
}

/** Images in pool `backups` made for volume `volumeId`. */
async function backupImages(volumeId: string): Promise<string[]> {
  return (await backupsPool.listImages()).filter((n) => n.startsWith(`volume-${volumeId}.backup.`)).sort();
}

/**
 * Data bytes a backup moved, as the backup role logged them (the driver counts the bytes it passed
 * to rbd_write). `rbd diff` cannot tell: librbd reports a whole object for every object created
 * since the earlier snapshot, even if only 4 KiB of it was written.
 */
/** What the backup wrote, from its `backup.written` event (src/events.ts). */
function storedBytes(dataDir: string, backupId: string): number {
  const written = readEvents(dataDir, 'backup.written').find((e) => e['backup_id'] === backupId);
  assert.ok(written, `no backup.written event for backup ${backupId}`);
  return Number(written['stored_bytes']);
}

async function sha256Image(pool: IoCtx, image: string, sizeBytes: number): Promise<string> {
  const handle = await pool.openImage(image, { readOnly: true });
  const hash = createHash('sha256');
  try {
    for (let offset = 0; offset < sizeBytes; offset += 64 * MiB) hash.update(await handle.read(offset, Math.min(64 * MiB, sizeBytes - offset)));
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
}

async function writeImage(image: string, writes: (handle: { write(offset: number, data: Buffer): Promise<void>; writeZeroes(offset: number, length: number): Promise<void> }) => Promise<void>): Promise<void> {
  const handle = await volumesPool.openImage(image);
  try {
    await writes(handle);
    await handle.flush();
  } finally {
    await handle.close();
  }
}

/** Changes `fraction` of the volume in 4 KiB writes at random 4 KiB-aligned places (some in unallocated objects). */
async function changeScattered(image: string, sizeBytes: number, fraction: number): Promise<number> {
  const count = Math.round((sizeBytes * fraction) / 4096);
  const blocks = new Set<number>();
  while (blocks.size < count) blocks.add(Math.floor(Math.random() * (sizeBytes / 4096)));
  await writeImage(image, async (handle) => {
    const all = [...blocks];
    for (let i = 0; i < all.length; i += 64) await Promise.all(all.slice(i, i + 64).map((b) => handle.write(b * 4096, randomBytes(4096))));
  });
  return count * 4096;
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 120_000, intervalMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * Actions go through the Debian CLIs; the waits poll the API over HTTP (a CLI call per poll costs
 * a Python start, about a second of CPU on this machine, and the waits poll often).
 */
function session(pumice: PumiceProcess) {
  const env = pumice.adminEnv;
  let client: Promise<ApiClient> | null = null;
  const get = async (path: string): Promise<Record<string, any>> => {
    client ??= ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const api = await client;
    const res = await api.request('GET', `${api.volumeUrl}${path}`);
    assert.equal(res.status, 200, `GET ${path}: ${res.status} ${res.text}`);
    return res.body as Record<string, any>;
  };
  const showVolume = async (id: string) => (await get(`/volumes/${id}`))['volume'] as Record<string, unknown>;
  const showBackup = async (id: string) => (await get(`/backups/${id}`))['backup'] as Record<string, unknown>;
  const backupIds = async () => ((await get('/backups'))['backups'] as { id: string }[]).map((b) => b.id);
  const waitVolume = (id: string, status: string) =>
    waitFor(`volume ${id} to be ${status}`, async () => {
      const volume = await showVolume(id);
      if (volume['status'] === status) return volume;
      if (String(volume['status']).startsWith('error')) throw new Error(`volume ${id} went to ${volume['status']}`);
      return undefined;
    });
  const waitBackup = (id: string, statuses: string[]) =>
    waitFor(`backup ${id} to be ${statuses.join('/')}`, async () => {
      const backup = await showBackup(id);
      return statuses.includes(backup['status'] as string) ? backup : undefined;
    }, 300_000);
  const createVolume = async (name: string, sizeGiB: number, type: string) => {
    const created = await openstackJson(env, ['volume', 'create', '--type', type, '--size', String(sizeGiB), name]);
    await waitVolume(created['id'] as string, 'available');
    return created['id'] as string;
  };
  const backup = async (args: string[]) => {
    const created = await openstackJson(env, ['volume', 'backup', 'create', ...args]);
    return created['id'] as string;
  };
  /**
   * `openstack volume backup restore BACKUP NAME`: python-openstackclient 6.0.0 sends the request and
   * then fails printing the answer ("cannot unpack non-iterable VolumeBackupsRestore object"); only
   * that error is tolerated, and the new volume is found by name.
   */
  const restoreNew = async (backupId: string, name: string): Promise<string> => {
    try {
      await openstack(env, ['volume', 'backup', 'restore', backupId, name]);
    } catch (error) {
      if (!/cannot unpack non-iterable VolumeBackupsRestore/.test((error as Error).message)) throw error;
    }
    const id = await waitFor(`volume named ${name}`, async () => {
      const rows = (await get(`/volumes?name=${encodeURIComponent(name)}`))['volumes'] as { id: string }[];
      return rows[0]?.id;
    });
    await waitVolume(id, 'available');
    await waitBackup(backupId, ['available']);
    return id;
  };
  /** `cinder backup-restore --volume ID BACKUP` into an existing volume. */
  const restoreInto = async (backupId: string, volumeId: string): Promise<void> => {
    await execFileAsync('/usr/bin/cinder', ['backup-restore', '--volume', volumeId, backupId], { env: cliEnv(env), timeout: 120_000 });
    await waitBackup(backupId, ['available']);
    await waitVolume(volumeId, 'available');
  };
  const backupService = async () => {
    const rows = await openstackJson<{ Binary: string; State: string; 'Disabled Reason'?: string | null }[]>(env, ['volume', 'service', 'list', '--long']);
    return rows.find((r) => r.Binary === 'cinder-backup');
  };
  const waitBackupGone = (id: string) => waitFor(`backup ${id} deleted`, async () => ((await backupIds()).includes(id) ? undefined : true));
  return { env, get, showBackup, showVolume, waitVolume, waitBackup, waitBackupGone, createVolume, backup, restoreNew, restoreInto, backupService };
}

before(async () => {
  assert.ok(shared, 'set PUMICE_CEPH_LAB to a running lab (these tests never start or stop one)');
  lab = readLab(shared);
  admin = await RadosCluster.connect({ confPath: lab.confPath, user: 'admin', keyringPath: lab.keyringPath('admin'), connectTimeoutSeconds: 10 });
  await execFileAsync('ceph', ['--conf', lab.confPath, '--id', 'admin', 'osd', 'pool', 'create', volumePool, '16', '16'], { timeout: 120_000 });
  await execFileAsync('rbd', ['--conf', lab.confPath, '--id', 'admin', 'pool', 'init', volumePool], { timeout: 120_000 });
  volumesPool = await admin.openIoctx(volumePool);
  backupsPool = await admin.openIoctx('backups');
});

after(async () => {
  await volumesPool?.close().catch(() => undefined);
  await execFileAsync('ceph', ['--conf', lab.confPath, '--id', 'admin', 'osd', 'pool', 'delete', volumePool, volumePool, '--yes-i-really-really-mean-it'], { timeout: 120_000 }).catch(() => undefined);
  await backupsPool?.close().catch(() => undefined);
  await admin?.shutdown().catch(() => undefined);
});

describe('Ceph backup driver: RBD volumes', { timeout: 900_000 }, () => {
  let pumice: PumiceProcess;
  let s: ReturnType<typeof session>;
  const sizeBytes = GiB;
  let volumeId = '';
  let fullId = '';
  let incrementalId = '';
  let shaAtFull = '';
  let shaAtIncremental = '';
  const restored: Record<string, string> = {};

  before(async () => {
    pumice = await startPumice({ config: config() });
    s = session(pumice);
    await openstack(s.env, ['volume', 'type', 'create', 'ceph']);
    await openstack(s.env, ['volume', 'type', 'set', 'ceph', '--property', 'volume_backend_name=ceph']);
    await openstack(s.env, ['volume', 'type', 'create', 'local']);
    await openstack(s.env, ['volume', 'type', 'set', 'local', '--property', 'volume_backend_name=local']);
  }, { timeout: 120_000 });

  after(async () => {
    if (!pumice) return;
    // Best-effort clean-up of what the tests made, in Ceph too, before the server goes.
    const backups = await openstackJson<{ ID: string }[]>(s.env, ['volume', 'backup', 'list']).catch(() => []);
    for (let round = 0; round < 4 && backups.length > 0; round++) {
      for (const b of backups) await openstack(s.env, ['volume', 'backup', 'delete', '--force', b.ID]).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 1500));
    }
    for (const v of await openstackJson<{ ID: string }[]>(s.env, ['volume', 'list']).catch(() => [])) {
      await openstack(s.env, ['volume', 'delete', '--force', '--purge', v.ID]).catch(() => undefined);
    }
    await new Promise((r) => setTimeout(r, 2000));
    await pumice.stop();
    pumice.cleanup();
  }, { timeout: 300_000 });

  test('the cinder-backup service is up with the Ceph driver', async () => {
    const row = await s.backupService();
    assert.equal(row?.State, 'up', JSON.stringify(row));
  });

  test('full backup of an RBD volume: an image per chain in pool backups, a snapshot per backup, zero runs not written', async () => {
    volumeId = await s.createVolume('rbd-src', 1, 'ceph');
    const image = `volume-${volumeId}`;
    let written = 0;
    await writeImage(image, async (handle) => {
      await handle.write(0, randomBytes(96 * MiB));
      written += 96 * MiB;
      for (let i = 0; i < 16; i++) {
        await handle.write((200 + i * 37) * MiB + 4096 * i, randomBytes(MiB + 512 * i));
        written += MiB + 512 * i; // librbd reports the written extents exactly, so not rounded to 4 KiB
      }
      await handle.write(sizeBytes - 8192, randomBytes(8192));
      written += 8192;
    });
    shaAtFull = await sha256Image(volumesPool, image, sizeBytes);
    fullId = await s.backup(['--name', 'full', volumeId]);
    const done = await s.waitBackup(fullId, ['available', 'error']);
    assert.equal(done['status'], 'available', String(done['fail_reason']));
    assert.equal((await s.waitVolume(volumeId, 'available'))['status'], 'available');
    assert.deepEqual(await backupImages(volumeId), [`volume-${volumeId}.backup.${fullId}`]);
    assert.deepEqual(await snapNames(`backups/volume-${volumeId}.backup.${fullId}`), [`backup.${fullId}.snap`]);
    assert.deepEqual(await snapNames(`${volumePool}/${image}`), [`backup.${fullId}.snap`], 'one source snapshot: the chain head');
    // Only the written data was stored (96 MiB + ~16.1 MiB + 8 KiB), not the 1 GiB volume.
    const usage = JSON.parse(await rbd(['du', '--format', 'json', `backups/volume-${volumeId}.backup.${fullId}`])) as { images: { name: string; snapshot?: string; used_size: number }[] };
    const used = usage.images.filter((i) => i.snapshot).reduce((sum, i) => sum + i.used_size, 0);
    assert.ok(used <= 256 * MiB, `backup image uses ${used} bytes (4 MiB objects)`);
    assert.equal(storedBytes(pumice.dataDir, fullId), written, 'the full backup wrote the data and nothing of the zero runs');
  });

  test('incremental after 1% changed in scattered 4 KiB writes stores at most 2% of the volume', async () => {
    const image = `volume-${volumeId}`;
    const changed = await changeScattered(image, sizeBytes, 0.01);
    await writeImage(image, (handle) => handle.writeZeroes(0, 64 * 1024)); // a zeroed run must come back as zeros
    shaAtIncremental = await sha256Image(volumesPool, image, sizeBytes);
    incrementalId = await s.backup(['--incremental', '--name', 'incremental', volumeId]);
    const done = await s.waitBackup(incrementalId, ['available', 'error']);
    assert.equal(done['status'], 'available', String(done['fail_reason']));
    assert.equal(done['is_incremental'], true);
    const stored = storedBytes(pumice.dataDir, incrementalId);
    const limit = 0.02 * sizeBytes + MiB;
    // At least the changed blocks outside the zeroed 64 KiB; at most 2% of the volume plus overhead.
    assert.ok(stored >= changed - 64 * 1024 && stored <= limit, `incremental stored ${stored} bytes for ${changed} changed (limit ${limit})`);
    assert.deepEqual(await snapNames(`${volumePool}/${image}`), [`backup.${incrementalId}.snap`], 'the older source snapshot was removed');
    assert.deepEqual(await snapNames(`backups/volume-${volumeId}.backup.${fullId}`), [`backup.${fullId}.snap`, `backup.${incrementalId}.snap`].sort());
    console.log(`# incremental: ${stored} bytes stored for ${changed} bytes changed (${((stored / sizeBytes) * 100).toFixed(2)}% of the volume)`);
  });

  test('each backup restores into a new volume byte-identical to the volume at its time', async () => {
    restored['full'] = await s.restoreNew(fullId, 'restored-full');
    restored['incremental'] = await s.restoreNew(incrementalId, 'restored-incremental');
    assert.equal(await sha256Image(volumesPool, `volume-${restored['full']}`, sizeBytes), shaAtFull);
    assert.equal(await sha256Image(volumesPool, `volume-${restored['incremental']}`, sizeBytes), shaAtIncremental);
  });

  test('restore over the volume the chain came from rewrites only the blocks that differ', async () => {
    const image = `volume-${volumeId}`;
    /** Restores `backupId` over the volume and returns the bytes written, as the volume's diff from a snapshot taken just before. */
    const restoreOver = async (backupId: string): Promise<number> => {
      await volumesPool.withImage(image, {}, (img) => img.snapCreate('before-restore'));
      try {
        await s.restoreInto(backupId, volumeId);
        return await volumesPool.withImage(image, {}, async (img) => (await img.diffIterate({ fromSnap: 'before-restore', wholeObject: false })).reduce((sum, e) => sum + e.length, 0));
      } finally {
        await volumesPool.withImage(image, {}, (img) => img.snapRemove('before-restore'));
      }
    };
    // Since the incremental: 1 MiB of data where the backup holds zeros, and 64 KiB zeroed inside its data.
    await writeImage(image, async (handle) => {
      await handle.write(500 * MiB, randomBytes(MiB));
      await handle.writeZeroes(10 * MiB, 64 * 1024);
    });
    const written = await restoreOver(incrementalId);
    assert.equal(await sha256Image(volumesPool, image, sizeBytes), shaAtIncremental);
    assert.ok(written <= MiB + 64 * 1024, `restoring the chain head over its volume wrote ${written} bytes for 1 MiB + 64 KiB changed`);
    // An older backup of the chain: also where the backups differ (the incremental's ~1% scattered blocks), nothing else.
    const writtenFull = await restoreOver(fullId);
    assert.equal(await sha256Image(volumesPool, image, sizeBytes), shaAtFull);
    assert.ok(writtenFull <= 0.011 * sizeBytes + 128 * 1024, `restoring the full backup over the volume wrote ${writtenFull} bytes where about 1% differs`);
    console.log(`# restore over the same volume: ${written} bytes written (chain head), ${writtenFull} (its parent)`);
  });

  test('restore into an existing larger volume overwrites it and zeroes the excess', async () => {
    const target = await s.createVolume('existing-target', 2, 'ceph');
    await writeImage(`volume-${target}`, async (handle) => {
      await handle.write(100 * MiB, randomBytes(8 * MiB)); // where the backup has a hole
      await handle.write(sizeBytes + 5 * MiB, randomBytes(MiB)); // beyond the backup's size
    });
    await s.restoreInto(fullId, target);
    assert.equal(await sha256Image(volumesPool, `volume-${target}`, sizeBytes), shaAtFull);
    const excess = await (async () => {
      const handle = await volumesPool.openImage(`volume-${target}`, { readOnly: true });
      try {
        return await handle.read(sizeBytes, 16 * MiB);
      } finally {
        await handle.close();
      }
    })();
    assert.ok(excess.equals(Buffer.alloc(16 * MiB)), 'bytes beyond the backup size are zero');
    // And the incremental over the full's content (a non-zero target again).
    await s.restoreInto(incrementalId, restored['full']!);
    assert.equal(await sha256Image(volumesPool, `volume-${restored['full']}`, sizeBytes), shaAtIncremental);
  });

  test('backup of a volume snapshot holds the snapshot bytes, not the later writes', async () => {
    const snap = await openstackJson(s.env, ['volume', 'snapshot', 'create', '--volume', volumeId, 'snap-for-backup']);
    await waitFor('snapshot', async () => ((await s.get(`/snapshots/${snap['id'] as string}`))['snapshot']['status'] === 'available' ? true : undefined));
    const shaAtSnapshot = await sha256Image(volumesPool, `volume-${volumeId}`, sizeBytes);
    await writeImage(`volume-${volumeId}`, (handle) => handle.write(300 * MiB, randomBytes(4 * MiB)));
    const fromSnap = await s.backup(['--snapshot', snap['id'] as string, '--incremental', '--name', 'from-snapshot', volumeId]);
    const done = await s.waitBackup(fromSnap, ['available', 'error']);
    assert.equal(done['status'], 'available', String(done['fail_reason']));
    assert.equal(done['snapshot_id'], snap['id']);
    assert.equal((await s.get(`/snapshots/${snap['id'] as string}`))['snapshot']['status'], 'available');
    const target = await s.restoreNew(fromSnap, 'restored-from-snapshot');
    assert.equal(await sha256Image(volumesPool, `volume-${target}`, sizeBytes), shaAtSnapshot);
    await openstack(s.env, ['volume', 'backup', 'delete', fromSnap]);
    await s.waitBackupGone(fromSnap);
    await openstack(s.env, ['volume', 'snapshot', 'delete', snap['id'] as string]);
  });

  test('delete order: the full backup is refused while the incremental exists; after both, nothing is left in Ceph', async () => {
    await assert.rejects(openstack(s.env, ['volume', 'backup', 'delete', fullId]), /incremental backups exist/i);
    await openstack(s.env, ['volume', 'backup', 'delete', incrementalId]);
    await s.waitBackupGone(incrementalId);
    assert.deepEqual(await snapNames(`backups/volume-${volumeId}.backup.${fullId}`), [`backup.${fullId}.snap`]);
    await openstack(s.env, ['volume', 'backup', 'delete', fullId]);
    await s.waitBackupGone(fullId);
    assert.deepEqual(await backupImages(volumeId), []);
    assert.deepEqual((await snapNames(`${volumePool}/volume-${volumeId}`)).filter((n) => n.startsWith('backup.')), []);
  });

  test('a local volume backs up into the backups pool: full, incremental by comparison, restores byte-identical', async () => {
    const localId = await s.createVolume('local-src', 1, 'local');
    const file = path.join(pumice.dataDir, 'volumes', 'local', `volume-${localId}`);
    const original = readFileSync(file).length === sizeBytes ? null : 'size';
    assert.equal(original, null);
    const { open } = await import('node:fs/promises');
    const fh = await open(file, 'r+');
    await fh.write(randomBytes(32 * MiB), 0, 32 * MiB, 64 * MiB);
    await fh.sync();
    const sha = () => createHash('sha256').update(readFileSync(file)).digest('hex');
    const shaFull = sha();
    const full = await s.backup(['--name', 'local-full', localId]);
    assert.equal((await s.waitBackup(full, ['available', 'error']))['status'], 'available');
    for (let i = 0; i < 64; i++) await fh.write(randomBytes(4096), 0, 4096, Math.floor(Math.random() * (sizeBytes / 4096)) * 4096);
    await fh.sync();
    await fh.close();
    const shaIncremental = sha();
    const incremental = await s.backup(['--incremental', '--name', 'local-incremental', localId]);
    assert.equal((await s.waitBackup(incremental, ['available', 'error']))['status'], 'available');
    assert.equal(storedBytes(pumice.dataDir, full), 32 * MiB);
    const stored = storedBytes(pumice.dataDir, incremental);
    assert.ok(stored > 0 && stored <= 64 * 4096, `local incremental stored ${stored} bytes for 64 changed blocks`);
    // Into existing local volumes (one holding other data), and into a new volume, which the default type puts on RBD.
    const fileOf = (id: string) => path.join(pumice.dataDir, 'volumes', 'local', `volume-${id}`);
    const targetFull = await s.createVolume('local-target-full', 1, 'local');
    const targetIncremental = await s.createVolume('local-target-incremental', 1, 'local');
    writeFileSync(fileOf(targetFull), randomBytes(8 * MiB), { flag: 'r+' });
    await s.restoreInto(full, targetFull);
    await s.restoreInto(incremental, targetIncremental);
    assert.equal(createHash('sha256').update(readFileSync(fileOf(targetFull))).digest('hex'), shaFull);
    assert.equal(createHash('sha256').update(readFileSync(fileOf(targetIncremental))).digest('hex'), shaIncremental);
    const onRbd = await s.restoreNew(incremental, 'local-restored-on-rbd');
    assert.equal(await sha256Image(volumesPool, `volume-${onRbd}`, sizeBytes), shaIncremental);
  });

  test('kill -9 mid-backup: after restart the backup is error, the volume available, nothing orphaned; a new backup succeeds', async () => {
    const bigId = await s.createVolume('big', 1, 'ceph');
    await writeImage(`volume-${bigId}`, (handle) => handle.write(0, randomBytes(64 * MiB)));
    // The server stops itself (SIGSTOP) at the backup's first written piece, so the kill lands mid-copy
    // whatever the machine's speed; the backup data can stay small.
    await pumice.stop();
    pumice = await startPumice({ dataDir: pumice.dataDir, config: config(), env: { PUMICE_CRASH_POINT: 'ceph-backup.piece-written:1:stop' } });
    s = session(pumice);
    const doomed = await s.backup(['--name', 'doomed', bigId]);
    await waitFor('the backup to stop mid-copy', async () => (/crash-point ceph-backup\.piece-written:1: stopping/.test(pumice.output()) ? true : undefined), 120_000, 50);
    assert.equal((await backupImages(bigId)).length, 1, 'the backup image exists: the driver is mid-copy');
    await pumice.kill9();
    pumice = await startPumice({ dataDir: pumice.dataDir, config: config() });
    s = session(pumice);
    const failed = await s.showBackup(doomed);
    assert.equal(failed['status'], 'error');
    assert.match(String(failed['fail_reason']), /interrupted/);
    assert.equal((await s.showVolume(bigId))['status'], 'available');
    // The clean-up may wait for the killed client's watch on the image to expire (osd_client_watch_timeout).
    await waitFor('the interrupted backup image to be removed', async () => ((await backupImages(bigId)).length === 0 ? true : undefined), 180_000, 500).catch((error: Error) => {
      const reconcileLines = pumice.output().split('\n').filter((line) => /reconcile|backup/i.test(line));
      throw new Error(`${error.message}; Pumice said:\n${reconcileLines.slice(-30).join('\n')}`);
    });
    assert.deepEqual((await snapNames(`${volumePool}/volume-${bigId}`)).filter((n) => n.startsWith('backup.')), [], 'no orphan source snapshot');
    const retry = await s.backup(['--name', 'after-crash', bigId]);
    assert.equal((await s.waitBackup(retry, ['available', 'error']))['status'], 'available');
    await openstack(s.env, ['volume', 'backup', 'delete', doomed]);
  });
});

describe('Ceph backup driver: keyring and caps problems', { timeout: 300_000 }, () => {
  test('a keyring that disappears fails the backup naming it and shows cinder-backup down with the reason', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pumice-backup-keyring-'));
    const conf = path.join(dir, 'ceph.conf');
    writeFileSync(conf, readFileSync(lab.confPath, 'utf8').replace(/^keyring = .*$/m, `keyring = ${dir}/$cluster.$name.keyring`));
    const keyring = path.join(dir, 'ceph.client.cinder-backup.keyring');
    copyFileSync(lab.keyringPath('cinder-backup'), keyring);
    // Long heartbeats, so the backup itself meets the missing keyring first.
    const pumice = await startPumice({
      config: `[DEFAULT]
enabled_backends = local
report_interval = 60
service_down_time = 120
backup_driver = ceph
backup_ceph_conf = ${conf}

[local]
volume_driver = local
`,
    });
    const s = session(pumice);
    try {
      assert.equal((await s.backupService())?.State, 'up');
      const volumeId = await s.createVolume('k', 1, '__DEFAULT__');
      rmSync(keyring);
      const id = await s.backup([volumeId]);
      const failed = await s.waitBackup(id, ['error', 'available']);
      assert.equal(failed['status'], 'error');
      assert.match(String(failed['fail_reason']), new RegExp(`keyring ${keyring.replace(/[.]/g, '\\.')} for client\\.cinder-backup not found`));
      assert.match(String(failed['fail_reason']), /backup_ceph_user/);
      assert.equal((await s.waitVolume(volumeId, 'available'))['status'], 'available');
      const service = await s.backupService();
      assert.equal(service?.State, 'down');
      assert.match(String(service?.['Disabled Reason']), /keyring .* not found/);
      // The API now refuses new backups with the reason, instead of accepting doomed ones.
      await assert.rejects(s.backup([volumeId]), /backup service is down.*keyring/is);
    } finally {
      await pumice.stop();
      pumice.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a backup user without caps on pool backups keeps the service down, naming the cap to grant', async () => {
    const pumice = await startPumice({
      config: `[DEFAULT]
enabled_backends = local
report_interval = 1
backup_driver = cinder.backup.drivers.ceph
backup_ceph_conf = ${lab.confPath}
backup_ceph_user = glance

[local]
volume_driver = local
`,
    });
    const s = session(pumice);
    try {
      const service = await s.backupService();
      assert.equal(service?.State, 'down');
      assert.match(String(service?.['Disabled Reason']), /Permission denied for client\.glance on pool 'backups'.*ceph auth caps client\.glance .*allow rwx pool=backups/);
    } finally {
      await pumice.stop();
      pumice.cleanup();
    }
  });
});
