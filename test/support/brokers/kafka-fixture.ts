import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import kafkajs from 'kafkajs';
import type { IHeaders, KafkaMessage } from 'kafkajs';
import { createKafkaBroker } from '../../../src/brokers/kafka.js';
import { KAFKA_OWN_HEADERS } from '../../../src/brokers/kafka/records.js';
import type { BrokerFixture, BrokerUnderTest, ReceivedMessage } from './contract.js';

const { Kafka, logLevel } = kafkajs;

/**
 * The Kafka the contract runs against: KAFKA_BROKERS, a comma-separated host:port list. Nothing is started here
 * (there is no Kafka on this machine and no Docker to start one); without the variable the suite is skipped.
 * KAFKA_RESTART_COMMAND, run with `sh -c`, stops and starts that Kafka for the restart test (e.g.
 * `docker restart kafka`, `systemctl restart kafka`); KAFKA_REPLICATION_FACTOR sets the test topic's
 * replication factor (default: the broker's default).
 */
function kafkaBrokers(): string[] | null {
  const raw = process.env.KAFKA_BROKERS?.trim();
  if (raw === undefined || raw === '') return null;
  const brokers = raw
    .split(',')
    .map((broker) => broker.trim())
    .filter((broker) => broker !== '');
  return brokers.length === 0 ? null : brokers;
}

function requireBrokers(): string[] {
  const brokers = kafkaBrokers();
  if (brokers === null) throw new Error('KAFKA_BROKERS is not set');
  return brokers;
}

/** Header values as a consumer reads them (Buffers), back to strings; the last one wins when a name repeats. */
function headersOf(headers: IHeaders | undefined): Record<string, string> {
  const result: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    const last = Array.isArray(value) ? value[value.length - 1] : value;
    if (last !== undefined) result[name] = Buffer.isBuffer(last) ? last.toString('utf8') : last;
  }
  return result;
}

function received(message: KafkaMessage): ReceivedMessage {
  const headers = headersOf(message.headers);
  return {
    id: headers['txoutbox-id'] ?? '',
    key: message.key === null ? null : message.key.toString('utf8'),
    headers,
    payload: message.value ?? Buffer.alloc(0),
    contentType: headers['content-type'] ?? null,
  };
}

