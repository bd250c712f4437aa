import kafkajs from 'kafkajs';
import type { Admin, Message, Producer, RecordMetadata, TopicMessages } from 'kafkajs';
import { ABORTED, unlessAborted } from './abort.js';
import type { Broker, OutgoingMessage, PublishContext, PublishOutcome } from './broker.js';
import { OK, permanent, retryable, unreachable, type Failure } from './outcomes.js';
import type { MessageRouter, Route } from './route.js';
import { classifyKafkaError, describeKafkaError, kafkaErrorType } from './kafka/errors.js';
import { consoleLog, LOG_LEVELS } from './kafka/log.js';
import { resolveKafkaOptions, type KafkaBrokerOptions, type ResolvedKafkaOptions } from './kafka/options.js';
import { toKafkaMessage } from './kafka/records.js';
import { kafkaTopicFor } from './kafka/topics.js';

export type { KafkaBrokerOptions, KafkaLogLevel } from './kafka/options.js';

const { Kafka, Partitioners } = kafkajs;

/** A Broker that publishes to Apache Kafka through an idempotent kafkajs producer with acks=-1. */
export interface KafkaBroker extends Broker, MessageRouter<string> {
  /** Disconnects the producer and the metadata client. */
  close(): Promise<void>;
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

function settle<T>(run: () => Promise<T>): Promise<Settled<T>> {
  let promise: Promise<T>;
  try {
    promise = run();
  } catch (error) {
    promise = Promise.reject(error);
  }
  return promise.then(
    (value) => ({ ok: true, value }),
    (error: unknown) => ({ ok: false, error }),
  );
}

/** One Kafka client: a producer and an admin (for topic metadata). Never used again once something failed. */
interface Session {
  producer: Producer;
  admin: Admin;
  ready: Promise<Settled<void>>;
  inFlight: number;
  retired: boolean;
}

/** A message on its way: where it came from in the batch, where it goes, and its Kafka record. */
interface Routed {
  index: number;
  topic: string;
  record: Message;
  bytes: number;
}

const NOT_SENT_ABORTED = retryable('aborted before it was sent to Kafka');
const UNKNOWN_ABORTED = retryable('aborted before Kafka acknowledged it (outcome unknown; resent with the same id)');

/** Estimated bytes a record adds to a produce request besides its key, value and headers. */
const RECORD_OVERHEAD_BYTES = 70;

class KafkaJsBroker implements KafkaBroker {
  readonly name = 'kafka';
  private readonly options: ResolvedKafkaOptions;
  private current: Session | null = null;
  private readonly sessions = new Set<Session>();
  /** Kafka topics a metadata request has shown to exist; cleared when a send says otherwise. */
  private readonly knownTopics = new Set<string>();
  private closed = false;

  constructor(options: KafkaBrokerOptions) {
    this.options = resolveKafkaOptions(options);
  }

  async publish(messages: readonly OutgoingMessage[], { signal }: PublishContext): Promise<PublishOutcome[]> {
    const outcomes: (PublishOutcome | undefined)[] = messages.map(() => undefined);
    try {
      if (this.closed) return messages.map(() => retryable('the Kafka broker adapter is closed'));
      const routed: Routed[] = [];
      messages.forEach((message, index) => {
        const target = this.route(message);
        if ('refused' in target) {
          outcomes[index] = permanent(target.refused);
          return;
        }
        const record = toKafkaMessage(message);
        let bytes = message.payload.length + RECORD_OVERHEAD_BYTES + Buffer.byteLength(message.key ?? '');
        for (const [name, value] of Object.entries(record.headers)) bytes += Buffer.byteLength(name) + Buffer.byteLength(value);
        routed.push({ index, topic: target.to, record, bytes });
      });
      await this.deliver(routed, signal, outcomes);
    } catch (error) {
      // Not expected: deliver() settles everything itself. Whatever has no outcome yet is unknown.
      const failure: Failure = retryable(`outcome unknown: ${describeKafkaError(error)}`);
      return outcomes.map((outcome) => outcome ?? failure);
    }
    return outcomes.map((outcome) => outcome ?? retryable('outcome unknown'));
  }

