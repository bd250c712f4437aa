import { EventEmitter } from 'node:events';
import {
  ChangeMessageVisibilityBatchCommand,
  ChangeMessageVisibilityCommand,
  DeleteMessageCommand,
  ReceiveMessageCommand,
  SQSClient,
  type Message,
  type SQSClientConfig,
} from '@aws-sdk/client-sqs';
import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { AWS_ADAPTER_ATTRIBUTES, decodeBody } from '../../brokers/aws/attributes.js';
import { ClaimCheck, parsePointer } from '../../brokers/aws/claim-check.js';
import { parseOptions } from '../../config.js';
import { TxOutboxError } from '../../errors.js';
import type { InboxMessage } from '../message.js';
import {
  DeliveryPolicy,
  describeError,
  InFlight,
  sharedOptionShape,
  type InboxConsumerEvents,
  type InboxConsumerOptions,
} from './core.js';

export interface SqsInboxConsumerOptions<DB> extends InboxConsumerOptions<DB> {
  /** The queue to consume. FIFO queues (URL ending in `.fifo`) are handled in order per message group. */
  queueUrl: string;
  /** An SQSClient you own (close() leaves it alone); or `clientConfig` for one the consumer creates. */
  client?: SQSClient;
  clientConfig?: SQSClientConfig;
  /** The name the inbox records ids under. Default: the queue's name. */
  consumer?: string;
  /** Handlers running at once (messages received ahead). Default 10. */
  maxMessages?: number;
  /** Long polling: how long one ReceiveMessage waits for messages. Default 20 s (SQS's longest). */
  waitTimeSeconds?: number;
  /** How long a received message stays invisible; the consumer extends it while a handler works. Default 30 s. */
  visibilityTimeoutSeconds?: number;
  /** Fetch claim-checked payloads (the extended clients' S3 pointer) from S3 with this client or config. */
  claimCheck?: { client?: S3Client; clientConfig?: S3ClientConfig };
}

/** SQS's longest visibility timeout: a retry delay is capped at it. */
const MAX_VISIBILITY_SECONDS = 12 * 60 * 60;
/** After a failed ReceiveMessage (SQS unreachable, say), the next one waits this long. */
const RECEIVE_PAUSE_MS = 1000;
/** Receives that were not attempts (released behind a failed message of the group), kept per message id at most. */
const MAX_RELEASED_ENTRIES = 10_000;

const optionsSchema = z
  .object({
    ...sharedOptionShape,
    queueUrl: z.string().refine((value) => URL.canParse(value), 'queueUrl must be a queue URL'),
    client: z
      .custom<SQSClient>(
        (value) => typeof (value as { send?: unknown } | null)?.send === 'function',
        'client must be an SQSClient',
      )
      .optional(),
    clientConfig: z.record(z.string(), z.unknown()).optional(),
    maxMessages: z.number().int().min(1).max(10_000).default(10),
    waitTimeSeconds: z.number().int().min(0).max(20).default(20),
    visibilityTimeoutSeconds: z.number().int().min(1).max(MAX_VISIBILITY_SECONDS).default(30),
    claimCheck: z
      .object({ client: z.custom<S3Client>().optional(), clientConfig: z.record(z.string(), z.unknown()).optional() })
      .strict()
      .optional(),
  })
  .strict()
  .refine((value) => value.client === undefined || value.clientConfig === undefined, {
    message: 'client cannot be given together with clientConfig',
    path: ['client'],
  });

type Resolved = z.output<typeof optionsSchema>;

/** One received message and what the consumer tracks about it until it is settled. */
interface Received {
  raw: Message;
  /** Settled (deleted, or handed back with a visibility change): no longer kept alive. */
  settled: boolean;
}

/**
 * Consumes an SQS queue by long polling and runs each message's handler once per id, through the inbox, deleting
 * the message only after the handler's transaction committed. While a handler works its message is kept invisible
 * (ChangeMessageVisibility, well within the timeout). A failure makes the message visible again after the retry delay;
 * after `maxAttempts` receives it is written to the inbox's dead-letter table and deleted. On a FIFO queue the
 * messages of one group are handled one after another, in order, and a failure holds the rest of its group back.
 */
