/**
 * The web dashboard in a real browser (Debian's chromium driven by playwright-core) against a real
 * Pumice: a member logs in, uploads an image, creates a volume from it and watches it become
 * available, snapshots it, backs it up with progress, restores it and deletes; an administrator sees
 * the local backend go down with its reason; the volume create flow works with the keyboard alone.
 * Screenshots of every page go to test-output/screenshots/ (not committed) for a person to look at.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ApiClient, repoRoot, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const screenshotDir = path.join(repoRoot, 'test-output', 'screenshots');
const config = `[DEFAULT]
report_interval = 1
service_down_time = 4
`;
/** Longest any single UI expectation waits: volume work on the local backend takes well under this. */
const uiTimeoutMs = 20_000;
/** The uploaded image: large enough that the upload and the backup of its volume show progress for a while. */
const imageBytes = 64 << 20;

let pumice: PumiceProcess;
let browser: Browser;
let admin: ApiClient;
/** The page of the running test: shot when the test fails, to show what it saw. */
let currentPage: Page | null = null;

const started = Date.now();
async function shot(page: Page, name: string): Promise<void> {
  if (process.env['DASH_TIMING']) console.log(name, Date.now() - started);
  await page.screenshot({ path: path.join(screenshotDir, `${name}.png`), fullPage: true });
}

/** A project with a member user, made through the Identity API as the admin. */
async function memberOf(project: string, user: string): Promise<void> {
  const p = await admin.request('POST', '/identity/v3/projects', { project: { name: project, domain_id: 'default' } });
  assert.equal(p.status, 201, p.text);
  const u = await admin.request('POST', '/identity/v3/users', { user: { name: user, password: `pw-${user}`, domain_id: 'default', default_project_id: p.body.project.id } });
  assert.equal(u.status, 201, u.text);
  const roles = await admin.request('GET', '/identity/v3/roles?name=member');
  const grant = await admin.request('PUT', `/identity/v3/projects/${p.body.project.id}/users/${u.body.user.id}/roles/${roles.body.roles[0].id}`);
  assert.equal(grant.status, 204, grant.text);
}

async function logIn(page: Page, user: string, password: string): Promise<void> {
  await page.goto(`${pumice.url}/`, { waitUntil: 'domcontentloaded' });
  assert.equal(new URL(page.url()).pathname, '/dashboard/', 'a browser asking for / lands on the dashboard');
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('button', { name: 'Log out' }).waitFor();
}

async function newPage(width = 1280, height = 800): Promise<Page> {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  page.setDefaultTimeout(uiTimeoutMs);
  page.on('dialog', (dialog) => void dialog.accept());
  // A page script error or a CSP violation is a defect, whatever the page shows.
  const problems: string[] = [];
  page.on('pageerror', (error) => problems.push(error.message));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy|SyntaxError|TypeError|ReferenceError/.test(message.text())) problems.push(message.text());
  });
  (page as Page & { problems: string[] }).problems = problems;
  currentPage = page;
  return page;
}

function problemsOf(page: Page): string[] {
  return (page as Page & { problems: string[] }).problems;
}

const row = (page: Page, attribute: string, name: string) => page.locator(`tr[data-${attribute}="${name}"]`);

