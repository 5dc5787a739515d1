/**
 * The `pumice` command line: `serve` runs every role in one process,
 * `init` bootstraps a data directory, `check-config` validates a
 * configuration file, `admin reset-password` sets the admin's password.
 * Every command declares its options (src/cli/args.ts): `--help`, "did you
 * mean" and the exit codes come from those declarations.
 */
import { reopenEventLog } from './events.ts';
import { startComputeHost, startPumice } from './app.ts';
import { allRoles, parseRoles, type Role } from './roles.ts';
import { commandHelp, didYouMean, exitCodes, parseCommandArgs, parseListen, UsageError, type CommandSpec, type OptionDef } from './cli/args.ts';
import { configSample } from './config/sample.ts';
import { loadConfig } from './config/config.ts';
import { ConfigError } from './config/ini.ts';
import { isServiceMode, resolvePaths } from './config/paths.ts';
import { pumiceVersion } from './config/version.ts';
import { cheapStartupWarnings, DataDirError, ensureWritableDataDir, runDoctor } from './doctor.ts';
import { usePrivateUmask } from './file-modes.ts';
import { AdminPasswordConflict, writeAdminOpenrc } from './identity/bootstrap.ts';

const dataDirOption: OptionDef = { type: 'string', value: 'DIR', help: 'data directory (default: ./data, $PUMICE_DATA_DIR, or /var/lib/pumice with --service)' };
const configOption: OptionDef = { type: 'string', value: 'FILE', help: 'INI configuration (default: embedded defaults, $PUMICE_CONFIG, or /etc/pumice/pumice.conf with --service)' };
const serviceOption: OptionDef = { type: 'boolean', help: 'use the service locations /etc/pumice/pumice.conf and /var/lib/pumice (also PUMICE_SERVICE=1; the systemd unit sets it)' };
const helpOption: OptionDef = { type: 'boolean', short: 'h', help: 'show this help' };
const listenOption: OptionDef = { type: 'string', value: 'HOST:PORT', help: 'address of the API listener: HOST:PORT, [V6]:PORT, or :PORT on 127.0.0.1 (default: 127.0.0.1:5000)' };
const common = { 'data-dir': dataDirOption, config: configOption, service: serviceOption, help: helpOption };

/** Commands main.ts runs itself, in the order `pumice --help` lists them. */
const commands: CommandSpec[] = [
  {
    name: 'serve',
    summary: 'Run every role (API, scheduler, volume, backup, image, compute) in one process, or the compute role alone.',
    options: {
      ...common,
      listen: listenOption,
      roles: { type: 'string', value: 'LIST', help: 'roles to run, comma separated: api, scheduler, volume, backup, image, compute (default: all). Hosts sharing one PostgreSQL split them (README: Many hosts)' },
      host: { type: 'string', value: 'NAME', help: '[DEFAULT] host of this process (service and backend host strings)' },
    },
    example: 'pumice serve --data-dir /var/lib/pumice --config /etc/pumice/pumice.conf --listen :5000',
    notes: 'The first start creates the admin user; its generated password is written to DATA_DIR/admin-openrc (mode 0600), never printed.\nSIGHUP reopens the events file; configuration changes need a restart.',
  },
  {
    name: 'init',
    summary: 'Create and bootstrap the data directory (identity, catalog, admin-openrc), then exit. PUMICE_ADMIN_PASSWORD sets the admin password, also of an existing admin.',
    options: { ...common, listen: listenOption },
    example: 'pumice init --data-dir ./data && . ./data/admin-openrc',
  },
  {
    name: 'check-config',
    summary: 'Validate a configuration file with every check serve makes before it starts; report every error with its file:line.',
    options: common,
    example: 'pumice check-config --config /etc/pumice/pumice.conf',
  },
  {
    name: 'doctor',
    summary: 'Check every prerequisite of the configuration (tools, directories, Ceph users and pools) and name the fix for each failure.',
    options: common,
    example: 'pumice doctor --config /etc/pumice/pumice.conf',
  },
  {
    name: 'config sample',
    summary: 'Print a commented sample configuration with every option, its default and its help.',
    options: { help: helpOption },
    example: 'pumice config sample > /etc/pumice/pumice.conf',
  },
  {
    name: 'admin reset-password',
    summary: "Set the admin user's password (generated, or read from a file), enable the user and rewrite DATA_DIR/admin-openrc (0600), as keystone-manage bootstrap does. The password is never printed. The admin's tokens are revoked.",
    options: {
      ...common,
      'password-file': { type: 'string', value: 'FILE', help: "read the new password from FILE's first line (default: generate one)" },
    },
    example: 'pumice admin reset-password --data-dir /var/lib/pumice && . /var/lib/pumice/admin-openrc',
  },
  {
    name: 'ceph setup',
    summary: 'Create missing pools and users of the RBD backends, with their caps and keyrings (needs client.admin).',
    options: common,
    example: 'pumice ceph setup --config /etc/pumice/pumice.conf',
  },
  {
    name: 'ceph-lab',
    summary: 'A throwaway single-host Ceph cluster in DIR, for tests and demos.',
    positionals: 'up|down|purge|status DIR',
    positionalsMin: 2,
    positionalsMax: 2,
    options: { help: helpOption },
    example: 'pumice ceph-lab up /tmp/lab',
  },
  {
    name: 'version',
    summary: "Print Pumice's version (also: pumice --version).",
    options: { help: helpOption },
    example: 'pumice version',
  },
];

