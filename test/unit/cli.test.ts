/**
 * The command line's conventions (issue 19): every command's --help with its options and an
 * example, "did you mean" for unknown commands and options, our messages instead of parseArgs',
 * the documented exit codes, `--listen :PORT`, `--version`, and `config sample`. Runs main.ts's
 * `run` in-process (output captured); exit 4 (address in use) is covered by
 * test/e2e/admin-password.test.ts, which starts real servers.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { exitCodes, parseListen } from '../../src/cli/args.ts';
import { parseConfigText, optionTables } from '../../src/config/config.ts';
import { commandNames, delegatedCommandNames, run } from '../../src/main.ts';

const execFileAsync = promisify(execFile);
const scratch = mkdtempSync(join(tmpdir(), 'pumice-cli-'));
process.on('exit', () => rmSync(scratch, { recursive: true, force: true }));

async function pumice(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await run(argv, { out: (text) => (stdout += text), err: (text) => (stderr += text) });
  return { code, stdout, stderr };
}

const delegatedCommands = delegatedCommandNames;

test('every command has its own --help with its options and an example (exit 0)', async () => {
  const declared = commandNames.filter((name) => !delegatedCommands.includes(name));
  assert.ok(declared.length >= 9, `declared commands: ${declared.join(', ')}`);
  for (const name of declared) {
    const { code, stdout, stderr } = await pumice(...name.split(' '), '--help');
    assert.equal(code, exitCodes.ok, `${name} --help: ${stderr}`);
    assert.match(stdout, new RegExp(`^usage: pumice ${name}\\b`), name);
    assert.match(stdout, /\nexample:\n {2}pumice /, `${name} --help has an example`);
    assert.match(stdout, /--help, -h/, name);
    // `pumice help NAME` says the same.
    assert.equal((await pumice('help', ...name.split(' '))).stdout, stdout, `pumice help ${name}`);
  }
  for (const [name, options] of [['serve', ['--data-dir', '--config', '--listen', '--roles', '--host', '--service']], ['admin reset-password', ['--password-file', '--data-dir']]] as const) {
    const { stdout } = await pumice(...name.split(' '), '--help');
    for (const option of options) assert.ok(stdout.includes(option), `${name} --help lists ${option}`);
  }
  // Commands with their own command line answer --help too (they write to the process's stdout: one child runs them all).
  // Their misspelt options get our message too, not Node's parseArgs advice about '--'.
  const misspelt: [string[], string][] = [
    [['backup', 'create', '--volum', 'v1'], "unknown option '--volum'; did you mean '--volume'?"],
    [['image', 'import', 'disk.img', '--nme', 'x'], "unknown option '--nme'; did you mean '--name'?"],
    [['tasks', 'list', '--stat', 'failed'], "unknown option '--stat'; did you mean '--state'?"],
    [['host', 'evacuate', 'h1', '--tagret', 'h2'], "unknown option '--tagret'; did you mean '--target'?"],
  ];
  const script = `const { run } = await import(${JSON.stringify(new URL('../../src/main.ts', import.meta.url).href)});
    for (const name of ${JSON.stringify(delegatedCommands)}) { const code = await run([name, '--help']); console.log('EXIT ' + name + ' ' + code); }
    for (const argv of ${JSON.stringify(misspelt.map(([argv]) => argv))}) { const code = await run(argv); console.log('EXIT ' + argv.join(' ') + ' ' + code); }`;
  const { stdout, stderr } = await execFileAsync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: new URL('../..', import.meta.url).pathname });
  const output = `${stdout}${stderr}`;
  for (const name of delegatedCommands) {
    assert.ok(stdout.includes(`EXIT ${name} 0`), `pumice ${name} --help exits 0:\n${stdout}`);
    assert.match(stdout, new RegExp(`usage: pumice ${name}\\b`), `pumice ${name} --help prints its usage`);
    // Each has its own example, before its exit line (the helps are printed one after another).
    assert.match(stdout, new RegExp(`usage: pumice ${name}\\b(?:(?!\\nEXIT )[\\s\\S])*\\nexample:\\n {2}pumice ${name} (?:(?!\\nEXIT )[\\s\\S])*\\nEXIT ${name} 0`), `pumice ${name} --help has an example`);
  }
  for (const [argv, message] of misspelt) {
    assert.ok(output.includes(`EXIT ${argv.join(' ')} 2`), `pumice ${argv.join(' ')} exits 2:\n${output}`);
    assert.ok(output.includes(message), `pumice ${argv.join(' ')}: ${message}\n${output}`);
  }
  assert.doesNotMatch(output, /place it at the end of the command after '--'/);
});

test('pumice --help lists every command and the exit codes; no command is a usage error', async () => {
  const { code, stdout } = await pumice('--help');
  assert.equal(code, 0);
  for (const name of commandNames) assert.ok(stdout.includes(`  ${name}`), `--help lists ${name}`);
  for (const line of ['0  success', '1  failure', '2  usage', '3  configuration', '4  the listen address is in use']) assert.ok(stdout.includes(line), line);
  const bare = await pumice();
  assert.equal(bare.code, exitCodes.usage);
  assert.match(bare.stderr, /usage: pumice <command>/);
});

test('--version prints package.json version', async () => {
  const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  for (const argv of [['--version'], ['version']]) {
    const { code, stdout } = await pumice(...argv);
    assert.equal(code, 0);
    assert.equal(stdout, `pumice ${version}\n`);
  }
});

test('unknown commands and options get "did you mean", bad values our own message (exit 2)', async () => {
  const cases: [string[], RegExp][] = [
    [['serv'], /unknown command 'serv'; did you mean 'serve'\?/],
    [['chek-config'], /did you mean 'check-config'\?/],
    [['admin', 'reset-pasword'], /unknown command 'pumice admin reset-pasword'; did you mean 'reset-password'\?/],
    [['admin'], /'pumice admin' needs a subcommand: reset-password/],
    [['serve', '--lisen', ':5000'], /unknown option '--lisen' for 'pumice serve'; did you mean '--listen'\?/],
    [['check-config', '--conifg', 'x'], /did you mean '--config'\?/],
    [['serve', '--data-dir'], /option '--data-dir' needs a value: --data-dir DIR/],
    [['serve', '--help=yes'], /option '--help' takes no value/],
    [['serve', 'extra'], /unexpected argument 'extra' for 'pumice serve' \(it takes options only\)/],
    [['serve', '--listen', 'localhost'], /--listen 'localhost' is not HOST:PORT, :PORT or PORT/],
    [['serve', '--listen', ':70000'], /out of range/],
    [['serve', '--roles', 'computer'], /unknown role 'computer'; did you mean 'compute'\?/],
    [['ceph-lab', 'up'], /'pumice ceph-lab' needs up\|down\|purge\|status DIR/],
    [['ceph-lab', 'upp', '/tmp/x'], /unknown action 'upp'; did you mean 'up'\?/],
  ];
  for (const [argv, message] of cases) {
    const { code, stderr } = await pumice(...argv);
    assert.equal(code, exitCodes.usage, `${argv.join(' ')}: ${stderr}`);
    assert.match(stderr, message, argv.join(' '));
    assert.match(stderr, /\(see 'pumice [^']*--help'\)/, `${argv.join(' ')} points to the help`);
    // Node's parseArgs wording never reaches the operator.
    assert.doesNotMatch(stderr, /ERR_PARSE_ARGS|Unknown option '|TypeError/, argv.join(' '));
  }
});

test('--listen accepts HOST:PORT, [V6]:PORT, :PORT and PORT', () => {
  assert.deepEqual(parseListen('0.0.0.0:8776'), { host: '0.0.0.0', port: 8776 });
  assert.deepEqual(parseListen('[::1]:5000'), { host: '::1', port: 5000 });
  assert.deepEqual(parseListen(':5001'), { host: '127.0.0.1', port: 5001 });
  assert.deepEqual(parseListen('5002'), { host: '127.0.0.1', port: 5002 });
});

test('configuration errors: every one at once with file:line, for check-config and serve alike (exit 3)', async () => {
  const path = join(scratch, 'bad.conf');
  writeFileSync(
    path,
    [
      '[DEFAULT]',
      'enabled_backends = lvm, ceph, other',
      'backup_driver = swift',
      '',
      '[lvm]',
      'volume_driver = cinder.volume.drivers.lvm.LVMVolumeDriver',
      '[ceph]',
      'volume_driver = cinder.volume.drivers.rbd.RBDDriver   # or: rbd',
      '[other]',
      'volume_driver = lvm',
      '',
    ].join('\n'),
  );
  for (const command of ['check-config', 'serve']) {
    const { code, stderr } = await pumice(command, '--config', path, '--data-dir', join(scratch, 'data-bad'));
    assert.equal(code, exitCodes.config, `${command}: ${stderr}`);
    assert.match(stderr, /4 configuration errors:/, command);
    assert.match(stderr, new RegExp(`${path}:3: \\[DEFAULT\\] backup_driver = swift is unknown; use 'posix' .* or 'ceph'`), command);
    assert.match(stderr, new RegExp(`${path}:6: \\[lvm\\] volume_driver = cinder\\.volume\\.drivers\\.lvm\\.LVMVolumeDriver is not available; accepted values: local, rbd, cinder\\.volume\\.drivers\\.rbd\\.RBDDriver \\(Pumice has no LVM driver`), command);
    assert.match(stderr, new RegExp(`${path}:8: option 'volume_driver' has a comment after its value`), command);
    assert.match(stderr, new RegExp(`${path}:10: \\[other\\] volume_driver = lvm is not available`), command);
  }
  // A single error keeps the one-line form.
  writeFileSync(path, '[DEFAULT]\nnbd_listen_host = 0.0.0.0\n');
  const nbd = await pumice('check-config', '--config', path);
  assert.equal(nbd.code, exitCodes.config);
  assert.match(nbd.stderr, new RegExp(`configuration error: ${path}:2: \\[DEFAULT\\] nbd_listen_host = 0\\.0\\.0\\.0 listens beyond loopback without TLS`));
  const good = await pumice('check-config', '--config', join(scratch, 'missing.conf'));
  assert.equal(good.code, exitCodes.config);
  assert.match(good.stderr, /missing\.conf: cannot read the configuration file/);
});

test('a data directory serve cannot use is named with the fix (exit 3), not SQLite\'s message', async () => {
  const file = join(scratch, 'a-file');
  writeFileSync(file, 'x');
  const { code, stderr } = await pumice('serve', '--data-dir', join(file, 'data'), '--listen', ':0');
  assert.equal(code, exitCodes.config, stderr);
  assert.match(stderr, new RegExp(`the data directory ${join(file, 'data')} cannot be used .*Fix: give it to this user \\(sudo install -d -o \\S+ -m 0700 `));
  assert.doesNotMatch(stderr, /unable to open database file/);
});

test('a command that fails answers 1 with the reason and the fix', async () => {
  const { code, stderr } = await pumice('admin', 'reset-password', '--data-dir', join(scratch, 'never-initialised'));
  assert.equal(code, exitCodes.failure);
  assert.match(stderr, /pumice\.db does not exist: .* run pumice init --data-dir /);
});

test('config sample: every option with its help and default, commented out; the sample passes check-config', async () => {
  const { code, stdout } = await pumice('config', 'sample');
  assert.equal(code, 0);
  const { sections, backend } = optionTables();
  for (const [section, options] of Object.entries(sections)) {
    assert.ok(stdout.includes(`\n[${section}]\n`), `[${section}]`);
    for (const [key, spec] of Object.entries(options)) assert.ok(stdout.includes(`# ${spec.help} (`) && stdout.includes(`\n#${key} = `), `${section}.${key}`);
  }
  for (const key of Object.keys(backend)) assert.ok(stdout.includes(`\n#${key} = `), `backend ${key}`);
  assert.doesNotThrow(() => parseConfigText(stdout, '/tmp/d', 'sample.conf'));
  const path = join(scratch, 'sample.conf');
  writeFileSync(path, stdout);
  assert.equal((await pumice('check-config', '--config', path)).code, 0);
});
