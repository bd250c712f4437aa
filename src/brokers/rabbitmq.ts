import amqp from 'amqplib';
import type { Channel, ChannelModel, ConfirmChannel, Message, Options as AmqpOptions, SocketOptions } from 'amqplib';
import { z } from 'zod';
import { parseOptions } from '../config.js';
import { setLongTimeout, type LongTimer } from '../timers.js';
import { onAbort } from './abort.js';
import type { Broker, OutgoingMessage, PublishContext, PublishOutcome } from './broker.js';
import { errorText } from './errors.js';
import { txoutboxHeaders } from './headers.js';
import { OK, permanent, retryable, unreachable } from './outcomes.js';
import { ownEntry, type MessageRouter, type Route } from './route.js';

/** Where one message goes: an exchange ('' is RabbitMQ's default exchange, which routes by queue name) and a routing key. */
export interface RabbitMqRoute {
  exchange: string;
  routingKey: string;
}

/** A route with parts left out: a missing exchange is the adapter's `exchange`, a missing routing key is the topic. */
export interface RabbitMqRouteSpec {
  exchange?: string;
  routingKey?: string;
}

export interface RabbitMqQueueDeclaration {
  name: string;
  /** 'classic' (default) or 'quorum' (replicated, always durable; the choice for data you cannot lose). */
  type?: 'classic' | 'quorum';
  /** Default true: a non-durable queue loses its messages when the broker restarts, even after a confirm. */
  durable?: boolean;
  /** Queue arguments, e.g. `{ 'x-max-length': 10000, 'x-overflow': 'reject-publish' }`. */
  arguments?: Record<string, unknown>;
}

export interface RabbitMqExchangeDeclaration {
  name: string;
  type: 'direct' | 'topic' | 'fanout' | 'headers';
  /** Default true. */
  durable?: boolean;
  arguments?: Record<string, unknown>;
}

export interface RabbitMqBindingDeclaration {
  queue: string;
  exchange: string;
  /** Default '' (what fanout and headers exchanges use). */
  routingKey?: string;
  arguments?: Record<string, unknown>;
}

/** Declared (idempotently) on every connection, before anything is published on it. */
export interface RabbitMqTopology {
  exchanges?: RabbitMqExchangeDeclaration[];
  queues?: RabbitMqQueueDeclaration[];
  bindings?: RabbitMqBindingDeclaration[];
}

export interface RabbitMqBrokerOptions {
  /** amqp:// or amqps:// URL, e.g. amqp://user:pass@host:5672/vhost?heartbeat=30. */
  url: string;
  /** Passed to amqplib's connect (TLS, keepAlive, clientProperties, ...). Reconnection is the adapter's own. */
  socketOptions?: SocketOptions;
  /** Exchange for topics without a route. Default '' (the default exchange: routing key = topic = queue name). */
  exchange?: string;
  /** Per-topic routes; they win over `route`. */
  routes?: Record<string, RabbitMqRouteSpec>;
  /** Route for topics not in `routes`; return undefined for the default. Must be deterministic: a throw is permanent. */
  route?: (message: OutgoingMessage) => RabbitMqRouteSpec | undefined;
  /** Queues, exchanges and bindings to declare on connect. */
  topology?: RabbitMqTopology;
  /** Gives up a connection attempt (TCP + AMQP handshake) after this long. Default 10 s. */
  connectTimeoutMs?: number;
  /** Safety net behind the relay's deadline: stop waiting for a confirm after this long. Default 30 s. */
  confirmTimeoutMs?: number;
  /** Frames a channel buffers before publish returns false and the adapter waits for 'drain'. Default amqplib's 1024. */
  highWaterMark?: number;
  /** The broker's name in logs and errors. Default 'rabbitmq'. */
  name?: string;
}

const MAX_SHORTSTR = 255;
const shortName = (what: string) =>
  z.string().refine((value) => Buffer.byteLength(value) <= MAX_SHORTSTR, `${what} must be at most ${MAX_SHORTSTR} bytes`);
const declaredName = (what: string) =>
  shortName(what)
    .refine((value) => value.length > 0, `${what} must not be empty`)
    .refine((value) => !value.startsWith('amq.'), `${what} must not start with 'amq.' (reserved by RabbitMQ)`);
