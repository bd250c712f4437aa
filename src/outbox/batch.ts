import type { ValidMessage } from './message.js';

/** A batch as the enqueue SQL writes it: the caller's order, each id once. */
export interface BatchPlan {
  messages: ValidMessage[];
  /** True when some message carries the caller's own id (an idempotency key), so a concurrent duplicate is possible. */
  callerIds: boolean;
}

/** Plans one batch: a repeated id inside the batch is a duplicate of its first occurrence and is not written. */
export function planBatch(messages: readonly ValidMessage[], callerIds: boolean): BatchPlan {
  const seenIds = new Set<string>();
  const planned: ValidMessage[] = [];
  for (const message of messages) {
    if (seenIds.has(message.id)) continue;
    seenIds.add(message.id);
    planned.push(message);
  }
  return { messages: planned, callerIds };
}
