import type { CompiledQuery, Kysely, QueryResult } from 'kysely';
import { NotInTransactionError, TxOutboxError } from '../errors.js';
import type { DialectName } from './dialect-name.js';

/** A Kysely `Transaction` (or `ControlledTransaction`), seen structurally so any compatible Kysely copy works. */
export interface KyselyTransactionLike {
  readonly isTransaction: boolean;
  executeQuery<R>(query: CompiledQuery<R>): Promise<QueryResult<R>>;
}

/** A node-postgres `Client` or `PoolClient` on which `BEGIN` has been run. */
export interface PgClientLike {
  query(text: string, values?: unknown[]): Promise<{ rows: unknown[]; rowCount: number | null }>;
  getTransactionStatus?(): string | null;
}

/** A mysql2 connection (callback or promise API) on which a transaction has been begun. */
export interface MysqlConnectionLike {
  query(...args: never[]): unknown;
}

/**
 * An ORM's open transaction, made into something txoutbox can write in: what `fromPrisma(tx)`, `fromDrizzle(tx)`,
 * `fromKnex(trx)` and the other ORM modules return. Each module checks that its handle really is a transaction.
 */
export interface OrmTransaction<Handle = unknown> {
  /** Brands the object for txoutbox (an ORM's own transaction object is never mistaken for one). */
  readonly txoutboxOrmTransaction: true;
  /** The ORM, for errors ("prisma", "drizzle", ...). */
  readonly orm: string;
  /** The ORM's own handle, as given: a processOnce handler can use it. */
  readonly handle: Handle;
  /**
   * Runs one statement inside the transaction, with the dialect's placeholders ($1, $2 on PostgreSQL; ? on MySQL).
   * Parameters may be strings, numbers, bigints, booleans, null, Dates, Buffers and (PostgreSQL) arrays. A failure
   * must reject with the database driver's own error, or an error carrying the same `code` (PostgreSQL SQLSTATE) or
   * `errno` (MySQL error number) at its top level, with the ORM's error as its `cause`.
   */
  query(sql: string, parameters: readonly unknown[]): Promise<SqlResult>;
}

/** Whatever holds the caller's open transaction. */
export type TransactionLike = KyselyTransactionLike | PgClientLike | MysqlConnectionLike | OrmTransaction;

export interface SqlResult {
  rows: Record<string, unknown>[];
  affectedRows: number;
}

/** Runs compiled SQL on the caller's transaction, whatever client holds it. */
export type SqlExecutor = (query: CompiledQuery) => Promise<SqlResult>;

/** PostgreSQL's SQLSTATE for "current transaction is aborted, commands ignored until end of transaction block". */
const PG_IN_FAILED_TRANSACTION = '25P02';

function failedTransaction(cause?: unknown): TxOutboxError {
  return new TxOutboxError(
    'The transaction has already failed (an earlier statement in it errored); roll it back and retry the work.',
    'TXOUTBOX_TRANSACTION_FAILED',
    { cause },
  );
}

/** Turns PostgreSQL's "transaction is aborted" into the typed error, however the failure was noticed. */
function withFailedTransactionCheck(run: SqlExecutor): SqlExecutor {
  return async (query) => {
    try {
      return await run(query);
    } catch (error) {
      if ((error as { code?: unknown } | null)?.code === PG_IN_FAILED_TRANSACTION) throw failedTransaction(error);
      throw error;
    }
  };
}

/** MySQL protocol server status flags (include/mysql_com.h). */
export const SERVER_STATUS_IN_TRANS = 0x0001;
export const SERVER_STATUS_AUTOCOMMIT = 0x0002;

/** Runs compiled SQL on a Kysely instance or transaction. */
export function kyselyExecutor(db: { executeQuery<R>(query: CompiledQuery<R>): Promise<QueryResult<R>> }): SqlExecutor {
  return async (query) => {
    const result = await db.executeQuery(query);
    return { rows: result.rows as Record<string, unknown>[], affectedRows: Number(result.numAffectedRows ?? 0n) };
  };
}

