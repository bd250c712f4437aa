import type { NatsConnection } from '@nats-io/transport-node';
import type { JetStreamManager } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, createRelay, type OutgoingMessage, type PublishOutcome } from '../../../src/index.js';
import { createNatsBroker, type NatsBroker, type NatsBrokerOptions } from '../../../src/brokers/nats.js';
import { brokerContract, outgoing } from '../../support/brokers/contract.js';
import { relayEndToEnd } from '../../support/brokers/end-to-end.js';
import {
  adminConnection,
  createStream,
  jetStreamAnswers,
  NATS_URL,
  natsFixture,
  randomSuffix,
  startNatsServer,
  startTemporaryServer,
  stopNatsServer,
  StreamReader,
  toReceived,
} from '../../support/brokers/nats-fixture.js';
import { createHarness, type Harness } from '../../support/harness.js';
import { drain, waitFor } from '../../support/relay-helpers.js';

// Anything that escapes the adapter unhandled would crash a relay's process; collect it to fail the last test.
const escaped: unknown[] = [];
const collect = (error: unknown) => void escaped.push(error);
process.on('unhandledRejection', collect);
process.on('uncaughtException', collect);

brokerContract(natsFixture());
relayEndToEnd(natsFixture());

const never = () => new AbortController().signal;
const statuses = (outcomes: PublishOutcome[]) => outcomes.map((o) => o.status);

