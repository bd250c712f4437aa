import { connect, headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import { AckPolicy, jetstream, type JetStreamManager } from '@nats-io/jetstream';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  createNatsInboxConsumer,
  type NatsInboxConsumer,
  type NatsInboxConsumerOptions,
} from '../../src/dedupe/consumers/nats.js';
import { ConfigError, type Inbox } from '../../src/index.js';
import { adminConnection, createStream, NATS_URL, randomSuffix } from '../support/brokers/nats-fixture.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';
import { applyEffect, observe, clearInbox, effects, setUpInbox } from '../support/inbox-helpers.js';
import { waitFor } from '../support/relay-helpers.js';

const noop = () => {};

describe.each(DIALECTS)('NATS JetStream inbox consumer on %s', (dialect) => {
  let h: Harness;
  let inbox: Inbox;
  let admin: { nc: NatsConnection; jsm: JetStreamManager };
  let stream: string;
  let subject: string;
  const consumers: NatsInboxConsumer<any>[] = [];

  beforeAll(async () => {
    h = await createHarness(dialect, 30);
    inbox = await setUpInbox(h);
    admin = await adminConnection();
  });
  afterAll(async () => {
    await admin?.nc.close();
    await h?.destroy();
  });
  beforeEach(async () => {
    await clearInbox(h);
    const suffix = randomSuffix();
    subject = `txoutbox-inbox-${suffix}.orders`;
    stream = await createStream(admin.jsm, [`txoutbox-inbox-${suffix}.>`], `TXOUTBOX_INBOX_${suffix}`);
  });
  afterEach(async () => {
    await Promise.all(consumers.splice(0).map((c) => c.close()));
    await admin.jsm.streams.delete(stream).catch(noop);
  });

  /** Publishes with the id in txoutbox-id only: Nats-Msg-Id would make the stream drop the copies, and a resend after its duplicate window is what the inbox is for. */
  async function publish(messages: { id?: string; body: unknown }[]) {
    const js = jetstream(admin.nc);
    for (const m of messages) {
      const headers = natsHeaders();
      headers.set('txoutbox-topic', 'orders.created');
      if (m.id !== undefined) headers.set('txoutbox-id', m.id);
      await js.publish(subject, JSON.stringify(m.body), { headers });
    }
  }

  async function start(options: Partial<NatsInboxConsumerOptions<any>> = {}) {
    const consumer = createNatsInboxConsumer<any>({
      ...(options.connection === undefined ? { servers: NATS_URL } : {}),
      stream,
      durable: 'billing',
      db: h.db,
      inbox,
      handler: async (message, trx) => applyEffect(h, trx, message.id),
      retryDelaysMs: [10],
      ...options,
    } as NatsInboxConsumerOptions<any>);
    const seen = observe(consumer);
    await consumer.start();
    consumers.push(consumer);
    return { consumer, seen };
  }

  /** True when the durable consumer has nothing pending and nothing delivered but unsettled. */
  const settled = async () => {
    const info = await admin.jsm.consumers.info(stream, 'billing');
    return info.num_pending === 0 && info.num_ack_pending === 0;
  };

  it('applies the effect of an id delivered 5 times once', async () => {
    const { seen } = await start();
    await publish(Array.from({ length: 5 }, () => ({ id: 'five-times', body: { n: 1 } })));
    await waitFor(() => seen.processed.length + seen.duplicate.length === 5, 20_000, '5 deliveries');
    expect(seen.processed.map((m) => m.id)).toEqual(['five-times']);
    expect(seen.duplicate).toHaveLength(4);
    expect(seen.processed[0]).toMatchObject({ topic: 'orders.created', attempt: 1 });
    expect(await effects(h)).toEqual(new Map([['five-times', 1]]));
    await waitFor(settled, 10_000, 'every delivery acked');
  });

  it('skips the redelivery of a message whose transaction committed but whose consumer died before the ack', async () => {
    let handlerRuns = 0;
    const handler: NatsInboxConsumerOptions<any>['handler'] = async (message, trx) => {
      handlerRuns++;
      await applyEffect(h, trx, message.id);
    };
    const doomed: NatsConnection = await connect({ servers: NATS_URL });
    const first = await start({
      connection: doomed,
      ackWaitMs: 1000,
      handler,
      // The crash: committed, then the consumer's connection is gone before the ack is sent.
      onCommitted: async () => void (await doomed.close()),
    });
    await publish([{ id: 'ack-lost', body: {} }]);
    await waitFor(() => doomed.isClosed(), 20_000, 'the first consumer to die after its commit');
    expect(first.seen.processed.map((m) => m.id)).toEqual(['ack-lost']);
    // A new instance of the service takes over; JetStream redelivers once ack_wait has passed.
    const second = await start({ handler });
    await waitFor(() => second.seen.duplicate.length === 1, 20_000, 'the redelivery');
    expect(second.seen.duplicate[0]).toMatchObject({ id: 'ack-lost', attempt: 2 });
    expect(second.seen.processed).toEqual([]);
    expect(handlerRuns).toBe(1);
    expect(await effects(h)).toEqual(new Map([['ack-lost', 1]]));
    await waitFor(settled, 10_000, 'the duplicate acked');
  });

  it('dead-letters a handler that always throws after maxAttempts deliveries while the other messages flow', async () => {
    const attempts: number[] = [];
    const { seen } = await start({
      maxAttempts: 3,
      retryDelaysMs: [5, 10],
      handler: async (message, trx) => {
        if (message.id === 'poison') {
          attempts.push(message.attempt);
          throw new Error(`cannot bill order (attempt ${message.attempt})`);
        }
        await applyEffect(h, trx, message.id);
      },
    });
    const good = Array.from({ length: 20 }, (_, i) => `good-${i}`);
    await publish([{ id: 'poison', body: {} }, ...good.map((id) => ({ id, body: {} }))]);
    await waitFor(() => seen.dead.length === 1 && seen.processed.length === 20, 30_000, 'the poison dead and the rest processed');
    expect(attempts).toEqual([1, 2, 3]);
    expect(seen.retrying).toEqual(['poison', 'poison']);
    expect([...(await effects(h)).values()]).toEqual(Array(20).fill(1));
    const [dead] = await inbox.deadLetters(h.db);
    expect(dead).toMatchObject({
      consumer: 'billing',
      messageId: 'poison',
      source: 'nats',
      destination: `${stream}/billing`,
      attempts: 3,
    });
    expect(dead!.error).toContain('cannot bill order (attempt 3)');
    await waitFor(settled, 10_000, 'nothing left pending (the poison terminated)');
  });

  it('dead-letters a message without an id at once, without running the handler', async () => {
    let ran = 0;
    const { seen } = await start({ handler: () => void ran++ });
    await publish([{ body: { no: 'id' } }]);
    await waitFor(() => seen.dead.length === 1, 20_000, 'the dead letter');
    expect(ran).toBe(0);
    expect((await inbox.deadLetters(h.db))[0]).toMatchObject({ messageId: null, attempts: 0, topic: 'orders.created' });
    await waitFor(settled, 10_000, 'the message terminated');
  });

  it('refuses an existing consumer that would stop redelivering before the dead letter', async () => {
    await admin.jsm.consumers.add(stream, { durable_name: 'billing', ack_policy: AckPolicy.Explicit, max_deliver: 2 });
    const consumer = createNatsInboxConsumer({ servers: NATS_URL, stream, durable: 'billing', db: h.db, inbox, handler: noop });
    const error = await consumer.start().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect(String(error)).toMatch(/max_deliver 2, below maxAttempts 5/);
  });
});
