import os from 'node:os';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { CompiledQuery, sql, type Kysely, type Transaction } from 'kysely';
import PgBoss from 'pg-boss';
import { createOutbox, createRelay, migrate, type Broker, type Outbox, type OutgoingMessage } from '../src/index.js';
import { fillTable, KEYS, orderEvent, PAYLOAD_BYTES, roundMessages, rowsIn, TOPIC, type OrderEvent } from './messages.js';
import { AMQP_URL, openQueueAdmin, type Arrivals, type QueueAdmin } from './rabbitmq.js';
import {
  analyze,
  connect,
  count,
  loadavg,
  machineFacts,
  median,
  ms,
  percentile,
  progressFor,
  ratio,
  redact,
  serverFacts,
  settle,
  targets,
  withScratchSchema,
  type Target,
} from './support.js';

/**
 * txoutbox against pg-boss used as an outbox, the alternative a Node.js user would pick today: the job is sent in the
 * business transaction (pg-boss's `db` option), and pg-boss workers publish each job to RabbitMQ with publisher
 * confirms, completing it only after the confirm. Both sides publish through the same txoutbox RabbitMQ adapter, on
 * the same PostgreSQL, in the same run:
 *  (a) enqueue: single-row business transactions plus `boss.send` vs plus `outbox.enqueue`, rounds rotating the order;
 *  (b) relay throughput: the same backlog drained to RabbitMQ, by one txoutbox relay and by pg-boss workers in several
 *      configurations, rounds rotating the order.
 */

const ENQUEUE_WARMUP = 100;
const ENQUEUE_ROUNDS = 5;
const ENQUEUE_PER_ROUND = 400;
const DRAIN_ROUNDS = 3;
const BATCH_SIZE = 100;
const CONCURRENCY = 2;
const POOL_SIZE = 10;
/** pg-boss's smallest allowed polling interval (POLICY.MIN_POLLING_INTERVAL_MS). */
const PGBOSS_POLLING_SECONDS = 0.5;
const RUN_TIMEOUT_MS = 60_000;
const GOAL = 3;

const pgBossVersion = (createRequire(import.meta.url)('pg-boss/package.json') as { version: string }).version;

/** The drain configurations: txoutbox's relay with its defaults, and pg-boss tuned three ways. */
const SIDES = {
  txoutbox: {
    label: `txoutbox relay, batchSize ${BATCH_SIZE} × concurrency ${CONCURRENCY} (its defaults)`,
    messages: 20_000,
    batchSize: BATCH_SIZE,
  },
  txoutboxBig: {
    label: `txoutbox relay, batchSize 1,000 × concurrency ${CONCURRENCY}`,
    messages: 20_000,
    batchSize: 1000,
  },
  window: {
    label: `pg-boss, ${CONCURRENCY} workers × batchSize ${BATCH_SIZE}, polling ${PGBOSS_POLLING_SECONDS} s (the same window)`,
    messages: 4_000,
    batchSize: BATCH_SIZE,
    workers: CONCURRENCY,
    notify: false,
  },
  notify: {
    label: `pg-boss, ${CONCURRENCY} workers × batchSize ${BATCH_SIZE}, re-fetch at once after a full batch (\`notifyWorker\`)`,
    messages: 20_000,
    batchSize: BATCH_SIZE,
    workers: CONCURRENCY,
    notify: true,
  },
  big: {
    label: `pg-boss, ${CONCURRENCY} workers × batchSize 1,000, polling ${PGBOSS_POLLING_SECONDS} s`,
    messages: 20_000,
    batchSize: 1000,
    workers: CONCURRENCY,
    notify: false,
  },
  bigNotify: {
    label: `pg-boss, ${CONCURRENCY} workers × batchSize 1,000, re-fetch at once after a full batch`,
    messages: 20_000,
    batchSize: 1000,
    workers: CONCURRENCY,
    notify: true,
  },
} as const;
type Side = keyof typeof SIDES;
type TxSide = 'txoutbox' | 'txoutboxBig';
type BossSide = Exclude<Side, TxSide>;
const SIDE_NAMES = Object.keys(SIDES) as Side[];
const isTx = (side: Side): side is TxSide => side === 'txoutbox' || side === 'txoutboxBig';
const BOSS_SIDES = SIDE_NAMES.filter((side): side is BossSide => !isTx(side));
/** The txoutbox run with the same window (batch size × 2 in flight) as a pg-boss configuration. */
const pairOf = (side: BossSide): TxSide => (SIDES[side].batchSize === BATCH_SIZE ? 'txoutbox' : 'txoutboxBig');

