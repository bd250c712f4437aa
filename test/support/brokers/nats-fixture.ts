import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, StorageType, type JetStreamManager, type StoredMsg } from '@nats-io/jetstream';
import { createNatsBroker, NATS_ADAPTER_HEADERS, type NatsBrokerOptions } from '../../../src/brokers/nats.js';
import type { BrokerFixture, BrokerUnderTest, ReceivedMessage } from './contract.js';

export const NATS_URL = process.env.OUTBOX_NATS_URL ?? 'nats://127.0.0.1:4222';

const SERVER_BINARY = '/usr/sbin/nats-server';
const { hostname: NATS_HOST, port: urlPort } = new URL(NATS_URL);
const NATS_PORT = Number(urlPort || 4222);
/** The start command CI uses (.ci/run); JetStream keeps its streams on disk in /var/lib/nats-server. */
const START_COMMAND = [
  'start-stop-daemon',
  ['--start', '--oknodo', '--background', '--exec', SERVER_BINARY, '--'],
  ['-a', '127.0.0.1', '-p', String(NATS_PORT), '-js', '-sd', '/var/lib/nats-server', '-l', '/var/log/nats-server.log'],
] as const;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export const randomSuffix = () => randomBytes(4).toString('hex');

/** True when something accepts TCP connections on the server's port. */
export function portAnswers(): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: NATS_HOST, port: NATS_PORT, timeout: 1000 });
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => (socket.destroy(), resolve(false)));
  });
}

/** True when the server accepts a NATS connection and its JetStream API answers (and `stream`, if named, exists). */
export async function jetStreamAnswers(stream?: string): Promise<boolean> {
  let nc: NatsConnection | null = null;
  try {
    nc = await connect({ servers: NATS_URL, reconnect: false, timeout: 1000 });
    const jsm = await jetstreamManager(nc, { timeout: 1000 });
    await jsm.getAccountInfo();
    if (stream !== undefined) await jsm.streams.info(stream);
    return true;
  } catch {
    return false;
  } finally {
    await nc?.close().catch(() => undefined);
  }
}

/** A connection for the tests' own reads and stream admin; it reconnects forever, like the adapter's. */
export async function adminConnection(): Promise<{ nc: NatsConnection; jsm: JetStreamManager }> {
  const nc = await connect({ servers: NATS_URL, maxReconnectAttempts: -1, reconnectTimeWait: 250, name: 'txoutbox-tests' });
  return { nc, jsm: await jetstreamManager(nc) };
}

/** Creates a file-storage stream with a 2-minute duplicate window; returns its name. */
export async function createStream(jsm: JetStreamManager, subjects: string[], name = `TXOUTBOX_TEST_${randomSuffix()}`) {
  await jsm.streams.add({ name, subjects, storage: StorageType.File, duplicate_window: 120_000_000_000 });
  return name;
}

/** A stored message mapped back to txoutbox's fields, as a consumer of the adapter's messages would. */
export function toReceived(message: StoredMsg): ReceivedMessage {
  const headers: Record<string, string> = {};
  for (const name of message.header.keys()) headers[name] = message.header.values(name)[0] ?? '';
  const id = headers[NATS_ADAPTER_HEADERS.id] ?? headers[NATS_ADAPTER_HEADERS.msgId] ?? '';
  return {
    id,
    key: headers[NATS_ADAPTER_HEADERS.key] ?? null,
    headers,
    payload: Buffer.from(message.data),
    contentType: headers[NATS_ADAPTER_HEADERS.contentType] ?? null,
  };
}

/**
 * Reads a stream from the start, in stream order, remembering what it has read: the stream only grows, so each call
 * fetches just the new sequences. Messages persist across a server restart, so reading again after one is exact.
 */
export class StreamReader {
  private readonly messages: StoredMsg[] = [];
  private lastSeq = 0;

  constructor(
    private readonly jsm: JetStreamManager,
    readonly stream: string,
  ) {}

  async all(): Promise<StoredMsg[]> {
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        await this.refresh();
        return [...this.messages];
      } catch (error) {
        // The admin connection may still be reconnecting after a restart.
        if (Date.now() > deadline) throw error;
        await sleep(200);
      }
    }
  }

  private async refresh(): Promise<void> {
    const { state } = await this.jsm.streams.info(this.stream);
    while (this.lastSeq < state.last_seq) {
      const from = this.lastSeq + 1;
      const to = Math.min(state.last_seq, from + 63);
      const seqs = Array.from({ length: to - from + 1 }, (_, i) => from + i);
      const stored = await Promise.all(seqs.map((seq) => this.jsm.streams.getMessage(this.stream, { seq })));
      for (const message of stored) if (message !== null) this.messages.push(message);
      this.lastSeq = to;
    }
  }
}

