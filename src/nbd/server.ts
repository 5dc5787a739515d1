/**
 * NBD server exporting local (sparse) files over TCP.
 *
 * Implements the fixed-newstyle handshake (with STARTTLS and TLS-PSK when the
 * server has TLS on) and the transmission phase with simple replies, or
 * structured replies for clients that negotiate them, with the one metadata
 * context `base:allocation` (NBD_CMD_BLOCK_STATUS reports the holes of the
 * sparse volume file, so nbdcopy, qemu-img and `nbdinfo --map` skip them).
 * Extended headers are refused, which every client must tolerate. Consumers
 * such as qemu-img/qemu-io, nbdcopy and nbdinfo work against it.
 *
 * Robustness rules: a malformed or hostile client only ever costs its own
 * connection; memory is bounded per connection and for the whole server by the
 * in-flight limits below, also after a client disconnects (queued requests are
 * dropped, never run); clients that have not finished the handshake hold one of
 * a few handshake slots, bounded per source address, and the oldest is evicted
 * for a newcomer, so idle sockets cannot lock real consumers out.
 */
import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { extentProbe, type ExtentProbe } from './extents.js';
import {
  BASE_ALLOCATION,
  BASE_ALLOCATION_ID,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REP_META_CONTEXT,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
  OFFSET_DATA_HEADER_BYTES,
  STRUCTURED_REPLY_HEADER_BYTES,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeMetaContext,
  encodeNoneChunk,
  parseMetaContextOptionData,
  writeStructuredReplyHeader,
  NBD_CLIENT_FLAGS_KNOWN,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EPERM,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_IHAVEOPT,
  NBD_MAGIC,
  NBD_OK,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_STARTTLS,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_SIMPLE_REPLY_MAGIC,
  OPTION_HEADER_BYTES,
  REQUEST_HEADER_BYTES,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeOptionReply,
  encodeSimpleReply,
  SIMPLE_REPLY_HEADER_BYTES,
  parseGoOptionData,
  parseRequestHeader,
  type NbdRequest,
} from './protocol.js';

export interface NbdExport {
  path: string;
  sizeBytes: number;
  readOnly: boolean;
  /** The grant the export came from; `disconnectGrant` cuts its connections. */
  grantId?: string;
  /** When set, the export opens only on a TLS session made with this PSK identity. */
  pskIdentity?: string | null;
  /** Back-end QoS of the volume (its type's qos-specs), enforced per connection; absent: unlimited. */
  limits?: NbdRateLimits;
}

/** Per-second limits, named as Cinder's QoS keys (QEMU's throttling options). */
export interface NbdRateLimits {
  total_iops_sec?: number;
  read_iops_sec?: number;
  write_iops_sec?: number;
  total_bytes_sec?: number;
  read_bytes_sec?: number;
  write_bytes_sec?: number;
}

/**
 * Paces a connection's requests to its limits: each limit is a virtual clock that a request
 * advances by its cost (1/iops seconds per operation, bytes/bps per byte); the request starts
 * once every clock it advances is due. No burst beyond one request, so a measured rate over a
 * few seconds matches the limit. The connection stops reading while it waits (back pressure).
 */
export class NbdRatePacer {
  private readonly dueAtMs = new Map<keyof NbdRateLimits, number>();

  constructor(
    private readonly limits: NbdRateLimits,
    private readonly nowMs: () => number = () => performance.now(),
  ) {}

  /** Milliseconds to wait before a request of `kind` moving `bytes` may start (and books it). */
  delayFor(kind: 'read' | 'write' | 'other', bytes: number): number {
    const costs: [keyof NbdRateLimits, number][] = [['total_iops_sec', 1], ['total_bytes_sec', bytes]];
    if (kind !== 'other') costs.push([`${kind}_iops_sec`, 1], [`${kind}_bytes_sec`, bytes]);
    const now = this.nowMs();
    let startAt = now;
    for (const [key, cost] of costs) {
      if (this.limits[key] && cost > 0) startAt = Math.max(startAt, this.dueAtMs.get(key) ?? now);
    }
    for (const [key, cost] of costs) {
      const limit = this.limits[key];
      if (limit && cost > 0) this.dueAtMs.set(key, startAt + (cost * 1000) / limit);
    }
    return startAt - now;
  }
}

export type NbdExportResolver = (exportName: string) => NbdExport | undefined;

export interface NbdServerOptions {
  host: string;
  /** 0 = ephemeral port. */
  port: number;
  resolveExport: NbdExportResolver;
  /**
   * TLS-PSK: when given, every client must STARTTLS before naming an export (NBD_REP_ERR_TLS_REQD
   * otherwise); `pskKey` returns the key of an identity, undefined refuses the session.
   */
  tls?: { pskKey: (identity: string) => Buffer | undefined };
  /** Connections past the handshake. Default 1024 (`nbd_connections_max`). */
  connectionsMax?: number;
  /** Connections past the handshake from one source address. Default 512 (`nbd_connections_per_source_max`). */
  connectionsPerSourceMax?: number;
  /** Connections still negotiating, server-wide and per source address (defaults below). */
  handshakesMax?: number;
  handshakesPerSourceMax?: number;
  /** Payload/reply bytes held by all connections together. */
  serverInFlightBytesMax?: number;
  /** Handshake time limit; tests shorten it. */
  handshakeTimeoutMs?: number;
  /**
   * Finds the holes of a volume file for `base:allocation`; default: the native addon's
   * (`extentProbe()`). Null: the context is not offered (tests use it for a server without the addon).
   */
  extents?: ExtentProbe | null;
  log?: (msg: string) => void;
}

/** Largest READ/WRITE payload; also advertised as the maximum block size. */
export const requestBytesMax = 32 * 1024 * 1024;
/** Advertised preferred block size: matches the page size / typical fs block. */
export const blockSizePreferredBytes = 4096;
/** Advertised minimum block size: we do byte-granular positional I/O. */
export const blockSizeMinimumBytes = 1;
/**
 * Descriptors in one BLOCK_STATUS reply at most: the spec lets a server describe less than the
 * range asked for, and the client asks again from where the reply ended.
 */
export const blockStatusExtentsMax = 64;
/** Option payloads are tiny in practice (export name <= 4 KiB per spec). */
export const optionBytesMax = 64 * 1024;
/** A client that cannot finish negotiating in this time is dropped. */
export const handshakeTimeoutMs = 10_000;
/** Clients negotiating at once; beyond it the oldest negotiating client is evicted for the newcomer. */
export const handshakesMaxDefault = 32;
/** Negotiating clients per source address; beyond it that source's oldest is evicted. */
export const handshakesPerSourceMaxDefault = 8;
/** Payload/reply bytes held by all connections together (each connection also has its own bound). */
export const serverInFlightBytesMaxDefault = 256 * 1024 * 1024;
/** Guards against a client looping on cheap options until the timeout. */
export const handshakeOptionsMax = 1024;
/** Requests being served at once per connection; beyond this we stop reading the socket. */
export const inFlightRequestsMax = 16;
/** Payload/reply bytes held per connection; bounds memory with pipelined 32 MiB requests. */
export const inFlightBytesMax = 64 * 1024 * 1024;
/** Unconsumed socket data buffered before pausing the socket (back-pressure). */
export const readAheadBytesMax = 1024 * 1024;
/** Contiguous WRITEs are written together up to this many bytes... */
export const writeBatchBytesMax = 8 * 1024 * 1024;
/** ...and this many buffers (a pwritev takes at most IOV_MAX = 1024). */
export const writeBatchBuffersMax = 512;
/** WRITE_ZEROES is processed in chunks of this size to bound memory. */
export const zeroChunkBytes = 1024 * 1024;
/** After a graceful end(), force-close if the peer never closes its side. */
export const gracefulCloseTimeoutMs = 5_000;
export const connectionsMaxDefault = 1024;
/**
 * Established connections per source address: one consumer (a host, or a member holding the
 * export name of its own volume) cannot take every slot. On one host every local consumer comes
 * from loopback, so this also bounds the volumes attached there at once.
 */
