/**
 * Application credentials (Keystone's /v3/users/{id}/application_credentials): a secret that
 * authenticates as its user, scoped to one project with a subset of the user's roles there, for
 * Terraform, CI jobs and other programs that should not hold a password. The secret is shown
 * once, at creation, and stored only as a scrypt hash. A credential stops working when it
 * expires, when it is deleted, when its user is deleted (the row goes with the user) or when its
 * user no longer holds one of its roles on its project (checked at every token validation).
 *
 * Access rules (service type, method and path allow-lists, src/identity/access-rules.ts) are
 * checked at creation and enforced on every request a token from the credential makes. As in
 * Keystone, a rule belongs to its user (table access_rules): credentials naming the same service,
 * method and path share it, it outlives them, and it may be deleted only when none uses it.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Db } from '../db/db.ts';
import { errors, PumiceError } from '../errors.ts';
import type { ApplicationCredentialRow, IdentityService, RoleRow, UserRow } from './identity.ts';
import { hashPassword, verifyPassword } from './passwords.ts';
import { checkAccessRules, type AccessRule } from './access-rules.ts';

export interface CreateApplicationCredentialInput {
  userId: string;
  /** The project of the caller's token: the credential's scope. */
  projectId: string;
  name: string;
  description?: string | null;
  /** Chosen by the caller, or generated (64 random bytes, base64url). */
  secret?: string | null;
  expiresAt?: string | null;
  unrestricted?: boolean;
  /** Roles by id or name; default: every role the caller's token carries. */
  roles?: { id?: string; name?: string }[];
  /** Roles of the caller's token, the upper bound for `roles`. */
  tokenRoles: RoleRow[];
  /** Keystone's access_rules: {service, method, path}; none: the credential is not limited by request. */
  accessRules?: unknown[];
}

export class ApplicationCredentialStore {
  constructor(
    private readonly db: Db,
    private readonly identity: IdentityService,
  ) {}

  find(id: string): ApplicationCredentialRow | undefined {
    return this.identity.findApplicationCredential(id);
  }

  /** The credential of a user; 404 when it does not exist or is another user's. */
  get(userId: string, id: string): ApplicationCredentialRow {
    const row = this.find(id);
    if (!row || row.user_id !== userId) throw new PumiceError('NotFound', `Could not find application credential: ${id}.`);
    return row;
  }

  list(userId: string, name: string | null): ApplicationCredentialRow[] {
    return name === null
      ? this.db.all<ApplicationCredentialRow>('SELECT * FROM application_credentials WHERE user_id = ? ORDER BY name', userId)
      : this.db.all<ApplicationCredentialRow>('SELECT * FROM application_credentials WHERE user_id = ? AND name = ? ORDER BY name', userId, name);
  }

