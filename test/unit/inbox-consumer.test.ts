import { Kysely, PostgresAdapter, DummyDriver, PostgresIntrospector, PostgresQueryCompiler } from 'kysely';
import { describe, expect, it } from 'vitest';
import { describeError, idProblem, retryDelay } from '../../src/dedupe/consumers/core.js';
import { createNatsInboxConsumer } from '../../src/dedupe/consumers/nats.js';
import { createRabbitMqInboxConsumer } from '../../src/dedupe/consumers/rabbitmq.js';
import { ConfigError, createInbox } from '../../src/index.js';

const db = new Kysely<unknown>({
  dialect: {
    createAdapter: () => new PostgresAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (k) => new PostgresIntrospector(k),
    createQueryCompiler: () => new PostgresQueryCompiler(),
  },
});
const inbox = createInbox({ dialect: 'postgres' });
const handler = () => undefined;

describe('inbox consumer helpers', () => {
  it('wait the configured delay after each failed attempt, repeating the last one', () => {
    expect([1, 2, 3, 4, 9].map((attempt) => retryDelay([100, 500, 2000], attempt))).toEqual([100, 500, 2000, 2000, 2000]);
    expect(retryDelay([0], 7)).toBe(0);
  });

  it('say why a message cannot go through the inbox', () => {
    expect(idProblem('billing', 'm-1')).toBeNull();
    expect(idProblem('billing', null)).toMatch(/carries no id/);
    expect(idProblem('billing', '')).toMatch(/messageId must not be empty/);
    expect(idProblem('billing', 'x'.repeat(256))).toMatch(/over the 255 limit/);
  });

  it('keep an error with its stack, bounded', () => {
    expect(describeError(new Error('boom'))).toMatch(/^Error: boom\n\s+at /);
    expect(describeError('plain')).toBe('plain');
    expect(describeError(new Error('x'.repeat(10_000))).length).toBeLessThanOrEqual(4001);
  });

  it('refuse bad options with a ConfigError naming the option', () => {
    const rabbit = { url: 'amqp://127.0.0.1', queue: 'q', db, inbox, handler };
    expect(() => createRabbitMqInboxConsumer(rabbit)).not.toThrow();
    expect(() => createRabbitMqInboxConsumer({ ...rabbit, maxAttempts: 0 })).toThrow(/maxAttempts/);
    expect(() => createRabbitMqInboxConsumer({ ...rabbit, prefetch: 0 })).toThrow(/prefetch/);
    expect(() => createRabbitMqInboxConsumer({ ...rabbit, inbox: {} as never })).toThrow(/inbox must come from createInbox/);
    expect(() => createRabbitMqInboxConsumer({ ...rabbit, socketOptions: { recovery: {} } as never })).toThrow(
      /reconnects by itself/,
    );
    expect(() => createRabbitMqInboxConsumer({ ...rabbit, queue: '' })).toThrow(ConfigError);
    const nats = { stream: 'ORDERS', durable: 'billing', db, inbox, handler };
    expect(() => createNatsInboxConsumer(nats)).not.toThrow();
    expect(() => createNatsInboxConsumer({ ...nats, durable: 'a.b' })).toThrow(/durable/);
    expect(() => createNatsInboxConsumer({ ...nats, retryDelaysMs: [-1] })).toThrow(/retryDelaysMs/);
    expect(() => createNatsInboxConsumer({ ...nats, handler: 'x' as never })).toThrow(/handler must be a function/);
  });

  it('name the consumer after the queue or the durable consumer unless told', () => {
    expect(createRabbitMqInboxConsumer({ url: 'amqp://h', queue: 'orders', db, inbox, handler }).consumer).toBe('orders');
    expect(createNatsInboxConsumer({ stream: 'S', durable: 'billing', db, inbox, handler }).consumer).toBe('billing');
    expect(createNatsInboxConsumer({ stream: 'S', durable: 'd', consumer: 'svc', db, inbox, handler }).consumer).toBe('svc');
  });
});
