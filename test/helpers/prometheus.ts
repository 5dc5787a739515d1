/**
 * A strict parser of Prometheus' text exposition format (version 0.0.4, as
 * https://prometheus.io/docs/instrumenting/exposition_formats/ specifies it),
 * for tests: anything a Prometheus server would reject, or that breaks the
 * format's rules, throws with the line number.
 *
 * Checked: metric and label names, label value escapes (\\, \", \n only),
 * values (floats, NaN, +Inf, -Inf), optional integer timestamps; at most one
 * HELP and one TYPE per family, TYPE before its samples, known types; the
 * samples of a family together; no series twice; histograms with `le` on
 * every bucket, cumulative counts, a `+Inf` bucket equal to `_count`, and
 * `_sum` and `_count`; counters not negative; a final newline.
 */

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface PromFamily {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help: string | null;
  samples: PromSample[];
}

const metricName = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const labelName = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const types = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/** Parses `text`; throws `line N: why` on the first violation. Returns the families by name. */
export function parsePrometheusText(text: string): Map<string, PromFamily> {
  if (text.length > 0 && !text.endsWith('\n')) throw new Error('the exposition does not end with a newline');
  const families = new Map<string, PromFamily>();
  const closed = new Set<string>();
  const seriesSeen = new Set<string>();
  let current: string | null = null;
  const lines = text.split('\n');
  lines.pop();
  const family = (name: string, lineNo: number): PromFamily => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { name, type: 'untyped', help: null, samples: [] }));
    if (closed.has(name)) throw new Error(`line ${lineNo}: family ${name} continues after other families' lines`);
    if (current !== null && current !== name) closed.add(current);
    current = name;
    return f;
  };
  lines.forEach((line, i) => {
    const lineNo = i + 1;
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/.exec(line);
      if (!m) return; // an ordinary comment
      const [, kind, name, rest = ''] = m;
      if (!metricName.test(name!) || metricName.exec(name!)![0] !== name) throw new Error(`line ${lineNo}: bad metric name '${name}'`);
      const f = family(name!, lineNo);
      if (kind === 'HELP') {
        if (f.help !== null) throw new Error(`line ${lineNo}: second HELP for ${name}`);
        f.help = unescape(rest, lineNo, false);
      } else {
        if (f.samples.length > 0) throw new Error(`line ${lineNo}: TYPE of ${name} after its samples`);
        if ((f as { typed?: boolean }).typed) throw new Error(`line ${lineNo}: second TYPE for ${name}`);
        if (!types.has(rest.trim())) throw new Error(`line ${lineNo}: unknown type '${rest}'`);
        f.type = rest.trim() as PromFamily['type'];
        (f as { typed?: boolean }).typed = true;
      }
      return;
    }
    const sample = parseSample(line, lineNo);
    const base = familyOf(sample.name, families);
    const f = family(base, lineNo);
    const key = `${sample.name}${JSON.stringify(Object.entries(sample.labels).sort())}`;
    if (seriesSeen.has(key)) throw new Error(`line ${lineNo}: series ${sample.name}${JSON.stringify(sample.labels)} appears twice`);
    seriesSeen.add(key);
    if (f.type === 'counter' && (sample.value < 0 || Number.isNaN(sample.value))) throw new Error(`line ${lineNo}: counter ${sample.name} is ${sample.value}`);
    if (f.type === 'histogram' && !/_(bucket|sum|count)$/.test(sample.name)) throw new Error(`line ${lineNo}: histogram ${base} has a sample named ${sample.name}`);
    if (f.type !== 'histogram' && f.type !== 'summary' && sample.name !== base) throw new Error(`line ${lineNo}: sample ${sample.name} in family ${base}`);
    f.samples.push(sample);
  });
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f);
  return families;
}

/** The family a sample belongs to: its own name, or a histogram/summary's base name. */
function familyOf(name: string, families: Map<string, PromFamily>): string {
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const base = name.slice(0, -suffix.length);
    const f = families.get(base);
    if (f && (f.type === 'histogram' || f.type === 'summary')) return base;
  }
  return name;
}

