/**
 * How operator commands (`pumice image import`, `pumice backup ...`) talk to
 * a running Pumice: the same credentials as the `openstack` CLI (OS_* from
 * the environment, else the data directory's admin-openrc), a password token
 * from Identity v3, and endpoints looked up in the token's catalog.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CloudCredentials {
  authUrl: string;
  username: string;
  password: string;
  projectName: string;
  userDomainName: string;
  projectDomainName: string;
  regionName: string | null;
  interfaceName: string;
}

/** A request that did not succeed; the message is the API's own fault message. */
export class CloudError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

function parseOpenrc(text: string): Record<string, string> {
  const values: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*export\s+(OS_[A-Z_]+)=(.*)$/.exec(line);
    if (!m) continue;
    let value = m[2]!.trim();
    if ((value.startsWith("'") && value.endsWith("'")) || (value.startsWith('"') && value.endsWith('"'))) value = value.slice(1, -1);
    values[m[1]!] = value;
  }
  return values;
}

/**
 * OS_* variables win when OS_AUTH_URL is set (as for the openstack CLI);
 * otherwise DATA_DIR/admin-openrc, which `pumice serve` writes.
 */
export function loadCredentials(env: NodeJS.ProcessEnv, dataDir: string): CloudCredentials {
  let values: Record<string, string | undefined> = env;
  if (!env['OS_AUTH_URL']) {
    const openrc = join(dataDir, 'admin-openrc');
    if (!existsSync(openrc)) {
      throw new CloudError(
        `no credentials: OS_AUTH_URL is not set and ${openrc} does not exist; source an openrc file, or pass --data-dir of a running 'pumice serve'`,
        0,
      );
    }
    values = parseOpenrc(readFileSync(openrc, 'utf8'));
  }
  const need = (name: string): string => {
    const value = values[name];
    if (!value) throw new CloudError(`no credentials: ${name} is not set (source an openrc file)`, 0);
    return value;
  };
  return {
    authUrl: need('OS_AUTH_URL').replace(/\/+$/, ''),
    username: need('OS_USERNAME'),
    password: need('OS_PASSWORD'),
    projectName: need('OS_PROJECT_NAME'),
    userDomainName: values['OS_USER_DOMAIN_NAME'] ?? 'Default',
    projectDomainName: values['OS_PROJECT_DOMAIN_NAME'] ?? 'Default',
    regionName: values['OS_REGION_NAME'] ?? null,
    interfaceName: values['OS_INTERFACE'] ?? 'public',
  };
}

interface CatalogEntry {
  type: string;
  endpoints: { interface: string; region_id?: string; region?: string; url: string }[];
}

export async function faultMessage(response: Response): Promise<string> {
  const text = await response.text().catch(() => '');
  try {
    const body = JSON.parse(text) as Record<string, { message?: string; title?: string }>;
    const fault = Object.values(body)[0];
    if (fault && typeof fault === 'object' && (fault.message || fault.title)) return `${response.status}: ${fault.message ?? fault.title}`;
  } catch {
    // not JSON: fall through to the raw text
  }
  return `${response.status}: ${text.slice(0, 500) || response.statusText}`;
}

export class CloudSession {
  private constructor(
    readonly token: string,
    readonly projectId: string,
    private readonly catalog: CatalogEntry[],
    private readonly credentials: CloudCredentials,
  ) {}

  static async login(credentials: CloudCredentials): Promise<CloudSession> {
    const url = `${credentials.authUrl}/auth/tokens`;
    let response: Response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          auth: {
            identity: {
              methods: ['password'],
              password: { user: { name: credentials.username, password: credentials.password, domain: { name: credentials.userDomainName } } },
            },
            scope: { project: { name: credentials.projectName, domain: { name: credentials.projectDomainName } } },
          },
        }),
      });
    } catch (error) {
      throw new CloudError(`cannot reach the identity service at ${url}: ${(error as Error).cause ?? (error as Error).message}; is 'pumice serve' running there?`, 0);
    }
    if (response.status !== 201) throw new CloudError(`login at ${url} failed: ${await faultMessage(response)}`, response.status);
    const token = response.headers.get('x-subject-token');
    const body = (await response.json()) as { token: { project?: { id: string }; catalog?: CatalogEntry[] } };
    if (!token || !body.token.project) throw new CloudError(`login at ${url} gave no project-scoped token`, response.status);
    return new CloudSession(token, body.token.project.id, body.token.catalog ?? [], credentials);
  }

  /** The endpoint URL of a service type (e.g. 'image', 'volumev3'), without a trailing slash. */
  endpoint(type: string): string {
    const entry = this.catalog.find((e) => e.type === type);
    const region = this.credentials.regionName;
    const endpoint = entry?.endpoints.find(
      (e) => e.interface === this.credentials.interfaceName && (!region || (e.region_id ?? e.region) === region),
    );
    if (!endpoint) throw new CloudError(`the catalog has no ${this.credentials.interfaceName} endpoint of type '${type}'${region ? ` in region ${region}` : ''}`, 0);
    return endpoint.url.replace(/\/+$/, '');
  }

  /**
   * A volume named by ID or by name, as the openstack CLI resolves it: the ID first, then an
   * exact name in the project; several volumes of that name are an error listing their IDs.
   */
  async findVolume(nameOrId: string): Promise<{ id: string; name: string | null }> {
    const base = `${this.endpoint('volumev3')}/volumes`;
    try {
      const byId = await this.request('GET', `${base}/${encodeURIComponent(nameOrId)}`);
      const volume = ((await byId.json()) as { volume: { id: string; name: string | null } }).volume;
      return { id: volume.id, name: volume.name };
    } catch (error) {
      if (!(error instanceof CloudError) || (error.status !== 404 && error.status !== 400)) throw error;
    }
    const listed = await this.request('GET', `${base}?name=${encodeURIComponent(nameOrId)}`);
    const matches = ((await listed.json()) as { volumes: { id: string; name: string | null }[] }).volumes.filter((v) => v.name === nameOrId);
    if (matches.length === 1) return { id: matches[0]!.id, name: matches[0]!.name };
    if (matches.length === 0) throw new CloudError(`no volume with ID or name '${nameOrId}' in this project (openstack volume list shows them)`, 404);
    throw new CloudError(`${matches.length} volumes are named '${nameOrId}' (${matches.map((v) => v.id).join(', ')}): pass the ID instead`, 409);
  }

  /** fetch with the token; non-2xx answers become CloudError with the API's message. */
  async request(method: string, url: string, init: { json?: unknown; body?: RequestInit['body']; headers?: Record<string, string> } = {}): Promise<Response> {
    const headers: Record<string, string> = { 'x-auth-token': this.token, ...init.headers };
    let body = init.body;
    if (init.json !== undefined) {
      headers['content-type'] ??= 'application/json';
      body = JSON.stringify(init.json);
    }
    let response: Response;
    try {
      // duplex 'half' lets a ReadableStream body stream instead of being buffered.
      response = await fetch(url, { method, headers, body, duplex: 'half' } as RequestInit);
    } catch (error) {
      throw new CloudError(`${method} ${url} failed: ${(error as Error).cause ?? (error as Error).message}`, 0);
    }
    if (response.status >= 400) throw new CloudError(`${method} ${url} failed: ${await faultMessage(response)}`, response.status);
    return response;
  }
}
