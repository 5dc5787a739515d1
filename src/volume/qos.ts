/**
 * QoS specs (Cinder's qos-specs): named sets of limits with a consumer,
 * associated with volume types. `front-end` specs go to the consumer in the
 * connection info (`qos_specs`, QEMU throttling: total_iops_sec, ...);
 * `back-end` specs are enforced by the backend (librbd's rbd_qos_* image
 * options, the NBD server's rate limit for local volumes); `both` does both.
 * A volume's limits are its type's specs when it is connected or created.
 */
import { randomUUID } from 'node:crypto';
import { nowIso, type Db } from '../db/db.ts';
import { errors, PumiceError } from '../errors.ts';

export type QosConsumer = 'front-end' | 'back-end' | 'both';
export const qosConsumers: readonly QosConsumer[] = ['front-end', 'back-end', 'both'];

export interface QosSpecsRow {
  id: string;
  name: string;
  consumer: QosConsumer;
  specs: string;
  created_at: string;
  updated_at: string | null;
}

/**
 * Keys a backend enforces and how: Cinder's front-end names (QEMU's throttling
 * options), each `_per_gb` variant scaled by the volume's size. Operations are
 * per second; bytes per second.
 */
export const qosLimitKeys = [
  'total_iops_sec', 'read_iops_sec', 'write_iops_sec', 'total_bytes_sec', 'read_bytes_sec', 'write_bytes_sec',
] as const;
export type QosLimitKey = (typeof qosLimitKeys)[number];
export type QosLimits = Partial<Record<QosLimitKey, number>>;

/** The limits a backend applies to a volume of `sizeGiB` from `specs` (`<key>` or `<key>_per_gb`). Unknown keys are ignored. */
export function backendLimits(specs: Record<string, string>, sizeGiB: number): QosLimits {
  const limits: QosLimits = {};
  for (const key of qosLimitKeys) {
    const flat = Number(specs[key]);
    const perGb = Number(specs[`${key}_per_gb`]);
    if (Number.isFinite(flat) && flat > 0) limits[key] = Math.floor(flat);
    else if (Number.isFinite(perGb) && perGb > 0) limits[key] = Math.floor(perGb * sizeGiB);
  }
  return limits;
}

/** A spec value must be a non-negative number for the keys backends enforce (a typo would silently not limit). */
function checkSpecs(specs: Record<string, string>): void {
  for (const [key, value] of Object.entries(specs)) {
    const base = key.replace(/_per_gb$/, '');
    if ((qosLimitKeys as readonly string[]).includes(base) && !/^\d+(\.\d+)?$/.test(value.trim())) {
      throw errors.badRequest(`Invalid input: QoS spec '${key}' must be a non-negative number, got '${value.slice(0, 40)}'. Give a number such as ${key}=1000.`);
    }
  }
}

export class QosSpecs {
  constructor(private readonly db: Db) {}

  list(): QosSpecsRow[] {
    return this.db.all<QosSpecsRow>('SELECT * FROM qos_specs ORDER BY created_at, id');
  }

  get(id: string): QosSpecsRow {
    const row = this.db.get<QosSpecsRow>('SELECT * FROM qos_specs WHERE id = ?', id);
    if (!row) throw errors.notFound('QoS spec', id);
    return row;
  }

  /** 409 when the name is taken (Cinder's QoSSpecsExists). */
  create(name: string, consumer: QosConsumer, specs: Record<string, string>): QosSpecsRow {
    checkSpecs(specs);
    return this.db.transaction(() => {
      if (this.db.get('SELECT 1 FROM qos_specs WHERE name = ?', name)) {
        throw errors.conflict(`QoS Specs ${name} already exists. Choose another name, or change that one with PUT /qos-specs/{id}.`);
      }
      const id = randomUUID();
      this.db.run('INSERT INTO qos_specs (id, name, consumer, specs, created_at) VALUES (?, ?, ?, ?, ?)', id, name, consumer, JSON.stringify(specs), nowIso());
      return this.get(id);
    });
  }

  /** Sets keys (`consumer` changes the consumer); returns what was set. */
  setKeys(id: string, changes: Record<string, string>): Record<string, string> {
    const { consumer, ...specs } = changes;
    if (consumer !== undefined && !(qosConsumers as readonly string[]).includes(consumer)) {
      throw errors.badRequest(`Invalid input: QoS consumer '${consumer.slice(0, 40)}' is not one of ${qosConsumers.join(', ')}.`);
    }
    checkSpecs(specs);
    this.db.transaction(() => {
      const row = this.get(id);
      const merged = { ...(JSON.parse(row.specs) as Record<string, string>), ...specs };
      this.db.run('UPDATE qos_specs SET specs = ?, consumer = ?, updated_at = ? WHERE id = ?', JSON.stringify(merged), consumer ?? row.consumer, nowIso(), id);
    });
    return changes;
  }