const argumentsSchema = z.record(z.string(), z.unknown()).optional();
const routeSpecSchema = z
  .object({ exchange: shortName('exchange').optional(), routingKey: shortName('routingKey').optional() })
  .strict();

const optionsSchema = z
  .object({
    url: z
      .string()
      .refine(
        (value) => /^amqps?:\/\/[^/]/i.test(value),
        'url must be an amqp:// or amqps:// URL with a host (e.g. amqp://127.0.0.1:5672)',
      ),
    socketOptions: z
      .record(z.string(), z.unknown())
      .refine((value) => !('recovery' in value), 'socketOptions.recovery is not supported: the adapter reconnects by itself')
      .optional(),
    exchange: shortName('exchange').default(''),
    routes: z.record(z.string(), routeSpecSchema).optional(),
    route: z
      .custom<(message: OutgoingMessage) => RabbitMqRouteSpec | undefined>(
        (value) => typeof value === 'function',
        'route must be a function',
      )
      .optional(),
    topology: z
      .object({
        exchanges: z
          .array(
            z
              .object({
                name: declaredName('exchange name'),
                type: z.enum(['direct', 'topic', 'fanout', 'headers']),
                durable: z.boolean().default(true),
                arguments: argumentsSchema,
              })
              .strict(),
          )
          .default([]),
        queues: z
          .array(
            z
              .object({
                name: declaredName('queue name'),
                type: z.enum(['classic', 'quorum']).default('classic'),
                durable: z.boolean().default(true),
                arguments: argumentsSchema,
              })
              .strict()
              .refine(
                (queue) => queue.type !== 'quorum' || queue.durable,
                'a quorum queue is always durable; drop durable: false',
              ),
          )
          .default([]),
        bindings: z
          .array(
            z
              .object({
                queue: declaredName('binding queue'),
                exchange: declaredName('binding exchange'),
                routingKey: shortName('binding routingKey').default(''),
                arguments: argumentsSchema,
              })
              .strict(),
          )
          .default([]),
      })
      .strict()
      .default({ exchanges: [], queues: [], bindings: [] }),
    connectTimeoutMs: z.number().int().min(1).default(10_000),
    confirmTimeoutMs: z.number().int().min(1).default(30_000),
    highWaterMark: z.number().int().min(1).optional(),
    name: z.string().min(1).default('rabbitmq'),
  })
  .strict();

type ResolvedOptions = z.output<typeof optionsSchema>;

function resolveOptions(options: RabbitMqBrokerOptions): ResolvedOptions {
  return parseOptions(optionsSchema, options, 'createRabbitMqBroker');
}

const noop = () => {};

/** Thrown by Deadline.race when the caller aborted or the confirm timeout passed. */
class Expired extends Error {}

/**
 * One deadline for a whole batch: the caller's signal or our own confirm timeout, whichever comes first. It keeps
 * its own waiter set rather than one abort listener per message, so a batch of thousands adds one listener.
 */
class Deadline {
  reason: string | null = null;
  private readonly waiters = new Set<() => void>();
  private readonly timer: LongTimer;
  private readonly stopListening: () => void;

  constructor(signal: AbortSignal, timeoutMs: number) {
    // confirmTimeoutMs has no upper bound: long-armed, so a long one does not expire every batch at once.
    this.timer = setLongTimeout(() => this.expire(`no confirm from RabbitMQ within ${timeoutMs} ms`), timeoutMs);
    this.stopListening = onAbort(signal, () => this.expire('aborted by the caller'));
  }

  /** Settles like `promise`, or rejects with Expired once the deadline passes (the promise is then left to itself). */
  race<T>(promise: Promise<T>): Promise<T> {
    if (this.reason !== null) {
      promise.catch(noop);
      return Promise.reject(new Expired(this.reason));
    }
    return new Promise<T>((resolve, reject) => {
      const onExpire = () => reject(new Expired(this.reason ?? 'expired'));
      this.waiters.add(onExpire);
      promise.then(
        (value) => (this.waiters.delete(onExpire), resolve(value)),
        (error: unknown) => (this.waiters.delete(onExpire), reject(error)),
      );
    });
  }

