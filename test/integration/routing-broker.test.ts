import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRabbitMqBroker, type RabbitMqBroker } from '../../src/brokers/rabbitmq.js';
import { createRedisBroker, type RedisBroker } from '../../src/brokers/redis.js';
import { ConfigError, decorate, MemoryBroker, routeTopics, RoutingBroker, type Broker } from '../../src/index.js';
import { AMQP_URL, consumedQueue, randomName } from '../support/brokers/rabbitmq-fixture.js';
import { readStream, REDIS_URL } from '../support/brokers/redis-fixture.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';
import { drain, testRelay, waitFor } from '../support/relay-helpers.js';

/**
 * RoutingBroker as a library user builds it, with no CLI: real RabbitMQ and Redis adapters in a topic → broker
 * table, a relay publishing through it, and the real consumers of each broker checking who got what.
 */
describe.each(DIALECTS)('RoutingBroker from the library on %s', (dialect) => {
  let h: Harness;
  let queue: Awaited<ReturnType<typeof consumedQueue>>;
  let rabbit: RabbitMqBroker;
  let redis: RedisBroker;
  let reader: Redis;
  const prefix = `${randomName('txoutbox-routing')}:`;

  beforeAll(async () => {
    h = await createHarness(dialect);
    queue = await consumedQueue('txoutbox-routing');
    // The router picks the broker; each adapter still picks its own destination (here: one queue, one stream per topic).
    rabbit = createRabbitMqBroker({ url: AMQP_URL, name: 'rabbit', route: () => ({ routingKey: queue.queue }) });
    redis = createRedisBroker({ url: REDIS_URL, prefix });
    reader = new Redis(REDIS_URL);
  });
  afterAll(async () => {
    const streams = reader === undefined ? [] : await reader.keys(`${prefix}*`);
    if (streams.length > 0) await reader.del(...streams);
    reader?.disconnect();
    await rabbit?.close();
    await redis?.close();
    await queue?.close();
    await h?.destroy();
  });

  const enqueue = (messages: { id: string; topic: string; key?: string }[]) =>
    h.db.transaction().execute((trx) =>
      h.outbox.enqueue(
        trx,
        messages.map((m) => ({ ...m, payload: { id: m.id } })),
      ),
    );
  const arrivedAtRabbit = () => queue.consumer.received().map((m) => m.id);
  const arrivedAtRedis = async (topic: string) => (await readStream(reader, prefix + topic)).map((m) => m.id);

  it('sends each topic to the broker its route names (exact, then the longest pattern, then "*"), and only there', async () => {
    const router = new RoutingBroker({
      brokers: { rabbit, redis },
      routes: { 'billing.*': 'redis', 'billing.refunds': 'rabbit', '*': 'rabbit' },
    });
    await enqueue([
      { id: `${dialect}-r1`, topic: 'billing.invoices', key: 'k1' },
      { id: `${dialect}-q1`, topic: 'billing.refunds', key: 'k1' },
      { id: `${dialect}-q2`, topic: 'orders.created' },
      { id: `${dialect}-r2`, topic: 'billing.invoices', key: 'k1' },
    ]);
    await drain(testRelay(h, router));
    await waitFor(() => arrivedAtRabbit().length >= 2, 10_000, 'two messages at the RabbitMQ queue');
    expect(arrivedAtRabbit().sort()).toEqual([`${dialect}-q1`, `${dialect}-q2`]);
    expect(await arrivedAtRedis('billing.invoices')).toEqual([`${dialect}-r1`, `${dialect}-r2`]);
    expect(await reader.keys(`${prefix}*`)).toEqual([`${prefix}billing.invoices`]);
    expect(await h.rows()).toEqual([]);
  });

  it('dead-letters a topic no route names, and prefixes a broker’s own refusal with its name in the table', async () => {
    const strictRedis = createRedisBroker({ url: REDIS_URL, prefix, strict: true, routes: { 'audit.kept': `${prefix}audit` } });
    try {
      const router = new RoutingBroker({
        brokers: { rabbit, audit: strictRedis },
        routes: { 'audit.*': 'audit', 'orders.*': 'rabbit' },
      });
      await enqueue([
        { id: `${dialect}-lost`, topic: 'users.signed_up' },
        { id: `${dialect}-refused`, topic: 'audit.dropped' },
        { id: `${dialect}-kept`, topic: 'audit.kept' },
      ]);
      await drain(testRelay(h, router));
      const rows = await h.rows();
      expect(rows.map((r) => [r.id, r.state, r.lastError]).sort()).toEqual([
        [`${dialect}-lost`, 'dead', `router: no route for topic 'users.signed_up' (add it, or a "*" route, to routes)`],
        [`${dialect}-refused`, 'dead', 'router: audit: no route for topic "audit.dropped" (strict routing)'],
      ]);
      expect((await readStream(reader, `${prefix}audit`)).map((m) => m.id)).toEqual([`${dialect}-kept`]);
    } finally {
      await strictRedis.close();
      await h.db.deleteFrom(`${h.schema}.txoutbox`).execute();
    }
  });

  it('routeTopics is a decorator: the topics its routes name go to those brokers, everything else to the broker it wraps', async () => {
    const before = arrivedAtRabbit().length;
    const broker: Broker = decorate(rabbit, routeTopics({ brokers: { audit: redis }, routes: { 'audit.*': 'audit' } }));
    await enqueue([
      { id: `${dialect}-a1`, topic: 'audit.login' },
      { id: `${dialect}-o1`, topic: 'orders.paid' },
    ]);
    await drain(testRelay(h, broker));
    await waitFor(() => arrivedAtRabbit().length >= before + 1, 10_000, 'the unrouted topic at RabbitMQ');
    expect(arrivedAtRabbit().slice(before)).toEqual([`${dialect}-o1`]);
    expect(await arrivedAtRedis('audit.login')).toEqual([`${dialect}-a1`]);
    expect(await h.rows()).toEqual([]);
  });
});

describe('RoutingBroker, built', () => {
  const memory = new MemoryBroker();

  it('refuses, when built, a route to a broker that is not in its table, and an empty table', () => {
    expect(() => new RoutingBroker({ brokers: { memory }, routes: { '*': 'kafka' } })).toThrow(ConfigError);
    expect(() => new RoutingBroker({ brokers: { memory }, routes: { '*': 'kafka' } })).toThrow(
      'routes.*: names broker "kafka", which is not in brokers (memory)',
    );
    expect(() => new RoutingBroker({ brokers: new Map() })).toThrow(ConfigError);
  });

  it('asks every broker it routes to to close, once each', async () => {
    let closed = 0;
    const closable: Broker = {
      name: 'closable',
      publish: async (m) => m.map(() => ({ status: 'ok' })),
      close: async () => void closed++,
    };
    await new RoutingBroker({ brokers: { a: closable, b: closable }, fallback: closable }).close();
    expect(closed).toBe(1);
  });
});
