import { sql, type Kysely } from 'kysely';
import type { OutgoingMessage, PublishOutcome } from '../../brokers/broker.js';
import type { TableNames } from '../../dialects/identifiers.js';
import { backoffDelay } from '../backoff.js';
import { isUnreachable } from '../circuit-breaker.js';
import type { ResolvedRelayOptions } from '../options.js';
import { publishWithDeadline } from '../publish-with-deadline.js';
import { setLongTimeout, type LongTimer } from '../../timers.js';
import type { DeadMessage, RetryingMessage } from '../events.js';
import { parseLsn, type Lsn } from './lsn.js';
import { DeferredRows, rowFromTable } from './deferred-rows.js';
import { Marker } from './marker.js';
import { partitionFilter } from './names.js';
import { backfillThrough, ensureSlot, recordBackfillBoundary, recordCleanStop, takeOverSlot } from './slots.js';
import { SlotStream, type ReplicationSource, type StreamedRow, type StreamedTransaction } from './slot-stream.js';
import { visibleTransactions } from './visibility.js';

/** A streamed transaction not yet confirmed: its end position, and how many of its rows are not yet marked. */
interface Pending {
  endLsn: Lsn;
  commitTime: Date;
  open: number;
  xid: number;
  /**
   * Other sessions see its rows (see visibility.ts). Until then none of them is published or checked against the
   * table: the producer's COMMIT has not returned, and "not in the table" means nothing yet.
   */
  visible: boolean;
}

interface Entry {
  row: StreamedRow;
  /** The streamed transaction the row came in; null for a row found by the backfill. */
  transaction: Pending | null;
  attempts: number;
  /**
   * Committed before this relay took the slot, so the relay before it may have published it already. 'count': that
   * relay crashed, and may have died publishing it: its attempt is counted in the table before it goes out (see
   * publishSuspects). 'check': that relay stopped cleanly: it goes out unless its row is marked already (see
   * checkSuspects).
   */
  suspect: 'check' | 'count' | null;
  /** Given out by the table (a deferred row, see DeferredRows): its attempt was counted when it was claimed. */
  fromTable?: boolean;
}

export interface PartitionEvents {
  published(messages: OutgoingMessage[]): void;
  retrying(messages: RetryingMessage[]): void;
  dead(messages: DeadMessage[]): void;
  error(error: Error): void;
  /** The slot is this relay's (true) or no longer (false). */
  owned(owned: boolean): void;
}

export interface PartitionOptions {
  options: ResolvedRelayOptions;
  names: TableNames;
  replication: ReplicationSource;
  slot: string;
  publication: string;
  partition: number;
  partitions: number;
  token: string;
  events: PartitionEvents;
}

/** Rows checked per read after a clean handover (see checkSuspects). */
const CHECK_BATCH = 1000;

/** Buffered messages past which the relay stops reading the slot until the broker catches up. */
const BUFFER_FACTOR = 20;

/**
 * A message due later than this (delayed, or retrying) is handed back to the table rather than waiting in memory,
 * with every later message of its key: the slot is confirmed past it at once, so it holds neither the server's WAL
 * nor the relay's buffer (which, full, would stop every other key).
 */
const DEFER_AFTER_MS = 1000;

/**
 * Whether streamed transactions are visible yet is asked again at once for their first few questions (the usual
 * gap is the microseconds a committing backend takes to leave the proc array, and the relay often asks within
 * them), then 1 ms apart, doubling up to the max (a synchronous standby that is slow to answer).
 */
const VISIBILITY_QUICK_QUESTIONS = 3;
const VISIBILITY_MAX_DELAY_MS = 100;

/**
 * Relays one slot (one partition of the outbox) while this process holds it: streams committed rows in commit
 * order, publishes each key's messages one at a time (keys in parallel), marks their rows after the broker's
 * acknowledgement, and confirms the slot past a transaction once all its rows are marked (sent or dead), so a
 * crash anywhere streams again what was not confirmed, with the same ids. Another relay holding the slot makes
 * this one a standby: it tries again every standbyRetryMs and takes over once the slot is free.
 */
export class PartitionRunner {
  private running = false;
  private stream: SlotStream | null = null;
  private loop: Promise<void> | null = null;
  private readonly inFlight = new Set<AbortController>();
  owned = false;
  /** Rows taken from the stream (not the backfill) since this relay started. */
  streamed = 0;

