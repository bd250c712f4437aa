import { createHmac, timingSafeEqual } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { z } from 'zod';
import { parseOptions } from '../config.js';
import { ConfigError } from '../errors.js';
import { abortReason, onAbort } from './abort.js';
import type { Broker, OutgoingMessage, PublishContext, PublishOutcome } from './broker.js';
import { OWN_HEADER_PREFIX, txoutboxHeaders } from './headers.js';
import { OK, permanent, retryable } from './outcomes.js';
import type { MessageRouter, Route } from './route.js';

/**
 * HTTP webhooks: one POST per message through Node's built-in fetch, up to `maxConcurrentRequests` of a batch at
 * once. The receiver's 2xx is the acknowledgement, so a receiver must answer 2xx only once it has stored (or fully
 * handled) the message, and should dedupe on the `idempotency-key` / `txoutbox-id` header: every retry carries
 * the same id.
 *
 * Request: `POST <route>`, body = the payload bytes exactly, headers = the static `headers`, then the message's
 * own headers (e.g. `traceparent`; one named like a static header is refused as permanent), then the adapter's: `content-type`, `idempotency-key` and `txoutbox-id` (the
 * id), `txoutbox-key` (only when the message has a key), `txoutbox-topic`, `txoutbox-attempt` (1, 2, ...) and,
 * with `signingSecret`, `txoutbox-signature`.
 *
 * Outcomes: 2xx ok; 408, 429, 5xx, network errors and timeouts retryable; 3xx (redirects are never followed: a
 * POST redirected to a GET would be a false ack) and every other 4xx permanent, as are a topic without a route
 * and a message HTTP cannot carry (e.g. a header value with a newline or a character above U+00FF).
 *
 * Signature: `txoutbox-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<id>.<body>")>`, where
 * `<id>` is the `txoutbox-id` header's bytes and `<body>` the raw request body. Check it with
 * `verifyWebhookSignature`, which also refuses timestamps older (or newer) than a tolerance, against replays.
 */

/** Picks the URL for a message; return undefined to fall back to `url`. */
export type HttpRouteFunction = (topic: string, message: OutgoingMessage) => string | URL | null | undefined;

export interface HttpBrokerOptions {
  /** Endpoint for every topic without a route; `{topic}` is replaced by the URL-encoded topic (`/` becomes `%2F`). */
  url?: string;
  /** Topic → URL (may contain `{topic}` too), or a function of the topic and message. Unrouted topics go to `url`. */
  routes?: Readonly<Record<string, string>> | HttpRouteFunction;
  /**
   * Sent with every request, e.g. `{ authorization: 'Bearer ...' }`. A message may not override them: one carrying a
   * header of the same name (in any case) is refused as permanent, so no producer can swap the credentials.
   */
  headers?: Readonly<Record<string, string>>;
  /** Longest wait for a response, per request; past it the outcome is unknown (retryable). Default: none of its own (the relay's publishTimeoutMs still applies). */
  timeoutMs?: number;
  /** Most requests in flight per publish call (one batch), so a batch of 100 does not open 100 connections at once. Default 16. */
  maxConcurrentRequests?: number;
  /** Signs every request with HMAC-SHA256 in `txoutbox-signature`. A string is used as its UTF-8 bytes; at least 16 bytes. */
  signingSecret?: string | Uint8Array;
  /** The broker's name in errors and dead letters. Default `http`. */
  name?: string;
  /** Replaces the global fetch, e.g. to pass an undici `dispatcher` for a proxy or client certificates. */
  fetch?: typeof globalThis.fetch;
}

export const SIGNATURE_HEADER = 'txoutbox-signature';
const DEFAULT_TOLERANCE_SECONDS = 300;
const MIN_SECRET_BYTES = 16;
/** Enough of an error body to say what went wrong, short enough for the outbox row's last_error. */
const ERROR_SNIPPET_CHARS = 200;
/** Bodies up to this size are read to the end so the connection can be reused; larger ones are cancelled. */
const DRAIN_BYTES = 64 * 1024;
/** The answer is in the status line; a body that trickles in is not waited for longer than this. */
const BODY_GRACE_MS = 1000;

