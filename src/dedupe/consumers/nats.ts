import { OWN_HEADERS } from '../../brokers/headers.js';
import { EventEmitter } from 'node:events';
import { connect, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node';
import { AckPolicy, DeliverPolicy, JetStreamApiError, jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { ConsumerMessages, JsMsg } from '@nats-io/jetstream';
import { z } from 'zod';
import { parseOptions } from '../../config.js';
import { ConfigError, TxOutboxError } from '../../errors.js';
import { hintDelay } from '../../timers.js';
import type { InboxMessage } from '../message.js';
import {
  DeliveryPolicy,
  describeError,
  InFlight,
  sharedOptionShape,
  type InboxConsumerEvents,
  type InboxConsumerOptions,
} from './core.js';

export interface NatsInboxConsumerOptions<DB> extends InboxConsumerOptions<DB> {
  /** Server URL(s). Default `nats://127.0.0.1:4222`. Not with `connection`. */
  servers?: string | string[];
  /** Extra nats.js connection options (auth, TLS, name...); the consumer always reconnects forever. */
  connectionOptions?: Omit<NodeConnectionOptions, 'servers' | 'reconnect' | 'maxReconnectAttempts'>;
  /** A connection you own instead; `close()` leaves it open. */
  connection?: NatsConnection;
  /** The JetStream stream holding the messages. */
  stream: string;
  /** The durable pull consumer to read with; created (explicit acks, no delivery limit) when it does not exist. */
  durable: string;
  /** When creating the durable consumer: only these subjects. Default: the whole stream. */
  filterSubject?: string;
  /** When creating the durable consumer: how long a delivery may stay unacked before JetStream redelivers it. Default 30 s. */
  ackWaitMs?: number;
  /** The name the inbox records ids under. Default: the durable consumer's name. */
  consumer?: string;
  /** Handlers running at once (messages pulled ahead). Default 10. */
  maxMessages?: number;
}

const DEFAULT_SERVER = 'nats://127.0.0.1:4222';
/** Overlap corrections kept for messages that were nak'ed (and come back); beyond this the oldest are forgotten. */
const MAX_OVERLAP_ENTRIES = 10_000;
const NAME = /^[A-Za-z0-9_-]{1,255}$/;

const optionsSchema = z
  .object({
    ...sharedOptionShape,
    servers: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
    connectionOptions: z.record(z.string(), z.unknown()).optional(),
    connection: z
      .custom<NatsConnection>(
        (value) => typeof (value as { request?: unknown } | null)?.request === 'function',
        'must be a NatsConnection from connect()',
      )
      .optional(),
    stream: z.string().regex(NAME, 'stream must be 1-255 letters, digits, - or _'),
    durable: z.string().regex(NAME, 'durable must be 1-255 letters, digits, - or _'),
    filterSubject: z.string().min(1).optional(),
    ackWaitMs: z.number().int().min(1000).default(30_000),
    maxMessages: z.number().int().min(1).max(10_000).default(10),
  })
  .strict()
  .refine((value) => value.connection === undefined || (value.servers === undefined && value.connectionOptions === undefined), {
    message: 'connection cannot be given together with servers or connectionOptions',
    path: ['connection'],
  });

type Resolved = z.output<typeof optionsSchema>;

function textHeaders(message: JsMsg): Record<string, string> {
  const headers: Record<string, string> = {};
  if (message.headers === undefined) return headers;
  for (const name of message.headers.keys()) headers[name] = message.headers.get(name);
  return headers;
}

/**
 * Consumes a JetStream durable pull consumer and runs each message's handler once per id, through the inbox,
 * acking only after the handler's transaction committed. A failure is nak'ed with the retry delay (JetStream
 * redelivers it then; the queue keeps flowing meanwhile); when the delivery count reaches `maxAttempts` the message
 * is written to the inbox's dead-letter table and terminated (`term`, which also raises JetStream's advisory).
 */
export class NatsInboxConsumer<DB> extends EventEmitter<InboxConsumerEvents> {
  readonly consumer: string;
  private readonly options: Resolved;
  private readonly policy: DeliveryPolicy;
  private readonly inFlight = new InFlight();
  private nc: NatsConnection | null = null;
  private messages: ConsumerMessages | null = null;
  private loop: Promise<void> | null = null;
  private closing = false;
  /** The durable consumer's ack_wait: while a handler runs, its delivery is kept alive well within it. */
  private ackWaitMs: number;
  /** Deliveries of each message (by stream sequence) whose handler is running: the first, then any redeliveries. */
  private readonly running = new Map<number, JsMsg[]>();
  /** Redeliveries that arrived while the message's handler ran: they are not attempts, so they are not counted. */
  private readonly overlaps = new Map<number, number>();

  constructor(options: NatsInboxConsumerOptions<DB>) {
    super();
    this.options = parseOptions(optionsSchema, options, 'createNatsInboxConsumer');
    this.consumer = this.options.consumer ?? this.options.durable;
    this.ackWaitMs = this.options.ackWaitMs;
    this.policy = new DeliveryPolicy(
      this,
      { ...this.options, consumer: this.consumer },
      {
        source: 'nats',
        destination: `${this.options.stream}/${this.options.durable}`,
        // Its dead letter records JetStream's delivery count.
        neverSettled: { because: 'the consumer crashed or exceeded ack_wait each time' },
      },
    );
  }

  /** Connects, checks or creates the durable consumer and starts consuming; throws when that fails. */
  async start(): Promise<void> {
    if (this.loop !== null) return;
    if (this.closing) throw new TxOutboxError('This NATS inbox consumer is closed.', 'TXOUTBOX_CLOSED');
    const nc =
      this.options.connection ??
      (await connect({
        name: `txoutbox-inbox-${this.consumer}`,
        ...(this.options.connectionOptions as NodeConnectionOptions | undefined),
        servers: this.options.servers ?? DEFAULT_SERVER,
        reconnect: true,
        maxReconnectAttempts: -1,
      }));
    this.nc = nc;
    try {
      await this.ensureConsumer(nc);
      const consumer = await jetstream(nc).consumers.get(this.options.stream, this.options.durable);
      this.messages = await consumer.consume({ max_messages: this.options.maxMessages });
    } catch (error) {
      if (this.options.connection === undefined) await nc.close().catch(() => undefined);
      this.nc = null;
      throw error;
    }
    this.loop = this.run(this.messages);
  }

  /** Stops pulling, waits for the handlers in flight (they commit and ack), flushes the acks, then disconnects. */
  async close(): Promise<void> {
    this.closing = true;
    this.messages?.stop();
    this.inFlight.wakeAll();
    await this.loop;
    await this.inFlight.settled();
    const nc = this.nc;
    this.nc = null;
    if (nc === null || nc.isClosed()) return;
    await nc.flush().catch(() => undefined);
    if (this.options.connection === undefined) await nc.close().catch(() => undefined);
  }

  private async ensureConsumer(nc: NatsConnection): Promise<void> {
    const { stream, durable, maxAttempts } = this.options;
    const jsm = await jetstreamManager(nc);
    try {
      const { config } = await jsm.consumers.info(stream, durable);
      if (config.ack_policy !== AckPolicy.Explicit) {
        throw new ConfigError(
          `NATS consumer "${durable}" must use explicit acks (ack_policy explicit) for the inbox to ack after commit.`,
        );
      }
      if (typeof config.ack_wait === 'number' && config.ack_wait > 0) this.ackWaitMs = config.ack_wait / 1_000_000;
      const maxDeliver = config.max_deliver ?? -1;
      if (maxDeliver > 0 && maxDeliver < maxAttempts) {
        throw new ConfigError(
          `NATS consumer "${durable}" has max_deliver ${maxDeliver}, below maxAttempts ${maxAttempts}: JetStream would stop ` +
            'redelivering before the message is dead-lettered. Raise max_deliver (or -1) or lower maxAttempts.',
        );
      }
    } catch (error) {
      if (!(error instanceof JetStreamApiError && error.code === 10014)) throw error;
      // No such consumer: create it. No delivery limit of JetStream's own: the helper bounds attempts itself, so
      // a message is never dropped without a dead letter.
      await jsm.consumers.add(stream, {
        durable_name: durable,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: this.options.ackWaitMs * 1_000_000,
        max_deliver: -1,
        ...(this.options.filterSubject === undefined ? {} : { filter_subject: this.options.filterSubject }),
      });
    }
  }

  /** Pulls messages and hands each to a handler, at most maxMessages at once. */
  private async run(messages: ConsumerMessages): Promise<void> {
    try {
      for await (const message of messages) {
        if (this.closing) break; // not acked: JetStream redelivers it after ack_wait
        this.inFlight.track(this.handle(message).catch((error: unknown) => this.policy.report(error)));
        await this.inFlight.below(this.options.maxMessages, () => this.closing);
      }
    } catch (error) {
      this.policy.report(new Error(`consuming ${this.options.stream}/${this.options.durable} stopped: ${describeError(error)}`));
    }
  }

  /**
   * Runs the handler for a delivery. While it runs, the delivery is kept alive (`working`, well within ack_wait),
   * so a slow handler is not redelivered; a redelivery that arrives anyway (it was already on its way) does not run
   * the handler again and is not counted as an attempt: it is settled together with the first delivery.
   */
  private async handle(delivery: JsMsg): Promise<void> {
    const seq = delivery.seq;
    const running = this.running.get(seq);
    if (running !== undefined) {
      running.push(delivery);
      this.overlaps.set(seq, (this.overlaps.get(seq) ?? 0) + 1);
      this.settle(() => delivery.working());
      return;
    }
    const deliveries = [delivery];
    this.running.set(seq, deliveries);
    const keepAlive = setInterval(
      () => {
        for (const d of deliveries) this.settle(() => d.working());
      },
      // A keep-alive is a hint: a long ack_wait's is capped to what a timer holds (it would overflow to 1 ms).
      hintDelay(Math.max(100, Math.floor(this.ackWaitMs / 3))),
    );
    keepAlive.unref();
    try {
      await this.handleDeliveries(deliveries);
    } finally {
      clearInterval(keepAlive);
      this.running.delete(seq);
    }
  }

  private async handleDeliveries(deliveries: JsMsg[]): Promise<void> {
    const delivery = deliveries[0]!;
    const headers = textHeaders(delivery);
    const rawId = headers['Nats-Msg-Id'] || headers[OWN_HEADERS.id] || null;
    const message: InboxMessage = {
      id: rawId ?? '',
      topic: headers[OWN_HEADERS.topic] ?? delivery.subject,
      key: headers[OWN_HEADERS.key] ?? null,
      payload: Buffer.from(delivery.data),
      contentType: headers['Content-Type'] ?? null,
      headers,
      attempt: Math.max(1, delivery.info.deliveryCount - (this.overlaps.get(delivery.seq) ?? 0)),
    };
    await this.policy.deliver({
      message,
      id: rawId,
      settlement: {
        ack: () => this.settleAll(deliveries, (d) => d.ack()),
        // No reason text: servers before 2.10 do not recognise "+TERM <reason>" and would leave the message pending.
        drop: () => this.settleAll(deliveries, (d) => d.term()),
        retry: async (delayMs) => {
          this.settleAll(deliveries, (d) => d.nak(delayMs), false);
          return true;
        },
      },
    });
  }

  /**
   * Settles every delivery of one message the same way. `final` (ack, term) forgets its overlap count; after a nak
   * the message comes back and its count still corrects the delivery count.
   */
  private settleAll(deliveries: readonly JsMsg[], send: (delivery: JsMsg) => void, final = true): void {
    for (const delivery of deliveries) this.settle(() => send(delivery));
    const seq = deliveries[0]!.seq;
    if (final) this.overlaps.delete(seq);
    else if (this.overlaps.size > MAX_OVERLAP_ENTRIES) this.overlaps.delete(this.overlaps.keys().next().value!);
  }

  /** Acks, naks and terms are fire-and-forget; on a closed connection JetStream redelivers and the inbox dedupes. */
  private settle(send: () => void): void {
    try {
      send();
    } catch {
      // The connection is closed.
    }
  }
}

/**
 * A NATS JetStream consumer that processes each message id once through the inbox; call `start()`.
 *
 * @example
 * ```ts
 * import { createInbox } from 'txoutbox';
 * import { createNatsInboxConsumer } from 'txoutbox/inbox/nats';
 *
 * const consumer = createNatsInboxConsumer({
 *   servers: 'nats://localhost:4222',
 *   stream: 'ORDERS',
 *   durable: 'billing', // created (explicit acks) when missing; ids are recorded under its name
 *   db, // your Kysely instance, on the database of your tables and the inbox
 *   inbox: createInbox({ dialect: 'postgres' }),
 *   handler: async (message, trx) => {
 *     await trx.insertInto('invoices').values({ message_id: message.id, order_key: message.key }).execute();
 *   },
 *   maxAttempts: 5, // then a row in the inbox's dead-letter table, and term()
 * });
 * consumer.on('retrying', ({ message, delayMs }) => console.warn(`${message.id} failed, again in ${delayMs} ms`));
 * await consumer.start();
 * process.once('SIGTERM', () => void consumer.close()); // lets the handlers in flight commit and ack
 * ```
 */
export function createNatsInboxConsumer<DB>(options: NatsInboxConsumerOptions<DB>): NatsInboxConsumer<DB> {
  return new NatsInboxConsumer(options);
}
