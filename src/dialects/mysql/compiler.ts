import { DummyDriver, Kysely, MysqlAdapter, MysqlIntrospector, sql, type RawBuilder } from 'kysely';
import type { TableNames } from '../identifiers.js';
import { ModeSafeMysqlQueryCompiler } from './mode-safe-compiler.js';

/**
 * Compiles SQL for MySQL/MariaDB without a connection; it runs on the caller's transaction or the relay's pool.
 * Values are compiled so that they mean the same under every SQL mode (see ModeSafeMysqlQueryCompiler).
 */
export const compiler = new Kysely<unknown>({
  dialect: {
    createAdapter: () => new MysqlAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (db) => new MysqlIntrospector(db),
    createQueryCompiler: () => new ModeSafeMysqlQueryCompiler(),
  },
});

/** A table of the outbox, qualified with its schema (database) when one is configured. */
export function qualified(names: TableNames, table: string): RawBuilder<unknown> {
  return names.schema === null ? sql.id(table) : sql.id(names.schema, table);
}

/** DATETIME(6) text in UTC, so the value never depends on the connection's time zone setting. */
export function utcDatetime(date: Date): string {
  return date.toISOString().replace('T', ' ').replace('Z', '');
}

/**
 * `(the seqs) STRAIGHT_JOIN <table> AS t`: the rows with these seqs, each found by a primary-key lookup, for an
 * UPDATE, DELETE or locking read of exactly those rows. A plain `WHERE seq IN (...)` may be run as a range or a
 * full scan, and a DELETE or locking read waits for every row it passes that another transaction holds, a
 * producer's uncommitted insert included; the relay must never wait for a producer.
 */
export function rowsBySeq(table: RawBuilder<unknown>, seqs: readonly string[]): RawBuilder<unknown> {
  const picked = sql.join(
    seqs.map((seq, index) => (index === 0 ? sql`SELECT ${BigInt(seq)} AS seq` : sql`SELECT ${BigInt(seq)}`)),
    sql` UNION ALL `,
  );
  // FORCE INDEX: on a small table the optimizer may otherwise scan it, and a scanning UPDATE or DELETE of several
  // tables waits for every row it passes (multi-table statements get no semi-consistent reads).
  return sql`(${picked}) AS picked STRAIGHT_JOIN ${table} AS t FORCE INDEX (PRIMARY) ON t.seq = picked.seq`;
}
