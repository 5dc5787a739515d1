/**
 * Volume attachments (Cinder's attachments API, 3.27+): the domain rules of
 * reserve → connect → complete → delete, as Cinder's volume API and manager
 * apply them (attachment_create, attachment_update, attachment_complete,
 * attachment_delete), sharing the `volume_attachments` rows with the legacy
 * os-attach/os-detach flow.
 *
 * Volume statuses produced, exactly as Nova + Cinder produce them:
 *   create (no connector)  available → reserved            attachment reserved
 *   update (connector)     reserved  → attaching           attachment attaching, connection info returned
 *   complete               attaching → in-use              attachment attached, attach_status attached
 *   os-begin_detaching     in-use    → detaching           (legacy action, Nova calls it before a detach)
 *   delete                 detaching → available | in-use  (in-use while other attachments remain)
 * A multiattach volume may be reserved again while in-use (Cinder moves it to
 * reserved, then attaching, then back to in-use).
 *
 * Connection info carries secrets (the NBD export name, TLS keys): it is
 * returned only to the caller of create/update, and stored and shown in
 * list/show with every field that is not on the public list removed.
 */
import { randomUUID } from 'node:crypto';
import { nowIso, type Db, type SqlValue } from '../db/db.ts';
import { errors, PumiceError } from '../errors.ts';
import type { AuthContext } from '../http/router.ts';
import { DriverError, type Connector, type VolumeBackend } from './drivers/driver.ts';
import type { VolumeManager } from './manager.ts';
import { volumeQos } from './qos.ts';
import type { AttachmentRow, VolumeRow } from './records.ts';
import type { VolumeService } from './volumes.ts';
import { resourceStates, type ResourceStateOwners, type StatusChanges } from '../state/owner.ts';
import type { VolumeStatus } from '../state/tables.ts';

export type AttachStatus = 'reserved' | 'attaching' | 'attached' | 'detaching' | 'detached' | 'error_attaching' | 'error_detaching';

/** A `volume_attachments` row as this module reads it (with the owning volume's project). */
export interface AttachmentRecord extends AttachmentRow {
  connection_info: string | null;
  created_at: string | null;
  updated_at: string | null;
  project_id: string;
}

/** Cinder's flat connection info: the driver's `data` keys with `driver_volume_type` and `attachment_id` beside them. */
export type FlatConnectionInfo = Record<string, unknown> & { driver_volume_type: string; attachment_id: string };

/**
 * Connection-info fields that are not secrets and may be stored and shown in
 * list/show. Anything else (export names, URIs that embed them, TLS-PSK keys,
 * keyrings, passwords) is given only to the caller that made the connection.
 */
const publicConnectionFields = new Set([
  'driver_volume_type', 'attachment_id', 'volume_id', 'access_mode', 'encrypted', 'discard', 'qos_specs', 'cacheable',
  // rbd: Nova's libvirt driver reads these; secret_uuid names a libvirt secret, it is not the key.
  'name', 'hosts', 'ports', 'cluster_name', 'auth_enabled', 'auth_username', 'secret_type', 'secret_uuid',
  // nbd: where the server listens; the export name is the credential and is left out.
  'host', 'port', 'tls',
]);

/** The connection info without its secrets (what is stored, and shown outside create/update). */
export function publicConnectionInfo(info: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(info).filter(([key]) => publicConnectionFields.has(key)));
}

export interface ListAttachmentsQuery {
  /** Filters as column = value (already mapped from Cinder's names). */
  filters: { column: 'volume_id' | 'attach_status' | 'instance_uuid' | 'project_id'; value: string }[];
  allProjects: boolean;
  sort: { key: string; dir: 'asc' | 'desc' }[];
  limit: number;
  marker: string | null;
  offset: number;
}

/** Sort keys the list accepts (Cinder's names on the left). */
export const attachmentSortColumns: Record<string, string> = {
  created_at: "COALESCE(a.created_at, a.attach_time, '')",
  updated_at: "COALESCE(a.updated_at, '')",
  id: 'a.id',
  status: 'a.attach_status',
  attach_status: 'a.attach_status',
  volume_id: 'a.volume_id',
  instance: "COALESCE(a.instance_uuid, '')",
  instance_uuid: "COALESCE(a.instance_uuid, '')",
  attached_at: "COALESCE(a.attach_time, '')",
  attach_time: "COALESCE(a.attach_time, '')",
};

