import type { LogicalRelay } from '../relay/logical/logical-relay.js';
import type { OutboxTarget } from './context.js';
import type { Logger } from './logger.js';
import type { SidecarMetrics } from './metrics.js';
import type { SlotScans } from './status-scans.js';

/** A table in mode logical, as the sidecar runs it. */
export interface WatchedTable {
  relay: LogicalRelay;
  /** Retained WAL per slot past which the sidecar warns. */
  maxRetainedWalBytes: number;
}

/**
 * The slot side of the status reads: sets each slot's gauges, and warns once each time a slot's retained WAL goes
 * past the table's limit (and says when it is back under), rather than on every read.
 */
export function watchSlots(tables: ReadonlyMap<OutboxTarget, WatchedTable>, metrics: SidecarMetrics, log: Logger): SlotScans {
  const over = new Set<string>();
  return {
    slotsOf: (target) => tables.get(target)?.relay.names.slots ?? [],
    record(target, statuses) {
      const { relay, maxRetainedWalBytes } = tables.get(target)!;
      const partitions = relay.status().partitions;
      statuses.forEach((server, index) => {
        // Before the relay has started, it has no view of its slots yet.
        const partition = partitions[index] ?? { slot: server.slot, owned: false, streamed: 0, oldestUnconfirmedCommit: null };
        metrics.recordSlot(target.labels, partition, server);
        const retained = server.retainedBytes ?? 0;
        const id = `${target.labels.database}\u0000${server.slot}`;
        const fields = { ...target.labels, slot: server.slot, retainedBytes: retained, maxRetainedWalBytes };
        if (retained > maxRetainedWalBytes && !over.has(id)) {
          over.add(id);
          log.warn(
            fields,
            `slot ${server.slot} keeps ${retained} bytes of WAL, over relay.maxRetainedWalBytes: no relay streams from it, ` +
              "or it falls behind; the server's disk fills until one catches up (see txoutbox slot status)",
          );
        } else if (retained <= maxRetainedWalBytes && over.delete(id)) {
          log.info(fields, `slot ${server.slot} keeps less WAL than relay.maxRetainedWalBytes again`);
        }
      });
    },
  };
}
