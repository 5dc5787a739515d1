/**
 * NBD (Network Block Device) wire-protocol constants and small codecs.
 *
 * Reference: https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md
 * The server speaks the fixed-newstyle handshake, simple replies, and structured
 * replies with the `base:allocation` metadata context for clients that ask;
 * constants for features we refuse (extended headers) are kept so that the
 * refusals are explicit rather than falling into a generic "unknown" path.
 */

/** "NBDMAGIC": first 8 bytes the server sends. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** "IHAVEOPT": newstyle marker, also prefixes every client option. */
export const NBD_IHAVEOPT = 0x49484156454f5054n;
/** Prefix of every option reply the server sends during the handshake. */
export const NBD_OPTION_REPLY_MAGIC = 0x0003e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// Handshake flags (server -> client, 16 bits).
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;

// Client flags (client -> server, 32 bits).
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;
export const NBD_CLIENT_FLAGS_KNOWN = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

// Options.
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// Option reply types. Errors have bit 31 set.
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
export const NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR + 4;
export const NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5;
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
export const NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR + 8;
export const NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;

// Information types carried in NBD_REP_INFO.
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// Transmission flags (16 bits).
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;

// Commands.
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

// Command flags.
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

// Structured reply chunk flags and types.
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

/** The one metadata context the server offers, and the id it gives it. */
export const BASE_ALLOCATION = 'base:allocation';
export const BASE_ALLOCATION_ID = 1;
// base:allocation status flags.
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;

// Error numbers in simple replies (fixed by the protocol, not the host's errno).
export const NBD_OK = 0;
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/** Size of the fixed part of a transmission request. */
export const REQUEST_HEADER_BYTES = 28;
/** Size of a simple reply header. */
export const SIMPLE_REPLY_HEADER_BYTES = 16;
/** Size of a structured reply chunk header (magic, flags, type, handle, length). */
export const STRUCTURED_REPLY_HEADER_BYTES = 20;
/** A READ's OFFSET_DATA chunk: the chunk header and the 64-bit offset before the data. */
export const OFFSET_DATA_HEADER_BYTES = STRUCTURED_REPLY_HEADER_BYTES + 8;
/** Longest message in an error chunk (protocol strings are at most 4096 bytes). */
export const ERROR_MESSAGE_BYTES_MAX = 4096;
/** Size of an option header after the IHAVEOPT magic: option (4) + length (4). */
export const OPTION_HEADER_BYTES = 16;

export interface NbdRequest {
  flags: number;
  type: number;
  /** Opaque 8-byte cookie echoed back in the reply; kept as raw bytes. */
  handle: Buffer;
  /** Byte offset; bigint because the wire field is 64-bit. */
  offset: bigint;
  length: number;
}

/** Parse a 28-byte request header. Returns undefined if the magic is wrong. */
export function parseRequestHeader(buf: Buffer): NbdRequest | undefined {
  if (buf.length < REQUEST_HEADER_BYTES || buf.readUInt32BE(0) !== NBD_REQUEST_MAGIC) return undefined;
  return {
    flags: buf.readUInt16BE(4),
    type: buf.readUInt16BE(6),
    // Copy: the source buffer may be a view into a larger socket chunk.
    handle: Buffer.from(buf.subarray(8, 16)),
    offset: buf.readBigUInt64BE(16),
    length: buf.readUInt32BE(24),
  };
}

export function encodeRequestHeader(req: NbdRequest): Buffer {
  const buf = Buffer.alloc(REQUEST_HEADER_BYTES);
  buf.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  buf.writeUInt16BE(req.flags, 4);
  buf.writeUInt16BE(req.type, 6);
  req.handle.copy(buf, 8, 0, 8);
  buf.writeBigUInt64BE(req.offset, 16);
  buf.writeUInt32BE(req.length, 24);
  return buf;
}

export function encodeSimpleReply(error: number, handle: Buffer): Buffer {
  const buf = Buffer.alloc(SIMPLE_REPLY_HEADER_BYTES);
  buf.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  buf.writeUInt32BE(error, 4);
  handle.copy(buf, 8, 0, 8);
  return buf;
}

export function encodeOptionReply(option: number, replyType: number, data?: Buffer): Buffer {
  const dataBytes = data?.length ?? 0;
  const buf = Buffer.alloc(20 + dataBytes);
  buf.writeBigUInt64BE(NBD_OPTION_REPLY_MAGIC, 0);
  buf.writeUInt32BE(option, 8);
  buf.writeUInt32BE(replyType, 12);
  buf.writeUInt32BE(dataBytes, 16);
  if (data) data.copy(buf, 20);
  return buf;
}

/** Payload of NBD_REP_INFO / NBD_INFO_EXPORT. */
export function encodeInfoExport(sizeBytes: number, transmissionFlags: number): Buffer {
  const buf = Buffer.alloc(12);
  buf.writeUInt16BE(NBD_INFO_EXPORT, 0);
  buf.writeBigUInt64BE(BigInt(sizeBytes), 2);
  buf.writeUInt16BE(transmissionFlags, 10);
  return buf;
}

