import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { sql, type Kysely, type LogEvent } from 'kysely';
import amqp from 'amqplib';
import type { ChannelModel, ConfirmChannel, Options as AmqpOptions } from 'amqplib';
import { connect as natsConnect, headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, StorageType, type JetStreamManager } from '@nats-io/jetstream';
import { createRelay, MemoryBroker, type Broker, type PublishOutcome } from '../src/index.js';
import { createRabbitMqBroker } from '../src/brokers/rabbitmq.js';
import { createNatsBroker } from '../src/brokers/nats.js';
import { createSqsBroker } from '../src/brokers/sqs.js';
import { startSqsEmulator, sqsBenchClient, type SqsEmulator } from './sqs-emulator.js';
import {
  CreateQueueCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
} from '@aws-sdk/client-sqs';
import {
  BROKER_PIDS,
  CPU_GROUPS,
  cpuBetween,
  cpuSnapshot,
  ownDatabasePids,
  relayUrl,
  type CpuSnapshot,
  type CpuSpan,
  type CpuTimes,
} from './cpu.js';
import {
  ENQUEUE_BATCH,
  KEYS,
  PAYLOAD_BYTES,
  TOPIC,
  fillTable,
  outgoing,
  roundMessages,
  rowsIn,
  type BenchMessage,
} from './messages.js';
import {
  analyze,
  connect,
  count,
  loadavg,
  machineFacts,
  median,
  ms,
  progressFor,
  ratio,
  redact,
  serverFacts,
  settle,
  targets,
  withScratchSchema,
  type Target,
} from './support.js';

/**
 * Broker benchmark: how close the relay gets to the broker's own confirmed publish rate.
 *
 * For PostgreSQL → RabbitMQ, → NATS JetStream and → Amazon SQS (bench `brokers`; the SQS emulator fauxqs unless
 * OUTBOX_SQS_ENDPOINT names one), and MariaDB/MySQL → RabbitMQ (bench
 * `brokers-mysql`: the same machinery on a MySQL outbox, with the raw baseline measured again), in rounds that
 * alternate the order:
 *  - raw: the broker's own client publishes the round's messages (same payloads, headers and ids as the adapter
 *    sends) in windows of 100 awaited confirms, two windows at a time (the relay's batchSize 100 × concurrency 2);
 *  - adapter: the txoutbox adapter's publish() alone, same windows, no database (to tell adapter cost from relay cost);
 *  - relay: the same messages enqueued into a fresh outbox table (not timed), then one relay with the real adapter
 *    timed from start() until its 'published' events have counted every message;
 *  - memory: the same relay with the in-memory broker (the database-bound ceiling, measured in the same run).
 * Every run gets a fresh queue/stream/table; the medians of the rounds are reported.
 */

const AMQP_URL = process.env.OUTBOX_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const NATS_URL = process.env.OUTBOX_NATS_URL ?? 'nats://127.0.0.1:4222';

/**
 * Messages per run: a warm-up raw run of CALIBRATION_MESSAGES (not counted) measures the broker, and N is sized so a
 * raw run takes about TARGET_RAW_SECONDS (the relay runs, slower, take longer), rounded up to STEP, within [MIN, MAX].
 */
const CALIBRATION_MESSAGES = 10_000;
/** Above 5 s: the warm-up runs colder (slower) than the rounds do. */
const TARGET_RAW_SECONDS = 6.5;
const MESSAGES_STEP = 5_000;
const MIN_MESSAGES = 20_000;
/** Keeps the whole bench under ~5 minutes however fast the broker is. */
const MAX_MESSAGES = 120_000;
const ROUNDS = 3;
const WINDOW = 100;
const WINDOWS_IN_FLIGHT = 2;
const RELAY_POOL_SIZE = 10;
/** Give up on a run after this long and report what it did so far. */
const RUN_TIMEOUT_MS = 120_000;
const NATS_ACK_TIMEOUT_MS = 5000;
const GOALS = { rabbitmq: 0.8, nats: 0.75, sqs: 0.75 } as const;
/** The logical relay's goals (#13): its own, higher for RabbitMQ. */
const LOGICAL_GOALS: Record<keyof typeof GOALS, number> = { rabbitmq: 0.85, nats: 0.75, sqs: 0.75 };

type BrokerName = keyof typeof GOALS;
type Kind = 'raw' | 'adapter' | 'relay' | 'logical' | 'memory';

const progress = progressFor('brokers');

// ---------------------------------------------------------------------------------------------------------------
// Windows: what the raw client and the bare adapter do, shaped like the relay's batches.

/**
 * Sends `items` in windows of WINDOW, each awaited in full before its worker takes the next, with
 * WINDOWS_IN_FLIGHT workers; returns the elapsed time and every window's duration.
 */
async function inWindows<T>(
  items: readonly T[],
  send: (window: readonly T[]) => Promise<void>,
): Promise<{ ms: number; windows: number[]; cpu: CpuSpan }> {
  const windows: number[] = [];
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const window = items.slice(next, next + WINDOW);
      next += window.length;
      const began = performance.now();
      await send(window);
      windows.push(performance.now() - began);
    }
  };
  const cpuBefore = cpuSnapshot();
  const began = performance.now();
  await Promise.all(Array.from({ length: WINDOWS_IN_FLIGHT }, worker));
  const ms = performance.now() - began;
  return { ms, windows, cpu: { before: cpuBefore, after: cpuSnapshot() } };
}

// ---------------------------------------------------------------------------------------------------------------
// Brokers: one fresh destination (queue or stream) per run.

/** A message as stored by the broker, reduced to what must match between the raw client and the adapter. */
interface Sample {
  headers: Record<string, string>;
  /** Native properties (RabbitMQ: message id, content type, delivery mode). */
  properties: Record<string, string>;
  bytes: number;
  /** The key the payload was made for (its `customer`), to recognise the key header's value. */
  key: string;
}

/** The payload's `customer` field: each message's key. */
function keyOf(payload: Uint8Array): string {
  return String((JSON.parse(Buffer.from(payload).toString('utf8')) as { customer?: unknown }).customer);
}

interface Destination {
  /** The raw client's confirmed publish of `messages`, in windows; a failed confirm throws. */
  raw(messages: readonly BenchMessage[]): Promise<{ ms: number; windows: number[]; cpu: CpuSpan }>;
  /** The txoutbox adapter, routing TOPIC to this destination. */
  adapter(): Broker & { close(): Promise<void> };
  /** Messages the broker holds for this destination. */
  stored(): Promise<number>;
  /** The first stored message, to check that raw and adapter messages look alike. */
  sample(): Promise<Sample | null>;
  remove(): Promise<void>;
}

interface BrokerBench {
  name: BrokerName;
  label: string;
  version: string;
  setup: string;
  destination(run: string): Promise<Destination>;
  /** Removes whatever destinations are left and closes the admin connection. */
  close(): Promise<void>;
}

const noop = () => {};
const suffix = randomBytes(4).toString('hex');

