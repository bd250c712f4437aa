import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { MemoryBroker, type OutboxMessage } from '../../src/index.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';
import { clearTables, drain, storeFor, testRelay } from '../support/relay-helpers.js';

/**
 * A message that commits late (its key's head was chosen while its transaction was open) keeps its place before
 * every message enqueued after it committed, and before the later messages of its own transaction: the promise of
 * docs/guarantees.md. Each case is an interleaving the schedule explorer found (issue #23).
 */
describe.each(DIALECTS)('late commits keep their place on %s', (dialect) => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness(dialect);
  });
  afterAll(async () => h?.destroy());
  beforeEach(async () => {
    vi.restoreAllMocks();
    await clearTables(h);
  });

  // Ids are new in every test: InnoDB's unique check of a deleted, not yet purged id would make producers wait.
  let test = 0;
  beforeEach(() => void test++);
  const message = (id: string): OutboxMessage => ({ id: `${id}@${test}`, topic: 't', key: 'K', payload: id });
  const commit = (ids: string[]) => h.db.transaction().execute((trx) => h.outbox.enqueue(trx, ids.map(message)));
  const limits = { count: 10, bytes: 1e9 };

  /** Opens a transaction that enqueues `first` and stays open while `meanwhile` runs; then `more`, then commit. */
  const late = async (first: string, meanwhile: () => Promise<void>, more: string[] = []) => {
    const open = await h.db.startTransaction().execute();
    try {
      await h.outbox.enqueue(open, message(first));
      await meanwhile();
      if (more.length > 0) await h.outbox.enqueue(open, more.map(message));
    } catch (error) {
      await open.rollback().execute();
      throw error;
    }
    await open.commit().execute();
  };

  /** Completes the head in flight, then lets a relay publish the rest; returns what the broker received. */
  const finish = async (
    store: ReturnType<typeof storeFor>,
    inFlight: Awaited<ReturnType<ReturnType<typeof storeFor>['claim']>>,
  ) => {
    await store.complete(inFlight, 'relay-a:1', false);
    const broker = new MemoryBroker();
    await drain(testRelay(h, broker));
    return broker.received().map((m) => m.id.split('@')[0]);
  };

  it('a message enqueued after a late commit is published after it, though the late one took its seq first', async () => {
    const store = storeFor(h);
    let inFlight: Awaited<ReturnType<typeof store.claim>> = [];
    await late('a', async () => {
      await commit(['h']);
      inFlight = await store.claim(limits, 'relay-a:1', 60_000);
    });
    expect(inFlight.map((m) => m.id)).toEqual([`h@${test}`]);
    // a has committed: b, enqueued only now, must come after it.
    await commit(['b']);
    await h.sequence();
    expect(await finish(store, inFlight)).toEqual(['a', 'b']);
  });

  it("a late transaction's messages keep their enqueue order", async () => {
    const store = storeFor(h);
    let inFlight: Awaited<ReturnType<typeof store.claim>> = [];
    await late(
      'x1',
      async () => {
        await commit(['h']);
        inFlight = await store.claim(limits, 'relay-a:1', 60_000);
      },
      ['x2'],
    );
    expect(inFlight.map((m) => m.id)).toEqual([`h@${test}`]);
    await h.sequence();
    expect(await finish(store, inFlight)).toEqual(['x1', 'x2']);
  });

  it("a late commit behind the sequencing scan's cursor is sequenced with the later messages of its key", async () => {
    // Time stands still: the relay's scans resume from their cursors instead of starting over.
    const now = performance.now();
    vi.spyOn(performance, 'now').mockReturnValue(now);
    const store = storeFor(h);
    let inFlight: Awaited<ReturnType<typeof store.claim>> = [];
    await late('a', async () => {
      await commit(['h']);
      inFlight = await store.claim(limits, 'relay-a:1', 60_000);
    });
    await commit(['b']);
    // The same relay sequences again: its cursor is past a's seq, b is beyond it.
    expect(await store.claim(limits, 'relay-a:2', 60_000)).toEqual([]);
    vi.restoreAllMocks();
    expect(await finish(store, inFlight)).toEqual(['a', 'b']);
  });

  it('sequencing a late commit never waits on a producer holding the next id open', async () => {
    const store = storeFor(h);
    let inFlight: Awaited<ReturnType<typeof store.claim>> = [];
    await late('m2', async () => {
      await commit(['h0']);
      inFlight = await store.claim(limits, 'relay-a:1', 60_000);
    });
    // A producer's uncommitted row holds the id right after m2's in the id index ...
    const open = await h.db.startTransaction().execute();
    try {
      await h.outbox.enqueue(open, { id: `n1@${test}`, topic: 't', key: 'Z', payload: 'n1' });
      // ... and m2, late, must go behind h0: the relay's claim comes back while the producer is still open.
      await storeFor(h).claim(limits, 'relay-b:1', 60_000);
    } finally {
      await open.rollback().execute();
    }
    expect(await finish(store, inFlight)).toEqual(['m2']);
  });
});
