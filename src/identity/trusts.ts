/**
 * OS-TRUST trusts (Keystone's /v3/OS-TRUST/trusts): a trustor delegates some of their roles on one
 * project to a trustee, who then gets tokens scoped to that project carrying those roles only
 * (`scope: {"OS-TRUST:trust": {"id": ...}}`). With impersonation the token's user is the trustor.
 * A trust may expire and may be limited to a number of tokens (remaining_uses). Deleting the trust
 * revokes its tokens; a token from it stops validating as soon as the trust is gone or expired or
 * the trustor no longer holds one of its roles on the project. Redelegation (a trust made from a
 * trust token) is not offered: Keystone's [trust] allow_redelegation defaults to off as well.
 */
import { randomUUID } from 'node:crypto';
import type { Db } from '../db/db.ts';
import { errors, PumiceError } from '../errors.ts';
import type { IdentityService, RoleRow, UserRow } from './identity.ts';

export interface TrustRow {
  id: string; trustor_user_id: string; trustee_user_id: string; project_id: string | null; impersonation: number;
  /** JSON: [{id, name, domain_id}]. */
  roles: string; expires_at: string | null; remaining_uses: number | null; created_at: string;
}

export interface TrustRole { id: string; name: string; domain_id: string | null }

export interface CreateTrustInput {
  /** The caller: only the trustor may delegate their own roles. */
  callerUserId: string;
  /** The caller's token came from a trust (redelegation is refused). */
  callerTokenFromTrust: boolean;
  trustorUserId: string;
  trusteeUserId: string;
  impersonation: boolean;
  projectId?: string | null;
  roles?: { id?: string; name?: string }[];
  expiresAt?: string | null;
  remainingUses?: number | null;
  allowRedelegation?: boolean;
}

export class TrustStore {
  constructor(
    private readonly db: Db,
    private readonly identity: IdentityService,
  ) {}

  /** The trust, whether or not it expired; undefined when it does not exist. */
  find(id: string): TrustRow | undefined {
    return this.db.get<TrustRow>('SELECT * FROM trusts WHERE id = ?', id);
  }

  /** A trust that exists and has not expired; 404 otherwise (Keystone: an expired trust is not found). */
  get(id: string): TrustRow {
    const row = this.find(id);
    if (!row || expired(row)) throw new PumiceError('NotFound', `Could not find trust: ${id}.`);
    return row;
  }

  /** Trusts that have not expired, filtered by trustor and trustee when given, oldest first. */
  list(filter: { trustorUserId?: string | null; trusteeUserId?: string | null }): TrustRow[] {
    const clauses: string[] = [];
    const args: string[] = [];
    if (filter.trustorUserId) {
      clauses.push('trustor_user_id = ?');
      args.push(filter.trustorUserId);
    }
    if (filter.trusteeUserId) {
      clauses.push('trustee_user_id = ?');
      args.push(filter.trusteeUserId);
    }
    const where = clauses.length > 0 ? `WHERE ${clauses.join(' AND ')}` : '';
    return this.db.all<TrustRow>(`SELECT * FROM trusts ${where} ORDER BY created_at, id`, ...args).filter((t) => !expired(t));
  }

