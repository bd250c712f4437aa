import type { Dialect } from './dialect.js';
import type { DialectName } from './dialect-name.js';
import { mysqlDialect } from './mysql/index.js';
import { postgresDialect } from './postgres/index.js';

const DIALECTS: Record<DialectName, Dialect> = { postgres: postgresDialect, mysql: mysqlDialect };

export function dialectFor(name: DialectName): Dialect {
  return DIALECTS[name];
}
