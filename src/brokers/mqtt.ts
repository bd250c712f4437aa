import { setMaxListeners } from 'node:events';
import { connect, type IClientOptions, type IClientPublishOptions, type IConnackPacket, type MqttClient } from 'mqtt';
import { z } from 'zod';
import { parseOptions } from '../config.js';
import { ConfigError } from '../errors.js';
import { abortReason, onAbort } from './abort.js';
import type { Broker, OutgoingMessage, PublishContext, PublishOutcome } from './broker.js';
import { errorText } from './errors.js';
import { txoutboxHeaders } from './headers.js';
import { OK, permanent, retryable } from './outcomes.js';
import { ownEntry, type MessageRouter, type Route } from './route.js';
import { publishPacketSize, type PublishProperties } from './mqtt/packet.js';
import { mqttStringProblem, mqttTopicProblem } from './mqtt/strings.js';

/** TLS material for `mqtts://` and `wss://` URLs (handed to Node's `tls.connect`). */
export interface MqttTlsOptions {
  ca?: string | Buffer | string[] | Buffer[];
  cert?: string | Buffer;
  key?: string | Buffer;
  passphrase?: string;
  /** Default true; turn it off only for a self-signed test broker. */
  rejectUnauthorized?: boolean;
  servername?: string;
}

export interface MqttBrokerOptions {
  /** `mqtt://`, `mqtts://`, `ws://` or `wss://` URL of the broker; a user and password may be in it. */
  url: string;
  username?: string;
  password?: string;
  /** Default: a random id per process. Never share one between running relays: the broker would kick one off. */
  clientId?: string;
  /** 1 (default): the PUBACK is the acknowledgement. 2: the PUBCOMP is. QoS 0 has no acknowledgement at all. */
  qos?: 1 | 2;
  /** txoutbox topic → MQTT topic. Looked up before `route`. */
  routes?: Readonly<Record<string, string>>;
  /** Computes the MQTT topic for a message (e.g. from its key); `undefined` means "no route". */
  route?: (topic: string, message: OutgoingMessage) => string | undefined;
  /** When true, a message with no route fails permanently (dead letter). Default false: the txoutbox topic is used as is. */
  strictRoutes?: boolean;
  /** Most unacknowledged publishes at once; the broker's Receive Maximum lowers it further. Default 1000. */
  maxInFlight?: number;
  /** Keep-alive interval; a dead connection is noticed after about 1.5 times this. Default 30. */
  keepaliveSeconds?: number;
  /** How long one connection attempt may take. Default 10 s. */
  connectTimeoutMs?: number;
  /** Pause between reconnection attempts. Default 1 s. */
  reconnectPeriodMs?: number;
  tls?: MqttTlsOptions;
  /** Sees connection errors (refused, lost, TLS). They never throw: publishes report them as retryable. */
  onError?: (error: Error) => void;
  /** The broker's name in relay errors and events. Default `mqtt`. */
  name?: string;
}

const bytes = z.union([z.string(), z.instanceof(Buffer)]);
const mqttTopic = z.string().refine((topic) => mqttTopicProblem(topic) === null, {
  error: (issue) => `"${String(issue.input)}" is not an MQTT topic name: it ${mqttTopicProblem(String(issue.input))}`,
});

const schema = z
  .object({
    url: z.string().refine(
      (url) => {
        try {
          return ['mqtt:', 'mqtts:', 'tcp:', 'tls:', 'ssl:', 'ws:', 'wss:'].includes(new URL(url).protocol);
        } catch {
          return false;
        }
      },
      { message: 'must be a URL such as mqtt://host:1883 (mqtt, mqtts, tcp, tls, ssl, ws or wss)' },
    ),
    username: z.string().optional(),
    password: z.string().optional(),
    clientId: z.string().min(1).max(65_535).optional(),
    qos: z.union([z.literal(1), z.literal(2)], { message: 'must be 1 or 2 (QoS 0 has no acknowledgement)' }).default(1),
    routes: z.record(z.string().min(1), mqttTopic).default({}),
    route: z
      .custom<NonNullable<MqttBrokerOptions['route']>>((value) => typeof value === 'function', 'must be a function')
      .optional(),
    strictRoutes: z.boolean().default(false),
    maxInFlight: z.number().int().min(1).max(65_535).default(1000),
    keepaliveSeconds: z.number().int().min(0).max(65_535).default(30),
    connectTimeoutMs: z.number().int().min(100).default(10_000),
    reconnectPeriodMs: z.number().int().min(10).default(1000),
    tls: z
      .object({
        ca: z.union([bytes, z.array(z.string()), z.array(z.instanceof(Buffer))]).optional(),
        cert: bytes.optional(),
        key: bytes.optional(),
        passphrase: z.string().optional(),
        rejectUnauthorized: z.boolean().optional(),
        servername: z.string().optional(),
      })
      .strict()
      .optional(),
    onError: z.custom<(error: Error) => void>((value) => typeof value === 'function', 'must be a function').optional(),
    name: z.string().min(1).max(100).default('mqtt'),
  })
  .strict()
  .refine((options) => !options.strictRoutes || Object.keys(options.routes).length > 0 || options.route !== undefined, {
    message: 'strictRoutes needs routes or a route function, or every message would be refused',
    path: ['strictRoutes'],
  });

