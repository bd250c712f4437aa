import { createHash } from 'node:crypto';
import {
  DummyDriver,
  Kysely,
  MysqlAdapter,
  MysqlIntrospector,
  MysqlQueryCompiler,
  sql,
  type RawBuilder,
} from 'kysely';
import { planBatch, type BatchPlan, type PlannedMessage } from '../outbox/batch.js';
import { SchemaError } from '../errors.js';
import type { Dialect } from './dialect.js';
import type { SqlExecutor } from './executor.js';
import type { TableNames } from './identifiers.js';

/** Compiles SQL for MySQL/MariaDB without a connection; execution happens on the caller's transaction. */
const compiler = new Kysely<unknown>({
  dialect: {
    createAdapter: () => new MysqlAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (db) => new MysqlIntrospector(db),
    createQueryCompiler: () => new MysqlQueryCompiler(),
  },
});

export function qualified(names: TableNames, table: string): RawBuilder<unknown> {
  return names.schema === null ? sql.id(table) : sql.id(names.schema, table);
}

const ER_DUP_ENTRY = 1062;
/** How many times a batch is re-planned after a concurrent writer committed one of its ids first. */
const MAX_DUPLICATE_ROUNDS = 5;

/** DATETIME(6) text in UTC, so the value never depends on the connection's time zone setting. */
function utcDatetime(date: Date): string {
  return date.toISOString().replace('T', ' ').replace('Z', '');
}

/** How many rows `<table>_key_locks` holds (the migration fills them all). */
export const KEY_LOCK_STRIPES = 4096;

export function keyStripe(key: string): number {
  return createHash('sha1').update(key).digest().readUInt16BE(0) % KEY_LOCK_STRIPES;
}

/**
 * Locks the stripes of the batch's keys until the caller commits, in ascending order so producers cannot
 * deadlock on them. The rows exist already, so these are plain record locks. Everything this producer does to
 * its keys' rows, and the AUTO_INCREMENT values its insert takes, come after: within a key, seq order is commit
 * order.
 */
function lockStripesStatement(names: TableNames, stripes: number[]) {
  return sql<{ stripe: number }>`
    SELECT stripe FROM ${qualified(names, names.keyLocks)} WHERE stripe IN (${sql.join(stripes)})
    ORDER BY stripe FOR UPDATE`;
}

/** Adds the batch's counts to its keys' rows (creating them), under the stripe locks. */
function countKeysStatement(names: TableNames, keys: { key: string; count: number }[]) {
  const rows = keys.map(({ key, count }) => sql`(${Buffer.from(key)}, ${count})`);
  return sql`
    INSERT INTO ${qualified(names, names.keys)} (msg_key, pending) VALUES ${sql.join(rows)}
    ON DUPLICATE KEY UPDATE pending = pending + VALUES(pending)`;
}

/**
 * The key counts after this batch's upsert. A plain (consistent) read: it sees this transaction's own upsert,
 * which was itself applied to the latest committed row, and it takes no locks that could deadlock.
 */
function keyCountsStatement(names: TableNames, keys: string[]) {
  return sql<{ msg_key: Buffer; pending: number | string }>`
    SELECT msg_key, pending FROM ${qualified(names, names.keys)}
    WHERE msg_key IN (${sql.join(keys.map((key) => Buffer.from(key)))})`;
}

/**
 * Inserts the messages in the caller's order with one multi-row INSERT (AUTO_INCREMENT follows the row order).
 * A message heads its key (`ready`) when it is the first of the batch and the key had nothing unsent before.
 */
