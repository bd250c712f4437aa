import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { DIALECTS } from '../support/harness.js';
import { report, search } from './search.js';
import { openWorld, type World } from './world.js';

/** Fixed seeds (always the same schedules) and a fresh one per run, so every `npm test` also looks somewhere new. */
const FIXED_SEEDS = [42, 7, 20260];
const RUNS_PER_SEED = 60;

describe.each(DIALECTS)('the schedule explorer on %s', (dialect) => {
  let world: World;
  beforeAll(async () => {
    world = await openWorld(dialect, inject(dialect === 'postgres' ? 'pgUrl' : 'mysqlUrl'));
  });
  afterAll(async () => world?.close());

  it.each([...FIXED_SEEDS, Date.now() % 2_147_483_647])(
    'finds no broken promise in %i-seeded schedules',
    async (seed) => {
      const result = await search(world, { runs: RUNS_PER_SEED, seed });
      expect(result.failure, report(dialect, result)).toBeNull();
    },
    120_000,
  );
});
