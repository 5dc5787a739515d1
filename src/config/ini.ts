/**
 * A small INI reader that keeps line numbers, so configuration errors can
 * name the file and line. Syntax follows oslo.config: `[section]`,
 * `key = value`, `#`/`;` comments, continuation lines indented.
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
  let lastEntry: IniEntry | undefined;
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, index) => {
    const lineNo = index + 1;
    if (/^\s*([#;].*)?$/.test(raw)) return;
    if (/^\s+\S/.test(raw) && lastEntry) {
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
    lastEntry = { value: kv[2]!, line: lineNo };
    current.entries.set(kv[1]!, lastEntry);
  });
  return { path, sections };
}
