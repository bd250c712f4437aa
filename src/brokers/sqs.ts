import { SendMessageBatchCommand, SQSClient, type SQSClientConfig } from '@aws-sdk/client-sqs';
import { z } from 'zod';
import { parseOptions } from '../config.js';
import type { Broker, OutgoingMessage, PublishContext, PublishOutcome } from './broker.js';
import { retryable } from './outcomes.js';
import type { MessageRouter, Route } from './route.js';
import { ClaimCheck, type ClaimCheckOptions } from './aws/claim-check.js';
import { awsOptionsShape, oneClient, routeByTopic } from './aws/options.js';
import { publishInBatches, type AwsService, type BatchAnswer } from './aws/publisher.js';

export { AWS_ADAPTER_ATTRIBUTES as SQS_ATTRIBUTES } from './aws/attributes.js';
export { EXTENDED_POINTER_CLASS, parsePointer, type ClaimCheckOptions, type PayloadPointer } from './aws/claim-check.js';

export interface SqsBrokerOptions {
  /** An SQSClient you own (close() leaves it alone). Not allowed together with `clientConfig`. */
  client?: SQSClient;
  /** Options for the SQSClient the adapter creates: region, credentials, endpoint... Default: the SDK's own chain. */
  clientConfig?: SQSClientConfig;
  /** The queue URL of every topic that `routes` and `route` do not map. Without it such a topic is refused. */
  queueUrl?: string;
  /** topic → queue URL, checked first. */
  routes?: Record<string, string>;
  /** topic → queue URL for topics `routes` does not name; return undefined to fall back to `queueUrl`. */
  route?: (topic: string, message: OutgoingMessage) => string | undefined;
  /**
   * FIFO queues: the MessageGroupId of messages without a key. Default: none, each keyless message is a group of its
   * own (no order among them, full parallelism, as txoutbox promises for keyless messages). Set it to deliver them
   * in order, one at a time: one group is one lane.
   */
  keylessGroupId?: string;
  /** Payloads past the limit go to S3, the message carrying the extended clients' pointer. Off by default. */
  claimCheck?: ClaimCheckOptions;
  /** SQS's limit for one message and one batch request (1 MiB); lower it for a queue with a smaller MaximumMessageSize. */
  maxMessageBytes?: number;
}

/** 1 MiB: SQS's largest message, and its largest batch request. */
export const SQS_MAX_MESSAGE_BYTES = 1_048_576;

function queueUrlProblem(url: string): string | null {
  if (!URL.canParse(url) || !/^https?:$/.test(new URL(url).protocol)) return 'is not an http(s) queue URL';
  return new URL(url).pathname.split('/').filter(Boolean).length === 2 ? null : 'is not a queue URL (…/<account>/<queue name>)';
}

const queueUrl = z.string().superRefine((value, ctx) => {
  const problem = queueUrlProblem(value);
  if (problem !== null) ctx.addIssue({ code: 'custom', message: `"${value}" ${problem}` });
});

const optionsSchema = z
  .object({
    ...awsOptionsShape<SQSClient>(queueUrl, 'SQSClient'),
    queueUrl: queueUrl.optional(),
    maxMessageBytes: z.number().int().min(1024).max(SQS_MAX_MESSAGE_BYTES).default(SQS_MAX_MESSAGE_BYTES),
  })
  .strict()
  .superRefine(oneClient);

/**
 * Publishes to Amazon SQS with SendMessageBatch. `ok` is SQS's answer listing the entry as successful: SQS stored
 * the message redundantly before answering. FIFO queues (URL ending in `.fifo`) get MessageGroupId = the key and
 * MessageDeduplicationId = the message id, so SQS itself drops a resend within its 5-minute window; standard queues
 * deliver at least once, a resend included, and the consumer recognises it by the `txoutbox-id` attribute.
 */
export class SqsBroker implements Broker, MessageRouter<string> {
  readonly name = 'sqs';
  private readonly options: z.output<typeof optionsSchema>;
  private readonly client: SQSClient;
  private readonly claimCheck: ClaimCheck | null;
  private readonly service: AwsService;
  private closed = false;

  constructor(options: SqsBrokerOptions = {}) {
    this.options = parseOptions(optionsSchema, options, 'createSqsBroker');
    this.client = this.options.client ?? new SQSClient((this.options.clientConfig ?? {}) as SQSClientConfig);
    this.claimCheck = this.options.claimCheck === undefined ? null : new ClaimCheck(this.options.claimCheck as ClaimCheckOptions);
    this.service = {
      name: 'SQS',
      maxMessageBytes: this.options.maxMessageBytes,
      maxBatchBytes: SQS_MAX_MESSAGE_BYTES,
      isFifo: (url) => url.endsWith('.fifo'),
      sendBatch: (url, entries, signal) => this.sendBatch(url, entries, signal),
    };
  }

  async publish(messages: readonly OutgoingMessage[], { signal }: PublishContext): Promise<PublishOutcome[]> {
    if (this.closed) return messages.map(() => retryable('the SQS broker is closed'));
    if (signal.aborted) return messages.map(() => retryable('aborted before publishing (outcome: not sent)'));
    return publishInBatches(this.service, this, messages, signal, {
      keylessGroupId: this.options.keylessGroupId,
      claimCheck: this.claimCheck,
      claimThresholdBytes: this.options.claimCheck?.thresholdBytes,
    });
  }

  /** The queue URL a message goes to: `routes[topic]`, else the `route` option's answer, else `queueUrl`. */
  route(message: OutgoingMessage): Route<string> {
    const { routes, route } = this.options;
    return routeByTopic(message, { routes, route, fallback: this.options.queueUrl }, 'queue URL', queueUrlProblem);
  }

  /** Destroys the clients the adapter created (given ones stay open). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.options.client === undefined) this.client.destroy();
    this.claimCheck?.close();
  }

  private async sendBatch(
    url: string,
    entries: Parameters<AwsService['sendBatch']>[1],
    signal: AbortSignal,
  ): Promise<BatchAnswer> {
    const command = new SendMessageBatchCommand({
      QueueUrl: url,
      Entries: entries.map(({ id, entry }) => ({
        Id: id,
        MessageBody: entry.body,
        MessageAttributes: entry.attributes,
        ...(entry.groupId === undefined ? {} : { MessageGroupId: entry.groupId, MessageDeduplicationId: entry.deduplicationId }),
      })),
    });
    const answer = await this.client.send(command, { abortSignal: signal });
    return { successful: (answer.Successful ?? []).map((s) => s.Id!), failed: answer.Failed ?? [] };
  }
}

/**
 * A broker adapter for Amazon SQS.
 *
 * @example
 * ```ts
 * import { createSqsBroker } from 'txoutbox/sqs';
 *
 * const broker = createSqsBroker({
 *   clientConfig: { region: 'eu-west-1' },
 *   routes: { 'orders.created': 'https://sqs.eu-west-1.amazonaws.com/123456789012/orders.fifo' },
 * });
 * ```
 */
export function createSqsBroker(options: SqsBrokerOptions = {}): SqsBroker {
  return new SqsBroker(options);
}
