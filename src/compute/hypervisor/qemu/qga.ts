/**
 * A minimal QEMU guest agent client over the host end of the
 * org.qemu.guest_agent.0 channel (a unix socket QEMU serves). The agent has
 * no greeting and may hold stale replies from an earlier client, so each
 * conversation starts with `guest-sync-delimited` (a random id; the agent
 * answers after a 0xFF byte that resets any half-read JSON), then one command
 * at a time. Nothing in the guest listening is the ordinary "no agent" case:
 * every read has a timeout.
 */
import { randomInt } from 'node:crypto';
import net from 'node:net';

const replyBytesMax = 1024 * 1024;

export class QgaClient {
  private buffer = '';
  private waiter: (() => void) | null = null;
  private closedReason: string | null = null;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      if (this.buffer.length > replyBytesMax) this.buffer = this.buffer.slice(-replyBytesMax);
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closedReason ??= 'the channel closed';
      this.waiter?.();
    });
    socket.on('error', (err) => {
      this.closedReason = err.message;
    });
  }

  static connect(socketPath: string, options: { timeoutMs: number }): Promise<QgaClient> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection({ path: socketPath });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connecting to ${socketPath} timed out after ${options.timeoutMs} ms`));
      }, options.timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve(new QgaClient(socket));
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  /** guest-sync-delimited: drops whatever an earlier client left unread, then waits for our id. */
  async sync(timeoutMs: number): Promise<void> {
    const id = randomInt(1, 2 ** 31);
    this.buffer = '';
    this.socket.write(`${JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } })}\n`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = await this.readLine(deadline);
      const start = line.lastIndexOf('\xff');
      const reply = parse(start >= 0 ? line.slice(start + 1) : line);
      if (reply && reply['return'] === id) return;
    }
  }

  async execute<T = unknown>(command: string, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<T> {
    this.socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) })}\n`);
    const reply = parse(await this.readLine(Date.now() + timeoutMs));
    if (!reply) throw new Error(`the agent's reply to ${command} was not JSON`);
    if (reply['error']) {
      const error = reply['error'] as { class?: string; desc?: string };
      throw new Error(`${command}: ${error.class ?? 'error'}: ${error.desc ?? ''}`);
    }
    return reply['return'] as T;
  }

  close(): void {
    this.socket.destroy();
  }

  private async readLine(deadline: number): Promise<string> {
    for (;;) {
      const newline = this.buffer.indexOf('\n');
      if (newline >= 0) {
        const line = this.buffer.slice(0, newline);
        this.buffer = this.buffer.slice(newline + 1);
        if (line.trim() !== '') return line;
        continue;
      }
      if (this.closedReason) throw new Error(this.closedReason);
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0) throw new Error('no reply');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remainingMs);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = null;
    }
  }
}

function parse(text: string): Record<string, unknown> | null {
  try {
    const value = JSON.parse(text.trim()) as unknown;
    return value && typeof value === 'object' ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
