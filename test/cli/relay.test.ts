import { randomBytes } from 'node:crypto';
import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import mysql from 'mysql2';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createOutbox, type DialectName, type Outbox } from '../../src/index.js';
import { AMQP_URL, consumedQueue, type QueueConsumer } from '../support/brokers/rabbitmq-fixture.js';
import { cliWorkspace, metricValue, type CliWorkspace } from '../support/cli.js';
import { waitFor } from '../support/relay-helpers.js';

/** One outbox table the sidecar relays, and a producer writing into it from this test process. */
interface Table {
  database: string;
  dialect: DialectName;
  db: Kysely<any>;
  schema: string;
  table: string;
  topic: string;
  outbox: Outbox;
}

describe('txoutbox relay (the CLI as a child process, PostgreSQL + MariaDB, RabbitMQ)', () => {
  const suffix = randomBytes(4).toString('hex');
  const pgSchema = `cli_pg_${suffix}`;
  const myDatabase = `cli_my_${suffix}`;
  let pgDb: Kysely<any>;
  let myDb: Kysely<any>;
  let cli: CliWorkspace;
  let queue: { queue: string; consumer: QueueConsumer; close(): Promise<void> };
  let tables: Table[];

  beforeAll(async () => {
    pgDb = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: inject('pgUrl') }) }) });
    myDb = new Kysely<any>({ dialect: new MysqlDialect({ pool: mysql.createPool({ uri: inject('mysqlUrl'), timezone: 'Z' }) }) });
    queue = await consumedQueue('txoutbox-cli');
    cli = await cliWorkspace();
    // Two databases of different kinds, two outbox tables in each: one per topic in PostgreSQL, a shared one in MariaDB.
    const make = (
      database: string,
      dialect: DialectName,
      db: Kysely<any>,
      schema: string,
      table: string,
      topic: string,
    ): Table => ({
      database,
      dialect,
      db,
      schema,
      table,
      topic,
      outbox: createOutbox({ dialect, schema, table }),
    });
    tables = [
      make('orders-pg', 'postgres', pgDb, pgSchema, 'orders_outbox', `orders.created.${suffix}`),
      make('orders-pg', 'postgres', pgDb, pgSchema, 'payments_outbox', `payments.settled.${suffix}`),
      make('shop-maria', 'mysql', myDb, myDatabase, 'txoutbox', `carts.checked_out.${suffix}`),
      make('shop-maria', 'mysql', myDb, myDatabase, 'audit_outbox', `audit.logged.${suffix}`),
    ];
    await cli.writeConfig({
      databases: [
        {
          name: 'orders-pg',
          dialect: 'postgres',
          url: '${TEST_PG_URL}',
          schema: pgSchema,
          tables: [
            { table: 'orders_outbox', topics: [tables[0]!.topic] },
            { table: 'payments_outbox', topics: [tables[1]!.topic] },
          ],
        },
        {
          name: 'shop-maria',
          dialect: 'mysql',
          url: '${TEST_MYSQL_URL}',
          schema: myDatabase,
          tables: [{ table: 'txoutbox' }, { table: 'audit_outbox' }],
        },
      ],
      brokers: {
        rabbit: {
          type: 'rabbitmq',
          url: '${TEST_AMQP_URL}',
          // Every topic of this test goes to the test's queue through the default exchange.
          routes: Object.fromEntries(tables.map((t) => [t.topic, { exchange: '', routingKey: queue.queue }])),
        },
        spare: { type: 'memory' },
      },
      routes: { '*': 'rabbit', 'nothing.here.*': 'spare' },
      relay: { batchSize: 20, pollIntervalMs: 200 },
      http: { port: 0 },
      metrics: { backlogIntervalMs: 200 },
    });
  });

  afterAll(async () => {
    await cli?.cleanup();
    await queue?.close();
    await sql`DROP SCHEMA IF EXISTS ${sql.id(pgSchema)} CASCADE`.execute(pgDb);
    await sql`DROP DATABASE IF EXISTS ${sql.id(myDatabase)}`.execute(myDb);
    await pgDb?.destroy();
    await myDb?.destroy();
  });

  const env = () => ({ TEST_PG_URL: inject('pgUrl'), TEST_MYSQL_URL: inject('mysqlUrl'), TEST_AMQP_URL: AMQP_URL });
  const commit = (t: Table, count: number, prefix: string) =>
    t.db.transaction().execute(async (trx) => {
      const results = await t.outbox.enqueue(
        trx,
        Array.from({ length: count }, (_, i) => ({ topic: t.topic, key: `${prefix}-${i % 3}`, payload: { i } })),
      );
      return results.map((r) => r.id);
    });
  const received = () => new Set(queue.consumer.received().map((m) => m.id));
  const pendingIn = async (t: Table) => {
    const { rows } = await sql<{ n: string | number }>`
      SELECT count(*) AS n FROM ${sql.id(t.schema, t.table)} WHERE state = 'pending'`.execute(t.db);
    return Number(rows[0]!.n);
  };

  it('migrate creates every configured table in both databases, and a second run changes nothing', async () => {
    const first = await cli.run(['migrate'], env());
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    for (const t of tables)
      expect(first.stdout).toContain(
        `${t.database}/${t.schema}.${t.table}: outbox applied 001_create_outbox, 002_relay_sequences_keys`,
      );
    const second = await cli.run(['migrate'], env());
    expect(second.code).toBe(0);
    expect(second.stdout.match(/up to date/g)).toHaveLength(4);
  });

  it('relays every table of both databases to RabbitMQ, and /metrics counts exactly what was published', async () => {
    const relay = cli.spawn(['relay'], env());
    const http = await relay.httpUrl();
    expect(new URL(http).hostname).toBe('127.0.0.1');
    const committed = new Map<Table, string[]>();
    for (const [index, t] of tables.entries()) committed.set(t, await commit(t, 10 + index * 5, `k${index}`));
    // Rolled back: never published, never counted.
    await pgDb
      .transaction()
      .execute(async (trx) => {
        await tables[0]!.outbox.enqueue(trx, { topic: tables[0]!.topic, payload: 'rolled back' });
        throw new Error('rollback');
      })
      .catch(() => {});
    const all = [...committed.values()].flat();
    await waitFor(() => all.every((id) => received().has(id)), 30_000, 'every committed message to reach RabbitMQ');
    for (const t of tables) await waitFor(async () => (await pendingIn(t)) === 0, 10_000, `${t.table} to be drained`);
    expect(received().size).toBe(all.length);

    const total = () =>
      fetch(`${http}/metrics`)
        .then((r) => r.text())
        .then((text) => tables.reduce((n, t) => n + metricValue(text, 'txoutbox_published_total', labelsOf(t)), 0));
    // The counter moves right after each row is marked sent; wait for the last of those, then compare per table.
    await waitFor(async () => (await total()) >= all.length, 10_000, 'the published counters to catch up');
    const text = await (await fetch(`${http}/metrics`)).text();
    for (const t of tables) {
      const count = committed.get(t)!.length;
      expect(metricValue(text, 'txoutbox_published_total', labelsOf(t)), `published ${t.table}`).toBe(count);
      expect(metricValue(text, 'txoutbox_enqueued_total', labelsOf(t)), `enqueued ${t.table}`).toBe(count);
      expect(metricValue(text, 'txoutbox_dead_total', labelsOf(t))).toBe(0);
      expect(metricValue(text, 'txoutbox_publish_latency_seconds_count', labelsOf(t))).toBe(count);
    }
    expect(text).toContain('txoutbox_backlog_messages');
    expect(text).toContain('txoutbox_oldest_pending_age_seconds');

    const health = await fetch(`${http}/healthz`);
    expect(health.status).toBe(200);
    const ready = await fetch(`${http}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({
      ready: true,
      checks: [
        { kind: 'database', name: 'orders-pg', ok: true },
        { kind: 'database', name: 'shop-maria', ok: true },
        { kind: 'broker', name: 'rabbit', ok: true },
        { kind: 'broker', name: 'spare', ok: true },
      ],
    });

    // status reads the same tables: nothing pending, and the sends of the last minute (kept by the default retention).
    const status = await cli.run(['status', '--json'], env());
    expect(status.code).toBe(0);
    const report = JSON.parse(status.stdout) as {
      tables: { database: string; table: string; topic: string; pending: number; sentLastMinute: number; dead: number }[];
    };
    for (const t of tables) {
      expect(report.tables.find((r) => r.topic === t.topic)).toMatchObject({
        database: t.database,
        table: `${t.schema}.${t.table}`,
        pending: 0,
        dead: 0,
        sentLastMinute: committed.get(t)!.length,
      });
    }

    relay.kill('SIGTERM');
    const exit = await relay.exited;
    expect(exit.code).toBe(0);
    expect(relay.logs().some((l) => l.msg === 'stopped cleanly')).toBe(true);
  });

  it('on SIGTERM drains and exits 0 while messages flow; every committed message was received or is still pending, and a new relay sends the rest', async () => {
    const t = tables[2]!; // MariaDB: polling, no LISTEN
    const u = tables[0]!; // PostgreSQL with LISTEN
    const relay = cli.spawn(['relay'], env());
    await relay.httpUrl();
    const committed: string[] = [];
    let producing = true;
    const producer = (async () => {
      for (let round = 0; producing && round < 400; round++) {
        committed.push(...(await commit(t, 5, `drain-${round}`)), ...(await commit(u, 5, `drain-${round}`)));
      }
    })();
    await waitFor(() => received().size > 0 && committed.some((id) => received().has(id)), 30_000, 'messages to flow');
    relay.kill('SIGTERM');
    const exit = await relay.exited;
    producing = false;
    await producer;
    expect(exit.code).toBe(0);
    expect(relay.logs().some((l) => l.msg === 'stopped cleanly')).toBe(true);

    // Nothing lost: each committed message either reached RabbitMQ or is still in its table, unsent.
    const unsent = new Set<string>();
    for (const table of [t, u]) {
      const { rows } = await sql<{ id: string | Buffer }>`
        SELECT id FROM ${sql.id(table.schema, table.table)} WHERE state = 'pending'`.execute(table.db);
      for (const row of rows) unsent.add(Buffer.isBuffer(row.id) ? row.id.toString('utf8') : row.id);
    }
    // A message the broker confirmed may still be on its way to the consumer: wait for those, then compare.
    const sent = committed.filter((id) => !unsent.has(id));
    await waitFor(() => sent.every((id) => received().has(id)), 10_000, 'confirmed messages to reach the consumer').catch(
      () => {},
    );
    const lost = sent.filter((id) => !received().has(id));
    expect(lost).toEqual([]);

    const again = cli.spawn(['relay'], env());
    await again.httpUrl();
    await waitFor(() => committed.every((id) => received().has(id)), 30_000, 'the new relay to send what was left');
    again.kill('SIGTERM');
    expect((await again.exited).code).toBe(0);
  });

  const labelsOf = (t: Table) => ({ database: t.database, table: `${t.schema}.${t.table}`, topic: t.topic });
});
