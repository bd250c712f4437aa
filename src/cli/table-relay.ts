import { LogicalRelay } from '../relay/logical/logical-relay.js';
import { LogicalDecodingUnavailableError } from '../relay/logical/slots.js';
import { LogicalPartitionsMismatchError } from '../relay/logical/partitions-check.js';
import type { Relay } from '../relay/relay.js';
import type { OutboxTarget } from './context.js';
import { CliError, EXIT } from './errors.js';
import type { Logger } from './logger.js';

/** The relay of one configured table, with the table's settings the sidecar itself uses. */
export interface TableRelay {
  relay: Relay | LogicalRelay;
  target: OutboxTarget;
  /** How long stop() lets batches in flight finish. */
  drainMs: number;
  /** Retained WAL per slot past which the sidecar warns (mode logical). */
  maxRetainedWalBytes: number;
}

/** A table in mode logical, by its target: what the slot gauges and the slot readiness checks look at. */
export type LogicalTables = ReadonlyMap<OutboxTarget, TableRelay & { relay: LogicalRelay }>;

export function logicalTables(relays: readonly TableRelay[]): LogicalTables {
  return new Map(relays.flatMap((r) => (r.relay instanceof LogicalRelay ? [[r.target, { ...r, relay: r.relay }] as const] : [])));
}

/**
 * Logs what a table's relay reports: each publish at debug, retries as warnings, dead letters and relay errors as
 * errors, and (mode logical) when it starts or stops streaming a slot.
 */
export function logRelayEvents(relay: Relay | LogicalRelay, target: OutboxTarget, log: Logger): void {
  const where = { database: target.database.config.name, table: target.labels.table };
  relay.on('published', (messages) => {
    if (log.isLevelEnabled('debug')) {
      for (const m of messages)
        log.debug({ ...where, topic: m.topic, messageId: m.id, key: m.key, attempt: m.attempt }, 'published');
    }
  });
  relay.on('retrying', (messages) => {
    for (const { message: m, error, delayMs } of messages) {
      log.warn(
        { ...where, topic: m.topic, messageId: m.id, key: m.key, attempt: m.attempt, delayMs, error },
        'publish failed; will retry',
      );
    }
  });
  relay.on('dead', (messages) => {
    for (const { message: m, error } of messages) {
      log.error(
        { ...where, topic: m.topic, messageId: m.id, key: m.key, attempt: m.attempt, error },
        'dead-lettered (txoutbox dead list)',
      );
    }
  });
  relay.on('error', (error) => log.error({ ...where, err: error }, 'relay error (it keeps going)'));
  if (relay instanceof LogicalRelay) {
    relay.on('owned', (slot, owned) =>
      log.info({ ...where, slot }, owned ? `streaming from slot ${slot}` : `no longer streaming from slot ${slot}`),
    );
  }
}

/**
 * Starts every table's relay, one after the other. A logical relay resolves once it runs, and rejects when the
 * server cannot decode its WAL or its partitions differ from its publications': that is a CliError naming the table.
 */
export async function startTableRelays(relays: readonly TableRelay[]): Promise<void> {
  for (const { relay, target } of relays) {
    await Promise.resolve(relay.start()).catch((error: unknown) => {
      if (!(error instanceof LogicalDecodingUnavailableError || error instanceof LogicalPartitionsMismatchError)) throw error;
      throw new CliError(`${target.label}: ${error.message}`, EXIT.failure, { cause: error });
    });
  }
}
