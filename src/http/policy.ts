/**
 * One policy table per service, in oslo.policy's rule language, so an
 * operator's `policy.yaml` written for Nova, Cinder or Glance reads the same
 * here. A service declares its defaults (rule name -> check string); the
 * operator overrides any of them with `[oslo_policy] policy_file`.
 *
 * Check strings: `@` (always), `!` (never), `role:NAME`, `rule:NAME`,
 * `KIND:%(ATTR)s` (a credential compared with a target attribute, e.g.
 * `project_id:%(project_id)s`), `KIND:LITERAL` (e.g. `is_admin:True`),
 * `'LITERAL':%(ATTR)s` (a constant compared with a target attribute), combined
 * with `and`, `or`, `not` and parentheses. An empty string allows everyone,
 * as in oslo.policy.
 *
 * Unlike oslo.policy, a check string that does not parse is refused when the
 * table is built (the operator learns at start, not at the first request).
 *
 *   const table = new PolicyTable({ 'admin_or_owner': 'role:admin or project_id:%(project_id)s',
 *                                   'delete_image': 'rule:admin_or_owner' }, loadPolicyOverrides(path));
 *   table.enforce('delete_image', ctx.auth, { project_id: image.owner });   // throws 403 unless allowed
 */
import { readFileSync } from 'node:fs';
import { errors } from '../errors.ts';
import type { AuthContext } from './router.ts';

export type PolicyTarget = Record<string, string | null | undefined>;

/** The credentials rules see, named as oslo.context names them. */
interface Credentials {
  user_id: string | null;
  project_id: string | null;
  domain_id: string | null;
  user_domain_id: string | null;
  project_domain_id: string | null;
  roles: string[];
  is_admin: boolean;
  system_scope: string | null;
  [key: string]: unknown;
}

type Check =
  | { kind: 'true' }
  | { kind: 'false' }
  | { kind: 'rule'; name: string }
  | { kind: 'role'; match: string }
  | { kind: 'generic'; left: string; match: string }
  | { kind: 'not'; check: Check }
  | { kind: 'and'; checks: Check[] }
  | { kind: 'or'; checks: Check[] };

/** A check string that does not parse; names the rule and what is wrong. */
export class PolicySyntaxError extends Error {}

function credentialsOf(auth: AuthContext | null): Credentials {
  return {
    user_id: auth?.userId ?? null,
    project_id: auth?.projectId ?? null,
    domain_id: auth?.domainId ?? null,
    user_domain_id: auth?.userDomainId ?? null,
    project_domain_id: auth?.projectDomainId ?? null,
    roles: (auth?.roles ?? []).map((r) => r.toLowerCase()),
    is_admin: auth?.isAdmin ?? false,
    system_scope: null,
  };
}

/** Python's str() of a credential value, so `is_admin:True` compares as oslo.policy does. */
function pythonString(value: unknown): string {
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (value === null || value === undefined) return 'None';
  return String(value);
}

/** Fills `%(name)s` from the target; null when an attribute is missing or null (the check then fails). */
function substitute(match: string, target: PolicyTarget): string | null {
  let missing = false;
  const out = match.replace(/%\(([^)]+)\)s/g, (_, name: string) => {
    const value = target[name];
    if (value === undefined || value === null) {
      missing = true;
      return '';
    }
    return value;
  });
  return missing ? null : out;
}

/** Splits on whitespace and peels parentheses off the ends of each word, as oslo.policy does (`%(x)s` keeps its own). */
function tokenize(text: string): string[] {
  const tokens: string[] = [];
  for (const word of text.trim().split(/\s+/)) {
    let rest = word;
    while (rest.startsWith('(')) {
      tokens.push('(');
      rest = rest.slice(1);
    }
    let closing = 0;
    while (rest.endsWith(')') && !/%\([^)]*\)$/.test(rest)) {
      closing++;
      rest = rest.slice(0, -1);
    }
    if (rest !== '') tokens.push(rest);
    for (let i = 0; i < closing; i++) tokens.push(')');
  }
  return tokens;
}

