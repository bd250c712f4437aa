import { sql, type Kysely } from 'kysely';
import type { TableNames } from '../../dialects/identifiers.js';
import { visibleTransactions } from './visibility.js';

/**
 * What becomes of a row once its fate is known. `xid`: the transaction that inserted the row, as the slot streamed
 * it; absent for a row read from the table (visible already).
 */
export type Mark = (
  | { seq: string; kind: 'sent' }
  | {
      seq: string;
      kind: 'dead';
      error: string;
      attempts: number;
      /** The row was a deferred key's first: the key's other deferred rows are parked dead behind it ('block-key'). */
      buryDeferred?: { key: string; error: string };
    }
  | {
      seq: string;
      /** Handed back to the table (deferred_lsn, migration 005), to go out from there when due. */
      kind: 'defer';
      /** Its transaction's commit position: a key's deferred rows go out in this order. */
      lsn: string;
      due: Date;
      attempts: number;
      error: string | null;
      /** Deferred already (a row the table gave out, now retrying); otherwise a row deferred before is left alone. */
      again: boolean;
    }
) & { xid?: number };

/** How long a mark whose row's transaction is not visible yet waits before it is written again (ms, doubling). */
const UNSEEN_FIRST_DELAY_MS = 5;
const UNSEEN_MAX_DELAY_MS = 200;

interface Queued {
  mark: Mark;
  done: () => void;
  /** Writes that found no pending row for it so far. */
  unseen: number;
}

/**
 * Writes the fate of streamed rows to the table in batches, off the publish path: sent rows are deleted (or kept
 * as 'sent' for retainSentMs), dead ones marked with their error, deferred ones handed back to the table. A flush resolves once its batch has committed,
 * which is when the relay may confirm the slot past those rows: a crash before that streams them again.
 *
 * A row may not be visible yet when its mark is written: PostgreSQL sends a transaction to the slot once its commit
 * is flushed to the WAL, before the committing session makes it visible to others (with a synchronous standby, for
 * the whole wait). A mark that finds no pending row counts as done (its row was marked already, e.g. by the relay
 * before this one) only once a snapshot taken before a write that found no row saw its transaction (visibility.ts);
 * until then it is written again, 5 ms to 0.2 s apart, for as long as it takes. Confirming the slot past a row that
 * was never marked would leave it pending for ever.
 */
export class Marker<DB> {
  private pending: Queued[] = [];
  private flushing: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** Closed with its tenure of the slot: it writes nothing more, not even a retry of a write under way. */
  private closed = false;

  constructor(
    private readonly db: Kysely<DB>,
    private readonly names: TableNames,
    private readonly options: { retainSent: boolean; asyncCommit: boolean; token: string; flushMs: number; maxBatch: number },
    private readonly onError: (error: unknown) => void,
  ) {}

  /** Queues a mark; `done` runs once it has committed. */
  add(mark: Mark, done: () => void): void {
    if (this.closed) return;
    this.pending.push({ mark, done, unseen: 0 });
    if (this.pending.length >= this.options.maxBatch) void this.flush();
    else if (this.timer === null) {
      this.timer = setTimeout(() => void this.flush(), this.options.flushMs);
      this.timer.unref();
    }
  }

