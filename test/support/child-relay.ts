import { Kysely, MysqlDialect, PostgresDialect } from 'kysely';
import mysql from 'mysql2';
import pg from 'pg';
import type { DialectName } from '../../src/index.js';

/**
 * What a relay in a child process of a test starts with: its arguments after the dialect, URL and schema, a small
 * pool of its own, and an exit when the parent goes (a test that fails must not leave relays behind).
 */
export function childRelaySetup(): { dialect: DialectName; schema: string; args: string[]; db: Kysely<unknown> } {
  const [dialect, url, schema, ...args] = process.argv.slice(2) as [DialectName, string, string, ...string[]];
  process.on('disconnect', () => process.exit(1));
  const db = new Kysely<unknown>({
    dialect:
      dialect === 'postgres'
        ? new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 4 }) })
        : new MysqlDialect({ pool: mysql.createPool({ uri: url, connectionLimit: 4, timezone: 'Z' }) }),
  });
  return { dialect, schema, args, db };
}