const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;
/** Headers that fetch/undici manages itself: set by hand they are refused or silently replaced. */
const CONNECTION_HEADERS = new Set([
  'host',
  'connection',
  'content-length',
  'transfer-encoding',
  'keep-alive',
  'upgrade',
  'expect',
]);
/** Headers the adapter sets from the message itself. */
const ADAPTER_HEADERS = new Set(['content-type', 'idempotency-key']);

/** Why a URL (template) cannot be used, or null. */
function urlProblem(template: string): string | null {
  const unknown = /\{([^}]*)\}/g.exec(template.replaceAll('{topic}', ''));
  if (unknown !== null) return `has an unknown placeholder {${unknown[1]}} (only {topic} is replaced)`;
  let url: URL;
  try {
    url = new URL(template.replaceAll('{topic}', 'topic'));
  } catch {
    return 'is not a valid absolute URL';
  }
  return parsedUrlProblem(url);
}

function parsedUrlProblem(url: URL): string | null {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `must be an http:// or https:// URL, got ${url.protocol}`;
  // fetch refuses URLs with credentials; say so now rather than on every publish.
  if (url.username !== '' || url.password !== '')
    return 'must not contain credentials: send them in headers (e.g. authorization)';
  return null;
}

/** Why a string cannot travel as an HTTP header value unchanged, or null. */
function headerValueProblem(value: string): string | null {
  for (let index = 0; index < value.length; index++) {
    const code = value.charCodeAt(index);
    if (code > 0xff) return `has a character above U+00FF at index ${index}, which an HTTP header cannot carry`;
    if ((code < 0x20 && code !== 0x09) || code === 0x7f) {
      return `has a control character (U+${code.toString(16).padStart(4, '0')}) at index ${index}`;
    }
  }
  if (/^[ \t]|[ \t]$/.test(value)) return 'has leading or trailing whitespace, which HTTP would strip';
  return null;
}

const urlTemplate = z.string().superRefine((value, context) => {
  const problem = urlProblem(value);
  if (problem !== null) context.addIssue({ code: 'custom', message: problem });
});

const schema = z
  .object({
    url: urlTemplate.optional(),
    routes: z
      .custom<Readonly<Record<string, string>> | HttpRouteFunction>(
        (value) => typeof value === 'function' || (typeof value === 'object' && value !== null && !Array.isArray(value)),
        'must be an object of topic → URL, or a function (topic, message) => URL',
      )
      .superRefine((routes, context) => {
        if (typeof routes !== 'object' || routes === null) return;
        for (const [topic, url] of Object.entries(routes)) {
          const problem =
            topic === '' ? 'a topic must not be empty' : typeof url !== 'string' ? 'must be a URL string' : urlProblem(url);
          if (problem !== null) context.addIssue({ code: 'custom', path: [topic], message: problem });
        }
      })
      .optional(),
    headers: z
      .record(z.string(), z.string())
      .superRefine((headers, context) => {
        const seen = new Set<string>();
        for (const [name, value] of Object.entries(headers)) {
          const lower = name.toLowerCase();
          const problem = !HEADER_NAME.test(name)
            ? 'is not a valid header name'
            : lower.startsWith(OWN_HEADER_PREFIX) || ADAPTER_HEADERS.has(lower)
              ? 'is set by the adapter from the message itself'
              : CONNECTION_HEADERS.has(lower)
                ? 'is managed by the HTTP client'
                : seen.has(lower)
                  ? 'is given twice (header names are case-insensitive)'
                  : headerValueProblem(value);
          seen.add(lower);
          if (problem !== null) context.addIssue({ code: 'custom', path: [name], message: problem });
        }
      })
      .optional(),
    timeoutMs: z.number().int().min(1).max(3_600_000).optional(),
    maxConcurrentRequests: z.number().int().min(1).max(1000).default(16),
    signingSecret: z
      .union([z.string(), z.instanceof(Uint8Array)])
      .refine((secret) => (typeof secret === 'string' ? Buffer.byteLength(secret) : secret.byteLength) >= MIN_SECRET_BYTES, {
        message: `must be at least ${MIN_SECRET_BYTES} bytes, e.g. randomBytes(32).toString('hex')`,
      })
      .optional(),
    name: z.string().min(1).max(100).default('http'),
    fetch: z.custom<typeof globalThis.fetch>((value) => typeof value === 'function', 'fetch must be a function').optional(),
  })
  .strict()
  .refine((options) => options.url !== undefined || options.routes !== undefined, {
    message: 'give url (a default endpoint, may contain {topic}) or routes (topic → URL, or a function), or both',
  });

