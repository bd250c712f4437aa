import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { migrateTables, openMikroOrm, placeOrder } from '../../../examples/mikro-orm/place-order.js';
import { createOutbox, NotInTransactionError, type DialectName } from '../../../src/index.js';
import { fromMikroOrm } from '../../../src/orm/mikro-orm.js';
import { createHarness, type Harness } from '../../support/harness.js';
import { ormContract } from '../../support/orm-contract.js';
import { openKnex } from '../../support/orm/knex.js';
import { openMikroOrmFixture, openMikroOrm as openTestOrm } from '../../support/orm/mikro-orm.js';

const urls = { postgres: inject('pgUrl'), mysql: inject('mysqlUrl') };

ormContract('mikro-orm', 'postgres', (h) => openMikroOrmFixture('postgres', urls.postgres, h.schema));
ormContract('mikro-orm', 'mysql', (h) => openMikroOrmFixture('mysql', urls.mysql, h.schema));

describe.each(['postgres', 'mysql'] as DialectName[])('fromMikroOrm on %s', (dialect) => {
  it('refuses an EntityManager outside a transaction', async () => {
    const orm = await openTestOrm(dialect, urls[dialect], dialect === 'postgres' ? 'public' : 'test');
    try {
      expect(() => fromMikroOrm(orm.em.fork())).toThrow(NotInTransactionError);
    } finally {
      await orm.close();
    }
  });

  it('runs the example: migrations through MikroORM’s Knex, then an order and its message in one em.transactional', async () => {
    const name = `txo_mikro_${randomBytes(4).toString('hex')}`;
    const admin = openKnex(dialect, urls[dialect]);
    await admin.raw(dialect === 'postgres' ? `CREATE SCHEMA ${name}` : `CREATE DATABASE ${name}`);
    // The example's SQL is unqualified: the schema comes from the connection (search_path, or the database).
    const { orm } = await openMikroOrm(
      urls[dialect],
      dialect === 'postgres' ? { driverOptions: { searchPath: [name] } } : { dbName: name },
    );
    try {
      await migrateTables(orm, dialect);
      const { orderId, messageId } = await placeOrder(orm, createOutbox({ dialect }), { customer: 'alice', total: 42 });
      const orders = await admin.withSchema(name).table('orders').select('id', 'customer');
      expect(orders).toEqual([{ id: orderId, customer: 'alice' }]);
      const messages = await admin.withSchema(name).table('txoutbox').select('id', 'topic', 'msg_key');
      expect(messages.map((m: Record<string, unknown>) => [String(m.id), m.topic, String(m.msg_key)])).toEqual([
        [messageId, 'orders.placed', 'alice'],
      ]);
    } finally {
      await orm.close();
      await admin.raw(dialect === 'postgres' ? `DROP SCHEMA ${name} CASCADE` : `DROP DATABASE ${name}`);
      await admin.destroy();
    }
  });
});

describe('fromMikroOrm with a Kysely transaction context (MikroORM v7)', () => {
  it('runs txoutbox’s SQL on the Kysely transaction, and refuses one that is not a transaction', async () => {
    const db = new Kysely<unknown>({
      dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: urls.postgres, max: 1 }) }),
    });
    try {
      // A stand-in for a v7 EntityManager: getTransactionContext() is what v7 returns, a Kysely transaction.
      const rows = await db.transaction().execute(async (trx) => {
        const em = { getTransactionContext: () => trx };
        const { rows } = await fromMikroOrm(em).query(
          'SELECT cardinality($1::text[]) AS n, txid_current_if_assigned() IS NULL AS fresh',
          [['a', 'b']],
        );
        return rows;
      });
      expect(rows).toEqual([{ n: 2, fresh: true }]);
      expect(() => fromMikroOrm({ getTransactionContext: () => db })).toThrow(NotInTransactionError);
    } finally {
      await db.destroy();
    }
  });
});

describe('fromMikroOrm with a Kysely transaction context that has ended (MikroORM v7)', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness('postgres');
  });
  afterAll(() => h?.destroy());

  it('refuses it with NotInTransactionError, not Kysely’s bare Error, and writes nothing', async () => {
    // v7 holds a ControlledTransaction; a plain Kysely transaction kept past its callback is refused the same way.
    const controlled = await h.db.startTransaction().execute();
    const em = { getTransactionContext: () => controlled };
    const kept = fromMikroOrm(em);
    await controlled.rollback().execute();
    let plain: unknown;
    await h.db.transaction().execute(async (trx) => {
      plain = trx;
    });
    const keptPlain = fromMikroOrm({ getTransactionContext: () => plain });
    const errors = [
      await h.outbox.enqueue(kept, { topic: 't', payload: 1 }).catch((caught: unknown) => caught),
      await Promise.resolve()
        .then(() => h.outbox.enqueue(fromMikroOrm(em), { topic: 't', payload: 2 }))
        .catch((caught: unknown) => caught),
      await h.outbox.enqueue(keptPlain, { topic: 't', payload: 3 }).catch((caught: unknown) => caught),
    ];
    for (const error of errors) expect(error).toBeInstanceOf(NotInTransactionError);
    expect(await h.rows()).toEqual([]);
  });
});
