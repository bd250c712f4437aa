import { sql, type Kysely, type RawBuilder } from 'kysely';
import { countKeys, headProblem, distinctKeys, type AdminStore, type DeadLetterFilter, type DeadLetterRow } from '../admin.js';
import { deadLetterWhere, onDeadRows, withKeysLocked, type DeadLetterLocking } from '../dead-letter-actions.js';
import { kyselyExecutor, readCommittedTransaction, type SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { compiler, qualified, rowsBySeq, utcDatetime } from './compiler.js';
import { mysqlHeads } from './heads.js';

interface DeadRow {
  seq: string;
  key: string | null;
  ready: boolean;
}

const text = (value: unknown): string | null =>
  value === null || value === undefined ? null : Buffer.isBuffer(value) ? value.toString('utf8') : String(value);
/** DATETIME(6) values hold UTC; read them as UTC whatever the pool's time zone option says. */
const utc = (value: Date | string) => (value instanceof Date ? value : new Date(`${value.replace(' ', 'T')}Z`));
const msAgo = (ms: number) => sql`UTC_TIMESTAMP(6) - INTERVAL ${Math.round(ms) * 1000} MICROSECOND`;
const inSeqs = (seqs: readonly string[]) => sql.join(seqs.map((seq) => sql`${BigInt(seq)}`));

export function mysqlAdminStore<DB>(db: Kysely<DB>, names: TableNames): AdminStore {
  const table = qualified(names, names.table);
  const heads = mysqlHeads(names);
  const run = kyselyExecutor(db);
  const transaction = readCommittedTransaction(db);

  const where = (filter: DeadLetterFilter): RawBuilder<unknown> =>
    deadLetterWhere(filter, {
      // An explicit ESCAPE: under NO_BACKSLASH_ESCAPES, MySQL's LIKE has no escape character by default.
      topic: (pattern) => sql`topic LIKE ${pattern} ESCAPE ${'\\'}`,
      key: (key) => sql`msg_key = ${Buffer.from(key)}`,
      error: (text) => sql`LOCATE(LOWER(${text}), LOWER(COALESCE(last_error, ''))) > 0`,
      createdBefore: (ms) => sql`created_at <= ${msAgo(ms)}`,
      createdAfter: (ms) => sql`created_at >= ${msAgo(ms)}`,
      ids: (ids) => (ids.length === 0 ? sql`1 = 0` : sql`id IN (${sql.join(ids.map((id) => Buffer.from(id)))})`),
    });

  const keysOf = async (seqs: readonly string[]) => {
    const { rows } = await run(
      sql`SELECT DISTINCT msg_key FROM ${table} WHERE seq IN (${inSeqs(seqs)}) AND msg_key IS NOT NULL`.compile(compiler),
    );
    return [...countKeys(rows.map((row) => text(row.msg_key))).keys()];
  };

  /** After the stripe locks: the rows still dead, locked. */
  const lockDead = async (trx: SqlExecutor, seqs: readonly string[]): Promise<DeadRow[]> => {
    const { rows } = await trx(
      sql`SELECT t.seq, t.msg_key, t.ready FROM ${rowsBySeq(table, seqs)} WHERE t.state = 'dead' ORDER BY t.seq FOR UPDATE`.compile(
        compiler,
      ),
    );
    return rows.map((row) => ({ seq: String(row.seq), key: text(row.msg_key), ready: Number(row.ready) === 1 }));
  };
  const locking: DeadLetterLocking<DeadRow> = { transaction, lock: heads.lock, keysOf, lockDead };

  return {
    async status() {
      const { rows } = await run(
        sql`
        SELECT topic,
          SUM(state = 'pending') AS pending,
          MIN(CASE WHEN state = 'pending' THEN created_at END) AS oldest,
          SUM(state = 'pending' AND lease_until > UTC_TIMESTAMP(6)) AS in_flight,
          SUM(state = 'pending' AND lease_owner IS NOT NULL AND lease_until <= UTC_TIMESTAMP(6)) AS expired,
          SUM(state = 'dead') AS dead,
          SUM(state = 'sent' AND sent_at > ${msAgo(60_000)}) AS sent_last_minute
        FROM ${table} GROUP BY topic ORDER BY topic`.compile(compiler),
      );
      const clock = await run(sql`SELECT UTC_TIMESTAMP(6) AS now`.compile(compiler));
      return {
        now: utc(clock.rows[0]!.now as Date | string),
        topics: rows.map((row) => ({
          topic: text(row.topic)!,
          pending: Number(row.pending ?? 0),
          oldestPendingAt: row.oldest === null || row.oldest === undefined ? null : utc(row.oldest as Date | string),
          inFlight: Number(row.in_flight ?? 0),
          expiredLeases: Number(row.expired ?? 0),
          dead: Number(row.dead ?? 0),
          sentLastMinute: Number(row.sent_last_minute ?? 0),
        })),
      };
    },

    async deadSeqs(filter, limit, after) {
      const { rows } = await run(
        sql`SELECT seq FROM ${table} WHERE ${where(filter)} ${after === undefined ? sql`` : sql`AND seq > ${BigInt(after)}`}
        ORDER BY seq LIMIT ${limit}`.compile(compiler),
      );
      return rows.map((row) => String(row.seq));
    },

    async listDead(filter, limit, after) {
      const { rows } = await run(
        sql`
        SELECT seq, id, topic, msg_key, attempts, last_error, created_at, content_type, headers, payload, ready
        FROM ${table} WHERE ${where(filter)} ${after === undefined ? sql`` : sql`AND seq > ${BigInt(after)}`}
        ORDER BY seq LIMIT ${limit}`.compile(compiler),
      );
      return rows.map((row): DeadLetterRow => ({
        seq: String(row.seq),
        id: text(row.id)!,
        topic: text(row.topic)!,
        key: text(row.msg_key),
        attempts: Number(row.attempts),
        lastError: text(row.last_error),
        createdAt: utc(row.created_at as Date | string),
        contentType: text(row.content_type)!,
        headers: (typeof row.headers === 'string' ? JSON.parse(row.headers) : row.headers) as Record<string, string>,
        payload: row.payload as Buffer,
        holdsKey: row.msg_key !== null && Number(row.ready) === 1,
      }));
    },

    async retryDead(seqs) {
      return onDeadRows(locking, seqs, async (trx, dead) => {
        // As on PostgreSQL: a row still holding its key is its head already; one that gave its key up waits behind
        // the key's head, or becomes the head if the key has none.
        const { affectedRows } = await trx(
          sql`
          UPDATE ${rowsBySeq(
            table,
            dead.map((row) => row.seq),
          )}
          SET t.state = 'pending', t.attempts = 0, t.next_attempt_at = UTC_TIMESTAMP(6), t.lease_owner = NULL,
            t.lease_until = NULL, t.ready = (t.msg_key IS NULL OR t.ready = 1)
          WHERE t.state = 'dead'`.compile(compiler),
        );
        // One that gave its key up goes behind its key's queue, renumbered, after everything committed before the
        // retry (the key's arrivals are sequenced first).
        await heads.sequenceKeys(trx, distinctKeys(dead.filter((row) => !row.ready).map((row) => row.key)));
        await heads.renumberLate(
          trx,
          dead.filter((row) => !row.ready).map((row) => ({ seq: row.seq, key: row.key })),
        );
        await heads.promote(trx, distinctKeys(dead.map((row) => row.key)), []);
        return affectedRows;
      });
    },

    async discardDead(seqs) {
      return onDeadRows(locking, seqs, async (trx, dead) => {
        const { affectedRows } = await trx(
          sql`DELETE t FROM ${rowsBySeq(
            table,
            dead.map((row) => row.seq),
          )} WHERE t.state = 'dead'`.compile(compiler),
        );
        // A discarded head that held its key: the key's next waiting message becomes its head.
        await heads.promote(trx, distinctKeys(dead.map((row) => row.key)), []);
        return affectedRows;
      });
    },

    async sentBetween(from, to) {
      const { rows } = await run(
        sql`SELECT COUNT(*) AS n FROM ${table}
            WHERE state = 'sent' AND sent_at > ${utcDatetime(from)} AND sent_at <= ${utcDatetime(to)}`.compile(compiler),
      );
      return Number(rows[0]!.n);
    },

    async leases() {
      // Rows in flight are ready and due at their lease's end, so claim_idx finds them without the backlog.
      const { rows } = await run(
        sql`
        SELECT lease_owner, COUNT(*) AS messages, MAX(lease_until) AS until FROM ${table}
        WHERE state = 'pending' AND ready = 1 AND next_attempt_at > UTC_TIMESTAMP(6) AND lease_owner IS NOT NULL
          AND lease_until > UTC_TIMESTAMP(6)
        GROUP BY lease_owner ORDER BY lease_owner LIMIT 1000`.compile(compiler),
      );
      return rows.map((row) => ({
        owner: text(row.lease_owner)!,
        messages: Number(row.messages),
        until: utc(row.until as Date | string),
      }));
    },

    async blockedKeys(limit, after) {
      const { rows } = await run(
        sql`
        SELECT d.seq, d.id, d.topic, d.msg_key, d.created_at, d.last_error,
          (SELECT COUNT(*) FROM ${table} AS w
           WHERE w.msg_key = d.msg_key AND w.state = 'pending' AND (w.ready = 0 OR w.ready IS NULL)) AS waiting
        FROM ${table} AS d WHERE d.state = 'dead' AND d.ready = 1 AND d.msg_key IS NOT NULL
          ${after === undefined ? sql`` : sql`AND d.seq > ${BigInt(after)}`}
        ORDER BY d.seq LIMIT ${limit}`.compile(compiler),
      );
      return rows.map((row) => ({
        key: text(row.msg_key)!,
        head: {
          seq: String(row.seq),
          id: text(row.id)!,
          topic: text(row.topic)!,
          createdAt: utc(row.created_at as Date | string),
          lastError: text(row.last_error),
        },
        waiting: Number(row.waiting),
      }));
    },

    async headProblems() {
      const { rows } = await run(
        sql`
        SELECT msg_key, SUM(ready = 1) AS heads, SUM(state = 'pending' AND ready = 0) AS waiting
        FROM ${table}
        WHERE msg_key IS NOT NULL AND state IN ('pending', 'dead') AND ready IS NOT NULL
        GROUP BY msg_key
        HAVING SUM(ready = 1) > 1 OR (SUM(ready = 1) = 0 AND SUM(state = 'pending' AND ready = 0) > 0)
        ORDER BY msg_key`.compile(compiler),
      );
      return rows.map((row) => headProblem(text(row.msg_key)!, Number(row.heads), Number(row.waiting)));
    },

    async repairHeads(keyNames) {
      return withKeysLocked(locking, keyNames, async (trx) => {
        // Of several heads, the first stays (or any in flight, which cannot be recalled); the others wait.
        const { rows } = await trx(
          sql`
          SELECT seq, msg_key, lease_until > UTC_TIMESTAMP(6) AS in_flight FROM ${table}
          WHERE msg_key IN (${sql.join(keyNames.map((key) => Buffer.from(key)))}) AND ready = 1 AND state = 'pending'
          ORDER BY seq`.compile(compiler),
        );
        const first = new Set<string>();
        const demote: string[] = [];
        for (const row of rows) {
          const key = text(row.msg_key)!;
          if (!first.has(key)) first.add(key);
          else if (Number(row.in_flight) !== 1) demote.push(String(row.seq));
        }
        if (demote.length > 0) await trx(sql`UPDATE ${rowsBySeq(table, demote)} SET t.ready = 0`.compile(compiler));
        return heads.promote(trx, distinctKeys(keyNames), []);
      });
    },
  };
}
