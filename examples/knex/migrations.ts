/**
 * txoutbox's SQL files (migrations/<dialect>/outbox) in Knex's own migration tool, as a migration source beside the
 * service's own migration: `await knex.migrate.latest({ migrationSource: migrationSource('postgres') })`. MikroORM v6
 * runs on Knex, so the same source works there through `orm.em.getKnex().migrate`.
 */
import { readdir, readFile } from 'node:fs/promises';
import type { Knex } from 'knex';
import type { DialectName } from '../../src/index.js';

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