export const connectionsPerSourceMaxDefault = 512;
/** A refused source is logged at most once in this time (a count of the others follows). */
export const refusalLogIntervalMs = 10_000;

/** Read reply buffers kept for reuse, all servers of the process together. */
export const replyPoolBytesMax = 32 * 1024 * 1024;
/** Buffers of one size kept for reuse (a connection has at most inFlightRequestsMax replies out). */
export const replyPoolPerSizeMax = 64;

/**
 * Read reply buffers are reused once the socket has sent them: a new 1 MiB buffer per request is
 * external memory that makes V8 collect garbage often, and in the full server (a large heap) the
 * collector took a quarter of the main thread during sequential 1 MiB reads. Keyed by exact size,
 * as clients read with a few sizes; bounded in bytes and per size.
 */
class ReplyPool {
  private readonly free = new Map<number, Buffer[]>();
  private cachedBytes = 0;

  get(bytes: number): Buffer {
    const list = this.free.get(bytes);
    const buf = list?.pop();
    if (buf === undefined) return Buffer.allocUnsafe(bytes);
    if (list!.length === 0) this.free.delete(bytes);
    this.cachedBytes -= bytes;
    return buf;
  }

  /** Only for a buffer nothing else refers to any more (its socket write has completed). */
  put(buf: Buffer): void {
    if (this.cachedBytes + buf.length > replyPoolBytesMax) return;
    let list = this.free.get(buf.length);
    if (list === undefined) this.free.set(buf.length, (list = []));
    if (list.length >= replyPoolPerSizeMax) return;
    list.push(buf);
    this.cachedBytes += buf.length;
  }

  get bytes(): number {
    return this.cachedBytes;
  }
}

const replyPool = new ReplyPool();

/** Shared, never-mutated source of zeros for WRITE_ZEROES and comparisons. */
const zeroChunk = Buffer.alloc(zeroChunkBytes);

class ConnectionClosedError extends Error {
  constructor() {
    super('connection closed');
  }
}

/** Protocol violation that ends the connection (logged, not thrown further). */
class ProtocolError extends Error {}

/**
 * Buffered reader over a socket: `read(n)` resolves with exactly n bytes,
 * however the data was split into TCP chunks. Pauses the socket when enough
 * unread data has accumulated so a fast client cannot grow our memory.
 */
class SocketReader {
  private chunks: Buffer[] = [];
  private bufferedBytes = 0;
  /** A read waiting for data; with `take` false it is only woken, the bytes stay buffered. */
  private pending: { bytes: number; resolve: (buf: Buffer) => void; reject: (err: Error) => void; take: true } | { bytes: number; resolve: (buf: undefined) => void; reject: (err: Error) => void; take: false } | undefined;
  private ended = false;

  private readonly listeners: { data: (chunk: Buffer) => void; end: () => void };

  constructor(private readonly socket: net.Socket) {
    this.listeners = { data: (chunk: Buffer) => this.onData(chunk), end: () => this.onEnd() };
    socket.on('data', this.listeners.data);
    socket.on('end', this.listeners.end);
    socket.on('close', this.listeners.end);
  }

  /** Stops reading this socket (STARTTLS hands it to TLS); returns how many unread bytes were left. */
  detach(): number {
    this.socket.off('data', this.listeners.data);
    this.socket.off('end', this.listeners.end);
    this.socket.off('close', this.listeners.end);
    return this.bufferedBytes;
  }

  /** `bytes` bytes at once when they are already buffered (no promise), else undefined. */
  tryRead(bytes: number): Buffer | undefined {
    if (this.pending || this.bufferedBytes < bytes) return undefined;
    return this.take(bytes);
  }

  /**
   * Like `read`, but the bytes come as the socket's own chunks (subarrays, in order) instead of
   * one buffer: a large WRITE payload is written with one pwritev and never copied or allocated
   * again (a 1 MiB payload arrives as 16 chunks of 64 KiB).
   */
  async readChunks(bytes: number): Promise<Buffer[]> {
    if (this.pending) throw new Error('SocketReader: concurrent read');
    if (this.bufferedBytes < bytes) {
      if (this.ended) throw new ConnectionClosedError();
      // Wait for the whole payload with the chunks left in place (the socket keeps flowing meanwhile).
      await new Promise<Buffer | undefined>((resolve, reject) => {
        this.pending = { bytes, resolve, reject, take: false };
        this.socket.resume();
      });
    }
    return this.takeChunks(bytes);
  }

  /** `readChunks` without a promise when the bytes are already buffered, else undefined. */
  tryReadChunks(bytes: number): Buffer[] | undefined {
    if (this.pending || this.bufferedBytes < bytes) return undefined;
    return this.takeChunks(bytes);
  }

  private takeChunks(bytes: number): Buffer[] {
    const out: Buffer[] = [];
    let left = bytes;
    while (left > 0) {
      const chunk = this.chunks[0]!;
      if (chunk.length <= left) {
        this.chunks.shift();
        out.push(chunk);
        left -= chunk.length;
      } else {
        out.push(chunk.subarray(0, left));
        this.chunks[0] = chunk.subarray(left);
        left = 0;
      }
    }
    this.bufferedBytes -= bytes;
    return out;
  }

  read(bytes: number): Promise<Buffer> {
    if (this.pending) return Promise.reject(new Error('SocketReader: concurrent read'));
    if (this.bufferedBytes >= bytes) return Promise.resolve(this.take(bytes));
    if (this.ended) return Promise.reject(new ConnectionClosedError());
    return new Promise<Buffer>((resolve, reject) => {
      this.pending = { bytes, resolve, reject, take: true };
      this.socket.resume();
    });
  }

  private onData(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bufferedBytes += chunk.length;
    const pending = this.pending;
    if (pending && this.bufferedBytes >= pending.bytes) {
      this.pending = undefined;
      if (pending.take) pending.resolve(this.take(pending.bytes));
      else pending.resolve(undefined);
    }
    if (!this.pending && this.bufferedBytes >= readAheadBytesMax) this.socket.pause();
  }

  private onEnd(): void {
    this.ended = true;
    const pending = this.pending;
    if (pending) {
      this.pending = undefined;
      pending.reject(new ConnectionClosedError());
    }
  }

