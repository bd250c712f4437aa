import os from 'node:os';
import { sql, type Kysely } from 'kysely';
import { createRelay, MemoryBroker, type Broker, type Relay } from '../src/index.js';
import { cpuBetween, cpuSnapshot, ownDatabasePids, relayUrl, type CpuSnapshot, type CpuTimes } from './cpu.js';
import { fillTable, KEYS, PAYLOAD_BYTES, roundMessages, rowsIn } from './messages.js';
import { lineChart, writePlot } from './plot.js';
import { AMQP_URL, compare, openQueueAdmin, type Arrivals, type QueueAdmin } from './rabbitmq.js';
import {
  analyze,
  connect,
  count,
  loadavg,
  machineFacts,
  median,
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
 * Scaling benchmark: one backlog on one PostgreSQL outbox table, drained by 1, 2 and 3 relay instances at once, into
 * the in-memory broker (database-bound) and into RabbitMQ (one queue, confirms). The relays run in this process, each
 * with its own pool and its own adapter connection, started at the same instant. Every run checks that each message
 * arrived exactly once and that no row is left.
 */

const MESSAGES = 60_000;
const RELAY_COUNTS = [1, 2, 3] as const;
const ROUNDS = 3;
const BATCH_SIZE = 100;
const CONCURRENCY = 2;
const POOL_SIZE = 10;
const RUN_TIMEOUT_MS = 120_000;
const SINKS = ['memory', 'rabbitmq'] as const;
type Sink = (typeof SINKS)[number];
const SINK_LABELS: Record<Sink, string> = { memory: 'in-memory broker', rabbitmq: 'RabbitMQ' };

const progress = progressFor('scaling');
const noop = () => {};

interface Run {
  sink: Sink;
  relays: number;
  wanted: number;
  published: number;
  /** Messages each relay published. */
  perRelay: number[];
  ms: number;
  timedOut: boolean;
  errors: number;
  retried: number;
  dead: number;
  rowsLeft: number;
  arrivals: Arrivals;
  cpu: CpuTimes | null;
}

function seenIn(ids: readonly string[]): Map<string, number> {
  const seen = new Map<string, number>();
  for (const id of ids) seen.set(id, (seen.get(id) ?? 0) + 1);
  return seen;
}

const rate = (run: Run): number => Math.min(run.published, run.wanted) / (run.ms / 1000);

/** One relay instance as a separate service would run it: its own pool, its own broker connection. */
interface Instance {
  relay: Relay;
  db: Kysely<any>;
  broker: Broker & { close?: () => Promise<void>; accepted?: readonly { id: string }[] };
  published: number;
}

async function runOnce(
  target: Target,
  db: Kysely<any>,
  schema: string,
  admin: QueueAdmin,
  sink: Sink,
  relays: number,
  round: number,
  attempt: number,
): Promise<Run> {
  const table = `${sink}_${relays}_${round}_${attempt}`;
  const messages = roundMessages(round * 10 + relays + (sink === 'memory' ? 0 : 5), MESSAGES);
  await fillTable(target, db, schema, table, messages);
  await analyze(target, db, schema, table);
  await settle(target, db, progress);
  const queue = sink === 'rabbitmq' ? await admin.queue(`${relays}-${round}-${attempt}`) : null;

  const instances: Instance[] = [];
  let published = 0;
  let retried = 0;
  let dead = 0;
  let errors = 0;
  let ended = 0;
  let cpuAfter: CpuSnapshot | null = null;
  let finish = noop;
  const done = new Promise<void>((resolve) => (finish = resolve));
  try {
    for (let i = 0; i < relays; i++) {
      const relayDb = connect({ ...target, url: relayUrl(target) }, { poolSize: POOL_SIZE });
      // Open the pool's connections and the broker's before the clock starts, as long-running relays have them.
      await Promise.all(Array.from({ length: 3 }, () => sql`SELECT 1`.execute(relayDb)));
      const broker: Instance['broker'] = queue === null ? new MemoryBroker() : admin.adapter(queue);
      if ('connect' in broker && typeof broker.connect === 'function') await broker.connect();
      const relay = createRelay({
        db: relayDb,
        dialect: target.dialect,
        schema,
        table,
        broker,
        batchSize: BATCH_SIZE,
        concurrency: CONCURRENCY,
        instanceId: `scaling-${relays}-${round}-${i}`,
      });
      const instance: Instance = { relay, db: relayDb, broker, published: 0 };
      relay.on('published', (batch) => {
        instance.published += batch.length;
        published += batch.length;
        if (published >= messages.length && ended === 0) {
          ended = performance.now();
          cpuAfter = cpuSnapshot();
          finish();
        }
      });
      relay.on('retrying', (batch) => {
        if (retried === 0) progress(`relay retrying: ${batch[0]?.error ?? '?'}`);
        retried += batch.length;
      });
      relay.on('dead', (batch) => void (dead += batch.length));
      relay.on('error', (error) => {
        if (errors++ < 5) progress(`relay error: ${error.message}`);
      });
      instances.push(instance);
    }

    const ownDb = await ownDatabasePids(target, db);
    const cpuBefore = cpuSnapshot();
    const began = performance.now();
    for (const { relay } of instances) relay.start();
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([
      done.then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), RUN_TIMEOUT_MS))),
    ]);
    clearTimeout(timer);
    const elapsed = (finished ? ended : performance.now()) - began;
    const cpu = cpuBetween({ before: cpuBefore, after: cpuAfter ?? cpuSnapshot() }, ownDb);
    await Promise.all(instances.map(({ relay }) => relay.stop()));

    const ids = messages.map((m) => m.id);
    const arrivals =
      queue === null
        ? compare(seenIn(instances.flatMap(({ broker }) => (broker.accepted ?? []).map((m) => m.id))), ids)
        : await admin.arrivals(queue, ids);
    return {
      sink,
      relays,
      wanted: messages.length,
      published,
      perRelay: instances.map((instance) => instance.published),
      ms: elapsed,
      timedOut: !finished,
      errors,
      retried,
      dead,
      rowsLeft: await rowsIn(db, schema, table),
      arrivals,
      cpu,
    };
  } finally {
    for (const { relay, db: relayDb, broker } of instances) {
      await relay.stop().catch(noop);
      await broker.close?.().catch(noop);
      await relayDb.destroy().catch(noop);
    }
    if (queue !== null) await admin.remove(queue).catch(noop);
  }
}

