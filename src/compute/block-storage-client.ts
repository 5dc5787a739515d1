/**
 * The compute service's client of the Block Storage API, as Nova's
 * `nova/volume/cinder.py` is Cinder's: volumes and the attachments API over
 * HTTP with the caller's (or the service's) token.
 *
 * Every call has a timeout; a service that cannot be reached gives a
 * `BlockStorageError` of kind 'Unreachable' naming the URL, and every refusal
 * carries the HTTP status and Cinder's fault message, so compute can pass it
 * on (a 400 stays a 400 for the user, a 503 says the backend is down).
 *
 * Attach, as Nova does it:  createAttachment (reserve) → updateAttachment (connector → connection info)
 *   → the hypervisor opens the disk → completeAttachment.
 * Detach: beginDetaching → the hypervisor closes the disk → deleteAttachment (rollDetaching if it failed).
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Connector } from '../volume/drivers/driver.ts';

export type { Connector };

/** The microversion every call sends: 3.44 has the attachments API with os-complete; 3.54 adds the attach mode. */
export const blockStorageMicroversion = '3.54';

export type BlockStorageErrorKind = 'Unreachable' | 'BadRequest' | 'Unauthorized' | 'Forbidden' | 'NotFound' | 'Conflict' | 'OverLimit' | 'Unavailable' | 'Failed';

export class BlockStorageError extends Error {
  constructor(
    readonly kind: BlockStorageErrorKind,
    /** HTTP status of the refusal; 0 when the service was not reached. */
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'BlockStorageError';
  }
}

export interface BlockStorageClientOptions {
  /** The Block Storage v3 base, e.g. `http://127.0.0.1:PORT/volume/v3` (without the project id). */
  endpoint: () => string;
  /** The token to send (X-Auth-Token). */
  token: () => string;
  /** Limit for reaching the service and receiving its whole answer. */
  timeoutMs: number;
}

/** A volume as Block Storage shows it (the fields compute reads; the rest is kept). */
export interface BlockStorageVolume {
  id: string;
  status: string;
  size: number;
  name: string | null;
  availability_zone: string;
  bootable: string;
  multiattach: boolean;
  volume_type: string | null;
  attachments: { attachment_id: string; server_id: string | null; host_name: string | null; device: string | null; attached_at: string | null }[];
  volume_image_metadata?: Record<string, string>;
  [key: string]: unknown;
}

export interface BlockStorageAttachment {
  id: string;
  status: string;
  instance: string | null;
  volume_id: string;
  attached_at?: string;
  detached_at?: string;
  attach_mode?: string | null;
  connection_info?: Record<string, unknown>;
}

/**
 * Connection info in the shape of os-initialize_connection and of Nova's
 * BDM (`{driver_volume_type, data}`): the attachments API answers it flat, as
 * Cinder does, and this client nests it back like Nova's
 * `_translate_attachment_ref`. `data.attachment_id` names the attachment.
 */
export interface AttachmentConnectionInfo {
  driver_volume_type: string;
  data: Record<string, unknown>;
}

export interface CreateVolumeRequest {
  size: number;
  imageRef?: string;
  name?: string;
  volume_type?: string;
  availability_zone?: string;
  description?: string;
  metadata?: Record<string, string>;
}

/** Longest answer body read (a volume list is far smaller); beyond it the answer is refused. */
const answerBytesMax = 8 * 1024 * 1024;

export class BlockStorageClient {
  constructor(private readonly options: BlockStorageClientOptions) {}

  async getVolume(projectId: string, volumeId: string): Promise<BlockStorageVolume> {
    const body = await this.call<{ volume: BlockStorageVolume }>('GET', `/${projectId}/volumes/${enc(volumeId)}`, undefined, [200], `show volume ${volumeId}`);
    return body.volume;
  }

  async createVolume(projectId: string, request: CreateVolumeRequest): Promise<BlockStorageVolume> {
    const body = await this.call<{ volume: BlockStorageVolume }>('POST', `/${projectId}/volumes`, { volume: request }, [202], 'create a volume');
    return body.volume;
  }

