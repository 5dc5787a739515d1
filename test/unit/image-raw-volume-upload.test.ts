/**
 * ImageService.recordRawVolumeUpload (os-volume_upload_image as qcow2 into a raw-only store):
 * the image is relabelled raw/bare with original_disk_format only when the store would convert
 * the upload back to raw anyway; every other case leaves the image as the client asked.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Db } from '../../src/db/db.ts';
import { ImageService } from '../../src/image/images.ts';
import { FileStore } from '../../src/image/stores/file.ts';
import { TaskQueue } from '../../src/tasks/queue.ts';
import type { AuthContext } from '../../src/http/router.ts';

const admin: AuthContext = {
  tokenId: 't', userId: 'u', userName: 'admin', userDomainId: 'default', projectId: 'p', projectName: 'p', projectDomainId: 'default', domainId: null,
  roles: ['admin', 'member', 'reader'], isAdmin: true, expiresAt: '', issuedAt: '', methods: ['password'], auditId: 'a',
};

/** A file store that says it keeps raw data only, as the rbd store does: what the relabelling looks at. */
class RawOnlyFileStore extends FileStore {
  readonly rawOnly = true;
}

function service(root: string, options: { convertToRaw: boolean }) {
  const db = new Db(':memory:');
  const tasks = new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 1, attemptsMax: 1, pollIntervalMs: 600_000 });
  const files = new FileStore(join(root, 'files'), () => undefined, { id: 'files' });
  const raw = new RawOnlyFileStore(join(root, 'raw'), () => undefined, { id: 'rawonly' });
  const images = new ImageService(db, raw, () => undefined, { otherStores: [files], namedStores: true, workDirectory: join(root, 'work'), convertToRaw: options.convertToRaw, tasks });
  /** The image's core fields and properties, as the API shows them. */
  const view = (id: string): Record<string, unknown> => {
    const row = images.get(admin, id);
    return { ...(JSON.parse(row.properties ?? '{}') as Record<string, string>), disk_format: row.disk_format, container_format: row.container_format };
  };
  return { db, images, view };
}

test('relabelled raw only for a queued convertible image going to a raw-only store with conversion on', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'pumice-raw-upload-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const { images, view } = service(root, { convertToRaw: true });
  const qcow2 = () => images.create(admin, { name: 'v', disk_format: 'qcow2', container_format: 'bare', hw_disk_bus: 'scsi' }).id;

  // The default store (null) and a named raw-only store: relabelled, the client's properties kept.
  for (const store of [null, 'rawonly']) {
    const id = qcow2();
    assert.equal(images.recordRawVolumeUpload(id, store), true, `store ${store}`);
    const image = view(id);
    assert.equal(image['disk_format'], 'raw');
    assert.equal(image['container_format'], 'bare');
    assert.equal(image['original_disk_format'], 'qcow2');
    assert.equal(image['hw_disk_bus'], 'scsi');
  }

  // A store that keeps what it is sent: unchanged.
  const toFiles = qcow2();
  assert.equal(images.recordRawVolumeUpload(toFiles, 'files'), false);
  assert.equal(view(toFiles)['disk_format'], 'qcow2');
  // An unknown store, an image this service does not hold: unchanged, no error.
  assert.equal(images.recordRawVolumeUpload(qcow2(), 'nosuchstore'), false);
  assert.equal(images.recordRawVolumeUpload('00000000-0000-4000-8000-000000000000', null), false);
  // Already raw, or a format the store keeps as it is (iso is not converted): unchanged.
  const raw = images.create(admin, { disk_format: 'raw', container_format: 'bare' }).id;
  assert.equal(images.recordRawVolumeUpload(raw, null), false);
  const iso = images.create(admin, { disk_format: 'iso', container_format: 'bare' }).id;
  assert.equal(images.recordRawVolumeUpload(iso, null), false);
  assert.equal(view(iso)['disk_format'], 'iso');
  // Relabelled once: a second call finds it raw and changes nothing.
  const twice = qcow2();
  assert.equal(images.recordRawVolumeUpload(twice, null), true);
  assert.equal(images.recordRawVolumeUpload(twice, null), false);
});

test('conversion off: nothing is relabelled (the upload meets the raw-only refusal instead)', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'pumice-raw-upload-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const { images, view } = service(root, { convertToRaw: false });
  const id = images.create(admin, { disk_format: 'qcow2', container_format: 'bare' }).id;
  assert.equal(images.recordRawVolumeUpload(id, null), false);
  assert.equal(view(id)['disk_format'], 'qcow2');
});

test('an image no longer queued is left alone', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'pumice-raw-upload-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const { db, images, view } = service(root, { convertToRaw: true });
  const id = images.create(admin, { disk_format: 'qcow2', container_format: 'bare' }).id;
  db.run("UPDATE images SET status = 'saving' WHERE id = ?", id);
  assert.equal(images.recordRawVolumeUpload(id, null), false);
  assert.equal(view(id)['disk_format'], 'qcow2');
});
