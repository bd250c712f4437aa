import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { createHttpBroker, verifyWebhookSignature } from '../../../src/brokers/http.js';
import type { BrokerFixture, BrokerUnderTest, ReceivedMessage } from './contract.js';

/** One complete request as the receiver read it. */
export interface ReceivedRequest {
  method: string;
  /** Path and query string, as sent. */
  path: string;
  /** As Node parsed them: names lowercased. */
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** Which TCP connection carried it (1, 2, ... in the order the receiver accepted them). */
  connection: number;
}

export interface WebhookReceiverOptions {
  /** When set, `/hooks/` requests must carry a valid txoutbox-signature, or get a 401. */
  signingSecret?: string;
  /** When set, `/hooks/` requests must carry exactly this authorization header, or get a 401. */
  authorization?: string;
}

/**
 * A real webhook receiver on 127.0.0.1 (node:http, random port), whose behaviour is chosen by the path:
 * - `/hooks/...`        stores the request (in `accepted`), then answers 200: the ack comes after the store.
 * - `/missing...`       404, as an endpoint that does not exist.
 * - `/status/<code>`    answers that status; `?body=<text>` or `?size=<bytes>` for the body; 3xx redirect to /hooks/redirected.
 * - `/hang`             never answers.
 * - `/slow/<ms>`        stores and answers 200 after that long.
 * - `/reset`            destroys the connection without answering.
 * - `/ok-then-stall`    sends a 200 status line and part of a body, then nothing more.
 * - `/flaky/<n>`        answers 503 to the first n requests of each txoutbox-id, then stores and answers 200.
 * - `/gate/...`         as `gate` says: 'open' stores and answers 200, 'hold' keeps the request waiting until the gate
 *                       changes, 'reject' answers 400 (a permanent failure).
 * Everything it receives is kept in this process, so it survives `restart()`.
 */
export class WebhookReceiver {
  /** Every complete request, whatever its answer. */
  readonly requests: ReceivedRequest[] = [];
  /** Requests that were stored and answered 2xx, in arrival order. */
  readonly accepted: ReceivedRequest[] = [];
  connectionsOpened = 0;
  openConnections = 0;
  /** Requests being handled right now, and the most there ever were at once. */
  inFlight = 0;
  maxInFlight = 0;
  private server: Server | null = null;
  private port = 0;
  private readonly connectionIds = new WeakMap<Socket, number>();
  private readonly flakyCounts = new Map<string, number>();
  private gateState: 'open' | 'hold' | 'reject' = 'open';
  private readonly held: (() => void)[] = [];

  constructor(private readonly options: WebhookReceiverOptions = {}) {}

  /** Listens on a random loopback port, or the same port again after `stop()`. */
  async start(): Promise<void> {
    if (this.server !== null) return;
    const server = createServer((request, response) => this.handle(request, response));
    server.on('connection', (socket) => {
      this.connectionIds.set(socket, ++this.connectionsOpened);
      this.openConnections++;
      socket.on('close', () => this.openConnections--);
    });
    // Reusing the port right after a close can race the kernel; try a few times.
    for (let attempt = 1; ; attempt++) {
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(this.port, '127.0.0.1', () => {
            server.off('error', reject);
            resolve();
          });
        });
        break;
      } catch (error) {
        if ((error as { code?: string }).code !== 'EADDRINUSE' || attempt >= 50) throw error;
        await sleep(100);
      }
    }
    this.port = (server.address() as { port: number }).port;
    this.server = server;
  }

  /** Closes the server and destroys every open connection, idle keep-alive ones and hanging requests included. */
  async stop(): Promise<void> {
    const server = this.server;
    if (server === null) return;
    this.server = null;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  /** Goes away for `gapMs` (connections are refused meanwhile), then listens on the same port again. */
  async restart(gapMs = 300): Promise<void> {
    await this.stop();
    await sleep(gapMs);
    await this.start();
  }

  url(path: string): string {
    if (this.port === 0) throw new Error('start() the receiver first');
    return `http://127.0.0.1:${this.port}${path}`;
  }

  /** Sets what `/gate/` requests get; requests held so far get the new answer now (unless it is 'hold' again). */
  gate(state: 'open' | 'hold' | 'reject'): void {
    this.gateState = state;
    if (state === 'hold') return;
    for (const answer of this.held.splice(0)) answer();
  }

  /** `/gate/` requests waiting for the gate right now. */
  heldAtGate(): number {
    return this.held.length;
  }

  /** Requests that arrived on a path starting with `prefix`. */
  requestsTo(prefix: string): ReceivedRequest[] {
    return this.requests.filter((request) => request.path.startsWith(prefix));
  }

  private handle(request: IncomingMessage, response: ServerResponse): void {
    this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
    response.once('close', () => this.inFlight--);
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const received: ReceivedRequest = {
        method: request.method ?? '',
        path: request.url ?? '',
        headers: request.headers,
        body: Buffer.concat(chunks),
        connection: this.connectionIds.get(request.socket) ?? 0,
      };
      this.requests.push(received);
      this.respond(received, request, response);
    });
  }

  private respond(received: ReceivedRequest, request: IncomingMessage, response: ServerResponse): void {
    const url = new URL(received.path, 'http://receiver');
    const [, kind = '', arg = ''] = url.pathname.split('/');
    const answer = (status: number, body: string | Buffer, headers: Record<string, string> = {}) => {
      response.writeHead(status, { 'content-type': 'text/plain', ...headers });
      response.end(body);
    };
    const store = () => {
      this.accepted.push(received);
      answer(200, 'stored');
    };
    switch (kind) {
      case 'hooks': {
        const { authorization, signingSecret } = this.options;
        if (authorization !== undefined && received.headers.authorization !== authorization)
          return answer(401, 'bad credentials');
        if (
          signingSecret !== undefined &&
          !verifyWebhookSignature({
            secret: signingSecret,
            header: header(received.headers, 'txoutbox-signature'),
            id: header(received.headers, 'txoutbox-id') ?? '',
            body: received.body,
          })
        ) {
          return answer(401, 'bad signature');
        }
        return store();
      }
      case 'missing':
        return answer(404, 'no such webhook');
      case 'status': {
        const status = Number(arg);
        const size = url.searchParams.get('size');
        const body = size !== null ? Buffer.alloc(Number(size), 'x') : (url.searchParams.get('body') ?? `status ${status}`);
        return answer(status, body, status >= 300 && status < 400 ? { location: '/hooks/redirected?token=r3direct' } : {});
      }
      case 'hang':
        return;
      case 'slow':
        setTimeout(store, Number(arg));
        return;
      case 'reset':
        request.socket.destroy();
        return;
      case 'ok-then-stall':
        response.writeHead(200, { 'content-type': 'text/plain' });
        response.write('partial body that never ends');
        return;
      case 'gate': {
        const pass = () => (this.gateState === 'reject' ? answer(400, 'rejected at the gate') : store());
        if (this.gateState === 'hold') this.held.push(pass);
        else pass();
        return;
      }
      case 'flaky': {
        const id = header(received.headers, 'txoutbox-id') ?? '';
        const seen = (this.flakyCounts.get(id) ?? 0) + 1;
        this.flakyCounts.set(id, seen);
        return seen <= Number(arg) ? answer(503, 'try again later') : store();
      }
      default:
        return answer(404, 'unknown path');
    }
  }
}

