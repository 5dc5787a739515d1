/**
 * The figures table printed at the end of bench/run-all.sh: reads the benchmarks' output (the
 * files given, or stdin), splits it into one section per benchmark at the `## … bench/NAME.ts`
 * lines run-all prints before each, takes the `name: value` lines each benchmark prints, and
 * prints one line per figure: what, Pumice, baseline, ratio, aim, met?. A figure whose benchmark
 * did not run (or printed nothing under that name) shows as "not run", so a renamed line shows up
 * here instead of silently dropping out. Any other `*ratio*` line is listed after the table.
 *
 *   node --import tsx bench/summary.ts RUN-ALL-OUTPUT... | bench/run-all.sh's output on stdin
 */
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';

/** Where a value comes from: a `name: value` line of one benchmark, or a regular expression whose first group is the value. */
type Pick = { key: string } | { line: RegExp };

interface Figure {
  what: string;
  /** The benchmark's file name without `.ts` (the section it prints in). */
  bench: string;
  pumice: Pick;
  baseline?: Pick;
  /** Printed ratio; without it the ratio is Pumice / baseline, when both are numbers. */
  ratio?: Pick;
  /** The aim: the ratio (by default), or the figure `of` picks, compared with `value`. */
  aim?: { op: '>=' | '<='; value: number; of?: Pick; text?: string };
}

/** Issue 14's rows first (data path vs the tool it replaces), then the other figures with an aim. */
export const figures: Figure[] = [
  ...(['seq_read_1m', 'seq_write_1m', 'rand_read_4k', 'rand_write_4k'] as const).map((w) => ({
    what: `NBD export ${w.replaceAll('_', ' ')} (qd 16) vs qemu-nbd`,
    bench: 'nbd-export',
    pumice: { key: `${w}_pumice` },
    baseline: { key: `${w}_qemu_nbd` },
    ratio: { key: `${w}_ratio` },
    aim: { op: '>=' as const, value: 0.9 },
  })),
  {
    what: 'NBD export sparse copy (nbdcopy URI null:, 16 MiB of data in 1 GiB) vs qemu-nbd',
    bench: 'nbd-export',
    pumice: { key: 'sparse_copy_pumice' },
    baseline: { key: 'sparse_copy_qemu_nbd' },
    // Printed as qemu-nbd's time over Pumice's: above 1, Pumice is faster.
    ratio: { key: 'sparse_copy_ratio' },
    aim: { op: '>=' as const, value: 0.9 },
  },
  {
    what: 'image upload, file store, vs cp --sparse=always + sync',
    bench: 'image-upload',
    pumice: { key: 'upload' },
    baseline: { key: 'baseline_cp_then_sync_file' },
    ratio: { key: 'upload_vs_cp_then_sync' },
    aim: { op: '>=', value: 0.8 },
  },
  {
    what: 'image upload, rbd store, vs rbd import',
    bench: 'image-upload-rbd',
    pumice: { key: 'pumice_upload_mean' },
    baseline: { key: 'rbd_import_mean' },
    ratio: { key: 'ratio_upload_vs_rbd_import' },
    aim: { op: '>=', value: 0.9 },
  },
  {
    what: 'local volume from a 1 GiB image vs cp --sparse=always + sync',
    bench: 'volume-from-image',
    pumice: { line: /^\s*create→available .*best (\d+ MB\/s)/ },
    baseline: { line: /^\s*cp --sparse=always \+ sync: .*best (\d+ MB\/s)/ },
    ratio: { key: 'ratio (best vs best)' },
    aim: { op: '>=', value: 0.8 },
  },
  {
    what: 'Ceph incremental backup after 1% random 4 KiB writes, vs the full',
    bench: 'backup-ceph',
    pumice: { line: /^incremental after \d+ random 4 KiB writes[^:]*: ([\d.]+ \w+)/ },
    baseline: { line: /^full backup \(driver\): ([\d.]+ \w+)/ },
    aim: { op: '<=', value: 5, of: { line: /^incremental after .*\(([\d.]+)% of the full\)/ }, text: '≤ 5% of the time' },
  },
  {
    what: 'Ceph restore of an incremental over its own volume: bytes written',
    bench: 'backup-ceph',
    pumice: { line: /^restore of the incremental over its own volume[^:]*: ([\d.]+ \w+)/ },
    baseline: { line: /^restore of the incremental into a new image: ([\d.]+ \w+)/ },
    aim: { op: '<=', value: 1.05, of: { line: /^restore of the incremental over its own volume.* \(([\d.]+)x the changed bytes\)/ }, text: '≤ 1.05x the changed' },
  },
  {
    what: 'directory backup, full, vs tar + zstd -1',
    bench: 'backup-posix',
    pumice: { key: 'full_rate' },
    baseline: { line: /^baseline_tar_\w+: (.*)/ },
    ratio: { line: /^full_backup_vs_tar_\w+: (.*)/ },
  },
  {
    what: 'RBD create→available→delete cycles/s, 8 clients',
    bench: 'rbd-cycles',
    pumice: { key: 'rbd_api_c8_cycles_per_s' },
    baseline: { key: 'rbd_cli_c1_cycles_per_s' },
    aim: { op: '>=', value: 37, of: { key: 'rbd_api_c8_cycles_per_s' }, text: '≥ 37/s' },
  },
  {
    what: 'boot from volume, API call → guest booted, vs bare QEMU',
    bench: 'boot',
    pumice: { line: /^boot from volume, API call → boot marker, median of \d+: (.*)/ },
    baseline: { line: /^bare qemu-system-x86_64 → boot marker, median of \d+: (.*)/ },
    ratio: { line: /^pumice overhead over bare QEMU: .*ratio ([\d.]+×)/ },
    aim: { op: '<=', value: 0.5, of: { line: /^pumice overhead over bare QEMU: ([\d.]+) s/ }, text: 'overhead ≤ 0.5 s' },
  },
  {
    what: 'live migration total time vs bare QEMU',
    bench: 'live-migration',
    pumice: { line: /^\s*A\. Pumice's QEMU driver: (.*)/ },
    baseline: { line: /^\s*B\. bare qemu-system-x86_64 by hand: (.*)/ },
    ratio: { line: /^\s*ratio A\/B: total ([\d.]+x)/ },
    aim: { op: '<=', value: 1.2 },
  },
];

/** Benchmark name → its output lines, from run-all's `## … bench/NAME.ts` (or `.sh`) headers. */
export function splitSections(text: string): Map<string, string[]> {
  const sections = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const line of text.split('\n')) {
    const header = /^## .*\bbench\/([\w-]+)\.(?:ts|sh)\b/.exec(line);
    if (header) {
      current = sections.get(header[1]!) ?? [];
      sections.set(header[1]!, current);
    } else current?.push(line);
  }
  return sections;
}

