import { Redis, type RedisOptions } from 'ioredis';
import { z } from 'zod';
import { parseOptions } from '../config.js';
import { ABORTED, abortReason, whenAborted } from './abort.js';
import type { Broker, OutgoingMessage, PublishContext, PublishOutcome } from './broker.js';
import { errorText } from './errors.js';
import { OWN_HEADERS } from './headers.js';
import { OK, permanent, retryable } from './outcomes.js';
import { ownEntry, type MessageRouter, type Route } from './route.js';

/** Ask Redis (7.2+) to confirm that the batch's writes reached the AOF on disk before reporting ok. */
export interface RedisWaitAofOptions {
  /** 1: the primary itself must have fsynced its AOF; 0: do not require it. */
  numLocal: 0 | 1;
  /** How many replicas must have fsynced their AOF. */
  numReplicas: number;
  /** Longest wait for those fsyncs; keep it below the relay's publishTimeoutMs. WAITAOF blocks the connection meanwhile. */
  timeoutMs: number;
}

export interface RedisBrokerOptions {
  /** `redis://` or `rediss://` URL of a standalone server (or use `redisOptions.sentinels`). Default `redis://127.0.0.1:6379`. */
  url?: string;
  /**
   * Further ioredis options (password, tls, db, connectionName, retryStrategy, sentinels, ...). The adapter fixes
   * enableOfflineQueue, maxRetriesPerRequest, autoResendUnfulfilledCommands, enableAutoPipelining and lazyConnect,
   * because what an `ok` means depends on them.
   */
  redisOptions?: RedisOptions;
  /** Topic → stream key. Checked first. */
  routes?: Record<string, string>;
  /** Topic → stream key, for topics not in `routes`; null or undefined means "no route". */
  route?: (topic: string) => string | null | undefined;
  /** Refuse (permanently) a topic that neither `routes` nor `route` maps, instead of writing to `prefix + topic`. */
  strict?: boolean;
  /** Prepended to the topic to name the stream when no route applies. Default ''. */
  prefix?: string;
  /** false: XADD with NOMKSTREAM, so a stream that does not exist yet is a permanent error. Default true. */
  createStreams?: boolean;
  /** Cap each stream with XADD MAXLEN; approximate (`~`, cheap) unless `exact`. Trimmed entries are gone for every consumer. */
  trim?: { maxLen: number; exact?: boolean };
  /** Report ok only after WAITAOF confirms these fsyncs. Needs Redis 7.2+. */
  waitAof?: RedisWaitAofOptions;
  /** Connection errors (the adapter reconnects by itself and reports them as retryable outcomes). Default: ignored. */
  onError?: (error: Error) => void;
}

/**
 * Field names of a stream entry. User headers are one field each, named `h:<header>`, so they can never collide
 * with txoutbox's own fields and a consumer can read one without parsing the others.
 */
export const REDIS_FIELDS = {
  ...OWN_HEADERS,
  contentType: 'content-type',
  payload: 'payload',
  headerPrefix: 'h:',
} as const;

/** ioredis options the adapter's guarantees rest on; see the comments where they are set. */
const FIXED_REDIS_OPTIONS = [
  'enableOfflineQueue',
  'maxRetriesPerRequest',
  'autoResendUnfulfilledCommands',
  'enableAutoPipelining',
  'lazyConnect',
] as const;

const isFunction = (value: unknown) => typeof value === 'function';
const isPlainObject = (value: unknown) => typeof value === 'object' && value !== null && !Array.isArray(value);

