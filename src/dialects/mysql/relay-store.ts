import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { ClaimedMessage, DeadLetter, RelayStore } from '../dialect.js';
import { kyselyExecutor, readCommittedTransaction, type SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { sequencedClaim, type ClaimSteps } from '../sequenced-claim.js';
import { compiler, qualified } from './compiler.js';
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
const byKey = (messages: readonly ClaimedMessage[]) =>
  new Map(messages.flatMap((m) => (m.key === null ? [] : [[m.key, null] as const])));

export function mysqlRelayStore<DB>(db: Kysely<DB>, names: TableNames): RelayStore {
  const table = qualified(names, names.table);
  const run = kyselyExecutor(db);
  const transaction = readCommittedTransaction(db);
  const heads = mysqlHeads(names);
  // Integers, not text: compared with text, InnoDB cannot seek the primary key and locks every row it scans.
  const seqsOf = (seqs: readonly string[]) => sql.join(seqs.map((seq) => sql`${BigInt(seq)}`));
  const inSeqs = (messages: readonly ClaimedMessage[]) => seqsOf(messages.map((m) => m.seq));

  /**
   * Applies `change` (an UPDATE or DELETE guarded by `lease_owner = token`) and returns the messages it touched,
   * i.e. those still leased to us. A guarded UPDATE/DELETE (READ COMMITTED: semi-consistent reads) never waits on
   * rows it does not match, unlike a locking SELECT. Only when fewer rows changed than were claimed (a lease was
   * taken over) is the table read to tell which.
   */
  const applyToOurs = async (
    trx: SqlExecutor,
    messages: readonly ClaimedMessage[],
    change: RawBuilder<unknown>,
    readBack: { query: RawBuilder<unknown>; oursAre: 'listed' | 'missing' },
  ) => {
    const { affectedRows } = await trx(change.compile(compiler));
    if (affectedRows === messages.length) return [...messages];
    const { rows } = await trx(readBack.query.compile(compiler));
    const listed = new Set(rows.map((row) => String(row.seq)));
    return messages.filter((m) => listed.has(m.seq) === (readBack.oursAre === 'listed'));
  };

  /** Finishes heads this relay holds and moves their keys on to their next messages, under the keys' relay locks. */
  const finishHeads = (
    messages: readonly ClaimedMessage[],
    change: RawBuilder<unknown>,
    readBack: { query: RawBuilder<unknown>; oursAre: 'listed' | 'missing' },
  ) =>
    transaction(async (trx) => {
      const keys = byKey(messages);
      await heads.lock(trx, keys.keys());
      const ours = await applyToOurs(trx, messages, change, readBack);
      // Keys whose head was taken over are another relay's to move on; promoting them is harmless but needless.
      const promoted = await heads.promote(trx, byKey(ours), []);
      return { ours, promoted };
    });

  const perMessage = (messages: readonly ClaimedMessage[], value: (m: ClaimedMessage) => RawBuilder<unknown>) =>
    sql`CASE seq ${sql.join(
      messages.map((m) => sql`WHEN ${BigInt(m.seq)} THEN ${value(m)}`),
      sql` `,
    )} END`;

  const steps: ClaimSteps = {
    async claimDue(limits, token, leaseMs) {
      // An idle poll costs one plain read instead of a locking transaction (SET, BEGIN, SELECT, COMMIT).
      const probe = await run(
        sql`SELECT
              EXISTS (SELECT 1 FROM ${table} WHERE state = 'pending' AND ready = 1 AND next_attempt_at <= ${now}) AS due,
              EXISTS (SELECT 1 FROM ${table} WHERE ready IS NULL) AS arrivals`.compile(compiler),
      );
      const arrivals = Number(probe.rows[0]?.arrivals) === 1;
      if (Number(probe.rows[0]?.due) !== 1) return { messages: [], arrivals };
      const messages = await transaction(async (trx) => {
        // Sizes first, so the byte budget is kept without reading payloads that will not be claimed.
        const { rows: due } = await trx(
          sql`
            SELECT seq, lease_owner, LENGTH(payload) AS bytes FROM ${table}
            WHERE state = 'pending' AND ready = 1 AND next_attempt_at <= ${now}
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
        }
        if (fitting.length === 0) return [];
        const claimedSeqs = seqsOf(fitting.map((f) => f.seq));
        await trx(
          sql`
            UPDATE ${table}
            SET lease_owner = ${token}, lease_until = ${msFromNow(leaseMs)}, next_attempt_at = ${msFromNow(leaseMs)},
                attempts = attempts + 1
            WHERE seq IN (${claimedSeqs})`.compile(compiler),
        );
        const { rows } = await trx(
          sql<ClaimedRow>`
            SELECT seq, id, topic, msg_key, payload, content_type, headers, attempts, created_at FROM ${table}
            WHERE seq IN (${claimedSeqs}) ORDER BY seq`.compile(compiler),
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
      return { messages, arrivals };
    },

    sequence: (limit) => transaction((trx) => heads.sequence(trx, limit)),
  };

  return {
    claim: (limits, token, leaseMs) => sequencedClaim(steps, limits, token, leaseMs),

    async complete(messages, token, retain) {
      if (messages.length === 0) return { sent: [], promoted: 0 };
      // A sent row keeps the claim token in lease_owner: it tells which relay sent it, and which rows were ours.
      const { ours, promoted } = retain
        ? await finishHeads(
            messages,
            sql`UPDATE ${table} SET state = 'sent', sent_at = ${now}, ready = 0, lease_until = NULL
                WHERE seq IN (${inSeqs(messages)}) AND lease_owner = ${token}`,
            {
              query: sql`SELECT seq FROM ${table} WHERE seq IN (${inSeqs(messages)}) AND lease_owner = ${token} AND state = 'sent'`,
              oursAre: 'listed',
            },
          )
        : await finishHeads(
            messages,
            sql`DELETE FROM ${table} WHERE seq IN (${inSeqs(messages)}) AND lease_owner = ${token}`,
            // Ours are gone; whatever is still there was taken over by another relay.
            { query: sql`SELECT seq FROM ${table} WHERE seq IN (${inSeqs(messages)})`, oursAre: 'missing' },
          );
      return { sent: ours, promoted };
    },

    async retry(plans, token) {
      if (plans.length === 0) return;
      const delays = new Map(plans.map((p) => [p.message.seq, p]));
      const messages = plans.map((p) => p.message);
      await run(
        sql`
          UPDATE ${table}
          SET next_attempt_at = ${perMessage(messages, (m) => msFromNow(delays.get(m.seq)!.delayMs))},
              last_error = ${perMessage(messages, (m) => sql`${delays.get(m.seq)!.error}`)},
              lease_owner = NULL, lease_until = NULL
          WHERE seq IN (${inSeqs(messages)}) AND lease_owner = ${token}`.compile(compiler),
      );
    },

    async bury(letters: readonly DeadLetter[], token, releaseKey) {
      if (letters.length === 0) return 0;
      const errors = new Map(letters.map((l) => [l.message.seq, l.error]));
      const messages = letters.map((l) => l.message);
      // A dead row keeps the claim token in lease_owner: it tells which relay buried it, and which rows were ours.
      const bury = sql`
        UPDATE ${table}
        SET state = 'dead', last_error = ${perMessage(messages, (m) => sql`${errors.get(m.seq)!}`)},
            lease_until = NULL, ready = ${releaseKey ? sql`msg_key IS NULL` : sql`ready`}
        WHERE seq IN (${inSeqs(messages)}) AND lease_owner = ${token} AND state = 'pending'`;
      // Under 'block-key' the dead head keeps its key: later messages of the key wait until a person acts.
      if (!releaseKey) {
        await run(bury.compile(compiler));
        return 0;
      }
      const { promoted } = await finishHeads(messages, bury, {
        query: sql`SELECT seq FROM ${table} WHERE seq IN (${inSeqs(messages)}) AND lease_owner = ${token} AND state = 'dead'`,
        oursAre: 'listed',
      });
      return promoted;
    },

    async release(messages, token) {
      if (messages.length === 0) return;
      await run(
        sql`
          UPDATE ${table} SET next_attempt_at = ${now}, lease_owner = NULL, lease_until = NULL, attempts = GREATEST(attempts - 1, 0)
          WHERE seq IN (${inSeqs(messages)}) AND lease_owner = ${token}`.compile(compiler),
      );
    },

    async handOver(message, from, to, leaseMs) {
      const { affectedRows } = await run(
        sql`
          UPDATE ${table} SET lease_owner = ${to}, lease_until = ${msFromNow(leaseMs)}, next_attempt_at = ${msFromNow(leaseMs)}
          WHERE seq = ${BigInt(message.seq)} AND lease_owner = ${from} AND state = 'pending'`.compile(compiler),
      );
      return affectedRows === 1;
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
  };
}
