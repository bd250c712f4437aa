import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLogicalSchedule } from './logical/explorer.js';
import { logicalScheduleArbitrary } from './logical/schedule.js';
import { openLogicalWorld, type LogicalWorld } from './logical/world.js';
import { report, searchWith } from './search.js';

/**
 * The schedule explorer in mode logical (a second local cluster, started if it is down), on fixed seeds: the
 * relay's own timers are real, so a schedule replays close to, not exactly, the same; a fresh seed per run waits
 * until long searches (npm run explore -- --mode logical) find nothing. Serial: it holds commits open on that
 * cluster, which would make the other files' slot creation wait.
 */
const FIXED_SEEDS = [42, 7];
const RUNS_PER_SEED = 20;

describe('the schedule explorer in mode logical', () => {
  let world: LogicalWorld;
  beforeAll(async () => {
    world = await openLogicalWorld();
  }, 120_000);
  afterAll(async () => world?.close(), 60_000);

  it.each(FIXED_SEEDS)(
    'finds no broken promise in %i-seeded schedules',
    async (seed) => {
      const result = await searchWith(logicalScheduleArbitrary, (schedule) => runLogicalSchedule(world, schedule), {
        runs: RUNS_PER_SEED,
        seed,
      });
      expect(result.failure, report('logical', result)).toBeNull();
    },
    300_000,
  );
});
