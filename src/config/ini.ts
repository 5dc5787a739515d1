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

export function parseIni(text: string, path: string): IniFile {
  const sections = new Map<string, IniSection>();
  let current: IniSection | undefined;
  let lastEntry: (IniEntry & { key: string }) | undefined;
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, index) => {
    const lineNo = index + 1;
    if (/^\s*([#;].*)?$/.test(raw)) return;
    if (/^\s+\S/.test(raw) && lastEntry) {
      refuseInlineComment(path, lineNo, lastEntry.key, raw.trim());
      lastEntry.value += '\n' + raw.trim();
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
    refuseInlineComment(path, lineNo, kv[1]!, kv[2]!);
    lastEntry = { value: kv[2]!, line: lineNo, key: kv[1]! };
    current.entries.set(kv[1]!, lastEntry);
  });
  return { path, sections };
}

/** ` # ...` after a value: a comment the reader would otherwise take as part of the value. */
function refuseInlineComment(path: string, line: number, key: string, value: string): void {
  const at = value.search(/\s#/);
  if (at < 0) return;
  throw new ConfigError(
    path,
    line,
    `option '${key}' has a comment after its value ('${value.slice(at).trim()}'): comments must be on a line of their own (oslo.config would read it as part of the value). Move it to the line above: '# ${value.slice(at).trim().replace(/^#\s*/, '')}' then '${key} = ${value.slice(0, at).trim()}'.`,
  );
}
