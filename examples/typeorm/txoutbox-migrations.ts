/**
 * txoutbox's SQL files as TypeORM migrations, so `typeorm migration:run` (or `dataSource.runMigrations()`) creates
 * and upgrades the outbox (and inbox) tables alongside your own. In your project, point `root` at
 * `node_modules/txoutbox/migrations`. The files use the default table names in the connection's own schema
 * (PostgreSQL: the search_path; MySQL: the URL's database).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { MigrationInterface, QueryRunner } from 'typeorm';
import type { DialectName } from '../../src/index.js';

const ROOT = fileURLToPath(new URL('../../migrations/', import.meta.url));

/**
 * TypeORM wants a 13-digit timestamp at the end of each migration's name and runs pending ones in that order; these
 * are fixed, so txoutbox's files keep their order and their names stay the same from one release to the next.
 */
const BASE = { outbox: 1_700_000_000_000, inbox: 1_700_000_001_000 };

export function txoutboxMigrations(
  dialect: DialectName,
  components: readonly ('outbox' | 'inbox')[] = ['outbox'],
  root = ROOT,
): (new () => MigrationInterface)[] {
  return components.flatMap((component) =>
    readdirSync(`${root}/${dialect}/${component}`)
      .filter((file) => /^\d{3}_[a-z0-9_]+\.sql$/.test(file))
      .sort()
      .map((file) => {
        const number = Number(file.slice(0, 3));
        const statements = readFileSync(`${root}/${dialect}/${component}/${file}`, 'utf8')
          .replace(/--.*$/gm, '')
          // Each statement ends with a semicolon at the end of a line (mysql2 runs one statement per query).
          .split(/;\s*$/m)
          .map((statement) => statement.trim())
          .filter((statement) => statement.length > 0);
        return class implements MigrationInterface {
          name = `Txoutbox_${component}_${file.slice(0, -4)}_${BASE[component] + number}`;
          async up(queryRunner: QueryRunner): Promise<void> {
            for (const statement of statements) await queryRunner.query(statement);
          }
          async down(): Promise<void> {
            throw new Error('txoutbox migrations are forward-only');
          }
        };
      }),
  );
}
