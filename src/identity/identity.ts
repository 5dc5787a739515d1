/**
 * Identity domain logic: domains, projects, users, roles, assignments, the
 * service catalog and tokens. Tokens are opaque random ids (256 bits) kept
 * only by the client: the database holds their SHA-256 (so revocations survive
 * a restart, and a copy of the database gives no usable token), with an
 * in-memory validation cache that every identity change clears. Password
 * logins follow Keystone's [security_compliance] lockout and leave an audit
 * line for every failure.
 */
import { createHash, createHmac, hash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Db } from '../db/db.ts';
import { errors, PumiceError } from '../errors.ts';
import type { AuthContext } from '../http/router.ts';
import { ApplicationCredentialStore } from './application-credentials.ts';
import type { AccessRule } from './access-rules.ts';
import { CredentialStore } from './credentials.ts';
import { hashPassword, verifyPassword } from './passwords.ts';
import { TrustStore, type TrustRow } from './trusts.ts';

export interface DomainRow { id: string; name: string; description: string; enabled: number }
export interface ProjectRow { id: string; name: string; domain_id: string; description: string; enabled: number; parent_id: string | null; tags: string; options: string }
export interface UserRow { id: string; name: string; domain_id: string; password_hash: string | null; enabled: number; default_project_id: string | null; description: string | null; email: string | null; extra: string; password_changed_at: string | null; failed_auth_count?: number; failed_auth_at?: string | null }
export interface RoleRow { id: string; name: string; description: string | null; domain_id: string | null }
export interface AssignmentRow { actor_id: string; target_id: string; target_type: 'project' | 'domain'; role_id: string }
export interface CatalogServiceRow { id: string; type: string; name: string; description: string; enabled: number }
export interface EndpointRow { id: string; service_id: string; interface: string; region_id: string | null; url: string; enabled: number }
export interface RegionRow { id: string; description: string; parent_region_id: string | null }
export interface GroupRow { id: string; name: string; domain_id: string; description: string }
export interface ApplicationCredentialRow {
  id: string; name: string; user_id: string; project_id: string; secret_hash: string; description: string | null; expires_at: string | null;
  unrestricted: number; roles: string; access_rules: string; created_at: string;
}
interface TokenRow {
  id: string; user_id: string; project_id: string | null; domain_id: string | null; methods: string; audit_id: string; audit_chain_id: string | null;
  issued_at: string; expires_at: string; revoked: number; system_scope: number; application_credential_id: string | null;
  trust_id: string | null;
}

export interface ProjectFilter { name?: string | null; domainId?: string | null; parentId?: string | null; enabled?: boolean; assignedTo?: string | null }
/**
 * One row of /v3/role_assignments: the actor is a user or a group, the target a project, a domain
 * or the system; `via_group` is set on an effective row that a user holds through that group.
 */
export interface RoleAssignmentListRow {
  actor_type: 'user' | 'group'; actor_id: string; target_type: 'project' | 'domain' | 'system'; target_id: string; role_id: string;
  via_group: string | null;
}

export const defaultDomainId = 'default';
const validationCacheMax = 50_000;
/**
 * How often a process looks at the identity change counter (identity_changes) before it reuses a
 * cached token validation: a token revoked (a user disabled, a role removed) by another process —
 * another API host on the same PostgreSQL, the CLI on the SQLite file — stops validating here
 * within this bound. A change made by this process empties its cache at once.
 */
const identityChangeCheckMs = 1000;
/** Longest a validation is reused, counter or not (a process that died between a change and its count). */
const validationCacheTtlMs = 5 * 60_000;

export function newId(): string {
  return randomUUID().replace(/-/g, '');
}

export type Scope =
  | { kind: 'unscoped' }
  | { kind: 'project'; projectId: string }
  | { kind: 'domain'; domainId: string }
  | { kind: 'system' };

/** The target id system role assignments of groups are stored under. */
export const systemTargetId = 'system';

/** The digest a token is stored and cached under; the token itself is never stored. */
export function tokenDigest(tokenId: string): string {
  // One call, no Hash object: every authenticated request digests its token.
  return hash('sha256', tokenId, 'hex');
}

export interface LoginPolicy {
  /** Keystone's lockout_failure_attempts: failed logins in a row that lock a user (0: never). */
  lockoutFailureAttempts: number;
  /** Keystone's lockout_duration in seconds. */
  lockoutDurationSeconds: number;
  /** Audit log (failed logins, lockouts). */
  log: (message: string) => void;
  /** Keystone's password_regex: every new password set through the API must match it (empty or absent: any). */
  passwordRegex?: string;
  /** Keystone's password_regex_description: the rule in words, for the 400 that refuses a password. */
  passwordRegexDescription?: string;
  /** Where credential.key (the key of /v3/credentials blobs) lives: the data directory; absent: beside a SQLite database. */
  credentialKeyDirectory?: string;
}

const defaultLoginPolicy: LoginPolicy = { lockoutFailureAttempts: 0, lockoutDurationSeconds: 300, log: () => undefined };

/**
 * Recent successful logins, so a client that logs in for every command (the openstack CLI does)
 * pays the ~250 ms scrypt once per few minutes: per user, an HMAC under a key that lives only in
 * this process of (user, stored hash, password). A new password changes the stored hash, so the
 * entry no longer matches; a wrong password never matches and costs a full scrypt as before.
 */
const verifiedLoginTtlMs = 5 * 60_000;
const verifiedLoginsMax = 10_000;

export class IdentityService {
  private readonly validationCache = new Map<string, { context: AuthContext; cachedAtMs: number }>();
  /** The identity change counter when last looked at (null: not yet), and when. */
  private identityGeneration: number | null = null;
  private identityCheckedAtMs = 0;
  private readonly verifiedLoginKey = randomBytes(32);
  private readonly verifiedLogins = new Map<string, { tag: Buffer; expiresAtMs: number }>();
  /** /v3/credentials: blobs encrypted at rest. */
  readonly credentials: CredentialStore;
  /** /v3/users/{id}/application_credentials. */
  readonly applicationCredentials: ApplicationCredentialStore;
  /** /v3/OS-TRUST/trusts. */
  readonly trusts: TrustStore;

  constructor(
    private readonly db: Db,
    private readonly tokenLifetimeSeconds: number,
    private readonly loginPolicy: LoginPolicy = defaultLoginPolicy,
  ) {
    this.credentials = new CredentialStore(db, loginPolicy.credentialKeyDirectory ?? null);
    this.applicationCredentials = new ApplicationCredentialStore(db, this);
    this.trusts = new TrustStore(db, this);
  }

  /**
   * Clears cached token validations; called after any change to users, roles or assignments.
   * Counted in identity_changes, so that other processes drop theirs within identityChangeCheckMs.
   */
  invalidateCache(): void {
    this.validationCache.clear();
    this.noteIdentityChange();
  }

  private noteIdentityChange(): void {
    this.db.run('INSERT INTO identity_changes (id, generation) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET generation = identity_changes.generation + 1');
  }

  /** Drops the cached validations when another process changed identity since the last look (at most one read a second). */
  private dropCacheIfChangedElsewhere(nowMs: number): void {
    if (nowMs - this.identityCheckedAtMs < identityChangeCheckMs && nowMs >= this.identityCheckedAtMs) return;
    const generation = this.db.get<{ generation: number }>('SELECT generation FROM identity_changes WHERE id = 1')?.generation ?? 0;
    this.identityCheckedAtMs = nowMs;
    if (generation !== this.identityGeneration) this.validationCache.clear();
    this.identityGeneration = generation;
  }

