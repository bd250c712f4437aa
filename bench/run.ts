import { benchBrokers, benchBrokersMysql, benchBrokersSqs } from './brokers.js';
import { benchDashboard } from './dashboard.js';
import { benchEnqueue } from './enqueue.js';
import { benchInbox } from './inbox.js';
import { benchLogical } from './logical.js';
import { benchPgBoss } from './pgboss.js';
import { benchProducers } from './producers.js';
import { benchRelay } from './relay.js';
import { benchRelayVersions } from './relay-versions.js';
import { benchScaling } from './scaling.js';

/**
 * Entry point for `npm run bench [-- name...]`. Each bench returns a Markdown section (printed to stdout, ready to
 * paste into docs) and writes its progress to stderr. Add new benches to the registry below.
 */
const BENCHES: Readonly<Record<string, () => Promise<string>>> = {
  enqueue: benchEnqueue,
  producers: benchProducers,
  relay: benchRelay,
  'relay-versions': benchRelayVersions,
  brokers: benchBrokers,
  inbox: benchInbox,
  'brokers-mysql': benchBrokersMysql,
  'brokers-sqs': benchBrokersSqs,
  scaling: benchScaling,
  pgboss: benchPgBoss,
  logical: benchLogical,
  dashboard: benchDashboard,
};

async function main(args: readonly string[]): Promise<number> {
  const known = Object.keys(BENCHES);
  const names = args.length === 0 ? known : [...new Set(args)];
  // Object.hasOwn, not `in`: a name like "toString" must not count as a bench.
  const unknown = names.filter((name) => !Object.hasOwn(BENCHES, name));
  if (unknown.length > 0) {
    process.stderr.write(`Unknown bench${unknown.length > 1 ? 'es' : ''}: ${unknown.join(', ')}. Known: ${known.join(', ')}.\n`);
    return 2;
  }
  let failed = 0;
  let current = '';
  // A bench waiting on a promise that nothing can settle any more (every socket closed under it, e.g. by another
  // suite's rabbitmqctl close_all_connections) would otherwise end the process silently with code 0.
  process.on('beforeExit', () => {
    if (current === '') return;
    process.stderr.write(`Bench "${current}" stalled: nothing left that could finish it (connections closed under it?).\n`);
    process.exit(1);
  });
  for (const name of names) {
    current = name;
    try {
      const section = await BENCHES[name]!();
      process.stdout.write(`${section.trimEnd()}\n\n`);
    } catch (error) {
      // Keep going, so one broken bench does not hide the others' figures; the exit code still reports it.
      failed++;
      process.stderr.write(
        `Bench "${name}" failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      );
    }
  }
  return failed > 0 ? 1 : 0;
}

// process.exit rather than exitCode: a bench that failed half-way may leave a pool open and keep Node alive.
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`${String(error)}\n`);
    process.exit(1);
  },
);