function pick(lines: string[] | undefined, p: Pick | undefined): string | undefined {
  if (!lines || !p) return undefined;
  for (const line of lines) {
    if ('key' in p) {
      if (line.trimStart().startsWith(`${p.key}: `)) return line.trimStart().slice(p.key.length + 2).trim();
    } else {
      const m = p.line.exec(line);
      if (m) return (m[1] ?? m[0]).trim();
    }
  }
  return undefined;
}

/** The figure itself, without the explanation benchmarks put after it. */
function short(value: string | undefined): string {
  if (value === undefined) return 'not run';
  const head = value.split(/ \(|; |, /)[0]!.trim();
  return head.length > 40 ? `${head.slice(0, 39)}…` : head;
}

function numberIn(value: string | undefined): number | undefined {
  const m = value === undefined ? null : /-?\d[\d,]*(?:\.\d+)?/.exec(value);
  return m ? Number(m[0].replaceAll(',', '')) : undefined;
}

export interface Row {
  what: string;
  pumice: string;
  baseline: string;
  ratio: string;
  aim: string;
  met: string;
}

export function rows(text: string): Row[] {
  const sections = splitSections(text);
  return figures.map((f) => {
    const lines = sections.get(f.bench);
    const pumice = pick(lines, f.pumice);
    const baseline = pick(lines, f.baseline);
    const printed = numberIn(pick(lines, f.ratio));
    const [p, b] = [numberIn(pumice), numberIn(baseline)];
    let ratio = printed !== undefined ? `${printed.toFixed(2)}x` : p !== undefined && b !== undefined && b > 0 ? `${(p / b).toFixed(2)}x` : 'not run';
    if (!f.baseline && !f.ratio) ratio = '';
    let aim = '';
    let met = '';
    if (f.aim) {
      const measured = f.aim.of ? numberIn(pick(lines, f.aim.of)) : numberIn(ratio);
      aim = f.aim.text ?? `${f.aim.op === '>=' ? '≥' : '≤'} ${f.aim.value}x`;
      met = measured === undefined ? '?' : (f.aim.op === '>=' ? measured >= f.aim.value : measured <= f.aim.value) ? 'yes' : 'no';
    }
    return { what: f.what, pumice: short(pumice), baseline: f.baseline ? short(baseline) : '', ratio, aim, met };
  });
}

/** `*ratio*` lines no figure above shows: a new benchmark's figures still reach the reader. */
export function otherRatios(text: string): string[] {
  const shown = new Set(figures.map((f) => f.bench));
  const out: string[] = [];
  for (const [bench, lines] of splitSections(text)) {
    if (shown.has(bench)) continue;
    for (const line of lines) if (/^\s*[\w ()/.-]*ratio[\w ()/.-]*: /i.test(line)) out.push(`${bench}: ${line.trim()}`);
  }
  return out;
}

export function formatTable(table: Row[]): string {
  const head: Row = { what: 'what', pumice: 'Pumice', baseline: 'baseline', ratio: 'ratio', aim: 'aim', met: 'met?' };
  const cols = Object.keys(head) as (keyof Row)[];
  const all = [head, ...table];
  const width = Object.fromEntries(cols.map((c) => [c, Math.max(...all.map((r) => r[c].length))])) as Record<keyof Row, number>;
  const line = (r: Row): string => `| ${cols.map((c) => r[c].padEnd(width[c])).join(' | ')} |`;
  return [line(head), `|${cols.map((c) => '-'.repeat(width[c] + 2)).join('|')}|`, ...table.map(line)].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const files = process.argv.slice(2);
  const text = files.length > 0 ? files.map((f) => readFileSync(f, 'utf8')).join('\n') : readFileSync(0, 'utf8');
  console.log(`## figures (load average now ${loadavg().map((l) => l.toFixed(2)).join(' ')}; each benchmark printed the CPU of other processes beside its figures)`);
  console.log(formatTable(rows(text)));
  const others = otherRatios(text);
  if (others.length > 0) console.log(['## other ratios', ...others].join('\n'));
}
