import { readdir, readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
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

/** What one migration file did in a run: applied (`Success`), failed (`Error`) or, after a failure, not tried. */
export interface MigrationResult {
  migrationName: string;
  direction: 'Up';
  status: 'Success' | 'Error' | 'NotExecuted';
}

interface PendingMigration {
  name: string;
  statements: string[];
}

/**
 * Applies the target's SQL files, recording each in `<table>_migrations` (so a second run does nothing) under a
 * lock (so two processes migrating at once apply each file once). The history table is the one Kysely's Migrator
 * kept (name, ISO timestamp), so tables migrated by earlier versions carry on. It is txoutbox's own code rather
 * than Kysely's Migrator because that one reads every schema's tables (another process dropping its own schema
 * meanwhile failed migrate with 3F000) and moved to `kysely/migration` in 0.29, which 0.28 does not have.
 */
export async function runMigrations<DB>(db: Kysely<DB>, target: MigrationTarget): Promise<MigrationResult[]> {
  const migrations: PendingMigration[] = [];
  for (const file of await migrationFiles(target)) {
    const name = file.pathname.slice(file.pathname.lastIndexOf('/') + 1, -'.sql'.length);
    migrations.push({ name, statements: renderStatements(await readFile(file, 'utf8'), target) });
  }
  const quote = target.dialect === 'postgres' ? '"' : '`';
  const id = (name: string) => `${quote}${name}${quote}`;
  const history =
    target.schema === null ? id(`${target.table}_migrations`) : `${id(target.schema)}.${id(`${target.table}_migrations`)}`;
  const lockName = `txoutbox_migrate:${target.schema ?? ''}.${target.table}`;
  const run = async (executor: Kysely<DB>): Promise<MigrationResult[]> => {
    if (target.schema !== null) await sql.raw(`CREATE SCHEMA IF NOT EXISTS ${id(target.schema)}`).execute(executor);
    await sql
      .raw(`CREATE TABLE IF NOT EXISTS ${history} (name varchar(255) NOT NULL PRIMARY KEY, timestamp varchar(255) NOT NULL)`)
      .execute(executor);
    const done = await sql<{ name: string }>`SELECT name FROM ${sql.raw(history)} ORDER BY name`.execute(executor);
    const pending = pendingAfter(
      migrations,
      done.rows.map((row) => row.name),
      target,
    );
    const results: MigrationResult[] = pending.map((migration) => ({
      migrationName: migration.name,
      direction: 'Up',
      status: 'NotExecuted',
    }));
    for (const [index, migration] of pending.entries()) {
      try {
        for (const statement of migration.statements) await sql.raw(statement).execute(executor);
        await sql`INSERT INTO ${sql.raw(history)} (name, timestamp) VALUES (${migration.name}, ${new Date().toISOString()})`.execute(
          executor,
        );
        results[index]!.status = 'Success';
      } catch (error) {
        results[index]!.status = 'Error';
        throw migrationFailed(target, migration.name, error);
      }
    }
    return results;
  };
  return MIGRATION_LOCKS[target.dialect](db, lockName, run);
}

/** The files not yet applied; refuses a history that names a file this version does not ship, or applied out of order. */
function pendingAfter(migrations: PendingMigration[], done: string[], target: MigrationTarget): PendingMigration[] {
  const known = new Set(migrations.map((migration) => migration.name));
  const unknown = done.find((name) => !known.has(name));
  if (unknown !== undefined) {
    throw migrationFailed(
      target,
      undefined,
      new Error(
        `the history names ${unknown}, which this txoutbox does not ship: is an older txoutbox migrating a newer database?`,
      ),
    );
  }
  const applied = new Set(done);
  const pending = migrations.filter((migration) => !applied.has(migration.name));
  const last = done.at(-1);
  const early = pending.find((migration) => last !== undefined && migration.name < last);
  if (early !== undefined) {
    throw migrationFailed(target, early.name, new Error(`${early.name} sorts before ${last}, which is already applied`));
  }
  return pending;
}

function migrationFailed(target: MigrationTarget, file: string | undefined, error: unknown): TxOutboxError {
  return new TxOutboxError(
    `Migrating the ${target.component} tables (${target.dialect}, table "${target.table}") failed` +
      `${file ? ` in ${file}` : ''}: ${error instanceof Error ? error.message : String(error)}`,
    'TXOUTBOX_MIGRATION_FAILED',
    { cause: error },
  );
}

type LockedRun = <DB>(
  db: Kysely<DB>,
  lockName: string,
  run: (executor: Kysely<DB>) => Promise<MigrationResult[]>,
) => Promise<MigrationResult[]>;

/** How long a migration run waits for another one on the same tables before it gives up. */
const LOCK_WAIT_SECONDS = 300;

const MIGRATION_LOCKS: Record<DialectName, LockedRun> = {
  // One transaction: PostgreSQL's DDL is transactional, so a failed file leaves nothing behind, and the advisory
  // lock ends with it.
  postgres: (db, lockName, run) =>
    db.transaction().execute(async (trx) => {
      await sql`SET LOCAL lock_timeout = ${sql.lit(`${LOCK_WAIT_SECONDS}s`)}`.execute(trx);
      await sql`SELECT pg_advisory_xact_lock(hashtext(${lockName}))`.execute(trx);
      return run(trx);
    }),
  // MySQL commits each DDL statement by itself, so the lock is the session's own (GET_LOCK) on one connection.
  mysql: (db, lockName, run) =>
    db.connection().execute(async (connection) => {
      // Lock names are at most 64 characters.
      const name =
        lockName.length <= 64 ? lockName : `txoutbox_migrate:${createHash('sha256').update(lockName).digest('hex').slice(0, 40)}`;
      const got = await sql<{ got: number | null }>`SELECT GET_LOCK(${name}, ${LOCK_WAIT_SECONDS}) AS got`.execute(connection);
      if (Number(got.rows[0]?.got) !== 1) {
        throw new TxOutboxError(
          `Another migration of the same tables held the lock ${name} for ${LOCK_WAIT_SECONDS} s; run migrate again once it ends.`,
          'TXOUTBOX_MIGRATION_FAILED',
        );
      }
      try {
        return await run(connection);
      } finally {
        await sql`SELECT RELEASE_LOCK(${name})`.execute(connection);
      }
    }),
};

export { DEFAULT_NAME as DEFAULT_TABLE_NAME };
export const DEFAULT_INBOX_TABLE_NAME = FILE_NAMES.inbox;
