import { sql } from 'kysely';
import { fork } from 'node:child_process';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRelay, migrate, MemoryBroker, type LogicalRelay, type OutboxMessage, type RelayOptions } from '../../src/index.js';
import { createPostgresHarnessAt, type Harness } from '../support/harness.js';
import { dropSlotsAndPublications } from '../support/logical-cleanup.js';
import { waitFor } from '../support/relay-helpers.js';
import { commitThatWaits, syncStandbyPostgres, type WaitingCommit } from '../support/sync-standby.js';

/**
 * A new tenure of a slot streams again what its predecessor had not confirmed. What the predecessor did with those
 * rows is in the table, for every one of them however many there are: sent ones are not sent again after a clean
 * stop, one that may have killed the predecessor is counted, and a dead head keeps its key blocked.
 *
 * The slot's confirmed position is held back here the way production holds it: by a committed transaction not
 * visible yet (a second cluster whose synchronous standby never answers, test/support/sync-standby-pg.sh). Every
 * other commit of the test is local and visible at once; the relay waits for the held one, and confirms nothing
 * past it, so everything after it streams again to the next tenure.
 */
describe('the logical relay taking over a slot', () => {
  let cluster: { url: string; localUrl: string };
  let h: Harness;
  let observer: pg.Pool;
  let relays: LogicalRelay[] = [];
  let waiting: WaitingCommit[] = [];
  let round = 0;
  let slot = '';
  let publication = '';

  beforeAll(async () => {
    cluster = syncStandbyPostgres();
    h = await createPostgresHarnessAt(cluster.localUrl);
    observer = new pg.Pool({ connectionString: cluster.localUrl, max: 2 });
  }, 120_000);
  afterEach(async () => {
    await Promise.all(waiting.map((commit) => commit.release().catch(() => undefined)));
    waiting = [];
    await Promise.all(relays.map((relay) => relay.stop({ drainMs: 1000 })));
    relays = [];
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
    await sql`DELETE FROM ${sql.id(h.schema, 'txoutbox')}`.execute(h.db);
  }
  async function relay(broker: MemoryBroker, options: Partial<RelayOptions<unknown>> = {}) {
    const created = createRelay({
      ...options,
      db: h.db,
      dialect: 'postgres',
      schema: h.schema,
      broker,
      mode: 'logical',
      slot,
      publication,
      backoff: { initialMs: 10, maxMs: 50 },
    });
    relays.push(created);
    await created.start();
    await waitFor(() => created.status().partitions[0]!.owned, 15_000, 'the relay to hold the slot');
    return created;
  }
  const commit = (messages: OutboxMessage[]) =>
    h.db.transaction().execute((trx) => h.createOutbox({ mode: 'logical' }).enqueue(trx, messages));
  const rows = async () =>
    (await sql<{ id: string; state: string }>`SELECT id, state FROM ${sql.id(h.schema, 'txoutbox')} ORDER BY seq`.execute(h.db)).rows;
  const ids = (broker: MemoryBroker) => broker.received().map((m) => m.id);
  /** x commits and stays invisible (its COMMIT waits for the standby): the slot is confirmed up to it at most. */
  async function holdX(): Promise<WaitingCommit> {
    const commit = await commitThatWaits(
      cluster.url,
      h.createOutbox({ mode: 'logical' }),
      [{ id: 'x', topic: 'orders', key: 'X', payload: 0 }],
      observer,
      `${h.schema}.txoutbox`,
    );
    waiting.push(commit);
    return commit;
  }

  it('after a clean stop, sends again none of the rows already sent, however many the slot streams again', async () => {
    await setUp();
    // batchSize 10 × concurrency 1: a relay that keeps 200 streamed rows in memory; 300 are streamed again.
    const small = { batchSize: 10, concurrency: 1 };
    const first = new MemoryBroker();
    await relay(first, small);
    const x = await holdX();
    for (let n = 0; n < 300; n += 50)
      await commit(Array.from({ length: 50 }, (_, i) => ({ id: `m${n + i}`, topic: 'orders', key: `k${(n + i) % 7}`, payload: n + i })));
    await waitFor(async () => (await rows()).length === 0, 30_000, 'the 300 to be sent and their rows deleted');
    await relays[0]!.stop({ drainMs: 5000 });

    const second = new MemoryBroker();
    await relay(second, small);
    await commit([{ id: 'after', topic: 'orders', key: 'k0', payload: 1 }]);
    await waitFor(() => ids(second).includes('after'), 30_000, 'the message committed after the handover');
    expect(ids(second)).toEqual(['after']);
    // x was never published: it goes out once visible, uncounted (nothing was in flight at the clean stop).
    await x.release();
    await waitFor(() => ids(second).includes('x'), 30_000, 'x once its commit returns');
    expect(ids(first)).not.toContain('x');
    // Its first attempt: nothing was counted for it (its row may be deleted already, so the broker says).
    expect(second.received().find((m) => m.id === 'x')?.attempt).toBe(1);
  }, 90_000);

  it("keeps a dead head's key blocked when the slot streams the dead head again", async () => {
    await setUp();
    const first = new MemoryBroker().fail({ kind: 'permanent', error: 'poison pill' }, { where: (m) => m.id === 'p1' });
    await relay(first);
    const x = await holdX();
    await commit([
      { id: 'p1', topic: 'orders', key: 'P', payload: 1 },
      { id: 'p2', topic: 'orders', key: 'P', payload: 2 },
    ]);
    await waitFor(
      async () => (await rows()).filter((row) => row.state === 'dead').length === 2,
      15_000,
      'p1 to be dead and p2 parked behind it',
    );
    await relays[0]!.stop({ drainMs: 5000 });

    // A clean stop: the next tenure starts before x, so p1 and p2 are streamed to it again.
    const second = new MemoryBroker();
    await relay(second);
    await commit([{ id: 'p3', topic: 'orders', key: 'P', payload: 3 }]);
    await commit([{ id: 'q1', topic: 'orders', key: 'Q', payload: 1 }]);
    await waitFor(() => ids(second).includes('q1'), 15_000, 'a message of another key');
    await waitFor(async () => (await rows()).find((row) => row.id === 'p3')?.state === 'dead', 15_000, 'p3 to wait behind p1');
    expect(ids(second)).not.toContain('p3');
    await x.release();
    await waitFor(() => ids(second).includes('x'), 15_000, 'x once its commit returns');
    await waitFor(async () => (await rows()).length === 3, 15_000, "x's row to be deleted");
    expect(await rows()).toEqual([
      { id: 'p1', state: 'dead' },
      { id: 'p2', state: 'dead' },
      { id: 'p3', state: 'dead' },
    ]);
  }, 60_000);

  it('dead-letters a message that kills the relay on every publish, however many rows the slot streams before it', async () => {
    await setUp();
    const script = new URL('../support/logical-relay-process.ts', import.meta.url).pathname;
    const url = cluster.localUrl;
    const published = new Set<string>();
    const startChild = () => {
      // batchSize 10, concurrency 1: the child keeps 200 streamed rows in memory; 300 come before the poison.
      const child = fork(script, ['postgres', url, h.schema, slot, publication, url, 'poison', '10'], {
        execArgv: ['--import', 'tsx'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.on('message', (message: { published?: string[] }) => {
        for (const id of message.published ?? []) published.add(id);
      });
      return { child, exited };
    };
    let current = startChild();
    await commit([{ id: 'warm', topic: 'orders', key: 'w', payload: 0 }]);
    await waitFor(() => published.has('warm'), 30_000, 'the child relay to stream');
    // One transaction: none of it is confirmed before the poison is dealt with, so every takeover streams it all.
    await commit([
      ...Array.from({ length: 300 }, (_, n) => ({ id: `a${n}`, topic: 'orders', key: `k${n % 7}`, payload: n })),
      { id: 'poison', topic: 'orders', key: 'P', payload: 0 },
    ]);
    let crashes = 0;
    try {
      const deadline = Date.now() + 120_000;
      let exited = false;
      void current.exited.then(() => (exited = true));
      while ((await rows()).some((row) => row.state === 'pending')) {
        if (Date.now() > deadline) throw new Error('timed out waiting for the outbox to drain');
        if (exited) {
          crashes++;
          // maxAttempts 3: the first crash is uncounted, then three counted ones, then the takeover buries it.
          expect(crashes, 'crashes before the poison went dead').toBeLessThanOrEqual(4);
          exited = false;
          current = startChild();
          void current.exited.then(() => (exited = true));
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(await rows()).toEqual([{ id: 'poison', state: 'dead' }]);
      expect(crashes).toBe(4);
      for (let n = 0; n < 300; n++) expect(published.has(`a${n}`), `a${n} published`).toBe(true);
    } finally {
      current.child.kill('SIGKILL');
      await current.exited;
    }
  }, 180_000);
});