type ResolvedOptions = z.output<typeof schema>;

/**
 * PUBACK/PUBREC reason codes ≥ 0x80 that describe the broker's state rather than the message, so a resend may
 * succeed. 0x80 "Unspecified error" is here too: with no reason given, a few retries are cheaper than a dead letter.
 */
const RETRYABLE_REASON_CODES = new Set([0x80, 0x88, 0x89, 0x8b, 0x91, 0x93, 0x96, 0x97]);

function classify(error: Error): PublishOutcome {
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'number' && code >= 0x80) {
    const text = `the MQTT broker refused the message: ${error.message.replace(/^Publish error: /, '')} (reason code 0x${code.toString(16)})`;
    return RETRYABLE_REASON_CODES.has(code) ? retryable(text) : permanent(text);
  }
  return retryable(`publish failed: ${error.message} (outcome unknown; resend with the same id)`);
}

interface Prepared {
  topic: string;
  properties: PublishProperties;
}

/**
 * Publishes outbox messages to an MQTT 5 broker with QoS 1 or 2. `ok` means the broker acknowledged the message
 * (PUBACK, or PUBCOMP for QoS 2): it accepted it, which is all MQTT can say. Whether it is on disk depends on the
 * broker's persistence, and a topic nobody subscribes to drops it. The message id, key, topic, attempt and headers
 * travel as user properties (`txoutbox-id`, `txoutbox-key`, `txoutbox-topic`, `txoutbox-attempt`, then the
 * headers as they are), the content type as the content-type property.
 */
export class MqttBroker implements Broker, MessageRouter<string> {
  readonly name: string;
  private readonly options: ResolvedOptions;
  private readonly client: MqttClient;
  /** True between mqtt.js's `connect` (sent after it has resent what it stored) and the next `close`. */
  private ready = false;
  private closed = false;
  private lastError: Error | null = null;
  private readonly readyWaiters = new Set<() => void>();
  private limit: number;
  private maximumPacketSize: number | undefined;
  private inFlight = 0;
  private readonly slotWaiters = new Set<() => void>();
  /** Message ids whose callers gave up while the publish was out; removed from mqtt.js's store once offline. */
  private readonly abandoned = new Set<number>();

  constructor(options: MqttBrokerOptions) {
    this.options = resolve(options);
    this.name = this.options.name;
    this.limit = this.options.maxInFlight;
    const { url, username, password, clientId, keepaliveSeconds, connectTimeoutMs, reconnectPeriodMs, tls } = this.options;
    const clientOptions: IClientOptions = {
      protocolVersion: 5,
      // A fresh session on every connection: the relay resends what was not acknowledged, with the same id, so a
      // broker-side session would only add a second resend path (and make dropping abandoned publishes unsafe).
      clean: true,
      keepalive: keepaliveSeconds,
      connectTimeout: connectTimeoutMs,
      reconnectPeriod: reconnectPeriodMs,
      // Without it a refused CONNACK (server busy, shutting down) would stop reconnecting for good.
      reconnectOnConnackError: true,
      ...(username !== undefined && { username }),
      ...(password !== undefined && { password }),
      ...(clientId !== undefined && { clientId }),
      // Passed on to tls.connect; given keys only, since an explicit undefined would override Node's defaults.
      ...(tls !== undefined &&
        (Object.fromEntries(Object.entries(tls).filter(([, value]) => value !== undefined)) as MqttTlsOptions)),
    };
    try {
      this.client = connect(url, clientOptions);
    } catch (error) {
      throw new ConfigError(`Invalid createMqttBroker options: url: ${(error as Error).message}`, { cause: error });
    }
    // An 'error' event without a listener would crash the process; connection errors only make publishes wait.
    this.client.on('error', (error) => {
      this.lastError = error;
      this.options.onError?.(error);
    });
    this.client.on('connect', (connack: IConnackPacket) => this.onConnect(connack));
    this.client.on('close', () => this.onClose());
  }

  /** Whether a connection is up and ready to publish. */
  get connected(): boolean {
    return this.ready;
  }