/** Volume statuses an attachment moves the volume out of when it ends (others are kept: a backup or an upload owns them). */
const attachStatuses = ['reserved', 'attaching', 'in-use', 'detaching'] as const;

/** Bounds one connector: Nova's has about 15 keys. */
const connectorKeysMax = 64;

export class AttachmentService {
  /** Attachments with a driver call in flight: a second update/delete of one of them is a 409, never a race. */
  private readonly busy = new Set<string>();

  constructor(
    private readonly db: Db,
    private readonly volumes: VolumeService,
    private readonly manager: VolumeManager,
    private readonly log: (message: string) => void = () => undefined,
  ) {
    this.states = resourceStates(db);
  }

  private readonly states: ResourceStateOwners;

  /** An attachment the caller may see: its volume's project, or any for an admin; a 404 otherwise. */
  attachment(auth: AuthContext, id: string): AttachmentRecord {
    const row = this.db.get<AttachmentRecord>(
      'SELECT a.*, v.project_id AS project_id FROM volume_attachments a JOIN volumes v ON v.id = a.volume_id WHERE a.id = ?',
      id,
    );
    if (!row || (!auth.isAdmin && row.project_id !== auth.projectId)) throw new PumiceError('NotFound', `Volume attachment ${id} could not be found.`);
    return row;
  }

  /** The attachments of a project (or of all projects for an admin asking for them), Cinder's order and paging. */
  list(auth: AuthContext, query: ListAttachmentsQuery): AttachmentRecord[] {
    const conditions: string[] = [];
    const params: SqlValue[] = [];
    for (const f of query.filters) {
      if (f.column === 'project_id' && !(auth.isAdmin && query.allProjects)) continue;
      conditions.push(f.column === 'project_id' ? 'v.project_id = ?' : `a.${f.column} = ?`);
      params.push(f.value);
    }
    if (!(auth.isAdmin && query.allProjects)) {
      conditions.push('v.project_id = ?');
      params.push(this.volumes.projectOf(auth));
    }
    const sort = [...query.sort];
    if (!sort.some((s) => s.key === 'id')) sort.push({ key: 'id', dir: sort[0]?.dir ?? 'desc' });
    const expressions = sort.map((s) => {
      const column = attachmentSortColumns[s.key];
      if (!column) throw errors.invalidInput(`Invalid input: sort key '${s.key}' is not supported for attachments. Valid keys: ${Object.keys(attachmentSortColumns).join(', ')}.`);
      return { column, dir: s.dir };
    });
    const from = 'FROM volume_attachments a JOIN volumes v ON v.id = a.volume_id';
    const where = (extra: string[]) => (extra.length ? `WHERE ${extra.join(' AND ')}` : '');
    const pageConditions = [...conditions];
    const pageParams = [...params];
    if (query.marker) {
      const markerRow = this.db.get<Record<string, SqlValue>>(
        `SELECT ${expressions.map((e, i) => `${e.column} AS k${i}`).join(', ')} ${from} ${where([...conditions, 'a.id = ?'])}`,
        ...params, query.marker,
      );
      if (!markerRow) throw errors.notFound('Marker', query.marker);
      const ors: string[] = [];
      for (let i = 0; i < expressions.length; i++) {
        const parts: string[] = [];
        for (let j = 0; j < i; j++) {
          parts.push(`${expressions[j]!.column} = ?`);
          pageParams.push(markerRow[`k${j}`]!);
        }
        parts.push(`${expressions[i]!.column} ${expressions[i]!.dir === 'asc' ? '>' : '<'} ?`);
        pageParams.push(markerRow[`k${i}`]!);
        ors.push(`(${parts.join(' AND ')})`);
      }
      pageConditions.push(`(${ors.join(' OR ')})`);
    }
    if (query.limit === 0) return [];
    const order = expressions.map((e) => `${e.column} ${e.dir.toUpperCase()}`).join(', ');
    return this.db.all<AttachmentRecord>(
      `SELECT a.*, v.project_id AS project_id ${from} ${where(pageConditions)} ORDER BY ${order} LIMIT ? OFFSET ?`,
      ...pageParams, query.limit, query.offset,
    );
  }

