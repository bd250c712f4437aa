import { SendMessageBatchCommand, SQSClient, type SQSClientConfig } from '@aws-sdk/client-sqs';
import { z } from 'zod';
import { parseOptions } from '../config.js';
import {
  AwsBatchBroker,
  awsOptionsShape,
  fifoFields,
  oneClient,
  type AwsBrokerOptions,
  type AwsEntry,
  type BatchAnswer,
  type ClaimCheckOptions,
} from './aws/batch-broker.js';

export * from './aws/exports.js';

export interface SqsBrokerOptions extends AwsBrokerOptions<SQSClient, SQSClientConfig> {
  /** The queue URL of every topic that `routes` and `route` do not map. Without it such a topic is refused. */
  queueUrl?: string;
  /** SQS's limit for one message (1 MiB); lower it for a queue with a smaller MaximumMessageSize. */
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
export class SqsBroker extends AwsBatchBroker {
  readonly name = 'sqs';
  private readonly client: SQSClient;

  constructor(options: SqsBrokerOptions = {}) {
    const parsed = parseOptions(optionsSchema, options, 'createSqsBroker');
    const client = parsed.client ?? new SQSClient((parsed.clientConfig ?? {}) as SQSClientConfig);
    super({
      service: 'SQS',
      kind: 'queue URL',
      problem: queueUrlProblem,
      routes: parsed.routes,
      route: parsed.route,
      fallback: parsed.queueUrl,
      keylessGroupId: parsed.keylessGroupId,
      claimCheck: parsed.claimCheck as ClaimCheckOptions | undefined,
      maxMessageBytes: parsed.maxMessageBytes,
      maxBatchBytes: SQS_MAX_MESSAGE_BYTES,
      destroyClient: () => (parsed.client === undefined ? client.destroy() : undefined),
    });
    this.client = client;
  }

  protected async sendBatch(
    url: string,
    entries: readonly { id: string; entry: AwsEntry }[],
    signal: AbortSignal,
  ): Promise<BatchAnswer> {
    const Entries = entries.map(({ id, entry }) => ({
      Id: id,
      MessageBody: entry.body,
      MessageAttributes: entry.attributes,
      ...fifoFields(entry),
    }));
    const answer = await this.client.send(new SendMessageBatchCommand({ QueueUrl: url, Entries }), { abortSignal: signal });
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
