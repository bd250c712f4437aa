/**
 * txoutbox/prisma: `outbox.enqueue(fromPrisma(tx), message)` inside `prisma.$transaction(async (tx) => ...)`.
 *
 * Needs Prisma 7 with a driver adapter (@prisma/adapter-pg on PostgreSQL, @prisma/adapter-mariadb on MySQL/MariaDB).
 * txoutbox's statements run through the transaction client's `$queryRawUnsafe` / `$executeRawUnsafe`, so they go
 * down the same connection as your `tx.order.create(...)`, inside the same transaction.
 */
import { DIALECT_NAMES, type DialectName } from '../dialects/dialect-name.js';
import type { OrmTransaction, SqlResult } from '../dialects/executor.js';
import { NotInTransactionError } from '../errors.js';
import { forPreparedStatements } from './mysql-prepared.js';

/**
 * What txoutbox uses of Prisma's interactive-transaction client (the `tx` of `prisma.$transaction(async (tx) => ...)`),
 * seen structurally so any generated client (and any `$extends` of it) fits.
 */
export interface PrismaTransactionClient {
  $queryRawUnsafe(query: string, ...values: unknown[]): PromiseLike<unknown>;
  $executeRawUnsafe(query: string, ...values: unknown[]): PromiseLike<number>;
}

/**
 * A statement that failed in the database, as Prisma reported it (`PrismaClientKnownRequestError` P2010), with the
 * database's own code lifted to the top level where txoutbox and your code look for it: `code` is the PostgreSQL
 * SQLSTATE (`'23505'`), `errno` the MySQL/MariaDB error number (`1062`). Prisma's error is the `cause`.
 */
export class PrismaDatabaseError extends Error {
  /** PostgreSQL SQLSTATE; absent on MySQL/MariaDB. */
  readonly code?: string;
  /** MySQL/MariaDB error number; absent on PostgreSQL. */
  readonly errno?: number;
  /** MySQL/MariaDB SQLSTATE, when the driver reported it. */
  readonly sqlState?: string;

  constructor(message: string, codes: { code?: string; errno?: number; sqlState?: string }, cause: unknown) {
    super(message, { cause });
    this.name = 'PrismaDatabaseError';
    if (codes.code !== undefined) this.code = codes.code;
    if (codes.errno !== undefined) this.errno = codes.errno;
    if (codes.sqlState !== undefined) this.sqlState = codes.sqlState;
  }
}

/**
 * Statements that answer with rows: reads, and writes with RETURNING (then one row per written row). Every other
 * statement answers with its affected-row count, which only `$executeRawUnsafe` reports (`$queryRawUnsafe` gives
 * rows and no count), so the statement's kind picks the call.
 */
