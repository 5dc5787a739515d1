/**
 * Where a backup's time goes: each phase's wall time (the union of its calls' intervals, so calls
 * in flight together count once) and how many calls it made. Phases may overlap one another (reads
 * and writes of an incremental run side by side), so their sum can exceed the backup's time.
 */
export interface PhaseTiming {
  name: string;
  /** Wall time covered by at least one call of the phase. */
  ms: number;
  calls: number;
}

export class Phases {
  private readonly started: number;
  private readonly spans = new Map<string, { calls: number; intervals: [number, number][] }>();

  /** `clockMs`: a monotonic clock in milliseconds (injectable for tests). */
  constructor(private readonly clockMs: () => number = () => performance.now()) {
    this.started = clockMs();
  }

  /** Runs fn and records its interval under `name`. */
  async time<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const t0 = this.clockMs();
    try {
      return await fn();
    } finally {
      let span = this.spans.get(name);
      if (!span) this.spans.set(name, (span = { calls: 0, intervals: [] }));
      span.calls++;
      span.intervals.push([t0, this.clockMs()]);
    }
  }

  /** The phases in order of first start, with the total wall time since this object was made. */
  report(): { totalMs: number; phases: PhaseTiming[] } {
    const phases = [...this.spans.entries()]
      .map(([name, span]) => ({ name, calls: span.calls, ms: unionMs(span.intervals), first: Math.min(...span.intervals.map(([a]) => a)) }))
      .sort((a, b) => a.first - b.first)
      .map(({ name, calls, ms }) => ({ name, calls, ms }));
    return { totalMs: this.clockMs() - this.started, phases };
  }
}

function unionMs(intervals: [number, number][]): number {
  const sorted = [...intervals].sort((a, b) => a[0] - b[0]);
  let total = 0;
  let end = -Infinity;
  for (const [a, b] of sorted) {
    if (b <= end) continue;
    total += b - Math.max(a, end);
    end = b;
  }
  return total;
}

/** One line: `name 12 ms (3 calls), ...`. */
export function formatPhases(report: { totalMs: number; phases: PhaseTiming[] }): string {
  const parts = report.phases.map((p) => `${p.name} ${p.ms.toFixed(0)} ms${p.calls > 1 ? ` (${p.calls} calls)` : ''}`);
  return `${report.totalMs.toFixed(0)} ms: ${parts.join(', ')}`;
}
