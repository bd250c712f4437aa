import type { Kysely } from 'kysely';
import { ConfigError } from '../errors.js';
import { DIALECT_NAMES, type DialectName } from '../dialects/dialect-name.js';
import { assertPlainIdentifier } from '../dialects/identifiers.js';
import { DEFAULT_TABLE_NAME, runMigrations, type MigrationResult } from '../dialects/migrator.js';
import { tableNames } from '../dialects/identifiers.js';
import { dialectFor } from '../dialects/index.js';
import { defaultPublication, logicalNames } from '../relay/logical/names.js';
import { createPublications } from '../relay/logical/slots.js';

export interface MigrateOptions {
  dialect: DialectName;
  /** Outbox table name. Default `txoutbox`. */
  table?: string;
  /** PostgreSQL schema or MySQL database; created if missing. Default: the connection's own. */
  schema?: string;
  /**
   * PostgreSQL, for the logical relay: also create this publication of the table's inserts (unless it exists).
   * With `partitions`, one publication per partition, `<publication>_<i>`, each with its row filter (PostgreSQL 15+).
   */
  publication?: string;
  /** How many partitions the logical relays split the stream into (the relays' `partitions`). Default 1. */
  partitions?: number;
}

/**
 * Creates or upgrades the outbox tables by applying the SQL files shipped under `migrations/<dialect>/outbox`.
 * Idempotent, and safe to run from several processes at once (they take a lock and apply each file once).
 * A file that fails throws a `TxOutboxError` with code `TXOUTBOX_MIGRATION_FAILED` naming it.
 *
 * @example
 * ```ts
 * import { migrate } from 'txoutbox';
 *
 * await migrate(db, { dialect: 'postgres' }); // at deploy time; the second run does nothing
 * ```
 */
export async function migrate<DB>(db: Kysely<DB>, options: MigrateOptions): Promise<MigrationResult[]> {
  if (!DIALECT_NAMES.includes(options.dialect)) {
    throw new ConfigError(`migrate: dialect must be one of ${DIALECT_NAMES.join(', ')}, got ${JSON.stringify(options.dialect)}.`);
  }
  const table = assertPlainIdentifier(options.table ?? DEFAULT_TABLE_NAME, 'table');
  const schema = options.schema === undefined ? null : assertPlainIdentifier(options.schema, 'schema');
  const results = await runMigrations(db, { dialect: options.dialect, component: 'outbox', table, schema });
  if (options.publication !== undefined || options.partitions !== undefined) {
    if (!dialectFor(options.dialect).logicalDecoding)
      throw new ConfigError('migrate: publication is for the logical relay, which needs PostgreSQL.');
    const names = tableNames(table, schema);
    await createPublications(
      db,
      names,
      logicalNames(
        options.publication ?? defaultPublication(names),
        options.publication ?? defaultPublication(names),
        options.partitions ?? 1,
      ),
    );
  }
  return results;
}
