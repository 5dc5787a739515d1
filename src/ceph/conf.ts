/**
 * Reading a client's Ceph configuration the way librados does, to check it
 * up front and explain problems (scenario §8: a missing ceph.conf shows up
 * as "error calling conf_read_file: errno EINVAL"; a missing keyring as
 * "error connecting to the cluster").
 */
import { accessSync, constants, readFileSync, statSync } from 'node:fs';

export interface CephClientSettings {
  confPath: string;
  clusterName: string;
  user: string;
  /** The keyring file that will be used, and where the choice came from. */
  keyringPath: string;
  keyringSource: 'option' | 'ceph.conf' | 'default';
  monHost: string | null;
}

export class CephConfigProblem extends Error {
  constructor(
    readonly kind: 'ConfMissing' | 'ConfUnreadable' | 'KeyringMissing' | 'KeyringUnreadable' | 'NoMonHost',
    message: string,
  ) {
    super(message);
  }
}

/** Parses a ceph.conf into sections with normalised keys (spaces, dashes and underscores are the same to Ceph). */
export function parseCephConf(text: string): Map<string, Map<string, string>> {
  const sections = new Map<string, Map<string, string>>();
  let current = new Map<string, string>();
  sections.set('global', current);
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/[#;].*$/, '').trim();
    if (!line) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      const name = header[1]!.trim();
      current = sections.get(name) ?? new Map();
      sections.set(name, current);
      continue;
    }
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    current.set(normaliseKey(line.slice(0, eq)), line.slice(eq + 1).trim());
  }
  return sections;
}

function normaliseKey(key: string): string {
  return key.trim().toLowerCase().replace(/[\s-]+/g, '_');
}

/**
 * Resolves where librados will look for the user's keyring: an explicit
 * option, else the `keyring` setting of ceph.conf (client.NAME, client,
 * global), else `/etc/ceph/<cluster>.client.<user>.keyring`. Throws a
 * CephConfigProblem naming the file and the fix when something is missing.
 */
export function resolveCephClient(options: { confPath: string; user: string; clusterName?: string; keyringPath?: string | null }): CephClientSettings {
  const clusterName = options.clusterName ?? 'ceph';
  const confPath = options.confPath || `/etc/ceph/${clusterName}.conf`;
  let text: string;
  try {
    statSync(confPath);
  } catch {
    throw new CephConfigProblem(
      'ConfMissing',
      `Ceph configuration ${confPath} not found (librados reports this as "error calling conf_read_file: errno EINVAL"): copy /etc/ceph/${clusterName}.conf from a monitor host, or set rbd_ceph_conf to its path.`,
    );
  }
  try {
    text = readFileSync(confPath, 'utf8');
  } catch (error) {
    throw new CephConfigProblem('ConfUnreadable', `Ceph configuration ${confPath} is not readable by this process: ${(error as Error).message}. Fix its permissions (chmod 644).`);
  }
  const conf = parseCephConf(text);
  const lookup = (key: string): string | undefined =>
    conf.get(`client.${options.user}`)?.get(key) ?? conf.get('client')?.get(key) ?? conf.get('global')?.get(key);
  const monHost = lookup('mon_host') ?? null;
  if (!monHost) {
    throw new CephConfigProblem('NoMonHost', `Ceph configuration ${confPath} has no 'mon host' setting: the client cannot find the monitors. Copy the file from a monitor host.`);
  }
  let keyringPath: string;
  let keyringSource: CephClientSettings['keyringSource'];
  if (options.keyringPath) {
    keyringPath = options.keyringPath;
    keyringSource = 'option';
  } else {
    const fromConf = lookup('keyring');
    if (fromConf) {
      // ceph.conf may list several comma-separated candidates with $cluster and $name.
      const candidates = fromConf.split(',').map((p) => p.trim().replace(/\$cluster/g, clusterName).replace(/\$name/g, `client.${options.user}`));
      keyringPath = candidates.find((p) => existsReadable(p)) ?? candidates[0]!;
      keyringSource = 'ceph.conf';
    } else {
      keyringPath = `/etc/ceph/${clusterName}.client.${options.user}.keyring`;
      keyringSource = 'default';
    }
  }
  const fetch = `ceph auth get client.${options.user} -o ${keyringPath}`;
  try {
    statSync(keyringPath);
  } catch {
    throw new CephConfigProblem(
      'KeyringMissing',
      `keyring ${keyringPath} for client.${options.user} not found (Ceph reports this as "error connecting to the cluster"): copy it from a monitor host (${fetch}).`,
    );
  }
  if (!existsReadable(keyringPath)) {
    throw new CephConfigProblem('KeyringUnreadable', `keyring ${keyringPath} for client.${options.user} is not readable by this process: fix its owner or mode (it must be readable by the user running Pumice).`);
  }
  return { confPath, clusterName, user: options.user, keyringPath, keyringSource, monHost };
}

function existsReadable(path: string): boolean {
  try {
    accessSync(path, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/** Monitor addresses from a `mon host` value: `[v2:1.2.3.4:3300,v1:1.2.3.4:6789] 5.6.7.8` → v1 host/port pairs. */
export function monitorAddresses(monHost: string): { host: string; port: number }[] {
  const result: { host: string; port: number }[] = [];
  const groups = monHost.match(/\[[^\]]*\]|[^\s,;\[\]]+/g) ?? [];
  for (const group of groups) {
    if (group.startsWith('[')) {
      const addrs = group.slice(1, -1).split(',');
      const v1 = addrs.find((a) => a.startsWith('v1:')) ?? addrs.find((a) => !a.startsWith('v2:'));
      const chosen = (v1 ?? addrs[0] ?? '').replace(/^v[12]:/, '');
      const parsed = splitHostPort(chosen, v1 ? 6789 : 3300);
      if (parsed) result.push(parsed);
    } else {
      const parsed = splitHostPort(group.replace(/^v1:/, ''), 6789);
      if (parsed) result.push(parsed);
    }
  }
  return result;
}

function splitHostPort(value: string, defaultPort: number): { host: string; port: number } | null {
  if (!value) return null;
  const withoutNonce = value.replace(/\/\d+$/, '');
  const m = /^(.*):(\d+)$/.exec(withoutNonce);
  if (m && !m[1]!.includes(':')) return { host: m[1]!, port: Number(m[2]) };
  return { host: withoutNonce, port: defaultPort };
}
