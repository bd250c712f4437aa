import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { ClaimedMessage, DeadLetter, RelayStore } from '../dialect.js';
import { kyselyExecutor, readCommittedTransaction, type SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { compiler, qualified } from './compiler.js';
import { decrementKeyCounts } from './key-counts.js';
import { lockKeyStripes } from './key-locks.js';

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

export function mysqlRelayStore<DB>(db: Kysely<DB>, names: TableNames): RelayStore {
  const table = qualified(names, names.table);
  const keys = qualified(names, names.keys);
  const run = kyselyExecutor(db);
  const transaction = readCommittedTransaction(db);
  // Integers, not text: compared with text, InnoDB cannot seek the primary key and locks every row it scans.
  const inSeqs = (messages: readonly ClaimedMessage[]) => sql.join(messages.map((m) => sql`${BigInt(m.seq)}`));
  const keysOf = (messages: readonly ClaimedMessage[]) => messages.flatMap((m) => (m.key === null ? [] : [m.key]));

  /**
   * Applies `change` (an UPDATE or DELETE guarded by `lease_owner = token`) and returns the messages it touched,
   * i.e. those still leased to us. A guarded UPDATE/DELETE (READ COMMITTED: semi-consistent reads) never waits on
   * rows it does not match, unlike a locking SELECT, whose range scan would also lock the row just past its range
   * and deadlock with another worker finishing the adjacent batch. Only when fewer rows changed than were claimed
   * (a lease was taken over) is the table read to tell which.
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

  /**
   * The keys' heads are gone (sent, or dead under 'skip'): count them off and make each key's next pending
   * message its head. Run under the keys' stripe locks, with statements that each read what is committed now,
   * so every producer that committed a message for these keys before the locks were granted is seen.
   */
  const freeKeys = async (trx: SqlExecutor, gone: readonly ClaimedMessage[]) => {
    const counts = new Map<string, number>();
    for (const key of keysOf(gone)) counts.set(key, (counts.get(key) ?? 0) + 1);
    if (counts.size === 0) return;
    await decrementKeyCounts(trx, names, counts);
    const { rows } = await trx(
      sql`
        SELECT (SELECT o.seq FROM ${table} AS o WHERE o.msg_key = k.msg_key AND o.state = 'pending' ORDER BY o.seq LIMIT 1) AS head
        FROM ${keys} AS k
        WHERE k.msg_key IN (${sql.join([...counts.keys()].map((key) => Buffer.from(key)))}) AND k.pending > 0`.compile(compiler),
    );
    const heads = rows.flatMap((row) => (row.head === null ? [] : [BigInt(row.head as number | string)]));
    if (heads.length === 0) return;
    await trx(sql`UPDATE ${table} SET ready = 1 WHERE seq IN (${sql.join(heads)})`.compile(compiler));
  };

  const perMessage = (messages: readonly ClaimedMessage[], value: (m: ClaimedMessage) => RawBuilder<unknown>) =>
    sql`CASE seq ${sql.join(
      messages.map((m) => sql`WHEN ${BigInt(m.seq)} THEN ${value(m)}`),
      sql` `,
    )} END`;

  return {
    async claim(limit, token, leaseMs) {
      // An idle poll costs one plain read instead of a locking transaction (SET, BEGIN, SELECT, COMMIT).
      const due = await run(
        sql`SELECT seq FROM ${table} WHERE state = 'pending' AND ready = 1 AND next_attempt_at <= ${now} LIMIT 1`.compile(
          compiler,
        ),
      );
      if (due.rows.length === 0) return [];
      return transaction(async (trx) => {
        const { rows } = await trx(
          sql<ClaimedRow>`
            SELECT seq, id, topic, msg_key, payload, content_type, headers, attempts, created_at FROM ${table}
            WHERE state = 'pending' AND ready = 1 AND next_attempt_at <= ${now}
            ORDER BY next_attempt_at, seq
            LIMIT ${limit}
            FOR UPDATE SKIP LOCKED`.compile(compiler),
        );
        if (rows.length === 0) return [];
        const claimed = (rows as unknown as ClaimedRow[]).map((row) => ({
          seq: String(row.seq),
          id: text(row.id),
          topic: row.topic,
          key: row.msg_key === null ? null : text(row.msg_key),
          payload: row.payload,
          contentType: row.content_type,
          headers: (typeof row.headers === 'string' ? JSON.parse(row.headers) : row.headers) as Record<string, string>,
          attempts: Number(row.attempts) + 1,
          createdAt: utc(row.created_at),
        }));
        await trx(
          sql`
            UPDATE ${table}
            SET lease_owner = ${token}, lease_until = ${msFromNow(leaseMs)}, next_attempt_at = ${msFromNow(leaseMs)},
                attempts = attempts + 1
            WHERE seq IN (${inSeqs(claimed)})`.compile(compiler),
        );
        return claimed.sort((a, b) => (BigInt(a.seq) < BigInt(b.seq) ? -1 : 1));
      });
    },

    async complete(messages, token, retain) {
      if (messages.length === 0) return 0;
      return transaction(async (trx) => {
        await lockKeyStripes(trx, names, keysOf(messages));
        // A sent row keeps the claim token in lease_owner: it tells which relay sent it, and which rows were ours.
        const ours = retain
          ? await applyToOurs(
              trx,
              messages,
              sql`UPDATE ${table} SET state = 'sent', sent_at = ${now}, ready = 0, lease_until = NULL
                  WHERE seq IN (${inSeqs(messages)}) AND lease_owner = ${token}`,
              {
                query: sql`SELECT seq FROM ${table} WHERE seq IN (${inSeqs(messages)}) AND lease_owner = ${token} AND state = 'sent'`,
                oursAre: 'listed',
              },
            )
          : await applyToOurs(
              trx,
              messages,
              sql`DELETE FROM ${table} WHERE seq IN (${inSeqs(messages)}) AND lease_owner = ${token}`,
              // Ours are gone; whatever is still there was taken over by another relay.
              { query: sql`SELECT seq FROM ${table} WHERE seq IN (${inSeqs(messages)})`, oursAre: 'missing' },
            );
        await freeKeys(trx, ours);
        return ours.length;
      });
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
      if (letters.length === 0) return;
      const errors = new Map(letters.map((l) => [l.message.seq, l.error]));
      const messages = letters.map((l) => l.message);
      // A dead row keeps the claim token in lease_owner: it tells which relay buried it, and which rows were ours.
      const bury = sql`
        UPDATE ${table}
        SET state = 'dead', last_error = ${perMessage(messages, (m) => sql`${errors.get(m.seq)!}`)},
            lease_until = NULL, ready = ${releaseKey ? sql`0` : sql`ready`}
        WHERE seq IN (${inSeqs(messages)}) AND lease_owner = ${token} AND state = 'pending'`;
      // The dead head keeps its key: later messages of the key wait until a person retries or discards it.
      if (!releaseKey) return void (await run(bury.compile(compiler)));
      await transaction(async (trx) => {
        await lockKeyStripes(trx, names, keysOf(messages));
        const ours = await applyToOurs(trx, messages, bury, {
          query: sql`SELECT seq FROM ${table} WHERE seq IN (${inSeqs(messages)}) AND lease_owner = ${token} AND state = 'dead'`,
          oursAre: 'listed',
        });
        await freeKeys(trx, ours);
      });
    },

    async release(messages, token) {
      if (messages.length === 0) return;
      await run(
        sql`
          UPDATE ${table} SET next_attempt_at = ${now}, lease_owner = NULL, lease_until = NULL, attempts = GREATEST(attempts - 1, 0)
          WHERE seq IN (${inSeqs(messages)}) AND lease_owner = ${token}`.compile(compiler),
      );
    },

    async cleanup(retainMs, limit) {
      // READ COMMITTED here too: a scanning DELETE under REPEATABLE READ would gap-lock what producers insert into.
      return transaction(async (trx) => {
        const sent = await trx(
          sql`DELETE FROM ${table} WHERE state = 'sent' AND sent_at < ${msFromNow(-retainMs)} ORDER BY sent_at LIMIT ${limit}`.compile(
            compiler,
          ),
        );
        // A key row at zero is only a counter nobody needs; a producer that needs it again re-creates it.
        await trx(sql`DELETE FROM ${keys} WHERE pending = 0 LIMIT ${limit}`.compile(compiler));
        return sent.affectedRows;
      });
    },
  };
}