  // The state of one tenure of the slot; reset whenever the slot is (re)acquired.
  private keys = new Map<string, Entry[]>();
  private ready: Entry[] = [];
  private transactions: Pending[] = [];
  private buffered = 0;
  private busy = 0;
  private backfilled: Set<string> | null = null;
  /** Transactions streamed while the backfill runs (chunks already read keep coming after a pause). */
  private held: StreamedTransaction[] | null = null;
  private backfillLsn: Lsn = 0n;
  private blocked = new Set<string>();
  /**
   * Transactions that end up to this WAL position committed before this tenure of the slot began, so the relay
   * before may have published their rows (see Entry.suspect); those after it can only have reached this tenure.
   */
  private suspectThrough: Lsn = -1n;
  private suspectBusy = false;
  /** The relay before this tenure stopped cleanly (or none streamed the slot yet): nothing was in flight. */
  private predecessorClean = false;
  private saidNoSender = false;
  private marker: Marker<unknown> | null = null;
  private readonly deferred: DeferredRows;
  /** Keys with rows in the table's hands (deferred): their streamed rows are deferred too, behind them. */
  private deferredKeys = new Set<string>();
  /** Per key, deferrals queued but not yet committed, and how many were ever queued (see releaseIfDrained). */
  private deferring = new Map<string, number>();
  private deferrals = new Map<string, number>();
  /** Keys whose first deferred row the table gave out and that has not finished yet. */
  private fromTable = new Set<string>();
  private sweepTimer: LongTimer | null = null;
  private sweepAtMs = Number.POSITIVE_INFINITY;
  private sweeping = false;
  private sweepAgain = false;
  /** Streamed transactions not visible yet, with what waits for each to be (see afterVisible). */
  private invisible = new Map<Pending, { then: (() => void)[]; asked: number }>();
  private askingVisibility = false;
  private wakeWorkers: (() => void)[] = [];
  private timers = new Set<LongTimer>();
  private epoch = 0;

  constructor(
    private readonly db: Kysely<unknown>,
    private readonly config: PartitionOptions,
  ) {
    this.deferred = new DeferredRows(db, config.names, this.inPartition());
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.hold();
  }

  async stop(drainMs: number): Promise<void> {
    this.running = false;
    const deadline = Date.now() + drainMs;
    while ((this.busy > 0 || this.suspectBusy) && Date.now() < deadline) await sleep(10);
    // Clean: every publish came back and its mark is written, so the next relay has nothing to count (see Entry.suspect).
    const drained = this.busy === 0 && !this.suspectBusy;
    for (const controller of this.inFlight) controller.abort(new Error('the relay is stopping'));
    const marked = await (this.marker?.flush() ?? Promise.resolve()).then(
      () => true,
      () => false,
    );
    if (drained && marked && this.marker?.idle === true && this.owned && this.stream !== null) {
      await recordCleanStop(this.db, this.config.slot, this.config.names, this.holder(this.epoch)).catch((error: unknown) =>
        this.report(error),
      );
    }
    await this.stream?.stop();
    this.wake();
    this.endRest?.();
    await this.loop;
  }

  /** Holds the slot while running: stream from it, or stand by and try again while another relay holds it. */
  private async hold(): Promise<void> {
    const { options, slot } = this.config;
    while (this.running) {
      this.reset();
      const epoch = this.epoch;
      const stream = new SlotStream(
        this.config.replication,
        slot,
        this.config.publication,
        { schema: this.config.names.schema, name: this.config.names.table },
        {
          transaction: (transaction) => this.intake(transaction),
          caughtUp: (lsn) => this.caughtUp(lsn),
          started: () => void this.acquired(epoch),
        },
      );
      this.stream = stream;
      let standby = false;
      try {
        await ensureSlot(this.db, slot, this.config.names);
        // A standby asks over its pool whether the slot is taken before it opens a replication connection: WAL
        // senders are few (max_wal_senders), and standbys trying them all the time can starve the relays that stream.
        const { rows } = await sql<{ active: boolean }>`SELECT active FROM pg_replication_slots WHERE slot_name = ${slot}`.execute(this.db);
        if (rows[0]?.active === true) standby = true;
        else if (this.running) await stream.run(0n);
      } catch (error) {
        standby = /is active for PID/i.test(String(error));
        // Out of WAL senders: said once (max_wal_senders must cover relays × partitions), then tried again quietly.
        const noSender = /max_wal_senders/.test(String(error));
        if (!standby && this.running && !(noSender && this.saidNoSender)) this.report(error);
        if (noSender) this.saidNoSender = true;
      } finally {
        this.stream = null;
        this.endTenure();
        this.setOwned(false);
      }
      if (this.running) await this.rest(standby ? options.standbyRetryMs : Math.max(options.standbyRetryMs, 1000));
    }
    this.reset();
  }