/** Kysely's own refusal of a transaction that has committed or rolled back (a bare Error, before anything is sent). */
const KYSELY_ENDED = /^Transaction is already (?:committed|rolled back)$/;

/**
 * Runs compiled SQL on the caller's Kysely transaction (a plain one, or MikroORM v7's context): a transaction that
 * has ended is refused with NotInTransactionError, as every other handle is, instead of Kysely's bare Error.
 */
export function callerKyselyExecutor(trx: KyselyTransactionLike): SqlExecutor {
  const run = kyselyExecutor(trx);
  return async (query) => {
    try {
      return await run(query);
    } catch (error) {
      if (error instanceof Error && KYSELY_ENDED.test(error.message)) {
        throw new NotInTransactionError(`a Kysely transaction that has already ended (${error.message})`);
      }
      throw error;
    }
  };
}

/**
 * Runs work in a READ COMMITTED transaction of the relay's own: each statement reads what is committed when it
 * starts (the relay relies on that after taking key locks), and InnoDB takes no gap locks at that level.
 */
export function readCommittedTransaction<DB>(db: Kysely<DB>) {
  return <T>(work: (trx: SqlExecutor) => Promise<T>): Promise<T> =>
    db
      .transaction()
      .setIsolationLevel('read committed')
      .execute((trx) => work(kyselyExecutor(trx)));
}

/**
 * Runs single statements of the relay's own at READ COMMITTED. Without a transaction a statement runs at the
 * server's default level, and a REPEATABLE READ default would turn SKIP LOCKED contention into serialization
 * failures; so the default is asked once, and only when it is not READ COMMITTED does each statement get a
 * transaction of its own (two round-trips more).
 */
export function readCommittedStatements<DB>(db: Kysely<DB>, defaultLevel: CompiledQuery): SqlExecutor {
  const plain = kyselyExecutor(db);
  const transaction = readCommittedTransaction(db);
  let mode: Promise<'plain' | 'transaction'> | null = null;
  const detect = async () => {
    const { rows } = await plain(defaultLevel);
    return String(Object.values(rows[0] ?? {})[0] ?? '').toLowerCase() === 'read committed' ? 'plain' : 'transaction';
  };
  return async (query) => {
    mode ??= detect().catch((error: unknown) => {
      mode = null;
      throw error;
    });
    return (await mode) === 'plain' ? plain(query) : transaction((trx) => trx(query));
  };
}

export function isOrmTransaction(value: unknown): value is OrmTransaction {
  return (value as Partial<OrmTransaction> | null)?.txoutboxOrmTransaction === true;
}

export function isKyselyLike(value: unknown): value is KyselyTransactionLike {
  const candidate = value as Partial<KyselyTransactionLike> | null;
  return typeof candidate?.executeQuery === 'function' && typeof candidate.isTransaction === 'boolean';
}

/**
 * Wraps the caller's transaction handle after checking that it really is an open transaction: an enqueue on a
 * plain connection would autocommit the message whether or not the business work later commits.
 */
export async function transactionExecutor(trx: unknown, dialect: DialectName): Promise<SqlExecutor> {
  if (isOrmTransaction(trx)) {
    const run: SqlExecutor = (query) => trx.query(query.sql, query.parameters);
    return dialect === 'postgres' ? withFailedTransactionCheck(run) : run;
  }
  if (isKyselyLike(trx)) {
    if (!trx.isTransaction) throw new NotInTransactionError('a Kysely instance that is not a transaction');
    return dialect === 'postgres' ? withFailedTransactionCheck(callerKyselyExecutor(trx)) : callerKyselyExecutor(trx);
  }
  if (typeof trx !== 'object' || trx === null || typeof (trx as { query?: unknown }).query !== 'function') {
    throw new NotInTransactionError(describe(trx));
  }
  if (typeof (trx as { getConnection?: unknown }).getConnection === 'function' || 'totalCount' in trx) {
    throw new NotInTransactionError('a connection pool (each query may run on a different connection)');
  }
  return dialect === 'postgres' ? pgExecutor(trx as PgClientLike) : mysqlExecutor(trx as MysqlConnectionLike);
}

