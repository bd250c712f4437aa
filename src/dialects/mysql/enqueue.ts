import { sql } from 'kysely';
import { planBatch, type BatchPlan } from '../../outbox/batch.js';
import type { ValidMessage } from '../../outbox/message.js';
import type { SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { compiler, qualified, utcDatetime } from './compiler.js';

const ER_DUP_ENTRY = 1062;
/** How many times a batch is re-planned after a concurrent writer committed one of its ids first. */
const MAX_DUPLICATE_ROUNDS = 5;

/**
 * One multi-row INSERT ... VALUES in the caller's order (AUTO_INCREMENT follows the row order, and a plain VALUES
 * insert takes no table-level AUTO-INC lock). No lock, no counter: a keyed message arrives unsequenced (ready NULL)
 * and the relay, in transactions of its own, decides when it heads its key; a keyless one arrives ready.
 */
function insertStatement(names: TableNames, messages: readonly ValidMessage[]) {
  const rows = messages.map((m) => {
    const notBefore =
      m.availableAt === null
        ? sql`UTC_TIMESTAMP(6) + INTERVAL ${m.delayMs * 1000} MICROSECOND`
        : sql`CAST(${utcDatetime(m.availableAt)} AS DATETIME(6))`;
    return sql`(${Buffer.from(m.id)}, ${m.topic}, ${m.key === null ? null : Buffer.from(m.key)}, ${m.payload},
      ${m.contentType}, ${m.headers}, ${m.key === null ? sql`1` : sql`NULL`}, ${notBefore}, UTC_TIMESTAMP(6))`;
  });
  return sql`
    INSERT INTO ${qualified(names, names.table)}
      (id, topic, msg_key, payload, content_type, headers, ready, next_attempt_at, created_at)
    VALUES ${sql.join(rows)}`;
}

/** Ids of the batch that already exist. A locking read: it sees rows committed after this transaction's snapshot and waits for uncommitted ones. */
function existingIdsStatement(names: TableNames, messages: readonly ValidMessage[]) {
  return sql<{ id: Buffer | string }>`
    SELECT id FROM ${qualified(names, names.table)}
    WHERE id IN (${sql.join(messages.map((m) => Buffer.from(m.id)))}) LOCK IN SHARE MODE`;
}

function isDuplicateKeyError(error: unknown): boolean {
  return (error as { errno?: number } | null)?.errno === ER_DUP_ENTRY;
}

export async function enqueueMysql(run: SqlExecutor, names: TableNames, plan: BatchPlan): Promise<Set<string>> {
  let messages = plan.messages;
  for (let round = 1; ; round++) {
    if (messages.length === 0) return new Set();
    try {
      // One statement: it writes every row or none. A failed statement is rolled back on its own in InnoDB, and
      // the caller's transaction goes on with nothing of this batch in it.
      await run(insertStatement(names, messages).compile(compiler));
      return new Set(messages.map((m) => m.id));
    } catch (error) {
      if (!isDuplicateKeyError(error) || round === MAX_DUPLICATE_ROUNDS) throw error;
    }
    const { rows } = await run(existingIdsStatement(names, messages).compile(compiler));
    const existing = new Set(rows.map((row) => Buffer.from(row.id as Buffer | string).toString('utf8')));
    messages = planBatch(
      messages.filter((m) => !existing.has(m.id)),
      plan.callerIds,
    ).messages;
  }
}
