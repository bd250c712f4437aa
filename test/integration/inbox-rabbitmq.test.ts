import amqp from 'amqplib';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  createRabbitMqInboxConsumer,
  type RabbitMqInboxConsumer,
  type RabbitMqInboxConsumerOptions,
} from '../../src/dedupe/consumers/rabbitmq.js';
import type { Inbox, InboxMessage } from '../../src/index.js';
import { AMQP_URL, randomName, withChannel } from '../support/brokers/rabbitmq-fixture.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';
import { applyEffect, observe, clearInbox, effects, gate, inboxRows, setUpInbox } from '../support/inbox-helpers.js';
import { waitFor } from '../support/relay-helpers.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

const noop = () => {};

/** Publishes persistent messages to a queue through a confirm channel and waits for the confirms. */
async function publish(queue: string, messages: { id?: string; body: unknown; headers?: Record<string, string> }[]) {
  const model = await amqp.connect(AMQP_URL);
  model.on('error', noop);
  try {
    const channel = await model.createConfirmChannel();
    for (const m of messages) {
      channel.sendToQueue(queue, Buffer.from(JSON.stringify(m.body)), {
        persistent: true,
        contentType: 'application/json',
        ...(m.id === undefined ? {} : { messageId: m.id }),
        headers: { 'txoutbox-topic': 'orders.created', ...m.headers },
      });
    }
    await channel.waitForConfirms();
  } finally {
    await model.close().catch(noop);
  }
}

/** Ready + unacked messages left in a queue, seen from the broker. */
const messagesIn = (queue: string) => withChannel(async (channel) => (await channel.checkQueue(queue)).messageCount);

