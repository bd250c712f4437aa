/**
 * txoutbox's SQL files as Sequelize migrations: each is `{ name, up({ context: queryInterface }) }`, the shape
 * Umzug (Sequelize's migration runner) takes, and `up` is what a sequelize-cli migration file's `up(queryInterface)`
 * would call. In your project, point `root` at `node_modules/txoutbox/migrations`. The files use the default table
 * names in the connection's own schema (PostgreSQL: the search_path; MySQL: the URL's database).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DataTypes, QueryTypes, type QueryInterface } from 'sequelize';
import type { DialectName } from '../../src/index.js';

const ROOT = fileURLToPath(new URL('../../migrations/', import.meta.url));

export interface SequelizeMigration {
  name: string;
  up(params: { context: QueryInterface }): Promise<void>;
}

export function txoutboxMigrations(
  dialect: DialectName,
  components: readonly ('outbox' | 'inbox')[] = ['outbox'],
  root = ROOT,
): SequelizeMigration[] {
  return components.flatMap((component) =>
    readdirSync(`${root}/${dialect}/${component}`)
      .filter((file) => /^\d{3}_[a-z0-9_]+\.sql$/.test(file))
      .sort()
      .map((file) => {
        const statements = readFileSync(`${root}/${dialect}/${component}/${file}`, 'utf8')
          .replace(/--.*$/gm, '')
          // Each statement ends with a semicolon at the end of a line (mysql2 runs one statement per query).
          .split(/;\s*$/m)
          .map((statement) => statement.trim())
          .filter((statement) => statement.length > 0);
        return {
          name: `txoutbox-${component}-${file.slice(0, -4)}`,
          async up({ context }: { context: QueryInterface }) {
            for (const statement of statements) await context.sequelize.query(statement, { type: QueryTypes.RAW });
          },
        };
      }),
  );
}

/**
 * Applies pending migrations in order and records each in `SequelizeMeta`, the table sequelize-cli keeps (Umzug's
 * SequelizeStorage uses it too), so either tool sees them as done. For this example only; use Umzug or
 * sequelize-cli in a project.
 */
export async function runMigrations(
  queryInterface: QueryInterface,
  migrations: readonly SequelizeMigration[],
): Promise<string[]> {
  const { sequelize } = queryInterface;
  // sequelize-cli's own table: CREATE TABLE IF NOT EXISTS "SequelizeMeta" (name varchar(255) PRIMARY KEY).
  await queryInterface.createTable('SequelizeMeta', {
    name: { type: DataTypes.STRING(255), primaryKey: true, allowNull: false },
  });
  const rows = await sequelize.query<{ name: string }>(`SELECT name FROM ${queryInterface.quoteIdentifier('SequelizeMeta')}`, {
    type: QueryTypes.SELECT,
  });
  const done = new Set(rows.map((row) => row.name));
  const applied: string[] = [];
  for (const migration of migrations) {
    if (done.has(migration.name)) continue;
    await migration.up({ context: queryInterface });
    await queryInterface.bulkInsert('SequelizeMeta', [{ name: migration.name }]);
    applied.push(migration.name);
  }
  return applied;
}
