/**
 * The README's Ceph how-to config is tested (issue 19): the `ini` block between the
 * ceph-howto-config markers of README.md goes through `pumice check-config` and `pumice serve`
 * against the Ceph lab ($PUMICE_CEPH_LAB), with only /etc/ceph/ceph.conf pointed at the lab's
 * (its keyrings come from the lab's ceph.conf, as /etc/ceph's do from a real one) and
 * `[libvirt] virt_type = qemu` added (no accelerator probe boot; the block has no [libvirt]).
 * The served backend must be up: the RBD driver connected as client.cinder to pool volumes.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, test } from 'node:test';
import { ApiClient, repoRoot } from '../helpers/pumice.ts';
import { followServe } from '../helpers/serve.ts';

const execFileAsync = promisify(execFile);
const labDir = process.env['PUMICE_CEPH_LAB'];
const scratch = mkdtempSync(join(tmpdir(), 'pumice-readme-ceph-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** The README's example, exactly as an operator copies it. */
export function readmeCephConfig(): string {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const m = /<!-- ceph-howto-config:begin[^>]*-->\n```ini\n([\s\S]*?)```\n<!-- ceph-howto-config:end -->/.exec(readme);
  assert.ok(m, 'README.md has the Ceph how-to config between the ceph-howto-config markers');
  return m[1]!;
}

test('the README Ceph how-to config: its block parses, check-config accepts it and serve runs it against the lab', async (t) => {
  const text = readmeCephConfig();
  assert.match(text, /^volume_driver = cinder\.volume\.drivers\.rbd\.RBDDriver$/m);
  if (!labDir) return t.skip('PUMICE_CEPH_LAB is not set (scripts/with-ceph-lab.sh sets it): serve was not run against Ceph');
  if (!existsSync(join(repoRoot, 'native', 'build', 'Release', 'pumice_rbd.node'))) return t.skip('the native binding is not built (npm run build:native)');
  const labConf = join(labDir, 'ceph.conf');
  const configPath = join(scratch, 'pumice.conf');
  writeFileSync(configPath, `${text.replaceAll('/etc/ceph/ceph.conf', labConf)}\n[libvirt]\nvirt_type = qemu\n`);
  const dataDir = join(scratch, 'data');
  const pumice = join(repoRoot, 'bin', 'pumice.mjs');
  const checked = await execFileAsync(process.execPath, [pumice, 'check-config', '--config', configPath, '--data-dir', dataDir]);
  assert.match(checked.stdout, /: OK/);

  const proc = spawn(process.execPath, [pumice, 'serve', '--config', configPath, '--data-dir', dataDir, '--listen', ':0'], { env: { ...process.env, PUMICE_ADMIN_PASSWORD: 'readme-ceph' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const served = followServe(proc);
  const { exited, output } = served;
  try {
    const url = await served.ready;
    const api = await ApiClient.login(url, 'admin', 'readme-ceph', 'admin');
    const deadline = Date.now() + 30_000;
    let service: { host: string; state: string; disabled_reason?: string | null } | undefined;
    for (;;) {
      const r = await api.request('GET', `/volume/v3/${api.projectId}/os-services?binary=cinder-volume`);
      service = (r.body.services as { host: string; state: string }[]).find((s) => s.host.endsWith('@ceph'));
      if (service?.state === 'up' || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(service?.state, 'up', `the README's ceph backend is up: ${JSON.stringify(service)}\n${output()}`);
    const backup = (await api.request('GET', `/volume/v3/${api.projectId}/os-services?binary=cinder-backup`)).body.services as { state: string }[];
    assert.equal(backup[0]?.state, 'up', `the README's Ceph backup driver is up:\n${output()}`);
  } finally {
    proc.kill('SIGTERM');
    await exited;
  }
});
