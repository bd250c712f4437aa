import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Relay } from '../../../src/index.js';
import { createSqsBroker, type SqsBroker } from '../../../src/brokers/sqs.js';
import {
  attributesOf,
  countingFailures,
  Fauxqs,
  FAUXQS_CLIENT,
  QueueReader,
  restartAfterAFailure,
  uniqueName,
} from '../../support/brokers/fauxqs-fixture.js';
import { createHarness, type Harness } from '../../support/harness.js';
import { drain, testRelay, waitFor } from '../../support/relay-helpers.js';

/** The relay on PostgreSQL publishing to a FIFO queue of a private fauxqs, read by a real SQS consumer. */
describe('relay → Amazon SQS FIFO queue (fauxqs)', () => {
  const emulator = new Fauxqs();
  let h: Harness;
  let client: ReturnType<Fauxqs['sqsClient']>;
  const brokers: SqsBroker[] = [];
  beforeAll(async () => {
    await emulator.start();
    client = emulator.sqsClient();
    h = await createHarness('postgres', 10);
  });
  afterAll(async () => {
    for (const b of brokers) await b.close();
    client?.destroy();
    await h?.destroy();
    await emulator.destroy();
  });

  const fifoQueue = () => emulator.api.createQueue(`${uniqueName('relay')}.fifo`, { attributes: { FifoQueue: 'true' } });
  const sqsBroker = (queueUrl: string) => {
    const b = createSqsBroker({ clientConfig: { ...FAUXQS_CLIENT, endpoint: emulator.address }, queueUrl });
    brokers.push(b);
    return b;
  };
  const enqueue = async (prefix: string, count: number, keys: number, from = 0) => {
    const messages = Array.from({ length: count }, (_, i) => ({
      id: `${prefix}-${from + i}`,
      topic: 'orders',
      key: `key-${(from + i) % keys}`,
      payload: { n: from + i },
    }));
    for (let start = 0; start < messages.length; start += 1000) {
      await h.db.transaction().execute((trx) => h.outbox.enqueue(trx, messages.slice(start, start + 1000)));
    }
    return messages;
  };
  const inOrderPerKey = (sent: { id: string; key: string }[], received: { id: string; key: string | null }[]) => {
    const firstSeen = (key: string) => [...new Set(received.filter((m) => m.key === key).map((m) => m.id))];
    for (const key of new Set(sent.map((m) => m.key))) {
      expect(firstSeen(key), key).toEqual(sent.filter((m) => m.key === key).map((m) => m.id));
    }
  };
  const running = async (relay: Relay, during: () => Promise<void>) => {
    relay.start();
    try {
      await during();
    } finally {
      await relay.stop();
    }
  };

  it('delivers 5,000 messages on 200 keys, every one, in per-key order (MessageGroupId = key)', async () => {
    const queue = fifoQueue();
    const sent = await enqueue(uniqueName('order'), 5000, 200);
    const reader = new QueueReader(client, queue.queueUrl);
    await running(testRelay(h, sqsBroker(queue.queueUrl), { batchSize: 200 }), () =>
      waitFor(async () => new Set((await reader.all()).map((m) => m.id)).size >= 5000, 60_000, '5,000 messages'),
    );
    const received = await reader.all();
    inOrderPerKey(sent, received);
    expect(new Set(reader.raw.map((m) => m.Attributes?.MessageGroupId)).size).toBe(200);
    expect(await h.rows()).toEqual([]);
  }, 90_000);

  it('settles a batch SQS partly refuses per entry: the refused message is dead-lettered with its code, the others are sent once', async () => {
    const queue = emulator.api.createQueue(uniqueName('partial'), { attributes: { MaximumMessageSize: '1024' } });
    const prefix = uniqueName('partial');
    const results = await h.db.transaction().execute((trx) =>
      h.outbox.enqueue(trx, [
        { id: `${prefix}-a`, topic: 'orders', key: 'a', payload: { n: 1 } },
        { id: `${prefix}-b`, topic: 'orders', key: 'b', payload: { pad: 'x'.repeat(2000) } },
        { id: `${prefix}-c`, topic: 'orders', key: 'c', payload: { n: 3 } },
      ]),
    );
    await drain(testRelay(h, sqsBroker(queue.queueUrl)));
    const rows = await h.rows();
    // The dead row would stay for the next test: gone before anything is asserted.
    await h.db.deleteFrom(`${h.schema}.txoutbox` as never).execute();
    expect(rows.map((r) => [r.id, r.state])).toEqual([[results[1]!.id, 'dead']]);
    expect(rows[0]!.lastError).toMatch(/^sqs: SQS refused the message on .*: InvalidParameterValue \(sender fault\)/);
    const received = await new QueueReader(client, queue.queueUrl).all();
    expect(received.map((m) => m.id).sort()).toEqual([results[0]!.id, results[2]!.id].sort());
  });

  it('through an SQS outage (the emulator stopped and started) loses nothing, keeps per-key order and burns no attempt', async () => {
    const queue = fifoQueue();
    const prefix = uniqueName('outage');
    const before = await enqueue(prefix, 300, 30);
    const counted = countingFailures(sqsBroker(queue.queueUrl));
    let acked = 0;
    const observed = {
      ...counted.broker,
      publish: async (...args: Parameters<typeof counted.broker.publish>) => {
        const outcomes = await counted.broker.publish(...args);
        acked += outcomes.filter((o) => o.status === 'ok').length;
        return outcomes;
      },
    };
    const reader = new QueueReader(client, queue.queueUrl);
    let during: typeof before = [];
    await running(testRelay(h, observed, { batchSize: 20 }), async () => {
      await waitFor(() => acked >= 40, 30_000, 'some messages acknowledged before the outage');
      const outage = restartAfterAFailure(emulator, counted.failures);
      during = await enqueue(prefix, 300, 30, 300);
      await outage;
      await waitFor(async () => new Set((await reader.all()).map((m) => m.id)).size >= 600, 60_000, 'all 600 messages');
    });
    expect(counted.failures()).toBeGreaterThan(0);
    const received = await reader.all();
    inOrderPerKey([...before, ...during], received);
    // The outage was the broker's state, not the messages': no attempt was counted for it.
    expect(new Set(reader.raw.map((m) => attributesOf(m)['txoutbox-attempt']))).toEqual(new Set(['1']));
    expect(await h.rows()).toEqual([]);
  }, 120_000);
});
