import os from 'node:os';
import { runChaos, type ChaosPlan, type ChaosReport } from './scenario.js';

/**
 * `npm run chaos`: the long chaos runs, one after another, printed as a Markdown report. Exits non-zero when a
 * promise is broken: a lost or reordered message, a healthy message dead or left behind, a relay that did not stop
 * cleanly, publishing not resumed within 5 s of a broker coming back, or poison slowing healthy keys below 90%; in mode
 * logical also a relay exiting by itself, or a standby publishing more than 5 s after the slot's holder was SIGKILLed.
 * CHAOS_ONLY=logical,poison (names or name prefixes, comma-separated) runs only the runs it names.
 */
const PG_URL = process.env.OUTBOX_PG_URL ?? 'postgres://root@127.0.0.1:5432/test';
const MYSQL_URL = process.env.OUTBOX_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test';
const RESUME_GOAL_MS = 5000;
const TAKEOVER_GOAL_MS = 5000;
const ONLY = process.env.CHAOS_ONLY?.split(',').map((name) => name.trim()).filter((name) => name !== '') ?? [];
const selected = (name: string) => ONLY.length === 0 || ONLY.some((only) => name.startsWith(only));
const POISON_GOAL = 0.9;
const log = (line: string) => process.stderr.write(`chaos: ${line}\n`);

const quiet = { kills: 0, brokerRestarts: 0, databaseKills: 0, log } as const;
/** 10k keyed messages at 500/s through 2 relays on PostgreSQL into RabbitMQ; each run changes what it needs. */
const steady = {
  ...quiet,
  dialect: 'postgres',
  url: PG_URL,
  broker: 'rabbitmq',
  relays: 2,
  messages: 10_000,
  rate: 500,
  keys: 200,
} as const;
const PLANS: ChaosPlan[] = [
  { ...steady, name: 'sigkill-pg', relays: 3, messages: 50_000, rate: 1000, keys: 500, kills: 24 },
  { ...steady, name: 'sigkill-mysql', dialect: 'mysql', url: MYSQL_URL, relays: 3, messages: 20_000, keys: 500, kills: 20 },
  { ...steady, name: 'restart-rabbitmq', brokerRestarts: 2 },
  { ...steady, name: 'restart-nats', broker: 'nats', brokerRestarts: 2 },
  { ...steady, name: 'db-kill-pg', databaseKills: 8 },
  { ...steady, name: 'db-kill-mysql', dialect: 'mysql', url: MYSQL_URL, databaseKills: 8 },
  // Mode logical: one relay streams the slot, the others stand by; every SIGKILL hits the one streaming.
  { ...steady, mode: 'logical', name: 'logical-sigkill', relays: 3, messages: 50_000, rate: 1000, keys: 500, kills: 24 },
  { ...steady, mode: 'logical', name: 'logical-restart-rabbitmq', brokerRestarts: 2 },
  { ...steady, mode: 'logical', name: 'logical-restart-nats', broker: 'nats', brokerRestarts: 2 },
  { ...steady, mode: 'logical', name: 'logical-restart-pg', databaseRestarts: 2, databaseKills: 4 },
];
/** The same backlog with and without 1% poison, committed as fast as possible so the relay is the bottleneck. */
const POISON: ChaosPlan = { ...steady, name: 'poison', messages: 20_000, rate: 50_000, keys: 500 };

function problems(report: ChaosReport): string[] {
  const found: string[] = [];
  if (report.lost > 0) found.push(`${report.lost} lost`);
  if (report.duplicatesAfterInbox > 0) found.push(`${report.duplicatesAfterInbox} effects applied twice behind the inbox`);
  if (report.missingEffects > 0) found.push(`${report.missingEffects} effects never applied`);
  if (report.reordered > 0) found.push(`${report.reordered} keys out of order`);
  if (report.deadHealthy > 0) found.push(`${report.deadHealthy} healthy messages dead`);
  if (report.rowsLeft > 0) found.push(`${report.rowsLeft} rows left`);
  if (report.deadPoison !== report.poison) found.push(`${report.deadPoison} of ${report.poison} poison messages dead`);
  if (report.uncleanExits > 0) found.push(`${report.uncleanExits} relays did not stop cleanly (logs: ${report.logDirectory})`);
  if (report.databaseRestartFailures.length > 0)
    found.push(`PostgreSQL did not restart while the relays ran: ${report.databaseRestartFailures.join('; ')} (logs: ${report.logDirectory})`);
  if (report.faultFailures.length > 0) found.push(`faults that failed: ${report.faultFailures.join('; ')}`);
  if (report.crashes > 0) found.push(`${report.crashes} relay exits the suite did not cause (logs: ${report.logDirectory})`);
  const lateTakeovers = report.takeoverMs.filter((ms) => ms > TAKEOVER_GOAL_MS);
  if (lateTakeovers.length > 0) found.push(`a standby published only ${lateTakeovers.map((ms) => Math.round(ms)).join(', ')} ms after the SIGKILL`);
  const slow = report.resumeMs.filter((ms) => ms > RESUME_GOAL_MS);
  if (slow.length > 0) found.push(`publishing resumed only after ${slow.map((ms) => Math.round(ms)).join(', ')} ms`);
  return found;
}