function insertStatement(names: TableNames, messages: PlannedMessage[], pendingByKey: Map<string, number>) {
  const rows = messages.map((m) => {
    const ready = m.key === null || (m.keyRank === 1 && pendingByKey.get(m.key) === m.keyCount);
    const notBefore =
      m.availableAt === null
        ? sql`UTC_TIMESTAMP(6) + INTERVAL ${m.delayMs * 1000} MICROSECOND`
        : sql`CAST(${utcDatetime(m.availableAt)} AS DATETIME(6))`;
    return sql`(${Buffer.from(m.id)}, ${m.topic}, ${m.key === null ? null : Buffer.from(m.key)}, ${m.payload},
      ${m.contentType}, ${m.headers}, ${ready}, ${notBefore}, UTC_TIMESTAMP(6))`;
  });
  return sql`
    INSERT INTO ${qualified(names, names.table)}
      (id, topic, msg_key, payload, content_type, headers, ready, next_attempt_at, created_at)
    VALUES ${sql.join(rows)}`;
}

/** Ids of the batch that already exist. A locking read: it sees rows committed after this transaction's snapshot and waits for uncommitted ones. */
function existingIdsStatement(names: TableNames, messages: PlannedMessage[]) {
  return sql<{ id: Buffer | string }>`
    SELECT id FROM ${qualified(names, names.table)}
    WHERE id IN (${sql.join(messages.map((m) => Buffer.from(m.id)))}) LOCK IN SHARE MODE`;
}

function giveBackCountsStatement(names: TableNames, dropped: Map<string, number>) {
  const keys = [...dropped.keys()];
  const cases = keys.map((key) => sql`WHEN ${Buffer.from(key)} THEN ${dropped.get(key)}`);
  return sql`
    UPDATE ${qualified(names, names.keys)} SET pending = pending - CASE msg_key ${sql.join(cases, sql` `)} END
    WHERE msg_key IN (${sql.join(keys.map((key) => Buffer.from(key)))})`;
}

async function readKeyCounts(run: SqlExecutor, names: TableNames, messages: PlannedMessage[]): Promise<Map<string, number>> {
  const keys = [...new Set(messages.flatMap((m) => (m.key === null ? [] : [m.key])))];
  if (keys.length === 0) return new Map();
  const { rows } = await run(keyCountsStatement(names, keys).compile(compiler));
  return new Map(rows.map((row) => [Buffer.from(row.msg_key as Buffer).toString('utf8'), Number(row.pending)]));
}

function isDuplicateKeyError(error: unknown): boolean {
  return (error as { errno?: number } | null)?.errno === ER_DUP_ENTRY;
}

export const mysqlDialect: Dialect = {
  name: 'mysql',

  async enqueue(run: SqlExecutor, names: TableNames, plan: BatchPlan): Promise<Set<string>> {
    if (plan.keys.length > 0) {
      const stripes = [...new Set(plan.keys.map(({ key }) => keyStripe(key)))].sort((a, b) => a - b);
      const { rows } = await run(lockStripesStatement(names, stripes).compile(compiler));
      if (rows.length !== stripes.length) {
        throw new SchemaError(`The key lock table ${names.keyLocks} is missing rows (found ${rows.length} of ${stripes.length}).`);
      }
      await run(countKeysStatement(names, plan.keys).compile(compiler));
    }
    let messages = plan.messages;
    for (let round = 1; ; round++) {
      if (messages.length === 0) return new Set();
      const pendingByKey = await readKeyCounts(run, names, messages);
      try {
        // A failed statement is rolled back on its own in InnoDB; the caller's transaction goes on.
        await run(insertStatement(names, messages, pendingByKey).compile(compiler));
        return new Set(messages.map((m) => m.id));
      } catch (error) {
        if (!isDuplicateKeyError(error) || round === MAX_DUPLICATE_ROUNDS) throw error;
      }
      const { rows } = await run(existingIdsStatement(names, messages).compile(compiler));
      const existing = new Set(rows.map((row) => Buffer.from(row.id as Buffer | string).toString('utf8')));
      const dropped = new Map<string, number>();
      for (const m of messages) {
        if (existing.has(m.id) && m.key !== null) dropped.set(m.key, (dropped.get(m.key) ?? 0) + 1);
      }
      if (dropped.size > 0) await run(giveBackCountsStatement(names, dropped).compile(compiler));
      // Re-plan what is left: key ranks and counts must describe only the messages actually written.
      messages = planBatch(messages.filter((m) => !existing.has(m.id))).messages;
    }
  },
};
