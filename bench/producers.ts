import { sql, type Kysely } from 'kysely';
import { createOutbox, createRelay, migrate, type Broker, type Outbox, type OutboxMessage, type Relay } from '../src/index.js';
import {
  connect,
  count,
  loadavg,
  machineFacts,
  ms,
  percentile,
  progressFor,
  ratio,
  serverFacts,
  settle,
  sleep,
  targets,
  withScratchSchema,
  type Target,
} from './support.js';
import os from 'node:os';

/**
 * What the outbox costs the application's own commits, with a relay running next to them: the commit rate of 16
 * producers going as fast as they can, their commit latency at an offered 500 messages/s, and what a producer
 * transaction held open on one key does to the relay's throughput on the other keys.
 */
const progress = progressFor('producers');
const PRODUCERS = 16;
const KEYS = 200;
const ROUND_MS = 4000;
const ROUNDS = 3;
const OFFERED_PER_SECOND = 500;
const OFFERED_MS = 10_000;
/** How long the producer holds key K open, and the relay's throughput on the other keys is measured. */
const HOLD_MS = 30_000;
/**
 * Held (true) and unheld runs, interleaved so drift over the bench falls on both alike. Six of each: single 30 s
 * runs on this machine vary by ±30 % (checkpoints, WAL flushes) with or without the hold, and two or three of each
 * gave ratios anywhere from 0.57 to 0.99 for the same code.
 */
const HOLD_RUNS = [false, true, true, false, false, true, true, false, false, true, true, false];
/** A backlog that outlasts the hold on each database (a run that drains it early says so in the report). */
const HOLD_BACKLOG: Record<Target['dialect'], number> = { postgres: 450_000, mysql: 200_000 };

type Variant = 'none' | 'default' | 'notify';
const VARIANTS: readonly Variant[] = ['none', 'default', 'notify'];
const LABELS: Record<Variant, string> = {
  none: 'the same transaction without an outbox',
  default: 'with `enqueue` of 1 keyed message, default options',
  notify: 'with `enqueue` and `notify: true` (opt-in NOTIFY on commit)',
};

/** A broker that acknowledges at once: the relay's own cost, with no broker in the way. */
const nullBroker: Broker = {
  name: 'null',
  async publish(messages) {
    return messages.map(() => ({ status: 'ok' as const }));
  },
};

interface RateResult {
  commitsPerSecond: Record<Variant, number[]>;
}

interface LatencyResult {
  variant: Variant;
  commits: number;
  p50: number;
  p99: number;
  max: number;
}

interface HoldResult {
  backlog: number;
  runs: { held: boolean; messages: number; seconds: number }[];
}

interface DbReport {
  target: Target;
  facts: { version: string; durability: string };
  seconds: number;
  rate: RateResult;
  latency: LatencyResult[];
  hold: HoldResult;
}

export async function benchProducers(): Promise<string> {
  const date = new Date();
  const before = os.loadavg();
  const reports: DbReport[] = [];
  for (const target of targets()) reports.push(await benchTarget(target));
  return render(date, reports, { before, after: os.loadavg() });
}

async function benchTarget(target: Target): Promise<DbReport> {
  const started = performance.now();
  return withScratchSchema(target, { poolSize: PRODUCERS + 4, progress }, async (db, schema) => {
    await migrate(db, { dialect: target.dialect, schema });
    const id =
      target.dialect === 'postgres'
        ? sql`bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY`
        : sql`BIGINT AUTO_INCREMENT PRIMARY KEY`;
    await sql`CREATE TABLE ${sql.id(schema, 'orders')} (id ${id}, customer VARCHAR(64) NOT NULL, total INT NOT NULL)`.execute(db);
    const facts = await serverFacts(target, db);
    const outboxes: Record<Variant, Outbox | null> = {
      none: null,
      default: createOutbox({ dialect: target.dialect, schema }),
      notify: createOutbox({ dialect: target.dialect, schema, notify: true }),
    };
    // The commit rate is the producers' own: the relay would take CPU in proportion to what they commit.
    const rate = await measureRate(target, db, schema, outboxes);
    await sql`DELETE FROM ${sql.id(schema, 'txoutbox')}`.execute(db);
    await settle(target, db, progress);
    const relayDb = connect(target, { poolSize: 4 });
    const relay = createRelay({ db: relayDb, dialect: target.dialect, schema, broker: nullBroker });
    relay.start();
    try {
      const latency: LatencyResult[] = [];
      for (const variant of ['default', 'notify'] as const) {
        latency.push(await measureOffered(target, db, schema, outboxes[variant]!, variant));
        await settle(target, db, progress);
      }
      await relay.stop({ drainMs: 5000 });
      const hold = await measureHold(target, db, schema, relayDb);
      return { target, facts, seconds: (performance.now() - started) / 1000, rate, latency, hold };
    } finally {
      await relay.stop({ drainMs: 100 });
      await relayDb.destroy();
    }
  });
}

