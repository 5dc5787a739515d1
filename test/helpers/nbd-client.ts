/**
 * A raw NBD client for tests: requests are written as given (pipelined, split, malformed if the
 * test wants), replies read in order of arrival. `connectExport` does the fixed-newstyle handshake
 * up to NBD_OPT_GO, optionally with structured replies and metadata contexts; the methods below
 * let a test drive every step itself.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  NBD_CMD_DISC,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_IHAVEOPT,
  NBD_MAGIC,
  NBD_OPTION_REPLY_MAGIC,
  NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REPLY_FLAG_DONE,
  NBD_REP_ACK,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  encodeRequestHeader,
} from '../../src/nbd/protocol.ts';

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

/** One reply message: a simple reply (its data read only when asked), or one structured chunk. */
export interface ReplyMessage {
  structured: boolean;
  handle: number;
  /** Simple reply: the error field. Structured: 0, or the errno of an error chunk. */
  error: number;
  /** Structured only. */
  flags: number;
  type: number;
  /** Structured: the whole payload. Simple: empty. */
  payload: Buffer;
  /** Error chunks: their message. */
  message?: string;
}

export interface ConnectExportOptions {
  /** Source address (any of 127/8 on Linux), for per-source limits. */
  from?: string;
  /** Negotiate NBD_OPT_STRUCTURED_REPLY (asserted acknowledged). */
  structured?: boolean;
  /** NBD_OPT_SET_META_CONTEXT queries (needs `structured`); the contexts the server selected are in `contexts`. */
  metaContexts?: string[];
}

export class NbdTestClient {
  private chunks: Buffer[] = [];
  private bytes = 0;
  private wake: (() => void) | undefined;
  closed = false;
  readonly closedPromise: Promise<void>;
  /** Selected metadata contexts by name, with the id the server gave them. */
  readonly contexts = new Map<string, number>();
  /** Export size and transmission flags, once NBD_OPT_GO succeeded through `go`. */
  exportInfo: { size: bigint; flags: number } | undefined;

