import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRelay, LogicalPartitionsMismatchError, migrate, MemoryBroker } from '../../src/index.js';
import { createHarness, type Harness } from '../support/harness.js';
import { dropSlotsAndPublications } from '../support/logical-cleanup.js';

/**
 * Each publication filters its partition's rows by a hash of the key modulo the number of partitions it was made
 * for. A relay started with another number streams with the wrong filters: rows of the partitions it has no slot
 * for are never published. It must refuse at start, naming both numbers.
 */
describe('a logical relay whose partitions differ from its publications', () => {
  let h: Harness;

  beforeAll(async () => {
    h = await createHarness('postgres');
  });
  afterAll(async () => {
    if (h === undefined) return;
    await dropSlotsAndPublications(h.db, h.schema);
    await h.destroy();
  }, 60_000);

  async function startWith(publishedFor: number, partitions: number, name: string) {
    const publication = `${h.schema}_${name}`;
    await migrate(h.db, { dialect: 'postgres', schema: h.schema, publication, partitions: publishedFor });
    const relay = createRelay({
      db: h.db,
      dialect: 'postgres',
      schema: h.schema,
      broker: new MemoryBroker(),
      mode: 'logical',
      slot: `${h.schema}_${name}_slot`,
      publication,
      partitions,
    });
    try {
      await relay.start();
      return null;
    } catch (error) {
      return error;
    } finally {
      await relay.stop({ drainMs: 0 });
    }
  }

  const slotsOf = async (name: string) =>
    (await sql`SELECT 1 FROM pg_replication_slots WHERE slot_name LIKE ${`${h.schema}_${name}_slot%`}`.execute(h.db)).rows.length;

  for (const [publishedFor, partitions] of [
    [4, 2],
    [2, 4],
    [1, 2],
    [3, 1],
  ] as const) {
    it(`refuses to start with partitions: ${partitions} on publications made for ${publishedFor}, and runs nothing`, async () => {
      const name = `p${publishedFor}r${partitions}`;
      const error = await startWith(publishedFor, partitions, name);
      expect(error, 'start() must refuse').not.toBeNull();
      expect(error).toBeInstanceOf(LogicalPartitionsMismatchError);
      const mismatch = error as LogicalPartitionsMismatchError;
      expect(mismatch.code).toBe('TXOUTBOX_LOGICAL_PARTITIONS');
      expect(mismatch.partitions).toBe(partitions);
      expect(mismatch.publishedFor).toBe(publishedFor);
      expect(mismatch.message).toContain(`partitions: ${partitions}`);
      expect(mismatch.message).toContain(`made for ${publishedFor} partition`);
      // What to do: start with the publications' number, or make them again with the relay's.
      expect(mismatch.message).toContain(`partitions: ${publishedFor}`);
      expect(mismatch.message).toMatch(/DROP PUBLICATION/);
      // Refused before any slot was made or streamed.
      expect(await slotsOf(name)).toBe(0);
    }, 60_000);
  }

  it('starts when the numbers match', async () => {
    expect(await startWith(2, 2, 'match')).toBeNull();
  }, 60_000);
});