async function pgExecutor(client: PgClientLike): Promise<SqlExecutor> {
  const run: SqlExecutor = async (query) => {
    const result = await client.query(query.sql, [...query.parameters]);
    return { rows: result.rows as Record<string, unknown>[], affectedRows: result.rowCount ?? 0 };
  };
  // node-postgres tracks the server's ReadyForQuery status; older versions lack it, so ask the server instead.
  const status =
    typeof client.getTransactionStatus === 'function' ? client.getTransactionStatus() : await askedTransactionStatus(client);
  // The client may not have read the server's "failed" status yet when a failed query rejects; then the server's
  // own 25P02 answer to our statement is translated instead.
  if (status === 'E') throw failedTransaction();
  if (status !== 'T') throw new NotInTransactionError('a pg client that is not inside BEGIN ... COMMIT');
  return withFailedTransactionCheck(run);
}

/** For node-postgres versions without getTransactionStatus; an object whose query() does not answer like pg's is no client. */
async function askedTransactionStatus(client: PgClientLike): Promise<string> {
  const answer = (await client.query('SELECT transaction_timestamp() <> statement_timestamp() AS in_tx')) as unknown;
  const rows = (answer as { rows?: unknown } | null | undefined)?.rows;
  if (!Array.isArray(rows)) throw new NotInTransactionError('an object whose query() does not answer like a pg client');
  return rows.some((row) => (row as { in_tx?: boolean }).in_tx === true) ? 'T' : 'I';
}

interface MysqlCallbackConnection {
  query(sql: string, values: unknown[], callback: (error: Error | null, result: unknown) => void): void;
}

async function mysqlExecutor(connection: MysqlConnectionLike): Promise<SqlExecutor> {
  // mysql2/promise wraps the callback connection and exposes it as `.connection`.
  const inner = (connection as { connection?: unknown }).connection;
  const callbackConnection = (
    typeof (inner as { query?: unknown } | undefined)?.query === 'function' ? inner : connection
  ) as MysqlCallbackConnection;
  const raw = (sql: string, values: unknown[]) =>
    new Promise<unknown>((resolve, reject) =>
      callbackConnection.query(sql, values, (error, result) => (error ? reject(error) : resolve(result))),
    );
  const run: SqlExecutor = async (query) => {
    const result = await raw(query.sql, [...query.parameters]);
    if (Array.isArray(result)) return { rows: result as Record<string, unknown>[], affectedRows: 0 };
    return { rows: [], affectedRows: Number((result as { affectedRows?: number }).affectedRows ?? 0) };
  };
  // `DO 0` does nothing but its OK packet carries the server status flags, on MySQL and MariaDB alike.
  const header = (await probe(callbackConnection)) as { serverStatus?: number };
  const status = header.serverStatus ?? 0;
  const inTransaction = (status & SERVER_STATUS_IN_TRANS) !== 0 || (status & SERVER_STATUS_AUTOCOMMIT) === 0;
  if (!inTransaction) throw new NotInTransactionError('a mysql2 connection in autocommit mode (no transaction begun)');
  return run;
}

/**
 * `DO 0` on the connection. mysql2's query() returns its Query (an event emitter) and calls back later; an object
 * whose query() returns anything else would never call back: it is refused at once instead of hanging.
 */
function probe(connection: MysqlCallbackConnection): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const pending: unknown = connection.query('DO 0', [], (error, result) => (error ? reject(error) : resolve(result)));
    if (typeof (pending as { on?: unknown } | null | undefined)?.on !== 'function') {
      reject(new NotInTransactionError('an object whose query() does not answer like a mysql2 connection'));
    }
  });
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value !== 'object') return `a ${typeof value}`;
  return `an object without a query method (${value.constructor?.name ?? 'Object'})`;
}
