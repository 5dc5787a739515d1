/**
 * The volume scheduler: filters drop pools that cannot take a request, then
 * weighers rank the rest (Cinder's filter scheduler). It is pure: it sees
 * only pool states (capacity reports and capabilities), so it is tested
 * without any backend. When nothing fits, the result says which filter
 * rejected which pool and why, with figures (`reasons`: for administrators
 * and the log), and the same without backend names, capacities or internal
 * reasons (`memberReasons`: for the project's user message and status).
 */

export interface PoolState {
  /** Backend section name; also the task queue name. */
  backend: string;
  /** Cinder host string `host@backend#pool`. */
  host: string;
  volumeBackendName: string;
  availabilityZone: string;
  up: boolean;
  disabled: boolean;
  /** Why the backend is down, when it is. */
  downReason: string | null;
  totalCapacityGiB: number;
  freeCapacityGiB: number;
  provisionedCapacityGiB: number;
  maxOverSubscriptionRatio: number | 'auto';
  reservedPercentage: number;
  thinProvisioningSupport: boolean;
  thickProvisioningSupport: boolean;
  capabilities: Record<string, string | number | boolean>;
}

export interface ScheduleRequest {
  sizeGiB: number;
  availabilityZone: string | null;
  extraSpecs: Record<string, string>;
}

export type ScheduleResult =
  | { ok: true; pool: PoolState; weight: number }
  | { ok: false; reasons: string[]; memberReasons?: string[] };

type Filter = (pool: PoolState, request: ScheduleRequest) => string | null;

/** Each filter returns null to pass the pool, or the reason it rejects it. */
export const filters: Record<string, Filter> = {
  AvailabilityZoneFilter(pool, request) {
    if (request.availabilityZone === null || request.availabilityZone === pool.availabilityZone) return null;
    return `it is in availability zone '${pool.availabilityZone}', not '${request.availabilityZone}'`;
  },
  CapacityFilter(pool, request) {
    const reservedGiB = (pool.totalCapacityGiB * pool.reservedPercentage) / 100;
    const freeGiB = pool.freeCapacityGiB - reservedGiB;
    const thin = pool.thinProvisioningSupport && request.extraSpecs['provisioning:type'] !== 'thick';
    if (!thin) {
      if (freeGiB >= request.sizeGiB) return null;
      return `it has ${round(freeGiB)} GiB free (after ${pool.reservedPercentage}% reserved) and ${request.sizeGiB} GiB were asked`;
    }
    const ratio = effectiveRatio(pool);
    if (pool.totalCapacityGiB <= 0) return 'it reports no capacity';
    const provisionedRatio = (pool.provisionedCapacityGiB + request.sizeGiB) / pool.totalCapacityGiB;
    if (provisionedRatio > ratio) {
      return `provisioning ${request.sizeGiB} GiB more would make ${round(pool.provisionedCapacityGiB + request.sizeGiB)} GiB on ${round(pool.totalCapacityGiB)} GiB, over max_over_subscription_ratio ${round(ratio)}`;
    }
    if (freeGiB * ratio >= request.sizeGiB && freeGiB > 0) return null;
    return `it has ${round(freeGiB)} GiB free (x${round(ratio)} over-subscription) and ${request.sizeGiB} GiB were asked`;
  },
  CapabilitiesFilter(pool, request) {
    for (const [rawKey, wanted] of Object.entries(request.extraSpecs)) {
      const scoped = rawKey.split(':');
      // Only unscoped keys and the `capabilities:` scope are matched; others (QoS, hw:, RESKEY) are for drivers.
      if (scoped.length > 1 && scoped[0] !== 'capabilities') continue;
      const key = scoped.length > 1 ? scoped.slice(1).join(':') : rawKey;
      if (key === 'provisioning' || key === 'multiattach') {
        if (key === 'multiattach' && /^<is>\s*true$/i.test(wanted.trim()) && !pool.capabilities['multiattach']) {
          return "it does not support multiattach (extra spec multiattach='<is> True')";
        }
        continue;
      }
      const actual = key === 'volume_backend_name' ? pool.volumeBackendName : pool.capabilities[key];
      if (actual === undefined) return `it has no capability '${key}' (extra spec ${rawKey}='${wanted}')`;
      if (!matchesSpec(String(actual), wanted)) return `its ${key} is '${String(actual)}', and the volume type asks ${rawKey}='${wanted}'`;
    }
    return null;
  },
};

/**
 * What a project member may read about a rejection: the kind of reason, and
 * only figures the request itself gave (its size, zone); never a backend's
 * name, capacity, settings or down reason (issue 12: error texts must not
 * show backend capacity to non-admins).
 */
