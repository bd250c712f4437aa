import { parseArgs } from 'node:util';
import type { DialectName } from '../../src/index.js';
import { runSchedule } from './explorer.js';
import type { Schedule } from './schedule.js';
import { report, search } from './search.js';
import { openWorld } from './world.js';

/**
 * npm run explore -- [--dialect postgres|mysql] [--runs N] [--seed S [--path P]]
 * Searches schedules on the real database (OUTBOX_PG_URL / OUTBOX_MYSQL_URL); exits 1 when a promise broke.
 */
const { values } = parseArgs({
  options: {
    dialect: { type: 'string', default: 'postgres' },
    runs: { type: 'string', default: '200' },
    seed: { type: 'string' },
    path: { type: 'string' },
    // One hand-written schedule: its JSON, and the moves by name (comma-separated) instead of its picks.
    schedule: { type: 'string' },
    steer: { type: 'string' },
  },
});
const dialect = values.dialect as DialectName;
if (dialect !== 'postgres' && dialect !== 'mysql') throw new Error(`--dialect must be postgres or mysql, not ${values.dialect}`);
const world = await openWorld(dialect);
try {
  if (values.schedule !== undefined) {
    const outcome = await runSchedule(world, JSON.parse(values.schedule) as Schedule, values.steer?.split(','));
    console.log([...outcome.trace, 'broken:', ...outcome.broken].join('\n'));
    process.exit(outcome.broken.length === 0 ? 0 : 1);
  }
  const started = Date.now();
  const result = await search(world, {
    runs: Number(values.runs),
    ...(values.seed === undefined ? {} : { seed: Number(values.seed) }),
    ...(values.path === undefined ? {} : { path: values.path }),
    onRun: (done) => {
      if (done % 500 === 0) console.error(`  ${done} schedules, ${((Date.now() - started) / done).toFixed(1)} ms each`);
    },
  });
  console.log(report(dialect, result));
  process.exitCode = result.failure === null ? 0 : 1;
} finally {
  await world.close();
}
// Abandoned relays wait on publishes that never end: nothing else is left to do.
process.exit(process.exitCode ?? 0);
