import { randomBytes } from 'node:crypto';
import { PGlite } from '@electric-sql/pglite';
import { sql } from 'drizzle-orm';
import { drizzle as drizzleMysql } from 'drizzle-orm/mysql2';
import { drizzle as drizzleNodePg } from 'drizzle-orm/node-postgres';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import { drizzle as drizzlePostgresJs } from 'drizzle-orm/postgres-js';
import mysql from 'mysql2';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { migrateTables, openDrizzle, placeOrder } from '../../../examples/drizzle/place-order.js';
import { createOutbox, NotInTransactionError, type DialectName, type OrmTransaction } from '../../../src/index.js';
import { fromDrizzle, type DrizzleTransactionLike } from '../../../src/orm/drizzle.js';
import { createHarness, type Harness } from '../../support/harness.js';
import { ormContract } from '../../support/orm-contract.js';
import { openDrizzleFixture } from '../../support/orm/drizzle.js';
import { openKnex } from '../../support/orm/knex.js';

const urls = { postgres: inject('pgUrl'), mysql: inject('mysqlUrl') };

ormContract('drizzle', 'postgres', (h) => openDrizzleFixture('postgres', urls.postgres, h.schema));
ormContract('drizzle (postgres.js)', 'postgres', (h) => openDrizzleFixture('postgres', urls.postgres, h.schema, 'postgres-js'));
ormContract('drizzle', 'mysql', (h) => openDrizzleFixture('mysql', urls.mysql, h.schema));

describe.each(['node-postgres', 'postgres-js'] as const)('fromDrizzle on PostgreSQL with %s', (driver) => {
  it('binds arrays of dates, bytes, text and booleans as one parameter each', async () => {
    const client =
      driver === 'node-postgres' ? new pg.Pool({ connectionString: urls.postgres, max: 1 }) : postgres(urls.postgres, { max: 1 });
    const db = client instanceof pg.Pool ? drizzleNodePg({ client }) : drizzlePostgresJs({ client });
    try {
      const at = new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6));
      const { rows } = await db.transaction((tx) =>
        fromDrizzle(tx).query(
          `SELECT ($1::timestamptz[])[1] = $5::timestamptz AS same_time, encode(($2::bytea[])[2], 'hex') AS hex,
             cardinality($3::text[]) AS n, ($3::text[])[2] AS quoted, ($4::boolean[])[1] AS yes, '?' AS mark`,
          [[at, null], [Buffer.from([1]), Buffer.from([0, 255])], ['a', 'b "c" \\ d'], [true, false], at],
        ),
      );
      expect(rows).toEqual([{ same_time: true, hex: '00ff', n: 2, quoted: 'b "c" \\ d', yes: true, mark: '?' }]);
    } finally {
      await client.end();
    }
  });
});

describe.each(['postgres', 'mysql'] as DialectName[])('fromDrizzle on %s', (dialect) => {
  it('refuses a Drizzle database that is not a transaction', async () => {
    const app = openDrizzle(urls[dialect]);
    try {
      expect(() => fromDrizzle(app.db as unknown as DrizzleTransactionLike)).toThrow(NotInTransactionError);
      // A transaction works: the same database, inside db.transaction.
      const rows = await (app.dialect === 'postgres'
        ? app.db.transaction((tx) => fromDrizzle(tx).query('SELECT 1 AS one', []))
        : app.db.transaction((tx) => fromDrizzle(tx).query('SELECT 1 AS one', [])));
      expect(rows.rows.map((row) => Number(row.one))).toEqual([1]);
    } finally {
      await app.close();
    }
  });

  it('runs the example: txoutbox’s SQL through Drizzle’s migrator, then an order and its message in one transaction', async () => {
    const name = `txo_drizzle_${randomBytes(4).toString('hex')}`;
    const admin = openKnex(dialect, urls[dialect]);
    await admin.raw(dialect === 'postgres' ? `CREATE SCHEMA ${name}` : `CREATE DATABASE ${name}`);
    // The example's SQL is unqualified: the schema comes from the connection (search_path, or the database).
    const app =
      dialect === 'postgres' ? openDrizzle(urls.postgres, name) : openDrizzle(urls.mysql.replace(/\/[^/]*$/, `/${name}`));
    try {
      await migrateTables(app, name);
      await migrateTables(app, name); // a second run applies nothing
      const { orderId, messageId } = await placeOrder(app, createOutbox({ dialect }), { customer: 'alice', total: 42 });
      expect(await admin.withSchema(name).table('orders').select('id', 'customer')).toEqual([{ id: orderId, customer: 'alice' }]);
      const messages = await admin.withSchema(name).table('txoutbox').select('id', 'topic', 'msg_key');
      expect(messages.map((m: Record<string, unknown>) => [String(m.id), m.topic, String(m.msg_key)])).toEqual([
        [messageId, 'orders.placed', 'alice'],
      ]);
    } finally {
      await app.close();
      await admin.raw(dialect === 'postgres' ? `DROP SCHEMA ${name} CASCADE` : `DROP DATABASE ${name}`);
      await admin.destroy();
    }
  });
});

