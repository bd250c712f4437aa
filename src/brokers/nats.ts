import { connect, errors as natsErrors, headers as natsHeaders } from '@nats-io/transport-node';
import type { MsgHdrs, NatsConnection, NodeConnectionOptions } from '@nats-io/transport-node';
import { JetStreamApiError, StorageType, jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import { z } from 'zod';
import { parseOptions } from '../config.js';
import { ABORTED, whenAborted } from './abort.js';
import type { Broker, OutgoingMessage, PublishContext, PublishOutcome } from './broker.js';
import { errorText } from './errors.js';
import { OWN_HEADER_PREFIX, OWN_HEADERS, txoutboxHeaders } from './headers.js';
import { OK, permanent, retryable, unreachable } from './outcomes.js';
import { ownEntry, type MessageRouter, type Route } from './route.js';

/** Connection options passed through to nats.js, minus those the adapter fixes (it must reconnect forever). */
export type NatsConnectionOptions = Omit<
  NodeConnectionOptions,
  'servers' | 'reconnect' | 'maxReconnectAttempts' | 'waitOnFirstConnect'
>;

/** A stream the adapter creates on first use when it does not exist yet (an existing one is never changed). */
export interface NatsStreamOptions {
  /** Stream name: letters, digits, `-` and `_`. */
  name: string;
  /** Subjects it captures, wildcards allowed, e.g. `['orders.>']`. */
  subjects: string[];
  /** How long the stream remembers message ids to drop resends. Default 2 minutes (the server's default). */
  duplicateWindowMs?: number;
  /** Copies in a JetStream cluster. Default 1. */
  replicas?: number;
}

export interface NatsBrokerOptions {
  /** Server URL(s). Default `nats://127.0.0.1:4222`. Not allowed together with `connection`. */
  servers?: string | string[];
  /** Extra nats.js connection options: auth, TLS, name, timeouts... */
  connectionOptions?: NatsConnectionOptions;
  /**
   * A connection you own, instead of one the adapter opens. It should use `maxReconnectAttempts: -1`;
   * `close()` leaves it open.
   */
  connection?: NatsConnection;
  /** topic → subject, checked first. */
  routes?: Record<string, string>;
  /** topic → subject for topics `routes` does not name; return undefined to fall back to subject = topic. */
  route?: (topic: string, message: OutgoingMessage) => string | undefined;
  /** How long to wait for each PubAck. Default 5000 ms; keep it below the relay's publishTimeoutMs. */
  ackTimeoutMs?: number;
  /** Creates this stream when it is missing, before the first publish. */
  stream?: NatsStreamOptions;
  /** JetStream domain, for leaf nodes and multi-domain setups. */
  domain?: string;
}

const DEFAULT_SERVER = 'nats://127.0.0.1:4222';
/** A failed connect is not retried for this long: each publish in between fails fast with the same error. */
const CONNECT_RETRY_PAUSE_MS = 1000;
/** PubAck errors that say "not now" although the server marks them 4xx. */
const RETRYABLE_API_CODES = new Set([
  10002, // resource limits exceeded for account
  10077, // store failed (e.g. stream full with discard: new)
]);
const RESERVED_HEADERS = new Set(['content-type', 'nats-msg-id', 'message-id']);
/** Headers this adapter sets from the message's own fields. */
export const NATS_ADAPTER_HEADERS = {
  ...OWN_HEADERS,
  contentType: 'Content-Type',
  msgId: 'Nats-Msg-Id',
} as const;

const subjectToken = /^[^\s.*>]+$/;
const streamSubjectToken = /^([^\s.*>]+|\*|>)$/;

/** Why `subject` cannot be published to, or null. */
function subjectProblem(subject: string): string | null {
  if (subject.length === 0) return 'is empty';
  const tokens = subject.split('.');
  if (!tokens.every((t) => subjectToken.test(t))) {
    return 'is not a NATS subject to publish to (dot-separated non-empty tokens, no spaces, no * or > wildcards)';
  }
  return null;
}

function streamSubjectProblem(subject: string): string | null {
  const tokens = subject.split('.');
  if (!tokens.every((t) => streamSubjectToken.test(t)) || tokens.slice(0, -1).includes('>')) {
    return 'is not a NATS subject filter (dot-separated tokens, * for one token, > only as the last token)';
  }
  return null;
}

const publishSubject = z.string().superRefine((value, ctx) => {
  const problem = subjectProblem(value);
  if (problem !== null) ctx.addIssue({ code: 'custom', message: `"${value}" ${problem}` });
});

const optionsSchema = z
  .object({
    servers: z
      .union([z.string(), z.array(z.string()).min(1, 'must list at least one server')])
      .refine(
        (value) => (Array.isArray(value) ? value : [value]).every((s) => s.length > 0 && !/\s/.test(s)),
        'must be server URLs such as nats://127.0.0.1:4222',
      )
      .optional(),
    connectionOptions: z
      .custom<NatsConnectionOptions>(
        (value) => typeof value === 'object' && value !== null && !Array.isArray(value),
        'must be an object of nats.js connection options',
      )
      .superRefine((value, ctx) => {
        for (const fixed of ['servers', 'reconnect', 'maxReconnectAttempts', 'waitOnFirstConnect']) {
          if (fixed in value) {
            ctx.addIssue({
              code: 'custom',
              message: `${fixed} is set by the adapter (servers: use the servers option; it always reconnects forever)`,
            });
          }
        }
      })
      .optional(),
    connection: z
      .custom<NatsConnection>(
        (value) => typeof (value as { request?: unknown } | null)?.request === 'function',
        'must be a NatsConnection from connect()',
      )
      .optional(),
    routes: z.record(z.string().min(1, 'a topic must not be empty'), publishSubject).optional(),
    route: z
      .custom<NonNullable<NatsBrokerOptions['route']>>((value) => typeof value === 'function', 'must be a function')
      .optional(),
    ackTimeoutMs: z.number().int().min(1).max(600_000).default(5000),
    stream: z
      .object({
        name: z.string().regex(/^[A-Za-z0-9_-]{1,255}$/, 'must be 1-255 letters, digits, - or _'),
        subjects: z
          .array(
            z.string().superRefine((value, ctx) => {
              const problem = streamSubjectProblem(value);
              if (problem !== null) ctx.addIssue({ code: 'custom', message: `"${value}" ${problem}` });
            }),
          )
          .min(1, 'must list at least one subject'),
        duplicateWindowMs: z.number().int().min(1000).default(120_000),
        replicas: z.number().int().min(1).max(5).default(1),
      })
      .strict()
      .optional(),
    domain: z
      .string()
      .regex(/^[A-Za-z0-9_-]+$/, 'must be letters, digits, - or _')
      .optional(),
  })
  .strict()
  .superRefine((value, ctx) => {
    if (value.connection !== undefined && (value.servers !== undefined || value.connectionOptions !== undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: ['connection'],
        message: 'cannot be given together with servers or connectionOptions',
      });
    }
  });

