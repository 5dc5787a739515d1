/**
 * Images (Glance v2) domain: records, the status state machine, visibility
 * policy, members, tags and the upload/download data path over a store.
 *
 * States: queued → saving → active; saving → queued (the client's upload was
 * refused: size or format mismatch, aborted body) or killed (the store
 * failed); active ⇄ deactivated; any → deleted (the row is removed). Every
 * transition is a compare-and-set on the row, so two uploads of one image
 * cannot both run: the second gets a 409 naming the state.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Readable } from 'node:stream';
import type { Db } from '../db/db.ts';
import { resourceStates, type ResourceStates } from '../state/owner.ts';
import type { ImageMemberStatus, ImageStatus, ImageTaskStatus } from '../state/tables.ts';
import { errors, PumiceError } from '../errors.ts';
import type { AuthContext } from '../http/router.ts';
import { validate, type Schema } from '../http/validate.ts';
import type { PolicyTable, PolicyTarget } from '../http/policy.ts';
import { imagePolicy } from './policy.ts';
import { diskFormatOfQemu, qemuFormatOf } from '../disk-formats.ts';
import { convertedFormats, convertedToRawFields, convertToRaw } from './conversion.ts';
import { FileStore, SizeLimitExceeded, SizeMismatch, StoreWriteError, type PendingWrite } from './stores/file.ts';
import type { Task, TaskQueue } from '../tasks/queue.ts';
import { withoutDirectories } from '../redact.ts';
import { errorMessage, FatalError, TaskFencedError } from '../tasks/errors.ts';
import { checkImportUri, DownloadError, fetchImageData, webDownloadEnabled, type ImportFilter } from './web-download.ts';

/** What an image store offers (the file store's data interface); `location`/`assertDeletable` where the store has them. */
export type ImageStore = Pick<FileStore, 'directory' | 'write' | 'commit' | 'discard' | 'delete' | 'read' | 'sizeOf'> & {
  /** Its id everywhere in the API (a named store's NAME, else its type). */
  readonly id: string;
  /** What it is: code that depends on how data is kept (clones, local files) looks at this, never at the id. */
  readonly type: 'file' | 'rbd';
  readonly description: string;
  /** GET /v2/info/stores/detail's `properties` (pool, chunk_size, ...). */
  properties?(): Record<string, unknown>;
  /**
   * Consumers boot from the stored bytes (rbd: volumes clone the image), so
   * the data must be raw: other disk formats are converted on import, or refused.
   */
  readonly rawOnly?: boolean;
  /** The store URL of an image's data (direct_url), or null when unknown. */
  location?(imageId: string): string | null;
  /** Throws (409) when the data cannot be removed, before the image row is deleted. */
  assertDeletable?(imageId: string): Promise<void>;
  /**
   * Start-up sweep of data no usable image refers to: `isKnown(name)` says a
   * name is kept; `statusOf(id)` gives an image's status (null: no record).
   */
  removeLeftovers(isKnown: (name: string) => boolean, statusOf: (imageId: string) => ImageStatus | null): Promise<string[]>;
};

export interface ImageServiceOptions {
  /** Further enabled stores (`[glance_store] stores`, or named stores), where existing images may live. */
  otherStores?: ImageStore[];
  /** Named stores (enabled_backends NAME:TYPE): images show `stores` even when one store is enabled, as Glance. */
  namedStores?: boolean;
  /**
   * Store ids of images recorded before named stores ('file', 'rbd') → the named store over the
   * same directory or pool: `recover()` rewrites them, and queued tasks naming them find their store.
   */
  adoptedStoreIds?: Record<string, string>;
  showDirectUrl?: boolean;
  showMultipleLocations?: boolean;
  /**
   * Local directory for data on its way to a store that is not a directory
   * (rbd): glance-direct staged data, and non-raw uploads spooled for
   * qemu-img convert. Emptied at start except staged data of `uploading` images.
   */
  workDirectory: string;
  /** Convert non-raw uploads to raw for raw-only stores ([image_import_opts] image_import_plugins has image_conversion); else refuse them. */
  convertToRaw?: boolean;
  /** Glance's policy table (src/image/policy.ts) with the operator's overrides; default: Glance's defaults. */
  policy?: PolicyTable;
  /** Runs imports (queue `imageTaskQueue`); started by `startTasks()`. */
  tasks: TaskQueue;
  /** [import_filtering_opts]: where web-download may fetch from; null or no allowed_hosts: web-download is off. */
  importFilter?: ImportFilter | null;
}

/** An upload written into the store and checked, waiting to be published. */
interface StoredUpload {
  pending: PendingWrite;
  virtualSize: number;
  /** The disk_format it was uploaded in, when it was converted to raw. */
  convertedFrom: string | null;
}

const execFileAsync = promisify(execFile);

/** The task queue of image imports (run by the api role, where the staged data is). */
export const imageTaskQueue = 'image';
const importTaskKind = 'image.import';
const copyTaskKind = 'image.copy';

interface ImportPayload {
  /** The id shown in os_glance_import_task, and of the Glance task record (image_tasks). */
  taskId: string;
  method: string;
  /** web-download: where the data is fetched from. */
  uri?: string;
  /** The store the data goes into; absent in tasks queued before multi-store: the default store. */
  store?: string;
}

interface CopyPayload {
  taskId: string;
  /** The stores to copy into, in order. */
  stores: string[];
  /** Any store failing undoes the copies this task made (Glance's all_stores_must_succeed, default true). */
  allStoresMustSucceed: boolean;
}

/** What an import request asks for beyond its method (POST /v2/images/{id}/import). */
export interface ImportOptions {
  uri?: string;
  /** The `stores` of the body, else the X-Image-Meta-Store header's one store. */
  stores?: string[];
  allStores?: boolean;
  allStoresMustSucceed?: boolean;
  /** X-Request-Id of the request, kept in the task record. */
  requestId?: string | null;
}

/** Glance's task record (GET /v2/tasks/{id}): one per import. */
export interface ImageTaskRow {
  id: string;
  type: string;
  status: ImageTaskStatus;
  owner: string;
  user_id: string | null;
  image_id: string | null;
  input: string;
  result: string | null;
  message: string;
  request_id: string | null;
  created_at: string;
  updated_at: string;
  expires_at: string | null;
}

/** Glance's task_time_to_live: a finished task is shown for 48 hours. */
const taskTimeToLiveMs = 48 * 3600 * 1000;

/**
 * Glance's import bookkeeping properties: the running task, the stores still
 * to import to, and the stores that failed (comma-separated). `os_glance_*`
 * names are reserved: users cannot set them.
 */
export const importProperties = {
  task: 'os_glance_import_task',
  importingTo: 'os_glance_importing_to_stores',
  failed: 'os_glance_failed_import',
} as const;
/** After a successful import: no task, no store left, none failed. */
const importDoneProperties = { task: null, importingTo: '', failed: '' } as const;

// The transition table lives with the other kinds' in the state owner (src/state/tables.ts).
/** An image back to queued holds no data: its size and digests go with it. */
const noData = { size: null, checksum: null, os_hash_algo: null, os_hash_value: null } as const;
export type { ImageStatus } from '../state/tables.ts';

export const diskFormats = ['ami', 'ari', 'aki', 'vhd', 'vhdx', 'vmdk', 'raw', 'qcow2', 'vdi', 'iso', 'ploop'] as const;
export const containerFormats = ['ami', 'ari', 'aki', 'bare', 'ovf', 'ova', 'docker', 'compressed'] as const;
export const visibilities = ['public', 'private', 'shared', 'community'] as const;
export const memberStatuses = ['pending', 'accepted', 'rejected'] as const;
const isMemberStatus = (status: string): status is ImageMemberStatus => (memberStatuses as readonly string[]).includes(status);


/** VMDK kinds that are one self-contained file (Glance's vmdk_allowed_types default). */
const vmdkCreateTypes = ['streamOptimized', 'monolithicSparse'];

/** Attributes the server computes: a create or patch that names them gets Glance's 403. */
export const readOnlyAttributes = new Set(['id', 'status', 'checksum', 'os_hash_algo', 'os_hash_value', 'size', 'virtual_size', 'created_at', 'updated_at', 'file', 'self', 'schema', 'direct_url', 'locations', 'stores']);
/** Names Glance reserves: never properties. */
const reservedAttributes = new Set(['deleted', 'deleted_at', 'location', 'owner_specified', 'members']);

export const limits = {
  nameLengthMax: 255,
  propertyLengthMax: 255,
  /** Glance's image_property_quota and image_tag_quota / image_member_quota defaults. */
  propertiesMax: 128,
  tagsMax: 128,
  membersMax: 128,
  /** Glance's image_size_cap default: 1 TiB. */
  imageBytesMax: 1024 ** 4,
  pageDefault: 25,
  pageMax: 1000,
  qemuImgTimeoutMs: 30_000,
};

export interface ImageRow {
  id: string;
  name: string | null;
  owner: string;
  status: ImageStatus;
  visibility: (typeof visibilities)[number];
  protected: number;
  os_hidden: number;
  disk_format: string | null;
  container_format: string | null;
  min_disk: number;
  min_ram: number;
  size: number | null;
  virtual_size: number | null;
  checksum: string | null;
  os_hash_algo: string | null;
  os_hash_value: string | null;
  store: string | null;
  tags: string;
  properties: string;
  created_at: string;
  updated_at: string;
}

export interface MemberRow {
  image_id: string;
  member_id: string;
  status: (typeof memberStatuses)[number];
  created_at: string;
  updated_at: string;
}

export interface PatchOp {
  op: 'add' | 'replace' | 'remove';
  path: string;
  value?: unknown;
}

/** Glance prints timestamps to the second with a Z. */
export function glanceTime(iso: string): string {
  return iso.replace(/\.\d+Z$/, 'Z');
}

const forbidden = (message: string) => new PumiceError('Forbidden', message);
const conflict = (message: string) => new PumiceError('Conflict', message);

const tagSchema: Schema = { type: 'string', minLength: 1, maxLength: 255 };
/** Core attributes and their types; anything else is a string property. */
const coreSchemas: Record<string, Schema> = {
  name: { type: 'string', maxLength: limits.nameLengthMax, nullable: true },
  visibility: { type: 'string', enum: visibilities },
  protected: { type: 'boolean' },
  os_hidden: { type: 'boolean' },
  disk_format: { type: 'string', enum: diskFormats, nullable: true },
  container_format: { type: 'string', enum: containerFormats, nullable: true },
  min_disk: { type: 'integer', min: 0, max: 2 ** 31 - 1 },
  min_ram: { type: 'integer', min: 0, max: 2 ** 31 - 1 },
  tags: { type: 'array', items: tagSchema, maxItems: limits.tagsMax },
  owner: { type: 'string', maxLength: 255, nullable: true },
};
const propertyValueSchema: Schema = { type: 'string', maxLength: limits.propertyLengthMax };

export interface ListQuery {
  filters: Record<string, string>;
  memberStatus: string;
  limit: number;
  marker: string | null;
  sortKey: string;
  sortDir: 'asc' | 'desc';
}

const sortColumns: Record<string, string> = {
  name: "COALESCE(name, '')", status: 'status', container_format: "COALESCE(container_format, '')", disk_format: "COALESCE(disk_format, '')",
  size: 'COALESCE(size, -1)', id: 'id', created_at: 'created_at', updated_at: 'updated_at', visibility: 'visibility', owner: 'owner',
  min_disk: 'min_disk', min_ram: 'min_ram',
};
export const sortKeys = Object.keys(sortColumns);

