import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { ConfigError } from '../../../src/errors.js';
import { createRedisBroker, type RedisBroker, type RedisBrokerOptions } from '../../../src/brokers/redis.js';
import type { OutgoingMessage, PublishOutcome } from '../../../src/brokers/broker.js';
import { brokerContract, outgoing } from '../../support/brokers/contract.js';
import {
  PRIVATE_REDIS_PORT,
  readStream,
  REDIS_URL,
  RedisServerProcess,
  redisFixture,
} from '../../support/brokers/redis-fixture.js';
import { waitFor } from '../../support/relay-helpers.js';

// Anything that escapes the adapter as an unhandled rejection would crash a real process; the last test checks.
const escaped: unknown[] = [];
const onUnhandled = (reason: unknown) => escaped.push(reason);
process.on('unhandledRejection', onUnhandled);

brokerContract(redisFixture());

const never = () => new AbortController().signal;
const statuses = (outcomes: PublishOutcome[]) => outcomes.map((outcome) => outcome.status);

async function serverVersion(client: Redis): Promise<[number, number]> {
  const info = await client.info('server');
  const [major = 0, minor = 0] = (/redis_version:(\d+)\.(\d+)/.exec(info) ?? []).slice(1).map(Number);
  return [major, minor];
}

/** The id of the connection named `name` in CLIENT LIST, or null. */
async function clientId(admin: Redis, name: string): Promise<string | null> {
  const list = String(await admin.call('CLIENT', 'LIST'));
  const line = list.split('\n').find((entry) => entry.includes(` name=${name} `));
  return line === undefined ? null : (/\bid=(\d+)/.exec(line)?.[1] ?? null);
}

