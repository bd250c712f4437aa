import type { RawBuilder } from 'kysely';
import { sql } from 'kysely';
import { likePattern, type DeadLetterFilter } from './admin.js';
import type { SqlExecutor } from './executor.js';

/** What acting on dead letters needs of a dialect's admin store: relay transactions, key locks, and its dead rows. */
export interface DeadLetterLocking<Row> {
  transaction<T>(work: (trx: SqlExecutor) => Promise<T>): Promise<T>;
  /** The relays' key locks: the same ones the relays take, so a retry or discard never races a relay's promotion. */
  lock(trx: SqlExecutor, keys: Iterable<string>): Promise<void>;
  /** The distinct keys of these rows, read before the transaction (the locks are taken first, in one order). */
  keysOf(seqs: readonly string[]): Promise<string[]>;
  /** After the key locks: the rows among `seqs` that are still dead, locked. */
  lockDead(trx: SqlExecutor, seqs: readonly string[]): Promise<Row[]>;
}

/** Runs `work` in one relay transaction with these keys locked; nothing to do for no keys. */
export function withKeysLocked(
  locking: Pick<DeadLetterLocking<unknown>, 'transaction' | 'lock'>,
  keys: readonly string[],
  work: (trx: SqlExecutor) => Promise<number>,
): Promise<number> {
  if (keys.length === 0) return Promise.resolve(0);
  return locking.transaction(async (trx) => {
    await locking.lock(trx, keys);
    return work(trx);
  });
}

/**
 * Runs `act` on the rows among `seqs` that are still dead, in one relay transaction with their keys locked; a
 * row retried or discarded meanwhile (by another operator) is left alone. Returns what `act` returns, or 0.
 */
export async function onDeadRows<Row>(
  locking: DeadLetterLocking<Row>,
  seqs: readonly string[],
  act: (trx: SqlExecutor, dead: Row[]) => Promise<number>,
): Promise<number> {
  if (seqs.length === 0) return 0;
  const keys = await locking.keysOf(seqs);
  return locking.transaction(async (trx) => {
    await locking.lock(trx, keys);
    const dead = await locking.lockDead(trx, seqs);
    return dead.length === 0 ? 0 : act(trx, dead);
  });
}

/** A dialect's SQL for each part of a dead-letter filter. */
export interface DeadFilterSql {
  /** `topic LIKE pattern`, the pattern escaped with `\` (see likePattern). */
  topic(pattern: string): RawBuilder<unknown>;
  key(key: string): RawBuilder<unknown>;
  error(text: string): RawBuilder<unknown>;
  createdBefore(msAgo: number): RawBuilder<unknown>;
  createdAfter(msAgo: number): RawBuilder<unknown>;
  ids(ids: readonly string[]): RawBuilder<unknown>;
}

/** The WHERE condition of a dead-letter filter: dead rows, and each part the filter sets. */
export function deadLetterWhere(filter: DeadLetterFilter, parts: DeadFilterSql): RawBuilder<unknown> {
  const conditions: RawBuilder<unknown>[] = [sql`state = 'dead'`];
  if (filter.topic !== undefined) conditions.push(parts.topic(likePattern(filter.topic)));
  if (filter.key !== undefined) conditions.push(parts.key(filter.key));
  if (filter.error !== undefined) conditions.push(parts.error(filter.error));
  if (filter.olderThanMs !== undefined) conditions.push(parts.createdBefore(filter.olderThanMs));
  if (filter.newerThanMs !== undefined) conditions.push(parts.createdAfter(filter.newerThanMs));
  if (filter.ids !== undefined) conditions.push(parts.ids(filter.ids));
  return sql.join(conditions, sql` AND `);
}
