import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createHttpBroker,
  signWebhook,
  verifyWebhookSignature,
  type HttpBroker,
  type HttpBrokerOptions,
} from '../../../src/brokers/http.js';
import { ConfigError, createRelay } from '../../../src/index.js';
import { brokerContract, outgoing } from '../../support/brokers/contract.js';
import { header, httpFixture, WebhookReceiver } from '../../support/brokers/http-fixture.js';
import { createHarness, type Harness } from '../../support/harness.js';
import { settle } from '../../support/relay-helpers.js';

brokerContract(httpFixture());

const never = () => new AbortController().signal;
const SECRET = 'test-signing-secret-0123456789';

describe('http broker', () => {
  const receiver = new WebhookReceiver();
  const opened: HttpBroker[] = [];
  beforeAll(async () => receiver.start());
  afterAll(async () => {
    await Promise.all(opened.map((broker) => broker.close()));
    await receiver.stop();
  });
  const broker = (options: Partial<HttpBrokerOptions> = {}) => {
    const created = createHttpBroker({ url: receiver.url('/hooks/{topic}'), ...options });
    opened.push(created);
    return created;
  };
  /** Publishes one message to a receiver path (the topic is routed there). */
  const publishTo = async (path: string, options: Partial<HttpBrokerOptions> = {}) => {
    const message = outgoing('t', { key: `k-${Date.now()}` });
    const [outcome] = await broker({ routes: { t: receiver.url(path) }, ...options }).publish([message], { signal: never() });
    return { outcome: outcome!, message };
  };

  it('POSTs the exact payload bytes with the content type, id, key, topic, attempt, user and static headers', async () => {
    const keyed = outgoing('orders/created', {
      key: 'order-42',
      attempt: 3,
      contentType: 'application/octet-stream',
      payload: Buffer.from([0, 1, 2, 0xfe, 0xff, 0x0a]),
      headers: { 'x-tenant': 'acme', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
    });
    const keyless = outgoing('orders/created');
    const outcomes = await broker({ headers: { authorization: 'Bearer t0ken', 'x-static': 'config' } }).publish(
      [keyed, keyless],
      {
        signal: never(),
      },
    );
    expect(outcomes).toEqual([{ status: 'ok' }, { status: 'ok' }]);

    const got = receiver.accepted.find((r) => header(r.headers, 'txoutbox-id') === keyed.id)!;
    expect(got.method).toBe('POST');
    expect(got.path).toBe('/hooks/orders%2Fcreated');
    expect(got.body.equals(keyed.payload)).toBe(true);
    expect(got.headers).toMatchObject({
      'content-type': 'application/octet-stream',
      'idempotency-key': keyed.id,
      'txoutbox-id': keyed.id,
      'txoutbox-key': 'order-42',
      'txoutbox-topic': 'orders/created',
      'txoutbox-attempt': '3',
      'x-tenant': 'acme',
      traceparent: keyed.headers.traceparent,
      authorization: 'Bearer t0ken',
      // A message may not override a static header (see http-configured-headers.test.ts): every request has it.
      'x-static': 'config',
    });
    expect(got.headers['txoutbox-signature']).toBeUndefined();

    const gotKeyless = receiver.accepted.find((r) => header(r.headers, 'txoutbox-id') === keyless.id)!;
    expect(gotKeyless.headers['txoutbox-key']).toBeUndefined();
    expect(gotKeyless.headers['content-type']).toBe('application/json');
    expect(gotKeyless.headers['x-static']).toBe('config');
  });

  it('routes by the routes map, then the url template; a function route sees the message and may fall back', async () => {
    const byMap = outgoing('mapped');
    const byTemplate = outgoing('other');
    expect(
      await broker({ url: receiver.url('/hooks/default/{topic}'), routes: { mapped: receiver.url('/hooks/by-map') } }).publish(
        [byMap, byTemplate],
        { signal: never() },
      ),
    ).toEqual([{ status: 'ok' }, { status: 'ok' }]);
    const pathOf = (id: string) => receiver.requests.find((r) => header(r.headers, 'txoutbox-id') === id)?.path;
    expect(pathOf(byMap.id)).toBe('/hooks/by-map');
    expect(pathOf(byTemplate.id)).toBe('/hooks/default/other');

    const acme = outgoing('tenanted', { headers: { 'x-tenant': 'acme' } });
    const other = outgoing('tenanted', { headers: { 'x-tenant': 'globex' } });
    const seen: string[] = [];
    const byFunction = broker({
      url: receiver.url('/hooks/fallback'),
      routes: (topic, message) => {
        seen.push(topic);
        return message.headers['x-tenant'] === 'acme' ? new URL(receiver.url('/hooks/acme')) : undefined;
      },
    });
    expect(await byFunction.publish([acme, other], { signal: never() })).toEqual([{ status: 'ok' }, { status: 'ok' }]);
    expect(seen).toEqual(['tenanted', 'tenanted']);
    expect(pathOf(acme.id)).toBe('/hooks/acme');
    expect(pathOf(other.id)).toBe('/hooks/fallback');
  });

  it('reports a topic without a route, a throwing route and a non-http route as permanent, and sends nothing', async () => {
    const before = receiver.requests.length;
    const mapOnly = createHttpBroker({ routes: { known: receiver.url('/hooks/known') } });
    const [unrouted] = await mapOnly.publish([outgoing('unknown')], { signal: never() });
    expect(unrouted).toEqual({ status: 'permanent', error: expect.stringMatching(/no route for topic "unknown"/) });
    // A topic named like an Object.prototype member is not routed by accident.
    const [prototypeName] = await mapOnly.publish([outgoing('constructor')], { signal: never() });
    expect(prototypeName!.status).toBe('permanent');

    const throwing = createHttpBroker({
      routes: () => {
        throw new Error('tenant lookup failed');
      },
    });
    const [threw] = await throwing.publish([outgoing('x')], { signal: never() });
    expect(threw).toEqual({ status: 'permanent', error: expect.stringMatching(/threw: tenant lookup failed/) });

    const ftp = createHttpBroker({ routes: () => 'ftp://127.0.0.1/x' });
    const [notHttp] = await ftp.publish([outgoing('x')], { signal: never() });
    expect(notHttp).toEqual({ status: 'permanent', error: expect.stringMatching(/http:\/\/ or https:\/\//) });
    expect(receiver.requests.length).toBe(before);
  });

  it.each([
    [200, 'ok'],
    [201, 'ok'],
    [202, 'ok'],
    [204, 'ok'],
    [400, 'permanent'],
    [401, 'permanent'],
    [403, 'permanent'],
    [404, 'permanent'],
    [410, 'permanent'],
    [413, 'permanent'],
    [422, 'permanent'],
    [408, 'retryable'],
    [429, 'retryable'],
    [500, 'retryable'],
    [502, 'retryable'],
    [503, 'retryable'],
    [504, 'retryable'],
    [301, 'permanent'],
    [302, 'permanent'],
    [307, 'permanent'],
    [308, 'permanent'],
  ])('classifies HTTP %i as %s', async (status, expected) => {
    const redirectedBefore = receiver.requestsTo('/hooks/redirected').length;
    const { outcome } = await publishTo(`/status/${status}`);
    expect(outcome.status).toBe(expected);
    if (outcome.status !== 'ok') expect(outcome.error).toContain(`answered ${status}`);
    // Redirects are never followed (a POST turned into a GET could answer a false 200).
    expect(receiver.requestsTo('/hooks/redirected')).toHaveLength(redirectedBefore);
  });

  it('says what went wrong: the status, the start of the response body, and never the query string', async () => {
    const { outcome } = await publishTo('/status/503?token=s3cret&body=database%20is%20down');
    expect(outcome).toEqual({
      status: 'retryable',
      error: expect.stringContaining('answered 503 Service Unavailable: database is down'),
    });
    expect(outcome.status !== 'ok' && outcome.error).not.toContain('s3cret');

    const { outcome: big } = await publishTo('/status/500?size=1048576');
    expect(big.status).toBe('retryable');
    const error = big.status === 'ok' ? '' : big.error;
    expect(error.length).toBeLessThan(400);
    expect(error).toMatch(/answered 500 Internal Server Error: x{200}…$/);

    const { outcome: redirect } = await publishTo('/status/302');
    expect(redirect.status === 'ok' ? '' : redirect.error).toMatch(
      /redirect to http:\/\/127\.0\.0\.1:\d+\/hooks\/redirected, which is not followed/,
    );
    expect(redirect.status === 'ok' ? '' : redirect.error).not.toContain('r3direct');
  });

  it('reads or cancels every response body, so connections are reused and none is left hanging', async () => {
    // Its own receiver, so that no other test's pooled connections count.
    const own = new WebhookReceiver();
    await own.start();
    try {
      const http = createHttpBroker({
        routes: { medium: own.url('/status/503?size=32768'), huge: own.url('/status/500?size=1048576') },
      });
      for (let i = 0; i < 20; i++) {
        const [outcome] = await http.publish([outgoing('medium')], { signal: never() });
        expect(outcome!.status).toBe('retryable');
      }
      // An unread 32 KiB body would keep each socket busy: 20 connections instead of one.
      expect(own.connectionsOpened).toBeLessThanOrEqual(3);
      for (let i = 0; i < 20; i++) {
        const [outcome] = await http.publish([outgoing('huge')], { signal: never() });
        expect(outcome!.status).toBe('retryable');
      }
      // A huge body is cancelled after its start, which closes its socket rather than leaving it stuck.
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(own.openConnections).toBeLessThanOrEqual(3);
    } finally {
      await own.stop();
    }
  });

  it('treats a refused connection and a reset connection as retryable', async () => {
    const closedPort = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as { port: number };
        server.close(() => resolve(port));
      });
    });
    const refused = createHttpBroker({ url: `http://127.0.0.1:${closedPort}/hooks` });
    const [outcome] = await refused.publish([outgoing('t')], { signal: never() });
    expect(outcome).toEqual({ status: 'retryable', error: expect.stringContaining('ECONNREFUSED') });

    const { outcome: reset } = await publishTo('/reset');
    expect(reset.status).toBe('retryable');
  });

  it('gives up on a hanging receiver after timeoutMs ("outcome unknown"), without failing the rest of the batch', async () => {
    // One request at a time: the second one's timeout starts when it is sent, not when the batch started.
    const http = broker({
      timeoutMs: 300,
      maxConcurrentRequests: 1,
      routes: { stuck: receiver.url('/hang'), slow: receiver.url('/slow/200') },
    });
    const stuck = outgoing('stuck');
    const slow = outgoing('slow');
    const started = Date.now();
    const outcomes = await http.publish([stuck, slow], { signal: never() });
    const elapsed = Date.now() - started;
    expect(outcomes[0]).toEqual({
      status: 'retryable',
      error: expect.stringMatching(/no response within 300 ms; outcome unknown/),
    });
    expect(outcomes[1]).toEqual({ status: 'ok' });
    expect(elapsed).toBeGreaterThanOrEqual(450);
    expect(elapsed).toBeLessThan(3000);
  });

  it("stops when the relay's signal aborts, and sends nothing when it is already aborted", async () => {
    const http = broker({ routes: { stuck: receiver.url('/hang') } });
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('publish deadline passed')), 100);
    const started = Date.now();
    const [outcome] = await http.publish([outgoing('stuck')], { signal: controller.signal });
    expect(Date.now() - started).toBeLessThan(2000);
    expect(outcome).toEqual({ status: 'retryable', error: expect.stringMatching(/publish deadline passed.*outcome unknown/) });

    const before = receiver.requests.length;
    const [early] = await http.publish([outgoing('t')], { signal: AbortSignal.abort(new Error('the relay is stopping')) });
    expect(early).toEqual({ status: 'retryable', error: expect.stringContaining('the relay is stopping') });
    expect(receiver.requests.length).toBe(before);
  });

  it('acknowledges on the 2xx status line, not waiting for a body that never ends', async () => {
    const started = Date.now();
    const { outcome } = await publishTo('/ok-then-stall', { timeoutMs: 10_000 });
    expect(outcome).toEqual({ status: 'ok' });
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it("publishes a batch's messages in parallel", async () => {
    const http = broker({ routes: { slow: receiver.url('/slow/400') } });
    const messages = Array.from({ length: 10 }, (_, i) => outgoing('slow', { key: `parallel-${i}` }));
    const started = Date.now();
    const outcomes = await http.publish(messages, { signal: never() });
    expect(outcomes.every((o) => o.status === 'ok')).toBe(true);
    // One after the other it would take 4 s.
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('keeps at most maxConcurrentRequests requests of a batch in flight', async () => {
    const own = new WebhookReceiver();
    await own.start();
    try {
      const http = createHttpBroker({ url: own.url('/slow/150'), maxConcurrentRequests: 3 });
      const messages = Array.from({ length: 9 }, (_, i) => outgoing('slow', { key: `bounded-${i}` }));
      const outcomes = await http.publish(messages, { signal: never() });
      expect(outcomes.every((o) => o.status === 'ok')).toBe(true);
      expect(own.maxInFlight).toBe(3);
      expect(own.accepted).toHaveLength(9);
    } finally {
      await own.stop();
    }
  });

  it.each([
    ['a header value with a newline', { headers: { 'x-note': 'a\r\nx-injected: 1' } }, /header "x-note" has a control character/],
    ['a header value beyond Latin-1', { headers: { 'x-note': 'coffee ☕' } }, /above U\+00FF/],
    ['a header value with surrounding spaces', { headers: { 'x-note': ' padded' } }, /whitespace/],
    ['a header the HTTP client owns', { headers: { connection: 'close' } }, /header "connection" is managed by the HTTP client/],
    ['a host header', { headers: { Host: 'elsewhere.example' } }, /header "Host" is managed/],
    ['a key with a newline', { key: 'a\nb' }, /key has a control character/],
    ['an id beyond Latin-1', { id: 'id-☕' }, /id has a character above/],
  ])('refuses %s as permanent and sends nothing', async (_what, overrides, error) => {
    const before = receiver.requests.length;
    const [outcome] = await broker().publish([outgoing('t', overrides)], { signal: never() });
    expect(outcome).toEqual({ status: 'permanent', error: expect.stringMatching(error) });
    expect(receiver.requests.length).toBe(before);
  });

  it('carries Latin-1 header values intact', async () => {
    const message = outgoing('t', { headers: { 'x-name': 'José Müller' } });
    expect(await broker().publish([message], { signal: never() })).toEqual([{ status: 'ok' }]);
    const got = receiver.accepted.find((r) => header(r.headers, 'txoutbox-id') === message.id)!;
    expect(got.headers['x-name']).toBe('José Müller');
  });

  it('close() aborts requests in flight and refuses further publishes', async () => {
    const http = createHttpBroker({ url: receiver.url('/hang') });
    const pending = http.publish([outgoing('t')], { signal: never() });
    await new Promise((resolve) => setTimeout(resolve, 100));
    await http.close();
    expect(await pending).toEqual([
      { status: 'retryable', error: expect.stringMatching(/the broker was closed; outcome unknown/) },
    ]);
    const before = receiver.requests.length;
    expect(await http.publish([outgoing('t')], { signal: never() })).toEqual([
      { status: 'retryable', error: 'the broker is closed' },
    ]);
    expect(receiver.requests.length).toBe(before);
  });

  describe('signatures', () => {
    it('signs every request so the receiver can verify the id and body it got', async () => {
      const message = outgoing('signed', { payload: Buffer.from('{"amount":100}') });
      expect(await broker({ signingSecret: SECRET }).publish([message], { signal: never() })).toEqual([{ status: 'ok' }]);
      const got = receiver.accepted.find((r) => header(r.headers, 'txoutbox-id') === message.id)!;
      const signature = header(got.headers, 'txoutbox-signature');
      expect(signature).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
      expect(Math.abs(Number(/t=(\d+)/.exec(signature!)![1]) - Date.now() / 1000)).toBeLessThan(10);
      expect(
        verifyWebhookSignature({ secret: SECRET, header: signature, id: header(got.headers, 'txoutbox-id')!, body: got.body }),
      ).toBe(true);
    });

    it('documents the scheme exactly: hex HMAC-SHA256 of "<t>.<id>.<body>"', async () => {
      const { createHmac } = await import('node:crypto');
      const expected = createHmac('sha256', SECRET).update('1700000000.msg-1.{"a":1}').digest('hex');
      expect(signWebhook({ secret: SECRET, id: 'msg-1', body: '{"a":1}', timestamp: 1_700_000_000 })).toBe(
        `t=1700000000,v1=${expected}`,
      );
    });

    const signedAt = 1_700_000_000;
    const body = Buffer.from('{"orderId":42}');
    const valid = signWebhook({ secret: SECRET, id: 'msg-1', body, timestamp: signedAt });
    const verify = (overrides: Partial<Parameters<typeof verifyWebhookSignature>[0]>) =>
      verifyWebhookSignature({ secret: SECRET, header: valid, id: 'msg-1', body, now: signedAt * 1000, ...overrides });

    it('verifies a good signature, within the tolerance either way', () => {
      expect(verify({})).toBe(true);
      expect(verify({ now: (signedAt + 300) * 1000 })).toBe(true);
      expect(verify({ now: (signedAt - 300) * 1000 })).toBe(true);
    });

    it.each([
      ['a tampered body', { body: Buffer.from('{"orderId":43}') }],
      ['another id (a body replayed under a new id)', { id: 'msg-2' }],
      ['another secret', { secret: 'another-secret-0123456789' }],
      ['an expired timestamp', { now: (signedAt + 301) * 1000 }],
      ['a timestamp from the future', { now: (signedAt - 301) * 1000 }],
      ['a missing header', { header: undefined }],
      ['a header without v1', { header: `t=${signedAt}` }],
      ['a header without t', { header: valid.replace(/^t=\d+,/, '') }],
      ['a changed timestamp', { header: valid.replace(`t=${signedAt}`, `t=${signedAt + 1}`) }],
      ['garbage', { header: 'not a signature' }],
    ])('refuses %s', (_what, overrides) => {
      expect(verify(overrides)).toBe(false);
    });

    it('accepts any of several secrets while they are rotated, and any of several v1 values', () => {
      expect(verify({ secret: ['the-new-secret-0123456789', SECRET] })).toBe(true);
      const other = signWebhook({ secret: 'the-new-secret-0123456789', id: 'msg-1', body, timestamp: signedAt }).split(',')[1];
      expect(verify({ header: `${valid},${other}`, secret: 'the-new-secret-0123456789' })).toBe(true);
      expect(() => verify({ secret: [] })).toThrow(ConfigError);
    });

    it('a receiver checking signatures with another secret answers 401, which is permanent', async () => {
      const checking = new WebhookReceiver({ signingSecret: 'receiver-secret-0123456789' });
      await checking.start();
      try {
        const http = createHttpBroker({ url: checking.url('/hooks/{topic}'), signingSecret: SECRET });
        const [outcome] = await http.publish([outgoing('t')], { signal: never() });
        expect(outcome).toEqual({
          status: 'permanent',
          error: expect.stringContaining('answered 401 Unauthorized: bad signature'),
        });
        expect(checking.accepted).toHaveLength(0);
      } finally {
        await checking.stop();
      }
    });
  });

  describe('options', () => {
    it.each([
      ['no url and no routes', {}, /give url .* or routes/],
      ['an ftp url', { url: 'ftp://127.0.0.1/hooks' }, /url: must be an http:\/\/ or https:\/\/ URL, got ftp:/],
      ['a file url', { url: 'file:///etc/passwd' }, /url: must be an http/],
      ['a relative url', { url: '/hooks' }, /url: is not a valid absolute URL/],
      ['a url with credentials', { url: 'http://user:pass@127.0.0.1/hooks' }, /url: must not contain credentials/],
      ['an unknown placeholder', { url: 'http://127.0.0.1/{topik}' }, /unknown placeholder \{topik\}/],
      ['a bad route', { routes: { 'orders.created': 'mailto:x@example.com' } }, /routes\.orders\.created: must be an http/],
      [
        'routes that are neither map nor function',
        { routes: 'http://127.0.0.1/' },
        /routes: must be an object of topic → URL, or a function/,
      ],
      [
        'a header the adapter sets',
        { url: 'http://127.0.0.1/', headers: { 'Idempotency-Key': 'x' } },
        /headers\.Idempotency-Key: is set by the adapter/,
      ],
      [
        'a txoutbox header',
        { url: 'http://127.0.0.1/', headers: { 'txoutbox-id': 'x' } },
        /headers\.txoutbox-id: is set by the adapter/,
      ],
      [
        'a header the client owns',
        { url: 'http://127.0.0.1/', headers: { host: 'x' } },
        /headers\.host: is managed by the HTTP client/,
      ],
      [
        'a header value with a newline',
        { url: 'http://127.0.0.1/', headers: { authorization: 'a\nb' } },
        /headers\.authorization: has a control/,
      ],
      ['a header given twice', { url: 'http://127.0.0.1/', headers: { 'X-A': '1', 'x-a': '2' } }, /given twice/],
      ['an invalid header name', { url: 'http://127.0.0.1/', headers: { 'x a': '1' } }, /not a valid header name/],
      ['a zero timeoutMs', { url: 'http://127.0.0.1/', timeoutMs: 0 }, /timeoutMs/],
      ['a fractional maxConcurrentRequests', { url: 'http://127.0.0.1/', maxConcurrentRequests: 1.5 }, /maxConcurrentRequests/],
      [
        'a short signing secret',
        { url: 'http://127.0.0.1/', signingSecret: 'short' },
        /signingSecret: must be at least 16 bytes/,
      ],
      ['an unknown option', { url: 'http://127.0.0.1/', retries: 3 }, /retries/],
    ])('refuses %s with a ConfigError', (_what, options, message) => {
      expect(() => createHttpBroker(options as HttpBrokerOptions)).toThrow(ConfigError);
      expect(() => createHttpBroker(options as HttpBrokerOptions)).toThrow(message);
    });

    it('sends through the fetch it is given', async () => {
      const calls: string[] = [];
      const http = createHttpBroker({
        url: receiver.url('/hooks/{topic}'),
        fetch: (input, init) => {
          calls.push(String(input));
          return fetch(input, init);
        },
      });
      expect(await http.publish([outgoing('via-fetch')], { signal: never() })).toEqual([{ status: 'ok' }]);
      expect(calls).toEqual([receiver.url('/hooks/via-fetch')]);
    });

    it('accepts a map, a function, https, a Buffer secret and a name', () => {
      expect(createHttpBroker({ routes: { a: 'https://hooks.example.com/a' } }).name).toBe('http');
      expect(
        createHttpBroker({ routes: () => undefined, url: 'https://hooks.example.com/{topic}?v=1', name: 'webhooks' }).name,
      ).toBe('webhooks');
      expect(() => createHttpBroker({ url: 'https://hooks.example.com/', signingSecret: Buffer.alloc(32, 1) })).not.toThrow();
    });
  });
});

describe('http broker under the relay (postgres)', () => {
  let h: Harness;
  const receiver = new WebhookReceiver({ signingSecret: SECRET });
  beforeAll(async () => {
    h = await createHarness('postgres');
    await receiver.start();
  });
  afterAll(async () => {
    await receiver.stop();
    await h?.destroy();
  });

  it('deletes a row only after a 2xx, resends a 503 with the same id and the next attempt, and dead-letters a 404', async () => {
    const broker = createHttpBroker({
      url: receiver.url('/hooks/{topic}'),
      routes: { flaky: receiver.url('/flaky/1'), gone: receiver.url('/missing') },
      signingSecret: SECRET,
    });
    const relay = createRelay({
      db: h.db,
      dialect: 'postgres',
      schema: h.schema,
      broker,
      leaseMs: 5000,
      publishTimeoutMs: 2000,
      backoff: { initialMs: 1, maxMs: 5, factor: 2 },
      random: () => 1,
    });
    const dead: string[] = [];
    relay.on('dead', (messages) => dead.push(...messages.map((m) => m.error)));
    const [fine, flaky, gone] = await h.db.transaction().execute((trx) =>
      h.outbox.enqueue(trx, [
        { topic: 'fine', key: 'a', payload: { n: 1 } },
        { topic: 'flaky', key: 'b', payload: { n: 2 } },
        { topic: 'gone', key: 'c', payload: { n: 3 } },
      ]),
    );
    await settle(h, [relay]);
    await broker.close();

    const sent = (id: string) => receiver.requests.filter((r) => header(r.headers, 'txoutbox-id') === id);
    expect(sent(fine!.id).map((r) => header(r.headers, 'txoutbox-attempt'))).toEqual(['1']);
    expect(sent(flaky!.id).map((r) => [header(r.headers, 'txoutbox-attempt'), header(r.headers, 'idempotency-key')])).toEqual([
      ['1', flaky!.id],
      ['2', flaky!.id],
    ]);
    expect(receiver.accepted.map((r) => header(r.headers, 'txoutbox-id')).sort()).toEqual([fine!.id, flaky!.id].sort());
    const rows = await h.rows();
    expect(rows.map((r) => [r.id, r.state])).toEqual([[gone!.id, 'dead']]);
    expect(rows[0]!.lastError).toMatch(/^http: POST http:\/\/127\.0\.0\.1:\d+\/missing answered 404 Not Found: no such webhook$/);
    expect(dead).toHaveLength(1);
  });
});
