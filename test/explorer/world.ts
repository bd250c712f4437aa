import { randomBytes } from 'node:crypto';
import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import mysql from 'mysql2';
import pg from 'pg';
import { tableNames, type TableNames } from '../../src/dialects/identifiers.js';
import { createOutbox, migrate, type DialectName, type Outbox } from '../../src/index.js';

/** The explorer's tables on one real database: its own schema (PostgreSQL) or database (MySQL), migrated. */
export interface World {
  dialect: DialectName;
  schema: string;
  names: TableNames;
  db: Kysely<any>;
  outbox: Outbox;
  /** Empties the outbox and the business table between schedules. */
  reset(): Promise<void>;
  close(): Promise<void>;
}

export const DATABASE_URLS: Record<DialectName, string> = {
  postgres: process.env.OUTBOX_PG_URL ?? 'postgres://root@127.0.0.1:5432/test',
  mysql: process.env.OUTBOX_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test',
};

export async function openWorld(dialect: DialectName, url = DATABASE_URLS[dialect]): Promise<World> {
  const schema = `txo_explore_${randomBytes(4).toString('hex')}`;
  // Producers hold a connection each while open, relays one per statement: 16 is plenty.
  const db =
    dialect === 'postgres'
      ? new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 16 }) }) })
      : new Kysely<any>({
          dialect: new MysqlDialect({ pool: mysql.createPool({ uri: url, connectionLimit: 16, timezone: 'Z' }) }),
        });
  await migrate(db, { dialect, schema });
  const orders = sql.id(schema, 'orders');
  await (
    dialect === 'postgres'
      ? sql`CREATE TABLE ${orders} (id text PRIMARY KEY)`
      : sql`CREATE TABLE ${orders} (id VARCHAR(64) PRIMARY KEY) ENGINE=InnoDB`
  ).execute(db);
  return {
    dialect,
    schema,
    names: tableNames('txoutbox', schema),
    db,
    outbox: createOutbox({ dialect, schema }),
    async reset() {
      for (const table of ['txoutbox', 'orders']) await sql`DELETE FROM ${sql.id(schema, table)}`.execute(db);
    },
    async close() {
      await (dialect === 'postgres' ? sql`DROP SCHEMA ${sql.id(schema)} CASCADE` : sql`DROP DATABASE ${sql.id(schema)}`).execute(
        db,
      );
      await db.destroy();
    },
  };
}