  async publish(messages: readonly OutgoingMessage[], { signal }: PublishContext): Promise<PublishOutcome[]> {
    // One listener on the caller's signal, fanned out to every message: a batch of 100 would otherwise trip Node's
    // "possible EventTarget memory leak" warning (more than 10 listeners on one signal).
    const batch = new AbortController();
    setMaxListeners(0, batch.signal);
    const stopForwarding = onAbort(signal, () => batch.abort(signal.reason));
    try {
      // A batch holds at most one message per key, so its messages can all be in flight at once.
      return await Promise.all(messages.map((message) => this.publishOne(message, batch.signal)));
    } finally {
      stopForwarding();
    }
  }

  /** Gives up on every publish still waiting (retryable), and disconnects. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ready = false;
    for (const wake of [...this.readyWaiters, ...this.slotWaiters]) wake();
    // mqtt.js's end() waits for every stored publish to be acknowledged, which never happens offline.
    for (const id of Object.keys(this.client.outgoing)) this.client.removeOutgoingMessage(Number(id));
    const graceful = this.client.connected;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((resolve) => this.client.end(!graceful, {}, () => resolve())),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, 2000))),
    ]);
    clearTimeout(timer);
    this.client.stream?.destroy();
  }

  private async publishOne(message: OutgoingMessage, signal: AbortSignal): Promise<PublishOutcome> {
    const prepared = this.prepare(message);
    if ('status' in prepared) return prepared;
    if (!(await this.acquireSlot(signal))) return this.notSent(signal, 'waiting for an in-flight slot');
    let sent = false;
    try {
      if (!(await this.untilReady(signal))) return this.notSent(signal, 'waiting for the connection');
      if (this.maximumPacketSize !== undefined) {
        const size = publishPacketSize(prepared.topic, message.payload.length, this.options.qos, prepared.properties);
        if (size > this.maximumPacketSize) {
          return permanent(`the message takes ${size} bytes, over the broker's maximum packet size of ${this.maximumPacketSize}`);
        }
      }
      sent = true;
      return await this.send(prepared, message.payload, signal);
    } finally {
      // A publish that was sent keeps its slot until mqtt.js lets go of it (see send), as it still counts at the broker.
      if (!sent) this.releaseSlot();
    }
  }

  /**
   * The MQTT topic a message goes to: `routes[topic]`, else the `route` option's answer, else the topic itself
   * (refused instead with `strictRoutes`). A topic the broker would drop the connection for is refused.
   */
  route(message: OutgoingMessage): Route<string> {
    const { routes, route, strictRoutes } = this.options;
    let topic = ownEntry(routes, message.topic);
    if (topic === undefined && route !== undefined) {
      try {
        topic = route(message.topic, message);
      } catch (error) {
        return { refused: `the route function threw for topic "${message.topic}": ${errorText(error)}` };
      }
    }
    if (topic === undefined) {
      if (strictRoutes) return { refused: `no MQTT route for topic "${message.topic}" (strictRoutes is on)` };
      topic = message.topic;
    }
    if (typeof topic !== 'string') return { refused: `the route for topic "${message.topic}" is not a string` };
    const topicProblem = mqttTopicProblem(topic);
    if (topicProblem !== null) {
      return { refused: `"${topic}" (the MQTT topic for "${message.topic}") is not a valid topic name: it ${topicProblem}` };
    }
    return { to: topic };
  }

  /** The message's MQTT topic and properties, or a permanent outcome when it cannot travel over MQTT as it is. */
  private prepare(message: OutgoingMessage): Prepared | PublishOutcome {
    const routed = this.route(message);
    if ('refused' in routed) return permanent(routed.refused);
    const topic = routed.to;
    const userProperties: Record<string, string> = { ...message.headers, ...txoutboxHeaders(message) };
    for (const [name, value] of Object.entries(userProperties)) {
      const problem = mqttStringProblem(name) ?? mqttStringProblem(value);
      if (problem !== null) return permanent(`header "${name}" cannot be an MQTT user property: it ${problem}`);
    }
    const contentProblem = mqttStringProblem(message.contentType);
    if (contentProblem !== null) return permanent(`the content type cannot be an MQTT property: it ${contentProblem}`);
    return { topic, properties: { contentType: message.contentType, userProperties } };
  }

