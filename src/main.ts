/**
 * The `pumice` command line: `serve` runs every role in one process,
 * `init` bootstraps a data directory and prints the admin credentials,
 * `check-config` validates a configuration file.
 */
import { reopenEventLog } from './events.ts';
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { allRoles, startComputeHost, startPumice, type Role } from './app.ts';
import { loadConfig } from './config/config.ts';
import { ConfigError } from './config/ini.ts';
import { runDoctor } from './doctor.ts';
import { usePrivateUmask } from './file-modes.ts';

const usage = `usage: pumice <command> [options]

commands:
  serve         run every role (API, scheduler, volume) in one process
  init          create and bootstrap the data directory, print the admin credentials, exit
  check-config  validate a configuration file and exit
  doctor        check every prerequisite of the configuration and name the fix for each failure
  ceph setup    create missing pools and users of the RBD backends, with their caps and keyrings (needs client.admin)
  ceph-lab up|down|purge|status DIR
                a throwaway single-host Ceph cluster in DIR, for tests and demos
  image ...     operator image commands (pumice image --help)
  backup ...    operator backup commands (pumice backup --help)
  tasks ...     list, show, retry or cancel tasks of a data directory (pumice tasks --help)
  db status|upgrade|export|import
                the database's schema version, migrations, and moving SQLite to PostgreSQL (pumice db --help)
  host evacuate HOST [--target H] [--wait]
                evacuate every server of a dead compute host, fenced first (pumice host --help)

options:
  --data-dir DIR       data directory (default: ./data, or $PUMICE_DATA_DIR)
  --listen HOST:PORT   address of the API listener (default: 127.0.0.1:5000)
  --config FILE        INI configuration (default: embedded defaults)
`;

function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(value);
  if (!m) throw new UsageError(`--listen '${value}' is not HOST:PORT (e.g. 127.0.0.1:5000)`);
  const port = Number(m[3]);
  if (port > 65535) throw new UsageError(`--listen port ${port} is out of range`);
  return { host: m[1] ?? m[2]!, port };
}

class UsageError extends Error {}

export async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  // Operator commands that talk to a running Pumice parse their own options.
  if (command === 'image' || command === 'backup') {
    const cli = command === 'image' ? await import('./image/cli.ts') : await import('./backup/cli.ts');
    process.exitCode = await cli.runCli(rest);
    return;
  }
  if (command === 'tasks') {
    process.exitCode = await (await import('./tasks/cli.ts')).runCli(rest);
    return;
  }
  if (command === 'db') {
    process.exitCode = await (await import('./db/cli.ts')).runCli(rest);
    return;
  }
  if (command === 'host') {
    process.exitCode = await (await import('./compute/host-cli.ts')).runHostCli(rest);
    return;
  }
  let values: { 'data-dir'?: string; listen?: string; config?: string; help?: boolean; roles?: string; host?: string };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: rest,
      options: {
        'data-dir': { type: 'string' },
        listen: { type: 'string' },
        config: { type: 'string' },
        roles: { type: 'string' },
        host: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: true,
    }));
    // Only ceph-lab takes positional arguments; the other commands stay strict.
    if (command !== 'ceph-lab' && command !== 'ceph' && positionals.length > 0) throw new TypeError(`Unexpected argument '${positionals[0]}'`);
  } catch (error) {
    process.stderr.write(`pumice: ${(error as Error).message}\n\n${usage}`);
    process.exit(2);
  }
  if (!command || values.help || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(usage);
    return;
  }
  const dataDir = resolve(values['data-dir'] ?? process.env['PUMICE_DATA_DIR'] ?? 'data');
  const configPath = values.config ? resolve(values.config) : null;
  // Every command (serve, a compute-only host, init, doctor, ceph setup) creates private files only.
  // Not the throwaway lab: its files are shared by every test process on the machine, as before.
  if (command !== 'ceph-lab') usePrivateUmask();
  try {
    switch (command) {
      case 'serve':
        return await serve(dataDir, configPath, parseListen(values.listen ?? '127.0.0.1:5000'), parseRoles(values.roles), values.host);
      case 'init': {
        const listen = parseListen(values.listen ?? '127.0.0.1:0');
        const pumice = await startPumice({ dataDir, configPath, host: listen.host, port: listen.port, log: () => undefined });
        await pumice.stop();
        process.stdout.write(`data directory ${dataDir} is ready; credentials in ${pumice.openrcPath}\n`);
        if (pumice.generatedAdminPassword) process.stdout.write(`admin password (shown once): ${pumice.generatedAdminPassword}\n`);
        return;
      }
      case 'doctor': {
        const checks = await runDoctor(configPath, dataDir);
        for (const check of checks) process.stdout.write(`${check.ok ? 'ok  ' : 'FAIL'}  ${check.name}: ${check.detail}\n`);
        if (checks.some((c) => !c.ok)) process.exit(1);
        return;
      }
      case 'check-config':
        loadConfig(configPath, dataDir);
        process.stdout.write(`${configPath ?? '(embedded defaults)'}: OK\n`);
        return;
      case 'ceph': {
        if (positionals[0] !== 'setup' || positionals.length > 1) throw new UsageError('usage: pumice ceph setup --config FILE (needs the admin keyring)');
        const { cephSetup } = await import('./ceph/setup.ts');
        const changes = await cephSetup(loadConfig(configPath, dataDir), (line) => process.stderr.write(`ceph setup: ${line}\n`));
        process.stdout.write(changes.length ? changes.map((c) => `changed: ${c}`).join('\n') + '\n' : 'nothing to change: pools, users, caps and keyrings are as configured\n');
        return;
      }
      case 'ceph-lab': {
        const [action, dir, ...extra] = positionals;
        if (!action || !['up', 'down', 'purge', 'status'].includes(action) || !dir || extra.length > 0) {
          throw new UsageError('ceph-lab takes an action and a directory: pumice ceph-lab up|down|purge|status DIR');
        }
        const lab = await import('./ceph/lab.ts');
        const started = Date.now();
        const took = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
        if (action === 'up') {
          const ready = await lab.labUp(dir, { log: (m) => process.stderr.write(`ceph-lab: ${m}\n`) });
          process.stdout.write(`conf: ${ready.confPath}\nfsid: ${ready.fsid}\nready in ${took()}\n`);
        } else if (action === 'down') {
          await lab.labDown(dir);
          process.stdout.write(`stopped in ${took()}\n`);
        } else if (action === 'purge') {
          await lab.labPurge(dir);
          process.stdout.write(`purged in ${took()}\n`);
        } else {
          const status = await lab.labStatus(dir);
          process.stdout.write(`running: ${status.running ? 'yes' : 'no'}\nhealth: ${status.health}\n`);
          if (!status.running) process.exitCode = 1;
        }
        return;
      }
      default:
        throw new UsageError(`unknown command '${command}'`);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`pumice: ${error.message}\n\n${usage}`);
      process.exit(2);
    }
    if (error instanceof ConfigError) {
      process.stderr.write(`pumice: configuration error: ${error.message}\n`);
      process.exit(3);
    }
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') {
      process.stderr.write(`pumice: the address is in use: ${(error as Error).message}. Stop the other server or pass --listen with a free port.\n`);
      process.exit(4);
    }
    process.stderr.write(`pumice: ${(error as Error).message}\n`);
    process.exit(1);
  }
}

