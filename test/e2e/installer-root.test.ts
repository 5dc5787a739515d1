/**
 * scripts/install-service.sh in its root mode, for real, without touching this machine: the test
 * runs it in a private mount namespace whose /etc and /opt are overlays on directories of the test
 * (and whose /run/systemd hides a running systemd, if any), so `useradd`, the unit, /etc/pumice and
 * /opt/pumice are written there and vanish with the namespace. Checks the user, the modes and
 * groups, the enabled unit, that a second run (an upgrade) keeps pumice.conf, and that the pumice
 * user can run the unit's ExecStartPre (check-config --service). Not covered: systemctl
 * daemon-reload and start, which need systemd as PID 1 (service.test.ts runs `serve --service`
 * as an unprivileged user instead).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { repoRoot } from '../helpers/pumice.ts';

const scratch = mkdtempSync(join(tmpdir(), 'pumice-installer-root-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const hostFile = (path: string) => (existsSync(path) ? createHash('sha256').update(readFileSync(path)).digest('hex') : 'absent');

test('install-service.sh as root: the pumice user, /etc/pumice, the enabled unit and the code, in a throwaway namespace; a rerun keeps pumice.conf', (t) => {
  if (process.getuid?.() !== 0) return t.skip('needs root for a mount namespace');
  if (!readFileSync('/proc/filesystems', 'utf8').includes('overlay') || spawnSync('unshare', ['--version']).status !== 0) return t.skip('needs overlayfs and unshare');
  for (const dir of ['etc-up', 'etc-work', 'opt-up', 'opt-work', 'out']) mkdirSync(join(scratch, dir));
  const before = ['/etc/passwd', '/etc/group', '/etc/systemd/system/pumice.service', '/opt/pumice/package.json'].map(hostFile);
  const script = `set -e
mount -t overlay overlay -o lowerdir=/etc,upperdir="$S/etc-up",workdir="$S/etc-work" /etc
mount -t overlay overlay -o lowerdir=/opt,upperdir="$S/opt-up",workdir="$S/opt-work" /opt
if [ -d /run/systemd ]; then mount -t tmpfs tmpfs /run/systemd; fi
PATH="$(dirname "$NODE"):$PATH"
bash "$REPO/scripts/install-service.sh" --no-start > "$S/out/first" 2>&1
echo '# kept by the upgrade' >> /etc/pumice/pumice.conf
bash "$REPO/scripts/install-service.sh" --no-start > "$S/out/second" 2>&1
getent passwd pumice > "$S/out/passwd"
id -nG pumice > "$S/out/groups"
stat -c '%n %a %U %G' /etc/pumice /etc/pumice/pumice.conf /etc/systemd/system/pumice.service /opt/pumice/bin/pumice.mjs > "$S/out/modes"
readlink /etc/systemd/system/multi-user.target.wants/pumice.service > "$S/out/wants"
tail -n 1 /etc/pumice/pumice.conf > "$S/out/kept"
cd /
setpriv --reuid pumice --regid pumice --init-groups env -i PATH="$PATH" PUMICE_SERVICE=1 "$NODE" /opt/pumice/bin/pumice.mjs check-config --service > "$S/out/check" 2>&1`;
  const run = spawnSync('unshare', ['-m', '--propagation', 'private', 'bash', '-c', script], {
    env: { ...process.env, S: scratch, REPO: repoRoot, NODE: process.execPath },
    encoding: 'utf8',
    timeout: 240_000,
  });
  const out = (name: string) => (existsSync(join(scratch, 'out', name)) ? readFileSync(join(scratch, 'out', name), 'utf8') : '');
  assert.equal(run.status, 0, `${run.stderr}\nfirst run:\n${out('first')}\nsecond run:\n${out('second')}\ncheck:\n${out('check')}`);
  assert.match(out('first'), /systemd is not running here: pumice\.service is installed and enabled/);
  // A system user without a login shell or a home of its own, whose home is the state directory.
  const [name, , uid, , , home, shell] = out('passwd').trim().split(':');
  assert.equal(name, 'pumice');
  assert.ok(Number(uid) < 1000, `a system uid: ${uid}`);
  assert.equal(home, '/var/lib/pumice');
  assert.equal(shell, '/usr/sbin/nologin');
  const groups = out('groups').trim().split(/\s+/);
  assert.ok(groups.includes('pumice'));
  if (readFileSync('/etc/group', 'utf8').split('\n').some((l) => l.startsWith('kvm:'))) assert.ok(groups.includes('kvm'), `in kvm for /dev/kvm: ${groups.join(' ')}`);
  const modes = out('modes').trim().split('\n');
  assert.deepEqual(modes.slice(0, 3), [
    '/etc/pumice 750 root pumice',
    '/etc/pumice/pumice.conf 640 root pumice',
    '/etc/systemd/system/pumice.service 644 root root',
  ]);
  assert.match(modes[3]!, /^\/opt\/pumice\/bin\/pumice\.mjs [0-7]*[0145][0145] root root$/, 'the code is root\'s, not writable by the service');
  assert.equal(out('wants').trim(), '/etc/systemd/system/pumice.service', 'enabled: WantedBy=multi-user.target');
  assert.equal(out('kept').trim(), '# kept by the upgrade', 'a rerun keeps pumice.conf');
  assert.match(out('check'), /\/etc\/pumice\/pumice\.conf: OK/, 'the pumice user reads its configuration (ExecStartPre)');
  // Nothing of it reached this machine.
  assert.deepEqual(['/etc/passwd', '/etc/group', '/etc/systemd/system/pumice.service', '/opt/pumice/package.json'].map(hostFile), before);
});
