import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSnsBroker, type SnsBroker, type SnsBrokerOptions } from '../../../src/brokers/sns.js';
import { ClaimCheck } from '../../../src/brokers/aws/claim-check.js';
import { brokerContract, outgoing, type BrokerFixture } from '../../support/brokers/contract.js';
import {
  countingFailures,
  Fauxqs,
  FAUXQS_CLIENT,
  QueueReader,
  restartAfterAFailure,
  uniqueName,
} from '../../support/brokers/fauxqs-fixture.js';

const emulator = new Fauxqs();
afterAll(() => emulator.destroy());
let failures = () => 0;

/** A topic with one SQS queue subscribed by raw delivery (attributes kept as message attributes). */
function topicWithQueue(fifo: boolean): { topicArn: string; queueUrl: string } {
  const suffix = fifo ? '.fifo' : '';
  const topic = `${uniqueName('topic')}${suffix}`;
  const queue = `${uniqueName('sub')}${suffix}`;
  const { topicArn } = emulator.api.createTopic(topic, fifo ? { attributes: { FifoTopic: 'true' } } : {});
  const { queueUrl } = emulator.api.createQueue(queue, fifo ? { attributes: { FifoQueue: 'true' } } : {});
  emulator.api.subscribe({ topic, queue, attributes: { RawMessageDelivery: 'true' } });
  return { topicArn, queueUrl };
}

const fifoFixture: BrokerFixture = {
  name: 'Amazon SNS (FIFO topic → FIFO queue, fauxqs)',
  dedupes: true,
  skipReason: async () => {
    await emulator.start();
    return null;
  },
  open: async () => {
    const { topicArn, queueUrl } = topicWithQueue(true);
    const adapter = createSnsBroker({
      clientConfig: { ...FAUXQS_CLIENT, endpoint: emulator.address },
      routes: { 'contract.orders': topicArn, 'contract.nowhere': topicArn.replace(/[^:]+$/, 'nowhere.fifo') },
    });
    const counted = countingFailures(adapter);
    failures = counted.failures;
    const client = emulator.sqsClient();
    const reader = new QueueReader(client, queueUrl);
    return {
      broker: counted.broker,
      topic: 'contract.orders',
      unroutableTopic: 'contract.nowhere',
      received: () => reader.all(),
      close: async () => {
        await adapter.close();
        client.destroy();
      },
    };
  },
  restart: () => restartAfterAFailure(emulator, failures),
};

brokerContract(fifoFixture);

const never = () => new AbortController().signal;

describe('Amazon SNS adapter', () => {
  const brokers: SnsBroker[] = [];
  let client: ReturnType<Fauxqs['sqsClient']>;
  beforeAll(async () => {
    await emulator.start();
    client = emulator.sqsClient();
  });
  afterAll(async () => {
    for (const b of brokers) await b.close();
    client?.destroy();
  });
  const broker = (options: SnsBrokerOptions) => {
    const created = createSnsBroker({ clientConfig: { ...FAUXQS_CLIENT, endpoint: emulator.address }, ...options });
    brokers.push(created);
    return created;
  };

  it('fans out to a subscribed queue with the id, key and headers (traceparent too) as message attributes', async () => {
    const { topicArn, queueUrl } = topicWithQueue(false);
    const b = broker({ topicArn });
    const message = outgoing('orders.created', {
      key: 'c-1',
      headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
    });
    expect(await b.publish([message], { signal: never() })).toEqual([{ status: 'ok' }]);
    const [got] = await new QueueReader(client, queueUrl).all();
    expect(got).toEqual({
      id: message.id,
      key: 'c-1',
      headers: message.headers,
      payload: message.payload,
      contentType: 'application/json',
    });
  });

  it('gives each entry of a partly refused PublishBatch its own outcome, with the code', async () => {
    const { topicArn, queueUrl } = topicWithQueue(false);
    const b = broker({ topicArn });
    const good = outgoing('t', { key: 'a' });
    const tooBig = outgoing('t', { key: 'b', payload: Buffer.alloc(300_000, 'a') });
    const tooMany = outgoing('t', { headers: Object.fromEntries(Array.from({ length: 7 }, (_, i) => [`h${i}`, 'v'])) });
    const outcomes = await b.publish([good, tooBig, tooMany], { signal: never() });
    expect(outcomes[0]).toEqual({ status: 'ok' });
    expect(outcomes[1]).toMatchObject({ status: 'permanent', error: expect.stringMatching(/past SNS's limit of 262144 bytes/) });
    expect(outcomes[2]).toMatchObject({ status: 'permanent', error: expect.stringMatching(/at most 10/) });
    expect((await new QueueReader(client, queueUrl).all()).map((m) => m.id)).toEqual([good.id]);
  });

  it('claim-checks a payload past 256 KiB to S3, read back through the pointer', async () => {
    const { topicArn, queueUrl } = topicWithQueue(true);
    const bucket = uniqueName('sns-payloads');
    emulator.api.createBucket(bucket);
    const s3 = emulator.s3Client();
    const b = broker({ topicArn, claimCheck: { bucket, client: s3 } });
    const message = outgoing('t', { key: 'k', payload: Buffer.alloc(600_000, 'z') });
    expect(await b.publish([message], { signal: never() })).toEqual([{ status: 'ok' }]);
    const [got] = await new QueueReader(client, queueUrl, new ClaimCheck({ bucket, client: s3 })).all();
    expect(got!.payload.equals(message.payload)).toBe(true);
    s3.destroy();
  });

  it('routes by routes, the route function, then topicArn, and validates its options', () => {
    const arn = 'arn:aws:sns:us-east-1:000000000000:orders';
    const b = broker({ routes: { a: arn }, route: (topic) => (topic === 'b' ? `${arn}-b` : undefined) });
    expect(b.route(outgoing('a'))).toEqual({ to: arn });
    expect(b.route(outgoing('b'))).toEqual({ to: `${arn}-b` });
    expect(b.route(outgoing('c'))).toMatchObject({ refused: expect.stringMatching(/no topic ARN for topic "c"/) });
    expect(() => createSnsBroker({ topicArn: 'orders' })).toThrow(/topicArn: "orders" is not an SNS topic ARN/);
  });
});
