import { readdir, readFile } from 'node:fs/promises';
import {
  Migrator,
  sql,
  type DatabaseIntrospector,
  type Kysely,
  type Migration,
  type MigrationResult,
  type RawBuilder,
  type SchemaMetadata,
  type TableMetadata,
} from 'kysely';
import { TxOutboxError } from '../errors.js';
import type { DialectName } from './dialect-name.js';

/** Which set of tables a migration run manages; each has its own folder and its own history table. */
export type Component = 'outbox' | 'inbox';

export interface MigrationTarget {
  dialect: DialectName;
  component: Component;
  /** The table name the SQL files' default name is renamed to. */
  table: string;
  schema: string | null;
}

/** The shipped SQL files, next to `src/` or `dist/` in the package. */
const MIGRATIONS_ROOT = new URL('../../migrations/', import.meta.url);
const DEFAULT_NAME = 'txoutbox';
/** The table name each component's SQL files are written with (and renamed from). */
const FILE_NAMES: Record<Component, string> = { outbox: DEFAULT_NAME, inbox: 'txoutbox_inbox' };

/** Lists the migration files for a target in the order they apply. */
export async function migrationFiles(target: Pick<MigrationTarget, 'dialect' | 'component'>): Promise<URL[]> {
  const folder = new URL(`${target.dialect}/${target.component}/`, MIGRATIONS_ROOT);
  const names = (await readdir(folder)).filter((name) => /^\d{3}_[a-z0-9_]+\.sql$/.test(name)).sort();
  return names.map((name) => new URL(name, folder));
}

/**
 * The statements of one SQL file, renamed for the target: a quoted default name ("txoutbox", "txoutbox_keys",
 * `txoutbox`; "txoutbox_inbox..." for the inbox) becomes the configured table, schema-qualified; a bare
 * txoutbox_... index or constraint name becomes <table>_... (PostgreSQL creates those in the table's schema).
 */
export function renderStatements(text: string, target: MigrationTarget): string[] {
  const quote = target.dialect === 'postgres' ? '"' : '`';
  const qualify = (name: string) =>
    target.schema === null ? `${quote}${name}${quote}` : `${quote}${target.schema}${quote}.${quote}${name}${quote}`;
  const base = FILE_NAMES[target.component];
  const names = new RegExp(`(["\`])${base}(\\w*)\\1|\\b${base}(_\\w+)\\b`, 'g');
  const renamed = text
    .replace(/--.*$/gm, '')
    .replace(names, (_match, _quote, quotedSuffix?: string, bareSuffix?: string) =>
      bareSuffix !== undefined ? `${target.table}${bareSuffix}` : qualify(`${target.table}${quotedSuffix ?? ''}`),
    );
  return renamed
    .split(/;\s*$/m)
    .map((statement) => statement.trim())
    .filter((statement) => statement.length > 0);
}

/**
 * Applies the target's SQL files with Kysely's Migrator: it records what ran in `<table>_migrations` (so a second
 * run does nothing) and holds a lock while it works (so two processes migrating at once apply each file once).
 */
export async function runMigrations<DB>(db: Kysely<DB>, target: MigrationTarget): Promise<MigrationResult[]> {
  const files = await migrationFiles(target);
  const migrations: Record<string, Migration> = {};
  for (const file of files) {
    const name = file.pathname.slice(file.pathname.lastIndexOf('/') + 1, -'.sql'.length);
    const statements = renderStatements(await readFile(file, 'utf8'), target);
    migrations[name] = {
      async up(trx) {
        for (const statement of statements) await sql.raw(statement).execute(trx);
      },
    };
  }
  const historyTables = [`${target.table}_migrations`, `${target.table}_migrations_lock`];
  const migrator = new Migrator({
    db: withIntrospector(db as Kysely<unknown>, ownTablesIntrospector(db as Kysely<unknown>, target, historyTables)),
    provider: { getMigrations: async () => migrations },
    migrationTableName: historyTables[0]!,
    migrationLockTableName: historyTables[1]!,
    ...(target.schema === null ? {} : { migrationTableSchema: target.schema }),
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error !== undefined) {
    const failed = results?.find((result) => result.status === 'Error')?.migrationName;
    throw new TxOutboxError(
      `Migrating the ${target.component} tables (${target.dialect}, table "${target.table}") failed` +
        `${failed ? ` in ${failed}` : ''}: ${error instanceof Error ? error.message : String(error)}`,
      'TXOUTBOX_MIGRATION_FAILED',
      { cause: error },
    );
  }
  return results ?? [];
}

/**
 * What Kysely's Migrator asks to learn whether its schema and history tables exist, answered for those alone. Its
 * own introspector lists every table of every schema, and on PostgreSQL looks each schema up again by name
 * (has_schema_privilege, pg_get_serial_sequence): another process dropping its own schema meanwhile failed
 * migrate with 3F000 "schema ... does not exist", for a schema migrate never uses.
 */
function ownTablesIntrospector(db: Kysely<unknown>, target: MigrationTarget, tables: readonly string[]): DatabaseIntrospector {
  const queries = OWN_TABLES[target.dialect];
  const schema = target.schema === null ? queries.currentSchema : sql`${target.schema}`;
  const introspector: DatabaseIntrospector = {
    async getSchemas(): Promise<SchemaMetadata[]> {
      const { rows } = await queries.schemas(schema).execute(db);
      return rows.map((row) => ({ name: String(row.name) }));
    },
    async getTables(): Promise<TableMetadata[]> {
      const { rows } = await queries.tables(schema, sql.join(tables)).execute(db);
      return rows.map((row) => ({ name: String(row.name), schema: String(row.schema), isView: false, columns: [] }));
    },
    async getMetadata() {
      return { tables: await introspector.getTables() };
    },
  };
  return introspector;
}

interface OwnTablesQueries {
  currentSchema: RawBuilder<unknown>;
  schemas(schema: RawBuilder<unknown>): RawBuilder<{ name: unknown }>;
  tables(schema: RawBuilder<unknown>, names: RawBuilder<unknown>): RawBuilder<{ name: unknown; schema: unknown }>;
}

/** PostgreSQL reads its catalog (as Kysely's introspector does: information_schema hides what the user may not see). */
const OWN_TABLES: Record<DialectName, OwnTablesQueries> = {
  postgres: {
    currentSchema: sql`current_schema()`,
    schemas: (schema) => sql`SELECT nspname AS name FROM pg_catalog.pg_namespace WHERE nspname = ${schema}`,
    tables: (schema, names) => sql`
      SELECT c.relname AS name, n.nspname AS schema FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = ${schema} AND c.relname IN (${names}) AND c.relkind IN ('r', 'p')`,
  },
  mysql: {
    currentSchema: sql`database()`,
    schemas: (schema) => sql`SELECT schema_name AS name FROM information_schema.schemata WHERE schema_name = ${schema}`,
    tables: (schema, names) => sql`
      SELECT table_name AS name, table_schema AS \`schema\` FROM information_schema.tables
      WHERE table_schema = ${schema} AND table_name IN (${names})`,
  },
};

/** The same Kysely instance, but for what `introspection` answers (each method bound to the instance itself). */
function withIntrospector(db: Kysely<unknown>, introspector: DatabaseIntrospector): Kysely<unknown> {
  return new Proxy(db, {
    get(instance, property) {
      if (property === 'introspection') return introspector;
      const value: unknown = Reflect.get(instance, property, instance);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(instance) : value;
    },
  });
}

export { DEFAULT_NAME as DEFAULT_TABLE_NAME };
export const DEFAULT_INBOX_TABLE_NAME = FILE_NAMES.inbox;
