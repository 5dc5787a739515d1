/**
 * A byte progress bar for operator commands (`pumice image import`,
 * `pumice backup ...`): percent, bytes, throughput and ETA on one line that
 * redraws on a terminal, or a plain line per 10% when the output is a pipe or
 * a log file (so CI logs and `| tee` stay readable).
 */
import type { WriteStream } from 'node:tty';

export interface ProgressBarOptions {
  label: string;
  /** Null when the total is not known (e.g. a stream of unknown length). */
  totalBytes: number | null;
  stream?: NodeJS.WritableStream;
  /** Fewest milliseconds between two redraws on a terminal. */
  redrawMs?: number;
}

export interface ProgressBar {
  update(doneBytes: number): void;
  /** Final line with the average throughput; call once at the end. */
  finish(message?: string): void;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${(bytesPerSecond / 1e6).toFixed(1)} MB/s`;
}

function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  if (seconds < 60) return `${Math.ceil(seconds)}s`;
  return `${Math.floor(seconds / 60)}m${String(Math.ceil(seconds % 60)).padStart(2, '0')}s`;
}

export function createProgressBar(options: ProgressBarOptions): ProgressBar {
  const stream = options.stream ?? process.stderr;
  const tty = (stream as WriteStream).isTTY === true;
  const redrawMs = options.redrawMs ?? 200;
  const started = Date.now();
  let lastDraw = 0;
  let lastDecile = -1;
  let done = 0;

  const line = (): string => {
    const seconds = Math.max((Date.now() - started) / 1000, 0.001);
    const rate = done / seconds;
    const total = options.totalBytes;
    if (total === null || total <= 0) return `${options.label} ${formatBytes(done)} ${formatRate(rate)}`;
    const fraction = Math.min(done / total, 1);
    const width = 30;
    const filled = Math.round(fraction * width);
    const eta = rate > 0 ? (total - done) / rate : Infinity;
    return (
      `${options.label} [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ` +
      `${formatBytes(done)}/${formatBytes(total)} ${formatRate(rate)} ETA ${formatSeconds(eta)}`
    );
  };

  return {
    update(doneBytes: number): void {
      done = doneBytes;
      const now = Date.now();
      if (tty) {
        if (now - lastDraw < redrawMs) return;
        lastDraw = now;
        stream.write(`\r${line()}\x1b[K`);
        return;
      }
      const total = options.totalBytes;
      const decile = total && total > 0 ? Math.floor((Math.min(done / total, 1) * 100) / 10) : Math.floor(now / 10_000);
      if (decile === lastDecile) return;
      lastDecile = decile;
      stream.write(`${line()}\n`);
    },
    finish(message?: string): void {
      const seconds = Math.max((Date.now() - started) / 1000, 0.001);
      const summary = `${options.label} ${formatBytes(done)} in ${seconds.toFixed(1)} s (${formatRate(done / seconds)})${message ? `: ${message}` : ''}`;
      stream.write(tty ? `\r${summary}\x1b[K\n` : `${summary}\n`);
    },
  };
}
