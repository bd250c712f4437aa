import os from 'node:os';
import { sql, type Kysely, type LogEvent } from 'kysely';
import { createUlidGenerator } from '../src/outbox/ids.js';
import {
  createOutbox,
  createRelay,
  MemoryBroker,
  migrate,
  type Broker,
  type Outbox,
  type OutboxMessage,
  type OutgoingMessage,
  type Relay,
  type RelayOptions,
} from '../src/index.js';
import { cdfPoints, lineChart, writePlot } from './plot.js';
import {
  analyze,
  connect,
  count,
  machineFacts,
  median,
  ms,
  percentile,
  progressFor,
  ratio,
  redact,
  serverFacts,
  settle,
  sleep,
  sum,
  targets,
  withScratchSchema,
  type Target,
} from './support.js';

/**
 * Relay benchmark. On PostgreSQL and MariaDB/MySQL, each in a fresh schema/database:
 *  1. throughput, DB-bound (in-memory broker): one relay draining a 20k-message backlog, next to a raw multi-row
 *     INSERT of the same rows (the database's own write speed, measured in the same run);
 *  2. backlog scaling: the first 10k messages relayed out of a 10k backlog vs out of a 1M-row backlog;
 *  3. commit→ack latency with producers committing single-message transactions at a steady 500 msg/s;
 *  4. idle cost: queries per second an idle relay sends.
 */

const POOL_SIZE = 10;
const ENQUEUE_BATCH = 1000;
const KEYS = 1000;
/** Every KEYLESS_EVERY-th message has no key (10%). */
const KEYLESS_EVERY = 10;
const PAYLOAD_BYTES = 200;
const TOPIC = 'orders.created';

const THROUGHPUT_MESSAGES = 20_000;
/** Raw INSERT and relay runs alternate this many times; the report takes each side's median. */
const THROUGHPUT_ROUNDS = 3;
const RAW_WARMUP_BATCHES = 2;
const RELAY_BATCH_SIZE = 100;
const RELAY_CONCURRENCY = 2;
/** Give up waiting for a relay run after this long and report what it did so far. */
const RELAY_TIMEOUT_MS = 120_000;

const BACKLOG_SMALL = 10_000;
const BACKLOG_BIG = 1_000_000;
/** Enqueueing the big backlog stops here even if it is not complete; the report then says how big it got. */
const BACKLOG_BUDGET_MS = 180_000;
const BACKLOG_PROGRESS_EVERY = 100_000;
const BACKLOG_MEASURED = 10_000;
/** Small and big backlog runs alternate this many times; the report takes each side's median. */
const BACKLOG_ROUNDS = 3;

const LATENCY_INTERVAL_MS = 2;
const LATENCY_WARMUP_MS = 1_000;
const LATENCY_MS = 20_000;
const LATENCY_ACK_TIMEOUT_MS = 30_000;

const IDLE_MS = 20_000;

const GOALS = { backlogRatio: 0.8, pgP50: 10, pgP99: 50, mysqlP99: 100, pgIdleQps: 1 } as const;

const progress = progressFor('relay');

// ---------------------------------------------------------------------------------------------------------------
// Results.

/** Count and total duration of one kind of statement the relay sent. */
type StatementStats = Map<string, { count: number; ms: number }>;

interface RelayRun {
  /** Messages the broker acknowledged when the clock stopped. */
  acked: number;
  wanted: number;
  ms: number;
  timedOut: boolean;
  errors: number;
  statements: StatementStats;
}

interface Delivery {
  duplicates: number;
  orderViolations: number;
  rowsLeft: number;
}

interface ThroughputRound {
  rawMs: number;
  enqueueMs: number;
  relay: RelayRun;
  delivery: Delivery;
}

interface ThroughputResult {
  rounds: ThroughputRound[];
  payloadBytes: number;
}

interface BacklogResult {
  bigSize: number;
  bigEnqueueMs: number;
  /** One run per round, alternating with the big backlog's. */
  small: RelayRun[];
  big: RelayRun[];
}

interface LatencyResult {
  sent: number;
  measured: number;
  missing: number;
  /** Sorted commit→ack latencies of the measured messages. */
  latencies: Float64Array;
  /** Sorted durations of the producer's transactions. */
  commits: Float64Array;
  achievedRate: number;
  /** The relay's claim statements per second while the producers ran (and until the last ack). */
  claimsPerSecond: number;
  /** The share of claims that found nothing. */
  emptyClaims: number;
  messagesPerBatch: number;
  relayErrors: number;
  mode: string;
}

interface IdleResult {
  queries: number;
  seconds: number;
  byKind: Map<string, number>;
  mode: string;
  relayErrors: number;
}

interface DbReport {
  target: Target;
  version: string;
  durability: string;
  /** Memory and maintenance settings that matter once the backlog outgrows the cache. */
  settings: string;
  throughput: ThroughputResult;
  backlog: BacklogResult;
  latency: LatencyResult;
  idle: IdleResult;
  seconds: number;
}

// ---------------------------------------------------------------------------------------------------------------
// Entry point.

export async function benchRelay(): Promise<string> {
  const date = new Date();
  const started = performance.now();
  const loadBefore = os.loadavg();
  const reports: DbReport[] = [];
  for (const target of targets()) reports.push(await benchTarget(target));
  const load = { before: loadBefore, after: os.loadavg() };
  return render(date, reports, (performance.now() - started) / 1000, load);
}

