/**
 * The database: SQLite (WAL) in the data directory by default, or PostgreSQL when
 * `[database] connection = postgresql://…` names one (shared by several hosts).
 * Every service reads and writes through `Db`, synchronously on both engines; a
 * unit of work that must be atomic (a resource row and its task) runs inside
 * `db.transaction`. Services write SQLite's dialect; pg-dialect.ts translates.
 * SQLite statements are cached by SQL text, at most `statementCacheMax` of them
 * (least recently used dropped).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { migrations } from './schema.ts';
import { PgConnectError, PgSyncConnection, redactConnectionUrl } from './pg-sync.ts';
import { translateSchema, translateStatement } from './pg-dialect.ts';
import { atTurnEndCommit } from '../util/turn-end.ts';

export type Row = Record<string, unknown>;
export type SqlValue = string | number | bigint | null | Buffer;
export type DbEngine = 'sqlite' | 'postgresql';

/** Prepared statements kept; beyond it the least recently used is dropped (SQL built from input varies). */
export const statementCacheMax = 256;
/**
 * The advisory lock every PostgreSQL write transaction takes first: transactions
 * run one at a time across all hosts, as SQLite's BEGIN IMMEDIATE does in one
 * process, so read-then-write code (quota checks, compare-and-set) keeps its meaning.
 */
const pgTransactionLockKey = 0x50756d69;

/** The schema version this code creates and understands. */
export const codeSchemaVersion = Math.max(...migrations.map((m) => m.version));

/** True when `location` names a PostgreSQL database rather than a SQLite file. */
export function isPostgresUrl(location: string): boolean {
  return /^postgres(ql)?:\/\//.test(location);
}

/**
 * Where the database is: `[database] connection` when it names PostgreSQL, else the
 * SQLite file DATA_DIR/pumice.db (also for `sqlite://…`, the embedded default).
 * Throws for any other scheme, naming the accepted forms (never the password).
 */
export function databaseLocation(connection: string | null | undefined, dataDir: string): string {
  if (!connection || connection.startsWith('sqlite')) return join(dataDir, 'pumice.db');
  if (isPostgresUrl(connection)) return connection;
  throw new Error(
    `[database] connection = ${redactConnectionUrl(connection)}: unknown database; use postgresql://user:password@host:port/database, ` +
      'or remove the option for SQLite in DATA_DIR/pumice.db',
  );
}

/**
 * The database of an existing cloud, for an operator command (`pumice tasks`, `pumice host`):
 * `[database] connection` when it names PostgreSQL, else DATA_DIR/pumice.db, which must exist
 * (a command never creates a cloud). Throws a message naming the fix.
 */
export function openCloudDatabase(connection: string | null | undefined, dataDir: string): Db {
  const location = databaseLocation(connection, dataDir);
  if (!isPostgresUrl(location) && !existsSync(location)) {
    throw new Error(
      `${location} does not exist: pass the data directory of a Pumice (--data-dir DIR or PUMICE_DATA_DIR), ` +
        'or the configuration whose [database] connection names its PostgreSQL (--config FILE or PUMICE_CONFIG)',
    );
  }
  return new Db(location);
}

export interface OpenRetries {
  /** Attempts after the first failed connect (-1: no end); [database] max_retries. */
  maxRetries: number;
  /** Seconds between attempts; [database] retry_interval. */
  retryIntervalS: number;
  log: (line: string) => void;
}

/**
 * The service's database at start. A PostgreSQL that is not reachable yet (a host booting before its
 * network, the database server restarting) is tried again, as oslo.db's max_retries and retry_interval
 * do; a refused login or an unknown database fails at once.
 */
export async function openServiceDatabase(location: string, retries: OpenRetries): Promise<Db> {
  for (let attempt = 1; ; attempt++) {
    try {
      return new Db(location);
    } catch (error) {
      const retriesLeft = retries.maxRetries < 0 || attempt <= retries.maxRetries;
      if (!(error instanceof PgConnectError) || !error.transient || !retriesLeft) throw error;
      const of = retries.maxRetries < 0 ? '' : ` of ${retries.maxRetries}`;
      retries.log(`WARNING: ${error.message}; trying again in ${retries.retryIntervalS} s (retry ${attempt}${of}, [database] max_retries and retry_interval)`);
      await new Promise((r) => setTimeout(r, retries.retryIntervalS * 1000));
    }
  }
}

