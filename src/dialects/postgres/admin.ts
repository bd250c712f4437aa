import { sql, type Kysely, type RawBuilder } from 'kysely';
import { countKeys, likePattern, type AdminStore, type DeadLetterFilter, type DeadLetterRow } from '../admin.js';
import { kyselyExecutor, readCommittedTransaction, type SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { compiler, qualified } from './compiler.js';

interface DeadRow {
  seq: string;
  msg_key: string | null;
  ready: boolean;
}

export function postgresAdminStore<DB>(db: Kysely<DB>, names: TableNames): AdminStore {
  const table = qualified(names, names.table);
  const keys = qualified(names, names.keys);
  const run = kyselyExecutor(db);
  const transaction = readCommittedTransaction(db);

  const where = (filter: DeadLetterFilter): RawBuilder<unknown> => {
    const parts: RawBuilder<unknown>[] = [sql`state = 'dead'`];
    if (filter.topic !== undefined) parts.push(sql`topic LIKE ${likePattern(filter.topic)}`);
    if (filter.key !== undefined) parts.push(sql`msg_key = ${filter.key}`);
    if (filter.error !== undefined) parts.push(sql`strpos(lower(coalesce(last_error, '')), lower(${filter.error})) > 0`);
    if (filter.olderThanMs !== undefined) parts.push(sql`created_at <= now() - ${filter.olderThanMs} * interval '1 millisecond'`);
    if (filter.newerThanMs !== undefined) parts.push(sql`created_at >= now() - ${filter.newerThanMs} * interval '1 millisecond'`);
    if (filter.ids !== undefined) parts.push(sql`id = ANY(${[...filter.ids]}::text[])`);
    return sql.join(parts, sql` AND `);
  };

  /**
   * Locks the key rows in the order producers lock them (creating a missing one at 0, as a producer would), so
   * no producer or relay changes these keys' counts or heads until the transaction ends.
   */
  const lockKeys = async (trx: SqlExecutor, keyNames: string[]) => {
    if (keyNames.length === 0) return;
    await trx(
      sql`
      INSERT INTO ${keys} AS k (msg_key, pending)
      SELECT msg_key, 0 FROM unnest(${keyNames}::text[]) AS d(msg_key) ORDER BY msg_key COLLATE "C"
      ON CONFLICT (msg_key) DO UPDATE SET pending = k.pending`.compile(compiler),
    );
  };

  /** Reads the dead rows again, locked, after the key locks: only those still dead are acted on. */
  const lockDead = async (trx: SqlExecutor, seqs: readonly string[]) => {
    const { rows } = await trx(
      sql`SELECT seq::text AS seq, msg_key, ready FROM ${table}
          WHERE seq = ANY(${[...seqs]}::int8[]) AND state = 'dead' ORDER BY seq FOR UPDATE`.compile(compiler),
    );
    return rows as unknown as DeadRow[];
  };

  const keysOf = async (seqs: readonly string[]) => {
    const { rows } = await run(
      sql`SELECT DISTINCT msg_key FROM ${table} WHERE seq = ANY(${[...seqs]}::int8[]) AND msg_key IS NOT NULL`.compile(compiler),
    );
    return [...countKeys(rows.map((row) => row.msg_key as string)).keys()];
  };

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
        sql`SELECT seq::text AS seq FROM ${table} WHERE ${where(filter)} ${after === undefined ? sql`` : sql`AND seq > ${after}::int8`}
        ORDER BY seq LIMIT ${limit}`.compile(compiler),
      );
      return rows.map((row) => row.seq as string);
    },

    async listDead(filter, limit, after) {
      const { rows } = await run(
        sql`
        SELECT seq::text AS seq, id, topic, msg_key, attempts, last_error, created_at, content_type, headers, payload, ready
        FROM ${table} WHERE ${where(filter)} ${after === undefined ? sql`` : sql`AND seq > ${after}::int8`}
        ORDER BY seq LIMIT ${limit}`.compile(compiler),
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
      const keyNames = await keysOf(seqs);
      return transaction(async (trx) => {
        await lockKeys(trx, keyNames);
        const dead = await lockDead(trx, seqs);
        // A dead row that still holds its key (block-key) is counted in <table>_keys and is its key's head: it
        // simply becomes pending again. One that gave its key up (skip) is counted again, and heads its key only
        // when nothing else of the key is unsent; otherwise it waits its turn by seq like any later message.
        const released = countKeys(dead.filter((row) => row.msg_key !== null && !row.ready).map((row) => row.msg_key));
        const heads = new Set<string>();
        if (released.size > 0) {
          const { rows } = await trx(
            sql`
            UPDATE ${keys} AS k SET pending = k.pending + d.n
            FROM unnest(${[...released.keys()]}::text[], ${[...released.values()]}::int8[]) AS d(msg_key, n)
            WHERE k.msg_key = d.msg_key
            RETURNING k.msg_key, k.pending, d.n`.compile(compiler),
          );
          for (const row of rows) {
            if (Number(row.pending) !== Number(row.n)) continue;
            const first = dead.find((d) => d.msg_key === row.msg_key && !d.ready);
            if (first !== undefined) heads.add(first.seq);
          }
        }
        const ready = dead.filter((row) => row.msg_key === null || row.ready || heads.has(row.seq)).map((row) => row.seq);
        const { affectedRows } = await trx(
          sql`
          UPDATE ${table} SET state = 'pending', attempts = 0, next_attempt_at = now(), lease_owner = NULL,
            lease_until = NULL, ready = (seq = ANY(${ready}::int8[]))
          WHERE seq = ANY(${dead.map((row) => row.seq)}::int8[]) AND state = 'dead'`.compile(compiler),
        );
        return affectedRows;
      });
    },

    async discardDead(seqs) {
      if (seqs.length === 0) return 0;
      const keyNames = await keysOf(seqs);
      return transaction(async (trx) => {
        await lockKeys(trx, keyNames);
        const dead = await lockDead(trx, seqs);
        if (dead.length === 0) return 0;
        const { affectedRows } = await trx(
          sql`DELETE FROM ${table} WHERE seq = ANY(${dead.map((row) => row.seq)}::int8[]) AND state = 'dead'`.compile(compiler),
        );
        // A discarded head that held its key: count it off and make the key's next pending message its head, in
        // a statement of its own so that it sees every producer that committed before the key lock was granted.
        const holding = countKeys(dead.filter((row) => row.msg_key !== null && row.ready).map((row) => row.msg_key));
        if (holding.size > 0) {
          await trx(
            sql`
            WITH freed AS (
              UPDATE ${keys} AS k SET pending = k.pending - d.n
              FROM unnest(${[...holding.keys()]}::text[], ${[...holding.values()]}::int8[]) AS d(msg_key, n)
              WHERE k.msg_key = d.msg_key
              RETURNING k.msg_key, k.pending
            )
            UPDATE ${table} SET ready = true
            WHERE seq IN (
              SELECT (SELECT o.seq FROM ${table} AS o WHERE o.msg_key = freed.msg_key AND o.state = 'pending' ORDER BY o.seq LIMIT 1)
              FROM freed WHERE freed.pending > 0
            )`.compile(compiler),
          );
        }
        return affectedRows;
      });
    },
  };
}
