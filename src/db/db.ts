/**
 * The database: SQLite (WAL) in the data directory. Every service reads and
 * writes through `Db`; a unit of work that must be atomic (a resource row and
 * its task) runs inside `db.transaction`. Statements are cached by SQL text,
 * at most `statementCacheMax` of them (least recently used dropped).
 */
import Database from 'better-sqlite3';
import { migrations } from './schema.ts';

export type Row = Record<string, unknown>;
export type SqlValue = string | number | bigint | null | Buffer;

/** Prepared statements kept; beyond it the least recently used is dropped (SQL built from input varies). */
export const statementCacheMax = 256;

export class Db {
  readonly sqlite: Database.Database;
  /** Prepared statements by SQL text, least recently used first (Map keeps insertion order). */
  private readonly statements = new Map<string, Database.Statement>();

  constructor(path: string) {
    this.sqlite = new Database(path);
    this.sqlite.pragma('journal_mode = WAL');
    // NORMAL in WAL mode is durable against process crashes (kill -9); only an
    // OS crash can lose the last transactions, which the reconciler tolerates.
    this.sqlite.pragma('synchronous = NORMAL');
    this.sqlite.pragma('foreign_keys = ON');
    this.sqlite.pragma('busy_timeout = 5000');
    this.migrate();
  }

  private statement(sql: string): Database.Statement {
    let statement = this.statements.get(sql);
    if (statement) {
      // Move to the most recently used end.
      this.statements.delete(sql);
      this.statements.set(sql, statement);
      return statement;
    }
    statement = this.sqlite.prepare(sql);
    this.statements.set(sql, statement);
    if (this.statements.size > statementCacheMax) {
      const oldest = this.statements.keys().next().value;
      if (oldest !== undefined) this.statements.delete(oldest);
    }
    return statement;
  }

  /** Prepared statements cached now (bounded by statementCacheMax). */
  get cachedStatementCount(): number {
    return this.statements.size;
  }

  all<T = Row>(sql: string, ...params: SqlValue[]): T[] {
    return this.statement(sql).all(...params) as T[];
  }

  get<T = Row>(sql: string, ...params: SqlValue[]): T | undefined {
    return this.statement(sql).get(...params) as T | undefined;
  }

  run(sql: string, ...params: SqlValue[]): { changes: number } {
    const result = this.statement(sql).run(...params);
    return { changes: result.changes };
  }

  /**
   * Runs `fn` in one transaction. A nested call runs in a savepoint of the
   * outer one: if it throws, its writes alone are undone, even when the outer
   * code catches the error and goes on.
   */
  transaction<T>(fn: () => T): T {
    if (this.sqlite.inTransaction) return this.sqlite.transaction(fn)();
    return this.sqlite.transaction(fn).immediate();
  }

  close(): void {
    this.sqlite.close();
  }

  private migrate(): void {
    this.sqlite.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
    const row = this.sqlite.prepare('SELECT version FROM schema_version').get() as { version: number } | undefined;
    let version = row?.version ?? 0;
    if (!row) this.sqlite.prepare('INSERT INTO schema_version (version) VALUES (0)').run();
    for (const migration of migrations) {
      if (migration.version <= version) continue;
      this.sqlite.transaction(() => {
        this.sqlite.exec(migration.sql);
        this.sqlite.prepare('UPDATE schema_version SET version = ?').run(migration.version);
      })();
      version = migration.version;
    }
  }
}

export function nowIso(): string {
  return new Date().toISOString();
}

/** Cinder prints timestamps without zone and with microseconds: 2024-01-02T03:04:05.000000 */
export function cinderTime(iso: string | null | undefined): string | null {
  if (!iso) return null;
  return iso.replace('Z', '').replace(/\.(\d{3})$/, '.$1000');
}
