/**
 * The Block Storage side of images: how the volume service reaches the image
 * service (over HTTP, through the catalog or `glance_api_servers`, as Cinder
 * does), and how image bytes get into a volume and volume bytes into an
 * image. Copies are streamed and sparse-aware: zero runs are not written
 * into a fresh volume. Non-raw images are converted with `qemu-img convert`
 * in a scratch directory first, because a volume holds raw bytes.
 */
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { diskFormatOfQemu, qemuFormatOf } from '../disk-formats.ts';
import { DriverError, type VolumeData } from './drivers/driver.ts';

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;
/** Writes are gathered into blocks of this size; zero detection works on granules within them. */
const blockBytes = 4 * MiB;
const granuleBytes = 64 * 1024;
const writesInFlightMax = 4;
const zeroGranule = Buffer.alloc(granuleBytes);
/** Image attributes Glance defines; every other key of an image is a custom property. */
const coreImageKeys = new Set([
  'id', 'name', 'status', 'visibility', 'protected', 'os_hidden', 'checksum', 'os_hash_algo', 'os_hash_value', 'owner', 'size',
  'virtual_size', 'min_ram', 'min_disk', 'disk_format', 'container_format', 'created_at', 'updated_at', 'tags', 'self', 'file',
  'schema', 'direct_url', 'locations', 'stores',
]);
/** Formats whose bytes are the disk itself. */
const rawLikeFormats = new Set(['raw', 'iso', 'ami', 'ari', 'aki']);

export interface ImageRecord {
  id: string;
  name: string | null;
  status: string;
  owner: string | null;
  size: number | null;
  virtualSize: number | null;
  diskFormat: string | null;
  containerFormat: string | null;
  minDisk: number;
  minRam: number;
  checksum: string | null;
  directUrl: string | null;
  properties: Record<string, unknown>;
}

export type ImageServiceErrorKind = 'Unreachable' | 'NotFound' | 'Invalid' | 'Denied';

/** A failure talking to the image service; the message names the URL and the fix. */
export class ImageServiceError extends Error {
  constructor(
    readonly kind: ImageServiceErrorKind,
    message: string,
  ) {
    super(message);
  }
}

export interface ImageEndpoint {
  /** Root of the image API (the URL before `/v2`). */
  url: string;
  /** Where the URL came from, for messages: the option or catalog entry an operator would fix. */
  origin: string;
}

function parseImage(body: Record<string, unknown>): ImageRecord {
  const properties: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(body)) if (!coreImageKeys.has(key)) properties[key] = value;
  const num = (v: unknown) => (typeof v === 'number' ? v : null);
  return {
    id: String(body['id']),
    name: typeof body['name'] === 'string' ? body['name'] : null,
    status: String(body['status']),
    owner: typeof body['owner'] === 'string' ? body['owner'] : null,
    size: num(body['size']),
    virtualSize: num(body['virtual_size']),
    diskFormat: typeof body['disk_format'] === 'string' ? body['disk_format'] : null,
    containerFormat: typeof body['container_format'] === 'string' ? body['container_format'] : null,
    minDisk: num(body['min_disk']) ?? 0,
    minRam: num(body['min_ram']) ?? 0,
    checksum: typeof body['checksum'] === 'string' ? body['checksum'] : null,
    directUrl: typeof body['direct_url'] === 'string' ? body['direct_url'] : null,
    properties,
  };
}

async function faultText(response: Response): Promise<string> {
  const text = await response.text().catch(() => '');
  try {
    const fault = Object.values(JSON.parse(text) as Record<string, { message?: string }>)[0];
    if (fault?.message) return fault.message;
  } catch {
    // not a JSON fault
  }
  return text.slice(0, 300) || response.statusText;
}

function unreachable(url: string, endpoint: ImageEndpoint, cause: Error): ImageServiceError {
  return new ImageServiceError(
    'Unreachable',
    `the image service at ${url} could not be reached (${cause.message ?? String(cause)}). It comes from ${endpoint.origin}: check that the image API runs there, ` +
      `or point [DEFAULT] glance_api_servers at it (e.g. glance_api_servers = http://HOST:PORT/image).`,
  );
}