  /**
   * attachment_create: reserves the volume for `instanceUuid` (volume
   * `reserved`, attachment `reserved`); with a connector it also connects
   * (as update). If connecting fails nothing is left behind: the reservation
   * is undone and the error is the caller's answer.
   */
  async create(auth: AuthContext, input: { volumeId: string; instanceUuid: string | null; connector: Connector | null; mode: 'rw' | 'ro' | null }): Promise<{ attachment: AttachmentRecord; connectionInfo: FlatConnectionInfo | null }> {
    if (input.connector) checkConnector(input.connector);
    const id = randomUUID();
    const volumeBefore = this.db.transaction(() => {
      const volume = this.volumes.volume(auth, input.volumeId);
      if (volume.status.includes('error')) {
        throw errors.badRequest(
          `Invalid volume: volume attachments can not be created if the volume is in an error state. Volume ${volume.id} currently has a status of '${volume.status}'; an administrator can reset it (openstack volume set --state available ${volume.id}) once its cause is fixed.`,
        );
      }
      const expected = volume.multiattach ? ['available', 'in-use'] : ['available'];
      let reserved = false;
      if (expected.includes(volume.status)) reserved = this.moveVolume(volume.id, expected, 'reserved');
      if (!reserved) {
        // The same instance may attach again (Nova does it while migrating an instance): Cinder allows it without moving the volume.
        const sameInstance = input.instanceUuid !== null && ['in-use', 'reserved'].includes(volume.status) &&
          this.volumes.attachments(volume.id).some((a) => a.instance_uuid === input.instanceUuid);
        if (!sameInstance) {
          const other = this.volumes.attachments(volume.id).map((a) => a.instance_uuid ?? a.id);
          throw errors.badRequest(
            `Invalid volume: volume ${volume.id} status must be ${expected.map((s) => `'${s}'`).join(' or ')} to attach it; it is '${volume.status}'` +
              (other.length ? ` (attached or reserved for ${other.join(', ')}${volume.multiattach ? '' : '; it is not multiattach: detach it first, or use a volume type with multiattach="<is> True"'})` : '') + '.',
          );
        }
      }
      const mode = volume.read_only ? 'ro' : input.mode ?? 'null';
      const now = nowIso();
      this.db.run(
        "INSERT INTO volume_attachments (id, volume_id, instance_uuid, attach_mode, attach_status, created_at, updated_at) VALUES (?, ?, ?, ?, 'reserved', ?, ?)",
        id, volume.id, input.instanceUuid, mode, now, now,
      );
      return volume;
    });
    if (input.connector && Object.keys(input.connector).length > 0) {
      try {
        const connectionInfo = await this.connect(auth, id, input.connector);
        return { attachment: this.attachment(auth, id), connectionInfo };
      } catch (error) {
        // The reservation is undone as if it never happened (status and updated_at as they were).
        this.db.transaction(() => {
          this.db.run('DELETE FROM volume_attachments WHERE id = ?', id);
          if (this.states.volumes.transition(volumeBefore.id, ['reserved'], volumeBefore.status as VolumeStatus)) {
            this.db.run('UPDATE volumes SET updated_at = ? WHERE id = ?', volumeBefore.updated_at, volumeBefore.id);
          }
        });
        throw error;
      }
    }
    return { attachment: this.attachment(auth, id), connectionInfo: null };
  }

  /**
   * attachment_update: connects the volume for the connector through the
   * backend's initialize connection (the attachment id goes to the driver in
   * the connector, so each attachment gets its own export and secret), and
   * returns Cinder's flat connection info. Attachment and volume → attaching.
   */
  async update(auth: AuthContext, id: string, connector: Connector): Promise<{ attachment: AttachmentRecord; connectionInfo: FlatConnectionInfo }> {
    checkConnector(connector);
    this.attachment(auth, id);
    const connectionInfo = await this.connect(auth, id, connector);
    return { attachment: this.attachment(auth, id), connectionInfo };
  }