  /** Writes everything queued so far (one flush at a time; a failed one is tried again). */
  async flush(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    while (this.flushing !== null) await this.flushing;
    if (this.pending.length === 0 || this.closed) return;
    const batch = this.pending;
    this.pending = [];
    this.flushing = this.writeConclusively(batch.map((entry) => entry.mark)).then(
      (settled) => {
        let again = 0;
        for (const entry of batch) {
          if (settled.has(entry.mark.seq)) entry.done();
          else {
            entry.unseen++;
            again = Math.max(again, entry.unseen);
            this.unseen.push(entry);
          }
        }
        if (again > 0) this.retryUnseen(Math.min(UNSEEN_MAX_DELAY_MS, UNSEEN_FIRST_DELAY_MS * 2 ** Math.min(again - 1, 10)));
      },
      (error: unknown) => {
        this.onError(error);
        // Nothing is confirmed past these rows: queue them again, ahead of what came since.
        this.pending = [...batch, ...this.pending];
        this.timer ??= setTimeout(() => void this.flush(), 1000);
        this.timer.unref();
      },
    );
    try {
      await this.flushing;
    } finally {
      this.flushing = null;
    }
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.unseenTimer !== null) clearTimeout(this.unseenTimer);
    this.unseenTimer = null;
    this.pending = [];
    this.unseen = [];
  }

  /** Whether every mark queued so far has been written (none waits, none is being tried again). */
  get idle(): boolean {
    return this.pending.length === 0 && this.unseen.length === 0 && this.flushing === null;
  }

  /** Marks whose rows were not there yet, waiting to be written again. */
  private unseen: Queued[] = [];
  private unseenTimer: NodeJS.Timeout | null = null;

  private retryUnseen(delayMs: number): void {
    if (this.unseenTimer !== null) return;
    this.unseenTimer = setTimeout(() => {
      this.unseenTimer = null;
      this.pending.push(...this.unseen);
      this.unseen = [];
      void this.flush();
    }, delayMs);
    this.unseenTimer.unref();
  }

  /**
   * Writes the marks; returns the seqs whose marks are settled: their pending row was changed, or it is gone for good
   * (its transaction was visible to a snapshot taken before a write that found no row: marked or removed before).
   * Visibility only grows, so asking after a first write and writing those again is enough; the others wait.
   */
  private async writeConclusively(marks: readonly Mark[]): Promise<Set<string>> {
    const settled = await this.write(marks);
    // Rows read from the table (no xid) were visible when read: absent means gone.
    for (const mark of marks) if (mark.xid === undefined) settled.add(mark.seq);
    const unseen = marks.filter((mark) => !settled.has(mark.seq));
    if (unseen.length === 0) return settled;
    const visible = await visibleTransactions(this.db as Kysely<unknown>, unseen.map((mark) => mark.xid!));
    const conclusive = unseen.filter((mark) => visible.has(mark.xid!));
    if (conclusive.length === 0) return settled;
    await this.write(conclusive);
    for (const mark of conclusive) settled.add(mark.seq);
    return settled;
  }

  /** Writes the marks in one transaction; returns the seqs whose pending row it changed. */
  private async write(marks: readonly Mark[]): Promise<Set<string>> {
    const table = this.names.schema === null ? sql.id(this.names.table) : sql.id(this.names.schema, this.names.table);
    const sent = marks.flatMap((m) => (m.kind === 'sent' ? [m.seq] : []));
    const dead = marks.flatMap((m) => (m.kind === 'dead' ? [m] : []));
    const deferred = marks.flatMap((m) => (m.kind === 'defer' ? [m] : []));
    return this.db.transaction().execute(async (trx) => {
      const written = new Set<string>();
      const note = (rows: readonly { seq: string }[]) => rows.forEach((row) => written.add(row.seq));
      if (this.options.asyncCommit) await sql`SET LOCAL synchronous_commit = off`.execute(trx);
      // Deferrals first: a dead head's parking of its key's deferred rows (below) must find every one of them.
      if (deferred.length > 0) {
        const column = <T>(pick: (mark: (typeof deferred)[number]) => T) => deferred.map(pick);
        const { rows } = await sql<{ seq: string }>`
          UPDATE ${table} AS t SET deferred_lsn = coalesce(t.deferred_lsn, d.lsn), next_attempt_at = d.due,
                 attempts = d.attempts, last_error = coalesce(d.error, t.last_error), lease_owner = NULL, lease_until = NULL
          FROM unnest(${column((m) => m.seq)}::int8[], ${column((m) => m.lsn)}::int8[], ${column((m) => m.due)}::timestamptz[],
                      ${column((m) => m.attempts)}::int4[], ${column((m) => m.error)}::text[], ${column((m) => m.again)}::boolean[])
               AS d(seq, lsn, due, attempts, error, again)
          WHERE t.seq = d.seq AND t.state = 'pending' AND (t.deferred_lsn IS NULL OR d.again)
          RETURNING t.seq::text AS seq`.execute(trx);
        note(rows);
      }
      if (sent.length > 0) {
        const { rows } = await (this.options.retainSent
          ? sql<{ seq: string }>`UPDATE ${table} SET state = 'sent', sent_at = now(), ready = false, lease_owner = ${this.options.token}
                WHERE seq = ANY(${sent}::int8[]) AND state = 'pending' RETURNING seq::text AS seq`
          : sql<{ seq: string }>`DELETE FROM ${table} WHERE seq = ANY(${sent}::int8[]) AND state = 'pending' RETURNING seq::text AS seq`
        ).execute(trx);
        note(rows);
      }
      if (dead.length > 0) {
        const { rows } = await sql<{ seq: string }>`
          UPDATE ${table} AS t SET state = 'dead', ready = false, last_error = d.error, attempts = d.attempts,
                 lease_owner = ${this.options.token}, lease_until = NULL
          FROM unnest(${dead.map((d) => d.seq)}::int8[], ${dead.map((d) => d.error)}::text[], ${dead.map((d) => d.attempts)}::int4[])
               AS d(seq, error, attempts)
          WHERE t.seq = d.seq AND t.state = 'pending'
          RETURNING t.seq::text AS seq`.execute(trx);
        note(rows);
        for (const { buryDeferred } of dead) {
          if (buryDeferred === undefined) continue;
          await sql`
            UPDATE ${table} SET state = 'dead', ready = false, last_error = ${buryDeferred.error}, lease_owner = ${this.options.token}
            WHERE msg_key = ${buryDeferred.key} AND state = 'pending' AND deferred_lsn IS NOT NULL`.execute(trx);
        }
      }
      return written;
    });
  }
}
