/**
 * The order-placing flow of examples/order-service with Knex: in one Knex transaction, insert the order and enqueue
 * its `orders.placed` message. The tables come from Knex's own migration tool (see migrations.ts beside this file).
 *
 *   DATABASE_URL=postgres://root@127.0.0.1:5432/test node --import tsx examples/knex/place-order.ts
 *   DATABASE_URL=mysql://root@127.0.0.1:3306/test node --import tsx examples/knex/place-order.ts
 */
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import knex, { type Knex } from 'knex';
import { createOutbox, type DialectName, type Outbox } from '../../src/index.js';
import { fromKnex } from '../../src/orm/knex.js';
import { migrationSource } from './migrations.js';

export { migrationSource };

export interface Order {
  id: string;
  customer: string;
  total: number;
}

/** Places an order: the row and its message commit together, or neither exists. Returns the message id. */
export async function placeOrder(
  db: Knex,
  outbox: Outbox,
  input: Omit<Order, 'id'>,
): Promise<{ orderId: string; messageId: string }> {
  const order: Order = { id: randomUUID(), ...input };
  const { id: messageId } = await db.transaction(async (trx) => {
    await trx.table('orders').insert(order);
    return outbox.enqueue(fromKnex(trx), { topic: 'orders.placed', key: order.customer, payload: { ...order } });
  });
  return { orderId: order.id, messageId };
}

export function openKnex(url: string): { db: Knex; dialect: DialectName } {
  const dialect: DialectName = /^(mysql|mariadb):/.test(url) ? 'mysql' : 'postgres';
  const db =
    dialect === 'postgres'
      ? knex({ client: 'pg', connection: url })
      : knex({ client: 'mysql2', connection: { uri: url.replace(/^mariadb:/, 'mysql:') } as Knex.MySql2ConnectionConfig });
  return { db, dialect };
}

async function main(): Promise<void> {
  const { db, dialect } = openKnex(process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test');
  try {
    await db.migrate.latest({ migrationSource: migrationSource(dialect) });
    const outbox = createOutbox({ dialect });
    console.log(await placeOrder(db, outbox, { customer: 'alice', total: 42 }));
  } finally {
    await db.destroy();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