const progress = progressFor('pgboss');
const noop = () => {};

// ---------------------------------------------------------------------------------------------------------------
// pg-boss plumbing.

/** pg-boss's `db` option on a Kysely transaction: its statements run inside the business transaction. */
function bossDb(trx: Transaction<any>): PgBoss.Db {
  return {
    async executeSql(text, values) {
      const result = await trx.executeQuery(CompiledQuery.raw(text, values));
      return { rows: result.rows as unknown[] as any[] };
    },
  };
}

async function startBoss(target: Target, schema: string, max: number): Promise<PgBoss> {
  // No supervisor or scheduler: maintenance (archiving, expiry) would land at random inside timed runs. This spares
  // pg-boss work it does in production.
  const boss = new PgBoss({ connectionString: target.url, schema, max, supervise: false, schedule: false });
  boss.on('error', (error: Error) => progress(`pg-boss error: ${error.message}`));
  await boss.start();
  return boss;
}

// ---------------------------------------------------------------------------------------------------------------
// (a) Enqueue.

type EnqueueVariant = 'baseline' | 'pgboss' | 'keyed' | 'keyless';
const ENQUEUE_VARIANTS: readonly EnqueueVariant[] = ['baseline', 'pgboss', 'keyed', 'keyless'];
const ENQUEUE_LABELS: Record<EnqueueVariant, string> = {
  baseline: 'Business transaction alone (1 order row)',
  pgboss: '+ pg-boss `send` in the transaction (`db` option)',
  keyed: '+ txoutbox `enqueue`, keyed',
  keyless: '+ txoutbox `enqueue`, keyless',
};

interface EnqueueResult {
  /** Sorted durations per variant, ms. */
  times: Record<EnqueueVariant, Float64Array>;
  /** Per round: pg-boss time / txoutbox keyed time, and keyless. */
  roundRatios: { keyed: number[]; keyless: number[] };
}