  /** Waits before the slot is tried again; stop() cuts it short (a standby's wait may be a minute). */
  private rest(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.endRest = null;
        resolve();
      }, ms);
      this.endRest = () => {
        clearTimeout(timer);
        this.endRest = null;
        resolve();
      };
    });
  }

  private endRest: (() => void) | null = null;

  /**
   * The WAL sender is gone (closed, failed, or silent past its deadline): a standby may hold the slot now. Nothing of
   * this tenure may be published or marked any more: buffered rows, publishes in flight (aborted) and queued marks
   * are dropped; their rows stream again to whichever relay holds the slot next.
   */
  private endTenure(): void {
    for (const controller of this.inFlight) controller.abort(new Error('the relay no longer holds the slot'));
    this.reset();
  }

  private reset(): void {
    this.epoch++;
    this.marker?.close();
    for (const timer of this.timers) timer.clear();
    this.timers.clear();
    this.keys = new Map();
    this.ready = [];
    this.transactions = [];
    this.buffered = 0;
    this.backfilled = null;
    this.held = null;
    this.suspectThrough = -1n;
    this.suspectBusy = false;
    this.predecessorClean = false;
    this.blocked = new Set();
    this.rechecking = new Map();
    this.deadUnwritten = new Map();
    this.deferredKeys = new Set();
    this.deferring = new Map();
    this.deferrals = new Map();
    this.fromTable = new Set();
    this.sweepTimer?.clear();
    this.sweepTimer = null;
    this.sweepAtMs = Number.POSITIVE_INFINITY;
    this.sweeping = false;
    this.sweepAgain = false;
    this.invisible = new Map();
    this.askingVisibility = false;
    this.askSoon = null;
    this.marker = new Marker(
      this.db,
      this.config.names,
      {
        retainSent: this.config.options.retainSentMs > 0,
        asyncCommit: this.config.options.asyncCommit,
        token: this.config.token,
        flushMs: 5,
        maxBatch: 1000,
      },
      (error) => {
        this.report(error);
        // The server is going away (shutting down, or this connection was ended): let go of the slot too. A fast
        // shutdown waits for every WAL sender to have its position confirmed, which needs these very writes; the
        // stream would hold the server up until the relay died. Streaming starts again once the server is back.
        if (serverGoingAway(error)) void this.stream?.stop();
      },
    );
    this.wake();
  }

  /** The slot is ours: load the blocked keys, then backfill what the slot will not stream, then let it stream. */
  private async acquired(epoch: number): Promise<void> {
    const stream = this.stream;
    if (stream === null) return;
    stream.pause();
    this.held = [];
    try {
      this.setOwned(true);
      await recordBackfillBoundary(this.db, this.config.slot, this.config.names);
      const clean = await takeOverSlot(this.db, this.config.slot, this.config.names, this.holder(epoch));
      if (epoch !== this.epoch) return;
      this.predecessorClean = clean;
      // Read with the slot ours: the relay before has let go of it, so it streamed nothing that commits after this.
      const { rows: position } = await sql<{ lsn: string }>`SELECT pg_current_wal_insert_lsn()::text AS lsn`.execute(this.db);
      if (epoch !== this.epoch) return;
      this.suspectThrough = parseLsn(position[0]!.lsn);
      if (this.config.options.deadLetterPolicy === 'block-key') {
        const { rows } = await sql<{ msg_key: string }>`
          SELECT DISTINCT msg_key FROM ${this.table()} WHERE state = 'dead' AND msg_key IS NOT NULL AND ${this.inPartition()}`.execute(
          this.db,
        );
        if (epoch !== this.epoch) return;
        this.blocked = new Set(rows.map((row) => row.msg_key));
      }
      // Keys the relay before handed to the table keep their rows there, in order, until those are out.
      await this.deferred.releaseLeases(`${this.config.token}:`);
      const deferredKeys = await this.deferred.keys();
      if (epoch !== this.epoch) return;
      this.deferredKeys = deferredKeys;
      await this.backfill(epoch);
      if (epoch !== this.epoch) return;
      const held = this.held;
      this.held = null;
      for (const transaction of held) this.intake(transaction);
      for (let i = 0; i < this.config.options.concurrency; i++) void this.work(epoch);
      this.sweepAt(Date.now());
    } catch (error) {
      this.report(error);
      await stream.stop();
      return;
    }
    if (epoch === this.epoch) stream.resume();
  }

  /**
   * Rows the slot will not stream: committed before it existed. Those still pending (up to the seq recorded when
   * the slot was made) are read in seq order before the stream goes on; rows the stream then brings again are
   * skipped until it passes the position the backfill read at.
   */
  private async backfill(epoch: number): Promise<void> {
    const seen = new Set<string>();
    const through = await backfillThrough(this.db, this.config.slot, this.config.names);
    let after = '0';
    for (;;) {
      const { rows } = await sql<Record<string, unknown>>`
        SELECT seq, id, topic, msg_key, payload, content_type, headers, attempts, next_attempt_at, created_at
        FROM ${this.table()}
        WHERE state = 'pending' AND seq > ${after}::int8 AND seq <= ${through}::int8 AND ${this.inPartition()}
        ORDER BY seq LIMIT 1000`.execute(this.db);
      if (epoch !== this.epoch) return;
      for (const row of rows) {
        const streamed = rowFromTable(row);
        seen.add(streamed.seq);
        // Read as pending just now; one a relay already tried (it has attempts) is counted whatever came before.
        const suspect = this.predecessorClean && streamed.attempts === 0 ? null : 'count';
        this.add({ row: streamed, transaction: null, attempts: streamed.attempts, suspect });
      }
      if (rows.length < 1000) break;
      after = String(rows[rows.length - 1]!.seq);
      while (this.buffered > this.bufferLimit() && epoch === this.epoch && this.running) await sleep(5);
    }
    // Read after the pages: every transaction they saw ended before this position, so once the stream is past it
    // nothing it brings can have been read here.
    const { rows: position } = await sql<{ lsn: string }>`SELECT pg_current_wal_insert_lsn()::text AS lsn`.execute(this.db);
    this.backfillLsn = parseLsn(position[0]!.lsn);
    this.backfilled = seen;
  }

  private intake(transaction: StreamedTransaction): void {
    if (this.held !== null) {
      this.held.push(transaction);
      return;
    }
    if (this.backfilled !== null && transaction.endLsn > this.backfillLsn) this.backfilled = null;
    const rows = this.backfilled === null ? transaction.rows : transaction.rows.filter((row) => !this.backfilled!.has(row.seq));
    if (rows.length === 0) {
      this.transactions.push({ endLsn: transaction.endLsn, commitTime: transaction.commitTime, open: 0, xid: transaction.xid, visible: false });
      this.confirmDone();
      return;
    }
    const pending: Pending = {
      endLsn: transaction.endLsn,
      commitTime: transaction.commitTime,
      open: rows.length,
      xid: transaction.xid,
      visible: false,
    };
    this.streamed += rows.length;
    this.transactions.push(pending);
    const suspect = this.suspectKind(transaction);
    for (const row of rows) this.add({ row, transaction: pending, attempts: row.attempts, suspect });
    if (this.buffered > this.bufferLimit()) this.stream?.pause();
  }

  /** With nothing streamed left to mark, the slot may be confirmed up to where the server has decoded. */
  private caughtUp(lsn: Lsn): void {
    // Not while transactions wait out the backfill (`held`): they are not among `transactions` yet.
    if (this.transactions.length === 0 && this.held === null && this.owned) this.stream?.confirm(lsn);
  }

  private add(entry: Entry): void {
    this.buffered++;
    this.place(entry);
  }

  /** Streamed rows of blocked keys, waiting while the table is asked whether the key's dead message is still there. */
  private rechecking = new Map<string, Entry[]>();
  /** Per key, dead marks queued but not yet committed: the table cannot tell about those yet. */
  private deadUnwritten = new Map<string, number>();

  private place(entry: Entry): void {
    const key = entry.row.key;
    if (key === null) {
      this.schedule(entry, entry.row.notBefore.getTime() - Date.now());
      return;
    }
    const waiting = this.rechecking.get(key);
    if (waiting !== undefined) {
      waiting.push(entry);
      return;
    }
    if (this.blocked.has(key)) {
      if (entry.transaction !== null) {
        // `dead retry` / `dead discard` may have removed the dead rows since the key was blocked: ask the table, once
        // the transaction that brought this row (perhaps that very retry) is visible to the question.
        this.rechecking.set(key, [entry]);
        const epoch = this.epoch;
        this.afterVisible(entry.transaction, () => void this.recheck(key, epoch));
        return;
      }
      this.park(entry);
      return;
    }
    if (this.deferredKeys.has(key)) {
      this.defer(entry, entry.row.notBefore, null);
      return;
    }
    const queue = this.keys.get(key);
    if (queue === undefined) {
      this.keys.set(key, [entry]);
      this.schedule(entry, entry.row.notBefore.getTime() - Date.now());
    } else queue.push(entry);
  }

  private park(entry: Entry): void {
    // Behind a dead message of its key ('block-key'): parked as dead too, so `dead retry` sends them in order.
    this.finish(entry, { kind: 'dead', seq: entry.row.seq, error: 'waiting behind a dead message of its key', attempts: entry.attempts });
  }

  private async recheck(key: string, epoch: number): Promise<void> {
    let dead = true;
    try {
      // The key's own dead marks first: a message that just died is in the table before the question is asked.
      await this.marker!.flush();
      // Any dead row of the key, whatever its seq: the row streamed may be the dead head itself, streamed again to a
      // new tenure, and a dead row that committed before it may have a higher seq (seqs are drawn at insert).
      const { rows } = await sql`
        SELECT 1 FROM ${this.table()} WHERE msg_key = ${key} AND state = 'dead' LIMIT 1`.execute(this.db);
      // A dead mark of the key that the flush could not write yet keeps it blocked.
      dead = rows.length > 0 || this.deadUnwritten.has(key);
    } catch (error) {
      this.report(error);
    }
    if (epoch !== this.epoch) return;
    const waiting = this.rechecking.get(key) ?? [];
    this.rechecking.delete(key);
    if (dead) for (const entry of waiting) this.park(entry);
    else {
      this.blocked.delete(key);
      for (const entry of waiting) this.place(entry);
    }
  }

  /**
   * Makes an entry (its key's first in memory) publishable now (once its transaction is visible), or after a short
   * delay; one due later goes to the table, with the rest of its key (see DEFER_AFTER_MS).
   */
  private schedule(entry: Entry, delayMs: number): void {
    if (delayMs > DEFER_AFTER_MS) {
      this.deferWithKey(entry, new Date(Date.now() + delayMs), null);
      return;
    }
    if (delayMs <= 0) {
      const transaction = entry.transaction;
      if (transaction !== null && !transaction.visible) {
        this.afterVisible(transaction, () => this.schedule(entry, 0));
        return;
      }
      this.ready.push(entry);
      this.wake();
      return;
    }
    const epoch = this.epoch;
    // Long-armed: a delay from the data (a month-long reminder) would overflow setTimeout and go out at once.
    const timer = setLongTimeout(() => {
      this.timers.delete(timer);
      if (epoch === this.epoch) this.schedule(entry, 0);
    }, delayMs);
    this.timers.add(timer);
  }

  /**
   * Runs `then` once the transaction is visible to other sessions: at once if it is known to be, otherwise after a
   * later question finds it so. Nothing runs for a tenure that has ended (reset() drops the waiting).
   */
  private afterVisible(transaction: Pending, then: () => void): void {
    if (transaction.visible) return then();
    const waiting = this.invisible.get(transaction);
    if (waiting !== undefined) {
      waiting.then.push(then);
      return;
    }
    this.invisible.set(transaction, { then: [then], asked: 0 });
    // A transaction not asked about yet is asked about now, not after the backoff of one that waits for a standby.
    if (this.askingVisibility) this.askSoon?.();
    else void this.askVisibility(this.epoch);
  }

  /**
   * Asks, in one statement, which of the transactions waiting in afterVisible are visible, and lets theirs go; again
   * with a short backoff while some are not. Usually the first answer is yes: the gap is the moment between a commit
   * reaching the WAL and its backend leaving the proc array, unless a synchronous standby is slow to answer.
   */
  private async askVisibility(epoch: number): Promise<void> {
    this.askingVisibility = true;
    let delayMs = 0;
    try {
      while (this.invisible.size > 0 && epoch === this.epoch) {
        // A quick question waits for the current turn only, so every transaction of one read goes in it.
        await this.pauseBeforeAsking(delayMs);
        if (epoch !== this.epoch) return;
        const asking = [...this.invisible];
        let visible: Set<number>;
        try {
          visible = await visibleTransactions(this.db, asking.map(([transaction]) => transaction.xid));
        } catch (error) {
          if (epoch !== this.epoch) return;
          this.report(error);
          delayMs = Math.max(this.config.options.brokerProbeIntervalMs, VISIBILITY_MAX_DELAY_MS);
          continue;
        }
        if (epoch !== this.epoch) return;
        for (const [transaction, waiting] of asking) {
          waiting.asked++;
          if (!visible.has(transaction.xid)) continue;
          transaction.visible = true;
          this.invisible.delete(transaction);
          for (const then of waiting.then) then();
        }
        // Paced by the transaction asked about least (one that came in meanwhile: not yet).
        const fewest = Math.min(...[...this.invisible.values()].map((waiting) => waiting.asked));
        delayMs = fewest < VISIBILITY_QUICK_QUESTIONS ? 0 : Math.min(VISIBILITY_MAX_DELAY_MS, 2 ** (fewest - VISIBILITY_QUICK_QUESTIONS));
      }
    } finally {
      if (epoch === this.epoch) this.askingVisibility = false;
    }
  }

  /** Wakes askVisibility from its pause early (a new transaction waits). */
  private askSoon: (() => void) | null = null;

  /** Waits delayMs (0: the rest of this turn), or until askSoon(). */
  private pauseBeforeAsking(delayMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = delayMs > 0 ? setTimeout(() => go(), delayMs).unref() : null;
      const immediate = delayMs > 0 ? null : setImmediate(() => go());
      const go = () => {
        if (timer !== null) clearTimeout(timer);
        if (immediate !== null) clearImmediate(immediate);
        if (this.askSoon === go) this.askSoon = null;
        resolve();
      };
      this.askSoon = go;
    });
  }

  private async work(epoch: number): Promise<void> {
    const { batchSize, maxBatchBytes, broker, publishTimeoutMs } = this.config.options;
    while (this.running && epoch === this.epoch) {
      if (this.ready.length === 0) {
        await new Promise<void>((resolve) => this.wakeWorkers.push(resolve));
        continue;
      }
      if (this.suspectBusy) {
        await new Promise<void>((resolve) => this.wakeWorkers.push(resolve));
        continue;
      }
      if (this.ready[0]!.suspect === 'check') {
        await this.checkSuspects(epoch);
        continue;
      }
      if (this.ready[0]!.suspect === 'count') {
        // Nothing else in flight meanwhile, so a crash counts against these only.
        this.suspectBusy = true;
        try {
          while (this.busy > 0) await sleep(1);
          if (!this.running) continue;
          const suspects: Entry[] = [];
          while (suspects.length < batchSize && this.ready[0]?.suspect === 'count') suspects.push(this.ready.shift()!);
          try {
            await this.publishSuspects(epoch, suspects);
          } catch (error) {
            // Counting their attempts failed (the database is away): none of them went out; they are tried again.
            if (epoch === this.epoch) this.ready.unshift(...suspects);
            this.report(error);
            await sleep(this.config.options.brokerProbeIntervalMs);
          }
        } finally {
          this.suspectBusy = false;
          this.wake();
        }
        continue;
      }
      const batch: Entry[] = [];
      let bytes = 0;
      while (batch.length < batchSize && this.ready.length > 0) {
        const next = this.ready[0]!;
        if (next.suspect !== null || (batch.length > 0 && bytes + next.row.payload.length > maxBatchBytes)) break;
        bytes += next.row.payload.length;
        batch.push(this.ready.shift()!);
      }
      this.busy++;
      try {
        for (const entry of batch) if (entry.fromTable !== true) entry.attempts++;
        const outcomes = await publishWithDeadline(broker, batch.map(toOutgoing), publishTimeoutMs, this.inFlight);
        if (epoch === this.epoch) this.settle(batch, outcomes);
      } finally {
        this.busy--;
      }
    }
  }

  /**
   * Every row of a transaction committed before this tenure is a suspect, however many the slot streams again:
   * the table says what became of each (see checkSuspects, publishSuspects), so none is sent twice after a clean
   * stop and a message that kills relays is counted wherever it lies.
   */
  private suspectKind(transaction: StreamedTransaction): Entry['suspect'] {
    if (transaction.endLsn > this.suspectThrough) return null;
    return this.predecessorClean ? 'check' : 'count';
  }

  /**
   * After a clean stop the slot streams again what its relay had not confirmed, some of it sent already: one read
   * drops those whose rows are marked, and the rest go out like any message, several batches at once. A row that a
   * relay tried before (attempts in the table) may be one that kills relays: it is counted first, as after a crash.
   */
  private async checkSuspects(epoch: number): Promise<void> {
    const checking: Entry[] = [];
    while (checking.length < CHECK_BATCH && this.ready[0]?.suspect === 'check') checking.push(this.ready.shift()!);
    this.busy++;
    try {
      const { rows } = await sql<{ seq: string; attempts: number }>`
        SELECT seq::text AS seq, attempts FROM ${this.table()}
        WHERE seq = ANY(${checking.map((entry) => entry.row.seq)}::int8[]) AND state = 'pending'
          -- A row the relay before deferred is the table's to give out.
          AND deferred_lsn IS NULL`.execute(this.db);
      if (epoch !== this.epoch) return;
      const pending = new Map(rows.map((row) => [row.seq, row.attempts]));
      const go: Entry[] = [];
      for (const entry of checking) {
        const attempts = pending.get(entry.row.seq);
        if (attempts === undefined) {
          // Marked (sent or dead) or deferred before this relay took over: nothing to publish from the stream.
          this.next(entry);
          this.finish(entry, null);
          continue;
        }
        entry.attempts = Math.max(entry.attempts, attempts);
        entry.suspect = attempts > 0 ? 'count' : null;
        go.push(entry);
      }
      this.ready.unshift(...go);
    } catch (error) {
      // Checked again on the next turn.
      if (epoch === this.epoch) this.ready.unshift(...checking);
      this.report(error);
      await sleep(this.config.options.brokerProbeIntervalMs);
    } finally {
      this.busy--;
      this.wake();
    }
  }

  /**
   * Messages a relay may have died publishing. Each one's attempt is counted in the table before it goes out, so a
   * crash leaves it counted: those counted once (this is their first attempt since a crash) go out as a batch;
   * those counted before were in flight when a relay stopped and go out alone, so an innocent one is sent and a
   * message that kills the relay on every publish reaches maxAttempts and is dead-lettered without another try.
   * Marks are flushed before anything else goes.
   */
  private async publishSuspects(epoch: number, suspects: Entry[]): Promise<void> {
    const { broker, publishTimeoutMs, maxAttempts } = this.config.options;
    this.busy++;
    try {
      const { rows } = await sql<{ seq: string; attempts: number }>`
        UPDATE ${this.table()} SET attempts = attempts + 1
        WHERE seq = ANY(${suspects.map((entry) => entry.row.seq)}::int8[]) AND state = 'pending' AND deferred_lsn IS NULL
        RETURNING seq::text AS seq, attempts`.execute(this.db);
      if (epoch !== this.epoch) return;
      const counted = new Map(rows.map((row) => [row.seq, row.attempts]));
      const fresh: Entry[] = [];
      const alone: Entry[] = [];
      for (const entry of suspects) {
        entry.suspect = null;
        const attempts = counted.get(entry.row.seq);
        if (attempts === undefined) {
          // Marked before this relay took over (sent, or dead), or deferred: nothing to publish from the stream.
          this.next(entry);
          this.finish(entry, null);
        } else if (attempts > maxAttempts) {
          entry.attempts = attempts - 1;
          this.settle([entry], [{ status: 'permanent', error: `the relay stopped while publishing it, ${attempts - 1} times (crashed or killed)` }]);
        } else {
          entry.attempts = Math.max(entry.attempts + 1, attempts);
          (attempts > 1 ? alone : fresh).push(entry);
        }
      }
      for (const batch of [fresh, ...alone.map((entry) => [entry])]) {
        if (batch.length === 0) continue;
        const outcomes = await publishWithDeadline(broker, batch.map(toOutgoing), publishTimeoutMs, this.inFlight);
        if (epoch !== this.epoch) return;
        this.settle(batch, outcomes);
        await this.marker?.flush();
      }
    } finally {
      this.busy--;
    }
  }

  private settle(batch: Entry[], outcomes: PublishOutcome[]): void {
    const { maxAttempts, backoff, random, deadLetterPolicy } = this.config.options;
    const published: Entry[] = [];
    const retrying: RetryingMessage[] = [];
    const dead: DeadMessage[] = [];
    batch.forEach((entry, index) => {
      const outcome = outcomes[index]!;
      if (outcome.status === 'ok') {
        published.push(entry);
        this.finish(entry, { kind: 'sent', seq: entry.row.seq });
        this.next(entry);
        return;
      }
      if (isUnreachable(outcome)) entry.attempts--; // The broker's outage, not the message's: not counted.
      if (outcome.status === 'retryable' && entry.attempts < maxAttempts) {
        const delayMs = isUnreachable(outcome) ? this.config.options.brokerProbeIntervalMs : backoffDelay(entry.attempts, backoff, random);
        retrying.push({ message: toOutgoing(entry), error: outcome.error, delayMs });
        // In the table's hands while it waits, with the rest of its key: a head in backoff holds no buffer nor WAL.
        this.deferWithKey(entry, new Date(Date.now() + delayMs), outcome.error);
        return;
      }
      dead.push({ message: toOutgoing(entry), error: outcome.error });
      const key = entry.row.key;
      const buryDeferred =
        entry.fromTable === true && key !== null && deadLetterPolicy === 'block-key'
          ? { key, error: `waiting behind dead message ${entry.row.id}` }
          : undefined;
      this.finish(entry, {
        kind: 'dead',
        seq: entry.row.seq,
        error: outcome.error,
        attempts: entry.attempts,
        ...(buryDeferred === undefined ? {} : { buryDeferred }),
      });
      if (key !== null && deadLetterPolicy === 'block-key') {
        this.blocked.add(key);
        this.deferredKeys.delete(key);
        const queue = this.keys.get(key) ?? [];
        this.keys.delete(key);
        for (const waiting of queue.slice(1)) {
          this.finish(waiting, { kind: 'dead', seq: waiting.row.seq, error: `waiting behind dead message ${entry.row.id}`, attempts: waiting.attempts });
        }
      } else this.next(entry);
    });
    if (published.length > 0) this.config.events.published(published.map(toOutgoing));
    if (retrying.length > 0) this.config.events.retrying(retrying);
    if (dead.length > 0) this.config.events.dead(dead);
  }

  /** The key's next message, if any, may go now. */
  private next(entry: Entry): void {
    const key = entry.row.key;
    if (key === null) return;
    const queue = this.keys.get(key);
    if (queue === undefined) return;
    queue.shift();
    const following = queue[0];
    if (following === undefined) this.keys.delete(key);
    else this.schedule(following, following.row.notBefore.getTime() - Date.now());
  }

  /**
   * Hands this entry to the table, with every later message of its key in memory (they are behind it): from now on
   * the key's streamed rows go to the table too, until the table has given out all of them (see releaseIfDrained).
   */
  private deferWithKey(entry: Entry, due: Date, error: string | null): void {
    const key = entry.row.key;
    const queue = key === null ? undefined : this.keys.get(key);
    if (key !== null) {
      this.keys.delete(key);
      this.deferredKeys.add(key);
    }
    this.defer(entry, due, error);
    for (const waiting of queue ?? []) if (waiting !== entry) this.defer(waiting, waiting.row.notBefore, null);
  }

  /** Writes the entry down as deferred (its commit position and due time); once that commits, it is done here. */
  private defer(entry: Entry, due: Date, error: string | null): void {
    const key = entry.row.key;
    if (key !== null) {
      this.deferring.set(key, (this.deferring.get(key) ?? 0) + 1);
      this.deferrals.set(key, (this.deferrals.get(key) ?? 0) + 1);
    }
    const epoch = this.epoch;
    const mark = {
      kind: 'defer' as const,
      seq: entry.row.seq,
      // Rows read by the backfill committed before anything the slot streams.
      lsn: String(entry.transaction?.endLsn ?? 0n),
      due,
      attempts: entry.attempts,
      error,
      again: entry.fromTable === true,
    };
    this.finish(entry, mark, () => {
      if (epoch !== this.epoch) return;
      if (key !== null) {
        const left = this.deferring.get(key)! - 1;
        if (left === 0) this.deferring.delete(key);
        else this.deferring.set(key, left);
        if (entry.fromTable === true) this.fromTable.delete(key);
      }
      this.sweepAt(due.getTime());
    });
  }

  /** A row the table gave out has finished: the next one may be due now; a key with none left is free again. */
  private async tableDone(key: string | null, epoch: number): Promise<void> {
    if (key !== null) {
      this.fromTable.delete(key);
      await this.releaseIfDrained(key, epoch);
    }
    if (epoch === this.epoch) this.sweepAt(Date.now());
  }

  /**
   * Frees a key whose deferred rows are all out: its next streamed row goes straight out again. Only if no deferral
   * of it was queued meanwhile (one queued before the question but committed after it would be missed).
   */
  private async releaseIfDrained(key: string, epoch: number): Promise<void> {
    if (!this.deferredKeys.has(key) || this.deferring.has(key) || this.fromTable.has(key)) return;
    const before = this.deferrals.get(key) ?? 0;
    let left = true;
    try {
      left = await this.deferred.has(key);
    } catch (error) {
      this.report(error);
    }
    if (epoch !== this.epoch || left) return;
    if ((this.deferrals.get(key) ?? 0) === before && !this.deferring.has(key) && !this.fromTable.has(key)) {
      this.deferredKeys.delete(key);
      this.deferrals.delete(key);
    }
  }

  /** Looks for deferred rows that may go now (see LogicalRelay.kick). */
  kick(): void {
    this.sweepAt(Date.now());
  }

  /** Looks for deferred rows that may go at this time (or sooner, if asked for sooner before). */
  private sweepAt(at: number): void {
    if (at >= this.sweepAtMs || !this.owned) return;
    this.sweepAtMs = at;
    this.sweepTimer?.clear();
    const epoch = this.epoch;
    this.sweepTimer = setLongTimeout(() => {
      this.sweepTimer = null;
      this.sweepAtMs = Number.POSITIVE_INFINITY;
      if (epoch === this.epoch) void this.sweep(epoch);
    }, Math.max(0, at - Date.now()));
  }

  /** Takes the deferred rows that may go now from the table, as the polling relay claims (see DeferredRows.claim). */
  private async sweep(epoch: number): Promise<void> {
    if (this.sweeping) {
      this.sweepAgain = true;
      return;
    }
    this.sweeping = true;
    const { batchSize, leaseMs, maxAttempts } = this.config.options;
    try {
      do {
        this.sweepAgain = false;
        const rows = await this.deferred.claim(batchSize, leaseMs, this.holder(epoch));
        if (epoch !== this.epoch) return;
        for (const row of rows) {
          const entry: Entry = { row, transaction: null, attempts: row.attempts, suspect: null, fromTable: true };
          this.buffered++;
          if (row.key !== null) this.fromTable.add(row.key);
          // A key blocked by a dead message ('block-key'): a deferred row of it whose parking was not written yet
          // (its mark came after the dead head's) is parked now, never published.
          if (row.key !== null && this.blocked.has(row.key)) this.park(entry);
          // Counted at each claim: one claimed more often than maxAttempts died with its relay every time.
          else if (row.attempts > maxAttempts) {
            const error = `the relay stopped while publishing it, ${row.attempts - 1} times (crashed or killed)`;
            this.settle([{ ...entry, attempts: row.attempts - 1 }], [{ status: 'permanent', error }]);
          } else this.ready.push(entry);
        }
        this.wake();
        if (rows.length === batchSize) this.sweepAgain = true;
        else {
          const due = await this.deferred.nextDue();
          if (epoch !== this.epoch) return;
          if (due !== null) this.sweepAt(due.getTime());
        }
      } while (this.sweepAgain && this.running && epoch === this.epoch);
    } catch (error) {
      this.report(error);
      if (epoch === this.epoch) this.sweepAt(Date.now() + 1000);
    } finally {
      if (epoch === this.epoch) this.sweeping = false;
    }
  }

  /** Marks the row (null: nothing to write); once that commits, its transaction may be confirmed. */
  private finish(entry: Entry, mark: Parameters<Marker<unknown>['add']>[0] | null, after?: () => void): void {
    const epoch = this.epoch;
    const key = mark?.kind === 'dead' ? entry.row.key : null;
    if (key !== null) this.deadUnwritten.set(key, (this.deadUnwritten.get(key) ?? 0) + 1);
    const done = () => {
      if (epoch !== this.epoch) return;
      if (key !== null) {
        const left = this.deadUnwritten.get(key)! - 1;
        if (left === 0) this.deadUnwritten.delete(key);
        else this.deadUnwritten.set(key, left);
      }
      this.buffered--;
      if (this.buffered <= this.bufferLimit() / 2) this.stream?.resume();
      if (entry.transaction !== null) {
        entry.transaction.open--;
        this.confirmDone();
      }
      // A row the table gave out is done (sent, or dead): its key's next deferred row may go, or the key is free.
      if (entry.fromTable === true && mark?.kind !== 'defer') void this.tableDone(entry.row.key, epoch);
      after?.();
    };
    if (mark === null) done();
    // The row's transaction, so the marker can tell "marked before" from "not visible yet" when it finds no row.
    else this.marker!.add(entry.transaction === null ? mark : { ...mark, xid: entry.transaction.xid }, done);
  }

  /** When the oldest transaction streamed but not yet confirmed committed: how far behind the relay is. */
  oldestUnconfirmed(): Date | null {
    return this.transactions[0]?.commitTime ?? null;
  }

  /** Confirms the slot past every leading transaction whose rows are all marked. */
  private confirmDone(): void {
    let confirmed: Lsn | null = null;
    while (this.transactions.length > 0 && this.transactions[0]!.open === 0) confirmed = this.transactions.shift()!.endLsn;
    if (confirmed !== null) this.stream?.confirm(confirmed);
  }

  private bufferLimit(): number {
    return this.config.options.batchSize * this.config.options.concurrency * BUFFER_FACTOR;
  }

  private wake(): void {
    const sleepers = this.wakeWorkers;
    this.wakeWorkers = [];
    for (const resolve of sleepers) resolve();
  }

  private setOwned(owned: boolean): void {
    if (this.owned === owned) return;
    this.owned = owned;
    this.config.events.owned(owned);
  }

  /** This tenure of the slot, as recorded in the slots table. */
  private holder(epoch: number): string {
    return `${this.config.token}:${epoch}`;
  }

  private table() {
    const { names } = this.config;
    return names.schema === null ? sql.id(names.table) : sql.id(names.schema, names.table);
  }

  private inPartition() {
    return this.config.partitions === 1 ? sql`true` : sql.raw(partitionFilter(this.config.partition, this.config.partitions));
  }

  private report(error: unknown): void {
    this.config.events.error(error instanceof Error ? error : new Error(String(error)));
  }
}

/** SQLSTATEs of a server that is shutting down, or not yet accepting connections, or ended this connection. */
const GOING_AWAY = new Set(['57P01', '57P02', '57P03', '08000', '08003', '08006']);

function serverGoingAway(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === 'string' && (GOING_AWAY.has(code) || code === 'ECONNREFUSED' || code === 'ECONNRESET')) return true;
  return typeof message === 'string' && /Connection terminated/i.test(message);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}


function toOutgoing(entry: Entry): OutgoingMessage {
  const { row } = entry;
  return {
    id: row.id,
    topic: row.topic,
    key: row.key,
    payload: row.payload,
    contentType: row.contentType,
    headers: row.headers,
    attempt: entry.attempts,
    createdAt: row.createdAt,
  };
}
