import type { SqlExecutor } from './executor.js';

/** How often a scan starts from the beginning anyway, to find rows that fell behind the cursor. */
export const FULL_SCAN_EVERY_MS = 1000;
/** After a scan that came up short, how soon the next may start from the beginning. */
export const FULL_SCAN_AFTER_SHORT_MS = 100;
/**
 * Full scans take at most about 1/20 of the time: when one took long (an open transaction has kept a long run of
 * dead entries from being pruned), the next waits at least 20 times as long as it took.
 */
export const FULL_SCAN_COST_FACTOR = 20;

/**
 * Where a relay's last scan of an index left off, so the next one starts there. Rows the relay has finished with
 * leave dead index entries behind, and while any transaction in the database stays open (a producer's included)
 * PostgreSQL and InnoDB can neither prune nor purge them: a scan from the beginning of the index would wade through
 * every one of them, and the relay would slow down with every message it sent. A scan starts from the beginning
 * anyway once a second, and sooner (100 ms) after one that came up short (nothing more beyond the cursor: look
 * behind it, where a delayed message or a late commit may be), so nothing behind the cursor waits longer. Those
 * intervals stretch when a full scan is slow (see FULL_SCAN_COST_FACTOR): while a transaction stays open for
 * long, full scans wade through ever more entries, and scanning as often as usual would slow the relay with it.
 */
export class ScanCursor<T> {
  private position: T | null = null;
  private lastFullScan = Number.NEGATIVE_INFINITY;
  private lastFullScanMs = 0;
  private fullScanStarted: number | null = null;
  private short = true;

  constructor(private readonly isAfter: (a: T, b: T) => boolean) {}

  /** Where this scan starts: the cursor, or null for a scan from the beginning. */
  from(): T | null {
    const now = performance.now();
    const since = now - this.lastFullScan;
    const cost = this.lastFullScanMs * FULL_SCAN_COST_FACTOR;
    if (
      this.position === null ||
      since >= Math.max(FULL_SCAN_EVERY_MS, cost) ||
      (this.short && since >= Math.max(FULL_SCAN_AFTER_SHORT_MS, cost))
    ) {
      this.lastFullScan = now;
      this.fullScanStarted = now;
      return null;
    }
    this.fullScanStarted = null;
    return this.position;
  }

  /** Says how the scan went: a short one (fewer rows than it asked for) makes the next scan a full one; a full one is timed. */
  scanned(found: number, wanted: number): void {
    this.short = found < wanted;
    if (this.fullScanStarted !== null) this.lastFullScanMs = performance.now() - this.fullScanStarted;
    this.fullScanStarted = null;
  }

  advance(to: T): void {
    if (this.position === null || this.isAfter(to, this.position)) this.position = to;
  }

  /** Moves this cursor to where another one is, if that is further on (its own scans stay its own). */
  follow(other: ScanCursor<T>): void {
    if (other.position !== null) this.advance(other.position);
  }
}

/** A claim position: the row's due time (as the database's own text, to the microsecond) and its seq. */
export interface DuePosition {
  dueAt: string;
  seq: string;
}

export const dueCursor = () =>
  new ScanCursor<DuePosition>((a, b) => a.dueAt > b.dueAt || (a.dueAt === b.dueAt && BigInt(a.seq) > BigInt(b.seq)));

export const seqCursor = () => new ScanCursor<string>((a, b) => BigInt(a) > BigInt(b));

type RelayTransaction = (work: (trx: SqlExecutor) => Promise<number>) => Promise<number>;

/** A dialect's sequencing of keyed arrivals (its Heads). */
interface ArrivalSequencer {
  sequence(trx: SqlExecutor, limit: number, cursor: ScanCursor<string>): Promise<number>;
}

/**
 * A relay store's cursors over arrivals: the sequencing scan's, and the claim probe's, which follows it but keeps
 * its own full-scan timer, so a late arrival behind the cursor is seen by a full probe and then sequenced by the
 * next full scan of the sequencer (at most a second later).
 */
export class ArrivalCursors {
  readonly scan = seqCursor();
  readonly probe = seqCursor();

  async sequence(run: (cursor: ScanCursor<string>) => Promise<number>): Promise<number> {
    const made = await run(this.scan);
    this.probe.follow(this.scan);
    return made;
  }

  /** A claim's sequencing step: up to `limit` arrivals, in a relay transaction of its own. */
  sequencer(transaction: RelayTransaction, heads: ArrivalSequencer): (limit: number) => Promise<number> {
    return (limit) => this.sequence((cursor) => transaction((trx) => heads.sequence(trx, limit, cursor)));
  }
}
