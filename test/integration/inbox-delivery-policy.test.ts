import { EventEmitter } from 'node:events';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  DeliveryPolicy,
  type InboxConsumerEvents,
  type InboxHandler,
  type PolicyOptions,
  type Transport,
} from '../../src/dedupe/consumers/core.js';
import { createInbox, type Inbox, type InboxMessage } from '../../src/index.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';
import { applyEffect, clearInbox, effects, inboxRows, setUpInbox } from '../support/inbox-helpers.js';

const RABBITMQ_LIKE: Transport = {
  source: 'test-broker',
  destination: 'orders-queue',
  neverSettled: { because: 'the consumer died each time' },
};

/**
 * The policy both consumer helpers share, on a real database, with a transport that only writes down how it was
 * asked to settle each delivery: what the helpers' broker tests cannot isolate (the order of commit, ack and event;
 * which settlement each outcome gets).
 */
describe.each(DIALECTS)('inbox delivery policy on %s', (dialect) => {
  let h: Harness;
  let inbox: Inbox;
  beforeAll(async () => {
    h = await createHarness(dialect);
    inbox = await setUpInbox(h);
  });
  afterAll(async () => h?.destroy());
  beforeEach(async () => clearInbox(h));

  /** A policy whose settlements and events land, in order, in `log`; `retry` resolves `retryArranged`. */
  function setUp(options: Partial<PolicyOptions> = {}, transport: Transport = RABBITMQ_LIKE, retryArranged = true) {
    const log: string[] = [];
    const retries: { delayMs: number; attempts: number; error: string | null }[] = [];
    const errors: Error[] = [];
    const events = new EventEmitter<InboxConsumerEvents>();
    events.on('processed', (m) => log.push(`processed ${m.id}`));
    events.on('duplicate', (m) => log.push(`duplicate ${m.id}`));
    events.on('retrying', (e) => log.push(`retrying ${e.message.id} in ${e.delayMs}`));
    events.on('dead', (letter) => log.push(`dead ${String(letter.messageId)}`));
    events.on('error', (error) => errors.push(error));
    const handler: InboxHandler<unknown> = (message, trx) => applyEffect(h, trx, message.id);
    const policy = new DeliveryPolicy(
      events,
      { db: h.db, inbox, handler, consumer: 'billing', maxAttempts: 3, retryDelaysMs: [10, 20], ...options },
      transport,
    );
    const deliver = (id: string | null, attempt = 1) =>
      policy.deliver({
        message: message(id ?? '', attempt),
        id,
        settlement: {
          ack: () => log.push(`ack ${String(id)}`),
          drop: () => log.push(`drop ${String(id)}`),
          retry: async (delayMs, attempts, error) => {
            log.push(`retry ${String(id)}`);
            retries.push({ delayMs, attempts, error });
            return retryArranged;
          },
        },
      });
    return { deliver, log, retries, errors };
  }

  it('acks only after the transaction committed and onCommitted ran, then reports; a redelivered id is acked as a duplicate', async () => {
    const seenAtCommit: Map<string, number>[] = [];
    const { deliver, log } = setUp({
      onCommitted: async (m, outcome) => {
        seenAtCommit.push(await effects(h)); // from another connection: only committed effects are visible
        log.push(`committed ${m.id} ${outcome}`);
      },
    });
    await deliver('m-1');
    await deliver('m-1', 2);
    expect(log).toEqual([
      'committed m-1 processed',
      'ack m-1',
      'processed m-1',
      'committed m-1 duplicate',
      'ack m-1',
      'duplicate m-1',
    ]);
    expect(seenAtCommit).toEqual([new Map([['m-1', 1]]), new Map([['m-1', 1]])]);
    expect(await inboxRows(h)).toEqual(['billing/m-1']);
  });

  it('reports a throwing onCommitted as an error and acks anyway', async () => {
    const { deliver, log, errors } = setUp({
      onCommitted: () => {
        throw new Error('tracing is down');
      },
    });
    await deliver('m-2');
    expect(log).toEqual(['ack m-2', 'processed m-2']);
    expect(errors.map((e) => e.message)).toEqual(['tracing is down']);
  });

  it('rolls a failed attempt back and asks for a retry after the delay of its attempt, with the error, then reports it', async () => {
    const { deliver, log, retries } = setUp({
      handler: async (message, trx) => {
        await applyEffect(h, trx, message.id);
        throw new Error(`cannot bill (attempt ${message.attempt})`);
      },
    });
    await deliver('m-3', 1);
    await deliver('m-3', 2);
    expect(log).toEqual(['retry m-3', 'retrying m-3 in 10', 'retry m-3', 'retrying m-3 in 20']);
    expect(retries.map(({ delayMs, attempts }) => ({ delayMs, attempts }))).toEqual([
      { delayMs: 10, attempts: 1 },
      { delayMs: 20, attempts: 2 },
    ]);
    expect(retries[0]!.error).toMatch(/^Error: cannot bill \(attempt 1\)\n\s+at /);
    expect(await effects(h)).toEqual(new Map());
    expect(await inboxRows(h)).toEqual([]);
  });

  it('does not report a retry the transport could not arrange', async () => {
    const failing = (() => Promise.reject(new Error('boom'))) as InboxHandler<unknown>;
    const { deliver, log } = setUp({ handler: failing }, RABBITMQ_LIKE, false);
    await deliver('m-4');
    expect(log).toEqual(['retry m-4']);
  });

  it('after maxAttempts records the dead letter, then drops the message and reports it', async () => {
    const { deliver, log } = setUp({
      handler: () => {
        throw new Error('cannot bill, ever');
      },
    });
    await deliver('m-5', 3);
    expect(log).toEqual(['drop m-5', 'dead m-5']);
    const [letter, ...more] = await inbox.deadLetters(h.db);
    expect(more).toEqual([]);
    expect(letter).toMatchObject({
      consumer: 'billing',
      messageId: 'm-5',
      source: 'test-broker',
      destination: 'orders-queue',
      topic: 'orders.created',
      contentType: 'application/json',
      headers: { 'txoutbox-topic': 'orders.created' },
      attempts: 3,
    });
    expect(letter!.error).toMatch(/^Error: cannot bill, ever/);
    expect(JSON.parse(letter!.payload.toString())).toEqual({ total: 5 });
  });

  it('dead-letters at once, without running the handler, a message with no id or an empty one', async () => {
    let ran = 0;
    const { deliver, log } = setUp({ handler: () => void ran++ });
    await deliver(null);
    await deliver('');
    expect(ran).toBe(0);
    expect(log).toEqual(['drop null', 'dead null', 'drop ', 'dead null']);
    const letters = await inbox.deadLetters(h.db);
    expect(letters.map((l) => [l.messageId, l.attempts])).toEqual([
      [null, 0],
      [null, 0],
    ]);
    expect(letters[0]!.error).toMatch(/carries no id/);
    expect(letters[1]!.error).toMatch(/messageId must not be empty/);
  });

  it('dead-letters a delivery past maxAttempts (a crash loop) without running the handler, counting the deliveries before it', async () => {
    let ran = 0;
    const handler = () => void ran++;
    const natsLike: Transport = { ...RABBITMQ_LIKE, neverSettled: { because: 'ack_wait passed each time' } };
    await setUp({ handler }).deliver('m-6', 4);
    await setUp({ handler }, natsLike).deliver('m-7', 5);
    expect(ran).toBe(0);
    const letters = await inbox.deadLetters(h.db);
    expect(letters.map((l) => [l.messageId, l.attempts, l.error])).toEqual([
      ['m-6', 3, 'delivered 4 times without being settled (the consumer died each time)'],
      ['m-7', 4, 'delivered 5 times without being settled (ack_wait passed each time)'],
    ]);
  });

  it('when the dead letter cannot be written, reports it and brings the message back after the last delay instead of dropping it', async () => {
    const missing = createInbox({ dialect, schema: h.schema, table: 'no_such_inbox' });
    const { deliver, log, retries, errors } = setUp({ inbox: missing });
    await deliver(null);
    expect(log).toEqual(['retry null']);
    expect(retries).toEqual([{ delayMs: 20, attempts: 0, error: null }]);
    expect(errors.map((e) => e.message)).toEqual([
      expect.stringMatching(/^could not record a dead letter \(retrying it later\)/),
    ]);
  });
});

function message(id: string, attempt: number): InboxMessage {
  return {
    id,
    topic: 'orders.created',
    key: null,
    payload: Buffer.from(JSON.stringify({ total: 5 })),
    contentType: 'application/json',
    headers: { 'txoutbox-topic': 'orders.created' },
    attempt,
  };
}
