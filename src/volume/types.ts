/**
 * Volume types, their extra specs and access lists (Cinder's types,
 * types_extra_specs and volume_type_access): the rules and the SQL behind the
 * `/types` routes. Callers have passed the policy check already.
 */
import { randomUUID } from 'node:crypto';
import { nowIso, type Db } from '../db/db.ts';
import { errors } from '../errors.ts';
import type { AuthContext } from '../http/router.ts';
import type { VolumeTypeRow } from './records.ts';
import { defaultTypeName, type VolumeService } from './volumes.ts';

/** Extra specs Cinder shows to callers who are not administrators: the ones that describe user-visible behaviour. */
export const userVisibleExtraSpecs = ['RESKEY:availability_zones', 'multiattach', 'replication_enabled'];

export interface CreateTypeInput {
  name: string;
  description: string | null;
  isPublic: boolean;
  extraSpecs: Record<string, string>;
}

export class VolumeTypes {
  constructor(
    private readonly db: Db,
    private readonly volumes: VolumeService,
  ) {}

  /** Types the caller may see; `isPublic` is the `is_public` filter (admins only: null lists public and private). */
  list(auth: AuthContext, isPublic: boolean | null | 'none'): VolumeTypeRow[] {
    let rows = this.db.all<VolumeTypeRow>('SELECT * FROM volume_types ORDER BY name');
    if (!auth.isAdmin || isPublic === null) rows = rows.filter((t) => this.volumes.typeAccessible(auth, t) && (auth.isAdmin || t.is_public || isPublic !== true));
    if (auth.isAdmin && typeof isPublic === 'boolean') rows = rows.filter((t) => !!t.is_public === isPublic);
    return rows;
  }

  /** A type by id ('default' is the default type); 404 when it does not exist or is private to other projects. */
  get(auth: AuthContext, id: string): VolumeTypeRow {
    if (id === 'default') return this.volumes.defaultType();
    const row = this.db.get<VolumeTypeRow>('SELECT * FROM volume_types WHERE id = ?', id);
    if (!row || !this.volumes.typeAccessible(auth, row)) throw errors.notFound('Volume type', id);
    return row;
  }

  /** Extra specs as the caller may see them (administrators: all). */
  visibleSpecs(auth: AuthContext, typeId: string): Record<string, string> {
    const specs = this.volumes.extraSpecs(typeId);
    if (auth.isAdmin) return specs;
    return Object.fromEntries(Object.entries(specs).filter(([k]) => userVisibleExtraSpecs.includes(k)));
  }

  /** Creates a type; 409 when the name is taken. */
  create(input: CreateTypeInput): VolumeTypeRow {
    if (this.db.get('SELECT 1 FROM volume_types WHERE name = ?', input.name)) throw errors.conflict(`Volume Type ${input.name} already exists.`);
    const id = randomUUID();
    this.db.transaction(() => {
      this.db.run('INSERT INTO volume_types (id, name, description, is_public, created_at) VALUES (?, ?, ?, ?, ?)', id, input.name, input.description, input.isPublic ? 1 : 0, nowIso());
      for (const [k, v] of Object.entries(input.extraSpecs)) this.db.run('INSERT INTO volume_type_extra_specs (volume_type_id, key, value) VALUES (?, ?, ?)', id, k, v);
    });
    return this.db.get<VolumeTypeRow>('SELECT * FROM volume_types WHERE id = ?', id)!;
  }

  /** Renames or re-describes a type; the built-in default type keeps its name. */
  update(type: VolumeTypeRow, changes: { name?: string; description?: string | null; isPublic?: boolean }): VolumeTypeRow {
    if (changes.name && changes.name !== type.name) {
      if (type.name === defaultTypeName) throw errors.badRequest(`The default volume type ${defaultTypeName} cannot be renamed.`);
      if (this.db.get('SELECT 1 FROM volume_types WHERE name = ?', changes.name)) throw errors.conflict(`Volume Type ${changes.name} already exists.`);
    }
    this.db.run('UPDATE volume_types SET name = ?, description = ?, is_public = ?, updated_at = ? WHERE id = ?',
      changes.name ?? type.name, changes.description === undefined ? type.description : changes.description,
      changes.isPublic === undefined ? type.is_public : changes.isPublic ? 1 : 0, nowIso(), type.id);
    return this.db.get<VolumeTypeRow>('SELECT * FROM volume_types WHERE id = ?', type.id)!;
  }

