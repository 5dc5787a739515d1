/**
 * Where a command finds its data directory and configuration file. On the command line the
 * defaults stay what they were (./data, embedded defaults); run as a service (`--service`,
 * PUMICE_SERVICE=1, which the systemd unit sets) they are the packaged locations,
 * /var/lib/pumice and /etc/pumice/pumice.conf, or the directories systemd hands over.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const serviceConfigPath = '/etc/pumice/pumice.conf';
export const serviceStateDir = '/var/lib/pumice';

export interface ResolvedPaths {
  dataDir: string;
  /** null: the embedded defaults. */
  configPath: string | null;
}

export function isServiceMode(flag: boolean | undefined, env: NodeJS.ProcessEnv = process.env): boolean {
  return flag === true || env['PUMICE_SERVICE'] === '1';
}

/**
 * Explicit values win (--data-dir, --config), then PUMICE_DATA_DIR / PUMICE_CONFIG, then the
 * service locations (systemd's STATE_DIRECTORY / CONFIGURATION_DIRECTORY first) in service
 * mode, then ./data and the embedded defaults. A service without a configuration file runs
 * on the embedded defaults, as the command line does.
 */
export function resolvePaths(options: { dataDir?: string; config?: string; service: boolean }, env: NodeJS.ProcessEnv = process.env): ResolvedPaths {
  const firstOf = (list: string | undefined) => list?.split(':').find((p) => p.length > 0);
  const serviceConfig = join(firstOf(env['CONFIGURATION_DIRECTORY']) ?? '/etc/pumice', 'pumice.conf');
  const dataDir = options.dataDir ?? env['PUMICE_DATA_DIR'] ?? (options.service ? (firstOf(env['STATE_DIRECTORY']) ?? serviceStateDir) : 'data');
  const config = options.config ?? env['PUMICE_CONFIG'] ?? (options.service && existsSync(serviceConfig) ? serviceConfig : undefined);
  return { dataDir: resolve(dataDir), configPath: config ? resolve(config) : null };
}
