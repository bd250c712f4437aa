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
   * Moves these rows (arrivals, or dead letters made pending again) behind their key's queue when one of them has a
   * lower seq than a message already in it (the head or one waiting): all the key's given rows are written again,
   * in seq order, with new seqs, waiting. Then everything waiting on a key comes after its head, and finding the
   * next message can start at the head's seq (see promote's floors). `arrivalsOnly`: rows read before the keys'
   * locks were granted, of which only those still unsequenced are moved. Returns the old seqs.
   */
  renumberLate(
    trx: SqlExecutor,
    rows: readonly { seq: string; key: string | null }[],
    arrivalsOnly?: boolean,
  ): Promise<Set<string>>;
  /**
   * Sequences these keys' arrivals now, for a caller that holds the keys' locks and is about to put something
   * behind their queues (a retried dead letter: everything committed before the retry comes first).
   */
  sequenceKeys(trx: SqlExecutor, keys: Iterable<string>): Promise<void>;
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

  const renumberLate: Heads['renumberLate'] = async (trx, rows, arrivalsOnly = false) => {
    const keyed = rows.filter((row) => row.key !== null);
    if (keyed.length === 0) return new Set();
    const { rows: moved } = await trx(
      sql<{ old: string }>`
      WITH given AS (
        SELECT seq, msg_key FROM unnest(${keyed.map((r) => r.seq)}::int8[], ${keyed.map((r) => r.key)}::text[]) AS r(seq, msg_key)
      ),
      -- A key is late when one of its given rows has a lower seq than a message of the key already in its queue
      -- (its head, read from the top down as in promote, or its last waiting message). Then all its given rows go
      -- behind the queue, in seq order: moving only the lower ones would put them behind given rows that were
      -- enqueued after they committed.
      late_keys AS (
        SELECT l.msg_key FROM (SELECT msg_key, min(seq) AS low FROM given GROUP BY msg_key) AS l
        WHERE (SELECT h.seq FROM ${table} AS h WHERE h.msg_key = l.msg_key AND h.ready
                 AND h.seq NOT IN (SELECT seq FROM given) ORDER BY h.seq DESC LIMIT 1) > l.low
           OR (SELECT w.seq FROM ${table} AS w WHERE w.msg_key = l.msg_key AND w.state = 'pending' AND w.ready IS NOT TRUE
                 AND w.ready = false AND w.seq NOT IN (SELECT seq FROM given) ORDER BY w.seq DESC LIMIT 1) > l.low
      ),
      moved AS (
        DELETE FROM ${table} AS t USING given JOIN late_keys USING (msg_key)
        WHERE t.seq = given.seq ${arrivalsOnly ? sql`AND t.ready IS NULL` : sql``}
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

  /** Arrivals of these keys go behind their queues if late, and the keys without a head get one. */
  const sequenceArrivals = async (trx: SqlExecutor, keys: Set<string>, rows: readonly { seq: string; key: string | null }[]) => {
    const late = await renumberLate(trx, rows, true);
    return promote(
      trx,
      keys,
      rows.map((row) => row.seq).filter((seq) => !late.has(seq)),
    );
  };

  return {
    lock,
    promote,
    renumberLate,
    async sequenceKeys(trx, keys) {
      const keyList = [...new Set(keys)];
      if (keyList.length === 0) return;
      const { rows } = await trx(
        sql`
        SELECT a.seq::text AS seq, a.msg_key FROM ${table} AS a
        WHERE a.msg_key = ANY(${keyList}::text[]) AND a.state = 'pending' AND a.ready IS NOT TRUE AND a.ready IS NULL
        ORDER BY a.seq`.compile(compiler),
      );
      await sequenceArrivals(
        trx,
        new Set(keyList),
        rows.map((row) => ({ seq: row.seq as string, key: row.msg_key as string })),
      );
    },
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
      const { rows: found } = await trx(
        sql`
        WITH batch AS (
          SELECT a.seq, a.msg_key FROM ${table} AS a
          WHERE a.ready IS NULL ${from === null ? sql`` : sql`AND a.seq > ${from}::int8`}
          ORDER BY a.seq LIMIT ${limit}
        )
        SELECT seq::text AS seq, msg_key, true AS scanned FROM batch
        ${
          from === null
            ? sql``
            : // The batch's keys' arrivals behind the cursor (late commits the cursor passed): a key's arrivals are
              // sequenced together, or one that committed before another's enqueue could go behind it.
              sql`UNION ALL
        SELECT behind.seq::text, behind.msg_key, false FROM (SELECT DISTINCT msg_key FROM batch WHERE msg_key IS NOT NULL) AS k
        CROSS JOIN LATERAL (
          SELECT b.seq, b.msg_key FROM ${table} AS b
          WHERE b.msg_key = k.msg_key AND b.state = 'pending' AND b.ready IS NOT TRUE AND b.ready IS NULL AND b.seq <= ${from}::int8
        ) AS behind`
        }`.compile(compiler),
      );
      const scanned = found.filter((row) => row.scanned === true);
      cursor.scanned(scanned.length, limit);
      if (scanned.length === 0) return 0;
      cursor.advance(scanned.reduce((last, row) => (BigInt(row.seq as string) > BigInt(last) ? (row.seq as string) : last), '0'));
      const rows = found.sort((a, b) => (BigInt(a.seq as string) < BigInt(b.seq as string) ? -1 : 1));
      // A keyless arrival (written by an older producer) simply becomes ready.
      const keys = new Set(rows.flatMap((row) => (row.msg_key === null ? [] : [row.msg_key as string])));
      await lock(trx, keys);
      // Arrivals of a key with a later message already in its queue (they committed after it was sequenced) go
      // behind the queue, renumbered: any committed message may follow all those sequenced before it was visible.
      const { promoted } = await sequenceArrivals(
        trx,
        keys,
        rows.map((row) => ({ seq: row.seq as string, key: row.msg_key as string | null })),
      );
      return promoted;
    },
  };
}
