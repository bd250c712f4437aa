import { createRequire } from 'node:module';
import net from 'node:net';
import kafkajs from 'kafkajs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createKafkaBroker, type KafkaBrokerOptions } from '../../../src/brokers/kafka.js';
import { classifyKafkaError } from '../../../src/brokers/kafka/errors.js';
import { resolveKafkaOptions } from '../../../src/brokers/kafka/options.js';
import { toKafkaMessage } from '../../../src/brokers/kafka/records.js';
import { kafkaTopicFor } from '../../../src/brokers/kafka/topics.js';
import { ConfigError } from '../../../src/index.js';
import { brokerContract, outgoing } from '../../support/brokers/contract.js';
import { kafkaFixture } from '../../support/brokers/kafka-fixture.js';
import { waitFor } from '../../support/relay-helpers.js';

// Runs against the Kafka at KAFKA_BROKERS; skipped, with that reason, when it is not set.
brokerContract(kafkaFixture);

// What follows needs no Kafka server: the adapter's pure parts, and how it behaves when nothing (or something
// that is not Kafka) answers at the broker address.

type ProtocolError = InstanceType<typeof kafkajs.KafkaJSProtocolError>;
/** kafkajs's own table of Kafka error codes, which it uses to build the errors a broker's answer carries. */
const kafkaProtocol = createRequire(import.meta.url)('kafkajs/src/protocol/error.js') as {
  createErrorFromCode(code: number): ProtocolError;
};

const CODES = {
  UNKNOWN_TOPIC_OR_PARTITION: 3,
  NOT_LEADER_FOR_PARTITION: 6,
  REQUEST_TIMED_OUT: 7,
  MESSAGE_TOO_LARGE: 10,
  INVALID_TOPIC_EXCEPTION: 17,
  RECORD_LIST_TOO_LARGE: 18,
  NOT_ENOUGH_REPLICAS: 19,
  NOT_ENOUGH_REPLICAS_AFTER_APPEND: 20,
  TOPIC_AUTHORIZATION_FAILED: 29,
  CLUSTER_AUTHORIZATION_FAILED: 31,
  OUT_OF_ORDER_SEQUENCE_NUMBER: 45,
  INVALID_PRODUCER_EPOCH: 47,
  KAFKA_STORAGE_ERROR: 56,
  INVALID_RECORD: 87,
} as const;

const protocolError = (type: keyof typeof CODES): ProtocolError => kafkaProtocol.createErrorFromCode(CODES[type]);

