/**
 * Named image stores (issue 18), as Glance's multi-store, on two local file
 * stores: `[DEFAULT] enabled_backends = fast:file, cheap:file`, each in its
 * own section, `[glance_store] default_backend = fast`. Driven by
 * openstacksdk (`conn.image.stores()`, `conn.image.import_image(...,
 * stores=[...])`, copy-image) and python-glanceclient (`stores-info
 * --detail`, `stores-delete`): store ids are the names everywhere, and the
 * bytes land in the named store's directory and only there. An install of
 * the single-store form (`stores = file`) switched to named stores finds its
 * images in the named store over the same directory. Bad store names are
 * 400s (404 in a URL) naming the enabled stores.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ApiClient, cliEnv, memberProject, openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;

/** Bytes that differ at every position, so no all-zero run is skipped and every byte is checked. */
function imageData(seed: number, sizeBytes = 2 * MiB): Buffer {
  const data = Buffer.alloc(sizeBytes);
  for (let i = 0; i < data.length; i++) data[i] = (seed * 131 + i * 7 + (i >> 12)) & 0xff || 0x5a;
  return data;
}

const md5 = (data: Buffer) => createHash('md5').update(data).digest('hex');

async function waitFor(check: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, `not done within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

function namedStoresConfig(dataDir: string, fastDir = join(dataDir, 'fast-images')): string {
  return `[DEFAULT]
enabled_backends = fast:file, cheap:file

[fast]
filesystem_store_datadir = ${fastDir}
store_description = Fast local disk

[cheap]
filesystem_store_datadir = ${join(dataDir, 'cheap-images')}

[glance_store]
default_backend = fast
`;
}

/** Runs a Python snippet with Debian's openstacksdk (`conn` connected as `env` says); returns its stdout. */
async function sdk(env: Record<string, string>, script: string, args: string[] = []): Promise<string> {
  const { stdout } = await execFileAsync('/usr/bin/python3', ['-c', `import sys, json, openstack\nconn = openstack.connect()\n${script}`, ...args], { env: cliEnv(env), timeout: 120_000 });
  return stdout;
}

async function glance(env: Record<string, string>, args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('/usr/bin/glance', ['--os-image-api-version', '2', ...args], { env: cliEnv(env), timeout: 120_000 });
  return stdout;
}

describe('named image stores (fast:file, cheap:file)', { timeout: 600_000 }, () => {
  let pumice: PumiceProcess;
  let admin: ApiClient;
  let dataDir = '';
  let legacyImage = '';
  const legacyData = imageData(9, MiB);

  const storePath = (store: 'fast' | 'cheap', imageId: string) => join(dataDir, `${store}-images`, imageId);
  const shown = async (imageId: string) => (await admin.request('GET', `/image/v2/images/${imageId}`)).body;
  async function settled(imageId: string, timeoutMs = 60_000): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const image = await shown(imageId);
      if ((image.status === 'active' || image.status === 'queued') && image.os_glance_import_task === undefined) return image;
      if (Date.now() > deadline) return image;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  async function download(imageId: string): Promise<Buffer> {
    const res = await fetch(`${pumice.url}/image/v2/images/${imageId}/file`, { headers: { 'X-Auth-Token': admin.token } });
    assert.equal(res.status, 200);
    return Buffer.from(await res.arrayBuffer());
  }
  async function createImage(name: string): Promise<string> {
    const res = await admin.request('POST', '/image/v2/images', { name, disk_format: 'raw', container_format: 'bare' });
    assert.equal(res.status, 201, res.text);
    return res.body.id as string;
  }
  async function upload(imageId: string, data: Buffer, store?: string): Promise<{ status: number; text: string }> {
    const res = await fetch(`${pumice.url}/image/v2/images/${imageId}/file`, {
      method: 'PUT',
      headers: { 'X-Auth-Token': admin.token, 'Content-Type': 'application/octet-stream', ...(store ? { 'X-Image-Meta-Store': store } : {}) },
      body: new Uint8Array(data),
    });
    return { status: res.status, text: await res.text() };
  }

  before(async () => {
    // First the single-store form, as an existing install: one image in DATA_DIR/images.
    dataDir = mkdtempSync(join(tmpdir(), 'pumice-named-stores-'));
    const legacy = await startPumice({ dataDir, config: '[glance_store]\nstores = file\ndefault_store = file\n' });
    const legacyAdmin = await ApiClient.login(legacy.url, 'admin', legacy.adminPassword, 'admin');
    legacyImage = (await legacyAdmin.request('POST', '/image/v2/images', { name: 'from-before', disk_format: 'raw', container_format: 'bare' })).body.id;
    const res = await fetch(`${legacy.url}/image/v2/images/${legacyImage}/file`, { method: 'PUT', headers: { 'X-Auth-Token': legacyAdmin.token, 'Content-Type': 'application/octet-stream' }, body: new Uint8Array(legacyData) });
    assert.equal(res.status, 204);
    await legacy.stop();
    // Then named stores over the same data directory; fast holds DATA_DIR/images, where the old image is.
    pumice = await startPumice({ dataDir, config: namedStoresConfig(dataDir, join(dataDir, 'images')) });
    admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  }, { timeout: 180_000 });

  after(async () => {
    await pumice?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  test('an image of the single-store form belongs to the named store over its directory', async () => {
    const image = await shown(legacyImage);
    assert.equal(image.status, 'active');
    assert.equal(image.stores, 'fast', "recorded as 'file', adopted by fast (same filesystem_store_datadir)");
    assert.ok((await download(legacyImage)).equals(legacyData));
    assert.match(pumice.output(), /1 image\(s\) recorded in store 'file' now belong to the named store 'fast'/);
  });

  test('conn.image.stores() and glance stores-info --detail list the named stores, the default first; details are for admins', async () => {
    const listed = JSON.parse(await sdk(pumice.adminEnv, 'print(json.dumps([[s.id, s.description, s.is_default] for s in conn.image.stores()]))'));
    assert.deepEqual(listed, [['fast', 'Fast local disk', true], ['cheap', "Local file store 'cheap'", null]]);
    const detail = await glance(pumice.adminEnv, ['stores-info', '--detail']);
    assert.match(detail, /"id": "fast", "description": "Fast local disk", "default": true, "type":.*"id": "cheap"/s);
    const raw = (await admin.request('GET', '/image/v2/info/stores/detail')).body.stores;
    assert.deepEqual(raw.map((s: { id: string; type: string; default?: boolean }) => [s.id, s.type, s.default ?? false]), [['fast', 'file', true], ['cheap', 'file', false]]);
    assert.equal(raw[1].properties.data_dir, join(dataDir, 'cheap-images'));
    const member = (await memberProject(pumice.adminEnv, 'stores-a', 'stores-member')).env;
    const client = await ApiClient.login(pumice.url, member['OS_USERNAME']!, member['OS_PASSWORD']!, member['OS_PROJECT_NAME']!);
    assert.equal((await client.request('GET', '/image/v2/info/stores')).status, 200);
    const denied = await client.request('GET', '/image/v2/info/stores/detail');
    assert.equal(denied.status, 403);
    assert.match(denied.text, /stores_info_detail/);
  });

  test('glance-direct into the store openstacksdk names (import_image stores=[cheap]): the bytes are in cheap only', async () => {
    const data = imageData(1);
    const file = join(dataDir, 'upload-1.raw');
    writeFileSync(file, data);
    const imageId = (await sdk(pumice.adminEnv, `
image = conn.image.create_image(name='to-cheap', disk_format='raw', container_format='bare')
conn.image.stage_image(image, filename=sys.argv[1])
conn.image.import_image(image, method='glance-direct', stores=['cheap'])
print(image.id)
`, [file])).trim();
    const image = await settled(imageId);
    assert.equal(image.status, 'active');
    assert.equal(image.stores, 'cheap');
    assert.equal(md5(readFileSync(storePath('cheap', imageId))), md5(data), 'bytes in the cheap directory');
    assert.equal(existsSync(join(dataDir, 'images', imageId)), false, 'nothing in fast');
    assert.ok((await download(imageId)).equals(data));
    const [task] = (await admin.request('GET', `/image/v2/images/${imageId}/tasks`)).body.tasks;
    assert.deepEqual(task.input.backend, ['cheap']);
  });

  test('an upload goes to the default store (fast); copy-image with openstacksdk puts it in cheap too; glance stores-delete empties fast', async () => {
    const data = imageData(2);
    const imageId = await createImage('copied');
    assert.equal((await upload(imageId, data)).status, 204);
    assert.equal((await shown(imageId)).stores, 'fast');
    assert.equal(md5(readFileSync(join(dataDir, 'images', imageId))), md5(data));
    await sdk(pumice.adminEnv, "conn.image.import_image(conn.image.get_image(sys.argv[1]), method='copy-image', stores=['cheap'])", [imageId]);
    const copied = await settled(imageId);
    assert.equal(copied.status, 'active');
    assert.equal(copied.stores, 'fast,cheap');
    assert.equal(copied.os_glance_failed_import, '');
    assert.equal(md5(readFileSync(storePath('cheap', imageId))), md5(data), 'the copy in cheap has the same bytes');
    await glance(pumice.adminEnv, ['stores-delete', '--store', 'fast', imageId]);
    assert.equal((await shown(imageId)).stores, 'cheap');
    assert.equal(existsSync(join(dataDir, 'images', imageId)), false);
    assert.ok((await download(imageId)).equals(data), 'downloads now read cheap');
    assert.equal((await admin.request('DELETE', `/image/v2/images/${imageId}`)).status, 204);
    assert.equal(existsSync(storePath('cheap', imageId)), false, 'deleting the image removes its data from cheap');
  });

  test("a volume uploaded to an image goes to the store its type's image_service:store_id names (openstack image create --volume), as Cinder", async () => {
    const source = await createImage('for-volume');
    const data = imageData(7);
    assert.equal((await upload(source, data)).status, 204);
    await openstack(pumice.adminEnv, ['volume', 'type', 'create', '--property', 'image_service:store_id=cheap', 'to-cheap']);
    await openstack(pumice.adminEnv, ['volume', 'type', 'create', '--property', 'image_service:store_id=slow', 'to-nowhere']);
    const volume = await openstackJson(pumice.adminEnv, ['volume', 'create', '--size', '1', '--type', 'to-cheap', '--image', source, 'vol-to-cheap']);
    await waitFor(async () => (await openstackJson(pumice.adminEnv, ['volume', 'show', volume['id'] as string]))['status'] === 'available');
    const uploaded = await openstackJson(pumice.adminEnv, ['image', 'create', '--volume', volume['id'] as string, '--disk-format', 'raw', '--container-format', 'bare', 'from-volume']);
    const imageId = (uploaded['image_id'] ?? uploaded['id']) as string;
    await waitFor(async () => (await shown(imageId)).status === 'active');
    assert.equal((await shown(imageId)).stores, 'cheap');
    // The volume's bytes: the image's, then zeros to 1 GiB.
    const expected = createHash('md5').update(data);
    const zeros = Buffer.alloc(64 * MiB);
    for (let done = data.length; done < 1024 * MiB; done += zeros.length) expected.update(zeros.subarray(0, Math.min(zeros.length, 1024 * MiB - done)));
    const actual = createHash('md5');
    for await (const chunk of createReadStream(storePath('cheap', imageId))) actual.update(chunk as Buffer);
    assert.equal(actual.digest('hex'), expected.digest('hex'), 'the bytes in the cheap directory are the volume');
    assert.equal(existsSync(join(dataDir, 'images', imageId)), false, 'nothing in fast');

    const other = await openstackJson(pumice.adminEnv, ['volume', 'create', '--size', '1', '--type', 'to-nowhere', 'vol-to-nowhere']);
    await waitFor(async () => (await openstackJson(pumice.adminEnv, ['volume', 'show', other['id'] as string]))['status'] === 'available');
    const refused = await admin.request('POST', `/volume/v3/${admin.projectId}/volumes/${other['id']}/action`, { 'os-volume_upload_image': { image_name: 'nowhere', disk_format: 'raw' } });
    assert.equal(refused.status, 400, refused.text);
    assert.match(refused.text, /Volume type 'to-nowhere' has image_service:store_id = 'slow', which is not a store of the image service \(its stores: fast, cheap\)/);
    assert.equal((await openstackJson(pumice.adminEnv, ['volume', 'show', other['id'] as string]))['status'], 'available', 'a refused upload changes nothing');
    assert.ok(!(await admin.request('GET', '/image/v2/images?name=nowhere')).body.images.length, 'and makes no image');
  });

  test('X-Image-Meta-Store names a store for an upload; store names that are not enabled are refused, naming the enabled ones', async () => {
    const imageId = await createImage('header');
    assert.equal((await upload(imageId, imageData(3), 'cheap')).status, 204);
    assert.equal((await shown(imageId)).stores, 'cheap');
    const other = await createImage('refused');
    // 'file' is the store's type, not its name: named stores answer only to their names.
    for (const name of ['file', 'slow']) {
      const refused = await upload(other, imageData(4), name);
      assert.equal(refused.status, 400, refused.text);
      assert.match(refused.text, new RegExp(`Unknown store '${name}': the enabled stores are fast, cheap`));
    }
    assert.equal((await shown(other)).status, 'queued', 'a refused store changes nothing');
    const copy = await admin.request('POST', `/image/v2/images/${imageId}/import`, { method: { name: 'copy-image' }, stores: ['slow'] });
    assert.equal(copy.status, 400);
    assert.match(copy.text, /Unknown store 'slow'.*fast, cheap/);
    const removal = await admin.request('DELETE', `/image/v2/stores/slow/${imageId}`);
    assert.equal(removal.status, 404);
    assert.match(removal.text, /'slow' \(enabled: fast, cheap\)/);
    assert.equal((await admin.request('DELETE', `/image/v2/images/${imageId}`)).status, 204);
    assert.equal((await admin.request('DELETE', `/image/v2/images/${other}`)).status, 204);
  });
});
