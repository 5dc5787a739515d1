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
  const [choices, setChoices] = useState({ images: [], snapshots: [], backups: [], types: [] });
  useEffect(() => {
    Promise.all([
      api.image('GET', '/images?status=active').then((b) => b.images, () => []),
      api.volume('GET', '/snapshots?status=available').then((b) => b.snapshots, () => []),
      api.volume('GET', '/backups/detail').then((b) => b.backups.filter((x) => x.status === 'available'), () => []),
      api.volume('GET', '/types').then((b) => b.volume_types, () => []),
    ]).then(([images, snapshots, backups, types]) => setChoices({ images, snapshots, backups, types }));
  }, [source]);
  const submit = async (e) => {
    e.preventDefault();
    const data = new FormData(e.currentTarget);
    const volume = { size: Number(data.get('size')), name: String(data.get('name')) || null };
    const type = String(data.get('type') ?? '');
    if (type) volume.volume_type = type;
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
      <button type="submit">Create volume</button>
    </form></section>`;
}

/** The form of one row action (extend, snapshot, back up), shown below the table. */
function VolumeActionForm({ action, volume, api, run, done }) {
  const firstField = useRef(null);
  useEffect(() => firstField.current?.focus(), [action, volume.id]);
  const label = volume.name || shortId(volume.id);
  const submit = async (e) => {
    e.preventDefault();
    const data = new FormData(e.currentTarget);
    let ok;
    if (action === 'extend') {
      ok = await run(`Extend ${label}`, () => api.volume('POST', `/volumes/${volume.id}/action`, { 'os-extend': { new_size: Number(data.get('size')) } }), `Volume ${label} is being extended.`);
    } else if (action === 'snapshot') {
      ok = await run(`Snapshot of ${label}`, () => api.volume('POST', '/snapshots', { snapshot: { volume_id: volume.id, name: String(data.get('name')) || null, force: data.get('force') === 'on' } }), `Snapshot of ${label} is being taken.`);
    } else {
      ok = await run(`Backup of ${label}`, () => api.volume('POST', '/backups', { backup: { volume_id: volume.id, name: String(data.get('name')) || null, incremental: data.get('incremental') === 'on', force: true } }), `Backup of ${label} started: its progress shows below.`);
    }
    if (ok !== undefined) done(true);
  };
  const title = { extend: `Extend volume ${label}`, snapshot: `Snapshot volume ${label}`, backup: `Back up volume ${label}` }[action];
  return html`<section class="panel" aria-labelledby="volume-action"><h2 id="volume-action">${title}</h2>
    <form class="inline" onSubmit=${submit} onKeyDown=${(e) => e.key === 'Escape' && done(false)}>
      ${action === 'extend' && html`<${Field} label="New size (GiB)" id="extend-size"><input id="extend-size" ref=${firstField} name="size" type="number" min=${volume.size + 1} value=${volume.size + 1} required /><//>`}
      ${action !== 'extend' && html`<${Field} label=${action === 'snapshot' ? 'Snapshot name' : 'Backup name'} id="action-name"><input id="action-name" ref=${firstField} name="name" /><//>`}
      ${action === 'snapshot' && html`<label class="check"><input type="checkbox" name="force" /> Even if attached (force)</label>`}
      ${action === 'backup' && html`<label class="check"><input type="checkbox" name="incremental" /> Incremental</label>`}
      <button type="submit">${{ extend: 'Extend', snapshot: 'Take snapshot', backup: 'Start backup' }[action]}</button>
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
  const rows = volumes.data ?? [];
  return html`
    <${VolumeCreate} api=${api} run=${run} onCreated=${volumes.refresh} />
    ${outcome}
    <${Fault} error=${volumes.error} what="Listing volumes" />
    <table aria-label="Volumes">
      <thead><tr><th scope="col">Name</th><th scope="col">ID</th><th scope="col">Size</th><th scope="col">Status</th><th scope="col">Type</th><th scope="col">Bootable</th><th scope="col">Actions</th></tr></thead>
      <tbody>${rows.map((v) => html`<tr data-volume=${v.name || v.id}>
        <td>${v.name}</td><td><code title=${v.id}>${shortId(v.id)}</code></td><td>${v.size} GiB</td><td><${StatusBadge} status=${v.status} /></td>
        <td>${v.volume_type}</td><td>${v.bootable}</td>
        <td class="actions">
          <button type="button" onClick=${() => setPending({ action: 'extend', volume: v })} aria-label=${`Extend ${v.name || v.id}`}>Extend</button>
          <button type="button" onClick=${() => setPending({ action: 'snapshot', volume: v })} aria-label=${`Snapshot ${v.name || v.id}`}>Snapshot</button>
          <button type="button" onClick=${() => setPending({ action: 'backup', volume: v })} aria-label=${`Back up ${v.name || v.id}`}>Back up</button>
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

function ImagesPage({ api }) {
  const images = usePoll(() => api.image('GET', '/images?limit=200').then((b) => b.images), []);
  const [run, outcome] = useAction();
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
        <button type="button" class="danger" onClick=${() => confirm(`Delete image ${i.name || i.id}?`) && act(i, 'Delete', 'DELETE', `/images/${i.id}`)} aria-label=${`Delete ${i.name || i.id}`}>Delete</button>
      </td></tr>`)}</tbody></table>`;
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
    <${Fault} error=${identity.error} what="Listing projects, users and roles" />
    <div class="columns">
      <section aria-labelledby="projects"><h2 id="projects">Projects</h2><ul class="plain">${projects.map((p) => html`<li>${p.name} <code>${shortId(p.id)}</code>${p.enabled === false ? ' (disabled)' : ''}</li>`)}</ul></section>
      <section aria-labelledby="users"><h2 id="users">Users</h2><ul class="plain">${users.map((u) => html`<li>${u.name}${u.enabled === false ? ' (disabled)' : ''}</li>`)}</ul></section>
      <section aria-labelledby="roles"><h2 id="roles">Roles</h2><ul class="plain">${roles.map((r) => html`<li>${r.name}</li>`)}</ul></section>
    </div>`;
}

// ---------------------------------------------------------------- instances

function InstancesPage({ api }) {
  const servers = usePoll(() => api.compute('GET', '/servers/detail').then((b) => b.servers), []);
  const [choices, setChoices] = useState({ flavors: [], volumes: [] });
  const [consoleLog, setConsoleLog] = useState(null);
  const [run, outcome] = useAction();
  useEffect(() => {
    Promise.all([
      api.compute('GET', '/flavors').then((b) => b.flavors, () => []),
      api.volume('GET', '/volumes/detail?status=available').then((b) => b.volumes.filter((v) => v.bootable === 'true'), () => []),
    ]).then(([flavors, volumes]) => setChoices({ flavors, volumes }));
  }, [servers.data?.length]);
  const launch = async (e) => {
    e.preventDefault();
    const data = new FormData(e.currentTarget);
    const server = { name: String(data.get('name')), flavorRef: String(data.get('flavor')), networks: 'none',
      block_device_mapping_v2: [{ boot_index: 0, uuid: String(data.get('volume')), source_type: 'volume', destination_type: 'volume', delete_on_termination: false }] };
    await run(`Launch ${server.name}`, () => api.compute('POST', '/servers', { server }), `Instance ${server.name} is being launched.`);
    servers.refresh();
  };
  const action = async (s, what, body) => {
    await run(`${what} ${s.name}`, () => api.compute('POST', `/servers/${s.id}/action`, body), `${what} ${s.name}: requested.`);
    servers.refresh();
  };
  const showConsole = async (s) => {
    const out = await run(`Console log of ${s.name}`, () => api.compute('POST', `/servers/${s.id}/action`, { 'os-getConsoleOutput': { length: 100 } }), `Console log of ${s.name} below.`);
    if (out) setConsoleLog({ name: s.name, text: out.output });
  };
  return html`<section aria-labelledby="launch"><h2 id="launch">Launch an instance from a volume</h2>
    <form class="inline" onSubmit=${launch}>
      <${Field} label="Instance name" id="server-name"><input id="server-name" name="name" required /><//>
      <${Field} label="Flavor" id="server-flavor"><select id="server-flavor" name="flavor" required>${choices.flavors.map((f) => html`<option value=${f.id}>${f.name}</option>`)}</select><//>
      <${Field} label="Boot volume" id="server-volume"><select id="server-volume" name="volume" required>${choices.volumes.length === 0 && html`<option value="">No bootable volume is available</option>`}${choices.volumes.map((v) => html`<option value=${v.id}>${v.name || shortId(v.id)}</option>`)}</select><//>
      <button type="submit">Launch</button>
    </form></section>
    ${outcome}<${Fault} error=${servers.error} what="Listing instances" />
    <table aria-label="Instances"><thead><tr><th scope="col">Name</th><th scope="col">ID</th><th scope="col">Status</th><th scope="col">Host</th><th scope="col">Actions</th></tr></thead>
    <tbody>${(servers.data ?? []).map((s) => html`<tr data-server=${s.name}><td>${s.name}</td><td><code>${shortId(s.id)}</code></td><td><${StatusBadge} status=${s.status} /></td><td>${s['OS-EXT-SRV-ATTR:host'] ?? ''}</td>
      <td class="actions"><button type="button" onClick=${() => action(s, 'Stop', { 'os-stop': null })}>Stop</button><button type="button" onClick=${() => action(s, 'Start', { 'os-start': null })}>Start</button>
        <button type="button" onClick=${() => showConsole(s)}>Console log</button>
        <button type="button" class="danger" onClick=${() => confirm(`Delete instance ${s.name}? Its volumes stay.`) && run(`Delete ${s.name}`, () => api.compute('DELETE', `/servers/${s.id}`)).then(servers.refresh)}>Delete</button></td></tr>`)}</tbody></table>
    ${servers.data?.length === 0 && html`<p>No instances.</p>`}
    ${consoleLog && html`<section aria-labelledby="console"><h2 id="console">Console log of ${consoleLog.name}</h2><pre class="console" tabindex="0">${consoleLog.text}</pre></section>`}`;
}

const pageComponents = { volumes: VolumesPage, snapshots: SnapshotsPage, backups: BackupsPage, images: ImagesPage, quotas: QuotasPage, admin: AdminPage, instances: InstancesPage };

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
