import fc from 'fast-check';
import { runSchedule, type Outcome } from './explorer.js';
import { scheduleArbitrary } from './schedule.js';
import type { World } from './world.js';

export interface SearchOptions {
  runs: number;
  seed?: number;
  /** fast-check's path to one case of a seeded run (printed with a failure): replays just that case. */
  path?: string;
  onRun?: (done: number) => void;
}

export interface SearchResult<S = unknown> {
  runs: number;
  seed: number;
  ms: number;
  failure: { schedule: S; path: string; trace: string[]; broken: string[] } | null;
}

/** Searches polling schedules on the world's database (see searchWith). */
export function search(world: World, options: SearchOptions): Promise<SearchResult> {
  return searchWith(scheduleArbitrary, (schedule) => runSchedule(world, schedule), options);
}

/** Runs schedules with fast-check; a failing one is shrunk to a minimal schedule, replayed once more for its trace. */
export async function searchWith<S>(
  arbitrary: fc.Arbitrary<S>,
  runOne: (schedule: S) => Promise<Outcome>,
  options: SearchOptions,
): Promise<SearchResult<S>> {
  const seed = options.seed ?? Date.now() % 2_147_483_647;
  let runs = 0;
  const started = Date.now(); // performance.now() is the explorer's virtual time
  const property = fc.asyncProperty(arbitrary, async (schedule) => {
    runs++;
    options.onRun?.(runs);
    const { broken } = await runOne(schedule);
    if (broken.length > 0) throw new Error(broken.join('\n'));
  });
  const details = await fc.check(property, {
    numRuns: options.runs,
    seed,
    ...(options.path === undefined ? {} : { path: options.path }),
    endOnFailure: process.env.EXPLORE_NO_SHRINK === '1',
  });
  const ms = Date.now() - started;
  if (!details.failed || details.counterexample === null) return { runs, seed, ms, failure: null };
  const [schedule] = details.counterexample;
  const replay = await runOne(schedule);
  return {
    runs,
    seed,
    ms,
    failure: {
      schedule,
      path: details.counterexamplePath ?? '',
      trace: replay.trace,
      broken: replay.broken.length > 0 ? replay.broken : [String(details.errorInstance)],
    },
  };
}

/** `target`: what was explored (a dialect, or mode logical), as the replay command names it. */
export function report(target: string, result: SearchResult): string {
  const lines = [
    `explorer on ${target}: ${result.runs} schedule runs (shrinking included) in ${(result.ms / 1000).toFixed(1)} s, seed ${result.seed}`,
  ];
  if (result.failure === null) return [...lines, 'no promise broken'].join('\n');
  const { schedule, path, trace, broken } = result.failure;
  return [
    ...lines,
    'BROKEN, shrunk to:',
    `  schedule: ${JSON.stringify(schedule)}`,
    `  replay:   npm run explore -- ${target === 'logical' ? '--mode logical' : `--dialect ${target}`} --seed ${result.seed} --path ${path}`,
    'trace:',
    ...trace,
    'broken:',
    ...broken.map((line) => `  ${line}`),
  ].join('\n');
}
