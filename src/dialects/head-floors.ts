import type { ClaimedMessage } from './dialect.js';

/**
 * Per key, the lowest seq among heads this relay finishes: nothing of a key waits below its head (late arrivals
 * are renumbered behind it), so the key's next message, and any other head, is sought from there on. An open
 * transaction keeps both databases from pruning what the key's earlier messages left in the indexes; starting
 * at the floor keeps the relay from reading all of it again on every completion.
 */
export function headFloors(messages: readonly ClaimedMessage[]): Map<string, string> {
  const floors = new Map<string, string>();
  for (const m of messages) {
    if (m.key === null) continue;
    const floor = floors.get(m.key);
    if (floor === undefined || BigInt(m.seq) < BigInt(floor)) floors.set(m.key, m.seq);
  }
  return floors;
}
