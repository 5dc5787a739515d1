/**
 * First-start bootstrap, like `keystone-manage bootstrap`: the Default
 * domain, the admin and service projects, the default roles, the admin user,
 * region RegionOne and the service catalog. Idempotent: each piece is made
 * only if missing, so it runs at every start.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Db } from '../db/db.ts';
import { defaultDomainId, newId, type IdentityService } from './identity.ts';
import { verifyPassword } from './passwords.ts';
import { microversionMax } from '../volume/api/common.ts';

export interface BootstrapResult {
  /** Set only when the admin user was created now: the one time the password is shown. */
  generatedAdminPassword: string | null;
  adminPassword: string | null;
}

/** Catalog entries: [type, name, description, url template]. `$(base_url)s` is the address the client used. */
const catalogEntries: [string, string, string, string][] = [
  ['identity', 'keystone', 'Identity (Pumice)', '$(base_url)s/identity'],
  ['volumev3', 'cinderv3', 'Block Storage v3 (Pumice)', '$(base_url)s/volume/v3/$(project_id)s'],
  ['block-storage', 'cinder', 'Block Storage (Pumice)', '$(base_url)s/volume/v3/$(project_id)s'],
  ['image', 'glance', 'Image (Pumice)', '$(base_url)s/image'],
  ['compute', 'nova', 'Compute (Pumice)', '$(base_url)s/compute/v2.1'],
];

/**
 * `persistGenerated` is called with a generated admin password before the admin user is written:
 * the password reaches the 0600 admin-openrc first, so neither a failed start nor a crash can
 * leave an admin whose password nobody knows (issue 19).
 *
 * A password given for an existing admin (PUMICE_ADMIN_PASSWORD, `pumice admin reset-password`)
 * is handled by `onExistingAdmin`: 'reset' makes it the password and enables the admin, as
 * `keystone-manage bootstrap` does (`init`, `admin reset-password`); 'refuse' throws
 * AdminPasswordConflict when it is not the admin's password (`serve`: admin-openrc must never
 * name a password the database does not have); 'keep' leaves the admin as it is.
 */
export async function bootstrapIdentity(
  db: Db,
  identity: IdentityService,
  adminPasswordFromEnv: string | undefined,
  persistGenerated?: (password: string) => void,
  onExistingAdmin: 'keep' | 'reset' | 'refuse' = 'keep',
): Promise<BootstrapResult> {
  if (!db.get('SELECT 1 FROM domains WHERE id = ?', defaultDomainId)) identity.createDomain('Default', 'The default domain', defaultDomainId);
  for (const name of ['admin', 'member', 'reader']) if (!identity.findRoleByName(name)) identity.createRole(name);
  for (const name of ['admin', 'service']) {
    if (!identity.findProjectByName(name, defaultDomainId)) {
      identity.createProject({ name, domainId: defaultDomainId, description: name === 'admin' ? 'Bootstrap project for the cloud administrator' : 'Project of the service users' });
    }
  }
  let generated: string | null = null;
  let admin = identity.findUserByName('admin', defaultDomainId);
  if (!admin) {
    const password = adminPasswordFromEnv ?? (generated = generateAdminPassword());
    if (generated) persistGenerated?.(generated);
    admin = await identity.createUser({ name: 'admin', domainId: defaultDomainId, password });
  } else if (adminPasswordFromEnv !== undefined && onExistingAdmin !== 'keep') {
    // Verified first: an unchanged password must not revoke the admin's tokens at every start.
    const same = await verifyPassword(adminPasswordFromEnv, admin.password_hash);
    if (!same && onExistingAdmin === 'refuse') throw new AdminPasswordConflict();
    if (!same || !admin.enabled) admin = await identity.updateUser(admin.id, { ...(same ? {} : { password: adminPasswordFromEnv }), enabled: true });
  } else if (adminPasswordFromEnv !== undefined) {
    const same = await verifyPassword(adminPasswordFromEnv, admin.password_hash);
    if (!same) adminPasswordFromEnv = undefined;
  }
  const adminProject = identity.findProjectByName('admin', defaultDomainId)!;
  const adminRole = identity.findRoleByName('admin')!;
  if (!identity.hasRole(admin.id, adminProject.id, adminRole.id)) identity.grantRole(admin.id, 'project', adminProject.id, adminRole.id);
  if (!identity.hasRole(admin.id, defaultDomainId, adminRole.id)) identity.grantRole(admin.id, 'domain', defaultDomainId, adminRole.id);

  if (!db.get('SELECT 1 FROM regions WHERE id = ?', 'RegionOne')) db.run("INSERT INTO regions (id, description) VALUES ('RegionOne', '')");
  for (const [type, name, description, url] of catalogEntries) {
    if (db.get('SELECT 1 FROM catalog_services WHERE type = ?', type)) continue;
    const serviceId = newId();
    db.run('INSERT INTO catalog_services (id, type, name, description) VALUES (?, ?, ?, ?)', serviceId, type, name, description);
    for (const iface of ['public', 'internal', 'admin']) {
      db.run('INSERT INTO catalog_endpoints (id, service_id, interface, region_id, url) VALUES (?, ?, ?, ?, ?)', newId(), serviceId, iface, 'RegionOne', url);
    }
  }
  return { generatedAdminPassword: generated, adminPassword: generated ?? adminPasswordFromEnv ?? null };
}