  private constructor(readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (c: Buffer) => {
      this.chunks.push(c);
      this.bytes += c.length;
      this.wake?.();
    });
    socket.on('error', () => {});
    this.closedPromise = new Promise((resolve) =>
      socket.on('close', () => {
        this.closed = true;
        this.wake?.();
        resolve();
      }),
    );
  }

  /** A TCP connection, nothing read or sent yet. `from`: the source address. */
  static connect(port: number, from?: string): Promise<NbdTestClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port, ...(from ? { localAddress: from } : {}) }, () => resolve(new NbdTestClient(s)));
      s.once('error', reject);
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Exactly n bytes; rejects if the connection closes first. */
  async read(n: number): Promise<Buffer> {
    while (this.bytes < n) {
      if (this.closed) throw new Error(`connection closed while waiting for ${n} bytes`);
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
    this.bytes -= n;
    const first = this.chunks[0];
    if (first !== undefined && first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const all = Buffer.concat(this.chunks);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    return all.subarray(0, n);
  }

  write(buf: Buffer): void {
    this.socket.write(buf);
  }

  close(): void {
    this.socket.destroy();
  }

  // ------------------------------------------------------------ handshake --

  /** Reads the greeting and sends client flags; returns the handshake flags. */
  async greet(clientFlags = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES): Promise<number> {
    const greeting = await this.read(18);
    assert.equal(greeting.readBigUInt64BE(0), NBD_MAGIC);
    assert.equal(greeting.readBigUInt64BE(8), NBD_IHAVEOPT);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlags);
    this.write(flags);
    return greeting.readUInt16BE(16);
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0)): void {
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(NBD_IHAVEOPT, 0);
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(data.length, 12);
    this.write(Buffer.concat([header, data]));
  }

  async readOptionReply(): Promise<OptionReply> {
    const header = await this.read(20);
    assert.equal(header.readBigUInt64BE(0), NBD_OPTION_REPLY_MAGIC);
    const length = header.readUInt32BE(16);
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data: await this.read(length) };
  }

  /** Sends an option and reads its replies up to the final one (ACK or an error): all of them, in order. */
  async option(option: number, data?: Buffer): Promise<OptionReply[]> {
    this.sendOption(option, data);
    const replies: OptionReply[] = [];
    for (;;) {
      const reply = await this.readOptionReply();
      assert.equal(reply.option, option);
      replies.push(reply);
      if (reply.type === NBD_REP_ACK || reply.type >= 0x80000000) return replies;
    }
  }

  /** NBD_OPT_GO; resolves with size and transmission flags, or the error reply type. */
  async go(name: string): Promise<{ size: bigint; flags: number } | { errorType: number }> {
    const replies = await this.option(NBD_OPT_GO, goData(name));
    const last = replies[replies.length - 1]!;
    if (last.type !== NBD_REP_ACK) return { errorType: last.type };
    const info = replies.find((r) => r.type === NBD_REP_INFO && r.data.readUInt16BE(0) === 0);
    assert.ok(info, 'GO acked without NBD_INFO_EXPORT');
    this.exportInfo = { size: info.data.readBigUInt64BE(2), flags: info.data.readUInt16BE(10) };
    return this.exportInfo;
  }

  /** Greeting, then NBD_OPT_GO: the final reply type (NBD_REP_ACK, or the error). */
  async negotiate(name: string): Promise<number> {
    await this.greet();
    const result = await this.go(name);
    return 'errorType' in result ? result.errorType : NBD_REP_ACK;
  }

  /** Greeting and NBD_OPT_GO, which must succeed. */
  async connectExport(name: string): Promise<{ size: bigint; flags: number }> {
    await this.greet();
    const result = await this.go(name);
    if ('errorType' in result) throw new Error(`GO refused: 0x${result.errorType.toString(16)}`);
    return result;
  }

  // --------------------------------------------------------- transmission --

  static request(type: number, handle: number, offset: number | bigint, length: number, flags = 0): Buffer {
    const h = Buffer.alloc(8);
    h.writeUInt32BE(handle, 4);
    return encodeRequestHeader({ flags, type, handle: h, offset: BigInt(offset), length });
  }

  request(type: number, handle: number, offset: number | bigint, length: number, flags = 0, payload?: Buffer): Buffer {
    const header = NbdTestClient.request(type, handle, offset, length, flags);
    return payload ? Buffer.concat([header, payload]) : header;
  }

  /** One simple reply; `dataBytes` follows it when it is a successful read. */
  async reply(dataBytes: (handle: number) => number): Promise<{ handle: number; error: number; data: Buffer }> {
    const header = await this.read(16);
    assert.equal(header.readUInt32BE(0), NBD_SIMPLE_REPLY_MAGIC);
    const handle = header.readUInt32BE(12);
    const error = header.readUInt32BE(4);
    return { handle, error, data: await this.read(error === 0 ? dataBytes(handle) : 0) };
  }

  /** Like `reply`, with the data lengths as a map of handle to bytes. */
  readReply(readLengths: Map<number, number> = new Map()): Promise<{ handle: number; error: number; data: Buffer }> {
    return this.reply((h) => readLengths.get(h) ?? 0);
  }

  /** The next reply message: a structured chunk (payload read), or a simple reply header (no data read). */
  async message(): Promise<ReplyMessage> {
    const magic = (await this.read(4)).readUInt32BE(0);
    if (magic === NBD_SIMPLE_REPLY_MAGIC) {
      const rest = await this.read(12);
      return { structured: false, handle: rest.readUInt32BE(8), error: rest.readUInt32BE(0), flags: 0, type: 0, payload: Buffer.alloc(0) };
    }
    assert.equal(magic, NBD_STRUCTURED_REPLY_MAGIC, `unexpected reply magic 0x${magic.toString(16)}`);
    const rest = await this.read(16);
    const flags = rest.readUInt16BE(0);
    const type = rest.readUInt16BE(2);
    const payload = await this.read(rest.readUInt32BE(12));
    const message: ReplyMessage = { structured: true, handle: rest.readUInt32BE(8), error: 0, flags, type, payload };
    if (type & 0x8000) {
      assert.ok(payload.length >= 6, 'error chunk shorter than 6 bytes');
      message.error = payload.readUInt32BE(0);
      const textBytes = payload.readUInt16BE(4);
      assert.ok(textBytes <= payload.length - 6, 'error message longer than its chunk');
      message.message = payload.toString('utf8', 6, 6 + textBytes);
    }
    return message;
  }

  /** All chunks of one structured reply (up to NBD_REPLY_FLAG_DONE); assumes no other reply interleaves. */
  async structuredReply(): Promise<ReplyMessage[]> {
    const out: ReplyMessage[] = [];
    for (;;) {
      const m = await this.message();
      assert.ok(m.structured, 'a simple reply where a structured one was expected');
      out.push(m);
      if (m.flags & NBD_REPLY_FLAG_DONE) return out;
    }
  }

  async disconnect(): Promise<void> {
    this.socket.write(NbdTestClient.request(NBD_CMD_DISC, 0, 0, 0));
    await new Promise<void>((resolve) => (this.closed ? resolve() : this.socket.once('close', () => resolve())));
  }
}

/** NBD_OPT_GO / NBD_OPT_INFO data: name, no information requests. */
export function goData(name: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const data = Buffer.alloc(4 + nameBytes.length + 2);
  data.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(data, 4);
  return data;
}

/** NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data: export name and queries. */
export function metaContextData(name: string, queries: string[]): Buffer {
  const parts: Buffer[] = [];
  const nameBytes = Buffer.from(name, 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(nameBytes.length);
  parts.push(head, nameBytes);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(queries.length);
  parts.push(count);
  for (const q of queries) {
    const qb = Buffer.from(q, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(qb.length);
    parts.push(len, qb);
  }
  return Buffer.concat(parts);
}

/**
 * Connects, negotiates what `options` ask, and opens export `name` with NBD_OPT_GO (asserted to
 * succeed). The client is then in the transmission phase.
 */
export async function connectExport(port: number, name: string, options: ConnectExportOptions = {}): Promise<NbdTestClient> {
  const c = await NbdTestClient.connect(port, options.from);
  await c.greet();
  if (options.structured) {
    const [reply] = await c.option(NBD_OPT_STRUCTURED_REPLY);
    assert.equal(reply!.type, NBD_REP_ACK, `structured replies refused: 0x${reply!.type.toString(16)} ${reply!.data.toString()}`);
  }
  if (options.metaContexts) {
    for (const r of await c.option(NBD_OPT_SET_META_CONTEXT, metaContextData(name, options.metaContexts))) {
      if (r.type === NBD_REP_META_CONTEXT) c.contexts.set(r.data.toString('utf8', 4), r.data.readUInt32BE(0));
      else assert.equal(r.type, NBD_REP_ACK, `NBD_OPT_SET_META_CONTEXT refused: 0x${r.type.toString(16)} ${r.data.toString()}`);
    }
  }
  const result = await c.go(name);
  assert.ok(!('errorType' in result), `GO refused: 0x${'errorType' in result ? result.errorType.toString(16) : ''}`);
  return c;
}