export class ImageService {
  /** Local scratch space (spooled uploads, conversions) and, for non-file stores, the staging area. */
  private readonly work: FileStore;
  /** Where glance-direct keeps staged data: the file store itself (publishing is a rename), else the work directory. */
  private readonly staging: FileStore;
  /** Images whose data this process is writing into the store now: a sweep running meanwhile leaves them alone. */
  private readonly writing = new Set<string>();
  readonly policy: PolicyTable;
  /** The one writer of images.status (compare-and-set on the transition table). */
  private readonly states: ResourceStates<ImageStatus>;
  /** The one writer of image_tasks.status (Glance task records) and image_members.status. */
  private readonly taskStates: ResourceStates<ImageTaskStatus>;
  private readonly memberStates: ResourceStates<ImageMemberStatus, readonly [imageId: string, memberId: string]>;

  constructor(
    private readonly db: Db,
    readonly store: ImageStore,
    private readonly log: (message: string) => void,
    private readonly options: ImageServiceOptions,
  ) {
    this.policy = options.policy ?? imagePolicy();
    const owners = resourceStates(db, { log });
    this.states = owners.images;
    this.taskStates = owners.imageTasks;
    this.memberStates = owners.imageMembers;
    this.work = new FileStore(options.workDirectory);
    this.staging = store instanceof FileStore ? store : this.work;
    options.tasks.register(importTaskKind, (task) => this.runImport(task), (task, reason) => {
      // Interrupted too often, or failed after the handler's own bookkeeping (a no-op then).
      const payload = task.payload as ImportPayload;
      if (this.recordImportFailure(task.resourceId, 'uploading', payload.store) !== null) this.log(`images: import of ${task.resourceId} given up: ${reason}`);
      this.finishTaskRecord(payload.taskId, reason);
    });
    options.tasks.register(copyTaskKind, (task) => this.runCopy(task), (task, reason) => {
      const payload = task.payload as CopyPayload;
      // Given up (interrupted too often): the image keeps the locations it has; the rest failed.
      const left = payload.stores.filter((id) => !this.locationsOf(task.resourceId).includes(id));
      this.setImportProperties(task.resourceId, { task: null, importingTo: '', failed: left.join(',') });
      this.finishTaskRecord(payload.taskId, reason);
    });
  }

  /** The import methods offered (GET /v2/info/import, OpenStack-image-import-methods). */
  get importMethods(): string[] {
    const methods = webDownloadEnabled(this.options.importFilter ?? null) ? ['glance-direct', 'web-download'] : ['glance-direct'];
    // copy-image needs somewhere to copy to.
    return this.stores.length > 1 ? [...methods, 'copy-image'] : methods;
  }

  /** Every enabled store, the default first. */
  get stores(): ImageStore[] {
    return [this.store, ...(this.options.otherStores ?? [])];
  }

  /** Whether images show Glance's `stores` property: several stores, or named ones. */
  get multiStore(): boolean {
    return this.stores.length > 1 || this.options.namedStores === true;
  }

  /** The enabled store a recorded store id means now: itself, or the named store that adopted a single-store id. */
  private enabledStore(storeId: string | null | undefined): ImageStore | undefined {
    if (storeId === null || storeId === undefined) return undefined;
    const id = this.options.adoptedStoreIds?.[storeId] ?? storeId;
    return this.stores.find((s) => s.id === id);
  }

  /** The store holding an image's data (its `store` column), else the default store. */
  storeOf(image: ImageRow): ImageStore {
    return this.enabledStore(image.store) ?? this.store;
  }

  /** The enabled store `storeId` (X-Image-Meta-Store, an import's `stores`), the default store for null; else a 400 naming the enabled ones. */
  storeNamed(storeId: string | null | undefined): ImageStore {
    if (storeId === null || storeId === undefined) return this.store;
    const store = this.stores.find((s) => s.id === storeId);
    if (!store) throw errors.badRequest(`Unknown store '${storeId.slice(0, 40)}': the enabled stores are ${this.stores.map((s) => s.id).join(', ')} (GET /v2/info/stores).`);
    return store;
  }

  /** The stores holding an image's data (Glance's `stores` property), in the order they got it. */
  locationsOf(imageId: string): string[] {
    return this.db.all<{ store: string }>('SELECT store FROM image_locations WHERE image_id = ? ORDER BY created_at, store', imageId).map((r) => r.store);
  }

  /** Every enabled store holding the image's data: its locations, and its `store` column (rows from before locations). */
  private dataStoresOf(image: ImageRow): ImageStore[] {
    const held = new Set([...this.locationsOf(image.id), ...(image.store ? [image.store] : [])].map((id) => this.enabledStore(id)));
    return this.stores.filter((s) => held.has(s));
  }

  private addLocation(imageId: string, storeId: string): void {
    this.db.run('INSERT OR IGNORE INTO image_locations (image_id, store, created_at) VALUES (?, ?, ?)', imageId, storeId, new Date().toISOString());
  }

  /**
   * `direct_url` and `locations` as Glance shows them: only when configured
   * (show_image_direct_url, show_multiple_locations) and only to admins and the owner.
   */
  locationFields(auth: AuthContext, image: ImageRow): Record<string, unknown> {
    const { showDirectUrl, showMultipleLocations } = this.options;
    if (!showDirectUrl && !showMultipleLocations) return {};
    // `isAdmin` set by an in-process caller (compute's image lookup) is trusted as before; API callers go by the policy.
    if (!auth.isAdmin && !this.policy.check('get_image_location', auth, this.targetOf(auth, image))) return {};
    const url = this.storeLocation(image);
    const fields: Record<string, unknown> = {};
    if (showDirectUrl && url) fields['direct_url'] = url;
    if (showMultipleLocations) {
      // One entry per store that has a URL for its data (the file store has none); `stores` names them all.
      const active = image.status === 'active' || image.status === 'deactivated';
      fields['locations'] = !active ? [] : this.dataStoresOf(image).flatMap((store) => {
        const location = store.location?.(image.id) ?? null;
        // Glance's multi-store names the store of each location in its metadata; the single-store form (stores = file,rbd) none.
        return location ? [{ url: location, metadata: this.options.namedStores ? { store: store.id } : {} }] : [];
      });
    }
    return fields;
  }

  /**
   * The store URL of an active (or deactivated) image's data, e.g.
   * `rbd://FSID/images/ID/snap`, for in-process callers that clone from it
   * (compute, volumes); no policy check, whatever the show_image_direct_url setting.
   */
  storeLocation(image: ImageRow): string | null {
    const active = image.status === 'active' || image.status === 'deactivated';
    if (!active) return null;
    // The store downloads read first; else any other store holding the data that has a URL for it
    // (an image uploaded to a file store and copied to an rbd one is still cloned from rbd).
    const own = this.storeOf(image);
    for (const store of [own, ...this.dataStoresOf(image).filter((s) => s !== own)]) {
      const url = store.location?.(image.id) ?? null;
      if (url) return url;
    }
    return null;
  }

  /**
   * Images recorded in the single-store form carry the store ids 'file' and 'rbd'; with named
   * stores they belong to the named store over the same directory or pool (Glance updates its
   * locations' store the same way, by where the data is). Rewritten once, at start; ids that no
   * enabled store answers to are logged (their data is not reachable until the store is enabled).
   */
  private adoptStoreIds(): void {
    const adopted = Object.entries(this.options.adoptedStoreIds ?? {});
    this.db.transaction(() => {
      for (const [from, to] of adopted) {
        const images = this.db.run('UPDATE images SET store = ? WHERE store = ?', to, from).changes;
        this.db.run('UPDATE image_locations SET store = ? WHERE store = ?', to, from);
        if (images > 0) this.log(`images: ${images} image(s) recorded in store '${from}' now belong to the named store '${to}' (same ${this.stores.find((s) => s.id === to)?.type === 'rbd' ? 'pool' : 'directory'})`);
      }
    });
    const enabled = new Set(this.stores.map((s) => s.id));
    for (const { store, count } of this.db.all<{ store: string; count: number }>('SELECT store, COUNT(*) AS count FROM image_locations GROUP BY store')) {
      if (!enabled.has(store)) this.log(`images: ${count} image(s) have data in store '${store}', which is not enabled: enable it (enabled_backends ${store}:TYPE with its [${store}] section), or their data cannot be read there`);
    }
  }

  /**
   * Start-up recovery: an upload a crash interrupted leaves its image `saving`
   * with a temp file; the image goes back to `queued` (the client retries the
   * upload) and temp and orphan files are removed.
   */
  async recover(): Promise<void> {
    this.adoptStoreIds();
    const stuck = this.db.all<{ id: string }>("SELECT id FROM images WHERE status = 'saving'").filter(({ id }) => this.states.transition(id, 'saving', 'queued'));
    if (stuck.length > 0) this.log(`images: ${stuck.length} interrupted upload(s) back to queued`);
    // An import whose task is still queued or running runs again (startTasks) from its staged data;
    // one without a task (lost) goes back to `uploading`; staging without data is undone.
    const orphanImports = this.db.all<{ id: string }>(
      `SELECT id FROM images WHERE status = 'importing'
       AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.resource_id = images.id AND t.kind = ? AND t.state IN ('queued', 'running'))`,
      importTaskKind,
    ).filter(({ id }) => this.states.transition(id, 'importing', 'uploading'));
    if (orphanImports.length > 0) this.log(`images: ${orphanImports.length} import(s) without a task back to uploading`);
    for (const { id } of this.db.all<{ id: string }>("SELECT id FROM images WHERE status = 'uploading'")) {
      if ((await this.staging.stagedSizeOf(id)) === null) {
        this.states.transition(id, 'uploading', 'queued', noData);
      }
    }
    const staged = new Set(this.db.all<{ id: string }>("SELECT id FROM images WHERE status IN ('uploading', 'importing')").map((r) => this.staging.stagedName(r.id)));
    // File store: an import a crash cut after its rename has its data under the image's name already.
    const keptStatuses = this.staging === this.store ? "'active', 'deactivated', 'importing'" : "'active', 'deactivated'";
    const keep = new Set([
      ...this.db.all<{ id: string }>(`SELECT id FROM images WHERE status IN (${keptStatuses})`).map((r) => r.id),
      ...(this.staging === this.store ? staged : []),
    ]);
    const statusOf = (imageId: string) => this.db.get<{ status: ImageStatus }>('SELECT status FROM images WHERE id = ?', imageId)?.status ?? null;
    // Evaluated when each name is looked at: a store may sweep in the background (rbd) while uploads run.
    const isKnown = (name: string) => {
      if (keep.has(name) || this.writing.has(name)) return true;
      const status = statusOf(name);
      return status === 'active' || status === 'deactivated';
    };
    const removed = await this.store.removeLeftovers(isKnown, statusOf);
    if (removed.length > 0) this.log(`images: removed ${removed.length} leftover(s) from ${this.store.directory}: ${removed.slice(0, 10).join(', ')}`);
    // The other stores: temp files and data of images that are gone or never finished (a copy or
    // an upload a crash cut); data of active images is kept, as in the default store.
    const isKnownElsewhere = (name: string) => this.writing.has(name) || statusOf(name) === 'active' || statusOf(name) === 'deactivated';
    for (const store of this.options.otherStores ?? []) {
      const gone = await store.removeLeftovers(isKnownElsewhere, statusOf);
      if (gone.length > 0) this.log(`images: removed ${gone.length} leftover(s) from store '${store.id}': ${gone.slice(0, 10).join(', ')}`);
    }
    // Spooled uploads and conversions a crash interrupted; staged data of uploading images stays.
    const scratch = await this.work.removeLeftovers((name) => this.staging === this.work && staged.has(name));
    if (scratch.length > 0) this.log(`images: removed ${scratch.length} leftover file(s) from ${this.work.directory}`);
  }