async function benchTarget(target: Target): Promise<DbReport> {
  const started = performance.now();
  progress(`${target.label}: connecting to ${redact(target.url)}`);
  const report = await withScratchSchema(target, { poolSize: POOL_SIZE, progress }, async (db, schema) => {
    const { version, durability } = await serverFacts(target, db);
    const settings = await memorySettings(target, db);
    progress(`${target.label}: ${version} in ${schema} (${settings})`);
    // The big backlog goes last: the write-back its load leaves behind would weigh on every measurement after it.
    const throughput = await measureThroughput(target, db, schema);
    const latency = await measureLatency(target, db, schema);
    const idle = await measureIdle(target, db, schema);
    const backlog = await measureBacklog(target, db, schema);
    // Leave the disk quiet for whatever runs next (the other database).
    await settle(target, db, progress);
    return { target, version, durability, settings, throughput, backlog, latency, idle, seconds: 0 };
  });
  report.seconds = (performance.now() - started) / 1000;
  progress(`${target.label}: done in ${report.seconds.toFixed(1)} s`);
  return report;
}

// ---------------------------------------------------------------------------------------------------------------
// Messages.

/** The nth message of a run: keys spread round-robin over KEYS keys, every KEYLESS_EVERY-th keyless, ~200-byte JSON. */
function messageAt(n: number): OutboxMessage {
  const keyless = n % KEYLESS_EVERY === KEYLESS_EVERY - 1;
  // Count only keyed messages, so the keys are used evenly.
  const key = keyless ? null : `customer-${(n - Math.floor(n / KEYLESS_EVERY)) % KEYS}`;
  const base = { n, orderId: `order-${n}`, customer: key ?? 'guest', total: (n % 100_000) / 100, currency: 'EUR' };
  const pad = Math.max(0, PAYLOAD_BYTES - Buffer.byteLength(JSON.stringify({ ...base, note: '' })));
  const payload = { ...base, note: 'x'.repeat(pad) };
  return key === null ? { topic: TOPIC, payload } : { topic: TOPIC, key, payload };
}

function batchOf(start: number, size: number): OutboxMessage[] {
  return Array.from({ length: size }, (_, i) => messageAt(start + i));
}

/** Migrates an outbox table of its own for one measurement. */
async function outboxTable(target: Target, db: Kysely<any>, schema: string, table: string) {
  await migrate(db, { dialect: target.dialect, schema, table });
  return createOutbox({ dialect: target.dialect, schema, table });
}

/** Enqueues messages [start, start + total) in transactions of ENQUEUE_BATCH; returns the time it took. */
async function enqueueRange(db: Kysely<any>, outbox: Outbox, start: number, total: number): Promise<number> {
  const began = performance.now();
  for (let done = 0; done < total; done += ENQUEUE_BATCH) {
    const messages = batchOf(start + done, Math.min(ENQUEUE_BATCH, total - done));
    await db.transaction().execute((trx) => outbox.enqueue(trx, messages));
  }
  return performance.now() - began;
}

async function rowsIn(db: Kysely<any>, schema: string, table: string): Promise<number> {
  const { rows } = await sql<{ n: number | string }>`SELECT count(*) AS n FROM ${sql.id(schema, table)}`.execute(db);
  return Number(rows[0]?.n ?? 0);
}

// ---------------------------------------------------------------------------------------------------------------
// Running a relay.

/** Names the relay's statements, to show where its database time goes. */
function statementKind(text: string): string {
  const s = text.replace(/\s+/g, ' ').trim().toLowerCase();
  if (/^(begin|start transaction|set transaction|commit|rollback)/.test(s)) return 'BEGIN / COMMIT';
  if (s.startsWith('savepoint') || s.startsWith('release savepoint')) return 'complete: savepoint';
  if (s.includes('pg_try_advisory_xact_lock') || s.includes('stripe = ')) return "sequence: take the sequencer's turn";
  if (s.includes('pg_advisory_xact_lock') || s.includes('where stripe in')) return 'lock keys (relays only)';
  if (s.startsWith('delete')) return s.includes('lease_owner') ? 'complete: delete sent rows' : 'cleanup';
  if (s.includes('with gone as'))
    return s.includes('delete from') ? 'complete: delete sent rows + promote next heads' : 'sequence: mark arrivals + heads';
  if (s.includes('skip locked')) return 'claim: select due heads';
  if (s.startsWith('select exists')) return 'claim: probe';
  if (s.includes('set t.lease_owner') || s.includes('set lease_owner')) return 'claim: lease update';
  if (s.startsWith('select t.seq, t.id')) return 'claim: read claimed rows';
  if (s.includes('ready is null') && s.includes('order by')) return 'sequence: read arrivals';
  if (s.startsWith('select k.msg_key')) return 'promote: find next heads';
  if (s.includes('set t.next_attempt_at = case')) return 'promote: mark heads';
  return s.split(' ').slice(0, 3).join(' ');
}

/** A Kysely log function that adds each statement's count and duration to `stats`. */
function timeStatements(stats: StatementStats): (event: LogEvent) => void {
  return (event) => {
    const kind = statementKind(event.query.sql);
    const entry = stats.get(kind) ?? { count: 0, ms: 0 };
    entry.count++;
    entry.ms += event.queryDurationMillis;
    stats.set(kind, entry);
  };
}

