/**
 * SQLite → PostgreSQL translation of the SQL that services write. The services keep
 * writing one dialect (SQLite's, as the embedded default); the few constructs
 * PostgreSQL lacks are rewritten here, outside string literals and quoted names:
 *
 * - `?` placeholders become `$1, $2, …`;
 * - `INSERT OR IGNORE INTO …` becomes `INSERT INTO … ON CONFLICT DO NOTHING`;
 * - `x IS ?` / `x IS NOT ?` (null-safe equality) become `IS [NOT] DISTINCT FROM`;
 * - `json_each(col)` becomes `json_each_text(col::json)` (objects) or
 *   `json_array_elements_text(col::json) AS json_each(value)` (the `tags` arrays);
 * - `json_extract(col, ?)` with a `$."key"` path becomes a jsonpath query;
 * - `rowid` becomes `ctid`, `last_insert_rowid()` becomes `lastval()`;
 * - `binary` (a column of services, reserved in PostgreSQL) is quoted;
 * - camelCase aliases (`AS volumeCount`) are quoted so PostgreSQL keeps their case.
 *
 * Schema DDL additionally maps `INTEGER` to `BIGINT` (SQLite integers are 64-bit: lease
 * times in milliseconds do not fit 32 bits), `INTEGER PRIMARY KEY AUTOINCREMENT` to
 * `BIGSERIAL PRIMARY KEY`, `REAL` to `DOUBLE PRECISION` and the one strftime() to to_char().
 */

/** Splits SQL into code and quoted parts; `code` rewrites the code parts, in order. */
function mapCode(sql: string, code: (part: string) => string): string {
  let out = '';
  let start = 0;
  let i = 0;
  while (i < sql.length) {
    const c = sql[i]!;
    if (c === "'" || c === '"') {
      out += code(sql.slice(start, i));
      let j = i + 1;
      for (;;) {
        if (j >= sql.length) break;
        if (sql[j] === c) {
          if (sql[j + 1] === c) j += 2;
          else break;
        } else j++;
      }
      out += sql.slice(i, j + 1);
      i = j + 1;
      start = i;
    } else if (c === '-' && sql[i + 1] === '-') {
      out += code(sql.slice(start, i));
      const end = sql.indexOf('\n', i);
      const stop = end < 0 ? sql.length : end;
      out += sql.slice(i, stop);
      i = stop;
      start = i;
    } else i++;
  }
  return out + code(sql.slice(start));
}

function rewriteCommon(part: string): string {
  return part
    .replace(/\bIS\s+NOT\s+\?/gi, 'IS DISTINCT FROM ?')
    .replace(/\bIS\s+\?/gi, 'IS NOT DISTINCT FROM ?')
    .replace(/\blast_insert_rowid\(\)/gi, 'lastval()')
    .replace(/\browid\b/gi, 'ctid')
    .replace(/\bjson_each\(([\w.]+)\)/gi, (_m, column: string) =>
      /(^|\.)tags$/.test(column) ? `json_array_elements_text(${column}::json) AS json_each(value)` : `json_each_text(${column}::json)`,
    )
    .replace(/\bjson_extract\(([\w.]+),\s*\?\)/gi, "(jsonb_path_query_first($1::jsonb, CAST(? AS jsonpath)) #>> '{}')")
    .replace(/(?<![".])\bbinary\b(?!")/gi, '"binary"')
    .replace(/\bAS\s+([a-z][a-z0-9_]*[A-Z]\w*)\b/g, 'AS "$1"');
}

/** Translates one statement as the services write it (see the module comment). */
export function translateStatement(sql: string): string {
  let index = 0;
  let ignoreConflicts = false;
  const translated = mapCode(sql, (part) => {
    let rewritten = part.replace(/\bINSERT\s+OR\s+IGNORE\s+INTO\b/gi, () => {
      ignoreConflicts = true;
      return 'INSERT INTO';
    });
    rewritten = rewriteCommon(rewritten);
    return rewritten.replace(/\?/g, () => `$${++index}`);
  });
  return ignoreConflicts ? `${translated.replace(/;\s*$/, '')} ON CONFLICT DO NOTHING` : translated;
}

/** Translates migration DDL (several statements, no parameters). */
export function translateSchema(sql: string): string {
  return mapCode(sql, (part) =>
    rewriteCommon(
      part
        .replace(/\bINTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT\b/gi, 'BIGSERIAL PRIMARY KEY')
        .replace(/\bINTEGER\b/gi, 'BIGINT')
        .replace(/\bREAL\b/gi, 'DOUBLE PRECISION')
        .replace(/\bBLOB\b/gi, 'BYTEA'),
    ),
  ).replace(/strftime\('%Y-%m-%dT%H:%M:%fZ',\s*'now'\)/g, `to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`);
}