  /** Deletes a volume; one that is already gone counts as deleted. */
  async deleteVolume(projectId: string, volumeId: string): Promise<void> {
    try {
      await this.call('DELETE', `/${projectId}/volumes/${enc(volumeId)}`, undefined, [202], `delete volume ${volumeId}`);
    } catch (error) {
      if (error instanceof BlockStorageError && error.kind === 'NotFound') return;
      throw error;
    }
  }

  /** os-extend (an in-use volume too: 3.42+). */
  async extendVolume(projectId: string, volumeId: string, newSizeGiB: number): Promise<void> {
    await this.call('POST', `/${projectId}/volumes/${enc(volumeId)}/action`, { 'os-extend': { new_size: newSizeGiB } }, [202], `extend volume ${volumeId}`);
  }

  /**
   * Reserves the volume for the server (volume `reserved`); with a connector it
   * also connects (volume `attaching`) and the answer has the connection info.
   */
  async createAttachment(
    projectId: string,
    input: { volumeId: string; serverId: string; connector?: Connector | null; mode?: 'rw' | 'ro' },
  ): Promise<{ attachment: BlockStorageAttachment; connectionInfo: AttachmentConnectionInfo | null }> {
    const attachment: Record<string, unknown> = { volume_uuid: input.volumeId, instance_uuid: input.serverId, connector: input.connector ?? null };
    if (input.mode) attachment['mode'] = input.mode;
    const body = await this.call<{ attachment: BlockStorageAttachment }>('POST', `/${projectId}/attachments`, { attachment }, [200], `attach volume ${input.volumeId} to server ${input.serverId}`);
    return { attachment: body.attachment, connectionInfo: input.connector ? nestConnectionInfo(body.attachment.connection_info) : null };
  }

  /** Connects the reserved attachment for this host's connector; returns what the hypervisor needs to open the disk. */
  async updateAttachment(projectId: string, attachmentId: string, connector: Connector): Promise<AttachmentConnectionInfo> {
    const body = await this.call<{ attachment: BlockStorageAttachment }>('PUT', `/${projectId}/attachments/${enc(attachmentId)}`, { attachment: { connector } }, [200], `connect attachment ${attachmentId}`);
    const info = nestConnectionInfo(body.attachment.connection_info);
    if (!info) throw new BlockStorageError('Failed', 200, `the Block Storage service connected attachment ${attachmentId} but returned no connection info`);
    return info;
  }

  /** os-complete: the guest has the disk; volume `in-use`. */
  async completeAttachment(projectId: string, attachmentId: string): Promise<void> {
    await this.call('POST', `/${projectId}/attachments/${enc(attachmentId)}/action`, { 'os-complete': null }, [204], `complete attachment ${attachmentId}`);
  }

  /** Ends the attachment (the backend connection is terminated); an attachment already gone counts as deleted. */
  async deleteAttachment(projectId: string, attachmentId: string): Promise<void> {
    try {
      await this.call('DELETE', `/${projectId}/attachments/${enc(attachmentId)}`, undefined, [200], `delete attachment ${attachmentId}`);
    } catch (error) {
      if (error instanceof BlockStorageError && error.kind === 'NotFound') return;
      throw error;
    }
  }

  async getAttachment(projectId: string, attachmentId: string): Promise<BlockStorageAttachment> {
    const body = await this.call<{ attachment: BlockStorageAttachment }>('GET', `/${projectId}/attachments/${enc(attachmentId)}`, undefined, [200], `show attachment ${attachmentId}`);
    return body.attachment;
  }

  /** os-begin_detaching: volume `detaching` while the hypervisor lets go of the disk. */
  async beginDetaching(projectId: string, volumeId: string): Promise<void> {
    await this.call('POST', `/${projectId}/volumes/${enc(volumeId)}/action`, { 'os-begin_detaching': null }, [202], `begin detaching volume ${volumeId}`);
  }

