import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { NotInTransactionError, SchemaError, TxOutboxError } from '../../src/index.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';

const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/;

describe.each(DIALECTS)('enqueue on %s', (dialect) => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness(dialect, 60);
  });
  afterAll(async () => h?.destroy());
  beforeEach(async () => {
    for (const table of ['txoutbox', 'orders']) await sql`DELETE FROM ${sql.id(h.schema, table)}`.execute(h.db);
  });

  it('stores every field of a message whose transaction commits', async () => {
    const before = await h.now();
    const result = await h.db.transaction().execute(async (trx) => {
      await h.insertOrder(trx, 'o-1');
      return h.outbox.enqueue(trx, {
        topic: 'orders.created',
        key: 'order-1',
        payload: { orderId: 'o-1', total: 12.5, lines: [{ sku: 'a', qty: 2 }], note: 'café ☕' },
        headers: { 'x-tenant': 'acme', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
      });
    });
    const after = await h.now();

    expect(result).toEqual({ id: expect.stringMatching(ULID), duplicate: false });
    const [row, ...others] = await h.rows();
    expect(others).toEqual([]);
    expect(row).toMatchObject({
      id: result.id,
      topic: 'orders.created',
      key: 'order-1',
      contentType: 'application/json',
      headers: { 'x-tenant': 'acme', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
      state: 'pending',
      // A keyed message arrives unsequenced: the relay, not the producer, makes it its key's head.
      ready: null,
      attempts: 0,
      leaseOwner: null,
      leaseUntil: null,
      lastError: null,
      sentAt: null,
    });
    expect(JSON.parse(row!.payload.toString('utf8'))).toEqual({
      orderId: 'o-1',
      total: 12.5,
      lines: [{ sku: 'a', qty: 2 }],
      note: 'café ☕',
    });
    expect(row!.createdAt.getTime()).toBeGreaterThanOrEqual(before.getTime() - 1);
    expect(row!.createdAt.getTime()).toBeLessThanOrEqual(after.getTime() + 1);
    expect(row!.nextAttemptAt.getTime()).toBeLessThanOrEqual(after.getTime() + 1);
    expect(row!.seq).toBeGreaterThan(0n);
    expect(await h.orderIds()).toEqual(['o-1']);
    await h.sequence();
    expect(await h.heads()).toEqual(new Map([['order-1', 1]]));
  });

  it('stores a bytes payload byte for byte as application/octet-stream', async () => {
    const bytes = new Uint8Array(256).map((_, i) => i);
    await h.db.transaction().execute((trx) => h.outbox.enqueue(trx, { topic: 'blobs', payload: bytes }));
    const [row] = await h.rows();
    expect(row!.contentType).toBe('application/octet-stream');
    expect(Buffer.compare(row!.payload, Buffer.from(bytes))).toBe(0);
    expect(row!.key).toBeNull();
    expect(row!.ready).toBe(true);
  });

  it('writes nothing when the transaction rolls back', async () => {
    await expect(
      h.db.transaction().execute(async (trx) => {
        await h.insertOrder(trx, 'o-2');
        await h.outbox.enqueue(trx, [
          { topic: 'orders.created', key: 'order-2', payload: 1 },
          { topic: 'orders.created', payload: 2 },
        ]);
        throw new Error('business rule failed');
      }),
    ).rejects.toThrow('business rule failed');
    expect(await h.rows()).toEqual([]);
    expect(await h.orderIds()).toEqual([]);
  });

  it('drops the messages of a rolled-back savepoint and keeps the rest of the transaction', async () => {
    const trx = await h.db.startTransaction().execute();
    const a = await h.outbox.enqueue(trx, { topic: 't', key: 'k', payload: 'a' });
    const savepoint = await trx.savepoint('before_b').execute();
    await h.outbox.enqueue(savepoint, { topic: 't', key: 'k', payload: 'b' });
    await savepoint.rollbackToSavepoint('before_b').execute();
    const c = await h.outbox.enqueue(trx, { topic: 't', key: 'k', payload: 'c' });
    await trx.commit().execute();

    await h.sequence();
    const rows = await h.rows();
    expect(rows.map((row) => row.id)).toEqual([a.id, c.id]);
    expect(rows.map((row) => row.ready)).toEqual([true, false]);
  });

  it('keeps exactly the messages of the committed ones among 50 concurrent transactions', async () => {
    const outcomes = await Promise.allSettled(
      Array.from({ length: 50 }, (_, i) =>
        h.db.transaction().execute(async (trx) => {
          await h.insertOrder(trx, `o-${i}`);
          await h.outbox.enqueue(trx, [
            { topic: 'orders.created', key: `customer-${i % 5}`, payload: { i }, id: `m-${i}` },
            { topic: 'audit', payload: { i }, id: `audit-${i}` },
          ]);
          if (i % 3 === 0) throw new Error(`rollback ${i}`);
        }),
      ),
    );
    const committed = outcomes.flatMap((outcome, i) => (outcome.status === 'fulfilled' ? [i] : []));
    outcomes.forEach((outcome, i) => {
      if (outcome.status === 'rejected') expect(String(outcome.reason)).toContain(`rollback ${i}`);
    });
    expect(committed).toHaveLength(33);

    const rows = await h.rows();
    expect(rows.map((row) => row.id).sort()).toEqual(committed.flatMap((i) => [`m-${i}`, `audit-${i}`]).sort());
    expect(await h.orderIds()).toEqual(committed.map((i) => `o-${i}`).sort());
    // Once sequenced, only the earliest message of each key is its head.
    await h.sequence();
    const sequenced = await h.rows();
    for (let k = 0; k < 5; k++) {
      const ofKey = sequenced.filter((row) => row.key === `customer-${k}`);
      expect(ofKey.map((row) => row.ready)).toEqual(ofKey.map((_, index) => index === 0));
    }
    expect(sequenced.filter((row) => row.key === null).every((row) => row.ready)).toBe(true);
  });

  it('never makes a transaction wait for another one enqueueing the same keys, in any order', async () => {
    // Two open transactions take keys A and B in opposite orders, in separate calls: with producer-side key locks
    // this waited, then deadlocked. Producers now only insert, so both finish at once and both commit.
    const first = await h.db.startTransaction().execute();
    const second = await h.db.startTransaction().execute();
    const settled = await Promise.race([
      (async () => {
        await h.outbox.enqueue(first, { id: 'first-A', topic: 't', key: 'A', payload: 1 });
        await h.outbox.enqueue(second, { id: 'second-B', topic: 't', key: 'B', payload: 2 });
        await h.outbox.enqueue(first, { id: 'first-B', topic: 't', key: 'B', payload: 3 });
        await h.outbox.enqueue(second, { id: 'second-A', topic: 't', key: 'A', payload: 4 });
        return 'enqueued';
      })(),
      new Promise((resolve) => setTimeout(() => resolve('waited'), 3000)),
    ]);
    expect(settled).toBe('enqueued');
    await second.commit().execute();
    await first.commit().execute();
    expect((await h.rows()).map((row) => row.id).sort()).toEqual(['first-A', 'first-B', 'second-A', 'second-B']);
  });

  it('reports a duplicate of a committed id, writes nothing for it, and leaves the transaction usable', async () => {
    await h.db
      .transaction()
      .execute((trx) => h.outbox.enqueue(trx, { id: 'order-7:created', topic: 't', key: 'a', payload: 'first' }));
    const result = await h.db.transaction().execute(async (trx) => {
      const duplicate = await h.outbox.enqueue(trx, { id: 'order-7:created', topic: 't', key: 'a', payload: 'second' });
      await h.insertOrder(trx, 'after-duplicate');
      return duplicate;
    });
    expect(result).toEqual({ id: 'order-7:created', duplicate: true });
    const rows = await h.rows();
    expect(rows).toHaveLength(1);
    expect(rows[0]!.payload.toString()).toBe('"first"');
    expect(await h.orderIds()).toEqual(['after-duplicate']);
  });

  it('treats ids as exact: case and trailing spaces make different ids', async () => {
    const results = await h.db.transaction().execute((trx) =>
      h.outbox.enqueue(trx, [
        { id: 'abc', topic: 't', payload: 1 },
        { id: 'ABC', topic: 't', payload: 2 },
        { id: 'abc ', topic: 't', payload: 3 },
      ]),
    );
    expect(results.map((r) => r.duplicate)).toEqual([false, false, false]);
    expect((await h.rows()).map((row) => row.id)).toEqual(['abc', 'ABC', 'abc ']);
  });

  it('writes an id repeated within one batch once', async () => {
    const results = await h.db.transaction().execute((trx) =>
      h.outbox.enqueue(trx, [
        { id: 'x', topic: 't', key: 'k', payload: 1 },
        { id: 'y', topic: 't', key: 'k', payload: 2 },
        { id: 'x', topic: 't', key: 'k', payload: 3 },
      ]),
    );
    expect(results).toEqual([
      { id: 'x', duplicate: false },
      { id: 'y', duplicate: false },
      { id: 'x', duplicate: true },
    ]);
    await h.sequence();
    expect((await h.rows()).map((row) => [row.id, row.payload.toString(), row.ready])).toEqual([
      ['x', '1', true],
      ['y', '2', false],
    ]);
  });

  it('makes the next message head its key when the message meant to head it was a duplicate', async () => {
    await h.db.transaction().execute((trx) => h.outbox.enqueue(trx, { id: 'x', topic: 't', key: 'A', payload: 0 }));
    await h.db.transaction().execute((trx) =>
      h.outbox.enqueue(trx, [
        { id: 'x', topic: 't', key: 'B', payload: 1 },
        { id: 'y', topic: 't', key: 'B', payload: 2 },
        { id: 'z', topic: 't', key: 'B', payload: 3 },
      ]),
    );
    await h.sequence();
    const rows = await h.rows();
    expect(rows.map((row) => [row.id, row.key, row.ready])).toEqual([
      ['x', 'A', true],
      ['y', 'B', true],
      ['z', 'B', false],
    ]);
  });

  it('lets two transactions race on one id: the second waits, then reports a duplicate without failing', async () => {
    const first = await h.db.startTransaction().execute();
    await h.outbox.enqueue(first, { id: 'race', topic: 't', key: 'r', payload: 'first' });
    const second = h.db.transaction().execute(async (trx) => {
      const result = await h.outbox.enqueue(trx, { id: 'race', topic: 't', key: 'r', payload: 'second' });
      await h.insertOrder(trx, 'second-committed');
      return result;
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    await first.commit().execute();
    expect(await second).toEqual({ id: 'race', duplicate: true });
    expect((await h.rows()).map((row) => row.payload.toString())).toEqual(['"first"']);
    expect(await h.orderIds()).toEqual(['second-committed']);
  });

  it('writes the second of two racing writers of one id when the first rolls back', async () => {
    const first = await h.db.startTransaction().execute();
    await h.outbox.enqueue(first, { id: 'race', topic: 't', payload: 'first' });
    const second = h.db.transaction().execute((trx) => h.outbox.enqueue(trx, { id: 'race', topic: 't', payload: 'second' }));
    await new Promise((resolve) => setTimeout(resolve, 200));
    await first.rollback().execute();
    expect(await second).toEqual({ id: 'race', duplicate: false });
    expect((await h.rows()).map((row) => row.payload.toString())).toEqual(['"second"']);
  });

  it('schedules delayed messages: delayMs from the enqueue, availableAt exactly', async () => {
    const at = new Date(Date.UTC(2030, 0, 2, 3, 4, 5, 678));
    await h.db.transaction().execute((trx) =>
      h.outbox.enqueue(trx, [
        { id: 'later', topic: 't', payload: 1, delayMs: 60_000 },
        { id: 'at', topic: 't', payload: 2, availableAt: at },
      ]),
    );
    const [later, atRow] = await h.rows();
    expect(later!.nextAttemptAt.getTime() - later!.createdAt.getTime()).toBeGreaterThanOrEqual(59_999);
    expect(later!.nextAttemptAt.getTime() - later!.createdAt.getTime()).toBeLessThanOrEqual(61_000);
    expect(atRow!.nextAttemptAt.toISOString()).toBe(at.toISOString());
  });

  it('stores a message enqueued alone exactly as the same message in a batch', async () => {
    // A single message takes a statement of its own (cheaper to plan); both must write the same row.
    const at = new Date(Date.UTC(2030, 0, 2, 3, 4, 5, 678));
    const messages = (prefix: string) => [
      { id: `${prefix}-plain`, topic: 't.x', payload: { a: 1 }, headers: { h: 'v' } },
      { id: `${prefix}-head`, topic: 't.x', key: `${prefix}-k`, payload: [1, 2] },
      { id: `${prefix}-next`, topic: 't.x', key: `${prefix}-k`, payload: 'x', contentType: 'text/plain' },
      { id: `${prefix}-later`, topic: 't.x', payload: 1, delayMs: 60_000 },
      { id: `${prefix}-at`, topic: 't.x', key: `${prefix}-j`, payload: new Uint8Array([0, 255]), availableAt: at },
    ];
    await h.db.transaction().execute(async (trx) => {
      for (const message of messages('one'))
        expect(await h.outbox.enqueue(trx, message)).toEqual({ id: message.id, duplicate: false });
    });
    await h.db.transaction().execute((trx) => h.outbox.enqueue(trx, messages('many')));
    expect((await h.rows()).map((row) => row.ready)).toEqual([true, null, null, true, null, true, null, null, true, null]);
    await h.sequence();
    const rows = await h.rows();
    const shape = (row: (typeof rows)[number]) => ({
      topic: row.topic,
      key: row.key?.replace(/^(one|many)-/, ''),
      payload: row.payload.toString('hex'),
      contentType: row.contentType,
      headers: row.headers,
      ready: row.ready,
      delayed: row.nextAttemptAt.getTime() - row.createdAt.getTime() >= 59_999,
      at: row.nextAttemptAt.getTime() === at.getTime(),
    });
    const alone = rows.filter((row) => row.id.startsWith('one-'));
    const batched = rows.filter((row) => row.id.startsWith('many-'));
    expect(alone.map(shape)).toEqual(batched.map(shape));
    expect(alone.map((row) => row.ready)).toEqual([true, true, false, true, true]);
    expect(alone.map(shape).map((row) => [row.delayed, row.at])).toEqual([
      [false, false],
      [false, false],
      [false, false],
      [true, false],
      [true, true],
    ]);
    expect(await h.heads()).toEqual(
      new Map([
        ['one-j', 1],
        ['one-k', 1],
        ['many-j', 1],
        ['many-k', 1],
      ]),
    );
  });

  it('keeps the order given within one batch and heads only the first of each key', async () => {
    const messages = Array.from({ length: 200 }, (_, i) => ({
      id: `b-${i}`,
      topic: 't',
      key: i % 7 === 0 ? null : `k${i % 4}`,
      payload: i,
    }));
    await h.db.transaction().execute((trx) => h.outbox.enqueue(trx, messages));
    await h.sequence();
    const rows = await h.rows();
    expect(rows.map((row) => row.id)).toEqual(messages.map((m) => m.id));
    const firstOfKey = new Set<string>();
    rows.forEach((row) => {
      if (row.key === null) return expect(row.ready).toBe(true);
      expect(row.ready).toBe(!firstOfKey.has(row.key));
      firstOfKey.add(row.key);
    });
  });

  it('enqueues on a raw driver connection inside BEGIN ... COMMIT, and nothing after ROLLBACK', async () => {
    const kinds = dialect === 'mysql' ? (['callback', 'promise'] as const) : (['callback'] as const);
    for (const kind of kinds) {
      const connection = await h.rawConnection(kind);
      try {
        await connection.query('BEGIN');
        await h.outbox.enqueue(connection.handle as never, { id: `raw-commit-${kind}`, topic: 't', key: 'raw', payload: 1 });
        await connection.query('COMMIT');
        await connection.query('BEGIN');
        await h.outbox.enqueue(connection.handle as never, { id: `raw-rollback-${kind}`, topic: 't', key: 'raw', payload: 2 });
        await connection.query('ROLLBACK');
      } finally {
        await connection.release();
      }
    }
    expect((await h.rows()).map((row) => row.id)).toEqual(kinds.map((kind) => `raw-commit-${kind}`));
  });

  it('refuses a raw connection outside a transaction and writes nothing', async () => {
    const connection = await h.rawConnection();
    try {
      await expect(h.outbox.enqueue(connection.handle as never, { topic: 't', payload: 1 })).rejects.toBeInstanceOf(
        NotInTransactionError,
      );
    } finally {
      await connection.release();
    }
    expect(await h.rows()).toEqual([]);
  });

  it('refuses a Kysely transaction that has ended with NotInTransactionError, and writes nothing', async () => {
    let kept: Kysely<any> | undefined;
    await h.db.transaction().execute(async (trx) => {
      kept = trx;
    });
    const controlled = await h.db.startTransaction().execute();
    await controlled.commit().execute();
    await expect(h.outbox.enqueue(kept!, { topic: 't', payload: 1 })).rejects.toBeInstanceOf(NotInTransactionError);
    await expect(h.outbox.enqueue(controlled, { topic: 't', payload: 2 })).rejects.toBeInstanceOf(NotInTransactionError);
    expect(await h.rows()).toEqual([]);
  });

  it('refuses a Kysely instance that is not a transaction, and a pool, and writes nothing', async () => {
    await expect(h.outbox.enqueue(h.db, { topic: 't', payload: 1 })).rejects.toBeInstanceOf(NotInTransactionError);
    await expect(h.outbox.enqueue(h.db, { topic: 't', payload: 1 })).rejects.toThrow(/not a transaction/);
    await expect(
      h.outbox.enqueue({ query: () => undefined, getConnection: () => undefined } as never, { topic: 't', payload: 1 }),
    ).rejects.toThrow(/pool/);
    await expect(h.outbox.enqueue(null as never, { topic: 't', payload: 1 })).rejects.toBeInstanceOf(NotInTransactionError);
    expect(await h.rows()).toEqual([]);
  });
});

describe('enqueue on a raw pg client', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness('postgres');
  });
  afterAll(async () => h?.destroy());

  it('says so when the pg transaction has already failed', async () => {
    const connection = await h.rawConnection();
    try {
      await connection.query('BEGIN');
      await expect(connection.query('SELECT 1/0')).rejects.toThrow();
      const failure = h.outbox.enqueue(connection.handle as never, { topic: 't', payload: 1 });
      await expect(failure).rejects.toBeInstanceOf(TxOutboxError);
      await expect(failure).rejects.toMatchObject({ code: 'TXOUTBOX_TRANSACTION_FAILED' });
      await connection.query('ROLLBACK');
    } finally {
      await connection.release();
    }
  });
});