/** Commands with their own command line (each has `--help`). */
const delegated: Record<string, { summary: string; load: () => Promise<(args: string[]) => Promise<number>> }> = {
  image: { summary: 'operator image commands: upload with progress, ...', load: async () => (await import('./image/cli.ts')).runCli },
  backup: { summary: 'operator backup commands: create (--volume NAME or ID), watch', load: async () => (await import('./backup/cli.ts')).runCli },
  tasks: { summary: 'list, show, retry or cancel tasks of a data directory', load: async () => (await import('./tasks/cli.ts')).runCli },
  db: { summary: "status, upgrade, export or import the database (SQLite to PostgreSQL)", load: async () => (await import('./db/cli.ts')).runCli },
  host: { summary: 'evacuate every server of a dead compute host, fenced first', load: async () => (await import('./compute/host-cli.ts')).runHostCli },
};

export const exitCodesHelp = `exit codes:
  0  success
  1  failure (a check failed, the server stopped with an error, a wait timed out)
  2  usage: unknown command or option, missing or malformed value
  3  configuration: an error in the file (each with file:line), an unusable data directory,
     or a PUMICE_ADMIN_PASSWORD that is not the admin's password (serve does not change it)
  4  the listen address is in use
`;

function mainUsage(): string {
  const rows: [string, string][] = [
    ...commands.map((c): [string, string] => [`${c.name}${c.positionals ? ` ${c.positionals}` : ''}`, c.summary.split('. ')[0]!.replace(/\.$/, '')]),
    ...Object.entries(delegated).map(([name, d]): [string, string] => [`${name} ...`, d.summary]),
  ];
  const width = Math.max(...rows.map(([n]) => n.length)) + 2;
  return [
    'usage: pumice <command> [options]',
    '',
    'commands:',
    ...rows.map(([n, s]) => `  ${n.padEnd(width)}${s}`),
    '',
    "Each command has its own help: pumice <command> --help (e.g. pumice serve --help).",
    'pumice --version prints the version.',
    '',
    exitCodesHelp,
  ].join('\n');
}

/** Entry point of bin/pumice.mjs; sets process.exitCode (or exits, once a server has started). */
export async function main(argv: string[]): Promise<void> {
  const code = await run(argv);
  // A start that failed half-way may hold listeners open (NBD, timers): exit now, not when they close.
  if (code !== exitCodes.ok) process.exit(code);
  process.exitCode = code;
}

