import { sql, type RawBuilder } from 'kysely';
import { lockId, lockOrder } from '../key-lock-id.js';
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
   * Gives each key without a head its head: the first of its waiting messages or of the given arrivals, and puts
   * the other arrivals behind it. `finish` (a DELETE or UPDATE ... RETURNING seq of heads this relay is done
   * with) runs in the same statement, and the rows it returns no longer count as heads. Returns the seqs finished
   * and how many heads were made.
   */
  promote(
    trx: SqlExecutor,
    keys: ReadonlyMap<string, string | null>,
    arrivals: readonly string[],
    finish?: RawBuilder<unknown>,
  ): Promise<{ finished: string[]; promoted: number }>;
  /** Sequences up to `limit` arrivals, oldest first (skipping those another relay is sequencing). Returns heads made. */
  sequence(trx: SqlExecutor, limit: number): Promise<number>;
}

export function postgresHeads(names: TableNames): Heads {
  const table = qualified(names, names.table);
  const classId = lockId(`txoutbox:${names.schema ?? ''}.${names.table}`);

  const lock: Heads['lock'] = async (trx, keys) => {
    const ids = lockOrder(keys, lockId, (a, b) => a - b);
    if (ids.length === 0) return;
    await trx(
      sql`SELECT count(pg_advisory_xact_lock(${classId}::int4, id)) FROM (SELECT id FROM unnest(${ids}::int4[]) AS id ORDER BY id) AS ordered`.compile(
        compiler,
      ),
    );
  };

  const promote: Heads['promote'] = async (trx, keys, arrivals, finish) => {
    const gone = finish ?? sql`SELECT NULL::int8 AS seq WHERE false`;
    const { rows } = await trx(
      sql<{ seq: string; what: 'finished' | 'promoted' }>`
      WITH gone AS (${gone}),
      candidates AS (
        SELECT least(k.first_arrival, (
          SELECT w.seq FROM ${table} AS w
          WHERE w.msg_key = k.msg_key AND w.state = 'pending' AND w.ready = false AND w.seq NOT IN (SELECT seq FROM gone)
          ORDER BY w.seq LIMIT 1)) AS seq
        FROM unnest(${[...keys.keys()]}::text[], ${[...keys.values()]}::int8[]) AS k(msg_key, first_arrival)
        WHERE NOT EXISTS (
          SELECT 1 FROM ${table} AS h WHERE h.msg_key = k.msg_key AND h.ready AND h.seq NOT IN (SELECT seq FROM gone))
      ),
      heads AS (SELECT seq FROM candidates WHERE seq IS NOT NULL),
      promoted AS (
        UPDATE ${table} AS t SET ready = t.msg_key IS NULL OR t.seq IN (SELECT seq FROM heads)
        WHERE t.seq = ANY(${arrivals}::int8[]) OR t.seq IN (SELECT seq FROM heads)
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

  return {
    lock,
    promote,
    async sequence(trx, limit) {
      const { rows } = await trx(
        sql`
        SELECT a.seq::text AS seq, a.msg_key FROM ${table} AS a
        WHERE a.ready IS NULL ORDER BY a.seq LIMIT ${limit} FOR UPDATE SKIP LOCKED`.compile(compiler),
      );
      if (rows.length === 0) return 0;
      const firstArrival = new Map<string, string | null>();
      for (const { seq, msg_key: key } of rows as { seq: string; msg_key: string | null }[]) {
        // A keyless arrival (written by an older producer) simply becomes ready.
        if (key !== null && !firstArrival.has(key)) firstArrival.set(key, seq);
      }
      await lock(trx, firstArrival.keys());
      const { promoted } = await promote(
        trx,
        firstArrival,
        rows.map((row) => row.seq as string),
      );
      return promoted;
    },
  };
}
