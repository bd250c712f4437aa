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
import type { RelayProcessConfig } from './relay-config.js';

export type BrokerName = 'rabbitmq' | 'nats';

/** A real broker as the chaos suite uses it: destinations per topic, a consumer recording every delivery, restarts. */
export interface ChaosBroker {
  /** What the relay processes are told: the broker's URL and topic → queue/subject. */
  relayConfig: RelayProcessConfig['broker'];
  /** Every delivered id, duplicates included, in arrival order. */
  receivedIds(): Promise<string[]>;
  received(): Promise<ReceivedMessage[]>;
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
  const queueOf = (destination: string | null) => `txoutbox-chaos-${run}-${destination ?? 'missing'}`;
  const queues = [...new Set(Object.values(destinations).flatMap((d) => (d === null ? [] : [queueOf(d)])))];
  await withChannel(async (channel) => {
    for (const queue of queues) await channel.assertQueue(queue, { durable: true });
  });
  const consumers = await Promise.all(queues.map((queue) => QueueConsumer.start(queue)));
  const received = async () => consumers.flatMap((consumer) => consumer.received());
  return {
    relayConfig: {
      type: 'rabbitmq',
      url: AMQP_URL,
      routes: Object.fromEntries(Object.entries(destinations).map(([topic, d]) => [topic, queueOf(d)])),
    },
    received,
    receivedIds: async () => consumers.flatMap((consumer) => consumer.deliveries.map((d) => String(d.properties.messageId))),
    restart: restartRabbitMq,
    async close() {
      await Promise.all(consumers.map((consumer) => consumer.close()));
      await withChannel(async (channel) => {
        for (const queue of queues) await channel.deleteQueue(queue);
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
  return {
    relayConfig: {
      type: 'nats',
      url: NATS_URL,
      routes: Object.fromEntries(Object.entries(destinations).map(([topic, d]) => [topic, subjectOf(d)])),
    },
    received: async () => (await reader.all()).map(fromStream),
    receivedIds: async () => (await reader.all()).map((m) => fromStream(m).id),
    async restart() {
      await stopNatsServer();
      await startNatsServer(stream);
    },
    async close() {
      await jsm.streams.delete(stream).catch(() => undefined);
      await nc.close().catch(() => undefined);
    },
  };
}
