import { headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, type JetStreamManager } from '@nats-io/jetstream';
import amqp from 'amqplib';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createNatsInboxConsumer } from '../../src/dedupe/consumers/nats.js';
import { createRabbitMqInboxConsumer } from '../../src/dedupe/consumers/rabbitmq.js';
import type { Inbox, InboxMessage } from '../../src/index.js';
import { adminConnection, createStream, NATS_URL, randomSuffix } from '../support/brokers/nats-fixture.js';
import { AMQP_URL, randomName, withChannel } from '../support/brokers/rabbitmq-fixture.js';
import { createHarness, type Harness } from '../support/harness.js';
import { setUpInbox } from '../support/inbox-helpers.js';
import { waitFor } from '../support/relay-helpers.js';

/** Like the relay, a consumer helper nobody listens to for `error` still says what went wrong (on stderr). */
describe('inbox consumer helpers without an error listener', () => {
  let h: Harness;
  let inbox: Inbox;
  let admin: { nc: NatsConnection; jsm: JetStreamManager };
  const queue = randomName('txoutbox-unheard');
  let stream: string;
  const suffix = randomSuffix();
  const cleanups: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    h = await createHarness('postgres');
    inbox = await setUpInbox(h);
    admin = await adminConnection();
    stream = await createStream(admin.jsm, [`txoutbox-unheard-${suffix}.>`], `TXOUTBOX_UNHEARD_${suffix}`);
    await withChannel((channel) => channel.assertQueue(queue, { durable: true }));
  });
  afterAll(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup().catch(() => undefined);
    await withChannel((channel) => channel.deleteQueue(queue)).catch(() => undefined);
    await admin?.jsm.streams.delete(stream).catch(() => undefined);
    await admin?.nc.close();
    await h?.destroy();
    vi.restoreAllMocks();
  });

  const failingHook = (name: string) => async () => {
    throw new Error(`${name} hook failed on purpose`);
  };

  it('RabbitMQ: logs the error to stderr instead of dropping it', async () => {
    const printed = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const processed: InboxMessage[] = [];
    const consumer = createRabbitMqInboxConsumer<any>({
      url: AMQP_URL,
      queue,
      db: h.db,
      inbox,
      handler: () => undefined,
      onCommitted: failingHook('rabbitmq'),
    });
    consumer.on('processed', (m) => processed.push(m));
    await consumer.start();
    cleanups.push(() => consumer.close());
    const model = await amqp.connect(AMQP_URL);
    const channel = await model.createConfirmChannel();
    channel.sendToQueue(queue, Buffer.from('{}'), { persistent: true, messageId: 'r-1' });
    await channel.waitForConfirms();
    await model.close();
    await waitFor(() => processed.length === 1, 10_000, 'the delivery');
    const lines = printed.mock.calls.map((args) => args.map(String).join(' ')).join('\n');
    printed.mockRestore();
    expect(lines).toMatch(/txoutbox inbox consumer .*rabbitmq hook failed on purpose/);
  });

  it('NATS: logs the error to stderr instead of dropping it', async () => {
    const printed = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const processed: InboxMessage[] = [];
    const consumer = createNatsInboxConsumer<any>({
      servers: NATS_URL,
      stream,
      durable: 'unheard',
      db: h.db,
      inbox,
      handler: () => undefined,
      onCommitted: failingHook('nats'),
    });
    consumer.on('processed', (m) => processed.push(m));
    await consumer.start();
    cleanups.push(() => consumer.close());
    const headers = natsHeaders();
    headers.set('txoutbox-id', 'n-1');
    await jetstream(admin.nc).publish(`txoutbox-unheard-${suffix}.orders`, '{}', { headers });
    await waitFor(() => processed.length === 1, 10_000, 'the delivery');
    const lines = printed.mock.calls.map((args) => args.map(String).join(' ')).join('\n');
    printed.mockRestore();
    expect(lines).toMatch(/txoutbox inbox consumer .*nats hook failed on purpose/);
  });
});
