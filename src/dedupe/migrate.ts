import type { Kysely } from 'kysely';
import { parseOptions } from '../config.js';
import type { DialectName } from '../dialects/dialect-name.js';
import { assertPlainIdentifier } from '../dialects/identifiers.js';
import { runMigrations, type MigrationResult } from '../dialects/migrator.js';
import { inboxLocationSchema } from './options.js';

export interface MigrateInboxOptions {
  dialect: DialectName;
  /** Inbox table name (dead letters go to `<table>_dead`). Default `txoutbox_inbox`. */
  table?: string;
  /** PostgreSQL schema or MySQL database; created if missing. Default: the connection's own. */
  schema?: string;
}

const schema = inboxLocationSchema.strict();

/**
 * Creates or upgrades the inbox tables from the SQL files under `migrations/<dialect>/inbox`, with their own history
 * table (`<table>_migrations`), so a service may have the inbox, the outbox, or both. Idempotent, and safe to run
 * from several processes at once.
 *
 * @example
 * ```ts
 * import { migrateInbox } from 'txoutbox';
 *
 * await migrateInbox(db, { dialect: 'postgres' }); // txoutbox_inbox and its dead letters, txoutbox_inbox_dead
 * ```
 */
export async function migrateInbox<DB>(db: Kysely<DB>, options: MigrateInboxOptions): Promise<MigrationResult[]> {
  const resolved = parseOptions(schema, options, 'migrateInbox');
  const table = assertPlainIdentifier(resolved.table, 'table');
  const target = resolved.schema === undefined ? null : assertPlainIdentifier(resolved.schema, 'schema');
  return runMigrations(db, { dialect: resolved.dialect, component: 'inbox', table, schema: target });
}
