import { SetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSqsBroker, type SqsBroker, type SqsBrokerOptions } from '../../../src/brokers/sqs.js';
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

const fifoFixture: BrokerFixture = {
  name: 'Amazon SQS (FIFO queue, fauxqs)',
  dedupes: true,
  skipReason: async () => {
    await emulator.start();
    return null;
  },
  open: async () => {
    const queue = emulator.api.createQueue(`${uniqueName('contract')}.fifo`, { attributes: { FifoQueue: 'true' } });
    const missing = queue.queueUrl.replace(/[^/]+$/, 'nowhere.fifo');
    const adapter = createSqsBroker({
      clientConfig: { ...FAUXQS_CLIENT, endpoint: emulator.address },
      routes: { 'contract.orders': queue.queueUrl, 'contract.nowhere': missing },
    });
    const counted = countingFailures(adapter);
    failures = counted.failures;
    const broker = counted.broker;
    const client = emulator.sqsClient();
    const reader = new QueueReader(client, queue.queueUrl);
    return {
      broker,
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

describe('Amazon SQS adapter', () => {
  const brokers: SqsBroker[] = [];
  let client: ReturnType<Fauxqs['sqsClient']>;
  beforeAll(async () => {
    await emulator.start();
    client = emulator.sqsClient();
  });
  afterAll(async () => {
    for (const b of brokers) await b.close();
    client?.destroy();
  });
  const broker = (options: SqsBrokerOptions) => {
    const created = createSqsBroker({ clientConfig: { ...FAUXQS_CLIENT, endpoint: emulator.address }, ...options });
    brokers.push(created);
    return created;
  };

  it('carries id, key, topic, attempt, content type and headers as message attributes, FIFO group = key, dedup id = id', async () => {
    const queue = emulator.api.createQueue(`${uniqueName('attrs')}.fifo`, { attributes: { FifoQueue: 'true' } });
    const b = broker({ queueUrl: queue.queueUrl });
    const message = outgoing('orders.created', {
      key: 'customer-7',
      attempt: 3,
      headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', 'x-tenant': 'café' },
    });
    expect(await b.publish([message], { signal: never() })).toEqual([{ status: 'ok' }]);
    const reader = new QueueReader(client, queue.queueUrl);
    await reader.all();
    const [raw] = reader.raw;
    expect(raw!.Attributes).toMatchObject({ MessageGroupId: 'customer-7', MessageDeduplicationId: message.id });
    expect(Object.fromEntries(Object.entries(raw!.MessageAttributes!).map(([n, a]) => [n, a.StringValue]))).toEqual({
      traceparent: message.headers.traceparent,
      'x-tenant': 'café',
      'txoutbox-id': message.id,
      'txoutbox-key': 'customer-7',
      'txoutbox-topic': 'orders.created',
      'txoutbox-attempt': '3',
      'content-type': 'application/json',
    });
    expect(raw!.Body).toBe(message.payload.toString());
  });

  it('on a standard queue carries the id as an attribute and delivers a resend again (at least once)', async () => {
    const queue = emulator.api.createQueue(uniqueName('standard'));
    const b = broker({ queueUrl: queue.queueUrl });
    const message = outgoing('t', { key: 'k' });
    expect(await b.publish([message], { signal: never() })).toEqual([{ status: 'ok' }]);
    expect(await b.publish([{ ...message, attempt: 2 }], { signal: never() })).toEqual([{ status: 'ok' }]);
    const got = await new QueueReader(client, queue.queueUrl).all();
    expect(got.map((m) => m.id)).toEqual([message.id, message.id]);
  });

  it('refuses a header that does not fit the 10-attribute limit, naming the limit, and publishes the rest of the batch', async () => {
    const queue = emulator.api.createQueue(uniqueName('limits'));
    const b = broker({ queueUrl: queue.queueUrl });
    const five = Object.fromEntries(Array.from({ length: 5 }, (_, i) => [`h${i}`, 'v']));
    const six = { ...five, h5: 'v' };
    const outcomes = await b.publish(
      [
        outgoing('t', { key: 'a', headers: five }),
        outgoing('t', { key: 'b', headers: six }),
        outgoing('t', { headers: { 'AWS.trace': 'x' } }),
        outgoing('t', { headers: { empty: '' } }),
        outgoing('t', { payload: Buffer.alloc(0) }),
      ],
      { signal: never() },
    );
    expect(outcomes[0]).toEqual({ status: 'ok' });
    expect(outcomes[1]).toEqual({
      status: 'permanent',
      error:
        'the message needs 11 message attributes (6 headers + 5 txoutbox sets), but SQS and SNS carry at most 10: send at most 5 headers',
    });
    expect(outcomes[2]).toMatchObject({ status: 'permanent', error: expect.stringMatching(/AWS\. or Amazon\./) });
    expect(outcomes[3]).toMatchObject({ status: 'permanent', error: expect.stringMatching(/empty attribute value/) });
    expect(outcomes[4]).toMatchObject({ status: 'permanent', error: 'SQS cannot carry an empty message body' });
    const got = await new QueueReader(client, queue.queueUrl).all();
    expect(got.map((m) => m.headers)).toEqual([five]);
  });

  it('drops a resend within the deduplication window by its id, even in another batch with another attempt number', async () => {
    const queue = emulator.api.createQueue(`${uniqueName('dedup')}.fifo`, { attributes: { FifoQueue: 'true' } });
    const b = broker({ queueUrl: queue.queueUrl });
    const message = outgoing('t', { key: 'k' });
    const keyless = outgoing('t');
    expect(await b.publish([message, keyless], { signal: never() })).toEqual([{ status: 'ok' }, { status: 'ok' }]);
    expect(
      await b.publish(
        [
          { ...message, attempt: 2 },
          { ...keyless, attempt: 2 },
        ],
        { signal: never() },
      ),
    ).toEqual([{ status: 'ok' }, { status: 'ok' }]);
    const got = await new QueueReader(client, queue.queueUrl).all();
    expect(got.map((m) => m.id).sort()).toEqual([message.id, keyless.id].sort());
  });

  it('answers a batch SQS partly refuses (HTTP 200 with Failed[]) per entry, with the code, and a resend of the failed entry succeeds', async () => {
    const queue = emulator.api.createQueue(uniqueName('partial'), { attributes: { MaximumMessageSize: '1024' } });
    const b = broker({ queueUrl: queue.queueUrl });
    const good = outgoing('t', { key: 'a' });
    const big = outgoing('t', { key: 'b', payload: Buffer.alloc(2000, 'x') });
    const outcomes = await b.publish([good, big], { signal: never() });
    expect(outcomes[0]).toEqual({ status: 'ok' });
    expect(outcomes[1]).toMatchObject({
      status: 'permanent',
      error: expect.stringMatching(
        new RegExp(`^SQS refused the message on ${queue.queueUrl}: InvalidParameterValue \\(sender fault\\)`),
      ),
    });
    const reader = new QueueReader(client, queue.queueUrl);
    expect((await reader.all()).map((m) => m.id)).toEqual([good.id]);
    // The failed entry alone is resent (as the relay does after a person fixes the queue): the good one is not.
    await client.send(new SetQueueAttributesCommand({ QueueUrl: queue.queueUrl, Attributes: { MaximumMessageSize: '4096' } }));
    expect(await b.publish([{ ...big, attempt: 2 }], { signal: never() })).toEqual([{ status: 'ok' }]);
    expect((await reader.all()).map((m) => m.id)).toEqual([good.id, big.id]);
  });

  it('cuts a large publish into requests of at most 10 entries and 1 MiB, all acknowledged', async () => {
    const queue = emulator.api.createQueue(uniqueName('chunks'));
    const b = broker({ queueUrl: queue.queueUrl });
    const messages = Array.from({ length: 25 }, (_, i) => outgoing('t', { key: `k${i}`, payload: Buffer.alloc(300_000, 'a') }));
    const outcomes = await b.publish(messages, { signal: never() });
    expect(outcomes.every((o) => o.status === 'ok')).toBe(true);
    expect((await new QueueReader(client, queue.queueUrl).all()).length).toBe(25);
  });

  it('without a claim check refuses a payload past 1 MiB as permanent, naming the limit', async () => {
    const queue = emulator.api.createQueue(uniqueName('big'));
    const b = broker({ queueUrl: queue.queueUrl });
    const [outcome] = await b.publish([outgoing('t', { payload: Buffer.alloc(1_048_577, 'a') })], { signal: never() });
    expect(outcome).toMatchObject({
      status: 'permanent',
      error: expect.stringMatching(/past SQS's limit of 1048576 bytes; configure claimCheck/),
    });
  });

  it("claim-checks a 3 MiB payload to S3 in the extended clients' pointer format, and it reads back byte for byte", async () => {
    const queue = emulator.api.createQueue(uniqueName('claim'));
    const bucket = uniqueName('payloads');
    emulator.api.createBucket(bucket);
    const s3 = emulator.s3Client();
    const b = broker({ queueUrl: queue.queueUrl, claimCheck: { bucket, client: s3, keyPrefix: 'outbox/' } });
    const payload = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7919) % 251;
    const message = outgoing('t', { key: 'k', payload, contentType: 'application/octet-stream' });
    expect(await b.publish([message], { signal: never() })).toEqual([{ status: 'ok' }]);
    const reader = new QueueReader(client, queue.queueUrl, new ClaimCheck({ bucket, client: s3 }));
    const [got] = await reader.all();
    expect(JSON.parse(reader.raw[0]!.Body!)).toEqual([
      'software.amazon.payloadoffloading.PayloadS3Pointer',
      { s3BucketName: bucket, s3Key: `outbox/${message.id}` },
    ]);
    expect(reader.raw[0]!.MessageAttributes!['ExtendedPayloadSize']).toEqual({
      DataType: 'Number',
      StringValue: String(payload.length),
    });
    expect(got!.payload.equals(payload)).toBe(true);
    s3.destroy();
  });

  it("reports a claim check to a bucket that does not exist as permanent, naming S3's code", async () => {
    const queue = emulator.api.createQueue(uniqueName('nobucket'));
    const s3 = emulator.s3Client();
    const b = broker({ queueUrl: queue.queueUrl, claimCheck: { bucket: uniqueName('missing'), client: s3 } });
    const [outcome] = await b.publish([outgoing('t', { payload: Buffer.alloc(1_100_000, 'a') })], { signal: never() });
    expect(outcome).toMatchObject({ status: 'permanent', error: expect.stringMatching(/NoSuchBucket/) });
    s3.destroy();
  });

  it('routes by routes, then the route function, then queueUrl, and refuses a topic with none', async () => {
    const a = emulator.api.createQueue(uniqueName('ra'));
    const c = emulator.api.createQueue(uniqueName('rc'));
    const b = broker({ routes: { mapped: a.queueUrl }, route: (topic) => (topic === 'fn' ? c.queueUrl : undefined) });
    expect(b.route(outgoing('mapped'))).toEqual({ to: a.queueUrl });
    expect(b.route(outgoing('fn'))).toEqual({ to: c.queueUrl });
    expect(b.route(outgoing('other'))).toEqual({ refused: 'no queue URL for topic "other": add it to routes or set a default' });
    const [refused] = await b.publish([outgoing('other')], { signal: never() });
    expect(refused!.status).toBe('permanent');
  });

  it('validates its options and names the wrong one', () => {
    expect(() => createSqsBroker({ queueUrl: 'not a url' })).toThrow(/queueUrl: "not a url" is not an http\(s\) queue URL/);
    expect(() => createSqsBroker({ keylessGroupId: 'has space' })).toThrow(/keylessGroupId/);
    expect(() => createSqsBroker({ client: emulator.sqsClient(), clientConfig: {} })).toThrow(/client: cannot be given together/);
    expect(() => createSqsBroker({ queue: 'x' } as never)).toThrow(/Unrecognized key/i);
  });

  it('while the emulator is stopped reports every message as unreachable (the relay burns no attempt), and recovers', async () => {
    const queue = emulator.api.createQueue(`${uniqueName('outage')}.fifo`, { attributes: { FifoQueue: 'true' } });
    const b = broker({ queueUrl: queue.queueUrl });
    await emulator.stop();
    try {
      const outcomes = await b.publish([outgoing('t', { key: 'a' }), outgoing('t')], { signal: AbortSignal.timeout(10_000) });
      for (const outcome of outcomes) {
        expect(outcome).toMatchObject({ status: 'retryable', unreachable: true, error: expect.stringMatching(/ECONNREFUSED/) });
      }
    } finally {
      await emulator.start();
    }
    expect(await b.publish([outgoing('t', { key: 'a' })], { signal: never() })).toEqual([{ status: 'ok' }]);
  });
});