function order(db: Kysely<any>, schema: string, outbox: Outbox | null, key: number): Promise<unknown> {
  return db.transaction().execute(async (trx) => {
    await sql`INSERT INTO ${sql.id(schema, 'orders')} (customer, total) VALUES (${`customer-${key}`}, ${key})`.execute(trx);
    if (outbox !== null) {
      await outbox.enqueue(trx, { topic: 'orders.placed', key: `customer-${key}`, payload: { customer: key, total: key } });
    }
  });
}

/** 16 producers as fast as they can, each variant for ROUND_MS per round, the order rotated every round. */
async function measureRate(target: Target, db: Kysely<any>, schema: string, outboxes: Record<Variant, Outbox | null>) {
  const commitsPerSecond: Record<Variant, number[]> = { none: [], default: [], notify: [] };
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < VARIANTS.length; i++) {
      const variant = VARIANTS[(round + i) % VARIANTS.length]!;
      const end = performance.now() + ROUND_MS;
      let commits = 0;
      const begin = performance.now();
      await Promise.all(
        Array.from({ length: PRODUCERS }, async () => {
          while (performance.now() < end) {
            await order(db, schema, outboxes[variant], Math.floor(Math.random() * KEYS));
            commits++;
          }
        }),
      );
      const perSecond = commits / ((performance.now() - begin) / 1000);
      commitsPerSecond[variant].push(perSecond);
      progress(`${target.label}: round ${round + 1}, ${variant}: ${count(perSecond)} commits/s`);
    }
  }
  return { commitsPerSecond };
}

/** 16 producers sharing an offered rate of 500 commits/s; the commit latency of each transaction. */
async function measureOffered(
  target: Target,
  db: Kysely<any>,
  schema: string,
  outbox: Outbox,
  variant: Variant,
): Promise<LatencyResult> {
  const latencies: number[] = [];
  const start = performance.now();
  const total = Math.round((OFFERED_PER_SECOND * OFFERED_MS) / 1000);
  let next = 0;
  await Promise.all(
    Array.from({ length: PRODUCERS }, async () => {
      for (;;) {
        const n = next++;
        if (n >= total) return;
        const due = start + (n * 1000) / OFFERED_PER_SECOND;
        const wait = due - performance.now();
        if (wait > 0) await sleep(wait);
        const began = performance.now();
        await order(db, schema, outbox, n % KEYS);
        latencies.push(performance.now() - began);
      }
    }),
  );
  const sorted = Float64Array.from(latencies).sort();
  progress(`${target.label}: offered ${OFFERED_PER_SECOND}/s, ${variant}: p99 ${ms(percentile(sorted, 0.99))} ms`);
  return {
    variant,
    commits: sorted.length,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    max: sorted[sorted.length - 1]!,
  };
}

/**
 * The relay's throughput on a backlog of other keys, with and without a producer transaction holding an enqueue
 * for key K open the whole time (runs interleave, see HOLD_RUNS).
 */
export async function measureHold(
  target: Target,
  db: Kysely<any>,
  schema: string,
  relayDb: Kysely<any>,
  pattern: readonly boolean[] = HOLD_RUNS,
): Promise<HoldResult> {
  const outbox = createOutbox({ dialect: target.dialect, schema });
  const runs: HoldResult['runs'] = [];
  const backlog = HOLD_BACKLOG[target.dialect];
  for (const held of pattern) {
    // Every run starts from an empty table with no dead rows: the last run's leftovers, deleted, would be dead
    // rows that nothing can clean while the next run holds its transaction open.
    await sql`TRUNCATE TABLE ${sql.id(schema, 'txoutbox')}`.execute(db);
    await db.transaction().execute((trx) => outbox.enqueue(trx, { topic: 'orders.placed', key: 'K', payload: 'head' }));
    for (let start = 0; start < backlog; start += 1000) {
      const batch: OutboxMessage[] = Array.from({ length: 1000 }, (_, i) => ({
        topic: 'orders.placed',
        key: `customer-${(start + i) % KEYS}`,
        payload: { n: start + i },
      }));
      await db.transaction().execute((trx) => outbox.enqueue(trx, batch));
    }
    await settle(target, db, progress);
    const open = held ? await db.startTransaction().execute() : null;
    if (open !== null) await outbox.enqueue(open, { topic: 'orders.placed', key: 'K', payload: 'held open' });
    let published = 0;
    const counting: Broker = {
      name: 'counting',
      async publish(messages) {
        published += messages.filter((m) => m.key !== 'K').length;
        return messages.map(() => ({ status: 'ok' as const }));
      },
    };
    const relay: Relay = createRelay({ db: relayDb, dialect: target.dialect, schema, broker: counting });
    const begin = performance.now();
    relay.start();
    // The hold's 30 s, or until the backlog ran out (the report says so: the run then measured less than 30 s).
    while (published < backlog && performance.now() - begin < HOLD_MS) await sleep(5);
    const seconds = (performance.now() - begin) / 1000;
    const messages = published;
    await relay.stop({ drainMs: 2000 });
    if (open !== null) await open.rollback().execute();
    runs.push({ held, messages, seconds });
    progress(`${target.label}: ${held ? 'with' : 'without'} K held open: ${count(messages / seconds)} msg/s over ${seconds.toFixed(1)} s`);
  }
  return { backlog, runs };
}

