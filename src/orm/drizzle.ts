import { DrizzleQueryError, is, sql, type SQL } from 'drizzle-orm';
import { MySqlTransaction } from 'drizzle-orm/mysql-core';
import { PgTransaction } from 'drizzle-orm/pg-core';
import type { DialectName } from '../dialects/dialect-name.js';
import { SERVER_STATUS_AUTOCOMMIT, SERVER_STATUS_IN_TRANS, type OrmTransaction, type SqlResult } from '../dialects/executor.js';
import { ConfigError, NotInTransactionError } from '../errors.js';
import { postgresArrayLiteral } from './pg-array.js';
import { splitMysql, splitPostgres, type SplitSql } from './placeholders.js';

/** What txoutbox needs of a Drizzle transaction (PostgreSQL or MySQL, any driver): `execute` and `rollback`. */
export interface DrizzleTransactionLike {
  execute(query: SQL): PromiseLike<unknown>;
  rollback(): unknown;
}

/**
 * Wraps the `tx` of `db.transaction(async (tx) => ...)` (or of a nested `tx.transaction`) for txoutbox:
 * `await outbox.enqueue(fromDrizzle(tx), message)`. txoutbox's statements run through `tx.execute`, every value
 * bound as a parameter. A Drizzle database that is not a transaction is refused: each statement would autocommit.
 * So is a `tx` whose transaction has ended (kept past its callback): Drizzle would run the statement on the
 * connection the transaction gave back to the pool, outside any transaction.
 * Works with node-postgres, postgres.js and mysql2; errors reach txoutbox as the driver's own (Drizzle wraps them).
 *
 * @example
 * ```ts
 * import { fromDrizzle } from 'txoutbox/drizzle';
 *
 * await db.transaction(async (tx) => {
 *   await tx.insert(orders).values(order);
 *   await outbox.enqueue(fromDrizzle(tx), { topic: 'orders.placed', key: order.customer, payload: order });
 * });
 * ```
 */
export function fromDrizzle<TX extends DrizzleTransactionLike>(tx: TX): OrmTransaction<TX> {
  const wire = is(tx, PgTransaction) ? WIRE.postgres : is(tx, MySqlTransaction) ? WIRE.mysql : null;
  if (wire === null) {
    if (
      typeof (tx as { execute?: unknown } | null)?.execute === 'function' &&
      typeof (tx as { rollback?: unknown }).rollback !== 'function'
    ) {
      throw new NotInTransactionError('a Drizzle database that is not a transaction (use db.transaction(async (tx) => ...))');
    }
    if (typeof (tx as { rollback?: unknown } | null)?.rollback !== 'function') {
      throw new NotInTransactionError('an object that is not a Drizzle transaction');
    }
    throw new ConfigError('txoutbox supports Drizzle on PostgreSQL (pg-core) and MySQL (mysql-core) only');
  }
  const open = opennessOf(tx, wire);
  if (open.now?.() === false) throw ended();
  return {
    txoutboxOrmTransaction: true,
    orm: 'drizzle',
    handle: tx,
    async query(text, parameters) {
      const split = wire.split(text, parameters);
      try {
        // Checked per statement: Drizzle's tx keeps working after it ended, on the connection it gave back.
        if (!(await open.check())) throw ended();
        return wire.result(await tx.execute(drizzleSql(split.text, split.parameters.map(wire.value))));
      } catch (error) {
        throw unwrapped(error);
      }
    },
  };
}

/** How txoutbox's SQL goes through Drizzle on each database, and how the driver's answer comes back. */
interface DrizzleWire {
  split(text: string, parameters: readonly unknown[]): SplitSql;
  value(value: unknown): unknown;
  result(result: unknown): SqlResult;
  /** Asks the server whether `tx` is still the transaction it was, for drivers that keep no state of it. */
  asked(tx: DrizzleTransactionLike): () => Promise<boolean>;
}

function ended(): NotInTransactionError {
  return new NotInTransactionError('a Drizzle transaction that has already committed or rolled back');
}

/** Whether a Drizzle transaction is still open: `now` where the driver's own state tells at once, else `check` asks. */
interface Openness {
  now?: () => boolean;
  check(): boolean | Promise<boolean>;
}

/** What a Drizzle session holds: node-postgres's client, mysql2's (promise) connection, postgres.js's scoped sql. */
interface PgClientState {
  getTransactionStatus(): string | null;
  release?: unknown;
}
interface Mysql2PoolConnectionState {
  _released: boolean;
  lastActiveTime?: unknown;
}

/**
 * Each `tx`'s openness, taken the first time it is wrapped (Drizzle makes a `tx` per transaction and savepoint), so
 * one wrapped again after it ended, inside another transaction on the same connection, is still told apart.
 */
const OPENNESS = new WeakMap<DrizzleTransactionLike, Openness>();

function opennessOf(tx: DrizzleTransactionLike, wire: DrizzleWire): Openness {
  let open = OPENNESS.get(tx);
  if (open === undefined) OPENNESS.set(tx, (open = transactionOpen(tx, wire)));
  return open;
}

/**
 * Drizzle keeps no state of a transaction's end, so the driver's is read. node-postgres: the client's transaction
 * status, and pg-pool's `release`, a new function for each checkout (so a connection another transaction has
 * borrowed since is told apart). mysql2's pool connection: `_released` (in the pool) and `lastActiveTime`, set by
 * each release. PGlite: its transaction's `closed`. Any other driver (postgres.js, a single mysql2 connection) keeps
 * nothing: the server is asked, one round trip per statement.
 */
