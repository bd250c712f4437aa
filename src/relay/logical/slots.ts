import { sql, type Kysely } from 'kysely';
import { TxOutboxError } from '../../errors.js';
import type { TableNames } from '../../dialects/identifiers.js';
import { partitionFilter, type LogicalNames } from './names.js';

/** PostgreSQL is not set up for logical decoding; the message says what to change. */
export class LogicalDecodingUnavailableError extends TxOutboxError {
  constructor(message: string) {
    super(message, 'TXOUTBOX_LOGICAL_UNAVAILABLE');
  }
}

const DUPLICATE_OBJECT = '42710';
const codeOf = (error: unknown) => (error as { code?: unknown } | null)?.code;
const qualifiedTable = (names: TableNames) =>
  names.schema === null ? sql.id(names.table) : sql.id(names.schema, names.table);

/** Refuses clearly, instead of hanging or failing later, when the server cannot decode its WAL. */
export async function assertLogicalDecoding<DB>(db: Kysely<DB>): Promise<void> {
  const { rows } = await sql<{ wal_level: string }>`SELECT current_setting('wal_level') AS wal_level`.execute(db);
  const level = rows[0]?.wal_level;
  if (level !== 'logical') {
    throw new LogicalDecodingUnavailableError(
      `The logical relay needs wal_level = logical, but this server has wal_level = ${level}. ` +
        "Run ALTER SYSTEM SET wal_level = 'logical' and restart PostgreSQL (on a managed service, turn on its " +
        'logical replication setting), or use the polling relay (the default mode).',
    );
  }
}

/** Creates the publications of the outbox table (one per partition, each with its row filter), unless they exist. */
export async function createPublications<DB>(db: Kysely<DB>, names: TableNames, logical: LogicalNames): Promise<string[]> {
  const created: string[] = [];
  for (const [index, publication] of logical.publications.entries()) {
    const { rows } = await sql`SELECT 1 FROM pg_publication WHERE pubname = ${publication}`.execute(db);
    if (rows.length > 0) continue;
    const filter = logical.partitions === 1 ? sql`` : sql` WHERE (${sql.raw(partitionFilter(index, logical.partitions))})`;
    try {
      // Inserts only: a row's later updates and its deletion after sending are the relay's own bookkeeping.
      await sql`CREATE PUBLICATION ${sql.id(publication)} FOR TABLE ${qualifiedTable(names)}${filter} WITH (publish = 'insert')`.execute(
        db,
      );
      created.push(publication);
    } catch (error) {
      if (codeOf(error) !== DUPLICATE_OBJECT) throw error;
    }
  }
  return created;
}

export async function dropPublications<DB>(db: Kysely<DB>, logical: LogicalNames): Promise<void> {
  for (const publication of logical.publications) await sql`DROP PUBLICATION IF EXISTS ${sql.id(publication)}`.execute(db);
}

const slotsTable = (names: TableNames) =>
  names.schema === null ? sql.id(`${names.table}_slots`) : sql.id(names.schema, `${names.table}_slots`);

/**
 * Creates the slot (pgoutput) unless it exists, and records the highest seq the table holds right after: rows up
 * to it may have committed before the slot could stream them (see backfillThrough). Says whether it created the
 * slot. Another relay creating it at the same moment is fine.
 */
export async function ensureSlot<DB>(db: Kysely<DB>, slot: string, names: TableNames): Promise<boolean> {
  const { rows } = await sql`SELECT 1 FROM pg_replication_slots WHERE slot_name = ${slot}`.execute(db);
  let created = false;
  if (rows.length === 0) {
    try {
      await sql`SELECT pg_create_logical_replication_slot(${slot}, 'pgoutput')`.execute(db);
      created = true;
    } catch (error) {
      if (codeOf(error) === '55000') throw new LogicalDecodingUnavailableError(`Could not create slot ${slot}: ${String(error)}`);
      if (codeOf(error) !== DUPLICATE_OBJECT) throw error;
    }
  }
  // A new slot replaces what an old one of the same name recorded, and no relay has streamed it yet (a clean
  // start). A slot made elsewhere may still be being created (by hand, or by a relay killed while it waited):
  // its boundary is recorded by the relay that first streams it (recordBackfillBoundary), once it is consistent.
  if (created) {
    await sql`
      INSERT INTO ${slotsTable(names)} (slot, backfill_through, clean_stop)
      SELECT ${slot}, coalesce(max(seq), 0), true FROM ${qualifiedTable(names)}
      ON CONFLICT (slot) DO UPDATE SET backfill_through = excluded.backfill_through, clean_stop = true`.execute(db);
  }
  return created;
}

