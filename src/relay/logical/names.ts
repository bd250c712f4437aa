import { ConfigError } from '../../errors.js';
import type { TableNames } from '../../dialects/identifiers.js';

/** Replication slot and publication names: lower-case letters, digits and underscores, at most 63 bytes. */
const SLOT_NAME = /^[a-z0-9_]{1,63}$/;

export interface LogicalNames {
  /** The slot of each partition (one when not partitioned). */
  slots: string[];
  /** The publication of each partition, with the same index as its slot. */
  publications: string[];
  partitions: number;
}

export const defaultSlot = (names: TableNames) => `${names.schema === null ? '' : `${names.schema}_`}${names.table}_slot`.toLowerCase();
export const defaultPublication = (names: TableNames) =>
  `${names.schema === null ? '' : `${names.schema}_`}${names.table}_publication`.toLowerCase();

/** Partition i of N is named `<name>_<i>`; a single partition keeps the plain name. */
export function logicalNames(slot: string, publication: string, partitions: number): LogicalNames {
  if (!Number.isInteger(partitions) || partitions < 1 || partitions > 64) {
    throw new ConfigError(`partitions must be an integer from 1 to 64, got ${JSON.stringify(partitions)}.`);
  }
  const named = (base: string, what: string) => {
    const all = partitions === 1 ? [base] : Array.from({ length: partitions }, (_, i) => `${base}_${i}`);
    for (const name of all) {
      if (!SLOT_NAME.test(name)) {
        throw new ConfigError(
          `${what} name ${JSON.stringify(name)} is not valid: use lower-case letters, digits and underscores, at most 63 characters.`,
        );
      }
    }
    return all;
  };
  return { slots: named(slot, 'slot'), publications: named(publication, 'publication'), partitions };
}

/**
 * The SQL condition that puts a message in partition i of N: a hash of its key (of its id when keyless), so all
 * messages of a key go through one slot, in commit order. The same text filters the publication and the backfill.
 */
export function partitionFilter(partition: number, partitions: number): string {
  return `((hashtext(coalesce(msg_key, id)) & 2147483647) % ${partitions}) = ${partition}`;
}
