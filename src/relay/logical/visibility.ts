import { sql, type Kysely, type RawBuilder } from 'kysely';

/**
 * Whether streamed transactions are visible yet. PostgreSQL hands a transaction to a logical slot once its commit
 * record is flushed, before the committing backend leaves the proc array, i.e. before other sessions see its rows;
 * with a synchronous standby that window lasts the whole wait for the standby. Until a transaction is visible, "its
 * row is not in the table" means nothing, and its message must not go out (the producer's COMMIT has not returned).
 * pg_xact_status says 'committed' already during that window, so the snapshot is asked instead.
 *
 * Visibility only grows: a transaction visible to one statement's snapshot is visible to every later snapshot, so a
 * statement run after this answer sees its rows (unless something removed them).
 */

/**
 * Of these transaction ids (32 bits, as pgoutput's BEGIN carries them), the ones visible to the snapshot of the
 * statement that asks. One statement for any number of ids.
 *
 * A 32-bit xid is made a full xid8 with the epoch of the snapshot's xmax, taking the candidate nearest to xmax: the
 * server keeps every live xid within 2^31 of the next one, so an id numerically above xmax's low half may be from
 * the epoch before (xmax just wrapped) or just above xmax (a transaction still finishing), and the nearer reading is
 * the right one.
 */
export async function visibleTransactions(db: Kysely<unknown>, xids: readonly number[]): Promise<Set<number>> {
  if (xids.length === 0) return new Set();
  const { rows } = await sql<{ xid: string }>`
    SELECT x.xid::text AS xid
    FROM (SELECT pg_current_snapshot() AS snap) AS s
    CROSS JOIN LATERAL (SELECT pg_snapshot_xmax(s.snap)::text::int8 AS xmax) AS m
    CROSS JOIN LATERAL unnest(${[...new Set(xids)]}::int8[]) AS x(xid)
    WHERE pg_visible_in_snapshot((${nearestFullXid(sql`x.xid`, sql`m.xmax`)})::text::xid8, s.snap)`.execute(db);
  return new Set(rows.map((row) => Number(row.xid)));
}

/**
 * SQL (int8) for the full transaction id whose low 32 bits are `xid` (int8) and which lies nearest to `xmax` (int8,
 * a recent full id): in xmax's epoch, or the one before or after when that is nearer.
 */
export function nearestFullXid(xid: RawBuilder<unknown>, xmax: RawBuilder<unknown>): RawBuilder<unknown> {
  const near = sql`(((${xmax}) >> 32 << 32) + (${xid}))`;
  return sql`CASE
    WHEN ${near} - (${xmax}) > 2147483648 AND ${near} >= 4294967296 THEN ${near} - 4294967296
    WHEN (${xmax}) - ${near} > 2147483648 THEN ${near} + 4294967296
    ELSE ${near}
  END`;
}
