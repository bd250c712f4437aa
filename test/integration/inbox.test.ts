import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, NotInTransactionError, ValidationError, type Inbox, type ProcessResult } from '../../src/index.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';
import {
  applyEffect,
  clearInbox,
  effects,
  expectOneEffectOfConcurrentDeliveries,
  gate,
  inboxRows,
  setUpInbox,
  waitForLockWaiters,
} from '../support/inbox-helpers.js';

describe.each(DIALECTS)('inbox.processOnce on %s', (dialect) => {
  let h: Harness;
  let inbox: Inbox;
  beforeAll(async () => {
    h = await createHarness(dialect, 30);
    inbox = await setUpInbox(h);
  });
  afterAll(async () => h?.destroy());
  beforeEach(async () => clearInbox(h));

  /** One delivery: the consumer's business transaction with processOnce around the effect. */
  const deliver = (messageId: string, consumer = 'billing') =>
    h.db.transaction().execute((trx) => inbox.processOnce(trx, { consumer, messageId }, (t) => applyEffect(h, t, messageId)));

  it('applies the effect of an id delivered 5 times once, and reports the other 4 as duplicates', async () => {
    const results: ProcessResult<void>[] = [];
    for (let i = 0; i < 5; i++) results.push(await deliver('m-1'));
    expect(results.map((r) => r.duplicate)).toEqual([false, true, true, true, true]);
    expect(await effects(h)).toEqual(new Map([['m-1', 1]]));
    expect(await inboxRows(h)).toEqual(['billing/m-1']);
  });

  it("returns the handler's result and passes it the caller's transaction", async () => {
    const result = await h.db.transaction().execute((trx) =>
      inbox.processOnce(trx, { consumer: 'billing', messageId: 'm-r' }, async (t) => {
        expect(t).toBe(trx);
        return { charged: 5 };
      }),
    );
    expect(result).toEqual({ duplicate: false, result: { charged: 5 } });
  });

  it('lets each consumer process the same id once', async () => {
    expect((await deliver('m-2', 'billing')).duplicate).toBe(false);
    expect((await deliver('m-2', 'shipping')).duplicate).toBe(false);
    expect((await deliver('m-2', 'shipping')).duplicate).toBe(true);
    expect(await inboxRows(h)).toEqual(['billing/m-2', 'shipping/m-2']);
    expect(await effects(h)).toEqual(new Map([['m-2', 2]]));
  });

  it('propagates a handler error; the record rolls back with the transaction, so the next delivery runs the handler', async () => {
    const failure = new Error('payment service down');
    const error = await h.db
      .transaction()
      .execute((trx) =>
        inbox.processOnce(trx, { consumer: 'billing', messageId: 'm-3' }, async (t) => {
          await applyEffect(h, t, 'm-3');
          throw failure;
        }),
      )
      .catch((e: unknown) => e);
    expect(error).toBe(failure);
    expect(await inboxRows(h)).toEqual([]);
    expect(await effects(h)).toEqual(new Map());
    expect((await deliver('m-3')).duplicate).toBe(false);
    expect(await effects(h)).toEqual(new Map([['m-3', 1]]));
  });

  it('lets 20 concurrent deliveries of one id commit one effect, the other 19 duplicates and none aborted', () =>
    expectOneEffectOfConcurrentDeliveries<Kysely<any>>(
      h,
      inbox,
      (work) => h.db.transaction().execute(work),
      (trx, id) => applyEffect(h, trx, id),
    ));

  it('runs the handler of a delivery that waited on one that rolled back', async () => {
    const hold = gate();
    const recorded = gate();
    const first = h.db
      .transaction()
      .execute((trx) =>
        inbox.processOnce(trx, { consumer: 'billing', messageId: 'm-rb' }, async (t) => {
          await applyEffect(h, t, 'm-rb');
          recorded.open();
          await hold.opened;
          throw new Error('the first delivery fails after recording');
        }),
      )
      .catch((e: unknown) => e);
    await recorded.opened;
    const second = deliver('m-rb');
    await waitForLockWaiters(h, 1);
    hold.open();
    expect(String(await first)).toContain('the first delivery fails');
    expect(await second).toEqual({ duplicate: false, result: undefined });
    expect(await effects(h)).toEqual(new Map([['m-rb', 1]]));
  });

  it('refuses a bad consumer or message id with a ValidationError naming the field, writes nothing, and leaves the transaction usable', async () => {
    const cases: [unknown, string][] = [
      [{ consumer: '', messageId: 'm' }, 'consumer'],
      [{ consumer: 'billing', messageId: 'x'.repeat(256) }, 'messageId'],
      [{ consumer: 'billing', messageId: 42 }, 'messageId'],
      [{ consumer: 'billing' }, 'messageId'],
      [{ consumer: 'bill\u0000ing', messageId: 'm' }, 'consumer'],
      [{ consumer: 'billing', messageId: '\uD800' }, 'messageId'],
    ];
    for (const [delivery, field] of cases) {
      let ran = false;
      await h.db.transaction().execute(async (trx) => {
        const error = await inbox
          .processOnce(trx, delivery as { consumer: string; messageId: string }, () => (ran = true))
          .catch((e: unknown) => e);
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as ValidationError).field).toBe(field);
        expect((error as ValidationError).message).toMatch(/^Invalid inbox delivery: /);
        // Still usable: the rest of the work commits.
        await applyEffect(h, trx, `after-${field}`);
      });
      expect(ran).toBe(false);
    }
    expect(await inboxRows(h)).toEqual([]);
    expect([...(await effects(h)).keys()].sort()).toEqual(['after-consumer', 'after-messageId']);
  });

  it('accepts the longest id and any Unicode, stored exactly', async () => {
    const long = 'é'.repeat(255);
    expect((await deliver(long)).duplicate).toBe(false);
    expect((await deliver(long)).duplicate).toBe(true);
    expect((await deliver('🙂-1')).duplicate).toBe(false);
    expect((await deliver('🙂-2')).duplicate).toBe(false);
  });

  it('refuses to run outside a transaction, naming processOnce', async () => {
    const error = await inbox.processOnce(h.db, { consumer: 'billing', messageId: 'm' }, () => 1).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NotInTransactionError);
    expect(String(error)).toMatch(/^NotInTransactionError: processOnce needs an open transaction/);
    expect(await inboxRows(h)).toEqual([]);
  });

  it('works on a raw driver connection inside BEGIN', async () => {
    const connection = await h.rawConnection();
    try {
      for (const expected of [false, true]) {
        await connection.query('BEGIN');
        const result = await inbox.processOnce(connection.handle as never, { consumer: 'raw', messageId: 'm-raw' }, () => 'ran');
        await connection.query('COMMIT');
        expect(result.duplicate).toBe(expected);
      }
    } finally {
      await connection.release();
    }
    expect(await inboxRows(h)).toEqual(['raw/m-raw']);
  });

  it('deletes records past the retention window in batches, keeps newer ones, and a deleted id processes again', async () => {
    for (let i = 0; i < 5; i++) await deliver(`old-${i}`);
    await deliver('new');
    const table = sql.id(h.schema, 'txoutbox_inbox');
    await (
      dialect === 'postgres'
        ? sql`UPDATE ${table} SET processed_at = processed_at - interval '2 hours' WHERE message_id LIKE 'old-%'`
        : sql`UPDATE ${table} SET processed_at = processed_at - INTERVAL 2 HOUR WHERE message_id LIKE 'old-%'`
    ).execute(h.db);
    expect(await inbox.cleanup(h.db, { olderThanMs: 60 * 60_000, batchSize: 2, maxBatches: 2 })).toBe(4);
    expect(await inbox.cleanup(h.db, { olderThanMs: 60 * 60_000, batchSize: 2 })).toBe(1);
    expect(await inboxRows(h)).toEqual(['billing/new']);
    // The window is the promise: past it, a redelivery is processed again.
    expect((await deliver('old-0')).duplicate).toBe(false);
    expect(await inbox.cleanup(h.db)).toBe(0);
  });

  it('records, lists, replays and deletes consumer-side dead letters', async () => {
    const letter = {
      consumer: 'billing',
      messageId: 'm-dead',
      source: 'rabbitmq',
      destination: 'orders',
      topic: 'orders.created',
      payload: Buffer.from('{"n":1}'),
      contentType: 'application/json',
      headers: { 'txoutbox-key': 'k-1', 'x-tenant': 'acme' },
      error: 'first error',
      attempts: 3,
    };
    await inbox.recordDeadLetter(h.db, letter);
    await inbox.recordDeadLetter(h.db, { ...letter, error: 'last error', attempts: 5 });
    await inbox.recordDeadLetter(h.db, { ...letter, consumer: 'shipping', messageId: null, error: 'no id' });
    const dead = await inbox.deadLetters(h.db);
    expect(dead.map((d) => [d.consumer, d.messageId, d.error, d.attempts])).toEqual([
      ['billing', 'm-dead', 'last error', 5],
      ['shipping', null, 'no id', 3],
    ]);
    expect(dead[0]).toMatchObject({ topic: 'orders.created', contentType: 'application/json', headers: letter.headers });
    expect(dead[0]!.payload.toString()).toBe('{"n":1}');
    expect((await inbox.deadLetters(h.db, { consumer: 'shipping' })).map((d) => d.seq)).toEqual([dead[1]!.seq]);
    expect(await inbox.deadLetters(h.db, { afterSeq: dead[1]!.seq })).toEqual([]);

    const seen: unknown[] = [];
    const replayed = await inbox.replayDeadLetter(h.db, dead[0]!.seq, async (message, trx) => {
      seen.push([message.id, message.topic, message.key, message.attempt, JSON.parse(message.payload.toString())]);
      await applyEffect(h, trx, message.id);
      return 'done';
    });
    expect(replayed).toEqual({ duplicate: false, result: 'done' });
    expect(seen).toEqual([['m-dead', 'orders.created', 'k-1', 6, { n: 1 }]]);
    expect(await effects(h)).toEqual(new Map([['m-dead', 1]]));
    expect(await inboxRows(h)).toEqual(['billing/m-dead']);
    expect(await inbox.replayDeadLetter(h.db, dead[0]!.seq, () => 'again')).toBeNull();

    // A failed replay keeps the dead letter.
    await inbox.recordDeadLetter(h.db, { ...letter, messageId: 'm-dead-2' });
    const [again] = await inbox.deadLetters(h.db, { consumer: 'billing' });
    const failed = await inbox
      .replayDeadLetter(h.db, again!.seq, () => Promise.reject(new Error('still broken')))
      .catch((e: unknown) => e);
    expect(String(failed)).toContain('still broken');
    expect((await inbox.deadLetters(h.db, { consumer: 'billing' })).map((d) => d.messageId)).toEqual(['m-dead-2']);

    const noId = await inbox.replayDeadLetter(h.db, dead[1]!.seq, () => 1).catch((e: unknown) => e);
    expect(noId).toBeInstanceOf(ConfigError);
    expect(await inbox.deleteDeadLetter(h.db, dead[1]!.seq)).toBe(true);
    expect(await inbox.deleteDeadLetter(h.db, dead[1]!.seq)).toBe(false);
  });
});
