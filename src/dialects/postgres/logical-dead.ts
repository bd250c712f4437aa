import { sql, type RawBuilder } from 'kysely';
import type { SqlExecutor } from '../executor.js';
import { compiler } from './compiler.js';

/**
 * Dead letters of a table read by the logical relay. Its publication carries inserts only, so a dead row made
 * pending again by an UPDATE would never be streamed: a message comes back by being deleted and inserted again, in
 * one transaction, with a new seq, which the slot streams like any commit (same id, so consumers dedupe as ever).
 *
 * Under 'block-key' the relay parks every later message of a dead message's key as dead too ("waiting behind dead
 * message ..."). Those followers come back with the message they wait for, after it and in their order, whether it
 * is retried or discarded; otherwise they would stay dead, and newer messages of the key would overtake them.
 */
export interface LogicalDeadOptions {
  /** 'block-key': later dead rows of the same keys are parked followers and come back too. */
  followers: boolean;
}

/** Inserts these dead rows (and their followers) again as new pending messages; returns how many. */
export async function retryDeadLogical(
  trx: SqlExecutor,
  table: RawBuilder<unknown>,
  seqs: readonly string[],
  options: LogicalDeadOptions,
): Promise<number> {
  const rows = await lockWithFollowers(trx, table, seqs, options);
  return reinsert(trx, table, rows.map((row) => row.seq));
}

/**
 * Deletes these dead rows, and inserts their followers again so their keys move on; returns how many of the given
 * rows were deleted.
 */
export async function discardDeadLogical(
  trx: SqlExecutor,
  table: RawBuilder<unknown>,
  seqs: readonly string[],
  options: LogicalDeadOptions,
): Promise<number> {
  const rows = await lockWithFollowers(trx, table, seqs, options);
  const chosen = rows.filter((row) => row.chosen).map((row) => row.seq);
  if (chosen.length === 0) return 0;
  const { affectedRows } = await trx(
    sql`DELETE FROM ${table} WHERE seq = ANY(${chosen}::int8[]) AND state = 'dead'`.compile(compiler),
  );
  await reinsert(
    trx,
    table,
    rows.filter((row) => !row.chosen).map((row) => row.seq),
  );
  return affectedRows;
}

/** The given rows that are still dead and, with followers, every later dead row of their keys; locked, in seq order. */
async function lockWithFollowers(trx: SqlExecutor, table: RawBuilder<unknown>, seqs: readonly string[], options: LogicalDeadOptions) {
  if (seqs.length === 0) return [];
  const given = sql`${[...seqs]}::int8[]`;
  const followers = options.followers
    ? sql`OR EXISTS (SELECT 1 FROM ${table} AS c
            WHERE c.seq = ANY(${given}) AND c.state = 'dead' AND c.msg_key = o.msg_key AND c.seq < o.seq)`
    : sql``;
  const { rows } = await trx(
    // `ORDER BY o.seq`, not `seq`: the output column is text, and rows would be locked in text order.
    sql`SELECT o.seq::text AS seq, o.seq = ANY(${given}) AS chosen FROM ${table} AS o
        WHERE o.state = 'dead' AND (o.seq = ANY(${given}) ${followers})
        ORDER BY o.seq FOR UPDATE OF o`.compile(compiler),
  );
  return rows as { seq: string; chosen: boolean }[];
}

/**
 * Deletes dead rows and inserts them again as new pending messages, in their old seq order (identities are drawn in
 * the order the rows are inserted): attempts 0, due now, unsequenced as enqueue writes them; the last error is kept.
 */
async function reinsert(trx: SqlExecutor, table: RawBuilder<unknown>, seqs: readonly string[]): Promise<number> {
  if (seqs.length === 0) return 0;
  const { affectedRows } = await trx(
    sql`
    WITH gone AS (
      DELETE FROM ${table} WHERE seq = ANY(${[...seqs]}::int8[]) AND state = 'dead'
      RETURNING seq, id, topic, msg_key, payload, content_type, headers, last_error, created_at
    )
    INSERT INTO ${table} (id, topic, msg_key, payload, content_type, headers, state, ready, attempts, next_attempt_at, last_error, created_at)
    SELECT id, topic, msg_key, payload, content_type, headers, 'pending', CASE WHEN msg_key IS NULL THEN true END, 0,
           statement_timestamp(), last_error, created_at
    FROM gone ORDER BY seq`.compile(compiler),
  );
  return affectedRows;
}
