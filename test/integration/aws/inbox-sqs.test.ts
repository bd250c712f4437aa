import { ChangeMessageVisibilityCommand, ReceiveMessageCommand, SendMessageCommand } from '@aws-sdk/client-sqs';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createSnsBroker } from '../../../src/brokers/sns.js';
import { createSqsBroker } from '../../../src/brokers/sqs.js';
import {
  createSqsInboxConsumer,
  type SqsInboxConsumer,
  type SqsInboxConsumerOptions,
} from '../../../src/dedupe/consumers/sqs.js';
import type { Inbox } from '../../../src/index.js';
import { outgoing } from '../../support/brokers/contract.js';
import { Fauxqs, FAUXQS_CLIENT, uniqueName } from '../../support/brokers/fauxqs-fixture.js';
import { createHarness, DIALECTS, type Harness } from '../../support/harness.js';
import { applyEffect, clearInbox, effects, observe, setUpInbox } from '../../support/inbox-helpers.js';
import { waitFor } from '../../support/relay-helpers.js';

const emulator = new Fauxqs({ persistent: false });
beforeAll(() => emulator.start());
afterAll(() => emulator.destroy());

describe.each(DIALECTS)('SQS inbox consumer on %s (fauxqs)', (dialect) => {
  let h: Harness;
  let inbox: Inbox;
  let client: ReturnType<Fauxqs['sqsClient']>;
  const consumers: SqsInboxConsumer<any>[] = [];

  beforeAll(async () => {
    h = await createHarness(dialect, 20);
    inbox = await setUpInbox(h);
    client = emulator.sqsClient();
  });
  afterAll(async () => {
    client?.destroy();
    await h?.destroy();
  });
  beforeEach(() => clearInbox(h));
  afterEach(async () => {
    await Promise.all(consumers.splice(0).map((c) => c.close()));
  });

  const queue = (fifo = false) =>
    fifo
      ? emulator.api.createQueue(`${uniqueName('inbox')}.fifo`, { attributes: { FifoQueue: 'true' } })
      : emulator.api.createQueue(uniqueName('inbox'));
  const left = (name: string) => {
    const { messages } = emulator.api.inspectQueue(name)!;
    return messages.ready.length + messages.delayed.length + messages.inflight.length;
  };
  const start = async (queueUrl: string, options: Partial<SqsInboxConsumerOptions<any>> = {}) => {
    const consumer = createSqsInboxConsumer<any>({
      queueUrl,
      clientConfig: { ...FAUXQS_CLIENT, endpoint: emulator.address },
      waitTimeSeconds: 1,
      db: h.db,
      inbox,
      handler: async (message, trx) => applyEffect(h, trx, message.id),
      retryDelaysMs: [0],
      ...options,
    });
    const seen = observe(consumer);
    await consumer.start();
    consumers.push(consumer);
    return { consumer, seen };
  };
  const send = (queueUrl: string, id: string | null, body = '{}') =>
    client.send(
      new SendMessageCommand({
        QueueUrl: queueUrl,
        MessageBody: body,
        MessageAttributes: {
          'txoutbox-topic': { DataType: 'String', StringValue: 'orders.created' },
          ...(id === null ? {} : { 'txoutbox-id': { DataType: 'String', StringValue: id } }),
        },
      }),
    );

  it('applies the effect of an id delivered 5 times once, and deletes every copy', async () => {
    const q = queue();
    for (let i = 0; i < 5; i++) await send(q.queueUrl, 'five-times');
    const { seen } = await start(q.queueUrl);
    await waitFor(() => seen.processed.length + seen.duplicate.length === 5, 20_000, '5 deliveries');
    expect(seen.processed.map((m) => [m.id, m.topic, m.attempt])).toEqual([['five-times', 'orders.created', 1]]);
    expect(seen.duplicate).toHaveLength(4);
    expect(await effects(h)).toEqual(new Map([['five-times', 1]]));
    await waitFor(() => left(q.queueName) === 0, 10_000, 'every copy deleted');
  });

  it('deletes a message only after its effect committed', async () => {
    const q = queue();
    await send(q.queueUrl, 'commit-first');
    const inQueueAtCommit: number[] = [];
    const { seen } = await start(q.queueUrl, { onCommitted: () => void inQueueAtCommit.push(left(q.queueName)) });
    await waitFor(() => seen.processed.length === 1, 20_000, 'the message processed');
    expect(inQueueAtCommit).toEqual([1]);
    await waitFor(() => left(q.queueName) === 0, 10_000, 'the message deleted');
  });

  it('reads what the SQS adapter published, a claim-checked payload through S3 included', async () => {
    const q = queue();
    const bucket = uniqueName('inbox-payloads');
    emulator.api.createBucket(bucket);
    const s3 = emulator.s3Client();
    const broker = createSqsBroker({
      clientConfig: { ...FAUXQS_CLIENT, endpoint: emulator.address },
      queueUrl: q.queueUrl,
      claimCheck: { bucket, client: s3 },
    });
    const small = outgoing('orders.created', { key: 'k', headers: { 'x-tenant': 'acme' } });
    const large = outgoing('orders.created', { payload: Buffer.alloc(1_200_000, 'q'), contentType: 'text/plain' });
    expect(await broker.publish([small, large], { signal: new AbortController().signal })).toEqual([
      { status: 'ok' },
      { status: 'ok' },
    ]);
    const { seen } = await start(q.queueUrl, { claimCheck: { client: s3 } });
    await waitFor(() => seen.processed.length === 2, 20_000, 'both processed');
    const got = new Map(seen.processed.map((m) => [m.id, m]));
    expect(got.get(small.id)).toMatchObject({
      key: 'k',
      topic: 'orders.created',
      contentType: 'application/json',
      payload: small.payload,
    });
    expect(got.get(small.id)!.headers['x-tenant']).toBe('acme');
    expect(got.get(large.id)!.payload.equals(large.payload)).toBe(true);
    await broker.close();
    s3.destroy();
  });

  it('reads what the SNS adapter published to a topic the queue subscribes to by raw delivery', async () => {
    const topic = uniqueName('inbox-topic');
    const q = queue();
    const { topicArn } = emulator.api.createTopic(topic);
    emulator.api.subscribe({ topic, queue: q.queueName, attributes: { RawMessageDelivery: 'true' } });
    const broker = createSnsBroker({ clientConfig: { ...FAUXQS_CLIENT, endpoint: emulator.address }, topicArn });
    const message = outgoing('customers.created', {
      key: 'c-9',
      payload: Buffer.from([0, 159, 255]),
      contentType: 'application/octet-stream',
    });
    expect(await broker.publish([message], { signal: new AbortController().signal })).toEqual([{ status: 'ok' }]);
    await broker.close();
    const { seen } = await start(q.queueUrl);
    await waitFor(() => seen.processed.length === 1, 20_000, 'the message processed');
    expect(seen.processed[0]).toMatchObject({ id: message.id, topic: 'customers.created', key: 'c-9', payload: message.payload });
    expect(await effects(h)).toEqual(new Map([[message.id, 1]]));
  });

  it('on a FIFO queue handles each group in order, a failure holding the rest of its group back', async () => {
    const q = queue(true);
    const broker = createSqsBroker({ clientConfig: { ...FAUXQS_CLIENT, endpoint: emulator.address }, queueUrl: q.queueUrl });
    const keys = Array.from({ length: 10 }, (_, i) => `group-${i}`);
    const sent = new Map(keys.map((k) => [k, [] as string[]]));
    for (let round = 0; round < 10; round++) {
      const batch = keys.map((key) => outgoing('orders', { key }));
      await broker.publish(batch, { signal: new AbortController().signal });
      for (const m of batch) sent.get(m.key!)!.push(m.id);
    }
    await broker.close();
    const handled = new Map(keys.map((k) => [k, [] as string[]]));
    let n = 0;
    const { seen } = await start(q.queueUrl, {
      maxMessages: 20,
      handler: async (message, trx) => {
        // Every fifth message fails on its first attempt: the rest of its group must wait for it.
        if (++n % 5 === 0 && message.attempt === 1) throw new Error('not yet');
        await applyEffect(h, trx, message.id);
        handled.get(message.key!)!.push(message.id);
      },
    });
    await waitFor(() => seen.processed.length === 100, 30_000, '100 messages processed');
    expect(seen.retrying.length).toBeGreaterThan(0);
    for (const key of keys) expect(handled.get(key), key).toEqual(sent.get(key));
    expect(seen.processed.every((m) => m.attempt <= 2)).toBe(true);
    expect(seen.dead).toEqual([]);
  });

  it('dead-letters a handler that always throws after maxAttempts receives while the other messages flow', async () => {
    const q = queue();
    const attempts: number[] = [];
    const { seen } = await start(q.queueUrl, {
      maxAttempts: 3,
      handler: async (message, trx) => {
        if (message.id === 'poison') {
          attempts.push(message.attempt);
          throw new Error(`cannot bill order (attempt ${message.attempt})`);
        }
        await applyEffect(h, trx, message.id);
      },
    });
    await send(q.queueUrl, 'poison');
    for (let i = 0; i < 10; i++) await send(q.queueUrl, `good-${i}`);
    await waitFor(() => seen.dead.length === 1 && seen.processed.length === 10, 30_000, 'the poison dead and the rest processed');
    expect(attempts).toEqual([1, 2, 3]);
    expect(seen.retrying).toEqual(['poison', 'poison']);
    const [dead] = await inbox.deadLetters(h.db);
    expect(dead).toMatchObject({
      messageId: 'poison',
      source: 'sqs',
      destination: q.queueUrl,
      attempts: 3,
      topic: 'orders.created',
    });
    expect(dead!.error).toContain('cannot bill order (attempt 3)');
    await waitFor(() => left(q.queueName) === 0, 10_000, 'the poison deleted');
  });

  it('dead-letters a message received more than maxAttempts times without being settled, without running the handler', async () => {
    const q = queue();
    await send(q.queueUrl, 'never-settled');
    // Two consumers that died mid-handler: received, never deleted, back in the queue.
    for (let i = 0; i < 2; i++) {
      const { Messages } = await client.send(new ReceiveMessageCommand({ QueueUrl: q.queueUrl, WaitTimeSeconds: 1 }));
      const receipt = Messages![0]!.ReceiptHandle!;
      await client.send(
        new ChangeMessageVisibilityCommand({ QueueUrl: q.queueUrl, ReceiptHandle: receipt, VisibilityTimeout: 0 }),
      );
    }
    let ran = 0;
    const { seen } = await start(q.queueUrl, { maxAttempts: 2, handler: () => void ran++ });
    await waitFor(() => seen.dead.length === 1, 20_000, 'the dead letter');
    expect(ran).toBe(0);
    expect(seen.dead[0]).toMatchObject({ messageId: 'never-settled', attempts: 2 });
    expect(seen.dead[0]!.error).toMatch(
      /delivered 3 times without being settled \(the consumer crashed or its visibility timeout passed each time\)/,
    );
    await waitFor(() => left(q.queueName) === 0, 10_000, 'the message deleted');
  });

  it('dead-letters a message without an id at once, without running the handler', async () => {
    const q = queue();
    let ran = 0;
    const { seen } = await start(q.queueUrl, { handler: () => void ran++ });
    await send(q.queueUrl, null, '{"no":"id"}');
    await waitFor(() => seen.dead.length === 1, 20_000, 'the dead letter');
    expect(ran).toBe(0);
    expect((await inbox.deadLetters(h.db))[0]).toMatchObject({ messageId: null, attempts: 0, topic: 'orders.created' });
    await waitFor(() => left(q.queueName) === 0, 10_000, 'the message deleted');
  });

  it('keeps a message invisible while a handler slower than the visibility timeout works: processed once, no redelivery', async () => {
    const q = queue();
    let runs = 0;
    const { seen } = await start(q.queueUrl, {
      // 2 s, extended every 667 ms: over a second of slack for a loaded machine's stalls.
      visibilityTimeoutSeconds: 2,
      handler: async (message, trx) => {
        runs++;
        // Two and a half visibility timeouts: SQS would hand an unextended message out again after each one.
        await new Promise((resolve) => setTimeout(resolve, 5000));
        await applyEffect(h, trx, message.id);
      },
    });
    await send(q.queueUrl, 'slow-1');
    await waitFor(() => seen.processed.length === 1, 20_000, 'the slow message processed');
    await waitFor(() => left(q.queueName) === 0, 10_000, 'the message deleted');
    expect(seen.processed.map((m) => [m.id, m.attempt])).toEqual([['slow-1', 1]]);
    expect(seen.duplicate).toEqual([]);
    expect(runs).toBe(1);
  }, 30_000);
});
