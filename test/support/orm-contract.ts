import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  NotInTransactionError,
  ValidationError,
  type DialectName,
  type Inbox,
  type OrmTransaction,
  type Outbox,
} from '../../src/index.js';
import { BAD_INPUTS } from './bad-inputs.js';
import { createHarness, type Harness } from './harness.js';
import { expectOneEffectOfConcurrentDeliveries, setUpInbox } from './inbox-helpers.js';

/**
 * One ORM on one database, as the contract drives it. The fixture opens the ORM on the harness's database (its
 * schema on PostgreSQL, its database on MySQL) with a pool of at least 21 connections, and turns the ORM's
 * transactions into what txoutbox accepts with the module under test (`fromPrisma(tx)`, `fromKnex(trx)`, ...).
 */
export interface OrmFixture {
  /**
   * Runs `work` in one ORM transaction (the ORM's own API: `prisma.$transaction`, `knex.transaction`, ...), handing
   * it the module's wrapper of the transaction; commits when `work` resolves, rolls back when it throws.
   */
  transaction<T>(work: (tx: OrmTransaction) => Promise<T>): Promise<T>;
  /**
   * Runs `work` in a nested transaction or savepoint of `tx` by the ORM's own means (a raw SAVEPOINT where the ORM
   * has none: say so in a comment), and rolls that back, leaving `tx` open.
   */
  rolledBackSavepoint(tx: OrmTransaction, work: (inner: OrmTransaction) => Promise<void>): Promise<void>;
  /** Inserts a business row `orders (id)` through the ORM, in `tx`. */
  insertOrder(tx: OrmTransaction, id: string): Promise<void>;
  /** Adds one to `effects (id, times)` for `id` through the ORM, in `tx` (see inbox-helpers' applyEffect). */
  applyEffect(tx: OrmTransaction, id: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * What every ORM module must get right, on the real database: commit and rollback, a rolled-back savepoint, the
 * duplicate-id path (MySQL error 1062 caught, the transaction carried on), a handle kept past its transaction
 * refused, arrays, bytes and bigint seqs, txoutbox's
 * typed errors reaching the caller unwrapped, and processOnce under 20 concurrent deliveries.
 */
export function ormContract(orm: string, dialect: DialectName, open: (h: Harness) => Promise<OrmFixture>): void {
  describe(`${orm} on ${dialect}`, () => {
    let h: Harness;
    let fixture: OrmFixture;
    let outbox: Outbox;
    let inbox: Inbox;
    beforeAll(async () => {
      h = await createHarness(dialect);
      inbox = await setUpInbox(h);
      outbox = h.createOutbox({ maxBatch: 3 });
      fixture = await open(h);
    });
    afterAll(async () => {
      await fixture?.close();
      await h?.destroy();
    });
    beforeEach(async () => {
      for (const table of ['txoutbox', 'orders', 'effects', 'txoutbox_inbox'])
        await sql`DELETE FROM ${sql.id(h.schema, table)}`.execute(h.db);
    });

    it('commits the message with the business row, and writes neither when the transaction rolls back', async () => {
      await fixture.transaction(async (tx) => {
        await fixture.insertOrder(tx, 'o-1');
        await outbox.enqueue(tx, { id: 'm-1', topic: 'orders.created', key: 'o-1', payload: { total: 5 } });
      });
      const failure = await fixture
        .transaction(async (tx) => {
          await fixture.insertOrder(tx, 'o-2');
          await outbox.enqueue(tx, { id: 'm-2', topic: 'orders.created', key: 'o-2', payload: { total: 6 } });
          throw new Error('roll back');
        })
        .catch((error: unknown) => error);
      expect(failure).toMatchObject({ message: 'roll back' });
      expect((await h.rows()).map((row) => row.id)).toEqual(['m-1']);
      expect(await h.orderIds()).toEqual(['o-1']);
    });

    it.each(['committed', 'rolled back'] as const)(
      'refuses a handle used after its transaction %s, and writes nothing',
      async (end) => {
        let kept: OrmTransaction | undefined;
        const done = fixture.transaction(async (tx) => {
          kept = tx;
          await fixture.insertOrder(tx, 'inside');
          if (end === 'rolled back') throw new Error('roll back');
        });
        await (end === 'committed' ? done : expect(done).rejects.toThrow('roll back'));
        const error = await outbox
          .enqueue(kept!, { id: 'late', topic: 't', key: 'k', payload: 1 })
          .catch((caught: unknown) => caught);
        expect(error).toBeInstanceOf(NotInTransactionError);
        // Nothing autocommitted on the connection the transaction gave back to the pool.
        expect(await h.rows()).toEqual([]);
        expect(await h.orderIds()).toEqual(end === 'committed' ? ['inside'] : []);
      },
    );

    it('drops what a rolled-back savepoint enqueued and keeps the rest of the transaction', async () => {
      await fixture.transaction(async (tx) => {
        await outbox.enqueue(tx, { id: 'kept-1', topic: 't', key: 'k', payload: 1 });
        await fixture.rolledBackSavepoint(tx, async (inner) => {
          await fixture.insertOrder(inner, 'dropped');
          await outbox.enqueue(inner, { id: 'dropped', topic: 't', key: 'k', payload: 2 });
        });
        await outbox.enqueue(tx, { id: 'kept-2', topic: 't', key: 'k', payload: 3 });
      });
      expect((await h.rows()).map((row) => row.id)).toEqual(['kept-1', 'kept-2']);
      expect(await h.orderIds()).toEqual([]);
    });

    it('reports a duplicate id without aborting the transaction, which goes on and commits', async () => {
      await fixture.transaction((tx) => outbox.enqueue(tx, { id: 'dup', topic: 't', key: 'a', payload: 'first' }));
      const results = await fixture.transaction(async (tx) => {
        const single = await outbox.enqueue(tx, { id: 'dup', topic: 't', key: 'a', payload: 'second' });
        const batch = await outbox.enqueue(tx, [
          { id: 'dup', topic: 't', key: 'a', payload: 'third' },
          { id: 'fresh', topic: 't', key: 'a', payload: 'fourth' },
        ]);
        await fixture.insertOrder(tx, 'after-duplicate');
        return { single, batch };
      });
      expect(results.single).toEqual({ id: 'dup', duplicate: true });
      expect(results.batch).toEqual([
        { id: 'dup', duplicate: true },
        { id: 'fresh', duplicate: false },
      ]);
      const rows = await h.rows();
      expect(rows.map((row) => [row.id, row.payload.toString()])).toEqual([
        ['dup', '"first"'],
        ['fresh', '"fourth"'],
      ]);
      expect(await h.orderIds()).toEqual(['after-duplicate']);
    });

    it('stores batches, bytes and headers exactly, with increasing bigint seqs', async () => {
      const bytes = Buffer.from([0, 1, 2, 253, 254, 255]);
      await fixture.transaction((tx) =>
        outbox.enqueue(tx, [
          { id: 'b-1', topic: 't', key: 'k1', payload: { n: 1 }, headers: { tenant: 'acme' } },
          { id: 'b-2', topic: 't', key: 'k2', payload: bytes },
          { id: 'b-3', topic: 't', payload: 'keyless' },
        ]),
      );
      const rows = await h.rows();
      expect(rows.map((row) => row.id)).toEqual(['b-1', 'b-2', 'b-3']);
      expect(rows[0]!.headers).toEqual({ tenant: 'acme' });
      expect(rows[1]!.payload.equals(bytes)).toBe(true);
      expect(rows[1]!.contentType).toBe('application/octet-stream');
      expect(rows[2]!.key).toBeNull();
      expect(typeof rows[0]!.seq).toBe('bigint');
      expect(rows[0]!.seq < rows[1]!.seq && rows[1]!.seq < rows[2]!.seq).toBe(true);
    });

    it.each(BAD_INPUTS)('refuses %s with a typed error, unwrapped, and writes nothing', async (_what, input, field) => {
      await fixture.transaction(async (tx) => {
        await fixture.insertOrder(tx, 'business-row');
        const error = await outbox.enqueue(tx, input as never).catch((caught: unknown) => caught);
        expect(error).toBeInstanceOf(ValidationError);
        expect(error).toMatchObject({ field, code: 'TXOUTBOX_INVALID_MESSAGE' });
        await outbox.enqueue(tx, { id: 'still-works', topic: 't', payload: 1 });
      });
      expect((await h.rows()).map((row) => row.id)).toEqual(['still-works']);
      expect(await h.orderIds()).toEqual(['business-row']);
    });

    it('lets 20 concurrent deliveries of one id apply its effect once, the other 19 duplicates and none failed', () =>
      expectOneEffectOfConcurrentDeliveries<OrmTransaction>(
        h,
        inbox,
        (work) => fixture.transaction(work),
        (tx, id) => fixture.applyEffect(tx, id),
      ));

    it("rejects a failed statement with the driver's own code at the top level, as txoutbox reads it", async () => {
      const insert = `INSERT INTO ${dialect === 'postgres' ? `"${h.schema}"."orders"` : `\`${h.schema}\`.\`orders\``} (id) VALUES (${dialect === 'postgres' ? '$1' : '?'})`;
      const error = await fixture
        .transaction(async (tx) => {
          await tx.query(insert, ['taken']);
          await tx.query(insert, ['taken']);
        })
        .catch((caught: unknown) => caught);
      // A primary-key violation as the driver reports it: SQLSTATE 23505 (PostgreSQL), errno 1062 (MySQL).
      if (dialect === 'postgres') expect(error).toMatchObject({ code: '23505' });
      else expect(error).toMatchObject({ errno: 1062 });
      expect(await h.orderIds()).toEqual([]);
    });
  });
}