/** The fault message of a node:http answer (its body is read whole: faults are small). */
async function messageText(response: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    const fault = Object.values(JSON.parse(text) as Record<string, { message?: string }>)[0];
    if (fault?.message) return fault.message;
  } catch {
    // not a JSON fault
  }
  return text.slice(0, 300) || (response.statusMessage ?? '');
}

export class ImageServiceClient {
  constructor(
    private readonly locate: () => ImageEndpoint,
    private readonly timeoutMs: number,
  ) {}

  /** The URL requests go to now, for messages and `pumice doctor`. */
  endpoint(): ImageEndpoint {
    return this.locate();
  }

  /**
   * One request; the timeout covers reaching the service and its answer's
   * headers (small JSON bodies only here). Network failures become 'Unreachable' naming
   * the URL and where it came from.
   */
  private async request(token: string, method: string, path: string, init: { body?: RequestInit['body']; headers?: Record<string, string> } = {}): Promise<Response> {
    let endpoint: ImageEndpoint;
    try {
      endpoint = this.locate();
    } catch (error) {
      throw new ImageServiceError('Unreachable', (error as Error).message);
    }
    const url = `${endpoint.url.replace(/\/+$/, '')}${path}`;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error(`no answer within ${this.timeoutMs / 1000} s (glance_request_timeout)`)), this.timeoutMs);
    try {
      return await fetch(url, {
        method,
        headers: { 'x-auth-token': token, ...init.headers },
        body: init.body,
        signal: controller.signal,
      });
    } catch (error) {
      const cause = (error as Error & { cause?: Error }).cause ?? (controller.signal.reason as Error | undefined) ?? error;
      throw unreachable(url, endpoint, cause as Error);
    } finally {
      clearTimeout(timer);
    }
  }

  async show(token: string, imageId: string): Promise<ImageRecord> {
    const response = await this.request(token, 'GET', `/v2/images/${encodeURIComponent(imageId)}`);
    if (response.status === 404) throw new ImageServiceError('NotFound', `Image ${imageId} could not be found.`);
    if (response.status === 401 || response.status === 403) {
      throw new ImageServiceError('Denied', `the image service refused to show image ${imageId}: ${await faultText(response)}`);
    }
    if (response.status !== 200) throw new ImageServiceError('Invalid', `the image service answered ${response.status} for image ${imageId}: ${await faultText(response)}`);
    return parseImage((await response.json()) as Record<string, unknown>);
  }

  /** The image's bytes as a stream (GET /v2/images/{id}/file). */
  /**
   * Bulk data goes through node:http rather than fetch: Node 20's web streams
   * cost about half the throughput of a volume copy in the profile.
   */
  private streamRequest(token: string, method: string, path: string, headers: Record<string, string>, body?: AsyncIterable<Uint8Array>): Promise<IncomingMessage> {
    let endpoint: ImageEndpoint;
    try {
      endpoint = this.locate();
    } catch (error) {
      return Promise.reject(new ImageServiceError('Unreachable', (error as Error).message));
    }
    const url = `${endpoint.url.replace(/\/+$/, '')}${path}`;
    return new Promise<IncomingMessage>((resolve, reject) => {
      let settled = false;
      const fail = (cause: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(unreachable(url, endpoint, cause));
      };
      const request = (url.startsWith('https:') ? httpsRequest : httpRequest)(url, { method, headers: { 'x-auth-token': token, ...headers } });
      // An idle timer, not a deadline: it is re-armed by every body chunk sent, so an upload of any
      // size may take as long as it needs while the service keeps taking data; once the body is
      // sent, the service has glance_request_timeout to answer.
      let timer: NodeJS.Timeout;
      const arm = (what: string): void => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          fail(new Error(`${what} within ${this.timeoutMs / 1000} s (glance_request_timeout)`));
          request.destroy();
        }, this.timeoutMs);
      };
      arm('no answer');
      request.on('response', (response) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(response);
      });
      request.on('error', fail);
      if (!body) {
        request.end();
        return;
      }
      const tracked = async function* (): AsyncIterable<Uint8Array> {
        for await (const chunk of body) {
          if (!settled) arm('the image service took no data');
          yield chunk;
        }
        if (!settled) arm('no answer after the upload');
      };
      // The answer may come before the body is all sent (a refused upload): stop sending then.
      pipeline(Readable.from(tracked()), request).catch((error: Error) => {
        if (!settled) fail(error);
      });
    });
  }

  async openData(token: string, imageId: string): Promise<AsyncIterable<Uint8Array>> {
    const response = await this.streamRequest(token, 'GET', `/v2/images/${encodeURIComponent(imageId)}/file`, {});
    if (response.statusCode !== 200) {
      throw new ImageServiceError(response.statusCode === 404 ? 'NotFound' : 'Invalid', `downloading image ${imageId} failed: ${response.statusCode} ${await messageText(response)}`);
    }
    return response;
  }

  async create(token: string, body: Record<string, unknown>): Promise<ImageRecord> {
    const response = await this.request(token, 'POST', '/v2/images', { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
    if (response.status !== 201) throw new ImageServiceError('Invalid', `creating the image failed: ${response.status} ${await faultText(response)}`);
    return parseImage((await response.json()) as Record<string, unknown>);
  }

  /** The ids of the image service's stores (GET /v2/info/stores), the default first. */
  async storeIds(token: string): Promise<string[]> {
    const response = await this.request(token, 'GET', '/v2/info/stores');
    if (response.status !== 200) throw new ImageServiceError('Invalid', `listing the image stores failed: ${response.status} ${await faultText(response)}`);
    const body = (await response.json()) as { stores?: { id?: unknown }[] };
    return (body.stores ?? []).map((s) => String(s.id));
  }

  /** PUT /v2/images/{id}/file; `storeId` names the store (X-Image-Meta-Store), else the image service's default store. */
  async upload(token: string, imageId: string, data: AsyncIterable<Uint8Array>, sizeBytes: number, storeId: string | null = null): Promise<void> {
    const response = await this.streamRequest(
      token, 'PUT', `/v2/images/${encodeURIComponent(imageId)}/file`,
      { 'content-type': 'application/octet-stream', 'content-length': String(sizeBytes), ...(storeId !== null ? { 'x-image-meta-store': storeId } : {}) },
      data,
    );
    const text = await messageText(response);
    if (response.statusCode !== 204) throw new ImageServiceError('Invalid', `uploading into image ${imageId} failed: ${response.statusCode} ${text}`);
  }

  async remove(token: string, imageId: string): Promise<void> {
    await this.request(token, 'DELETE', `/v2/images/${encodeURIComponent(imageId)}`).catch(() => undefined);
  }
}

/** `rbd://FSID/POOL/IMAGE/SNAP` → its parts, or null for any other location. */
export function parseRbdLocation(url: string | null): { fsid: string; pool: string; image: string; snapshot: string } | null {
  const m = url ? /^rbd:\/\/([^/]+)\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(url) : null;
  if (!m) return null;
  const [fsid, pool, image, snapshot] = m.slice(1).map((p) => decodeURIComponent(p!));
  return { fsid: fsid!, pool: pool!, image: image!, snapshot: snapshot! };
}

/** What Cinder shows as `volume_image_metadata`: the image's id, name, formats, sizes and custom properties, as strings. */
export function volumeImageMetadata(image: ImageRecord): Record<string, string> {
  const metadata: Record<string, string> = {
    image_id: image.id,
    image_name: image.name ?? '',
    checksum: image.checksum ?? '',
    container_format: image.containerFormat ?? '',
    disk_format: image.diskFormat ?? '',
    min_disk: String(image.minDisk),
    min_ram: String(image.minRam),
    size: String(image.size ?? 0),
  };
  if (image.virtualSize !== null) metadata['virtual_size'] = String(image.virtualSize);
  for (const [key, value] of Object.entries(image.properties)) {
    if (value === null || value === undefined) continue;
    metadata[key] = typeof value === 'string' ? value : JSON.stringify(value);
  }
  return metadata;
}

/** Whether an image's bytes must go through `qemu-img convert` before they are a volume's. */
export function needsConversion(diskFormat: string | null): boolean {
  return !rawLikeFormats.has(diskFormat ?? 'raw');
}

export interface CopyResult {
  /** Bytes read from the source. */
  bytes: number;
  /** Bytes written to the target (the rest were zero runs skipped). */
  writtenBytes: number;
}

/**
 * Streams bytes into a volume from offset 0. Blocks are written with up to
 * `writesInFlightMax` writes in flight; on a volume known to hold zeros,
 * all-zero granules are skipped so the volume stays thin.
 */
export async function copyIntoVolume(
  source: AsyncIterable<Uint8Array>,
  target: VolumeData,
  options: { targetIsZeroed: boolean; what: string; onProgress?: (bytes: number) => void },
): Promise<CopyResult> {
  // Blocks are reused once their writes are done: a fresh 4 MiB buffer per block kept the GC busy.
  const free: Buffer[] = [];
  const blocksInFlight = new Set<Promise<void>>();
  let block: Buffer = Buffer.allocUnsafe(blockBytes);
  let fill = 0;
  let offset = 0;
  let writtenBytes = 0;
  let failure: unknown = null;

  const flushBlock = async (data: Buffer, at: number, owner: Buffer): Promise<void> => {
    const writes: Promise<void>[] = [];
    const submit = (piece: Buffer, pieceAt: number) => {
      writes.push(target.write(pieceAt, piece));
      writtenBytes += piece.length;
    };
    if (!options.targetIsZeroed) {
      submit(data, at);
    } else {
      // Coalesce runs of non-zero granules into one write each.
      let runStart = -1;
      for (let g = 0; g < data.length; g += granuleBytes) {
        const end = Math.min(g + granuleBytes, data.length);
        const zero = data.subarray(g, end).equals(end - g === granuleBytes ? zeroGranule : zeroGranule.subarray(0, end - g));
        if (!zero && runStart < 0) runStart = g;
        if (zero && runStart >= 0) {
          submit(data.subarray(runStart, g), at + runStart);
          runStart = -1;
        }
      }
      if (runStart >= 0) submit(data.subarray(runStart), at + runStart);
    }
    const done = Promise.all(writes).then(
      () => {
        free.push(owner);
      },
      (error: unknown) => {
        failure ??= error;
      },
    );
    blocksInFlight.add(done);
    void done.finally(() => blocksInFlight.delete(done));
    while (blocksInFlight.size >= writesInFlightMax) await Promise.race(blocksInFlight);
    if (failure) throw failure;
  };

  for await (const chunk of source) {
    let view = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    while (view.length > 0) {
      const take = Math.min(view.length, blockBytes - fill);
      view.copy(block, fill, 0, take);
      fill += take;
      view = view.subarray(take);
      if (fill === blockBytes) {
        if (offset + fill > target.sizeBytes) throw tooLarge(options.what, target.sizeBytes);
        await flushBlock(block, offset, block);
        offset += fill;
        options.onProgress?.(offset);
        block = free.pop() ?? Buffer.allocUnsafe(blockBytes);
        fill = 0;
      }
    }
  }
  if (fill > 0) {
    if (offset + fill > target.sizeBytes) throw tooLarge(options.what, target.sizeBytes);
    await flushBlock(block.subarray(0, fill), offset, block);
    offset += fill;
  }
  await Promise.all(blocksInFlight);
  if (failure) throw failure;
  options.onProgress?.(offset);
  return { bytes: offset, writtenBytes };
}

function tooLarge(what: string, sizeBytes: number): DriverError {
  return new DriverError('Invalid', `${what} is larger than the volume (${sizeBytes} bytes): create the volume with a larger size`);
}

/** Reads a volume's first `lengthBytes` as a stream of blocks, for uploads. */
export async function* readVolume(source: VolumeData, lengthBytes: number): AsyncGenerator<Buffer> {
  const readAhead = 4;
  const pending: Promise<Buffer>[] = [];
  let next = 0;
  const readBlock = async (at: number): Promise<Buffer> => {
    const buffer = Buffer.allocUnsafe(Math.min(blockBytes, lengthBytes - at));
    let done = 0;
    while (done < buffer.length) {
      const n = await source.readInto(at + done, buffer.subarray(done));
      if (n <= 0) throw new DriverError('Invalid', `reading the volume ended early at byte ${at + done} of ${lengthBytes}`);
      done += n;
    }
    return buffer;
  };
  while (next < lengthBytes || pending.length > 0) {
    while (pending.length < readAhead && next < lengthBytes) {
      const p = readBlock(next);
      p.catch(() => undefined);
      pending.push(p);
      next += blockBytes;
    }
    yield await pending.shift()!;
  }
}

export interface QemuImageInfo {
  format: string;
  virtualSize: number;
}

export async function qemuImgInfo(path: string): Promise<QemuImageInfo> {
  try {
    const { stdout } = await execFileAsync('qemu-img', ['info', '--output', 'json', path], { timeout: 120_000, maxBuffer: 4 * MiB });
    const info = JSON.parse(stdout) as { format: string; 'virtual-size': number };
    return { format: info.format, virtualSize: info['virtual-size'] };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new DriverError('Invalid', 'qemu-img is not installed, and converting images needs it: apt-get install qemu-utils');
    }
    throw new DriverError('Invalid', `qemu-img info failed on the downloaded image: ${(error as Error).message}`);
  }
}

