/**
 * Volumes and images together on the local backend and the file image store,
 * with Debian's `openstack` CLI against a real `pumice serve`:
 * - `volume create --image` of a 1 GiB sparse raw image copies its bytes
 *   (sparse: zero runs are not written), makes the volume bootable and shows
 *   volume_image_metadata with the image's properties;
 * - a raw image of the file store is copied from its file in place (no
 *   loopback HTTP), holes kept; a damaged file goes through the image API,
 *   which refuses it;
 * - a qcow2 image is converted to raw on the way (qemu-img compare);
 * - a size below the image's virtual size is a 400 naming both sizes;
 * - another project's private image is refused; a shared one works after accept;
 * - `image create --volume` (os-volume_upload_image) round trip, raw and qcow2;
 * - an unreachable image service puts the volume in error with a message
 *   naming the URL it tried and the option to fix.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, statSync, truncateSync, writeSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ApiClient, memberProject, openstack, openstackJson, repoRoot, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
type Row = Record<string, unknown>;
type Env = Record<string, string>;
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** Known bytes at several offsets of an otherwise sparse 1 GiB raw image. */
const marks: [number, string][] = [
  [0, 'PUMICE-BOOT-SECTOR'],
  [5 * MiB + 17, 'five-mebibytes-and-seventeen'],
  [512 * MiB, 'HALF-WAY'],
  [GiB - 8, 'THE-END!'],
];

let pumice: PumiceProcess;
let work = '';
let admin: Env;
let userA: Env;
let userB: Env;
let api: ApiClient;
let rawPath = '';
let qcow2Path = '';

const volumeFile = (id: string) => join(pumice.dataDir, 'volumes', 'local', `volume-${id}`);

async function waitVolume(env: Env, name: string, statuses: string[], timeoutMs = 120_000): Promise<Row> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const row = await openstackJson(env, ['volume', 'show', name]);
    if (statuses.includes(row['status'] as string)) return row;
    if (Date.now() > deadline) throw new Error(`volume ${name} stayed ${String(row['status'])}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

async function waitImage(env: Env, name: string, statuses: string[], timeoutMs = 120_000): Promise<Row> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const row = await openstackJson(env, ['image', 'show', name]);
    if (statuses.includes(row['status'] as string)) return row;
    if (Date.now() > deadline) throw new Error(`image ${name} stayed ${String(row['status'])}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

async function qemuCompare(a: string, aFormat: string, b: string, bFormat: string): Promise<void> {
  // Exit 0: same guest-visible content (bytes past the shorter one must be zero).
  await execFileAsync('qemu-img', ['compare', '-f', aFormat, '-F', bFormat, a, b], { timeout: 120_000 });
}

async function fails(env: Env, args: string[]): Promise<string> {
  try {
    await openstack(env, args);
  } catch (error) {
    return (error as Error).message;
  }
  assert.fail(`openstack ${args.join(' ')} succeeded but was expected to fail`);
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'pumice-vol-img-'));
  pumice = await startPumice();
  admin = pumice.adminEnv;
  rawPath = join(work, 'disk.raw');
  const fd = openSync(rawPath, 'w');
  ftruncateSync(fd, GiB);
  for (const [offset, text] of marks) writeSync(fd, Buffer.from(text), 0, text.length, offset);
  closeSync(fd);
  qcow2Path = join(work, 'disk.qcow2');
  // A qcow2 with a 3 GiB virtual size: bigger than the raw one, for the size check.
  await execFileAsync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rawPath, qcow2Path]);
  await execFileAsync('qemu-img', ['resize', '-f', 'qcow2', qcow2Path, '3G']);
  userA = (await memberProject(admin, 'proj-a', 'user-a')).env;
  userB = (await memberProject(admin, 'proj-b', 'user-b')).env;
  api = await ApiClient.login(pumice.url, 'user-a', 'pw-user-a', 'proj-a');
});

