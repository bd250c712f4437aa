import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { ClaimedMessage, DeadLetter, RelayStore, RelayStoreOptions } from '../dialect.js';
import { readCommittedStatements, readCommittedTransaction } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { headFloors } from '../head-floors.js';
import { ArrivalCursors, dueCursor } from '../scan-cursor.js';
import { sequencedRelayStore, type ClaimSteps } from '../sequenced-claim.js';
import { compiler, qualified } from './compiler.js';
import { postgresHeads } from './heads.js';

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
  previous_owner: string | null;
  due_at: string;
  arrivals: boolean;
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
  const run = readCommittedStatements(db, sql`SELECT current_setting('transaction_isolation') AS level`.compile(compiler));
  const transaction = readCommittedTransaction(db);
  const heads = postgresHeads(names, { asyncCommit: options.asyncCommit ?? true });
  // Where this relay's claims and sequencing left off (see ScanCursor).
  const claimed = dueCursor();
  const arrivals = new ArrivalCursors();
  const seqs = (messages: readonly ClaimedMessage[]) => messages.map((m) => m.seq);
  const keysOf = (messages: readonly ClaimedMessage[]) => new Set(messages.flatMap((m) => (m.key === null ? [] : [m.key])));

  /**
   * Finishes heads this relay holds (`finish` returns the seqs that were still its own) and, when they had keys,
   * makes each key's next message its head, under the keys' relay locks, in one statement.
   */
  const finishHeads = async (messages: readonly ClaimedMessage[], finish: RawBuilder<unknown>) => {
    const keys = keysOf(messages);
    if (keys.size === 0) {
      const { rows } = await run(sql`${finish}`.compile(compiler));
      return { finished: rows.map((row) => String(row.seq)), promoted: 0 };
    }
    // Nothing of a key waits below its head (see renumberLate): the next one is found from the finished head's seq on.
    const floors = headFloors(messages);
    return transaction(async (trx) => {
      await heads.lock(trx, keys);
      return heads.promote(trx, keys, [], finish, floors);
    });
  };

  const steps: ClaimSteps = {
    async claimDue(limits, token, leaseMs) {
      // Due heads, oldest first, as many as fit the byte budget (the first always does). The one-row `probe`
      // says in the same round-trip whether keyed arrivals wait to be sequenced.
      const from = claimed.from();
      const arrivalsFrom = arrivals.probe.from();
      const { rows } = await run(
        sql<ClaimedRow>`
        WITH due AS (
          SELECT seq, lease_owner AS previous_owner, next_attempt_at, octet_length(payload) AS bytes FROM ${table}
          WHERE state = 'pending' AND ready AND next_attempt_at <= now()
            ${from === null ? sql`` : sql`AND (next_attempt_at, seq) > (${from.dueAt}::timestamp AT TIME ZONE 'UTC', ${from.seq}::int8)`}
          ORDER BY next_attempt_at, seq
          LIMIT ${limits.count}
          FOR UPDATE SKIP LOCKED
        ),
        fitting AS (
          SELECT seq, previous_owner, next_attempt_at FROM (
            SELECT seq, previous_owner, bytes, next_attempt_at,
                   sum(bytes) OVER (ORDER BY next_attempt_at, seq ROWS UNBOUNDED PRECEDING) - bytes AS before
            FROM due) AS running
          WHERE before = 0 OR before + bytes <= ${limits.bytes}::int8
        ),
        leased AS (
          UPDATE ${table} AS t
          SET lease_owner = ${token},
              lease_until = now() + ${leaseMs} * interval '1 millisecond',
              next_attempt_at = now() + ${leaseMs} * interval '1 millisecond',
              attempts = t.attempts + 1
          FROM fitting, ${asyncCommit} WHERE t.seq = fitting.seq
          RETURNING t.seq::text AS seq, t.id, t.topic, t.msg_key, t.payload, t.content_type, t.headers, t.attempts,
                    t.created_at, fitting.previous_owner,
                    to_char(fitting.next_attempt_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS due_at
        ),
        probe AS (
          SELECT EXISTS (
            SELECT 1 FROM ${table} WHERE ready IS NULL ${arrivalsFrom === null ? sql`` : sql`AND seq > ${arrivalsFrom}::int8`}
          ) AS arrivals
        )
        SELECT leased.*, probe.arrivals FROM probe LEFT JOIN leased ON true`.compile(compiler),
      );
      const leased = (rows as unknown as ClaimedRow[]).filter((row) => row.seq !== null);
      for (const row of leased) claimed.advance({ dueAt: row.due_at, seq: row.seq });
      claimed.scanned(leased.length, limits.count);
      const waiting = (rows[0] as unknown as ClaimedRow | undefined)?.arrivals === true;
      arrivals.probe.scanned(waiting ? 1 : 0, 1);
      return {
        arrivals: waiting,
        messages: leased
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
            takenOverFrom: row.previous_owner,
          })),
      };
    },

    sequence: arrivals.sequencer(transaction, heads),
  };

  return sequencedRelayStore(steps, {
    async complete(messages, token, retain) {
      const finish = retain
        ? // A sent row keeps the claim token in lease_owner: it tells which relay sent it.
          sql`UPDATE ${table} SET state = 'sent', sent_at = now(), ready = false, lease_until = NULL
              FROM ${asyncCommit} WHERE seq = ANY(${seqs(messages)}::int8[]) AND lease_owner = ${token} RETURNING seq`
        : sql`DELETE FROM ${table} USING ${asyncCommit} WHERE seq = ANY(${seqs(messages)}::int8[]) AND lease_owner = ${token} RETURNING seq`;
      const { finished, promoted } = await finishHeads(messages, finish);
      const sent = new Set(finished);
      return { sent: messages.filter((m) => sent.has(m.seq)), promoted };
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
      if (letters.length === 0) return 0;
      const messages = letters.map((l) => l.message);
      // A dead row keeps the claim token in lease_owner: it tells which relay buried it.
      const dead = sql`
        UPDATE ${table} AS t
        SET state = 'dead', last_error = d.error, lease_until = NULL, ready = ${releaseKey ? sql`t.msg_key IS NULL` : sql`t.ready`}
        FROM unnest(${seqs(messages)}::int8[], ${letters.map((l) => l.error)}::text[]) AS d(seq, error), ${asyncCommit}
        WHERE t.seq = d.seq AND t.lease_owner = ${token} AND t.state = 'pending'
        RETURNING t.seq`;
      // Under 'block-key' the dead head keeps its key: later messages of the key wait until a person acts.
      if (!releaseKey) {
        await run(dead.compile(compiler));
        return 0;
      }
      return (await finishHeads(messages, dead)).promoted;
    },

    async release(messages, token) {
      if (messages.length === 0) return;
      await run(
        sql`
        UPDATE ${table} SET next_attempt_at = now(), lease_owner = NULL, lease_until = NULL, attempts = greatest(attempts - 1, 0)
        FROM ${asyncCommit} WHERE seq = ANY(${seqs(messages)}::int8[]) AND lease_owner = ${token}`.compile(compiler),
      );
    },

    async handOver(message, from, to, leaseMs) {
      const { affectedRows } = await run(
        sql`
        UPDATE ${table} SET lease_owner = ${to}, lease_until = now() + ${leaseMs} * interval '1 millisecond',
          next_attempt_at = now() + ${leaseMs} * interval '1 millisecond'
        FROM ${asyncCommit} WHERE seq = ${message.seq}::int8 AND lease_owner = ${from} AND state = 'pending'`.compile(compiler),
      );
      return affectedRows === 1;
    },

    async renew(messages, token, leaseMs) {
      if (messages.length === 0) return;
      await run(
        sql`
        UPDATE ${table} SET lease_until = now() + ${leaseMs} * interval '1 millisecond',
          next_attempt_at = now() + ${leaseMs} * interval '1 millisecond'
        FROM ${asyncCommit} WHERE seq = ANY(${seqs(messages)}::int8[]) AND lease_owner = ${token} AND state = 'pending'`.compile(
          compiler,
        ),
      );
    },

    async cleanup(retainMs, limit) {
      const sent = await run(
        sql`
        DELETE FROM ${table} WHERE seq IN (
          SELECT seq FROM ${table} WHERE state = 'sent' AND sent_at < now() - ${retainMs} * interval '1 millisecond'
          ORDER BY sent_at LIMIT ${limit})`.compile(compiler),
      );
      return sent.affectedRows;
    },
  });
}
