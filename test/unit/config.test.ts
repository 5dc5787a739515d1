import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigText, loadConfig } from '../../src/config/config.ts';
import { ConfigError, parseIni } from '../../src/config/ini.ts';

test('embedded defaults: one local backend under the data directory', () => {
  const config = loadConfig(null, '/data');
  assert.equal(config.backends.length, 1);
  assert.equal(config.backends[0]!.section, 'local');
  assert.equal(config.backends[0]!.volume_driver, 'local');
  assert.equal(config.backends[0]!.local_volume_dir, '/data/volumes/local');
  assert.equal(config.DEFAULT.osapi_max_limit, 1000);
  assert.equal(config.token.expiration, 3600);
});

test("the scenario's multi-backend sections parse with cinder.conf names", () => {
  const config = parseConfigText(
    `[DEFAULT]
enabled_backends = local, local-b
default_volume_type = local
[local]
volume_driver = local
volume_backend_name = local
max_over_subscription_ratio = auto
[local-b]
volume_driver = local
volume_backend_name = fast
reserved_percentage = 10
[token]
expiration = 600
`,
    '/d',
  );
  assert.deepEqual(config.backends.map((b) => b.section), ['local', 'local-b']);
  assert.equal(config.backends[0]!.max_over_subscription_ratio, 'auto');
  assert.equal(config.backends[1]!.volume_backend_name, 'fast');
  assert.equal(config.backends[1]!.reserved_percentage, 10);
  assert.equal(config.backends[1]!.max_over_subscription_ratio, 20);
  assert.equal(config.token.expiration, 600);
  assert.equal(config.DEFAULT.default_volume_type, 'local');
});

test("the scenario's [ceph] section parses (options read, driver comes later)", () => {
  const config = parseConfigText(
    `[DEFAULT]
enabled_backends = ceph
[ceph]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = ceph
rbd_pool = volumes
rbd_user = cinder
rbd_secret_uuid = 457eb676-33da-42ec-9a8c-9293d545c337
rbd_ceph_conf = /etc/ceph/ceph.conf
rbd_flatten_volume_from_snapshot = false
rbd_max_clone_depth = 5
rbd_store_chunk_size = 4
rados_connect_timeout = -1
`,
    '/d',
  );
  const ceph = config.backends[0]!;
  assert.equal(ceph.rbd_pool, 'volumes');
  assert.equal(ceph.rbd_max_clone_depth, 5);
  assert.equal(ceph.rbd_flatten_volume_from_snapshot, false);
  assert.equal(ceph.rados_connect_timeout, -1);
});

function configError(text: string): ConfigError {
  try {
    parseConfigText(text, '/d', '/etc/pumice.conf');
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${error}`);
    return error;
  }
  assert.fail('expected a configuration error');
}

test('a misspelt option names file, line, and the likely intended option', () => {
  const error = configError('[DEFAULT]\nenabled_backends = local\n[local]\nvolume_driver = local\nvolume_backnd_name = x\n');
  assert.equal(error.line, 5);
  assert.match(error.message, /^\/etc\/pumice\.conf:5: /);
  assert.match(error.message, /unknown option 'volume_backnd_name' in \[local\]; did you mean 'volume_backend_name'\?/);
});

test('a backend named in enabled_backends without a section is reported with the fix', () => {
  const error = configError('[DEFAULT]\nenabled_backends = local,local-b\n[local]\nvolume_driver = local\n');
  assert.equal(error.line, 2);
  assert.match(error.message, /no \[local-b\] section; add it/);
});

test('wrong types and values name what was expected', () => {
  assert.match(configError('[DEFAULT]\nosapi_max_limit = many\n').message, /expected an integer/);
  assert.match(configError('[DEFAULT]\nenabled_backends=local\n[local]\nvolume_driver=local\nmax_over_subscription_ratio = 0.5\n').message, /a number >= 1 or 'auto'/);
  assert.match(configError('[DEFAULT]\ndebug = maybe\n').message, /expected true or false/);
  assert.match(configError('[DEFAULT]\nreport_interval = 0\n').message, /an integer >= 1/);
});

test('unknown sections and syntax errors are reported with their line', () => {
  const unknown = configError('[DEFAULT]\n[tokn]\nexpiration = 5\n');
  assert.equal(unknown.line, 2);
  assert.match(unknown.message, /unknown section \[tokn\].*did you mean 'token'/);
  const syntax = configError('[DEFAULT]\nthis is not an option\n');
  assert.equal(syntax.line, 2);
  const orphan = configError('debug = true\n');
  assert.match(orphan.message, /before any \[section\]/);
});

test('a comment after a value is refused with its line and the fix (oslo.config would keep it in the value)', () => {
  const driver = configError('[DEFAULT]\nenabled_backends = ceph\n\n[ceph]\nvolume_driver = cinder.volume.drivers.rbd.RBDDriver   # or: rbd\n');
  assert.equal(driver.line, 5);
  assert.match(driver.message, /option 'volume_driver' has a comment after its value \('# or: rbd'\)/);
  assert.match(driver.message, /Move it to the line above: '# or: rbd' then 'volume_driver = cinder\.volume\.drivers\.rbd\.RBDDriver'/);
  const directory = configError('[DEFAULT]\nlocal_volume_dir = /x   # where\n');
  assert.equal(directory.line, 2);
  // In a continuation line too.
  const continued = configError('[DEFAULT]\nenabled_backends = a,\n  b # second\n');
  assert.equal(continued.line, 3);
  // '#' inside a value (no space before it) and whole-line comments stay as they are.
  assert.doesNotThrow(() => parseIni('[DEFAULT]\n# a comment\n  ; another\npublic_endpoint = http://h:5000/#frag\n', 'x.conf'));
  assert.equal(parseIni('[DEFAULT]\nx = a#b\n', 'x.conf').sections.get('DEFAULT')!.entries.get('x')!.value, 'a#b');
});
