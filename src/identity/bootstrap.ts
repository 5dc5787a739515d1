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

export async function bootstrapIdentity(db: Db, identity: IdentityService, adminPasswordFromEnv: string | undefined): Promise<BootstrapResult> {
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
    const password = adminPasswordFromEnv ?? (generated = randomBytes(15).toString('base64url'));
    admin = await identity.createUser({ name: 'admin', domainId: defaultDomainId, password });
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

/**
 * Writes `admin-openrc` (mode 0600). The password is known only when the
 * admin was just created or given by environment; otherwise the existing file
 * keeps its password and only OS_AUTH_URL is brought up to date.
 */
export function writeAdminOpenrc(dataDir: string, authUrl: string, password: string | null): string {
  const path = join(dataDir, 'admin-openrc');
  let existingPassword: string | null = null;
  if (existsSync(path)) {
    const match = /^export OS_PASSWORD=(.*)$/m.exec(readFileSync(path, 'utf8'));
    existingPassword = match ? shellUnquote(match[1]!) : null;
  }
  const effective = password ?? existingPassword ?? '';
  const text = [
    '# Pumice admin credentials: source this file, then use the openstack CLI.',
    `export OS_AUTH_URL=${authUrl}`,
    'export OS_USERNAME=admin',
    `export OS_PASSWORD=${shellQuote(effective)}`,
    'export OS_PROJECT_NAME=admin',
    'export OS_USER_DOMAIN_NAME=Default',
    'export OS_PROJECT_DOMAIN_NAME=Default',
    'export OS_IDENTITY_API_VERSION=3',
    'export OS_REGION_NAME=RegionOne',
    'export OS_INTERFACE=public',
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
