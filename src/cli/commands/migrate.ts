import { migrate } from '../../outbox/migrate.js';
import type { LoadedConfig } from '../config.js';
import { selectDatabases } from '../context.js';
import { openDatabases, schemaOf, tableLabel } from '../databases.js';

export interface MigrateCommandOptions {
  database?: string;
  out: (line: string) => void;
}

/** Creates or upgrades the outbox tables of every configured table (idempotent; safe from several processes). */
export async function migrateCommand(loaded: LoadedConfig, options: MigrateCommandOptions): Promise<void> {
  const selection = options.database === undefined ? {} : { database: options.database };
  const databases = await openDatabases(selectDatabases(loaded, selection), loaded.redactor, () => {});
  try {
    for (const database of databases) {
      for (const table of database.config.tables) {
        const schema = schemaOf(database.config, table);
        const results = await migrate(database.db, {
          dialect: database.config.dialect,
          table: table.table,
          ...(schema === undefined ? {} : { schema }),
        });
        const applied = results.filter((r) => r.status === 'Success').map((r) => r.migrationName);
        options.out(
          `${tableLabel(database.config, table)}: outbox ${applied.length === 0 ? 'up to date' : `applied ${applied.join(', ')}`}`,
        );
      }
    }
  } finally {
    await Promise.all(databases.map((d) => d.close()));
  }
}
