/**
 * Flavors: sizes of servers, with extra specs and project access, as Nova's
 * flavor API. A server keeps a snapshot of its flavor, so deleting a flavor
 * (soft: `deleted_at`) never changes servers that use it.
 */
import { randomUUID } from 'node:crypto';
import type { Db } from '../db/db.ts';
import { errors } from '../errors.ts';
import type { FlavorSnapshot } from './model.ts';
import { nowIso } from './model.ts';

export interface FlavorRow {
  id: string;
  name: string;
  vcpus: number;
  ram_mib: number;
  root_gib: number;
  ephemeral_gib: number;
  swap_mib: number;
  rxtx_factor: number;
  is_public: number;
  disabled: number;
  description: string | null;
  created_at: string;
  deleted_at: string | null;
}

export interface CreateFlavorInput {
  name: string;
  id?: string | null;
  vcpus: number;
  ramMiB: number;
  rootGiB: number;
  ephemeralGiB?: number;
  swapMiB?: number;
  rxtxFactor?: number;
  isPublic?: boolean;
  description?: string | null;
}

/** Small flavors every new cloud has, like DevStack's m1.* plus two sized for test guests. */
const defaultFlavors: CreateFlavorInput[] = [
  { id: '42', name: 'm1.nano', vcpus: 1, ramMiB: 128, rootGiB: 1 },
  { id: '84', name: 'm1.micro', vcpus: 1, ramMiB: 192, rootGiB: 1 },
  { id: '1', name: 'm1.tiny', vcpus: 1, ramMiB: 512, rootGiB: 1 },
  { id: '2', name: 'm1.small', vcpus: 1, ramMiB: 2048, rootGiB: 20 },
  { id: '3', name: 'm1.medium', vcpus: 2, ramMiB: 4096, rootGiB: 40 },
  { id: '4', name: 'm1.large', vcpus: 4, ramMiB: 8192, rootGiB: 80 },
  { id: '5', name: 'm1.xlarge', vcpus: 8, ramMiB: 16384, rootGiB: 160 },
];

export const flavorLimits = { nameLengthMax: 255, idLengthMax: 255, extraSpecKeyLengthMax: 255, extraSpecValueLengthMax: 255, extraSpecsMax: 128 } as const;

export class Flavors {
  constructor(private readonly db: Db) {}

  /** Seeds the default flavors into a new cloud (once: a deleted default stays deleted). */
  ensureDefaults(): void {
    const any = this.db.get('SELECT id FROM flavors LIMIT 1');
    if (any) return;
    this.db.transaction(() => {
      for (const flavor of defaultFlavors) this.insert(flavor);
    });
  }

