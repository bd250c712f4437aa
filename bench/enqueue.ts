import { sql, type Kysely, type RawBuilder } from 'kysely';
import { createUlidGenerator } from '../src/outbox/ids.js';
import { benchOrmEnqueue } from './orm-enqueue.js';
import { createOutbox, migrate, type Outbox, type OutboxMessage } from '../src/index.js';
import {
  machineFacts,
  median,
  ms,
  progressFor,
  ratio,
  redact,
  serverFacts,
  sum,
  targets,
  withScratchSchema,
  type Target,
} from './support.js';

/**
 * Enqueue benchmark. Measures, on PostgreSQL and MariaDB/MySQL:
 *  A. what adding one outbox message costs a single-row business transaction (the issue's goal: <= 1.15x), next to
 *     what one plain INSERT of an outbox-shaped row costs it (the floor for any outbox that writes a row), and
 *  B. batch enqueue throughput next to a raw multi-row INSERT of rows of the same size.
 * Everything runs sequentially on one pool so the figures are latencies, not contention.
 */

// Sized so both databases together finish in about 70 s on a 2-core machine (keep the whole bench under ~90 s).
const SINGLE_WARMUP = 200;
const SINGLE_ROUNDS = 10;
const SINGLE_PER_ROUND = 500;
const BATCH_SIZE = 1000;
const BATCH_KEYS = 100;
const BATCH_WARMUP = 2;
const BATCH_COUNT = 20;
const PAYLOAD_BYTES = 200;
const GOAL_RATIO = 1.15;
const TOPIC = 'orders.created';

type Kind = 'baseline' | 'bareInsert' | 'keyed' | 'keyless';
const KINDS: readonly Kind[] = ['baseline', 'bareInsert', 'keyed', 'keyless'];

/** The time ratios reported per database: numerator over denominator, each over the whole run and per round. */
const RATIOS = [
  { name: 'bareInsert/baseline', of: 'bareInsert', over: 'baseline' },
  { name: 'keyed/baseline', of: 'keyed', over: 'baseline' },
  { name: 'keyless/baseline', of: 'keyless', over: 'baseline' },
  // Enqueue's cost over writing the row at all.
  { name: 'keyed/bareInsert', of: 'keyed', over: 'bareInsert' },
  { name: 'keyless/bareInsert', of: 'keyless', over: 'bareInsert' },
] as const satisfies readonly { name: string; of: Kind; over: Kind }[];
type RatioName = (typeof RATIOS)[number]['name'];

/** A migrated schema of its own, plus the few statements that differ between the two databases. */
interface BenchDb {
  db: Kysely<any>;
  schema: string;
  outbox: Outbox;
  version: string;
  /** The durability setting that dominates commit latency, so readers can compare runs. */
  durability: string;
  rawInsert(rows: readonly RawRow[]): RawBuilder<unknown>;
}

interface RawRow {
  id: string;
  key: string;
  payload: Buffer;
}

interface SingleResult {
  latencies: Record<Kind, Float64Array>;
  totals: Record<Kind, number>;
  /** Each ratio in RATIOS for each round, to show how much it moves with noise. */
  roundRatios: Record<RatioName, number[]>;
}

interface BatchSide {
  batchMs: Float64Array;
  totalMs: number;
  rows: number;
}

interface BatchResult {
  enqueue: BatchSide;
  raw: BatchSide;
  payloadBytes: number;
}

interface DbReport {
  target: Target;
  version: string;
  durability: string;
  single: SingleResult;
  batch: BatchResult;
  seconds: number;
}

const progress = progressFor('enqueue');

export async function benchEnqueue(): Promise<string> {
  const date = new Date();
  const reports: DbReport[] = [];
  for (const target of targets()) reports.push(await benchTarget(target));
  // A row per ORM (#14): the same one-row transaction through each ORM, with and without enqueue.
  return `${render(date, reports)}\n\n${await benchOrmEnqueue()}`;
}

async function benchTarget(target: Target): Promise<DbReport> {
  const started = performance.now();
  progress(`${target.label}: connecting to ${redact(target.url)}`);
  const report = await withBenchDb(target, async (bench) => {
    progress(`${target.label}: ${bench.version} in ${bench.schema}`);
    const single = await measureSingle(target, bench);
    const batch = await measureBatch(target, bench);
    return { target, version: bench.version, durability: bench.durability, single, batch, seconds: 0 };
  });
  report.seconds = (performance.now() - started) / 1000;
  progress(`${target.label}: done in ${report.seconds.toFixed(1)} s`);
  return report;
}