  /** The Kafka topic a message goes to: `routes[topic]`, else the `route` option's answer, else the topic itself. */
  route(message: OutgoingMessage): Route<string> {
    return kafkaTopicFor(message.topic, this.options.routes, this.options.route);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.current = null;
    const sessions = [...this.sessions];
    for (const session of sessions) session.retired = true;
    await Promise.all(sessions.map((session) => this.disconnect(session)));
  }

  /**
   * Sends `items` and records an outcome for each. Returns the failure that stopped it early (the broker is
   * unreachable, or the signal was aborted): what was not tried then shares that failure.
   */
  private async deliver(items: Routed[], signal: AbortSignal, outcomes: (PublishOutcome | undefined)[]): Promise<Failure | null> {
    const settleAll = (list: Routed[], outcome: PublishOutcome) => list.forEach((item) => (outcomes[item.index] = outcome));
    if (items.length === 0) return null;
    if (signal.aborted) return (settleAll(items, NOT_SENT_ABORTED), NOT_SENT_ABORTED);

    let session = await this.acquire(signal);
    if ('status' in session) return (settleAll(items, session), session);

    const checked = await this.checkTopics(session, items, signal, outcomes);
    if ('status' in checked) return checked;

    const chunks = chunkByBytes(checked, this.options.maxBatchBytes);
    const notSent = (failure: Failure): Failure => (signal.aborted ? NOT_SENT_ABORTED : retryable(`not sent: ${failure.error}`));
    for (const [position, chunk] of chunks.entries()) {
      if (signal.aborted) return (settleAll(chunks.slice(position).flat(), NOT_SENT_ABORTED), NOT_SENT_ABORTED);
      if (session.retired) {
        // A concurrent publish saw this producer fail: go on with a new one.
        session = await this.acquire(signal);
        if ('status' in session) return (settleAll(chunks.slice(position).flat(), session), session);
      }
      const outcome = await this.send(session, chunk, signal);
      if (outcome.status === 'ok') settleAll(chunk, OK);
      else if (outcome.status === 'retryable') {
        settleAll(chunk, outcome);
        settleAll(chunks.slice(position + 1).flat(), notSent(outcome));
        return outcome;
      } else if (chunk.length === 1) settleAll(chunk, outcome);
      else {
        // Kafka refuses a whole produce request for one bad record (or for the batch's total size) without saying
        // which: send them one by one on a new producer, so only the culprit is dead-lettered.
        for (const [offset, item] of chunk.entries()) {
          const stopped = await this.deliver([item], signal, outcomes);
          if (stopped !== null) {
            const rest = [...chunk.slice(offset + 1), ...chunks.slice(position + 1).flat()];
            settleAll(rest, notSent(stopped));
            return stopped;
          }
        }
        return null;
      }
    }
    return null;
  }

  /** The connected session, connecting it first if needed; a retryable failure when that does not work. */
  private async acquire(signal: AbortSignal): Promise<Session | Failure> {
    if (this.closed) return retryable('the Kafka broker adapter is closed');
    let session = this.current;
    if (session === null || session.retired) {
      session = this.open();
      this.current = session;
    }
    const ready = await unlessAborted(session.ready, signal);
    if (ready === ABORTED) return retryable('aborted while connecting to Kafka (nothing was sent)');
    if (!ready.ok) {
      this.retire(session);
      // Nothing was sent, and no message is why: the relay pauses and probes instead of counting the attempt.
      return unreachable(`could not connect to Kafka: ${describeKafkaError(ready.error)}`);
    }
    return session;
  }