const times = (all: number[]) => all.map((ms) => `${Math.round(ms)} ms`).join(', ') || '—';
const takeover = (all: number[]) =>
  all.length === 0 ? '—' : `max ${Math.round(Math.max(...all))} ms, median ${Math.round([...all].sort((a, b) => a - b)[Math.floor(all.length / 2)]!)} ms`;
const row = (r: ChaosReport, verdict: string) =>
  `| ${r.name} | ${r.mode} | ${r.committed.toLocaleString('en')} | ${r.kills} | ${r.brokerRestarts} | ${r.databaseKills} | ${r.databaseRestarts} | ${r.lost} | ${r.reordered} | ` +
  `${r.duplicates} | ${r.duplicatesAfterInbox} | ${r.deadPoison}/${r.poison} | ${takeover(r.takeoverMs)} | ${times(r.resumeMs)} | ${times(r.databaseResumeMs)} | ` +
  `${Math.round(r.healthyRate).toLocaleString('en')} | ${r.seconds.toFixed(0)} s | ${verdict} |`;

async function main(): Promise<number> {
  const lines = [
    '## Chaos',
    '',
    `- Command: \`npm run chaos\``,
    `- Date: ${new Date().toISOString()}`,
    `- Machine: ${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}, Node ${process.version}`,
    '',
    'Relays run as child processes (SIGKILL is a crash: no drain, no lease given back; each is restarted 300 ms later); ' +
      'a producer commits keyed messages in transactions of 10 at a steady rate while the faults are spread over the ' +
      'producing time; a real consumer records every delivery, and a second consumer service applies each message to a table through the inbox (\`processOnce\` in its own transaction, acking after commit). Relay settings: batchSize 50, concurrency 2, leaseMs 3000, ' +
      'publishTimeoutMs 2000, maxAttempts 30, backoff 100 ms → 1 s.',
    '',
    'Mode logical: the relays stream one replication slot (one holds it, the others retry every 500 ms); each SIGKILL hits ' +
      'the relay streaming it, and the takeover is the time from the SIGKILL to the first message at the consumer after another ' +
      'WAL sender streams the slot. A PostgreSQL restart is `pg_ctlcluster … restart` (fast shutdown); the producer retries a ' +
      'transaction cut off by it with the same ids, unless its business row shows it committed.',
    '',
    '| Run | Mode | Committed | SIGKILLs | Broker restarts | DB kill rounds | DB restarts | Lost | Reordered keys | Duplicates at the broker | Duplicates after the inbox | Poison dead | Takeover after SIGKILL | Resumed after broker back | Resumed after PostgreSQL back | Healthy msg/s | Took | Verdict |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|---|',
  ];
  let failed = 0;
  for (const plan of PLANS.filter((p) => selected(p.name))) {
    log(`${plan.name}: starting`);
    let report: ChaosReport;
    try {
      report = await runChaos(plan);
    } catch (error) {
      // A run that could not finish is a failure of its own; the others still run and the table is still printed.
      log(`${plan.name}: ${String(error)}`);
      failed++;
      lines.push(`| ${plan.name} | ${plan.mode ?? 'polling'} | **did not finish: ${String(error).split('\n')[0]}** |`);
      continue;
    }
    const found = problems(report);
    failed += found.length > 0 ? 1 : 0;
    lines.push(row(report, found.length === 0 ? 'ok' : `**${found.join('; ')}**`));
  }
  if (!selected(POISON.name)) {
    process.stdout.write(`${lines.join('\n')}\n`);
    return failed === 0 ? 0 : 1;
  }
  log('poison: baseline without poison');
  const baseline = await runChaos({ ...POISON, name: 'poison-baseline' });
  log('poison: 1% poison');
  const poisoned = await runChaos({ ...POISON, poisonEvery: 100 });
  const ratio = poisoned.healthyRate / baseline.healthyRate;
  const poisonProblems = [...problems(baseline), ...problems(poisoned)];
  if (ratio < POISON_GOAL) poisonProblems.push(`healthy throughput ${ratio.toFixed(2)} × the run without poison`);
  failed += poisonProblems.length > 0 ? 1 : 0;
  lines.push(row(baseline, problems(baseline).length === 0 ? 'ok' : `**${problems(baseline).join('; ')}**`));
  lines.push(row(poisoned, poisonProblems.length === 0 ? 'ok' : `**${poisonProblems.join('; ')}**`));
  lines.push(
    '',
    `Healthy throughput with 1% poison messages: ${ratio.toFixed(2)} × the same backlog without them (goal ≥ ${POISON_GOAL}). ` +
      `Duplicates are the resends at-least-once allows after a crash between the broker's ack and the mark; the inbox drops them.`,
  );
  process.stdout.write(`${lines.join('\n')}\n`);
  return failed === 0 ? 0 : 1;
}

process.exit(await main());