type ResolvedOptions = z.output<typeof optionsSchema>;

function resolveOptions(options: NatsBrokerOptions): ResolvedOptions {
  return parseOptions(optionsSchema, options, 'createNatsBroker');
}

/** One live connection and what the adapter tracks about it. */
interface Session {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  /** Between a 'disconnect' and the next 'reconnect' status. */
  down: boolean;
  lastError: string | null;
  /** Publishes waiting for a PubAck, told when it can no longer come (a disconnect, a permission denial). */
  waiting: Set<(event: SessionEvent) => void>;
}

type SessionEvent = { kind: 'disconnect' } | { kind: 'denied'; subject: string; error: string };

/** True when `error` or one of its causes (nats.js wraps them in RequestError) is a `type`. */
function causedBy(error: unknown, type: abstract new (...args: never[]) => Error): boolean {
  let e: unknown = error;
  for (let depth = 0; depth < 5 && e instanceof Error; depth++) {
    if (e instanceof type) return true;
    e = (e as Error).cause;
  }
  return false;
}

/**
 * Publishes to NATS JetStream. `ok` means the stream's PubAck: JetStream stored the message (see the README for
 * what "stored" means on disk). The message id travels as `Nats-Msg-Id`, so a resend inside the stream's
 * duplicate window is dropped by the server and answered with a duplicate PubAck, which counts as `ok`.
 */
export class NatsBroker implements Broker, MessageRouter<string> {
  readonly name = 'nats';
  private readonly options: ResolvedOptions;
  private session: Promise<Session> | null = null;
  private connectFailure: { at: number; error: string } | null = null;
  private streamReady: Promise<void> | null = null;
  private closed = false;

  constructor(options: NatsBrokerOptions = {}) {
    this.options = resolveOptions(options);
  }