  /** Creates a credential and returns it with its secret (the only time the secret is available). */
  async create(input: CreateApplicationCredentialInput): Promise<{ row: ApplicationCredentialRow; secret: string }> {
    const wantedRules = checkAccessRules((input.accessRules ?? []) as Record<string, unknown>[], (id) => this.findAccessRule(input.userId, id));
    if (input.expiresAt) {
      const at = Date.parse(input.expiresAt);
      if (Number.isNaN(at)) throw errors.invalidInput(`Invalid input for field 'expires_at': '${input.expiresAt}' is not an ISO 8601 time such as 2030-01-31T12:00:00Z.`);
      if (at <= Date.now()) throw errors.invalidInput(`Invalid input for field 'expires_at': ${input.expiresAt} is in the past; give a future time or none.`);
    }
    const held = input.tokenRoles;
    let roles: RoleRow[];
    if (input.roles === undefined || input.roles.length === 0) roles = held;
    else {
      roles = input.roles.map((ref) => {
        if (!ref.id && !ref.name) throw errors.invalidInput('Invalid input: each entry of roles needs an id or a name.');
        const role = held.find((r) => (ref.id ? r.id === ref.id : r.name === ref.name));
        if (!role) {
          throw new PumiceError('Forbidden', `Role ${ref.id ?? ref.name} is not one of the roles of your token on project ${input.projectId} (${held.map((r) => r.name).join(', ')}): an application credential can only hold a subset of them.`);
        }
        return role;
      });
    }
    if (this.db.get('SELECT 1 FROM application_credentials WHERE user_id = ? AND name = ?', input.userId, input.name)) {
      throw errors.conflict(`Conflict occurred attempting to store application_credential - Duplicate name, ${input.name}: delete it or choose another name.`);
    }
    const secret = input.secret ?? randomBytes(64).toString('base64url');
    const secretHash = await hashPassword(secret);
    const id = randomUUID().replace(/-/g, '');
    const unique = [...new Map(roles.map((r) => [r.id, { id: r.id, name: r.name, domain_id: r.domain_id }])).values()];
    const now = new Date().toISOString();
    this.db.transaction(() => {
      // The user's rule with the same service, method and path is reused, else a new one is kept.
      const accessRules = wantedRules.map((wanted): AccessRule => {
        const same = this.db.get<AccessRule>('SELECT id, service, method, path FROM access_rules WHERE user_id = ? AND service = ? AND method = ? AND path = ?',
          input.userId, wanted.service, wanted.method, wanted.path);
        if (same) return same;
        const rule = { id: randomUUID().replace(/-/g, ''), ...wanted };
        this.db.run('INSERT INTO access_rules (id, user_id, service, method, path, created_at) VALUES (?, ?, ?, ?, ?, ?)', rule.id, input.userId, rule.service, rule.method, rule.path, now);
        return rule;
      });
      const distinct = [...new Map(accessRules.map((r) => [r.id, r])).values()];
      this.db.run(
        `INSERT INTO application_credentials (id, name, user_id, project_id, secret_hash, description, expires_at, unrestricted, roles, access_rules, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        id, input.name, input.userId, input.projectId, secretHash, input.description ?? null,
        input.expiresAt ? new Date(input.expiresAt).toISOString() : null, input.unrestricted ? 1 : 0, JSON.stringify(unique), JSON.stringify(distinct), now,
      );
    });
    return { row: this.find(id)!, secret };
  }

  /** The user's access rule, or undefined (another user's rule is not found either). */
  findAccessRule(userId: string, id: string): AccessRule | undefined {
    return this.db.get<AccessRule>('SELECT id, service, method, path FROM access_rules WHERE id = ? AND user_id = ?', id, userId);
  }

  /** The user's access rules (Keystone's GET /v3/users/{id}/access_rules), oldest first. */
  listAccessRules(userId: string): AccessRule[] {
    return this.db.all<AccessRule>('SELECT id, service, method, path FROM access_rules WHERE user_id = ? ORDER BY created_at, id', userId);
  }

  /** The user's access rule; 404 when it does not exist or is another user's. */
  accessRule(userId: string, id: string): AccessRule {
    const rule = this.findAccessRule(userId, id);
    if (!rule) throw new PumiceError('NotFound', `Could not find access rule: ${id}.`);
    return rule;
  }

  /**
   * Deletes the user's access rule. 404 when it is not the user's; 403 while an application
   * credential uses it (Keystone: a rule in use may not be deleted), naming the credential.
   */
  deleteAccessRule(userId: string, id: string): void {
    this.accessRule(userId, id);
    const usedBy = this.db.all<{ id: string; name: string; access_rules: string }>('SELECT id, name, access_rules FROM application_credentials WHERE user_id = ? ORDER BY name', userId)
      .find((c) => (JSON.parse(c.access_rules) as AccessRule[]).some((r) => r.id === id));
    if (usedBy) {
      throw new PumiceError('Forbidden', `May not delete access rule ${id} in use: application credential ${usedBy.id} (${usedBy.name}) uses it; delete that credential first.`);
    }
    this.db.run('DELETE FROM access_rules WHERE id = ? AND user_id = ?', id, userId);
  }

  /** Deletes the credential and revokes every token issued from it. 404 when it is not the user's. */
  delete(userId: string, id: string): void {
    this.get(userId, id);
    this.db.transaction(() => {
      this.db.run('UPDATE tokens SET revoked = 1 WHERE application_credential_id = ?', id);
      this.db.run('DELETE FROM application_credentials WHERE id = ?', id);
    });
    this.identity.invalidateCache();
  }

  /**
   * Checks a secret: the credential by id, or by name and its user. A wrong secret, an unknown
   * credential, an expired one or one whose user lost a role all answer 401 (the last two say why;
   * the first two do not tell which part was wrong).
   */
  async authenticate(ref: { id?: string; name?: string; user?: UserRow }, secret: string): Promise<{ user: UserRow; row: ApplicationCredentialRow }> {
    const generic = errors.unauthorized('The request you have made requires authentication.');
    const row = ref.id ? this.find(ref.id) : ref.user && ref.name ? this.list(ref.user.id, ref.name)[0] : undefined;
    const ok = await verifyPassword(secret, row?.secret_hash ?? null);
    if (!row || !ok) throw generic;
    const user = this.identity.findUser(row.user_id);
    if (!user || !user.enabled) throw generic;
    this.identity.applicationCredentialRoles(row);
    return { user, row };
  }
}
