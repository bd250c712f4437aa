import { parseArgs } from 'node:util';
import type { DialectName } from '../../src/index.js';
import { runSchedule } from './explorer.js';
import { runLogicalSchedule } from './logical/explorer.js';
import { logicalScheduleArbitrary } from './logical/schedule.js';
import { openLogicalWorld } from './logical/world.js';
import type { Schedule } from './schedule.js';
import { report, search, searchWith, type SearchOptions } from './search.js';
import { openWorld } from './world.js';

/**
 * npm run explore -- [--dialect postgres|mysql | --mode logical] [--runs N] [--seed S [--path P]]
 * Searches schedules on the real database (OUTBOX_PG_URL / OUTBOX_MYSQL_URL; mode logical: the second local
 * cluster of test/support/sync-standby-pg.sh, started if it is down); exits 1 when a promise broke.
 */
const { values } = parseArgs({
  options: {
    dialect: { type: 'string', default: 'postgres' },
    mode: { type: 'string', default: 'polling' },
    runs: { type: 'string', default: '200' },
    seed: { type: 'string' },
    path: { type: 'string' },
    // One hand-written schedule: its JSON, and the moves by name (comma-separated) instead of its picks.
    schedule: { type: 'string' },
    steer: { type: 'string' },
  },
});
const searchOptions = (started: number): SearchOptions => ({
  runs: Number(values.runs),
  ...(values.seed === undefined ? {} : { seed: Number(values.seed) }),
  ...(values.path === undefined ? {} : { path: values.path }),
  onRun: (done) => {
    if (done % 500 === 0) console.error(`  ${done} schedules, ${((Date.now() - started) / done).toFixed(1)} ms each`);
  },
});
if (values.mode === 'logical') {
  // The relays' own timers do not keep a process alive (unref'd); between two moves nothing else may be pending.
  setInterval(() => undefined, 60_000);
  const world = await openLogicalWorld();
  try {
    const result = await searchWith(logicalScheduleArbitrary, (schedule) => runLogicalSchedule(world, schedule), searchOptions(Date.now()));
    console.log(report('logical', result));
    process.exitCode = result.failure === null ? 0 : 1;
  } finally {
    await world.close();
  }
  process.exit(process.exitCode ?? 0);
}
if (values.mode !== 'polling') throw new Error(`--mode must be polling or logical, not ${values.mode}`);
const dialect = values.dialect as DialectName;
if (dialect !== 'postgres' && dialect !== 'mysql') throw new Error(`--dialect must be postgres or mysql, not ${values.dialect}`);
const world = await openWorld(dialect);
try {
  if (values.schedule !== undefined) {
    const outcome = await runSchedule(world, JSON.parse(values.schedule) as Schedule, values.steer?.split(','));
    console.log([...outcome.trace, 'broken:', ...outcome.broken].join('\n'));
    process.exit(outcome.broken.length === 0 ? 0 : 1);
  }
  const result = await search(world, searchOptions(Date.now()));
  console.log(report(dialect, result));
  process.exitCode = result.failure === null ? 0 : 1;
} finally {
  await world.close();
}
// Abandoned relays wait on publishes that never end: nothing else is left to do.
process.exit(process.exitCode ?? 0);
