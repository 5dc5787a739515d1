/**
 * Glance's metadata definitions catalog (metadefs): namespaces of property
 * definitions, objects (named groups of properties), tags, and the resource
 * types (OS::Glance::Image, OS::Nova::Flavor, …) a namespace applies to, with
 * the prefix its properties take there (`hw_` on images, `hw:` on flavors).
 * Horizon and Skyline read it to offer image and flavor properties.
 *
 * A namespace is one row holding its whole document (objects, properties,
 * tags, associations) as JSON: a catalog is small and changed by admins only,
 * and every change is one read-modify-write of one row in a transaction.
 * Seeded at start from JSON files in Glance's `etc/metadefs` format; a
 * namespace that exists is never overwritten by its seed file.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Db } from '../db/db.ts';
import { errors, PumiceError } from '../errors.ts';
import type { AuthContext } from '../http/router.ts';
import type { PolicyTable, PolicyTarget } from '../http/policy.ts';

/** A property definition: a JSON-schema fragment with a title (Glance's metadef property). */
export type PropertyDefinition = Record<string, unknown> & { title: string; type: string };

export interface MetadefObject {
  name: string;
  description?: string;
  required?: string[];
  properties?: Record<string, PropertyDefinition>;
  created_at: string;
  updated_at: string;
}

export interface MetadefTag {
  name: string;
  created_at: string;
  updated_at: string;
}

export interface ResourceTypeAssociation {
  name: string;
  prefix?: string;
  properties_target?: string;
  created_at: string;
  updated_at: string;
}

/** The stored document of a namespace. */
interface NamespaceDocument {
  display_name?: string;
  description?: string;
  properties: Record<string, PropertyDefinition & { created_at?: string; updated_at?: string }>;
  objects: MetadefObject[];
  tags: MetadefTag[];
  resource_type_associations: ResourceTypeAssociation[];
}

interface NamespaceRow {
  namespace: string;
  owner: string | null;
  visibility: 'public' | 'private';
  protected: number;
  document: string;
  created_at: string;
  updated_at: string;
}

export interface Namespace extends NamespaceDocument {
  namespace: string;
  owner: string | null;
  visibility: 'public' | 'private';
  protected: boolean;
  created_at: string;
  updated_at: string;
}

/** The namespaces shipped with Pumice (etc/metadefs/*.json), loaded at start. */
export const shippedMetadefsDirectory = fileURLToPath(new URL('../../etc/metadefs/', import.meta.url));

export const metadefLimits = { namespacesPageDefault: 20, namespacesPageMax: 1000, nameLengthMax: 80, seedFileBytesMax: 1 << 20 };

const forbidden = (message: string) => new PumiceError('Forbidden', message);
const conflict = (message: string) => new PumiceError('Conflict', message);

/** Resource types Glance knows from the start, as its metadef_resource_types table is seeded. */
export const builtinResourceTypes = ['OS::Glance::Image', 'OS::Cinder::Volume', 'OS::Nova::Flavor', 'OS::Nova::Aggregate', 'OS::Nova::Server'];

export class MetadefService {
  constructor(
    private readonly db: Db,
    private readonly policy: PolicyTable,
    private readonly log: (message: string) => void = () => undefined,
  ) {}

  // ---- visibility and policy ----

  private isAdmin(auth: AuthContext): boolean {
    return this.policy.check('context_is_admin', auth, {});
  }

  private targetOf(ns: { owner: string | null; visibility: string }): PolicyTarget {
    return { project_id: ns.owner, owner: ns.owner, visibility: ns.visibility };
  }

  /** The namespace as `auth` may see it: public, the caller's project's, or any for admins; else 404. */
  get(auth: AuthContext, name: string, rule = 'get_metadef_namespace'): Namespace {
    const row = this.db.get<NamespaceRow>('SELECT * FROM metadef_namespaces WHERE namespace = ?', name);
    if (!row || !(row.visibility === 'public' || this.isAdmin(auth) || (row.owner !== null && row.owner === auth.projectId))) {
      throw errors.notFound('Metadata definition namespace', `'${name.slice(0, 80)}'`);
    }
    const ns = toNamespace(row);
    this.authorize(auth, rule, ns);
    return ns;
  }