/** Conversion files: `.pumice-conversion-<volume id>.<format>`; the start-up sweep removes only these. */
const conversionPrefix = '.pumice-conversion-';
const conversionNamePattern = /^\.pumice-conversion-[0-9a-f-]{36}(\.upload)?\.[a-z0-9]{1,12}$/;

/**
 * A scratch directory for conversions (image_conversion_dir may be a shared
 * one such as /var/tmp). Files are named after the volume with a Pumice
 * prefix, so a re-run of the same task overwrites its own leftovers, and
 * start() removes what a crash left behind: only regular files named so,
 * each logged, never anything else and never recursively.
 */
export class ConversionArea {
  constructor(
    readonly directory: string,
    private readonly log: (message: string) => void = () => undefined,
  ) {}

  async start(): Promise<void> {
    await mkdir(this.directory, { recursive: true, mode: 0o700 });
    for (const entry of await readdir(this.directory, { withFileTypes: true })) {
      if (!entry.isFile() || !conversionNamePattern.test(entry.name)) continue;
      await rm(join(this.directory, entry.name), { force: true });
      this.log(`image conversion: removed ${join(this.directory, entry.name)} (left by an interrupted conversion)`);
    }
  }

  /**
   * Saves the download, checks its real format against `diskFormat`,
   * converts it to a sparse raw file and hands that to `use`; every file is
   * removed afterwards, whatever happens.
   */
  async withRawCopy<T>(
    key: string,
    download: AsyncIterable<Uint8Array>,
    diskFormat: string,
    use: (raw: { stream: AsyncIterable<Uint8Array>; virtualSize: number }) => Promise<T>,
  ): Promise<T> {
    const sourcePath = join(this.directory, `${conversionPrefix}${key}.${diskFormat}`);
    const rawPath = join(this.directory, `${conversionPrefix}${key}.raw`);
    try {
      const file = await open(sourcePath, 'w');
      try {
        for await (const chunk of download) await file.write(chunk);
      } finally {
        await file.close();
      }
      const info = await qemuImgInfo(sourcePath);
      const expected = qemuFormatOf[diskFormat] ?? diskFormat;
      if (info.format !== expected) {
        throw new DriverError('Invalid', `the image's data is ${info.format}, but its disk_format says ${diskFormat}: fix the image (re-upload it with --disk-format ${diskFormatOfQemu(info.format)})`);
      }
      try {
        await execFileAsync('qemu-img', ['convert', '-f', expected, '-O', 'raw', '-S', '64k', sourcePath, rawPath], { timeout: 6 * 3600_000, maxBuffer: 4 * MiB });
      } catch (error) {
        throw new DriverError('Invalid', `converting the image from ${diskFormat} to raw failed: ${(error as { stderr?: string }).stderr?.trim() || (error as Error).message}`);
      }
      await rm(sourcePath, { force: true });
      return await use({ stream: createReadStream(rawPath, { highWaterMark: blockBytes }), virtualSize: info.virtualSize });
    } finally {
      await rm(sourcePath, { force: true });
      await rm(rawPath, { force: true });
    }
  }
}

