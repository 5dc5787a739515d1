/**
 * Application credential access rules (Keystone's `access_rules`): an allow-list
 * of requests a token from the credential may make, each a service type, an
 * HTTP method and a path below the service's endpoint where `*` stands for one
 * path segment and `**` for any number of them (for example `/v2/images/**`). A
 * request that no rule allows is refused with a 401, as keystonemiddleware
 * refuses it, before any handler runs; a credential without rules is not limited.
 */
import { errors, PumiceError } from '../errors.ts';

export interface AccessRule {
  id: string;
  service: string;
  method: string;
  path: string;
}

export const accessRuleMethods = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

/** Pumice's API prefixes and the catalog service types a rule may name for them (Keystone's and the older aliases). */
const serviceTypesByPrefix: Record<string, string[]> = {
  '/identity': ['identity'],
  '/volume': ['block-storage', 'volumev3', 'volume'],
  '/image': ['image'],
  '/compute': ['compute'],
};

/** The service types known to access rules, for the create-time check. */
export const accessRuleServices = [...new Set(Object.values(serviceTypesByPrefix).flat())];

/** Whether `path` (segments split on '/') matches the rule's pattern. */
function pathMatches(pattern: string[], path: string[]): boolean {
  if (pattern.length === 0) return path.length === 0;
  const [head, ...rest] = pattern;
  if (head === '**') {
    for (let skip = 0; skip <= path.length; skip++) if (pathMatches(rest, path.slice(skip))) return true;
    return false;
  }
  if (path.length === 0) return false;
  return (head === '*' || head === path[0]) && pathMatches(rest, path.slice(1));
}

const segments = (path: string): string[] => path.split('/').filter((s) => s.length > 0);

/** Whether a rule allows `method` on `path` (below the service prefix) of the API at `prefix`. */
export function ruleAllows(rule: AccessRule, prefix: string, method: string, path: string): boolean {
  const types = serviceTypesByPrefix[prefix] ?? [];
  // HEAD is a GET without the body.
  const methodOk = rule.method === method || (method === 'HEAD' && rule.method === 'GET');
  return types.includes(rule.service) && methodOk && pathMatches(segments(rule.path), segments(path));
}

/**
 * Throws 401 unless one of `rules` allows the request. `path` is below the
 * service's prefix (`/v3/PROJECT/volumes` for `/volume/v3/PROJECT/volumes`).
 */
export function enforceAccessRules(rules: AccessRule[], credentialId: string, prefix: string, method: string, path: string): void {
  if (rules.some((rule) => ruleAllows(rule, prefix, method, path))) return;
  const service = serviceTypesByPrefix[prefix]?.[0] ?? prefix;
  throw errors.unauthorized(
    `The access rules of application credential ${credentialId} do not allow ${method} ${path.slice(0, 200)} on service ${service}: ` +
    'create a credential whose access_rules include it, or use one without access rules.',
  );
}

/** A rule as the caller gives it at create time: an existing rule's id, or a service, method and path. */
export interface AccessRuleInput {
  id?: unknown;
  service?: unknown;
  method?: unknown;
  path?: unknown;
}

/**
 * Checks the rules given at create time: each names a known service type, an HTTP method and an
 * absolute path, or only the id of one of the user's rules (`existing` finds it; 404 otherwise).
 * Ids are not assigned here: the store gives a new rule an id, or reuses the user's rule with the
 * same service, method and path (Keystone shares one rule between credentials).
 */
export function checkAccessRules(input: AccessRuleInput[], existing: (id: string) => AccessRule | undefined): Omit<AccessRule, 'id'>[] {
  return input.map((rule, index) => {
    const where = `access_rules[${index}]`;
    if (typeof rule.id === 'string' && rule.service === undefined && rule.method === undefined && rule.path === undefined) {
      const found = existing(rule.id);
      if (!found) throw new PumiceError('NotFound', `Could not find access rule: ${rule.id} (${where}.id): list yours with openstack access rule list, or give service, method and path instead.`);
      return { service: found.service, method: found.method, path: found.path };
    }
    if (typeof rule.service !== 'string' || !accessRuleServices.includes(rule.service)) {
      throw errors.invalidInput(`Invalid input for field '${where}.service': ${JSON.stringify(rule.service ?? null)?.slice(0, 40)} is not a service type here; use one of ${accessRuleServices.join(', ')}.`);
    }
    if (typeof rule.method !== 'string' || !(accessRuleMethods as readonly string[]).includes(rule.method)) {
      throw errors.invalidInput(`Invalid input for field '${where}.method': expected one of ${accessRuleMethods.join(', ')}.`);
    }
    if (typeof rule.path !== 'string' || !rule.path.startsWith('/') || rule.path.length > 512) {
      throw errors.invalidInput(`Invalid input for field '${where}.path': expected a path starting with '/' (up to 512 characters), such as /v2/images/**.`);
    }
    return { service: rule.service, method: rule.method, path: rule.path };
  });
}
