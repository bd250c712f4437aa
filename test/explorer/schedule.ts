import fc from 'fast-check';

/** The keys producers enqueue for: two are enough to interleave keys, one key is where order breaks. */
export const KEYS = ['A', 'B'] as const;

/** One producer transaction: begin, an enqueue per key (in this order), maybe a business write, then its end. */
export interface TxPlan {
  keys: string[];
  write: boolean;
  commit: boolean;
}

/**
 * A schedule: the actors and the scheduler's picks. Each pick chooses among the moves enabled at that point (see
 * Explorer's moves), so a shrunk pick list is a shorter or more ordinary interleaving. When the picks run out the
 * faults stop: open transactions finish as planned, time passes for crashed relays' leases, the broker acks, and
 * the relays must drain everything within a bounded number of rounds.
 */
export interface Schedule {
  relays: number;
  maxAttempts: number;
  batchSize: number;
  txs: TxPlan[];
  picks: number[];
}

export const scheduleArbitrary: fc.Arbitrary<Schedule> = fc.record({
  relays: fc.integer({ min: 1, max: 3 }),
  maxAttempts: fc.integer({ min: 1, max: 3 }),
  batchSize: fc.integer({ min: 1, max: 3 }),
  txs: fc.array(
    fc.record({
      keys: fc.array(fc.constantFrom(...KEYS), { minLength: 1, maxLength: 3 }),
      write: fc.boolean(),
      commit: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
    }),
    { minLength: 1, maxLength: 5, size: 'max' },
  ),
  picks: fc.array(fc.nat({ max: 10_000 }), { maxLength: 80, size: 'max' }),
});
