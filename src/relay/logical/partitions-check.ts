import { sql, type Kysely } from 'kysely';
import { TxOutboxError } from '../../errors.js';
import type { TableNames } from '../../dialects/identifiers.js';
import type { LogicalNames } from './names.js';

/**
 * The relay's `partitions` is not the number its publications were made for: each publication filters by a hash
 * modulo its own number, so the rows of every partition the relay has no slot for would never be published.
 */
export class LogicalPartitionsMismatchError extends TxOutboxError {
  constructor(
    /** The relay's `partitions`. */
    readonly partitions: number,
    /** The number of partitions the publications were made for. */
    readonly publishedFor: number,
    message: string,
  ) {
    super(message, 'TXOUTBOX_LOGICAL_PARTITIONS');
  }
}

/** The most partitions a relay may have (names.ts): the publication names looked for. */
const MAX_PARTITIONS = 64;

/**
 * Refuses a relay whose partitions differ from its publications'. The number they were made for is read from
 * their row filters (`% N`, PostgreSQL 15+), or else from their names (`<publication>_0` … `_<N-1>`, or the
 * plain name for one). Missing publications are not a mismatch: the stream says so on its own.
 */
export async function assertPartitionsMatch<DB>(
  db: Kysely<DB>,
  table: TableNames,
  logical: LogicalNames,
  base: string,
): Promise<void> {
  const candidates = [base, ...Array.from({ length: MAX_PARTITIONS }, (_, i) => `${base}_${i}`)];
  const { rows: version } = await sql<{ v: number }>`SELECT current_setting('server_version_num')::int AS v`.execute(db);
  const filters = (version[0]?.v ?? 0) >= 150_000;
  const { rows } = filters
    ? await sql<{ pubname: string; rowfilter: string | null; has_table: boolean }>`
        SELECT p.pubname, t.rowfilter, t.tablename IS NOT NULL AS has_table FROM pg_publication p
        LEFT JOIN pg_publication_tables t ON t.pubname = p.pubname AND t.tablename = ${table.table}
             AND t.schemaname = coalesce(${table.schema}::text, current_schema())
        WHERE p.pubname = ANY(${candidates}::text[])`.execute(db)
    : await sql<{ pubname: string; rowfilter: null; has_table: boolean }>`
        SELECT pubname, NULL AS rowfilter, false AS has_table FROM pg_publication WHERE pubname = ANY(${candidates}::text[])`.execute(
        db,
      );
  const existing = new Map(rows.map((row) => [row.pubname, row]));

  let publishedFor: number | null = null;
  // The filter of a publication this relay streams from decides which rows reach it.
  for (const publication of logical.publications) {
    const found = existing.get(publication);
    // Unknown, or a publication of other tables: its name alone tells (below).
    if (found === undefined || !found.has_table) continue;
    const modulus = /%\s*(\d+)\s*\)\s*=\s*\d+/.exec(found.rowfilter ?? '')?.[1];
    const made = modulus === undefined ? 1 : Number(modulus);
    if (made !== logical.partitions) publishedFor = made;
  }
  if (publishedFor === null) {
    let named = 0;
    while (existing.has(`${base}_${named}`)) named++;
    if (named === 0 && existing.has(base)) named = 1;
    if (named > 0 && named !== logical.partitions) publishedFor = named;
  }
  if (publishedFor === null) return;

  const where = table.schema === null ? table.table : `${table.schema}.${table.table}`;
  const made = publishedFor === 1 ? [base] : Array.from({ length: publishedFor }, (_, i) => `${base}_${i}`);
  throw new LogicalPartitionsMismatchError(
    logical.partitions,
    publishedFor,
    `This relay was started with partitions: ${logical.partitions}, but the publications of ${where} were made for ` +
      `${publishedFor} partition${publishedFor === 1 ? '' : 's'} (${made.join(', ')}): streamed that way, the rows of ` +
      `some partitions would never be published. Start every relay of this table with partitions: ${publishedFor}; ` +
      `or, to change the number, stop the relays, DROP PUBLICATION ${made.join(', ')}, migrate again with ` +
      `partitions: ${logical.partitions} (migrate(db, { publication, partitions }) or txoutbox migrate), and drop the ` +
      'slots no relay will stream any more (txoutbox slot drop, or pg_drop_replication_slot), which keep WAL otherwise.',
  );
}
