import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { MemoryBroker, type Broker, type OutboxMessage, type Relay } from '../../src/index.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';
import { clearTables, storeFor, testRelay, waitFor } from '../support/relay-helpers.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * An unreachable broker is the broker's state, not each message's fault: the relay stops claiming (one probe per
 * brokerProbeIntervalMs), counts no attempt, and resumes at full speed once a probe gets through.
 */
describe.each(DIALECTS)('relay circuit breaker (broker unreachable) on %s', (dialect) => {
  let h: Harness;
  const started: Relay[] = [];
  beforeAll(async () => {
    h = await createHarness(dialect);
  });
  afterAll(async () => h?.destroy());
  beforeEach(async () => clearTables(h));
  afterEach(async () => {
    await Promise.all(started.splice(0).map((relay) => relay.stop({ drainMs: 100 })));
  });

  const commit = (messages: OutboxMessage[]) => h.db.transaction().execute((trx) => h.outbox.enqueue(trx, messages));
  const messagesOf = (keys: number, perKey: number): OutboxMessage[] =>
    Array.from({ length: keys * perKey }, (_, i) => ({
      id: `m-${String(i).padStart(3, '0')}`,
      topic: 'orders',
      key: `k${i % keys}`,
      payload: i,
    }));

  it('pauses claiming during an outage, counts no attempt, dead-letters nothing, and drains at once when it ends', async () => {
    const broker = new MemoryBroker().fail({ kind: 'unreachable' });
    // Without the breaker, 3 attempts 20 + 40 ms apart would dead-letter every head well within the outage.
    const relay = testRelay(h, broker, {
      maxAttempts: 3,
      backoff: { initialMs: 20, maxMs: 40, factor: 2 },
      brokerProbeIntervalMs: 200,
      pollIntervalMs: 50,
      concurrency: 4,
      batchSize: 10,
    });
    started.push(relay);
    const messages = messagesOf(10, 5);
    await commit(messages);
    relay.start();
    await sleep(1500);

    // Paused: the first batches and then one probe message per 200 ms, not a claim loop.
    expect(broker.attempts).toBeLessThan(4 * 10 + 1500 / 200 + 5);
    const rows = await h.rows();
    expect(rows.filter((row) => row.state === 'dead')).toEqual([]);
    expect(rows.filter((row) => row.state === 'pending').length).toBe(messages.length);
    expect(Math.max(...rows.map((row) => row.attempts))).toBe(0);
    expect(broker.received()).toEqual([]);

    broker.heal();
    const back = performance.now();
    await waitFor(() => broker.received().length === messages.length, 5000, 'every message after the outage');
    expect(performance.now() - back).toBeLessThan(1000);
    for (let key = 0; key < 10; key++) {
      expect(
        broker
          .received()
          .filter((m) => m.key === `k${key}`)
          .map((m) => m.id),
      ).toEqual(messages.filter((m) => m.key === `k${key}`).map((m) => m.id));
    }
    await waitFor(async () => (await h.rows()).length === 0, 5000, 'the sent rows to be deleted');
  });

  it('runOnce claims nothing while the breaker is open, then probes with one message', async () => {
    // Four unreachable answers: the first batch's three, then the first probe's.
    const broker = new MemoryBroker().fail({ kind: 'unreachable' }, { times: 4 });
    const relay = testRelay(h, broker, { brokerProbeIntervalMs: 300 });
    await commit(messagesOf(3, 2));
    expect(await relay.runOnce()).toMatchObject({ claimed: 3, published: 0, retried: 0, dead: 0 });
    expect(await relay.runOnce()).toMatchObject({ claimed: 0 });
    await sleep(350);
    // The probe: one message, still unreachable, so the breaker stays open.
    expect(await relay.runOnce()).toMatchObject({ claimed: 1, published: 0 });
    expect(await relay.runOnce()).toMatchObject({ claimed: 0 });
    await sleep(350);
    expect(await relay.runOnce()).toMatchObject({ claimed: 1, published: 1 });
    // The probe got through: full batches again.
    expect(await relay.runOnce()).toMatchObject({ claimed: 3, published: 3 });
    // Nothing counted an attempt against the messages that waited out the outage.
    const left = await h.rows();
    expect(left.length).toBe(2);
    expect(left.map((row) => row.attempts)).toEqual([0, 0]);
  });

  it('recovers when the probe claims a message it buries without publishing (its attempts spent by lost leases)', async () => {
    // The relay's time moves only when the test says (the breaker's probe interval, the claim scan's full rescans).
    const start = performance.now();
    let elapsed = 0;
    vi.spyOn(performance, 'now').mockImplementation(() => start + elapsed);
    try {
      const broker = new MemoryBroker().fail({ kind: 'unreachable' }, { times: 1 });
      const relay = testRelay(h, broker, { maxAttempts: 1, brokerProbeIntervalMs: 10 });
      await commit([
        { id: 'spent', topic: 't', key: 'k1', payload: 1 },
        { id: 'other', topic: 't', key: 'k2', payload: 2 },
      ]);
      // A relay that died mid-publish holds 'spent' (its one attempt counted) ...
      const crashed = storeFor(h);
      expect((await crashed.claim({ count: 1, bytes: 1e9 }, 'crashed:1', 600_000)).map((m) => m.id)).toEqual(['spent']);
      // ... while this relay's batch meets the outage: the breaker opens.
      expect(await relay.runOnce()).toMatchObject({ claimed: 1, published: 0 });
      // The dead relay's lease runs out: its message is the oldest due.
      const past = new Date((await h.now()).getTime() - 3_600_000);
      await h.db
        .updateTable(`${h.schema}.txoutbox`)
        .set({ lease_until: past, next_attempt_at: past })
        .where('id', '=', 'spent')
        .execute();
      // The probe claims it and buries it at once (taken over, past maxAttempts): nothing is published.
      elapsed += 2000;
      expect(await relay.runOnce()).toMatchObject({ claimed: 1, published: 0, dead: 1 });
      // The broker is back: the next probe finds out, and the relay publishes again.
      elapsed += 2000;
      expect(await relay.runOnce()).toMatchObject({ claimed: 1, published: 1 });
      expect(broker.received().map((m) => m.id)).toEqual(['other']);
    } finally {
      vi.restoreAllMocks();
    }
  });
  it('gives back uncounted, not publishes, a batch claimed ahead when the batch before it opened the breaker', async () => {
    // The first publish waits at a gate, so the worker claims its next full batch ahead meanwhile; then the broker
    // answers unreachable. That batch was claimed while the breaker was closed: it must go back, not into the outage.
    let openGate = () => {};
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    const down = new MemoryBroker().fail({ kind: 'unreachable' });
    let publishes = 0;
    const broker: Broker = {
      name: 'gated',
      async publish(messages, context) {
        publishes++;
        if (publishes === 1) await gate;
        return down.publish(messages, context);
      },
    };
    const relay = testRelay(h, broker, { concurrency: 1, batchSize: 2, brokerProbeIntervalMs: 60_000, pollIntervalMs: 50 });
    started.push(relay);
    await commit(messagesOf(6, 1));
    relay.start();
    const leased = async () => (await h.rows()).filter((row) => row.leaseOwner !== null).length;
    await waitFor(async () => (await leased()) === 4, 5000, 'the first batch at the broker and the next claimed ahead');
    openGate();
    await waitFor(async () => (await leased()) === 0, 5000, 'both batches given back');
    // Only the first batch met the broker; no probe is due for a minute.
    expect(down.attempts).toBe(2);
    const rows = await h.rows();
    expect(rows.map((row) => row.attempts)).toEqual(rows.map(() => 0));
  });
});
