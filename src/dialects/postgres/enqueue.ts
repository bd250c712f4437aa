import { sql, type RawBuilder } from 'kysely';
import type { BatchPlan } from '../../outbox/batch.js';
import type { ValidMessage } from '../../outbox/message.js';
import type { EnqueueOptions } from '../dialect.js';
import type { SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { notifyChannel } from '../notify-channel.js';
import { compiler, qualified } from './compiler.js';

/** A keyed message arrives unsequenced (ready NULL): the relay, not the producer, decides when it heads its key. */
const readyOnArrival = (m: ValidMessage) => (m.key === null ? true : null);

const COLUMNS = sql`(id, topic, msg_key, payload, content_type, headers, ready, next_attempt_at)`;
const notBefore = (availableAt: RawBuilder<unknown>, delayMs: RawBuilder<unknown>) =>
  sql`coalesce(${availableAt}, statement_timestamp() + ${delayMs} * interval '1 millisecond')`;

/**
 * The rows of a batch as a SELECT: one message as plain values (PostgreSQL plans every statement Kysely sends
 * afresh, and the array form costs more to plan than the insert itself), several as one unnest in the given order.
 */
function rowsOf(messages: readonly ValidMessage[]): RawBuilder<unknown> {
  const [m] = messages;
  if (messages.length === 1 && m !== undefined) {
    return sql`SELECT ${m.id}::text, ${m.topic}::text, ${m.key}::text, ${m.payload}::bytea, ${m.contentType}::text,
      ${m.headers}::jsonb, ${readyOnArrival(m)}::boolean, ${notBefore(sql`${m.availableAt}::timestamptz`, sql`${m.delayMs}::int8`)}`;
  }
  const column = <T>(pick: (message: ValidMessage) => T) => messages.map(pick);
  return sql`
    SELECT id, topic, msg_key, payload, content_type, headers, ready, ${notBefore(sql`available_at`, sql`delay_ms`)}
    FROM unnest(
      ${column((x) => x.id)}::text[], ${column((x) => x.topic)}::text[], ${column((x) => x.key)}::text[],
      ${column((x) => x.payload)}::bytea[], ${column((x) => x.contentType)}::text[], ${column((x) => x.headers)}::jsonb[],
      ${column(readyOnArrival)}::boolean[], ${column((x) => x.availableAt)}::timestamptz[], ${column((x) => x.delayMs)}::int8[]
    ) WITH ORDINALITY AS t(id, topic, msg_key, payload, content_type, headers, ready, available_at, delay_ms, ord)
    ORDER BY ord`;
}

/**
 * A plain insert: no lock, no counter, nothing the relay touches. Duplicate ids are skipped by ON CONFLICT, which
 * waits for a concurrent writer of the same id instead of failing. With `notify`, pg_notify runs in RETURNING, so
 * only a written row wakes the relays (and, being a NOTIFY, it serializes notifying commits: opt-in only).
 */
function insertStatement(names: TableNames, messages: readonly ValidMessage[], notify: boolean, onlyAtReadCommitted: boolean) {
  const wake = notify ? sql`, pg_notify(${notifyChannel(names)}, '') IS NULL AS woke` : sql``;
  const guard = onlyAtReadCommitted ? sql`WHERE ${ISOLATION} = 'read committed'` : sql``;
  return sql<{ id: string }>`
    INSERT INTO ${qualified(names, names.table)} ${COLUMNS}
    SELECT * FROM (${rowsOf(messages)}) AS batch ${guard}
    ON CONFLICT (id) DO NOTHING RETURNING id${wake}`;
}

const ISOLATION = sql`current_setting('transaction_isolation')`;

/**
 * For messages with the caller's own ids: the insert runs only at READ COMMITTED, and the statement says which
 * level the transaction runs at. Above it, ON CONFLICT raises a serialization failure when the duplicate was
 * committed after the transaction's snapshot, so the caller is told, and the messages go one by one in savepoints.
 */
function guardedInsertStatement(names: TableNames, messages: readonly ValidMessage[], notify: boolean) {
  return sql<{ id: string | null; isolation: string | null }>`
    WITH written AS (${insertStatement(names, messages, notify, true)})
    SELECT id, NULL AS isolation FROM written
    UNION ALL SELECT NULL, ${ISOLATION} WHERE ${ISOLATION} <> 'read committed'`;
}

/** SQLSTATEs of a duplicate that committed after the snapshot of a REPEATABLE READ or SERIALIZABLE transaction. */
const CONCURRENT_DUPLICATE = new Set(['40001', '23505']);

/**
 * Above READ COMMITTED, each message is written in a savepoint of its own, so a concurrent duplicate costs only
 * that message (reported as a duplicate), never the caller's transaction. A rare path: ids are the caller's own,
 * the isolation level is raised, and each message costs three round-trips.
 */
async function insertInSavepoints(run: SqlExecutor, names: TableNames, plan: BatchPlan, notify: boolean) {
  const written = new Set<string>();
  for (const message of plan.messages) {
    await run(sql`SAVEPOINT txoutbox_enqueue`.compile(compiler));
    try {
      const { rows } = await run(insertStatement(names, [message], notify, false).compile(compiler));
      for (const row of rows) written.add(row.id as string);
      await run(sql`RELEASE SAVEPOINT txoutbox_enqueue`.compile(compiler));
    } catch (error) {
      if (!CONCURRENT_DUPLICATE.has((error as { code?: string } | null)?.code ?? '')) throw error;
      await run(sql`ROLLBACK TO SAVEPOINT txoutbox_enqueue`.compile(compiler));
      await run(sql`RELEASE SAVEPOINT txoutbox_enqueue`.compile(compiler));
    }
  }
  return written;
}

export async function enqueuePostgres(
  run: SqlExecutor,
  names: TableNames,
  plan: BatchPlan,
  options: EnqueueOptions,
): Promise<Set<string>> {
  if (!plan.callerIds) {
    const { rows } = await run(insertStatement(names, plan.messages, options.notify, false).compile(compiler));
    return new Set(rows.map((row) => row.id as string));
  }
  const { rows } = await run(guardedInsertStatement(names, plan.messages, options.notify).compile(compiler));
  if (rows.some((row) => row.isolation !== null)) return insertInSavepoints(run, names, plan, options.notify);
  return new Set(rows.map((row) => row.id as string));
}
