/**
 * The order-placing flow of examples/order-service with Drizzle: in one `db.transaction`, insert the order and
 * enqueue its `orders.placed` message. The tables come from Drizzle's migrator: txoutbox's SQL files written as the
 * custom migrations `drizzle-kit generate --custom` would hold (see drizzleMigrations below).
 *
 *   DATABASE_URL=postgres://root@127.0.0.1:5432/test node --import tsx examples/drizzle/place-order.ts
 *   DATABASE_URL=mysql://root@127.0.0.1:3306/test node --import tsx examples/drizzle/place-order.ts
 */
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { decimal, mysqlTable, varchar } from 'drizzle-orm/mysql-core';
import { drizzle as drizzleMysql, type MySql2Database } from 'drizzle-orm/mysql2';
import { migrate as migrateMysql } from 'drizzle-orm/mysql2/migrator';
import { drizzle as drizzlePg, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import { migrate as migratePg } from 'drizzle-orm/node-postgres/migrator';
import { numeric, pgTable, varchar as pgVarchar } from 'drizzle-orm/pg-core';
import mysql from 'mysql2';
import pg from 'pg';
import { createOutbox, type DialectName, type Outbox } from '../../src/index.js';
import { fromDrizzle } from '../../src/orm/drizzle.js';

export const pgOrders = pgTable('orders', {
  id: pgVarchar('id', { length: 64 }).primaryKey(),
  customer: pgVarchar('customer', { length: 255 }).notNull(),
  total: numeric('total', { precision: 12, scale: 2 }).notNull(),
});
export const mysqlOrders = mysqlTable('orders', {
  id: varchar('id', { length: 64 }).primaryKey(),
  customer: varchar('customer', { length: 255 }).notNull(),
  total: decimal('total', { precision: 12, scale: 2 }).notNull(),
});

export type App =
  | { dialect: 'postgres'; db: NodePgDatabase; close(): Promise<void> }
  | { dialect: 'mysql'; db: MySql2Database; close(): Promise<void> };

/** Places an order: the row and its message commit together, or neither exists. Returns the message id. */
export async function placeOrder(app: App, outbox: Outbox, input: { customer: string; total: number }) {
  const order = { id: randomUUID(), customer: input.customer, total: input.total.toFixed(2) };
  const message = { topic: 'orders.placed', key: order.customer, payload: { ...order, total: input.total } };
  const { id: messageId } =
    app.dialect === 'postgres'
      ? await app.db.transaction(async (tx) => {
          await tx.insert(pgOrders).values(order);
          return outbox.enqueue(fromDrizzle(tx), message);
        })
      : await app.db.transaction(async (tx) => {
          await tx.insert(mysqlOrders).values(order);
          return outbox.enqueue(fromDrizzle(tx), message);
        });
  return { orderId: order.id, messageId };
}

/** In an installed app: new URL('node_modules/txoutbox/migrations/', `file://${process.cwd()}/`). */
const TXOUTBOX_MIGRATIONS = new URL('../../migrations/', import.meta.url);
const ORDERS_TABLE =
  'CREATE TABLE orders (id varchar(64) PRIMARY KEY, customer varchar(255) NOT NULL, total numeric(12, 2) NOT NULL);';

/**
 * Writes a Drizzle migrations folder (meta/_journal.json and one .sql per migration, statements separated by
 * `--> statement-breakpoint`), as drizzle-kit's `generate --custom` would leave it once each file is filled with
 * txoutbox's SQL, followed by the service's own table. In a real app these files are generated once and committed.
 */
export async function drizzleMigrations(dialect: DialectName, folder: string): Promise<void> {
  const source = new URL(`${dialect}/outbox/`, TXOUTBOX_MIGRATIONS);
  const files = (await readdir(source)).filter((name) => name.endsWith('.sql')).sort();
  const migrations = [
    ...(await Promise.all(
      files.map(async (file) => ({
        name: `txoutbox_outbox_${file.replace(/\.sql$/, '')}`,
        text: await readFile(new URL(file, source), 'utf8'),
      })),
    )),
    { name: 'orders', text: ORDERS_TABLE },
  ];
  await mkdir(join(folder, 'meta'), { recursive: true });
  const entries: { idx: number; version: string; when: number; tag: string; breakpoints: boolean }[] = [];
  for (const migration of migrations) {
    // A statement ends where a line ends with a semicolon (txoutbox's files promise it); comments go.
    const statements = migration.text
      .replace(/--.*$/gm, '')
      .split(/;\s*$/m)
      .map((s) => s.trim())
      .filter(Boolean);
    // Some files are comments only on MySQL (the logical relay is PostgreSQL's); Drizzle would send them as an empty query.
    if (statements.length === 0) continue;
    const idx = entries.length;
    const tag = `${String(idx).padStart(4, '0')}_${migration.name}`;
    await writeFile(join(folder, `${tag}.sql`), statements.join(';\n--> statement-breakpoint\n'));
    entries.push({ idx, version: dialect === 'postgres' ? '7' : '5', when: 1_700_000_000_000 + idx, tag, breakpoints: true });
  }
  await writeFile(
    join(folder, 'meta', '_journal.json'),
    JSON.stringify({ version: '7', dialect: dialect === 'postgres' ? 'postgresql' : 'mysql', entries }, null, 2),
  );
}

/** Drizzle's migrator applies the folder; `migrationsSchema` (PostgreSQL) is where it records what ran. */
export async function migrateTables(app: App, migrationsSchema?: string): Promise<void> {
  const folder = await mkdtemp(join(tmpdir(), 'txoutbox-drizzle-'));
  try {
    await drizzleMigrations(app.dialect, folder);
    if (app.dialect === 'postgres')
      await migratePg(app.db, { migrationsFolder: folder, ...(migrationsSchema ? { migrationsSchema } : {}) });
    else await migrateMysql(app.db, { migrationsFolder: folder });
  } finally {
    await rm(folder, { recursive: true, force: true });
  }
}

/** Drizzle on node-postgres or mysql2, by the URL's scheme; `searchPath` (PostgreSQL) for the tests. */
export function openDrizzle(url: string, searchPath?: string): App {
  if (/^(mysql|mariadb):/.test(url)) {
    const pool = mysql.createPool({ uri: url.replace(/^mariadb:/, 'mysql:') });
    return {
      dialect: 'mysql',
      db: drizzleMysql({ client: pool }),
      close: () => new Promise((resolve) => pool.end(() => resolve())),
    };
  }
  const pool = new pg.Pool({ connectionString: url, ...(searchPath ? { options: `-c search_path=${searchPath}` } : {}) });
  return { dialect: 'postgres', db: drizzlePg({ client: pool }), close: () => pool.end() };
}

async function main(): Promise<void> {
  const app = openDrizzle(process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test');
  try {
    await migrateTables(app);
    console.log(await placeOrder(app, createOutbox({ dialect: app.dialect }), { customer: 'alice', total: 42 }));
  } finally {
    await app.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
