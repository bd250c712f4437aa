// Runs migrate() in its own process, so a test can start several at once against one database.
import { Kysely, MysqlDialect, PostgresDialect } from 'kysely';
import mysql from 'mysql2';
import pg from 'pg';
import { migrate, type DialectName } from '../../src/index.js';

const [dialect, url, schema, table] = process.argv.slice(2) as [DialectName, string, string, string];
const db = new Kysely<unknown>({
  dialect:
    dialect === 'postgres'
      ? new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 2 }) })
      : new MysqlDialect({ pool: mysql.createPool({ uri: url, connectionLimit: 2 }) }),
});
try {
  const results = await migrate(db, { dialect, schema, table });
  process.stdout.write(JSON.stringify(results.map((result) => result.migrationName)));
} finally {
  await db.destroy();
}