  private take(bytes: number): Buffer {
    this.bufferedBytes -= bytes;
    const first = this.chunks[0];
    if (first !== undefined && first.length >= bytes) {
      if (first.length === bytes) this.chunks.shift();
      else this.chunks[0] = first.subarray(bytes);
      return first.subarray(0, bytes);
    }
    const out = Buffer.allocUnsafe(bytes);
    let filled = 0;
    while (filled < bytes) {
      const chunk = this.chunks[0];
      if (chunk === undefined) throw new Error('SocketReader: buffer underflow');
      const n = Math.min(chunk.length, bytes - filled);
      chunk.copy(out, filled, 0, n);
      filled += n;
      if (n === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(n);
    }
    return out;
  }
}

interface CommandResult {
  error: number;
  /** With structured replies: the text of the error chunk, for the client to show. */
  message?: string;
  /** With structured replies: a ready chunk that is the whole reply (BLOCK_STATUS). */
  chunk?: Buffer;
  /**
   * A read's whole reply: the connection's readHeaderBytes left free (a simple
   * reply header, or an OFFSET_DATA chunk header and offset), then the data,
   * read there directly, so the reply is one write (one segment with
   * TCP_NODELAY) and the data is never copied.
   */
  reply?: Buffer;
}

interface OpenExport {
  name: string;
  spec: NbdExport;
  file: FileHandle;
  transmissionFlags: number;
}

function transmissionFlagsFor(spec: NbdExport): number {
  let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA;
  // Every connection writes through to the one kernel page cache of the file and a FLUSH is an
  // fdatasync of that file, so a flush on any connection covers the writes all of them had
  // answered: the condition for CAN_MULTI_CONN. Not with QoS limits, which are paced per
  // connection: clients that see the flag (qemu, nbdcopy) would open several and multiply them.
  if (!hasRateLimits(spec.limits)) flags |= NBD_FLAG_CAN_MULTI_CONN;
  // TRIM is not advertised: Node has no fallocate(PUNCH_HOLE), and WRITE_ZEROES
  // below already avoids allocating blocks that are still holes.
  if (spec.readOnly) flags |= NBD_FLAG_READ_ONLY;
  else flags |= NBD_FLAG_SEND_WRITE_ZEROES;
  return flags;
}

function hasRateLimits(limits: NbdRateLimits | undefined): limits is NbdRateLimits {
  return limits !== undefined && Object.values(limits).some((v) => v !== undefined && v > 0);
}

function isValidExport(spec: NbdExport): boolean {
  return (
    typeof spec.path === 'string' &&
    spec.path.length > 0 &&
    Number.isSafeInteger(spec.sizeBytes) &&
    spec.sizeBytes >= 0 &&
    typeof spec.readOnly === 'boolean'
  );
}

function errnoToNbd(err: unknown): number {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return NBD_ENOSPC;
  return NBD_EIO;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Read until `buf` is full or EOF; returns bytes read (the rest is untouched). */
async function readFully(file: FileHandle, buf: Buffer, position: number): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await file.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

async function writeFully(file: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await file.write(buf, done, buf.length - done, position + done);
    if (bytesWritten <= 0) throw Object.assign(new Error('short write'), { code: 'EIO' });
    done += bytesWritten;
  }
}

/** Read into `buf` from `start` until it is full or EOF; calls back with the end of the data read. */
function readFullyAt(fd: number, buf: Buffer, start: number, position: number, cb: (err: Error | null, end: number) => void): void {
  const step = (at: number): void => {
    if (at >= buf.length) return cb(null, at);
    fs.read(fd, buf, at, buf.length - at, position + (at - start), (err, bytesRead) => {
      if (err) cb(err, at);
      else if (bytesRead === 0) cb(null, at);
      else step(at + bytesRead);
    });
  };
  step(start);
}

/** Writes `bufs` one after the other from `position` (one pwritev, again for what a short write left). */
function writevFullyAt(fd: number, bufs: Buffer[], position: number, cb: (err: Error | null) => void): void {
  const rest = bufs.filter((b) => b.length > 0);
  if (rest.length === 0) return cb(null);
  const done = (err: Error | null, bytesWritten: number): void => {
    if (err) return cb(err);
    if (bytesWritten <= 0) return cb(Object.assign(new Error('short write'), { code: 'EIO' }));
    let left = bytesWritten;
    while (rest.length > 0 && left >= rest[0]!.length) left -= rest.shift()!.length;
    if (rest.length === 0) return cb(null);
    rest[0] = rest[0]!.subarray(left);
    writevFullyAt(fd, rest, position + bytesWritten, cb);
  };
  if (rest.length === 1) fs.write(fd, rest[0]!, 0, rest[0]!.length, position, done);
  else fs.writev(fd, rest, position, done);
}

/** Fills the first OFFSET_DATA_HEADER_BYTES of a read's reply buffer: one final OFFSET_DATA chunk. */
function writeOffsetDataHeader(reply: Buffer, req: NbdRequest): void {
  writeStructuredReplyHeader(reply, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, req.handle, reply.length - STRUCTURED_REPLY_HEADER_BYTES);
  reply.writeBigUInt64BE(req.offset, STRUCTURED_REPLY_HEADER_BYTES);
}

function pastEndMessage(req: NbdRequest, sizeBytes: number): string {
  return `${req.length} bytes at offset ${req.offset} go past the end of the export (${sizeBytes} bytes)`;
}

/** The client sees the errno name, never the server's path. */
function ioErrorMessage(req: NbdRequest, err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code ?? 'EIO';
  return `I/O error on the volume (${code}) for ${req.length} bytes at offset ${req.offset}`;
}

function defaultErrorMessage(error: number): string {
  switch (error) {
    case NBD_EPERM:
      return 'the export is read-only';
    case NBD_ENOSPC:
      return 'no space left for the volume';
    case NBD_EINVAL:
      return 'invalid request';
    default:
      return `request failed (errno ${error})`;
  }
}

/** Fills the first SIMPLE_REPLY_HEADER_BYTES of a read's reply buffer. */
function writeSimpleReplyHeader(reply: Buffer, error: number, handle: Buffer): void {
  reply.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  reply.writeUInt32BE(error, 4);
  handle.copy(reply, 8, 0, 8);
}

/** Bytes held by all connections together; a waiter is woken on every release. */
class ByteBudget {
  private usedBytes = 0;
  private waiters: Array<() => void> = [];

  constructor(readonly bytesMax: number) {}

  /** One request always fits an idle server, so a request as large as the bound still runs. */
  fits(bytes: number): boolean {
    return this.usedBytes === 0 || this.usedBytes + bytes <= this.bytesMax;
  }

  take(bytes: number): void {
    this.usedBytes += bytes;
  }

  release(bytes: number): void {
    this.usedBytes -= bytes;
    this.wakeAll();
  }

  get used(): number {
    return this.usedBytes;
  }

  wait(): Promise<void> {
    return new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  wakeAll(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }
}

interface ConnectionContext {
  resolveExport: NbdExportResolver;
  tls: NbdServerOptions['tls'];
  budget: ByteBudget;
  handshakeTimeoutMs: number;
  extents: ExtentProbe | null;
  /** Before NBD_OPT_GO opens an export: why the connection may not be established (limits), or null. */
  admit: (conn: NbdConnection) => string | null;
  /** Called when the handshake picked an export; false refuses the connection (a limit reached meanwhile). */
  onEstablished: (conn: NbdConnection) => boolean;
  log: (msg: string) => void;
}

class NbdConnection {
  private reader: SocketReader;
  private socket: net.Socket;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private opened: OpenExport | undefined;
  /** NBD_OPT_STRUCTURED_REPLY was acknowledged: READs are answered with chunks. */
  private structured = false;
  /** The export NBD_OPT_SET_META_CONTEXT selected base:allocation for (undefined: none selected). */
  private metaContextExport: string | undefined;
  /** base:allocation is active for the export opened (set at NBD_OPT_GO / EXPORT_NAME). */
  private blockStatus = false;
  /** Bytes before the data in a READ reply: a simple reply header, or an OFFSET_DATA chunk header. */
  private readHeaderBytes = SIMPLE_REPLY_HEADER_BYTES;
  /** PSK identity of the TLS session, once STARTTLS succeeded. */
  private tlsIdentity: string | undefined;
  /** Export selected by the client (set before the file is opened, for disconnectExport). */
  exportName: string | undefined;
  /** Grant of the selected export, for disconnectGrant. */
  grantId: string | undefined;
  /** Remote address, for per-source handshake limits. */
  readonly source: string;
  readonly startedAtMs = Date.now();
  handshaking = true;

  private inFlightCount = 0;
  private inFlightBytes = 0;
  /** The export's QoS pacing, once one with limits is opened. */
  private pacer: NbdRatePacer | null = null;
  private budgetWaiters: Array<() => void> = [];
  /** File I/O still running; the file is closed only after it settles. */
  private ioPending = 0;
  private ioWaiters: Array<() => void> = [];
  /** Replies are being gathered for one writev (see writeReply). */
  private corked = false;
  /** Contiguous WRITEs read but not started yet (see batchWrite). */
  private writeBatch: { exp: OpenExport; offset: number; end: number; bufs: Buffer[]; reqs: NbdRequest[] } | undefined;

  private readonly log: (msg: string) => void;
  private readonly resolveExport: NbdExportResolver;

