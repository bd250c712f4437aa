import fc from 'fast-check';
import { KEYS } from '../schedule.js';

/**
 * One producer transaction of a logical-mode schedule: an enqueue per key (in this order), then its end. `waits`:
 * its COMMIT waits for the synchronous standby that never answers (committed in the WAL, streamed, invisible) until
 * a move releases it. `delayed`: its first message is due in an hour (the relay hands it to the table; only "time
 * passes" makes it due).
 */
export interface LogicalTxPlan {
  keys: string[];
  commit: boolean;
  waits: boolean;
  delayed: boolean;
}

/** The actors and the scheduler's picks, as in the polling explorer's Schedule. */
export interface LogicalSchedule {
  relays: number;
  maxAttempts: number;
  batchSize: number;
  txs: LogicalTxPlan[];
  picks: number[];
}

export const logicalScheduleArbitrary: fc.Arbitrary<LogicalSchedule> = fc.record({
  relays: fc.integer({ min: 1, max: 3 }),
  maxAttempts: fc.integer({ min: 1, max: 3 }),
  batchSize: fc.integer({ min: 1, max: 3 }),
  txs: fc.array(
    fc.record({
      keys: fc.array(fc.constantFrom(...KEYS), { minLength: 1, maxLength: 3 }),
      commit: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
      waits: fc.oneof({ weight: 3, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
      delayed: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
    }),
    { minLength: 1, maxLength: 5, size: 'max' },
  ),
  picks: fc.array(fc.nat({ max: 10_000 }), { maxLength: 40, size: 'max' }),
});
