import { sql, type Kysely } from 'kysely';
import {
  createOutbox,
  createRelay,
  migrate,
  type Broker,
  type OutgoingMessage,
  type PublishOutcome,
} from '../src/index.js';
import { ensureSlot } from '../src/relay/logical/slots.js';
import { tableNames } from '../src/dialects/identifiers.js';
import { connect, count, machineFacts, ms, percentile, progressFor, ratio, serverFacts, sleep, targets, withScratchSchema } from './support.js';

/**
 * The logical relay (mode 'logical') next to the polling relay, PostgreSQL only, in one run:
 *  1. commit→ack latency with producers committing one keyed message per transaction at a steady 500 msg/s;
 *  2. partitions: a streamed backlog drained into a broker that acknowledges at once, by one slot and by 4 slots
 *     (partitions: 4, one relay per partition, all in this process);
 *  3. backlog: the drain rate of a streamed backlog of 10k and of 1M messages (the relay down while they were written).
 * Throughput against the brokers' own clients is in `npm run bench -- brokers` (its "Logical relay / raw" rows).
 */
const progress = progressFor('logical');
const RATE_HZ = 500;
const LATENCY_MS = 15_000;
const WARMUP_MS = 1_000;
const BACKLOG = 100_000;
const KEYS = 1000;
const ROUNDS = 2;
const GOALS = { p50: 5, p99: 25, partitions: 2.5, backlog: 0.9 } as const;
const SMALL_BACKLOG = 10_000;
const BIG_BACKLOG = 1_000_000;

/** Records when each id was first acknowledged. */
class RecordingBroker implements Broker {
  readonly name = 'recording';
  readonly acks = new Map<string, number>();
  async publish(messages: readonly OutgoingMessage[]): Promise<PublishOutcome[]> {
    const now = performance.now();
    for (const m of messages) if (!this.acks.has(m.id)) this.acks.set(m.id, now);
    return messages.map(() => ({ status: 'ok' as const }));
  }
}

interface Latency {
  p50: number;
  p99: number;
  missing: number;
}

async function dropLogical(db: Kysely<any>, slotPrefix: string, publicationPrefix: string) {
  // A stopped relay's server process may take a moment to let go of its slot.
  for (let tries = 0; tries < 100; tries++) {
    const { rows } = await sql`SELECT 1 FROM pg_replication_slots WHERE slot_name LIKE ${`${slotPrefix}%`} AND active`.execute(db);
    if (rows.length === 0) break;
    await sleep(50);
  }
  await sql`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE ${`${slotPrefix}%`}`.execute(db);
  const { rows } = await sql<{ pubname: string }>`SELECT pubname FROM pg_publication WHERE pubname LIKE ${`${publicationPrefix}%`}`.execute(db);
  for (const { pubname } of rows) await sql`DROP PUBLICATION ${sql.id(pubname)}`.execute(db);
}

async function latency(db: Kysely<any>, relayDb: Kysely<any>, schema: string, mode: 'polling' | 'logical'): Promise<Latency> {
  const table = `latency_${mode}`;
  const slot = `${schema}_${table}`;
  const publication = `${slot}_pub`;
  await migrate(db, { dialect: 'postgres', schema, table, ...(mode === 'logical' ? { publication } : {}) });
  const broker = new RecordingBroker();
  const relay =
    mode === 'logical'
      ? createRelay({ db: relayDb, dialect: 'postgres', schema, table, broker, mode: 'logical', slot, publication })
      : createRelay({ db: relayDb, dialect: 'postgres', schema, table, broker });
  await relay.start();
  await sleep(500);
  const outbox = createOutbox({ dialect: 'postgres', schema, table, mode });
  const committed = new Map<string, number>();
  const measured: string[] = [];
  const pending = new Set<Promise<void>>();
  const interval = 1000 / RATE_HZ;
  const total = Math.round((WARMUP_MS + LATENCY_MS) / interval);
  const start = performance.now();
  for (let n = 0; n < total; ) {
    while (n < total && start + n * interval <= performance.now()) {
      const index = n++;
      const done = db
        .transaction()
        .execute(async (trx) => {
          const result = await outbox.enqueue(trx, { topic: 'orders', key: `k${index % KEYS}`, payload: { index } });
          // From the moment COMMIT is sent: a streaming relay may publish before the producer hears its commit back.
          committed.set(result.id, performance.now());
          return result;
        })
        .then((result) => {
          if (index * interval >= WARMUP_MS) measured.push(result.id);
        })
        .finally(() => pending.delete(done));
      pending.add(done);
    }
    await sleep(Math.max(0, start + n * interval - performance.now()));
  }
  await Promise.all([...pending]);
  const deadline = performance.now() + 10_000;
  while (measured.some((id) => !broker.acks.has(id)) && performance.now() < deadline) await sleep(10);
  await relay.stop({ drainMs: 1000 });
  if (mode === 'logical') await dropLogical(db, slot, publication);
  const latencies = Float64Array.from(measured.flatMap((id) => (broker.acks.has(id) ? [broker.acks.get(id)! - committed.get(id)!] : []))).sort();
  const result = { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), missing: measured.length - latencies.length };
  progress(`${mode}: p50 ${ms(result.p50)} ms, p99 ${ms(result.p99)} ms, ${result.missing} unacknowledged`);
  return result;
}