/** Where the commands write; tests pass their own sink to `run`. */
let out = (text: string): void => void process.stdout.write(text);
let err = (text: string): void => void process.stderr.write(text);

/**
 * Runs one command line and answers its exit code (tests call it in-process with `io`;
 * `serve` keeps running after it returns). Delegated commands write to the process's streams.
 */
export async function run(argv: string[], io?: { out: (text: string) => void; err: (text: string) => void }): Promise<number> {
  if (io) ({ out, err } = io);
  return runCommandLine(argv);
}

async function runCommandLine(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined) {
    err(mainUsage());
    return exitCodes.usage;
  }
  if (first === '--help' || first === '-h' || (first === 'help' && rest.length === 0)) {
    out(mainUsage());
    return exitCodes.ok;
  }
  if (first === '--version' || first === '-V') {
    out(`pumice ${pumiceVersion()}\n`);
    return exitCodes.ok;
  }
  if (first === 'help') return runCommandLine([...rest, '--help']);
  const runDelegated = delegated[first];
  if (runDelegated) return (await runDelegated.load())(rest);
  let spec: CommandSpec | undefined;
  let args: string[] = rest;
  try {
    ({ spec, args } = findCommand(first, rest));
    const { values, positionals } = parseCommandArgs(spec, args);
    if (values['help']) {
      out(commandHelp(spec));
      return exitCodes.ok;
    }
    return await runCommand(spec.name, values, positionals);
  } catch (error) {
    return reportError(error);
  }
}

/** The command named by the first one or two words; unknown ones get the nearest name. */
function findCommand(first: string, rest: string[]): { spec: CommandSpec; args: string[] } {
  const twoWords = `${first} ${rest[0] ?? ''}`;
  const byTwo = commands.find((c) => c.name === twoWords);
  if (byTwo) return { spec: byTwo, args: rest.slice(1) };
  const byOne = commands.find((c) => c.name === first);
  if (byOne) return { spec: byOne, args: rest };
  const groups = [...new Set(commands.filter((c) => c.name.includes(' ')).map((c) => c.name.split(' ')[0]!))];
  if (groups.includes(first)) {
    const subcommands = commands.filter((c) => c.name.startsWith(`${first} `)).map((c) => c.name.split(' ')[1]!);
    const wanted = rest[0];
    if (wanted === undefined || wanted === '--help' || wanted === '-h') {
      throw new UsageError(`'pumice ${first}' needs a subcommand: ${subcommands.join(', ')}`, `see 'pumice ${first} ${subcommands[0]} --help'`);
    }
    throw new UsageError(`unknown command 'pumice ${first} ${wanted}'${didYouMean(wanted, subcommands) ?? `; '${first}' has ${subcommands.join(', ')}`}`, `see 'pumice ${first} ${subcommands[0]} --help'`);
  }
  const names = [...new Set([...commands.map((c) => c.name.split(' ')[0]!), ...Object.keys(delegated)])];
  throw new UsageError(`unknown command '${first}'${didYouMean(first, names) ?? ''}`, "see 'pumice --help'");
}

type Values = Record<string, string | boolean | undefined>;