/** A relay on its own pool; `stop` stops it and closes the pool. */
function startRelay(
  target: Target,
  options: Omit<RelayOptions<any>, 'db' | 'dialect'>,
  log?: (event: LogEvent) => void,
): { relay: Relay; errors: () => number; stop: () => Promise<void> } {
  const db = connect(target, log === undefined ? { poolSize: POOL_SIZE } : { poolSize: POOL_SIZE, log });
  const relay = createRelay({ ...options, db, dialect: target.dialect });
  let errors = 0;
  relay.on('error', (error) => {
    if (errors++ < 5) progress(`${target.label}: relay error: ${error.message}`);
  });
  relay.start();
  return {
    relay,
    errors: () => errors,
    stop: async () => {
      await relay.stop();
      await db.destroy();
    },
  };
}

/** Starts a relay with batchSize 100 and concurrency 2 and times it until the broker has acknowledged `wanted` messages. */
async function relayUntil(
  target: Target,
  schema: string,
  table: string,
  broker: MemoryBroker,
  wanted: number,
): Promise<RelayRun> {
  const statements: StatementStats = new Map();
  const began = performance.now();
  const running = startRelay(
    target,
    { schema, table, broker, batchSize: RELAY_BATCH_SIZE, concurrency: RELAY_CONCURRENCY },
    timeStatements(statements),
  );
  let timedOut = false;
  while (broker.accepted.length < wanted) {
    if (performance.now() - began > RELAY_TIMEOUT_MS) {
      timedOut = true;
      break;
    }
    await sleep(1);
  }
  const elapsed = performance.now() - began;
  const acked = broker.accepted.length;
  await running.stop();
  return { acked, wanted, ms: elapsed, timedOut, errors: running.errors(), statements };
}

const rate = (run: RelayRun): number => Math.min(run.acked, run.wanted) / (run.ms / 1000);

// ---------------------------------------------------------------------------------------------------------------
// 1. Throughput, next to a raw multi-row INSERT of the same rows.

async function measureThroughput(target: Target, db: Kysely<any>, schema: string): Promise<ThroughputResult> {
  const table = 'tput';
  const outbox = await outboxTable(target, db, schema, table);
  const raw = sql.id(schema, 'raw_rows');
  if (target.dialect === 'postgres') {
    await sql`CREATE TABLE ${raw} (
      seq bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, id text NOT NULL, topic text NOT NULL, msg_key text,
      payload bytea NOT NULL, content_type text NOT NULL, headers jsonb NOT NULL,
      created_at timestamptz NOT NULL DEFAULT statement_timestamp())`.execute(db);
  } else {
    await sql`CREATE TABLE ${raw} (
      seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, id VARBINARY(1020) NOT NULL,
      topic VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, msg_key VARBINARY(1020) NULL, payload LONGBLOB NOT NULL,
      content_type VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, headers JSON NOT NULL,
      created_at DATETIME(6) NOT NULL) ENGINE=InnoDB`.execute(db);
  }
  const newId = createUlidGenerator();
  const now = target.dialect === 'postgres' ? sql`statement_timestamp()` : sql`UTC_TIMESTAMP(6)`;
  let payloadBytes = 0;
  /** One multi-row INSERT ... VALUES of the rows the outbox would store for these messages. */
  const rawBatch = async (start: number): Promise<number> => {
    const rows = batchOf(start, ENQUEUE_BATCH).map((m) => {
      const payload = Buffer.from(JSON.stringify(m.payload));
      payloadBytes += payload.length;
      return sql`(${newId()}, ${m.topic}, ${m.key ?? null}, ${payload}, ${'application/json'}, ${'{}'}, ${now})`;
    });
    const began = performance.now();
    await db
      .transaction()
      .execute((trx) =>
        sql`INSERT INTO ${raw} (id, topic, msg_key, payload, content_type, headers, created_at) VALUES ${sql.join(rows)}`.execute(
          trx,
        ),
      );
    return performance.now() - began;
  };

  progress(`${target.label}: raw INSERT warm-up`);
  // Rows numbered past anything the rounds use; the raw table has no unique constraint anyway.
  for (let i = 0; i < RAW_WARMUP_BATCHES; i++) await rawBatch(10_000_000 + i * ENQUEUE_BATCH);
  payloadBytes = 0;

  // Rounds of raw INSERT then relay, so a drift in the machine's speed hits both alike; the report takes medians.
  const rounds: ThroughputRound[] = [];
  for (let round = 0; round < THROUGHPUT_ROUNDS; round++) {
    const first = round * THROUGHPUT_MESSAGES;
    await settle(target, db, progress);
    let rawMs = 0;
    for (let start = first; start < first + THROUGHPUT_MESSAGES; start += ENQUEUE_BATCH) rawMs += await rawBatch(start);
    const enqueueMs = await enqueueRange(db, outbox, first, THROUGHPUT_MESSAGES);
    await analyze(target, db, schema, table);
    await settle(target, db, progress);
    const broker = new MemoryBroker();
    const relay = await relayUntil(target, schema, table, broker, THROUGHPUT_MESSAGES);
    const delivery = checkDelivery(broker.accepted, await rowsIn(db, schema, table));
    rounds.push({ rawMs, enqueueMs, relay, delivery });
    progress(
      `${target.label}: round ${round + 1}/${THROUGHPUT_ROUNDS}: relay ${count(rate(relay))} msg/s, ` +
        `raw INSERT ${count(THROUGHPUT_MESSAGES / (rawMs / 1000))} rows/s, enqueue ${count(THROUGHPUT_MESSAGES / (enqueueMs / 1000))} msg/s`,
    );
  }
  return { rounds, payloadBytes: payloadBytes / (THROUGHPUT_ROUNDS * THROUGHPUT_MESSAGES) };
}

