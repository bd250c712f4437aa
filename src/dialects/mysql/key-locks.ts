import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import { SchemaError } from '../../errors.js';
import type { SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { compiler, qualified } from './compiler.js';

/** How many rows `<table>_key_locks` holds (the migration fills them all). */
export const KEY_LOCK_STRIPES = 4096;

export function keyStripe(key: string): number {
  return createHash('sha1').update(key).digest().readUInt16BE(0) % KEY_LOCK_STRIPES;
}

/**
 * Locks the stripes of the batch's keys until the caller commits, in ascending order so producers cannot
 * deadlock on them. The rows exist already, so these are plain record locks. Everything this producer does to
 * its keys' rows, and the AUTO_INCREMENT values its insert takes, come after: within a key, seq order is commit
 * order.
 */
function lockStripesStatement(names: TableNames, stripes: number[]) {
  return sql<{ stripe: number }>`
    SELECT stripe FROM ${qualified(names, names.keyLocks)} WHERE stripe IN (${sql.join(stripes)})
    ORDER BY stripe FOR UPDATE`;
}

/** Locks the stripes of these keys until the current transaction ends. Producers and relays both go through it. */
export async function lockKeyStripes(run: SqlExecutor, names: TableNames, keys: readonly string[]): Promise<void> {
  const stripes = [...new Set(keys.map(keyStripe))].sort((a, b) => a - b);
  if (stripes.length === 0) return;
  const { rows } = await run(lockStripesStatement(names, stripes).compile(compiler));
  if (rows.length !== stripes.length) {
    throw new SchemaError(`The key lock table ${names.keyLocks} is missing rows (found ${rows.length} of ${stripes.length}).`);
  }
}
