import { sql, type RawBuilder } from 'kysely';
import { lockId, lockOrder } from '../key-lock-id.js';
import type { ScanCursor } from '../scan-cursor.js';
import type { SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { compiler, qualified } from './compiler.js';

/**
 * Which message of a key may be published next is decided here, by relays only: producers just insert. A keyed
 * message arrives unsequenced (ready NULL); a relay makes it its key's head (ready true) or puts it behind the head
 * (ready false); when a head is sent (or dead under 'skip'), the next waiting message becomes the head. Every
 * such decision runs under a transaction-scoped advisory lock on the key that only relays take, and reads the
 * rows afresh after the lock is granted, so two relays never make two heads. Nothing here waits for a producer.
 */
export interface Heads {
  /** Locks the keys for this relay transaction (advisory locks no producer takes), in one agreed order. */
  lock(trx: SqlExecutor, keys: Iterable<string>): Promise<void>;
  /**
   * Gives each of these keys without a head its head: its first message that is waiting or among the given
   * arrivals (never one after an earlier arrival another relay is still sequencing), and puts the other arrivals
   * behind it. `finish` (a DELETE or UPDATE ... RETURNING seq of heads this relay is done with) runs in the same
   * statement, and the rows it returns no longer count as heads. Returns the seqs finished and heads made.
   */
  promote(
    trx: SqlExecutor,
    keys: Iterable<string>,
    arrivals: readonly string[],
    finish?: RawBuilder<unknown>,
    floors?: ReadonlyMap<string, string>,
  ): Promise<{ finished: string[]; promoted: number }>;
  /**
   * Moves these rows (arrivals, or dead letters made pending again) behind their key's head when they have a lower
   * seq than it: each is written again with a new seq, waiting. Then everything waiting on a key comes after its
   * head, and finding the next message can start at the head's seq (see promote's floors). Returns the old seqs.
   */
  renumberLate(trx: SqlExecutor, rows: readonly { seq: string; key: string | null }[]): Promise<Set<string>>;
  /** Sequences up to `limit` arrivals, oldest first, from the cursor on (see ScanCursor). Returns heads made. */
  sequence(trx: SqlExecutor, limit: number, cursor: ScanCursor<string>): Promise<number>;
}

/** `asyncCommit`: the sequencing transactions commit without waiting for the WAL flush (see RelayStoreOptions). */
export function postgresHeads(names: TableNames, options: { asyncCommit?: boolean } = {}): Heads {
  const table = qualified(names, names.table);
  const classId = lockId(`txoutbox:${names.schema ?? ''}.${names.table}`);
  const sequencerId = lockId(`txoutbox-sequencer:${names.schema ?? ''}.${names.table}`);

  const lock: Heads['lock'] = async (trx, keys) => {
    const ids = lockOrder(keys, lockId, (a, b) => a - b);
    if (ids.length === 0) return;
    await trx(
      sql`SELECT count(pg_advisory_xact_lock(${classId}::int4, id)) FROM (SELECT id FROM unnest(${ids}::int4[]) AS id ORDER BY id) AS ordered`.compile(
        compiler,
      ),
    );
  };

  const promote: Heads['promote'] = async (trx, keys, arrivals, finish, floors = new Map()) => {
    const gone = finish ?? sql`SELECT NULL::int8 AS seq WHERE false`;
    const keyList = [...new Set(keys)];
    const { rows } = await trx(
      sql<{ seq: string; what: 'finished' | 'promoted' }>`
      WITH gone AS (${gone}),
      -- Per key without a head: the first message not heading it, if it is waiting or one of these arrivals. An
      -- earlier arrival that another relay is still sequencing leaves the key to that relay.
      candidates AS (
        SELECT first.seq FROM unnest(${keyList}::text[], ${keyList.map((key) => floors.get(key) ?? null)}::int8[]) AS k(msg_key, floor)
        -- The key's head, read from the top of its head entries down: the entries of heads sent earlier lie below
        -- it, and an open transaction anywhere keeps PostgreSQL from pruning them. From the finished head's seq
        -- on when known (a head this relay did not finish, its lease taken over, still counts).
        LEFT JOIN LATERAL (
          SELECT h.seq FROM ${table} AS h
          WHERE h.msg_key = k.msg_key AND h.ready AND h.seq >= coalesce(k.floor, 0) AND h.seq NOT IN (SELECT seq FROM gone)
          ORDER BY h.seq DESC LIMIT 1) AS head ON true
        -- Only for keys without one: the first message not heading the key, from the finished head's seq on.
        CROSS JOIN LATERAL (
          SELECT w.seq, w.ready FROM ${table} AS w
          WHERE head.seq IS NULL AND w.msg_key = k.msg_key AND w.state = 'pending' AND w.ready IS NOT TRUE
            AND w.seq > coalesce(k.floor, 0)
          ORDER BY w.seq LIMIT 1) AS first
        WHERE head.seq IS NULL AND (first.ready = false OR (first.ready IS NULL AND first.seq = ANY(${arrivals}::int8[])))
      ),
      heads AS (SELECT seq FROM candidates),
      -- Primary-key lookups of exactly the rows to change: these arrivals, and the new heads.
      touched AS (SELECT a.seq FROM unnest(${arrivals}::int8[]) AS a(seq) UNION SELECT seq FROM heads),
      promoted AS (
        UPDATE ${table} AS t SET ready = t.msg_key IS NULL OR t.seq IN (SELECT seq FROM heads),
          -- A new head is due from now at the earliest, so claims that scan on from their cursor find it.
          next_attempt_at = CASE WHEN t.msg_key IS NULL OR t.seq IN (SELECT seq FROM heads)
                                 THEN greatest(t.next_attempt_at, now()) ELSE t.next_attempt_at END
        FROM touched WHERE t.seq = touched.seq AND (t.ready IS NULL OR t.seq IN (SELECT seq FROM heads))
        RETURNING t.seq, t.ready
      )
      SELECT seq::text AS seq, 'finished' AS what FROM gone
      UNION ALL SELECT seq::text, 'promoted' FROM promoted WHERE ready`.compile(compiler),
    );
    return {
      finished: rows.filter((row) => row.what === 'finished').map((row) => row.seq as string),
      promoted: rows.filter((row) => row.what === 'promoted').length,
    };
  };

  const renumberLate: Heads['renumberLate'] = async (trx, rows) => {
    const keyed = rows.filter((row) => row.key !== null);
    if (keyed.length === 0) return new Set();
    const { rows: moved } = await trx(
      sql<{ old: string }>`
      WITH late AS (
        SELECT r.seq FROM unnest(${keyed.map((r) => r.seq)}::int8[], ${keyed.map((r) => r.key)}::text[]) AS r(seq, msg_key)
        -- The key's head read from the top down (see promote): whether it is above this row.
        WHERE (SELECT h.seq FROM ${table} AS h WHERE h.msg_key = r.msg_key AND h.ready ORDER BY h.seq DESC LIMIT 1) > r.seq
      ),
      moved AS (
        DELETE FROM ${table} AS t USING late WHERE t.seq = late.seq
        RETURNING t.seq AS old, t.id, t.topic, t.msg_key, t.payload, t.content_type, t.headers, t.attempts,
                  t.next_attempt_at, t.last_error, t.created_at
      ),
      written AS (
        INSERT INTO ${table} (id, topic, msg_key, payload, content_type, headers, ready, attempts, next_attempt_at, last_error, created_at)
        SELECT id, topic, msg_key, payload, content_type, headers, false, attempts, next_attempt_at, last_error, created_at
        FROM moved ORDER BY old
      )
      SELECT old::text AS old FROM moved`.compile(compiler),
    );
    return new Set(moved.map((row) => row.old as string));
  };

  return {
    lock,
    promote,
    renumberLate,
    async sequence(trx, limit, cursor) {
      // One sequencer per table at a time (the others go on claiming): no row is locked before the key locks. A
      // locking read of arrivals could hold a row that meanwhile became a waiting message, which the relay that
      // holds its key's lock may have to promote: a deadlock between two relays.
      // No bitmap scan of arrivals: on a table filled faster than ANALYZE runs, the planner takes the rows past the
      // cursor for a few hundred and reads them all to sort them (138k rows, 52 ms, for the 1,000 it keeps).
      const { rows: turn } = await trx(
        sql`SELECT pg_try_advisory_xact_lock(${sequencerId}::int4, 0) AS mine, set_config('enable_bitmapscan', 'off', true)
            ${options.asyncCommit === true ? sql`, set_config('synchronous_commit', 'off', true)` : sql``}`.compile(compiler),
      );
      if (turn[0]?.mine !== true) return 0;
      const from = cursor.from();
      const { rows } = await trx(
        sql`
        SELECT a.seq::text AS seq, a.msg_key FROM ${table} AS a
        WHERE a.ready IS NULL ${from === null ? sql`` : sql`AND a.seq > ${from}::int8`}
        ORDER BY a.seq LIMIT ${limit}`.compile(compiler),
      );
      cursor.scanned(rows.length, limit);
      if (rows.length === 0) return 0;
      cursor.advance(rows[rows.length - 1]!.seq as string);
      // A keyless arrival (written by an older producer) simply becomes ready.
      const keys = new Set(rows.flatMap((row) => (row.msg_key === null ? [] : [row.msg_key as string])));
      await lock(trx, keys);
      // An arrival that committed after a later message of its key became the head goes behind it, renumbered.
      const late = await renumberLate(
        trx,
        rows.map((row) => ({ seq: row.seq as string, key: row.msg_key as string | null })),
      );
      const { promoted } = await promote(
        trx,
        keys,
        rows.map((row) => row.seq as string).filter((seq) => !late.has(seq)),
      );
      return promoted;
    },
  };
}
