import { describe, expect, inject, it } from 'vitest';
import { createOutbox, NotInTransactionError } from '../../../src/index.js';
import { fromTypeorm } from '../../../src/orm/typeorm.js';
import { createHarness } from '../../support/harness.js';
import { ormContract } from '../../support/orm-contract.js';
import { openTypeormDataSource, openTypeormFixture } from '../../support/orm/typeorm.js';
import { scratchSchema } from '../../support/orm/scratch-schema.js';
import { OrderEntity, orderDataSource, placeOrder } from '../../../examples/typeorm/place-order.js';

ormContract('typeorm', 'postgres', (h) => openTypeormFixture('postgres', inject('pgUrl'), h.schema));
ormContract('typeorm', 'mysql', (h) => openTypeormFixture('mysql', inject('mysqlUrl'), h.schema));

describe.each(['postgres', 'mysql'] as const)('fromTypeorm on %s', (dialect) => {
  const url = () => (dialect === 'postgres' ? inject('pgUrl') : inject('mysqlUrl'));

  it('refuses a manager that is not in a transaction, and one whose transaction has ended', async () => {
    const h = await createHarness(dialect, 2);
    const dataSource = await openTypeormDataSource(dialect, url(), h.schema);
    try {
      expect(() => fromTypeorm(dataSource.manager)).toThrow(NotInTransactionError);
      const runner = dataSource.createQueryRunner();
      expect(() => fromTypeorm(runner.manager)).toThrow(NotInTransactionError);
      await runner.release();
      const kept = await dataSource.transaction(async (manager) => fromTypeorm(manager));
      await expect(h.outbox.enqueue(kept, { topic: 't', payload: 1 })).rejects.toBeInstanceOf(NotInTransactionError);
      expect(await h.rows()).toEqual([]);
    } finally {
      await dataSource.destroy();
      await h.destroy();
    }
  });
});

describe.each(['postgres', 'mysql'] as const)('examples/typeorm on %s', (dialect) => {
  it('migrates with TypeORM, then places an order: the order row and its orders.placed message', async () => {
    const url = dialect === 'postgres' ? inject('pgUrl') : inject('mysqlUrl');
    const schema = await scratchSchema(dialect, url);
    const dataSource = await orderDataSource(url, schema.name).initialize();
    try {
      await dataSource.runMigrations();
      expect(await dataSource.runMigrations()).toEqual([]); // a second run has nothing left to do
      const placed = await placeOrder(dataSource, createOutbox({ dialect, schema: schema.name }), {
        customer: 'alice',
        total: 42,
      });
      const orders = await dataSource.getRepository(OrderEntity).find();
      expect(orders.map((order) => [order.id, order.customer, Number(order.total)])).toEqual([[placed.orderId, 'alice', 42]]);
      const messages = (await dataSource.query('SELECT id, topic, msg_key FROM txoutbox')) as Record<string, unknown>[];
      expect(messages.map((m) => [String(m.id), String(m.topic), String(m.msg_key)])).toEqual([
        [placed.messageId, 'orders.placed', 'alice'],
      ]);
    } finally {
      await dataSource.destroy();
      await schema.drop();
    }
  });
});