async function rabbitMqBench(): Promise<BrokerBench> {
  const admin = await amqp.connect(AMQP_URL);
  admin.on('error', noop);
  const channel = await admin.createChannel();
  channel.on('error', noop);
  const version = String(admin.connection.serverProperties.version ?? '?');
  const queues = new Set<string>();

  async function destination(run: string): Promise<Destination> {
    const queue = `txoutbox-bench-${suffix}-${run}`;
    await channel.assertQueue(queue, { durable: true });
    queues.add(queue);
    return {
      async raw(messages) {
        const model: ChannelModel = await amqp.connect(AMQP_URL);
        model.on('error', noop);
        try {
          const confirm: ConfirmChannel = await model.createConfirmChannel();
          confirm.on('error', noop);
          let returned = 0;
          confirm.on('return', () => void returned++);
          let drained: Promise<void> | null = null;
          confirm.on('drain', noop);
          const result = await inWindows(messages, async (window) => {
            const confirms: Promise<void>[] = [];
            for (const message of window) {
              if (drained !== null) await drained;
              // The same properties and headers as the adapter's publishOptions() for a first attempt.
              const options: AmqpOptions.Publish = {
                persistent: true,
                mandatory: true,
                messageId: message.id,
                contentType: 'application/json',
                timestamp: Math.floor(message.createdAt.getTime() / 1000),
                headers: {
                  'txoutbox-id': message.id,
                  'txoutbox-topic': TOPIC,
                  'txoutbox-attempt': '1',
                  'txoutbox-key': message.key,
                },
              };
              confirms.push(
                new Promise<void>((resolve, reject) => {
                  const writable = confirm.publish('', queue, message.payload, options, (error: unknown) =>
                    error === null || error === undefined ? resolve() : reject(new Error(`RabbitMQ nacked ${message.id}`)),
                  );
                  if (!writable && drained === null) {
                    drained = new Promise<void>((done) => confirm.once('drain', () => ((drained = null), done())));
                  }
                }),
              );
            }
            await Promise.all(confirms);
          });
          if (returned > 0) throw new Error(`RabbitMQ returned ${returned} raw messages as unroutable`);
          return result;
        } finally {
          await model.close().catch(noop);
        }
      },
      adapter: () => createRabbitMqBroker({ url: AMQP_URL, routes: { [TOPIC]: { exchange: '', routingKey: queue } } }),
      stored: async () => (await channel.checkQueue(queue)).messageCount,
      async sample() {
        const message = await channel.get(queue, { noAck: true });
        if (message === false) return null;
        const raw = message.properties.headers ?? {};
        const headers = Object.fromEntries(
          Object.entries(raw).map(([name, value]) => [name, Buffer.isBuffer(value) ? value.toString('utf8') : String(value)]),
        );
        const { messageId, contentType, deliveryMode } = message.properties as {
          messageId?: unknown;
          contentType?: unknown;
          deliveryMode?: unknown;
        };
        return {
          headers,
          properties: { messageId: String(messageId), contentType: String(contentType), deliveryMode: String(deliveryMode) },
          bytes: message.content.length,
          key: keyOf(message.content),
        };
      },
      async remove() {
        await channel.deleteQueue(queue);
        queues.delete(queue);
      },
    };
  }

  return {
    name: 'rabbitmq',
    label: 'RabbitMQ',
    version: `RabbitMQ ${version}`,
    setup:
      'a durable classic queue per run on the default exchange; messages persistent + mandatory, ' +
      'on one connection and one confirm channel (as the adapter uses for one exchange), per-message confirm callbacks',
    destination,
    async close() {
      for (const queue of queues) await channel.deleteQueue(queue).catch(noop);
      await admin.close().catch(noop);
    },
  };
}

async function natsBench(): Promise<BrokerBench> {
  const admin: NatsConnection = await natsConnect({ servers: NATS_URL, name: 'txoutbox-bench-admin' });
  const jsm: JetStreamManager = await jetstreamManager(admin);
  const version = admin.info?.version ?? '?';
  const streams = new Set<string>();

  async function destination(run: string): Promise<Destination> {
    const stream = `TXOUTBOX_BENCH_${suffix}_${run}`;
    const subject = `txoutbox-bench-${suffix}.${run}`;
    await jsm.streams.add({ name: stream, subjects: [subject], storage: StorageType.File, duplicate_window: 120_000_000_000 });
    streams.add(stream);
    return {
      async raw(messages) {
        const nc = await natsConnect({ servers: NATS_URL, name: 'txoutbox-bench-raw' });
        try {
          const js = jetstream(nc, { timeout: NATS_ACK_TIMEOUT_MS });
          return await inWindows(messages, async (window) => {
            await Promise.all(
              window.map((message) => {
                // The same headers as the adapter's buildHeaders() for a first attempt; msgID sets Nats-Msg-Id.
                const headers = natsHeaders();
                headers.set('txoutbox-id', message.id);
                headers.set('txoutbox-topic', TOPIC);
                headers.set('txoutbox-key', message.key);
                headers.set('Content-Type', 'application/json');
                headers.set('txoutbox-attempt', '1');
                return js.publish(subject, message.payload, { msgID: message.id, headers, timeout: NATS_ACK_TIMEOUT_MS });
              }),
            );
          });
        } finally {
          await nc.close().catch(noop);
        }
      },
      adapter: () => createNatsBroker({ servers: NATS_URL, routes: { [TOPIC]: subject }, ackTimeoutMs: NATS_ACK_TIMEOUT_MS }),
      stored: async () => (await jsm.streams.info(stream)).state.messages,
      async sample() {
        const message = await jsm.streams.getMessage(stream, { seq: 1 });
        if (message === null) return null;
        const headers: Record<string, string> = {};
        for (const name of message.header.keys()) headers[name] = message.header.values(name).join(',');
        return { headers, properties: {}, bytes: message.data.length, key: keyOf(message.data) };
      },
      async remove() {
        await jsm.streams.delete(stream);
        streams.delete(stream);
      },
    };
  }

  return {
    name: 'nats',
    label: 'NATS JetStream',
    version: `nats-server ${version}`,
    setup:
      'a file-storage stream per run (1 replica, 2-minute duplicate window, one subject); `js.publish` with msgID on one ' +
      'connection, each awaiting its PubAck',
    destination,
    async close() {
      for (const stream of streams) await jsm.streams.delete(stream).catch(noop);
      await admin.close().catch(noop);
    },
  };
}

/**
 * Amazon SQS: a FIFO queue per run on the fauxqs emulator (a child process of its own, so its CPU is the broker's),
 * or on OUTBOX_SQS_ENDPOINT when set. The raw client sends SendMessageBatch requests of 10 with the attributes,
 * MessageGroupId and MessageDeduplicationId the adapter sets for a first attempt.
 */
