/**
 * A small INI reader that keeps line numbers, so configuration errors can
 * name the file and line. Syntax follows oslo.config: `[section]`,
 * `key = value`, `#`/`;` comments, continuation lines indented.
 *
 * A comment after a value (`volume_driver = rbd   # or: local`) is refused
 * with its line: oslo.config keeps such text as part of the value, so a
 * Cinder-style file that relied on it was already broken, and stripping it
 * silently would make a value with ` #` in it change meaning.
 */

export interface IniEntry {
  value: string;
  line: number;
}

export interface IniSection {
  name: string;
  line: number;
  entries: Map<string, IniEntry>;
}

export interface IniFile {
  path: string;
  sections: Map<string, IniSection>;
  /** Lines that could not be read, in file order; the rest of the file is still read, so every error is reported at once. */
  errors?: ConfigError[];
}

export class ConfigError extends Error {
  constructor(
    readonly path: string,
    readonly line: number | undefined,
    message: string,
  ) {
    super(`${path}${line !== undefined ? `:${line}` : ''}: ${message}`);
  }
}

/** Several configuration errors, reported together (check-config and serve list them all): lines the reader refused first, then each option's checks; `line` is the first one's. */
export class ConfigErrors extends ConfigError {
  constructor(readonly errors: ConfigError[]) {
    super(errors[0]!.path, errors[0]!.line, '');
    this.message = `${errors.length} configuration errors:\n${errors.map((e) => `  ${e.message}`).join('\n')}`;
  }
}

/** Throws the one error, or all of them together; nothing when the list is empty. */
export function throwConfigErrors(errors: ConfigError[]): void {
  if (errors.length === 1) throw errors[0]!;
  if (errors.length > 1) throw new ConfigErrors(errors);
}

/** Reads INI text; unreadable lines are collected in `errors` (see IniFile), not thrown. */
export function parseIni(text: string, path: string): IniFile {
  const errors: ConfigError[] = [];
  const sections = new Map<string, IniSection>();
  let current: IniSection | undefined;
  let lastEntry: (IniEntry & { key: string }) | undefined;
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, index) => {
    try {
      readLine(raw, index + 1);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      errors.push(error);
    }
  });
  return { path, sections, errors };

  function readLine(raw: string, lineNo: number): void {
    if (/^\s*([#;].*)?$/.test(raw)) return;
    if (/^\s+\S/.test(raw) && lastEntry) {
      lastEntry.value += '\n' + withoutInlineComment(lineNo, lastEntry.key, raw.trim());
      return;
    }
    const trimmed = raw.trim();
    const header = /^\[([^\]]+)\]$/.exec(trimmed);
    if (header) {
      const name = header[1]!.trim();
      current = sections.get(name) ?? { name, line: lineNo, entries: new Map() };
      sections.set(name, current);
      lastEntry = undefined;
      return;
    }
    const kv = /^([^=:]+?)\s*[=:]\s*(.*)$/.exec(trimmed);
    if (!kv) throw new ConfigError(path, lineNo, `cannot parse '${trimmed}': expected 'option = value' or '[section]'`);
    if (!current) throw new ConfigError(path, lineNo, `option '${kv[1]}' appears before any [section]; put it under [DEFAULT]`);
    lastEntry = { value: withoutInlineComment(lineNo, kv[1]!, kv[2]!), line: lineNo, key: kv[1]! };
    current.entries.set(kv[1]!, lastEntry);
  }

  /** Refused (an error in the list), but the value before the comment is kept, so the rest of the file is checked as meant. */
  function withoutInlineComment(lineNo: number, key: string, value: string): string {
    const at = value.search(/\s#/);
    if (at < 0) return value;
    errors.push(inlineCommentError(path, lineNo, key, value, at));
    return value.slice(0, at).trim();
  }
}

/** ` # ...` after a value: a comment the reader would otherwise take as part of the value. */
function inlineCommentError(path: string, line: number, key: string, value: string, at: number): ConfigError {
  return new ConfigError(
    path,
    line,
    `option '${key}' has a comment after its value ('${value.slice(at).trim()}'): comments must be on a line of their own (oslo.config would read it as part of the value). Move it to the line above: '# ${value.slice(at).trim().replace(/^#\s*/, '')}' then '${key} = ${value.slice(0, at).trim()}'.`,
  );
}