/** An image's data as a file of this host: its store is a file store of this very process. */
export interface LocalImageFile {
  path: string;
  sizeBytes: number;
}

/** What the volume role needs to reach the image service. */
export interface ImageServiceDeps {
  client: ImageServiceClient;
  /**
   * When this process also serves the image API: the file of an active image's data in its file
   * store (checked against the recorded size), else null. Volumes are then filled from the file in
   * place: the bytes no longer cross loopback HTTP (served by the API, read again by the task).
   */
  localImageFile?: ((imageId: string) => Promise<LocalImageFile | null>) | null;
  /**
   * When this process also serves the image API: records an image os-volume_upload_image just
   * created as qcow2 (vmdk, ...) as raw when its store would convert the upload back to raw (rbd,
   * image_conversion); true: the volume's raw bytes are then uploaded once, not converted to qcow2
   * and back. False for an image this process does not hold, or a store that keeps what it is sent.
   */
  recordRawVolumeUpload?: ((imageId: string, storeId: string | null) => boolean) | null;
  /** A token the volume role acts with (admin of the admin project), for locations and data. */
  serviceToken: () => string;
  conversion: ConversionArea;
  /** Resolves once the API listens (the catalog's URLs need its address). */
  ready: Promise<void>;
}

/**
 * Converts a raw stream into `format` in the scratch area and hands the
 * result (path and size) to `use`; the files are removed afterwards.
 */
