import { sql, type Kysely } from 'kysely';
import { createUlidGenerator } from '../src/outbox/ids.js';
import { createOutbox, migrate, type OutboxMessage, type OutgoingMessage } from '../src/index.js';
import type { Target } from './support.js';
import { ensureSlot } from '../src/relay/logical/slots.js';
import { tableNames } from '../src/dialects/identifiers.js';

/**
 * The workload the broker-facing benches share (brokers, scaling, pgboss): ~200-byte JSON order events, keys
 * round-robin over 1,000 customers, the library's own monotonic ULID ids, enqueued 1,000 per transaction.
 */

export const TOPIC = 'orders.created';
/** The workload's shape; BENCH_KEYS and BENCH_PAYLOAD_BYTES change it (e.g. 200 keys × 1 KB). */
export const KEYS = Number(process.env.BENCH_KEYS ?? 1000);
export const PAYLOAD_BYTES = Number(process.env.BENCH_PAYLOAD_BYTES ?? 200);
export const ENQUEUE_BATCH = 1000;

/** A type, not an interface: the outbox's JsonValue needs the implicit index signature. */
export type OrderEvent = {
  n: number;
  orderId: string;
  customer: string;
  total: number;
  currency: string;
  note: string;
};

/** One message of a round, in every form the runs need. */
export interface BenchMessage {
  id: string;
  key: string;
  body: OrderEvent;
  /** The bytes the outbox stores and the adapter publishes (UTF-8 JSON of body). */
  payload: Buffer;
  createdAt: Date;
}

/** The event numbered n, padded to PAYLOAD_BYTES of JSON; its key is its `customer`. */
export function orderEvent(n: number): OrderEvent {
  const key = `customer-${n % KEYS}`;
  const base = { n, orderId: `order-${n}`, customer: key, total: (n % 100_000) / 100, currency: 'EUR' };
  const pad = Math.max(0, PAYLOAD_BYTES - Buffer.byteLength(JSON.stringify({ ...base, note: '' })));
  return { ...base, note: 'x'.repeat(pad) };
}

/** The round's messages: fresh monotonic ULIDs (the library's own default ids), keys round-robin over KEYS. */
export function roundMessages(round: number, total: number): BenchMessage[] {
  const newId = createUlidGenerator();
  const createdAt = new Date();
  return Array.from({ length: total }, (_, i) => {
    const body = orderEvent(round * total + i);
    return { id: newId(), key: body.customer, body, payload: Buffer.from(JSON.stringify(body), 'utf8'), createdAt };
  });
}

/** What the relay would hand the adapter for this message on its first attempt. */
export function outgoing(message: BenchMessage): OutgoingMessage {
  return {
    id: message.id,
    topic: TOPIC,
    key: message.key,
    payload: message.payload,
    contentType: 'application/json',
    headers: {},
    attempt: 1,
    createdAt: message.createdAt,
  };
}

/** Enqueues the messages with the library into a fresh outbox table, ENQUEUE_BATCH per transaction (not timed). */
export async function fillTable(
  target: Target,
  db: Kysely<any>,
  schema: string,
  table: string,
  messages: readonly BenchMessage[],
  /** For the logical relay: its publication and slot are made first, so the slot streams these messages. */
  logical: { slot: string; publication: string } | null = null,
): Promise<void> {
  await migrate(db, { dialect: target.dialect, schema, table, ...(logical === null ? {} : { publication: logical.publication }) });
  if (logical !== null) await ensureSlot(db, logical.slot, tableNames(table, schema));
  const outbox = createOutbox({ dialect: target.dialect, schema, table });
  for (let start = 0; start < messages.length; start += ENQUEUE_BATCH) {
    const batch: OutboxMessage[] = messages
      .slice(start, start + ENQUEUE_BATCH)
      .map((m) => ({ id: m.id, topic: TOPIC, key: m.key, payload: m.body }));
    await db.transaction().execute((trx) => outbox.enqueue(trx, batch));
  }
}

/** Rows in a table (the relay deletes what it sent, so 0 once it is done). */
export async function rowsIn(db: Kysely<any>, schema: string, table: string): Promise<number> {
  const { rows } = await sql<{ n: number | string }>`SELECT count(*) AS n FROM ${sql.id(schema, table)}`.execute(db);
  return Number(rows[0]?.n ?? 0);
}
