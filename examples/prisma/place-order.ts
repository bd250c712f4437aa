/**
 * The order-placing flow of examples/order-service, with Prisma: in one `prisma.$transaction` the order row is
 * written through the Prisma model and its `orders.placed` message through `fromPrisma(tx)`; both commit or neither.
 *
 *   # once: generate the client (Prisma 7, driver adapters; see the note on the engine download in the report)
 *   npx prisma generate --config examples/prisma/prisma.config.ts --schema examples/prisma/schema/postgres.prisma
 *   DATABASE_URL=postgres://root@127.0.0.1:5432/test node --import tsx examples/prisma/place-order.ts
 *   # MySQL/MariaDB: schema/mysql.prisma, and DATABASE_URL=mysql://root@127.0.0.1:3306/test
 *
 * In an application you import the generated client statically (`import { PrismaClient } from
 * './generated/postgres/client.js'`); this example loads it by path so the repository typechecks before generating.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PrismaMariaDb } from '@prisma/adapter-mariadb';
import { PrismaPg } from '@prisma/adapter-pg';
import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import { createOutbox, migrate, type DialectName, type Outbox } from '../../src/index.js';
import { fromPrisma, type PrismaTransactionClient } from '../../src/orm/prisma.js';

/** What the flow uses of the generated client's transaction (`tx.order` is the `Order` model). */
export interface OrderTx extends PrismaTransactionClient {
  order: { create(args: { data: { id: string; customer: string; total: number } }): PromiseLike<unknown> };
}

export interface OrderClient {
  $transaction<T>(work: (tx: OrderTx) => Promise<T>): Promise<T>;
  $queryRawUnsafe(query: string, ...values: unknown[]): PromiseLike<unknown>;
  $disconnect(): Promise<void>;
}

export interface PlacedOrder {
  orderId: string;
  messageId: string;
}

/** Places an order: the row and its `orders.placed` message in one transaction. */
export async function placeOrder(
  prisma: OrderClient,
  outbox: Outbox,
  input: { customer: string; total: number },
): Promise<PlacedOrder> {
  const order = { id: randomUUID(), customer: input.customer, total: input.total };
  const { id: messageId } = await prisma.$transaction(async (tx) => {
    await tx.order.create({ data: order });
    return outbox.enqueue(fromPrisma(tx), { topic: 'orders.placed', key: order.customer, payload: order });
  });
  return { orderId: order.id, messageId };
}

export const dialectOf = (url: string): DialectName => (/^(mysql|mariadb):/.test(url) ? 'mysql' : 'postgres');

/**
 * Deploy-time work, done here so the example runs with one command: txoutbox's tables (with its own migrate(),
 * which needs a Kysely instance; Prisma Migrate can apply the same SQL files instead, see docs/migrations.md) and `orders`.
 */
export async function migrateExample(url: string, schema?: string): Promise<void> {
  const dialect = dialectOf(url);
  const db =
    dialect === 'postgres'
      ? new Kysely<unknown>({
          dialect: new PostgresDialect({ pool: new (await import('pg')).default.Pool({ connectionString: url, max: 1 }) }),
        })
      : new Kysely<unknown>({
          dialect: new MysqlDialect({ pool: (await import('mysql2')).default.createPool({ uri: url, connectionLimit: 1 }) }),
        });
  try {
    await migrate(db, { dialect, ...(schema === undefined ? {} : { schema }) });
    const orders = schema === undefined ? sql.id('orders') : sql.id(schema, 'orders');
    await sql`CREATE TABLE IF NOT EXISTS ${orders} (id varchar(64) PRIMARY KEY, customer varchar(255) NOT NULL, total numeric(12, 2) NOT NULL)`.execute(
      db,
    );
  } finally {
    await db.destroy();
  }
}

/** The generated client for the URL's database, on its driver adapter; `schema` is the PostgreSQL schema or MySQL database. */
export async function openExampleClient(url: string, schema?: string): Promise<OrderClient> {
  const dialect = dialectOf(url);
  const client = resolve(dirname(fileURLToPath(import.meta.url)), 'generated', dialect, 'client.ts');
  if (!existsSync(client)) {
    throw new Error(
      `Generate the Prisma client first: npx prisma generate --config examples/prisma/prisma.config.ts --schema examples/prisma/schema/${dialect}.prisma`,
    );
  }
  const { PrismaClient } = (await import(pathToFileURL(client).href)) as { PrismaClient: new (options: object) => OrderClient };
  if (dialect === 'postgres') {
    return new PrismaClient({ adapter: new PrismaPg({ connectionString: url }, schema === undefined ? {} : { schema }) });
  }
  const parsed = new URL(url);
  const adapter = new PrismaMariaDb({
    host: parsed.hostname,
    port: Number(parsed.port || 3306),
    user: decodeURIComponent(parsed.username),
    password: decodeURIComponent(parsed.password),
    database: schema ?? parsed.pathname.slice(1),
  });
  return new PrismaClient({ adapter });
}

async function main(): Promise<void> {
  const url = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
  const schema = process.env.ORDERS_SCHEMA || undefined;
  await migrateExample(url, schema);
  const prisma = await openExampleClient(url, schema);
  const outbox = createOutbox({ dialect: dialectOf(url), ...(schema === undefined ? {} : { schema }) });
  try {
    console.log(await placeOrder(prisma, outbox, { customer: 'alice', total: 42 }));
  } finally {
    await prisma.$disconnect();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
