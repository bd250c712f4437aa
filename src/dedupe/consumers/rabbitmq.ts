import { OWN_HEADERS } from '../../brokers/headers.js';
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import amqp from 'amqplib';
import type { ChannelModel, ConfirmChannel, ConsumeMessage, Message, Options as AmqpOptions, SocketOptions } from 'amqplib';
import { z } from 'zod';
import { parseOptions } from '../../config.js';
import { TxOutboxError } from '../../errors.js';
import { setLongTimeout, type LongTimer } from '../../timers.js';
import type { InboxMessage } from '../message.js';
import {
  DeliveryPolicy,
  describeError,
  InFlight,
  sharedOptionShape,
  type InboxConsumerEvents,
  type InboxConsumerOptions,
} from './core.js';

export interface RabbitMqInboxConsumerOptions<DB> extends InboxConsumerOptions<DB> {
  /** amqp:// or amqps:// URL. */
  url: string;
  /** Passed to amqplib's connect (TLS, keepAlive, ...). Reconnection is the consumer's own. */
  socketOptions?: SocketOptions;
  /** The durable queue to consume; it must exist (declare it with the producer's topology or your own). */
  queue: string;
  /** The name the inbox records ids under. Default: the queue's name. */
  consumer?: string;
  /** Unacked messages in flight, i.e. handlers running at once. Default 10. */
  prefetch?: number;
  /**
   * Type of the retry queues `<queue>.retry.<delay>ms`. Default 'quorum', dead-lettering back at-least-once (a
   * classic queue dead-letters at-most-once: a message can be lost if the work queue is unavailable right then).
   */
  retryQueueType?: 'quorum' | 'classic';
  /** First pause before reconnecting after the connection drops; doubles up to 30 s. Default 500 ms. */
  reconnectDelayMs?: number;
}

/** Failed attempts so far, carried by a message on its way through a retry queue. */
export const ATTEMPTS_HEADER = 'txoutbox-inbox-attempts';
/** The last failure, for whoever looks into a retry queue. */
export const LAST_ERROR_HEADER = 'txoutbox-inbox-last-error';
/** Headers RabbitMQ adds when it dead-letters or redelivers; not copied to a retried message (they only grow). */
const DEATH_HEADERS = /^x-(death|first-death-|last-death-|delivery-count)/;
/**
 * Marks one copy sent to a retry queue, so a copy RabbitMQ returns as unroutable (the retry queue was deleted) is
 * matched to its publish. Not shown to handlers.
 */
const MOVE_HEADER = 'txoutbox-inbox-move';
const MAX_QUEUE_NAME = 255;

const optionsSchema = z
  .object({
    ...sharedOptionShape,
    url: z.string().refine((value) => /^amqps?:\/\/[^/]/i.test(value), 'url must be an amqp:// or amqps:// URL with a host'),
    socketOptions: z
      .record(z.string(), z.unknown())
      .refine((value) => !('recovery' in value), 'socketOptions.recovery is not supported: the consumer reconnects by itself')
      .optional(),
    queue: z
      .string()
      .min(1, 'queue must not be empty')
      .refine((value) => Buffer.byteLength(value) <= MAX_QUEUE_NAME - 20, 'queue must leave room for the retry queue suffix'),
    prefetch: z.number().int().min(1).max(65_535).default(10),
    retryQueueType: z.enum(['quorum', 'classic']).default('quorum'),
    reconnectDelayMs: z.number().int().min(1).default(500),
  })
  .strict();

type Resolved = z.output<typeof optionsSchema>;

interface Session {
  model: ChannelModel;
  channel: ConfirmChannel;
  consumerTag: string | null;
  dead: boolean;
  /** Copies published and not yet confirmed, by MOVE_HEADER: null, or why RabbitMQ returned the copy. */
  moves: Map<string, string | null>;
}

const noop = () => {};

/** A non-negative count from a header, 0 when absent or malformed. */
function count(value: string | undefined): number {
  const parsed = Number.parseInt(value ?? '0', 10);
  return Number.isFinite(parsed) && parsed > 0 ? parsed : 0;
}

/** A message's headers as text; AMQP allows other types, which are stringified. */
function textHeaders(raw: Record<string, unknown> | undefined): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(raw ?? {})) {
    if (value === undefined || value === null || DEATH_HEADERS.test(name) || name === MOVE_HEADER) continue;
    headers[name] = Buffer.isBuffer(value)
      ? value.toString('utf8')
      : typeof value === 'object'
        ? JSON.stringify(value)
        : String(value);
  }
  return headers;
}

