import { tableNames, type TableNames } from '../dialects/identifiers.js';
import type { LogicalNames } from '../relay/logical/names.js';
import { logicalNamesOf, relaySettingsFor, type LoadedConfig, type TableConfig } from './config.js';
import { selectDatabases, type Selection } from './context.js';
import { openDatabases, schemaOf, tableLabel, type OpenDatabase } from './databases.js';
import { CliError, EXIT } from './errors.js';

/** A configured table in mode logical, on its open database, with the slots and publications its relays use. */
export interface LogicalTarget {
  database: OpenDatabase;
  table: TableConfig;
  label: string;
  /** As in metrics and `status`: the database's name, and the table as `schema.table` (or `table`). */
  labels: { database: string; table: string };
  names: TableNames;
  logical: LogicalNames;
}

/**
 * Opens the databases of the selected tables in mode logical and runs `work` on those tables. Tables that poll
 * are left out; selecting none in mode logical is a CliError (exit 2), since the command would do nothing.
 */
export async function withLogicalTargets<T>(
  loaded: LoadedConfig,
  selection: Selection,
  work: (targets: LogicalTarget[]) => Promise<T>,
): Promise<T> {
  const chosen = selectDatabases(loaded, selection).flatMap((database) =>
    database.tables
      .filter((table) => selection.table === undefined || table.table === selection.table)
      .filter((table) => relaySettingsFor(loaded.config, table).mode === 'logical')
      .map((table) => ({ database, table })),
  );
  if (chosen.length === 0) {
    const which = selection.table === undefined ? 'No configured table' : `No configured table named "${selection.table}"`;
    throw new CliError(
      `${which} is in mode logical: set \`relay: { mode: logical }\` (for every table, or per table) in ${loaded.path}.`,
      EXIT.config,
    );
  }
  const databases = await openDatabases([...new Set(chosen.map((c) => c.database))], loaded.redactor, () => {});
  try {
    const targets = chosen.map(({ database, table }): LogicalTarget => {
      const open = databases.find((d) => d.config === database)!;
      const schema = schemaOf(database, table);
      return {
        database: open,
        table,
        label: tableLabel(database, table),
        labels: { database: database.name, table: schema === undefined ? table.table : `${schema}.${table.table}` },
        names: tableNames(table.table, schema ?? null),
        logical: logicalNamesOf(database, table, relaySettingsFor(loaded.config, table)),
      };
    });
    return await work(targets);
  } finally {
    await Promise.all(databases.map((d) => d.close().catch(() => {})));
  }
}
