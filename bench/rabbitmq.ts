import { randomBytes } from 'node:crypto';
import amqp from 'amqplib';
import type { Channel, ChannelModel } from 'amqplib';
import { createRabbitMqBroker } from '../src/brokers/rabbitmq.js';
import { TOPIC } from './messages.js';

/** RabbitMQ helpers for benches that publish into a queue and then check what arrived. */

export const AMQP_URL = process.env.OUTBOX_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

const noop = () => {};

/** Connects, trying again for up to `ms` while the broker refuses (another suite may be restarting it). */
async function connectWithin(ms: number): Promise<ChannelModel> {
  const deadline = performance.now() + ms;
  for (;;) {
    try {
      return await amqp.connect(AMQP_URL);
    } catch (error) {
      if (performance.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
}

/** What a queue held, read back by message id (the adapter sets `messageId` = the message's id). */
export interface Arrivals {
  received: number;
  /** Ids that arrived more than once (each repeat counted). */
  duplicates: number;
  /** Expected ids that never arrived. */
  missing: number;
  /** Ids that arrived but were not expected. */
  unexpected: number;
}

export interface QueueAdmin {
  /** "RabbitMQ 3.x" */
  version: string;
  /** Declares a fresh durable queue (named after `run`) and returns its name. */
  queue(run: string): Promise<string>;
  /** The txoutbox adapter, routing the bench topic to `queue` (one connection and confirm channel per call). */
  adapter(queue: string): ReturnType<typeof createRabbitMqBroker>;
  count(queue: string): Promise<number>;
  /** Consumes the whole queue and compares the message ids with `expected`. */
  arrivals(queue: string, expected: Iterable<string>): Promise<Arrivals>;
  remove(queue: string): Promise<void>;
  /** Deletes the queues still declared and closes the admin connection. */
  close(): Promise<void>;
}

/**
 * Other test suites on a shared machine may close every client connection (chaos tests): the admin connection is
 * reopened on demand, and an operation that meets a closed channel is tried once more on a fresh one.
 */
export async function openQueueAdmin(prefix: string): Promise<QueueAdmin> {
  let model: ChannelModel | null = null;
  let channel: Channel | null = null;
  const open = async (): Promise<{ model: ChannelModel; channel: Channel }> => {
    if (model !== null && channel !== null) return { model, channel };
    const fresh = await connectWithin(30_000);
    fresh.on('error', noop);
    fresh.on('close', () => {
      if (model === fresh) model = channel = null;
    });
    const freshChannel = await fresh.createChannel();
    freshChannel.on('error', noop);
    freshChannel.on('close', () => {
      if (channel === freshChannel) channel = null;
    });
    model = fresh;
    channel = freshChannel;
    return { model, channel };
  };
  const retrying = async <T>(work: (live: { model: ChannelModel; channel: Channel }) => Promise<T>): Promise<T> => {
    try {
      return await work(await open());
    } catch {
      model = channel = null;
      return work(await open());
    }
  };
  const first = await open();
  const version = `RabbitMQ ${String(first.model.connection.serverProperties.version ?? '?')}`;
  const suffix = randomBytes(4).toString('hex');
  const queues = new Set<string>();
  return {
    version,
    async queue(run) {
      const name = `txoutbox-bench-${prefix}-${suffix}-${run}`;
      await retrying(({ channel: c }) => c.assertQueue(name, { durable: true }));
      queues.add(name);
      return name;
    },
    adapter: (queue) => createRabbitMqBroker({ url: AMQP_URL, routes: { [TOPIC]: { exchange: '', routingKey: queue } } }),
    count: (queue) => retrying(async ({ channel: c }) => (await c.checkQueue(queue)).messageCount),
    async arrivals(queue, expected) {
      // Shared by both attempts: what the first one read (and acknowledged) is gone from the queue.
      const seen = new Map<string, number>();
      await retrying(({ model: m, channel: c }) => readQueue(m, c, queue, seen));
      return compare(seen, [...expected]);
    },
    async remove(queue) {
      await retrying(({ channel: c }) => c.deleteQueue(queue));
      queues.delete(queue);
    },
    async close() {
      for (const queue of queues) await retrying(({ channel: c }) => c.deleteQueue(queue)).catch(noop);
      await (model as ChannelModel | null)?.close().catch(noop);
    },
  };
}

/** Consumes the whole queue, counting each message id in `seen`. */
async function readQueue(model: ChannelModel, channel: Channel, queue: string, seen: Map<string, number>): Promise<void> {
  const total = (await channel.checkQueue(queue)).messageCount;
  let received = 0;
  // A channel of its own, so its prefetch and consumer do not outlive this read.
  const reader = await model.createChannel();
  reader.on('error', noop);
  try {
    await reader.prefetch(2000);
    await new Promise<void>((resolve, reject) => {
      if (total === 0) return resolve();
      reader.once('close', () => reject(new Error('the reading channel closed')));
      void reader.consume(
        queue,
        (message) => {
          if (message === null) return;
          const id = String(message.properties.messageId);
          seen.set(id, (seen.get(id) ?? 0) + 1);
          reader.ack(message);
          if (++received >= total) resolve();
        },
        { noAck: false },
      );
    });
  } finally {
    await reader.close().catch(noop);
  }
}

/** How many times each expected id was seen, as Arrivals. */
export function compare(seen: ReadonlyMap<string, number>, expected: readonly string[]): Arrivals {
  let received = 0;
  for (const times of seen.values()) received += times;
  let duplicates = 0;
  let missing = 0;
  const wanted = new Set(expected);
  for (const [id, times] of seen) if (wanted.has(id)) duplicates += times - 1;
  for (const id of wanted) if (!seen.has(id)) missing++;
  const unexpected = [...seen.keys()].filter((id) => !wanted.has(id)).length;
  return { received, duplicates, missing, unexpected };
}