export class SqsInboxConsumer<DB> extends EventEmitter<InboxConsumerEvents> {
  readonly consumer: string;
  private readonly options: Resolved;
  private readonly client: SQSClient;
  private readonly claimCheck: ClaimCheck | null;
  private readonly policy: DeliveryPolicy;
  private readonly inFlight = new InFlight();
  private readonly fifo: boolean;
  private readonly stopping = new AbortController();
  /** Messages received, not settled: their visibility is extended while they wait or their handler runs. */
  private readonly unsettled = new Set<Received>();
  /** Receives of a message (by SQS MessageId) that were releases behind a failure of its group, not attempts. */
  private readonly released = new Map<string, number>();
  private keepAlive: NodeJS.Timeout | null = null;
  private loop: Promise<void> | null = null;
  private closing = false;

  constructor(options: SqsInboxConsumerOptions<DB>) {
    super();
    this.options = parseOptions(optionsSchema, options, 'createSqsInboxConsumer');
    const queueName = new URL(this.options.queueUrl).pathname.split('/').filter(Boolean).at(-1) ?? this.options.queueUrl;
    this.consumer = this.options.consumer ?? queueName;
    this.fifo = queueName.endsWith('.fifo');
    this.client = this.options.client ?? new SQSClient((this.options.clientConfig ?? {}) as SQSClientConfig);
    const s3 = this.options.claimCheck;
    this.claimCheck =
      s3 === undefined
        ? null
        : new ClaimCheck({
            bucket: '',
            ...(s3.client === undefined ? {} : { client: s3.client }),
            clientConfig: (s3.clientConfig ?? {}) as S3ClientConfig,
          });
    this.policy = new DeliveryPolicy(
      this,
      { ...this.options, consumer: this.consumer },
      {
        source: 'sqs',
        destination: this.options.queueUrl,
        neverSettled: { because: 'the consumer crashed or its visibility timeout passed each time' },
      },
    );
  }

  /** Starts long polling. Errors while receiving are reported as `error` events and retried. */
  async start(): Promise<void> {
    if (this.loop !== null) return;
    if (this.closing) throw new TxOutboxError('This SQS inbox consumer is closed.', 'TXOUTBOX_CLOSED');
    const everyMs = Math.max(100, Math.floor((this.options.visibilityTimeoutSeconds * 1000) / 3));
    this.keepAlive = setInterval(() => void this.extendVisibility(), everyMs);
    this.keepAlive.unref();
    this.loop = this.run();
  }

  /** Stops polling, waits for the handlers in flight (they commit and delete), then releases its clients. */
  async close(): Promise<void> {
    this.closing = true;
    this.stopping.abort();
    this.inFlight.wakeAll();
    await this.loop;
    await this.inFlight.settled();
    if (this.keepAlive !== null) clearInterval(this.keepAlive);
    if (this.options.client === undefined) this.client.destroy();
    this.claimCheck?.close();
  }

  private async run(): Promise<void> {
    const { queueUrl, maxMessages, waitTimeSeconds, visibilityTimeoutSeconds } = this.options;
    while (!this.closing) {
      await this.inFlight.below(maxMessages, () => this.closing);
      if (this.closing) break;
      let messages: Message[];
      try {
        const answer = await this.client.send(
          new ReceiveMessageCommand({
            QueueUrl: queueUrl,
            // Deletes in flight count too, and may have grown since: at least 1.
            MaxNumberOfMessages: Math.max(1, Math.min(10, maxMessages - this.inFlight.size)),
            WaitTimeSeconds: waitTimeSeconds,
            VisibilityTimeout: visibilityTimeoutSeconds,
            MessageAttributeNames: ['All'],
            MessageSystemAttributeNames: ['ApproximateReceiveCount', 'MessageGroupId'],
          }),
          { abortSignal: this.stopping.signal },
        );
        messages = answer.Messages ?? [];
      } catch (error) {
        if (this.closing) break;
        this.policy.report(new Error(`receiving from ${queueUrl} failed (retrying): ${describeError(error)}`));
        await new Promise((resolve) => setTimeout(resolve, RECEIVE_PAUSE_MS).unref());
        continue;
      }
      // Not handled when closing: the messages come back once their visibility timeout passes.
      if (this.closing) break;
      for (const group of this.lanes(messages)) {
        const received = group.map((raw) => ({ raw, settled: false }));
        for (const r of received) this.unsettled.add(r);
        this.inFlight.track(this.handleLane(received).catch((error: unknown) => this.policy.report(error)));
      }
    }
  }

