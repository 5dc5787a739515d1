/**
 * `pumice tasks ...`: the operator's view of the task table of a cloud (its
 * configured database: PostgreSQL by `[database] connection`, else
 * DATA_DIR/pumice.db beside a running Pumice; SQLite in WAL mode lets both
 * work at once).
 *
 *   list [--state S] [--kind K] [--resource ID] [--limit N]
 *   show ID          every column, the locks, the payload
 *   retry ID         a failed or cancelled task is queued again (attempts from 0)
 *   cancel ID        a queued task is cancelled; a running one is fenced (stops at its next checkpoint)
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/config.ts';
import { openCloudDatabase, type Db } from '../db/db.ts';
import { PumiceError } from '../errors.ts';
import { TaskAdmin, taskView } from './admin.ts';
import { parseArgsMessage } from '../cli/args.ts';

const usage = `usage: pumice tasks <command> [options]

commands:
  list [--state queued|running|failed|cancelled] [--kind KIND] [--resource ID] [--limit N]
  show ID        a task with its locks, payload, lease and last error
  retry ID       queue a failed or cancelled task again (attempts start from 0)
  cancel ID      cancel a queued task, or fence a running one (it stops at its next checkpoint)

options:
  --data-dir DIR   data directory (default: ./data, or $PUMICE_DATA_DIR)
  --config FILE    configuration, for its [database] connection (default: $PUMICE_CONFIG)
  --json           machine-readable output

example:
  pumice tasks list --state failed --data-dir /var/lib/pumice
  pumice tasks retry 42 --data-dir /var/lib/pumice
`;

class UsageError extends Error {}

export async function runCli(args: string[], out: (text: string) => void = (t) => process.stdout.write(t)): Promise<number> {
  const [command, ...rest] = args;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    out(usage);
    return command === undefined ? 2 : 0;
  }
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: rest,
      options: {
        state: { type: 'string' }, kind: { type: 'string' }, resource: { type: 'string' }, limit: { type: 'string' },
        'data-dir': { type: 'string' }, config: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: true,
    }));
    if (!command || values['help'] || !['list', 'show', 'retry', 'cancel'].includes(command)) throw new UsageError(command && !values['help'] ? `unknown command '${command}'` : '');
  } catch (error) {
    process.stderr.write(`${(error as Error).message ? `pumice tasks: ${parseArgsMessage(error, usage)}\n\n` : ''}${usage}`);
    return values!?.['help'] ? 0 : 2;
  }
  const dataDir = resolve((values['data-dir'] as string | undefined) ?? process.env['PUMICE_DATA_DIR'] ?? 'data');
  let db: Db;
  try {
    const configPath = (values['config'] as string | undefined) ?? process.env['PUMICE_CONFIG'] ?? null;
    db = openCloudDatabase(loadConfig(configPath, dataDir).database.connection, dataDir);
  } catch (error) {
    process.stderr.write(`pumice tasks: ${(error as Error).message}\n`);
    return 1;
  }
  const admin = new TaskAdmin(db);
  try {
    const taskId = () => {
      const id = Number(positionals[0]);
      if (!Number.isInteger(id) || id <= 0) throw new UsageError(`'${command}' needs a task id (pumice tasks list shows them)`);
      return id;
    };
    if (command === 'list') {
      const rows = admin.list({
        state: values['state'] as string | undefined,
        kind: values['kind'] as string | undefined,
        resource: values['resource'] as string | undefined,
        limit: Number(values['limit'] ?? 100),
      });
      if (values['json']) out(`${JSON.stringify(rows.map(taskView), null, 2)}\n`);
      else {
        out(`${'ID'.padEnd(8)}${'STATE'.padEnd(11)}${'KIND'.padEnd(22)}${'QUEUE'.padEnd(16)}${'TRIES'.padEnd(7)}RESOURCE / LAST ERROR\n`);
        for (const r of rows) out(`${String(r.id).padEnd(8)}${r.state.padEnd(11)}${r.kind.padEnd(22)}${r.queue.padEnd(16)}${String(r.attempts).padEnd(7)}${r.resource_id}${r.last_error ? `  ${r.last_error.slice(0, 100)}` : ''}\n`);
      }
      return 0;
    }
    const id = taskId();
    if (command === 'show') {
      // The operator holds the database itself: the payload is shown whole.
      const view = admin.detail(id, { revealSecrets: true });
      out(values['json'] ? `${JSON.stringify(view, null, 2)}\n` : Object.entries(view).map(([k, v]) => `${k.padEnd(16)}${typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}`).join('\n') + '\n');
      return 0;
    }
    if (command === 'retry') {
      const row = admin.retry(id);
      out(`task ${row.id} (${row.kind} ${row.resource_id}) queued again; its resource must be in the state the task expects (reset it first if needed)\n`);
      return 0;
    }
    const { effect } = admin.cancel(id, 'cancelled by pumice tasks cancel');
    out(`task ${id} ${effect === 'fenced' ? 'fenced: it stops at its next checkpoint without writing' : 'cancelled'}; its resource keeps its status (use os-reset_status to change it)\n`);
    return 0;
  } catch (error) {
    if (error instanceof PumiceError) {
      process.stderr.write(`pumice tasks: ${error.status === 404 ? `task ${positionals[0]} does not exist (done tasks are deleted when they finish)` : error.message}\n`);
      return 1;
    }
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`pumice tasks: ${error.message}\n`);
    return 1;
  } finally {
    db.close();
  }
}
