import { PublishBatchCommand, SNSClient, type SNSClientConfig } from '@aws-sdk/client-sns';
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

export interface SnsBrokerOptions extends AwsBrokerOptions<SNSClient, SNSClientConfig> {
  /** The topic ARN of every topic that `routes` and `route` do not map. Without it such a topic is refused. */
  topicArn?: string;
}

/** 256 KiB: SNS's largest message, and its largest PublishBatch request. */
export const SNS_MAX_MESSAGE_BYTES = 262_144;

function topicArnProblem(arn: string): string | null {
  return /^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$/.test(arn)
    ? null
    : 'is not an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)';
}

const topicArn = z.string().superRefine((value, ctx) => {
  const problem = topicArnProblem(value);
  if (problem !== null) ctx.addIssue({ code: 'custom', message: `"${value}" ${problem}` });
});

const optionsSchema = z
  .object({ ...awsOptionsShape<SNSClient>(topicArn, 'SNSClient'), topicArn: topicArn.optional() })
  .strict()
  .superRefine(oneClient);

/**
 * Publishes to Amazon SNS with PublishBatch. `ok` is SNS's answer listing the entry as successful: SNS stored the
 * message and will deliver it to the topic's subscriptions (their own retry policies apply from there). FIFO topics
 * (ARN ending in `.fifo`) get MessageGroupId = the key and MessageDeduplicationId = the message id.
 */
export class SnsBroker extends AwsBatchBroker {
  readonly name = 'sns';
  private readonly client: SNSClient;

  constructor(options: SnsBrokerOptions = {}) {
    const parsed = parseOptions(optionsSchema, options, 'createSnsBroker');
    const client = parsed.client ?? new SNSClient((parsed.clientConfig ?? {}) as SNSClientConfig);
    super({
      service: 'SNS',
      kind: 'topic ARN',
      problem: topicArnProblem,
      routes: parsed.routes,
      route: parsed.route,
      fallback: parsed.topicArn,
      keylessGroupId: parsed.keylessGroupId,
      claimCheck: parsed.claimCheck as ClaimCheckOptions | undefined,
      maxMessageBytes: SNS_MAX_MESSAGE_BYTES,
      maxBatchBytes: SNS_MAX_MESSAGE_BYTES,
      destroyClient: () => (parsed.client === undefined ? client.destroy() : undefined),
    });
    this.client = client;
  }

  protected async sendBatch(
    arn: string,
    entries: readonly { id: string; entry: AwsEntry }[],
    signal: AbortSignal,
  ): Promise<BatchAnswer> {
    const PublishBatchRequestEntries = entries.map(({ id, entry }) => ({
      Id: id,
      Message: entry.body,
      MessageAttributes: entry.attributes,
      ...fifoFields(entry),
    }));
    const command = new PublishBatchCommand({ TopicArn: arn, PublishBatchRequestEntries });
    const answer = await this.client.send(command, { abortSignal: signal });
    return { successful: (answer.Successful ?? []).map((s) => s.Id!), failed: answer.Failed ?? [] };
  }
}

/**
 * A broker adapter for Amazon SNS.
 *
 * @example
 * ```ts
 * import { createSnsBroker } from 'txoutbox/sns';
 *
 * const broker = createSnsBroker({
 *   clientConfig: { region: 'eu-west-1' },
 *   routes: { 'orders.created': 'arn:aws:sns:eu-west-1:123456789012:orders.fifo' },
 * });
 * ```
 */
export function createSnsBroker(options: SnsBrokerOptions = {}): SnsBroker {
  return new SnsBroker(options);
}
