/**
 * A volume host whose backend is down claims none of that backend's tasks (issue 16): they stay
 * queued (for another member of a cluster, or for this host once the backend is back) instead
 * of being claimed and failed. With one host, the task waits and /messages says the backend is
 * down. Here: a delete is cut by a crash (PUMICE_CRASH_POINT), the server comes back with its
 * local backend directory unusable (a file where the directory was), then the directory returns.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import { ApiClient, readEvents, startPumice } from '../helpers/pumice.ts';

const config = '[DEFAULT]\nreport_interval = 1\nservice_down_time = 2\n';

test('a task of a down backend waits in the queue with a user message, and runs once the backend is back', async () => {
  const first = await startPumice({ config, env: { PUMICE_CRASH_POINT: 'volume.delete.before:1' } });
  const { dataDir } = first;
  const volumeDir = join(dataDir, 'volumes', 'local');
  let second: Awaited<ReturnType<typeof startPumice>> | null = null;
  try {
    let admin = await ApiClient.login(first.url, 'admin', first.adminPassword, 'admin');
    const created = await admin.request('POST', `/volume/v3/${admin.projectId}/volumes`, { volume: { size: 1, name: 'held-by-down-backend' } });
    assert.equal(created.status, 202, created.text);
    const volumeId = created.body.volume.id as string;
    await admin.waitVolume(volumeId, ['available'], 30_000);
    assert.equal((await admin.request('DELETE', `/volume/v3/${admin.projectId}/volumes/${volumeId}`)).status, 202);
    if (first.proc.exitCode === null && first.proc.signalCode === null) await once(first.proc, 'exit');
    assert.equal(first.proc.signalCode, 'SIGKILL', 'the delete was cut by the crash point (it kills the process)');
    const claimedBefore = readEvents(dataDir, 'task.claimed').filter((e) => e['resource_id'] === volumeId).length;
    // The backend is unusable at the next start: a file where its directory was.
    renameSync(volumeDir, `${volumeDir}.away`);
    writeFileSync(volumeDir, 'not a directory\n');
    second = await startPumice({ config, dataDir });
    admin = await ApiClient.login(second.url, 'admin', second.adminPassword, 'admin');
    const messagesPath = `/volume/v3/${admin.projectId}/messages?resource_uuid=${volumeId}`;
    const deadline = Date.now() + 20_000;
    let said: { event_id: string; user_message: string }[] = [];
    while (!said.some((m) => m.event_id === 'VOLUME_VOLUME_001_009')) {
      assert.ok(Date.now() < deadline, `no message of the waiting delete: ${JSON.stringify(said)}\n${second.output().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 200));
      const r = await admin.request('GET', messagesPath, undefined, { 'OpenStack-API-Version': 'volume 3.3' });
      assert.equal(r.status, 200, r.text);
      said = r.body.messages;
    }
    assert.match(said.find((m) => m.event_id === 'VOLUME_VOLUME_001_009')!.user_message, /volume\.delete: backend \[local\] is down .*waits until a volume host reaches the backend again/);
    const waiting = await admin.request('GET', `/volume/v3/${admin.projectId}/volumes/${volumeId}`);
    assert.equal(waiting.body.volume.status, 'deleting', 'not claimed and failed: still waiting');
    assert.doesNotMatch(second.output(), new RegExp(`volume.delete ${volumeId} failed`));
    assert.equal(readEvents(dataDir, 'task.claimed').filter((e) => e['resource_id'] === volumeId).length, claimedBefore, 'the restarted host did not claim the task');
    // The backend returns: the next heartbeat finds it up and the task runs.
    rmSync(volumeDir);
    renameSync(`${volumeDir}.away`, volumeDir);
    await admin.waitVolume(volumeId, ['deleted'], 20_000);
  } finally {
    await first.kill9();
    await second?.stop();
    first.cleanup();
  }
});