describe('dashboard', { timeout: 240_000 }, () => {
  before(async () => {
    mkdirSync(screenshotDir, { recursive: true });
    pumice = await startPumice({ config });
    if (process.env['DASH_TIMING']) console.log('pumice started', Date.now() - started);
    admin = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  });
  afterEach(async (t) => {
    const page = currentPage;
    currentPage = null;
    if (!page || page.isClosed()) return;
    await shot(page, `failed-${t.name.slice(0, 40).replace(/[^a-z0-9]+/gi, '-')}`).catch(() => {});
    await page.context().close();
  });
  after(async () => {
    await browser?.close();
    await pumice?.stop();
    pumice?.cleanup();
  });

  test('/ keeps answering API clients with the version document; browsers are sent to /dashboard/, served with a strict CSP', async () => {
    for (const accept of [undefined, 'application/json', '*/*']) {
      const res = await fetch(`${pumice.url}/`, { headers: accept ? { Accept: accept } : {}, redirect: 'manual' });
      assert.equal(res.status, 200, `Accept: ${accept}`);
      assert.equal(((await res.json()) as { name: string }).name, 'Pumice');
    }
    const browserAsk = await fetch(`${pumice.url}/`, { headers: { Accept: 'text/html,application/xhtml+xml,*/*;q=0.8' }, redirect: 'manual' });
    assert.equal(browserAsk.status, 302);
    assert.equal(browserAsk.headers.get('location'), '/dashboard/');
    const page = await fetch(`${pumice.url}/dashboard/volumes`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type')!, /^text\/html/);
    const csp = page.headers.get('content-security-policy')!;
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/, 'no inline scripts, no eval');
    assert.match(csp, /frame-ancestors 'none'/);
    const text = await page.text();
    assert.doesNotMatch(text, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script in the page');
    for (const escape of ['/dashboard/..%2f..%2fpackage.json', '/dashboard/%2e%2e/%2e%2e/package.json', '/dashboard/missing.js']) {
      assert.equal((await fetch(`${pumice.url}${escape}`)).status, 404, escape);
    }
    assert.equal((await fetch(`${pumice.url}/dashboard/vendor/preact-htm.js`)).status, 200);
  });

  test('a member logs in, uploads an image, creates a volume from it, snapshots, backs up with progress, restores, creates from the backup, switches project, deletes, logs out', async () => {
    await memberOf('dash-p', 'dash-u');
    const page = await newPage();
    const wrong = page;
    await wrong.goto(`${pumice.url}/dashboard/`);
    await wrong.getByLabel('User name').fill('dash-u');
    await wrong.getByLabel('Password').fill('not-the-password');
    await wrong.getByRole('button', { name: 'Log in' }).click();
    await wrong.getByRole('alert').filter({ hasText: 'HTTP 401' }).waitFor();
    await shot(page, '01-login-failed');

    await logIn(page, 'dash-u', 'pw-dash-u');
    assert.equal(await page.getByRole('link', { name: 'Admin' }).count(), 0, 'a member is not offered the admin page');
    assert.equal(await page.getByLabel('Project').inputValue().then(Boolean), true);
    const token = await page.evaluate(() => JSON.parse(sessionStorage.getItem('pumice.session')!).token as string);
    const projectId = await page.evaluate(() => JSON.parse(sessionStorage.getItem('pumice.session')!).project.id as string);
    assert.ok(!page.url().includes(token), 'the token is never in a URL');
    await shot(page, '02-volumes-empty');

    // Images: upload from the browser with a progress bar, through the Image API's PUT /file.
    await page.getByRole('link', { name: 'Images' }).click();
    await page.getByLabel('Image name').fill('dash-image');
    // Random bytes (they do not compress): the backup below takes long enough for its progress to show.
    const imageFile = path.join(pumice.dataDir, 'dash-image.raw');
    writeFileSync(imageFile, randomBytes(imageBytes));
    await page.getByLabel('File').setInputFiles(imageFile);
    await recordProgress(page);
    await page.getByRole('button', { name: 'Upload' }).click();
    await page.getByRole('status').filter({ hasText: 'Image dash-image uploaded.' }).waitFor();
    await row(page, 'image', 'dash-image').getByText('active').waitFor();
    await page.getByRole('button', { name: 'Deactivate dash-image' }).click();
    await row(page, 'image', 'dash-image').getByText('deactivated').waitFor();
    await page.getByRole('button', { name: 'Reactivate dash-image' }).click();
    await row(page, 'image', 'dash-image').getByText('active', { exact: true }).waitFor();
    const uploadSeen = await progressSeen(page, 'Upload progress');
    assert.ok(uploadSeen.some((v) => v > 0 && v < 100), `the upload's progress bar moved: ${uploadSeen.join(' ')}`);
    await shot(page, '03-images');

    // Volumes: create from the image, watch the status change without a reload.
    await page.getByRole('link', { name: 'Volumes' }).click();
    await page.getByLabel('Name', { exact: true }).fill('dash-vol');
    await page.getByLabel('Source').selectOption('image');
    await page.getByLabel('Image', { exact: true }).selectOption({ label: 'dash-image' });
    await page.getByRole('button', { name: 'Create volume' }).click();
    await row(page, 'volume', 'dash-vol').getByText('available', { exact: true }).waitFor();
    assert.equal(await row(page, 'volume', 'dash-vol').locator('td').nth(5).textContent(), 'true', 'bootable, from an image');
    await shot(page, '04-volume-available');

    // Snapshot, then a delete the API refuses: its fault message shows as the API gives it.
    await page.getByRole('button', { name: 'Snapshot dash-vol' }).click();
    await page.getByLabel('Snapshot name').fill('dash-snap');
    await page.getByRole('button', { name: 'Take snapshot' }).click();
    await page.getByRole('status').filter({ hasText: 'Snapshot of dash-vol is being taken.' }).waitFor();
    const member = Object.assign(new ApiClient(pumice.url), { token, projectId });
    await waitFor(async () => (await member.request('GET', `/volume/v3/${projectId}/snapshots/detail`)).body.snapshots[0]?.status === 'available');
    // The same request with the member's own token first, to compare the texts.
    const refusal = await member.request('DELETE', `/volume/v3/${projectId}/volumes/${await volumeIdOf(page, 'dash-vol')}`);
    assert.equal(refusal.status, 409, refusal.text);
    const refusalMessage = refusal.body.conflictingRequest.message as string;
    await page.getByRole('button', { name: 'Delete dash-vol' }).click();
    const fault = page.getByRole('alert').filter({ hasText: 'Delete dash-vol failed (HTTP 409)' });
    await fault.waitFor();
    assert.ok((await fault.textContent())!.includes(refusalMessage), `the API's own message is shown: ${refusalMessage}`);
    await shot(page, '05-volume-delete-refused');

    // Back up: progress shown while it runs (the backups page keeps the final 100%).
    await page.getByRole('button', { name: 'Back up dash-vol' }).click();
    await page.getByLabel('Backup name').fill('dash-backup');
    await page.getByRole('button', { name: 'Start backup' }).click();
    await page.getByRole('status').filter({ hasText: 'Backup of dash-vol started' }).waitFor();
    await page.getByRole('progressbar', { name: 'Progress of backup dash-backup' }).first().waitFor();
    await shot(page, '06-backup-progress');
    await page.getByRole('link', { name: 'Backups' }).click();
    await row(page, 'backup', 'dash-backup').getByText('available', { exact: true }).waitFor();
    // While it ran, the bar showed the API's figure (Pumice-Backup-Progress), not only a placeholder.
    const backupSeen = (await progressSeen(page, 'Progress of backup dash-backup text')) as unknown as string[];
    assert.ok(backupSeen.some((t) => /\d+% \(\d+\/\d+ bytes\)/.test(t)), `the backup's progress showed while it ran: ${JSON.stringify(backupSeen)}`);
    await shot(page, '07-backups');

    // Restore to a new volume; it shows on the volumes page and becomes available.
    await row(page, 'backup', 'dash-backup').getByRole('button', { name: 'Restore dash-backup' }).click();
    await page.getByRole('status').filter({ hasText: 'being restored' }).waitFor();
    await page.getByRole('link', { name: 'Volumes' }).click();
    await row(page, 'volume', 'dash-backup-restored').getByText('available', { exact: true }).waitFor({ timeout: 40_000 });
    // A new volume from the backup through the create form (backup_id, Block Storage 3.47).
    await page.getByLabel('Name', { exact: true }).fill('dash-from-backup');
    await page.getByLabel('Source').selectOption('backup');
    await page.getByLabel('Backup', { exact: true }).selectOption({ label: 'dash-backup (1 GiB)' });
    await page.getByRole('button', { name: 'Create volume' }).click();
    await row(page, 'volume', 'dash-from-backup').getByText('available', { exact: true }).waitFor({ timeout: 40_000 });

    await page.getByRole('link', { name: 'Snapshots' }).click();
    await row(page, 'snapshot', 'dash-snap').getByText('available', { exact: true }).waitFor();
    await shot(page, '08-snapshots');
    await row(page, 'snapshot', 'dash-snap').getByRole('button', { name: 'Delete dash-snap' }).click();
    await row(page, 'snapshot', 'dash-snap').waitFor({ state: 'detached' });

    await page.getByRole('link', { name: 'Quotas' }).click();
    await page.getByRole('progressbar', { name: 'Volumes used' }).waitFor();
    assert.equal(await page.getByRole('progressbar', { name: 'Volumes used' }).getAttribute('value'), String(Math.round((3 / 10) * 100)), 'three volumes of a quota of ten');
    await shot(page, '09-quotas');

    assert.equal(await page.evaluate('typeof window.progressSeen'), 'object', 'no full-page load since the upload: the pages update in place');
    await page.getByRole('link', { name: 'Volumes' }).click();
    // The project switcher: a second project of the same user; its list is its own; the token of the project left is revoked.
    const other = await admin.request('POST', '/identity/v3/projects', { project: { name: 'dash-p2', domain_id: 'default' } });
    const memberRole = (await admin.request('GET', '/identity/v3/roles?name=member')).body.roles[0].id;
    const userId = (await admin.request('GET', '/identity/v3/users?name=dash-u')).body.users[0].id;
    assert.equal((await admin.request('PUT', `/identity/v3/projects/${other.body.project.id}/users/${userId}/roles/${memberRole}`)).status, 204);
    await page.reload();
    await row(page, 'volume', 'dash-vol').waitFor();
    await page.getByLabel('Project').selectOption({ label: 'dash-p2' });
    await page.getByText('No volumes in this project yet.').waitFor();
    assert.equal(await row(page, 'volume', 'dash-vol').count(), 0);
    const switched = await page.evaluate(() => JSON.parse(sessionStorage.getItem('pumice.session')!).token as string);
    assert.notEqual(switched, token);
    assert.equal((await fetch(`${pumice.url}/volume/v3/${projectId}/volumes`, { headers: { 'X-Auth-Token': token } })).status, 401, 'the token of the project left is revoked');
    await shot(page, '10-project-switched');
    await page.getByLabel('Project').selectOption({ label: 'dash-p' });
    await row(page, 'volume', 'dash-vol').waitFor();
    const lastToken = await page.evaluate(() => JSON.parse(sessionStorage.getItem('pumice.session')!).token as string);

    for (const name of ['dash-vol', 'dash-backup-restored', 'dash-from-backup']) {
      await page.getByRole('button', { name: `Delete ${name}` }).click();
      await row(page, 'volume', name).waitFor({ state: 'detached' });
    }

    await page.getByRole('link', { name: 'Instances' }).click();
    await page.getByText('No instances.').waitFor();
    await shot(page, '11-instances');
    await page.getByRole('link', { name: 'Volumes' }).click();

    // A narrow screen: the same page, usable.
    await page.setViewportSize({ width: 390, height: 800 });
    await shot(page, '12-volumes-narrow');
    await page.setViewportSize({ width: 1280, height: 800 });

    await page.getByRole('button', { name: 'Log out' }).click();
    await page.getByRole('status').filter({ hasText: 'token is revoked' }).waitFor();
    const revoked = await fetch(`${pumice.url}/volume/v3/${projectId}/volumes`, { headers: { 'X-Auth-Token': lastToken } });
    assert.equal(revoked.status, 401, 'logout revoked the token');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('pumice.session')), null);
    assert.deepEqual(problemsOf(page), []);
    await page.context().close();
  });

  test('keyboard only: log in and create a volume', async () => {
    await memberOf('key-p', 'key-u');
    const page = await newPage();
    await page.goto(`${pumice.url}/dashboard/`);
    // Focus starts in the user name field; Tab order: user name, password, log in.
    // A function, not a string: a string predicate needs eval, which the dashboard's CSP forbids.
    await page.waitForFunction(() => document.activeElement?.getAttribute('name') === 'user');
    await page.keyboard.type('key-u');
    await page.keyboard.press('Tab');
    await page.keyboard.type('pw-key-u');
    await page.keyboard.press('Enter');
    await page.getByRole('button', { name: 'Log out' }).waitFor();
    // From the top of the page: skip link, project, log out, the page links, then the create form.
    const focusOn = async (label: string, limit = 20): Promise<void> => {
      for (let i = 0; i < limit; i++) {
        await page.keyboard.press('Tab');
        const focused = await page.evaluate(() => {
          const el = document.activeElement as HTMLElement | null;
          const label = (el as HTMLInputElement | null)?.labels?.[0]?.textContent ?? el?.textContent ?? '';
          return label.trim();
        });
        if (focused === label) return;
      }
      throw new Error(`Tab never reached ${label}`);
    };
    await focusOn('Name');
    await page.keyboard.type('key-vol');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Control+A');
    await page.keyboard.type('2');
    await focusOn('Create volume');
    await page.keyboard.press('Enter');
    await row(page, 'volume', 'key-vol').getByText('available', { exact: true }).waitFor();
    assert.equal(await row(page, 'volume', 'key-vol').locator('td').nth(2).textContent(), '2 GiB');
    // Extend from the keyboard: the action form takes focus, Enter submits it.
    await page.getByRole('button', { name: 'Extend key-vol' }).focus();
    await page.keyboard.press('Enter');
    // Preact runs effects after the paint: wait for the focus to move rather than look at once.
    await page.waitForFunction(() => document.activeElement?.getAttribute('name') === 'size');
    await page.keyboard.press('Enter');
    await row(page, 'volume', 'key-vol').getByText('3 GiB').waitFor();
    await shot(page, '13-keyboard-create');
    assert.deepEqual(problemsOf(page), []);
    await page.context().close();
  });

  test('an administrator sees the local backend go down, with the reason, on the services page; a revoked token ends the session', async () => {
    const page = await newPage();
    await logIn(page, 'admin', pumice.adminPassword);
    await page.getByRole('link', { name: 'Admin' }).click();
    const local = page.locator('tr[data-service="cinder-volume@pumice@local"]');
    await local.getByText('up', { exact: true }).waitFor();
    await page.getByRole('region', { name: 'Users' }).getByText('admin', { exact: true }).waitFor();
    await page.getByRole('region', { name: 'Projects' }).getByText('service', { exact: false }).waitFor();
    await page.getByRole('region', { name: 'Roles' }).getByText('reader', { exact: true }).waitFor();
    await shot(page, '14-admin-up');
    const volumeDir = path.join(pumice.dataDir, 'volumes', 'local');
    renameSync(volumeDir, `${volumeDir}.away`);
    symlinkSync('/nonexistent-pumice-dashboard-directory', volumeDir);
    try {
      await local.getByText('down', { exact: true }).waitFor();
      await local.locator('td.reason').filter({ hasText: /nonexistent-pumice-dashboard-directory|ENOENT/ }).waitFor();
      await shot(page, '15-admin-backend-down');
    } finally {
      rmSync(volumeDir);
      renameSync(`${volumeDir}.away`, volumeDir);
    }
    await local.getByText('up', { exact: true }).waitFor();
    // A token revoked elsewhere (here by the API): the next poll's 401 brings the login form back, saying why.
    const dashboardToken = await page.evaluate(() => JSON.parse(sessionStorage.getItem('pumice.session')!).token as string);
    assert.equal((await admin.request('DELETE', '/identity/v3/auth/tokens', undefined, { 'X-Subject-Token': dashboardToken })).status, 204);
    await page.getByRole('status').filter({ hasText: /Your session ended \(.+\)\. Log in again\./ }).waitFor();
    await page.getByLabel('Password').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('pumice.session')), null);
    assert.deepEqual(problemsOf(page), []);
    await page.context().close();
  });
});