/**
 * Consumes a RabbitMQ queue and runs each message's handler once per id, through the inbox, acking only after the
 * handler's transaction committed. A failing message is republished to a retry queue whose TTL sends it back to the
 * work queue after the delay (the original is acked only once the copy is confirmed), so it never blocks the queue;
 * after `maxAttempts` it is written to the inbox's dead-letter table and acked.
 */
export class RabbitMqInboxConsumer<DB> extends EventEmitter<InboxConsumerEvents> {
  readonly consumer: string;
  private readonly options: Resolved;
  private readonly policy: DeliveryPolicy;
  private readonly inFlight = new InFlight();
  private session: Session | null = null;
  private started = false;
  private closing = false;
  private reconnectTimer: LongTimer | null = null;
  private reconnectDelay: number;

  constructor(options: RabbitMqInboxConsumerOptions<DB>) {
    super();
    this.options = parseOptions(optionsSchema, options, 'createRabbitMqInboxConsumer');
    this.consumer = this.options.consumer ?? this.options.queue;
    this.reconnectDelay = this.options.reconnectDelayMs;
    this.policy = new DeliveryPolicy(
      this,
      { ...this.options, consumer: this.consumer },
      {
        source: 'rabbitmq',
        destination: this.options.queue,
        neverSettled: { because: 'the consumer died while handling it each time' },
      },
    );
  }

  /** Connects, declares the retry queues and starts consuming; throws when that fails (e.g. no such queue). */
  async start(): Promise<void> {
    if (this.started) return;
    if (this.closing) throw new TxOutboxError('This RabbitMQ inbox consumer is closed.', 'TXOUTBOX_CLOSED');
    this.started = true;
    try {
      await this.connect();
    } catch (error) {
      this.started = false;
      throw error;
    }
  }

  /** Stops taking messages, waits for the handlers in flight (they commit and ack), then closes the connection. */
  async close(): Promise<void> {
    this.closing = true;
    this.reconnectTimer?.clear();
    const session = this.session;
    if (session !== null && !session.dead && session.consumerTag !== null) {
      await session.channel.cancel(session.consumerTag).catch(noop);
    }
    await this.inFlight.settled();
    this.session = null;
    if (session !== null && !session.dead) {
      // The channel first: its CloseOk means RabbitMQ has handled every ack sent on it. Closing only the connection
      // can requeue messages whose ack was the last thing written.
      await session.channel.close().catch(noop);
      await session.model.close().catch(noop);
    }
  }

  /** The retry queue for a delay: its TTL dead-letters messages back to the work queue through the default exchange. */
  retryQueueFor(delayMs: number): string {
    return `${this.options.queue}.retry.${delayMs}ms`;
  }

  private async connect(): Promise<void> {
    const model = await amqp.connect(this.options.url, this.options.socketOptions as SocketOptions | undefined);
    let session: Session | null = null;
    // Listeners first: an unheard 'error' would crash the process. 'close' follows every connection error.
    model.on('error', (error: Error) => this.policy.report(new Error(`RabbitMQ connection error: ${error.message}`)));
    model.on('close', () => {
      if (session !== null) this.onClosed(session);
    });
    try {
      const channel = await model.createConfirmChannel();
      const moves = new Map<string, string | null>();
      channel.on('error', (error: Error) => this.policy.report(new Error(`RabbitMQ channel error: ${error.message}`)));
      // A mandatory publish that routes nowhere comes back before its confirm, and the confirm alone says "ok".
      channel.on('return', (returned: Message) => markReturned(moves, returned));
      channel.on('close', () => {
        // A channel closed by the server (e.g. the queue was deleted) leaves the connection up: start over.
        if (session !== null && !session.dead) void model.close().catch(noop);
      });
      await channel.checkQueue(this.options.queue).catch((error: unknown) => {
        throw new TxOutboxError(
          `The RabbitMQ queue '${this.options.queue}' cannot be consumed (${describeError(error).split('\n')[0]}); declare it first.`,
          'TXOUTBOX_NO_QUEUE',
          { cause: error },
        );
      });
      for (const delay of new Set(this.options.retryDelaysMs)) {
        await channel.assertQueue(this.retryQueueFor(delay), { durable: true, arguments: this.retryQueueArguments(delay) });
      }
      await channel.prefetch(this.options.prefetch);
      // From here on a dropped connection is reconnected; a connect that fails before this point is not.
      const live: Session = { model, channel, consumerTag: null, dead: false, moves };
      session = live;
      this.session = live;
      const { consumerTag } = await channel.consume(this.options.queue, (message) => this.onDelivery(live, message), {
        noAck: false,
      });
      live.consumerTag = consumerTag;
      this.reconnectDelay = this.options.reconnectDelayMs;
    } catch (error) {
      if (session !== null) (session as Session).dead = true;
      if (this.session === session) this.session = null;
      await model.close().catch(noop);
      throw error;
    }
  }

