/**
 * The dashboard's operator pages and instance pages in a real browser (Debian's chromium driven by
 * playwright-core) against a real Pumice with its compute role (QEMU, TCG): volume types and extra
 * specs, the availability zone on create, upload of a volume to an image, image visibility, members
 * and metadefs properties, hypervisors, health checks, the plots over the time-series API, and one
 * instance launched from the browser (boot volume plus a data volume) with its console log, power
 * actions, attach/detach and the evacuation confirmation. Screenshots go to test-output/screenshots/.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ApiClient, repoRoot, startPumice, type PumiceProcess } from '../helpers/pumice.ts';
import { qemuPids, uploadGuestImage } from '../helpers/compute.ts';

const screenshotDir = path.join(repoRoot, 'test-output', 'screenshots');
const config = `[DEFAULT]
report_interval = 1
service_down_time = 4

[libvirt]
virt_type = qemu

[compute]
shutdown_timeout = 2
`;
const uiTimeoutMs = 20_000;

let pumice: PumiceProcess;
let browser: Browser;
let admin: ApiClient;
let currentPage: Page | null = null;
/** The test guest image (shared and given a property by the admin test, booted by the instance test). */
let guestImageId = '';

const started = Date.now();
function mark(name: string): void {
  if (process.env['DASH_TIMING']) process.stderr.write(`TIMING ${name} ${Date.now() - started}\n`);
}
async function shot(page: Page, name: string): Promise<void> {
  mark(name);
  await page.screenshot({ path: path.join(screenshotDir, `${name}.png`), fullPage: true });
}

async function newPage(width = 1280, height = 800): Promise<Page> {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  page.setDefaultTimeout(uiTimeoutMs);
  const problems: string[] = [];
  const dialogs: string[] = [];
  page.on('dialog', (dialog) => {
    dialogs.push(dialog.message());
    void dialog.accept();
  });
  page.on('pageerror', (error) => problems.push(error.message));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy|SyntaxError|TypeError|ReferenceError/.test(message.text())) problems.push(message.text());
  });
  Object.assign(page, { problems, dialogs });
  currentPage = page;
  return page;
}
const problemsOf = (page: Page) => (page as Page & { problems: string[] }).problems;
const dialogsOf = (page: Page) => (page as Page & { dialogs: string[] }).dialogs;

async function logIn(page: Page, user: string, password: string): Promise<void> {
  await page.goto(`${pumice.url}/dashboard/`, { waitUntil: 'domcontentloaded' });
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('button', { name: 'Log out' }).waitFor();
}

const row = (page: Page, attribute: string, name: string) => page.locator(`tr[data-${attribute}="${name}"]`);

/** Every form control on the page has an accessible name (a label or aria-label): none is left to guess. */
async function unlabelledControls(page: Page): Promise<string[]> {
  return page.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
    .filter((el) => !(el as HTMLInputElement).labels?.length && !el.getAttribute('aria-label'))
    .map((el) => el.outerHTML.slice(0, 120)));
}

