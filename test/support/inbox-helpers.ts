import { sql, type Kysely } from 'kysely';
import type { EventEmitter } from 'node:events';
import type { InboxConsumerEvents } from '../../src/dedupe/consumers/core.js';
import { expect } from 'vitest';
import {
  createInbox,
  migrateInbox,
  type Inbox,
  type InboxMessage,
  type NewDeadLetter,
  type ProcessResult,
} from '../../src/index.js';
import type { Harness } from './harness.js';
import { waitFor } from './relay-helpers.js';

/**
 * The inbox on a harness's schema, plus a business table `effects` (id, times): a handler's effect adds one to its
 * message's row, so an effect applied twice shows up as times = 2 instead of hiding behind a primary key.
 */
export async function setUpInbox(h: Harness): Promise<Inbox> {
  await migrateInbox(h.db, { dialect: h.dialect, schema: h.schema });
  const effects = sql.id(h.schema, 'effects');
  await (
    h.dialect === 'postgres'
      ? sql`CREATE TABLE ${effects} (id text PRIMARY KEY, times integer NOT NULL)`
      : sql`CREATE TABLE ${effects} (id VARCHAR(255) PRIMARY KEY, times INT NOT NULL) ENGINE=InnoDB`
  ).execute(h.db);
  return createInbox({ dialect: h.dialect, schema: h.schema });
}

/** The business effect of one message, in the given transaction. */
export async function applyEffect(h: Harness, trx: Kysely<any>, id: string): Promise<void> {
  const effects = sql.id(h.schema, 'effects');
  await (
    h.dialect === 'postgres'
      ? sql`INSERT INTO ${effects} AS e (id, times) VALUES (${id}, 1) ON CONFLICT (id) DO UPDATE SET times = e.times + 1`
      : sql`INSERT INTO ${effects} (id, times) VALUES (${id}, 1) ON DUPLICATE KEY UPDATE times = times + 1`
  ).execute(trx);
}

/** id → how many times its effect was applied. */
export async function effects(h: Harness): Promise<Map<string, number>> {
  const { rows } = await sql<{ id: string; times: number }>`SELECT id, times FROM ${sql.id(h.schema, 'effects')}`.execute(h.db);
  return new Map(rows.map((row) => [row.id, Number(row.times)]));
}

/** (consumer, message id) pairs recorded in the inbox. */
export async function inboxRows(h: Harness, table = 'txoutbox_inbox'): Promise<string[]> {
  const { rows } = await sql<{ consumer: string | Buffer; message_id: string | Buffer }>`
    SELECT consumer, message_id FROM ${sql.id(h.schema, table)} ORDER BY consumer, message_id`.execute(h.db);
  return rows.map((row) => `${String(row.consumer)}/${String(row.message_id)}`);
}

export async function clearInbox(h: Harness): Promise<void> {
  for (const table of ['txoutbox_inbox', 'txoutbox_inbox_dead', 'effects']) {
    await sql`DELETE FROM ${sql.id(h.schema, table)}`.execute(h.db);
  }
}

/**
 * How many sessions are inside a statement on this harness's inbox table, blocked behind another transaction:
 * the proof that concurrent deliveries really queued behind the first, rather than happening to run one after
 * another. PostgreSQL reports the lock wait itself; MariaDB's INNODB_TRX view is a cache that lags, so there a
 * session still executing its INSERT (a single-row insert that would otherwise finish at once) is counted: as a
 * `Query` (text protocol, mysql2) or an `Execute` (a prepared statement: Prisma's MariaDB adapter, the mariadb driver).
 */
export async function lockWaiters(h: Harness): Promise<number> {
  const pattern = `%${h.schema}%txoutbox_inbox%`;
  const { rows } =
    h.dialect === 'postgres'
      ? await sql<{ n: string }>`
          SELECT count(*) AS n FROM pg_stat_activity
          WHERE wait_event_type = 'Lock' AND state = 'active' AND query LIKE ${pattern}`.execute(h.db)
      : await sql<{ n: number }>`
          SELECT count(*) AS n FROM information_schema.processlist
          WHERE command IN ('Query', 'Execute') AND info LIKE 'INSERT INTO%' AND info LIKE ${pattern} AND id <> connection_id()`.execute(
          h.db,
        );
  return Number(rows[0]!.n);
}

export async function waitForLockWaiters(h: Harness, count: number): Promise<void> {
  await waitFor(async () => (await lockWaiters(h)) === count, 20_000, `${count} transactions waiting on the inbox row lock`);
}

/** A promise with its resolve function, to hold a transaction open until the test lets it go. */
export function gate(): { opened: Promise<void>; open: () => void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

/** Records what a consumer helper reports, event by event (errors are swallowed: the tests provoke them). */
export function observe(consumer: EventEmitter<InboxConsumerEvents>) {
  const seen = {
    processed: [] as InboxMessage[],
    duplicate: [] as InboxMessage[],
    retrying: [] as string[],
    dead: [] as NewDeadLetter[],
  };
  consumer.on('processed', (m) => seen.processed.push(m));
  consumer.on('duplicate', (m) => seen.duplicate.push(m));
  consumer.on('retrying', (e) => seen.retrying.push(e.message.id));
  consumer.on('dead', (letter) => seen.dead.push(letter));
  consumer.on('error', () => undefined);
  return seen;
}

/**
 * 20 concurrent deliveries of one id, each in a transaction of its own (`transaction` opens one, of whatever kind),
 * must apply its effect once: one delivery runs its handler, the other 19 are duplicates and none fails. The first
 * holds its transaction open after recording the id, so the other 19 provably start while it is uncommitted (they
 * are let go only once all 19 wait on its row lock).
 */
export async function expectOneEffectOfConcurrentDeliveries<Trx>(
  h: Harness,
  inbox: Inbox,
  transaction: <T>(work: (trx: Trx) => Promise<T>) => Promise<T>,
  applyEffectIn: (trx: Trx, id: string) => Promise<void>,
): Promise<void> {
  const hold = gate();
  const recorded = gate();
  const delivery = { consumer: 'billing', messageId: 'm-20' };
  const run = (trx: Trx, handler: (t: Trx) => Promise<void>) =>
    inbox.processOnce(trx as never, delivery, (t) => handler(t as Trx)) as Promise<ProcessResult<void>>;
  const first = transaction((trx) =>
    run(trx, async (t) => {
      await applyEffectIn(t, 'm-20');
      recorded.open();
      await hold.opened;
    }),
  );
  await recorded.opened;
  let handlersRun = 0;
  const others = Array.from({ length: 19 }, () =>
    transaction((trx) =>
      run(trx, async (t) => {
        handlersRun++;
        await applyEffectIn(t, 'm-20');
      }),
    ),
  );
  await waitForLockWaiters(h, 19);
  hold.open();
  const settled = await Promise.allSettled([first, ...others]);
  expect(settled.filter((s) => s.status === 'rejected')).toEqual([]);
  const results = settled.map((s) => (s as PromiseFulfilledResult<ProcessResult<void>>).value);
  expect(results[0]).toEqual({ duplicate: false, result: undefined });
  expect(results.slice(1)).toEqual(Array.from({ length: 19 }, () => ({ duplicate: true })));
  expect(handlersRun).toBe(0);
  expect(await effects(h)).toEqual(new Map([['m-20', 1]]));
}