export async function withConvertedFile<T>(
  area: ConversionArea,
  key: string,
  raw: AsyncIterable<Uint8Array>,
  format: string,
  use: (file: { path: string; sizeBytes: number }) => Promise<T>,
): Promise<T> {
  const rawPath = join(area.directory, `${conversionPrefix}${key}.upload.raw`);
  const outPath = join(area.directory, `${conversionPrefix}${key}.upload.${format}`);
  try {
    const file = await open(rawPath, 'w');
    try {
      // Holes instead of zero blocks keep the scratch copy thin.
      let offset = 0;
      for await (const chunk of raw) {
        const data = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
        for (let g = 0; g < data.length; g += granuleBytes) {
          const piece = data.subarray(g, Math.min(g + granuleBytes, data.length));
          if (!piece.equals(zeroGranule.subarray(0, piece.length))) await file.write(piece, 0, piece.length, offset + g);
        }
        offset += data.length;
      }
      await file.truncate(offset);
    } finally {
      await file.close();
    }
    try {
      await execFileAsync('qemu-img', ['convert', '-f', 'raw', '-O', qemuFormatOf[format] ?? format, rawPath, outPath], { timeout: 6 * 3600_000, maxBuffer: 4 * MiB });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new DriverError('Invalid', 'qemu-img is not installed, and converting volumes needs it: apt-get install qemu-utils');
      throw new DriverError('Invalid', `converting the volume to ${format} failed: ${(error as { stderr?: string }).stderr?.trim() || (error as Error).message}`);
    }
    await rm(rawPath, { force: true });
    const handle = await open(outPath, 'r');
    const { size } = await handle.stat();
    await handle.close();
    return await use({ path: outPath, sizeBytes: size });
  } finally {
    await rm(rawPath, { force: true });
    await rm(outPath, { force: true });
  }
}