after(async () => {
  await pumice?.stop();
  pumice?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('volumes from images and images from volumes (local backend, file store)', { timeout: 600_000 }, () => {
  test('volume create --image copies the bytes sparsely, is bootable and carries volume_image_metadata', async () => {
    await openstack(admin, [
      'image', 'create', '--file', rawPath, '--disk-format', 'raw', '--container-format', 'bare', '--public',
      '--property', 'hw_scsi_model=virtio-scsi', '--property', 'hw_disk_bus=scsi', '--property', 'hw_qemu_guest_agent=yes', '--property', 'os_require_quiesce=yes',
      'base-raw',
    ]);
    const image = await openstackJson(admin, ['image', 'show', 'base-raw']);
    await openstack(userA, ['volume', 'create', '--image', 'base-raw', '--size', '2', '--bootable', 'from-raw']);
    const volume = await waitVolume(userA, 'from-raw', ['available', 'error']);
    assert.equal(volume['status'], 'available', JSON.stringify(volume));
    assert.equal(String(volume['bootable']), 'true');
    assert.equal(volume['size'], 2);
    const meta = volume['volume_image_metadata'] as Record<string, string>;
    assert.equal(meta['image_id'], image['id']);
    assert.equal(meta['image_name'], 'base-raw');
    assert.equal(meta['disk_format'], 'raw');
    assert.equal(meta['container_format'], 'bare');
    assert.equal(meta['size'], String(GiB));
    assert.equal(meta['checksum'], image['checksum']);
    assert.equal(meta['hw_scsi_model'], 'virtio-scsi');
    assert.equal(meta['hw_disk_bus'], 'scsi');
    assert.equal(meta['hw_qemu_guest_agent'], 'yes');
    assert.equal(meta['os_require_quiesce'], 'yes');
    const path = volumeFile(volume['id'] as string);
    assert.equal(statSync(path).size, 2 * GiB);
    await qemuCompare(rawPath, 'raw', path, 'raw');
    // Only the marked 64 KiB granules were written: the 1 GiB copy stays thin.
    assert.ok(statSync(path).blocks * 512 < 4 * MiB, `volume file allocates ${statSync(path).blocks * 512} bytes`);
  });

  test("a raw image of this process's file store is copied from its file, not over HTTP: same bytes, holes where the image has them; a damaged file goes to the image API, which refuses it", async () => {
    const baseId = (await openstackJson(admin, ['image', 'show', 'base-raw']))['id'] as string;
    const fromRawId = (await openstackJson(userA, ['volume', 'show', 'from-raw']))['id'] as string;
    assert.match(pumice.output(), new RegExp(`volume ${fromRawId}: copied ${GiB} bytes of image ${baseId} from its file in this process's image store`));
    // Data, 2 MiB of zeros (kept as a hole by the store), data.
    const body = Buffer.concat([randomBytes(3 * MiB), Buffer.alloc(2 * MiB), randomBytes(MiB + 5)]);
    const upload = async (name: string): Promise<string> => {
      const created = await api.request('POST', '/image/v2/images', { name, disk_format: 'raw', container_format: 'bare' });
      assert.equal(created.status, 201, created.text);
      const put = await fetch(`${pumice.url}/image/v2/images/${created.body.id}/file`, { method: 'PUT', headers: { 'X-Auth-Token': api.token, 'Content-Type': 'application/octet-stream' }, body });
      assert.equal(put.status, 204, await put.text());
      return created.body.id as string;
    };
    const volumeFrom = async (imageId: string, status: string) => {
      const r = await api.request('POST', `/volume/v3/${api.projectId}/volumes`, { volume: { imageRef: imageId, size: 1 } });
      assert.equal(r.status, 202, r.text);
      return (await api.waitVolume(r.body.volume.id, [status, status === 'error' ? 'available' : 'error'], 120_000)) as Row;
    };
    const denseId = await upload('dense-raw');
    const volume = await volumeFrom(denseId, 'available');
    assert.equal(volume['status'], 'available');
    const path = volumeFile(volume['id'] as string);
    assert.equal(statSync(path).size, GiB);
    const head = Buffer.alloc(body.length + MiB, 1);
    const fd = openSync(path, 'r');
    readSync(fd, head, 0, head.length, 0);
    closeSync(fd);
    assert.ok(head.subarray(0, body.length).equals(body), "the volume's bytes differ from the image's");
    assert.ok(head.subarray(body.length).equals(Buffer.alloc(MiB)), 'the volume is not zero past the image');
    const imageBlocks = statSync(join(pumice.dataDir, 'images', denseId)).blocks;
    assert.ok(statSync(path).blocks <= imageBlocks + 8, `the volume allocates ${statSync(path).blocks} blocks, the image file ${imageBlocks}: holes were filled`);
    assert.match(pumice.output(), new RegExp(`volume ${volume['id']}: copied ${body.length} bytes of image ${denseId} from its file in this process's image store`));

    // A stored file that is not the recorded size is not copied in place: the image API answers for it (503, damaged).
    const damagedId = await upload('damaged-raw');
    truncateSync(join(pumice.dataDir, 'images', damagedId), MiB);
    const failed = await volumeFrom(damagedId, 'error');
    assert.equal(failed['status'], 'error');
    const messages = await api.request('GET', `/volume/v3/${api.projectId}/messages`, undefined, { 'OpenStack-API-Version': 'volume 3.3' });
    const text = (messages.body.messages as Row[]).filter((m) => m['resource_uuid'] === failed['id']).map((m) => m['user_message']).join('\n');
    assert.match(text, new RegExp(`data of image ${damagedId} is missing or damaged`));
  });

  test('without --size the volume gets the image size; too small a size is a 400 naming both sizes', async () => {
    await openstack(userA, ['volume', 'create', '--image', 'base-raw', '--size', '1', 'exact-fit']);
    assert.equal((await waitVolume(userA, 'exact-fit', ['available', 'error']))['status'], 'available');
    await openstack(admin, ['image', 'create', '--file', qcow2Path, '--disk-format', 'qcow2', '--container-format', 'bare', '--public', 'big-qcow2']);
    const image = await openstackJson(admin, ['image', 'show', 'big-qcow2']);
    const r = await api.request('POST', `/volume/v3/${api.projectId}/volumes`, { volume: { imageRef: image['id'], size: 2, name: 'too-small' } });
    assert.equal(r.status, 400, r.text);
    assert.match(r.body.badRequest.message, /volume size 2 GiB is smaller than image .* virtual size of 3221225472 bytes \(3 GiB\); ask for at least 3 GiB/);
    const none = await api.request('POST', `/volume/v3/${api.projectId}/volumes`, { volume: { imageRef: image['id'], name: 'sized-by-image' } });
    assert.equal(none.status, 202, none.text);
    assert.equal(none.body.volume.size, 3);
    await api.waitVolume(none.body.volume.id, ['available'], 120_000);
    const list = await openstackJson<Row[]>(userA, ['volume', 'list']);
    assert.ok(!list.some((v) => v['Name'] === 'too-small'), 'a refused volume was recorded');
  });

  test('a qcow2 image is converted to raw on the way into the volume', async () => {
    const shown = await openstackJson(userA, ['volume', 'show', 'sized-by-image']);
    await qemuCompare(qcow2Path, 'qcow2', volumeFile(shown['id'] as string), 'raw');
    const meta = shown['volume_image_metadata'] as Record<string, string>;
    assert.equal(meta['disk_format'], 'qcow2');
    assert.equal(meta['virtual_size'], String(3 * GiB));
    assert.equal(readdirCount(join(pumice.dataDir, 'conversion')), 0, 'conversion scratch files were left behind');
  });

  test("another project's private image is refused; a shared image works once accepted", async () => {
    await openstack(userB, ['image', 'create', '--file', rawPath, '--disk-format', 'raw', '--container-format', 'bare', '--private', 'b-private']);
    const privateId = (await openstackJson(userB, ['image', 'show', 'b-private']))['id'] as string;
    const r = await api.request('POST', `/volume/v3/${api.projectId}/volumes`, { volume: { imageRef: privateId, size: 1 } });
    assert.equal(r.status, 400, r.text);
    assert.match(r.body.badRequest.message, /Invalid image identifier or unable to access requested image: image .* does not exist or is not visible/);
    await openstack(userB, ['image', 'set', '--shared', 'b-private']);
    const projectA = (await openstackJson(admin, ['project', 'show', 'proj-a']))['id'] as string;
    await openstack(userB, ['image', 'add', 'project', 'b-private', projectA]);
    await openstack(userA, ['image', 'set', '--accept', privateId]);
    await openstack(userA, ['volume', 'create', '--image', privateId, '--size', '1', 'from-shared']);
    assert.equal((await waitVolume(userA, 'from-shared', ['available', 'error']))['status'], 'available');
  });

  test('image create --volume uploads the volume (raw), and the volume is available again', async () => {
    await openstack(userA, ['image', 'create', '--volume', 'from-raw', '--disk-format', 'raw', '--container-format', 'bare', 'from-volume-raw']);
    const image = await waitImage(userA, 'from-volume-raw', ['active', 'killed', 'deleted']);
    assert.equal(image['status'], 'active');
    assert.equal(image['size'], 2 * GiB);
    assert.equal(image['min_disk'], 2);
    const props = (image['properties'] ?? {}) as Row;
    assert.equal(image['hw_scsi_model'] ?? props['hw_scsi_model'], 'virtio-scsi', 'image properties of the volume are carried over');
    assert.equal((await waitVolume(userA, 'from-raw', ['available', 'uploading']))['status'], 'available');
    const saved = join(work, 'saved.raw');
    await openstack(userA, ['image', 'save', '--file', saved, 'from-volume-raw']);
    const volumeId = (await openstackJson(userA, ['volume', 'show', 'from-raw']))['id'] as string;
    await qemuCompare(saved, 'raw', volumeFile(volumeId), 'raw');
    assert.equal(statSync(saved).size, 2 * GiB);
    rmSync(saved);
  });

  test('image create --volume with --disk-format qcow2 converts the upload', async () => {
    await openstack(userA, ['image', 'create', '--volume', 'exact-fit', '--disk-format', 'qcow2', '--container-format', 'bare', 'from-volume-qcow2']);
    const image = await waitImage(userA, 'from-volume-qcow2', ['active', 'killed', 'deleted']);
    assert.equal(image['status'], 'active');
    assert.equal(image['disk_format'], 'qcow2');
    assert.equal(image['virtual_size'], GiB);
    const saved = join(work, 'saved.qcow2');
    await openstack(userA, ['image', 'save', '--file', saved, 'from-volume-qcow2']);
    await qemuCompare(saved, 'qcow2', rawPath, 'raw');
    rmSync(saved);
  });

  test('uploading an attached volume needs force; bad upload requests are 400s', async () => {
    const id = (await openstackJson(userA, ['volume', 'show', 'exact-fit']))['id'] as string;
    const url = `/volume/v3/${api.projectId}/volumes/${id}/action`;
    const noName = await api.request('POST', url, { 'os-volume_upload_image': { disk_format: 'raw' } });
    assert.equal(noName.status, 400);
    const badFormat = await api.request('POST', url, { 'os-volume_upload_image': { image_name: 'x', disk_format: 'iso9660' } });
    assert.equal(badFormat.status, 400);
    assert.equal((await api.request('POST', url, { 'os-reserve': null })).status, 202);
    assert.equal((await api.request('POST', url, { 'os-attach': { instance_uuid: '4f1a7cf4-0b7e-4bb3-92ad-0e2a3f7c9a11', mountpoint: '/dev/vdb' } })).status, 202);
    const attached = await api.request('POST', url, { 'os-volume_upload_image': { image_name: 'attached' } });
    assert.equal(attached.status, 409, attached.text);
    assert.match(attached.text, /force=true/);
    assert.equal((await api.request('POST', url, { 'os-detach': {} })).status, 202);
    const images = await openstackJson<Row[]>(userA, ['image', 'list']);
    assert.ok(!images.some((i) => i['Name'] === 'attached'), 'a refused upload left an image behind');
  });
});

describe('an unreachable image service', { timeout: 120_000 }, () => {
  let other: PumiceProcess;
  after(async () => {
    await other?.stop();
    other?.cleanup();
  });

  test('the volume goes to error, and the message names the URL and the option to fix', async () => {
    // The image service itself runs (the CLI finds the image), but the volume service is pointed elsewhere.
    const closedPort = await new Promise<number>((resolvePort) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port } = probe.address() as AddressInfo;
        probe.close(() => resolvePort(port));
      });
    });
    other = await startPumice({ config: `[DEFAULT]\nglance_api_servers = http://127.0.0.1:${closedPort}/image\nglance_request_timeout = 5\n` });
    const small = join(work, 'small.raw');
    closeSync(openSync(small, 'w'));
    await execFileAsync('truncate', ['-s', '1M', small]);
    const image = await openstackJson(other.adminEnv, ['image', 'create', '--file', small, '--disk-format', 'raw', '--container-format', 'bare', 'tiny']);
    const imageId = image['id'] as string;
    const created = await openstackJson(other.adminEnv, ['volume', 'create', '--image', imageId, '--size', '1', 'no-glance']);
    const volume = await waitVolume(other.adminEnv, created['id'] as string, ['error', 'available']);
    assert.equal(volume['status'], 'error');
    const client = await ApiClient.login(other.url, 'admin', other.adminPassword, 'admin');
    const messages = await client.request('GET', `/volume/v3/${client.projectId}/messages`, undefined, { 'OpenStack-API-Version': 'volume 3.3' });
    const text = (messages.body.messages as Row[]).map((m) => m['user_message']).join('\n');
    assert.match(text, new RegExp(`http://127\\.0\\.0\\.1:${closedPort}/image/v2/images/${imageId} could not be reached \\(connect ECONNREFUSED`));
    assert.match(text, /glance_api_servers/);
  });

  test('pumice doctor names the unreachable image service and the option', async () => {
    const result = await execFileAsync(process.execPath, [join(repoRoot, 'bin', 'pumice.mjs'), 'doctor', '--data-dir', other.dataDir, '--config', join(other.dataDir, 'pumice.conf')]).then(
      () => assert.fail('doctor passed with an unreachable image service'),
      (error: { stdout: string; code: number }) => error,
    );
    assert.equal(result.code, 1);
    assert.match(result.stdout, /FAIL {2}image service \(for volumes from images\): http:\/\/127\.0\.0\.1:\d+\/image from \[DEFAULT\] glance_api_servers cannot be reached/);
  });
});

function readdirCount(dir: string): number {
  try {
    return readdirSync(dir).length;
  } catch {
    return 0;
  }
}
