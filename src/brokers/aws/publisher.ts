import type { OutgoingMessage, PublishOutcome } from '../broker.js';
import { errorText } from '../errors.js';
import { OK, permanent, retryable, type Failure } from '../outcomes.js';
import type { MessageRouter } from '../route.js';
import { buildAttributes, encodeBody, fifoToken, messageSize, type AwsAttribute } from './attributes.js';
import { EXTENDED_SIZE_ATTRIBUTES, pointerBody, type ClaimCheck } from './claim-check.js';
import { classifyEntry, classifyThrown, type FailedEntry } from './classify.js';

/** One message as a batch entry of SendMessageBatch or PublishBatch (the service maps it to its own field names). */
export interface AwsEntry {
  body: string;
  attributes: Record<string, AwsAttribute>;
  /** FIFO only: the message key (or the keyless group), and the message id. */
  groupId?: string;
  deduplicationId?: string;
}

/** What a batch call answered: the entry ids it accepted, and those it refused with their codes. */
export interface BatchAnswer {
  successful: readonly string[];
  failed: readonly FailedEntry[];
}

/** What differs between SQS and SNS for publishing. */
export interface AwsService {
  /** 'SQS' or 'SNS', for error texts. */
  name: string;
  /** The largest message (body + attributes) the service takes, and the largest batch request. */
  maxMessageBytes: number;
  maxBatchBytes: number;
  isFifo(destination: string): boolean;
  sendBatch(destination: string, entries: readonly { id: string; entry: AwsEntry }[], signal: AbortSignal): Promise<BatchAnswer>;
}

export interface AwsPublishOptions {
  /** FIFO: the group of keyless messages; undefined puts each in a group of its own (its id). */
  keylessGroupId: string | undefined;
  claimCheck: ClaimCheck | null;
  claimThresholdBytes: number | undefined;
}

const MAX_BATCH_ENTRIES = 10;

type Prepared = { index: number; destination: string; entry: AwsEntry; size: number };

/**
 * Publishes through the service's batch call: at most 10 entries and `maxBatchBytes` per request, one destination
 * each. Every entry of an answer is an outcome of its own (`Failed[]` by its code), never "the batch succeeded".
 */
export async function publishInBatches(
  service: AwsService,
  router: MessageRouter<string>,
  messages: readonly OutgoingMessage[],
  signal: AbortSignal,
  options: AwsPublishOptions,
): Promise<PublishOutcome[]> {
  const outcomes: PublishOutcome[] = messages.map(() => retryable('not sent'));
  const prepared: Prepared[] = [];
  await Promise.all(
    messages.map(async (message, index) => {
      const routed = router.route(message);
      if ('refused' in routed) return void (outcomes[index] = permanent(routed.refused));
      const entry = await prepare(service, message, routed.to, signal, options);
      if ('status' in entry) outcomes[index] = entry;
      else prepared.push({ index, destination: routed.to, ...entry });
    }),
  );
  await Promise.all(
    chunks(prepared, service.maxBatchBytes).map(async (chunk) => {
      const destination = chunk[0]!.destination;
      const what = `${service.name} batch to ${destination}`;
      try {
        const answer = await service.sendBatch(
          destination,
          chunk.map((p) => ({ id: `m${p.index}`, entry: p.entry })),
          signal,
        );
        const accepted = new Set(answer.successful);
        const failed = new Map(answer.failed.map((f) => [f.Id, f]));
        for (const p of chunk) {
          const id = `m${p.index}`;
          const refusal = failed.get(id);
          outcomes[p.index] = accepted.has(id)
            ? OK
            : refusal !== undefined
              ? classifyEntry(refusal, `${service.name} refused the message on ${destination}`)
              : retryable(`${what}: the answer named neither success nor failure for this entry (resent with the same id)`);
        }
      } catch (error) {
        const failure: Failure = signal.aborted
          ? retryable(`aborted before ${service.name} answered (outcome unknown; resent with the same id)`)
          : classifyThrown(error, what);
        for (const p of chunk) outcomes[p.index] = failure;
      }
    }),
  );
  return outcomes;
}

/** The entry for one message, or the outcome that refuses it (claim-checking its payload to S3 when configured). */
async function prepare(
  service: AwsService,
  message: OutgoingMessage,
  destination: string,
  signal: AbortSignal,
  options: AwsPublishOptions,
): Promise<{ entry: AwsEntry; size: number } | Failure> {
  const fifo = service.isFifo(destination)
    ? { groupId: fifoToken(message.key ?? options.keylessGroupId ?? message.id), deduplicationId: fifoToken(message.id) }
    : {};
  try {
    const { body, base64 } = encodeBody(message.payload);
    const attributes = buildAttributes(message, base64);
    const size = messageSize(body, attributes);
    const threshold = Math.min(options.claimThresholdBytes ?? service.maxMessageBytes, service.maxMessageBytes);
    if (size <= threshold && body.length > 0) return { entry: { body, attributes, ...fifo }, size };
    if (options.claimCheck === null) {
      if (body.length === 0) return permanent(`${service.name} cannot carry an empty message body`);
      return permanent(
        `the message is ${size} bytes (body and attributes), past ${service.name}'s limit of ${service.maxMessageBytes} bytes; ` +
          'configure claimCheck to send large payloads through S3',
      );
    }
    let pointer;
    try {
      pointer = await options.claimCheck.put(message, signal);
    } catch (error) {
      return signal.aborted
        ? retryable('aborted while storing the payload in S3 (outcome unknown; resent with the same id)')
        : classifyThrown(error, 'cannot store the payload in S3 for the claim check');
    }
    const sizeAttribute = {
      [EXTENDED_SIZE_ATTRIBUTES[0]]: { DataType: 'Number', StringValue: String(message.payload.length) },
    } as const;
    const pointed = { body: pointerBody(pointer), attributes: buildAttributes(message, false, sizeAttribute), ...fifo };
    const pointedSize = messageSize(pointed.body, pointed.attributes);
    if (pointedSize > service.maxMessageBytes) {
      return permanent(
        `even with its payload in S3 the message is ${pointedSize} bytes, past ${service.name}'s limit (its headers are too large)`,
      );
    }
    return { entry: pointed, size: pointedSize };
  } catch (error) {
    return permanent(errorText(error));
  }
}

/** Entries grouped by destination, then cut into requests of at most 10 entries and `maxBytes`. */
function chunks(prepared: readonly Prepared[], maxBytes: number): Prepared[][] {
  const byDestination = new Map<string, Prepared[]>();
  for (const p of [...prepared].sort((a, b) => a.index - b.index)) {
    const list = byDestination.get(p.destination) ?? [];
    list.push(p);
    byDestination.set(p.destination, list);
  }
  const result: Prepared[][] = [];
  for (const entries of byDestination.values()) {
    let current: Prepared[] = [];
    let bytes = 0;
    for (const p of entries) {
      if (current.length === MAX_BATCH_ENTRIES || (current.length > 0 && bytes + p.size > maxBytes)) {
        result.push(current);
        current = [];
        bytes = 0;
      }
      current.push(p);
      bytes += p.size;
    }
    if (current.length > 0) result.push(current);
  }
  return result;
}