/** Publishes each message as an HTTP POST to its topic's URL. Create it with `createHttpBroker`. */
export class HttpBroker implements Broker, MessageRouter<URL> {
  readonly name: string;
  private readonly url: string | undefined;
  private readonly routes: Map<string, string> | HttpRouteFunction | undefined;
  private readonly headers: [string, string][];
  /** The configured header names, lower-cased: a message may not set them. */
  private readonly configuredNames: Set<string>;
  private readonly timeoutMs: number | undefined;
  private readonly maxConcurrentRequests: number;
  private readonly secret: Buffer | undefined;
  private readonly fetch: typeof globalThis.fetch;
  /** Aborts every batch in flight; close() calls them. */
  private readonly inFlight = new Set<(reason: string) => void>();
  private closed = false;

  constructor(options: HttpBrokerOptions) {
    const resolved = parseOptions(schema, options, 'createHttpBroker');
    this.name = resolved.name;
    this.url = resolved.url;
    const routes = resolved.routes;
    // A Map, so that a topic named like an Object.prototype member ("constructor") is not routed by accident.
    this.routes = typeof routes === 'function' || routes === undefined ? routes : new Map(Object.entries(routes));
    this.headers = Object.entries(resolved.headers ?? {});
    this.configuredNames = new Set(this.headers.map(([name]) => name.toLowerCase()));
    this.timeoutMs = resolved.timeoutMs;
    this.maxConcurrentRequests = resolved.maxConcurrentRequests;
    const secret = resolved.signingSecret;
    this.secret = secret === undefined ? undefined : typeof secret === 'string' ? Buffer.from(secret) : Buffer.from(secret);
    this.fetch = resolved.fetch ?? globalThis.fetch;
  }

  async publish(messages: readonly OutgoingMessage[], { signal }: PublishContext): Promise<PublishOutcome[]> {
    if (messages.length === 0) return [];
    if (this.closed) return messages.map(() => retryable('the broker is closed'));
    if (signal.aborted) return messages.map(() => retryable(`aborted before sending: ${abortReason(signal)}`));

    // One controller for the batch, so one listener on the caller's signal is enough however large the batch.
    const batch = new AbortController();
    setMaxListeners(this.maxConcurrentRequests + 10, batch.signal);
    let why: string | null = null;
    const abort = (reason: string) => {
      if (why !== null) return;
      why = reason;
      batch.abort(new Error(reason));
    };
    const stopListening = onAbort(signal, () => abort(`aborted by the caller (${abortReason(signal)})`));
    this.inFlight.add(abort);
    try {
      // A batch holds at most one message per key, so its requests may run in parallel (up to the limit).
      const outcomes = new Array<PublishOutcome>(messages.length);
      let next = 0;
      const worker = async () => {
        while (next < messages.length) {
          const index = next++;
          outcomes[index] = await this.publishOne(messages[index]!, batch.signal, () => why);
        }
      };
      await Promise.all(Array.from({ length: Math.min(this.maxConcurrentRequests, messages.length) }, worker));
      return outcomes;
    } finally {
      stopListening();
      this.inFlight.delete(abort);
    }
  }

  /** Aborts requests in flight (their outcome: retryable) and refuses further publishes. */
  async close(): Promise<void> {
    this.closed = true;
    for (const abort of this.inFlight) abort('the broker was closed');
    this.inFlight.clear();
  }