  private insert(input: CreateFlavorInput): FlavorRow {
    const id = input.id ?? randomUUID();
    this.db.run(
      `INSERT INTO flavors (id, name, vcpus, ram_mib, root_gib, ephemeral_gib, swap_mib, rxtx_factor, is_public, description, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      id, input.name, input.vcpus, input.ramMiB, input.rootGiB, input.ephemeralGiB ?? 0, input.swapMiB ?? 0,
      input.rxtxFactor ?? 1, input.isPublic === false ? 0 : 1, input.description ?? null, nowIso(),
    );
    return this.row(id)!;
  }

  row(id: string): FlavorRow | undefined {
    return this.db.get<FlavorRow>('SELECT * FROM flavors WHERE id = ? AND deleted_at IS NULL', id);
  }

  /** A flavor the caller may use: public, or private with access for the project, or any for admins. */
  get(id: string, projectId: string | null, isAdmin: boolean): FlavorRow {
    const row = this.row(id);
    if (!row || (!isAdmin && !this.accessible(row, projectId))) throw errors.notFound('Flavor', id);
    return row;
  }

  accessible(row: FlavorRow, projectId: string | null): boolean {
    if (row.is_public) return true;
    if (!projectId) return false;
    return this.db.get('SELECT 1 FROM flavor_projects WHERE flavor_id = ? AND project_id = ?', row.id, projectId) !== undefined;
  }

  list(options: { projectId: string | null; isAdmin: boolean; isPublic: 'true' | 'false' | 'none'; minRamMiB?: number; minDiskGiB?: number }): FlavorRow[] {
    const rows = this.db.all<FlavorRow>('SELECT * FROM flavors WHERE deleted_at IS NULL');
    return rows.filter((row) => {
      if (options.minRamMiB !== undefined && row.ram_mib < options.minRamMiB) return false;
      if (options.minDiskGiB !== undefined && row.root_gib < options.minDiskGiB) return false;
      // Nova: non-admins see public flavors and private ones their project may use; admins filter with is_public.
      if (!options.isAdmin) return this.accessible(row, options.projectId);
      if (options.isPublic === 'true') return row.is_public === 1;
      if (options.isPublic === 'false') return row.is_public === 0;
      return true;
    });
  }

  create(input: CreateFlavorInput): FlavorRow {
    return this.db.transaction(() => {
      if (this.db.get('SELECT 1 FROM flavors WHERE name = ? AND deleted_at IS NULL', input.name)) {
        throw errors.conflict(`Flavor with name ${input.name} already exists.`);
      }
      if (input.id && this.db.get('SELECT 1 FROM flavors WHERE id = ?', input.id)) {
        throw errors.conflict(`Flavor with ID ${input.id} already exists.`);
      }
      // A soft-deleted flavor keeps its name reserved in the UNIQUE index: free it.
      this.db.run("UPDATE flavors SET name = name || '#deleted-' || id WHERE name = ? AND deleted_at IS NOT NULL", input.name);
      return this.insert(input);
    });
  }

  update(id: string, description: string | null): FlavorRow {
    const row = this.row(id);
    if (!row) throw errors.notFound('Flavor', id);
    this.db.run('UPDATE flavors SET description = ? WHERE id = ?', description, id);
    return this.row(id)!;
  }

  delete(id: string): void {
    const changed = this.db.run('UPDATE flavors SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL', nowIso(), id);
    if (changed.changes === 0) throw errors.notFound('Flavor', id);
  }

  extraSpecs(id: string): Record<string, string> {
    const out: Record<string, string> = {};
    for (const r of this.db.all<{ key: string; value: string }>('SELECT key, value FROM flavor_extra_specs WHERE flavor_id = ? ORDER BY key', id)) out[r.key] = r.value;
    return out;
  }

  setExtraSpecs(id: string, specs: Record<string, string>): Record<string, string> {
    if (!this.row(id)) throw errors.notFound('Flavor', id);
    this.db.transaction(() => {
      for (const [key, value] of Object.entries(specs)) {
        this.db.run('INSERT INTO flavor_extra_specs (flavor_id, key, value) VALUES (?, ?, ?) ON CONFLICT (flavor_id, key) DO UPDATE SET value = excluded.value', id, key, value);
      }
      const count = this.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM flavor_extra_specs WHERE flavor_id = ?', id)!.n;
      if (count > flavorLimits.extraSpecsMax) throw errors.badRequest(`A flavor may have at most ${flavorLimits.extraSpecsMax} extra specs; remove some first.`);
    });
    return specs;
  }

  deleteExtraSpec(id: string, key: string): void {
    if (!this.row(id)) throw errors.notFound('Flavor', id);
    const changed = this.db.run('DELETE FROM flavor_extra_specs WHERE flavor_id = ? AND key = ?', id, key);
    if (changed.changes === 0) throw errors.notFound('Flavor extra spec', `${key} of flavor ${id}`);
  }

  access(id: string): string[] {
    const row = this.row(id);
    if (!row) throw errors.notFound('Flavor', id);
    if (row.is_public) throw errors.notFound('Flavor access', `for public flavor ${id} (public flavors have no access list)`);
    return this.db.all<{ project_id: string }>('SELECT project_id FROM flavor_projects WHERE flavor_id = ? ORDER BY project_id', id).map((r) => r.project_id);
  }

  addAccess(id: string, projectId: string): void {
    const row = this.row(id);
    if (!row) throw errors.notFound('Flavor', id);
    if (row.is_public) throw errors.conflict(`Flavor ${id} is public: it has no access list. Create it with is_public false to restrict it to projects.`);
    const changed = this.db.run('INSERT OR IGNORE INTO flavor_projects (flavor_id, project_id) VALUES (?, ?)', id, projectId);
    if (changed.changes === 0) throw errors.conflict(`Flavor access already exists for flavor ${id} and project ${projectId} combination.`);
  }

  removeAccess(id: string, projectId: string): void {
    if (!this.row(id)) throw errors.notFound('Flavor', id);
    const changed = this.db.run('DELETE FROM flavor_projects WHERE flavor_id = ? AND project_id = ?', id, projectId);
    if (changed.changes === 0) throw errors.notFound('Flavor access', `for flavor ${id} and project ${projectId}`);
  }

  snapshot(row: FlavorRow): FlavorSnapshot {
    return { id: row.id, name: row.name, vcpus: row.vcpus, ram_mib: row.ram_mib, root_gib: row.root_gib, ephemeral_gib: row.ephemeral_gib, swap_mib: row.swap_mib, extra_specs: this.extraSpecs(row.id) };
  }
}