  async publish(messages: readonly OutgoingMessage[], { signal }: PublishContext): Promise<PublishOutcome[]> {
    const all = (outcome: PublishOutcome) => messages.map(() => outcome);
    if (messages.length === 0) return [];
    if (this.closed) return all(retryable('the NATS broker is closed'));
    if (signal.aborted) return all(retryable('aborted before publishing (outcome: not sent)'));
    const { aborted, dispose } = whenAborted(signal);
    try {
      const session = await Promise.race([this.connected(), aborted]);
      if (session === ABORTED) return all(retryable('aborted while connecting to NATS (outcome: not sent)'));
      // While nats.js reconnects it would buffer the request; fail fast instead, the relay retries with backoff.
      if (session.down) {
        const why = session.lastError === null ? '' : ` (last error: ${session.lastError})`;
        // The broker's state, not the messages': the relay pauses and probes instead of counting the attempt.
        return all(unreachable(`the NATS connection is down, reconnecting${why}`));
      }
      if (this.options.stream !== undefined) {
        const ready = await Promise.race([this.ensureStream(session), aborted]);
        if (ready === ABORTED) return all(retryable('aborted while creating the configured stream (outcome: not sent)'));
      }
      const unknown = retryable('aborted before the PubAck arrived (outcome unknown; resent with the same id)');
      return await Promise.all(
        messages.map(async (message) => {
          const outcome = await Promise.race([this.publishOne(session, message), aborted]);
          return outcome === ABORTED ? unknown : outcome;
        }),
      );
    } catch (error) {
      return all(retryable(errorText(error)));
    } finally {
      dispose();
    }
  }

  /** Closes the connection the adapter opened (one given as `connection` stays open). Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    const session = this.session;
    this.session = null;
    if (session === null || this.options.connection !== undefined) return;
    const opened = await session.catch(() => null);
    if (opened !== null && !opened.nc.isClosed()) await opened.nc.close().catch(() => undefined);
  }

  private async publishOne(session: Session, message: OutgoingMessage): Promise<PublishOutcome> {
    const routed = this.route(message);
    if ('refused' in routed) return permanent(routed.refused);
    const subject = routed.to;
    let headers: MsgHdrs;
    try {
      headers = buildHeaders(message);
    } catch (error) {
      return permanent(errorText(error));
    }
    let listener: (event: SessionEvent) => void = () => {};
    const lost = new Promise<PublishOutcome>((resolve) => {
      listener = (event) => {
        if (event.kind === 'disconnect') {
          resolve(
            retryable(
              `the NATS connection dropped before the PubAck for "${subject}" (outcome unknown; resent with the same id)`,
            ),
          );
        } else if (event.subject === subject) {
          // The server drops a denied publish with only an async -ERR; without this it would look like a timeout.
          resolve(permanent(`not allowed to publish to "${subject}": ${event.error}`));
        }
      };
      session.waiting.add(listener);
    });
    try {
      return await Promise.race([this.send(session, subject, message, headers), lost]);
    } finally {
      session.waiting.delete(listener);
    }
  }

  /** One JetStream publish; never rejects. */
  private async send(session: Session, subject: string, message: OutgoingMessage, headers: MsgHdrs): Promise<PublishOutcome> {
    try {
      // Resolves with the PubAck: the stream's "stored". A duplicate PubAck means the stream already held this id
      // (an earlier attempt was stored but its ack was lost) and dropped this copy: just as safe, so also ok.
      await session.js.publish(subject, message.payload, { msgID: message.id, headers, timeout: this.options.ackTimeoutMs });
      return OK;
    } catch (error) {
      return this.classify(session, error, subject, message.topic);
    }
  }

