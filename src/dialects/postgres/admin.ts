import { sql, type Kysely, type RawBuilder } from 'kysely';
import {
  countKeys,
  headProblem,
  distinctKeys,
  type AdminOptions,
  type AdminStore,
  type DeadLetterFilter,
  type DeadLetterRow,
} from '../admin.js';
import { deadLetterWhere, onDeadRows, withKeysLocked, type DeadLetterLocking } from '../dead-letter-actions.js';
import { kyselyExecutor, readCommittedTransaction, type SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { compiler, qualified } from './compiler.js';
import { postgresHeads } from './heads.js';
import { discardDeadLogical, retryDeadLogical } from './logical-dead.js';

interface DeadRow {
  seq: string;
  msg_key: string | null;
  ready: boolean;
}

export function postgresAdminStore<DB>(db: Kysely<DB>, names: TableNames, options: AdminOptions = {}): AdminStore {
  const table = qualified(names, names.table);
  const logical = options.mode === 'logical' ? { followers: options.deadLetterPolicy !== 'skip' } : null;
  const heads = postgresHeads(names);
  const run = kyselyExecutor(db);
  const transaction = readCommittedTransaction(db);

  const where = (filter: DeadLetterFilter): RawBuilder<unknown> =>
    deadLetterWhere(filter, {
      topic: (pattern) => sql`topic LIKE ${pattern}`,
      key: (key) => sql`msg_key = ${key}`,
      error: (text) => sql`strpos(lower(coalesce(last_error, '')), lower(${text})) > 0`,
      createdBefore: (ms) => sql`created_at <= now() - ${ms} * interval '1 millisecond'`,
      createdAfter: (ms) => sql`created_at >= now() - ${ms} * interval '1 millisecond'`,
      ids: (ids) => sql`id = ANY(${[...ids]}::text[])`,
    });

  /** Reads the dead rows again, locked, after the key locks: only those still dead are acted on. */
  const lockDead = async (trx: SqlExecutor, seqs: readonly string[]) => {
    const { rows } = await trx(
      // `ORDER BY o.seq`, not `seq`: a bare name would be the text output column, and lock in text order.
      sql`SELECT o.seq::text AS seq, o.msg_key, o.ready FROM ${table} AS o
          WHERE o.seq = ANY(${[...seqs]}::int8[]) AND o.state = 'dead' ORDER BY o.seq FOR UPDATE`.compile(compiler),
    );
    return rows as unknown as DeadRow[];
  };

  const keysOf = async (seqs: readonly string[]) => {
    const { rows } = await run(
      sql`SELECT DISTINCT msg_key FROM ${table} WHERE seq = ANY(${[...seqs]}::int8[]) AND msg_key IS NOT NULL`.compile(compiler),
    );
    return [...countKeys(rows.map((row) => row.msg_key as string)).keys()];
  };
  const locking: DeadLetterLocking<DeadRow> = { transaction, lock: heads.lock, keysOf, lockDead };

  return {
    async status() {
      const { rows } = await run(
        sql`
        SELECT topic,
          count(*) FILTER (WHERE state = 'pending') AS pending,
          min(created_at) FILTER (WHERE state = 'pending') AS oldest,
          count(*) FILTER (WHERE state = 'pending' AND lease_until > now()) AS in_flight,
          count(*) FILTER (WHERE state = 'pending' AND lease_owner IS NOT NULL AND lease_until <= now()) AS expired,
          count(*) FILTER (WHERE state = 'dead') AS dead,
          count(*) FILTER (WHERE state = 'sent' AND sent_at > now() - interval '1 minute') AS sent_last_minute
        FROM ${table} GROUP BY topic ORDER BY topic`.compile(compiler),
      );
      const clock = await run(sql`SELECT now() AS now`.compile(compiler));
      return {
        now: clock.rows[0]!.now as Date,
        topics: rows.map((row) => ({
          topic: row.topic as string,
          pending: Number(row.pending),
          oldestPendingAt: (row.oldest as Date | null) ?? null,
          inFlight: Number(row.in_flight),
          expiredLeases: Number(row.expired),
          dead: Number(row.dead),
          sentLastMinute: Number(row.sent_last_minute),
        })),
      };
    },

    async deadSeqs(filter, limit, after) {
      const { rows } = await run(
        // Sorted by the column (o.seq, a number), not by the output `seq` (text), as listDead.
        sql`SELECT o.seq::text AS seq FROM ${table} AS o WHERE ${where(filter)} ${after === undefined ? sql`` : sql`AND o.seq > ${after}::int8`}
        ORDER BY o.seq LIMIT ${limit}`.compile(compiler),
      );
      return rows.map((row) => row.seq as string);
    },

    async listDead(filter, limit, after) {
      // Sorted by the column (o.seq, a number), not by the output `seq` (text): pages follow `seq > after` numerically.
      const { rows } = await run(
        sql`
        SELECT o.seq::text AS seq, id, topic, msg_key, attempts, last_error, created_at, content_type, headers, payload, ready
        FROM ${table} AS o WHERE ${where(filter)} ${after === undefined ? sql`` : sql`AND o.seq > ${after}::int8`}
        ORDER BY o.seq LIMIT ${limit}`.compile(compiler),
      );
      return rows.map((row): DeadLetterRow => ({
        seq: row.seq as string,
        id: row.id as string,
        topic: row.topic as string,
        key: (row.msg_key as string | null) ?? null,
        attempts: Number(row.attempts),
        lastError: (row.last_error as string | null) ?? null,
        createdAt: row.created_at as Date,
        contentType: row.content_type as string,
        headers: row.headers as Record<string, string>,
        payload: row.payload as Buffer,
        holdsKey: row.msg_key !== null && row.ready === true,
      }));
    },

    async retryDead(seqs) {
      if (seqs.length === 0) return 0;
      if (logical !== null) return transaction((trx) => retryDeadLogical(trx, table, seqs, logical));
      return onDeadRows(locking, seqs, async (trx, dead) => {
        // A dead row that still holds its key (block-key) is its key's head and simply becomes pending again. One
        // that gave its key up (skip) waits behind the key's head, or becomes the head if the key has none.
        const { affectedRows } = await trx(
          sql`
          UPDATE ${table} SET state = 'pending', attempts = 0, next_attempt_at = now(), lease_owner = NULL,
            lease_until = NULL, ready = (msg_key IS NULL OR ready)
          WHERE seq = ANY(${dead.map((row) => row.seq)}::int8[]) AND state = 'dead'`.compile(compiler),
        );
        // One that gave its key up goes behind its key's queue, renumbered, after everything committed before the
        // retry (the key's arrivals are sequenced first).
        await heads.sequenceKeys(trx, distinctKeys(dead.filter((row) => !row.ready).map((row) => row.msg_key)));
        await heads.renumberLate(
          trx,
          dead.filter((row) => !row.ready).map((row) => ({ seq: row.seq, key: row.msg_key })),
        );
        await heads.promote(trx, distinctKeys(dead.map((row) => row.msg_key)), []);
        return affectedRows;
      });
    },

    async discardDead(seqs) {
      if (seqs.length === 0) return 0;
      if (logical !== null) return transaction((trx) => discardDeadLogical(trx, table, seqs, logical));
      return onDeadRows(locking, seqs, async (trx, dead) => {
        // A discarded head that held its key: the key's next waiting message becomes its head.
        const { finished } = await heads.promote(
          trx,
          distinctKeys(dead.map((row) => row.msg_key)),
          [],
          sql`DELETE FROM ${table} WHERE seq = ANY(${dead.map((row) => row.seq)}::int8[]) AND state = 'dead' RETURNING seq`,
        );
        return finished.length;
      });
    },

    async sentBetween(from, to) {
      const { rows } = await run(
        sql`SELECT count(*) AS n FROM ${table} WHERE state = 'sent' AND sent_at > ${from} AND sent_at <= ${to}`.compile(compiler),
      );
      return Number(rows[0]!.n);
    },

    async leases() {
      // Rows in flight are ready and due at their lease's end, so the claim index finds them without the backlog.
      const { rows } = await run(
        sql`
        SELECT lease_owner, count(*) AS messages, max(lease_until) AS until FROM ${table}
        WHERE state = 'pending' AND ready AND next_attempt_at > now() AND lease_owner IS NOT NULL AND lease_until > now()
        GROUP BY lease_owner ORDER BY lease_owner LIMIT 1000`.compile(compiler),
      );
      return rows.map((row) => ({ owner: row.lease_owner as string, messages: Number(row.messages), until: row.until as Date }));
    },

    async blockedKeys(limit, after) {
      // Under 'skip' a dead message holds nothing back.
      if (logical !== null && !logical.followers) return [];
      const after_ = (seq: string) => (after === undefined ? sql`` : sql`AND ${sql.ref(seq)} > ${after}::int8`);
      // Logical mode (block-key) parks every later message of a key with a dead message as dead too: the key's first
      // dead row is its head. Polling mode marks the head (ready) and leaves the followers pending behind it.
      const { rows } = await run(
        (logical !== null
          ? sql`
            SELECT * FROM (
              SELECT seq, seq::text AS seq_text, id, topic, msg_key, created_at, last_error,
                row_number() OVER (PARTITION BY msg_key ORDER BY seq) AS place, count(*) OVER (PARTITION BY msg_key) - 1 AS waiting
              FROM ${table} WHERE state = 'dead' AND msg_key IS NOT NULL
            ) AS d WHERE place = 1 ${after_('seq')} ORDER BY seq LIMIT ${limit}`
          : sql`
            SELECT d.seq::text AS seq_text, d.id, d.topic, d.msg_key, d.created_at, d.last_error,
              (SELECT count(*) FROM ${table} AS w
               WHERE w.msg_key = d.msg_key AND w.state = 'pending' AND w.ready IS NOT TRUE) AS waiting
            FROM ${table} AS d WHERE d.state = 'dead' AND d.ready AND d.msg_key IS NOT NULL
              ${after_('d.seq')}
            ORDER BY d.seq LIMIT ${limit}`
        ).compile(compiler),
      );
      return rows.map((row) => ({
        key: row.msg_key as string,
        head: {
          seq: row.seq_text as string,
          id: row.id as string,
          topic: row.topic as string,
          createdAt: row.created_at as Date,
          lastError: (row.last_error as string | null) ?? null,
        },
        waiting: Number(row.waiting),
      }));
    },

    async headProblems() {
      const { rows } = await run(
        sql`
        SELECT msg_key, count(*) FILTER (WHERE ready) AS heads,
               count(*) FILTER (WHERE state = 'pending' AND NOT ready) AS waiting
        FROM ${table}
        WHERE msg_key IS NOT NULL AND state IN ('pending', 'dead') AND ready IS NOT NULL
        GROUP BY msg_key
        HAVING count(*) FILTER (WHERE ready) > 1
            OR (count(*) FILTER (WHERE ready) = 0 AND count(*) FILTER (WHERE state = 'pending' AND NOT ready) > 0)
        ORDER BY msg_key COLLATE "C"`.compile(compiler),
      );
      return rows.map((row) => headProblem(row.msg_key as string, Number(row.heads), Number(row.waiting)));
    },

    async repairHeads(keyNames) {
      return withKeysLocked(locking, keyNames, async (trx) => {
        // Of several heads, the first stays (or any in flight, which cannot be recalled); the others wait.
        await trx(
          sql`
          UPDATE ${table} AS t SET ready = false
          FROM (
            SELECT seq, row_number() OVER (PARTITION BY msg_key ORDER BY seq) AS place
            FROM ${table} WHERE msg_key = ANY(${[...keyNames]}::text[]) AND ready AND state = 'pending'
          ) AS extra
          WHERE t.seq = extra.seq AND extra.place > 1 AND (t.lease_until IS NULL OR t.lease_until < now())`.compile(compiler),
        );
        const { promoted } = await heads.promote(trx, keyNames, []);
        return promoted;
      });
    },
  };
}
