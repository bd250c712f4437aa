import { randomBytes } from 'node:crypto';
import knex, { type Knex } from 'knex';
import { describe, expect, inject, it } from 'vitest';
import { migrationSource, placeOrder } from '../../../examples/knex/place-order.js';
import { createOutbox, NotInTransactionError, type DialectName } from '../../../src/index.js';
import { fromKnex } from '../../../src/orm/knex.js';
import { ormContract } from '../../support/orm-contract.js';
import { openKnex, openKnexFixture } from '../../support/orm/knex.js';

const urls = { postgres: inject('pgUrl'), mysql: inject('mysqlUrl') };

ormContract('knex', 'postgres', (h) => openKnexFixture('postgres', urls.postgres, h.schema));
ormContract('knex', 'mysql', (h) => openKnexFixture('mysql', urls.mysql, h.schema));

describe.each(['postgres', 'mysql'] as DialectName[])('fromKnex on %s', (dialect) => {
  it('refuses a Knex instance that is not a transaction, and a finished transaction', async () => {
    const db = openKnex(dialect, urls[dialect]);
    try {
      expect(() => fromKnex(db as unknown as Knex.Transaction)).toThrow(NotInTransactionError);
      const trx = await db.transaction();
      await trx.commit();
      expect(() => fromKnex(trx)).toThrow(NotInTransactionError);
    } finally {
      await db.destroy();
    }
  });

  it.runIf(dialect === 'postgres')('binds an array as one parameter and keeps a literal ?', async () => {
    const db = openKnex(dialect, urls[dialect]);
    try {
      const { rows } = await db.transaction((trx) =>
        fromKnex(trx).query(`SELECT cardinality($2::text[]) AS n, '?' || $1 || '??' AS q, $1 AS again`, ['x', ['a', 'b', 'c']]),
      );
      expect(rows).toEqual([{ n: 3, q: '?x??', again: 'x' }]);
    } finally {
      await db.destroy();
    }
  });

  it('runs the example: its Knex migrations, then an order and its message in one transaction', async () => {
    const name = `txo_knex_${randomBytes(4).toString('hex')}`;
    const admin = openKnex(dialect, urls[dialect]);
    await admin.raw(dialect === 'postgres' ? `CREATE SCHEMA ${name}` : `CREATE DATABASE ${name}`);
    // The example's SQL is unqualified: the schema comes from the connection (search_path, or the database).
    const db =
      dialect === 'postgres'
        ? knex({ client: 'pg', connection: urls.postgres, searchPath: [name] })
        : knex({
            client: 'mysql2',
            connection: { uri: urls.mysql.replace(/\/[^/]*$/, `/${name}`) } as Knex.MySql2ConnectionConfig,
          });
    try {
      await db.migrate.latest({ migrationSource: migrationSource(dialect) });
      await db.migrate.latest({ migrationSource: migrationSource(dialect) }); // a second run applies nothing
      const { orderId, messageId } = await placeOrder(db, createOutbox({ dialect }), { customer: 'alice', total: 42 });
      expect(await db.table('orders').select('id', 'customer')).toEqual([{ id: orderId, customer: 'alice' }]);
      const messages = await db.table('txoutbox').select('id', 'topic', 'msg_key');
      expect(messages.map((m: Record<string, unknown>) => [String(m.id), m.topic, String(m.msg_key)])).toEqual([
        [messageId, 'orders.placed', 'alice'],
      ]);
    } finally {
      await db.destroy();
      await admin.raw(dialect === 'postgres' ? `DROP SCHEMA ${name} CASCADE` : `DROP DATABASE ${name}`);
      await admin.destroy();
    }
  });
});
