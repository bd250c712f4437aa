import { sql } from 'kysely';
import { SchemaError } from '../../errors.js';
import { planBatch, type BatchPlan, type PlannedMessage } from '../../outbox/batch.js';
import type { SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { compiler, qualified, utcDatetime } from './compiler.js';
import { decrementKeyCounts } from './key-counts.js';
import { keyStripe, lockKeyStripes } from './key-locks.js';

const ER_DUP_ENTRY = 1062;
/** How many times a batch is re-planned after a concurrent writer committed one of its ids first. */
const MAX_DUPLICATE_ROUNDS = 5;

/** Adds the batch's counts to its keys' rows (creating them), under the stripe locks. */
function countKeysStatement(names: TableNames, keys: { key: string; count: number }[]) {
  const rows = keys.map(({ key, count }) => sql`(${Buffer.from(key)}, ${count})`);
  return sql`
    INSERT INTO ${qualified(names, names.keys)} (msg_key, pending) VALUES ${sql.join(rows)}
    ON DUPLICATE KEY UPDATE pending = pending + VALUES(pending)`;
}

/**
 * Inserts the messages in the caller's order with one multi-row INSERT ... VALUES (AUTO_INCREMENT follows the row
 * order, and a plain VALUES insert takes no table-level AUTO-INC lock). A message heads its key (`ready`) when it
 * is the first of the batch and its key counted nothing unsent before this batch: the subquery reads the key row
 * this transaction has just updated and holds locked, so it sees exactly this transaction's count.
 */
function insertStatement(names: TableNames, messages: PlannedMessage[]) {
  const keys = qualified(names, names.keys);
  const rows = messages.map((m) => {
    const ready =
      m.key === null
        ? sql`1`
        : m.keyRank === 1
          ? sql`(SELECT pending FROM ${keys} WHERE msg_key = ${Buffer.from(m.key)}) = ${m.keyCount}`
          : sql`0`;
    const notBefore =
      m.availableAt === null
        ? sql`UTC_TIMESTAMP(6) + INTERVAL ${m.delayMs * 1000} MICROSECOND`
        : sql`CAST(${utcDatetime(m.availableAt)} AS DATETIME(6))`;
    return sql`(${Buffer.from(m.id)}, ${m.topic}, ${m.key === null ? null : Buffer.from(m.key)}, ${m.payload},
      ${m.contentType}, ${m.headers}, ${ready}, ${notBefore}, UTC_TIMESTAMP(6))`;
  });
  return sql`
    INSERT INTO ${qualified(names, names.table)}
      (id, topic, msg_key, payload, content_type, headers, ready, next_attempt_at, created_at)
    VALUES ${sql.join(rows)}`;
}

/** Ids of the batch that already exist. A locking read: it sees rows committed after this transaction's snapshot and waits for uncommitted ones. */
function existingIdsStatement(names: TableNames, messages: PlannedMessage[]) {
  return sql<{ id: Buffer | string }>`
    SELECT id FROM ${qualified(names, names.table)}
    WHERE id IN (${sql.join(messages.map((m) => Buffer.from(m.id)))}) LOCK IN SHARE MODE`;
}

function isDuplicateKeyError(error: unknown): boolean {
  return (error as { errno?: number } | null)?.errno === ER_DUP_ENTRY;
}

/**
 * For a batch with one key (a single keyed message, most often): takes the key's stripe lock and adds to its count
 * in one statement. The locking read of the stripe row comes first, as in lockKeyStripes, so the lock order is the
 * same; if the stripe row is missing, nothing is inserted. (Under binlog_format=STATEMENT the server calls this form
 * unsafe and logs a warning; the ROW and MIXED defaults replicate it as rows.)
 */
function lockAndCountKeyStatement(names: TableNames, { key, count }: { key: string; count: number }) {
  return sql`
    INSERT INTO ${qualified(names, names.keys)} (msg_key, pending)
    SELECT ${Buffer.from(key)}, ${count} FROM ${qualified(names, names.keyLocks)} WHERE stripe = ${keyStripe(key)} FOR UPDATE
    ON DUPLICATE KEY UPDATE pending = pending + VALUES(pending)`;
}

/** Locks the batch's keys until the caller commits and counts its messages in their rows. */
async function lockAndCountKeys(run: SqlExecutor, names: TableNames, keys: { key: string; count: number }[]): Promise<void> {
  const [only] = keys;
  if (keys.length === 1 && only !== undefined) {
    const { affectedRows } = await run(lockAndCountKeyStatement(names, only).compile(compiler));
    if (affectedRows === 0) throw new SchemaError(`The key lock table ${names.keyLocks} is missing rows (stripe ${keyStripe(only.key)}).`);
    return;
  }
  await lockKeyStripes(
    run,
    names,
    keys.map(({ key }) => key),
  );
  await run(countKeysStatement(names, keys).compile(compiler));
}

export async function enqueueMysql(run: SqlExecutor, names: TableNames, plan: BatchPlan): Promise<Set<string>> {
  if (plan.keys.length > 0) await lockAndCountKeys(run, names, plan.keys);
  let messages = plan.messages;
  for (let round = 1; ; round++) {
    if (messages.length === 0) return new Set();
    try {
      // A failed statement is rolled back on its own in InnoDB; the caller's transaction goes on.
      await run(insertStatement(names, messages).compile(compiler));
      return new Set(messages.map((m) => m.id));
    } catch (error) {
      if (!isDuplicateKeyError(error) || round === MAX_DUPLICATE_ROUNDS) throw error;
    }
    const { rows } = await run(existingIdsStatement(names, messages).compile(compiler));
    const existing = new Set(rows.map((row) => Buffer.from(row.id as Buffer | string).toString('utf8')));
    const dropped = new Map<string, number>();
    for (const m of messages) {
      if (existing.has(m.id) && m.key !== null) dropped.set(m.key, (dropped.get(m.key) ?? 0) + 1);
    }
    await decrementKeyCounts(run, names, dropped);
    // Re-plan what is left: key ranks and counts must describe only the messages actually written.
    messages = planBatch(messages.filter((m) => !existing.has(m.id))).messages;
  }
}