  /** Deletes a type no volume uses and that is not the default. */
  delete(type: VolumeTypeRow): void {
    if (type.name === defaultTypeName || type.name === this.volumes.defaultType().name) {
      throw errors.badRequest(`Volume type ${type.name} is the default type and cannot be deleted; set default_volume_type to another type first.`);
    }
    const used = this.usedBy(type.id);
    if (used > 0) throw errors.badRequest(`Target volume type is still in use: ${used} volume(s) of type ${type.name} exist. Delete or retype them first.`);
    this.db.run('DELETE FROM volume_types WHERE id = ?', type.id);
  }

  /** Sets (adds or replaces) extra specs; refuses to move a type in use to another backend. */
  setSpecs(typeId: string, specs: Record<string, string>): void {
    this.checkInUseBackendChange(typeId, specs);
    this.db.transaction(() => {
      for (const [k, v] of Object.entries(specs)) {
        this.db.run('INSERT INTO volume_type_extra_specs (volume_type_id, key, value) VALUES (?, ?, ?) ON CONFLICT (volume_type_id, key) DO UPDATE SET value = excluded.value', typeId, k, v);
      }
    });
  }

  /** Removes one extra spec; 404 when it is not set. */
  deleteSpec(typeId: string, key: string): void {
    if (this.db.run('DELETE FROM volume_type_extra_specs WHERE volume_type_id = ? AND key = ?', typeId, key).changes === 0) {
      throw errors.notFound('Volume type extra spec', key);
    }
  }

  /** Projects given access to a private type; 404 for a public type (it has no list). */
  accessList(type: VolumeTypeRow): string[] {
    if (type.is_public) throw errors.notFound('Volume type access', `for public type ${type.id} (a public type has no access list)`);
    return this.db.all<{ project_id: string }>('SELECT project_id FROM volume_type_projects WHERE volume_type_id = ? ORDER BY project_id', type.id).map((r) => r.project_id);
  }

  /** Grants a project access to a private type; 409 when it already has it. */
  addAccess(type: VolumeTypeRow, projectId: string): void {
    this.requirePrivate(type);
    if (this.db.get('SELECT 1 FROM volume_type_projects WHERE volume_type_id = ? AND project_id = ?', type.id, projectId)) {
      throw errors.conflict(`Volume type access for ${type.id} / ${projectId} combination already exists.`);
    }
    this.db.run('INSERT INTO volume_type_projects (volume_type_id, project_id) VALUES (?, ?)', type.id, projectId);
  }

  /** Revokes a project's access; 404 when it had none. */
  removeAccess(type: VolumeTypeRow, projectId: string): void {
    this.requirePrivate(type);
    if (this.db.run('DELETE FROM volume_type_projects WHERE volume_type_id = ? AND project_id = ?', type.id, projectId).changes === 0) {
      throw errors.notFound('Volume type access', `for ${type.id} / ${projectId}`);
    }
  }

  private requirePrivate(type: VolumeTypeRow): void {
    if (type.is_public) throw errors.badRequest(`Volume type ${type.name} is public: access lists apply only to private types (openstack volume type set --private).`);
  }

  private usedBy(typeId: string): number {
    return this.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM volumes WHERE volume_type_id = ?', typeId)!.n;
  }

  private checkInUseBackendChange(typeId: string, specs: Record<string, string>): void {
    if (!Object.hasOwn(specs, 'volume_backend_name')) return;
    const used = this.usedBy(typeId);
    const current = this.volumes.extraSpecs(typeId)['volume_backend_name'];
    if (used > 0 && current !== undefined && current !== specs['volume_backend_name']) {
      throw errors.badRequest(`Volume type is in use by ${used} volume(s): changing volume_backend_name would misdescribe them. Create a new type instead.`);
    }
  }
}
