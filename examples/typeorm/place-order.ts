/**
 * The order service's flow with TypeORM: one `dataSource.transaction` inserts the order and enqueues its
 * `orders.placed` message, so both commit or neither exists. The outbox tables come from TypeORM's own migrations
 * (txoutbox-migrations.ts beside this file).
 *
 *   DATABASE_URL=postgres://root@127.0.0.1:5432/test node --import tsx examples/typeorm/place-order.ts
 *   DATABASE_URL=mysql://root@127.0.0.1:3306/test node --import tsx examples/typeorm/place-order.ts
 */
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { DataSource, EntitySchema, type MigrationInterface, type QueryRunner } from 'typeorm';
import { createOutbox, type DialectName, type Outbox } from '../../src/index.js';
import { fromTypeorm } from '../../src/orm/typeorm.js';
import { txoutboxMigrations } from './txoutbox-migrations.js';

export interface Order {
  id: string;
  customer: string;
  total: number;
}

export const OrderEntity = new EntitySchema<Order>({
  name: 'Order',
  tableName: 'orders',
  columns: {
    id: { type: String, primary: true, length: 64 },
    customer: { type: String, length: 255 },
    total: { type: 'numeric', precision: 12, scale: 2 },
  },
});

class CreateOrders1700000100000 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(
      'CREATE TABLE IF NOT EXISTS orders (id varchar(64) PRIMARY KEY, customer varchar(255) NOT NULL, total numeric(12, 2) NOT NULL)',
    );
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE orders');
  }
}

export const dialectOf = (url: string): DialectName => (/^(mysql|mariadb):/.test(url) ? 'mysql' : 'postgres');

/** A DataSource on `url`; `schema` (a PostgreSQL schema, or a MySQL database) instead of the URL's default. */
export function orderDataSource(url: string, schema?: string): DataSource {
  const dialect = dialectOf(url);
  const migrations = [...txoutboxMigrations(dialect), CreateOrders1700000100000];
  if (dialect === 'postgres') {
    return new DataSource({
      type: 'postgres',
      url,
      entities: [OrderEntity],
      migrations,
      // Unqualified names (the migrations', TypeORM's) resolve in the schema.
      ...(schema === undefined ? {} : { schema, extra: { options: `-c search_path=${schema}` } }),
    });
  }
  const target = new URL(url);
  if (schema !== undefined) target.pathname = `/${schema}`;
  return new DataSource({ type: 'mysql', url: target.toString(), timezone: 'Z', entities: [OrderEntity], migrations });
}

/** Places an order: the order row and its message, in one transaction. */
export async function placeOrder(
  dataSource: DataSource,
  outbox: Outbox,
  input: { customer: string; total: number },
): Promise<{ orderId: string; messageId: string }> {
  const order: Order = { id: randomUUID(), ...input };
  return dataSource.transaction(async (manager) => {
    await manager.insert(OrderEntity, order);
    const { id } = await outbox.enqueue(fromTypeorm(manager), {
      topic: 'orders.placed',
      key: order.customer,
      payload: { ...order },
    });
    return { orderId: order.id, messageId: id };
  });
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const url = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
  const dataSource = await orderDataSource(url).initialize();
  await dataSource.runMigrations(); // deploy-time work, here so the example runs with one command
  const placed = await placeOrder(dataSource, createOutbox({ dialect: dialectOf(url) }), { customer: 'alice', total: 42 });
  console.log(`order ${placed.orderId} placed, message ${placed.messageId} in the outbox`);
  await dataSource.destroy();
}
