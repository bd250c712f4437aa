/** What the schedule did, as the oracle needs it: nothing here comes from the relay's own bookkeeping. */
export interface History {
  /** Per message: its key, its transaction, its place in it, and the move at which it was enqueued. */
  messages: Map<string, { key: string; tx: number; index: number; enqueuedAt: number }>;
  /** Per transaction that committed: the move at which its commit returned. */
  committedAt: Map<number, number>;
  rolledBack: Set<number>;
  /** Every message the broker accepted, in the order it accepted them (resends included). */
  delivered: string[];
  /** Messages the database holds as dead letters at the end. */
  dead: Set<string>;
  /** Transactions whose business row is in the database at the end. */
  written: Set<number>;
  /** Transactions that planned a business write. */
  wrote: Set<number>;
}

/**
 * The promises of docs/guarantees.md, computed from the schedule alone: every committed message is published at
 * least once (unless it, or an earlier message of its key under the default 'block-key' policy, is dead) and a
 * rolled-back one never; per key, `a` is published before `b` whenever a's transaction committed before b's
 * enqueue, and in enqueue order within a transaction (a message is never published while such an earlier one is
 * unsent, dead included); the business write commits with its messages. Returns what was broken.
 */
export function check(history: History): string[] {
  const broken: string[] = [];
  const first = new Map<string, number>();
  history.delivered.forEach((id, at) => {
    if (!first.has(id)) first.set(id, at);
  });
  const committed = [...history.messages].filter(([, m]) => history.committedAt.has(m.tx));
  for (const [id, m] of history.messages) {
    if (history.rolledBack.has(m.tx) && first.has(id)) broken.push(`${id} was published but its transaction rolled back`);
  }
  const deadKeys = new Set(committed.filter(([id]) => history.dead.has(id)).map(([, m]) => m.key));
  for (const [id, m] of committed) {
    if (!first.has(id) && !history.dead.has(id) && !deadKeys.has(m.key)) broken.push(`${id} committed but was never published`);
  }
  const mustPrecede = (a: { tx: number; index: number }, b: { tx: number; index: number; enqueuedAt: number }) =>
    a.tx === b.tx ? a.index < b.index : history.committedAt.get(a.tx)! < b.enqueuedAt;
  for (const [a, ma] of committed) {
    for (const [b, mb] of committed) {
      if (a === b || ma.key !== mb.key || !mustPrecede(ma, mb) || !first.has(b)) continue;
      const fa = first.get(a);
      if (fa === undefined || fa > first.get(b)!) {
        broken.push(
          `order on key ${ma.key}: ${b} was published ${fa === undefined ? `while ${a} was ${history.dead.has(a) ? 'dead' : 'unsent'}` : `before ${a}`}, but ${a} must come first (${ma.tx === mb.tx ? 'enqueued earlier in the same transaction' : `its transaction committed at move ${history.committedAt.get(ma.tx)}, before ${b} was enqueued at move ${mb.enqueuedAt}`})`,
        );
      }
    }
  }
  for (const tx of history.wrote) {
    if (history.committedAt.has(tx) !== history.written.has(tx))
      broken.push(`transaction t${tx}'s business write does not match its outcome`);
  }
  return broken;
}
