import { headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, type JetStreamManager } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNatsInboxConsumer, type NatsInboxConsumer } from '../../src/dedupe/consumers/nats.js';
import type { Inbox } from '../../src/index.js';
import { adminConnection, createStream, NATS_URL, randomSuffix } from '../support/brokers/nats-fixture.js';
import { createHarness, type Harness } from '../support/harness.js';
import { applyEffect, effects, observe, setUpInbox } from '../support/inbox-helpers.js';
import { waitFor } from '../support/relay-helpers.js';

describe('NATS inbox consumer with a handler slower than ack_wait', () => {
  let h: Harness;
  let inbox: Inbox;
  let admin: { nc: NatsConnection; jsm: JetStreamManager };
  let stream: string;
  let consumer: NatsInboxConsumer<any> | undefined;
  const suffix = randomSuffix();
  const subject = `txoutbox-slow-${suffix}.orders`;

  beforeAll(async () => {
    h = await createHarness('postgres');
    inbox = await setUpInbox(h);
    admin = await adminConnection();
    stream = await createStream(admin.jsm, [`txoutbox-slow-${suffix}.>`], `TXOUTBOX_SLOW_${suffix}`);
  });
  afterAll(async () => {
    await consumer?.close();
    await admin?.jsm.streams.delete(stream).catch(() => undefined);
    await admin?.nc.close();
    await h?.destroy();
  });

  it('keeps the delivery alive while the handler runs: processed once, no redelivery counted, no dead letter', async () => {
    let runs = 0;
    consumer = createNatsInboxConsumer<any>({
      servers: NATS_URL,
      stream,
      durable: 'slow',
      db: h.db,
      inbox,
      ackWaitMs: 1000,
      maxAttempts: 2,
      retryDelaysMs: [10],
      handler: async (message, trx) => {
        runs++;
        // Three and a half ack_waits: JetStream redelivers an unacked message after each one.
        await new Promise((resolve) => setTimeout(resolve, 3500));
        await applyEffect(h, trx, message.id);
      },
    });
    const seen = observe(consumer);
    await consumer.start();
    const headers = natsHeaders();
    headers.set('txoutbox-id', 'slow-1');
    await jetstream(admin.nc).publish(subject, '{}', { headers });

    await waitFor(() => seen.processed.length === 1, 15_000, 'the slow message to be processed');
    // Long enough for a redelivery that was already on its way to arrive and be settled.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(seen.dead).toEqual([]);
    expect(seen.processed.map((m) => [m.id, m.attempt])).toEqual([['slow-1', 1]]);
    expect(runs).toBe(1);
    expect(await effects(h)).toEqual(new Map([['slow-1', 1]]));
    const info = await admin.jsm.consumers.info(stream, 'slow');
    expect(info.num_ack_pending + info.num_pending).toBe(0);
  });
});