  private retryQueueArguments(delay: number): Record<string, unknown> {
    const back = { 'x-message-ttl': delay, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': this.options.queue };
    return this.options.retryQueueType === 'quorum'
      ? { ...back, 'x-queue-type': 'quorum', 'x-dead-letter-strategy': 'at-least-once', 'x-overflow': 'reject-publish' }
      : back;
  }

  private onClosed(session: Session): void {
    const wasCurrent = this.session === session;
    session.dead = true;
    if (wasCurrent) this.session = null;
    // Only the current session reconnects: a connect that failed half-way is retried by whoever started it.
    if (this.closing || !wasCurrent) return;
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.reconnectTimer !== null || this.closing) return;
    const delay = this.reconnectDelay;
    this.reconnectDelay = Math.min(30_000, delay * 2);
    // reconnectDelayMs is the user's, unbounded: long-armed, or a long one would reconnect after 1 ms.
    this.reconnectTimer = setLongTimeout(() => {
      this.reconnectTimer = null;
      if (this.closing) return;
      this.connect().catch((error: unknown) => {
        this.policy.report(new Error(`reconnecting to RabbitMQ failed: ${describeError(error).split('\n')[0]}`));
        this.scheduleReconnect();
      });
    }, delay);
  }

  private onDelivery(session: Session, delivery: ConsumeMessage | null): void {
    if (delivery === null) {
      // The server cancelled the consumer (queue deleted): reconnect, which fails loudly until the queue is back.
      this.policy.report(new Error(`RabbitMQ cancelled the consumer of '${this.options.queue}'`));
      if (!session.dead) void session.model.close().catch(noop);
      return;
    }
    this.inFlight.track(this.handle(session, delivery).catch((error: unknown) => this.policy.report(error)));
  }

  private async handle(session: Session, delivery: ConsumeMessage): Promise<void> {
    const headers = textHeaders(delivery.properties.headers);
    const rawId: unknown = delivery.properties.messageId ?? headers[OWN_HEADERS.id];
    const id = typeof rawId === 'string' ? rawId : null;
    const failedBefore = count(headers[ATTEMPTS_HEADER]);
    // Quorum queues count deliveries that were requeued unsettled (a consumer that died mid-handler): they count as
    // attempts too, so a message that crashes its consumer every time is still bounded.
    const unsettledBefore = count(String(delivery.properties.headers?.['x-delivery-count'] ?? '0'));
    const message: InboxMessage = {
      id: id ?? '',
      topic: headers[OWN_HEADERS.topic] ?? delivery.fields.routingKey,
      key: headers[OWN_HEADERS.key] ?? null,
      payload: delivery.content,
      contentType: typeof delivery.properties.contentType === 'string' ? delivery.properties.contentType : null,
      headers,
      attempt: failedBefore + unsettledBefore + 1,
    };
    await this.policy.deliver({
      message,
      id,
      settlement: {
        ack: () => this.ack(session, delivery),
        drop: () => this.ack(session, delivery),
        retry: (delayMs, attempts, error) => this.retry(session, delivery, delayMs, attempts, error),
      },
    });
  }

  /** Sends a copy through the retry queue for the delay; the original is acked once the copy is confirmed. */
  private async retry(
    session: Session,
    delivery: ConsumeMessage,
    delayMs: number,
    attempts: number,
    error: string | null,
  ): Promise<boolean> {
    const headers: Record<string, string> = { [ATTEMPTS_HEADER]: String(attempts) };
    if (error !== null) headers[LAST_ERROR_HEADER] = error.split('\n')[0]!.slice(0, 1000);
    try {
      await this.republish(session, this.retryQueueFor(delayMs), delivery, headers);
    } catch (publishError) {
      // Not moved: leave it unacked. If the channel died RabbitMQ requeues it; otherwise requeue it after the delay.
      // Without a handler's error it was a dead-letter write that failed, and that is reported already.
      if (error !== null) {
        this.policy.report(new Error(`could not move a failed message to its retry queue: ${describeError(publishError)}`));
      }
      this.nackLater(session, delivery, delayMs);
      return false;
    }
    this.ack(session, delivery);
    return true;
  }

