import type { AdminStore } from '../dialects/admin.js';
import { adminStoreFor } from '../dialects/index.js';
import { tableNames } from '../dialects/identifiers.js';
import { slotStatus, type SlotStatus } from '../relay/logical/slots.js';
import type { DatabaseConfig } from './config.js';
import type { OutboxTarget } from './context.js';
import { openDatabase, schemaOf, type OpenDatabase } from './databases.js';

/** Connections per database for the sidecar's status reads (backlog gauges): one read runs at a time anyway. */
export const STATUS_POOL_SIZE = 1;

export interface StatusScans {
  /**
   * Reads every table's status, one table after the other, and hands each to `record`. While a round runs, another
   * call joins it instead of starting a second one, so slow reads (a locked or huge table) never pile up.
   */
  scan(): Promise<void>;
  /** Waits for the round in flight, then closes the scan pools. */
  close(): Promise<void>;
}

/** Slot reads for tables in mode logical, in the same rounds and on the same pools as the table reads. */
export interface SlotScans {
  /** The replication slots of a target (none for a polling table). */
  slotsOf(target: OutboxTarget): readonly string[];
  /** Each slot's status, in the order slotsOf gave them. */
  record(target: OutboxTarget, statuses: SlotStatus[]): void;
}

/**
 * Opens a small pool per database for status reads, apart from the relays' pool: a slow status read must not take
 * connections the relays need to claim and mark messages.
 */
export async function openStatusScans(
  targets: readonly OutboxTarget[],
  /** Runs inside the round; `admin` reads on the scan pool, for a caller that reads more than the status. */
  record: (target: OutboxTarget, status: Awaited<ReturnType<AdminStore['status']>>, admin: AdminStore) => void | Promise<void>,
  onError: (target: OutboxTarget | null, database: DatabaseConfig, error: Error) => void,
  slots?: SlotScans,
): Promise<StatusScans> {
  const pools = new Map<string, OpenDatabase>();
  const stores: { target: OutboxTarget; admin: AdminStore; pool: OpenDatabase }[] = [];
  for (const target of targets) {
    const config = target.database.config;
    let pool = pools.get(config.name);
    if (pool === undefined) {
      pool = await openDatabase({ ...config, poolSize: STATUS_POOL_SIZE }, (error) => onError(null, config, error));
      pools.set(config.name, pool);
    }
    const schema = schemaOf(config, target.table);
    stores.push({ target, pool, admin: adminStoreFor(config.dialect, pool.db, tableNames(target.table.table, schema ?? null)) });
  }

  let round: Promise<void> | null = null;
  const runRound = async () => {
    for (const { target, admin, pool } of stores) {
      try {
        await record(target, await admin.status(), admin);
        const names = slots?.slotsOf(target) ?? [];
        if (names.length > 0) {
          const statuses: SlotStatus[] = [];
          for (const slot of names) statuses.push(await slotStatus(pool.db, slot));
          slots!.record(target, statuses);
        }
      } catch (error) {
        onError(target, target.database.config, error instanceof Error ? error : new Error(String(error)));
      }
    }
  };
  return {
    scan() {
      round ??= runRound().finally(() => {
        round = null;
      });
      return round;
    },
    async close() {
      await round;
      await Promise.all([...pools.values()].map((pool) => pool.close().catch(() => undefined)));
    },
  };
}
