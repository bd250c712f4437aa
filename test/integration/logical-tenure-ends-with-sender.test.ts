import { sql } from 'kysely';
import { afterEach, beforeAll, afterAll, describe, expect, inject, it } from 'vitest';
import { createRelay, migrate, MemoryBroker, type LogicalRelay, type RelayOptions } from '../../src/index.js';
import { createHarness, type Harness } from '../support/harness.js';
import { dropSlotsAndPublications } from '../support/logical-cleanup.js';
import { waitFor } from '../support/relay-helpers.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

/**
 * A relay holds a slot exactly as long as its WAL sender streams it: once that ends (the connection closed, errored,
 * or went silent), a standby may take the slot and publish the same rows. So the moment the sender ends, the relay
 * must publish nothing more and write no more marks, though rows are still buffered and publishes in flight.
 *
 * Both relays keep sent rows (retainSentMs), so each row says which relay marked it (lease_owner is its token).
 * Their brokers hold every publish until released, so the test decides when each may go.
 */
describe('a logical relay whose WAL sender ended', () => {
  let h: Harness;
  let relays: LogicalRelay[] = [];
  let proxy: TcpProxy | null = null;
  let round = 0;
  let slot = '';

  beforeAll(async () => {
    h = await createHarness('postgres');
    await migrate(h.db, { dialect: 'postgres', schema: h.schema, publication: `${h.schema}_pub` });
  });
  afterEach(async () => {
    // A frozen link first: a relay still waiting on it lets go once its sockets close.
    await proxy?.close();
    proxy = null;
    await Promise.all(relays.map((relay) => relay.stop({ drainMs: 0 })));
    relays = [];
    await sql`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = ${slot} AND active`.execute(
      h.db,
    );
    await sql`DELETE FROM ${sql.id(h.schema, 'txoutbox')}`.execute(h.db);
  }, 60_000);
  afterAll(async () => {
    if (h === undefined) return;
    await dropSlotsAndPublications(h.db, h.schema);
    await h.destroy();
  }, 60_000);

  /** A broker that holds every publish until `release()` (or until the relay aborts it). */
  function heldBroker() {
    const broker = new MemoryBroker().fail({ kind: 'hang' });
    return Object.assign(broker, {
      release() {
        broker.heal();
        broker.releaseHung();
      },
    });
  }

  function relay(name: string, broker: MemoryBroker, options: Partial<RelayOptions> = {}): LogicalRelay {
    const created = createRelay({
      db: h.db,
      dialect: 'postgres',
      schema: h.schema,
      broker,
      slot,
      publication: `${h.schema}_pub`,
      instanceId: name,
      retainSentMs: 60_000,
      batchSize: 1,
      concurrency: 2,
      ...options,
      mode: 'logical',
    });
    relays.push(created);
    return created;
  }

  const owned = (relay: LogicalRelay) => relay.status().partitions[0]!.owned;
  /** Per relay instance, how many rows it marked sent. */
  const markedBy = async () => {
    const { rows } = await sql<{ owner: string; n: number }>`
      SELECT split_part(lease_owner, ':', 1) AS owner, count(*)::int AS n FROM ${sql.id(h.schema, 'txoutbox')}
      WHERE state = 'sent' GROUP BY 1 ORDER BY 1`.execute(h.db);
    return Object.fromEntries(rows.map((row) => [row.owner, row.n]));
  };

  /**
   * The first relay holds the slot with ten rows streamed, two of them at its broker; a standby waits. `replication`
   * is the first relay's replication connection. Its own retries are 5 s apart, so the standby takes the slot.
   */
  async function holdWithRowsInFlight(replication?: RelayOptions['replication']) {
    round++;
    slot = `${h.schema}_s${round}`;
    const events: string[] = [];
    const errors: Error[] = [];
    const firstBroker = heldBroker();
    const first = relay('first', firstBroker, { standbyRetryMs: 5000, ...(replication === undefined ? {} : { replication }) });
    first.on('owned', (_slot, isOwned) => events.push(`first ${isOwned ? 'took' : 'lost'} the slot`));
    first.on('error', (error) => errors.push(error));
    await first.start();
    await waitFor(() => owned(first), 15_000, 'the first relay to hold the slot');
    const outbox = h.createOutbox({ mode: 'logical' });
    await h.db.transaction().execute((trx) =>
      outbox.enqueue(
        trx,
        Array.from({ length: 10 }, (_, n) => ({ id: `m${n}`, topic: 'orders', key: `k${n}`, payload: n })),
      ),
    );
    await waitFor(
      () => first.status().partitions[0]!.streamed === 10 && firstBroker.attempts === 2,
      15_000,
      'two publishes in flight',
    );

    const secondBroker = heldBroker();
    const second = relay('second', secondBroker, { standbyRetryMs: 50 });
    second.on('owned', (_slot, isOwned) => events.push(`second ${isOwned ? 'took' : 'lost'} the slot`));
    await second.start();
    return { first, firstBroker, second, secondBroker, events, errors };
  }

  /** After the standby took over: the first relay, let go on, must publish and mark nothing; the second sends all. */
  async function expectOnlyTheSecondToPublish(run: Awaited<ReturnType<typeof holdWithRowsInFlight>>) {
    const { first, firstBroker, second, secondBroker } = run;
    await waitFor(() => owned(second) && secondBroker.attempts > 0, 30_000, 'the standby to take the slot and publish');
    // Let the first relay's publishes answer, then stop it: stop() waits for what is in flight and writes its marks.
    firstBroker.release();
    await first.stop({ drainMs: 5000 });
    expect(
      firstBroker.received().map((m) => m.id),
      'published by the first relay after its sender ended',
    ).toEqual([]);
    expect(await markedBy()).toEqual({});

    secondBroker.release();
    await waitFor(async () => (await markedBy()).second === 10, 15_000, 'the second relay to mark all ten');
    expect(new Set(secondBroker.received().map((m) => m.id)).size).toBe(10);
  }

  it('publishes and marks nothing once its WAL sender is terminated, while a standby takes the slot', async () => {
    const run = await holdWithRowsInFlight();
    await sql`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = ${slot} AND active`.execute(
      h.db,
    );
    await waitFor(() => !owned(run.first), 15_000, 'the first relay to see its sender end');
    await expectOnlyTheSecondToPublish(run);
    expect(run.events).toEqual(['first took the slot', 'first lost the slot', 'second took the slot']);
  }, 60_000);

  it('ends its tenure on a silent network cut before the server lets another relay take the slot', async () => {
    const server = new URL(inject('pgUrl'));
    proxy = await startTcpProxy({ host: server.hostname, port: Number(server.port || 5432) });
    const run = await holdWithRowsInFlight({
      host: '127.0.0.1',
      port: proxy.port,
      user: decodeURIComponent(server.username),
      database: server.pathname.slice(1),
      // The server ends a WAL sender it has not heard from for this long; the relay must let go first.
      options: '-c wal_sender_timeout=10s',
    });
    proxy.freezeAll();
    await waitFor(() => !owned(run.first), 30_000, 'the first relay to let go of the slot on a silent link');
    await expectOnlyTheSecondToPublish(run);
    // The first let go before the second could take the slot: they never held it together.
    expect(run.events).toEqual(['first took the slot', 'first lost the slot', 'second took the slot']);
    expect(run.errors.map((error) => (error as { code?: string }).code)).toContain('TXOUTBOX_REPLICATION_SILENT');
  }, 90_000);
});
