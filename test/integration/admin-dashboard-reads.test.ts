import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AdminStore } from '../../src/dialects/admin.js';
import { adminStoreFor } from '../../src/dialects/index.js';
import { tableNames } from '../../src/dialects/identifiers.js';
import { MemoryBroker } from '../../src/index.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';
import { clearTables, drain, storeFor, testRelay } from '../support/relay-helpers.js';

describe.each(DIALECTS)(
  "the dashboard's reads of an outbox table on %s: blocked keys, live leases, sent per interval",
  (dialect) => {
    let h: Harness;
    let admin: AdminStore;

    beforeAll(async () => {
      h = await createHarness(dialect);
      admin = adminStoreFor(dialect, h.db, tableNames('txoutbox', h.schema));
    });
    afterAll(async () => {
      await h?.destroy();
    });

    it('lists each key held by a dead head with what waits behind it, oldest head first, page by page', async () => {
      await h.db.transaction().execute((trx) =>
        h.outbox.enqueue(trx, [
          { id: 'a1', topic: 't', key: 'k1', payload: 1 },
          { id: 'a2', topic: 't', key: 'k1', payload: 2 },
          { id: 'a3', topic: 't', key: 'k1', payload: 3 },
          { id: 'b1', topic: 't', key: 'k2', payload: 4 },
          { id: 'c1', topic: 't', payload: 5 },
          { id: 'c2', topic: 't', key: 'k3', payload: 6 },
        ]),
      );
      const before = await h.now();
      const broker = new MemoryBroker().fail(
        { kind: 'permanent', error: 'no route' },
        { where: (m) => m.id === 'a1' || m.id === 'b1' || m.id === 'c1' },
      );
      await drain(testRelay(h, broker, { retainSentMs: 60_000 }));
      const after = await h.now();

      const blocked = await admin.blockedKeys(10);
      expect(blocked.map((b) => ({ key: b.key, head: b.head.id, waiting: b.waiting }))).toEqual([
        { key: 'k1', head: 'a1', waiting: 2 },
        { key: 'k2', head: 'b1', waiting: 0 },
      ]);
      expect(blocked[0]!.head).toMatchObject({ topic: 't', lastError: expect.stringContaining('no route') });
      const [first] = await admin.blockedKeys(1);
      expect(first!.key).toBe('k1');
      expect((await admin.blockedKeys(10, first!.head.seq)).map((b) => b.key)).toEqual(['k2']);

      // Sent rows kept (retainSentMs) are counted in exactly the interval they were sent in.
      expect(await admin.sentBetween(before, after)).toBe(1);
      expect(await admin.sentBetween(after, new Date(after.getTime() + 60_000))).toBe(0);

      // Retrying k1's head releases the key: it is no longer listed.
      await admin.retryDead([first!.head.seq]);
      expect((await admin.blockedKeys(10)).map((b) => b.key)).toEqual(['k2']);
    });

    it('reads the live leases by claim token, without the expired ones', async () => {
      await clearTables(h);
      await h.db.transaction().execute((trx) =>
        h.outbox.enqueue(trx, [
          { id: 'l1', topic: 'lease', payload: 1 },
          { id: 'l2', topic: 'lease', payload: 2 },
          { id: 'l3', topic: 'lease', key: 'lk', payload: 3 },
        ]),
      );
      const store = storeFor(h);
      const held = await store.claim({ count: 2, bytes: 1e9 }, 'host-a:10:aaaaaa:n1:1', 60_000);
      expect(held.length).toBe(2);
      const short = await store.claim({ count: 10, bytes: 1e9 }, 'host-b:20:bbbbbb:n2:1', 1);
      await new Promise((resolve) => setTimeout(resolve, 50));
      const leases = await admin.leases();
      // Only the first relay's claim is still live; the other's lease (1 ms) has run out.
      expect(short.map((m) => m.id)).toEqual(['l3']);
      expect(leases.map((l) => ({ owner: l.owner, messages: l.messages }))).toEqual([
        { owner: 'host-a:10:aaaaaa:n1:1', messages: 2 },
      ]);
      expect(leases[0]!.until.getTime()).toBeGreaterThan((await h.now()).getTime() + 30_000);
    });
  },
);

describe('blocked keys of a table in mode logical (PostgreSQL)', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness('postgres');
  });
  afterAll(async () => {
    await h?.destroy();
  });

  it("takes a key's first dead row as its head and the later dead rows of the key (parked behind it) as waiting; nothing under skip", async () => {
    await h.db.transaction().execute((trx) =>
      h.outbox.enqueue(trx, [
        { id: 'x1', topic: 't', key: 'kx', payload: 1 },
        { id: 'x2', topic: 't', key: 'kx', payload: 2 },
        { id: 'x3', topic: 't', key: 'kx', payload: 3 },
        { id: 'y1', topic: 't', key: 'ky', payload: 4 },
        { id: 'z1', topic: 't', payload: 5 },
      ]),
    );
    // What the logical relay's marker writes for a poison message and those it parks behind it (block-key).
    await sql`UPDATE ${sql.id(h.schema, 'txoutbox')} SET state = 'dead', ready = false,
      last_error = CASE WHEN id = 'x1' OR id = 'y1' OR id = 'z1' THEN 'no route' ELSE 'waiting behind dead message x1' END`.execute(
      h.db,
    );
    const logical = adminStoreFor('postgres', h.db, tableNames('txoutbox', h.schema), { mode: 'logical' });
    const blocked = await logical.blockedKeys(10);
    // ky's dead row holds its key too: a later message of ky would be parked behind it. z1 has no key.
    expect(blocked.map((b) => ({ key: b.key, head: b.head.id, waiting: b.waiting }))).toEqual([
      { key: 'kx', head: 'x1', waiting: 2 },
      { key: 'ky', head: 'y1', waiting: 0 },
    ]);
    // Under 'skip' nothing is held back.
    const skipping = adminStoreFor('postgres', h.db, tableNames('txoutbox', h.schema), {
      mode: 'logical',
      deadLetterPolicy: 'skip',
    });
    expect(await skipping.blockedKeys(10)).toEqual([]);
  });
});
