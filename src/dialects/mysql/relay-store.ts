import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { ClaimedMessage, DeadLetter, RelayStore } from '../dialect.js';
import { kyselyExecutor, readCommittedTransaction } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { headFloors } from '../head-floors.js';
import { ArrivalCursors, dueCursor } from '../scan-cursor.js';
import { sequencedRelayStore, type ClaimSteps } from '../sequenced-claim.js';
import { compiler, qualified, rowsBySeq } from './compiler.js';
import { mysqlHeads } from './heads.js';

interface ClaimedRow {
  seq: number | string;
  id: Buffer;
  topic: string;
  msg_key: Buffer | null;
  payload: Buffer;
  content_type: string;
  headers: string | Record<string, string>;
  attempts: number;
  created_at: Date | string;
}

const text = (value: Buffer | string) => (Buffer.isBuffer(value) ? value.toString('utf8') : value);
/** DATETIME(6) values hold UTC; read them as UTC whatever the pool's time zone option says. */
const utc = (value: Date | string) => (value instanceof Date ? value : new Date(`${value.replace(' ', 'T')}Z`));
const now = sql`UTC_TIMESTAMP(6)`;
const msFromNow = (ms: number) => sql`UTC_TIMESTAMP(6) + INTERVAL ${Math.round(ms) * 1000} MICROSECOND`;
const keysOf = (messages: readonly ClaimedMessage[]) => new Set(messages.flatMap((m) => (m.key === null ? [] : [m.key])));

