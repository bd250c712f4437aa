import { sql } from 'kysely';
import { SchemaError } from '../../errors.js';
import type { SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { lockId, lockOrder } from '../key-lock-id.js';
import { compiler, qualified } from './compiler.js';

/** How many rows `<table>_key_locks` holds (the migration fills them all). */
export const KEY_LOCK_STRIPES = 4096;

export function keyStripe(key: string): number {
  return ((lockId(key) % KEY_LOCK_STRIPES) + KEY_LOCK_STRIPES) % KEY_LOCK_STRIPES;
}

/**
 * Locks the stripes of these keys until the relay's transaction ends, in ascending order so relays cannot deadlock
 * on them. Only relays take these locks (producers just insert), so a relay waits here for another relay's short
 * transaction at most, never for a producer. The rows exist already: plain record locks, no gap locks.
 */
export async function lockKeyStripes(run: SqlExecutor, names: TableNames, keys: Iterable<string>): Promise<void> {
  const stripes = lockOrder(keys, keyStripe, (a, b) => a - b);
  if (stripes.length === 0) return;
  const { rows } = await run(
    sql<{ stripe: number }>`
      SELECT stripe FROM ${qualified(names, names.keyLocks)} WHERE stripe IN (${sql.join(stripes)})
      ORDER BY stripe FOR UPDATE`.compile(compiler),
  );
  if (rows.length !== stripes.length) {
    throw new SchemaError(`The key lock table ${names.keyLocks} is missing rows (found ${rows.length} of ${stripes.length}).`);
  }
}