  // ---- lookups ----
  domain(id: string): DomainRow {
    return this.db.get<DomainRow>('SELECT * FROM domains WHERE id = ?', id) ?? notFound('Could not find domain', id);
  }
  findDomainByName(name: string): DomainRow | undefined {
    return this.db.get<DomainRow>('SELECT * FROM domains WHERE name = ?', name);
  }
  project(id: string): ProjectRow {
    return this.db.get<ProjectRow>('SELECT * FROM projects WHERE id = ?', id) ?? notFound('Could not find project', id);
  }
  findProject(id: string): ProjectRow | undefined {
    return this.db.get<ProjectRow>('SELECT * FROM projects WHERE id = ?', id);
  }
  findProjectByName(name: string, domainId: string): ProjectRow | undefined {
    return this.db.get<ProjectRow>('SELECT * FROM projects WHERE name = ? AND domain_id = ?', name, domainId);
  }
  user(id: string): UserRow {
    return this.db.get<UserRow>('SELECT * FROM users WHERE id = ?', id) ?? notFound('Could not find user', id);
  }
  findUserByName(name: string, domainId: string): UserRow | undefined {
    return this.db.get<UserRow>('SELECT * FROM users WHERE name = ? AND domain_id = ?', name, domainId);
  }
  role(id: string): RoleRow {
    return this.db.get<RoleRow>('SELECT * FROM roles WHERE id = ?', id) ?? notFound('Could not find role', id);
  }
  findRoleById(id: string): RoleRow | undefined {
    return this.db.get<RoleRow>('SELECT * FROM roles WHERE id = ?', id);
  }
  findRoleByName(name: string): RoleRow | undefined {
    return this.db.get<RoleRow>('SELECT * FROM roles WHERE name = ?', name);
  }

  findDomain(id: string): DomainRow | undefined {
    return this.db.get<DomainRow>('SELECT * FROM domains WHERE id = ?', id);
  }
  findUser(id: string): UserRow | undefined {
    return this.db.get<UserRow>('SELECT * FROM users WHERE id = ?', id);
  }

  // ---- listings ----
  /** Every domain, or the one named `name` (empty when none), by name. */
  listDomains(name: string | null): DomainRow[] {
    return name !== null ? this.db.all<DomainRow>('SELECT * FROM domains WHERE name = ?', name) : this.db.all<DomainRow>('SELECT * FROM domains ORDER BY name');
  }

  /** Domains on which `userId` holds a role, by name. */
  domainsWithRoleFor(userId: string): DomainRow[] {
    return this.db.all<DomainRow>(
      `SELECT DISTINCT d.* FROM domains d WHERE d.id IN (SELECT target_id FROM role_assignments WHERE actor_id = ?)
       OR d.id IN (SELECT g.target_id FROM group_role_assignments g JOIN group_members m ON m.group_id = g.group_id WHERE m.user_id = ? AND g.target_type = 'domain')
       ORDER BY d.name`,
      userId, userId,
    );
  }

  /** Projects matching every given filter, by name; `assignedTo` keeps those on which that user holds a role. */
  listProjects(filter: ProjectFilter): ProjectRow[] {
    const conditions: string[] = [];
    const params: (string | number)[] = [];
    const add = (sql: string, value: string | number | undefined | null) => {
      if (value === undefined || value === null) return;
      conditions.push(sql);
      params.push(value);
    };
    add('name = ?', filter.name);
    add('domain_id = ?', filter.domainId);
    add('parent_id = ?', filter.parentId);
    add('enabled = ?', filter.enabled === undefined ? undefined : filter.enabled ? 1 : 0);
    if (filter.assignedTo !== undefined && filter.assignedTo !== null) {
      conditions.push(`(id IN (SELECT target_id FROM role_assignments WHERE actor_id = ?)
        OR id IN (SELECT g.target_id FROM group_role_assignments g JOIN group_members m ON m.group_id = g.group_id WHERE m.user_id = ? AND g.target_type = 'project'))`);
      params.push(filter.assignedTo, filter.assignedTo);
    }
    return this.db.all<ProjectRow>(`SELECT * FROM projects ${conditions.length ? 'WHERE ' + conditions.join(' AND ') : ''} ORDER BY name`, ...params);
  }

  /** Users matching every given filter, by name. */
  listUsers(filter: { name?: string | null; domainId?: string | null }): UserRow[] {
    const conditions: string[] = [];
    const params: string[] = [];
    if (filter.name !== undefined && filter.name !== null) {
      conditions.push('name = ?');
      params.push(filter.name);
    }
    if (filter.domainId !== undefined && filter.domainId !== null) {
      conditions.push('domain_id = ?');
      params.push(filter.domainId);
    }
    return this.db.all<UserRow>(`SELECT * FROM users ${conditions.length ? 'WHERE ' + conditions.join(' AND ') : ''} ORDER BY name`, ...params);
  }

  /** Every role, or the one named `name`, by name. */
  listRoles(name: string | null): RoleRow[] {
    return name !== null ? this.db.all<RoleRow>('SELECT * FROM roles WHERE name = ?', name) : this.db.all<RoleRow>('SELECT * FROM roles ORDER BY name');
  }

  /** Roles granted directly (no implied roles) to `actorId` on `targetId`, by name. */
  directRoles(actorId: string, targetId: string): RoleRow[] {
    return this.db.all<RoleRow>(
      'SELECT r.* FROM role_assignments a JOIN roles r ON r.id = a.role_id WHERE a.actor_id = ? AND a.target_id = ? ORDER BY r.name',
      actorId, targetId,
    );
  }

  /**
   * Role assignments matching every given filter, ordered by actor, target and role: users' and
   * groups' grants on projects and domains, and on the system. With `effective`, group grants are
   * expanded into one row per member (Keystone's `effective`), and a `groupId` filter is refused by
   * the caller (Keystone: 400).
   */
  roleAssignments(filter: { userId?: string | null; groupId?: string | null; projectId?: string | null; domainId?: string | null; system?: boolean; roleId?: string | null; effective?: boolean }): RoleAssignmentListRow[] {
    const direct = this.db.all<Omit<RoleAssignmentListRow, 'via_group'>>(
      `SELECT 'user' AS actor_type, actor_id, target_type, target_id, role_id FROM role_assignments
       UNION ALL SELECT 'user', user_id, 'system', '${systemTargetId}', role_id FROM system_role_assignments
       UNION ALL SELECT 'group', group_id, target_type, target_id, role_id FROM group_role_assignments`,
    );
    let rows: RoleAssignmentListRow[] = [];
    for (const row of direct) {
      if (filter.effective && row.actor_type === 'group') {
        for (const member of this.db.all<{ user_id: string }>('SELECT user_id FROM group_members WHERE group_id = ?', row.actor_id)) {
          rows.push({ ...row, actor_type: 'user', actor_id: member.user_id, via_group: row.actor_id });
        }
      } else rows.push({ ...row, via_group: null });
    }
    rows = rows.filter((r) =>
      (filter.userId == null || (r.actor_type === 'user' && r.actor_id === filter.userId))
      && (filter.groupId == null || (r.actor_type === 'group' && r.actor_id === filter.groupId))
      && (filter.projectId == null || (r.target_type === 'project' && r.target_id === filter.projectId))
      && (filter.domainId == null || (r.target_type === 'domain' && r.target_id === filter.domainId))
      && (!filter.system || r.target_type === 'system')
      && (filter.roleId == null || r.role_id === filter.roleId));
    const key = (r: RoleAssignmentListRow) => `${r.actor_type}\0${r.actor_id}\0${r.target_type}\0${r.target_id}\0${r.role_id}\0${r.via_group ?? ''}`;
    return rows.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  }

