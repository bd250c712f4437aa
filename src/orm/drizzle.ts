import { DrizzleQueryError, is, sql, type SQL } from 'drizzle-orm';
import { MySqlTransaction } from 'drizzle-orm/mysql-core';
import { PgTransaction } from 'drizzle-orm/pg-core';
import type { DialectName } from '../dialects/dialect-name.js';
import type { OrmTransaction, SqlResult } from '../dialects/executor.js';
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
  return {
    txoutboxOrmTransaction: true,
    orm: 'drizzle',
    handle: tx,
    async query(text, parameters) {
      const split = wire.split(text, parameters);
      try {
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
  postgres: { split: splitPostgres, value: postgresValue, result: postgresResult },
  mysql: { split: splitMysql, value: (value) => value, result: mysqlResult },
};