export async function benchScaling(): Promise<string> {
  const date = new Date();
  const started = performance.now();
  const loadBefore = os.loadavg();
  const target = targets().find((t) => t.dialect === 'postgres');
  if (target === undefined) throw new Error('no PostgreSQL target');
  progress(`connecting to ${redact(target.url)}, ${redact(AMQP_URL)}`);
  const admin = await openQueueAdmin('scaling');
  const retriedRuns: string[] = [];
  try {
    const { facts, runs } = await withScratchSchema(target, { poolSize: 4, progress }, async (db, schema) => {
      const facts = await serverFacts(target, db);
      progress(`${facts.version} in ${schema}; ${admin.version}`);
      const runs: Run[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        // Rotate the order of relay counts every round, so a drift in the machine's speed does not favour one count.
        const order = RELAY_COUNTS.map((_, i) => RELAY_COUNTS[(i + round) % RELAY_COUNTS.length]!);
        if (round % 2 === 1) order.reverse();
        for (const relays of order) {
          for (const sink of SINKS) {
            let run: Run;
            try {
              run = await runOnce(target, db, schema, admin, sink, relays, round, 0);
            } catch (error) {
              // Other suites on this machine may kill connections mid-run; one fresh try, and the report says so.
              progress(`${relays} × ${SINK_LABELS[sink]} failed (${String(error)}); trying once more`);
              retriedRuns.push(`${relays} × ${SINK_LABELS[sink]}, round ${round + 1}: ${String(error)}`);
              run = await runOnce(target, db, schema, admin, sink, relays, round, 1);
            }
            runs.push(run);
            const { arrivals: a } = run;
            progress(
              `round ${round + 1}/${ROUNDS}: ${relays} relay${relays > 1 ? 's' : ''} → ${SINK_LABELS[sink]}: ` +
                `${count(rate(run))} msg/s (${(run.ms / 1000).toFixed(2)} s; per relay ${run.perRelay.map(count).join('/')}; ` +
                `${a.received} received, ${a.duplicates} dup, ${a.missing} missing, ${run.rowsLeft} rows left` +
                `${run.timedOut ? ', TIMED OUT' : ''})`,
            );
          }
        }
      }
      return { facts, runs };
    });
    const seconds = (performance.now() - started) / 1000;
    progress(`done in ${seconds.toFixed(1)} s`);
    return render(date, facts, admin.version, runs, retriedRuns, seconds, { before: loadBefore, after: os.loadavg() });
  } finally {
    await admin.close();
  }
}

