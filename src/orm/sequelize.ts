/**
 * Sequelize v6: `outbox.enqueue(fromSequelize(t), message)` inside `sequelize.transaction(async (t) => ...)`.
 * Nothing is imported from sequelize at run time.
 */
import type { Transaction } from 'sequelize';
import type { OrmTransaction, SqlResult } from '../dialects/executor.js';
import { ConfigError, NotInTransactionError } from '../errors.js';
import { mariadbQuery, type MariadbConnectionLike } from './mariadb-connector.js';

/** What a v6 Transaction holds at run time, beyond its declared type. */
interface TransactionInternals {
  /** 'commit' or 'rollback' once the transaction has ended. */
  finished?: string;
  /** The driver connection the transaction (and its savepoints) runs on. */
  connection?: unknown;
  sequelize?: { getDialect?(): string };
}

type Run = (sql: string, parameters: unknown[]) => Promise<SqlResult>;

/**
 * Wraps an open Sequelize transaction for `enqueue` and `processOnce`. Statements run on the transaction's own
 * driver connection (`t.connection`: a pg Client, a mysql2 connection, or a mariadb connector connection), as
 * txoutbox compiled them, so a failure rejects with the driver's own error (MySQL's 1062 for a duplicate id, not
 * Sequelize's UniqueConstraintError around it). Not through `sequelize.query`: its bind parameters are `$1` on
 * every dialect and are found by a pattern that also matches inside string literals, and its errors are wrapped.
 * So Sequelize's `logging` does not show txoutbox's statements. A transaction that has committed or rolled back
 * (`t.finished`) is refused with NotInTransactionError.
 *
 * @example
 * ```ts
 * import { fromSequelize } from 'txoutbox/sequelize';
 *
 * await sequelize.transaction(async (t) => {
 *   await Order.create(order, { transaction: t });
 *   await outbox.enqueue(fromSequelize(t), { topic: 'orders.placed', key: order.customer, payload: order });
 * });
 * ```
 */
export function fromSequelize<T extends Transaction>(t: T): OrmTransaction<T> {
  const internals = t as unknown as TransactionInternals;
  const open = () =>
    internals.finished === undefined && typeof internals.connection === 'object' && internals.connection !== null;
  if (!open()) throw notInTransaction(internals.finished);
  const run = runner(internals.sequelize?.getDialect?.(), internals.connection as object);
  return {
    txoutboxOrmTransaction: true,
    orm: 'sequelize',
    handle: t,
    query(sql: string, parameters: readonly unknown[]): Promise<SqlResult> {
      // Checked again per statement: a wrapper kept past its transaction must not write outside it.
      if (!open()) return Promise.reject(notInTransaction(internals.finished));
      return run(sql, [...parameters]);
    },
  };
}

/** Each Sequelize dialect's connection, and how txoutbox's SQL runs on it. */
const RUNNERS: Readonly<Record<string, (connection: object) => Run>> = {
  postgres: (connection) => pgRunner(connection as PgConnection),
  mysql: (connection) => mysql2Runner(connection as Mysql2Connection),
  // Sequelize's mariadb dialect holds a connection of the mariadb connector.
  mariadb: (connection) => (sql, parameters) => mariadbQuery(connection as MariadbConnectionLike, sql, parameters),
};

function runner(dialect: string | undefined, connection: object): Run {
  if (dialect === undefined || !Object.hasOwn(RUNNERS, dialect)) {
    throw new ConfigError(`txoutbox supports Sequelize's postgres, mysql and mariadb dialects, not ${dialect ?? 'this one'}.`);
  }
  return RUNNERS[dialect]!(connection);
}

interface PgConnection {
  query(sql: string, values: unknown[]): Promise<{ rows: Record<string, unknown>[]; rowCount: number | null }>;
}

function pgRunner(connection: PgConnection): Run {
  return async (sql, parameters) => {
    const result = await connection.query(sql, parameters);
    return { rows: result.rows, affectedRows: result.rowCount ?? 0 };
  };
}

/** Sequelize's mysql dialect holds a mysql2 connection with the callback API. */
interface Mysql2Connection {
  query(sql: string, values: unknown[], callback: (error: Error | null, result: unknown) => void): unknown;
}

function mysql2Runner(connection: Mysql2Connection): Run {
  return (sql, parameters) =>
    new Promise((resolve, reject) =>
      connection.query(sql, parameters, (error, result) => (error ? reject(error) : resolve(mysqlResult(result)))),
    );
}

/** A SELECT answers rows; a write answers a header with the affected count. */
function mysqlResult(result: unknown): SqlResult {
  if (Array.isArray(result)) return { rows: result as Record<string, unknown>[], affectedRows: 0 };
  return { rows: [], affectedRows: Number((result as { affectedRows?: number } | null)?.affectedRows ?? 0) };
}

function notInTransaction(finished: string | undefined): NotInTransactionError {
  return new NotInTransactionError(
    finished === undefined
      ? 'a Sequelize transaction without a connection (use the transaction sequelize.transaction(...) passes to its callback)'
      : `a Sequelize transaction that has already ended (${finished})`,
  );
}
