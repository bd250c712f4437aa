import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import { DeleteMessageBatchCommand, ReceiveMessageCommand, SQSClient, type Message } from '@aws-sdk/client-sqs';
import { startFauxqs, type FauxqsServer } from 'fauxqs';
import { decodeBody } from '../../../src/brokers/aws/attributes.js';
import { ClaimCheck, parsePointer } from '../../../src/brokers/aws/claim-check.js';
import type { Broker } from '../../../src/brokers/broker.js';
import { withPublish } from '../../../src/brokers/decorator.js';
import { waitFor } from '../relay-helpers.js';
import type { ReceivedMessage } from './contract.js';

/** Credentials and region for the emulator (it checks neither). */
export const FAUXQS_CLIENT = { region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } } as const;

/**
 * A fauxqs (SQS + SNS + S3 emulator) of this test file's own, in-process on a loopback port, with its state in SQLite
 * in a temporary directory so that `restart()` (stop, then start on the same port) keeps every stored message. The
 * directory is on tmpfs where there is one: fauxqs writes every change through to SQLite, ten times slower on disk.
 * `persistent: false` keeps state in memory only: with persistence fauxqs 2.4 loses track of a received message
 * (ChangeMessageVisibility answers MessageNotInflight), which the inbox consumer's tests need and a restart does not.
 */
export class Fauxqs {
  private server: FauxqsServer | null = null;
  private dir: string | null = null;
  private port = 0;

  constructor(private readonly options: { persistent: boolean } = { persistent: true }) {}

  get address(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    if (this.server !== null) return;
    if (this.options.persistent)
      this.dir ??= await mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'txoutbox-fauxqs-'));
    this.server = await startFauxqs({ port: this.port, logger: false, ...(this.dir === null ? {} : { dataDir: this.dir }) });
    this.port = this.server.port;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    await server?.stop();
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async destroy(): Promise<void> {
    await this.stop();
    if (this.dir !== null) await rm(this.dir, { recursive: true, force: true });
  }

  get api(): FauxqsServer {
    if (this.server === null) throw new Error('fauxqs is not running');
    return this.server;
  }

  sqsClient(): SQSClient {
    return new SQSClient({ ...FAUXQS_CLIENT, endpoint: this.address });
  }

  s3Client(): S3Client {
    return new S3Client({ ...FAUXQS_CLIENT, endpoint: this.address, forcePathStyle: true });
  }
}

/** The attributes of a received SQS message as plain strings. */
export function attributesOf(message: Message): Record<string, string> {
  return Object.fromEntries(Object.entries(message.MessageAttributes ?? {}).map(([name, a]) => [name, a.StringValue ?? '']));
}

/**
 * A real consumer of one queue: receives, deletes, and remembers everything in arrival order (duplicates included),
 * fetching claim-checked payloads from S3 as an extended client would.
 */
export class QueueReader {
  private readonly got: ReceivedMessage[] = [];
  readonly raw: Message[] = [];

  constructor(
    private readonly client: SQSClient,
    private readonly queueUrl: string,
    private readonly s3?: ClaimCheck,
  ) {}

  /** Everything received so far, after draining what the queue holds now. */
  async all(): Promise<ReceivedMessage[]> {
    for (;;) {
      const answer = await this.client.send(
        new ReceiveMessageCommand({
          QueueUrl: this.queueUrl,
          MaxNumberOfMessages: 10,
          MessageAttributeNames: ['All'],
          MessageSystemAttributeNames: ['All'],
          WaitTimeSeconds: 0,
        }),
      );
      const messages = answer.Messages ?? [];
      if (messages.length === 0) return this.got;
      for (const message of messages) {
        this.raw.push(message);
        this.got.push(await this.toReceived(message));
      }
      await this.client.send(
        new DeleteMessageBatchCommand({
          QueueUrl: this.queueUrl,
          Entries: messages.map((m, i) => ({ Id: `d${i}`, ReceiptHandle: m.ReceiptHandle! })),
        }),
      );
    }
  }

  private async toReceived(message: Message): Promise<ReceivedMessage> {
    const attributes = attributesOf(message);
    const headers = Object.fromEntries(
      Object.entries(attributes).filter(([name]) => !name.startsWith('txoutbox-') && name !== 'content-type'),
    );
    const pointer = parsePointer(message.Body ?? '');
    const payload =
      pointer !== null && this.s3 !== undefined
        ? await this.s3.get(pointer)
        : decodeBody(message.Body ?? '', attributes['txoutbox-body-encoding']);
    return {
      id: attributes['txoutbox-id'] ?? '',
      key: attributes['txoutbox-key'] ?? null,
      headers,
      payload,
      contentType: attributes['content-type'] ?? null,
    };
  }
}

let counter = 0;
/** A fresh queue or topic name. */
export const uniqueName = (stem: string) => `${stem}-${process.pid}-${Date.now().toString(36)}-${++counter}`;

/**
 * `broker`, counting the outcomes that were not ok, so a restart can keep the emulator down until a publish has
 * really met the outage (an in-process emulator restarts in milliseconds, between two publishes).
 */
export function countingFailures(broker: Broker): { broker: Broker; failures: () => number } {
  let failures = 0;
  return {
    broker: withPublish(broker, async (messages, context) => {
      const outcomes = await broker.publish(messages, context);
      failures += outcomes.filter((o) => o.status !== 'ok').length;
      return outcomes;
    }),
    failures: () => failures,
  };
}

/** Stops the emulator, waits until `failures` grows (a publish met the outage), and starts it again. */
export async function restartAfterAFailure(emulator: Fauxqs, failures: () => number): Promise<void> {
  const before = failures();
  await emulator.stop();
  try {
    await waitFor(() => failures() > before, 30_000, 'a publish to fail while the emulator is down');
  } finally {
    await emulator.start();
  }
}
