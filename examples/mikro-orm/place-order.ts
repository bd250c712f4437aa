/**
 * The order-placing flow of examples/order-service with MikroORM (v6): in one `em.transactional`, persist the order
 * and enqueue its `orders.placed` message; MikroORM flushes the order at commit, in the same transaction. The tables
 * come from Knex's migration tool, which MikroORM v6 runs on (examples/knex/migrations.ts).
 *
 *   DATABASE_URL=postgres://root@127.0.0.1:5432/test node --import tsx examples/mikro-orm/place-order.ts
 *   DATABASE_URL=mysql://root@127.0.0.1:3306/test node --import tsx examples/mikro-orm/place-order.ts
 */
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { EntitySchema, type MikroORM, type Options } from '@mikro-orm/core';
import type { SqlEntityManager } from '@mikro-orm/knex';
import type { Knex } from 'knex';
import { createOutbox, type DialectName, type Outbox } from '../../src/index.js';
import { fromMikroOrm } from '../../src/orm/mikro-orm.js';
import { migrationSource } from '../knex/migrations.js';

export interface Order {
  id: string;
  customer: string;
  total: number;
}

export const OrderEntity = new EntitySchema<Order>({
  name: 'Order',
  tableName: 'orders',
  properties: {
    id: { type: 'string', primary: true },
    customer: { type: 'string' },
    total: { type: 'number', columnType: 'numeric(12, 2)' },
  },
});

/** Places an order: the row and its message commit together, or neither exists. Returns the message id. */
export async function placeOrder(
  orm: MikroORM,
  outbox: Outbox,
  input: Omit<Order, 'id'>,
): Promise<{ orderId: string; messageId: string }> {
  const order: Order = { id: randomUUID(), ...input };
  const { id: messageId } = await orm.em.fork().transactional(async (em) => {
    em.persist(em.create(OrderEntity, order));
    return outbox.enqueue(fromMikroOrm(em), { topic: 'orders.placed', key: order.customer, payload: { ...order } });
  });
  return { orderId: order.id, messageId };
}

/** MikroORM on PostgreSQL or MariaDB/MySQL, by the URL's scheme; `extra` for the tests (a schema, a search_path). */
export async function openMikroOrm(url: string, extra: Options = {}): Promise<{ orm: MikroORM; dialect: DialectName }> {
  const options = { entities: [OrderEntity], clientUrl: url.replace(/^mariadb:/, 'mysql:'), ...extra };
  if (/^(mysql|mariadb):/.test(url)) {
    const { MikroORM } = await import('@mikro-orm/mariadb');
    return { orm: (await MikroORM.init(options)) as unknown as MikroORM, dialect: 'mysql' };
  }
  const { MikroORM } = await import('@mikro-orm/postgresql');
  return { orm: (await MikroORM.init(options)) as unknown as MikroORM, dialect: 'postgres' };
}

/** txoutbox's SQL files and the orders table, through the Knex instance under MikroORM v6. */
export async function migrateTables(orm: MikroORM, dialect: DialectName): Promise<void> {
  const knex = (orm.em as SqlEntityManager).getKnex() as unknown as Knex;
  await knex.migrate.latest({ migrationSource: migrationSource(dialect) });
}

async function main(): Promise<void> {
  const { orm, dialect } = await openMikroOrm(process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test');
  try {
    await migrateTables(orm, dialect);
    console.log(await placeOrder(orm, createOutbox({ dialect }), { customer: 'alice', total: 42 }));
  } finally {
    await orm.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
