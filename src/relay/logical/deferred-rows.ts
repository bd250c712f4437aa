import { sql, type Kysely, type RawBuilder } from 'kysely';
import { SchemaError } from '../../errors.js';
import type { TableNames } from '../../dialects/identifiers.js';
import type { StreamedRow } from './slot-stream.js';

/**
 * Rows the logical relay handed back to the table (see migration 005): a streamed message that cannot go out yet
 * is written down with its commit position and due time instead of waiting in memory, so the slot is confirmed
 * past it at once. From here they go out as the polling relay's rows do: claimed when due, with a lease and an
 * attempt counted first (a crash while publishing one is counted, so a message that kills relays goes dead), and
 * of each key only the first deferred row in commit order.
 */
export class DeferredRows {
  constructor(
    private readonly db: Kysely<unknown>,
    private readonly names: TableNames,
    /** The partition's share of the rows (SQL over the table's own columns). */
    private readonly inPartition: RawBuilder<unknown>,
  ) {}

  /** A clear error, before any row is streamed, when the table predates migration 005. */
  async assertMigrated(): Promise<void> {
    const { rows } = await sql`
      SELECT 1 FROM information_schema.columns
      WHERE table_schema = ${this.names.schema ?? sql`current_schema()`} AND table_name = ${this.names.table} AND column_name = 'deferred_lsn'`.execute(
      this.db,
    );
    if (rows.length === 0)
      throw new SchemaError(`The outbox table ${this.names.table} has no deferred_lsn column (migration 005_logical_deferred).`);
  }

  /** The keys with deferred rows: a new tenure hands their streamed rows to the table too, behind them. */
  async keys(): Promise<Set<string>> {
    const { rows } = await sql<{ msg_key: string }>`
      SELECT DISTINCT msg_key FROM ${this.table()}
      WHERE state = 'pending' AND deferred_lsn IS NOT NULL AND msg_key IS NOT NULL AND ${this.inPartition}`.execute(this.db);
    return new Set(rows.map((row) => row.msg_key));
  }

  /** Whether the key has a deferred row left (pending). */
  async has(key: string): Promise<boolean> {
    const { rows } = await sql`
      SELECT 1 FROM ${this.table()} WHERE msg_key = ${key} AND state = 'pending' AND deferred_lsn IS NOT NULL LIMIT 1`.execute(this.db);
    return rows.length > 0;
  }

  /**
   * Claims up to `limit` due rows that may go now (keyless ones, and each key's first deferred row): counts an
   * attempt and leases each to `owner` for `leaseMs` (it is not due again meanwhile, and is again if this relay dies).
   */
  async claim(limit: number, leaseMs: number, owner: string): Promise<(StreamedRow & { attempts: number })[]> {
    const t = this.table();
    const { rows } = await sql<Record<string, unknown>>`
      WITH due AS (
        SELECT d.seq FROM ${t} AS d
        WHERE d.state = 'pending' AND d.deferred_lsn IS NOT NULL AND d.next_attempt_at <= now() AND ${this.inPartition}
          AND (d.msg_key IS NULL OR NOT EXISTS (
            SELECT 1 FROM ${t} AS e
            WHERE e.msg_key = d.msg_key AND e.state = 'pending' AND e.deferred_lsn IS NOT NULL
              AND (e.deferred_lsn, e.seq) < (d.deferred_lsn, d.seq)))
        ORDER BY d.next_attempt_at, d.seq LIMIT ${limit}
        FOR UPDATE OF d SKIP LOCKED
      )
      UPDATE ${t} AS r SET attempts = r.attempts + 1, next_attempt_at = now() + ${leaseMs} * interval '1 millisecond',
             lease_owner = ${owner}, lease_until = now() + ${leaseMs} * interval '1 millisecond'
      FROM due WHERE r.seq = due.seq
      RETURNING r.seq, r.id, r.topic, r.msg_key, r.payload, r.content_type, r.headers, r.attempts, r.next_attempt_at, r.created_at`.execute(
      this.db,
    );
    // Given out now: not before now (next_attempt_at holds the lease's end).
    return rows
      .map((row) => ({ ...rowFromTable(row), notBefore: new Date() }))
      .sort((a, b) => (BigInt(a.seq) < BigInt(b.seq) ? -1 : 1));
  }

  /**
   * Gives back the rows this relay's earlier tenures of the slot claimed and never finished (their tenure ended:
   * nothing of them is in flight any more), so they are due now rather than when their leases run out.
   */
  async releaseLeases(ownerPrefix: string): Promise<void> {
    await sql`
      UPDATE ${this.table()} SET next_attempt_at = now(), lease_owner = NULL, lease_until = NULL
      WHERE state = 'pending' AND deferred_lsn IS NOT NULL AND lease_owner LIKE ${`${ownerPrefix}%`} AND ${this.inPartition}`.execute(this.db);
  }

  /** When the next row that may go comes due (a leased one included: it is due again if its relay died); null if none. */
  async nextDue(): Promise<Date | null> {
    const t = this.table();
    const { rows } = await sql<{ due: Date | null }>`
      SELECT min(d.next_attempt_at) AS due FROM ${t} AS d
      WHERE d.state = 'pending' AND d.deferred_lsn IS NOT NULL AND ${this.inPartition}
        AND (d.msg_key IS NULL OR NOT EXISTS (
          SELECT 1 FROM ${t} AS e
          WHERE e.msg_key = d.msg_key AND e.state = 'pending' AND e.deferred_lsn IS NOT NULL
            AND (e.deferred_lsn, e.seq) < (d.deferred_lsn, d.seq)))`.execute(this.db);
    return rows[0]?.due ?? null;
  }

  private table() {
    return this.names.schema === null ? sql.id(this.names.table) : sql.id(this.names.schema, this.names.table);
  }
}

/** A row of the outbox table as the relay handles a streamed one. */
export function rowFromTable(row: Record<string, unknown>): StreamedRow {
  return {
    seq: String(row.seq),
    id: String(row.id),
    topic: String(row.topic),
    key: row.msg_key === null ? null : String(row.msg_key),
    payload: row.payload as Buffer,
    contentType: String(row.content_type),
    headers: row.headers as Record<string, string>,
    attempts: Number(row.attempts),
    notBefore: row.next_attempt_at as Date,
    createdAt: row.created_at as Date,
  };
}
