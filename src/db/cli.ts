/**
 * `pumice db ...`: the database of an install, as `[database] connection` (or the
 * SQLite default DATA_DIR/pumice.db) names it.
 *
 *   status            schema version of the database and of this code
 *   upgrade           apply pending migrations (a SQLite file is first copied with VACUUM INTO)
 *   export --output F every table to a JSON-lines file (0600: it holds password hashes and keys)
 *   import --input F  that file into an empty database of the same schema (SQLite → PostgreSQL)
 */
import { closeSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/config.ts';
import { codeSchemaVersion, databaseLocation, Db, SchemaTooNewError, type SqlValue } from './db.ts';

const usage = `usage: pumice db <command> [options]

commands:
  status              schema version of the database and of this Pumice
  upgrade             apply pending migrations; a SQLite database is first copied to pumice.db.before-v<N>
  export --output F   write every table to F (JSON lines, mode 0600)
  import --input F    load F into an empty database (e.g. SQLite to PostgreSQL: set [database] connection first)

options:
  --data-dir DIR   data directory (default: ./data, or $PUMICE_DATA_DIR)
  --config FILE    configuration whose [database] connection names the database (default: SQLite in DATA_DIR)

example:
  pumice db status --config /etc/pumice/pumice.conf --data-dir /var/lib/pumice
  pumice db upgrade --config /etc/pumice/pumice.conf --data-dir /var/lib/pumice
`;

/** The first line of an export: what it holds and from which schema. */
interface ExportHeader {
  format: 'pumice-db-export';
  formatVersion: 1;
  schemaVersion: number;
  engine: string;
  exportedAt: string;
}

class UsageError extends Error {}

export async function runCli(
  args: string[],
  out: (text: string) => void = (t) => process.stdout.write(t),
  err: (text: string) => void = (t) => process.stderr.write(t),
): Promise<number> {
  const [command, ...rest] = args;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    (command === undefined ? err : out)(usage);
    return command === undefined ? 2 : 0;
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: rest,
      options: {
        'data-dir': { type: 'string' }, config: { type: 'string' }, output: { type: 'string' }, input: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
    if (values['help']) {
      out(usage);
      return 0;
    }
    if (!['status', 'upgrade', 'export', 'import'].includes(command)) throw new UsageError(`unknown command '${command}'`);
    if (command === 'export' && !values['output']) throw new UsageError('export needs --output FILE');
    if (command === 'import' && !values['input']) throw new UsageError('import needs --input FILE');
  } catch (error) {
    err(`pumice db: ${(error as Error).message}\n\n${usage}`);
    return 2;
  }
  const dataDir = resolve((values['data-dir'] as string | undefined) ?? process.env['PUMICE_DATA_DIR'] ?? 'data');
  let db: Db | null = null;
  try {
    const configPath = values['config'] as string | undefined;
    const location = databaseLocation(loadConfig(configPath ? resolve(configPath) : null, dataDir).database.connection, dataDir);
    if (command !== 'import' && !location.includes('://') && !existsSync(location)) {
      throw new Error(`${location} does not exist: pass the data directory of a Pumice (--data-dir DIR), or --config with its [database] connection`);
    }
    // Opened without migrating: status and upgrade report the version first, export reads as it is.
    db = new Db(location, { migrate: false });
    switch (command) {
      case 'status':
        return status(db, out);
      case 'upgrade':
        return upgrade(db, location, out);
      case 'export':
        return exportDatabase(db, resolve(values['output'] as string), out);
      default:
        return importDatabase(db, resolve(values['input'] as string), out);
    }
  } catch (error) {
    err(`pumice db ${command}: ${(error as Error).message}\n`);
    return error instanceof SchemaTooNewError ? 3 : 1;
  } finally {
    db?.close();
  }
}

function status(db: Db, out: (text: string) => void): number {
  const version = db.schemaVersion();
  out(`database: ${db.where} (${db.engine})\nschema version: database ${version}, code ${codeSchemaVersion}\n`);
  if (version === codeSchemaVersion) out('state: up to date\n');
  else if (version === 0) out('state: empty (serve or pumice db upgrade creates the schema)\n');
  else out(`state: ${codeSchemaVersion - version} migration(s) pending: run pumice db upgrade (serve also applies them at start)\n`);
  return 0;
}

function upgrade(db: Db, location: string, out: (text: string) => void): number {
  const version = db.schemaVersion();
  if (version === codeSchemaVersion) {
    out(`database ${db.where} is at schema version ${version}: up to date\n`);
    return 0;
  }
  if (db.engine === 'sqlite' && version > 0) {
    // A consistent copy even beside a running server (WAL readers are not blocked).
    let backup = `${location}.before-v${codeSchemaVersion}`;
    if (existsSync(backup)) backup = `${backup}-${Date.now()}`;
    db.sqlite.prepare('VACUUM INTO ?').run(backup);
    out(`backup: ${backup} (schema version ${version}; to go back, stop Pumice and copy it over ${location})\n`);
  } else if (db.engine === 'postgresql' && version > 0) {
    out('note: PostgreSQL is not copied by Pumice; take a pg_dump before upgrading a production database\n');
  }
  const applied = db.migrate();
  out(`database ${db.where}: schema version ${version} → ${codeSchemaVersion} (applied ${applied.join(', ')})\n`);
  return 0;
}

/** User tables of the database (schema_version excluded: the header carries it). */
function tableNames(db: Db): string[] {
  const rows =
    db.engine === 'sqlite'
      ? db.all<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
      : db.all<{ name: string }>('SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename');
  return rows.map((r) => r.name).filter((name) => name !== 'schema_version');
}

/** Tables in an order where each comes after the tables its foreign keys name (self-references aside). */
function insertOrder(db: Db, tables: string[]): string[] {
  const references = new Map<string, Set<string>>(tables.map((t) => [t, new Set<string>()]));
  if (db.engine === 'sqlite') {
    for (const table of tables) {
      for (const fk of db.sqlite.prepare(`SELECT "table" AS parent FROM pragma_foreign_key_list(?)`).all(table) as { parent: string }[]) {
        if (fk.parent !== table) references.get(table)?.add(fk.parent);
      }
    }
  } else {
    for (const fk of db.all<{ child: string; parent: string }>(
      "SELECT conrelid::regclass::text AS child, confrelid::regclass::text AS parent FROM pg_constraint WHERE contype = 'f'",
    )) {
      if (fk.child !== fk.parent) references.get(fk.child)?.add(fk.parent);
    }
  }
  const ordered: string[] = [];
  const visit = (table: string, path: Set<string>) => {
    if (ordered.includes(table) || path.has(table)) return;
    path.add(table);
    for (const parent of references.get(table) ?? []) visit(parent, path);
    ordered.push(table);
  };
  for (const table of tables) visit(table, new Set());
  return ordered;
}

/** A value as JSON: binary as {"base64": …}; numbers, strings and null as they are. */
function encodeValue(value: unknown): unknown {
  if (Buffer.isBuffer(value)) return { base64: value.toString('base64') };
  if (typeof value === 'bigint') return Number(value);
  return value;
}

function decodeValue(value: unknown): SqlValue {
  if (value !== null && typeof value === 'object' && 'base64' in value) return Buffer.from(String((value as { base64: string }).base64), 'base64');
  return value as SqlValue;
}

function quoteName(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function exportDatabase(db: Db, output: string, out: (text: string) => void): number {
  const version = db.schemaVersion();
  if (version !== codeSchemaVersion) {
    throw new Error(`the database is at schema version ${version}, this Pumice at ${codeSchemaVersion}: run pumice db upgrade first, then export`);
  }
  // wx: never overwrite an earlier export; 0600: it holds password hashes, token hashes and NBD keys.
  const fd = openSync(output, 'wx', 0o600);
  let total = 0;
  try {
    const header: ExportHeader = { format: 'pumice-db-export', formatVersion: 1, schemaVersion: version, engine: db.engine, exportedAt: new Date().toISOString() };
    writeSync(fd, `${JSON.stringify(header)}\n`);
    // One transaction: a consistent snapshot on both engines.
    db.transaction(() => {
      for (const table of insertOrder(db, tableNames(db))) {
        // Insertion order (rowid, ctid) so self-references (backups.parent_id) come after their parent.
        const rows = db.all(`SELECT * FROM ${quoteName(table)} ORDER BY ${db.engine === 'sqlite' ? 'rowid' : 'ctid'}`);
        const columns = rows.length > 0 ? Object.keys(rows[0]!) : [];
        writeSync(fd, `${JSON.stringify({ table, columns, rows: rows.length })}\n`);
        for (const row of rows) writeSync(fd, `${JSON.stringify(columns.map((c) => encodeValue(row[c])))}\n`);
        total += rows.length;
      }
    });
  } finally {
    closeSync(fd);
  }
  out(`exported ${total} rows of ${db.where} (schema version ${version}) to ${output}\n`);
  return 0;
}

function importDatabase(db: Db, input: string, out: (text: string) => void): number {
  const lines = readFileSync(input, 'utf8').split('\n');
  const header = JSON.parse(lines[0] ?? '{}') as Partial<ExportHeader>;
  if (header.format !== 'pumice-db-export') throw new Error(`${input} is not a pumice db export (its first line has no "format": "pumice-db-export")`);
  if (header.schemaVersion !== codeSchemaVersion) {
    throw new Error(`${input} has schema version ${header.schemaVersion}, this Pumice ${codeSchemaVersion}: import with the Pumice release that exported it`);
  }
  db.migrate();
  const existing = tableNames(db).filter((t) => (db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM ${quoteName(t)}`)?.n ?? 0) > 0);
  if (existing.length > 0) {
    throw new Error(`${db.where} is not empty (rows in ${existing.slice(0, 5).join(', ')}): import into a new database (CREATE DATABASE …), or drop it first`);
  }
  const counts = new Map<string, number>();
  db.transaction(() => {
    let index = 1;
    while (index < lines.length && lines[index] !== '') {
      const section = JSON.parse(lines[index]!) as { table: string; columns: string[]; rows: number };
      index++;
      if (section.rows === 0) {
        counts.set(section.table, 0);
        continue;
      }
      const sql = `INSERT INTO ${quoteName(section.table)} (${section.columns.map(quoteName).join(', ')}) VALUES (${section.columns.map(() => '?').join(', ')})`;
      for (let n = 0; n < section.rows; n++, index++) {
        const values = JSON.parse(lines[index]!) as unknown[];
        db.run(sql, ...values.map(decodeValue));
      }
      counts.set(section.table, section.rows);
    }
    // Nothing lost: every table holds what the export says, or nothing is imported.
    for (const [table, expected] of counts) {
      const actual = db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM ${quoteName(table)}`)?.n ?? 0;
      if (actual !== expected) throw new Error(`table ${table}: ${actual} rows after import, the export holds ${expected}; nothing was imported`);
    }
    if (db.engine === 'postgresql') {
      // Explicit ids do not advance the id sequences: the next insert must follow the imported rows.
      for (const serial of db.all<{ table_name: string; column_name: string }>(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%'",
      )) {
        db.get(
          `SELECT setval(pg_get_serial_sequence('${serial.table_name}', '${serial.column_name}'), COALESCE((SELECT MAX(${quoteName(serial.column_name)}) FROM ${quoteName(serial.table_name)}), 0) + 1, false)`,
        );
      }
    }
  });
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  out(`imported ${total} rows in ${counts.size} tables into ${db.where} (schema version ${codeSchemaVersion})\n`);
  return 0;
}