/** Payload of NBD_REP_INFO / NBD_INFO_BLOCK_SIZE. */
export function encodeInfoBlockSize(minimumBytes: number, preferredBytes: number, maximumBytes: number): Buffer {
  const buf = Buffer.alloc(14);
  buf.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  buf.writeUInt32BE(minimumBytes, 2);
  buf.writeUInt32BE(preferredBytes, 6);
  buf.writeUInt32BE(maximumBytes, 10);
  return buf;
}

export interface GoOptionData {
  exportName: string;
  infoRequests: number[];
}

/**
 * Parse NBD_OPT_GO / NBD_OPT_INFO data: u32 name length, name, u16 count,
 * count x u16 info types. Returns undefined when the lengths are inconsistent.
 */
export function parseGoOptionData(data: Buffer): GoOptionData | undefined {
  if (data.length < 6) return undefined;
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > data.length - 6) return undefined;
  const exportName = data.toString('utf8', 4, 4 + nameBytes);
  const count = data.readUInt16BE(4 + nameBytes);
  if (data.length !== 4 + nameBytes + 2 + 2 * count) return undefined;
  const infoRequests: number[] = [];
  for (let i = 0; i < count; i++) infoRequests.push(data.readUInt16BE(4 + nameBytes + 2 + 2 * i));
  return { exportName, infoRequests };
}

/** Fills a structured reply chunk header at the start of `buf` (payload of `length` bytes follows). */
export function writeStructuredReplyHeader(buf: Buffer, flags: number, type: number, handle: Buffer, length: number): void {
  buf.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  buf.writeUInt16BE(flags, 4);
  buf.writeUInt16BE(type, 6);
  handle.copy(buf, 8, 0, 8);
  buf.writeUInt32BE(length, 16);
}

/** A final NBD_REPLY_TYPE_NONE chunk (success without payload). */
export function encodeNoneChunk(handle: Buffer): Buffer {
  const buf = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES);
  writeStructuredReplyHeader(buf, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, handle, 0);
  return buf;
}

/** A final NBD_REPLY_TYPE_ERROR chunk: the errno and a message for a human (cut to 4096 bytes). */
export function encodeErrorChunk(handle: Buffer, error: number, message: string): Buffer {
  let text = Buffer.from(message, 'utf8');
  if (text.length > ERROR_MESSAGE_BYTES_MAX) text = text.subarray(0, ERROR_MESSAGE_BYTES_MAX);
  const buf = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 6 + text.length);
  writeStructuredReplyHeader(buf, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, handle, 6 + text.length);
  buf.writeUInt32BE(error, STRUCTURED_REPLY_HEADER_BYTES);
  buf.writeUInt16BE(text.length, STRUCTURED_REPLY_HEADER_BYTES + 4);
  text.copy(buf, STRUCTURED_REPLY_HEADER_BYTES + 6);
  return buf;
}

/** A final NBD_REPLY_TYPE_BLOCK_STATUS chunk for one context: descriptors of (length, status flags). */
export function encodeBlockStatusChunk(handle: Buffer, contextId: number, descriptors: Array<{ length: number; flags: number }>): Buffer {
  const payload = 4 + 8 * descriptors.length;
  const buf = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + payload);
  writeStructuredReplyHeader(buf, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, handle, payload);
  buf.writeUInt32BE(contextId, STRUCTURED_REPLY_HEADER_BYTES);
  let at = STRUCTURED_REPLY_HEADER_BYTES + 4;
  for (const d of descriptors) {
    buf.writeUInt32BE(d.length, at);
    buf.writeUInt32BE(d.flags, at + 4);
    at += 8;
  }
  return buf;
}

/** Payload of NBD_REP_META_CONTEXT: context id and name. */
export function encodeMetaContext(contextId: number, name: string): Buffer {
  const text = Buffer.from(name, 'utf8');
  const buf = Buffer.alloc(4 + text.length);
  buf.writeUInt32BE(contextId, 0);
  text.copy(buf, 4);
  return buf;
}

export interface MetaContextOptionData {
  exportName: string;
  queries: string[];
}

/**
 * Parse NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data: u32 name length, name,
 * u32 query count, count x (u32 length, query). Returns undefined when the lengths are inconsistent.
 */
export function parseMetaContextOptionData(data: Buffer): MetaContextOptionData | undefined {
  if (data.length < 8) return undefined;
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > data.length - 8) return undefined;
  const exportName = data.toString('utf8', 4, 4 + nameBytes);
  let at = 4 + nameBytes;
  const count = data.readUInt32BE(at);
  at += 4;
  // Each query takes at least its 4-byte length: a count beyond that is a lie.
  if (count > (data.length - at) / 4) return undefined;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return undefined;
    const queryBytes = data.readUInt32BE(at);
    at += 4;
    if (queryBytes > data.length - at) return undefined;
    queries.push(data.toString('utf8', at, at + queryBytes));
    at += queryBytes;
  }
  if (at !== data.length) return undefined;
  return { exportName, queries };
}