  /** os-roll_detaching: the detach failed, the volume is back `in-use`. */
  async rollDetaching(projectId: string, volumeId: string): Promise<void> {
    await this.call('POST', `/${projectId}/volumes/${enc(volumeId)}/action`, { 'os-roll_detaching': null }, [202], `roll back the detach of volume ${volumeId}`);
  }

  private async call<T = unknown>(method: string, path: string, body: unknown, expected: number[], action: string): Promise<T> {
    let base: string;
    let token: string;
    try {
      base = this.options.endpoint().replace(/\/+$/, '');
      token = this.options.token();
    } catch (error) {
      throw new BlockStorageError('Unreachable', 0, `cannot ${action}: the Block Storage endpoint is not known (${(error as Error).message})`);
    }
    const url = `${base}${path}`;
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body), 'utf8');
    const headers: Record<string, string> = {
      'X-Auth-Token': token,
      'OpenStack-API-Version': `volume ${blockStorageMicroversion}`,
      Accept: 'application/json',
    };
    if (payload) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = String(payload.length);
    }
    const { status, text } = await this.send(url, method, headers, payload, action);
    if (expected.includes(status)) {
      if (!text) return undefined as T;
      try {
        return JSON.parse(text) as T;
      } catch {
        throw new BlockStorageError('Failed', status, `cannot ${action}: the Block Storage service at ${url} answered ${status} with a body that is not JSON`);
      }
    }
    throw new BlockStorageError(kindOf(status), status, `cannot ${action}: Block Storage answered ${status}: ${faultMessage(text)}`);
  }

  private send(url: string, method: string, headers: Record<string, string>, payload: Buffer | undefined, action: string): Promise<{ status: number; text: string }> {
    const timeoutMs = this.options.timeoutMs;
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (cause: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(new BlockStorageError(
          'Unreachable', 0,
          `cannot ${action}: the Block Storage service at ${url} could not be reached (${cause.message}). Check that the volume API runs there and that the catalog's block-storage endpoint is right.`,
        ));
      };
      let req: ReturnType<typeof httpRequest>;
      try {
        req = (url.startsWith('https:') ? httpsRequest : httpRequest)(url, { method, headers });
      } catch (error) {
        fail(error as Error);
        return;
      }
      const timer = setTimeout(() => {
        fail(new Error(`no complete answer within ${timeoutMs} ms`));
        req.destroy();
      }, timeoutMs);
      req.on('error', fail);
      req.on('response', (response: IncomingMessage) => {
        const chunks: Buffer[] = [];
        let bytes = 0;
        response.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          if (bytes > answerBytesMax) {
            fail(new Error(`the answer is larger than ${answerBytesMax} bytes`));
            req.destroy();
            return;
          }
          chunks.push(chunk);
        });
        response.on('error', fail);
        response.on('end', () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
        });
      });
      req.end(payload);
    });
  }
}

function enc(id: string): string {
  return encodeURIComponent(id);
}

function kindOf(status: number): BlockStorageErrorKind {
  switch (status) {
    case 400: return 'BadRequest';
    case 401: return 'Unauthorized';
    case 403: return 'Forbidden';
    case 404: return 'NotFound';
    case 409: return 'Conflict';
    case 413: return 'OverLimit';
    case 503: return 'Unavailable';
    default: return 'Failed';
  }
}

/** Cinder's fault message (`{"badRequest": {"message": ...}}`), else the start of the body. */
function faultMessage(text: string): string {
  try {
    const fault = Object.values(JSON.parse(text) as Record<string, { message?: string }>)[0];
    if (fault?.message) return fault.message;
  } catch {
    // not a JSON fault
  }
  return text.slice(0, 300) || '(no body)';
}

/** Cinder's flat connection info → `{driver_volume_type, data}` (Nova's _translate_attachment_ref). */
export function nestConnectionInfo(flat: Record<string, unknown> | undefined): AttachmentConnectionInfo | null {
  if (!flat || typeof flat['driver_volume_type'] !== 'string') return null;
  const { driver_volume_type: driverVolumeType, ...data } = flat;
  return { driver_volume_type: driverVolumeType as string, data };
}