  private async publishOne(
    message: OutgoingMessage,
    batch: AbortSignal,
    batchAborted: () => string | null,
  ): Promise<PublishOutcome> {
    if (batch.aborted) return retryable(`not sent: ${batchAborted()}`);
    const routed = this.route(message);
    if ('refused' in routed) return permanent(routed.refused);
    const target = routed.to;
    const problem = wireProblem(message) ?? this.overrideProblem(message);
    if (problem !== null) return permanent(problem);
    // Never the query string: it may hold a token, and errors are stored in the outbox row.
    const where = `POST ${target.origin}${target.pathname}`;

    // The timeout starts when this request does, not when the batch did: requests may wait for a free slot.
    const request = new AbortController();
    const onBatchAbort = () => request.abort(batch.reason);
    batch.addEventListener('abort', onBatchAbort, { once: true });
    let timedOut = false;
    const timer =
      this.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            request.abort(new Error(`no response within ${this.timeoutMs} ms`));
          }, this.timeoutMs);
    try {
      return await this.send(message, target, where, request.signal, () =>
        timedOut ? `no response within ${this.timeoutMs} ms` : batchAborted(),
      );
    } finally {
      clearTimeout(timer);
      batch.removeEventListener('abort', onBatchAbort);
    }
  }

  private async send(
    message: OutgoingMessage,
    target: URL,
    where: string,
    signal: AbortSignal,
    aborted: () => string | null,
  ): Promise<PublishOutcome> {
    let response: Response;
    try {
      response = await this.fetch(target, {
        method: 'POST',
        headers: this.requestHeaders(message),
        body: message.payload,
        // Following a 301/302 would turn the POST into a GET without body, whose 200 would be a false ack.
        redirect: 'manual',
        signal,
      });
    } catch (error) {
      const reason = aborted();
      if (reason !== null) return retryable(`${where}: ${reason}; outcome unknown, resent with the same id`);
      return retryable(`${where} failed: ${errorChainText(error)}`);
    }
    // Always read or cancel the body: an unread one keeps its pooled socket busy until garbage collection.
    const body = await readBody(response, 4 * ERROR_SNIPPET_CHARS);
    const { status } = response;
    if (status >= 200 && status < 300) return OK;

    let error = `${where} answered ${status}${response.statusText ? ` ${response.statusText}` : ''}`;
    if (status >= 300 && status < 400) {
      const location = response.headers.get('location');
      error += `: a redirect${location === null ? '' : ` to ${redactedUrl(location, target)}`}, which is not followed (configure the final URL)`;
    }
    const snippet = body.toString('utf8').replace(/\s+/g, ' ').trim();
    if (snippet !== '')
      error += `: ${snippet.length > ERROR_SNIPPET_CHARS ? `${snippet.slice(0, ERROR_SNIPPET_CHARS)}…` : snippet}`;
    if (status === 408 || status === 429 || status >= 500) return retryable(error);
    if (status >= 300 && status < 500) return permanent(error);
    return retryable(error);
  }

  /** The URL a message is posted to: its route (a `routes` entry, or the function's answer), else `url`. */
  route(message: OutgoingMessage): Route<URL> {
    const { topic } = message;
    let chosen: string | URL | null | undefined;
    if (typeof this.routes === 'function') {
      try {
        chosen = this.routes(topic, message);
      } catch (error) {
        return { refused: `routes(${JSON.stringify(topic)}) threw: ${errorChainText(error)}` };
      }
      if (chosen !== null && chosen !== undefined && typeof chosen !== 'string' && !(chosen instanceof URL)) {
        return { refused: `routes(${JSON.stringify(topic)}) returned ${typeof chosen}, not a URL or string` };
      }
    } else {
      chosen = this.routes?.get(topic);
    }
    chosen ??= this.url;
    if (chosen === undefined || chosen === null)
      return { refused: `no route for topic ${JSON.stringify(topic)}: add it to routes, or set url` };
    let url: URL;
    if (typeof chosen === 'string') {
      const template = urlProblem(chosen);
      if (template !== null) return { refused: `the URL for topic ${JSON.stringify(topic)} ${template}` };
      url = new URL(chosen.replaceAll('{topic}', encodeURIComponent(topic)));
    } else {
      url = chosen;
    }
    const problem = parsedUrlProblem(url);
    return problem === null ? { to: url } : { refused: `the URL for topic ${JSON.stringify(topic)} ${problem}` };
  }

  /** A message header that would replace a configured one (its authorization, say), or null. */
  private overrideProblem(message: OutgoingMessage): string | null {
    const name = Object.keys(message.headers).find((candidate) => this.configuredNames.has(candidate.toLowerCase()));
    if (name === undefined) return null;
    return (
      `header ${JSON.stringify(name)} is set by the HTTP broker's configuration (headers) and a message may not ` +
      'override it; rename the message header, or drop the configured one if messages should choose it'
    );
  }

  private requestHeaders(message: OutgoingMessage): Headers {
    const headers = new Headers(this.headers);
    for (const [name, value] of Object.entries(message.headers)) {
      // txoutbox-* names are the adapter's (enqueue refuses them); a stray one must not pose as ours.
      if (!name.toLowerCase().startsWith(OWN_HEADER_PREFIX)) headers.set(name, value);
    }
    headers.set('content-type', message.contentType);
    headers.set('idempotency-key', message.id);
    for (const [name, value] of Object.entries(txoutboxHeaders(message))) headers.set(name, value);
    if (this.secret !== undefined) {
      headers.set(SIGNATURE_HEADER, signatureHeader(this.secret, Math.floor(Date.now() / 1000), message.id, message.payload));
    }
    return headers;
  }
}

