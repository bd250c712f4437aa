import { randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import pg from 'pg';
import type { DialectName } from '../../../src/index.js';

/**
 * An empty schema (PostgreSQL) or database (MySQL) of its own, for an example that runs its own migrations from
 * scratch (the harness's schema is migrated already); `drop` removes it.
 */
export async function scratchSchema(dialect: DialectName, url: string): Promise<{ name: string; drop(): Promise<void> }> {
  const name = `txo_ex_${randomBytes(5).toString('hex')}`;
  const run = async (statement: string) => {
    if (dialect === 'postgres') {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query(statement);
      } finally {
        await client.end();
      }
    } else {
      const connection = await mysql.createConnection({ uri: url });
      try {
        await connection.query(statement);
      } finally {
        await connection.end();
      }
    }
  };
  await run(dialect === 'postgres' ? `CREATE SCHEMA "${name}"` : `CREATE DATABASE \`${name}\``);
  return { name, drop: () => run(dialect === 'postgres' ? `DROP SCHEMA "${name}" CASCADE` : `DROP DATABASE \`${name}\``) };
}