  /** Hands one message to mqtt.js and waits for its acknowledgement or the signal. */
  private send({ topic, properties }: Prepared, payload: Buffer, signal: AbortSignal): Promise<PublishOutcome> {
    return new Promise((resolve) => {
      let settled = false;
      let messageId: number | undefined;
      const settle = (outcome: PublishOutcome) => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        resolve(outcome);
      };
      let released = false;
      const callback = (error?: Error) => {
        // Called when mqtt.js forgets the message: acknowledged, refused, or removed by us.
        if (released) return;
        released = true;
        if (messageId !== undefined) this.abandoned.delete(messageId);
        this.releaseSlot();
        settle(error === undefined || error === null ? OK : classify(error));
      };
      const onAbort = () => {
        settle(
          retryable(
            `no acknowledgement from the MQTT broker in time: ${abortReason(signal)} (outcome unknown; resend with the same id)`,
          ),
        );
        if (messageId === undefined) return;
        // Offline, mqtt.js would keep it and resend it on reconnect, once per retry; drop it, since the relay resends.
        // Online it keeps its packet id until the broker answers, as MQTT requires.
        if (this.client.connected) this.abandoned.add(messageId);
        else this.client.removeOutgoingMessage(messageId);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      const publishOptions: IClientPublishOptions = { qos: this.options.qos, properties };
      try {
        this.client.publish(topic, payload, publishOptions, callback);
      } catch (error) {
        callback(error as Error);
        return;
      }
      const id = this.client.getLastMessageId();
      if (this.client.outgoing[id]?.cb === callback) messageId = id;
    });
  }

  private notSent(signal: AbortSignal, what: string): PublishOutcome {
    if (this.closed) return retryable('the MQTT broker adapter is closed; not sent');
    const cause = this.lastError === null ? '' : ` (last connection error: ${this.lastError.message})`;
    return retryable(`not sent: ${abortReason(signal)} while ${what} to ${redact(this.options.url)}${cause}`);
  }

  private untilReady(signal: AbortSignal): Promise<boolean> {
    return this.waitUntil(() => this.ready, this.readyWaiters, signal);
  }

  private acquireSlot(signal: AbortSignal): Promise<boolean> {
    // Taking the slot inside the check keeps it atomic: every message of a batch checks before any of them awaits.
    const take = () => this.inFlight < this.limit && ++this.inFlight > 0;
    return this.waitUntil(take, this.slotWaiters, signal);
  }

  private releaseSlot(): void {
    this.inFlight--;
    this.wake(this.slotWaiters);
  }

  /** Resolves true once `condition` holds, false when the signal aborts or the adapter closes first. */
  private waitUntil(condition: () => boolean, waiters: Set<() => void>, signal: AbortSignal): Promise<boolean> {
    return new Promise((resolve) => {
      let finished = false;
      const check = () => {
        if (finished) return;
        if (this.closed || signal.aborted) return done(false);
        if (condition()) return done(true);
      };
      const done = (result: boolean) => {
        finished = true;
        waiters.delete(check);
        signal.removeEventListener('abort', check);
        resolve(result);
      };
      waiters.add(check);
      signal.addEventListener('abort', check, { once: true });
      check();
    });
  }

  private wake(waiters: Set<() => void>): void {
    for (const check of [...waiters]) check();
  }

  private onConnect(connack: IConnackPacket): void {
    // The broker's Receive Maximum bounds unacknowledged QoS 1/2 publishes; past it Mosquitto answers "quota exceeded".
    this.limit = Math.min(this.options.maxInFlight, connack.properties?.receiveMaximum ?? 65_535);
    this.maximumPacketSize = connack.properties?.maximumPacketSize;
    this.lastError = null;
    this.ready = !this.closed;
    this.wake(this.readyWaiters);
    this.wake(this.slotWaiters);
  }

  private onClose(): void {
    this.ready = false;
    // Nobody waits for these any more, and the next connection is a fresh session: drop them rather than resend.
    for (const id of [...this.abandoned]) this.client.removeOutgoingMessage(id);
    this.abandoned.clear();
  }
}

function resolve(options: MqttBrokerOptions): ResolvedOptions {
  return parseOptions(schema, options, 'createMqttBroker');
}

/** The URL without its password, for error messages. */
function redact(url: string): string {
  const parsed = new URL(url);
  if (parsed.password !== '') parsed.password = '***';
  return parsed.toString();
}

/**
 * Creates an MQTT 5 adapter; it connects in the background and reconnects by itself.
 *
 * @example
 * ```ts
 * import { createRelay } from 'txoutbox';
 * import { createMqttBroker } from 'txoutbox/mqtt';
 *
 * const broker = createMqttBroker({ url: 'mqtt://127.0.0.1:1883', qos: 1, routes: { 'orders.created': 'shop/orders/created' } });
 * const relay = createRelay({ db, dialect: 'postgres', broker });
 * ```
 */
export function createMqttBroker(options: MqttBrokerOptions): MqttBroker {
  return new MqttBroker(options);
}
