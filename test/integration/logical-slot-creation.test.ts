import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createRelay, migrate, MemoryBroker, type LogicalRelay } from '../../src/index.js';
import { createHarness, type Harness } from '../support/harness.js';
import { dropSlotsAndPublications } from '../support/logical-cleanup.js';
import { waitFor } from '../support/relay-helpers.js';

/**
 * Found by the chaos suite: a relay SIGKILLed while its pg_create_logical_replication_slot waited for open
 * transactions left the server to finish creating the slot, and the other relay had meanwhile recorded the slot's
 * backfill boundary (the table's max seq while the slot was still being created). Every message committed during the
 * creation was then neither streamed by the slot (it commits before the slot's consistent point) nor read back from
 * the table (past the recorded boundary): 2000 of 2000 messages never published. Here the creator is a plain
 * session (as a slot made by hand, or a killed relay's server process, is) and never writes the boundary itself.
 */
describe('a slot another session is still creating', () => {
  let h: Harness;
  let relay: LogicalRelay | null = null;
  const clients: pg.Client[] = [];

  beforeAll(async () => {
    h = await createHarness('postgres');
    await migrate(h.db, { dialect: 'postgres', schema: h.schema, publication: `${h.schema}_pub` });
  });
  afterAll(async () => {
    await relay?.stop({ drainMs: 0 });
    for (const client of clients) await client.end().catch(() => undefined);
    if (h !== undefined) await dropSlotsAndPublications(h.db, h.schema);
    await h?.destroy();
  }, 60_000);

  const client = async () => {
    const created = new pg.Client({ connectionString: inject('pgUrl') });
    created.on('error', () => undefined);
    await created.connect();
    clients.push(created);
    return created;
  };

  it('publishes the messages committed while the slot was being created', async () => {
    const slot = `${h.schema}_slot`;
    // An open transaction with an xid: creating a slot waits for it to end.
    const open = await client();
    await open.query('BEGIN');
    await open.query('SELECT txid_current()');
    const creator = await client();
    const creating = creator.query(`SELECT pg_create_logical_replication_slot('${slot}', 'pgoutput')`);
    await waitFor(
      async () => (await sql`SELECT 1 FROM pg_replication_slots WHERE slot_name = ${slot}`.execute(h.db)).rows.length > 0,
      10_000,
      'the slot to be listed while it is created',
    );

    const broker = new MemoryBroker();
    relay = createRelay({
      db: h.db,
      dialect: 'postgres',
      schema: h.schema,
      broker,
      mode: 'logical',
      slot,
      publication: `${h.schema}_pub`,
      standbyRetryMs: 100,
    });
    await relay.start();
    // Wait for the relay's first look at the slot (it records the backfill boundary then), and commit meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const outbox = h.createOutbox({ mode: 'logical' });
    await h.db.transaction().execute((trx) =>
      outbox.enqueue(trx, [1, 2, 3].map((n) => ({ id: `during-${n}`, topic: 'orders', key: 'A', payload: n }))),
    );

    await open.query('COMMIT');
    await creating;
    await waitFor(() => broker.received().length >= 3, 15_000, 'the messages committed during the creation').catch(() => undefined);
    expect(broker.received().map((m) => m.id)).toEqual(['during-1', 'during-2', 'during-3']);
  }, 60_000);
});
