/** What one topic of an outbox table holds right now. */
export interface TopicStatus {
  topic: string;
  /** Unsent messages (claimed ones included). */
  pending: number;
  oldestPendingAt: Date | null;
  /** Claimed by a relay whose lease has not run out. */
  inFlight: number;
  /** Claimed, but the lease ran out: the relay died or stalled, and another relay will take the message over. */
  expiredLeases: number;
  dead: number;
  /** Sent rows still kept (retainSentMs) whose send was less than a minute ago. */
  sentLastMinute: number;
}

export interface TableStatus {
  /** The database's clock, for ages. */
  now: Date;
  topics: TopicStatus[];
}

/** Which dead letters a person means. Every given field must match. */
export interface DeadLetterFilter {
  /** Topic; `*` matches any run of characters. */
  topic?: string;
  key?: string;
  /** Text the last error contains (case-insensitive). */
  error?: string;
  /** Enqueued at least this long ago. */
  olderThanMs?: number;
  /** Enqueued at most this long ago. */
  newerThanMs?: number;
  ids?: readonly string[];
}

export interface DeadLetterRow {
  seq: string;
  id: string;
  topic: string;
  key: string | null;
  attempts: number;
  lastError: string | null;
  createdAt: Date;
  contentType: string;
  headers: Record<string, string>;
  payload: Buffer;
  /** Whether it still holds its key (dead under 'block-key'): later messages of the key wait for it. */
  holdsKey: boolean;
}

/** Rows a relay holds right now under one claim token (its lease has not run out). */
export interface LeaseHolding {
  /** The claim token: the relay's instance id (`host:pid:random`), then `:nonce:claim`. */
  owner: string;
  messages: number;
  /** When the latest of these leases runs out. */
  until: Date;
}

/** A key held by a dead letter (block-key): later messages of the key wait until a person acts on it. */
export interface BlockedKey {
  key: string;
  /** The dead letter at the head of the key. */
  head: { seq: string; id: string; topic: string; createdAt: Date; lastError: string | null };
  /** Messages of the key waiting behind it (pending ones; in logical mode, the ones parked as dead). */
  waiting: number;
}

/**
 * A key whose bookkeeping is off: messages wait but nothing heads the key (it would never move again), or
 * several messages head it (its order is at risk). Neither arises from txoutbox's own statements; a hand-edited
 * row, a restored backup or an older relay can leave one, and `txoutbox doctor` finds and repairs it.
 */
export interface HeadProblem {
  key: string;
  kind: 'no-head' | 'several-heads';
  heads: number;
  waiting: number;
}

export function headProblem(key: string, heads: number, waiting: number): HeadProblem {
  return { key, kind: heads === 0 ? 'no-head' : 'several-heads', heads, waiting };
}

/** The distinct keys among these. */
export function distinctKeys(keys: readonly (string | null)[]): Set<string> {
  return new Set(keys.flatMap((key) => (key === null ? [] : [key])));
}

/**
 * What operators do to an outbox table: look at it, and act on dead letters. Retry and discard keep the table's
 * invariants: per-key order, and exactly one head for every key with unsent messages.
 */
export interface AdminStore {
  status(): Promise<TableStatus>;
  /** Dead letters matching the filter, oldest first, at most `limit`, after seq `after` (for paging). */
  listDead(filter: DeadLetterFilter, limit: number, after?: string): Promise<DeadLetterRow[]>;
  /** Only the seqs of the dead letters listDead would return (no payloads read), for counting and acting on them. */
  deadSeqs(filter: DeadLetterFilter, limit: number, after?: string): Promise<string[]>;
  /** Makes these dead letters pending again (attempts 0, due now); returns how many were still dead. */
  retryDead(seqs: readonly string[]): Promise<number>;
  /** Deletes these dead letters, moving each key on to its next message; returns how many were still dead. */
  discardDead(seqs: readonly string[]): Promise<number>;
  /** Messages sent after `from` and up to `to` (database clock) that the table still keeps (retainSentMs). */
  sentBetween(from: Date, to: Date): Promise<number>;
  /** Live leases by claim token, read through the claim index (a claim moves next_attempt_at to its lease's end). */
  leases(): Promise<LeaseHolding[]>;
  /** Keys held by a dead head, oldest head first, at most `limit`, after head seq `after` (for paging). */
  blockedKeys(limit: number, after?: string): Promise<BlockedKey[]>;
  /** Keys whose head bookkeeping is off (none, or several heads). A scan of the unsent rows. */
  headProblems(): Promise<HeadProblem[]>;
  /** Repairs these keys: one head each (the first waiting message), under the relays' key locks. Returns heads made. */
  repairHeads(keys: readonly string[]): Promise<number>;
}

/** How the table's relays run, where that changes what retry and discard must write. */
export interface AdminOptions {
  /**
   * 'logical' (PostgreSQL): the relays stream inserts from a slot, so dead letters come back by being inserted again
   * (an update is never streamed), and under 'block-key' the messages parked behind them come back with them.
   */
  mode?: 'polling' | 'logical';
  deadLetterPolicy?: 'block-key' | 'skip';
}

/** `orders.*` → `orders.%` with LIKE's own characters escaped (`\` is the escape character). */
export function likePattern(glob: string): string {
  return glob.replace(/[\\%_]/g, '\\$&').replace(/\*/g, '%');
}

/** Counts per key, keys in byte order: the order producers and relays lock them in. */
export function countKeys(keys: readonly (string | null)[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const key of keys) if (key !== null) counts.set(key, (counts.get(key) ?? 0) + 1);
  return new Map([...counts.entries()].sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
}