  /** Messages that must be handled one after another: per message group on a FIFO queue, else each on its own. */
  private lanes(messages: Message[]): Message[][] {
    if (!this.fifo) return messages.map((m) => [m]);
    const groups = new Map<string, Message[]>();
    for (const m of messages) {
      const group = m.Attributes?.MessageGroupId ?? '';
      groups.set(group, [...(groups.get(group) ?? []), m]);
    }
    return [...groups.values()];
  }

  /** Handles a lane in order; once one of its messages is not deleted, the rest go back to the queue behind it. */
  private async handleLane(lane: Received[]): Promise<void> {
    for (const [index, received] of lane.entries()) {
      if (!(await this.handle(received))) {
        await this.release(lane.slice(index + 1));
        return;
      }
    }
  }

  /** Runs the policy for one message; true when it was deleted (processed, duplicate or dead). */
  private async handle(received: Received): Promise<boolean> {
    const { raw } = received;
    let deleted = false;
    const message = await this.toInboxMessage(raw);
    if (message === null) {
      // Its payload could not be fetched: left to come back when its visibility passes.
      received.settled = true;
      this.unsettled.delete(received);
      return false;
    }
    const remove = () => {
      deleted = true;
      this.forget(received);
      this.inFlight.track(this.delete(raw));
    };
    await this.policy.deliver({
      message,
      id: message.id === '' ? null : message.id,
      settlement: {
        ack: remove,
        drop: remove,
        retry: async (delayMs) => {
          this.forget(received, false);
          const seconds = Math.min(MAX_VISIBILITY_SECONDS, Math.ceil(delayMs / 1000));
          try {
            await this.client.send(
              new ChangeMessageVisibilityCommand({
                QueueUrl: this.options.queueUrl,
                ReceiptHandle: raw.ReceiptHandle,
                VisibilityTimeout: seconds,
              }),
            );
            return true;
          } catch (error) {
            this.policy.report(
              new Error(
                `could not delay the retry of ${message.id} (it comes back after its visibility timeout): ${describeError(error)}`,
              ),
            );
            return false;
          }
        },
      },
    });
    return deleted;
  }

  /** Stops keeping a message alive; `final` (deleted) also forgets its released-receive count. */
  private forget(received: Received, final = true): void {
    received.settled = true;
    this.unsettled.delete(received);
    if (final && received.raw.MessageId !== undefined) this.released.delete(received.raw.MessageId);
  }

  /** Hands messages behind a failed one of their group back at once, last first (they keep their order), uncounted. */
  private async release(rest: Received[]): Promise<void> {
    if (rest.length === 0) return;
    for (const r of rest) {
      this.forget(r, false);
      const id = r.raw.MessageId ?? '';
      this.released.set(id, (this.released.get(id) ?? 0) + 1);
      if (this.released.size > MAX_RELEASED_ENTRIES) this.released.delete(this.released.keys().next().value!);
    }
    const entries = [...rest]
      .reverse()
      .map((r, i) => ({ Id: `r${i}`, ReceiptHandle: r.raw.ReceiptHandle, VisibilityTimeout: 0 }));
    try {
      await this.client.send(new ChangeMessageVisibilityBatchCommand({ QueueUrl: this.options.queueUrl, Entries: entries }));
    } catch (error) {
      this.policy.report(
        new Error(`could not hand messages back to ${this.options.queueUrl} (they come back later): ${describeError(error)}`),
      );
    }
  }

