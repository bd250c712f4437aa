import { sql, type Kysely } from 'kysely';
import type { ClaimedMessage, DeadLetter, RelayStore, RelayStoreOptions } from '../dialect.js';
import { kyselyExecutor, readCommittedTransaction, type SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { compiler, qualified } from './compiler.js';

interface ClaimedRow {
  seq: string;
  id: string;
  topic: string;
  msg_key: string | null;
  payload: Buffer;
  content_type: string;
  headers: Record<string, string>;
  attempts: number;
  created_at: Date;
}

const byKey = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

/** Counts per key of the given rows, keys in the order every producer and relay locks them. */
function countByKey(rows: readonly { msg_key: string | null }[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const { msg_key: key } of rows) if (key !== null) counts.set(key, (counts.get(key) ?? 0) + 1);
  return new Map([...counts.entries()].sort(([a], [b]) => byKey(a, b)));
}

export function postgresRelayStore<DB>(db: Kysely<DB>, names: TableNames, options: RelayStoreOptions = {}): RelayStore {
  const table = qualified(names, names.table);
  /**
   * A one-row FROM item that turns off the WAL flush wait for the transaction the statement runs in (set_config
   * with is_local lasts until that transaction ends, the implicit one of a single statement included). The first
   * writing statement of each relay transaction joins it: losing a relay mark in a crash means a resend, never a loss.
   */
  const asyncCommit =
    (options.asyncCommit ?? true)
      ? sql`(SELECT set_config('synchronous_commit', 'off', true)) AS async_commit`
      : sql`(SELECT NULL) AS async_commit`;
  const keys = qualified(names, names.keys);
  const run = kyselyExecutor(db);
  const transaction = readCommittedTransaction(db);

  /** Locks the key rows, in the same order producers lock them, until the relay's transaction ends. */
  const lockKeys = async (trx: SqlExecutor, keyNames: string[]) => {
    if (keyNames.length === 0) return;
    await trx(
      sql`SELECT msg_key FROM ${keys} WHERE msg_key = ANY(${keyNames}::text[]) ORDER BY msg_key COLLATE "C" FOR UPDATE`.compile(
        compiler,
      ),
    );
  };

  /**
   * The keys' heads are gone (sent, or dead under 'skip'): count them off and make each key's next pending
   * message its head. This is a statement of its own, run after the key rows were locked, so its snapshot sees
   * every producer that committed a message for these keys before the lock was granted — a head promoted from
   * an older snapshot could miss that message and leave its key stuck.
   */
  const freeKeys = async (trx: SqlExecutor, counts: Map<string, number>) => {
    if (counts.size === 0) return;
    await trx(
      sql`
      WITH freed AS (
        UPDATE ${keys} AS k SET pending = k.pending - d.n
        FROM unnest(${[...counts.keys()]}::text[], ${[...counts.values()]}::int8[]) AS d(msg_key, n)
        WHERE k.msg_key = d.msg_key
        RETURNING k.msg_key, k.pending
      )
      UPDATE ${table} AS t SET ready = true
      FROM freed CROSS JOIN LATERAL (
        SELECT o.seq FROM ${table} AS o WHERE o.msg_key = freed.msg_key AND o.state = 'pending' ORDER BY o.seq LIMIT 1
      ) AS head
      WHERE freed.pending > 0 AND t.seq = head.seq`.compile(compiler),
    );
  };

  const seqs = (messages: readonly ClaimedMessage[]) => messages.map((m) => m.seq);

  return {
    async claim(limit, token, leaseMs) {
      const { rows } = await run(
        sql<ClaimedRow>`
        WITH due AS (
          SELECT seq FROM ${table}
          WHERE state = 'pending' AND ready AND next_attempt_at <= now()
          ORDER BY next_attempt_at, seq
          LIMIT ${limit}
          FOR UPDATE SKIP LOCKED
        )
        UPDATE ${table} AS t
        SET lease_owner = ${token},
            lease_until = now() + ${leaseMs} * interval '1 millisecond',
            next_attempt_at = now() + ${leaseMs} * interval '1 millisecond',
            attempts = t.attempts + 1
        FROM due, ${asyncCommit} WHERE t.seq = due.seq
        RETURNING t.seq::text AS seq, t.id, t.topic, t.msg_key, t.payload, t.content_type, t.headers, t.attempts, t.created_at`.compile(
          compiler,
        ),
      );
      return (rows as unknown as ClaimedRow[])
        .sort((a, b) => (BigInt(a.seq) < BigInt(b.seq) ? -1 : 1))
        .map((row) => ({
          seq: row.seq,
          id: row.id,
          topic: row.topic,
          key: row.msg_key,
          payload: row.payload,
          contentType: row.content_type,
          headers: row.headers,
          attempts: row.attempts,
          createdAt: row.created_at,
        }));
    },

    async complete(messages, token, retain) {
      if (messages.length === 0) return 0;
      return transaction(async (trx) => {
        await lockKeys(trx, [...countByKey(messages.map((m) => ({ msg_key: m.key }))).keys()]);
        const finish = retain
          ? // A sent row keeps the claim token in lease_owner: it tells which relay sent it.
            sql`UPDATE ${table} SET state = 'sent', sent_at = now(), ready = false, lease_until = NULL
                FROM ${asyncCommit} WHERE seq = ANY(${seqs(messages)}::int8[]) AND lease_owner = ${token} RETURNING seq, msg_key`
          : sql`DELETE FROM ${table} USING ${asyncCommit} WHERE seq = ANY(${seqs(messages)}::int8[]) AND lease_owner = ${token} RETURNING seq, msg_key`;
        const { rows } = await trx(finish.compile(compiler));
        await freeKeys(trx, countByKey(rows as { msg_key: string | null }[]));
        return rows.length;
      });
    },

    async retry(plans, token) {
      if (plans.length === 0) return;
      await run(
        sql`
        UPDATE ${table} AS t
        SET next_attempt_at = now() + d.delay_ms * interval '1 millisecond', last_error = d.error,
            lease_owner = NULL, lease_until = NULL
        FROM unnest(${seqs(plans.map((p) => p.message))}::int8[], ${plans.map((p) => Math.round(p.delayMs))}::int8[], ${plans.map((p) => p.error)}::text[])
          AS d(seq, delay_ms, error), ${asyncCommit}
        WHERE t.seq = d.seq AND t.lease_owner = ${token}`.compile(compiler),
      );
    },

    async bury(letters: readonly DeadLetter[], token, releaseKey) {
      if (letters.length === 0) return;
      const dead = (trx: SqlExecutor) =>
        trx(
          sql`
          UPDATE ${table} AS t
          SET state = 'dead', last_error = d.error, lease_until = NULL,
              ready = ${releaseKey ? sql`false` : sql`t.ready`}
          FROM unnest(${seqs(letters.map((l) => l.message))}::int8[], ${letters.map((l) => l.error)}::text[]) AS d(seq, error), ${asyncCommit}
          WHERE t.seq = d.seq AND t.lease_owner = ${token} AND t.state = 'pending'
          RETURNING t.seq, t.msg_key`.compile(compiler),
        );
      if (!releaseKey) {
        // The dead head keeps its key: later messages of the key wait until a person retries or discards it.
        await dead(run);
        return;
      }
      await transaction(async (trx) => {
        await lockKeys(trx, [...countByKey(letters.map((l) => ({ msg_key: l.message.key }))).keys()]);
        const { rows } = await dead(trx);
        await freeKeys(trx, countByKey(rows as { msg_key: string | null }[]));
      });
    },

    async release(messages, token) {
      if (messages.length === 0) return;
      await run(
        sql`
        UPDATE ${table} SET next_attempt_at = now(), lease_owner = NULL, lease_until = NULL, attempts = greatest(attempts - 1, 0)
        FROM ${asyncCommit} WHERE seq = ANY(${seqs(messages)}::int8[]) AND lease_owner = ${token}`.compile(compiler),
      );
    },

    async cleanup(retainMs, limit) {
      const sent = await run(
        sql`
        DELETE FROM ${table} WHERE seq IN (
          SELECT seq FROM ${table} WHERE state = 'sent' AND sent_at < now() - ${retainMs} * interval '1 millisecond'
          ORDER BY sent_at LIMIT ${limit})`.compile(compiler),
      );
      // A key row at zero is only a lock nobody holds; a producer that needs it again simply re-creates it.
      await run(
        sql`
        DELETE FROM ${keys} WHERE pending = 0 AND msg_key IN (
          SELECT msg_key FROM ${keys} WHERE pending = 0 LIMIT ${limit} FOR UPDATE SKIP LOCKED)`.compile(compiler),
      );
      return sent.affectedRows;
    },
  };
}
