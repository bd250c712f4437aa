import { sql, type Kysely } from 'kysely';
import { dialectFor } from '../dialects/index.js';
import type { DatabaseConfig, InboxConfig, TableConfig } from './config.js';
import { CliError, EXIT } from './errors.js';
import { redactUrl, type Redactor } from './redact.js';

/** One configured database, opened: a Kysely instance with its own pool. */
export interface OpenDatabase {
  config: DatabaseConfig;
  db: Kysely<unknown>;
  /** Runs `SELECT 1`; throws a CliError naming the (redacted) URL when the database does not answer. */
  ping(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

/** Where a table lives, for messages: `orders-pg/public.txoutbox`. */
export function tableLabel(database: DatabaseConfig, table: TableConfig | InboxConfig): string {
  const schema = table.schema ?? database.schema;
  return `${database.name}/${schema === undefined ? '' : `${schema}.`}${table.table}`;
}

export function schemaOf(database: DatabaseConfig, table: TableConfig | InboxConfig): string | undefined {
  return table.schema ?? database.schema;
}

/**
 * Opens a pool for the database. Connection errors on idle pooled connections (a restart, a failover) are
 * reported through `onError` instead of crashing the process; the next query simply opens a new connection.
 */
export async function openDatabase(config: DatabaseConfig, onError: (error: Error) => void): Promise<OpenDatabase> {
  const db = await dialectFor(config.dialect).openPool({ url: config.url, poolSize: config.poolSize, onError });
  return {
    config,
    db,
    async ping(timeoutMs = 5000) {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          sql`SELECT 1`.execute(db),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
          }),
        ]);
      } catch (error) {
        throw new CliError(
          `Cannot connect to database "${config.name}" at ${redactUrl(config.url)}: ${describe(error)}. ` +
            'Check that the server runs and that the URL (host, port, user, password, database) is right.',
          EXIT.connect,
          { cause: error },
        );
      } finally {
        clearTimeout(timer);
      }
    },
    close: () => db.destroy(),
  };
}

function describe(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) return describe(error.errors[0]);
  if (error instanceof Error) return error.message || (error as { code?: string }).code || error.name;
  return String(error);
}

/** Opens every database and checks that each answers; closes what it opened when one does not. */
export async function openDatabases(
  configs: readonly DatabaseConfig[],
  redactor: Redactor,
  onError: (database: DatabaseConfig, error: Error) => void,
): Promise<OpenDatabase[]> {
  const opened: OpenDatabase[] = [];
  try {
    for (const config of configs) {
      const database = await openDatabase(config, (error) => onError(config, error));
      opened.push(database);
      await database.ping();
    }
    return opened;
  } catch (error) {
    await Promise.all(opened.map((d) => d.close().catch(() => {})));
    if (error instanceof CliError) throw new CliError(redactor.text(error.message), error.exitCode, { cause: error });
    throw error;
  }
}

/** PostgreSQL 42P01 (undefined table), MySQL 1146 (no such table) / 1049 (unknown database), PostgreSQL 3F000 (no schema). */
export function isMissingTable(error: unknown): boolean {
  const e = error as { code?: string; errno?: number } | null;
  return e?.code === '42P01' || e?.code === '3F000' || e?.errno === 1146 || e?.errno === 1049;
}

/** Checks that the outbox table exists; a missing one is a CliError that says to run `txoutbox migrate`. */
export async function assertTableExists(database: OpenDatabase, table: TableConfig): Promise<void> {
  const schema = schemaOf(database.config, table);
  const id = schema === undefined ? sql.id(table.table) : sql.id(schema, table.table);
  try {
    await sql`SELECT seq FROM ${id} WHERE 1 = 0`.execute(database.db);
  } catch (error) {
    if (isMissingTable(error)) {
      throw new CliError(
        `The outbox table ${tableLabel(database.config, table)} does not exist. Run \`txoutbox migrate --config <file>\` first.`,
        EXIT.schema,
        { cause: error },
      );
    }
    throw error;
  }
}