describe('Redis adapter (shared server at OUTBOX_REDIS_URL)', () => {
  // Every key these tests touch starts with ns, and is deleted afterwards.
  const ns = `txoutbox-test:${process.pid}-${Date.now()}:`;
  let admin: Redis;
  const brokers: RedisBroker[] = [];
  const open = (options: RedisBrokerOptions = {}) => {
    const broker = createRedisBroker({ url: REDIS_URL, ...options });
    brokers.push(broker);
    return broker;
  };

  beforeAll(async () => {
    admin = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
    admin.on('error', () => {});
    await admin.connect().catch((error: unknown) => {
      throw new Error(`Redis does not answer at ${REDIS_URL}: start it or set OUTBOX_REDIS_URL (${String(error)})`);
    });
  });
  afterAll(async () => {
    for (const broker of brokers) await broker.close();
    const keys = await admin.keys(`${ns}*`);
    if (keys.length > 0) await admin.del(...keys);
    await admin.quit();
  });

  it('writes one stream entry per message: txoutbox-* fields, content-type, h:-prefixed headers and the payload bytes', async () => {
    const broker = open({ prefix: ns });
    const keyed = outgoing('fields', {
      key: 'order-7',
      attempt: 3,
      contentType: 'application/octet-stream',
      headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', 'x-tenant': 'acme' },
      payload: Buffer.from([0, 1, 2, 255, 0x0d, 0x0a]),
    });
    const keyless = outgoing('fields');
    expect(await broker.publish([keyed, keyless], { signal: never() })).toEqual([{ status: 'ok' }, { status: 'ok' }]);

    const entries = await admin.xrangeBuffer(`${ns}fields`, '-', '+');
    const raw = entries.map(([, fields]) =>
      fields.reduce<[string, string | Buffer][]>((pairs, field, index) => {
        if (index % 2 === 0) pairs.push([field.toString(), fields[index + 1]!.toString()]);
        return pairs;
      }, []),
    );
    expect(raw[0]).toEqual([
      ['txoutbox-id', keyed.id],
      ['txoutbox-topic', 'fields'],
      ['txoutbox-key', 'order-7'],
      ['content-type', 'application/octet-stream'],
      ['txoutbox-attempt', '3'],
      ['h:traceparent', keyed.headers.traceparent],
      ['h:x-tenant', 'acme'],
      ['payload', keyed.payload.toString()],
    ]);
    // The payload is stored as the exact bytes, not as a string.
    expect(entries[0]![1][15]!.equals(keyed.payload)).toBe(true);
    // No key: no txoutbox-key field (a key is never empty, so absence is unambiguous).
    expect(raw[1]!.map(([name]) => name)).toEqual([
      'txoutbox-id',
      'txoutbox-topic',
      'content-type',
      'txoutbox-attempt',
      'payload',
    ]);
  });

  it('routes a topic by routes first, then route(), then to prefix + topic', async () => {
    const broker = open({
      prefix: `${ns}t:`,
      routes: { 'orders.created': `${ns}orders` },
      route: (topic) => {
        if (topic === 'boom') throw new Error('no idea');
        if (topic === 'bad') return 42 as unknown as string;
        return topic.startsWith('audit.') ? `${ns}audit` : null;
      },
    });
    const messages = ['orders.created', 'audit.login', 'misc.thing', 'boom', 'bad'].map((topic) => outgoing(topic));
    const outcomes = await broker.publish(messages, { signal: never() });
    expect(statuses(outcomes)).toEqual(['ok', 'ok', 'ok', 'permanent', 'permanent']);
    expect(outcomes[3]).toMatchObject({ error: expect.stringContaining('route() threw for topic "boom": no idea') });
    expect(outcomes[4]).toMatchObject({ error: expect.stringContaining('route() returned 42') });
    expect((await readStream(admin, `${ns}orders`)).map((m) => m.id)).toEqual([messages[0]!.id]);
    expect((await readStream(admin, `${ns}audit`)).map((m) => m.id)).toEqual([messages[1]!.id]);
    expect((await readStream(admin, `${ns}t:misc.thing`)).map((m) => m.id)).toEqual([messages[2]!.id]);
  });

  it('refuses an unrouted topic permanently under strict routing, writes nothing for it, and publishes the rest of the batch', async () => {
    const broker = open({ routes: { 'a.routed': `${ns}strict` }, strict: true });
    const unrouted = `${ns}unrouted`;
    const batch = [outgoing('a.routed'), outgoing(unrouted), outgoing('a.routed')];
    const outcomes = await broker.publish(batch, { signal: never() });
    expect(outcomes).toEqual([
      { status: 'ok' },
      { status: 'permanent', error: `no route for topic "${unrouted}" (strict routing)` },
      { status: 'ok' },
    ]);
    expect(await admin.exists(unrouted)).toBe(0);
    expect((await readStream(admin, `${ns}strict`)).map((m) => m.id)).toEqual([batch[0]!.id, batch[2]!.id]);
  });

  it('reports WRONGTYPE (the key exists but is not a stream) as permanent, without failing the rest of the batch', async () => {
    await admin.set(`${ns}plain`, 'not a stream');
    const broker = open({ routes: { wrong: `${ns}plain`, right: `${ns}right` } });
    const outcomes = await broker.publish([outgoing('wrong'), outgoing('right')], { signal: never() });
    expect(statuses(outcomes)).toEqual(['permanent', 'ok']);
    expect(outcomes[0]).toMatchObject({ error: expect.stringMatching(/^XADD txoutbox-test:.*plain: WRONGTYPE/) });
    expect(await admin.get(`${ns}plain`)).toBe('not a stream');
  });

  it('with createStreams: false, a stream that does not exist is a permanent error and is not created', async () => {
    const broker = open({ prefix: ns, createStreams: false });
    await admin.xgroup('CREATE', `${ns}present`, 'consumers', '$', 'MKSTREAM');
    const outcomes = await broker.publish([outgoing('missing'), outgoing('present')], { signal: never() });
    expect(outcomes).toEqual([
      { status: 'permanent', error: `stream "${ns}missing" does not exist (createStreams: false)` },
      { status: 'ok' },
    ]);
    expect(await admin.exists(`${ns}missing`)).toBe(0);
    expect(await admin.xlen(`${ns}present`)).toBe(1);
  });

  it('trims each stream to trim.maxLen, keeping the newest entries', async () => {
    const broker = open({ prefix: ns, trim: { maxLen: 3, exact: true } });
    const messages = Array.from({ length: 5 }, () => outgoing('trimmed'));
    expect(statuses(await broker.publish(messages, { signal: never() }))).toEqual(['ok', 'ok', 'ok', 'ok', 'ok']);
    expect((await readStream(admin, `${ns}trimmed`)).map((m) => m.id)).toEqual(messages.slice(2).map((m) => m.id));
  });

  it('publishes a large batch to several streams in one go, with one outcome per message in order', async () => {
    const broker = open({ prefix: ns });
    const messages = Array.from({ length: 500 }, (_, i) => outgoing(`bulk.${i % 4}`, { key: `k${i}` }));
    const outcomes = await broker.publish(messages, { signal: never() });
    expect(outcomes).toHaveLength(500);
    expect(outcomes.every((outcome) => outcome.status === 'ok')).toBe(true);
    for (let stream = 0; stream < 4; stream++) {
      const expected = messages.filter((m) => m.topic === `bulk.${stream}`).map((m) => m.id);
      expect((await readStream(admin, `${ns}bulk.${stream}`)).map((m) => m.id)).toEqual(expected);
    }
  });

  it('waitAof on a server that cannot confirm fsyncs (no WAITAOF before Redis 7.2, or appendonly off) is a permanent configuration error, and nothing is written', async (context) => {
    const [major, minor] = await serverVersion(admin);
    const hasWaitAof = major > 7 || (major === 7 && minor >= 2);
    const appendonly = ((await admin.config('GET', 'appendonly')) as string[])[1];
    if (hasWaitAof && appendonly === 'yes') return context.skip('this server can confirm AOF fsyncs');
    const broker = open({ prefix: ns, waitAof: { numLocal: 1, numReplicas: 0, timeoutMs: 500 } });
    for (let round = 0; round < 2; round++) {
      const outcomes = await broker.publish([outgoing('aof'), outgoing('aof')], { signal: never() });
      expect(statuses(outcomes)).toEqual(['permanent', 'permanent']);
      expect(outcomes[0]).toMatchObject({
        error: hasWaitAof
          ? expect.stringContaining('appendonly disabled')
          : expect.stringMatching(/no WAITAOF command \(it needs Redis 7\.2 or later\).*appendonly yes and appendfsync always/),
      });
    }
    expect(await admin.exists(`${ns}aof`)).toBe(0);
  });

  it('refuses invalid options with a ConfigError that names the option', () => {
    const cases: [unknown, RegExp][] = [
      [{ url: 'http://127.0.0.1:6379' }, /url: url must be a redis:\/\/ or rediss:\/\/ URL/],
      [{ strict: true }, /strict: strict routing needs routes or route/],
      [{ routes: { 'a.b': '' } }, /routes\.a\.b: a stream key must not be empty/],
      [{ trim: { maxLen: 0 } }, /trim\.maxLen/],
      [{ waitAof: { numLocal: 1, numReplicas: 0, timeoutMs: 0 } }, /waitAof\.timeoutMs: timeoutMs must be at least 1/],
      [{ waitAof: { numLocal: 0, numReplicas: 0, timeoutMs: 100 } }, /waitAof: waitAof must require at least one fsync/],
      [{ waitAof: { numLocal: 2, numReplicas: 0, timeoutMs: 100 } }, /waitAof\.numLocal: numLocal must be 0 or 1/],
      [{ redisOptions: { enableOfflineQueue: true } }, /redisOptions: redisOptions may not set enableOfflineQueue/],
      [{ route: 'orders' }, /route: route must be a function/],
      [{ stream: 'x' }, /Unrecognized key.*stream/],
    ];
    for (const [options, message] of cases) {
      let thrown: unknown;
      try {
        createRedisBroker(options as RedisBrokerOptions);
      } catch (error) {
        thrown = error;
      }
      expect(thrown, JSON.stringify(options)).toBeInstanceOf(ConfigError);
      expect((thrown as ConfigError).code).toBe('TXOUTBOX_INVALID_CONFIG');
      expect((thrown as ConfigError).message).toMatch(/^Invalid createRedisBroker options: /);
      expect((thrown as ConfigError).message, JSON.stringify(options)).toMatch(message);
    }
  });

  it('reconnects by itself after its connection is killed, reporting the lost batch as retryable, never as ok', async () => {
    const name = `txoutbox-kill-${process.pid}`;
    const errors: Error[] = [];
    const broker = open({ prefix: ns, redisOptions: { connectionName: name }, onError: (error) => errors.push(error) });
    expect(statuses(await broker.publish([outgoing('kill')], { signal: never() }))).toEqual(['ok']);
    const id = await clientId(admin, name);
    expect(id).not.toBeNull();
    await admin.call('CLIENT', 'KILL', 'ID', id!);
    const acked: OutgoingMessage[] = [];
    await waitFor(
      async () => {
        const message = outgoing('kill');
        const [outcome] = await broker.publish([message], { signal: AbortSignal.timeout(1000) });
        if (outcome!.status === 'ok') acked.push(message);
        return outcome!.status === 'ok';
      },
      10_000,
      'a publish to succeed after the kill',
    );
    expect(await clientId(admin, name)).not.toBeNull();
    // Every ok is in the stream.
    const ids = new Set((await readStream(admin, `${ns}kill`)).map((m) => m.id));
    for (const message of acked) expect(ids.has(message.id)).toBe(true);
  });

  it('close() releases its connection, and a publish afterwards is retryable, not ok', async () => {
    const name = `txoutbox-close-${process.pid}`;
    const broker = open({ prefix: ns, redisOptions: { connectionName: name } });
    expect(statuses(await broker.publish([outgoing('closing')], { signal: never() }))).toEqual(['ok']);
    expect(await clientId(admin, name)).not.toBeNull();
    await broker.close();
    await waitFor(async () => (await clientId(admin, name)) === null, 5000, 'the connection to go away');
    expect(await broker.publish([outgoing('closing')], { signal: never() })).toEqual([
      { status: 'retryable', error: 'the Redis broker is closed' },
    ]);
    await broker.close(); // idempotent
  });

  it('never hangs on a server that accepts the connection but never answers: the abort returns retryable at once', async () => {
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as net.AddressInfo;
    const broker = createRedisBroker({ url: `redis://127.0.0.1:${port}` });
    try {
      const started = Date.now();
      const outcomes = await broker.publish([outgoing('silent'), outgoing('silent')], { signal: AbortSignal.timeout(200) });
      expect(Date.now() - started).toBeLessThan(1500);
      expect(statuses(outcomes)).toEqual(['retryable', 'retryable']);
      expect(outcomes[0]).toMatchObject({ error: expect.stringContaining('aborted before anything was sent to Redis') });
    } finally {
      const closing = Date.now();
      await broker.close();
      expect(Date.now() - closing).toBeLessThan(1500);
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});

describe(`Redis adapter (private server on port ${PRIVATE_REDIS_PORT})`, () => {
  const server = new RedisServerProcess();
  let admin: Redis;
  const brokers: RedisBroker[] = [];
  const open = (options: RedisBrokerOptions = {}) => {
    const broker = createRedisBroker({ url: server.url, ...options });
    brokers.push(broker);
    return broker;
  };

  beforeAll(async () => {
    await server.start();
    admin = new Redis(server.url);
    admin.on('error', () => {});
  });
  afterAll(async () => {
    for (const broker of brokers) await broker.close();
    admin?.disconnect();
    await server.destroy();
  });

  it('an abort while Redis holds the writes returns retryable "outcome unknown" at once; the writes may still land', async () => {
    const broker = open();
    expect(statuses(await broker.publish([outgoing('paused')], { signal: never() }))).toEqual(['ok']);
    await admin.call('CLIENT', 'PAUSE', '5000', 'WRITE');
    try {
      const started = Date.now();
      const batch = [outgoing('paused'), outgoing('paused')];
      const outcomes = await broker.publish(batch, { signal: AbortSignal.timeout(300) });
      expect(Date.now() - started).toBeLessThan(2000);
      expect(statuses(outcomes)).toEqual(['retryable', 'retryable']);
      expect(outcomes[0]).toMatchObject({ error: expect.stringContaining('outcome unknown') });
    } finally {
      await admin.call('CLIENT', 'UNPAUSE');
    }
    // Unknown really means unknown: once unpaused, Redis executes the XADDs it was holding.
    await waitFor(async () => (await admin.xlen('paused')) === 3, 5000, 'the held XADDs');
    expect(statuses(await broker.publish([outgoing('paused')], { signal: never() }))).toEqual(['ok']);
  });

  it('READONLY (the server became a replica) is retryable, and publishing succeeds once it is a primary again', async () => {
    const broker = open();
    await admin.call('REPLICAOF', '127.0.0.1', '1');
    try {
      const outcomes = await broker.publish([outgoing('failover')], { signal: never() });
      expect(statuses(outcomes)).toEqual(['retryable']);
      expect(outcomes[0]).toMatchObject({ error: expect.stringContaining('READONLY') });
    } finally {
      await admin.call('REPLICAOF', 'NO', 'ONE');
    }
    expect(statuses(await broker.publish([outgoing('failover')], { signal: never() }))).toEqual(['ok']);
  });

  it('NOPERM (an ACL forbids the stream) is permanent', async () => {
    await admin.call('ACL', 'SETUSER', 'limited', 'on', '>secret', '~allowed:*', '+@all');
    try {
      const broker = open({ redisOptions: { username: 'limited', password: 'secret' }, prefix: 'allowed:' });
      const forbidden = open({ redisOptions: { username: 'limited', password: 'secret' }, prefix: 'forbidden:' });
      expect(statuses(await broker.publish([outgoing('acl')], { signal: never() }))).toEqual(['ok']);
      const outcomes = await forbidden.publish([outgoing('acl')], { signal: never() });
      expect(statuses(outcomes)).toEqual(['permanent']);
      expect(outcomes[0]).toMatchObject({ error: expect.stringContaining('NOPERM') });
    } finally {
      await admin.call('ACL', 'DELUSER', 'limited');
    }
  });

  it('waitAof reports ok once the primary has fsynced the batch to its AOF (Redis 7.2+)', async (context) => {
    const [major, minor] = await serverVersion(admin);
    if (major < 7 || (major === 7 && minor < 2)) return context.skip(`Redis ${major}.${minor} has no WAITAOF`);
    const broker = open({ waitAof: { numLocal: 1, numReplicas: 0, timeoutMs: 1000 } });
    const messages = [outgoing('aof'), outgoing('aof')];
    expect(await broker.publish(messages, { signal: never() })).toEqual([{ status: 'ok' }, { status: 'ok' }]);
    // No replica exists, so requiring one is never confirmed: written, but retryable.
    const needsReplica = open({ waitAof: { numLocal: 1, numReplicas: 1, timeoutMs: 100 } });
    const [outcome] = await needsReplica.publish([outgoing('aof')], { signal: never() });
    expect(outcome).toMatchObject({ status: 'retryable', error: expect.stringContaining('not confirmed on disk') });
  });
});

describe('Redis adapter process safety', () => {
  it('let no unhandled rejection escape during the whole file', () => {
    process.removeListener('unhandledRejection', onUnhandled);
    expect(escaped).toEqual([]);
  });
});