  constructor(
    socket: net.Socket,
    private readonly id: number,
    private readonly context: ConnectionContext,
  ) {
    this.socket = socket;
    this.log = context.log;
    this.resolveExport = context.resolveExport;
    this.source = socket.remoteAddress ?? 'unknown';
    this.reader = new SocketReader(socket);
    socket.on('error', (err) => this.log(`nbd[${this.id}]: socket error: ${err.message}`));
    socket.on('close', () => {
      this.closed = true;
      this.wakeBudgetWaiters();
      this.context.budget.wakeAll();
    });
  }

  destroy(): void {
    this.socket.destroy();
  }

  async run(): Promise<void> {
    const timeoutMs = this.context.handshakeTimeoutMs;
    this.handshakeTimer = setTimeout(() => {
      this.log(`nbd[${this.id}]: handshake from ${this.source} timed out after ${timeoutMs} ms`);
      this.socket.destroy();
    }, timeoutMs);
    this.handshakeTimer.unref();
    try {
      const ready = await this.handshake();
      clearTimeout(this.handshakeTimer);
      this.handshaking = false;
      if (ready && !this.context.onEstablished(this)) throw new ProtocolError('too many connections');
      if (ready) await this.transmission();
    } catch (err) {
      if (!(err instanceof ConnectionClosedError)) {
        this.log(`nbd[${this.id}]: closing connection: ${errorMessage(err)}`);
      }
      this.socket.destroy();
    } finally {
      clearTimeout(this.handshakeTimer);
      // A graceful end() may still be flushing; otherwise make sure it is gone.
      if (!this.socket.writableEnded) this.socket.destroy();
      await this.ioSettled();
      if (this.opened) {
        await this.opened.file.close().catch((err: unknown) => {
          this.log(`nbd[${this.id}]: closing ${this.opened?.spec.path}: ${errorMessage(err)}`);
        });
      }
    }
  }

  /** Half-close after flushing replies; force-close if the peer lingers. */
  private endGracefully(): void {
    this.socket.end();
    setTimeout(() => this.socket.destroy(), gracefulCloseTimeoutMs).unref();
  }

  private write(buf: Buffer, cb?: (err?: Error | null) => void): void {
    if (this.socket.destroyed || this.socket.writableEnded) {
      cb?.(new ConnectionClosedError());
      return;
    }
    this.socket.write(buf, cb);
  }

  /** During the handshake, don't queue replies for a client that isn't reading them. */
  private async waitWritable(): Promise<void> {
    if (!this.socket.writableNeedDrain) return;
    await new Promise<void>((resolve, reject) => {
      const onDrain = (): void => {
        this.socket.off('close', onClose);
        resolve();
      };
      const onClose = (): void => {
        this.socket.off('drain', onDrain);
        reject(new ConnectionClosedError());
      };
      this.socket.once('drain', onDrain);
      this.socket.once('close', onClose);
    });
  }

  private resolve(name: string): NbdExport | undefined {
    let spec: NbdExport | undefined;
    try {
      spec = this.resolveExport(name);
    } catch (err) {
      this.log(`nbd[${this.id}]: export resolver failed for ${JSON.stringify(name)}: ${errorMessage(err)}`);
      return undefined;
    }
    if (spec && !isValidExport(spec)) {
      this.log(`nbd[${this.id}]: resolver returned an invalid export`);
      return undefined;
    }
    // An export bound to a PSK identity opens only on a TLS session made with that key.
    if (spec && this.context.tls && (spec.pskIdentity ?? null) !== (this.tlsIdentity ?? null)) {
      this.log(`nbd[${this.id}]: export refused to ${this.source}: not the TLS identity it was granted to`);
      return undefined;
    }
    if (!spec) this.log(`nbd[${this.id}]: unknown export requested by ${this.source}`);
    return spec;
  }

  /**
   * NBD_OPT_STARTTLS: acknowledge in clear, then run the TLS-PSK handshake on the same socket and
   * continue the option haggling inside TLS (the greeting is not repeated).
   */
  private async startTls(): Promise<void> {
    const tlsOptions = this.context.tls;
    if (!tlsOptions) throw new Error('startTls without TLS');
    const leftover = this.reader.detach();
    // The client must wait for our ACK before its ClientHello; bytes already here are a violation.
    if (leftover > 0) throw new ProtocolError('data after STARTTLS before the TLS handshake');
    this.write(encodeOptionReply(NBD_OPT_STARTTLS, NBD_REP_ACK));
    const raw = this.socket;
    const secure = new tls.TLSSocket(raw, {
      isServer: true,
      // PSK cipher suites only: there is no certificate, the per-grant key authenticates both ends.
      ciphers: 'PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256:PSK-CHACHA20-POLY1305:TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256',
      minVersion: 'TLSv1.2',
      pskCallback: (_socket: tls.TLSSocket, identity: string) => {
        const key = tlsOptions.pskKey(identity);
        if (!key) {
          this.log(`nbd[${this.id}]: TLS-PSK identity from ${this.source} is unknown`);
          return null;
        }
        this.tlsIdentity = identity;
        return key;
      },
    } as tls.TLSSocketOptions);
    secure.on('error', (err) => this.log(`nbd[${this.id}]: TLS error: ${err.message}`));
    secure.on('close', () => {
      this.closed = true;
      this.wakeBudgetWaiters();
      this.context.budget.wakeAll();
    });
    await new Promise<void>((resolve, reject) => {
      const onSecure = (): void => {
        secure.off('close', onClose);
        resolve();
      };
      const onClose = (): void => {
        secure.off('secure', onSecure);
        reject(new ConnectionClosedError());
      };
      secure.once('secure', onSecure);
      secure.once('close', onClose);
    });
    if (this.tlsIdentity === undefined) throw new ProtocolError('TLS session without a PSK identity');
    this.socket = secure;
    this.reader = new SocketReader(secure);
  }

  private async openExport(name: string, spec: NbdExport): Promise<OpenExport | undefined> {
    this.exportName = name;
    this.grantId = spec.grantId;
    let file: FileHandle;
    try {
      file = await open(spec.path, spec.readOnly ? 'r' : 'r+');
    } catch (err) {
      this.log(`nbd[${this.id}]: cannot open ${spec.path}: ${errorMessage(err)}`);
      return undefined;
    }
    this.opened = { name, spec, file, transmissionFlags: transmissionFlagsFor(spec) };
    this.pacer = hasRateLimits(spec.limits) ? new NbdRatePacer(spec.limits) : null;
    // disconnectExport() may have fired while we were opening.
    if (this.socket.destroyed) throw new ConnectionClosedError();
    return this.opened;
  }