  private authorize(auth: AuthContext, rule: string, ns: Namespace): void {
    if (!this.policy.check(rule, auth, this.targetOf(ns))) throw forbidden(`Policy doesn't allow ${rule} to be performed on namespace ${ns.namespace}.`);
  }

  /** A change to a namespace: visible, allowed by `rule`, and not protected (Glance refuses deleting protected ones). */
  private change(auth: AuthContext, name: string, rule: string, apply: (ns: Namespace) => void): Namespace {
    return this.db.transaction(() => {
      const ns = this.get(auth, name, rule);
      apply(ns);
      ns.updated_at = new Date().toISOString();
      this.save(ns);
      return ns;
    });
  }

  private save(ns: Namespace): void {
    const document: NamespaceDocument = {
      display_name: ns.display_name, description: ns.description, properties: ns.properties, objects: ns.objects, tags: ns.tags,
      resource_type_associations: ns.resource_type_associations,
    };
    this.db.run(
      'UPDATE metadef_namespaces SET visibility = ?, protected = ?, document = ?, updated_at = ? WHERE namespace = ?',
      ns.visibility, ns.protected ? 1 : 0, JSON.stringify(document), ns.updated_at, ns.namespace,
    );
    for (const a of ns.resource_type_associations) this.ensureResourceType(a.name);
  }

  private ensureResourceType(name: string): void {
    const now = new Date().toISOString();
    this.db.run('INSERT OR IGNORE INTO metadef_resource_types (name, created_at, updated_at) VALUES (?, ?, ?)', name, now, now);
  }

  // ---- namespaces ----

  /** Namespaces visible to `auth`, sorted; `resourceTypes` keeps those associated with any of them. */
  list(auth: AuthContext, query: { limit: number; marker: string | null; sortKey: 'namespace' | 'created_at' | 'updated_at'; sortDir: 'asc' | 'desc'; visibility?: string; resourceTypes?: string[] }): { namespaces: Namespace[]; nextMarker: string | null } {
    this.policy.enforce('get_metadef_namespaces', auth, { project_id: auth.projectId, visibility: 'public' });
    const rows = this.db.all<NamespaceRow>('SELECT * FROM metadef_namespaces');
    let visible = rows.map(toNamespace).filter((ns) => ns.visibility === 'public' || this.isAdmin(auth) || (ns.owner !== null && ns.owner === auth.projectId));
    if (query.visibility) visible = visible.filter((ns) => ns.visibility === query.visibility);
    if (query.resourceTypes?.length) visible = visible.filter((ns) => ns.resource_type_associations.some((a) => query.resourceTypes!.includes(a.name)));
    const sign = query.sortDir === 'asc' ? 1 : -1;
    visible.sort((a, b) => sign * (a[query.sortKey] < b[query.sortKey] ? -1 : a[query.sortKey] > b[query.sortKey] ? 1 : a.namespace < b.namespace ? -1 : 1));
    let start = 0;
    if (query.marker !== null) {
      const at = visible.findIndex((ns) => ns.namespace === query.marker);
      if (at < 0) throw errors.badRequest(`Invalid marker: namespace '${query.marker.slice(0, 80)}' could not be found.`);
      start = at + 1;
    }
    const page = visible.slice(start, start + query.limit);
    const nextMarker = page.length === query.limit && start + query.limit < visible.length ? page[page.length - 1]!.namespace : null;
    return { namespaces: page, nextMarker };
  }

