import { DummyDriver, Kysely, PostgresAdapter, PostgresIntrospector, PostgresQueryCompiler, sql, type RawBuilder } from 'kysely';
import type { TableNames } from '../identifiers.js';

/** Compiles SQL for PostgreSQL without a connection; it runs on the caller's transaction or the relay's pool. */
export const compiler = new Kysely<unknown>({
  dialect: {
    createAdapter: () => new PostgresAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (db) => new PostgresIntrospector(db),
    createQueryCompiler: () => new PostgresQueryCompiler(),
  },
});

/** A table of the outbox, qualified with its schema when one is configured. */
export function qualified(names: TableNames, table: string): RawBuilder<unknown> {
  return names.schema === null ? sql.id(table) : sql.id(names.schema, table);
}

