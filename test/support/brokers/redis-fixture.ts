import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { createRedisBroker } from '../../../src/brokers/redis.js';
import type { BrokerFixture, BrokerUnderTest, ReceivedMessage } from './contract.js';

const run = promisify(execFile);

/** The shared server, for tests that need no restart: OUTBOX_REDIS_URL, default the local one. */
export const REDIS_URL = process.env.OUTBOX_REDIS_URL ?? 'redis://127.0.0.1:6379';
/** Port of the private server the fixture starts itself (the shared one keeps nothing on disk). */
export const PRIVATE_REDIS_PORT = Number(process.env.OUTBOX_REDIS_PRIVATE_PORT ?? 6391);

/** Redis's own answer to PING on a port, or null when nothing answers. */
async function ping(port: number): Promise<string | null> {
  try {
    const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), 'ping'], { timeout: 2000 });
    return stdout.trim();
  } catch {
    return null;
  }
}

/**
 * A redis-server of our own, in a temporary directory, with every write fsynced to the AOF before it is
 * acknowledged (appendonly yes, appendfsync always) and no RDB: what the restart test needs to lose nothing.
 */
export class RedisServerProcess {
  private dir: string | null = null;
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  private readonly killOnExit = () => this.child?.kill('SIGKILL');

  constructor(readonly port = PRIVATE_REDIS_PORT) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts the server (on the same directory when restarting) and resolves once it answers PONG. */
  async start(): Promise<void> {
    if (this.child !== null) return;
    if ((await ping(this.port)) !== null) {
      throw new Error(
        `something already answers on 127.0.0.1:${this.port}; a leftover of an aborted run? ` +
          `Stop it (redis-cli -p ${this.port} shutdown nosave) or set OUTBOX_REDIS_PRIVATE_PORT.`,
      );
    }
    this.dir ??= await mkdtemp(join(tmpdir(), 'txoutbox-redis-'));
    const child = spawn(
      'redis-server',
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--dir',
        this.dir,
        '--appendonly',
        'yes',
        '--appendfsync',
        'always',
        '--save',
        '',
        '--daemonize',
        'no',
        '--logfile',
        join(this.dir, 'redis.log'),
      ],
      { stdio: 'ignore' },
    );
    this.child = child;
    let exitedEarly = false;
    this.exited = new Promise((resolve) =>
      child.once('exit', () => {
        exitedEarly = true;
        resolve();
      }),
    );
    child.once('error', () => {}); // a missing binary shows up as an early exit below
    // A crashed test process must not leave the server running.
    process.once('exit', this.killOnExit);
    const deadline = Date.now() + 15_000;
    while ((await ping(this.port)) !== 'PONG') {
      if (exitedEarly || Date.now() > deadline) {
        const log = await readFile(join(this.dir, 'redis.log'), 'utf8').catch(() => '');
        await this.stop();
        throw new Error(`redis-server did not come up on port ${this.port}:\n${log.split('\n').slice(-15).join('\n')}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** SHUTDOWN (which fsyncs the AOF), then waits for the process to exit; SIGKILL if it will not. */
  async stop(): Promise<void> {
    const child = this.child;
    if (child === null) return;
    await run('redis-cli', ['-h', '127.0.0.1', '-p', String(this.port), 'shutdown'], { timeout: 5000 }).catch(() => {});
    let timer: NodeJS.Timeout | undefined;
    const gone = await Promise.race([
      this.exited.then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 10_000))),
    ]);
    clearTimeout(timer);
    if (!gone) {
      child.kill('SIGKILL');
      await this.exited;
    }
    process.removeListener('exit', this.killOnExit);
    this.child = null;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** Stops the server and removes its directory. */
  async destroy(): Promise<void> {
    await this.stop();
    if (this.dir !== null) await rm(this.dir, { recursive: true, force: true });
    this.dir = null;
  }
}

/** Reads a stream entry's fields the way a plain consumer would, back into txoutbox's message fields. */
export function decodeEntry(fields: Buffer[]): ReceivedMessage & { topic: string | null; attempt: string | null } {
  const byName = new Map<string, Buffer>();
  for (let index = 0; index + 1 < fields.length; index += 2) byName.set(fields[index]!.toString(), fields[index + 1]!);
  const text = (name: string) => byName.get(name)?.toString() ?? null;
  const headers: Record<string, string> = {};
  for (const [name, value] of byName) if (name.startsWith('h:')) headers[name.slice(2)] = value.toString();
  return {
    id: text('txoutbox-id') ?? '',
    key: text('txoutbox-key'),
    topic: text('txoutbox-topic'),
    attempt: text('txoutbox-attempt'),
    contentType: text('content-type'),
    headers,
    payload: byName.get('payload') ?? Buffer.alloc(0),
  };
}

/** XRANGE of a whole stream, decoded, in stream order. */
export async function readStream(client: Redis, stream: string): Promise<ReturnType<typeof decodeEntry>[]> {
  const entries = await client.xrangeBuffer(stream, '-', '+');
  return entries.map(([, fields]) => decodeEntry(fields));
}

/**
 * The contract fixture: its own redis-server on PRIVATE_REDIS_PORT (so a restart keeps every acknowledged XADD),
 * the adapter with strict routing (the contract topic routes to a stream; any other topic is refused, Redis's
 * equivalent of a destination that does not exist, since XADD creates streams), and XRANGE as the consumer.
 */
export function redisFixture(server = new RedisServerProcess()): BrokerFixture {
  const topic = 'contract.orders';
  const stream = 'txoutbox:contract:orders';
  return {
    name: 'Redis Streams',
    dedupes: false,
    async skipReason() {
      try {
        await run('redis-server', ['--version'], { timeout: 5000 });
        return null;
      } catch {
        return 'redis-server is not installed, so the fixture cannot start its own (appendfsync always) server';
      }
    },
    async open(): Promise<BrokerUnderTest> {
      await server.start();
      const broker = createRedisBroker({ url: server.url, routes: { [topic]: stream }, strict: true });
      const reader = new Redis(server.url);
      reader.on('error', () => {}); // it reconnects by itself across restart()
      return {
        broker,
        topic,
        unroutableTopic: 'contract.nowhere',
        received: () => readStream(reader, stream),
        async close() {
          await broker.close();
          reader.disconnect();
          await server.destroy();
        },
      };
    },
    restart: () => server.restart(),
  };
}
