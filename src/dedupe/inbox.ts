import { OWN_HEADERS } from '../brokers/headers.js';
import type { Kysely, Transaction } from 'kysely';
import { z } from 'zod';
import { parseOptions } from '../config.js';
import type { DialectName } from '../dialects/dialect-name.js';
import {
  kyselyExecutor,
  readCommittedTransaction,
  transactionExecutor,
  type SqlExecutor,
  type TransactionLike,
} from '../dialects/executor.js';
import { inboxNames, type InboxNames } from '../dialects/inbox-store.js';
import { inboxStoreFor } from '../dialects/index.js';
import { ConfigError, NotInTransactionError } from '../errors.js';
import { validateDelivery, type InboxDelivery } from './delivery.js';
import type { InboxDeadLetter, InboxMessage, NewDeadLetter, ProcessResult } from './message.js';
import { resolveInboxOptions, type InboxOptions } from './options.js';

export interface CleanupOptions {
  /** Delete records older than this. Default: the inbox's `retentionMs` (7 days unless configured). */
  olderThanMs?: number;
  /** Rows per DELETE statement (each its own short transaction). Default 1000. */
  batchSize?: number;
  /** Stop after this many statements, to bound one call's work. Default 100. */
  maxBatches?: number;
}

export interface DeadLetterQuery {
  /** Only this consumer's dead letters. */
  consumer?: string;
  /** Page on: only dead letters after this seq. */
  afterSeq?: string;
  /** Default 100. */
  limit?: number;
}

export interface Inbox {
  readonly dialect: DialectName;
  readonly names: InboxNames;
  readonly retentionMs: number;
  /**
   * Inside `trx`, the consumer's open business transaction: records (consumer, messageId) and runs `handler`, so
   * the record commits or rolls back with the handler's effects. When the pair is already recorded the handler
   * is skipped and `{ duplicate: true }` is returned. A concurrent delivery of the same id waits for the first
   * transaction and is then a duplicate (it committed) or runs (it rolled back); no error aborts `trx` either way.
   * A handler that throws propagates its error: roll `trx` back, and the record goes with it.
   *
   * @example
   * ```ts
   * const outcome = await db.transaction().execute((trx) =>
   *   inbox.processOnce(trx, { consumer: 'billing', messageId }, async (trx) => {
   *     await trx.insertInto('invoices').values(invoice).execute();
   *     return invoice.id;
   *   }),
   * ); // { duplicate: false, result: invoice.id } the first time, { duplicate: true } after
   * ```
   */
  processOnce<Trx extends TransactionLike, T>(
    trx: Trx,
    delivery: InboxDelivery,
    handler: (trx: Trx) => T | Promise<T>,
  ): Promise<ProcessResult<T>>;
  /** Deletes records past the retention window, in small batches; returns how many. Dead letters are kept. */
  cleanup<DB>(db: Kysely<DB>, options?: CleanupOptions): Promise<number>;
  /** Records a consumer-side dead letter (one per consumer and message id; a second replaces the first's details). */
  recordDeadLetter<DB>(db: Kysely<DB>, letter: NewDeadLetter): Promise<void>;
  /** Dead letters, oldest first. */
  deadLetters<DB>(db: Kysely<DB>, query?: DeadLetterQuery): Promise<InboxDeadLetter[]>;
  /**
   * Runs `handler` on a dead letter again, through `processOnce` in one transaction that also deletes the dead
   * letter: it is gone if and only if the handler's effects committed. Returns null when there is no such dead letter.
   */
  replayDeadLetter<DB, T>(
    db: Kysely<DB>,
    seq: string,
    handler: (message: InboxMessage, trx: Transaction<DB>) => T | Promise<T>,
  ): Promise<ProcessResult<T> | null>;
  /** Deletes a dead letter (a person decided it needs no processing); false when there was none. */
  deleteDeadLetter<DB>(db: Kysely<DB>, seq: string): Promise<boolean>;
}

const cleanupSchema = z
  .object({
    olderThanMs: z.number().int().min(0).optional(),
    batchSize: z.number().int().min(1).max(100_000).default(1000),
    maxBatches: z.number().int().min(1).default(100),
  })
  .strict();

const querySchema = z
  .object({
    consumer: z.string().min(1).optional(),
    afterSeq: z.string().regex(/^\d+$/, 'afterSeq must be a seq (digits)').optional(),
    limit: z.number().int().min(1).max(10_000).default(100),
  })
  .strict();

const seqSchema = z.string().regex(/^[1-9]\d{0,18}$/, 'seq must be a dead letter seq (digits)');

