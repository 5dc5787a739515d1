/**
 * The command line's conventions, shared by every `pumice` subcommand: one
 * declaration per command (options with their help, an example), `--help`
 * generated from it, our own messages for bad arguments with "did you mean",
 * and the documented exit codes.
 */
import { editDistance } from '../config/config.ts';

/** Exit codes of every `pumice` command (README "Exit codes"). */
export const exitCodes = {
  ok: 0,
  /** The command ran and failed (a check failed, the server could not start, a wait timed out). */
  failure: 1,
  /** Bad command line: unknown command or option, missing or malformed value. */
  usage: 2,
  /** Configuration error: the file (with file:line), or a data directory that cannot be used. */
  config: 3,
  /** The listen address is taken by another process. */
  addressInUse: 4,
} as const;

export interface OptionDef {
  type: 'string' | 'boolean';
  /** Placeholder of the value in help, e.g. DIR. */
  value?: string;
  help: string;
  short?: string;
}

export interface CommandSpec {
  /** As typed: 'serve', 'admin reset-password'. */
  name: string;
  summary: string;
  /** Positional arguments in help, e.g. 'up|down|purge|status DIR'. */
  positionals?: string;
  positionalsMin?: number;
  positionalsMax?: number;
  options: Record<string, OptionDef>;
  example: string;
  /** Extra paragraphs after the options. */
  notes?: string;
}

/** A command line the user must fix: exit 2 with the message and where to find help. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly helpHint: string,
  ) {
    super(message);
  }
}

export function commandHelp(spec: CommandSpec): string {
  const lines = [`usage: pumice ${spec.name}${spec.positionals ? ` ${spec.positionals}` : ''}${Object.keys(spec.options).length ? ' [options]' : ''}`, '', spec.summary, ''];
  // --help last: the command's own options come first.
  const rows = Object.entries(spec.options).sort(([a], [b]) => Number(a === 'help') - Number(b === 'help')).map(([name, def]) => [`--${name}${def.value ? ` ${def.value}` : ''}${def.short ? `, -${def.short}` : ''}`, def.help] as const);
  if (rows.length) {
    lines.push('options:');
    const width = Math.max(...rows.map(([left]) => left.length)) + 2;
    for (const [left, help] of rows) lines.push(`  ${left.padEnd(width)}${help}`);
    lines.push('');
  }
  if (spec.notes) lines.push(spec.notes.trimEnd(), '');
  lines.push('example:', `  ${spec.example}`, '');
  return lines.join('\n');
}

export interface ParsedArgs {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/**
 * Parses `args` against `spec`: `--name value`, `--name=value`, `-h`, booleans. Unknown options
 * get the nearest known one; a missing value and a stray argument name what was expected.
 */
export function parseCommandArgs(spec: CommandSpec, args: string[]): ParsedArgs {
  const hint = `see 'pumice ${spec.name} --help'`;
  const values: ParsedArgs['values'] = {};
  const positionals: string[] = [];
  const byShort = new Map(Object.entries(spec.options).filter(([, d]) => d.short).map(([name, d]) => [d.short!, name]));
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const given = eq > 0 ? arg.slice(0, eq) : arg;
    const name = given.startsWith('--') ? given.slice(2) : byShort.get(given.slice(1));
    const def = name !== undefined ? spec.options[name] : undefined;
    if (!def || name === undefined) {
      const known = Object.keys(spec.options).map((o) => `--${o}`);
      throw new UsageError(`unknown option '${given}' for 'pumice ${spec.name}'${didYouMean(given, known) ?? `; options: ${known.join(', ') || 'none'}`}`, hint);
    }
    if (def.type === 'boolean') {
      if (eq > 0) throw new UsageError(`option '--${name}' takes no value (got '${arg.slice(eq + 1)}')`, hint);
      values[name] = true;
      continue;
    }
    let value: string | undefined;
    if (eq > 0) value = arg.slice(eq + 1);
    else if (i + 1 < args.length && !(args[i + 1]!.startsWith('--') && args[i + 1]!.length > 2)) value = args[++i];
    if (value === undefined || value === '') throw new UsageError(`option '--${name}' needs a value: --${name} ${def.value ?? 'VALUE'}`, hint);
    values[name] = value;
  }
  if (values['help']) return { values, positionals };
  const min = spec.positionalsMin ?? 0;
  const max = spec.positionalsMax ?? 0;
  if (positionals.length > max) {
    throw new UsageError(`unexpected argument '${positionals[max]}' for 'pumice ${spec.name}'${spec.positionals ? ` (expected: ${spec.positionals})` : ' (it takes options only)'}`, hint);
  }
  if (positionals.length < min) throw new UsageError(`'pumice ${spec.name}' needs ${spec.positionals}`, hint);
  return { values, positionals };
}

/** "; did you mean 'x'?" for the nearest candidate within a small edit distance, else null. */
export function didYouMean(given: string, candidates: string[]): string | null {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const d = editDistance(given.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = candidate;
    }
  }
  if (best === undefined) return null;
  const prefix = best.startsWith(given) && given.replace(/^-+/, '').length >= 2;
  return prefix || bestDistance <= Math.max(2, Math.floor(best.length / 3)) ? `; did you mean '${best}'?` : null;
}

/**
 * `--listen` values: HOST:PORT, [V6]:PORT, and `:PORT` or `PORT` for the default address
 * (loopback: listening beyond it is a choice the operator writes out).
 */
export function parseListen(value: string, defaultHost = '127.0.0.1'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d+)$/.exec(value) ?? /^()()(\d+)$/.exec(value);
  if (!m) throw new UsageError(`--listen '${value}' is not HOST:PORT, :PORT or PORT (e.g. 127.0.0.1:5000 or :5000)`, "see 'pumice serve --help'");
  const port = Number(m[3]);
  if (port > 65535) throw new UsageError(`--listen port ${port} is out of range (0-65535)`, "see 'pumice serve --help'");
  return { host: m[1] || m[2] || defaultHost, port };
}

/**
 * Node's parseArgs errors (the commands that still call it: image, backup, tasks, host) in our
 * words: the option named, the nearest one from the command's usage text, no advice about '--'.
 */
export function parseArgsMessage(error: unknown, usage: string): string {
  const message = (error as Error).message;
  const code = (error as NodeJS.ErrnoException).code;
  const known = [...new Set(usage.match(/--[a-z][a-z0-9-]*/g) ?? [])];
  const unknown = /^Unknown option '([^']+)'/.exec(message);
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && unknown) {
    return `unknown option '${unknown[1]}'${didYouMean(unknown[1]!, known) ?? `; options: ${known.join(', ')}`}`;
  }
  const missing = /^Option '(-\w, )?(--[^ ']+)[^']*' argument missing/.exec(message);
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && missing) return `option '${missing[2]}' needs a value`;
  const positional = /^Unexpected argument '([^']*)'/.exec(message);
  if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL' && positional) return `unexpected argument '${positional[1]}'`;
  return message;
}
