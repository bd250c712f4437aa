import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import mysql from 'mysql2';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { MemoryBroker, type DialectName } from '../../src/index.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';
import { testRelay, waitFor } from '../support/relay-helpers.js';

const APP = 'txoutbox-relay-under-test';

/** A pool only the relay uses, so its connections can be told apart and killed. */
function relayDatabase(dialect: DialectName, schema: string): Kysely<unknown> {
  if (dialect === 'postgres') {
    const pool = new pg.Pool({ connectionString: inject('pgUrl'), application_name: APP, max: 4 });
    // A client killed by the server emits 'error': the pool listens on idle ones, nobody on checked-out ones.
    // Without these listeners the process would crash; the failed query itself still rejects and is retried.
    pool.on('error', () => undefined);
    pool.on('connect', (client) => client.on('error', () => undefined));
    return new Kysely({ dialect: new PostgresDialect({ pool }) });
  }
  const url = new URL(inject('mysqlUrl'));
  url.pathname = `/${schema}`; // Its connections are the ones whose current database is the test's own.
  return new Kysely({
    dialect: new MysqlDialect({ pool: mysql.createPool({ uri: url.toString(), connectionLimit: 4, timezone: 'Z' }) }),
  });
}

async function killRelayConnections(h: Harness): Promise<number> {
  if (h.dialect === 'postgres') {
    const { rows } = await sql<{ killed: boolean }>`
      SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity WHERE application_name = ${APP}`.execute(h.db);
    return rows.length;
  }
  const { rows } = await sql<{ id: number }>`SELECT id FROM information_schema.processlist WHERE db = ${h.schema}`.execute(h.db);
  for (const { id } of rows) await sql`KILL ${sql.raw(String(Number(id)))}`.execute(h.db).catch(() => undefined);
  return rows.length;
}

describe.each(DIALECTS)('relay through database outages on %s', (dialect) => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness(dialect);
  });
  afterAll(async () => h?.destroy());

  it('delivers every message, in per-key order, while its database connections are killed mid-run', async () => {
    const broker = new MemoryBroker();
    const db = relayDatabase(dialect, h.schema);
    const relay = testRelay({ ...h, db: db as Kysely<any> }, broker, { batchSize: 20, leaseMs: 1500, publishTimeoutMs: 500 });
    const errors: Error[] = [];
    relay.on('error', (error) => errors.push(error));
    relay.start();
    const expected = new Map<string, string[]>();
    let killed = 0;
    let outages = 0;
    // The producer keeps committing batches until three outages have each broken a query the relay had in flight:
    // killing an idle pooled connection only makes the pool open a new one, which proves nothing.
    const produce = async (): Promise<void> => {
      for (let batch = 0; batch < 20 || outages < 3; batch++) {
        const messages = Array.from({ length: 50 }, (_, i) => ({
          id: `b${batch}-m${i}`,
          topic: 't',
          key: `k${i % 20}`,
          payload: i,
        }));
        await h.db.transaction().execute((trx) => h.outbox.enqueue(trx, messages));
        for (const m of messages) expected.set(m.key, [...(expected.get(m.key) ?? []), m.id]);
        await new Promise((resolve) => setTimeout(resolve, 30));
      }
    };
    const producing = produce();
    try {
      while (outages < 3) {
        const seen = errors.length;
        await waitFor(() => broker.accepted.length > outages * 100, 10_000, 'progress before the next outage');
        await waitFor(
          async () => {
            killed += await killRelayConnections(h);
            return errors.length > seen;
          },
          20_000,
          'a kill that breaks a query the relay has in flight',
        );
        outages++;
      }
      await producing;
      const total = [...expected.values()].reduce((n, ids) => n + ids.length, 0);
      await waitFor(
        () => new Set(broker.accepted.map((m) => m.id)).size === total,
        30_000,
        `all ${total} messages after the outages`,
      );
    } finally {
      outages = 3; // Ends the producer if an assertion above threw.
      await producing.catch(() => undefined);
      await relay.stop({ drainMs: 1000 });
      await db.destroy();
    }
    expect(killed).toBeGreaterThan(0);
    expect(errors.length).toBeGreaterThan(0);
    for (const [key, order] of expected) {
      const firstSeen = [
        ...new Set(
          broker
            .received()
            .filter((m) => m.key === key)
            .map((m) => m.id),
        ),
      ];
      expect(firstSeen).toEqual(order);
    }
    expect(await h.rows()).toEqual([]);
  });
});