  private open(): Session {
    const { brokers, clientId, ssl, sasl, connectionTimeoutMs, requestTimeoutMs, retries, logLevel } = this.options;
    const kafka = new Kafka({
      brokers,
      clientId,
      ...(ssl === undefined ? {} : { ssl }),
      ...(sasl === undefined ? {} : { sasl }),
      connectionTimeout: connectionTimeoutMs,
      requestTimeout: requestTimeoutMs,
      retry: { retries },
      logLevel: LOG_LEVELS[logLevel],
      logCreator: consoleLog,
    });
    const producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      createPartitioner: Partitioners.DefaultPartitioner,
      retry: { retries },
    });
    const admin = kafka.admin({ retry: { retries } });
    // Settles only once both connects have (a connect that outlives a disconnect reconnects, so retiring a session
    // disconnects again when this settles; it must not settle while one of them is still trying).
    const ready = settle(async () => {
      const [producerConnect, adminConnect] = await Promise.allSettled([producer.connect(), admin.connect()]);
      if (producerConnect.status === 'rejected') throw producerConnect.reason;
      if (adminConnect.status === 'rejected') throw adminConnect.reason;
    });
    const session: Session = { producer, admin, ready, inFlight: 0, retired: false };
    this.sessions.add(session);
    return session;
  }

  /** Runs a kafkajs call on a session, counting it in flight so a retired session closes only once it is idle. */
  private run<T>(session: Session, call: () => Promise<T>): Promise<Settled<T>> {
    session.inFlight++;
    return settle(call).then((result) => {
      session.inFlight--;
      if (session.retired && session.inFlight === 0) void this.disconnect(session);
      return result;
    });
  }

  /** Never use this session again; disconnect it once nothing runs on it. */
  private retire(session: Session): void {
    if (session.retired) return;
    session.retired = true;
    if (this.current === session) this.current = null;
    if (session.inFlight === 0) void this.disconnect(session);
  }

  private async disconnect(session: Session): Promise<void> {
    const both = () => Promise.allSettled([session.producer.disconnect(), session.admin.disconnect()]);
    await both();
    // A connect still in progress may finish after that disconnect: close what it opened, in the background.
    void session.ready.then(async () => {
      await both();
      if (session.inFlight === 0) this.sessions.delete(session);
    });
  }

  /**
   * Asks Kafka about topics not yet known to exist, so that a missing topic is a permanent failure at once
   * (kafkajs would otherwise retry a send to it until the deadline). Returns the items whose topic exists.
   */
  private async checkTopics(
    session: Session,
    items: Routed[],
    signal: AbortSignal,
    outcomes: (PublishOutcome | undefined)[],
  ): Promise<Routed[] | Failure> {
    const unknown = [...new Set(items.map((item) => item.topic))].filter((topic) => !this.knownTopics.has(topic));
    if (unknown.length === 0) return items;
    const checks = unknown.map((topic) =>
      this.run(session, () => session.admin.fetchTopicMetadata({ topics: [topic] })).then((result) => ({ topic, result })),
    );
    const answers = await unlessAborted(Promise.all(checks), signal);
    if (answers === ABORTED) {
      for (const item of items) outcomes[item.index] = NOT_SENT_ABORTED;
      return NOT_SENT_ABORTED;
    }
    const missing = new Map<string, Failure>();
    let broken: Failure | null = null;
    for (const { topic, result } of answers) {
      if (result.ok) {
        if (result.value.topics.some((found) => found.name === topic && found.partitions.length > 0)) this.knownTopics.add(topic);
        else missing.set(topic, retryable(`Kafka returned no partitions for topic "${topic}"`));
        continue;
      }
      const outcome = classifyKafkaError(result.error);
      if (outcome.status === 'permanent') {
        const type = kafkaErrorType(result.error);
        missing.set(
          topic,
          permanent(
            type === 'UNKNOWN_TOPIC_OR_PARTITION'
              ? `Kafka topic "${topic}" does not exist (the adapter does not create topics): create it or fix the route`
              : `Kafka topic "${topic}": ${outcome.error}`,
          ),
        );
      } else {
        broken = retryable(`could not read metadata of Kafka topic "${topic}": ${outcome.error}`);
      }
    }
    if (broken !== null) {
      this.retire(session);
      for (const item of items) outcomes[item.index] = missing.get(item.topic) ?? broken;
      return broken;
    }
    const present: Routed[] = [];
    for (const item of items) {
      const problem = missing.get(item.topic);
      if (problem === undefined) present.push(item);
      else outcomes[item.index] = problem;
    }
    return present;
  }

  /** One produce request (kafkajs sendBatch) for a chunk, grouped by Kafka topic; ok only on the ISR's ack. */
  private async send(session: Session, chunk: Routed[], signal: AbortSignal): Promise<PublishOutcome> {
    const byTopic = new Map<string, Message[]>();
    for (const item of chunk) {
      const records = byTopic.get(item.topic);
      if (records === undefined) byTopic.set(item.topic, [item.record]);
      else records.push(item.record);
    }
    const topicMessages: TopicMessages[] = [...byTopic].map(([topic, messages]) => ({ topic, messages }));
    const sent = this.run(session, () =>
      session.producer.sendBatch({ acks: -1, timeout: this.options.ackTimeoutMs, topicMessages }),
    );
    const result = await unlessAborted(sent, signal);
    // Unless it worked, look the topics up again next time: one may have been deleted.
    if (result === ABORTED || !result.ok) for (const topic of byTopic.keys()) this.knownTopics.delete(topic);
    if (result === ABORTED) {
      // The request may still be written, and this producer's sequence numbers are in doubt: use a new one.
      this.retire(session);
      return UNKNOWN_ABORTED;
    }
    if (!result.ok) {
      this.retire(session);
      return classifyKafkaError(result.error);
    }
    return checkAcknowledged(result.value, [...byTopic.keys()]);
  }
}

