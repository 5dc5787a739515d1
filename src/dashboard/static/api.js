// The dashboard's only way to the cloud: the public OpenStack APIs, with the user's own token.
// The token lives in sessionStorage (this tab only, gone when it closes), never in a URL.

const sessionKey = 'pumice.session';
const volumeMicroversion = 'volume 3.60';

/** An API call that failed: `message` is the fault's message as the API gave it. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function loadSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(sessionKey) ?? 'null');
    if (!session || Date.parse(session.expiresAt) <= Date.now()) return null;
    return session;
  } catch {
    return null;
  }
}

function saveSession(session) {
  if (session) sessionStorage.setItem(sessionKey, JSON.stringify(session));
  else sessionStorage.removeItem(sessionKey);
}

/** The message of an OpenStack fault body: `{"badRequest": {"message"}}`, Keystone's `{"error": {"message"}}`. */
function faultMessage(status, text) {
  try {
    const body = JSON.parse(text);
    if (body && typeof body === 'object') {
      if (typeof body.message === 'string') return body.message;
      for (const value of Object.values(body)) if (value && typeof value.message === 'string') return value.message;
    }
  } catch { /* not JSON: the text itself */ }
  return text.trim() || `HTTP ${status}`;
}

async function send(method, url, { token, body, headers = {} } = {}) {
  let res;
  try {
    res = await fetch(url, {
      method,
      headers: { Accept: 'application/json', ...(token ? { 'X-Auth-Token': token } : {}), ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (error) {
    throw new ApiError(0, `The cloud could not be reached (${error.message}).`);
  }
  const text = await res.text();
  if (!res.ok) throw new ApiError(res.status, faultMessage(res.status, text));
  return { res, body: text ? JSON.parse(text) : null };
}

/** The path of a catalog endpoint on this origin: the dashboard is served by the same listener as the APIs. */
function endpointPath(catalog, ...types) {
  for (const type of types) {
    const service = catalog.find((s) => s.type === type);
    const endpoint = service?.endpoints.find((e) => e.interface === 'public') ?? service?.endpoints[0];
    if (endpoint) return new URL(endpoint.url).pathname.replace(/\/+$/, '');
  }
  return null;
}

function sessionFrom(res, body, domainName) {
  const token = body.token;
  const catalog = token.catalog ?? [];
  return {
    token: res.headers.get('X-Subject-Token'),
    expiresAt: token.expires_at,
    user: { id: token.user.id, name: token.user.name, domain: domainName },
    project: token.project ? { id: token.project.id, name: token.project.name } : null,
    roles: (token.roles ?? []).map((r) => r.name),
    endpoints: {
      identity: endpointPath(catalog, 'identity') ?? '/identity',
      volume: endpointPath(catalog, 'block-storage', 'volumev3'),
      image: endpointPath(catalog, 'image'),
      compute: endpointPath(catalog, 'compute'),
    },
  };
}

/** Password login; lands in the user's default project, or the first one they have a role on. */
export async function login(domainName, userName, password) {
  const { res, body } = await send('POST', '/identity/v3/auth/tokens', {
    body: { auth: { identity: { methods: ['password'], password: { user: { name: userName, domain: { name: domainName }, password } } } } },
  });
  let session = sessionFrom(res, body, domainName);
  if (!session.project) {
    const projects = await listMyProjects(session);
    if (projects.length === 0) {
      await revoke(session.token);
      throw new ApiError(403, `You have no role on any project. Ask an administrator to give ${userName} a role on a project.`);
    }
    session = await rescope(session, projects[0].id);
  }
  saveSession(session);
  return session;
}

export async function listMyProjects(session) {
  const { body } = await send('GET', `${session.endpoints.identity}/v3/auth/projects`, { token: session.token });
  return body.projects.filter((p) => p.enabled !== false).sort((a, b) => a.name.localeCompare(b.name));
}

async function rescope(session, projectId) {
  const { res, body } = await send('POST', `${session.endpoints.identity}/v3/auth/tokens`, {
    body: { auth: { identity: { methods: ['token'], token: { id: session.token } }, scope: { project: { id: projectId } } } },
  });
  const next = sessionFrom(res, body, session.user.domain);
  await revoke(session.token).catch(() => {});
  return next;
}

/** Switches to another project: a new token scoped to it; the old one is revoked. */
export async function switchProject(session, projectId) {
  const next = await rescope(session, projectId);
  saveSession(next);
  return next;
}

function revoke(token) {
  return send('DELETE', '/identity/v3/auth/tokens', { token, headers: { 'X-Subject-Token': token } });
}

/** Revokes the token (Keystone's DELETE /v3/auth/tokens) and forgets the session, even if the revocation fails. */
export async function logout(session) {
  saveSession(null);
  await revoke(session.token);
}

export function forgetSession() {
  saveSession(null);
}

/** A client bound to one session: `api.volume('GET', '/volumes/detail')`. */
export function client(session, onExpired) {
  const exchange = (base, extraHeaders) => async (method, path, body, headers = {}) => {
    if (!base) throw new ApiError(0, 'This cloud\'s catalog has no endpoint for this service.');
    try {
      return await send(method, base + path, { token: session.token, body, headers: { ...extraHeaders, ...headers } });
    } catch (error) {
      if (error.status === 401) onExpired(error.message);
      throw error;
    }
  };
  const call = (base, extraHeaders) => {
    const run = exchange(base, extraHeaders);
    return async (...args) => (await run(...args)).body;
  };
  const volumeExchange = exchange(session.endpoints.volume, { 'OpenStack-API-Version': volumeMicroversion });
  return {
    /** A running backup's or restore's progress, '42% (450887680/1073741824 bytes)': Pumice's header on the backup show (the body is Cinder's). */
    async backupProgress(backupId) {
      const { res } = await volumeExchange('GET', `/backups/${encodeURIComponent(backupId)}`);
      return res.headers.get('Pumice-Backup-Progress');
    },
    identity: call(`${session.endpoints.identity}/v3`, {}),
    volume: call(session.endpoints.volume, { 'OpenStack-API-Version': volumeMicroversion }),
    image: call(session.endpoints.image && `${session.endpoints.image}/v2`, {}),
    compute: call(session.endpoints.compute, { 'X-OpenStack-Nova-API-Version': '2.79' }),
    /** Pumice's own admin APIs on this listener (the time series of the plots). */
    pumice: call('/pumice/v1', {}),
    /**
     * The cloud's health checks with their reasons (oslo.middleware's /healthcheck, detailed for an admin token):
     * what `pumice doctor` finds about the running services, as far as an API shows it. A 503 is an answer here.
     */
    async health() {
      const res = await fetch('/healthcheck', { headers: { Accept: 'application/json', 'X-Auth-Token': session.token }, cache: 'no-store' })
        .catch((error) => { throw new ApiError(0, `The cloud could not be reached (${error.message}).`); });
      const text = await res.text();
      if (res.status !== 200 && res.status !== 503) throw new ApiError(res.status, faultMessage(res.status, text));
      return { healthy: res.status === 200, ...JSON.parse(text) };
    },
    /** PUT of an image's data, streamed from the browser's File, with upload progress (fetch has none). */
    uploadImageData(imageId, file, onProgress) {
      return new Promise((resolveUpload, rejectUpload) => {
        const xhr = new XMLHttpRequest();
        xhr.open('PUT', `${session.endpoints.image}/v2/images/${encodeURIComponent(imageId)}/file`);
        xhr.setRequestHeader('X-Auth-Token', session.token);
        xhr.setRequestHeader('Content-Type', 'application/octet-stream');
        xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
        xhr.onload = () => {
          if (xhr.status >= 200 && xhr.status < 300) return resolveUpload();
          if (xhr.status === 401) onExpired(faultMessage(xhr.status, xhr.responseText));
          rejectUpload(new ApiError(xhr.status, faultMessage(xhr.status, xhr.responseText)));
        };
        xhr.onerror = () => rejectUpload(new ApiError(0, 'The upload was interrupted: the connection to the cloud failed.'));
        xhr.send(file);
      });
    },
  };
}
