/**
 * Example 3: a consumer service with the inbox. It consumes the order service's `orders.placed` messages from
 * RabbitMQ and keeps per-customer totals in its own table. Delivery is at-least-once, and adding to a total twice
 * would be wrong, so each message goes through the inbox: the message id is recorded in the same transaction as the
 * totals, and a redelivered id is skipped.
 *
 *   npm run example:orders & npm run example:sidecar &   # examples 1 and 2: the producer side
 *   npm run example:consumer                             # this service (DATABASE_URL, AMQP_URL, ORDERS_QUEUE)
 */
import amqp from 'amqplib';
import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import { createRabbitMqInboxConsumer } from '../../src/dedupe/consumers/rabbitmq.js';
import { createInbox, migrateInbox, type DialectName } from '../../src/index.js';

const url = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
const dialect: DialectName = /^(mysql|mariadb):/.test(url) ? 'mysql' : 'postgres';
const schema = process.env.CONSUMER_SCHEMA || undefined;
const amqpUrl = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const queue = process.env.ORDERS_QUEUE ?? 'orders.placed';

async function openDb(): Promise<Kysely<any>> {
  if (dialect === 'postgres') {
    const { default: pg } = await import('pg');
    return new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url }) }) });
  }
  const { default: mysql } = await import('mysql2');
  return new Kysely<any>({ dialect: new MysqlDialect({ pool: mysql.createPool({ uri: url, timezone: 'Z' }) }) });
}

const db = await openDb();
// Deploy-time work, done here so the example runs with one command (the same as
// `npx txoutbox migrate --config examples/consumer-service/txoutbox.yaml`): the inbox and the business table.
await migrateInbox(db, { dialect, ...(schema === undefined ? {} : { schema }) });
const totals = schema === undefined ? sql.id('customer_totals') : sql.id(schema, 'customer_totals');
await sql`CREATE TABLE IF NOT EXISTS ${totals} (customer varchar(255) PRIMARY KEY, orders integer NOT NULL, spent numeric(12, 2) NOT NULL)`.execute(
  db,
);
// The queue the sidecar publishes to, declared as its topology does, so this service may start first.
const connection = await amqp.connect(amqpUrl);
await (await connection.createChannel()).assertQueue(queue, { durable: true });
await connection.close();

const inbox = createInbox({ dialect, ...(schema === undefined ? {} : { schema }) });
interface Order {
  id: string;
  customer: string;
  total: number;
}
const orderOf = (payload: Buffer) => JSON.parse(payload.toString('utf8')) as Order;

const consumer = createRabbitMqInboxConsumer({
  url: amqpUrl,
  queue,
  consumer: 'customer-totals', // the name the inbox records ids under
  db,
  inbox,
  // Runs inside the transaction that records the message id: both commit, or neither (and the message comes back).
  handler: async (message, trx) => {
    const order = orderOf(message.payload);
    await (
      dialect === 'postgres'
        ? sql`INSERT INTO ${totals} (customer, orders, spent) VALUES (${order.customer}, 1, ${order.total})
              ON CONFLICT (customer) DO UPDATE SET orders = customer_totals.orders + 1, spent = customer_totals.spent + EXCLUDED.spent`
        : sql`INSERT INTO ${totals} (customer, orders, spent) VALUES (${order.customer}, 1, ${order.total})
              ON DUPLICATE KEY UPDATE orders = orders + 1, spent = spent + VALUES(spent)`
    ).execute(trx);
  },
});
consumer.on('processed', (message) => {
  const order = orderOf(message.payload);
  console.log(`applied message ${message.id}: order ${order.id}, ${order.customer} +${order.total}`);
});
consumer.on('duplicate', (message) => console.log(`duplicate message ${message.id} skipped (the inbox has it)`));
consumer.on('retrying', ({ message, error, delayMs }) =>
  console.error(`message ${message.id} failed, retrying in ${delayMs} ms: ${error}`),
);
consumer.on('dead', (letter) => console.error(`message ${letter.messageId} dead-lettered: ${letter.error}`));
consumer.on('error', (error) => console.error(`consumer error (it keeps going): ${error.message}`));
await consumer.start();
console.log(`consumer service (${dialect}) consuming ${queue} as "${consumer.consumer}"`);

const shutdown = () => void consumer.close().then(() => db.destroy().then(() => process.exit(0)));
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