const LEADING_NOISE = /^(?:\s+|\(|--[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)*/;
const READS = /^(?:SELECT|WITH|VALUES|TABLE|SHOW|EXPLAIN|DESCRIBE)\b/i;
const RETURNING = /\bRETURNING\b/i;

function returnsRows(sql: string): boolean {
  return READS.test(sql.replace(LEADING_NOISE, '')) || RETURNING.test(sql);
}

/**
 * Wraps Prisma's interactive-transaction client for `enqueue` and `processOnce`. The root `PrismaClient` is refused
 * with `NotInTransactionError`: each of its queries would autocommit on its own, so the message would not be atomic
 * with your data. (A nested `tx.$transaction(async (inner) => ...)` client, a savepoint, is accepted.)
 *
 * @example
 * ```ts
 * import { fromPrisma } from 'txoutbox/prisma';
 *
 * await prisma.$transaction(async (tx) => {
 *   const order = await tx.order.create({ data: { customer: 'alice' } });
 *   await outbox.enqueue(fromPrisma(tx), { topic: 'orders.placed', key: order.customer, payload: { id: order.id } });
 * });
 * ```
 */
export function fromPrisma<Tx extends PrismaTransactionClient>(tx: Tx): OrmTransaction<Tx> {
  assertTransactionClient(tx);
  const provider = providerOf(tx);
  return {
    txoutboxOrmTransaction: true,
    orm: 'prisma',
    handle: tx,
    async query(text: string, parameters: readonly unknown[]): Promise<SqlResult> {
      const { sql, parameters: values } = STATEMENTS[provider ?? 'mysql'](text, parameters);
      try {
        if (returnsRows(sql)) {
          const rows = (await tx.$queryRawUnsafe(sql, ...values)) as Record<string, unknown>[];
          return { rows: rows.map(withBuffers), affectedRows: rows.length };
        }
        return { rows: [], affectedRows: Number(await tx.$executeRawUnsafe(sql, ...values)) };
      } catch (error) {
        throw translated(error, provider);
      }
    },
  };
}

/**
 * Prisma's transaction client lacks what its deny list removes ($connect, $disconnect, $on, $use, $extends); the
 * root client has them. ($transaction is no sign: since Prisma 7.5 a transaction client has it too, for savepoints.)
 */
function assertTransactionClient(tx: unknown): void {
  const candidate = tx as Partial<PrismaTransactionClient & { $disconnect: unknown }> | null | undefined;
  if (typeof candidate?.$queryRawUnsafe !== 'function' || typeof candidate.$executeRawUnsafe !== 'function') {
    throw new NotInTransactionError(
      `${describe(tx)}, not a Prisma transaction client (use the tx of prisma.$transaction(async (tx) => ...))`,
    );
  }
  if (typeof candidate.$disconnect === 'function') {
    throw new NotInTransactionError(
      'the root PrismaClient, whose every query commits on its own (use the tx of prisma.$transaction(async (tx) => ...))',
    );
  }
}

/** A dialect, or undefined for a provider txoutbox has not seen (its statements go as MySQL's, its errors by shape). */
type Provider = DialectName | undefined;

/** Prisma's provider names → txoutbox's dialects. */
const PROVIDERS: Readonly<Record<string, DialectName>> = { postgresql: 'postgres', cockroachdb: 'postgres', mysql: 'mysql' };

/** The generated client's provider; Prisma keeps it on every client as `_activeProvider`. */
function providerOf(tx: object): Provider {
  const active = (tx as { _activeProvider?: unknown })._activeProvider;
  return typeof active === 'string' && Object.hasOwn(PROVIDERS, active) ? PROVIDERS[active] : undefined;
}

type Statement = (text: string, parameters: readonly unknown[]) => { sql: string; parameters: readonly unknown[] };

/** Prisma's MariaDB adapter sends prepared statements (the binary protocol); PostgreSQL SQL needs no change. */
const STATEMENTS: Record<DialectName, Statement> = {
  postgres: (sql, parameters) => ({ sql, parameters }),
  mysql: forPreparedStatements,
};

interface DriverAdapterCause {
  kind?: unknown;
  originalCode?: unknown;
  originalMessage?: unknown;
  code?: unknown;
  state?: unknown;
  message?: unknown;
}

/**
 * P2010 ("raw query failed") carries the database's answer in `meta.driverAdapterError.cause`: `originalCode` is
 * the SQLSTATE on PostgreSQL and the error number on MySQL/MariaDB, whatever category (`kind`) Prisma filed it under.
 */
function translated(error: unknown, provider: Provider): unknown {
  const prisma = error as {
    code?: unknown;
    message?: unknown;
    meta?: { driverAdapterError?: { cause?: DriverAdapterCause } };
  } | null;
  if (prisma?.code === 'P2028' && typeof prisma.message === 'string' && /Transaction already closed/i.test(prisma.message)) {
    // Mostly a `tx` used after its callback returned (a missing await): say so in txoutbox's terms.
    return new NotInTransactionError(`a Prisma transaction client whose transaction has ended (${lastLine(prisma.message)})`);
  }
  const cause = prisma?.code === 'P2010' ? prisma.meta?.driverAdapterError?.cause : undefined;
  if (cause === undefined) return error;
  const original = cause.originalCode ?? cause.code;
  if (original === undefined || original === null) return error;
  const message = String(cause.originalMessage ?? cause.message ?? prisma?.message ?? 'database error');
  // An unknown provider (not seen with Prisma 7): the adapter's own kind, else the code's shape (SQLSTATEs have 5 characters).
  const kind: DialectName =
    provider ?? (isDialectName(cause.kind) ? cause.kind : /^[0-9A-Z]{5}$/.test(String(original)) ? 'postgres' : 'mysql');
  return DATABASE_ERRORS[kind](message, original, cause, error);
}

type DatabaseError = (message: string, original: unknown, cause: DriverAdapterCause, error: unknown) => unknown;

/** The driver's error as txoutbox reads it elsewhere: a SQLSTATE `code` on PostgreSQL, an `errno` on MySQL. */
const DATABASE_ERRORS: Record<DialectName, DatabaseError> = {
  postgres: (message, original, _cause, error) => new PrismaDatabaseError(message, { code: String(original) }, error),
  mysql(message, original, cause, error) {
    const errno = Number(original);
    if (!Number.isInteger(errno)) return error;
    return new PrismaDatabaseError(message, { errno, ...(typeof cause.state === 'string' ? { sqlState: cause.state } : {}) }, error);
  },
};

function isDialectName(value: unknown): value is DialectName {
  return (DIALECT_NAMES as readonly unknown[]).includes(value);
}

/** Prisma returns bytes as Uint8Array; the drivers txoutbox reads elsewhere return Buffers (a view, no copy). */
function withBuffers(row: Record<string, unknown>): Record<string, unknown> {
  for (const [column, value] of Object.entries(row)) {
    if (value instanceof Uint8Array && !Buffer.isBuffer(value))
      row[column] = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  }
  return row;
}

function lastLine(text: string): string {
  return text.trim().split('\n').pop()?.trim() ?? text;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value !== 'object') return `a ${typeof value}`;
  return `an object without $queryRawUnsafe/$executeRawUnsafe (${value.constructor?.name ?? 'Object'})`;
}
