import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { Kysely, MysqlDialect, PostgresDialect, sql, type LogEvent } from 'kysely';
import mysql from 'mysql2';
import pg from 'pg';
import type { DialectName } from '../src/index.js';

/** Helpers shared by the benches: the databases, scratch schemas, machine facts and number formatting. */

export interface Target {
  label: string;
  dialect: DialectName;
  url: string;
}

export function targets(): Target[] {
  return [
    { label: 'PostgreSQL', dialect: 'postgres', url: process.env.OUTBOX_PG_URL ?? 'postgres://root@127.0.0.1:5432/test' },
    { label: 'MariaDB/MySQL', dialect: 'mysql', url: process.env.OUTBOX_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test' },
  ];
}

/** A progress printer for one bench: progress goes to stderr, so stdout stays the Markdown report. */
export function progressFor(bench: string): (line: string) => void {
  return (line) => void process.stderr.write(`[bench ${bench}] ${line}\n`);
}

export interface ConnectOptions {
  poolSize: number;
  /** Kysely's log option, e.g. to count or time the queries of this instance. */
  log?: (event: LogEvent) => void;
}

/** A Kysely instance with a pool of its own on the target. */
export function connect(target: Target, { poolSize, log }: ConnectOptions): Kysely<any> {
  const dialect =
    target.dialect === 'postgres'
      ? new PostgresDialect({ pool: new pg.Pool({ connectionString: target.url, max: poolSize }) })
      : // DATETIME columns hold UTC; reading them as UTC keeps results independent of the machine's time zone.
        new MysqlDialect({ pool: mysql.createPool({ uri: target.url, connectionLimit: poolSize, timezone: 'Z' }) });
  return new Kysely<any>(log === undefined ? { dialect } : { dialect, log });
}

/**
 * Creates a fresh schema (PostgreSQL) or database (MySQL) named `bench_<random>`, runs `fn` with a pool on the
 * target and the schema's name, and drops the schema whatever happens.
 */
export async function withScratchSchema<T>(
  target: Target,
  options: { poolSize: number; progress: (line: string) => void },
  fn: (db: Kysely<any>, schema: string) => Promise<T>,
): Promise<T> {
  const schema = `bench_${randomBytes(5).toString('hex')}`;
  const db = connect(target, { poolSize: options.poolSize });
  try {
    const container = target.dialect === 'postgres' ? sql`SCHEMA` : sql`DATABASE`;
    await sql`CREATE ${container} ${sql.id(schema)}`.execute(db);
    let failed = false;
    try {
      return await fn(db, schema);
    } catch (error) {
      failed = true;
      throw error;
    } finally {
      const drop =
        target.dialect === 'postgres' ? sql`DROP SCHEMA ${sql.id(schema)} CASCADE` : sql`DROP DATABASE ${sql.id(schema)}`;
      try {
        await drop.execute(db);
      } catch (dropError) {
        // Don't let a failed clean-up hide the error that got us here.
        if (!failed) throw dropError;
        options.progress(`${target.label}: could not drop ${schema}: ${String(dropError)}`);
      }
    }
  } finally {
    await db.destroy();
  }
}

/** The server's version and the durability setting that dominates commit latency, so readers can compare runs. */
export async function serverFacts(target: Target, db: Kysely<any>): Promise<{ version: string; durability: string }> {
  const { rows } = await sql<{ version: string }>`SELECT version() AS version`.execute(db);
  const version = rows[0]?.version ?? 'unknown';
  if (target.dialect === 'postgres') {
    const setting = await sql<{ synchronous_commit: string }>`SHOW synchronous_commit`.execute(db);
    return { version, durability: `synchronous_commit=${setting.rows[0]?.synchronous_commit ?? '?'}` };
  }
  const setting = await sql<{ flush: number | string }>`SELECT @@innodb_flush_log_at_trx_commit AS flush`.execute(db);
  return { version, durability: `innodb_flush_log_at_trx_commit=${String(setting.rows[0]?.flush ?? '?')}` };
}

/** The report's header lines: command, date, machine and Node. */
export function machineFacts(command: string, date: Date): string[] {
  const cpus = os.cpus();
  return [
    `- Command: \`${command}\``,
    `- Date: ${date.toISOString()}`,
    `- Machine: ${cpus.length} × ${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB RAM, ${os.type()} ${os.release()} (${os.arch()})`,
    `- Node: ${process.version}`,
  ];
}

export function sum(values: Float64Array): number {
  let total = 0;
  for (const value of values) total += value;
  return total;
}

export function median(values: Float64Array): number {
  const sorted = Float64Array.from(values).sort();
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The nearest-rank percentile (0 < q ≤ 1) of values already sorted ascending. */
export function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export const ms = (value: number): string => value.toFixed(3);
export const ratio = (value: number): string => value.toFixed(2);
export const count = (value: number): string => Math.round(value).toLocaleString('en-US');

/**
 * Fresh statistics, as autovacuum would give a table that has grown this much in production; without them the
 * first plans on a just-loaded table are whatever the planner guesses.
 */
export async function analyze(target: Target, db: Kysely<any>, schema: string, table: string): Promise<void> {
  const name = sql.id(schema, table);
  await (target.dialect === 'postgres' ? sql`ANALYZE ${name}` : sql`ANALYZE TABLE ${name}`).execute(db);
}

/**
 * Lets the database catch up on work earlier phases left behind, so it does not land on the next timed run:
 * PostgreSQL writes its dirty buffers (CHECKPOINT); InnoDB gets up to 15 s to purge deleted rows' history.
 */
export async function settle(target: Target, db: Kysely<any>, progress: (line: string) => void): Promise<void> {
  if (target.dialect === 'postgres') {
    try {
      await sql`CHECKPOINT`.execute(db);
    } catch (error) {
      // CHECKPOINT needs superuser or pg_checkpoint; without it, go on.
      progress(`${target.label}: CHECKPOINT failed (${String(error)}); going on without it`);
    }
    return;
  }
  const deadline = performance.now() + 15_000;
  while (performance.now() < deadline) {
    const { rows } = await sql<{ Value: string }>`SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'`.execute(db);
    if (Number(rows[0]?.Value ?? 0) < 1000) return;
    await sleep(250);
  }
}

/** The load average (1, 5, 15 min) as printed in the reports. */
export const loadavg = (values: readonly number[]): string => values.map((value) => value.toFixed(2)).join(' ');

/** Keeps a password in the URL out of the logs. */
export function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparsable URL)';
  }
}
