// Pumice dashboard: Preact + htm from one ES module, no build step. Each page calls the public
// OpenStack APIs with the user's token (api.js) and shows every fault's message as the API gives it.
import { html, render, useState, useEffect, useRef, useCallback } from '/dashboard/vendor/preact-htm.js';
import { client, forgetSession, loadSession, login, listMyProjects, logout, switchProject } from '/dashboard/api.js';

const pollIntervalMs = 2000;
const base = '/dashboard';
const pages = [
  { path: 'volumes', title: 'Volumes' },
  { path: 'snapshots', title: 'Snapshots' },
  { path: 'backups', title: 'Backups' },
  { path: 'images', title: 'Images' },
  { path: 'quotas', title: 'Quotas' },
  { path: 'instances', title: 'Instances' },
  { path: 'admin', title: 'Admin', admin: true },
  { path: 'volume-types', title: 'Volume types', admin: true },
  { path: 'hypervisors', title: 'Hypervisors', admin: true },
  { path: 'plots', title: 'Plots', admin: true },
];

// ---------------------------------------------------------------- small parts

/**
 * Backups with their progress: the list, plus each running one's progress from its show (a header).
 * `running` tells the poller to look again soon.
 */
async function listBackups(api) {
  const backups = (await api.volume('GET', '/backups/detail')).backups;
  await Promise.all(backups.filter(isRunning).map(async (b) => {
    b.progress = await api.backupProgress(b.id).catch(() => null);
  }));
  return backups;
}
const isRunning = (b) => b.status === 'creating' || b.status === 'restoring';
/** How often a page polls while something it shows is moving (a backup's progress). */
const busyPollIntervalMs = 400;

