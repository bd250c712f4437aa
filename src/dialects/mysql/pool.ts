import { Kysely, MysqlDialect } from 'kysely';
import type { PoolOptions } from '../dialect.js';

export async function openMysqlPool({ url, poolSize, onError }: PoolOptions): Promise<Kysely<unknown>> {
  const { default: mysql } = await import('mysql2');
  // mariadb:// is accepted in config; mysql2 knows the scheme as mysql://.
  const uri = url.replace(/^mariadb:/, 'mysql:');
  // DATETIME columns hold UTC (txoutbox writes UTC_TIMESTAMP), so read them as UTC.
  const pool = mysql.createPool({ uri, connectionLimit: poolSize, timezone: 'Z', connectTimeout: 10_000 });
  pool.on('connection', (connection) => connection.on('error', onError));
  return new Kysely<unknown>({ dialect: new MysqlDialect({ pool }) });
}
