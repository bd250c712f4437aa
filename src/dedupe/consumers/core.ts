import type { EventEmitter } from 'node:events';
import type { Kysely, Transaction } from 'kysely';
import { z } from 'zod';
import { ValidationError } from '../../errors.js';
import { validateDelivery } from '../delivery.js';
import type { Inbox } from '../inbox.js';
import type { InboxMessage, NewDeadLetter } from '../message.js';

/** Your business logic for one message, run inside the transaction that records it in the inbox. */
export type InboxHandler<DB> = (message: InboxMessage, trx: Transaction<DB>) => unknown;

/** What a consumer helper did with a message; reported as events once it is settled with the broker. */
export interface InboxConsumerEvents {
  /** The handler ran and its transaction committed (the ack follows). */
  processed: [message: InboxMessage];
  /** The inbox had the id already: the handler was skipped (a redelivery, a resend). */
  duplicate: [message: InboxMessage];
  /** The handler failed; the message comes back after `delayMs`. */
  retrying: [event: { message: InboxMessage; error: string; delayMs: number }];
  /** Out of attempts (or not processable at all): written to the inbox's dead-letter table, then taken off the queue. */
  dead: [letter: NewDeadLetter];
  /** Connection trouble and other failures outside a handler; the consumer keeps going (reconnecting) regardless. */
  error: [error: Error];
}

/** Options every consumer helper shares. */
export interface InboxConsumerOptions<DB> {
  /** A Kysely instance (with its own pool) on the database of your business tables and the inbox. */
  db: Kysely<DB>;
  inbox: Inbox;
  handler: InboxHandler<DB>;
  /** Deliveries to the handler before a message is dead-lettered. Default 5. */
  maxAttempts?: number;
  /** Delay before redelivery n (the last one repeats). Default [1000, 5000, 30000] ms. */
  retryDelaysMs?: number[];
  /**
   * Called after the handler's transaction committed (or the message was found to be a duplicate) and before the
   * ack; awaited. For tracing and for tests that act out a crash between commit and ack. A throw is reported as an
   * `error` event and the ack goes ahead.
   */
  onCommitted?: (message: InboxMessage, outcome: 'processed' | 'duplicate') => void | Promise<void>;
}

export const DEFAULT_RETRY_DELAYS_MS = [1000, 5000, 30_000];

/** zod shapes for the shared options; each helper adds its broker's own. */
export const sharedOptionShape = {
  db: z.custom<Kysely<unknown>>(
    (value) => typeof (value as { transaction?: unknown } | null)?.transaction === 'function',
    'db must be a Kysely instance',
  ),
  inbox: z.custom<Inbox>(
    (value) => typeof (value as { processOnce?: unknown } | null)?.processOnce === 'function',
    'inbox must come from createInbox()',
  ),
  handler: z.custom<InboxHandler<unknown>>((value) => typeof value === 'function', 'handler must be a function'),
  consumer: z.string().min(1).max(255).optional(),
  maxAttempts: z.number().int().min(1).max(1000).default(5),
  retryDelaysMs: z
    .array(
      z
        .number()
        .int()
        .min(0)
        .max(24 * 60 * 60 * 1000),
    )
    .min(1, 'retryDelaysMs must list at least one delay')
    .default(DEFAULT_RETRY_DELAYS_MS),
  onCommitted: z
    .custom<NonNullable<InboxConsumerOptions<unknown>['onCommitted']>>(
      (value) => typeof value === 'function',
      'onCommitted must be a function',
    )
    .optional(),
};

/** The shared options once validated, with the name the inbox records ids under. */
export type PolicyOptions = Omit<z.output<z.ZodObject<typeof sharedOptionShape>>, 'consumer'> & { consumer: string };

type Verdict = { kind: 'processed' } | { kind: 'duplicate' } | { kind: 'failed'; error: string };

/** Longest error text kept in a dead letter or a retry header. */
const MAX_ERROR_LENGTH = 4000;

export function describeError(error: unknown): string {
  const text = error instanceof Error ? (error.stack ?? `${error.name}: ${error.message}`) : String(error);
  return text.length > MAX_ERROR_LENGTH ? `${text.slice(0, MAX_ERROR_LENGTH)}…` : text;
}

/** The delay before the delivery after failed attempt `attempt` (1-based); the last configured delay repeats. */
export function retryDelay(delays: readonly number[], attempt: number): number {
  return delays[Math.min(attempt, delays.length) - 1] ?? 0;
}

/** Why a message's id cannot go through the inbox, or null when it can. */
export function idProblem(consumer: string, id: string | null): string | null {
  if (id === null)
    return 'the message carries no id (no message id property or txoutbox-id header), so it cannot be processed once';
  try {
    validateDelivery({ consumer, messageId: id });
    return null;
  } catch (error) {
    if (error instanceof ValidationError) return `the message id cannot be processed once: ${error.message}`;
    throw error;
  }
}

/** Runs the handler once per (consumer, id): its own transaction, processOnce around the handler. Never throws. */
async function runOnce(options: PolicyOptions, message: InboxMessage): Promise<Verdict> {
  try {
    const result = await options.db
      .transaction()
      .execute((trx) =>
        options.inbox.processOnce(trx, { consumer: options.consumer, messageId: message.id }, (t) => options.handler(message, t)),
      );
    return { kind: result.duplicate ? 'duplicate' : 'processed' };
  } catch (error) {
    return { kind: 'failed', error: describeError(error) };
  }
}

