/**
 * `[DEFAULT] use_journal = true`: log entries sent to systemd-journald with structured fields, as
 * oslo.log's JournalHandler does (MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, LOGGER_NAME, LOGGER_LEVEL,
 * REQUEST_ID, USER_ID, PROJECT_ID), so `journalctl -u pumice REQUEST_ID=req-…` finds one request.
 *
 * Why the native protocol over a unix datagram socket, and this package: journald takes fields only
 * on its native socket (/run/systemd/journal/socket, one datagram per entry, sd_journal_sendv's wire
 * format). Its stream socket (/run/systemd/journal/stdout, what stderr under systemd is) keeps only
 * MESSAGE and a `<N>` priority prefix: no request id. `logger --journald` and `systemd-cat` are one
 * process per entry (or stream only). Node has no unix datagram sockets, so `unix-dgram` (the small
 * native addon hot-shots uses; a sendto(2) per entry, no libsystemd needed) sends them.
 *
 * A send never blocks the event loop: the socket is non-blocking, and an entry journald cannot take
 * now (its queue full) or at all (too big, journald gone) is written to stderr instead, which under
 * systemd reaches the journal by the stream socket, without its fields.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

/** Where journald listens for native-protocol entries (sd-journal's fixed path). */
export const journalSocketPath = '/run/systemd/journal/socket';
/** Longest MESSAGE sent; a longer one is cut (a datagram must fit in the socket's send buffer). */
export const journalMessageBytesMax = 48 * 1024;

/** syslog priorities of oslo.log's levels (JournalHandler's mapping). */
export const journalPriority = { DEBUG: 7, INFO: 6, WARNING: 4, ERROR: 3 } as const;

interface UnixDatagramSocket {
  send(buf: Buffer, offset: number, length: number, path: string, callback: (error?: Error) => void): void;
  close(): void;
  on(event: 'error', listener: (error: Error) => void): void;
}

/**
 * One entry in the native protocol: `KEY=value\n`, or for a value with a newline
 * `KEY\n`, its length as a little-endian 64-bit integer, the value and `\n`.
 * Keys are upper-cased; characters journald refuses in a field name become `_`.
 */
export function encodeJournalEntry(fields: Record<string, string>): Buffer {
  const parts: Buffer[] = [];
  for (const [key, value] of Object.entries(fields)) {
    const name = journalFieldName(key);
    if (!name) continue;
    if (!value.includes('\n')) {
      parts.push(Buffer.from(`${name}=${value}\n`));
      continue;
    }
    const data = Buffer.from(value);
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(data.length));
    parts.push(Buffer.from(`${name}\n`), length, data, Buffer.from('\n'));
  }
  return Buffer.concat(parts);
}

/** journald's rule: A–Z, 0–9 and `_`, not starting with `_` (trusted fields) or a digit, at most 64 characters. */
function journalFieldName(key: string): string | null {
  const name = key.toUpperCase().replace(/[^A-Z0-9_]/g, '_').replace(/^[_0-9]+/, '').slice(0, 64);
  return name.length > 0 ? name : null;
}

export interface JournalWriter {
  /** Sends one entry; false when journald did not take it (the caller writes the line elsewhere). */
  send(fields: Record<string, string>): boolean;
  close(): void;
}

/**
 * Opens a socket to journald. Throws, naming the fix, when journald does not listen here
 * (`use_journal = true` outside systemd): the operator asked for a log they would not get.
 */
export function openJournal(socketPath = journalSocketPath): JournalWriter {
  if (!existsSync(socketPath)) {
    throw new Error(`[DEFAULT] use_journal = true, but ${socketPath} does not exist: systemd-journald does not run here. Run Pumice under systemd, or set use_journal = false (log_file, or stderr)`);
  }
  const require = createRequire(import.meta.url);
  const { createSocket } = require('unix-dgram') as { createSocket(type: 'unix_dgram'): UnixDatagramSocket };
  const socket = createSocket('unix_dgram');
  // Errors come back from send's callback; an 'error' event without a listener would kill the process.
  socket.on('error', () => undefined);
  let open = true;
  return {
    send(fields) {
      if (!open) return false;
      const message = fields['MESSAGE'];
      if (message !== undefined && Buffer.byteLength(message) > journalMessageBytesMax) {
        fields = { ...fields, MESSAGE: Buffer.from(message).subarray(0, journalMessageBytesMax).toString() + ' [cut]' };
      }
      const entry = encodeJournalEntry(fields);
      let sent = false;
      // unix-dgram calls back synchronously: an error (ENOENT, EMSGSIZE) or 'congestion' (EAGAIN).
      socket.send(entry, 0, entry.length, socketPath, (error) => {
        sent = !error;
      });
      return sent;
    },
    close() {
      if (!open) return;
      open = false;
      socket.close();
    },
  };
}