async function runCommand(name: string, values: Values, positionals: string[]): Promise<number> {
  const service = isServiceMode(values['service'] as boolean | undefined);
  const { dataDir, configPath } = resolvePaths({ dataDir: values['data-dir'] as string | undefined, config: values['config'] as string | undefined, service });
  // Every command (serve, a compute-only host, init, doctor, ceph setup) creates private files only.
  // Not the throwaway lab: its files are shared by every test process on the machine, as before.
  if (name !== 'ceph-lab') usePrivateUmask();
  switch (name) {
    case 'version':
      out(`pumice ${pumiceVersion()}\n`);
      return exitCodes.ok;
    case 'config sample':
      out(configSample());
      return exitCodes.ok;
    case 'check-config':
      loadConfig(configPath, dataDir);
      out(`${configPath ?? '(embedded defaults)'}: OK (every check serve makes before it starts)\n`);
      return exitCodes.ok;
    case 'serve': {
      const listen = parseListen((values['listen'] as string | undefined) ?? '127.0.0.1:5000');
      const roles = parseRoles(values['roles'] as string | undefined);
      loadConfig(configPath, dataDir);
      ensureWritableDataDir(dataDir);
      for (const warning of cheapStartupWarnings()) err(`${new Date().toISOString()} WARNING: ${warning}\n`);
      await serve(dataDir, configPath, listen, roles, values['host'] as string | undefined);
      return exitCodes.ok;
    }
    case 'init': {
      const listen = parseListen((values['listen'] as string | undefined) ?? '127.0.0.1:5000');
      loadConfig(configPath, dataDir);
      ensureWritableDataDir(dataDir);
      // The server runs on a free port for the bootstrap; admin-openrc then names the address `serve` will use.
      // Without the compute role: its accelerator probe boots a guest, which a bootstrap does not need.
      const pumice = await startPumice({ dataDir, configPath, host: listen.host, port: 0, roles: allRoles.filter((r) => r !== 'compute'), onExistingAdmin: 'reset', log: () => undefined });
      await pumice.stop();
      const host = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
      writeAdminOpenrc(dataDir, `${pumice.config.DEFAULT.public_endpoint ?? `http://${host}:${listen.port || 5000}`}/identity/v3`, null);
      out(`data directory ${dataDir} is ready; credentials in ${pumice.openrcPath} (mode 0600)\n`);
      if (pumice.generatedAdminPassword) out(`the admin password was generated: it is in ${pumice.openrcPath} (OS_PASSWORD), not shown here\n`);
      else if (process.env['PUMICE_ADMIN_PASSWORD'] !== undefined) out(`the admin password is the one PUMICE_ADMIN_PASSWORD gave (also in ${pumice.openrcPath})\n`);
      return exitCodes.ok;
    }
    case 'admin reset-password': {
      ensureWritableDataDir(dataDir);
      const { resetAdminPassword } = await import('./cli/admin.ts');
      const result = await resetAdminPassword({ dataDir, configPath, passwordFile: values['password-file'] as string | undefined });
      out(`the admin password was ${result.generated ? 'generated and ' : ''}set; it is in ${result.openrcPath} (mode 0600, OS_PASSWORD), not shown here. The admin's earlier tokens are revoked.\n`);
      return exitCodes.ok;
    }
    case 'doctor': {
      const checks = await runDoctor(configPath, dataDir);
      for (const check of checks) out(`${check.ok ? 'ok  ' : 'FAIL'}  ${check.name}: ${check.detail}\n`);
      return checks.some((c) => !c.ok) ? exitCodes.failure : exitCodes.ok;
    }
    case 'ceph setup': {
      const { cephSetup } = await import('./ceph/setup.ts');
      const changes = await cephSetup(loadConfig(configPath, dataDir), (line) => err(`ceph setup: ${line}\n`));
      out(changes.length ? changes.map((c) => `changed: ${c}`).join('\n') + '\n' : 'nothing to change: pools, users, caps and keyrings are as configured\n');
      return exitCodes.ok;
    }
    case 'ceph-lab':
      return cephLab(positionals[0]!, positionals[1]!);
  }
  throw new Error(`command '${name}' is declared but not run`);
}

async function cephLab(action: string, dir: string): Promise<number> {
  if (!['up', 'down', 'purge', 'status'].includes(action)) {
    throw new UsageError(`ceph-lab: unknown action '${action}'${didYouMean(action, ['up', 'down', 'purge', 'status']) ?? ''}; actions: up, down, purge, status`, "see 'pumice ceph-lab --help'");
  }
  const lab = await import('./ceph/lab.ts');
  const started = Date.now();
  const took = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
  if (action === 'up') {
    const ready = await lab.labUp(dir, { log: (m) => err(`ceph-lab: ${m}\n`) });
    out(`conf: ${ready.confPath}\nfsid: ${ready.fsid}\nready in ${took()}\n`);
  } else if (action === 'down') {
    await lab.labDown(dir);
    out(`stopped in ${took()}\n`);
  } else if (action === 'purge') {
    await lab.labPurge(dir);
    out(`purged in ${took()}\n`);
  } else {
    const status = await lab.labStatus(dir);
    out(`running: ${status.running ? 'yes' : 'no'}\nhealth: ${status.health}\n`);
    if (!status.running) return exitCodes.failure;
  }
  return exitCodes.ok;
}

/** Maps an error to its message and exit code (README "Exit codes"). */
function reportError(error: unknown): number {
  if (error instanceof UsageError) {
    err(`pumice: ${error.message}\n(${error.helpHint})\n`);
    return exitCodes.usage;
  }
  if (error instanceof ConfigError) {
    err(`pumice: configuration error: ${error.message}\n`);
    return exitCodes.config;
  }
  if (error instanceof DataDirError || error instanceof AdminPasswordConflict) {
    err(`pumice: ${error.message}\n`);
    return exitCodes.config;
  }
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') {
    err(`pumice: the address is in use: ${(error as Error).message}. Stop the other server or pass --listen with a free port (e.g. --listen :5001).\n`);
    return exitCodes.addressInUse;
  }
  err(`pumice: ${(error as Error).message}\n`);
  return exitCodes.failure;
}