async function sqsBench(): Promise<BrokerBench> {
  const emulator: SqsEmulator = await startSqsEmulator();
  if (emulator.pid !== null) BROKER_PIDS.add(emulator.pid);
  const admin = sqsBenchClient(emulator.endpoint);
  const queues = new Set<string>();

  async function destination(run: string): Promise<Destination> {
    const name = `txoutbox-bench-${suffix}-${run}.fifo`;
    const { QueueUrl } = await admin.send(new CreateQueueCommand({ QueueName: name, Attributes: { FifoQueue: 'true' } }));
    const url = QueueUrl!;
    queues.add(url);
    return {
      async raw(messages) {
        const client = sqsBenchClient(emulator.endpoint);
        try {
          return await inWindows(messages, async (window) => {
            const requests: Promise<void>[] = [];
            for (let start = 0; start < window.length; start += 10) {
              const Entries = window.slice(start, start + 10).map((message, i) => ({
                Id: `m${i}`,
                MessageBody: message.payload.toString('utf8'),
                MessageGroupId: message.key,
                MessageDeduplicationId: message.id,
                // The same attributes as the adapter's buildAttributes() for a first attempt.
                MessageAttributes: Object.fromEntries(
                  Object.entries({
                    'txoutbox-id': message.id,
                    'txoutbox-key': message.key,
                    'txoutbox-topic': TOPIC,
                    'txoutbox-attempt': '1',
                    'content-type': 'application/json',
                  }).map(([n, v]) => [n, { DataType: 'String', StringValue: v }]),
                ),
              }));
              requests.push(
                client.send(new SendMessageBatchCommand({ QueueUrl: url, Entries })).then((answer) => {
                  if ((answer.Failed ?? []).length > 0)
                    throw new Error(`SQS refused raw entries: ${JSON.stringify(answer.Failed)}`);
                }),
              );
            }
            await Promise.all(requests);
          });
        } finally {
          client.destroy();
        }
      },
      adapter: () => createSqsBroker({ clientConfig: sqsBenchClient.config(emulator.endpoint), routes: { [TOPIC]: url } }),
      async stored() {
        const { Attributes } = await admin.send(
          new GetQueueAttributesCommand({
            QueueUrl: url,
            AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
          }),
        );
        return (
          Number(Attributes?.ApproximateNumberOfMessages ?? 0) + Number(Attributes?.ApproximateNumberOfMessagesNotVisible ?? 0)
        );
      },
      async sample() {
        const { Messages } = await admin.send(
          new ReceiveMessageCommand({
            QueueUrl: url,
            MaxNumberOfMessages: 1,
            MessageAttributeNames: ['All'],
            MessageSystemAttributeNames: ['MessageGroupId', 'MessageDeduplicationId'],
            VisibilityTimeout: 600,
          }),
        );
        const message = Messages?.[0];
        if (message === undefined) return null;
        const headers = Object.fromEntries(
          Object.entries(message.MessageAttributes ?? {}).map(([n, a]) => [n, a.StringValue ?? '']),
        );
        const { MessageGroupId = '', MessageDeduplicationId = '' } = message.Attributes ?? {};
        const body = Buffer.from(message.Body ?? '', 'utf8');
        return { headers, properties: { MessageGroupId, MessageDeduplicationId }, bytes: body.length, key: keyOf(body) };
      },
      async remove() {
        await admin.send(new DeleteQueueCommand({ QueueUrl: url }));
        queues.delete(url);
      },
    };
  }

  return {
    name: 'sqs',
    label: 'Amazon SQS',
    version: emulator.version,
    setup:
      'a FIFO queue per run (MessageGroupId = key, MessageDeduplicationId = id); the raw client sends SendMessageBatch ' +
      'requests of 10 entries, the 10 of a window in parallel, on one SQSClient',
    destination,
    async close() {
      for (const url of queues) await admin.send(new DeleteQueueCommand({ QueueUrl: url })).catch(noop);
      admin.destroy();
      await emulator.stop();
      if (emulator.pid !== null) BROKER_PIDS.delete(emulator.pid);
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Runs.

/** Where one relay run's time went: per-kind statement time (Kysely's log) and the broker's publish() calls. */
interface RelayStats {
  claimMs: number;
  claims: number;
  completeMs: number;
  /** Statements of the complete transactions (BEGIN, lock keys, DELETE, count down keys, COMMIT). */
  completeStatements: number;
  otherMs: number;
  /** BEGIN / START TRANSACTION / SET TRANSACTION / COMMIT, shared out between claim and complete after the run. */
  controlMs: number;
  controlStatements: number;
  /** MySQL claims that opened a transaction (PostgreSQL claims are one autocommit statement). */
  claimTransactions: number;
  publishMs: number;
  publishes: number;
}

interface Run {
  kind: Kind;
  wanted: number;
  acked: number;
  ms: number;
  timedOut: boolean;
  /** Raw and adapter runs: each window's duration. */
  windows: number[];
  /** Relay runs only. */
  stats: RelayStats | null;
  errors: number;
  retried: number;
  dead: number;
  /** CPU ms per process group while the clock ran; null without /proc. */
  cpu: CpuTimes | null;
  stored: number | null;
  rowsLeft: number | null;
  sample: Sample | null;
}

const rate = (run: Run): number => Math.min(run.acked, run.wanted) / (run.ms / 1000);

/**
 * What a relay statement is part of. PostgreSQL claims with one UPDATE … RETURNING (SKIP LOCKED inside); MySQL with a
 * cheap probe (`SELECT seq … LIMIT 1`), then a transaction of SELECT … FOR UPDATE SKIP LOCKED and the lease UPDATE.
 * Transaction control cannot be told apart by its text, so it is 'control', shared out after the run.
 */
function classify(text: string): 'claim' | 'claim-transaction' | 'complete' | 'control' | 'other' {
  const s = text.replace(/\s+/g, ' ').trim().toLowerCase();
  if (/^(begin|start transaction|set transaction|commit|rollback)/.test(s)) return 'control';
  if (s.includes("state = 'sent'") || s.includes('where pending = 0')) return 'other'; // cleanup
  if (s.includes('skip locked')) return s.includes('set lease_owner') ? 'claim' : 'claim-transaction';
  if (s.includes('set lease_owner')) return 'claim';
  if (s.startsWith('select seq from') && s.endsWith('limit 1') && !s.includes('lease_owner')) return 'claim';
  return 'complete';
}

/**
 * Gives the claims their transactions' BEGIN/COMMIT (MySQL: SET TRANSACTION, BEGIN, COMMIT per claim) at the mean
 * control statement's duration, and the complete transactions the rest.
 */
function shareOutControl(stats: RelayStats, dialect: Target['dialect']): void {
  const perTransaction = dialect === 'postgres' ? 2 : 3;
  const mean = stats.controlMs / Math.max(1, stats.controlStatements);
  const claims = Math.min(stats.controlStatements, stats.claimTransactions * perTransaction);
  stats.claimMs += claims * mean;
  stats.completeMs += (stats.controlStatements - claims) * mean;
  stats.completeStatements += stats.controlStatements - claims;
}

/** A broker that times its inner adapter's publish() calls (one performance.now() pair per batch). */
function timed(inner: Broker, stats: RelayStats, active: () => boolean): Broker {
  return {
    name: inner.name,
    async publish(messages, context): Promise<PublishOutcome[]> {
      const began = performance.now();
      try {
        return await inner.publish(messages, context);
      } finally {
        if (active()) {
          stats.publishMs += performance.now() - began;
          stats.publishes++;
        }
      }
    },
  };
}

/** Time out a wait: resolves false after `ms`, with the timer cleared when `done` settles first. */
/** A logical relay's slot and publication. */
interface LogicalSlot {
  slot: string;
  publication: string;
}

/** Slots outlive the run (and would keep WAL for ever): drop it, and its publication. */
async function dropLogical(db: Kysely<any>, logical: LogicalSlot): Promise<void> {
  await sql`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = ${logical.slot}`.execute(db);
  await sql`DROP PUBLICATION IF EXISTS ${sql.id(logical.publication)}`.execute(db);
}

function within(done: Promise<void>, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    done.then(() => true),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
  ]).finally(() => clearTimeout(timer));
}

async function rawRun(
  target: Target,
  db: Kysely<any>,
  destination: Destination,
  messages: readonly BenchMessage[],
): Promise<Run> {
  const { ms: elapsed, windows, cpu } = await destination.raw(messages);
  return finishRun(destination, {
    kind: 'raw',
    wanted: messages.length,
    acked: messages.length,
    ms: elapsed,
    windows,
    cpu: cpuBetween(cpu, await ownDatabasePids(target, db)),
  });
}

async function adapterRun(
  target: Target,
  db: Kysely<any>,
  destination: Destination,
  messages: readonly BenchMessage[],
): Promise<Run> {
  const batch = messages.map(outgoing);
  const broker = destination.adapter();
  let failed = 0;
  let firstError = '';
  try {
    const result = await inWindows(batch, async (window) => {
      const outcomes = await broker.publish(window, { signal: new AbortController().signal });
      for (const outcome of outcomes) {
        if (outcome.status !== 'ok') {
          if (failed++ === 0) firstError = outcome.error;
        }
      }
    });
    if (failed > 0) progress(`adapter run: ${failed} publishes not ok, first: ${firstError}`);
    return finishRun(destination, {
      kind: 'adapter',
      wanted: messages.length,
      acked: messages.length - failed,
      errors: failed,
      ms: result.ms,
      windows: result.windows,
      cpu: cpuBetween(result.cpu, await ownDatabasePids(target, db)),
    });
  } finally {
    await broker.close();
  }
}

/**
 * Times one relay on a table filled by fillTable, from start() until its 'published' events have counted all the
 * messages. `destination` null: the in-memory broker.
 */
async function relayRun(
  target: Target,
  db: Kysely<any>,
  schema: string,
  table: string,
  messages: readonly BenchMessage[],
  destination: Destination | null,
  logical: LogicalSlot | null = null,
): Promise<Run> {
  // As autovacuum would have by now in production, then let the database catch up on the enqueue's writes.
  await analyze(target, db, schema, table);
  await settle(target, db, progress);

  const stats: RelayStats = {
    claimMs: 0,
    claims: 0,
    completeMs: 0,
    completeStatements: 0,
    otherMs: 0,
    controlMs: 0,
    controlStatements: 0,
    claimTransactions: 0,
    publishMs: 0,
    publishes: 0,
  };
  let active = false;
  const log = (event: LogEvent) => {
    if (!active || event.level !== 'query') return;
    const kind = classify(event.query.sql);
    if (kind === 'claim' || kind === 'claim-transaction') {
      stats.claimMs += event.queryDurationMillis;
      stats.claims++;
      if (kind === 'claim-transaction') stats.claimTransactions++;
    } else if (kind === 'control') {
      stats.controlMs += event.queryDurationMillis;
      stats.controlStatements++;
    } else if (kind === 'complete') {
      stats.completeMs += event.queryDurationMillis;
      stats.completeStatements++;
    } else stats.otherMs += event.queryDurationMillis;
  };
  const relayDb = connect({ ...target, url: relayUrl(target) }, { poolSize: RELAY_POOL_SIZE, log });
  const inner = destination === null ? new MemoryBroker() : destination.adapter();
  try {
    // Open the pool's connections before the clock starts, as a long-running relay has them.
    await Promise.all(Array.from({ length: 3 }, () => sql`SELECT 1`.execute(relayDb)));
    if (destination !== null && 'connect' in inner && typeof inner.connect === 'function') await inner.connect();
    const relay = createRelay({
      db: relayDb,
      dialect: target.dialect,
      schema,
      table,
      broker: timed(inner, stats, () => active),
      batchSize: WINDOW,
      concurrency: WINDOWS_IN_FLIGHT,
      ...(logical === null ? {} : { mode: 'logical' as const, slot: logical.slot, publication: logical.publication }),
    });
    let published = 0;
    let retried = 0;
    let dead = 0;
    let errors = 0;
    let ended = 0;
    let finish = noop;
    const done = new Promise<void>((resolve) => (finish = resolve));
    let cpuAfter: CpuSnapshot | null = null;
    relay.on('published', (batch) => {
      published += batch.length;
      if (published >= messages.length && ended === 0) {
        ended = performance.now();
        active = false;
        cpuAfter = cpuSnapshot();
        finish();
      }
    });
    relay.on('retrying', (batch) => {
      if (retried === 0) progress(`relay retrying: ${batch[0]?.error ?? '?'}`);
      retried += batch.length;
    });
    relay.on('dead', (batch) => void (dead += batch.length));
    relay.on('error', (error) => {
      if (errors++ < 5) progress(`relay error: ${error.message}`);
    });
    const ownDb = await ownDatabasePids(target, db);
    const cpuBefore = cpuSnapshot();
    active = true;
    const began = performance.now();
    Promise.resolve(relay.start()).catch((error: unknown) => progress(`relay failed to start: ${String(error)}`));
    const finished = await within(done, RUN_TIMEOUT_MS);
    const elapsed = (finished ? ended : performance.now()) - began;
    active = false;
    const acked = published;
    const span = { before: cpuBefore, after: cpuAfter ?? cpuSnapshot() };
    const ownAfter = await ownDatabasePids(target, db);
    if (ownDb !== 'all' && ownAfter !== 'all') for (const pid of ownAfter) ownDb.add(pid);
    const cpu = cpuBetween(span, ownDb);
    await relay.stop();
    shareOutControl(stats, target.dialect);
    const rowsLeft = await rowsIn(db, schema, table);
    return finishRun(destination, {
      kind: destination === null ? 'memory' : logical === null ? 'relay' : 'logical',
      wanted: messages.length,
      acked,
      ms: elapsed,
      timedOut: !finished,
      stats,
      errors,
      retried,
      dead,
      cpu,
      rowsLeft,
    });
  } finally {
    if (destination !== null) await (inner as Broker & { close(): Promise<void> }).close();
    await relayDb.destroy();
  }
}

/** Completes a run's record with what the broker holds for it (and a sample message); unset fields get defaults. */
async function finishRun(
  destination: Destination | null,
  run: Pick<Run, 'kind' | 'wanted' | 'acked' | 'ms'> & Partial<Omit<Run, 'stored' | 'sample'>>,
): Promise<Run> {
  return {
    timedOut: false,
    windows: [],
    stats: null,
    errors: 0,
    retried: 0,
    dead: 0,
    cpu: null,
    rowsLeft: null,
    ...run,
    stored: destination === null ? null : await destination.stored(),
    sample: destination === null ? null : await destination.sample(),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// One broker: rounds of raw, adapter, relay and memory, alternating the order.

interface BrokerReport {
  target: Target;
  broker: BrokerBench;
  messages: number;
  /** The warm-up raw run's rate that sized `messages`. */
  calibrationRate: number;
  runs: Record<Kind, Run[]>;
  headerCheck: string;
  seconds: number;
}

/** Warms the broker and both clients up with a raw run, and sizes N from its rate. */
async function calibrate(target: Target, db: Kysely<any>, broker: BrokerBench): Promise<{ messages: number; rate: number }> {
  const destination = await broker.destination('warmup');
  try {
    const run = await rawRun(target, db, destination, roundMessages(ROUNDS, CALIBRATION_MESSAGES));
    const wanted = Math.ceil((rate(run) * TARGET_RAW_SECONDS) / MESSAGES_STEP) * MESSAGES_STEP;
    return { messages: Math.min(MAX_MESSAGES, Math.max(MIN_MESSAGES, wanted)), rate: rate(run) };
  } finally {
    await destination.remove();
  }
}

async function benchBroker(target: Target, db: Kysely<any>, schema: string, broker: BrokerBench): Promise<BrokerReport> {
  const started = performance.now();
  const calibration = await calibrate(target, db, broker);
  const total = calibration.messages;
  progress(
    `${broker.label}: warm-up raw run ${count(calibration.rate)} msg/s → ${count(total)} messages per run × ${ROUNDS} rounds`,
  );
  const runs: Record<Kind, Run[]> = { raw: [], adapter: [], relay: [], logical: [], memory: [] };
  const postgres = target.dialect === 'postgres';
  for (let round = 0; round < ROUNDS; round++) {
    const messages = roundMessages(round, total);
    const table = (kind: Kind) => `${broker.name}_${kind}${round}`;
    // Both relay tables of the round at once, to save wall time; each timed run starts after the database settled.
    // The logical relay's table gets its publication and slot first, so the slot streams the enqueued messages.
    const slot: LogicalSlot = {
      slot: `${schema}_${table('logical')}`.toLowerCase(),
      publication: `${schema}_${table('logical')}_pub`.toLowerCase(),
    };
    await Promise.all([
      fillTable(target, db, schema, table('relay'), messages),
      fillTable(target, db, schema, table('memory'), messages),
      ...(postgres ? [fillTable(target, db, schema, table('logical'), messages, slot)] : []),
    ]);
    const kinds: Kind[] = postgres ? ['raw', 'adapter', 'relay', 'logical', 'memory'] : ['raw', 'adapter', 'relay', 'memory'];
    const order: Kind[] = round % 2 === 0 ? kinds : [...kinds].reverse();
    for (const kind of order) {
      const name = `${kind}${round}`;
      let run: Run;
      if (kind === 'memory') {
        run = await relayRun(target, db, schema, table(kind), messages, null);
      } else {
        const destination = await broker.destination(name);
        try {
          if (kind === 'relay') run = await relayRun(target, db, schema, table(kind), messages, destination);
          else if (kind === 'logical') {
            try {
              run = await relayRun(target, db, schema, table(kind), messages, destination, slot);
            } finally {
              await dropLogical(db, slot);
            }
          } else {
            await settle(target, db, progress);
            run =
              kind === 'raw'
                ? await rawRun(target, db, destination, messages)
                : await adapterRun(target, db, destination, messages);
          }
        } finally {
          await destination.remove();
        }
      }
      runs[kind].push(run);
      const checks =
        (run.stored === null ? '' : `, ${count(run.stored)} stored`) +
        (run.rowsLeft === null ? '' : `, ${run.rowsLeft} rows left`) +
        (run.retried + run.dead + run.errors > 0 ? `, ${run.retried} retried, ${run.dead} dead, ${run.errors} errors` : '') +
        (run.timedOut ? ', TIMED OUT' : '');
      progress(
        `${broker.label}: round ${round + 1}/${ROUNDS}: ${kind} ${count(rate(run))} msg/s (${(run.ms / 1000).toFixed(2)} s${checks})`,
      );
    }
  }
  return {
    target,
    broker,
    messages: total,
    calibrationRate: calibration.rate,
    runs,
    headerCheck: compareSamples(runs),
    seconds: (performance.now() - started) / 1000,
  };
}

/**
 * Whether what the raw client stored looks like what the adapter stored through the relay (the first stored message
 * of round 1 of each): the same header names and properties, with the same values once the message's own id and key
 * are replaced by placeholders (the two first messages need not be the same message), and the same payload size.
 */
function compareSamples(runs: Record<Kind, Run[]>): string {
  const raw = runs.raw[0]?.sample ?? null;
  const relay = runs.relay[0]?.sample ?? null;
  if (raw === null || relay === null) return 'could not read a stored message back to compare';
  const shape = (sample: Sample): Record<string, string> => {
    const id = sample.headers['txoutbox-id'];
    const fields = { ...sample.headers, ...Object.fromEntries(Object.entries(sample.properties).map(([k, v]) => [`(${k})`, v])) };
    return Object.fromEntries(
      Object.entries(fields).map(([name, value]) => [name, value === id ? '<id>' : value === sample.key ? '<key>' : value]),
    );
  };
  const a = shape(raw);
  const b = shape(relay);
  const differences: string[] = [];
  for (const name of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
    if (a[name] !== b[name]) differences.push(`${name}: raw ${a[name] ?? '(none)'}, relay ${b[name] ?? '(none)'}`);
  }
  if (raw.bytes !== relay.bytes) differences.push(`payload ${raw.bytes} vs ${relay.bytes} bytes`);
  const what = Object.entries(b)
    .map(([name, value]) => `${name}=${value}`)
    .join(', ');
  return differences.length === 0
    ? `same headers and properties (${what}) and ${relay.bytes}-byte payloads`
    : `**differs**: ${differences.join('; ')}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Entry point.

/** PostgreSQL → RabbitMQ and → NATS JetStream (`npm run bench -- brokers`). */
export const benchBrokers = (): Promise<string> => benchPairs('brokers', 'postgres', [rabbitMqBench, natsBench, sqsBench]);

/** PostgreSQL → Amazon SQS alone (`npm run bench -- brokers-sqs`): the SQS part of `brokers`, for a quicker look. */
export const benchBrokersSqs = (): Promise<string> => benchPairs('brokers-sqs', 'postgres', [sqsBench]);

/** MariaDB/MySQL → RabbitMQ (`npm run bench -- brokers-mysql`): the same machinery on a MySQL outbox. */
export const benchBrokersMysql = (): Promise<string> => benchPairs('brokers-mysql', 'mysql', [rabbitMqBench]);

async function benchPairs(
  name: string,
  dialect: Target['dialect'],
  brokers: readonly (() => Promise<BrokerBench>)[],
): Promise<string> {
  const date = new Date();
  const started = performance.now();
  const loadBefore = os.loadavg();
  const target = targets().find((t) => t.dialect === dialect);
  if (target === undefined) throw new Error(`no ${dialect} target`);
  progress(`connecting to ${redact(target.url)}, ${redact(AMQP_URL)}${brokers.includes(natsBench) ? `, ${NATS_URL}` : ''}`);
  const result = await withScratchSchema(target, { poolSize: 4, progress }, async (db, schema) => {
    const facts = await serverFacts(target, db);
    progress(`${facts.version} in ${schema}`);
    const reports: BrokerReport[] = [];
    for (const open of brokers) {
      const broker = await open();
      progress(`${target.label} → ${broker.label}: ${broker.version}`);
      try {
        reports.push(await benchBroker(target, db, schema, broker));
      } finally {
        await broker.close();
      }
    }
    return { facts, reports };
  });
  const seconds = (performance.now() - started) / 1000;
  progress(`done in ${seconds.toFixed(1)} s`);
  return render(name, date, target, result.facts, result.reports, seconds, { before: loadBefore, after: os.loadavg() });
}

// ---------------------------------------------------------------------------------------------------------------
// Report.

interface Cycle {
  /** A worker's whole cycle per batch: worker time (concurrency × elapsed) over batches published. */
  cycle: number;
  claim: number;
  publish: number;
  complete: number;
  /** Statements per complete transaction (BEGIN and COMMIT included). */
  completeStatements: number;
  /** Cycle time not spent in publish(): the database work that did not overlap it, CPU waits, the event loop. */
  beyondPublish: number;
}

interface Figures {
  raw: number;
  adapter: number;
  relay: number;
  memory: number;
  ratio: number;
  roundRatios: number[];
  /** What the relay would do if each batch cost its in-memory database cycle plus a raw publish window, nothing more. */
  serial: number;
  rawWindowMs: number;
  adapterWindowMs: number;
  /** The logical relay (PostgreSQL only), median msg/s and its ratio to raw. */
  logical: number | null;
  logicalRatio: number | null;
  logicalRoundRatios: number[];
  /** Means per batch, over all rounds. */
  real: Cycle;
  inMemory: Cycle;
  /** Per kind: CPU ms per 100 messages by process group, and the machine's busy share, over all rounds. */
  cpu: Record<Kind, { per100: CpuTimes; busy: number } | null>;
}

function figures(report: BrokerReport): Figures {
  const { runs } = report;
  const med = (kind: Kind) => median(Float64Array.from(runs[kind].map(rate)));
  const raw = med('raw');
  const relay = med('relay');
  const memory = med('memory');
  const meanWindow = (kind: Kind) => {
    const all = runs[kind].flatMap((run) => run.windows);
    return all.reduce((a, b) => a + b, 0) / Math.max(1, all.length);
  };
  const perBatch = (kind: Kind): Cycle => {
    const list = runs[kind];
    const batches = list.reduce((n, run) => n + (run.stats?.publishes ?? 0), 0) || 1;
    const total = (pick: (s: RelayStats) => number) => list.reduce((n, run) => n + (run.stats === null ? 0 : pick(run.stats)), 0);
    // Worker time: in a backlog every worker is busy from start() to the last ack (it never sleeps for lack of work).
    const cycle = list.reduce((n, run) => n + run.ms * WINDOWS_IN_FLIGHT, 0) / batches;
    const claim = total((s) => s.claimMs) / batches;
    const publish = total((s) => s.publishMs) / batches;
    const complete = total((s) => s.completeMs) / batches;
    return {
      cycle,
      claim,
      publish,
      complete,
      completeStatements: total((s) => s.completeStatements) / batches,
      beyondPublish: cycle - publish,
    };
  };
  const logical = runs.logical.length === 0 ? null : med('logical');
  return {
    raw,
    adapter: med('adapter'),
    relay,
    logical,
    logicalRatio: logical === null ? null : logical / raw,
    logicalRoundRatios: runs.logical.map((run, i) => rate(run) / rate(runs.raw[i]!)),
    memory,
    ratio: relay / raw,
    roundRatios: runs.relay.map((run, i) => rate(run) / rate(runs.raw[i]!)),
    serial: 1 / (1 / memory + 1 / raw),
    rawWindowMs: meanWindow('raw'),
    adapterWindowMs: meanWindow('adapter'),
    real: perBatch('relay'),
    inMemory: perBatch('memory'),
    cpu: {
      raw: cpuOf(runs.raw),
      adapter: cpuOf(runs.adapter),
      relay: cpuOf(runs.relay),
      logical: cpuOf(runs.logical),
      memory: cpuOf(runs.memory),
    },
  };
}

function cpuOf(runs: readonly Run[]): { per100: CpuTimes; busy: number } | null {
  if (runs.length === 0 || runs.some((run) => run.cpu === null)) return null;
  const messages = runs.reduce((n, run) => n + Math.min(run.acked, run.wanted), 0);
  const wall = runs.reduce((n, run) => n + run.ms, 0);
  const per100 = { bench: 0, database: 0, broker: 0, other: 0 };
  for (const group of CPU_GROUPS) per100[group] = (runs.reduce((n, run) => n + run.cpu![group], 0) / messages) * WINDOW;
  const used = CPU_GROUPS.reduce((n, group) => n + runs.reduce((m, run) => m + run.cpu![group], 0), 0);
  return { per100, busy: used / (wall * os.cpus().length) };
}

function render(
  name: string,
  date: Date,
  target: Target,
  facts: { version: string; durability: string },
  reports: readonly BrokerReport[],
  seconds: number,
  load: { before: number[]; after: number[] },
): string {
  const all = reports.map((report) => ({ report, f: figures(report) }));
  const postgres = target.dialect === 'postgres';
  const lines: string[] = [
    postgres ? '## Brokers' : `## Brokers: ${target.label}`,
    '',
    ...machineFacts(`npm run bench -- ${name}`, date),
    `- ${target.label}: ${facts.version} (${facts.durability})`,
    ...reports.map(
      (r) =>
        `- ${r.broker.label}: ${r.broker.version} at ${r.broker.name === 'rabbitmq' ? redact(AMQP_URL) : r.broker.name === 'nats' ? NATS_URL : 'a loopback port'} (same machine and disk)`,
    ),
    `- Whole bench: ${seconds.toFixed(0)} s; load average (1, 5, 15 min) ${loadavg(load.before)} before, ${loadavg(load.after)} after ` +
      `(anything else running on the machine shows here: the figures are only as quiet as the machine was)`,
    '',
    `How close the relay gets to the broker's own confirmed publish rate. Per broker, a warm-up raw run of ` +
      `${count(CALIBRATION_MESSAGES)} messages (not counted) sizes N so a raw run takes about ${TARGET_RAW_SECONDS} s ` +
      `(${count(MIN_MESSAGES)}–${count(MAX_MESSAGES)}); then ${ROUNDS} rounds, each with N messages of its own ` +
      `(~${PAYLOAD_BYTES}-byte JSON payloads, keys round-robin over ${count(KEYS)} keys, monotonic ULID ids), run four ` +
      `measurements in an order that flips every round, each into a fresh queue/stream and outbox table; medians are reported.`,
    '',
    `1. **Raw client** (baseline): the broker's own client publishes the round's messages with the same payloads, ids and ` +
      `headers the adapter sets, in windows of ${WINDOW} (publish ${WINDOW}, await all ${WINDOW} confirms, next ${WINDOW}), ` +
      `${WINDOWS_IN_FLIGHT} windows at a time (the relay's batchSize × concurrency), on a connection opened before the clock starts.`,
    `2. **Adapter alone**: the txoutbox adapter's \`publish()\` with the same windows and no database, to tell the adapter's cost from the relay's.`,
    `3. **Relay**: at the round's start the messages are enqueued with the library into this run's outbox table ` +
      `(${count(ENQUEUE_BATCH)} per transaction, not timed; the relay and in-memory tables are filled at the same time), the table ` +
      `ANALYZEd and the database let settle (${settling(target)}) just before the run, then one relay (\`batchSize: ${WINDOW}, concurrency: ${WINDOWS_IN_FLIGHT}\`, other options ` +
      `default, its own pool of ${RELAY_POOL_SIZE} connections opened beforehand) with the real adapter is timed from \`start()\` ` +
      `until its \`published\` events have counted every message. The adapter is wrapped to time its \`publish()\` calls and the ` +
      `pool's Kysely \`log\` times each statement (claim; the complete transaction; cleanup); both cost microseconds per batch.` +
      (postgres
        ? ''
        : ` BEGIN/COMMIT cannot be told apart by their text: each claim transaction is given 3 (SET TRANSACTION, BEGIN, COMMIT) ` +
          `at the mean duration of such statements, the complete transactions the rest.`),
    `4. **Relay, in-memory broker**: the same relay on a table of the same messages with \`MemoryBroker\`, so only the database round-trips are left.`,
    '',
    `Per-batch figures are worker time (${WINDOWS_IN_FLIGHT} × elapsed) over batches published. A relay worker claims its next ` +
      `batch while one publishes and completes the last one meanwhile, so claim and complete overlap the publish: "cycle − publish" ` +
      `is what did not overlap (database waits, CPU contention, the event loop). Raw and adapter runs also start right after the database settled. Every run is checked afterwards: messages held by the ` +
      `queue/stream, rows left in the outbox table, retries and errors.`,
  ];
  for (const { report, f } of all) lines.push('', ...renderBroker(report, f));
  if (!postgres) {
    lines.push(
      '',
      `The RabbitMQ baseline (raw client, adapter alone) is the same measurement as in \`npm run bench -- brokers\`, taken again ` +
        `in this run so that the ratio compares like with like on a machine whose speed drifts.`,
    );
  }
  lines.push('', ...explain(target, all));
  return `${lines.join('\n')}\n`;
}

/** How the bench lets the database catch up before a timed run. */
const settling = (target: Target): string => (target.dialect === 'postgres' ? 'CHECKPOINT' : 'InnoDB given up to 15 s to purge');

function renderBroker(report: BrokerReport, f: Figures): string[] {
  const { target, broker, runs } = report;
  const goal = GOALS[broker.name];
  const rounds = (kind: Kind) => runs[kind].map((run) => count(rate(run))).join(', ');
  const problems = (Object.keys(runs) as Kind[]).flatMap((kind) =>
    runs[kind].flatMap((run, i) => {
      const issues: string[] = [];
      if (run.timedOut) issues.push(`timed out with ${count(run.acked)} acknowledged`);
      if (run.acked < run.wanted && !run.timedOut) issues.push(`${count(run.wanted - run.acked)} not acknowledged`);
      if (run.stored !== null && run.stored !== run.wanted) issues.push(`${count(run.stored)} stored, not ${count(run.wanted)}`);
      if (run.rowsLeft !== null && run.rowsLeft > 0) issues.push(`${run.rowsLeft} rows left`);
      if (run.retried + run.dead + run.errors > 0) issues.push(`${run.retried} retried, ${run.dead} dead, ${run.errors} errors`);
      return issues.length === 0 ? [] : [`${kind} round ${i + 1}: ${issues.join(', ')}`];
    }),
  );
  const cycleRow = (label: string, c: Cycle) => {
    const part = (value: number) => `${ms(value)} (${Math.round((value / c.cycle) * 100)}%)`;
    return (
      `| ${label} | ${ms(c.cycle)} | ${part(c.publish)} | ${ms(c.claim)} | ` +
      `${ms(c.complete)} | ${ratio(c.completeStatements)} | ${part(c.beyondPublish)} |`
    );
  };
  const windowRow = (label: string, window: number) => `| ${label} | ${ms(window)} | ${ms(window)} | — | — | — | — |`;
  return [
    `### ${target.label} → ${broker.label}`,
    '',
    `${broker.version} · N = ${count(report.messages)} messages per run (warm-up raw run: ${count(report.calibrationRate)} msg/s) · ` +
      `took ${report.seconds.toFixed(1)} s · raw client: ${broker.setup}`,
    '',
    '| Figure | Value | Rounds | Goal | Verdict |',
    '|---|---:|---|---|---|',
    `| Raw client, confirmed publish (median of ${runs.raw.length}) | ${count(f.raw)} msg/s | ${rounds('raw')} | — | — |`,
    `| Adapter alone, no database (median) | ${count(f.adapter)} msg/s (${ratio(f.adapter / f.raw)} × raw) | ${rounds('adapter')} | — | — |`,
    `| **Relay → ${broker.label}** (median) | ${count(f.relay)} msg/s | ${rounds('relay')} | — | — |`,
    `| **Relay / raw** | **${ratio(f.ratio)}** | ${f.roundRatios.map(ratio).join(', ')} | ≥ ${ratio(goal)} | ${f.ratio >= goal ? 'met' : '**missed**'} |`,
    ...(f.logical === null || f.logicalRatio === null
      ? []
      : [
          `| **Logical relay → ${broker.label}** (mode 'logical', median) | ${count(f.logical)} msg/s | ${rounds('logical')} | — | — |`,
          `| **Logical relay / raw** | **${ratio(f.logicalRatio)}** | ${f.logicalRoundRatios.map(ratio).join(', ')} | ≥ ${ratio(LOGICAL_GOALS[broker.name])} | ${f.logicalRatio >= LOGICAL_GOALS[broker.name] ? 'met' : '**missed**'} |`,
        ]),
    `| Relay, in-memory broker (database only, median) | ${count(f.memory)} msg/s | ${rounds('memory')} | — | — |`,
    `| Serial estimate 1 / (1/memory + 1/raw) | ${count(f.serial)} msg/s (${ratio(f.serial / f.raw)} × raw) | — | — | — |`,
    '',
    `Per batch of ${WINDOW}, mean ms over all rounds (share of the cycle; claim and complete overlap the publish):`,
    '',
    '| Run | Cycle | Publish | Claim | Complete tx | Statements / complete | Cycle − publish |',
    '|---|---:|---:|---:|---:|---:|---:|',
    windowRow('Raw client window', f.rawWindowMs),
    windowRow('Adapter-alone window', f.adapterWindowMs),
    cycleRow(`Relay → ${broker.label}`, f.real),
    cycleRow('Relay → in-memory broker', f.inMemory),
    '',
    ...renderCpu(target, f),
    '',
    `Checks: ${problems.length === 0 ? `every run acknowledged and stored exactly ${count(report.messages)} messages, no rows left, no retries or errors` : `**${problems.join('; ')}**`}. ` +
      `Raw vs relay message as stored: ${report.headerCheck}.`,
  ];
}

function renderCpu(target: Target, f: Figures): string[] {
  const labels: Record<Kind, string> = {
    raw: 'Raw client',
    adapter: 'Adapter alone',
    relay: 'Relay → broker',
    logical: 'Logical relay → broker',
    memory: 'Relay → in-memory broker',
  };
  const rows = (Object.keys(labels) as Kind[]).flatMap((kind) => {
    const cpu = f.cpu[kind];
    if (cpu === null) return [];
    const { bench, database, broker, other } = cpu.per100;
    return [
      `| ${labels[kind]} | ${ratio(bench)} | ${ratio(database)} | ${ratio(broker)} | ${ratio(bench + database + broker)} | ${ratio(other)} | ${Math.round(cpu.busy * 100)}% |`,
    ];
  });
  if (rows.length === 0) return ['CPU per process: not measured (no /proc on this machine).'];
  return [
    `CPU ms per ${WINDOW} messages while the clock ran (user + system per process from /proc/<pid>/stat, all threads; ` +
      (target.dialect === 'postgres'
        ? `PostgreSQL is the relay pool's backends, found by application_name, plus its auxiliary processes; "other" is the ` +
          `rest of the machine's busy time from /proc/stat: other processes and other clients' backends, i.e. noise, and `
        : `${target.label} is the whole server process (one process whose threads serve every client, so other clients' ` +
          `queries count here too); "other" is the rest of the machine's busy time from /proc/stat: other processes, i.e. noise, and `) +
      `processes that exited during the run), and how busy the machine's ${os.cpus().length} cores were:`,
    '',
    `| Run | Bench process (node) | ${target.label} | Broker | Sum of the three | Other processes | Machine busy |`,
    '|---|---:|---:|---:|---:|---:|---:|',
    ...rows,
  ];
}

/** Five lines on where the relay's time goes, computed from the figures above. */
function explain(target: Target, all: readonly { report: BrokerReport; f: Figures }[]): string[] {
  const label = target.label;
  const claimShape =
    target.dialect === 'postgres'
      ? '1 autocommit UPDATE … RETURNING'
      : 'a probe SELECT, then a transaction of SELECT … FOR UPDATE SKIP LOCKED and the lease UPDATE';
  /** One clause per broker, "RabbitMQ …; NATS JetStream …". */
  const each = (describe: (f: Figures, goal: number) => string) =>
    all.map(({ report, f }) => `${report.broker.label} ${describe(f, GOALS[report.broker.name])}`).join('; ');
  const pct = (value: number) => `${Math.round(value * 100)}%`;
  const db = (c: Cycle) => c.claim + c.complete;
  const cores = os.cpus().length;
  const total = (cpu: { per100: CpuTimes } | null) =>
    cpu === null ? Number.NaN : cpu.per100.bench + cpu.per100.database + cpu.per100.broker;
  const measured = all.every(({ f }) => f.cpu.relay !== null && f.cpu.raw !== null);
  /** The most the cores could relay if every one of them did nothing but this relay's work (perfect overlap). */
  const ceiling = (f: Figures) => (cores * 1000 * WINDOW) / total(f.cpu.relay);
  const missed = all.filter(({ report, f }) => f.ratio < GOALS[report.broker.name]);
  const cpuBound = missed.filter(({ report, f }) => measured && ceiling(f) / f.raw < GOALS[report.broker.name]);
  const budgets = missed.map(({ report, f }) => {
    const budget = f.rawWindowMs / GOALS[report.broker.name];
    return `${report.broker.label} a cycle of ≤ ${ms(budget)} ms (now ${ms(f.real.cycle)}, of which publish ${ms(f.real.publish)})`;
  });
  const slower = `the same claim + complete take ${each((f) => `${ratio(db(f.real) / db(f.inMemory))}×`)} their in-memory time next to the broker (shared CPU and disk)`;
  const cpuLine = measured
    ? `- CPU: per ${WINDOW} messages the relay runs cost ${each((f) => `${ratio(total(f.cpu.relay))} ms (node ${ratio(f.cpu.relay!.per100.bench)}, ${label} ${ratio(f.cpu.relay!.per100.database)}, broker ${ratio(f.cpu.relay!.per100.broker)}; the raw client ${ratio(total(f.cpu.raw))})`)}, ` +
      `so even with perfect overlap the ${cores} cores could relay at most ${each((f) => `${count(ceiling(f))} msg/s (${ratio(ceiling(f) / f.raw)} × raw; they were ${pct(f.cpu.relay!.busy)} busy)`)}; ${slower}.`
    : `- CPU was not measured (no /proc); ${slower}.`;
  return [
    `### Where the relay's time goes`,
    '',
    `- ${each((f, goal) => `relay/raw ${ratio(f.ratio)} against ≥ ${ratio(goal)} (${f.ratio >= goal ? 'met' : 'missed'}): a relay batch takes a worker ${ms(f.real.cycle)} ms where a raw window takes ${ms(f.rawWindowMs)} ms`)}; relay/raw ≈ raw window / relay cycle.`,
    `- Database round-trips overlap publishing: each worker claims its next batch (${claimShape}) while one ` +
      `publishes, and completes the last one (a read-committed transaction of ${each((f) => `${ratio(f.real.completeStatements)}`)} statements) ` +
      `while the next publishes; per batch they take ${each((f) => `${ms(db(f.real))} ms next to a ${ms(f.real.publish)} ms publish, and the cycle exceeds the publish by ${ms(f.real.beyondPublish)} ms`)}; ` +
      `without overlap the estimate from the in-memory rate would be ${each((f) => `${count(f.serial)} msg/s (measured ${count(f.relay)})`)}.`,
    cpuLine,
    `- The adapter alone reaches ${each((f) => `${ratio(f.adapter / f.raw)} × raw (window ${ms(f.adapterWindowMs)} vs ${ms(f.rawWindowMs)} ms` + (f.cpu.adapter !== null && f.cpu.raw !== null ? `, node CPU ${ratio(f.cpu.adapter.per100.bench)} vs ${ratio(f.cpu.raw.per100.bench)} ms per ${WINDOW})` : ')'))}; ` +
      `inside the relay its publish() takes ${each((f) => `${ms(f.real.publish)} ms (${pct(f.real.publish / f.real.cycle)} of the cycle)`)}.`,
    missed.length === 0
      ? `- ${all.length > 1 ? 'Both goals are' : 'The goal is'} met: the database round-trips fit in the time the raw client itself spends per window.`
      : `- Meeting the goals needs ${budgets.join('; ')}` +
        (cpuBound.length > 0
          ? `; for ${cpuBound.map(({ report }) => report.broker.label).join(' and ')} no amount of overlap gets there on this machine, since the CPU ceiling is below the goal: claim and complete must cost ${label} and node less per message (fewer statements per batch, cheaper updates).`
          : `: fewer round-trips and cheaper statements per batch are what close that gap.`),
  ];
}
