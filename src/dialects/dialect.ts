import type { Kysely } from 'kysely';
import type { BatchPlan } from '../outbox/batch.js';
import type { AdminOptions, AdminStore } from './admin.js';
import type { DialectName } from './dialect-name.js';
import type { SqlExecutor } from './executor.js';
import type { TableNames } from './identifiers.js';
import type { InboxStore } from './inbox-store.js';

/** A message the relay has claimed: leased to one claim token until it is completed, retried, buried or released. */
export interface ClaimedMessage {
  /** The row's seq, as text (a bigint). */
  seq: string;
  id: string;
  topic: string;
  key: string | null;
  payload: Buffer;
  contentType: string;
  headers: Record<string, string>;
  /** Attempts so far, this one included. */
  attempts: number;
  createdAt: Date;
  /**
   * The claim token whose lease on this message ran out before it was settled (that relay crashed or stalled
   * mid-publish), or null for a message nobody held.
   */
  takenOverFrom: string | null;
}

/** How much one claim may take: at most `count` messages, and no more payload bytes than `bytes` (but always one). */
export interface ClaimLimits {
  count: number;
  bytes: number;
}

/** What a completion did. */
export interface Completion {
  /** The messages that were still leased to the token and are now sent (the others were taken over). */
  sent: ClaimedMessage[];
  /** How many keys got a new head, ready to be claimed at once. */
  promoted: number;
}

export interface RetryPlan {
  message: ClaimedMessage;
  error: string;
  delayMs: number;
}

export interface DeadLetter {
  message: ClaimedMessage;
  error: string;
}

/**
 * The relay's view of the outbox tables. Every call that changes a claimed row checks the claim token, so a
 * relay whose lease was taken over (it stalled, the other relay published) cannot undo the other's work. Nothing
 * here waits for a producer's open transaction: producers only insert, and relays lock keys among themselves.
 */
export interface RelayStore {
  /**
   * Sequences newly committed keyed messages (each becomes its key's head, or waits behind it), then leases due
   * heads to `token` for `leaseMs`, counting an attempt for each.
   */
  claim(limits: ClaimLimits, token: string, leaseMs: number): Promise<ClaimedMessage[]>;
  /** After the broker's persisted ack: deletes (or, retaining, marks sent) and makes each key's next message its head. */
  complete(messages: readonly ClaimedMessage[], token: string, retain: boolean): Promise<Completion>;
  retry(plans: readonly RetryPlan[], token: string): Promise<void>;
  /** Dead-letters; with `releaseKey` the key moves on to its next message (policy 'skip'), otherwise it waits. Returns heads made. */
  bury(letters: readonly DeadLetter[], token: string, releaseKey: boolean): Promise<number>;
  /** Gives leases back untouched (the attempt is not counted), for a relay that stops mid-publish. */
  release(messages: readonly ClaimedMessage[], token: string): Promise<void>;
  /** Moves a message's lease from one token to another, renewed for `leaseMs`; false when it is no longer leased to `from`. */
  handOver(message: ClaimedMessage, from: string, to: string, leaseMs: number): Promise<boolean>;
  /** Renews the leases of these messages, still held by `token`, for `leaseMs` from now. */
  renew(messages: readonly ClaimedMessage[], token: string, leaseMs: number): Promise<void>;
  /** Deletes up to `limit` sent rows older than `retainMs`. */
  cleanup(retainMs: number, limit: number): Promise<number>;
}

export interface RelayStoreOptions {
  /**
   * PostgreSQL: commit the relay's own bookkeeping (claims, sent marks, retries) without waiting for its WAL flush.
   * A database crash can then undo the last moments of marks, which only makes the relay send those messages
   * again with the same ids; producers' commits are untouched, so nothing committed can be lost.
   */
  asyncCommit?: boolean;
}

export interface EnqueueOptions {
  /** PostgreSQL: NOTIFY listening relays on commit (opt-in: PostgreSQL lets one notifying transaction commit at a time). */
  notify: boolean;
}

/** A pool of the dialect's driver behind Kysely, for the sidecar (library users bring their own). */
export interface PoolOptions {
  url: string;
  poolSize: number;
  /** Errors on idle pooled connections (a restart, a failover): reported instead of crashing the process. */
  onError: (error: Error) => void;
}

/**
 * What differs between the databases, behind one interface: `outbox`, `relay`, `dedupe` and the sidecar ask the
 * dialect instead of testing its name, so a database's differences live in its own folder.
 */
export interface Dialect {
  readonly name: DialectName;
  /** Whether relays can stream commits from the write-ahead log (`mode: 'logical'`): PostgreSQL's logical decoding. */
  readonly logicalDecoding: boolean;
  /** Whether producers can wake relays on commit (`notify`, `listen`): PostgreSQL's LISTEN/NOTIFY. */
  readonly commitWakeups: boolean;
  /** The URL schemes the dialect's drivers accept, for configuration checks (`postgres`, `mysql`, ...). */
  readonly urlSchemes: readonly string[];
  /**
   * Writes a planned batch inside the caller's transaction and returns the ids actually written (the others were
   * duplicates of committed or concurrently committing messages). Never aborts the caller's transaction on a
   * duplicate id.
   */
  enqueue(run: SqlExecutor, names: TableNames, plan: BatchPlan, options: EnqueueOptions): Promise<Set<string>>;
  relayStore<DB>(db: Kysely<DB>, names: TableNames, options?: RelayStoreOptions): RelayStore;
  /** The queries behind `txoutbox status` and `txoutbox dead ...`. */
  adminStore<DB>(db: Kysely<DB>, names: TableNames, options?: AdminOptions): AdminStore;
  readonly inboxStore: InboxStore;
  /** Opens a Kysely instance on a pool of its own. */
  openPool(options: PoolOptions): Promise<Kysely<unknown>>;
}
