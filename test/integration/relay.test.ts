import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { ConfigError, createRelay, MemoryBroker, type OutboxMessage, type Relay } from '../../src/index.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';
import { clearTables, drain, settle, storeFor, testRelay, waitFor } from '../support/relay-helpers.js';

describe.each(DIALECTS)('relay on %s', (dialect) => {
  let h: Harness;
  const started: Relay[] = [];
  beforeAll(async () => {
    h = await createHarness(dialect, 30);
  });
  afterAll(async () => h?.destroy());
  beforeEach(async () => clearTables(h));
  afterEach(async () => {
    await Promise.all(started.splice(0).map((relay) => relay.stop({ drainMs: 100 })));
  });

  const commit = (messages: OutboxMessage[]) => h.db.transaction().execute((trx) => h.outbox.enqueue(trx, messages));
  const ids = (broker: MemoryBroker, key?: string) =>
    broker
      .received()
      .filter((m) => key === undefined || m.key === key)
      .map((m) => m.id);

  it('publishes every committed message once, with its fields intact, and deletes it', async () => {
    const broker = new MemoryBroker();
    const relay = testRelay(h, broker);
    const results = await commit([
      { topic: 'orders.created', key: 'o-1', payload: { total: 5 }, headers: { 'x-tenant': 'acme' } },
      { topic: 'orders.created', payload: new Uint8Array([1, 2, 3]) },
    ]);
    await drain(relay);
    expect(ids(broker).sort()).toEqual(results.map((r) => r.id).sort());
    const [json] = broker.received('orders.created').filter((m) => m.key === 'o-1');
    expect(json).toMatchObject({
      id: results[0]!.id,
      key: 'o-1',
      contentType: 'application/json',
      headers: { 'x-tenant': 'acme' },
      attempt: 1,
    });
    expect(JSON.parse(json!.payload.toString())).toEqual({ total: 5 });
    expect([...broker.received().find((m) => m.key === null)!.payload]).toEqual([1, 2, 3]);
    expect(await h.rows()).toEqual([]);
  });

  it('never publishes a rolled-back message', async () => {
    const broker = new MemoryBroker();
    await h.db
      .transaction()
      .execute(async (trx) => {
        await h.outbox.enqueue(trx, { topic: 't', key: 'k', payload: 'rolled back' });
        throw new Error('rollback');
      })
      .catch(() => undefined);
    await drain(testRelay(h, broker));
    expect(broker.attempts).toBe(0);
  });

  it('keeps a message while the broker does not acknowledge it, with the error and a later attempt time', async () => {
    const broker = new MemoryBroker().fail({ kind: 'retryable', error: 'broker unavailable' });
    const relay = testRelay(h, broker, { backoff: { initialMs: 60_000, maxMs: 60_000, factor: 2 } });
    await commit([{ id: 'm', topic: 't', key: 'k', payload: 1 }]);
    const before = await h.now();
    expect(await relay.runOnce()).toMatchObject({ claimed: 1, published: 0, retried: 1 });
    const [row] = await h.rows();
    expect(row).toMatchObject({ id: 'm', state: 'pending', attempts: 1, leaseOwner: null, leaseUntil: null, ready: true });
    expect(row!.lastError).toContain('broker unavailable');
    expect(row!.nextAttemptAt.getTime()).toBeGreaterThan(before.getTime() + 50_000);
    expect(await relay.runOnce()).toMatchObject({ claimed: 0 });
    expect(broker.accepted).toEqual([]);
  });

  it('retries with the same id until the broker accepts', async () => {
    const broker = new MemoryBroker().fail({ kind: 'retryable' }, { times: 2 });
    const relay = testRelay(h, broker);
    const [result] = await commit([{ topic: 't', key: 'k', payload: 1 }]);
    await settle(h, [relay]);
    expect(broker.attempts).toBe(3);
    expect(broker.received().map((m) => [m.id, m.attempt])).toEqual([[result!.id, 3]]);
    expect(await h.rows()).toEqual([]);
  });

  it('spaces retries with exponential backoff and jitter', async () => {
    const broker = new MemoryBroker().fail({ kind: 'retryable' });
    const delays: number[] = [];
    const relay = testRelay(h, broker, {
      backoff: { initialMs: 1000, maxMs: 10_000, factor: 3 },
      random: () => 0.5,
      maxAttempts: 10,
    });
    relay.on('retrying', (messages) => delays.push(...messages.map((m) => m.delayMs)));
    await commit([{ topic: 't', payload: 1 }]);
    for (let attempt = 1; attempt <= 4; attempt++) {
      await relay.runOnce();
      // Make the row due again at once instead of waiting out the delay.
      await sql`UPDATE ${sql.id(h.schema, 'txoutbox')} SET next_attempt_at = ${h.dialect === 'postgres' ? sql`now()` : sql`UTC_TIMESTAMP(6)`}`.execute(
        h.db,
      );
    }
    // Equal jitter at random() = 0.5: three quarters of min(maxMs, initialMs × factor^(attempt-1)).
    expect(delays).toEqual([750, 2250, 6750, 7500]);
  });

  it('dead-letters a poison message after the budget while other keys keep flowing, and blocks only its own key', async () => {
    const broker = new MemoryBroker().fail(
      { kind: 'retryable', error: 'consumer rejects it' },
      { where: (m) => m.key === 'poison' },
    );
    const relay = testRelay(h, broker, { maxAttempts: 3 });
    const dead: string[] = [];
    relay.on('dead', (messages) => dead.push(...messages.map((m) => m.message.id)));
    await commit([
      { id: 'p1', topic: 't', key: 'poison', payload: 1 },
      { id: 'p2', topic: 't', key: 'poison', payload: 2 },
      ...Array.from({ length: 20 }, (_, i) => ({ id: `ok-${i}`, topic: 't', key: `k${i % 4}`, payload: i })),
    ]);
    await settle(h, [relay]);
    expect(ids(broker).sort()).toEqual(Array.from({ length: 20 }, (_, i) => `ok-${i}`).sort());
    expect(dead).toEqual(['p1']);
    const rows = await h.rows();
    expect(rows.map((r) => [r.id, r.state, r.attempts, r.ready])).toEqual([
      ['p1', 'dead', 3, true],
      ['p2', 'pending', 0, false],
    ]);
    expect(rows[0]!.lastError).toMatch(/gave up after 3 attempts: consumer rejects it/);
  });

  it("dead-letters a permanent failure at once and, with deadLetterPolicy 'skip', lets its key go on", async () => {
    const broker = new MemoryBroker().fail({ kind: 'permanent', error: 'no such exchange' }, { where: (m) => m.id === 'p1' });
    const relay = testRelay(h, broker, { deadLetterPolicy: 'skip' });
    await commit([
      { id: 'p1', topic: 't', key: 'k', payload: 1 },
      { id: 'p2', topic: 't', key: 'k', payload: 2 },
    ]);
    await settle(h, [relay]);
    expect(ids(broker)).toEqual(['p2']);
    const rows = await h.rows();
    expect(rows.map((r) => [r.id, r.state, r.attempts, r.ready])).toEqual([['p1', 'dead', 1, false]]);
    expect(rows[0]!.lastError).toContain('no such exchange');
    expect(await h.heads()).toEqual(new Map([['k', 0]]));
  });

  it('claims only the head of each key, so a key never has two messages in flight', async () => {
    const broker = new MemoryBroker();
    const seen: string[][] = [];
    const relay = testRelay(h, broker);
    relay.on('published', (messages) => seen.push(messages.map((m) => m.id)));
    await commit([
      { id: 'a1', topic: 't', key: 'A', payload: 1 },
      { id: 'a2', topic: 't', key: 'A', payload: 2 },
      { id: 'b1', topic: 't', key: 'B', payload: 3 },
      { id: 'a3', topic: 't', key: 'A', payload: 4 },
      { id: 'n1', topic: 't', payload: 5 },
      { id: 'n2', topic: 't', payload: 6 },
    ]);
    await drain(relay);
    expect(seen).toEqual([['a1', 'b1', 'n1', 'n2'], ['a2'], ['a3']]);
  });

  it('does not publish delayed messages before their time', async () => {
    const broker = new MemoryBroker();
    const relay = testRelay(h, broker);
    await commit([
      { id: 'later', topic: 't', payload: 1, delayMs: 1500 },
      { id: 'much-later', topic: 't', payload: 2, availableAt: new Date(Date.now() + 3_600_000) },
      { id: 'now', topic: 't', payload: 3 },
    ]);
    await drain(relay);
    expect(ids(broker)).toEqual(['now']);
    await waitFor(async () => (await relay.runOnce()).published > 0, 5000, 'the delayed message');
    expect(ids(broker)).toEqual(['now', 'later']);
    await drain(relay);
    expect(ids(broker)).toEqual(['now', 'later']);
  });

  it("takes over a crashed relay's claim after its lease, and publishes again with the same id", async () => {
    const broker = new MemoryBroker();
    const store = storeFor(h);
    const [result] = await commit([{ topic: 't', key: 'k', payload: 1 }]);
    // The crashed relay claimed, reached the broker, and died before marking the row sent.
    const crashed = await store.claim({ count: 10, bytes: 1e6 }, 'crashed-relay:1', 300);
    await broker.publish(
      crashed.map((m) => ({ ...m, attempt: m.attempts })),
      { signal: new AbortController().signal },
    );
    const relay = testRelay(h, broker);
    expect(await relay.runOnce()).toMatchObject({ claimed: 0 });
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(await relay.runOnce()).toMatchObject({ claimed: 1, published: 1 });
    expect(ids(broker)).toEqual([result!.id, result!.id]);
    expect(broker.received().map((m) => m.attempt)).toEqual([1, 2]);
    expect(await h.rows()).toEqual([]);
  });

  it('lets no relay mark a message whose lease another relay has taken over', async () => {
    const store = storeFor(h);
    await commit([
      { id: 'm', topic: 't', key: 'k', payload: 1 },
      { id: 'm2', topic: 't', key: 'k', payload: 2 },
    ]);
    const stale = await store.claim({ count: 10, bytes: 1e6 }, 'slow-relay:1', 100);
    await new Promise((resolve) => setTimeout(resolve, 150));
    const fresh = await store.claim({ count: 10, bytes: 1e6 }, 'other-relay:1', 5000);
    expect(fresh.map((m) => [m.id, m.takenOverFrom])).toEqual([['m', 'slow-relay:1']]);
    expect(await store.complete(stale, 'slow-relay:1', false)).toEqual({ sent: [], promoted: 0 });
    await store.retry([{ message: stale[0]!, error: 'late', delayMs: 0 }], 'slow-relay:1');
    await store.bury([{ message: stale[0]!, error: 'late' }], 'slow-relay:1', true);
    expect((await h.rows()).map((r) => [r.id, r.state, r.leaseOwner, r.ready])).toEqual([
      ['m', 'pending', 'other-relay:1', true],
      ['m2', 'pending', null, false],
    ]);
    expect(await store.complete(fresh, 'other-relay:1', false)).toEqual({ sent: fresh, promoted: 1 });
    expect((await h.rows()).map((r) => [r.id, r.ready])).toEqual([['m2', true]]);
  });

  it('keeps each key in commit order across transactions, and never skips a message that commits late', async () => {
    const broker = new MemoryBroker();
    const relay = testRelay(h, broker);
    // A keyless message takes its seq first but commits last: it is published late, not skipped.
    const slow = await h.db.startTransaction().execute();
    await h.outbox.enqueue(slow, { id: 'early-seq', topic: 't', payload: 'first seq, last commit' });
    // k1 takes its seq before k2, but its transaction commits after k2's: the relay sees k2 first and publishes it,
    // then k1 once it commits. Neither waited for the other; the order is the order they became visible.
    const keyed = await h.db.startTransaction().execute();
    await h.outbox.enqueue(keyed, { id: 'k1', topic: 't', key: 'K', payload: 1 });
    await h.db.transaction().execute((trx) => h.outbox.enqueue(trx, { id: 'k2', topic: 't', key: 'K', payload: 2 }));
    await commit([{ id: 'later-seq', topic: 't', payload: 'committed first' }]);
    await drain(relay);
    expect(ids(broker).sort()).toEqual(['k2', 'later-seq']);
    await keyed.commit().execute();
    // A transaction that starts after k1 committed comes after it, whatever its seq.
    await h.db.transaction().execute((trx) => h.outbox.enqueue(trx, { id: 'k3', topic: 't', key: 'K', payload: 3 }));
    await slow.commit().execute();
    // Both late commits sit behind where the relay's scans left off: found by its next scan from the beginning.
    await settle(h, [relay]);
    expect(ids(broker).sort()).toEqual(['early-seq', 'k1', 'k2', 'k3', 'later-seq']);
    expect(ids(broker, 'K')).toEqual(['k2', 'k1', 'k3']);
  });

  it('publishes the messages of one transaction in enqueue order, also when they were enqueued in separate calls', async () => {
    const broker = new MemoryBroker();
    const relay = testRelay(h, broker);
    await h.db.transaction().execute(async (trx) => {
      for (let i = 0; i < 5; i++) await h.outbox.enqueue(trx, { id: `t-${i}`, topic: 't', key: 'K', payload: i });
      await h.outbox.enqueue(
        trx,
        [5, 6, 7].map((i) => ({ id: `t-${i}`, topic: 't', key: 'K', payload: i })),
      );
    });
    await drain(relay);
    expect(ids(broker, 'K')).toEqual(Array.from({ length: 8 }, (_, i) => `t-${i}`));
  });

  it('keeps memory bounded: batchSize × concurrency messages at the broker and as many claimed ahead, whatever the backlog', async () => {
    const broker = new MemoryBroker().fail({ kind: 'hang' });
    const relay = testRelay(h, broker, { batchSize: 10, concurrency: 2, publishTimeoutMs: 60_000, leaseMs: 120_000 });
    await commit(Array.from({ length: 500 }, (_, i) => ({ topic: 't', payload: i })));
    relay.start();
    started.push(relay);
    const leased = async () => (await h.rows()).filter((row) => row.leaseOwner !== null).length;
    await waitFor(() => broker.attempts >= 20, 5000, 'two batches in flight');
    await waitFor(async () => (await leased()) >= 40, 5000, 'a batch claimed ahead by each worker');
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(broker.attempts).toBe(20);
    expect(await leased()).toBe(40);
    broker.heal();
    broker.releaseHung();
    await waitFor(() => broker.accepted.length === 500, 20_000, 'the whole backlog');
  });

  it('keeps each claim within maxBatchBytes of payload, and claims a message larger than that alone', async () => {
    const broker = new MemoryBroker();
    const batches: string[][] = [];
    const relay = testRelay(h, broker, { maxBatchBytes: 10_000 });
    relay.on('published', (messages) => batches.push(messages.map((m) => m.id)));
    const kb = (n: number) => new Uint8Array(n * 1000);
    await commit([
      { id: 'a', topic: 't', payload: kb(4) },
      { id: 'b', topic: 't', payload: kb(4) },
      { id: 'c', topic: 't', payload: kb(4) },
      { id: 'big', topic: 't', payload: kb(25) },
      { id: 'd', topic: 't', payload: kb(1) },
    ]);
    await drain(relay);
    // 4 + 4 fit in 10 kB and 4 more would not; the 25 kB message goes alone, however big.
    expect(batches).toEqual([['a', 'b'], ['c'], ['big'], ['d']]);
  });

  it('on stop, finishes what it can and gives back the leases of what it cannot, without counting the attempt', async () => {
    const broker = new MemoryBroker().fail({ kind: 'hang' });
    const relay = testRelay(h, broker, { publishTimeoutMs: 60_000, leaseMs: 120_000 });
    await commit([{ id: 'm', topic: 't', key: 'k', payload: 1 }]);
    relay.start();
    await waitFor(() => broker.attempts === 1, 5000, 'the publish');
    await relay.stop({ drainMs: 100 });
    const [row] = await h.rows();
    expect(row).toMatchObject({ id: 'm', state: 'pending', attempts: 0, leaseOwner: null, ready: true });
    expect(row!.nextAttemptAt.getTime()).toBeLessThanOrEqual((await h.now()).getTime());
    broker.heal();
    await drain(testRelay(h, broker));
    expect(ids(broker)).toEqual(['m']);
  });

  it('claims the next batch while one publishes, and on stop gives that claim back untouched too', async () => {
    const broker = new MemoryBroker().fail({ kind: 'hang' });
    const relay = testRelay(h, broker, { batchSize: 10, concurrency: 1, publishTimeoutMs: 60_000, leaseMs: 120_000 });
    await commit(Array.from({ length: 25 }, (_, i) => ({ id: `m${String(i).padStart(2, '0')}`, topic: 't', payload: i })));
    relay.start();
    await waitFor(() => broker.attempts === 10, 5000, 'the first batch at the broker');
    const leased = async () => (await h.rows()).filter((row) => row.leaseOwner !== null).length;
    await waitFor(async () => (await leased()) === 20, 5000, 'the next batch claimed while the first hangs');
    expect(broker.attempts).toBe(10);
    await relay.stop({ drainMs: 100 });
    const rows = await h.rows();
    expect(rows).toHaveLength(25);
    for (const row of rows) expect(row).toMatchObject({ state: 'pending', attempts: 0, leaseOwner: null });
    broker.heal();
    await drain(testRelay(h, broker));
    expect(new Set(ids(broker)).size).toBe(25);
  });

  it('gives back a batch claimed ahead whose lease could run out during its publish, and claims it afresh', async () => {
    // Each publish takes 500 ms; a batch claimed ahead waits that long, and 500 + publishTimeoutMs 600 exceeds the
    // 1000 ms lease: published on that claim, it could be taken over by another relay while still being sent.
    const broker = new MemoryBroker().fail({ kind: 'slow', ms: 500 });
    const relay = testRelay(h, broker, { batchSize: 2, concurrency: 1, leaseMs: 1000, publishTimeoutMs: 600 });
    const claimed: number[] = [];
    const worker = relay as unknown as { claim(): Promise<{ messages: unknown[] }> };
    const claim = worker.claim.bind(relay);
    worker.claim = async () => {
      const result = await claim();
      if (result.messages.length > 0) claimed.push(result.messages.length);
      return result;
    };
    await commit(Array.from({ length: 4 }, (_, i) => ({ id: `m${i}`, topic: 't', payload: i })));
    relay.start();
    started.push(relay);
    await waitFor(() => broker.accepted.length === 4, 10_000, 'all four published');
    // The first batch, the second claimed ahead, then the second again after it was given back.
    expect(claimed).toEqual([2, 2, 2]);
    expect(ids(broker).sort()).toEqual(['m0', 'm1', 'm2', 'm3']);
  });

  it('stop() returns when it lands while workers are still marking their last batches (20 times)', async () => {
    // Stopping right at the last ack catches workers between marking a batch and going to sleep; a worker that
    // went to sleep after stop() woke the sleepers would wait forever, and so would stop().
    for (let round = 0; round < 20; round++) {
      const broker = new MemoryBroker();
      const relay = testRelay(h, broker, { batchSize: 5, concurrency: 4, pollIntervalMs: 60_000 });
      await commit(Array.from({ length: 40 }, (_, i) => ({ topic: 't', payload: i })));
      const published = new Promise<void>((resolve) => {
        let count = 0;
        relay.on('published', (messages) => {
          count += messages.length;
          if (count === 40) resolve();
        });
      });
      relay.start();
      await published;
      await relay.stop({ drainMs: 5000 });
      await waitFor(async () => (await h.rows()).length === 0, 5000, 'the last marks');
    }
  });

  it('wakes at once on kick() instead of waiting for its next poll', async () => {
    const broker = new MemoryBroker();
    const relay = testRelay(h, broker, { pollIntervalMs: 60_000, minPollIntervalMs: 60_000 });
    relay.start();
    started.push(relay);
    await new Promise((resolve) => setTimeout(resolve, 100));
    await commit([{ id: 'kicked', topic: 't', payload: 1 }]);
    relay.kick();
    await waitFor(() => broker.accepted.length === 1, 3000, 'the kicked publish');
  });

  it('keeps sent rows for the retention window, then deletes them; dead rows stay', async () => {
    const broker = new MemoryBroker().fail({ kind: 'permanent' }, { where: (m) => m.id === 'dead' });
    const relay = testRelay(h, broker, { retainSentMs: 300 });
    await commit([
      { id: 'sent', topic: 't', key: 'k', payload: 1 },
      { id: 'dead', topic: 't', payload: 2 },
    ]);
    await drain(relay);
    const rows = await h.rows();
    expect(rows.map((r) => [r.id, r.state, r.ready])).toEqual([
      ['sent', 'sent', false],
      ['dead', 'dead', true],
    ]);
    expect(rows[0]!.sentAt).not.toBeNull();
    expect(await relay.cleanup()).toBe(0);
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(await relay.cleanup()).toBe(1);
    expect((await h.rows()).map((r) => r.id)).toEqual(['dead']);
    expect(await h.heads()).toEqual(new Map());
  });

  it('with 3 relays on one table and 10k messages: every message published, none twice, per-key order kept', async () => {
    const broker = new MemoryBroker();
    const relays = [1, 2, 3].map((n) => testRelay(h, broker, { instanceId: `relay-${n}`, batchSize: 50 }));
    const expected = new Map<string, string[]>();
    for (let batch = 0; batch < 20; batch++) {
      const messages = Array.from({ length: 500 }, (_, i) => {
        const n = batch * 500 + i;
        return { id: `m-${n}`, topic: 't', key: n % 10 === 0 ? null : `key-${n % 97}`, payload: n };
      });
      await commit(messages);
      for (const m of messages) if (m.key !== null) expected.set(m.key, [...(expected.get(m.key) ?? []), m.id]);
    }
    for (const relay of relays) {
      relay.start();
      started.push(relay);
    }
    await waitFor(() => broker.accepted.length >= 10_000, 120_000, 'all 10k messages');
    await new Promise((resolve) => setTimeout(resolve, 200));
    const received = ids(broker);
    expect(received).toHaveLength(10_000);
    expect(new Set(received).size).toBe(10_000);
    for (const [key, order] of expected) expect(ids(broker, key)).toEqual(order);
    expect(await h.rows()).toEqual([]);
  });
});