/** Runs a shell command, failing with its output when it exits non-zero or outlives `timeoutMs`. */
function runShell(command: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', command], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const collect = (chunk: Buffer) => (output = (output + chunk.toString('utf8')).slice(-4000));
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`KAFKA_RESTART_COMMAND could not be run: ${error.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`KAFKA_RESTART_COMMAND (${command}) ended with ${signal ?? `exit code ${code}`}:\n${output}`));
    });
  });
}

/** Waits until Kafka answers metadata again, with leaders for `topic` when given. */
async function waitUntilKafkaAnswers(brokers: string[], topic: string | null, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = null;
  while (Date.now() < deadline) {
    const admin = new Kafka({
      brokers,
      clientId: 'txoutbox-contract-probe',
      logLevel: logLevel.NOTHING,
      retry: { retries: 0 },
    }).admin();
    try {
      await admin.connect();
      await admin.describeCluster();
      if (topic !== null) {
        const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
        const partitions = topics.find((t) => t.name === topic)?.partitions ?? [];
        if (partitions.length === 0 || partitions.some((p) => p.leader < 0)) throw new Error(`no leaders yet for ${topic}`);
      }
      return;
    } catch (error) {
      lastError = error;
      await new Promise((resolve) => setTimeout(resolve, 500));
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  }
  throw new Error(`Kafka did not answer within ${timeoutMs} ms after the restart: ${String(lastError)}`);
}

let openedTopic: string | null = null;

export const kafkaFixture: BrokerFixture = {
  name: 'Kafka',
  // The idempotent producer drops only its own internal retries; a resend by the relay is a new record.
  dedupes: false,
  ownHeaders: [...KAFKA_OWN_HEADERS],

  async skipReason() {
    return kafkaBrokers() === null
      ? 'KAFKA_BROKERS is not set: no Kafka server to test against (set it to a comma-separated host:port list)'
      : null;
  },

  async open(): Promise<BrokerUnderTest> {
    const brokers = requireBrokers();
    const run = `${Date.now()}-${randomBytes(3).toString('hex')}`;
    const kafkaTopic = `txoutbox-contract-${run}`;
    const topic = `contract.kafka.${run}`;
    const unroutableTopic = `contract.kafka.nowhere.${run}`;
    const missingKafkaTopic = `txoutbox-contract-missing-${run}`;

    const kafka = new Kafka({ brokers, clientId: 'txoutbox-contract', logLevel: logLevel.ERROR });
    const admin = kafka.admin();
    await admin.connect().catch((error: unknown) => {
      throw new Error(`KAFKA_BROKERS is set, but Kafka does not answer at ${brokers.join(',')}: ${String(error)}`, {
        cause: error,
      });
    });
    const replicationFactor = Number(process.env.KAFKA_REPLICATION_FACTOR ?? -1);
    const messages: ReceivedMessage[] = [];
    const consumer = kafka.consumer({ groupId: `txoutbox-contract-${run}`, allowAutoTopicCreation: false });
    let timer: NodeJS.Timeout | undefined;
    try {
      await admin.createTopics({ topics: [{ topic: kafkaTopic, numPartitions: 3, replicationFactor }], waitForLeaders: true });
      openedTopic = kafkaTopic;
      const joined = new Promise<void>((resolve, reject) => {
        consumer.on(consumer.events.GROUP_JOIN, () => resolve());
        timer = setTimeout(() => reject(new Error('the contract consumer did not join its group within 30 s')), 30_000);
      });
      joined.catch(() => undefined); // awaited below; this only keeps an early failure from looking unhandled
      await consumer.connect();
      await consumer.subscribe({ topics: [kafkaTopic], fromBeginning: true });
      await consumer.run({
        eachMessage: async ({ message }) => {
          messages.push(received(message));
        },
      });
      await joined;
    } catch (error) {
      clearTimeout(timer);
      await consumer.disconnect().catch(() => undefined);
      await admin.deleteTopics({ topics: [kafkaTopic] }).catch(() => undefined);
      await admin.disconnect().catch(() => undefined);
      throw error;
    }
    clearTimeout(timer);

    const broker = createKafkaBroker({
      brokers,
      clientId: 'txoutbox-contract-relay',
      // Both routing mechanisms: the map sends the test topic to the created Kafka topic, the function sends the
      // unroutable one to a Kafka topic that does not exist.
      routes: { [topic]: kafkaTopic },
      route: (name) => (name === unroutableTopic ? missingKafkaTopic : undefined),
      logLevel: 'error',
    });

    return {
      broker,
      topic,
      unroutableTopic,
      received: async () => [...messages],
      close: async () => {
        await consumer.disconnect().catch(() => undefined);
        await broker.close();
        await admin.deleteTopics({ topics: [kafkaTopic] }).catch(() => undefined);
        await admin.disconnect();
        openedTopic = null;
      },
    };
  },

  async restartSkipReason() {
    const command = process.env.KAFKA_RESTART_COMMAND?.trim();
    return command === undefined || command === ''
      ? 'KAFKA_RESTART_COMMAND is not set: nothing here can stop and start the Kafka at KAFKA_BROKERS ' +
          '(set it to a shell command that does, e.g. "docker restart kafka")'
      : null;
  },

  /**
   * Kafka cannot be restarted from here: this runs KAFKA_RESTART_COMMAND, then waits until Kafka answers. Without
   * the command it throws at once, so the restart test fails with this message rather than passing falsely.
   */
  restart(): Promise<void> {
    const command = process.env.KAFKA_RESTART_COMMAND?.trim();
    if (command === undefined || command === '') {
      throw new Error(
        'KAFKA_RESTART_COMMAND is not set: the Kafka fixture cannot restart the server at KAFKA_BROKERS. ' +
          'Set it to a shell command that stops and starts that Kafka (e.g. "docker restart kafka").',
      );
    }
    const brokers = requireBrokers();
    return runShell(command, 180_000).then(() => waitUntilKafkaAnswers(brokers, openedTopic, 120_000));
  },
};
