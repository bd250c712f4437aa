import { migrateInbox } from '../../dedupe/migrate.js';
import { migrate } from '../../outbox/migrate.js';
import { tableNames } from '../../dialects/identifiers.js';
import { createPublications } from '../../relay/logical/slots.js';
import { logicalNamesOf, relaySettingsFor, type LoadedConfig } from '../config.js';
import { selectDatabases } from '../context.js';
import { openDatabases, schemaOf, tableLabel } from '../databases.js';
import { CliError, EXIT } from '../errors.js';

export interface MigrateCommandOptions {
  database?: string;
  /** Only the outbox tables. With neither flag (or both), both components are migrated. */
  outbox?: boolean;
  /** Only the inbox tables. */
  inbox?: boolean;
  out: (line: string) => void;
}

/**
 * Creates or upgrades the outbox tables and the inbox tables of every selected database, and the publications of
 * tables in mode logical (idempotent; safe from several processes). `--outbox` / `--inbox` pick one component; asking for one nothing declares is an error,
 * since a deploy step that silently migrates nothing hides a config mistake.
 */
export async function migrateCommand(loaded: LoadedConfig, options: MigrateCommandOptions): Promise<void> {
  const both = options.outbox !== true && options.inbox !== true;
  const wantOutbox = both || options.outbox === true;
  const wantInbox = both || options.inbox === true;
  const selected = selectDatabases(loaded, options.database === undefined ? {} : { database: options.database });
  const scope = options.database === undefined ? `in ${loaded.path}` : `for database "${options.database}"`;
  if (wantInbox && !wantOutbox && !selected.some((db) => db.inbox !== undefined)) {
    throw new CliError(
      `migrate --inbox: no database ${scope} declares an inbox. Add \`inbox: {}\` (or \`inbox: { table, schema }\`) to its entry.`,
      EXIT.config,
    );
  }
  if (wantOutbox && !wantInbox && !selected.some((db) => db.tables.length > 0)) {
    throw new CliError(`migrate --outbox: no database ${scope} has outbox tables (only inboxes).`, EXIT.config);
  }
  const databases = await openDatabases(selected, loaded.redactor, () => {});
  const report = (where: string, component: string, results: { status: string; migrationName: string }[]) => {
    const applied = results.filter((r) => r.status === 'Success').map((r) => r.migrationName);
    options.out(`${where}: ${component} ${applied.length === 0 ? 'up to date' : `applied ${applied.join(', ')}`}`);
  };
  try {
    for (const database of databases) {
      const { config } = database;
      if (wantOutbox) {
        for (const table of config.tables) {
          const schema = schemaOf(config, table);
          const results = await migrate(database.db, {
            dialect: config.dialect,
            table: table.table,
            ...(schema === undefined ? {} : { schema }),
          });
          report(tableLabel(config, table), 'outbox', results);
          // A table in mode logical is streamed through its publication(s) of inserts: created here, like the table.
          const settings = relaySettingsFor(loaded.config, table);
          if (settings.mode === 'logical') {
            const names = logicalNamesOf(config, table, settings);
            const created = await createPublications(database.db, tableNames(table.table, schema ?? null), names);
            const said = names.publications.map((name) => `${name} ${created.includes(name) ? 'created' : 'exists'}`);
            options.out(`${tableLabel(config, table)}: publication ${said.join(', ')}`);
          }
        }
      }
      if (wantInbox && config.inbox !== undefined) {
        const schema = schemaOf(config, config.inbox);
        const results = await migrateInbox(database.db, {
          dialect: config.dialect,
          table: config.inbox.table,
          ...(schema === undefined ? {} : { schema }),
        });
        report(tableLabel(config, config.inbox), 'inbox', results);
      }
    }
  } finally {
    await Promise.all(databases.map((d) => d.close()));
  }
}