  private async connect(auth: AuthContext, id: string, connector: Connector): Promise<FlatConnectionInfo> {
    checkConnector(connector);
    const requestedMode = connector['mode'];
    const attachment = this.attachment(auth, id);
    const volume = this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', attachment.volume_id)!;
    if (volume.status.includes('error')) {
      throw errors.badRequest(`Invalid volume: volume attachments can not be updated if the volume is in an error state. Volume ${volume.id} currently has a status of '${volume.status}'.`);
    }
    const connectable = ['reserved', 'attaching', 'in-use'];
    if (!connectable.includes(volume.status)) {
      throw errors.badRequest(`Invalid volume: volume ${volume.id} is '${volume.status}'; connecting attachment ${id} needs it to be ${connectable.map((s) => `'${s}'`).join(' or ')}.`);
    }
    if (!volume.multiattach) {
      const connectedElsewhere = this.volumes.attachments(volume.id).filter((a) => a.id !== id && (a as AttachmentRecord).connection_info);
      if (connectedElsewhere.length > 0) {
        throw errors.badRequest(`Invalid volume: duplicate connectors detected on volume ${volume.id}: attachment ${connectedElsewhere[0]!.id} is connected already and the volume is not multiattach. Delete that attachment first.`);
      }
    }
    // Cinder's order: a mode chosen at create wins over the connector's, and a read-only volume is always ro.
    let mode: 'rw' | 'ro' = attachment.attach_mode === 'ro' || attachment.attach_mode === 'rw' ? attachment.attach_mode : requestedMode === 'ro' ? 'ro' : 'rw';
    if (attachment.attach_mode === 'ro') mode = 'ro';
    if (volume.read_only && mode !== 'ro') {
      throw errors.badRequest(`Invalid attaching mode 'rw' for volume ${volume.id}: the volume is read-only. Attach it with mode 'ro' or clear the flag (openstack volume set --read-write ${volume.id}).`);
    }
    const driver = this.driverFor(volume);
    if (this.busy.has(id)) throw errors.conflict(`Volume attachment ${id} is being connected or deleted by another request; retry when it has finished.`);
    this.busy.add(id);
    try {
      const driverConnector: Connector = { ...connector, attachment_id: id, mode };
      let info;
      const qos = volumeQos(this.db, volume.volume_type_id, volume.size_gib);
      try {
        info = await driver.initializeConnection({ id: volume.id, sizeGiB: volume.size_gib, qos: qos.backEnd }, driverConnector);
      } catch (error) {
        throw driverFailure(error, `initialize the connection of volume ${volume.id} for attachment ${id}`);
      }
      const flat: FlatConnectionInfo = {
        ...info.data,
        qos_specs: qos.frontEnd,
        access_mode: mode,
        encrypted: info.data['encrypted'] ?? false,
        driver_volume_type: info.driver_volume_type,
        attachment_id: id,
      };
      const now = nowIso();
      const stillThere = this.db.transaction(() => {
        const moved = resourceStates(this.db).attachments.transition(id, ['reserved', 'attaching', 'attached'], 'attaching', {
          connector: JSON.stringify(connector),
          connection_info: JSON.stringify(publicConnectionInfo(flat)),
          attached_host: typeof connector['host'] === 'string' ? connector['host'] : null,
          mountpoint: typeof connector['mountpoint'] === 'string' ? connector['mountpoint'] : 'na',
          attach_mode: mode,
          attach_time: now,
        });
        if (!moved) return false;
        this.moveVolume(volume.id, ['reserved', 'attaching', 'in-use'], 'attaching', { attach_status: 'attaching' });
        return true;
      });
      if (!stillThere) {
        // Deleted (force detach, volume reset) while the driver worked: the new connection must not outlive it.
        await this.terminate(volume, driverConnector).catch(() => undefined);
        throw new PumiceError('NotFound', `Volume attachment ${id} could not be found (it was removed while it was being connected).`);
      }
      return flat;
    } finally {
      this.busy.delete(id);
    }
  }