describe('enqueue in a failed Kysely transaction on postgres', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness('postgres');
  });
  afterAll(async () => h?.destroy());

  it('says the transaction has already failed instead of passing on a bare database error', async () => {
    const trx = await h.db.startTransaction().execute();
    await expect(sql`SELECT 1/0`.execute(trx)).rejects.toThrow();
    await expect(h.outbox.enqueue(trx, { topic: 't', payload: 1 })).rejects.toMatchObject({
      code: 'TXOUTBOX_TRANSACTION_FAILED',
    });
    await trx.rollback().execute();
    expect(await h.rows()).toEqual([]);
  });
});

describe('a relay on mysql without its key lock rows', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness('mysql');
    await sql`DELETE FROM ${sql.id(h.schema, 'txoutbox_key_locks')}`.execute(h.db);
  });
  afterAll(async () => h?.destroy());

  it('leaves producers alone, and says what is missing when it sequences, changing nothing', async () => {
    await h.db.transaction().execute((trx) =>
      h.outbox.enqueue(trx, [
        { topic: 't', key: 'k', payload: 1 },
        { topic: 't', key: 'j', payload: 2 },
      ]),
    );
    const failure = h.sequence();
    await expect(failure).rejects.toBeInstanceOf(SchemaError);
    await expect(failure).rejects.toThrow(/key lock table .*missing rows/);
    expect((await h.rows()).map((row) => row.ready)).toEqual([null, null]);
  });
});