function parseSample(line: string, lineNo: number): PromSample {
  const nameMatch = metricName.exec(line);
  if (!nameMatch) throw new Error(`line ${lineNo}: no metric name in '${line}'`);
  const name = nameMatch[0];
  let rest = line.slice(name.length);
  const labels: Record<string, string> = {};
  if (rest.startsWith('{')) {
    rest = rest.slice(1);
    for (;;) {
      rest = rest.replace(/^[ \t]*/, '');
      if (rest.startsWith('}')) {
        rest = rest.slice(1);
        break;
      }
      const ln = labelName.exec(rest);
      if (!ln) throw new Error(`line ${lineNo}: bad label name in '${line}'`);
      if (ln[0] in labels) throw new Error(`line ${lineNo}: label ${ln[0]} twice`);
      rest = rest.slice(ln[0].length).replace(/^[ \t]*/, '');
      if (!rest.startsWith('="')) throw new Error(`line ${lineNo}: expected =" after label ${ln[0]}`);
      rest = rest.slice(2);
      let value = '';
      for (;;) {
        if (rest.length === 0) throw new Error(`line ${lineNo}: unterminated label value`);
        const c = rest[0]!;
        if (c === '"') {
          rest = rest.slice(1);
          break;
        }
        if (c === '\\') {
          const e = rest[1];
          if (e === '\\') value += '\\';
          else if (e === '"') value += '"';
          else if (e === 'n') value += '\n';
          else throw new Error(`line ${lineNo}: bad escape \\${e ?? ''} in a label value`);
          rest = rest.slice(2);
          continue;
        }
        value += c;
        rest = rest.slice(1);
      }
      labels[ln[0]] = value;
      rest = rest.replace(/^[ \t]*/, '');
      if (rest.startsWith(',')) rest = rest.slice(1);
      else if (!rest.startsWith('}')) throw new Error(`line ${lineNo}: expected , or } after a label`);
    }
  }
  const parts = rest.trim().split(/[ \t]+/);
  if (!/^[ \t]/.test(rest) || parts.length < 1 || parts.length > 2 || parts[0] === '') throw new Error(`line ${lineNo}: expected ' VALUE [TIMESTAMP]' in '${line}'`);
  const value = parseValue(parts[0]!, lineNo);
  if (parts[1] !== undefined && !/^-?\d+$/.test(parts[1])) throw new Error(`line ${lineNo}: bad timestamp '${parts[1]}'`);
  return { name, labels, value };
}

function parseValue(text: string, lineNo: number): number {
  if (text === 'NaN') return NaN;
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`line ${lineNo}: bad value '${text}'`);
  return Number(text);
}

function unescape(text: string, lineNo: number, quotes: boolean): string {
  return text.replace(/\\(.)/g, (_, c: string) => {
    if (c === '\\') return '\\';
    if (c === 'n') return '\n';
    if (quotes && c === '"') return '"';
    throw new Error(`line ${lineNo}: bad escape \\${c} in HELP`);
  });
}

function checkHistogram(f: PromFamily): void {
  const groups = new Map<string, { buckets: { le: number; value: number }[]; sum?: number; count?: number }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { buckets: [] }));
    if (s.name.endsWith('_bucket')) {
      if (le === undefined) throw new Error(`histogram ${f.name}: a bucket without le`);
      g.buckets.push({ le: parseValue(le, 0), value: s.value });
    } else if (s.name.endsWith('_sum')) g.sum = s.value;
    else g.count = s.value;
  }
  for (const [key, g] of groups) {
    const sorted = [...g.buckets].sort((a, b) => a.le - b.le);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i]!.value < sorted[i - 1]!.value) throw new Error(`histogram ${f.name}${key}: bucket le=${sorted[i]!.le} counts fewer than le=${sorted[i - 1]!.le}`);
    }
    const inf = sorted.at(-1);
    if (!inf || inf.le !== Infinity) throw new Error(`histogram ${f.name}${key}: no +Inf bucket`);
    if (g.count === undefined || g.sum === undefined) throw new Error(`histogram ${f.name}${key}: _sum or _count missing`);
    if (inf.value !== g.count) throw new Error(`histogram ${f.name}${key}: +Inf bucket ${inf.value} != _count ${g.count}`);
  }
}

/** The value of the series of `name` whose labels include `labels`; undefined when there is none, throws when several match. */
export function promValue(families: Map<string, PromFamily>, name: string, labels: Record<string, string> = {}): number | undefined {
  const base = familyOf(name, families);
  const matches = (families.get(base)?.samples ?? []).filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (matches.length > 1) throw new Error(`${name}${JSON.stringify(labels)} matches ${matches.length} series`);
  return matches[0]?.value;
}