function transactionOpen(tx: DrizzleTransactionLike, wire: DrizzleWire): Openness {
  const client = (tx as { session?: { client?: unknown } }).session?.client as Record<string, unknown> | undefined;
  if (typeof client?.getTransactionStatus === 'function') {
    const pg = client as unknown as PgClientState;
    const release = pg.release;
    const now = () => pg.getTransactionStatus() !== 'I' && pg.release === release;
    return { now, check: now };
  }
  if (typeof client?.closed === 'boolean' && typeof client.rollback === 'function') {
    // PGlite's Transaction, which says when it has closed.
    const now = () => client.closed === false;
    return { now, check: now };
  }
  const core = (typeof client?.connection === 'object' ? client.connection : client) as Record<string, unknown> | undefined;
  if (typeof core?._released === 'boolean') {
    const mysql = core as unknown as Mysql2PoolConnectionState;
    const lastActive = mysql.lastActiveTime;
    const now = () => !mysql._released && mysql.lastActiveTime === lastActive;
    return { now, check: now };
  }
  return { check: wire.asked(tx) };
}

/**
 * PostgreSQL: the transaction's start time and the backend, read by the first statement; a later statement in
 * another transaction (or none: then the two timestamps are equal) sees different ones.
 */
function askedPostgres(tx: DrizzleTransactionLike): () => Promise<boolean> {
  let identity: string | undefined;
  return async () => {
    const { rows } = postgresResult(
      await tx.execute(
        sql.raw(
          `SELECT pg_backend_pid() || ' ' || transaction_timestamp() AS identity, transaction_timestamp() <> statement_timestamp() AS open`,
        ),
      ),
    );
    const row = rows[0] as { identity?: unknown; open?: unknown } | undefined;
    if (row?.open !== true) return false;
    identity ??= String(row.identity);
    return identity === String(row.identity);
  };
}

/** MySQL: `DO 0`'s OK packet carries the server's status flags (in a transaction, or autocommit off). */
function askedMysql(tx: DrizzleTransactionLike): () => Promise<boolean> {
  return async () => {
    const [header] = (await tx.execute(sql.raw('DO 0'))) as [{ serverStatus?: unknown } | undefined];
    const status = header?.serverStatus;
    // A driver whose answer has no status flags cannot be asked; it is taken at its word.
    if (typeof status !== 'number') return true;
    return (status & SERVER_STATUS_IN_TRANS) !== 0 || (status & SERVER_STATUS_AUTOCOMMIT) === 0;
  };
}

/**
 * The SQL again, each value a bound parameter (Drizzle writes `$n` on PostgreSQL and `?` on MySQL itself).
 * `sql.param` keeps an array one parameter: a bare array in the `sql` template would be spread into a list.
 */
function drizzleSql(text: readonly string[], parameters: readonly unknown[]): SQL {
  const query = sql.raw(text[0]!);
  parameters.forEach((value, i) => {
    query.append(sql`${sql.param(value)}`);
    query.append(sql.raw(text[i + 1]!));
  });
  return query;
}

/**
 * Arrays and Dates as the text node-postgres sends for them, which txoutbox's SQL casts (`$1::bytea[]`,
 * `$2::timestamptz`). postgres.js would otherwise declare an array of Buffers as `bytea` (by its first element) and
 * the cast fails, and under Drizzle it cannot send a Date at all (Drizzle makes its date serializers pass values
 * through as strings).
 */
function postgresValue(value: unknown): unknown {
  if (Array.isArray(value)) return postgresArrayLiteral(value);
  if (value instanceof Date) return value.toISOString();
  return value;
}

/**
 * Drizzle wraps a failed statement in a DrizzleQueryError whose `cause` is the driver's error; txoutbox reads the
 * driver's `code` (SQLSTATE) and `errno` (MySQL), so the driver's error is what goes on.
 */
function unwrapped(error: unknown): unknown {
  // A second copy of drizzle-orm has a DrizzleQueryError class of its own, so its shape counts too.
  const wrapped =
    error instanceof DrizzleQueryError ||
    (error instanceof Error && error.message.startsWith('Failed query: ') && 'query' in error && 'params' in error);
  return wrapped && (error as Error).cause !== undefined ? (error as Error).cause : error;
}

/**
 * node-postgres (and neon, vercel-postgres) resolve with `{ rows, rowCount }`, PGlite with `{ rows, affectedRows }`,
 * postgres.js with an array of the rows that carries `count`.
 */
function postgresResult(result: unknown): SqlResult {
  if (Array.isArray(result)) {
    const count = (result as { count?: unknown }).count;
    return { rows: [...result] as Record<string, unknown>[], affectedRows: typeof count === 'number' ? count : result.length };
  }
  const { rows, rowCount, affectedRows } = result as {
    rows?: Record<string, unknown>[];
    rowCount?: number | null;
    affectedRows?: number;
  };
  return { rows: rows ?? [], affectedRows: rowCount ?? affectedRows ?? 0 };
}

/** mysql2 resolves with `[rows, fields]`, or `[ResultSetHeader, undefined]` for a write. */
function mysqlResult(result: unknown): SqlResult {
  const [first] = result as [unknown, unknown];
  if (Array.isArray(first)) return { rows: first as Record<string, unknown>[], affectedRows: 0 };
  return { rows: [], affectedRows: Number((first as { affectedRows?: number } | undefined)?.affectedRows ?? 0) };
}

const WIRE: Record<DialectName, DrizzleWire> = {
  postgres: { split: splitPostgres, value: postgresValue, result: postgresResult, asked: askedPostgres },
  mysql: { split: splitMysql, value: (value) => value, result: mysqlResult, asked: askedMysql },
};