/** Parses an oslo.policy check string; `or` binds looser than `and`, `not` binds tightest. */
export function parseCheckString(text: string): Check {
  if (text.trim() === '') return { kind: 'true' };
  const tokens = tokenize(text);
  let pos = 0;
  const peek = (): string | undefined => tokens[pos];
  const parseOr = (): Check => {
    const checks = [parseAnd()];
    while (peek()?.toLowerCase() === 'or') {
      pos++;
      checks.push(parseAnd());
    }
    return checks.length === 1 ? checks[0]! : { kind: 'or', checks };
  };
  const parseAnd = (): Check => {
    const checks = [parseNot()];
    while (peek()?.toLowerCase() === 'and') {
      pos++;
      checks.push(parseNot());
    }
    return checks.length === 1 ? checks[0]! : { kind: 'and', checks };
  };
  const parseNot = (): Check => {
    if (peek()?.toLowerCase() === 'not') {
      pos++;
      return { kind: 'not', check: parseNot() };
    }
    return parseAtom();
  };
  const parseAtom = (): Check => {
    const token = tokens[pos++];
    if (token === undefined) throw new PolicySyntaxError('the check string ends where a check was expected');
    if (token === '(') {
      const inner = parseOr();
      if (tokens[pos++] !== ')') throw new PolicySyntaxError("a '(' has no matching ')'");
      return inner;
    }
    if (token === ')' || ['and', 'or'].includes(token.toLowerCase())) throw new PolicySyntaxError(`'${token}' where a check was expected`);
    if (token === '@') return { kind: 'true' };
    if (token === '!') return { kind: 'false' };
    const colon = token.indexOf(':');
    if (colon <= 0) throw new PolicySyntaxError(`'${token}' is not a check: expected KIND:MATCH (e.g. role:admin), @ or !`);
    const kind = token.slice(0, colon);
    const match = token.slice(colon + 1);
    if (kind === 'rule') return { kind: 'rule', name: match };
    if (kind === 'role') return { kind: 'role', match };
    return { kind: 'generic', left: kind, match };
  };
  const check = parseOr();
  if (pos !== tokens.length) throw new PolicySyntaxError(`unexpected '${tokens[pos]}'`);
  return check;
}