async function measureEnqueue(
  db: Kysely<any>,
  schema: string,
  boss: PgBoss,
  queue: string,
  outbox: Outbox,
): Promise<EnqueueResult> {
  const orders = sql.id(schema, 'orders');
  await sql`CREATE TABLE ${orders} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer text NOT NULL,
    total numeric NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`.execute(db);
  let n = 0;
  const once = async (variant: EnqueueVariant): Promise<number> => {
    const event = orderEvent(n++);
    const began = performance.now();
    await db.transaction().execute(async (trx) => {
      await sql`INSERT INTO ${orders} (customer, total) VALUES (${event.customer}, ${event.total})`.execute(trx);
      if (variant === 'pgboss') await boss.send(queue, event, { db: bossDb(trx) });
      else if (variant === 'keyed') await outbox.enqueue(trx, { topic: TOPIC, key: event.customer, payload: event });
      else if (variant === 'keyless') await outbox.enqueue(trx, { topic: TOPIC, payload: event });
    });
    return performance.now() - began;
  };
  for (const variant of ENQUEUE_VARIANTS) for (let i = 0; i < ENQUEUE_WARMUP; i++) await once(variant);
  const all: Record<EnqueueVariant, number[]> = { baseline: [], pgboss: [], keyed: [], keyless: [] };
  const roundRatios = { keyed: [] as number[], keyless: [] as number[] };
  for (let round = 0; round < ENQUEUE_ROUNDS; round++) {
    const order = ENQUEUE_VARIANTS.map((_, i) => ENQUEUE_VARIANTS[(i + round) % ENQUEUE_VARIANTS.length]!);
    const totals: Record<EnqueueVariant, number> = { baseline: 0, pgboss: 0, keyed: 0, keyless: 0 };
    for (const variant of order) {
      for (let i = 0; i < ENQUEUE_PER_ROUND; i++) {
        const took = await once(variant);
        all[variant].push(took);
        totals[variant] += took;
      }
    }
    roundRatios.keyed.push(totals.pgboss / totals.keyed);
    roundRatios.keyless.push(totals.pgboss / totals.keyless);
    progress(
      `enqueue round ${round + 1}/${ENQUEUE_ROUNDS}: mean ms ` +
        ENQUEUE_VARIANTS.map((v) => `${v} ${ms(totals[v] / ENQUEUE_PER_ROUND)}`).join(', '),
    );
  }
  const sorted = (values: number[]) => Float64Array.from(values).sort();
  return {
    times: { baseline: sorted(all.baseline), pgboss: sorted(all.pgboss), keyed: sorted(all.keyed), keyless: sorted(all.keyless) },
    roundRatios,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// (b) Draining a backlog to RabbitMQ.

interface DrainRun {
  side: Side;
  wanted: number;
  /** Published to RabbitMQ and marked done in the database (relay: deleted; pg-boss: completed). */
  done: number;
  ms: number;
  timedOut: boolean;
  arrivals: Arrivals;
  /** Rows (txoutbox) or jobs not in state completed (pg-boss) left afterwards. */
  left: number;
  /** Retries, failures, errors. */
  trouble: number;
  /** pg-boss jobs that ran out of retries (state failed): never delivered unless a person retries them. */
  failed: number;
}

const rate = (run: DrainRun): number => Math.min(run.done, run.wanted) / (run.ms / 1000);

/** Publishes pg-boss jobs through the txoutbox adapter; any outcome but ok fails the batch (pg-boss retries it). */
async function publishJobs(broker: Broker, jobs: readonly PgBoss.Job<OrderEvent>[]): Promise<void> {
  const createdAt = new Date();
  const messages: OutgoingMessage[] = jobs.map((job) => ({
    id: job.id,
    topic: TOPIC,
    key: job.data.customer,
    payload: Buffer.from(JSON.stringify(job.data), 'utf8'),
    contentType: 'application/json',
    headers: {},
    attempt: 1,
    createdAt,
  }));
  const outcomes = await broker.publish(messages, { signal: new AbortController().signal });
  for (const outcome of outcomes) if (outcome.status !== 'ok') throw new Error(`RabbitMQ: ${outcome.error}`);
}

async function drainTxoutbox(
  target: Target,
  db: Kysely<any>,
  schema: string,
  admin: QueueAdmin,
  side: TxSide,
  round: number,
  attempt: number,
): Promise<DrainRun> {
  const table = `${side}_${round}_${attempt}`;
  const messages = roundMessages(round, SIDES[side].messages);
  await fillTable(target, db, schema, table, messages);
  await analyze(target, db, schema, table);
  await settle(target, db, progress);
  const queue = await admin.queue(`${side}-${round}-${attempt}`);
  const relayDb = connect(target, { poolSize: POOL_SIZE });
  const broker = admin.adapter(queue);
  try {
    await Promise.all(Array.from({ length: 3 }, () => sql`SELECT 1`.execute(relayDb)));
    await broker.connect();
    const relay = createRelay({
      db: relayDb,
      dialect: 'postgres',
      schema,
      table,
      broker,
      batchSize: SIDES[side].batchSize,
      concurrency: CONCURRENCY,
    });
    let done = 0;
    let trouble = 0;
    let ended = 0;
    let finish = noop;
    const finished = new Promise<void>((resolve) => (finish = resolve));
    relay.on('published', (batch) => {
      done += batch.length;
      if (done >= messages.length && ended === 0) {
        ended = performance.now();
        finish();
      }
    });
    relay.on('retrying', (batch) => void (trouble += batch.length));
    relay.on('dead', (batch) => void (trouble += batch.length));
    relay.on('error', (error) => {
      if (trouble++ < 5) progress(`relay error: ${error.message}`);
    });
    const began = performance.now();
    relay.start();
    const inTime = await within(finished, RUN_TIMEOUT_MS);
    const elapsed = (inTime ? ended : performance.now()) - began;
    await relay.stop();
    return {
      side,
      wanted: messages.length,
      done,
      ms: elapsed,
      timedOut: !inTime,
      arrivals: await admin.arrivals(
        queue,
        messages.map((m) => m.id),
      ),
      left: await rowsIn(db, schema, table),
      trouble,
      failed: 0,
    };
  } finally {
    await broker.close();
    await relayDb.destroy();
    await admin.remove(queue).catch(noop);
  }
}

async function drainPgBoss(
  target: Target,
  db: Kysely<any>,
  bossSchema: string,
  filler: PgBoss,
  admin: QueueAdmin,
  side: BossSide,
  round: number,
  attempt: number,
): Promise<DrainRun> {
  const config = SIDES[side];
  const name = `drain_${side}_${round}_${attempt}`;
  await filler.createQueue(name);
  const ids: string[] = [];
  for (let start = 0; start < config.messages; start += 1000) {
    const jobs = Array.from({ length: Math.min(1000, config.messages - start) }, (_, i) => {
      const id = randomUUID();
      ids.push(id);
      return { id, name, data: orderEvent(round * config.messages + start + i) };
    });
    await filler.insert(jobs);
  }
  await sql`ANALYZE ${sql.id(bossSchema, 'job')}`.execute(db);
  await settle(target, db, progress);
  const queue = await admin.queue(`${side}-${round}-${attempt}`);
  // A pg-boss instance of its own, like a relay process: its own pool, one adapter shared by its workers.
  const boss = await startBoss(target, bossSchema, POOL_SIZE);
  const broker = admin.adapter(queue);
  try {
    await Promise.all(Array.from({ length: 3 }, () => boss.getDb().executeSql('SELECT 1', [])));
    await broker.connect();
    let published = 0;
    let trouble = 0;
    let allPublished = noop;
    const publishedAll = new Promise<void>((resolve) => (allPublished = resolve));
    const began = performance.now();
    for (let w = 0; w < config.workers; w++) {
      let workerId = '';
      workerId = await boss.work<OrderEvent>(
        name,
        { batchSize: config.batchSize, pollingIntervalSeconds: PGBOSS_POLLING_SECONDS },
        async (jobs) => {
          try {
            await publishJobs(broker, jobs);
          } catch (error) {
            if (trouble++ < 5) progress(`pg-boss handler: ${String(error)}`);
            throw error;
          }
          published += jobs.length;
          if (published >= config.messages) allPublished();
          // Like the relay, which claims again at once after a full batch instead of sleeping its poll interval.
          if (config.notify && jobs.length === config.batchSize && workerId !== '') boss.notifyWorker(workerId);
        },
      );
    }
    // pg-boss completes a batch after its handler returns, without awaiting it: the clock runs until every job is
    // marked completed, as the relay's runs end when every message is deleted.
    let inTime = await within(publishedAll, RUN_TIMEOUT_MS);
    const completed = async () => {
      const { rows } = await sql<{ n: string }>`
        SELECT count(*) AS n FROM ${sql.id(bossSchema, 'job')} WHERE name = ${name} AND state = 'completed'`.execute(db);
      return Number(rows[0]?.n ?? 0);
    };
    let done = 0;
    while (inTime && (done = await completed()) < config.messages) {
      if (performance.now() - began > RUN_TIMEOUT_MS) inTime = false;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const elapsed = performance.now() - began;
    if (!inTime) done = await completed();
    await boss.offWork(name);
    const { rows } = await sql<{ n: string; retried: string; failed: string }>`
      SELECT count(*) FILTER (WHERE state <> 'completed') AS n, count(*) FILTER (WHERE retry_count > 0) AS retried,
        count(*) FILTER (WHERE state = 'failed') AS failed
      FROM ${sql.id(bossSchema, 'job')} WHERE name = ${name}`.execute(db);
    return {
      side,
      wanted: config.messages,
      done,
      ms: elapsed,
      timedOut: !inTime,
      arrivals: await admin.arrivals(queue, ids),
      left: Number(rows[0]?.n ?? 0),
      trouble: trouble + Number(rows[0]?.retried ?? 0),
      failed: Number(rows[0]?.failed ?? 0),
    };
  } finally {
    await boss.stop({ graceful: true, wait: true, timeout: 5000 }).catch(noop);
    await broker.close();
    await admin.remove(queue).catch(noop);
  }
}

/** What went wrong in a run ('' if nothing): a timeout, retries or errors, ids not delivered exactly once, leftovers. */
function disturbance(run: DrainRun): string {
  const a = run.arrivals;
  const issues: string[] = [];
  if (run.timedOut) issues.push(`timed out with ${count(run.done)} of ${count(run.wanted)} done`);
  if (run.trouble > 0) issues.push(`${run.trouble} retries or errors`);
  if (run.failed > 0) issues.push(`${run.failed} jobs failed for good (retryLimit spent)`);
  if (a.duplicates + a.missing + a.unexpected > 0) {
    issues.push(`${a.duplicates} duplicates, ${a.missing} missing, ${a.unexpected} unexpected`);
  }
  if (run.left > 0) issues.push(`${run.left} left`);
  return issues.join(', ');
}

function within(done: Promise<void>, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    done.then(() => true),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------------------------------
// Entry point.

export async function benchPgBoss(): Promise<string> {
  const date = new Date();
  const started = performance.now();
  const loadBefore = os.loadavg();
  const target = targets().find((t) => t.dialect === 'postgres');
  if (target === undefined) throw new Error('no PostgreSQL target');
  progress(`connecting to ${redact(target.url)}, ${redact(AMQP_URL)}; pg-boss ${pgBossVersion}`);
  const admin = await openQueueAdmin('pgboss');
  try {
    const result = await withScratchSchema(target, { poolSize: 4, progress }, async (db, schema) => {
      const bossSchema = `${schema}_pgboss`;
      const facts = await serverFacts(target, db);
      progress(`${facts.version} in ${schema} and ${bossSchema}; ${admin.version}`);
      const filler = await startBoss(target, bossSchema, 4);
      try {
        await migrate(db, { dialect: 'postgres', schema, table: 'enqueue_outbox' });
        const outbox = createOutbox({ dialect: 'postgres', schema, table: 'enqueue_outbox' });
        await filler.createQueue('enqueue');
        const enqueue = await measureEnqueue(db, schema, filler, 'enqueue', outbox);

        const runs: DrainRun[] = [];
        const disturbed: string[] = [];
        for (let round = 0; round < DRAIN_ROUNDS; round++) {
          const order = SIDE_NAMES.map((_, i) => SIDE_NAMES[(i + round) % SIDE_NAMES.length]!);
          for (const side of order) {
            const drain = (attempt: number) =>
              isTx(side)
                ? drainTxoutbox(target, db, schema, admin, side, round, attempt)
                : drainPgBoss(target, db, bossSchema, filler, admin, side, round, attempt);
            let run = await drain(0);
            if (disturbance(run) !== '') {
              // Other suites on this machine restart RabbitMQ and close its connections: a run that met that is run
              // once more, and the report lists it.
              disturbed.push(`${side}, round ${round + 1}: ${disturbance(run)}`);
              progress(`${side} was disturbed (${disturbance(run)}); running it once more`);
              run = await drain(1);
            }
            runs.push(run);
            const a = run.arrivals;
            progress(
              `round ${round + 1}/${DRAIN_ROUNDS}: ${side} ${count(rate(run))} msg/s (${(run.ms / 1000).toFixed(2)} s; ` +
                `${a.received} received, ${a.duplicates} dup, ${a.missing} missing, ${run.left} left, ${run.trouble} retries/errors` +
                `${run.timedOut ? ', TIMED OUT' : ''})`,
            );
          }
        }
        return { facts, enqueue, runs, disturbed };
      } finally {
        await filler.stop({ graceful: false, wait: true }).catch(noop);
        await sql`DROP SCHEMA IF EXISTS ${sql.id(bossSchema)} CASCADE`.execute(db);
      }
    });
    const seconds = (performance.now() - started) / 1000;
    progress(`done in ${seconds.toFixed(1)} s`);
    return render(date, result.facts, admin.version, result.enqueue, result.runs, result.disturbed, seconds, {
      before: loadBefore,
      after: os.loadavg(),
    });
  } finally {
    await admin.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Report.

function render(
  date: Date,
  facts: { version: string; durability: string },
  rabbit: string,
  enqueue: EnqueueResult,
  runs: readonly DrainRun[],
  disturbed: readonly string[],
  seconds: number,
  load: { before: number[]; after: number[] },
): string {
  const mean = (values: Float64Array) => values.reduce((a, b) => a + b, 0) / Math.max(1, values.length);
  const t = enqueue.times;
  const enqueueRows = ENQUEUE_VARIANTS.map((variant) => {
    const m = mean(t[variant]);
    const vsBoss = variant === 'keyed' || variant === 'keyless' ? `**${ratio(mean(t.pgboss) / m)}**` : '—';
    const rounds = variant === 'keyed' || variant === 'keyless' ? enqueue.roundRatios[variant].map(ratio).join(', ') : '—';
    return `| ${ENQUEUE_LABELS[variant]} | ${ms(m)} | ${ms(percentile(t[variant], 0.5))} | ${ms(percentile(t[variant], 0.99))} | ${count(1000 / m)} | ${ratio(m / mean(t.baseline))} | ${vsBoss} | ${rounds} |`;
  });

  const of = (side: Side) => runs.filter((run) => run.side === side);
  const med = (side: Side) => median(Float64Array.from(of(side).map(rate)));
  /** txoutbox over a pg-boss configuration, against the txoutbox run with the same window; per round too. */
  const versus = (side: BossSide) => {
    const tx = of(pairOf(side));
    return {
      ratio: med(pairOf(side)) / med(side),
      rounds: of(side).map((run, i) => (tx[i] === undefined ? Number.NaN : rate(tx[i]!) / rate(run))),
    };
  };
  const drainRows = SIDE_NAMES.map((side) => {
    const list = of(side);
    const vs = isTx(side)
      ? '—'
      : `**${ratio(versus(side).ratio)}** (${pairOf(side) === 'txoutbox' ? 'batchSize 100' : 'batchSize 1,000'}; rounds ${versus(side).rounds.map(ratio).join(', ')})`;
    return `| ${SIDES[side].label} | ${count(SIDES[side].messages)} | ${count(med(side))} | ${list.map((run) => count(rate(run))).join(', ')} | ${vs} |`;
  });
  const verdict = (value: number) => (value >= GOAL ? 'met' : '**missed**');
  const fastestTx = med('txoutboxBig') > med('txoutbox') ? 'txoutboxBig' : 'txoutbox';
  const fastestBoss = BOSS_SIDES.reduce((a, b) => (med(b) > med(a) ? b : a));
  const overall = med(fastestTx) / med(fastestBoss);
  const problems = runs.flatMap((run) => (disturbance(run) === '' ? [] : [`${run.side}: ${disturbance(run)}`]));

  return [
    '## txoutbox vs pg-boss used as an outbox',
    '',
    ...machineFacts('npm run bench -- pgboss', date),
    `- PostgreSQL: ${facts.version} (${facts.durability})`,
    `- RabbitMQ: ${rabbit} at ${redact(AMQP_URL)} (same machine and disk)`,
    `- pg-boss: ${pgBossVersion} (the 10.x line: 11+ needs Node.js 22)`,
    `- Whole bench: ${seconds.toFixed(0)} s; load average (1, 5, 15 min) ${loadavg(load.before)} before, ${loadavg(load.after)} after ` +
      `(anything else running on the machine shows here: the figures are only as quiet as the machine was)`,
    '',
    `The same workload through txoutbox and through pg-boss used as an outbox, on the same PostgreSQL, in the same run. ` +
      `Messages: ~${PAYLOAD_BYTES}-byte JSON order events, keys (txoutbox) round-robin over ${count(KEYS)} customers. pg-boss ` +
      `lives in a schema of its own, created by its own migrations; each queue is created with \`createQueue\` (policy ` +
      `\`standard\`, the default) and pg-boss runs with \`supervise: false, schedule: false\` so that its maintenance does ` +
      `not land inside timed runs (this spares pg-boss work it does in production: archiving and expiring jobs).`,
    '',
    `**(a) Enqueue.** One producer on a pool commits single-row business transactions (\`INSERT\` of an order row) one ` +
      `at a time: alone; plus \`boss.send(queue, event, { db })\` with \`db\` running pg-boss's statement on the same Kysely ` +
      `transaction (pg-boss's documented way to create a job in an existing transaction); plus \`outbox.enqueue\` of the same ` +
      `event, keyed and keyless (the outbox created with default options: NOTIFY on commit). ${ENQUEUE_WARMUP} warm-up of each, then ` +
      `${ENQUEUE_ROUNDS} rounds of ${ENQUEUE_PER_ROUND} of each, the order rotating every round.`,
    '',
    '| Transaction | Mean ms | p50 ms | p99 ms | Tx/s | × alone (time) | txoutbox speed / pg-boss (pg-boss time ÷ txoutbox time) | Rounds |',
    '|---|---:|---:|---:|---:|---:|---:|---|',
    ...enqueueRows,
    '',
    `**(b) Relay throughput to RabbitMQ.** Per run a fresh backlog is written (not timed: txoutbox \`enqueue\`, 1,000 per ` +
      `transaction, into a fresh outbox table; pg-boss \`insert\`, 1,000 jobs per call, into a fresh queue), the table ` +
      `ANALYZEd and PostgreSQL CHECKPOINTed, then the clock runs from starting the relay (or registering the pg-boss ` +
      `workers) until every message is confirmed by RabbitMQ **and** marked done in PostgreSQL (txoutbox: deleted, seen by ` +
      `its \`published\` events; pg-boss: state \`completed\`, polled every 5 ms once the handlers have published ` +
      `everything, since pg-boss completes a batch after its handler returns without awaiting it). Both publish through the ` +
      `same txoutbox RabbitMQ adapter (persistent, mandatory, one confirm channel, one connection per relay or pg-boss ` +
      `instance) into a fresh durable queue; a pg-boss handler turns its batch into messages (id = job id, key = the event's ` +
      `customer, payload = the job's JSON) and throws unless every one is confirmed, so a job is completed only after its ` +
      `confirm. Each side has its own pool of ${POOL_SIZE} connections, opened beforehand. ${DRAIN_ROUNDS} rounds, the ` +
      `order of the ${SIDE_NAMES.length} configurations rotating; medians reported. Afterwards every run is checked: the queue is consumed ` +
      `and each id must have arrived exactly once; no outbox rows / no jobs not completed may be left.`,
    '',
    'pg-boss settings, and why:',
    `- \`pollingIntervalSeconds: ${PGBOSS_POLLING_SECONDS}\`, the smallest pg-boss allows (default 2). A pg-boss worker ` +
      `fetches one batch, runs the handler, then sleeps what is left of the polling interval — *even when the batch was ` +
      `full* — so a worker moves at most \`batchSize\` jobs per interval.`,
    `- "the same window": ${CONCURRENCY} workers (\`work()\` called twice; 10.x has no teamSize) × \`batchSize: ${BATCH_SIZE}\`, ` +
      `i.e. at most ${BATCH_SIZE * CONCURRENCY} messages at the broker, as the relay's batchSize × concurrency. By the ` +
      `rule above it cannot exceed ${count((BATCH_SIZE * CONCURRENCY) / PGBOSS_POLLING_SECONDS)} msg/s, so it runs a smaller ` +
      `backlog (${count(SIDES.window.messages)}) to keep the bench short.`,
    `- "re-fetch at once": the same window, plus the handler calls pg-boss's documented \`notifyWorker(id)\` after a full ` +
      `batch, which skips the sleep — what the relay does (it claims again at once after a full batch). This is the ` +
      `closest like-for-like configuration and the one a user tuning pg-boss for throughput would find.`,
    `- "batchSize 1,000": pg-boss's own lever for throughput (larger batches per poll), ${CONCURRENCY} workers, up to ` +
      `${count(1000 * CONCURRENCY)} messages at the broker at once (10 × the relay's window); polling still caps it at ` +
      `${count((1000 * CONCURRENCY) / PGBOSS_POLLING_SECONDS)} msg/s.`,
    `- "batchSize 1,000, re-fetch at once": both levers together, pg-boss's ceiling here.`,
    `- Everything else default: retryLimit 2, expiry 15 min, priority ordering on in the fetch.`,
    '',
    `txoutbox runs with its defaults (batchSize ${BATCH_SIZE} × concurrency ${CONCURRENCY}) and, so that the big-batch ` +
      `comparison gives both sides the same lever, with batchSize 1,000 × ${CONCURRENCY}. "txoutbox / this" divides by the ` +
      `txoutbox run with the same window (batch size × ${CONCURRENCY} in flight). With keys round-robin over ` +
      `${count(KEYS)} customers a claim returns only each key's head, so a batch of 1,000 takes one message of every key ` +
      `and the other worker's claim waits for those completions to promote the next heads: per-key order caps how much ` +
      `a bigger batch can help txoutbox; pg-boss has no such constraint.`,
    '',
    '| Configuration | Backlog | Median msg/s | Rounds (msg/s) | txoutbox / this |',
    '|---|---:|---:|---|---|',
    ...drainRows,
    '',
    `| Figure | Value | Goal | Verdict |`,
    '|---|---:|---|---|',
    `| Relay throughput, same window (100 × 2): txoutbox / pg-boss re-fetching at once | **${ratio(versus('notify').ratio)}** | ≥ ${GOAL} | ${verdict(versus('notify').ratio)} |`,
    `| Relay throughput, same window (1,000 × 2): txoutbox / pg-boss re-fetching at once | **${ratio(versus('bigNotify').ratio)}** | ≥ ${GOAL} | ${verdict(versus('bigNotify').ratio)} |`,
    `| Relay throughput, fastest txoutbox (${SIDES[fastestTx].label}) / fastest pg-boss (${SIDES[fastestBoss].label}) | **${ratio(overall)}** | ≥ ${GOAL} | ${verdict(overall)} |`,
    `| Relay throughput, txoutbox defaults / pg-boss with the same window, sleeping its polling interval | ${ratio(versus('window').ratio)} | — | — |`,
    `| Enqueue, txoutbox keyed speed / pg-boss send | ${ratio(mean(t.pgboss) / mean(t.keyed))} | — (reported) | — |`,
    `| Enqueue, txoutbox keyless speed / pg-boss send | ${ratio(mean(t.pgboss) / mean(t.keyless))} | — (reported) | — |`,
    '',
    `Checks: ${problems.length === 0 ? 'every run counted above delivered each id exactly once, left no rows or uncompleted jobs, with no retries or errors' : `**${problems.join('; ')}**`}.` +
      (disturbed.length === 0
        ? ''
        : ` **Runs disturbed by the shared machine** (RabbitMQ restarted or its connections closed by other test suites) ` +
          `and run once more, the second run counted: ${disturbed.join('; ')}.`),
    '',
    'Where this is not apples to apples:',
    `- **Guarantees differ.** txoutbox keeps per-key order (a key's next message is published only after its predecessor ` +
      `was confirmed) and pays for it on enqueue (the key's lock and count) and in the relay (next-head promotion); pg-boss ` +
      `gives no per-key order, so its keyless-like fetch does less work. The keyless enqueue row is the fairer enqueue comparison.`,
    `- **Completed jobs stay.** pg-boss marks a job \`completed\` and archives it later (maintenance, off here); the relay ` +
      `deletes a sent row at once. Over time pg-boss's job table carries completed rows until archiving runs.`,
    `- **Retries and dead letters.** pg-boss retries a whole batch when its handler throws, the relay per message. With ` +
      `pg-boss's defaults (\`retryLimit: 2\`, \`retryDelay: 0\`, no backoff) a broker outage of a few seconds uses up a ` +
      `job's retries and leaves it \`failed\` — not delivered until someone retries it; the relay's defaults are 10 ` +
      `attempts with exponential backoff up to 5 minutes. An outbox on pg-boss needs a larger retryLimit with backoff. ` +
      `pg-boss's job id is a UUID (here generated by the bench); txoutbox's a ULID.`,
    `- **Polling.** pg-boss's throughput with its defaults (polling every 2 s, batchSize 1) would be far lower than any ` +
      `row here; the configurations above are tuned as far as its public options and API allow.`,
  ].join('\n');
}
