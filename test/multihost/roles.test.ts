/**
 * `pumice serve --roles` parsing (src/roles.ts): any subset, with the refusals named. And the host
 * name every host of a multi-host cloud needs: its default and what the sample shows of it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allRoles, parseRoles } from '../../src/roles.ts';
import { UsageError } from '../../src/cli/args.ts';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultHostName, parseConfigText } from '../../src/config/config.ts';
import { configSample } from '../../src/config/sample.ts';

test('no --roles is every role; a list is that subset, once each', () => {
  assert.deepEqual(parseRoles(undefined), [...allRoles]);
  assert.deepEqual(parseRoles('volume,backup'), ['volume', 'backup']);
  assert.deepEqual(parseRoles(' api , scheduler,image,api'), ['api', 'scheduler', 'image']);
  assert.deepEqual(parseRoles('compute'), ['compute']);
});

test('an unknown role, an empty list and a scheduler without the api are usage errors naming the fix', () => {
  assert.throws(() => parseRoles('volum'), (e: unknown) => e instanceof UsageError && /unknown role 'volum'; did you mean 'volume'\?/.test(e.message));
  assert.throws(() => parseRoles(','), (e: unknown) => e instanceof UsageError && /names no role; roles are api, scheduler/.test(e.message));
  assert.throws(() => parseRoles('scheduler,volume'), (e: unknown) => e instanceof UsageError && /runs with the api role \(--roles api,scheduler\)/.test(e.message));
});

test("config sample shows the host name's real default, the machine's hostname, not 'pumice'", () => {
  const sample = configSample();
  assert.match(sample, /^#host = <hostname>$/m);
  assert.doesNotMatch(sample, /^#host = pumice$/m);
  assert.doesNotThrow(() => parseConfigText(sample, '/tmp/d', 'sample.conf'));
});

test('the default host name: a fresh data directory (a new host on PostgreSQL) takes the hostname; one in use keeps pumice, a compute host with guests included', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'pumice-hostname-'));
  try {
    const dir = (name: string) => {
      const path = join(scratch, name);
      mkdirSync(path);
      return path;
    };
    // PostgreSQL: no pumice.db in the data directory; nothing else there yet.
    const fresh = dir('fresh');
    assert.equal(defaultHostName(fresh).host, hostname());
    // The compute role's accelerator probe is remembered there before any guest: still a new host.
    mkdirSync(join(fresh, 'instances'));
    writeFileSync(join(fresh, 'instances', '.virt-probe.json'), '{}');
    assert.equal(defaultHostName(fresh).host, hostname());
    // A volume or API host wrote admin-openrc at its first start, on either database.
    const volumeHost = dir('volume-host');
    writeFileSync(join(volumeHost, 'admin-openrc'), '');
    assert.deepEqual([defaultHostName(volumeHost).host, defaultHostName(volumeHost).recorded], ['pumice', false]);
    // A compute-only host writes none of those files, only its guests' directories: renamed, it would destroy its own guests.
    const computeHost = dir('compute-host');
    mkdirSync(join(computeHost, 'instances', '0b7e6ea8-2f41-4c3d-9d1e-5c1f0a2b3c4d'), { recursive: true });
    assert.equal(defaultHostName(computeHost).host, 'pumice');
    assert.match(defaultHostName(computeHost).reason, /predates the hostname default/);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});