/**
 * Called by the relay that now streams the slot: says whether the relay before it stopped cleanly (nothing in
 * flight), and records that this one has not (yet).
 */
export async function takeOverSlot<DB>(db: Kysely<DB>, slot: string, names: TableNames, holder: string): Promise<boolean> {
  const { rows } = await sql<{ clean: boolean }>`
    WITH before AS (SELECT clean_stop FROM ${slotsTable(names)} WHERE slot = ${slot} FOR UPDATE)
    UPDATE ${slotsTable(names)} SET clean_stop = false, holder = ${holder} FROM before WHERE slot = ${slot}
    RETURNING before.clean_stop AS clean`.execute(db);
  return rows[0]?.clean === true;
}

/** Records that the relay holding the slot stops with nothing in flight and every mark written. */
export async function recordCleanStop<DB>(db: Kysely<DB>, slot: string, names: TableNames, holder: string): Promise<void> {
  await sql`UPDATE ${slotsTable(names)} SET clean_stop = true WHERE slot = ${slot} AND holder = ${holder}`.execute(db);
}

/**
 * For a slot this relay streams but did not create (no record yet): the highest seq the table holds now. The slot
 * is consistent once it streams, so everything committed after this read reaches the stream.
 */
export async function recordBackfillBoundary<DB>(db: Kysely<DB>, slot: string, names: TableNames): Promise<void> {
  await sql`
    INSERT INTO ${slotsTable(names)} (slot, backfill_through)
    SELECT ${slot}, coalesce(max(seq), 0) FROM ${qualifiedTable(names)}
    ON CONFLICT (slot) DO NOTHING`.execute(db);
}

/** The highest seq a relay taking the slot must look for in the table: past it, the slot streams every row. */
export async function backfillThrough<DB>(db: Kysely<DB>, slot: string, names: TableNames): Promise<string> {
  const { rows } = await sql<{ through: string }>`
    SELECT backfill_through::text AS through FROM ${slotsTable(names)} WHERE slot = ${slot}`.execute(db);
  return rows[0]?.through ?? '9223372036854775807';
}

export async function dropSlot<DB>(db: Kysely<DB>, slot: string, names: TableNames): Promise<boolean> {
  const { rows } = await sql`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = ${slot}`.execute(db);
  await sql`DELETE FROM ${slotsTable(names)} WHERE slot = ${slot}`.execute(db);
  return rows.length > 0;
}

export interface SlotStatus {
  slot: string;
  exists: boolean;
  /** A relay is streaming from it (the server process that serves it). */
  active: boolean;
  activePid: number | null;
  confirmedFlushLsn: string | null;
  /** WAL the server keeps for this slot, in bytes (from its restart position to the current one). */
  retainedBytes: number | null;
  /** Bytes written since the last position the relay confirmed: what it has yet to relay, at most. */
  lagBytes: number | null;
  /** 'reserved', 'extended', 'unreserved' or 'lost' (max_slot_wal_keep_size passed). */
  walStatus: string | null;
}

export async function slotStatus<DB>(db: Kysely<DB>, slot: string): Promise<SlotStatus> {
  const { rows } = await sql<{
    active: boolean;
    active_pid: number | null;
    confirmed_flush_lsn: string | null;
    retained: string | null;
    lag: string | null;
    wal_status: string | null;
  }>`
    SELECT active, active_pid, confirmed_flush_lsn::text AS confirmed_flush_lsn, wal_status,
           pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8::text AS retained,
           pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8::text AS lag
    FROM pg_replication_slots WHERE slot_name = ${slot}`.execute(db);
  const row = rows[0];
  if (row === undefined) {
    return { slot, exists: false, active: false, activePid: null, confirmedFlushLsn: null, retainedBytes: null, lagBytes: null, walStatus: null };
  }
  return {
    slot,
    exists: true,
    active: row.active,
    activePid: row.active_pid,
    confirmedFlushLsn: row.confirmed_flush_lsn,
    retainedBytes: row.retained === null ? null : Number(row.retained),
    lagBytes: row.lag === null ? null : Math.max(0, Number(row.lag)),
    walStatus: row.wal_status,
  };
}