const optionsSchema = z
  .object({
    url: z
      .string()
      .refine((value) => /^rediss?:\/\//.test(value) && URL.canParse(value), 'url must be a redis:// or rediss:// URL')
      .default('redis://127.0.0.1:6379'),
    redisOptions: z
      .custom<RedisOptions>(isPlainObject, 'redisOptions must be an object of ioredis options')
      .refine((value) => FIXED_REDIS_OPTIONS.every((name) => !(name in value)), {
        message: `redisOptions may not set ${FIXED_REDIS_OPTIONS.join(', ')}: the adapter fixes them so that an ok means what it says`,
      })
      .refine((value) => !('keyPrefix' in value), {
        message: 'redisOptions.keyPrefix is not supported; use the prefix option or routes to name streams',
      })
      .optional(),
    routes: z.record(z.string().min(1), z.string().min(1, 'a stream key must not be empty')).optional(),
    route: z.custom<(topic: string) => string | null | undefined>(isFunction, 'route must be a function').optional(),
    strict: z.boolean().default(false),
    prefix: z.string().default(''),
    createStreams: z.boolean().default(true),
    trim: z
      .object({
        maxLen: z.number().int().min(1),
        exact: z.boolean().default(false),
      })
      .strict()
      .optional(),
    waitAof: z
      .object({
        numLocal: z.union([z.literal(0), z.literal(1)], { message: 'numLocal must be 0 or 1' }),
        numReplicas: z.number().int().min(0),
        // 0 would make WAITAOF block the connection forever.
        timeoutMs: z.number().int().min(1, 'timeoutMs must be at least 1 (0 would block the connection forever)'),
      })
      .strict()
      .refine((value) => value.numLocal + value.numReplicas > 0, 'waitAof must require at least one fsync')
      .optional(),
    onError: z.custom<(error: Error) => void>(isFunction, 'onError must be a function').optional(),
  })
  .strict()
  .refine((options) => !options.strict || options.routes !== undefined || options.route !== undefined, {
    message: 'strict routing needs routes or route, or every topic would be refused',
    path: ['strict'],
  });

type ResolvedOptions = z.output<typeof optionsSchema>;

/** A command's fate, filled in as it settles, so an abort can tell answered messages from outstanding ones. */
interface Pending<T> {
  settled: boolean;
  value?: T;
  error?: unknown;
}

function track<T>(promise: Promise<T>): { state: Pending<T>; done: Promise<void> } {
  const state: Pending<T> = { settled: false };
  // The handlers are attached at once, so a reply that arrives after an abort is never an unhandled rejection.
  const done = promise.then(
    (value) => {
      state.settled = true;
      state.value = value;
    },
    (error: unknown) => {
      state.settled = true;
      state.error = error;
    },
  );
  return { state, done };
}

const isReplyError = (error: unknown) => error instanceof Error && error.name === 'ReplyError';

/**
 * Reply errors that no retry can fix: the key is not a stream, ACLs forbid it, or the server does not know the
 * command or its syntax (too old, or the command was renamed away). Everything else, including OOM, READONLY
 * (failover), LOADING, auth trouble and every connection error, may pass and is retryable.
 */
function classify(error: unknown, what: string): PublishOutcome {
  const text = errorText(error);
  // Rejections that ioredis words in terms of its own options; say what they mean here.
  if (error instanceof Error && (error.name === 'MaxRetriesPerRequestError' || error.name === 'AbortError')) {
    return retryable(`${what}: the connection to Redis dropped before it answered (outcome unknown)`);
  }
  if (/enableOfflineQueue/.test(text)) return retryable(`${what}: not connected to Redis`);
  if (isReplyError(error)) {
    const code = text.split(' ', 1)[0];
    if (code === 'WRONGTYPE' || code === 'NOPERM') return permanent(`${what}: ${text}`);
    if (code === 'ERR' && /unknown command|syntax error|wrong number of arguments/i.test(text)) {
      return permanent(`${what}: ${text}`);
    }
  }
  return retryable(`${what}: ${text}`);
}

/**
 * Redis Streams adapter: one XADD per message to the stream its topic routes to, all of a batch written in one go
 * on one connection. The XADD reply is the acknowledgement, so a message is only as durable as the server's
 * persistence (appendonly + appendfsync always), unless `waitAof` makes each batch wait for confirmed fsyncs.
 */
export class RedisBroker implements Broker, MessageRouter<string> {
  readonly name = 'redis';
  private readonly options: ResolvedOptions;
  private readonly client: Redis;
  private closed = false;
  private readonly readyWaiters = new Set<() => void>();
  /** This connection's WAITAOF check; reset on every new connection, as the server behind it may have changed. */
  private aofCheck: Promise<PublishOutcome | null> | null = null;

  constructor(options: RedisBrokerOptions = {}) {
    this.options = parseOptions(optionsSchema, options, 'createRedisBroker');
    this.client = new Redis(this.options.url, {
      retryStrategy: (times) => Math.min(50 * 2 ** times, 2000),
      ...this.options.redisOptions,
      // Commands are never queued while disconnected, so a batch is written on one live connection or not at all
      // (WAITAOF only counts the writes of its own connection); publish() waits for 'ready' itself, abortably.
      enableOfflineQueue: false,
      // Commands in flight when the connection drops are rejected at once (retryable) instead of being resent
      // on the next connection, where a WAITAOF would vouch for writes it never saw.
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      enableAutoPipelining: false,
      lazyConnect: false,
      // The reply shapes read below (XADD id, WAITAOF counts) are the RESP2-compatible ones.
      replyMapping: 'legacy',
    });
    // Without a listener ioredis logs every connection error; with one, nothing escapes as an 'error' event.
    this.client.on('error', (error: Error) => {
      try {
        this.options.onError?.(error);
      } catch {
        // A throwing log callback must not become an uncaught exception inside ioredis.
      }
    });
    this.client.on('ready', () => {
      this.aofCheck = null;
      this.wakeWaiters();
    });
    this.client.on('end', () => this.wakeWaiters());
  }

  async publish(messages: readonly OutgoingMessage[], { signal }: PublishContext): Promise<PublishOutcome[]> {
    const outcomes: (PublishOutcome | undefined)[] = messages.map(() => undefined);
    const streams: string[] = [];
    const todo: number[] = [];
    messages.forEach((message, index) => {
      const routed = this.route(message);
      if ('refused' in routed) outcomes[index] = permanent(routed.refused);
      else {
        streams[index] = routed.to;
        todo.push(index);
      }
    });
    const finish = (fallback: PublishOutcome) => outcomes.map((outcome) => outcome ?? fallback);
    if (todo.length === 0) return outcomes as PublishOutcome[];

    const notReady = await this.whenReady(signal);
    if (notReady !== null) return finish(retryable(notReady));
    if (this.options.waitAof !== undefined) {
      const problem = await this.checkWaitAof(signal);
      if (problem !== null) return finish(problem);
      // The check awaited: the connection may have dropped meanwhile, and then nothing below may be sent.
      if (this.client.status !== 'ready') return finish(retryable('the Redis connection dropped'));
    }

    // From here to the WAITAOF everything is issued synchronously, so it all goes to this one connection.
    const adds = todo.map((index) => track(this.client.xadd(...this.xaddArgs(messages[index]!, streams[index]!))));
    const { waitAof } = this.options;
    const aof =
      waitAof === undefined ? null : track(this.client.call('WAITAOF', waitAof.numLocal, waitAof.numReplicas, waitAof.timeoutMs));

    const abort = whenAborted(signal);
    await Promise.race([Promise.all([...adds.map((add) => add.done), aof?.done]), abort.aborted]);
    abort.dispose();

    const unknown = () =>
      retryable(`outcome unknown: no answer from Redis before the publish was aborted (${abortReason(signal)})`);
    const aofOutcome = aof === null ? null : this.aofOutcome(aof.state);
    todo.forEach((index, position) => {
      const { state } = adds[position]!;
      const stream = streams[index]!;
      if (!state.settled) outcomes[index] = unknown();
      else if (state.error !== undefined) outcomes[index] = classify(state.error, `XADD ${stream}`);
      // NOMKSTREAM answers nil when the stream does not exist: nothing was written.
      else if (state.value === null) outcomes[index] = permanent(`stream "${stream}" does not exist (createStreams: false)`);
      else outcomes[index] = aofOutcome ?? OK;
    });
    return finish(unknown());
  }

  /** Closes the connection (QUIT, or at once when that does not answer quickly). Publishing afterwards is retryable. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.wakeWaiters();
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([this.client.quit(), new Promise((resolve) => (timer = setTimeout(resolve, 1000)))]);
    } catch {
      // Not connected: nothing to say goodbye to.
    } finally {
      clearTimeout(timer);
      this.client.disconnect();
    }
  }

  /**
   * The stream a message goes to: `routes[topic]`, else the `route` option's answer, else `prefix + topic` (refused
   * instead with `strict`).
   */
  route(message: OutgoingMessage): Route<string> {
    const { routes, route, strict, prefix } = this.options;
    const { topic } = message;
    const routed = ownEntry(routes, topic);
    if (routed !== undefined) return { to: routed };
    if (route !== undefined) {
      let stream: unknown;
      try {
        stream = route(topic);
      } catch (error) {
        return { refused: `route() threw for topic "${topic}": ${errorText(error)}` };
      }
      if (typeof stream === 'string' && stream.length > 0) return { to: stream };
      if (stream !== null && stream !== undefined) {
        return { refused: `route() returned ${JSON.stringify(stream)} for topic "${topic}"; expected a stream key` };
      }
    }
    if (strict) return { refused: `no route for topic "${topic}" (strict routing)` };
    return { to: prefix + topic };
  }

  private xaddArgs(message: OutgoingMessage, stream: string): [string, ...(string | Buffer)[]] {
    const { trim, createStreams } = this.options;
    const args: [string, ...(string | Buffer)[]] = [stream];
    if (!createStreams) args.push('NOMKSTREAM');
    if (trim !== undefined) args.push('MAXLEN', trim.exact ? '=' : '~', String(trim.maxLen));
    args.push('*', REDIS_FIELDS.id, message.id, REDIS_FIELDS.topic, message.topic);
    if (message.key !== null) args.push(REDIS_FIELDS.key, message.key);
    args.push(REDIS_FIELDS.contentType, message.contentType, REDIS_FIELDS.attempt, String(message.attempt));
    for (const [name, value] of Object.entries(message.headers)) args.push(REDIS_FIELDS.headerPrefix + name, value);
    args.push(REDIS_FIELDS.payload, message.payload);
    return args;
  }

  /** What the batch's WAITAOF says about every XADD of the batch that succeeded. */
  private aofOutcome(state: Pending<unknown>): PublishOutcome {
    const { numLocal, numReplicas, timeoutMs } = this.options.waitAof!;
    if (!state.settled) {
      return retryable('outcome unknown: written, but the publish was aborted before WAITAOF answered');
    }
    if (state.error !== undefined) return this.waitAofError(state.error);
    const [local, replicas] = Array.isArray(state.value) ? state.value.map(Number) : [NaN, NaN];
    if (local! >= numLocal && replicas! >= numReplicas) return OK;
    return retryable(
      `written but not confirmed on disk: WAITAOF saw ${local} local and ${replicas} replica fsyncs within ${timeoutMs} ms ` +
        `(needs ${numLocal} and ${numReplicas}); resent with the same id`,
    );
  }

  private waitAofError(error: unknown): PublishOutcome {
    const text = errorText(error);
    if (isReplyError(error) && /unknown command/i.test(text)) {
      return permanent(
        'waitAof is configured, but this Redis server has no WAITAOF command (it needs Redis 7.2 or later). ' +
          'Upgrade Redis, or remove waitAof and make the server durable itself with appendonly yes and appendfsync always. ' +
          `(${text.trim()})`,
      );
    }
    if (isReplyError(error) && /appendonly is disabled/i.test(text)) {
      return permanent(
        `waitAof.numLocal is 1, but the Redis server has appendonly disabled: enable appendonly, or set numLocal to 0. (${text})`,
      );
    }
    return classify(error, 'WAITAOF');
  }

  /**
   * Probes WAITAOF once per connection, before anything is written: a server that cannot confirm fsyncs must
   * refuse the batch, not store it and then report it as failed (which would dead-letter delivered messages).
   */
  private async checkWaitAof(signal: AbortSignal): Promise<PublishOutcome | null> {
    if (this.aofCheck === null) {
      const check = this.client.call('WAITAOF', this.options.waitAof!.numLocal, 0, 1).then(
        () => null,
        (error: unknown) => this.waitAofError(error),
      );
      this.aofCheck = check;
      // Only a definite answer is kept; a dropped connection is checked again next time.
      void check.then((outcome) => {
        if (outcome?.status === 'retryable' && this.aofCheck === check) this.aofCheck = null;
      });
    }
    const abort = whenAborted(signal);
    const outcome = await Promise.race([this.aofCheck, abort.aborted]);
    abort.dispose();
    if (outcome === ABORTED) {
      return retryable(`aborted while checking WAITAOF support (${abortReason(signal)})`);
    }
    return outcome;
  }

  /** Null once the connection is ready; otherwise why publishing cannot go on (closed, or aborted while waiting). */
  private async whenReady(signal: AbortSignal): Promise<string | null> {
    const check = (): string | null | undefined => {
      if (this.closed) return 'the Redis broker is closed';
      // Checked before 'ready': an aborted publish must not write anything.
      if (signal.aborted) return `aborted before anything was sent to Redis (${abortReason(signal)})`;
      if (this.client.status === 'ready') return null;
      if (this.client.status === 'end') return 'the Redis connection has ended (retryStrategy gave up)';
      return undefined;
    };
    const now = check();
    if (now !== undefined) return now;
    return new Promise((resolve) => {
      const waiter = () => {
        const result = check();
        if (result === undefined) return;
        this.readyWaiters.delete(waiter);
        signal.removeEventListener('abort', waiter);
        resolve(result);
      };
      this.readyWaiters.add(waiter);
      signal.addEventListener('abort', waiter, { once: true });
    });
  }

  private wakeWaiters(): void {
    for (const waiter of [...this.readyWaiters]) waiter();
  }
}

/**
 * A broker that publishes to Redis Streams; see RedisBrokerOptions. Throws ConfigError on invalid options.
 *
 * @example
 * ```ts
 * import { createRelay } from 'txoutbox';
 * import { createRedisBroker } from 'txoutbox/redis';
 *
 * // Topic `orders.created` goes to the stream `outbox:orders.created`; ok only once the AOF is fsynced.
 * const broker = createRedisBroker({
 *   url: 'redis://127.0.0.1:6379',
 *   prefix: 'outbox:',
 *   waitAof: { numLocal: 1, numReplicas: 0, timeoutMs: 1000 },
 * });
 * const relay = createRelay({ db, dialect: 'postgres', broker });
 * ```
 */
export function createRedisBroker(options: RedisBrokerOptions = {}): RedisBroker {
  return new RedisBroker(options);
}
