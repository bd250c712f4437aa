import { sql, type Kysely } from 'kysely';
import type { TableNames } from '../../dialects/identifiers.js';

/** What becomes of a row once its fate is known. */
export type Mark = { seq: string; kind: 'sent' } | { seq: string; kind: 'dead'; error: string; attempts: number };

/**
 * Writes the fate of streamed rows to the table in batches, off the publish path: sent rows are deleted (or kept
 * as 'sent' for retainSentMs), dead ones marked with their error. A flush resolves once its batch has committed,
 * which is when the relay may confirm the slot past those rows: a crash before that streams them again.
 */
export class Marker<DB> {
  private pending: { mark: Mark; done: () => void }[] = [];
  private flushing: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly db: Kysely<DB>,
    private readonly names: TableNames,
    private readonly options: { retainSent: boolean; asyncCommit: boolean; token: string; flushMs: number; maxBatch: number },
    private readonly onError: (error: unknown) => void,
  ) {}

  /** Queues a mark; `done` runs once it has committed. */
  add(mark: Mark, done: () => void): void {
    this.pending.push({ mark, done });
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
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.flushing = this.write(batch.map((entry) => entry.mark)).then(
      () => batch.forEach((entry) => entry.done()),
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
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.pending = [];
  }

  private async write(marks: readonly Mark[]): Promise<void> {
    const table = this.names.schema === null ? sql.id(this.names.table) : sql.id(this.names.schema, this.names.table);
    const sent = marks.flatMap((m) => (m.kind === 'sent' ? [m.seq] : []));
    const dead = marks.flatMap((m) => (m.kind === 'dead' ? [m] : []));
    await this.db.transaction().execute(async (trx) => {
      if (this.options.asyncCommit) await sql`SET LOCAL synchronous_commit = off`.execute(trx);
      if (sent.length > 0) {
        await (this.options.retainSent
          ? sql`UPDATE ${table} SET state = 'sent', sent_at = now(), ready = false, lease_owner = ${this.options.token}
                WHERE seq = ANY(${sent}::int8[]) AND state = 'pending'`
          : sql`DELETE FROM ${table} WHERE seq = ANY(${sent}::int8[]) AND state = 'pending'`
        ).execute(trx);
      }
      if (dead.length > 0) {
        await sql`
          UPDATE ${table} AS t SET state = 'dead', ready = false, last_error = d.error, attempts = d.attempts,
                 lease_owner = ${this.options.token}, lease_until = NULL
          FROM unnest(${dead.map((d) => d.seq)}::int8[], ${dead.map((d) => d.error)}::text[], ${dead.map((d) => d.attempts)}::int4[])
               AS d(seq, error, attempts)
          WHERE t.seq = d.seq AND t.state = 'pending'`.execute(trx);
      }
    });
  }
}
