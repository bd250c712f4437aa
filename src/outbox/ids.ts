import { monotonicFactory } from 'ulid';

/** Produces message ids. Injectable so tests can be deterministic. */
export type IdGenerator = () => string;

/**
 * Monotonic ULIDs: lexically sortable, and strictly increasing within one process even inside the same
 * millisecond, so ids made by one producer sort in the order it made them.
 */
export function createUlidGenerator(): IdGenerator {
  const next = monotonicFactory();
  return () => next();
}