  // ---- policy ----

  /** Glance's is_admin: the context_is_admin rule (role:admin by default). Admins see every image. */
  isAdmin(auth: AuthContext): boolean {
    return this.policy.check('context_is_admin', auth, {});
  }

  /** The policy target of an image as Glance builds it: owner, visibility, and member_id when the caller's project is a member. */
  targetOf(auth: AuthContext, image: ImageRow): PolicyTarget {
    return {
      project_id: image.owner,
      owner: image.owner,
      visibility: image.visibility,
      member_id: this.memberOf(image.id, auth.projectId) ? auth.projectId : null,
    };
  }

  /** Throws 403 naming the rule unless the policy allows `rule` on `image`. */
  private authorize(auth: AuthContext, rule: string, image: ImageRow, target: PolicyTarget = this.targetOf(auth, image)): void {
    if (this.policy.check(rule, auth, target)) return;
    const why = image.owner !== auth.projectId ? ` on image ${image.id} of another project` : ` on image ${image.id} (your role does not allow it)`;
    throw forbidden(`Policy doesn't allow ${rule} to be performed${why}.`);
  }

  private memberOf(imageId: string, projectId: string | null): MemberRow | undefined {
    if (!projectId) return undefined;
    return this.db.get<MemberRow>('SELECT * FROM image_members WHERE image_id = ? AND member_id = ?', imageId, projectId);
  }

  /** Whether `auth` may see the image at all (show, download): owner, admin, public, community, or any member of a shared image. */
  private canSee(auth: AuthContext, image: ImageRow): boolean {
    if (this.isAdmin(auth) || image.owner === auth.projectId) return true;
    if (image.visibility === 'public' || image.visibility === 'community') return true;
    if (image.visibility === 'shared') return this.memberOf(image.id, auth.projectId) !== undefined;
    return false;
  }

  /** The image as `auth` may see it; 404 (never 403) for images of others, so their ids do not leak. */
  get(auth: AuthContext, imageId: string): ImageRow {
    const image = this.db.get<ImageRow>('SELECT * FROM images WHERE id = ?', imageId);
    if (!image || !this.canSee(auth, image)) throw errors.notFound('Image', imageId);
    this.authorize(auth, 'get_image', image);
    return image;
  }

  /** The image for a change: visible (else 404) and allowed by the policy rule `rule` (else 403). */
  private getFor(auth: AuthContext, imageId: string, rule: string): ImageRow {
    const image = this.get(auth, imageId);
    this.authorize(auth, rule, image);
    return image;
  }

  // ---- state machine ----

  /** Compare-and-set of the status; a 409 names the state found when another request got there first. */
  private transition(imageId: string, from: ImageStatus, to: ImageStatus, set: Record<string, string | number | null> = {}): void {
    if (!this.states.allowed(from, to)) throw new Error(`invariant: image transition ${from} -> ${to} is not allowed`);
    if (!this.states.transition(imageId, from, to, set)) {
      const now = this.db.get<{ status: string }>('SELECT status FROM images WHERE id = ?', imageId);
      if (!now) throw errors.notFound('Image', imageId);
      throw conflict(`Image ${imageId} is '${now.status}', not '${from}': another request changed it; retry after it settles.`);
    }
  }

  // ---- create, update, delete ----

