import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { promisify } from 'node:util';
import { connect, connectAsync, type IPublishPacket, type MqttClient } from 'mqtt';
import { createMqttBroker, type MqttBroker, type MqttBrokerOptions } from '../../../src/brokers/mqtt.js';
import { waitFor } from '../relay-helpers.js';
import type { BrokerFixture, BrokerUnderTest, ReceivedMessage } from './contract.js';

export const MQTT_URL = process.env.OUTBOX_MQTT_URL ?? 'mqtt://127.0.0.1:1883';
/** How this machine (and CI) runs Mosquitto; restart() uses it, so it only works against the local server. */
const MOSQUITTO_CONFIG = '/etc/mosquitto/mosquitto.conf';
const MOSQUITTO_PID_FILE = '/run/mosquitto/mosquitto.pid';

const run = promisify(execFile);
const noop = () => {};

export const randomName = (prefix: string) => `${prefix}-${Date.now()}-${randomBytes(4).toString('hex')}`;

/** The user properties the adapter adds itself. */
export const OWN_HEADERS = ['txoutbox-id', 'txoutbox-key', 'txoutbox-topic', 'txoutbox-attempt'];

/** One PUBLISH as the subscriber got it. */
export interface MqttDelivery {
  topic: string;
  payload: Buffer;
  qos: number;
  userProperties: Record<string, string>;
  contentType: string | null;
}

function toDelivery(topic: string, payload: Buffer, packet: IPublishPacket): MqttDelivery {
  const raw = packet.properties?.userProperties ?? {};
  // A repeated user property arrives as an array; the adapter never repeats one.
  const userProperties = Object.fromEntries(
    Object.entries(raw).map(([name, value]) => [name, Array.isArray(value) ? value.join(',') : value]),
  );
  return { topic, payload, qos: packet.qos, userProperties, contentType: packet.properties?.contentType ?? null };
}

export function toReceived(delivery: MqttDelivery): ReceivedMessage {
  return {
    id: delivery.userProperties['txoutbox-id'] ?? '',
    key: delivery.userProperties['txoutbox-key'] ?? null,
    headers: { ...delivery.userProperties },
    payload: delivery.payload,
    contentType: delivery.contentType,
  };
}

/**
 * A real subscriber with a persistent session (fixed client id, clean start off, a session that outlives a
 * disconnect) and a QoS 1 subscription: while it is cut off by a broker restart, Mosquitto keeps its messages
 * (persisted on a clean shutdown) and delivers them when mqtt.js has reconnected by itself. Duplicates are kept.
 */
export class MqttSubscriber {
  readonly deliveries: MqttDelivery[] = [];

  private constructor(private readonly client: MqttClient) {
    client.on('message', (topic, payload, packet) => this.deliveries.push(toDelivery(topic, payload, packet)));
  }

  static async start(filter: string): Promise<MqttSubscriber> {
    const client = await connectAsync(MQTT_URL, {
      protocolVersion: 5,
      clientId: randomName('txoutbox-test-sub'),
      clean: false,
      // Long enough to ride out a restart, short enough that a crashed run leaves nothing behind for long.
      properties: { sessionExpiryInterval: 300 },
      reconnectPeriod: 200,
      reconnectOnConnackError: true,
    });
    client.on('error', noop);
    const subscriber = new MqttSubscriber(client);
    const granted = await client.subscribeAsync(filter, { qos: 1 });
    if (granted.some((grant) => grant.qos >= 0x80)) throw new Error(`subscribing to ${filter} was refused`);
    return subscriber;
  }

  received(): ReceivedMessage[] {
    return this.deliveries.map(toReceived);
  }

  get connected(): boolean {
    return this.client.connected;
  }

  async close(): Promise<void> {
    if (!this.client.connected) {
      await this.client.endAsync(true);
      return;
    }
    // Session expiry 0 on DISCONNECT ends the persistent session now, so runs do not pile up in Mosquitto.
    await this.client.endAsync(false, { properties: { sessionExpiryInterval: 0 } });
  }
}

/** Whether something accepts TCP connections at the URL's host and port. */
export function tcpAnswers(url: string = MQTT_URL): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname, port: Number(port || 1883), timeout: 1000 });
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => (socket.destroy(), resolve(false)));
  });
}

/** Whether an MQTT 5 CONNECT gets a CONNACK. */
export async function mqttAnswers(url: string = MQTT_URL): Promise<boolean> {
  const client = connect(url, { protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 1000 });
  client.on('error', noop);
  const answered = await new Promise<boolean>((resolve) => {
    client.once('connect', () => resolve(true));
    client.once('close', () => resolve(false));
  });
  await client.endAsync(true).catch(noop);
  return answered;
}

/** True while the process exists and is not a zombie (a daemon's parent may never reap it). */
async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Stops the local Mosquitto with SIGTERM (it saves its persistence file) and waits until it is gone. */
export async function stopMosquitto(): Promise<void> {
  const pid = Number((await readFile(MOSQUITTO_PID_FILE, 'utf8')).trim());
  const name = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
  if (!Number.isInteger(pid) || pid <= 1 || name.trim() !== 'mosquitto') {
    throw new Error(`${MOSQUITTO_PID_FILE} does not name a running mosquitto (pid ${pid})`);
  }
  process.kill(pid, 'SIGTERM');
  await waitFor(async () => !(await alive(pid)) && !(await tcpAnswers()), 30_000, 'Mosquitto to stop');
}

/** Starts the local Mosquitto as CI does, and waits until it answers MQTT. */
export async function startMosquitto(): Promise<void> {
  await run('mosquitto', ['-d', '-c', MOSQUITTO_CONFIG]);
  await waitFor(() => mqttAnswers(), 30_000, 'Mosquitto to answer again');
}

/** An adapter on the test server; closed by the caller. */
export function testBroker(options: Partial<MqttBrokerOptions> = {}): MqttBroker {
  return createMqttBroker({ url: MQTT_URL, reconnectPeriodMs: 200, ...options });
}

/**
 * The contract's view of MQTT: a per-run topic tree `txoutbox-contract/<run>/#` with a persistent subscriber on it;
 * `contract.orders` is routed into it, and with strictRoutes on, `contract.nowhere` has no route (MQTT has no
 * destination that "does not exist": any topic name is accepted, so refusing is the adapter's job).
 */
export const mqttFixture: BrokerFixture = {
  name: 'mqtt',
  dedupes: false,
  ownHeaders: OWN_HEADERS,
  async skipReason() {
    return (await tcpAnswers())
      ? null
      : `Mosquitto does not answer at ${MQTT_URL}: start it (mosquitto -d -c ${MOSQUITTO_CONFIG}) or set OUTBOX_MQTT_URL`;
  },
  async open(): Promise<BrokerUnderTest> {
    const base = `txoutbox-contract/${randomName('run')}`;
    const subscriber = await MqttSubscriber.start(`${base}/#`);
    const broker = testBroker({ routes: { 'contract.orders': `${base}/orders` }, strictRoutes: true });
    await waitFor(() => broker.connected, 10_000, 'the adapter to connect');
    return {
      broker,
      topic: 'contract.orders',
      unroutableTopic: 'contract.nowhere',
      received: async () => subscriber.received(),
      async close() {
        await broker.close();
        await subscriber.close();
      },
    };
  },
  async restart() {
    await stopMosquitto();
    // Mosquitto comes back in a few hundred ms, and mqtt.js then delivers what it queued meanwhile within the
    // publish deadline. Staying down longer than that deadline makes the outage something publishers must meet.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    await startMosquitto();
  },
};