const memberFilterReasons: Record<string, (request: ScheduleRequest) => string> = {
  AvailabilityZoneFilter: (request) => `no backend in availability zone '${request.availabilityZone ?? ''}'`,
  CapacityFilter: (request) => `not enough free capacity for ${request.sizeGiB} GiB`,
  CapabilitiesFilter: () => 'no backend offers what the volume type asks for',
};

/**
 * The texts of a failed scheduling: `detail` for administrators and the log
 * (every backend, the filter that rejected it, figures), `member` for the
 * project (the user message and the volume's status reason).
 */
export function schedulingFailureTexts(result: { reasons: string[]; memberReasons?: string[] }): { detail: string; member: string } {
  const member = [...new Set(result.memberReasons ?? ['no backend can take the volume now'])];
  return { detail: `No valid backend was found. ${result.reasons.join('; ')}.`, member: `No valid backend was found: ${member.join('; ')}.` };
}

/** Free capacity weigher (Cinder's CapacityWeigher): virtual free space for thin pools. */
export const weighers: Record<string, (pool: PoolState) => number> = {
  CapacityWeigher(pool) {
    const reservedGiB = (pool.totalCapacityGiB * pool.reservedPercentage) / 100;
    if (pool.thinProvisioningSupport) {
      return pool.totalCapacityGiB * effectiveRatio(pool) - pool.provisionedCapacityGiB - reservedGiB;
    }
    return pool.freeCapacityGiB - reservedGiB;
  },
};

export function effectiveRatio(pool: PoolState): number {
  if (pool.maxOverSubscriptionRatio !== 'auto') return pool.maxOverSubscriptionRatio;
  // Cinder's 'auto': the ratio already in use, plus one, so growth is allowed in proportion.
  const usedGiB = pool.totalCapacityGiB - pool.freeCapacityGiB;
  return usedGiB > 0 ? Math.max(1, 1 + pool.provisionedCapacityGiB / usedGiB) : 20;
}

export function schedule(
  pools: PoolState[],
  request: ScheduleRequest,
  filterNames: string[] = ['AvailabilityZoneFilter', 'CapacityFilter', 'CapabilitiesFilter'],
  weigherNames: string[] = ['CapacityWeigher'],
): ScheduleResult {
  const reasons: string[] = [];
  const memberReasons: string[] = [];
  const passed: PoolState[] = [];
  if (pools.length === 0) return { ok: false, reasons: ['no storage backend is configured (enabled_backends)'], memberReasons: ['no storage backend is available'] };
  for (const pool of pools) {
    if (!pool.up) {
      reasons.push(`backend ${pool.host}: its volume service is down${pool.downReason ? ` (${pool.downReason})` : ''}`);
      memberReasons.push('a storage backend is unavailable');
      continue;
    }
    if (pool.disabled) {
      reasons.push(`backend ${pool.host}: its volume service is disabled (openstack volume service set --enable to use it)`);
      memberReasons.push('a storage backend is unavailable');
      continue;
    }
    let rejected = false;
    for (const name of filterNames) {
      const filter = filters[name];
      if (!filter) continue;
      const reason = filter(pool, request);
      if (reason !== null) {
        reasons.push(`${name} rejected backend ${pool.host}: ${reason}`);
        memberReasons.push(memberFilterReasons[name]?.(request) ?? 'no backend can take the volume now');
        rejected = true;
        break;
      }
    }
    if (!rejected) passed.push(pool);
  }
  if (passed.length === 0) return { ok: false, reasons, memberReasons };
  let best: PoolState = passed[0]!;
  let bestWeight = -Infinity;
  for (const pool of passed) {
    const weight = weigherNames.reduce((sum, name) => sum + (weighers[name]?.(pool) ?? 0), 0);
    if (weight > bestWeight) {
      bestWeight = weight;
      best = pool;
    }
  }
  return { ok: true, pool: best, weight: bestWeight };
}

/** Cinder's extra-spec operators: `<is>`, `<in>`, `<or>`, `<all-in>`, `s==`, `==`, `>=`, `<=`, `!=`, or plain equality. */
export function matchesSpec(actual: string, wanted: string): boolean {
  const spec = wanted.trim();
  const words = spec.split(/\s+/);
  const op = words[0] ?? '';
  const operand = words.slice(1).join(' ');
  switch (op) {
    case '<is>':
      return actual.toLowerCase() === operand.toLowerCase();
    case '<in>':
      return actual.includes(operand);
    case '<all-in>':
      return operand.split(/\s+/).every((w) => actual.includes(w));
    case '<or>':
      return spec.split('<or>').map((s) => s.trim()).filter(Boolean).includes(actual);
    case 's==':
      return actual === operand;
    case 's!=':
      return actual !== operand;
    case '==':
    case '=':
      return Number(actual) === Number(operand);
    case '!=':
      return Number(actual) !== Number(operand);
    case '>=':
      return Number(actual) >= Number(operand);
    case '<=':
      return Number(actual) <= Number(operand);
    default:
      return actual === spec;
  }
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
