import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, migrate, NotInTransactionError, ValidationError, type Outbox } from '../../src/index.js';
import { BAD_INPUTS as CASES } from '../support/bad-inputs.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';

describe.each(DIALECTS)('bad input on %s', (dialect) => {
  let h: Harness;
  let outbox: Outbox;
  beforeAll(async () => {
    h = await createHarness(dialect);
    outbox = h.createOutbox({ maxBatch: 3 });
  });
  afterAll(async () => h?.destroy());
  beforeEach(async () => {
    for (const table of ['txoutbox', 'orders']) await sql`DELETE FROM ${sql.id(h.schema, table)}`.execute(h.db);
  });

  it.each(CASES)(
    'refuses %s with a typed error, writes nothing, and leaves the transaction usable',
    async (_what, input, field) => {
      await h.db.transaction().execute(async (trx) => {
        await h.insertOrder(trx, 'business-row');
        const error = await outbox.enqueue(trx, input as never).catch((caught: unknown) => caught);
        expect(error).toBeInstanceOf(ValidationError);
        expect(error).toMatchObject({ field, code: 'TXOUTBOX_INVALID_MESSAGE' });
        expect((error as Error).message).toContain(field);
        await outbox.enqueue(trx, { id: 'still-works', topic: 't', payload: 1 });
      });
      expect((await h.rows()).map((row) => row.id)).toEqual(['still-works']);
      expect(await h.orderIds()).toEqual(['business-row']);
    },
  );

  it('validates ids made by generateId like given ones: an empty one is refused, nothing written', async () => {
    const empty = h.createOutbox({ generateId: () => '' });
    await h.db.transaction().execute(async (trx) => {
      await h.insertOrder(trx, 'business-row');
      const error = await empty.enqueue(trx, { topic: 't', payload: 1 }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(ValidationError);
      expect(error).toMatchObject({ field: 'id', code: 'TXOUTBOX_INVALID_MESSAGE' });
      expect((error as Error).message).toContain('generateId');
      const long = h.createOutbox({ generateId: () => 'i'.repeat(256) });
      await expect(long.enqueue(trx, [{ topic: 't', payload: 1 }])).rejects.toMatchObject({ field: 'messages[0].id' });
      const notText = h.createOutbox({ generateId: (() => 42) as never });
      await expect(notText.enqueue(trx, { topic: 't', payload: 1 })).rejects.toMatchObject({ field: 'id' });
      // The transaction is still usable (on PostgreSQL a failed statement would have aborted it).
      await outbox.enqueue(trx, { id: 'still-works', topic: 't', payload: 1 });
    });
    expect((await h.rows()).map((row) => row.id)).toEqual(['still-works']);
    expect(await h.orderIds()).toEqual(['business-row']);
  });

  it('refuses a generateId that repeats an id within one batch instead of dropping the second message', async () => {
    const constant = h.createOutbox({ generateId: () => 'always-the-same' });
    await h.db.transaction().execute(async (trx) => {
      const error = await constant
        .enqueue(trx, [
          { topic: 't', payload: 1 },
          { topic: 't', payload: 2 },
        ])
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(ValidationError);
      expect(error).toMatchObject({ field: 'messages[1].id' });
      expect((error as Error).message).toContain('always-the-same');
      // Ids a caller gives may repeat (the second is reported as a duplicate), and a given id is not generated.
      const results = await constant.enqueue(trx, [
        { id: 'given', topic: 't', payload: 1 },
        { id: 'given', topic: 't', payload: 2 },
        { topic: 't', payload: 3 },
      ]);
      expect(results).toEqual([
        { id: 'given', duplicate: false },
        { id: 'given', duplicate: true },
        { id: 'always-the-same', duplicate: false },
      ]);
    });
    expect((await h.rows()).map((row) => row.id)).toEqual(['given', 'always-the-same']);
  });

  it('refuses an object that only looks like a connection ({ query: () => 1 }) at once with NotInTransactionError', async () => {
    for (const fake of [{ query: () => 1 }, { query: () => undefined }, { query: async () => 1 }]) {
      const started = Date.now();
      const outcome = await Promise.race([
        outbox.enqueue(fake as never, { topic: 't', payload: 1 }).then(
          () => 'resolved',
          (error: unknown) => error,
        ),
        new Promise((resolve) => setTimeout(() => resolve('still waiting after 2 s'), 2000)),
      ]);
      expect(outcome).toBeInstanceOf(NotInTransactionError);
      expect(Date.now() - started).toBeLessThan(1000);
    }
    expect(await h.rows()).toEqual([]);
  });

  it('refuses table and schema names that are not plain identifiers before touching the database', async () => {
    const injected = 'txoutbox; DROP TABLE orders; --';
    expect(() => h.createOutbox({ table: injected })).toThrow(ConfigError);
    expect(() => h.createOutbox({ table: '"quoted"' })).toThrow(ConfigError);
    await expect(migrate(h.db, { dialect, table: injected })).rejects.toBeInstanceOf(ConfigError);
    await expect(migrate(h.db, { dialect, schema: 'a.b' })).rejects.toBeInstanceOf(ConfigError);
    expect(await h.orderIds()).toEqual([]);
    const { rows } = await sql`SELECT 1 FROM ${sql.id(h.schema, 'orders')}`.execute(h.db);
    expect(rows).toEqual([]);
  });
});
