import type { AdminStore } from '../dialects/admin.js';
import { adminStoreFor } from '../dialects/index.js';
import { tableNames } from '../dialects/identifiers.js';
import { relaySettingsFor, type DatabaseConfig, type LoadedConfig, type TableConfig } from './config.js';
import { assertTableExists, openDatabases, schemaOf, tableLabel, type OpenDatabase } from './databases.js';
import { CliError, EXIT } from './errors.js';

/** One configured outbox table, on its open database. */
export interface OutboxTarget {
  database: OpenDatabase;
  table: TableConfig;
  label: string;
  labels: { database: string; table: string };
  admin: AdminStore;
}

export interface Selection {
  database?: string;
  table?: string;
}

/** The configured databases, narrowed by --database; a name that is not configured is a clear error. */
export function selectDatabases(loaded: LoadedConfig, selection: Selection): DatabaseConfig[] {
  const all = loaded.config.databases;
  if (selection.database === undefined) return all;
  const chosen = all.filter((db) => db.name === selection.database);
  if (chosen.length === 0) {
    throw new CliError(
      `No database named "${selection.database}" in ${loaded.path} (configured: ${all.map((db) => db.name).join(', ')}).`,
      EXIT.config,
    );
  }
  return chosen;
}

/**
 * Opens the selected databases that have outbox tables and lists those tables, checking each exists. Databases with
 * only an inbox are not opened (they have nothing to relay or inspect) and come back as `skipped`; when nothing is
 * left that is a CliError, since the command would otherwise do nothing without saying so.
 */
export async function openTargets(
  loaded: LoadedConfig,
  selection: Selection,
  onError: (db: DatabaseConfig, error: Error) => void,
) {
  const selected = selectDatabases(loaded, selection);
  const skipped = selected.filter((db) => db.tables.length === 0);
  if (skipped.length === selected.length) {
    throw new CliError(
      `Nothing to do: ${skipped.map((db) => `"${db.name}"`).join(', ')} ${skipped.length === 1 ? 'has' : 'have'} no outbox ` +
        'tables, only an inbox. relay, status and dead work on outbox tables; list them under `tables:` if this ' +
        'service also produces messages (`txoutbox migrate` creates the inbox tables).',
      EXIT.config,
    );
  }
  const databases = await openDatabases(
    selected.filter((db) => db.tables.length > 0),
    loaded.redactor,
    onError,
  );
  const targets: OutboxTarget[] = [];
  try {
    for (const database of databases) {
      for (const table of database.config.tables) {
        if (selection.table !== undefined && table.table !== selection.table) continue;
        await assertTableExists(database, table);
        const schema = schemaOf(database.config, table);
        const settings = relaySettingsFor(loaded.config, table);
        targets.push({
          database,
          table,
          label: tableLabel(database.config, table),
          labels: { database: database.config.name, table: schema === undefined ? table.table : `${schema}.${table.table}` },
          admin: adminStoreFor(database.config.dialect, database.db, tableNames(table.table, schema ?? null), {
            mode: settings.mode ?? 'polling',
            deadLetterPolicy: settings.deadLetterPolicy ?? 'block-key',
          }),
        });
      }
    }
    if (targets.length === 0) throw new CliError(`No configured table is named "${selection.table}".`, EXIT.config);
  } catch (error) {
    await Promise.all(databases.map((d) => d.close().catch(() => {})));
    throw error;
  }
  return {
    databases,
    targets,
    skipped,
    close: () => Promise.all(databases.map((d) => d.close().catch(() => {}))).then(() => {}),
  };
}

/** Opens the outbox tables `selection` names (every one when it names none), runs `work` on them, then closes them. */
export async function withTargets<T>(
  loaded: LoadedConfig,
  selection: Selection,
  work: (targets: OutboxTarget[]) => Promise<T>,
): Promise<T> {
  // Only the selection itself: callers pass their whole command options.
  const only = {
    ...(selection.database === undefined ? {} : { database: selection.database }),
    ...(selection.table === undefined ? {} : { table: selection.table }),
  };
  const opened = await openTargets(loaded, only, () => {});
  try {
    return await work(opened.targets);
  } finally {
    await opened.close();
  }
}
