/**
 * A volume created from a backup (`cinder create --backup-id`, microversion
 * 3.47) on the local backend with the directory backup driver: the new
 * volume holds the backed-up bytes (qemu-img compare), is never `available`
 * before they are there, the backup is `restoring` meanwhile and `available`
 * after; a size below the backup's is a 400; another project's backup is a 404.
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
type Row = Record<string, any>;
const MiB = 1024 * 1024;

let pumice: PumiceProcess;
let work = '';
let admin: Record<string, string>;

const volumeFile = (id: string) => join(pumice.dataDir, 'volumes', 'local', `volume-${id}`);

async function cinder(args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync('/usr/bin/cinder', args, { env: cliEnv(admin), timeout: 120_000 });
    return stdout;
  } catch (error) {
    throw new Error(`cinder ${args.join(' ')} failed: ${(error as { stderr?: string }).stderr ?? (error as Error).message}`);
  }
}

async function waitFor(kind: 'volume' | 'volume backup', name: string, statuses: string[], seen?: Set<string>): Promise<Row> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const row = await openstackJson<Row>(admin, [...kind.split(' '), 'show', name]);
    seen?.add(row['status']);
    if (statuses.includes(row['status'])) return row;
    if (Date.now() > deadline) throw new Error(`${kind} ${name} stayed ${row['status']}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'pumice-vol-from-backup-'));
  pumice = await startPumice();
  admin = pumice.adminEnv;
});

after(async () => {
  await pumice?.stop();
  pumice?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('volume from backup (backup_id)', { timeout: 300_000 }, () => {
  let backupId = '';
  let sourceId = '';

  test('back up a 1 GiB volume with known bytes', async () => {
    sourceId = (await openstackJson<Row>(admin, ['volume', 'create', '--size', '1', 'src']))['id'];
    await waitFor('volume', 'src', ['available']);
    // qemu-io writes patterns into the volume's bytes at rest (the local backend's file).
    for (const [offset, pattern] of [[0, '0x11'], [300 * MiB + 4096, '0x22'], [1024 * MiB - 65536, '0x33']] as const) {
      await execFileAsync('qemu-io', ['-f', 'raw', '-c', `write -P ${pattern} ${offset} 65536`, volumeFile(sourceId)]);
    }
    backupId = (await openstackJson<Row>(admin, ['volume', 'backup', 'create', '--name', 'b1', 'src']))['id'];
    assert.equal((await waitFor('volume backup', 'b1', ['available', 'error']))['status'], 'available');
  });

  test('cinder create --backup-id makes a volume with the backup bytes, available only once restored', async () => {
    const out = await cinder(['--os-volume-api-version', '3.47', 'create', '--backup-id', backupId, '--name', 'from-backup', '2']);
    assert.match(out, /from-backup/);
    const seen = new Set<string>();
    const volume = await waitFor('volume', 'from-backup', ['available', 'error', 'error_restoring'], seen);
    assert.equal(volume['status'], 'available', `statuses seen: ${[...seen].join(', ')}`);
    assert.equal(volume['size'], 2);
    // Polling stopped at the first 'available': the bytes must be there already.
    await execFileAsync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', volumeFile(sourceId), volumeFile(volume['id'])]);
    assert.equal((await waitFor('volume backup', 'b1', ['available']))['status'], 'available');
  });

  test('without a size the volume gets the backup size; a smaller size is a 400; unknown backup is a 404', async () => {
    const api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const sized = await api.request('POST', `/volume/v3/${api.projectId}/volumes`, { volume: { backup_id: backupId, name: 'sized' } }, { 'OpenStack-API-Version': 'volume 3.47' });
    assert.equal(sized.status, 202, sized.text);
    assert.equal(sized.body.volume.size, 1);
    await api.waitVolume(sized.body.volume.id, ['available'], 120_000);
    await execFileAsync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', volumeFile(sourceId), volumeFile(sized.body.volume.id)]);
    await openstack(admin, ['volume', 'backup', 'show', 'b1']);
    const small = await api.request('POST', `/volume/v3/${api.projectId}/volumes`, { volume: { backup_id: backupId, size: 0 } });
    assert.equal(small.status, 400);
    const unknown = await api.request('POST', `/volume/v3/${api.projectId}/volumes`, { volume: { backup_id: '00000000-0000-4000-8000-000000000000', size: 1 } });
    assert.equal(unknown.status, 404);
    assert.match(unknown.body.itemNotFound.message, /Backup 00000000-0000-4000-8000-000000000000 could not be found/);
  });
});
