import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { MemoryBroker, type OutboxMessage } from '../../src/index.js';
import type { AdminStore } from '../../src/dialects/admin.js';
import { adminStoreFor } from '../../src/dialects/index.js';
import { tableNames } from '../../src/dialects/identifiers.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';
import { clearTables, drain, testRelay } from '../support/relay-helpers.js';

describe.each(DIALECTS)('dead-letter retry and discard on %s', (dialect) => {
  let h: Harness;
  let admin: AdminStore;
  beforeAll(async () => {
    h = await createHarness(dialect);
    admin = adminStoreFor(dialect, h.db, tableNames('txoutbox', h.schema));
  });
  afterAll(async () => h?.destroy());
  beforeEach(async () => clearTables(h));

  const commit = (messages: OutboxMessage[]) => h.db.transaction().execute((trx) => h.outbox.enqueue(trx, messages));
  const poisoned = (ids: string[]) =>
    new MemoryBroker().fail({ kind: 'permanent', error: 'poison pill' }, { times: ids.length, where: (m) => ids.includes(m.id) });
  const received = (broker: MemoryBroker) => broker.received().map((m) => m.id);
  const seqsOf = async (ids: string[]) => (await admin.listDead({ ids }, 100)).map((row) => row.seq);

  /** The table's invariants: per key with pending messages, exactly one head (a dead head counts); never two. */
  async function expectInvariants() {
    const rows = (await h.rows()).filter((row) => row.state !== 'sent');
    const keys = new Set(rows.flatMap((row) => (row.key === null ? [] : [row.key])));
    for (const key of keys) {
      const unsent = rows.filter((row) => row.key === key);
      expect(unsent.filter((row) => row.ready).length, `heads of key ${key}`).toBeLessThanOrEqual(1);
      if (unsent.some((row) => row.state === 'pending'))
        expect(
          unsent.some((row) => row.ready),
          `key ${key} has a head`,
        ).toBe(true);
    }
  }

  it("under 'block-key', a dead head keeps its key; retry publishes it and then the rest, in order", async () => {
    await commit(['a1', 'a2', 'a3'].map((id) => ({ id, topic: 'orders', key: 'A', payload: id })));
    const broker = poisoned(['a1']);
    const relay = testRelay(h, broker);
    await drain(relay);
    expect(received(broker)).toEqual([]);
    const [dead] = await admin.listDead({}, 10);
    expect(dead).toMatchObject({ id: 'a1', key: 'A', holdsKey: true, lastError: expect.stringContaining('poison pill') });
    await expectInvariants();

    expect(await admin.retryDead([dead!.seq])).toBe(1);
    await expectInvariants();
    expect((await h.rows()).find((row) => row.id === 'a1')).toMatchObject({ state: 'pending', attempts: 0, ready: true });
    await drain(relay);
    expect(received(broker)).toEqual(['a1', 'a2', 'a3']);
    expect(await h.rows()).toEqual([]);
    await expectInvariants();
  });

  it("under 'block-key', discarding the dead head moves its key on to the next message", async () => {
    await commit(['b1', 'b2', 'b3'].map((id) => ({ id, topic: 'orders', key: 'B', payload: id })));
    const broker = poisoned(['b1']);
    const relay = testRelay(h, broker);
    await drain(relay);
    expect(await admin.discardDead(await seqsOf(['b1']))).toBe(1);
    await expectInvariants();
    await drain(relay);
    expect(received(broker)).toEqual(['b2', 'b3']);
    expect(await h.rows()).toEqual([]);
    await expectInvariants();
  });

  it("under 'skip', a retried message that gave its key up waits behind the key's unsent messages", async () => {
    await commit(['c1', 'c2'].map((id) => ({ id, topic: 'orders', key: 'C', payload: id })));
    const broker = poisoned(['c1']);
    const relay = testRelay(h, broker, { deadLetterPolicy: 'skip' });
    // c1 dies and gives the key to c2, which is claimed next; c3 arrives while c2 is still unsent.
    await relay.runOnce();
    expect((await admin.listDead({}, 10))[0]).toMatchObject({ id: 'c1', holdsKey: false });
    await commit([{ id: 'c3', topic: 'orders', key: 'C', payload: 'c3' }]);
    await expectInvariants();

    expect(await admin.retryDead(await seqsOf(['c1']))).toBe(1);
    await expectInvariants();
    expect((await h.rows()).find((row) => row.id === 'c1')).toMatchObject({ state: 'pending', ready: false });
    await drain(relay);
    // c2 was the head when c1 came back, and c3 waited behind it: c1 goes to the back of the key's queue.
    expect(received(broker)).toEqual(['c2', 'c3', 'c1']);
    expect(await h.rows()).toEqual([]);
    await expectInvariants();
  });

  it("under 'skip', a retried message heads its key again when nothing else of the key is unsent", async () => {
    await commit([
      { id: 'd1', topic: 'orders', key: 'D', payload: 'd1' },
      { id: 'd2', topic: 'orders', payload: 'keyless' },
    ]);
    const broker = poisoned(['d1', 'd2']);
    const relay = testRelay(h, broker, { deadLetterPolicy: 'skip' });
    await drain(relay);
    expect(await h.heads()).toEqual(new Map([['D', 0]]));
    expect(await admin.retryDead(await seqsOf(['d1', 'd2']))).toBe(2);
    await expectInvariants();
    await drain(relay);
    expect(received(broker).sort()).toEqual(['d1', 'd2']);
    expect(await h.rows()).toEqual([]);
    await expectInvariants();
  });

  it('discarding a dead letter that gave its key up touches no other message', async () => {
    await commit(['e1', 'e2'].map((id) => ({ id, topic: 'orders', key: 'E', payload: id })));
    const broker = poisoned(['e1']);
    const relay = testRelay(h, broker, { deadLetterPolicy: 'skip' });
    await drain(relay);
    expect(await admin.discardDead(await seqsOf(['e1']))).toBe(1);
    expect(await admin.discardDead(await seqsOf(['e1']))).toBe(0);
    expect(received(broker)).toEqual(['e2']);
    expect(await h.rows()).toEqual([]);
    await expectInvariants();
  });

  it('retry and discard act only on rows that are still dead', async () => {
    await commit([{ id: 'f1', topic: 'orders', key: 'F', payload: 'f1' }]);
    const broker = poisoned(['f1']);
    await drain(testRelay(h, broker));
    const seqs = await seqsOf(['f1']);
    expect(await admin.retryDead(seqs)).toBe(1);
    expect(await admin.retryDead(seqs)).toBe(0);
    expect(await admin.discardDead(seqs)).toBe(0);
    expect((await h.rows()).map((row) => row.state)).toEqual(['pending']);
    await expectInvariants();
  });

  it('filters dead letters by topic pattern, key, error text, age and ids', async () => {
    await commit([
      { id: 'g1', topic: 'orders.created', key: 'G', payload: 1 },
      { id: 'g2', topic: 'orders.paid', key: 'H', payload: 2 },
      { id: 'g3', topic: 'users.created', payload: 3 },
      { id: 'g_%', topic: 'users.created', payload: 4 },
    ]);
    const broker = new MemoryBroker()
      .fail({ kind: 'permanent', error: 'Schema Mismatch' }, { where: (m) => m.id === 'g1' || m.id === 'g3' })
      .fail({ kind: 'permanent', error: 'no route' });
    await drain(testRelay(h, broker));
    const ids = async (filter: Parameters<AdminStore['listDead']>[0]) => (await admin.listDead(filter, 100)).map((row) => row.id);
    expect(await ids({})).toEqual(['g1', 'g2', 'g3', 'g_%']);
    expect(await ids({ topic: 'orders.*' })).toEqual(['g1', 'g2']);
    expect(await ids({ topic: 'users.created' })).toEqual(['g3', 'g_%']);
    expect(await ids({ topic: 'orders' })).toEqual([]);
    expect(await ids({ key: 'H' })).toEqual(['g2']);
    expect(await ids({ error: 'schema mismatch' })).toEqual(['g1', 'g3']);
    expect(await ids({ ids: ['g_%', 'nope'] })).toEqual(['g_%']);
    expect(await ids({ olderThanMs: 3_600_000 })).toEqual([]);
    expect(await ids({ newerThanMs: 3_600_000 })).toEqual(['g1', 'g2', 'g3', 'g_%']);
    const firstPage = await admin.listDead({}, 2);
    expect((await admin.listDead({}, 10, firstPage[1]!.seq)).map((row) => row.id)).toEqual(['g3', 'g_%']);
  });

  it('status counts pending, in flight, dead and recently sent messages per topic', async () => {
    await commit([
      { id: 's1', topic: 'a', payload: 1 },
      { id: 's2', topic: 'a', payload: 2 },
      { id: 's3', topic: 'b', key: 'K', payload: 3 },
      { id: 's4', topic: 'b', key: 'K', payload: 4 },
    ]);
    const broker = new MemoryBroker().fail({ kind: 'permanent' }, { where: (m) => m.id === 's3' });
    await drain(testRelay(h, broker, { retainSentMs: 60_000 }));
    const status = await admin.status();
    expect(status.topics).toEqual([
      { topic: 'a', pending: 0, oldestPendingAt: null, inFlight: 0, expiredLeases: 0, dead: 0, sentLastMinute: 2 },
      expect.objectContaining({ topic: 'b', pending: 1, inFlight: 0, dead: 1, sentLastMinute: 0 }),
    ]);
    expect(status.topics[1]!.oldestPendingAt).toBeInstanceOf(Date);
  });
});