  /** Creates a `queued` image from a Glance create body (core attributes, tags, string properties). */
  create(auth: AuthContext, body: unknown): ImageRow {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw errors.invalidInput('Invalid input: the body must be a JSON object of image attributes.');
    const input = body as Record<string, unknown>;
    let id: string = randomUUID();
    if (Object.hasOwn(input, 'id')) {
      id = validate<string>({ type: 'uuid' }, input['id'], 'id').toLowerCase();
      if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id)) throw errors.invalidInput(`Invalid input for field/attribute id. Value: '${input['id']}'. Expected a UUID with dashes.`);
    }
    const core: Record<string, unknown> = {};
    const properties: Record<string, string> = {};
    for (const [key, value] of Object.entries(input)) {
      if (key === 'id') continue;
      this.checkAttributeName(key);
      const schema = Object.hasOwn(coreSchemas, key) ? coreSchemas[key]! : undefined;
      if (schema) core[key] = validate(schema, value, key);
      else properties[key] = validate<string>(propertyValueSchema, value, key);
    }
    if (Object.keys(properties).length > limits.propertiesMax) throw errors.quotaExceeded(`Maximum number of image properties (${limits.propertiesMax}) exceeded.`);
    const visibility = (core['visibility'] as string | undefined) ?? 'shared';
    const owner = typeof core['owner'] === 'string' ? core['owner'] : auth.projectId ?? '';
    const target: PolicyTarget = { project_id: auth.projectId, owner };
    if (!this.policy.check('add_image', auth, target)) {
      throw forbidden(`Policy doesn't allow add_image to be performed${owner !== auth.projectId ? ': only an administrator may create images owned by another project' : ' (your role does not allow it)'}.`);
    }
    if (visibility === 'public') this.policy.enforce('publicize_image', auth, target, 'publicize_image (making an image public)');
    if (visibility === 'community') this.policy.enforce('communitize_image', auth, target, 'communitize_image');
    const tags = [...new Set((core['tags'] as string[] | undefined) ?? [])];
    const now = new Date().toISOString();
    try {
      this.db.run(
        `INSERT INTO images (id, name, owner, status, visibility, protected, os_hidden, disk_format, container_format, min_disk, min_ram, tags, properties, created_at, updated_at)
         VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        id, (core['name'] as string | null | undefined) ?? null, owner, visibility, core['protected'] ? 1 : 0, core['os_hidden'] ? 1 : 0,
        (core['disk_format'] as string | null | undefined) ?? null, (core['container_format'] as string | null | undefined) ?? null,
        (core['min_disk'] as number | undefined) ?? 0, (core['min_ram'] as number | undefined) ?? 0, JSON.stringify(tags), JSON.stringify(properties), now, now,
      );
    } catch (error) {
      if ((error as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw conflict(`An image with identifier ${id} already exists.`);
      throw error;
    }
    return this.get(auth, id);
  }

  private checkAttributeName(key: string): void {
    if (readOnlyAttributes.has(key)) throw forbidden(`Attribute '${key}' is read-only.`);
    if (reservedAttributes.has(key) || key.startsWith('os_glance')) throw forbidden(`Attribute '${key.slice(0, 255)}' is reserved.`);
    if (key.length === 0 || key.length > 255) throw errors.invalidInput(`Invalid property name '${key.slice(0, 40)}': names must be 1 to 255 characters.`);
  }

  /**
   * Applies a Glance v2.1 JSON patch: `add`/`replace`/`remove` on top-level
   * paths (`/name`, `/tags`, `/hw_disk_bus`, …). All operations are checked
   * before anything is written; the patch applies whole or not at all.
   */
  update(auth: AuthContext, imageId: string, ops: unknown): ImageRow {
    const image = this.getFor(auth, imageId, 'modify_image');
    if (!Array.isArray(ops)) throw errors.badRequest('Invalid JSON patch: the body must be a JSON array of operations such as {"op": "replace", "path": "/name", "value": "x"}.');
    if (ops.length > 1000) throw errors.badRequest('Invalid JSON patch: more than 1000 operations.');
    const core: Record<string, unknown> = {
      name: image.name, visibility: image.visibility, protected: image.protected === 1, os_hidden: image.os_hidden === 1,
      disk_format: image.disk_format, container_format: image.container_format, min_disk: image.min_disk, min_ram: image.min_ram,
      tags: JSON.parse(image.tags) as string[], owner: image.owner,
    };
    const properties = JSON.parse(image.properties) as Record<string, string>;
    for (const [index, raw] of ops.entries()) {
      const op = this.parseOp(raw, index);
      const key = op.path.slice(1).replace(/~1/g, '/').replace(/~0/g, '~');
      this.checkAttributeName(key);
      if (Object.hasOwn(coreSchemas, key)) {
        if (op.op === 'remove') throw forbidden(`Attribute '${key}' is a core attribute and cannot be removed.`);
        let value = validate(coreSchemas[key]!, op.value, key);
        if (key === 'tags') value = [...new Set(value as string[])];
        if (key === 'owner' && value !== image.owner && !this.isAdmin(auth)) throw forbidden('Only an administrator may change the owner of an image.');
        if (key === 'visibility' && value === 'public' && image.visibility !== 'public') this.authorize(auth, 'publicize_image', image);
        if (key === 'visibility' && value === 'community' && image.visibility !== 'community') this.authorize(auth, 'communitize_image', image);
        if ((key === 'disk_format' || key === 'container_format') && image.status !== 'queued' && value !== core[key]) {
          throw forbidden(`Attribute '${key}' can be only replaced for a queued image.`);
        }
        core[key] = value;
      } else if (op.op === 'remove') {
        if (!Object.hasOwn(properties, key)) throw conflict(`Property ${key} does not exist.`);
        delete properties[key];
      } else {
        if (op.op === 'replace' && !Object.hasOwn(properties, key)) throw conflict(`Property ${key} does not exist.`);
        properties[key] = validate<string>(propertyValueSchema, op.value, key);
      }
    }
    if (Object.keys(properties).length > limits.propertiesMax) throw errors.quotaExceeded(`Maximum number of image properties (${limits.propertiesMax}) exceeded.`);
    this.db.run(
      `UPDATE images SET name = ?, visibility = ?, protected = ?, os_hidden = ?, disk_format = ?, container_format = ?, min_disk = ?, min_ram = ?,
       tags = ?, owner = ?, properties = ?, updated_at = ? WHERE id = ?`,
      core['name'] as string | null, core['visibility'] as string, core['protected'] ? 1 : 0, core['os_hidden'] ? 1 : 0,
      core['disk_format'] as string | null, core['container_format'] as string | null, core['min_disk'] as number, core['min_ram'] as number,
      JSON.stringify(core['tags']), core['owner'] as string, JSON.stringify(properties), new Date().toISOString(), imageId,
    );
    return this.get(auth, imageId);
  }

  private parseOp(raw: unknown, index: number): PatchOp {
    const where = `operation ${index}`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw errors.badRequest(`Invalid JSON patch: ${where} is not an object.`);
    const op = raw as Record<string, unknown>;
    for (const key of Object.keys(op)) {
      if (!['op', 'path', 'value'].includes(key)) throw errors.badRequest(`Invalid JSON patch: ${where} has unknown member '${key.slice(0, 40)}'.`);
    }
    if (op['op'] !== 'add' && op['op'] !== 'replace' && op['op'] !== 'remove') {
      throw errors.badRequest(`Invalid JSON patch: ${where} has op ${JSON.stringify(op['op'])?.slice(0, 40)}; expected 'add', 'replace' or 'remove'.`);
    }
    if (typeof op['path'] !== 'string' || !/^\/[^/]+$/.test(op['path'])) {
      throw errors.badRequest(`Invalid JSON patch: ${where} has path ${JSON.stringify(op['path'])?.slice(0, 60)}; expected one attribute such as '/name'.`);
    }
    if (op['op'] !== 'remove' && !Object.hasOwn(op, 'value')) throw errors.badRequest(`Invalid JSON patch: ${where} ('${op['op']}') needs a value.`);
    if (op['op'] === 'remove' && Object.hasOwn(op, 'value')) throw errors.badRequest(`Invalid JSON patch: ${where} ('remove') takes no value.`);
    return op as unknown as PatchOp;
  }

  /** Deletes the image and its data. Protected images: 403. Idempotent in effect: a second delete is a 404. */
  async delete(auth: AuthContext, imageId: string): Promise<void> {
    const image = this.getFor(auth, imageId, 'delete_image');
    if (image.protected) throw forbidden(`Image ${imageId} is protected and cannot be deleted: unset it first (openstack image set --unprotected).`);
    const dataStores = image.store ? this.dataStoresOf(image) : [];
    // A store may refuse first (rbd: the snapshot still has clones → 409 'image in use').
    for (const store of dataStores) await store.assertDeletable?.(imageId);
    const removed = this.db.run('DELETE FROM images WHERE id = ? AND status = ?', imageId, image.status);
    if (removed.changes === 0) throw conflict(`Image ${imageId} changed while it was being deleted; retry.`);
    // The row is gone first: a download that races finds no image rather than a missing file.
    for (const store of dataStores) await store.delete(imageId);
    if (!image.store) await this.store.delete(imageId).catch((error: Error) => this.log(`images: removing leftover data of ${imageId} failed: ${error.message}`));
    await this.staging.discardStaged(imageId);
  }

  /**
   * DELETE /v2/stores/{store_id}/{image_id} (Image API 2.10): removes the
   * image's data from one store, keeping it in the others; downloads then
   * read another store. The only store holding the data cannot be emptied
   * (403: delete the image instead), and not while an import or copy runs (409).
   */
  async deleteFromStore(auth: AuthContext, storeId: string, imageId: string): Promise<void> {
    const image = this.getFor(auth, imageId, 'delete_image_location');
    const store = this.stores.find((s) => s.id === storeId);
    if (!store) throw errors.notFound('Store', `'${storeId.slice(0, 40)}' (enabled: ${this.stores.map((s) => s.id).join(', ')})`);
    if (image.status !== 'active') throw conflict(`Image ${imageId} is '${image.status}': data can be removed from a store only while the image is active.`);
    const properties = JSON.parse(image.properties) as Record<string, string>;
    if (properties[importProperties.task]) throw conflict(`Image ${imageId} has an import or copy running (task ${properties[importProperties.task]}); retry when it has finished.`);
    const holders = this.dataStoresOf(image);
    if (!holders.includes(store)) throw errors.notFound('Image data', `of image ${imageId} in store '${storeId}' (it is in: ${holders.map((s) => s.id).join(', ') || 'no store'})`);
    if (holders.length === 1) throw forbidden(`Cannot delete image data from the only store containing it (${storeId}): delete the image instead.`);
    await store.assertDeletable?.(imageId);
    const remaining = holders.filter((s) => s !== store);
    this.db.transaction(() => {
      this.db.run('DELETE FROM image_locations WHERE image_id = ? AND store = ?', imageId, storeId);
      // Downloads read images.store: it moves to a store that still has the data.
      if (image.store === storeId || !image.store) this.db.run('UPDATE images SET store = ?, updated_at = ? WHERE id = ?', remaining[0]!.id, new Date().toISOString(), imageId);
      else this.db.run('UPDATE images SET updated_at = ? WHERE id = ?', new Date().toISOString(), imageId);
    });
    await store.delete(imageId);
  }

  addTag(auth: AuthContext, imageId: string, tag: string): void {
    const image = this.getFor(auth, imageId, 'modify_image');
    validate(tagSchema, tag, 'tag');
    const tags = JSON.parse(image.tags) as string[];
    if (tags.includes(tag)) return;
    if (tags.length >= limits.tagsMax) throw errors.quotaExceeded(`Maximum number of tags (${limits.tagsMax}) exceeded.`);
    tags.push(tag);
    this.db.run('UPDATE images SET tags = ?, updated_at = ? WHERE id = ?', JSON.stringify(tags), new Date().toISOString(), imageId);
  }

  removeTag(auth: AuthContext, imageId: string, tag: string): void {
    const image = this.getFor(auth, imageId, 'modify_image');
    const tags = JSON.parse(image.tags) as string[];
    if (!tags.includes(tag)) throw errors.notFound('Tag', `'${tag.slice(0, 255)}' of image ${imageId}`);
    this.db.run('UPDATE images SET tags = ?, updated_at = ? WHERE id = ?', JSON.stringify(tags.filter((t) => t !== tag)), new Date().toISOString(), imageId);
  }

  /**
   * Policy `deactivate` (Zed default: admin or a member of the owner's project).
   * Deactivating a deactivated image is a no-op; other states get Glance's 403.
   */
  deactivate(auth: AuthContext, imageId: string): void {
    const image = this.getFor(auth, imageId, 'deactivate');
    if (image.status === 'deactivated') return;
    if (image.status !== 'active') throw forbidden(`Not allowed to deactivate image in status '${image.status}': only active images can be deactivated.`);
    this.transition(imageId, 'active', 'deactivated');
  }

  /** Policy `reactivate`; reactivating an active image is a no-op; other states get Glance's 403. */
  reactivate(auth: AuthContext, imageId: string): void {
    const image = this.getFor(auth, imageId, 'reactivate');
    if (image.status === 'active') return;
    if (image.status !== 'deactivated') throw forbidden(`Not allowed to reactivate image in status '${image.status}': only deactivated images can be reactivated.`);
    this.transition(imageId, 'deactivated', 'active');
  }

  // ---- list ----

  /** One page of images visible to `auth`, with Glance's filters; `nextMarker` is set when the page is full. */
  list(auth: AuthContext, query: ListQuery): { images: ImageRow[]; nextMarker: string | null } {
    const where: string[] = [];
    const params: (string | number)[] = [];
    const visibility = query.filters['visibility'];
    const project = auth.projectId ?? '';
    const memberClause = (statusParam: string) => {
      if (statusParam === 'all') {
        params.push(project);
        return 'EXISTS (SELECT 1 FROM image_members m WHERE m.image_id = images.id AND m.member_id = ?)';
      }
      params.push(project, statusParam);
      return 'EXISTS (SELECT 1 FROM image_members m WHERE m.image_id = images.id AND m.member_id = ? AND m.status = ?)';
    };
    const isAdmin = this.isAdmin(auth);
    if (visibility === undefined || visibility === 'all') {
      if (!isAdmin) {
        params.push(project);
        const parts = ['owner = ?', "visibility = 'public'"];
        if (visibility === 'all') parts.push("visibility = 'community'");
        parts.push(`(visibility = 'shared' AND ${memberClause(query.memberStatus)})`);
        where.push(`(${parts.join(' OR ')})`);
      }
    } else {
      where.push('visibility = ?');
      params.push(visibility);
      if (!isAdmin && (visibility === 'private' || visibility === 'shared')) {
        params.push(project);
        where.push(visibility === 'private' ? 'owner = ?' : `(owner = ? OR ${memberClause(query.memberStatus)})`);
      }
    }
    for (const key of ['name', 'status', 'owner', 'disk_format', 'container_format', 'id'] as const) {
      const value = query.filters[key];
      if (value !== undefined) {
        where.push(`${key} = ?`);
        params.push(value);
      }
    }
    const hidden = query.filters['os_hidden'];
    if (hidden !== undefined) {
      where.push('os_hidden = ?');
      params.push(hidden === 'true' ? 1 : 0);
    } else {
      where.push('os_hidden = 0');
    }
    if (query.filters['protected'] !== undefined) {
      where.push('protected = ?');
      params.push(query.filters['protected'] === 'true' ? 1 : 0);
    }
    if (query.filters['size_min'] !== undefined) {
      where.push('size >= ?');
      params.push(Number(query.filters['size_min']));
    }
    if (query.filters['size_max'] !== undefined) {
      where.push('size <= ?');
      params.push(Number(query.filters['size_max']));
    }
    for (const tag of (query.filters['tag'] ?? '').split('\u0000').filter((t) => t.length > 0)) {
      where.push('EXISTS (SELECT 1 FROM json_each(images.tags) WHERE json_each.value = ?)');
      params.push(tag);
    }
    for (const [key, value] of Object.entries(query.filters)) {
      if (!key.startsWith('property:')) continue;
      where.push('json_extract(images.properties, ?) = ?');
      params.push(`$."${key.slice('property:'.length).replace(/"/g, '""')}"`, value);
    }
    const column = sortColumns[query.sortKey]!;
    const cmp = query.sortDir === 'asc' ? '>' : '<';
    if (query.marker !== null) {
      const marker = this.db.get<ImageRow>('SELECT * FROM images WHERE id = ?', query.marker);
      if (!marker || !this.canSee(auth, marker)) throw errors.badRequest(`Invalid marker: image ${query.marker} could not be found.`);
      const markerValue = this.db.get<{ v: string | number }>(`SELECT ${column} AS v FROM images WHERE id = ?`, query.marker)!.v;
      where.push(`(${column}, id) ${cmp} (?, ?)`);
      params.push(markerValue, marker.id);
    }
    const sql = `SELECT * FROM images ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
      ORDER BY ${column} ${query.sortDir}, id ${query.sortDir} LIMIT ?`;
    const images = this.db.all<ImageRow>(sql, ...params, query.limit);
    const nextMarker = images.length === query.limit && images.length > 0 ? images[images.length - 1]!.id : null;
    return { images, nextMarker };
  }

  // ---- data ----

  /**
   * Receives the image data: `queued` → `saving` (a concurrent upload gets a
   * 409), streams into the store, checks the real format against
   * `disk_format` with qemu-img, then publishes the file and goes `active`
   * with size, checksums and virtual size. A refused upload (size mismatch,
   * wrong format, aborted body) leaves the image `queued` with no data; a
   * store failure leaves it `killed`.
   */
  async upload(auth: AuthContext, imageId: string, source: Readable, contentLength: number | null, storeId: string | null = null): Promise<void> {
    const target = this.storeNamed(storeId);
    this.writing.add(imageId);
    try {
      await this.uploadData(auth, imageId, source, contentLength, target);
    } catch (error) {
      throw this.withoutPaths(error);
    } finally {
      this.writing.delete(imageId);
    }
  }

  /**
   * The error as a client may read it: the store, staging and work directories are cut from the
   * paths qemu-img and file-system messages name, leaving the file names (issue 12: error texts
   * show no internal paths). Store failures are logged with the full text where they happen.
   */
  private withoutPaths(error: unknown): unknown {
    if (!(error instanceof PumiceError)) return error;
    const message = withoutDirectories(error.message, [this.store.directory, this.work.directory, this.staging.directory, this.options.workDirectory], '<image store>');
    return message === error.message ? error : new PumiceError(error.code, message, error.headers);
  }

  private async uploadData(auth: AuthContext, imageId: string, source: Readable, contentLength: number | null, target: ImageStore): Promise<void> {
    const image = this.getFor(auth, imageId, 'upload_image');
    if (image.status !== 'queued') throw conflict(`Image status transition from '${image.status}' to 'saving' is not allowed: data can only be uploaded to a queued image.`);
    if (!image.disk_format || !image.container_format) {
      throw errors.badRequest('Properties disk_format, container_format must be set prior to saving data: set them with openstack image set --disk-format … --container-format ….');
    }
    if (this.mustConvert(image.disk_format, target)) {
      // qemu-img needs a seekable file: the body is spooled locally, converted, then written to the store.
      const spooled = await this.receive(imageId, source, contentLength, 'saving', { write: (id, body, o) => this.work.write(id, body, { ...o, hash: false }) }, 'local work directory');
      let stored: StoredUpload;
      try {
        stored = await this.storeFile(imageId, spooled.tempPath, image.disk_format, spooled.sizeBytes, target);
      } catch (error) {
        throw this.refuseStored(imageId, 'saving', error, target);
      } finally {
        await this.work.discard(spooled);
      }
      await this.publish(imageId, 'saving', stored, target);
      return;
    }
    // Raw (and formats kept as they are) streams straight into the store.
    const pending = await this.receive(imageId, source, contentLength, 'saving', target, `store '${target.id}'`);
    let virtualSize: number;
    try {
      virtualSize = await this.checkFormat(pending.tempPath, image.disk_format, pending.sizeBytes);
    } catch (error) {
      await target.discard(pending);
      this.revertUpload(imageId, 'saving', 'queued');
      throw error;
    }
    await this.publish(imageId, 'saving', { pending, virtualSize, convertedFrom: null }, target);
  }

  /**
   * Whether data declared `diskFormat` must be converted to raw for the
   * default store; when it must but conversion is off, a 400 saying why
   * (booting from RBD needs raw) and how (convert it, or turn conversion on),
   * before any byte is read.
   */
  private mustConvert(diskFormat: string, target: ImageStore = this.store): boolean {
    if (!target.rawOnly || !convertedFormats.has(diskFormat)) return false;
    if (this.options.convertToRaw !== false) return true;
    const qemuFormat = qemuFormatOf[diskFormat] ?? diskFormat;
    throw errors.badRequest(
      `Image store '${target.id}' keeps only raw images, because instances boot from clones of them and a ${diskFormat} image would not boot; ` +
      `image conversion is off ([image_import_opts] image_import_plugins does not list image_conversion). ` +
      `Convert it first (qemu-img convert -f ${qemuFormat} -O raw IN OUT) and upload it with --disk-format raw, or ask the operator to enable image_conversion. The image stays queued without data.`,
    );
  }

  /**
   * For os-volume_upload_image, just after it created image `imageId` with this service: when the
   * image is queued in a convertible disk_format (qcow2, vmdk, ...) and store `storeId` (null: the
   * default store) would store its data converted to raw (a raw-only store such as rbd,
   * image_conversion on), records the image as that conversion leaves it (disk_format raw,
   * container_format bare, original_disk_format) and returns true: the volume role then sends the
   * volume's raw bytes once, instead of converting them to qcow2 for this service to convert back.
   * Otherwise changes nothing and returns false: an image this service does not hold (the volume
   * API talks to another image service), one no longer queued, a store that keeps what it is sent,
   * an unknown store, or conversion off (the upload then meets the refusal it meets today).
   */
  recordRawVolumeUpload(imageId: string, storeId: string | null): boolean {
    const target = storeId === null ? this.store : this.stores.find((s) => s.id === storeId);
    if (!target?.rawOnly || this.options.convertToRaw === false) return false;
    return this.db.transaction(() => {
      const image = this.db.get<ImageRow>('SELECT * FROM images WHERE id = ?', imageId);
      if (!image || image.status !== 'queued' || !image.disk_format || !convertedFormats.has(image.disk_format)) return false;
      const converted = convertedToRawFields(image.disk_format);
      const properties = { ...(JSON.parse(image.properties ?? '{}') as Record<string, string>), ...converted.properties };
      return this.db.run(
        "UPDATE images SET disk_format = ?, container_format = ?, properties = ?, updated_at = ? WHERE id = ? AND status = 'queued' AND disk_format = ?",
        converted.disk_format, converted.container_format, JSON.stringify(properties), new Date().toISOString(), imageId, image.disk_format,
      ).changes === 1;
    });
  }

  /**
   * Checks a local file's format against `diskFormat`, converts it to raw when
   * the store needs raw, and writes it into the store (not yet published).
   * Store failures come out as StoreWriteError; refusals as PumiceError.
   */
  private async storeFile(imageId: string, path: string, diskFormat: string, sizeBytes: number, target: ImageStore): Promise<StoredUpload> {
    const virtualSize = await this.checkFormat(path, diskFormat, sizeBytes);
    if (!this.mustConvert(diskFormat, target)) {
      return { pending: await this.writeFromFile(imageId, path, sizeBytes, target), virtualSize, convertedFrom: null };
    }
    const rawPath = join(this.work.directory, `${imageId}.${randomBytes(6).toString('hex')}.raw.tmp`);
    try {
      await convertToRaw(path, qemuFormatOf[diskFormat]!, rawPath, diskFormat);
      const rawBytes = (await stat(rawPath)).size;
      if (rawBytes > limits.imageBytesMax) throw errors.bodyTooLarge(limits.imageBytesMax);
      this.log(`images: converted ${imageId} from ${diskFormat} (${sizeBytes} bytes) to raw (${rawBytes} bytes)`);
      return { pending: await this.writeFromFile(imageId, rawPath, rawBytes, target), virtualSize: rawBytes, convertedFrom: diskFormat };
    } finally {
      await rm(rawPath, { force: true });
    }
  }

  private async writeFromFile(imageId: string, path: string, sizeBytes: number, target: ImageStore): Promise<PendingWrite> {
    try {
      return await target.write(imageId, createReadStream(path, { highWaterMark: 4 << 20 }), { expectedBytes: sizeBytes, sizeBytesMax: limits.imageBytesMax });
    } catch (error) {
      if (error instanceof PumiceError || error instanceof StoreWriteError) throw error;
      throw new StoreWriteError(error as Error);
    }
  }

  /** After storeFile failed: the image back to `queued` (refused data) or `killed` (the store failed); returns the error to throw. */
  private refuseStored(imageId: string, from: 'saving' | 'importing', error: unknown, target: ImageStore): unknown {
    if (error instanceof StoreWriteError) {
      this.log(`images: store write of ${imageId} failed: ${error.message}`);
      this.revertUpload(imageId, from, from === 'saving' ? 'killed' : 'uploading');
      return errors.backendUnavailable(`Image store '${target.id}' failed to write image ${imageId}: ${error.message}. ${from === 'saving' ? "The image is 'killed'; delete it and upload again." : 'The staged data is kept; import it again.'}`);
    }
    this.revertUpload(imageId, from, 'queued');
    return error;
  }

  /**
   * Publishes stored data: commit in the store, then `from` → `active` with
   * the stored bytes' size and checksums; a converted image becomes
   * disk_format raw, container_format bare, with its original format as a property.
   */
  private async publish(imageId: string, from: 'saving' | 'importing', stored: StoredUpload, target: ImageStore, importDone?: typeof importDoneProperties): Promise<void> {
    const { pending } = stored;
    try {
      await target.commit(imageId, pending);
      const set: Record<string, string | number | null> = {
        size: pending.sizeBytes, virtual_size: stored.virtualSize, checksum: pending.md5Hex,
        os_hash_algo: 'sha512', os_hash_value: pending.sha512Hex, store: target.id,
      };
      if (stored.convertedFrom !== null) {
        const row = this.db.get<{ properties: string }>('SELECT properties FROM images WHERE id = ?', imageId);
        const properties = JSON.parse(row?.properties ?? '{}') as Record<string, string>;
        const converted = convertedToRawFields(stored.convertedFrom);
        Object.assign(set, { disk_format: converted.disk_format, container_format: converted.container_format, properties: JSON.stringify({ ...properties, ...converted.properties }) });
      }
      this.db.transaction(() => {
        this.transition(imageId, from, 'active', set);
        this.addLocation(imageId, target.id);
        if (importDone) this.setImportProperties(imageId, importDone);
      });
    } catch (error) {
      await target.discard(pending);
      // Deleted meanwhile: the row is gone, so the data must go too.
      if (!this.db.get('SELECT 1 FROM images WHERE id = ?', imageId)) await target.delete(imageId);
      else this.revertUpload(imageId, from, from === 'saving' ? 'killed' : 'uploading');
      throw error;
    }
  }

  /**
   * glance-direct staging: `queued` → `uploading`, the data kept as the
   * image's staged file with its size and checksums recorded; `import` then
   * checks and publishes it. A refused stage leaves the image `queued`.
   */
  async stage(auth: AuthContext, imageId: string, source: Readable, contentLength: number | null): Promise<void> {
    try {
      await this.stageData(auth, imageId, source, contentLength);
    } catch (error) {
      throw this.withoutPaths(error);
    }
  }

  private async stageData(auth: AuthContext, imageId: string, source: Readable, contentLength: number | null): Promise<void> {
    const image = this.getFor(auth, imageId, 'upload_image');
    if (image.status !== 'queued') throw conflict(`Image status transition from '${image.status}' to 'uploading' is not allowed: only a queued image can be staged.`);
    if (image.disk_format) this.mustConvert(image.disk_format);
    const pending = await this.receive(imageId, source, contentLength, 'uploading', this.staging, 'staging area');
    try {
      await this.staging.stage(imageId, pending);
    } catch (error) {
      await this.staging.discard(pending);
      this.revertUpload(imageId, 'uploading', 'queued');
      throw error;
    }
    const recorded = this.db.run(
      "UPDATE images SET size = ?, checksum = ?, os_hash_algo = 'sha512', os_hash_value = ?, updated_at = ? WHERE id = ? AND status = 'uploading'",
      pending.sizeBytes, pending.md5Hex, pending.sha512Hex, new Date().toISOString(), imageId,
    );
    if (recorded.changes === 0) await this.staging.discardStaged(imageId);
  }

  /**
   * glance-direct import of staged data, asynchronous as in Glance: the
   * request is checked (method, stores, status `uploading`, formats set),
   * the image goes `importing` with Glance's bookkeeping properties
   * (`os_glance_import_task`, `os_glance_importing_to_stores`, an empty
   * `os_glance_failed_import`) and an import task is queued, in one
   * transaction; the caller answers 202 at once and clients poll the image.
   * The task (`runImport`) checks the data as an upload is checked,
   * converts it when the store needs raw, and publishes it: `active`. A
   * refused import leaves the image `queued` without data; a store failure
   * leaves it `uploading` with the staged data kept for another import; both
   * record the store in `os_glance_failed_import`. Returns the task's id.
   *
   * web-download starts from a `queued` image: the task first fetches the
   * `uri` (checked against [import_filtering_opts] here and at every
   * redirect) into the staging area, then goes on as glance-direct. A
   * download that fails leaves the image `queued`.
   */
  importImage(auth: AuthContext, imageId: string, method: string, options: ImportOptions = {}): string {
    if (method === 'copy-image') return this.copyImage(auth, imageId, options);
    const image = this.getFor(auth, imageId, 'upload_image');
    const uri = options.uri;
    if (method === 'web-download') {
      checkImportUri(uri, this.options.importFilter ?? null);
      if (image.status !== 'queued') throw conflict(`Image ${imageId} is '${image.status}': web-download imports into a queued image (one without data); create a new image for it.`);
    } else if (method === 'glance-direct') {
      if (image.status !== 'uploading') throw conflict(`Image ${imageId} is '${image.status}': glance-direct import needs staged data (status 'uploading'); stage it first with PUT /v2/images/${imageId}/stage.`);
    } else {
      throw errors.badRequest(`Import method '${method.slice(0, 40)}' is not available; available: ${this.importMethods.join(', ')}.`);
    }
    const targets = options.allStores ? this.stores : (options.stores ?? []).map((id) => this.storeNamed(id));
    // One store per import keeps a failed import's outcome simple (the image back to uploading or queued).
    if (targets.length > 1) {
      throw errors.badRequest(`${method} imports into one store at a time here: import into '${targets[0]!.id}', then copy the image to the others with the copy-image method (openstack image import --method copy-image --store STORE).`);
    }
    const target = targets[0] ?? this.store;
    if (!image.disk_format || !image.container_format) {
      throw errors.badRequest('Properties disk_format, container_format must be set prior to importing data.');
    }
    this.mustConvert(image.disk_format, target);
    const taskId = randomUUID();
    this.db.transaction(() => {
      this.transition(imageId, image.status, 'importing');
      this.setImportProperties(imageId, { task: taskId, importingTo: target.id, failed: '' });
      const payload: ImportPayload = method === 'web-download' ? { taskId, method, uri: uri!, store: target.id } : { taskId, method, store: target.id };
      this.recordTask(auth, taskId, imageId, method, [target.id], options.requestId ?? null);
      this.options.tasks.enqueue(importTaskKind, imageId, imageTaskQueue, payload);
    });
    return taskId;
  }

  /**
   * POST /v2/tasks, Glance's older import API (policy add_task: admins by
   * default): `{"type": "import", "input": {"import_from": URL,
   * "import_from_format": FORMAT, "image_properties": {...}}}` creates an
   * image from `image_properties` (checked as POST /v2/images checks them)
   * and imports the data at `import_from` through the same task as
   * web-download (same allow-list, [import_filtering_opts]), into the default
   * store. The image, the task record (type `import`) and the queued work are
   * written in one transaction, so a refused request leaves nothing. The
   * record goes pending → processing → success (result: the image id) or
   * failure (message: why; the image stays queued without data).
   */
  createImportTask(auth: AuthContext, type: string, input: { import_from?: unknown; import_from_format?: unknown; image_properties?: unknown }, requestId: string | null): ImageTaskRow {
    if (type !== 'import') throw errors.badRequest(`Task type '${type.slice(0, 40)}' is not available: the only task type is 'import' (or use POST /v2/images/{id}/import).`);
    const uri = typeof input.import_from === 'string' ? input.import_from : undefined;
    if (uri === undefined) throw errors.badRequest("Invalid input: the import task needs input.import_from, the http(s) address of the image's data.");
    checkImportUri(uri, this.options.importFilter ?? null);
    const format = input.import_from_format;
    if (typeof format !== 'string' || !(diskFormats as readonly string[]).includes(format)) {
      throw errors.badRequest(`Invalid input: input.import_from_format must be one of ${diskFormats.join(', ')}.`);
    }
    const properties = input.image_properties;
    if (typeof properties !== 'object' || properties === null || Array.isArray(properties)) {
      throw errors.badRequest('Invalid input: input.image_properties must be an object of image attributes, with at least container_format (and disk_format).');
    }
    const imageBody = { ...(properties as Record<string, unknown>) };
    imageBody['disk_format'] ??= format;
    if (imageBody['disk_format'] !== format) {
      throw errors.badRequest(`Invalid input: import_from_format '${format}' differs from image_properties.disk_format '${String(imageBody['disk_format']).slice(0, 40)}'; a task does not convert here: give the same format.`);
    }
    if (imageBody['container_format'] === undefined) throw errors.badRequest('Invalid input: input.image_properties.container_format is required (for example "bare").');
    const target = this.store;
    this.mustConvert(format, target);
    const taskId = randomUUID();
    return this.db.transaction(() => {
      const image = this.create(auth, imageBody);
      this.transition(image.id, 'queued', 'importing');
      this.setImportProperties(image.id, { task: taskId, importingTo: target.id, failed: '' });
      this.recordTask(auth, taskId, image.id, 'web-download', [target.id], requestId, { type: 'import', input: { import_from: uri, import_from_format: format, image_properties: properties } });
      const payload: ImportPayload = { taskId, method: 'web-download', uri, store: target.id };
      this.options.tasks.enqueue(importTaskKind, image.id, imageTaskQueue, payload);
      return this.db.get<ImageTaskRow>('SELECT * FROM image_tasks WHERE id = ?', taskId)!;
    });
  }

  /**
   * copy-image (Glance's import method, policy `copy_image`: admins by
   * default): copies an active image's data from the store downloads read
   * into more stores, as a task; the image stays active meanwhile, its
   * `os_glance_importing_to_stores` listing the stores still to do. The
   * bytes written are checked against the image's checksums before a store
   * becomes a location. A store that fails is recorded in
   * `os_glance_failed_import` and in the task's message; with
   * `all_stores_must_succeed` (the default) the copies this task made are
   * removed again. Returns the task's id.
   */
  private copyImage(auth: AuthContext, imageId: string, options: ImportOptions): string {
    const image = this.getFor(auth, imageId, 'copy_image');
    if (image.status !== 'active') throw conflict(`Image ${imageId} is '${image.status}': copy-image copies the data of an active image.`);
    const properties = JSON.parse(image.properties) as Record<string, string>;
    if (properties[importProperties.task]) throw conflict(`Image ${imageId} has an import or copy running (task ${properties[importProperties.task]}); retry when it has finished.`);
    const holders = new Set(this.dataStoresOf(image).map((s) => s.id));
    let targets: ImageStore[];
    if (options.allStores) {
      if ((options.stores ?? []).length > 0) throw errors.badRequest('copy-image takes either "stores" or "all_stores": true, not both.');
      targets = this.stores.filter((s) => !holders.has(s.id));
      if (targets.length === 0) throw conflict(`Image ${imageId} is already in every enabled store (${[...holders].join(', ')}).`);
    } else {
      if ((options.stores ?? []).length === 0) throw errors.badRequest(`copy-image needs the stores to copy into: "stores": ["STORE", ...] or "all_stores": true (enabled: ${this.stores.map((s) => s.id).join(', ')}).`);
      targets = [...new Set(options.stores)].map((id) => this.storeNamed(id));
      const present = targets.filter((s) => holders.has(s.id));
      if (present.length > 0) throw conflict(`Image ${imageId} is already in store${present.length > 1 ? 's' : ''} ${present.map((s) => `'${s.id}'`).join(', ')}: name only stores that do not have it.`);
    }
    for (const target of targets) {
      if (target.rawOnly && image.disk_format !== 'raw') {
        throw errors.badRequest(`Image store '${target.id}' keeps only raw images (instances boot from clones of them) and image ${imageId} is ${image.disk_format}: convert it and upload it as raw, or copy it to another store.`);
      }
    }
    const taskId = randomUUID();
    this.db.transaction(() => {
      // Checked again inside the write transaction (one writer at a time): a copy started meanwhile wins, this one gets a 409.
      const current = this.db.get<{ status: string; properties: string }>('SELECT status, properties FROM images WHERE id = ?', imageId);
      if (!current || current.status !== 'active' || (JSON.parse(current.properties) as Record<string, string>)[importProperties.task]) {
        throw conflict(`Image ${imageId} changed meanwhile (another copy or a status change); retry.`);
      }
      this.setImportProperties(imageId, { task: taskId, importingTo: targets.map((s) => s.id).join(','), failed: '' });
      this.recordTask(auth, taskId, imageId, 'copy-image', targets.map((s) => s.id), options.requestId ?? null);
      const payload: CopyPayload = { taskId, stores: targets.map((s) => s.id), allStoresMustSucceed: options.allStoresMustSucceed ?? true };
      this.options.tasks.enqueue(copyTaskKind, imageId, imageTaskQueue, payload);
    });
    return taskId;
  }

  /** A task given up by the engine: its record fails with the reason, unless the handler already finished it. */
  private finishTaskRecord(taskId: string, reason: string): void {
    this.setTaskStatus(taskId, ['pending', 'processing'], 'failure', reason);
  }

  /** Starts the runner of import tasks; call after `recover()`, so an import a crash interrupted runs again on its staged data. */
  startTasks(): void {
    this.options.tasks.start([imageTaskQueue]);
  }

  /** The import task: idempotent (an image no longer `importing` was finished, failed or deleted meanwhile). */
  private async runImport(task: Task): Promise<void> {
    const image = this.db.get<ImageRow>('SELECT * FROM images WHERE id = ?', task.resourceId);
    const payload = task.payload as ImportPayload;
    if (!image || image.status !== 'importing') return;
    const target = payload.store === undefined ? this.store : this.enabledStore(payload.store);
    this.writing.add(image.id);
    try {
      this.setTaskStatus(payload.taskId, ['pending', 'processing'], 'processing');
      if (!target) throw new FatalError(`store '${payload.store}' is no longer enabled ([DEFAULT] enabled_backends, or [glance_store] stores)`);
      if (payload.method === 'web-download' && (await this.needsDownload(image.id))) {
        task.progress(`downloading from ${new URL(payload.uri!).host}`);
        await this.download(image.id, payload.uri!, task);
      }
      // Read again: the download recorded the size and checksums.
      const current = this.db.get<ImageRow>('SELECT * FROM images WHERE id = ?', task.resourceId);
      if (!current || current.status !== 'importing') return;
      task.progress(`importing into store '${target.id}'`);
      await this.importData(current, task, target);
      this.setTaskStatus(payload.taskId, ['processing'], 'success', '', { image_id: image.id });
    } catch (error) {
      if (error instanceof TaskFencedError) throw error;
      const storeId = target?.id ?? payload.store ?? this.store.id;
      // The store failed: the staged data is kept for another import. Anything else refused the data.
      const keepStaged = error instanceof StoreWriteError || (error instanceof PumiceError && error.code === 'BackendUnavailable');
      if (!keepStaged) await this.staging.discardStaged(image.id);
      const reason = error instanceof StoreWriteError ? `image store '${storeId}' failed to write: ${error.message}` : errorMessage(error);
      const left = this.recordImportFailure(image.id, keepStaged ? 'uploading' : 'queued', storeId);
      if (left !== null) {
        this.log(`images: import of ${image.id} into store '${storeId}' failed; the image is '${left}'${keepStaged ? ' (its staged data is kept: import it again)' : ''}: ${reason}`);
      }
      this.setTaskStatus(payload.taskId, ['pending', 'processing'], 'failure', reason);
      throw new FatalError(reason, { cause: error });
    } finally {
      this.writing.delete(image.id);
    }
  }

  /**
   * The copy-image task: copies into each store not yet holding the data;
   * idempotent (a store that already became a location is skipped, so a
   * re-run after a crash goes on where it stopped).
   */
  private async runCopy(task: Task): Promise<void> {
    const payload = task.payload as CopyPayload;
    const imageId = task.resourceId;
    this.setTaskStatus(payload.taskId, ['pending', 'processing'], 'processing');
    const copied: ImageStore[] = [];
    const failed: string[] = [];
    const reasons: string[] = [];
    this.writing.add(imageId);
    try {
      for (const storeId of payload.stores) {
        const image = this.db.get<ImageRow>('SELECT * FROM images WHERE id = ?', imageId);
        if (!image || image.status !== 'active') {
          reasons.push(`the image became '${image?.status ?? 'deleted'}' during the copy`);
          failed.push(...payload.stores.filter((id) => !copied.some((s) => s.id === id) && !failed.includes(id)));
          break;
        }
        if (this.locationsOf(imageId).includes(storeId)) continue;
        const target = this.stores.find((s) => s.id === storeId);
        try {
          if (!target) throw new Error(`store '${storeId}' is no longer enabled`);
          task.progress(`copying into store '${storeId}'`);
          await this.copyData(image, target);
          task.checkpoint('image.copy.stored');
          const added = this.db.transaction(() => {
            if (!this.db.get("SELECT 1 FROM images WHERE id = ? AND status = 'active'", imageId)) return false;
            this.addLocation(imageId, storeId);
            this.setImportProperties(imageId, { importingTo: payload.stores.filter((id) => !this.locationsOf(imageId).includes(id) && !failed.includes(id) && id !== storeId).join(',') });
            return true;
          });
          if (!added) {
            await target.delete(imageId);
            throw new Error('the image was deleted or deactivated during the copy');
          }
          copied.push(target);
        } catch (error) {
          if (error instanceof TaskFencedError) throw error;
          failed.push(storeId);
          reasons.push(`store '${storeId}': ${errorMessage(error)}`);
          this.log(`images: copy of ${imageId} into store '${storeId}' failed: ${errorMessage(error)}`);
          if (payload.allStoresMustSucceed) break;
        }
      }
      const failedAll = failed.length > 0 && payload.allStoresMustSucceed;
      if (failedAll) {
        // all_stores_must_succeed: the copies this run made go again, so the image is as it was.
        for (const store of copied) {
          this.db.run('DELETE FROM image_locations WHERE image_id = ? AND store = ?', imageId, store.id);
          await store.delete(imageId).catch((error: Error) => this.log(`images: removing the copy of ${imageId} from store '${store.id}' failed: ${error.message}`));
        }
        failed.push(...payload.stores.filter((id) => !failed.includes(id) && !copied.some((s) => s.id === id) && !this.locationsOf(imageId).includes(id)));
      }
      this.setImportProperties(imageId, { task: null, importingTo: '', failed: failed.join(',') });
      if (failed.length === 0) {
        this.setTaskStatus(payload.taskId, ['processing'], 'success', '', { image_id: imageId });
        return;
      }
      const message = `copy-image of image ${imageId} failed for ${failed.join(', ')}: ${reasons.join('; ')}. The image stays active in ${this.locationsOf(imageId).join(', ') || 'no store'}${failedAll && copied.length > 0 ? ` (the copies made into ${copied.map((s) => s.id).join(', ')} were removed: all_stores_must_succeed)` : ''}.`;
      this.setTaskStatus(payload.taskId, ['processing'], 'failure', message);
      throw new FatalError(message);
    } finally {
      this.writing.delete(imageId);
    }
  }

  /**
   * Streams the image's data from the store downloads read into `target`
   * and commits it only when the bytes written have the image's size, md5
   * and sha512: a damaged source never becomes a second location.
   */
  private async copyData(image: ImageRow, target: ImageStore): Promise<void> {
    const source = this.storeOf(image);
    const sizeBytes = image.size ?? 0;
    const stored = await source.sizeOf(image.id);
    if (stored !== sizeBytes) throw new Error(`the data in store '${source.id}' is ${stored ?? 'missing'}${stored === null ? '' : ' bytes'}, the image records ${sizeBytes} bytes`);
    let pending: PendingWrite;
    try {
      pending = await target.write(image.id, source.read(image.id), { expectedBytes: sizeBytes, sizeBytesMax: limits.imageBytesMax });
    } catch (error) {
      throw new Error(`writing into store '${target.id}' failed: ${errorMessage(error)}`, { cause: error });
    }
    if (pending.md5Hex !== image.checksum || (image.os_hash_value !== null && pending.sha512Hex !== image.os_hash_value)) {
      await target.discard(pending);
      throw new Error(`the data read from store '${source.id}' does not match the image's checksums (md5 ${pending.md5Hex}, recorded ${image.checksum}): the source copy is damaged; nothing was kept in '${target.id}'`);
    }
    try {
      await target.commit(image.id, pending);
    } catch (error) {
      await target.discard(pending);
      throw error;
    }
  }

  // ---- Glance task records (/v2/tasks) ----

  /** `asTask`: a POST /v2/tasks record, with that type and the request's input (else an api_image_import of the import request). */
  private recordTask(auth: AuthContext, taskId: string, imageId: string, method: string, stores: string[], requestId: string | null, asTask?: { type: string; input: unknown }): void {
    const now = new Date().toISOString();
    const input = asTask?.input ?? { image_id: imageId, import_req: { method: { name: method }, stores }, backend: stores };
    this.db.run(
      `INSERT INTO image_tasks (id, type, status, owner, user_id, image_id, input, result, message, request_id, created_at, updated_at, expires_at)
       VALUES (?, ?, 'pending', ?, ?, ?, ?, NULL, '', ?, ?, ?, NULL)`,
      taskId, asTask?.type ?? 'api_image_import', auth.projectId ?? '', auth.userId ?? null, imageId, JSON.stringify(input), requestId, now, now,
    );
  }

  /**
   * Moves a task record on if it is in one of `from` (compare-and-set through
   * the state owner: a finished record never moves again, so a re-run after a
   * crash cannot rewrite its outcome); a finished one expires after Glance's
   * task_time_to_live. Returns whether it moved.
   */
  private setTaskStatus(taskId: string, from: readonly ImageTaskStatus[], status: ImageTaskStatus, message = '', result: Record<string, unknown> | null = null): boolean {
    const finished = status === 'success' || status === 'failure';
    return this.taskStates.transition(taskId, from, status, {
      message: message.slice(0, 2000),
      result: result ? JSON.stringify(result) : null,
      expires_at: finished ? new Date(Date.now() + taskTimeToLiveMs).toISOString() : null,
    });
  }

  /** Policy get_tasks (admins by default, as Glance's tasks API): task records, newest first, with Glance's type and status filters. */
  listTasks(auth: AuthContext, filters: { type?: string; status?: string; limit: number; marker?: string; sortDir: 'asc' | 'desc' }): { tasks: ImageTaskRow[]; nextMarker: string | null } {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (!this.isAdmin(auth)) {
      where.push('owner = ?');
      params.push(auth.projectId ?? '');
    }
    if (filters.type !== undefined) {
      where.push('type = ?');
      params.push(filters.type);
    }
    if (filters.status !== undefined) {
      where.push('status = ?');
      params.push(filters.status);
    }
    if (filters.marker !== undefined) {
      const marker = this.db.get<ImageTaskRow>('SELECT * FROM image_tasks WHERE id = ?', filters.marker);
      if (!marker) throw errors.badRequest(`Invalid marker: task ${filters.marker.slice(0, 40)} could not be found.`);
      where.push(`(created_at, id) ${filters.sortDir === 'asc' ? '>' : '<'} (?, ?)`);
      params.push(marker.created_at, marker.id);
    }
    const tasks = this.db.all<ImageTaskRow>(
      `SELECT * FROM image_tasks ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at ${filters.sortDir}, id ${filters.sortDir} LIMIT ?`,
      ...params, filters.limit,
    );
    return { tasks, nextMarker: tasks.length === filters.limit && tasks.length > 0 ? tasks[tasks.length - 1]!.id : null };
  }

  /** Policy get_task; a task of another project is a 404 for non-admins. */
  getTask(auth: AuthContext, taskId: string): ImageTaskRow {
    const task = this.db.get<ImageTaskRow>('SELECT * FROM image_tasks WHERE id = ?', taskId);
    if (!task || (!this.isAdmin(auth) && task.owner !== auth.projectId)) throw errors.notFound('Task', taskId);
    return task;
  }

  /** GET /v2/images/{id}/tasks (2.12): the import tasks of an image the caller may see, newest first. */
  tasksOfImage(auth: AuthContext, imageId: string): ImageTaskRow[] {
    this.get(auth, imageId);
    return this.db.all<ImageTaskRow>('SELECT * FROM image_tasks WHERE image_id = ? ORDER BY created_at DESC, id DESC LIMIT 100', imageId);
  }

  /** A web-download import that a crash interrupted before its data was staged (or, on the file store, published) downloads again. */
  private async needsDownload(imageId: string): Promise<boolean> {
    if ((await this.staging.stagedSizeOf(imageId)) !== null) return false;
    return this.staging !== this.store || (await this.store.sizeOf(imageId)) === null;
  }

  /** Fetches web-download data into the staging area and records its size and checksums, as a stage does. */
  private async download(imageId: string, uri: string, task: Task): Promise<void> {
    const filter = this.options.importFilter;
    if (!filter) throw new FatalError("web-download is no longer enabled ([import_filtering_opts] allowed_hosts is empty)");
    let pending: PendingWrite;
    try {
      const url = checkImportUri(uri, filter);
      const { body, lengthBytes } = await fetchImageData(url, filter);
      if (lengthBytes !== null && lengthBytes > limits.imageBytesMax) {
        body.destroy();
        throw new DownloadError(`the image at ${url.host} is ${lengthBytes} bytes, over the image size limit of ${limits.imageBytesMax}`);
      }
      pending = await this.staging.write(imageId, body, { expectedBytes: lengthBytes, sizeBytesMax: limits.imageBytesMax });
    } catch (error) {
      if (error instanceof StoreWriteError) throw error;
      const reason = error instanceof SizeLimitExceeded ? `the image is over the size limit of ${error.limitBytes} bytes`
        : error instanceof SizeMismatch ? `the download ended after ${error.receivedBytes} of ${error.expectedBytes} bytes`
          : errorMessage(error);
      throw new DownloadError(`web-download of image ${imageId} failed: ${reason}. The image is queued again; fix the address or its server and import again.`);
    }
    task.checkpoint('image.import.downloaded');
    await this.staging.stage(imageId, pending);
    this.db.run(
      "UPDATE images SET size = ?, checksum = ?, os_hash_algo = 'sha512', os_hash_value = ?, updated_at = ? WHERE id = ? AND status = 'importing'",
      pending.sizeBytes, pending.md5Hex, pending.sha512Hex, new Date().toISOString(), imageId,
    );
  }

  private async importData(image: ImageRow, task: Task, target: ImageStore): Promise<void> {
    const imageId = image.id;
    const diskFormat = image.disk_format!;
    this.mustConvert(diskFormat, target);
    const stagedPath = this.staging.stagedPath(imageId);
    if (this.staging !== target) {
      // Another store (rbd, or the file store when staging is elsewhere): the staged file is checked, converted when needed and written into it.
      const stored = await this.storeFile(imageId, stagedPath, diskFormat, image.size ?? 0, target);
      task.checkpoint('image.import.stored');
      await this.publish(imageId, 'importing', stored, target, importDoneProperties);
      task.checkpoint('image.import.published');
      await this.staging.discardStaged(imageId);
      return;
    }
    // The file store: the staged file is checked and renamed into place. A run that a crash cut
    // after the rename finds the data already published under the image's name.
    const published = (await this.staging.stagedSizeOf(imageId)) === null && (await this.store.sizeOf(imageId)) !== null;
    const path = published ? (this.store as FileStore).pathOf(imageId) : stagedPath;
    const virtualSize = await this.checkFormat(path, diskFormat, image.size ?? 0);
    task.checkpoint('image.import.checked');
    if (!published) await this.staging.commitStaged(imageId);
    task.checkpoint('image.import.renamed');
    try {
      this.db.transaction(() => {
        this.transition(imageId, 'importing', 'active', { virtual_size: virtualSize, store: this.store.id });
        this.addLocation(imageId, this.store.id);
        this.setImportProperties(imageId, importDoneProperties);
      });
    } catch (error) {
      if (!this.db.get('SELECT 1 FROM images WHERE id = ?', imageId)) await this.store.delete(imageId);
      throw error;
    }
  }

  /**
   * A failed import: the image leaves `importing` (or stays `uploading` when
   * a publish already put it back) for `to`, and its store moves from
   * `os_glance_importing_to_stores` to `os_glance_failed_import`, as Glance
   * records it. Returns the status left, or null when the image is gone.
   */
  private recordImportFailure(imageId: string, to: 'uploading' | 'queued', storeId: string = this.store.id): ImageStatus | null {
    return this.db.transaction(() => {
      if (to === 'queued') {
        this.states.transition(imageId, ['importing', 'uploading'], 'queued', noData);
      } else {
        this.revertUpload(imageId, 'importing', 'uploading');
      }
      const row = this.db.get<{ status: ImageStatus }>('SELECT status FROM images WHERE id = ?', imageId);
      if (!row) return null;
      this.setImportProperties(imageId, { task: null, importingTo: '', failed: storeId });
      return row.status;
    });
  }

  /** Sets (a string) or removes (null) Glance's import bookkeeping properties of an image. */
  private setImportProperties(imageId: string, values: Partial<Record<keyof typeof importProperties, string | null>>): void {
    const row = this.db.get<{ properties: string }>('SELECT properties FROM images WHERE id = ?', imageId);
    if (!row) return;
    const properties = JSON.parse(row.properties) as Record<string, string>;
    for (const [key, value] of Object.entries(values) as [keyof typeof importProperties, string | null][]) {
      if (value === null) delete properties[importProperties[key]];
      else properties[importProperties[key]] = value;
    }
    this.db.run('UPDATE images SET properties = ? WHERE id = ?', JSON.stringify(properties), imageId);
  }

  /** Streams the request into a pending write in state `during`; on failure the image is back to queued (or killed when the store failed). */
  private async receive(
    imageId: string, source: Readable, contentLength: number | null, during: 'saving' | 'uploading',
    target: Pick<ImageStore, 'write'>, targetName: string,
  ): Promise<PendingWrite> {
    if (contentLength !== null && contentLength > limits.imageBytesMax) throw errors.bodyTooLarge(limits.imageBytesMax);
    this.transition(imageId, 'queued', during);
    try {
      return await target.write(imageId, source, { expectedBytes: contentLength, sizeBytesMax: limits.imageBytesMax });
    } catch (error) {
      if (error instanceof StoreWriteError) {
        this.log(`images: write of ${imageId} into the ${targetName} failed: ${error.message}`);
        this.revertUpload(imageId, during, 'killed');
        throw errors.backendUnavailable(`Image service: writing image ${imageId} into the ${targetName} failed: ${error.message}. The image is 'killed'; delete it and upload again.`);
      }
      // Everything else is the request's fault: the image stays queued for another try.
      this.revertUpload(imageId, during, 'queued');
      // The store's own answer (rbd: cluster unreachable → 503 naming the fix).
      if (error instanceof PumiceError) throw error;
      if (error instanceof SizeMismatch) {
        throw errors.badRequest(`Upload refused: received ${error.receivedBytes} bytes but Content-Length announced ${error.expectedBytes}; the image stays queued, upload it again.`);
      }
      if (error instanceof SizeLimitExceeded) throw errors.bodyTooLarge(error.limitBytes);
      throw errors.badRequest(`Upload refused: the request body could not be read (${(error as Error).message}); the image stays queued, upload it again.`);
    }
  }

  /** saving/uploading → queued or killed; a no-op when the image was deleted meanwhile. */
  private revertUpload(imageId: string, from: 'saving' | 'uploading' | 'importing', to: 'queued' | 'killed' | 'uploading'): void {
    if (from !== to) this.states.transition(imageId, from, to);
  }

  /**
   * Probes the file's real format with `qemu-img info` and refuses a
   * mismatch with `disk_format`, or an image with a backing file (it could
   * make a consumer read a host file). Returns the virtual size in bytes:
   * qemu-img's for non-raw formats (read again with `-f FORMAT`), the size for raw.
   */
  private async checkFormat(path: string, diskFormat: string, sizeBytes: number): Promise<number> {
    const expected = qemuFormatOf[diskFormat];
    if (!expected) return sizeBytes;
    const probe = await this.qemuImgInfo(path, null);
    const detected = String(probe['format'] ?? 'unknown');
    if (detected !== expected) {
      const detectedName = diskFormatOfQemu(detected);
      throw errors.badRequest(
        `Image data is in ${detectedName} format but disk_format is '${diskFormat}': upload it with --disk-format ${detectedName}, or convert it first (qemu-img convert -f ${detected} -O ${expected} IN OUT). The image stays queued without data.`,
      );
    }
    if (expected === 'raw') return sizeBytes;
    const info = await this.qemuImgInfo(path, expected);
    if (info['backing-filename'] !== undefined || info['full-backing-filename'] !== undefined) {
      throw errors.badRequest(`Image data refused: the ${diskFormat} image has a backing file ('${String(info['backing-filename']).slice(0, 100)}'); upload a standalone image (qemu-img convert -O ${expected} IN OUT).`);
    }
    const specific = (info['format-specific'] as { data?: Record<string, unknown> } | undefined)?.data ?? {};
    // An external data file would make qemu-img (convert, and consumers) read a host file, as a backing file would.
    if (specific['data-file'] !== undefined) {
      throw errors.badRequest(`Image data refused: the ${diskFormat} image names an external data file; upload a standalone image (qemu-img convert -O ${expected} IN OUT).`);
    }
    // As Glance's vmdk_allowed_types: other VMDK kinds are descriptors pointing at extent files.
    if (expected === 'vmdk' && !vmdkCreateTypes.includes(String(specific['create-type']))) {
      throw errors.badRequest(
        `Image data refused: VMDK create-type '${String(specific['create-type'] ?? 'unknown').slice(0, 40)}' is not allowed (allowed: ${vmdkCreateTypes.join(', ')}); convert it to one file first (qemu-img convert -O vmdk -o subformat=streamOptimized IN OUT).`,
      );
    }
    const virtualSize = info['virtual-size'];
    if (typeof virtualSize !== 'number') throw errors.badRequest(`Image data refused: qemu-img could not read the virtual size of this ${diskFormat} image.`);
    return virtualSize;
  }

  private async qemuImgInfo(path: string, format: string | null): Promise<Record<string, unknown>> {
    const args = ['info', '--output=json', ...(format ? ['-f', format] : []), path];
    try {
      const { stdout } = await execFileAsync('qemu-img', args, { timeout: limits.qemuImgTimeoutMs, maxBuffer: 1 << 20 });
      return JSON.parse(stdout) as Record<string, unknown>;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        throw errors.toolMissing('qemu-img is not installed on the image service host, so uploads cannot be checked: install it (apt-get install qemu-utils) and upload again.');
      }
      const stderr = (error as { stderr?: string }).stderr?.trim();
      throw errors.badRequest(`Image data refused: qemu-img info could not read it${format ? ` as ${format}` : ''}: ${(stderr || (error as Error).message).slice(0, 300)}`);
    }
  }

  /** Opens the image data for download; null when the image has no data (Glance answers 204). */
  openData(auth: AuthContext, imageId: string): ImageRow | null {
    const image = this.getFor(auth, imageId, 'download_image');
    if (image.status === 'deactivated' && !this.isAdmin(auth)) throw forbidden('The requested image has been deactivated. Image data download is forbidden.');
    if (image.status !== 'active' && image.status !== 'deactivated') return null;
    return image;
  }

  /**
   * The file holding an active image's data when its store is a file store of this process, for
   * readers in this process (the volume role filling a volume, already authorised by its service
   * token); null for any other store, an image without data, or a file whose size is not the
   * recorded one (the image API would answer 503 for it: let it say so).
   */
  async localDataFile(imageId: string): Promise<{ path: string; sizeBytes: number } | null> {
    const image = this.db.get<ImageRow>('SELECT * FROM images WHERE id = ?', imageId);
    if (!image || image.status !== 'active' || image.size === null) return null;
    const store = this.storeOf(image);
    if (!(store instanceof FileStore)) return null;
    if ((await store.sizeOf(imageId)) !== image.size) return null;
    return { path: store.pathOf(imageId), sizeBytes: image.size };
  }

  // ---- members ----

  private requireShared(image: ImageRow): void {
    if (image.visibility !== 'shared') throw forbidden(`Only shared images have members: image ${image.id} is '${image.visibility}' (openstack image set --shared).`);
  }

  addMember(auth: AuthContext, imageId: string, memberId: string): MemberRow {
    const image = this.getFor(auth, imageId, 'add_member');
    this.requireShared(image);
    const count = this.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM image_members WHERE image_id = ?', imageId)!.n;
    if (count >= limits.membersMax) throw errors.quotaExceeded(`Maximum number of image members (${limits.membersMax}) exceeded.`);
    const now = new Date().toISOString();
    try {
      this.db.run("INSERT INTO image_members (image_id, member_id, status, created_at, updated_at) VALUES (?, ?, 'pending', ?, ?)", imageId, memberId, now, now);
    } catch (error) {
      if ((error as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw conflict(`Member ${memberId} already has access to image ${imageId}.`);
      throw error;
    }
    return this.db.get<MemberRow>('SELECT * FROM image_members WHERE image_id = ? AND member_id = ?', imageId, memberId)!;
  }

  /** The owner (and admin) sees every member; a member sees only itself. */
  listMembers(auth: AuthContext, imageId: string): MemberRow[] {
    const image = this.getFor(auth, imageId, 'get_members');
    this.requireShared(image);
    if (this.isAdmin(auth) || image.owner === auth.projectId) return this.db.all<MemberRow>('SELECT * FROM image_members WHERE image_id = ? ORDER BY created_at, member_id', imageId);
    const own = this.memberOf(imageId, auth.projectId);
    return own ? [own] : [];
  }

  getMember(auth: AuthContext, imageId: string, memberId: string): MemberRow {
    this.getFor(auth, imageId, 'get_member');
    const member = this.listMembers(auth, imageId).find((m) => m.member_id === memberId);
    if (!member) throw errors.notFound('Member', `${memberId} of image ${imageId}`);
    return member;
  }

  /** Only the member itself accepts or rejects (admin too); the owner cannot decide for it. */
  updateMember(auth: AuthContext, imageId: string, memberId: string, status: string): MemberRow {
    if (!isMemberStatus(status)) throw errors.badRequest(`Invalid member status '${status}': use one of ${memberStatuses.join(', ')}.`);
    const member = this.getMember(auth, imageId, memberId);
    const image = this.get(auth, imageId);
    if (!this.policy.check('modify_member', auth, { ...this.targetOf(auth, image), member_id: memberId })) {
      throw forbidden(`Policy doesn't allow modify_member to be performed: only project ${memberId} can accept or reject its membership of image ${imageId}.`);
    }
    // Glance lets the member change its mind in any direction (last decision wins); a miss means the owner removed it meanwhile.
    if (!this.memberStates.transition([imageId, member.member_id], memberStatuses, status)) throw errors.notFound('Member', `${memberId} of image ${imageId}`);
    return this.getMember(auth, imageId, memberId);
  }

  removeMember(auth: AuthContext, imageId: string, memberId: string): void {
    this.getFor(auth, imageId, 'delete_member');
    const removed = this.db.run('DELETE FROM image_members WHERE image_id = ? AND member_id = ?', imageId, memberId);
    if (removed.changes === 0) throw errors.notFound('Member', `${memberId} of image ${imageId}`);
  }
}