/** Pids of the live nats-server processes serving NATS_PORT on this machine (found in /proc, to stop them by pid). */
function serverPids(): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let status: string;
    let argv: string[];
    try {
      status = readFileSync(`/proc/${entry}/status`, 'utf8');
      argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').filter(Boolean);
    } catch {
      continue; // It exited while we looked.
    }
    // A zombie has exited already (it only waits for its parent to reap it).
    if (!/^Name:\s+nats-server$/m.test(status) || /^State:\s+Z/m.test(status)) continue;
    const portFlag = argv.findIndex((arg) => arg === '-p' || arg === '--port');
    const port = portFlag >= 0 ? Number(argv[portFlag + 1]) : 4222;
    if (port === NATS_PORT) pids.push(Number(entry));
  }
  return pids;
}

async function waitUntil(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await sleep(50);
  }
}

/**
 * Stops the local nats-server by its pid and waits until it is gone: SIGTERM (a clean shutdown, then SIGKILL if it
 * lingers), or SIGKILL at once to act out a crash.
 */
export async function stopNatsServer(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
  const running = serverPids();
  if (running.length === 0) {
    throw new Error(`no nats-server process serves port ${NATS_PORT} on this machine: the restart test needs a local server`);
  }
  for (const pid of running) process.kill(pid, signal);
  // Gone means the process too, not just the port: start-stop-daemon --oknodo would not start a second one.
  const gone = async () => serverPids().length === 0 && !(await portAnswers());
  try {
    await waitUntil(gone, 10_000, `nats-server exits after ${signal}`);
  } catch {
    for (const pid of serverPids()) process.kill(pid, 'SIGKILL');
    await waitUntil(gone, 10_000, 'nats-server exits after SIGKILL');
  }
}

/** Starts the local nats-server as CI does and waits until JetStream answers (and `stream`, if named, is back). */
export async function startNatsServer(stream?: string): Promise<void> {
  const [command, options, args] = START_COMMAND;
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn(command, [...options, ...args], { stdio: 'ignore', detached: true });
    child.once('error', reject);
    child.once('exit', (exitCode) => resolve(exitCode));
  });
  if (code !== 0) throw new Error(`${command} exited with ${code}`);
  await waitUntil(() => jetStreamAnswers(stream), 30_000, `JetStream answers at ${NATS_URL}`);
}

/** A free TCP port on 127.0.0.1. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * A throwaway nats-server with its own config (e.g. users and permissions), on a free port with JetStream in a
 * temporary directory. `stop()` kills it by its pid and removes the directory.
 */
export async function startTemporaryServer(config: string): Promise<{ url: string; stop: () => Promise<void> }> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'txoutbox-nats-'));
  const file = join(dir, 'server.conf');
  writeFileSync(file, `listen: 127.0.0.1:${port}\njetstream { store_dir: ${JSON.stringify(join(dir, 'js'))} }\n${config}\n`);
  const child = spawn(SERVER_BINARY, ['-c', file], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('error', () => undefined);
  const stop = async () => {
    if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  const answers = () =>
    new Promise<boolean>((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port, timeout: 500 });
      socket.once('connect', () => (socket.destroy(), resolve(true)));
      socket.once('error', () => resolve(false));
      socket.once('timeout', () => (socket.destroy(), resolve(false)));
    });
  try {
    await waitUntil(
      async () => child.exitCode === null && (await answers()),
      10_000,
      `a temporary nats-server answers on ${port}`,
    );
  } catch (error) {
    await stop();
    throw error;
  }
  return { url: `nats://127.0.0.1:${port}`, stop };
}

/** The contract's NATS JetStream fixture: a fresh stream per run, read back in stream order. */
export function natsFixture(options: Omit<NatsBrokerOptions, 'servers' | 'routes'> = {}): BrokerFixture {
  let liveStream: string | undefined;
  return {
    name: 'NATS JetStream',
    dedupes: true,
    ownHeaders: Object.values(NATS_ADAPTER_HEADERS),
    async skipReason() {
      return (await jetStreamAnswers())
        ? null
        : `NATS with JetStream does not answer at ${NATS_URL}: start it (see .ci/run) or set OUTBOX_NATS_URL`;
    },
    async open(): Promise<BrokerUnderTest> {
      const suffix = randomSuffix();
      const prefix = `txoutbox-contract-${suffix}`;
      const topic = `contract.orders.${suffix}`;
      const { nc, jsm } = await adminConnection();
      const stream = await createStream(jsm, [`${prefix}.>`], `TXOUTBOX_CONTRACT_${suffix}`);
      liveStream = stream;
      const broker = createNatsBroker({ ...options, servers: NATS_URL, routes: { [topic]: `${prefix}.orders` } });
      const reader = new StreamReader(jsm, stream);
      return {
        broker,
        topic,
        // Default routing (subject = topic) to a subject no stream captures.
        unroutableTopic: `txoutbox-unroutable-${suffix}.orders`,
        received: async () => (await reader.all()).map(toReceived),
        async close() {
          await broker.close();
          await jsm.streams.delete(stream).catch(() => undefined);
          await nc.close().catch(() => undefined);
          liveStream = undefined;
        },
      };
    },
    async restart() {
      await stopNatsServer();
      await startNatsServer(liveStream);
    },
  };
}