  dispose(): void {
    this.timer.clear();
    this.stopListening();
    this.waiters.clear();
  }

  private expire(reason: string): void {
    if (this.reason !== null) return;
    this.reason = reason;
    this.timer.clear();
    for (const waiter of this.waiters) waiter();
    this.waiters.clear();
  }
}

/** A message written to a channel and not yet confirmed; `returned` is set when RabbitMQ sent it back unroutable. */
interface Unconfirmed {
  messageId: string;
  returned: string | null;
}

/**
 * A confirm channel for one exchange. One channel per exchange, because RabbitMQ closes a channel (404) when a
 * publish names a missing exchange: every message still unconfirmed on it then went to that same missing exchange,
 * so they can all be reported permanent, and other exchanges' traffic is not disturbed.
 */
class PublishChannel {
  closed = false;
  /** What every message unconfirmed when the channel closes gets; set from the channel's 'error' (a server close). */
  private failure: PublishOutcome | null = null;
  private writable = true;
  /** Sends waiting for room in the channel's buffer, served in order, one at a time. */
  private readonly line: { wake: () => void; woken: boolean; cancelled: boolean }[] = [];
  /** A waiter was woken and has not written yet: the turn is its, even if another send arrives in between. */
  private handedOver = false;
  private readonly unconfirmed: Unconfirmed[] = [];

  constructor(
    readonly exchange: string,
    private readonly channel: ConfirmChannel,
    private readonly link: Link,
    onClose: () => void,
  ) {
    // Listeners go on before anything can be emitted: an 'error' without a listener would crash the process.
    channel.on('error', (error: Error) => this.onServerClose(error));
    channel.on('close', () => {
      this.closed = true;
      this.wakeNext();
      onClose();
    });
    channel.on('drain', () => {
      this.writable = true;
      this.wakeNext();
    });
    channel.on('return', (message: Message) => this.onReturn(message));
  }

  async send(message: OutgoingMessage, route: RabbitMqRoute, deadline: Deadline): Promise<PublishOutcome> {
    // No await when the channel is free: checking for room and writing must not be split by other sends.
    const waiting = this.waitForTurn(deadline);
    if (waiting !== null) await waiting;
    this.handedOver = false;
    const entry: Unconfirmed = { messageId: message.id, returned: null };
    let settle!: (outcome: PublishOutcome) => void;
    const confirmed = new Promise<PublishOutcome>((resolve) => (settle = resolve));
    try {
      if (this.closed) return this.failure ?? retryable('the RabbitMQ channel closed before the message was sent');
      if (this.link.blocked !== null) return unreachable(`RabbitMQ is blocking publishers (${this.link.blocked}); not sent`);
      const writable = this.channel.publish(
        route.exchange,
        route.routingKey,
        message.payload,
        publishOptions(message),
        (error: unknown) => settle(this.onConfirm(entry, error)),
      );
      this.unconfirmed.push(entry);
      if (!writable) this.writable = false;
    } catch (error) {
      // A closed channel throws IllegalOperationError; anything else is amqplib refusing to encode the message
      // (routing key over 255 bytes, headers over 64 KiB), which no retry can change.
      if (this.closed || (error instanceof Error && error.name === 'IllegalOperationError')) {
        return retryable(`the RabbitMQ channel closed before the message was sent: ${errorText(error)}`);
      }
      return permanent(`RabbitMQ cannot take this message as it is: ${errorText(error)}`);
    } finally {
      this.wakeNext();
    }
    try {
      return await deadline.race(confirmed);
    } catch (error) {
      if (error instanceof Expired)
        return retryable(`${error.message} before RabbitMQ confirmed (outcome unknown; resent with the same id)`);
      throw error;
    }
  }

  private onConfirm(entry: Unconfirmed, error: unknown): PublishOutcome {
    const index = this.unconfirmed.indexOf(entry);
    if (index >= 0) this.unconfirmed.splice(index, 1);
    // A return comes before the message's ack (or the channel's close): it was routed to no queue, so nothing holds it.
    if (entry.returned !== null) return permanent(entry.returned);
    if (error === null || error === undefined) return OK;
    if (this.failure !== null) return this.failure;
    if (errorText(error) === 'message nacked') {
      return retryable(
        'RabbitMQ nacked the message: not stored (e.g. a full queue with overflow reject-publish, or a queue failure)',
      );
    }
    return retryable(
      `the RabbitMQ channel closed before the confirm (${errorText(error)}; outcome unknown, resent with the same id)`,
    );
  }