describe('Kafka adapter options', () => {
  it('uses the documented defaults', () => {
    const options = resolveKafkaOptions({ brokers: ['localhost:9092'] });
    expect(options).toMatchObject({
      brokers: ['localhost:9092'],
      clientId: 'txoutbox',
      routes: {},
      connectionTimeoutMs: 1000,
      requestTimeoutMs: 30_000,
      ackTimeoutMs: 30_000,
      retries: 5,
      maxBatchBytes: 1_000_000,
      logLevel: 'warn',
    });
    expect(options.route).toBeUndefined();
  });

  it('accepts IPv6 and name addresses, TLS and SASL settings', () => {
    const options = resolveKafkaOptions({
      brokers: ['[::1]:9092', 'kafka-1.internal:19092', '10.0.0.7:9093'],
      ssl: { rejectUnauthorized: true },
      sasl: { mechanism: 'scram-sha-512', username: 'u', password: 'p' },
      routes: { 'orders.created': 'orders_created-v1' },
      route: (topic) => topic.replaceAll('/', '.'),
    });
    expect(options.ssl).toEqual({ rejectUnauthorized: true });
    expect(options.sasl).toMatchObject({ mechanism: 'scram-sha-512' });
  });

  it.each([
    ['no brokers at all', {}, /brokers/],
    ['an empty broker list', { brokers: [] }, /brokers: must name at least one broker/],
    ['brokers as one comma-separated string', { brokers: 'a:9092,b:9092' }, /brokers: must be an array/],
    ['a broker without a port', { brokers: ['localhost'] }, /brokers\.0: must be "host:port"/],
    ['a broker port out of range', { brokers: ['localhost:70000'] }, /brokers\.0/],
    ['a broker URL instead of host:port', { brokers: ['kafka://localhost:9092'] }, /brokers\.0/],
    [
      'a route to an illegal Kafka topic name',
      { brokers: ['k:9092'], routes: { a: 'orders/created' } },
      /routes\.a: "orders\/created" is not a legal Kafka topic name/,
    ],
    ['a route to "."', { brokers: ['k:9092'], routes: { a: '.' } }, /routes\.a/],
    ['a route function that is not a function', { brokers: ['k:9092'], route: 'orders' }, /route: must be a function/],
    ['zero retries (the idempotent producer needs them)', { brokers: ['k:9092'], retries: 0 }, /retries: must be at least 1/],
    ['a fractional timeout', { brokers: ['k:9092'], requestTimeoutMs: 1.5 }, /requestTimeoutMs/],
    ['a tiny maxBatchBytes', { brokers: ['k:9092'], maxBatchBytes: 10 }, /maxBatchBytes/],
    ['an unknown log level', { brokers: ['k:9092'], logLevel: 'verbose' }, /logLevel/],
    ['an empty clientId', { brokers: ['k:9092'], clientId: '' }, /clientId/],
    ['ssl that is neither boolean nor options', { brokers: ['k:9092'], ssl: 'yes' }, /ssl/],
    ['sasl without a mechanism', { brokers: ['k:9092'], sasl: { username: 'u' } }, /sasl/],
    ['an option it does not have (idempotence is not optional)', { brokers: ['k:9092'], idempotent: false }, /idempotent/],
    ['acks (always -1)', { brokers: ['k:9092'], acks: 1 }, /acks/],
  ])('refuses %s with a ConfigError naming it', (_what, options, message) => {
    expect(() => createKafkaBroker(options as unknown as KafkaBrokerOptions)).toThrow(ConfigError);
    expect(() => createKafkaBroker(options as unknown as KafkaBrokerOptions)).toThrow(message);
    expect(() => createKafkaBroker(options as unknown as KafkaBrokerOptions)).toThrow(/^Invalid createKafkaBroker options: /);
  });

  it('names every problem at once', () => {
    expect(() => createKafkaBroker({ brokers: [], retries: 0 } as KafkaBrokerOptions)).toThrow(/brokers: .*; retries: /);
  });
});

describe('Kafka topic routing', () => {
  const routes = { 'orders.created': 'orders', 'a/b': 'a-b' };
  const route = (topic: string) => (topic.startsWith('billing/') ? `billing.${topic.slice('billing/'.length)}` : undefined);

  it('uses the routes map first', () => {
    expect(kafkaTopicFor('orders.created', routes, () => 'elsewhere')).toEqual({ to: 'orders' });
    expect(kafkaTopicFor('a/b', routes)).toEqual({ to: 'a-b' });
  });

  it('then the route function, then the topic itself', () => {
    expect(kafkaTopicFor('billing/invoice', routes, route)).toEqual({ to: 'billing.invoice' });
    expect(kafkaTopicFor('users.signed_up', routes, route)).toEqual({ to: 'users.signed_up' });
    expect(kafkaTopicFor('users.signed_up', {})).toEqual({ to: 'users.signed_up' });
  });

  it('does not mistake inherited object properties for routes', () => {
    expect(kafkaTopicFor('constructor', {})).toEqual({ to: 'constructor' });
    expect(kafkaTopicFor('toString', routes)).toEqual({ to: 'toString' });
  });

  it('refuses a topic that is not a legal Kafka topic name, pointing at routes', () => {
    const result = kafkaTopicFor('orders:created', {});
    expect(result).toEqual({ refused: expect.stringMatching(/"orders:created" is not a legal Kafka topic name.*routes/) });
    expect(kafkaTopicFor('x'.repeat(250), {})).toHaveProperty('refused');
    expect(kafkaTopicFor('billing/a:b', {}, route)).toEqual({
      refused: expect.stringMatching(/"billing\.a:b" \(routed from "billing\/a:b"\)/),
    });
  });

  it('reports a route function that throws or returns a non-string', () => {
    expect(
      kafkaTopicFor('t', {}, () => {
        throw new Error('no route for t');
      }),
    ).toEqual({ refused: expect.stringMatching(/route function threw for topic "t": Error: no route for t/) });
    expect(kafkaTopicFor('t', {}, (() => 42) as unknown as () => string)).toEqual({
      refused: expect.stringMatching(/returned number/),
    });
  });
});