/** PUMICE_ADMIN_PASSWORD is not the existing admin's password, and this start may not change it. */
export class AdminPasswordConflict extends Error {
  constructor() {
    super(
      "PUMICE_ADMIN_PASSWORD is not the admin user's password in this data directory, and serve does not change it. " +
        'Fix: set it with pumice init (PUMICE_ADMIN_PASSWORD=... pumice init --data-dir DIR) or pumice admin reset-password --data-dir DIR --password-file FILE, or unset PUMICE_ADMIN_PASSWORD',
    );
  }
}

export function generateAdminPassword(): string {
  return randomBytes(15).toString('base64url');
}

/** The highest Block Storage microversion Pumice serves. */
export const volumeApiVersionMax = `3.${microversionMax}`;

/**
 * admin-openrc leaves OS_VOLUME_API_VERSION unset: with Debian's openstackclient 6.0, any
 * version from 3.66 makes `openstack volume snapshot create` fail before it sends anything
 * (OSC always passes force=False, which cinderclient refuses from 3.66), so the clients'
 * default (3.0) stays and a command that needs more asks for it.
 */
const volumeApiVersionNote = `# OS_VOLUME_API_VERSION is left unset (Pumice serves up to ${volumeApiVersionMax}): from 3.66 openstackclient 6.0's 'volume snapshot create' fails in cinderclient; ask per command, e.g. --os-volume-api-version ${volumeApiVersionMax}`;

/**
 * Writes `admin-openrc` (mode 0600). The password is known only when the
 * admin was just created or given by environment; otherwise the existing file
 * keeps its password and only OS_AUTH_URL is brought up to date. With no
 * password known at all, the file says how to set one instead of exporting
 * an empty OS_PASSWORD (which fails every login with a 401).
 */
export function writeAdminOpenrc(dataDir: string, authUrl: string, password: string | null): string {
  const path = join(dataDir, 'admin-openrc');
  let existingPassword: string | null = null;
  if (existsSync(path)) {
    const match = /^export OS_PASSWORD=(.*)$/m.exec(readFileSync(path, 'utf8'));
    existingPassword = match ? shellUnquote(match[1]!) : null;
  }
  const effective = password ?? existingPassword;
  const text = [
    '# Pumice admin credentials: source this file, then use the openstack CLI.',
    `export OS_AUTH_URL=${authUrl}`,
    'export OS_USERNAME=admin',
    effective ? `export OS_PASSWORD=${shellQuote(effective)}` : '# OS_PASSWORD: unknown here; set a new one with: pumice admin reset-password --data-dir DIR',
    'export OS_PROJECT_NAME=admin',
    'export OS_USER_DOMAIN_NAME=Default',
    'export OS_PROJECT_DOMAIN_NAME=Default',
    'export OS_IDENTITY_API_VERSION=3',
    'export OS_REGION_NAME=RegionOne',
    'export OS_INTERFACE=public',
    volumeApiVersionNote,
    '',
  ].join('\n');
  writeFileSync(path, text, { mode: 0o600 });
  chmodSync(path, 0o600);
  return path;
}

/** Single-quotes a value for sh: a quote inside becomes '\'' (so `$`, backticks and quotes stay literal). */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, "'\\''")}'`;
}

/** Reads back what shellQuote wrote (and a bare or simply quoted value from older files). */
export function shellUnquote(text: string): string {
  let out = '';
  for (const m of text.matchAll(/'([^']*)'|\\(.)|([^'\\]+)/g)) out += m[1] ?? m[2] ?? m[3] ?? '';
  return out;
}