  /** Creates a namespace (with its properties, objects, tags and associations, as Glance accepts them in one body). */
  create(auth: AuthContext, body: {
    namespace: string; display_name?: string; description?: string; visibility?: 'public' | 'private'; protected?: boolean; owner?: string;
    properties?: Record<string, PropertyDefinition>; objects?: Omit<MetadefObject, 'created_at' | 'updated_at'>[]; tags?: { name: string }[];
    resource_type_associations?: { name: string; prefix?: string; properties_target?: string }[];
  }): Namespace {
    const owner = body.owner ?? auth.projectId;
    this.policy.enforce('add_metadef_namespace', auth, { project_id: owner, owner, visibility: body.visibility ?? 'private' });
    const now = new Date().toISOString();
    const ns: Namespace = {
      namespace: body.namespace, owner: owner ?? null, visibility: body.visibility ?? 'private', protected: body.protected ?? false,
      display_name: body.display_name, description: body.description,
      properties: Object.fromEntries(Object.entries(body.properties ?? {}).map(([k, v]) => [k, v])),
      objects: (body.objects ?? []).map((o) => ({ ...o, created_at: now, updated_at: now })),
      tags: uniqueTags((body.tags ?? []).map((t) => t.name)).map((name) => ({ name, created_at: now, updated_at: now })),
      resource_type_associations: (body.resource_type_associations ?? []).map((a) => ({ ...a, created_at: now, updated_at: now })),
      created_at: now, updated_at: now,
    };
    this.insert(ns);
    return ns;
  }

