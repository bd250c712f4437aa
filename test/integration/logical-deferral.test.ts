import { sql } from 'kysely';
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  createRelay,
  migrate,
  MemoryBroker,
  RoutingBroker,
  slotStatus,
  type LogicalRelay,
  type OutboxMessage,
  type RelayOptions,
} from '../../src/index.js';
import { createHarness, type Harness } from '../support/harness.js';
import { dropSlotsAndPublications } from '../support/logical-cleanup.js';
import { waitFor } from '../support/relay-helpers.js';

const HOUR_MS = 60 * 60 * 1000;

/**
 * A streamed message that cannot go out yet (delayed, retrying, or behind such a message of its key) is handed back
 * to the table, and the slot is confirmed past it (issue #24, items 4, 5 and 12): nothing that waits holds the
 * server's WAL or the relay's buffer, which, full, stopped every other key. From the table it goes out when due,
 * each key's messages still in commit order.
 */
describe('the logical relay hands what cannot go yet back to the table', () => {
  let h: Harness;
  let relays: LogicalRelay[] = [];
  let round = 0;
  let slot = '';
  let publication = '';

  beforeAll(async () => {
    h = await createHarness('postgres');
  });
  afterEach(async () => {
    await Promise.all(relays.map((relay) => relay.stop({ drainMs: 1000 })));
    relays = [];
  });
  afterAll(async () => {
    if (h === undefined) return;
    await dropSlotsAndPublications(h.db, h.schema);
    await h.destroy();
  }, 60_000);

  async function setUp() {
    round++;
    slot = `${h.schema}_s${round}`;
    publication = `${h.schema}_p${round}`;
    await migrate(h.db, { dialect: 'postgres', schema: h.schema, publication });
    await sql`DELETE FROM ${sql.id(h.schema, 'txoutbox')}`.execute(h.db);
  }
  /** batchSize 10 × concurrency 1: the relay keeps 200 streamed messages in memory before it stops reading. */
  async function relay(broker: RelayOptions<unknown>['broker'], options: Partial<RelayOptions<unknown>> = {}) {
    const created = createRelay({
      batchSize: 10,
      concurrency: 1,
      backoff: { initialMs: 10, maxMs: 50 },
      ...options,
      db: h.db,
      dialect: 'postgres',
      schema: h.schema,
      broker,
      mode: 'logical',
      slot,
      publication,
    });
    relays.push(created);
    await created.start();
    await waitFor(() => created.status().partitions[0]!.owned, 15_000, 'the relay to hold the slot');
    return created;
  }
  const commit = (messages: OutboxMessage[]) =>
    h.db.transaction().execute((trx) => h.createOutbox({ mode: 'logical' }).enqueue(trx, messages));
  const rows = async () =>
    (
      await sql<{ id: string; state: string; deferred: boolean }>`
        SELECT id, state, deferred_lsn IS NOT NULL AS deferred FROM ${sql.id(h.schema, 'txoutbox')} ORDER BY seq`.execute(h.db)
    ).rows;
  const ids = (broker: MemoryBroker) => broker.received().map((m) => m.id);
  /** Commits about 2 MB of WAL (incompressible) in messages of key `w`: a slot held back retains all of it. */
  const writeWal = async () => {
    for (let n = 0; n < 4; n++)
      await commit(Array.from({ length: 50 }, (_, i) => ({ id: `wal${n * 50 + i}`, topic: 'wal', key: 'w', payload: randomBytes(5000).toString('hex') })));
  };
  const lag = async () => (await slotStatus(h.db, slot)).lagBytes ?? Number.POSITIVE_INFINITY;

  it('keeps relaying other keys behind 300 delayed messages, more than it buffers', async () => {
    await setUp();
    const broker = new MemoryBroker();
    await relay(broker);
    await commit(Array.from({ length: 300 }, (_, n) => ({ id: `later${n}`, topic: 'reminders', key: `r${n}`, payload: n, delayMs: HOUR_MS })));
    await commit([{ id: 'now', topic: 'orders', key: 'o', payload: 1 }]);
    await waitFor(() => ids(broker).includes('now'), 15_000, 'the message behind the delayed ones');
    expect(ids(broker)).toEqual(['now']);
    await waitFor(async () => (await rows()).every((row) => row.deferred), 15_000, 'the delayed rows to be in the table');
    expect((await rows()).filter((row) => row.state === 'pending')).toHaveLength(300);
  }, 60_000);

  it("keeps relaying other keys while a hot key's head retries, with 300 messages behind it", async () => {
    await setUp();
    let failHead = true;
    const broker = new MemoryBroker().fail({ kind: 'retryable', error: 'not now' }, { where: (m) => failHead && m.id === 'h0' });
    await relay(broker, { maxAttempts: 1000 });
    await commit(Array.from({ length: 301 }, (_, n) => ({ id: `h${n}`, topic: 'orders', key: 'hot', payload: n })));
    // Enough WAL behind them that a relay that stopped reading would not have the next commit in hand already.
    await writeWal();
    await commit([{ id: 'other', topic: 'orders', key: 'o', payload: 1 }]);
    await waitFor(() => ids(broker).includes('other'), 15_000, 'the other key');
    expect(ids(broker).filter((id) => id.startsWith('h'))).toEqual([]);
    failHead = false;
    await waitFor(() => ids(broker).length === 502, 30_000, "the hot key's messages once its head goes");
    expect(ids(broker).filter((id) => id.startsWith('h'))).toEqual(Array.from({ length: 301 }, (_, n) => `h${n}`));
    await waitFor(async () => (await rows()).length === 0, 15_000, 'every row to be deleted');
  }, 60_000);

  it("confirms the slot past a message delayed by a day: the server's WAL is not held", async () => {
    await setUp();
    const broker = new MemoryBroker();
    await relay(broker);
    await commit([{ id: 'tomorrow', topic: 'reminders', key: 't', payload: 1, delayMs: 24 * HOUR_MS }]);
    await writeWal();
    await waitFor(() => ids(broker).length === 200, 15_000, 'the messages after it');
    await waitFor(async () => (await rows()).length === 1, 15_000, 'their rows to be deleted');
    await waitFor(async () => (await lag()) < 500_000, 15_000, 'the slot to be confirmed past the delayed message');
    expect(ids(broker)).not.toContain('tomorrow');
    expect(await rows()).toEqual([{ id: 'tomorrow', state: 'pending', deferred: true }]);
  }, 60_000);

  it("keeps relaying the other broker's topics while one broker of a RoutingBroker is down, and confirms the slot", async () => {
    await setUp();
    const down = new MemoryBroker().fail({ kind: 'unreachable', error: 'connection refused' });
    const up = new MemoryBroker();
    await relay(new RoutingBroker({ brokers: { down, up }, routes: { 'billing.*': 'down', '*': 'up' } }));
    await commit(Array.from({ length: 300 }, (_, n) => ({ id: `bill${n}`, topic: 'billing.invoice', key: `b${n % 50}`, payload: n })));
    await writeWal();
    await commit([{ id: 'order', topic: 'orders', key: 'o', payload: 1 }]);
    await waitFor(() => ids(up).includes('order'), 15_000, "the up broker's topics");
    await waitFor(async () => (await lag()) < 500_000, 15_000, 'the slot to be confirmed past the waiting messages');
    expect(ids(down)).toEqual([]);
    expect((await rows()).filter((row) => row.deferred)).toHaveLength(300);
  }, 60_000);

  it('publishes a deferred message when due, and the later messages of its key after it, in commit order', async () => {
    await setUp();
    const broker = new MemoryBroker();
    await relay(broker);
    await commit([{ id: 'k1', topic: 'orders', key: 'K', payload: 1, delayMs: 1500 }]);
    await commit([{ id: 'k2', topic: 'orders', key: 'K', payload: 2 }]);
    await commit([
      { id: 'k3', topic: 'orders', key: 'K', payload: 3 },
      { id: 'other', topic: 'orders', key: 'O', payload: 1 },
    ]);
    await waitFor(() => ids(broker).includes('other'), 15_000, 'the other key');
    expect(ids(broker)).toEqual(['other']);
    await waitFor(() => ids(broker).length === 4, 15_000, 'K once k1 is due');
    expect(ids(broker)).toEqual(['other', 'k1', 'k2', 'k3']);
    // K is free again: its next message goes straight from the stream.
    await commit([{ id: 'k4', topic: 'orders', key: 'K', payload: 4 }]);
    await waitFor(() => ids(broker).includes('k4'), 15_000, 'k4');
    await waitFor(async () => (await rows()).length === 0, 15_000, 'every row to be deleted');
  }, 60_000);

  it('a relay taking the slot over publishes what its predecessor deferred, once, in order', async () => {
    await setUp();
    const first = new MemoryBroker();
    await relay(first);
    await commit([{ id: 'k1', topic: 'orders', key: 'K', payload: 1, delayMs: 2000 }]);
    await commit([{ id: 'k2', topic: 'orders', key: 'K', payload: 2 }]);
    await commit([{ id: 'm1', topic: 'orders', payload: 1, delayMs: 2000 }]);
    await waitFor(async () => (await rows()).filter((row) => row.deferred).length === 3, 15_000, 'the three to be deferred');
    await relays[0]!.stop({ drainMs: 5000 });
    const second = new MemoryBroker();
    await relay(second);
    await commit([{ id: 'k3', topic: 'orders', key: 'K', payload: 3 }]);
    await waitFor(() => ids(second).length === 4, 15_000, 'the deferred messages and k3');
    expect(ids(first)).toEqual([]);
    expect(ids(second).filter((id) => id.startsWith('k'))).toEqual(['k1', 'k2', 'k3']);
    expect(ids(second)).toContain('m1');
    await waitFor(async () => (await rows()).length === 0, 15_000, 'every row to be deleted');
  }, 60_000);

  it("under 'block-key', a deferred head that dies parks its key's other deferred messages, and later ones, behind it", async () => {
    await setUp();
    // h1 fails once (deferred, with h2 behind it), then for good when the table gives it out again.
    const broker = new MemoryBroker()
      .fail({ kind: 'retryable', error: 'not now' }, { times: 1, where: (m) => m.id === 'h1' })
      .fail({ kind: 'permanent', error: 'poison pill' }, { where: (m) => m.id === 'h1' });
    await relay(broker, { deadLetterPolicy: 'block-key' });
    await commit([
      { id: 'h1', topic: 'orders', key: 'H', payload: 1 },
      { id: 'h2', topic: 'orders', key: 'H', payload: 2 },
    ]);
    await waitFor(async () => (await rows()).every((row) => row.state === 'dead'), 15_000, 'h1 and h2 to be dead');
    await commit([{ id: 'h3', topic: 'orders', key: 'H', payload: 3 }]);
    await commit([{ id: 'o1', topic: 'orders', key: 'O', payload: 1 }]);
    await waitFor(() => ids(broker).includes('o1'), 15_000, 'another key');
    await waitFor(async () => (await rows()).length === 3 && (await rows()).every((row) => row.state === 'dead'), 15_000, 'h3 parked');
    expect(ids(broker)).toEqual(['o1']);
    const { rows: errors } = await sql<{ id: string; last_error: string }>`
      SELECT id, last_error FROM ${sql.id(h.schema, 'txoutbox')} ORDER BY seq`.execute(h.db);
    expect(errors).toEqual([
      { id: 'h1', last_error: expect.stringContaining('poison pill') },
      { id: 'h2', last_error: expect.stringContaining('waiting behind dead message h1') },
      { id: 'h3', last_error: expect.stringContaining('waiting behind') },
    ]);
  }, 60_000);
});