  /** Removes keys; a key the specs do not have is a 404 naming it (Cinder's QoSSpecsKeyNotFound). */
  deleteKeys(id: string, keys: string[]): void {
    this.db.transaction(() => {
      const specs = JSON.parse(this.get(id).specs) as Record<string, string>;
      for (const key of keys) {
        if (!(key in specs)) throw new PumiceError('NotFound', `QoS spec ${id} has no key '${key.slice(0, 255)}'; nothing was removed. List its keys with GET /qos-specs/${id}.`);
        delete specs[key];
      }
      this.db.run('UPDATE qos_specs SET specs = ?, updated_at = ? WHERE id = ?', JSON.stringify(specs), nowIso(), id);
    });
  }

  /** 400 while types are associated unless `force` (which disassociates them first). */
  delete(id: string, force: boolean): void {
    this.db.transaction(() => {
      this.get(id);
      const types = this.associations(id);
      if (types.length && !force) {
        throw errors.badRequest(`QoS Specs ${id} is still associated with volume types (${types.map((t) => t.name).join(', ')}). Disassociate them first (GET /qos-specs/${id}/disassociate_all), or delete with force=True.`);
      }
      this.db.run('UPDATE volume_types SET qos_specs_id = NULL WHERE qos_specs_id = ?', id);
      this.db.run('DELETE FROM qos_specs WHERE id = ?', id);
    });
  }

  associations(id: string): { id: string; name: string }[] {
    return this.db.all<{ id: string; name: string }>('SELECT id, name FROM volume_types WHERE qos_specs_id = ? ORDER BY name', id);
  }

  /** A type has at most one QoS spec: associating a second is a 400 naming the first. */
  associate(id: string, typeId: string): void {
    this.db.transaction(() => {
      this.get(id);
      const type = this.db.get<{ id: string; qos_specs_id: string | null }>('SELECT id, qos_specs_id FROM volume_types WHERE id = ?', typeId);
      if (!type) throw errors.notFound('Volume type', typeId);
      if (type.qos_specs_id && type.qos_specs_id !== id) {
        throw errors.badRequest(`Volume type ${typeId} is already associated with QoS spec ${type.qos_specs_id}. Disassociate it first (GET /qos-specs/${type.qos_specs_id}/disassociate?vol_type_id=${typeId}).`);
      }
      this.db.run('UPDATE volume_types SET qos_specs_id = ? WHERE id = ?', id, typeId);
    });
  }

  disassociate(id: string, typeId: string | null): void {
    this.db.transaction(() => {
      this.get(id);
      if (typeId === null) {
        this.db.run('UPDATE volume_types SET qos_specs_id = NULL WHERE qos_specs_id = ?', id);
        return;
      }
      if (!this.db.get('SELECT 1 FROM volume_types WHERE id = ?', typeId)) throw errors.notFound('Volume type', typeId);
      this.db.run('UPDATE volume_types SET qos_specs_id = NULL WHERE id = ? AND qos_specs_id = ?', typeId, id);
    });
  }

  /** The QoS specs of a volume type, or null. */
  forType(typeId: string | null): { consumer: QosConsumer; specs: Record<string, string> } | null {
    if (!typeId) return null;
    const row = this.db.get<QosSpecsRow>('SELECT q.* FROM qos_specs q JOIN volume_types t ON t.qos_specs_id = q.id WHERE t.id = ?', typeId);
    return row ? { consumer: row.consumer, specs: JSON.parse(row.specs) as Record<string, string> } : null;
  }
}

/** What a connection of a volume carries: the limits its backend applies, and the specs handed to the consumer. */
export interface VolumeQos {
  /** For the driver (librbd options, the NBD rate limit); undefined when the type has no back-end QoS. */
  backEnd: QosLimits | undefined;
  /** `qos_specs` of the connection info (front-end or both), `_per_gb` keys scaled by the size; null otherwise. */
  frontEnd: Record<string, string> | null;
}

/** The QoS of a volume of type `typeId` and `sizeGiB`, from its type's associated spec. */
export function volumeQos(db: Db, typeId: string | null, sizeGiB: number): VolumeQos {
  const qos = new QosSpecs(db).forType(typeId);
  if (!qos) return { backEnd: undefined, frontEnd: null };
  let frontEnd: Record<string, string> | null = null;
  if (qos.consumer !== 'back-end') {
    frontEnd = {};
    for (const [key, value] of Object.entries(qos.specs)) {
      if (key.endsWith('_per_gb')) frontEnd[key.slice(0, -'_per_gb'.length)] ??= String(Math.floor(Number(value) * sizeGiB));
      else frontEnd[key] = value;
    }
  }
  return { backEnd: qos.consumer !== 'front-end' ? backendLimits(qos.specs, sizeGiB) : undefined, frontEnd };
}
