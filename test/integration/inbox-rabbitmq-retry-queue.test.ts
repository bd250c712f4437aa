import amqp from 'amqplib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRabbitMqInboxConsumer, type RabbitMqInboxConsumer } from '../../src/dedupe/consumers/rabbitmq.js';
import type { Inbox } from '../../src/index.js';
import { AMQP_URL, randomName, withChannel } from '../support/brokers/rabbitmq-fixture.js';
import { createHarness, type Harness } from '../support/harness.js';
import { applyEffect, effects, observe, setUpInbox } from '../support/inbox-helpers.js';
import { waitFor } from '../support/relay-helpers.js';

const noop = () => {};

describe('RabbitMQ inbox consumer whose retry queue is missing', () => {
  let h: Harness;
  let inbox: Inbox;
  let consumer: RabbitMqInboxConsumer<any> | undefined;
  const queue = randomName('txoutbox-inbox-noretry');

  beforeAll(async () => {
    h = await createHarness('postgres');
    inbox = await setUpInbox(h);
    await withChannel((channel) => channel.assertQueue(queue, { durable: true }));
  });
  afterEach(async () => consumer?.close());
  afterAll(async () => {
    await withChannel(async (channel) => {
      await channel.deleteQueue(queue).catch(noop);
      await channel.deleteQueue(`${queue}.retry.50ms`).catch(noop);
    }).catch(noop);
    await h?.destroy();
  });

  it('does not ack a failed message whose copy RabbitMQ returned as unroutable: it is handled again, not lost', async () => {
    let runs = 0;
    const errors: Error[] = [];
    consumer = createRabbitMqInboxConsumer<any>({
      url: AMQP_URL,
      queue,
      db: h.db,
      inbox,
      retryDelaysMs: [50],
      handler: async (message, trx) => {
        runs++;
        if (runs === 1) throw new Error('first attempt fails');
        await applyEffect(h, trx, message.id);
      },
    });
    const seen = observe(consumer);
    consumer.on('error', (error) => errors.push(error));
    await consumer.start();
    // Someone deletes the retry queue after the consumer declared it: the copy routes nowhere.
    await withChannel((channel) => channel.deleteQueue(consumer!.retryQueueFor(50)));

    const model = await amqp.connect(AMQP_URL);
    model.on('error', noop);
    const channel = await model.createConfirmChannel();
    channel.sendToQueue(queue, Buffer.from('{}'), { persistent: true, messageId: 'm-1', contentType: 'application/json' });
    await channel.waitForConfirms();
    await model.close();

    await waitFor(() => seen.processed.length === 1, 15_000, 'the message to be handled again');
    expect(seen.processed.map((m) => m.id)).toEqual(['m-1']);
    expect(seen.retrying).toEqual([]);
    expect(errors.map((e) => e.message).join('\n')).toMatch(/could not move a failed message to its retry queue: .*unroutable/);
    expect(await effects(h)).toEqual(new Map([['m-1', 1]]));
  });
});