export function mysqlRelayStore<DB>(db: Kysely<DB>, names: TableNames): RelayStore {
  const table = qualified(names, names.table);
  const run = kyselyExecutor(db);
  const transaction = readCommittedTransaction(db);
  const heads = mysqlHeads(names);
  // Where this relay's claims and sequencing left off (see ScanCursor).
  const claimed = dueCursor();
  const arrivals = new ArrivalCursors();
  const rowsOf = (messages: readonly ClaimedMessage[]) =>
    rowsBySeq(
      table,
      messages.map((m) => m.seq),
    );

  /**
   * Finishes heads this relay holds (`change` is an UPDATE or DELETE guarded by `lease_owner = token`) and moves
   * their keys on to their next messages, under the keys' relay locks. A guarded UPDATE/DELETE (READ COMMITTED:
   * semi-consistent reads) never waits on rows it does not match, unlike a locking SELECT, whose range scan locks
   * every row it passes, a producer's uncommitted insert included. When it changes fewer rows than were claimed (a
   * lease was taken over), its count cannot tell which were ours, so it is undone and redone one message at a time.
   */
  const finishHeads = (messages: readonly ClaimedMessage[], change: (rows: RawBuilder<unknown>) => RawBuilder<unknown>) =>
    transaction(async (trx) => {
      await heads.lock(trx, keysOf(messages));
      const several = messages.length > 1;
      if (several) await trx(sql`SAVEPOINT txoutbox_finish`.compile(compiler));
      let ours = [...messages];
      const { affectedRows } = await trx(change(rowsOf(messages)).compile(compiler));
      if (affectedRows !== messages.length) {
        ours = [];
        if (several) {
          await trx(sql`ROLLBACK TO SAVEPOINT txoutbox_finish`.compile(compiler));
          for (const message of messages) {
            if ((await trx(change(rowsOf([message])).compile(compiler))).affectedRows === 1) ours.push(message);
          }
        }
      }
      return { ours, promoted: await heads.promote(trx, keysOf(ours), [], headFloors(ours)) };
    });

  const perMessage = (messages: readonly ClaimedMessage[], value: (m: ClaimedMessage) => RawBuilder<unknown>) =>
    sql`CASE t.seq ${sql.join(
      messages.map((m) => sql`WHEN ${BigInt(m.seq)} THEN ${value(m)}`),
      sql` `,
    )} END`;

  const steps: ClaimSteps = {
    async claimDue(limits, token, leaseMs) {
      // An idle poll costs one plain read instead of a locking transaction (SET, BEGIN, SELECT, COMMIT).
      const from = claimed.from();
      const arrivalsFrom = arrivals.probe.from();
      const after =
        from === null
          ? sql``
          : sql`AND (next_attempt_at > CAST(${from.dueAt} AS DATETIME(6))
                     OR (next_attempt_at = CAST(${from.dueAt} AS DATETIME(6)) AND seq > ${BigInt(from.seq)}))`;
      const probe = await run(
        sql`SELECT
              EXISTS (SELECT 1 FROM ${table} WHERE state = 'pending' AND ready = 1 AND next_attempt_at <= ${now} ${after}) AS due,
              EXISTS (SELECT 1 FROM ${table} WHERE ready IS NULL ${arrivalsFrom === null ? sql`` : sql`AND seq > ${BigInt(arrivalsFrom)}`}) AS arrivals`.compile(
          compiler,
        ),
      );
      const waiting = Number(probe.rows[0]?.arrivals) === 1;
      arrivals.probe.scanned(waiting ? 1 : 0, 1);
      if (Number(probe.rows[0]?.due) !== 1) {
        claimed.scanned(0, limits.count);
        return { messages: [], arrivals: waiting };
      }
      const messages = await transaction(async (trx) => {
        // Sizes first, so the byte budget is kept without reading payloads that will not be claimed.
        const { rows: due } = await trx(
          sql`
            SELECT seq, lease_owner, LENGTH(payload) AS bytes, DATE_FORMAT(next_attempt_at, '%Y-%m-%d %H:%i:%s.%f') AS due_at
            FROM ${table}
            WHERE state = 'pending' AND ready = 1 AND next_attempt_at <= ${now} ${after}
            ORDER BY next_attempt_at, seq
            LIMIT ${limits.count}
            FOR UPDATE SKIP LOCKED`.compile(compiler),
        );
        const fitting: { seq: string; previousOwner: string | null }[] = [];
        let bytes = 0;
        for (const row of due) {
          bytes += Number(row.bytes);
          if (fitting.length > 0 && bytes > limits.bytes) break;
          fitting.push({ seq: String(row.seq), previousOwner: row.lease_owner === null ? null : String(row.lease_owner) });
          claimed.advance({ dueAt: String(row.due_at), seq: String(row.seq) });
        }
        claimed.scanned(due.length, limits.count);
        if (fitting.length === 0) return [];
        const leased = rowsBySeq(
          table,
          fitting.map((f) => f.seq),
        );
        await trx(
          sql`
            UPDATE ${leased}
            SET t.lease_owner = ${token}, t.lease_until = ${msFromNow(leaseMs)}, t.next_attempt_at = ${msFromNow(leaseMs)},
                t.attempts = t.attempts + 1`.compile(compiler),
        );
        const { rows } = await trx(
          sql<ClaimedRow>`
            SELECT t.seq, t.id, t.topic, t.msg_key, t.payload, t.content_type, t.headers, t.attempts, t.created_at
            FROM ${leased} ORDER BY t.seq`.compile(compiler),
        );
        const previousOwner = new Map(fitting.map((f) => [f.seq, f.previousOwner]));
        return (rows as unknown as ClaimedRow[]).map((row): ClaimedMessage => ({
          seq: String(row.seq),
          id: text(row.id),
          topic: row.topic,
          key: row.msg_key === null ? null : text(row.msg_key),
          payload: row.payload,
          contentType: row.content_type,
          headers: (typeof row.headers === 'string' ? JSON.parse(row.headers) : row.headers) as Record<string, string>,
          attempts: Number(row.attempts),
          createdAt: utc(row.created_at),
          takenOverFrom: previousOwner.get(String(row.seq)) ?? null,
        }));
      });
      return { messages, arrivals: waiting };
    },

    sequence: arrivals.sequencer(transaction, heads),
  };

  return sequencedRelayStore(steps, {
    async complete(messages, token, retain) {
      const { ours, promoted } = await finishHeads(messages, (rows) =>
        retain
          ? // A sent row keeps the claim token in lease_owner: it tells which relay sent it.
            sql`UPDATE ${rows} SET t.state = 'sent', t.sent_at = ${now}, t.ready = 0, t.lease_until = NULL
                WHERE t.lease_owner = ${token} AND t.state = 'pending'`
          : sql`DELETE t FROM ${rows} WHERE t.lease_owner = ${token} AND t.state = 'pending'`,
      );
      return { sent: ours, promoted };
    },

    async retry(plans, token) {
      if (plans.length === 0) return;
      const delays = new Map(plans.map((p) => [p.message.seq, p]));
      const messages = plans.map((p) => p.message);
      await run(
        sql`
          UPDATE ${rowsOf(messages)}
          SET t.next_attempt_at = ${perMessage(messages, (m) => msFromNow(delays.get(m.seq)!.delayMs))},
              t.last_error = ${perMessage(messages, (m) => sql`${delays.get(m.seq)!.error}`)},
              t.lease_owner = NULL, t.lease_until = NULL
          WHERE t.lease_owner = ${token}`.compile(compiler),
      );
    },

    async bury(letters: readonly DeadLetter[], token, releaseKey) {
      if (letters.length === 0) return 0;
      const errors = new Map(letters.map((l) => [l.message.seq, l.error]));
      const messages = letters.map((l) => l.message);
      // A dead row keeps the claim token in lease_owner: it tells which relay buried it.
      const bury = (rows: RawBuilder<unknown>) => sql`
        UPDATE ${rows}
        SET t.state = 'dead', t.last_error = ${perMessage(messages, (m) => sql`${errors.get(m.seq)!}`)},
            t.lease_until = NULL, t.ready = ${releaseKey ? sql`t.msg_key IS NULL` : sql`t.ready`}
        WHERE t.lease_owner = ${token} AND t.state = 'pending'`;
      // Under 'block-key' the dead head keeps its key: later messages of the key wait until a person acts.
      if (!releaseKey) {
        await run(bury(rowsOf(messages)).compile(compiler));
        return 0;
      }
      return (await finishHeads(messages, bury)).promoted;
    },

    async release(messages, token) {
      if (messages.length === 0) return;
      await run(
        sql`
          UPDATE ${rowsOf(messages)}
          SET t.next_attempt_at = ${now}, t.lease_owner = NULL, t.lease_until = NULL, t.attempts = GREATEST(t.attempts - 1, 0)
          WHERE t.lease_owner = ${token}`.compile(compiler),
      );
    },

    async handOver(message, from, to, leaseMs) {
      const { affectedRows } = await run(
        sql`
          UPDATE ${rowsOf([message])}
          SET t.lease_owner = ${to}, t.lease_until = ${msFromNow(leaseMs)}, t.next_attempt_at = ${msFromNow(leaseMs)}
          WHERE t.lease_owner = ${from} AND t.state = 'pending'`.compile(compiler),
      );
      return affectedRows === 1;
    },

    async renew(messages, token, leaseMs) {
      if (messages.length === 0) return;
      await run(
        sql`
          UPDATE ${rowsOf(messages)} SET t.lease_until = ${msFromNow(leaseMs)}, t.next_attempt_at = ${msFromNow(leaseMs)}
          WHERE t.lease_owner = ${token} AND t.state = 'pending'`.compile(compiler),
      );
    },

    async cleanup(retainMs, limit) {
      // READ COMMITTED: a scanning DELETE under REPEATABLE READ would gap-lock what producers insert into.
      return transaction(async (trx) => {
        const sent = await trx(
          sql`DELETE FROM ${table} WHERE state = 'sent' AND sent_at < ${msFromNow(-retainMs)} ORDER BY sent_at LIMIT ${limit}`.compile(
            compiler,
          ),
        );
        return sent.affectedRows;
      });
    },
  });
}
