import { sql, TransactionRollbackError } from 'drizzle-orm';
import { drizzle as drizzleMysql } from 'drizzle-orm/mysql2';
import { int as mysqlInt, mysqlSchema, varchar, type MySqlTransaction } from 'drizzle-orm/mysql-core';
import { drizzle as drizzleNodePg } from 'drizzle-orm/node-postgres';
import { integer, pgSchema, text, type PgTransaction } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePostgresJs } from 'drizzle-orm/postgres-js';
import mysql from 'mysql2';
import pg from 'pg';
import postgres from 'postgres';
import type { DialectName, OrmTransaction } from '../../../src/index.js';
import { fromDrizzle } from '../../../src/orm/drizzle.js';
import type { OrmFixture } from '../orm-contract.js';

/** The harness's business tables in its schema (PostgreSQL) or database (MySQL). */
export function postgresTables(schema: string) {
  const s = pgSchema(schema);
  return {
    orders: s.table('orders', { id: text('id').primaryKey() }),
    effects: s.table('effects', { id: text('id').primaryKey(), times: integer('times').notNull() }),
  };
}

export function mysqlTables(schema: string) {
  const s = mysqlSchema(schema);
  return {
    orders: s.table('orders', { id: varchar('id', { length: 64 }).primaryKey() }),
    effects: s.table('effects', { id: varchar('id', { length: 255 }).primaryKey(), times: mysqlInt('times').notNull() }),
  };
}

export type PostgresDriver = 'node-postgres' | 'postgres-js';
type AnyPgTransaction = PgTransaction<never, Record<string, never>, never>;
type AnyMysqlTransaction = MySqlTransaction<never, never, Record<string, never>, never>;

/**
 * Drizzle on the test database with a pool of 25: node-postgres (or postgres.js) on PostgreSQL, mysql2 on MySQL.
 * Transactions by db.transaction, savepoints by a nested tx.transaction rolled back with tx.rollback().
 */
export async function openDrizzleFixture(
  dialect: DialectName,
  url: string,
  schema: string,
  driver: PostgresDriver = 'node-postgres',
): Promise<OrmFixture> {
  if (dialect === 'postgres') {
    const { orders, effects } = postgresTables(schema);
    const client =
      driver === 'node-postgres'
        ? new pg.Pool({ connectionString: url, max: 25 })
        : postgres(url, { max: 25, onnotice: () => {} });
    const db = client instanceof pg.Pool ? drizzleNodePg({ client }) : drizzlePostgresJs({ client });
    const txOf = (tx: OrmTransaction) => tx.handle as AnyPgTransaction;
    return {
      transaction: (work) => db.transaction((tx) => work(fromDrizzle(tx))),
      rolledBackSavepoint: (tx, work) =>
        txOf(tx)
          .transaction(async (inner) => {
            await work(fromDrizzle(inner));
            inner.rollback();
          })
          .catch((error: unknown) => {
            if (!(error instanceof TransactionRollbackError)) throw error;
          }),
      async insertOrder(tx, id) {
        await txOf(tx).insert(orders).values({ id });
      },
      async applyEffect(tx, id) {
        await txOf(tx)
          .insert(effects)
          .values({ id, times: 1 })
          .onConflictDoUpdate({ target: effects.id, set: { times: sql`${effects.times} + 1` } });
      },
      close: () => (client instanceof pg.Pool ? client.end() : client.end()),
    };
  }
  const { orders, effects } = mysqlTables(schema);
  const pool = mysql.createPool({ uri: url, connectionLimit: 25 });
  const db = drizzleMysql({ client: pool });
  const txOf = (tx: OrmTransaction) => tx.handle as AnyMysqlTransaction;
  return {
    transaction: (work) => db.transaction((tx) => work(fromDrizzle(tx))),
    rolledBackSavepoint: (tx, work) =>
      txOf(tx)
        .transaction(async (inner) => {
          await work(fromDrizzle(inner));
          inner.rollback();
        })
        .catch((error: unknown) => {
          if (!(error instanceof TransactionRollbackError)) throw error;
        }),
    async insertOrder(tx, id) {
      await txOf(tx).insert(orders).values({ id });
    },
    async applyEffect(tx, id) {
      await txOf(tx)
        .insert(effects)
        .values({ id, times: 1 })
        .onDuplicateKeyUpdate({ set: { times: sql`${effects.times} + 1` } });
    },
    close: () => new Promise<void>((resolve, reject) => pool.end((error) => (error ? reject(error) : resolve()))),
  };
}
