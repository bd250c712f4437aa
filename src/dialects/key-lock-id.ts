import { createHash } from 'node:crypto';

/** A signed 32-bit number for a key (or a table), stable across processes and versions: what relays lock by. */
export function lockId(text: string): number {
  return createHash('sha1').update(text).digest().readInt32BE(0);
}

/** Distinct keys in the order every relay locks them, so relays locking several keys never deadlock each other. */
export function lockOrder<T>(keys: Iterable<string>, idOf: (key: string) => T, compare: (a: T, b: T) => number): T[] {
  return [...new Set([...keys].map(idOf))].sort(compare);
}