  /** os-complete (3.44): the consumer sees the volume; attachment attached, volume in-use. */
  complete(auth: AuthContext, id: string): void {
    this.db.transaction(() => {
      const attachment = this.attachment(auth, id);
      const volume = this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', attachment.volume_id)!;
      const from = ['reserved', 'attaching', 'in-use'];
      if (!from.includes(volume.status)) {
        throw errors.badRequest(`Invalid volume: volume ${volume.id} is '${volume.status}'; completing attachment ${id} needs it to be ${from.map((s) => `'${s}'`).join(' or ')}.`);
      }
      resourceStates(this.db).attachments.transition(id, ['reserved', 'attaching', 'attached'], 'attached', { attach_time: attachment.attach_time ?? nowIso() });
      this.moveVolume(volume.id, from, 'in-use', { attach_status: 'attached' });
    });
  }

  /**
   * attachment_delete: terminates the attachment's connection on the backend
   * (its export and secret are revoked), removes it, and puts the volume in
   * `available` (or keeps it `in-use` while other attachments remain). A
   * backend that cannot terminate the connection leaves everything as it was
   * (503); an administrator can still force-detach. Returns the volume's
   * remaining attachments.
   */
  async delete(auth: AuthContext, id: string): Promise<AttachmentRecord[]> {
    const attachment = this.attachment(auth, id);
    const volume = this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', attachment.volume_id)!;
    if (this.busy.has(id)) throw errors.conflict(`Volume attachment ${id} is being connected or deleted by another request; retry when it has finished.`);
    this.busy.add(id);
    try {
      if (attachment.attach_status !== 'reserved' && attachment.connector) {
        await this.terminate(volume, { ...parseConnector(attachment.connector), attachment_id: id }).catch((error: unknown) => {
          throw driverFailure(error, `terminate the connection of attachment ${id} (volume ${volume.id})`);
        });
      }
      return this.db.transaction(() => {
        this.db.run('DELETE FROM volume_attachments WHERE id = ?', id);
        this.settleVolume(volume.id, false);
        return this.remaining(volume.id, attachment.project_id);
      });
    } finally {
      this.busy.delete(id);
    }
  }

  /**
   * os-force_detach (admin): ends one attachment (or the volume's only one)
   * whatever its state, terminating its connection where the backend can
   * (a backend that is down is logged, not waited for), and settles the volume.
   */
  async forceDetach(auth: AuthContext, volumeId: string, attachmentId: string | null, connector: Connector | null): Promise<void> {
    const volume = this.volumes.volume(auth, volumeId);
    const all = this.volumes.attachments(volumeId) as AttachmentRecord[];
    let targets: AttachmentRecord[];
    if (attachmentId) {
      const found = all.find((a) => a.id === attachmentId);
      if (!found) throw new PumiceError('NotFound', `Volume attachment ${attachmentId} could not be found on volume ${volumeId}.`);
      targets = [found];
    } else if (all.length > 1) {
      throw errors.badRequest(`Volume ${volumeId} has ${all.length} attachments (${all.map((a) => a.id).join(', ')}): name the one to detach with attachment_id.`);
    } else {
      targets = all;
    }
    const connectors: Connector[] = targets.filter((a) => a.connector).map((a) => ({ ...parseConnector(a.connector!), attachment_id: a.id }));
    if (connector && Object.keys(connector).length > 0) connectors.push(connector);
    for (const c of connectors) {
      await this.terminate(volume, c).catch((error: unknown) => this.log(`force detach of volume ${volumeId}: terminating a connection failed (${(error as Error).message}); the attachment is removed anyway`));
    }
    this.db.transaction(() => {
      for (const a of targets) this.db.run('DELETE FROM volume_attachments WHERE id = ?', a.id);
      this.settleVolume(volumeId, true);
    });
  }

  /**
   * After os-reset_status with attach_status 'detached': the volume has no
   * attachment any more (Cinder's _clean_volume_attachment). The admin's
   * status stays; the connections are terminated in the background.
   */
  cleanAfterReset(volumeId: string): void {
    const volume = this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', volumeId);
    if (!volume) return;
    const rows = this.volumes.attachments(volumeId) as AttachmentRecord[];
    this.db.run('DELETE FROM volume_attachments WHERE volume_id = ?', volumeId);
    for (const a of rows) {
      if (!a.connector) continue;
      void this.terminate(volume, { ...parseConnector(a.connector), attachment_id: a.id }).catch((error: unknown) =>
        this.log(`reset of volume ${volumeId}: terminating the connection of attachment ${a.id} failed: ${(error as Error).message}`),
      );
    }
  }

