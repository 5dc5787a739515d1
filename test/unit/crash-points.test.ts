/**
 * Crash points (src/tasks/crash.ts): an armed point kills its process with SIGKILL, a real kill -9
 * (no exit handlers run), after announcing it on stderr; PUMICE_CRASH_CONTROL arms points in a
 * running process, the hit counts starting again at each change of the file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const crashModule = pathToFileURL(resolve(import.meta.dirname, '..', '..', 'src', 'tasks', 'crash.ts')).href;
const repoRoot = resolve(import.meta.dirname, '..', '..');

/** Runs `body` (module code with `crashPoint` and `arm(spec)` in scope) in a child; its end. */
async function child(body: string, env: Record<string, string>): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'pumice-crash-points-'));
  try {
    const script = join(dir, 'child.mts');
    writeFileSync(
      script,
      `import { crashPoint } from ${JSON.stringify(crashModule)};
import { renameSync, writeFileSync } from 'node:fs';
const arm = (spec: string) => { const f = process.env['PUMICE_CRASH_CONTROL']!; writeFileSync(f + '.tmp', spec); renameSync(f + '.tmp', f); };
process.on('exit', () => console.log('exit handler ran'));
${body}
`,
    );
    const proc = spawn(process.execPath, ['--import', 'tsx', script], { cwd: repoRoot, env: { ...process.env, PUMICE_CRASH_CONTROL: join(dir, 'control'), ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const [code, signal] = await new Promise<[number | null, string | null]>((r) => proc.once('close', (c, s) => r([c, s])));
    return { code, signal, stdout, stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('an armed point kills the process with SIGKILL after saying so; no exit handler runs', async () => {
  const r = await child(`crashPoint('a'); console.log('after a:1'); crashPoint('a'); console.log('after a:2');`, { PUMICE_CRASH_POINT: 'a:2' });
  assert.equal(r.signal, 'SIGKILL', `${r.code} ${r.stdout} ${r.stderr}`);
  assert.match(r.stdout, /after a:1/);
  assert.doesNotMatch(r.stdout, /after a:2|exit handler ran/);
  assert.match(r.stderr, /crash-point a:2: killing the process \(SIGKILL; PUMICE_CRASH_POINT\)/);
});

test('PUMICE_CRASH_CONTROL arms a running process; its hit counts start again at each change', async () => {
  // Traced, so the passes before the file are counted: hit 2 after the arming is the 4th pass in all.
  const r = await child(
    `crashPoint('a'); crashPoint('a');
arm('a:2'); crashPoint('a'); console.log('after 1 since armed'); crashPoint('b');
arm('b:1'); crashPoint('a'); console.log('a is disarmed');
arm('a:2'); crashPoint('a'); console.log('after 1 since re-armed'); crashPoint('a'); console.log('after 2 since re-armed');`,
    { PUMICE_CRASH_TRACE: '1' },
  );
  assert.equal(r.signal, 'SIGKILL', `${r.code} ${r.stdout} ${r.stderr}`);
  assert.match(r.stdout, /after 1 since armed\na is disarmed\nafter 1 since re-armed\n/);
  assert.doesNotMatch(r.stdout, /after 2 since re-armed|exit handler ran/);
  assert.match(r.stderr, /crash-point a:2: killing the process \(SIGKILL/);
});

test('an empty or absent control file arms nothing', async () => {
  const r = await child(`crashPoint('a'); arm(''); crashPoint('a'); crashPoint('a'); console.log('done');`, {});
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /done\nexit handler ran/);
});