/** Records, in the page, every value each progress bar takes (by its accessible label), from now on. */
async function recordProgress(page: Page): Promise<void> {
  // A string, not a function: tsx's helpers (`__name`) do not exist in the page.
  await page.evaluate(`(() => {
    const seen = {};
    window.progressSeen = seen;
    new MutationObserver(() => {
      for (const bar of document.querySelectorAll('progress')) {
        const label = bar.getAttribute('aria-label') ?? '';
        const values = (seen[label] ??= []);
        const value = Number(bar.getAttribute('value'));
        if (values[values.length - 1] !== value) values.push(value);
        // The figure beside the bar, as the API gave it ('42% (450887680/1073741824 bytes)').
        const texts = (seen[label + ' text'] ??= []);
        const text = bar.parentElement?.textContent ?? '';
        if (texts[texts.length - 1] !== text) texts.push(text);
      }
    }).observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ['value'] });
  })()`);
}

async function progressSeen(page: Page, label: string): Promise<number[]> {
  return page.evaluate((l) => (window as unknown as { progressSeen: Record<string, number[]> }).progressSeen[l] ?? [], label);
}

async function waitFor(check: () => Promise<boolean>, timeoutMs = uiTimeoutMs): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function volumeIdOf(page: Page, name: string): Promise<string> {
  return (await row(page, 'volume', name).locator('code').getAttribute('title'))!;
}