describe('Kafka record mapping', () => {
  it('carries the key, the exact payload bytes, txoutbox fields and user headers (traceparent included)', () => {
    const message = outgoing('orders.created', {
      id: '01J0000000000000000000ORDER',
      key: 'order-42',
      payload: Buffer.from(JSON.stringify({ orderId: 42, note: 'café ☕' })),
      headers: { 'x-tenant': 'acme', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
      attempt: 3,
    });
    const record = toKafkaMessage(message);
    expect(record.key).toBe('order-42');
    expect(record.value).toBe(message.payload);
    expect(record.headers).toEqual({
      'x-tenant': 'acme',
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      'txoutbox-id': '01J0000000000000000000ORDER',
      'txoutbox-key': 'order-42',
      'txoutbox-topic': 'orders.created',
      'txoutbox-attempt': '3',
      'content-type': 'application/json',
    });
    expect(record.partition).toBeUndefined();
    expect(record.timestamp).toBeUndefined();
  });

  it('gives a keyless message a null Kafka key and keeps binary payloads as they are', () => {
    const payload = Buffer.from([0, 1, 2, 255]);
    const record = toKafkaMessage(outgoing('bytes', { key: null, payload, contentType: 'application/octet-stream' }));
    expect(record.key).toBeNull();
    expect(record.headers).not.toHaveProperty('txoutbox-key');
    expect(Buffer.compare(record.value as Buffer, payload)).toBe(0);
    expect(record.headers['content-type']).toBe('application/octet-stream');
  });

  it('lets its own headers win over user headers of the same name, in any case', () => {
    const record = toKafkaMessage(
      outgoing('t', {
        id: 'real-id',
        key: null,
        headers: { 'Content-Type': 'text/evil', 'TXOUTBOX-ID': 'forged', 'txoutbox-key': 'forged', 'x-ok': '1' },
      }),
    );
    expect(record.headers).toEqual({
      'x-ok': '1',
      'txoutbox-id': 'real-id',
      'txoutbox-topic': 't',
      'txoutbox-attempt': '1',
      'content-type': 'application/json',
    });
  });
});

describe('Kafka error classification', () => {
  it.each([
    ['UNKNOWN_TOPIC_OR_PARTITION', 'permanent'],
    ['INVALID_TOPIC_EXCEPTION', 'permanent'],
    ['TOPIC_AUTHORIZATION_FAILED', 'permanent'],
    ['MESSAGE_TOO_LARGE', 'permanent'],
    ['RECORD_LIST_TOO_LARGE', 'permanent'],
    ['INVALID_RECORD', 'permanent'],
    ['NOT_LEADER_FOR_PARTITION', 'retryable'],
    ['REQUEST_TIMED_OUT', 'retryable'],
    ['NOT_ENOUGH_REPLICAS', 'retryable'],
    ['NOT_ENOUGH_REPLICAS_AFTER_APPEND', 'retryable'],
    ['KAFKA_STORAGE_ERROR', 'retryable'],
    ['CLUSTER_AUTHORIZATION_FAILED', 'retryable'],
    ['OUT_OF_ORDER_SEQUENCE_NUMBER', 'retryable'],
    ['INVALID_PRODUCER_EPOCH', 'retryable'],
  ] as const)('a KafkaJSProtocolError %s (as the broker answers it) is %s', (type, status) => {
    const error = protocolError(type);
    expect(error).toBeInstanceOf(kafkajs.KafkaJSProtocolError);
    expect(error.type).toBe(type);
    expect(error.code).toBe(CODES[type]);
    const outcome = classifyKafkaError(error);
    expect(outcome.status).toBe(status);
    expect(outcome.error).toContain(type);
    expect(outcome.error).toContain(error.message);
  });

  it('looks through kafkajs wrappers: retries exhausted keeps the cause’s class', () => {
    const exhausted = (cause: ProtocolError) =>
      new kafkajs.KafkaJSNumberOfRetriesExceeded(cause, { retryCount: 5, retryTime: 4800 });
    // KafkaJSNumberOfRetriesExceeded is itself "non-retriable": the cause decides.
    expect(classifyKafkaError(exhausted(protocolError('NOT_LEADER_FOR_PARTITION')))).toMatchObject({
      status: 'retryable',
      error: expect.stringMatching(/^KafkaJSNumberOfRetriesExceeded: .*NOT_LEADER_FOR_PARTITION/),
    });
    expect(classifyKafkaError(exhausted(protocolError('UNKNOWN_TOPIC_OR_PARTITION'))).status).toBe('permanent');
    // The retrier wraps a non-retriable failure as new KafkaJSNonRetriableError(e, { cause: e }).
    const NonRetriable = kafkajs.KafkaJSNonRetriableError as unknown as new (e: Error, options: { cause: Error }) => Error;
    const tooLarge = protocolError('MESSAGE_TOO_LARGE');
    expect(classifyKafkaError(new NonRetriable(tooLarge, { cause: tooLarge })).status).toBe('permanent');
  });

  it('treats connection trouble, request timeouts and anything unrecognised as retryable', () => {
    const refused = new kafkajs.KafkaJSConnectionError('Connection error: connect ECONNREFUSED 127.0.0.1:9092', {
      broker: '127.0.0.1:9092',
      code: 'ECONNREFUSED',
    });
    expect(classifyKafkaError(refused)).toEqual({
      status: 'retryable',
      error: 'KafkaJSConnectionError: Connection error: connect ECONNREFUSED 127.0.0.1:9092',
    });
    expect(
      classifyKafkaError(new kafkajs.KafkaJSRequestTimeoutError('Request Produce(key: 0, version: 7) timed out')).status,
    ).toBe('retryable');
    expect(classifyKafkaError(new kafkajs.KafkaJSNonRetriableError('The producer is disconnecting')).status).toBe('retryable');
    expect(classifyKafkaError(new TypeError('boom')).status).toBe('retryable');
    expect(classifyKafkaError('a string')).toEqual({ status: 'retryable', error: 'a string' });
  });
});

/** A TCP server at the broker address that is not Kafka: it counts connections, then drops them or never answers. */
async function tcpServer(
  behaviour: 'drop' | 'ignore',
): Promise<{ address: string; connections: () => number; open: () => number; close: () => Promise<void> }> {
  let count = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    count++;
    socket.on('error', () => undefined);
    if (behaviour === 'drop') socket.destroy();
    else {
      socket.resume(); // read and discard, so a client's FIN is seen and the socket closes
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    connections: () => count,
    open: () => sockets.size,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('Kafka adapter without a Kafka server', () => {
  const quick = {
    clientId: 'txoutbox-test',
    connectionTimeoutMs: 300,
    requestTimeoutMs: 500,
    retries: 1,
    logLevel: 'nothing',
  } as const;
  let cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const step of cleanup.reverse()) await step();
    cleanup = [];
    vi.restoreAllMocks();
  });

  it('connects to nothing until the first publish, and closes without having connected', async () => {
    const server = await tcpServer('ignore');
    cleanup.push(server.close);
    const broker = createKafkaBroker({ ...quick, brokers: [server.address] });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(server.connections()).toBe(0);
    await broker.close();
    expect(server.connections()).toBe(0);
  });

  it('answers retryable for every message, in order, when the broker drops connections; and reconnects on the next publish', async () => {
    const server = await tcpServer('drop');
    cleanup.push(server.close);
    const broker = createKafkaBroker({ ...quick, brokers: [server.address] });
    cleanup.push(() => broker.close());
    const messages = [outgoing('orders'), outgoing('orders', { key: 'k' }), outgoing('payments')];
    const first = await broker.publish(messages, { signal: AbortSignal.timeout(10_000) });
    expect(first).toHaveLength(3);
    for (const outcome of first)
      expect(outcome).toMatchObject({ status: 'retryable', error: expect.stringMatching(/could not connect to Kafka/) });
    const afterFirst = server.connections();
    expect(afterFirst).toBeGreaterThan(0);
    const second = await broker.publish(messages, { signal: AbortSignal.timeout(10_000) });
    expect(second.every((o) => o.status === 'retryable')).toBe(true);
    expect(server.connections()).toBeGreaterThan(afterFirst);
  });

  it('returns "outcome unknown"-style retryable outcomes as soon as the signal aborts, even when the broker never answers', async () => {
    const server = await tcpServer('ignore');
    cleanup.push(server.close);
    // Without the signal, kafkajs would wait out its 3 s request timeout (and retry after it).
    const broker = createKafkaBroker({ ...quick, requestTimeoutMs: 3000, brokers: [server.address] });
    cleanup.push(() => broker.close());
    const started = Date.now();
    const outcomes = await broker.publish([outgoing('orders'), outgoing('orders')], { signal: AbortSignal.timeout(200) });
    expect(Date.now() - started).toBeLessThan(1500);
    expect(outcomes).toEqual([
      { status: 'retryable', error: expect.stringMatching(/aborted/) },
      { status: 'retryable', error: expect.stringMatching(/aborted/) },
    ]);
    expect(server.connections()).toBeGreaterThan(0);
  });

  it('closes every connection it opened, including those of a connect still retrying when it was closed', async () => {
    const server = await tcpServer('ignore');
    cleanup.push(server.close);
    const broker = createKafkaBroker({ ...quick, requestTimeoutMs: 1000, brokers: [server.address] });
    await broker.publish([outgoing('orders')], { signal: AbortSignal.timeout(100) });
    expect(server.open()).toBeGreaterThan(0);
    await broker.close();
    // kafkajs's connect goes on retrying (and reconnecting) after a disconnect; the adapter disconnects again once
    // it gives up. Done means: nothing open, and no new connection for 2 s.
    await waitFor(
      async () => {
        const before = server.connections();
        await new Promise((resolve) => setTimeout(resolve, 2000));
        return server.open() === 0 && server.connections() === before;
      },
      15_000,
      'every connection to stay closed',
    );
    expect(server.connections()).toBeGreaterThan(2); // the retrying connect did reconnect after close()
  });

  it('does not even connect when the signal is already aborted', async () => {
    const server = await tcpServer('ignore');
    cleanup.push(server.close);
    const broker = createKafkaBroker({ ...quick, brokers: [server.address] });
    cleanup.push(() => broker.close());
    const controller = new AbortController();
    controller.abort(new Error('stopping'));
    expect(await broker.publish([outgoing('orders')], { signal: controller.signal })).toEqual([
      { status: 'retryable', error: 'aborted before it was sent to Kafka' },
    ]);
    expect(server.connections()).toBe(0);
  });

  it('fails an unroutable message permanently, in its place, without holding up the others', async () => {
    const server = await tcpServer('ignore');
    cleanup.push(server.close);
    const broker = createKafkaBroker({
      ...quick,
      brokers: [server.address],
      route: (topic) => (topic === 'broken' ? 'not/legal' : undefined),
    });
    cleanup.push(() => broker.close());
    const controller = new AbortController();
    controller.abort();
    const outcomes = await broker.publish([outgoing('orders'), outgoing('a:b'), outgoing('broken')], {
      signal: controller.signal,
    });
    expect(outcomes).toEqual([
      { status: 'retryable', error: 'aborted before it was sent to Kafka' },
      { status: 'permanent', error: expect.stringMatching(/"a:b" is not a legal Kafka topic name/) },
      { status: 'permanent', error: expect.stringMatching(/"not\/legal" \(routed from "broken"\)/) },
    ]);
  });

  it('answers retryable after close(), without connecting again', async () => {
    const server = await tcpServer('drop');
    cleanup.push(server.close);
    const broker = createKafkaBroker({ ...quick, brokers: [server.address] });
    await broker.publish([outgoing('orders')], { signal: AbortSignal.timeout(5000) });
    await broker.close();
    const before = server.connections();
    expect(await broker.publish([outgoing('orders')], { signal: AbortSignal.timeout(5000) })).toEqual([
      { status: 'retryable', error: 'the Kafka broker adapter is closed' },
    ]);
    expect(server.connections()).toBe(before);
  });

  it('prints neither kafkajs’s partitioner warning nor its bounded-retries warning', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    vi.spyOn(console, 'error').mockImplementation(() => undefined);
    vi.spyOn(console, 'info').mockImplementation(() => undefined);
    const server = await tcpServer('drop');
    cleanup.push(server.close);
    const broker = createKafkaBroker({ ...quick, logLevel: 'warn', brokers: [server.address] });
    cleanup.push(() => broker.close());
    await broker.publish([outgoing('orders')], { signal: AbortSignal.timeout(5000) });
    const printed = warn.mock.calls.map((call) => call.map(String).join(' ')).join('\n');
    expect(printed).not.toMatch(/partitioner/i);
    expect(printed).not.toMatch(/Limiting retries/);
  });
});