/** Duplicates and per-key order violations among what the broker accepted, and rows left in the table. */
function checkDelivery(accepted: readonly OutgoingMessage[], rowsLeft: number): Delivery {
  const ids = new Set<string>();
  const lastByKey = new Map<string, number>();
  let duplicates = 0;
  let orderViolations = 0;
  for (const message of accepted) {
    if (ids.has(message.id)) duplicates++;
    ids.add(message.id);
    if (message.key === null) continue;
    const { n } = JSON.parse(message.payload.toString('utf8')) as { n: number };
    if (n < (lastByKey.get(message.key) ?? -1)) orderViolations++;
    lastByKey.set(message.key, n);
  }
  return { duplicates, orderViolations, rowsLeft };
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Backlog scaling.

async function measureBacklog(target: Target, db: Kysely<any>, schema: string): Promise<BacklogResult> {
  const smallOutbox = await outboxTable(target, db, schema, 'backlog_small');
  const bigOutbox = await outboxTable(target, db, schema, 'backlog_big');
  progress(`${target.label}: backlog of ${count(BACKLOG_BIG)}: enqueueing (budget ${BACKLOG_BUDGET_MS / 1000} s)`);
  const began = performance.now();
  let bigSize = 0;
  while (bigSize < BACKLOG_BIG && performance.now() - began < BACKLOG_BUDGET_MS) {
    await enqueueRange(db, bigOutbox, bigSize, ENQUEUE_BATCH);
    bigSize += ENQUEUE_BATCH;
    if (bigSize % BACKLOG_PROGRESS_EVERY === 0) {
      const seconds = (performance.now() - began) / 1000;
      progress(`${target.label}: enqueued ${count(bigSize)} in ${seconds.toFixed(1)} s (${count(bigSize / seconds)} msg/s)`);
    }
  }
  const bigEnqueueMs = performance.now() - began;
  if (bigSize < BACKLOG_BIG) progress(`${target.label}: budget spent: the big backlog holds ${count(bigSize)} rows`);
  await analyze(target, db, schema, 'backlog_big');

  // Alternate small and big, so a drift in the machine's speed (write-back, a noisy neighbour) hits both alike.
  const small: RelayRun[] = [];
  const big: RelayRun[] = [];
  // Each big run takes its 10k and up to two batches more (those in flight when it stops): leave room for every round.
  const rounds = Math.max(1, Math.min(BACKLOG_ROUNDS, Math.floor(bigSize / (BACKLOG_MEASURED + 2 * RELAY_BATCH_SIZE))));
  for (let round = 0; round < rounds; round++) {
    await enqueueRange(db, smallOutbox, round * BACKLOG_SMALL, BACKLOG_SMALL);
    await analyze(target, db, schema, 'backlog_small');
    await settle(target, db, progress);
    small.push(await relayUntil(target, schema, 'backlog_small', new MemoryBroker(), BACKLOG_MEASURED));
    await settle(target, db, progress);
    big.push(await relayUntil(target, schema, 'backlog_big', new MemoryBroker(), BACKLOG_MEASURED));
    progress(
      `${target.label}: round ${round + 1}/${rounds}: ${count(rate(small.at(-1)!))} msg/s out of ${count(BACKLOG_SMALL)}, ` +
        `${count(rate(big.at(-1)!))} msg/s out of ~${count(bigSize - round * BACKLOG_MEASURED)}`,
    );
  }
  // Free the space now, so the big table does not weigh on what runs next.
  await sql`TRUNCATE TABLE ${sql.id(schema, 'backlog_big')}`.execute(db);
  return { bigSize, bigEnqueueMs, small, big };
}

async function memorySettings(target: Target, db: Kysely<any>): Promise<string> {
  if (target.dialect === 'postgres') {
    const { rows } = await sql<{ name: string; setting: string }>`
      SELECT name, current_setting(name) AS setting FROM pg_settings
      WHERE name IN ('shared_buffers', 'max_wal_size', 'autovacuum') ORDER BY name`.execute(db);
    return rows.map((row) => `${row.name}=${row.setting}`).join(', ');
  }
  const { rows } = await sql<{ pool: number | string; log: number | string }>`
    SELECT @@innodb_buffer_pool_size AS pool, @@innodb_log_file_size AS log`.execute(db);
  const mib = (value: number | string | undefined) => `${Math.round(Number(value ?? 0) / 1024 ** 2)}MB`;
  return `innodb_buffer_pool_size=${mib(rows[0]?.pool)}, innodb_log_file_size=${mib(rows[0]?.log)}`;
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Commit→ack latency at a steady rate.

/** Records when each message id was first acknowledged. */
class RecordingBroker implements Broker {
  readonly name = 'recording';
  readonly acks = new Map<string, number>();

  async publish(messages: readonly OutgoingMessage[]): Promise<{ status: 'ok' }[]> {
    const now = performance.now();
    for (const message of messages) if (!this.acks.has(message.id)) this.acks.set(message.id, now);
    return messages.map(() => ({ status: 'ok' }));
  }
}

async function measureLatency(target: Target, db: Kysely<any>, schema: string): Promise<LatencyResult> {
  const table = 'latency';
  const outbox = await outboxTable(target, db, schema, table);
  const broker = new RecordingBroker();
  // Producers send no NOTIFY by default (it serializes their commits), so the relay runs as most will: polling.
  const listen = false;
  const mode = 'adaptive polling, default options';
  await settle(target, db, progress);
  let claims = 0;
  const running = startRelay(target, { schema, table, broker, ...(listen ? { listen: target.url } : {}) }, (event) => {
    if (statementKind(event.query.sql) === 'claim: select due heads') claims++;
  });
  await sleep(500); // Let the LISTEN connection come up and the relay go idle.
  claims = 0;
  let batches = 0;
  running.relay.on('published', () => void batches++);

  const rateHz = 1000 / LATENCY_INTERVAL_MS;
  const total = Math.round((LATENCY_WARMUP_MS + LATENCY_MS) / LATENCY_INTERVAL_MS);
  const warmup = Math.round(LATENCY_WARMUP_MS / LATENCY_INTERVAL_MS);
  progress(`${target.label}: latency at ${rateHz} msg/s for ${(LATENCY_WARMUP_MS + LATENCY_MS) / 1000} s (${mode})`);
  const committed = new Map<string, number>();
  const measuredIds: string[] = [];
  const commitMs = new Float64Array(total);
  const pending = new Set<Promise<void>>();
  let failures = 0;

  /** One single-message transaction; the commit time is taken as soon as the transaction resolves. */
  const produce = (n: number): void => {
    const began = performance.now();
    const done = db
      .transaction()
      .execute((trx) => outbox.enqueue(trx, messageAt(n)))
      .then(
        (result) => {
          const now = performance.now();
          committed.set(result.id, now);
          commitMs[n] = now - began;
          if (n >= warmup) measuredIds.push(result.id);
        },
        (error: unknown) => {
          if (failures++ < 5) progress(`${target.label}: producer error: ${String(error)}`);
        },
      )
      .finally(() => pending.delete(done));
    pending.add(done);
  };

  // A fixed schedule: message n is due at start + n × interval; a late tick sends everything due at once.
  const start = performance.now();
  let sent = 0;
  while (sent < total) {
    const now = performance.now();
    while (sent < total && start + sent * LATENCY_INTERVAL_MS <= now) produce(sent++);
    if (sent < total) await sleep(Math.max(0, start + sent * LATENCY_INTERVAL_MS - performance.now()));
  }
  await Promise.all([...pending]);
  const producedSeconds = (performance.now() - start) / 1000;

  const deadline = performance.now() + LATENCY_ACK_TIMEOUT_MS;
  while (measuredIds.some((id) => !broker.acks.has(id)) && performance.now() < deadline) await sleep(10);
  const relaySeconds = (performance.now() - start) / 1000;
  await running.stop();

  const latencies: number[] = [];
  for (const id of measuredIds) {
    const ack = broker.acks.get(id);
    if (ack !== undefined) latencies.push(ack - committed.get(id)!);
  }
  const result: LatencyResult = {
    sent: committed.size,
    measured: measuredIds.length,
    missing: measuredIds.length - latencies.length,
    latencies: Float64Array.from(latencies).sort(),
    commits: commitMs.slice(warmup).sort(),
    achievedRate: committed.size / producedSeconds,
    claimsPerSecond: claims / relaySeconds,
    emptyClaims: (claims - batches) / claims,
    messagesPerBatch: broker.acks.size / batches,
    relayErrors: running.errors(),
    mode,
  };
  progress(
    `${target.label}: latency p50 ${ms(percentile(result.latencies, 0.5))} ms, p99 ${ms(percentile(result.latencies, 0.99))} ms` +
      ` (${count(result.achievedRate)} msg/s achieved, ${result.missing} unacknowledged)`,
  );
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Idle cost.

async function measureIdle(target: Target, db: Kysely<any>, schema: string): Promise<IdleResult> {
  const table = 'idle';
  await outboxTable(target, db, schema, table);
  // Producers send no NOTIFY by default (it serializes their commits), so the relay runs as most will: polling.
  const listen = false;
  const mode = 'adaptive polling, default options';
  const byKind = new Map<string, number>();
  let queries = 0;
  let counting = true;
  progress(`${target.label}: idle relay for ${IDLE_MS / 1000} s (${mode})`);
  const running = startRelay(
    target,
    { schema, table, broker: new MemoryBroker(), ...(listen ? { listen: target.url } : {}) },
    (event) => {
      if (event.level !== 'query' || !counting) return;
      queries++;
      const kind = statementKind(event.query.sql);
      byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
    },
  );
  await sleep(IDLE_MS);
  counting = false;
  await running.stop();
  progress(`${target.label}: idle relay sent ${queries} queries in ${IDLE_MS / 1000} s`);
  return { queries, seconds: IDLE_MS / 1000, byKind, mode, relayErrors: running.errors() };
}

// ---------------------------------------------------------------------------------------------------------------
// Report.

function render(date: Date, reports: readonly DbReport[], seconds: number, load: { before: number[]; after: number[] }): string {
  const loadavg = (values: number[]) => values.map((value) => value.toFixed(2)).join(' ');
  const lines: string[] = [
    '## Relay',
    '',
    ...machineFacts('npm run bench -- relay', date),
    ...reports.map((r) => `- ${r.target.label}: ${r.version} (${r.durability}; ${r.settings})`),
    `- Whole bench: ${seconds.toFixed(0)} s; load average (1, 5, 15 min) ${loadavg(load.before)} before, ${loadavg(load.after)} after ` +
      `(anything else running on the machine shows here: the figures are only as quiet as the machine was)`,
    '',
    `Each database gets a fresh schema (PostgreSQL) or database (MySQL), dropped afterwards, and every measurement its own ` +
      `outbox table. Producers and each relay have pools of their own (${POOL_SIZE} connections). Messages: keys spread ` +
      `round-robin over ${count(KEYS)} keys with every ${KEYLESS_EVERY}th message keyless, ~${PAYLOAD_BYTES}-byte JSON ` +
      `payloads, enqueued ${count(ENQUEUE_BATCH)} per transaction. Every pre-filled outbox table is ANALYZEd before its relay ` +
      `starts, as autovacuum would have done in production, and before each timed run the database is let catch up on ` +
      `earlier writes (PostgreSQL: \`CHECKPOINT\`; InnoDB: up to 15 s for purge). Measurements run in the order 1, 3, 4, 2, ` +
      `so that the big backlog's load comes last.`,
    '',
    `1. **Throughput** (DB-bound, in-memory broker), ${THROUGHPUT_ROUNDS} rounds, medians reported: ${count(THROUGHPUT_MESSAGES)} messages are enqueued, then one relay ` +
      `(batchSize ${RELAY_BATCH_SIZE}, concurrency ${RELAY_CONCURRENCY}, other options default) is timed from \`start()\` until the ` +
      `broker has acknowledged all of them. Baseline, in the same run: multi-row \`INSERT ... VALUES\` of the same rows ` +
      `(${count(ENQUEUE_BATCH)} per transaction, after ${RAW_WARMUP_BATCHES} warm-up batches, just before each relay run) into a plain table with a bigint ` +
      `primary key and the same columns (id, topic, key, payload, content type, headers, created_at).`,
    `2. **Backlog scaling**: the same relay, timed until the first ${count(BACKLOG_MEASURED)} messages are acknowledged, out of ` +
      `a ${count(BACKLOG_SMALL)}-message backlog and out of a backlog of up to ${count(BACKLOG_BIG)} enqueued with the library ` +
      `(stopping after ${BACKLOG_BUDGET_MS / 1000} s of enqueueing if it is not done by then). Up to ${BACKLOG_ROUNDS} rounds ` +
      `alternate a fresh ${count(BACKLOG_SMALL)}-message backlog with the next ${count(BACKLOG_MEASURED)} of the big one (a new ` +
      `relay each run); each side's median is compared.`,
    `3. **Commit→ack latency**: producers commit single-message transactions on a fixed schedule, one every ` +
      `${LATENCY_INTERVAL_MS} ms (${1000 / LATENCY_INTERVAL_MS} msg/s; late ticks catch up, transactions overlap on the pool), ` +
      `for ${LATENCY_WARMUP_MS / 1000} s of warm-up (not counted) and ${LATENCY_MS / 1000} s measured, while one relay runs. ` +
      `Commit time: \`performance.now()\` when the transaction resolves; ack time: \`performance.now()\` inside the broker's \`publish\`.`,
    `4. **Idle cost**: a relay on an empty table for ${IDLE_MS / 1000} s, counting every statement its own Kysely instance sends ` +
      `(Kysely's \`log\` option, from \`start()\`, BEGIN/COMMIT included; the LISTEN connection is a separate pg client and not counted).`,
  ];
  for (const report of reports) lines.push('', ...renderDb(report));
  lines.push('', ...renderLatencyPlot(date, reports));
  return `${lines.join('\n')}\n`;
}

function renderDb(report: DbReport): string[] {
  const { target, throughput, backlog, latency, idle } = report;
  const postgres = target.dialect === 'postgres';
  const perSecond = (msValue: number) => THROUGHPUT_MESSAGES / (msValue / 1000);
  const tput = throughput.rounds;
  const rawRate = median(Float64Array.from(tput.map((r) => perSecond(r.rawMs))));
  const enqueueRate = median(Float64Array.from(tput.map((r) => perSecond(r.enqueueMs))));
  const relayRate = median(Float64Array.from(tput.map((r) => rate(r.relay))));
  const tputRatios = tput.map((r) => rate(r.relay) / perSecond(r.rawMs));
  const rates = (runs: readonly RelayRun[]) => Float64Array.from(runs.map(rate));
  const smallRate = median(rates(backlog.small));
  const bigRate = median(rates(backlog.big));
  const backlogRatio = bigRate / smallRate;
  const roundRatios = backlog.big.map((run, i) => rate(run) / rate(backlog.small[i]!));
  const p = (q: number) => percentile(latency.latencies, q);
  const idleQps = idle.queries / idle.seconds;
  const verdict = (met: boolean) => (met ? 'met' : '**missed**');
  const timedOut = (...runs: RelayRun[]) =>
    runs.some((run) => run.timedOut) ? ` (timed out: ${runs.map((run) => count(run.acked)).join(', ')} acknowledged)` : '';
  const bigLabel =
    backlog.bigSize < BACKLOG_BIG ? `${count(backlog.bigSize)} (1M did not fit in the budget)` : count(backlog.bigSize);

  const rows: [string, string, string, string][] = [
    [
      `Relay throughput, ${count(THROUGHPUT_MESSAGES)} backlog (median of ${tput.length})`,
      `${count(relayRate)} msg/s${timedOut(...tput.map((r) => r.relay))}`,
      '—',
      '—',
    ],
    [`Raw multi-row INSERT, baseline (median of ${tput.length})`, `${count(rawRate)} rows/s`, '—', '—'],
    [
      `Relay / raw INSERT`,
      `**${ratio(relayRate / rawRate)}** (rounds ${tputRatios.map(ratio).join(', ')})`,
      '— (information)',
      '—',
    ],
    [`(Enqueue of the same messages, for comparison)`, `${count(enqueueRate)} msg/s`, '—', '—'],
    [
      `Relay, ${count(BACKLOG_MEASURED)} out of a ${count(BACKLOG_SMALL)} backlog (median of ${backlog.small.length})`,
      `${count(smallRate)} msg/s${timedOut(...backlog.small)}`,
      '—',
      '—',
    ],
    [
      `Relay, ${count(BACKLOG_MEASURED)} out of a ${bigLabel} backlog (median of ${backlog.small.length})`,
      `${count(bigRate)} msg/s${timedOut(...backlog.big)}`,
      '—',
      '—',
    ],
    [
      `Backlog ratio big / small`,
      `**${ratio(backlogRatio)}** (rounds ${roundRatios.map(ratio).join(', ')})`,
      `≥ ${GOALS.backlogRatio}`,
      verdict(backlogRatio >= GOALS.backlogRatio),
    ],
    [
      `Commit→ack p50`,
      `${ms(p(0.5))} ms`,
      postgres ? `≤ ${GOALS.pgP50} ms` : '—',
      postgres ? verdict(p(0.5) <= GOALS.pgP50) : '—',
    ],
    [`Commit→ack p90`, `${ms(p(0.9))} ms`, '—', '—'],
    [
      `Commit→ack p99`,
      `${ms(p(0.99))} ms`,
      `≤ ${postgres ? GOALS.pgP99 : GOALS.mysqlP99} ms`,
      verdict(p(0.99) <= (postgres ? GOALS.pgP99 : GOALS.mysqlP99) && latency.missing === 0),
    ],
    [`Commit→ack max`, `${ms(p(1))} ms`, '—', '—'],
    [
      `Idle queries/s`,
      `${ratio(idleQps)} (${idle.queries} in ${idle.seconds} s)`,
      postgres ? `≤ ${GOALS.pgIdleQps}` : '— (information)',
      postgres ? verdict(idleQps <= GOALS.pgIdleQps) : '—',
    ],
  ];

  const delivered = tput.reduce((total, r) => total + Math.min(r.relay.acked, THROUGHPUT_MESSAGES), 0);
  const delivery = tput.reduce(
    (total, r) => ({
      duplicates: total.duplicates + r.delivery.duplicates,
      orderViolations: total.orderViolations + r.delivery.orderViolations,
      rowsLeft: total.rowsLeft + r.delivery.rowsLeft,
    }),
    { duplicates: 0, orderViolations: 0, rowsLeft: 0 },
  );
  const errors =
    [...tput.map((r) => r.relay), ...backlog.small, ...backlog.big].reduce((total, run) => total + run.errors, 0) +
    latency.relayErrors +
    idle.relayErrors;
  const breakdown = [...idle.byKind.entries()]
    .sort(([, a], [, b]) => b - a)
    .map(([kind, n]) => `${kind} ${n}`)
    .join(', ');

  return [
    `### ${target.label}`,
    '',
    `${report.version} · ${report.durability} · took ${report.seconds.toFixed(1)} s`,
    '',
    '| Figure | Value | Goal | Verdict |',
    '|---|---:|---|---|',
    ...rows.map((cells) => `| ${cells.join(' | ')} |`),
    '',
    `- Throughput runs: ${count(delivered)} of ${count(tput.length * THROUGHPUT_MESSAGES)} delivered, ${delivery.duplicates} duplicates, ` +
      `${delivery.orderViolations} per-key order violations, ${delivery.rowsLeft} rows left in the table after \`stop()\`; ` +
      `payloads ${Math.round(throughput.payloadBytes)} bytes of JSON; ${errors} relay \`error\` events over the whole bench. ` +
      `Rounds (relay msg/s / raw rows/s): ${tput.map((r) => `${count(rate(r.relay))} / ${count(perSecond(r.rawMs))}`).join('; ')}.`,
    `- Big backlog: ${count(backlog.bigSize)} messages enqueued in ${(backlog.bigEnqueueMs / 1000).toFixed(1)} s ` +
      `(${count(backlog.bigSize / (backlog.bigEnqueueMs / 1000))} msg/s)` +
      (backlog.bigSize < BACKLOG_BIG
        ? `: enqueueing stopped at the ${BACKLOG_BUDGET_MS / 1000} s budget, so the big backlog is ${count(backlog.bigSize)}, not ${count(BACKLOG_BIG)}.`
        : '.') +
      ` Rounds (small / big, msg/s): ${backlog.small.map((run, i) => `${count(rate(run))} / ${count(rate(backlog.big[i]!))}`).join('; ')}.`,
    `- Latency (${latency.mode}): ${count(latency.sent)} messages committed at ${count(latency.achievedRate)} msg/s achieved, ` +
      `${count(latency.measured)} measured, ${latency.missing} not acknowledged within ${LATENCY_ACK_TIMEOUT_MS / 1000} s; ` +
      `producer transaction (from its scheduled start, waiting for a pooled connection included) p50 ` +
      `${ms(percentile(latency.commits, 0.5))} ms, p99 ${ms(percentile(latency.commits, 0.99))} ms; the relay ran ` +
      `${count(latency.claimsPerSecond)} claims/s, ${Math.round(latency.emptyClaims * 100)}% of them empty, ` +
      `${ratio(latency.messagesPerBatch)} messages per non-empty claim.` +
      (latency.achievedRate < 0.95 * (1000 / LATENCY_INTERVAL_MS)
        ? ` **The producers fell short of ${1000 / LATENCY_INTERVAL_MS} msg/s**: the database did not keep up with that many ` +
          `single-message commits, so the latency figures are for the lower rate.`
        : ''),
    `- Idle (${idle.mode}) statements: ${breakdown || 'none'}.`,
    '',
    `Where the relay's database time goes in the backlog runs (Kysely's \`log\`, per statement kind: mean ms per statement ` +
      `and statements sent, over all ${backlog.small.length} rounds of ${count(BACKLOG_MEASURED)} messages each side):`,
    '',
    ...renderStatements(backlog),
  ];
}

/** The commit→ack latency distributions of all databases as one CDF plot (log-scale latency axis), written to bench/results. */
function renderLatencyPlot(date: Date, reports: readonly DbReport[]): string[] {
  const withData = reports.filter((report) => report.latency.latencies.length > 0);
  if (withData.length === 0) return [];
  const all = withData.flatMap((report) => [report.latency.latencies[0]!, report.latency.latencies.at(-1)!]);
  const plot = writePlot(
    'relay-latency-cdf.svg',
    lineChart({
      title: `Relay commit→ack latency at ${1000 / LATENCY_INTERVAL_MS} msg/s (cumulative distribution)`,
      subtitle: `${count(withData[0]!.latency.measured)} single-message transactions per database, one relay, in-memory broker · ${date.toISOString().slice(0, 10)}`,
      xLabel: 'commit → broker ack, ms (log scale)',
      yLabel: 'share of messages acknowledged within',
      xLog: true,
      legend: 'bottom-right',
      xMin: Math.max(0.1, Math.min(...all) * 0.9),
      xMax: Math.max(...all) * 1.1,
      yMin: 0,
      yMax: 1,
      yGuides: [
        { y: 0.5, label: 'p50' },
        { y: 0.99, label: 'p99' },
      ],
      series: withData.map((report) => ({
        name:
          `${report.target.label} (${report.latency.mode.split(' (')[0]!.split(',')[0]}): p50 ${ms(percentile(report.latency.latencies, 0.5))} ms, ` +
          `p99 ${ms(percentile(report.latency.latencies, 0.99))} ms`,
        points: cdfPoints(report.latency.latencies),
      })),
    }),
  );
  return [
    '### Commit→ack latency distribution',
    '',
    `Every measured message's commit→ack latency, as a cumulative distribution per database (written by this bench):`,
    '',
    `![Commit→ack latency CDF](${plot})`,
  ];
}

function renderStatements(backlog: BacklogResult): string[] {
  const merged = (runs: readonly RelayRun[]): StatementStats => {
    const stats: StatementStats = new Map();
    for (const run of runs) {
      for (const [kind, { count: n, ms: time }] of run.statements) {
        const entry = stats.get(kind) ?? { count: 0, ms: 0 };
        stats.set(kind, { count: entry.count + n, ms: entry.ms + time });
      }
    }
    return stats;
  };
  const small = { statements: merged(backlog.small) };
  const big = { statements: merged(backlog.big) };
  const bigSize = backlog.bigSize;
  const kinds = [...new Set([...small.statements.keys(), ...big.statements.keys()])];
  const total = (stats: StatementStats) => sum(Float64Array.from([...stats.values()].map((s) => s.ms)));
  const cell = (stats: StatementStats, kind: string) => {
    const entry = stats.get(kind);
    return entry === undefined ? '— | —' : `${ms(entry.ms / entry.count)} | ${count(entry.count)}`;
  };
  kinds.sort((a, b) => (big.statements.get(b)?.ms ?? 0) - (big.statements.get(a)?.ms ?? 0));
  return [
    `| Statement | ${count(BACKLOG_SMALL)}: mean ms | count | ${count(bigSize)}: mean ms | count |`,
    '|---|---:|---:|---:|---:|',
    ...kinds.map((kind) => `| ${kind} | ${cell(small.statements, kind)} | ${cell(big.statements, kind)} |`),
    `| All (total ms) | ${count(total(small.statements))} | | ${count(total(big.statements))} | |`,
  ];
}