  // ---- writes ----
  createDomain(name: string, description = '', id = newId()): DomainRow {
    if (this.findDomainByName(name)) throw errors.conflict(`Conflict occurred attempting to store domain - Duplicate entry: a domain named '${name}' exists.`);
    this.db.run('INSERT INTO domains (id, name, description) VALUES (?, ?, ?)', id, name, description);
    return this.domain(id);
  }

  /**
   * Changes a domain's name, description or enabled flag. Disabling revokes the tokens scoped to
   * the domain or to its projects and of its users (Keystone), and refuses the default domain.
   */
  updateDomain(id: string, changes: { name?: string; description?: string | null; enabled?: boolean }): DomainRow {
    const domain = this.domain(id);
    if (changes.name !== undefined && changes.name !== domain.name && this.findDomainByName(changes.name)) {
      throw errors.conflict(`Conflict occurred attempting to update domain - a domain named '${changes.name}' exists.`);
    }
    if (changes.enabled === false && id === defaultDomainId) {
      throw new PumiceError('Forbidden', `The default domain '${defaultDomainId}' cannot be disabled: it holds the admin user and the service projects.`);
    }
    this.db.transaction(() => {
      this.db.run('UPDATE domains SET name = ?, description = ?, enabled = ? WHERE id = ?',
        changes.name ?? domain.name, changes.description === undefined || changes.description === null ? domain.description : changes.description,
        changes.enabled === undefined ? domain.enabled : changes.enabled ? 1 : 0, id);
      if (changes.enabled === false) {
        this.db.run(`UPDATE tokens SET revoked = 1 WHERE domain_id = ? OR project_id IN (SELECT id FROM projects WHERE domain_id = ?)
          OR user_id IN (SELECT id FROM users WHERE domain_id = ?)`, id, id, id);
      }
    });
    this.invalidateCache();
    return this.domain(id);
  }

