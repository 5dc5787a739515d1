/**
 * `[DEFAULT] use_journal = true` against a real systemd-journald (issue 19). This container has no
 * systemd, so the test starts journald itself in a private mount namespace (`unshare -m`, tmpfs on
 * /run and /var/log: the machine's own /run and logs are never touched), runs `pumice serve` there,
 * drives one request of each level (and a failed login), and reads the entries back with journalctl -o json.
 * Without journald's socket, check-config and serve refuse use_journal = true (exit 3) naming the fix.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, test } from 'node:test';
import { journalSocketPath } from '../../src/journal.ts';
import { ApiClient, repoRoot } from '../helpers/pumice.ts';
import { followServe } from '../helpers/serve.ts';

const execFileAsync = promisify(execFile);
const journald = '/lib/systemd/systemd-journald';
const scratch = mkdtempSync(join(tmpdir(), 'pumice-journal-'));
const pumice = join(repoRoot, 'bin', 'pumice.mjs');
const configPath = join(scratch, 'pumice.conf');
// virt_type = qemu: no accelerator probe boot at start.
writeFileSync(configPath, '[DEFAULT]\nuse_journal = true\nquota_gigabytes = -1\n[libvirt]\nvirt_type = qemu\n');
after(() => rmSync(scratch, { recursive: true, force: true }));

test('without journald\'s socket, use_journal = true is a configuration error with the fix (exit 3)', async (t) => {
  if (existsSync(journalSocketPath)) return t.skip(`${journalSocketPath} exists on this machine`);
  const checked = await execFileAsync(process.execPath, [pumice, 'check-config', '--config', configPath, '--data-dir', join(scratch, 'unused')]).then(() => null, (e: { code: number; stderr: string }) => e);
  assert.equal(checked?.code, 3);
  assert.match(checked.stderr, new RegExp(`pumice\\.conf:2: \\[DEFAULT\\] use_journal = true, but ${journalSocketPath} does not exist: .*set use_journal = false`));
});

test('use_journal = true: lines reach a real journald with MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, LOGGER_NAME, REQUEST_ID, USER_ID, PROJECT_ID', async (t) => {
  if (process.getuid?.() !== 0) return t.skip('needs root for a mount namespace');
  if (!existsSync(journald) || spawnSync('unshare', ['--version']).status !== 0) return t.skip('systemd-journald or unshare is missing');
  const dataDir = join(scratch, 'data');
  const entriesFile = join(scratch, 'entries.json');
  // serve runs in the background so that the shell, on SIGTERM, stops it and then reads the journal.
  const script = `set -e
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/log
mkdir -p /run/systemd/journal
${journald} & J=$!
i=0; while [ ! -S ${journalSocketPath} ]; do sleep 0.05; i=$((i+1)); [ $i -lt 200 ] || exit 9; done
"$NODE" "$PUMICE" serve --data-dir "$DATA" --config "$CONF" --listen 127.0.0.1:0 & S=$!
trap 'kill -TERM $S' TERM
wait $S || true
wait $S || true
journalctl -D /run/log/journal -o json --no-pager SYSLOG_IDENTIFIER=pumice > "$OUT"
kill $J`;
  const proc = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], {
    env: { ...process.env, NODE: process.execPath, PUMICE: pumice, DATA: dataDir, CONF: configPath, OUT: entriesFile, PUMICE_ADMIN_PASSWORD: 'journal-test' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const served = followServe(proc);
  let created: { id: string; requestId: string } | null = null;
  let rejected: string | null = null;
  let api: ApiClient | null = null;
  try {
    const url = await served.ready;
    api = await ApiClient.login(url, 'admin', 'journal-test', 'admin');
    const volume = await api.request('POST', `/volume/v3/${api.projectId}/volumes`, { volume: { size: 1, name: 'journal' } });
    assert.equal(volume.status, 202, volume.text);
    created = { id: volume.body.volume.id, requestId: volume.headers.get('x-openstack-request-id')! };
    for (const deadline = Date.now() + 30_000; Date.now() < deadline;) {
      const r = await api.request('GET', `/volume/v3/${api.projectId}/volumes/${created.id}`);
      if (r.body.volume.status !== 'creating') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const huge = await api.request('POST', `/volume/v3/${api.projectId}/volumes`, { volume: { size: 900000 } });
    rejected = huge.headers.get('x-openstack-request-id');
    const missing = await api.request('GET', `/volume/v3/${api.projectId}/volumes/no-such-volume`);
    assert.equal(missing.status, 404);
    // A failed login is a WARNING, as Keystone's "Authorization failed".
    await ApiClient.login(url, 'admin', 'not-the-password', 'admin').then(() => assert.fail('a wrong password logs in'), () => undefined);
  } finally {
    proc.kill('SIGTERM');
    await served.exited;
  }
  const entries = readFileSync(entriesFile, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, string>);
  const find = (re: RegExp) => entries.find((e) => re.test(e['MESSAGE'] ?? ''));
  const moved = find(new RegExp(`volume ${created!.id}: creating -> available`));
  assert.ok(moved, `the status change is in the journal:\n${entries.map((e) => e['MESSAGE']).join('\n')}`);
  assert.equal(moved['PRIORITY'], '6');
  assert.equal(moved['LOGGER_LEVEL'], 'INFO');
  assert.equal(moved['LOGGER_NAME'], 'pumice.state');
  assert.equal(moved['SYSLOG_IDENTIFIER'], 'pumice');
  assert.equal(moved['_TRANSPORT'], 'journal', 'sent on the native protocol, not the stream');
  // The task that moved it carries the request id, user and project of the call that queued it.
  assert.equal(moved['REQUEST_ID'], created!.requestId);
  assert.equal(moved['USER_ID'], api!.userId);
  assert.equal(moved['PROJECT_ID'], api!.projectId);
  const warning = find(/scheduler: volume .* not placed: .*CapacityFilter/);
  assert.equal(warning?.['PRIORITY'], '4', 'a scheduler rejection is a WARNING');
  assert.equal(warning?.['REQUEST_ID'], rejected);
  const refused = find(/GET \/volume\/v3\/\S+\/volumes\/no-such-volume status: 404/);
  assert.equal(refused?.['PRIORITY'], '6', 'a 4xx access line is INFO');
  assert.equal(find(/identity: failed login for user \S+ \("admin"\) from \S+: wrong password/)?.['PRIORITY'], '4', 'a failed login is a WARNING');
  // Nothing went to stderr as well: under systemd that would be every line twice.
  assert.doesNotMatch(served.output(), /INFO pumice\.state/);
});
