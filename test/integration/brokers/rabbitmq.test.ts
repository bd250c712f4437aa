import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors.js';
import type { PublishOutcome } from '../../../src/brokers/broker.js';
import { createRabbitMqBroker, type RabbitMqBrokerOptions } from '../../../src/brokers/rabbitmq.js';
import { brokerContract, outgoing } from '../../support/brokers/contract.js';
import { relayEndToEnd } from '../../support/brokers/end-to-end.js';
import {
  AMQP_URL,
  consumedQueue,
  rabbitmqFixture,
  randomName,
  withChannel,
  type RabbitMqUnderTest,
} from '../../support/brokers/rabbitmq-fixture.js';
import { waitFor } from '../../support/relay-helpers.js';

const run = promisify(execFile);
const signal = () => new AbortController().signal;

brokerContract(rabbitmqFixture);
relayEndToEnd(rabbitmqFixture);

describe('rabbitmq adapter', () => {
  let skip: string | null = null;
  let s: RabbitMqUnderTest | null = null;
  beforeAll(async () => {
    skip = await rabbitmqFixture.skipReason();
    if (skip === null) s = await rabbitmqFixture.open();
  });
  afterAll(async () => {
    await s?.close();
  });

  const live = (name: string, test: (s: RabbitMqUnderTest) => Promise<void>, timeoutMs = 30_000) =>
    it(
      name,
      async (context) => {
        if (skip !== null) return context.skip(skip);
        await test(s!);
      },
      timeoutMs,
    );

  live('publishes persistent messages with the id as message-id, the content type and txoutbox headers', async (s) => {
    const message = outgoing(s.topic, { key: 'customer-7', attempt: 3, headers: { traceparent: '00-abc-def-01' } });
    expect(await s.broker.publish([message], { signal: signal() })).toEqual([{ status: 'ok' }]);
    await waitFor(() => s.deliveries().some((d) => d.properties.messageId === message.id), 10_000, 'the delivery');
    const delivery = s.deliveries().find((d) => d.properties.messageId === message.id)!;
    expect(delivery.properties.deliveryMode).toBe(2);
    expect(delivery.properties.contentType).toBe('application/json');
    expect(delivery.properties.timestamp).toBe(Math.floor(message.createdAt.getTime() / 1000));
    expect(delivery.fields.routingKey).toBe(s.queue);
    expect(delivery.properties.headers).toEqual({
      traceparent: '00-abc-def-01',
      'txoutbox-id': message.id,
      'txoutbox-key': 'customer-7',
      'txoutbox-topic': s.topic,
      'txoutbox-attempt': '3',
    });
  });

  live('reports an unroutable message (basic.return) as permanent, through the default exchange and a real one', async () => {
    const exchange = randomName('txoutbox-unbound');
    const broker = createRabbitMqBroker({
      url: AMQP_URL,
      routes: { unbound: { exchange, routingKey: 'nobody' } },
      topology: { exchanges: [{ name: exchange, type: 'direct', durable: false }] },
    });
    try {
      const outcomes = await broker.publish([outgoing(randomName('no-such-queue')), outgoing('unbound')], { signal: signal() });
      expect(outcomes.map((o) => o.status)).toEqual(['permanent', 'permanent']);
      expect(outcomes[0]).toMatchObject({ error: expect.stringContaining('312 NO_ROUTE') });
      expect(outcomes[1]).toMatchObject({ error: expect.stringContaining(`exchange '${exchange}'`) });
    } finally {
      await broker.close();
      await withChannel((channel) => channel.deleteExchange(exchange));
    }
  });

  live('reports a missing exchange (404) as permanent without failing other exchanges, and opens a fresh channel', async (s) => {
    const missing = randomName('txoutbox-missing');
    const broker = createRabbitMqBroker({
      url: AMQP_URL,
      routes: { good: { routingKey: s.queue }, missing: { exchange: missing } },
    });
    try {
      const batch = [outgoing('missing'), outgoing('good'), outgoing('missing'), outgoing('good')];
      const outcomes = await broker.publish(batch, { signal: signal() });
      expect(outcomes.map((o) => o.status)).toEqual(['permanent', 'ok', 'permanent', 'ok']);
      expect(outcomes[0]).toMatchObject({ error: expect.stringContaining('404') });
      // The closed channel is replaced: the same exchange fails the same way again, and good traffic goes on.
      const again = await broker.publish([outgoing('missing'), outgoing('good')], { signal: signal() });
      expect(again.map((o) => o.status)).toEqual(['permanent', 'ok']);
      const ids = [batch[1]!.id, batch[3]!.id];
      await waitFor(
        async () => ids.every((id) => s.deliveries().some((d) => d.properties.messageId === id)),
        10_000,
        'good messages',
      );
    } finally {
      await broker.close();
    }
  });

  live('reports a nack (a full queue with overflow reject-publish) as retryable', async () => {
    const queue = randomName('txoutbox-full');
    const broker = createRabbitMqBroker({
      url: AMQP_URL,
      topology: { queues: [{ name: queue, arguments: { 'x-max-length': 1, 'x-overflow': 'reject-publish' } }] },
    });
    try {
      expect(await broker.publish([outgoing(queue)], { signal: signal() })).toEqual([{ status: 'ok' }]);
      const [outcome] = await broker.publish([outgoing(queue)], { signal: signal() });
      expect(outcome).toMatchObject({ status: 'retryable', error: expect.stringContaining('nacked') });
    } finally {
      await broker.close();
      await withChannel((channel) => channel.deleteQueue(queue));
    }
  });

  live('declares exchanges, quorum queues and bindings on connect, and routes with a function', async () => {
    const exchange = randomName('txoutbox-orders');
    const queue = randomName('txoutbox-quorum');
    const broker = createRabbitMqBroker({
      url: AMQP_URL,
      topology: {
        exchanges: [{ name: exchange, type: 'topic' }],
        queues: [{ name: queue, type: 'quorum' }],
        bindings: [{ queue, exchange, routingKey: 'orders.#' }],
      },
      route: (message) => (message.topic.startsWith('orders.') ? { exchange } : undefined),
    });
    try {
      const message = outgoing('orders.created', { key: 'o-1' });
      expect(await broker.publish([message], { signal: signal() })).toEqual([{ status: 'ok' }]);
      const { stdout } = await run('rabbitmqctl', ['list_queues', '-q', '--no-table-headers', 'name', 'type']);
      expect(stdout.split('\n').find((line) => line.startsWith(queue))).toMatch(/quorum/);
      const got = await withChannel(async (channel) => channel.get(queue, { noAck: true }));
      expect(got && got.properties.messageId).toBe(message.id);
    } finally {
      await broker.close();
      await withChannel(async (channel) => {
        await channel.deleteQueue(queue);
        await channel.deleteExchange(exchange);
      });
    }
  });

  live('waits for drain when the channel buffer is full, and loses nothing of a large batch', async () => {
    // Watch amqplib's confirm channel: after publish() returned false, nothing may be written before 'drain'.
    const { ConfirmChannel } = createRequire(import.meta.url)(
      path.join(path.dirname(createRequire(import.meta.url).resolve('amqplib')), 'lib/channel_model.js'),
    ) as {
      ConfirmChannel: {
        prototype: { publish: (...args: unknown[]) => boolean; emit: (event: string, ...args: unknown[]) => boolean };
      };
    };
    const { publish, emit } = ConfirmChannel.prototype;
    const full = new WeakSet<object>();
    const seen = { full: 0, drains: 0, writesWhileFull: 0 };
    ConfirmChannel.prototype.publish = function (this: object, ...args: unknown[]) {
      if (full.has(this)) seen.writesWhileFull++;
      const room = publish.apply(this, args);
      if (!room) (full.add(this), seen.full++);
      return room;
    };
    ConfirmChannel.prototype.emit = function (this: object, event: string, ...args: unknown[]) {
      if (event === 'drain') (full.delete(this), seen.drains++);
      return emit.call(this, event, ...args);
    };
    const target = await consumedQueue();
    const broker = createRabbitMqBroker({ url: AMQP_URL, highWaterMark: 1 });
    try {
      const batch = Array.from({ length: 2000 }, () => outgoing(target.queue, { payload: Buffer.alloc(512, 7) }));
      const outcomes = await broker.publish(batch, { signal: AbortSignal.timeout(20_000) });
      expect(outcomes.every((o) => o.status === 'ok')).toBe(true);
      expect(seen.full).toBeGreaterThan(0);
      expect(seen.drains).toBeGreaterThan(0);
      expect(seen.writesWhileFull).toBe(0);
      await waitFor(
        () => new Set(target.consumer.deliveries.map((d) => d.properties.messageId)).size >= 2000,
        15_000,
        '2000 deliveries',
      );
    } finally {
      ConfirmChannel.prototype.publish = publish;
      ConfirmChannel.prototype.emit = emit;
      await broker.close();
      await target.close();
    }
  });

  live('reconnects by itself after the server closes its connection', async (s) => {
    expect(await s.broker.publish([outgoing(s.topic)], { signal: signal() })).toEqual([{ status: 'ok' }]);
    await run('rabbitmqctl', ['close_all_connections', 'txoutbox test: connection closed on purpose']);
    const after = outgoing(s.topic);
    let outcome = (await s.broker.publish([after], { signal: AbortSignal.timeout(5000) }))[0]!;
    // The first publish may still meet the dying connection; that is retryable, never ok-and-lost.
    if (outcome.status !== 'ok') {
      expect(outcome.status).toBe('retryable');
      outcome = (await s.broker.publish([after], { signal: AbortSignal.timeout(5000) }))[0]!;
    }
    expect(outcome).toEqual({ status: 'ok' });
    await waitFor(
      () => s.deliveries().some((d) => d.properties.messageId === after.id),
      15_000,
      'the message after reconnecting',
    );
  });

  live(
    'keeps publishing while RabbitMQ restarts: failures are retryable, every ok arrives, and it recovers by itself',
    async (s) => {
      // Unlike the contract's restart test, this publishes throughout the outage, so it must meet the broker down.
      let restarted = false;
      const restarting = rabbitmqFixture.restart().then(() => (restarted = true));
      const acked: string[] = [];
      const failures: PublishOutcome[] = [];
      while (!restarted) {
        const batch = Array.from({ length: 5 }, (_, i) => outgoing(s.topic, { key: `outage-${i}` }));
        const outcomes = await s.broker.publish(batch, { signal: AbortSignal.timeout(1000) });
        outcomes.forEach((outcome, index) => (outcome.status === 'ok' ? acked.push(batch[index]!.id) : failures.push(outcome)));
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      await restarting;
      expect(failures.length).toBeGreaterThan(0);
      expect(failures.every((outcome) => outcome.status === 'retryable')).toBe(true);
      const after = outgoing(s.topic);
      expect(await s.broker.publish([after], { signal: AbortSignal.timeout(10_000) })).toEqual([{ status: 'ok' }]);
      acked.push(after.id);
      await waitFor(
        async () => {
          const ids = new Set((await s.received()).map((m) => m.id));
          return acked.every((id) => ids.has(id));
        },
        30_000,
        'every acknowledged message after the restart',
      );
    },
    120_000,
  );

  live('answers retryable when the server cannot be reached, and when the caller aborts a hanging connect', async () => {
    const refused = createRabbitMqBroker({ url: 'amqp://guest:guest@127.0.0.1:1' });
    const [outcome] = await refused.publish([outgoing('t')], { signal: signal() });
    expect(outcome).toMatchObject({ status: 'retryable', error: expect.stringContaining('ECONNREFUSED') });
    await refused.close();

    // A server that accepts TCP and never speaks AMQP: only the deadline can end the wait.
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((socket) => sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as net.AddressInfo).port;
    const hanging = createRabbitMqBroker({ url: `amqp://127.0.0.1:${port}`, connectTimeoutMs: 60_000 });
    try {
      const started = Date.now();
      const outcomes = await hanging.publish([outgoing('t'), outgoing('t')], { signal: AbortSignal.timeout(300) });
      expect(Date.now() - started).toBeLessThan(2000);
      expect(outcomes.map((o) => o.status)).toEqual(['retryable', 'retryable']);
      expect(outcomes[0]).toMatchObject({ error: expect.stringContaining('aborted') });
      const aborted = await hanging.publish([outgoing('t')], { signal: AbortSignal.abort() });
      expect(aborted).toEqual([{ status: 'retryable', error: expect.stringContaining('aborted') }]);
    } finally {
      await hanging.close();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
    // And the adapter's own connect timeout ends a hanging connect even when the caller never aborts.
    const silent2 = net.createServer((socket) => sockets.add(socket));
    await new Promise<void>((resolve) => silent2.listen(0, '127.0.0.1', resolve));
    const timeouts = createRabbitMqBroker({
      url: `amqp://127.0.0.1:${(silent2.address() as net.AddressInfo).port}`,
      connectTimeoutMs: 200,
    });
    try {
      const [timedOut] = await timeouts.publish([outgoing('t')], { signal: signal() });
      expect(timedOut).toMatchObject({ status: 'retryable', error: expect.stringContaining('ETIMEDOUT') });
    } finally {
      await timeouts.close();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent2.close(resolve));
    }
  });

  live('reports a route that throws or a message amqplib cannot encode as permanent', async (s) => {
    const broker = createRabbitMqBroker({
      url: AMQP_URL,
      routes: { ok: { routingKey: s.queue } },
      route: (message) => {
        if (message.topic === 'boom') throw new Error('no route for boom');
        return undefined;
      },
    });
    try {
      const outcomes = await broker.publish(
        [outgoing('boom'), outgoing('x'.repeat(300)), outgoing('ok', { headers: { big: 'x'.repeat(70_000) } }), outgoing('ok')],
        { signal: signal() },
      );
      expect(outcomes.map((o) => o.status)).toEqual(['permanent', 'permanent', 'permanent', 'ok']);
      expect(outcomes[0]).toMatchObject({ error: expect.stringContaining('no route for boom') });
    } finally {
      await broker.close();
    }
  });

  live('close() is idempotent and later publishes are retryable, not thrown', async (s) => {
    const broker = createRabbitMqBroker({ url: AMQP_URL, routes: { t: { routingKey: s.queue } } });
    expect(await broker.publish([outgoing('t')], { signal: signal() })).toEqual([{ status: 'ok' }]);
    await broker.close();
    await broker.close();
    const [outcome] = await broker.publish([outgoing('t')], { signal: signal() });
    expect(outcome).toMatchObject({ status: 'retryable', error: expect.stringContaining('closed') });
  });

  it('refuses bad options with a ConfigError that names the field', () => {
    const bad: [unknown, RegExp][] = [
      [{}, /url/],
      [{ url: 'http://localhost' }, /url must be an amqp/],
      [{ url: AMQP_URL, nope: 1 }, /nope|Unrecognized/i],
      [
        { url: AMQP_URL, topology: { queues: [{ name: 'q', type: 'quorum', durable: false }] } },
        /quorum queue is always durable/,
      ],
      [{ url: AMQP_URL, topology: { exchanges: [{ name: 'amq.mine', type: 'direct' }] } }, /amq\./],
      [{ url: AMQP_URL, topology: { bindings: [{ queue: 'q', exchange: '' }] } }, /binding exchange must not be empty/],
      [{ url: AMQP_URL, routes: { t: { routingKey: 'x'.repeat(256) } } }, /routingKey must be at most 255 bytes/],
      [{ url: AMQP_URL, socketOptions: { recovery: true } }, /reconnects by itself/],
      [{ url: AMQP_URL, confirmTimeoutMs: 0 }, /confirmTimeoutMs/],
      [{ url: AMQP_URL, route: 'x' }, /route must be a function/],
    ];
    for (const [options, message] of bad) {
      expect(() => createRabbitMqBroker(options as RabbitMqBrokerOptions)).toThrow(ConfigError);
      expect(() => createRabbitMqBroker(options as RabbitMqBrokerOptions)).toThrow(message);
    }
  });
});
