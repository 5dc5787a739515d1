/**
 * Named image stores (issue 18), as Glance's multi-store: `[DEFAULT] enabled_backends = NAME:TYPE,...`
 * beside Cinder's volume backends, one [NAME] section per store, `[glance_store] default_backend`;
 * the single-store form (`[glance_store] stores = file,rbd`) unchanged. Every configuration error
 * names the option and the fix.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigText } from '../../src/config/config.ts';
import { ConfigError } from '../../src/config/ini.ts';
import { setupPlan } from '../../src/ceph/setup.ts';

function configError(text: string): string {
  try {
    parseConfigText(text, '/d', '/etc/pumice.conf');
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${error}`);
    return error.message;
  }
  assert.fail('expected a configuration error');
}

const twoRbdOneFile = `[DEFAULT]
enabled_backends = local, fast:rbd, cheap:rbd, shared:file

[local]
volume_driver = local

[fast]
rbd_store_pool = fast-images
rbd_store_user = glance
rbd_store_ceph_conf = /etc/ceph/ceph.conf
store_description = SSD pool

[cheap]
rbd_store_pool = cheap-images
rbd_store_chunk_size = 4

[shared]
filesystem_store_datadir = /srv/images

[glance_store]
default_backend = fast
`;

test('named stores: NAME:TYPE entries are image stores, the other entries volume backends', () => {
  const config = parseConfigText(twoRbdOneFile, '/d');
  assert.deepEqual(config.DEFAULT.enabled_backends, ['local']);
  assert.deepEqual(config.backends.map((b) => b.section), ['local']);
  const stores = config.glance_store.backends;
  assert.deepEqual(stores.map((s) => [s.id, s.type]), [['fast', 'rbd'], ['cheap', 'rbd'], ['shared', 'file']]);
  assert.equal(config.glance_store.default_backend, 'fast');
  assert.equal(config.glance_store.named, true);
  assert.equal(stores[0]!.rbd_store_pool, 'fast-images');
  assert.equal(stores[0]!.description, 'SSD pool');
  assert.equal(stores[1]!.rbd_store_pool, 'cheap-images');
  assert.equal(stores[1]!.rbd_store_chunk_size, 4);
  assert.equal(stores[1]!.rbd_store_user, 'glance', "Glance's default user");
  assert.equal(stores[2]!.filesystem_store_datadir, '/srv/images');
});

test('the default store comes first; only stores named: the volume backends stay the embedded local one', () => {
  const config = parseConfigText(`[DEFAULT]
enabled_backends = fast:file, cheap:file
[fast]
filesystem_store_datadir = /d/fast
[cheap]
filesystem_store_datadir = /d/cheap
[glance_store]
default_backend = cheap
[os_glance_staging_store]
filesystem_store_datadir = /d/staging
[os_glance_tasks_store]
filesystem_store_datadir = /d/tasks
`, '/d');
  assert.deepEqual(config.glance_store.backends.map((s) => s.id), ['cheap', 'fast']);
  assert.deepEqual(config.backends.map((b) => [b.section, b.volume_driver]), [['local', 'local']]);
  assert.equal(config.glance_store.staging_datadir, '/d/staging');
});

test('the single-store form keeps working: store ids are the types', () => {
  const config = parseConfigText('[glance_store]\nstores = file,rbd\ndefault_store = rbd\nrbd_store_pool = images\n', '/d');
  assert.deepEqual(config.glance_store.backends.map((s) => [s.id, s.type, s.section]), [['rbd', 'rbd', 'glance_store'], ['file', 'file', 'glance_store']]);
  assert.equal(config.glance_store.default_backend, 'rbd');
  assert.equal(config.glance_store.named, false);
  assert.equal(config.glance_store.backends[1]!.filesystem_store_datadir, '/d/images');
  const embedded = parseConfigText('', '/d');
  assert.deepEqual(embedded.glance_store.backends.map((s) => s.id), ['file']);
});

test('images of the single-store form are adopted by the named store over the same directory or pool', () => {
  const config = parseConfigText(`[DEFAULT]
enabled_backends = fast:file, ceph:rbd, other:rbd
[fast]
filesystem_store_datadir = /d/images
[ceph]
rbd_store_pool = images
[other]
rbd_store_pool = more
[glance_store]
default_backend = ceph
`, '/d');
  assert.deepEqual(config.glance_store.adopted, { file: 'fast', rbd: 'ceph' });
});

test('named-store configuration errors name the option and the fix', () => {
  const base = (entries: string, sections: string, glance = 'default_backend = fast') => `[DEFAULT]\nenabled_backends = ${entries}\n${sections}\n[glance_store]\n${glance}\n`;
  const fast = '[fast]\nfilesystem_store_datadir = /d/fast\n';
  assert.match(configError(base('fast:file', fast, '')), /\/etc\/pumice\.conf:2: .*no default_backend: set \[glance_store\] default_backend = fast/);
  assert.match(configError(base('fast:file', fast, 'default_backend = fsat')), /default_backend = fsat is not an image store of \[DEFAULT\] enabled_backends \(fast\); did you mean 'fast'\?/);
  assert.match(configError(base('fast:swift', fast)), /store 'fast' has type 'swift', which is not available \(Glance has a swift store; Pumice does not\); use file or rbd/);
  assert.match(configError(base('fast:fiel', fast)), /type 'fiel'.*did you mean 'file'\?/);
  assert.match(configError(base('fast:file,fast:file', fast)), /names the image store 'fast' twice/);
  assert.match(configError(base('fast:file,cheap:file', fast)), /names the image store cheap:file but the file has no \[cheap\] section: add it with filesystem_store_datadir = DIRECTORY/);
  assert.match(configError(base('fast:rbd', '[fast]\nrbd_store_user = glance\n')), /\[fast\] is an rbd store \(enabled_backends fast:rbd\) without rbd_store_pool: add rbd_store_pool = POOL/);
  assert.match(configError(base('fast:file', '[fast]\nstore_description = x\n')), /\[fast\] is a file store .* without filesystem_store_datadir/);
  assert.match(configError(base('fast:file,cheap:file', `${fast}[cheap]\nfilesystem_store_datadir = /d/fast/\n`)), /image stores \[fast\] and \[cheap\] both use filesystem_store_datadir/);
  assert.match(configError(base('fast:rbd,cheap:rbd', '[fast]\nrbd_store_pool = p\n[cheap]\nrbd_store_pool = p\n')), /both use rbd_store_pool p/);
  assert.match(configError(base('os_glance_fast:file', fast, 'default_backend = os_glance_fast')), /prefix os_glance_.*reserves/);
  assert.match(configError(`[DEFAULT]\nenabled_backends = local,local:file\n[local]\nvolume_driver = local\n[glance_store]\ndefault_backend = local\n`), /'local' both as a volume backend and as an image store .* rename the store, e.g\. local_images:file/);
  assert.match(configError(base('libvirt:file', fast, 'default_backend = libvirt')), /'libvirt' is the name of the \[libvirt\] section/);
  assert.match(configError(base('file:rbd', '[file]\nrbd_store_pool = p\n', 'default_backend = file')), /a store named 'file' must have type file/);
  assert.match(configError(base('fast:file', fast, 'default_backend = fast\nstores = file')), /\[glance_store\] stores is the single-store form .* remove stores/);
  assert.match(configError(base('fast:file', '[fast]\nfilesystem_store_datadir = /d/fast\nrbd_store_pool = x\n')), /unknown option 'rbd_store_pool' in \[fast\]/);
  assert.match(configError(base('fast:rbd', '[fast]\nrbd_store_pool = p\nrbd_store_chunk_size = 3\n')), /\[fast\] rbd_store_chunk_size = 3 must be a power of two/);
  assert.match(configError('[glance_store]\ndefault_backend = fast\n'), /default_backend = fast names a store, but \[DEFAULT\] enabled_backends has no NAME:TYPE entries/);
  assert.match(configError('[glance_store]\nstores = file,rbd\ndefault_store = swift\n'), /default_store: store 'swift' is not available/);
});

test('pumice ceph setup plans every named rbd store: each user writes its pool, volume users read every image pool', () => {
  const plan = setupPlan(parseConfigText(`[DEFAULT]
enabled_backends = ceph, fast:rbd, slow:rbd, shared:file
[ceph]
volume_driver = rbd
rbd_pool = volumes
rbd_user = cinder
rbd_ceph_conf = /etc/ceph/ceph.conf
[fast]
rbd_store_pool = images
rbd_store_user = glance
[slow]
rbd_store_pool = images-hdd
rbd_store_user = glance
[shared]
filesystem_store_datadir = /srv/images
[glance_store]
default_backend = fast
`, '/d'));
  const byUser = new Map(plan.map((u) => [u.user, u]));
  assert.deepEqual([...byUser.get('glance')!.pools].sort(), ['images', 'images-hdd']);
  assert.deepEqual([...byUser.get('cinder')!.pools], ['volumes']);
  assert.deepEqual([...byUser.get('cinder')!.readPools].sort(), ['images', 'images-hdd']);
});
