import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { tableNames } from '../../src/dialects/identifiers.js';
import { createRelay, migrate, MemoryBroker, type LogicalRelay, type OutboxMessage } from '../../src/index.js';
import { Marker } from '../../src/relay/logical/marker.js';
import { createPostgresHarnessAt, type Harness } from '../support/harness.js';
import { dropSlotsAndPublications } from '../support/logical-cleanup.js';
import { commitThatWaits, syncStandbyPostgres, type WaitingCommit } from '../support/sync-standby.js';

/**
 * The logical relay and the moment between a commit reaching the slot and becoming visible (issue #24, items 1 and
 * 2). PostgreSQL streams a transaction once its commit record is flushed; with a synchronous standby its COMMIT
 * then waits, and its rows stay invisible to every other session, for as long as the standby takes. This file runs
 * on a second cluster whose standby never answers (test/support/sync-standby-pg.sh), so that window lasts until the
 * test ends it (pg_cancel_backend: the commit then completes locally).
 */
describe('the logical relay and commits not yet visible (synchronous standby)', () => {
  let cluster: { url: string; localUrl: string };
  let h: Harness;
  let observer: pg.Pool;
  let relays: LogicalRelay[] = [];
  let waiting: WaitingCommit[] = [];
  let slot: string;
  let publication: string;
  let round = 0;

  beforeAll(async () => {
    cluster = syncStandbyPostgres();
    h = await createPostgresHarnessAt(cluster.localUrl);
    observer = new pg.Pool({ connectionString: cluster.localUrl, max: 2 });
  }, 120_000);
  afterEach(async () => {
    // A failed test must not leave a producer waiting for ever, nor a relay streaming.
    await Promise.all(waiting.map((commit) => commit.release().catch(() => undefined)));
    waiting = [];
    await Promise.all(relays.map((relay) => relay.stop({ drainMs: 1000 })));
    relays = [];
    await sql`DELETE FROM ${sql.id(h.schema, 'txoutbox')}`.execute(h.db);
  });
  afterAll(async () => {
    if (h === undefined) return;
    await dropSlotsAndPublications(h.db, h.schema);
    await observer.end();
    await h.destroy();
  }, 60_000);

  async function setUp() {
    round++;
    slot = `${h.schema}_s${round}`;
    publication = `${h.schema}_p${round}`;
    await migrate(h.db, { dialect: 'postgres', schema: h.schema, publication });
  }

  function relay(broker: MemoryBroker): LogicalRelay {
    const created = createRelay({ db: h.db, dialect: 'postgres', schema: h.schema, broker, mode: 'logical', slot, publication });
    relays.push(created);
    return created;
  }

  const outbox = () => h.createOutbox({ mode: 'logical' });
  /** A commit that does not wait for the standby: visible at once. */
  const commitLocally = (messages: OutboxMessage[]) => h.db.transaction().execute((trx) => outbox().enqueue(trx, messages));
  async function commitWaiting(messages: OutboxMessage[]): Promise<WaitingCommit> {
    const commit = await commitThatWaits(cluster.url, outbox(), messages, observer, `${h.schema}.txoutbox`);
    waiting.push(commit);
    return commit;
  }
  const ids = (...brokers: MemoryBroker[]) => brokers.flatMap((broker) => broker.received().map((m) => m.id));
  const rowStates = async () =>
    (await sql<{ id: string; state: string }>`SELECT id, state FROM ${sql.id(h.schema, 'txoutbox')} ORDER BY seq`.execute(h.db))
      .rows;
  async function owned(relay: LogicalRelay) {
    await until(() => relay.status().partitions.every((partition) => partition.owned), 'the relay to hold its slot');
  }

  it('publishes no message before its COMMIT returns; once it does, publishes it and marks its row sent', async () => {
    await setUp();
    const broker = new MemoryBroker();
    const running = relay(broker);
    await running.start();
    await owned(running);

    const commit = await commitWaiting([{ id: 'waiting', topic: 'orders', key: 'W', payload: 1 }]);
    // Streamed after it, visible at once, another key: once the relay has published it, it has had the waiting one.
    await commitLocally([{ id: 'witness', topic: 'orders', key: 'V', payload: 1 }]);
    await until(() => ids(broker).includes('witness'), 'the witness to be published');
    expect(ids(broker)).toEqual(['witness']);

    await commit.release();
    await until(() => ids(broker).includes('waiting'), 'the released message to be published');
    await until(async () => (await rowStates()).length === 0, 'its row to be marked sent (deleted)');
    expect(ids(broker)).toEqual(['witness', 'waiting']);
  });

  it.each(['a clean stop', 'a crash'] as const)(
    'a relay taking over the slot after %s publishes a committed row that was not visible yet, once, and marks it',
    async (how) => {
      await setUp();
      const first = new MemoryBroker().fail({ kind: 'hang' }, { where: (m) => m.id === 'in-flight' });
      const firstRelay = relay(first);
      await firstRelay.start();
      await owned(firstRelay);
      if (how === 'a crash') {
        // Stopped while a publish hangs: not clean, so the next relay counts every row it streams again.
        await commitLocally([{ id: 'in-flight', topic: 'orders', key: 'F', payload: 1 }]);
        await until(() => first.attempts > 0, 'the first relay to publish it');
      }
      await firstRelay.stop({ drainMs: how === 'a crash' ? 0 : 5000 });

      // Committed while no relay streams: the slot streams it to the next one, in the range it re-checks.
      const commit = await commitWaiting([{ id: 'waiting', topic: 'orders', key: 'W', payload: 1 }]);
      const second = new MemoryBroker();
      await relay(second).start();
      await commitLocally([{ id: 'witness', topic: 'orders', key: 'V', payload: 1 }]);
      await until(() => ids(second).includes('witness'), 'the witness to be published');
      expect(ids(first, second)).not.toContain('waiting');

      await commit.release();
      await until(() => ids(second).includes('waiting'), 'the released message to be published');
      await until(async () => (await rowStates()).length === 0, 'its row to be marked sent (deleted)');
      // Streamed after everything above: once it is out, nothing of theirs is left to go.
      await commitLocally([{ id: 'last', topic: 'orders', key: 'W', payload: 2 }]);
      await until(() => ids(second).includes('last'), 'the last message to be published');
      expect(ids(first, second).filter((id) => id === 'waiting')).toEqual(['waiting']);
    },
  );

  it('the Marker does not count a mark done while its row is in a transaction that is not visible yet', async () => {
    await setUp();
    // The marker's own connection, counting its writes to the outbox table.
    let writes = 0;
    const counted = new Kysely<unknown>({
      dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: cluster.localUrl, max: 2 }) }),
      log: (event) => {
        if (event.level === 'query' && /^\s*DELETE FROM/i.test(event.query.sql)) writes++;
      },
    });
    const marker = new Marker(
      counted,
      tableNames('txoutbox', h.schema),
      { retainSent: false, asyncCommit: false, token: 't', flushMs: 1, maxBatch: 100 },
      () => undefined,
    );
    try {
      const commit = await commitWaiting([{ id: 'waiting', topic: 'orders', key: 'W', payload: 1 }]);
      const [row] = commit.rows;
      let done = false;
      marker.add({ seq: row!.seq, kind: 'sent', xid: commit.xid }, () => (done = true));
      // Today's marker gives up after 8 writes that find no row: well past that, it must still be waiting.
      await until(() => done || writes >= 12, 'twelve writes of the mark');
      expect(done).toBe(false);

      await commit.release();
      await until(() => done, 'the mark to be done once its row is visible');
      expect(await rowStates()).toEqual([]);
      expect(marker.idle).toBe(true);
    } finally {
      marker.close();
      await counted.destroy();
    }
  });
});

async function until(check: () => boolean | Promise<boolean>, what: string, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