/** A constant on the left of a generic check: a quoted string, a number, True or False. */
function constantOf(left: string): string | null {
  const quoted = /^(['"])(.*)\1$/.exec(left);
  if (quoted) return quoted[2]!;
  if (/^-?\d+(\.\d+)?$/.test(left) || left === 'True' || left === 'False') return left;
  return null;
}

export class PolicyTable {
  private readonly rules = new Map<string, { text: string; check: Check }>();

  /**
   * `defaults` are the service's rules; `overrides` (from the operator's policy file) replace
   * or add rules. Throws PolicySyntaxError naming the rule when a check string does not parse.
   */
  constructor(defaults: Record<string, string>, overrides: Record<string, string> = {}) {
    for (const [name, text] of Object.entries({ ...defaults, ...overrides })) {
      try {
        this.rules.set(name, { text, check: parseCheckString(text) });
      } catch (error) {
        const source = Object.hasOwn(overrides, name) ? 'policy file' : 'default policy';
        throw new PolicySyntaxError(`${source} rule '${name}': "${text}": ${(error as Error).message}`);
      }
    }
  }

  has(rule: string): boolean {
    return this.rules.has(rule);
  }

  /** The effective check string of every rule (defaults with overrides applied), for docs and `pumice doctor`. */
  entries(): [string, string][] {
    return [...this.rules].map(([name, r]) => [name, r.text]);
  }

  /**
   * Whether `auth` may do `rule` on `target`. `@` and `!` may be given as rule names.
   * An unknown rule name is a programming error and throws (registerRoutes checks names at start).
   */
  check(rule: string, auth: AuthContext | null, target: PolicyTarget): boolean {
    if (rule === '@') return true;
    if (rule === '!') return false;
    const entry = this.rules.get(rule);
    if (!entry) throw new Error(`policy rule '${rule}' is not in the policy table`);
    return this.evaluate(entry.check, credentialsOf(auth), target, 0);
  }

  /** Throws 403 (Forbidden, "Policy doesn't allow RULE to be performed.") unless `check` allows. */
  enforce(rule: string, auth: AuthContext | null, target: PolicyTarget, actionText?: string): void {
    if (!this.check(rule, auth, target)) throw errors.forbidden(actionText ?? rule);
  }

  private evaluate(check: Check, creds: Credentials, target: PolicyTarget, depth: number): boolean {
    // Rules referring to each other in a loop would recurse forever; oslo.policy has the same hazard.
    if (depth > 32) throw new Error('policy rules refer to each other more than 32 levels deep (a loop?)');
    switch (check.kind) {
      case 'true':
        return true;
      case 'false':
        return false;
      case 'not':
        return !this.evaluate(check.check, creds, target, depth + 1);
      case 'and':
        return check.checks.every((c) => this.evaluate(c, creds, target, depth + 1));
      case 'or':
        return check.checks.some((c) => this.evaluate(c, creds, target, depth + 1));
      case 'rule': {
        // oslo.policy: a reference to an undefined rule is false.
        const entry = this.rules.get(check.name);
        return entry ? this.evaluate(entry.check, creds, target, depth + 1) : false;
      }
      case 'role': {
        const role = substitute(check.match, target);
        return role !== null && creds.roles.includes(role.toLowerCase());
      }
      case 'generic': {
        const match = substitute(check.match, target);
        if (match === null) return false;
        const constant = constantOf(check.left);
        if (constant !== null) return constant === match;
        if (!Object.hasOwn(creds, check.left)) return false;
        const value = creds[check.left];
        if (Array.isArray(value)) return value.map(pythonString).includes(match);
        if (value === null || value === undefined) return false;
        return pythonString(value) === match;
      }
    }
  }
}

/**
 * Reads an operator's policy file as oslo.policy does: a JSON object, or YAML
 * mapping rule names to check strings (one `"rule": "check"` per line, comments
 * with `#`). `path` null gives no overrides. Throws naming the file and line.
 */
export function loadPolicyOverrides(path: string | null): Record<string, string> {
  if (path === null) return {};
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new PolicySyntaxError(`[oslo_policy] policy_file ${path}: cannot read it: ${(error as Error).message}`);
  }
  return parsePolicyText(text, path);
}

/** Parses the text of a policy file (JSON object or flat YAML map of strings). */
export function parsePolicyText(text: string, path = 'policy file'): Record<string, string> {
  const trimmed = text.trim();
  if (trimmed.startsWith('{')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(trimmed);
    } catch (error) {
      throw new PolicySyntaxError(`${path}: not valid JSON: ${(error as Error).message}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new PolicySyntaxError(`${path}: expected an object of rule names to check strings`);
    const rules: Record<string, string> = {};
    for (const [name, value] of Object.entries(parsed)) {
      // Very old policy.json files wrote the empty list for "allow everyone".
      if (Array.isArray(value) && value.length === 0) rules[name] = '';
      else if (typeof value === 'string') rules[name] = value;
      else throw new PolicySyntaxError(`${path}: rule '${name}' must be a string check, e.g. "role:admin"`);
    }
    return rules;
  }
  const rules: Record<string, string> = {};
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, index) => {
    const line = raw.replace(/^\uFEFF/, '');
    if (/^\s*(#.*)?$/.test(line) || /^(---|\.\.\.)\s*$/.test(line)) return;
    const where = `${path}:${index + 1}`;
    const m = /^(?:"((?:[^"\\]|\\.)*)"|'((?:[^']|'')*)'|([^\s:#'"][^:#]*?))\s*:(?:\s+(.*?))?\s*$/.exec(line);
    if (!m || /^\s/.test(line)) {
      throw new PolicySyntaxError(`${where}: expected '"rule_name": "check string"' on one line (nested YAML is not a policy file)`);
    }
    const name = m[1] !== undefined ? unescapeDouble(m[1]) : m[2] !== undefined ? m[2].replace(/''/g, "'") : m[3]!;
    rules[name] = yamlScalar(m[4] ?? '', where);
  });
  return rules;
}

function unescapeDouble(text: string): string {
  return text.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c === 't' ? '\t' : c));
}

function yamlScalar(value: string, where: string): string {
  if (value === '' || value === '""' || value === "''") return '';
  const double = /^"((?:[^"\\]|\\.)*)"\s*(#.*)?$/.exec(value);
  if (double) return unescapeDouble(double[1]!);
  const single = /^'((?:[^']|'')*)'\s*(#.*)?$/.exec(value);
  if (single) return single[1]!.replace(/''/g, "'");
  if (/^["'[{|>]/.test(value)) throw new PolicySyntaxError(`${where}: the value must be a quoted or plain string on one line`);
  // A plain scalar ends at ' #'.
  return value.replace(/\s+#.*$/, '').trim();
}
