import { sql } from 'kysely';
import type { BatchPlan } from '../../outbox/batch.js';
import type { EnqueueOptions } from '../dialect.js';
import type { SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { compiler, notifyChannel, qualified } from './compiler.js';

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
function insertStatement(names: TableNames, plan: BatchPlan, notify: boolean) {
  const m = plan.messages;
  const column = <T>(pick: (message: (typeof m)[number]) => T) => m.map(pick);
  return sql<{ id: string; seq: string; msg_key: string | null; ready: boolean }>`
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

export async function enqueuePostgres(
  run: SqlExecutor,
  names: TableNames,
  plan: BatchPlan,
  options: EnqueueOptions,
): Promise<Set<string>> {
  const { rows } = await run(insertStatement(names, plan, options.notify).compile(compiler));
  const written = rows as { id: string; seq: string; msg_key: string | null; ready: boolean }[];
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
  written: { id: string; seq: string; msg_key: string | null; ready: boolean }[],
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
