import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRelay, migrate, MemoryBroker, type LogicalRelay } from '../../src/index.js';
import { applicationName } from '../../src/relay/logical/logical-relay.js';
import { createHarness, type Harness } from '../support/harness.js';
import { dropSlotsAndPublications } from '../support/logical-cleanup.js';
import { waitFor } from '../support/relay-helpers.js';

/**
 * Who streams a slot must be visible on the server: a replication connection the relay derives from db is named
 * after the relay instance, so an operator (or the chaos suite) can tell which relay holds the slot.
 */
describe('the logical relay names its replication connection', () => {
  let h: Harness;
  let relay: LogicalRelay | null = null;

  beforeAll(async () => {
    h = await createHarness('postgres');
  });
  afterAll(async () => {
    // A stopping relay waits for a slot creation in progress; the cleanup below needs the slot released.
    await relay?.stop({ drainMs: 1000 });
    if (h !== undefined) await dropSlotsAndPublications(h.db, h.schema);
    await h?.destroy();
  }, 120_000);

  it("shows the relay's instanceId as the walsender's application_name", async () => {
    const slot = `${h.schema}_slot`;
    await migrate(h.db, { dialect: 'postgres', schema: h.schema, publication: `${h.schema}_pub` });
    relay = createRelay({
      db: h.db,
      dialect: 'postgres',
      schema: h.schema,
      broker: new MemoryBroker(),
      mode: 'logical',
      slot,
      publication: `${h.schema}_pub`,
      instanceId: `name-test-${h.schema}`,
    });
    await relay.start();
    const holder = async () =>
      (
        await sql<{ application_name: string; backend_type: string }>`
          SELECT a.application_name, a.backend_type FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = s.active_pid
          WHERE s.slot_name = ${slot} AND a.backend_type = 'walsender'`.execute(h.db)
      ).rows[0];
    // Creating the slot (from a client backend) waits for the transactions open at that moment: allow for that.
    await waitFor(async () => (await holder()) !== undefined, 60_000, 'the relay to stream its slot');
    expect(await holder()).toEqual({ application_name: `txoutbox-relay name-test-${h.schema}`, backend_type: 'walsender' });
  }, 90_000);

  it('cuts a long instanceId to the 63 bytes the server keeps, at a character boundary', () => {
    expect(applicationName('r'.repeat(100))).toBe(`txoutbox-relay ${'r'.repeat(48)}`);
    // 'é' is two bytes: the one that would straddle byte 63 is left out whole.
    const cut = applicationName(`${'r'.repeat(47)}é`);
    expect(cut).toBe(`txoutbox-relay ${'r'.repeat(47)}`);
    expect(Buffer.byteLength(applicationName('é'.repeat(40)))).toBeLessThanOrEqual(63);
  });
});
