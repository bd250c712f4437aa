/**
 * The order service's flow with Sequelize: one `sequelize.transaction` creates the order and enqueues its
 * `orders.placed` message, so both commit or neither exists. The outbox tables come from migrations
 * (txoutbox-migrations.ts beside this file).
 *
 *   DATABASE_URL=postgres://root@127.0.0.1:5432/test node --import tsx examples/sequelize/place-order.ts
 *   DATABASE_URL=mysql://root@127.0.0.1:3306/test node --import tsx examples/sequelize/place-order.ts
 */
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { DataTypes, Sequelize, type Model, type ModelStatic, type QueryInterface } from 'sequelize';
import { createOutbox, type DialectName, type Outbox } from '../../src/index.js';
import { fromSequelize } from '../../src/orm/sequelize.js';
import { runMigrations, txoutboxMigrations, type SequelizeMigration } from './txoutbox-migrations.js';

export interface Order {
  id: string;
  customer: string;
  total: number;
}

export const dialectOf = (url: string): DialectName => (/^(mysql|mariadb):/.test(url) ? 'mysql' : 'postgres');

/** A Sequelize on `url`; `schema` (a PostgreSQL schema, or a MySQL database) instead of the URL's default. */
export function orderDatabase(url: string, schema?: string): { sequelize: Sequelize; Order: ModelStatic<Model<Order>> } {
  const dialect = dialectOf(url);
  const target = new URL(url);
  if (dialect === 'mysql' && schema !== undefined) target.pathname = `/${schema}`;
  const sequelize = new Sequelize(target.toString(), {
    logging: false,
    // Unqualified names (the migrations', the models') resolve in the schema.
    ...(dialect === 'postgres' && schema !== undefined ? { dialectOptions: { options: `-c search_path=${schema}` } } : {}),
  });
  const Order = sequelize.define<Model<Order>>(
    'Order',
    {
      id: { type: DataTypes.STRING(64), primaryKey: true },
      customer: { type: DataTypes.STRING(255), allowNull: false },
      total: { type: DataTypes.DECIMAL(12, 2), allowNull: false },
    },
    { tableName: 'orders', timestamps: false },
  );
  return { sequelize, Order };
}

const createOrders: SequelizeMigration = {
  name: 'orders-001-create',
  async up({ context }: { context: QueryInterface }) {
    await context.createTable('orders', {
      id: { type: DataTypes.STRING(64), primaryKey: true },
      customer: { type: DataTypes.STRING(255), allowNull: false },
      total: { type: DataTypes.DECIMAL(12, 2), allowNull: false },
    });
  },
};

export function migrateOrders(sequelize: Sequelize): Promise<string[]> {
  const dialect: DialectName = sequelize.getDialect() === 'postgres' ? 'postgres' : 'mysql';
  return runMigrations(sequelize.getQueryInterface(), [...txoutboxMigrations(dialect), createOrders]);
}

/** Places an order: the order row and its message, in one transaction. */
export async function placeOrder(
  sequelize: Sequelize,
  Order: ModelStatic<Model<Order>>,
  outbox: Outbox,
  input: { customer: string; total: number },
): Promise<{ orderId: string; messageId: string }> {
  const order: Order = { id: randomUUID(), ...input };
  return sequelize.transaction(async (t) => {
    await Order.create(order, { transaction: t });
    const { id } = await outbox.enqueue(fromSequelize(t), { topic: 'orders.placed', key: order.customer, payload: { ...order } });
    return { orderId: order.id, messageId: id };
  });
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const url = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
  const { sequelize, Order } = orderDatabase(url);
  await migrateOrders(sequelize); // deploy-time work, here so the example runs with one command
  const placed = await placeOrder(sequelize, Order, createOutbox({ dialect: dialectOf(url) }), { customer: 'alice', total: 42 });
  console.log(`order ${placed.orderId} placed, message ${placed.messageId} in the outbox`);
  await sequelize.close();
}