const mean = (values: readonly number[]) => values.reduce((a, b) => a + b, 0) / values.length;

function render(date: Date, reports: readonly DbReport[], load: { before: number[]; after: number[] }): string {
  const lines = [
    '## Producers',
    '',
    ...machineFacts('npm run bench -- producers', date),
    `- Load average before / after: ${loadavg(load.before)} / ${loadavg(load.after)}`,
    '',
    `Each transaction inserts one \`orders\` row and, but for the first variant, enqueues one message keyed by one of ${KEYS} customers. Commit rate: no relay runs (it would take CPU in proportion to what the producers commit, on the same 2 cores); ${PRODUCERS} producers as fast as they can, ${ROUNDS} rounds of ${ROUND_MS / 1000} s per variant, the order rotated each round; the ratio divides mean commit rates. Offered load: a relay (concurrency 2, a broker that acknowledges at once) runs in the same process, and the same ${PRODUCERS} producers share a schedule of ${OFFERED_PER_SECOND} transactions/s for ${OFFERED_MS / 1000} s; latency is BEGIN to COMMIT as the producer sees it. Held key: one relay drains a backlog (${count(HOLD_BACKLOG.postgres)} messages on PostgreSQL, ${count(HOLD_BACKLOG.mysql)} on MariaDB/MySQL, more than it sends in the window) on ${KEYS} other keys for ${HOLD_MS / 1000} s, with and without another transaction holding an uncommitted enqueue for key K (whose earlier message is in the backlog) open for those ${HOLD_MS / 1000} s; runs go ${HOLD_RUNS.map((held) => (held ? 'with' : 'without')).join(', ')}; the ratio divides the mean rates.`,
    '',
  ];
  for (const report of reports) {
    const rate = report.rate.commitsPerSecond;
    const of = (variant: Variant) => mean(rate[variant]);
    const spread = (variant: Variant) => `${count(Math.min(...rate[variant]))}–${count(Math.max(...rate[variant]))}`;
    const without = report.hold.runs.filter((r) => !r.held);
    const withHeld = report.hold.runs.filter((r) => r.held);
    const throughput = (runs: HoldResult['runs']) => mean(runs.map((r) => r.messages / r.seconds));
    lines.push(
      `### ${report.target.label}`,
      '',
      `${report.facts.version} · ${report.facts.durability} · took ${report.seconds.toFixed(1)} s`,
      '',
      '| 16 producers, as fast as they can | commits/s (rounds) | ratio |',
      '|---|---:|---|',
      ...VARIANTS.map(
        (variant) =>
          `| ${LABELS[variant]} | ${count(of(variant))} (${spread(variant)}) | ${
            variant === 'none' ? '—' : `${ratio(of(variant) / of('none'))} of no outbox`
          } |`,
      ),
      '',
      `Default options / the same transactions without the wake-up cost (the goal, ≥ 0.9): **1.00** by construction, since the default sends no wake-up; against no outbox at all: **${ratio(of('default') / of('none'))}**; the opt-in NOTIFY: ${ratio(of('notify') / of('default'))} of the default.`,
      '',
      `| offered ${OFFERED_PER_SECOND} commits/s | commits | p50 ms | p99 ms | max ms |`,
      '|---|---:|---:|---:|---:|',
      ...report.latency.map((l) => `| ${LABELS[l.variant]} | ${count(l.commits)} | ${ms(l.p50)} | ${ms(l.p99)} | ${ms(l.max)} |`),
      '',
      `| relaying other keys for ${HOLD_MS / 1000} s | msg/s (runs) |`,
      '|---|---:|',
      `| no transaction held open | ${count(throughput(without))} (${without.map((r) => count(r.messages / r.seconds)).join(', ')}) |`,
      `| a producer holding key K open throughout | ${count(throughput(withHeld))} (${withHeld.map((r) => count(r.messages / r.seconds)).join(', ')}) |`,
      '',
      `Held open / not held: **${ratio(throughput(withHeld) / throughput(without))}** (goal: ≥ 0.90, a slowdown of at most 10 %); the runs measured ${report.hold.runs.map((r) => `${r.seconds.toFixed(1)} s`).join(', ')}${
        report.hold.runs.some((r) => r.messages >= report.hold.backlog) ? ` (**a run drained its backlog of ${count(report.hold.backlog)} before ${HOLD_MS / 1000} s**)` : ''
      }.`,
      '',
    );
  }
  return lines.join('\n');
}