/** A streamed backlog of BACKLOG messages drained by the given number of partitions (slots); msg/s. */
async function drain(
  db: Kysely<any>,
  relayDb: Kysely<any>,
  schema: string,
  partitions: number,
  round: number | string,
  backlog = BACKLOG,
): Promise<number> {
  const table = `drain_${partitions}_${round}`;
  const slot = `${schema}_${table}`;
  const publication = `${slot}_pub`;
  await migrate(db, { dialect: 'postgres', schema, table, publication, partitions });
  const names = tableNames(table, schema);
  for (let i = 0; i < partitions; i++) await ensureSlot(db, partitions === 1 ? slot : `${slot}_${i}`, names);
  const outbox = createOutbox({ dialect: 'postgres', schema, table, mode: 'logical' });
  for (let startAt = 0; startAt < backlog; startAt += 1000) {
    if (startAt % 100_000 === 0 && startAt > 0) progress(`enqueued ${count(startAt)} of ${count(backlog)}`);
    await db.transaction().execute((trx) =>
      outbox.enqueue(trx, Array.from({ length: 1000 }, (_, i) => ({ topic: 'orders', key: `k${(startAt + i) % KEYS}`, payload: { n: startAt + i } }))),
    );
  }
  await sql`CHECKPOINT`.execute(db);
  let published = 0;
  const broker: Broker = {
    name: 'counting',
    async publish(messages) {
      published += messages.length;
      return messages.map(() => ({ status: 'ok' as const }));
    },
  };
  const relays = (partitions === 1 ? [1] : Array.from({ length: partitions }, () => partitions)).map(() =>
    createRelay({ db: relayDb, dialect: 'postgres', schema, table, broker, mode: 'logical', slot, publication, partitions }),
  );
  const began = performance.now();
  await Promise.all(relays.map((relay) => relay.start()));
  while (published < backlog && performance.now() - began < 300_000) await sleep(5);
  const seconds = (performance.now() - began) / 1000;
  await Promise.all(relays.map((relay) => relay.stop({ drainMs: 1000 })));
  await dropLogical(db, slot, publication);
  const rate = Math.min(published, backlog) / seconds;
  progress(`${count(backlog)} messages, ${partitions} partition(s), ${round}: ${count(rate)} msg/s`);
  return rate;
}

export async function benchLogical(): Promise<string> {
  const target = targets()[0]!;
  const date = new Date();
  return withScratchSchema(target, { poolSize: 20, progress }, async (db, schema) => {
    const facts = await serverFacts(target, db);
    const relayDb = connect(target, { poolSize: 10 });
    try {
      const polling = await latency(db, relayDb, schema, 'polling');
      const logical = await latency(db, relayDb, schema, 'logical');
      const one: number[] = [];
      const four: number[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        one.push(await drain(db, relayDb, schema, 1, round));
        four.push(await drain(db, relayDb, schema, 4, round));
      }
      const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
      const scale = mean(four) / mean(one);
      const small = await drain(db, relayDb, schema, 1, 'small', SMALL_BACKLOG);
      const big = await drain(db, relayDb, schema, 1, 'big', BIG_BACKLOG);
      return [
        '## Logical relay',
        '',
        ...machineFacts('npm run bench -- logical', date),
        `- PostgreSQL: ${facts.version} (${facts.durability})`,
        '',
        `Commit→ack latency (from the moment the producer sends COMMIT): producers commit one keyed message per transaction (${KEYS} keys) at a steady ${RATE_HZ} msg/s for ${LATENCY_MS / 1000} s (after ${WARMUP_MS / 1000} s of warm-up), a relay with default options and a broker that acknowledges at once. Partitions: ${count(BACKLOG)} messages enqueued while the slots exist (so they are streamed, not backfilled), then drained by one slot, and by 4 slots (\`partitions: 4\`, 4 relays in this process); rounds alternate. Backlog: ${count(SMALL_BACKLOG)} and ${count(BIG_BACKLOG)} messages written while no relay ran, each drained whole by one relay.`,
        '',
        '| Figure | Polling relay | Logical relay | Goal (logical) | Verdict |',
        '|---|---:|---:|---|---|',
        `| commit→ack p50 | ${ms(polling.p50)} ms | ${ms(logical.p50)} ms | ≤ ${GOALS.p50} ms | ${logical.p50 <= GOALS.p50 ? 'met' : '**missed**'} |`,
        `| commit→ack p99 | ${ms(polling.p99)} ms | ${ms(logical.p99)} ms | ≤ ${GOALS.p99} ms | ${logical.p99 <= GOALS.p99 ? 'met' : '**missed**'} |`,
        `| unacknowledged after 10 s | ${polling.missing} | ${logical.missing} | 0 | ${logical.missing === 0 ? 'met' : '**missed**'} |`,
        `| streamed backlog, 1 slot | — | ${count(mean(one))} msg/s (${one.map(count).join(', ')}) | — | — |`,
        `| streamed backlog, 4 partitions × 4 relays | — | ${count(mean(four))} msg/s (${four.map(count).join(', ')}) | — | — |`,
        `| 4 partitions / 1 | — | **${ratio(scale)}** | ≥ ${GOALS.partitions} | ${scale >= GOALS.partitions ? 'met' : '**missed**'} |`,
        `| streamed backlog of ${count(SMALL_BACKLOG)} / of ${count(BIG_BACKLOG)}, 1 slot | — | ${count(small)} / ${count(big)} msg/s | — | — |`,
        `| ${count(BIG_BACKLOG)} backlog / ${count(SMALL_BACKLOG)} | — | **${ratio(big / small)}** | ≥ ${GOALS.backlog} | ${big / small >= GOALS.backlog ? 'met' : '**missed**'} |`,
        '',
      ].join('\n');
    } finally {
      await relayDb.destroy();
    }
  });
}