  /**
   * Creates a trust. 403 unless the caller is the trustor, for a token from a trust, for
   * redelegation and for a role the trustor does not hold on the project; 404 for an unknown
   * trustee, project or role; 400 for roles without a project, a bad expiry or remaining_uses.
   */
  create(input: CreateTrustInput): TrustRow {
    if (input.callerUserId !== input.trustorUserId) {
      throw new PumiceError('Forbidden', `The authenticated user should match the trustor: you are ${input.callerUserId}, trustor_user_id is ${input.trustorUserId}. A user delegates only their own roles.`);
    }
    if (input.callerTokenFromTrust) throw new PumiceError('Forbidden', 'A token from a trust cannot create a trust (redelegation is not offered): authenticate as the trustor with a password or an ordinary token.');
    if (input.allowRedelegation) throw new PumiceError('Forbidden', 'Redelegation is not offered here: leave out allow_redelegation (or set it false).');
    const trustee = this.identity.findUser(input.trusteeUserId);
    if (!trustee) throw new PumiceError('NotFound', `Could not find user: ${input.trusteeUserId} (trustee_user_id).`);
    const wanted = input.roles ?? [];
    if (wanted.length > 0 && !input.projectId) throw errors.invalidInput('Invalid input: a trust that delegates roles needs a project_id (the roles are the trustor\'s on that project).');
    let roles: RoleRow[] = [];
    if (input.projectId) {
      this.identity.project(input.projectId);
      const held = this.identity.effectiveRoles(input.trustorUserId, input.projectId);
      roles = wanted.map((ref) => {
        if (!ref.id && !ref.name) throw errors.invalidInput('Invalid input: each entry of roles needs an id or a name.');
        const role = ref.id ? this.identity.findRoleById(ref.id) : this.identity.findRoleByName(ref.name!);
        if (!role) throw new PumiceError('NotFound', `Could not find role: ${ref.id ?? ref.name}.`);
        if (!held.some((h) => h.id === role.id)) {
          throw new PumiceError('Forbidden', `The trustor does not hold role ${role.name} on project ${input.projectId} (${held.map((r) => r.name).join(', ') || 'no roles'}): a trust can only delegate the trustor's own roles.`);
        }
        return role;
      });
    }
    let expiresAt: string | null = null;
    if (input.expiresAt) {
      const at = Date.parse(input.expiresAt);
      if (Number.isNaN(at)) throw errors.invalidInput(`Invalid input for field 'expires_at': '${input.expiresAt}' is not an ISO 8601 time such as 2030-01-31T12:00:00Z.`);
      if (at <= Date.now()) throw errors.invalidInput(`Invalid input for field 'expires_at': ${input.expiresAt} is in the past; give a future time or none.`);
      expiresAt = new Date(at).toISOString();
    }
    const id = randomUUID().replace(/-/g, '');
    const unique = [...new Map(roles.map((r) => [r.id, { id: r.id, name: r.name, domain_id: r.domain_id }])).values()];
    this.db.run(
      `INSERT INTO trusts (id, trustor_user_id, trustee_user_id, project_id, impersonation, roles, expires_at, remaining_uses, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      id, input.trustorUserId, trustee.id, input.projectId ?? null, input.impersonation ? 1 : 0, JSON.stringify(unique), expiresAt,
      input.remainingUses ?? null, new Date().toISOString(),
    );
    return this.find(id)!;
  }

  /** Deletes the trust and revokes every token issued from it. 404 when it does not exist. */
  delete(id: string): void {
    if (!this.find(id)) throw new PumiceError('NotFound', `Could not find trust: ${id}.`);
    this.db.transaction(() => {
      this.db.run('UPDATE tokens SET revoked = 1 WHERE trust_id = ?', id);
      this.db.run('DELETE FROM trusts WHERE id = ?', id);
    });
    this.identity.invalidateCache();
  }

  /**
   * Checks that `user` may get a token from the trust now and uses it up by one when it is
   * limited: 404 for an unknown or expired trust, 403 when the user is not its trustee, when its
   * uses are spent, or when the trustor lost a role. Returns the trust and the token's user
   * (the trustor when impersonating).
   */
  consume(id: string, user: UserRow): { trust: TrustRow; tokenUser: UserRow } {
    const trust = this.get(id);
    if (trust.trustee_user_id !== user.id) throw new PumiceError('Forbidden', `User ${user.id} is not the trustee of trust ${id}: only its trustee gets tokens from it.`);
    this.rolesOf(trust);
    const trustor = this.identity.findUser(trust.trustor_user_id);
    if (!trustor || !trustor.enabled) throw new PumiceError('Forbidden', `The trustor of trust ${id} is disabled or gone: the trust cannot be used.`);
    if (trust.remaining_uses !== null) {
      const { changes } = this.db.run('UPDATE trusts SET remaining_uses = remaining_uses - 1 WHERE id = ? AND remaining_uses > 0', id);
      if (changes === 0) throw new PumiceError('Forbidden', `Trust ${id} has no uses left (remaining_uses 0): the trustor creates a new trust.`);
    }
    return { trust, tokenUser: trust.impersonation ? trustor : user };
  }

  /**
   * The roles a token from the trust carries on its project: the trust's roles and those they
   * imply (admin implies member implies reader), each of which the trustor must still hold there.
   * Throws 403 naming the first role the trustor lost.
   */
  rolesOf(trust: TrustRow): RoleRow[] {
    if (!trust.project_id) return [];
    const held = this.identity.effectiveRoles(trust.trustor_user_id, trust.project_id);
    const wanted = JSON.parse(trust.roles) as TrustRole[];
    const lost = wanted.find((r) => !held.some((h) => h.id === r.id));
    if (lost) throw new PumiceError('Forbidden', `Trust ${trust.id} is no longer valid: its trustor no longer holds role ${lost.name} on project ${trust.project_id}.`);
    const names = new Set(wanted.map((r) => r.name));
    if (names.has('admin')) names.add('member');
    if (names.has('member')) names.add('reader');
    return held.filter((r) => names.has(r.name) || wanted.some((w) => w.id === r.id));
  }
}

function expired(trust: TrustRow): boolean {
  return trust.expires_at !== null && trust.expires_at <= new Date().toISOString();
}
