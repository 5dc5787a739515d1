/**
 * `pumice backup ...`: operator commands against a running Pumice (see
 * src/cli/session.ts). `create --wait` and `watch` follow a backup's
 * `progress` field with the progress bar of src/cli/progress.ts until it is
 * available, print the fail reason and exit 1 when it fails.
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createProgressBar, type ProgressBar } from '../cli/progress.ts';
import { CloudError, CloudSession, loadCredentials } from '../cli/session.ts';
import { backupProgressHeader } from './records.ts';
import { parseArgsMessage } from '../cli/args.ts';

const usage = `usage: pumice backup <command> [options]

commands:
  create --volume NAME|ID [--incremental] [--force] [--name NAME] [--wait]
                 create a backup of a volume; --wait follows it like watch
  watch ID       follow a backup that is being created or restored, with a progress bar,
                 until it is available (exit 0) or fails (its reason, exit 1)

options:
  --data-dir DIR      where to find admin-openrc when OS_AUTH_URL is not set (default: ./data, or $PUMICE_DATA_DIR)
  --interval-ms N     milliseconds between two polls (default 500)
  --timeout-s N       give up waiting after N seconds (default 86400), exit 1

example:
  pumice backup create --volume db-disk --incremental --wait
`;

const GiB = 1024 ** 3;
/** Statuses during which the backup is still moving bytes (or going away). */
const busyStatuses = new Set(['creating', 'restoring', 'deleting']);

interface BackupBody {
  id: string;
  name: string | null;
  status: string;
  size: number;
  fail_reason: string | null;
  /** From the show's Pumice-Backup-Progress header, not the body. */
  progress?: string | null;
}

class UsageError extends Error {}

export async function runCli(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: rest,
      options: {
        volume: { type: 'string' },
        incremental: { type: 'boolean' },
        force: { type: 'boolean' },
        name: { type: 'string' },
        wait: { type: 'boolean' },
        'data-dir': { type: 'string' },
        'interval-ms': { type: 'string' },
        'timeout-s': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: true,
    }));
  } catch (error) {
    process.stderr.write(`pumice backup: ${parseArgsMessage(error, usage)}\n\n${usage}`);
    return 2;
  }
  if (!command) {
    process.stderr.write(usage);
    return 2;
  }
  if (command === 'help' || command === '--help' || command === '-h' || values['help']) {
    process.stdout.write(usage);
    return 0;
  }
  try {
    const intervalMs = positiveNumber(values['interval-ms'], 500, '--interval-ms');
    const timeoutMs = positiveNumber(values['timeout-s'], 86_400, '--timeout-s') * 1000;
    const dataDir = resolve((values['data-dir'] as string | undefined) ?? process.env['PUMICE_DATA_DIR'] ?? 'data');
    if (command === 'create') {
      if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
      const volumeRef = values['volume'];
      if (typeof volumeRef !== 'string' || !volumeRef) throw new UsageError('create needs --volume NAME or ID');
      const session = await CloudSession.login(loadCredentials(process.env, dataDir));
      const volumeId = (await session.findVolume(volumeRef)).id;
      const url = `${session.endpoint('volumev3')}/backups`;
      const response = await session.request('POST', url, {
        json: { backup: { volume_id: volumeId, name: (values['name'] as string | undefined) ?? null, incremental: !!values['incremental'], force: !!values['force'] } },
      });
      const created = ((await response.json()) as { backup: { id: string } }).backup;
      process.stdout.write(`backup ${created.id} of volume ${volumeId} is being created${values['incremental'] ? ' (incremental)' : ''}\n`);
      return values['wait'] ? await watch(session, created.id, intervalMs, timeoutMs) : 0;
    }
    if (command === 'watch') {
      if (positionals.length !== 1) throw new UsageError('watch needs exactly one backup ID');
      const session = await CloudSession.login(loadCredentials(process.env, dataDir));
      return await watch(session, positionals[0]!, intervalMs, timeoutMs);
    }
    throw new UsageError(`unknown command '${command}'`);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`pumice backup: ${error.message}\n\n${usage}`);
      return 2;
    }
    if (error instanceof CloudError) {
      process.stderr.write(`pumice backup: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

function positiveNumber(value: unknown, fallback: number, option: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${option} '${String(value)}' is not a positive number`);
  return n;
}

/** '42% (450887680/1073741824 bytes)' → bytes done and total; null before the first report. */
export function parseProgress(progress: string | null | undefined): { doneBytes: number; totalBytes: number } | null {
  const m = /\((\d+)\/(\d+) bytes\)/.exec(progress ?? '');
  return m ? { doneBytes: Number(m[1]), totalBytes: Number(m[2]) } : null;
}

/**
 * Polls the backup until it is no longer creating, restoring or deleting.
 * Exit code 0 when it ends available (or deleted), 1 when it ends in error
 * or its restore failed (the reason is printed), or when the timeout passes.
 */
async function watch(session: CloudSession, backupId: string, intervalMs: number, timeoutMs: number): Promise<number> {
  const url = `${session.endpoint('volumev3')}/backups/${encodeURIComponent(backupId)}`;
  const deadline = Date.now() + timeoutMs;
  let bar: ProgressBar | null = null;
  let barStatus = '';
  let seenBusy = false;
  for (;;) {
    let backup: BackupBody;
    try {
      const response = await session.request('GET', url);
      backup = { ...((await response.json()) as { backup: BackupBody }).backup, progress: response.headers.get(backupProgressHeader) };
    } catch (error) {
      if (error instanceof CloudError && error.status === 404 && seenBusy && barStatus === 'deleting') {
        bar?.finish('deleted');
        return 0;
      }
      throw error;
    }
    const label = `backup ${backup.id}`;
    if (busyStatuses.has(backup.status)) {
      seenBusy = true;
      if (!bar || barStatus !== backup.status) {
        bar?.finish(backup.status);
        bar = createProgressBar({ label: `${label} ${backup.status}`, totalBytes: parseProgress(backup.progress)?.totalBytes ?? backup.size * GiB });
        barStatus = backup.status;
      }
      const progress = parseProgress(backup.progress);
      if (progress) bar.update(progress.doneBytes);
      if (Date.now() > deadline) {
        bar.finish(`still ${backup.status}`);
        process.stderr.write(`pumice backup: backup ${backup.id} is still ${backup.status} after ${timeoutMs / 1000} s; run 'pumice backup watch ${backup.id}' to keep following it\n`);
        return 1;
      }
      await new Promise((resolveSleep) => setTimeout(resolveSleep, intervalMs));
      continue;
    }
    const restoreFailed = barStatus === 'restoring' && backup.status === 'available' && /^restore failed/.test(backup.fail_reason ?? '');
    if (backup.status === 'available' && !restoreFailed) {
      if (bar) {
        bar.update(backup.size * GiB);
        bar.finish(barStatus === 'restoring' ? 'restored; the backup is available' : 'available');
      } else {
        process.stdout.write(`${label} is available\n`);
      }
      return 0;
    }
    bar?.finish(restoreFailed ? 'restore failed' : backup.status);
    process.stderr.write(`pumice backup: ${label} ${restoreFailed ? 'could not be restored' : `is ${backup.status}`}: ${backup.fail_reason ?? 'no reason was recorded'}\n`);
    return 1;
  }
}
