import { describe, expect, inject, it } from 'vitest';
import { createOutbox, NotInTransactionError } from '../../../src/index.js';
import { inlineBuffers } from '../../../src/orm/mariadb-connector.js';
import { fromSequelize } from '../../../src/orm/sequelize.js';
import { createHarness } from '../../support/harness.js';
import { ormContract } from '../../support/orm-contract.js';
import { openSequelize, openSequelizeFixture } from '../../support/orm/sequelize.js';
import { scratchSchema } from '../../support/orm/scratch-schema.js';
import { migrateOrders, orderDatabase, placeOrder } from '../../../examples/sequelize/place-order.js';

ormContract('sequelize', 'postgres', (h) => openSequelizeFixture('postgres', inject('pgUrl'), h.schema));
ormContract('sequelize', 'mysql', (h) => openSequelizeFixture('mysql', inject('mysqlUrl'), h.schema));
// Sequelize's mariadb dialect talks to the server through the mariadb connector instead of mysql2.
ormContract('sequelize (mariadb dialect)', 'mysql', (h) =>
  openSequelizeFixture('mysql', inject('mysqlUrl'), h.schema, 'mariadb'),
);

describe.each(['postgres', 'mysql'] as const)('fromSequelize on %s', (dialect) => {
  it('refuses a transaction that has committed or rolled back', async () => {
    const h = await createHarness(dialect, 2);
    const sequelize = openSequelize(dialect, dialect === 'postgres' ? inject('pgUrl') : inject('mysqlUrl'), h.schema);
    try {
      const committed = await sequelize.transaction();
      const kept = fromSequelize(committed);
      await committed.commit();
      expect(() => fromSequelize(committed)).toThrow(NotInTransactionError);
      await expect(h.outbox.enqueue(kept, { topic: 't', payload: 1 })).rejects.toBeInstanceOf(NotInTransactionError);
      const rolledBack = await sequelize.transaction();
      await rolledBack.rollback();
      expect(() => fromSequelize(rolledBack)).toThrow(NotInTransactionError);
      expect(await h.rows()).toEqual([]);
    } finally {
      await sequelize.close();
      await h.destroy();
    }
  });
});

describe('inlineBuffers (the mariadb connector)', () => {
  it('writes Buffers as hex literals and leaves quoted or commented question marks alone', () => {
    const bytes = Buffer.from([0, 39, 92, 255]);
    expect(inlineBuffers("SELECT ?, '?', `a?`, \"b''?\", _utf8mb4 ? -- ?\n/* ? */ # ?\n, ?", [1, bytes, null])).toEqual({
      sql: "SELECT ?, '?', `a?`, \"b''?\", _utf8mb4 X'00275cff' -- ?\n/* ? */ # ?\n, ?",
      values: [1, null],
    });
    expect(inlineBuffers("SELECT 'it''s \\' ?', ?", [Buffer.alloc(0)])).toEqual({ sql: "SELECT 'it''s \\' ?', X''", values: [] });
  });
});

describe.each(['postgres', 'mysql'] as const)('examples/sequelize on %s', (dialect) => {
  it('migrates, then places an order: the order row and its orders.placed message', async () => {
    const url = dialect === 'postgres' ? inject('pgUrl') : inject('mysqlUrl');
    const schema = await scratchSchema(dialect, url);
    const { sequelize, Order } = orderDatabase(url, schema.name);
    try {
      expect((await migrateOrders(sequelize)).length).toBeGreaterThan(4);
      expect(await migrateOrders(sequelize)).toEqual([]); // a second run has nothing left to do
      const placed = await placeOrder(sequelize, Order, createOutbox({ dialect, schema: schema.name }), {
        customer: 'alice',
        total: 42,
      });
      const orders = (await Order.findAll()).map((order) => order.get());
      expect(orders.map((order) => [order.id, order.customer, Number(order.total)])).toEqual([[placed.orderId, 'alice', 42]]);
      const [messages] = (await sequelize.query('SELECT id, topic, msg_key FROM txoutbox')) as [
        Record<string, unknown>[],
        unknown,
      ];
      expect(messages.map((m) => [String(m.id), String(m.topic), String(m.msg_key)])).toEqual([
        [placed.messageId, 'orders.placed', 'alice'],
      ]);
    } finally {
      await sequelize.close();
      await schema.drop();
    }
  });
});