/** `--roles api,compute,...`: every role (the default), or `compute` alone for a host that joins a cloud. */
function parseRoles(value: string | undefined): Role[] {
  if (value === undefined) return [...allRoles];
  const roles = value.split(',').map((r) => r.trim()).filter(Boolean);
  for (const role of roles) {
    if (!(allRoles as readonly string[]).includes(role)) throw new UsageError(`--roles: unknown role '${role}'; roles are ${allRoles.join(', ')}`);
  }
  const all = allRoles.every((r) => roles.includes(r));
  if (!all && !(roles.length === 1 && roles[0] === 'compute')) {
    throw new UsageError(`--roles ${value}: this version runs every role together (the default) or 'compute' alone (a compute host joining a cloud: --roles compute --host NAME --data-dir DIR)`);
  }
  return roles as Role[];
}

async function serve(dataDir: string, configPath: string | null, listen: { host: string; port: number }, roles: Role[], hostName: string | undefined): Promise<void> {
  if (roles.length === 1 && roles[0] === 'compute') return serveComputeHost(dataDir, configPath, hostName);
  const pumice = await startPumice({ dataDir, configPath, host: listen.host, port: listen.port, roles, ...(hostName ? { hostName } : {}) });
  if (pumice.generatedAdminPassword) {
    process.stdout.write(`admin password (shown once, also in ${pumice.openrcPath}): ${pumice.generatedAdminPassword}\n`);
  }
  process.stdout.write(`credentials: source ${pumice.openrcPath}\n`);
  process.stdout.write(`Pumice ready at ${pumice.url} (identity ${pumice.url}/identity/v3, block storage ${pumice.url}/volume/v3)\n`);
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`${signal}: stopping\n`);
    pumice.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        process.stderr.write(`stop failed: ${(error as Error).message}\n`);
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
  process.stdout.write(`Pumice compute host ${host.config.DEFAULT.host} ready (compute agent on ${dataDir})\n`);
  // The agent's timers are unref'd (they must not hold an all-roles process open); a compute-only process has no listener, so this keeps it running.
  const keepAlive = setInterval(() => undefined, 1 << 30);
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    clearInterval(keepAlive);
    process.stderr.write(`${signal}: stopping the compute agent (guests keep running)\n`);
    host.stop().then(() => process.exit(0), (error: unknown) => {
      process.stderr.write(`stop failed: ${(error as Error).message}\n`);
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
  process.stderr.write(`${new Date().toISOString()} SIGHUP: ${reopened ? 'events file reopened' : 'no events file open'}; configuration changes (including [oslo_policy] policy_file) take effect at the next restart\n`);
}
