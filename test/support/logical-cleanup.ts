import { sql, type Kysely } from 'kysely';
import { waitFor } from './relay-helpers.js';

/**
 * Replication slots and publications outlive schemas, and a slot left behind keeps WAL on the server for ever: drops
 * every one whose name starts with `prefix`, once no relay streams from it (a stopped relay's connection may take a
 * moment to go).
 */
export async function dropSlotsAndPublications(db: Kysely<any>, prefix: string): Promise<void> {
  const pattern = `${prefix}%`;
  await waitFor(
    async () =>
      (await sql`SELECT 1 FROM pg_replication_slots WHERE slot_name LIKE ${pattern} AND active`.execute(db)).rows.length === 0,
    15_000,
    'the slots to be released',
  ).catch(() => undefined);
  await sql`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE ${pattern} AND NOT active`.execute(db);
  const { rows } = await sql<{ pubname: string }>`SELECT pubname FROM pg_publication WHERE pubname LIKE ${pattern}`.execute(db);
  for (const { pubname } of rows) await sql`DROP PUBLICATION ${sql.id(pubname)}`.execute(db);
}