/**
 * PostgreSQL tells every host that LISTENs to `tasksQueuedChannel` of each task queued, once its
 * transaction commits, with the task's queue as the payload: a volume host claims a task queued by an
 * API host at once instead of at its next poll (the lone-API-host figure of stop 26: every create and
 * delete waited up to a 2 s poll).
 */
export const tasksQueuedChannel = 'pumice_tasks_queued';
const pgTasksNotifySql = `
CREATE OR REPLACE FUNCTION pumice_tasks_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('${tasksQueuedChannel}', NEW.queue);
  RETURN NULL;
END $$;
CREATE TRIGGER pumice_tasks_queued AFTER INSERT ON tasks FOR EACH ROW EXECUTE FUNCTION pumice_tasks_queued();
`;

/** Thrown when the database was upgraded by a newer Pumice than this one. */
export class SchemaTooNewError extends Error {
  constructor(where: string, databaseVersion: number) {
    super(
      `the database ${where} has schema version ${databaseVersion}, newer than this Pumice knows (${codeSchemaVersion}): ` +
        'it was upgraded by a newer release. Run that newer Pumice, or restore the backup taken before the upgrade ' +
        '(pumice db upgrade leaves pumice.db.before-v<N> next to a SQLite database)',
    );
    this.name = 'SchemaTooNewError';
  }
}