/**
 * Creates the consumer inbox: `processOnce` records a message id in the consumer's own transaction, so a message
 * delivered again (at-least-once) has its effect once. Create its tables with `migrateInbox`.
 *
 * @example
 * ```ts
 * import { createInbox } from 'txoutbox';
 *
 * const inbox = createInbox({ dialect: 'postgres' });
 * const outcome = await db.transaction().execute((trx) =>
 *   inbox.processOnce(trx, { consumer: 'billing', messageId }, async (trx) => {
 *     await trx.insertInto('invoices').values(invoice).execute();
 *   }),
 * );
 * if (outcome.duplicate) console.log(`${messageId} was processed before`);
 * ```
 */
export function createInbox(options: InboxOptions): Inbox {
  const resolved = resolveInboxOptions(options);
  const names = inboxNames(resolved.table, resolved.schema);
  const store = inboxStoreFor(resolved.dialect);

  async function executorFor(trx: unknown): Promise<SqlExecutor> {
    try {
      return await transactionExecutor(trx, resolved.dialect);
    } catch (error) {
      if (error instanceof NotInTransactionError) throw new NotInTransactionError(error.what, 'processOnce');
      throw error;
    }
  }

  async function processOnce<Trx extends TransactionLike, T>(
    trx: Trx,
    delivery: InboxDelivery,
    handler: (trx: Trx) => T | Promise<T>,
  ): Promise<ProcessResult<T>> {
    const { consumer, messageId } = validateDelivery(delivery);
    if (typeof handler !== 'function') throw new ConfigError('processOnce: handler must be a function.');
    const run = await executorFor(trx);
    // Record first: the insert is what makes a concurrent delivery of the id wait, so only one handler runs.
    if (!(await store.record(run, names, consumer, messageId))) return { duplicate: true };
    return { duplicate: false, result: await handler(trx) };
  }

  async function cleanup<DB>(db: Kysely<DB>, options: CleanupOptions = {}): Promise<number> {
    const parsed = parseOptions(cleanupSchema, options, 'inbox.cleanup');
    const olderThanMs = parsed.olderThanMs ?? resolved.retentionMs;
    // READ COMMITTED: a scanning DELETE under MySQL's REPEATABLE READ would gap-lock where consumers insert.
    const inTransaction = readCommittedTransaction(db);
    let deleted = 0;
    for (let batch = 0; batch < parsed.maxBatches; batch++) {
      const count = await inTransaction((run) => store.cleanup(run, names, olderThanMs, parsed.batchSize));
      deleted += count;
      if (count < parsed.batchSize) break;
    }
    return deleted;
  }

  async function replayDeadLetter<DB, T>(
    db: Kysely<DB>,
    seq: string,
    handler: (message: InboxMessage, trx: Transaction<DB>) => T | Promise<T>,
  ): Promise<ProcessResult<T> | null> {
    parseOptions(seqSchema, seq, 'inbox.replayDeadLetter');
    return db.transaction().execute(async (trx) => {
      const run = kyselyExecutor(trx);
      const letter = await store.getDead(run, names, seq, true);
      if (letter === null) return null;
      if (letter.messageId === null) {
        throw new ConfigError(
          `Dead letter ${seq} carried no message id, so the inbox cannot make its replay once-only; ` +
            'handle it by hand, then deleteDeadLetter it.',
        );
      }
      const message: InboxMessage = {
        id: letter.messageId,
        topic: letter.topic ?? letter.destination,
        key: letter.headers[OWN_HEADERS.key] ?? null,
        payload: letter.payload,
        contentType: letter.contentType,
        headers: letter.headers,
        attempt: letter.attempts + 1,
      };
      const result = await processOnce(trx, { consumer: letter.consumer, messageId: letter.messageId }, (t) =>
        handler(message, t),
      );
      await store.deleteDead(run, names, seq);
      return result;
    });
  }

  return {
    dialect: resolved.dialect,
    names,
    retentionMs: resolved.retentionMs,
    processOnce,
    cleanup,
    async recordDeadLetter(db, letter) {
      await store.bury(kyselyExecutor(db), names, letter);
    },
    async deadLetters(db, query = {}) {
      const parsed = parseOptions(querySchema, query, 'inbox.deadLetters');
      return store.listDead(kyselyExecutor(db), names, {
        consumer: parsed.consumer ?? null,
        afterSeq: parsed.afterSeq ?? null,
        limit: parsed.limit,
      });
    },
    replayDeadLetter,
    async deleteDeadLetter(db, seq) {
      parseOptions(seqSchema, seq, 'inbox.deleteDeadLetter');
      return store.deleteDead(kyselyExecutor(db), names, seq);
    },
  };
}