  private onReturn(message: Message): void {
    const id: unknown = message.properties.messageId;
    // Returns arrive in publish order, so the oldest unreturned entry with this id is the one sent back.
    const entry = this.unconfirmed.find((candidate) => candidate.messageId === id && candidate.returned === null);
    if (entry === undefined) return;
    const { replyCode, replyText, exchange, routingKey } = message.fields as typeof message.fields & {
      replyCode?: number;
      replyText?: string;
    };
    entry.returned =
      `unroutable: RabbitMQ returned the message (${replyCode ?? '?'} ${replyText ?? ''}), no queue is bound to ` +
      `exchange '${exchange}' with routing key '${routingKey}'`;
  }

  private onServerClose(error: Error): void {
    const code = (error as Error & { code?: unknown }).code;
    // Only publishes to this channel's exchange go through it, so a 404/403 is about that exchange for every message on it.
    if (code === 404) this.failure = permanent(`RabbitMQ has no exchange '${this.exchange}': ${error.message}`);
    else if (code === 403)
      this.failure = permanent(`RabbitMQ refused publishing to exchange '${this.exchange}': ${error.message}`);
    else this.failure = retryable(`RabbitMQ closed the channel: ${error.message} (outcome unknown; resent with the same id)`);
  }

  /**
   * Back-pressure: once publish() said false, nothing more is written until the channel drains. Waiting sends
   * are woken one at a time (each wakes the next after writing), not all at once, which would cost O(n²) wake-ups.
   */
  private waitForTurn(deadline: Deadline): Promise<void> | null {
    if (this.closed || (this.writable && !this.handedOver && this.line.length === 0)) return null;
    let wake!: () => void;
    const turn = new Promise<void>((resolve) => (wake = resolve));
    const place = { wake, woken: false, cancelled: false };
    this.line.push(place);
    return deadline.race(turn).catch((error: unknown) => {
      place.cancelled = true;
      if (place.woken) {
        // Pass on a turn we were given but cannot use.
        this.handedOver = false;
        this.wakeNext();
      }
      throw error;
    });
  }

  private wakeNext(): void {
    if (this.handedOver) return;
    while (this.line.length > 0 && (this.writable || this.closed)) {
      const place = this.line.shift()!;
      if (place.cancelled) continue;
      place.woken = true;
      place.wake();
      if (!this.closed) {
        this.handedOver = true;
        return;
      }
      // A closed channel releases everyone, to fail fast.
    }
  }
}

function publishOptions(message: OutgoingMessage): AmqpOptions.Publish {
  return {
    // Persistent + mandatory is what makes the confirm mean "stored in every queue it routed to, and it routed somewhere".
    persistent: true,
    mandatory: true,
    messageId: message.id,
    contentType: message.contentType,
    timestamp: Math.floor(message.createdAt.getTime() / 1000),
    headers: { ...message.headers, ...txoutboxHeaders(message) },
  };
}

/** One AMQP connection and its per-exchange confirm channels. Once dead it stays dead; the adapter opens another. */
class Link {
  dead = false;
  blocked: string | null = null;
  private readonly channels = new Map<string, Promise<PublishChannel>>();

  constructor(
    readonly model: ChannelModel,
    private readonly highWaterMark: number | undefined,
  ) {
    // Always listened to: an unheard 'error' event crashes the process. 'close' follows every 'error'.
    model.on('error', () => {
      this.dead = true;
    });
    model.on('close', () => {
      this.dead = true;
      this.blocked = null;
    });
    model.on('blocked', (reason: string) => {
      this.blocked = reason || 'resource alarm';
    });
    model.on('unblocked', () => {
      this.blocked = null;
    });
  }

