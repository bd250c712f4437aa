import type { ValidMessage } from './message.js';

/** A message as the enqueue SQL needs it: with its place among the batch's messages of the same key. */
export interface PlannedMessage extends ValidMessage {
  /** 1 for the first message of its key in this batch, 2 for the next...; null without a key. */
  keyRank: number | null;
  /** How many messages of its key this batch writes; null without a key. */
  keyCount: number | null;
}

export interface BatchPlan {
  /** Messages to write, in the caller's order, without in-batch repeats of an id. */
  messages: PlannedMessage[];
  /** The distinct keys with their message counts, sorted so every producer locks keys in the same order. */
  keys: { key: string; count: number }[];
}

/**
 * Plans one batch. A repeated id inside the batch is a duplicate of its first occurrence and is not written;
 * keys are listed in byte order because concurrent producers that lock keys in one agreed order cannot deadlock.
 */
export function planBatch(messages: ValidMessage[]): BatchPlan {
  const seenIds = new Set<string>();
  const counts = new Map<string, number>();
  const planned: PlannedMessage[] = [];
  for (const message of messages) {
    if (seenIds.has(message.id)) continue;
    seenIds.add(message.id);
    let keyRank: number | null = null;
    if (message.key !== null) {
      keyRank = (counts.get(message.key) ?? 0) + 1;
      counts.set(message.key, keyRank);
    }
    planned.push({ ...message, keyRank, keyCount: null });
  }
  for (const message of planned) {
    if (message.key !== null) message.keyCount = counts.get(message.key) ?? null;
  }
  const keys = [...counts.entries()]
    .map(([key, count]) => ({ key, count }))
    .sort((a, b) => Buffer.compare(Buffer.from(a.key), Buffer.from(b.key)));
  return { messages: planned, keys };
}
