import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { MemoryBroker } from '../../src/index.js';
import { createHarness, type Harness } from '../support/harness.js';
import { drain, testRelay } from '../support/relay-helpers.js';

/**
 * The relay's own bookkeeping commits without waiting for the WAL flush (asyncCommit, on by default), while the
 * producers' commits keep theirs. Counted in pg_stat_wal: a serial file, so no other test's commits are counted.
 */
describe('relay commits on postgres', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness('postgres');
  });
  afterAll(async () => h?.destroy());

  /** WAL flushes (fdatasync calls) while a relay on its own pool claims and completes 60 messages one by one. */
  async function flushesWhileRelaying(asyncCommit: boolean): Promise<number> {
    await h.db.transaction().execute((trx) =>
      h.outbox.enqueue(
        trx,
        Array.from({ length: 60 }, (_, i) => ({ topic: 't', payload: i })),
      ),
    );
    const db = new Kysely<any>({
      dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: inject('pgUrl'), max: 1 }) }),
    });
    const before = await walSyncs();
    const broker = new MemoryBroker();
    await drain(testRelay({ ...h, db }, broker, { batchSize: 1, asyncCommit }));
    // A backend reports its WAL statistics when it exits, so closing the pool makes them visible now.
    await db.destroy();
    expect(broker.accepted).toHaveLength(60);
    expect(await h.rows()).toEqual([]);
    return (await walSyncs()) - before;
  }

  const walSyncs = async () => {
    await sql`SELECT pg_stat_clear_snapshot()`.execute(h.db);
    const { rows } = await sql<{ wal_sync: string }>`SELECT wal_sync FROM pg_stat_wal`.execute(h.db);
    return Number(rows[0]!.wal_sync);
  };

  it('waits for a WAL flush per claim and completion only when asyncCommit is off', async (context) => {
    const { rows } = await sql<{ fsync: string }>`SHOW fsync`.execute(h.db);
    if (rows[0]!.fsync !== 'on') return context.skip('this PostgreSQL runs with fsync=off: no commit waits for a flush');
    const synchronous = await flushesWhileRelaying(false);
    const relaxed = await flushesWhileRelaying(true);
    // 60 claims and 60 completions: each synchronous commit flushes; asynchronous ones leave it to the WAL writer.
    expect(synchronous).toBeGreaterThanOrEqual(100);
    expect(relaxed).toBeLessThan(synchronous / 4);
  });
});