  /** The volume's attachments now, for the delete answer. */
  private remaining(volumeId: string, projectId: string): AttachmentRecord[] {
    return (this.volumes.attachments(volumeId) as AttachmentRecord[]).map((a) => ({ ...a, project_id: projectId }));
  }

  /**
   * After an attachment ended: in-use/attached while any remain, else
   * available/detached (Cinder's volume_detached). A volume some other
   * operation owns (uploading, backing-up) keeps its status; `force` moves it
   * from any status but those.
   */
  private settleVolume(volumeId: string, force: boolean): void {
    const volume = this.db.get<VolumeRow>('SELECT * FROM volumes WHERE id = ?', volumeId);
    if (!volume) return;
    const left = this.volumes.attachments(volumeId).length;
    const [status, attachStatus] = left > 0 ? ['in-use', 'attached'] : ['available', 'detached'];
    const owned = ['uploading', 'backing-up', 'deleting', 'extending', 'maintenance'];
    if ((attachStatuses as readonly string[]).includes(volume.status) || (force && !owned.includes(volume.status))) {
      this.moveVolume(volumeId, [volume.status], status, { attach_status: attachStatus });
    } else {
      this.db.run('UPDATE volumes SET attach_status = ?, updated_at = ? WHERE id = ?', attachStatus, nowIso(), volumeId);
    }
  }

  private async terminate(volume: VolumeRow, connector: Connector): Promise<void> {
    await this.driverFor(volume).terminateConnection({ id: volume.id, sizeGiB: volume.size_gib }, connector);
  }

  private driverFor(volume: VolumeRow): VolumeBackend {
    if (!volume.backend) throw errors.badRequest(`Volume ${volume.id} was never placed on a backend (status ${volume.status}): it cannot be connected.`);
    const state = this.manager.backends.get(volume.backend);
    if (!state) throw errors.backendUnavailable(`Backend [${volume.backend}] of volume ${volume.id} is not served by this Pumice; check enabled_backends.`);
    if (!state.up) throw errors.backendUnavailable(`Backend ${state.host} of volume ${volume.id} is down: ${state.downReason}`);
    return state.driver;
  }

  /**
   * Compare-and-set of the volume's status (the row moves only from one of
   * `from`), with the other columns in `changes`. Returns whether it moved.
   */
  /** Volume status moves go through the volume's state owner (compare-and-set against the transition table). */
  private moveVolume(volumeId: string, from: readonly string[], to: string, changes: Record<string, SqlValue> = {}): boolean {
    return this.states.volumes.transition(volumeId, from as readonly VolumeStatus[], to as VolumeStatus, changes as StatusChanges);
  }
}

/** A connector's shape beyond "an object": bounded, and a mode that is rw or ro when given. */
function checkConnector(connector: Connector): void {
  if (Object.keys(connector).length > connectorKeysMax) throw errors.invalidInput(`Invalid input: a connector has at most ${connectorKeysMax} keys.`);
  const mode = connector['mode'];
  if (mode !== undefined && mode !== null && mode !== 'rw' && mode !== 'ro' && mode !== 'null') {
    throw errors.invalidInput(`Invalid input for field/attribute connector/mode. Value: ${JSON.stringify(mode).slice(0, 40)}. Expected 'rw' or 'ro'.`);
  }
}

function parseConnector(text: string): Connector {
  try {
    const parsed = JSON.parse(text) as unknown;
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as Connector) : {};
  } catch {
    return {};
  }
}

/** A driver's expected failure as the API's error: a backend out of reach is a 503, a missing volume file a 400 naming it. */
function driverFailure(error: unknown, action: string): Error {
  if (error instanceof PumiceError) return error;
  if (error instanceof DriverError) {
    if (error.reason === 'Unreachable') return errors.backendUnavailable(`Unable to ${action}: ${error.message}`);
    return errors.badRequest(`Unable to ${action}: ${error.message}`);
  }
  return error instanceof Error ? error : new Error(String(error));
}