/** How a transport settles one delivery with its broker: the policy decides which, the transport knows how. */
export interface Settlement {
  /** The handler's transaction committed, or the id was a duplicate: the broker may forget the message. */
  ack(): void;
  /** The dead letter is recorded: the message leaves the queue for good. */
  drop(): void;
  /**
   * Brings the message back after `delayMs`, carrying `attempts` failed so far and the handler's last `error` (null
   * when it was the dead-letter write that failed, reported already). False when that could not be arranged: the
   * transport has said why and left the message to come back another way.
   */
  retry(delayMs: number, attempts: number, error: string | null): Promise<boolean>;
}

/** One delivery, as a transport hands it to the policy. */
export interface Delivery {
  /** Its `id` is '' when the message carried none. */
  message: InboxMessage;
  /** The id as the message carried it, or null when it carried none. */
  id: string | null;
  settlement: Settlement;
}

/** What the policy needs to know of a transport besides how it settles. */
export interface Transport {
  /** The dead letters' `source`: 'rabbitmq', 'nats' or 'sqs'. */
  source: string;
  /** The dead letters' `destination`: the queue, or `<stream>/<durable>`. */
  destination: string;
  /**
   * A message delivered more than `maxAttempts` times without being settled (its consumer died each time): why, as
   * its dead letter says. Its attempts are the deliveries before this one, on which the handler does not run.
   */
  neverSettled: { because: string };
}

/**
 * The one delivery policy of the consumer helpers, wrapped around the handler as watermill's router middleware is:
 * run it once per id in a transaction of its own, then ack (only after the commit); after a failure bring the message
 * back after its delay; after `maxAttempts` (or at once, when it cannot go through the inbox) record a dead letter,
 * then drop it. Outcomes are the consumer's events; `deliver` throws only when a settlement does.
 */
export class DeliveryPolicy {
  constructor(
    private readonly events: EventEmitter<InboxConsumerEvents>,
    private readonly options: PolicyOptions,
    private readonly transport: Transport,
  ) {}

  async deliver({ message, id, settlement }: Delivery): Promise<void> {
    const { consumer, maxAttempts, retryDelaysMs } = this.options;
    const problem = idProblem(consumer, id);
    if (problem !== null) return this.bury(settlement, message, problem, id === '' ? null : id, 0);
    if (message.attempt > maxAttempts) {
      // Its consumer died each time before settling it: do not run the handler again.
      const error = `delivered ${message.attempt} times without being settled (${this.transport.neverSettled.because})`;
      return this.bury(settlement, message, error, message.id, message.attempt - 1);
    }
    const verdict = await runOnce(this.options, message);
    if (verdict.kind !== 'failed') {
      await this.committed(message, verdict.kind);
      settlement.ack();
      this.events.emit(verdict.kind, message);
      return;
    }
    if (message.attempt >= maxAttempts) return this.bury(settlement, message, verdict.error, message.id, message.attempt);
    const delayMs = retryDelay(retryDelaysMs, message.attempt);
    if (await settlement.retry(delayMs, message.attempt, verdict.error)) {
      this.events.emit('retrying', { message, error: verdict.error, delayMs });
    }
  }

  /**
   * Reports trouble outside a handler: emits `error` when someone listens, else prints it to stderr as the relay does
   * (an `error` event nobody hears would crash the process; dropping it would hide connection trouble and failed
   * dead-letter writes).
   */
  report(error: unknown): void {
    const wrapped = error instanceof Error ? error : new Error(String(error));
    if (this.events.listenerCount('error') > 0) this.events.emit('error', wrapped);
    else console.error(`[txoutbox inbox consumer ${this.transport.source} ${this.options.consumer}]`, wrapped);
  }

  private async committed(message: InboxMessage, outcome: 'processed' | 'duplicate'): Promise<void> {
    try {
      await this.options.onCommitted?.(message, outcome);
    } catch (error) {
      this.report(error);
    }
  }

  /** Records the dead letter, then drops the message; if recording fails the message comes back after the last delay. */
  private async bury(
    settlement: Settlement,
    message: InboxMessage,
    error: string,
    messageId: string | null,
    attempts: number,
  ): Promise<void> {
    const { consumer, db, inbox, retryDelaysMs } = this.options;
    const { source, destination } = this.transport;
    const { topic, payload, contentType, headers } = message;
    const letter: NewDeadLetter = {
      consumer,
      messageId,
      source,
      destination,
      topic,
      payload,
      contentType,
      headers,
      error,
      attempts,
    };
    try {
      await inbox.recordDeadLetter(db, letter);
    } catch (recordError) {
      this.report(new Error(`could not record a dead letter (retrying it later): ${describeError(recordError)}`));
      await settlement.retry(retryDelay(retryDelaysMs, retryDelaysMs.length), attempts, null);
      return;
    }
    settlement.drop();
    this.events.emit('dead', letter);
  }
}

/** Counts handlers in flight, so a consumer can bound them and close() can wait for them. */
export class InFlight {
  private readonly running = new Set<Promise<void>>();
  private readonly waiters = new Set<() => void>();

  get size(): number {
    return this.running.size;
  }

  track(work: Promise<void>): void {
    this.running.add(work);
    void work.finally(() => {
      this.running.delete(work);
      this.wakeAll();
    });
  }

  /** Resolves once fewer than `limit` are running, or when woken (a closing consumer stops waiting). */
  async below(limit: number, stop: () => boolean): Promise<void> {
    while (this.running.size >= limit && !stop()) await new Promise<void>((resolve) => this.waiters.add(resolve));
  }

  wakeAll(): void {
    for (const wake of this.waiters) wake();
    this.waiters.clear();
  }

  async settled(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }
}