/** Drizzle on a pool of one connection, so the next transaction runs on the connection the last one gave back. */
function onePooled(driver: 'node-postgres' | 'postgres-js' | 'mysql2') {
  if (driver === 'mysql2') {
    const pool = mysql.createPool({ uri: urls.mysql, connectionLimit: 1 });
    return {
      db: drizzleMysql({ client: pool }),
      close: () => new Promise<void>((resolve) => pool.end(() => resolve())),
    };
  }
  if (driver === 'node-postgres') {
    const pool = new pg.Pool({ connectionString: urls.postgres, max: 1 });
    return { db: drizzleNodePg({ client: pool }), close: () => pool.end() };
  }
  const client = postgres(urls.postgres, { max: 1, onnotice: () => {} });
  return { db: drizzlePostgresJs({ client }), close: () => client.end() };
}

/** What these tests use of a Drizzle database, whichever driver is under it. */
interface AnyDrizzle {
  transaction<T>(work: (tx: DrizzleTransactionLike) => Promise<T>): Promise<T>;
}

describe.each(['node-postgres', 'postgres-js', 'mysql2'] as const)('a Drizzle tx kept past its transaction (%s)', (driver) => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness(driver === 'mysql2' ? 'mysql' : 'postgres');
  });
  afterAll(() => h?.destroy());

  it('is refused inside the next transaction on the same connection, which commits without the message', async () => {
    const app = onePooled(driver);
    const db = app.db as unknown as AnyDrizzle;
    try {
      let kept: DrizzleTransactionLike | undefined;
      let wrapped: OrmTransaction | undefined;
      const rolledBack = db.transaction(async (tx) => {
        kept = tx;
        wrapped = fromDrizzle(tx);
        await h.outbox.enqueue(wrapped, { id: 'inside', topic: 't', payload: 1 });
        throw new Error('roll back');
      });
      await expect(rolledBack).rejects.toThrow('roll back');
      const refusals = await db.transaction(async (tx) => {
        // The pool's only connection: the kept tx's statements would run inside this transaction.
        await tx.execute(sql`SELECT 1`);
        const late = await h.outbox.enqueue(wrapped!, { id: 'late', topic: 't', payload: 2 }).catch((caught: unknown) => caught);
        const rewrapped = await Promise.resolve()
          .then(() => h.outbox.enqueue(fromDrizzle(kept!), { id: 'rewrapped', topic: 't', payload: 3 }))
          .catch((caught: unknown) => caught);
        return [late, rewrapped];
      });
      expect(refusals[0]).toBeInstanceOf(NotInTransactionError);
      expect(refusals[1]).toBeInstanceOf(NotInTransactionError);
      expect(await h.rows()).toEqual([]);
    } finally {
      await app.close();
    }
  });
});

describe('a Drizzle tx kept past its transaction (PGlite)', () => {
  it('is refused with NotInTransactionError, not PGlite’s own error', async () => {
    const client = new PGlite();
    try {
      const db = drizzlePglite({ client }) as unknown as AnyDrizzle;
      let kept: DrizzleTransactionLike | undefined;
      const inside = await db.transaction(async (tx) => {
        kept = tx;
        return (await fromDrizzle(tx).query('SELECT 1 AS one', [])).rows;
      });
      expect(inside).toEqual([{ one: 1 }]);
      const error = await Promise.resolve()
        .then(() => fromDrizzle(kept!).query('SELECT 2 AS two', []))
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(NotInTransactionError);
    } finally {
      await client.close();
    }
  });
});