  /** Returns true when the transmission phase should start. */
  private async handshake(): Promise<boolean> {
    const greeting = Buffer.alloc(18);
    greeting.writeBigUInt64BE(NBD_MAGIC, 0);
    greeting.writeBigUInt64BE(NBD_IHAVEOPT, 8);
    greeting.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
    this.write(greeting);

    const clientFlags = (await this.reader.read(4)).readUInt32BE(0);
    if ((clientFlags & ~NBD_CLIENT_FLAGS_KNOWN) !== 0) {
      throw new ProtocolError(`unknown client flags 0x${clientFlags.toString(16)}`);
    }
    const noZeroes = (clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0;

    for (let optionCount = 0; ; optionCount++) {
      if (optionCount >= handshakeOptionsMax) throw new ProtocolError('too many handshake options');
      await this.waitWritable();
      const header = await this.reader.read(OPTION_HEADER_BYTES);
      if (header.readBigUInt64BE(0) !== NBD_IHAVEOPT) throw new ProtocolError('bad option magic');
      const option = header.readUInt32BE(8);
      const dataBytes = header.readUInt32BE(12);
      // Too large to skip safely; a legitimate client never sends this.
      if (dataBytes > optionBytesMax) throw new ProtocolError(`option ${option} data too large (${dataBytes} bytes)`);
      const data = dataBytes > 0 ? await this.reader.read(dataBytes) : Buffer.alloc(0);

      const tlsPending = this.context.tls !== undefined && this.tlsIdentity === undefined;
      if (option === NBD_OPT_STARTTLS) {
        if (!this.context.tls) {
          this.write(encodeOptionReply(option, NBD_REP_ERR_UNSUP, Buffer.from('TLS is not enabled on this server')));
        } else if (!tlsPending) {
          this.write(encodeOptionReply(option, NBD_REP_ERR_INVALID, Buffer.from('TLS is already active')));
        } else if (dataBytes !== 0) {
          this.write(encodeOptionReply(option, NBD_REP_ERR_INVALID, Buffer.from('STARTTLS takes no data')));
        } else {
          await this.startTls();
        }
        continue;
      }
      if (tlsPending && option !== NBD_OPT_ABORT) {
        // Spec: with TLS mandatory, only STARTTLS and ABORT are served in clear; EXPORT_NAME cannot be refused but by closing.
        if (option === NBD_OPT_EXPORT_NAME) throw new ProtocolError('export requested without TLS');
        this.write(encodeOptionReply(option, NBD_REP_ERR_TLS_REQD, Buffer.from('this server requires TLS (STARTTLS with a TLS-PSK key)')));
        continue;
      }

      switch (option) {
        case NBD_OPT_EXPORT_NAME: {
          // This option has no error reply: the only way to refuse is to close.
          const name = data.toString('utf8');
          const spec = this.resolve(name);
          if (!spec) throw new ProtocolError('unknown export');
          const opened = await this.openExport(name, spec);
          if (!opened) throw new ProtocolError('export unavailable');
          this.blockStatus = this.metaContextExport === name;
          const reply = Buffer.alloc(noZeroes ? 10 : 134);
          reply.writeBigUInt64BE(BigInt(spec.sizeBytes), 0);
          reply.writeUInt16BE(opened.transmissionFlags, 8);
          this.write(reply);
          return true;
        }
        case NBD_OPT_GO:
        case NBD_OPT_INFO: {
          const parsed = parseGoOptionData(data);
          if (!parsed) {
            this.write(encodeOptionReply(option, NBD_REP_ERR_INVALID, Buffer.from('malformed option data')));
            break;
          }
          const spec = this.resolve(parsed.exportName);
          if (!spec) {
            this.write(encodeOptionReply(option, NBD_REP_ERR_UNKNOWN, Buffer.from('unknown export')));
            break;
          }
          let flags = transmissionFlagsFor(spec);
          if (option === NBD_OPT_GO) {
            // Refused before anything is opened, with a reason the consumer shows (qemu prints it).
            const refusal = this.context.admit(this);
            if (refusal !== null) {
              this.write(encodeOptionReply(option, NBD_REP_ERR_POLICY, Buffer.from(refusal)));
              break;
            }
            const opened = await this.openExport(parsed.exportName, spec);
            if (!opened) {
              this.exportName = undefined;
              this.write(encodeOptionReply(option, NBD_REP_ERR_UNKNOWN, Buffer.from('export unavailable')));
              break;
            }
            flags = opened.transmissionFlags;
            // Contexts selected for another export name do not apply to this one.
            this.blockStatus = this.metaContextExport === parsed.exportName;
          }
          this.write(encodeOptionReply(option, NBD_REP_INFO, encodeInfoExport(spec.sizeBytes, flags)));
          // Sent even if not requested: minimum 1 imposes no constraint on the client.
          this.write(
            encodeOptionReply(
              option,
              NBD_REP_INFO,
              encodeInfoBlockSize(blockSizeMinimumBytes, blockSizePreferredBytes, requestBytesMax),
            ),
          );
          this.write(encodeOptionReply(option, NBD_REP_ACK));
          if (option === NBD_OPT_GO) return true;
          break;
        }
        case NBD_OPT_ABORT:
          this.write(encodeOptionReply(option, NBD_REP_ACK));
          this.endGracefully();
          return false;
        case NBD_OPT_LIST:
          // The resolver cannot enumerate exports, and volume names are not public anyway.
          this.write(encodeOptionReply(option, NBD_REP_ERR_POLICY, Buffer.from('export listing disabled')));
          break;
        case NBD_OPT_STRUCTURED_REPLY:
          if (dataBytes !== 0) {
            this.write(encodeOptionReply(option, NBD_REP_ERR_INVALID, Buffer.from('NBD_OPT_STRUCTURED_REPLY takes no data')));
            break;
          }
          this.structured = true;
          this.readHeaderBytes = OFFSET_DATA_HEADER_BYTES;
          this.write(encodeOptionReply(option, NBD_REP_ACK));
          break;
        case NBD_OPT_LIST_META_CONTEXT:
        case NBD_OPT_SET_META_CONTEXT:
          this.metaContextOption(option, data);
          break;
        default:
          // Includes extended headers.
          this.write(encodeOptionReply(option, NBD_REP_ERR_UNSUP));
          break;
      }
    }
  }

  /**
   * NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT. The one context is `base:allocation`, offered
   * only when holes can be found (the native addon loads); without it both options select nothing
   * and clients read every byte. LIST matches `base:allocation` and the namespace query `base:`; SET
   * only the full name (the spec leaves namespace queries in SET to the server). SET replaces the
   * selection, and applies only if NBD_OPT_GO then names the same export.
   */
  private metaContextOption(option: number, data: Buffer): void {
    const set = option === NBD_OPT_SET_META_CONTEXT;
    const name = set ? 'NBD_OPT_SET_META_CONTEXT' : 'NBD_OPT_LIST_META_CONTEXT';
    if (!this.structured) {
      this.write(encodeOptionReply(option, NBD_REP_ERR_INVALID, Buffer.from(`${name} needs structured replies: send NBD_OPT_STRUCTURED_REPLY first`)));
      return;
    }
    const parsed = parseMetaContextOptionData(data);
    if (!parsed) {
      this.write(encodeOptionReply(option, NBD_REP_ERR_INVALID, Buffer.from(`malformed ${name} data`)));
      return;
    }
    if (set) this.metaContextExport = undefined;
    if (!this.resolve(parsed.exportName)) {
      this.write(encodeOptionReply(option, NBD_REP_ERR_UNKNOWN, Buffer.from('unknown export')));
      return;
    }
    const offered = this.context.extents !== null;
    const matches = parsed.queries.some((q) => q === BASE_ALLOCATION || (!set && q === 'base:'));
    if (offered && (matches || (!set && parsed.queries.length === 0))) {
      this.write(encodeOptionReply(option, NBD_REP_META_CONTEXT, encodeMetaContext(set ? BASE_ALLOCATION_ID : 0, BASE_ALLOCATION)));
      if (set) this.metaContextExport = parsed.exportName;
    }
    this.write(encodeOptionReply(option, NBD_REP_ACK));
  }

  private wakeBudgetWaiters(): void {
    const waiters = this.budgetWaiters;
    this.budgetWaiters = [];
    for (const wake of waiters) wake();
  }

  /**
   * Blocks (without reading the socket) until a request costing `bytes` fits this connection's and
   * the server's bounds. Throws once the client is gone: requests it queued are dropped, not run.
   */
  private async waitForBudget(bytes: number): Promise<void> {
    const budget = this.context.budget;
    for (;;) {
      if (this.closed) throw new ConnectionClosedError();
      if (this.overConnectionBounds(bytes)) {
        await new Promise<void>((resolve) => this.budgetWaiters.push(resolve));
        continue;
      }
      if (bytes > 0 && !budget.fits(bytes)) {
        await budget.wait();
        continue;
      }
      return;
    }
  }

  private overConnectionBounds(bytes: number): boolean {
    return this.inFlightCount > 0 && (this.inFlightCount >= inFlightRequestsMax || this.inFlightBytes + bytes > inFlightBytesMax);
  }

  /** True when a request costing `bytes` may start now: `waitForBudget` would return at once. */
  private budgetFits(bytes: number): boolean {
    return !this.closed && !this.overConnectionBounds(bytes) && (bytes === 0 || this.context.budget.fits(bytes));
  }

  private async drain(): Promise<void> {
    while (!this.closed && this.inFlightCount > 0) {
      await new Promise<void>((resolve) => this.budgetWaiters.push(resolve));
    }
  }

  private async transmission(): Promise<void> {
    const exp = this.opened;
    if (!exp) throw new Error('transmission without an export');
    try {
      await this.serveRequests(exp);
    } finally {
      // A batch read just before a protocol error or a closed socket still completes (or fails
      // with EIO when closed), so its budget is released and the file is closed only after it.
      this.flushWrites();
    }
  }

  private async serveRequests(exp: OpenExport): Promise<void> {
    for (;;) {
      // Requests already buffered are taken without a promise (with async hooks on in the server,
      // each await costs a hook call or more); the loop yields when it must wait for data or budget,
      // and before it does, contiguous writes read so far start as one batch (flushWrites).
      let header = this.reader.tryRead(REQUEST_HEADER_BYTES);
      if (header === undefined) {
        this.flushWrites();
        header = await this.reader.read(REQUEST_HEADER_BYTES);
      }
      const req = parseRequestHeader(header);
      if (!req) throw new ProtocolError('bad request magic');
      const batchable = this.batchable(exp, req);
      if (this.writeBatch && !(batchable && this.writeBatch.end === Number(req.offset))) this.flushWrites();

      if (req.type === NBD_CMD_DISC) {
        // Spec: finish outstanding requests, then close.
        await this.drain();
        this.endGracefully();
        return;
      }

      if (this.pacer && (req.type === NBD_CMD_READ || req.type === NBD_CMD_WRITE || req.type === NBD_CMD_WRITE_ZEROES)) {
        const delayMs = this.pacer.delayFor(req.type === NBD_CMD_READ ? 'read' : 'write', req.type === NBD_CMD_WRITE_ZEROES ? 0 : req.length);
        if (delayMs > 0) await new Promise((resolveDelay) => setTimeout(resolveDelay, delayMs));
        if (this.closed) throw new ConnectionClosedError();
      }

      if (req.type === NBD_CMD_WRITE) {
        // The payload must be consumed to stay in sync; refusing to buffer it means closing.
        if (req.length > requestBytesMax) throw new ProtocolError(`write of ${req.length} bytes exceeds limit`);
        if (!this.budgetFits(req.length)) {
          // Requests of the batch count as in flight: start them before waiting for them.
          this.flushWrites();
          await this.waitForBudget(req.length);
        }
        // Reserve before reading: the payload buffers are what the budget bounds.
        this.context.budget.take(req.length);
        let payload = this.reader.tryReadChunks(req.length);
        if (payload === undefined) {
          // A batch is kept while this payload arrives: it follows its header whatever our replies
          // (a client sends a request whole), and joins the batch. Anything else was flushed above.
          if (!batchable) this.flushWrites();
          try {
            payload = await this.reader.readChunks(req.length);
          } catch (err) {
            this.context.budget.release(req.length);
            throw err;
          }
        }
        if (this.closed) {
          this.context.budget.release(req.length);
          throw new ConnectionClosedError();
        }
        if (batchable) this.batchWrite(exp, req, payload);
        else this.dispatch(exp, req, payload, req.length, true);
      } else {
        let cost = 0;
        if (req.type === NBD_CMD_READ && req.length <= requestBytesMax) cost = req.length;
        else if (req.type === NBD_CMD_WRITE_ZEROES) cost = Math.min(req.length, zeroChunkBytes);
        if (!this.budgetFits(cost)) await this.waitForBudget(cost);
        this.dispatch(exp, req, undefined, cost, false);
      }
    }
  }

  /** A WRITE that may join a batch: in range, no FUA, not paced. */
  private batchable(exp: OpenExport, req: NbdRequest): boolean {
    return (
      req.type === NBD_CMD_WRITE &&
      this.pacer === null &&
      !exp.spec.readOnly &&
      (req.flags & NBD_CMD_FLAG_FUA) === 0 &&
      req.length > 0 &&
      req.length <= requestBytesMax &&
      req.offset + BigInt(req.length) <= BigInt(exp.spec.sizeBytes)
    );
  }

  /**
   * Contiguous WRITEs read in one go (a sequential writer's queue) are written with one pwritev:
   * one thread-pool job and one syscall for up to writeBatchBytesMax instead of one per request.
   * Each request is accounted as in flight at once and answered on its own when the batch is done.
   */
  private batchWrite(exp: OpenExport, req: NbdRequest, payload: Buffer[]): void {
    this.inFlightCount++;
    this.inFlightBytes += req.length;
    const offset = Number(req.offset);
    const batch = (this.writeBatch ??= { exp, offset, end: offset, bufs: [], reqs: [] });
    batch.bufs.push(...payload);
    batch.reqs.push(req);
    batch.end += req.length;
    if (batch.end - batch.offset >= writeBatchBytesMax || batch.bufs.length >= writeBatchBuffersMax) this.flushWrites();
  }

  /** Starts the batched writes, if any (see batchWrite). */
  private flushWrites(): void {
    const batch = this.writeBatch;
    if (batch === undefined) return;
    this.writeBatch = undefined;
    this.ioPending += batch.reqs.length;
    const finishAll = (result: CommandResult): void => {
      for (const req of batch.reqs) this.complete(req, req.length, result);
    };
    // The client is gone: nobody reads the replies, so do not spend I/O on them.
    if (this.closed) return finishAll({ error: NBD_EIO });
    writevFullyAt(batch.exp.file.fd, batch.bufs, batch.offset, (err) => {
      if (!err) return finishAll({ error: NBD_OK });
      this.log(`nbd[${this.id}]: I/O error on ${batch.exp.spec.path} (write of ${batch.end - batch.offset} bytes at ${batch.offset}): ${errorMessage(err)}`);
      finishAll({ error: errnoToNbd(err) });
    });
  }

  private dispatch(exp: OpenExport, req: NbdRequest, payload: Buffer[] | undefined, cost: number, reserved: boolean): void {
    this.inFlightCount++;
    this.inFlightBytes += cost;
    if (!reserved) this.context.budget.take(cost);
    this.ioPending++;
    const finish = (result: CommandResult): void => this.complete(req, cost, result);
    if (!this.startFastIo(exp, req, payload, finish)) void this.execute(exp, req, payload).then(finish);
  }

  /** A request's I/O is done: its reply goes out, and its budget is released once sent. */
  private complete(req: NbdRequest, cost: number, result: CommandResult): void {
    if (--this.ioPending === 0) this.wakeIoWaiters();
    const release = (): void => {
      this.inFlightCount--;
      this.inFlightBytes -= cost;
      this.context.budget.release(cost);
      this.wakeBudgetWaiters();
    };
    const reply = result.reply;
    if (reply) {
      if (this.structured) writeOffsetDataHeader(reply, req);
      else writeSimpleReplyHeader(reply, result.error, req.handle);
      this.writeReply(reply, () => {
        // The write has completed (or failed): the socket no longer refers to the buffer.
        replyPool.put(reply);
        release();
      });
    } else {
      this.writeReply(this.replyWithoutData(req, result), release);
    }
  }

  /**
   * Without structured replies, a simple reply. With them, errors go out as error chunks with their
   * message, READ (of 0 bytes here) must not have a simple reply, and other successes keep the
   * simple reply the spec allows for replies without payload.
   */
  private replyWithoutData(req: NbdRequest, result: CommandResult): Buffer {
    if (!this.structured) return encodeSimpleReply(result.error, req.handle);
    if (result.error !== NBD_OK) return encodeErrorChunk(req.handle, result.error, result.message ?? defaultErrorMessage(result.error));
    if (result.chunk) return result.chunk;
    if (req.type === NBD_CMD_READ) return encodeNoneChunk(req.handle);
    return encodeSimpleReply(NBD_OK, req.handle);
  }

  /**
   * READ, and WRITE without FUA, in range: positional I/O on the file descriptor with callbacks,
   * so a request costs one thread-pool job and no promise (random 4 KiB I/O spends most of its
   * CPU per request outside the I/O itself). Returns false for everything else, which takes the
   * general path of `execute`; `done` is called exactly once when it returns true.
   */
  private startFastIo(exp: OpenExport, req: NbdRequest, payload: Buffer[] | undefined, done: (result: CommandResult) => void): boolean {
    const { spec, file } = exp;
    if (this.closed || req.length > requestBytesMax || req.offset + BigInt(req.length) > BigInt(spec.sizeBytes)) return false;
    const offset = Number(req.offset);
    const failed = (err: Error): void => {
      this.log(`nbd[${this.id}]: I/O error on ${spec.path} (cmd ${req.type}): ${errorMessage(err)}`);
      done({ error: errnoToNbd(err), message: ioErrorMessage(req, err) });
    };
    // A structured READ of 0 bytes has no data chunk (its reply is NBD_REPLY_TYPE_NONE): general path.
    if (req.type === NBD_CMD_READ && (req.length > 0 || !this.structured)) {
      const headerBytes = this.readHeaderBytes;
      const reply = replyPool.get(headerBytes + req.length);
      readFullyAt(file.fd, reply, headerBytes, offset, (err, end) => {
        if (err) {
          replyPool.put(reply);
          return failed(err);
        }
        // Past the end of a short backing file the volume reads as zeros.
        reply.fill(0, end);
        done({ error: NBD_OK, reply });
      });
      return true;
    }
    if (req.type === NBD_CMD_WRITE && !spec.readOnly && (req.flags & NBD_CMD_FLAG_FUA) === 0 && payload) {
      writevFullyAt(file.fd, payload, offset, (err) => (err ? failed(err) : done({ error: NBD_OK })));
      return true;
    }
    return false;
  }

  /**
   * Replies written in one turn of the event loop leave in one writev (the socket is corked until
   * the loop has run every I/O completion that was ready): fewer syscalls and TCP segments than one
   * write per reply, and no added wait, since the uncork runs before the loop sleeps again.
   */
  private writeReply(buf: Buffer, cb: () => void): void {
    if (!this.corked && !this.socket.destroyed) {
      this.corked = true;
      this.socket.cork();
      setImmediate(this.uncork);
    }
    this.write(buf, cb);
  }

  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };

  private wakeIoWaiters(): void {
    const waiters = this.ioWaiters;
    this.ioWaiters = [];
    for (const wake of waiters) wake();
  }

  /** Resolves once no file I/O of this connection is running (the file may then be closed). */
  private ioSettled(): Promise<void> {
    return this.ioPending === 0 ? Promise.resolve() : new Promise<void>((resolve) => this.ioWaiters.push(resolve));
  }

  /** Never rejects: every failure becomes an NBD error code. */
  private async execute(exp: OpenExport, req: NbdRequest, payload: Buffer[] | undefined): Promise<CommandResult> {
    const { spec, file } = exp;
    const inRange = (): boolean => req.offset + BigInt(req.length) <= BigInt(spec.sizeBytes);
    const offset = Number(req.offset); // Only used after inRange(), so it is a safe integer.
    // The client is gone: nobody reads the reply, so do not spend memory or I/O on it.
    if (this.closed) return { error: NBD_EIO };
    try {
      switch (req.type) {
        case NBD_CMD_READ: {
          if (req.length > requestBytesMax) return { error: NBD_EINVAL, message: `read of ${req.length} bytes exceeds the maximum block size (${requestBytesMax}): split it` };
          if (!inRange()) return { error: NBD_EINVAL, message: pastEndMessage(req, spec.sizeBytes) };
          if (req.length === 0 && this.structured) return { error: NBD_OK };
          const reply = Buffer.allocUnsafe(this.readHeaderBytes + req.length);
          const buf = reply.subarray(this.readHeaderBytes);
          const got = await readFully(file, buf, offset);
          // Past the end of a short backing file the volume reads as zeros.
          buf.fill(0, got);
          return { error: NBD_OK, reply };
        }
        case NBD_CMD_WRITE: {
          if (spec.readOnly) return { error: NBD_EPERM }; // the message: defaultErrorMessage
          if (!inRange()) return { error: NBD_EINVAL, message: pastEndMessage(req, spec.sizeBytes) };
          await new Promise<void>((resolve, reject) => writevFullyAt(file.fd, payload ?? [], offset, (err) => (err ? reject(err) : resolve())));
          if (req.flags & NBD_CMD_FLAG_FUA) await file.datasync();
          return { error: NBD_OK };
        }
        case NBD_CMD_FLUSH: {
          if (!spec.readOnly) await file.datasync();
          return { error: NBD_OK };
        }
        case NBD_CMD_WRITE_ZEROES: {
          if (spec.readOnly) return { error: NBD_EPERM }; // the message: defaultErrorMessage
          // We cannot promise "fast" zeroing (not advertised either).
          if (req.flags & NBD_CMD_FLAG_FAST_ZERO) return { error: NBD_ENOTSUP, message: 'fast zeroing is not supported (NBD_FLAG_SEND_FAST_ZERO is not advertised)' };
          if (!inRange()) return { error: NBD_EINVAL, message: pastEndMessage(req, spec.sizeBytes) };
          await this.writeZeroes(file, offset, req.length, (req.flags & NBD_CMD_FLAG_NO_HOLE) !== 0);
          if (req.flags & NBD_CMD_FLAG_FUA) await file.datasync();
          return { error: NBD_OK };
        }
        case NBD_CMD_BLOCK_STATUS:
          return await this.blockStatusOf(exp, req);
        default:
          // TRIM and CACHE are not advertised; anything else is unknown.
          return { error: NBD_EINVAL, message: `command ${req.type} is not supported by this server` };
      }
    } catch (err) {
      if (err instanceof ConnectionClosedError) return { error: NBD_EIO };
      this.log(`nbd[${this.id}]: I/O error on ${spec.path} (cmd ${req.type}): ${errorMessage(err)}`);
      return { error: errnoToNbd(err), message: ioErrorMessage(req, err) };
    }
  }