/** Records everything a consumer reports. */
describe.each(DIALECTS)('RabbitMQ inbox consumer on %s', (dialect) => {
  let h: Harness;
  let inbox: Inbox;
  let queue: string;
  const consumers: RabbitMqInboxConsumer<any>[] = [];
  const proxies: TcpProxy[] = [];

  beforeAll(async () => {
    h = await createHarness(dialect, 30);
    inbox = await setUpInbox(h);
  });
  afterAll(async () => h?.destroy());
  beforeEach(async () => {
    await clearInbox(h);
    queue = randomName('txoutbox-inbox');
    await withChannel((channel) => channel.assertQueue(queue, { durable: true }));
  });
  afterEach(async () => {
    await Promise.all(consumers.splice(0).map((c) => c.close()));
    await Promise.all(proxies.splice(0).map((p) => p.close()));
    await withChannel(async (channel) => {
      for (const name of [queue, ...[1, 5, 10, 50, 100, 1000, 5000, 30000].map((d) => `${queue}.retry.${d}ms`)]) {
        await channel.deleteQueue(name).catch(noop);
      }
    }).catch(noop);
  });

  async function start(options: Partial<RabbitMqInboxConsumerOptions<any>> = {}) {
    const consumer = createRabbitMqInboxConsumer<any>({
      url: AMQP_URL,
      queue,
      db: h.db,
      inbox,
      handler: async (message, trx) => applyEffect(h, trx, message.id),
      retryDelaysMs: [10],
      ...options,
    });
    const seen = observe(consumer);
    await consumer.start();
    consumers.push(consumer);
    return { consumer, seen };
  }

  it('applies the effect of an id delivered 5 times once', async () => {
    const { seen } = await start();
    await publish(
      queue,
      Array.from({ length: 5 }, () => ({ id: 'five-times', body: { n: 1 } })),
    );
    await waitFor(() => seen.processed.length + seen.duplicate.length === 5, 20_000, '5 deliveries');
    expect(seen.processed.map((m) => m.id)).toEqual(['five-times']);
    expect(seen.duplicate.map((m) => m.id)).toEqual(Array(4).fill('five-times'));
    expect(await effects(h)).toEqual(new Map([['five-times', 1]]));
    expect(await messagesIn(queue)).toBe(0);
  });

  it('hands the handler the message as published', async () => {
    let received: InboxMessage | undefined;
    const { seen } = await start({
      consumer: 'billing',
      handler: (message) => void (received = message),
    });
    await publish(queue, [{ id: 'm-fields', body: { total: 5 }, headers: { 'txoutbox-key': 'o-1', 'x-tenant': 'acme' } }]);
    await waitFor(() => seen.processed.length === 1, 20_000, 'the delivery');
    expect(received).toMatchObject({
      id: 'm-fields',
      topic: 'orders.created',
      key: 'o-1',
      contentType: 'application/json',
      attempt: 1,
      headers: { 'x-tenant': 'acme', 'txoutbox-key': 'o-1' },
    });
    expect(JSON.parse(received!.payload.toString())).toEqual({ total: 5 });
    expect(await inboxRows(h)).toEqual(['billing/m-fields']);
  });

  it('skips the redelivery of a message whose transaction committed but whose ack was lost when the connection died', async () => {
    const proxy = await startTcpProxy({ host: new URL(AMQP_URL).hostname, port: Number(new URL(AMQP_URL).port || 5672) });
    proxies.push(proxy);
    let handlerRuns = 0;
    const url = AMQP_URL.replace(/:\d+(\/|$)/, `:${proxy.port}$1`);
    const { seen } = await start({
      url,
      reconnectDelayMs: 50,
      handler: async (message, trx) => {
        handlerRuns++;
        await applyEffect(h, trx, message.id);
      },
      // The crash: the transaction has committed, and the connection dies before the ack can be sent.
      onCommitted: (_message, outcome) => {
        if (outcome === 'processed') proxy.dropAll();
      },
    });
    await publish(queue, [{ id: 'ack-lost', body: { n: 1 } }]);
    await waitFor(() => seen.duplicate.length === 1, 30_000, 'the redelivery after the lost ack');
    expect(proxy.dropped).toBeGreaterThanOrEqual(1);
    expect(handlerRuns).toBe(1);
    expect(seen.processed.map((m) => m.id)).toEqual(['ack-lost']);
    expect(seen.duplicate.map((m) => m.id)).toEqual(['ack-lost']);
    expect(await effects(h)).toEqual(new Map([['ack-lost', 1]]));
    await waitFor(async () => (await messagesIn(queue)) === 0, 10_000, 'the duplicate to be acked');
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
    await publish(queue, [{ id: 'poison', body: {} }, ...good.map((id) => ({ id, body: {} }))]);
    await waitFor(() => seen.dead.length === 1 && seen.processed.length === 20, 30_000, 'the poison dead and the rest processed');
    expect(attempts).toEqual([1, 2, 3]);
    expect(seen.retrying).toEqual(['poison', 'poison']);
    expect(new Map([...(await effects(h))].sort())).toEqual(new Map(good.map((id) => [id, 1] as const).sort()));
    const [dead] = await inbox.deadLetters(h.db);
    expect(dead).toMatchObject({ consumer: queue, messageId: 'poison', source: 'rabbitmq', destination: queue, attempts: 3 });
    expect(dead!.error).toContain('cannot bill order (attempt 3)');
    expect(dead!.topic).toBe('orders.created');
    expect(await inboxRows(h)).not.toContain(`${queue}/poison`);
    for (const name of [queue, `${queue}.retry.5ms`, `${queue}.retry.10ms`]) expect(await messagesIn(name)).toBe(0);
  });

  it('bounds a message that kills its consumer every time: on a quorum queue it is dead-lettered after maxAttempts deliveries', async () => {
    await withChannel(async (channel) => {
      await channel.deleteQueue(queue);
      await channel.assertQueue(queue, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
    });
    const proxy = await startTcpProxy({ host: new URL(AMQP_URL).hostname, port: Number(new URL(AMQP_URL).port || 5672) });
    proxies.push(proxy);
    let handlerRuns = 0;
    const { seen } = await start({
      url: AMQP_URL.replace(/:\d+(\/|$)/, `:${proxy.port}$1`),
      reconnectDelayMs: 50,
      maxAttempts: 3,
      handler: () => {
        handlerRuns++;
        // The consumer "dies" while handling: its connection is gone before anything is settled.
        proxy.dropAll();
        throw new Error('the process crashed');
      },
    });
    await publish(queue, [{ id: 'crasher', body: {} }]);
    // The third failure is dead-lettered, but its ack dies with the connection too; the fourth delivery is then
    // dead-lettered again (the same row) without running the handler, and acked.
    await waitFor(() => seen.dead.length === 2, 30_000, 'the dead letter, twice');
    expect(handlerRuns).toBe(3);
    expect(seen.dead.map((d) => d.error.split('\n')[0])).toEqual([
      'Error: the process crashed',
      'delivered 4 times without being settled (the consumer died while handling it each time)',
    ]);
    const [dead, ...more] = await inbox.deadLetters(h.db);
    expect(more).toEqual([]);
    expect(dead).toMatchObject({ messageId: 'crasher', attempts: 3 });
    expect(dead!.error).toMatch(/delivered 4 times without being settled/);
    await waitFor(async () => (await messagesIn(queue)) === 0, 10_000, 'the queue to be empty');
  });

  it('dead-letters a message without an id at once, without running the handler', async () => {
    let ran = 0;
    const { seen } = await start({ handler: () => void ran++ });
    await publish(queue, [{ body: { no: 'id' } }]);
    await waitFor(() => seen.dead.length === 1, 20_000, 'the dead letter');
    expect(ran).toBe(0);
    const [dead] = await inbox.deadLetters(h.db);
    expect(dead).toMatchObject({ messageId: null, attempts: 0 });
    expect(dead!.error).toMatch(/carries no id/);
    expect(await messagesIn(queue)).toBe(0);
  });

  it('lets 20 copies of one id delivered at once commit one effect, with no failed transaction', async () => {
    const { seen } = await start({ prefetch: 20 });
    await publish(
      queue,
      Array.from({ length: 20 }, () => ({ id: 'twenty', body: {} })),
    );
    await waitFor(() => seen.processed.length + seen.duplicate.length === 20, 20_000, '20 deliveries');
    expect(seen.processed).toHaveLength(1);
    expect(seen.retrying).toEqual([]);
    expect(await effects(h)).toEqual(new Map([['twenty', 1]]));
  });

  it('close() waits for the handlers in flight, which commit and ack', async () => {
    const hold = gate();
    const entered = gate();
    const { consumer, seen } = await start({
      handler: async (message, trx) => {
        entered.open();
        await hold.opened;
        await applyEffect(h, trx, message.id);
      },
    });
    await publish(queue, [{ id: 'in-flight', body: {} }]);
    await entered.opened;
    let closed = false;
    const closing = consumer.close().then(() => (closed = true));
    await effects(h); // a round-trip: time for close() to finish if it did not wait
    expect(closed).toBe(false);
    hold.open();
    await closing;
    expect(seen.processed.map((m) => m.id)).toEqual(['in-flight']);
    expect(await effects(h)).toEqual(new Map([['in-flight', 1]]));
    expect(await messagesIn(queue)).toBe(0);
  });

  it('refuses a queue that does not exist, and bad options, with errors that say what to do', async () => {
    const missing = createRabbitMqInboxConsumer({
      url: AMQP_URL,
      queue: randomName('txoutbox-missing'),
      db: h.db,
      inbox,
      handler: noop,
    });
    await expect(missing.start()).rejects.toThrow(/cannot be consumed .*declare it first/);
    expect(() => createRabbitMqInboxConsumer({ url: 'http://x', queue, db: h.db, inbox, handler: noop })).toThrow(/url/);
    expect(() =>
      createRabbitMqInboxConsumer({ url: AMQP_URL, queue, db: h.db, inbox, handler: noop, retryDelaysMs: [] }),
    ).toThrow(/retryDelaysMs/);
  });
});