  /**
   * Deletes a disabled, empty domain. Keystone's rule: an enabled domain is refused (403: disable
   * it first). Unlike Keystone, Pumice does not delete the domain's projects, users and groups with
   * it (projects own volumes and images): a domain that still holds any is a 409 naming them.
   */
  deleteDomain(id: string): void {
    const domain = this.domain(id);
    if (id === defaultDomainId) throw new PumiceError('Forbidden', `The default domain '${defaultDomainId}' cannot be deleted.`);
    if (domain.enabled) {
      throw new PumiceError('Forbidden', `Cannot delete a domain that is enabled: disable domain ${id} first (openstack domain set --disable ${domain.name}).`);
    }
    const count = (table: string) => this.db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM ${table} WHERE domain_id = ?`, id)!.n;
    const held = [['projects', count('projects')], ['users', count('users')], ['groups', count('identity_groups')]].filter(([, n]) => (n as number) > 0);
    if (held.length > 0) {
      throw errors.conflict(`Domain ${id} still holds ${held.map(([what, n]) => `${n} ${what}`).join(', ')}: delete them first (openstack project/user/group list --domain ${domain.name}).`);
    }
    this.db.transaction(() => {
      this.db.run('DELETE FROM role_assignments WHERE target_id = ?', id);
      this.db.run('DELETE FROM group_role_assignments WHERE target_id = ?', id);
      this.db.run('UPDATE tokens SET revoked = 1 WHERE domain_id = ?', id);
      this.db.run('DELETE FROM domains WHERE id = ?', id);
    });
    this.invalidateCache();
  }

  createProject(input: { name: string; domainId: string; description?: string; enabled?: boolean; tags?: string[]; id?: string }): ProjectRow {
    this.domain(input.domainId);
    if (this.findProjectByName(input.name, input.domainId)) {
      throw errors.conflict(`Conflict occurred attempting to store project - it is not permitted to have two projects with the same name in the same domain: ${input.name}.`);
    }
    const id = input.id ?? newId();
    this.db.run(
      'INSERT INTO projects (id, name, domain_id, description, enabled, parent_id, tags) VALUES (?, ?, ?, ?, ?, ?, ?)',
      id, input.name, input.domainId, input.description ?? '', input.enabled === false ? 0 : 1, input.domainId, JSON.stringify(input.tags ?? []),
    );
    return this.project(id);
  }

  updateProject(id: string, changes: { name?: string; description?: string; enabled?: boolean; tags?: string[] }): ProjectRow {
    const project = this.project(id);
    if (changes.name !== undefined && changes.name !== project.name && this.findProjectByName(changes.name, project.domain_id)) {
      throw errors.conflict(`Conflict occurred attempting to update project - a project named '${changes.name}' exists in this domain.`);
    }
    this.db.run(
      'UPDATE projects SET name = ?, description = ?, enabled = ?, tags = ? WHERE id = ?',
      changes.name ?? project.name,
      changes.description ?? project.description,
      changes.enabled === undefined ? project.enabled : changes.enabled ? 1 : 0,
      changes.tags ? JSON.stringify(changes.tags) : project.tags,
      id,
    );
    // Keystone revokes the project's tokens when it is disabled: re-enabling it does not revive them.
    if (changes.enabled === false) this.db.run('UPDATE tokens SET revoked = 1 WHERE project_id = ?', id);
    this.invalidateCache();
    return this.project(id);
  }

  deleteProject(id: string): void {
    this.project(id);
    this.db.transaction(() => {
      this.db.run('DELETE FROM role_assignments WHERE target_id = ?', id);
      this.db.run('UPDATE tokens SET revoked = 1 WHERE project_id = ?', id);
      this.db.run('DELETE FROM projects WHERE id = ?', id);
    });
    this.invalidateCache();
  }

  async createUser(input: { name: string; domainId: string; password?: string | null; enabled?: boolean; defaultProjectId?: string | null; description?: string | null; email?: string | null; id?: string }): Promise<UserRow> {
    this.domain(input.domainId);
    if (this.findUserByName(input.name, input.domainId)) {
      throw errors.conflict(`Conflict occurred attempting to store user - Duplicate entry found with name ${input.name} at domain ID ${input.domainId}.`);
    }
    if (input.defaultProjectId) this.project(input.defaultProjectId);
    const hash = input.password ? await hashPassword(input.password) : null;
    const id = input.id ?? newId();
    this.db.run(
      'INSERT INTO users (id, name, domain_id, password_hash, enabled, default_project_id, description, email, password_changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      id, input.name, input.domainId, hash, input.enabled === false ? 0 : 1, input.defaultProjectId ?? null, input.description ?? null, input.email ?? null,
      hash ? new Date().toISOString() : null,
    );
    return this.user(id);
  }

  async updateUser(id: string, changes: { name?: string; password?: string | null; enabled?: boolean; defaultProjectId?: string | null; description?: string | null; email?: string | null }): Promise<UserRow> {
    const user = this.user(id);
    if (changes.name !== undefined && changes.name !== user.name && this.findUserByName(changes.name, user.domain_id)) {
      throw errors.conflict(`Conflict occurred attempting to update user - a user named '${changes.name}' exists in this domain.`);
    }
    if (changes.defaultProjectId) this.project(changes.defaultProjectId);
    const hash = changes.password !== undefined ? (changes.password ? await hashPassword(changes.password) : null) : user.password_hash;
    this.db.transaction(() => {
      this.db.run(
        'UPDATE users SET name = ?, password_hash = ?, enabled = ?, default_project_id = ?, description = ?, email = ?, password_changed_at = ? WHERE id = ?',
        changes.name ?? user.name,
        hash,
        changes.enabled === undefined ? user.enabled : changes.enabled ? 1 : 0,
        changes.defaultProjectId === undefined ? user.default_project_id : changes.defaultProjectId,
        changes.description === undefined ? user.description : changes.description,
        changes.email === undefined ? user.email : changes.email,
        changes.password !== undefined ? new Date().toISOString() : user.password_changed_at,
        id,
      );
      // Keystone revokes a user's tokens when the user is disabled or the password changes.
      if (changes.enabled === false || changes.password !== undefined) this.db.run('UPDATE tokens SET revoked = 1 WHERE user_id = ?', id);
      // A new password or re-enabling lifts a lockout (Keystone: an administrator unlocks this way).
      if (changes.enabled === true || changes.password !== undefined) this.db.run('UPDATE users SET failed_auth_count = 0, failed_auth_at = NULL WHERE id = ?', id);
    });
    this.invalidateCache();
    return this.user(id);
  }

  deleteUser(id: string): void {
    this.user(id);
    this.db.transaction(() => {
      this.db.run('DELETE FROM role_assignments WHERE actor_id = ?', id);
      this.db.run('UPDATE tokens SET revoked = 1 WHERE user_id = ?', id);
      this.db.run('DELETE FROM users WHERE id = ?', id);
    });
    this.invalidateCache();
  }

  createRole(name: string, description: string | null = null, id = newId()): RoleRow {
    if (this.findRoleByName(name)) throw errors.conflict(`Conflict occurred attempting to store role - Duplicate entry found with name ${name}.`);
    this.db.run('INSERT INTO roles (id, name, description) VALUES (?, ?, ?)', id, name, description);
    return this.role(id);
  }

  updateRole(id: string, changes: { name?: string; description?: string | null }): RoleRow {
    const role = this.role(id);
    if (changes.name && changes.name !== role.name && this.findRoleByName(changes.name)) {
      throw errors.conflict(`Conflict occurred attempting to update role - a role named '${changes.name}' exists.`);
    }
    this.db.run('UPDATE roles SET name = ?, description = ? WHERE id = ?', changes.name ?? role.name, changes.description === undefined ? role.description : changes.description, id);
    this.invalidateCache();
    return this.role(id);
  }

  deleteRole(id: string): void {
    this.role(id);
    this.db.run('DELETE FROM roles WHERE id = ?', id);
    this.invalidateCache();
  }

  grantRole(actorId: string, targetType: 'project' | 'domain', targetId: string, roleId: string): void {
    this.user(actorId);
    if (targetType === 'project') this.project(targetId);
    else this.domain(targetId);
    this.role(roleId);
    this.db.run('INSERT OR IGNORE INTO role_assignments (actor_id, target_id, target_type, role_id) VALUES (?, ?, ?, ?)', actorId, targetId, targetType, roleId);
    this.invalidateCache();
  }

  revokeRole(actorId: string, targetId: string, roleId: string): void {
    const { changes } = this.db.transaction(() => {
      const removed = this.db.run('DELETE FROM role_assignments WHERE actor_id = ? AND target_id = ? AND role_id = ?', actorId, targetId, roleId);
      // Keystone revokes the user's tokens on that target: granting the role again does not revive them.
      if (removed.changes > 0) this.db.run('UPDATE tokens SET revoked = 1 WHERE user_id = ? AND (project_id = ? OR domain_id = ?)', actorId, targetId, targetId);
      return removed;
    });
    if (changes === 0) throw errors.notFound('Role assignment', `${roleId} of ${actorId} on ${targetId}`);
    this.invalidateCache();
  }

  // ---- system role assignments (users; groups' are in group_role_assignments) ----
  grantSystemRole(userId: string, roleId: string): void {
    this.user(userId);
    this.role(roleId);
    this.db.run('INSERT OR IGNORE INTO system_role_assignments (user_id, role_id) VALUES (?, ?)', userId, roleId);
    this.invalidateCache();
  }
  /** 404 when the user does not hold the role on the system; revokes the user's system-scoped tokens. */
  revokeSystemRole(userId: string, roleId: string): void {
    const { changes } = this.db.transaction(() => {
      const removed = this.db.run('DELETE FROM system_role_assignments WHERE user_id = ? AND role_id = ?', userId, roleId);
      if (removed.changes > 0) this.db.run('UPDATE tokens SET revoked = 1 WHERE user_id = ? AND system_scope = 1', userId);
      return removed;
    });
    if (changes === 0) throw errors.notFound('Role assignment', `${roleId} of ${userId} on the system`);
    this.invalidateCache();
  }
  hasSystemRole(userId: string, roleId: string): boolean {
    return !!this.db.get('SELECT 1 FROM system_role_assignments WHERE user_id = ? AND role_id = ?', userId, roleId);
  }
  systemRoles(userId: string): RoleRow[] {
    return this.db.all<RoleRow>('SELECT r.* FROM system_role_assignments a JOIN roles r ON r.id = a.role_id WHERE a.user_id = ? ORDER BY r.name', userId);
  }

  // ---- groups ----
  group(id: string): GroupRow {
    return this.db.get<GroupRow>('SELECT * FROM identity_groups WHERE id = ?', id) ?? notFound('Could not find group', id);
  }
  findGroup(id: string): GroupRow | undefined {
    return this.db.get<GroupRow>('SELECT * FROM identity_groups WHERE id = ?', id);
  }
  /** Groups matching every filter, by name. */
  listGroups(filter: { name?: string | null; domainId?: string | null }): GroupRow[] {
    // Conditions built here rather than `? IS NULL OR ...`: PostgreSQL cannot type a parameter compared only with NULL.
    const conditions: string[] = [];
    const params: string[] = [];
    if (filter.name != null) {
      conditions.push('name = ?');
      params.push(filter.name);
    }
    if (filter.domainId != null) {
      conditions.push('domain_id = ?');
      params.push(filter.domainId);
    }
    return this.db.all<GroupRow>(`SELECT * FROM identity_groups ${conditions.length ? 'WHERE ' + conditions.join(' AND ') : ''} ORDER BY name`, ...params);
  }
  /** 404 for an unknown domain, 409 for a name in use in the domain. */
  createGroup(input: { name: string; domainId: string; description?: string | null }): GroupRow {
    this.domain(input.domainId);
    if (this.db.get('SELECT 1 FROM identity_groups WHERE name = ? AND domain_id = ?', input.name, input.domainId)) {
      throw errors.conflict(`Conflict occurred attempting to store group - Duplicate entry found with name ${input.name} at domain ID ${input.domainId}.`);
    }
    const id = newId();
    this.db.run('INSERT INTO identity_groups (id, name, domain_id, description) VALUES (?, ?, ?, ?)', id, input.name, input.domainId, input.description ?? '');
    return this.group(id);
  }
  updateGroup(id: string, changes: { name?: string; description?: string | null }): GroupRow {
    const group = this.group(id);
    if (changes.name !== undefined && changes.name !== group.name && this.db.get('SELECT 1 FROM identity_groups WHERE name = ? AND domain_id = ?', changes.name, group.domain_id)) {
      throw errors.conflict(`Conflict occurred attempting to update group - a group named '${changes.name}' exists in this domain.`);
    }
    this.db.run('UPDATE identity_groups SET name = ?, description = ? WHERE id = ?', changes.name ?? group.name, changes.description ?? group.description, id);
    return this.group(id);
  }
  /** Deletes the group, its memberships and its role assignments (members lose those roles at once). */
  deleteGroup(id: string): void {
    this.group(id);
    this.db.run('DELETE FROM identity_groups WHERE id = ?', id);
    this.invalidateCache();
  }
  /** Idempotent; 404 for an unknown group or user. */
  addGroupMember(groupId: string, userId: string): void {
    this.group(groupId);
    this.user(userId);
    this.db.run('INSERT OR IGNORE INTO group_members (group_id, user_id) VALUES (?, ?)', groupId, userId);
    this.invalidateCache();
  }
  /** 404 when the user is not a member. Tokens stay, but lose the group's roles at their next validation. */
  removeGroupMember(groupId: string, userId: string): void {
    this.group(groupId);
    this.user(userId);
    if (this.db.run('DELETE FROM group_members WHERE group_id = ? AND user_id = ?', groupId, userId).changes === 0) {
      throw new PumiceError('NotFound', `User ${userId} is not a member of group ${groupId}.`);
    }
    this.invalidateCache();
  }
  isGroupMember(groupId: string, userId: string): boolean {
    return !!this.db.get('SELECT 1 FROM group_members WHERE group_id = ? AND user_id = ?', groupId, userId);
  }
  groupsOfUser(userId: string): GroupRow[] {
    return this.db.all<GroupRow>('SELECT g.* FROM identity_groups g JOIN group_members m ON m.group_id = g.id WHERE m.user_id = ? ORDER BY g.name', userId);
  }
  usersInGroup(groupId: string): UserRow[] {
    return this.db.all<UserRow>('SELECT u.* FROM users u JOIN group_members m ON m.user_id = u.id WHERE m.group_id = ? ORDER BY u.name', groupId);
  }
  /** Grants a role to a group on a project, a domain or the system (`systemTargetId`); idempotent. */
  grantGroupRole(groupId: string, targetType: 'project' | 'domain' | 'system', targetId: string, roleId: string): void {
    this.group(groupId);
    if (targetType === 'project') this.project(targetId);
    else if (targetType === 'domain') this.domain(targetId);
    this.role(roleId);
    this.db.run('INSERT OR IGNORE INTO group_role_assignments (group_id, target_id, target_type, role_id) VALUES (?, ?, ?, ?)', groupId, targetId, targetType, roleId);
    this.invalidateCache();
  }
  revokeGroupRole(groupId: string, targetId: string, roleId: string): void {
    if (this.db.run('DELETE FROM group_role_assignments WHERE group_id = ? AND target_id = ? AND role_id = ?', groupId, targetId, roleId).changes === 0) {
      throw errors.notFound('Role assignment', `${roleId} of group ${groupId} on ${targetId}`);
    }
    this.invalidateCache();
  }
  hasGroupRole(groupId: string, targetId: string, roleId: string): boolean {
    return !!this.db.get('SELECT 1 FROM group_role_assignments WHERE group_id = ? AND target_id = ? AND role_id = ?', groupId, targetId, roleId);
  }
  groupDirectRoles(groupId: string, targetId: string): RoleRow[] {
    return this.db.all<RoleRow>('SELECT r.* FROM group_role_assignments a JOIN roles r ON r.id = a.role_id WHERE a.group_id = ? AND a.target_id = ? ORDER BY r.name', groupId, targetId);
  }

  hasRole(actorId: string, targetId: string, roleId: string): boolean {
    return !!this.db.get('SELECT 1 FROM role_assignments WHERE actor_id = ? AND target_id = ? AND role_id = ?', actorId, targetId, roleId);
  }

  /**
   * Roles of a user on a target (a project or domain id, or `systemTargetId`), granted to the user
   * or to a group they belong to, with implied roles: admin implies member implies reader
   * (Keystone's default roles).
   */
  effectiveRoles(actorId: string, targetId: string): RoleRow[] {
    const direct = this.db.all<RoleRow>(
      `SELECT DISTINCT r.* FROM roles r WHERE r.id IN (
         SELECT role_id FROM role_assignments WHERE actor_id = ? AND target_id = ?
         UNION SELECT role_id FROM system_role_assignments WHERE user_id = ? AND 1 = ?
         UNION SELECT g.role_id FROM group_role_assignments g JOIN group_members m ON m.group_id = g.group_id WHERE m.user_id = ? AND g.target_id = ?)
       ORDER BY r.name`,
      actorId, targetId, actorId, targetId === systemTargetId ? 1 : 0, actorId, targetId,
    );
    const names = new Set(direct.map((r) => r.name));
    const implied: string[] = [];
    if (names.has('admin')) implied.push('member', 'reader');
    if (names.has('member')) implied.push('reader');
    const result = [...direct];
    for (const name of implied) {
      if (names.has(name)) continue;
      const role = this.findRoleByName(name);
      if (role) {
        result.push(role);
        names.add(name);
      }
    }
    return result;
  }

  /**
   * Checks a new password against [security_compliance] password_regex (Keystone: 400
   * PasswordValidationError naming password_regex_description). A regex that does not compile
   * refuses every password with a message naming the setting, rather than letting any through.
   */
  checkPasswordRules(password: string): void {
    const source = this.loginPolicy.passwordRegex ?? '';
    if (source === '') return;
    let rule: RegExp;
    try {
      rule = new RegExp(source, 'u');
    } catch {
      throw errors.badRequest('Password rules cannot be checked: [security_compliance] password_regex is not a valid regular expression; ask an administrator to fix the configuration.');
    }
    if (!rule.test(password)) {
      const description = this.loginPolicy.passwordRegexDescription || `it must match ${source}`;
      throw errors.invalidInput(`Password validation error: the password does not meet the requirements: ${description}. Choose another password.`);
    }
  }

  // ---- authentication ----
  /**
   * Checks a password login. Unknown users cost a real scrypt (same timing as a wrong password);
   * every failure is logged with the source address; `lockoutFailureAttempts` failures in a row
   * lock the user for `lockoutDurationSeconds` (Keystone's [security_compliance]), and a locked
   * user is refused without hashing. `attempted` names what the caller typed, for the audit line.
   */
  async authenticatePassword(user: UserRow | undefined, password: string, source = 'local', attempted?: string): Promise<UserRow> {
    // Same message whatever was wrong, so a caller learns nothing about which part failed.
    const generic = errors.unauthorized('The request you have made requires authentication.');
    const { lockoutFailureAttempts, lockoutDurationSeconds, log } = this.loginPolicy;
    const who = user ? `user ${user.id} (${JSON.stringify(user.name)})` : `unknown user ${JSON.stringify((attempted ?? '').slice(0, 64))}`;
    if (!user) {
      await verifyPassword(password, null, source);
      log(`WARNING: identity: failed login for ${who} from ${source}`);
      throw generic;
    }
    const lockedUntilMs = this.lockedUntilMs(user);
    if (lockedUntilMs !== null) {
      log(`WARNING: identity: refused login for locked-out ${who} from ${source} (locked until ${new Date(lockedUntilMs).toISOString()})`);
      throw errors.unauthorized(`The account is locked for user: ${user.id}. Too many failed logins; retry after ${new Date(lockedUntilMs).toISOString()} or ask an administrator to reset the password.`);
    }
    const tag = createHmac('sha256', this.verifiedLoginKey).update(`${user.id}\0${user.password_hash ?? ''}\0`).update(password, 'utf8').digest();
    const recent = this.verifiedLogins.get(user.id);
    const recentlyVerified = recent !== undefined && recent.expiresAtMs > Date.now() && user.password_hash !== null && timingSafeEqual(recent.tag, tag);
    if (!recentlyVerified && !(await verifyPassword(password, user.password_hash, source))) {
      const failures = this.recordFailedLogin(user);
      const locked = lockoutFailureAttempts > 0 && failures >= lockoutFailureAttempts;
      log(`WARNING: identity: failed login for ${who} from ${source}: wrong password (${failures} in a row${locked ? `; locked out for ${lockoutDurationSeconds} s` : ''})`);
      throw generic;
    }
    if (!user.enabled) {
      log(`WARNING: identity: failed login for disabled ${who} from ${source}`);
      throw generic;
    }
    if ((user.failed_auth_count ?? 0) > 0) this.db.run('UPDATE users SET failed_auth_count = 0, failed_auth_at = NULL WHERE id = ?', user.id);
    if (!recentlyVerified) {
      if (this.verifiedLogins.size >= verifiedLoginsMax) this.verifiedLogins.clear();
      this.verifiedLogins.set(user.id, { tag, expiresAtMs: Date.now() + verifiedLoginTtlMs });
    }
    return user;
  }

  /** When the user's lockout ends (ms since epoch), or null when not locked out. */
  private lockedUntilMs(user: UserRow): number | null {
    const { lockoutFailureAttempts, lockoutDurationSeconds } = this.loginPolicy;
    if (lockoutFailureAttempts <= 0 || (user.failed_auth_count ?? 0) < lockoutFailureAttempts || !user.failed_auth_at) return null;
    const until = Date.parse(user.failed_auth_at) + lockoutDurationSeconds * 1000;
    return until > Date.now() ? until : null;
  }

  /** Counts a failed login; after an expired lockout the count starts again. Returns the new count. */
  private recordFailedLogin(user: UserRow): number {
    const { lockoutFailureAttempts } = this.loginPolicy;
    const current = this.db.get<{ failed_auth_count: number }>('SELECT failed_auth_count FROM users WHERE id = ?', user.id)?.failed_auth_count ?? 0;
    const count = lockoutFailureAttempts > 0 && current >= lockoutFailureAttempts ? 1 : current + 1;
    this.db.run('UPDATE users SET failed_auth_count = ?, failed_auth_at = ? WHERE id = ?', count, new Date().toISOString(), user.id);
    return count;
  }

  /**
   * Issues a token for an authenticated user with the requested scope. A token issued from an
   * application credential (`applicationCredential`) is scoped to its project, carries only its
   * roles and never outlives it. A token from a trust (`trust`, already checked and used up by
   * TrustStore.consume) is scoped to the trust's project, carries the trust's roles whatever roles
   * `user` holds there, and never outlives the trust.
   */
  issueToken(user: UserRow, scope: Scope, methods: string[], parent?: { expiresAt: string; auditId: string; applicationCredentialId?: string | null }, applicationCredential?: ApplicationCredentialRow, trust?: TrustRow): AuthContext {
    const appCred = applicationCredential ?? (parent?.applicationCredentialId ? this.findApplicationCredential(parent.applicationCredentialId) : undefined);
    if (appCred) {
      if (scope.kind !== 'project' || scope.projectId !== appCred.project_id) {
        throw errors.unauthorized(`A token from application credential ${appCred.id} is scoped to its project ${appCred.project_id} only: leave out the scope or name that project.`);
      }
      this.applicationCredentialRoles(appCred);
    }
    if (trust) {
      if (!trust.project_id || scope.kind !== 'project' || scope.projectId !== trust.project_id) {
        throw new PumiceError('Forbidden', `Trust ${trust.id} delegates no roles on a project: a token from it needs a trust with a project_id.`);
      }
      if (!this.project(trust.project_id).enabled) throw errors.unauthorized(`Project ${trust.project_id} is disabled.`);
    } else if (scope.kind === 'system') {
      if (this.effectiveRoles(user.id, systemTargetId).length === 0) {
        throw errors.unauthorized(`User ${user.id} has no role on the system: an administrator grants one with openstack role add --system all --user ${user.name} admin.`);
      }
    } else if (scope.kind === 'project') {
      const project = this.project(scope.projectId);
      if (!project.enabled) throw errors.unauthorized(`Project ${project.id} is disabled.`);
      if (this.effectiveRoles(user.id, project.id).length === 0) {
        throw errors.unauthorized(`User ${user.id} has no access to project ${project.id}.`);
      }
    } else if (scope.kind === 'domain') {
      this.domain(scope.domainId);
      if (this.effectiveRoles(user.id, scope.domainId).length === 0) {
        throw errors.unauthorized(`User ${user.id} has no access to domain ${scope.domainId}.`);
      }
    }
    const issuedAt = new Date();
    const lifetimeEnd = new Date(issuedAt.getTime() + this.tokenLifetimeSeconds * 1000).toISOString();
    // A token issued from another token never outlives it (Keystone behaviour).
    let expiresAt = parent && parent.expiresAt < lifetimeEnd ? parent.expiresAt : lifetimeEnd;
    if (appCred?.expires_at && appCred.expires_at < expiresAt) expiresAt = appCred.expires_at;
    if (trust?.expires_at && trust.expires_at < expiresAt) expiresAt = trust.expires_at;
    const tokenId = randomBytes(32).toString('base64url');
    const auditId = randomBytes(16).toString('base64url');
    this.db.run(
      `INSERT INTO tokens (id, user_id, project_id, domain_id, methods, audit_id, audit_chain_id, issued_at, expires_at, system_scope, application_credential_id, trust_id)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      tokenDigest(tokenId), user.id,
      scope.kind === 'project' ? scope.projectId : null,
      scope.kind === 'domain' ? scope.domainId : null,
      JSON.stringify(methods), auditId, parent?.auditId ?? null, issuedAt.toISOString(), expiresAt,
      scope.kind === 'system' ? 1 : 0, appCred?.id ?? null, trust?.id ?? null,
    );
    return this.validateToken(tokenId);
  }

  /** Validates a token; a 401 for unknown, revoked or expired tokens, and when its user or project was disabled. */
  validateToken(tokenId: string): AuthContext {
    const digest = tokenDigest(tokenId);
    const nowMs = Date.now();
    if (this.validationCache.size > 0) this.dropCacheIfChangedElsewhere(nowMs);
    const cached = this.validationCache.get(digest);
    if (cached) {
      if (cached.context.expiresAt > new Date(nowMs).toISOString() && nowMs - cached.cachedAtMs < validationCacheTtlMs && nowMs >= cached.cachedAtMs) return cached.context;
      this.validationCache.delete(digest);
    }
    const row = this.db.get<TokenRow>('SELECT * FROM tokens WHERE id = ?', digest);
    const invalid = errors.unauthorized('The token is invalid, expired or revoked. Request a new token (openstack token issue).');
    if (!row || row.revoked || row.expires_at <= new Date().toISOString()) throw invalid;
    const user = this.db.get<UserRow>('SELECT * FROM users WHERE id = ?', row.user_id);
    if (!user || !user.enabled) throw invalid;
    let project: ProjectRow | undefined;
    let roles: RoleRow[] = [];
    if (row.project_id) {
      project = this.findProject(row.project_id);
      if (!project || !project.enabled) throw invalid;
      if (row.trust_id) {
        // The trust's roles, while the trust lasts and its trustor holds them; not the user's own.
        const trust = this.trusts.find(row.trust_id);
        if (!trust || (trust.expires_at !== null && trust.expires_at <= new Date().toISOString())) throw invalid;
        try {
          roles = this.trusts.rolesOf(trust);
        } catch {
          throw invalid;
        }
      } else roles = this.effectiveRoles(user.id, project.id);
      if (roles.length === 0) throw invalid;
    } else if (row.domain_id) {
      const domain = this.findDomain(row.domain_id);
      if (!domain || !domain.enabled) throw invalid;
      roles = this.effectiveRoles(user.id, row.domain_id);
      if (roles.length === 0) throw invalid;
    } else if (row.system_scope) {
      roles = this.effectiveRoles(user.id, systemTargetId);
      if (roles.length === 0) throw invalid;
    }
    let appCredRules: AuthContext['accessRules'];
    if (row.application_credential_id) {
      // The credential may have been deleted, or its user may have lost one of its roles since.
      const appCred = this.findApplicationCredential(row.application_credential_id);
      if (!appCred) throw invalid;
      appCredRules = { credentialId: appCred.id, rules: JSON.parse(appCred.access_rules) as AccessRule[] };
      try {
        roles = this.applicationCredentialRoles(appCred);
      } catch {
        throw invalid;
      }
    }
    const roleNames = roles.map((r) => r.name);
    const context: AuthContext = {
      tokenId,
      userId: user.id,
      userName: user.name,
      userDomainId: user.domain_id,
      projectId: project?.id ?? null,
      projectName: project?.name ?? null,
      projectDomainId: project?.domain_id ?? null,
      domainId: row.domain_id,
      roles: roleNames,
      isAdmin: roleNames.includes('admin'),
      expiresAt: row.expires_at,
      issuedAt: row.issued_at,
      methods: JSON.parse(row.methods) as string[],
      auditId: row.audit_id,
    };
    if (appCredRules && appCredRules.rules.length > 0) context.accessRules = appCredRules;
    if (this.validationCache.size >= validationCacheMax) this.validationCache.clear();
    // The first entry: the counter is read now, after this validation's reads, so a change made
    // elsewhere after them is seen at the next look.
    if (this.validationCache.size === 0) this.dropCacheIfChangedElsewhere(nowMs);
    this.validationCache.set(digest, { context, cachedAtMs: nowMs });
    return context;
  }

  /**
   * The audit chain of a token: the audit id of the first token of the chain it was issued from
   * (Keystone's second `audit_ids` entry), or null for a token issued from a password.
   */
  auditChainOf(tokenId: string): string | null {
    return this.db.get<{ audit_chain_id: string | null }>('SELECT audit_chain_id FROM tokens WHERE id = ?', tokenDigest(tokenId))?.audit_chain_id ?? null;
  }

  revokeToken(tokenId: string): void {
    const digest = tokenDigest(tokenId);
    const { changes } = this.db.run('UPDATE tokens SET revoked = 1 WHERE id = ? AND revoked = 0', digest);
    this.validationCache.delete(digest);
    if (changes > 0) this.noteIdentityChange();
    if (changes === 0) throw new PumiceError('NotFound', 'Could not find token: it does not exist or was already revoked.');
  }

  /** What a token row carries beyond its AuthContext: its system scope, application credential and trust. */
  tokenExtras(tokenId: string): { system: boolean; applicationCredential: ApplicationCredentialRow | null; trust: TrustRow | null } {
    const row = this.db.get<{ system_scope: number; application_credential_id: string | null; trust_id: string | null }>(
      'SELECT system_scope, application_credential_id, trust_id FROM tokens WHERE id = ?', tokenDigest(tokenId));
    return {
      system: !!row?.system_scope,
      applicationCredential: row?.application_credential_id ? this.findApplicationCredential(row.application_credential_id) ?? null : null,
      trust: row?.trust_id ? this.trusts.find(row.trust_id) ?? null : null,
    };
  }

  // ---- application credentials (the store; routes in api/application-credentials.ts) ----
  findApplicationCredential(id: string): ApplicationCredentialRow | undefined {
    return this.db.get<ApplicationCredentialRow>('SELECT * FROM application_credentials WHERE id = ?', id);
  }

  /**
   * The roles a token from this application credential carries: its own, each of which its user
   * must still hold on its project (directly, through a group or implied). Throws 401 naming the
   * first role the user lost, or when the credential expired.
   */
  applicationCredentialRoles(appCred: ApplicationCredentialRow): RoleRow[] {
    if (appCred.expires_at && appCred.expires_at <= new Date().toISOString()) {
      throw errors.unauthorized(`Application credential ${appCred.id} expired at ${appCred.expires_at}: create a new one.`);
    }
    const held = new Map(this.effectiveRoles(appCred.user_id, appCred.project_id).map((r) => [r.id, r]));
    const wanted = JSON.parse(appCred.roles) as { id: string; name: string }[];
    const lost = wanted.find((r) => !held.has(r.id));
    if (lost) {
      throw errors.unauthorized(`Application credential ${appCred.id} is no longer valid: its user no longer holds role ${lost.name} on project ${appCred.project_id}.`);
    }
    // The credential's roles and those they imply (admin implies member implies reader), as Keystone's tokens carry them.
    const names = new Set(wanted.map((r) => r.name));
    if (names.has('admin')) names.add('member');
    if (names.has('member')) names.add('reader');
    return [...held.values()].filter((r) => names.has(r.name) || wanted.some((w) => w.id === r.id));
  }

  /** Removes expired tokens; called periodically so the table stays bounded. */
  purgeExpiredTokens(): number {
    return this.db.run('DELETE FROM tokens WHERE expires_at < ?', new Date(Date.now() - 3600_000).toISOString()).changes;
  }

  roleRefs(context: AuthContext): { id: string; name: string }[] {
    return context.roles.map((name) => {
      const role = this.findRoleByName(name);
      return { id: role?.id ?? name, name };
    });
  }

  // ---- catalog ----
  services(): CatalogServiceRow[] {
    return this.db.all<CatalogServiceRow>('SELECT * FROM catalog_services ORDER BY type');
  }
  endpoints(): EndpointRow[] {
    return this.db.all<EndpointRow>('SELECT * FROM catalog_endpoints ORDER BY service_id, interface');
  }

  service(id: string): CatalogServiceRow {
    return this.db.get<CatalogServiceRow>('SELECT * FROM catalog_services WHERE id = ?', id) ?? notFound('Could not find service', id);
  }

  createService(input: { type: string; name?: string; description?: string | null; enabled?: boolean }): CatalogServiceRow {
    const id = newId();
    this.db.run('INSERT INTO catalog_services (id, type, name, description, enabled) VALUES (?, ?, ?, ?, ?)', id, input.type, input.name ?? '', input.description ?? '', input.enabled === false ? 0 : 1);
    return this.service(id);
  }

  /** Changes the given fields; a null description keeps the current one. Throws 404 for an unknown service. */
  updateService(id: string, changes: { type?: string; name?: string; description?: string | null; enabled?: boolean }): CatalogServiceRow {
    const current = this.service(id);
    this.db.run('UPDATE catalog_services SET type = ?, name = ?, description = ?, enabled = ? WHERE id = ?',
      changes.type ?? current.type, changes.name ?? current.name, changes.description ?? current.description,
      changes.enabled === undefined ? current.enabled : changes.enabled ? 1 : 0, id);
    return this.service(id);
  }

  /** Throws 404 for an unknown service. */
  deleteService(id: string): void {
    this.service(id);
    this.db.run('DELETE FROM catalog_services WHERE id = ?', id);
  }

  endpoint(id: string): EndpointRow {
    return this.db.get<EndpointRow>('SELECT * FROM catalog_endpoints WHERE id = ?', id) ?? notFound('Could not find endpoint', id);
  }

  /** The service must exist (404) and the region, when given, too (400 naming the fix). */
  createEndpoint(input: { interface: string; serviceId: string; url: string; regionId: string | null; enabled?: boolean }): EndpointRow {
    this.service(input.serviceId);
    if (input.regionId) this.requireRegionForEndpoint(input.regionId);
    const id = newId();
    this.db.run('INSERT INTO catalog_endpoints (id, service_id, interface, region_id, url, enabled) VALUES (?, ?, ?, ?, ?, ?)',
      id, input.serviceId, input.interface, input.regionId, input.url, input.enabled === false ? 0 : 1);
    return this.endpoint(id);
  }

  /** Changes the given fields; a region id of null or undefined keeps the current region. */
  updateEndpoint(id: string, changes: { interface?: string; serviceId?: string; url?: string; regionId?: string | null; enabled?: boolean }): EndpointRow {
    const current = this.endpoint(id);
    if (changes.serviceId) this.service(changes.serviceId);
    if (changes.regionId) this.requireRegionForEndpoint(changes.regionId);
    this.db.run('UPDATE catalog_endpoints SET interface = ?, region_id = ?, service_id = ?, url = ?, enabled = ? WHERE id = ?',
      changes.interface ?? current.interface, changes.regionId ?? current.region_id, changes.serviceId ?? current.service_id,
      changes.url ?? current.url, changes.enabled === undefined ? current.enabled : changes.enabled ? 1 : 0, id);
    return this.endpoint(id);
  }

  /** Throws 404 for an unknown endpoint. */
  deleteEndpoint(id: string): void {
    this.endpoint(id);
    this.db.run('DELETE FROM catalog_endpoints WHERE id = ?', id);
  }

  private requireRegionForEndpoint(regionId: string): void {
    if (!this.findRegion(regionId)) throw errors.badRequest(`Region ${regionId} does not exist: create it first (openstack region create ${regionId}).`);
  }

  // ---- regions ----
  regions(): RegionRow[] {
    return this.db.all<RegionRow>('SELECT * FROM regions ORDER BY id');
  }
  findRegion(id: string): RegionRow | undefined {
    return this.db.get<RegionRow>('SELECT * FROM regions WHERE id = ?', id);
  }
  region(id: string): RegionRow {
    return this.findRegion(id) ?? notFound('Could not find region', id);
  }

  /** 409 for an id in use; 404 naming the fix when the parent region does not exist. */
  createRegion(input: { id?: string; description?: string; parentRegionId?: string | null }): RegionRow {
    const id = input.id ?? newId();
    if (this.findRegion(id)) throw errors.conflict(`Conflict occurred attempting to store region - Duplicate ID, ${id}.`);
    if (input.parentRegionId && !this.findRegion(input.parentRegionId)) {
      throw new PumiceError('NotFound', `Could not find region: ${input.parentRegionId} (the parent_region_id); create the parent region first.`);
    }
    this.db.run('INSERT INTO regions (id, description, parent_region_id) VALUES (?, ?, ?)', id, input.description ?? '', input.parentRegionId ?? null);
    return this.region(id);
  }

  /** Changes the description or parent; a parent must exist and must not make a cycle (400). */
  updateRegion(id: string, changes: { description?: string; parentRegionId?: string | null }): RegionRow {
    const region = this.region(id);
    if (changes.parentRegionId) {
      if (!this.findRegion(changes.parentRegionId)) {
        throw new PumiceError('NotFound', `Could not find region: ${changes.parentRegionId} (the parent_region_id); create the parent region first.`);
      }
      // Walk up from the new parent: meeting this region would make a cycle.
      for (let at: string | null = changes.parentRegionId, steps = 0; at !== null && steps < 1000; steps++) {
        if (at === id) throw errors.badRequest(`Region ${changes.parentRegionId} cannot be the parent of region ${id}: it is ${id} or below it (a cycle).`);
        at = this.findRegion(at)?.parent_region_id ?? null;
      }
    }
    this.db.run('UPDATE regions SET description = ?, parent_region_id = ? WHERE id = ?',
      changes.description ?? region.description, changes.parentRegionId === undefined ? region.parent_region_id : changes.parentRegionId, id);
    return this.region(id);
  }

  /** Throws 404 for an unknown region. */
  deleteRegion(id: string): void {
    if (this.db.run('DELETE FROM regions WHERE id = ?', id).changes === 0) notFound('Could not find region', id);
  }

  /** The catalog as a token carries it: templates rendered for the caller's base URL and project. */
  catalog(baseUrl: string, projectId: string | null): unknown[] {
    const endpoints = this.endpoints().filter((e) => e.enabled);
    return this.services()
      .filter((s) => s.enabled)
      .map((service) => ({
        id: service.id,
        type: service.type,
        name: service.name,
        endpoints: endpoints
          .filter((e) => e.service_id === service.id)
          .filter((e) => projectId !== null || !/\$\((project|tenant)_id\)s|%\((project|tenant)_id\)s/.test(e.url))
          .map((e) => ({
            id: e.id,
            interface: e.interface,
            region: e.region_id,
            region_id: e.region_id,
            url: renderEndpointUrl(e.url, baseUrl, projectId),
          })),
      }));
  }
}

/** Substitutes `$(base_url)s` (Pumice) and `$(project_id)s`/`%(tenant_id)s` (Keystone) in an endpoint template. */
export function renderEndpointUrl(template: string, baseUrl: string, projectId: string | null): string {
  let url = template.replace(/\$\(base_url\)s/g, baseUrl);
  if (projectId !== null) url = url.replace(/\$\((project|tenant)_id\)s|%\((project|tenant)_id\)s/g, projectId);
  return url;
}

function notFound(what: string, id: string): never {
  throw new PumiceError('NotFound', `${what}: ${id}.`);
}
