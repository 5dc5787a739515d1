/**
 * [DEFAULT] host (issue 16): unset, it is this machine's hostname, as Cinder's; chosen once, at
 * a data directory's first start, and kept in DATA_DIR/host. A data directory that was in use
 * before that rule (a database without DATA_DIR/host) keeps 'pumice', the old default, so its
 * volumes' host strings (pumice@backend#pool) still name a live service. `host =` always wins.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/config.ts';
import { ApiClient, startPumice } from '../helpers/pumice.ts';

async function volumeServiceHosts(url: string, password: string): Promise<string[]> {
  const admin = await ApiClient.login(url, 'admin', password, 'admin');
  const r = await admin.request('GET', `/volume/v3/${admin.projectId}/os-services?binary=cinder-volume`);
  assert.equal(r.status, 200, r.text);
  return (r.body.services as { host: string }[]).map((s) => s.host).sort();
}

test("a fresh data directory takes the machine's hostname and keeps it; one that predates the rule keeps 'pumice'", async () => {
  const server = await startPumice({ host: null });
  const { dataDir } = server;
  try {
    assert.deepEqual(await volumeServiceHosts(server.url, server.adminPassword), [`${hostname()}@local`]);
    assert.equal(readFileSync(join(dataDir, 'host'), 'utf8'), `${hostname()}\n`);
    assert.match(server.output(), new RegExp(`host name ${hostname()}: this machine's hostname`));
    assert.equal(await server.stop(), 0);
    // The same directory as a release before the rule left it: a database, no DATA_DIR/host.
    rmSync(join(dataDir, 'host'));
    const again = await startPumice({ dataDir, host: null });
    try {
      assert.match(again.output(), /host name pumice: the data directory .* predates the hostname default/);
      const hosts = await volumeServiceHosts(again.url, again.adminPassword);
      assert.ok(hosts.includes('pumice@local'), hosts.join(', '));
      assert.equal(readFileSync(join(dataDir, 'host'), 'utf8'), 'pumice\n', 'the choice is recorded');
    } finally {
      await again.stop();
    }
  } finally {
    server.cleanup();
  }
});

test('[DEFAULT] host always wins, over a recorded name too; nothing is recorded for it', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'pumice-host-'));
  try {
    writeFileSync(join(dataDir, 'host'), 'recorded-name\n');
    assert.equal(loadConfig(null, dataDir).DEFAULT.host, 'recorded-name');
    const configPath = join(dataDir, 'pumice.conf');
    writeFileSync(configPath, '[DEFAULT]\nhost = storage-7\n');
    const config = loadConfig(configPath, dataDir);
    assert.equal(config.DEFAULT.host, 'storage-7');
    assert.equal(config.hostToRecord, undefined);
    rmSync(join(dataDir, 'host'));
    assert.equal(loadConfig(configPath, dataDir).DEFAULT.host, 'storage-7');
    assert.equal(existsSync(join(dataDir, 'host')), false);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