function render(
  date: Date,
  facts: { version: string; durability: string },
  rabbit: string,
  runs: readonly Run[],
  retriedRuns: readonly string[],
  seconds: number,
  load: { before: number[]; after: number[] },
): string {
  const of = (sink: Sink, relays: number) => runs.filter((run) => run.sink === sink && run.relays === relays);
  const med = (sink: Sink, relays: number) => median(Float64Array.from(of(sink, relays).map(rate)));
  const cores = os.cpus().length;
  const busy = (sink: Sink, relays: number) => {
    const list = of(sink, relays);
    if (list.some((run) => run.cpu === null)) return '—';
    const used = list.reduce((n, run) => n + run.cpu!.bench + run.cpu!.database + run.cpu!.broker + run.cpu!.other, 0);
    const wall = list.reduce((n, run) => n + run.ms, 0);
    return `${Math.round((used / (wall * cores)) * 100)}%`;
  };
  const cpuPer100 = (sink: Sink, relays: number) => {
    const list = of(sink, relays);
    if (list.some((run) => run.cpu === null)) return '—';
    const used = list.reduce((n, run) => n + run.cpu!.bench + run.cpu!.database + run.cpu!.broker, 0);
    const messages = list.reduce((n, run) => n + Math.min(run.published, run.wanted), 0);
    return ratio((used / messages) * 100);
  };

  const plot = writePlot(
    'scaling-throughput.svg',
    lineChart({
      title: 'Relay throughput vs relay instances (one PostgreSQL outbox table)',
      subtitle: `${count(MESSAGES)}-message backlog, batchSize ${BATCH_SIZE} × concurrency ${CONCURRENCY} per relay, median of ${ROUNDS} · ${date.toISOString().slice(0, 10)} · ${cores} cores, shared`,
      xLabel: 'relay instances',
      yLabel: 'messages per second',
      xTicks: [...RELAY_COUNTS],
      xMin: 0.8,
      xMax: 3.2,
      yMin: 0,
      series: SINKS.flatMap((sink, index) => {
        const color = ['#1f77b4', '#d62728'][index]!;
        const base = med(sink, 1);
        return [
          {
            name: `${SINK_LABELS[sink]} (measured)`,
            points: RELAY_COUNTS.map((n) => [n, med(sink, n)] as const),
            markers: true,
            color,
          },
          {
            name: `${SINK_LABELS[sink]}: n × 1 relay (linear)`,
            points: RELAY_COUNTS.map((n) => [n, base * n] as const),
            dashed: true,
            color,
          },
        ];
      }),
    }),
  );

  const rows = RELAY_COUNTS.map((n) => {
    const cells = SINKS.flatMap((sink) => {
      const list = of(sink, n);
      const base = of(sink, 1);
      const roundRatios = list.map((run, i) => (base[i] === undefined ? Number.NaN : rate(run) / rate(base[i]!)));
      return [
        `${count(med(sink, n))}`,
        n === 1 ? '1.00' : `**${ratio(med(sink, n) / med(sink, 1))}**`,
        n === 1 ? list.map((run) => count(rate(run))).join(', ') : roundRatios.map(ratio).join(', '),
        `${cpuPer100(sink, n)} / ${busy(sink, n)}`,
      ];
    });
    return `| ${n} | ${cells.join(' | ')} |`;
  });

  const problems = runs.flatMap((run) => {
    const issues: string[] = [];
    const a = run.arrivals;
    if (run.timedOut) issues.push(`timed out with ${count(run.published)} published`);
    if (a.duplicates + a.missing + a.unexpected > 0)
      issues.push(`${a.duplicates} duplicates, ${a.missing} missing, ${a.unexpected} unexpected`);
    if (run.rowsLeft > 0) issues.push(`${run.rowsLeft} rows left`);
    if (run.retried + run.dead + run.errors > 0) issues.push(`${run.retried} retried, ${run.dead} dead, ${run.errors} errors`);
    return issues.length === 0 ? [] : [`${run.relays} × ${SINK_LABELS[run.sink]}: ${issues.join(', ')}`];
  });
  const shares = runs.filter((run) => run.relays > 1).flatMap((run) => run.perRelay.map((n) => n / Math.max(1, run.published)));
  const sharesLine =
    shares.length === 0
      ? ''
      : ` With 2 or 3 relays every instance did part of the work: the smallest share any instance took was ` +
        `${Math.round(Math.min(...shares) * 100)}%, the largest ${Math.round(Math.max(...shares) * 100)}%.`;

  const [memory1, memory3, rabbit1, rabbit3] = [med('memory', 1), med('memory', 3), med('rabbitmq', 1), med('rabbitmq', 3)];
  return [
    '## Scaling with relay instances',
    '',
    ...machineFacts('npm run bench -- scaling', date),
    `- PostgreSQL: ${facts.version} (${facts.durability})`,
    `- RabbitMQ: ${rabbit} at ${redact(AMQP_URL)} (same machine and disk)`,
    `- Whole bench: ${seconds.toFixed(0)} s; load average (1, 5, 15 min) ${loadavg(load.before)} before, ${loadavg(load.after)} after ` +
      `(anything else running on the machine shows here: the figures are only as quiet as the machine was)`,
    '',
    `The same backlog drained by 1, 2 and 3 relay instances on one PostgreSQL outbox table. Per run: ${count(MESSAGES)} messages ` +
      `(~${PAYLOAD_BYTES}-byte JSON, keys round-robin over ${count(KEYS)} keys) enqueued with the library into a fresh table ` +
      `(not timed), ANALYZE and CHECKPOINT, then the relays are created — each with its own pool of ${POOL_SIZE} connections ` +
      `(opened beforehand) and its own broker (a \`MemoryBroker\`, or the RabbitMQ adapter with its own connection and ` +
      `confirm channel into one durable queue) and \`batchSize: ${BATCH_SIZE}, concurrency: ${CONCURRENCY}\`, other options ` +
      `default — and started at the same instant; the clock stops when their \`published\` events have counted every ` +
      `message. ${ROUNDS} rounds; the order of relay counts rotates every round; medians are reported, and each ratio is ` +
      `against 1 relay (per round: the same round's 1-relay run). Afterwards every run is checked: each id arrived exactly ` +
      `once (the queue is consumed and its message ids compared with those enqueued; for the in-memory brokers, what they ` +
      `accepted), no row is left in the table, no retries or errors.`,
    '',
    `**The relays run in one Node.js process** (one event loop), not as separate processes or hosts: the database-side ` +
      `contention between instances (SKIP LOCKED claims, key locks, completions) is real, but the node CPU they need is ` +
      `shared by one thread, and on this ${cores}-core machine PostgreSQL, RabbitMQ and the bench share the same cores, ` +
      `so the figures show how far more instances help *here*, not on a cluster.`,
    '',
    `| Relays | In-memory msg/s (median) | × 1 relay | Rounds (1 relay: msg/s; else × 1 relay) | CPU ms / 100 msgs / machine busy | RabbitMQ msg/s (median) | × 1 relay | Rounds (same) | CPU ms / 100 msgs / machine busy |`,
    '|---:|---:|---:|---|---|---:|---:|---|---|',
    ...rows,
    '',
    `![Throughput vs relay instances](${plot})`,
    '',
    `Goal: none set in the issue (information).` +
      (retriedRuns.length === 0 ? '' : ` **Runs that failed and were run again:** ${retriedRuns.join('; ')}.`) +
      ` Checks: ${problems.length === 0 ? `every run delivered all ${count(MESSAGES)} messages exactly once by id, left no rows, with no retries or errors` : `**${problems.join('; ')}**`}.${sharesLine}`,
    '',
    `- 3 relays vs 1: ${ratio(memory3 / memory1)} × with the in-memory broker, ${ratio(rabbit3 / rabbit1)} × into RabbitMQ. ` +
      `"CPU ms / 100 msgs" is the bench process, PostgreSQL (the relay pools' backends and auxiliary processes) and RabbitMQ ` +
      `together, from /proc; "machine busy" is the share of all ${cores} cores used by anything while the clock ran. When the ` +
      `cores are already near full with one relay, more instances can only add contention.`,
  ].join('\n');
}
