import { DummyDriver, Kysely, MysqlAdapter, MysqlIntrospector, MysqlQueryCompiler, sql, type RawBuilder } from 'kysely';
import type { TableNames } from '../identifiers.js';

/** Compiles SQL for MySQL/MariaDB without a connection; it runs on the caller's transaction or the relay's pool. */
export const compiler = new Kysely<unknown>({
  dialect: {
    createAdapter: () => new MysqlAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (db) => new MysqlIntrospector(db),
    createQueryCompiler: () => new MysqlQueryCompiler(),
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
