import 'reflect-metadata';
import { Test, type TestingModule } from '@nestjs/testing';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { MemoryBroker, createOutbox, type Outbox, type Relay } from '../../../src/index.js';
import { TXOUTBOX_INBOX, TXOUTBOX_OUTBOX, TXOUTBOX_RELAY, TxOutboxModule } from '../../../src/orm/nestjs.js';
import { waitFor } from '../../support/relay-helpers.js';
import { scratchSchema } from '../../support/orm/scratch-schema.js';
import { DATA_SOURCE, OrderService, OrdersModule } from '../../../examples/nestjs/place-order.js';
import type { DataSource } from 'typeorm';

describe.each(['postgres', 'mysql'] as const)('TxOutboxModule with TypeORM and @nestjs-cls/transactional on %s', (dialect) => {
  const url = () => (dialect === 'postgres' ? inject('pgUrl') : inject('mysqlUrl'));
  let schema: Awaited<ReturnType<typeof scratchSchema>>;
  let app: TestingModule;
  let broker: MemoryBroker;
  let relay: Relay;
  let stop: ReturnType<typeof vi.spyOn>;

  beforeAll(async () => {
    schema = await scratchSchema(dialect, url());
    broker = new MemoryBroker();
    app = await Test.createTestingModule({ imports: [OrdersModule.forUrl(url(), broker, schema.name)] }).compile();
    relay = app.get<Relay>(TXOUTBOX_RELAY);
    stop = vi.spyOn(relay, 'stop');
    await app.init(); // runs the bootstrap hooks: the relay starts
  });
  let closed = false;
  afterAll(async () => {
    if (!closed) await app?.close();
    await schema?.drop();
  });

  it('boots with the outbox, no inbox (none configured) and a running relay that publishes what commits', async () => {
    expect(app.get<Outbox>(TXOUTBOX_OUTBOX).enqueue).toBeTypeOf('function');
    expect(app.get(TXOUTBOX_INBOX)).toBeNull();
    const placed = await app.get(OrderService).placeOrder({ customer: 'alice', total: 42 });
    await waitFor(
      async () => broker.received('orders.placed').some((m) => m.id === placed.messageId),
      10_000,
      'the relay to publish the order',
    );
    const [message] = broker.received('orders.placed');
    expect(message).toMatchObject({ id: placed.messageId, key: 'alice' });
    expect(JSON.parse(Buffer.from(message!.payload).toString('utf8'))).toMatchObject({
      id: placed.orderId,
      customer: 'alice',
      total: 42,
    });
  });

  it('leaves neither the order nor the message when the @Transactional method throws', async () => {
    const error = await app
      .get(OrderService)
      .placeOrder({ customer: 'bob', total: 7, failAfterEnqueue: true })
      .catch((caught: unknown) => caught);
    expect(error).toMatchObject({ message: 'payment declined' });
    const dataSource = app.get<DataSource>(DATA_SOURCE);
    const orders = (await dataSource.query('SELECT customer FROM orders')) as { customer: string }[];
    expect(orders.map((order) => order.customer)).toEqual(['alice']);
    // Keyed by customer; alice's row may still be there a moment after her publish (the relay deletes it after the ack).
    expect(await dataSource.query("SELECT id FROM txoutbox WHERE msg_key = 'bob'")).toEqual([]);
    expect(broker.received().map((m) => m.key)).toEqual(['alice']);
  });

  it('stops the relay, draining, when the application closes', async () => {
    await app.close();
    closed = true;
    expect(stop).toHaveBeenCalledWith({ drainMs: 5_000 });
    // A message committed after close stays in the table: no relay of this application claims it any more.
    const { Kysely, PostgresDialect, MysqlDialect } = await import('kysely');
    const db =
      dialect === 'postgres'
        ? new Kysely<unknown>({
            dialect: new PostgresDialect({ pool: new (await import('pg')).default.Pool({ connectionString: url(), max: 1 }) }),
          })
        : new Kysely<unknown>({
            dialect: new MysqlDialect({ pool: (await import('mysql2')).default.createPool({ uri: url(), connectionLimit: 1 }) }),
          });
    try {
      await db
        .transaction()
        .execute((trx) =>
          createOutbox({ dialect, schema: schema.name }).enqueue(trx, { id: 'after-close', topic: 'orders.placed', payload: 1 }),
        );
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(broker.received().map((m) => m.id)).not.toContain('after-close');
    } finally {
      await db.destroy();
    }
  });
});

describe('TxOutboxModule.forRoot', () => {
  it('provides the outbox and the inbox from plain options, and starts nothing without a relay', async () => {
    const app = await Test.createTestingModule({
      imports: [TxOutboxModule.forRoot({ outbox: { dialect: 'postgres' }, inbox: { dialect: 'postgres' }, isGlobal: true })],
    }).compile();
    await app.init();
    expect(app.get<Outbox>(TXOUTBOX_OUTBOX).enqueue).toBeTypeOf('function');
    expect(app.get(TXOUTBOX_INBOX)).toMatchObject({ processOnce: expect.any(Function) });
    expect(app.get(TXOUTBOX_RELAY)).toBeNull();
    await app.close();
  });
});