async function waitFor<T>(check: () => Promise<T | null | undefined | false>, what: string, timeoutMs = uiTimeoutMs): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not reached in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('dashboard: operator and instance pages', { timeout: 240_000 }, () => {
  before(async () => {
    mkdirSync(screenshotDir, { recursive: true });
    pumice = await startPumice({ config, env: { PUMICE_TIMESERIES_INTERVAL_SECONDS: '1' } });
    mark('pumice started');
    admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
    // The instance test's volumes are made now, so their copies run while the first tests do.
    guestImageId = await uploadGuestImage(admin);
    mark('guest image uploaded');
    const projectPath = `/volume/v3/${admin.projectId}`;
    const boot = await admin.request('POST', `${projectPath}/volumes`, { volume: { name: 'dash-boot', size: 1, imageRef: guestImageId } });
    assert.equal(boot.status, 202, boot.text);
    for (const name of ['dash-data', 'dash-hotplug']) assert.equal((await admin.request('POST', `${projectPath}/volumes`, { volume: { name, size: 1 } })).status, 202);
  });
  afterEach(async (t) => {
    const page = currentPage;
    currentPage = null;
    if (!page || page.isClosed()) return;
    // Only a failed test leaves a `failed-` picture of what it saw.
    if (!(t as unknown as { passed: boolean }).passed) await shot(page, `failed-${t.name.slice(0, 40).replace(/[^a-z0-9]+/gi, '-')}`).catch(() => {});
    await page.context().close();
  });
  after(async () => {
    await browser?.close();
    if (!pumice) return;
    for (const s of (await admin.request('GET', '/compute/v2.1/servers?all_tenants=1')).body?.servers ?? []) await admin.request('DELETE', `/compute/v2.1/servers/${s.id}`);
    await waitFor(async () => ((await admin.request('GET', '/compute/v2.1/servers?all_tenants=1')).body?.servers ?? []).length === 0, 'servers deleted', 60_000).catch(() => undefined);
    mark('servers deleted');
    const instancesDir = path.join(pumice.dataDir, 'instances');
    await pumice.stop();
    mark('pumice stopped');
    const left = await qemuPids(instancesDir);
    for (const pid of left) process.kill(pid, 'SIGKILL');
    pumice.cleanup();
    assert.deepEqual(left, [], 'no QEMU process outlives the test');
  });

  test('the time-series API: declared schema, admin only, bad input named, retention bounded', async () => {
    const read = () => admin.request('GET', '/pumice/v1/timeseries?since_seconds=600');
    // The server validates its own reply against the declared schema (PUMICE_VALIDATE_RESPONSES=1): a mismatch is a 500.
    const body = await waitFor(async () => {
      const r = await read();
      assert.equal(r.status, 200, r.text);
      const names = (r.body.series as { name: string }[]).map((s) => s.name);
      return ['volumes.count', 'api.requests_per_second', 'backup.bytes_per_second', 'backend.local.usable_bytes', 'backend.local.used_bytes', 'backend.local.provisioned_bytes'].every((n) => names.includes(n)) && r.body;
    }, 'every series sampled');
    assert.equal(body.interval_seconds, 1);
    assert.equal(body.retention_seconds, 86_400);
    const rate = (body.series as { name: string; points: [number, number][] }[]).find((s) => s.name === 'api.requests_per_second')!;
    assert.ok(rate.points.some(([, v]) => v > 0), `this test's own requests show in the rate: ${JSON.stringify(rate.points.slice(-5))}`);

    const member = await memberClient('ts-p', 'ts-u');
    const refused = await member.request('GET', '/pumice/v1/timeseries');
    assert.equal(refused.status, 403, refused.text);
    for (const bad of ['since_seconds=0', 'since_seconds=abc', 'since_seconds=999999', 'window=5']) {
      const r = await admin.request('GET', `/pumice/v1/timeseries?${bad}`);
      assert.equal(r.status, 400, `${bad}: ${r.text}`);
      assert.ok(r.body.badRequest.message.length > 10, r.text);
    }

    // Retention: a sample older than a day is dropped at the next tick (SQLite only: the test reaches into the file).
    const dbFile = path.join(pumice.dataDir, 'pumice.db');
    if (existsSync(dbFile) && !readFileSync(path.join(pumice.dataDir, 'pumice.conf'), 'utf8').includes('[database]')) {
      const db = new Database(dbFile);
      try {
        db.pragma('busy_timeout = 5000');
        db.prepare('INSERT INTO timeseries_samples (series, host, taken_at_ms, value) VALUES (?, ?, ?, ?)').run('volumes.count', 'old-host', Date.now() - 25 * 3600_000, 7);
        await waitFor(async () => (db.prepare('SELECT COUNT(*) AS n FROM timeseries_samples WHERE host = ?').get('old-host') as { n: number }).n === 0, 'the old sample dropped', 5000);
        // A second API host's samples: its request rate adds to this one's in the same period; a gauge is not doubled.
        const now = Date.now();
        const latest = (name: string) => db.prepare('SELECT value FROM timeseries_samples WHERE series = ? ORDER BY taken_at_ms DESC LIMIT 1').get(name) as { value: number };
        const volumes = latest('volumes.count').value;
        db.prepare('INSERT INTO timeseries_samples (series, host, taken_at_ms, value) VALUES (?, ?, ?, ?)').run('api.requests_per_second', 'other-api', now - 30_000, 1000);
        db.prepare('INSERT INTO timeseries_samples (series, host, taken_at_ms, value) VALUES (?, ?, ?, ?)').run('api.requests_per_second', 'third-api', now - 30_000, 7);
        db.prepare('INSERT INTO timeseries_samples (series, host, taken_at_ms, value) VALUES (?, ?, ?, ?)').run('volumes.count', 'other-api', now - 30_000, volumes);
        const merged = (await read()).body.series as { name: string; points: [number, number][] }[];
        const bucket = (name: string) => merged.find((s) => s.name === name)!.points.find(([t]) => t === Math.floor((now - 30_000) / 1000) * 1000)!;
        const own = db.prepare("SELECT value FROM timeseries_samples WHERE series = ? AND host NOT IN ('other-api', 'third-api') AND taken_at_ms >= ? AND taken_at_ms < ?")
          .all('api.requests_per_second', Math.floor((now - 30_000) / 1000) * 1000, Math.floor((now - 30_000) / 1000) * 1000 + 1000) as { value: number }[];
        assert.equal(bucket('api.requests_per_second')[1], 1007 + own.reduce((sum, r) => sum + r.value, 0));
        assert.equal(bucket('volumes.count')[1], volumes);
      } finally {
        db.close();
      }
    }
  });

  test('an instance launched from the browser: console log, stop/start/reboot, attach/detach, evacuation confirmation', async () => {
    const projectPath = `/volume/v3/${admin.projectId}`;
    const volumeStatus = async (name: string) => ((await admin.request('GET', `${projectPath}/volumes/detail?name=${name}`)).body.volumes[0]?.status as string | undefined);
    for (const name of ['dash-boot', 'dash-data', 'dash-hotplug']) await waitFor(async () => (await volumeStatus(name)) === 'available', `${name} available`, 60_000);
    mark('instance volumes ready');

    const page = await newPage();
    await logIn(page, 'admin', pumice.adminPassword);
    await page.getByRole('link', { name: 'Instances' }).click();
    await page.getByLabel('Instance name').fill('dash-vm');
    await page.getByLabel('Boot volume').selectOption({ label: 'dash-boot' });
    await page.getByLabel('Data volumes').selectOption({ label: 'dash-data (1 GiB)' });
    assert.deepEqual(await unlabelledControls(page), []);
    await page.getByRole('button', { name: 'Launch' }).click();
    const vm = row(page, 'server', 'dash-vm');
    await vm.getByText('ACTIVE', { exact: true }).waitFor({ timeout: 60_000 });
    mark('instance active');
    await vm.getByText('dash-boot, dash-data').waitFor();

    // The console log shows the guest's boot marker once it has booted.
    await waitFor(async () => {
      await page.getByRole('button', { name: 'Console log of dash-vm' }).click();
      // The firmware's first lines are enough: waiting for the guest's own marker costs half a minute of TCG.
      return /\S/.test((await page.locator('pre.console').textContent().catch(() => '')) ?? '');
    }, 'the guest wrote to its console', 60_000);
    await shot(page, '27-instance-console');

    // Attach from the instance page while it runs (hot-plug); detach and attach from the volumes page while it is stopped.
    await page.getByRole('button', { name: 'Attach a volume to dash-vm' }).click();
    await page.getByLabel('Volume to attach').selectOption({ label: 'dash-hotplug' });
    await page.getByRole('button', { name: 'Attach', exact: true }).click();
    await vm.getByText('dash-boot, dash-data, dash-hotplug').waitFor({ timeout: 40_000 });
    await shot(page, '28-instances');
    await page.setViewportSize({ width: 390, height: 800 });
    await shot(page, '28-instances-narrow');
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.getByRole('button', { name: 'Stop dash-vm' }).click();
    await vm.getByText('SHUTOFF', { exact: true }).waitFor({ timeout: 40_000 });
    mark('instance stopped');
    await page.getByRole('link', { name: 'Volumes' }).click();
    await row(page, 'volume', 'dash-hotplug').getByText('in-use', { exact: true }).waitFor();
    await page.getByRole('button', { name: 'Detach dash-hotplug' }).click();
    mark('detach requested');
    await row(page, 'volume', 'dash-hotplug').getByText('available', { exact: true }).waitFor({ timeout: 40_000 });
    await page.getByRole('button', { name: 'Attach dash-hotplug' }).click();
    await page.getByLabel('Instance', { exact: true }).selectOption({ label: 'dash-vm' });
    await page.getByRole('button', { name: 'Attach', exact: true }).click();
    await row(page, 'volume', 'dash-hotplug').getByText('in-use', { exact: true }).waitFor({ timeout: 40_000 });
    await shot(page, '29-volumes-attached');
    await page.getByRole('link', { name: 'Instances' }).click();
    await page.getByRole('button', { name: 'Start dash-vm' }).click();
    await vm.getByText('ACTIVE', { exact: true }).waitFor({ timeout: 40_000 });
    // A hard reboot: a soft one waits for the guest to act on ACPI, which the test guest does not (Nova then waits minutes).
    await page.getByRole('button', { name: 'Hard reboot dash-vm' }).click();
    await page.getByRole('status').filter({ hasText: 'Hard reboot dash-vm: requested.' }).waitFor();
    await vm.getByText('ACTIVE', { exact: true }).waitFor({ timeout: 40_000 });

    // Evacuation: the confirmation says what happens to the volumes; with the host up, the API's refusal shows.
    await page.getByRole('button', { name: 'Evacuate dash-vm' }).click();
    const confirmation = dialogsOf(page).at(-1)!;
    assert.match(confirmation, /^Evacuate instance dash-vm from host /);
    assert.match(confirmation, /Its volumes \(dash-boot, dash-data, dash-hotplug\) keep their data: the old host is fenced from them first/);
    const refusal = page.getByRole('alert').filter({ hasText: /Evacuate dash-vm failed \(HTTP 4\d\d\)/ });
    await refusal.waitFor();
    await shot(page, '30-evacuate-refused');
    await vm.getByText('ACTIVE', { exact: true }).waitFor();
    assert.deepEqual(problemsOf(page), []);
  });

  test('admin: volume types and extra specs, AZ on create, upload to image, image sharing and metadefs properties, hypervisors, health, plots', async () => {
    const page = await newPage();
    await logIn(page, 'admin', pumice.adminPassword);

    // Volume types and their extra specs.
    await page.getByRole('link', { name: 'Volume types' }).click();
    await page.getByLabel('Type name').fill('dash-fast');
    await page.getByLabel('Description').fill('local, for the dashboard test');
    await page.getByRole('button', { name: 'Create type' }).click();
    await row(page, 'type', 'dash-fast').waitFor();
    await page.getByLabel('Extra spec key for dash-fast').fill('volume_backend_name');
    await page.getByLabel('Extra spec value for dash-fast').fill('local');
    await page.getByRole('button', { name: 'Set extra spec on dash-fast' }).click();
    await row(page, 'type', 'dash-fast').getByText('volume_backend_name').waitFor();
    await page.getByLabel('Extra spec key for dash-fast').fill('scratch');
    await page.getByLabel('Extra spec value for dash-fast').fill('x');
    await page.getByRole('button', { name: 'Set extra spec on dash-fast' }).click();
    await page.getByRole('button', { name: 'Remove scratch from dash-fast' }).click();
    await row(page, 'type', 'dash-fast').getByText('scratch').waitFor({ state: 'detached' });
    const types = (await admin.request('GET', `/volume/v3/${admin.projectId}/types`)).body.volume_types as { name: string; extra_specs: Record<string, string> }[];
    assert.deepEqual(types.find((t) => t.name === 'dash-fast')?.extra_specs, { volume_backend_name: 'local' });
    // A duplicate name: the API's refusal, as it gives it.
    await page.getByLabel('Type name').fill('dash-fast');
    await page.getByRole('button', { name: 'Create type' }).click();
    await page.getByRole('alert').filter({ hasText: 'Create type dash-fast failed (HTTP 409)' }).waitFor();
    // From the keyboard: Enter in the name field creates the type.
    await page.getByLabel('Type name').focus();
    // The refused name stays in the field (to be corrected, not retyped): replace it.
    await page.keyboard.press('Control+A');
    await page.keyboard.type('dash-keyboard');
    await page.keyboard.press('Enter');
    await row(page, 'type', 'dash-keyboard').waitFor();
    assert.deepEqual(await unlabelledControls(page), []);
    await shot(page, '20-volume-types');

    // A volume of that type in a chosen zone, uploaded to an image.
    await page.getByRole('link', { name: 'Volumes' }).click();
    await page.getByLabel('Name', { exact: true }).fill('dash-typed');
    await page.getByLabel('Type', { exact: true }).selectOption('dash-fast');
    await page.getByLabel('Availability zone').selectOption('nova');
    await page.getByRole('button', { name: 'Create volume' }).click();
    await row(page, 'volume', 'dash-typed').getByText('available', { exact: true }).waitFor();
    assert.equal(await row(page, 'volume', 'dash-typed').locator('td').nth(6).textContent(), 'nova');
    await page.getByRole('button', { name: 'Upload dash-typed to an image' }).click();
    await page.getByLabel('New image name').fill('dash-upload');
    await page.getByRole('button', { name: 'Upload to image', exact: true }).click();
    await page.getByRole('status').filter({ hasText: 'is being uploaded to image dash-upload' }).waitFor();
    await row(page, 'volume', 'dash-typed').getByText('uploading', { exact: true }).waitFor();
    assert.deepEqual(await unlabelledControls(page), []);
    await shot(page, '21-volume-upload');

    // The image: shared with a project, and a property from the metadefs catalog.
    const other = await admin.request('POST', '/identity/v3/projects', { project: { name: 'dash-share', domain_id: 'default' } });
    const otherId = other.body.project.id as string;
    await page.getByRole('link', { name: 'Images' }).click();
    // The upload's image is listed at once (its data follows; a 1 GiB copy is not waited for here).
    await row(page, 'image', 'dash-upload').waitFor();
    await page.getByRole('button', { name: 'Sharing and properties of test-guest' }).click();
    await page.getByLabel('Visibility').selectOption('shared');
    await page.getByRole('button', { name: 'Set visibility' }).click();
    await row(page, 'image', 'test-guest').getByText('shared', { exact: true }).waitFor();
    await page.getByLabel('Project ID to share with').fill(otherId);
    await page.getByRole('button', { name: 'Share', exact: true }).click();
    await row(page, 'member', otherId).getByText('pending').waitFor();
    await page.getByLabel('Property').selectOption('os_distro');
    await page.getByLabel('Value', { exact: true }).selectOption('debian');
    await page.getByRole('button', { name: 'Set property' }).click();
    await page.getByRole('status').filter({ hasText: 'os_distro = debian' }).waitFor();
    const image = (await admin.request('GET', `/image/v2/images/${guestImageId}`)).body;
    assert.equal(image.visibility, 'shared');
    assert.equal(image.os_distro, 'debian');
    assert.equal((await admin.request('GET', `/image/v2/images/${guestImageId}/members`)).body.members[0].member_id, otherId);
    assert.deepEqual(await unlabelledControls(page), []);
    await shot(page, '22-image-sharing-properties');
    // Escape closes the panel, as it does the volume action forms.
    await page.getByLabel('Visibility').focus();
    await page.keyboard.press('Escape');
    await page.getByRole('region', { name: /^Image test-guest: sharing and properties/ }).waitFor({ state: 'detached' });

    // Hypervisors with capacity, and the health checks beside the services.
    await page.getByRole('link', { name: 'Hypervisors' }).click();
    const hypervisor = page.locator('tr[data-hypervisor]').first();
    await hypervisor.waitFor();
    await hypervisor.getByRole('progressbar', { name: /^vCPUs used on / }).waitFor();
    assert.match((await hypervisor.locator('td').nth(5).textContent())!, /\d+ of \d+ GiB \((local disk|RBD pool)/);
    await shot(page, '23-hypervisors');
    await page.getByRole('link', { name: 'Admin' }).click();
    await row(page, 'check', 'database').getByText('up', { exact: true }).waitFor();
    await page.locator('tr[data-check^="backend"]').first().waitFor();
    await shot(page, '24-admin-health');

    // Plots: each backend's capacity, the volume count, the request rate and backup throughput, drawn from the samples.
    await page.getByRole('link', { name: 'Plots' }).click();
    for (const title of ['Capacity of backend local', 'Volumes', 'API requests', 'Backup throughput']) await page.locator(`figure[data-chart="${title}"]`).waitFor();
    const capacity = page.locator('figure[data-chart="Capacity of backend local"]');
    // A flat line has no height, so Playwright calls it hidden: attached is what counts here.
    for (const series of ['provisioned', 'used', 'usable']) await capacity.locator(`polyline[data-series="${series}"]`).waitFor({ state: 'attached' });
    const volumeCount = ((await admin.request('GET', `/volume/v3/${admin.projectId}/volumes?all_tenants=1`)).body.volumes as unknown[]).length;
    await page.getByRole('img', { name: `Volumes: latest count ${volumeCount} volumes` }).waitFor();
    const points = await page.locator('figure[data-chart="API requests"] polyline').getAttribute('points');
    assert.ok(points!.split(' ').length >= 2, `the request rate has several points: ${points}`);
    await shot(page, '25-plots');
    await page.setViewportSize({ width: 390, height: 800 });
    await shot(page, '26-plots-narrow');
    await page.setViewportSize({ width: 1280, height: 800 });
    assert.deepEqual(problemsOf(page), []);
  });
});

async function memberClient(project: string, user: string): Promise<ApiClient> {
  const p = await admin.request('POST', '/identity/v3/projects', { project: { name: project, domain_id: 'default' } });
  const u = await admin.request('POST', '/identity/v3/users', { user: { name: user, password: `pw-${user}`, domain_id: 'default', default_project_id: p.body.project.id } });
  const roles = await admin.request('GET', '/identity/v3/roles?name=member');
  await admin.request('PUT', `/identity/v3/projects/${p.body.project.id}/users/${u.body.user.id}/roles/${roles.body.roles[0].id}`);
  return ApiClient.login(pumice.url, user, `pw-${user}`, project);
}
