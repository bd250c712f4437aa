import type { Broker, OutgoingMessage, PublishContext, PublishOutcome } from '../broker.js';
import { retryable } from '../outcomes.js';
import type { MessageRouter, Route } from '../route.js';
import { ClaimCheck, type ClaimCheckOptions } from './claim-check.js';
import { routeByTopic } from './options.js';

export { awsOptionsShape, oneClient, type AwsBrokerOptions } from './options.js';
export type { AwsEntry, BatchAnswer } from './publisher.js';
export type { ClaimCheckOptions } from './claim-check.js';
import { publishInBatches, type AwsEntry, type AwsService, type BatchAnswer } from './publisher.js';

/** What the SQS and SNS adapters configure their shared base with. */
export interface AwsBrokerSettings {
  /** 'SQS' or 'SNS'. */
  service: string;
  /** What a destination is: 'queue URL' or 'topic ARN'. */
  kind: string;
  /** Why a destination is not valid, or null. */
  problem: (destination: string) => string | null;
  routes: Record<string, string> | undefined;
  route: ((topic: string, message: OutgoingMessage) => string | undefined) | undefined;
  fallback: string | undefined;
  keylessGroupId: string | undefined;
  claimCheck: ClaimCheckOptions | undefined;
  maxMessageBytes: number;
  maxBatchBytes: number;
  /** Destroys the SDK client when the adapter created it; does nothing for a client the user gave. */
  destroyClient: () => void;
}

/** The batch entry's FIFO fields, when it has them. */
export function fifoFields(entry: AwsEntry): { MessageGroupId?: string; MessageDeduplicationId?: string } {
  return entry.groupId === undefined ? {} : { MessageGroupId: entry.groupId, MessageDeduplicationId: entry.deduplicationId! };
}

/** The part of the SQS and SNS adapters that is the same: routing, batching, claim checks, outcomes, close. */
export abstract class AwsBatchBroker implements Broker, MessageRouter<string> {
  abstract readonly name: string;
  private readonly claimCheck: ClaimCheck | null;
  private readonly batches: AwsService;
  private closed = false;

  constructor(private readonly settings: AwsBrokerSettings) {
    this.claimCheck = settings.claimCheck === undefined ? null : new ClaimCheck(settings.claimCheck);
    this.batches = {
      name: settings.service,
      maxMessageBytes: settings.maxMessageBytes,
      maxBatchBytes: settings.maxBatchBytes,
      isFifo: (destination) => destination.endsWith('.fifo'),
      sendBatch: (destination, entries, signal) => this.sendBatch(destination, entries, signal),
    };
  }

  /** One batch call to the service; rejects with the SDK's error. */
  protected abstract sendBatch(
    destination: string,
    entries: readonly { id: string; entry: AwsEntry }[],
    signal: AbortSignal,
  ): Promise<BatchAnswer>;

  async publish(messages: readonly OutgoingMessage[], { signal }: PublishContext): Promise<PublishOutcome[]> {
    if (this.closed) return messages.map(() => retryable(`the ${this.settings.service} broker is closed`));
    if (signal.aborted) return messages.map(() => retryable('aborted before publishing (outcome: not sent)'));
    return publishInBatches(this.batches, this, messages, signal, {
      keylessGroupId: this.settings.keylessGroupId,
      claimCheck: this.claimCheck,
      claimThresholdBytes: this.settings.claimCheck?.thresholdBytes,
    });
  }

  /** Where a message goes: `routes[topic]`, else the `route` option's answer, else the default destination. */
  route(message: OutgoingMessage): Route<string> {
    const { routes, route, fallback, kind, problem } = this.settings;
    return routeByTopic(message, { routes, route, fallback }, kind, problem);
  }

  /** Destroys the clients the adapter created (given ones stay open). Idempotent; later publishes are retryable. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.settings.destroyClient();
    this.claimCheck?.close();
  }
}
