import { Kysely, PostgresDialect } from 'kysely';
import type { PoolOptions } from '../dialect.js';

export async function openPostgresPool({ url, poolSize, onError }: PoolOptions): Promise<Kysely<unknown>> {
  const { default: pg } = await import('pg');
  const pool = new pg.Pool({ connectionString: url, max: poolSize, connectionTimeoutMillis: 10_000 });
  pool.on('error', onError);
  pool.on('connect', (client) => client.on('error', onError));
  return new Kysely<unknown>({ dialect: new PostgresDialect({ pool }) });
}