/** Why a message cannot be sent over HTTP as it is (so retrying cannot help), or null. */
function wireProblem(message: OutgoingMessage): string | null {
  const fields: [string, string | null][] = [
    ['id', message.id],
    ['key', message.key],
    ['contentType', message.contentType],
  ];
  for (const [field, value] of fields) {
    if (value === null) continue;
    const problem = value === '' ? 'is empty' : headerValueProblem(value);
    if (problem !== null) return `the message's ${field} ${problem}`;
  }
  for (const [name, value] of Object.entries(message.headers)) {
    const lower = name.toLowerCase();
    const problem = !HEADER_NAME.test(name)
      ? 'is not a valid HTTP header name'
      : CONNECTION_HEADERS.has(lower)
        ? 'is managed by the HTTP client and cannot be set by a message'
        : headerValueProblem(value);
    if (problem !== null) return `header ${JSON.stringify(name)} ${problem}`;
  }
  return null;
}

/** Reads up to `keepBytes` of the body, drains it up to DRAIN_BYTES so the socket can be reused, else cancels. */
async function readBody(response: Response, keepBytes: number): Promise<Buffer> {
  if (response.body === null) return Buffer.alloc(0);
  const reader = response.body.getReader();
  const chunks: Buffer[] = [];
  let size = 0;
  const timer = setTimeout(() => void reader.cancel().catch(() => undefined), BODY_GRACE_MS);
  try {
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) break;
      const value = chunk.value as Uint8Array;
      if (size < keepBytes) chunks.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
      size += value.byteLength;
      if (size >= DRAIN_BYTES) {
        await reader.cancel();
        break;
      }
    }
  } catch {
    // Aborted or reset mid-body: the status line already said what happened.
  } finally {
    clearTimeout(timer);
  }
  return Buffer.concat(chunks).subarray(0, keepBytes);
}

function redactedUrl(location: string, base: URL): string {
  try {
    const url = new URL(location, base);
    return `${url.origin}${url.pathname}`;
  } catch {
    return 'an invalid URL';
  }
}

/** fetch rejects with TypeError('fetch failed'); what happened (ECONNREFUSED, a reset, ...) is in its causes. */
function errorChainText(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    if (!(current instanceof Error)) {
      parts.push(String(current));
      break;
    }
    const code = (current as { code?: unknown }).code;
    const text = typeof code === 'string' && !current.message.includes(code) ? `${current.message} (${code})` : current.message;
    if (text !== 'fetch failed') parts.push(text);
    current = current.cause;
  }
  return parts.join(': ') || 'fetch failed';
}

function hmac(secret: Uint8Array | string, timestamp: number, id: string, body: Uint8Array | string): Buffer {
  // The id is signed as the txoutbox-id header's bytes (Latin-1; ASCII for every id in practice), so receivers in
  // any language can sign exactly what they received. Signing it at all stops a body being replayed under a new id.
  return createHmac('sha256', secret).update(`${timestamp}.`).update(id, 'latin1').update('.').update(body).digest();
}