async function serve(dataDir: string, configPath: string | null, listen: { host: string; port: number }, roles: Role[], hostName: string | undefined): Promise<void> {
  if (roles.length === 1 && roles[0] === 'compute') return serveComputeHost(dataDir, configPath, hostName);
  const pumice = await startPumice({ dataDir, configPath, host: listen.host, port: listen.port, roles, ...(hostName ? { hostName } : {}) });
  // Never the password itself: stdout goes to the journal under systemd.
  if (pumice.generatedAdminPassword) out(`the admin user was created with a generated password: it is in ${pumice.openrcPath} (mode 0600, OS_PASSWORD)\n`);
  out(`credentials: source ${pumice.openrcPath}\n`);
  if (pumice.url) out(`Pumice ${pumiceVersion()} ready at ${pumice.url} (identity ${pumice.url}/identity/v3, block storage ${pumice.url}/volume/v3)\n`);
  else out(`Pumice ${pumiceVersion()} host ${pumice.config.DEFAULT.host} ready with roles ${roles.join(',')} (no API listener)\n`);
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    err(`${signal}: stopping\n`);
    pumice.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        err(`stop failed: ${(error as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', reload);
}

async function serveComputeHost(dataDir: string, configPath: string | null, hostName: string | undefined): Promise<void> {
  const host = await startComputeHost({ dataDir, configPath, host: '127.0.0.1', port: 0, roles: ['compute'], ...(hostName ? { hostName } : {}) });
  out(`Pumice compute host ${host.config.DEFAULT.host} ready (compute agent on ${dataDir})\n`);
  // The agent's timers are unref'd (they must not hold an all-roles process open); a compute-only process has no listener, so this keeps it running.
  const keepAlive = setInterval(() => undefined, 1 << 30);
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    clearInterval(keepAlive);
    err(`${signal}: stopping the compute agent (guests keep running)\n`);
    host.stop().then(() => process.exit(0), (error: unknown) => {
      err(`stop failed: ${(error as Error).message}\n`);
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', reload);
}

/**
 * SIGHUP (systemd's ExecReload, logrotate's postrotate): reopen the events file by name. Before,
 * Node's default action ended the process. Configuration is read at start only: changing it needs
 * a restart, which the log line says.
 */
function reload(): void {
  const reopened = reopenEventLog();
  err(`${new Date().toISOString()} SIGHUP: ${reopened ? 'events file reopened' : 'no events file open'}; configuration changes (including [oslo_policy] policy_file) take effect at the next restart\n`);
}

/** Used by tests: the declared commands (each has --help) and the delegated ones. */
export const commandNames = [...commands.map((c) => c.name), ...Object.keys(delegated)];
export const delegatedCommandNames = Object.keys(delegated);
