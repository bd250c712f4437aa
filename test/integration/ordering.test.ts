import { fork } from 'node:child_process';
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { MemoryBroker, type OutboxMessage, type Relay } from '../../src/index.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';
import { clearTables, drain, storeFor, testRelay, waitFor } from '../support/relay-helpers.js';

/**
 * Per-key order is the relay's business alone: producers only insert, and nothing a producer holds can stall,
 * deadlock or mislead a relay. Each test here reproduces a failure of the producer-side key locks and counts that
 * txoutbox used before (issue #11) and shows it gone.
 */
describe.each(DIALECTS)('per-key order without producer locks on %s', (dialect) => {
  let h: Harness;
  const started: Relay[] = [];
  beforeAll(async () => {
    h = await createHarness(dialect, 40);
  });
  afterAll(async () => h?.destroy());
  beforeEach(async () => clearTables(h));
  afterEach(async () => {
    await Promise.all(started.splice(0).map((relay) => relay.stop({ drainMs: 100 })));
  });

  const commit = (messages: OutboxMessage[]) => h.db.transaction().execute((trx) => h.outbox.enqueue(trx, messages));
  const run = (relay: Relay) => {
    relay.start();
    started.push(relay);
    return relay;
  };
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it('an open producer transaction holding a key stalls neither the other keys nor stop()', async () => {
    const broker = new MemoryBroker();
    await commit([{ id: 'k-0', topic: 't', key: 'K', payload: 0 }]);
    // A producer enqueues for K and stays open (slow work after the enqueue, or a leaked transaction).
    const open = await h.db.startTransaction().execute();
    await h.outbox.enqueue(open, { id: 'k-1', topic: 't', key: 'K', payload: 1 });
    try {
      await commit(Array.from({ length: 300 }, (_, i) => ({ id: `o-${i}`, topic: 't', key: `other-${i % 50}`, payload: i })));
      // K's committed head goes out in a batch with the others; with the producer-side key lock, marking that batch
      // sent waited for the open transaction, and nothing more was published.
      const relay = run(testRelay(h, broker, { batchSize: 100 }));
      await waitFor(() => broker.accepted.length >= 301, 20_000, 'every committed message while K is held open');
      expect(broker.received().map((m) => m.id)).not.toContain('k-1');
      const stopped = await Promise.race([relay.stop({ drainMs: 200 }).then(() => 'stopped'), sleep(5000).then(() => 'hung')]);
      expect(stopped).toBe('stopped');
    } finally {
      await open.commit().execute();
    }
    await drain(testRelay(h, broker));
    expect(
      broker
        .received()
        .filter((m) => m.key === 'K')
        .map((m) => m.id),
    ).toEqual(['k-0', 'k-1']);
  });

  it('20,000 keyed messages from 8 producers taking keys in random order in separate calls, 3 relays: no deadlock, none lost, none twice, order kept', async () => {
    const broker = new MemoryBroker();
    const errors: Error[] = [];
    const relays = [1, 2, 3].map((n) => testRelay(h, broker, { instanceId: `relay-${n}`, batchSize: 50 }));
    for (const relay of relays) relay.on('error', (error) => errors.push(error));
    relays.forEach(run);
    const keys = Array.from({ length: 40 }, (_, i) => `key-${i}`);
    const PRODUCERS = 8;
    const TOTAL = 20_000;
    let written = 0;
    let failedTransactions = 0;
    const producer = async (p: number) => {
      let n = 0;
      while (written < TOTAL) {
        // Two or three distinct keys, in random order, each enqueued in a call of its own.
        const picked = [...keys].sort(() => Math.random() - 0.5).slice(0, 2 + Math.floor(Math.random() * 2));
        written += picked.length;
        try {
          await h.db.transaction().execute(async (trx) => {
            for (const key of picked) {
              await h.outbox.enqueue(trx, { id: `p${p}-${n++}`, topic: 't', key, payload: { p } });
              await sleep(Math.random() < 0.1 ? 1 : 0);
            }
          });
        } catch (error) {
          failedTransactions++;
          errors.push(error as Error);
        }
      }
      return n;
    };
    const counts = await Promise.all(Array.from({ length: PRODUCERS }, (_, p) => producer(p)));
    const total = counts.reduce((a, b) => a + b, 0);
    expect(total).toBeGreaterThanOrEqual(TOTAL);
    await waitFor(() => broker.accepted.length >= total, 180_000, `all ${total} messages`);
    await sleep(200);

    expect(failedTransactions).toBe(0);
    expect(errors.map((e) => e.message)).toEqual([]);
    const received = broker.received();
    expect(received).toHaveLength(total);
    expect(new Set(received.map((m) => m.id)).size).toBe(total);
    // A producer's transactions commit one after the other: per key, its messages go out in that order.
    const last = new Map<string, number>();
    for (const m of received) {
      const [p, n] = m.id.slice(1).split('-').map(Number) as [number, number];
      const slot = `${m.key}/${p}`;
      expect(n, `p${p}-${n} of ${m.key} after p${p}-${last.get(slot)}`).toBeGreaterThan(last.get(slot) ?? -1);
      last.set(slot, n);
    }
    expect(await h.rows()).toEqual([]);
  }, 240_000);

  it('a relay finishing late, after another took its lease over and went on, changes nothing of the key', async () => {
    await commit(['m1', 'm2', 'm3'].map((id) => ({ id, topic: 't', key: 'K', payload: id })));
    const store = storeFor(h);
    const limits = { count: 10, bytes: 1e9 };
    const stale = await store.claim(limits, 'relay-a:1', 150);
    expect(stale.map((m) => m.id)).toEqual(['m1']);
    await sleep(250);
    const fresh = await store.claim(limits, 'relay-b:1', 5000);
    expect(fresh.map((m) => m.id)).toEqual(['m1']);
    expect((await store.complete(fresh, 'relay-b:1', false)).sent.map((m) => m.id)).toEqual(['m1']);
    // Relay A's completion lands now (its pool was starved): nothing of it is A's any more.
    expect(await store.complete(stale, 'relay-a:1', false)).toEqual({ sent: [], promoted: 0 });
    expect((await h.rows()).map((r) => [r.id, r.ready])).toEqual([
      ['m2', true],
      ['m3', false],
    ]);
    const broker = new MemoryBroker();
    const published: string[][] = [];
    const relay = testRelay(h, broker);
    relay.on('published', (messages) => published.push(messages.map((m) => m.id)));
    await drain(relay);
    expect(published).toEqual([['m2'], ['m3']]);
  });

  it('a message that kills the relay process on every publish is dead after maxAttempts claims, and the messages claimed with it go out within two leases', async () => {
    const MAX_ATTEMPTS = 3;
    const companions = Array.from({ length: 12 }, (_, i) => ({
      id: `c-${i}`,
      topic: 't',
      key: i % 3 === 0 ? null : `k-${i}`,
      payload: i,
    }));
    await commit([
      ...companions.slice(0, 6),
      { id: 'poison', topic: 't', key: 'P', payload: 'kills the relay' },
      ...companions.slice(6),
      { id: 'behind-poison', topic: 't', key: 'P', payload: 'waits behind it' },
    ]);
    const script = new URL('../support/crash-relay-process.ts', import.meta.url).pathname;
    const url = dialect === 'postgres' ? inject('pgUrl') : inject('mysqlUrl');
    const accepted = new Map<string, number>();
    let crashes = 0;
    let deadAt = 0;
    for (let process = 1; process <= 2 * MAX_ATTEMPTS && deadAt === 0; process++) {
      const child = fork(script, [dialect, url, h.schema, 'poison', '1000', String(MAX_ATTEMPTS)], {
        execArgv: ['--import', 'tsx'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.on('message', (message: { accepted?: string[]; dead?: string[] }) => {
        for (const id of message.accepted ?? []) if (!accepted.has(id)) accepted.set(id, process);
        if (message.dead?.includes('poison')) deadAt = process;
      });
      // Each relay runs until it dies on the poison or buries it (then lets what was behind it go, and is stopped).
      const outcome = await Promise.race([
        exited.then(() => 'crashed'),
        waitFor(() => deadAt === process && companions.every((c) => accepted.has(c.id)), 30_000, 'the dead letter').then(
          () => 'buried',
        ),
      ]);
      if (outcome === 'crashed') crashes++;
      child.kill('SIGKILL');
      await exited;
    }
    expect(crashes).toBe(MAX_ATTEMPTS - 1);
    const poison = (await h.rows()).find((r) => r.id === 'poison');
    expect(poison).toMatchObject({ state: 'dead', attempts: MAX_ATTEMPTS });
    expect(poison!.lastError).toMatch(/lost its lease/);
    // Every companion was published by the relay that came after the second crash at the latest: two leases.
    for (const { id } of companions) expect(accepted.get(id), id).toBeLessThanOrEqual(MAX_ATTEMPTS);
    expect(accepted.has('poison')).toBe(false);
  }, 90_000);

  it("a message that commits after a later one of its key became the head goes behind the key's queue, in commit order", async () => {
    const open = await h.db.startTransaction().execute();
    const store = storeFor(h);
    let inFlight;
    try {
      await h.outbox.enqueue(open, { id: 'k1', topic: 't', key: 'K', payload: 1 });
      await commit(['k2', 'k3'].map((id) => ({ id, topic: 't', key: 'K', payload: id })));
      inFlight = await store.claim({ count: 10, bytes: 1e9 }, 'relay-a:1', 5000);
      expect(inFlight.map((m) => m.id)).toEqual(['k2']);
    } catch (error) {
      await open.rollback().execute();
      throw error;
    }
    await open.commit().execute();
    await h.sequence();
    // k1 took its seq first but committed after k2 was sequenced and in flight: it is renumbered behind k3.
    const rows = await h.rows();
    expect(rows.map((r) => [r.id, r.ready])).toEqual([
      ['k2', true],
      ['k3', false],
      ['k1', false],
    ]);
    await store.complete(inFlight, 'relay-a:1', false);
    const broker = new MemoryBroker();
    await drain(testRelay(h, broker));
    expect(broker.received().map((m) => m.id)).toEqual(['k3', 'k1']);
  });

  it('two relays given the same instanceId still claim under different tokens', async () => {
    await commit([
      { id: 'a', topic: 't', payload: 1 },
      { id: 'b', topic: 't', payload: 2 },
    ]);
    const broker = new MemoryBroker();
    const owners: string[] = [];
    for (const relay of [1, 2].map(() => testRelay(h, broker, { instanceId: 'same', batchSize: 1, retainSentMs: 60_000 }))) {
      await relay.runOnce();
    }
    for (const row of await h.rows()) owners.push(row.leaseOwner!);
    expect(owners).toHaveLength(2);
    expect(new Set(owners).size).toBe(2);
  });

  it('keeps per-key bookkeeping small: nothing per key is left once 5,000 keys have drained and a cleanup ran', async () => {
    for (let batch = 0; batch < 5; batch++) {
      await commit(
        Array.from({ length: 1000 }, (_, i) => ({ id: `d-${batch}-${i}`, topic: 't', key: `entity-${batch}-${i}`, payload: i })),
      );
    }
    const relay = testRelay(h, new MemoryBroker(), { batchSize: 500, cleanupBatchSize: 1000 });
    await drain(relay);
    await relay.cleanup();
    expect(await h.rows()).toEqual([]);
    // The producer-side design kept a row per key in <table>_keys and deleted at most cleanupBatchSize of them a round.
    const keysTable =
      dialect === 'postgres'
        ? await sql<{
            n: string;
          }>`SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = ${h.schema} AND table_name = 'txoutbox_keys'`.execute(
            h.db,
          )
        : await sql<{
            n: string;
          }>`SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = ${h.schema} AND table_name = 'txoutbox_keys'`.execute(
            h.db,
          );
    if (Number(keysTable.rows[0]!.n) > 0) {
      const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(h.schema, 'txoutbox_keys')}`.execute(h.db);
      expect(Number(rows[0]!.n)).toBeLessThanOrEqual(100);
    }
  });
});

/** What only MySQL had: a producer's count in two statements, and a key-row cleanup that producers queued behind. */
describe('per-key order without producer locks on mysql only', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness('mysql', 10);
  });
  afterAll(async () => h?.destroy());
  beforeEach(async () => clearTables(h));
  const commit = (messages: OutboxMessage[]) => h.db.transaction().execute((trx) => h.outbox.enqueue(trx, messages));
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it('an enqueue statement that fails (lock wait timeout) in a transaction committed anyway leaves its key working', async () => {
    // Another transaction holds the id uncommitted, so the insert waits for it and times out.
    const holder = await h.db.startTransaction().execute();
    await h.outbox.enqueue(holder, { id: 'contended', topic: 't', payload: 0 });
    const trx = await h.db.startTransaction().execute();
    try {
      await sql`SET SESSION innodb_lock_wait_timeout = 1`.execute(trx);
      await expect(h.outbox.enqueue(trx, { id: 'contended', topic: 't', key: 'K', payload: 1 })).rejects.toThrow(
        /Lock wait timeout/,
      );
      await sql`SET SESSION innodb_lock_wait_timeout = DEFAULT`.execute(trx);
      await h.insertOrder(trx, 'committed-anyway');
      await trx.commit().execute();
    } finally {
      await holder.rollback().execute();
    }
    await commit([{ id: 'k-later', topic: 't', key: 'K', payload: 2 }]);
    const broker = new MemoryBroker();
    await drain(testRelay(h, broker));
    expect(broker.received().map((m) => m.id)).toEqual(['k-later']);
  });

  it("the relay's cleanup never makes a producer wait, whatever other producers hold open", async () => {
    // Both keys had a message that was sent; now a producer holds an enqueue for 'b-busy' open.
    await commit([
      { id: 'q-0', topic: 't', key: 'a-quiet', payload: 0 },
      { id: 'b-0', topic: 't', key: 'b-busy', payload: 0 },
    ]);
    const relay = testRelay(h, new MemoryBroker());
    await drain(relay);
    const open = await h.db.startTransaction().execute();
    await h.outbox.enqueue(open, { id: 'b-1', topic: 't', key: 'b-busy', payload: 1 });
    try {
      // The key-row cleanup used to wait on the open producer while holding the rows it had deleted, and a
      // producer of an unrelated key then waited behind it.
      const cleanup = relay.cleanup();
      await sleep(200);
      const produced = await Promise.race([
        commit([{ id: 'q-1', topic: 't', key: 'a-quiet', payload: 2 }]).then(() => 'committed'),
        sleep(3000).then(() => 'waited'),
      ]);
      expect(produced).toBe('committed');
      await cleanup;
    } finally {
      await open.rollback().execute();
    }
  });
});

describe('PostgreSQL producers above READ COMMITTED', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness('postgres', 10);
  });
  afterAll(async () => h?.destroy());
  beforeEach(async () => clearTables(h));

  it.each(['repeatable read', 'serializable'] as const)(
    'at %s, enqueue never fails because a relay sent a message of the same key after the snapshot',
    async (level) => {
      await h.db.transaction().execute((trx) => h.outbox.enqueue(trx, { id: 'first', topic: 't', key: 'K', payload: 1 }));
      const producer = await h.db.startTransaction().setIsolationLevel(level).execute();
      try {
        await h.insertOrder(producer, 'snapshot-taken');
        await drain(testRelay(h, new MemoryBroker()));
        await expect(h.outbox.enqueue(producer, { topic: 't', key: 'K', payload: 2 })).resolves.toMatchObject({
          duplicate: false,
        });
        await producer.commit().execute();
      } catch (error) {
        await producer.rollback().execute();
        throw error;
      }
      expect((await h.rows()).map((r) => r.key)).toEqual(['K']);
    },
  );

  it.each(['repeatable read', 'serializable'] as const)(
    'at %s, a duplicate id committed by a concurrent transaction is reported as a duplicate, not a failed transaction',
    async (level) => {
      const producer = await h.db.startTransaction().setIsolationLevel(level).execute();
      try {
        await h.insertOrder(producer, `snapshot-${level}`);
        await h.db.transaction().execute((trx) => h.outbox.enqueue(trx, { id: 'racing-id', topic: 't', payload: 'theirs' }));
        const results = await h.outbox.enqueue(producer, [
          { id: 'racing-id', topic: 't', payload: 'mine' },
          { id: 'my-own', topic: 't', key: 'k', payload: 'mine too' },
        ]);
        expect(results).toEqual([
          { id: 'racing-id', duplicate: true },
          { id: 'my-own', duplicate: false },
        ]);
        await producer.commit().execute();
      } catch (error) {
        await producer.rollback().execute();
        throw error;
      }
      expect((await h.rows()).map((r) => [r.id, r.payload.toString()])).toEqual([
        ['racing-id', '"theirs"'],
        ['my-own', '"mine too"'],
      ]);
    },
  );

  it('relays whose database defaults to REPEATABLE READ contend without serialization failures', async () => {
    const pg = await import('pg');
    const { Kysely, PostgresDialect } = await import('kysely');
    const pool = new pg.default.Pool({
      connectionString: inject('pgUrl'),
      max: 6,
      options: '-c default_transaction_isolation=repeatable\\ read',
    });
    const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool }) });
    try {
      await h.db.transaction().execute((trx) =>
        h.outbox.enqueue(
          trx,
          Array.from({ length: 600 }, (_, i) => ({
            id: `rr-${i}`,
            topic: 't',
            key: i % 2 === 0 ? `k-${i % 30}` : null,
            payload: i,
          })),
        ),
      );
      const broker = new MemoryBroker();
      const errors: Error[] = [];
      const relays = [1, 2, 3].map(() => testRelay(h, broker, { db, batchSize: 10, concurrency: 2 }));
      for (const relay of relays) {
        relay.on('error', (error) => errors.push(error));
        relay.start();
      }
      await waitFor(() => broker.accepted.length >= 600, 30_000, 'all 600 messages');
      await Promise.all(relays.map((relay) => relay.stop({ drainMs: 100 })));
      expect(errors.map((e) => e.message)).toEqual([]);
      expect(new Set(broker.received().map((m) => m.id)).size).toBe(600);
    } finally {
      await db.destroy();
    }
  });
});

describe.each(DIALECTS)('the published event on a takeover on %s', (dialect) => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness(dialect, 10);
  });
  afterAll(async () => h?.destroy());

  it('counts only the messages this relay marked sent, not those another relay took over', async () => {
    await h.db.transaction().execute((trx) =>
      h.outbox.enqueue(trx, [
        { id: 'x', topic: 't', payload: 1 },
        { id: 'y', topic: 't', payload: 2 },
      ]),
    );
    // Relay A's broker acknowledges, but its completion only reaches the database after its lease ran out (a
    // starved pool, say), when relay B has taken both messages over and marked them sent.
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const store = storeFor(h);
    const late = {
      ...store,
      complete: async (...args: Parameters<typeof store.complete>) => (await gate, store.complete(...args)),
    };
    const a = testRelay(h, new MemoryBroker(), { leaseMs: 200, publishTimeoutMs: 100, store: late });
    const published: string[] = [];
    a.on('published', (messages) => published.push(...messages.map((m) => m.id)));
    const running = a.runOnce();
    await new Promise((resolve) => setTimeout(resolve, 300));
    const b = new MemoryBroker();
    await drain(testRelay(h, b));
    expect(b.received().map((m) => m.id)).toEqual(['x', 'y']);
    release();
    expect(await running).toMatchObject({ claimed: 2, published: 0 });
    expect(published).toEqual([]);
  });
});
