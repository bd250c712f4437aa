/**
 * Example 1 (and 4): an HTTP order service. POST /orders writes the order and its `orders.placed` message in one
 * transaction; the txoutbox sidecar (txoutbox.yaml beside this file) relays the message to RabbitMQ.
 *
 *   npm run example:orders          # PostgreSQL (DATABASE_URL, default postgres://root@127.0.0.1:5432/test)
 *   npm run example:orders:mysql    # the same service on MySQL/MariaDB
 *   curl -XPOST localhost:3000/orders -d '{"customer":"alice","total":42}'
 */
import { createServer } from 'node:http';
import { randomUUID } from 'node:crypto';
import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import { createOutbox, migrate, ValidationError, type DialectName } from '../../src/index.js';

const url = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
const dialect: DialectName = /^(mysql|mariadb):/.test(url) ? 'mysql' : 'postgres';
const schema = process.env.ORDERS_SCHEMA || undefined;

async function openDb(): Promise<Kysely<any>> {
  if (dialect === 'postgres') {
    const { default: pg } = await import('pg');
    return new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url }) }) });
  }
  const { default: mysql } = await import('mysql2');
  return new Kysely<any>({ dialect: new MysqlDialect({ pool: mysql.createPool({ uri: url, timezone: 'Z' }) }) });
}

const db = await openDb();
// Deploy-time work, done here so the example runs with one command: the outbox tables and the business table.
await migrate(db, { dialect, ...(schema === undefined ? {} : { schema }) });
const orders = schema === undefined ? sql.id('orders') : sql.id(schema, 'orders');
await sql`CREATE TABLE IF NOT EXISTS ${orders} (id varchar(64) PRIMARY KEY, customer varchar(255) NOT NULL, total numeric(12, 2) NOT NULL)`.execute(
  db,
);
// Wake the sidecar with NOTIFY on PostgreSQL (it LISTENs); MySQL relays poll adaptively.
const outbox = createOutbox({ dialect, ...(schema === undefined ? {} : { schema }) });

const server = createServer(async (request, response) => {
  const reply = (status: number, body: unknown) => {
    response.writeHead(status, { 'content-type': 'application/json' });
    response.end(`${JSON.stringify(body)}\n`);
  };
  try {
    if (request.method === 'GET' && request.url === '/healthz') return reply(200, { ok: true });
    if (request.method !== 'POST' || request.url !== '/orders') return reply(404, { error: 'POST /orders' });
    let body = '';
    for await (const chunk of request) body += chunk;
    const input = JSON.parse(body || '{}') as { customer?: unknown; total?: unknown };
    if (typeof input.customer !== 'string' || typeof input.total !== 'number') {
      return reply(400, { error: 'send {"customer": string, "total": number}' });
    }
    const order = { id: randomUUID(), customer: input.customer, total: input.total };
    // One transaction: the order and its message commit together, or neither exists.
    const { id: messageId } = await db.transaction().execute(async (trx) => {
      await sql`INSERT INTO ${orders} (id, customer, total) VALUES (${order.id}, ${order.customer}, ${order.total})`.execute(trx);
      return outbox.enqueue(trx, { topic: 'orders.placed', key: order.customer, payload: order });
    });
    reply(201, { orderId: order.id, messageId });
  } catch (error) {
    reply(error instanceof ValidationError || error instanceof SyntaxError ? 400 : 500, { error: (error as Error).message });
  }
});

server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : process.env.PORT;
  console.log(`order service (${dialect}) listening on http://127.0.0.1:${port}`);
});

const shutdown = () => server.close(() => void db.destroy().then(() => process.exit(0)));
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