/** One header as a string (Node gives arrays only for set-cookie). */
export function header(headers: IncomingHttpHeaders, name: string): string | null {
  const value = headers[name];
  return value === undefined ? null : Array.isArray(value) ? value.join(', ') : value;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** How the contract's consumer sees a stored request: txoutbox-* headers are fields, the rest are headers. */
export function toReceivedMessage(request: ReceivedRequest): ReceivedMessage {
  const headers: Record<string, string> = {};
  for (const name of Object.keys(request.headers)) {
    if (!name.startsWith('txoutbox-')) headers[name] = header(request.headers, name)!;
  }
  return {
    id: header(request.headers, 'txoutbox-id') ?? '',
    key: header(request.headers, 'txoutbox-key'),
    headers,
    payload: request.body,
    contentType: header(request.headers, 'content-type'),
  };
}

export const FIXTURE_SECRET = 'contract-signing-secret-0123456789';
export const FIXTURE_AUTHORIZATION = 'Bearer contract-token';

/**
 * Headers the contract must ignore: the adapter's own (content-type, idempotency-key; txoutbox-* are not headers
 * here), the static authorization the fixture configures, and what Node's fetch adds on its own.
 */
export const HTTP_OWN_HEADERS = [
  'content-type',
  'idempotency-key',
  'authorization',
  'host',
  'connection',
  'content-length',
  'user-agent',
  'accept',
  'accept-encoding',
  'accept-language',
  'sec-fetch-mode',
];

/**
 * The HTTP adapter against a real receiver that checks the static authorization header and the signature
 * before it stores anything: `topic` goes to `/hooks/{topic}` (the url template), `unroutableTopic` to a path
 * that answers 404 (a routes entry). restart() takes the receiver down, connections and all, and brings it
 * back on the same port.
 */
export function httpFixture(): BrokerFixture {
  let receiver: WebhookReceiver | null = null;
  return {
    name: 'http',
    dedupes: false,
    ownHeaders: HTTP_OWN_HEADERS,
    skipReason: async () => null,
    async open(): Promise<BrokerUnderTest> {
      const current = new WebhookReceiver({ signingSecret: FIXTURE_SECRET, authorization: FIXTURE_AUTHORIZATION });
      await current.start();
      receiver = current;
      const broker = createHttpBroker({
        url: current.url('/hooks/{topic}'),
        routes: { 'contract.unroutable': current.url('/missing/contract.unroutable') },
        headers: { authorization: FIXTURE_AUTHORIZATION },
        signingSecret: FIXTURE_SECRET,
        timeoutMs: 5000,
      });
      return {
        broker,
        topic: 'contract.events',
        unroutableTopic: 'contract.unroutable',
        received: async () => current.accepted.map(toReceivedMessage),
        async close() {
          await broker.close();
          await current.stop();
        },
      };
    },
    async restart() {
      if (receiver === null) throw new Error('open() the fixture before restart()');
      await receiver.restart();
    },
  };
}