  private async delete(raw: Message): Promise<void> {
    try {
      await this.client.send(new DeleteMessageCommand({ QueueUrl: this.options.queueUrl, ReceiptHandle: raw.ReceiptHandle }));
    } catch (error) {
      // It comes back after its visibility timeout, and the inbox knows its id: a duplicate, deleted then.
      this.policy.report(new Error(`could not delete a settled message from ${this.options.queueUrl}: ${describeError(error)}`));
    }
  }

  /** Keeps every received, unsettled message invisible while it waits in its lane or its handler works. */
  private async extendVisibility(): Promise<void> {
    const pending = [...this.unsettled];
    for (let start = 0; start < pending.length; start += 10) {
      const chunk = pending.slice(start, start + 10);
      const entries = chunk.map((r, i) => ({
        Id: `v${i}`,
        ReceiptHandle: r.raw.ReceiptHandle,
        VisibilityTimeout: this.options.visibilityTimeoutSeconds,
      }));
      try {
        await this.client.send(new ChangeMessageVisibilityBatchCommand({ QueueUrl: this.options.queueUrl, Entries: entries }));
      } catch (error) {
        this.policy.report(new Error(`could not extend the visibility of messages in work: ${describeError(error)}`));
      }
    }
  }

  /** The message as the handler sees it (null when its claim-checked payload could not be fetched, reported). */
  private async toInboxMessage(raw: Message): Promise<InboxMessage | null> {
    const headers = Object.fromEntries(
      Object.entries(raw.MessageAttributes ?? {}).flatMap(([name, a]) =>
        a.StringValue === undefined ? [] : [[name, a.StringValue]],
      ),
    );
    const body = raw.Body ?? '';
    const pointer = this.claimCheck === null ? null : parsePointer(body);
    let payload: Buffer;
    try {
      payload =
        pointer === null ? decodeBody(body, headers[AWS_ADAPTER_ATTRIBUTES.bodyEncoding]) : await this.claimCheck!.get(pointer);
    } catch (error) {
      this.policy.report(
        new Error(`could not fetch the claim-checked payload s3://${pointer?.bucket}/${pointer?.key}: ${describeError(error)}`),
      );
      return null;
    }
    const receives = Number(raw.Attributes?.ApproximateReceiveCount ?? 1);
    return {
      id: headers[AWS_ADAPTER_ATTRIBUTES.id] ?? '',
      topic: headers[AWS_ADAPTER_ATTRIBUTES.topic] ?? this.consumer,
      key: headers[AWS_ADAPTER_ATTRIBUTES.key] ?? null,
      payload,
      contentType: headers[AWS_ADAPTER_ATTRIBUTES.contentType] ?? null,
      headers,
      attempt: Math.max(1, receives - (this.released.get(raw.MessageId ?? '') ?? 0)),
    };
  }
}

/**
 * An SQS consumer that processes each message id once through the inbox; call `start()`.
 *
 * @example
 * ```ts
 * import { createInbox } from 'txoutbox';
 * import { createSqsInboxConsumer } from 'txoutbox/inbox/sqs';
 *
 * const consumer = createSqsInboxConsumer({
 *   queueUrl: 'https://sqs.eu-west-1.amazonaws.com/123456789012/billing.fifo',
 *   clientConfig: { region: 'eu-west-1' },
 *   db, // your Kysely instance, on the database of your tables and the inbox
 *   inbox: createInbox({ dialect: 'postgres' }),
 *   handler: async (message, trx) => {
 *     await trx.insertInto('invoices').values({ message_id: message.id, order_key: message.key }).execute();
 *   },
 * });
 * await consumer.start();
 * process.once('SIGTERM', () => void consumer.close()); // lets the handlers in flight commit and delete
 * ```
 */
export function createSqsInboxConsumer<DB>(options: SqsInboxConsumerOptions<DB>): SqsInboxConsumer<DB> {
  return new SqsInboxConsumer(options);
}
