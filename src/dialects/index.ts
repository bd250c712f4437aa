import type { Kysely } from 'kysely';
import type { AdminOptions, AdminStore } from './admin.js';
import type { Dialect } from './dialect.js';
import type { DialectName } from './dialect-name.js';
import type { TableNames } from './identifiers.js';
import type { InboxStore } from './inbox-store.js';
import { mysqlDialect } from './mysql/index.js';
import { postgresDialect } from './postgres/index.js';

const DIALECTS: Record<DialectName, Dialect> = { postgres: postgresDialect, mysql: mysqlDialect };

export function dialectFor(name: DialectName): Dialect {
  return DIALECTS[name];
}

export function adminStoreFor<DB>(
  dialect: DialectName,
  db: Kysely<DB>,
  names: TableNames,
  options: AdminOptions = {},
): AdminStore {
  return dialectFor(dialect).adminStore(db, names, options);
}

export function inboxStoreFor(dialect: DialectName): InboxStore {
  return dialectFor(dialect).inboxStore;
}