  /**
   * NBD_CMD_BLOCK_STATUS for base:allocation: holes (NBD_STATE_HOLE | NBD_STATE_ZERO) and data (0)
   * of the volume file from the request's offset, at most blockStatusExtentsMax descriptors (one with
   * REQ_ONE) and never beyond the request's length. If the holes cannot be found, the range is
   * reported as data, which the spec allows for errors that are not the client's.
   */
  private async blockStatusOf(exp: OpenExport, req: NbdRequest): Promise<CommandResult> {
    const { spec, file } = exp;
    const probe = this.context.extents;
    if (!this.blockStatus || !probe) {
      return { error: NBD_EINVAL, message: `no metadata context is active: send NBD_OPT_SET_META_CONTEXT with "${BASE_ALLOCATION}" for this export before NBD_OPT_GO` };
    }
    const unknownFlags = req.flags & ~(NBD_CMD_FLAG_REQ_ONE | NBD_CMD_FLAG_FUA);
    if (unknownFlags !== 0) return { error: NBD_EINVAL, message: `flags 0x${unknownFlags.toString(16)} are not valid for NBD_CMD_BLOCK_STATUS (only REQ_ONE)` };
    if (req.length === 0) return { error: NBD_EINVAL, message: 'NBD_CMD_BLOCK_STATUS of 0 bytes: give a length' };
    if (req.offset + BigInt(req.length) > BigInt(spec.sizeBytes)) return { error: NBD_EINVAL, message: pastEndMessage(req, spec.sizeBytes) };
    const offset = Number(req.offset);
    const reqOne = (req.flags & NBD_CMD_FLAG_REQ_ONE) !== 0;
    let descriptors: Array<{ length: number; flags: number }>;
    try {
      const extents = await probe.fileExtents(file.fd, offset, req.length, reqOne ? 1 : blockStatusExtentsMax);
      descriptors = extents.filter((e) => e.length > 0).map((e) => ({ length: e.length, flags: e.hole ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0 }));
    } catch (err) {
      this.log(`nbd[${this.id}]: cannot find the holes of ${spec.path} (block status at ${offset}): ${errorMessage(err)}; reporting data`);
      descriptors = [];
    }
    if (descriptors.length === 0) descriptors = [{ length: req.length, flags: 0 }];
    return { error: NBD_OK, chunk: encodeBlockStatusChunk(req.handle, BASE_ALLOCATION_ID, descriptors) };
  }