/** The checkpoint thread (plain CommonJS: no TypeScript loader in the worker). */
const checkpointWorkerSource = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.path, { fileMustExist: true });
db.pragma('busy_timeout = 1000');
const timer = setInterval(() => {
  try { db.pragma('wal_checkpoint(PASSIVE)'); } catch {}
}, workerData.intervalMs);
parentPort.on('message', (message) => {
  if (message !== 'stop') return;
  clearInterval(timer);
  db.close();
  parentPort.close();
});
`;

export interface DbOptions {
  /** Apply pending migrations on open (default). `pumice db status` opens without. */
  migrate?: boolean;
}

type TransactionStatements = Record<'begin' | 'commit' | 'rollback' | 'savepoint' | 'release' | 'rollbackTo', Database.Statement>;

export class Db {
  readonly engine: DbEngine;
  /** The location for messages: a file path, or the URL without its password. */
  readonly where: string;
  private readonly sqliteDb: Database.Database | null = null;
  private readonly pg: PgSyncConnection | null = null;
  /** Prepared statements by SQL text, least recently used first (Map keeps insertion order). */
  private readonly statements = new Map<string, Database.Statement>();
  /** PostgreSQL translations by SQL text, bounded like the statement cache. */
  private readonly translations = new Map<string, string>();
  /** Open PostgreSQL transaction levels (0: none, 1: BEGIN, 2+: savepoints). */
  private pgDepth = 0;
  /** Open `transaction` calls (SQLite; PostgreSQL counts in pgDepth). */
  private sqliteDepth = 0;
  /** What runs once the outermost `transaction` commits (see afterCommit). */
  private afterCommitQueue: { committed: () => void; rolledBack?: () => void }[] = [];
  /** SQLite group commit (see enableGroupCommit): on, and what to do when a group's COMMIT fails. */
  private groupCommit: { onFailure: (error: Error) => void } | null = null;
  /** A write transaction that deferred transactions of this turn joined is open, its COMMIT due at the turn's end. */
  private groupOpen = false;

  /** `location`: a SQLite file path or a postgresql:// URL. */
  constructor(location: string, options: DbOptions = {}) {
    if (isPostgresUrl(location)) {
      this.engine = 'postgresql';
      this.where = redactConnectionUrl(location);
      this.pg = new PgSyncConnection(location);
    } else {
      this.engine = 'sqlite';
      this.where = location;
      this.sqliteDb = new Database(location);
      this.sqliteDb.pragma('journal_mode = WAL');
      // NORMAL in WAL mode is durable against process crashes (kill -9); only an
      // OS crash can lose the last transactions, which the reconciler tolerates.
      this.sqliteDb.pragma('synchronous = NORMAL');
      this.sqliteDb.pragma('foreign_keys = ON');
      this.sqliteDb.pragma('busy_timeout = 5000');
    }
    try {
      if (options.migrate ?? true) this.migrate();
      else if (this.schemaVersion() > codeSchemaVersion) throw new SchemaTooNewError(this.where, this.schemaVersion());
    } catch (error) {
      this.close();
      throw error;
    }
  }

  /**
   * PostgreSQL: `onNotify` gets the payload of each NOTIFY on `channel` (sent by any host, after its
   * transaction committed), on this thread's event loop. SQLite: nothing to listen to (false).
   */
  listen(channel: string, onNotify: (payload: string) => void): boolean {
    if (!this.pg) return false;
    this.pg.listen(channel, onNotify);
    return true;
  }

  /** The SQLite handle; only for SQLite-specific work (backups, tests). */
  get sqlite(): Database.Database {
    if (!this.sqliteDb) throw new Error(`the database is PostgreSQL (${this.where}), not SQLite`);
    return this.sqliteDb;
  }

  /**
   * Whether statements run now join one transaction with the caller's other writes. Not while only
   * a commit group is open: a write outside `transaction` then commits the group at once.
   */
  get inTransaction(): boolean {
    return this.sqliteDb ? this.sqliteDepth > 0 || (this.sqliteDb.inTransaction && !this.groupOpen) : this.pgDepth > 0;
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

  private pgQuery(sql: string, params: SqlValue[]): { rows: Row[]; rowCount: number } {
    let translated = this.translations.get(sql);
    if (translated === undefined) {
      translated = translateStatement(sql);
      this.translations.set(sql, translated);
      if (this.translations.size > statementCacheMax) {
        const oldest = this.translations.keys().next().value;
        if (oldest !== undefined) this.translations.delete(oldest);
      }
    }
    // An INSERT inside a transaction runs in its own savepoint: callers catch its unique-key conflict
    // (SQLITE_CONSTRAINT_PRIMARYKEY) and go on, which an aborted PostgreSQL transaction would not allow.
    // Two more round trips, so only for INSERTs, the statements whose conflicts callers expect.
    const guarded = this.pgDepth > 0 && /^\s*INSERT\b/i.test(sql);
    return this.pg!.query(translated, params, guarded);
  }

  /** Prepared statements cached now (bounded by statementCacheMax). */
  get cachedStatementCount(): number {
    return this.sqliteDb ? this.statements.size : this.translations.size;
  }

  all<T = Row>(sql: string, ...params: SqlValue[]): T[] {
    if (this.pg) return this.pgQuery(sql, params).rows as T[];
    const statement = this.statement(sql);
    const rows = statement.all(...params) as T[];
    this.afterStatement(statement);
    return rows;
  }

  get<T = Row>(sql: string, ...params: SqlValue[]): T | undefined {
    if (this.pg) return this.pgQuery(sql, params).rows[0] as T | undefined;
    const statement = this.statement(sql);
    const row = statement.get(...params) as T | undefined;
    this.afterStatement(statement);
    return row;
  }

  run(sql: string, ...params: SqlValue[]): { changes: number } {
    if (this.pg) return { changes: this.pgQuery(sql, params).rowCount };
    const statement = this.statement(sql);
    const result = statement.run(...params);
    this.afterStatement(statement);
    return { changes: result.changes };
  }

  /** A write outside `transaction` is committed when it returns, as it would be on its own: with the group it joined. */
  private afterStatement(statement: Database.Statement): void {
    if (this.groupOpen && this.sqliteDepth === 0 && !statement.readonly) this.commitGroup();
  }

  /** True inside `transaction` (not in one opened some other way): `afterCommit` can be used. */
  get inOwnTransaction(): boolean {
    return this.pg ? this.pgDepth > 0 : this.sqliteDepth > 0;
  }

  /**
   * Runs `fn` right after the outermost `transaction` running now commits, or never if it
   * (or the savepoint that registered it) rolls back; at once outside a transaction. For
   * in-memory work that must follow only writes that were kept (a task claimed in the
   * transaction that queued it is launched); `rolledBack` runs instead when they were undone.
   * Neither may throw.
   */
  afterCommit(committed: () => void, rolledBack?: () => void): void {
    if (!this.inOwnTransaction && !this.groupOpen) committed();
    else this.afterCommitQueue.push({ committed, rolledBack });
  }

  private runAfterCommit(): void {
    const queue = this.afterCommitQueue;
    this.afterCommitQueue = [];
    for (const entry of queue) entry.committed();
  }

  /** Drops what was registered since `mark` (its writes were rolled back). */
  private dropAfterCommit(mark: number): void {
    for (const entry of this.afterCommitQueue.splice(mark)) entry.rolledBack?.();
  }

  /**
   * Runs `fn` in one transaction. A nested call runs in a savepoint of the
   * outer one: if it throws, its writes alone are undone, even when the outer
   * code catches the error and goes on.
   *
   * `deferCommit` (SQLite, with enableGroupCommit): the transaction is kept, but
   * its COMMIT is shared with the other deferred transactions of this event-loop
   * turn, at the turn's end, before its API replies are written and its task
   * starts and afterCommit work run (src/util/turn-end.ts). Only for a
   * transaction after which nothing leaves the process before the turn ends but
   * a reply: a crash before that COMMIT loses it, and nobody was told it
   * happened. Any other transaction or write that runs meanwhile commits the
   * group with it, so no write waits for the turn's end unless it asked to.
   */
  transaction<T>(fn: () => T, options: { deferCommit?: boolean } = {}): T {
    if (!this.pg) {
      const logicalOuter = this.sqliteDepth === 0;
      const defer = logicalOuter && options.deferCommit === true && this.groupCommit !== null;
      const queued = this.afterCommitQueue.length;
      if (defer && !this.groupOpen && !this.sqlite.inTransaction) this.openGroup();
      // Its own BEGIN … COMMIT only when no transaction (and no group) is open.
      const ownCommit = !this.sqlite.inTransaction;
      this.sqliteDepth++;
      let result: T;
      try {
        result = this.sqliteTransaction(fn, ownCommit);
      } catch (error) {
        this.dropAfterCommit(queued);
        throw error;
      } finally {
        this.sqliteDepth--;
      }
      if (ownCommit) this.runAfterCommit();
      else if (logicalOuter && this.groupOpen && !defer) this.commitGroup();
      return result;
    }
    const depth = this.pgDepth;
    const savepoint = `pumice_level_${depth}`;
    const queued = this.afterCommitQueue.length;
    this.pg.exec(depth === 0 ? `BEGIN; SELECT pg_advisory_xact_lock(${pgTransactionLockKey})` : `SAVEPOINT ${savepoint}`);
    this.pgDepth++;
    let result: T;
    try {
      result = fn();
      if (result instanceof Promise) throw new TypeError('Transaction function cannot return a promise');
      this.pg.exec(depth === 0 ? 'COMMIT' : `RELEASE SAVEPOINT ${savepoint}`);
    } catch (error) {
      this.dropAfterCommit(queued);
      this.pg.exec(depth === 0 ? 'ROLLBACK' : `ROLLBACK TO SAVEPOINT ${savepoint}; RELEASE SAVEPOINT ${savepoint}`);
      throw error;
    } finally {
      this.pgDepth = depth;
    }
    if (depth === 0) this.runAfterCommit();
    return result;
  }

  /**
   * Group commit for a server's SQLite database. A volume cycle's four write transactions each
   * paid their own COMMIT (a WAL append of every page they touched, the locks, the WAL index),
   * and a busy server runs several in one event-loop turn, mostly over the same pages (the newest
   * rows of tasks and volumes and their indexes): transactions that ask for it
   * (`transaction(fn, { deferCommit: true })`) now share one COMMIT at the end of the turn, before
   * any of the turn's replies leave. `onFailure` runs when that COMMIT fails (a full or failing
   * disk): its transactions' callers were told they succeeded and the replies are about to say so;
   * the server exits rather than send them. Off by default (tools, tests that use a Db directly).
   */
  enableGroupCommit(onFailure: (error: Error) => void): void {
    if (this.engine === 'sqlite') this.groupCommit = { onFailure };
  }

  private openGroup(): void {
    this.transactionStatementsOf().begin.run();
    this.groupOpen = true;
    atTurnEndCommit(() => {
      try {
        this.commitGroup();
      } catch (error) {
        this.groupCommit?.onFailure(error as Error);
      }
    });
  }

  /** Commits the open group, then runs the afterCommit work of its transactions; undoes it all if COMMIT fails (and throws). */
  private commitGroup(): void {
    if (!this.groupOpen) return;
    this.groupOpen = false;
    const s = this.transactionStatementsOf();
    try {
      s.commit.run();
    } catch (error) {
      if (this.sqlite.inTransaction) s.rollback.run();
      this.dropAfterCommit(0);
      throw error;
    }
    this.runAfterCommit();
  }

  /** BEGIN IMMEDIATE … COMMIT, or a savepoint inside one; prepared once (see sqliteTransaction). */
  private transactionStatements: TransactionStatements | null = null;

  private transactionStatementsOf(): TransactionStatements {
    return (this.transactionStatements ??= {
      begin: this.sqlite.prepare('BEGIN IMMEDIATE'),
      commit: this.sqlite.prepare('COMMIT'),
      rollback: this.sqlite.prepare('ROLLBACK'),
      savepoint: this.sqlite.prepare('SAVEPOINT pumice_nested'),
      release: this.sqlite.prepare('RELEASE pumice_nested'),
      rollbackTo: this.sqlite.prepare('ROLLBACK TO pumice_nested'),
    });
  }

  /**
   * What better-sqlite3's `db.transaction(fn).immediate()` does, without building its four wrapper
   * functions at every call (a volume cycle runs four write transactions): BEGIN IMMEDIATE (or a
   * savepoint when nested), fn, COMMIT (or RELEASE); on a throw, ROLLBACK (TO) if SQLite has not
   * rolled back already.
   */
  private sqliteTransaction<T>(fn: () => T, outer: boolean): T {
    const s = this.transactionStatementsOf();
    (outer ? s.begin : s.savepoint).run();
    try {
      const result = fn();
      if (result && typeof (result as { then?: unknown }).then === 'function') throw new TypeError('Transaction function cannot return a promise');
      (outer ? s.commit : s.release).run();
      return result;
    } catch (error) {
      if (this.sqlite.inTransaction) {
        if (outer) s.rollback.run();
        else {
          s.rollbackTo.run();
          s.release.run();
        }
      }
      throw error;
    }
  }

  /**
   * SQLite: calls `onCommit` within `intervalMs` after another connection to the file (another
   * process: `pumice tasks retry`, a CLI, a second server on the file) committed: SQLite's
   * data_version moves only for other connections' commits (and a checkpoint that resets the
   * WAL, which costs a spurious call at most). One pragma per interval, no I/O. PostgreSQL and an
   * in-memory database: nothing to watch (false).
   */
  watchOtherCommits(intervalMs: number, onCommit: () => void): boolean {
    if (!this.sqliteDb || this.where === ':memory:') return false;
    this.otherCommitListeners.push(onCommit);
    if (!this.otherCommitTimer) {
      const sqlite = this.sqliteDb;
      let seen = sqlite.pragma('data_version', { simple: true });
      this.otherCommitTimer = setInterval(() => {
        let version: unknown;
        try {
          version = sqlite.pragma('data_version', { simple: true });
        } catch {
          return; // busy or closing: the next tick looks again
        }
        if (version === seen) return;
        seen = version;
        for (const listener of this.otherCommitListeners) listener();
      }, intervalMs);
      this.otherCommitTimer.unref();
    }
    return true;
  }

  private otherCommitTimer: ReturnType<typeof setInterval> | undefined;
  private readonly otherCommitListeners: (() => void)[] = [];

  close(): void {
    // The turn's deferred transactions are kept (a COMMIT that fails here throws to the closer).
    this.commitGroup();
    clearInterval(this.otherCommitTimer);
    this.otherCommitTimer = undefined;
    this.checkpointer?.postMessage('stop');
    this.checkpointer = undefined;
    if (this.pg) this.pg.close();
    else this.sqliteDb?.close();
  }

  private checkpointer: Worker | undefined;

  /**
   * Moves SQLite's WAL checkpoints off the request path (the server calls it;
   * CLI tools keep the default). A checkpoint copies the WAL back into the
   * database and fsyncs both; run by the connection that commits, it stalls
   * every request behind that commit (about 10% of volume cycles/s here). A
   * worker thread with its own connection checkpoints (PASSIVE: never waits
   * for a writer) every `intervalMs`; this connection's automatic checkpoint
   * stays as a backstop at 10,000 pages (40 MiB of WAL) should the worker stop.
   */
  startBackgroundCheckpoints(intervalMs = 200): void {
    if (this.engine !== 'sqlite' || this.checkpointer || this.where === ':memory:') return;
    this.sqlite.pragma('wal_autocheckpoint = 10000');
    const worker = new Worker(checkpointWorkerSource, {
      eval: true,
      execArgv: [],
      workerData: { path: this.where, intervalMs, driver: createRequire(import.meta.url).resolve('better-sqlite3') },
    });
    worker.unref();
    // A failed checkpoint is retried at the next tick; the backstop keeps the WAL bounded meanwhile.
    worker.on('error', () => undefined);
    this.checkpointer = worker;
  }

  /** The schema version recorded in the database (0 when empty). */
  schemaVersion(): number {
    if (this.pg) {
      const table = this.pg.query("SELECT to_regclass('schema_version') IS NOT NULL AS present", [], false).rows[0];
      if (!table?.['present']) return 0;
      return Number(this.pg.query('SELECT version FROM schema_version', [], false).rows[0]?.['version'] ?? 0);
    }
    const table = this.sqlite.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").get();
    if (!table) return 0;
    const row = this.sqlite.prepare('SELECT version FROM schema_version').get() as { version: number } | undefined;
    return row?.version ?? 0;
  }

  /**
   * Applies the migrations newer than the database's version, each in its own
   * transaction (DDL is transactional on both engines). Refuses a database newer
   * than the code. On PostgreSQL the transaction lock keeps two hosts starting at
   * once from both migrating. Returns the versions applied.
   */
  migrate(): number[] {
    const applied: number[] = [];
    if (this.pg) {
      this.transaction(() => {
        this.pg!.exec('CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)');
        let version = this.schemaVersion();
        if (version > codeSchemaVersion) throw new SchemaTooNewError(this.where, version);
        if (!this.pg!.query('SELECT 1 FROM schema_version', [], false).rows.length) this.pg!.exec('INSERT INTO schema_version (version) VALUES (0)');
        for (const migration of migrations) {
          if (migration.version <= version) continue;
          this.pg!.exec(translateSchema(migration.sql));
          this.pg!.exec(`UPDATE schema_version SET version = ${migration.version}`);
          version = migration.version;
          applied.push(version);
        }
        // Not a migration (SQLite has no NOTIFY), made under the migration's lock by the first start that
        // lacks it: CREATE TRIGGER locks the tasks table against every host's claims, so only when missing.
        if (!this.pg!.query("SELECT 1 FROM pg_trigger WHERE tgname = 'pumice_tasks_queued'", [], false).rows.length) this.pg!.exec(pgTasksNotifySql);
      });
      return applied;
    }
    const sqlite = this.sqlite;
    sqlite.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
    const row = sqlite.prepare('SELECT version FROM schema_version').get() as { version: number } | undefined;
    let version = row?.version ?? 0;
    if (version > codeSchemaVersion) throw new SchemaTooNewError(this.where, version);
    if (!row) sqlite.prepare('INSERT INTO schema_version (version) VALUES (0)').run();
    for (const migration of migrations) {
      if (migration.version <= version) continue;
      sqlite.transaction(() => {
        sqlite.exec(migration.sql);
        sqlite.prepare('UPDATE schema_version SET version = ?').run(migration.version);
      })();
      version = migration.version;
      applied.push(version);
    }
    return applied;
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
