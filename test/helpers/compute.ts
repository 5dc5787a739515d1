/**
 * Compute test helpers: a Compute API client on top of ApiClient, waits on
 * server states and on the guest's console markers, and the test guest
 * uploaded as a raw image.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ApiClient, openstack, openstackJson } from './pumice.ts';
import { testGuestImage } from './guest.ts';

const execFileAsync = promisify(execFile);
export type Row = Record<string, any>;

export const computeVersion = { 'OpenStack-API-Version': 'compute 2.79' };

export class ComputeClient {
  constructor(readonly api: ApiClient) {}

  static async login(url: string, user: string, password: string, project: string): Promise<ComputeClient> {
    return new ComputeClient(await ApiClient.login(url, user, password, project));
  }

  get projectId(): string {
    return this.api.projectId;
  }

  request(method: string, path: string, body?: unknown, headers: Record<string, string> = computeVersion) {
    return this.api.request(method, `/compute/v2.1${path}`, body, headers);
  }

  async server(id: string): Promise<Row | null> {
    const r = await this.request('GET', `/servers/${id}`);
    if (r.status === 404) return null;
    if (r.status !== 200) throw new Error(`GET server ${id}: ${r.status} ${r.text}`);
    return r.body.server;
  }

  /** Polls until status is one of `statuses` with no task running ('DELETED' waits for a 404). */
  async waitServer(id: string, statuses: string[], timeoutMs = 90_000): Promise<Row | null> {
    const deadline = Date.now() + timeoutMs;
    let last: Row | null = null;
    for (;;) {
      last = await this.server(id);
      if (last === null && statuses.includes('DELETED')) return null;
      if (last && statuses.includes(last['status']) && last['OS-EXT-STS:task_state'] === null) return last;
      if (Date.now() > deadline) throw new Error(`server ${id} did not reach ${statuses.join('/')}: ${JSON.stringify(last)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async console(id: string): Promise<string> {
    const r = await this.request('POST', `/servers/${id}/action`, { 'os-getConsoleOutput': { length: -1 } });
    if (r.status !== 200) throw new Error(`console of ${id}: ${r.status} ${r.text}`);
    return r.body.output as string;
  }

  /** Waits until `pattern` occurs at least `count` times in the console log; returns the log. */
  async waitConsole(id: string, pattern: RegExp, count = 1, timeoutMs = 60_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    const global = new RegExp(pattern.source, pattern.flags.includes('g') ? pattern.flags : `${pattern.flags}g`);
    for (;;) {
      const log = await this.console(id);
      if ((log.match(global) ?? []).length >= count) return log;
      if (Date.now() > deadline) throw new Error(`console of ${id} never showed ${pattern} x${count}:\n${log.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async waitVolume(id: string, statuses: string[], timeoutMs = 60_000): Promise<Row | null> {
    return this.api.waitVolume(id, statuses, timeoutMs);
  }

  async createVolume(body: Row): Promise<string> {
    const r = await this.api.request('POST', `/volume/v3/${this.projectId}/volumes`, { volume: body });
    if (r.status !== 202) throw new Error(`volume create: ${r.status} ${r.text}`);
    return r.body.volume.id;
  }

  async volume(id: string): Promise<Row> {
    const r = await this.api.request('GET', `/volume/v3/${this.projectId}/volumes/${id}`, undefined, { 'OpenStack-API-Version': 'volume 3.60' });
    if (r.status !== 200) throw new Error(`volume ${id}: ${r.status} ${r.text}`);
    return r.body.volume;
  }
}

/** Uploads the test guest as a public raw image; returns its id. */
export async function uploadGuestImage(api: ApiClient, name = 'test-guest'): Promise<string> {
  const path = await testGuestImage();
  const created = await api.request('POST', '/image/v2/images', { name, disk_format: 'raw', container_format: 'bare', visibility: 'public' });
  if (created.status !== 201) throw new Error(`image create: ${created.status} ${created.text}`);
  const id = created.body.id as string;
  await execFileAsync('curl', ['-sf', '-T', path, '-H', `X-Auth-Token: ${api.token}`, '-H', 'Content-Type: application/octet-stream', `${api.url}/image/v2/images/${id}/file`], { timeout: 120_000 });
  for (let i = 0; i < 600; i++) {
    const r = await api.request('GET', `/image/v2/images/${id}`);
    if (r.body?.status === 'active') return id;
    if (r.body?.status === 'killed') throw new Error(`image ${id} upload failed`);
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`image ${id} never became active`);
}

/** Pids of QEMU processes whose command line names this instances directory. */
export async function qemuPids(instancesDir: string): Promise<number[]> {
  const { stdout } = await execFileAsync('ps', ['-eo', 'pid=,args='], { maxBuffer: 16 << 20 });
  return stdout
    .split('\n')
    .filter((line) => line.includes('qemu-system') && line.includes(instancesDir))
    .map((line) => Number(line.trim().split(/\s+/)[0]));
}

/**
 * A test's cleanup of the cloud it used: every server deleted (and waited gone), every volume
 * force-deleted, and the guest image deleted once no volume holds a clone of it (retried for a minute).
 */
export async function emptyTheCloud(admin: ComputeClient, osEnv: Record<string, string>, imageId: string): Promise<void> {
  for (const s of (await admin.request('GET', '/servers?all_tenants=1')).body?.servers ?? []) await admin.request('DELETE', `/servers/${s.id}`);
  for (const s of (await admin.request('GET', '/servers?all_tenants=1')).body?.servers ?? []) await admin.waitServer(s.id, ['DELETED'], 90_000).catch(() => undefined);
  for (const v of await openstackJson<Row[]>(osEnv, ['volume', 'list', '--all-projects']).catch(() => [])) await openstack(osEnv, ['volume', 'delete', '--force', v['ID']]).catch(() => undefined);
  const deadline = Date.now() + 60_000;
  while (await openstack(osEnv, ['image', 'delete', imageId]).then(() => false, () => Date.now() < deadline)) await new Promise((r) => setTimeout(r, 1000));
}
