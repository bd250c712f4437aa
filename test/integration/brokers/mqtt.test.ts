import net from 'node:net';
import { connect } from 'mqtt';
import { generate } from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors.js';
import { createMqttBroker, type MqttBroker, type MqttBrokerOptions } from '../../../src/brokers/mqtt.js';
import { publishPacketSize } from '../../../src/brokers/mqtt/packet.js';
import { brokerContract, outgoing } from '../../support/brokers/contract.js';
import {
  MQTT_URL,
  MqttSubscriber,
  mqttFixture,
  randomName,
  startMosquitto,
  stopMosquitto,
  testBroker,
} from '../../support/brokers/mqtt-fixture.js';
import { waitFor } from '../../support/relay-helpers.js';

const signal = () => new AbortController().signal;

brokerContract(mqttFixture);

describe('mqtt adapter', () => {
  let skip: string | null = null;
  let base = '';
  let subscriber: MqttSubscriber | null = null;
  const brokers: MqttBroker[] = [];
  beforeAll(async () => {
    skip = await mqttFixture.skipReason();
    if (skip !== null) return;
    base = `txoutbox-contract/${randomName('adapter')}`;
    subscriber = await MqttSubscriber.start(`${base}/#`);
  });
  afterAll(async () => {
    for (const broker of brokers) await broker.close();
    await subscriber?.close();
  });

  /** An adapter on the test server, closed after the file. */
  const open = async (options: Partial<MqttBrokerOptions> = {}) => {
    const broker = testBroker(options);
    brokers.push(broker);
    await waitFor(() => broker.connected, 10_000, 'the adapter to connect');
    return broker;
  };
  const delivery = (id: string) => subscriber!.deliveries.find((d) => d.userProperties['txoutbox-id'] === id);
  const arrived = (id: string, what = `message ${id}`) => waitFor(() => delivery(id) !== undefined, 10_000, what);

  const live = (name: string, test: () => Promise<void>, timeoutMs = 30_000) =>
    it(
      name,
      async (context) => {
        if (skip !== null) return context.skip(skip);
        await test();
      },
      timeoutMs,
    );

  live('carries id, key, topic, attempt and headers as MQTT 5 user properties, and the content-type property', async () => {
    const broker = await open({ routes: { 'orders.created': `${base}/orders` } });
    const keyed = outgoing('orders.created', {
      key: 'customer-7',
      attempt: 3,
      headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', 'x-tenant': 'acme' },
    });
    const keyless = outgoing('orders.created', { payload: Buffer.from([0, 255]), contentType: 'application/octet-stream' });
    expect(await broker.publish([keyed, keyless], { signal: signal() })).toEqual([{ status: 'ok' }, { status: 'ok' }]);
    await arrived(keyed.id);
    await arrived(keyless.id);
    const got = delivery(keyed.id)!;
    expect(got.topic).toBe(`${base}/orders`);
    expect(got.qos).toBe(1);
    expect(got.contentType).toBe('application/json');
    expect(got.payload.equals(keyed.payload)).toBe(true);
    expect(got.userProperties).toEqual({
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      'x-tenant': 'acme',
      'txoutbox-id': keyed.id,
      'txoutbox-key': 'customer-7',
      'txoutbox-topic': 'orders.created',
      'txoutbox-attempt': '3',
    });
    const gotKeyless = delivery(keyless.id)!;
    expect(gotKeyless.userProperties).not.toHaveProperty('txoutbox-key');
    expect(gotKeyless.contentType).toBe('application/octet-stream');
    expect(gotKeyless.payload.equals(Buffer.from([0, 255]))).toBe(true);
  });

  live('routes by the routes map, then the route function, else publishes to the txoutbox topic as is (dots kept)', async () => {
    const broker = await open({
      routes: { 'billing.invoice': `${base}/invoices` },
      route: (topic, message) => (topic === 'shipping.label' ? `${base}/labels/${message.key}` : undefined),
    });
    const mapped = outgoing('billing.invoice');
    const computed = outgoing('shipping.label', { key: 'parcel-9' });
    const asIs = outgoing(`${base}/plain.dotted.topic`);
    const outcomes = await broker.publish([mapped, computed, asIs], { signal: signal() });
    expect(outcomes).toEqual([{ status: 'ok' }, { status: 'ok' }, { status: 'ok' }]);
    for (const m of [mapped, computed, asIs]) await arrived(m.id);
    expect(delivery(mapped.id)!.topic).toBe(`${base}/invoices`);
    expect(delivery(computed.id)!.topic).toBe(`${base}/labels/parcel-9`);
    expect(delivery(asIs.id)!.topic).toBe(`${base}/plain.dotted.topic`);
  });

  live('with strictRoutes, an unrouted topic is a permanent failure of that message only', async () => {
    const broker = await open({ routes: { 'billing.invoice': `${base}/invoices` }, strictRoutes: true });
    const batch = [outgoing('billing.invoice'), outgoing('billing.unknown'), outgoing('billing.invoice')];
    const outcomes = await broker.publish(batch, { signal: signal() });
    expect(outcomes.map((o) => o.status)).toEqual(['ok', 'permanent', 'ok']);
    expect(outcomes[1]).toMatchObject({ error: expect.stringMatching(/no MQTT route for topic "billing.unknown"/) });
    await arrived(batch[2]!.id);
    expect(delivery(batch[1]!.id)).toBeUndefined();
  });

  live('premise: mqtt.js sends a wildcard topic unchecked, and Mosquitto drops the connection for it', async () => {
    const client = connect(MQTT_URL, { protocolVersion: 5, reconnectPeriod: 0 });
    client.on('error', () => {});
    await new Promise((resolve) => client.once('connect', resolve));
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
    client.publish(`${base}/#`, 'x', { qos: 1 }, () => {});
    await closed;
    await client.endAsync(true);
  });

  live('refuses invalid MQTT topics and strings as permanent before sending, and keeps the connection', async () => {
    const errors: Error[] = [];
    const broker = await open({
      route: (topic) => ({ 'bad.hash': `${base}/#`, 'bad.plus': `${base}/+/x`, 'bad.empty': '' })[topic],
      onError: (error) => errors.push(error),
    });
    const bad = [
      outgoing('bad.hash'),
      outgoing('bad.plus'),
      outgoing('bad.empty'),
      // txoutbox accepts these; Mosquitto would drop the connection (control character, lone surrogate).
      outgoing(`${base}/ok`, { headers: { 'x-note': 'tab\there' } }),
      outgoing(`${base}/ok`, { key: 'line\nbreak' }),
      outgoing(`${base}/ok`, { headers: { 'x-emoji': 'half \ud83d' } }),
    ];
    const good = outgoing(`${base}/ok`);
    const outcomes = await broker.publish([...bad, good], { signal: AbortSignal.timeout(5000) });
    expect(outcomes.map((o) => o.status)).toEqual([...bad.map(() => 'permanent'), 'ok']);
    expect(outcomes[0]).toMatchObject({ error: expect.stringContaining("wildcard ('+' or '#')") });
    expect(outcomes[2]).toMatchObject({ error: expect.stringContaining('is empty') });
    expect(outcomes[3]).toMatchObject({ error: expect.stringContaining('control character U+0009') });
    expect(outcomes[4]).toMatchObject({ error: expect.stringMatching(/txoutbox-key.*U\+000A/) });
    expect(outcomes[5]).toMatchObject({ error: expect.stringContaining('lone surrogate') });
    await arrived(good.id);
    expect(broker.connected).toBe(true);
    expect(errors).toEqual([]);
  });

  live('reports a broker refusal (reason code ≥ 0x80) as permanent: Mosquitto answers "Not authorized" for $SYS', async () => {
    const broker = await open({ routes: { 'sys.probe': `$SYS/txoutbox/${randomName('probe')}` } });
    const [outcome] = await broker.publish([outgoing('sys.probe')], { signal: AbortSignal.timeout(5000) });
    expect(outcome).toEqual({
      status: 'permanent',
      error: 'the MQTT broker refused the message: Not authorized (reason code 0x87)',
    });
  });

  live("QoS 2: a batch of 200 is acknowledged by PUBCOMP, within the broker's Receive Maximum, and received", async () => {
    // Mosquitto's Receive Maximum is 20: 200 QoS 2 publishes at once would mostly be refused with "quota exceeded".
    const broker = await open({ qos: 2 });
    const batch = Array.from({ length: 200 }, () => outgoing(`${base}/qos2`));
    const outcomes = await broker.publish(batch, { signal: AbortSignal.timeout(20_000) });
    expect(outcomes.filter((o) => o.status !== 'ok')).toEqual([]);
    await waitFor(() => batch.every((m) => delivery(m.id) !== undefined), 10_000, '200 QoS 2 messages');
  });

  live('a signal aborted before sending sends nothing and reports retryable', async () => {
    const broker = await open();
    const controller = new AbortController();
    controller.abort(new Error('the relay is stopping'));
    const message = outgoing(`${base}/aborted`);
    const [outcome] = await broker.publish([message], { signal: controller.signal });
    expect(outcome).toMatchObject({ status: 'retryable', error: expect.stringMatching(/^not sent: the relay is stopping/) });
    const after = outgoing(`${base}/aborted`);
    expect(await broker.publish([after], { signal: signal() })).toEqual([{ status: 'ok' }]);
    await arrived(after.id);
    expect(delivery(message.id)).toBeUndefined();
  });

  live('with no broker to reach: retryable within the deadline, never ok, no unhandled errors, and close() returns', async () => {
    const port = await new Promise<number>((resolve) => {
      const server = net.createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as net.AddressInfo;
        server.close(() => resolve(port));
      });
    });
    const errors: Error[] = [];
    const broker = createMqttBroker({ url: `mqtt://127.0.0.1:${port}`, reconnectPeriodMs: 50, onError: (e) => errors.push(e) });
    try {
      const started = Date.now();
      const outcomes = await broker.publish([outgoing('nowhere'), outgoing('nowhere')], { signal: AbortSignal.timeout(300) });
      expect(Date.now() - started).toBeLessThan(1500);
      for (const outcome of outcomes) {
        expect(outcome).toMatchObject({ status: 'retryable', error: expect.stringContaining('ECONNREFUSED') });
      }
      expect(errors.length).toBeGreaterThan(0);
    } finally {
      const closing = Date.now();
      await broker.close();
      expect(Date.now() - closing).toBeLessThan(1000);
    }
    expect(await broker.publish([outgoing('nowhere')], { signal: signal() })).toEqual([
      { status: 'retryable', error: 'the MQTT broker adapter is closed; not sent' },
    ]);
  });

  live(
    'while Mosquitto is down publishes are retryable, never ok, and not kept to be sent later; it reconnects by itself',
    async () => {
      const broker = await open();
      const before = outgoing(`${base}/outage`);
      expect(await broker.publish([before], { signal: signal() })).toEqual([{ status: 'ok' }]);
      await stopMosquitto();
      let offline: ReturnType<typeof outgoing>[] = [];
      try {
        expect(broker.connected).toBe(false);
        offline = Array.from({ length: 5 }, () => outgoing(`${base}/outage`));
        const outcomes = await broker.publish(offline, { signal: AbortSignal.timeout(500) });
        for (const outcome of outcomes)
          expect(outcome).toMatchObject({ status: 'retryable', error: expect.stringMatching(/^not sent/) });
      } finally {
        await startMosquitto();
      }
      await waitFor(() => broker.connected, 10_000, 'the adapter to reconnect by itself');
      const after = outgoing(`${base}/outage`);
      expect(await broker.publish([after], { signal: AbortSignal.timeout(10_000) })).toEqual([{ status: 'ok' }]);
      await arrived(after.id, 'the message published after the restart');
      await arrived(before.id, 'the message acknowledged before the restart');
      // Dropped from mqtt.js's offline store: the relay resends them itself (and each retry would add a copy).
      for (const message of offline) expect(delivery(message.id)).toBeUndefined();
    },
    90_000,
  );

  live(
    'every message acknowledged while publishing straight through a stop and start of Mosquitto reaches the subscriber',
    async () => {
      // The contract's restart test may finish its mid-restart batch before the SIGTERM lands; this one keeps
      // publishing until Mosquitto answers again, so some publishes are surely out while it goes down and comes back.
      const broker = await open();
      const acked: string[] = [];
      let restarting = false;
      let done = false;
      let batchesDuringRestart = 0;
      const publishing = (async () => {
        while (!done) {
          const batch = Array.from({ length: 10 }, () => outgoing(`${base}/straight-through`));
          if (restarting) batchesDuringRestart++;
          const outcomes = await broker.publish(batch, { signal: AbortSignal.timeout(2000) });
          outcomes.forEach((outcome, index) => outcome.status === 'ok' && acked.push(batch[index]!.id));
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      })();
      await waitFor(() => acked.length >= 50, 10_000, 'some messages before the restart');
      restarting = true;
      await stopMosquitto();
      await startMosquitto();
      restarting = false;
      const countAtRestart = acked.length;
      await waitFor(() => acked.length >= countAtRestart + 50, 20_000, 'messages acknowledged after the restart');
      done = true;
      await publishing;
      expect(batchesDuringRestart).toBeGreaterThan(0);
      await waitFor(() => acked.every((id) => delivery(id) !== undefined), 30_000, `all ${acked.length} acknowledged messages`);
    },
    90_000,
  );

  live('close() releases the connection; later publishes are retryable; closing twice is fine', async () => {
    // Count this process's sockets with nothing else connecting: the earlier adapters are done, the subscriber is up.
    for (const broker of brokers.splice(0)) await broker.close();
    await waitFor(() => subscriber!.connected, 10_000, 'the subscriber');
    const sockets = () => process.getActiveResourcesInfo().filter((resource) => resource === 'TCPSocketWrap').length;
    const idle = sockets();
    const broker = testBroker();
    await waitFor(() => broker.connected, 10_000, 'the adapter to connect');
    expect(sockets()).toBe(idle + 1);
    await broker.close();
    await waitFor(() => sockets() === idle, 2000, 'the socket to be released');
    await broker.close();
    const [outcome] = await broker.publish([outgoing(`${base}/closed`)], { signal: signal() });
    expect(outcome!.status).toBe('retryable');
  });

  it('computes the PUBLISH packet size exactly as mqtt.js encodes it (checked against the maximum packet size)', () => {
    const properties = {
      contentType: 'application/json',
      userProperties: { 'txoutbox-id': 'x'.repeat(200), traceparent: 'é☕' },
    };
    for (const [payloadLength, qos] of [
      [0, 1],
      [100, 2],
      [20_000, 1],
      [3_000_000, 1],
    ] as const) {
      const topic = `a/b/${'c'.repeat(payloadLength % 300)}`;
      const encoded = generate(
        {
          cmd: 'publish',
          topic,
          payload: Buffer.alloc(payloadLength),
          qos,
          dup: false,
          retain: false,
          messageId: 1,
          properties,
        },
        { protocolVersion: 5 },
      );
      expect(publishPacketSize(topic, payloadLength, qos, properties)).toBe(encoded.length);
    }
  });

  it('refuses invalid options with a ConfigError that names the option', () => {
    const cases: [Partial<MqttBrokerOptions> & Record<string, unknown>, RegExp][] = [
      [{ url: 'http://127.0.0.1:1883' }, /url: must be a URL such as mqtt:\/\/host:1883/],
      [{ url: 'not a url' }, /url: must be a URL/],
      [{ qos: 0 as 1 }, /qos: must be 1 or 2/],
      [{ routes: { 'a.b': 'a/#' } }, /routes\.a\.b: "a\/#" is not an MQTT topic name: it contains a wildcard/],
      [{ strictRoutes: true }, /strictRoutes: strictRoutes needs routes or a route function/],
      [{ maxInFlight: 0 }, /maxInFlight/],
      [{ route: 'a/b' as never }, /route: must be a function/],
      [{ qos2: true }, /Unrecognized key.*qos2/],
    ];
    for (const [options, message] of cases) {
      const attempt = () => createMqttBroker({ url: MQTT_URL, ...options } as MqttBrokerOptions);
      expect(attempt).toThrow(ConfigError);
      expect(attempt).toThrow(message);
    }
  });
});
