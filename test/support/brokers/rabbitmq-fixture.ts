import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import amqp from 'amqplib';
import type { ChannelModel, ConsumeMessage } from 'amqplib';
import { createRabbitMqBroker, type RabbitMqBroker, type RabbitMqBrokerOptions } from '../../../src/brokers/rabbitmq.js';
import type { BrokerFixture, BrokerUnderTest, ReceivedMessage } from './contract.js';

export const AMQP_URL = process.env.OUTBOX_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

const run = promisify(execFile);
const noop = () => {};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export const randomName = (prefix: string) => `${prefix}-${Date.now()}-${randomBytes(4).toString('hex')}`;

/** Maps a delivery back to txoutbox's fields, as a consumer of the adapter's messages would. */
export function toReceived(message: ConsumeMessage): ReceivedMessage {
  const raw = message.properties.headers ?? {};
  const headers = Object.fromEntries(
    Object.entries(raw).map(([name, value]) => [name, Buffer.isBuffer(value) ? value.toString('utf8') : String(value)]),
  );
  const id: unknown = message.properties.messageId ?? headers['txoutbox-id'];
  const contentType: unknown = message.properties.contentType;
  return {
    id: String(id),
    key: headers['txoutbox-key'] ?? null,
    headers,
    payload: message.content,
    contentType: typeof contentType === 'string' ? contentType : null,
  };
}

/** Runs one statement on a throwaway connection (declare, delete, inspect a queue). */
export async function withChannel<T>(work: (channel: amqp.Channel) => Promise<T>): Promise<T> {
  const model = await amqp.connect(AMQP_URL);
  model.on('error', noop);
  try {
    const channel = await model.createChannel();
    channel.on('error', noop);
    return await work(channel);
  } finally {
    await model.close().catch(noop);
  }
}

/**
 * A real consumer of one durable queue (basic.consume with manual acks) on its own connection. When the broker
 * restarts it reconnects and consumes again; the queue is durable, so what was not acked waits for it (and a
 * delivery whose ack was lost in the restart comes again: duplicates are recorded, as the contract expects).
 */
export class QueueConsumer {
  readonly deliveries: ConsumeMessage[] = [];
  private model: ChannelModel | null = null;
  private closed = false;
  private reconnecting = false;

  private constructor(readonly queue: string) {}

  static async start(queue: string): Promise<QueueConsumer> {
    const consumer = new QueueConsumer(queue);
    await consumer.attach();
    return consumer;
  }

  received(): ReceivedMessage[] {
    return this.deliveries.map(toReceived);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.model?.close().catch(noop);
  }

  private async attach(): Promise<void> {
    const model = await amqp.connect(AMQP_URL);
    model.on('error', noop);
    model.on('close', () => void this.reconnect());
    this.model = model;
    const channel = await model.createChannel();
    channel.on('error', noop);
    await channel.prefetch(1000);
    await channel.checkQueue(this.queue);
    await channel.consume(
      this.queue,
      (message) => {
        if (message === null) return; // cancelled by the server (queue deleted): nothing more will come
        this.deliveries.push(message);
        try {
          channel.ack(message);
        } catch {
          // The channel died before the ack went out; the broker redelivers, which the contract allows.
        }
      },
      { noAck: false },
    );
  }

  private async reconnect(): Promise<void> {
    if (this.closed || this.reconnecting) return;
    this.reconnecting = true;
    try {
      while (!this.closed) {
        try {
          await this.attach();
          return;
        } catch {
          await this.model?.close().catch(noop);
          await sleep(250);
        }
      }
    } finally {
      this.reconnecting = false;
    }
  }
}

/** Stops and starts the RabbitMQ application (durable queues and persistent messages survive), then waits for AMQP. */
export async function restartRabbitMq(): Promise<void> {
  await run('rabbitmqctl', ['stop_app']);
  await run('rabbitmqctl', ['start_app']);
  await run('rabbitmqctl', ['await_startup']);
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const model = await amqp.connect(AMQP_URL, { timeout: 2000 });
      model.on('error', noop);
      await model.close();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`RabbitMQ did not answer at ${AMQP_URL} after the restart`, { cause: error });
      await sleep(250);
    }
  }
}

/** A fresh durable queue with a consumer on it, deleted again by close(). */
export async function consumedQueue(
  prefix = 'txoutbox-test',
): Promise<{ queue: string; consumer: QueueConsumer; close(): Promise<void> }> {
  const queue = randomName(prefix);
  await withChannel((channel) => channel.assertQueue(queue, { durable: true }));
  const consumer = await QueueConsumer.start(queue);
  return {
    queue,
    consumer,
    async close() {
      await consumer.close();
      await withChannel((channel) => channel.deleteQueue(queue)).catch(noop);
    },
  };
}

export interface RabbitMqUnderTest extends BrokerUnderTest {
  broker: RabbitMqBroker;
  queue: string;
  /** The raw deliveries, to check native AMQP properties. */
  deliveries(): ConsumeMessage[];
}

export const rabbitmqFixture = {
  name: 'rabbitmq',
  dedupes: false,
  ownHeaders: ['txoutbox-id', 'txoutbox-key', 'txoutbox-topic', 'txoutbox-attempt'],

  async skipReason(): Promise<string | null> {
    try {
      const model = await amqp.connect(AMQP_URL, { timeout: 3000 });
      model.on('error', noop);
      await model.close();
      return null;
    } catch (error) {
      return `RabbitMQ does not answer at ${AMQP_URL} (${String(error)}): start it or set OUTBOX_AMQP_URL`;
    }
  },

  async open(options: Partial<RabbitMqBrokerOptions> = {}): Promise<RabbitMqUnderTest> {
    const queue = randomName('txoutbox-contract');
    const topic = `contract.${queue}`;
    const broker = createRabbitMqBroker({
      url: AMQP_URL,
      // The contract topic goes to the fresh queue through the default exchange; the adapter declares the queue.
      routes: { [topic]: { exchange: '', routingKey: queue } },
      topology: { queues: [{ name: queue, durable: true }] },
      ...options,
    });
    await broker.connect();
    const consumer = await QueueConsumer.start(queue);
    return {
      broker,
      queue,
      topic,
      // The default exchange with a routing key no queue has: mandatory makes RabbitMQ return it.
      unroutableTopic: randomName('txoutbox-nowhere'),
      received: async () => consumer.received(),
      deliveries: () => [...consumer.deliveries],
      async close() {
        await broker.close();
        await consumer.close();
        await withChannel((channel) => channel.deleteQueue(queue)).catch(noop);
      },
    };
  },

  restart: restartRabbitMq,
} satisfies BrokerFixture;
