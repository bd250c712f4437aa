import { describe, expect, it } from 'vitest';
import { createRelay, MemoryBroker, type Broker, type Relay, type RelayOptions } from '../../src/index.js';
import { MemoryRelayStore } from '../support/memory-relay-store.js';

/** The relay's loop on an in-memory store: no database, so these run in milliseconds. */
function relayOn(store: MemoryRelayStore, broker: Broker, options: Partial<RelayOptions<unknown>> = {}): Relay {
  return createRelay({
    db: { executeQuery: () => undefined } as never,
    dialect: 'postgres',
    broker,
    store,
    leaseMs: 1000,
    publishTimeoutMs: 200,
    backoff: { initialMs: 1000, maxMs: 1000, factor: 2 },
    random: () => 1,
    ...options,
  });
}

/** A broker that records the ids of every publish call, batch by batch. */
function recording(inner: Broker = new MemoryBroker()): Broker & { batches: string[][] } {
  const batches: string[][] = [];
  return {
    name: 'recording',
    batches,
    publish(messages, context) {
      batches.push(messages.map((m) => m.id));
      return inner.publish(messages, context);
    },
  };
}

describe('the relay loop on an in-memory store', () => {
  it('settles each outcome: sent is deleted, a failure waits out its backoff, the last attempt and a permanent error are dead', async () => {
    const store = new MemoryRelayStore();
    for (const id of ['ok', 'flaky', 'last', 'refused']) store.add(id);
    store.row('last')!.attempts = 2;
    const broker = new MemoryBroker()
      .fail({ kind: 'retryable', error: 'try later' }, { where: (m) => m.id === 'flaky' || m.id === 'last' })
      .fail({ kind: 'permanent', error: 'no such queue' }, { where: (m) => m.id === 'refused' });
    const relay = relayOn(store, broker, { maxAttempts: 3 });
    const before = Date.now();
    expect(await relay.runOnce()).toEqual({ claimed: 4, published: 1, retried: 1, dead: 2 });
    expect(store.row('ok')).toBeUndefined();
    expect(store.row('flaky')).toMatchObject({ state: 'pending', attempts: 1, leaseOwner: null, lastError: 'memory: try later' });
    expect(store.row('flaky')!.dueAt).toBeGreaterThanOrEqual(before + 1000);
    expect(store.row('last')).toMatchObject({ state: 'dead', lastError: 'memory: gave up after 3 attempts: try later' });
    expect(store.row('refused')).toMatchObject({ state: 'dead', lastError: 'memory: no such queue' });
  });

  it('treats a publish past its deadline as unknown and retries it with the same id', async () => {
    const store = new MemoryRelayStore();
    store.add('slow');
    const silent: Broker = { name: 'silent', publish: () => new Promise(() => {}) };
    const relay = relayOn(store, silent);
    expect(await relay.runOnce()).toMatchObject({ claimed: 1, retried: 1 });
    expect(store.row('slow')!.lastError).toMatch(/no acknowledgement within 200 ms/);
  });

  it('publishes a message taken over from a lost lease on its own, after its batch, and buries one that killed a relay publishing it alone once it reaches maxAttempts', async () => {
    const store = new MemoryRelayStore();
    for (const id of ['a', 'b', 'poison', 'c']) store.add(id);
    // A relay claimed all four and died mid-publish: its lease ran out at once.
    await store.claim({ count: 10, bytes: 1e9 }, 'dead-relay:1', 0);
    store.add('fresh');
    const broker = recording();
    const relay = relayOn(store, broker, { maxAttempts: 3 });
    await relay.runOnce();
    // The fresh message goes as a batch; each taken-over one alone, under a token of its own.
    expect(broker.batches).toEqual([['fresh'], ['a'], ['b'], ['poison'], ['c']]);
    expect(store.rows).toEqual([]);

    // 'p2' killed the relay that published it alone (its lease was an '#alone' one): it goes after the others.
    store.add('p2');
    store.add('d');
    await store.claim({ count: 10, bytes: 1e9 }, 'relay-x:1', 0);
    store.row('p2')!.leaseOwner = 'relay-x:2#alone';
    const next = recording();
    await relayOn(store, next, { maxAttempts: 3 }).runOnce();
    expect(next.batches).toEqual([['d'], ['p2']]);

    // 'p3' did so on its second attempt: this claim is its third and last, so it is dead without another try.
    store.add('p3');
    store.add('e');
    await store.claim({ count: 10, bytes: 1e9 }, 'relay-y:1', 0);
    Object.assign(store.row('p3')!, { leaseOwner: 'relay-y:2#alone', attempts: 2 });
    const last = recording();
    const dead: string[] = [];
    const relay3 = relayOn(store, last, { maxAttempts: 3 });
    relay3.on('dead', (messages) => dead.push(...messages.map((m) => m.message.id)));
    await relay3.runOnce();
    expect(last.batches).toEqual([['e']]);
    expect(dead).toEqual(['p3']);
    expect(store.row('p3')).toMatchObject({ state: 'dead', attempts: 3 });
    expect(store.row('p3')!.lastError).toMatch(/gave up after 3 attempts: .*lost its lease/);
  });

  it('renews the leases of taken-over messages still waiting their turn to go alone, so no other relay takes them over meanwhile', async () => {
    const store = new MemoryRelayStore();
    for (let i = 0; i < 10; i++) store.add(`s-${i}`);
    await store.claim({ count: 10, bytes: 1e9 }, 'dead-relay:1', 0);
    const slow = (received: string[]): Broker => ({
      name: 'slow',
      async publish(messages) {
        received.push(...messages.map((m) => m.id));
        await new Promise((resolve) => setTimeout(resolve, 60));
        return messages.map(() => ({ status: 'ok' as const }));
      },
    });
    const received: string[] = [];
    const receivedByOther: string[] = [];
    // Ten alone at 60 ms each outlast a 300 ms lease; another relay keeps claiming meanwhile.
    const relay = relayOn(store, slow(received), { leaseMs: 300, publishTimeoutMs: 150 });
    const other = relayOn(store, slow(receivedByOther), { leaseMs: 300, publishTimeoutMs: 150 });
    const running = relay.runOnce();
    let done = false;
    void running.then(() => (done = true));
    while (!done) {
      await other.runOnce();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(received.sort()).toEqual(Array.from({ length: 10 }, (_, i) => `s-${i}`).sort());
    expect(receivedByOther).toEqual([]);
    expect(store.rows).toEqual([]);
  });

  it("moves a key's backlog on at once when its head is sent, without waiting for a poll", async () => {
    const store = new MemoryRelayStore();
    for (let i = 0; i < 30; i++) store.add(`k-${i}`, 'K');
    const broker = new MemoryBroker();
    const relay = relayOn(store, broker, { pollIntervalMs: 60_000, minPollIntervalMs: 60_000 });
    relay.start();
    try {
      await new Promise<void>((resolve, reject) => {
        const deadline = setTimeout(() => reject(new Error(`only ${broker.accepted.length} of 30 published`)), 5000);
        const check = setInterval(() => {
          if (broker.accepted.length < 30) return;
          clearTimeout(deadline);
          clearInterval(check);
          resolve();
        }, 5);
      });
    } finally {
      await relay.stop({ drainMs: 100 });
    }
    expect(broker.accepted.map((m) => m.id)).toEqual(Array.from({ length: 30 }, (_, i) => `k-${i}`));
  });

  it('stop() returns within drainMs and its grace even while the database never answers, and says so', async () => {
    const store = new MemoryRelayStore();
    store.add('m');
    store.stall.complete = new Promise(() => {});
    const broker = new MemoryBroker();
    const relay = relayOn(store, broker, { pollIntervalMs: 10, minPollIntervalMs: 10 });
    const errors: string[] = [];
    relay.on('error', (error) => errors.push(error.message));
    relay.start();
    while (broker.accepted.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    const outcome = await Promise.race([
      relay.stop({ drainMs: 100 }).then(() => 'stopped'),
      new Promise((resolve) => setTimeout(() => resolve('hung'), 5000)),
    ]);
    expect(outcome).toBe('stopped');
    expect(errors.join('\n')).toMatch(/still in a database call/);
  });
});