/** sendBatch resolves only when every partition answered without error; this checks it did, per topic. */
function checkAcknowledged(metadata: RecordMetadata[], topics: string[]): PublishOutcome {
  if (!Array.isArray(metadata)) return retryable('Kafka returned no produce response (outcome unknown)');
  const failed = metadata.find((entry) => entry.errorCode !== 0);
  if (failed !== undefined) {
    return retryable(
      `Kafka answered error code ${failed.errorCode} for ${failed.topicName}[${failed.partition}] (outcome unknown)`,
    );
  }
  const unanswered = topics.filter((topic) => !metadata.some((entry) => entry.topicName === topic));
  if (unanswered.length > 0) {
    return retryable(`Kafka did not acknowledge topic ${unanswered.join(', ')} (outcome unknown)`);
  }
  return OK;
}

/** Splits items into produce requests of at most `maxBytes` (estimated); a single larger record goes alone. */
function chunkByBytes(items: Routed[], maxBytes: number): Routed[][] {
  const chunks: Routed[][] = [];
  let chunk: Routed[] = [];
  let size = 0;
  for (const item of items) {
    if (chunk.length > 0 && size + item.bytes > maxBytes) {
      chunks.push(chunk);
      chunk = [];
      size = 0;
    }
    chunk.push(item);
    size += item.bytes;
  }
  if (chunk.length > 0) chunks.push(chunk);
  return chunks;
}

/**
 * A broker adapter for Apache Kafka (kafkajs). `ok` means the partition leader answered a produce with acks=-1:
 * every in-sync replica has the record. The producer is idempotent with one request in flight per broker, keys
 * are Kafka keys (so a key stays on one partition, in order), and txoutbox's fields travel as headers.
 * Nothing connects until the first publish.
 *
 * @example
 * ```ts
 * import { createRelay } from 'txoutbox';
 * import { createKafkaBroker } from 'txoutbox/kafka';
 *
 * const broker = createKafkaBroker({ brokers: ['127.0.0.1:9092'], routes: { 'orders/created': 'orders.created' } });
 * const relay = createRelay({ db, dialect: 'postgres', broker });
 * ```
 */
export function createKafkaBroker(options: KafkaBrokerOptions): KafkaBroker {
  return new KafkaJsBroker(options);
}