  private insert(ns: Namespace): void {
    try {
      this.db.run(
        'INSERT INTO metadef_namespaces (namespace, owner, visibility, protected, document, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
        ns.namespace, ns.owner, ns.visibility, ns.protected ? 1 : 0, '{}', ns.created_at, ns.updated_at,
      );
    } catch (error) {
      if ((error as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw conflict(`A metadata definition namespace with name ${ns.namespace} already exists.`);
      throw error;
    }
    this.save(ns);
  }

  /** PUT: replaces the namespace's own attributes (a rename too); its contents stay. */
  update(auth: AuthContext, name: string, body: { namespace: string; display_name?: string; description?: string; visibility?: 'public' | 'private'; protected?: boolean }): Namespace {
    return this.db.transaction(() => {
      const ns = this.get(auth, name, 'modify_metadef_namespace');
      if (body.namespace !== name) {
        if (this.db.get('SELECT 1 FROM metadef_namespaces WHERE namespace = ?', body.namespace)) throw conflict(`A metadata definition namespace with name ${body.namespace} already exists.`);
        this.db.run('UPDATE metadef_namespaces SET namespace = ? WHERE namespace = ?', body.namespace, name);
        ns.namespace = body.namespace;
      }
      ns.display_name = body.display_name;
      ns.description = body.description;
      if (body.visibility) ns.visibility = body.visibility;
      if (body.protected !== undefined) ns.protected = body.protected;
      ns.updated_at = new Date().toISOString();
      this.save(ns);
      return ns;
    });
  }

  delete(auth: AuthContext, name: string): void {
    const ns = this.get(auth, name, 'delete_metadef_namespace');
    if (ns.protected) throw forbidden(`Namespace ${name} is protected and cannot be deleted: set "protected": false first.`);
    this.db.run('DELETE FROM metadef_namespaces WHERE namespace = ?', name);
  }

  /** Removes every object, property or tag of the namespace (Glance's DELETE on the collection). */
  clear(auth: AuthContext, name: string, kind: 'objects' | 'properties' | 'tags'): void {
    this.change(auth, name, 'delete_metadef_namespace', (ns) => {
      if (ns.protected) throw forbidden(`Namespace ${name} is protected: its ${kind} cannot be deleted; set "protected": false first.`);
      if (kind === 'properties') ns.properties = {};
      else ns[kind] = [];
    });
  }

  // ---- objects ----

  getObject(auth: AuthContext, name: string, objectName: string): MetadefObject {
    const object = this.get(auth, name, 'get_metadef_object').objects.find((o) => o.name === objectName);
    if (!object) throw errors.notFound('Metadata definition object', `'${objectName.slice(0, 80)}' in namespace ${name}`);
    return object;
  }

  createObject(auth: AuthContext, name: string, body: Omit<MetadefObject, 'created_at' | 'updated_at'>): MetadefObject {
    const now = new Date().toISOString();
    const object: MetadefObject = { ...body, created_at: now, updated_at: now };
    this.change(auth, name, 'add_metadef_object', (ns) => {
      if (ns.objects.some((o) => o.name === body.name)) throw conflict(`A metadata definition object with name ${body.name} already exists in namespace ${name}.`);
      ns.objects.push(object);
    });
    return object;
  }

  updateObject(auth: AuthContext, name: string, objectName: string, body: Omit<MetadefObject, 'created_at' | 'updated_at'>): MetadefObject {
    let updated: MetadefObject | undefined;
    this.change(auth, name, 'modify_metadef_object', (ns) => {
      const at = ns.objects.findIndex((o) => o.name === objectName);
      if (at < 0) throw errors.notFound('Metadata definition object', `'${objectName.slice(0, 80)}' in namespace ${name}`);
      if (body.name !== objectName && ns.objects.some((o) => o.name === body.name)) throw conflict(`A metadata definition object with name ${body.name} already exists in namespace ${name}.`);
      updated = { ...body, created_at: ns.objects[at]!.created_at, updated_at: new Date().toISOString() };
      ns.objects[at] = updated;
    });
    return updated!;
  }

  deleteObject(auth: AuthContext, name: string, objectName: string): void {
    this.change(auth, name, 'delete_metadef_object', (ns) => {
      const before = ns.objects.length;
      ns.objects = ns.objects.filter((o) => o.name !== objectName);
      if (ns.objects.length === before) throw errors.notFound('Metadata definition object', `'${objectName.slice(0, 80)}' in namespace ${name}`);
    });
  }

  // ---- properties ----

  getProperty(auth: AuthContext, name: string, propertyName: string, resourceType?: string): PropertyDefinition & { name: string } {
    const ns = this.get(auth, name, 'get_metadef_property');
    // With ?resource_type, the name may carry that association's prefix (hw_disk_bus for disk_bus).
    const prefix = resourceType ? ns.resource_type_associations.find((a) => a.name === resourceType)?.prefix ?? '' : '';
    const bare = prefix && propertyName.startsWith(prefix) ? propertyName.slice(prefix.length) : propertyName;
    const definition = Object.hasOwn(ns.properties, bare) ? ns.properties[bare] : undefined;
    if (!definition) throw errors.notFound('Metadata definition property', `'${propertyName.slice(0, 80)}' in namespace ${name}`);
    return { name: propertyName, ...stripTimes(definition) };
  }

  createProperty(auth: AuthContext, name: string, body: PropertyDefinition & { name: string }): PropertyDefinition & { name: string } {
    const { name: propertyName, ...definition } = body;
    this.change(auth, name, 'add_metadef_property', (ns) => {
      if (Object.hasOwn(ns.properties, propertyName)) throw conflict(`A metadata definition property with name ${propertyName} already exists in namespace ${name}.`);
      ns.properties[propertyName] = definition as PropertyDefinition;
    });
    return body;
  }

  updateProperty(auth: AuthContext, name: string, propertyName: string, body: PropertyDefinition & { name: string }): PropertyDefinition & { name: string } {
    const { name: newName, ...definition } = body;
    this.change(auth, name, 'modify_metadef_property', (ns) => {
      if (!Object.hasOwn(ns.properties, propertyName)) throw errors.notFound('Metadata definition property', `'${propertyName.slice(0, 80)}' in namespace ${name}`);
      if (newName !== propertyName && Object.hasOwn(ns.properties, newName)) throw conflict(`A metadata definition property with name ${newName} already exists in namespace ${name}.`);
      delete ns.properties[propertyName];
      ns.properties[newName] = definition as PropertyDefinition;
    });
    return body;
  }

  deleteProperty(auth: AuthContext, name: string, propertyName: string): void {
    this.change(auth, name, 'remove_metadef_property', (ns) => {
      if (!Object.hasOwn(ns.properties, propertyName)) throw errors.notFound('Metadata definition property', `'${propertyName.slice(0, 80)}' in namespace ${name}`);
      delete ns.properties[propertyName];
    });
  }

  // ---- tags ----

  getTag(auth: AuthContext, name: string, tagName: string): MetadefTag {
    const tag = this.get(auth, name, 'get_metadef_tag').tags.find((t) => t.name === tagName);
    if (!tag) throw errors.notFound('Metadata definition tag', `'${tagName.slice(0, 80)}' in namespace ${name}`);
    return tag;
  }

  /** Creates one tag; an existing name is a 409. */
  createTag(auth: AuthContext, name: string, tagName: string): MetadefTag {
    const now = new Date().toISOString();
    const tag = { name: tagName, created_at: now, updated_at: now };
    this.change(auth, name, 'add_metadef_tag', (ns) => {
      if (ns.tags.some((t) => t.name === tagName)) throw conflict(`A metadata tag with name ${tagName} already exists in namespace ${name}.`);
      ns.tags.push(tag);
    });
    return tag;
  }

  /** Creates several tags; `append` false (Glance's default) replaces the existing ones. */
  createTags(auth: AuthContext, name: string, tagNames: string[], append: boolean): MetadefTag[] {
    const now = new Date().toISOString();
    const created = uniqueTags(tagNames).map((t) => ({ name: t, created_at: now, updated_at: now }));
    this.change(auth, name, 'add_metadef_tags', (ns) => {
      if (append) {
        const clash = created.find((t) => ns.tags.some((e) => e.name === t.name));
        if (clash) throw conflict(`A metadata tag with name ${clash.name} already exists in namespace ${name}.`);
        ns.tags.push(...created);
      } else {
        ns.tags = created;
      }
    });
    return created;
  }

  renameTag(auth: AuthContext, name: string, tagName: string, newName: string): MetadefTag {
    let updated: MetadefTag | undefined;
    this.change(auth, name, 'modify_metadef_tag', (ns) => {
      const tag = ns.tags.find((t) => t.name === tagName);
      if (!tag) throw errors.notFound('Metadata definition tag', `'${tagName.slice(0, 80)}' in namespace ${name}`);
      if (newName !== tagName && ns.tags.some((t) => t.name === newName)) throw conflict(`A metadata tag with name ${newName} already exists in namespace ${name}.`);
      tag.name = newName;
      tag.updated_at = new Date().toISOString();
      updated = tag;
    });
    return updated!;
  }

  deleteTag(auth: AuthContext, name: string, tagName: string): void {
    this.change(auth, name, 'delete_metadef_tag', (ns) => {
      const before = ns.tags.length;
      ns.tags = ns.tags.filter((t) => t.name !== tagName);
      if (ns.tags.length === before) throw errors.notFound('Metadata definition tag', `'${tagName.slice(0, 80)}' in namespace ${name}`);
    });
  }

  // ---- resource types ----

  listResourceTypes(auth: AuthContext): { name: string; created_at: string; updated_at: string }[] {
    this.policy.enforce('list_metadef_resource_types', auth, { project_id: auth.projectId, visibility: 'public' });
    return this.db.all<{ name: string; created_at: string; updated_at: string }>('SELECT name, created_at, updated_at FROM metadef_resource_types ORDER BY name');
  }

  associations(auth: AuthContext, name: string): ResourceTypeAssociation[] {
    return this.get(auth, name, 'get_metadef_resource_type').resource_type_associations;
  }

  associate(auth: AuthContext, name: string, body: { name: string; prefix?: string; properties_target?: string }): ResourceTypeAssociation {
    const now = new Date().toISOString();
    const association: ResourceTypeAssociation = { ...body, created_at: now, updated_at: now };
    this.change(auth, name, 'add_metadef_resource_type_association', (ns) => {
      if (ns.resource_type_associations.some((a) => a.name === body.name)) throw conflict(`Namespace ${name} is already associated with resource type ${body.name}.`);
      ns.resource_type_associations.push(association);
    });
    return association;
  }

  dissociate(auth: AuthContext, name: string, resourceType: string): void {
    this.change(auth, name, 'remove_metadef_resource_type_association', (ns) => {
      const before = ns.resource_type_associations.length;
      ns.resource_type_associations = ns.resource_type_associations.filter((a) => a.name !== resourceType);
      if (ns.resource_type_associations.length === before) throw errors.notFound('Resource type association', `'${resourceType.slice(0, 80)}' of namespace ${name}`);
    });
  }

  // ---- seeding ----

  /**
   * Loads every `*.json` of `directory` whose namespace does not exist yet, as
   * `glance-manage db_load_metadefs` does; a file that does not parse is
   * logged and skipped (the catalog is an aid, not a reason to refuse to start).
   * `parse` checks a file's document against the create schema. Returns the names loaded.
   */
  seed(directory: string, parse: (document: unknown, file: string) => Parameters<MetadefService['create']>[1]): string[] {
    for (const name of builtinResourceTypes) this.ensureResourceType(name);
    let files: string[];
    try {
      files = readdirSync(directory).filter((f) => f.endsWith('.json')).sort();
    } catch {
      this.log(`metadefs: no seed directory ${directory}; the catalog starts empty`);
      return [];
    }
    const loaded: string[] = [];
    for (const file of files) {
      const path = join(directory, file);
      try {
        const text = readFileSync(path, 'utf8');
        if (text.length > metadefLimits.seedFileBytesMax) throw new Error(`larger than ${metadefLimits.seedFileBytesMax} bytes`);
        const body = parse(JSON.parse(text) as unknown, path);
        if (this.db.get('SELECT 1 FROM metadef_namespaces WHERE namespace = ?', body.namespace)) continue;
        const now = new Date().toISOString();
        this.insert({
          namespace: body.namespace, owner: body.owner ?? null, visibility: body.visibility ?? 'public', protected: body.protected ?? true,
          display_name: body.display_name, description: body.description, properties: body.properties ?? {},
          objects: (body.objects ?? []).map((o) => ({ ...o, created_at: now, updated_at: now })),
          tags: uniqueTags((body.tags ?? []).map((t) => t.name)).map((t) => ({ name: t, created_at: now, updated_at: now })),
          resource_type_associations: (body.resource_type_associations ?? []).map((a) => ({ ...a, created_at: now, updated_at: now })),
          created_at: now, updated_at: now,
        });
        loaded.push(body.namespace);
      } catch (error) {
        this.log(`metadefs: skipped seed file ${path}: ${(error as Error).message}`);
      }
    }
    return loaded;
  }
}

function toNamespace(row: NamespaceRow): Namespace {
  const document = JSON.parse(row.document) as Partial<NamespaceDocument>;
  return {
    namespace: row.namespace, owner: row.owner, visibility: row.visibility, protected: row.protected === 1,
    display_name: document.display_name, description: document.description,
    properties: document.properties ?? {}, objects: document.objects ?? [], tags: document.tags ?? [],
    resource_type_associations: document.resource_type_associations ?? [],
    created_at: row.created_at, updated_at: row.updated_at,
  };
}

function stripTimes<T extends Record<string, unknown>>(value: T): T {
  const { created_at: _c, updated_at: _u, ...rest } = value;
  return rest as T;
}

function uniqueTags(names: string[]): string[] {
  return [...new Set(names)];
}