describe('relay wake-ups', () => {
  const started: Relay[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((relay) => relay.stop({ drainMs: 100 })));
  });

  describe.each(DIALECTS)('on %s', (dialect) => {
    let h: Harness;
    beforeAll(async () => {
      h = await createHarness(dialect);
    });
    afterAll(async () => h?.destroy());

    it('polls adaptively without LISTEN: backs off while idle, fast again once work appears', async () => {
      const broker = new MemoryBroker();
      const relay = testRelay(h, broker, { minPollIntervalMs: 20, pollIntervalMs: 400, concurrency: 2 });
      let claims = 0;
      // Counts the workers' claims (a private step of the worker loop).
      const worker = relay as unknown as { claim(): Promise<unknown> };
      const claim = worker.claim.bind(relay);
      worker.claim = async () => {
        claims++;
        return claim();
      };
      relay.start();
      started.push(relay);
      await new Promise((resolve) => setTimeout(resolve, 1500));
      // Fixed 20 ms polling would have claimed about 75 times; doubling up to 400 ms claims about 8 times.
      expect(claims).toBeGreaterThanOrEqual(3);
      expect(claims).toBeLessThanOrEqual(12);
      await h.db.transaction().execute((trx) => h.outbox.enqueue(trx, { topic: 't', payload: 1 }));
      await waitFor(() => broker.accepted.length === 1, 3000, 'the polled publish');
    });
  });

  describe('on postgres', () => {
    let h: Harness;
    beforeAll(async () => {
      h = await createHarness('postgres');
    });
    afterAll(async () => h?.destroy());
    it("with LISTEN and polling all but off, drains one key's backlog at once: a sent head's successor is claimed without a poll", async () => {
      const broker = new MemoryBroker();
      await h.db.transaction().execute((trx) =>
        h.outbox.enqueue(
          trx,
          Array.from({ length: 30 }, (_, i) => ({ id: `one-key-${i}`, topic: 't', key: 'K', payload: i })),
        ),
      );
      const relay = testRelay(h, broker, { listen: inject('pgUrl'), pollIntervalMs: 60_000, minPollIntervalMs: 60_000 });
      relay.start();
      started.push(relay);
      // Before, each successor waited for the next poll: 30 messages took 30 poll intervals (56.5 s at 2 s).
      await waitFor(() => broker.accepted.length === 30, 10_000, "the key's 30 messages");
      expect(broker.accepted.map((m) => m.id)).toEqual(Array.from({ length: 30 }, (_, i) => `one-key-${i}`));
    });

    it('wakes on LISTEN/NOTIFY when a producer commits, with polling all but off', async () => {
      const broker = new MemoryBroker();
      const relay = testRelay(h, broker, { listen: inject('pgUrl'), pollIntervalMs: 60_000 });
      const notifying = h.createOutbox({ notify: true });
      const errors: Error[] = [];
      relay.on('error', (error) => errors.push(error));
      relay.start();
      started.push(relay);
      await new Promise((resolve) => setTimeout(resolve, 300));
      const commit = (messages: OutboxMessage[]) => h.db.transaction().execute((trx) => notifying.enqueue(trx, messages));
      // One message and a batch take different statements; each must notify.
      await commit([{ id: 'notified', topic: 't', payload: 1 }]);
      await waitFor(() => broker.accepted.length === 1, 3000, 'the notified publish');
      await new Promise((resolve) => setTimeout(resolve, 300));
      await commit([
        { id: 'notified-batch-1', topic: 't', key: 'k', payload: 2 },
        { id: 'notified-batch-2', topic: 't', payload: 3 },
      ]);
      await waitFor(() => broker.accepted.length === 3, 3000, 'the notified batch');
      expect(errors).toEqual([]);
    });
  });
});

describe('relay options', () => {
  it.each([
    ['a lease no longer than the publish deadline', { leaseMs: 1000, publishTimeoutMs: 1000 }, /leaseMs/],
    ['an unknown dead-letter policy', { deadLetterPolicy: 'retry-forever' }, /deadLetterPolicy/],
    ['a zero batch size', { batchSize: 0 }, /batchSize/],
    ['a broker without publish', { broker: {} }, /broker/],
    ['a table name with SQL in it', { table: 'x; DROP TABLE y' }, /table/],
  ])('refuses %s with a ConfigError', (_what, options, message) => {
    const make = () =>
      createRelay({
        db: { executeQuery: () => undefined } as never,
        dialect: 'postgres',
        broker: new MemoryBroker(),
        ...options,
      } as never);
    expect(make).toThrow(ConfigError);
    expect(make).toThrow(message);
  });
});
