import { setLongInterval } from '../timers.js';
import type { Logger } from './logger.js';
import type { SidecarMetrics } from './metrics.js';
import { watchSlots } from './slot-watch.js';
import { openStatusScans } from './status-scans.js';
import type { LogicalTables, TableRelay } from './table-relay.js';

export interface BacklogGauges {
  /** No further rounds of reads. */
  stop(): void;
  /** Waits for the round in flight, then closes the read pools. */
  close(): Promise<void>;
}

/**
 * Keeps the backlog gauges (and the slot gauges of logical tables) fresh: one round of reads now, then one every
 * `intervalMs`, on a small pool of their own, one table at a time, never two rounds at once.
 */
export async function startBacklogGauges(
  relays: readonly TableRelay[],
  logical: LogicalTables,
  metrics: SidecarMetrics,
  log: Logger,
  intervalMs: number,
): Promise<BacklogGauges> {
  const scans = await openStatusScans(
    relays.map(({ target }) => target),
    (target, status) => metrics.record(target.labels, status),
    (target, database, error) =>
      target === null
        ? log.warn({ database: database.name, err: error }, 'database connection error (status reads)')
        : log.warn({ database: target.labels.database, table: target.labels.table, err: error }, 'reading the backlog failed'),
    watchSlots(logical, metrics, log),
  );
  await scans.scan();
  // metrics.backlogIntervalMs has no upper bound: long-armed, or a long one would read every millisecond.
  const timer = setLongInterval(() => void scans.scan(), intervalMs).unref();
  return { stop: () => timer.clear(), close: () => scans.close() };
}