  /** Maps a failed publish to retryable or permanent. Unknown failures are retryable: the safe default. */
  private async classify(session: Session, error: unknown, subject: string, topic: string): Promise<PublishOutcome> {
    if (causedBy(error, natsErrors.NoRespondersError)) return this.explainNoResponders(session, subject, topic);
    if (error instanceof natsErrors.TimeoutError) {
      return retryable(
        `no PubAck for "${subject}" within ${this.options.ackTimeoutMs} ms (outcome unknown; resent with the same id)`,
      );
    }
    if (error instanceof JetStreamApiError) {
      const what = `JetStream refused the message on "${subject}": ${error.message} (err_code ${error.code}, status ${error.status})`;
      return error.status >= 500 || error.status === 408 || error.status === 429 || RETRYABLE_API_CODES.has(error.code)
        ? retryable(what)
        : permanent(what);
    }
    if (
      causedBy(error, natsErrors.InvalidArgumentError) ||
      causedBy(error, natsErrors.InvalidSubjectError) ||
      causedBy(error, natsErrors.PermissionViolationError)
    ) {
      return permanent(`cannot publish to "${subject}": ${errorText(error)}`);
    }
    // A reply that is not a PubAck: something other than a stream answers on this subject.
    if (error instanceof SyntaxError || (error instanceof Error && error.message === 'invalid ack response')) {
      return permanent(`"${subject}" was answered by something that is not a JetStream stream (${errorText(error)})`);
    }
    return retryable(`publish to "${subject}" failed: ${errorText(error)}`);
  }

  /**
   * "No responders" usually means no stream captures the subject, which can never succeed: permanent. But a
   * stream that is still recovering or electing a leader answers the same way for a moment, so ask JetStream
   * which stream captures the subject before dead-lettering anything.
   */
  private async explainNoResponders(session: Session, subject: string, topic: string): Promise<PublishOutcome> {
    try {
      const stream = await session.jsm.streams.find(subject);
      return retryable(`stream "${stream}" captures "${subject}" but did not answer (no responders); it may be recovering`);
    } catch (error) {
      if (error instanceof JetStreamApiError && error.code === 10059) {
        return permanent(
          `no JetStream stream captures subject "${subject}" (topic "${topic}"): add the subject to a stream or route the topic elsewhere`,
        );
      }
      return retryable(`no responders on "${subject}", and JetStream did not say why (${errorText(error)}); is JetStream up?`);
    }
  }

  /** The subject a message goes to: `routes[topic]`, else the `route` option's answer, else the topic itself. */
  route(message: OutgoingMessage): Route<string> {
    const { routes, route } = this.options;
    let subject = ownEntry(routes, message.topic);
    if (subject === undefined && route !== undefined) {
      try {
        subject = route(message.topic, message);
      } catch (error) {
        return { refused: `the route function threw for topic "${message.topic}": ${errorText(error)}` };
      }
      if (subject !== undefined && typeof subject !== 'string') {
        return { refused: `the route function returned ${typeof subject} for topic "${message.topic}", not a subject` };
      }
    }
    subject ??= message.topic;
    const problem = subjectProblem(subject);
    return problem === null ? { to: subject } : { refused: `subject "${subject}" for topic "${message.topic}" ${problem}` };
  }

  /** The current session, connecting when there is none. Rejects (fast, for a moment) when connecting failed. */
  private connected(): Promise<Session> {
    if (this.session !== null) return this.session;
    const failure = this.connectFailure;
    if (failure !== null && Date.now() - failure.at < CONNECT_RETRY_PAUSE_MS) {
      return Promise.reject(new Error(failure.error));
    }
    const session = this.open();
    this.session = session;
    session.then(
      (opened) => {
        this.connectFailure = null;
        // An own connection that closes by itself (e.g. after repeated auth errors) is replaced on the next publish.
        opened.nc
          .closed()
          .then(() => {
            if (this.session === session) this.session = null;
          })
          .catch(() => undefined);
      },
      (error: unknown) => {
        if (this.session === session) this.session = null;
        this.connectFailure = { at: Date.now(), error: errorText(error) };
      },
    );
    return session;
  }

  private async open(): Promise<Session> {
    const { connection, servers, connectionOptions, domain, ackTimeoutMs } = this.options;
    let nc: NatsConnection;
    try {
      nc =
        connection ??
        (await connect({
          name: 'txoutbox',
          timeout: 5000,
          // nats.js otherwise builds two Error objects per publish to keep async stack traces: about a third of
          // its CPU in bench/brokers. Outcomes are classified from error codes, never from stacks.
          noAsyncTraces: true,
          // nats.js waits 2 s between reconnect attempts; a relay should resume within a second of the server's return.
          reconnectTimeWait: 500,
          ...connectionOptions,
          servers: servers ?? DEFAULT_SERVER,
          reconnect: true,
          // Forever: a relay outlives any broker outage, and a closed connection would need a restart.
          maxReconnectAttempts: -1,
        }));
    } catch (error) {
      throw new Error(`cannot connect to NATS at ${[servers ?? DEFAULT_SERVER].flat().join(', ')}: ${errorText(error)}`, {
        cause: error,
      });
    }
    if (nc.isClosed()) throw new Error('the NATS connection given to createNatsBroker is closed');
    if (this.closed) {
      if (connection === undefined) await nc.close().catch(() => undefined);
      throw new Error('the NATS broker is closed');
    }
    const jsOptions = { timeout: ackTimeoutMs, ...(domain === undefined ? {} : { domain }) };
    const session: Session = {
      nc,
      js: jetstream(nc, jsOptions),
      // checkAPI off: no request now; the manager is only used to explain failures and create the stream.
      jsm: await jetstreamManager(nc, { ...jsOptions, checkAPI: false }),
      down: false,
      lastError: null,
      waiting: new Set(),
    };
    void this.watch(session);
    return session;
  }