function signatureHeader(secret: Uint8Array, timestamp: number, id: string, body: Uint8Array): string {
  return `t=${timestamp},v1=${hmac(secret, timestamp, id, body).toString('hex')}`;
}

/** Makes a `txoutbox-signature` header value, e.g. to test a receiver. `timestamp` in unix seconds (default now). */
export function signWebhook(options: {
  secret: string | Uint8Array;
  id: string;
  body: Uint8Array | string;
  timestamp?: number;
}): string {
  const timestamp = options.timestamp ?? Math.floor(Date.now() / 1000);
  const secret = typeof options.secret === 'string' ? Buffer.from(options.secret) : options.secret;
  return signatureHeader(
    secret,
    timestamp,
    options.id,
    typeof options.body === 'string' ? Buffer.from(options.body) : options.body,
  );
}

export interface VerifyWebhookSignatureOptions {
  /** The signing secret, or several while rotating (any one may match). */
  secret: string | Uint8Array | readonly (string | Uint8Array)[];
  /** The `txoutbox-signature` header as received. */
  header: string | null | undefined;
  /** The `txoutbox-id` header as received. */
  id: string;
  /** The raw request body, byte for byte: a re-serialized JSON body will not verify. */
  body: Uint8Array | string;
  /** Largest accepted distance between the signature's time and now, either way. Default 300. */
  toleranceSeconds?: number;
  /** The current time, for tests. Default Date.now(). */
  now?: Date | number;
}

/**
 * True when `header` holds a v1 signature of (its timestamp, `id`, `body`) made with `secret`, and its timestamp
 * is within `toleranceSeconds` of now. Comparison is constant-time. Answer 401 (not 2xx) when it is false.
 */
export function verifyWebhookSignature(options: VerifyWebhookSignatureOptions): boolean {
  const secrets = (Array.isArray(options.secret) ? options.secret : [options.secret]) as readonly (string | Uint8Array)[];
  if (secrets.length === 0 || secrets.some((secret) => secret.length === 0)) {
    throw new ConfigError('verifyWebhookSignature needs a non-empty secret');
  }
  const tolerance = options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
  if (!(tolerance >= 0)) throw new ConfigError('verifyWebhookSignature: toleranceSeconds must be a number ≥ 0');
  if (typeof options.header !== 'string') return false;

  let timestamp: number | null = null;
  const candidates: Buffer[] = [];
  for (const part of options.header.split(',')) {
    const [name, value = ''] = part.trim().split('=', 2) as [string, string?];
    if (name === 't' && /^\d{1,12}$/.test(value)) timestamp = Number(value);
    else if (name === 'v1' && /^[0-9a-f]{64}$/i.test(value)) candidates.push(Buffer.from(value, 'hex'));
  }
  if (timestamp === null || candidates.length === 0) return false;
  const now = options.now === undefined ? Date.now() : Number(options.now);
  if (Math.abs(Math.floor(now / 1000) - timestamp) > tolerance) return false;

  const body = typeof options.body === 'string' ? Buffer.from(options.body) : options.body;
  let valid = false;
  for (const secret of secrets) {
    const expected = hmac(secret, timestamp, options.id, body);
    // Check every candidate without returning early, so timing says nothing about which one matched.
    for (const candidate of candidates) valid = timingSafeEqual(expected, candidate) || valid;
  }
  return valid;
}

/**
 * Creates an HTTP webhook broker. Throws a ConfigError when the options are wrong.
 *
 * @example
 * ```ts
 * import { createRelay } from 'txoutbox';
 * import { createHttpBroker } from 'txoutbox/http';
 *
 * const broker = createHttpBroker({
 *   url: 'https://hooks.example.com/outbox/{topic}',
 *   headers: { authorization: `Bearer ${process.env.HOOK_TOKEN}` },
 *   signingSecret: process.env.HOOK_SECRET!,
 * });
 * const relay = createRelay({ db, dialect: 'postgres', broker });
 * ```
 */
export function createHttpBroker(options: HttpBrokerOptions): HttpBroker {
  return new HttpBroker(options);
}