  /**
   * Zero a range in bounded chunks. Unless the client insists on allocation
   * (NO_HOLE), chunks that already read as zero are skipped: reading a hole is
   * cheap and this keeps sparse files sparse when clients (qemu-img convert,
   * nbdcopy) zero a whole fresh disk.
   */
  private async writeZeroes(file: FileHandle, offset: number, length: number, allocate: boolean): Promise<void> {
    const scratch = allocate ? undefined : Buffer.allocUnsafe(Math.min(length, zeroChunkBytes));
    for (let done = 0; done < length; ) {
      if (this.closed) throw new ConnectionClosedError();
      const n = Math.min(zeroChunkBytes, length - done);
      const position = offset + done;
      let needWrite = true;
      if (scratch) {
        const view = scratch.subarray(0, n);
        const got = await readFully(file, view, position);
        // Bytes beyond EOF already read as zero, so only the part read matters.
        needWrite = !view.subarray(0, got).equals(zeroChunk.subarray(0, got));
      }
      if (needWrite) await writeFully(file, zeroChunk.subarray(0, n), position);
      done += n;
    }
  }
}

export class NbdServer {
  private readonly server: net.Server;
  private readonly connections = new Set<NbdConnection>();
  private readonly connectionRuns = new Set<Promise<void>>();
  private readonly connectionsMax: number;
  private readonly connectionsPerSourceMax: number;
  /** Last refusal logged per source address, and how many were not logged since. */
  private readonly refusalsLogged = new Map<string, { atMs: number; unlogged: number }>();
  private readonly handshakesMax: number;
  private readonly handshakesPerSourceMax: number;
  private readonly budget: ByteBudget;
  private readonly extents: ExtentProbe | null;
  private readonly log: (msg: string) => void;
  private nextConnectionId = 1;
  private stopping = false;

  constructor(private readonly options: NbdServerOptions) {
    this.connectionsMax = options.connectionsMax ?? connectionsMaxDefault;
    this.connectionsPerSourceMax = options.connectionsPerSourceMax ?? connectionsPerSourceMaxDefault;
    this.handshakesMax = options.handshakesMax ?? handshakesMaxDefault;
    this.handshakesPerSourceMax = options.handshakesPerSourceMax ?? handshakesPerSourceMaxDefault;
    this.budget = new ByteBudget(options.serverInFlightBytesMax ?? serverInFlightBytesMaxDefault);
    this.extents = options.extents !== undefined ? options.extents : extentProbe();
    this.log = options.log ?? (() => {});
    this.server = net.createServer((socket) => this.onConnection(socket));
    // Accept-time errors (e.g. EMFILE) must not crash the process.
    this.server.on('error', (err) => this.log(`nbd: server error: ${err.message}`));
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Bytes of request payloads and replies held right now by all connections. */
  get inFlightBytes(): number {
    return this.budget.used;
  }

  get tlsRequired(): boolean {
    return this.options.tls !== undefined;
  }

  start(): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen({ host: this.options.host, port: this.options.port }, () => {
        this.server.off('error', onError);
        const address = this.server.address();
        if (address === null || typeof address === 'string') {
          reject(new Error('nbd: unexpected listen address'));
          return;
        }
        this.log(`nbd: listening on ${address.address}:${address.port}${this.options.tls ? ' (TLS-PSK required)' : ''}`);
        resolve({ host: address.address, port: address.port });
      });
    });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const closed = new Promise<void>((resolve) => {
      if (!this.server.listening) resolve();
      else this.server.close(() => resolve());
    });
    for (const conn of this.connections) conn.destroy();
    await Promise.allSettled([...this.connectionRuns]);
    await closed;
  }

  /** Close open connections to one export name (used when a volume is detached/deleted). */
  disconnectExport(exportName: string): void {
    for (const conn of this.connections) {
      if (conn.exportName === exportName) {
        this.log(`nbd: disconnecting client of a withdrawn export`);
        conn.destroy();
      }
    }
  }

  /** Close the connections opened through one grant (its export was revoked). */
  disconnectGrant(grantId: string): void {
    for (const conn of this.connections) {
      if (conn.grantId === grantId) {
        this.log(`nbd: disconnecting a client of revoked export ${grantId.slice(0, 12)}`);
        conn.destroy();
      }
    }
  }

  private onConnection(socket: net.Socket): void {
    socket.on('error', () => {});
    if (this.stopping) {
      socket.destroy();
      return;
    }
    // Negotiating clients hold a bounded number of slots: when full, the oldest from this source
    // (else the oldest overall) makes room, so idle sockets cannot lock real consumers out.
    const source = socket.remoteAddress ?? 'unknown';
    const handshaking = [...this.connections].filter((c) => c.handshaking);
    const fromSource = handshaking.filter((c) => c.source === source);
    const evict = fromSource.length >= this.handshakesPerSourceMax ? fromSource[0] : handshaking.length >= this.handshakesMax ? handshaking[0] : undefined;
    if (evict) {
      this.log(`nbd: evicting a client of ${evict.source} still negotiating after ${Date.now() - evict.startedAtMs} ms (handshake slots full)`);
      evict.destroy();
    }
    socket.setNoDelay(true);
    const conn = new NbdConnection(socket, this.nextConnectionId++, {
      resolveExport: this.options.resolveExport,
      tls: this.options.tls,
      budget: this.budget,
      handshakeTimeoutMs: this.options.handshakeTimeoutMs ?? handshakeTimeoutMs,
      extents: this.extents,
      admit: (candidate) => this.refusal(candidate),
      onEstablished: (established) => this.refusal(established) === null,
      log: this.log,
    });
    this.connections.add(conn);
    const run = conn
      .run()
      .catch((err: unknown) => this.log(`nbd: connection failed: ${errorMessage(err)}`))
      .finally(() => {
        this.connections.delete(conn);
        this.connectionRuns.delete(run);
      });
    this.connectionRuns.add(run);
  }

  /** Why `conn` may not become an established connection (server-wide or per-source limit), logged; null when it may. */
  private refusal(conn: NbdConnection): string | null {
    const open = [...this.connections].filter((c) => !c.handshaking && c !== conn);
    const fromSource = open.filter((c) => c.source === conn.source).length;
    let reason: string | null = null;
    if (open.length >= this.connectionsMax) {
      reason = `the server has ${open.length} connections open, its limit (nbd_connections_max = ${this.connectionsMax})`;
    } else if (fromSource >= this.connectionsPerSourceMax) {
      reason = `${conn.source} has ${fromSource} connections open, the limit per source address (nbd_connections_per_source_max = ${this.connectionsPerSourceMax})`;
    }
    if (reason !== null) this.logRefusal(conn.source, reason);
    return reason;
  }

  /** One line per source per refusalLogIntervalMs, so a client retrying in a loop cannot flood the log. */
  private logRefusal(source: string, reason: string): void {
    const now = Date.now();
    const last = this.refusalsLogged.get(source);
    if (last && now - last.atMs < refusalLogIntervalMs) {
      last.unlogged++;
      return;
    }
    const more = last && last.unlogged > 0 ? ` (${last.unlogged} more refused since the last line)` : '';
    this.log(`nbd: refusing a connection from ${source}: ${reason}${more}; close connections or raise the limit`);
    if (this.refusalsLogged.size > 1024) this.refusalsLogged.clear();
    this.refusalsLogged.set(source, { atMs: now, unlogged: 0 });
  }
}
