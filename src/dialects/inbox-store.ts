import type { InboxDeadLetter, NewDeadLetter } from '../dedupe/message.js';
import type { SqlExecutor } from './executor.js';

/** The names of every table one inbox owns, derived from its table name. */
export interface InboxNames {
  schema: string | null;
  /** (consumer, message id) of every processed message, until retention removes it. */
  table: string;
  /** Consumer-side dead letters. */
  dead: string;
}

export function inboxNames(table: string, schema: string | null): InboxNames {
  return { schema, table, dead: `${table}_dead` };
}

/** The inbox's SQL; every call runs on an executor the caller chose (their transaction, or a short one of ours). */
export interface InboxStore {
  /**
   * Records (consumer, messageId) in the caller's transaction. False when it is already recorded by a committed
   * transaction; a concurrent uncommitted record of the same pair makes this wait for that transaction's outcome.
   * Never aborts the caller's transaction on a duplicate.
   */
  record(run: SqlExecutor, names: InboxNames, consumer: string, messageId: string): Promise<boolean>;
  /** Deletes up to `limit` records older than `olderThanMs` (by the database's clock), oldest first. */
  cleanup(run: SqlExecutor, names: InboxNames, olderThanMs: number, limit: number): Promise<number>;
  /** Writes a dead letter; a second one for the same consumer and message id replaces the first's details. */
  bury(run: SqlExecutor, names: InboxNames, letter: NewDeadLetter): Promise<void>;
  /** Dead letters oldest first, optionally of one consumer, after a seq (for paging). */
  listDead(
    run: SqlExecutor,
    names: InboxNames,
    filter: { consumer: string | null; afterSeq: string | null; limit: number },
  ): Promise<InboxDeadLetter[]>;
  /** One dead letter by seq, locked until the transaction ends when `lock` is set; null when there is none. */
  getDead(run: SqlExecutor, names: InboxNames, seq: string, lock: boolean): Promise<InboxDeadLetter | null>;
  deleteDead(run: SqlExecutor, names: InboxNames, seq: string): Promise<boolean>;
}
