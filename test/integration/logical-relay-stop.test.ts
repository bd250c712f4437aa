import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRelay, migrate, MemoryBroker, type LogicalRelay } from '../../src/index.js';
import { createHarness, type Harness } from '../support/harness.js';
import { dropSlotsAndPublications } from '../support/logical-cleanup.js';

/**
 * A stop must stop the relay whatever it is doing. Found by the chaos suite: a standby told to stop (SIGTERM to
 * every sidecar at once) while it was asking whether the slot was free took the slot the stopping holder had just
 * released, streamed from it, and never exited.
 */
describe('stopping a logical relay', () => {
  let h: Harness;
  let relay: LogicalRelay | null = null;

  beforeAll(async () => {
    h = await createHarness('postgres');
    await migrate(h.db, { dialect: 'postgres', schema: h.schema, publication: `${h.schema}_pub` });
  });
  afterAll(async () => {
    // A relay this test left streaming (when it fails) would hold the slot for ever: cut its WAL sender off.
    await Promise.race([relay?.stop({ drainMs: 0 }), new Promise((resolve) => setTimeout(resolve, 1000))]);
    if (h === undefined) return;
    await sql`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = ${`${h.schema}_slot`} AND active`.execute(h.db);
    await dropSlotsAndPublications(h.db, h.schema);
    await h?.destroy();
  }, 60_000);

  it('stops, and lets the slot go, when stopped while it is about to take a free slot', async () => {
    const options = {
      db: h.db,
      dialect: 'postgres',
      schema: h.schema,
      broker: new MemoryBroker(),
      mode: 'logical',
      slot: `${h.schema}_slot`,
      publication: `${h.schema}_pub`,
    } as const;
    // The slot exists and nobody streams it: a relay's first step is to check that, and then to take it.
    const first = createRelay(options);
    await first.start();
    await new Promise<void>((resolve) => first.once('owned', () => resolve()));
    await first.stop();

    relay = createRelay(options);
    await relay.start();
    const stopped = relay.stop({ drainMs: 0 }).then(() => 'stopped');
    const timeout = new Promise((resolve) => setTimeout(() => resolve('still running after 10 s'), 10_000));
    expect(await Promise.race([stopped, timeout])).toBe('stopped');
  }, 60_000);
});
