import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRelay, migrate, MemoryBroker, type LogicalRelay } from '../../src/index.js';
import { createHarness, type Harness } from '../support/harness.js';
import { dropSlotsAndPublications } from '../support/logical-cleanup.js';
import { waitFor } from '../support/relay-helpers.js';

/** retainSentMs in mode logical: sent rows are kept as 'sent' for the retention, then deleted, as in the polling relay. */
describe('the logical relay with retainSentMs', () => {
  let h: Harness;
  let relay: LogicalRelay | null = null;

  beforeAll(async () => {
    h = await createHarness('postgres');
    await migrate(h.db, { dialect: 'postgres', schema: h.schema, publication: `${h.schema}_pub` });
  });
  afterAll(async () => {
    await relay?.stop({ drainMs: 0 });
    if (h === undefined) return;
    await dropSlotsAndPublications(h.db, h.schema);
    await h.destroy();
  }, 60_000);

  it('keeps sent rows for the retention, then deletes them', async () => {
    const retainSentMs = 1500;
    const broker = new MemoryBroker();
    relay = createRelay({
      db: h.db,
      dialect: 'postgres',
      schema: h.schema,
      broker,
      mode: 'logical',
      slot: `${h.schema}_slot`,
      publication: `${h.schema}_pub`,
      retainSentMs,
      cleanupIntervalMs: 50,
    });
    await relay.start();
    const outbox = h.createOutbox({ mode: 'logical' });
    await h.db.transaction().execute((trx) =>
      outbox.enqueue(
        trx,
        Array.from({ length: 20 }, (_, n) => ({ id: `m${n}`, topic: 'orders', key: `k${n % 4}`, payload: n })),
      ),
    );
    await waitFor(() => broker.received().length === 20, 15_000, 'the 20 messages to be published');

    const table = sql.id(h.schema, 'txoutbox');
    const counts = async () =>
      (
        await sql<{ sent: number; other: number; newest: Date | null }>`
          SELECT count(*) FILTER (WHERE state = 'sent')::int AS sent, count(*) FILTER (WHERE state <> 'sent')::int AS other,
                 max(sent_at) AS newest
          FROM ${table}`.execute(h.db)
      ).rows[0]!;
    // Marked sent, and kept: every row is there as 'sent' once its mark is written.
    await waitFor(async () => (await counts()).sent === 20, 15_000, 'the 20 rows to be kept as sent');
    const kept = await counts();
    expect(kept.other).toBe(0);
    const newest = kept.newest!;
    // Deleted once the retention has passed, not before (the database's clock).
    await waitFor(async () => (await counts()).sent === 0, 20_000, 'the sent rows to be deleted after the retention');
    const deletedBy = await h.now();
    expect(deletedBy.getTime() - newest.getTime()).toBeGreaterThanOrEqual(retainSentMs);
    expect(broker.received()).toHaveLength(20);
  }, 60_000);
});