  private republish(
    session: Session,
    queue: string,
    delivery: ConsumeMessage,
    extraHeaders: Record<string, string>,
  ): Promise<void> {
    const p = delivery.properties;
    const headers: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(p.headers ?? {})) if (!DEATH_HEADERS.test(name)) headers[name] = value;
    Object.assign(headers, extraHeaders);
    const token = randomUUID();
    headers[MOVE_HEADER] = token;
    // Mandatory: a copy no queue takes is returned, and counts as not moved (the original stays unacked).
    const options: AmqpOptions.Publish = { persistent: true, mandatory: true, headers };
    // Copied property by property: userId would have to match this connection's user, expiration would restart.
    if (typeof p.contentType === 'string') options.contentType = p.contentType;
    if (typeof p.contentEncoding === 'string') options.contentEncoding = p.contentEncoding;
    if (typeof p.priority === 'number') options.priority = p.priority;
    if (typeof p.correlationId === 'string') options.correlationId = p.correlationId;
    if (typeof p.replyTo === 'string') options.replyTo = p.replyTo;
    if (typeof p.messageId === 'string') options.messageId = p.messageId;
    if (typeof p.timestamp === 'number') options.timestamp = p.timestamp;
    if (typeof p.type === 'string') options.type = p.type;
    if (typeof p.appId === 'string') options.appId = p.appId;
    return new Promise<void>((resolve, reject) => {
      try {
        session.moves.set(token, null);
        session.channel.publish('', queue, delivery.content, options, (error: unknown) => {
          const returned = session.moves.get(token) ?? null;
          session.moves.delete(token);
          if (error !== null && error !== undefined) reject(error instanceof Error ? error : new Error(String(error)));
          else if (returned !== null) reject(new Error(returned));
          else resolve();
        });
      } catch (error) {
        session.moves.delete(token);
        reject(error instanceof Error ? error : new Error(String(error)));
      }
    });
  }

  private ack(session: Session, delivery: ConsumeMessage): void {
    try {
      session.channel.ack(delivery);
    } catch {
      // The channel is gone: RabbitMQ redelivers the message and the inbox reports it as a duplicate.
    }
  }

  private nackLater(session: Session, delivery: ConsumeMessage, delayMs: number): void {
    // retryDelaysMs are capped at a day by the options; long-armed all the same, so no delay can overflow to 1 ms.
    setLongTimeout(() => {
      try {
        session.channel.nack(delivery, false, true);
      } catch {
        // The channel is gone, which requeued the message already.
      }
    }, delayMs).unref();
  }
}

/** Notes why RabbitMQ returned a copy, for its publish's confirm callback. */
function markReturned(moves: Map<string, string | null>, message: Message): void {
  const token: unknown = message.properties.headers?.[MOVE_HEADER];
  if (typeof token !== 'string' || !moves.has(token)) return;
  const { replyCode, replyText, routingKey } = message.fields as typeof message.fields & {
    replyCode?: number;
    replyText?: string;
  };
  moves.set(
    token,
    `unroutable: RabbitMQ returned the copy (${replyCode ?? '?'} ${replyText ?? ''}): no queue '${routingKey}'. ` +
      'Restart the consumer to declare its retry queues again.',
  );
}

/**
 * A RabbitMQ consumer that processes each message id once through the inbox; call `start()`.
 *
 * @example
 * ```ts
 * import { sql } from 'kysely';
 * import { createInbox } from 'txoutbox';
 * import { createRabbitMqInboxConsumer } from 'txoutbox/inbox/rabbitmq';
 *
 * const consumer = createRabbitMqInboxConsumer({
 *   url: 'amqp://localhost',
 *   queue: 'orders.placed', // must exist; ids are recorded under its name unless `consumer` is given
 *   db, // your Kysely instance, on the database of your tables and the inbox
 *   inbox: createInbox({ dialect: 'postgres' }),
 *   // Runs in the transaction that records the id: both commit, or neither and the message comes back.
 *   handler: async (message, trx) => {
 *     const order = JSON.parse(message.payload.toString('utf8')) as { customer: string };
 *     await sql`UPDATE customers SET orders = orders + 1 WHERE id = ${order.customer}`.execute(trx);
 *   },
 * });
 * consumer.on('dead', (letter) => console.error(`${letter.messageId} dead-lettered: ${letter.error}`));
 * await consumer.start();
 * process.once('SIGTERM', () => void consumer.close()); // lets the handlers in flight commit and ack
 * ```
 */
export function createRabbitMqInboxConsumer<DB>(options: RabbitMqInboxConsumerOptions<DB>): RabbitMqInboxConsumer<DB> {
  return new RabbitMqInboxConsumer(options);
}