  channelFor(exchange: string): Promise<PublishChannel> {
    const existing = this.channels.get(exchange);
    if (existing !== undefined) return existing;
    // A closed (or never opened) channel is forgotten, so the next publish to its exchange opens a fresh one.
    const forget = () => {
      if (this.channels.get(exchange) === opening) this.channels.delete(exchange);
    };
    const opening = this.openChannel(exchange, forget);
    opening.catch(forget);
    this.channels.set(exchange, opening);
    return opening;
  }

  async close(): Promise<void> {
    if (this.dead) return;
    this.dead = true;
    // Closing the connection closes its channels; unconfirmed messages then settle as retryable.
    const closing = this.model.close().catch(noop);
    const timedOut = await Promise.race([closing.then(() => false), sleep(2000).then(() => true)]);
    if (timedOut) destroySocket(this.model);
  }

  private async openChannel(exchange: string, onClose: () => void): Promise<PublishChannel> {
    if (this.dead) throw new Error('the RabbitMQ connection is closed');
    const options = this.highWaterMark === undefined ? undefined : { highWaterMark: this.highWaterMark };
    return new PublishChannel(exchange, await this.model.createConfirmChannel(options), this, onClose);
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

/** Last resort when a close handshake gets no answer (a dead peer): drop the socket so nothing keeps the process alive. */
function destroySocket(model: ChannelModel): void {
  const stream = (model.connection as { stream?: { destroy?: () => void } }).stream;
  stream?.destroy?.();
}

/**
 * Publishes to RabbitMQ through per-exchange confirm channels. `ok` means RabbitMQ confirmed the message after
 * routing it to at least one queue (mandatory) and storing it as persistent in each: on disk for durable classic
 * queues, on a quorum of replicas for quorum queues.
 */
export class RabbitMqBroker implements Broker, MessageRouter<RabbitMqRoute> {
  readonly name: string;
  private readonly options: ResolvedOptions;
  private link: Link | null = null;
  private connecting: Promise<Link> | null = null;
  private closed = false;

  constructor(options: RabbitMqBrokerOptions) {
    this.options = resolveOptions(options);
    this.name = this.options.name;
  }

  /** Connects and declares the topology now, throwing on failure; optional (publish connects lazily). */
  async connect(): Promise<void> {
    await this.currentLink();
  }

  async publish(messages: readonly OutgoingMessage[], { signal }: PublishContext): Promise<PublishOutcome[]> {
    if (messages.length === 0) return [];
    const deadline = new Deadline(signal, this.options.confirmTimeoutMs);
    try {
      return await Promise.all(messages.map((message) => this.publishOne(message, deadline)));
    } finally {
      deadline.dispose();
    }
  }

  /**
   * Where a message goes: `routes[topic]`, else the `route` option's answer, else the adapter's exchange with the
   * topic as routing key. A `route` function that throws or answers something else than strings refuses the message.
   */
  route(message: OutgoingMessage): Route<RabbitMqRoute> {
    try {
      const spec = ownEntry(this.options.routes, message.topic) ?? this.options.route?.(message) ?? {};
      const to = { exchange: spec.exchange ?? this.options.exchange, routingKey: spec.routingKey ?? message.topic };
      if (typeof to.exchange !== 'string' || typeof to.routingKey !== 'string') {
        throw new Error('the route must give string exchange and routingKey');
      }
      return { to };
    } catch (error) {
      return { refused: `cannot route topic '${message.topic}': ${errorText(error)}` };
    }
  }

  /** Closes the connection; unconfirmed messages settle as retryable. A connect still in progress is closed when it lands. */
  async close(): Promise<void> {
    this.closed = true;
    const link = this.link;
    this.link = null;
    await link?.close();
  }

  private async publishOne(message: OutgoingMessage, deadline: Deadline): Promise<PublishOutcome> {
    const routed = this.route(message);
    if ('refused' in routed) return permanent(routed.refused);
    const route = routed.to;
    if (this.closed) return retryable('the RabbitMQ broker adapter is closed; not sent');
    let link: Link;
    let channel: PublishChannel;
    try {
      link = await deadline.race(this.currentLink());
      channel = await deadline.race(link.channelFor(route.exchange));
    } catch (error) {
      // The caller gave up (or the confirm timeout passed) while connecting: that alone says nothing of the broker.
      if (error instanceof Expired) return retryable(`${error.message} before the message was sent`);
      // The connection (or a channel) could not be opened: nothing about this message was tried.
      return unreachable(`cannot reach RabbitMQ: ${errorText(error)}; not sent`);
    }
    try {
      const outcome = await channel.send(message, route, deadline);
      // The connection went down under the message (RabbitMQ stopped, the network dropped): the broker's state.
      return outcome.status === 'retryable' && link.dead && !this.closed ? { ...outcome, unreachable: true } : outcome;
    } catch (error) {
      if (error instanceof Expired) return retryable(`${error.message} before the message was sent`);
      return retryable(`cannot reach RabbitMQ: ${errorText(error)}; not sent`);
    }
  }

  /** The live connection, or a new one (shared by every caller while it opens): reconnection is lazy, on demand. */
  private currentLink(): Promise<Link> {
    if (this.closed) return Promise.reject(new Error('the RabbitMQ broker adapter is closed'));
    if (this.link !== null && !this.link.dead) return Promise.resolve(this.link);
    if (this.connecting === null) {
      const connecting = this.openLink().then(
        (link) => {
          this.connecting = null;
          if (this.closed) {
            void link.close();
            throw new Error('the RabbitMQ broker adapter is closed');
          }
          this.link = link;
          return link;
        },
        (error: unknown) => {
          this.connecting = null;
          throw error;
        },
      );
      // Callers may have stopped waiting (their deadline passed): a failed attempt must not be an unhandled rejection.
      connecting.catch(noop);
      this.connecting = connecting;
    }
    return this.connecting;
  }

  private async openLink(): Promise<Link> {
    const socketOptions = {
      ...(this.options.socketOptions as SocketOptions | undefined),
      timeout: this.options.connectTimeoutMs,
    };
    const model = await amqp.connect(this.options.url, socketOptions);
    const link = new Link(model, this.options.highWaterMark);
    try {
      await this.declareTopology(model);
    } catch (error) {
      await link.close();
      throw new Error(`declaring the RabbitMQ topology failed: ${errorText(error)}`, { cause: error });
    }
    return link;
  }

  private async declareTopology(model: ChannelModel): Promise<void> {
    const { exchanges, queues, bindings } = this.options.topology;
    if (exchanges.length + queues.length + bindings.length === 0) return;
    const channel: Channel = await model.createChannel();
    // A failed declaration closes the channel with an 'error' event, which must have a listener.
    channel.on('error', noop);
    try {
      for (const exchange of exchanges) {
        await channel.assertExchange(exchange.name, exchange.type, { durable: exchange.durable, arguments: exchange.arguments });
      }
      for (const queue of queues) {
        const args = queue.type === 'quorum' ? { ...queue.arguments, 'x-queue-type': 'quorum' } : queue.arguments;
        await channel.assertQueue(queue.name, { durable: queue.durable, arguments: args });
      }
      for (const binding of bindings) {
        await channel.bindQueue(binding.queue, binding.exchange, binding.routingKey, binding.arguments);
      }
    } finally {
      await channel.close().catch(noop);
    }
  }
}

/**
 * A RabbitMQ adapter; see RabbitMqBrokerOptions. Throws ConfigError for bad options.
 *
 * @example
 * ```ts
 * import { createRelay } from 'txoutbox';
 * import { createRabbitMqBroker } from 'txoutbox/rabbitmq';
 *
 * const broker = createRabbitMqBroker({
 *   url: 'amqp://guest:guest@127.0.0.1:5672',
 *   // Topics without a route go to the queue of their name, through the default exchange.
 *   topology: {
 *     exchanges: [{ name: 'billing', type: 'direct' }],
 *     queues: [{ name: 'orders.created', type: 'quorum' }, { name: 'invoices', type: 'quorum' }],
 *     bindings: [{ queue: 'invoices', exchange: 'billing', routingKey: 'invoices' }],
 *   },
 *   routes: { 'billing.invoiced': { exchange: 'billing', routingKey: 'invoices' } },
 * });
 * const relay = createRelay({ db, dialect: 'postgres', broker });
 * ```
 */
export function createRabbitMqBroker(options: RabbitMqBrokerOptions): RabbitMqBroker {
  return new RabbitMqBroker(options);
}
