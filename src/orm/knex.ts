import type { Knex } from 'knex';
import type { DialectName } from '../dialects/dialect-name.js';
import type { OrmTransaction, SqlResult } from '../dialects/executor.js';
import { ConfigError, NotInTransactionError } from '../errors.js';
import { splitMysql, splitPostgres } from './placeholders.js';

/** A Knex transaction made into what `enqueue` and `processOnce` accept. */
export type KnexOrmTransaction = OrmTransaction<Knex.Transaction>;

/**
 * Wraps a Knex transaction (the `trx` of `knex.transaction(async (trx) => ...)`, or a nested one) for txoutbox:
 * `await outbox.enqueue(fromKnex(trx), message)`. txoutbox's statements run through `trx.raw`, on the
 * transaction's connection. A Knex instance that is not a transaction is refused: each of its queries would
 * autocommit on its own, and the message with it.
 *
 * @example
 * ```ts
 * import { fromKnex } from 'txoutbox/knex';
 *
 * await knex.transaction(async (trx) => {
 *   await trx('orders').insert(order);
 *   await outbox.enqueue(fromKnex(trx), { topic: 'orders.placed', key: order.customer, payload: order });
 * });
 * ```
 */
export function fromKnex(trx: Knex.Transaction): KnexOrmTransaction {
  assertOpen(trx);
  return knexTransaction('knex', trx, trx);
}

/** The OrmTransaction of a Knex transaction, under another ORM's name (MikroORM v6 runs on Knex). */
export function knexTransaction<Handle>(orm: string, trx: Knex.Transaction, handle: Handle): OrmTransaction<Handle> {
  const run = RUNNERS[knexDialect(trx)];
  return {
    txoutboxOrmTransaction: true,
    orm,
    handle,
    async query(sql, parameters) {
      // Knex itself refuses a finished transaction, but with an error of its own; ours says what to do.
      assertOpen(trx);
      return run(trx, sql, parameters);
    },
  };
}

function assertOpen(trx: Knex.Transaction): void {
  const candidate = trx as Partial<Knex.Transaction> | null | undefined;
  if (typeof candidate?.raw !== 'function' || candidate.isTransaction !== true) {
    throw new NotInTransactionError('a Knex instance that is not a transaction (use knex.transaction(async (trx) => ...))');
  }
  if (typeof candidate.isCompleted === 'function' && candidate.isCompleted()) {
    throw new NotInTransactionError('a Knex transaction that has already committed or rolled back');
  }
}

/** Knex's name for its client's dialect → txoutbox's. */
const KNEX_DIALECTS: Readonly<Record<string, DialectName>> = { postgresql: 'postgres', mysql: 'mysql' };

function knexDialect(trx: Knex.Transaction): DialectName {
  const name = (trx.client as { dialect?: unknown } | undefined)?.dialect;
  const dialect = typeof name === 'string' && Object.hasOwn(KNEX_DIALECTS, name) ? KNEX_DIALECTS[name] : undefined;
  if (dialect === undefined) throw new ConfigError(`txoutbox supports Knex's pg and mysql2 clients, not ${String(name)}`);
  return dialect;
}

type KnexRun = (trx: Knex.Transaction, sql: string, parameters: readonly unknown[]) => Promise<SqlResult>;

const RUNNERS: Record<DialectName, KnexRun> = {
  async postgres(trx, sql, parameters) {
    const { text, parameters: bound } = splitPostgres(sql, parameters);
    return pgResult(await trx.raw(knexSql(text), bound as Knex.RawBinding[]));
  },
  async mysql(trx, sql, parameters) {
    const { text, parameters: bound } = mysqlWithInlineBytes(sql, parameters);
    return mysqlResult(await trx.raw(text, bound as Knex.RawBinding[]));
  },
};

/**
 * The text around the placeholders joined with knex.raw's `?`. knex.raw binds every `?` it sees, quoted or not,
 * reads `??` as an identifier and `\\?` as a literal question mark; so literal ones are escaped, and the few
 * spots that cannot be written (a backslash or a question mark right before a placeholder, two placeholders with
 * nothing between them) are refused rather than sent with their meaning changed. txoutbox's SQL has none of them.
 */
function knexSql(text: readonly string[]): string {
  return text
    .map((part, i) => {
      const last = i === text.length - 1;
      if (part.includes('\\?') || (!last && (/[\\?]$/.test(part) || (i > 0 && part === '')))) {
        throw new ConfigError('This SQL cannot be sent through knex.raw: a "?" or "\\" stands next to a placeholder');
      }
      return part.replaceAll('?', '\\?');
    })
    .join('?');
}

/**
 * txoutbox's MySQL SQL uses `?` and no other question mark, as knex.raw reads them, and sends every string as bytes
 * behind a `_utf8mb4` introducer, relying on mysql2 writing a Buffer as a hex literal `X'...'` (no escapes, so no
 * SQL mode can misread it). Other drivers differ: the mariadb connector (MikroORM's MariaDB driver) writes
 * `_BINARY '...'`, a second introducer. So each Buffer goes into the SQL as the hex literal mysql2 would have sent.
 */
function mysqlWithInlineBytes(sql: string, parameters: readonly unknown[]): { text: string; parameters: unknown[] } {
  const { text, parameters: values } = splitMysql(sql, parameters);
  let out = text[0]!;
  const bound: unknown[] = [];
  values.forEach((value, i) => {
    if (Buffer.isBuffer(value)) out += `X'${value.toString('hex')}'`;
    else {
      out += '?';
      bound.push(value);
    }
    out += text[i + 1]!;
  });
  return { text: out, parameters: bound };
}

/** knex.raw on pg resolves with node-postgres's own result. */
function pgResult(result: unknown): SqlResult {
  const { rows, rowCount } = result as { rows?: Record<string, unknown>[]; rowCount?: number | null };
  return { rows: rows ?? [], affectedRows: rowCount ?? 0 };
}

/** knex.raw on mysql2 resolves with mysql2's `[rows, fields]`, or `[ResultSetHeader, undefined]` for a write. */
function mysqlResult(result: unknown): SqlResult {
  const [first] = result as [unknown, unknown];
  if (Array.isArray(first)) return { rows: first as Record<string, unknown>[], affectedRows: 0 };
  return { rows: [], affectedRows: Number((first as { affectedRows?: number } | undefined)?.affectedRows ?? 0) };
}