describe('NATS JetStream adapter', () => {
  let skip: string | null = null;
  let admin: { nc: NatsConnection; jsm: JetStreamManager };
  let prefix: string;
  let stream: string;
  let reader: StreamReader;
  const brokers: NatsBroker[] = [];
  const extraStreams: string[] = [];

  /** A broker on the local server, closed after the suite. */
  const broker = (options: NatsBrokerOptions = {}) => {
    const created = createNatsBroker({ servers: NATS_URL, ...options });
    brokers.push(created);
    return created;
  };
  const stored = async (id: string) => (await reader.all()).find((m) => m.header.get('txoutbox-id') === id);

  beforeAll(async () => {
    if (!(await jetStreamAnswers())) {
      skip = `NATS with JetStream does not answer at ${NATS_URL}`;
      return;
    }
    admin = await adminConnection();
    prefix = `txoutbox-adapter-${randomSuffix()}`;
    stream = await createStream(admin.jsm, [`${prefix}.>`]);
    reader = new StreamReader(admin.jsm, stream);
  });

  afterAll(async () => {
    for (const b of brokers) await b.close();
    if (skip !== null) return;
    for (const name of [stream, ...extraStreams]) await admin.jsm.streams.delete(name).catch(() => undefined);
    await admin.nc.close();
  });

  const run = (name: string, test: () => Promise<void>, timeoutMs = 30_000) =>
    it(
      name,
      async (context) => {
        if (skip !== null) return context.skip(skip);
        await test();
      },
      timeoutMs,
    );

  it('validates its options and names the wrong one in a ConfigError', () => {
    const cases: [NatsBrokerOptions, RegExp][] = [
      [{ servers: [] }, /servers: must list at least one server/],
      [{ servers: 'nats://a b' }, /servers: must be server URLs/],
      [{ ackTimeoutMs: 0 }, /ackTimeoutMs/],
      [{ routes: { 'orders.created': 'orders.*' } }, /routes\.orders\.created: "orders\.\*" is not a NATS subject to publish to/],
      [{ routes: { 'orders.created': 'orders..created' } }, /routes\.orders\.created/],
      [{ stream: { name: 'bad.name', subjects: ['orders.>'] } }, /stream\.name: must be 1-255 letters, digits, - or _/],
      [
        { stream: { name: 'ORDERS', subjects: ['orders.>.created'] } },
        /stream\.subjects\.0: "orders\.>\.created" is not a NATS subject filter/,
      ],
      [{ stream: { name: 'ORDERS', subjects: [] } }, /stream\.subjects: must list at least one subject/],
      [{ connectionOptions: { maxReconnectAttempts: 3 } as never }, /maxReconnectAttempts is set by the adapter/],
      [{ route: 'orders' as never }, /route: must be a function/],
      [{ connection: {} as never }, /connection: must be a NatsConnection/],
      [
        { servers: NATS_URL, connection: { request: () => undefined } as never },
        /connection: cannot be given together with servers/,
      ],
      [{ subject: 'x' } as never, /Unrecognized key/i],
    ];
    for (const [options, message] of cases) {
      let thrown: unknown;
      try {
        createNatsBroker(options);
      } catch (error) {
        thrown = error;
      }
      expect(thrown, JSON.stringify(options)).toBeInstanceOf(ConfigError);
      expect((thrown as ConfigError).code).toBe('TXOUTBOX_INVALID_CONFIG');
      expect((thrown as Error).message).toMatch(/^Invalid createNatsBroker options: /);
      expect((thrown as Error).message).toMatch(message);
    }
    expect(() => createNatsBroker()).not.toThrow();
  });

  run(
    'carries the id as Nats-Msg-Id and txoutbox-id, and key, topic, content type, attempt and headers as NATS headers',
    async () => {
      const b = broker({ routes: { 'orders.created': `${prefix}.orders` } });
      const message = outgoing('orders.created', {
        key: 'customer-7',
        attempt: 3,
        contentType: 'application/vnd.acme+json',
        headers: {
          traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
          tracestate: 'acme=1',
          'X-Tenant': 'café',
        },
      });
      expect(await b.publish([message], { signal: never() })).toEqual([{ status: 'ok' }]);
      const got = (await stored(message.id))!;
      expect(got.subject).toBe(`${prefix}.orders`);
      expect(Object.fromEntries([...got.header].map(([name, values]) => [name, values]))).toEqual({
        traceparent: [message.headers.traceparent],
        tracestate: ['acme=1'],
        'X-Tenant': ['café'],
        'txoutbox-id': [message.id],
        'txoutbox-topic': ['orders.created'],
        'txoutbox-key': ['customer-7'],
        'Content-Type': ['application/vnd.acme+json'],
        'txoutbox-attempt': ['3'],
        'Nats-Msg-Id': [message.id],
      });
      expect(Buffer.from(got.data).equals(message.payload)).toBe(true);
      const keyless = outgoing('orders.created');
      expect(await b.publish([keyless], { signal: never() })).toEqual([{ status: 'ok' }]);
      expect(toReceived((await stored(keyless.id))!).key).toBeNull();
    },
  );

  run('routes a topic by the routes map first, then the route function, then subject = topic', async () => {
    const b = broker({
      routes: { mapped: `${prefix}.from-map` },
      route: (topic) => (topic.startsWith(prefix) ? undefined : `${prefix}.from-function`),
    });
    const byMap = outgoing('mapped');
    const byFunction = outgoing('other.topic');
    const byDefault = outgoing(`${prefix}.as-is`);
    const outcomes = await b.publish([byMap, byFunction, byDefault], { signal: never() });
    expect(outcomes).toEqual([{ status: 'ok' }, { status: 'ok' }, { status: 'ok' }]);
    expect((await stored(byMap.id))?.subject).toBe(`${prefix}.from-map`);
    expect((await stored(byFunction.id))?.subject).toBe(`${prefix}.from-function`);
    expect((await stored(byDefault.id))?.subject).toBe(`${prefix}.as-is`);
  });

  run('reports a subject no stream captures as permanent at once, naming the subject', async () => {
    const b = broker({ ackTimeoutMs: 5000 });
    const topic = `txoutbox-nowhere-${randomSuffix()}.orders`;
    const started = Date.now();
    const [outcome] = await b.publish([outgoing(topic)], { signal: never() });
    expect(Date.now() - started).toBeLessThan(2000);
    expect(outcome).toEqual({
      status: 'permanent',
      error: `no JetStream stream captures subject "${topic}" (topic "${topic}"): add the subject to a stream or route the topic elsewhere`,
    });
  });

  run('answers a mixed batch with one outcome per message, in order, and publishes the good ones', async () => {
    const small = `${prefix}-small`;
    extraStreams.push(await createStream(admin.jsm, [`${small}.>`]));
    await admin.jsm.streams.update(extraStreams.at(-1)!, { max_msg_size: 1024 });
    const b = broker({
      routes: { good: `${prefix}.mixed`, small: `${small}.x` },
      route: (topic) => (topic === 'spaced' ? 'a b' : undefined),
    });
    const batch: OutgoingMessage[] = [
      outgoing('good'),
      outgoing(`txoutbox-nowhere-${randomSuffix()}`),
      outgoing('good', { headers: { 'x-note': 'two\nlines' } }),
      outgoing('spaced'),
      outgoing('good', { payload: Buffer.alloc(2 * 1024 * 1024) }),
      outgoing('small', { payload: Buffer.alloc(2048) }),
      outgoing('good', { key: ' padded ' }),
      outgoing('good'),
    ];
    const outcomes = await b.publish(batch, { signal: never() });
    expect(statuses(outcomes)).toEqual([
      'ok',
      'permanent',
      'permanent',
      'permanent',
      'permanent',
      'permanent',
      'permanent',
      'ok',
    ]);
    const errors = outcomes.map((o) => (o.status === 'ok' ? '' : o.error));
    expect(errors[1]).toMatch(/no JetStream stream captures subject/);
    expect(errors[2]).toMatch(/header x-note cannot be carried exactly by NATS/);
    expect(errors[3]).toMatch(/subject "a b" for topic "spaced" is not a NATS subject/);
    expect(errors[4]).toMatch(/max_payload/);
    expect(errors[5]).toMatch(
      /JetStream refused the message on ".*": message size exceeds maximum allowed \(err_code 10054, status 400\)/,
    );
    expect(errors[6]).toMatch(/header txoutbox-key cannot be carried exactly/);
    expect(await stored(batch[0]!.id)).toBeDefined();
    expect(await stored(batch[7]!.id)).toBeDefined();
    expect((await reader.all()).filter((m) => batch.slice(1, 7).some((x) => x.id === m.header.get('txoutbox-id')))).toEqual([]);
  });

  run('treats a duplicate PubAck as ok: a resend is stored once, even with another attempt number', async () => {
    const b = broker({ routes: { dup: `${prefix}.dup` } });
    const message = outgoing('dup');
    expect(await b.publish([message], { signal: never() })).toEqual([{ status: 'ok' }]);
    expect(await b.publish([{ ...message, attempt: 2 }, outgoing('dup')], { signal: never() })).toEqual([
      { status: 'ok' },
      { status: 'ok' },
    ]);
    expect((await reader.all()).filter((m) => m.header.get('Nats-Msg-Id') === message.id)).toHaveLength(1);
  });

  run('returns retryable "outcome unknown" when the PubAck never comes: at the abort signal, or after ackTimeoutMs', async () => {
    // A plain subscriber that never replies stands in for a stream that stores but whose ack is lost.
    const silent = `txoutbox-silent-${randomSuffix()}`;
    const sub = admin.nc.subscribe(silent, { callback: () => undefined });
    await admin.nc.flush();
    try {
      const b = broker({ routes: { silent }, ackTimeoutMs: 10_000 });
      let started = Date.now();
      const [aborted] = await b.publish([outgoing('silent')], { signal: AbortSignal.timeout(300) });
      expect(Date.now() - started).toBeLessThan(1500);
      expect(aborted).toEqual({
        status: 'retryable',
        error: 'aborted before the PubAck arrived (outcome unknown; resent with the same id)',
      });

      const quick = broker({ routes: { silent }, ackTimeoutMs: 400 });
      started = Date.now();
      const [timedOut] = await quick.publish([outgoing('silent')], { signal: never() });
      expect(Date.now() - started).toBeLessThan(2000);
      expect(timedOut).toEqual({
        status: 'retryable',
        error: `no PubAck for "${silent}" within 400 ms (outcome unknown; resent with the same id)`,
      });

      const ac = new AbortController();
      ac.abort();
      expect(await quick.publish([outgoing('silent')], { signal: ac.signal })).toEqual([
        { status: 'retryable', error: 'aborted before publishing (outcome: not sent)' },
      ]);
    } finally {
      sub.unsubscribe();
    }
  });

  run('reports a publish the server denies as permanent at once, and a refused login as retryable with the reason', async () => {
    const server = await startTemporaryServer(
      'authorization { users = [ { user: relay, password: secret, permissions: { publish: { deny: ["forbidden.>"] } } } ] }',
    );
    try {
      const allowed = createNatsBroker({ servers: server.url, connectionOptions: { user: 'relay', pass: 'secret' } });
      const started = Date.now();
      expect(await allowed.publish([outgoing('forbidden.orders')], { signal: AbortSignal.timeout(5000) })).toEqual([
        {
          status: 'permanent',
          error: 'not allowed to publish to "forbidden.orders": Permissions Violation for Publish to "forbidden.orders"',
        },
      ]);
      expect(Date.now() - started).toBeLessThan(2000);
      await allowed.close();

      const refused = createNatsBroker({ servers: server.url, connectionOptions: { user: 'relay', pass: 'wrong' } });
      expect(await refused.publish([outgoing('orders')], { signal: AbortSignal.timeout(5000) })).toEqual([
        { status: 'retryable', error: `cannot connect to NATS at ${server.url}: Authorization Violation` },
      ]);
      await refused.close();
    } finally {
      await server.stop();
    }
  });

  run('creates the configured stream on first use, file-backed, and leaves an existing stream alone', async () => {
    const name = `TXOUTBOX_CREATED_${randomSuffix()}`;
    const subjects = [`${name.toLowerCase()}.>`];
    extraStreams.push(name);
    const first = broker({
      stream: { name, subjects, duplicateWindowMs: 60_000 },
      routes: { t: `${subjects[0]!.slice(0, -2)}.t` },
    });
    expect(await first.publish([outgoing('t')], { signal: never() })).toEqual([{ status: 'ok' }]);
    const created = await admin.jsm.streams.info(name);
    expect(created.config).toMatchObject({ subjects, storage: 'file', num_replicas: 1, duplicate_window: 60_000_000_000 });
    expect(created.state.messages).toBe(1);

    const second = broker({
      stream: { name, subjects: [`${name}.other.>`], duplicateWindowMs: 5000 },
      routes: { t: `${subjects[0]!.slice(0, -2)}.t` },
    });
    expect(await second.publish([outgoing('t')], { signal: never() })).toEqual([{ status: 'ok' }]);
    const after = await admin.jsm.streams.info(name);
    expect(after.config).toMatchObject({ subjects, duplicate_window: 60_000_000_000 });
    expect(after.state.messages).toBe(2);
  });

  run(
    'close() releases its connection, is idempotent, and later publishes are retryable; a given connection stays open',
    async () => {
      const sockets = () => process.getActiveResourcesInfo().filter((name) => name === 'TCPSocketWrap').length;
      const before = sockets();
      const b = createNatsBroker({ servers: NATS_URL, routes: { t: `${prefix}.close` } });
      expect(await b.publish([outgoing('t')], { signal: never() })).toEqual([{ status: 'ok' }]);
      expect(sockets()).toBe(before + 1);
      await b.close();
      await b.close();
      await waitFor(() => sockets() === before, 5000, 'the socket to close');
      expect(await b.publish([outgoing('t')], { signal: never() })).toEqual([
        { status: 'retryable', error: 'the NATS broker is closed' },
      ]);

      const onGiven = createNatsBroker({ connection: admin.nc, routes: { t: `${prefix}.close` } });
      expect(await onGiven.publish([outgoing('t')], { signal: never() })).toEqual([{ status: 'ok' }]);
      await onGiven.close();
      expect(admin.nc.isClosed()).toBe(false);
    },
  );

  run(
    'when the server is killed: keeps what it acknowledged, stops waiting for PubAcks that cannot come, fails fast as retryable (even before a first connection), and recovers by itself',
    async () => {
      // A subscriber that never replies keeps a publish waiting for its PubAck when the server goes away.
      const silent = `txoutbox-silent-${randomSuffix()}`;
      const sub = admin.nc.subscribe(silent, { callback: () => undefined });
      await admin.nc.flush();
      const routes = { t: `${prefix}.outage`, silent };
      const connected = broker({ routes, ackTimeoutMs: 20_000 });
      const acknowledged = Array.from({ length: 300 }, (_, i) => outgoing('t', { key: `k${i}` }));
      const outcomes = await connected.publish(acknowledged, { signal: never() });
      expect(outcomes.every((o) => o.status === 'ok')).toBe(true);
      const waiting = connected.publish([outgoing('silent')], { signal: AbortSignal.timeout(20_000) });
      // A crash, not a clean shutdown: the PubAck must already mean the message is in the server's files.
      await stopNatsServer('SIGKILL');
      const notYetConnected = broker({ routes });
      try {
        let started = Date.now();
        expect(await waiting).toEqual([
          {
            status: 'retryable',
            error: `the NATS connection dropped before the PubAck for "${silent}" (outcome unknown; resent with the same id)`,
          },
        ]);
        expect(Date.now() - started).toBeLessThan(2000);
        for (const b of [connected, notYetConnected]) {
          started = Date.now();
          const outcomes = await b.publish([outgoing('t'), outgoing('t', { key: 'k' })], { signal: AbortSignal.timeout(3000) });
          expect(Date.now() - started).toBeLessThan(1000);
          expect(statuses(outcomes)).toEqual(['retryable', 'retryable']);
          expect(outcomes[0]).toMatchObject({
            error: expect.stringMatching(/^(the NATS connection is down, reconnecting|cannot connect to NATS at nats:)/),
          });
        }
      } finally {
        await startNatsServer(stream);
      }
      const after = [outgoing('t'), outgoing('t')];
      for (const [index, b] of [connected, notYetConnected].entries()) {
        await waitFor(
          async () => (await b.publish([after[index]!], { signal: AbortSignal.timeout(2000) }))[0]!.status === 'ok',
          20_000,
          'a publish to succeed after the restart',
        );
      }
      const ids = new Set((await reader.all()).map((m) => m.header.get('txoutbox-id')));
      expect([...acknowledged, ...after].filter((m) => !ids.has(m.id))).toEqual([]);
      sub.unsubscribe();
    },
    90_000,
  );

  describe('with a relay on PostgreSQL', () => {
    let h: Harness;
    beforeAll(async () => {
      if (skip === null) h = await createHarness('postgres');
    });
    afterAll(async () => {
      await h?.destroy();
    });

    run('moves committed rows to the stream with their ids, and dead-letters a topic no stream captures', async () => {
      const b = broker({ routes: { 'orders.created': `${prefix}.relay` } });
      const nowhere = `txoutbox-nowhere-${randomSuffix()}`;
      const results = await h.db.transaction().execute(async (trx) => [
        ...(await h.outbox.enqueue(trx, [
          { topic: 'orders.created', key: 'c1', payload: { n: 1 }, headers: { traceparent: '00-1-2-01' } },
          { topic: 'orders.created', key: 'c1', payload: { n: 2 } },
          { topic: 'orders.created', payload: new Uint8Array([1, 2]) },
        ])),
        await h.outbox.enqueue(trx, { topic: nowhere, payload: 'lost?' }),
      ]);
      const relay = createRelay({
        db: h.db,
        dialect: 'postgres',
        schema: h.schema,
        broker: b,
        publishTimeoutMs: 5000,
        leaseMs: 10_000,
      });
      await drain(relay);
      const ids = results.map((r) => r.id);
      const rows = await h.rows();
      expect(rows.map((r) => [r.id, r.state])).toEqual([[ids[3], 'dead']]);
      expect(rows[0]!.lastError).toContain(`no JetStream stream captures subject "${nowhere}"`);
      const got = (await reader.all()).map(toReceived).filter((m) => ids.includes(m.id));
      expect(got.map((m) => m.id).sort()).toEqual(ids.slice(0, 3).sort());
      // Per-key order; the keyless message may come anywhere.
      const keyed = got.filter((m) => m.key === 'c1');
      expect(keyed.map((m) => m.id)).toEqual(ids.slice(0, 2));
      expect(keyed[0]).toMatchObject({ contentType: 'application/json' });
      expect(keyed[0]!.headers.traceparent).toBe('00-1-2-01');
      expect(JSON.parse(keyed[1]!.payload.toString())).toEqual({ n: 2 });
      expect(got.find((m) => m.id === ids[2])).toMatchObject({
        key: null,
        contentType: 'application/octet-stream',
        payload: Buffer.from([1, 2]),
      });
    });
  });

  it('let no unhandled rejection or uncaught exception escape', () => {
    process.off('unhandledRejection', collect);
    process.off('uncaughtException', collect);
    expect(escaped).toEqual([]);
  });
});