  /** Follows the connection's status; the iterator ends when the connection closes. */
  private async watch(session: Session): Promise<void> {
    try {
      for await (const status of session.nc.status()) {
        if (status.type === 'disconnect' || status.type === 'staleConnection') {
          session.down = true;
          for (const listener of session.waiting) listener({ kind: 'disconnect' });
        } else if (status.type === 'reconnect') {
          session.down = false;
        } else if (status.type === 'error') {
          session.lastError = errorText(status.error);
          const { error } = status;
          if (error instanceof natsErrors.PermissionViolationError && error.operation === 'publish') {
            for (const listener of session.waiting) listener({ kind: 'denied', subject: error.subject, error: error.message });
          }
        }
      }
    } catch {
      // Nothing to do: the next publish sees the connection's state.
    }
  }

  /** Creates the configured stream once when it does not exist; an existing stream is left as it is. */
  private ensureStream(session: Session): Promise<void> {
    const config = this.options.stream;
    if (config === undefined) return Promise.resolve();
    this.streamReady ??= (async () => {
      try {
        await session.jsm.streams.info(config.name);
      } catch (error) {
        if (!(error instanceof JetStreamApiError && error.code === 10059)) throw error;
        try {
          await session.jsm.streams.add({
            name: config.name,
            subjects: config.subjects,
            // File storage always: a memory stream's PubAck would not survive a server restart.
            storage: StorageType.File,
            num_replicas: config.replicas,
            duplicate_window: config.duplicateWindowMs * 1_000_000,
          });
        } catch (addError) {
          // Another relay created it at the same moment: fine.
          if (!(addError instanceof JetStreamApiError && addError.code === 10058)) throw addError;
        }
      }
    })().catch((error: unknown) => {
      this.streamReady = null;
      throw new Error(`cannot create stream "${config.name}": ${errorText(error)}`, { cause: error });
    });
    return this.streamReady;
  }
}

/** Exact NATS headers for a message, or throws when a value cannot travel unchanged. */
function buildHeaders(message: OutgoingMessage): MsgHdrs {
  const headers = natsHeaders();
  const set = (name: string, value: string) => {
    // nats.js trims header values and refuses CR/LF: refuse rather than deliver something else.
    if (/[\r\n]/.test(value) || value !== value.trim()) {
      throw new Error(`header ${name} cannot be carried exactly by NATS (CR/LF or leading/trailing whitespace)`);
    }
    headers.set(name, value);
  };
  for (const [name, value] of Object.entries(message.headers)) {
    const lower = name.toLowerCase();
    if (lower.startsWith(OWN_HEADER_PREFIX) || RESERVED_HEADERS.has(lower)) throw new Error(`header ${name} is reserved`);
    set(name, value);
  }
  for (const [name, value] of Object.entries(txoutboxHeaders(message))) set(name, value);
  set(NATS_ADAPTER_HEADERS.contentType, message.contentType);
  return headers;
}

/**
 * A broker adapter for NATS JetStream. Connects lazily on the first publish.
 *
 * @example
 * ```ts
 * import { createRelay } from 'txoutbox';
 * import { createNatsBroker } from 'txoutbox/nats';
 *
 * const broker = createNatsBroker({ servers: 'nats://127.0.0.1:4222', stream: { name: 'ORDERS', subjects: ['orders.>'] } });
 * const relay = createRelay({ db, dialect: 'postgres', broker });
 * ```
 */
export function createNatsBroker(options: NatsBrokerOptions = {}): NatsBroker {
  return new NatsBroker(options);
}