/** Runs `fn` on a fresh, migrated schema (PostgreSQL) or database (MySQL), dropped whatever happens. */
function withBenchDb<T>(target: Target, fn: (bench: BenchDb) => Promise<T>): Promise<T> {
  return withScratchSchema(target, { poolSize: 4, progress }, async (db, schema) => fn(await prepare(target, db, schema)));
}

async function prepare(target: Target, db: Kysely<any>, schema: string): Promise<BenchDb> {
  const table = (name: string) => sql.id(schema, name);
  await migrate(db, { dialect: target.dialect, schema });
  const { version, durability } = await serverFacts(target, db);
  const outbox = createOutbox({ dialect: target.dialect, schema });

  if (target.dialect === 'postgres') {
    await sql`CREATE TABLE ${table('orders')} (id text PRIMARY KEY, customer text, total numeric(10,2))`.execute(db);
    // Shaped like the outbox row (ULID-sized id, topic, key, bytea payload, timestamp) but with no other indexes.
    await sql`CREATE TABLE ${table('raw_rows')} (
      id text PRIMARY KEY, topic text NOT NULL, msg_key text, payload bytea NOT NULL,
      created_at timestamptz NOT NULL DEFAULT statement_timestamp())`.execute(db);
    // The cheapest way to write an outbox message's row: the same columns, an identity key and a unique id, nothing more.
    await sql`CREATE TABLE ${table('bare_outbox')} (
      seq bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, id text NOT NULL, topic text NOT NULL, msg_key text,
      payload bytea NOT NULL, content_type text NOT NULL, headers text NOT NULL)`.execute(db);
    await sql`CREATE UNIQUE INDEX bare_outbox_id_unique ON ${table('bare_outbox')} (id)`.execute(db);
    return {
      db,
      schema,
      outbox,
      version,
      durability,
      // unnest keeps the statement to four parameters however many rows; the outbox uses the same technique.
      rawInsert: (batch) => sql`
        INSERT INTO ${table('raw_rows')} (id, topic, msg_key, payload)
        SELECT * FROM unnest(${batch.map((r) => r.id)}::text[], ${batch.map(() => TOPIC)}::text[],
                             ${batch.map((r) => r.key)}::text[], ${batch.map((r) => r.payload)}::bytea[])`,
    };
  }

  await sql`CREATE TABLE ${table('orders')} (id VARCHAR(64) PRIMARY KEY, customer VARCHAR(64), total DECIMAL(10,2)) ENGINE=InnoDB`.execute(
    db,
  );
  await sql`CREATE TABLE ${table('raw_rows')} (
    id VARCHAR(64) NOT NULL PRIMARY KEY, topic VARCHAR(255) NOT NULL, msg_key VARCHAR(255) NULL, payload LONGBLOB NOT NULL,
    created_at DATETIME(6) NOT NULL) ENGINE=InnoDB`.execute(db);
  await sql`CREATE TABLE ${table('bare_outbox')} (
    seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, id VARCHAR(255) NOT NULL, topic VARCHAR(255) NOT NULL,
    msg_key VARCHAR(255) NULL, payload LONGBLOB NOT NULL, content_type VARCHAR(255) NOT NULL, headers TEXT NOT NULL,
    UNIQUE KEY id_unique (id)) ENGINE=InnoDB`.execute(db);
  return {
    db,
    schema,
    outbox,
    version,
    durability,
    rawInsert: (batch) => sql`
      INSERT INTO ${table('raw_rows')} (id, topic, msg_key, payload, created_at)
      VALUES ${sql.join(batch.map((r) => sql`(${r.id}, ${TOPIC}, ${r.key}, ${r.payload}, UTC_TIMESTAMP(6))`))}`,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// A. One message added to a single-row business transaction.

async function measureSingle(target: Target, bench: BenchDb): Promise<SingleResult> {
  const { db, schema, outbox } = bench;
  let sequence = 0;
  // ULIDs like the outbox's own ids, so the bare row pays for making one too.
  const bareId = createUlidGenerator();

  async function transaction(kind: Kind): Promise<number> {
    const n = sequence++;
    const orderId = `order-${n}`;
    const customer = `customer-${n % 1000}`;
    const total = (n % 100_000) / 100;
    const start = performance.now();
    await db.transaction().execute(async (trx) => {
      await trx.withSchema(schema).insertInto('orders').values({ id: orderId, customer, total }).execute();
      if (kind === 'baseline') return;
      const payload = { orderId, customer, total };
      if (kind === 'bareInsert') {
        // What the outbox would store for the keyed message: the payload as UTF-8 JSON bytes, no headers.
        const bytes = Buffer.from(JSON.stringify(payload));
        const row = {
          id: bareId(),
          topic: TOPIC,
          msg_key: customer,
          payload: bytes,
          content_type: 'application/json',
          headers: '{}',
        };
        await trx.withSchema(schema).insertInto('bare_outbox').values(row).execute();
        return;
      }
      const message: OutboxMessage = kind === 'keyed' ? { topic: TOPIC, key: customer, payload } : { topic: TOPIC, payload };
      await outbox.enqueue(trx, message);
    });
    return performance.now() - start;
  }

  progress(`${target.label}: single-row warm-up, ${SINGLE_WARMUP} of each`);
  for (const kind of KINDS) for (let i = 0; i < SINGLE_WARMUP; i++) await transaction(kind);

  const size = SINGLE_ROUNDS * SINGLE_PER_ROUND;
  const byKind = <T>(make: () => T): Record<Kind, T> => ({
    baseline: make(),
    bareInsert: make(),
    keyed: make(),
    keyless: make(),
  });
  const latencies = byKind(() => new Float64Array(size));
  const totals = byKind(() => 0);
  const roundRatios = Object.fromEntries(RATIOS.map((r) => [r.name, [] as number[]])) as SingleResult['roundRatios'];

  for (let round = 0; round < SINGLE_ROUNDS; round++) {
    const roundTotals = byKind(() => 0);
    // Interleave the variants one transaction at a time, rotating which goes first, so that a slow spell of the
    // machine (a checkpoint, a stalled fsync, a noisy neighbour) falls on every variant alike.
    for (let i = 0; i < SINGLE_PER_ROUND; i++) {
      for (let k = 0; k < KINDS.length; k++) {
        const kind = KINDS[(round + i + k) % KINDS.length]!;
        const ms = await transaction(kind);
        latencies[kind][round * SINGLE_PER_ROUND + i] = ms;
        roundTotals[kind] += ms;
      }
    }
    for (const kind of KINDS) totals[kind] += roundTotals[kind];
    for (const r of RATIOS) roundRatios[r.name].push(roundTotals[r.of] / roundTotals[r.over]);
    const means = KINDS.map((kind) => `${kind} ${(roundTotals[kind] / SINGLE_PER_ROUND).toFixed(3)}`).join(', ');
    const ratios = RATIOS.map((r) => `${r.name} ${ratio(roundRatios[r.name].at(-1)!)}`).join(', ');
    progress(`${target.label}: round ${round + 1}/${SINGLE_ROUNDS}: mean ms ${means}; ${ratios}`);
  }
  return { latencies, totals, roundRatios };
}

// ---------------------------------------------------------------------------------------------------------------
// B. Batches of 1000 messages per transaction, next to a raw multi-row INSERT of the same rows.

async function measureBatch(target: Target, bench: BenchDb): Promise<BatchResult> {
  const { db, outbox } = bench;
  let batchNo = 0;
  let rawNo = 0;
  let payloadBytes = 0;
  let payloadCount = 0;

  function payloadFor(batch: number, i: number): Record<string, string | number> {
    const base = {
      orderId: `batch-${batch}-${i}`,
      customer: `customer-${i % BATCH_KEYS}`,
      total: ((batch * BATCH_SIZE + i) % 100_000) / 100,
      currency: 'EUR',
    };
    // Pad to a realistic event size, so the figures are not just per-statement overhead.
    const pad = Math.max(0, PAYLOAD_BYTES - Buffer.byteLength(JSON.stringify({ ...base, note: '' })));
    return { ...base, note: 'x'.repeat(pad) };
  }

  async function enqueueBatch(): Promise<number> {
    const batch = batchNo++;
    const messages: OutboxMessage[] = [];
    for (let i = 0; i < BATCH_SIZE; i++) {
      const payload = payloadFor(batch, i);
      payloadBytes += Buffer.byteLength(JSON.stringify(payload));
      payloadCount++;
      messages.push({ topic: TOPIC, key: `customer-${i % BATCH_KEYS}`, payload });
    }
    const start = performance.now();
    await db.transaction().execute((trx) => outbox.enqueue(trx, messages));
    return performance.now() - start;
  }

  async function rawBatch(): Promise<number> {
    const batch = rawNo++;
    const rows: RawRow[] = [];
    for (let i = 0; i < BATCH_SIZE; i++) {
      // A 26-character id like the outbox's ULIDs; the payload is encoded as the outbox encodes JSON.
      const id = `R${String(batch * BATCH_SIZE + i).padStart(25, '0')}`;
      rows.push({ id, key: `customer-${i % BATCH_KEYS}`, payload: Buffer.from(JSON.stringify(payloadFor(batch, i))) });
    }
    const start = performance.now();
    await db.transaction().execute((trx) => bench.rawInsert(rows).execute(trx));
    return performance.now() - start;
  }

  progress(`${target.label}: batch warm-up, ${BATCH_WARMUP} of each`);
  for (let i = 0; i < BATCH_WARMUP; i++) {
    await enqueueBatch();
    await rawBatch();
  }
  const enqueueMs = new Float64Array(BATCH_COUNT);
  const rawMs = new Float64Array(BATCH_COUNT);
  for (let i = 0; i < BATCH_COUNT; i++) {
    // Alternate (and swap who goes first) for the same reason as the single-row rounds.
    if (i % 2 === 0) {
      enqueueMs[i] = await enqueueBatch();
      rawMs[i] = await rawBatch();
    } else {
      rawMs[i] = await rawBatch();
      enqueueMs[i] = await enqueueBatch();
    }
    if ((i + 1) % 5 === 0) progress(`${target.label}: batch ${i + 1}/${BATCH_COUNT}`);
  }
  const side = (batchMs: Float64Array): BatchSide => ({ batchMs, totalMs: sum(batchMs), rows: BATCH_COUNT * BATCH_SIZE });
  return { enqueue: side(enqueueMs), raw: side(rawMs), payloadBytes: payloadBytes / payloadCount };
}

// ---------------------------------------------------------------------------------------------------------------
// Report.

function render(date: Date, reports: readonly DbReport[]): string {
  const percent = (value: number): string => `${Math.round((value - 1) * 100)}%`;
  const floors = reports.map((r) => timeRatio(r.single, 'bareInsert', 'baseline'));
  const floorCosts = reports.map((r, i) => `${floors[i]! >= 1 ? '+' : ''}${percent(floors[i]!)} on ${r.target.label}`).join(', ');
  const floorAboveGoal = floors.every((value) => value > GOAL_RATIO);
  const lines: string[] = [
    '## Enqueue',
    '',
    ...machineFacts('npm run bench -- enqueue', date),
    ...reports.map((r) => `- ${r.target.label}: ${r.version} (${r.durability})`),
    '',
    `Single-row transactions run one at a time on a pool: ${SINGLE_WARMUP} warm-up of each variant, then ${SINGLE_ROUNDS} rounds of ` +
      `${SINGLE_PER_ROUND} baseline, ${SINGLE_PER_ROUND} bare-INSERT, ${SINGLE_PER_ROUND} keyed and ${SINGLE_PER_ROUND} keyless transactions, interleaved one transaction at a time with the order rotated, so a slow spell of the machine falls on every variant alike. ` +
      `Baseline: \`db.transaction()\` inserting one \`orders\` row. Bare INSERT: the baseline plus one plain single-row INSERT of the row the keyed message ` +
      `would store (ULID id, topic, key, the same JSON payload as bytes, content type, headers) into \`bare_outbox\`, a table with only a bigint identity ` +
      `primary key and a unique index on id: the cheapest way to write that row, and the floor for any outbox that writes one. ` +
      `Keyed and keyless: the baseline plus \`outbox.enqueue\` of one message (key: one of 1000 customers, or none). ` +
      `Ratios divide total time over the same rounds; the range is the lowest and highest per-round ratio. Goal from the issue: ratio ≤ ${GOAL_RATIO}.`,
    '',
    `The bare INSERT is shown because one extra statement on a three-round-trip transaction (BEGIN, INSERT, COMMIT) ` +
      `${floorAboveGoal ? `already costs more than ${percent(GOAL_RATIO)} on this machine` : 'is not free either'} (${floorCosts}), ` +
      `so the goal ratio of ${GOAL_RATIO} is also reported against this floor: keyed and keyless over bare INSERT are enqueue's cost over writing the row at all.`,
    '',
    `Batches: ${BATCH_COUNT} transactions of ${BATCH_SIZE} rows after ${BATCH_WARMUP} warm-up, alternating enqueue ` +
      `(${BATCH_KEYS} keys) with a raw multi-row INSERT of the same rows into a plain table with a primary key only.`,
  ];
  for (const report of reports) lines.push('', ...renderDb(report));
  return `${lines.join('\n')}\n`;
}

function renderDb(report: DbReport): string[] {
  const { single, batch } = report;
  const mean = (kind: Kind) => ms(single.totals[kind] / single.latencies[kind].length);
  const p50 = (kind: Kind) => ms(median(single.latencies[kind]));
  const rowsPerSecond = (side: BatchSide) => side.rows / (side.totalMs / 1000);
  const throughputRatio = rowsPerSecond(batch.enqueue) / rowsPerSecond(batch.raw);

  /** A time ratio over the whole run, its per-round range and, for enqueue, whether it meets the goal. */
  const ratioCell = (of: Kind, over: Kind): string => {
    if (of === over) return '1.00 (time)';
    const total = timeRatio(single, of, over);
    const rounds = single.roundRatios[`${of}/${over}` as RatioName];
    const verdict = of === 'bareInsert' ? '' : `; ${total <= GOAL_RATIO ? 'meets' : 'misses'} ≤ ${GOAL_RATIO}`;
    return `**${ratio(total)}** (time; rounds ${ratio(Math.min(...rounds))}–${ratio(Math.max(...rounds))}${verdict})`;
  };
  const singleRow = (label: string, kind: Kind): string =>
    `| ${label} | ${mean(kind)} | ${p50(kind)} | — | ${ratioCell(kind, 'baseline')} | ${kind === 'baseline' ? '—' : ratioCell(kind, 'bareInsert')} |`;
  const batchRow = (label: string, side: BatchSide, ratioCell: string): string =>
    `| ${label} | ${ms(side.totalMs / side.batchMs.length)} | ${ms(median(side.batchMs))} | ${Math.round(rowsPerSecond(side)).toLocaleString('en-US')} | ${ratioCell} | — |`;

  return [
    `### ${report.target.label}`,
    '',
    `${report.version} · ${report.durability} · took ${report.seconds.toFixed(1)} s`,
    '',
    '| Measurement | Mean ms | p50 ms | Rows/s | Ratio | Ratio vs bare INSERT |',
    '|---|---:|---:|---:|---|---|',
    singleRow('Baseline: 1-row business transaction', 'baseline'),
    singleRow('+ bare INSERT of 1 outbox-shaped row', 'bareInsert'),
    singleRow('+ enqueue 1 keyed message', 'keyed'),
    singleRow('+ enqueue 1 keyless message', 'keyless'),
    batchRow(`Raw multi-row INSERT, ${BATCH_SIZE} rows / transaction`, batch.raw, '1.00 (rows/s)'),
    batchRow(
      `enqueue ${BATCH_SIZE} keyed messages / transaction`,
      batch.enqueue,
      `**${ratio(throughputRatio)}** (rows/s vs raw INSERT)`,
    ),
    '',
    `Batch payloads average ${Math.round(batch.payloadBytes)} bytes of JSON. Time ratios above 1 mean slower than the baseline (or the bare INSERT); ` +
      `the rows/s ratio below 1 means fewer rows per second than the raw INSERT.`,
  ];
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers.

/** Total time of one single-row variant over another's, across all rounds. */
function timeRatio(single: SingleResult, of: Kind, over: Kind): number {
  return single.totals[of] / single.totals[over];
}