/** Calls `load` now and every `intervalMs` while the page shows; keeps the last good data beside the last error. */
function usePoll(load, deps, intervalMs = pollIntervalMs, busy = () => false) {
  const [state, setState] = useState({ data: null, error: null });
  const loadRef = useRef(load);
  loadRef.current = load;
  const refresh = useCallback(async () => {
    try {
      const data = await loadRef.current();
      setState({ data, error: null });
      return data;
    } catch (error) {
      setState((s) => ({ data: s.data, error }));
      return null;
    }
  }, []);
  useEffect(() => {
    let stopped = false;
    let timer = null;
    const tick = async () => {
      const data = await refresh();
      if (!stopped && intervalMs) timer = setTimeout(tick, busy(data) ? busyPollIntervalMs : intervalMs);
    };
    tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, deps);
  return { ...state, refresh };
}

function Fault({ error, what }) {
  if (!error) return null;
  return html`<div class="fault" role="alert"><strong>${what ? `${what} failed` : 'Failed'}${error.status ? ` (HTTP ${error.status})` : ''}:</strong> ${error.message}</div>`;
}

function Notice({ text }) {
  return html`<div class="notice" role="status" aria-live="polite">${text ?? ''}</div>`;
}

/** Runs one user action, reporting its outcome as a notice or a fault. */
function useAction() {
  const [outcome, setOutcome] = useState({ error: null, what: null, notice: null });
  const run = async (what, action, notice) => {
    setOutcome({ error: null, what, notice: null });
    try {
      const result = await action();
      setOutcome({ error: null, what, notice: notice ?? `${what}: done.` });
      return result;
    } catch (error) {
      setOutcome({ error, what, notice: null });
      return undefined;
    }
  };
  const view = html`<${Notice} text=${outcome.notice} /><${Fault} error=${outcome.error} what=${outcome.what} />`;
  return [run, view];
}

function StatusBadge({ status }) {
  const s = String(status ?? '').toLowerCase();
  const kind = /error|down|deleting|killed|disabled/.test(s) ? 'bad' : /ing\b/.test(s) ? 'busy' : /available|active|in-use|^up$|enabled/.test(s) ? 'good' : 'busy';
  return html`<span class=${`badge ${kind}`}>${status}</span>`;
}

function Bar({ label, value, max, text }) {
  const percent = max > 0 ? Math.min(100, Math.round((value / max) * 100)) : 0;
  return html`<div class="bar"><progress max="100" value=${percent} aria-label=${label}>${percent}%</progress><span>${text ?? `${percent}%`}</span></div>`;
}

/** A labelled control: `id` is the control's own, so its accessible name is the label alone. */
function Field({ label, id, children }) {
  return html`<div class="field"><label for=${id}>${label}</label>${children}</div>`;
}

const shortId = (id) => (id ? String(id).slice(0, 8) : '');
const when = (iso) => (iso ? new Date(iso).toLocaleString() : '');
/** Parses Pumice's backup progress, '42% (450887680/1073741824 bytes)' or '100%'. */
function backupPercent(progress) {
  const m = /^(\d+)%/.exec(progress ?? '');
  return m ? Number(m[1]) : null;
}

// ---------------------------------------------------------------- login

function Login({ onLogin, reason }) {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const userField = useRef(null);
  useEffect(() => userField.current?.focus(), []);
  const submit = async (e) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    setBusy(true);
    setError(null);
    try {
      onLogin(await login(String(form.get('domain')), String(form.get('user')), String(form.get('password'))));
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return html`<main class="login" id="main">
    <h1>Pumice</h1>
    <p>Log in with your cloud account.</p>
    ${reason && html`<div class="notice" role="status">${reason}</div>`}
    <form onSubmit=${submit} aria-label="Log in">
      <${Field} label="Domain" id="login-domain"><input id="login-domain" name="domain" value="Default" required autocomplete="organization" /><//>
      <${Field} label="User name" id="login-user"><input id="login-user" ref=${userField} name="user" required autocomplete="username" /><//>
      <${Field} label="Password" id="login-password"><input id="login-password" name="password" type="password" required autocomplete="current-password" /><//>
      <button type="submit" disabled=${busy}>${busy ? 'Logging in…' : 'Log in'}</button>
    </form>
    <${Fault} error=${error} what="Log in" />
  </main>`;
}

// ---------------------------------------------------------------- shell

function Shell({ session, api, page, go, onSession, onLogout }) {
  const [projects, setProjects] = useState([]);
  const [error, setError] = useState(null);
  useEffect(() => {
    listMyProjects(session).then(setProjects, setError);
  }, [session.token]);
  const isAdmin = session.roles.includes('admin');
  const change = async (e) => {
    try {
      onSession(await switchProject(session, e.currentTarget.value));
    } catch (err) {
      setError(err);
    }
  };
  const current = pages.find((p) => p.path === page && (!p.admin || isAdmin)) ?? pages[0];
  return html`<div class="shell">
    <a class="skip" href="#main">Skip to content</a>
    <header>
      <span class="brand">Pumice</span>
      <label class="project">Project
        <select onChange=${change} value=${session.project.id}>
          ${(projects.length ? projects : [session.project]).map((p) => html`<option value=${p.id}>${p.name}</option>`)}
        </select>
      </label>
      <span class="who">${session.user.name}${isAdmin ? ' (admin)' : ''}</span>
      <button type="button" onClick=${onLogout}>Log out</button>
    </header>
    <nav aria-label="Pages">
      <ul>${pages.filter((p) => !p.admin || isAdmin).map((p) => html`<li><a href=${`${base}/${p.path}`} aria-current=${p === current ? 'page' : undefined}
        onClick=${(e) => { e.preventDefault(); go(p.path); }}>${p.title}</a></li>`)}</ul>
    </nav>
    <main id="main" tabindex="-1">
      <${Fault} error=${error} what="Projects" />
      <h1>${current.title}</h1>
      <${pageComponents[current.path]} api=${api} session=${session} go=${go} key=${session.token} />
    </main>
  </div>`;
}

// ---------------------------------------------------------------- volumes

function VolumeCreate({ api, onCreated, run }) {
  const [source, setSource] = useState('blank');
  // A new form after each create: Preact sets values as properties, so form.reset() would empty them.
  const [formKey, setFormKey] = useState(0);
  const [choices, setChoices] = useState({ images: [], snapshots: [], backups: [], types: [], zones: [] });
  useEffect(() => {
    Promise.all([
      api.image('GET', '/images?status=active').then((b) => b.images, () => []),
      api.volume('GET', '/snapshots?status=available').then((b) => b.snapshots, () => []),
      api.volume('GET', '/backups/detail').then((b) => b.backups.filter((x) => x.status === 'available'), () => []),
      api.volume('GET', '/types').then((b) => b.volume_types, () => []),
      api.volume('GET', '/os-availability-zone').then((b) => b.availabilityZoneInfo, () => []),
    ]).then(([images, snapshots, backups, types, zones]) => setChoices({ images, snapshots, backups, types, zones }));
  }, [source]);
  const submit = async (e) => {
    e.preventDefault();
    const data = new FormData(e.currentTarget);
    const volume = { size: Number(data.get('size')), name: String(data.get('name')) || null };
    const type = String(data.get('type') ?? '');
    if (type) volume.volume_type = type;
    const zone = String(data.get('zone') ?? '');
    if (zone) volume.availability_zone = zone;
    const from = String(data.get('from') ?? '');
    if (source === 'image') volume.imageRef = from;
    if (source === 'snapshot') volume.snapshot_id = from;
    if (source === 'backup') volume.backup_id = from;
    const created = await run('Create volume', () => api.volume('POST', '/volumes', { volume }), `Volume ${volume.name ?? ''} is being created.`);
    if (created) {
      setFormKey((k) => k + 1);
      setSource('blank');
      onCreated();
    }
  };
  const options = { image: choices.images, snapshot: choices.snapshots, backup: choices.backups }[source] ?? [];
  return html`<section aria-labelledby="create-volume"><h2 id="create-volume">Create a volume</h2>
    <form class="inline" onSubmit=${submit} key=${formKey}>
      <${Field} label="Name" id="volume-name"><input id="volume-name" name="name" /><//>
      <${Field} label="Size (GiB)" id="volume-size"><input id="volume-size" name="size" type="number" min="1" value="1" required /><//>
      <${Field} label="Source" id="volume-source"><select id="volume-source" name="source" value=${source} onChange=${(e) => setSource(e.currentTarget.value)}>
        <option value="blank">Blank</option><option value="image">Image</option><option value="snapshot">Snapshot</option><option value="backup">Backup</option>
      </select><//>
      ${source !== 'blank' && html`<${Field} label=${source[0].toUpperCase() + source.slice(1)} id="volume-from"><select id="volume-from" name="from" required>
        ${options.length === 0 && html`<option value="">No ${source} is available</option>`}
        ${options.map((o) => html`<option value=${o.id}>${o.name || shortId(o.id)}${source !== 'image' && o.size ? ` (${o.size} GiB)` : ''}</option>`)}
      </select><//>`}
      <${Field} label="Type" id="volume-type"><select id="volume-type" name="type"><option value="">Default</option>${choices.types.map((t) => html`<option value=${t.name}>${t.name}</option>`)}</select><//>
      <${Field} label="Availability zone" id="volume-zone"><select id="volume-zone" name="zone"><option value="">Any</option>${choices.zones.map((z) => html`<option value=${z.zoneName} disabled=${!z.zoneState?.available}>${z.zoneName}${z.zoneState?.available ? '' : ' (unavailable)'}</option>`)}</select><//>
      <button type="submit">Create volume</button>
    </form></section>`;
}

/** The form of one row action (extend, snapshot, back up), shown below the table. */
function VolumeActionForm({ action, volume, api, run, done }) {
  const firstField = useRef(null);
  useEffect(() => firstField.current?.focus(), [action, volume.id]);
  const label = volume.name || shortId(volume.id);
  const [servers, setServers] = useState([]);
  useEffect(() => {
    if (action === 'attach') api.compute('GET', '/servers/detail').then((b) => setServers(b.servers.filter((s) => s.status === 'ACTIVE' || s.status === 'SHUTOFF')), () => setServers([]));
  }, [action]);
  const submit = async (e) => {
    e.preventDefault();
    const data = new FormData(e.currentTarget);
    let ok;
    if (action === 'attach') {
      const serverId = String(data.get('server'));
      ok = await run(`Attach ${label}`, () => api.compute('POST', `/servers/${serverId}/os-volume_attachments`, { volumeAttachment: { volumeId: volume.id } }), `Volume ${label} is being attached.`);
    } else if (action === 'upload') {
      const imageName = String(data.get('image_name')) || label;
      ok = await run(`Upload of ${label} to an image`, () => api.volume('POST', `/volumes/${volume.id}/action`, { 'os-volume_upload_image': { image_name: imageName, disk_format: String(data.get('disk_format')), container_format: 'bare', force: false } }),
        `Volume ${label} is being uploaded to image ${imageName}.`);
    } else if (action === 'extend') {
      ok = await run(`Extend ${label}`, () => api.volume('POST', `/volumes/${volume.id}/action`, { 'os-extend': { new_size: Number(data.get('size')) } }), `Volume ${label} is being extended.`);
    } else if (action === 'snapshot') {
      ok = await run(`Snapshot of ${label}`, () => api.volume('POST', '/snapshots', { snapshot: { volume_id: volume.id, name: String(data.get('name')) || null, force: data.get('force') === 'on' } }), `Snapshot of ${label} is being taken.`);
    } else {
      ok = await run(`Backup of ${label}`, () => api.volume('POST', '/backups', { backup: { volume_id: volume.id, name: String(data.get('name')) || null, incremental: data.get('incremental') === 'on', force: true } }), `Backup of ${label} started: its progress shows below.`);
    }
    if (ok !== undefined) done(true);
  };
  const title = { extend: `Extend volume ${label}`, snapshot: `Snapshot volume ${label}`, backup: `Back up volume ${label}`, attach: `Attach volume ${label} to an instance`, upload: `Upload volume ${label} to an image` }[action];
  return html`<section class="panel" aria-labelledby="volume-action"><h2 id="volume-action">${title}</h2>
    <form class="inline" onSubmit=${submit} onKeyDown=${(e) => e.key === 'Escape' && done(false)}>
      ${action === 'extend' && html`<${Field} label="New size (GiB)" id="extend-size"><input id="extend-size" ref=${firstField} name="size" type="number" min=${volume.size + 1} value=${volume.size + 1} required /><//>`}
      ${(action === 'snapshot' || action === 'backup') && html`<${Field} label=${action === 'snapshot' ? 'Snapshot name' : 'Backup name'} id="action-name"><input id="action-name" ref=${firstField} name="name" /><//>`}
      ${action === 'attach' && html`<${Field} label="Instance" id="attach-server"><select id="attach-server" ref=${firstField} name="server" required>
        ${servers.length === 0 && html`<option value="">No running or stopped instance</option>`}${servers.map((s) => html`<option value=${s.id}>${s.name}</option>`)}</select><//>`}
      ${action === 'upload' && html`<${Field} label="New image name" id="upload-image-name"><input id="upload-image-name" ref=${firstField} name="image_name" value=${label} required /><//>
        <${Field} label="Image disk format" id="upload-disk-format"><select id="upload-disk-format" name="disk_format"><option value="raw">raw</option><option value="qcow2">qcow2</option></select><//>`}
      ${action === 'snapshot' && html`<label class="check"><input type="checkbox" name="force" /> Even if attached (force)</label>`}
      ${action === 'backup' && html`<label class="check"><input type="checkbox" name="incremental" /> Incremental</label>`}
      <button type="submit">${{ extend: 'Extend', snapshot: 'Take snapshot', backup: 'Start backup', attach: 'Attach', upload: 'Upload to image' }[action]}</button>
      <button type="button" class="secondary" onClick=${() => done(false)}>Cancel</button>
    </form></section>`;
}

/** Backups still running, with their progress: what "back up" and "restore" show while they work. */
function RunningBackups({ api }) {
  const { data } = usePoll(() => listBackups(api), [], pollIntervalMs, (list) => (list ?? []).some(isRunning));
  const running = (data ?? []).filter(isRunning);
  if (running.length === 0) return null;
  return html`<section aria-labelledby="running-backups"><h2 id="running-backups">Backups in progress</h2>
    <ul class="plain">${running.map((b) => html`<li>${b.status === 'restoring' ? 'Restoring' : 'Backing up'} ${b.name || shortId(b.id)}:
      <${Bar} label=${`Progress of backup ${b.name || b.id}`} value=${backupPercent(b.progress) ?? 0} max=${100} text=${b.progress ?? 'starting'} /></li>`)}</ul></section>`;
}

function VolumesPage({ api }) {
  const volumes = usePoll(() => api.volume('GET', '/volumes/detail').then((b) => b.volumes), []);
  const [run, outcome] = useAction();
  const [pending, setPending] = useState(null);
  // Bumped when an action may have started a backup: the progress panel looks at once, not at its next poll.
  const [backupsSeen, setBackupsSeen] = useState(0);
  const remove = async (v) => {
    if (!confirm(`Delete volume ${v.name || v.id}? Its data is lost.`)) return;
    await run(`Delete ${v.name || shortId(v.id)}`, () => api.volume('DELETE', `/volumes/${v.id}`), `Volume ${v.name || shortId(v.id)} is being deleted.`);
    volumes.refresh();
  };
  const detach = async (v, attachment) => {
    await run(`Detach ${v.name || shortId(v.id)}`, () => api.compute('DELETE', `/servers/${attachment.server_id}/os-volume_attachments/${v.id}`), `Volume ${v.name || shortId(v.id)} is being detached.`);
    volumes.refresh();
  };
  const rows = volumes.data ?? [];
  return html`
    <${VolumeCreate} api=${api} run=${run} onCreated=${volumes.refresh} />
    ${outcome}
    <${Fault} error=${volumes.error} what="Listing volumes" />
    <table aria-label="Volumes">
      <thead><tr><th scope="col">Name</th><th scope="col">ID</th><th scope="col">Size</th><th scope="col">Status</th><th scope="col">Type</th><th scope="col">Bootable</th><th scope="col">Zone</th><th scope="col">Attached to</th><th scope="col">Actions</th></tr></thead>
      <tbody>${rows.map((v) => html`<tr data-volume=${v.name || v.id}>
        <td>${v.name}</td><td><code title=${v.id}>${shortId(v.id)}</code></td><td>${v.size} GiB</td><td><${StatusBadge} status=${v.status} /></td>
        <td>${v.volume_type}</td><td>${v.bootable}</td><td>${v.availability_zone}</td>
        <td>${(v.attachments ?? []).map((a) => html`<code title=${a.server_id}>${shortId(a.server_id)}</code> `)}</td>
        <td class="actions">
          <button type="button" onClick=${() => setPending({ action: 'extend', volume: v })} aria-label=${`Extend ${v.name || v.id}`}>Extend</button>
          <button type="button" onClick=${() => setPending({ action: 'snapshot', volume: v })} aria-label=${`Snapshot ${v.name || v.id}`}>Snapshot</button>
          <button type="button" onClick=${() => setPending({ action: 'backup', volume: v })} aria-label=${`Back up ${v.name || v.id}`}>Back up</button>
          ${v.status === 'available' && html`<button type="button" onClick=${() => setPending({ action: 'attach', volume: v })} aria-label=${`Attach ${v.name || v.id}`}>Attach</button>`}
          ${v.status === 'in-use' && (v.attachments ?? []).map((a) => html`<button type="button" onClick=${() => detach(v, a)} aria-label=${`Detach ${v.name || v.id}`}>Detach</button>`)}
          ${v.status === 'available' && html`<button type="button" onClick=${() => setPending({ action: 'upload', volume: v })} aria-label=${`Upload ${v.name || v.id} to an image`}>Upload to image</button>`}
          <button type="button" class="danger" onClick=${() => remove(v)} aria-label=${`Delete ${v.name || v.id}`}>Delete</button>
        </td></tr>`)}
      </tbody>
    </table>
    ${volumes.data && rows.length === 0 && html`<p>No volumes in this project yet.</p>`}
    ${pending && html`<${VolumeActionForm} ...${pending} api=${api} run=${run} done=${(changed) => { setPending(null); if (changed) { volumes.refresh(); setBackupsSeen((n) => n + 1); } }} />`}
    <${RunningBackups} api=${api} key=${backupsSeen} />`;
}

// ---------------------------------------------------------------- snapshots, backups

function SnapshotsPage({ api }) {
  const snapshots = usePoll(() => api.volume('GET', '/snapshots/detail').then((b) => b.snapshots), []);
  const [run, outcome] = useAction();
  const remove = async (s) => {
    if (!confirm(`Delete snapshot ${s.name || s.id}?`)) return;
    await run(`Delete ${s.name || shortId(s.id)}`, () => api.volume('DELETE', `/snapshots/${s.id}`), `Snapshot ${s.name || shortId(s.id)} is being deleted.`);
    snapshots.refresh();
  };
  return html`${outcome}<${Fault} error=${snapshots.error} what="Listing snapshots" />
    <table aria-label="Snapshots"><thead><tr><th scope="col">Name</th><th scope="col">ID</th><th scope="col">Volume</th><th scope="col">Size</th><th scope="col">Status</th><th scope="col">Created</th><th scope="col">Actions</th></tr></thead>
    <tbody>${(snapshots.data ?? []).map((s) => html`<tr data-snapshot=${s.name || s.id}><td>${s.name}</td><td><code>${shortId(s.id)}</code></td><td><code>${shortId(s.volume_id)}</code></td>
      <td>${s.size} GiB</td><td><${StatusBadge} status=${s.status} /></td><td>${when(s.created_at)}</td>
      <td class="actions"><button type="button" class="danger" onClick=${() => remove(s)} aria-label=${`Delete ${s.name || s.id}`}>Delete</button></td></tr>`)}</tbody></table>
    ${snapshots.data?.length === 0 && html`<p>No snapshots.</p>`}`;
}

function BackupsPage({ api }) {
  const backups = usePoll(() => listBackups(api), [], pollIntervalMs, (list) => (list ?? []).some(isRunning));
  const [run, outcome] = useAction();
  const restore = async (b) => {
    const label = b.name || shortId(b.id);
    await run(`Restore ${label}`, () => api.volume('POST', `/backups/${b.id}/restore`, { restore: { name: `${label}-restored` } }), `Backup ${label} is being restored to a new volume ${label}-restored.`);
    backups.refresh();
  };
  const remove = async (b) => {
    if (!confirm(`Delete backup ${b.name || b.id}?`)) return;
    await run(`Delete ${b.name || shortId(b.id)}`, () => api.volume('DELETE', `/backups/${b.id}`), `Backup ${b.name || shortId(b.id)} is being deleted.`);
    backups.refresh();
  };
  return html`${outcome}<${Fault} error=${backups.error} what="Listing backups" />
    <table aria-label="Backups"><thead><tr><th scope="col">Name</th><th scope="col">ID</th><th scope="col">Volume</th><th scope="col">Size</th><th scope="col">Status</th><th scope="col">Progress</th><th scope="col">Actions</th></tr></thead>
    <tbody>${(backups.data ?? []).map((b) => html`<tr data-backup=${b.name || b.id}><td>${b.name}</td><td><code>${shortId(b.id)}</code></td><td><code>${shortId(b.volume_id)}</code></td>
      <td>${b.size} GiB${b.is_incremental ? ' (incremental)' : ''}</td><td><${StatusBadge} status=${b.status} />${b.fail_reason && html`<div class="reason">${b.fail_reason}</div>`}</td>
      <td>${b.progress ? html`<${Bar} label=${`Progress of backup ${b.name || b.id}`} value=${backupPercent(b.progress) ?? 0} max=${100} text=${b.progress} />` : ''}</td>
      <td class="actions"><button type="button" onClick=${() => restore(b)} disabled=${b.status !== 'available'} aria-label=${`Restore ${b.name || b.id}`}>Restore</button>
        <button type="button" class="danger" onClick=${() => remove(b)} aria-label=${`Delete ${b.name || b.id}`}>Delete</button></td></tr>`)}</tbody></table>
    ${backups.data?.length === 0 && html`<p>No backups.</p>`}`;
}

// ---------------------------------------------------------------- images

const diskFormats = ['raw', 'qcow2', 'vmdk', 'vdi', 'vhd', 'iso'];

function ImageUpload({ api, run, onChange }) {
  const [progress, setProgress] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const data = new FormData(form);
    const file = data.get('file');
    if (!(file instanceof File) || file.size === 0) return run('Upload', () => Promise.reject(new Error('Choose a file to upload (it must not be empty).')));
    const name = String(data.get('name')) || file.name;
    await run(`Upload of ${name}`, async () => {
      const image = await api.image('POST', '/images', { name, disk_format: String(data.get('disk_format')), container_format: 'bare', visibility: 'private' });
      onChange();
      setProgress({ loaded: 0, total: file.size });
      try {
        await api.uploadImageData(image.id, file, (loaded, total) => setProgress({ loaded, total }));
      } finally {
        onChange();
      }
    }, `Image ${name} uploaded.`);
    setProgress(null);
    form.reset();
  };
  return html`<section aria-labelledby="upload-image"><h2 id="upload-image">Upload an image</h2>
    <form class="inline" onSubmit=${submit}>
      <${Field} label="Image name" id="image-name"><input id="image-name" name="name" /><//>
      <${Field} label="Disk format" id="image-format"><select id="image-format" name="disk_format">${diskFormats.map((f) => html`<option value=${f}>${f}</option>`)}</select><//>
      <${Field} label="File" id="image-file"><input id="image-file" name="file" type="file" required /><//>
      <button type="submit" disabled=${progress !== null}>Upload</button>
    </form>
    ${progress && html`<${Bar} label="Upload progress" value=${progress.loaded} max=${progress.total} text=${`${Math.round(progress.loaded / 1048576)} of ${Math.round(progress.total / 1048576)} MiB`} />`}
  </section>`;
}

function ImagesPage({ api, session }) {
  const images = usePoll(() => api.image('GET', '/images?limit=200').then((b) => b.images), []);
  const [run, outcome] = useAction();
  const [managing, setManaging] = useState(null);
  const managed = (images.data ?? []).find((i) => i.id === managing);
  const act = async (i, what, method, path) => {
    await run(`${what} ${i.name || shortId(i.id)}`, () => api.image(method, path), `Image ${i.name || shortId(i.id)}: ${what.toLowerCase()} done.`);
    images.refresh();
  };
  return html`<${ImageUpload} api=${api} run=${run} onChange=${images.refresh} />${outcome}<${Fault} error=${images.error} what="Listing images" />
    <table aria-label="Images"><thead><tr><th scope="col">Name</th><th scope="col">ID</th><th scope="col">Format</th><th scope="col">Size</th><th scope="col">Status</th><th scope="col">Visibility</th><th scope="col">Actions</th></tr></thead>
    <tbody>${(images.data ?? []).map((i) => html`<tr data-image=${i.name || i.id}><td>${i.name}</td><td><code>${shortId(i.id)}</code></td><td>${i.disk_format ?? ''}</td>
      <td>${i.size == null ? '' : `${(i.size / 1048576).toFixed(1)} MiB`}</td><td><${StatusBadge} status=${i.status} /></td><td>${i.visibility}</td>
      <td class="actions">
        ${i.status === 'active' && html`<button type="button" onClick=${() => act(i, 'Deactivate', 'POST', `/images/${i.id}/actions/deactivate`)} aria-label=${`Deactivate ${i.name || i.id}`}>Deactivate</button>`}
        ${i.status === 'deactivated' && html`<button type="button" onClick=${() => act(i, 'Reactivate', 'POST', `/images/${i.id}/actions/reactivate`)} aria-label=${`Reactivate ${i.name || i.id}`}>Reactivate</button>`}
        <button type="button" onClick=${() => setManaging(i.id)} aria-label=${`Sharing and properties of ${i.name || i.id}`}>Sharing and properties</button>
        <button type="button" class="danger" onClick=${() => confirm(`Delete image ${i.name || i.id}?`) && act(i, 'Delete', 'DELETE', `/images/${i.id}`)} aria-label=${`Delete ${i.name || i.id}`}>Delete</button>
      </td></tr>`)}</tbody></table>
    ${managed && html`<${ImagePanel} api=${api} session=${session} image=${managed} key=${managed.id} done=${(changed) => { if (!changed) setManaging(null); images.refresh(); }} />`}`;
}

// ---------------------------------------------------------------- quotas

const quotaLabels = { volumes: 'Volumes', gigabytes: 'Volume storage (GiB)', snapshots: 'Snapshots', backups: 'Backups', backup_gigabytes: 'Backup storage (GiB)' };

function QuotasPage({ api, session }) {
  const quotas = usePoll(() => api.volume('GET', `/os-quota-sets/${session.project.id}?usage=True`).then((b) => b.quota_set), [], 10_000);
  const set = quotas.data ?? {};
  return html`<p>Block storage usage of project ${session.project.name}.</p><${Fault} error=${quotas.error} what="Reading quotas" />
    <dl class="quotas">${Object.entries(quotaLabels).filter(([key]) => set[key]).map(([key, label]) => {
      const q = set[key];
      const used = q.in_use + (q.reserved ?? 0);
      return html`<div><dt>${label}</dt><dd>${q.limit < 0
        ? html`${used} used, no limit`
        : html`<${Bar} label=${`${label} used`} value=${used} max=${q.limit} text=${`${used} of ${q.limit}`} />`}</dd></div>`;
    })}</dl>`;
}

// ---------------------------------------------------------------- admin

function AdminPage({ api }) {
  const volumeServices = usePoll(() => api.volume('GET', '/os-services').then((b) => b.services), []);
  const computeServices = usePoll(() => api.compute('GET', '/os-services').then((b) => b.services), []);
  const identity = usePoll(() => Promise.all([
    api.identity('GET', '/projects').then((b) => b.projects),
    api.identity('GET', '/users').then((b) => b.users),
    api.identity('GET', '/roles').then((b) => b.roles),
  ]), [], 0);
  const [projects, users, roles] = identity.data ?? [[], [], []];
  const serviceRows = (list) => (list ?? []).map((s) => html`<tr data-service=${`${s.binary}@${s.host}`}><td>${s.binary}</td><td>${s.host}</td><td>${s.zone}</td>
    <td><${StatusBadge} status=${s.status} /></td><td><${StatusBadge} status=${s.state} /></td><td class="reason">${s.disabled_reason ?? (s.forced_down ? 'forced down' : '')}</td><td>${when(s.updated_at)}</td></tr>`);
  const serviceTable = (label, list) => html`<table aria-label=${label}><thead><tr><th scope="col">Binary</th><th scope="col">Host</th><th scope="col">Zone</th><th scope="col">Status</th><th scope="col">State</th><th scope="col">Reason</th><th scope="col">Updated</th></tr></thead><tbody>${serviceRows(list)}</tbody></table>`;
  return html`
    <section aria-labelledby="volume-services"><h2 id="volume-services">Block Storage services</h2><${Fault} error=${volumeServices.error} what="Listing Block Storage services" />${serviceTable('Block Storage services', volumeServices.data)}</section>
    <section aria-labelledby="compute-services"><h2 id="compute-services">Compute services</h2><${Fault} error=${computeServices.error} what="Listing Compute services" />${serviceTable('Compute services', computeServices.data)}</section>
    <${HealthChecks} api=${api} />
    <${Fault} error=${identity.error} what="Listing projects, users and roles" />
    <div class="columns">
      <section aria-labelledby="projects"><h2 id="projects">Projects</h2><ul class="plain">${projects.map((p) => html`<li>${p.name} <code>${shortId(p.id)}</code>${p.enabled === false ? ' (disabled)' : ''}</li>`)}</ul></section>
      <section aria-labelledby="users"><h2 id="users">Users</h2><ul class="plain">${users.map((u) => html`<li>${u.name}${u.enabled === false ? ' (disabled)' : ''}</li>`)}</ul></section>
      <section aria-labelledby="roles"><h2 id="roles">Roles</h2><ul class="plain">${roles.map((r) => html`<li>${r.name}</li>`)}</ul></section>
    </div>`;
}

// ---------------------------------------------------------------- instances

/** What evacuating `server` does to its disks, in words: said before the admin confirms. */
function evacuationConsequence(server, volumes) {
  const attached = (server['os-extended-volumes:volumes_attached'] ?? []).map((a) => volumes.find((v) => v.id === a.id)?.name || shortId(a.id));
  const bootFromVolume = !server.image || server.image === '';
  const parts = [`Evacuate instance ${server.name} from host ${server['OS-EXT-SRV-ATTR:host'] ?? '?'}?`,
    'It is rebuilt on another host; the API refuses this while its host is up.'];
  parts.push(attached.length
    ? `Its volumes (${attached.join(', ')}) keep their data: the old host is fenced from them first, then they are attached on the new host.`
    : 'It has no volumes attached.');
  if (!bootFromVolume) parts.push('Its root disk was made from an image: unless it is on shared RBD storage, it is rebuilt from the image and what the guest wrote to it is lost.');
  return parts.join(' ');
}

function InstanceLaunch({ api, run, onLaunched }) {
  const [source, setSource] = useState('volume');
  const [formKey, setFormKey] = useState(0);
  const [choices, setChoices] = useState({ flavors: [], volumes: [], images: [] });
  useEffect(() => {
    Promise.all([
      api.compute('GET', '/flavors/detail').then((b) => b.flavors, () => []),
      api.volume('GET', '/volumes/detail?status=available').then((b) => b.volumes, () => []),
      api.image('GET', '/images?status=active').then((b) => b.images, () => []),
    ]).then(([flavors, volumes, images]) => setChoices({ flavors, volumes, images }));
  }, [formKey]);
  const launch = async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const data = new FormData(form);
    const bootVolume = String(data.get('volume') ?? '');
    const dataVolumes = data.getAll('data_volumes').map(String).filter((id) => id && id !== bootVolume);
    const server = { name: String(data.get('name')), flavorRef: String(data.get('flavor')), networks: 'none' };
    const mappings = dataVolumes.map((uuid) => ({ boot_index: -1, uuid, source_type: 'volume', destination_type: 'volume', delete_on_termination: false }));
    if (source === 'volume') mappings.unshift({ boot_index: 0, uuid: bootVolume, source_type: 'volume', destination_type: 'volume', delete_on_termination: false });
    else server.imageRef = String(data.get('image'));
    if (mappings.length) server.block_device_mapping_v2 = mappings;
    const created = await run(`Launch ${server.name}`, () => api.compute('POST', '/servers', { server }), `Instance ${server.name} is being launched.`);
    if (created) {
      setFormKey((k) => k + 1);
      onLaunched();
    }
  };
  const bootable = choices.volumes.filter((v) => v.bootable === 'true');
  return html`<section aria-labelledby="launch"><h2 id="launch">Launch an instance</h2>
    <form class="inline" onSubmit=${launch} key=${formKey}>
      <${Field} label="Instance name" id="server-name"><input id="server-name" name="name" required /><//>
      <${Field} label="Flavor" id="server-flavor"><select id="server-flavor" name="flavor" required>${choices.flavors.map((f) => html`<option value=${f.id}>${f.name} (${f.vcpus} vCPU, ${f.ram} MiB, ${f.disk} GiB)</option>`)}</select><//>
      <${Field} label="Boot from" id="server-source"><select id="server-source" value=${source} onChange=${(e) => setSource(e.currentTarget.value)}><option value="volume">Volume</option><option value="image">Image</option></select><//>
      ${source === 'volume'
        ? html`<${Field} label="Boot volume" id="server-volume"><select id="server-volume" name="volume" required>${bootable.length === 0 && html`<option value="">No bootable volume is available</option>`}${bootable.map((v) => html`<option value=${v.id}>${v.name || shortId(v.id)}</option>`)}</select><//>`
        : html`<${Field} label="Boot image" id="server-image"><select id="server-image" name="image" required>${choices.images.length === 0 && html`<option value="">No active image</option>`}${choices.images.map((i) => html`<option value=${i.id}>${i.name || shortId(i.id)}</option>`)}</select><//>`}
      <${Field} label="Data volumes" id="server-data-volumes"><select id="server-data-volumes" name="data_volumes" multiple size="3">${choices.volumes.map((v) => html`<option value=${v.id}>${v.name || shortId(v.id)} (${v.size} GiB)</option>`)}</select><//>
      <button type="submit">Launch</button>
    </form></section>`;
}

function InstancesPage({ api, session }) {
  const servers = usePoll(() => api.compute('GET', '/servers/detail').then((b) => b.servers), []);
  const [volumes, setVolumes] = useState([]);
  const [consoleLog, setConsoleLog] = useState(null);
  const [attaching, setAttaching] = useState(null);
  // Controlled: the list below is refreshed while the form is open, and a refresh must not change the choice.
  const [attachVolumeId, setAttachVolumeId] = useState('');
  const [run, outcome] = useAction();
  const isAdmin = session.roles.includes('admin');
  useEffect(() => {
    api.volume('GET', '/volumes/detail').then((b) => setVolumes(b.volumes), () => setVolumes([]));
  }, [servers.data?.length, attaching]);
  const action = async (s, what, body) => {
    await run(`${what} ${s.name}`, () => api.compute('POST', `/servers/${s.id}/action`, body), `${what} ${s.name}: requested.`);
    servers.refresh();
  };
  const evacuate = async (s) => {
    if (!confirm(evacuationConsequence(s, volumes))) return;
    await action(s, 'Evacuate', { evacuate: {} });
  };
  const attach = async (s, e) => {
    e.preventDefault();
    const volumeId = attachVolumeId || String(new FormData(e.currentTarget).get('volume'));
    if (await run(`Attach to ${s.name}`, () => api.compute('POST', `/servers/${s.id}/os-volume_attachments`, { volumeAttachment: { volumeId } }), `A volume is being attached to ${s.name}.`) !== undefined) setAttaching(null);
    servers.refresh();
  };
  const showConsole = async (s) => {
    const out = await run(`Console log of ${s.name}`, () => api.compute('POST', `/servers/${s.id}/action`, { 'os-getConsoleOutput': { length: 100 } }), `Console log of ${s.name} below.`);
    if (out) setConsoleLog({ name: s.name, text: out.output });
  };
  const volumeNames = (s) => (s['os-extended-volumes:volumes_attached'] ?? []).map((a) => volumes.find((v) => v.id === a.id)?.name || shortId(a.id)).join(', ');
  const available = volumes.filter((v) => v.status === 'available');
  return html`<${InstanceLaunch} api=${api} run=${run} onLaunched=${servers.refresh} />
    ${outcome}<${Fault} error=${servers.error} what="Listing instances" />
    <table aria-label="Instances"><thead><tr><th scope="col">Name</th><th scope="col">ID</th><th scope="col">Status</th><th scope="col">Host</th><th scope="col">Volumes</th><th scope="col">Actions</th></tr></thead>
    <tbody>${(servers.data ?? []).map((s) => html`<tr data-server=${s.name}><td>${s.name}</td><td><code title=${s.id}>${shortId(s.id)}</code></td>
      <td><${StatusBadge} status=${s.status} />${s['OS-EXT-STS:task_state'] ? html` <span class="muted">${s['OS-EXT-STS:task_state']}</span>` : ''}${s.fault?.message && html`<div class="reason">${s.fault.message}</div>`}</td>
      <td>${s['OS-EXT-SRV-ATTR:host'] ?? ''}</td><td>${volumeNames(s)}</td>
      <td class="actions">
        <button type="button" onClick=${() => action(s, 'Stop', { 'os-stop': null })} disabled=${s.status !== 'ACTIVE'} aria-label=${`Stop ${s.name}`}>Stop</button>
        <button type="button" onClick=${() => action(s, 'Start', { 'os-start': null })} disabled=${s.status !== 'SHUTOFF'} aria-label=${`Start ${s.name}`}>Start</button>
        <button type="button" onClick=${() => action(s, 'Reboot', { reboot: { type: 'SOFT' } })} disabled=${s.status !== 'ACTIVE'} aria-label=${`Reboot ${s.name}`}>Reboot</button>
        <button type="button" onClick=${() => action(s, 'Hard reboot', { reboot: { type: 'HARD' } })} disabled=${s.status !== 'ACTIVE' && s.status !== 'REBOOT'} aria-label=${`Hard reboot ${s.name}`}>Hard reboot</button>
        <button type="button" onClick=${() => showConsole(s)} aria-label=${`Console log of ${s.name}`}>Console log</button>
        <button type="button" onClick=${() => { setAttachVolumeId(''); setAttaching(s.id); }} aria-label=${`Attach a volume to ${s.name}`}>Attach volume</button>
        ${isAdmin && html`<button type="button" class="danger" onClick=${() => evacuate(s)} aria-label=${`Evacuate ${s.name}`}>Evacuate</button>`}
        <button type="button" class="danger" onClick=${() => confirm(`Delete instance ${s.name}? Volumes it was booted from or given stay unless they were made to be deleted with it.`) && run(`Delete ${s.name}`, () => api.compute('DELETE', `/servers/${s.id}`)).then(servers.refresh)} aria-label=${`Delete ${s.name}`}>Delete</button>
        ${attaching === s.id && html`<form class="inline" onSubmit=${(e) => attach(s, e)} onKeyDown=${(e) => e.key === 'Escape' && setAttaching(null)}>
          <${Field} label="Volume to attach" id="instance-attach-volume"><select id="instance-attach-volume" name="volume" required value=${attachVolumeId} onChange=${(e) => setAttachVolumeId(e.currentTarget.value)}><option value="">${available.length === 0 ? 'No available volume' : 'Choose a volume'}</option>${available.map((v) => html`<option value=${v.id}>${v.name || shortId(v.id)}</option>`)}</select><//>
          <button type="submit">Attach</button><button type="button" class="secondary" onClick=${() => setAttaching(null)}>Cancel</button></form>`}
      </td></tr>`)}</tbody></table>
    ${servers.data?.length === 0 && html`<p>No instances.</p>`}
    ${consoleLog && html`<section aria-labelledby="console"><h2 id="console">Console log of ${consoleLog.name}</h2><pre class="console" tabindex="0">${consoleLog.text}</pre></section>`}`;
}

// ---------------------------------------------------------------- image sharing and properties

/** JSON-patch is how the Image API changes an image (visibility, properties). */
const imagePatch = (api, imageId, operations) => api.image('PATCH', `/images/${imageId}`, operations, { 'Content-Type': 'application/openstack-images-v2.1-json-patch' });
const imageResourceType = 'OS::Glance::Image';
/** Namespaces the properties form reads at most (the shipped catalog has about 30). */
const metadefNamespacesMax = 40;

/** Properties an image may carry, from the metadata definitions catalog: [{ namespace, name, title, type, enum }]. */
async function imagePropertyCatalog(api) {
  const list = (await api.image('GET', `/metadefs/namespaces?resource_types=${encodeURIComponent(imageResourceType)}&limit=${metadefNamespacesMax}`)).namespaces;
  const details = await Promise.all(list.map((n) => api.image('GET', `/metadefs/namespaces/${encodeURIComponent(n.namespace)}?resource_type=${encodeURIComponent(imageResourceType)}`).catch(() => null)));
  return details.filter(Boolean).flatMap((d) => Object.entries(d.properties ?? {}).map(([name, p]) => ({ namespace: d.display_name || d.namespace, name, title: p.title || name, type: p.type, enum: p.enum ?? (p.type === 'boolean' ? ['true', 'false'] : null) })))
    .sort((a, b) => a.name.localeCompare(b.name));
}

function ImagePanel({ api, image, session, done }) {
  const [run, outcome] = useAction();
  const members = usePoll(() => (image.visibility === 'shared' ? api.image('GET', `/images/${image.id}/members`).then((b) => b.members) : Promise.resolve([])), [image.id, image.visibility], 0);
  const [catalog, setCatalog] = useState({ list: [], error: null });
  const [property, setProperty] = useState('');
  useEffect(() => {
    imagePropertyCatalog(api).then((list) => setCatalog({ list, error: null }), (error) => setCatalog({ list: [], error }));
  }, []);
  const label = image.name || shortId(image.id);
  const isAdmin = session.roles.includes('admin');
  const ownedHere = image.owner === session.project.id || isAdmin;
  const setVisibility = async (e) => {
    e.preventDefault();
    const visibility = String(new FormData(e.currentTarget).get('visibility'));
    if (await run(`Visibility of ${label}`, () => imagePatch(api, image.id, [{ op: 'replace', path: '/visibility', value: visibility }]), `Image ${label} is ${visibility} now.`) !== undefined) done(true);
  };
  const addMember = async (e) => {
    e.preventDefault();
    const member = String(new FormData(e.currentTarget).get('member')).trim();
    await run(`Share ${label}`, () => api.image('POST', `/images/${image.id}/members`, { member }), `Image ${label} is shared with project ${member}; it shows there once that project accepts it.`);
    members.refresh();
  };
  const removeMember = async (m) => {
    await run(`Unshare ${label}`, () => api.image('DELETE', `/images/${image.id}/members/${m.member_id}`), `Image ${label} is no longer shared with ${m.member_id}.`);
    members.refresh();
  };
  const chosen = catalog.list.find((p) => p.name === property);
  const setPropertyValue = async (e) => {
    e.preventDefault();
    const value = String(new FormData(e.currentTarget).get('value'));
    const op = image[property] === undefined ? 'add' : 'replace';
    if (await run(`Property ${property} of ${label}`, () => imagePatch(api, image.id, [{ op, path: `/${property}`, value }]), `Image ${label}: ${property} = ${value}.`) !== undefined) done(true);
  };
  const known = new Set(catalog.list.map((p) => p.name));
  const current = Object.entries(image).filter(([key]) => known.has(key));
  // Escape anywhere in the panel closes it, as it closes the volume action forms.
  return html`<section class="panel" aria-labelledby="image-panel" onKeyDown=${(e) => e.key === 'Escape' && done(false)}><h2 id="image-panel">Image ${label}: sharing and properties</h2>
    ${outcome}
    <form class="inline" onSubmit=${setVisibility}>
      <${Field} label="Visibility" id="image-visibility"><select id="image-visibility" name="visibility" value=${image.visibility} disabled=${!ownedHere}>
        ${['private', 'shared', 'community', 'public'].map((v) => html`<option value=${v} disabled=${v === 'public' && !isAdmin}>${v}${v === 'public' && !isAdmin ? ' (admin only)' : ''}</option>`)}</select><//>
      <button type="submit" disabled=${!ownedHere}>Set visibility</button>
      <button type="button" class="secondary" onClick=${() => done(false)}>Close</button>
    </form>
    ${image.visibility === 'shared' && html`<h3>Members</h3><${Fault} error=${members.error} what="Listing members" />
      <table aria-label="Image members"><thead><tr><th scope="col">Project</th><th scope="col">Status</th><th scope="col">Actions</th></tr></thead>
      <tbody>${(members.data ?? []).map((m) => html`<tr data-member=${m.member_id}><td><code>${m.member_id}</code></td><td><${StatusBadge} status=${m.status} /></td>
        <td class="actions"><button type="button" class="danger" onClick=${() => removeMember(m)} aria-label=${`Stop sharing with ${m.member_id}`}>Remove</button></td></tr>`)}</tbody></table>
      <form class="inline" onSubmit=${addMember}><${Field} label="Project ID to share with" id="image-member"><input id="image-member" name="member" required pattern="[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}" /><//><button type="submit">Share</button></form>`}
    ${image.visibility !== 'shared' && html`<p>Members: set the visibility to <em>shared</em> to share this image with chosen projects.</p>`}
    <h3>Properties from the metadata definitions catalog</h3>
    <${Fault} error=${catalog.error} what="Reading the metadata definitions catalog" />
    ${current.length > 0 && html`<ul class="plain">${current.map(([key, value]) => html`<li><code>${key}</code> = ${String(value)}</li>`)}</ul>`}
    <form class="inline" onSubmit=${setPropertyValue}>
      <${Field} label="Property" id="image-property"><select id="image-property" value=${property} onChange=${(e) => setProperty(e.currentTarget.value)}>
        <option value="">Choose a property</option>${catalog.list.map((p) => html`<option value=${p.name}>${p.name} (${p.namespace})</option>`)}</select><//>
      ${chosen && (chosen.enum
        ? html`<${Field} label="Value" id="image-property-value"><select id="image-property-value" name="value">${chosen.enum.map((v) => html`<option value=${v}>${v}</option>`)}</select><//>`
        : html`<${Field} label="Value" id="image-property-value"><input id="image-property-value" name="value" required /><//>`)}
      <button type="submit" disabled=${!chosen || !ownedHere}>Set property</button>
    </form>
  </section>`;
}

// ---------------------------------------------------------------- volume types (admin)

function VolumeTypesPage({ api }) {
  const types = usePoll(() => api.volume('GET', '/types?is_public=None').then((b) => b.volume_types), [], 0);
  const [run, outcome] = useAction();
  const create = async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const data = new FormData(form);
    const volumeType = { name: String(data.get('name')), description: String(data.get('description')) || undefined, 'os-volume-type-access:is_public': data.get('private') !== 'on' };
    if (await run(`Create type ${volumeType.name}`, () => api.volume('POST', '/types', { volume_type: volumeType }), `Volume type ${volumeType.name} created.`) !== undefined) form.reset();
    types.refresh();
  };
  const setSpec = async (t, e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const data = new FormData(form);
    const key = String(data.get('key')).trim();
    const value = String(data.get('value'));
    if (await run(`Extra spec ${key} of ${t.name}`, () => api.volume('POST', `/types/${t.id}/extra_specs`, { extra_specs: { [key]: value } }), `Volume type ${t.name}: ${key} = ${value}.`) !== undefined) form.reset();
    types.refresh();
  };
  const unsetSpec = async (t, key) => {
    await run(`Remove ${key} from ${t.name}`, () => api.volume('DELETE', `/types/${t.id}/extra_specs/${encodeURIComponent(key)}`), `Volume type ${t.name}: ${key} removed.`);
    types.refresh();
  };
  const remove = async (t) => {
    if (!confirm(`Delete volume type ${t.name}? Volumes of this type refuse it.`)) return;
    await run(`Delete type ${t.name}`, () => api.volume('DELETE', `/types/${t.id}`), `Volume type ${t.name} deleted.`);
    types.refresh();
  };
  return html`<section aria-labelledby="create-type"><h2 id="create-type">Create a volume type</h2>
    <form class="inline" onSubmit=${create}>
      <${Field} label="Type name" id="type-name"><input id="type-name" name="name" required maxlength="255" /><//>
      <${Field} label="Description" id="type-description"><input id="type-description" name="description" /><//>
      <label class="check"><input type="checkbox" name="private" /> Private (only projects given access)</label>
      <button type="submit">Create type</button>
    </form></section>
    ${outcome}<${Fault} error=${types.error} what="Listing volume types" />
    <table aria-label="Volume types"><thead><tr><th scope="col">Name</th><th scope="col">Public</th><th scope="col">Extra specs</th><th scope="col">Set an extra spec</th><th scope="col">Actions</th></tr></thead>
    <tbody>${(types.data ?? []).map((t) => html`<tr data-type=${t.name}><td>${t.name}${t.description ? html`<div class="reason muted">${t.description}</div>` : ''}</td><td>${t['os-volume-type-access:is_public'] ? 'yes' : 'no'}</td>
      <td><ul class="plain">${Object.entries(t.extra_specs ?? {}).map(([key, value]) => html`<li><code>${key}</code> = <code>${value}</code>
        <button type="button" class="danger small" onClick=${() => unsetSpec(t, key)} aria-label=${`Remove ${key} from ${t.name}`}>Remove</button></li>`)}</ul></td>
      <td><form class="inline" onSubmit=${(e) => setSpec(t, e)}>
        <${Field} label="Key" id=${`spec-key-${t.id}`}><input id=${`spec-key-${t.id}`} name="key" required list="known-spec-keys" aria-label=${`Extra spec key for ${t.name}`} /><//>
        <${Field} label="Value" id=${`spec-value-${t.id}`}><input id=${`spec-value-${t.id}`} name="value" required aria-label=${`Extra spec value for ${t.name}`} /><//>
        <button type="submit" aria-label=${`Set extra spec on ${t.name}`}>Set</button></form></td>
      <td class="actions"><button type="button" class="danger" onClick=${() => remove(t)} aria-label=${`Delete type ${t.name}`}>Delete</button></td></tr>`)}</tbody></table>
    <datalist id="known-spec-keys">${['volume_backend_name', 'RESKEY:availability_zones', 'multiattach', 'replication_enabled', 'thin_provisioning_support'].map((k) => html`<option value=${k} />`)}</datalist>`;
}

// ---------------------------------------------------------------- hypervisors and health (admin)

function HypervisorsPage({ api }) {
  const hypervisors = usePoll(() => api.compute('GET', '/os-hypervisors/detail').then((b) => b.hypervisors), [], 10_000);
  const rows = hypervisors.data ?? [];
  const diskText = (h) => {
    const disk = h.cpu_info?.disk ?? {};
    if (disk.source !== 'rbd') return `${h.local_gb_used} of ${h.local_gb} GiB (local disk${disk.rbd_error ? `; the RBD pool could not be read: ${disk.rbd_error}` : ''})`;
    // The pool's space as Ceph counts it: raw capacity divided by the replicas (shared by every host on the pool).
    const replicas = disk.replicas ? `, ${disk.replicas} replicas` : '';
    const raw = disk.rawTotalBytes ? `, raw ${(disk.rawTotalBytes / 1024 ** 3).toFixed(0)} GiB` : '';
    return `${h.local_gb_used} of ${h.local_gb} GiB (RBD pool ${disk.pool ?? ''}${replicas}${raw})`;
  };
  return html`<${Fault} error=${hypervisors.error} what="Listing hypervisors" />
    <table aria-label="Hypervisors"><thead><tr><th scope="col">Host</th><th scope="col">State</th><th scope="col">Instances</th><th scope="col">vCPUs</th><th scope="col">Memory</th><th scope="col">Disk</th></tr></thead>
    <tbody>${rows.map((h) => html`<tr data-hypervisor=${h.hypervisor_hostname}><td>${h.hypervisor_hostname}<div class="muted">${h.hypervisor_type} ${h.cpu_info?.accelerator?.virt_type ?? ''}</div></td>
      <td><${StatusBadge} status=${h.state} /> <${StatusBadge} status=${h.status} />${h.service?.disabled_reason && html`<div class="reason">${h.service.disabled_reason}</div>`}</td><td>${h.running_vms}</td>
      <td><${Bar} label=${`vCPUs used on ${h.hypervisor_hostname}`} value=${h.vcpus_used} max=${h.vcpus} text=${`${h.vcpus_used} of ${h.vcpus}`} /></td>
      <td><${Bar} label=${`Memory used on ${h.hypervisor_hostname}`} value=${h.memory_mb_used} max=${h.memory_mb} text=${`${h.memory_mb_used} of ${h.memory_mb} MiB`} /></td>
      <td><${Bar} label=${`Disk used on ${h.hypervisor_hostname}`} value=${h.local_gb_used} max=${h.local_gb} text=${diskText(h)} /></td></tr>`)}</tbody></table>
    ${hypervisors.data && rows.length === 0 && html`<p>No compute host has reported yet.</p>`}`;
}

/** The health checks' results: every check with its reason, failing ones first. */
function HealthChecks({ api }) {
  const health = usePoll(() => api.health(), [], 5000);
  const reasons = (health.data?.reasons ?? []).map((r) => (typeof r === 'string' ? { class: r, reason: r.endsWith('FAILED') ? 'FAILED' : 'OK', details: '' } : r));
  reasons.sort((a, b) => (a.reason === 'OK') - (b.reason === 'OK'));
  return html`<section aria-labelledby="health"><h2 id="health">Health checks</h2>
    <p>What the API process checks continuously (database, each backend, the task queue): the same causes and fixes <code>pumice doctor</code> names, as <code>/healthcheck</code> reports them.</p>
    <${Fault} error=${health.error} what="Reading /healthcheck" />
    ${health.data && html`<p>Overall: <${StatusBadge} status=${health.data.healthy ? 'up' : 'down'} /></p>`}
    <table aria-label="Health checks"><thead><tr><th scope="col">Check</th><th scope="col">Result</th><th scope="col">Details</th></tr></thead>
    <tbody>${reasons.map((r) => html`<tr data-check=${r.class}><td>${r.class}</td><td><${StatusBadge} status=${r.reason === 'OK' ? 'up' : 'down'} /></td><td class=${r.reason === 'OK' ? '' : 'reason'}>${r.details}</td></tr>`)}</tbody></table></section>`;
}

// ---------------------------------------------------------------- plots (admin)

const plotWidth = 560;
const plotHeight = 180;
const plotMargin = { left: 64, right: 12, top: 10, bottom: 24 };
const plotColours = ['#0b5cad', '#a4161a', '#176b2c', '#7a4d00'];

function formatValue(value, unit) {
  if (unit === 'bytes' || unit === 'bytes/s') {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let v = value;
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return `${v.toFixed(v >= 100 || i === 0 ? 0 : 1)} ${units[i]}${unit === 'bytes/s' ? '/s' : ''}`;
  }
  return `${Number.isInteger(value) ? value : value.toFixed(2)}${unit ? ` ${unit}` : ''}`;
}

/** The y axis's top figure: short enough for the margin (the unit is in the caption). */
function axisText(value, unit) {
  if (unit === 'bytes' || unit === 'bytes/s') return formatValue(value, 'bytes');
  return value >= 100 ? value.toFixed(0) : String(Number(value.toPrecision(2)));
}

/**
 * A line chart drawn as SVG: a few series over the same time axis. Hand-drawn rather than a chart
 * library: three kinds of plot need about 60 lines, the strict CSP stays as it is, and the latest
 * values are also written out as text for screen readers.
 */
function LineChart({ title, lines, unit, fromMs, toMs }) {
  const innerWidth = plotWidth - plotMargin.left - plotMargin.right;
  const innerHeight = plotHeight - plotMargin.top - plotMargin.bottom;
  const maxValue = Math.max(1e-9, ...lines.flatMap((l) => l.points.map((p) => p[1])));
  const x = (t) => plotMargin.left + ((t - fromMs) / Math.max(1, toMs - fromMs)) * innerWidth;
  const y = (v) => plotMargin.top + innerHeight - (v / maxValue) * innerHeight;
  const latest = lines.map((l) => `${l.label} ${l.points.length ? formatValue(l.points[l.points.length - 1][1], unit) : 'no data'}`).join('; ');
  const minutesAgo = (t) => (toMs - t >= 120_000 ? `${Math.round((toMs - t) / 60000)} min ago` : `${Math.round((toMs - t) / 1000)} s ago`);
  return html`<figure class="chart" data-chart=${title}>
    <figcaption>${title} <span class="muted">(${unit})</span></figcaption>
    <svg viewBox=${`0 0 ${plotWidth} ${plotHeight}`} role="img" aria-label=${`${title}: latest ${latest}`} preserveAspectRatio="xMinYMin meet">
      <line x1=${plotMargin.left} y1=${plotMargin.top + innerHeight} x2=${plotWidth - plotMargin.right} y2=${plotMargin.top + innerHeight} stroke="#7b8794" />
      <line x1=${plotMargin.left} y1=${plotMargin.top} x2=${plotMargin.left} y2=${plotMargin.top + innerHeight} stroke="#7b8794" />
      <text x=${plotMargin.left - 6} y=${plotMargin.top + 10} text-anchor="end" font-size="11" fill="#4a5360">${axisText(maxValue, unit)}</text>
      <text x=${plotMargin.left - 6} y=${plotMargin.top + innerHeight} text-anchor="end" font-size="11" fill="#4a5360">0</text>
      <text x=${plotMargin.left} y=${plotHeight - 6} font-size="11" fill="#4a5360">${minutesAgo(fromMs)}</text>
      <text x=${plotWidth - plotMargin.right} y=${plotHeight - 6} text-anchor="end" font-size="11" fill="#4a5360">now</text>
      ${lines.map((l, i) => l.points.length > 0 && html`<polyline fill="none" stroke=${plotColours[i % plotColours.length]} stroke-width="2" data-series=${l.label}
        points=${l.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ')} />`)}
    </svg>
    <ul class="legend">${lines.map((l, i) => html`<li><span class=${`swatch swatch-${i % plotColours.length}`} aria-hidden="true"></span>${l.label}: ${l.points.length ? formatValue(l.points[l.points.length - 1][1], unit) : 'no data yet'}</li>`)}</ul>
  </figure>`;
}

const plotWindowSeconds = 3600;

function PlotsPage({ api }) {
  const samples = usePoll(() => api.pumice('GET', `/timeseries?since_seconds=${plotWindowSeconds}`), [], 5000);
  const series = samples.data?.series ?? [];
  const toMs = Date.now();
  // The window starts at the first sample when the cloud is younger than the window, so a new cloud's plot is not a sliver at the right.
  const firstSampleMs = Math.min(toMs - 60_000, ...series.map((s) => s.points[0]?.[0] ?? toMs));
  const fromMs = Math.max(toMs - plotWindowSeconds * 1000, firstSampleMs);
  const find = (name) => series.find((s) => s.name === name)?.points ?? [];
  const backends = [...new Set(series.map((s) => /^backend\.(.+)\.[a-z_]+$/.exec(s.name)?.[1]).filter(Boolean))].sort();
  return html`<p>The last hour, sampled every ${samples.data?.interval_seconds ?? '…'} s by the API process (kept ${samples.data ? Math.round(samples.data.retention_seconds / 3600) : '…'} h).</p>
    <${Fault} error=${samples.error} what="Reading the time series" />
    <div class="charts">
      ${backends.map((b) => html`<${LineChart} title=${`Capacity of backend ${b}`} unit="bytes" fromMs=${fromMs} toMs=${toMs} lines=${[
        { label: 'provisioned', points: find(`backend.${b}.provisioned_bytes`) },
        { label: 'used', points: find(`backend.${b}.used_bytes`) },
        { label: 'usable', points: find(`backend.${b}.usable_bytes`) },
      ]} />`)}
      <${LineChart} title="Volumes" unit="volumes" fromMs=${fromMs} toMs=${toMs} lines=${[{ label: 'count', points: find('volumes.count') }]} />
      <${LineChart} title="API requests" unit="requests/s" fromMs=${fromMs} toMs=${toMs} lines=${[{ label: 'request rate', points: find('api.requests_per_second') }]} />
      <${LineChart} title="Backup throughput" unit="bytes/s" fromMs=${fromMs} toMs=${toMs} lines=${[{ label: 'written to the backup store', points: find('backup.bytes_per_second') }]} />
    </div>`;
}

const pageComponents = { volumes: VolumesPage, snapshots: SnapshotsPage, backups: BackupsPage, images: ImagesPage, quotas: QuotasPage, admin: AdminPage, instances: InstancesPage,
  'volume-types': VolumeTypesPage, hypervisors: HypervisorsPage, plots: PlotsPage };

// ---------------------------------------------------------------- app

function pageFromLocation() {
  const path = location.pathname.startsWith(base + '/') ? location.pathname.slice(base.length + 1).split('/')[0] : '';
  return pages.some((p) => p.path === path) ? path : 'volumes';
}

function App() {
  const [session, setSession] = useState(loadSession);
  const [reason, setReason] = useState(null);
  const [page, setPage] = useState(pageFromLocation);
  useEffect(() => {
    const onPop = () => setPage(pageFromLocation());
    addEventListener('popstate', onPop);
    return () => removeEventListener('popstate', onPop);
  }, []);
  const go = (path) => {
    history.pushState(null, '', `${base}/${path}`);
    setPage(path);
    document.getElementById('main')?.focus();
  };
  const expired = (message) => {
    forgetSession();
    setSession(null);
    setReason(`Your session ended (${message}). Log in again.`);
  };
  const api = session && client(session, expired);
  if (!session) return html`<${Login} reason=${reason} onLogin=${(s) => { setReason(null); setSession(s); }} />`;
  const onLogout = async () => {
    setSession(null);
    try {
      await logout(session);
      setReason('You are logged out; your token is revoked.');
    } catch (error) {
      setReason(`You are logged out here, but revoking the token failed: ${error.message}`);
    }
  };
  return html`<${Shell} session=${session} api=${api} page=${page} go=${go} onSession=${setSession} onLogout=${onLogout} />`;
}

const container = document.getElementById('app');
container.textContent = '';
render(html`<${App} />`, container);
