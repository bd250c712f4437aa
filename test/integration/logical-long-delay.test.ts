import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRelay, migrate, MemoryBroker, type LogicalRelay } from '../../src/index.js';
import { createHarness, type Harness } from '../support/harness.js';
import { dropSlotsAndPublications } from '../support/logical-cleanup.js';
import { waitFor } from '../support/relay-helpers.js';

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * Node's setTimeout holds at most 2^31−1 ms (about 24.8 days): a longer delay fires after 1 ms. The logical relay
 * waits out a streamed message's delay in memory, so a message delayed by a month must not go out at once.
 */
describe('the logical relay and delays past what a Node timer holds', () => {
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

  it('keeps a message delayed 30 days unpublished, without spinning', async () => {
    const broker = new MemoryBroker();
    relay = createRelay({
      db: h.db,
      dialect: 'postgres',
      schema: h.schema,
      broker,
      mode: 'logical',
      slot: `${h.schema}_slot`,
      publication: `${h.schema}_pub`,
    });
    await relay.start();
    await waitFor(() => relay!.status().partitions[0]!.owned, 15_000, 'the relay to hold the slot');
    const outbox = h.createOutbox({ mode: 'logical' });
    // One transaction: once `now` is out, `later` has been streamed too (it comes first).
    await h.db.transaction().execute((trx) =>
      outbox.enqueue(trx, [
        { id: 'later', topic: 'reminders', key: 'L', payload: 1, delayMs: 30 * DAY_MS },
        { id: 'now', topic: 'reminders', key: 'N', payload: 2 },
      ]),
    );
    await waitFor(() => broker.received().some((m) => m.id === 'now'), 15_000, 'the undelayed message');
    expect(relay.status().partitions[0]!.streamed).toBe(2);

    // Give an overflowed timer (it fires after 1 ms) every chance to publish, and watch what the process burns.
    const cpuBefore = process.cpuUsage();
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const cpu = process.cpuUsage(cpuBefore);

    expect(broker.received().map((m) => m.id)).toEqual(['now']);
    expect(broker.attempts).toBe(1);
    // A relay that re-armed a short timer over and over (or polled the delay) would burn most of the 3 s.
    expect((cpu.user + cpu.system) / 1000, 'CPU ms used while the message waited').toBeLessThan(1500);
  }, 60_000);
});
