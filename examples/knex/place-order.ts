/**
 * The order-placing flow of examples/order-service with Knex: in one Knex transaction, insert the order and enqueue
 * its `orders.placed` message. The tables come from Knex's own migration tool, which applies txoutbox's SQL files
 * (migrations/<dialect>/outbox) through a migration source, next to the service's own migration.
 *
 *   DATABASE_URL=postgres://root@127.0.0.1:5432/test node --import tsx examples/knex/place-order.ts
 *   DATABASE_URL=mysql://root@127.0.0.1:3306/test node --import tsx examples/knex/place-order.ts
 */
import { randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import knex, { type Knex } from 'knex';
import { createOutbox, type DialectName, type Outbox } from '../../src/index.js';
import { fromKnex } from '../../src/orm/knex.js';

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

/** In an installed app: new URL('node_modules/txoutbox/migrations/', `file://${process.cwd()}/`). */
const TXOUTBOX_MIGRATIONS = new URL('../../migrations/', import.meta.url);

interface SqlMigration {
  name: string;
  statements: () => Promise<string[]>;
}

/** The statements of one of txoutbox's SQL files: comments dropped, split where a line ends with a semicolon. */
async function sqlStatements(file: URL): Promise<string[]> {
  const text = (await readFile(file, 'utf8')).replace(/--.*$/gm, '');
  return text
    .split(/;\s*$/m)
    .map((statement) => statement.trim())
    .filter((statement) => statement.length > 0);
}

/**
 * A Knex migration source: txoutbox's outbox files in their order, then the service's own table. Knex records
 * each by name in knex_migrations, so a later txoutbox release's new files run once, on the next migrate.latest().
 */
export function migrationSource(dialect: DialectName): Knex.MigrationSource<SqlMigration> {
  return {
    async getMigrations() {
      const folder = new URL(`${dialect}/outbox/`, TXOUTBOX_MIGRATIONS);
      const files = (await readdir(folder)).filter((name) => name.endsWith('.sql')).sort();
      const txoutbox = files.map((file) => ({
        name: `txoutbox_outbox_${file}`,
        statements: () => sqlStatements(new URL(file, folder)),
      }));
      const orders: SqlMigration = {
        name: 'orders_001_create_orders',
        statements: async () => [
          'CREATE TABLE orders (id varchar(64) PRIMARY KEY, customer varchar(255) NOT NULL, total numeric(12, 2) NOT NULL)',
        ],
      };
      return [...txoutbox, orders];
    },
    getMigrationName: (migration) => migration.name,
    async getMigration(migration) {
      return {
        async up(db: Knex) {
          // knex.raw reads every "?" as a binding; txoutbox's SQL has none outside comments.
          for (const statement of await migration.statements()) await db.raw(statement);
        },
        async down() {
          throw new Error(`${migration.name} has no down migration`);
        },
      };
    },
  };
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
