import { randomBytes } from 'node:crypto';
import type { ReceivedMessage } from '../support/brokers/contract.js';
import {
  adminConnection,
  createStream,
  NATS_URL,
  startNatsServer,
  stopNatsServer,
  StreamReader,
  toReceived as fromStream,
} from '../support/brokers/nats-fixture.js';
import { AMQP_URL, QueueConsumer, restartRabbitMq, withChannel } from '../support/brokers/rabbitmq-fixture.js';
import type { Kysely } from 'kysely';
import { createNatsInboxConsumer } from '../../src/dedupe/consumers/nats.js';
import { DEFAULT_RETRY_DELAYS_MS } from '../../src/dedupe/consumers/core.js';
import { createRabbitMqInboxConsumer } from '../../src/dedupe/consumers/rabbitmq.js';
import type { Inbox, InboxHandler } from '../../src/index.js';
import type { RelayProcessConfig } from './relay-config.js';

export type BrokerName = 'rabbitmq' | 'nats';

/** A real broker as the chaos suite uses it: destinations per topic, a consumer recording every delivery, restarts. */
export interface ChaosBroker {
  /** What the relay processes are told: the broker's URL and topic → queue/subject. */
  relayConfig: RelayProcessConfig['broker'];
  /** Every delivered id, duplicates included, in arrival order. */
  receivedIds(): Promise<string[]>;
  received(): Promise<ReceivedMessage[]>;
  /** A count that grows with every message the broker stores or delivers: cheap enough to poll. */
  progress(): Promise<number>;
  /** Starts a consumer service of its own (beside the recording one) that applies each message through the inbox. */
  consumeThroughInbox(db: Kysely<unknown>, inbox: Inbox, handler: InboxHandler<unknown>): Promise<{ close(): Promise<void> }>;
  restart(): Promise<void>;
  close(): Promise<void>;
}

/**
 * `destinations` maps each topic to a destination name, or to null for a topic whose messages must find no
 * destination (the broker refuses them: poison).
 */
export async function chaosBroker(name: BrokerName, destinations: Record<string, string | null>): Promise<ChaosBroker> {
  const run = randomBytes(4).toString('hex');
  return name === 'rabbitmq' ? rabbitMq(run, destinations) : nats(run, destinations);
}

async function rabbitMq(run: string, destinations: Record<string, string | null>): Promise<ChaosBroker> {
  // Each destination is a fanout exchange with two queues: one a recording consumer drains, one for the inbox consumer.
  const exchangeOf = (destination: string) => `txoutbox-chaos-${run}-${destination}`;
  const named = [...new Set(Object.values(destinations).flatMap((d) => (d === null ? [] : [d])))];
  const recorded = named.map((d) => `${exchangeOf(d)}.recorded`);
  const inboxQueues = named.map((d) => `${exchangeOf(d)}.inbox`);
  await withChannel(async (channel) => {
    for (const destination of named) {
      await channel.assertExchange(exchangeOf(destination), 'fanout', { durable: true });
      for (const queue of [`${exchangeOf(destination)}.recorded`, `${exchangeOf(destination)}.inbox`]) {
        await channel.assertQueue(queue, { durable: true });
        await channel.bindQueue(queue, exchangeOf(destination), '');
      }
    }
  });
  const consumers = await Promise.all(recorded.map((queue) => QueueConsumer.start(queue)));
  const route = (destination: string | null) =>
    destination === null
      ? { exchange: '', routingKey: `txoutbox-chaos-${run}-missing` } // no such queue: returned as unroutable
      : { exchange: exchangeOf(destination), routingKey: '' };
  return {
    relayConfig: {
      type: 'rabbitmq',
      url: AMQP_URL,
      routes: Object.fromEntries(Object.entries(destinations).map(([topic, d]) => [topic, route(d)])),
    },
    received: async () => consumers.flatMap((consumer) => consumer.received()),
    receivedIds: async () => consumers.flatMap((consumer) => consumer.deliveries.map((d) => String(d.properties.messageId))),
    progress: async () => consumers.reduce((n, consumer) => n + consumer.deliveries.length, 0),
    async consumeThroughInbox(db, inbox, handler) {
      const started = await Promise.all(
        inboxQueues.map(async (queue) => {
          const consumer = createRabbitMqInboxConsumer({ url: AMQP_URL, queue, db, inbox, handler, prefetch: 100 });
          consumer.on('error', () => undefined); // Broker restarts are the point; it reconnects by itself.
          await consumer.start();
          return consumer;
        }),
      );
      return { close: async () => void (await Promise.all(started.map((consumer) => consumer.close()))) };
    },
    restart: restartRabbitMq,
    async close() {
      await Promise.all(consumers.map((consumer) => consumer.close()));
      await withChannel(async (channel) => {
        // The inbox consumer's retry queues too (its default delays), or every run leaves three behind.
        const retryQueues = inboxQueues.flatMap((queue) => DEFAULT_RETRY_DELAYS_MS.map((ms) => `${queue}.retry.${ms}ms`));
        for (const queue of [...recorded, ...inboxQueues, ...retryQueues]) await channel.deleteQueue(queue);
        for (const destination of named) await channel.deleteExchange(exchangeOf(destination));
      }).catch(() => undefined);
    },
  };
}

async function nats(run: string, destinations: Record<string, string | null>): Promise<ChaosBroker> {
  const subjectOf = (destination: string | null) =>
    destination === null ? `txoutbox-chaos-missing-${run}` : `txoutbox-chaos-${run}.${destination}`;
  const { nc, jsm } = await adminConnection();
  const stream = `TXOUTBOX_CHAOS_${run}`;
  await createStream(jsm, [`txoutbox-chaos-${run}.>`], stream);
  const reader = new StreamReader(jsm, stream);
  let counter = await adminConnection();
  return {
    relayConfig: {
      type: 'nats',
      url: NATS_URL,
      routes: Object.fromEntries(Object.entries(destinations).map(([topic, d]) => [topic, subjectOf(d)])),
    },
    received: async () => (await reader.all()).map(fromStream),
    receivedIds: async () => (await reader.all()).map((m) => fromStream(m).id),
    // The stream's own count, not the reader's (reading every message back lags behind a busy stream), asked on a
    // connection opened after the last restart: the old one may still be waiting out its reconnect delay.
    progress: async () => (await counter.jsm.streams.info(stream)).state.last_seq,
    async consumeThroughInbox(db, inbox, handler) {
      const consumer = createNatsInboxConsumer({ servers: NATS_URL, stream, durable: `chaos-inbox-${run}`, db, inbox, handler });
      consumer.on('error', () => undefined); // Server restarts are the point; it reconnects by itself.
      await consumer.start();
      return consumer;
    },
    async restart() {
      await stopNatsServer();
      await startNatsServer(stream);
      const stale = counter;
      counter = await adminConnection();
      await stale.nc.close().catch(() => undefined);
    },
    async close() {
      await counter.nc.close().catch(() => undefined);
      await jsm.streams.delete(stream).catch(() => undefined);
      await nc.close().catch(() => undefined);
    },
  };
}
