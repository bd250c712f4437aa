import type { ClaimedMessage, ClaimLimits, RelayStore } from './dialect.js';

/** The two steps of a claim that each dialect's relay store implements. */
export interface ClaimSteps {
  /** Leases due heads; also says whether unsequenced arrivals are waiting (one round-trip when idle). */
  claimDue(limits: ClaimLimits, token: string, leaseMs: number): Promise<{ messages: ClaimedMessage[]; arrivals: boolean }>;
  /** Sequences up to `limit` arrivals in a relay transaction of its own; returns how many heads it made. */
  sequence(limit: number): Promise<number>;
}

/** Arrivals sequenced per claim: enough to keep up with any producer rate in a few claims. */
export const ARRIVALS_PER_CLAIM = 1000;

/** A dialect's relay store whose claims sequence arrivals (see sequencedClaim); completing nothing is free. */
export function sequencedRelayStore(steps: ClaimSteps, store: Omit<RelayStore, 'claim'>): RelayStore {
  return {
    ...store,
    claim: (limits, token, leaseMs) => sequencedClaim(steps, limits, token, leaseMs),
    complete: (messages, token, retain) =>
      messages.length === 0 ? Promise.resolve({ sent: [], promoted: 0 }) : store.complete(messages, token, retain),
  };
}

/**
 * A claim: lease what is due, and when keyed messages have arrived, sequence them and lease the new heads in the
 * same claim if the batch has room. An idle poll costs one statement; a keyless stream never sequences.
 */
async function sequencedClaim(steps: ClaimSteps, limits: ClaimLimits, token: string, leaseMs: number): Promise<ClaimedMessage[]> {
  const first = await steps.claimDue(limits, token, leaseMs);
  if (!first.arrivals) return first.messages;
  const heads = await steps.sequence(ARRIVALS_PER_CLAIM);
  const room: ClaimLimits = {
    count: limits.count - first.messages.length,
    bytes: limits.bytes - first.messages.reduce((sum, m) => sum + m.payload.length, 0),
  };
  if (heads === 0 || room.count <= 0 || room.bytes <= 0) return first.messages;
  const more = await steps.claimDue(room, token, leaseMs);
  return [...first.messages, ...more.messages].sort((a, b) => (BigInt(a.seq) < BigInt(b.seq) ? -1 : 1));
}
