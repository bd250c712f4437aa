import { sql, type RawBuilder } from 'kysely';
import type { BatchPlan, PlannedMessage } from '../../outbox/batch.js';
import type { EnqueueOptions } from '../dialect.js';
import type { SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { compiler, notifyChannel, qualified } from './compiler.js';

/** What the enqueue statements return for each row they wrote. */
type WrittenRow = { id: string; seq: string; msg_key: string | null; ready: boolean };

/**
 * One statement, one round-trip:
 * 1. `locked_keys` upserts one row per key in key order. The row lock it takes is held until the caller commits,
 *    so two transactions enqueueing for the same key run their enqueues one after the other.
 * 2. The outbox rows are then inserted in the caller's order, taking `seq` from the identity column. Because a
 *    row only comes out of the join after its key row is locked, a message's seq is always taken under its key's
 *    lock: within a key, seq order is commit order, and the relay never sees a later seq commit before an earlier.
 * 3. `ready` marks the head of each key (no unsent message of the key before it): the count in the key row was 0.
 * Duplicate ids are skipped by ON CONFLICT, which waits for a concurrent writer of the same id instead of failing.
 */
function batchInsertStatement(names: TableNames, plan: BatchPlan, notify: boolean) {
  const m = plan.messages;
  const column = <T>(pick: (message: (typeof m)[number]) => T) => m.map(pick);
  return sql<WrittenRow>`
    WITH input AS (
      SELECT * FROM unnest(
        ${column((x) => x.id)}::text[], ${column((x) => x.topic)}::text[], ${column((x) => x.key)}::text[],
        ${column((x) => x.payload)}::bytea[], ${column((x) => x.contentType)}::text[], ${column((x) => x.headers)}::jsonb[],
        ${column((x) => x.availableAt)}::timestamptz[], ${column((x) => x.delayMs)}::int8[],
        ${column((x) => x.keyRank)}::int4[], ${column((x) => x.keyCount)}::int4[]
      ) WITH ORDINALITY AS t(id, topic, msg_key, payload, content_type, headers, available_at, delay_ms, key_rank, key_count, ord)
    ),
    locked_keys AS (
      INSERT INTO ${qualified(names, names.keys)} AS k (msg_key, pending)
      SELECT msg_key, key_count FROM input WHERE key_rank = 1 ORDER BY msg_key COLLATE "C"
      ON CONFLICT (msg_key) DO UPDATE SET pending = k.pending + excluded.pending
      RETURNING k.msg_key, k.pending
    ),
    -- Wakes listening relays when (and only if) the caller commits; PostgreSQL folds repeats in one transaction.
    wake AS (SELECT ${notify ? sql`pg_notify(${notifyChannel(names)}, '')` : sql`NULL`} AS notified)
    INSERT INTO ${qualified(names, names.table)} (id, topic, msg_key, payload, content_type, headers, ready, next_attempt_at)
    SELECT i.id, i.topic, i.msg_key, i.payload, i.content_type, i.headers,
           i.msg_key IS NULL OR (i.key_rank = 1 AND l.pending = i.key_count),
           coalesce(i.available_at, statement_timestamp() + i.delay_ms * interval '1 millisecond')
    FROM input i LEFT JOIN locked_keys l ON l.msg_key = i.msg_key CROSS JOIN wake
    ORDER BY i.ord
    ON CONFLICT (id) DO NOTHING
    RETURNING id, seq, msg_key, ready`;
}

/**
 * The same write for a single message, the common case, without the arrays: PostgreSQL plans every statement
 * Kysely sends afresh, and planning the batch form costs more than the insert itself. For a keyed message the
 * key row is upserted first (its lock held to commit, as above) and the row is its key's head when the count
 * it just raised is 1. pg_notify sits in RETURNING, so it runs only when a row was written: a duplicate wakes no one.
 */
function singleInsertStatement(names: TableNames, message: PlannedMessage, notify: boolean) {
  const m = message;
  const wake = notify ? sql`, pg_notify(${notifyChannel(names)}, '') IS NULL AS woke` : sql``;
  const row = (ready: RawBuilder<unknown>) => sql`
    ${m.id}::text, ${m.topic}::text, ${m.key}::text, ${m.payload}::bytea, ${m.contentType}::text, ${m.headers}::jsonb,
    ${ready}, coalesce(${m.availableAt}::timestamptz, statement_timestamp() + ${m.delayMs}::int8 * interval '1 millisecond')`;
  const into = sql`INSERT INTO ${qualified(names, names.table)}
      (id, topic, msg_key, payload, content_type, headers, ready, next_attempt_at)`;
  const tail = sql`ON CONFLICT (id) DO NOTHING RETURNING id, seq, msg_key, ready${wake}`;
  if (m.key === null) return sql<WrittenRow>`${into} VALUES (${row(sql`true`)}) ${tail}`;
  return sql<WrittenRow>`
    WITH locked_key AS (
      INSERT INTO ${qualified(names, names.keys)} AS k (msg_key, pending) VALUES (${m.key}::text, 1)
      ON CONFLICT (msg_key) DO UPDATE SET pending = k.pending + 1
      RETURNING k.pending
    )
    ${into} SELECT ${row(sql`locked_key.pending = 1`)} FROM locked_key ${tail}`;
}

export async function enqueuePostgres(
  run: SqlExecutor,
  names: TableNames,
  plan: BatchPlan,
  options: EnqueueOptions,
): Promise<Set<string>> {
  const [only] = plan.messages;
  const statement =
    plan.messages.length === 1 && only !== undefined
      ? singleInsertStatement(names, only, options.notify)
      : batchInsertStatement(names, plan, options.notify);
  const { rows } = await run(statement.compile(compiler));
  const written = rows as WrittenRow[];
  const writtenIds = new Set(written.map((row) => row.id));
  if (writtenIds.size < plan.messages.length) await repairKeyCounts(run, names, plan, written);
  return writtenIds;
}

/**
 * The rare path: some messages were duplicates of already committed ones, so the key counts took messages that
 * were not written. Give those back and, where the skipped message was meant to head its key, make the first
 * message that was written the head. Safe without re-reading other rows: this transaction holds the key locks.
 */
async function repairKeyCounts(
  run: SqlExecutor,
  names: TableNames,
  plan: BatchPlan,
  written: WrittenRow[],
): Promise<void> {
  const writtenIds = new Set(written.map((row) => row.id));
  const dropped = new Map<string, number>();
  for (const message of plan.messages) {
    if (message.key !== null && !writtenIds.has(message.id)) dropped.set(message.key, (dropped.get(message.key) ?? 0) + 1);
  }
  if (dropped.size === 0) return;
  const keys = [...dropped.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const { rows } = await run(
    sql<{ msg_key: string; pending: string }>`
      UPDATE ${qualified(names, names.keys)} AS k SET pending = k.pending - d.dropped
      FROM unnest(${keys}::text[], ${keys.map((key) => dropped.get(key))}::int4[]) AS d(msg_key, dropped)
      WHERE k.msg_key = d.msg_key
      RETURNING k.msg_key, k.pending`.compile(compiler),
  );
  const heads: string[] = [];
  for (const row of rows as { msg_key: string; pending: string }[]) {
    const mine = written.filter((w) => w.msg_key === row.msg_key);
    // Only this batch's rows are unsent for the key, and none of them heads it: the intended head was skipped.
    if (mine.length > 0 && Number(row.pending) === mine.length && !mine.some((w) => w.ready)) {
      heads.push(mine.reduce((a, b) => (BigInt(a.seq) < BigInt(b.seq) ? a : b)).seq);
    }
  }
  if (heads.length > 0) {
    await run(sql`UPDATE ${qualified(names, names.table)} SET ready = true WHERE seq = ANY(${heads}::int8[])`.compile(compiler));
  }
}
